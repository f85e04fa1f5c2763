//! Frame I/O on QUIC streams, shared by both ends: the client reads answers and the node reads
//! requests with the same code, and both write frames the same way.
//!
//! A frame is `frame::encode`'s prefix and header followed by the raw payload. Reading checks
//! both lengths against the limits before allocating, gathers the body from quinn's chunks
//! without a zero-fill pass (a body that arrives in one chunk is not copied at all), and can
//! bound every stall (no bytes for a while) without bounding a whole large body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::frame::{self, FrameError, FrameLimits, PREFIX_LEN};
use crate::pool::BufferPool;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("stream lost: {0}")]
    Lost(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("no bytes moved for {0:?}")]
    Stalled(Duration),
}

fn lost(e: impl std::fmt::Display) -> StreamError {
    StreamError::Lost(e.to_string())
}

/// Reads one whole frame: its header decoded as `T`, and its payload.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limits: &FrameLimits,
    buffers: Option<&BufferPool>,
) -> Result<(T, Bytes), StreamError> {
    let prefix = read_prefix(recv).await?;
    read_frame_body(recv, prefix, limits, None, buffers).await
}

/// Reads a frame's fixed-size prefix.
pub async fn read_prefix(recv: &mut quinn::RecvStream) -> Result<[u8; PREFIX_LEN], StreamError> {
    let mut prefix = [0u8; PREFIX_LEN];
    recv.read_exact(&mut prefix).await.map_err(lost)?;
    Ok(prefix)
}

/// Reads the rest of a frame whose prefix was read; with `stall`, fails when no bytes arrive
/// for that long. A body that arrives in pieces is gathered into a buffer of `buffers`.
pub async fn read_frame_body<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    prefix: [u8; PREFIX_LEN],
    limits: &FrameLimits,
    stall: Option<Duration>,
    buffers: Option<&BufferPool>,
) -> Result<(T, Bytes), StreamError> {
    let lengths = frame::decode_prefix(prefix, limits)?;
    let total = lengths.total();
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut have = 0;
    while have < total {
        let next = recv.read_chunk(total - have, true);
        let chunk = match stall {
            Some(stall) => tokio::time::timeout(stall, next)
                .await
                .map_err(|_| StreamError::Stalled(stall))?,
            None => next.await,
        }
        .map_err(lost)?;
        let chunk = chunk
            .ok_or_else(|| {
                lost(format!(
                    "stream ended {have} bytes into a {total}-byte frame"
                ))
            })?
            .bytes;
        have += chunk.len();
        if gathered.is_empty() && have == total && first.is_none() {
            first = Some(chunk);
        } else {
            if gathered.capacity() == 0 {
                gathered = match buffers {
                    Some(pool) => pool.take(total),
                    None => BytesMut::with_capacity(total),
                };
            }
            gathered.extend_from_slice(&chunk);
        }
    }
    let mut body = match (first, buffers) {
        (Some(whole), _) => whole,
        (None, Some(pool)) => pool.freeze(gathered),
        (None, None) => gathered.freeze(),
    };
    let header = body.split_to(lengths.header as usize);
    Ok((frame::decode_header(&header)?, body))
}

/// Writes one frame (`message` and its payload chunks, sent as they are) and finishes the
/// stream. With `stall`, fails when the peer takes no bytes for that long: a peer that never
/// reads cannot pin the answer's memory.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    payload: impl IntoIterator<Item = Bytes>,
    payload_len: usize,
    stall: Option<Duration>,
) -> Result<(), StreamError> {
    send_frame(send, message, payload, payload_len, stall).await?;
    send.finish().map_err(lost)
}

/// Writes one frame and leaves the stream open for more (a streaming fetch's frames, its
/// reader's credits).
pub async fn send_frame<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    payload: impl IntoIterator<Item = Bytes>,
    payload_len: usize,
    stall: Option<Duration>,
) -> Result<(), StreamError> {
    let head = frame::encode(message, payload_len)?;
    write_chunk(send, head, stall).await?;
    for chunk in payload {
        write_chunk(send, chunk, stall).await?;
    }
    Ok(())
}

/// Waits for the next frame's prefix of a stream that carries several; None when the peer
/// finished the stream between frames. With `stall`, fails when nothing arrives for that long.
pub async fn next_prefix(
    recv: &mut quinn::RecvStream,
    stall: Option<Duration>,
) -> Result<Option<[u8; PREFIX_LEN]>, StreamError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut have = 0;
    while have < PREFIX_LEN {
        let read = recv.read(&mut prefix[have..]);
        let n = match stall {
            Some(stall) => tokio::time::timeout(stall, read)
                .await
                .map_err(|_| StreamError::Stalled(stall))?,
            None => read.await,
        }
        .map_err(lost)?;
        match n {
            Some(n) => have += n,
            None if have == 0 => return Ok(None),
            None => {
                return Err(lost(format!(
                    "stream ended {have} bytes into a frame prefix"
                )))
            }
        }
    }
    Ok(Some(prefix))
}

async fn write_chunk(
    send: &mut quinn::SendStream,
    chunk: Bytes,
    stall: Option<Duration>,
) -> Result<(), StreamError> {
    let write = send.write_chunk(chunk);
    match stall {
        Some(stall) => tokio::time::timeout(stall, write)
            .await
            .map_err(|_| StreamError::Stalled(stall))?,
        None => write.await,
    }
    .map_err(lost)
}
