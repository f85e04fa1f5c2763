//! The streaming fetch: one long-lived stream per partition on which the node keeps sending
//! whole batches as they exist, bounded by the credit the reader grants.
//!
//! A request-per-fetch reader pays one round trip per answer and, on a long link, leaves the
//! pipe idle between answers; a large answer that cannot finish in time used to be thrown
//! away whole. Here the reader gets whole batches as soon as each has arrived (a frame is
//! handed out in pieces, so even a link too slow for one frame per timeout makes steady
//! progress), a timeout only measures a stall (no bytes for a while), and the credit window
//! is sized to the link by [`FetchWindow`]. Mirror flows
//! read their source this way; replicas following a leader are meant to as well, which is
//! why each credit also carries the reader's stored position.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::conn::{lost, unexpected, ClientError, Connection};
use crate::batch::peek_header;
use crate::frame;
use crate::message::{Request, Response, VERSION_FETCH_STREAM};
use crate::provenance::Provenance;
use crate::wire;

/// How a streaming fetch asks and how far its window may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStreamOptions {
    /// How long the node waits for new batches before it sends an empty frame (which tells
    /// the reader the partition's end and proves the stream alive).
    pub max_wait_ms: u32,
    /// Most bytes of batches per frame: the reader sees (and can store) progress at least
    /// this often.
    pub frame_bytes_max: u32,
    /// The credit a stream starts with and never shrinks below.
    pub window_min: u32,
    /// The most credit a stream may hold out, however long and fast the link.
    pub window_max: u32,
}

impl Default for FetchStreamOptions {
    fn default() -> Self {
        FetchStreamOptions {
            max_wait_ms: 500,
            frame_bytes_max: 1 << 20,
            window_min: 4 << 20,
            window_max: 64 << 20,
        }
    }
}

/// Sizes a stream's credit to the link, as TCP's receive autotuning does: at the end of each
/// round (a window's worth arrived, or a few round trips passed) the window becomes
/// [`WINDOW_PER_RTT`] times what arrived per round trip, so a window that limits the rate
/// grows every round, one that does not settles at a few bandwidth-delay products, and an
/// idle stream shrinks back. Each round moves it by at most a factor of two, so one slow round
/// (a loss burst) does not collapse it.
#[derive(Debug, Clone)]
pub struct FetchWindow {
    min: u64,
    max: u64,
    current: u64,
    round_start: Instant,
    round_bytes: u64,
}

/// Largest frame asked for over a long path (see [`FetchStream::open`]).
const LONG_PATH_FRAME_BYTES: u32 = 1 << 20;

/// Credit held out per round trip's worth of arrivals. Twice would cover the data in flight
/// and the next round's; on a lossy link a hole holds back in-order delivery for about
/// another round trip and a half (detection, then the retransmission's trip), so the data
/// behind it still counts against the credit: with two, a 1 %-loss 150 ms link settled at
/// half its rate in `strait bench wan`.
pub const WINDOW_PER_RTT: f64 = 4.0;

/// A round that has not filled the window ends after this long anyway (plus two round trips).
const ROUND_TIME_MIN: Duration = Duration::from_millis(100);

impl FetchWindow {
    pub fn new(min: u64, max: u64, now: Instant) -> FetchWindow {
        let min = min.max(1);
        FetchWindow {
            min,
            max: max.max(min),
            current: min,
            round_start: now,
            round_bytes: 0,
        }
    }

    /// The credit the reader should hold out now.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Counts `bytes` that arrived at `now`, over a path whose round trip is `rtt`.
    pub fn arrived(&mut self, bytes: u64, rtt: Duration, now: Instant) {
        self.round_bytes += bytes;
        let elapsed = now.saturating_duration_since(self.round_start);
        if self.round_bytes < self.current && elapsed < 2 * rtt + ROUND_TIME_MIN {
            return;
        }
        let rate = self.round_bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        let wanted = (WINDOW_PER_RTT * rate * rtt.as_secs_f64()) as u64;
        self.current = wanted
            .clamp(self.current / 2, self.current.saturating_mul(2))
            .clamp(self.min, self.max);
        self.round_start = now;
        self.round_bytes = 0;
    }
}

/// What a streaming fetch hands out: whole batches that arrived (part of a frame, or all of
/// it), with what their frame said of the partition.
#[derive(Debug, Clone)]
pub struct StreamedFetch {
    pub high_watermark: u64,
    pub log_start: u64,
    /// For mirror principals: the provenance of mirrored batches in `batches`, by base offset.
    pub provenance: Vec<(u64, Provenance)>,
    /// Whole batches as stored, following the previous piece's; empty when nothing was new.
    pub batches: Bytes,
}

