//! Kafka's classic group protocol on the same coordinator: Kafka clients choose their
//! assignor themselves and the leader hands out partitions in its SyncGroup, so the
//! coordinator only gathers members, picks the protocol they all support, relays the leader's
//! assignment and fences stale generations. Committed offsets, session expiry, rebalance
//! timeouts and `strait group describe` are shared with Strait's own groups; a group is used
//! by one kind of client at a time.

use std::time::{Duration, Instant};
use strait_protocol::kafka::kafka_protocol;

use bytes::Bytes;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;
use strait_protocol::message::RebalanceProtocol;
use strait_protocol::{ErrorCode, WireError};
use tracing::info;

use super::SESSION_TIMEOUT_MS;
use super::{err, guard, validate_group, Group, GroupCoordinator, GroupState, Member};

/// A Kafka group's protocol: the type (`consumer` for consumers) and the protocol (assignor)
/// chosen in the last rebalance.
pub(super) struct KafkaGroup {
    protocol_type: String,
    protocol_name: String,
    /// The generation whose assignment the leader has sent (members wait for it).
    synced_generation: i32,
}

/// What one Kafka member sent.
pub(super) struct KafkaMember {
    client_id: String,
    client_host: String,
    /// Its protocols in its order of preference, with their metadata.
    protocols: Vec<(String, Bytes)>,
    /// What the leader assigned it this generation.
    assignment: Bytes,
}

/// A Kafka JoinGroup, decoded.
pub struct KafkaJoin {
    pub group: String,
    pub member_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a Kafka JoinGroup.
pub struct KafkaJoined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only the leader gets it.
    pub members: Vec<(String, Bytes)>,
}

/// A Kafka member as DescribeGroups shows it.
pub struct KafkaMemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The group's state under Kafka's names where Kafka has one more state (waiting for the
/// leader's assignment).
pub(super) fn state_name(g: &Group) -> &'static str {
    match (&g.kafka, g.state) {
        (Some(k), GroupState::Stable) if k.synced_generation != g.generation => {
            "completing_rebalance"
        }
        (_, state) => state.name(),
    }
}

/// Completes a Kafka group's join phase: the protocol every member supports (in the leader's
/// order of preference), the leader (kept if it rejoined), and no assignment until the
/// leader's SyncGroup.
pub(super) fn complete_join(g: &mut Group) {
    if !g.members.contains_key(&g.leader) {
        g.leader = g.members.keys().next().cloned().unwrap_or_default();
    }
    let chosen = g
        .members
        .get(&g.leader)
        .and_then(|leader| leader.kafka.as_ref())
        .and_then(|leader| {
            leader
                .protocols
                .iter()
                .map(|(name, _)| name)
                .find(|name| {
                    g.members.values().all(|m| {
                        m.kafka
                            .as_ref()
                            .is_some_and(|k| k.protocols.iter().any(|(n, _)| n == *name))
                    })
                })
                .cloned()
        })
        .unwrap_or_default();
    for m in g.members.values_mut() {
        m.assignment.clear();
        if let Some(k) = &mut m.kafka {
            k.assignment = Bytes::new();
        }
    }
    if let Some(k) = &mut g.kafka {
        k.protocol_name = chosen.clone();
    }
    g.assignor = chosen;
    g.state = GroupState::Stable;
}

/// A consumer-protocol message (a subscription or an assignment): a big-endian i16 version,
/// then the body at that version. None if the bytes are not one.
fn consumer_protocol<T: Decodable>(raw: &Bytes) -> Option<T> {
    let mut raw = raw.clone();
    if raw.len() < 2 {
        return None;
    }
    let version = bytes::Buf::get_i16(&mut raw);
    T::decode(&mut raw, version.clamp(0, 3)).ok()
}

/// The topics a consumer subscribes to, from its protocol metadata (empty if it is not
/// Kafka's consumer protocol).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    consumer_protocol::<ConsumerProtocolSubscription>(metadata)
        .map(|s| s.topics.iter().map(|t| t.as_str().to_string()).collect())
        .unwrap_or_default()
}

