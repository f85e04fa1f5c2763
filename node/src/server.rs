//! The QUIC listener: mutual TLS on every connection, one request per stream, answers that
//! name the cause and the fix.
//!
//! A peer that sends garbage gets an error on that stream (or a closed stream); other streams and
//! other connections are unaffected, since each stream is its own task with its own deadline.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dashmap::DashMap;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::batch::{self, split_batches};
use strait_protocol::client::conn::read_frame_pooled;
use strait_protocol::client::ClientError;
use strait_protocol::frame::{self, FrameError, FrameLimits};
use strait_protocol::message::{
    Metadata, NodeInfo, OffsetSpec, PartitionInfo, PartitionStats, TopicDescription, TopicInfo,
    VERSION_MAX, VERSION_MIN,
};
use strait_protocol::pool::BufferPool;
use strait_protocol::transport::{transport_config, TransportLimits};
use strait_protocol::{Acks, ErrorCode, Offset, RecordBatch, Request, Response, WireError};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::broker::{Broker, Partition, Topic};
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::storage::mirror_map::{SourceKey, Translation};
use crate::storage::producer_state::SequenceError;
use crate::storage::{FlushPolicy, LogError};

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
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            connections_per_ip_max: 256,
            connections_per_principal_max: 256,
            pending_handshakes_max: 1024,
            malformed_frames_per_connection_max: 32,
        }
    }
}

struct Ctx {
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    config: ListenConfig,
    metrics: Arc<Metrics>,
    per_ip: DashMap<IpAddr, u32>,
    per_principal: DashMap<Arc<str>, u32>,
    pending_handshakes: AtomicU32,
    /// Request bodies (produce, mirror append) are gathered into these, shared by all
    /// connections, so a steady stream of large appends reuses warm memory.
    request_buffers: BufferPool,
}

/// Request buffers the node keeps for reuse, and the most memory they may hold.
const REQUEST_BUFFERS_MAX: usize = 16;
const REQUEST_BUFFER_BYTES_MAX: usize = 128 << 20;

/// A running listener.
pub struct Server {
    endpoint: quinn::Endpoint,
    pub local_addr: SocketAddr,
    ctx: Arc<Ctx>,
    reload: Arc<tokio::sync::Notify>,
}

/// The node's TLS files, as last loaded.
fn tls_files(c: &ListenConfig) -> Vec<PathBuf> {
    let mut files = vec![c.ca.clone(), c.cert.clone(), c.key.clone()];
    files.extend(c.crl.clone());
    files
}

/// Builds the QUIC server config from the files. Refuses a certificate not issued for a node:
/// clients would refuse it anyway, with a less helpful message.
fn build_server_config(c: &ListenConfig) -> anyhow::Result<quinn::ServerConfig> {
    let certs = strait_certs::load_certs(&c.cert)?;
    let role = strait_certs::role_of(&certs[0]);
    if role != Some(strait_certs::Role::Node) {
        anyhow::bail!(
            "{} was issued for role {}, not node: clients refuse it as a server certificate. Issue one with `strait certs issue --role node --name NAME --host HOST`",
            c.cert.display(),
            role.map(|r| r.as_str()).unwrap_or("none")
        );
    }
    let tls = strait_certs::server_config_with_crl(&c.ca, &c.cert, &c.key, c.crl.as_deref())
        .context("cannot build the node's TLS config; check ca, cert, key and crl")?;
    let quic = QuicServerConfig::try_from(tls).context("the TLS config is not usable for QUIC")?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server_config.transport_config(transport_config(&c.transport));
    Ok(server_config)
}

impl Server {
    /// Binds the endpoint and starts accepting connections.
    pub fn start(broker: Arc<Broker>, config: ListenConfig) -> anyhow::Result<Server> {
        let server_config = build_server_config(&config)?;
        let endpoint = strait_protocol::transport::endpoint(
            config.listen,
            Some(server_config),
            &config.transport,
        )
        .with_context(|| {
            format!(
                "cannot listen on {}; is another process using it?",
                config.listen
            )
        })?;
        let local_addr = endpoint.local_addr()?;
        info!(listen = %local_addr, cluster = %broker.cluster, node = broker.node_id, "listening");
        let groups = GroupCoordinator::open(broker.clone())?;
        let ctx = Arc::new(Ctx {
            broker,
            groups,
            config,
            metrics: Arc::new(Metrics::default()),
            per_ip: DashMap::new(),
            per_principal: DashMap::new(),
            pending_handshakes: AtomicU32::new(0),
            request_buffers: BufferPool::new(REQUEST_BUFFERS_MAX, REQUEST_BUFFER_BYTES_MAX),
        });
        let accept = endpoint.clone();
        let accepting = ctx.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                admit(incoming, &accepting);
            }
        });
        let reload = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(watch_certificates(
            endpoint.clone(),
            ctx.clone(),
            reload.clone(),
        ));
        Ok(Server {
            endpoint,
            local_addr,
            ctx,
            reload,
        })
    }

    /// Re-reads the certificate files now (SIGHUP), instead of at the next check.
    pub fn reload_certificates(&self) {
        self.reload.notify_one();
    }

    /// What this listener counts (for `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The group coordinator (for group lag in `/metrics`).
    pub fn groups(&self) -> Arc<GroupCoordinator> {
        self.ctx.groups.clone()
    }

    /// This node as the target of a flow running inside it: requests are served in-process,
    /// and copied batches go straight into the logs (CRC-checked, not re-encoded).
    pub fn local_endpoint(&self, flow_principal: &str) -> Arc<LocalEndpoint> {
        Arc::new(LocalEndpoint {
            ctx: self.ctx.clone(),
            hello: AtomicBool::new(true),
            peer: Peer {
                principal: flow_principal.into(),
                role: Some(strait_certs::Role::Node),
                trusted: true,
                malformed: AtomicU32::new(0),
                connection: None,
            },
        })
    }

    /// Stops accepting, closes connections and waits briefly for them to go.
    pub async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Re-reads the TLS files when they change (or on demand) and swaps the endpoint's config:
