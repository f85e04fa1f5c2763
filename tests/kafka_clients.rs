//! Real Kafka clients nobody here wrote, driven from the suites: confluent-kafka (librdkafka)
//! and kafka-python in a virtualenv, kafkajs under Node, and kcat. `tests/run` installs them
//! (pinned, idempotently) under `target/kafka-clients` and names the folder in
//! `STRAIT_KAFKA_CLIENTS`; the scripts live in `tests/kafka-clients/`. Each script takes its
//! settings as one JSON argument and prints JSON on stdout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Pki;

/// Where `tests/run` installed the clients.
pub fn installed() -> PathBuf {
    let dir = std::env::var_os("STRAIT_KAFKA_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kafka-clients"));
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node_modules/kafkajs").exists(),
        "the Kafka clients are not installed in {}: run the suites with `tests/run`, which installs them",
        dir.display()
    );
    dir
}

/// A script in `tests/kafka-clients/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kafka-clients")
        .join(name)
}

/// The command that runs `name` (a `.py` or `.js` script) with `settings`.
pub fn command(name: &str, settings: &serde_json::Value) -> Command {
    let dir = installed();
    let mut c = if name.ends_with(".js") {
        let mut c = Command::new("node");
        c.env("NODE_PATH", dir.join("node_modules"));
        c
    } else {
        Command::new(dir.join("venv/bin/python"))
    };
    c.arg(script(name)).arg(settings.to_string());
    c
}

/// Runs a script to completion and parses its JSON answer; panics with its stderr if it fails.
pub fn run(name: &str, settings: &serde_json::Value) -> serde_json::Value {
    let out = command(name, settings)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name} printed {stdout:?}: {e}"))
}

/// Runs a script that is expected to fail; answers its stderr and stdout.
pub fn run_failing(name: &str, settings: &serde_json::Value) -> String {
    let out = command(name, settings)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        !out.status.success(),
        "{name} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Starts a long-running script (a group member) with its stdout piped.
pub fn spawn(name: &str, settings: &serde_json::Value) -> Child {
    command(name, settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// The TLS settings of a client named `name` of `pki` (issued if new), for the scripts.
pub fn tls(pki: &Pki, name: &str) -> serde_json::Value {
    let _ = pki.client_tls(name);
    serde_json::json!({
        "ca": pki.ca(),
        "cert": pki.path(&format!("{name}.crt")),
        "key": pki.path(&format!("{name}.key")),
    })
}

/// `base` with the entries of `more` added.
pub fn with(base: &serde_json::Value, more: serde_json::Value) -> serde_json::Value {
    let mut out = base.clone();
    if let (Some(o), Some(m)) = (out.as_object_mut(), more.as_object()) {
        for (k, v) in m {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The `kcat` binary (installed from Debian by `tests/run`).
pub fn kcat() -> Command {
    Command::new("kcat")
}

/// How long a client-driven step may take before a suite gives up.
pub const STEP: Duration = Duration::from_secs(60);

/// A long-running client script (a group member) whose JSON lines are collected as they come.
pub struct Member {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    pub fn start(name: &str, settings: &serde_json::Value) -> Member {
        let mut child = spawn(name, settings);
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        Member {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The partitions of the member's latest reported assignment.
    pub fn assignment(&self) -> Option<Vec<u64>> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().rev().find_map(|l| {
            l.get("assignment").and_then(|a| a.as_array()).map(|a| {
                let mut ps: Vec<u64> = a.iter().filter_map(|tp| tp[1].as_u64()).collect();
                ps.sort();
                ps
            })
        })
    }

    /// Asks the member to leave (SIGTERM: it commits and closes), and answers what it read as
    /// `(partition, offset, value)`.
    pub fn stop(mut self) -> Vec<(u64, u64, String)> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap_or_else(|e| panic!("{e}"));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        assert!(status.success(), "group member exited with {status}");
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let last = lines.last().cloned().unwrap_or_default();
        last["records"]
            .as_array()
            .unwrap_or_else(|| panic!("member printed no records: {lines:?}"))
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap_or_default(),
                    r[1].as_u64().unwrap_or_default(),
                    r[2].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the members' latest assignments split `partitions` among them with the given
/// sizes (sorted), each partition owned once; panics with what they report after a minute.
pub fn settle(members: &[&Member], partitions: u64, sizes: &[usize]) {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let all: Vec<Option<Vec<u64>>> = members.iter().map(|m| m.assignment()).collect();
        if all.iter().all(Option::is_some) {
            let mut owned: Vec<u64> = all.iter().flatten().flatten().copied().collect();
            owned.sort();
            let mut got: Vec<usize> = all.iter().flatten().map(Vec::len).collect();
            got.sort();
            if owned == (0..partitions).collect::<Vec<_>>() && got == sizes {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not settle on {sizes:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP relay that cuts each connection through it once the client has sent `cut_after`
/// bytes over it. From the mark on, for 100 ms, requests still reach the node but its answers
/// are dropped; then the connection is cut. Clients retry what is already stored: the
/// duplicates an idempotent producer's sequence numbers must catch.
pub struct CuttingRelay {
    pub address: String,
    pub cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttingRelay {
    /// Relays `listen` (host:port, free) to `upstream`.
    pub fn start(listen: &str, upstream: &str, cut_after: u64) -> CuttingRelay {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay: {e}"));
        let cuts = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let counted = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(mut c_in), Ok(mut s_out), Ok(mut s_in), Ok(mut c_out)) = (
                    client.try_clone(),
                    server.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                ) else {
                    continue;
                };
                let counted = counted.clone();
                let muted = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mute = muted.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut sent = 0u64;
                    let mut since: Option<std::time::Instant> = None;
                    let _ = c_in.set_read_timeout(Some(Duration::from_millis(20)));
                    loop {
                        if since.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
                            counted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        let n = match c_in.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                continue
                            }
                            Err(_) => break,
                        };
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        if sent >= cut_after && since.is_none() {
                            mute.store(true, Ordering::Relaxed);
                            since = Some(std::time::Instant::now());
                        }
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if muted.load(Ordering::Relaxed) {
                            continue;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingRelay {
            address: listen.to_string(),
            cuts,
        }
    }
}
