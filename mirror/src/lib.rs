//! Cross-cluster replication: mirror flows that copy topics from a source cluster into the
//! target cluster, batch for batch, at the source's offsets.
//!
//! A flow keeps no state of its own: it resumes every partition from the target's log end, so
//! any process can take a flow over and a crash never leaves a duplicate or a hole. Batches are
//! forwarded as received (CRC checked, never decompressed). Data the source deleted before it
//! was copied is reported as an explicit gap. Naming rules are pure functions in `naming`.

pub mod flow;
pub mod naming;

pub use flow::{FlowConfig, FlowStatus, MirrorFlow, PartitionStatus};
pub use naming::Naming;
