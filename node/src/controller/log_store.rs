//! The controller's Raft log and vote on disk.
//!
//! Raft's safety rests on two promises a voter keeps across crashes: it never votes twice in a
//! term, and it never forgets an entry it said it holds. So the vote is written durably
//! ([`crate::durable_file`]) before `save_vote` returns, and appended entries are fsynced
//! before openraft's flush callback is called. Every write runs on a blocking thread while the
//! store's lock is held, so votes, appends, truncations and purges reach the disk in the order
//! openraft issued them.
//!
//! Files in the store's directory:
//! - `metadata.log`: records `[length u32][crc32c u32][version u8 + postcard entry]`, appended and
//!   fsynced. A record cut short at the end (a crash mid-append, before its fsync and so before
//!   anyone was told) is cut off at open; a damaged record with more after it is corruption and
//!   refuses the open, naming the file and offset.
//! - `vote`, `committed` (the commit point, so a restart re-applies up to it and never shows
//!   older metadata than before), `purged` (the last entry dropped for a snapshot).
//!
//! The metadata log is small (a few thousand entries between snapshots), so entries are also
//! kept in memory and reads never touch the disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use tracing::warn;

use super::stored::{blocking, damaged, decode, encode, read_state};
use super::{StorageError, TypeConfig};
use crate::durable_file;
use crate::storage::durability_journal;

/// The log's file name (`.log`, like segments: appended, and fsynced as it grows).
const LOG_FILE: &str = "metadata.log";
/// Bytes before a record's body: its length and CRC.
const RECORD_HEADER: usize = 8;

/// The durable Raft log (cheap to clone: clones share one store, as openraft's log readers do).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<tokio::sync::Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: Arc<File>,
    /// Bytes of whole records in `log`: where the next append goes.
    len: u64,
    entries: BTreeMap<u64, Held>,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

struct Held {
    entry: Entry<TypeConfig>,
    /// Where its record starts in `log`.
    offset: u64,
}

impl LogStore {
    /// Opens (or creates) the store in `dir`.
    pub async fn open(dir: PathBuf) -> Result<LogStore, StorageError> {
        let inner = blocking(move || load(&dir))
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogStore {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
        })
    }
}

impl LogStore {
    /// True when this store never held a vote, an entry or a purge: a node that never joined
    /// a quorum.
    pub async fn is_pristine(&self) -> bool {
        let inner = self.inner.lock().await;
        inner.vote.is_none() && inner.entries.is_empty() && inner.last_purged.is_none()
    }
}

fn load(dir: &Path) -> io::Result<Inner> {
    durable_file::create_dir(dir)?;
    let vote = read_state(&dir.join("vote"))?;
    // Both are stored as an Option (openraft's type), inside the Option of never written.
    let committed = read_state::<Option<LogId<u64>>>(&dir.join("committed"))?.flatten();
    let last_purged = read_state::<Option<LogId<u64>>>(&dir.join("purged"))?.flatten();
    let path = dir.join(LOG_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let bytes = std::fs::read(&path)?;
    let mut entries = BTreeMap::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some((entry, next)) = read_record(&bytes, at).map_err(|why| {
            damaged(
                &path,
                io::Error::new(io::ErrorKind::InvalidData, format!("{why} at byte {at}")),
            )
        })?
        else {
            warn!(path = %path.display(), at, dropped = bytes.len() - at, "the controller log ends in a record cut short (a crash mid-append); dropped it");
            file.set_len(at as u64)?;
            durability_journal::sync_all(&file)?;
            break;
        };
        let index = entry.log_id.index;
        if last_purged.is_none_or(|p| index > p.index) {
            if let Some((last, _)) = entries.last_key_value() {
                if index != last + 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: entry {index} follows entry {last}; the controller's log has a hole",
                            path.display()
                        ),
                    ));
                }
            }
            entries.insert(
                index,
                Held {
                    entry,
                    offset: at as u64,
                },
            );
        }
        at = next;
    }
    Ok(Inner {
        dir: dir.to_path_buf(),
        file: Arc::new(file),
        len: at.min(bytes.len()) as u64,
        entries,
        last_purged,
        vote,
        committed,
    })
}

/// The record at `at`: Ok(None) when it is cut short by the end of the file, an error when it
/// is whole but damaged.
fn read_record(bytes: &[u8], at: usize) -> Result<Option<(Entry<TypeConfig>, usize)>, String> {
    let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let start = at + RECORD_HEADER;
    let Some(body) = bytes.get(start..start + len) else {
        return Ok(None);
    };
    if crc32c::crc32c(body) != crc {
        // The last record torn by a crash mid-write can hold anything: only its end tells.
        if start + len == bytes.len() {
            return Ok(None);
        }
        return Err("a record fails its CRC".into());
    }
    let entry = decode(body).map_err(|e| format!("a record does not decode ({e})"))?;
    Ok(Some((entry, start + len)))
}

fn write_state<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    durable_file::write(path, &encode(value)?)
}

