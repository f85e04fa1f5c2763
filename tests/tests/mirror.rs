//! Two clusters on loopback and a mirror flow between them, interrupted by kill -9.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_certs::Role;
use strait_protocol::client::{Admin, Client, Producer, ProducerConfig};
use strait_protocol::message::{Request, Response};
use strait_protocol::{Compression, ErrorCode, OffsetSpec};
use strait_tests::{strait_bin, NodeProcess, Pki};

struct Flow(Child);

impl Flow {
    fn start(pki: &Pki, source: &str, target: &str, log: &std::path::Path) -> Flow {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(strait_bin())
            .args([
                "mirror",
                "run",
                "--name",
                "east-to-west",
                "--topics",
                ".*",
                "--groups",
                ".*",
                "--refresh-s",
                "1",
            ])
            .args([
                "--source-bootstrap",
                source,
                "--target-bootstrap",
                target,
                "--max-mb-s",
                "5",
            ])
            .arg("--ca")
            .arg(pki.ca())
            .arg("--cert")
            .arg(pki.path("flow.crt"))
            .arg("--key")
            .arg(pki.path("flow.key"))
            .stdout(Stdio::null())
            .stderr(log)
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

/// Every batch of a partition, as the node serves it.
async fn all_batches(client: &Arc<Client>, topic: &str, partition: u32) -> Vec<Bytes> {
    strait_tests::read_batches(client, topic, partition)
        .await
        .into_iter()
        .map(|b| b.into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_mirror_copies_every_batch_bit_identical_through_kill_nines() {
    let pki = Pki::new();
    strait_certs::issue(pki.dir.path(), "flow", Role::Mirror, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let east_port = strait_tests::free_udp_port();
    let mut east = NodeProcess::start_on(&pki, "east", &dir.path().join("east"), "", east_port);
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), "");
    let source = pki.client(&east.address);
    let target = pki.client(&west.address);
    Admin::new(source.clone())
        .create_topic("orders", 8, vec![])
        .await
        .unwrap();
    let producer = Producer::new(
        source.clone(),
        ProducerConfig {
            compression: Compression::Lz4,
            batch_bytes: 64 << 10,
            ..ProducerConfig::default()
        },
    );
    const N: u32 = 1_000_000;
    for i in 0..N {
        let key = format!("k{}", i % 5000);
        let value: Vec<u8> = (0..64u32)
            .map(|j| (i.wrapping_mul(2_654_435_761).wrapping_add(j * 40_503) >> 13) as u8)
            .collect();
        producer
            .send("orders", None, Some(key.as_bytes()), Some(&value), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    let source_ends = strait_tests::end_offsets(&source, "orders", 8).await;
    assert_eq!(source_ends.iter().sum::<u64>(), u64::from(N));

    // Copy with interruptions: the flow and the source node are killed at moments spread over
    // the copy, then the flow restarts from whatever the target holds.
    let flow_log = dir.path().join("flow.log");
    let mut flow = Flow::start(&pki, &east.address, &west.address, &flow_log);
    let mut kills_mid_copy = 0;
    for round in 0..14u64 {
        tokio::time::sleep(Duration::from_millis(40 + (round * 37) % 120)).await;
        if strait_tests::end_offsets(&target, "east.orders", 8).await != source_ends {
            kills_mid_copy += 1;
        }
        if round % 4 == 3 {
            east.kill9();
            east = NodeProcess::start_on(&pki, "east", &dir.path().join("east"), "", east_port);
        } else {
            flow.kill9();
            flow = Flow::start(&pki, &east.address, &west.address, &flow_log);
        }
    }
    assert!(
        kills_mid_copy >= 10,
        "only {kills_mid_copy} kills landed while the copy was under way"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if strait_tests::end_offsets(&target, "east.orders", 8).await == source_ends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror never caught up: {:?} vs {source_ends:?}",
            strait_tests::end_offsets(&target, "east.orders", 8).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let source = pki.client(&east.address);
    for p in 0..8 {
        let (a, b) = (
            all_batches(&source, "orders", p).await,
            all_batches(&target, "east.orders", p).await,
        );
        assert_eq!(a.len(), b.len(), "partition {p}: same number of batches");
        assert!(
            a == b,
            "partition {p}: every batch is bit-identical at identical offsets"
        );
    }
    // Translation is exact: the record at a source offset is the record at the translated one.
    for (p, offset) in [(0u32, 0u64), (3, 1234), (7, source_ends[7] - 1)] {
        let req = Request::TranslateOffset {
            source_cluster: "east".into(),
            topic: "orders".into(),
            partition: p,
            offset,
            position: false,
        };
        match target.call(&req, &[]).await.unwrap().0 {
            Response::Translated {
                topic,
                partition,
                offset: translated,
            } => {
                assert_eq!((topic.as_str(), partition), ("east.orders", p));
                let fetch = |t: &str, o: u64| Request::Fetch {
                    topic: t.into(),
                    partition: p,
                    offset: o,
                    max_wait_ms: 0,
                    min_bytes: 0,
                    max_bytes: 1,
                };
                let (_, a) = source.call(&fetch("orders", offset), &[]).await.unwrap();
                let (_, b) = target.call(&fetch(&topic, translated), &[]).await.unwrap();
                assert_eq!(
                    a, b,
                    "the batch holding source offset {offset} is the one at {translated}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let beyond = Request::TranslateOffset {
        source_cluster: "east".into(),
        topic: "orders".into(),
        partition: 0,
        offset: 1 << 40,
        position: false,
    };
    assert_eq!(
        target.call(&beyond, &[]).await.unwrap_err().code(),
        Some(ErrorCode::OFFSET_OUT_OF_RANGE)
    );
    // The mirror topic is read-only for clients.
    let producer = Producer::new(target.clone(), ProducerConfig::default());
    let err = producer
        .send("east.orders", Some(0), None, Some(b"x"), &[])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::READ_ONLY_TOPIC), "{err}");
    assert!(
        err.to_string().contains("east-to-west"),
        "the error names the flow: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_deleted_before_it_was_mirrored_is_reported_as_a_gap() {
    let pki = Pki::new();
    strait_certs::issue(pki.dir.path(), "flow", Role::Mirror, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("east"),
        "[limits]\nretention_check_interval_ms = 100\n",
    );
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), "");
    let source = pki.client(&east.address);
    let settings = vec![
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.bytes".to_string(), "8192".to_string()),
    ];
    Admin::new(source.clone())
        .create_topic("logs", 1, settings)
        .await
        .unwrap();
    let producer = Producer::new(
        source.clone(),
        ProducerConfig {
            linger_ms: 0,
            batch_bytes: 1024,
            ..ProducerConfig::default()
        },
    );
    for i in 0..400u32 {
        producer
            .send("logs", Some(0), None, Some(&[i as u8; 100]), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    let admin = Admin::new(source.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        let (start, _) = admin
            .list_offset("logs", 0, OffsetSpec::Earliest)
            .await
            .unwrap();
        if start > 0 {
            break start;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let flow_log = dir.path().join("flow.log");
    let _flow = Flow::start(&pki, &east.address, &west.address, &flow_log);
    let target = pki.client(&west.address);
    let deadline = Instant::now() + Duration::from_secs(20);
    while strait_tests::end_offsets(&target, "east.logs", 1).await != vec![400] {
        assert!(Instant::now() < deadline, "the mirror never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&flow_log).unwrap();
    assert!(
        log.contains(&format!("source offsets 0..{start} were deleted")),
        "the gap is logged with its range: {log}"
    );
    let first = all_batches(&target, "east.logs", 0).await;
    let first = strait_protocol::RecordBatch::parse(first[0].clone(), &Default::default()).unwrap();
    assert!(
        first.base_offset().0 >= start && first.base_offset().0 <= start + 10,
        "the copy starts where the source does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_on_the_source_reaches_the_target_within_seconds() {
    let pki = Pki::new();
    strait_certs::issue(pki.dir.path(), "flow", Role::Mirror, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), "");
    let west = NodeProcess::start(&pki, "west", &dir.path().join("west"), "");
    let source = pki.client(&east.address);
    let target = pki.client(&west.address);
    Admin::new(source.clone())
        .create_topic("orders", 2, vec![])
        .await
        .unwrap();
    let producer = Producer::new(source.clone(), ProducerConfig::default());
    for i in 0..100u32 {
        producer
            .send("orders", Some(i % 2), None, Some(&i.to_le_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    let flow_log = dir.path().join("flow.log");
    let _flow = Flow::start(&pki, &east.address, &west.address, &flow_log);
    let commit = |offset: u64| Request::CommitOffsets {
        group: "billing".into(),
        member_id: String::new(),
        generation: -1,
        offsets: vec![strait_protocol::message::CommittedOffset {
            topic: "orders".into(),
            partition: 1,
            offset,
            metadata: "m".into(),
        }],
    };
    let on_target = || async {
        let req = Request::FetchOffsets {
            group: "billing".into(),
            partitions: None,
        };
        match target.call(&req, &[]).await.unwrap().0 {
            Response::CommittedOffsets(c) => c
                .iter()
                .find(|o| o.topic == "east.orders" && o.partition == 1)
                .map(|o| o.offset),
            other => panic!("{other:?}"),
        }
    };
    for wanted in [30u64, 42] {
        source.call(&commit(wanted), &[]).await.unwrap();
        let committed_at = Instant::now();
        while on_target().await != Some(wanted) {
            assert!(
                committed_at.elapsed() < Duration::from_secs(5),
                "offset {wanted} never reached the target; flow log: {}",
                std::fs::read_to_string(&flow_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lag = committed_at.elapsed();
        assert!(lag < Duration::from_secs(3), "checkpoint took {lag:?}");
    }
}
