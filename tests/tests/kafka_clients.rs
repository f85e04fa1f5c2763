//! Kafka clients nobody here wrote, against a node's Kafka listener (TLS with client
//! certificates from the cluster's CA): confluent-kafka (librdkafka), kafka-python, kafkajs
//! and kcat. What they store is checked again through Strait's own client: the same offsets,
//! keys, values and headers, whichever door a record came in by.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;

use serde_json::{json, Value};
use strait_tests::kafka_clients::{self as kc, tls, with};
use strait_tests::{free_tcp_port, read_partition, strait_bin, NodeProcess, Pki};

/// A node with a Kafka listener; answers it and the Kafka bootstrap address.
fn node(pki: &Pki, dir: &Path, extra: &str) -> (NodeProcess, String) {
    let kafka = format!("127.0.0.1:{}", free_tcp_port());
    let config = format!("[kafka]\nlisten = \"{kafka}\"\nauto_create_topics = true\n{extra}");
    (NodeProcess::start(pki, "east", dir, &config), kafka)
}

fn text(v: &Option<bytes::Bytes>) -> Option<String> {
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `strait group describe GROUP --json` against a node, as the client `app`.
fn describe_group(pki: &Pki, address: &str, group: &str) -> Value {
    let out = std::process::Command::new(strait_bin())
        .args(["group", "describe", group, "--json", "--bootstrap", address])
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(pki.path("app.crt"))
        .arg("--key")
        .arg(pki.path("app.key"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The summed lag of a group's partitions (1 per partition it cannot tell).
fn group_lag(d: &Value) -> u64 {
    d["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["lag"].as_u64().unwrap_or(1))
        .sum()
}

/// Asserts each partition of `topic` holds the values `<prefix><i>` of its records exactly once
/// and in order, where record i of `total` went to partition i % `partitions`.
async fn assert_each_value_once(
    client: &std::sync::Arc<strait_protocol::client::Client>,
    topic: &str,
    partitions: u32,
    total: u64,
    prefix: &str,
) {
    for p in 0..partitions {
        let values: Vec<u64> = read_partition(client, topic, p)
            .await
            .iter()
            .map(|s| {
                text(&s.value)
                    .unwrap()
                    .trim_start_matches(prefix)
                    .parse()
                    .unwrap()
            })
            .collect();
        let want: Vec<u64> = (0..total)
            .filter(|i| i % u64::from(partitions) == u64::from(p))
            .collect();
        assert_eq!(
            values.len(),
            want.len(),
            "partition {p}: lost or duplicated records"
        );
        assert_eq!(values, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_round_trips_every_codec_with_headers_null_keys_and_tombstones() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (n, kafka) = node(&pki, &dir.path().join("n"), "");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let settings = with(
        &tls(&pki, "app"),
        json!({"bootstrap": kafka, "topic_prefix": "rt", "codecs": codecs, "count": 30}),
    );
    let out = kc::run("confluent_roundtrip.py", &settings);
    let client = pki.client(&n.address);
    for codec in codecs {
        let got = out[codec].as_array().unwrap();
        assert_eq!(got.len(), 32, "{codec}: {got:?}");
        for (i, r) in got.iter().enumerate().take(30) {
            assert_eq!(r["offset"], i as u64, "{codec}");
            assert_eq!(r["key"], format!("key-{}", i % 7));
            assert_eq!(
                r["value"].as_str().unwrap(),
                format!("{codec}-value-{i}").repeat(1 + i % 3)
            );
            assert_eq!(r["headers"], json!([["h1", format!("v{i}")], ["h2", null]]));
        }
        assert_eq!(got[30]["key"], Value::Null, "a null key survives");
        assert_eq!(got[30]["value"], "no key");
        assert_eq!(got[31]["key"], "key-0");
        assert_eq!(got[31]["value"], Value::Null, "a tombstone survives");
        // The same records through Strait's own protocol, at the same offsets.
        let native = read_partition(&client, &format!("rt-{codec}"), 0).await;
        assert_eq!(native.len(), 32, "{codec}");
        for (seen, r) in native.iter().zip(got) {
            assert_eq!(Some(seen.offset), r["offset"].as_u64());
            assert_eq!(
                text(&seen.key).map(Value::from).unwrap_or(Value::Null),
                r["key"]
            );
            assert_eq!(
                text(&seen.value).map(Value::from).unwrap_or(Value::Null),
                r["value"]
            );
        }
    }
}

#[test]
fn kafka_python_commits_show_in_strait_group_describe() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (n, kafka) = node(&pki, &dir.path().join("n"), "");
    let settings = with(
        &tls(&pki, "app"),
        json!({"bootstrap": kafka, "topic": "kp", "group": "kp-readers", "count": 25}),
    );
    let out = kc::run("kafka_python_roundtrip.py", &settings);
    let records = out["records"].as_array().unwrap();
    assert_eq!(records.len(), 25);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i as u64);
        assert_eq!(r["key"], format!("k{i}"));
        assert_eq!(r["value"], format!("v{i}"));
        assert_eq!(r["headers"], json!([["n", i.to_string()]]));
    }
    assert_eq!(
        out["committed"], 25,
        "the committed offset as the node returns it"
    );
    let d = describe_group(&pki, &n.address, "kp-readers");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{d}");
    assert_eq!(parts[0]["topic"], "kp");
    assert_eq!(parts[0]["committed_offset"], 25);
    assert_eq!(parts[0]["lag"], 0);
}

#[test]
fn kafkajs_round_trips_in_a_group() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let settings = with(
        &tls(&pki, "app"),
        json!({"bootstrap": kafka, "topic": "kj", "group": "kj-readers", "count": 40}),
    );
    let out = kc::run("kafkajs_roundtrip.js", &settings);
    let records = out["records"].as_array().unwrap();
    assert_eq!(records.len(), 40);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i as u64);
        assert_eq!(r["key"], format!("k{i}"));
        assert_eq!(r["value"], format!("v{i}"));
        assert_eq!(r["headers"], json!([["n", i.to_string()]]));
    }
}

#[test]
fn kcat_produces_and_consumes_over_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let _ = pki.client_tls("app");
    let ssl = |c: &mut std::process::Command| {
        c.args(["-b", &kafka, "-X", "security.protocol=ssl"])
            .arg("-X")
            .arg(format!("ssl.ca.location={}", pki.ca().display()))
            .arg("-X")
            .arg(format!(
                "ssl.certificate.location={}",
                pki.path("app.crt").display()
            ))
            .arg("-X")
            .arg(format!(
                "ssl.key.location={}",
                pki.path("app.key").display()
            ));
    };
    let mut produce = kc::kcat();
    ssl(&mut produce);
    produce
        .args(["-P", "-t", "kc", "-K", ":", "-z", "zstd"])
        .stdin(std::process::Stdio::piped());
    let mut child = produce.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(stdin, "key{i}:value{i}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
    let mut consume = kc::kcat();
    ssl(&mut consume);
    let out = consume
        .args([
            "-C",
            "-t",
            "kc",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k %s\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("{i} key{i} value{i}")).collect();
    assert_eq!(lines, want);
}

/// Creates `topic` with `partitions` partitions through Strait's own admin client.
async fn create(pki: &Pki, n: &NodeProcess, topic: &str, partitions: u32) {
    strait_protocol::client::Admin::new(pki.client(&n.address))
        .create_topic(topic, partitions, Vec::new())
        .await
        .unwrap();
}

/// Three librdkafka members with `strategy` share six partitions, rebalance as one joins and
/// one leaves, read every record exactly once, and a member after a node restart resumes from
/// their commits.
async fn group_of_three(strategy: &str) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let (mut n, kafka) = node(&pki, &data, "");
    create(&pki, &n, "orders", 6).await;
    let base = with(
        &tls(&pki, "app"),
        json!({"bootstrap": kafka, "topic": "orders"}),
    );
    kc::run(
        "confluent_produce.py",
        &with(&base, json!({"partitions": 6, "count": 600, "prefix": "a"})),
    );
    let member = |name: &str| {
        kc::Member::start(
            "confluent_member.py",
            &with(
                &base,
                json!({"group": "billing", "strategy": strategy, "name": name}),
            ),
        )
    };
    let m1 = member("m1");
    let m2 = member("m2");
    kc::settle(&[&m1, &m2], 6, &[3, 3]);
    let m3 = member("m3");
    kc::settle(&[&m1, &m2, &m3], 6, &[2, 2, 2]);
    kc::run(
        "confluent_produce.py",
        &with(&base, json!({"partitions": 6, "count": 300, "prefix": "b"})),
    );
    let mut read = m3.stop();
    kc::settle(&[&m1, &m2], 6, &[3, 3]);
    kc::run(
        "confluent_produce.py",
        &with(&base, json!({"partitions": 6, "count": 300, "prefix": "c"})),
    );
    // Let the remaining members catch up before they leave.
    let client = pki.client(&n.address);
    let deadline = std::time::Instant::now() + kc::STEP;
    loop {
        let d = describe_group(&pki, &n.address, "billing");
        let lag = group_lag(&d);
        if d["partitions"].as_array().unwrap().len() == 6 && lag == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not catch up: {d}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    read.extend(m1.stop());
    read.extend(m2.stop());
    let mut values: Vec<String> = read.iter().map(|(_, _, v)| v.clone()).collect();
    values.sort();
    let mut want: Vec<String> = (0..600)
        .map(|i| format!("a-{i}"))
        .chain((0..300).map(|i| format!("b-{i}")))
        .chain((0..300).map(|i| format!("c-{i}")))
        .collect();
    want.sort();
    assert_eq!(values.len(), want.len(), "every record read exactly once");
    assert_eq!(values, want);
    drop(client);

    // After a restart of the node, a new member resumes from the group's commits.
    n.kill9();
    drop(n);
    let port: u16 = kafka.rsplit_once(':').unwrap().1.parse().unwrap();
    let n = NodeProcess::start(
        &pki,
        "east",
        &data,
        &format!("[kafka]\nlisten = \"127.0.0.1:{port}\"\nauto_create_topics = true\n"),
    );
    kc::run(
        "confluent_produce.py",
        &with(&base, json!({"partitions": 6, "count": 60, "prefix": "d"})),
    );
    let m4 = member("m4");
    kc::settle(&[&m4], 6, &[6]);
    let deadline = std::time::Instant::now() + kc::STEP;
    while std::time::Instant::now() < deadline {
        let d = describe_group(&pki, &n.address, "billing");
        let lag = group_lag(&d);
        if lag == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let after: Vec<String> = m4.stop().into_iter().map(|(_, _, v)| v).collect();
    let mut after_sorted = after.clone();
    after_sorted.sort();
    let mut want: Vec<String> = (0..60).map(|i| format!("d-{i}")).collect();
    want.sort();
    assert_eq!(
        after_sorted, want,
        "only what came after the commits: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_with_range_rebalances_and_resumes_from_commits() {
    group_of_three("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_with_cooperative_sticky_rebalances_and_resumes_from_commits() {
    group_of_three("cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafka_producer_loses_and_duplicates_nothing_across_kill_9() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let (mut n, kafka) = node(&pki, &data, "");
    create(&pki, &n, "payments", 2).await;
    let base = with(
        &tls(&pki, "app"),
        json!({"bootstrap": kafka, "topic": "payments", "partitions": 2, "count": 200_000, "prefix": "p"}),
    );
    let producer = kc::command("confluent_produce.py", &base)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the node while the producer is in full flight, then bring it back where it was.
    let client = pki.client(&n.address);
    let deadline = std::time::Instant::now() + kc::STEP;
    loop {
        let ends: u64 = strait_tests::end_offsets(&client, "payments", 2)
            .await
            .iter()
            .sum();
        if ends > 20_000 {
            assert!(
                ends < 200_000,
                "the producer finished before the kill; send more"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    n.kill9();
    let udp: u16 = n.address.rsplit_once(':').unwrap().1.parse().unwrap();
    drop(n);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let config = format!("[kafka]\nlisten = \"{kafka}\"\nauto_create_topics = true\n");
    let n = NodeProcess::start_on(&pki, "east", &data, &config, udp);
    let out = producer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(delivered["delivered"].as_array().unwrap().len(), 200_000);
    // Every value exactly once, in the order it was sent within its partition.
    let client = pki.client(&n.address);
    assert_each_value_once(&client, "payments", 2, 200_000, "p-").await;
}

/// Connections cut after every 512 KiB of requests, answers in flight included: the producer
/// retries batches
/// the node already stored, and the sequence checks must turn each retry into the original
/// offsets instead of a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafka_producer_through_cut_connections_stores_each_record_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{}", free_tcp_port());
    let relay_address = format!("127.0.0.1:{}", free_tcp_port());
    // Clients are told to come back through the relay, so every connection crosses it.
    let config = format!("[kafka]\nlisten = \"{kafka}\"\nadvertise = \"{relay_address}\"\n");
    let n = NodeProcess::start(&pki, "east", &dir.path().join("n"), &config);
    create(&pki, &n, "payments", 2).await;
    let relay = kc::CuttingRelay::start(&relay_address, &kafka, 512 << 10);
    let settings = with(
        &tls(&pki, "app"),
        json!({"bootstrap": relay.address, "topic": "payments", "partitions": 2, "count": 100_000, "prefix": "p",
            "conf": {"reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 50, "linger.ms": 20}}),
    );
    let out = kc::run("confluent_produce.py", &settings);
    assert_eq!(out["delivered"].as_array().unwrap().len(), 100_000);
    let cuts = relay.cuts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        cuts >= 3,
        "only {cuts} cuts happened while producing; produce more"
    );
    // Every value exactly once, in the order it was sent within its partition.
    let client = pki.client(&n.address);
    assert_each_value_once(&client, "payments", 2, 100_000, "p-").await;
}

/// Two clusters with Kafka listeners; west mirrors `orders` from east (prefix naming) and
/// carries the group `billing`. Kafka clients on both sides: a Kafka group reads part of the
/// topic on east and commits; a Kafka consumer reads the mirror on west at the same offsets;
/// a Kafka producer is refused on the mirror; after `strait group failover`, the Kafka group
/// resumes on west exactly where it committed on east.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_read_a_mirror_at_identical_offsets_and_fail_over_with_their_group() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east_kafka = format!("127.0.0.1:{}", free_tcp_port());
    let west_kafka = format!("127.0.0.1:{}", free_tcp_port());
    let east_admin = format!("127.0.0.1:{}", free_tcp_port());
    let west_admin = format!("127.0.0.1:{}", free_tcp_port());
    let mut east = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("east"),
        &format!("admin_listen = \"{east_admin}\"\n[kafka]\nlisten = \"{east_kafka}\"\n"),
    );
    create(&pki, &east, "orders", 3).await;
    let west = NodeProcess::start(
        &pki,
        "west",
        &dir.path().join("west"),
        &format!(
            "admin_listen = \"{west_admin}\"\n[kafka]\nlisten = \"{west_kafka}\"\n\
             [[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\n\
             groups = \"billing\"\nrefresh_ms = 300\n",
            east.address
        ),
    );
    let app = tls(&pki, "app");
    kc::run(
        "confluent_produce.py",
        &with(
            &app,
            json!({"bootstrap": east_kafka, "topic": "orders", "partitions": 3, "count": 300, "prefix": "o"}),
        ),
    );
    // The Kafka group reads 120 records on east and commits.
    let first = kc::run(
        "confluent_consume.py",
        &with(
            &app,
            json!({"bootstrap": east_kafka, "topic": "orders", "group": "billing", "max": 120}),
        ),
    );
    let first = first["records"].as_array().unwrap().clone();
    assert_eq!(first.len(), 120);

    // A Kafka consumer on west reads the mirror: the same offsets, keys and values as east.
    let on = |bootstrap: &str, topic: &str| {
        let out = kc::run(
            "confluent_consume.py",
            &with(
                &app,
                json!({"bootstrap": bootstrap, "topic": topic, "idle_s": 2}),
            ),
        );
        let mut r = out["records"].as_array().unwrap().clone();
        r.sort_by_key(|r| (r[0].as_u64(), r[1].as_u64()));
        r
    };
    let source = on(&east_kafka, "orders");
    assert_eq!(source.len(), 300);
    let deadline = std::time::Instant::now() + kc::STEP;
    let mirror = loop {
        let m = on(&west_kafka, "east.orders");
        if m.len() >= 300 || std::time::Instant::now() > deadline {
            break m;
        }
    };
    assert_eq!(
        mirror, source,
        "the mirror holds the same records at the same offsets"
    );

    // Kafka producers may not write into a mirror: the nearest Kafka error.
    let refused = kc::run_failing(
        "confluent_produce.py",
        &with(
            &app,
            json!({"bootstrap": west_kafka, "topic": "east.orders", "partitions": 1, "count": 1, "prefix": "x",
                   "conf": {"message.timeout.ms": 5000}}),
        ),
    );
    assert!(refused.contains("Topic authorization failed"), "{refused}");

    // The checkpoint carries the group's commits to west; east is lost; the operator fails the
    // group over, and the Kafka group resumes on west where it stopped.
    let committed: std::collections::BTreeMap<u64, u64> = {
        let mut m = std::collections::BTreeMap::new();
        for r in &first {
            let (p, o) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
            let e = m.entry(p).or_insert(0);
            *e = (*e).max(o + 1);
        }
        m
    };
    let deadline = std::time::Instant::now() + kc::STEP;
    loop {
        let d = describe_group(&pki, &west.address, "billing");
        let on_west: std::collections::BTreeMap<u64, u64> = d["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["partition"].as_u64()?, p["committed_offset"].as_u64()?)))
            .collect();
        if committed.iter().all(|(p, o)| on_west.get(p) == Some(o)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint on west: {d}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    east.kill9();
    pki.client_tls("admin");
    let topology = dir.path().join("pair.toml");
    std::fs::write(
        &topology,
        format!(
            "name = \"pair\"\n[security]\ncerts_dir = \"{}\"\n\
             [[clusters]]\nname = \"east\"\nnodes = [{{ id = 1, address = \"{}\", admin = \"{east_admin}\" }}]\n\
             [[clusters]]\nname = \"west\"\nnodes = [{{ id = 1, address = \"{}\", admin = \"{west_admin}\" }}]\n\
             [[topics]]\nname = \"orders\"\npartitions = 3\norigins = [\"east\"]\n\
             [[flows]]\nsource = \"east\"\ntarget = \"west\"\ntopics = \"orders\"\ngroups = \"billing\"\n",
            pki.dir.path().display(),
            east.address,
            west.address,
        ),
    )
    .unwrap();
    strait_tests::strait(&[
        "group",
        "failover",
        "billing",
        "--topology",
        topology.to_str().unwrap(),
        "--to",
        "west",
    ]);
    let rest = kc::run(
        "confluent_consume.py",
        &with(
            &app,
            json!({"bootstrap": west_kafka, "topic": "east.orders", "group": "billing", "idle_s": 3}),
        ),
    );
    let mut resumed: Vec<(u64, u64)> = rest["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    resumed.sort();
    let mut want: Vec<(u64, u64)> = source
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .filter(|(p, o)| *o >= committed.get(p).copied().unwrap_or(0))
        .collect();
    want.sort();
    assert_eq!(
        resumed.len(),
        180,
        "exactly what the group had not read on east"
    );
    assert_eq!(resumed, want);
}

/// A Kafka client without a certificate, or with one from another CA, never gets in; one the
/// ACLs do not allow is refused per topic and per group, and each sees the reason in the
/// client's own words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_are_refused_without_a_certificate_with_another_ca_and_by_acls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let acls = "[security]\nauthorization = true\nsuperusers = [\"admin\"]\nacls = [\n\
        { principal = \"app\", operation = \"write\", resource = \"topic\", name = \"open\" },\n\
        { principal = \"app\", operation = \"read\", resource = \"topic\", name = \"open\" },\n\
        { principal = \"app\", operation = \"describe\", resource = \"topic\", name = \"secret\" },\n\
        { principal = \"app\", operation = \"group\", resource = \"group\", name = \"app.\", pattern = \"prefixed\" },\n]\n";
    let (n, kafka) = node(&pki, &dir.path().join("n"), acls);
    let admin = {
        let _ = pki.client_tls("admin");
        strait_protocol::client::Admin::new(strait_protocol::client::Client::new(
            strait_protocol::client::ClientOptions::new(
                vec![n.address.clone()],
                pki.client_tls("admin"),
            ),
        ))
    };
    for t in ["open", "secret"] {
        admin.create_topic(t, 1, Vec::new()).await.unwrap();
    }
    let produce = |security: Value, topic: &str| {
        with(
            &security,
            json!({"bootstrap": kafka, "topic": topic, "partitions": 1, "count": 3, "prefix": "v",
                   "conf": {"message.timeout.ms": 4000}}),
        )
    };
    // No client certificate: the TLS handshake is refused.
    let none = kc::run_failing(
        "confluent_produce.py",
        &produce(json!({"ca": pki.ca()}), "open"),
    );
    assert!(none.contains("alert certificate required"), "{none}");
    // A certificate from another CA: refused the same way.
    let other = Pki::new();
    let stranger = kc::run_failing(
        "confluent_produce.py",
        &produce(with(&tls(&other, "app"), json!({"ca": pki.ca()})), "open"),
    );
    // Both CAs share a name, so rustls finds the issuer and then fails its signature.
    assert!(
        stranger.contains("alert decrypt error") || stranger.contains("alert unknown ca"),
        "{stranger}"
    );
    // Allowed: writing and reading `open`.
    let app = tls(&pki, "app");
    kc::run("confluent_produce.py", &produce(app.clone(), "open"));
    // Refused by the ACLs: writing `secret`, reading it, and a group outside `app.*`.
    let write = kc::run_failing("confluent_produce.py", &produce(app.clone(), "secret"));
    assert!(write.contains("Topic authorization failed"), "{write}");
    let read = kc::run(
        "confluent_consume.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "secret", "idle_s": 2}),
        ),
    );
    assert!(
        read["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Topic authorization failed"),
        "{read}"
    );
    let group = kc::run(
        "confluent_consume.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "open", "group": "billing", "idle_s": 2}),
        ),
    );
    assert!(
        group["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Group authorization failed"),
        "{group}"
    );
    let allowed = kc::run(
        "confluent_consume.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "open", "group": "app.readers", "idle_s": 2}),
        ),
    );
    assert_eq!(allowed["records"].as_array().unwrap().len(), 3, "{allowed}");
}

/// confluent-kafka's AdminClient: create (with settings, refusing a bad setting, a replication
/// factor the cluster cannot have and an existing name), describe and alter settings, add
/// partitions, describe the cluster, list and describe groups, delete.
#[test]
fn the_kafka_admin_client_manages_topics_settings_and_sees_groups() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let app = tls(&pki, "app");
    // A group with a committed offset, so there is one to list and describe.
    kc::run(
        "kafka_python_roundtrip.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "seen", "group": "app.audit", "count": 3}),
        ),
    );
    let out = kc::run(
        "confluent_admin.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "ledger", "group": "app.audit"}),
        ),
    );
    assert_eq!(out["created"]["ledger"], "ok", "{out}");
    let bad = out["created"]["ledger-bad"].as_str().unwrap();
    assert!(
        bad.contains("INVALID_CONFIG") && bad.contains("no.such.setting"),
        "{bad}"
    );
    let rf3 = out["created"]["ledger-rf3"].as_str().unwrap();
    assert!(rf3.contains("INVALID_REPLICATION_FACTOR"), "{rf3}");
    assert!(
        out["again"]["ledger"]
            .as_str()
            .unwrap()
            .contains("TOPIC_ALREADY_EXISTS"),
        "{out}"
    );
    assert_eq!(out["configs"]["cleanup.policy"], "compact", "{out}");
    assert_eq!(out["configs"]["retention.ms"], "3600000", "{out}");
    assert_eq!(
        out["altered"].as_object().unwrap().values().next().unwrap(),
        "ok"
    );
    assert_eq!(out["retention_after"], "7200000");
    assert_eq!(out["partitions"]["ledger"], "ok");
    assert_eq!(out["partition_count"], 4);
    assert_eq!(out["cluster"]["id"], "east");
    assert_eq!(out["cluster"]["nodes"], json!([1]));
    assert_eq!(out["cluster"]["controller"], 1);
    assert!(
        out["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("app.audit")),
        "{out}"
    );
    assert_eq!(out["group"]["state"], "ConsumerGroupState.EMPTY", "{out}");
    assert_eq!(out["deleted"]["ledger"], "ok");
    assert!(!out["topics_after"]
        .as_array()
        .unwrap()
        .contains(&json!("ledger")));
}

/// offsets_for_times (ListOffsets by timestamp) finds the first record at or after a time, in
/// every partition; past the last record there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_seeks_by_timestamp() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (n, kafka) = node(&pki, &dir.path().join("n"), "");
    create(&pki, &n, "events", 2).await;
    let app = tls(&pki, "app");
    let base: i64 = 1_700_000_000_000;
    kc::run(
        "confluent_produce.py",
        &with(
            &app,
            json!({"bootstrap": kafka, "topic": "events", "partitions": 2, "count": 1000,
                   "prefix": "e", "timestamp_ms": base}),
        ),
    );
    // Record i has timestamp base + i and sits in partition i % 2 at offset i / 2.
    let seek = |ts: i64| {
        kc::run(
            "confluent_seek.py",
            &with(
                &app,
                json!({"bootstrap": kafka, "topic": "events", "partitions": 2, "timestamp_ms": ts}),
            ),
        )
    };
    let out = seek(base + 501);
    assert_eq!(out["offsets"], json!({"0": 251, "1": 250}), "{out}");
    assert_eq!(out["first"]["0"], json!([251, "e-502", base + 502]));
    assert_eq!(out["first"]["1"], json!([250, "e-501", base + 501]));
    let past = seek(base + 5_000);
    assert_eq!(past["offsets"], json!({"0": -1, "1": -1}), "{past}");
}

/// Tombstones and overwritten values produced by a Kafka client are compacted away; the
/// latest value of every key stays at its original offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_tombstones_and_overwrites_are_compacted() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (n, kafka) = node(
        &pki,
        &dir.path().join("n"),
        "[limits]\nretention_check_interval_ms = 100\n",
    );
    strait_protocol::client::Admin::new(pki.client(&n.address))
        .create_topic(
            "accounts",
            1,
            vec![
                ("cleanup.policy".into(), "compact".into()),
                ("segment.ms".into(), "200".into()),
                ("delete.retention.ms".into(), "0".into()),
            ],
        )
        .await
        .unwrap();
    let app = tls(&pki, "app");
    let produce = |records: Value| {
        kc::run(
            "confluent_keyed.py",
            &with(
                &app,
                json!({"bootstrap": kafka, "topic": "accounts", "records": records}),
            ),
        )
    };
    for round in 0..3 {
        let records: Vec<Value> = (0..5)
            .map(|k| json!([format!("k{k}"), format!("r{round}")]))
            .collect();
        produce(Value::from(records));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    produce(json!([["k0", null]]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A last record rolls the segment holding the tombstone, so the cleaner may take it.
    produce(json!([["k9", "last"]]));
    let deadline = std::time::Instant::now() + kc::STEP;
    let seen = loop {
        let out = kc::run(
            "confluent_consume.py",
            &with(
                &app,
                json!({"bootstrap": kafka, "topic": "accounts", "idle_s": 1}),
            ),
        );
        let records = out["records"].as_array().unwrap().clone();
        if records.len() == 5 || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    // k1..k4 at their round-2 offsets (10 + k), then k9; k0 and its tombstone are gone.
    let want: Vec<Value> = (1..5)
        .map(|k| json!([0, 10 + k, format!("k{k}"), "r2"]))
        .chain([json!([0, 16, "k9", "last"])])
        .collect();
    assert_eq!(seen, want);
}

/// A transactional Kafka producer fails at once, saying transactions are not supported (not
/// after retrying until its timeout); an idempotent one is the way.
#[test]
fn a_transactional_kafka_producer_fails_at_once_with_the_reason() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let started = std::time::Instant::now();
    let out = kc::run(
        "confluent_transactions.py",
        &with(&tls(&pki, "app"), json!({"bootstrap": kafka})),
    );
    let error = out["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Kafka transactions are not supported by Strait"),
        "{out}"
    );
    assert_eq!(out["fatal"], true);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "it waited for its timeout"
    );
}

/// The Kafka listener follows the node's CRL and its reloads: a client certificate revoked
/// while the node runs is refused on its next connection; another client still gets in.
#[test]
fn a_revoked_certificate_is_refused_on_the_kafka_listener_after_a_reload() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    strait_certs::write_crl(pki.dir.path(), 7).unwrap();
    let extra = format!(
        "[security]\ncrl = \"{}\"\ncert_reload_interval_ms = 200\n",
        pki.path("ca.crl").display()
    );
    let (_n, kafka) = node(&pki, &dir.path().join("n"), &extra);
    let produce = |who: &str| {
        with(
            &tls(&pki, who),
            json!({"bootstrap": kafka, "topic": "t", "partitions": 1, "count": 2, "prefix": who,
                   "conf": {"message.timeout.ms": 4000}}),
        )
    };
    kc::run("confluent_produce.py", &produce("app"));
    kc::run("confluent_produce.py", &produce("other"));
    strait_certs::revoke(pki.dir.path(), "app", None, 7).unwrap();
    // The listener notices the new CRL within its reload interval.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let refused = kc::run_failing("confluent_produce.py", &produce("app"));
    assert!(refused.contains("certificate revoked"), "{refused}");
    kc::run("confluent_produce.py", &produce("other"));
}
