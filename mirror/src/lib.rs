//! Cross-cluster replication: mirror flows, offset translation, checkpoints and failover.
//!
//! This crate will own the flows that consume from a source cluster and append into the target
//! at explicit offsets (`PartitionLog::append_at` on the node side), with the translation logic
//! kept pure. Until the mirror issue lands it holds no code; the storage and wire formats it needs
//! (explicit-offset appends, provenance in the batch header, leader epochs) already exist.
