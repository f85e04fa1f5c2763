//! Consumer groups: the coordinator (join, sync, heartbeat, leave, session expiry), server-side
//! assignors, and committed offsets kept in the compacted internal topic `__consumer_offsets`.
//!
//! Generations fence stale members: a heartbeat or commit carrying an old generation is refused
//! with `illegal_generation`. Commits are appended to `__consumer_offsets` (flush = always) before
//! they are acknowledged, and the map is rebuilt from that topic when the node starts.
//!
//! Nothing a peer creates here lives forever: a group with no members is forgotten after a
//! minute, and its committed offsets once it has had no member and no commit for
//! `offsets.retention.minutes` (Kafka's default, 7 days); they are then deleted with tombstones
//! that compaction removes. A member may not ask for a rebalance timeout past
//! `rebalance_timeout_ms_max` (Kafka's `group.max.session.timeout.ms`, 30 minutes), so no
//! member can hold a rebalance open indefinitely.

pub mod assign;
mod kafka;

pub use kafka::{KafkaJoin, KafkaJoined, KafkaMemberView};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strait_protocol::batch::split_batches;
use strait_protocol::message::{
    CommittedOffset, GroupDescription, GroupMember, JoinGroup, RebalanceProtocol,
};
use strait_protocol::{BatchBuilder, Compression, ErrorCode, WireError};
use tokio::sync::Notify;
use tracing::info;

use crate::broker::{Broker, Partition};
use assign::{MemberView, TopicPartition};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How long a new group waits for more members before its first assignment.
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(300);
/// Bounds on the timeouts a member may ask for.
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<u32> = 1_000..=300_000;
/// How long a group with no members is kept in memory (its offsets stay, see the module doc).
const EMPTY_GROUP_LINGER: Duration = Duration::from_secs(60);
/// How often expired offsets are looked for.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// `[groups]` of a node config.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSettings {
    /// Committed offsets of a group with no member and no commit for this long are deleted.
    #[serde(rename = "offsets.retention.minutes")]
    pub offsets_retention_minutes: u64,
    /// The same in milliseconds, when set (finer; used by tests).
    #[serde(rename = "offsets.retention.ms")]
    pub offsets_retention_ms: Option<u64>,
    /// The longest rebalance timeout a member may ask for.
    pub rebalance_timeout_ms_max: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_ms: None,
            rebalance_timeout_ms_max: 1_800_000,
        }
    }
}

impl GroupSettings {
    fn offsets_retention(&self) -> Duration {
        Duration::from_millis(
            self.offsets_retention_ms
                .unwrap_or(self.offsets_retention_minutes.saturating_mul(60_000)),
        )
    }
}
const GROUP_NAME_LEN_MAX: usize = 249;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupState {
    Empty,
    PreparingRebalance,
    Stable,
}

impl GroupState {
    fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::PreparingRebalance => "preparing_rebalance",
            GroupState::Stable => "stable",
        }
    }
}

struct Member {
    principal: String,
    /// What a Kafka client sent (its protocols' metadata, the leader's assignment for it);
    /// None for Strait's own members, which the coordinator assigns itself.
    kafka: Option<kafka::KafkaMember>,
    topics: Vec<String>,
    owned: Vec<TopicPartition>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    assignment: Vec<TopicPartition>,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol: RebalanceProtocol,
    assignor: String,
    members: BTreeMap<String, Member>,
    leader: String,
    /// Members that have (re)joined in the current rebalance.
    joined: BTreeSet<String>,
    /// No completion before this (lets a new group gather its members).
    earliest_completion: Instant,
    /// Members that did not rejoin by this are removed.
    deadline: Instant,
    completed: Arc<Notify>,
    /// Since when the group has had no member (None while it has some).
    empty_since: Option<Instant>,
    /// Set while the group's members are Kafka clients (they assign partitions themselves,
    /// through the leader's SyncGroup).
    kafka: Option<kafka::KafkaGroup>,
}

impl Group {
    fn new(protocol: RebalanceProtocol, assignor: &str) -> Group {
        let now = Instant::now();
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol,
            assignor: assignor.into(),
            members: BTreeMap::new(),
            leader: String::new(),
            joined: BTreeSet::new(),
            earliest_completion: now,
            deadline: now,
            completed: Arc::new(Notify::new()),
            empty_since: None,
            kafka: None,
        }
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.joined.clear();
        // Members waiting for their assignment (Kafka SyncGroup) learn the generation is over.
        self.completed.notify_waiters();
        self.earliest_completion = if was_empty {
            now + INITIAL_REBALANCE_DELAY
        } else {
            now
        };
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30));
        self.deadline = now + longest;
    }
}

