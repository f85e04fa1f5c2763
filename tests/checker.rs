//! A history checker in the manner of Jepsen: writers record what they sent and what was
//! acknowledged, readers record what they read, and the checker counts what went wrong.
//!
//! Values are `w<writer>-<seq>` (unique; sequenced per writer). The report is a table of
//! counts: lost writes (acknowledged, never read), duplicates (read at two offsets), reordering
//! (a writer's values out of sequence within a partition), offsets that differ between two
//! reads of the same partition, unexpected values (read but never written), and for a mirror,
//! positions where source and target differ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What writers did.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Every value a writer tried to write.
    pub attempted: HashSet<String>,
    /// Acknowledged values, with the partition the acknowledgement named.
    pub acked: HashMap<String, u32>,
}

impl History {
    pub fn value(writer: u32, seq: u64) -> String {
        format!("w{writer}-{seq}")
    }

    pub fn attempt(&mut self, value: &str) {
        self.attempted.insert(value.to_string());
    }

    pub fn ack(&mut self, value: &str, partition: u32) {
        self.acked.insert(value.to_string(), partition);
    }

    pub fn merge(&mut self, other: History) {
        self.attempted.extend(other.attempted);
        self.acked.extend(other.acked);
    }
}

/// One partition as read: (offset, value) in offset order.
pub type Read = Vec<(u64, String)>;

/// The checker's counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub attempted: usize,
    pub acknowledged: usize,
    pub read: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub reordered: usize,
    pub offsets_differ: usize,
    pub unexpected: usize,
    pub mirror_divergence: usize,
    /// Unacknowledged writes that were nevertheless stored (allowed: the ack was lost).
    pub indeterminate_stored: usize,
}

impl Report {
    /// Whether every promise held: nothing lost, duplicated, reordered or diverged.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.offsets_differ == 0
            && self.unexpected == 0
            && self.mirror_divergence == 0
    }

    /// Adds another run's counts.
    pub fn add(&mut self, o: &Report) {
        self.attempted += o.attempted;
        self.acknowledged += o.acknowledged;
        self.read += o.read;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.offsets_differ += o.offsets_differ;
        self.unexpected += o.unexpected;
        self.mirror_divergence += o.mirror_divergence;
        self.indeterminate_stored += o.indeterminate_stored;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("writes attempted", self.attempted),
            ("writes acknowledged", self.acknowledged),
            ("records read", self.read),
            ("lost (acknowledged, never read)", self.lost),
            ("duplicates", self.duplicates),
            ("reordered within a partition", self.reordered),
            ("offsets differing between reads", self.offsets_differ),
            ("unexpected values", self.unexpected),
            (
                "mirror divergence (source vs target)",
                self.mirror_divergence,
            ),
            ("unacknowledged but stored", self.indeterminate_stored),
        ];
        writeln!(f, "| check | count |\n|---|---|")?;
        for (name, n) in rows {
            writeln!(f, "| {name} | {n} |")?;
        }
        Ok(())
    }
}

fn parse(value: &str) -> Option<(u32, u64)> {
    let (w, s) = value.strip_prefix('w')?.split_once('-')?;
    Some((w.parse().ok()?, s.parse().ok()?))
}

/// Checks a topic's partitions as read (`reads`) against the history; `again` is a second,
/// independent read of the same partitions (offsets must hold the same values).
pub fn check(
    history: &History,
    reads: &BTreeMap<u32, Read>,
    again: &BTreeMap<u32, Read>,
) -> Report {
    let mut r = Report {
        attempted: history.attempted.len(),
        acknowledged: history.acked.len(),
        ..Report::default()
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (partition, read) in reads {
        r.read += read.len();
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for (_, value) in read {
            *seen.entry(value.as_str()).or_default() += 1;
            if !history.attempted.contains(value) {
                r.unexpected += 1;
            } else if !history.acked.contains_key(value) {
                r.indeterminate_stored += 1;
            }
            if let Some((w, s)) = parse(value) {
                if last_seq.get(&w).is_some_and(|prev| *prev >= s) {
                    r.reordered += 1;
                }
                last_seq.insert(w, s);
            }
        }
        if let Some(second) = again.get(partition) {
            let first: HashMap<u64, &str> = read.iter().map(|(o, v)| (*o, v.as_str())).collect();
            r.offsets_differ += second
                .iter()
                .filter(|(o, v)| first.get(o).is_some_and(|f| f != v))
                .count();
        }
    }
    r.duplicates = seen.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    r.lost = history
        .acked
        .keys()
        .filter(|v| !seen.contains_key(v.as_str()))
        .count();
    r
}

/// Positions where a prefix-mode mirror's target differs from its source (same offsets).
pub fn divergence(source: &BTreeMap<u32, Read>, target: &BTreeMap<u32, Read>) -> usize {
    let mut n = 0;
    for (p, s) in source {
        let t = target.get(p).map(Vec::as_slice).unwrap_or(&[]);
        n += s.len().abs_diff(t.len());
        n += s.iter().zip(t).filter(|(a, b)| a != b).count();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_counts_each_kind_of_anomaly() {
        let mut h = History::default();
        for s in 0..5 {
            h.attempt(&History::value(1, s));
            h.ack(&History::value(1, s), 0);
        }
        h.attempt(&History::value(2, 0)); // never acknowledged
        let read: Read = vec![
            (0, History::value(1, 0)),
            (1, History::value(1, 2)),
            (2, History::value(1, 1)), // reordered
            (3, History::value(1, 2)), // duplicate
            (4, History::value(2, 0)), // indeterminate, stored
            (5, "intruder".into()),    // unexpected
        ];
        let mut again = read.clone();
        again[0].1 = History::value(1, 4); // offset 0 differs
        let reads = BTreeMap::from([(0, read)]);
        let r = check(&h, &reads, &BTreeMap::from([(0, again)]));
        assert_eq!(r.lost, 2, "w1-3 and w1-4: {r:?}");
        assert_eq!(r.duplicates, 1);
        assert_eq!(
            r.reordered, 1,
            "w1-1 after w1-2 (the repeated w1-2 counts as a duplicate)"
        );
        assert_eq!(r.offsets_differ, 1);
        assert_eq!(r.unexpected, 1);
        assert_eq!(r.indeterminate_stored, 1);
        assert!(!r.clean());
        let target = BTreeMap::from([(0, reads[&0][..4].to_vec())]);
        assert_eq!(divergence(&reads, &target), 2);
        assert!(r
            .to_string()
            .contains("| lost (acknowledged, never read) | 2 |"));
    }
}