/// new connections get the new certificate, open ones keep theirs. A file that does not load
/// keeps the previous config, and says why. Also warns about certificates close to expiry.
async fn watch_certificates(
    endpoint: quinn::Endpoint,
    ctx: Arc<Ctx>,
    reload: Arc<tokio::sync::Notify>,
) {
    let files = tls_files(&ctx.config);
    let mut stamp = strait_certs::stamp(&files);
    let mut warned_at: Option<Instant> = None;
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(ctx.config.cert_reload_interval) => false,
            _ = reload.notified() => true,
        };
        let now = strait_certs::stamp(&files);
        if forced || now != stamp {
            stamp = now;
            // Writers replace several files one after the other; let them finish.
            tokio::time::sleep(Duration::from_millis(100)).await;
            match build_server_config(&ctx.config) {
                Ok(config) => {
                    endpoint.set_server_config(Some(config));
                    ctx.metrics.event("cert_reload_ok");
                    warned_at = None;
                    let why = if forced {
                        "on request (SIGHUP)"
                    } else {
                        "the files changed"
                    };
                    info!(cert = %ctx.config.cert.display(), "TLS certificates reloaded ({why}); new connections use them");
                }
                Err(e) => {
                    ctx.metrics.event("cert_reload_failed");
                    warn!(
                        error = format!("{e:#}"),
                        "new TLS files are not usable; keeping the previous certificates"
                    );
                }
            }
        }
        if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            warned_at = Some(Instant::now());
            warn_expiring(&ctx.config);
        }
    }
}

fn warn_expiring(c: &ListenConfig) {
    for (what, path) in [("node certificate", &c.cert), ("CA certificate", &c.ca)] {
        let Ok(info) = strait_certs::inspect(path) else {
            continue;
        };
        let left = info.expires_in_seconds;
        if left < c.cert_expiry_warning.as_secs() as i64 {
            warn!(
                certificate = what,
                file = %path.display(),
                expires_in_days = left / 86_400,
                "certificate expires soon; rotate it with `strait certs rotate --dir CA_DIR --name NAME` (the node picks up the new files by itself)"
            );
        }
    }
}

/// Decides on a new peer before any handshake work: refused when its address already holds
/// too many connections; asked to prove its address (QUIC retry) and then refused when too
/// many handshakes are pending, so a flood of half-open handshakes costs no state.
fn admit(incoming: quinn::Incoming, ctx: &Arc<Ctx>) {
    let ip = incoming.remote_address().ip();
    let limits = ctx.config.peers;
    if ctx.pending_handshakes.load(Ordering::Acquire) >= limits.pending_handshakes_max {
        if !incoming.remote_address_validated() && incoming.may_retry() {
            ctx.metrics.event("limit_pending_handshakes_retry");
            let _ = incoming.retry();
        } else {
            ctx.metrics.event("limit_pending_handshakes");
            incoming.refuse();
        }
        return;
    }
    {
        let mut n = ctx.per_ip.entry(ip).or_insert(0);
        if *n >= limits.connections_per_ip_max {
            drop(n);
            ctx.metrics.event("limit_connections_per_ip");
            debug!(%ip, max = limits.connections_per_ip_max, "refused: too many connections from this address");
            incoming.refuse();
            return;
        }
        *n += 1;
    }
    ctx.pending_handshakes.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(handle_connection(incoming, ctx.clone()));
}

