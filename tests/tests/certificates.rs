//! Certificate lifecycle over real QUIC + rustls: every kind of bad certificate is refused
//! with its reason on both sides; CRLs are honoured and fail closed when stale; a node's files
//! are replaced while a consumer streams and new connections see the new certificate; a broken
//! file keeps the old one; flows pick up a rotated identity; expiring certificates are flagged.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use strait_certs::Role;
use strait_protocol::client::{ClientError, ClientOptions, Connection};
use strait_protocol::message::{Request, Response};
use strait_protocol::{Acks, BatchBuilder};
use strait_tests::{free_tcp_port, http_get, strait, strait_bin, NodeProcess, Pki};
use time::OffsetDateTime;

fn config(pki: &Pki, admin_port: u16) -> String {
    format!(
        "admin_listen = \"127.0.0.1:{admin_port}\"\n[security]\ncrl = \"{}\"\ncert_reload_interval_ms = 200\ncert_expiry_warning_days = 400\n",
        pki.path("ca.crl").display()
    )
}

async fn connect(address: &str, tls: rustls::ClientConfig) -> Result<Connection, ClientError> {
    let mut opts = ClientOptions::new(vec![address.into()], tls);
    opts.connect_timeout = Duration::from_secs(3);
    opts.request_timeout = Duration::from_secs(3);
    Connection::connect(address, &opts).await
}

fn tls(pki: &Pki, name: &str) -> rustls::ClientConfig {
    strait_certs::client_config(
        &pki.ca(),
        &pki.path(&format!("{name}.crt")),
        &pki.path(&format!("{name}.key")),
    )
    .unwrap()
}

async fn refused(address: &str, tls: rustls::ClientConfig, expect: &str) -> String {
    let err = connect(address, tls)
        .await
        .err()
        .expect("connection refused");
    let text = err.to_string();
    assert!(text.contains(expect), "expected {expect:?} in: {text}");
    text
}

