//! The node's front door for Strait's own protocol, in rooms:
//!
//! - `transport`: the QUIC listener: admission limits, TLS and its reloads, one request per
//!   stream, frame I/O with deadlines, a memory budget per connection. It knows nothing of
//!   what a request means.
//! - `service`: the transport-independent request service: a request and the session that sent
//!   it in, an answer out. Authorization happens inside, before a resource is looked up, and
//!   quotas are charged there before the work, so every front door (QUIC today, the Kafka
//!   wire and replication next) gets the same checks.
//! - `handlers`: what each family of requests does (data: produce, fetch, offsets; topics and
//!   metadata; groups; mirror; ACLs).
//! - `local`: the node as the in-process target of a flow it runs (no network hop).
//! - `kafka`: the Kafka-wire front door (TCP, TLS with client certificates), translating Kafka
//!   APIs into the same service's requests.
//!
//! A peer that sends garbage gets an error on that stream (or a closed stream); other streams
//! and other connections are unaffected, since each stream is its own task with its own
//! deadlines.

mod handlers;
pub mod kafka;
mod local;
pub mod outgoing;
mod service;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strait_protocol::frame::FrameLimits;
use strait_protocol::transport::TransportLimits;
use tracing::info;

pub use self::local::LocalEndpoint;
pub use self::service::{RequestService, Session};
pub(crate) use self::transport::peer_identity;
use crate::broker::Broker;
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;

/// Where and how the node listens.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub listen: SocketAddr,
    pub advertised: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub frame_limits: FrameLimits,
    pub transport: TransportLimits,
    /// Longest a peer may take to send one whole request.
    pub request_read_timeout: Duration,
    /// Longest a peer may leave an answer unread (no bytes taken) before its stream is reset.
    pub answer_write_stall: Duration,
    pub handshake_timeout: Duration,
    /// Who may do what; open to every authenticated peer unless the config enables ACLs.
    pub authz: Arc<crate::authz::Authorizer>,
    /// Client certificates this CRL revokes are refused; a stale CRL refuses everyone.
    pub crl: Option<PathBuf>,
    /// How often the certificate, key, CA and CRL files are checked for changes.
    pub cert_reload_interval: Duration,
    /// Certificates expiring within this are warned about (log and metric).
    pub cert_expiry_warning: Duration,
    pub peers: PeerLimits,
    /// Per-principal produce and fetch byte rates.
    pub quotas: Arc<crate::quota::Quotas>,
    /// Offsets retention and rebalance bounds of the group coordinator.
    pub groups: crate::groups::GroupSettings,
}

impl ListenConfig {
    /// A listener on an ephemeral loopback port with the default limits, open to every
    /// authenticated peer, certificates never reloaded: what benchmarks run in-process.
    pub fn local(ca: PathBuf, cert: PathBuf, key: PathBuf) -> ListenConfig {
        ListenConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised: "127.0.0.1:0".into(),
            ca,
            cert,
            key,
            frame_limits: Default::default(),
            transport: Default::default(),
            request_read_timeout: Duration::from_secs(30),
            answer_write_stall: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            authz: Arc::new(crate::authz::Authorizer::open_to_all()),
            crl: None,
            cert_reload_interval: Duration::from_secs(3600),
            cert_expiry_warning: Duration::ZERO,
            peers: Default::default(),
            quotas: Default::default(),
            groups: Default::default(),
        }
    }
}

/// Bounds on what one peer may hold open, so no peer can slow the node for the others.
#[derive(Debug, Clone, Copy)]
pub struct PeerLimits {
    /// Connections (and handshakes) from one IP address.
    pub connections_per_ip_max: u32,
    /// Connections authenticated as one principal.
    pub connections_per_principal_max: u32,
    /// TLS handshakes in progress at once; beyond it new peers must first prove their address
    /// (a QUIC retry), then are refused.
    pub pending_handshakes_max: u32,
    /// Malformed frames one connection may send before it is closed.
    pub malformed_frames_per_connection_max: u32,
    /// Bytes of requests and answers one connection may hold in the node at once; a request
    /// beyond it waits until earlier ones are done.
    pub connection_memory_bytes_max: u64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            connections_per_ip_max: 256,
            connections_per_principal_max: 256,
            pending_handshakes_max: 1024,
            malformed_frames_per_connection_max: 32,
            connection_memory_bytes_max: 256 << 20,
        }
    }
}

/// A running listener.
pub struct Server {
    endpoint: quinn::Endpoint,
    pub local_addr: SocketAddr,
    service: Arc<RequestService>,
    reload: Arc<tokio::sync::Notify>,
}

impl Server {
    /// Binds the endpoint and starts accepting connections.
    pub fn start(broker: Arc<Broker>, config: ListenConfig) -> anyhow::Result<Server> {
        let groups = GroupCoordinator::open(broker.clone(), config.groups)?;
        let service = Arc::new(RequestService::new(
            broker,
            groups,
            config.authz.clone(),
            Arc::new(Metrics::default()),
            config.quotas.clone(),
            config.advertised.clone(),
        ));
        let (endpoint, reload) =
            transport::start(service.clone(), config).context("cannot start the QUIC listener")?;
        let local_addr = endpoint.local_addr()?;
        info!(listen = %local_addr, cluster = %service.broker().cluster, node = %service.broker().node_id, "listening");
        Ok(Server {
            endpoint,
            local_addr,
            service,
            reload,
        })
    }

    /// Re-reads the certificate files now (SIGHUP), instead of at the next check.
    pub fn reload_certificates(&self) {
        self.reload.notify_one();
    }

    /// What this listener counts (for `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.service.metrics()
    }

    /// The flows that copy from this node (for `/status`).
    pub fn outgoing(&self) -> Arc<outgoing::OutgoingFlows> {
        self.service.outgoing()
    }

    /// The group coordinator (for group lag in `/metrics`).
    pub fn groups(&self) -> Arc<GroupCoordinator> {
        self.service.groups()
    }

    /// Lets the admin plane (QUIC requests) manage the flows this node runs.
    pub fn set_flows(&self, flows: Arc<strait_mirror::FlowManager>) {
        self.service.set_flows(flows);
    }

    /// Starts serving controller connections with `controller`.
    pub fn set_controller(&self, controller: Arc<crate::controller::Controller>) {
        self.service.set_controller(controller);
    }

    /// The request service every front door shares.
    pub fn service(&self) -> Arc<RequestService> {
        self.service.clone()
    }

    /// This node as the target of a flow running inside it: requests are served in-process,
    /// and copied batches go straight into the logs (CRC-checked, not re-encoded).
    pub fn local_endpoint(&self, flow_principal: &str) -> Arc<LocalEndpoint> {
        Arc::new(LocalEndpoint::new(self.service.clone(), flow_principal))
    }

    /// Stops accepting, closes connections and waits briefly for them to go.
    pub async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
