//! A real node process over QUIC with mutual TLS: round trips, refused peers, hostile streams.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strait_certs::Role;
use strait_protocol::client::{
    Admin, Client, ClientError, ClientOptions, Connection, Consumer, ConsumerConfig, Producer,
    ProducerConfig,
};
use strait_protocol::message::{Request, Response};
use strait_protocol::partitioner::partition_for_key;
use strait_protocol::{ErrorCode, OffsetSpec};
use strait_tests::{http_body, http_get, NodeProcess, Pki};

fn start_node(pki: &Pki, dir: &tempfile::TempDir) -> NodeProcess {
    NodeProcess::start(
        pki,
        "east",
        &dir.path().join("data"),
        "[limits]\nframe_bytes_max = 1048576\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keyed_records_round_trip_across_eight_partitions() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&pki, &dir);
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("orders", 8, vec![])
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 2,
            batch_bytes: 64 << 10,
            ..Default::default()
        },
    );
    const N: usize = 100_000;
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("customer-{}", i % 1000);
        let value = format!("order-{i}");
        deliveries.push(
            producer
                .send(
                    "orders",
                    None,
                    Some(key.as_bytes()),
                    Some(value.as_bytes()),
                    &[],
                )
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for d in deliveries {
        d.wait().await.unwrap();
    }
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer
        .assign_topic("orders", OffsetSpec::Earliest)
        .await
        .unwrap();
    let mut by_partition: BTreeMap<u32, Vec<(String, usize)>> = BTreeMap::new();
    let mut total = 0;
    while total < N {
        let records = consumer.poll(Duration::from_secs(2)).await.unwrap();
        assert!(!records.is_empty(), "stalled at {total} of {N} records");
        for r in records {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            let i: usize = value.trim_start_matches("order-").parse().unwrap();
            assert_eq!(
                r.partition,
                partition_for_key(key.as_bytes(), 8),
                "same key, same partition"
            );
            by_partition.entry(r.partition).or_default().push((key, i));
            total += 1;
        }
    }
    assert_eq!(total, N);
    assert_eq!(by_partition.len(), 8, "keys spread over every partition");
    for records in by_partition.values() {
        // Per key, order is the order of sending.
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, i) in records {
            if let Some(prev) = last.insert(k, *i) {
                assert!(prev < *i, "key {k}: {prev} came before {i}");
            }
        }
    }
}

