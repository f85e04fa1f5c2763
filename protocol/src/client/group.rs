//! Group membership for the consumer: a background task joins, syncs and heartbeats; the
//! consumer applies what it decides inside `poll`, where rebalance callbacks run.
//!
//! Eager: when a rebalance starts, the task asks `poll` to revoke everything (commit, callback)
//! and waits for it before rejoining. Cooperative: the task rejoins at once, naming what it
//! owns, and the consumer keeps fetching those partitions meanwhile; partitions that must move
//! are revoked after the new assignment arrives, followed by one more join that hands them on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::conn::{Client, ClientError};
use crate::error::ErrorCode;
use crate::message::{JoinGroup, RebalanceProtocol, Request, Response};

/// A topic-partition.
pub type TopicPartition = (String, u32);

/// How a consumer takes part in a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    pub protocol: RebalanceProtocol,
    /// `range`, `roundrobin` or `sticky`.
    pub assignor: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// Commit positions this often from `poll`; None for manual commits only.
    pub auto_commit_interval_ms: Option<u64>,
    /// How often a pattern subscription looks for new matching topics.
    pub topic_refresh_ms: u64,
}

/// What a member consumes: named topics, or every topic whose name matches a pattern (new
/// matching topics are picked up within `topic_refresh_ms`).
#[derive(Debug, Clone)]
pub enum Subscription {
    Topics(Vec<String>),
    Pattern(regex::Regex),
}

impl GroupConfig {
    pub fn new(group: &str) -> Self {
        GroupConfig {
            group: group.into(),
            protocol: RebalanceProtocol::Eager,
            assignor: "range".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            heartbeat_interval_ms: 1_000,
            auto_commit_interval_ms: Some(5_000),
            topic_refresh_ms: 5_000,
        }
    }

    /// Cooperative incremental rebalancing with the sticky assignor.
    pub fn cooperative(mut self) -> Self {
        self.protocol = RebalanceProtocol::Cooperative;
        self.assignor = "sticky".into();
        self
    }
}

/// What a rebalance did to this consumer, passed to the rebalance listener.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    /// Given up in an orderly way; positions were committed first when auto-commit is on.
    Revoked(Vec<TopicPartition>),
    /// Taken away without a chance to commit (this member was fenced or expired).
    Lost(Vec<TopicPartition>),
}

/// Messages from the membership task to the consumer.
pub(crate) enum ToConsumer {
    Assigned {
        generation: i32,
        member_id: String,
        assignment: Vec<TopicPartition>,
    },
    /// Eager rebalance: revoke everything, then answer.
    RevokeAll(oneshot::Sender<()>),
    Lost,
}

/// The consumer's side of the membership.
pub(crate) struct Membership {
    pub config: GroupConfig,
    pub events: mpsc::UnboundedReceiver<ToConsumer>,
    pub rejoin: mpsc::UnboundedSender<()>,
    pub member_id: String,
    pub generation: i32,
    pub task: tokio::task::JoinHandle<()>,
    pub last_commit: std::time::Instant,
    pub assigned_once: bool,
    /// Set by the task when it learns of a rebalance, cleared when the new assignment is applied.
    pub rebalancing: Arc<AtomicBool>,
}

impl Membership {
    pub(crate) fn auto_commit_interval_ms_elapsed(&self) -> bool {
        self.generation >= 0
            && self
                .config
                .auto_commit_interval_ms
                .is_some_and(|ms| self.last_commit.elapsed() >= Duration::from_millis(ms))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Dropped without `close`: no leave is sent, so the group notices by session timeout,
        // as with a crashed process.
        self.task.abort();
    }
}

pub(crate) fn start(client: Arc<Client>, config: GroupConfig, topics: Subscription) -> Membership {
    let (to_consumer, events) = mpsc::unbounded_channel();
    let (rejoin, rejoin_rx) = mpsc::unbounded_channel();
    let rebalancing = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(run(
        client,
        config.clone(),
        topics,
        to_consumer,
        rejoin_rx,
        rebalancing.clone(),
    ));
    Membership {
        config,
        events,
        rejoin,
        member_id: String::new(),
        generation: -1,
        task,
        last_commit: std::time::Instant::now(),
        assigned_once: false,
        rebalancing,
    }
}

