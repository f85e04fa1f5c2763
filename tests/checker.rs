//! A history checker in the manner of Jepsen: writers record what they sent and what was
//! acknowledged, readers record what they read, and the checker counts what went wrong.
//!
//! Values are `w<writer>-<seq>` (unique; sequenced per writer; trailing padding allowed). The
//! report is a table of counts: lost writes (acknowledged, never read), duplicates (read at two
//! offsets), reordering (a writer's values out of sequence within a partition), values found in
//! another partition than the one acknowledged, values read at another offset than the one
//! acknowledged, offsets that differ between two reads of the same partition (a value changed,
//! or an offset one read holds and the other does not), unexpected values (read but never
//! written), and for a mirror, positions where source and target differ.
//!
//! The hour-long fault profile writes tens of millions of values, so everything here is
//! compact: a value is one packed word, the history one byte per written value, and a checker
//! takes partitions one at a time so a caller never holds a whole topic in memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A value as the checker holds it: writer and sequence packed into one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value(u64);

/// Bits of a packed value that hold the sequence number.
const SEQ_BITS: u32 = 40;

impl Value {
    /// A value that is not of the form `w<writer>-<seq>` (written by nobody).
    pub const FOREIGN: Value = Value(u64::MAX);

    pub fn new(writer: u32, seq: u64) -> Value {
        assert!(
            writer < (1 << (64 - SEQ_BITS)) - 1 && seq < (1 << SEQ_BITS),
            "value w{writer}-{seq} out of the checker's range"
        );
        Value((u64::from(writer) << SEQ_BITS) | seq)
    }

    /// Parses `w<writer>-<seq>` with optional trailing spaces; anything else is `FOREIGN`.
    pub fn parse(bytes: &[u8]) -> Value {
        let text = std::str::from_utf8(bytes)
            .unwrap_or("")
            .trim_end_matches(' ');
        let parsed = text
            .strip_prefix('w')
            .and_then(|t| t.split_once('-'))
            .and_then(|(w, s)| Some((w.parse::<u32>().ok()?, s.parse::<u64>().ok()?)));
        match parsed {
            Some((w, s)) if w < (1 << (64 - SEQ_BITS)) - 1 && s < (1 << SEQ_BITS) => {
                Value::new(w, s)
            }
            _ => Value::FOREIGN,
        }
    }

    pub fn writer(self) -> u32 {
        (self.0 >> SEQ_BITS) as u32
    }

    pub fn seq(self) -> u64 {
        self.0 & ((1 << SEQ_BITS) - 1)
    }
}

/// What a writer did with one value: never tried, tried, or acknowledged on a partition.
const NOT_WRITTEN: u8 = 0;
const ATTEMPTED: u8 = 1;
const ACKED_BASE: u8 = 2;

/// An acknowledged offset the writer did not learn (acks = none).
const OFFSET_UNKNOWN: u64 = u64::MAX;

/// What writers did: one state byte per (writer, seq), and the acknowledged offset.
#[derive(Debug, Default, Clone)]
pub struct History {
    writers: Vec<Vec<u8>>,
    /// The offset each acknowledged value was acknowledged at, per (writer, seq).
    offsets: Vec<Vec<u64>>,
    attempted: usize,
    acked: usize,
}

impl History {
    pub fn value(writer: u32, seq: u64) -> String {
        format!("w{writer}-{seq}")
    }

    fn slot(&mut self, value: Value) -> &mut u8 {
        assert!(value != Value::FOREIGN, "writers write w<id>-<seq> values");
        let w = value.writer() as usize;
        if self.writers.len() <= w {
            self.writers.resize_with(w + 1, Vec::new);
        }
        let states = &mut self.writers[w];
        let s = value.seq() as usize;
        if states.len() <= s {
            states.resize(s + 1, NOT_WRITTEN);
        }
        &mut states[s]
    }

    fn state(&self, value: Value) -> u8 {
        if value == Value::FOREIGN {
            return NOT_WRITTEN;
        }
        self.writers
            .get(value.writer() as usize)
            .and_then(|s| s.get(value.seq() as usize))
            .copied()
            .unwrap_or(NOT_WRITTEN)
    }

    pub fn attempt(&mut self, value: impl AsRef<[u8]>) {
        let slot = self.slot(Value::parse(value.as_ref()));
        if *slot == NOT_WRITTEN {
            *slot = ATTEMPTED;
            self.attempted += 1;
        }
    }

