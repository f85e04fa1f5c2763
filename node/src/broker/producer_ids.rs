//! Producer ids for idempotent producers, handed out in blocks.
//!
//! The end of the current block is persisted (durably) before any id of it is used, so ids are
//! never reused across restarts. A reused id would let a new producer's first batch match an
//! old producer's sequence window and be acknowledged as a duplicate without being written, so
//! a file that cannot be read stops the node instead of silently starting again from 0.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strait_protocol::{ErrorCode, WireError};

use crate::durable_file;

pub(super) const PRODUCER_ID_FILE: &str = "producer-ids";
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why the persisted producer-id block could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerIdsError {
    #[error("cannot read {path}: {source}; producer ids must never be reused, so the node will not start without it. Fix the file's permissions or disk and restart")]
    Unreadable { path: String, source: io::Error },
    #[error("{path} holds {content:?}, not a producer id; producer ids must never be reused, so the node will not start. If the file was damaged, write a number above every id this node has handed out (when unsure, a large one such as 1000000000000) into it and restart")]
    Damaged { path: String, content: String },
}

/// The next id to hand out and the end of the persisted block it comes from.
pub(super) struct ProducerIds {
    path: PathBuf,
    ids: Mutex<Block>,
}

struct Block {
    next: i64,
    end: i64,
}

impl ProducerIds {
    /// Loads the persisted block end from `data_dir`; a missing file is a fresh node (no id was
    /// ever handed out, since the block is persisted before its first id is used).
    pub(super) fn load(data_dir: &Path) -> Result<ProducerIds, ProducerIdsError> {
        let path = data_dir.join(PRODUCER_ID_FILE);
        let end = match std::fs::read_to_string(&path) {
            Ok(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|end| *end >= 0)
                .ok_or_else(|| ProducerIdsError::Damaged {
                    path: path.display().to_string(),
                    content: raw.chars().take(64).collect(),
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(ProducerIdsError::Unreadable {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(ProducerIds {
            path,
            ids: Mutex::new(Block { next: end, end }),
        })
    }

    /// A fresh producer id; persists a new block first when the current one is used up.
    pub(super) fn allocate(&self) -> Result<i64, WireError> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.next >= ids.end {
            let end = ids
                .next
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or_else(|| WireError::new(ErrorCode::STORAGE, "producer ids are exhausted"))?;
            durable_file::write(&self.path, end.to_string().as_bytes()).map_err(|e| {
                WireError::new(
                    ErrorCode::STORAGE,
                    format!(
                        "cannot persist producer ids to {}: {e}",
                        self.path.display()
                    ),
                )
            })?;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_continue_after_a_reopen_and_are_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ProducerIds::load(dir.path()).expect("fresh");
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().expect("id")).collect();
        assert_eq!(first, vec![0, 1, 2]);
        let again = ProducerIds::load(dir.path()).expect("reopen");
        assert!(again.allocate().expect("id") >= PRODUCER_ID_BLOCK);
    }

    #[test]
    fn a_damaged_file_stops_the_load_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PRODUCER_ID_FILE), b"\0\0garbage").expect("write");
        let err = ProducerIds::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("a damaged file is refused"));
        let text = err.to_string();
        assert!(text.contains("producer-ids"), "{text}");
        assert!(text.contains("never be reused"), "{text}");
    }

    #[test]
    fn an_unreadable_file_stops_the_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory in the file's place: reading it fails with something other than NotFound.
        std::fs::create_dir(dir.path().join(PRODUCER_ID_FILE)).expect("mkdir");
        assert!(matches!(
            ProducerIds::load(dir.path()),
            Err(ProducerIdsError::Unreadable { .. })
        ));
    }
}
