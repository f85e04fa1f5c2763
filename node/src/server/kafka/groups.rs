//! Consumer groups for Kafka clients: the classic protocol's JoinGroup, SyncGroup, Heartbeat
//! and LeaveGroup on the node's coordinator (`crate::groups`), and OffsetCommit, OffsetFetch,
//! DescribeGroups and ListGroups through the request service, so a group's committed offsets
//! are the same whichever front door committed them (and travel in mirror checkpoints).

use std::time::Instant;
use strait_protocol::kafka::kafka_protocol;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::message::CommittedOffset;
use strait_protocol::{ErrorCode, Request, Response, WireError};

use super::dispatch::Ctx;
use super::errors::{self, About};
use super::str_bytes;
use crate::groups::KafkaJoin;

/// Kafka's code for a group error (INCONSISTENT_GROUP_PROTOCOL has no native twin in
/// `errors::code`).
fn group_code(e: &WireError) -> i16 {
    if e.code == ErrorCode::INCONSISTENT_GROUP_PROTOCOL {
        return ResponseError::InconsistentGroupProtocol.code();
    }
    errors::code(e, About::Group)
}

/// Runs a coordinator call after the same ACL check the native path makes, and counts it.
async fn counted<T>(
    ctx: &Ctx<'_>,
    kind: &'static str,
    group: &str,
    op: Operation,
    call: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    let started = Instant::now();
    let result = match ctx
        .service
        .check(ctx.session, op, ResourceKind::Group, group)
    {
        Ok(()) => call.await,
        Err(e) => Err(e),
    };
    ctx.service
        .metrics()
        .request(kind, result.is_ok(), started.elapsed());
    result
}

pub(super) async fn join(ctx: &Ctx<'_>, request: JoinGroupRequest) -> JoinGroupResponse {
    let group = request.group_id.0.as_str().to_string();
    let join = KafkaJoin {
        group: group.clone(),
        member_id: request.member_id.as_str().to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version() >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.as_str().to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata))
            .collect(),
        client_id: ctx.header.client_id.clone(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    let coordinator = ctx.service.groups();
    let principal = ctx.session.principal().to_string();
    let joined = counted(
        ctx,
        "kafka_join_group",
        &group,
        Operation::Group,
        coordinator.kafka_join(join, &principal),
    )
    .await;
    match joined {
        Ok(j) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type((ctx.version() >= 7).then(|| str_bytes(j.protocol_type)))
            .with_protocol_name(Some(str_bytes(j.protocol_name)))
            .with_leader(str_bytes(j.leader))
            .with_member_id(str_bytes(j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(e) => JoinGroupResponse::default()
            .with_error_code(group_code(&e))
            .with_generation_id(-1)
            .with_member_id(request.member_id),
    }
}

pub(super) async fn sync(ctx: &Ctx<'_>, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.as_str().to_string();
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment))
        .collect();
    let coordinator = ctx.service.groups();
    let synced = counted(
        ctx,
        "kafka_sync_group",
        &group,
        Operation::Group,
        coordinator.kafka_sync(
            &group,
            request.member_id.as_str(),
            request.generation_id,
            assignments,
        ),
    )
    .await;
    match synced {
        Ok((protocol_type, protocol_name, assignment)) => {
            let v5 = ctx.version() >= 5;
            SyncGroupResponse::default()
                .with_protocol_type(v5.then(|| str_bytes(protocol_type)))
                .with_protocol_name(v5.then(|| str_bytes(protocol_name)))
                .with_assignment(assignment)
        }
        Err(e) => SyncGroupResponse::default().with_error_code(group_code(&e)),
    }
}

pub(super) async fn heartbeat(ctx: &Ctx<'_>, request: HeartbeatRequest) -> HeartbeatResponse {
    let request = Request::Heartbeat {
        group: request.group_id.0.as_str().to_string(),
        member_id: request.member_id.as_str().to_string(),
        generation: request.generation_id,
    };
    match ctx.service.handle(ctx.session, request, Bytes::new()).await {
        Ok(_) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(group_code(&e)),
    }
}

pub(super) async fn leave(ctx: &Ctx<'_>, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.0.as_str().to_string();
    let ids: Vec<StrBytes> = if ctx.version() >= 3 {
        request.members.into_iter().map(|m| m.member_id).collect()
    } else {
        vec![request.member_id]
    };
    let mut answer = LeaveGroupResponse::default();
    for id in ids {
        let leave = Request::LeaveGroup {
            group: group.clone(),
            member_id: id.as_str().to_string(),
        };
        let code = match ctx.service.handle(ctx.session, leave, Bytes::new()).await {
            Ok(_) => 0,
            Err(e) => group_code(&e),
        };
        if ctx.version() < 3 {
            answer.error_code = code;
        } else {
            answer.members.push(
                MemberResponse::default()
                    .with_member_id(id)
                    .with_error_code(code),
            );
        }
    }
    answer
}

