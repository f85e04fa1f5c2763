//! One QUIC connection to a node, and the reconnecting client that hands it out.
//!
//! Each request runs on its own bidirectional stream, so a slow fetch never holds up a produce
//! to another partition (no head-of-line blocking between requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::error::{ErrorCode, WireError};
use crate::frame::{FrameError, FrameLimits};
use crate::message::{Request, Response, VERSION_MAX, VERSION_MIN};
use crate::pool::BufferPool;
use crate::transport::{transport_config, TransportLimits};
use crate::wire;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to {address}: {reason}; check that a node listens there and that its certificate is for that host")]
    Connect { address: String, reason: String },
    /// The peer answered but will never accept this client as it is (a certificate refused
    /// either way, or no Strait node at that address): retrying cannot help.
    #[error("cannot connect to {address}: {reason}")]
    Refused { address: String, reason: String },
    #[error("no bootstrap address given; pass --bootstrap HOST:PORT or set STRAIT_BOOTSTRAP")]
    NoBootstrap,
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("{0}")]
    Wire(WireError),
    #[error("bad frame from the node: {0}")]
    Frame(#[from] FrameError),
    #[error("bad batch from the node: {0}")]
    Decode(#[from] crate::batch::DecodeError),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("the node answered {got} to a {request} request")]
    UnexpectedResponse { request: &'static str, got: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<wire::StreamError> for ClientError {
    fn from(e: wire::StreamError) -> Self {
        match e {
            wire::StreamError::Lost(reason) => ClientError::ConnectionLost(reason),
            wire::StreamError::Frame(e) => ClientError::Frame(e),
            wire::StreamError::Stalled(stall) => ClientError::Timeout(stall),
        }
    }
}

impl ClientError {
    /// Whether retrying the same request (after reconnecting) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Wire(e) => e.code.is_retriable(),
            ClientError::ConnectionLost(_)
            | ClientError::Connect { .. }
            | ClientError::Timeout(_) => true,
            _ => false,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Wire(e) => Some(e.code),
            _ => None,
        }
    }
}

/// How to reach and talk to a cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub bootstrap: Vec<String>,
    pub tls: Arc<rustls::ClientConfig>,
    pub client_id: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub frame_limits: FrameLimits,
    pub transport: TransportLimits,
    /// Longest wait between reconnect attempts.
    pub reconnect_backoff_max: Duration,
}

impl ClientOptions {
    pub fn new(bootstrap: Vec<String>, tls: rustls::ClientConfig) -> Self {
        ClientOptions {
            bootstrap,
            tls: Arc::new(tls),
            client_id: "strait".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            frame_limits: FrameLimits::default(),
            transport: TransportLimits::default(),
            reconnect_backoff_max: Duration::from_secs(5),
        }
    }
}

/// What the node said in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    pub version: u16,
    pub cluster: String,
    pub node_id: u32,
    pub principal: String,
}

/// One live connection to a node, after the hello exchange.
pub struct Connection {
    pub(super) conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    pub hello: HelloInfo,
    pub address: String,
    pub(super) limits: FrameLimits,
    pub(super) timeout: Duration,
    /// Answer bodies are gathered into these, so a stream of fetches reuses warm memory.
    pub(super) buffers: BufferPool,
}

/// Answer buffers one connection keeps for reuse: enough for a mirror flow's fetch-ahead over
/// several partitions, bounded so an idle connection holds little.
const CONNECTION_BUFFERS_MAX: usize = 16;
const CONNECTION_BUFFER_BYTES_MAX: usize = 128 << 20;

