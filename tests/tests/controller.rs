//! The controller quorum with real processes: a one-node cluster is a one-voter quorum, three
//! voters elect one leader, and a `kill -9` of the leader leaves the other two electing a new
//! one and carrying on with metadata changes (fencing the dead node); the killed node comes
//! back under a new incarnation and never sees older metadata than it had.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use strait_protocol::message::ClusterDescription;
use strait_tests::quorum::{describe, incarnation_of, state_of, wait_for, QUICK_TIMEOUTS};
use strait_tests::{free_udp_port, strait, NodeProcess, Pki};

/// Three loopback ports and the node config naming them as the voters, with short timeouts
/// (a node silent for 1 s is fenced; Raft heartbeat 100 ms).
fn three_voters() -> (Vec<u16>, String) {
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}@127.0.0.1:{p}\"", i + 1))
        .collect();
    let config = format!("controllers = [{}]\n{QUICK_TIMEOUTS}", voters.join(", "));
    (ports, config)
}

/// Nodes 1..=N of cluster east on `ports`, data under `dir/n<ID>`, all with `config`.
fn start_members(
    pki: &Pki,
    dir: &std::path::Path,
    ports: &[u16],
    config: &str,
) -> Vec<NodeProcess> {
    (0..ports.len())
        .map(|i| {
            NodeProcess::start_member(
                pki,
                "east",
                i as u32 + 1,
                &dir.join(format!("n{}", i + 1)),
                config,
                ports[i],
            )
        })
        .collect()
}

#[tokio::test]
async fn a_single_node_is_a_one_voter_quorum_and_describes_itself() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", strait_tests::free_tcp_port());
    let node = NodeProcess::start(
        &pki,
        "east",
        &dir.path().join("n1"),
        &format!("admin_listen = \"{admin}\"\n"),
    );
    let (d, _) = wait_for(
        &pki,
        &node.address,
        Duration::from_secs(15),
        "registration",
        |d| state_of(d, 1) == Some("alive"),
    )
    .await;
    assert_eq!(d.voters, vec![1]);
    assert_eq!(d.leader, Some(1));
    assert!(d.learners.is_empty());
    let out = strait(&[
        "cluster",
        "describe",
        "--json",
        "--bootstrap",
        &node.address,
        "--ca",
        pki.ca().to_str().unwrap(),
        "--cert",
        pki.path("app.crt").to_str().unwrap(),
        "--key",
        pki.path("app.key").to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["leader"], 1, "{json:#}");
    assert_eq!(json["nodes"][0]["state"], "alive", "{json:#}");
    assert_eq!(json["nodes"][0]["voter"], true, "{json:#}");
    let metrics = strait_tests::http_body(&strait_tests::http_get(&admin, "/metrics")).to_string();
    for line in [
        "strait_controller_leader{cluster=\"east\",node=\"1\"} 1",
        "strait_controller_takes_writes{cluster=\"east\",node=\"1\"} 1",
        "strait_controller_nodes{state=\"alive\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
}

#[tokio::test]
async fn three_voters_survive_the_kill_of_their_leader_and_fence_it() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ports, config) = three_voters();
    let data = |id: usize| dir.path().join(format!("n{id}"));
    let started = Instant::now();
    let mut nodes: Vec<Option<NodeProcess>> = start_members(&pki, dir.path(), &ports, &config)
        .into_iter()
        .map(Some)
        .collect();
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let all_alive = |d: &ClusterDescription| {
        d.leader.is_some() && (1..=3).all(|id| state_of(d, id) == Some("alive"))
    };
    let mut leader = None;
    for i in 0..3 {
        let (d, _) = wait_for(
            &pki,
            &address(i),
            Duration::from_secs(30),
            "a quorum of three",
            all_alive,
        )
        .await;
        assert_eq!(d.voters, vec![1, 2, 3]);
        assert!(leader.is_none() || leader == d.leader, "one leader: {d:#?}");
        leader = d.leader;
    }
    println!(
        "cold start to three registered nodes: {:?}",
        started.elapsed()
    );
    let leader = leader.unwrap();
    let before = describe(&pki, &address(leader as usize - 1)).await.unwrap();
    let old_incarnation = incarnation_of(&before, leader);

    nodes[leader as usize - 1].as_mut().unwrap().kill9();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i as u64 + 1 != leader).collect();
    for &i in &survivors {
        wait_for(
            &pki,
            &address(i),
            Duration::from_secs(10),
            "a new leader",
            |d| d.leader.is_some_and(|l| l != leader),
        )
        .await;
    }
    let elected = killed.elapsed();
    // The metadata change the new leader makes: fencing the silent node, seen everywhere.
    for &i in &survivors {
        wait_for(
            &pki,
            &address(i),
            Duration::from_secs(5),
            "the dead leader fenced",
            |d| state_of(d, leader) == Some("fenced"),
        )
        .await;
    }
    println!(
        "kill -9 of the controller leader: new leader within {elected:?}, its fencing applied on both survivors {:?} after the kill (session timeout 1 s)",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "metadata changes resumed within 5 s"
    );

    // Back under a new incarnation, with everything it had applied before and more.
    let applied_before = before.applied_index.unwrap_or(0);
    let i = leader as usize - 1;
    nodes[i] = Some(NodeProcess::start_member(
        &pki,
        "east",
        leader as u32,
        &data(i + 1),
        &config,
        ports[i],
    ));
    let (d, _) = wait_for(
        &pki,
        &address(i),
        Duration::from_secs(15),
        "the old leader back",
        |d| state_of(d, leader) == Some("alive") && incarnation_of(d, leader) > old_incarnation,
    )
    .await;
    assert!(d.applied_index.unwrap_or(0) > applied_before, "{d:#?}");
    let others = describe(&pki, &address(survivors[0])).await.unwrap();
    assert_eq!(others.leader, d.leader, "one leader after the return");
}

