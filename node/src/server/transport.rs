//! The QUIC transport: admission before any handshake work, mutual TLS and its reloads, one
//! request per bidirectional stream, and the bounds that keep one peer from slowing the others
//! (connections per IP and per principal, pending handshakes, malformed frames, a deadline to
//! send a request, a deadline for every stall while an answer is written, and a memory budget
//! per connection). What a request means is the request service's business.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dashmap::DashMap;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use strait_protocol::frame::{self, FrameError};
use strait_protocol::pool::BufferPool;
use strait_protocol::transport::transport_config;
use strait_protocol::wire::{self, StreamError};
use strait_protocol::{ErrorCode, Request, Response, WireError};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::service::{RequestService, Session};
use super::ListenConfig;

mod fetch_stream;

/// Request buffers the node keeps for reuse, and the most memory they may hold.
const REQUEST_BUFFERS_MAX: usize = 16;
const REQUEST_BUFFER_BYTES_MAX: usize = 128 << 20;
/// The memory budget counts in KiB, so a semaphore's permits cover any budget.
const BUDGET_UNIT: u64 = 1024;

/// What the listener shares across connections.
struct Listener {
    service: Arc<RequestService>,
    config: ListenConfig,
    per_ip: DashMap<IpAddr, u32>,
    per_principal: DashMap<Arc<str>, u32>,
    pending_handshakes: AtomicU32,
    /// Request bodies (produce, mirror append) are gathered into these, shared by all
    /// connections, so a steady stream of large appends reuses warm memory.
    request_buffers: BufferPool,
}

/// One authenticated connection: its session, its malformed-frame count and memory budget.
struct Peer {
    session: Session,
    malformed: AtomicU32,
    connection: quinn::Connection,
    /// Bytes of requests and answers this connection may hold in the node, in KiB.
    memory: Arc<Semaphore>,
    /// The whole budget, in KiB.
    memory_units: u32,
}

/// Binds the endpoint and starts accepting; answers the endpoint and the handle that forces a
/// certificate reload.
pub(super) fn start(
    service: Arc<RequestService>,
    config: ListenConfig,
) -> anyhow::Result<(quinn::Endpoint, Arc<tokio::sync::Notify>)> {
    let server_config = build_server_config(&config)?;
    let endpoint =
        strait_protocol::transport::endpoint(config.listen, Some(server_config), &config.transport)
            .with_context(|| {
                format!(
                    "cannot listen on {}; is another process using it?",
                    config.listen
                )
            })?;
    let listener = Arc::new(Listener {
        service,
        config,
        per_ip: DashMap::new(),
        per_principal: DashMap::new(),
        pending_handshakes: AtomicU32::new(0),
        request_buffers: BufferPool::new(REQUEST_BUFFERS_MAX, REQUEST_BUFFER_BYTES_MAX),
    });
    let accept = endpoint.clone();
    let accepting = listener.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            admit(incoming, &accepting);
        }
    });
    let reload = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(watch_certificates(
        endpoint.clone(),
        listener,
        reload.clone(),
    ));
    Ok((endpoint, reload))
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

/// Re-reads the TLS files when they change (or on demand) and swaps the endpoint's config:
/// new connections get the new certificate, open ones keep theirs. A file that does not load
/// keeps the previous config, and says why. Also warns about certificates close to expiry.
async fn watch_certificates(
    endpoint: quinn::Endpoint,
    listener: Arc<Listener>,
    reload: Arc<tokio::sync::Notify>,
) {
    let config = &listener.config;
    let metrics = listener.service.metrics();
    let files = tls_files(config);
    let mut stamp = strait_certs::stamp(&files);
    let mut warned_at: Option<Instant> = None;
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(config.cert_reload_interval) => false,
            _ = reload.notified() => true,
        };
        let now = strait_certs::stamp(&files);
        if forced || now != stamp {
            stamp = now;
            // Writers replace several files one after the other; let them finish.
            tokio::time::sleep(Duration::from_millis(100)).await;
            match build_server_config(config) {
                Ok(built) => {
                    endpoint.set_server_config(Some(built));
                    metrics.event("cert_reload_ok");
                    warned_at = None;
                    let why = if forced {
                        "on request (SIGHUP)"
                    } else {
                        "the files changed"
                    };
                    info!(cert = %config.cert.display(), "TLS certificates reloaded ({why}); new connections use them");
                }
                Err(e) => {
                    metrics.event("cert_reload_failed");
                    warn!(
                        error = format!("{e:#}"),
                        "new TLS files are not usable; keeping the previous certificates"
                    );
                }
            }
        }
        if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            warned_at = Some(Instant::now());
            warn_expiring(config);
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
fn admit(incoming: quinn::Incoming, listener: &Arc<Listener>) {
    let ip = incoming.remote_address().ip();
    let limits = listener.config.peers;
    let metrics = listener.service.metrics();
    if listener.pending_handshakes.load(Ordering::Acquire) >= limits.pending_handshakes_max {
        if !incoming.remote_address_validated() && incoming.may_retry() {
            metrics.event("limit_pending_handshakes_retry");
            let _ = incoming.retry();
        } else {
            metrics.event("limit_pending_handshakes");
            incoming.refuse();
        }
        return;
    }
    {
        let mut n = listener.per_ip.entry(ip).or_insert(0);
        if *n >= limits.connections_per_ip_max {
            drop(n);
            metrics.event("limit_connections_per_ip");
            debug!(%ip, max = limits.connections_per_ip_max, "refused: too many connections from this address");
            incoming.refuse();
            return;
        }
        *n += 1;
    }
    listener.pending_handshakes.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(handle_connection(incoming, listener.clone()));
}

