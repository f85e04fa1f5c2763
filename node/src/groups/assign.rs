//! Partition assignors, as pure functions of the members' subscriptions and what they own.
//!
//! The coordinator runs them (server-side assignment), so every member of a group sees the
//! same decision and a misbehaving client cannot hand itself someone else's partitions.

use std::collections::{BTreeMap, BTreeSet};

use strait_protocol::message::RebalanceProtocol;

/// A topic-partition.
pub type TopicPartition = (String, u32);

/// What the assignor knows of one member.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    pub topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
}

/// Assigns the partitions of the subscribed topics to members. `partitions` gives each
/// topic's partition count (unknown topics have none). Members beyond the partitions stay idle.
pub fn assign(
    assignor: &str,
    protocol: RebalanceProtocol,
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut target = match assignor {
        "roundrobin" => round_robin(members, partitions),
        "sticky" => sticky(members, partitions),
        _ => range(members, partitions),
    };
    if protocol == RebalanceProtocol::Cooperative {
        withhold_moving(members, &mut target);
    }
    for tps in target.values_mut() {
        tps.sort();
    }
    target
}

fn subscribers<'a>(members: &'a BTreeMap<String, MemberView>, topic: &str) -> Vec<&'a String> {
    members
        .iter()
        .filter(|(_, m)| m.topics.iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect()
}

fn all_topics(members: &BTreeMap<String, MemberView>) -> BTreeSet<String> {
    members
        .values()
        .flat_map(|m| m.topics.iter().cloned())
        .collect()
}

/// Kafka's range assignor: per topic, contiguous ranges, the first members get one extra.
fn range(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    for topic in all_topics(members) {
        let n = partitions.get(&topic).copied().unwrap_or(0);
        let subs = subscribers(members, &topic);
        if subs.is_empty() {
            continue;
        }
        let (per, extra) = (n / subs.len() as u32, n % subs.len() as u32);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + u32::from((i as u32) < extra);
            for p in next..next + count {
                out.entry((*m).clone())
                    .or_default()
                    .push((topic.clone(), p));
            }
            next += count;
        }
    }
    out
}

/// Round-robin over all subscribed partitions in order.
fn round_robin(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    let ids: Vec<&String> = members.keys().collect();
    let mut turn = 0usize;
    for topic in all_topics(members) {
        for p in 0..partitions.get(&topic).copied().unwrap_or(0) {
            // The next member in turn that subscribes to this topic.
            for _ in 0..ids.len() {
                let m = ids[turn % ids.len()];
                turn += 1;
                if members[m].topics.contains(&topic) {
                    out.entry(m.clone()).or_default().push((topic.clone(), p));
                    break;
                }
            }
        }
    }
    out
}

/// Balanced, keeping as many owned partitions in place as balance allows.
fn sticky(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut all: Vec<TopicPartition> = Vec::new();
    for topic in all_topics(members) {
        for p in 0..partitions.get(&topic).copied().unwrap_or(0) {
            all.push((topic.clone(), p));
        }
    }
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();
    let n_members = members.len().max(1);
    let quota_floor = all.len() / n_members;
    let mut with_extra = all.len() % n_members;
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    // Keep owned partitions up to each member's quota, members owning most first.
    let mut by_owned: Vec<(&String, &MemberView)> = members.iter().collect();
    by_owned.sort_by_key(|(id, m)| (std::cmp::Reverse(m.owned.len()), (*id).clone()));
    for (id, m) in by_owned {
        let quota = quota_floor + usize::from(with_extra > 0 && m.owned.len() > quota_floor);
        if quota > quota_floor {
            with_extra -= 1;
        }
        for tp in &m.owned {
            let ok = valid.contains(tp) && m.topics.contains(&tp.0) && !taken.contains(tp);
            if ok && out[id].len() < quota {
                taken.insert(tp.clone());
                out.entry(id.clone()).or_default().push(tp.clone());
            }
        }
    }
    // Hand out the rest to the least loaded subscriber.
    for tp in all {
        if taken.contains(&tp) {
            continue;
        }
        let best = members
            .iter()
            .filter(|(_, m)| m.topics.contains(&tp.0))
            .min_by_key(|(id, _)| (out[*id].len(), (*id).clone()))
            .map(|(id, _)| id.clone());
        if let Some(id) = best {
            out.entry(id).or_default().push(tp);
        }
    }
    out
}

/// Cooperative protocol: a partition still owned by another member is not given to its new
/// owner until the old owner has revoked it (the next generation).
fn withhold_moving(
    members: &BTreeMap<String, MemberView>,
    target: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let owner: BTreeMap<&TopicPartition, &String> = members
        .iter()
        .flat_map(|(id, m)| m.owned.iter().map(move |tp| (tp, id)))
        .collect();
    for (id, tps) in target.iter_mut() {
        tps.retain(|tp| owner.get(tp).is_none_or(|o| *o == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, MemberView> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    MemberView {
                        topics: topics.iter().map(|t| t.to_string()).collect(),
                        owned: vec![],
                    },
                )
            })
            .collect()
    }

    fn counts(a: &BTreeMap<String, Vec<TopicPartition>>) -> Vec<usize> {
        a.values().map(Vec::len).collect()
    }

    #[test]
    fn the_seed_scenarios_split_four_partitions() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 4)].into();
        for assignor in ["range", "roundrobin", "sticky"] {
            let a = |n| {
                assign(
                    assignor,
                    RebalanceProtocol::Eager,
                    &members(n, &["t"]),
                    &parts,
                )
            };
            assert_eq!(counts(&a(1)), vec![4], "{assignor}");
            assert_eq!(counts(&a(2)), vec![2, 2], "{assignor}");
            assert_eq!(counts(&a(4)), vec![1, 1, 1, 1], "{assignor}");
            let mut five = counts(&a(5));
            five.sort();
            assert_eq!(
                five,
                vec![0, 1, 1, 1, 1],
                "{assignor}: a fifth consumer stays idle"
            );
        }
    }

    #[test]
    fn cooperative_sticky_moves_only_what_it_must_and_withholds_it_once() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 6)].into();
        let mut m = members(3, &["t"]);
        m.get_mut("m0").unwrap().owned = (0..3).map(|p| ("t".into(), p)).collect();
        m.get_mut("m1").unwrap().owned = (3..6).map(|p| ("t".into(), p)).collect();
        let first = assign("sticky", RebalanceProtocol::Cooperative, &m, &parts);
        assert_eq!(first["m0"].len(), 2);
        assert_eq!(first["m1"].len(), 2);
        assert!(
            first["m2"].is_empty(),
            "moving partitions are withheld until revoked"
        );
        // Next generation: the old owners report what they kept.
        m.get_mut("m0").unwrap().owned = first["m0"].clone();
        m.get_mut("m1").unwrap().owned = first["m1"].clone();
        let second = assign("sticky", RebalanceProtocol::Cooperative, &m, &parts);
        assert_eq!(counts(&second), vec![2, 2, 2]);
        assert_eq!(second["m0"], first["m0"], "unmoved partitions stay put");
    }
}