/// A one-voter quorum through `kill -9` and a simulated power cut (unsynced log bytes and
/// state-file writes dropped), three times: it comes back the leader of the same log, never
/// with less applied than before, and registers under a new incarnation each time.
#[tokio::test]
async fn the_metadata_log_survives_kill_and_power_cut() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let journal = dir.path().join("durable.journal");
    let port = free_udp_port();
    let env = [("STRAIT_TEST_DURABLE_JOURNAL", journal.as_path())];
    let mut applied = 0;
    let mut incarnation = 0;
    for round in 0..3 {
        let mut node = NodeProcess::start_with_env(&pki, "east", &data, "", port, &env);
        let (d, _) = wait_for(
            &pki,
            &node.address,
            Duration::from_secs(15),
            "registration",
            |d| state_of(d, 1) == Some("alive") && incarnation_of(d, 1) > incarnation,
        )
        .await;
        assert_eq!(d.leader, Some(1), "round {round}");
        let now = d.applied_index.unwrap_or(0);
        assert!(
            now > applied,
            "round {round}: applied {now}, before the cut {applied}"
        );
        assert_eq!(incarnation_of(&d, 1), incarnation + 1, "round {round}");
        applied = now;
        incarnation = incarnation_of(&d, 1);
        node.kill9();
        let cut = strait_tests::power_loss(&data, &journal, 7 + round);
        println!("round {round}: {cut:?}");
    }
}

