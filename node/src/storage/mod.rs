//! Storage: partition logs made of segments, their recovery, retention and compaction.
//!
//! Batches are stored exactly as received (only the node-assigned base offset and leader epoch,
//! which precede the CRC, are written into them). Nothing here knows about the network.

pub mod compaction;
pub mod config;
pub mod corruption;
pub mod durability_journal;
pub mod log;
pub mod mirror_map;
pub mod producer_state;
pub mod provenance_log;
pub mod segment;

pub use config::{CleanupPolicy, ConfigError, FlushPolicy, LogConfig};
pub use log::{Appended, LogError, LogRead, LogStats, PartitionLog, RecoveryReport};