async fn handle_connection(incoming: quinn::Incoming, listener: Arc<Listener>) {
    let peer = incoming.remote_address();
    let ip = peer.ip();
    let metrics = listener.service.metrics();
    let per_ip = listener.clone();
    let _ip_slot = Forget(move || release(&per_ip.per_ip, &ip));
    let pending_count = listener.clone();
    let mut pending = Some(Forget(move || {
        pending_count
            .pending_handshakes
            .fetch_sub(1, Ordering::AcqRel);
    }));
    let timeout = listener.config.handshake_timeout;
    let conn = match tokio::time::timeout(timeout, async { incoming.await }).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let reason = e.to_string();
            metrics.handshake_failed(crate::metrics::handshake_reason(&reason));
            warn!(%peer, %reason, "TLS handshake failed; connection refused");
            return;
        }
        Err(_) => {
            metrics.handshake_failed("timeout");
            warn!(%peer, "TLS handshake timed out; connection dropped");
            return;
        }
    };
    let Some((principal, role)) = peer_identity(&conn) else {
        warn!(%peer, "peer certificate has no common name; connection refused");
        conn.close(1u32.into(), b"certificate without a common name");
        return;
    };
    pending.take();
    let principal: Arc<str> = principal.into();
    if negotiated_alpn(&conn).as_deref() == Some(strait_certs::CONTROLLER_ALPN) {
        serve_controller(conn, principal, role, &listener).await;
        return;
    }
    {
        let max = listener.config.peers.connections_per_principal_max;
        let mut n = listener.per_principal.entry(principal.clone()).or_insert(0);
        if *n >= max {
            drop(n);
            metrics.event("limit_connections_per_principal");
            warn!(%peer, %principal, max, "refused: too many connections for this principal");
            conn.close(
                2u32.into(),
                format!("too many connections for principal {principal:?} (limits.connections_per_principal_max = {max})").as_bytes(),
            );
            return;
        }
        *n += 1;
    }
    let per_principal = listener.clone();
    let held = principal.clone();
    let _principal_slot = Forget(move || release(&per_principal.per_principal, &held));
    info!(%peer, %principal, role = role.map(|r| r.as_str()).unwrap_or("none"), "connection accepted");
    let id = conn.stable_id();
    metrics.connections.insert(
        id,
        crate::metrics::LiveConnection {
            peer,
            principal: principal.to_string(),
            connection: conn.clone(),
        },
    );
    let forget_metrics = metrics.clone();
    let _forget = Forget(move || {
        forget_metrics.connections.remove(&id);
    });
    let budget = (listener.config.peers.connection_memory_bytes_max / BUDGET_UNIT)
        .clamp(1, u64::from(u32::MAX));
    let memory_units = u32::try_from(budget).unwrap_or(u32::MAX);
    let state = Arc::new(Peer {
        session: Session::new(principal, role),
        malformed: AtomicU32::new(0),
        connection: conn.clone(),
        memory: Arc::new(Semaphore::new(memory_units as usize)),
        memory_units,
    });
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handle_stream(send, recv, listener.clone(), state.clone()));
            }
            Err(e) => {
                debug!(%peer, principal = %state.session.principal(), reason = %e, "connection closed");
                return;
            }
        }
    }
}

/// The principal (common name) and role on the peer's leaf certificate; `None` without a
/// certificate or without a common name.
pub(crate) fn peer_identity(
    conn: &quinn::Connection,
) -> Option<(String, Option<strait_certs::Role>)> {
    let leaf = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .first()?
        .clone();
    Some((
        strait_certs::principal_of(&leaf)?,
        strait_certs::role_of(&leaf),
    ))
}

/// The application protocol the peer chose in its handshake.
fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Hands a controller connection (its own ALPN) to this node's controller member: only nodes
/// of this cluster, by their certificates, and only once the controller runs.
async fn serve_controller(
    conn: quinn::Connection,
    principal: Arc<str>,
    role: Option<strait_certs::Role>,
    listener: &Listener,
) {
    if role != Some(strait_certs::Role::Node) {
        warn!(%principal, "controller connection without a node certificate; refused");
        conn.close(3u32.into(), b"controller traffic needs a node certificate");
        return;
    }
    if listener.service.controller().is_none() {
        conn.close(4u32.into(), b"this node's controller is not running yet");
        return;
    }
    let service = listener.service.clone();
    crate::controller::network::serve(conn, principal, move || service.controller()).await;
}

