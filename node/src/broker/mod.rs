//! The broker: the topics of this node, their partition logs, and the background work that
//! keeps them flushed, trimmed and compacted.
//!
//! Layout on disk: `<data>/topics/<topic>/topic.json` (partition count and settings) and one
//! directory per partition, `<data>/topics/<topic>/<partition>/`, holding its segments.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use strait_protocol::{ErrorCode, Offset, TopicName, WireError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::now_ms;
use crate::storage::{compaction, FlushPolicy, LogConfig, PartitionLog};

/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
const TOPIC_FILE: &str = "topic.json";

/// One partition: its log and a watch that wakes long-polling fetches when it grows.
pub struct Partition {
    pub log: PartitionLog,
    pub grown: watch::Sender<u64>,
}

/// A topic and its partitions.
#[derive(Clone)]
pub struct Topic {
    pub name: TopicName,
    pub config: LogConfig,
    pub partitions: Vec<Arc<Partition>>,
    pub mirror: Option<MirrorOf>,
    /// Set when the topic was a mirror and was promoted to take writes (failover).
    pub promoted: Option<Promotion>,
}

#[derive(Serialize, Deserialize)]
struct TopicFile {
    partitions: u32,
    settings: Vec<(String, String)>,
    #[serde(default)]
    mirror: Option<MirrorOf>,
    #[serde(default)]
    promoted: Option<Promotion>,
}

/// One partition's divergent tail, moved to quarantine by a failback: source offsets
/// `from..to` (the same offsets in `<topic>.diverged`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub partition: u32,
    pub from: u64,
    pub to: u64,
    pub records: u64,
}

/// Where a mirror topic stood when it was promoted: the flow it came from and, per partition,
/// the log end at that moment. Everything below those offsets is the source's history (prefix
/// mirrors hold it at the source's own offsets), so they are the common point a failback
/// reconciles the old source against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub from: MirrorOf,
    pub at_ms: i64,
    pub end_offsets: Vec<u64>,
}

/// Marks a topic as the target of a mirror flow: read-only for clients, appended to only by
/// the flow at the source's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorOf {
    pub flow: String,
    pub source_cluster: String,
    pub source_topic: String,
}

/// The node's topics.
pub struct Broker {
    pub cluster: String,
    pub node_id: u32,
    data_dir: PathBuf,
    defaults: LogConfig,
    topics: DashMap<TopicName, Arc<Topic>>,
    producer_ids: std::sync::Mutex<ProducerIds>,
}

/// Hands out producer ids in blocks: the end of the current block is persisted before any id
/// of it is used, so ids are never reused across restarts.
struct ProducerIds {
    next: i64,
    block_end: i64,
}

const PRODUCER_ID_FILE: &str = "producer-ids";
const PRODUCER_ID_BLOCK: i64 = 1000;

