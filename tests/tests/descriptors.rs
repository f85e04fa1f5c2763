//! File descriptors: every segment keeps its file open, so a node's partitions are bounded by
//! its open-file limit. Under a lowered limit a create or grow that would not fit is refused
//! before the disk is touched (numbers and fix in the message, nothing left behind), a restart
//! that cannot recover within the limit says so, and the node raises its soft limit to the
//! hard one at start.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use strait_protocol::client::Admin;
use strait_protocol::ErrorCode;
use strait_tests::{NodeProcess, Pki};

/// The soft open-file limit of a running process.
fn soft_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_beyond_the_descriptor_limit_are_refused_cleanly_and_recovery_says_why() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = strait_tests::free_udp_port();
    let node = NodeProcess::start_with_file_limit(&pki, &data, port, 256, 1024).unwrap();
    assert_eq!(
        soft_limit(node.pid()),
        1024,
        "the soft limit is raised to the hard one"
    );
    let admin = Admin::new(pki.client(&node.address));

    let refused = admin.create_topic("big", 2000, vec![]).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::RESOURCE_EXHAUSTED),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("1024") && text.contains("ulimit -n"),
        "{text}"
    );
    assert!(text.contains("LimitNOFILE"), "{text}");
    assert!(!data.join("topics/big").exists(), "nothing left behind");

    admin.create_topic("small", 300, vec![]).await.unwrap();
    admin.create_topic("more", 300, vec![]).await.unwrap();
    let refused = admin.add_partitions("small", 2000).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::RESOURCE_EXHAUSTED),
        "{refused}"
    );
    assert!(
        !data.join("topics/small/300").exists(),
        "no partition debris"
    );
    let small = admin.describe_topic("small").await.unwrap();
    assert_eq!(small.partitions.len(), 300);
    drop(admin);
    drop(node); // kill -9

    let log = NodeProcess::start_with_file_limit(&pki, &data, port, 400, 400)
        .err()
        .expect("600 partitions cannot be recovered with 400 descriptors");
    let said = log.join("\n");
    assert!(said.contains("ulimit -n"), "{said}");
    assert!(said.contains("recovering"), "{said}");
    assert!(said.contains("400"), "{said}");

    let node = NodeProcess::start_with_file_limit(&pki, &data, port, 1024, 1024).unwrap();
    let admin = Admin::new(pki.client(&node.address));
    for topic in ["small", "more"] {
        let t = admin.describe_topic(topic).await.unwrap();
        assert_eq!(t.partitions.len(), 300, "{topic} after the restart");
    }
}
