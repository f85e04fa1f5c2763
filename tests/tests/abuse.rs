//! Hostile peers against one node over real QUIC + rustls: each attack is cut off, the node's
//! memory stays bounded, and a well-behaved client beside it keeps producing. Prints one line
//! per attack: how it was cut off, the node's peak RSS growth, and the good client's
//! throughput during the attack against its throughput just before it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_protocol::client::{Admin, ClientOptions, Connection};
use strait_protocol::message::{Request, Response};
use strait_protocol::{Acks, BatchBuilder, Compression, ErrorCode};
use strait_tests::{free_tcp_port, http_get, NodeProcess, Pki};

fn config(admin: u16) -> String {
    format!(
        r#"admin_listen = "127.0.0.1:{admin}"
[limits]
frame_bytes_max = 4194304
request_read_timeout_ms = 1000
handshake_timeout_ms = 2000
streams_per_connection_max = 256
pending_handshakes_max = 128
connections_per_ip_max = 64
"#
    )
}

async fn connect(pki: &Pki, address: &str) -> Connection {
    let mut opts = ClientOptions::new(vec![address.into()], pki.client_tls("app"));
    opts.request_timeout = Duration::from_secs(10);
    Connection::connect(address, &opts).await.unwrap()
}

fn batch_of(n: usize, size: usize, compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(compression);
    let value = vec![7u8; size];
    for _ in 0..n {
        b.push(1, None, Some(&value), &[]);
    }
    b.finish().into_bytes()
}