fn wait_for_log(node: &NodeProcess, needle: &str, after: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node
        .log_lines()
        .iter()
        .skip(after)
        .any(|l| l.contains(needle))
    {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in log: {:#?}",
            node.log_lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn peer_cert(conn: &Connection) -> CertificateDer<'static> {
    conn.quic()
        .peer_identity()
        .unwrap()
        .downcast::<Vec<CertificateDer<'static>>>()
        .unwrap()[0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_certificate_is_refused_with_its_reason_and_a_stale_crl_fails_closed() {
    let pki = Pki::new();
    strait_certs::write_crl(pki.dir.path(), 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = free_tcp_port();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), &config(&pki, admin));
    let addr = node.address.clone();
    connect(&addr, pki.client_tls("app")).await.unwrap();

    // No certificate.
    let anonymous = strait_certs::client_config_without_identity(&pki.ca()).unwrap();
    refused(&addr, anonymous, "none was sent").await;
    // Another CA.
    let other = Pki::new();
    let foreign =
        strait_certs::client_config(&pki.ca(), &other.path("app.crt"), &other.path("app.key"))
            .unwrap();
    refused(&addr, foreign, "not signed by a CA the node trusts").await;
    // Expired, and not yet valid.
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    strait_certs::issue_with_validity(
        pki.dir.path(),
        "old",
        Role::Client,
        &[],
        now - 30 * day,
        now - day,
    )
    .unwrap();
    strait_certs::issue_with_validity(
        pki.dir.path(),
        "early",
        Role::Client,
        &[],
        now + day,
        now + 30 * day,
    )
    .unwrap();
    refused(&addr, tls(&pki, "old"), "expired or is not valid yet").await;
    refused(&addr, tls(&pki, "early"), "expired or is not valid yet").await;
    // Revoked by the CRL (the node notices the new CRL by itself).
    strait_certs::issue(pki.dir.path(), "gone", Role::Client, &[]).unwrap();
    connect(&addr, tls(&pki, "gone")).await.unwrap();
    let seen = node.log_lines().len();
    strait(&[
        "certs",
        "revoke",
        "--dir",
        pki.dir.path().to_str().unwrap(),
        "--name",
        "gone",
    ]);
    wait_for_log(&node, "TLS certificates reloaded", seen);
    refused(&addr, tls(&pki, "gone"), "revoked").await;
    connect(&addr, pki.client_tls("app")).await.unwrap();

    // The node logged every reason (each refusal is logged as it happens: wait for the
    // lines, not for a time), and counts them.
    for reason in [
        "peer sent no certificates",
        "BadSignature",
        "certificate expired",
        "certificate not valid yet",
        "Revoked",
    ] {
        wait_for_log(&node, reason, 0);
    }
    let metrics = http_get(&format!("127.0.0.1:{admin}"), "/metrics");
    for reason in [
        "no_certificate",
        "unknown_ca",
        "expired",
        "not_yet_valid",
        "revoked",
    ] {
        assert!(
            metrics.contains(&format!(
                "strait_tls_handshake_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    // Certificates valid for a year are within the 400-day warning window.
    assert!(
        metrics.contains("strait_certificate_expiring{certificate=\"node\""),
        "{metrics}"
    );
    wait_for_log(&node, "certificate expires soon", 0);

    // A CRL past its next update refuses everyone until it is re-signed.
    let seen = node.log_lines().len();
    strait_certs::write_crl_valid(
        pki.dir.path(),
        OffsetDateTime::now_utc() - time::Duration::minutes(1),
    )
    .unwrap();
    wait_for_log(&node, "TLS certificates reloaded", seen);
    refused(
        &addr,
        pki.client_tls("app"),
        "the node refused this client's certificate",
    )
    .await;
    let seen = node.log_lines().len();
    strait(&["certs", "crl", "--dir", pki.dir.path().to_str().unwrap()]);
    wait_for_log(&node, "TLS certificates reloaded", seen);
    connect(&addr, pki.client_tls("app")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_serve_as_a_node() {
    let pki = Pki::new();
    // The node refuses to start with it, naming the fix.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(strait_bin())
        .args([
            "node",
            "run",
            "--cluster",
            "east",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(pki.path("app.crt"))
        .arg("--key")
        .arg(pki.path("app.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("issued for role client, not node") && err.contains("--role node"),
        "{err}"
    );

    // A would-be node that serves with it anyway is refused by clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls =
        strait_certs::server_config(&pki.ca(), &pki.path("app.crt"), &pki.path("app.key")).unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let rogue = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = rogue.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Some(incoming) = rogue.accept().await {
            tokio::spawn(async move {
                if let Err(e) = incoming.await {
                    eprintln!("rogue node: handshake failed: {e}");
                }
            });
        }
    });
    let err = refused(&addr, pki.client_tls("app"), "not valid for a server").await;
    assert!(
        err.contains("this client refused the node's certificate"),
        "{err}"
    );
}

fn one_record(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new(Default::default());
    b.push(1, None, Some(value), &[]);
    b.finish().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_node_certificate_keeps_streams_and_new_connections_see_it() {
    let pki = Pki::new();
    strait_certs::write_crl(pki.dir.path(), 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("data"),
        &config(&pki, free_tcp_port()),
    );
    let addr = node.address.clone();
    let admin = strait_protocol::client::Admin::new(pki.client(&addr));
    admin.create_topic("t", 1, vec![]).await.unwrap();

    // A consumer long-polls on one connection for the whole test; a producer writes steadily.
    let stream_conn = Arc::new(connect(&addr, pki.client_tls("app")).await.unwrap());
    let old_cert = peer_cert(&stream_conn);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (conn, stop) = (stream_conn.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let fetch = Request::Fetch {
                    topic: "t".into(),
                    partition: 0,
                    offset: next,
                    max_wait_ms: 200,
                    min_bytes: 1,
                    max_bytes: 1 << 20,
                };
                match conn
                    .request(&fetch, &[])
                    .await
                    .expect("the stream never breaks")
                {
                    (Response::Fetched { high_watermark, .. }, _) => next = high_watermark,
                    (other, _) => panic!("{other:?}"),
                }
            }
            next
        })
    };
    let produced_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (conn, stop, counter) = (
            Arc::new(connect(&addr, pki.client_tls("app")).await.unwrap()),
            stop.clone(),
            produced_so_far.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let produce = Request::Produce {
                    topic: "t".into(),
                    partition: 0,
                    acks: Acks::All,
                };
                conn.request(&produce, &[one_record(format!("r{n}").as_bytes())])
                    .await
                    .expect("producing never breaks");
                n += 1;
                counter.store(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    // Traffic flows before the certificates change: wait for some, not for a time.
    produced_at_least(&produced_so_far, 10).await;

    // A broken certificate file keeps the old certificate, and says why.
    let seen = node.log_lines().len();
    let good = std::fs::read(pki.path("node-1.crt")).unwrap();
    std::fs::write(
        pki.path("node-1.crt"),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    wait_for_log(&node, "keeping the previous certificates", seen);
    assert_eq!(
        peer_cert(&connect(&addr, pki.client_tls("app")).await.unwrap()),
        old_cert
    );
    std::fs::write(pki.path("node-1.crt"), good).unwrap();

    // Rotation: new connections get the new certificate; the streams go on.
    let seen = node.log_lines().len();
    strait(&[
        "certs",
        "rotate",
        "--dir",
        pki.dir.path().to_str().unwrap(),
        "--name",
        "node-1",
        "--days",
        "90",
    ]);
    wait_for_log(&node, "TLS certificates reloaded", seen);
    let new_cert = strait_certs::load_certs(&pki.path("node-1.crt")).unwrap()[0].clone();
    assert_ne!(new_cert, old_cert);
    let fresh = connect(&addr, pki.client_tls("app")).await.unwrap();
    assert_eq!(
        peer_cert(&fresh),
        new_cert,
        "new connections see the new certificate"
    );
    assert_eq!(
        peer_cert(&stream_conn),
        old_cert,
        "the open stream keeps its session"
    );

    // SIGHUP reloads at once.
    let seen = node.log_lines().len();
    std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    wait_for_log(&node, "reloaded (on request (SIGHUP))", seen);

    // Producing goes on over the same connection after every reload.
    let after_reloads = produced_so_far.load(std::sync::atomic::Ordering::Relaxed);
    produced_at_least(&produced_so_far, after_reloads + 10).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.await.unwrap();
    let consumed = consumer.await.unwrap();
    assert!(produced > 20, "{produced}");
    assert!(
        consumed + 10 >= produced,
        "consumer kept up: {consumed} of {produced}"
    );
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_client_picks_up_its_rotated_identity() {
    let pki = Pki::new();
    strait_certs::write_crl(pki.dir.path(), 7).unwrap();
    strait_certs::issue(pki.dir.path(), "flow", Role::Mirror, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("data"),
        &config(&pki, free_tcp_port()),
    );
    // The config mirror flows use, built once.
    let reloading = strait_certs::reloading_client_config(
        &pki.ca(),
        &pki.path("flow.crt"),
        &pki.path("flow.key"),
    )
    .unwrap();
    connect(&node.address, reloading.clone()).await.unwrap();
    std::fs::copy(pki.path("flow.crt"), pki.path("flow-old.crt")).unwrap();
    std::fs::copy(pki.path("flow.key"), pki.path("flow-old.key")).unwrap();
    // Rotate and revoke the old certificate: only the new identity can still connect.
    let seen = node.log_lines().len();
    let out = strait(&[
        "certs",
        "rotate",
        "--dir",
        pki.dir.path().to_str().unwrap(),
        "--name",
        "flow",
        "--revoke-old",
        "--json",
    ]);
    assert!(out.contains("old_serial"), "{out}");
    wait_for_log(&node, "TLS certificates reloaded", seen);
    refused(&node.address, tls(&pki, "flow-old"), "revoked").await;
    // The reloading config picks the new files up at a later handshake (it notices a change
    // by modification time): retry until it presents them, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let conn = loop {
        tick.tick().await;
        match connect(&node.address, reloading.clone()).await {
            Ok(conn) => break conn,
            Err(e) => assert!(Instant::now() < deadline, "never reconnected: {e}"),
        }
    };
    assert_eq!(conn.hello.principal, "flow");
}

/// Waits until `counter` reaches `n` (a background writer's progress), within a deadline.
async fn produced_at_least(counter: &std::sync::atomic::AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while counter.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the writer never reached {n}");
        tick.tick().await;
    }
}