async fn handle_connection(incoming: quinn::Incoming, ctx: Arc<Ctx>) {
    let peer = incoming.remote_address();
    let ip = peer.ip();
    let ctx_ip = ctx.clone();
    let _ip_slot = Forget(move || {
        if let dashmap::Entry::Occupied(mut e) = ctx_ip.per_ip.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    });
    let ctx_pending = ctx.clone();
    let mut pending = Some(Forget(move || {
        ctx_pending
            .pending_handshakes
            .fetch_sub(1, Ordering::AcqRel);
    }));
    let conn =
        match tokio::time::timeout(ctx.config.handshake_timeout, async { incoming.await }).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let reason = e.to_string();
                ctx.metrics
                    .handshake_failed(crate::metrics::handshake_reason(&reason));
                warn!(%peer, %reason, "TLS handshake failed; connection refused");
                return;
            }
            Err(_) => {
                ctx.metrics.handshake_failed("timeout");
                warn!(%peer, "TLS handshake timed out; connection dropped");
                return;
            }
        };
    let leaf = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned());
    let role = leaf.as_ref().and_then(|c| strait_certs::role_of(c));
    let principal = leaf.as_ref().and_then(|c| strait_certs::principal_of(c));
    let Some(principal) = principal else {
        warn!(%peer, "peer certificate has no common name; connection refused");
        conn.close(1u32.into(), b"certificate without a common name");
        return;
    };
    pending.take();
    let principal: Arc<str> = principal.into();
    {
        let max = ctx.config.peers.connections_per_principal_max;
        let mut n = ctx.per_principal.entry(principal.clone()).or_insert(0);
        if *n >= max {
            drop(n);
            ctx.metrics.event("limit_connections_per_principal");
            warn!(%peer, %principal, max, "refused: too many connections for this principal");
            conn.close(
                2u32.into(),
                format!("too many connections for principal {principal:?} (limits.connections_per_principal_max = {max})").as_bytes(),
            );
            return;
        }
        *n += 1;
    }
    let ctx_principal = ctx.clone();
    let held = principal.clone();
    let _principal_slot = Forget(move || {
        if let dashmap::Entry::Occupied(mut e) = ctx_principal.per_principal.entry(held.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    });
    info!(%peer, %principal, role = role.map(|r| r.as_str()).unwrap_or("none"), "connection accepted");
    let hello = Arc::new(AtomicBool::new(false));
    let id = conn.stable_id();
    ctx.metrics.connections.insert(
        id,
        crate::metrics::LiveConnection {
            peer,
            principal: principal.to_string(),
            connection: conn.clone(),
        },
    );
    let principal = Arc::new(Peer {
        principal,
        role,
        trusted: false,
        malformed: AtomicU32::new(0),
        connection: Some(conn.clone()),
    });
    let ctx2 = ctx.clone();
    let _forget = Forget(move || {
        ctx2.metrics.connections.remove(&id);
    });
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handle_stream(
                    send,
                    recv,
                    ctx.clone(),
                    hello.clone(),
                    principal.clone(),
                ));
            }
            Err(e) => {
                debug!(%peer, principal = %principal.principal, reason = %e, "connection closed");
                return;
            }
        }
    }
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<Ctx>,
    hello: Arc<AtomicBool>,
    principal: Arc<Peer>,
) {
    let read = tokio::time::timeout(
        ctx.config.request_read_timeout,
        read_frame_pooled::<Request>(
            &mut recv,
            &ctx.config.frame_limits,
            Some(&ctx.request_buffers),
        ),
    );
    let mut charged = None;
    let (response, payload) = match read.await {
        Err(_) => (
            error(
                ErrorCode::TIMEOUT,
                format!(
                    "request not received within {:?}",
                    ctx.config.request_read_timeout
                ),
            ),
            Vec::new(),
        ),
        Ok(Err(ClientError::Frame(e))) => {
            let code = match e {
                FrameError::TooLarge { .. } | FrameError::HeaderTooLarge { .. } => {
                    ErrorCode::FRAME_TOO_LARGE
                }
                _ => ErrorCode::MALFORMED_FRAME,
            };
            warn!(principal = %principal.principal, error = %e, "bad frame");
            let _ = recv.stop(1u32.into());
            principal.malformed_frame(&ctx);
            (error(code, e.to_string()), Vec::new())
        }
        Ok(Err(_)) => return,
        Ok(Ok((request, payload))) => {
            let kind = request.kind();
            let produced = payload.len() as u64;
            match dispatch(&ctx, &hello, &principal, request, payload).await {
                Ok(answer) => {
                    use crate::quota::Direction;
                    charged = match kind {
                        "produce" => Some((Direction::Produce, produced)),
                        "fetch" => Some((
                            Direction::Fetch,
                            answer.1.iter().map(|b| b.len() as u64).sum(),
                        )),
                        _ => None,
                    };
                    answer
                }
                Err(e) => {
                    debug!(principal = %principal.principal, request = kind, error = %e, "request failed");
                    (Response::Error(e), Vec::new())
                }
            }
        }
    };
    let len: usize = payload.iter().map(Bytes::len).sum();
    if let Some((direction, bytes)) = charged {
        let hold = ctx
            .config
            .quotas
            .charge(&principal.principal, direction, bytes);
        if !hold.is_zero() {
            ctx.metrics.event(match direction {
                crate::quota::Direction::Produce => "quota_throttled_produce",
                crate::quota::Direction::Fetch => "quota_throttled_fetch",
            });
            tokio::time::sleep(hold).await;
        }
    }
    let Ok(head) = frame::encode(&response, len) else {
        return;
    };
    if send.write_chunk(head).await.is_err() {
        return;
    }
    for chunk in payload {
        if send.write_chunk(chunk).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

type Answer = (Response, Vec<Bytes>);

/// The node as seen by a flow it runs; see [`Server::local_endpoint`].
pub struct LocalEndpoint {
    ctx: Arc<Ctx>,
    hello: AtomicBool,
    peer: Peer,
}

impl strait_mirror::Endpoint for LocalEndpoint {
    fn call<'a>(
        &'a self,
        request: &'a Request,
        payload: &'a [Bytes],
    ) -> strait_mirror::BoxFuture<'a, Result<(Response, Bytes), ClientError>> {
        Box::pin(async move {
            let answer = match request {
                Request::MirrorAppend { topic, partition } => {
                    self.append_payload(topic, *partition, payload).await
                }
                other => {
                    let joined = join(payload.to_vec());
                    dispatch(&self.ctx, &self.hello, &self.peer, other.clone(), joined).await
                }
            };
            match answer {
                Ok((Response::Error(e), _)) | Err(e) => Err(ClientError::Wire(e)),
                Ok((response, chunks)) => Ok((response, join(chunks))),
            }
        })
    }

    fn cluster(&self) -> strait_mirror::BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move { Ok(self.ctx.broker.cluster.clone()) })
    }

    fn append_copies<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        batches: Vec<RecordBatch>,
    ) -> strait_mirror::BoxFuture<'a, Result<Response, ClientError>> {
        Box::pin(async move {
            match self.append_checked(topic, partition, batches).await {
                Ok((Response::Error(e), _)) | Err(e) => Err(ClientError::Wire(e)),
                Ok((response, _)) => Ok(response),
            }
        })
    }
}

