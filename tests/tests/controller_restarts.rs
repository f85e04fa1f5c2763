//! Three voters through process deaths that take their un-fsynced writes with them (the
//! power-cut simulation): one voter at a time (C2 of docs/clustering: no double vote in a
//! term, committed metadata never lost), and all three at once (C3: no node ever sees older
//! metadata than it had before the restart).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use strait_tests::quorum::{describe, incarnation_of, LeaderLog, Mesh};
use strait_tests::{power_loss, Pki};

/// C2: the leader, then a follower, then the leader again are killed and lose what they had
/// not fsynced; the quorum elects, carries on, and takes each back. What the cluster had
/// applied never goes back, no incarnation is handed out twice, and no term has two leaders.
#[tokio::test]
async fn a_voter_power_cut_three_times_loses_nothing_committed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::start_with(&pki, dir.path(), 3, true).await;
    let mut before = mesh.settled(&pki, Duration::from_secs(30)).await.remove(0);
    let log = LeaderLog::start(&pki, (0..3).map(|i| mesh.address(i)).collect());
    for round in 0..3u64 {
        let leader = before.leader.unwrap() as usize - 1;
        let victim = if round == 1 { (leader + 1) % 3 } else { leader };
        mesh.nodes[victim].as_mut().unwrap().kill9();
        let journal = mesh.journals.as_ref().unwrap()[victim].clone();
        let cut = power_loss(
            &dir.path().join(format!("n{}", victim + 1)),
            &journal,
            round + 11,
        );
        let killed = Instant::now();
        mesh.restart(&pki, dir.path(), victim);
        // Again while it registers (its log writes in flight), so that a cut finds un-fsynced
        // bytes to drop.
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        mesh.nodes[victim].as_mut().unwrap().kill9();
        let again = power_loss(
            &dir.path().join(format!("n{}", victim + 1)),
            &journal,
            round + 21,
        );
        println!("round {round}: cut while registering: {again:?}");
        mesh.restart(&pki, dir.path(), victim);
        let was = incarnation_of(&before, victim as u64 + 1);
        let after = mesh
            .settled_where(&pki, Duration::from_secs(30), |d| {
                incarnation_of(d, victim as u64 + 1) > was
            })
            .await
            .remove(0);
        println!(
            "round {round}: node {} cut ({cut:?}); all three settled again after {:?}, applied {:?} → {:?}",
            victim + 1,
            killed.elapsed(),
            before.applied_index,
            after.applied_index
        );
        assert!(after.applied_index > before.applied_index, "{after:#?}");
        for id in 1..=3 {
            let (then, now) = (incarnation_of(&before, id), incarnation_of(&after, id));
            if id == victim as u64 + 1 {
                assert!(now > then, "node {id} came back as {now}, was {then}");
            } else {
                assert!(now >= then, "node {id}: incarnation {then} then {now}");
            }
        }
        before = after;
    }
    let terms = log.check();
    println!("leaders by term: {terms:?}");
}

/// C3: all three voters lose power at once and restart. From its first answer on, each node's
/// metadata is at least what it had applied before the cut.
#[tokio::test]
async fn all_voters_power_cut_at_once_never_show_older_metadata() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::start_with(&pki, dir.path(), 3, true).await;
    mesh.settled(&pki, Duration::from_secs(30)).await;
    for round in 0..2u64 {
        // What each node had applied, asked last thing before the cut.
        let mut had = Vec::new();
        for i in 0..3 {
            had.push(describe(&pki, &mesh.address(i)).await.unwrap());
        }
        for i in 0..3 {
            mesh.nodes[i].as_mut().unwrap().kill9();
        }
        for i in 0..3 {
            let journal = mesh.journals.as_ref().unwrap()[i].clone();
            power_loss(
                &dir.path().join(format!("n{}", i + 1)),
                &journal,
                round * 3 + i as u64,
            );
        }
        let cut = Instant::now();
        for i in 0..3 {
            mesh.restart(&pki, dir.path(), i);
        }
        // Every answer, from the first, until all agree again.
        let mut answers = 0;
        let leader = loop {
            let mut views = Vec::new();
            for (i, was) in had.iter().enumerate() {
                let Some(d) = describe(&pki, &mesh.address(i)).await else {
                    continue;
                };
                answers += 1;
                assert!(
                    d.applied_index >= was.applied_index,
                    "round {round}: node {} shows applied {:?} after the restart, {:?} before",
                    i + 1,
                    d.applied_index,
                    was.applied_index
                );
                for id in 1..=3 {
                    assert!(
                        incarnation_of(&d, id) >= incarnation_of(was, id),
                        "round {round}: node {} sees node {id} at an older incarnation: {d:#?}, before: {was:#?}",
                        i + 1
                    );
                }
                views.push(d);
            }
            // Agreed once every node registered again (a new incarnation) and all see it.
            let agreed = views.len() == 3
                && views.iter().all(|d| {
                    d.leader.is_some()
                        && d.leader == views[0].leader
                        && d.nodes.iter().all(|n| n.state == "alive")
                        && (1..=3).all(|id| incarnation_of(d, id) > incarnation_of(&had[0], id))
                });
            if agreed {
                break views[0].leader;
            }
            assert!(
                cut.elapsed() < Duration::from_secs(30),
                "round {round}: no agreement within 30 s after the restart: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "round {round}: all three cut and restarted; {answers} answers checked, settled on leader {:?} after {:?}",
            leader,
            cut.elapsed()
        );
    }
}