pub(super) async fn offset_commit(
    ctx: &Ctx<'_>,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_string();
    let mut offsets = Vec::new();
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    let mut invalid = Vec::new();
    for t in &request.topics {
        let mut answer = OffsetCommitResponseTopic::default().with_name(t.name.clone());
        for p in &t.partitions {
            match (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                (Ok(partition), Ok(offset)) => offsets.push(CommittedOffset {
                    topic: t.name.0.as_str().to_string(),
                    partition,
                    offset,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                }),
                _ => invalid.push((t.name.0.as_str().to_string(), p.partition_index)),
            }
            answer.partitions.push(
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index),
            );
        }
        topics.push(answer);
    }
    let commit = Request::CommitOffsets {
        group,
        member_id: request.member_id.as_str().to_string(),
        generation: request.generation_id_or_member_epoch,
        offsets,
    };
    let outcome = ctx.service.handle(ctx.session, commit, Bytes::new()).await;
    for t in &mut topics {
        for p in &mut t.partitions {
            p.error_code = if invalid
                .iter()
                .any(|(n, i)| n == t.name.0.as_str() && *i == p.partition_index)
            {
                ResponseError::InvalidCommitOffsetSize.code()
            } else {
                match &outcome {
                    Ok(_) => 0,
                    Err(e)
                        if e.code == ErrorCode::UNAUTHORIZED
                            && !ctx.service.may(
                                ctx.session,
                                Operation::Group,
                                ResourceKind::Group,
                                request.group_id.0.as_str(),
                            ) =>
                    {
                        ResponseError::GroupAuthorizationFailed.code()
                    }
                    Err(e) if e.code == ErrorCode::UNAUTHORIZED => {
                        ResponseError::TopicAuthorizationFailed.code()
                    }
                    Err(e) => group_code(e),
                }
            };
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

pub(super) async fn offset_fetch(
    ctx: &Ctx<'_>,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let group = request.group_id.0.as_str().to_string();
    let wanted: Option<Vec<(String, u32)>> = request.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes.iter().filter_map(|p| {
                    u32::try_from(*p)
                        .ok()
                        .map(|p| (t.name.0.as_str().to_string(), p))
                })
            })
            .collect()
    });
    let fetch = Request::FetchOffsets {
        group,
        partitions: wanted.clone(),
    };
    let committed = match ctx.service.handle(ctx.session, fetch, Bytes::new()).await {
        Ok((Response::CommittedOffsets(c), _)) => c,
        Ok(_) => Vec::new(),
        Err(e) => {
            // Before v2 the answer has no top-level error: each partition carries it.
            let code = group_code(&e);
            if ctx.version() >= 2 {
                return OffsetFetchResponse::default().with_error_code(code);
            }
            return OffsetFetchResponse::default();
        }
    };
    let found = |topic: &str, partition: u32| {
        committed
            .iter()
            .find(|c| c.topic == topic && c.partition == partition)
    };
    let entry = |partition: i32, c: Option<&CommittedOffset>| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(c.map_or(-1, |c| c.offset as i64))
            .with_metadata(Some(str_bytes(
                c.map(|c| c.metadata.clone()).unwrap_or_default(),
            )))
    };
    let topics = match request.topics {
        Some(ts) => ts
            .into_iter()
            .map(|t| {
                let name = t.name.0.as_str().to_string();
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| entry(*p, u32::try_from(*p).ok().and_then(|id| found(&name, id))))
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<
                String,
                Vec<OffsetFetchResponsePartition>,
            > = Default::default();
            for c in &committed {
                by_topic
                    .entry(c.topic.clone())
                    .or_default()
                    .push(entry(c.partition as i32, Some(c)));
            }
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(str_bytes(name).into())
                        .with_partitions(partitions)
                })
                .collect()
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}

/// Kafka's name of a group state.
fn kafka_state(state: &str) -> &'static str {
    match state {
        "empty" => "Empty",
        "preparing_rebalance" => "PreparingRebalance",
        "completing_rebalance" => "CompletingRebalance",
        "stable" => "Stable",
        _ => "Dead",
    }
}

pub(super) async fn describe_groups(
    ctx: &Ctx<'_>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let coordinator = ctx.service.groups();
    let mut groups = Vec::with_capacity(request.groups.len());
    for id in request.groups {
        let name = id.0.as_str().to_string();
        let mut described = DescribedGroup::default().with_group_id(id);
        let describe = Request::DescribeGroup {
            group: name.clone(),
        };
        match ctx
            .service
            .handle(ctx.session, describe, Bytes::new())
            .await
        {
            Ok((Response::GroupDescription(d), _)) => {
                described.group_state = str_bytes(kafka_state(&d.state));
                match coordinator.kafka_describe(&name) {
                    Some((protocol_type, protocol, members)) => {
                        described.protocol_type = str_bytes(protocol_type);
                        described.protocol_data = str_bytes(protocol);
                        described.members = members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect();
                    }
                    None => {
                        // A group of Strait consumers (or one with only committed offsets).
                        described.protocol_type = str_bytes("consumer");
                        described.protocol_data = str_bytes(d.assignor);
                        described.members = d
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_client_id(str_bytes(m.principal))
                            })
                            .collect();
                    }
                }
            }
            Ok(_) => described.error_code = ResponseError::UnknownServerError.code(),
            // Kafka describes an unknown group as Dead, without an error.
            Err(e) if e.code == ErrorCode::UNKNOWN_GROUP => {
                described.group_state = str_bytes("Dead");
            }
            Err(e) => described.error_code = group_code(&e),
        }
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn list_groups(ctx: &Ctx<'_>, request: ListGroupsRequest) -> ListGroupsResponse {
    let listed = match ctx
        .service
        .handle(ctx.session, Request::ListGroups {}, Bytes::new())
        .await
    {
        Ok((Response::Groups(g), _)) => g,
        Ok(_) => Vec::new(),
        Err(e) => return ListGroupsResponse::default().with_error_code(group_code(&e)),
    };
    let coordinator = ctx.service.groups();
    let groups = listed
        .into_iter()
        .map(|d| {
            let state = kafka_state(&d.state);
            let protocol_type = coordinator
                .kafka_describe(&d.group)
                .map(|(t, _, _)| t)
                .unwrap_or_else(|| "consumer".into());
            ListedGroup::default()
                .with_group_id(str_bytes(d.group).into())
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(if ctx.version() >= 4 { state } else { "" }))
        })
        .filter(|g| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(g.group_state.as_str()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
