//! The producer: batches records per partition, compresses, sends, retries.
//!
//! Records accumulate in one batch per partition until it reaches `batch_bytes` or has waited
//! `linger_ms`. Each partition has one sender task that keeps up to
//! `in_flight_per_partition` requests outstanding and resolves them in order, so records of one
//! partition are acknowledged in the order they were sent. In-flight bytes across all
//! partitions are bounded by a semaphore: `send` waits when the bound is reached.
//!
//! Idempotence, as Kafka's producer does it: each partition numbers its batches (base sequence
//! = records sealed before under the same producer id). A batch refused with
//! `out_of_order_sequence` waits for the batch sealed before it: once that one is written the
//! refused one is sent again as it is (it had overtaken it); if that one failed for good, its
//! sequence range will never be written, so the refused batch is re-numbered under a fresh
//! producer id (from sequence 0) and sent again, and every later batch of the partition
//! follows it there. One batch failing for good therefore fails alone: later sends succeed,
//! and none is written twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::admin::Admin;
use super::conn::{unexpected, Client, ClientError};
use crate::batch::{BatchBuilder, Compression, Header, RecordBatch};
use crate::error::ErrorCode;
use crate::message::{Acks, Request, Response};
use crate::partitioner::partition_for_key;

/// Producer settings; the defaults suit a low-latency stream.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub linger_ms: u64,
    pub batch_bytes: usize,
    pub compression: Compression,
    pub acks: Acks,
    pub in_flight_bytes_max: usize,
    pub in_flight_per_partition: usize,
    /// Attempts per batch in all, the first included.
    pub attempts: u32,
    /// Ask the node for a producer id and number batches, so retries are never written twice.
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: 5,
            batch_bytes: 256 << 10,
            compression: Compression::None,
            acks: Acks::Leader,
            in_flight_bytes_max: 64 << 20,
            in_flight_per_partition: 1,
            attempts: 5,
            idempotence: true,
        }
    }
}

/// The outcome of one batch, shared by the delivery futures of all its records, so a record
/// costs no allocation of its own.
struct BatchOutcome {
    result: OnceLock<Result<u64, ClientError>>,
    done: Notify,
}

/// Completes a batch's outcome exactly once; if dropped unfinished (the producer went away),
/// the waiters learn it instead of waiting forever.
struct Completer(Arc<BatchOutcome>);

impl BatchOutcome {
    /// Waits until the batch is resolved; answers whether it was written.
    async fn settled(&self) -> bool {
        loop {
            let notified = self.done.notified();
            if let Some(r) = self.result.get() {
                return r.is_ok();
            }
            notified.await;
        }
    }
}

impl Completer {
    fn new() -> Self {
        Completer(Arc::new(BatchOutcome {
            result: OnceLock::new(),
            done: Notify::new(),
        }))
    }

    fn complete(&self, result: Result<u64, ClientError>) {
        let _ = self.0.result.set(result);
        self.0.done.notify_waiters();
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if self.0.result.get().is_none() {
            self.complete(Err(ClientError::ConnectionLost(
                "the producer was dropped before the batch was sent".into(),
            )));
        }
    }
}

/// Resolves to the offset a record was written at (`u64::MAX` under `acks = none`).
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    index: u64,
}

impl DeliveryFuture {
    pub async fn wait(self) -> Result<u64, ClientError> {
        loop {
            // Created before the check, so a completion in between still wakes it.
            let notified = self.outcome.done.notified();
            if let Some(r) = self.outcome.result.get() {
                return r.clone().map(|base| {
                    if base == u64::MAX {
                        base
                    } else {
                        base + self.index
                    }
                });
            }
            notified.await;
        }
    }
}

struct Pending {
    builder: BatchBuilder,
    outcome: Completer,
    started: Instant,
    /// In-flight bytes this batch holds, taken record by record in `send`.
    permit: Option<OwnedSemaphorePermit>,
}

struct Ready {
    batch: RecordBatch,
    outcome: Completer,
    _permit: Option<OwnedSemaphorePermit>,
    /// Idempotence: the partition's numbering, and the batch sealed just before this one.
    sequencing: Option<(Numbering, Option<Arc<BatchOutcome>>)>,
}