/// The partitions in a consumer protocol assignment (empty if it is not one).
fn assigned_partitions(assignment: &Bytes) -> Vec<(String, u32)> {
    consumer_protocol::<ConsumerProtocolAssignment>(assignment)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| {
                    let topic = tp.topic.0.as_str().to_string();
                    tp.partitions
                        .iter()
                        .filter_map(move |p| u32::try_from(*p).ok().map(|p| (topic.clone(), p)))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl GroupCoordinator {
    /// Joins a Kafka member; waits until the join phase completes.
    pub async fn kafka_join(
        &self,
        req: KafkaJoin,
        principal: &str,
    ) -> Result<KafkaJoined, WireError> {
        validate_group(&req.group)?;
        let session_ms = u32::try_from(req.session_timeout_ms).unwrap_or(0);
        if !SESSION_TIMEOUT_MS.contains(&session_ms) {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "session timeout {} ms is outside 1000..=300000",
                    req.session_timeout_ms
                ),
            ));
        }
        let rebalance_ms = u32::try_from(req.rebalance_timeout_ms).unwrap_or(session_ms);
        let rebalance_max = self.settings.rebalance_timeout_ms_max;
        if rebalance_ms > rebalance_max {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "rebalance timeout {rebalance_ms} ms is above this node's maximum of {rebalance_max} ms ([groups] rebalance_timeout_ms_max); ask for less"
                ),
            ));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(err(
                ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                "a member must name its protocol type and at least one protocol",
            ));
        }
        let (member_id, notify, target_generation) = {
            let mut groups = guard(&self.groups);
            let g = groups
                .entry(req.group.clone())
                .or_insert_with(|| Group::new(RebalanceProtocol::Eager, ""));
            if g.members.is_empty() {
                g.kafka = Some(KafkaGroup {
                    protocol_type: req.protocol_type.clone(),
                    protocol_name: String::new(),
                    synced_generation: -1,
                });
            } else {
                let compatible = match &g.kafka {
                    None => false,
                    Some(k) => {
                        k.protocol_type == req.protocol_type
                            && req.protocols.iter().any(|(name, _)| {
                                g.members
                                    .iter()
                                    .filter(|(id, _)| **id != req.member_id)
                                    .all(|(_, m)| {
                                        m.kafka.as_ref().is_some_and(|mk| {
                                            mk.protocols.iter().any(|(n, _)| n == name)
                                        })
                                    })
                            })
                    }
                };
                if !compatible {
                    return Err(err(
                        ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                        format!(
                            "group {:?}: this member's protocols ({}) have none in common with the group's members (or the group is used by Strait consumers)",
                            req.group,
                            req.protocols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            let member_id = if req.member_id.is_empty() {
                let n = self
                    .next_member
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let client = if req.client_id.is_empty() {
                    principal
                } else {
                    &req.client_id
                };
                format!("{client}-{n:x}")
            } else if g.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return Err(err(
                    ErrorCode::UNKNOWN_MEMBER,
                    format!(
                        "member {:?} is not in group {:?} (its session expired); rejoin with an empty member id",
                        req.member_id, req.group
                    ),
                ));
            };
            let now = Instant::now();
            let topics = req
                .protocols
                .first()
                .map(|(_, meta)| subscribed_topics(meta))
                .unwrap_or_default();
            let member = Member {
                principal: principal.into(),
                kafka: Some(KafkaMember {
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    protocols: req.protocols.clone(),
                    assignment: Bytes::new(),
                }),
                topics,
                owned: Vec::new(),
                session_timeout: Duration::from_millis(u64::from(session_ms)),
                rebalance_timeout: Duration::from_millis(u64::from(rebalance_ms.max(1000))),
                last_seen: now,
                assignment: Vec::new(),
            };
            self.admit(g, member_id, member, false)
        };
        self.joined(&req.group, &member_id, notify, target_generation, |g| {
            let k = g.kafka.as_ref();
            let protocol_name = k.map(|k| k.protocol_name.clone()).unwrap_or_default();
            // Only the leader is told every member's metadata for the chosen protocol.
            let members = if g.leader == member_id {
                g.members
                    .iter()
                    .map(|(id, m)| {
                        let meta = m
                            .kafka
                            .as_ref()
                            .and_then(|mk| mk.protocols.iter().find(|(n, _)| *n == protocol_name))
                            .map(|(_, meta)| meta.clone())
                            .unwrap_or_default();
                        (id.clone(), meta)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            KafkaJoined {
                generation: g.generation,
                protocol_type: k.map(|k| k.protocol_type.clone()).unwrap_or_default(),
                protocol_name,
                leader: g.leader.clone(),
                member_id: member_id.clone(),
                members,
            }
        })
        .await
    }

    /// A Kafka SyncGroup: the leader's carries every member's assignment; each member gets
    /// its own once the leader's has arrived (or an error if the generation ends first).
    pub async fn kafka_sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<(String, String, Bytes), WireError> {
        let (notify, wait) = self.with_member(group, member_id, generation, |g| {
            let wait = g
                .members
                .get(member_id)
                .map(|m| m.session_timeout)
                .unwrap_or(Duration::from_secs(10));
            if g.leader == member_id {
                for (id, assignment) in assignments {
                    if let Some(m) = g.members.get_mut(&id) {
                        m.assignment = assigned_partitions(&assignment);
                        if let Some(k) = &mut m.kafka {
                            k.assignment = assignment;
                        }
                    }
                }
                if let Some(k) = &mut g.kafka {
                    k.synced_generation = g.generation;
                }
                info!(group, generation = g.generation, protocol = %g.assignor, members = g.members.len(), "Kafka group assigned by its leader");
                g.completed.notify_waiters();
            }
            (g.completed.clone(), wait)
        })?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = notify.notified();
            {
                let groups = guard(&self.groups);
                let g = groups.get(group).ok_or_else(|| {
                    err(
                        ErrorCode::UNKNOWN_GROUP,
                        format!("group {group:?} has no members"),
                    )
                })?;
                if g.state == GroupState::PreparingRebalance {
                    return Err(err(
                        ErrorCode::REBALANCE_IN_PROGRESS,
                        format!("group {group:?} is rebalancing again; rejoin"),
                    ));
                }
                if g.generation != generation {
                    return Err(err(
                        ErrorCode::ILLEGAL_GENERATION,
                        format!("generation {generation} of group {group:?} is over; rejoin"),
                    ));
                }
                let Some(m) = g.members.get(member_id) else {
                    return Err(err(
                        ErrorCode::UNKNOWN_MEMBER,
                        "no longer in the group; rejoin",
                    ));
                };
                let k = g.kafka.as_ref();
                if k.is_some_and(|k| k.synced_generation == generation) {
                    let assignment = m
                        .kafka
                        .as_ref()
                        .map(|mk| mk.assignment.clone())
                        .unwrap_or_default();
                    let k = k.expect("checked above");
                    return Ok((k.protocol_type.clone(), k.protocol_name.clone(), assignment));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(err(
                    ErrorCode::REBALANCE_IN_PROGRESS,
                    format!("the leader of group {group:?} sent no assignment in time; rejoin"),
                ));
            }
        }
    }

    /// A Kafka group's protocol type and members as DescribeGroups shows them; None for a
    /// group of Strait consumers or an unknown group.
    pub fn kafka_describe(&self, group: &str) -> Option<(String, String, Vec<KafkaMemberView>)> {
        let groups = guard(&self.groups);
        let g = groups.get(group)?;
        let k = g.kafka.as_ref()?;
        let members = g
            .members
            .iter()
            .filter_map(|(id, m)| {
                let mk = m.kafka.as_ref()?;
                Some(KafkaMemberView {
                    member_id: id.clone(),
                    client_id: mk.client_id.clone(),
                    client_host: mk.client_host.clone(),
                    metadata: mk
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == k.protocol_name)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    assignment: mk.assignment.clone(),
                })
            })
            .collect();
        Some((k.protocol_type.clone(), k.protocol_name.clone(), members))
    }
}
