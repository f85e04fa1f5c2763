//! Process faults under load, checked by the history checker: writers produce unique, sequenced
//! values with `acks = all` to a source cluster whose topics use `flush = always`, while
//! `kill -9` and `SIGSTOP`/`SIGCONT` hit the source node and the mirror flow at random moments.
//! Afterwards the source is read twice and the prefix-mode target once; the checker's table is
//! printed and must be clean.
//!
//! The quick profile (CI) runs 20 s of faults; `STRAIT_FAULT_SECONDS=3600` (see
//! `tests/faults --long`) runs the long one.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_certs::Role;
use strait_protocol::client::{Admin, Client, Producer, ProducerConfig};
use strait_protocol::Acks;
use strait_tests::checker::{check, partition_divergence, Checker, History};
use strait_tests::{end_offsets, read_history, read_values, strait_bin, NodeProcess, Pki};

const PARTITIONS: u32 = 4;
const TOPIC: &str = "history";

struct Flow(Child);

impl Flow {
    fn start(pki: &Pki, source: &str, target: &str) -> Flow {
        let child = Command::new(strait_bin())
            .args([
                "mirror",
                "run",
                "--name",
                "east-to-west",
                "--topics",
                TOPIC,
                "--refresh-s",
                "1",
            ])
            .args(["--source-bootstrap", source, "--target-bootstrap", target])
            .arg("--ca")
            .arg(pki.ca())
            .arg("--cert")
            .arg(pki.path("flow.crt"))
            .arg("--key")
            .arg(pki.path("flow.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Flow(child)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn signal(pid: u32, sig: &str) {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
}

/// A small deterministic generator, so a failing schedule can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// One writer: values `w<id>-<seq>` to partition `(id + seq) % PARTITIONS`, acks = all.
async fn writer(id: u32, client: Arc<Client>, stop: Arc<AtomicBool>, history: Arc<Mutex<History>>) {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 2,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = History::value(id, seq);
        let partition = ((u64::from(id) + seq) % u64::from(PARTITIONS)) as u32;
        history.lock().unwrap().attempt(&value);
        match producer
            .send(TOPIC, Some(partition), None, Some(value.as_bytes()), &[])
            .await
        {
            Ok(delivery) => pending.push((value, partition, tokio::spawn(delivery.wait()))),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        seq += 1;
        if pending.len() >= 200 {
            settle(&mut pending, &history).await;
        }
    }
    producer.flush().await;
    settle(&mut pending, &history).await;
}

type Pending = Vec<(
    String,
    u32,
    tokio::task::JoinHandle<Result<u64, strait_protocol::client::ClientError>>,
)>;

async fn settle(pending: &mut Pending, history: &Mutex<History>) {
    for (value, partition, wait) in pending.drain(..) {
        if let Ok(Ok(Ok(offset))) = tokio::time::timeout(Duration::from_secs(60), wait).await {
            history.lock().unwrap().ack(&value, partition, Some(offset));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_sigstop_of_nodes_and_flows_lose_and_duplicate_nothing() {
    let seconds: u64 = std::env::var("STRAIT_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("STRAIT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_5eed);
    let pki = Pki::new();
    strait_certs::issue(pki.dir.path(), "flow", Role::Mirror, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = "[topic_defaults]\nflush = \"always\"\n";
    let east_port = strait_tests::free_udp_port();
    let east_dir = dir.path().join("east");
    let mut east = NodeProcess::start_on(&pki, "east", &east_dir, config, east_port);
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), config);
    Admin::new(pki.client(&east.address))
        .create_topic(TOPIC, PARTITIONS, vec![])
        .await
        .unwrap();
    let mut flow = Flow::start(&pki, &east.address, &west.address);

    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|id| {
            tokio::spawn(writer(
                id,
                pki.client(&east.address),
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();

    let mut rng = Rng(seed);
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut kinds: Vec<u64> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(800 + rng.next(1500))).await;
        // Every kind once per four faults, in a random order.
        if kinds.is_empty() {
            kinds = vec![0, 1, 2, 3];
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.next(i as u64 + 1) as usize);
            }
        }
        let fault = match kinds.pop().unwrap_or(0) {
            0 => {
                east.kill9();
                east = NodeProcess::start_on(&pki, "east", &east_dir, config, east_port);
                "kill -9 source node"
            }
            1 => {
                signal(east.pid(), "-STOP");
                tokio::time::sleep(Duration::from_millis(500 + rng.next(2000))).await;
                signal(east.pid(), "-CONT");
                "SIGSTOP/SIGCONT source node"
            }
            2 => {
                flow.kill9();
                flow = Flow::start(&pki, &east.address, &west.address);
                "kill -9 flow"
            }
            _ => {
                signal(flow.0.id(), "-STOP");
                tokio::time::sleep(Duration::from_millis(500 + rng.next(2000))).await;
                signal(flow.0.id(), "-CONT");
                "SIGSTOP/SIGCONT flow"
            }
        };
        *faults.entry(fault).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // The flow catches up with what the source holds.
    let (source, target) = (pki.client(&east.address), pki.client(&west.address));
    let target_topic = format!("east.{TOPIC}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let source_ends = end_offsets(&source, TOPIC, PARTITIONS).await;
    while end_offsets(&target, &target_topic, PARTITIONS).await != source_ends {
        assert!(Instant::now() < deadline, "the flow never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One partition at a time (the long profile writes tens of millions of values): the source
    // twice, the target once.
    let history = std::mem::take(&mut *history.lock().unwrap());
    let again = pki.client(&east.address);
    let mut on_source = Checker::new(&history);
    let mut on_target = Checker::new(&history);
    let mut divergence = 0;
    for p in 0..PARTITIONS {
        let first = read_values(&source, TOPIC, p).await;
        let second = read_values(&again, TOPIC, p).await;
        on_source.partition(p, &first, Some(&second));
        drop(second);
        let mirrored = read_values(&target, &target_topic, p).await;
        on_target.partition(p, &mirrored, None);
        divergence += partition_divergence(&first, &mirrored);
    }
    let mut report = on_source.finish();
    let on_target = on_target.finish();
    report.mirror_divergence = divergence;
    report.duplicates += on_target.duplicates;
    report.lost = report.lost.max(on_target.lost);
    println!("faults injected over {seconds} s (seed {seed}): {faults:?}");
    println!("{report}");
    assert!(
        faults.len() == 4 || seconds < 10,
        "every fault kind ran: {faults:?}"
    );
    assert!(report.acknowledged > 1000, "enough load: {report:?}");
    assert!(report.clean(), "the checker found anomalies:\n{report}");
}

/// A writer that records each acknowledgement the moment it arrives, so a kill leaves an exact
/// history of what was acknowledged before it.
async fn eager_writer(id: u32, client: Arc<Client>, history: Arc<Mutex<History>>) {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 1,
            ..ProducerConfig::default()
        },
    );
    // Each delivery records its own acknowledgement the moment it arrives, so a kill leaves
    // no acknowledged write counted as indeterminate.
    let mut window: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    for seq in 0.. {
        while window.len() >= 512 {
            window.join_next().await;
        }
        let value = History::value(id, seq);
        let partition = ((u64::from(id) + seq) % u64::from(PARTITIONS)) as u32;
        history.lock().unwrap().attempt(&value);
        match producer
            .send(TOPIC, Some(partition), None, Some(value.as_bytes()), &[])
            .await
        {
            Ok(delivery) => {
                let history = history.clone();
                window.spawn(async move {
                    if let Ok(offset) = delivery.wait().await {
                        history.lock().unwrap().ack(&value, partition, Some(offset));
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// kill -9 under load, then a simulated power cut (un-fsynced bytes dropped, the next write
/// torn), then a restart: under `flush = always` nothing acknowledged is lost; under
/// `flush = os` the loss is measured and printed (docs/architecture.md states it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_nothing_acknowledged_under_flush_always() {
    let pki = Pki::new();
    for (round, policy) in ["always", "os"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        let journal = dir.path().join("durable.journal");
        let config =
            format!("[topic_defaults]\nflush = \"{policy}\"\n\"segment.bytes\" = 1048576\n");
        let port = strait_tests::free_udp_port();
        let env = [("STRAIT_TEST_DURABLE_JOURNAL", journal.as_path())];
        let mut node = NodeProcess::start_with_env(&pki, "east", &data, &config, port, &env);
        Admin::new(pki.client(&node.address))
            .create_topic(TOPIC, PARTITIONS, vec![])
            .await
            .unwrap();
        let history = Arc::new(Mutex::new(History::default()));
        let writers: Vec<_> = (0..3)
            .map(|id| tokio::spawn(eager_writer(id, pki.client(&node.address), history.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        node.kill9();
        let history = history.lock().unwrap().clone();
        for w in writers {
            w.abort();
        }
        let cut = strait_tests::power_loss(&data, &journal, 7 + round as u64);
        let (segments, bytes) = (cut.segments_cut, cut.bytes_dropped);
        let node = NodeProcess::start_on(&pki, "east", &data, &config, port);
        let first = read_history(&pki.client(&node.address), TOPIC, PARTITIONS).await;
        let second = read_history(&pki.client(&node.address), TOPIC, PARTITIONS).await;
        let report = check(&history, &first, &second);
        let lost_pct = 100.0 * report.lost as f64 / report.acknowledged.max(1) as f64;
        println!(
            "power cut under flush = {policy}: {segments} segments cut, {bytes} un-fsynced bytes dropped; {} of {} acknowledged writes lost ({lost_pct:.1} %)\n{report}",
            report.lost, report.acknowledged
        );
        assert!(report.acknowledged > 1000, "enough load: {report:?}");
        assert_eq!(
            report.duplicates + report.reordered + report.offsets_differ + report.unexpected,
            0,
            "{report}"
        );
        if policy == "always" {
            assert_eq!(
                report.lost, 0,
                "flush = always loses nothing acknowledged:\n{report}"
            );
        }
    }
}

/// Metadata under a power cut: every acknowledged topic create, grow and alter survives, and no
/// producer id handed out before the cut is handed out again after it. The simulation puts
/// every state file (`topic.json`, `producer-ids`, checkpoints) back to its last durable
/// content, dropping writes and renames that were not yet synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_topic_and_reuses_no_producer_id() {
    use strait_protocol::message::{Request, Response};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let journal = dir.path().join("durable.journal");
    let port = strait_tests::free_udp_port();
    let env = [("STRAIT_TEST_DURABLE_JOURNAL", journal.as_path())];
    let mut node = NodeProcess::start_with_env(&pki, "east", &data, "", port, &env);
    let client = pki.client(&node.address);
    let admin = Admin::new(client.clone());
    for i in 0..20u32 {
        admin
            .create_topic(&format!("t{i}"), 1 + i % 3, vec![])
            .await
            .unwrap();
    }
    admin.add_partitions("t0", 6).await.unwrap();
    admin
        .alter_topic_config("t1", vec![("retention.ms".into(), "12345".into())])
        .await
        .unwrap();
    let mut handed_out = Vec::new();
    for _ in 0..5 {
        match client.call(&Request::InitProducer {}, &[]).await.unwrap().0 {
            Response::ProducerInit { producer_id, .. } => handed_out.push(producer_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    node.kill9();
    let cut = strait_tests::power_loss(&data, &journal, 11);
    println!("power cut on metadata: {cut:?}");
    let node = NodeProcess::start_on(&pki, "east", &data, "", port);
    let client = pki.client(&node.address);
    let admin = Admin::new(client.clone());
    for i in 0..20u32 {
        let t = admin.describe_topic(&format!("t{i}")).await.unwrap();
        let want = if i == 0 { 6 } else { 1 + i % 3 };
        assert_eq!(t.partitions.len() as u32, want, "t{i} after the power cut");
    }
    let t1 = admin.describe_topic("t1").await.unwrap();
    assert!(
        t1.configs
            .iter()
            .any(|(k, v)| k == "retention.ms" && v == "12345"),
        "the acknowledged alter survived: {:?}",
        t1.configs
    );
    let Response::ProducerInit { producer_id, .. } =
        client.call(&Request::InitProducer {}, &[]).await.unwrap().0
    else {
        panic!("no producer id");
    };
    assert!(
        handed_out.iter().all(|id| producer_id > *id),
        "producer id {producer_id} after the cut; before it: {handed_out:?}"
    );
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` with `dir/filler` until a write fails for lack of space.
fn fill(dir: &std::path::Path) -> std::fs::File {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xAAu8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_a_retriable_error_and_the_log_stays_valid() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this suite needs root to mount a small tmpfs"
    );
    let _mount = Mount(mnt.clone());
    let data = mnt.join("node");
    let config = "[topic_defaults]\nflush = \"always\"\n\"segment.bytes\" = 1048576\n";
    let port = strait_tests::free_udp_port();
    let mut node = NodeProcess::start_on(&pki, "east", &data, config, port);
    Admin::new(pki.client(&node.address))
        .create_topic(TOPIC, 1, vec![])
        .await
        .unwrap();
    let conn = pki.client(&node.address);
    let mut history = History::default();
    let mut seq = 0u64;
    let produce = strait_protocol::message::Request::Produce {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::All,
    };
    let mut send = |history: &mut History| {
        let mut b = strait_protocol::BatchBuilder::new(Default::default());
        let mut values = Vec::new();
        for _ in 0..64 {
            let v = History::value(0, seq);
            seq += 1;
            let padded = format!("{v:<1000}");
            b.push(1, None, Some(padded.as_bytes()), &[]);
            history.attempt(&padded);
            values.push(padded);
        }
        (b.finish().into_bytes(), values)
    };
    // Some records go in while there is room.
    for _ in 0..50 {
        let (batch, values) = send(&mut history);
        let answer = conn.call(&produce, &[batch]).await.unwrap();
        ack_all(&mut history, &values, &answer.0);
    }
    // The disk fills up: every produce now fails with a retriable error; the node stays up.
    let filler = fill(&mnt);
    let mut refusals = 0;
    for _ in 0..40 {
        let (batch, values) = send(&mut history);
        match conn.call(&produce, &[batch]).await {
            Ok(answer) => ack_all(&mut history, &values, &answer.0),
            Err(e) => {
                assert!(e.is_retriable(), "a full disk is retriable: {e}");
                refusals += 1;
            }
        }
    }
    assert!(refusals > 30, "the full disk refused writes: {refusals}");
    // Space comes back: the same partition takes writes again.
    drop(filler);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    for _ in 0..20 {
        let (batch, values) = send(&mut history);
        let answer = conn.call(&produce, &[batch]).await.unwrap();
        ack_all(&mut history, &values, &answer.0);
    }
    // The log is valid across a restart and holds every acknowledged record exactly once.
    assert!(node.terminate());
    drop(node);
    let node = NodeProcess::start_on(&pki, "east", &data, config, port);
    let client = pki.client(&node.address);
    let read = read_values(&client, TOPIC, 0).await;
    let reads = BTreeMap::from([(0, read)]);
    let report = check(&history, &reads, &reads);
    println!("full disk: {refusals} produces refused as retriable\n{report}");
    assert!(report.clean(), "{report}");
    assert_eq!(
        report.indeterminate_stored, 0,
        "a refused batch left nothing behind"
    );
}

/// Records one produced batch's values as acknowledged on partition 0 at the offsets the
/// answer names (base offset plus position in the batch).
fn ack_all(history: &mut History, values: &[String], answer: &strait_protocol::message::Response) {
    let strait_protocol::message::Response::Produced { base_offset, .. } = answer else {
        panic!("unexpected produce answer {answer:?}");
    };
    for (i, v) in values.iter().enumerate() {
        history.ack(v, 0, Some(base_offset + i as u64));
    }
}
