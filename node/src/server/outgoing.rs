//! Who copies from this node: the mirror flows whose source is this cluster. A flow's source
//! connection introduces itself as `strait-mirror/<flow>→<target>` (see
//! `strait_mirror::flow_client_id`), so each fetch it makes tells this node which flow reads
//! which partition from where. The status page draws them as arrows out of this node, with
//! the lag behind this node's end (what the flow itself reports as its lag).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use strait_protocol::PartitionId;

use crate::broker::Broker;

/// Readers kept at most; the least recently seen goes first.
const READERS_MAX: usize = 256;
/// A flow not seen fetching for this long is reported idle.
const IDLE_AFTER_MS: i64 = 10_000;

#[derive(Debug, Default)]
struct Reader {
    /// (topic, partition) → the offset it fetched from last.
    positions: BTreeMap<(String, u32), u64>,
    last_fetch_ms: i64,
}

/// One flow reading from this node, as `/status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutgoingFlow {
    pub flow: String,
    /// The cluster it copies into (or its addresses when the flow runs outside it).
    pub target: String,
    pub principal: String,
    pub topics: Vec<String>,
    pub partitions: usize,
    /// Records between the flow's positions and this node's high watermarks.
    pub lag_records: u64,
    pub last_fetch_ms_ago: i64,
    pub active: bool,
}

/// The flows that fetch from this node.
#[derive(Debug, Default)]
pub struct OutgoingFlows {
    readers: Mutex<BTreeMap<(String, String, String), Reader>>,
}

impl OutgoingFlows {
    /// Notes a fetch by a session that introduced itself with `client_id`; fetches by anything
    /// but a flow are ignored.
    pub fn record(
        &self,
        client_id: &str,
        principal: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        now_ms: i64,
    ) {
        let Some(label) = client_id.strip_prefix(strait_mirror::FLOW_CLIENT_ID_PREFIX) else {
            return;
        };
        let (flow, target) = label.split_once('→').unwrap_or((label, "?"));
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (flow.to_string(), target.to_string(), principal.to_string());
        if !readers.contains_key(&key) && readers.len() >= READERS_MAX {
            if let Some(oldest) = readers
                .iter()
                .min_by_key(|(_, r)| r.last_fetch_ms)
                .map(|(k, _)| k.clone())
            {
                readers.remove(&oldest);
            }
        }
        let reader = readers.entry(key).or_default();
        reader
            .positions
            .insert((topic.to_string(), partition), offset);
        reader.last_fetch_ms = now_ms;
    }

    /// Every flow seen, with its lag behind this node's logs.
    pub fn report(&self, broker: &Broker, now_ms: i64) -> Vec<OutgoingFlow> {
        let readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers
            .iter()
            .map(|((flow, target, principal), r)| {
                let mut topics: Vec<String> = r.positions.keys().map(|(t, _)| t.clone()).collect();
                topics.dedup();
                let lag_records = r
                    .positions
                    .iter()
                    .filter_map(|((t, p), offset)| {
                        let part = broker.partition(t, PartitionId(*p)).ok()?;
                        Some(part.log.high_watermark().0.saturating_sub(*offset))
                    })
                    .sum();
                OutgoingFlow {
                    flow: flow.clone(),
                    target: target.clone(),
                    principal: principal.clone(),
                    topics,
                    partitions: r.positions.len(),
                    lag_records,
                    last_fetch_ms_ago: now_ms - r.last_fetch_ms,
                    active: now_ms - r.last_fetch_ms < IDLE_AFTER_MS,
                }
            })
            .collect()
    }
}
