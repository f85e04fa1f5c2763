//! The broker: the topics of this node, their partition logs, and the background work that
//! keeps them flushed, trimmed and compacted.
//!
//! Layout on disk: `<data>/topics/<topic>/topic.json` (partition count and settings) and one
//! directory per partition, `<data>/topics/<topic>/<partition>/`, holding its segments.
//!
//! Rooms: this module is the topic registry (open, look up, create, grow, alter, delete);
//! `failback` holds promotion and failback, `maintenance` the background flushes, retention
//! and compaction, `producer_ids` the persisted producer-id blocks.
//!
//! Topic metadata changes are serialized by one lock (`changes`): each is a read-modify-write
//! of `topic.json` and of the registry entry, and two interleaved ones (an alter racing an
//! add-partitions) would drop one's effect. The registry map itself is never locked across
//! I/O: a change builds its new `Topic` under `changes` only, then swaps it in.

mod failback;
mod maintenance;
mod producer_ids;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use strait_protocol::{ErrorCode, NodeId, PartitionId, TopicName, WireError};
use tokio::sync::watch;
use tracing::{info, warn};

use self::producer_ids::ProducerIds;
pub use self::producer_ids::ProducerIdsError;
use crate::data_dir_lock::DataDirLock;
use crate::storage::{LogConfig, PartitionLog};
use crate::{durable_file, fd_budget, now_ms};

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
    pub node_id: NodeId,
    data_dir: PathBuf,
    defaults: LogConfig,
    topics: DashMap<TopicName, Arc<Topic>>,
    producer_ids: ProducerIds,
    /// Serializes topic metadata changes (see the module doc).
    changes: Mutex<()>,
    /// Held for the broker's lifetime: no second node opens this data directory.
    _data_dir_lock: DataDirLock,
}

/// Proof that the caller holds the topic-change lock.
type Changing<'a> = MutexGuard<'a, ()>;

