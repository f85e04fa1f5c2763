//! The admin plane's mutating operations, over the same QUIC + mTLS protocol and ACLs as
//! everything else (the admin HTTP listener is read-only): starting, reconfiguring and removing
//! the flows this node runs (`alter` on the cluster), promoting a flow's mirror topics at
//! failover and failing a topic back (`alter` on each topic they change).

use std::sync::Arc;

use strait_mirror::{FlowManager, FlowSpec};
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::message::{Diverged, PromotedPartition, PromotedTopic, Promotion};
use strait_protocol::{ErrorCode, Request, Response, WireError};
use tracing::info;

use super::{blocking, plain, Answer};
use crate::broker::{MirrorOf, Topic};
use crate::server::service::{RequestService, Session};

pub(in crate::server) async fn serve(
    service: &RequestService,
    session: &Session,
    request: Request,
) -> Result<Answer, WireError> {
    let flows = service.flows()?;
    match request {
        Request::PutFlow { spec, replace } => {
            let spec: FlowSpec = serde_json::from_str(&spec).map_err(|e| {
                WireError::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("the flow is not valid JSON of a flow spec: {e}"),
                )
            })?;
            let flow = spec.name.clone();
            let changed = if replace {
                flows.replace(spec).await
            } else {
                flows.add(spec)
            }
            .map_err(flow_error)?;
            info!(principal = %session.principal(), %flow, changed, "flow put");
            plain(Response::FlowChanged { flow, changed })
        }
        Request::RemoveFlow { name } => {
            flows.remove(&name).await.map_err(flow_error)?;
            info!(principal = %session.principal(), flow = %name, "flow removed");
            plain(Response::FlowChanged {
                flow: name,
                changed: true,
            })
        }
        Request::PromoteFlow { flow, topics } => {
            promote(service, session, &flows, flow, topics).await
        }
        Request::FailbackTopic {
            name,
            common,
            mirror_of,
        } => {
            let broker = service.broker().clone();
            let topic = name.clone();
            let mirror_of = MirrorOf {
                flow: mirror_of.flow,
                source_cluster: mirror_of.source_cluster,
                source_topic: mirror_of.source_topic,
            };
            let divergence =
                blocking(move || broker.quarantine_divergence(&topic, &common, mirror_of)).await?;
            info!(principal = %session.principal(), topic = %name, "failback");
            plain(Response::FailedBack {
                quarantine: format!("{name}.diverged"),
                topic: name,
                diverged: divergence
                    .into_iter()
                    .map(|d| Diverged {
                        partition: d.partition,
                        from: d.from,
                        to: d.to,
                        records: d.records,
                    })
                    .collect(),
            })
        }
        _ => unreachable!("routed by the request service"),
    }
}

fn flow_error(e: strait_mirror::ManagerError) -> WireError {
    let code = match e {
        strait_mirror::ManagerError::NotFound(_) => ErrorCode::INVALID_REQUEST,
        strait_mirror::ManagerError::Persist { .. } => ErrorCode::STORAGE,
        _ => ErrorCode::INVALID_REQUEST,
    };
    WireError::new(code, e.to_string())
}

/// Failover: stops the flow for the named source topics (or all), makes their mirror topics
/// writable, and reports per partition the recovery point: the last source offset the target
/// holds, the last source end the flow saw, and the records in between, which are at risk if
/// the source is lost for good. Every mirror topic it would change is authorized first.
async fn promote(
    service: &RequestService,
    session: &Session,
    flows: &Arc<FlowManager>,
    flow: String,
    wanted: Vec<String>,
) -> Result<Answer, WireError> {
    let broker = service.broker();
    // The flow's heartbeat copy stays a mirror: it is the flow's, not the applications'.
    let mirrors: Vec<Arc<Topic>> = broker
        .topics()
        .into_iter()
        .filter(|t| {
            t.mirror
                .as_ref()
                .is_some_and(|m| m.flow == flow && !m.source_topic.starts_with("__"))
        })
        .collect();
    // Accept the mirror topics' own names too (`east.orders` for `orders`).
    let source_of = |t: &str| {
        mirrors
            .iter()
            .find(|m| m.name.as_str() == t)
            .and_then(|m| m.mirror.as_ref().map(|o| o.source_topic.clone()))
            .unwrap_or_else(|| t.to_string())
    };
    let sources: Vec<String> = wanted.iter().map(|t| source_of(t)).collect();
    let chosen: Vec<&Arc<Topic>> = mirrors
        .iter()
        .filter(|m| {
            let source = m.mirror.as_ref().map(|o| o.source_topic.as_str());
            sources.is_empty() || source.is_some_and(|s| sources.iter().any(|w| w == s))
        })
        .collect();
    for m in &chosen {
        service.check(
            session,
            Operation::Alter,
            ResourceKind::Topic,
            m.name.as_str(),
        )?;
    }
    if chosen.is_empty() {
        // Nothing to make writable, but the flow still stops: that is a cluster change.
        service.check(session, Operation::Alter, ResourceKind::Cluster, "")?;
    }
    let report = flows
        .stop_for_promotion(&flow, &sources)
        .await
        .map_err(flow_error)?;
    let mut topics = Vec::new();
    let mut records_at_risk = 0u64;
    for m in chosen {
        let (b, name) = (broker.clone(), m.name.to_string());
        let promoted = blocking(move || b.promote_topic(&name)).await?;
        let source_topic = m
            .mirror
            .as_ref()
            .map(|o| o.source_topic.clone())
            .unwrap_or_default();
        let ends = promoted
            .promoted
            .as_ref()
            .map(|p| p.end_offsets.clone())
            .unwrap_or_default();
        let partitions = ends
            .iter()
            .enumerate()
            .map(|(p, end)| {
                let seen = report
                    .status
                    .partitions
                    .iter()
                    .find(|s| s.source_topic == source_topic && s.partition == p as u32)
                    .map_or(*end, |s| s.source_end_offset.max(*end));
                records_at_risk += seen - end;
                PromotedPartition {
                    partition: p as u32,
                    last_mirrored_offset: end.checked_sub(1),
                    next_offset: *end,
                    source_end_offset: seen,
                    records_at_risk: seen - end,
                }
            })
            .collect();
        topics.push(PromotedTopic {
            topic: m.name.to_string(),
            source_topic,
            partitions,
        });
    }
    info!(principal = %session.principal(), %flow, records_at_risk, "flow promoted");
    plain(Response::Promoted(Promotion {
        flow,
        source_cluster: report.status.source_cluster,
        flow_stopped: sources.is_empty(),
        topics,
        records_at_risk,
    }))
}
