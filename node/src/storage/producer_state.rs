//! Idempotent producers: per (producer id, partition) sequence tracking, so a retried batch is
//! answered with its original offsets instead of being written twice.
//!
//! The state is rebuilt on open from a snapshot (`producer-state`, written at roll and close)
//! plus the batch headers after it. Only headers are needed: producer id, epoch, base sequence
//! and record count all sit in the fixed batch header.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strait_protocol::{Offset, RecordBatch};

/// How many recent batches per producer are remembered for duplicate detection (Kafka keeps 5,
/// matching its maximum of in-flight requests per connection).
pub const RECENT_BATCHES_MAX: usize = 5;
/// Most producers tracked per partition; the least recently written is forgotten past this.
pub const PRODUCERS_MAX: usize = 100_000;

pub(crate) const SNAPSHOT_FILE: &str = "producer-state";

/// A batch remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentBatch {
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// What the log knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub recent: VecDeque<RecentBatch>,
    pub last_write_ms: i64,
}

/// The verdict on an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or the next batch in sequence: append it.
    Append,
    /// Already written: answer with these offsets.
    Duplicate {
        base_offset: Offset,
        last_offset: Offset,
    },
}

/// Why a batch's producer fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}: a newer instance of this producer took over (fenced)")]
    Fenced {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    #[error("producer {producer_id} sent sequence {got}, expected {expected}: a batch was lost in between; the producer must retry in order")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// The state covers every batch below this offset.
    offset: u64,
    states: ProducerStates,
}

impl ProducerStates {
    /// Decides whether `batch` is new, a duplicate, or out of order.
    pub fn check(&self, batch: &RecordBatch) -> Result<SequenceCheck, SequenceError> {
        let pid = batch.producer_id();
        if pid < 0 {
            return Ok(SequenceCheck::Append);
        }
        let (epoch, seq) = (batch.producer_epoch(), batch.base_sequence());
        let Some(entry) = self.producers.get(&pid) else {
            // A producer we never saw (or forgot): accept any starting sequence.
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(SequenceError::Fenced {
                producer_id: pid,
                got: epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            return if seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: pid,
                    expected: 0,
                    got: seq,
                })
            };
        }
        if let Some(dup) = entry.recent.iter().find(|b| b.base_sequence == seq) {
            return Ok(SequenceCheck::Duplicate {
                base_offset: Offset(dup.base_offset),
                last_offset: Offset(dup.last_offset),
            });
        }
        let expected = entry
            .recent
            .back()
            .map_or(0, |b| b.last_sequence.wrapping_add(1));
        if seq != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: pid,
                expected,
                got: seq,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that was appended at `base`.
    pub fn record(&mut self, batch: &RecordBatch, base: Offset, now_ms: i64) {
        let pid = batch.producer_id();
        if pid < 0 {
            return;
        }
        let last_offset = base.0 + u64::from(batch.last_offset_delta());
        let recent = RecentBatch {
            base_sequence: batch.base_sequence(),
            last_sequence: batch
                .base_sequence()
                .wrapping_add(batch.last_offset_delta() as i32),
            base_offset: base.0,
            last_offset,
        };
        let entry = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch: batch.producer_epoch(),
            recent: VecDeque::new(),
            last_write_ms: now_ms,
        });
        if batch.producer_epoch() != entry.epoch {
            entry.epoch = batch.producer_epoch();
            entry.recent.clear();
        }
        entry.recent.push_back(recent);
        while entry.recent.len() > RECENT_BATCHES_MAX {
            entry.recent.pop_front();
        }
        entry.last_write_ms = now_ms;
        if self.producers.len() > PRODUCERS_MAX {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_write_ms)
                .map(|(p, _)| *p)
            {
                self.producers.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Writes the state as of `offset` (everything below it is covered).
    pub fn write_snapshot(&self, dir: &Path, offset: Offset) -> io::Result<()> {
        let snapshot = Snapshot {
            offset: offset.0,
            states: self.clone(),
        };
        super::log::write_snapshot_file(&dir.join(SNAPSHOT_FILE), &snapshot)
    }

    /// Reads the snapshot, if a valid one exists, with the offset it covers up to.
    pub fn read_snapshot(dir: &Path) -> Option<(ProducerStates, Offset)> {
        let snapshot: Snapshot = super::log::read_snapshot_file(&dir.join(SNAPSHOT_FILE))?;
        Some((snapshot.states, Offset(snapshot.offset)))
    }
}

#[cfg(test)]
mod tests {
    use strait_protocol::{BatchBuilder, Compression};

    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
        for _ in 0..n {
            b.push(0, None, Some(b"v"), &[]);
        }
        b.finish()
    }

    #[test]
    fn sequences_dedupe_fence_and_reject_gaps() {
        let mut s = ProducerStates::default();
        let first = batch(7, 0, 0, 3);
        assert_eq!(s.check(&first), Ok(SequenceCheck::Append));
        s.record(&first, Offset(10), 0);
        assert_eq!(
            s.check(&first),
            Ok(SequenceCheck::Duplicate {
                base_offset: Offset(10),
                last_offset: Offset(12)
            })
        );
        assert!(matches!(
            s.check(&batch(7, 0, 5, 1)),
            Err(SequenceError::OutOfOrder {
                expected: 3,
                got: 5,
                ..
            })
        ));
        assert_eq!(s.check(&batch(7, 0, 3, 1)), Ok(SequenceCheck::Append));
        assert_eq!(
            s.check(&batch(7, 1, 0, 1)),
            Ok(SequenceCheck::Append),
            "a new epoch starts over"
        );
        s.record(&batch(7, 1, 0, 1), Offset(13), 0);
        assert!(matches!(
            s.check(&batch(7, 0, 3, 1)),
            Err(SequenceError::Fenced { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        s.write_snapshot(dir.path(), Offset(14)).unwrap();
        assert_eq!(
            ProducerStates::read_snapshot(dir.path()),
            Some((s, Offset(14)))
        );
    }
}
