//! Every example in `topologies/` validates, comes up with `strait topology up`, and carries
//! records from each origin to every cluster its flows reach; `plan` after `apply` is empty and
//! an edit plans and applies exactly that change; `down` stops everything.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use strait_protocol::client::{Admin, Client, ClientOptions, Producer, ProducerConfig};
use strait_tests::{free_tcp_port, free_udp_port, read_partition, strait, strait_bin};

/// A running `strait topology up`.
struct Up {
    child: Child,
    file: PathBuf,
    state: tempfile::TempDir,
    output: Arc<Mutex<String>>,
    stopped: bool,
}

impl Up {
    fn start(file: &Path) -> Up {
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(strait_bin())
            .args(["topology", "up"])
            .arg(file)
            .arg("--state-dir")
            .arg(state.path())
            .env("XDG_CONFIG_HOME", state.path().join("config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (lines, sink) = (child.stdout.take().unwrap(), output.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(lines).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.lock().unwrap().contains(" is up ") {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("topology up exited ({status}): {}", output.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "topology up never came up: {}",
                output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Up {
            child,
            file: file.to_path_buf(),
            state,
            output,
            stopped: false,
        }
    }

    fn state_arg(&self) -> String {
        self.state.path().display().to_string()
    }

    /// Runs `strait topology SUBCOMMAND FILE --state-dir … EXTRA…`.
    fn cli(&self, subcommand: &str, extra: &[&str]) -> String {
        let file = self.file.display().to_string();
        let state = self.state_arg();
        let mut args = vec![
            "topology",
            subcommand,
            file.as_str(),
            "--state-dir",
            state.as_str(),
        ];
        args.extend_from_slice(extra);
        strait(&args)
    }

    fn client(&self, address: &str) -> Arc<Client> {
        let certs = self.state.path().join("certs");
        let tls = strait_certs::client_config(
            &certs.join("ca.crt"),
            &certs.join("admin.crt"),
            &certs.join("admin.key"),
        )
        .unwrap();
        Client::new(ClientOptions::new(vec![address.to_string()], tls))
    }

    /// `strait topology down` from the side; `up` must then exit cleanly and leave no node.
    fn down(mut self) {
        let up: Value =
            serde_json::from_slice(&std::fs::read(self.state.path().join("up.json")).unwrap())
                .unwrap();
        let out = self.cli("down", &[]);
        assert!(out.contains("stopped"), "{out}");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "topology up exited with {status}: {}",
            self.output.lock().unwrap()
        );
        for node in up["nodes"].as_array().unwrap() {
            let pid = node["pid"].as_u64().unwrap();
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid),
                "node {node} still runs after down"
            );
        }
        self.stopped = true;
    }
}

fn zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

impl Drop for Up {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = Command::new(strait_bin())
                .args(["topology", "down"])
                .arg(&self.file)
                .arg("--state-dir")
                .arg(self.state.path())
                .output();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// The QUIC address of a cluster's first node in a topology file.
fn address(file: &Path, cluster: &str) -> String {
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let clusters = t["clusters"].as_array().unwrap();
    let c = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some(cluster))
        .unwrap();
    c["nodes"][0]["address"].as_str().unwrap().to_string()
}

async fn produce(client: &Arc<Client>, topic: &str, tag: &str, n: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..n {
        let (key, value) = (format!("{tag}-k{i}"), format!("{tag}-{i}"));
        producer
            .send(
                topic,
                None,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
            )
            .await
            .unwrap();
    }
    producer.flush().await;
}

