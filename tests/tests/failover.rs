//! Failover between two clusters with real processes: a consumer group that loses its cluster
//! to `kill -9` continues on the replica without losing a mirrored record; promote reports the
//! recovery point that was really missing; the operator's `group failover` applies the same
//! offsets as the automatic path.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use strait_protocol::client::{
    Admin, Client, ClientError, ClusterEndpoint, ConsumerConfig, FailoverConfig, FailoverConsumer,
    FailoverProducer, GroupConfig, Producer, ProducerConfig, Side,
};
use strait_protocol::OffsetSpec;
use strait_tests::{
    free_tcp_port, free_udp_port, read_partition, strait, strait_bin, NodeProcess, Pki,
};

const PARTITIONS: u32 = 4;

/// East (the primary) and west (the replica, gateway of the flow `east-to-west`).
struct Pair {
    pki: Pki,
    dir: tempfile::TempDir,
    east: NodeProcess,
    east_port: u16,
    east_admin: String,
    west: NodeProcess,
    west_admin: String,
}

impl Pair {
    async fn start(flow_extra: &str) -> Pair {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let east_port = free_udp_port();
        let east_admin = format!("127.0.0.1:{}", free_tcp_port());
        let east = NodeProcess::start_on(
            &pki,
            "east",
            &dir.path().join("east"),
            &format!("admin_listen = \"{east_admin}\"\n"),
            east_port,
        );
        let admin_port = free_tcp_port();
        let west_config = format!(
            "admin_listen = \"127.0.0.1:{admin_port}\"\n[[flows]]\nname = \"east-to-west\"\n\
             source_bootstrap = [\"{}\"]\ntopics = \"orders\"\ngroups = \"billing\"\nrefresh_ms = 300\n{flow_extra}",
            east.address
        );
        let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), &west_config);
        let admin = Admin::new(pki.client(&east.address));
        let flush = vec![("flush".to_string(), "always".to_string())];
        admin
            .create_topic("orders", PARTITIONS, flush)
            .await
            .unwrap();
        Pair {
            pki,
            dir,
            east,
            east_port,
            east_admin,
            west,
            west_admin: format!("127.0.0.1:{admin_port}"),
        }
    }

    fn restart_east(&mut self) {
        let config = format!("admin_listen = \"{}\"\n", self.east_admin);
        let dir = self.dir.path().join("east");
        self.east = NodeProcess::start_on(&self.pki, "east", &dir, &config, self.east_port);
    }

    fn endpoint(name: &str, node: &NodeProcess) -> ClusterEndpoint {
        ClusterEndpoint {
            name: name.into(),
            bootstrap: vec![node.address.clone()],
        }
    }

    fn failover_consumer(&self, group: GroupConfig) -> FailoverConsumer {
        FailoverConsumer::new(
            Pair::endpoint("east", &self.east),
            Pair::endpoint("west", &self.west),
            self.pki.client_tls("app"),
            &["orders"],
            group,
            ConsumerConfig::default(),
            FailoverConfig::default(),
        )
    }

    /// `strait mirror promote` of the flow on west's node, as the operator (`admin`, made on
    /// first use): promotion travels over QUIC with mutual TLS. Answers its output.
    fn promote(&self, extra: &[&str]) -> String {
        self.pki.client_tls("admin");
        let file = |f: &str| self.pki.path(f).display().to_string();
        let (ca, cert, key) = (file("ca.crt"), file("admin.crt"), file("admin.key"));
        let args = [
            "mirror",
            "promote",
            "--flow",
            "east-to-west",
            "--admin",
            &self.west_admin,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        strait(&[&args[..], extra].concat())
    }

    /// A topology file naming these two processes, for the operator's commands.
    fn topology(&self) -> std::path::PathBuf {
        self.pki.client_tls("admin");
        let file = self.dir.path().join("pair.toml");
        let text = format!(
            "name = \"pair\"\n[security]\ncerts_dir = \"{}\"\n\
             [[clusters]]\nname = \"east\"\nnodes = [{{ id = 1, address = \"{}\", admin = \"{}\" }}]\n\
             [[clusters]]\nname = \"west\"\nnodes = [{{ id = 1, address = \"{}\", admin = \"{}\" }}]\n\
             [[topics]]\nname = \"orders\"\npartitions = 4\norigins = [\"east\"]\n\
             [[flows]]\nsource = \"east\"\ntarget = \"west\"\ntopics = \"orders\"\ngroups = \"billing\"\n",
            self.pki.dir.path().display(),
            self.east.address,
            self.east_admin,
            self.west.address,
            self.west_admin
        );
        std::fs::write(&file, text).unwrap();
        file
    }
}

