//! Mirror flows' requests: creating mirror topics, appending copied batches (at their source
//! offsets into a prefix mirror, at the log end with their provenance mapped into an identity
//! topic), where to resume, and offset translation for failover.

use bytes::Bytes;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::{
    ErrorCode, PartitionId, Provenance, RecordBatch, Request, Response, WireError,
};

use super::{data, plain, Answer};
use crate::broker::{Broker, Topic};
use crate::now_ms;
use crate::server::service::{RequestService, Session};
use crate::storage::mirror_map::{SourceKey, Translation};
use crate::storage::LogError;

pub(in crate::server) async fn serve(
    service: &RequestService,
    session: &Session,
    request: Request,
    payload: Bytes,
) -> Result<Answer, WireError> {
    let broker = service.broker();
    match request {
        Request::CreateMirrorTopic {
            name,
            partitions,
            configs,
            flow,
            source_cluster,
            source_topic,
        } => {
            session.require_mirror("creating a mirror topic")?;
            let mirror = crate::broker::MirrorOf {
                flow,
                source_cluster,
                source_topic,
            };
            let (b, created) = (broker.clone(), name.clone());
            super::blocking(move || {
                b.create_topic_with(&created, partitions, &configs, Some(mirror))
                    .map(drop)
            })
            .await?;
            plain(Response::TopicCreated { name, partitions })
        }
        Request::TranslateOffset {
            source_cluster,
            topic,
            partition,
            offset,
            position,
        } => {
            // Whether a mirror exists is itself something to describe: a principal that may
            // not describe the named topic learns nothing from the error either.
            let resolved = translate(broker, &source_cluster, &topic, partition, offset, position);
            let (topic, offset) = match resolved {
                Ok(found) => found,
                Err(e) => {
                    service.check(session, Operation::Describe, ResourceKind::Topic, &topic)?;
                    return Err(e);
                }
            };
            service.check(session, Operation::Describe, ResourceKind::Topic, &topic)?;
            plain(Response::Translated {
                topic,
                partition,
                offset,
            })
        }
        Request::MirrorAppend {
            topic,
            partition,
            provenance,
        } => {
            session.require_mirror("appending copied batches")?;
            let t = broker.topic(&topic)?;
            let batches = data::decode_batches(&t, &topic, partition, payload)?;
            let batches = with_provenance(&topic, partition, batches, provenance)?;
            mirror_append(broker, &t, partition, batches).await
        }
        Request::MirrorResume {
            topic,
            partition,
            source_cluster,
            source_topic,
        } => {
            let t = broker.topic(&topic)?;
            let p = broker.partition(&topic, PartitionId(partition))?;
            let next_source_offset = if t.mirror.is_some() {
                Some(p.log.log_end().0).filter(|end| *end > 0)
            } else {
                p.log.mirrored_next(&SourceKey {
                    cluster: source_cluster,
                    topic: source_topic,
                    partition,
                })
            };
            plain(Response::MirrorResume { next_source_offset })
        }
        _ => unreachable!("routed by the request service"),
    }
}

/// Pairs each batch of a `MirrorAppend` with its provenance chain: one per batch (their bounds
/// are checked by [`mirror_append`], where every copy arrives).
pub(in crate::server) fn with_provenance(
    topic: &str,
    partition: u32,
    batches: Vec<RecordBatch>,
    provenance: Vec<Provenance>,
) -> Result<Vec<(RecordBatch, Provenance)>, WireError> {
    if provenance.len() != batches.len() {
        return Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            format!(
                "{topic}/{partition}: {} batches came with {} provenance chains; a flow sends one per batch",
                batches.len(),
                provenance.len()
            ),
        ));
    }
    Ok(batches.into_iter().zip(provenance).collect())
}

