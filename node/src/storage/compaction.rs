//! The cleaner for `cleanup.policy = compact`: rewrites sealed segments keeping only the latest
//! record per key, with offsets unchanged.
//!
//! It never blocks appends: it reads files it holds open and takes the log lock only for the
//! swap. A clean is crash-safe at every step: the copy is written to `<base>.log.cleaned` and
//! fsynced, the stale indexes are removed, then the copy is renamed over the original (atomic);
//! a leftover `.cleaned` file is deleted on open and the original is still complete.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use bytes::Bytes;
use strait_protocol::batch::DecodeLimits;
use strait_protocol::{BatchBuilder, Offset, RecordBatch};
use tracing::warn;

use super::log::{LogError, PartitionLog};
use super::segment::{self, ChunkReader};

/// Most distinct keys the cleaner tracks in one pass; bounds its memory. Keys past the bound
/// are simply not cleaned this pass (their records are kept).
pub const CLEANER_KEYS_MAX: usize = 4_000_000;

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_cleaned: usize,
    pub records_before: u64,
    pub records_after: u64,
    pub tombstones_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Runs one cleaning pass over the log's sealed segments.
pub fn clean(log: &PartitionLog, now_ms: i64) -> Result<CleanStats, LogError> {
    let config = log.config();
    let mut stats = CleanStats::default();
    if !config.cleanup.compact {
        return Ok(stats);
    }
    let sealed = log.sealed_segments();
    if sealed.is_empty() {
        return Ok(stats);
    }
    let limits = config.decode_limits();
    let latest = latest_offsets(log, &sealed, &limits)?;
    let tombstone_horizon_ms = now_ms.saturating_sub(config.delete_retention_ms as i64);
    for (base, file, size, _) in sealed {
        let cleaned_path = segment::cleaned_path(log.dir(), base);
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cleaned_path)
            .map_err(|s| log.io("creating a cleaned segment", s))?;
        let mut writer = BufWriter::with_capacity(1 << 20, out);
        let mut changed = false;
        let mut written = 0u64;
        for_each_batch(log, base, &file, size, &limits, |b, at| {
            let Some(records) = cleanable(log, b, base, at, &limits) else {
                // Kept exactly as it came: it cannot be cleaned, and is not damage.
                written += b.size_bytes() as u64;
                return writer
                    .write_all(b.as_bytes())
                    .map_err(|s| log.io("writing a cleaned segment", s));
            };
            stats.records_before += records.len() as u64;
            let keep: Vec<_> = records
                .iter()
                .filter(|r| {
                    let superseded = r
                        .key
                        .as_ref()
                        .and_then(|k| latest.get(k))
                        .is_some_and(|l| *l > r.offset.0);
                    let expired_tombstone = r.value.is_none()
                        && r.key.is_some()
                        && r.timestamp_ms < tombstone_horizon_ms;
                    if expired_tombstone && !superseded {
                        stats.tombstones_removed += 1;
                    }
                    !superseded && !expired_tombstone
                })
                .collect();
            stats.records_after += keep.len() as u64;
            let bytes = if keep.len() == records.len() {
                b.as_bytes().clone()
            } else if keep.is_empty() {
                changed = true;
                return Ok(());
            } else {
                changed = true;
                rebuild(b, &keep)
            };
            written += bytes.len() as u64;
            writer
                .write_all(&bytes)
                .map_err(|s| log.io("writing a cleaned segment", s))
        })?;
        stats.bytes_before += size;
        if !changed {
            drop(writer);
            let _ = std::fs::remove_file(&cleaned_path);
            stats.bytes_after += size;
            continue;
        }
        let out = writer
            .into_inner()
            .map_err(|e| log.io("flushing a cleaned segment", e.into_error()))?;
        out.sync_all()
            .map_err(|s| log.io("syncing a cleaned segment", s))?;
        if log.replace_segment(base, &cleaned_path)? {
            stats.segments_cleaned += 1;
            stats.bytes_after += written;
        }
    }
    Ok(stats)
}

/// The latest offset of every key in the log, sealed and active segments alike.
fn latest_offsets(
    log: &PartitionLog,
    sealed: &[(Offset, std::sync::Arc<File>, u64, Offset)],
    limits: &DecodeLimits,
) -> Result<HashMap<Bytes, u64>, LogError> {
    let mut latest: HashMap<Bytes, u64> = HashMap::new();
    let (active_base, active_file, active_size) = log.active_segment();
    let all = sealed
        .iter()
        .map(|(b, f, s, _)| (*b, f.clone(), *s))
        .chain([(active_base, active_file, active_size)]);
    for (base, file, size) in all {
        for_each_batch(log, base, &file, size, limits, |b, at| {
            for r in cleanable(log, b, base, at, limits).unwrap_or_default() {
                if let Some(k) = r.key {
                    if latest.len() < CLEANER_KEYS_MAX || latest.contains_key(&k) {
                        latest.insert(k, r.offset.0);
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok(latest)
}

/// Every batch of a segment in order, with its position; damage the cleaner meets takes the
/// partition offline, as a read's does (`PartitionLog::batch_at`).
fn for_each_batch(
    log: &PartitionLog,
    base: Offset,
    file: &File,
    size: u64,
    limits: &DecodeLimits,
    mut visit: impl FnMut(&RecordBatch, u64) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut reader = ChunkReader::new(file, size);
    let mut at = 0u64;
    while at < size {
        let parsed = log.batch_at(&mut reader, base, at, limits)?;
        visit(&parsed, at)?;
        at += parsed.size_bytes() as u64;
    }
    Ok(())
}

/// Re-encodes a batch with only the kept records, at their original offsets.
fn rebuild(original: &RecordBatch, keep: &[&strait_protocol::Record]) -> Bytes {
    let base = original.base_offset();
    let mut builder = BatchBuilder::new(original.compression()).producer(
        original.producer_id(),
        original.producer_epoch(),
        original.base_sequence(),
    );
    for r in keep {
        builder.push_at(
            (r.offset.0 - base.0) as u32,
            r.timestamp_ms,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    builder
        .finish()
        .with_position(base, original.leader_epoch())
        .into_bytes()
}

/// A batch whose records do not decode: the partition goes offline, as for any damage.
/// The records of a stored batch, or None when they cannot be read within the topic's
/// limits. Its CRC was checked as it was read, so such a batch is what a producer sent (a
/// records section that decompresses past `max.batch.decompressed.bytes`, or malformed
/// records under a valid CRC: the node never decompresses on produce), not damage: the
/// cleaner keeps it untouched instead of taking the partition offline.
fn cleanable(
    log: &PartitionLog,
    b: &RecordBatch,
    segment: Offset,
    position: u64,
    limits: &DecodeLimits,
) -> Option<Vec<strait_protocol::Record>> {
    match b.records(limits.batch_bytes_decompressed_max) {
        Ok(records) => Some(records),
        Err(e) => {
            warn!(log = %log.name(), segment = segment.0, position, base_offset = b.base_offset().0, error = %e,
                "the cleaner keeps a batch it cannot read as it is");
            None
        }
    }
}
