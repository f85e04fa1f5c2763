//! Produce, Fetch, ListOffsets, OffsetForLeaderEpoch and InitProducerId: each partition of a
//! Kafka request becomes one request to the service (so ACLs, quotas, metrics, the read-only
//! rule of mirror topics and the idempotent producer's sequence checks are the native path's),
//! and the batches travel as their bytes both ways.

use std::time::{Duration, Instant};
use strait_protocol::kafka::kafka_protocol;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::message::OffsetSpec;
use strait_protocol::{Acks, ErrorCode, PartitionId, Request, Response, WireError};
use tokio::task::JoinSet;

use super::dispatch::Ctx;
use super::errors::{self, About};
use super::str_bytes;
use super::topics::auto_create;

/// Longest long-poll a fetch may ask for (as on the native path).
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most bytes one Kafka fetch answer carries across its partitions.
const FETCH_RESPONSE_BYTES_MAX: usize = 64 << 20;

fn partition_id(p: i32) -> Result<u32, WireError> {
    u32::try_from(p).map_err(|_| {
        WireError::new(
            ErrorCode::UNKNOWN_PARTITION,
            format!("partition {p} does not exist"),
        )
    })
}

pub(super) async fn produce(ctx: &Ctx<'_>, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = match request.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let mut answer = PartitionProduceResponse::default().with_index(p.index);
            let outcome = match acks {
                None => Err(WireError::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("acks = {} is not 0, 1 or -1", request.acks),
                )),
                Some(acks) => produce_partition(ctx, &name, p.index, acks, p.records).await,
            };
            match outcome {
                Ok((base_offset, log_start)) => {
                    answer.base_offset = base_offset;
                    if ctx.version() >= 5 {
                        answer.log_start_offset = log_start;
                    }
                }
                Err(e) => {
                    let (code, message) = errors::with_message(&e, About::Topic);
                    answer.error_code = if acks.is_none() {
                        ResponseError::InvalidRequiredAcks.code()
                    } else {
                        code
                    };
                    // Versions before 8 have no room for the message.
                    if ctx.version() >= 8 {
                        answer.error_message = message.map(str_bytes);
                    }
                }
            }
            partitions.push(answer);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == Some(Acks::None) {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// Appends one partition's batches; answers the base offset and the log start.
async fn produce_partition(
    ctx: &Ctx<'_>,
    topic: &str,
    partition: i32,
    acks: Acks,
    records: Option<Bytes>,
) -> Result<(i64, i64), WireError> {
    let partition = partition_id(partition)?;
    let records = records.filter(|r| !r.is_empty()).ok_or_else(|| {
        WireError::new(
            ErrorCode::CORRUPT_BATCH,
            "the produce request carried no records",
        )
    })?;
    let request = || Request::Produce {
        topic: topic.to_string(),
        partition,
        acks,
    };
    let mut answer = ctx
        .service
        .handle(ctx.session, request(), records.clone())
        .await;
    if matches!(&answer, Err(e) if e.code == ErrorCode::UNKNOWN_TOPIC)
        && auto_create(ctx, topic).await?
    {
        answer = ctx.service.handle(ctx.session, request(), records).await;
    }
    match answer?.0 {
        Response::Produced {
            base_offset,
            log_start,
            ..
        } => Ok((base_offset as i64, log_start as i64)),
        // acks = 0: nobody reads the answer.
        _ => Ok((-1, -1)),
    }
}

/// One partition of a fetch, as read so far.
struct Read {
    topic: usize,
    partition: i32,
    outcome: Result<(Bytes, u64, u64), WireError>,
}

pub(super) async fn fetch(ctx: &Ctx<'_>, request: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        (request.max_bytes as usize).min(FETCH_RESPONSE_BYTES_MAX)
    } else {
        FETCH_RESPONSE_BYTES_MAX
    };
    let broker = ctx.service.broker();
    loop {
        // Watch every partition before reading, so a batch appended meanwhile wakes us; the
        // waiting tasks are only started if the answer has to wait.
        let mut watched = Vec::new();
        for t in &request.topics {
            for p in &t.partitions {
                if let Ok(partition) = partition_id(p.partition)
                    .and_then(|id| broker.partition(t.topic.0.as_str(), PartitionId(id)))
                {
                    let mut grown = partition.grown.subscribe();
                    grown.borrow_and_update();
                    watched.push(grown);
                }
            }
        }
        let mut reads = Vec::new();
        let mut total = 0usize;
        let mut failed = false;
        for (ti, t) in request.topics.iter().enumerate() {
            let name = t.topic.0.as_str();
            for p in &t.partitions {
                let room = max_bytes.saturating_sub(total);
                let outcome = if room == 0 {
                    // Over the answer's budget: positions only, no records.
                    positions(ctx, name, p.partition).map(|(hw, start)| (Bytes::new(), hw, start))
                } else {
                    let budget = room.min(p.partition_max_bytes.max(1) as usize);
                    fetch_partition(ctx, name, p.partition, p.fetch_offset, budget).await
                };
                let outcome = outcome.map(|(records, hw, start)| {
                    // The first batch is served even past the budget (a client must be able
                    // to make progress); later ones only within it.
                    if total > 0 && total + records.len() > max_bytes {
                        (Bytes::new(), hw, start)
                    } else {
                        (records, hw, start)
                    }
                });
                match &outcome {
                    Ok((records, _, _)) => total += records.len(),
                    Err(_) => failed = true,
                }
                reads.push(Read {
                    topic: ti,
                    partition: p.partition,
                    outcome,
                });
            }
        }
        let now = Instant::now();
        // min_bytes 0 answers at once, as in Kafka; an error answers at once too.
        if failed || total >= min_bytes || now >= deadline || watched.is_empty() {
            return fetch_response(ctx, &request, reads);
        }
        let mut watchers = JoinSet::new();
        for mut grown in watched {
            watchers.spawn(async move {
                let _ = grown.changed().await;
            });
        }
        let _ = tokio::time::timeout(deadline - now, watchers.join_next()).await;
    }
}

