//! A mirror flow: finds matching source topics, creates their targets, and runs one copier per
//! partition, plus the group checkpoints and heartbeats.
//!
//! Discovery runs every `refresh`: new matching topics and new partitions are picked up, the
//! target topics are created (prefix mode: read-only mirror topics with the source's partition
//! count and settings; identity mode: ordinary topics of the same name) or grown, and source
//! topics that disappeared are reported (and their targets deleted only when configured).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use strait_protocol::client::{Admin, Client, ClientError, FetchStreamOptions};
use strait_protocol::message::Request;
use strait_protocol::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use crate::checkpoints::Checkpoints;
use crate::copier::{lock, Copier, Pacer};
use crate::endpoint::{ask, topic_info, Endpoint};
use crate::heartbeat::{self, heartbeat_mirror, HEARTBEAT_TOPIC};
use crate::naming::{target_topic, Naming};
use crate::status::{FlowStatus, PartitionState};

/// Settings that are copied from the source topic to its target.
const SYNCED_SETTINGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "delete.retention.ms",
    "segment.bytes",
    "max.batch.bytes",
];

/// What a flow copies and how.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub name: String,
    pub topics: Regex,
    pub exclude: Option<Regex>,
    pub naming: Naming,
    /// How often new matching topics and partitions are looked for.
    pub refresh: Duration,
    /// Most bytes one fetch from the source may return; also the credit a partition's
    /// streaming fetch starts with (and never shrinks below).
    pub fetch_bytes_max: u32,
    /// The most credit a partition's streaming fetch may grow to on a long, fast link.
    pub stream_window_max: u32,
    /// Most bytes fetched but not yet appended on the target, over the whole flow.
    pub in_flight_bytes_max: u32,
    /// Cap on the flow's copy rate, to leave a shared WAN link room for others.
    pub rate_bytes_per_s: Option<u64>,
    /// Consumer groups whose committed offsets are carried over (checkpoints); None for none.
    pub groups: Option<Regex>,
    pub groups_exclude: Option<Regex>,
    /// How often source commits are looked at.
    pub checkpoint_interval: Duration,
    /// How often a heartbeat is written to the source; None for no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Delete the target topic when its source topic is deleted (off: reported only).
    pub propagate_deletes: bool,
}

impl FlowConfig {
    pub fn new(name: &str, topics: Regex) -> Self {
        FlowConfig {
            name: name.into(),
            topics,
            exclude: None,
            naming: Naming::Prefix,
            refresh: Duration::from_secs(5),
            fetch_bytes_max: 4 << 20,
            stream_window_max: 64 << 20,
            in_flight_bytes_max: 64 << 20,
            rate_bytes_per_s: None,
            groups: None,
            groups_exclude: None,
            checkpoint_interval: Duration::from_millis(250),
            heartbeat_interval: Some(Duration::from_secs(1)),
            propagate_deletes: false,
        }
    }

    /// Whether the include/exclude expressions pick `topic`.
    pub fn selects(&self, topic: &str) -> bool {
        self.topics.is_match(topic) && !self.exclude.as_ref().is_some_and(|e| e.is_match(topic))
    }
}

/// A running flow between two clusters.
pub struct MirrorFlow {
    config: FlowConfig,
    source: Arc<Client>,
    target: Arc<dyn Endpoint>,
    status: Arc<Mutex<FlowStatus>>,
}

/// Copiers running, by (source topic, partition).
type Running = BTreeMap<(String, u32), AbortHandle>;