impl LocalEndpoint {
    /// Appends a `MirrorAppend` payload: each chunk is one batch, checked here first.
    async fn append_payload(
        &self,
        topic: &str,
        partition: u32,
        payload: &[Bytes],
    ) -> Result<Answer, WireError> {
        let limits = self.ctx.broker.topic(topic)?.config.decode_limits();
        let batches = payload
            .iter()
            .map(|b| RecordBatch::parse(b.clone(), &limits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(topic, partition, e))?;
        self.append_checked(topic, partition, batches).await
    }

    /// Appends batches the flow in this node checked on arrival (size, structure, CRC): only
    /// the target topic's own limits remain to check, then they are appended as-is.
    async fn append_checked(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<RecordBatch>,
    ) -> Result<Answer, WireError> {
        let started = std::time::Instant::now();
        let broker = &self.ctx.broker;
        let t = broker.topic(topic)?;
        let limits = t.config.decode_limits();
        let bytes: u64 = batches.iter().map(|b| b.size_bytes() as u64).sum();
        for b in &batches {
            batch::total_len(b.as_bytes(), &limits)
                .and_then(|_| b.check_decompressed_size(limits.batch_bytes_decompressed_max))
                .map_err(|e| corrupt(topic, partition, e))?;
        }
        let answer = mirror_append(broker, &t, partition, batches).await;
        let m = &self.ctx.metrics;
        m.request("mirror_append", answer.is_ok(), started.elapsed());
        if answer.is_ok() {
            m.topic(topic, |t| {
                t.mirror_append_bytes
                    .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            });
        }
        answer
    }
}

/// A batch that failed its checks, named by the partition it was sent to.
fn corrupt(topic: &str, partition: u32, e: strait_protocol::DecodeError) -> WireError {
    WireError::new(
        ErrorCode::CORRUPT_BATCH,
        format!("{topic}/{partition}: {e}"),
    )
}

fn join(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    }
}

/// Who is on the other end of a connection, from its certificate.
struct Peer {
    principal: Arc<str>,
    role: Option<strait_certs::Role>,
    /// The node itself (a flow it runs as gateway): ACLs do not apply.
    trusted: bool,
    /// Malformed frames this connection sent so far.
    malformed: AtomicU32,
    connection: Option<quinn::Connection>,
}

impl Peer {
    /// Counts a malformed frame; past the limit the whole connection is closed.
    fn malformed_frame(&self, ctx: &Ctx) {
        let max = ctx.config.peers.malformed_frames_per_connection_max;
        if self.malformed.fetch_add(1, Ordering::AcqRel) + 1 >= max {
            if let Some(conn) = &self.connection {
                ctx.metrics.event("limit_malformed_frames");
                warn!(principal = %self.principal, max, "closing a connection that keeps sending malformed frames");
                conn.close(3u32.into(), b"too many malformed frames");
            }
        }
    }

    /// Whether this peer may do `op` to a resource, per the node's ACLs.
    fn may(&self, ctx: &Ctx, op: Operation, kind: ResourceKind, name: &str) -> bool {
        self.trusted || ctx.config.authz.allows(&self.principal, op, kind, name)
    }

    /// Like [`Peer::may`], with the refusal the client sees.
    fn check(
        &self,
        ctx: &Ctx,
        op: Operation,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), WireError> {
        if self.trusted {
            return Ok(());
        }
        ctx.config.authz.check(&self.principal, op, kind, name)
    }

    /// Mirror flows (and nodes running flows as gateways) may create mirror topics and append
    /// copied batches; clients may not, whatever else they are allowed.
    fn require_mirror(&self, what: &str) -> Result<(), WireError> {
        match self.role {
            Some(strait_certs::Role::Mirror | strait_certs::Role::Node) => Ok(()),
            _ => {
                warn!(principal = %self.principal, what, "refused: not a mirror principal");
                Err(WireError::new(
                    ErrorCode::UNAUTHORIZED,
                    format!(
                        "{what} is for mirror flows; principal {:?} presented a {} certificate. \
                         Issue one with `strait certs issue --dir CA_DIR --name NAME --role mirror` and run the flow with it",
                        self.principal,
                        self.role.map(|r| r.as_str()).unwrap_or("role-less")
                    ),
                ))
            }
        }
    }
}

/// Runs `f` when dropped (removing a connection from the metrics however its task ends).
struct Forget<F: FnMut()>(F);

impl<F: FnMut()> Drop for Forget<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Serves one request and counts it: kind, outcome, latency, and for produce, fetch and
/// mirror appends the topic's bytes and records.
async fn dispatch(
    ctx: &Ctx,
    hello: &AtomicBool,
    peer: &Peer,
    request: Request,
    payload: Bytes,
) -> Result<Answer, WireError> {
    let started = std::time::Instant::now();
    let kind = request.kind();
    let io = match &request {
        Request::Produce { topic, .. } | Request::MirrorAppend { topic, .. } => {
            Some((topic.clone(), 0))
        }
        Request::Fetch { topic, offset, .. } => Some((topic.clone(), *offset)),
        _ => None,
    };
    let in_bytes = payload.len() as u64;
    let answer = serve(ctx, hello, peer, request, payload).await;
    let m = &ctx.metrics;
    m.request(kind, answer.is_ok(), started.elapsed());
    if let (Some((topic, from)), Ok((response, out))) = (io, &answer) {
        m.topic(&topic, |t| count_io(t, kind, response, out, in_bytes, from));
    }
    answer
}

fn count_io(
    t: &crate::metrics::TopicIo,
    kind: &str,
    response: &Response,
    out: &[Bytes],
    in_bytes: u64,
    from: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    match response {
        Response::Produced { .. } if kind == "mirror_append" => {
            t.mirror_append_bytes.fetch_add(in_bytes, Relaxed);
        }
        Response::Produced {
            base_offset,
            last_offset,
            ..
        } => {
            t.produce_records
                .fetch_add(last_offset.saturating_sub(*base_offset) + 1, Relaxed);
            t.produce_bytes.fetch_add(in_bytes, Relaxed);
        }
        Response::Fetched { .. } => {
            let mut offsets = 0;
            for chunk in out {
                let mut at = 0;
                while let Some((base, len)) = strait_protocol::batch::peek_header(&chunk[at..]) {
                    if let Some((_, next)) = strait_protocol::batch::peek_offsets(&chunk[at..]) {
                        offsets += next.0.saturating_sub(base.0.max(from));
                    }
                    at += len;
                    if at >= chunk.len() {
                        break;
                    }
                }
            }
            t.fetch_records.fetch_add(offsets, Relaxed);
            t.fetch_bytes
                .fetch_add(out.iter().map(|b| b.len() as u64).sum(), Relaxed);
        }
        _ => {}
    }
}

