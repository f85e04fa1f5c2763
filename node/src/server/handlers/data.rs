//! Produce, fetch, offsets and producer ids: the data path. Batches are validated (length,
//! structure, CRC, declared decompressed size) and stored as they came; nothing is decompressed
//! or re-encoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_protocol::batch::split_batches;
use strait_protocol::message::OffsetSpec;
use strait_protocol::{
    Acks, ErrorCode, Offset, PartitionId, RecordBatch, Request, Response, WireError,
};
use tokio::sync::watch;

use super::{blocking, corrupt, log_error, plain, Answer};
use crate::broker::{Broker, Partition, Topic};
use crate::now_ms;
use crate::server::service::RequestService;
use crate::storage::LogError;

/// Longest long-poll a fetch may ask for.
const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Most bytes one fetch answer may carry.
pub(crate) const FETCH_BYTES_MAX: u32 = 32 << 20;

pub(in crate::server) async fn serve(
    service: &RequestService,
    request: Request,
    payload: Bytes,
    mirror_principal: bool,
) -> Result<Answer, WireError> {
    let broker = service.broker();
    match request {
        Request::Produce {
            topic,
            partition,
            acks,
        } => produce(broker, &topic, partition, acks, payload).await,
        Request::Fetch {
            topic,
            partition,
            offset,
            max_wait_ms,
            min_bytes,
            max_bytes,
        } => {
            let wait = Duration::from_millis(u64::from(max_wait_ms.min(FETCH_WAIT_MS_MAX)));
            let max_bytes = max_bytes.clamp(1, FETCH_BYTES_MAX) as usize;
            let p = broker.partition(&topic, PartitionId(partition))?;
            fetch(
                p,
                Offset(offset),
                wait,
                min_bytes,
                max_bytes,
                mirror_principal,
            )
            .await
        }
        Request::ListOffsets {
            topic,
            partition,
            spec,
        } => list_offsets(broker.partition(&topic, PartitionId(partition))?, spec).await,
        Request::InitProducer {} => {
            let broker = broker.clone();
            let producer_id = blocking(move || broker.allocate_producer_id()).await?;
            plain(Response::ProducerInit {
                producer_id,
                producer_epoch: 0,
            })
        }
        _ => unreachable!("routed by the request service"),
    }
}

async fn produce(
    broker: &Broker,
    topic: &str,
    partition: u32,
    acks: Acks,
    payload: Bytes,
) -> Result<Answer, WireError> {
    let t = broker.topic(topic)?;
    if let Some(m) = &t.mirror {
        return Err(WireError::new(
            ErrorCode::READ_ONLY_TOPIC,
            format!(
                "topic {topic:?} is a mirror of {:?} on cluster {:?}, written only by mirror flow {:?}; \
                 produce to the source cluster, or promote the mirror topic when failing over",
                m.source_topic, m.source_cluster, m.flow
            ),
        ));
    }
    let p = broker.partition(topic, PartitionId(partition))?;
    let batches = decode_batches(&t, topic, partition, payload)?;
    if batches.is_empty() {
        return Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            "produce carried no batch; send at least one record",
        ));
    }
    let p2 = p.clone();
    let (base_offset, last_offset) = append(move || {
        let mut first = None;
        let mut last = 0;
        let now = now_ms();
        for b in batches {
            let a = p2.log.append(b, now)?;
            first.get_or_insert(a.base_offset.0);
            last = a.last_offset.0;
        }
        Ok((first.unwrap_or(0), last))
    })
    .await?;
    wake(&p);
    if acks == Acks::None {
        return plain(Response::Ack);
    }
    plain(Response::Produced {
        base_offset,
        last_offset,
        log_start: p.log.log_start().0,
    })
}

/// Answers whole batches from `offset` on, long-polling up to `wait` until `min_bytes` are
/// there. Each read runs on a blocking thread. A mirror principal is also told the provenance
/// of the mirrored batches among them.
pub(in crate::server) async fn fetch(
    p: Arc<Partition>,
    offset: Offset,
    wait: Duration,
    min_bytes: u32,
    max_bytes: usize,
    with_provenance: bool,
) -> Result<Answer, WireError> {
    let deadline = Instant::now() + wait;
    let mut grown: watch::Receiver<u64> = p.grown.subscribe();
    loop {
        grown.borrow_and_update();
        let reader = p.clone();
        let read = blocking(move || reader.log.read(offset, max_bytes).map_err(log_error)).await?;
        let enough = read.batches.len() >= min_bytes.max(1) as usize;
        if enough || Instant::now() >= deadline {
            let provenance = if with_provenance && !read.batches.is_empty() {
                let (reader, batches) = (p.clone(), read.batches.clone());
                blocking(move || reader.log.provenance_of(&batches).map_err(log_error)).await?
            } else {
                Vec::new()
            };
            let response = Response::Fetched {
                high_watermark: read.high_watermark.0,
                log_start: read.log_start.0,
                provenance,
            };
            return Ok((response, vec![read.batches]));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if let Ok(Err(_)) = tokio::time::timeout(wait, grown.changed()).await {
            // The partition went away (topic deleted): answer at the deadline.
            tokio::time::sleep(wait).await;
        }
    }
}

async fn list_offsets(p: Arc<Partition>, spec: OffsetSpec) -> Result<Answer, WireError> {
    let (offset, timestamp_ms) = match spec {
        OffsetSpec::Earliest => (p.log.log_start(), None),
        OffsetSpec::Latest => (p.log.high_watermark(), None),
        OffsetSpec::Timestamp(ts) => {
            blocking(move || {
                let log = &p.log;
                Ok(match log.offset_for_timestamp(ts).map_err(log_error)? {
                    Some((o, t)) => (o, Some(t)),
                    None => (log.high_watermark(), None),
                })
            })
            .await?
        }
        _ => {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "unknown offset spec; upgrade the node",
            ))
        }
    };
    plain(Response::Offsets {
        offset: offset.0,
        timestamp_ms,
    })
}

/// Splits a request's payload into validated batches under the topic's limits.
pub(in crate::server) fn decode_batches(
    t: &Topic,
    topic: &str,
    partition: u32,
    payload: Bytes,
) -> Result<Vec<RecordBatch>, WireError> {
    let limits = t.config.decode_limits();
    let batches = split_batches(payload, &limits).map_err(|e| corrupt(topic, partition, e))?;
    for b in &batches {
        b.check_decompressed_size(limits.batch_bytes_decompressed_max)
            .map_err(|e| corrupt(topic, partition, e))?;
    }
    Ok(batches)
}

/// Runs an append (pwrite, maybe a segment roll, under `flush = always` a group-committed
/// fsync) on a blocking thread; answers the first and last offsets appended.
pub(in crate::server) async fn append(
    work: impl FnOnce() -> Result<(u64, u64), LogError> + Send + 'static,
) -> Result<(u64, u64), WireError> {
    blocking(move || work().map_err(log_error)).await
}

/// Wakes fetches long-polling on the partition.
pub(in crate::server) fn wake(p: &Partition) {
    p.grown.send_replace(p.log.high_watermark().0);
}
