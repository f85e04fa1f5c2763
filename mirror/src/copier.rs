//! Copies one source partition into its target partition.
//!
//! The copier keeps no position of its own: it asks the target where copying resumes
//! (`MirrorResume`), so a crash of the flow, the source or the target never leaves a duplicate
//! or a hole. It reads whole batches on a streaming fetch (one QUIC stream per partition, so a
//! slow partition never blocks another; credit sized to the link, so a long link stays full
//! without a round trip per answer) and appends them unchanged as they arrive: at their source
//! offsets into a prefix mirror, with one more provenance hop into an identity-mode topic.
//! Batches that already passed through the target cluster are never copied back. A source node
//! too old to stream is read with plain fetches, one ahead of the append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strait_protocol::batch::{split_batches, DecodeLimits};
use strait_protocol::client::{
    Admin, Client, ClientError, Connection, FetchStream, FetchStreamOptions, StoredReporter,
};
use strait_protocol::message::{OffsetSpec, Request, Response, VERSION_FETCH_STREAM};
use strait_protocol::{ErrorCode, Hop, Provenance, RecordBatch};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::endpoint::Endpoint;
use crate::naming::Naming;
use crate::status::{now_ms, FlowStatus, Gap, HeartbeatStatus, PartitionState, PartitionStatus};

/// Copies one partition.
pub(crate) struct Copier {
    pub flow: String,
    pub source: Arc<Client>,
    pub target: Arc<dyn Endpoint>,
    pub source_cluster: String,
    pub target_cluster: String,
    pub naming: Naming,
    pub source_topic: String,
    pub target_topic: String,
    pub partition: u32,
    pub fetch_bytes_max: u32,
    /// How the streaming fetch asks and how far its credit may grow.
    pub stream: FetchStreamOptions,
    pub budget: Arc<Semaphore>,
    pub pacer: Arc<Pacer>,
    pub status: Arc<Mutex<FlowStatus>>,
    /// Heartbeat copiers report their latency as the flow's.
    pub heartbeat: bool,
}

