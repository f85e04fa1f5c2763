//! Controller traffic between nodes: openraft's calls, and commands forwarded to the leader,
//! over QUIC with mutual TLS.
//!
//! Controller calls use their own ALPN (`strait_certs::CONTROLLER_ALPN`) and so their own QUIC
//! connection per peer, with its own flow control and congestion window: a vote or heartbeat
//! never queues behind a 32 MiB fetch answer on a client's connection. Both ends check who
//! they talk to: the dialling node refuses a peer whose certificate does not name the node id
//! it dialled (`CLUSTER-ID`, role node), and the serving node refuses a call whose sender
//! (the candidate or leader in its vote) is not the node its certificate names. One call is one
//! bidirectional stream: a length-prefixed postcard request, then the answer, under the
//! deadline openraft gives.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::image::{Command, Outcome};
use super::TypeConfig;

/// Largest controller message (a snapshot chunk is at most 3 MiB, an append at most
/// `max_payload_entries` small commands).
const CALL_BYTES_MAX: usize = 64 << 20;

/// What one node asks another's controller.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the log, sent to the leader by a node that is not.
    Propose(Command),
    /// A node is alive (in the incarnation it registered as).
    Heartbeat {
        node_id: u64,
        incarnation: u64,
    },
}

/// Why a command or heartbeat sent to a controller was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("node {asked} is not the controller leader (the leader is {leader:?})")]
    NotLeader { asked: u64, leader: Option<u64> },
    #[error("no controller leader answered within {0:?}; is a majority of the voters up?")]
    NoLeader(Duration),
    #[error("{0}")]
    Failed(String),
}

/// What a heartbeat's answer tells the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatAnswer {
    Alive,
    /// Fenced, or known under another incarnation: register again before leading anything.
    Register,
}

/// A failed call, as seen by the caller.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach node {target} at {address}: {reason}")]
    Unreachable {
        target: u64,
        address: String,
        reason: String,
    },
    #[error("the call to node {target} failed: {reason}")]
    Failed { target: u64, reason: String },
}

/// The node's side of every controller connection it dials: one connection per peer, kept.
pub struct Peers {
    endpoint: quinn::Endpoint,
    cluster: String,
    /// This node's own route to each voter (its `controllers` list), used before the address
    /// the membership records: the initializing voter wrote the membership from its view of
    /// the network, and another node may reach a voter at another address (NAT, a proxy).
    routes: BTreeMap<u64, String>,
    connections: tokio::sync::Mutex<HashMap<u64, quinn::Connection>>,
}

impl Peers {
    /// `tls` is this node's client config (its node certificate), with the controller ALPN.
    pub fn new(
        cluster: &str,
        routes: BTreeMap<u64, String>,
        mut tls: rustls::ClientConfig,
        limits: &strait_protocol::transport::TransportLimits,
    ) -> std::io::Result<Peers> {
        tls.alpn_protocols = vec![strait_certs::CONTROLLER_ALPN.to_vec()];
        let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut endpoint = strait_protocol::transport::endpoint(bind, None, limits)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(std::io::Error::other)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(strait_protocol::transport::transport_config(limits));
        endpoint.set_default_client_config(config);
        Ok(Peers {
            endpoint,
            cluster: cluster.to_string(),
            routes,
            connections: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Sends `call` to `target` at `address` and answers its reply's bytes.
    pub async fn call(
        &self,
        target: u64,
        address: &str,
        call: &Call,
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let failed = |reason: String| CallError::Failed { target, reason };
        let address = self.routes.get(&target).map_or(address, String::as_str);
        let conn = tokio::time::timeout(deadline, self.connection(target, address))
            .await
            .map_err(|_| CallError::Unreachable {
                target,
                address: address.to_string(),
                reason: format!("no connection within {deadline:?}"),
            })??;
        let body = postcard::to_allocvec(call).map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            write_message(&mut send, &body).await?;
            read_message(&mut recv).await
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => {
                self.forget(target, &conn).await;
                Err(failed(reason))
            }
            Err(_) => {
                self.forget(target, &conn).await;
                Err(failed(format!("no answer within {deadline:?}")))
            }
        }
    }

    /// Drops a connection a call failed on, so the next call dials again: a peer killed
    /// and restarted leaves a connection that only its idle timeout would end, and every call
    /// on it would time out meanwhile.
    async fn forget(&self, target: u64, conn: &quinn::Connection) {
        let mut connections = self.connections.lock().await;
        if connections
            .get(&target)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            connections.remove(&target);
        }
        conn.close(0u32.into(), b"call failed");
    }

    async fn connection(&self, target: u64, address: &str) -> Result<quinn::Connection, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            target,
            address: address.to_string(),
            reason,
        };
        if let Some(c) = self.connections.lock().await.get(&target) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the name resolves to no address".into()))?;
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let conn = self
            .endpoint
            .connect(addr, host)
            .map_err(|e| unreachable(e.to_string()))?
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let expected = node_identity(&self.cluster, target);
        match crate::server::peer_identity(&conn) {
            Some((principal, Some(strait_certs::Role::Node))) if principal == expected => {}
            other => {
                conn.close(1u32.into(), b"not the node dialled");
                return Err(unreachable(format!(
                    "its certificate names {other:?}, not node {expected} (role node): the address belongs to another node, or its certificate was issued for another name"
                )));
            }
        }
        self.connections.lock().await.insert(target, conn.clone());
        Ok(conn)
    }
}

