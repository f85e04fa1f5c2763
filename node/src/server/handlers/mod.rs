//! What each family of requests does. Each room takes the request service (for the broker,
//! groups, ACLs and metrics) and the session, and answers; none knows which front door the
//! request came through.
//!
//! Storage work (pwrite, fsync, segment rolls, large preads, directory changes) runs through
//! [`blocking`], on tokio's blocking threads: the async workers also drive quinn's endpoint, so
//! one slow disk call there would stall every connection.

pub(super) mod acls;
pub(super) mod admin;
pub(super) mod data;
pub(super) mod groups;
pub(super) mod mirror;
pub(super) mod topics;

use bytes::Bytes;
use strait_protocol::{ErrorCode, Response, WireError};

use crate::storage::producer_state::SequenceError;
use crate::storage::LogError;

/// An answer and its payload chunks, sent as they are.
pub type Answer = (Response, Vec<Bytes>);

/// An answer without payload.
fn plain(response: Response) -> Result<Answer, WireError> {
    Ok((response, Vec::new()))
}

/// Runs blocking storage work on tokio's blocking threads (see the module doc).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WireError::new(ErrorCode::INTERNAL, format!("a storage task failed: {e}")))?
}

/// A batch that failed its checks, named by the partition it was sent to.
pub(super) fn corrupt(topic: &str, partition: u32, e: strait_protocol::DecodeError) -> WireError {
    WireError::new(
        ErrorCode::CORRUPT_BATCH,
        format!("{topic}/{partition}: {e}"),
    )
}

/// A log error as the peer is told it.
pub(super) fn log_error(e: LogError) -> WireError {
    let code = match &e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        LogError::OffsetNotMonotonic { .. } => ErrorCode::INVALID_REQUEST,
        LogError::Offline { .. } => ErrorCode::PARTITION_OFFLINE,
        LogError::WriteFailed { .. } => ErrorCode::WRITE_FAILED,
        LogError::Corrupt { .. } => ErrorCode::PARTITION_OFFLINE,
        LogError::Sequence {
            source: SequenceError::Fenced { .. },
            ..
        } => ErrorCode::PRODUCER_FENCED,
        LogError::Sequence { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE,
        LogError::NoProvenance { .. } => ErrorCode::INVALID_REQUEST,
        _ => ErrorCode::STORAGE,
    };
    WireError::new(code, e.to_string())
}

/// Counts a produce, fetch or mirror append in its topic's metrics.
pub(super) fn count_io(
    t: &crate::metrics::TopicIo,
    kind: &str,
    response: &Response,
    out: &[Bytes],
    in_bytes: u64,
    from: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    match response {
        Response::Produced { .. } if kind == "mirror_append" => {
            t.mirror_append_bytes.fetch_add(in_bytes, Relaxed);
        }
        Response::Produced {
            base_offset,
            last_offset,
            ..
        } => {
            t.produce_records
                .fetch_add(last_offset.saturating_sub(*base_offset) + 1, Relaxed);
            t.produce_bytes.fetch_add(in_bytes, Relaxed);
        }
        Response::Fetched { .. } => {
            let mut offsets = 0;
            for chunk in out {
                let mut at = 0;
                while let Some((base, len)) = strait_protocol::batch::peek_header(&chunk[at..]) {
                    if let Some((_, next)) = strait_protocol::batch::peek_offsets(&chunk[at..]) {
                        offsets += next.0.saturating_sub(base.0.max(from));
                    }
                    at += len;
                    if at >= chunk.len() {
                        break;
                    }
                }
            }
            t.fetch_records.fetch_add(offsets, Relaxed);
            t.fetch_bytes
                .fetch_add(out.iter().map(|b| b.len() as u64).sum(), Relaxed);
        }
        _ => {}
    }
}
