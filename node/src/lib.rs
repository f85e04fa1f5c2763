//! The Strait broker: storage, partitions, the QUIC server and the `strait` binary.
//!
//! Owns everything a node keeps on disk. It must never acknowledge a write it has not stored as
//! its flush policy promises, never serve bytes that fail their CRC, and never let one peer's bad
//! input stop it serving others.

pub mod storage;

/// Milliseconds since the Unix epoch, the clock of every timestamp Strait stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub mod admin;
pub mod authz;
pub mod broker;
pub mod controller;
pub mod data_dir_lock;
pub mod data_format;
pub mod durable_file;
pub mod fd_budget;
pub mod groups;
pub mod impair;
pub mod metrics;
pub mod quota;
pub mod server;
