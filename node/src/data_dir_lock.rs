//! One node per data directory. Two nodes recovering and appending to the same logs would
//! interleave writes and corrupt them, so a node takes an exclusive `flock` on `<data>/lock`
//! before it reads anything there and holds it until it exits (the kernel drops it when the
//! process dies, even under kill -9). The file also names the holder's pid for the error a
//! second node prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "lock";

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirLockError {
    #[error("data directory {dir} is in use by another node (pid {holder}); two nodes must never share a data directory: stop that node, or give this one its own --data-dir")]
    InUse { dir: String, holder: String },
    #[error("cannot lock data directory {dir}: {source}; check that it exists and is writable")]
    Io { dir: String, source: io::Error },
}

/// Held for the node's lifetime; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes `dir` for this process, creating it if needed.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let io_err = |source| DataDirLockError::Io {
            dir: dir.display().to_string(),
            source,
        };
        crate::durable_file::create_dir(dir).map_err(io_err)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DataDirLockError::InUse {
                    dir: dir.display().to_string(),
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let err = DataDirLock::acquire(dir.path()).expect_err("second is refused");
        let text = err.to_string();
        assert!(
            text.contains(&std::process::id().to_string()),
            "names the holder: {text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once released");
    }
}