fn fetch_response(ctx: &Ctx<'_>, request: &FetchRequest, reads: Vec<Read>) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| FetchableTopicResponse::default().with_topic(t.topic.clone()))
        .collect();
    for read in reads {
        let name = topics[read.topic].topic.0.as_str().to_string();
        let mut data = PartitionData::default().with_partition_index(read.partition);
        match read.outcome {
            Ok((records, hw, start)) => {
                data.high_watermark = hw as i64;
                data.last_stable_offset = hw as i64;
                if ctx.version() >= 5 {
                    data.log_start_offset = start as i64;
                }
                data.records = Some(records);
            }
            Err(e) => {
                data.error_code = errors::code(&e, About::Topic);
                data.high_watermark = -1;
                if let Ok((hw, start)) = positions(ctx, &name, read.partition) {
                    data.high_watermark = hw as i64;
                    data.last_stable_offset = hw as i64;
                    if ctx.version() >= 5 {
                        data.log_start_offset = start as i64;
                    }
                }
            }
        }
        topics[read.topic].partitions.push(data);
    }
    FetchResponse::default().with_responses(topics)
}

/// Reads one partition from `offset` (whole batches, at most about `budget` bytes) through
/// the service, without waiting: the Kafka fetch waits across all its partitions at once.
async fn fetch_partition(
    ctx: &Ctx<'_>,
    topic: &str,
    partition: i32,
    offset: i64,
    budget: usize,
) -> Result<(Bytes, u64, u64), WireError> {
    let partition = partition_id(partition)?;
    let offset = u64::try_from(offset).map_err(|_| {
        WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("offset {offset} is negative"),
        )
    })?;
    let request = Request::Fetch {
        topic: topic.to_string(),
        partition,
        offset,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: u32::try_from(budget).unwrap_or(u32::MAX),
    };
    let (response, chunks) = ctx
        .service
        .handle(ctx.session, request, Bytes::new())
        .await?;
    let Response::Fetched {
        high_watermark,
        log_start,
        ..
    } = response
    else {
        return Err(WireError::new(
            ErrorCode::INTERNAL,
            "unexpected fetch answer",
        ));
    };
    let records = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Ok((records, high_watermark, log_start))
}

