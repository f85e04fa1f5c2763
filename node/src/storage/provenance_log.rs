//! The provenance of the mirrored batches of one partition: which clusters each one passed
//! through, kept beside the log because a batch (Kafka's RecordBatch v2) has no room for it.
//!
//! One append-only file, `provenance.log`, one entry per mirrored batch in offset order:
//! `[length u32][crc32c u32][target base u64][target last u64][postcard chain]` (little-endian;
//! the CRC covers everything after it). A chunk's entries are written and fdatasynced *before*
//! its batches are written to the segment, so a batch in the log never lacks its provenance,
//! whatever the flush policy and wherever a crash or power cut falls. Entries past the log end
//! (their batches never made it) are cut on open, as is a torn tail. The mirror map is rebuilt
//! from this file on open; fetches by mirror principals read entries back so a flow copying
//! the batches on keeps their whole chain. A partition that never received a copy has no file
//! (and holds no descriptor for one).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strait_protocol::{Offset, Provenance};

use crate::storage::durability_journal;

pub(crate) const FILE: &str = "provenance.log";

const ENTRY_HEAD: usize = 4 + 4 + 8 + 8;
/// An entry larger than this is damage, not data (16 hops of 255-byte names fit well inside).
const ENTRY_BYTES_MAX: u32 = 64 << 10;
/// Entries below the log start are rewritten away once there are this many of them and they
/// are most of the file.
const DEAD_ENTRIES_REWRITE: usize = 4096;

/// Where one entry sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    base: u64,
    last: u64,
    at: u64,
    len: u32,
}

/// A mirrored batch's chain and the offsets its batch took here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub base: u64,
    pub last: u64,
    pub provenance: Provenance,
}

/// One partition's provenance file and the position of every entry in it.
#[derive(Debug)]
pub struct ProvenanceLog {
    path: PathBuf,
    /// Opened when the first entry is written; shared with readers, who read outside the
    /// partition's lock.
    file: Option<Arc<File>>,
    entries: Vec<Entry>,
    end: u64,
}