/// A partition's numbering, shared by its sender and the sends in flight.
type Numbering = Arc<tokio::sync::Mutex<Sequencing>>;

/// One partition's idempotent numbering: the producer id and epoch its batches carry now and
/// the next base sequence under them.
struct Sequencing {
    identity: (i64, i16),
    next: i32,
}

/// How many times one batch is re-sent after `out_of_order_sequence` before it fails.
const SEQUENCE_RETRIES_MAX: u32 = 16;

type PartitionKey = (String, u32);

struct Inner {
    client: Arc<Client>,
    config: ProducerConfig,
    pending: Mutex<HashMap<String, HashMap<u32, Pending>>>,
    senders: Mutex<HashMap<PartitionKey, mpsc::UnboundedSender<Pending>>>,
    partitions: Mutex<HashMap<String, u32>>,
    sticky: Mutex<HashMap<String, u32>>,
    in_flight: Arc<Semaphore>,
    in_flight_bytes_max: usize,
    /// Producer id and epoch from the node, fetched on first use when idempotence is on.
    identity: tokio::sync::OnceCell<(i64, i16)>,
}

/// Sends records to a cluster. Cheap to clone; clones share batches and connections.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    pub fn new(client: Arc<Client>, config: ProducerConfig) -> Producer {
        let permits = config
            .in_flight_bytes_max
            .clamp(1 << 20, Semaphore::MAX_PERMITS);
        let inner = Arc::new(Inner {
            client,
            in_flight_bytes_max: permits,
            in_flight: Arc::new(Semaphore::new(permits)),
            config,
            pending: Mutex::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashMap::new()),
            sticky: Mutex::new(HashMap::new()),
            identity: tokio::sync::OnceCell::new(),
        });
        tokio::spawn(linger_loop(Arc::downgrade(&inner)));
        Producer { inner }
    }

    /// Queues a record; the partition is `partition`, else the key's murmur2 hash, else a sticky
    /// choice that changes with each batch. Waits while `in_flight_bytes_max` bytes are queued
    /// or in flight.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Result<DeliveryFuture, ClientError> {
        let partition = match partition {
            Some(p) => p,
            None => {
                let count = self.partition_count(topic).await?;
                match key {
                    Some(k) => partition_for_key(k, count),
                    None => self.sticky_partition(topic, count),
                }
            }
        };
        let cost = 16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        let cost = cost.min(self.inner.in_flight_bytes_max) as u32;
        let permit = self
            .inner
            .in_flight
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| ClientError::ConnectionLost("the producer is closed".into()))?;
        let now = now_ms();
        let mut pending = lock(&self.inner.pending);
        if !pending.contains_key(topic) {
            pending.insert(topic.to_string(), HashMap::new());
        }
        let by_partition = pending
            .get_mut(topic)
            .unwrap_or_else(|| unreachable!("inserted above"));
        let entry = by_partition.entry(partition).or_insert_with(|| Pending {
            builder: BatchBuilder::with_capacity(
                self.inner.config.compression,
                self.inner.config.batch_bytes + 4096,
            ),
            outcome: Completer::new(),
            started: Instant::now(),
            permit: None,
        });
        let future = DeliveryFuture {
            outcome: entry.outcome.0.clone(),
            index: u64::from(entry.builder.record_count()),
        };
        entry.builder.push(now, key, value, headers);
        match entry.permit.as_mut() {
            Some(p) => p.merge(permit),
            None => entry.permit = Some(permit),
        }
        if entry.builder.size_bytes() >= self.inner.config.batch_bytes {
            if let Some(full) = by_partition.remove(&partition) {
                // Enqueued under the lock, so batches of a partition keep their order.
                enqueue(&self.inner, (topic.to_string(), partition), full);
            }
            if key.is_none() {
                lock(&self.inner.sticky).remove(topic);
            }
        }
        Ok(future)
    }

    /// Sends every queued batch now and waits until all in-flight requests are answered.
    pub async fn flush(&self) {
        {
            let mut pending = lock(&self.inner.pending);
            for (topic, parts) in pending.iter_mut() {
                for (p, batch) in parts.drain() {
                    enqueue(&self.inner, (topic.clone(), p), batch);
                }
            }
        }
        // Every permit back means nothing is queued or in flight.
        let all = self.inner.in_flight_bytes_max as u32;
        if let Ok(p) = self.inner.in_flight.acquire_many(all).await {
            drop(p);
        }
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = lock(&self.inner.partitions).get(topic) {
            return Ok(*n);
        }
        let meta = Admin::new(self.inner.client.clone())
            .metadata(Some(vec![topic.into()]))
            .await?;
        let n = meta
            .topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(|| {
                ClientError::Wire(crate::error::WireError::new(
                    ErrorCode::UNKNOWN_TOPIC,
                    format!("topic {topic:?} does not exist; create it with `strait topic create {topic} --partitions N`"),
                ))
            })?;
        lock(&self.inner.partitions).insert(topic.into(), n);
        Ok(n)
    }

    fn sticky_partition(&self, topic: &str, count: u32) -> u32 {
        let mut sticky = lock(&self.inner.sticky);
        *sticky
            .entry(topic.into())
            .or_insert_with(|| (now_ms() as u64 % u64::from(count.max(1))) as u32)
    }
}

