//! The producer: batches records per partition, compresses, sends, retries.
//!
//! Records accumulate in one batch per partition until it reaches `batch_bytes` or has waited
//! `linger_ms`. Each partition has one sender task that keeps up to
//! `in_flight_per_partition` requests outstanding and resolves them in order, so records of one
//! partition are acknowledged in the order they were sent. In-flight bytes across all
//! partitions are bounded by a semaphore: `send` waits when the bound is reached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::admin::Admin;
use super::conn::{unexpected, Client, ClientError};
use crate::batch::{BatchBuilder, Compression, Header};
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
}

struct Ready {
    batch: Bytes,
    outcome: Completer,
    permit: OwnedSemaphorePermit,
}

type PartitionKey = (String, u32);

struct Inner {
    client: Arc<Client>,
    config: ProducerConfig,
    pending: Mutex<HashMap<String, HashMap<u32, Pending>>>,
    senders: Mutex<HashMap<PartitionKey, mpsc::Sender<Ready>>>,
    partitions: Mutex<HashMap<String, u32>>,
    sticky: Mutex<HashMap<String, u32>>,
    in_flight: Arc<Semaphore>,
    in_flight_bytes_max: usize,
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
        });
        tokio::spawn(linger_loop(Arc::downgrade(&inner)));
        Producer { inner }
    }

    /// Queues a record; the partition is `partition`, else the key's murmur2 hash, else a sticky
    /// choice that changes with each batch.
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
        let now = now_ms();
        let (future, full) = {
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
            });
            let future = DeliveryFuture {
                outcome: entry.outcome.0.clone(),
                index: u64::from(entry.builder.record_count()),
            };
            entry.builder.push(now, key, value, headers);
            let full = if entry.builder.size_bytes() >= self.inner.config.batch_bytes {
                by_partition.remove(&partition)
            } else {
                None
            };
            (future, full)
        };
        if let Some(p) = full {
            if key.is_none() {
                lock(&self.inner.sticky).remove(topic);
            }
            dispatch(&self.inner, (topic.to_string(), partition), p).await;
        }
        Ok(future)
    }

    /// Sends every queued batch now and waits until all in-flight requests are answered.
    pub async fn flush(&self) {
        let drained: Vec<(PartitionKey, Pending)> = lock(&self.inner.pending)
            .iter_mut()
            .flat_map(|(t, parts)| {
                parts
                    .drain()
                    .map(|(p, pending)| ((t.clone(), p), pending))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (key, p) in drained {
            dispatch(&self.inner, key, p).await;
        }
        // Every permit back means nothing is in flight.
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

/// Moves a full or lingered batch to its partition's sender, waiting for in-flight room.
async fn dispatch(inner: &Arc<Inner>, key: PartitionKey, pending: Pending) {
    let batch = pending.builder.finish().into_bytes();
    let cost = batch.len().clamp(1, inner.in_flight_bytes_max) as u32;
    let Ok(permit) = inner.in_flight.clone().acquire_many_owned(cost).await else {
        return;
    };
    let sender = {
        let mut senders = lock(&inner.senders);
        senders
            .entry(key.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(inner.config.in_flight_per_partition.max(1) * 2);
                tokio::spawn(partition_sender(inner.clone(), key.clone(), rx));
                tx
            })
            .clone()
    };
    let ready = Ready {
        batch,
        outcome: pending.outcome,
        permit,
    };
    if let Err(mpsc::error::SendError(ready)) = sender.send(ready).await {
        ready.outcome.complete(Err(ClientError::ConnectionLost(
            "the partition sender stopped".into(),
        )));
    }
}

/// Sends one partition's batches in order, keeping a bounded window in flight.
async fn partition_sender(inner: Arc<Inner>, key: PartitionKey, mut rx: mpsc::Receiver<Ready>) {
    let window = inner.config.in_flight_per_partition.max(1);
    let mut in_flight: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    while let Some(ready) = rx.recv().await {
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

async fn send_batch(inner: &Inner, key: &PartitionKey, ready: Ready) {
    let request = Request::Produce {
        topic: key.0.clone(),
        partition: key.1,
        acks: inner.config.acks,
    };
    let result = inner
        .client
        .call_with_retries(
            &request,
            std::slice::from_ref(&ready.batch),
            inner.config.attempts,
        )
        .await;
    drop(ready.permit);
    let outcome = match result {
        Ok((Response::Produced { base_offset, .. }, _)) => Ok(base_offset),
        // acks = none: the offset is unknown.
        Ok((Response::Ack, _)) => Ok(u64::MAX),
        Ok((other, _)) => Err(unexpected("produce", other)),
        Err(e) => Err(e),
    };
    ready.outcome.complete(outcome);
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
        let due: Vec<(PartitionKey, Pending)> = {
            let mut pending = lock(&inner.pending);
            let mut due = Vec::new();
            for (topic, parts) in pending.iter_mut() {
                let keys: Vec<u32> = parts
                    .iter()
                    .filter(|(_, p)| p.started.elapsed() >= linger)
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    if let Some(p) = parts.remove(&k) {
                        due.push(((topic.clone(), k), p));
                    }
                }
            }
            due
        };
        for (key, p) in due {
            lock(&inner.sticky).remove(&key.0);
            dispatch(&inner, key, p).await;
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