/// The leader of three paused (SIGSTOP) past the election timeout: the other two elect a new
/// leader in a higher term and fence the silent one; resumed, the old leader steps down,
/// learns the fencing and registers again. Never two leaders in one term.
#[tokio::test]
async fn a_paused_leader_steps_down_when_it_resumes() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ports, config) = three_voters();
    let nodes = start_members(&pki, dir.path(), &ports, &config);
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let (d, _) = wait_for(
        &pki,
        &address(0),
        Duration::from_secs(30),
        "a quorum of three",
        |d| d.leader.is_some() && (1..=3).all(|id| state_of(d, id) == Some("alive")),
    )
    .await;
    let (old, old_term) = (d.leader.unwrap(), d.term);
    let old_incarnation = incarnation_of(&d, old);
    let paused = nodes[old as usize - 1].pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &paused])
        .status()
        .unwrap()
        .success());
    let survivors: Vec<usize> = (0..3).filter(|i| *i as u64 + 1 != old).collect();
    let mut new = None;
    for &i in &survivors {
        let (d, _) = wait_for(
            &pki,
            &address(i),
            Duration::from_secs(10),
            "a new leader, the old one fenced",
            |d| d.leader.is_some_and(|l| l != old) && state_of(d, old) == Some("fenced"),
        )
        .await;
        assert!(d.term > old_term, "a new leader in a higher term: {d:#?}");
        assert!(new.is_none() || new == d.leader, "one leader: {d:#?}");
        new = d.leader;
    }
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &paused])
        .status()
        .unwrap()
        .success());
    let (d, _) = wait_for(
        &pki,
        &address(old as usize - 1),
        Duration::from_secs(15),
        "the old leader following",
        |d| {
            d.leader == new
                && state_of(d, old) == Some("alive")
                && incarnation_of(d, old) > old_incarnation
        },
    )
    .await;
    for &i in &survivors {
        let other = describe(&pki, &address(i)).await.unwrap();
        assert_eq!(other.leader, new, "still one leader");
        assert!(
            other.term >= d.term || other.term + 1 >= d.term,
            "{other:#?} vs {d:#?}"
        );
    }
}

/// Nodes that are not voters follow the metadata log as learners: two of them join three
/// voters, register, and see every change the voters make (the fencing of one of them after
/// its `kill -9`); when the controller leader dies, a voter, never a learner, takes over.
#[tokio::test]
async fn nodes_beyond_the_voters_follow_the_log_as_learners() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, config) = three_voters();
    ports.extend([free_udp_port(), free_udp_port()]);
    let mut nodes = start_members(&pki, dir.path(), &ports, &config);
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let everyone = |d: &ClusterDescription| {
        d.leader.is_some()
            && d.learners == vec![4, 5]
            && (1..=5).all(|id| state_of(d, id) == Some("alive"))
    };
    for i in 0..5 {
        let (d, _) = wait_for(
            &pki,
            &address(i),
            Duration::from_secs(30),
            "five nodes, two of them learners",
            everyone,
        )
        .await;
        assert_eq!(d.voters, vec![1, 2, 3], "{d:#?}");
        let leader = d.leader.unwrap();
        assert!(leader <= 3, "a learner leads: {d:#?}");
        let learner = d.nodes.iter().find(|n| n.node_id == 4).unwrap();
        assert!(!learner.voter, "{d:#?}");
    }

    // A change the voters make reaches the learners too.
    nodes[4].kill9();
    let killed = Instant::now();
    for i in 0..4 {
        wait_for(
            &pki,
            &address(i),
            Duration::from_secs(10),
            "node 5 fenced",
            |d| state_of(d, 5) == Some("fenced"),
        )
        .await;
    }
    println!(
        "node 5 killed: its fencing applied on all four others {:?} later (session timeout 1 s)",
        killed.elapsed()
    );

    // The leader dies: a voter takes over; the learner stays one.
    let before = describe(&pki, &address(3)).await.unwrap();
    let leader = before.leader.unwrap();
    nodes[leader as usize - 1].kill9();
    let (d, _) = wait_for(
        &pki,
        &address(3),
        Duration::from_secs(15),
        "a new leader, seen by the learner",
        |d| d.leader.is_some_and(|l| l != leader) && state_of(d, leader) == Some("fenced"),
    )
    .await;
    let new = d.leader.unwrap();
    assert!(new <= 3, "a learner took over: {d:#?}");
    assert_eq!(d.learners, vec![4, 5], "{d:#?}");
}