impl ProvenanceLog {
    /// Opens (or creates) the file in `dir`, dropping a torn tail and every entry at or past
    /// `log_end`; answers the entries kept, oldest first.
    pub fn open(dir: &Path, log_end: Offset) -> io::Result<(ProvenanceLog, Vec<Stored>)> {
        let path = dir.join(FILE);
        let mut log = ProvenanceLog {
            path,
            file: None,
            entries: Vec::new(),
            end: 0,
        };
        if !log.path.exists() {
            return Ok((log, Vec::new()));
        }
        let file = OpenOptions::new().read(true).write(true).open(&log.path)?;
        let data = std::fs::read(&log.path)?;
        let mut kept = Vec::new();
        let mut at = 0usize;
        while let Some((stored, len)) = decode(&data[at..]) {
            if stored.base >= log_end.0 {
                break;
            }
            log.entries.push(Entry {
                base: stored.base,
                last: stored.last,
                at: at as u64,
                len: len as u32,
            });
            kept.push(stored);
            at += len;
        }
        log.end = at as u64;
        if log.end != data.len() as u64 {
            file.set_len(log.end)?;
            durability_journal::sync_data(&file)?;
        }
        log.file = Some(Arc::new(file));
        Ok((log, kept))
    }

    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            crate::durable_file::sync_parent(&self.path)?;
            self.file = Some(Arc::new(file));
        }
        Ok(self
            .file
            .as_deref()
            .unwrap_or_else(|| unreachable!("just opened")))
    }

    /// Writes entries for batches about to be appended, durably: they reach the disk before
    /// the batches do.
    pub fn append(&mut self, batches: &[Stored]) -> io::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut added = Vec::with_capacity(batches.len());
        for b in batches {
            let at = self.end + buf.len() as u64;
            let len = encode(b, &mut buf);
            added.push(Entry {
                base: b.base,
                last: b.last,
                at,
                len: len as u32,
            });
        }
        let end = self.end;
        let file = self.file()?;
        let write = file
            .write_all_at(&buf, end)
            .and_then(|_| durability_journal::sync_data(file));
        if let Err(e) = write {
            // Whatever part landed lies past `end` and is cut on the next open or append.
            let _ = file.set_len(end);
            return Err(e);
        }
        self.end += buf.len() as u64;
        self.entries.extend(added);
        Ok(())
    }

    /// Forgets entries at or past `end`: the log was cut there (failback, a failed write).
    pub fn truncate_from(&mut self, end: Offset) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| e.base < end.0);
        if keep == self.entries.len() {
            return Ok(());
        }
        self.end = self.entries[keep].at;
        self.entries.truncate(keep);
        let end = self.end;
        let file = self.file()?;
        file.set_len(end)?;
        durability_journal::sync_data(file)
    }

    /// The chain of each batch starting at one of `bases` (ascending) that was mirrored here,
    /// by that base. A batch the cleaner rewrote keeps its original entry, found by the range
    /// it falls in. One read covers them all.
    pub fn lookup(&self, bases: &[u64]) -> io::Result<Vec<(u64, Provenance)>> {
        self.locate(bases).read()
    }

    /// Where the entries of `bases` lie, to be read with [`Located::read`] once the caller
    /// has let go of the partition's lock (the read is file I/O).
    pub fn locate(&self, bases: &[u64]) -> Located {
        let mut found = Vec::new();
        for &base in bases {
            let i = self.entries.partition_point(|e| e.last < base);
            if let Some(e) = self.entries.get(i).filter(|e| e.base <= base) {
                found.push((base, *e));
            }
        }
        Located {
            path: self.path.clone(),
            file: self.file.clone().filter(|_| !found.is_empty()),
            found,
        }
    }

    /// Retention moved the log start to `start`: once most entries lie below it, the file is
    /// rewritten without them (durably, replacing the old one whole).
    pub fn forget_below(&mut self, start: Offset) -> io::Result<()> {
        let dead = self.entries.partition_point(|e| e.last < start.0);
        if dead < DEAD_ENTRIES_REWRITE || dead * 2 < self.entries.len() {
            return Ok(());
        }
        let from = self.entries.get(dead).map_or(self.end, |e| e.at);
        let mut live = vec![0u8; (self.end - from) as usize];
        self.file()?.read_exact_at(&mut live, from)?;
        crate::durable_file::write(&self.path, &live)?;
        self.file = Some(Arc::new(
            OpenOptions::new().read(true).write(true).open(&self.path)?,
        ));
        self.entries.drain(..dead);
        for e in &mut self.entries {
            e.at -= from;
        }
        self.end -= from;
        Ok(())
    }
}

/// Entries found by [`ProvenanceLog::locate`], not read yet.
pub struct Located {
    path: PathBuf,
    file: Option<Arc<File>>,
    found: Vec<(u64, Entry)>,
}

impl Located {
    /// Reads the entries (one read covering them all): each batch base with its chain.
    pub fn read(self) -> io::Result<Vec<(u64, Provenance)>> {
        let (Some((_, first)), Some((_, last)), Some(file)) =
            (self.found.first(), self.found.last(), &self.file)
        else {
            return Ok(Vec::new());
        };
        let from = first.at;
        let mut data = vec![0u8; (last.at + u64::from(last.len) - from) as usize];
        file.read_exact_at(&mut data, from)?;
        let mut out = Vec::with_capacity(self.found.len());
        for (base, e) in &self.found {
            let at = (e.at - from) as usize;
            let (stored, _) = decode(&data[at..]).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the entry at {} no longer checks",
                        self.path.display(),
                        e.at
                    ),
                )
            })?;
            out.push((*base, stored.provenance));
        }
        Ok(out)
    }
}