async fn run(
    client: Arc<Client>,
    config: GroupConfig,
    subscription: Subscription,
    to_consumer: mpsc::UnboundedSender<ToConsumer>,
    mut rejoin: mpsc::UnboundedReceiver<()>,
    rebalancing: Arc<AtomicBool>,
) {
    let mut member_id = String::new();
    let mut owned: Vec<TopicPartition> = Vec::new();
    let heartbeat = Duration::from_millis(u64::from(config.heartbeat_interval_ms.max(10)));
    let refresh = Duration::from_millis(config.topic_refresh_ms.max(100));
    loop {
        let topics = match resolve(&client, &subscription).await {
            Ok(t) => t,
            Err(e) => {
                warn!(group = %config.group, error = %e, "cannot list topics for the subscription; retrying");
                tokio::time::sleep(heartbeat).await;
                continue;
            }
        };
        let mut last_refresh = tokio::time::Instant::now();
        let join = JoinGroup {
            group: config.group.clone(),
            member_id: member_id.clone(),
            topics: topics.clone(),
            session_timeout_ms: config.session_timeout_ms,
            rebalance_timeout_ms: config.rebalance_timeout_ms,
            protocol: config.protocol,
            assignor: config.assignor.clone(),
            owned: if config.protocol == RebalanceProtocol::Cooperative {
                owned.clone()
            } else {
                Vec::new()
            },
        };
        let generation = match client.call(&Request::JoinGroup(join), &[]).await {
            Ok((
                Response::Joined {
                    generation,
                    member_id: id,
                    ..
                },
                _,
            )) => {
                member_id = id;
                generation
            }
            Ok(_) => return,
            Err(e) => {
                if e.code() == Some(ErrorCode::UNKNOWN_MEMBER) {
                    member_id.clear();
                }
                warn!(group = %config.group, error = %e, "join failed; retrying");
                tokio::time::sleep(heartbeat).await;
                continue;
            }
        };
        let sync = Request::SyncGroup {
            group: config.group.clone(),
            member_id: member_id.clone(),
            generation,
        };
        match client.call(&sync, &[]).await {
            Ok((Response::Synced { assignment }, _)) => {
                owned = assignment.clone();
                debug!(group = %config.group, generation, ?assignment, "assigned");
                let msg = ToConsumer::Assigned {
                    generation,
                    member_id: member_id.clone(),
                    assignment,
                };
                if to_consumer.send(msg).is_err() {
                    return;
                }
            }
            Ok(_) => return,
            Err(_) => continue,
        }
        // Heartbeat until something asks for a new join.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(heartbeat) => {}
                asked = rejoin.recv() => {
                    if asked.is_none() { return; }
                    rebalancing.store(true, Ordering::Release);
                    break;
                }
            }
            if matches!(subscription, Subscription::Pattern(_)) && last_refresh.elapsed() >= refresh
            {
                last_refresh = tokio::time::Instant::now();
                if resolve(&client, &subscription)
                    .await
                    .is_ok_and(|now| now != topics)
                {
                    debug!(group = %config.group, "the pattern matches other topics now; rejoining");
                    if !prepare_rejoin(config.protocol, &to_consumer, &rebalancing, &mut owned)
                        .await
                    {
                        return;
                    }
                    break;
                }
            }
            let hb = Request::Heartbeat {
                group: config.group.clone(),
                member_id: member_id.clone(),
                generation,
            };
            match client.call(&hb, &[]).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::REBALANCE_IN_PROGRESS) => {
                    if !prepare_rejoin(config.protocol, &to_consumer, &rebalancing, &mut owned)
                        .await
                    {
                        return;
                    }
                    break;
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::ILLEGAL_GENERATION | ErrorCode::UNKNOWN_MEMBER)
                    ) =>
                {
                    warn!(group = %config.group, error = %e, "lost group membership; rejoining");
                    if e.code() == Some(ErrorCode::UNKNOWN_MEMBER) {
                        member_id.clear();
                    }
                    owned.clear();
                    if to_consumer.send(ToConsumer::Lost).is_err() {
                        return;
                    }
                    break;
                }
                Err(e) => debug!(group = %config.group, error = %e, "heartbeat failed; retrying"),
            }
        }
    }
}

/// Gets ready to rejoin: eager members have the consumer revoke everything first (and wait for
/// it); cooperative members keep what they own and only flag the rebalance. False when the
/// consumer is gone.
async fn prepare_rejoin(
    protocol: RebalanceProtocol,
    to_consumer: &mpsc::UnboundedSender<ToConsumer>,
    rebalancing: &AtomicBool,
    owned: &mut Vec<TopicPartition>,
) -> bool {
    if protocol == RebalanceProtocol::Eager {
        let (ack, done) = oneshot::channel();
        if to_consumer.send(ToConsumer::RevokeAll(ack)).is_err() {
            return false;
        }
        let _ = done.await;
        owned.clear();
    } else {
        rebalancing.store(true, Ordering::Release);
    }
    true
}

/// The topic names a subscription stands for now.
async fn resolve(client: &Client, subscription: &Subscription) -> Result<Vec<String>, ClientError> {
    match subscription {
        Subscription::Topics(t) => Ok(t.clone()),
        Subscription::Pattern(re) => {
            let meta = match client
                .call(&Request::Metadata { topics: None }, &[])
                .await?
                .0
            {
                Response::Metadata(m) => m,
                other => return Err(super::conn::unexpected("metadata", other)),
            };
            let mut names: Vec<String> = meta
                .topics
                .into_iter()
                .map(|t| t.name)
                .filter(|n| re.is_match(n))
                .collect();
            names.sort();
            Ok(names)
        }
    }
}

/// Sends a leave for a member (used by `Consumer::close`).
pub(crate) async fn leave(
    client: &Client,
    group: &str,
    member_id: &str,
) -> Result<(), ClientError> {
    if member_id.is_empty() {
        return Ok(());
    }
    client
        .call(
            &Request::LeaveGroup {
                group: group.into(),
                member_id: member_id.into(),
            },
            &[],
        )
        .await
        .map(|_| ())
}