/// The well-behaved client: produces 64 KiB batches on its own connection until stopped,
/// counting acknowledged bytes.
struct Good {
    bytes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Good {
    async fn start(pki: &Pki, address: &str) -> Good {
        let conn = connect(pki, address).await;
        let (bytes, errors, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let batch = batch_of(64, 1000, Compression::None);
        let (b, e, s) = (bytes.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let produce = Request::Produce {
                topic: "good".into(),
                partition: 0,
                acks: Acks::Leader,
            };
            while !s.load(Ordering::Relaxed) {
                match conn.request(&produce, std::slice::from_ref(&batch)).await {
                    Ok((Response::Produced { .. }, _)) => {
                        b.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("good client error: {other:?}");
                        e.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Good {
            bytes,
            errors,
            stop,
            task,
        }
    }

    /// MB/s over the next `window`.
    async fn rate(&self, window: Duration) -> f64 {
        let before = self.bytes.load(Ordering::Relaxed);
        tokio::time::sleep(window).await;
        (self.bytes.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64() / 1e6
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.errors.load(Ordering::Relaxed)
    }
}

/// 10,000 QUIC Initials (each a real TLS ClientHello) from ten loopback addresses
/// (127.0.0.2–11), never followed up.
fn half_open_flood(server: SocketAddr, tls: rustls::ClientConfig) -> usize {
    let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap());
    let mut sent = 0;
    for source in 2..12 {
        let socket = UdpSocket::bind(format!("127.0.0.{source}:0")).unwrap();
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        for _ in 0..1000 {
            let config = quinn_proto::ClientConfig::new(crypto.clone());
            let (_, mut conn) = endpoint
                .connect(Instant::now(), config, server, "localhost")
                .unwrap();
            let mut buf = Vec::new();
            if let Some(t) = conn.poll_transmit(Instant::now(), 1, &mut buf) {
                socket.send_to(&buf[..t.size], server).unwrap();
                sent += 1;
            }
        }
    }
    sent
}

struct Report {
    node: NodeProcess,
    admin: String,
    started: Instant,
}

impl Report {
    /// Starts the node under attack with `config`, reporting from now.
    fn start(pki: &Pki, dir: &tempfile::TempDir, admin_port: u16, config: &str) -> Report {
        let node = NodeProcess::start(pki, "east", &dir.path().join("data"), config);
        Report {
            node,
            admin: format!("127.0.0.1:{admin_port}"),
            started: Instant::now(),
        }
    }

    fn address(&self) -> String {
        self.node.address.clone()
    }

    fn rss(&self) -> (u64, u64) {
        self.node.rss_kib()
    }

    fn line(&self, attack: &str, outcome: &str, rss_before: u64, before: f64, during: f64) -> f64 {
        let peak = self.rss().1;
        let growth = peak.saturating_sub(rss_before) as f64 / 1024.0;
        println!(
            "[{:>5.1}s] {attack:<28} {outcome:<58} peak RSS +{growth:>6.1} MiB   good client {during:>7.1} MB/s vs {before:>7.1} before ({:.2})",
            self.started.elapsed().as_secs_f64(),
            during / before.max(0.001),
        );
        assert!(
            growth < 256.0,
            "{attack}: node memory grew by {growth:.1} MiB"
        );
        assert!(self.node_running(), "{attack}: the node died");
        growth
    }

    fn node_running(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.node.pid())).exists()
    }

    fn metric(&self, name: &str) -> String {
        http_get(&self.admin, "/metrics")
            .lines()
            .filter(|l| l.starts_with(name))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_cut_off_and_a_good_client_keeps_going() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_tcp_port();
    let report = Report::start(&pki, &dir, admin_port, &config(admin_port));
    let address = report.address();
    let admin = Admin::new(pki.client(&address));
    admin.create_topic("good", 1, vec![]).await.unwrap();
    admin.create_topic("bombs", 1, vec![]).await.unwrap();
    let good = Good::start(&pki, &address).await;
    good.rate(Duration::from_millis(500)).await; // warm up
    let server: SocketAddr = address.parse().unwrap();

    // 1. Half-open handshakes.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let tls = pki.client_tls("app");
    let flood = tokio::task::spawn_blocking(move || half_open_flood(server, tls));
    let during = good.rate(Duration::from_secs(1)).await;
    let sent = flood.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = report.metric("strait_security_events_total");
    assert!(
        events.contains("limit_pending_handshakes") && events.contains("limit_connections_per_ip"),
        "the flood hit the per-address and pending-handshake limits: {events}"
    );
    report.line(
        "10k half-open handshakes",
        &format!("{sent} sent from 10 IPs; 64/IP, 128 pending, rest retried"),
        rss,
        before,
        during,
    );

    // 2. Thousands of streams on one connection, each sending half a frame prefix.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let attacker = connect(&pki, &address).await;
    let quic = attacker.quic().clone();
    let opened = Arc::new(AtomicU64::new(0));
    let timed_out = Arc::new(AtomicU64::new(0));
    let streams = {
        let (opened, timed_out) = (opened.clone(), timed_out.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..2000 {
                let Ok(Ok((mut send, mut recv))) =
                    tokio::time::timeout(Duration::from_secs(3), quic.open_bi()).await
                else {
                    break;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let timed_out = timed_out.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = send.write_all(&[1, 0]).await;
                    if let Ok((Response::Error(e), _)) =
                        strait_protocol::client::conn::read_frame::<Response>(
                            &mut recv,
                            &Default::default(),
                        )
                        .await
                    {
                        if e.code == ErrorCode::TIMEOUT {
                            timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    let during = good.rate(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(120), streams).await;
    let (o, t) = (
        opened.load(Ordering::Relaxed),
        timed_out.load(Ordering::Relaxed),
    );
    assert!(
        t > 256,
        "streams were cut off by the read deadline: {t} of {o}"
    );
    report.line(
        "thousands of streams",
        &format!("{o} opened, at most 256 at once, {t} cut off after 1 s"),
        rss,
        before,
        during,
    );

    // 3. Slowloris: one byte of a frame every 300 ms.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let conn = connect(&pki, &address).await;
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        let frame = strait_protocol::frame::encode(&Request::ListGroups {}, 0).unwrap();
        for byte in frame.iter() {
            if send.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let during = good.rate(Duration::from_millis(800)).await;
    let answer =
        strait_protocol::client::conn::read_frame::<Response>(&mut recv, &Default::default()).await;
    let took = started.elapsed();
    drip.abort();
    match answer {
        Ok((Response::Error(e), _)) => assert_eq!(e.code, ErrorCode::TIMEOUT, "{e}"),
        other => panic!("slowloris not cut off: {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
    report.line(
        "slowloris stream",
        &format!(
            "cut off after {:.1} s with a timeout error",
            took.as_secs_f64()
        ),
        rss,
        before,
        during,
    );

    // 4. A frame header claiming 4 GiB, then one whose header alone claims 4 GiB.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    for prefix in [
        [8u8, 0, 0, 0, 255, 255, 255, 255],
        [255, 255, 255, 255, 0, 0, 0, 0],
    ] {
        let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
        send.write_all(&prefix).await.unwrap();
        let (resp, _) =
            strait_protocol::client::conn::read_frame::<Response>(&mut recv, &Default::default())
                .await
                .unwrap();
        match resp {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::FRAME_TOO_LARGE, "{e}"),
            other => panic!("4 GiB frame accepted: {other:?}"),
        }
    }
    let during = good.rate(Duration::from_millis(500)).await;
    report.line(
        "frame claiming 4 GiB",
        "frame_too_large before any allocation",
        rss,
        before,
        during,
    );

    // 5. Bombs: 128 MiB of zeros in a few KiB. A zstd frame that declares its size is
    // refused before it is stored; one that declares nothing (and a gzip bomb, which never
    // can) is stored as it came, since the node never decompresses on produce, and a reader
    // stops at its bound and names it.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let zeros = vec![0u8; 128 << 20];
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(1, None, Some(&zeros), &[]);
    let honest = b.finish().into_bytes();
    let ratio = (128 << 20) as f64 / honest.len() as f64;
    let mut b = BatchBuilder::new(Compression::Gzip);
    b.push(1, None, Some(&zeros), &[]);
    let gzip = b.finish().into_bytes();
    drop(zeros);
    let produce = Request::Produce {
        topic: "bombs".into(),
        partition: 0,
        acks: Acks::All,
    };
    let err = conn.request(&produce, &[honest]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CORRUPT_BATCH), "{err}");
    assert!(err.to_string().contains("decompress"), "{err}");
    let d = admin.describe_topic("bombs").await.unwrap();
    assert_eq!(
        d.partitions[0].end_offset, 0,
        "the declared bomb was not stored"
    );
    conn.request(&produce, &[gzip]).await.unwrap();
    let fetch = Request::Fetch {
        topic: "bombs".into(),
        partition: 0,
        offset: 0,
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
    };
    let (_, payload) = conn.request(&fetch, &[]).await.unwrap();
    let stored = strait_protocol::batch::split_batches(payload, &Default::default()).unwrap();
    let err = stored[0].records(64 << 20).unwrap_err();
    assert!(
        err.to_string().contains("max.batch.decompressed.bytes"),
        "{err}"
    );
    let during = good.rate(Duration::from_millis(500)).await;
    report.line(
        "zstd and gzip bombs",
        &format!("{ratio:.0}x zstd refused on produce; gzip stored, refused at 64 MiB when read"),
        rss,
        before,
        during,
    );

    // 6. Random bytes after a valid hello: the connection is closed after 32 bad frames.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let garbage_conn = connect(&pki, &address).await;
    let quic = garbage_conn.quic().clone();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut answered = 0;
    for _ in 0..200 {
        let Ok((mut send, mut recv)) = quic.open_bi().await else {
            break;
        };
        let noise: Vec<u8> = (0..256)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if send.write_all(&noise).await.is_err() {
            break;
        }
        let _ = send.finish();
        if strait_protocol::client::conn::read_frame::<Response>(&mut recv, &Default::default())
            .await
            .is_ok()
        {
            answered += 1;
        }
    }
    let during = good.rate(Duration::from_millis(500)).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), quic.closed())
        .await
        .is_ok();
    assert!(closed, "the garbage connection was closed");
    assert!(answered <= 40, "{answered}");
    report.line(
        "random bytes after hello",
        &format!("{answered} errors answered, then the connection closed"),
        rss,
        before,
        during,
    );

    let errors = good.stop().await;
    assert_eq!(errors, 0, "the good client never saw an error");
    println!(
        "limits hit: {}",
        report.metric("strait_security_events_total")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_byte_quota_is_slowed_and_nobody_else_is() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_tcp_port();
    let config = format!(
        "admin_listen = \"127.0.0.1:{admin_port}\"\n[[quotas.principals]]\nprincipal = \"hog\"\nproduce_bytes_per_sec = 1000000\n"
    );
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), &config);
    let admin = Admin::new(pki.client(&node.address));
    admin.create_topic("good", 1, vec![]).await.unwrap();
    let good = Good::start(&pki, &node.address).await;
    let before = good.rate(Duration::from_secs(1)).await;

    let mut opts = ClientOptions::new(vec![node.address.clone()], pki.client_tls("hog"));
    opts.request_timeout = Duration::from_secs(10);
    let hog = Connection::connect(&node.address, &opts).await.unwrap();
    let batch = batch_of(64, 1000, Compression::None);
    let produce = Request::Produce {
        topic: "good".into(),
        partition: 0,
        acks: Acks::Leader,
    };
    let started = Instant::now();
    let hogging = async {
        let mut sent = 0;
        while sent < 4_000_000 {
            hog.request(&produce, std::slice::from_ref(&batch))
                .await
                .unwrap();
            sent += batch.len();
        }
        sent
    };
    let (sent, during) = tokio::join!(hogging, good.rate(Duration::from_secs(2)));
    let took = started.elapsed();
    let hog_rate = sent as f64 / took.as_secs_f64() / 1e6;
    println!(
        "quota: hog sent {:.1} MB in {:.1} s ({hog_rate:.2} MB/s against a 1 MB/s quota); good client {during:.1} MB/s vs {before:.1} before",
        sent as f64 / 1e6,
        took.as_secs_f64()
    );
    // The bucket starts with one second of credit: 4 MB at 1 MB/s takes at least 3 s.
    assert!(
        took >= Duration::from_millis(2900),
        "the quota held the hog back: {took:?}"
    );
    let metrics = http_get(&format!("127.0.0.1:{admin_port}"), "/metrics");
    assert!(metrics.contains("quota_throttled_produce"), "{metrics}");
    assert_eq!(good.stop().await, 0);
}

/// Two peers that hold resources rather than flood: a reader that asks for large fetches on
/// many streams and never reads the answers (bounded by the connection's memory budget, and
/// reset once an answer stalls past `answer_write_stall_ms`), and a principal over its produce
/// quota on 64 parallel streams (quotas are charged before the work, so parallel streams queue
/// instead of multiplying the rate). Each line of the table gives the node's RSS growth and the
/// good client's throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_and_parallel_streams_over_quota_stay_bounded() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_tcp_port();
    let config = format!(
        "{}answer_write_stall_ms = 2000\nconnection_memory_bytes_max = 67108864\n[[quotas.principals]]\nprincipal = \"hog\"\nproduce_bytes_per_sec = 1000000\n",
        config(admin_port)
    );
    let report = Report::start(&pki, &dir, admin_port, &config);
    let address = report.address();
    let admin = Admin::new(pki.client(&address));
    admin.create_topic("good", 1, vec![]).await.unwrap();
    admin.create_topic("big", 1, vec![]).await.unwrap();
    let filler = connect(&pki, &address).await;
    let big = batch_of(64, 1000, Compression::None);
    let to_big = Request::Produce {
        topic: "big".into(),
        partition: 0,
        acks: Acks::Leader,
    };
    for _ in 0..1500 {
        filler
            .request(&to_big, std::slice::from_ref(&big))
            .await
            .unwrap();
    }
    let good = Good::start(&pki, &address).await;
    good.rate(Duration::from_millis(500)).await; // warm up

    // 7. 64 streams of 32 MiB fetches whose answers are never read.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let sink = connect(&pki, &address).await;
    let quic = sink.quic().clone();
    let mut held = Vec::new();
    for i in 0..64u64 {
        let (mut send, recv) = quic.open_bi().await.unwrap();
        let fetch = Request::Fetch {
            topic: "big".into(),
            partition: 0,
            offset: (i * 1000) % 90_000,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 32 << 20,
        };
        let frame = strait_protocol::frame::encode(&fetch, 0).unwrap();
        send.write_all(&frame).await.unwrap();
        send.finish().unwrap();
        held.push((send, recv)); // never read
    }
    let during = good.rate(Duration::from_secs(4)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !report
        .metric("strait_security_events_total")
        .contains("limit_answer_write_stall")
    {
        assert!(Instant::now() < deadline, "no unread answer was ever reset");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.line(
        "64 fetches never read",
        "64 MiB budget held, unread answers reset after 2 s",
        rss,
        before,
        during,
    );
    drop(held);
    drop(sink);

    // 8. A principal over its 1 MB/s produce quota on 64 parallel streams.
    let (rss, before) = (report.rss().0, good.rate(Duration::from_secs(1)).await);
    let mut opts = ClientOptions::new(vec![address.clone()], pki.client_tls("hog"));
    opts.request_timeout = Duration::from_secs(20);
    let hog = Arc::new(Connection::connect(&address, &opts).await.unwrap());
    let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    // 1 MB a request: 64 of them at once are a minute of quota.
    let batch = batch_of(1000, 1000, Compression::None);
    let started = Instant::now();
    let streams: Vec<_> = (0..64)
        .map(|_| {
            let (hog, sent, refused, stop, batch) = (
                hog.clone(),
                sent.clone(),
                refused.clone(),
                stop.clone(),
                batch.clone(),
            );
            tokio::spawn(async move {
                let produce = Request::Produce {
                    topic: "good".into(),
                    partition: 0,
                    acks: Acks::Leader,
                };
                while !stop.load(Ordering::Relaxed) {
                    match hog.request(&produce, std::slice::from_ref(&batch)).await {
                        Ok(_) => {
                            sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.code() == Some(ErrorCode::THROTTLED) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => panic!("unexpected hog error: {e}"),
                    }
                }
            })
        })
        .collect();
    let during = good.rate(Duration::from_secs(6)).await;
    let took = started.elapsed();
    let hog_bytes = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.abort();
    }
    let hog_rate = hog_bytes as f64 / took.as_secs_f64() / 1e6;
    // One second of burst credit, then 1 MB/s, whatever the number of streams.
    let allowed = 1.0 + took.as_secs_f64();
    assert!(
        (hog_bytes as f64) / 1e6 <= allowed + 0.2,
        "64 streams bypassed the quota: {:.1} MB in {took:?} ({hog_rate:.2} MB/s)",
        hog_bytes as f64 / 1e6
    );
    report.line(
        "64 streams over quota",
        &format!(
            "hog {hog_rate:.2} MB/s against 1 MB/s; {} refused as throttled",
            refused.load(Ordering::Relaxed)
        ),
        rss,
        before,
        during,
    );
    assert_eq!(good.stop().await, 0, "the good client never saw an error");
}
