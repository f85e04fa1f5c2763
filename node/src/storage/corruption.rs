//! Detected corruption: every place that finds a damaged batch reports it here, so none is
//! swallowed. Each report is logged with the log, segment and position, and counted by what
//! was done about it (`strait_storage_corruptions_total{action}` on `/metrics`):
//!
//! - `truncated`: the damage lay past the recovery point (a torn tail after a crash) and the log
//!   was cut before it, as recovery does at start;
//! - `offline`: the damage lay in data the log had promised durable (below the recovery point,
//!   in a sealed segment, or found by a read), so the partition was taken offline, as a failed
//!   fsync does: it refuses reads and writes until an operator restores it.

use std::sync::atomic::{AtomicU64, Ordering};

use strait_protocol::Offset;
use tracing::error;

static TRUNCATED: AtomicU64 = AtomicU64::new(0);
static OFFLINE: AtomicU64 = AtomicU64::new(0);

/// What was done about a detected corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Truncated,
    Offline,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Truncated => "truncated",
            Action::Offline => "offline",
        }
    }
}

/// Logs and counts one detected corruption.
pub fn report(log: &str, segment: Offset, position: u64, reason: &str, action: Action) {
    let counter = match action {
        Action::Truncated => &TRUNCATED,
        Action::Offline => &OFFLINE,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    error!(
        log,
        segment = segment.0,
        position,
        reason,
        action = action.name(),
        "corrupt data detected"
    );
}

/// Corruptions detected since the process started, by action.
pub fn counts() -> [(Action, u64); 2] {
    [
        (Action::Truncated, TRUNCATED.load(Ordering::Relaxed)),
        (Action::Offline, OFFLINE.load(Ordering::Relaxed)),
    ]
}
