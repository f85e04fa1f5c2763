//! One node's controller: its Raft member (voter or learner), the proposals it makes or
//! forwards, its registration and heartbeats, and, while it leads, the duties of the leader
//! (fencing silent nodes, adding registered nodes as learners).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use strait_protocol::message::{ClusterDescription, ClusterNode};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::image::{Command, MetadataImage, Outcome};
use super::network::{
    ask, node_identity, reply, Call, HeartbeatAnswer, HeartbeatReply, NetworkFactory, Peers,
    ProposeAnswer, ProposeError,
};
use super::{LogStore, StateMachine, TypeConfig};

/// How long a proposal may look for a leader before it fails.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(15);
/// Deadline of one forwarded proposal or heartbeat.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// What a node's controller needs to know.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub cluster: String,
    pub node_id: u64,
    /// The voters, by id, at their QUIC addresses; empty: this node alone (a one-node cluster).
    pub voters: BTreeMap<u64, String>,
    /// This node's QUIC address as peers and clients reach it.
    pub advertised: String,
    pub kafka_address: Option<String>,
    pub rack: Option<String>,
    /// Where the metadata log, vote and snapshots live.
    pub dir: PathBuf,
    /// This node's client TLS config (its node certificate), for dialling peers.
    pub tls: rustls::ClientConfig,
    pub transport: strait_protocol::transport::TransportLimits,
    /// A node not heard from for this long is fenced (Kafka's `broker.session.timeout.ms`).
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Raft's heartbeat; elections start after 8–16 of them without a leader.
    pub raft_heartbeat: Duration,
}

impl ControllerConfig {
    /// The voters, with this node alone when none are named.
    pub fn voter_set(&self) -> BTreeMap<u64, String> {
        if self.voters.is_empty() {
            BTreeMap::from([(self.node_id, self.advertised.clone())])
        } else {
            self.voters.clone()
        }
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the controller's storage: {0}")]
    Storage(#[from] super::StorageError),
    #[error("the controller's settings: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("the controller could not start: {0}")]
    Start(String),
}

/// Liveness the leader tracks per node: the incarnation it heard from, and when.
#[derive(Debug, Clone, Copy)]
struct Session {
    incarnation: u64,
    seen: Instant,
}

/// A running controller member.
pub struct Controller {
    config: ControllerConfig,
    raft: Raft<TypeConfig>,
    peers: Arc<Peers>,
    image: watch::Receiver<Arc<MetadataImage>>,
    /// The incarnation this node registered as (0: not yet).
    incarnation: AtomicU64,
    /// When the controller leader last confirmed this incarnation alive: the moment the
    /// heartbeat it answered was sent (never later than the leader heard it, so this node
    /// stops leading no later than the leader fences it).
    confirmed: Mutex<Option<Instant>>,
    sessions: Mutex<HashMap<u64, Session>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Controller {
    /// Opens the stores, joins the quorum and starts registering this node.
    pub async fn start(config: ControllerConfig) -> Result<Arc<Controller>, ControllerError> {
        let log = LogStore::open(config.dir.join("log")).await?;
        let pristine = log.is_pristine().await;
        let state = StateMachine::open(config.dir.join("state")).await?;
        let image = state.image();
        let beat = config.raft_heartbeat.as_millis().max(10) as u64;
        let raft_config = openraft::Config {
            cluster_name: config.cluster.clone(),
            heartbeat_interval: beat,
            // Wide, so two voters rarely draw the same moment (0.9 draws once per start).
            election_timeout_min: beat * 8,
            election_timeout_max: beat * 16,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let peers = Arc::new(
            Peers::new(
                &config.cluster,
                config.voters.clone(),
                config.tls.clone(),
                &config.transport,
            )
            .map_err(|e| ControllerError::Start(e.to_string()))?,
        );
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory {
                peers: peers.clone(),
            },
            log,
            state,
        )
        .await
        .map_err(|e| ControllerError::Start(e.to_string()))?;
        let voters = config.voter_set();
        // Only the lowest voter starts a new quorum, and only from empty storage: a voter
        // that ever held a vote or entry rejoins the quorum it knew.
        if pristine && voters.keys().next() == Some(&config.node_id) {
            let members: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    info!(voters = ?voters.keys().collect::<Vec<_>>(), "controller quorum initialized")
                }
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ControllerError::Start(e.to_string())),
            }
        }
        let controller = Arc::new(Controller {
            config,
            raft,
            peers,
            image,
            incarnation: AtomicU64::new(0),
            confirmed: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(controller.clone().keep_registered()),
            tokio::spawn(controller.clone().lead()),
            tokio::spawn(controller.clone().break_ties()),
        ];
        *controller.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(controller)
    }

    /// The metadata image as applied on this node, and every later one.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// The incarnation this node is registered as (0 until registered).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Acquire)
    }

