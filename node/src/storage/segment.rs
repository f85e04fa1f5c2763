//! One segment of a partition log: `<base>.log` with its sparse offset and time indexes.
//!
//! The log file holds batches exactly as received, back to back. The indexes are hints that can
//! always be rebuilt from the log file, so they are never fsynced and a damaged one is discarded:
//! - `<base>.index`: entries of (offset − base: u32, file position: u32), one per
//!   `index.interval.bytes` of log, in increasing order;
//! - `<base>.timeindex`: entries of (max timestamp so far: i64, offset − base: u32).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use strait_protocol::batch::{self, DecodeLimits, LENGTH_PREFIX_LEN, POSITION_PREFIX_LEN};
use strait_protocol::pool::BufferPool;
use strait_protocol::{LeaderEpoch, Offset, RecordBatch};

/// Size of one offset-index entry on disk.
const INDEX_ENTRY_LEN: usize = 8;
/// Size of one time-index entry on disk.
const TIME_ENTRY_LEN: usize = 12;
/// Read size used when walking a segment sequentially.
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// One (relative offset, position) pair of the sparse offset index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One (timestamp, relative offset) pair of the time index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// A batch found while walking a segment.
#[derive(Debug, Clone, Copy)]
pub struct ScannedBatch {
    pub position: u64,
    pub len: usize,
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub max_timestamp_ms: i64,
}

/// Where and why a walk over a segment stopped early.
#[derive(Debug)]
pub struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// A segment: the file, its valid length and its in-memory indexes.
#[derive(Debug)]
pub struct Segment {
    pub base: Offset,
    pub file: Arc<File>,
    pub size: u64,
    /// One past the last offset stored here (the base when empty).
    pub next_offset: Offset,
    pub max_timestamp_ms: i64,
    /// Wall time of the first append, for `segment.ms`.
    pub created_ms: i64,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    index_interval_bytes: u64,
    dir: PathBuf,
}

impl Segment {
    /// Creates an empty segment file.
    pub fn create(
        dir: &Path,
        base: Offset,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let _ = fs::remove_file(index_path(dir, base));
        let _ = fs::remove_file(time_index_path(dir, base));
        // The new name must survive a power cut as surely as the bytes later synced into it.
        crate::durable_file::sync_parent(&path)?;
        Ok(Segment::from_parts(
            dir,
            base,
            file,
            0,
            index_interval_bytes,
            now_ms,
        ))
    }

    /// Opens an existing segment file without reading it; the caller recovers or loads indexes.
    pub fn open(
        dir: &Path,
        base: Offset,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(log_path(dir, base))?;
        let size = file.metadata()?.len();
        Ok(Segment::from_parts(
            dir,
            base,
            file,
            size,
            index_interval_bytes,
            now_ms,
        ))
    }

    fn from_parts(
        dir: &Path,
        base: Offset,
        file: File,
        size: u64,
        interval: u32,
        now_ms: i64,
    ) -> Segment {
        Segment {
            base,
            file: Arc::new(file),
            size,
            next_offset: base,
            max_timestamp_ms: i64::MIN,
            created_ms: now_ms,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: u64::MAX,
            index_interval_bytes: u64::from(interval.max(1)),
            dir: dir.to_path_buf(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Writes a batch at the end of the file at `base`, in leader epoch `epoch`, and indexes it.
    ///
    /// The two node-assigned fields precede the CRC, so they are written from a 16-byte header
    /// of our own and the rest of the batch straight from the received buffer: no copy of the
    /// batch, no re-encoding.
    pub fn append(
        &mut self,
        batch: &RecordBatch,
        base: Offset,
        epoch: LeaderEpoch,
    ) -> io::Result<()> {
        let position = self.size;
        let bytes = batch.as_bytes();
        let head = batch.position_prefix(base, epoch);
        self.file.write_all_at(&head, position)?;
        self.file.write_all_at(
            &bytes[POSITION_PREFIX_LEN..],
            position + POSITION_PREFIX_LEN as u64,
        )?;
        self.size += bytes.len() as u64;
        self.note_batch(ScannedBatch {
            position,
            len: bytes.len(),
            base_offset: base,
            next_offset: base.plus(u64::from(batch.last_offset_delta()) + 1),
            max_timestamp_ms: batch.max_timestamp_ms(),
        });
        Ok(())
    }

    /// Records a batch in the in-memory indexes (on append and while recovering).
    pub fn note_batch(&mut self, b: ScannedBatch) {
        if self.bytes_since_index >= self.index_interval_bytes {
            self.index.push(IndexEntry {
                relative_offset: (b.base_offset.0 - self.base.0) as u32,
                position: b.position as u32,
            });
            self.bytes_since_index = 0;
            if b.max_timestamp_ms > self.max_timestamp_ms {
                self.time_index.push(TimeEntry {
                    timestamp_ms: b.max_timestamp_ms,
                    relative_offset: (b.base_offset.0 - self.base.0) as u32,
                });
            }
        }
        self.bytes_since_index += b.len as u64;
        self.max_timestamp_ms = self.max_timestamp_ms.max(b.max_timestamp_ms);
        self.next_offset = b.next_offset;
    }

    /// Position from which to walk to find `offset`: the last index entry at or below it.
    pub fn lookup(&self, offset: Offset) -> u64 {
        let rel = offset.0.saturating_sub(self.base.0);
        let i = self
            .index
            .partition_point(|e| u64::from(e.relative_offset) <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].position)
        }
    }

    /// Position from which to walk to find the first batch with max timestamp ≥ `ts`.
    pub fn lookup_time(&self, ts: i64) -> u64 {
        let i = self.time_index.partition_point(|e| e.timestamp_ms < ts);
        if i == 0 {
            return 0;
        }
        self.lookup(
            self.base
                .plus(u64::from(self.time_index[i - 1].relative_offset)),
        )
    }

    /// Writes both indexes to their files; called when the segment is sealed or closed.
    pub fn write_indexes(&self) -> io::Result<()> {
        let mut buf = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN);
        for e in &self.index {
            buf.extend_from_slice(&e.relative_offset.to_le_bytes());
            buf.extend_from_slice(&e.position.to_le_bytes());
        }
        fs::write(index_path(&self.dir, self.base), &buf)?;
        let mut buf = Vec::with_capacity(self.time_index.len() * TIME_ENTRY_LEN);
        for e in &self.time_index {
            buf.extend_from_slice(&e.timestamp_ms.to_le_bytes());
            buf.extend_from_slice(&e.relative_offset.to_le_bytes());
        }
        fs::write(time_index_path(&self.dir, self.base), &buf)
    }