async fn serve(
    ctx: &Ctx,
    hello: &AtomicBool,
    peer: &Peer,
    request: Request,
    payload: Bytes,
) -> Result<Answer, WireError> {
    let broker = &ctx.broker;
    if !matches!(request, Request::Hello { .. }) && !hello.load(Ordering::Acquire) {
        return Err(WireError::new(
            ErrorCode::HELLO_REQUIRED,
            "send Hello first on a new connection",
        ));
    }
    authorize(ctx, peer, &request)?;
    let plain = |r: Response| Ok((r, Vec::new()));
    match request {
        Request::Hello {
            version_min,
            version_max,
            ..
        } => {
            if version_max < VERSION_MIN || version_min > VERSION_MAX {
                return Err(WireError::new(
                    ErrorCode::UNSUPPORTED_VERSION,
                    format!("client speaks versions {version_min}..={version_max}, node speaks {VERSION_MIN}..={VERSION_MAX}; upgrade the older side"),
                ));
            }
            hello.store(true, Ordering::Release);
            plain(Response::Hello {
                version: version_max.min(VERSION_MAX),
                cluster: broker.cluster.clone(),
                node_id: broker.node_id,
                principal: peer.principal.to_string(),
            })
        }
        Request::Metadata { topics } => plain(Response::Metadata(metadata(ctx, peer, topics))),
        Request::CreateTopic {
            name,
            partitions,
            configs,
        } => {
            broker.create_topic(&name, partitions, &configs)?;
            plain(Response::TopicCreated { name, partitions })
        }
        Request::DeleteTopic { name } => {
            broker.delete_topic(&name)?;
            plain(Response::TopicDeleted { name })
        }
        Request::AlterTopicConfig { name, configs } => {
            broker.alter_topic_config(&name, &configs)?;
            plain(Response::TopicDescription(describe(broker, &name)?))
        }
        Request::DescribeTopic { name } => {
            plain(Response::TopicDescription(describe(broker, &name)?))
        }
        Request::Produce {
            topic,
            partition,
            acks,
        } => produce(broker, &topic, partition, acks, payload).await,
        Request::Fetch {
            topic,
            partition,
            offset,
            max_wait_ms,
            min_bytes,
            max_bytes,
        } => {
            fetch(
                broker,
                &topic,
                partition,
                Offset(offset),
                max_wait_ms,
                min_bytes,
                max_bytes,
            )
            .await
        }
        Request::ListOffsets {
            topic,
            partition,
            spec,
        } => {
            let p = broker.partition(&topic, partition)?;
            let (offset, timestamp_ms) = match spec {
                OffsetSpec::Earliest => (p.log.log_start(), None),
                OffsetSpec::Latest => (p.log.high_watermark(), None),
                OffsetSpec::Timestamp(ts) => {
                    let log = &p.log;
                    match log.offset_for_timestamp(ts).map_err(log_error)? {
                        Some((o, t)) => (o, Some(t)),
                        None => (log.high_watermark(), None),
                    }
                }
                _ => {
                    return Err(WireError::new(
                        ErrorCode::INVALID_REQUEST,
                        "unknown offset spec; upgrade the node",
                    ))
                }
            };
            plain(Response::Offsets {
                offset: offset.0,
                timestamp_ms,
            })
        }
        Request::JoinGroup(join) => {
            let (generation, member_id, leader, members) =
                ctx.groups.join(join, &peer.principal).await?;
            plain(Response::Joined {
                generation,
                member_id,
                leader,
                members,
            })
        }
        Request::SyncGroup {
            group,
            member_id,
            generation,
        } => plain(Response::Synced {
            assignment: ctx.groups.sync(&group, &member_id, generation)?,
        }),
        Request::Heartbeat {
            group,
            member_id,
            generation,
        } => {
            ctx.groups.heartbeat(&group, &member_id, generation)?;
            plain(Response::Ack)
        }
        Request::LeaveGroup { group, member_id } => {
            ctx.groups.leave(&group, &member_id)?;
            plain(Response::Ack)
        }
        Request::CommitOffsets {
            group,
            member_id,
            generation,
            offsets,
        } => {
            ctx.groups
                .commit(&group, &member_id, generation, offsets)
                .await?;
            plain(Response::Ack)
        }
        Request::FetchOffsets { group, partitions } => plain(Response::CommittedOffsets(
            ctx.groups.fetch_offsets(&group, partitions),
        )),
        Request::ListGroups {} => plain(Response::Groups(
            ctx.groups
                .list()
                .into_iter()
                .filter(|g| peer.may(ctx, Operation::Describe, ResourceKind::Group, &g.group))
                .collect(),
        )),
        Request::DescribeGroup { group } => match ctx.groups.describe(&group) {
            Some(d) => plain(Response::GroupDescription(d)),
            None => Err(WireError::new(
                ErrorCode::UNKNOWN_GROUP,
                format!("group {group:?} does not exist (no members, no committed offsets)"),
            )),
        },
        Request::CreateMirrorTopic {
            name,
            partitions,
            configs,
            flow,
            source_cluster,
            source_topic,
        } => {
            peer.require_mirror("creating a mirror topic")?;
            let mirror = crate::broker::MirrorOf {
                flow,
                source_cluster,
                source_topic,
            };
            broker.create_topic_with(&name, partitions, &configs, Some(mirror))?;
            plain(Response::TopicCreated { name, partitions })
        }
        Request::TranslateOffset {
            source_cluster,
            topic,
            partition,
            offset,
            position,
        } => {
            // Whether a mirror exists is itself something to describe: a principal that may
            // not describe the named topic learns nothing from the error either.
            let resolved = translate(broker, &source_cluster, &topic, partition, offset, position);
            let (topic, offset) = match resolved {
                Ok(found) => found,
                Err(e) => {
                    peer.check(ctx, Operation::Describe, ResourceKind::Topic, &topic)?;
                    return Err(e);
                }
            };
            peer.check(ctx, Operation::Describe, ResourceKind::Topic, &topic)?;
            plain(Response::Translated {
                topic,
                partition,
                offset,
            })
        }
        Request::MirrorAppend { topic, partition } => {
            peer.require_mirror("appending copied batches")?;
            let t = broker.topic(&topic)?;
            let batches = decode_batches(&t, &topic, partition, payload)?;
            mirror_append(broker, &t, partition, batches).await
        }
        Request::AddPartitions { name, partitions } => {
            let t = broker.topic(&name)?;
            if let Some(m) = &t.mirror {
                // A mirror keeps the source's partition count; only its flow grows it.
                peer.require_mirror(&format!(
                    "growing mirror topic {name:?} of flow {:?}",
                    m.flow
                ))?;
            }
            broker.add_partitions(&name, partitions)?;
            plain(Response::TopicCreated { name, partitions })
        }
        Request::MirrorResume {
            topic,
            partition,
            source_cluster,
            source_topic,
        } => {
            let t = broker.topic(&topic)?;
            let p = broker.partition(&topic, partition)?;
            let next_source_offset = if t.mirror.is_some() {
                Some(p.log.log_end().0).filter(|end| *end > 0)
            } else {
                p.log.mirrored_next(&SourceKey {
                    cluster: source_cluster,
                    topic: source_topic,
                    partition,
                })
            };
            plain(Response::MirrorResume { next_source_offset })
        }
        Request::InitProducer {} => {
            let producer_id = broker.allocate_producer_id()?;
            plain(Response::ProducerInit {
                producer_id,
                producer_epoch: 0,
            })
        }
        Request::ListAcls {} => plain(Response::Acls(ctx.config.authz.listing())),
        Request::AddAcl { rule } => {
            info!(principal = %peer.principal, %rule, "ACL added");
            ctx.config.authz.add(rule)?;
            plain(Response::Acls(ctx.config.authz.listing()))
        }
        Request::RemoveAcl { rule } => {
            info!(principal = %peer.principal, %rule, "ACL removed");
            ctx.config.authz.remove(&rule)?;
            plain(Response::Acls(ctx.config.authz.listing()))
        }
        _ => Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            "this node does not know that request; upgrade it",
        )),
    }
}