impl Broker {
    /// Opens every topic found under `data_dir`, recovering each partition log. Takes the data
    /// directory's lock first, so a second node on the same directory stops here.
    pub fn open(
        cluster: &str,
        node_id: NodeId,
        data_dir: &Path,
        defaults: LogConfig,
    ) -> anyhow::Result<Arc<Broker>> {
        let lock = DataDirLock::acquire(data_dir)?;
        crate::data_format::check_or_stamp(data_dir)?;
        let topics_dir = data_dir.join("topics");
        durable_file::create_dir(&topics_dir).map_err(|e| {
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
            producer_ids: ProducerIds::load(data_dir)?,
            changes: Mutex::new(()),
            _data_dir_lock: lock,
        };
        let found = broker.stored_topics(&topics_dir)?;
        let segments: u64 = found.iter().map(|(_, dir, _)| count_segments(dir)).sum();
        fd_budget::check(
            &format!(
                "recovering {} topics ({segments} segment files)",
                found.len()
            ),
            segments,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot recover the data directory {}: {e}",
                data_dir.display()
            )
        })?;
        for (topic, _, file) in found {
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
            node_id = node_id.0,
            topics = broker.topics.len(),
            "broker opened"
        );
        Ok(Arc::new(broker))
    }

    /// The topics stored under `topics_dir`, with their directories and `topic.json`. Debris is
    /// removed: deleted topics whose files were not yet gone, and directories without a
    /// `topic.json` (a create is acknowledged only after its `topic.json` is durable, which is
    /// its last step, so such a directory is a create that never completed).
    fn stored_topics(
        &self,
        topics_dir: &Path,
    ) -> anyhow::Result<Vec<(TopicName, PathBuf, TopicFile)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(topics_dir)? {
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
            let path = entry.path().join(TOPIC_FILE);
            let raw = match fs::read(&path) {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    warn!(topic = %name, dir = %entry.path().display(),
                        "removing a topic directory without topic.json: a create that never completed");
                    fs::remove_dir_all(entry.path())?;
                    continue;
                }
                Err(e) => anyhow::bail!(
                    "cannot read {}: {e}; fix the file's permissions or disk and restart",
                    path.display()
                ),
            };
            let file: TopicFile = serde_json::from_slice(&raw).map_err(|e| {
                anyhow::anyhow!("{} is damaged ({e}); restore it from a backup or another replica of the topic and restart", path.display())
            })?;
            found.push((topic, entry.path(), file));
        }
        Ok(found)
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

    /// A fresh producer id (epoch 0) for an idempotent producer; never one handed out before.
    pub fn allocate_producer_id(&self) -> Result<i64, WireError> {
        self.producer_ids.allocate()
    }

    fn changing(&self) -> Changing<'_> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
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

    pub fn partition(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Arc<Partition>, WireError> {
        let t = self.topic(topic)?;
        t.partitions.get(partition.0 as usize).cloned().ok_or_else(|| {
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
        let changing = self.changing();
        self.create_topic_locked(&changing, name, partitions, settings, mirror)
    }

    /// Creates a topic, all or nothing: the descriptor budget is checked before the disk is
    /// touched; the partitions are made first and `topic.json` last (durably), so a failure or
    /// a crash part way leaves no topic, and whatever was made is removed (here, or by the next
    /// open, which drops topic directories without `topic.json`).
    fn create_topic_locked(
        &self,
        _changing: &Changing<'_>,
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
        if self.topics.contains_key(&parsed) {
            return Err(WireError::new(ErrorCode::TOPIC_EXISTS, format!("topic {name:?} already exists; describe it with `strait topic describe {name}`")));
        }
        fd_budget::check(
            &format!("creating topic {name:?} with {partitions} partitions"),
            u64::from(partitions),
        )
        .map_err(descriptors)?;
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot create topic {name:?}: {e}"),
            )
        };
        let dir = self.topic_dir(&parsed);
        if dir.exists() {
            // Debris of a create that failed and could not clean up after itself.
            fs::remove_dir_all(&dir).map_err(|e| storage(&e))?;
        }
        let made = durable_file::create_dir(&dir)
            .map_err(|e| storage(&e))
            .and_then(|()| {
                self.open_topic(parsed.clone(), partitions, config)
                    .map_err(|e| storage(&e))
            })
            .and_then(|topic| {
                let file = TopicFile {
                    partitions,
                    settings: settings.to_vec(),
                    mirror: mirror.clone(),
                    promoted: None,
                };
                let raw = serde_json::to_vec_pretty(&file).map_err(|e| storage(&e))?;
                durable_file::write(&dir.join(TOPIC_FILE), &raw).map_err(|e| storage(&e))?;
                Ok(topic)
            });
        let mut topic = match made {
            Ok(topic) => topic,
            Err(e) => {
                remove_debris(&dir);
                return Err(e);
            }
        };
        topic.mirror = mirror;
        let topic = Arc::new(topic);
        self.topics.insert(parsed, topic.clone());
        info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Grows a topic to `partitions` partitions (never shrinks: records are keyed to
    /// partitions). Existing partitions keep serving throughout; the new ones start empty.
    /// All or nothing: on a failure the new partitions' directories are removed.
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, WireError> {
        let changing = self.changing();
        let topic = self.topic(name)?;
        let have = topic.partitions.len() as u32;
        if partitions <= have || partitions > PARTITIONS_MAX {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("topic {name:?} has {have} partitions; it can grow to {}..={PARTITIONS_MAX}, not {partitions} (partitions are never removed)", have + 1),
            ));
        }
        fd_budget::check(
            &format!("growing topic {name:?} from {have} to {partitions} partitions"),
            u64::from(partitions - have),
        )
        .map_err(descriptors)?;
        let storage = |e: &dyn std::fmt::Display| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot grow topic {name:?}: {e}"),
            )
        };
        let dir = self.topic_dir(&topic.name);
        let mut grown = (*topic).clone();
        let opened = (have..partitions).try_for_each(|p| {
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
            Ok(())
        });
        let result = opened.and_then(|()| {
            self.replace_topic(&changing, grown, |file| file.partitions = partitions)
        });
        if result.is_err() {
            for p in have..partitions {
                remove_debris(&dir.join(p.to_string()));
            }
        }
        let grown = result?;
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
        let changing = self.changing();
        let topic = self.topic(name)?;
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let config = topic
            .config
            .clone()
            .with_settings(pairs.iter().map(String::as_str))
            .map_err(|e| WireError::new(ErrorCode::INVALID_CONFIG, e.to_string()))?;
        let mut altered = (*topic).clone();
        altered.config = config.clone();
        let altered = self.replace_topic(&changing, altered, |file| {
            for (k, v) in settings {
                file.settings.retain(|(have, _)| have != k);
                file.settings.push((k.clone(), v.clone()));
            }
        })?;
        for p in &altered.partitions {
            p.log.set_config(config.clone());
        }
        info!(topic = name, settings = ?pairs, "topic settings altered");
        Ok(altered)
    }

    /// Persists a change to a topic's `topic.json`, then serves `topic` in place of the old one.
    /// The caller holds the change lock and built `topic` from the registry's current entry.
    fn replace_topic(
        &self,
        _changing: &Changing<'_>,
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
        durable_file::write(&path, &raw).map_err(|e| storage(&e))?;
        let topic = Arc::new(topic);
        self.topics.insert(name, topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: it disappears at once, its files are removed in the background. The
    /// rename out of the way is durable first, so a restart never brings the topic back.
    pub fn delete_topic(&self, name: &str) -> Result<(), WireError> {
        let _changing = self.changing();
        let topic = self.topic(name)?;
        let dir = self.topic_dir(&topic.name);
        let doomed = dir.with_file_name(format!("{name}.deleted-{}", now_ms()));
        fs::rename(&dir, &doomed)
            .and_then(|()| durable_file::sync_parent(&dir))
            .map_err(|e| {
                WireError::new(
                    ErrorCode::STORAGE,
                    format!("cannot delete topic {name:?}: {e}"),
                )
            })?;
        self.topics.remove(&topic.name);
        std::thread::spawn(move || {
            drop(topic);
            let _ = fs::remove_dir_all(doomed);
        });
        info!(topic = name, "topic deleted");
        Ok(())
    }
}

/// Removes what a failed create or grow left behind; a failure to do so is logged, and the
/// next open (or create of the same name) removes it.
fn remove_debris(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(dir = %dir.display(), error = %e, "could not remove what a failed create left behind");
        }
    }
}

