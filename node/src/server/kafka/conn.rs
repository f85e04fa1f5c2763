//! One Kafka connection: frames read one at a time and answered in order (Kafka clients rely
//! on it, and Kafka itself serves one request per connection at a time). A frame's size is
//! checked against `[limits]` before anything is read, and its buffer grows only as its bytes
//! arrive, so a peer announcing a large frame and sending little holds little memory. A
//! connection that sends what cannot be parsed is closed; others are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::dispatch;
use super::listener::Shared;
use crate::server::service::Session;
use strait_protocol::kafka::Close;

/// First read size of a frame body; the buffer doubles from here as bytes come in.
const FIRST_READ: usize = 64 << 10;

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    session: Session,
    shared: &Arc<Shared>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    loop {
        let frame = match read_frame(&mut rd, shared).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
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
        match dispatch::dispatch(frame, peer, &session, shared).await {
            Ok(Some(answer)) => {
                let written =
                    tokio::time::timeout(shared.config.request_read_timeout, wr.write_all(&answer))
                        .await;
                if !matches!(written, Ok(Ok(()))) {
                    debug!(%peer, "Kafka answer not taken in time; connection closed");
                    return;
                }
            }
            Ok(None) => {}
            Err(why) => {
                warn!(%peer, principal = %session.principal(), reason = %why, "Kafka connection closed");
                shared.service.metrics().event("kafka_malformed_frame");
                return;
            }
        }
    }
}

enum Ending {
    /// The peer broke the protocol: logged as a warning.
    Closed(Close),
    /// The peer went away or idled out.
    Quiet(String),
}

/// Reads one frame body; None when the peer closed cleanly between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    shared: &Shared,
) -> Result<Option<Bytes>, Ending> {
    let c = &shared.config;
    let mut size = [0u8; 4];
    match tokio::time::timeout(c.idle_timeout, rd.read(&mut size[..1])).await {
        Err(_) => return Err(Ending::Quiet("idle".into())),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(Ending::Quiet(e.to_string())),
    }
    let body = tokio::time::timeout(c.request_read_timeout, async {
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
        let mut buf = BytesMut::with_capacity(len.min(FIRST_READ));
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
        Ok(buf.freeze())
    })
    .await
    .map_err(|_| Ending::Quiet("request not received in time".into()))??;
    Ok(Some(body))
}