/// The checks a request passes before it is served. Listings (metadata, groups) are filtered
/// instead, and a translation is checked against the topic it resolves to.
fn authorize(ctx: &Ctx, peer: &Peer, request: &Request) -> Result<(), WireError> {
    use ResourceKind::{Cluster, Group, Topic};
    let check = |op, kind, name: &str| peer.check(ctx, op, kind, name);
    let mirror_or = |op, name: &str| -> Result<(), WireError> {
        // A flow keeps its mirror topics' partitions and settings in line with the source.
        let is_mirror = ctx.broker.topic(name).is_ok_and(|t| t.mirror.is_some());
        if is_mirror && peer.may(ctx, Operation::Mirror, Topic, name) {
            return Ok(());
        }
        check(op, Topic, name)
    };
    match request {
        Request::Hello { .. }
        | Request::Metadata { .. }
        | Request::ListGroups {}
        | Request::TranslateOffset { .. } => Ok(()),
        Request::CreateTopic { name, .. } => check(Operation::Create, Topic, name),
        Request::DeleteTopic { name } => check(Operation::Delete, Topic, name),
        Request::AlterTopicConfig { name, .. } | Request::AddPartitions { name, .. } => {
            mirror_or(Operation::Alter, name)
        }
        Request::DescribeTopic { name } => check(Operation::Describe, Topic, name),
        Request::ListOffsets { topic, .. } => check(Operation::Describe, Topic, topic),
        Request::Produce { topic, .. } => check(Operation::Write, Topic, topic),
        Request::Fetch { topic, .. } => check(Operation::Read, Topic, topic),
        Request::InitProducer {} => {
            // Producer ids are a node-wide resource: any principal that may write somewhere.
            if peer.trusted
                || ctx
                    .broker
                    .topics()
                    .iter()
                    .any(|t| peer.may(ctx, Operation::Write, Topic, t.name.as_str()))
            {
                Ok(())
            } else {
                check(Operation::Write, Topic, "*")
            }
        }
        Request::JoinGroup(join) => check(Operation::Group, Group, &join.group),
        Request::SyncGroup { group, .. }
        | Request::Heartbeat { group, .. }
        | Request::LeaveGroup { group, .. } => check(Operation::Group, Group, group),
        Request::CommitOffsets { group, offsets, .. } => {
            check(Operation::Group, Group, group)?;
            offsets
                .iter()
                .try_for_each(|o| check(Operation::Read, Topic, &o.topic))
        }
        Request::FetchOffsets { group, .. } | Request::DescribeGroup { group } => {
            check(Operation::Describe, Group, group)
        }
        Request::CreateMirrorTopic { name, .. } => check(Operation::Mirror, Topic, name),
        Request::MirrorAppend { topic, .. } | Request::MirrorResume { topic, .. } => {
            check(Operation::Mirror, Topic, topic)
        }
        Request::ListAcls {} => check(Operation::Describe, Cluster, ""),
        Request::AddAcl { .. } | Request::RemoveAcl { .. } => check(Operation::Alter, Cluster, ""),
        _ => Ok(()),
    }
}

