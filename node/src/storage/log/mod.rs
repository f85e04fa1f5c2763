//! The partition log: an ordered set of segments with one writer position, group-committed
//! durability, crash recovery and retention.
//!
//! Locking: `state` guards the segments and the end offset and is held only for in-memory work
//! and the `pwrite` of an append; reads copy what they need under it and read the file after
//! releasing it. `sync` guards the group commit: one appender fsyncs for everyone who wrote
//! before it started, the others wait on `synced`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use strait_protocol::batch::{self, DecodeLimits};
use strait_protocol::{LeaderEpoch, Offset, Provenance, RecordBatch};
use tracing::{error, info, warn};

use super::config::{FlushPolicy, LogConfig};
use super::corruption::{self, Action};
use super::mirror_map::{MirrorMap, SourceKey, Translation};
use super::producer_state::{ProducerStates, SequenceCheck, SequenceError};
use super::provenance_log::{ProvenanceLog, Stored};
use super::segment::{self, ChunkReader, ScanStop, Segment};

mod commit;
mod read;
mod recovery;
mod retention;

const CHECKPOINT_FILE: &str = "recovery-point";
const LOG_START_FILE: &str = "log-start-offset";
/// How often, at most, the recovery checkpoint is rewritten by the group commit.
const CHECKPOINT_INTERVAL_MS: i64 = 1000;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{log}: offset {requested} is out of range; valid offsets are {start}..{end}")]
    OffsetOutOfRange {
        log: String,
        requested: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("{log}: explicit offset {got} is below the log end {expected}; offsets may only grow")]
    OffsetNotMonotonic {
        log: String,
        expected: Offset,
        got: Offset,
    },
    #[error("{log} is offline: {reason}; restart the node after fixing the disk")]
    Offline { log: String, reason: String },
    #[error("{log}: write failed ({source}); nothing was appended, retry once the disk has room")]
    WriteFailed { log: String, source: io::Error },
    #[error("{log}: segment {segment} is corrupt at position {position}: {reason}")]
    Corrupt {
        log: String,
        segment: Offset,
        position: u64,
        reason: String,
    },
    #[error("{log}: {context}: {source}")]
    Io {
        log: String,
        context: String,
        source: io::Error,
    },
    #[error("{log}: {source}")]
    Sequence { log: String, source: SequenceError },
    #[error("{log}: a mirrored batch must carry provenance naming the cluster it was copied from; is the flow older than this node?")]
    NoProvenance { log: String },
    #[error("{log}: the log end {end} leaves no room for this batch below the largest offset {max}; nothing was appended", max = Offset::MAX)]
    OffsetsExhausted { log: String, end: Offset },
    #[error("{log}: cannot truncate to {offset}: {reason}")]
    BadTruncation {
        log: String,
        offset: Offset,
        reason: String,
    },
}

impl LogError {
    /// Whether the same request may succeed if retried.
    pub fn is_retriable(&self) -> bool {
        matches!(self, LogError::WriteFailed { .. })
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// Whole batches read from the log, as stored.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub batches: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub segments_scanned: usize,
    pub bytes_scanned: u64,
    pub indexes_rebuilt: usize,
    /// Offsets from which data was cut, with the reason.
    pub truncated: Option<(Offset, String)>,
}

/// Summary numbers for describing a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub log_start: Offset,
    pub log_end: Offset,
    pub high_watermark: Offset,
    pub size_bytes: u64,
    pub segments: usize,
}

/// Everything before `position` in segment `segment_base` (and all earlier segments) is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecoveryPoint {
    segment_base: Offset,
    position: u64,
    offset: Offset,
}

impl RecoveryPoint {
    /// The end of `segment` (the log's last), where the log's next offset is `offset`.
    fn end_of(segment: &Segment, offset: Offset) -> RecoveryPoint {
        RecoveryPoint {
            segment_base: segment.base,
            position: segment.size,
            offset,
        }
    }
}

