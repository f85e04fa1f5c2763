//! The async client: connections, `Admin`, `Producer` and `Consumer`.
//!
//! This is the only part of the crate that does I/O; it sits on top of the sans-IO codec.

pub mod admin;
pub mod conn;
pub mod consumer;
pub mod failover;
pub mod fetch_stream;
pub mod group;
pub mod producer;

pub use admin::Admin;
pub use conn::{Client, ClientError, ClientOptions, Connection, HelloInfo};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord};
pub use failover::{
    ClusterEndpoint, FailoverConfig, FailoverConsumer, FailoverProducer, Side, TopicMapping,
};
pub use fetch_stream::{
    FetchStream, FetchStreamOptions, FetchWindow, StoredReporter, StreamedFetch,
};
pub use group::{GroupConfig, RebalanceEvent, Subscription};
pub use producer::{DeliveryFuture, Producer, ProducerConfig};
