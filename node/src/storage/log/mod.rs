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
use strait_protocol::{LeaderEpoch, Offset, RecordBatch};
use tracing::{error, info, warn};

use super::config::{FlushPolicy, LogConfig};
use super::corruption::{self, Action};
use super::mirror_map::{MirrorMap, SourceKey, Translation};
use super::producer_state::{ProducerStates, SequenceCheck, SequenceError};
use super::segment::{self, ChunkReader, ScanStop, Segment};

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
}

/// How an append chooses the offsets of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendMode {
    /// Next offsets of the log; idempotent producers are checked.
    Assign,
    /// The offsets the batch carries (prefix mirrors, followers).
    Explicit,
    /// Next offsets of the log, for a batch copied from another cluster: its provenance is
    /// recorded in the mirror map and a batch copied before is skipped.
    Mirrored,
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
    /// Opens (or creates) the log in `dir`, recovering whatever a crash left behind.
    pub fn open(
        dir: &Path,
        name: &str,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        let io_err = |context: &str| {
            let log = name.to_string();
            let context = context.to_string();
            move |source| LogError::Io {
                log,
                context,
                source,
            }
        };
        crate::durable_file::create_dir(dir).map_err(io_err("creating the log directory"))?;
        let bases = list_segments(dir).map_err(io_err("listing segments"))?;
        let checkpoint = read_checkpoint(dir);
        let stored_start = read_offset_file(&dir.join(LOG_START_FILE));
        let mut report = RecoveryReport {
            segments: bases.len(),
            ..Default::default()
        };
        let limits = config.decode_limits();
        let mut segments = BTreeMap::new();
        let mut offline = None;
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::open(dir, base, config.index_interval_bytes, now_ms)
                .map_err(io_err("opening a segment"))?;
            let next_base = bases.get(i + 1).copied();
            let trusted =
                matches!((checkpoint, next_base), (Some(cp), Some(nb)) if nb <= cp.segment_base);
            if trusted {
                if !seg.load_indexes(next_base.unwrap_or(base)) {
                    report.indexes_rebuilt += 1;
                    if let Err(stop) = seg
                        .rebuild(&limits)
                        .map_err(io_err("rebuilding an index"))?
                    {
                        // Below the recovery point: data the log promised durable is damaged.
                        corruption::report(
                            name,
                            base,
                            stop.position,
                            &stop.reason,
                            Action::Offline,
                        );
                        offline.get_or_insert(damaged_reason(base, stop.position, &stop.reason));
                    }
                    seg.write_indexes()
                        .map_err(io_err("writing a rebuilt index"))?;
                }
                seg.next_offset = seg.next_offset.max(next_base.unwrap_or(base));
                segments.insert(base, seg);
                continue;
            }
            report.segments_scanned += 1;
            report.bytes_scanned += seg.size;
            let stop = seg.rebuild(&limits).map_err(io_err("scanning a segment"))?;
            let segment_next = seg.next_offset;
            segments.insert(base, seg);
            if let Err(stop) = stop {
                let later: Vec<Offset> = bases[i + 1..].to_vec();
                truncate_after_corruption(dir, name, &mut segments, base, stop.position, &later)
                    .map_err(io_err("truncating a torn tail"))?;
                corruption::report(name, base, stop.position, &stop.reason, Action::Truncated);
                warn!(log = name, segment = base.0, position = stop.position, reason = %stop.reason,
                    first_lost_offset = segment_next.0, dropped_segments = later.len(),
                    "truncated the log at the first invalid batch; offsets from {segment_next} were lost");
                report.truncated = Some((segment_next, stop.reason));
                break;
            }
        }
        if segments.is_empty() {
            let base = stored_start.unwrap_or_default();
            let seg = Segment::create(dir, base, config.index_interval_bytes, now_ms)
                .map_err(io_err("creating the first segment"))?;
            segments.insert(base, seg);
        }
        let (_, last) = segments
            .iter()
            .next_back()
            .unwrap_or_else(|| unreachable!("a segment was just ensured"));
        let next_offset = last.next_offset;
        super::durability_journal::sync_data(&last.file)
            .map_err(io_err("syncing the recovered tail"))?;
        let durable = RecoveryPoint {
            segment_base: last.base,
            position: last.size,
            offset: next_offset,
        };
        // An empty log needs no checkpoint, and an unchanged one need not be rewritten: each
        // durable write costs fsyncs, and a node opens thousands of partitions at start.
        let empty = segments.len() == 1 && last.size == 0;
        if checkpoint != Some(durable) && !empty {
            write_checkpoint(dir, durable).map_err(io_err("writing the recovery checkpoint"))?;
        }
        let (producers, mirrors, damage) = replay_headers(dir, &segments, next_offset, &limits)
            .map_err(io_err("replaying producer state and the mirror map"))?;
        if let Some((base, stop)) = damage {
            corruption::report(name, base, stop.position, &stop.reason, Action::Offline);
            offline.get_or_insert(damaged_reason(base, stop.position, &stop.reason));
        }
        if let Some(reason) = &offline {
            error!(log = name, %reason, "partition offline");
        }
        let first_base = segments.keys().next().copied().unwrap_or_default();
        let log_start = stored_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(next_offset);
        info!(
            log = name,
            start = log_start.0,
            end = next_offset.0,
            segments = segments.len(),
            scanned_bytes = report.bytes_scanned,
            "log recovered"
        );
        let state = LogState {
            config,
            segments,
            log_start,
            next_offset,
            epoch: LeaderEpoch(0),
            offline,
            unsynced_sealed: Vec::new(),
            producers,
            mirrors,
        };
        let sync = SyncState {
            syncing: false,
            durable,
            failed: None,
            checkpoint_written_ms: now_ms,
        };
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            state: Mutex::new(state),
            sync: Mutex::new(sync),
            synced: Condvar::new(),
        };
        Ok((log, report))
    }

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

    /// Appends one chunk of a mirror flow: at the batches' own offsets into a prefix mirror
    /// (`at_source_offsets`; batches already here are a retry and skipped), or at the end of
    /// an identity-mode topic, where each batch's last provenance hop names its source
    /// partition and offsets and a batch whose source offsets were copied before is skipped
    /// (the check and the append happen under one lock, so a resumed copy never duplicates).
    /// Under `flush = always` one fsync covers the whole chunk, not one per batch. Answers the
    /// first and last offsets appended, None when every batch was here already.
    pub fn append_copies(
        &self,
        batches: Vec<RecordBatch>,
        at_source_offsets: bool,
        now_ms: i64,
    ) -> Result<Option<(Offset, Offset)>, LogError> {
        let mut range: Option<(Offset, Offset)> = None;
        for batch in batches {
            let appended = if at_source_offsets {
                if batch.next_offset() <= self.log_end() {
                    continue;
                }
                self.append_inner(batch, AppendMode::Explicit, now_ms, false)?
            } else {
                self.append_inner(batch, AppendMode::Mirrored, now_ms, false)?
            };
            if let Some(a) = appended {
                let first = range.map_or(a.base_offset, |(first, _)| first);
                range = Some((first, a.last_offset));
            }
        }
        // Also when everything was skipped: a retry's batches may not be durable yet.
        if lock(&self.state).config.flush == FlushPolicy::Always {
            self.sync_through(self.log_end(), now_ms)?;
        }
        Ok(range)
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
            let mut mirrored = None;
            let base = if mode == AppendMode::Mirrored {
                let Some((key, source_base)) = MirrorMap::key_of(&batch) else {
                    return Err(LogError::NoProvenance {
                        log: self.name.clone(),
                    });
                };
                if st
                    .mirrors
                    .next_source_offset(&key)
                    .is_some_and(|next| source_base < next)
                {
                    return Ok(None);
                }
                mirrored = Some((key, source_base));
                st.next_offset
            } else if mode == AppendMode::Explicit {
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
            let last_offset = base.plus(span - 1);
            self.roll_if_needed(&mut st, base, batch.size_bytes() as u64, now_ms)?;
            let epoch = st.epoch;
            let active = last_segment(&mut st.segments);
            let before = active.size;
            if let Err(source) = active.append(&batch, base, epoch) {
                return Err(self.undo_failed_write(&mut st, before, source));
            }
            st.next_offset = last_offset.plus(1);
            match mode {
                AppendMode::Assign => st.producers.record(&batch, base, now_ms),
                // As the replay on open does: any stored provenance is mapped.
                AppendMode::Explicit | AppendMode::Mirrored => {
                    if let Some((key, source_base)) = mirrored.or_else(|| MirrorMap::key_of(&batch))
                    {
                        st.mirrors.record(key, source_base, &batch, base.0);
                    }
                }
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
        if let Err(e) = st.mirrors.write_snapshot(&self.dir, base) {
            warn!(log = %self.name, error = %e, "could not snapshot the mirror map; the next open replays more");
        }
        Ok(())
    }

    /// Waits until every offset below `end` is on disk, sharing one fsync among all appenders
    /// that arrive while another fsync runs.
    pub fn sync_through(&self, end: Offset, now_ms: i64) -> Result<(), LogError> {
        let mut s = lock(&self.sync);
        loop {
            if let Some(reason) = &s.failed {
                return Err(LogError::Offline {
                    log: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            if s.durable.offset >= end {
                return Ok(());
            }
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            let result = self.sync_now();
            s = lock(&self.sync);
            s.syncing = false;
            match result {
                Ok(point) => {
                    let rolled = point.segment_base != s.durable.segment_base;
                    s.durable = point;
                    if rolled || now_ms - s.checkpoint_written_ms >= CHECKPOINT_INTERVAL_MS {
                        s.checkpoint_written_ms = now_ms;
                        if let Err(e) = write_checkpoint(&self.dir, point) {
                            warn!(log = %self.name, error = %e, "could not write the recovery checkpoint; recovery will scan more");
                        }
                    }
                }
                Err(e) => {
                    // A failed fsync may have dropped dirty pages: never pretend it worked.
                    let reason = format!("fsync failed: {e}");
                    error!(log = %self.name, %reason, "partition offline");
                    s.failed = Some(reason.clone());
                    lock(&self.state).offline = Some(reason);
                }
            }
            self.synced.notify_all();
        }
    }

    fn sync_now(&self) -> io::Result<RecoveryPoint> {
        let (files, point) = {
            let mut st = lock(&self.state);
            let mut files: Vec<Arc<File>> = std::mem::take(&mut st.unsynced_sealed);
            let next_offset = st.next_offset;
            let active = last_segment(&mut st.segments);
            files.push(active.file.clone());
            (
                files,
                RecoveryPoint {
                    segment_base: active.base,
                    position: active.size,
                    offset: next_offset,
                },
            )
        };
        for f in &files {
            super::durability_journal::sync_data(f)?;
        }
        Ok(point)
    }

    /// Cuts the log back to `end` (failback: the old primary drops the tail that its replica
    /// never had, after it was quarantined). `end` must be a batch boundary between the log
    /// start and end. The cut is durable before this returns; producer state and the mirror
    /// map are rebuilt from what remains.
    pub fn truncate_to(&self, end: Offset, now_ms: i64) -> Result<(), LogError> {
        let mut st = lock(&self.state);
        let bad = |reason: String| LogError::BadTruncation {
            log: self.name.clone(),
            offset: end,
            reason,
        };
        if end >= st.next_offset {
            return Ok(());
        }
        if end < st.log_start {
            return Err(bad(format!("below the log start {}", st.log_start)));
        }
        let io = |context: &'static str| {
            let log = self.name.clone();
            move |source| LogError::Io {
                log,
                context: context.into(),
                source,
            }
        };
        let limits = st.config.decode_limits();
        // Segments wholly at or after `end` go; the one holding `end` is cut at its batch.
        let first = st.segments.keys().next().copied().unwrap_or_default();
        let doomed: Vec<Offset> = st
            .segments
            .keys()
            .filter(|b| **b > end || (**b == end && **b != first))
            .copied()
            .collect();
        let cut = st.segments.range(..=end).next_back().map(|(b, _)| *b);
        let position = match cut.and_then(|b| st.segments.get(&b)) {
            Some(seg) if !doomed.contains(&seg.base) => {
                let mut at = None;
                let mut spans = false;
                let scanned = seg
                    .scan(seg.lookup(end), Offset(0), &limits, |b, _| {
                        if at.is_none() && b.base_offset >= end {
                            at = Some(b.position);
                        }
                        spans |= b.base_offset < end && b.next_offset > end;
                    })
                    .map_err(io("scanning for the cut"))?;
                if let (Err(stop), None) = (scanned, at) {
                    // The cut point lies past damaged data: cutting blind could keep garbage.
                    let base = seg.base;
                    return Err(self.take_offline(&mut st, base, stop));
                }
                if spans {
                    return Err(bad("a batch spans it; cut at a batch boundary".into()));
                }
                Some((seg.base, at.unwrap_or(seg.size)))
            }
            _ => None,
        };
        for base in &doomed {
            if let Some(seg) = st.segments.remove(base) {
                seg.delete_files()
                    .map_err(io("removing a segment past the cut"))?;
            }
        }
        if let Some((base, at)) = position {
            let seg = st
                .segments
                .get_mut(&base)
                .unwrap_or_else(|| unreachable!("the segment holding the cut was kept"));
            seg.truncate(at).map_err(io("cutting a segment"))?;
            let rebuilt = seg
                .rebuild(&limits)
                .map_err(io("re-indexing the cut segment"))?;
            seg.write_indexes()
                .map_err(io("writing the cut segment's indexes"))?;
            if let Err(stop) = rebuilt {
                return Err(self.take_offline(&mut st, base, stop));
            }
        }
        if st.segments.is_empty() {
            let seg = Segment::create(&self.dir, end, st.config.index_interval_bytes, now_ms)
                .map_err(io("creating a segment after the cut"))?;
            st.segments.insert(end, seg);
        }
        st.next_offset = end;
        st.unsynced_sealed.clear();
        // Snapshots may describe batches that are gone: rebuild from the batches themselves.
        let _ = fs::remove_file(self.dir.join(super::producer_state::SNAPSHOT_FILE));
        let _ = fs::remove_file(self.dir.join(super::mirror_map::SNAPSHOT_FILE));
        let (producers, mirrors, damage) = replay_headers(&self.dir, &st.segments, end, &limits)
            .map_err(io("rebuilding producer state and the mirror map"))?;
        st.producers = producers;
        st.mirrors = mirrors;
        if let Some((base, stop)) = damage {
            return Err(self.take_offline(&mut st, base, stop));
        }
        let active = last_segment(&mut st.segments);
        super::durability_journal::sync_all(&active.file).map_err(io("syncing the cut"))?;
        let point = RecoveryPoint {
            segment_base: active.base,
            position: active.size,
            offset: end,
        };
        write_checkpoint(&self.dir, point).map_err(io("writing the recovery checkpoint"))?;
        lock(&self.sync).durable = point;
        warn!(log = %self.name, end = end.0, "log truncated");
        Ok(())
    }

    /// Makes everything appended so far durable (interval flusher, clean shutdown).
    pub fn flush(&self, now_ms: i64) -> Result<(), LogError> {
        let end = lock(&self.state).next_offset;
        self.sync_through(end, now_ms)
    }

    /// Fsyncs segments sealed since the last call, so recovery only scans the active segment
    /// even under `flush = os`.
    pub fn flush_sealed(&self, now_ms: i64) -> Result<(), LogError> {
        let (files, active_base) = {
            let mut st = lock(&self.state);
            let files = std::mem::take(&mut st.unsynced_sealed);
            let base = last_segment(&mut st.segments).base;
            (files, base)
        };
        if files.is_empty() {
            return Ok(());
        }
        for f in &files {
            if let Err(e) = super::durability_journal::sync_data(f) {
                let reason = format!("fsync of a sealed segment failed: {e}");
                lock(&self.sync).failed = Some(reason.clone());
                lock(&self.state).offline = Some(reason.clone());
                return Err(LogError::Offline {
                    log: self.name.clone(),
                    reason,
                });
            }
        }
        let mut s = lock(&self.sync);
        if s.durable.segment_base < active_base {
            s.durable = RecoveryPoint {
                segment_base: active_base,
                position: 0,
                offset: active_base,
            };
            s.checkpoint_written_ms = now_ms;
            write_checkpoint(&self.dir, s.durable)
                .map_err(|source| self.io("writing the recovery checkpoint", source))?;
        }
        Ok(())
    }

    /// Flushes everything, writes indexes and the checkpoint: the next open scans nothing.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.flush(now_ms)?;
        let st = lock(&self.state);
        st.producers
            .write_snapshot(&self.dir, st.next_offset)
            .map_err(|source| self.io("writing the producer snapshot", source))?;
        st.mirrors
            .write_snapshot(&self.dir, st.next_offset)
            .map_err(|source| self.io("writing the mirror map snapshot", source))?;
        for seg in st.segments.values() {
            seg.write_indexes()
                .map_err(|source| self.io("writing indexes", source))?;
        }
        let s = lock(&self.sync);
        write_checkpoint(&self.dir, s.durable)
            .map_err(|source| self.io("writing the recovery checkpoint", source))
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

    /// Reads whole batches starting with the one that holds `from`, up to `max_bytes` (at
    /// least one batch, so a consumer always makes progress). Every batch is CRC-checked.
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<LogRead, LogError> {
        let high_watermark = self.high_watermark();
        let (log_start, limits) = {
            let st = lock(&self.state);
            if let Some(reason) = &st.offline {
                return Err(LogError::Offline {
                    log: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            if from < st.log_start || from > st.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    log: self.name.clone(),
                    requested: from,
                    start: st.log_start,
                    end: st.next_offset,
                });
            }
            (st.log_start, st.config.decode_limits())
        };
        let empty = LogRead {
            batches: Bytes::new(),
            high_watermark,
            log_start,
        };
        let mut previous: Option<Offset> = None;
        if from >= high_watermark {
            return Ok(empty);
        }
        loop {
            // A segment may hold nothing at or after `from` (gaps, a compacted-away tail): move
            // on to the next one, taking the lock again for each step.
            let target = {
                let st = lock(&self.state);
                let seg = match previous {
                    None => st
                        .segments
                        .range(..=from)
                        .next_back()
                        .or_else(|| st.segments.iter().next()),
                    Some(p) => st
                        .segments
                        .range((std::ops::Bound::Excluded(p), std::ops::Bound::Unbounded))
                        .next(),
                };
                seg.map(|(_, s)| (s.base, s.file.clone(), s.lookup(from), s.size))
            };
            let Some((base, file, position, size)) = target else {
                break;
            };
            if base >= high_watermark {
                break;
            }
            let found = self.checked(self.read_segment(
                base,
                &file,
                position,
                size,
                from,
                high_watermark,
                max_bytes,
                &limits,
            ))?;
            if !found.is_empty() {
                return Ok(LogRead {
                    batches: found,
                    high_watermark,
                    log_start,
                });
            }
            previous = Some(base);
        }
        Ok(empty)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_segment(
        &self,
        base: Offset,
        file: &File,
        position: u64,
        size: u64,
        from: Offset,
        high_watermark: Offset,
        max_bytes: usize,
        limits: &DecodeLimits,
    ) -> Result<Bytes, LogError> {
        // One read covers the index's step back to `from` plus the answer, so the walk below
        // validates batches in memory and the answer is a slice of that same read.
        let mut reader = ChunkReader::with_chunk(file, size, max_bytes.saturating_add(64 << 10));
        let mut at = position;
        let mut start: Option<u64> = None;
        let mut end = at;
        while at < size {
            // The length prefix decides whether the batch still fits before it is read whole
            // (reading it would start another read of a whole answer's size).
            if let Some(s) = start {
                let head = reader
                    .read(at, batch::LENGTH_PREFIX_LEN)
                    .map_err(|source| self.io("reading a segment", source))?;
                let fits = head.is_some_and(|head| {
                    batch::total_len(&head, limits)
                        .is_ok_and(|len| (at + len as u64 - s) as usize <= max_bytes)
                });
                if !fits {
                    break;
                }
            }
            let parsed = self.batch_at(&mut reader, base, at, limits)?;
            let len = parsed.size_bytes();
            if parsed.base_offset() >= high_watermark {
                break;
            }
            if parsed.next_offset() > from && start.is_none() {
                start = Some(at);
            }
            at += len as u64;
            if start.is_some() {
                end = at;
            }
        }
        let Some(start) = start else {
            return Ok(Bytes::new());
        };
        // The walk validated every batch in [start, end); hand out one contiguous buffer.
        if let Some(answer) = reader.slice(start, end) {
            return Ok(answer);
        }
        super::segment::read_exact_at(file, start, (end - start) as usize)
            .map_err(|source| self.io("reading a segment", source))
    }

    /// Reads and validates the whole batch at `at` of segment `base`; any damage is `Corrupt`.
    fn batch_at(
        &self,
        reader: &mut ChunkReader<'_>,
        base: Offset,
        at: u64,
        limits: &DecodeLimits,
    ) -> Result<RecordBatch, LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            log: self.name.clone(),
            segment: base,
            position: at,
            reason,
        };
        let head = reader
            .read(at, batch::LENGTH_PREFIX_LEN)
            .map_err(|source| self.io("reading a segment", source))?
            .ok_or_else(|| corrupt("torn batch header".into()))?;
        let len = batch::total_len(&head, limits).map_err(|e| corrupt(e.to_string()))?;
        let bytes = reader
            .read(at, len)
            .map_err(|source| self.io("reading a segment", source))?
            .ok_or_else(|| corrupt("torn batch".into()))?;
        RecordBatch::parse(bytes, limits).map_err(|e| corrupt(e.to_string()))
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`, with that
    /// timestamp; None when every record is older.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let (targets, limits) = {
            let st = lock(&self.state);
            let targets: Vec<(Offset, Arc<File>, u64, u64)> = st
                .segments
                .values()
                .filter(|s| s.max_timestamp_ms >= timestamp_ms)
                .map(|s| (s.base, s.file.clone(), s.lookup_time(timestamp_ms), s.size))
                .collect();
            (targets, st.config.decode_limits())
        };
        for (base, file, position, size) in targets {
            let mut reader = ChunkReader::new(&file, size);
            let mut at = position;
            while at < size {
                let parsed = self.checked(self.batch_at(&mut reader, base, at, &limits))?;
                let len = parsed.size_bytes();
                let corrupt = |reason: String| LogError::Corrupt {
                    log: self.name.clone(),
                    segment: base,
                    position: at,
                    reason,
                };
                if parsed.max_timestamp_ms() >= timestamp_ms {
                    let records = parsed
                        .records(limits.batch_bytes_decompressed_max)
                        .map_err(|e| corrupt(e.to_string()))?;
                    if let Some(r) = records.iter().find(|r| r.timestamp_ms >= timestamp_ms) {
                        return Ok(Some((r.offset, r.timestamp_ms)));
                    }
                }
                at += len as u64;
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments past `retention.ms` or beyond `retention.bytes` and
    /// advances the log start. Returns the base offsets of the deleted segments.
    pub fn apply_retention(&self, now_ms: i64) -> Result<Vec<Offset>, LogError> {
        let mut st = lock(&self.state);
        if !st.config.cleanup.delete {
            return Ok(Vec::new());
        }
        let mut total: u64 = st.segments.values().map(|s| s.size).sum();
        let active_base = last_segment(&mut st.segments).base;
        let mut doomed = Vec::new();
        for seg in st.segments.values() {
            if seg.base == active_base {
                break;
            }
            let expired = st.config.retention_ms.is_some_and(|ms| {
                seg.max_timestamp_ms == i64::MIN
                    || seg.max_timestamp_ms < now_ms.saturating_sub(ms as i64)
            });
            let oversize = st
                .config
                .retention_bytes
                .is_some_and(|max| total - seg.size >= max);
            if !(expired || oversize) {
                break;
            }
            total -= seg.size;
            doomed.push(seg.base);
        }
        for base in &doomed {
            if let Some(seg) = st.segments.remove(base) {
                seg.delete_files()
                    .map_err(|source| self.io("deleting an expired segment", source))?;
            }
        }
        if let Some(first) = st.segments.keys().next().copied() {
            if first > st.log_start {
                st.log_start = first;
                st.mirrors.prune(first.0);
                write_offset_file(&self.dir.join(LOG_START_FILE), first)
                    .map_err(|source| self.io("writing the log start offset", source))?;
                info!(log = %self.name, log_start = first.0, deleted = doomed.len(), "retention advanced the log start");
            }
        }
        Ok(doomed)
    }

    /// Sealed segments as (base, file, size, next offset): the cleaner's snapshot.
    pub(crate) fn sealed_segments(&self) -> Vec<(Offset, Arc<File>, u64, Offset)> {
        let st = lock(&self.state);
        let n = st.segments.len();
        st.segments
            .values()
            .take(n.saturating_sub(1))
            .map(|s| (s.base, s.file.clone(), s.size, s.next_offset))
            .collect()
    }

    /// The active segment as (base, file, size): read by the cleaner to learn the latest keys.
    pub(crate) fn active_segment(&self) -> (Offset, Arc<File>, u64) {
        let mut st = lock(&self.state);
        let a = last_segment(&mut st.segments);
        (a.base, a.file.clone(), a.size)
    }

    /// Swaps in a cleaned copy of a sealed segment. The old index files go first, so a crash at
    /// any step leaves either file with no stale index; indexes are rebuilt from the new file.
    pub(crate) fn replace_segment(&self, base: Offset, cleaned: &Path) -> Result<bool, LogError> {
        let mut st = lock(&self.state);
        let active_base = last_segment(&mut st.segments).base;
        let interval = st.config.index_interval_bytes;
        let limits = st.config.decode_limits();
        let Some(old) = st.segments.get(&base) else {
            let _ = fs::remove_file(cleaned);
            return Ok(false);
        };
        if base == active_base {
            let _ = fs::remove_file(cleaned);
            return Ok(false);
        }
        let next_offset = old.next_offset;
        let max_ts = old.max_timestamp_ms;
        let created = old.created_ms;
        old.delete_index_files()
            .map_err(|source| self.io("removing a stale index", source))?;
        fs::rename(cleaned, segment::log_path(&self.dir, base))
            .map_err(|source| self.io("swapping a cleaned segment", source))?;
        let mut seg = Segment::open(&self.dir, base, interval, created)
            .map_err(|source| self.io("reopening a cleaned segment", source))?;
        if let Err(stop) = seg
            .rebuild(&limits)
            .map_err(|source| self.io("indexing a cleaned segment", source))?
        {
            st.segments.insert(base, seg);
            return Err(self.take_offline(&mut st, base, stop));
        }
        seg.next_offset = next_offset;
        seg.max_timestamp_ms = seg.max_timestamp_ms.max(max_ts.min(seg.max_timestamp_ms));
        seg.write_indexes()
            .map_err(|source| self.io("writing indexes of a cleaned segment", source))?;
        st.segments.insert(base, seg);
        Ok(true)
    }

    /// Damage found in data the log had promised durable: report it and take the partition
    /// offline, as a failed fsync does (see `corruption`).
    fn take_offline(&self, st: &mut LogState, segment: Offset, stop: ScanStop) -> LogError {
        self.mark_damaged(st, segment, &stop);
        LogError::Corrupt {
            log: self.name.clone(),
            segment,
            position: stop.position,
            reason: stop.reason,
        }
    }

    /// Passes errors through; a `Corrupt` one found by a read takes the partition offline.
    pub(crate) fn checked<T>(&self, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(LogError::Corrupt {
            segment,
            position,
            reason,
            ..
        }) = &result
        {
            let stop = ScanStop {
                position: *position,
                reason: reason.clone(),
            };
            self.mark_damaged(&mut lock(&self.state), *segment, &stop);
        }
        result
    }

    fn mark_damaged(&self, st: &mut LogState, segment: Offset, stop: &ScanStop) {
        corruption::report(
            &self.name,
            segment,
            stop.position,
            &stop.reason,
            Action::Offline,
        );
        let reason = damaged_reason(segment, stop.position, &stop.reason);
        error!(log = %self.name, %reason, "partition offline");
        st.offline.get_or_insert(reason);
    }

    pub(crate) fn io(&self, context: &str, source: io::Error) -> LogError {
        LogError::Io {
            log: self.name.clone(),
            context: context.into(),
            source,
        }
    }
}

/// Rebuilds producer state and the mirror map from their snapshots and the batch headers after
/// them (from the start when a snapshot is missing, damaged or ahead of a truncated log).
/// Also answers the first damaged batch met, if any (the caller reports it).
#[allow(clippy::type_complexity)]
fn replay_headers(
    dir: &Path,
    segments: &BTreeMap<Offset, Segment>,
    next_offset: Offset,
    limits: &DecodeLimits,
) -> io::Result<(ProducerStates, MirrorMap, Option<(Offset, ScanStop)>)> {
    let (mut states, from_producers) = match ProducerStates::read_snapshot(dir) {
        Some((s, at)) if at <= next_offset => (s, at),
        _ => (ProducerStates::default(), Offset(0)),
    };
    let (mut mirrors, from_mirrors) = match MirrorMap::read_snapshot(dir) {
        Some((m, at)) if at <= next_offset => (m, at),
        _ => (MirrorMap::default(), Offset(0)),
    };
    let from = from_producers.min(from_mirrors);
    let mut damage = None;
    for seg in segments.values().filter(|s| s.next_offset > from) {
        let start = if seg.base <= from {
            seg.lookup(from)
        } else {
            0
        };
        let mut found = Vec::new();
        let scanned = seg.scan(start, Offset(0), limits, |b, batch| {
            let producer = b.base_offset >= from_producers && batch.producer_id() >= 0;
            let mirrored = b.base_offset >= from_mirrors && batch.provenance().is_some();
            if producer || mirrored {
                found.push((batch.clone(), producer, mirrored));
            }
        })?;
        if let Err(stop) = scanned {
            damage.get_or_insert((seg.base, stop));
        }
        for (batch, producer, mirrored) in found {
            let base = batch.base_offset();
            if producer {
                states.record(&batch, base, 0);
            }
            if let Some((key, source_base)) = MirrorMap::key_of(&batch).filter(|_| mirrored) {
                mirrors.record(key, source_base, &batch, base.0);
            }
        }
    }
    Ok((states, mirrors, damage))
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

fn truncate_after_corruption(
    dir: &Path,
    name: &str,
    segments: &mut BTreeMap<Offset, Segment>,
    base: Offset,
    position: u64,
    later: &[Offset],
) -> io::Result<()> {
    if let Some(seg) = segments.get_mut(&base) {
        seg.truncate(position)?;
    }
    for b in later {
        warn!(
            log = name,
            segment = b.0,
            "dropping a segment that follows a truncated tail"
        );
        let _ = fs::remove_file(segment::index_path(dir, *b));
        let _ = fs::remove_file(segment::time_index_path(dir, *b));
        fs::remove_file(segment::log_path(dir, *b))?;
    }
    Ok(())
}

fn list_segments(dir: &Path) -> io::Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            // A cleaner or checkpoint write that a crash interrupted; the original is intact.
            fs::remove_file(entry.path())?;
            continue;
        }
        if let Some(base) = segment::parse_log_name(&name) {
            bases.push(base);
        }
    }
    bases.sort();
    Ok(bases)
}

fn read_checkpoint(dir: &Path) -> Option<RecoveryPoint> {
    let raw = fs::read(dir.join(CHECKPOINT_FILE)).ok()?;
    if raw.len() != 28 {
        return None;
    }
    let crc = u32::from_le_bytes(raw[24..28].try_into().ok()?);
    if crc32c::crc32c(&raw[..24]) != crc {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    Some(RecoveryPoint {
        segment_base: Offset(word(0)),
        position: word(1),
        offset: Offset(word(2)),
    })
}

fn write_checkpoint(dir: &Path, point: RecoveryPoint) -> io::Result<()> {
    let mut raw = Vec::with_capacity(28);
    raw.extend_from_slice(&point.segment_base.0.to_le_bytes());
    raw.extend_from_slice(&point.position.to_le_bytes());
    raw.extend_from_slice(&point.offset.0.to_le_bytes());
    raw.extend_from_slice(&crc32c::crc32c(&raw).to_le_bytes());
    crate::durable_file::write(&dir.join(CHECKPOINT_FILE), &raw)
}

fn read_offset_file(path: &Path) -> Option<Offset> {
    let raw = fs::read(path).ok()?;
    if raw.len() != 12 || crc32c::crc32c(&raw[..8]).to_le_bytes() != raw[8..12] {
        return None;
    }
    Some(Offset(u64::from_le_bytes(raw[..8].try_into().ok()?)))
}

fn write_offset_file(path: &Path, offset: Offset) -> io::Result<()> {
    let mut raw = offset.0.to_le_bytes().to_vec();
    raw.extend_from_slice(&crc32c::crc32c(&raw).to_le_bytes());
    crate::durable_file::write(path, &raw)
}