impl Connection {
    /// Connects, completes the TLS handshake and the hello exchange.
    pub async fn connect(address: &str, opts: &ClientOptions) -> Result<Connection, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            address: address.into(),
            reason,
        };
        let (addr, host) = resolve(address).await.map_err(fail)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .unwrap_or_else(|_| unreachable!("a literal socket address"));
        let mut endpoint = crate::transport::endpoint(bind, None, &opts.transport)
            .map_err(|e| fail(e.to_string()))?;
        let quic = QuicClientConfig::try_from(opts.tls.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport_config(&opts.transport));
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, &host)
            .map_err(|e| fail(e.to_string()))?;
        let conn = match tokio::time::timeout(opts.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) if is_refusal(&e) => {
                return Err(ClientError::Refused {
                    address: address.into(),
                    reason: explain_handshake(&e),
                })
            }
            Ok(Err(e)) => return Err(fail(explain_handshake(&e))),
            Err(_) => return Err(silent(address, addr, opts.connect_timeout).await),
        };
        let mut c = Connection {
            conn,
            _endpoint: endpoint,
            hello: HelloInfo {
                version: 0,
                cluster: String::new(),
                node_id: 0,
                principal: String::new(),
            },
            address: address.into(),
            limits: opts.frame_limits,
            timeout: opts.request_timeout,
            buffers: BufferPool::new(CONNECTION_BUFFERS_MAX, CONNECTION_BUFFER_BYTES_MAX),
        };
        let hello = Request::Hello {
            version_min: VERSION_MIN,
            version_max: VERSION_MAX,
            client_id: opts.client_id.clone(),
        };
        // The first stream proves the handshake really succeeded: a node that rejects our
        // certificate closes the connection here.
        let (resp, _) = match c.request(&hello, &[]).await {
            Ok(answer) => answer,
            Err(e) => {
                return Err(match c.conn.close_reason() {
                    Some(closed) if is_refusal(&closed) => ClientError::Refused {
                        address: address.into(),
                        reason: explain_handshake(&closed),
                    },
                    Some(closed) => fail(explain_handshake(&closed)),
                    None => fail(e.to_string()),
                });
            }
        };
        match resp {
            Response::Hello {
                version,
                cluster,
                node_id,
                principal,
            } => {
                c.hello = HelloInfo {
                    version,
                    cluster,
                    node_id,
                    principal,
                };
                debug!(address, cluster = %c.hello.cluster, node = c.hello.node_id, "connected");
                Ok(c)
            }
            other => Err(fail(format!("unexpected hello answer {other:?}"))),
        }
    }

    /// Sends one request with its payload chunks and waits for the answer.
    pub async fn request(
        &self,
        request: &Request,
        payload: &[Bytes],
    ) -> Result<(Response, Bytes), ClientError> {
        // The timeout bounds the wait for the answer to begin, then each stall while its body
        // arrives: a large answer over a slow link that keeps moving is not cut off (and then
        // fetched again from the start), while a dead link still fails within the timeout.
        let exchange = async {
            let (mut send, mut recv) = self.conn.open_bi().await.map_err(lost)?;
            let payload_len: usize = payload.iter().map(Bytes::len).sum();
            wire::write_frame(
                &mut send,
                request,
                payload.iter().cloned(),
                payload_len,
                None,
            )
            .await?;
            let prefix = wire::read_prefix(&mut recv).await?;
            Ok::<_, ClientError>((recv, prefix))
        };
        let (mut recv, prefix) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let (resp, payload) = wire::read_frame_body::<Response>(
            &mut recv,
            prefix,
            &self.limits,
            Some(self.timeout),
            Some(&self.buffers),
        )
        .await?;
        match resp {
            Response::Error(e) => Err(ClientError::Wire(e)),
            other => Ok((other, payload)),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }

    /// The underlying QUIC connection (for stats).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// Reads one frame (header and payload) from a stream.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limits: &FrameLimits,
) -> Result<(T, Bytes), ClientError> {
    Ok(wire::read_frame(recv, limits, None).await?)
}

/// Whether a failed handshake was a certificate refused by either side (a TLS alert from the
/// node, or this client's verifier): the same certificates will be refused again.
fn is_refusal(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ConnectionClosed(close) => {
            (0x100..0x200).contains(&u64::from(close.error_code))
        }
        quinn::ConnectionError::TransportError(t) => t.reason.contains("certificate"),
        _ => false,
    }
}

/// Nothing answered QUIC at `addr`: when a TCP service answers at the same address, this is
/// most likely a node's admin HTTP port (or another service), which no retry will fix.
async fn silent(address: &str, addr: SocketAddr, waited: Duration) -> ClientError {
    let tcp = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    if matches!(tcp, Ok(Ok(_))) {
        return ClientError::Refused {
            address: address.into(),
            reason: format!("no Strait node answered over QUIC (UDP) within {waited:?}, but a TCP service listens at {addr}: is this a node's admin HTTP port (--admin-listen)? Clients dial the node's QUIC address (its --listen, e.g. 127.0.0.1:7400)"),
        };
    }
    ClientError::Connect {
        address: address.into(),
        reason: format!("no answer within {waited:?}"),
    }
}

