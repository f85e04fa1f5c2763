//! The controller quorum when the network, not a process, fails: every link between voters runs
//! through its own UDP impairment proxy, and the suites cut links apart. A leader that can no
//! longer reach a majority is replaced in a higher term (C1: the old leader still reaching one
//! voter), a voter cut from the leader alone is fenced while the majority carries on, and after
//! healing every node agrees again. An observer polls every node throughout and fails the
//! suite if any term ever had two leaders.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use strait_protocol::client::{Admin, Producer, ProducerConfig};
use strait_tests::quorum::{describe, incarnation_of, state_of, wait_for, LeaderLog, Mesh};
use strait_tests::Pki;

/// `n` voters; the leader keeps its links to `reach` of the others and loses the rest.
async fn cut_the_leader(n: usize, reach: usize) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let mesh = Mesh::start(&pki, dir.path(), n).await;
    let leader = mesh.agreed(&pki, Duration::from_secs(30)).await;
    println!(
        "{n} voters agreed on leader {leader} {:?} after the start",
        began.elapsed()
    );
    let l = leader as usize - 1;
    let before = describe(&pki, &mesh.address(l)).await.unwrap();
    let log = LeaderLog::start(&pki, (0..n).map(|i| mesh.address(i)).collect());

    let others: Vec<usize> = (0..n).filter(|i| *i != l).collect();
    let (kept, lost) = others.split_at(reach);
    for &o in lost {
        mesh.cut(l, o, true);
    }
    let cut = Instant::now();
    let majority = n / 2 + 1;
    let mut fenced: Vec<u64> = Vec::new();
    if 1 + reach < majority {
        // The leader lost its quorum: the others elect a new one in a higher term, and it
        // fences the old leader when the old one cannot reach it.
        let mut new_leader = None;
        for &o in &others {
            let (d, _) = wait_for(
                &pki,
                &mesh.address(o),
                Duration::from_secs(15),
                "a new leader",
                |d| {
                    d.term > before.term
                        && d.leader.is_some_and(|x| x != leader)
                        && new_leader.is_none_or(|x| d.leader == Some(x))
                },
            )
            .await;
            new_leader = d.leader;
        }
        let elected = cut.elapsed();
        let new_leader = new_leader.unwrap();
        if !kept.contains(&(new_leader as usize - 1)) {
            for &o in lost {
                wait_for(
                    &pki,
                    &mesh.address(o),
                    Duration::from_secs(10),
                    "the cut-off leader fenced",
                    |d| state_of(d, leader) == Some("fenced"),
                )
                .await;
            }
            fenced.push(leader);
        }
        println!(
            "{n} voters, leader {leader} reaching {reach} of them: node {new_leader} leads after {elected:?}; fencing applied {:?} after the cut",
            cut.elapsed()
        );
    } else {
        // The leader still has a majority: whatever leads, the voters it lost cannot heartbeat
        // to it and are fenced by the majority, which keeps serving.
        let (d, _) = wait_for(
            &pki,
            &mesh.address(kept[0]),
            Duration::from_secs(15),
            "the cut-off voters fenced",
            |d| {
                d.leader.is_some_and(|x| !lost.contains(&(x as usize - 1)))
                    && lost
                        .iter()
                        .all(|o| state_of(d, *o as u64 + 1) == Some("fenced"))
            },
        )
        .await;
        fenced.extend(lost.iter().map(|o| *o as u64 + 1));
        println!(
            "{n} voters, leader {leader} reaching {reach} of them: node {:?} leads, the others fenced {:?} after the cut",
            d.leader,
            cut.elapsed()
        );
    }

    for &o in lost {
        mesh.cut(l, o, false);
    }
    let healed = Instant::now();
    let views = mesh.settled(&pki, Duration::from_secs(30)).await;
    let d = &views[0];
    println!(
        "healed: all {n} agree on leader {:?} and applied index {:?} after {:?}",
        d.leader,
        d.applied_index,
        healed.elapsed()
    );
    // Nothing applied before the cut was lost; a fenced node registered again under a new
    // incarnation; a node that could reach the leader all along was never fenced (its
    // leaderships would have moved for nothing).
    assert!(d.applied_index > before.applied_index, "{d:#?}");
    for id in 1..=n as u64 {
        let (now, then) = (incarnation_of(d, id), incarnation_of(&before, id));
        if fenced.contains(&id) {
            assert!(
                now > then,
                "node {id}: incarnation {then} before, {now} after; {d:#?}"
            );
        } else {
            assert_eq!(now, then, "node {id} was fenced: {d:#?}");
        }
    }
    let terms = log.check();
    println!("leaders by term (leader → nodes naming it): {terms:?}");
}

