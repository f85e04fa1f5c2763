//! A mirror flow: finds matching source topics, creates their mirror topics on the target and
//! runs one copier per partition.
//!
//! Each copier resumes from the target partition's log end, fetches whole batches from the
//! source (one stream per request, so a slow partition never blocks another), and appends them
//! unchanged at their source offsets with `MirrorAppend`. In-flight bytes per flow are bounded
//! by a semaphore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use regex::Regex;
use strait_protocol::batch::{split_batches, DecodeLimits};
use strait_protocol::client::{Admin, Client, ClientError};
use strait_protocol::message::{OffsetSpec, Request, Response};
use strait_protocol::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::naming::{target_topic, Naming};

/// Settings that configs copied from the source topic to its mirror.
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
    /// How often new matching topics are looked for.
    pub refresh: Duration,
    /// Most bytes one fetch from the source may return.
    pub fetch_bytes_max: u32,
    /// Most bytes fetched but not yet appended on the target, over the whole flow.
    pub in_flight_bytes_max: u32,
    /// Cap on the flow's copy rate, to leave a shared WAN link room for others.
    pub rate_bytes_per_s: Option<u64>,
    /// Consumer groups whose committed offsets are carried over (checkpoints); None for none.
    pub groups: Option<Regex>,
    /// How often source commits are looked at.
    pub checkpoint_interval: Duration,
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
            in_flight_bytes_max: 64 << 20,
            rate_bytes_per_s: None,
            groups: None,
            checkpoint_interval: Duration::from_millis(500),
        }
    }
}

/// One mirrored partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    pub source_topic: String,
    pub partition: u32,
    pub target_topic: String,
    /// Next source offset to copy (everything below is on the target).
    pub mirrored_offset: u64,
    pub source_end_offset: u64,
    /// Ranges of source offsets deleted on the source before they could be copied.
    pub gaps: Vec<(u64, u64)>,
    pub last_error: Option<String>,
}

/// The whole flow's progress, keyed by (source topic, partition).
#[derive(Debug, Clone, Default)]
pub struct FlowStatus {
    pub source_cluster: String,
    pub target_cluster: String,
    pub partitions: BTreeMap<(String, u32), PartitionStatus>,
}

/// A running flow between two clusters.
pub struct MirrorFlow {
    config: FlowConfig,
    source: Arc<Client>,
    target: Arc<Client>,
    status: Arc<Mutex<FlowStatus>>,
}

impl MirrorFlow {
    pub fn new(config: FlowConfig, source: Arc<Client>, target: Arc<Client>) -> Self {
        MirrorFlow {
            config,
            source,
            target,
            status: Arc::new(Mutex::new(FlowStatus::default())),
        }
    }

    /// A snapshot of the flow's progress.
    pub fn status(&self) -> FlowStatus {
        lock(&self.status).clone()
    }

    /// Shared handle to the progress, for reporting while the flow runs.
    pub fn status_handle(&self) -> Arc<Mutex<FlowStatus>> {
        self.status.clone()
    }

    /// Runs until `stop` turns true: discovers topics every `refresh` and copies them.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let source_cluster = self.source.connection().await?.hello.cluster.clone();
        let target_cluster = self.target.connection().await?.hello.cluster.clone();
        {
            let mut s = lock(&self.status);
            s.source_cluster = source_cluster.clone();
            s.target_cluster = target_cluster.clone();
        }
        info!(flow = %self.config.name, source = %source_cluster, target = %target_cluster, "mirror flow started");
        let pacer = Arc::new(Pacer {
            rate: self.config.rate_bytes_per_s,
            next: Mutex::new(tokio::time::Instant::now()),
        });
        let budget = Arc::new(Semaphore::new(
            self.config
                .in_flight_bytes_max
                .max(self.config.fetch_bytes_max) as usize,
        ));
        let mut running: BTreeSet<(String, u32)> = BTreeSet::new();
        let mut copiers = tokio::task::JoinSet::new();
        if let Some(groups) = self.config.groups.clone() {
            let checkpoints = Checkpoints {
                flow: self.config.name.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                groups,
                naming: self.config.naming,
                source_cluster: source_cluster.clone(),
                target_cluster: target_cluster.clone(),
                interval: self.config.checkpoint_interval,
            };
            let stop = stop.clone();
            copiers.spawn(async move { checkpoints.run(stop).await });
        }
        loop {
            let shared = (&budget, &pacer);
            if let Err(e) = self
                .discover(
                    &source_cluster,
                    &target_cluster,
                    &mut running,
                    &mut copiers,
                    shared,
                    &stop,
                )
                .await
            {
                warn!(flow = %self.config.name, error = %e, "topic discovery failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.refresh) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                copiers.shutdown().await;
                info!(flow = %self.config.name, "mirror flow stopped");
                return Ok(());
            }
        }
    }

