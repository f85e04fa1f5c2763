//! A test hook for simulated power loss. With `STRAIT_TEST_DURABLE_JOURNAL=FILE` set, every
//! successful fsync of a segment appends `LENGTH PATH` to FILE: the bytes of PATH up to LENGTH
//! are on disk. Every completed durable write of a state file (`crate::durable_file`) appends
//! `file HEX PATH`: PATH holds exactly those bytes even after a power cut. After a `kill -9`, a
//! test cuts each segment back to its last durable length (tearing the next write) and puts
//! each state file back to its last durable content (or removes it, if it never had one) to see
//! exactly what a power cut would have left. Unset, this does nothing but one cached
//! environment lookup.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};

fn journal() -> Option<&'static Mutex<File>> {
    static JOURNAL: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    JOURNAL
        .get_or_init(|| {
            let path = std::env::var_os("STRAIT_TEST_DURABLE_JOURNAL")?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            Some(Mutex::new(f))
        })
        .as_ref()
}

/// What a sync is about to make durable: the file's path and length before the fsync.
pub struct Mark(Option<(std::path::PathBuf, u64)>);

/// Call before fsyncing `file`.
pub fn before_sync(file: &File) -> Mark {
    if journal().is_none() {
        return Mark(None);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok();
    let len = file.metadata().map(|m| m.len()).ok();
    Mark(path.zip(len))
}

/// Call after the fsync succeeded.
pub fn after_sync(mark: Mark) {
    if let (Some(j), Mark(Some((path, len)))) = (journal(), mark) {
        let mut j = j.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(j, "{len} {}", path.display());
    }
}

/// Fsyncs data and records it.
pub fn sync_data(file: &File) -> std::io::Result<()> {
    let mark = before_sync(file);
    file.sync_data()?;
    after_sync(mark);
    Ok(())
}

/// Fsyncs data and metadata and records it.
pub fn sync_all(file: &File) -> std::io::Result<()> {
    let mark = before_sync(file);
    file.sync_all()?;
    after_sync(mark);
    Ok(())
}

/// Records that `path` durably holds `data` (called by `durable_file::write` once the file and
/// its directory are synced).
pub fn file_written(path: &std::path::Path, data: &[u8]) {
    let Some(j) = journal() else { return };
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut line = String::with_capacity(data.len() * 2 + 64);
    line.push_str("file ");
    for b in data {
        let _ = std::fmt::Write::write_fmt(&mut line, format_args!("{b:02x}"));
    }
    let mut j = j.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(j, "{line} {}", path.display());
}