fn metadata(ctx: &Ctx, peer: &Peer, filter: Option<Vec<String>>) -> Metadata {
    let broker = &ctx.broker;
    let topics = broker
        .topics()
        .into_iter()
        .filter(|t| {
            filter
                .as_ref()
                .is_none_or(|f| f.iter().any(|n| n == t.name.as_str()))
        })
        .filter(|t| {
            peer.may(
                ctx,
                Operation::Describe,
                ResourceKind::Topic,
                t.name.as_str(),
            )
        })
        .map(|t| TopicInfo {
            name: t.name.to_string(),
            partitions: (0..t.partitions.len() as u32)
                .map(|id| PartitionInfo {
                    id,
                    leader: broker.node_id,
                    leader_epoch: 0,
                    replicas: vec![broker.node_id],
                    in_sync: vec![broker.node_id],
                })
                .collect(),
        })
        .collect();
    Metadata {
        cluster: broker.cluster.clone(),
        nodes: vec![NodeInfo {
            id: broker.node_id,
            address: ctx.config.advertised.clone(),
        }],
        topics,
    }
}

fn describe(broker: &Broker, name: &str) -> Result<TopicDescription, WireError> {
    let t = broker.topic(name)?;
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = p.log.stats();
            PartitionStats {
                id: i as u32,
                leader: broker.node_id,
                leader_epoch: 0,
                start_offset: s.log_start.0,
                end_offset: s.log_end.0,
                high_watermark: s.high_watermark.0,
                size_bytes: s.size_bytes,
                segments: s.segments as u32,
            }
        })
        .collect();
    Ok(TopicDescription {
        name: t.name.to_string(),
        configs: t.config.to_pairs(),
        partitions,
    })
}

async fn produce(
    broker: &Broker,
    topic: &str,
    partition: u32,
    acks: Acks,
    payload: Bytes,
) -> Result<Answer, WireError> {
    let t = broker.topic(topic)?;
    if let Some(m) = &t.mirror {
        return Err(WireError::new(
            ErrorCode::READ_ONLY_TOPIC,
            format!(
                "topic {topic:?} is a mirror of {:?} on cluster {:?}, written only by mirror flow {:?}; \
                 produce to the source cluster, or promote the mirror topic when failing over",
                m.source_topic, m.source_cluster, m.flow
            ),
        ));
    }
    let p = broker.partition(topic, partition)?;
    let batches = decode_batches(&t, topic, partition, payload)?;
    if batches.iter().any(|b| b.provenance().is_some()) {
        return Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            format!("{topic}/{partition}: a produced batch carries mirror provenance; only mirror flows set it (through MirrorAppend)"),
        ));
    }
    if batches.is_empty() {
        return Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            "produce carried no batch; send at least one record",
        ));
    }
    let p2 = p.clone();
    let append = move || -> Result<(u64, u64), LogError> {
        let mut first = None;
        let mut last = 0;
        let now = now_ms();
        for b in batches {
            let a = p2.log.append(b, now)?;
            first.get_or_insert(a.base_offset.0);
            last = a.last_offset.0;
        }
        Ok((first.unwrap_or(0), last))
    };
    let (base_offset, last_offset) = run_append(t.config.flush, append).await?;
    wake(&p);
    if acks == Acks::None {
        return Ok((Response::Ack, Vec::new()));
    }
    Ok((
        Response::Produced {
            base_offset,
            last_offset,
            log_start: p.log.log_start().0,
        },
        Vec::new(),
    ))
}

/// Where source offset `offset` of `topic`/`partition` on `cluster` lives here.
///
/// Prefix-mode mirror topics hold source records at their source offsets, so the offset is the
/// same, provided it has been copied and not yet deleted. Identity-mode topics (same name on both
/// sides, local writes interleaved) look it up in the partition's mirror map. With `position`,
/// the answer is where a consumer that committed `offset` resumes (the first record here at or
/// after it).
fn translate(
    broker: &Broker,
    cluster: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    position: bool,
) -> Result<(String, u64), WireError> {
    let prefix_mirror = broker.topics().into_iter().find(|t| {
        t.mirror
            .as_ref()
            .is_some_and(|m| m.source_cluster == cluster && m.source_topic == topic)
    });
    let t = match prefix_mirror {
        Some(t) => t,
        None => broker.topic(topic).map_err(|_| {
            WireError::new(
                ErrorCode::UNKNOWN_TOPIC,
                format!("no mirror of {topic:?} from cluster {cluster:?} on cluster {}; is a flow copying it?", broker.cluster),
            )
        })?,
    };
    let p = t.partitions.get(partition as usize).ok_or_else(|| {
        WireError::new(
            ErrorCode::UNKNOWN_PARTITION,
            format!("{} has no partition {partition}", t.name),
        )
    })?;
    let name = t.name.to_string();
    let (start, end) = (p.log.log_start().0, p.log.high_watermark().0);
    let not_yet = |through: String| {
        WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} from {cluster} is not mirrored to {} yet ({through})", broker.cluster),
        )
    };
    if t.mirror.is_some() {
        if position {
            return Ok((name, offset.clamp(start, end)));
        }
        if offset >= end {
            return Err(not_yet(format!("mirrored up to {end}")));
        }
        if offset < start {
            return Err(WireError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("source offset {offset} of {topic}/{partition} was deleted on the target (it starts at {start})"),
            ));
        }
        return Ok((name, offset));
    }
    let key = SourceKey {
        cluster: cluster.into(),
        topic: topic.into(),
        partition,
    };
    if position {
        return Ok((name, p.log.mirrored_position(&key, offset).min(end)));
    }
    match p.log.translate_mirrored(&key, offset) {
        Translation::Exact(o) if o < end => Ok((name, o)),
        Translation::Exact(_) => Err(not_yet("copied but not yet durable".into())),
        Translation::Ahead { mirrored_through } => Err(not_yet(match mirrored_through {
            Some(o) => format!("mirrored through source offset {o}"),
            None => "nothing copied from it".into(),
        })),
        Translation::NotCopied { next_target } => Err(WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} from {cluster} was never copied here: it had already passed through {} or was deleted on the source first; the next copied record is at {next_target}", broker.cluster),
        )),
        Translation::Deleted => Err(WireError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("source offset {offset} of {topic}/{partition} was copied but retention deleted it here (the log starts at {start})"),
        )),
    }
}

