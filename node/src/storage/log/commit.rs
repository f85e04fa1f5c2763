//! Durability: the group commit (one appender fsyncs for everyone who wrote before it
//! started), interval and sealed-segment flushes, the clean close, and the recovery
//! checkpoint that tells the next open where scanning must start.

use super::*;

impl PartitionLog {
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
            (files, RecoveryPoint::end_of(active, next_offset))
        };
        for f in &files {
            crate::storage::durability_journal::sync_data(f)?;
        }
        Ok(point)
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
            if let Err(e) = crate::storage::durability_journal::sync_data(f) {
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
        for seg in st.segments.values() {
            seg.write_indexes()
                .map_err(|source| self.io("writing indexes", source))?;
        }
        let s = lock(&self.sync);
        write_checkpoint(&self.dir, s.durable)
            .map_err(|source| self.io("writing the recovery checkpoint", source))
    }
}

pub(super) fn read_checkpoint(dir: &Path) -> Option<RecoveryPoint> {
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

pub(super) fn write_checkpoint(dir: &Path, point: RecoveryPoint) -> io::Result<()> {
    let mut raw = Vec::with_capacity(28);
    raw.extend_from_slice(&point.segment_base.0.to_le_bytes());
    raw.extend_from_slice(&point.position.to_le_bytes());
    raw.extend_from_slice(&point.offset.0.to_le_bytes());
    raw.extend_from_slice(&crc32c::crc32c(&raw).to_le_bytes());
    crate::durable_file::write(&dir.join(CHECKPOINT_FILE), &raw)
}
