//! Flows run inside a node (the gateway of its cluster) and are managed at run time with
//! `strait mirror add|remove` (over QUIC with mutual TLS and ACLs) and watched with `strait
//! mirror status` (the read-only admin listener): new partitions are followed, deleted source
//! topics are reported, only mirror principals may append copies, and runtime changes survive a
//! restart.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use serde_json::Value;
use strait_protocol::client::{Admin, Producer, ProducerConfig};
use strait_protocol::message::Request;
use strait_protocol::{BatchBuilder, Compression, ErrorCode, OffsetSpec};
use strait_tests::{free_tcp_port, free_udp_port, strait, NodeProcess, Pki};

fn status(admin: &str) -> Value {
    serde_json::from_str(&strait(&["mirror", "status", "--admin", admin, "--json"])).unwrap()
}

/// Polls `strait mirror status --json` until `check` holds.
fn wait_status(admin: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(admin);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never showed: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn partition<'a>(s: &'a Value, topic: &str, p: u64) -> Option<&'a Value> {
    s["flows"][0]["partitions"]
        .as_array()?
        .iter()
        .find(|x| x["source_topic"] == topic && x["partition"] == p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_managed_at_run_time_and_follow_the_source() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), "");
    let admin_port = free_tcp_port();
    let west_port = free_udp_port();
    let west_config = format!("admin_listen = \"127.0.0.1:{admin_port}\"\n");
    let mut west = NodeProcess::start_on(
        &pki,
        "west",
        &dir.path().join("west"),
        &west_config,
        west_port,
    );
    let admin = format!("127.0.0.1:{admin_port}");
    let source = pki.client(&east.address);
    let target = pki.client(&west.address);
    let east_admin = Admin::new(source.clone());
    east_admin.create_topic("orders", 2, vec![]).await.unwrap();
    east_admin.create_topic("events", 1, vec![]).await.unwrap();
    let producer = Producer::new(source.clone(), ProducerConfig::default());
    for i in 0..100u32 {
        producer
            .send("orders", Some(i % 2), None, Some(&i.to_le_bytes()), &[])
            .await
            .unwrap();
    }
    producer
        .send("events", Some(0), None, Some(b"e"), &[])
        .await
        .unwrap();
    producer.flush().await;

    let spec = dir.path().join("flow.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders|events\"\nrefresh_ms = 300\n",
            east.address
        ),
    )
    .unwrap();
    let spec_arg = spec.to_str().unwrap();
    let ca = pki.ca().display().to_string();
    let cert = pki.path("app.crt").display().to_string();
    let key = pki.path("app.key").display().to_string();
    let identity = [
        "--ca",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    let add = [
        &["mirror", "add", "--admin", &admin, "--spec", spec_arg][..],
        &identity,
    ]
    .concat();
    let out = strait(&add);
    assert!(out.contains("running"), "{out}");
    let again = strait(&add);
    assert!(
        again.contains("nothing changed"),
        "adding twice is idempotent: {again}"
    );

    let s = wait_status(&admin, "both orders partitions caught up", |s| {
        (0..2).all(|p| {
            partition(s, "orders", p).is_some_and(|x| {
                x["state"] == "caught-up" && x["mirrored_offset"] == 50 && x["lag_records"] == 0
            })
        })
    });
    let flow = &s["flows"][0];
    assert_eq!(flow["source_cluster"], "east");
    assert_eq!(flow["target_cluster"], "west");
    assert_eq!(flow["connected"], true);
    assert_eq!(
        partition(&s, "orders", 0).unwrap()["target_topic"],
        "east.orders"
    );
    let s = wait_status(&admin, "a heartbeat latency", |s| {
        s["flows"][0]["heartbeat"]["latency_ms"].as_i64().is_some()
    });
    let latency = s["flows"][0]["heartbeat"]["latency_ms"].as_i64().unwrap();
    assert!(
        (0..5000).contains(&latency),
        "heartbeat latency {latency} ms"
    );
    let human = strait(&["mirror", "status", "--admin", &admin]);
    assert!(
        human.contains("east-to-west") && human.contains("caught-up"),
        "{human}"
    );

    // The source grows a partition: the mirror follows within a refresh.
    strait(&[
        "topic",
        "alter",
        "orders",
        "--partitions",
        "3",
        "--bootstrap",
        &east.address,
        "--ca",
        pki.ca().to_str().unwrap(),
        "--cert",
        pki.path("app.crt").to_str().unwrap(),
        "--key",
        pki.path("app.key").to_str().unwrap(),
    ]);
    producer
        .send("orders", Some(2), None, Some(b"new"), &[])
        .await
        .unwrap();
    producer.flush().await;
    let west_admin = Admin::new(target.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while west_admin
        .list_offset("east.orders", 2, OffsetSpec::Latest)
        .await
        .map(|(o, _)| o)
        .unwrap_or(0)
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the new partition was never mirrored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A deleted source topic is reported, and its copy is kept.
    wait_status(&admin, "events copied", |s| {
        partition(s, "events", 0).is_some_and(|x| x["mirrored_offset"] == 1)
    });
    east_admin.delete_topic("events").await.unwrap();
    let s = wait_status(&admin, "the deletion", |s| {
        s["flows"][0]["deleted_source_topics"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "events"))
    });
    assert_eq!(
        partition(&s, "events", 0).unwrap()["state"],
        "source-deleted"
    );
    assert!(
        west_admin.describe_topic("east.events").await.is_ok(),
        "the copy is kept"
    );

    // Only mirror principals append copies: a client certificate is refused.
    let mut b = BatchBuilder::new(Compression::None);
    b.push(0, None, Some(b"forged"), &[]);
    let forged = Request::MirrorAppend {
        topic: "east.orders".into(),
        partition: 0,
        provenance: vec![Default::default()],
    };
    let err = target
        .call(&forged, &[b.finish().into_bytes()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNAUTHORIZED), "{err}");
    assert!(err.to_string().contains("--role mirror"), "{err}");

    // A flow added at run time survives a restart of its node.
    assert!(west.terminate());
    let west = NodeProcess::start_on(
        &pki,
        "west",
        &dir.path().join("west"),
        &west_config,
        west_port,
    );
    let s = wait_status(&admin, "the flow after a restart", |s| {
        s["flows"][0]["connected"] == true
    });
    assert_eq!(s["flows"][0]["name"], "east-to-west");

    // Removed, it stops copying; removed stays removed across a restart.
    let out = strait(&[
        "mirror",
        "remove",
        "--admin",
        &admin,
        "--flow",
        "east-to-west",
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(status(&admin)["flows"].as_array().unwrap().len(), 0);
    producer
        .send("orders", Some(0), None, Some(b"late"), &[])
        .await
        .unwrap();
    producer.flush().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let target = pki.client(&west.address);
    let (end, _) = Admin::new(target)
        .list_offset("east.orders", 0, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(end, 50, "nothing copied after removal");
}

/// Sends one HTTP request with a body to the admin listener; answers the status line.
fn http_status(address: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// The admin HTTP listener changes nothing: the mutating endpoints of old are gone (flows,
/// promotion, failback), while the same operations over QUIC are checked against the ACLs and
/// a principal without the grant is refused with the rule it lacks named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_is_read_only_and_changes_need_the_acl() {
    let pki = Pki::new();
    pki.client_tls("admin");
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_tcp_port();
    let config = format!(
        "admin_listen = \"127.0.0.1:{admin_port}\"\n[security]\nauthorization = true\nsuperusers = [\"admin\"]\n"
    );
    let node = NodeProcess::start(&pki, "west", &dir.path().join("west"), &config);
    let admin = format!("127.0.0.1:{admin_port}");
    let flow = r#"{"name":"f","source_bootstrap":["127.0.0.1:1"],"topics":"orders"}"#;
    for (method, path) in [
        ("POST", "/flows"),
        ("PUT", "/flows/f"),
        ("DELETE", "/flows/f"),
        ("POST", "/flows/f/promote"),
        ("POST", "/topics/orders/failback"),
    ] {
        let status = http_status(&admin, method, path, flow);
        assert!(
            status.contains(" 404 ") || status.contains(" 405 "),
            "{method} {path} must be gone: {status}"
        );
    }
    assert!(http_status(&admin, "GET", "/flows", "").contains(" 200 "));

    let spec = dir.path().join("flow.toml");
    std::fs::write(
        &spec,
        "name = \"f\"\nsource_bootstrap = [\"127.0.0.1:1\"]\ntopics = \"orders\"\n",
    )
    .unwrap();
    let as_principal = |name: &str| {
        vec![
            "--ca".to_string(),
            pki.ca().display().to_string(),
            "--cert".to_string(),
            pki.path(&format!("{name}.crt")).display().to_string(),
            "--key".to_string(),
            pki.path(&format!("{name}.key")).display().to_string(),
        ]
    };
    let base = [
        "mirror",
        "add",
        "--admin",
        admin.as_str(),
        "--spec",
        spec.to_str().unwrap(),
    ];
    let app = as_principal("app");
    let app: Vec<&str> = app.iter().map(String::as_str).collect();
    let refused = strait_tests::strait_fails(&[&base[..], &app].concat());
    assert!(
        refused.contains("may not alter the cluster")
            && refused.contains("strait acl add --principal app --operation alter --cluster"),
        "refused with the missing rule named: {refused}"
    );
    let without = strait_tests::strait_fails(&base);
    assert!(
        without.contains("--cert"),
        "asks for an identity: {without}"
    );
    let operator = as_principal("admin");
    let operator: Vec<&str> = operator.iter().map(String::as_str).collect();
    let out = strait(&[&base[..], &operator].concat());
    assert!(out.contains("running"), "{out}");
    let promote = strait_tests::strait_fails(
        &[
            &[
                "mirror", "promote", "--flow", "f", "--admin", &admin, "--json",
            ][..],
            &app,
        ]
        .concat(),
    );
    assert!(promote.contains("may not"), "{promote}");
    drop(node);
}
