//! What operators see: `/metrics` of a gateway with an active flow carries the flow's lag and
//! latency series with sensible values, and `/ready` turns ready only after recovery.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_protocol::client::{Admin, Producer, ProducerConfig};
use strait_tests::{
    free_tcp_port, free_udp_port, http_body, http_get, strait_bin, NodeProcess, Pki,
};

/// `name{labels} value` lines of a scrape whose name is `name` and whose labels include all of
/// `with`, as (labels text, value).
fn series(scrape: &str, name: &str, with: &[&str]) -> Vec<(String, f64)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (n, labels) = head.split_once('{').unwrap_or((head, ""));
            if n != name || !with.iter().all(|w| labels.contains(w)) {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_flows_lag_and_latency() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east_admin = format!("127.0.0.1:{}", free_tcp_port());
    let east = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("east"),
        &format!("admin_listen = \"{east_admin}\"\n"),
    );
    let west_admin = format!("127.0.0.1:{}", free_tcp_port());
    let west_config = format!(
        "admin_listen = \"{west_admin}\"\n[[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\nrefresh_ms = 300\n",
        east.address
    );
    let _west = NodeProcess::start(&pki, "west", &dir.path().join("west"), &west_config);
    let client = pki.client(&east.address);
    Admin::new(client.clone())
        .create_topic("orders", 2, vec![])
        .await
        .unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    for i in 0..1000 {
        let v = format!("v{i}");
        producer
            .send("orders", None, Some(v.as_bytes()), Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;

    // Wait until the flow has copied everything and measured a heartbeat.
    let flow = "flow=\"east-to-west\"";
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let answer = http_get(&west_admin, "/metrics");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let scrape = http_body(&answer).to_string();
        let copied: f64 = series(
            &scrape,
            "strait_mirror_records_copied_total",
            &[flow, "topic=\"orders\""],
        )
        .iter()
        .map(|s| s.1)
        .sum();
        let heartbeat = series(&scrape, "strait_mirror_heartbeat_latency_seconds", &[flow]);
        if copied == 1000.0 && !heartbeat.is_empty() {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the flow never showed its progress: {scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lag = series(
        &scrape,
        "strait_mirror_lag_records",
        &[flow, "topic=\"orders\""],
    );
    assert_eq!(lag.len(), 2, "one lag series per partition: {lag:?}");
    assert!(lag.iter().all(|(_, v)| *v == 0.0), "caught up: {lag:?}");
    for name in [
        "strait_mirror_lag_bytes",
        "strait_mirror_lag_seconds",
        "strait_mirror_gaps_total",
    ] {
        assert_eq!(
            series(&scrape, name, &[flow, "topic=\"orders\""]).len(),
            2,
            "{name}"
        );
    }
    let latency = series(&scrape, "strait_mirror_heartbeat_latency_seconds", &[flow])[0].1;
    assert!((0.0..5.0).contains(&latency), "heartbeat latency {latency}");
    let replication = series(
        &scrape,
        "strait_mirror_replication_latency_seconds",
        &[flow, "topic=\"orders\""],
    );
    assert!(
        replication.iter().all(|(_, v)| (0.0..30.0).contains(v)),
        "{replication:?}"
    );
    assert_eq!(
        series(&scrape, "strait_mirror_connected", &[flow])[0].1,
        1.0
    );
    assert_eq!(
        series(&scrape, "strait_ready", &["cluster=\"west\""])[0].1,
        1.0
    );
    let appends = series(
        &scrape,
        "strait_request_duration_seconds_count",
        &["request=\"mirror_append\""],
    );
    assert!(appends[0].1 > 0.0, "gateway appends are timed: {appends:?}");
    let expiry = series(
        &scrape,
        "strait_certificate_expiry_seconds",
        &["certificate=\"node\""],
    );
    assert!(expiry[0].1 > 86_400.0, "{expiry:?}");

    // The source counts what producers wrote and what the flow fetched, per topic.
    let source = http_body(&http_get(&east_admin, "/metrics")).to_string();
    assert_eq!(
        series(
            &source,
            "strait_produce_records_total",
            &["topic=\"orders\""]
        )[0]
        .1,
        1000.0
    );
    assert!(series(&source, "strait_fetch_records_total", &["topic=\"orders\""])[0].1 >= 1000.0);
    let rtt = series(&source, "strait_quic_rtt_seconds", &[]);
    assert!(
        !rtt.is_empty() && rtt.iter().all(|(_, v)| *v > 0.0 && *v < 1.0),
        "{rtt:?}"
    );
    let ends: BTreeMap<String, f64> = series(
        &source,
        "strait_partition_end_offset",
        &["topic=\"orders\""],
    )
    .into_iter()
    .collect();
    assert_eq!(ends.values().sum::<f64>(), 1000.0);
}

#[test]
fn ready_turns_ready_only_after_recovery() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let mut node = Command::new(strait_bin())
        .args([
            "node",
            "run",
            "--cluster",
            "east",
            "--node-id",
            "1",
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(pki.path("node-1.crt"))
        .arg("--key")
        .arg(pki.path("node-1.key"))
        .env("STRAIT_TEST_RECOVERY_DELAY_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&admin, "/health").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "/health never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let early = http_get(&admin, "/ready");
    assert!(
        early.starts_with("HTTP/1.1 503") && early.contains("recovering"),
        "{early}"
    );
    assert!(http_get(&admin, "/status").starts_with("HTTP/1.1 503"));
    while !http_get(&admin, "/ready").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "/ready never turned ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = http_get(&admin, "/status");
    let v: serde_json::Value = serde_json::from_str(http_body(&status)).unwrap();
    assert_eq!(v["ready"], true);
    let _ = node.kill();
    let _ = node.wait();
}

/// The benchmarks run end to end with tiny sizes (a smoke test: figures are printed, not
/// asserted beyond being measured).
#[test]
fn bench_baseline_and_produce_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let baseline: serde_json::Value = serde_json::from_str(&strait_tests::strait(&[
        "bench", "baseline", "--mib", "4", "--dir", d, "--json",
    ]))
    .unwrap();
    for key in [
        "raw_disk_write_mb_s",
        "raw_disk_write_fdatasync_256k_mb_s",
        "raw_quic_stream_mb_s",
        "raw_quic_round_trip_p50_us",
    ] {
        assert!(
            baseline[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {baseline}"
        );
    }
    let produce: serde_json::Value = serde_json::from_str(&strait_tests::strait(&[
        "bench",
        "produce",
        "--records",
        "2000",
        "--round-trips",
        "50",
        "--dir",
        d,
        "--json",
    ]))
    .unwrap();
    for key in [
        "produce_mb_s",
        "produce_ratio_to_lower_raw",
        "produce_latency_p50_us",
        "produce_latency_p999_us",
        "raw_quic_stream_mb_s",
    ] {
        assert!(
            produce[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {produce}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "benchmarks clean up after themselves"
    );
}
