//! Where batches copied from other clusters landed in this log: the offset map that makes
//! identity-mode translation exact.
//!
//! A mirrored batch keeps its records and their relative offsets, so one entry per batch (its
//! source base and last offset, and the base offset it got here) maps every record. The map is
//! derived data: every entry comes from the partition's provenance log (the chain each mirrored
//! batch was sent with, written before the batch), rebuilt from it on open, so a crash can never
//! leave it disagreeing with the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strait_protocol::Provenance;

use super::provenance_log::Stored;

/// A source partition of another cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceKey {
    pub cluster: String,
    pub topic: String,
    pub partition: u32,
}

/// One mirrored batch: source offsets `source_base..=source_last` sit at `target_base..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub source_base: u64,
    pub source_last: u64,
    pub target_base: u64,
}

/// How a source offset relates to what this log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The record is here, at this offset.
    Exact(u64),
    /// The source offset was never copied here: it was skipped (its batch had already passed
    /// through this cluster) or deleted on the source first. The next copied record is at
    /// this target offset.
    NotCopied { next_target: u64 },
    /// Not copied yet: everything copied so far lies below.
    Ahead { mirrored_through: Option<u64> },
    /// Copied once, but retention removed it here.
    Deleted,
}

/// Every mirrored batch of one log, per source partition, in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorMap {
    sources: BTreeMap<SourceKey, Vec<Span>>,
}

impl MirrorMap {
    /// Rebuilt from a partition's provenance log.
    pub fn from_stored(entries: &[Stored]) -> MirrorMap {
        let mut map = MirrorMap::default();
        for e in entries {
            if let Some((key, source_base)) = MirrorMap::key_of(&e.provenance) {
                map.record(key, source_base, e.last - e.base, e.base);
            }
        }
        map
    }

    /// The source partition a batch was copied from (its chain's last hop), if it was.
    pub fn key_of(provenance: &Provenance) -> Option<(SourceKey, u64)> {
        let hop = provenance.source()?;
        Some((
            SourceKey {
                cluster: hop.cluster.clone(),
                topic: hop.topic.clone(),
                partition: hop.partition,
            },
            hop.base_offset,
        ))
    }

    /// The next source offset to copy from `key`: one past the last copied batch.
    pub fn next_source_offset(&self, key: &SourceKey) -> Option<u64> {
        self.sources
            .get(key)
            .and_then(|s| s.last())
            .map(|s| s.source_last + 1)
    }

    /// Records that a batch spanning `last_delta` offsets past its base, copied from `key` at
    /// `source_base`, now starts at `target_base`.
    pub fn record(&mut self, key: SourceKey, source_base: u64, last_delta: u64, target_base: u64) {
        let span = Span {
            source_base,
            source_last: source_base + last_delta,
            target_base,
        };
        let spans = self.sources.entry(key).or_default();
        if spans
            .last()
            .is_none_or(|l| l.source_last < span.source_base)
        {
            spans.push(span);
        }
    }

    /// Where source offset `offset` of `key` lives here. `log_start` is this log's first offset.
    pub fn translate(&self, key: &SourceKey, offset: u64, log_start: u64) -> Translation {
        let Some(spans) = self.sources.get(key).filter(|s| !s.is_empty()) else {
            return Translation::Ahead {
                mirrored_through: None,
            };
        };
        let i = spans.partition_point(|s| s.source_last < offset);
        let Some(span) = spans.get(i) else {
            return Translation::Ahead {
                mirrored_through: spans.last().map(|s| s.source_last),
            };
        };
        if offset < span.source_base {
            return Translation::NotCopied {
                next_target: span.target_base,
            };
        }
        let target = span.target_base + (offset - span.source_base);
        if target < log_start {
            return Translation::Deleted;
        }
        Translation::Exact(target)
    }

    /// The first target offset at or after source offset `offset`: where a consumer that
    /// committed `offset` on the source resumes here.
    pub fn position(&self, key: &SourceKey, offset: u64, log_end: u64) -> u64 {
        let Some(spans) = self.sources.get(key) else {
            return log_end;
        };
        let i = spans.partition_point(|s| s.source_last < offset);
        match spans.get(i) {
            Some(s) if offset >= s.source_base => s.target_base + (offset - s.source_base),
            Some(s) => s.target_base,
            None => spans
                .last()
                .map(|s| s.target_base + (s.source_last - s.source_base) + 1)
                .unwrap_or(log_end),
        }
    }

    /// Forgets batches that lie wholly below the log start (retention removed them).
    pub fn prune(&mut self, log_start: u64) {
        for spans in self.sources.values_mut() {
            let keep = spans
                .partition_point(|s| s.target_base + (s.source_last - s.source_base) < log_start);
            // Keep the last span even when deleted: it still says where copying resumes.
            let keep = keep.min(spans.len().saturating_sub(1));
            spans.drain(..keep);
        }
    }

    /// Forgets batches at or above `end` (the log was truncated there).
    pub fn truncate(&mut self, end: u64) {
        for spans in self.sources.values_mut() {
            spans.retain(|s| s.target_base < end);
        }
        self.sources.retain(|_, s| !s.is_empty());
    }

    pub fn sources(&self) -> impl Iterator<Item = (&SourceKey, &[Span])> {
        self.sources.iter().map(|(k, v)| (k, v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last offset delta of a batch of `n` records.
    fn batch(n: u64) -> u64 {
        n - 1
    }

    #[test]
    fn translates_exactly_and_reports_what_is_not_here() {
        let key = SourceKey {
            cluster: "east".into(),
            topic: "orders".into(),
            partition: 0,
        };
        let mut m = MirrorMap::default();
        // Source 0..=9 at target 100.., source 20..=24 at target 130.. (10..20 skipped).
        m.record(key.clone(), 0, batch(10), 100);
        m.record(key.clone(), 20, batch(5), 130);
        m.record(key.clone(), 5, batch(1), 200); // a replay below the end is ignored
        assert_eq!(m.translate(&key, 3, 0), Translation::Exact(103));
        assert_eq!(m.translate(&key, 24, 0), Translation::Exact(134));
        assert_eq!(
            m.translate(&key, 12, 0),
            Translation::NotCopied { next_target: 130 }
        );
        assert_eq!(
            m.translate(&key, 25, 0),
            Translation::Ahead {
                mirrored_through: Some(24)
            }
        );
        assert_eq!(m.translate(&key, 3, 105), Translation::Deleted);
        assert_eq!(m.next_source_offset(&key), Some(25));
        assert_eq!(m.position(&key, 12, 500), 130);
        assert_eq!(m.position(&key, 25, 500), 135);
        assert_eq!(m.position(&key, 4, 500), 104);
        m.prune(115);
        assert_eq!(m.sources().next().unwrap().1.len(), 1);
        m.truncate(130);
        assert_eq!(m.next_source_offset(&key), None);
        m.record(key.clone(), 30, batch(2), 140);
        assert_eq!(m.next_source_offset(&key), Some(32));
    }
}
