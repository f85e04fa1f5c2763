//! Identity-mode flows (same topic names on both sides, local producers everywhere) run inside
//! the nodes as gateways: pairs and rings end with the union of every cluster's records, each
//! exactly once, and translation points at the very same record.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_protocol::client::{Admin, Client, Producer, ProducerConfig};
use strait_protocol::message::{Request, Response};
use strait_protocol::{ErrorCode, OffsetSpec};
use strait_tests::{free_udp_port, read_partition, NodeProcess, Pki};

const PARTITIONS: u32 = 4;

/// Node config text for a gateway running one identity flow from `source_port`.
fn gateway(name: &str, source_port: u16, extra: &str) -> String {
    format!(
        "[[flows]]\nname = \"{name}\"\nsource_bootstrap = [\"127.0.0.1:{source_port}\"]\n\
         topics = \"orders\"\nnaming = \"identity\"\nrefresh_ms = 300\n{extra}"
    )
}

async fn ensure_topic(client: &Arc<Client>) {
    match Admin::new(client.clone())
        .create_topic("orders", PARTITIONS, vec![])
        .await
    {
        Ok(()) => {}
        Err(e) if e.code() == Some(ErrorCode::TOPIC_EXISTS) => {}
        Err(e) => panic!("{e}"),
    }
}

