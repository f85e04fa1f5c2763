//! Promotion and failback: a mirror topic becomes writable when its flow's source is lost, and
//! the old primary later gives back the tail its replica never had.

use std::sync::Arc;

use strait_protocol::{ErrorCode, Offset, WireError};
use tracing::info;

use super::{Broker, Divergence, MirrorOf, Promotion, Topic};
use crate::now_ms;

impl Broker {
    /// Makes a mirror topic writable (failover): it stops being a mirror, and its log end per
    /// partition is kept as the promotion point. Promoting a promoted topic changes nothing.
    pub fn promote_topic(&self, name: &str) -> Result<Arc<Topic>, WireError> {
        let changing = self.changing();
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
        let promoted = self.replace_topic(&changing, promoted, |file| {
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
        let changing = self.changing();
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
                    self.create_topic_locked(&changing, &quarantine, n, &settings, None)?
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
        self.replace_topic(&changing, mirror, |file| {
            file.mirror = Some(mirror_of);
            file.promoted = None;
        })?;
        info!(topic = name, quarantine, divergence = ?report, "topic reconciled for failback; it is now a mirror");
        Ok(report)
    }
}