fn descriptors(e: fd_budget::DescriptorsExhausted) -> WireError {
    WireError::new(ErrorCode::RESOURCE_EXHAUSTED, e.to_string())
}

/// The segment files under a topic directory: the descriptors its recovery keeps open.
fn count_segments(topic_dir: &Path) -> u64 {
    let Ok(partitions) = fs::read_dir(topic_dir) else {
        return 0;
    };
    partitions
        .flatten()
        .filter_map(|p| fs::read_dir(p.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Arc<Broker> {
        Broker::open("east", NodeId(1), dir, LogConfig::default()).expect("open")
    }

    /// An alter racing an add-partitions must keep both effects, in memory and in topic.json.
    #[test]
    fn racing_metadata_changes_keep_every_effect() {
        fd_budget::raise_limit();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = open(dir.path());
        broker.create_topic("race", 1, &[]).expect("create");
        for round in 0..1000u32 {
            let partitions = round + 2;
            let retention = (round + 1) * 1000;
            std::thread::scope(|s| {
                let grow = s.spawn(|| broker.add_partitions("race", partitions));
                let alter = s.spawn(|| {
                    broker.alter_topic_config(
                        "race",
                        &[("retention.ms".into(), retention.to_string())],
                    )
                });
                grow.join().expect("grow thread").expect("grow");
                alter.join().expect("alter thread").expect("alter");
            });
            let topic = broker.topic("race").expect("topic");
            assert_eq!(topic.partitions.len() as u32, partitions, "round {round}");
            assert_eq!(
                topic.config.retention_ms,
                Some(u64::from(retention)),
                "round {round}"
            );
        }
        drop(broker);
        let reopened = open(dir.path());
        let topic = reopened.topic("race").expect("topic after reopen");
        assert_eq!(topic.partitions.len(), 1001);
        assert_eq!(topic.config.retention_ms, Some(1_000_000));
    }

    #[test]
    fn a_second_broker_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = open(dir.path());
        let Err(err) = Broker::open("east", NodeId(2), dir.path(), LogConfig::default()) else {
            panic!("a second broker on the directory must be refused");
        };
        assert!(err.to_string().contains("in use by another node"), "{err}");
    }
}
