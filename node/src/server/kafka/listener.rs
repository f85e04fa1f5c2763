//! Accepting Kafka connections: admission per IP, the TLS handshake with a deadline, the
//! principal from the client certificate, and certificate reloads (new connections get the new
//! files; a file that does not load keeps the previous config).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use dashmap::DashMap;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::conn;
use super::KafkaConfig;
use crate::server::service::{RequestService, Session};

/// What every connection of the listener shares.
pub(super) struct Shared {
    pub service: Arc<RequestService>,
    pub config: KafkaConfig,
    tls: Option<RwLock<Arc<ServerConfig>>>,
    per_ip: DashMap<IpAddr, u32>,
}

/// A running Kafka listener.
pub struct KafkaListener {
    pub local_addr: SocketAddr,
    accept: JoinHandle<()>,
    reload: Option<JoinHandle<()>>,
}

impl KafkaListener {
    /// Binds the address and starts accepting Kafka clients.
    pub async fn start(
        service: Arc<RequestService>,
        mut config: KafkaConfig,
    ) -> anyhow::Result<KafkaListener> {
        config.validate().map_err(anyhow::Error::msg)?;
        let tls = if config.plaintext {
            None
        } else {
            Some(RwLock::new(Arc::new(tls_config(&config)?)))
        };
        let socket = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for Kafka clients on {}", config.listen))?;
        let local_addr = socket.local_addr()?;
        // An empty advertised address means the one bound (port 0 picks a free port).
        if config.advertised.is_empty() {
            config.advertised = local_addr.to_string();
        }
        info!(listen = %local_addr, tls = !config.plaintext, "Kafka listener up");
        let shared = Arc::new(Shared {
            service,
            config,
            tls,
            per_ip: DashMap::new(),
        });
        let reload = shared
            .tls
            .is_some()
            .then(|| tokio::spawn(watch_certificates(shared.clone())));
        let accept = tokio::spawn(accept_loop(socket, shared));
        Ok(KafkaListener {
            local_addr,
            accept,
            reload,
        })
    }

    /// Stops accepting (open connections end with the process).
    pub fn shutdown(&self) {
        self.accept.abort();
        if let Some(r) = &self.reload {
            r.abort();
        }
    }
}

/// The node's TLS config for Kafka clients: TLS 1.3, a client certificate chained to the
/// cluster's CA required, revocations refused; no ALPN (Kafka clients send none).
fn tls_config(c: &KafkaConfig) -> anyhow::Result<ServerConfig> {
    let mut tls = strait_certs::server_config_with_crl(&c.ca, &c.cert, &c.key, c.crl.as_deref())
        .context("cannot build the Kafka listener's TLS config; check ca, cert, key and crl")?;
    tls.alpn_protocols.clear();
    Ok(tls)
}

async fn watch_certificates(shared: Arc<Shared>) {
    let c = &shared.config;
    let mut files = vec![c.ca.clone(), c.cert.clone(), c.key.clone()];
    files.extend(c.crl.clone());
    let mut stamp = strait_certs::stamp(&files);
    loop {
        tokio::time::sleep(c.cert_reload_interval).await;
        let now = strait_certs::stamp(&files);
        if now == stamp {
            continue;
        }
        stamp = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
        match tls_config(c) {
            Ok(tls) => {
                if let Some(slot) = &shared.tls {
                    *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tls);
                }
                info!("Kafka listener: TLS certificates reloaded; new connections use them");
            }
            Err(e) => warn!(
                error = format!("{e:#}"),
                "Kafka listener: new TLS files are not usable; keeping the previous certificates"
            ),
        }
    }
}

async fn accept_loop(socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(error = %e, "Kafka listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip();
        {
            let max = shared.config.connections_per_ip_max;
            let mut n = shared.per_ip.entry(ip).or_insert(0);
            if *n >= max {
                drop(n);
                shared
                    .service
                    .metrics()
                    .event("limit_kafka_connections_per_ip");
                warn!(%peer, max, "Kafka listener: refused, too many connections from this address (limits.connections_per_ip_max)");
                continue;
            }
            *n += 1;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(stream, peer, &shared).await;
            if let Some(mut n) = shared.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
            }
            shared.per_ip.remove_if(&ip, |_, n| *n == 0);
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        let session = Session::authenticated(super::ANONYMOUS.into(), None);
        conn::serve(stream, peer, session, shared).await;
        return;
    };
    let config = tls.read().unwrap_or_else(|e| e.into_inner()).clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let metrics = shared.service.metrics();
    let accepted =
        tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = e.to_string();
            metrics.handshake_failed(crate::metrics::handshake_reason(&reason));
            warn!(%peer, %reason, "Kafka listener: TLS handshake failed; connection refused");
            return;
        }
        Err(_) => {
            metrics.handshake_failed("timeout");
            warn!(%peer, "Kafka listener: TLS handshake timed out; connection dropped");
            return;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    let role = leaf.as_ref().and_then(|c| strait_certs::role_of(c));
    let Some(principal) = leaf.as_ref().and_then(|c| strait_certs::principal_of(c)) else {
        warn!(%peer, "Kafka listener: client certificate has no common name; connection refused");
        return;
    };
    info!(%peer, %principal, "Kafka connection accepted");
    let session = Session::authenticated(principal.into(), role);
    conn::serve(stream, peer, session, shared).await;
}
