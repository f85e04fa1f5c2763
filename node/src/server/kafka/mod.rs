//! The Kafka front door: Kafka clients (librdkafka, kafka-python, kafkajs, Java) reach the same
//! topics, offsets, groups, ACLs and quotas as Strait's own clients, through the same request
//! service; this room only translates. Batches are Kafka's RecordBatch v2 on both sides, so a
//! produced batch is stored and a fetched one served as its bytes, never re-encoded.
//!
//! - `listener`: TCP accept, per-IP admission, TLS 1.3 with client certificates from the
//!   cluster's CA (the principal is the certificate's CN), or plaintext on loopback only.
//! - `conn`: one connection's frames, in order, bounded by `[limits]`.
//! - the codec is `strait_protocol::kafka` (sans-IO, fuzzed): request headers and bodies
//!   through the `kafka-protocol` crate (a patched copy that refuses counts larger than the
//!   bytes present), response framing.
//! - `versions`: the API versions advertised (only tested ranges).
//! - `errors`: the service's errors as Kafka error codes.
//! - `data`, `topics`, `groups`: what each API asks of the service.

mod conn;
mod data;
mod dispatch;
mod errors;
mod groups;
mod listener;
mod topics;
mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use listener::KafkaListener;
pub use versions::supported_apis;

/// `[kafka]` of a node config, resolved.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to (metadata, coordinators); empty: the bound
    /// address.
    pub advertised: String,
    /// No TLS: allowed only on a loopback address (checked by [`KafkaConfig::validate`]).
    pub plaintext: bool,
    /// Kafka's `auto.create.topics.enable`: Metadata and Produce requests for an unknown topic
    /// create it with the node's defaults, if the principal may create topics.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka's `num.partitions`).
    pub auto_create_partitions: u32,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
    pub cert_reload_interval: Duration,
    /// Largest request a client may send (the frame's size field beyond it closes the
    /// connection, as Kafka's `socket.request.max.bytes` does).
    pub frame_bytes_max: u32,
    /// Longest a client may take to send one whole request once it started.
    pub request_read_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Idle connections are closed after this (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    pub connections_per_ip_max: u32,
}

impl KafkaConfig {
    /// A TLS listener on `listen` with the node's certificate files and Kafka's defaults: the
    /// bound address advertised, no auto-creation, no CRL, 64 MiB requests, idle connections
    /// closed after 10 minutes (Kafka's `connections.max.idle.ms`).
    pub fn new(listen: SocketAddr, ca: PathBuf, cert: PathBuf, key: PathBuf) -> KafkaConfig {
        KafkaConfig {
            listen,
            advertised: String::new(),
            plaintext: false,
            auto_create_topics: false,
            auto_create_partitions: 1,
            ca,
            cert,
            key,
            crl: None,
            cert_reload_interval: Duration::from_secs(5),
            frame_bytes_max: 64 << 20,
            request_read_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            connections_per_ip_max: 256,
        }
    }

    /// Refuses a plaintext listener anywhere but loopback: principals come from certificates,
    /// and a plaintext port on a routable address would let anyone in as `ANONYMOUS`.
    pub fn validate(&self) -> Result<(), String> {
        if self.plaintext && !self.listen.ip().is_loopback() {
            return Err(format!(
                "[kafka] plaintext = true is allowed only on a loopback address, not {}: \
                 listen on 127.0.0.1 or ::1, or drop `plaintext` to require TLS with client certificates",
                self.listen
            ));
        }
        if self.auto_create_partitions == 0 {
            return Err("[kafka] auto_create_partitions must be at least 1".into());
        }
        Ok(())
    }
}

/// A Kafka string field from one of ours.
fn str_bytes(s: impl Into<String>) -> strait_protocol::kafka::kafka_protocol::protocol::StrBytes {
    strait_protocol::kafka::kafka_protocol::protocol::StrBytes::from_string(s.into())
}

/// The principal of a plaintext Kafka connection (Kafka's `User:ANONYMOUS`).
pub const ANONYMOUS: &str = "ANONYMOUS";