struct LogState {
    config: LogConfig,
    segments: BTreeMap<Offset, Segment>,
    log_start: Offset,
    next_offset: Offset,
    epoch: LeaderEpoch,
    offline: Option<String>,
    /// Sealed segment files written since their last fsync.
    unsynced_sealed: Vec<Arc<File>>,
    producers: ProducerStates,
    mirrors: MirrorMap,
    /// Where each mirrored batch came from; the mirror map is derived from it.
    provenance: ProvenanceLog,
}

/// How an append chooses the offsets of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendMode {
    /// Next offsets of the log; idempotent producers are checked.
    Assign,
    /// The offsets the batch carries (followers).
    Explicit,
}

struct SyncState {
    syncing: bool,
    durable: RecoveryPoint,
    failed: Option<String>,
    checkpoint_written_ms: i64,
}

/// One partition's log on disk.
pub struct PartitionLog {
    dir: PathBuf,
    name: String,
    state: Mutex<LogState>,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

impl PartitionLog {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        lock(&self.state).config.clone()
    }

    /// Replaces the settings; they apply from the next append, roll and cleaning on.
    pub fn set_config(&self, config: LogConfig) {
        lock(&self.state).config = config;
    }

    /// The epoch of the partition's current leader (written into every batch it appends).
    pub fn leader_epoch(&self) -> LeaderEpoch {
        lock(&self.state).epoch
    }

    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        lock(&self.state).epoch = epoch;
    }

    /// Appends a batch at the log end, assigning its offsets. Returns once the batch is as
    /// durable as the flush policy promises (with `always`, after an fsync that covers it).
    pub fn append(&self, batch: RecordBatch, now_ms: i64) -> Result<Appended, LogError> {
        self.append_inner(batch, AppendMode::Assign, now_ms, true)
            .map(|a| a.unwrap_or_else(|| unreachable!("only mirrored appends skip")))
    }

    /// Appends a batch at the offsets it already carries (mirrors, followers). Gaps are
    /// accepted; going backwards is not.
    pub fn append_at(&self, batch: RecordBatch, now_ms: i64) -> Result<Appended, LogError> {
        self.append_inner(batch, AppendMode::Explicit, now_ms, true)
            .map(|a| a.unwrap_or_else(|| unreachable!("only mirrored appends skip")))
    }

    /// Where source offset `offset` of `key` lives in this log.
    pub fn translate_mirrored(&self, key: &SourceKey, offset: u64) -> Translation {
        let st = lock(&self.state);
        st.mirrors.translate(key, offset, st.log_start.0)
    }

    /// The first offset here holding a source offset at or after `offset` of `key`.
    pub fn mirrored_position(&self, key: &SourceKey, offset: u64) -> u64 {
        let st = lock(&self.state);
        st.mirrors.position(key, offset, st.next_offset.0)
    }

    /// The next source offset of `key` to copy: everything below it is here (or was skipped).
    pub fn mirrored_next(&self, key: &SourceKey) -> Option<u64> {
        lock(&self.state).mirrors.next_source_offset(key)
    }

    /// Every source partition copied into this log with the next source offset to copy.
    pub fn mirrored_sources(&self) -> Vec<(SourceKey, u64)> {
        let st = lock(&self.state);
        st.mirrors
            .sources()
            .filter_map(|(k, spans)| spans.last().map(|s| (k.clone(), s.source_last + 1)))
            .collect()
    }

    /// Appends one chunk of a mirror flow, each batch with the provenance it was sent with:
    /// at the batches' own offsets into a prefix mirror (`at_source_offsets`; batches already
    /// here are a retry and skipped), or at the end of an identity-mode topic, where each
    /// chain's last hop names the batch's source partition and offsets and a batch whose
    /// source offsets were copied before is skipped. The check and the append happen under one
    /// lock, so a resumed copy never duplicates. The chunk's provenance entries are durable
    /// before its batches are written (a batch never lacks its provenance, see
    /// `provenance_log`); under `flush = always` one fsync then covers the whole chunk. Answers
    /// the first and last offsets appended, None when every batch was here already.
    pub fn append_copies(
        &self,
        batches: Vec<(RecordBatch, Provenance)>,
        at_source_offsets: bool,
        now_ms: i64,
    ) -> Result<Option<(Offset, Offset)>, LogError> {
        let mut range: Option<(Offset, Offset)> = None;
        let flush = {
            let mut st = lock(&self.state);
            if let Some(reason) = &st.offline {
                return Err(LogError::Offline {
                    log: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            // Where each batch goes, decided before anything is written.
            let mut planned = Vec::with_capacity(batches.len());
            let mut next = st.next_offset;
            let mut copied_through = std::collections::HashMap::new();
            for (batch, provenance) in batches {
                let span = u64::from(batch.last_offset_delta()) + 1;
                let mirrored = MirrorMap::key_of(&provenance);
                let base = if at_source_offsets {
                    if batch.next_offset() <= next {
                        continue;
                    }
                    if batch.base_offset() < next {
                        return Err(LogError::OffsetNotMonotonic {
                            log: self.name.clone(),
                            expected: next,
                            got: batch.base_offset(),
                        });
                    }
                    batch.base_offset()
                } else {
                    let Some((key, source_base)) = &mirrored else {
                        return Err(LogError::NoProvenance {
                            log: self.name.clone(),
                        });
                    };
                    let through = copied_through
                        .get(key)
                        .copied()
                        .or_else(|| st.mirrors.next_source_offset(key));
                    if through.is_some_and(|next| *source_base < next) {
                        continue;
                    }
                    copied_through.insert(key.clone(), source_base + span);
                    next
                };
                if base.checked_plus(span).is_none() {
                    return Err(LogError::OffsetsExhausted {
                        log: self.name.clone(),
                        end: base,
                    });
                }
                next = base.plus(span);
                planned.push((batch, base, provenance, mirrored));
            }
            // The chains move into the entries: the batches need only their mirror keys now.
            let entries: Vec<Stored> = planned
                .iter_mut()
                .filter(|(_, _, p, _)| !p.is_empty())
                .map(|(b, base, p, _)| Stored {
                    base: base.0,
                    last: base.0 + u64::from(b.last_offset_delta()),
                    provenance: std::mem::take(p),
                })
                .collect();
            st.provenance
                .append(&entries)
                .map_err(|source| self.io("writing provenance", source))?;
            for (batch, base, _, mirrored) in planned {
                let delta = u64::from(batch.last_offset_delta());
                if let Err(e) = self.write_batch(&mut st, &batch, base, now_ms) {
                    // Entries for batches that never landed must not describe later ones.
                    let end = st.next_offset;
                    if let Err(cut) = st.provenance.truncate_from(end) {
                        warn!(log = %self.name, error = %cut, "could not cut provenance past a failed write");
                    }
                    return Err(e);
                }
                if let Some((key, source_base)) = mirrored {
                    st.mirrors.record(key, source_base, delta, base.0);
                }
                let last = base.plus(delta);
                range = Some((range.map_or(base, |(first, _)| first), last));
            }
            st.config.flush
        };
        // Also when everything was skipped: a retry's batches may not be durable yet.
        if flush == FlushPolicy::Always {
            self.sync_through(self.log_end(), now_ms)?;
        }
        Ok(range)
    }

    /// The provenance of the mirrored batches in `batches` (whole stored batches, as a read
    /// answers them), by base offset: what a fetch by a mirror principal carries.
    pub fn provenance_of(&self, batches: &Bytes) -> Result<Vec<(u64, Provenance)>, LogError> {
        let mut bases = Vec::new();
        let mut rest = &batches[..];
        while let Some((base, len)) = batch::peek_header(rest) {
            bases.push(base.0);
            rest = rest.get(len..).unwrap_or_default();
        }
        // Located under the lock, read after it: the read is file I/O.
        let located = lock(&self.state).provenance.locate(&bases);
        located
            .read()
            .map_err(|source| self.io("reading provenance", source))
    }

    /// Writes one batch at `base` (rolling first if due) and moves the end past it; a failed
    /// write is cut off again.
    fn write_batch(
        &self,
        st: &mut LogState,
        batch: &RecordBatch,
        base: Offset,
        now_ms: i64,
    ) -> Result<Offset, LogError> {
        let last_offset = base.plus(u64::from(batch.last_offset_delta()));
        self.roll_if_needed(st, base, batch.size_bytes() as u64, now_ms)?;
        let epoch = st.epoch;
        let active = last_segment(&mut st.segments);
        let before = active.size;
        if let Err(source) = active.append(batch, base, epoch) {
            return Err(self.undo_failed_write(st, before, source));
        }
        st.next_offset = last_offset.plus(1);
        Ok(last_offset)
    }

    fn append_inner(
        &self,
        batch: RecordBatch,
        mode: AppendMode,
        now_ms: i64,
        sync: bool,
    ) -> Result<Option<Appended>, LogError> {
        let (appended, flush) = {
            let mut st = lock(&self.state);
            if let Some(reason) = &st.offline {
                return Err(LogError::Offline {
                    log: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            let base = if mode == AppendMode::Explicit {
                if batch.base_offset() < st.next_offset {
                    return Err(LogError::OffsetNotMonotonic {
                        log: self.name.clone(),
                        expected: st.next_offset,
                        got: batch.base_offset(),
                    });
                }
                batch.base_offset()
            } else {
                // Idempotent producers: a retried batch gets its original offsets back.
                match st.producers.check(&batch) {
                    Ok(SequenceCheck::Append) => {}
                    Ok(SequenceCheck::Duplicate {
                        base_offset,
                        last_offset,
                    }) => {
                        let flush = st.config.flush;
                        drop(st);
                        if flush == FlushPolicy::Always {
                            self.sync_through(last_offset.plus(1), now_ms)?;
                        }
                        return Ok(Some(Appended {
                            base_offset,
                            last_offset,
                        }));
                    }
                    Err(source) => {
                        return Err(LogError::Sequence {
                            log: self.name.clone(),
                            source,
                        })
                    }
                }
                st.next_offset
            };
            let span = u64::from(batch.last_offset_delta()) + 1;
            if base.checked_plus(span).is_none() {
                return Err(LogError::OffsetsExhausted {
                    log: self.name.clone(),
                    end: base,
                });
            }
            let last_offset = self.write_batch(&mut st, &batch, base, now_ms)?;
            if mode == AppendMode::Assign {
                st.producers.record(&batch, base, now_ms);
            }
            (
                Appended {
                    base_offset: base,
                    last_offset,
                },
                st.config.flush,
            )
        };
        if sync && flush == FlushPolicy::Always {
            self.sync_through(appended.last_offset.plus(1), now_ms)?;
        }
        Ok(Some(appended))
    }

    /// A failed `pwrite` may have left part of the batch behind: cut it off so the log stays
    /// valid, or take the partition offline if even that fails.
    fn undo_failed_write(&self, st: &mut LogState, before: u64, source: io::Error) -> LogError {
        let active = last_segment(&mut st.segments);
        match active.file.set_len(before) {
            Ok(()) => {
                active.size = before;
                LogError::WriteFailed {
                    log: self.name.clone(),
                    source,
                }
            }
            Err(e) => {
                let reason = format!(
                    "write failed ({source}) and the partial batch could not be cut off ({e})"
                );
                st.offline = Some(reason.clone());
                error!(log = %self.name, %reason, "partition offline");
                LogError::Offline {
                    log: self.name.clone(),
                    reason,
                }
            }
        }
    }

    fn roll_if_needed(
        &self,
        st: &mut LogState,
        base: Offset,
        incoming: u64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let config = st.config.clone();
        let active = last_segment(&mut st.segments);
        if active.is_empty() {
            if active.base != base && active.next_offset == active.base {
                // An empty segment whose base does not match an explicit offset: re-base it.
                let dir = self.dir.clone();
                let old = std::mem::replace(
                    active,
                    Segment::create(&dir, base, config.index_interval_bytes, now_ms)
                        .map_err(|source| self.io("creating a segment", source))?,
                );
                let old_base = old.base;
                old.delete_files()
                    .map_err(|source| self.io("removing an empty segment", source))?;
                let seg = st
                    .segments
                    .remove(&old_base)
                    .unwrap_or_else(|| unreachable!("the active segment"));
                st.segments.insert(seg.base, seg);
            }
            return Ok(());
        }
        let full = active.size + incoming > config.segment_bytes
            || active.size + incoming > u64::from(u32::MAX);
        let aged = config
            .segment_ms
            .is_some_and(|ms| now_ms.saturating_sub(active.created_ms) >= ms as i64);
        let far = base.0 - active.base.0 > u64::from(u32::MAX);
        if !(full || aged || far) {
            return Ok(());
        }
        active
            .write_indexes()
            .map_err(|source| self.io("writing indexes of a sealed segment", source))?;
        let sealed_file = active.file.clone();
        let seg = Segment::create(&self.dir, base, config.index_interval_bytes, now_ms)
            .map_err(|source| self.io("creating a segment", source))?;
        st.unsynced_sealed.push(sealed_file);
        st.segments.insert(seg.base, seg);
        if let Err(e) = st.producers.write_snapshot(&self.dir, base) {
            warn!(log = %self.name, error = %e, "could not snapshot producer state; the next open replays more");
        }
        Ok(())
    }

    /// The offset below which consumers may read. Under `flush = always` only durable records
    /// are visible, so a consumer never sees a record that a crash could take back.
    pub fn high_watermark(&self) -> Offset {
        let (end, flush) = {
            let st = lock(&self.state);
            (st.next_offset, st.config.flush)
        };
        if flush == FlushPolicy::Always {
            lock(&self.sync).durable.offset.min(end)
        } else {
            end
        }
    }

    pub fn stats(&self) -> LogStats {
        let hw = self.high_watermark();
        let st = lock(&self.state);
        LogStats {
            log_start: st.log_start,
            log_end: st.next_offset,
            high_watermark: hw,
            size_bytes: st.segments.values().map(|s| s.size).sum(),
            segments: st.segments.len(),
        }
    }

    /// Base offset of the active segment: everything below it is sealed.
    pub fn active_segment_base(&self) -> Offset {
        let mut st = lock(&self.state);
        last_segment(&mut st.segments).base
    }

    pub fn log_start(&self) -> Offset {
        lock(&self.state).log_start
    }

    pub fn log_end(&self) -> Offset {
        lock(&self.state).next_offset
    }

    pub(crate) fn io(&self, context: &str, source: io::Error) -> LogError {
        LogError::Io {
            log: self.name.clone(),
            context: context.into(),
            source,
        }
    }
}

/// Why a partition went offline over damaged data, with the way out.
fn damaged_reason(segment: Offset, position: u64, reason: &str) -> String {
    format!("segment {segment} is corrupt at position {position} ({reason}); restore the segment from a backup or a replica, or remove it and every later segment to lose those offsets, then restart")
}

/// Writes `value` as postcard followed by its CRC-32C, atomically: the shared form of the
/// derived-state snapshots (producer state, mirror map).
pub(crate) fn write_snapshot_file<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut raw = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let crc = crc32c::crc32c(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    crate::durable_file::write(path, &raw)
}

/// Reads a snapshot written by [`write_snapshot_file`]; None if missing, torn or corrupt.
pub(crate) fn read_snapshot_file<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let raw = std::fs::read(path).ok()?;
    if raw.len() < 4 {
        return None;
    }
    let (body, crc) = raw.split_at(raw.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    postcard::from_bytes(body).ok()
}

fn last_segment(segments: &mut BTreeMap<Offset, Segment>) -> &mut Segment {
    segments
        .values_mut()
        .next_back()
        .unwrap_or_else(|| unreachable!("a log always has an active segment"))
}

/// Locks a mutex, recovering the guard if a panicking thread poisoned it: the state it guards
/// is kept consistent by construction (every mutation is completed before it can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