/// Every value of a topic with how often it appears; empty while the topic does not exist.
async fn values(client: &Arc<Client>, topic: &str) -> HashMap<Bytes, u32> {
    let mut seen = HashMap::new();
    let Ok(d) = Admin::new(client.clone()).describe_topic(topic).await else {
        return seen;
    };
    for p in 0..d.partitions.len() as u32 {
        for r in read_partition(client, topic, p).await {
            *seen.entry(r.value.unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until `topic` holds exactly the records tagged `tags` (n each), each once.
async fn expect_exactly(client: &Arc<Client>, cluster: &str, topic: &str, tags: &[&str], n: u32) {
    let wanted: Vec<Bytes> = tags
        .iter()
        .flat_map(|t| (0..n).map(move |i| Bytes::from(format!("{t}-{i}"))))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = values(client, topic).await;
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "{cluster}/{topic}: records held twice: {twice:?}"
        );
        let unexpected: Vec<_> = seen.keys().filter(|v| !wanted.contains(v)).collect();
        assert!(
            unexpected.is_empty(),
            "{cluster}/{topic}: unexpected records {unexpected:?}"
        );
        if seen.len() == wanted.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cluster}/{topic}: {} of {} records arrived",
            seen.len(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Brings an example up, produces `n` records on each (cluster, topic, tag), checks each
/// (cluster, topic) ends with exactly the listed tags, and takes it down.
async fn smoke(file: &str, produce_on: &[(&str, &str, &str)], expect: &[(&str, &str, &[&str])]) {
    smoke_then(file, produce_on, expect, |_| ()).await;
}

/// [`smoke`], then `more` on the running federation before it is brought down.
async fn smoke_then(
    file: &str,
    produce_on: &[(&str, &str, &str)],
    expect: &[(&str, &str, &[&str])],
    more: impl FnOnce(&Up),
) {
    const N: u32 = 200;
    let path = example(file);
    let out = strait(&["topology", "validate", path.to_str().unwrap()]);
    assert!(out.contains("valid"), "{out}");
    let up = Up::start(&path);
    assert!(
        up.output.lock().unwrap().contains(" --profile "),
        "up prints ready-to-paste client commands naming its profiles"
    );
    // One profile per cluster, `<topology>-<cluster>`, which reaches that cluster as is.
    let declared: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if let Some((cluster, topic, _)) = produce_on.first() {
        let profile = format!("{}-{cluster}", declared["name"].as_str().unwrap());
        let out = Command::new(strait_bin())
            .args(["topic", "list", "--profile", &profile])
            .env("XDG_CONFIG_HOME", up.state.path().join("config"))
            .env_remove("STRAIT_CA")
            .env_remove("STRAIT_BOOTSTRAP")
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && listed.contains(topic),
            "{listed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (cluster, topic, tag) in produce_on {
        produce(&up.client(&address(&path, cluster)), topic, tag, N).await;
    }
    for (cluster, topic, tags) in expect {
        expect_exactly(
            &up.client(&address(&path, cluster)),
            cluster,
            topic,
            tags,
            N,
        )
        .await;
    }
    let plan = up.cli("plan", &[]);
    assert!(plan.contains("nothing to change"), "{plan}");
    let status = up.cli("status", &["--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    let flows: usize = status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["nodes"].as_array().unwrap())
        .map(|n| n["flows"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        flows,
        declared["flows"].as_array().unwrap().len(),
        "status lists every flow: {status:#}"
    );
    more(&up);
    up.down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_mirrors_east_into_west() {
    smoke_then(
        "quickstart.toml",
        &[("east", "orders", "east")],
        &[("west", "east.orders", &["east"])],
        kcat_lines_work,
    )
    .await;
}

/// The quickstart's nodes have Kafka listeners; `up` prints each cluster's Kafka bootstrap and
/// kcat lines that work as printed: a record produced into east with kcat is read from the
/// mirror in west with kcat.
fn kcat_lines_work(up: &Up) {
    // The topology's `controllers` and `rack` reach the node: east is a one-voter quorum.
    let certs = up.state.path().join("certs");
    let path = |f: &str| certs.join(f).display().to_string();
    let described = strait(&[
        "cluster",
        "describe",
        "--json",
        "--bootstrap",
        "127.0.0.1:7401",
        "--ca",
        &path("ca.crt"),
        "--cert",
        &path("admin.crt"),
        "--key",
        &path("admin.key"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(json["voters"], serde_json::json!([1]), "{json:#}");
    assert_eq!(json["leader"], 1, "{json:#}");
    assert_eq!(json["nodes"][0]["address"], "127.0.0.1:7401", "{json:#}");
    assert_eq!(json["nodes"][0]["rack"], "us-east-1a", "{json:#}");
    let output = up.output.lock().unwrap().clone();
    assert!(
        output.contains("Kafka bootstrap of east (node 1): 127.0.0.1:9092"),
        "{output}"
    );
    assert!(
        output.contains("Kafka bootstrap of west (node 1): 127.0.0.1:9093"),
        "{output}"
    );
    let line = |needle: &str| {
        output
            .lines()
            .find(|l| l.contains("kcat") && l.contains(needle))
            .unwrap_or_else(|| panic!("no kcat line with {needle}: {output}"))
            .trim()
            .to_string()
    };
    let produce = line("-P");
    let consume = line("-C");
    let run = |cmd: &str| {
        Command::new("bash")
            .args(["-c", cmd])
            .current_dir(up.state.path())
            .output()
            .unwrap()
    };
    let p = run(&produce);
    assert!(p.status.success(), "{produce}: {p:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = run(&consume);
        let read = String::from_utf8_lossy(&c.stdout);
        if read.contains('3') {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{consume}: {c:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_ends_with_the_union_on_both_sides() {
    smoke(
        "active-active.toml",
        &[("east", "orders", "east"), ("west", "orders", "west")],
        &[
            ("east", "orders", &["east", "west"]),
            ("west", "orders", &["east", "west"]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke_gathers_every_edge() {
    smoke(
        "hub-and-spoke.toml",
        &[
            ("edge-a", "telemetry", "a"),
            ("edge-b", "telemetry", "b"),
            ("edge-c", "telemetry", "c"),
        ],
        &[
            ("hub", "edge-a.telemetry", &["a"]),
            ("hub", "edge-b.telemetry", &["b"]),
            ("hub", "edge-c.telemetry", &["c"]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_region() {
    smoke(
        "fan-out.toml",
        &[("hq", "prices", "hq")],
        &[
            ("eu", "hq.prices", &["hq"]),
            ("ap", "hq.prices", &["hq"]),
            ("sa", "hq.prices", &["hq"]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_delivers_every_record_everywhere_once() {
    let all: &[&str] = &["a", "b", "c"];
    smoke(
        "ring.toml",
        &[
            ("a", "events", "a"),
            ("b", "events", "b"),
            ("c", "events", "c"),
        ],
        &[
            ("a", "events", all),
            ("b", "events", all),
            ("c", "events", all),
        ],
    )
    .await;
}

/// A two-cluster topology on free ports, with `flow_topics` as the flow's regex and
/// `extra` appended (more topics).
fn two_regions(ports: &[u16; 4], flow_topics: &str, extra: &str) -> String {
    format!(
        r#"name = "edit"
[[clusters]]
name = "east"
nodes = [{{ id = 1, address = "127.0.0.1:{}", admin = "127.0.0.1:{}" }}]
[[clusters]]
name = "west"
nodes = [{{ id = 1, address = "127.0.0.1:{}", admin = "127.0.0.1:{}" }}]
[[topics]]
name = "orders"
partitions = 2
origins = ["east"]
[[flows]]
source = "east"
target = "west"
topics = "{flow_topics}"
{extra}"#,
        ports[0], ports[1], ports[2], ports[3]
    )
}

/// Writes a two-region topology on free ports to `file` and brings it up.
fn up_two_regions(file: &Path) -> (Up, [u16; 4]) {
    let ports = [
        free_udp_port(),
        free_tcp_port(),
        free_udp_port(),
        free_tcp_port(),
    ];
    std::fs::write(file, two_regions(&ports, "orders", "")).unwrap();
    (Up::start(file), ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_after_apply_is_empty_and_an_edit_plans_exactly_that_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edit.toml");
    let (up, ports) = up_two_regions(&file);
    assert!(up.cli("plan", &[]).contains("nothing to change"));
    let second = up.cli("apply", &[]);
    assert!(
        second.contains("nothing to change"),
        "a second apply changes nothing: {second}"
    );

    // Add a topic and widen the flow's selection.
    let payments = "[[topics]]\nname = \"payments\"\npartitions = 3\norigins = [\"east\"]\nconfigs = { \"retention.ms\" = \"86400000\" }\n";
    std::fs::write(&file, two_regions(&ports, "orders|payments", payments)).unwrap();
    let plan: Value = serde_json::from_str(&up.cli("plan", &["--json"])).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{plan:#}");
    assert_eq!(changes[0]["action"], "create_topic");
    assert_eq!(
        (changes[0]["cluster"].as_str(), changes[0]["topic"].as_str()),
        (Some("east"), Some("payments"))
    );
    assert_eq!(changes[0]["partitions"], 3);
    assert_eq!(changes[1]["action"], "reconfigure_flow");
    assert_eq!(
        changes[1]["differences"],
        serde_json::json!(["topics: \"orders\" → \"orders|payments\""])
    );
    let east = up.client(&format!("127.0.0.1:{}", ports[0]));
    assert!(
        Admin::new(east.clone())
            .describe_topic("payments")
            .await
            .is_err(),
        "plan touches nothing"
    );

    let applied = up.cli("apply", &[]);
    assert!(
        applied.contains("create topic payments") && applied.contains("2 change(s) applied"),
        "{applied}"
    );
    assert!(up.cli("plan", &[]).contains("nothing to change"));
    let d = Admin::new(east.clone())
        .describe_topic("payments")
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert!(
        d.configs
            .contains(&("retention.ms".to_string(), "86400000".to_string())),
        "{:?}",
        d.configs
    );

    // The reconfigured flow, still running without a restart, copies the new topic.
    produce(&east, "payments", "pay", 50).await;
    let west = up.client(&format!("127.0.0.1:{}", ports[2]));
    expect_exactly(&west, "west", "east.payments", &["pay"], 50).await;

    // A changed setting and more partitions are altered in place.
    let altered = payments
        .replace("86400000", "3600000")
        .replace("partitions = 3", "partitions = 4");
    std::fs::write(&file, two_regions(&ports, "orders|payments", &altered)).unwrap();
    let applied = up.cli("apply", &[]);
    assert!(
        applied.contains("grow topic payments on east: 3 → 4")
            && applied.contains("retention.ms 86400000 → 3600000"),
        "{applied}"
    );
    assert!(up.cli("plan", &[]).contains("nothing to change"));
    up.down();
}

#[test]
fn validate_names_the_element_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let ports = [7001, 9001, 7002, 9002];
    let bad = two_regions(
        &ports,
        "orders",
        "[[flows]]\nsource = \"east\"\ntarget = \"nowhere\"\n",
    );
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(strait_bin())
        .args(["topology", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flow east-to-nowhere") && err.contains("\"nowhere\" is not a cluster"),
        "{err}"
    );
    std::fs::write(&file, "name = \"x\"\n[[clusters]\n").unwrap();
    let out = Command::new(strait_bin())
        .args(["topology", "validate", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{v}"
    );
}

/// Headless Chromium's DOM of `url` after its scripts ran (virtual time lets the page's
/// fetches finish). CI installs Chromium (`.ci/run`); elsewhere: `apt-get install chromium`.
fn rendered_dom(url: &str) -> String {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no headless browser: install Debian's chromium (`apt-get install -y chromium`), as tests/run does");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_the_federation_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.toml");
    let (up, ports) = up_two_regions(&file);
    produce(
        &up.client(&format!("127.0.0.1:{}", ports[0])),
        "orders",
        "p",
        300,
    )
    .await;
    let west = up.client(&format!("127.0.0.1:{}", ports[2]));
    expect_exactly(&west, "west", "east.orders", &["p"], 300).await;
    let dom = rendered_dom(&format!("http://127.0.0.1:{}/", ports[3]));
    assert!(
        dom.contains(r#"data-cluster="east""#) && dom.contains(r#"data-cluster="west""#),
        "both clusters drawn: {dom}"
    );
    assert!(
        dom.contains(r#"data-flow="east-to-west""#),
        "the flow drawn as an arrow: {dom}"
    );
    assert!(
        dom.contains("east-to-west: lag 0 records"),
        "the arrow is labelled with the lag: {dom}"
    );
    let total = dom
        .split(r#"id="records-total">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(total >= 300, "a non-zero record count: {total}");
    // The source's page shows who copies from it, with the lag behind its own end, and lines
    // in place of its empty tables.
    let status: Value = serde_json::from_str(strait_tests::http_body(&strait_tests::http_get(
        &format!("127.0.0.1:{}", ports[1]),
        "/status",
    )))
    .unwrap();
    let out = &status["outgoing_flows"][0];
    assert_eq!(out["flow"], "east-to-west", "{status:#}");
    assert_eq!(out["target"], "west", "{status:#}");
    assert_eq!(out["lag_records"], 0, "{status:#}");
    assert_eq!(out["active"], true, "{status:#}");
    let dom = rendered_dom(&format!("http://127.0.0.1:{}/", ports[1]));
    assert!(
        dom.contains(r#"data-cluster="west""#) && dom.contains(r#"data-flow="east-to-west""#),
        "the outgoing flow drawn to its target: {dom}"
    );
    assert!(dom.contains("copying from here"), "{dom}");
    assert!(
        dom.contains(r#"<p id="flows-empty" class="muted">No flow runs in this node.</p>"#),
        "a line in place of the empty table: {dom}"
    );
    up.down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_declared_in_a_topology_bind_every_node_and_flows_still_copy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl.toml");
    let ports = [
        free_udp_port(),
        free_tcp_port(),
        free_udp_port(),
        free_tcp_port(),
    ];
    let security = r#"
[security]
authorization = true
principals = [{ name = "reader", role = "client" }]
acls = [{ principal = "reader", operation = "read", resource = "topic", name = "east.", pattern = "prefixed" }]
"#;
    std::fs::write(&file, two_regions(&ports, "orders", security)).unwrap();
    let out = strait(&["topology", "validate", file.to_str().unwrap()]);
    assert!(out.contains("valid"), "{out}");
    let up = Up::start(&file);
    let (east, west) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[2]),
    );
    // The operator and the gateways are superusers: records flow east → west.
    produce(&up.client(&east), "orders", "e", 50).await;
    expect_exactly(&up.client(&west), "west", "east.orders", &["e"], 50).await;
    let certs = up.state.path().join("certs");
    let reader = Client::new(ClientOptions::new(
        vec![west.clone()],
        strait_certs::client_config(
            &certs.join("ca.crt"),
            &certs.join("reader.crt"),
            &certs.join("reader.key"),
        )
        .unwrap(),
    ));
    let meta = Admin::new(reader.clone()).metadata(None).await.unwrap();
    let names: Vec<_> = meta.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["east.orders"], "reader sees only what it may read");
    let copied: usize = {
        let mut n = 0;
        for p in 0..2 {
            n += read_partition(&reader, "east.orders", p).await.len();
        }
        n
    };
    assert_eq!(copied, 50);
    let mut b = strait_protocol::BatchBuilder::new(Default::default());
    b.push(1, None, Some(b"x"), &[]);
    let produce = strait_protocol::Request::Produce {
        topic: "east.orders".into(),
        partition: 0,
        acks: strait_protocol::Acks::All,
    };
    let err = reader
        .call(&produce, &[b.finish().into_bytes()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("may not write"), "{err}");
    up.down();
}

/// The nodes `topology up` starts die with it, even when it is killed with kill -9 (they ask
/// the kernel for SIGTERM at their parent's death and shut down cleanly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stop_when_topology_up_is_killed() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("topologies/quickstart.toml");
    let mut up = Up::start(&file);
    let state: Value =
        serde_json::from_slice(&std::fs::read(up.state.path().join("up.json")).unwrap()).unwrap();
    let pids: Vec<u64> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pid"].as_u64().unwrap())
        .collect();
    assert!(!pids.is_empty());
    up.child.kill().unwrap(); // SIGKILL: `up` runs no shutdown of its own
    up.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for pid in pids {
        while Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
            assert!(
                Instant::now() < deadline,
                "node {pid} still runs after its `topology up` was killed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    up.stopped = true;
}

/// The failback walkthrough inside `up`: one node is killed as a disaster drill and `up`
/// keeps running; `restart-node` brings it back as `up` runs it (same config, same data, the
/// log appended), `up.json` names the new process, and `down` stops it with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_inside_up_comes_back_with_restart_node_and_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.toml");
    let (mut up, ports) = up_two_regions(&file);
    let east = format!("127.0.0.1:{}", ports[0]);
    produce(&up.client(&east), "orders", "before", 50).await;
    let pid_of = |up: &Up| -> u64 {
        let state: Value =
            serde_json::from_slice(&std::fs::read(up.state.path().join("up.json")).unwrap())
                .unwrap();
        state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["cluster"] == "east")
            .unwrap()["pid"]
            .as_u64()
            .unwrap()
    };
    let old = pid_of(&up);
    let out = up.cli("stop-node", &["--cluster", "east", "--node", "1", "--kill"]);
    assert!(
        out.contains("killed") && out.contains("restart-node"),
        "{out}"
    );
    assert!(
        !Path::new(&format!("/proc/{old}")).exists() || zombie(old),
        "the node was killed"
    );
    assert!(
        matches!(up.child.try_wait(), Ok(None)),
        "up keeps running without one node"
    );
    let err = strait_tests::strait_fails(&[
        "topology",
        "stop-node",
        file.to_str().unwrap(),
        "--state-dir",
        &up.state_arg(),
        "--cluster",
        "north",
        "--node",
        "1",
    ]);
    assert!(err.contains("no node 1 in cluster \"north\""), "{err}");

    let out = up.cli("restart-node", &["--cluster", "east", "--node", "1"]);
    assert!(out.contains("running again"), "{out}");
    let new = pid_of(&up);
    assert_ne!(new, old);
    assert!(Path::new(&format!("/proc/{new}")).exists());
    // Same data: what was produced before the crash is there, and the node takes more.
    produce(&up.client(&east), "orders", "after", 50).await;
    let ends = strait_tests::end_offsets(&up.client(&east), "orders", 2).await;
    assert_eq!(ends.iter().sum::<u64>(), 100);
    up.down();
    assert!(
        !Path::new(&format!("/proc/{new}")).exists() || zombie(new),
        "down stops the restarted node"
    );
}