#[derive(Serialize, Deserialize)]
struct CommitValue {
    offset: u64,
    metadata: String,
    commit_ms: i64,
}

/// The group coordinator of this node.
pub struct GroupCoordinator {
    broker: Arc<Broker>,
    offsets_log: Arc<Partition>,
    groups: Mutex<HashMap<String, Group>>,
    committed: Mutex<HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>>,
    /// When each group with offsets last had a member or a commit (ms since the epoch).
    active_ms: Mutex<HashMap<String, i64>>,
    next_member: std::sync::atomic::AtomicU64,
    settings: GroupSettings,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

impl GroupCoordinator {
    /// Opens the coordinator, creating `__consumer_offsets` if needed and loading its contents.
    pub fn open(
        broker: Arc<Broker>,
        settings: GroupSettings,
    ) -> anyhow::Result<Arc<GroupCoordinator>> {
        let topic = match broker.topic(OFFSETS_TOPIC) {
            Ok(t) => t,
            Err(_) => {
                let settings = [
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("flush".to_string(), "always".to_string()),
                ];
                broker
                    .create_topic(OFFSETS_TOPIC, 1, &settings)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        let offsets_log = topic.partitions[0].clone();
        let (committed, active_ms) = load_commits(&offsets_log)?;
        let groups = committed.len();
        let coordinator = Arc::new(GroupCoordinator {
            broker,
            offsets_log,
            groups: Mutex::new(HashMap::new()),
            committed: Mutex::new(committed),
            active_ms: Mutex::new(active_ms),
            next_member: std::sync::atomic::AtomicU64::new(crate::now_ms() as u64),
            settings,
        });
        info!(
            groups_with_offsets = groups,
            "group coordinator loaded committed offsets"
        );
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            let mut last_expiry = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let Some(c) = weak.upgrade() else { return };
                let now = Instant::now();
                c.tick(now);
                if now.duration_since(last_expiry) >= EXPIRY_CHECK {
                    last_expiry = now;
                    c.expire_offsets(crate::now_ms());
                }
            }
        });
        Ok(coordinator)
    }

