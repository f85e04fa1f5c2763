//! Topics and metadata: create, grow, alter, delete, describe, and the metadata listing
//! (filtered by what the session may describe). Changes run on blocking threads: they create
//! directories and fsync files.

use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::message::{
    Metadata, NodeInfo, PartitionInfo, PartitionStats, TopicDescription, TopicInfo,
};
use strait_protocol::{Request, Response, WireError};

use super::{blocking, plain, Answer};
use crate::broker::Broker;
use crate::server::service::{RequestService, Session};

pub(in crate::server) async fn serve(
    service: &RequestService,
    session: &Session,
    request: Request,
) -> Result<Answer, WireError> {
    let broker = service.broker().clone();
    match request {
        Request::Metadata { topics } => {
            plain(Response::Metadata(metadata(service, session, topics)))
        }
        Request::CreateTopic {
            name,
            partitions,
            configs,
        } => {
            let created = name.clone();
            blocking(move || {
                broker
                    .create_topic(&created, partitions, &configs)
                    .map(drop)
            })
            .await?;
            plain(Response::TopicCreated { name, partitions })
        }
        Request::DeleteTopic { name } => {
            let deleted = name.clone();
            blocking(move || broker.delete_topic(&deleted)).await?;
            plain(Response::TopicDeleted { name })
        }
        Request::AlterTopicConfig { name, configs } => {
            let description = blocking(move || {
                broker.alter_topic_config(&name, &configs)?;
                describe(&broker, &name)
            })
            .await?;
            plain(Response::TopicDescription(description))
        }
        Request::DescribeTopic { name } => plain(Response::TopicDescription(describe(
            service.broker(),
            &name,
        )?)),
        Request::AddPartitions { name, partitions } => {
            let t = broker.topic(&name)?;
            if let Some(m) = &t.mirror {
                // A mirror keeps the source's partition count; only its flow grows it.
                session.require_mirror(&format!(
                    "growing mirror topic {name:?} of flow {:?}",
                    m.flow
                ))?;
            }
            let grown = name.clone();
            blocking(move || broker.add_partitions(&grown, partitions).map(drop)).await?;
            plain(Response::TopicCreated { name, partitions })
        }
        _ => unreachable!("routed by the request service"),
    }
}

fn metadata(service: &RequestService, session: &Session, filter: Option<Vec<String>>) -> Metadata {
    let broker = service.broker();
    let topics = broker
        .topics()
        .into_iter()
        .filter(|t| {
            filter
                .as_ref()
                .is_none_or(|f| f.iter().any(|n| n == t.name.as_str()))
        })
        .filter(|t| {
            service.may(
                session,
                Operation::Describe,
                ResourceKind::Topic,
                t.name.as_str(),
            )
        })
        .map(|t| TopicInfo {
            name: t.name.to_string(),
            partitions: (0..t.partitions.len() as u32)
                .map(|id| PartitionInfo {
                    id,
                    leader: broker.node_id.0,
                    leader_epoch: t.partitions[id as usize].log.leader_epoch().0,
                    replicas: vec![broker.node_id.0],
                    in_sync: vec![broker.node_id.0],
                })
                .collect(),
        })
        .collect();
    Metadata {
        cluster: broker.cluster.clone(),
        nodes: vec![NodeInfo {
            id: broker.node_id.0,
            address: service.advertised().to_string(),
        }],
        topics,
    }
}

pub(in crate::server) fn describe(
    broker: &Broker,
    name: &str,
) -> Result<TopicDescription, WireError> {
    let t = broker.topic(name)?;
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = p.log.stats();
            PartitionStats {
                id: i as u32,
                leader: broker.node_id.0,
                leader_epoch: p.log.leader_epoch().0,
                start_offset: s.log_start.0,
                end_offset: s.log_end.0,
                high_watermark: s.high_watermark.0,
                size_bytes: s.size_bytes,
                segments: s.segments as u32,
            }
        })
        .collect();
    Ok(TopicDescription {
        name: t.name.to_string(),
        configs: t.config.to_pairs(),
        partitions,
    })
}