fn encode(b: &Stored, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let chain = postcard::to_allocvec(&b.provenance)
        .unwrap_or_else(|_| unreachable!("a provenance chain always serializes"));
    out.extend_from_slice(&((ENTRY_HEAD - 4 + chain.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&b.base.to_le_bytes());
    out.extend_from_slice(&b.last.to_le_bytes());
    out.extend_from_slice(&chain);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// One entry from the start of `buf` and its length; None at the end or at damage.
fn decode(buf: &[u8]) -> Option<(Stored, usize)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
    if len > ENTRY_BYTES_MAX || (len as usize) < ENTRY_HEAD - 4 {
        return None;
    }
    let total = 4 + len as usize;
    let entry = buf.get(..total)?;
    let crc = u32::from_le_bytes(entry[4..8].try_into().ok()?);
    if crc32c::crc32c(&entry[8..]) != crc {
        return None;
    }
    let base = u64::from_le_bytes(entry[8..16].try_into().ok()?);
    let last = u64::from_le_bytes(entry[16..24].try_into().ok()?);
    let provenance = postcard::from_bytes(&entry[24..]).ok()?;
    Some((
        Stored {
            base,
            last,
            provenance,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use strait_protocol::Hop;

    use super::*;

    fn chain(cluster: &str, base_offset: u64) -> Provenance {
        Provenance {
            hops: vec![Hop {
                cluster: cluster.into(),
                topic: "t".into(),
                partition: 0,
                base_offset,
            }],
        }
    }

    fn stored(base: u64, last: u64) -> Stored {
        Stored {
            base,
            last,
            provenance: chain("east", base * 10),
        }
    }

    #[test]
    fn entries_survive_reopen_and_entries_past_the_log_end_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, kept) = ProvenanceLog::open(dir.path(), Offset(0)).unwrap();
        assert!(kept.is_empty());
        log.append(&[stored(0, 4), stored(5, 9)]).unwrap();
        log.append(&[stored(20, 29)]).unwrap();
        assert_eq!(
            log.lookup(&[5, 7, 12, 20]).unwrap(),
            vec![
                (5, chain("east", 50)),
                (7, chain("east", 50)),
                (20, chain("east", 200))
            ]
        );
        drop(log);
        let (log, kept) = ProvenanceLog::open(dir.path(), Offset(20)).unwrap();
        assert_eq!(kept, vec![stored(0, 4), stored(5, 9)]);
        assert!(log.lookup(&[20]).unwrap().is_empty());
        drop(log);
        let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        // A torn tail (half an entry) is cut too.
        let f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all_at(&[7, 0, 0], size).unwrap();
        let (mut log, kept) = ProvenanceLog::open(dir.path(), Offset(100)).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE)).unwrap().len(),
            size
        );
        log.truncate_from(Offset(5)).unwrap();
        assert_eq!(log.lookup(&[0, 5]).unwrap(), vec![(0, chain("east", 0))]);
    }

    #[test]
    fn retention_rewrites_the_file_without_dead_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ProvenanceLog::open(dir.path(), Offset(0)).unwrap();
        let all: Vec<Stored> = (0..DEAD_ENTRIES_REWRITE as u64 * 2)
            .map(|i| stored(i * 2, i * 2 + 1))
            .collect();
        log.append(&all).unwrap();
        let before = log.end;
        log.forget_below(Offset(DEAD_ENTRIES_REWRITE as u64 * 3))
            .unwrap();
        assert!(log.end < before, "{} {before}", log.end);
        let last = all.last().unwrap().base;
        assert_eq!(log.lookup(&[0]).unwrap(), vec![]);
        assert_eq!(
            log.lookup(&[last]).unwrap(),
            vec![(last, chain("east", last * 10))]
        );
        drop(log);
        let (_, kept) = ProvenanceLog::open(dir.path(), Offset(u64::MAX >> 1)).unwrap();
        assert_eq!(kept.first().unwrap().base, DEAD_ENTRIES_REWRITE as u64 * 3);
    }
}
