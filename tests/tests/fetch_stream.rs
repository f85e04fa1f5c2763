//! The streaming fetch against a real node: the log comes back byte for byte and in order,
//! the node never runs ahead of the reader's credit, an idle stream says so, errors end the
//! stream with their cause, and streams nobody reads are cut off without slowing others.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use strait_protocol::batch::split_batches;
use strait_protocol::client::{
    Admin, Client, FetchStream, FetchStreamOptions, Producer, ProducerConfig,
};
use strait_protocol::message::{Request, Response};
use strait_protocol::{DecodeLimits, ErrorCode};
use strait_tests::{NodeProcess, Pki};

/// Produces `n` records of about 1 KiB in batches of about 16 KiB.
async fn produce(client: &Arc<Client>, topic: &str, n: u32) {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_bytes: 16 << 10,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b'v'; 1000];
    for i in 0..n {
        producer
            .send(
                topic,
                Some(0),
                Some(format!("k{i}").as_bytes()),
                Some(&value),
                &[],
            )
            .await
            .unwrap();
    }
    producer.flush().await;
}

/// The whole partition as plain fetches return it.
async fn plain_log(client: &Arc<Client>, topic: &str) -> Vec<u8> {
    let mut log = Vec::new();
    let mut offset = 0;
    loop {
        let fetch = Request::Fetch {
            topic: topic.into(),
            partition: 0,
            offset,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
        };
        let (answer, payload) = client.call(&fetch, &[]).await.unwrap();
        let Response::Fetched { high_watermark, .. } = answer else {
            panic!("{answer:?}")
        };
        for b in split_batches(payload, &DecodeLimits::default()).unwrap() {
            if b.next_offset().0 > offset {
                log.extend_from_slice(b.as_bytes());
                offset = b.next_offset().0;
            }
        }
        if offset >= high_watermark {
            return log;
        }
    }
}

fn fixed_window(bytes: u32) -> FetchStreamOptions {
    FetchStreamOptions {
        max_wait_ms: 200,
        frame_bytes_max: 16 << 10,
        window_min: bytes,
        window_max: bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_serves_the_log_in_order_and_never_runs_past_its_credit() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("orders", 1, vec![])
        .await
        .unwrap();
    produce(&client, "orders", 3000).await;
    let expected = plain_log(&client, "orders").await;
    assert!(expected.len() > 2 << 20);

    let window = 256 << 10;
    let conn = client.connection().await.unwrap();
    let mut stream = FetchStream::open(conn, "orders", 0, 0, &fixed_window(window))
        .await
        .unwrap();
    let mut got = BytesMut::new();
    let mut granted = u64::from(window);
    let mut largest_batch = 0;
    while got.len() < expected.len() {
        // Read without granting: the node stops at the credit (give or take the one batch
        // that may straddle it), however much more the partition holds.
        loop {
            let next = tokio::time::timeout(Duration::from_millis(700), stream.next()).await;
            let Ok(piece) = next else { break };
            let piece = piece.unwrap();
            for b in split_batches(piece.batches.clone(), &DecodeLimits::default()).unwrap() {
                largest_batch = largest_batch.max(b.size_bytes());
            }
            got.extend_from_slice(&piece.batches);
            assert!(
                got.len() as u64 <= granted + largest_batch as u64,
                "{} bytes arrived on {granted} of credit",
                got.len()
            );
            if got.len() == expected.len() {
                break;
            }
        }
        if got.len() < expected.len() {
            assert!(
                got.len() as u64 + 2 * largest_batch as u64 >= granted,
                "the node stopped at {} bytes with {granted} granted",
                got.len()
            );
        }
        let next_offset = split_batches(got.clone().freeze(), &DecodeLimits::default())
            .unwrap()
            .last()
            .map_or(0, |b| b.next_offset().0);
        stream.grant(next_offset).await.unwrap();
        granted = got.len() as u64 + u64::from(window);
    }
    assert_eq!(
        &got[..],
        &expected[..],
        "the stream returns the log as stored"
    );

    // Caught up: the node says every max_wait that nothing is new, and what the end is.
    let idle = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(idle.batches.is_empty());
    assert_eq!(idle.high_watermark, 3000);
    // New records reach the open stream without asking again.
    produce(&client, "orders", 5).await;
    let mut fresh = 0;
    while fresh < 5 {
        let piece = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap();
        for b in split_batches(piece.batches, &DecodeLimits::default()).unwrap() {
            assert!(b.base_offset().0 >= 3000);
            fresh += b.record_count();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_the_cause_of_an_error() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("orders", 1, vec![])
        .await
        .unwrap();
    produce(&client, "orders", 10).await;
    let opts = FetchStreamOptions::default();
    let conn = client.connection().await.unwrap();

    let mut missing = FetchStream::open(conn.clone(), "missing", 0, 0, &opts)
        .await
        .unwrap();
    let e = missing.next().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UNKNOWN_TOPIC), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");

    let mut beyond = FetchStream::open(conn.clone(), "orders", 0, 99, &opts)
        .await
        .unwrap();
    let e = beyond.next().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE), "{e}");

    // Credit outside a stream is refused by name, and the connection goes on serving.
    let e = client
        .call(
            &Request::FetchCredit {
                bytes: 1,
                stored: 0,
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::INVALID_REQUEST), "{e}");
    assert!(e.to_string().contains("fetch_credit"), "{e}");
    let mut good = FetchStream::open(conn, "orders", 0, 0, &opts)
        .await
        .unwrap();
    assert!(!good.next().await.unwrap().batches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_nobody_reads_do_not_hold_up_the_node() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // A small memory budget per connection, and a short deadline for unread answers.
    let node = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("data"),
        "[limits]\nconnection_memory_bytes_max = 8388608\nanswer_write_stall_ms = 2000\n",
    );
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("orders", 1, vec![])
        .await
        .unwrap();
    produce(&client, "orders", 20_000).await;
    // Twenty streams with 64 MiB of credit each on one connection, never read.
    let lazy = pki.client(&node.address);
    let conn = lazy.connection().await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        let opts = FetchStreamOptions {
            window_min: 64 << 20,
            window_max: 64 << 20,
            ..FetchStreamOptions::default()
        };
        idle.push(
            FetchStream::open(conn.clone(), "orders", 0, 0, &opts)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Other clients are served promptly meanwhile.
    for _ in 0..3 {
        let started = std::time::Instant::now();
        produce(&client, "orders", 1).await;
        let fetch = Request::Fetch {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 4 << 20,
        };
        let (answer, payload) = client.call(&fetch, &[]).await.unwrap();
        assert!(matches!(answer, Response::Fetched { .. }) && !payload.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "served in {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The streams nobody read were cut off by the node.
    let mut reset = 0;
    for mut s in idle {
        // A stream the node kept going ends in an empty piece once read to the end.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
                Ok(Ok(piece)) if !piece.batches.is_empty() => continue,
                Ok(Err(_)) => {
                    reset += 1;
                    break;
                }
                _ => break,
            }
        }
    }
    assert!(reset > 0, "no unread stream was reset");
}