/// The frame being received: its header, and its batches not handed out yet.
struct Incoming {
    high_watermark: u64,
    log_start: u64,
    /// Sorted by base offset; each entry goes out with the piece that holds its batch.
    provenance: std::collections::VecDeque<(u64, Provenance)>,
    /// Payload bytes still to arrive.
    remaining: usize,
    /// Arrived bytes not handed out yet (the start of an incomplete batch).
    partial: BytesMut,
    /// What `partial` was taken from the connection's pool for.
    taken: usize,
}

/// An open streaming fetch of one partition.
pub struct FetchStream {
    conn: Arc<Connection>,
    /// Shared with [`StoredReporter`]s, which tell the node what is stored between grants.
    send: Arc<tokio::sync::Mutex<quinn::SendStream>>,
    recv: quinn::RecvStream,
    window: FetchWindow,
    frame_bytes_max: u64,
    /// Credit granted so far, and batch bytes received so far: the node may send the
    /// difference.
    granted: u64,
    received: u64,
    stall: Duration,
    incoming: Option<Incoming>,
}

impl FetchStream {
    /// Opens a stream from `offset` on. Needs a node speaking protocol version 2 or later.
    pub async fn open(
        conn: Arc<Connection>,
        topic: &str,
        partition: u32,
        offset: u64,
        opts: &FetchStreamOptions,
    ) -> Result<FetchStream, ClientError> {
        if conn.hello.version < VERSION_FETCH_STREAM {
            return Err(ClientError::Invalid(format!(
                "the node at {} speaks protocol version {}, which has no streaming fetch (version {VERSION_FETCH_STREAM}); use plain fetches or upgrade it",
                conn.address, conn.hello.version
            )));
        }
        let stall = conn.timeout;
        let window = FetchWindow::new(
            u64::from(opts.window_min),
            u64::from(opts.window_max),
            Instant::now(),
        );
        let granted = window.current();
        // On a short path the node's work per frame is what costs, so frames are as large as
        // asked; on a long one the link is the limit, and smaller frames keep credit coming
        // back steadily (4 MiB frames held a 1 %-loss 150 ms link at half the rate 1 MiB
        // frames did, in `strait bench wan`).
        let frame_bytes_max = if crate::congestion::long_path(Some(conn.conn.rtt())) {
            opts.frame_bytes_max.min(LONG_PATH_FRAME_BYTES)
        } else {
            opts.frame_bytes_max
        };
        let request = Request::FetchStream {
            topic: topic.into(),
            partition,
            offset,
            max_wait_ms: opts.max_wait_ms,
            window_bytes: u32::try_from(granted).unwrap_or(u32::MAX),
            frame_bytes_max,
        };
        let (mut send, recv) = tokio::time::timeout(stall, conn.conn.open_bi())
            .await
            .map_err(|_| ClientError::Timeout(stall))?
            .map_err(lost)?;
        wire::send_frame(&mut send, &request, [], 0, Some(stall)).await?;
        Ok(FetchStream {
            conn,
            send: Arc::new(tokio::sync::Mutex::new(send)),
            recv,
            window,
            frame_bytes_max: u64::from(frame_bytes_max.max(1)),
            granted,
            received: 0,
            stall,
            incoming: None,
        })
    }