/// Appends `entry`'s record to `out`.
fn encode_record(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> io::Result<()> {
    let body = encode(entry)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, held)| held.entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, held)| held.entry.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let (path, value) = (inner.dir.join("vote"), *vote);
        blocking(move || write_state(&path, &value))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(value);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        if inner.committed == committed {
            return Ok(());
        }
        let path = inner.dir.join("committed");
        blocking(move || write_state(&path, &committed))
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut buf = Vec::new();
        let mut held = Vec::new();
        let encoded = entries.into_iter().try_for_each(|entry| {
            let offset = inner.len + buf.len() as u64;
            encode_record(&entry, &mut buf)?;
            held.push(Held { entry, offset });
            Ok::<(), io::Error>(())
        });
        let written = match encoded {
            Ok(()) => {
                let (file, at) = (inner.file.clone(), inner.len);
                let len = buf.len() as u64;
                blocking(move || {
                    file.write_all_at(&buf, at)?;
                    durability_journal::sync_data(&file)?;
                    Ok(len)
                })
                .await
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(len) => {
                inner.len += len;
                for h in held {
                    inner.entries.insert(h.entry.log_id.index, h);
                }
                // Only now is it on disk, so only now may openraft count it.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let Some(offset) = inner.entries.get(&log_id.index).map(|h| h.offset) else {
            return Ok(());
        };
        let file = inner.file.clone();
        blocking(move || {
            file.set_len(offset)?;
            durability_journal::sync_all(&file)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.entries.split_off(&log_id.index);
        inner.len = offset;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        // First the mark (entries at or below it are skipped at open from now on), then a log
        // file without them.
        let path = inner.dir.join("purged");
        blocking(move || write_state(&path, &Some(log_id)))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.last_purged = Some(log_id);
        let kept = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = kept;
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for (index, held) in &inner.entries {
            offsets.push((*index, buf.len() as u64));
            encode_record(&held.entry, &mut buf).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        let path = inner.dir.join(LOG_FILE);
        let len = buf.len() as u64;
        let file = blocking(move || {
            durable_file::write(&path, &buf)?;
            OpenOptions::new().read(true).write(true).open(&path)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.file = Arc::new(file);
        inner.len = len;
        for (index, offset) in offsets {
            if let Some(held) = inner.entries.get_mut(&index) {
                held.offset = offset;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    use super::*;
    use crate::controller::Command;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Command::DeleteTopic {
                name: format!("t{index}"),
            }),
        }
    }

    /// A directory holding a closed store with entries 1 to `n` of term 1.
    async fn closed_store_of(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = LogStore::open(dir.path().into()).await.expect("open");
        store
            .blocking_append((1..=n).map(|i| entry(1, i)))
            .await
            .expect("append");
        dir
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn vote_commit_point_and_entries_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = LogStore::open(dir.path().into()).await.expect("open");
        store
            .blocking_append((1..=5).map(|i| entry(1, i)))
            .await
            .expect("append");
        store.save_vote(&Vote::new(3, 2)).await.expect("vote");
        store
            .save_committed(Some(log_id(1, 1, 4)))
            .await
            .expect("commit");
        store.truncate(log_id(1, 1, 5)).await.expect("truncate");
        store.blocking_append([entry(3, 5)]).await.expect("append");
        drop(store);
        let mut store = LogStore::open(dir.path().into()).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5]);
        let last = store.get_log_state().await.expect("state").last_log_id;
        assert_eq!(
            last,
            Some(log_id(3, 1, 5)),
            "the entry that replaced a truncated one"
        );
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(3, 2))
        );
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(log_id(1, 1, 4))
        );
    }

    #[tokio::test]
    async fn a_record_cut_short_at_the_end_is_dropped_and_appends_go_on_after_it() {
        let dir = closed_store_of(3).await;
        let path = dir.path().join(LOG_FILE);
        let whole = std::fs::metadata(&path).expect("log").len();
        // A crash mid-append: the next record's header and half its body.
        let mut torn = Vec::new();
        encode_record(&entry(1, 4), &mut torn).expect("encode");
        torn.truncate(torn.len() / 2);
        let f = OpenOptions::new().append(true).open(&path).expect("log");
        f.write_all_at(&torn, whole).expect("write");
        drop(f);
        let mut store = LogStore::open(dir.path().into()).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
        assert_eq!(std::fs::metadata(&path).expect("log").len(), whole);
        store.blocking_append([entry(1, 4)]).await.expect("append");
        drop(store);
        let mut store = LogStore::open(dir.path().into()).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_damaged_record_before_the_end_refuses_the_open_and_names_the_file() {
        let dir = closed_store_of(3).await;
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).expect("log");
        bytes[RECORD_HEADER + 2] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let err = match LogStore::open(dir.path().into()).await {
            Ok(_) => panic!("a damaged log opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("CRC") && err.contains("log"), "{err}");
    }

    #[tokio::test]
    async fn a_purge_survives_a_reopen_and_later_entries_stay() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = LogStore::open(dir.path().into()).await.expect("open");
        store
            .blocking_append((1..=6).map(|i| entry(1, i)))
            .await
            .expect("append");
        store.purge(log_id(1, 1, 3)).await.expect("purge");
        store.blocking_append([entry(1, 7)]).await.expect("append");
        drop(store);
        let mut store = LogStore::open(dir.path().into()).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 7)));
        store.truncate(log_id(1, 1, 6)).await.expect("truncate");
        drop(store);
        let mut store = LogStore::open(dir.path().into()).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![4, 5]);
    }
}
