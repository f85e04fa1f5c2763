//! The format version of a data directory, so a node never misreads data written in another
//! layout: it refuses, with a message that says so, rather than serving garbage or cutting
//! "torn" tails that are merely foreign.
//!
//! Versions: 1 was Strait's own batch (magic 1, little-endian, provenance inside the batch);
//! 2 is Kafka's RecordBatch v2 with provenance in each partition's `provenance.log`. A
//! directory without the `format` file but with topics is from before versions were written,
//! i.e. version 1.

use std::io;
use std::path::{Path, PathBuf};

use crate::durable_file;

pub const FILE: &str = "format";
/// What this node writes and reads.
pub const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the data directory {dir} holds data in format {found} ({what}); this node reads only format {VERSION} (Kafka's RecordBatch v2). Start it with an empty --data-dir and copy the data across with a mirror flow from a node of the release that wrote it", what = describe(*found))]
    Old { dir: PathBuf, found: u32 },
    #[error("the data directory {dir} holds data in format {found}, newer than this node's {VERSION}; run the release that wrote it")]
    Newer { dir: PathBuf, found: u32 },
    #[error("{path}: {detail}; it should hold the data directory's format version ({VERSION})")]
    Unreadable { path: PathBuf, detail: String },
    #[error("cannot record the data directory's format in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn describe(version: u32) -> &'static str {
    match version {
        1 => "Strait's own batch layout, before Kafka's RecordBatch v2",
        _ => "an unknown layout",
    }
}

/// Checks the format of `data_dir`, stamping a new (topic-less) directory with [`VERSION`].
pub fn check_or_stamp(data_dir: &Path) -> Result<(), FormatError> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: u32 = text.trim().parse().map_err(|_| FormatError::Unreadable {
                path: path.clone(),
                detail: format!("holds {:?}, not a version number", text.trim()),
            })?;
            match found.cmp(&VERSION) {
                std::cmp::Ordering::Equal => Ok(()),
                std::cmp::Ordering::Less => Err(FormatError::Old {
                    dir: data_dir.into(),
                    found,
                }),
                std::cmp::Ordering::Greater => Err(FormatError::Newer {
                    dir: data_dir.into(),
                    found,
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if holds_topics(data_dir) {
                return Err(FormatError::Old {
                    dir: data_dir.into(),
                    found: 1,
                });
            }
            durable_file::write(&path, format!("{VERSION}\n").as_bytes())
                .map_err(|source| FormatError::Io { path, source })
        }
        Err(e) => Err(FormatError::Unreadable {
            path,
            detail: e.to_string(),
        }),
    }
}

fn holds_topics(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join("topics"))
        .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_stamped_and_an_old_one_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        check_or_stamp(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "2\n"
        );
        check_or_stamp(dir.path()).unwrap();

        // Topics but no version: written before versions existed.
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(old.path().join("topics/orders")).unwrap();
        let err = check_or_stamp(old.path()).unwrap_err().to_string();
        assert!(
            err.contains("format 1") && err.contains("RecordBatch v2"),
            "{err}"
        );
        assert!(
            !old.path().join(FILE).exists(),
            "an old directory is not restamped"
        );

        std::fs::write(dir.path().join(FILE), "3\n").unwrap();
        let err = check_or_stamp(dir.path()).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        std::fs::write(dir.path().join(FILE), "two").unwrap();
        let err = check_or_stamp(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a version number"), "{err}");
    }
}
