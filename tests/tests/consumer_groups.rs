//! Consumer groups against a real node: the seed scenarios, session expiry, cooperative versus
//! eager rebalancing, and commits that survive kill -9.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_protocol::client::{
    Admin, Client, Consumer, ConsumerConfig, GroupConfig, Producer, ProducerConfig,
};
use strait_protocol::message::{Request, Response};
use strait_protocol::ErrorCode;
use strait_tests::{NodeProcess, Pki};

fn group_config(name: &str) -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 2_000,
        heartbeat_interval_ms: 200,
        auto_commit_interval_ms: Some(200),
        ..GroupConfig::new(name)
    }
}

async fn fill(client: &Arc<Client>, topic: &str, partitions: u32, per_partition: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for p in 0..partitions {
        for i in 0..per_partition {
            producer
                .send(
                    topic,
                    Some(p),
                    None,
                    Some(format!("{p}-{i}").as_bytes()),
                    &[],
                )
                .await
                .unwrap();
        }
    }
    producer.flush().await;
}

/// Polls every consumer until their assignments add up to `partitions` with the wanted shape.
async fn settle(consumers: &mut [Consumer], want: &[usize]) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(50)).await.unwrap();
        }
        let mut sizes: Vec<usize> = consumers.iter().map(|c| c.assignment().len()).collect();
        sizes.sort();
        // Settled means every member has applied the same generation's assignment (a member
        // that has not joined yet also has an empty assignment).
        let generations: std::collections::BTreeSet<Option<i32>> = consumers
            .iter()
            .map(|c| c.membership().map(|(_, g)| g))
            .collect();
        let settled = generations.len() == 1
            && !generations.contains(&None)
            && consumers.iter().all(|c| !c.is_rebalancing());
        if settled && sizes == want {
            return sizes;
        }
        assert!(
            Instant::now() < deadline,
            "assignments never settled: {sizes:?}, wanted {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_split_partitions_as_the_seeds_describe() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("orders", 4, vec![])
        .await
        .unwrap();
    let mut consumers: Vec<Consumer> = Vec::new();
    for (n, want) in [
        (1usize, vec![4]),
        (2, vec![2, 2]),
        (4, vec![1, 1, 1, 1]),
        (5, vec![0, 1, 1, 1, 1]),
    ] {
        while consumers.len() < n {
            let mut c = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
            c.subscribe(&["orders"], group_config("g"));
            consumers.push(c);
        }
        settle(&mut consumers, &want).await;
    }
    let d = match client
        .call(&Request::DescribeGroup { group: "g".into() }, &[])
        .await
        .unwrap()
        .0
    {
        Response::GroupDescription(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(d.state, "stable");
    assert_eq!(d.members.len(), 5);
    assert_eq!(
        d.members.iter().filter(|m| m.assignment.is_empty()).count(),
        1,
        "the fifth stays idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_its_partitions_and_no_committed_record_is_redelivered() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("t", 4, vec![])
        .await
        .unwrap();
    fill(&client, "t", 4, 50).await;
    let mut a = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    a.subscribe(
        &["t"],
        GroupConfig {
            auto_commit_interval_ms: None,
            ..group_config("g")
        },
    );
    let mut b = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    b.subscribe(
        &["t"],
        GroupConfig {
            auto_commit_interval_ms: None,
            ..group_config("g")
        },
    );
    let mut both = [a, b];
    settle(&mut both, &[2, 2]).await;
    let [mut a, mut b] = both;
    // A reads everything it has, commits, then reads a little more without committing.
    let mut committed: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed.values().sum::<u64>() < 100 {
        a.poll(Duration::from_millis(100)).await.unwrap();
        b.poll(Duration::from_millis(10)).await.unwrap();
        committed = a.positions().clone().into_iter().collect();
        assert!(Instant::now() < deadline);
    }
    a.commit().await.unwrap();
    let a_partitions = a.assignment();
    drop(a); // killed: no leave, no more heartbeats
    let started = Instant::now();
    let mut first_seen: BTreeMap<(String, u32), u64> = BTreeMap::new();
    while b.assignment().len() < 4 {
        for r in b.poll(Duration::from_millis(100)).await.unwrap() {
            first_seen
                .entry((r.topic.to_string(), r.partition))
                .or_insert(r.offset);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "B never took over"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "taken over only after the session timeout"
    );
    for _ in 0..10 {
        for r in b.poll(Duration::from_millis(100)).await.unwrap() {
            first_seen
                .entry((r.topic.to_string(), r.partition))
                .or_insert(r.offset);
        }
    }
    for tp in a_partitions {
        if let Some(first) = first_seen.get(&tp) {
            assert_eq!(
                *first, committed[&tp],
                "{tp:?} resumed exactly at the committed offset"
            );
        } else {
            assert_eq!(
                committed[&tp], 50,
                "{tp:?}: everything was committed, nothing redelivered"
            );
        }
    }
}

/// Runs 2 consumers on 6 partitions under steady production, adds a third, and counts records
/// delivered on partitions that did not move while the rebalance was under way.
async fn records_on_unmoved_partitions_during_rebalance(cooperative: bool) -> u64 {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("t", 6, vec![])
        .await
        .unwrap();
    let config = |name: &str| {
        let c = GroupConfig {
            rebalance_timeout_ms: 5_000,
            ..group_config(name)
        };
        if cooperative {
            c.cooperative()
        } else {
            c
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let client = pki.client(&node.address);
        let stop = stop.clone();
        tokio::spawn(async move {
            let producer = Producer::new(
                client,
                ProducerConfig {
                    linger_ms: 1,
                    ..ProducerConfig::default()
                },
            );
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                producer
                    .send("t", Some((i % 6) as u32), None, Some(b"x"), &[])
                    .await
                    .unwrap();
                i += 1;
                if i.is_multiple_of(60) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            producer.flush().await;
        })
    };
    let mut first = [
        Consumer::new(pki.client(&node.address), ConsumerConfig::default()),
        Consumer::new(pki.client(&node.address), ConsumerConfig::default()),
    ];
    for c in first.iter_mut() {
        c.subscribe(&["t"], config("g"));
    }
    settle(&mut first, &[3, 3]).await;
    let before: Vec<Vec<(String, u32)>> = first.iter().map(|c| c.assignment()).collect();
    // The third member joins; the first two keep polling while the group rebalances.
    let mut third = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    third.subscribe(&["t"], config("g"));
    let delivered_unmoved = Arc::new(AtomicU64::new(0));
    let mut seen_during: Vec<(usize, String, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = third.poll(Duration::from_millis(20)).await.unwrap();
        for (i, c) in first.iter_mut().enumerate() {
            // Counted only when the member knew a rebalance was under way before the poll and
            // it was still under way after it.
            let before_poll = c.is_rebalancing();
            let records = c.poll(Duration::from_millis(20)).await.unwrap();
            let rebalancing = before_poll && c.is_rebalancing();
            for r in records {
                if rebalancing {
                    seen_during.push((i, r.topic.to_string(), r.partition));
                }
            }
        }
        let sizes: Vec<usize> = first
            .iter()
            .map(|c| c.assignment().len())
            .chain([third.assignment().len()])
            .collect();
        if sizes == vec![2, 2, 2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never rebalanced to 2/2/2: {sizes:?}"
        );
    }
    let after: Vec<Vec<(String, u32)>> = first.iter().map(|c| c.assignment()).collect();
    for (i, topic, partition) in seen_during {
        let tp = (topic, partition);
        if before[i].contains(&tp) && after[i].contains(&tp) {
            delivered_unmoved.fetch_add(1, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    producing.await.unwrap();
    delivered_unmoved.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalancing_keeps_unmoved_partitions_flowing_and_eager_stops_them() {
    let cooperative = records_on_unmoved_partitions_during_rebalance(true).await;
    assert!(
        cooperative > 0,
        "cooperative: unmoved partitions delivered {cooperative} records during the rebalance"
    );
    let eager = records_on_unmoved_partitions_during_rebalance(false).await;
    assert_eq!(
        eager, 0,
        "eager: everything stops while the group rebalances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_and_fencing_survive_and_stale_members_are_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&pki, "east", &data, "");
    let client = pki.client(&node.address);
    Admin::new(client.clone())
        .create_topic("t", 2, vec![])
        .await
        .unwrap();
    fill(&client, "t", 2, 10).await;
    let mut c = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    c.subscribe(
        &["t"],
        GroupConfig {
            auto_commit_interval_ms: None,
            ..group_config("g")
        },
    );
    let mut got = 0;
    while got < 20 {
        got += c.poll(Duration::from_millis(200)).await.unwrap().len();
    }
    c.commit().await.unwrap();
    let (member, generation) = c.membership().unwrap();
    // A commit from an older generation is refused with a clear error.
    let stale = Request::CommitOffsets {
        group: "g".into(),
        member_id: member.clone(),
        generation: generation - 1,
        offsets: vec![],
    };
    let err = client.call(&stale, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ILLEGAL_GENERATION), "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    drop(c);
    node.kill9();
    let node = NodeProcess::start(&pki, "east", &data, "");
    let client = pki.client(&node.address);
    let committed = match client
        .call(
            &Request::FetchOffsets {
                group: "g".into(),
                partitions: None,
            },
            &[],
        )
        .await
        .unwrap()
        .0
    {
        Response::CommittedOffsets(c) => c,
        other => panic!("{other:?}"),
    };
    let mut offsets: Vec<(u32, u64)> = committed.iter().map(|c| (c.partition, c.offset)).collect();
    offsets.sort();
    assert_eq!(
        offsets,
        vec![(0, 10), (1, 10)],
        "committed offsets survive kill -9"
    );
    let mut again = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    again.subscribe(&["t"], group_config("g"));
    let mut extra = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while again.assignment().len() < 2 {
        extra += again.poll(Duration::from_millis(100)).await.unwrap().len();
        assert!(
            Instant::now() < deadline,
            "the restarted group never assigned its partitions"
        );
    }
    for _ in 0..5 {
        extra += again.poll(Duration::from_millis(100)).await.unwrap().len();
    }
    assert_eq!(
        extra, 0,
        "nothing below the committed offsets is delivered again"
    );
    assert_eq!(again.assignment().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_picks_up_new_matching_topics() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&pki, "east", &dir.path().join("data"), "");
    let client = pki.client(&node.address);
    let admin = Admin::new(client.clone());
    admin.create_topic("orders-eu", 2, vec![]).await.unwrap();
    admin.create_topic("payments", 2, vec![]).await.unwrap();
    let mut c = Consumer::new(pki.client(&node.address), ConsumerConfig::default());
    c.subscribe_pattern(
        "orders-.*",
        GroupConfig {
            topic_refresh_ms: 300,
            ..group_config("g")
        },
    )
    .unwrap();
    let mut one = [c];
    settle(&mut one, &[2]).await;
    admin.create_topic("orders-us", 3, vec![]).await.unwrap();
    settle(&mut one, &[5]).await;
    let topics: std::collections::BTreeSet<String> =
        one[0].assignment().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics.into_iter().collect::<Vec<_>>(),
        vec!["orders-eu".to_string(), "orders-us".to_string()]
    );
}

/// The committed offsets of a group with no member and no commit for the retention are
/// deleted (and stay deleted across a restart), while a group with a live member keeps its
/// offsets however long ago it committed; a member asking for a rebalance timeout past the
/// node's maximum is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_expire_and_rebalance_timeouts_are_bounded() {
    use strait_protocol::message::{JoinGroup, RebalanceProtocol};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[groups]\n\"offsets.retention.ms\" = 2000\nrebalance_timeout_ms_max = 60000\n";
    let port = strait_tests::free_udp_port();
    let mut node = NodeProcess::start_on(&pki, "east", &data, config, port);
    let client = pki.client(&node.address);
    let admin = Admin::new(client.clone());
    admin.create_topic("t", 1, vec![]).await.unwrap();
    fill(&client, "t", 1, 10).await;
    let offsets = BTreeMap::from([(("t".to_string(), 0u32), 5u64)]);
    admin
        .commit_group_offsets("idle", &offsets, "")
        .await
        .unwrap();
    // A live member commits once and then only heartbeats past the retention.
    let mut busy = Consumer::new(client.clone(), ConsumerConfig::default());
    busy.subscribe(
        &["t"],
        GroupConfig {
            auto_commit_interval_ms: None,
            ..group_config("busy")
        },
    );
    while busy.assignment().is_empty() {
        busy.poll(Duration::from_millis(100)).await.unwrap();
    }
    busy.commit().await.unwrap();
    let committed = |group: &'static str| {
        let client = client.clone();
        async move {
            match client
                .call(
                    &Request::FetchOffsets {
                        group: group.into(),
                        partitions: None,
                    },
                    &[],
                )
                .await
                .unwrap()
                .0
            {
                Response::CommittedOffsets(c) => c.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(committed("idle").await, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed("idle").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle group's offsets never expired"
        );
        busy.poll(Duration::from_millis(100)).await.unwrap();
    }
    // Well past the retention since busy's commit: its live member keeps its offsets.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        busy.poll(Duration::from_millis(100)).await.unwrap();
    }
    assert_eq!(
        committed("busy").await,
        1,
        "a group with a member keeps its offsets"
    );

    let join = Request::JoinGroup(JoinGroup {
        group: "greedy".into(),
        member_id: String::new(),
        topics: vec!["t".into()],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 3_600_000,
        protocol: RebalanceProtocol::Eager,
        assignor: "range".into(),
        owned: vec![],
    });
    let refused = client.call(&join, &[]).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::INVALID_REQUEST),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("rebalance_timeout_ms_max"),
        "{refused}"
    );

    drop(busy);
    assert!(node.terminate());
    let node = NodeProcess::start_on(&pki, "east", &data, config, port);
    let client = pki.client(&node.address);
    let listed = match client.call(&Request::ListGroups {}, &[]).await.unwrap().0 {
        Response::Groups(g) => g,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        listed.iter().all(|g| g.group != "idle"),
        "expired offsets stay deleted after a restart: {listed:?}"
    );
}