impl Broker {
    /// Opens every topic found under `data_dir`, recovering each partition log.
    pub fn open(
        cluster: &str,
        node_id: u32,
        data_dir: &Path,
        defaults: LogConfig,
    ) -> anyhow::Result<Arc<Broker>> {
        let topics_dir = data_dir.join("topics");
        fs::create_dir_all(&topics_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}; check --data-dir",
                topics_dir.display()
            )
        })?;
        let broker = Broker {
            cluster: cluster.into(),
            node_id,
            data_dir: data_dir.into(),
            defaults,
            topics: DashMap::new(),
            producer_ids: std::sync::Mutex::new(ProducerIds {
                next: 0,
                block_end: 0,
            }),
        };
        let stored = fs::read_to_string(data_dir.join(PRODUCER_ID_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        if let Some(end) = stored {
            let mut ids = broker
                .producer_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            ids.next = end;
            ids.block_end = end;
        }
        for entry in fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains(".deleted-") {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let Ok(topic) = TopicName::new(name.clone()) else {
                warn!(dir = %entry.path().display(), "ignoring a directory that is not a topic name");
                continue;
            };
            let raw = match fs::read(entry.path().join(TOPIC_FILE)) {
                Ok(raw) => raw,
                Err(e) => {
                    warn!(topic = %name, error = %e, "topic directory without topic.json; skipped");
                    continue;
                }
            };
            let file: TopicFile = serde_json::from_slice(&raw)?;
            let config = broker.defaults.clone().with_settings(
                file.settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            )?;
            let mut t = broker.open_topic(topic.clone(), file.partitions, config)?;
            t.mirror = file.mirror;
            t.promoted = file.promoted;
            broker.topics.insert(topic, Arc::new(t));
        }
        info!(
            cluster,
            node_id,
            topics = broker.topics.len(),
            "broker opened"
        );
        Ok(Arc::new(broker))
    }

    fn open_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: LogConfig,
    ) -> anyhow::Result<Topic> {
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let dir = self.topic_dir(&name).join(p.to_string());
            let (log, report) =
                PartitionLog::open(&dir, &format!("{name}/{p}"), config.clone(), now_ms())?;
            if let Some((offset, reason)) = report.truncated {
                warn!(topic = %name, partition = p, first_lost_offset = offset.0, %reason, "recovery truncated a torn tail");
            }
            let (grown, _) = watch::channel(log.high_watermark().0);
            parts.push(Arc::new(Partition { log, grown }));
        }
        Ok(Topic {
            name,
            config,
            partitions: parts,
            mirror: None,
            promoted: None,
        })
    }

    fn topic_dir(&self, name: &TopicName) -> PathBuf {
        self.data_dir.join("topics").join(name.as_str())
    }

    /// A fresh producer id (epoch 0) for an idempotent producer.
    pub fn allocate_producer_id(&self) -> Result<i64, WireError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.next >= ids.block_end {
            let end = ids.next + PRODUCER_ID_BLOCK;
            crate::storage::log::write_atomically(
                &self.data_dir.join(PRODUCER_ID_FILE),
                end.to_string().as_bytes(),
            )
            .map_err(|e| {
                WireError::new(
                    ErrorCode::STORAGE,
                    format!("cannot persist producer ids: {e}"),
                )
            })?;
            ids.block_end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, WireError> {
        let parsed = TopicName::new(name)
            .map_err(|e| WireError::new(ErrorCode::INVALID_TOPIC, e.to_string()))?;
        self.topics.get(&parsed).map(|t| t.clone()).ok_or_else(|| {
            WireError::new(
                ErrorCode::UNKNOWN_TOPIC,
                format!("topic {name:?} does not exist on cluster {}; create it with `strait topic create {name} --partitions N`", self.cluster),
            )
        })
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, WireError> {
        let t = self.topic(topic)?;
        t.partitions.get(partition as usize).cloned().ok_or_else(|| {
            WireError::new(
                ErrorCode::UNKNOWN_PARTITION,
                format!("topic {topic:?} has partitions 0..{}; partition {partition} does not exist", t.partitions.len()),
            )
        })
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<Arc<Topic>> = self.topics.iter().map(|t| t.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a topic; its settings are the node defaults overridden by `settings`.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: &[(String, String)],
    ) -> Result<Arc<Topic>, WireError> {
        self.create_topic_with(name, partitions, settings, None)
    }

    /// Creates a topic, optionally as the read-only target of a mirror flow.
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        settings: &[(String, String)],
        mirror: Option<MirrorOf>,
    ) -> Result<Arc<Topic>, WireError> {
        let parsed = TopicName::new(name)
            .map_err(|e| WireError::new(ErrorCode::INVALID_TOPIC, e.to_string()))?;
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("a topic needs 1 to {PARTITIONS_MAX} partitions, not {partitions}"),
            ));
        }
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let config = self
            .defaults
            .clone()
            .with_settings(pairs.iter().map(String::as_str))
            .map_err(|e| WireError::new(ErrorCode::INVALID_CONFIG, e.to_string()))?;
        let entry = self.topics.entry(parsed.clone());
        if let dashmap::Entry::Occupied(_) = entry {
            return Err(WireError::new(ErrorCode::TOPIC_EXISTS, format!("topic {name:?} already exists; describe it with `strait topic describe {name}`")));
        }
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot create topic {name:?}: {e}"),
            )
        };
        let dir = self.topic_dir(&parsed);
        fs::create_dir_all(&dir).map_err(|e| storage(&e))?;
        let file = TopicFile {
            partitions,
            settings: settings.to_vec(),
            mirror: mirror.clone(),
            promoted: None,
        };
        let raw = serde_json::to_vec_pretty(&file).map_err(|e| storage(&e))?;
        crate::storage::log::write_atomically(&dir.join(TOPIC_FILE), &raw)
            .map_err(|e| storage(&e))?;
        let mut topic = self
            .open_topic(parsed, partitions, config)
            .map_err(|e| storage(&e))?;
        topic.mirror = mirror;
        let topic = Arc::new(topic);
        entry.or_insert(topic.clone());
        info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Grows a topic to `partitions` partitions (never shrinks: records are keyed to
    /// partitions). Existing partitions keep serving throughout; the new ones start empty.
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, WireError> {
        let topic = self.topic(name)?;
        let have = topic.partitions.len() as u32;
        if partitions <= have || partitions > PARTITIONS_MAX {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("topic {name:?} has {have} partitions; it can grow to {}..={PARTITIONS_MAX}, not {partitions} (partitions are never removed)", have + 1),
            ));
        }
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot grow topic {name:?}: {e}"),
            )
        };
        let dir = self.topic_dir(&topic.name);
        let mut grown = (*topic).clone();
        for p in have..partitions {
            let (log, _) = PartitionLog::open(
                &dir.join(p.to_string()),
                &format!("{name}/{p}"),
                topic.config.clone(),
                now_ms(),
            )
            .map_err(|e| storage(&e))?;
            let (watch, _) = watch::channel(log.high_watermark().0);
            grown
                .partitions
                .push(Arc::new(Partition { log, grown: watch }));
        }
        let grown = self.replace_topic(grown, |file| file.partitions = partitions)?;
        info!(topic = name, from = have, to = partitions, "topic grown");
        Ok(grown)
    }

    /// Changes the named settings of a topic; the others keep their values. Every partition
    /// log takes the new settings at once (retention and compaction on their next pass,
    /// flush and segment settings on the next append), and `topic.json` keeps them.
    pub fn alter_topic_config(
        &self,
        name: &str,
        settings: &[(String, String)],
    ) -> Result<Arc<Topic>, WireError> {
        let topic = self.topic(name)?;
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let config = topic
            .config
            .clone()
            .with_settings(pairs.iter().map(String::as_str))
            .map_err(|e| WireError::new(ErrorCode::INVALID_CONFIG, e.to_string()))?;
        for p in &topic.partitions {
            p.log.set_config(config.clone());
        }
        let mut altered = (*topic).clone();
        altered.config = config;
        let altered = self.replace_topic(altered, |file| {
            for (k, v) in settings {
                file.settings.retain(|(have, _)| have != k);
                file.settings.push((k.clone(), v.clone()));
            }
        })?;
        info!(topic = name, settings = ?pairs, "topic settings altered");
        Ok(altered)
    }

    /// Makes a mirror topic writable (failover): it stops being a mirror, and its log end per
    /// partition is kept as the promotion point. Promoting a promoted topic changes nothing.
    pub fn promote_topic(&self, name: &str) -> Result<Arc<Topic>, WireError> {
        let topic = self.topic(name)?;
        let Some(from) = topic.mirror.clone() else {
            if topic.promoted.is_some() {
                return Ok(topic);
            }
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("topic {name:?} is not a mirror topic; only mirror topics are promoted"),
            ));
        };
        let promotion = Promotion {
            from,
            at_ms: now_ms(),
            end_offsets: topic.partitions.iter().map(|p| p.log.log_end().0).collect(),
        };
        let mut promoted = (*topic).clone();
        promoted.mirror = None;
        promoted.promoted = Some(promotion.clone());
        let promoted = self.replace_topic(promoted, |file| {
            file.mirror = None;
            file.promoted = Some(promotion.clone());
        })?;
        info!(topic = name, ends = ?promotion.end_offsets, "mirror topic promoted: it now takes writes");
        Ok(promoted)
    }

    /// Failback on the old primary: for each partition, the records at and after the common
    /// point (`common[p]`, where the replica's promoted copy took over) are copied, at their
    /// own offsets, into `<name>.diverged` and cut from the topic, which then becomes a
    /// read-only mirror of the new primary's copy (`mirror_of`). Nothing is dropped that was
    /// not quarantined first; running it again after a crash repeats no copy.
    pub fn quarantine_divergence(
        &self,
        name: &str,
        common: &[u64],
        mirror_of: MirrorOf,
    ) -> Result<Vec<Divergence>, WireError> {
        let topic = self.topic(name)?;
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("failback of topic {name:?}: {e}"),
            )
        };
        let quarantine = format!("{name}.diverged");
        let mut report = Vec::new();
        for (p, partition) in topic.partitions.iter().enumerate() {
            let log = &partition.log;
            log.flush(now_ms()).map_err(|e| storage(&e))?;
            let (from, end) = (common.get(p).copied().unwrap_or(0), log.log_end().0);
            if from >= end {
                continue;
            }
            let q = match self.topic(&quarantine) {
                Ok(t) => t,
                Err(_) => {
                    let settings: Vec<(String, String)> = topic.config.to_pairs();
                    let n = topic.partitions.len() as u32;
                    self.create_topic(&quarantine, n, &settings)?
                }
            };
            let target = &q
                .partitions
                .get(p)
                .ok_or_else(|| storage(&format!("{quarantine} has too few partitions")))?
                .log;
            let mut at = from.max(target.log_end().0);
            let mut records = 0u64;
            while at < end {
                let read = log.read(Offset(at), 4 << 20).map_err(|e| storage(&e))?;
                let limits = topic.config.decode_limits();
                let batches = strait_protocol::batch::split_batches(read.batches, &limits)
                    .map_err(|e| storage(&e))?;
                let Some(last) = batches.last().map(|b| b.next_offset().0) else {
                    break;
                };
                for b in batches.into_iter().filter(|b| b.base_offset().0 >= at) {
                    records += u64::from(b.record_count());
                    target.append_at(b, now_ms()).map_err(|e| storage(&e))?;
                }
                at = last.max(at + 1);
            }
            target.flush(now_ms()).map_err(|e| storage(&e))?;
            log.truncate_to(Offset(from), now_ms())
                .map_err(|e| storage(&e))?;
            let _ = partition.grown.send(from);
            report.push(Divergence {
                partition: p as u32,
                from,
                to: end,
                records,
            });
        }
        let mut mirror = (*topic).clone();
        mirror.mirror = Some(mirror_of.clone());
        mirror.promoted = None;
        self.replace_topic(mirror, |file| {
            file.mirror = Some(mirror_of);
            file.promoted = None;
        })?;
        info!(topic = name, quarantine, divergence = ?report, "topic reconciled for failback; it is now a mirror");
        Ok(report)
    }

    /// Persists a change to a topic's `topic.json`, then serves `topic` in place of the old one.
    fn replace_topic(
        &self,
        topic: Topic,
        change: impl FnOnce(&mut TopicFile),
    ) -> Result<Arc<Topic>, WireError> {
        let name = topic.name.clone();
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot update topic {name:?}: {e}"),
            )
        };
        let path = self.topic_dir(&name).join(TOPIC_FILE);
        let raw = fs::read(&path).map_err(|e| storage(&e))?;
        let mut file: TopicFile = serde_json::from_slice(&raw).map_err(|e| storage(&e))?;
        change(&mut file);
        let raw = serde_json::to_vec_pretty(&file).map_err(|e| storage(&e))?;
        crate::storage::log::write_atomically(&path, &raw).map_err(|e| storage(&e))?;
        let topic = Arc::new(topic);
        self.topics.insert(name, topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: it disappears at once, its files are removed in the background.
    pub fn delete_topic(&self, name: &str) -> Result<(), WireError> {
        let topic = self.topic(name)?;
        self.topics.remove(&topic.name);
        let dir = self.topic_dir(&topic.name);
        let doomed = dir.with_file_name(format!("{name}.deleted-{}", now_ms()));
        fs::rename(&dir, &doomed).map_err(|e| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot delete topic {name:?}: {e}"),
            )
        })?;
        std::thread::spawn(move || {
            drop(topic);
            let _ = fs::remove_dir_all(doomed);
        });
        info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Starts the background workers: interval flushes, sealed-segment syncs, retention and
    /// compaction. They run on blocking threads since they do file I/O.
    pub fn start_background(self: &Arc<Self>, retention_check: Duration) {
        let broker = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("strait-maintenance".into())
            .spawn(move || {
                let mut last_retention = std::time::Instant::now();
                let mut last_flush: BTreeMap<String, i64> = BTreeMap::new();
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                    let Some(b) = broker.upgrade() else { return };
                    let now = now_ms();
                    let check = last_retention.elapsed() >= retention_check;
                    for t in b.topics() {
                        for p in &t.partitions {
                            b.maintain(&t, p, now, check, &mut last_flush);
                        }
                    }
                    if check {
                        last_retention = std::time::Instant::now();
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the maintenance thread: {e}"));
    }

    fn maintain(
        &self,
        t: &Topic,
        p: &Partition,
        now: i64,
        check: bool,
        last_flush: &mut BTreeMap<String, i64>,
    ) {
        let log = &p.log;
        if let FlushPolicy::IntervalMs(ms) = t.config.flush {
            let last = last_flush.entry(log.name().to_string()).or_insert(now);
            if now - *last >= ms as i64 {
                *last = now;
                if let Err(e) = log.flush(now) {
                    warn!(log = log.name(), error = %e, "interval flush failed");
                }
                p.grown.send_replace(log.high_watermark().0);
            }
        }
        if let Err(e) = log.flush_sealed(now) {
            warn!(log = log.name(), error = %e, "sealed segment sync failed");
        }
        if check {
            if let Err(e) = log.apply_retention(now) {
                warn!(log = log.name(), error = %e, "retention failed");
            }
            if t.config.cleanup.compact {
                match compaction::clean(log, now) {
                    Ok(s) if s.segments_cleaned > 0 => info!(
                        log = log.name(),
                        cleaned = s.segments_cleaned,
                        records_before = s.records_before,
                        records_after = s.records_after,
                        "compacted"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(log = log.name(), error = %e, "compaction failed"),
                }
            }
        }
    }

    /// Flushes and closes every log: the next start recovers nothing.
    pub fn close(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.log.close(now_ms()) {
                    warn!(log = p.log.name(), error = %e, "close failed");
                }
            }
        }
        info!("broker closed");
    }
}
