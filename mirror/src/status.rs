//! What a flow reports about itself: per partition progress, lag, gaps and errors, and the
//! flow-wide heartbeat latency and checkpoint freshness. Serialized as-is by `mirror status
//! --json` and the admin API, so field names are a contract.

use std::collections::BTreeMap;

use serde::Serialize;

/// Where one mirrored partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionState {
    /// Not yet connected or resuming.
    #[default]
    Starting,
    /// Behind the source and copying.
    Copying,
    /// Everything the source holds is copied.
    CaughtUp,
    /// The last attempt failed; retrying with backoff (see `last_error`).
    Retrying,
    /// The source topic was deleted; the mirror is kept (deletes are not propagated unless
    /// the flow is configured to).
    SourceDeleted,
}

/// One source range that was deleted on the source before it could be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// One mirrored partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub source_topic: String,
    pub partition: u32,
    pub target_topic: String,
    pub state: PartitionState,
    /// Next source offset to copy: everything below is on the target (or was skipped).
    pub mirrored_offset: u64,
    pub source_end_offset: u64,
    pub lag_records: u64,
    /// Estimated from the average stored size of the records copied so far.
    pub lag_bytes: u64,
    /// Age of the newest copied record while behind, 0 when caught up.
    pub lag_seconds: f64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    /// Batches not copied because they had already passed through the target cluster.
    pub batches_skipped_loop: u64,
    /// Target append acknowledgement minus the record's create time, for the last batch.
    pub replication_latency_ms: Option<i64>,
    /// Ranges of source offsets deleted on the source before they could be copied.
    pub gaps: Vec<Gap>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub(crate) newest_copied_ms: Option<i64>,
}

impl PartitionStatus {
    /// Fills the lag fields from the offsets, as of `now_ms`.
    pub fn refresh_lag(&mut self, now_ms: i64) {
        self.lag_records = self.source_end_offset.saturating_sub(self.mirrored_offset);
        self.lag_bytes = self
            .bytes_copied
            .checked_div(self.records_copied)
            .map_or(0, |avg| avg * self.lag_records);
        self.lag_seconds = match (self.lag_records, self.newest_copied_ms) {
            (0, _) => 0.0,
            (_, Some(ts)) => (now_ms - ts).max(0) as f64 / 1000.0,
            (_, None) => 0.0,
        };
    }
}

/// The flow's last heartbeat round trip: written on the source, seen appended on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeartbeatStatus {
    pub latency_ms: i64,
    pub at_ms: i64,
}

/// How fresh the carried-over group offsets are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointStatus {
    /// When the last pass over the source's groups finished.
    pub last_sync_ms: Option<i64>,
    pub groups: usize,
    pub offsets_committed: u64,
    pub last_error: Option<String>,
}

/// The whole flow's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowStatus {
    pub name: String,
    pub source_cluster: String,
    pub target_cluster: String,
    pub naming: String,
    /// Whether the last look at the source cluster succeeded.
    pub connected: bool,
    pub last_error: Option<String>,
    pub partitions: Vec<PartitionStatus>,
    pub deleted_source_topics: Vec<String>,
    pub heartbeat: Option<HeartbeatStatus>,
    pub checkpoints: Option<CheckpointStatus>,
    pub lag_records: u64,
    pub gaps: usize,
    /// Seconds since the flow last reached its source, while it cannot (0 when connected): the
    /// lag a partition hides, since the source's end is unknown until it heals.
    pub source_silent_seconds: f64,
    #[serde(skip)]
    pub(crate) last_contact_ms: Option<i64>,
    #[serde(skip)]
    pub(crate) by_partition: BTreeMap<(String, u32), PartitionStatus>,
}

impl FlowStatus {
    /// A copy with the partition list and lag totals filled in, as of `now_ms`.
    pub fn report(&self, now_ms: i64) -> FlowStatus {
        let mut out = self.clone();
        out.partitions = out
            .by_partition
            .values()
            .cloned()
            .map(|mut p| {
                p.refresh_lag(now_ms);
                p
            })
            .collect();
        out.lag_records = out.partitions.iter().map(|p| p.lag_records).sum();
        out.gaps = out.partitions.iter().map(|p| p.gaps.len()).sum();
        out.source_silent_seconds = match (out.connected, out.last_contact_ms) {
            (false, Some(t)) => (now_ms - t).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        out.by_partition.clear();
        out
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionStatus> {
        self.by_partition.get(&(topic.to_string(), partition))
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