    /// Loads the index files of a sealed segment. Returns false, leaving the indexes empty, when
    /// a file is missing or inconsistent with the log; the caller then rebuilds by scanning.
    pub fn load_indexes(&mut self, next_offset: Offset) -> bool {
        let (Ok(raw), Ok(raw_time)) = (
            fs::read(index_path(&self.dir, self.base)),
            fs::read(time_index_path(&self.dir, self.base)),
        ) else {
            return false;
        };
        if raw.len() % INDEX_ENTRY_LEN != 0 || raw_time.len() % TIME_ENTRY_LEN != 0 {
            return false;
        }
        let index: Vec<IndexEntry> = raw
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|c| IndexEntry {
                relative_offset: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let time_index: Vec<TimeEntry> = raw_time
            .chunks_exact(TIME_ENTRY_LEN)
            .map(|c| TimeEntry {
                timestamp_ms: i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                relative_offset: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
            })
            .collect();
        let span = next_offset.0.saturating_sub(self.base.0);
        let index_ok = index
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && index.iter().all(|e| {
                u64::from(e.position) < self.size && u64::from(e.relative_offset) < span.max(1)
            });
        let time_ok = time_index
            .windows(2)
            .all(|w| w[0].timestamp_ms < w[1].timestamp_ms);
        if !index_ok
            || !time_ok
            || (index.is_empty() && self.size > 0)
            || !self.entry_points_at_batch(index.last())
        {
            return false;
        }
        self.max_timestamp_ms = time_index.last().map_or(i64::MIN, |e| e.timestamp_ms);
        self.index = index;
        self.time_index = time_index;
        self.next_offset = next_offset;
        self.bytes_since_index = 0;
        true
    }

    /// Checks that an index entry names a real batch header, catching an index left over from
    /// another version of the file.
    fn entry_points_at_batch(&self, entry: Option<&IndexEntry>) -> bool {
        let Some(e) = entry else { return true };
        let mut head = [0u8; LENGTH_PREFIX_LEN];
        if self
            .file
            .read_exact_at(&mut head, u64::from(e.position))
            .is_err()
        {
            return false;
        }
        batch::peek_header(&head)
            .is_some_and(|(base, _)| base == self.base.plus(u64::from(e.relative_offset)))
    }

    /// Walks batches from `from` to the end, validating each one fully (length, CRC, offsets
    /// not going backwards) and calling `visit`. Stops at the first invalid batch.
    pub fn scan(
        &self,
        from: u64,
        mut expected_next: Offset,
        limits: &DecodeLimits,
        mut visit: impl FnMut(ScannedBatch, &RecordBatch),
    ) -> io::Result<Result<(), ScanStop>> {
        let mut position = from;
        let mut chunk = ChunkReader::new(&self.file, self.size);
        while position < self.size {
            let stop = |reason: String| Ok(Err(ScanStop { position, reason }));
            let head = match chunk.read(position, LENGTH_PREFIX_LEN)? {
                Some(h) => h,
                None => return stop(format!("torn header: {} bytes left", self.size - position)),
            };
            let len = match batch::total_len(&head, limits) {
                Ok(len) => len,
                Err(e) => return stop(e.to_string()),
            };
            let Some(bytes) = chunk.read(position, len)? else {
                return stop(format!(
                    "torn batch: {len} bytes declared, {} left",
                    self.size - position
                ));
            };
            let batch = match RecordBatch::parse(bytes, limits) {
                Ok(b) => b,
                Err(e) => return stop(e.to_string()),
            };
            if batch.base_offset() < expected_next {
                return stop(format!(
                    "offset {} goes backwards (expected at least {expected_next})",
                    batch.base_offset()
                ));
            }
            expected_next = batch.next_offset();
            let scanned = ScannedBatch {
                position,
                len,
                base_offset: batch.base_offset(),
                next_offset: batch.next_offset(),
                max_timestamp_ms: batch.max_timestamp_ms(),
            };
            visit(scanned, &batch);
            position += len as u64;
        }
        Ok(Ok(()))
    }

    /// Rebuilds the indexes and bounds by walking the whole file.
    pub fn rebuild(&mut self, limits: &DecodeLimits) -> io::Result<Result<(), ScanStop>> {
        self.index.clear();
        self.time_index.clear();
        self.bytes_since_index = u64::MAX;
        self.max_timestamp_ms = i64::MIN;
        self.next_offset = self.base;
        let mut found = Vec::new();
        let result = self.scan(0, self.base, limits, |b, _| found.push(b))?;
        for b in found {
            self.note_batch(b);
        }
        Ok(result)
    }

    /// Cuts the file to `position`, dropping everything after it.
    pub fn truncate(&mut self, position: u64) -> io::Result<()> {
        self.file.set_len(position)?;
        super::durability_journal::sync_all(&self.file)?;
        self.size = position;
        Ok(())
    }

    /// Removes the segment's files. Readers holding the file keep reading the unlinked inode.
    pub fn delete_files(&self) -> io::Result<()> {
        let _ = fs::remove_file(index_path(&self.dir, self.base));
        let _ = fs::remove_file(time_index_path(&self.dir, self.base));
        fs::remove_file(log_path(&self.dir, self.base))
    }

    /// Removes the index files only (before the log file is replaced by a cleaned copy).
    pub fn delete_index_files(&self) -> io::Result<()> {
        for path in [
            index_path(&self.dir, self.base),
            time_index_path(&self.dir, self.base),
        ] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads a segment in large chunks so that a walk over many small batches costs few syscalls.
pub struct ChunkReader<'a> {
    file: &'a File,
    end: u64,
    buf: bytes::Bytes,
    buf_at: u64,
    chunk: usize,
}

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a File, end: u64) -> Self {
        ChunkReader::with_chunk(file, end, SCAN_CHUNK_BYTES)
    }

