//! Opening a log after a crash, and damage: segments past the recovery point are scanned and
//! a torn tail is cut; sealed segments before it are trusted; producer state is replayed from
//! its snapshot and the batch headers after it, and the mirror map is rebuilt from the
//! provenance log (cut back to the log end). Damage in data the
//! log had promised durable takes the partition offline (`corruption`). Also the deliberate
//! cut of a failback (`truncate_to`).

use super::commit::{read_checkpoint, write_checkpoint};
use super::retention::read_offset_file;
use super::*;

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
        crate::storage::durability_journal::sync_data(&last.file)
            .map_err(io_err("syncing the recovered tail"))?;
        let durable = RecoveryPoint::end_of(last, next_offset);
        // An empty log needs no checkpoint, and an unchanged one need not be rewritten: each
        // durable write costs fsyncs, and a node opens thousands of partitions at start.
        let empty = segments.len() == 1 && last.size == 0;
        if checkpoint != Some(durable) && !empty {
            write_checkpoint(dir, durable).map_err(io_err("writing the recovery checkpoint"))?;
        }
        let (producers, damage) = replay_headers(dir, &segments, next_offset, &limits)
            .map_err(io_err("replaying producer state"))?;
        let (provenance, stored) =
            ProvenanceLog::open(dir, next_offset).map_err(io_err("reading the provenance log"))?;
        let mirrors = MirrorMap::from_stored(&stored);
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
            provenance,
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
        let _ = fs::remove_file(self.dir.join(crate::storage::producer_state::SNAPSHOT_FILE));
        let (producers, damage) = replay_headers(&self.dir, &st.segments, end, &limits)
            .map_err(io("rebuilding producer state"))?;
        st.producers = producers;
        st.mirrors.truncate(end.0);
        st.provenance
            .truncate_from(end)
            .map_err(io("cutting the provenance log"))?;
        if let Some((base, stop)) = damage {
            return Err(self.take_offline(&mut st, base, stop));
        }
        let active = last_segment(&mut st.segments);
        crate::storage::durability_journal::sync_all(&active.file)
            .map_err(io("syncing the cut"))?;
        let point = RecoveryPoint::end_of(active, end);
        write_checkpoint(&self.dir, point).map_err(io("writing the recovery checkpoint"))?;
        lock(&self.sync).durable = point;
        warn!(log = %self.name, end = end.0, "log truncated");
        Ok(())
    }

    /// Damage found in data the log had promised durable: report it and take the partition
    /// offline, as a failed fsync does (see `corruption`).
    pub(super) fn take_offline(
        &self,
        st: &mut LogState,
        segment: Offset,
        stop: ScanStop,
    ) -> LogError {
        self.mark_damaged(st, segment, &stop);
        LogError::Corrupt {
            log: self.name.clone(),
            segment,
            position: stop.position,
            reason: stop.reason,
        }
    }

    /// Damage found by a read or the cleaner in a batch the log holds: reported, the partition
    /// taken offline, and answered as `Corrupt`.
    pub(crate) fn damaged(&self, segment: Offset, position: u64, reason: String) -> LogError {
        let stop = ScanStop { position, reason };
        self.take_offline(&mut lock(&self.state), segment, stop)
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
}

/// Rebuilds producer state from its snapshot and the batch headers after it (from the start
/// when the snapshot is missing, damaged or ahead of a truncated log).
/// Also answers the first damaged batch met, if any (the caller reports it).
fn replay_headers(
    dir: &Path,
    segments: &BTreeMap<Offset, Segment>,
    next_offset: Offset,
    limits: &DecodeLimits,
) -> io::Result<(ProducerStates, Option<(Offset, ScanStop)>)> {
    let (mut states, from_producers) = match ProducerStates::read_snapshot(dir) {
        Some((s, at)) if at <= next_offset => (s, at),
        _ => (ProducerStates::default(), Offset(0)),
    };
    let from = from_producers;
    let mut damage = None;
    for seg in segments.values().filter(|s| s.next_offset > from) {
        let start = if seg.base <= from {
            seg.lookup(from)
        } else {
            0
        };
        let mut found = Vec::new();
        let scanned = seg.scan(start, Offset(0), limits, |b, batch| {
            if b.base_offset >= from && batch.producer_id() >= 0 {
                found.push(batch.clone());
            }
        })?;
        if let Err(stop) = scanned {
            damage.get_or_insert((seg.base, stop));
        }
        for batch in found {
            states.record(&batch, batch.base_offset(), 0);
        }
    }
    Ok((states, damage))
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