    /// Expires silent members and completes rebalances whose time has come.
    fn tick(&self, now: Instant) {
        let mut groups = guard(&self.groups);
        for (name, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(id, m)| {
                    now.duration_since(m.last_seen) > m.session_timeout && !g.joined.contains(*id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                info!(group = %name, member = %id, "member's session expired; rebalancing");
                g.members.remove(&id);
                g.start_rebalance(now);
            }
            self.try_complete(g, now);
            if g.members.is_empty() {
                g.empty_since.get_or_insert(now);
            } else {
                g.empty_since = None;
            }
        }
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.empty_since
                    .is_some_and(|t| now.duration_since(t) >= EMPTY_GROUP_LINGER))
        });
    }

    /// Deletes the committed offsets of groups with no member and no commit for the
    /// retention: forgotten at once, tombstoned in `__consumer_offsets` on a blocking thread.
    fn expire_offsets(&self, now_ms: i64) {
        let retention_ms = self.settings.offsets_retention().as_millis() as i64;
        let live: BTreeSet<String> = guard(&self.groups)
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        let mut active = guard(&self.active_ms);
        for name in &live {
            active.insert(name.clone(), now_ms);
        }
        let expired: Vec<String> = active
            .iter()
            .filter(|(name, at)| !live.contains(*name) && now_ms - **at > retention_ms)
            .map(|(name, _)| name.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut committed = guard(&self.committed);
        let mut tombstones = BatchBuilder::new(Compression::None);
        for name in &expired {
            active.remove(name);
            for (topic, partition) in committed.remove(name).unwrap_or_default().into_keys() {
                tombstones.push(
                    now_ms,
                    Some(&commit_key(name, &topic, partition)),
                    None,
                    &[],
                );
            }
            info!(group = %name, retention_ms, "group had no member and no commit for the offsets retention; its committed offsets are deleted");
        }
        if tombstones.is_empty() {
            return;
        }
        let log = self.offsets_log.clone();
        let batch = tombstones.finish();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = log.log.append(batch, crate::now_ms()) {
                tracing::warn!(error = %e, "could not write the tombstones of expired group offsets; they come back after a restart and expire again");
            }
            log.grown.send_replace(log.log.high_watermark().0);
        });
    }

    fn try_complete(&self, g: &mut Group, now: Instant) {
        if g.state != GroupState::PreparingRebalance || now < g.earliest_completion {
            return;
        }
        let all_joined = g.members.keys().all(|m| g.joined.contains(m));
        if !all_joined && now < g.deadline {
            return;
        }
        g.members.retain(|id, _| g.joined.contains(id));
        g.generation += 1;
        if g.members.is_empty() {
            g.state = GroupState::Empty;
        } else if g.kafka.is_some() {
            kafka::complete_join(g);
        } else {
            let views: BTreeMap<String, MemberView> = g
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        MemberView {
                            topics: m.topics.clone(),
                            owned: m.owned.clone(),
                        },
                    )
                })
                .collect();
            let topics: BTreeSet<&String> =
                g.members.values().flat_map(|m| m.topics.iter()).collect();
            let partitions: BTreeMap<String, u32> = topics
                .into_iter()
                .filter_map(|t| {
                    self.broker
                        .topic(t)
                        .ok()
                        .map(|tp| (t.clone(), tp.partitions.len() as u32))
                })
                .collect();
            let target = assign::assign(&g.assignor, g.protocol, &views, &partitions);
            for (id, m) in g.members.iter_mut() {
                m.assignment = target.get(id).cloned().unwrap_or_default();
            }
            g.leader = g.members.keys().next().cloned().unwrap_or_default();
            g.state = GroupState::Stable;
        }
        g.joined.clear();
        g.completed.notify_waiters();
    }

    /// Joins a member; waits until the rebalance's join phase completes.
    pub async fn join(
        &self,
        req: JoinGroup,
        principal: &str,
    ) -> Result<(i32, String, String, Vec<String>), WireError> {
        validate_group(&req.group)?;
        let rebalance_max = self.settings.rebalance_timeout_ms_max;
        if req.rebalance_timeout_ms > rebalance_max {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "rebalance timeout {} ms is above this node's maximum of {rebalance_max} ms ([groups] rebalance_timeout_ms_max); ask for less",
                    req.rebalance_timeout_ms
                ),
            ));
        }
        if !SESSION_TIMEOUT_MS.contains(&req.session_timeout_ms) {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "session timeout {} ms is outside 1000..=300000",
                    req.session_timeout_ms
                ),
            ));
        }
        let (member_id, notify, target_generation) = {
            let mut groups = guard(&self.groups);
            let g = groups
                .entry(req.group.clone())
                .or_insert_with(|| Group::new(req.protocol, &req.assignor));
            if g.members.is_empty() {
                g.protocol = req.protocol;
                g.assignor = req.assignor.clone();
                g.kafka = None;
            } else if g.kafka.is_some() {
                return Err(err(
                    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                    format!(
                        "group {:?} is in use by Kafka clients; a Strait consumer cannot join it (use another group name)",
                        req.group
                    ),
                ));
            } else if g.protocol != req.protocol {
                return Err(err(
                    ErrorCode::INVALID_REQUEST,
                    format!(
                        "group {:?} uses the {:?} protocol; this member asked for {:?}",
                        req.group, g.protocol, req.protocol
                    ),
                ));
            }
            let member_id = if req.member_id.is_empty() {
                let n = self
                    .next_member
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{principal}-{n:x}")
            } else if g.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return Err(err(ErrorCode::UNKNOWN_MEMBER, format!(
                    "member {:?} is not in group {:?} (its session expired); rejoin with an empty member id", req.member_id, req.group)));
            };
            let now = Instant::now();
            let changed = g
                .members
                .get(&member_id)
                .is_none_or(|m| m.topics != req.topics);
            let member = Member {
                principal: principal.into(),
                kafka: None,
                topics: req.topics.clone(),
                owned: req.owned.clone(),
                session_timeout: Duration::from_millis(u64::from(req.session_timeout_ms)),
                rebalance_timeout: Duration::from_millis(u64::from(
                    req.rebalance_timeout_ms.max(1000),
                )),
                last_seen: now,
                assignment: g
                    .members
                    .get(&member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default(),
            };
            self.admit(g, member_id, member, changed)
        };
        self.joined(&req.group, &member_id, notify, target_generation, |g| {
            (
                g.generation,
                member_id.clone(),
                g.leader.clone(),
                g.members.keys().cloned().collect(),
            )
        })
        .await
    }

    /// Puts `member` into the group's rebalance (starting one if `changed` or none is under
    /// way) and completes it if it can; answers the member id, what to wait on, and the
    /// generation the member joins.
    fn admit(
        &self,
        g: &mut Group,
        member_id: String,
        member: Member,
        changed: bool,
    ) -> (String, Arc<Notify>, i32) {
        let now = Instant::now();
        g.members.insert(member_id.clone(), member);
        if changed || g.state != GroupState::PreparingRebalance {
            g.start_rebalance(now);
        }
        g.joined.insert(member_id.clone());
        let target = g.generation + 1;
        self.try_complete(g, now);
        (member_id, g.completed.clone(), target)
    }

    /// Waits until the generation a member joined completes; answers `answer` of the group as
    /// it then stands, or UNKNOWN_MEMBER if the rebalance removed the member.
    async fn joined<T>(
        &self,
        group: &str,
        member_id: &str,
        notify: Arc<Notify>,
        target_generation: i32,
        answer: impl Fn(&Group) -> T,
    ) -> Result<T, WireError> {
        loop {
            let notified = notify.notified();
            {
                let groups = guard(&self.groups);
                let g = groups
                    .get(group)
                    .ok_or_else(|| err(ErrorCode::UNKNOWN_GROUP, "group vanished"))?;
                if g.generation >= target_generation {
                    if !g.members.contains_key(member_id) {
                        return Err(err(
                            ErrorCode::UNKNOWN_MEMBER,
                            "removed from the group during the rebalance; rejoin",
                        ));
                    }
                    return Ok(answer(g));
                }
            }
            notified.await;
        }
    }

    fn with_member<T>(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        f: impl FnOnce(&mut Group) -> T,
    ) -> Result<T, WireError> {
        self.with_member_in(group, member_id, generation, false, f)
    }

    /// Checks membership and generation. `during_rebalance` lets a member of the current
    /// generation act while a rebalance is being prepared (commits before revoking).
    fn with_member_in<T>(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        during_rebalance: bool,
        f: impl FnOnce(&mut Group) -> T,
    ) -> Result<T, WireError> {
        let mut groups = guard(&self.groups);
        let g = groups.get_mut(group).ok_or_else(|| {
            err(
                ErrorCode::UNKNOWN_GROUP,
                format!("group {group:?} has no members"),
            )
        })?;
        let Some(m) = g.members.get_mut(member_id) else {
            return Err(err(
                ErrorCode::UNKNOWN_MEMBER,
                format!("member {member_id:?} is not in group {group:?}; rejoin"),
            ));
        };
        m.last_seen = Instant::now();
        if g.state == GroupState::PreparingRebalance && !during_rebalance {
            return Err(err(
                ErrorCode::REBALANCE_IN_PROGRESS,
                format!("group {group:?} is rebalancing; rejoin"),
            ));
        }
        if generation != g.generation {
            return Err(err(ErrorCode::ILLEGAL_GENERATION, format!(
                "generation {generation} of group {group:?} is over (now {}): this member was fenced; rejoin", g.generation)));
        }
        Ok(f(g))
    }

    pub fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<Vec<TopicPartition>, WireError> {
        self.with_member(group, member_id, generation, |g| {
            g.members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default()
        })
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), WireError> {
        self.with_member(group, member_id, generation, |_| ())
    }

    pub fn leave(&self, group: &str, member_id: &str) -> Result<(), WireError> {
        let mut groups = guard(&self.groups);
        if let Some(g) = groups.get_mut(group) {
            if g.members.remove(member_id).is_some() {
                info!(group, member = member_id, "member left; rebalancing");
                g.joined.remove(member_id);
                g.start_rebalance(Instant::now());
                self.try_complete(g, Instant::now());
            }
        }
        Ok(())
    }

    /// Commits offsets durably. Members are checked against their generation; an empty member
    /// id (admin tools) is accepted only while the group has no members.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<CommittedOffset>,
    ) -> Result<(), WireError> {
        validate_group(group)?;
        if member_id.is_empty() {
            let groups = guard(&self.groups);
            if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
                return Err(err(
                    ErrorCode::GROUP_NOT_EMPTY,
                    format!(
                        "group {group:?} has active members; stop them before changing its offsets"
                    ),
                ));
            }
        } else {
            self.with_member_in(group, member_id, generation, true, |_| ())?;
        }
        let mut b = BatchBuilder::new(Compression::None);
        let now = crate::now_ms();
        for o in &offsets {
            let value = CommitValue {
                offset: o.offset,
                metadata: o.metadata.clone(),
                commit_ms: now,
            };
            let raw = postcard::to_allocvec(&value)
                .map_err(|e| err(ErrorCode::INTERNAL, e.to_string()))?;
            b.push(
                now,
                Some(&commit_key(group, &o.topic, o.partition)),
                Some(&raw),
                &[],
            );
        }
        if !b.is_empty() {
            let log = self.offsets_log.clone();
            let batch = b.finish();
            tokio::task::spawn_blocking(move || log.log.append(batch, crate::now_ms()))
                .await
                .map_err(|e| err(ErrorCode::INTERNAL, e.to_string()))?
                .map_err(|e| err(ErrorCode::STORAGE, format!("cannot store the commit: {e}")))?;
            self.offsets_log
                .grown
                .send_replace(self.offsets_log.log.high_watermark().0);
        }
        let mut committed = guard(&self.committed);
        let map = committed.entry(group.to_string()).or_default();
        for o in offsets {
            map.insert((o.topic.clone(), o.partition), o);
        }
        guard(&self.active_ms).insert(group.to_string(), now);
        Ok(())
    }

    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Vec<CommittedOffset> {
        let committed = guard(&self.committed);
        let Some(map) = committed.get(group) else {
            return Vec::new();
        };
        match partitions {
            None => map.values().cloned().collect(),
            Some(ps) => ps.iter().filter_map(|tp| map.get(tp).cloned()).collect(),
        }
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = guard(&self.groups);
        let committed = guard(&self.committed);
        let describe_empty = || GroupDescription {
            group: group.into(),
            state: GroupState::Empty.name().into(),
            protocol: RebalanceProtocol::Eager,
            assignor: String::new(),
            generation: 0,
            members: Vec::new(),
        };
        match groups.get(group) {
            Some(g) => Some(GroupDescription {
                group: group.into(),
                state: kafka::state_name(g).into(),
                protocol: g.protocol,
                assignor: g.assignor.clone(),
                generation: g.generation,
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| GroupMember {
                        member_id: id.clone(),
                        principal: m.principal.clone(),
                        topics: m.topics.clone(),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            }),
            None => committed.contains_key(group).then(describe_empty),
        }
    }

    pub fn list(&self) -> Vec<GroupDescription> {
        let mut names: BTreeSet<String> = guard(&self.groups).keys().cloned().collect();
        names.extend(guard(&self.committed).keys().cloned());
        names.iter().filter_map(|g| self.describe(g)).collect()
    }
}