    /// The batches that arrived next: at least one whole batch, or an empty piece for a frame
    /// without batches (the node's word that nothing is new). Fails when nothing arrives for
    /// the connection's request timeout while credit is out (an idle node sends an empty frame
    /// every `max_wait_ms`), when the node answers an error, or when the stream is lost.
    pub async fn next(&mut self) -> Result<StreamedFetch, ClientError> {
        loop {
            if self.incoming.is_none() {
                self.incoming = Some(self.next_frame().await?);
            }
            let incoming = self.incoming.as_mut().expect("set above");
            if incoming.remaining > 0 {
                let chunk = self.read_chunk().await?;
                let incoming = self.incoming.as_mut().expect("set above");
                incoming.remaining -= chunk.len();
                incoming.partial.extend_from_slice(&chunk);
                // Take whatever else already arrived, without waiting for it.
                while self.incoming.as_ref().is_some_and(|i| i.remaining > 0) {
                    let Some(chunk) = self.ready_chunk()? else {
                        break;
                    };
                    let incoming = self.incoming.as_mut().expect("set above");
                    incoming.remaining -= chunk.len();
                    incoming.partial.extend_from_slice(&chunk);
                }
            }
            let incoming = self.incoming.as_mut().expect("set above");
            let whole = whole_batches_len(&incoming.partial);
            let ended = incoming.remaining == 0;
            if whole == 0 && !ended {
                continue;
            }
            if ended && whole < incoming.partial.len() {
                return Err(lost(format!(
                    "a fetch frame ended inside a batch ({} bytes left over)",
                    incoming.partial.len() - whole
                )));
            }
            let batches = incoming.partial.split_to(whole).freeze();
            let last_base = last_base_offset(&batches);
            let mut provenance = Vec::new();
            while incoming
                .provenance
                .front()
                .is_some_and(|(base, _)| last_base.is_some_and(|last| *base <= last))
            {
                provenance.extend(incoming.provenance.pop_front());
            }
            let piece = StreamedFetch {
                high_watermark: incoming.high_watermark,
                log_start: incoming.log_start,
                provenance,
                batches,
            };
            if ended {
                let done = self.incoming.take().expect("set above");
                // Keep the allocation for a later frame once every piece cut from it is gone.
                self.conn.buffers.give_back(done.partial, done.taken);
            }
            let len = piece.batches.len() as u64;
            self.received += len;
            self.window
                .arrived(len, self.conn.conn.rtt(), Instant::now());
            return Ok(piece);
        }
    }

    /// Reads the next frame's prefix and header.
    async fn next_frame(&mut self) -> Result<Incoming, ClientError> {
        let prefix = wire::next_prefix(&mut self.recv, Some(self.stall))
            .await?
            .ok_or_else(|| lost("the node ended the fetch stream"))?;
        let lengths = frame::decode_prefix(prefix, &self.conn.limits)?;
        let mut header = vec![0u8; lengths.header as usize];
        tokio::time::timeout(self.stall, self.recv.read_exact(&mut header))
            .await
            .map_err(|_| ClientError::Timeout(self.stall))?
            .map_err(lost)?;
        match frame::decode_header::<Response>(&header)? {
            Response::Fetched {
                high_watermark,
                log_start,
                mut provenance,
            } => {
                provenance.sort_by_key(|(base, _)| *base);
                let remaining = lengths.payload as usize;
                Ok(Incoming {
                    high_watermark,
                    log_start,
                    provenance: provenance.into(),
                    remaining,
                    partial: self.conn.buffers.take(remaining),
                    taken: remaining,
                })
            }
            Response::Error(e) => Err(ClientError::Wire(e)),
            other => Err(unexpected("fetch_stream", other)),
        }
    }

    /// Waits (bounded by the stall timeout) for the next bytes of the current frame.
    async fn read_chunk(&mut self) -> Result<Bytes, ClientError> {
        let remaining = self.incoming.as_ref().map_or(0, |i| i.remaining);
        let chunk = tokio::time::timeout(self.stall, self.recv.read_chunk(remaining, true))
            .await
            .map_err(|_| ClientError::Timeout(self.stall))?
            .map_err(lost)?;
        chunk.map(|c| c.bytes).ok_or_else(|| {
            lost(format!(
                "the stream ended {remaining} bytes before its frame did"
            ))
        })
    }

    /// The next bytes of the current frame if they already arrived; None if none are there.
    fn ready_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        let remaining = self.incoming.as_ref().map_or(0, |i| i.remaining);
        let mut read = std::pin::pin!(self.recv.read_chunk(remaining, true));
        let waker = std::task::Waker::noop();
        match read
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            Poll::Pending => Ok(None),
            Poll::Ready(Ok(Some(chunk))) => Ok(Some(chunk.bytes)),
            Poll::Ready(Ok(None)) => Err(lost(format!(
                "the stream ended {remaining} bytes before its frame did"
            ))),
            Poll::Ready(Err(e)) => Err(lost(e)),
        }
    }

    /// Tops the node's credit up to the current window, telling it that everything before
    /// `stored` is stored. Grants in steps of at least a frame or an eighth of the window
    /// (whichever is smaller), so a stream of small pieces does not answer each with a credit.
    pub async fn grant(&mut self, stored: u64) -> Result<(), ClientError> {
        let outstanding = self.granted.saturating_sub(self.received);
        let wanted = self.window.current();
        let deficit = wanted.saturating_sub(outstanding);
        let step = self.frame_bytes_max.min(wanted / 8).max(1);
        if deficit < step && outstanding > 0 {
            return Ok(());
        }
        let bytes = u32::try_from(deficit).unwrap_or(u32::MAX);
        wire::send_frame(
            &mut *self.send.lock().await,
            &Request::FetchCredit { bytes, stored },
            [],
            0,
            Some(self.stall),
        )
        .await?;
        self.granted += u64::from(bytes);
        Ok(())
    }

    /// The credit the stream holds out now (for status and tests).
    pub fn window(&self) -> u64 {
        self.window.current()
    }

    /// A handle that tells the node what is stored without granting credit: grants go out as
    /// batches arrive, before they are stored, so once a reader has stored the last batches
    /// of a quiet partition only a report says so (the node shows how far each reader is).
    pub fn reporter(&self) -> StoredReporter {
        StoredReporter {
            send: self.send.clone(),
            stall: self.stall,
        }
    }
}