    /// Records an acknowledgement naming `partition` and, when the writer learned it, the
    /// `offset` (an acknowledged value counts as attempted).
    pub fn ack(&mut self, value: impl AsRef<[u8]>, partition: u32, offset: Option<u64>) {
        let partition = u8::try_from(partition)
            .ok()
            .filter(|p| *p <= u8::MAX - ACKED_BASE)
            .expect("the checker tracks up to 253 partitions");
        let value = Value::parse(value.as_ref());
        let slot = self.slot(value);
        let before = *slot;
        *slot = ACKED_BASE + partition;
        self.attempted += usize::from(before == NOT_WRITTEN);
        self.acked += usize::from(before < ACKED_BASE);
        let w = value.writer() as usize;
        if self.offsets.len() <= w {
            self.offsets.resize_with(w + 1, Vec::new);
        }
        let offsets = &mut self.offsets[w];
        let s = value.seq() as usize;
        if offsets.len() <= s {
            offsets.resize(s + 1, OFFSET_UNKNOWN);
        }
        offsets[s] = offset.unwrap_or(OFFSET_UNKNOWN);
    }

    /// The offset `value` was acknowledged at, if known.
    fn acked_offset(&self, value: Value) -> Option<u64> {
        self.offsets
            .get(value.writer() as usize)
            .and_then(|o| o.get(value.seq() as usize))
            .copied()
            .filter(|o| *o != OFFSET_UNKNOWN)
    }

    pub fn attempted(&self) -> usize {
        self.attempted
    }

    pub fn acknowledged(&self) -> usize {
        self.acked
    }
}

/// One partition as read: (offset, value) in offset order.
pub type Read = Vec<(u64, Value)>;

/// The checker's counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub attempted: usize,
    pub acknowledged: usize,
    pub read: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub reordered: usize,
    /// Acknowledged on one partition, found on another.
    pub misplaced: usize,
    /// Acknowledged at one offset, read at another.
    pub wrong_offset: usize,
    pub offsets_differ: usize,
    pub unexpected: usize,
    pub mirror_divergence: usize,
    /// Unacknowledged writes that were nevertheless stored (allowed: the ack was lost).
    pub indeterminate_stored: usize,
}

impl Report {
    /// Whether every promise held: nothing lost, duplicated, reordered, misplaced or diverged.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.misplaced == 0
            && self.wrong_offset == 0
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
        self.misplaced += o.misplaced;
        self.wrong_offset += o.wrong_offset;
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
            ("found outside the acknowledged partition", self.misplaced),
            (
                "read at another offset than acknowledged",
                self.wrong_offset,
            ),
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

/// Checks one topic, partition by partition, against a history.
pub struct Checker<'h> {
    history: &'h History,
    /// How often each written value was read (saturating), one byte per (writer, seq).
    seen: Vec<Vec<u8>>,
    report: Report,
}

