//! A mirror flow across a broken WAN, through the UDP impairment proxy: 50 ms RTT with jitter,
//! loss, reordering and duplication, then a full partition that heals. The target must end
//! with every source record exactly once, at the source's offsets.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_protocol::client::{Admin, Client, Producer, ProducerConfig};
use strait_tests::impair::{Impairment, UdpProxy};
use strait_tests::{http_get, read_partition, strait, NodeProcess, Pki};

const PARTITIONS: u32 = 4;

async fn produce(client: &Arc<Client>, tag: &str, n: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let pad = "x".repeat(500);
    for i in 0..n {
        let v = format!("{tag}-{i}-{pad}");
        producer
            .send("orders", None, Some(v.as_bytes()), Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
}

/// Waits until every partition of the mirror equals the source's, record for record.
async fn wait_identical(source: &Arc<Client>, target: &Arc<Client>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if Admin::new(target.clone())
            .describe_topic("east.orders")
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the flow never created the mirror topic"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue; // the flow has not created the mirror yet
        }
        let mut same = true;
        for p in 0..PARTITIONS {
            let (s, t) = (
                read_partition(source, "orders", p).await,
                read_partition(target, "east.orders", p).await,
            );
            assert!(
                t.len() <= s.len(),
                "partition {p}: the mirror holds more than the source"
            );
            assert_eq!(
                &s[..t.len()],
                &t[..],
                "partition {p}: the mirror diverges from the source"
            );
            same &= s.len() == t.len();
        }
        if same {
            return;
        }
        assert!(Instant::now() < deadline, "the mirror never caught up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_over_a_lossy_wan_and_through_a_partition_copies_everything_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), "");
    let proxy = UdpProxy::start(east.address.parse().unwrap()).await;
    proxy.set(
        None,
        Impairment {
            delay: Duration::from_millis(25),
            jitter: Duration::from_millis(5),
            loss: 0.01,
            reorder: 0.01,
            duplicate: 0.005,
            rate_bytes_per_s: None,
        },
    );
    let admin = format!("127.0.0.1:{}", strait_tests::free_tcp_port());
    let west_config = format!(
        "admin_listen = \"{admin}\"\n[[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\nrefresh_ms = 300\n",
        proxy.address
    );
    let _west = NodeProcess::start(&pki, "west", &dir.path().join("west"), &west_config);
    let source = pki.client(&east.address);
    let flush = vec![("flush".to_string(), "always".to_string())];
    Admin::new(source.clone())
        .create_topic("orders", PARTITIONS, flush)
        .await
        .unwrap();
    let target = pki.client(&_west.address);

    let started = Instant::now();
    produce(&source, "a", 3000).await;
    wait_identical(&source, &target, Duration::from_secs(120)).await;
    let impaired = started.elapsed();

    // A full partition while the source keeps taking writes, then the link heals.
    proxy.partition(true);
    let cut = Instant::now();
    produce(&source, "b", 2000).await;
    // The flow shows the partition: disconnected in `mirror status` and in /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&strait(&["mirror", "status", "--admin", &admin, "--json"]))
                .unwrap();
        let metrics = http_get(&admin, "/metrics");
        if status["flows"][0]["connected"] == false
            && metrics.contains("strait_mirror_connected{flow=\"east-to-west\",source_cluster=\"east\",target_cluster=\"west\"} 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partition never showed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let noticed = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed())).await;
    let (_, dropped) = proxy.counts();
    proxy.partition(false);
    let healed = Instant::now();
    wait_identical(&source, &target, Duration::from_secs(120)).await;
    let caught_up = healed.elapsed();
    let (forwarded, dropped_total) = proxy.counts();
    assert!(
        dropped > 0 && dropped_total >= dropped,
        "the partition dropped traffic"
    );
    println!(
        "wan: 3000 records over 50 ms RTT / 1 % loss in {impaired:?}; partition shown as disconnected after {noticed:?}; \
         caught up {caught_up:?} after it healed; \
         {forwarded} datagrams forwarded, {dropped_total} dropped; 5000 records copied exactly once"
    );
}
