//! How the controller's files encode what they hold, and where their I/O runs.
//!
//! postcard is compact but not self-describing: a changed type would silently misread old
//! bytes. So every stored value starts with a format version, and a build that finds another
//! version says so instead of guessing.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte in front of every stored value (log records, state files, snapshots).
const FORMAT: u8 = 1;

pub(super) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = vec![FORMAT];
    postcard::to_io(value, &mut out).map_err(io::Error::other)?;
    Ok(out)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable: {e}"))),
        Some((other, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("format version {other}, this build reads {FORMAT}: run a newer strait"),
        )),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "empty")),
    }
}

/// `e` with the file it concerns and the way out.
pub(super) fn damaged(path: &std::path::Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "{}: {e}; remove this node's controller directory and let it catch up from the other voters",
            path.display()
        ),
    )
}

/// Runs file I/O on a blocking thread (never on a tokio worker, which drives QUIC too).
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// A stored value; None when the file was never written.
pub(super) fn read_state<T: DeserializeOwned>(path: &std::path::Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|e| damaged(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}
