//! Group offset sync: committed offsets of matching source groups, translated exactly by the
//! target, committed on the target for groups with no members there (a group running on the
//! target owns its own offsets).
//!
//! The source's commits are followed by a short poll (default every 250 ms), so the target is
//! at most that plus one round trip behind a commit while the link is healthy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use strait_protocol::client::{Client, ClientError};
use strait_protocol::message::{CommittedOffset, Request, Response};
use strait_protocol::ErrorCode;
use tokio::sync::watch;
use tracing::warn;

use crate::copier::lock;
use crate::endpoint::Endpoint;
use crate::naming::{target_topic, Naming};
use crate::status::{now_ms, CheckpointStatus, FlowStatus};

pub(crate) struct Checkpoints {
    pub flow: String,
    pub source: Arc<Client>,
    pub target: Arc<dyn Endpoint>,
    pub groups: Regex,
    pub groups_exclude: Option<Regex>,
    pub naming: Naming,
    pub source_cluster: String,
    pub target_cluster: String,
    pub interval: Duration,
    pub status: Arc<Mutex<FlowStatus>>,
}

/// (group, target topic, partition) → the last offset committed on the target.
type Committed = BTreeMap<(String, String, u32), u64>;

impl Checkpoints {
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let mut last = Committed::new();
        lock(&self.status).checkpoints = Some(CheckpointStatus::default());
        while !*stop.borrow() {
            let result = self.sync_once(&mut last).await;
            if let Err(e) = &result {
                warn!(flow = %self.flow, error = %e, "group checkpoint failed; retrying");
            }
            {
                let mut status = lock(&self.status);
                let cp = status.checkpoints.get_or_insert_with(Default::default);
                match result {
                    Ok((groups, committed)) => {
                        cp.last_sync_ms = Some(now_ms());
                        cp.groups = groups;
                        cp.offsets_committed += committed;
                        cp.last_error = None;
                    }
                    Err(e) => cp.last_error = Some(e.to_string()),
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    fn selected(&self, group: &str) -> bool {
        self.groups.is_match(group)
            && !self
                .groups_exclude
                .as_ref()
                .is_some_and(|e| e.is_match(group))
    }

    /// One pass: returns the groups looked at and the offsets committed on the target.
    async fn sync_once(&self, last: &mut Committed) -> Result<(usize, u64), ClientError> {
        let groups = match self.source.call(&Request::ListGroups {}, &[]).await?.0 {
            Response::Groups(g) => g,
            other => return Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        };
        let mut seen = 0;
        let mut committed_total = 0;
        for g in groups.iter().filter(|g| self.selected(&g.group)) {
            seen += 1;
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
                if target_topic(
                    self.naming,
                    &self.source_cluster,
                    &self.target_cluster,
                    &c.topic,
                )
                .is_none()
                {
                    continue;
                }
                let translate = Request::TranslateOffset {
                    source_cluster: self.source_cluster.clone(),
                    topic: c.topic.clone(),
                    partition: c.partition,
                    offset: c.offset,
                    position: true,
                };
                let (topic, offset) = match self.target.call(&translate, &[]).await {
                    Ok((Response::Translated { topic, offset, .. }, _)) => (topic, offset),
                    // Not mirrored yet (the topic is still being created): next pass.
                    Ok(_) | Err(ClientError::Wire(_)) => continue,
                    Err(e) => return Err(e),
                };
                let key = (g.group.clone(), topic.clone(), c.partition);
                if last.get(&key) == Some(&offset) {
                    continue;
                }
                last.insert(key, offset);
                offsets.push(CommittedOffset {
                    topic,
                    partition: c.partition,
                    offset,
                    metadata: c.metadata,
                });
            }
            if offsets.is_empty() {
                continue;
            }
            let n = offsets.len() as u64;
            let commit = Request::CommitOffsets {
                group: g.group.clone(),
                member_id: String::new(),
                generation: -1,
                offsets,
            };
            match self.target.call(&commit, &[]).await {
                Ok(_) => committed_total += n,
                // The group runs on the target: its own commits win.
                Err(e) if e.code() == Some(ErrorCode::GROUP_NOT_EMPTY) => {
                    last.retain(|k, _| k.0 != g.group)
                }
                Err(e) => return Err(e),
            }
        }
        Ok((seen, committed_total))
    }
}