/// Hands a full or lingered batch to its partition's sender task. Called with the pending lock
/// held, so the order of batches per partition is the order of their records.
fn enqueue(inner: &Arc<Inner>, key: PartitionKey, pending: Pending) {
    let mut senders = lock(&inner.senders);
    let tx = senders.entry(key.clone()).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(partition_sender(inner.clone(), key.clone(), rx));
        tx
    });
    if let Err(mpsc::error::SendError(p)) = tx.send(pending) {
        p.outcome.complete(Err(ClientError::ConnectionLost(
            "the partition sender stopped".into(),
        )));
    }
}

/// Seals one partition's batches in order — assigning idempotent sequence numbers — and sends
/// them, keeping a bounded window in flight.
async fn partition_sender(
    inner: Arc<Inner>,
    key: PartitionKey,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let window = inner.config.in_flight_per_partition.max(1);
    let mut in_flight: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    let mut numbering: Option<Numbering> = None;
    let mut previous: Option<Arc<BatchOutcome>> = None;
    // The identity the last batch was sealed under.
    let mut sealed_under: Option<(i64, i16)> = None;
    while let Some(pending) = rx.recv().await {
        let mut builder = pending.builder;
        let mut sequencing = None;
        if inner.config.idempotence {
            if numbering.is_none() {
                match identity(&inner).await {
                    Ok(identity) => {
                        numbering = Some(Arc::new(tokio::sync::Mutex::new(Sequencing {
                            identity,
                            next: 0,
                        })))
                    }
                    Err(e) => {
                        pending.outcome.complete(Err(e));
                        continue;
                    }
                }
            }
            if let Some(numbering) = &numbering {
                let mut n = numbering.lock().await;
                if sealed_under.is_some_and(|last| last != n.identity) {
                    // The partition moved to a fresh producer id: every batch still in flight
                    // under the old one is renumbered first, in order, so this one (sealed
                    // after them) is numbered after them too.
                    drop(n);
                    while let Some(h) = in_flight.pop_front() {
                        let _ = h.await;
                    }
                    n = numbering.lock().await;
                }
                let (id, epoch) = n.identity;
                sealed_under = Some(n.identity);
                builder = builder.producer(id, epoch, n.next);
                n.next = n.next.wrapping_add(builder.record_count() as i32);
                sequencing = Some((numbering.clone(), previous.take()));
                previous = Some(pending.outcome.0.clone());
            }
        }
        let ready = Ready {
            batch: builder.finish(),
            outcome: pending.outcome,
            _permit: pending.permit,
            sequencing,
        };
        if in_flight.len() >= window {
            if let Some(h) = in_flight.pop_front() {
                let _ = h.await;
            }
        }
        let inner = inner.clone();
        let key = key.clone();
        in_flight.push_back(tokio::spawn(async move {
            send_batch(&inner, &key, ready).await
        }));
    }
    for h in in_flight {
        let _ = h.await;
    }
}