    /// A reader whose reads are at least `chunk` bytes: a fetch reads its whole answer in one
    /// go and hands out a slice of it ([`ChunkReader::slice`]).
    pub fn with_chunk(file: &'a File, end: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            end,
            buf: bytes::Bytes::new(),
            buf_at: 0,
            chunk: chunk.max(SCAN_CHUNK_BYTES),
        }
    }

    /// `[start, end)` without reading again, when the last read covered it.
    pub fn slice(&self, start: u64, end: u64) -> Option<bytes::Bytes> {
        let buf_end = self.buf_at + self.buf.len() as u64;
        (start >= self.buf_at && end <= buf_end && start <= end).then(|| {
            self.buf
                .slice((start - self.buf_at) as usize..(end - self.buf_at) as usize)
        })
    }

    /// Returns `len` bytes at `position`, or None when fewer remain before the end.
    pub fn read(&mut self, position: u64, len: usize) -> io::Result<Option<bytes::Bytes>> {
        if position + len as u64 > self.end {
            return Ok(None);
        }
        let in_buf =
            position >= self.buf_at && position + len as u64 <= self.buf_at + self.buf.len() as u64;
        if !in_buf {
            let want = (len.max(self.chunk) as u64).min(self.end - position) as usize;
            self.buf = read_exact_at(self.file, position, want)?;
            self.buf_at = position;
        }
        let start = (position - self.buf_at) as usize;
        Ok(Some(self.buf.slice(start..start + len)))
    }
}

/// Fetch reads of every log on this node: a steady stream of fetches reuses the same warm
/// buffers once the answers cut from them have been sent (see `strait_protocol::pool`). A mirror
/// flow fetching 32 MiB at a time over several partitions keeps a handful of them in use.
static READ_BUFFERS: LazyLock<BufferPool> =
    LazyLock::new(|| BufferPool::new(READ_BUFFERS_MAX, READ_BUFFER_BYTES_MAX));
const READ_BUFFERS_MAX: usize = 16;
const READ_BUFFER_BYTES_MAX: usize = 256 << 20;

/// Reads `len` bytes at `position` into a pooled buffer (a fetch reads tens of MiB, and first
/// touch of fresh memory is slow on this kind of machine; clearing a warm buffer is not).
pub fn read_exact_at(file: &File, position: u64, len: usize) -> io::Result<bytes::Bytes> {
    let mut out = READ_BUFFERS.take(len);
    out.resize(len, 0);
    file.read_exact_at(&mut out, position).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                e.kind(),
                format!("the file ends before {len} bytes at {position}"),
            )
        } else {
            e
        }
    })?;
    Ok(READ_BUFFERS.freeze(out))
}

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

pub fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

/// Path of a compacted copy being written; never read back after a crash.
pub fn cleaned_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log.cleaned", base.0))
}

/// Parses `<20 digits>.log` into a base offset.
pub fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}