    /// Whether this node may act as a leader of its partitions (take writes): only while
    /// registered and confirmed alive by the controller leader within the session timeout.
    /// A node cut off from the controller stops by itself, no later than the leader fences
    /// it (Kafka brokers fence themselves the same way when their lease runs out); it
    /// leads again only once it has registered anew.
    pub fn may_lead(&self) -> Result<(), String> {
        if self.incarnation() == 0 {
            return Err(format!(
                "node {} is not registered with its cluster's controller (yet); it takes writes once it is",
                self.config.node_id
            ));
        }
        let confirmed = *self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        match confirmed {
            Some(at) if at.elapsed() <= self.config.session_timeout => Ok(()),
            _ => Err(format!(
                "node {} has not been confirmed alive by its cluster's controller for over {:?} (cut off from the controller quorum?), so the controller fences it; it takes writes again once it registers anew",
                self.config.node_id, self.config.session_timeout
            )),
        }
    }

    /// Waits until this node is registered, at most `within`; answers whether it is.
    pub async fn registered_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.may_lead().is_err() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// While leading: the latest moment by which a majority of the voters (this one
    /// included) had heartbeated to it, or `None` if they have not.
    fn majority_heard_at(&self) -> Option<Instant> {
        let voters: Vec<u64> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().voter_ids().collect()
        };
        let needed = voters.len() / 2; // besides this one
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut heard: Vec<Instant> = voters
            .iter()
            .filter(|v| **v != self.config.node_id)
            .filter_map(|v| sessions.get(v).map(|s| s.seen))
            .collect();
        heard.sort_unstable_by(|a, b| b.cmp(a));
        match needed {
            0 => Some(Instant::now()),
            n => heard.get(n - 1).copied(),
        }
    }

    fn confirm(&self, sent: Instant) {
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
    }

    /// Puts `command` in the metadata log (through the leader, wherever it is) and answers its
    /// outcome once applied. Retries while there is no leader or the leader changes, up to
    /// [`PROPOSE_DEADLINE`].
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let deadline = Instant::now() + PROPOSE_DEADLINE;
        // A node that is not yet a member (a new learner registering) hears from no leader:
        // it asks the voters it was configured with in turn, and follows their hints.
        let voters: Vec<u64> = self.config.voter_set().into_keys().collect();
        let mut hint: Option<u64> = None;
        let mut turn = 0usize;
        loop {
            let target = match self.raft.current_leader().await.or(hint.take()) {
                Some(leader) => leader,
                None => {
                    turn += 1;
                    voters[turn % voters.len()]
                }
            };
            let attempt = if target == self.config.node_id {
                self.propose_here(command.clone()).await
            } else {
                match self.address_of(target) {
                    Some(address) => ask::<ProposeAnswer>(
                        &self.peers,
                        target,
                        &address,
                        &Call::Propose(command.clone()),
                        CALL_DEADLINE,
                    )
                    .await
                    .unwrap_or_else(|e| Err(ProposeError::Failed(e.to_string()))),
                    None => Err(ProposeError::NoLeader(PROPOSE_DEADLINE)),
                }
            };
            if let Err(ProposeError::NotLeader { leader, .. }) = &attempt {
                hint = *leader;
            }
            // Every failure (no leader, a moved leader, a lost call) is worth another try.
            match attempt {
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes on this node, which must lead.
    async fn propose_here(&self, command: Command) -> Result<Outcome, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    asked: self.config.node_id,
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// A member's address, from the membership the log holds, else a configured voter's
    /// (a node not yet in the membership knows only those). [`Peers`] dials its own route to a
    /// voter whichever this names.
    fn address_of(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.config.voters.get(&id).cloned())
    }

    /// Answers a call from a peer whose node certificate names `principal`.
    pub(super) async fn answer(&self, principal: &str, call: Call) -> Result<Vec<u8>, String> {
        let cluster = &self.config.cluster;
        let claims = |sender: u64| {
            if principal == node_identity(cluster, sender) {
                Ok(())
            } else {
                Err(format!(
                    "{principal} sent a call as node {sender}; its certificate must name {}",
                    node_identity(cluster, sender)
                ))
            }
        };
        match call {
            Call::Append(req) => {
                claims(req.vote.leader_id.node_id)?;
                reply(&self.raft.append_entries(req).await)
            }
            Call::Vote(req) => {
                claims(req.vote.leader_id.node_id)?;
                reply(&self.raft.vote(req).await)
            }
            Call::Snapshot(req) => {
                claims(req.vote.leader_id.node_id)?;
                reply(&self.raft.install_snapshot(req).await)
            }
            Call::Propose(command) => {
                if !principal.starts_with(&format!("{cluster}-")) {
                    return Err(format!("{principal} is not a node of cluster {cluster}"));
                }
                reply::<ProposeAnswer>(&self.propose_here(command).await)
            }
            Call::Heartbeat {
                node_id,
                incarnation,
            } => {
                claims(node_id)?;
                reply::<HeartbeatReply>(&self.heartbeat_from(node_id, incarnation))
            }
        }
    }

    /// The leader's view of a heartbeat.
    fn heartbeat_from(&self, node_id: u64, incarnation: u64) -> HeartbeatReply {
        if !self.leads() {
            return Err(ProposeError::NotLeader {
                asked: self.config.node_id,
                leader: self.raft.metrics().borrow().current_leader,
            });
        }
        let image = self.image.borrow().clone();
        match image.nodes.get(&node_id) {
            Some(n) if n.incarnation == incarnation && !n.fenced => {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        node_id,
                        Session {
                            incarnation,
                            seen: Instant::now(),
                        },
                    );
                Ok(HeartbeatAnswer::Alive)
            }
            _ => Ok(HeartbeatAnswer::Register),
        }
    }

    /// How long one heartbeat may take: a third of the session, so that a call stuck on a
    /// leader that just died (a cut link answers nothing) leaves time to find the new leader
    /// and heartbeat to it before the new leader fences this node, which would move its
    /// leaderships for nothing.
    fn heartbeat_deadline(&self) -> Duration {
        (self.config.session_timeout / 3).clamp(Duration::from_millis(100), CALL_DEADLINE)
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Registers this node, then heartbeats to the leader; registers again when told to.
    async fn keep_registered(self: Arc<Self>) {
        loop {
            if self.incarnation() == 0 {
                let command = Command::RegisterNode {
                    node_id: self.config.node_id,
                    address: self.config.advertised.clone(),
                    kafka_address: self.config.kafka_address.clone(),
                    rack: self.config.rack.clone(),
                };
                match self.propose(command).await {
                    Ok(Outcome::Registered { incarnation }) => {
                        info!(
                            node = self.config.node_id,
                            incarnation, "registered with the controller"
                        );
                        // Applied by the leader before this answer, and its session for the new
                        // incarnation starts at its next round after that: now is no later.
                        self.confirm(Instant::now());
                        self.incarnation.store(incarnation, Ordering::Release);
                        continue;
                    }
                    Ok(other) => warn!(?other, "registration answered unexpectedly"),
                    Err(e) => {
                        warn!(error = %e, "registration with the controller failed; retrying")
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            tokio::time::sleep(self.config.heartbeat_interval).await;
            let incarnation = self.incarnation();
            let mut sent = Instant::now();
            let answer = match self.raft.current_leader().await {
                // The leader counts itself alive only as of the last moment a majority of the
                // voters (itself included) heartbeated to it: a leader cut off from the other
                // voters must stop taking writes like any node that cannot reach the leader.
                Some(l) if l == self.config.node_id => match self.majority_heard_at() {
                    Some(at) => {
                        sent = sent.min(at);
                        self.heartbeat_from(self.config.node_id, incarnation)
                    }
                    None => {
                        debug!("no majority of the voters heartbeated to this leader lately");
                        Err(ProposeError::Failed(
                            "a majority of the voters did not confirm this leader".into(),
                        ))
                    }
                },
                Some(l) => match self.address_of(l) {
                    Some(address) => ask::<HeartbeatReply>(
                        &self.peers,
                        l,
                        &address,
                        &Call::Heartbeat {
                            node_id: self.config.node_id,
                            incarnation,
                        },
                        self.heartbeat_deadline(),
                    )
                    .await
                    .unwrap_or_else(|e| Err(ProposeError::Failed(e.to_string()))),
                    None => continue,
                },
                None => continue,
            };
            if answer == Ok(HeartbeatAnswer::Alive) {
                self.confirm(sent);
            }
            if answer == Ok(HeartbeatAnswer::Register) {
                warn!(
                    node = self.config.node_id,
                    incarnation,
                    "the controller no longer knows this incarnation (fenced); registering again"
                );
                self.incarnation.store(0, Ordering::Release);
            }
        }
    }

    /// openraft 0.9 draws each voter's election timeout once per start, so two voters that
    /// drew the same moment split every vote from then on (fixed upstream only in 0.10; seen
    /// here as two survivors of three never electing). While no leader is known for two whole
    /// election windows, a voter waits a random part of a window and starts an election
    /// itself, which moves its moment apart from the other's.
    async fn break_ties(self: Arc<Self>) {
        let window = self.config.raft_heartbeat * 16;
        let mut leaderless_since: Option<Instant> = None;
        let mut seed = self.config.node_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ crate::now_ms().unsigned_abs();
        loop {
            tokio::time::sleep(self.config.raft_heartbeat).await;
            let (leader, voter) = {
                let m = self.raft.metrics().borrow().clone();
                let id = self.config.node_id;
                let voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                (m.current_leader, voter)
            };
            if leader.is_some() || !voter {
                leaderless_since = None;
                continue;
            }
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if since.elapsed() < window * 2 {
                continue;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tokio::time::sleep(window.mul_f64((seed % 1000) as f64 / 1000.0)).await;
            if self.raft.metrics().borrow().current_leader.is_none() {
                info!(node = self.config.node_id, leaderless = ?since.elapsed(), "no controller leader; starting an election to break a tie");
                let _ = self.raft.trigger().elect().await;
            }
            leaderless_since = Some(Instant::now());
        }
    }

    /// While this node leads: fence nodes silent past the session timeout, and make every
    /// registered node a learner of the metadata log.
    async fn lead(self: Arc<Self>) {
        let mut led_term = None;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (leads, term, members) = {
                let metrics = self.raft.metrics();
                let m = metrics.borrow();
                let members: Vec<u64> = m
                    .membership_config
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect();
                (m.state == ServerState::Leader, m.current_term, members)
            };
            if !leads {
                led_term = None;
                continue;
            }
            let image = self.image.borrow().clone();
            let now = Instant::now();
            if led_term != Some(term) {
                // A new leader has heard from nobody yet: forgetting every session gives every
                // node a full one, started by the tracking below.
                led_term = Some(term);
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            let silent: Vec<(u64, u64)> = {
                let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                image
                    .nodes
                    .iter()
                    .filter(|(_, n)| !n.fenced)
                    .filter(|(id, n)| match sessions.get(id) {
                        Some(s) if s.incarnation == n.incarnation => {
                            now.duration_since(s.seen) > self.config.session_timeout
                        }
                        // Not tracked yet (a new leader, a new incarnation): from now on.
                        _ => false,
                    })
                    .map(|(id, n)| (*id, n.incarnation))
                    .collect()
            };
            for (node_id, incarnation) in silent {
                warn!(node = node_id, incarnation, timeout = ?self.config.session_timeout, "node silent past its session timeout; fencing it");
                let _ = self
                    .propose_here(Command::FenceNode {
                        node_id,
                        incarnation,
                    })
                    .await;
            }
            {
                // Start tracking every node not tracked in its current incarnation.
                let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                for (id, node) in &image.nodes {
                    if sessions
                        .get(id)
                        .is_none_or(|s| s.incarnation != node.incarnation)
                    {
                        sessions.insert(
                            *id,
                            Session {
                                incarnation: node.incarnation,
                                seen: now,
                            },
                        );
                    }
                }
            }
            for (id, node) in &image.nodes {
                if !members.contains(id) {
                    let learner = BasicNode {
                        addr: node.address.clone(),
                    };
                    if let Err(e) = self.raft.add_learner(*id, learner, false).await {
                        warn!(node = id, error = %e, "could not add the node as a learner");
                    }
                }
            }
        }
    }

    /// The cluster as this node sees it.
    pub fn describe(&self) -> ClusterDescription {
        // A copy, so no guard of the metrics is held while the image's is taken: openraft
        // writes the metrics from its core, and nested guards of two watches can deadlock
        // with their writers.
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let image = self.image.borrow().clone();
        let mut nodes: Vec<ClusterNode> = image
            .nodes
            .iter()
            .map(|(id, n)| ClusterNode {
                node_id: *id,
                address: n.address.clone(),
                rack: n.rack.clone(),
                incarnation: n.incarnation,
                state: if n.fenced { "fenced" } else { "alive" }.into(),
                voter: voters.contains(id),
            })
            .collect();
        for (id, node) in membership.nodes() {
            if !image.nodes.contains_key(id) {
                nodes.push(ClusterNode {
                    node_id: *id,
                    address: node.addr.clone(),
                    rack: None,
                    incarnation: 0,
                    state: "unregistered".into(),
                    voter: voters.contains(id),
                });
            }
        }
        nodes.sort_by_key(|n| n.node_id);
        ClusterDescription {
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id,
            voters,
            learners,
            leader: m.current_leader,
            term: m.current_term,
            applied_index: m.last_applied.map(|l| l.index),
            nodes,
        }
    }

    /// Stops this member (its stores stay as they are on disk).
    pub async fn shutdown(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}