/// The producer's id and epoch, asked for once and shared by every partition.
async fn identity(inner: &Inner) -> Result<(i64, i16), ClientError> {
    inner
        .identity
        .get_or_try_init(|| fresh_identity(inner))
        .await
        .copied()
}

/// A fresh producer id: the first one, or one for a partition whose numbering broke (see the
/// module doc).
async fn fresh_identity(inner: &Inner) -> Result<(i64, i16), ClientError> {
    match inner.client.call(&Request::InitProducer {}, &[]).await?.0 {
        Response::ProducerInit {
            producer_id,
            producer_epoch,
        } => Ok((producer_id, producer_epoch)),
        other => Err(unexpected("init_producer", other)),
    }
}

async fn send_batch(inner: &Inner, key: &PartitionKey, ready: Ready) {
    let request = Request::Produce {
        topic: key.0.clone(),
        partition: key.1,
        acks: inner.config.acks,
    };
    let mut batch = ready.batch;
    let mut resent = 0;
    let result = loop {
        let result = inner
            .client
            .call_with_retries(
                &request,
                std::slice::from_ref(batch.as_bytes()),
                inner.config.attempts,
            )
            .await;
        let Some((numbering, previous)) = &ready.sequencing else {
            break result;
        };
        match result {
            Err(e)
                if e.code() == Some(ErrorCode::OUT_OF_ORDER_SEQUENCE)
                    && resent < SEQUENCE_RETRIES_MAX =>
            {
                resent += 1;
                match renumber_if_needed(inner, numbering, previous.as_deref(), &batch).await {
                    Ok(next) => batch = next,
                    Err(e) => break Err(e),
                }
            }
            other => break other,
        }
    };
    let outcome = match result {
        Ok((Response::Produced { base_offset, .. }, _)) => Ok(base_offset),
        // acks = none: the offset is unknown.
        Ok((Response::Ack, _)) => Ok(u64::MAX),
        Ok((other, _)) => Err(unexpected("produce", other)),
        Err(e) => Err(e),
    };
    ready.outcome.complete(outcome);
}

/// After `out_of_order_sequence`: waits for the batch sealed before this one, then answers the
/// batch to send again: as it is when that one was written under the same producer id (this one
/// had overtaken it), else re-numbered after the partition's current numbering, which moves to
/// a fresh producer id if nobody moved it yet.
async fn renumber_if_needed(
    inner: &Inner,
    numbering: &tokio::sync::Mutex<Sequencing>,
    previous: Option<&BatchOutcome>,
    batch: &RecordBatch,
) -> Result<RecordBatch, ClientError> {
    let previous_written = match previous {
        Some(p) => p.settled().await,
        None => false,
    };
    let mut n = numbering.lock().await;
    let same_identity = n.identity == (batch.producer_id(), batch.producer_epoch());
    if previous_written && same_identity {
        return Ok(batch.clone());
    }
    if same_identity {
        // This batch is the first after a range that will never be written.
        n.identity = fresh_identity(inner).await?;
        n.next = 0;
        tracing::warn!(producer_id = n.identity.0, "an earlier batch failed for good; later batches of the partition continue under a fresh producer id");
    }
    let (id, epoch) = n.identity;
    let renumbered = batch.clone().with_producer(id, epoch, n.next);
    n.next = n.next.wrapping_add(renumbered.record_count() as i32);
    Ok(renumbered)
}

/// Sends batches that have waited `linger_ms`; ends when the producer is dropped.
async fn linger_loop(weak: Weak<Inner>) {
    let tick = {
        let Some(inner) = weak.upgrade() else { return };
        Duration::from_millis((inner.config.linger_ms / 2).max(1))
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = weak.upgrade() else { return };
        let linger = Duration::from_millis(inner.config.linger_ms);
        let mut pending = lock(&inner.pending);
        for (topic, parts) in pending.iter_mut() {
            let due: Vec<u32> = parts
                .iter()
                .filter(|(_, p)| p.started.elapsed() >= linger)
                .map(|(k, _)| *k)
                .collect();
            for partition in due {
                if let Some(p) = parts.remove(&partition) {
                    lock(&inner.sticky).remove(topic.as_str());
                    enqueue(&inner, (topic.clone(), partition), p);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
