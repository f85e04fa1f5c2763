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

/// Writes unique, sequenced values with acks = all until stopped, recording acknowledgements.
async fn checked_writer(
    client: Arc<Client>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    history: Arc<std::sync::Mutex<strait_tests::checker::History>>,
) {
    use strait_tests::checker::History;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: strait_protocol::Acks::All,
            linger_ms: 5,
            ..ProducerConfig::default()
        },
    );
    // Each delivery records its own acknowledgement the moment it arrives.
    let mut window: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        while window.len() >= 256 {
            window.join_next().await;
        }
        let value = History::value(0, seq);
        seq += 1;
        history.lock().unwrap().attempt(&value);
        let partition = (seq % u64::from(PARTITIONS)) as u32;
        if let Ok(d) = producer
            .send("orders", Some(partition), None, Some(value.as_bytes()), &[])
            .await
        {
            let history = history.clone();
            window.spawn(async move {
                if let Ok(offset) = d.wait().await {
                    history.lock().unwrap().ack(&value, partition, Some(offset));
                }
            });
        }
        // A steady stream, not a flood: about 2000 records a second.
        if seq.is_multiple_of(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    producer.flush().await;
    while window.join_next().await.is_some() {}
}

/// Every WAN scenario of the fault plan in one run, under steady acks = all load: 50 ms and
/// 150 ms RTT with 1 % and 5 % loss, heavy reordering, a full partition (8 s here, 60 s with
/// `STRAIT_FAULT_SECONDS` ≥ 600) during which the flow shows as disconnected with a growing
/// silence, and a link flapping every two seconds. The checker's table must be clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wan_scenario_leaves_the_checker_clean() {
    use strait_tests::checker::{check, divergence, History};
    let long = std::env::var("STRAIT_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s >= 600);
    let phase = Duration::from_secs(if long { 300 } else { 4 });
    let cut_for = Duration::from_secs(if long { 60 } else { 8 });
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = "[topic_defaults]\nflush = \"always\"\n";
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), config);
    let proxy = UdpProxy::start(east.address.parse().unwrap()).await;
    let admin = format!("127.0.0.1:{}", strait_tests::free_tcp_port());
    let west_config = format!(
        "admin_listen = \"{admin}\"\n[[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\nrefresh_ms = 300\n",
        proxy.address
    );
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), &west_config);
    let source = pki.client(&east.address);
    Admin::new(source.clone())
        .create_topic("orders", PARTITIONS, vec![])
        .await
        .unwrap();
    let history = Arc::new(std::sync::Mutex::new(History::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(checked_writer(
        source.clone(),
        stop.clone(),
        history.clone(),
    ));

    let link = |rtt_ms: u64, loss: f64, reorder: f64| Impairment {
        delay: Duration::from_millis(rtt_ms / 2),
        jitter: Duration::from_millis(rtt_ms / 10),
        loss,
        reorder,
        duplicate: 0.005,
        rate_bytes_per_s: None,
    };
    for (name, imp) in [
        ("50 ms RTT, 1 % loss", link(50, 0.01, 0.0)),
        ("150 ms RTT, 1 % loss", link(150, 0.01, 0.0)),
        ("150 ms RTT, 5 % loss", link(150, 0.05, 0.0)),
        ("50 ms RTT, 20 % reordered", link(50, 0.0, 0.2)),
    ] {
        proxy.set(None, imp);
        tokio::time::sleep(phase).await;
        println!("wan scenario done: {name}");
    }
    proxy.set(None, link(50, 0.0, 0.0));

    // A full partition: disconnected, with a growing silence, in status and metrics.
    proxy.partition(true);
    let cut = Instant::now();
    let mut silences = Vec::new();
    while cut.elapsed() < cut_for {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status: serde_json::Value =
            serde_json::from_str(&strait(&["mirror", "status", "--admin", &admin, "--json"]))
                .unwrap();
        let flow = &status["flows"][0];
        if flow["connected"] == false {
            silences.push(flow["source_silent_seconds"].as_f64().unwrap());
        }
    }
    let metrics = http_get(&admin, "/metrics");
    assert!(metrics.contains("strait_mirror_connected{flow=\"east-to-west\",source_cluster=\"east\",target_cluster=\"west\"} 0"), "{metrics}");
    assert!(
        metrics.contains("strait_mirror_source_silent_seconds{flow=\"east-to-west\""),
        "{metrics}"
    );
    assert!(
        silences.len() >= 2 && silences.windows(2).all(|w| w[1] > w[0]),
        "the silence grows while partitioned: {silences:?}"
    );
    proxy.partition(false);
    println!("wan scenario done: {cut_for:?} partition (silence seen growing: {silences:?})");

    // A flapping link: two seconds up, two seconds down.
    for i in 0..(phase.as_secs() / 2).max(4) {
        proxy.partition(i % 2 == 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    proxy.partition(false);
    println!("wan scenario done: flapping every 2 s");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let target = pki.client(&west.address);
    wait_identical(&source, &target, Duration::from_secs(180)).await;
    let history = history.lock().unwrap().clone();
    let first = strait_tests::read_history(&source, "orders", PARTITIONS).await;
    let again = strait_tests::read_history(&pki.client(&east.address), "orders", PARTITIONS).await;
    let mirrored = strait_tests::read_history(&target, "east.orders", PARTITIONS).await;
    let mut report = check(&history, &first, &again);
    report.mirror_divergence = divergence(&first, &mirrored);
    report.duplicates += check(&history, &mirrored, &mirrored).duplicates;
    println!("{report}");
    assert!(report.acknowledged > 1000, "{report:?}");
    assert!(report.clean(), "{report}");
}

/// The sum of a topic's partition ends.
async fn end_offsets(client: &Arc<Client>, topic: &str, partitions: u32) -> u64 {
    let admin = Admin::new(client.clone());
    let mut sum = 0;
    for p in 0..partitions {
        sum += admin
            .list_offset(topic, p, strait_protocol::OffsetSpec::Latest)
            .await
            .map_or(0, |(o, _)| o);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_over_a_link_too_slow_for_one_fetch_per_timeout_makes_steady_progress() {
    // 100 KB/s: one default 4 MiB fetch would need 42 s, past the 30 s request timeout, so a
    // copier that waits for whole answers shows nothing for most of a minute (or never gets
    // anywhere). Batches must land as they arrive.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), "");
    let proxy = UdpProxy::start(east.address.parse().unwrap()).await;
    proxy.set(
        None,
        Impairment {
            delay: Duration::from_millis(25),
            rate_bytes_per_s: Some(100_000),
            ..Impairment::default()
        },
    );
    let west_config = format!(
        "[[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\nrefresh_ms = 300\nheartbeat_interval_ms = 0\n",
        proxy.address
    );
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), &west_config);
    let source = pki.client(&east.address);
    Admin::new(source.clone())
        .create_topic("orders", 1, vec![])
        .await
        .unwrap();
    let producer = Producer::new(
        source.clone(),
        ProducerConfig {
            batch_bytes: 16 << 10,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b's'; 1000];
    for _ in 0..6000 {
        producer
            .send("orders", Some(0), None, Some(&value), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    let target = pki.client(&west.address);
    let deadline = Instant::now() + Duration::from_secs(60);
    while end_offsets(&target, "east.orders", 1).await == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing arrived over the slow link"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // From then on, the lag shrinks every two seconds.
    let mut seen = vec![end_offsets(&target, "east.orders", 1).await];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        seen.push(end_offsets(&target, "east.orders", 1).await);
    }
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "the mirror's end every 2 s: {seen:?}"
    );
    assert!(
        *seen.last().unwrap() < 6000,
        "the link was meant to be too slow to finish in the test: {seen:?}"
    );
    println!("over 100 KB/s, the mirror's end every 2 s: {seen:?}");
}
