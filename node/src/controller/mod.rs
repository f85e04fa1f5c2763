//! The controller: the cluster's single authority over nodes, topics, partition replicas,
//! leaders, leader epochs and in-sync sets, kept as a replicated metadata log on openraft.
//!
//! Voters (1, 3 or 5 nodes, Kafka's combined mode) agree on the log; every other node follows
//! it as a learner. Every openraft type stays inside this module, so a version bump of the
//! library touches one room:
//!
//! - [`image`]: what the log describes (the metadata image) and the commands that change it.
//!   Applying a command is deterministic, so every node that applied the same log holds the
//!   same image.
//! - [`log_store`]: the durable Raft log and vote: fsynced before openraft is told they are.
//! - [`state_machine`]: applies the log to the image and keeps its snapshot.
//! - [`network`]: Raft calls, forwarded proposals and heartbeats between nodes, over QUIC with
//!   mutual TLS on the controller's own ALPN.
//! - [`quorum`]: one node's member: starting or joining the quorum, proposing through the
//!   leader, registration and heartbeats, and the leader's duties (fencing, learners).

pub mod image;
pub mod log_store;
pub mod network;
pub mod quorum;
pub mod state_machine;
mod stored;

use std::io::Cursor;

pub use image::{Command, MetadataImage, Outcome};
pub use log_store::LogStore;
pub use quorum::{Controller, ControllerConfig, ControllerError};
pub use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The controller's Raft types: commands in the log, outcomes out of it, nodes by id.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// A storage failure as openraft takes it (any is fatal to the controller on this node).
pub type StorageError = openraft::StorageError<u64>;

#[cfg(test)]
mod tests {
    use super::*;

    struct Fresh;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir>
        for Fresh
    {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temporary directory");
            let log = LogStore::open(dir.path().join("log")).await?;
            let sm = StateMachine::open(dir.path().join("state")).await?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite against our log store and state machine (it runs its
    /// own runtimes, so a plain test).
    #[test]
    fn the_stores_pass_openrafts_storage_suite() {
        if let Err(e) = openraft::testing::Suite::test_all(Fresh) {
            panic!("{e}");
        }
    }
}