/// Turns a refused handshake into what went wrong and what to do: which side refused which
/// certificate, and why, from the TLS alert the node sent or our own verifier's verdict.
pub fn explain_handshake(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            if !(0x100..0x200).contains(&code) {
                let reason = String::from_utf8_lossy(&close.reason);
                return format!("the node closed the connection: {reason} ({e})");
            }
            let why = match code - 0x100 {
                44 => "it was revoked (the node's CRL lists it); get a new one with `strait certs rotate`",
                45 => "it has expired or is not valid yet; check `strait certs inspect` and the clocks",
                48 | 51 => "it was not signed by a CA the node trusts; use a certificate issued by the node's CA",
                116 => "none was sent; pass --cert and --key",
                43 => "its key usage does not allow client authentication; issue it with --role client or mirror",
                _ => "the node does not accept it (its log says why)",
            };
            format!("the node refused this client's certificate: {why} ({e})")
        }
        quinn::ConnectionError::TransportError(t) if t.reason.contains("certificate") => {
            let r = &t.reason;
            let l = r.to_ascii_lowercase().replace(' ', "");
            let why = if l.contains("invalidpurpose") || l.contains("extendedkeyusage") {
                "it is not valid for a server (not issued with role node; a client or mirror certificate cannot serve)"
            } else if l.contains("unknownissuer") || l.contains("badsignature") {
                "it was not issued by the CA this client trusts (--ca)"
            } else if l.contains("expired") || l.contains("notvalidyet") {
                "it has expired or is not valid yet"
            } else if l.contains("notvalidforname") {
                "it does not name the host dialed; connect with a name or IP listed in its SANs"
            } else {
                "it did not verify"
            };
            format!("this client refused the node's certificate: {why} ({r})")
        }
        other => other.to_string(),
    }
}

pub(super) fn lost(e: impl std::fmt::Display) -> ClientError {
    ClientError::ConnectionLost(e.to_string())
}

/// Resolves `HOST:PORT` on tokio's blocking pool (`lookup_host`): a DNS lookup may take
/// seconds and must never stall an async worker, which also drives quinn's endpoint.
async fn resolve(address: &str) -> Result<(SocketAddr, String), String> {
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to nothing"))?;
    Ok((addr, host))
}

/// A handle to a cluster that keeps one connection and replaces it, with backoff, when lost.
pub struct Client {
    opts: ClientOptions,
    current: Mutex<Option<Arc<Connection>>>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Arc<Client> {
        Arc::new(Client {
            opts,
            current: Mutex::new(None),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The live connection, connecting (trying each bootstrap address) if there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        if self.opts.bootstrap.is_empty() {
            return Err(ClientError::NoBootstrap);
        }
        let mut last = None;
        for address in &self.opts.bootstrap {
            match Connection::connect(address, &self.opts).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *current = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::NoBootstrap))
    }

    /// Sends a request; on a lost connection, reconnects with backoff and tries again, up to
    /// `attempts` times in all.
    pub async fn call_with_retries(
        &self,
        request: &Request,
        payload: &[Bytes],
        attempts: u32,
    ) -> Result<(Response, Bytes), ClientError> {
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.connection().await {
                Ok(c) => c.request(request, payload).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_retriable() && attempt < attempts => {
                    warn!(request = request.kind(), attempt, error = %e, "retrying");
                    if matches!(e, ClientError::ConnectionLost(_) | ClientError::Timeout(_)) {
                        self.current.lock().await.take();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.opts.reconnect_backoff_max);
                }
                other => return other,
            }
        }
    }

    /// Sends a request, retrying connection failures a few times.
    pub async fn call(
        &self,
        request: &Request,
        payload: &[Bytes],
    ) -> Result<(Response, Bytes), ClientError> {
        self.call_with_retries(request, payload, 4).await
    }
}

pub(crate) fn unexpected(request: &'static str, got: Response) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        got: format!("{got:?}"),
    }
}