/// One fetch's worth of batches on its way to the target.
struct Chunk {
    /// Each batch with the provenance the target keeps for it.
    batches: Vec<(RecordBatch, Provenance)>,
    /// The source offset after this chunk.
    next: u64,
    high_watermark: u64,
    records: u64,
    bytes: u64,
    skipped: u64,
    newest: Option<i64>,
    /// Holds the bytes against the flow's in-flight budget until appended.
    _permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

impl Chunk {
    /// Takes `later` (the chunk that followed this one) into this one, so both go to the
    /// target in one append.
    fn absorb(&mut self, later: Chunk) {
        self.batches.extend(later.batches);
        self.next = later.next;
        self.high_watermark = later.high_watermark;
        self.records += later.records;
        self.bytes += later.bytes;
        self.skipped += later.skipped;
        self.newest = self.newest.max(later.newest);
        self._permits.extend(later._permits);
    }
}

/// Chunks that arrive while an append is in flight are sent together in the next one, up to
/// this many bytes.
const APPEND_BYTES_MAX: u64 = 16 << 20;
/// Chunks queued between the stream and the appender (their bytes are bounded by the budget).
const CHUNKS_QUEUED_MAX: usize = 256;

/// Spaces copies out so the flow stays under its rate cap, across all its partitions.
pub(crate) struct Pacer {
    pub rate: Option<u64>,
    pub next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub async fn pace(&self, bytes: usize) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let wait_until = {
            let mut next = lock(&self.next);
            let now = tokio::time::Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

impl Copier {
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            match self.copy().await {
                Ok(()) => return,
                Err(e) => {
                    let deleted = e.code() == Some(ErrorCode::UNKNOWN_TOPIC)
                        && self.state() == PartitionState::SourceDeleted;
                    if !deleted {
                        warn!(flow = %self.flow, topic = %self.source_topic, partition = self.partition, error = %e,
                            "copy interrupted; resuming from what the target holds");
                        self.update(|s| {
                            s.last_error = Some(e.to_string());
                            s.state = PartitionState::Retrying;
                        });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn state(&self) -> PartitionState {
        lock(&self.status)
            .partition(&self.source_topic, self.partition)
            .map(|p| p.state)
            .unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut PartitionStatus)) {
        let mut status = lock(&self.status);
        let entry = status
            .by_partition
            .entry((self.source_topic.clone(), self.partition))
            .or_insert_with(|| PartitionStatus {
                source_topic: self.source_topic.clone(),
                partition: self.partition,
                target_topic: self.target_topic.clone(),
                ..Default::default()
            });
        f(entry);
    }

    /// Where copying resumes: the next source offset the target does not hold.
    async fn resume_point(&self) -> Result<u64, ClientError> {
        let req = Request::MirrorResume {
            topic: self.target_topic.clone(),
            partition: self.partition,
            source_cluster: self.source_cluster.clone(),
            source_topic: self.source_topic.clone(),
        };
        match self.target.call(&req, &[]).await?.0 {
            Response::MirrorResume { next_source_offset } => Ok(next_source_offset.unwrap_or(0)),
            other => Err(ClientError::Invalid(format!(
                "unexpected resume answer {other:?}"
            ))),
        }
    }

    /// Resumes where the target stands and copies until an error.
    async fn copy(&self) -> Result<(), ClientError> {
        let position = self.resume_point().await?;
        self.update(|s| s.mirrored_offset = position);
        let conn = self.source.connection().await?;
        if conn.hello.version >= VERSION_FETCH_STREAM {
            self.copy_streaming(conn, position).await
        } else {
            self.copy_fetching(position).await
        }
    }

    /// Copies from a streaming fetch: each frame's batches are queued for the target as they
    /// arrive, credit goes back to the source as soon as the flow's budget has room for what
    /// came, and whatever queued during an append goes in the next one.
    async fn copy_streaming(&self, conn: Arc<Connection>, from: u64) -> Result<(), ClientError> {
        let stored = AtomicU64::new(from);
        // The current stream's reporter: the appender tells the node what is stored once it
        // has caught up, which grants (sent as batches arrive) cannot.
        let reporter = Mutex::new(None::<StoredReporter>);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(CHUNKS_QUEUED_MAX);
        let fetcher = async {
            let mut position = from;
            let mut stream = self.open_stream(&conn, position).await?;
            *reporter.lock().expect("reporter lock") = Some(stream.reporter());
            loop {
                let frame = match stream.next().await {
                    Ok(frame) => frame,
                    Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                        position = self.skip_deleted(position).await?;
                        stream = self.open_stream(&conn, position).await?;
                        *reporter.lock().expect("reporter lock") = Some(stream.reporter());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let permit = self.reserve(frame.batches.len()).await?;
                let chunk = self.prepare(
                    &mut position,
                    frame.high_watermark,
                    frame.provenance,
                    frame.batches,
                    permit,
                )?;
                if tx.send(chunk).await.is_err() {
                    return Ok::<(), ClientError>(());
                }
                stream.grant(stored.load(Ordering::Acquire)).await?;
            }
        };
        let appender = async {
            while let Some(mut chunk) = rx.recv().await {
                while chunk.bytes < APPEND_BYTES_MAX {
                    match rx.try_recv() {
                        Ok(later) => chunk.absorb(later),
                        Err(_) => break,
                    }
                }
                let next = chunk.next;
                self.append(chunk).await?;
                stored.store(next, Ordering::Release);
                if rx.is_empty() {
                    let current = reporter.lock().expect("reporter lock").clone();
                    if let Some(current) = current {
                        // Only the node's status reads it; a stream lost meanwhile is the
                        // fetcher's to notice.
                        if let Err(e) = current.report(next).await {
                            debug!(error = %e, "could not report the stored position");
                        }
                    }
                }
            }
            Ok::<(), ClientError>(())
        };
        tokio::try_join!(fetcher, appender).map(|_| ())
    }

    /// Opens the partition's stream at `position`.
    async fn open_stream(
        &self,
        conn: &Arc<Connection>,
        position: u64,
    ) -> Result<FetchStream, ClientError> {
        FetchStream::open(
            conn.clone(),
            &self.source_topic,
            self.partition,
            position,
            &self.stream,
        )
        .await
    }

    /// Takes `bytes` of the flow's in-flight budget (all of it for anything larger).
    async fn reserve(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ClientError> {
        let units = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.fetch_bytes_max);
        self.budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| ClientError::Invalid("flow stopped".into()))
    }

    /// Copies with plain fetches (a source that cannot stream). Fetching runs one request
    /// ahead of appending (bounded by the flow's in-flight budget), so the source read and the
    /// target write of one partition overlap.
    async fn copy_fetching(&self, position: u64) -> Result<(), ClientError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        let fetcher = async move {
            let mut position = position;
            loop {
                let chunk = self.fetch(&mut position).await?;
                if tx.send(chunk).await.is_err() {
                    return Ok::<(), ClientError>(());
                }
            }
        };
        let appender = async {
            while let Some(chunk) = rx.recv().await {
                self.append(chunk).await?;
            }
            Ok::<(), ClientError>(())
        };
        tokio::try_join!(fetcher, appender).map(|_| ())
    }

    /// Fetches from `position` on and prepares what to append; advances `position`.
    async fn fetch(&self, position: &mut u64) -> Result<Chunk, ClientError> {
        loop {
            let fetch = Request::Fetch {
                topic: self.source_topic.clone(),
                partition: self.partition,
                offset: *position,
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: self.fetch_bytes_max,
            };
            let permit = self.reserve(self.fetch_bytes_max as usize).await?;
            match self.source.call(&fetch, &[]).await {
                Ok((
                    Response::Fetched {
                        high_watermark,
                        provenance,
                        ..
                    },
                    payload,
                )) => return self.prepare(position, high_watermark, provenance, payload, permit),
                Ok((other, _)) => {
                    return Err(ClientError::Invalid(format!(
                        "unexpected fetch answer {other:?}"
                    )))
                }
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    *position = self.skip_deleted(*position).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Turns fetched batches into what to append (dropping what lies before `position`, and
    /// batches that already passed through the target cluster); advances `position`.
    fn prepare(
        &self,
        position: &mut u64,
        high_watermark: u64,
        provenance: Vec<(u64, Provenance)>,
        payload: Bytes,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Chunk, ClientError> {
        if self.naming.keeps_offsets() && high_watermark < *position {
            return Err(ClientError::Invalid(format!(
                "the source ends at {high_watermark} but the mirror already holds offsets up to {position}: \
                 was the source topic deleted and recreated? Delete the mirror topic to copy it afresh"
            )));
        }
        let mut provenance: HashMap<u64, Provenance> = provenance.into_iter().collect();
        let fetched = split_batches(payload, &DecodeLimits::default())?;
        let mut chunk = Chunk {
            batches: Vec::with_capacity(fetched.len()),
            next: *position,
            high_watermark,
            records: 0,
            bytes: 0,
            skipped: 0,
            newest: None,
            _permits: vec![permit],
        };
        for b in fetched
            .into_iter()
            .filter(|b| b.next_offset().0 > *position)
        {
            chunk.next = chunk.next.max(b.next_offset().0);
            // What the source knows of where the batch came from (nothing when it was
            // produced there).
            let chain = provenance.remove(&b.base_offset().0).unwrap_or_default();
            if self.naming == Naming::Identity && chain.includes(&self.target_cluster) {
                chunk.skipped += 1;
                continue;
            }
            chunk.records += u64::from(b.record_count());
            chunk.bytes += b.size_bytes() as u64;
            chunk.newest = chunk.newest.max(Some(b.max_timestamp_ms()));
            if self.naming == Naming::Identity {
                let hop = Hop {
                    cluster: self.source_cluster.clone(),
                    topic: self.source_topic.clone(),
                    partition: self.partition,
                    base_offset: b.base_offset().0,
                };
                let chain = chain
                    .with_hop(hop)
                    .map_err(|e| ClientError::Invalid(e.to_string()))?;
                chunk.batches.push((b, chain));
            } else {
                chunk.batches.push((b, chain));
            }
        }
        *position = chunk.next;
        Ok(chunk)
    }

    /// Appends one fetched chunk on the target and records the progress.
    async fn append(&self, chunk: Chunk) -> Result<(), ClientError> {
        if !chunk.batches.is_empty() {
            self.pacer.pace(chunk.bytes as usize).await;
            let answer = self
                .target
                .append_copies(&self.target_topic, self.partition, chunk.batches)
                .await?;
            match answer {
                Response::Produced { .. } => {}
                other => {
                    return Err(ClientError::Invalid(format!(
                        "unexpected append answer {other:?}"
                    )))
                }
            }
        }
        let acked = now_ms();
        let latency = chunk.newest.map(|ts| (acked - ts).max(0));
        if self.heartbeat {
            if let Some(latency_ms) = latency {
                lock(&self.status).heartbeat = Some(HeartbeatStatus {
                    latency_ms,
                    at_ms: acked,
                });
            }
        }
        self.update(|s| {
            s.mirrored_offset = chunk.next;
            s.source_end_offset = chunk.high_watermark.max(chunk.next);
            s.records_copied += chunk.records;
            s.bytes_copied += chunk.bytes;
            s.batches_skipped_loop += chunk.skipped;
            if latency.is_some() {
                s.replication_latency_ms = latency;
                s.newest_copied_ms = chunk.newest;
            }
            s.last_error = None;
            s.state = if chunk.next >= chunk.high_watermark {
                PartitionState::CaughtUp
            } else {
                PartitionState::Copying
            };
        });
        Ok(())
    }

    /// The source deleted what we were about to copy: report the gap and jump over it.
    async fn skip_deleted(&self, position: u64) -> Result<u64, ClientError> {
        let source_admin = Admin::new(self.source.clone());
        let (start, _) = source_admin
            .list_offset(&self.source_topic, self.partition, OffsetSpec::Earliest)
            .await?;
        if start <= position {
            return Err(ClientError::Invalid(format!(
                "offset {position} out of range though the source starts at {start}"
            )));
        }
        warn!(flow = %self.flow, topic = %self.source_topic, partition = self.partition, from = position, to = start,
            "GAP: source offsets {position}..{start} were deleted by retention before they were mirrored");
        self.update(|s| {
            s.gaps.push(Gap {
                from: position,
                to: start,
            })
        });
        info!(flow = %self.flow, topic = %self.source_topic, partition = self.partition, "resuming after the gap at {start}");
        Ok(start)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