fn validate_group(group: &str) -> Result<(), WireError> {
    if group.is_empty() || group.len() > GROUP_NAME_LEN_MAX || group.contains('\0') {
        return Err(err(
            ErrorCode::INVALID_REQUEST,
            format!(
                "group name {group:?} must be 1 to {GROUP_NAME_LEN_MAX} characters without NUL"
            ),
        ));
    }
    Ok(())
}

fn commit_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    format!("offset\0{group}\0{topic}\0{partition}").into_bytes()
}

/// Committed offsets by group, and when each group last committed.
type Loaded = (
    HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    HashMap<String, i64>,
);

/// Rebuilds the committed-offset map from `__consumer_offsets`.
fn load_commits(p: &Partition) -> anyhow::Result<Loaded> {
    let mut out: HashMap<String, BTreeMap<TopicPartition, CommittedOffset>> = HashMap::new();
    let mut active: HashMap<String, i64> = HashMap::new();
    let mut at = p.log.log_start();
    let limits = p.log.config().decode_limits();
    loop {
        let read = p.log.read(at, 4 << 20)?;
        if read.batches.is_empty() {
            break;
        }
        for batch in split_batches(read.batches, &limits)? {
            for r in batch.records(limits.batch_bytes_decompressed_max)? {
                let Some(key) = r.key else { continue };
                let text = String::from_utf8_lossy(&key);
                let parts: Vec<&str> = text.split('\0').collect();
                let [kind, group, topic, partition] = parts.as_slice() else {
                    continue;
                };
                let (Ok(partition), true) = (partition.parse::<u32>(), *kind == "offset") else {
                    continue;
                };
                let map = out.entry(group.to_string()).or_default();
                match r
                    .value
                    .and_then(|v| postcard::from_bytes::<CommitValue>(&v).ok())
                {
                    Some(v) => {
                        let last = active.entry(group.to_string()).or_insert(v.commit_ms);
                        *last = (*last).max(v.commit_ms);
                        map.insert(
                            (topic.to_string(), partition),
                            CommittedOffset {
                                topic: topic.to_string(),
                                partition,
                                offset: v.offset,
                                metadata: v.metadata,
                            },
                        );
                    }
                    None => {
                        map.remove(&(topic.to_string(), partition));
                    }
                }
            }
            at = batch.next_offset();
        }
    }
    // Groups whose every offset was tombstoned (expired or deleted) are gone.
    out.retain(|_, offsets| !offsets.is_empty());
    active.retain(|group, _| out.contains_key(group));
    Ok((out, active))
}