#[tokio::test]
async fn a_leader_cut_off_from_both_voters_is_replaced_without_split_brain() {
    cut_the_leader(3, 0).await;
}

/// C1 of docs/clustering: the controller leader reaches only one other voter.
#[tokio::test]
async fn c1_a_leader_reaching_one_of_four_voters_is_replaced_without_split_brain() {
    cut_the_leader(5, 1).await;
}

/// The leader of three reaches one voter, which is a majority: it may keep leading, the voter
/// cut from it is fenced, and no election the cut voter starts splits the quorum.
#[tokio::test]
async fn a_voter_cut_from_the_leader_alone_is_fenced_and_the_majority_serves() {
    cut_the_leader(3, 1).await;
}

/// One record to partition 0 of `t` on the node at `address`, one attempt: the error code if
/// the node refused it.
async fn write_once(pki: &Pki, address: &str) -> Result<u64, Option<strait_protocol::ErrorCode>> {
    let config = ProducerConfig {
        attempts: 1,
        linger_ms: 0,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(pki.client(address), config);
    let sent = producer.send("t", Some(0), None, Some(b"x"), &[]).await;
    let delivered = match sent {
        Ok(delivery) => delivery.wait().await,
        Err(e) => Err(e),
    };
    delivered.map_err(|e| {
        println!("write to {address}: {e}");
        e.code()
    })
}

/// A node cut off from the controller quorum stops taking writes by itself within its session
/// timeout, even the controller leader (it needs a majority's word that it still leads), while
/// the majority keeps taking them; healed, it registers anew and takes writes again.
#[tokio::test]
async fn a_node_cut_off_from_the_controller_stops_taking_writes_until_it_registers_again() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(&pki, dir.path(), 3).await;
    let leader = mesh.agreed(&pki, Duration::from_secs(30)).await as usize - 1;
    for i in 0..3 {
        Admin::new(pki.client(&mesh.address(i)))
            .create_topic("t", 1, vec![])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = write_once(&pki, &mesh.address(i)).await {
            assert!(
                Instant::now() < deadline,
                "node {} refuses writes: {e:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for o in (0..3).filter(|o| *o != leader) {
        mesh.cut(leader, o, true);
    }
    let cut = Instant::now();
    let refused = loop {
        match write_once(&pki, &mesh.address(leader)).await {
            Err(Some(code)) if code == strait_protocol::ErrorCode::NOT_LEADER => {
                break cut.elapsed()
            }
            other => assert!(
                cut.elapsed() < Duration::from_secs(10),
                "the cut-off leader still takes writes: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("the cut-off leader refused writes {refused:?} after the cut (session timeout 1 s)");
    // The majority elects and writes on.
    let others: Vec<usize> = (0..3).filter(|o| *o != leader).collect();
    for &o in &others {
        wait_for(
            &pki,
            &mesh.address(o),
            Duration::from_secs(15),
            "a new leader",
            |d| d.leader.is_some_and(|l| l as usize - 1 != leader),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = write_once(&pki, &mesh.address(o)).await {
            assert!(
                Instant::now() < deadline,
                "node {} refuses writes: {e:?}",
                o + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for &o in &others {
        mesh.cut(leader, o, false);
    }
    let healed = Instant::now();
    while let Err(e) = write_once(&pki, &mesh.address(leader)).await {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "the healed node still refuses writes: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("healed: writes taken again {:?} later", healed.elapsed());
}