/// Splits a request's payload into validated batches under the topic's limits.
fn decode_batches(
    t: &Topic,
    topic: &str,
    partition: u32,
    payload: Bytes,
) -> Result<Vec<RecordBatch>, WireError> {
    let limits = t.config.decode_limits();
    let batches = split_batches(payload, &limits).map_err(|e| corrupt(topic, partition, e))?;
    for b in &batches {
        b.check_decompressed_size(limits.batch_bytes_decompressed_max)
            .map_err(|e| corrupt(topic, partition, e))?;
    }
    Ok(batches)
}

/// Runs an append; under `flush = always` it waits for an fsync, so it runs off the async
/// workers.
async fn run_append(
    flush: FlushPolicy,
    append: impl FnOnce() -> Result<(u64, u64), LogError> + Send + 'static,
) -> Result<(u64, u64), WireError> {
    let result = if flush == FlushPolicy::Always {
        tokio::task::spawn_blocking(append)
            .await
            .map_err(|e| WireError::new(ErrorCode::INTERNAL, format!("append task failed: {e}")))?
    } else {
        append()
    };
    result.map_err(log_error)
}

/// Appends copied batches: at their own offsets into a prefix-mode mirror topic, at the log
/// end (with their provenance mapped) into an identity-mode topic.
async fn mirror_append(
    broker: &Broker,
    t: &Topic,
    partition: u32,
    batches: Vec<RecordBatch>,
) -> Result<Answer, WireError> {
    let topic = t.name.as_str();
    let p = broker.partition(topic, partition)?;
    let prefix = t.mirror.is_some();
    if !prefix {
        if let Some(b) = batches.iter().find(|b| {
            b.provenance()
                .and_then(|pr| pr.source().map(|h| h.cluster == broker.cluster))
                .unwrap_or(true)
        }) {
            return Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!("{topic}/{partition}: batch at source offset {} carries no provenance naming another cluster; \
                         identity-mode flows add a hop for the cluster they copy from", b.base_offset()),
            ));
        }
    }
    let p2 = p.clone();
    let append = move || -> Result<(u64, u64), LogError> {
        let appended = p2.log.append_copies(batches, prefix, now_ms())?;
        let end = p2.log.log_end().0;
        Ok(match appended {
            Some((first, last)) => (first.0, last.0),
            None => (end, end.saturating_sub(1)),
        })
    };
    let (base_offset, last_offset) = run_append(t.config.flush, append).await?;
    wake(&p);
    Ok((
        Response::Produced {
            base_offset,
            last_offset,
            log_start: p.log.log_start().0,
        },
        Vec::new(),
    ))
}

fn wake(p: &Partition) {
    p.grown.send_replace(p.log.high_watermark().0);
}

/// Longest long-poll a fetch may ask for.
const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Most bytes one fetch answer may carry.
const FETCH_BYTES_MAX: u32 = 32 << 20;

async fn fetch(
    broker: &Broker,
    topic: &str,
    partition: u32,
    offset: Offset,
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
) -> Result<Answer, WireError> {
    let p = broker.partition(topic, partition)?;
    let deadline =
        Instant::now() + Duration::from_millis(u64::from(max_wait_ms.min(FETCH_WAIT_MS_MAX)));
    let max_bytes = max_bytes.clamp(1, FETCH_BYTES_MAX) as usize;
    let mut grown: watch::Receiver<u64> = p.grown.subscribe();
    loop {
        grown.borrow_and_update();
        let read = p.log.read(offset, max_bytes).map_err(log_error)?;
        let enough = read.batches.len() >= min_bytes.max(1) as usize;
        if enough || Instant::now() >= deadline {
            let response = Response::Fetched {
                high_watermark: read.high_watermark.0,
                log_start: read.log_start.0,
            };
            return Ok((response, vec![read.batches]));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if let Ok(Err(_)) = tokio::time::timeout(wait, grown.changed()).await {
            // The partition went away (topic deleted): answer at the deadline.
            tokio::time::sleep(wait).await;
        }
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error(WireError::new(code, message))
}

fn log_error(e: LogError) -> WireError {
    let code = match &e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        LogError::OffsetNotMonotonic { .. } => ErrorCode::INVALID_REQUEST,
        LogError::Offline { .. } => ErrorCode::PARTITION_OFFLINE,
        LogError::WriteFailed { .. } => ErrorCode::WRITE_FAILED,
        LogError::Corrupt { .. } => ErrorCode::STORAGE,
        LogError::Sequence {
            source: SequenceError::Fenced { .. },
            ..
        } => ErrorCode::PRODUCER_FENCED,
        LogError::Sequence { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE,
        LogError::NoProvenance { .. } => ErrorCode::INVALID_REQUEST,
        _ => ErrorCode::STORAGE,
    };
    WireError::new(code, e.to_string())
}
