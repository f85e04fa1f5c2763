//! The `strait` command as a user runs it: certificates, a node, produce, consume.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_strait");

fn strait(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("STRAIT_CA", "c/ca.crt")
        .env("STRAIT_CERT", "c/app.crt")
        .env("STRAIT_KEY", "c/app.key")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("STRAIT_PROFILE")
        .env_remove("STRAIT_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(dir: &Path) -> (Node, String) {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    (start_node_on(dir, &addr), addr)
}

/// `strait node run` of cluster east, node 1, on `dir/data` at `addr` with `dir/c`'s
/// certificates.
fn node_command(dir: &Path, addr: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "node",
            "run",
            "--cluster",
            "east",
            "--node-id",
            "1",
            "--listen",
            addr,
            "--data-dir",
            "data",
            "--ca",
            "c/ca.crt",
            "--cert",
            "c/node-1.crt",
            "--key",
            "c/node-1.key",
        ])
        .current_dir(dir);
    command
}

/// Starts a node on `dir/data` at `addr` and waits until it answers.
fn start_node_on(dir: &Path, addr: &str) -> Node {
    let addr = addr.to_string();
    let child = node_command(dir, &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = strait(dir, &["topic", "list", "--bootstrap", &addr], None);
        if out.status.success() {
            return node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("node did not come up");
}

/// Certificates for a node and an app under `dir/c`.
fn certificates(d: &Path) {
    ok(strait(d, &["certs", "init", "--dir", "c"], None));
    ok(strait(
        d,
        &[
            "certs", "issue", "--dir", "c", "--name", "node-1", "--role", "node",
        ],
        None,
    ));
    ok(strait(
        d,
        &[
            "certs", "issue", "--dir", "c", "--name", "app", "--role", "client",
        ],
        None,
    ));
}

#[test]
fn produce_then_consume_returns_exactly_what_was_produced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(strait(d, &["certs", "init", "--dir", "c"], None));
    ok(strait(
        d,
        &[
            "certs",
            "issue",
            "--dir",
            "c",
            "--name",
            "node-1",
            "--role",
            "node",
            "--host",
            "127.0.0.1",
        ],
        None,
    ));
    ok(strait(
        d,
        &[
            "certs", "issue", "--dir", "c", "--name", "app", "--role", "client",
        ],
        None,
    ));
    let inspect: Value = serde_json::from_str(&ok(strait(
        d,
        &["certs", "inspect", "c/node-1.crt", "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(inspect["role"], "node");
    assert!(inspect["sans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "IP:127.0.0.1"));

    let (_node, addr) = start_node(d);
    let b = ["--bootstrap", addr.as_str()];
    ok(strait(
        d,
        &[
            &[
                "topic",
                "create",
                "lines",
                "--partitions",
                "1",
                "--config",
                "flush=always",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));

    // A file of raw lines: plain, empty, unicode, keyed, and bytes that are not UTF-8.
    let mut input: Vec<u8> = Vec::new();
    let lines: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        b"".to_vec(),
        "ünïcødé ✓ 日本".as_bytes().to_vec(),
        b"k1=with key".to_vec(),
        vec![0xff, 0xfe, b'x', 0x80],
        b"  spaced  ".to_vec(),
    ];
    for l in &lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    std::fs::write(d.join("raw.txt"), &input).unwrap();
    let raw = std::fs::read(d.join("raw.txt")).unwrap();
    let out = ok(strait(
        d,
        &[&["produce", "lines", "--key-separator", "="][..], &b].concat(),
        Some(&raw),
    ));
    assert!(out.contains("6 records acknowledged"), "{out}");

    let out = ok(strait(
        d,
        &[
            &[
                "consume",
                "lines",
                "--from-beginning",
                "--json",
                "--idle-exit-ms",
                "1500",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), lines.len(), "{out}");
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, (record, line)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(record["topic"], "lines");
        assert_eq!(record["partition"], 0);
        assert_eq!(record["offset"], i as u64);
        assert!(record["timestamp_ms"].as_i64().unwrap() > 0);
        let (key, value): (Option<&[u8]>, &[u8]) = match line.iter().position(|c| *c == b'=') {
            Some(at) => (Some(&line[..at]), &line[at + 1..]),
            None => (None, &line[..]),
        };
        match key {
            None => assert!(record["key"].is_null(), "{record}"),
            Some(k) => assert_eq!(record["key"].as_str().unwrap().as_bytes(), k),
        }
        match std::str::from_utf8(value) {
            Ok(s) => assert_eq!(record["value"], s, "{record}"),
            Err(_) => assert_eq!(
                b64.decode(record["value_base64"].as_str().unwrap())
                    .unwrap(),
                value
            ),
        }
    }

    // One partition, one offset, a bound.
    let out = ok(strait(
        d,
        &[
            &[
                "consume",
                "lines",
                "--partition",
                "0",
                "--offset",
                "3",
                "--max-records",
                "2",
                "--json",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));
    let offsets: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(offsets, vec![3, 4]);

    let described: Value = serde_json::from_str(&ok(strait(
        d,
        &[&["topic", "describe", "lines", "--json"][..], &b].concat(),
        None,
    )))
    .unwrap();
    assert_eq!(described["partitions"][0]["end_offset"], 6);
    assert_eq!(described["configs"]["flush"], "always");
    let listed = ok(strait(d, &[&["topic", "list"][..], &b].concat(), None));
    assert!(
        listed.starts_with("TOPIC") && listed.contains("lines"),
        "{listed}"
    );

    let failed = strait(d, &[&["produce", "nope"][..], &b].concat(), Some(b"x\n"));
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("strait topic create nope"), "{err}");
    ok(strait(
        d,
        &[&["topic", "delete", "lines"][..], &b].concat(),
        None,
    ));
}

#[test]
fn consume_with_a_group_commits_and_reset_offsets_rewinds_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (_node, addr) = start_node(d);
    let b = ["--bootstrap", addr.as_str()];
    ok(strait(
        d,
        &[&["topic", "create", "events", "--partitions", "2"][..], &b].concat(),
        None,
    ));
    let input: String = (0..10).map(|i| format!("e{i}\n")).collect();
    ok(strait(
        d,
        &[&["produce", "events"][..], &b].concat(),
        Some(input.as_bytes()),
    ));
    let consume = [
        &[
            "consume",
            "events",
            "--group",
            "g",
            "--from-beginning",
            "--json",
            "--idle-exit-ms",
            "1500",
        ][..],
        &b,
    ]
    .concat();
    assert_eq!(ok(strait(d, &consume, None)).lines().count(), 10);
    // Everything was committed: a second run of the group sees nothing new.
    assert_eq!(ok(strait(d, &consume, None)).lines().count(), 0);
    let described: Value = serde_json::from_str(&ok(strait(
        d,
        &[&["group", "describe", "g", "--json"][..], &b].concat(),
        None,
    )))
    .unwrap();
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|p| p["committed_offset"].as_u64().unwrap())
            .sum::<u64>(),
        10
    );
    assert!(parts.iter().all(|p| p["lag"] == 0), "{described}");
    let listed: Value = serde_json::from_str(&ok(strait(
        d,
        &[&["group", "list", "--json"][..], &b].concat(),
        None,
    )))
    .unwrap();
    assert!(listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["group"] == "g"));
    // A preview changes nothing; --execute rewinds.
    let preview = ok(strait(
        d,
        &[
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "events",
                "--to-earliest",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));
    assert!(preview.contains("preview only"), "{preview}");
    assert_eq!(ok(strait(d, &consume, None)).lines().count(), 0);
    ok(strait(
        d,
        &[
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "events",
                "--to-earliest",
                "--execute",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));
    assert_eq!(ok(strait(d, &consume, None)).lines().count(), 10);
}

/// A group consumer that stops after `--max-records` commits exactly what it printed, per
/// partition, even when its last poll fetched more; the next member of the group resumes right
/// after, also across a kill -9 of the node in between.
#[test]
fn a_group_consumer_commits_exactly_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (node, addr) = start_node(d);
    let b = ["--bootstrap", addr.as_str()];
    ok(strait(
        d,
        &[&["topic", "create", "g", "--partitions", "4"][..], &b].concat(),
        None,
    ));
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    ok(strait(
        d,
        &[&["produce", "g"][..], &b].concat(),
        Some(input.as_bytes()),
    ));
    let first = ok(strait(
        d,
        &[
            &[
                "consume",
                "g",
                "--group",
                "app",
                "--from-beginning",
                "--max-records",
                "4000",
            ][..],
            &b,
        ]
        .concat(),
        None,
    ));
    assert_eq!(first.lines().count(), 4000);
    drop(node); // kill -9
    let _node = start_node_on(d, &addr);
    let described: Value = serde_json::from_str(&ok(strait(
        d,
        &[&["group", "describe", "app", "--json"][..], &b].concat(),
        None,
    )))
    .unwrap();
    let committed: u64 = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(
        committed, 4000,
        "commits cover what was printed: {described}"
    );
    let second = ok(strait(
        d,
        &[
            &["consume", "g", "--group", "app", "--idle-exit-ms", "3000"][..],
            &b,
        ]
        .concat(),
        None,
    ));
    let mut seen: Vec<u64> = first
        .lines()
        .chain(second.lines())
        .map(|l| l.parse().unwrap())
        .collect();
    let total = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (1..=10_000).collect::<Vec<u64>>(), "none missing");
    assert_eq!(
        total, 10_000,
        "nothing printed twice: the exit commit covered all 4000"
    );
}

/// A node refuses to start on a data directory that another node holds, naming it and the
/// holder; and refuses a damaged producer-ids file instead of reusing ids.
#[test]
fn a_node_refuses_a_held_data_directory_and_a_damaged_producer_id_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (node, _addr) = start_node(d);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let second = run_node_once(d, &format!("127.0.0.1:{port}"));
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another node"), "{err}");
    assert!(
        err.contains(&node.0.id().to_string()),
        "names the holder's pid: {err}"
    );
    drop(node);
    std::fs::write(d.join("data/producer-ids"), b"not a number").unwrap();
    let damaged = run_node_once(d, &format!("127.0.0.1:{port}"));
    assert!(!damaged.status.success());
    let err = String::from_utf8_lossy(&damaged.stderr);
    assert!(err.contains("producer-ids"), "{err}");
    assert!(err.contains("never be reused"), "{err}");

    // A data directory of the old format (before Kafka's RecordBatch v2) is refused by name,
    // never read as if it were the new one.
    std::fs::remove_file(d.join("data/producer-ids")).unwrap();
    std::fs::write(d.join("data/format"), b"1\n").unwrap();
    let old = run_node_once(d, &format!("127.0.0.1:{port}"));
    assert!(!old.status.success());
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(
        err.contains("format 1") && err.contains("empty --data-dir"),
        "{err}"
    );
}

/// Runs `node run` on `dir/data` expecting it to exit by itself (a refusal); its output.
fn run_node_once(dir: &Path, addr: &str) -> Output {
    let mut child = node_command(dir, addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the node did not refuse to start");
}

/// Shell completions for bash, zsh and fish, and man pages for every subcommand.
#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(strait(d, &["completions", shell], None));
        for word in ["topology", "produce", "consume", "mirror", "--bootstrap"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let refused = strait(d, &["completions", "tcsh"], None);
    assert!(!refused.status.success());
    ok(strait(d, &["man", "--dir", "man"], None));
    for page in [
        "strait.1",
        "strait-topic-create.1",
        "strait-topology-up.1",
        "strait-mirror-promote.1",
    ] {
        let text = std::fs::read_to_string(d.join("man").join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
}

/// produce: tombstones with --null-value, records across newlines with --delimiter, headers
/// with -H; consume: keys and headers in the default output, a kcat-like --format, --pattern
/// alone and with a group, and an unknown topic answered with the fix.
#[test]
fn produce_and_consume_options_for_keys_headers_tombstones_and_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (_node, addr) = start_node(d);
    let b = ["--bootstrap", addr.as_str()];
    for topic in ["edge-a.telemetry", "edge-b.telemetry", "other"] {
        ok(strait(
            d,
            &[&["topic", "create", topic, "--partitions", "1"][..], &b].concat(),
            None,
        ));
    }
    let produce = |topic: &str, extra: &[&str], input: &[u8]| {
        ok(strait(
            d,
            &[&["produce", topic][..], extra, &b].concat(),
            Some(input),
        ))
    };
    produce(
        "edge-a.telemetry",
        &[
            "--key-separator",
            "=",
            "--null-value",
            "<null>",
            "-H",
            "src=a",
            "-H",
            "v=1",
        ],
        b"k1=one\nk2=<null>\n",
    );
    produce(
        "edge-b.telemetry",
        &["--delimiter", "\\0"],
        b"line one\nline two\0second\0",
    );
    produce("other", &[], b"not matched\n");

    let consume = |extra: &[&str]| {
        ok(strait(
            d,
            &[
                &["consume", "--from-beginning", "--idle-exit-ms", "1500"][..],
                extra,
                &b,
            ]
            .concat(),
            None,
        ))
    };
    let plain = consume(&["edge-a.telemetry"]);
    assert_eq!(plain, "k1\tone\tsrc=a,v=1\nk2\t\tsrc=a,v=1\n", "{plain}");
    let json: Vec<Value> = consume(&["edge-a.telemetry", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[1]["value"], Value::Null, "a tombstone: {json:?}");
    assert_eq!(json[0]["headers"][0]["key"], "src");
    let formatted = consume(&["edge-b.telemetry", "--format", "%t/%p@%o [%v]\\n"]);
    assert_eq!(
        formatted,
        "edge-b.telemetry/0@0 [line one\nline two]\nedge-b.telemetry/0@1 [second]\n"
    );
    let mut matched: Vec<String> =
        consume(&["--pattern", "edge-.*\\.telemetry", "--format", "%t\\n"])
            .lines()
            .map(str::to_string)
            .collect();
    matched.sort();
    assert_eq!(
        matched,
        [
            "edge-a.telemetry",
            "edge-a.telemetry",
            "edge-b.telemetry",
            "edge-b.telemetry"
        ]
    );
    let grouped = consume(&["--pattern", "edge-.*", "--group", "g", "--format", "%t\\n"]);
    assert_eq!(grouped.lines().count(), 4, "{grouped}");
    let unknown = strait(
        d,
        &[&["consume", "nope", "--idle-exit-ms", "500"][..], &b].concat(),
        None,
    );
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("strait topic create nope"), "{err}");
}

/// Errors that name the cause and the fix: a missing identity names the flags and variables,
/// a missing file is named once, a key that is not the certificate's says so, and a client
/// pointed at a node's admin HTTP port is told so at once.
#[test]
fn client_errors_name_the_cause_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let run = |args: &[&str], env: bool| {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(d);
        if !env {
            c.env_remove("STRAIT_CA")
                .env_remove("STRAIT_CERT")
                .env_remove("STRAIT_KEY");
        } else {
            c.env("STRAIT_CA", "c/ca.crt")
                .env("STRAIT_CERT", "c/app.crt")
                .env("STRAIT_KEY", "c/app.key");
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let none = run(&["topic", "list", "--bootstrap", "127.0.0.1:1"], false);
    assert!(
        none.contains("STRAIT_CERT") && none.contains("--key"),
        "{none}"
    );
    let missing = run(
        &[
            "topic",
            "list",
            "--bootstrap",
            "127.0.0.1:1",
            "--cert",
            "c/nope.crt",
        ],
        true,
    );
    assert_eq!(missing.matches("No such file").count(), 1, "{missing}");
    let mismatch = run(
        &[
            "topic",
            "list",
            "--bootstrap",
            "127.0.0.1:1",
            "--key",
            "c/node-1.key",
        ],
        true,
    );
    assert!(
        mismatch.contains("does not belong to the certificate")
            && !mismatch.contains("KeyMismatch"),
        "{mismatch}"
    );
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap().to_string();
    let started = Instant::now();
    let wrong = run(&["topic", "list", "--bootstrap", &addr], true);
    assert!(wrong.contains("admin HTTP port"), "{wrong}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "not retried: {wrong}"
    );
}

/// Runs strait in `dir` with no identity in the environment, profiles kept in `dir/config`,
/// plus the variables in `env`.
fn bare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("STRAIT_CA")
        .env_remove("STRAIT_CERT")
        .env_remove("STRAIT_KEY")
        .env_remove("STRAIT_BOOTSTRAP")
        .env_remove("STRAIT_PROFILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Profiles name a cluster and an identity once; commands then need no flags. Flags beat the
/// environment, which beats the profile; a named profile that does not exist is an error
/// naming the way to create it; the file is readable by its owner only.
#[test]
fn profiles_replace_connection_flags_with_flags_and_environment_taking_precedence() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (_node, addr) = start_node(d);
    let none = String::from_utf8(bare(d, &["profile", "list"], &[]).stdout).unwrap();
    assert!(none.contains("no profiles"), "{none}");
    ok(bare(
        d,
        &[
            "profile",
            "create",
            "east",
            "--bootstrap",
            &addr,
            "--ca",
            "c/ca.crt",
            "--cert",
            "c/app.crt",
            "--key",
            "c/app.key",
        ],
        &[],
    ));
    ok(bare(
        d,
        &[
            "profile",
            "create",
            "west",
            "--bootstrap",
            "127.0.0.1:9",
            "--use",
        ],
        &[],
    ));
    let file = d.join("config/strait/profiles.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the profiles file names key files: owner only");
    let list: serde_json::Value =
        serde_json::from_str(&ok(bare(d, &["profile", "list", "--json"], &[]))).unwrap();
    let current: Vec<&str> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["current"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(current, vec!["west"]);
    let ca = list["profiles"][0]["ca"].as_str().unwrap();
    assert!(
        Path::new(ca).is_absolute(),
        "paths work from any directory: {ca}"
    );

    ok(bare(d, &["profile", "use", "east"], &[]));
    // No flags, no environment: the current profile connects.
    ok(bare(
        d,
        &["topic", "create", "orders", "--partitions", "1"],
        &[],
    ));
    let out = ok(bare(d, &["topic", "list", "--profile", "east"], &[]));
    assert!(out.contains("orders"), "{out}");
    let out = ok(bare(d, &["topic", "list"], &[("STRAIT_PROFILE", "east")]));
    assert!(out.contains("orders"), "{out}");
    // A flag beats the environment, which beats the profile.
    let flag = bare(
        d,
        &["topic", "list", "--ca", "c/flag.crt"],
        &[("STRAIT_CA", "c/env.crt")],
    );
    let err = String::from_utf8_lossy(&flag.stderr);
    assert!(!flag.status.success() && err.contains("flag.crt"), "{err}");
    let env = bare(d, &["topic", "list"], &[("STRAIT_CA", "c/env.crt")]);
    let err = String::from_utf8_lossy(&env.stderr);
    assert!(!env.status.success() && err.contains("env.crt"), "{err}");
    // An unknown profile is named, with the way to create it.
    let unknown = bare(d, &["topic", "list", "--profile", "north"], &[]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success(), "{err}");
    assert!(
        err.contains("no profile \"north\"") && err.contains("profile create"),
        "{err}"
    );
    ok(bare(d, &["profile", "delete", "east"], &[]));
    let gone = bare(d, &["topic", "list"], &[]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        !gone.status.success() && err.contains("--profile NAME"),
        "{err}"
    );
    // Without a current profile and identity, the missing address names every way to give it.
    let no_addr = bare(
        d,
        &[
            "topic",
            "list",
            "--ca",
            "c/ca.crt",
            "--cert",
            "c/app.crt",
            "--key",
            "c/app.key",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&no_addr.stderr);
    assert!(
        err.contains("--bootstrap") && err.contains("STRAIT_BOOTSTRAP"),
        "{err}"
    );
}