/// Reports a stream's stored position to the node; see [`FetchStream::reporter`].
#[derive(Clone)]
pub struct StoredReporter {
    send: Arc<tokio::sync::Mutex<quinn::SendStream>>,
    stall: Duration,
}

impl StoredReporter {
    /// Tells the node that everything before `stored` is stored.
    pub async fn report(&self, stored: u64) -> Result<(), ClientError> {
        wire::send_frame(
            &mut *self.send.lock().await,
            &Request::FetchCredit { bytes: 0, stored },
            [],
            0,
            Some(self.stall),
        )
        .await?;
        Ok(())
    }
}

/// How many leading bytes of `buf` are whole batches.
fn whole_batches_len(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some((_, len)) = peek_header(&buf[at..]) {
        if len == 0 || at + len > buf.len() {
            break;
        }
        at += len;
    }
    at
}

/// The base offset of the last of the whole batches in `buf`.
fn last_base_offset(buf: &[u8]) -> Option<u64> {
    let mut at = 0;
    let mut last = None;
    while let Some((base, len)) = peek_header(&buf[at..]) {
        if len == 0 || at + len > buf.len() {
            break;
        }
        last = Some(base.0);
        at += len;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Feeds `rounds` rounds in which `per_rtt` bytes arrive per round trip.
    fn run(w: &mut FetchWindow, start: &mut Instant, per_rtt: u64, rtt: Duration, rounds: u32) {
        for _ in 0..rounds {
            // The whole round's bytes arrive in eight frames over one round trip.
            for _ in 0..8 {
                *start += rtt / 8;
                w.arrived(per_rtt / 8, rtt, *start);
            }
        }
    }

    #[test]
    fn a_window_that_limits_the_rate_doubles_each_round_up_to_its_cap() {
        let mut now = Instant::now();
        let rtt = Duration::from_millis(150);
        let mut w = FetchWindow::new(4 * MIB, 64 * MIB, now);
        let mut seen = vec![w.current()];
        for _ in 0..6 {
            // Window-limited: a whole window arrives in each round trip.
            let per_rtt = w.current();
            run(&mut w, &mut now, per_rtt, rtt, 1);
            seen.push(w.current());
        }
        assert_eq!(
            seen,
            vec![
                4 * MIB,
                8 * MIB,
                16 * MIB,
                32 * MIB,
                64 * MIB,
                64 * MIB,
                64 * MIB
            ]
        );
    }

    #[test]
    fn a_link_slower_than_the_window_settles_it_at_a_few_bandwidth_delay_products() {
        let mut now = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut w = FetchWindow::new(MIB, 64 * MIB, now);
        // Grow first, then the link caps delivery at 3 MiB per round trip (30 MiB/s).
        run(&mut w, &mut now, 64 * MIB, rtt, 5);
        assert_eq!(w.current(), 64 * MIB);
        for _ in 0..30 {
            run(&mut w, &mut now, 3 * MIB, rtt, 1);
        }
        let settled = w.current();
        assert!(
            (11 * MIB..=13 * MIB).contains(&settled),
            "window {} MiB, expected about 12",
            settled / MIB
        );
    }

    #[test]
    fn an_idle_stream_shrinks_to_its_minimum_and_a_short_path_keeps_the_minimum() {
        let mut now = Instant::now();
        let rtt = Duration::from_millis(50);
        let mut w = FetchWindow::new(2 * MIB, 64 * MIB, now);
        run(&mut w, &mut now, 64 * MIB, rtt, 6);
        assert_eq!(w.current(), 64 * MIB);
        // Only empty frames now, every half second.
        for _ in 0..20 {
            now += Duration::from_millis(500);
            w.arrived(0, rtt, now);
        }
        assert_eq!(w.current(), 2 * MIB);
        // Loopback: even 1 GB/s at 50 µs is far below the minimum.
        let rtt = Duration::from_micros(50);
        run(&mut w, &mut now, 50_000, rtt, 400);
        assert_eq!(w.current(), 2 * MIB);
    }
}
