//! Reads: whole batches from an offset, each CRC-checked, served as one contiguous slice of
//! a single read; and the search by timestamp.

use super::*;

impl PartitionLog {
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
            let found = self.read_segment(
                base,
                &file,
                position,
                size,
                from,
                high_watermark,
                max_bytes,
                &limits,
            )?;
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
        crate::storage::segment::read_exact_at(file, start, (end - start) as usize)
            .map_err(|source| self.io("reading a segment", source))
    }

    /// Reads and validates the whole batch at `at` of segment `base`. Any damage is `Corrupt`
    /// and takes the partition offline (reads, timestamp searches and the cleaner all come
    /// through here).
    pub(crate) fn batch_at(
        &self,
        reader: &mut ChunkReader<'_>,
        base: Offset,
        at: u64,
        limits: &DecodeLimits,
    ) -> Result<RecordBatch, LogError> {
        let corrupt = |reason: String| self.damaged(base, at, reason);
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
                let parsed = self.batch_at(&mut reader, base, at, &limits)?;
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
}
