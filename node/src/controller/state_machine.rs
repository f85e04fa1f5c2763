//! Applies the committed metadata log to the [`MetadataImage`] and keeps its snapshot.
//!
//! The image lives in memory; what survives a restart is the last snapshot (one file, written
//! durably and atomically, so a half-written or half-installed snapshot never survives a crash)
//! plus the log after it, which openraft re-applies up to the persisted commit point. Every
//! applied batch publishes the new image on a watch channel, which is how the rest of the node
//! reads metadata.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::{MetadataImage, Outcome};
use super::stored::{blocking, damaged, decode, encode, read_state};
use super::{StorageError, TypeConfig};
use crate::durable_file;

/// The snapshot as stored: openraft's description of it and the encoded image.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The state machine (cheap to clone: clones share it, as openraft's snapshot builder does).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<tokio::sync::Mutex<Inner>>,
    published: Arc<watch::Sender<Arc<MetadataImage>>>,
}

struct Inner {
    dir: PathBuf,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    image: MetadataImage,
    current: Option<StoredSnapshot>,
    built: u64,
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from its last snapshot.
    pub async fn open(dir: PathBuf) -> Result<StateMachine, StorageError> {
        let inner = blocking(move || load(&dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let (published, _) = watch::channel(Arc::new(inner.image.clone()));
        Ok(StateMachine {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            published: Arc::new(published),
        })
    }

    /// The image as last applied, and every later one as it is applied.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }
}

fn load(dir: &Path) -> std::io::Result<Inner> {
    durable_file::create_dir(dir)?;
    let path = dir.join("snapshot");
    let current: Option<StoredSnapshot> = read_state(&path)?;
    let (image, last_applied, membership) = match &current {
        Some(s) => (
            decode(&s.data).map_err(|e| damaged(&path, e))?,
            s.meta.last_log_id,
            s.meta.last_membership.clone(),
        ),
        None => Default::default(),
    };
    Ok(Inner {
        dir: dir.to_path_buf(),
        last_applied,
        membership,
        image,
        current,
        built: 0,
    })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(command) => inner.image.apply(&command),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Applied
                }
            });
        }
        self.published.send_replace(Arc::new(inner.image.clone()));
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let data = snapshot.into_inner();
        let image: MetadataImage =
            decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let path = inner.dir.join("snapshot");
        let stored = blocking(move || {
            durable_file::write(&path, &encode(&stored)?)?;
            Ok(stored)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        inner.image = image;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.current = Some(stored);
        self.published.send_replace(Arc::new(inner.image.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner.current.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut inner = self.inner.lock().await;
        let data = encode(&inner.image).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        inner.built += 1;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}-{}",
                inner.last_applied.map_or(0, |l| l.leader_id.term),
                inner.last_applied.map_or(0, |l| l.index),
                crate::now_ms(),
                inner.built
            ),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let path = inner.dir.join("snapshot");
        let signature = meta.signature();
        let stored = blocking(move || {
            durable_file::write(&path, &encode(&stored)?)?;
            Ok(stored)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        inner.current = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::testing::log_id;

    use super::*;
    use crate::controller::Command;

    #[tokio::test]
    async fn a_snapshot_brings_the_image_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sm = StateMachine::open(dir.path().into()).await.expect("open");
        let commands = [
            Command::RegisterNode {
                node_id: 1,
                address: "127.0.0.1:9001".into(),
                kafka_address: None,
                rack: None,
            },
            Command::CreateTopic {
                name: "orders".into(),
                partitions: 2,
                replication_factor: None,
                settings: BTreeMap::new(),
            },
        ];
        let entries = commands.iter().enumerate().map(|(i, c)| Entry {
            log_id: log_id(1, 1, i as u64 + 1),
            payload: EntryPayload::Normal(c.clone()),
        });
        let outcomes = sm.apply(entries.collect::<Vec<_>>()).await.expect("apply");
        assert!(
            matches!(outcomes[1], Outcome::TopicCreated { .. }),
            "{outcomes:?}"
        );
        let applied = sm.image().borrow().clone();
        assert_eq!(applied.topics["orders"].partitions.len(), 2);
        sm.build_snapshot().await.expect("snapshot");
        drop(sm);
        let mut sm = StateMachine::open(dir.path().into()).await.expect("reopen");
        assert_eq!(*sm.image().borrow().clone(), *applied);
        let (last, _) = sm.applied_state().await.expect("state");
        assert_eq!(last, Some(log_id(1, 1, 2)));
    }
}
