//! Retention (whole sealed segments past `retention.ms` or `retention.bytes`, and the log
//! start offset file), and the cleaner's access to segments.

use super::*;

impl PartitionLog {
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
                st.provenance
                    .forget_below(first)
                    .map_err(|source| self.io("rewriting the provenance log", source))?;
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
}

pub(super) fn read_offset_file(path: &Path) -> Option<Offset> {
    let raw = fs::read(path).ok()?;
    if raw.len() != 12 || crc32c::crc32c(&raw[..8]).to_le_bytes() != raw[8..12] {
        return None;
    }
    Some(Offset(u64::from_le_bytes(raw[..8].try_into().ok()?)))
}

pub(super) fn write_offset_file(path: &Path, offset: Offset) -> io::Result<()> {
    let mut raw = offset.0.to_le_bytes().to_vec();
    raw.extend_from_slice(&crc32c::crc32c(&raw).to_le_bytes());
    crate::durable_file::write(path, &raw)
}
