//! Authorization over real QUIC: every operation without its ACL is refused and reveals
//! nothing; listings show only what a principal may describe; rules added with `strait acl`
//! persist across a restart.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use bytes::Bytes;
use strait_certs::Role;
use strait_protocol::client::{Admin, Client, ClientError, ClientOptions};
use strait_protocol::message::{CommittedOffset, JoinGroup, Request, Response};
use strait_protocol::{Acks, BatchBuilder, ErrorCode, OffsetSpec};
use strait_tests::{strait, NodeProcess, Pki};

const CONFIG: &str = r#"
[security]
authorization = true
superusers = ["admin"]
acls = [
  { principal = "app", operation = "write", resource = "topic", name = "orders" },
  { principal = "app", operation = "read", resource = "topic", name = "orders" },
  { principal = "app", operation = "group", resource = "group", name = "app.", pattern = "prefixed" },
  { principal = "flow", operation = "mirror", resource = "topic", name = "east.", pattern = "prefixed" },
  { principal = "fake-flow", operation = "mirror", resource = "topic", name = "east.", pattern = "prefixed" },
  { principal = "app", operation = "read", resource = "topic", name = "orders.audit", permission = "deny" },
]
"#;

fn client_as(pki: &Pki, node: &NodeProcess, name: &str, role: Role) -> Arc<Client> {
    if !pki.path(&format!("{name}.crt")).exists() {
        strait_certs::issue(pki.dir.path(), name, role, &[]).unwrap();
    }
    Client::new(ClientOptions::new(
        vec![node.address.clone()],
        pki.client_tls(name),
    ))
}

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(Default::default());
    b.push(1, None, Some(value.as_bytes()), &[]);
    b.finish().into_bytes()
}

async fn call(c: &Arc<Client>, req: Request, payload: &[Bytes]) -> Result<Response, ClientError> {
    c.call(&req, payload).await.map(|(r, _)| r)
}

fn refused(r: Result<Response, ClientError>) -> String {
    match r {
        Err(ClientError::Wire(e)) if e.code == ErrorCode::UNAUTHORIZED => e.message,
        other => panic!("expected an authorization refusal, got {other:?}"),
    }
}

