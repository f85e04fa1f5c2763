//! Cross-cluster replication: mirror flows that copy topics from a source cluster into the
//! target cluster, batch for batch.
//!
//! A flow keeps no state of its own: every partition resumes from what the target holds
//! (prefix mode: the target's log end, since offsets are identical; identity mode: the target's
//! offset map, built from the provenance inside the stored batches), so any process can take a
//! flow over and a crash never leaves a duplicate or a hole. Batches are forwarded as received
//! (CRC checked, never decompressed; identity mode adds one provenance hop). Data the source
//! deleted before it was copied is reported as an explicit gap.

mod checkpoints;
mod copier;
pub mod endpoint;
pub mod flow;
pub mod heartbeat;
pub mod manager;
pub mod naming;
pub mod spec;
pub mod status;
pub mod topology;

pub use endpoint::{BoxFuture, Endpoint};
pub use flow::{FlowConfig, MirrorFlow};
pub use manager::{
    flow_client_id, Connector, FlowManager, FlowReport, FlowStore, ManagerError,
    FLOW_CLIENT_ID_PREFIX,
};
pub use naming::Naming;
pub use spec::{FlowSpec, SpecError};
pub use status::{FlowStatus, Gap, PartitionState, PartitionStatus};