async fn connect_with(
    pki: &Pki,
    address: &str,
    tls: rustls::ClientConfig,
) -> Result<Connection, ClientError> {
    let mut opts = ClientOptions::new(vec![address.into()], tls);
    opts.connect_timeout = Duration::from_secs(3);
    opts.request_timeout = Duration::from_secs(3);
    let _ = pki;
    Connection::connect(address, &opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_certificate_are_refused_and_others_are_served() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(&pki, &dir);
    let good = pki.client(&node.address);
    Admin::new(good.clone())
        .create_topic("t", 1, vec![])
        .await
        .unwrap();

    // No certificate at all.
    let anonymous = strait_certs::client_config_without_identity(&pki.ca()).unwrap();
    let err = connect_with(&pki, &node.address, anonymous)
        .await
        .err()
        .expect("anonymous client refused");
    // A refusal, not a failure to reach: retrying cannot help, and the message says why.
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
    assert!(!err.is_retriable(), "{err}");
    assert!(
        !err.to_string().contains("check that a node listens"),
        "{err}"
    );

    // A certificate from another CA.
    let other = Pki::new();
    let foreign =
        strait_certs::client_config(&pki.ca(), &other.path("app.crt"), &other.path("app.key"))
            .unwrap();
    let foreign = connect_with(&pki, &node.address, foreign)
        .await
        .err()
        .expect("foreign CA refused");
    assert!(
        matches!(foreign, ClientError::Refused { .. })
            && foreign
                .to_string()
                .contains("not signed by a CA the node trusts"),
        "{foreign}"
    );

    // An expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    strait_certs::issue_with_validity(
        pki.dir.path(),
        "old",
        Role::Client,
        &[],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let expired =
        strait_certs::client_config(&pki.ca(), &pki.path("old.crt"), &pki.path("old.key")).unwrap();
    assert!(
        connect_with(&pki, &node.address, expired).await.is_err(),
        "expired certificate refused"
    );

    // The node logged why, and still serves the good client.
    assert!(node.is_running());
    let d = Admin::new(good).describe_topic("t").await.unwrap();
    assert_eq!(d.partitions.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = node
        .log_lines()
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert!(refused >= 2, "refusals are logged: {:?}", node.log_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_garbage_streams_get_errors_without_disturbing_others() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&pki, &dir);
    let opts = ClientOptions::new(vec![node.address.clone()], pki.client_tls("app"));
    let conn = Arc::new(Connection::connect(&node.address, &opts).await.unwrap());
    Admin::new(pki.client(&node.address))
        .create_topic("t", 2, vec![])
        .await
        .unwrap();

    // A long poll on one stream stays open while hostile streams come and go on the same connection.
    let poller = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let fetch = Request::Fetch {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 3000,
                min_bytes: 1,
                max_bytes: 1 << 20,
            };
            conn.request(&fetch, &[]).await
        })
    };
    // 1. A frame above the node's 1 MiB limit.
    let big = Bytes::from(vec![0u8; 2 << 20]);
    let produce = Request::Produce {
        topic: "t".into(),
        partition: 1,
        acks: Default::default(),
    };
    let err = conn.request(&produce, &[big]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FRAME_TOO_LARGE), "{err}");
    // 2. Random bytes as a frame.
    let quic = conn.quic().clone();
    for seed in 0..20u8 {
        let (mut send, mut recv) = quic.open_bi().await.unwrap();
        let garbage: Vec<u8> = (0..64u32)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        send.write_all(&[8, 0, 0, 0, 56, 0, 0, 0]).await.unwrap();
        send.write_all(&garbage).await.unwrap();
        let _ = send.finish();
        let (resp, _) =
            strait_protocol::client::conn::read_frame::<Response>(&mut recv, &Default::default())
                .await
                .unwrap();
        match resp {
            Response::Error(e) => assert!(
                [ErrorCode::MALFORMED_FRAME, ErrorCode::FRAME_TOO_LARGE].contains(&e.code),
                "{e}"
            ),
            other => panic!("garbage accepted: {other:?}"),
        }
    }
    // 3. A batch whose bytes are corrupt.
    let mut b = strait_protocol::BatchBuilder::new(Default::default());
    b.push(1, None, Some(b"fine"), &[]);
    let mut raw = b.finish().into_bytes().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 0xff;
    let err = conn
        .request(&produce, &[Bytes::from(raw)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CORRUPT_BATCH), "{err}");

    // The long poll and the connection still work; so does a fresh client.
    let producer = Producer::new(pki.client(&node.address), ProducerConfig::default());
    producer
        .send("t", Some(0), None, Some(b"hello"), &[])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let (resp, payload) = poller.await.unwrap().unwrap();
    assert!(
        matches!(
            resp,
            Response::Fetched {
                high_watermark: 1,
                ..
            }
        ),
        "{resp:?}"
    );
    assert!(
        !payload.is_empty(),
        "the long poll woke with the new record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_an_unknown_topic_names_it_and_how_to_create_it() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&pki, &dir);
    let producer = Producer::new(pki.client(&node.address), ProducerConfig::default());
    let err = match producer.send("missing", None, None, Some(b"x"), &[]).await {
        Err(e) => e,
        Ok(d) => d.wait().await.unwrap_err(),
    };
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC));
    let text = err.to_string();
    assert!(
        text.contains("\"missing\"") && text.contains("strait topic create missing"),
        "{text}"
    );
    // With an explicit partition the node itself answers.
    let d = producer
        .send("missing", Some(0), None, Some(b"x"), &[])
        .await
        .unwrap();
    let err = d.wait().await.unwrap_err();
    assert!(
        err.to_string().contains("strait topic create missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_and_a_kill_both_keep_acknowledged_records() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[topic_defaults]\nflush = \"always\"\n";
    let mut node = NodeProcess::start(&pki, "east", &data, config);
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("t", 1, vec![])
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..100u32 {
        producer
            .send("t", Some(0), None, Some(&i.to_le_bytes()), &[])
            .await
            .unwrap();
    }
    producer.flush().await;
    assert!(node.terminate(), "SIGTERM exits cleanly");
    let mut node = NodeProcess::start(&pki, "east", &data, config);
    let client = Client::new(ClientOptions::new(
        vec![node.address.clone()],
        pki.client_tls("app"),
    ));
    let (end, _) = Admin::new(client.clone())
        .list_offset("t", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(end, 100);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let last = producer
        .send("t", Some(0), None, Some(b"last"), &[])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(last, 100);
    node.kill9();
    let node = NodeProcess::start(&pki, "east", &data, config);
    let client = pki.client(&node.address);
    let (end, _) = Admin::new(client)
        .list_offset("t", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(end, 101, "the record acknowledged before kill -9 is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_produce_whose_ack_was_lost_is_written_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(&pki, &dir);
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("t", 1, vec![])
        .await
        .unwrap();
    let conn = client.connection().await.unwrap();
    let (pid, epoch) = match conn
        .request(&Request::InitProducer {}, &[])
        .await
        .unwrap()
        .0
    {
        Response::ProducerInit {
            producer_id,
            producer_epoch,
        } => (producer_id, producer_epoch),
        other => panic!("{other:?}"),
    };
    let mut b = strait_protocol::BatchBuilder::new(Default::default()).producer(pid, epoch, 0);
    for i in 0..10u8 {
        b.push(1, None, Some(&[i]), &[]);
    }
    let batch = b.finish().into_bytes();
    let produce = Request::Produce {
        topic: "t".into(),
        partition: 0,
        acks: Default::default(),
    };
    // First attempt: the request arrives, the acknowledgement is never read (stream dropped).
    let (mut send, recv) = conn.quic().open_bi().await.unwrap();
    let head = strait_protocol::frame::encode(&produce, batch.len()).unwrap();
    send.write_all(&head).await.unwrap();
    send.write_all(&batch).await.unwrap();
    send.finish().unwrap();
    drop(recv);
    let admin = Admin::new(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while admin
        .list_offset("t", 0, OffsetSpec::Latest)
        .await
        .unwrap()
        .0
        < 10
    {
        assert!(
            std::time::Instant::now() < deadline,
            "first attempt never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The retry carries the same producer id and sequence: same offsets, nothing new written.
    let (resp, _) = conn
        .request(&produce, std::slice::from_ref(&batch))
        .await
        .unwrap();
    assert!(
        matches!(
            resp,
            Response::Produced {
                base_offset: 0,
                last_offset: 9,
                ..
            }
        ),
        "{resp:?}"
    );
    assert_eq!(
        admin
            .list_offset("t", 0, OffsetSpec::Latest)
            .await
            .unwrap()
            .0,
        10
    );
    // A gap in the sequence is refused with a clear error.
    let mut gap = strait_protocol::BatchBuilder::new(Default::default()).producer(pid, epoch, 50);
    gap.push(1, None, Some(b"late"), &[]);
    let err = conn
        .request(&produce, &[gap.finish().into_bytes()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OUT_OF_ORDER_SEQUENCE), "{err}");
    assert!(err.to_string().contains("expected 10"), "{err}");
    // Producer state survives kill -9: the retry is still recognised after a restart.
    node.kill9();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    let conn = client.connection().await.unwrap();
    let (resp, _) = conn.request(&produce, &[batch]).await.unwrap();
    assert!(
        matches!(resp, Response::Produced { base_offset: 0, .. }),
        "{resp:?}"
    );
    let (end, _) = Admin::new(client)
        .list_offset("t", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(end, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_reports_health_readiness_and_status() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!("admin_listen = \"127.0.0.1:{port}\"\n");
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), &config);
    Admin::new(pki.client(&node.address))
        .create_topic("seen", 2, vec![])
        .await
        .unwrap();
    let admin = format!("127.0.0.1:{port}");
    let get = |path: &str| http_get(&admin, path);
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    assert!(get("/ready").starts_with("HTTP/1.1 200"));
    let status = get("/status");
    let body = http_body(&status);
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["cluster"], "east");
    let seen = json["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "seen")
        .expect("topic listed");
    assert_eq!(seen["partitions"].as_array().unwrap().len(), 2);
}

/// An idempotent producer whose batch fails for good in mid-stream (here: too large for the
/// topic) does not wedge: later batches of the partition succeed, under a fresh producer id,
/// and nothing is written twice or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_keeps_going_after_a_batch_fails_for_good() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&pki, &dir);
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic(
            "strict",
            1,
            vec![("max.batch.bytes".into(), "65536".into())],
        )
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 1,
            batch_bytes: 16 << 10,
            in_flight_per_partition: 4,
            idempotence: true,
            ..Default::default()
        },
    );
    let send = |value: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send("strict", Some(0), None, Some(&value), &[])
                .await
                .unwrap()
        }
    };
    let mut ok = Vec::new();
    for i in 0..200u32 {
        ok.push(send(format!("before-{i}").into_bytes()).await);
    }
    for d in ok.drain(..) {
        d.wait().await.unwrap();
    }
    let huge = send(vec![b'x'; 100 << 10]).await;
    let err = huge
        .wait()
        .await
        .expect_err("a batch over max.batch.bytes fails for good");
    assert!(!err.is_retriable(), "{err}");
    for i in 0..2000u32 {
        ok.push(send(format!("after-{i}").into_bytes()).await);
    }
    for d in ok {
        d.wait().await.expect("later sends succeed");
    }
    let values: Vec<String> = strait_tests::read_partition(&client, "strict", 0)
        .await
        .into_iter()
        .map(|s| String::from_utf8(s.value.unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..200)
        .map(|i| format!("before-{i}"))
        .chain((0..2000).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(values, expected, "each record once, in order");
}

/// Batches written by another Kafka implementation (the `kafka-protocol` crate), under every
/// codec, with headers, null keys and values and an idempotent producer, go through produce,
/// storage and fetch and come back byte for byte; a transactional batch is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_written_batches_come_back_byte_for_byte() {
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as K, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&pki, &dir);
    let client = pki.client(&node.address);
    let admin = Admin::new(client.clone());
    let encode = |codec: K, transactional: bool| {
        let records: Vec<Record> = (0..50i64)
            .map(|i| {
                let mut headers = IndexMap::new();
                headers.insert(
                    StrBytes::from_static_str("n"),
                    Some(Bytes::from(i.to_string())),
                );
                headers.insert(StrBytes::from_static_str("empty"), None);
                Record {
                    transactional,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: 31,
                    producer_epoch: 0,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    sequence: i as i32,
                    timestamp: 1_700_000_000_000 + i,
                    key: (i % 3 != 0).then(|| Bytes::from(format!("key-{}", i % 7))),
                    value: (i % 5 != 0).then(|| Bytes::from(vec![i as u8; 200])),
                    headers,
                }
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: codec,
            },
        )
        .unwrap();
        buf.freeze()
    };
    for (name, codec) in [
        ("none", K::None),
        ("gzip", K::Gzip),
        ("snappy", K::Snappy),
        ("lz4", K::Lz4),
        ("zstd", K::Zstd),
    ] {
        admin.create_topic(name, 1, vec![]).await.unwrap();
        let batch = encode(codec, false);
        let produce = Request::Produce {
            topic: name.into(),
            partition: 0,
            acks: strait_protocol::Acks::All,
        };
        let (answer, _) = client
            .call(&produce, std::slice::from_ref(&batch))
            .await
            .unwrap();
        assert!(
            matches!(
                answer,
                Response::Produced {
                    base_offset: 0,
                    last_offset: 49,
                    ..
                }
            ),
            "{name}: {answer:?}"
        );
        let fetch = Request::Fetch {
            topic: name.into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
        };
        let (_, payload) = client.call(&fetch, &[]).await.unwrap();
        assert!(
            payload == batch,
            "{name}: the fetched batch is the produced one, byte for byte"
        );
        // Strait's own consumer reads what the other implementation wrote.
        let seen = strait_tests::read_partition(&client, name, 0).await;
        assert_eq!(seen.len(), 50, "{name}");
    }
    let produce = Request::Produce {
        topic: "none".into(),
        partition: 0,
        acks: strait_protocol::Acks::All,
    };
    let err = client
        .call(&produce, &[encode(K::None, true)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CORRUPT_BATCH), "{err}");
    assert!(err.to_string().contains("transactional id"), "{err}");
}
