//! Support for the cross-crate suites: certificates in a temp dir, real `strait` node processes
//! on loopback, and clients that talk to them.
//!
//! Nodes are separate processes so that the suites can `kill -9` them and so that a node's
//! behaviour under hostile clients is observed from outside, as a user would.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strait_certs::Role;
use strait_protocol::client::{Client, ClientOptions};

pub mod checker;
pub mod kafka_clients;
pub mod quorum;
pub use strait_node::impair;

/// The `strait` binary, building it first if this test run has not.
pub fn strait_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("STRAIT_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        // target/<profile>/deps/<test> → target/<profile>/strait
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let bin = profile_dir.join("strait");
        // `cargo nextest run --workspace` has built it (node's own integration tests need it).
        // Build only when it is missing or older than the sources, e.g. when this package's
        // tests run alone.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest = ["node/src", "protocol/src", "certs/src", "mirror/src"]
            .iter()
            .filter_map(|d| newest_mtime(&root.join(d)))
            .max();
        if built.is_none() || newest.is_some_and(|n| Some(n) > built) {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "strait-node", "--bin", "strait"])
                .current_dir(&root)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot build the strait binary"
            );
        }
        assert!(bin.exists(), "no strait binary at {}", bin.display());
        bin
    })
    .clone()
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}

