//! Durable small files: every state file a node keeps beside its segments (`topic.json`,
//! `producer-ids`, `recovery-point`, `log-start-offset`, snapshots, `acls.json`, `flows.json`)
//! is written here and nowhere else.
//!
//! A rename is atomic but not durable: until the directory is fsynced a power cut may undo it,
//! and until the file is fsynced the renamed name may point at empty or partial data. So a
//! write is: temporary file, fsync, rename over the old name, fsync the directory. A crash at
//! any step leaves the old content or the new one, never a mix, and the new content is on disk
//! once [`write`] returns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::storage::durability_journal;

/// The suffix of a write in progress; an open that finds one removes it (the old file is
/// intact beside it).
pub const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `data`, durably (see the module doc).
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with_mode(path, data, None)
}

/// [`write`] for a file only its owner may read or write (mode 0600 from its creation on, so
/// it is never readable by others, not even for a moment).
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with_mode(path, data, Some(0o600))
}

fn write_with_mode(path: &Path, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temp_path(path);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut f = options.open(&tmp)?;
    if let Some(mode) = mode {
        // A leftover temporary file keeps its old mode: set it, whatever it was.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_parent(path)?;
    durability_journal::file_written(path, data);
    Ok(())
}

/// Creates `dir` (and missing parents) and makes its entry durable in its parent, so a power
/// cut after this returns cannot make the directory vanish.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sync_parent(d)?;
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, making a rename, creation or removal in it durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `topic.json` → `topic.json.tmp`: the suffix is added, never substituted, so two files that
/// differ only in their extension never share a temporary name.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("topic.json");
        write(&path, b"one").expect("first write");
        write(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(!temp_path(&path).exists());
        assert_eq!(
            temp_path(&path).file_name().expect("name"),
            "topic.json.tmp"
        );
    }

    #[test]
    fn create_dir_makes_every_missing_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        create_dir(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir(&deep).expect("creating again is fine");
    }
}