impl<'h> Checker<'h> {
    pub fn new(history: &'h History) -> Checker<'h> {
        Checker {
            history,
            seen: history.writers.iter().map(|s| vec![0; s.len()]).collect(),
            report: Report {
                attempted: history.attempted,
                acknowledged: history.acked,
                ..Report::default()
            },
        }
    }

    /// Takes one partition as read; `again`, when given, is a second independent read of it
    /// (both reads must hold the same offsets with the same values).
    pub fn partition(
        &mut self,
        partition: u32,
        read: &[(u64, Value)],
        again: Option<&[(u64, Value)]>,
    ) {
        let r = &mut self.report;
        r.read += read.len();
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for (offset, value) in read {
            let state = self.history.state(*value);
            if state == NOT_WRITTEN {
                r.unexpected += 1;
                continue;
            }
            if state == ATTEMPTED {
                r.indeterminate_stored += 1;
            } else if u32::from(state - ACKED_BASE) != partition {
                r.misplaced += 1;
            } else if self
                .history
                .acked_offset(*value)
                .is_some_and(|acked| acked != *offset)
            {
                r.wrong_offset += 1;
            }
            let seen = &mut self.seen[value.writer() as usize][value.seq() as usize];
            if *seen > 0 {
                r.duplicates += 1;
            }
            *seen = seen.saturating_add(1);
            if last_seq
                .insert(value.writer(), value.seq())
                .is_some_and(|prev| prev >= value.seq())
            {
                r.reordered += 1;
            }
        }
        if let Some(second) = again {
            r.offsets_differ += differing(read, second);
        }
    }

    /// The report; acknowledged values no partition held count as lost.
    pub fn finish(mut self) -> Report {
        for (states, seen) in self.history.writers.iter().zip(&self.seen) {
            self.report.lost += states
                .iter()
                .zip(seen)
                .filter(|(state, seen)| **state >= ACKED_BASE && **seen == 0)
                .count();
        }
        self.report
    }
}

/// Offsets where two reads (both in offset order) disagree: both hold the offset with
/// different values, or only one of them holds it.
fn differing(a: &[(u64, Value)], b: &[(u64, Value)]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                n += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                n += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                n += usize::from(a[i].1 != b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    n + (a.len() - i) + (b.len() - j)
}

/// Checks whole topics held in memory (small histories); see [`Checker`] for large ones.
pub fn check(
    history: &History,
    reads: &BTreeMap<u32, Read>,
    again: &BTreeMap<u32, Read>,
) -> Report {
    let mut checker = Checker::new(history);
    for (p, read) in reads {
        checker.partition(*p, read, again.get(p).map(Vec::as_slice));
    }
    checker.finish()
}

/// Positions where a prefix-mode mirror's partition differs from its source (same offsets).
pub fn partition_divergence(source: &[(u64, Value)], target: &[(u64, Value)]) -> usize {
    source.len().abs_diff(target.len()) + source.iter().zip(target).filter(|(a, b)| a != b).count()
}

/// Positions where a prefix-mode mirror's target differs from its source (same offsets).
pub fn divergence(source: &BTreeMap<u32, Read>, target: &BTreeMap<u32, Read>) -> usize {
    source
        .iter()
        .map(|(p, s)| partition_divergence(s, target.get(p).map(Vec::as_slice).unwrap_or(&[])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(w: u32, s: u64) -> Value {
        Value::new(w, s)
    }

    #[test]
    fn values_parse_with_padding_and_foreign_text_is_foreign() {
        assert_eq!(Value::parse(b"w3-17"), v(3, 17));
        assert_eq!(
            Value::parse(format!("{:<100}", "w3-17").as_bytes()),
            v(3, 17)
        );
        assert_eq!(Value::parse(b"intruder"), Value::FOREIGN);
        assert_eq!(Value::parse(b"w3-"), Value::FOREIGN);
        assert_eq!(v(3, 17).writer(), 3);
        assert_eq!(v(3, 17).seq(), 17);
    }

    #[test]
    fn the_checker_counts_each_kind_of_anomaly() {
        let mut h = History::default();
        for s in 0..5 {
            h.attempt(History::value(1, s));
            h.ack(History::value(1, s), 0, None);
        }
        h.attempt(History::value(2, 0)); // never acknowledged
        h.ack(History::value(3, 0), 1, None); // acknowledged on partition 1
        h.ack(History::value(4, 0), 0, Some(100)); // acknowledged at offset 100
        assert_eq!((h.attempted(), h.acknowledged()), (8, 7));
        let read: Read = vec![
            (0, v(1, 0)),
            (1, v(1, 2)),
            (2, v(1, 1)),        // reordered
            (3, v(1, 2)),        // duplicate
            (4, v(2, 0)),        // indeterminate, stored
            (5, Value::FOREIGN), // unexpected
            (6, v(3, 0)),        // misplaced
            (7, v(9, 0)),        // unexpected: never written
            (8, v(4, 0)),        // read at 8, acknowledged at 100
        ];
        let mut again = read.clone();
        again[0].1 = v(1, 4); // offset 0 differs
        again.remove(3); // offset 3 is missing from the second read
        let reads = BTreeMap::from([(0, read)]);
        let r = check(&h, &reads, &BTreeMap::from([(0, again)]));
        assert_eq!(r.lost, 2, "w1-3 and w1-4: {r:?}");
        assert_eq!(r.duplicates, 1);
        assert_eq!(
            r.reordered, 1,
            "w1-1 after w1-2 (the repeated w1-2 counts as a duplicate)"
        );
        assert_eq!(r.offsets_differ, 2, "a changed value and a missing offset");
        assert_eq!(r.wrong_offset, 1);
        assert_eq!(r.unexpected, 2);
        assert_eq!(r.misplaced, 1);
        assert_eq!(r.indeterminate_stored, 1);
        assert!(!r.clean());
        let target = BTreeMap::from([(0, reads[&0][..4].to_vec())]);
        assert_eq!(divergence(&reads, &target), 5);
        assert!(r
            .to_string()
            .contains("| lost (acknowledged, never read) | 2 |"));
    }

    #[test]
    fn a_clean_history_is_clean() {
        let mut h = History::default();
        let mut reads: BTreeMap<u32, Read> = BTreeMap::new();
        for s in 0..1000u64 {
            h.attempt(History::value(0, s));
            let read = reads.entry((s % 3) as u32).or_default();
            h.ack(
                History::value(0, s),
                (s % 3) as u32,
                Some(read.len() as u64),
            );
            read.push((read.len() as u64, v(0, s)));
        }
        let r = check(&h, &reads, &reads);
        assert!(r.clean(), "{r}");
        assert_eq!((r.read, r.acknowledged, r.lost), (1000, 1000, 0));
        assert_eq!(divergence(&reads, &reads), 0);
    }
}