/// Appends copied batches: at their own offsets into a prefix-mode mirror topic, at the log
/// end (with their provenance mapped) into an identity-mode topic.
pub(in crate::server) async fn mirror_append(
    broker: &Broker,
    t: &Topic,
    partition: u32,
    batches: Vec<(RecordBatch, Provenance)>,
) -> Result<Answer, WireError> {
    let topic = t.name.as_str();
    for (b, p) in &batches {
        p.check(u64::from(b.last_offset_delta())).map_err(|e| {
            WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "{topic}/{partition}: batch at offset {}: {e}",
                    b.base_offset()
                ),
            )
        })?;
    }
    let p = broker.partition(topic, PartitionId(partition))?;
    let prefix = t.mirror.is_some();
    if !prefix {
        if let Some((b, _)) = batches.iter().find(|(_, pr)| {
            pr.source()
                .map(|h| h.cluster == broker.cluster)
                .unwrap_or(true)
        }) {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("{topic}/{partition}: batch at source offset {} carries no provenance naming another cluster; \
                         identity-mode flows add a hop for the cluster they copy from", b.base_offset()),
            ));
        }
    }
    let p2 = p.clone();
    let append = move || -> Result<(u64, u64), LogError> {
        let appended = p2.log.append_copies(batches, prefix, now_ms())?;
        let end = p2.log.log_end().0;
        Ok(match appended {
            Some((first, last)) => (first.0, last.0),
            None => (end, end.saturating_sub(1)),
        })
    };
    let (base_offset, last_offset) = data::append(append).await?;
    data::wake(&p);
    Ok((
        Response::Produced {
            base_offset,
            last_offset,
            log_start: p.log.log_start().0,
        },
        Vec::new(),
    ))
}

/// Where source offset `offset` of `topic`/`partition` on `cluster` lives here.
///
/// Prefix-mode mirror topics hold source records at their source offsets, so the offset is the
/// same, provided it has been copied and not yet deleted. Identity-mode topics (same name on both
/// sides, local writes interleaved) look it up in the partition's mirror map. With `position`,
/// the answer is where a consumer that committed `offset` resumes (the first record here at or
/// after it).
fn translate(
    broker: &Broker,
    cluster: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    position: bool,
) -> Result<(String, u64), WireError> {
    let prefix_mirror = broker.topics().into_iter().find(|t| {
        t.mirror
            .as_ref()
            .is_some_and(|m| m.source_cluster == cluster && m.source_topic == topic)
    });
    let t = match prefix_mirror {
        Some(t) => t,
        None => broker.topic(topic).map_err(|_| {
            WireError::new(
                ErrorCode::UNKNOWN_TOPIC,
                format!("no mirror of {topic:?} from cluster {cluster:?} on cluster {}; is a flow copying it?", broker.cluster),
            )
        })?,
    };
    let p = t.partitions.get(partition as usize).ok_or_else(|| {
        WireError::new(
            ErrorCode::UNKNOWN_PARTITION,
            format!("{} has no partition {partition}", t.name),
        )
    })?;
    let name = t.name.to_string();
    let (start, end) = (p.log.log_start().0, p.log.high_watermark().0);
    let not_yet = |through: String| {
        WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} from {cluster} is not mirrored to {} yet ({through})", broker.cluster),
        )
    };
    if t.mirror.is_some() {
        if position {
            return Ok((name, offset.clamp(start, end)));
        }
        if offset >= end {
            return Err(not_yet(format!("mirrored up to {end}")));
        }
        if offset < start {
            return Err(WireError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("source offset {offset} of {topic}/{partition} was deleted on the target (it starts at {start})"),
            ));
        }
        return Ok((name, offset));
    }
    let key = SourceKey {
        cluster: cluster.into(),
        topic: topic.into(),
        partition,
    };
    if position {
        return Ok((name, p.log.mirrored_position(&key, offset).min(end)));
    }
    match p.log.translate_mirrored(&key, offset) {
        Translation::Exact(o) if o < end => Ok((name, o)),
        Translation::Exact(_) => Err(not_yet("copied but not yet durable".into())),
        Translation::Ahead { mirrored_through } => Err(not_yet(match mirrored_through {
            Some(o) => format!("mirrored through source offset {o}"),
            None => "nothing copied from it".into(),
        })),
        Translation::NotCopied { next_target } => Err(WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} from {cluster} was never copied here: it had already passed through {} or was deleted on the source first; the next copied record is at {next_target}", broker.cluster),
        )),
        Translation::Deleted => Err(WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} was copied but retention deleted it here (the log starts at {start})"),
        )),
    }
}
