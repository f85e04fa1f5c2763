//! Strait's wire: ids, the record-batch codec, frames, messages and error codes, and the async
//! client built on them.
//!
//! The codec modules (`ids`, `varint`, `batch`, `frame`, `message`, `error`, `partitioner`) are
//! sans-IO: no sockets, files, clocks or tasks, so they can be tested exhaustively and fuzzed.
//! `client`, `wire` (frame I/O on QUIC streams, shared by the client and the node) and
//! `transport` are the only modules that touch QUIC. Nothing here may panic on bytes
//! that came from the network: every size is checked against a configured maximum before
//! allocation.

pub mod acl;
pub mod batch;
pub mod client;
pub mod congestion;
pub mod error;
pub mod frame;
pub mod ids;
pub mod kafka;
pub mod message;
pub mod partitioner;
pub mod pool;
pub mod provenance;
pub mod transport;
pub mod varint;
pub mod wire;

pub use batch::{
    BatchBuilder, Compression, DecodeError, DecodeLimits, Header, Record, RecordBatch,
};
pub use error::{ErrorCode, WireError};
pub use ids::{LeaderEpoch, NodeId, Offset, PartitionId, TopicName};
pub use message::{Acks, OffsetSpec, Request, Response};
pub use provenance::{Hop, Provenance, ProvenanceError};