/// A partition's high watermark and log start, for answers that carry no records. Only for a
/// principal that may read the topic.
fn positions(ctx: &Ctx<'_>, topic: &str, partition: i32) -> Result<(u64, u64), WireError> {
    ctx.service
        .check(ctx.session, Operation::Read, ResourceKind::Topic, topic)?;
    let p = ctx
        .service
        .broker()
        .partition(topic, PartitionId(partition_id(partition)?))?;
    Ok((p.log.high_watermark().0, p.log.log_start().0))
}

pub(super) async fn list_offsets(
    ctx: &Ctx<'_>,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            match list_offset(ctx, &name, p.partition_index, p.timestamp).await {
                Ok((offset, timestamp, epoch)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
                    if ctx.version() >= 4 {
                        answer.leader_epoch = epoch;
                    }
                }
                Err(e) => answer.error_code = errors::code(&e, About::Topic),
            }
            partitions.push(answer);
        }
        partitions.sort_by_key(|p| p.partition_index);
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Kafka's ListOffsets timestamps: -2 earliest, -1 latest, otherwise the first offset whose
/// timestamp is at or after it (-1 and -1 when there is none).
async fn list_offset(
    ctx: &Ctx<'_>,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64, i32), WireError> {
    let partition = partition_id(partition)?;
    let spec = match timestamp {
        -2 => OffsetSpec::Earliest,
        -1 => OffsetSpec::Latest,
        ts if ts >= 0 => OffsetSpec::Timestamp(ts),
        other => {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("timestamp {other} is not served (-2 earliest, -1 latest, or a time)"),
            ))
        }
    };
    let by_time = matches!(spec, OffsetSpec::Timestamp(_));
    let request = Request::ListOffsets {
        topic: topic.to_string(),
        partition,
        spec,
    };
    let (response, _) = ctx
        .service
        .handle(ctx.session, request, Bytes::new())
        .await?;
    let Response::Offsets {
        offset,
        timestamp_ms,
    } = response
    else {
        return Err(WireError::new(
            ErrorCode::INTERNAL,
            "unexpected offsets answer",
        ));
    };
    let epoch = ctx
        .service
        .broker()
        .partition(topic, PartitionId(partition))?
        .log
        .leader_epoch()
        .0 as i32;
    Ok(match (by_time, timestamp_ms) {
        (true, None) => (-1, -1, -1),
        (_, ts) => (offset as i64, ts.unwrap_or(-1), epoch),
    })
}

pub(super) async fn offset_for_leader_epoch(
    ctx: &Ctx<'_>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let broker = ctx.service.broker();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.as_str().to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let found = ctx
                        .service
                        .check(ctx.session, Operation::Describe, ResourceKind::Topic, &name)
                        .and_then(|()| partition_id(p.partition))
                        .and_then(|id| broker.partition(&name, PartitionId(id)));
                    match found {
                        Err(e) => answer.error_code = errors::code(&e, About::Topic),
                        Ok(partition) => {
                            let current = partition.log.leader_epoch().0 as i32;
                            if p.current_leader_epoch >= 0 && p.current_leader_epoch > current {
                                answer.error_code = ResponseError::UnknownLeaderEpoch.code();
                            } else if p.current_leader_epoch >= 0
                                && p.current_leader_epoch < current
                            {
                                answer.error_code = ResponseError::FencedLeaderEpoch.code();
                            } else if p.leader_epoch <= current && p.leader_epoch >= 0 {
                                // One leader for the whole life of a single-node partition:
                                // every epoch up to the current one ends at the log end.
                                answer.leader_epoch = current;
                                answer.end_offset = partition.log.log_end().0 as i64;
                            }
                        }
                    }
                    answer
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub(super) async fn init_producer_id(
    ctx: &Ctx<'_>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut answer = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // Transactions are not served; idempotence without a transactional.id is.
        answer.error_code = ResponseError::UnsupportedVersion.code();
        return answer;
    }
    match ctx
        .service
        .handle(ctx.session, Request::InitProducer {}, Bytes::new())
        .await
    {
        Ok((
            Response::ProducerInit {
                producer_id,
                producer_epoch,
            },
            _,
        )) => {
            answer.producer_id = producer_id.into();
            answer.producer_epoch = producer_epoch;
        }
        Ok(_) => answer.error_code = ResponseError::UnknownServerError.code(),
        Err(e) => answer.error_code = errors::code(&e, About::Cluster),
    }
    answer
}