/// Every request kind a principal without rules might send, each naming `topic`/`group`.
fn every_operation(topic: &str, group: &str) -> Vec<(Request, Vec<Bytes>)> {
    let t = topic.to_string();
    let g = group.to_string();
    vec![
        (
            Request::CreateTopic {
                name: t.clone(),
                partitions: 1,
                configs: vec![],
            },
            vec![],
        ),
        (Request::DeleteTopic { name: t.clone() }, vec![]),
        (Request::DescribeTopic { name: t.clone() }, vec![]),
        (
            Request::AlterTopicConfig {
                name: t.clone(),
                configs: vec![("retention.ms".into(), "1000".into())],
            },
            vec![],
        ),
        (
            Request::AddPartitions {
                name: t.clone(),
                partitions: 4,
            },
            vec![],
        ),
        (
            Request::Produce {
                topic: t.clone(),
                partition: 0,
                acks: Acks::All,
            },
            vec![batch("x")],
        ),
        (
            Request::Fetch {
                topic: t.clone(),
                partition: 0,
                offset: 0,
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1 << 20,
            },
            vec![],
        ),
        (
            Request::ListOffsets {
                topic: t.clone(),
                partition: 0,
                spec: OffsetSpec::Latest,
            },
            vec![],
        ),
        (
            Request::JoinGroup(JoinGroup {
                group: g.clone(),
                member_id: String::new(),
                topics: vec![t.clone()],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                protocol: Default::default(),
                assignor: "range".into(),
                owned: vec![],
            }),
            vec![],
        ),
        (
            Request::CommitOffsets {
                group: g.clone(),
                member_id: String::new(),
                generation: -1,
                offsets: vec![CommittedOffset {
                    topic: t.clone(),
                    partition: 0,
                    offset: 1,
                    metadata: String::new(),
                }],
            },
            vec![],
        ),
        (
            Request::FetchOffsets {
                group: g.clone(),
                partitions: Some(vec![(t.clone(), 0)]),
            },
            vec![],
        ),
        (Request::DescribeGroup { group: g.clone() }, vec![]),
        (
            Request::CreateMirrorTopic {
                name: t.clone(),
                partitions: 1,
                configs: vec![],
                flow: "f".into(),
                source_cluster: "west".into(),
                source_topic: t.clone(),
            },
            vec![],
        ),
        (
            Request::MirrorAppend {
                topic: t.clone(),
                partition: 0,
                provenance: vec![Default::default()],
            },
            vec![batch("x")],
        ),
        (
            Request::MirrorResume {
                topic: t.clone(),
                partition: 0,
                source_cluster: "west".into(),
                source_topic: t.clone(),
            },
            vec![],
        ),
        (
            Request::TranslateOffset {
                source_cluster: "west".into(),
                topic: t.clone(),
                partition: 0,
                offset: 0,
                position: false,
            },
            vec![],
        ),
        (Request::ListAcls {}, vec![]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_needs_its_acl_and_refusals_reveal_nothing() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), CONFIG);
    let admin = client_as(&pki, &node, "admin", Role::Client);
    let a = Admin::new(admin.clone());
    for t in ["orders", "secret", "orders.audit"] {
        a.create_topic(t, 2, vec![]).await.unwrap();
    }
    call(
        &admin,
        Request::Produce {
            topic: "secret".into(),
            partition: 0,
            acks: Acks::All,
        },
        &[batch("s")],
    )
    .await
    .unwrap();
    a.commit_group_offsets("secret-group", &[(("secret".to_string(), 0), 1)].into(), "")
        .await
        .unwrap();

    // A principal with no rule: every operation is refused, and the refusal for an existing
    // topic or group reads exactly like the one for a missing one.
    let stranger = client_as(&pki, &node, "stranger", Role::Client);
    let existing = every_operation("secret", "secret-group");
    let missing = every_operation("nothere", "nogroup");
    for ((req, payload), (req2, payload2)) in existing.into_iter().zip(missing) {
        let kind = req.kind();
        let a = refused(call(&stranger, req, &payload).await);
        let b = refused(call(&stranger, req2, &payload2).await);
        assert!(a.contains("stranger"), "{kind}: {a}");
        assert_eq!(
            a.replace("secret-group", "G").replace("secret", "T"),
            b.replace("nogroup", "G").replace("nothere", "T"),
            "{kind}: the refusal must not depend on whether the resource exists"
        );
    }
    let Response::Metadata(m) = call(&stranger, Request::Metadata { topics: None }, &[])
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(
        m.topics.is_empty(),
        "stranger sees no topics: {:?}",
        m.topics
    );
    let Response::Groups(g) = call(&stranger, Request::ListGroups {}, &[]).await.unwrap() else {
        panic!()
    };
    assert!(g.is_empty(), "stranger sees no groups");

    // A principal with rules gets exactly what they allow; describe comes with read/write.
    let app = client_as(&pki, &node, "app", Role::Client);
    let Response::Metadata(m) = call(&app, Request::Metadata { topics: None }, &[])
        .await
        .unwrap()
    else {
        panic!()
    };
    let names: Vec<_> = m.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["orders"], "app sees only what it may describe");
    call(
        &app,
        Request::Produce {
            topic: "orders".into(),
            partition: 0,
            acks: Acks::All,
        },
        &[batch("o")],
    )
    .await
    .unwrap();
    let fetched = call(
        &app,
        Request::Fetch {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
        },
        &[],
    )
    .await
    .unwrap();
    assert!(
        matches!(
            fetched,
            Response::Fetched {
                high_watermark: 1,
                ..
            }
        ),
        "{fetched:?}"
    );
    Admin::new(app.clone())
        .commit_group_offsets("app.billing", &[(("orders".to_string(), 0), 1)].into(), "")
        .await
        .unwrap();
    let msg = refused(
        Admin::new(app.clone())
            .commit_group_offsets("billing", &[(("orders".to_string(), 0), 1)].into(), "")
            .await
            .map(|_| Response::Ack),
    );
    assert!(
        msg.contains("strait acl add --principal app --operation group --group billing"),
        "{msg}"
    );
    refused(
        call(
            &app,
            Request::Produce {
                topic: "secret".into(),
                partition: 0,
                acks: Acks::All,
            },
            &[batch("x")],
        )
        .await,
    );
    refused(
        call(
            &app,
            Request::DeleteTopic {
                name: "orders".into(),
            },
            &[],
        )
        .await,
    );
    refused(
        call(
            &app,
            Request::AlterTopicConfig {
                name: "orders".into(),
                configs: vec![],
            },
            &[],
        )
        .await,
    );
    // A deny names the rule that denied.
    let msg = refused(
        call(
            &app,
            Request::Fetch {
                topic: "orders.audit".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1024,
            },
            &[],
        )
        .await,
    );
    assert!(msg.contains("deny"), "{msg}");

    // Mirror appends need both the mirror ACL and a mirror certificate.
    let fake = client_as(&pki, &node, "fake-flow", Role::Client);
    let create_mirror = Request::CreateMirrorTopic {
        name: "east.x".into(),
        partitions: 1,
        configs: vec![],
        flow: "f".into(),
        source_cluster: "west".into(),
        source_topic: "x".into(),
    };
    let msg = refused(call(&fake, create_mirror.clone(), &[]).await);
    assert!(msg.contains("--role mirror"), "{msg}");
    let flow = client_as(&pki, &node, "flow", Role::Mirror);
    call(&flow, create_mirror, &[]).await.unwrap();
    let msg = refused(
        call(
            &fake,
            Request::MirrorAppend {
                topic: "east.x".into(),
                partition: 0,
                provenance: vec![Default::default()],
            },
            &[batch("m")],
        )
        .await,
    );
    assert!(msg.contains("mirror"), "{msg}");
    call(
        &flow,
        Request::MirrorAppend {
            topic: "east.x".into(),
            partition: 0,
            provenance: vec![Default::default()],
        },
        &[batch("m")],
    )
    .await
    .unwrap();
    refused(
        call(
            &flow,
            Request::Produce {
                topic: "east.x".into(),
                partition: 0,
                acks: Acks::All,
            },
            &[batch("x")],
        )
        .await,
    );
    refused(
        call(
            &flow,
            Request::Fetch {
                topic: "secret".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1024,
            },
            &[],
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_added_with_the_cli_are_enforced_and_survive_a_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&pki, "east", &data, CONFIG);
    strait_certs::issue(pki.dir.path(), "admin", Role::Client, &[]).unwrap();
    let admin = Admin::new(client_as(&pki, &node, "admin", Role::Client));
    admin.create_topic("secret", 1, vec![]).await.unwrap();
    let stranger = client_as(&pki, &node, "stranger", Role::Client);
    refused(
        call(
            &stranger,
            Request::DescribeTopic {
                name: "secret".into(),
            },
            &[],
        )
        .await,
    );

    let as_admin = |address: &str, args: &[&str]| {
        let mut all = args.to_vec();
        let (ca, crt, key) = (pki.ca(), pki.path("admin.crt"), pki.path("admin.key"));
        let (ca, crt, key) = (
            ca.to_str().unwrap().to_string(),
            crt.to_str().unwrap().to_string(),
            key.to_str().unwrap().to_string(),
        );
        all.extend([
            "--bootstrap",
            address,
            "--ca",
            &ca,
            "--cert",
            &crt,
            "--key",
            &key,
        ]);
        strait(&all)
    };
    let out = as_admin(
        &node.address,
        &[
            "acl",
            "add",
            "--principal",
            "stranger",
            "--operation",
            "describe",
            "--topic",
            "sec",
            "--prefixed",
            "--json",
        ],
    );
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["enabled"], true);
    assert!(
        listing["acls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["principal"] == "stranger"
                && a["source"] == "dynamic"
                && a["pattern"] == "prefixed"),
        "{out}"
    );
    call(
        &stranger,
        Request::DescribeTopic {
            name: "secret".into(),
        },
        &[],
    )
    .await
    .unwrap();
    refused(
        call(
            &stranger,
            Request::Fetch {
                topic: "secret".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1024,
            },
            &[],
        )
        .await,
    );

    // The rule outlives the node.
    assert!(node.terminate());
    let port: u16 = node.address.rsplit(':').next().unwrap().parse().unwrap();
    drop(node);
    let node = NodeProcess::start_on(&pki, "east", &data, CONFIG, port);
    let stranger = client_as(&pki, &node, "stranger", Role::Client);
    call(
        &stranger,
        Request::DescribeTopic {
            name: "secret".into(),
        },
        &[],
    )
    .await
    .unwrap();
    let human = as_admin(&node.address, &["acl", "list"]);
    assert!(
        human.contains("authorization: enforced")
            && human.contains("stranger")
            && human.contains("sec*"),
        "{human}"
    );

    // Removing it takes the right away again; config rules are not removable at run time.
    as_admin(
        &node.address,
        &[
            "acl",
            "remove",
            "--principal",
            "stranger",
            "--operation",
            "describe",
            "--topic",
            "sec",
            "--prefixed",
        ],
    );
    refused(
        call(
            &stranger,
            Request::DescribeTopic {
                name: "secret".into(),
            },
            &[],
        )
        .await,
    );
    let err = strait_tests::strait_fails(&[
        "acl",
        "remove",
        "--principal",
        "app",
        "--operation",
        "write",
        "--topic",
        "orders",
        "--bootstrap",
        &node.address,
        "--ca",
        pki.ca().to_str().unwrap(),
        "--cert",
        pki.path("admin.crt").to_str().unwrap(),
        "--key",
        pki.path("admin.key").to_str().unwrap(),
    ]);
    assert!(err.contains("config file"), "{err}");
    // Only principals allowed to alter the cluster manage ACLs.
    let rule = strait_protocol::acl::AclRule {
        principal: "stranger".into(),
        operation: strait_protocol::acl::Operation::Read,
        resource: strait_protocol::acl::ResourceKind::Topic,
        name: "*".into(),
        pattern: Default::default(),
        permission: Default::default(),
    };
    refused(call(&stranger, Request::AddAcl { rule }, &[]).await);
}
