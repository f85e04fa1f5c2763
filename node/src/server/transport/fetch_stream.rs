//! The node's side of a streaming fetch (`Request::FetchStream`, see
//! `strait_protocol::client::fetch_stream`): one stream, many `Fetched` frames.
//!
//! Each frame is an ordinary fetch through the request service (so ACLs, quotas, metrics and
//! long-polling are the plain fetch's), sized to the credit the reader has left, and written
//! as soon as it is read. A task beside it reads the reader's `FetchCredit` frames; when the
//! reader goes away (its stream finished, reset or the connection lost) the fetch stops. The
//! connection's memory budget holds each frame until it has been handed to QUIC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use strait_protocol::wire::{self, StreamError};
use strait_protocol::{ErrorCode, Request, Response, WireError};
use tokio::sync::watch;
use tracing::debug;

use super::{reserve, Listener, Peer};
use crate::server::handlers::data::FETCH_BYTES_MAX;

/// Smallest frame a reader may ask for: below it the per-frame work dominates.
const FRAME_BYTES_MIN: u32 = 16 << 10;

/// Serves one streaming fetch (`open`, a `Request::FetchStream`) until the reader leaves or an
/// error ends it.
pub(super) async fn serve(
    listener: Arc<Listener>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    open: Request,
) {
    let Request::FetchStream {
        topic,
        partition,
        offset,
        max_wait_ms,
        window_bytes,
        frame_bytes_max,
    } = open
    else {
        return;
    };
    let service = &listener.service;
    let stall = listener.config.answer_write_stall;
    let frame_max = u64::from(frame_bytes_max.clamp(FRAME_BYTES_MIN, FETCH_BYTES_MAX));
    // Credit granted so far, in bytes.
    let (credits, mut credit) = watch::channel(u64::from(window_bytes));
    // Where the reader's credits say it has stored up to. It is noted (for the status page)
    // as it comes, not only when the next frame goes: the reader reports one once it has
    // caught up, and the node may be waiting for new batches then; each frame notes it again,
    // which keeps an idle reader shown as reading.
    let stored = Arc::new(AtomicU64::new(offset));
    service.note_reader_position(&peer.session, &topic, partition, offset);
    let note = {
        let (listener, peer, topic) = (listener.clone(), peer.clone(), topic.clone());
        move |stored| {
            listener
                .service
                .note_reader_position(&peer.session, &topic, partition, stored)
        }
    };
    let _reader = AbortOnDrop(tokio::spawn(read_credits(
        recv,
        credits,
        stored.clone(),
        listener.config.frame_limits,
        note,
    )));
    // Wait for credit worth a good frame: credit comes back in steps as the reader stores
    // what it got, and sending each step at once would cut the stream into many small
    // frames, each a read of its own. The reader never holds out less than it opened with,
    // so this much always comes.
    let worth_sending = frame_max.min(u64::from(window_bytes) / 2).max(1);
    let mut sent: u64 = 0;
    let mut position = offset;
    loop {
        // Wait for credit; the reader gone (its credit task ended) ends the stream.
        let available = loop {
            let granted = *credit.borrow_and_update();
            if granted >= sent + worth_sending {
                break granted - sent;
            }
            if credit.changed().await.is_err() {
                return;
            }
        };
        let max_bytes = available.min(frame_max);
        let Some(memory) = reserve(&peer, max_bytes).await else {
            return;
        };
        let fetch = Request::Fetch {
            topic: topic.clone(),
            partition,
            offset: position,
            max_wait_ms,
            min_bytes: 1,
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        };
        let answer = tokio::select! {
            answer = service.handle(&peer.session, fetch, Bytes::new()) => answer,
            _ = credits_closed(&mut credit) => return,
        };
        let (frame, payload) = match answer {
            Ok((frame @ Response::Fetched { .. }, payload)) => (frame, payload),
            Ok(_) => (
                Response::Error(WireError::new(
                    ErrorCode::INTERNAL,
                    "a fetch answered something other than batches",
                )),
                Vec::new(),
            ),
            Err(e) => (Response::Error(e), Vec::new()),
        };
        let last = matches!(frame, Response::Error(_));
        let len: u64 = payload.iter().map(|b| b.len() as u64).sum();
        let next = next_offset_after(&payload).unwrap_or(position);
        let written = wire::send_frame(&mut send, &frame, payload, len as usize, Some(stall)).await;
        drop(memory);
        match written {
            Ok(()) if last => {
                let _ = send.finish();
                return;
            }
            Ok(()) => {}
            Err(StreamError::Stalled(stall)) => {
                service.metrics().event("limit_answer_write_stall");
                debug!(principal = %peer.session.principal(), ?stall, "fetch stream not read in time; reset");
                let _ = send.reset(4u32.into());
                return;
            }
            Err(_) => return,
        }
        sent += len;
        position = position.max(next);
        service.note_reader_position(
            &peer.session,
            &topic,
            partition,
            stored.load(Ordering::Acquire),
        );
    }
}

/// Adds the reader's credits to `credits` and `note`s each stored position past `stored`,
/// until its stream ends or carries anything else.
async fn read_credits(
    mut recv: quinn::RecvStream,
    credits: watch::Sender<u64>,
    stored: Arc<AtomicU64>,
    limits: strait_protocol::frame::FrameLimits,
    note: impl Fn(u64),
) {
    loop {
        let prefix = match wire::next_prefix(&mut recv, None).await {
            Ok(Some(prefix)) => prefix,
            Ok(None) | Err(_) => return,
        };
        match wire::read_frame_body::<Request>(&mut recv, prefix, &limits, None, None).await {
            Ok((Request::FetchCredit { bytes, stored: now }, _)) => {
                if bytes > 0 {
                    credits.send_modify(|granted| *granted += u64::from(bytes));
                }
                if stored.fetch_max(now, Ordering::AcqRel) < now {
                    note(now);
                }
            }
            Ok((other, _)) => {
                debug!(
                    request = other.kind(),
                    "a fetch stream carried something other than credit; stream ended"
                );
                return;
            }
            Err(e) => {
                debug!(error = %e, "bad credit frame on a fetch stream; stream ended");
                return;
            }
        }
    }
}

/// Resolves once the credit task has ended (the reader left).
async fn credits_closed(credit: &mut watch::Receiver<u64>) {
    let mut watching = credit.clone();
    while watching.changed().await.is_ok() {}
}

/// The offset after the last batch of a fetch answer, if it holds any.
fn next_offset_after(chunks: &[Bytes]) -> Option<u64> {
    let mut next = None;
    for chunk in chunks {
        let mut at = 0;
        while let Some((_, len)) = strait_protocol::batch::peek_header(&chunk[at..]) {
            if let Some((_, after)) = strait_protocol::batch::peek_offsets(&chunk[at..]) {
                next = Some(after.0);
            }
            at += len;
            if at >= chunk.len() {
                break;
            }
        }
    }
    next
}

/// Stops the credit task when the stream's server side ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