async fn produce(client: &Arc<Client>, tag: &str, n: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..n {
        let key = format!("{tag}-k{}", i % 97);
        let value = format!("{tag}-{i}");
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

async fn total(client: &Arc<Client>) -> u64 {
    let admin = Admin::new(client.clone());
    let mut sum = 0;
    for p in 0..PARTITIONS {
        if let Ok((end, _)) = admin.list_offset("orders", p, OffsetSpec::Latest).await {
            sum += end;
        }
    }
    sum
}

/// Every value on a cluster with how often it appears.
async fn values(client: &Arc<Client>) -> HashMap<Bytes, u32> {
    let mut seen = HashMap::new();
    for p in 0..PARTITIONS {
        for r in read_partition(client, "orders", p).await {
            *seen.entry(r.value.unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

async fn wait_for_total(clients: &[&Arc<Client>], wanted: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut totals = Vec::new();
        for c in clients {
            totals.push(total(c).await);
        }
        if totals.iter().all(|t| *t == wanted) {
            return;
        }
        assert!(
            totals.iter().all(|t| *t <= wanted),
            "a cluster holds more than the union ({totals:?} > {wanted}): something was copied twice or bounced back"
        );
        assert!(
            Instant::now() < deadline,
            "clusters never reached the union: {totals:?} of {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_union_once(seen: &HashMap<Bytes, u32>, tags: &[&str], n: u32, cluster: &str) {
    assert_eq!(
        seen.len(),
        tags.len() * n as usize,
        "{cluster}: distinct values"
    );
    for tag in tags {
        for i in 0..n {
            let v = Bytes::from(format!("{tag}-{i}"));
            assert_eq!(seen.get(&v), Some(&1), "{cluster}: {tag}-{i} exactly once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_active_pair_ends_with_the_union_and_nothing_bounces_back() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let a = NodeProcess::start_on(
        &pki,
        "a",
        &dir.path().join("a"),
        &gateway("from-b", pb, ""),
        pa,
    );
    let b = NodeProcess::start_on(
        &pki,
        "b",
        &dir.path().join("b"),
        &gateway("from-a", pa, ""),
        pb,
    );
    let (ca, cb) = (pki.client(&a.address), pki.client(&b.address));
    ensure_topic(&ca).await;
    ensure_topic(&cb).await;
    const N: u32 = 20_000;
    tokio::join!(produce(&ca, "a", N), produce(&cb, "b", N));
    wait_for_total(&[&ca, &cb], 2 * u64::from(N), Duration::from_secs(60)).await;
    // Both flows keep running: after a few refresh intervals nothing more has arrived.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(total(&ca).await, 2 * u64::from(N));
    assert_eq!(total(&cb).await, 2 * u64::from(N));
    assert_union_once(&values(&ca).await, &["a", "b"], N, "a");
    assert_union_once(&values(&cb).await, &["a", "b"], N, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_three_ends_with_the_union_everywhere_exactly_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_udp_port(), free_udp_port(), free_udp_port()];
    let names = ["a", "b", "c"];
    // a → b → c → a: each node pulls from the previous one.
    let nodes: Vec<NodeProcess> = (0..3)
        .map(|i| {
            let prev = (i + 2) % 3;
            let config = gateway(&format!("from-{}", names[prev]), ports[prev], "");
            NodeProcess::start_on(
                &pki,
                names[i],
                &dir.path().join(names[i]),
                &config,
                ports[i],
            )
        })
        .collect();
    let clients: Vec<Arc<Client>> = nodes.iter().map(|n| pki.client(&n.address)).collect();
    for c in &clients {
        ensure_topic(c).await;
    }
    const N: u32 = 5_000;
    tokio::join!(
        produce(&clients[0], "a", N),
        produce(&clients[1], "b", N),
        produce(&clients[2], "c", N)
    );
    let all: Vec<&Arc<Client>> = clients.iter().collect();
    wait_for_total(&all, 3 * u64::from(N), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (c, name) in clients.iter().zip(names) {
        assert_eq!(total(c).await, 3 * u64::from(N), "{name} after settling");
        assert_union_once(&values(c).await, &names, N, name);
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_translation_is_exact_and_copies_survive_kill_nines() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let mut a = NodeProcess::start_on(&pki, "a", &dir.path().join("a"), "", pa);
    let b_config = gateway("from-a", pa, "groups = \"billing\"\nmax_mb_s = 1\n");
    let mut b = NodeProcess::start_on(&pki, "b", &dir.path().join("b"), &b_config, pb);
    let ca = pki.client(&a.address);
    let cb = pki.client(&b.address);
    ensure_topic(&ca).await;
    ensure_topic(&cb).await;
    // Local writes on b interleave with the copies, so offsets differ between the clusters.
    const N: u32 = 100_000;
    const LOCAL: u32 = 10_000;
    tokio::join!(produce(&ca, "a", N), produce(&cb, "b", LOCAL));
    // Kill the target (and with it the flow it runs) and once the source, mid-copy.
    let wanted = u64::from(N + LOCAL);
    let mut kills_mid_copy = 0;
    // Kill until enough kills landed mid-copy (the copy's speed varies with the machine).
    for round in 0..12u64 {
        if kills_mid_copy >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 + (round * 53) % 150)).await;
        if total(&pki.client(&b.address)).await < wanted {
            kills_mid_copy += 1;
        }
        if round == 3 {
            a.kill9();
            a = NodeProcess::start_on(&pki, "a", &dir.path().join("a"), "", pa);
        } else {
            b.kill9();
            b = NodeProcess::start_on(&pki, "b", &dir.path().join("b"), &b_config, pb);
        }
    }
    assert!(
        kills_mid_copy >= 4,
        "only {kills_mid_copy} kills landed mid-copy"
    );
    let ca = pki.client(&a.address);
    let cb = pki.client(&b.address);
    wait_for_total(&[&cb], wanted, Duration::from_secs(90)).await;
    let on_b = values(&cb).await;
    assert_eq!(on_b.len(), (N + LOCAL) as usize);
    assert!(
        on_b.values().all(|n| *n == 1),
        "every record exactly once on b"
    );

    // 10k random source offsets: the translated offset holds the very same record.
    let mut source: BTreeMap<u32, Vec<strait_tests::Seen>> = BTreeMap::new();
    let mut target: BTreeMap<u32, HashMap<u64, strait_tests::Seen>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        source.insert(p, read_partition(&ca, "orders", p).await);
        let by_offset = read_partition(&cb, "orders", p)
            .await
            .into_iter()
            .map(|r| (r.offset, r))
            .collect();
        target.insert(p, by_offset);
    }
    let mut rng = XorShift(0x5eed_1234_abcd_0042);
    let mut differing = 0;
    for _ in 0..10_000 {
        let p = (rng.next() % u64::from(PARTITIONS)) as u32;
        let records = &source[&p];
        let record = &records[(rng.next() % records.len() as u64) as usize];
        let req = Request::TranslateOffset {
            source_cluster: "a".into(),
            topic: "orders".into(),
            partition: p,
            offset: record.offset,
            position: false,
        };
        let (topic, partition, offset) = match cb.call(&req, &[]).await.unwrap().0 {
            Response::Translated {
                topic,
                partition,
                offset,
            } => (topic, partition, offset),
            other => panic!("{other:?}"),
        };
        assert_eq!((topic.as_str(), partition), ("orders", p));
        let there = target[&p].get(&offset).unwrap();
        assert_eq!(
            (&there.key, &there.value),
            (&record.key, &record.value),
            "a/{p}@{} translated to b/{p}@{offset}",
            record.offset
        );
        differing += usize::from(offset != record.offset);
    }
    assert!(
        differing > 1000,
        "local writes on b made offsets differ ({differing} of 10k)"
    );

    // A group's commit on a is carried to b, translated to the very record it points at.
    let p = 1;
    let at = source[&p][source[&p].len() / 2].offset;
    let commit = Request::CommitOffsets {
        group: "billing".into(),
        member_id: String::new(),
        generation: -1,
        offsets: vec![strait_protocol::message::CommittedOffset {
            topic: "orders".into(),
            partition: p,
            offset: at,
            metadata: String::new(),
        }],
    };
    ca.call(&commit, &[]).await.unwrap();
    let committed_at = Instant::now();
    let translated = loop {
        let req = Request::FetchOffsets {
            group: "billing".into(),
            partitions: None,
        };
        let found = match cb.call(&req, &[]).await.unwrap().0 {
            Response::CommittedOffsets(c) => c
                .into_iter()
                .find(|o| o.topic == "orders" && o.partition == p)
                .map(|o| o.offset),
            other => panic!("{other:?}"),
        };
        if let Some(o) = found {
            break o;
        }
        assert!(
            committed_at.elapsed() < Duration::from_secs(5),
            "the commit never reached b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = &source[&p].iter().find(|r| r.offset == at).unwrap().value;
    assert_eq!(&target[&p][&translated].value, expected);
}