/// The name a node's certificate carries: `CLUSTER-ID` (as `topology up` issues them).
pub fn node_identity(cluster: &str, id: u64) -> String {
    strait_mirror::topology::node_identity(cluster, u32::try_from(id).unwrap_or(u32::MAX))
}

async fn write_message(send: &mut quinn::SendStream, body: &[u8]) -> Result<(), String> {
    let len = u32::try_from(body.len()).map_err(|_| "message too large".to_string())?;
    send.write_all(&len.to_le_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(body).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let _ = send.flush().await;
    Ok(())
}

async fn read_message(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len) as usize;
    if len > CALL_BYTES_MAX {
        return Err(format!(
            "a controller message of {len} bytes (at most {CALL_BYTES_MAX})"
        ));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

/// Serves one controller connection from a peer node until it closes. `principal` is the name
/// on the peer's node certificate. Each call goes to the member `controller` names at the
/// time: a member started anew (after a stop) answers on connections its predecessor accepted.
pub async fn serve(
    conn: quinn::Connection,
    principal: Arc<str>,
    controller: impl Fn() -> Option<Arc<super::Controller>>,
) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                debug!(%principal, reason = %e, "controller connection closed");
                return;
            }
        };
        let Some(controller) = controller() else {
            conn.close(4u32.into(), b"this node's controller stopped");
            return;
        };
        let principal = principal.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(Duration::from_secs(30), read_message(&mut recv)).await;
            let Ok(Ok(body)) = read else {
                return;
            };
            let answer = match postcard::from_bytes::<Call>(&body) {
                Ok(call) => controller.answer(&principal, call).await,
                Err(e) => Err(format!("undecodable controller call: {e}")),
            };
            let body = match answer {
                Ok(body) => body,
                Err(refusal) => {
                    debug!(%principal, %refusal, "controller call refused");
                    send.reset(1u32.into()).ok();
                    return;
                }
            };
            let _ = write_message(&mut send, &body).await;
        });
    }
}

/// Encodes a reply.
pub(super) fn reply<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| e.to_string())
}

fn decode<T: DeserializeOwned>(target: u64, bytes: &[u8]) -> Result<T, CallError> {
    postcard::from_bytes(bytes).map_err(|e| CallError::Failed {
        target,
        reason: format!("undecodable answer: {e}"),
    })
}

/// Makes openraft's per-peer clients.
pub struct NetworkFactory {
    pub(super) peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            target,
            address: node.addr.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerClient {
    peers: Arc<Peers>,
    target: u64,
    address: String,
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerClient {
    async fn rpc<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        call: &Call,
        option: &RPCOption,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let bytes = self
            .peers
            .call(self.target, &self.address, call, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        let answer: Result<T, RaftError<u64, E>> =
            decode(self.target, &bytes).map_err(rpc_error)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(&Call::Append(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(&Call::Snapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(&Call::Vote(rpc), &option).await
    }
}

/// Answers for forwarded commands and heartbeats, as they travel.
pub type ProposeAnswer = Result<Outcome, ProposeError>;
pub type HeartbeatReply = Result<HeartbeatAnswer, ProposeError>;

/// Sends `call` (a proposal or heartbeat) to `target` and decodes its answer as `T`.
pub(super) async fn ask<T: DeserializeOwned>(
    peers: &Peers,
    target: u64,
    address: &str,
    call: &Call,
    deadline: Duration,
) -> Result<T, CallError> {
    let bytes = peers.call(target, address, call, deadline).await?;
    decode(target, &bytes)
}