/// Decrements a per-key connection count, removing the key at zero.
fn release<K: std::hash::Hash + Eq>(counts: &DashMap<K, u32>, key: &K) {
    if let Some(mut e) = counts.get_mut(key) {
        *e -= 1;
        if *e == 0 {
            drop(e);
            counts.remove_if(key, |_, n| *n == 0);
        }
    }
}

/// Serves one stream: read the request (within the read deadline, after reserving its size in
/// the connection's memory budget), hand it to the request service, write the answer (every
/// stall bounded), and keep the budget until the answer has left.
async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    listener: Arc<Listener>,
    peer: Arc<Peer>,
) {
    let config = &listener.config;
    let read = tokio::time::timeout(config.request_read_timeout, async {
        let prefix = wire::read_prefix(&mut recv).await?;
        // Reserve the request's size before its body is read into memory.
        let lengths = frame::decode_prefix(prefix, &config.frame_limits)?;
        let Some(held) = reserve(&peer, lengths.total() as u64).await else {
            return Err(StreamError::Lost("the connection closed".into()));
        };
        let (request, payload) = wire::read_frame_body::<Request>(
            &mut recv,
            prefix,
            &config.frame_limits,
            None,
            Some(&listener.request_buffers),
        )
        .await?;
        Ok::<_, StreamError>((request, payload, held))
    });
    let mut held = Vec::new();
    let (response, payload) = match read.await {
        Err(_) => (
            error(
                ErrorCode::TIMEOUT,
                format!(
                    "request not received within {:?}",
                    config.request_read_timeout
                ),
            ),
            Vec::new(),
        ),
        Ok(Err(StreamError::Frame(e))) => {
            let code = match e {
                FrameError::TooLarge { .. } | FrameError::HeaderTooLarge { .. } => {
                    ErrorCode::FRAME_TOO_LARGE
                }
                _ => ErrorCode::MALFORMED_FRAME,
            };
            warn!(principal = %peer.session.principal(), error = %e, "bad frame");
            let _ = recv.stop(1u32.into());
            malformed_frame(&listener, &peer);
            (error(code, e.to_string()), Vec::new())
        }
        Ok(Err(_)) => return,
        Ok(Ok((open @ Request::FetchStream { .. }, _, _))) => {
            return fetch_stream::serve(listener, peer, send, recv, open).await;
        }
        Ok(Ok((request, payload, request_held))) => {
            held.push(request_held);
            if let Request::Fetch {
                topic,
                partition,
                offset,
                ..
            } = &request
            {
                listener
                    .service
                    .note_reader_position(&peer.session, topic, *partition, *offset);
            }
            // A fetch answer can be as large as it asks for: reserve that too, up front.
            if let Request::Fetch { max_bytes, .. } = &request {
                let answer =
                    u64::from(*max_bytes).min(u64::from(super::handlers::data::FETCH_BYTES_MAX));
                match reserve(&peer, answer).await {
                    Some(permit) => held.push(permit),
                    None => return,
                }
            }
            let kind = request.kind();
            match listener
                .service
                .handle(&peer.session, request, payload)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    debug!(principal = %peer.session.principal(), request = kind, error = %e, "request failed");
                    (Response::Error(e), Vec::new())
                }
            }
        }
    };
    let len: usize = payload.iter().map(Bytes::len).sum();
    let written = wire::write_frame(
        &mut send,
        &response,
        payload,
        len,
        Some(config.answer_write_stall),
    )
    .await;
    if let Err(StreamError::Stalled(stall)) = written {
        // The peer stopped reading: drop the answer (and its memory) instead of holding it.
        listener.service.metrics().event("limit_answer_write_stall");
        debug!(principal = %peer.session.principal(), ?stall, "answer not read in time; stream reset");
        let _ = send.reset(4u32.into());
    }
    drop(held);
}

/// Takes `bytes` of the connection's memory budget (waiting while earlier requests hold it);
/// a request larger than the whole budget takes all of it. None once the connection closed
/// while waiting: there is nobody left to answer.
async fn reserve(peer: &Peer, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let units = bytes
        .div_ceil(BUDGET_UNIT)
        .clamp(1, u64::from(peer.memory_units));
    let units = u32::try_from(units).unwrap_or(peer.memory_units);
    tokio::select! {
        permit = peer.memory.clone().acquire_many_owned(units) => permit.ok(),
        _ = peer.connection.closed() => None,
    }
}

/// Counts a malformed frame; past the limit the whole connection is closed.
fn malformed_frame(listener: &Listener, peer: &Peer) {
    let max = listener.config.peers.malformed_frames_per_connection_max;
    if peer.malformed.fetch_add(1, Ordering::AcqRel) + 1 >= max {
        listener.service.metrics().event("limit_malformed_frames");
        warn!(principal = %peer.session.principal(), max, "closing a connection that keeps sending malformed frames");
        peer.connection
            .close(3u32.into(), b"too many malformed frames");
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error(WireError::new(code, message))
}

/// Runs `f` when dropped (releasing a slot however a connection's task ends).
struct Forget<F: FnMut()>(F);

impl<F: FnMut()> Drop for Forget<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
