//! One Kafka connection: requests answered one at a time and in order (Kafka clients rely on
//! it, and Kafka itself serves one request per connection at a time), while the next requests
//! are already read and decrypted (clients pipeline produce requests), up to a memory budget
//! per connection. A frame's size is checked against `[limits]` before anything is read, and a
//! fresh buffer grows only as its bytes arrive, so a peer announcing a large frame and sending
//! little holds little memory. A connection that sends what cannot be parsed is closed; others
//! are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use strait_protocol::kafka::Close;
use strait_protocol::pool::BufferPool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::dispatch;
use super::listener::Shared;
use crate::server::service::Session;

/// First read size of a fresh frame buffer; it doubles from here as bytes come in.
const FIRST_READ: usize = 64 << 10;
/// Answer buffers larger than this are not kept between requests.
const KEEP_MAX: usize = 8 << 20;
/// Bytes of requests read ahead of the one being served, per connection (KiB permits).
const READ_AHEAD_KIB: u32 = 64 << 10;
/// Request buffers one connection keeps warm for reuse, and their most bytes.
const POOL_BUFFERS: usize = 8;
const POOL_BYTES: usize = 64 << 20;

/// A request read ahead, holding its share of the read-ahead budget.
struct Frame {
    bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    session: Session,
    shared: &Arc<Shared>,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Result<Frame, Ending>>(16);
    let reader = tokio::spawn(read_ahead(rd, shared.clone(), tx));
    let _stop_reader = AbortOnDrop(reader);
    let mut out = BytesMut::new();
    while let Some(next) = rx.recv().await {
        let frame = match next {
            Ok(frame) => frame,
            Err(Ending::Closed(why)) => {
                warn!(%peer, principal = %session.principal(), reason = %why, "Kafka connection closed");
                shared.service.metrics().event("kafka_malformed_frame");
                return;
            }
            Err(Ending::Quiet(why)) => {
                debug!(%peer, reason = %why, "Kafka connection ended");
                return;
            }
        };
        if out.capacity() > KEEP_MAX {
            out = BytesMut::new();
        }
        out.clear();
        match dispatch::dispatch(frame.bytes, peer, &session, shared, &mut out).await {
            Ok(true) => {
                let written =
                    tokio::time::timeout(shared.config.request_read_timeout, wr.write_all(&out))
                        .await;
                if !matches!(written, Ok(Ok(()))) {
                    debug!(%peer, "Kafka answer not taken in time; connection closed");
                    return;
                }
            }
            Ok(false) => {}
            Err(why) => {
                warn!(%peer, principal = %session.principal(), reason = %why, "Kafka connection closed");
                shared.service.metrics().event("kafka_malformed_frame");
                return;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Ending {
    /// The peer broke the protocol: logged as a warning.
    Closed(Close),
    /// The peer went away or idled out.
    Quiet(String),
}

/// Reads frames ahead of the server, within the connection's read-ahead budget; ends with the
/// reason the connection ends.
async fn read_ahead<R: AsyncRead + Unpin>(
    mut rd: R,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Frame, Ending>>,
) {
    let budget = Arc::new(Semaphore::new(READ_AHEAD_KIB as usize));
    let pool = BufferPool::new(POOL_BUFFERS, POOL_BYTES);
    loop {
        let next = read_frame(&mut rd, &shared, &budget, &pool).await;
        let end = !matches!(next, Ok(Some(_)));
        let item = match next {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

/// Reads one frame body; None when the peer closed cleanly between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    shared: &Shared,
    budget: &Arc<Semaphore>,
    pool: &BufferPool,
) -> Result<Option<Frame>, Ending> {
    let c = &shared.config;
    let mut size = [0u8; 4];
    match tokio::time::timeout(c.idle_timeout, rd.read(&mut size[..1])).await {
        Err(_) => return Err(Ending::Quiet("idle".into())),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(Ending::Quiet(e.to_string())),
    }
    let frame = tokio::time::timeout(c.request_read_timeout, async {
        rd.read_exact(&mut size[1..])
            .await
            .map_err(|e| Ending::Quiet(e.to_string()))?;
        let len = i32::from_be_bytes(size);
        if len < 0 || len as u32 > c.frame_bytes_max {
            return Err(Ending::Closed(Close::TooLarge {
                size: i64::from(len),
                max: c.frame_bytes_max,
            }));
        }
        let len = len as usize;
        // Wait for earlier requests to be served before holding more of this one.
        let kib = u32::try_from(len.div_ceil(1024).clamp(1, READ_AHEAD_KIB as usize))
            .unwrap_or(READ_AHEAD_KIB);
        let permit = budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Ending::Quiet("closing".into()))?;
        // A warm buffer from an earlier request when one is free again; else a fresh one that
        // grows as bytes arrive.
        let mut buf = pool.take(len.min(FIRST_READ));
        while buf.len() < len {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len().min(len - buf.len()));
            }
            let room = (buf.capacity() - buf.len()).min(len - buf.len());
            let n = rd
                .read_buf(&mut (&mut buf).limit(room))
                .await
                .map_err(|e| Ending::Quiet(e.to_string()))?;
            if n == 0 {
                return Err(Ending::Quiet("closed inside a frame".into()));
            }
        }
        Ok(Frame {
            bytes: pool.freeze(buf),
            _budget: permit,
        })
    })
    .await
    .map_err(|_| Ending::Quiet("request not received in time".into()))??;
    Ok(Some(frame))
}