/// A CA with a node certificate and a client certificate, in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        strait_certs::init_ca(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        strait_certs::issue(dir.path(), "node-1", Role::Node, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        strait_certs::issue(dir.path(), "app", Role::Client, &[]).unwrap_or_else(|e| panic!("{e}"));
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// TLS for a client named `name` (issued by this CA if it does not exist yet).
    pub fn client_tls(&self, name: &str) -> rustls::ClientConfig {
        if !self.path(&format!("{name}.crt")).exists() {
            strait_certs::issue(self.dir.path(), name, Role::Client, &[])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        strait_certs::client_config(
            &self.ca(),
            &self.path(&format!("{name}.crt")),
            &self.path(&format!("{name}.key")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn client(&self, address: &str) -> Arc<Client> {
        Client::new(ClientOptions::new(
            vec![address.to_string()],
            self.client_tls("app"),
        ))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// A port for a node to listen on later, below the kernel's ephemeral range: a port the
/// kernel handed out for `bind(0)` and released would be handed out again (to a proxy's
/// socket, a client's) before the node that was meant to get it binds it.
fn reserved_port(bindable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(1).max(10_001));
    let mut seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        ^ DRAWS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    for _ in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = low + (seed % u64::from(high - low)) as u16;
        if bindable(port) {
            return port;
        }
    }
    panic!("no free port in {low}..{high} after 1000 tries");
}

/// A free UDP port on loopback, for a node's QUIC listener.
pub fn free_udp_port() -> u16 {
    reserved_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// A free TCP port on loopback, for admin and Kafka listeners.
pub fn free_tcp_port() -> u16 {
    reserved_port(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// `GET path` on an admin listener: the whole HTTP/1.1 answer (status line, headers, body),
/// or an empty string when nothing listens.
pub fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The body of an HTTP answer from [`http_get`].
pub fn http_body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// One record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub offset: u64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
}

/// Every batch of a partition as the node serves it, in offset order, read with plain fetches.
pub async fn read_batches(
    client: &Arc<Client>,
    topic: &str,
    partition: u32,
) -> Vec<strait_protocol::RecordBatch> {
    let mut out = Vec::new();
    each_batch(client, topic, partition, |b| out.push(b)).await;
    out
}

/// Hands each batch of a partition, in offset order, to `take` as plain fetches bring it, so a
/// caller that keeps only what it needs of each batch never holds the whole partition.
pub async fn each_batch(
    client: &Arc<Client>,
    topic: &str,
    partition: u32,
    mut take: impl FnMut(strait_protocol::RecordBatch),
) {
    use strait_protocol::message::{Request, Response};
    let mut offset = 0;
    loop {
        let fetch = Request::Fetch {
            topic: topic.into(),
            partition,
            offset,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 4 << 20,
        };
        let (resp, payload) = client
            .call(&fetch, &[])
            .await
            .unwrap_or_else(|e| panic!("fetch {topic}/{partition}@{offset}: {e}"));
        let Response::Fetched { .. } = resp else {
            panic!("unexpected fetch answer {resp:?}");
        };
        if payload.is_empty() {
            return;
        }
        let batches = strait_protocol::batch::split_batches(payload, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        for b in batches {
            if b.next_offset().0 > offset {
                offset = b.next_offset().0;
                take(b);
            }
        }
    }
}

/// Every record of a partition, in offset order.
pub async fn read_partition(client: &Arc<Client>, topic: &str, partition: u32) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    each_record(client, topic, partition, |offset, r| {
        out.push(Seen {
            offset,
            key: r.key,
            value: r.value,
        })
    })
    .await;
    out
}

/// The end offset of each of a topic's first `partitions` partitions (0 where unknown).
pub async fn end_offsets(client: &Arc<Client>, topic: &str, partitions: u32) -> Vec<u64> {
    let admin = strait_protocol::client::Admin::new(client.clone());
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(
            admin
                .list_offset(topic, p, strait_protocol::OffsetSpec::Latest)
                .await
                .map(|(o, _)| o)
                .unwrap_or(0),
        );
    }
    out
}

/// Every value of one partition as the history checker reads it, in offset order. Batches are
/// decoded as they arrive and dropped, so only one packed word per record is held.
pub async fn read_values(client: &Arc<Client>, topic: &str, partition: u32) -> checker::Read {
    let mut out: checker::Read = Vec::new();
    each_record(client, topic, partition, |offset, r| {
        out.push((
            offset,
            checker::Value::parse(r.value.as_deref().unwrap_or_default()),
        ));
    })
    .await;
    out
}

/// Hands each record of a partition to `take` once, in offset order (a batch is served whole,
/// so records below the previous batch's end are skipped), without holding the partition.
async fn each_record(
    client: &Arc<Client>,
    topic: &str,
    partition: u32,
    mut take: impl FnMut(u64, strait_protocol::Record),
) {
    let mut next = 0;
    each_batch(client, topic, partition, |b| {
        for r in b.records(u32::MAX).unwrap_or_else(|e| panic!("{e}")) {
            if r.offset.0 >= next {
                next = r.offset.0 + 1;
                take(r.offset.0, r);
            }
        }
    })
    .await;
}

/// Every value of a topic's first `partitions` partitions as the history checker reads them.
pub async fn read_history(
    client: &Arc<Client>,
    topic: &str,
    partitions: u32,
) -> std::collections::BTreeMap<u32, checker::Read> {
    let mut out = std::collections::BTreeMap::new();
    for p in 0..partitions {
        out.insert(p, read_values(client, topic, p).await);
    }
    out
}

/// Runs `strait ARGS…` to completion and returns its stdout; panics with stderr on failure.
pub fn strait(args: &[&str]) -> String {
    let out = Command::new(strait_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run strait: {e}"));
    assert!(
        out.status.success(),
        "strait {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `strait ARGS…` expecting it to fail; returns its stderr.
pub fn strait_fails(args: &[&str]) -> String {
    let out = Command::new(strait_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run strait: {e}"));
    assert!(
        !out.status.success(),
        "strait {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `strait node run` child process.
pub struct NodeProcess {
    child: Child,
    pub address: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts a node of cluster `cluster` with the given data dir and extra config file text.
    pub fn start(pki: &Pki, cluster: &str, data_dir: &Path, config_toml: &str) -> NodeProcess {
        NodeProcess::start_on(pki, cluster, data_dir, config_toml, free_udp_port())
    }

    /// Starts a node on a given UDP port (to restart one where its peers expect it).
    pub fn start_on(
        pki: &Pki,
        cluster: &str,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
    ) -> NodeProcess {
        NodeProcess::start_with_env(pki, cluster, data_dir, config_toml, port, &[])
    }

    /// Like [`NodeProcess::start_on`], with extra environment variables (test hooks).
    pub fn start_with_env(
        pki: &Pki,
        cluster: &str,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
        env: &[(&str, &Path)],
    ) -> NodeProcess {
        NodeProcess::try_start(pki, cluster, data_dir, config_toml, port, env, None, None)
            .unwrap_or_else(|log| panic!("node did not start; log: {log:?}"))
    }

    /// Starts node `node_id` of a cluster of several, with a certificate naming it
    /// (`CLUSTER-ID`, issued by `pki` if it does not exist yet), as its peers require.
    pub fn start_member(
        pki: &Pki,
        cluster: &str,
        node_id: u32,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
    ) -> NodeProcess {
        NodeProcess::start_member_with_env(pki, cluster, node_id, data_dir, config_toml, port, &[])
    }

    /// [`NodeProcess::start_member`] with extra environment (e.g. the durability journal).
    pub fn start_member_with_env(
        pki: &Pki,
        cluster: &str,
        node_id: u32,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
        env: &[(&str, &Path)],
    ) -> NodeProcess {
        NodeProcess::try_start(
            pki,
            cluster,
            data_dir,
            config_toml,
            port,
            env,
            None,
            Some(node_id),
        )
        .unwrap_or_else(|log| panic!("node {node_id} did not start; log: {log:?}"))
    }

    /// Starts a node that may refuse to start: answers its log if it exits or does not come up.
    pub fn try_start_on(
        pki: &Pki,
        cluster: &str,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
    ) -> Result<NodeProcess, Vec<String>> {
        NodeProcess::try_start(pki, cluster, data_dir, config_toml, port, &[], None, None)
    }

    /// Starts a node whose open-file limits are `soft` and `hard`, as `ulimit -Sn`/`-Hn` would
    /// set them; answers the node's log if it exits or does not come up.
    pub fn start_with_file_limit(
        pki: &Pki,
        data_dir: &Path,
        port: u16,
        soft: u64,
        hard: u64,
    ) -> Result<NodeProcess, Vec<String>> {
        NodeProcess::try_start(
            pki,
            "east",
            data_dir,
            "",
            port,
            &[],
            Some((soft, hard)),
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn try_start(
        pki: &Pki,
        cluster: &str,
        data_dir: &Path,
        config_toml: &str,
        port: u16,
        env: &[(&str, &Path)],
        nofile: Option<(u64, u64)>,
        member: Option<u32>,
    ) -> Result<NodeProcess, Vec<String>> {
        let address = format!("127.0.0.1:{port}");
        let (node_id, identity) = match member {
            Some(id) => {
                let name = format!("{cluster}-{id}");
                if !pki.path(&format!("{name}.crt")).exists() {
                    strait_certs::issue(pki.dir.path(), &name, Role::Node, &[])
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                (id.to_string(), name)
            }
            None => ("1".to_string(), "node-1".to_string()),
        };
        let config = data_dir.with_extension("toml");
        std::fs::create_dir_all(data_dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&config, config_toml).unwrap_or_else(|e| panic!("{e}"));
        let mut command = match nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(strait_bin());
                c
            }
            None => Command::new(strait_bin()),
        };
        let mut child = command
            .args([
                "node",
                "run",
                "--cluster",
                cluster,
                "--node-id",
                &node_id,
                "--listen",
                &address,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .arg("--ca")
            .arg(pki.ca())
            .arg("--cert")
            .arg(pki.path(&format!("{identity}.crt")))
            .arg("--key")
            .arg(pki.path(&format!("{identity}.key")))
            .env("STRAIT_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start strait: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take();
        let sink = log.clone();
        let stderr_reader = std::thread::spawn(move || {
            if let Some(s) = stderr {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
        });
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains("listening on") {
                    break;
                }
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                // The reader ends once the dead node's stderr is drained.
                let _ = stderr_reader.join();
                return Err(log.lock().unwrap_or_else(|e| e.into_inner()).clone());
            }
        }
        Ok(NodeProcess {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
            log,
        })
    }

    /// Kills the node with SIGKILL: no flush, no close.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the node with SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Lines the node logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// State files a node writes through its durable-write helper; a power cut keeps each at its
/// last durable content, or removes it if it never had one.
const STATE_FILES: &[&str] = &[
    // The controller's vote, commit point, purge mark and snapshot.
    "vote",
    "committed",
    "purged",
    "snapshot",
    "topic.json",
    "producer-ids",
    "recovery-point",
    "log-start-offset",
    "producer-state",
    "mirror-map.snapshot",
    "acls.json",
    "flows.json",
];

/// What a power cut did to a data directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// Segments cut back to their last fsynced length.
    pub segments_cut: usize,
    /// Un-fsynced segment bytes dropped.
    pub bytes_dropped: u64,
    /// State files put back to their last durable content.
    pub state_files_reverted: usize,
    /// State files (and unfinished temporary files) removed: never durable.
    pub state_files_removed: usize,
}

/// Simulates a power cut on a killed node's data dir from its durability journal
/// (`STRAIT_TEST_DURABLE_JOURNAL`): every segment loses what was not fsynced, and the first
/// lost write is torn (a prefix of it survives with its last sector zeroed); every state file
/// (`topic.json`, `producer-ids`, checkpoints, snapshots …) goes back to the content of its
/// last durable write (file and directory synced), or disappears if it never had one: contents
/// and renames not yet synced are lost.
pub fn power_loss(data_dir: &Path, journal: &Path, seed: u64) -> PowerCut {
    let mut durable = std::collections::HashMap::new();
    let mut states: std::collections::HashMap<PathBuf, Vec<u8>> = Default::default();
    for line in std::fs::read_to_string(journal).unwrap_or_default().lines() {
        if let Some(rest) = line.strip_prefix("file ") {
            if let Some((hex, path)) = rest.split_once(' ') {
                states.insert(PathBuf::from(path), unhex(hex));
            }
        } else if let Some((len, path)) = line.split_once(' ') {
            if let Ok(len) = len.parse::<u64>() {
                durable.insert(PathBuf::from(path), len);
            }
        }
    }
    let mut cut = PowerCut::default();
    let mut n = seed;
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".tmp") || STATE_FILES.contains(&name.as_ref()) {
                match states.get(&canonical).filter(|_| !name.ends_with(".tmp")) {
                    Some(content) => {
                        if std::fs::read(&path).unwrap_or_default() != *content {
                            std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
                            cut.state_files_reverted += 1;
                        }
                    }
                    None => {
                        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
                        cut.state_files_removed += 1;
                    }
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let keep = *durable.get(&canonical).unwrap_or(&0);
            let raw = std::fs::read(&path).unwrap_or_default();
            if raw.len() as u64 <= keep {
                continue;
            }
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let lost = &raw[keep as usize..];
            let torn = (1 + (n >> 33) as usize % 4096).min(lost.len());
            let mut survivor = raw[..keep as usize].to_vec();
            survivor.extend_from_slice(&lost[..torn]);
            let zero_from = survivor.len() - torn.min(512);
            survivor[zero_from..].iter_mut().for_each(|b| *b = 0);
            std::fs::write(&path, &survivor).unwrap_or_else(|e| panic!("{e}"));
            cut.segments_cut += 1;
            cut.bytes_dropped += (raw.len() - survivor.len()) as u64;
        }
    }
    cut
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}