    async fn discover(
        &self,
        source_cluster: &str,
        target_cluster: &str,
        running: &mut BTreeSet<(String, u32)>,
        copiers: &mut tokio::task::JoinSet<()>,
        (budget, pacer): (&Arc<Semaphore>, &Arc<Pacer>),
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ClientError> {
        let source_admin = Admin::new(self.source.clone());
        let meta = source_admin.metadata(None).await?;
        for t in meta.topics {
            let selected = self.config.topics.is_match(&t.name)
                && !self
                    .config
                    .exclude
                    .as_ref()
                    .is_some_and(|e| e.is_match(&t.name));
            let Some(target) =
                target_topic(self.config.naming, source_cluster, target_cluster, &t.name)
            else {
                continue;
            };
            if !selected
                || t.partitions
                    .iter()
                    .all(|p| running.contains(&(t.name.clone(), p.id)))
            {
                continue;
            }
            self.ensure_target(
                &source_admin,
                &t.name,
                &target,
                t.partitions.len() as u32,
                source_cluster,
            )
            .await?;
            for p in &t.partitions {
                if !running.insert((t.name.clone(), p.id)) {
                    continue;
                }
                let copier = Copier {
                    flow: self.config.name.clone(),
                    source: self.source.clone(),
                    target: self.target.clone(),
                    source_topic: t.name.clone(),
                    target_topic: target.clone(),
                    partition: p.id,
                    fetch_bytes_max: self.config.fetch_bytes_max,
                    budget: budget.clone(),
                    pacer: pacer.clone(),
                    status: self.status.clone(),
                };
                let stop = stop.clone();
                copiers.spawn(async move { copier.run(stop).await });
            }
        }
        Ok(())
    }

    /// Creates the mirror topic on the target with the source's partition count and settings.
    async fn ensure_target(
        &self,
        source: &Admin,
        topic: &str,
        target: &str,
        partitions: u32,
        source_cluster: &str,
    ) -> Result<(), ClientError> {
        let described = source.describe_topic(topic).await?;
        let configs: Vec<(String, String)> = described
            .configs
            .into_iter()
            .filter(|(k, _)| SYNCED_SETTINGS.contains(&k.as_str()))
            .collect();
        let req = Request::CreateMirrorTopic {
            name: target.into(),
            partitions,
            configs,
            flow: self.config.name.clone(),
            source_cluster: source_cluster.into(),
            source_topic: topic.into(),
        };
        match self.target.call(&req, &[]).await {
            Ok(_) => {
                info!(flow = %self.config.name, topic, target, partitions, "created mirror topic");
                Ok(())
            }
            Err(e) if e.code() == Some(ErrorCode::TOPIC_EXISTS) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Carries committed offsets of matching groups from the source to the target, translated, for
/// groups with no members on the target (a group running there owns its own offsets).
struct Checkpoints {
    flow: String,
    source: Arc<Client>,
    target: Arc<Client>,
    groups: Regex,
    naming: Naming,
    source_cluster: String,
    target_cluster: String,
    interval: Duration,
}

impl Checkpoints {
    async fn run(self, stop: watch::Receiver<bool>) {
        let mut last: BTreeMap<(String, String, u32), u64> = BTreeMap::new();
        while !*stop.borrow() {
            if let Err(e) = self.sync_once(&mut last).await {
                warn!(flow = %self.flow, error = %e, "group checkpoint failed; retrying");
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn sync_once(
        &self,
        last: &mut BTreeMap<(String, String, u32), u64>,
    ) -> Result<(), ClientError> {
        let groups = match self.source.call(&Request::ListGroups {}, &[]).await?.0 {
            Response::Groups(g) => g,
            other => return Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        };
        let target_admin = Admin::new(self.target.clone());
        for g in groups.iter().filter(|g| self.groups.is_match(&g.group)) {
            let req = Request::FetchOffsets {
                group: g.group.clone(),
                partitions: None,
            };
            let committed = match self.source.call(&req, &[]).await?.0 {
                Response::CommittedOffsets(c) => c,
                other => return Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
            };
            let mut offsets = Vec::new();
            for c in committed {
                let Some(topic) = target_topic(
                    self.naming,
                    &self.source_cluster,
                    &self.target_cluster,
                    &c.topic,
                ) else {
                    continue;
                };
                // Prefix mirrors keep source offsets; never point past what has been copied.
                let Ok((mirrored, _)) = target_admin
                    .list_offset(&topic, c.partition, OffsetSpec::Latest)
                    .await
                else {
                    continue;
                };
                let offset = c.offset.min(mirrored);
                let key = (g.group.clone(), topic.clone(), c.partition);
                if last.get(&key) == Some(&offset) {
                    continue;
                }
                last.insert(key, offset);
                offsets.push(strait_protocol::message::CommittedOffset {
                    topic,
                    partition: c.partition,
                    offset,
                    metadata: c.metadata,
                });
            }
            if offsets.is_empty() {
                continue;
            }
            let commit = Request::CommitOffsets {
                group: g.group.clone(),
                member_id: String::new(),
                generation: -1,
                offsets,
            };
            match self.target.call(&commit, &[]).await {
                Ok(_) => {}
                // The group runs on the target: its own commits win.
                Err(e) if e.code() == Some(ErrorCode::GROUP_NOT_EMPTY) => {
                    last.retain(|k, _| k.0 != g.group)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Copies one partition.
struct Copier {
    flow: String,
    source: Arc<Client>,
    target: Arc<Client>,
    source_topic: String,
    target_topic: String,
    partition: u32,
    fetch_bytes_max: u32,
    budget: Arc<Semaphore>,
    pacer: Arc<Pacer>,
    status: Arc<Mutex<FlowStatus>>,
}

/// Spaces copies out so the flow stays under its rate cap, across all its partitions.
struct Pacer {
    rate: Option<u64>,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    async fn pace(&self, bytes: usize) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let wait_until = {
            let mut next = lock(&self.next);
            let now = tokio::time::Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

impl Copier {
    async fn run(self, stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            match self.copy().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(flow = %self.flow, topic = %self.source_topic, partition = self.partition, error = %e,
                        "copy interrupted; resuming from the target's end");
                    self.update(|s| s.last_error = Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut PartitionStatus)) {
        let mut status = lock(&self.status);
        let entry = status
            .partitions
            .entry((self.source_topic.clone(), self.partition))
            .or_insert_with(|| PartitionStatus {
                source_topic: self.source_topic.clone(),
                partition: self.partition,
                target_topic: self.target_topic.clone(),
                ..Default::default()
            });
        f(entry);
    }

    /// Resumes at the target's log end and copies until an error.
    async fn copy(&self) -> Result<(), ClientError> {
        let target_admin = Admin::new(self.target.clone());
        let (mut position, _) = target_admin
            .list_offset(&self.target_topic, self.partition, OffsetSpec::Latest)
            .await?;
        self.update(|s| s.mirrored_offset = position);
        let limits = DecodeLimits::default();
        loop {
            let fetch = Request::Fetch {
                topic: self.source_topic.clone(),
                partition: self.partition,
                offset: position,
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: self.fetch_bytes_max,
            };
            let permit = self
                .budget
                .acquire_many(self.fetch_bytes_max)
                .await
                .map_err(|_| ClientError::Invalid("flow stopped".into()))?;
            let (high_watermark, payload) = match self.source.call(&fetch, &[]).await {
                Ok((Response::Fetched { high_watermark, .. }, payload)) => {
                    (high_watermark, payload)
                }
                Ok((other, _)) => {
                    return Err(ClientError::Invalid(format!(
                        "unexpected fetch answer {other:?}"
                    )))
                }
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    position = self.skip_deleted(position).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.update(|s| s.source_end_offset = high_watermark);
            let batches: Vec<Bytes> = split_batches(payload, &limits)?
                .into_iter()
                .filter(|b| b.next_offset().0 > position)
                .map(|b| b.into_bytes())
                .collect();
            if batches.is_empty() {
                continue;
            }
            self.pacer.pace(batches.iter().map(Bytes::len).sum()).await;
            let append = Request::MirrorAppend {
                topic: self.target_topic.clone(),
                partition: self.partition,
            };
            match self.target.call(&append, &batches).await?.0 {
                Response::Produced { last_offset, .. } => position = position.max(last_offset + 1),
                other => {
                    return Err(ClientError::Invalid(format!(
                        "unexpected append answer {other:?}"
                    )))
                }
            }
            drop(permit);
            self.update(|s| {
                s.mirrored_offset = position;
                s.last_error = None;
            });
        }
    }

    /// The source deleted what we were about to copy: report the gap and jump over it.
    async fn skip_deleted(&self, position: u64) -> Result<u64, ClientError> {
        let source_admin = Admin::new(self.source.clone());
        let (start, _) = source_admin
            .list_offset(&self.source_topic, self.partition, OffsetSpec::Earliest)
            .await?;
        if start <= position {
            return Err(ClientError::Invalid(format!(
                "offset {position} out of range though the source starts at {start}"
            )));
        }
        warn!(flow = %self.flow, topic = %self.source_topic, partition = self.partition, from = position, to = start,
            "GAP: source offsets {position}..{start} were deleted by retention before they were mirrored");
        self.update(|s| s.gaps.push((position, start)));
        Ok(start)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