impl MirrorFlow {
    pub fn new(config: FlowConfig, source: Arc<Client>, target: Arc<dyn Endpoint>) -> Self {
        let status = FlowStatus {
            name: config.name.clone(),
            naming: config.naming.as_str().into(),
            ..Default::default()
        };
        MirrorFlow {
            config,
            source,
            target,
            status: Arc::new(Mutex::new(status)),
        }
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// A snapshot of the flow's progress, with lag computed as of now.
    pub fn status(&self) -> FlowStatus {
        lock(&self.status).report(crate::status::now_ms())
    }

    /// Shared handle to the progress, for reporting while the flow runs.
    pub fn status_handle(&self) -> Arc<Mutex<FlowStatus>> {
        self.status.clone()
    }

    /// Runs until `stop` turns true, reconnecting with backoff while either cluster is away.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let mut backoff = Duration::from_millis(200);
        let (source_cluster, target_cluster) = loop {
            match self.clusters().await {
                Ok(names) => {
                    // Both clusters answered: connected from now, not only once the first
                    // topic discovery (which may start copiers and run a while) returns.
                    let mut s = lock(&self.status);
                    s.connected = true;
                    s.last_contact_ms = Some(crate::status::now_ms());
                    s.last_error = None;
                    break names;
                }
                Err(e) => {
                    warn!(flow = %self.config.name, error = %e, "cannot reach both clusters; retrying");
                    {
                        let mut s = lock(&self.status);
                        s.connected = false;
                        s.last_error = Some(e.to_string());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if source_cluster == target_cluster {
            return Err(ClientError::Invalid(format!(
                "flow {} connects cluster {source_cluster} to itself; point --source-bootstrap at another cluster",
                self.config.name
            )));
        }
        {
            let mut s = lock(&self.status);
            s.source_cluster = source_cluster.clone();
            s.target_cluster = target_cluster.clone();
        }
        info!(flow = %self.config.name, source = %source_cluster, target = %target_cluster,
            naming = self.config.naming.as_str(), "mirror flow started");
        let shared = Shared {
            pacer: Arc::new(Pacer {
                rate: self.config.rate_bytes_per_s,
                next: Mutex::new(tokio::time::Instant::now()),
            }),
            budget: Arc::new(Semaphore::new(
                self.config
                    .in_flight_bytes_max
                    .max(self.config.fetch_bytes_max) as usize,
            )),
            source_cluster,
            target_cluster,
        };
        let mut tasks = JoinSet::new();
        if let Some(groups) = self.config.groups.clone() {
            let checkpoints = Checkpoints {
                flow: self.config.name.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                groups,
                groups_exclude: self.config.groups_exclude.clone(),
                naming: self.config.naming,
                source_cluster: shared.source_cluster.clone(),
                target_cluster: shared.target_cluster.clone(),
                interval: self.config.checkpoint_interval,
                status: self.status.clone(),
            };
            tasks.spawn(checkpoints.run(stop.clone()));
        }
        if let Some(interval) = self.config.heartbeat_interval {
            tasks.spawn(heartbeat::beat(
                self.config.name.clone(),
                self.source.clone(),
                interval,
                stop.clone(),
            ));
        }
        let mut running = Running::new();
        // A partitioned source does not refuse, it goes silent: after this long without an
        // answer the flow shows as disconnected, while the look itself runs on (it is not
        // cancelled halfway through starting copiers).
        let silent_after = self.config.refresh.max(Duration::from_secs(3));
        loop {
            let result = {
                let discovery = self.discover(&shared, &mut running, &mut tasks, &stop);
                tokio::pin!(discovery);
                tokio::select! {
                    r = &mut discovery => r,
                    _ = tokio::time::sleep(silent_after) => {
                        {
                            let mut s = lock(&self.status);
                            s.connected = false;
                            s.last_error = Some(format!(
                                "the source has not answered for {silent_after:?}: a network partition, or the source is down"
                            ));
                        }
                        warn!(flow = %self.config.name, "source silent; flow shown as disconnected");
                        discovery.await
                    }
                }
            };
            {
                let mut s = lock(&self.status);
                s.connected = result.is_ok();
                if result.is_ok() {
                    s.last_contact_ms = Some(crate::status::now_ms());
                }
                s.last_error = result.as_ref().err().map(ToString::to_string);
            }
            if let Err(e) = result {
                warn!(flow = %self.config.name, error = %e, "topic discovery failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.refresh) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                tasks.shutdown().await;
                info!(flow = %self.config.name, "mirror flow stopped");
                return Ok(());
            }
        }
    }

    async fn clusters(&self) -> Result<(String, String), ClientError> {
        let source = self.source.connection().await?.hello.cluster.clone();
        let target = self.target.cluster().await?;
        Ok((source, target))
    }

    async fn discover(
        &self,
        shared: &Shared,
        running: &mut Running,
        tasks: &mut JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ClientError> {
        let source_admin = Admin::new(self.source.clone());
        let meta = source_admin.metadata(None).await?;
        let present: BTreeSet<&str> = meta.topics.iter().map(|t| t.name.as_str()).collect();
        self.handle_deleted(&present, running).await;
        for t in &meta.topics {
            let (target, heartbeat) = if t.name == HEARTBEAT_TOPIC {
                if self.config.heartbeat_interval.is_none() {
                    continue;
                }
                (heartbeat_mirror(&shared.source_cluster), true)
            } else {
                let Some(target) = target_topic(
                    self.config.naming,
                    &shared.source_cluster,
                    &shared.target_cluster,
                    &t.name,
                ) else {
                    continue;
                };
                if !self.config.selects(&t.name) {
                    continue;
                }
                (target, false)
            };
            if t.partitions
                .iter()
                .all(|p| running.contains_key(&(t.name.clone(), p.id)))
            {
                continue;
            }
            let naming = if heartbeat {
                Naming::Prefix
            } else {
                self.config.naming
            };
            self.ensure_target(
                &source_admin,
                &t.name,
                &target,
                t.partitions.len() as u32,
                naming,
                shared,
            )
            .await?;
            for p in &t.partitions {
                let key = (t.name.clone(), p.id);
                if running.contains_key(&key) {
                    continue;
                }
                let copier = Copier {
                    flow: self.config.name.clone(),
                    source: self.source.clone(),
                    target: self.target.clone(),
                    source_cluster: shared.source_cluster.clone(),
                    target_cluster: shared.target_cluster.clone(),
                    naming,
                    source_topic: t.name.clone(),
                    target_topic: target.clone(),
                    partition: p.id,
                    fetch_bytes_max: self.config.fetch_bytes_max,
                    stream: FetchStreamOptions {
                        // Batches reach the copier as they arrive whatever the frame's size,
                        // so frames as large as a fetch cost the node fewest reads.
                        frame_bytes_max: self.config.fetch_bytes_max,
                        // A frame on its way while the one before is appended.
                        window_min: self.config.fetch_bytes_max.saturating_mul(2),
                        window_max: self
                            .config
                            .stream_window_max
                            .max(self.config.fetch_bytes_max),
                        ..FetchStreamOptions::default()
                    },
                    budget: shared.budget.clone(),
                    pacer: shared.pacer.clone(),
                    status: self.status.clone(),
                    heartbeat,
                };
                let handle = tasks.spawn(copier.run(stop.clone()));
                running.insert(key, handle);
            }
        }
        Ok(())
    }

    /// Stops copying topics that vanished from the source and reports them; deletes their
    /// targets only when the flow is configured to propagate deletes.
    async fn handle_deleted(&self, present: &BTreeSet<&str>, running: &mut Running) {
        let gone: BTreeSet<String> = running
            .keys()
            .filter(|(t, _)| !present.contains(t.as_str()))
            .map(|(t, _)| t.clone())
            .collect();
        for topic in gone {
            let mut target = None;
            running.retain(|(t, _), handle| {
                if *t == topic {
                    handle.abort();
                    false
                } else {
                    true
                }
            });
            {
                let mut s = lock(&self.status);
                for ((t, _), p) in s.by_partition.iter_mut() {
                    if *t == topic {
                        p.state = PartitionState::SourceDeleted;
                        p.last_error = Some("the source topic was deleted".into());
                        target = Some(p.target_topic.clone());
                    }
                }
                if !s.deleted_source_topics.contains(&topic) {
                    s.deleted_source_topics.push(topic.clone());
                }
            }
            let target = target.unwrap_or_default();
            if self.config.propagate_deletes && !target.is_empty() {
                let req = Request::DeleteTopic {
                    name: target.clone(),
                };
                match ask(self.target.as_ref(), &req).await.map(|_| ()) {
                    Ok(()) => {
                        warn!(flow = %self.config.name, topic, target, "source topic deleted; deleted its target as configured")
                    }
                    Err(e) => {
                        warn!(flow = %self.config.name, topic, target, error = %e, "source topic deleted; could not delete its target")
                    }
                }
            } else {
                warn!(flow = %self.config.name, topic, target,
                    "source topic deleted; its copy on the target is kept (set propagate_deletes to delete it too)");
            }
        }
    }

    /// Creates the target with the source's partition count and settings, or grows it when the
    /// source gained partitions.
    async fn ensure_target(
        &self,
        source: &Admin,
        topic: &str,
        target: &str,
        partitions: u32,
        naming: Naming,
        shared: &Shared,
    ) -> Result<(), ClientError> {
        let described = source.describe_topic(topic).await?;
        let configs: Vec<(String, String)> = described
            .configs
            .into_iter()
            .filter(|(k, _)| SYNCED_SETTINGS.contains(&k.as_str()))
            .collect();
        let created = match naming {
            Naming::Prefix | Naming::Restore => {
                let req = Request::CreateMirrorTopic {
                    name: target.into(),
                    partitions,
                    configs,
                    flow: self.config.name.clone(),
                    source_cluster: shared.source_cluster.clone(),
                    source_topic: topic.into(),
                };
                ask(self.target.as_ref(), &req).await.map(|_| ())
            }
            Naming::Identity => {
                let req = Request::CreateTopic {
                    name: target.into(),
                    partitions,
                    configs,
                };
                ask(self.target.as_ref(), &req).await.map(|_| ())
            }
        };
        match created {
            Ok(()) => {
                info!(flow = %self.config.name, topic, target, partitions, "created target topic");
                return Ok(());
            }
            Err(e) if e.code() == Some(ErrorCode::TOPIC_EXISTS) => {}
            Err(e) => return Err(e),
        }
        let have = topic_info(self.target.as_ref(), target)
            .await?
            .map_or(0, |t| t.partitions.len() as u32);
        if have < partitions {
            let req = Request::AddPartitions {
                name: target.into(),
                partitions,
            };
            ask(self.target.as_ref(), &req).await?;
            info!(flow = %self.config.name, topic, target, from = have, to = partitions, "grew target topic to the source's partition count");
        }
        Ok(())
    }
}

/// What every copier of a flow shares.
struct Shared {
    pacer: Arc<Pacer>,
    budget: Arc<Semaphore>,
    source_cluster: String,
    target_cluster: String,
}