/// Ends per partition of a topic.
async fn ends(client: &Arc<Client>, topic: &str) -> Vec<u64> {
    let admin = Admin::new(client.clone());
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.push(
            admin
                .list_offset(topic, p, OffsetSpec::Latest)
                .await
                .unwrap()
                .0,
        );
    }
    out
}

async fn produce(client: &Arc<Client>, from: u64, n: u64, value_bytes: usize) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let pad = "x".repeat(value_bytes);
    for i in from..from + n {
        let (key, value) = (format!("k{i}"), format!("v-{i}-{pad}"));
        producer
            .send(
                "orders",
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

/// Writes `n` records to `topic`, each with key and value `{tag}-{i}`.
async fn produce_tagged(client: &Arc<Client>, topic: &str, tag: &str, n: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..n {
        let v = format!("{tag}-{i}");
        producer
            .send(topic, None, Some(v.as_bytes()), Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
}

/// Writes one record and waits for its acknowledgement (or the refusal).
async fn write_one(client: &Arc<Client>, topic: &str, value: &[u8]) -> Result<u64, ClientError> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(topic, None, None, Some(value), &[])
        .await?
        .wait()
        .await
}

/// One consumed record: the cluster it came from, where it was, and its value.
struct Consumed {
    cluster: String,
    partition: u32,
    offset: u64,
    value: Bytes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_fails_over_and_resumes_at_translated_offset() {
    let mut pair = Pair::start("").await;
    let east_client = pair.pki.client(&pair.east.address);

    // A steady producer on east until east dies.
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (client, stop) = (east_client.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("k{i}"), format!("v-{i}"));
                if producer
                    .send(
                        "orders",
                        None,
                        Some(key.as_bytes()),
                        Some(value.as_bytes()),
                        &[],
                    )
                    .await
                    .is_err()
                {
                    break;
                }
                i += 1;
                if i.is_multiple_of(500) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };

    let mut group = GroupConfig::new("billing");
    group.auto_commit_interval_ms = Some(200);
    let mut consumer = pair.failover_consumer(group);
    let mut consumed: Vec<Consumed> = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut first_on_replica: Option<Duration> = None;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let west_client = pair.pki.client(&pair.west.address);
    loop {
        assert!(
            Instant::now() < deadline,
            "never caught up on the replica ({} consumed)",
            consumed.len()
        );
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        let cluster = consumer.active_cluster().to_string();
        for r in records {
            if cluster == "west" && first_on_replica.is_none() {
                first_on_replica = killed_at.map(|k| k.elapsed());
            }
            consumed.push(Consumed {
                cluster: cluster.clone(),
                partition: r.partition,
                offset: r.offset,
                value: r.value.unwrap(),
            });
        }
        // Kill east mid-stream, once the group has committed on it a few times.
        let commits_seen = !consumer.consumer().committed().is_empty();
        if killed_at.is_none() && commits_seen && started.elapsed() > Duration::from_millis(1500) {
            pair.east.kill9();
            stop.store(true, Ordering::Relaxed);
            killed_at = Some(Instant::now());
        }
        if consumer.side() == Side::Replica {
            // East is gone: the replica's copy no longer grows. Done once it is all read.
            let end = ends(&west_client, "east.orders").await;
            let positions = consumer.consumer().positions().clone();
            let read_all = (0..PARTITIONS).all(|p| {
                positions
                    .get(&("east.orders".to_string(), p))
                    .is_some_and(|o| *o >= end[p as usize])
            });
            if read_all && first_on_replica.is_some() {
                break;
            }
        }
    }
    let _ = producing.await;

    // Lost: every record the replica holds (everything mirrored before the kill) was consumed.
    let mut count: HashMap<Bytes, u32> = HashMap::new();
    for c in &consumed {
        *count.entry(c.value.clone()).or_insert(0) += 1;
    }
    let mut mirrored = 0;
    for p in 0..PARTITIONS {
        for r in read_partition(&west_client, "east.orders", p).await {
            mirrored += 1;
            assert!(
                count.contains_key(&r.value.unwrap()),
                "a mirrored record of partition {p} at {} was never consumed",
                r.offset
            );
        }
    }
    // Duplicates: at most what was consumed on east after the group's last commit there.
    let switch = consumer.switches()[0].clone();
    let after_last_commit = consumed
        .iter()
        .filter(|c| c.cluster == "east")
        .filter(|c| {
            c.offset
                >= switch
                    .committed_before
                    .get(&("orders".to_string(), c.partition))
                    .copied()
                    .unwrap_or(0)
        })
        .count();
    let duplicates: u32 = count.values().map(|n| n - 1).sum();
    let took = first_on_replica.unwrap();
    println!(
        "failover: {} consumed on east, {} on west, {mirrored} mirrored, lost 0, duplicates {duplicates} \
         (bound: {after_last_commit} consumed after the last commit on east), kill → first record on west {took:?}",
        consumed.iter().filter(|c| c.cluster == "east").count(),
        consumed.iter().filter(|c| c.cluster == "west").count(),
    );
    assert!(
        duplicates as usize <= after_last_commit,
        "{duplicates} duplicates > {after_last_commit}"
    );
    assert!(
        consumed.iter().any(|c| c.cluster == "west"),
        "nothing consumed on the replica"
    );
    // Resumed exactly at the commits (clamped to what the replica holds), not earlier.
    let west_ends = ends(&west_client, "east.orders").await;
    for ((topic, p), at) in &switch.resumed_at {
        let committed = switch
            .committed_before
            .get(&("orders".to_string(), *p))
            .copied()
            .unwrap_or(0);
        assert_eq!(topic, "east.orders");
        assert_eq!(*at, committed.min(west_ends[*p as usize]), "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_reports_the_recovery_point_that_was_missing() {
    // 1 MB/s keeps the flow behind the source, so some records are at risk at the kill.
    let mut pair = Pair::start("max_mb_s = 1\nfetch_kb = 64\n").await;
    let east_client = pair.pki.client(&pair.east.address);
    const N: u64 = 20_000;
    produce(&east_client, 0, N, 1000).await;
    let east_ends = ends(&east_client, "orders").await;
    assert_eq!(east_ends.iter().sum::<u64>(), N);

    // Wait until the flow has seen the source's end on every partition, then kill the source.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = serde_json::from_str(&strait(&[
            "mirror",
            "status",
            "--admin",
            &pair.west_admin,
            "--json",
        ]))
        .unwrap();
        let known: u64 = s["flows"][0]["partitions"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter(|p| p["source_topic"] == "orders")
                .map(|p| p["source_end_offset"].as_u64().unwrap())
                .sum()
        });
        if known == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flow never saw the source end: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.east.kill9();

    let west_client = pair.pki.client(&pair.west.address);
    let before = write_one(&west_client, "east.orders", b"x").await;
    assert!(
        before.is_err(),
        "a mirror topic refuses writes before promotion"
    );

    let report: Value = serde_json::from_str(&pair.promote(&["--json"])).unwrap();
    let west_ends = ends(&west_client, "east.orders").await;
    let at_risk_total = report["records_at_risk"].as_u64().unwrap();
    assert!(
        at_risk_total > 0,
        "the capped flow was behind at the kill: {report}"
    );

    // Bring east back: what it holds beyond west is what was really missing.
    pair.restart_east();
    let east_client = pair.pki.client(&pair.east.address);
    let east_ends = ends(&east_client, "orders").await;
    let partitions = report["topics"][0]["partitions"].as_array().unwrap();
    assert_eq!(report["topics"][0]["topic"], "east.orders");
    for p in partitions {
        let i = p["partition"].as_u64().unwrap() as usize;
        assert_eq!(
            p["next_offset"].as_u64().unwrap(),
            west_ends[i],
            "partition {i}"
        );
        assert_eq!(
            p["source_end_offset"].as_u64().unwrap(),
            east_ends[i],
            "partition {i}"
        );
        assert_eq!(
            p["records_at_risk"].as_u64().unwrap(),
            east_ends[i] - west_ends[i],
            "partition {i}"
        );
    }
    println!("promote: {at_risk_total} records at risk, exactly what east held beyond west ({east_ends:?} vs {west_ends:?})");

    // Promoted: writable now, and the flow is gone.
    write_one(&west_client, "east.orders", b"after promote")
        .await
        .unwrap();
    let status: Value = serde_json::from_str(&strait(&[
        "mirror",
        "status",
        "--admin",
        &pair.west_admin,
        "--json",
    ]))
    .unwrap();
    assert_eq!(status["flows"].as_array().unwrap().len(), 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_failover_applies_the_same_offsets_as_the_automatic_path() {
    let mut pair = Pair::start("").await;
    let east_client = pair.pki.client(&pair.east.address);
    produce(&east_client, 0, 2000, 10).await;

    // The group reads part of the topic on east, commits, and leaves.
    let mut consumer =
        strait_protocol::client::Consumer::new(east_client.clone(), ConsumerConfig::default());
    let mut group = GroupConfig::new("billing");
    group.auto_commit_interval_ms = None;
    consumer.subscribe(&["orders"], group.clone());
    let mut read = 0;
    while read < 1200 {
        read += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    consumer.commit().await.unwrap();
    let committed: BTreeMap<(String, u32), u64> = consumer.committed().clone();
    consumer.close().await.unwrap();

    // Wait for the checkpoint to carry the commit to west, then lose east.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(strait_bin())
            .args([
                "group",
                "describe",
                "billing",
                "--json",
                "--bootstrap",
                &pair.west.address,
            ])
            .arg("--ca")
            .arg(pair.pki.ca())
            .arg("--cert")
            .arg(pair.pki.path("app.crt"))
            .arg("--key")
            .arg(pair.pki.path("app.key"))
            .output()
            .unwrap();
        // The group does not exist on west until the first checkpoint.
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let on_west: BTreeMap<(String, u32), u64> = v["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| {
                Some((
                    (
                        o["topic"].as_str()?.trim_start_matches("east.").to_string(),
                        o["partition"].as_u64()? as u32,
                    ),
                    o["committed_offset"].as_u64()?,
                ))
            })
            .collect();
        if committed.iter().all(|(k, v)| on_west.get(k) == Some(v)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint never reached west: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pair.east.kill9();

    // The operator's path.
    let file = pair.topology();
    let out: Value = serde_json::from_str(&strait(&[
        "group",
        "failover",
        "billing",
        "--topology",
        file.to_str().unwrap(),
        "--to",
        "west",
        "--json",
    ]))
    .unwrap();
    let operator: BTreeMap<(String, u32), u64> = out["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                (
                    o["topic"].as_str().unwrap().to_string(),
                    o["partition"].as_u64().unwrap() as u32,
                ),
                o["offset"].as_u64().unwrap(),
            )
        })
        .collect();

    // The automatic path, for the same group, from a consumer that starts with east gone.
    let mut automatic = pair.failover_consumer(group);
    let deadline = Instant::now() + Duration::from_secs(20);
    while automatic.side() != Side::Replica {
        assert!(
            Instant::now() < deadline,
            "the automatic path never failed over"
        );
        automatic.poll(Duration::from_millis(100)).await.unwrap();
    }
    let resumed = automatic.switches()[0].resumed_at.clone();
    assert_eq!(
        operator, resumed,
        "operator and automatic failover apply the same offsets"
    );
    let expected: BTreeMap<(String, u32), u64> = committed
        .iter()
        .map(|((t, p), o)| ((format!("east.{t}"), *p), *o))
        .collect();
    assert_eq!(
        operator, expected,
        "both equal the group's last commit on east, translated"
    );
}

/// Every (offset, value) of a partition.
async fn records(client: &Arc<Client>, topic: &str, p: u32) -> Vec<(u64, Bytes)> {
    read_partition(client, topic, p)
        .await
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_quarantines_the_divergent_tail_and_remirrors_only_the_difference() {
    let mut pair = Pair::start("max_mb_s = 1\nfetch_kb = 64\n").await;
    let east_client = pair.pki.client(&pair.east.address);
    produce(&east_client, 0, 8000, 1000).await;
    // Let the capped flow copy part of it, then lose east with a tail west never got.
    let west_client = pair.pki.client(&pair.west.address);
    let deadline = Instant::now() + Duration::from_secs(30);
    while strait_tests::end_offsets(&west_client, "east.orders", PARTITIONS)
        .await
        .iter()
        .sum::<u64>()
        == 0
    {
        assert!(Instant::now() < deadline, "the flow never copied anything");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(west_client);
    pair.east.kill9();
    let promoted: Value = serde_json::from_str(&pair.promote(&["--json"])).unwrap();
    let west_client = pair.pki.client(&pair.west.address);
    let common = ends(&west_client, "east.orders").await;

    // West takes writes while east is away.
    produce_tagged(&west_client, "east.orders", "west", 400).await;

    // East returns with its tail; reverse the roles.
    pair.restart_east();
    let east_client = pair.pki.client(&pair.east.address);
    let mut tails = Vec::new();
    for p in 0..PARTITIONS {
        let all = records(&east_client, "orders", p).await;
        tails.push(
            all.into_iter()
                .filter(|(o, _)| *o >= common[p as usize])
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        tails.iter().any(|t| !t.is_empty()),
        "east has a divergent tail"
    );
    let file = pair.topology();
    let out: Value = serde_json::from_str(&strait(&[
        "mirror",
        "reverse",
        "--flow",
        "east-to-west",
        "--topology",
        file.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();

    // The report names exactly the divergent offsets, and quarantine holds exactly them.
    let diverged = out["topics"][0]["diverged"].as_array().unwrap();
    for p in 0..PARTITIONS {
        let tail = &tails[p as usize];
        let d = diverged.iter().find(|d| d["partition"] == p);
        match d {
            None => assert!(tail.is_empty(), "partition {p}: an unreported tail"),
            Some(d) => {
                assert_eq!(
                    d["from"].as_u64().unwrap(),
                    common[p as usize],
                    "partition {p}"
                );
                assert_eq!(
                    d["to"].as_u64().unwrap(),
                    tail.last().unwrap().0 + 1,
                    "partition {p}"
                );
                assert_eq!(
                    d["records"].as_u64().unwrap(),
                    tail.len() as u64,
                    "partition {p}"
                );
                assert_eq!(
                    &records(&east_client, "orders.diverged", p).await,
                    tail,
                    "partition {p}: quarantine"
                );
            }
        }
    }

    // East now mirrors west record for record, and refuses local writes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut same = true;
        for p in 0..PARTITIONS {
            same &= records(&east_client, "orders", p).await
                == records(&west_client, "east.orders", p).await;
        }
        if same {
            break;
        }
        assert!(Instant::now() < deadline, "east never matched west");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let write = write_one(&east_client, "orders", b"x").await;
    assert!(write.is_err(), "east's orders is a mirror now");
    // The topology file still declares east → west: planning it names the failback it would
    // undo, and applying it is refused unless asked for on purpose.
    let plan = std::process::Command::new(strait_tests::strait_bin())
        .args(["topology", "plan", file.to_str().unwrap()])
        .output()
        .unwrap();
    let warned = String::from_utf8_lossy(&plan.stderr);
    assert!(
        plan.status.success()
            && warned.contains("east-to-west-reverse")
            && warned.contains("undoing the failback"),
        "{warned}"
    );
    let refused = strait_tests::strait_fails(&["topology", "apply", file.to_str().unwrap()]);
    assert!(
        refused.contains("nothing applied") && refused.contains("--undo-reverse"),
        "{refused}"
    );
    let quarantined: usize = tails.iter().map(Vec::len).sum();
    println!(
        "failback: {quarantined} divergent records quarantined, {} records at risk reported by promote, east matches west",
        promoted["records_at_risk"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_writes_to_the_promoted_topic_after_failover() {
    let mut pair = Pair::start("").await;
    let mut producer = FailoverProducer::new(
        Pair::endpoint("east", &pair.east),
        Pair::endpoint("west", &pair.west),
        pair.pki.client_tls("app"),
        ProducerConfig::default(),
        FailoverConfig::default(),
    );
    for i in 0..100 {
        let v = format!("before-{i}");
        producer
            .send("orders", None, Some(v.as_bytes()), Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    let west_client = pair.pki.client(&pair.west.address);
    let deadline = Instant::now() + Duration::from_secs(20);
    let copied = |c: Arc<Client>| async move {
        match Admin::new(c.clone()).describe_topic("east.orders").await {
            Ok(d) => d.partitions.iter().map(|p| p.end_offset).sum::<u64>(),
            Err(_) => 0, // the flow has not created it yet
        }
    };
    while copied(west_client.clone()).await < 100 {
        assert!(
            Instant::now() < deadline,
            "the flow never copied the first records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pair.east.kill9();
    pair.promote(&[]);

    // Writes fail while the probe still trusts east, then go to west's promoted copy.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the producer never failed over");
        if let Ok(d) = producer
            .send("orders", None, None, Some(b"after-0"), &[])
            .await
        {
            if matches!(
                tokio::time::timeout(Duration::from_secs(1), d.wait()).await,
                Ok(Ok(_))
            ) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(producer.side(), Side::Replica);
    let mut futures = Vec::new();
    for i in 1..100 {
        let v = format!("after-{i}");
        futures.push(
            producer
                .send("orders", None, Some(v.as_bytes()), Some(v.as_bytes()), &[])
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for f in futures {
        f.wait().await.unwrap();
    }
    let mut seen: HashMap<Bytes, u32> = HashMap::new();
    for p in 0..PARTITIONS {
        for (_, v) in records(&west_client, "east.orders", p).await {
            *seen.entry(v).or_insert(0) += 1;
        }
    }
    for i in 0..100 {
        for tag in ["before", "after"] {
            let v = Bytes::from(format!("{tag}-{i}"));
            assert!(seen.contains_key(&v), "{tag}-{i} missing on west");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_topology_fails_over_from_the_command_line() {
    use std::io::{BufRead, BufReader};
    let mut pair = Pair::start("").await;
    let file = pair.topology();
    produce(&pair.pki.client(&pair.east.address), 0, 500, 10).await;
    let mut child = std::process::Command::new(strait_bin())
        .args([
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--json",
            "--topology",
        ])
        .arg(&file)
        .arg("--ca")
        .arg(pair.pki.ca())
        .arg("--cert")
        .arg(pair.pki.path("app.crt"))
        .arg("--key")
        .arg(pair.pki.path("app.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let (stdout, sink) = (child.stdout.take().unwrap(), lines.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock()
                .unwrap()
                .push(serde_json::from_str(&line).unwrap());
        }
    });
    let wait_for = |what: &str, check: &dyn Fn(&[Value]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(&lines.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{what} never printed");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("east's records", &|l| l.len() >= 500);
    // The consumer commits what it printed: wait for east to hold that commit.
    let east_client = pair.pki.client(&pair.east.address);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_total(&east_client, "billing").await < 500 {
        assert!(
            Instant::now() < deadline,
            "the printed records were never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.east.kill9();
    pair.promote(&[]);
    produce_tagged(
        &pair.pki.client(&pair.west.address),
        "east.orders",
        "west",
        100,
    )
    .await;
    wait_for("the records written on west after the failover", &|l| {
        (0..100).all(|i| {
            l.iter()
                .any(|r| r["topic"] == "east.orders" && r["value"] == format!("west-{i}"))
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let east_lines = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["topic"] == "orders")
        .count();
    assert_eq!(
        east_lines, 500,
        "east's records were printed once each before the kill"
    );
}

/// The sum of a group's committed offsets on one cluster (0 while it has none).
async fn committed_total(client: &Arc<Client>, group: &str) -> u64 {
    use strait_protocol::message::{Request, Response};
    let request = Request::FetchOffsets {
        group: group.into(),
        partitions: None,
    };
    match client.call(&request, &[]).await {
        Ok((Response::CommittedOffsets(offsets), _)) => offsets.iter().map(|c| c.offset).sum(),
        _ => 0,
    }
}
