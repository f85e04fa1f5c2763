//! File descriptors: every segment of every partition keeps its file open, so the number of
//! partitions a node can hold is bounded by its descriptor limit.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (as Go's runtime does): the
//! stock soft limit of 1,024 would not hold a thousand partitions. Creating or growing a topic
//! checks the budget before touching the disk, so a create that cannot fit is refused with the
//! numbers and the fix instead of failing half way with EMFILE and leaving debris behind.

use std::io;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{info, warn};

/// Descriptors kept free for everything that is not a segment: the QUIC and admin sockets,
/// admin HTTP connections, index and snapshot writes, compaction's temporary files, rolls.
pub const RESERVE: u64 = 256;

/// Refused because the descriptors would run out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} needs {needed} more file descriptors, but the node has {open} open of its limit of {limit} (and keeps {RESERVE} in reserve); raise the limit (`ulimit -n` in the node's shell, `LimitNOFILE=` in its systemd unit) and restart the node, or use fewer partitions")]
pub struct DescriptorsExhausted {
    pub what: String,
    pub needed: u64,
    pub open: u64,
    pub limit: u64,
}

/// Raises the soft descriptor limit to the hard one; answers the limit now in force.
pub fn raise_limit() -> u64 {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let ceiling = maximum.unwrap_or_else(nr_open);
    let soft = current.unwrap_or(ceiling);
    if soft >= ceiling {
        return soft;
    }
    let raised = Rlimit {
        current: Some(ceiling),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            info!(from = soft, to = ceiling, "raised the open-file limit");
            ceiling
        }
        Err(e) => {
            warn!(limit = soft, error = %e, "could not raise the open-file limit");
            soft
        }
    }
}

/// The soft descriptor limit in force.
pub fn limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// How many descriptors this process has open now.
pub fn open_now() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Refuses `what` if `needed` more descriptors would not fit under the limit with the reserve.
pub fn check(what: &str, needed: u64) -> Result<(), DescriptorsExhausted> {
    let (open, limit) = (open_now(), limit());
    if open.saturating_add(needed).saturating_add(RESERVE) > limit {
        return Err(DescriptorsExhausted {
            what: what.to_string(),
            needed,
            open,
            limit,
        });
    }
    Ok(())
}

/// Whether an I/O error is the process running out of descriptors.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// Linux's ceiling for a process's descriptors, used when the hard limit is unlimited.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_beyond_the_limit_is_refused_with_the_numbers_and_the_fix() {
        let err = check("creating topic huge", u64::MAX / 2).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("ulimit -n"), "{text}");
        assert!(text.contains("LimitNOFILE"), "{text}");
        assert!(err.open > 0);
        assert!(check("one more file", 1).is_ok());
    }
}
