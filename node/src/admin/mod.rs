//! The admin HTTP listener (`--admin-listen`): `/health` (the process is alive), `/ready`
//! (storage recovered and the QUIC listener up), `/status` (JSON: node, cluster, topics,
//! partitions, the flows it runs and the flows that copy from it), `/metrics`, `/flows` (the mirror flows this node runs as its
//! cluster's gateway, with their progress) and the status page. It is read-only: it binds
//! where the operator says, typically loopback, serves no records and changes nothing. Every
//! change (flows, promotion, failback) goes over QUIC with mutual TLS and ACLs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use strait_mirror::{FlowManager, ManagerError};
use tracing::info;

use crate::broker::Broker;

mod metrics;

/// What the admin endpoints read.
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub quic_address: String,
    /// Set once storage is recovered, the QUIC listener accepts connections and the
    /// configured flows are started.
    pub ready: AtomicBool,
    pub flows: Arc<FlowManager>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub groups: Arc<crate::groups::GroupCoordinator>,
    /// The flows that copy from this node.
    pub outgoing: Arc<crate::server::outgoing::OutgoingFlows>,
    /// This node's controller member.
    pub controller: Option<Arc<crate::controller::Controller>>,
    /// Certificates whose expiry is exposed: (what, file).
    pub certificates: Vec<(String, std::path::PathBuf)>,
    /// Certificates expiring sooner than this count as expiring.
    pub cert_expiry_warning_seconds: i64,
}

/// The admin socket, bound before recovery so `/health` answers at once and `/ready` says
/// "not yet" while storage recovers.
pub struct EarlyAdmin {
    listener: std::net::TcpListener,
    stop: tokio::sync::oneshot::Sender<()>,
    stopped: tokio::task::JoinHandle<()>,
}

/// Binds the admin listener and answers `/health` (ok) and everything else "recovering"
/// (503) until [`start`] takes over the same socket.
pub async fn bind_early(address: SocketAddr) -> anyhow::Result<EarlyAdmin> {
    let listener = std::net::TcpListener::bind(address).map_err(|e| {
        anyhow::anyhow!(
            "cannot bind the admin listener on {address}: {e}; pick a free --admin-listen"
        )
    })?;
    listener.set_nonblocking(true)?;
    let early = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the node is recovering its storage\n",
            )
        });
    let (stop, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = tokio::spawn(async move {
        let _ = axum::serve(early, router)
            .with_graceful_shutdown(async {
                let _ = stopped_rx.await;
            })
            .await;
    });
    Ok(EarlyAdmin {
        listener,
        stop,
        stopped,
    })
}

/// Serves the full admin API on the early socket, in the background. Returns its address.
pub async fn start(early: EarlyAdmin, state: Arc<AdminState>) -> anyhow::Result<SocketAddr> {
    let _ = early.stop.send(());
    let _ = early.stopped.await;
    let listener = tokio::net::TcpListener::from_std(early.listener)?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route(
            "/",
            get(|| async { axum::response::Html(include_str!("status.html")) }),
        )
        .route("/metrics", get(metrics::render))
        .merge(flow_routes(state.flows.clone()))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    info!(admin = %bound, "admin listener up");
    Ok(bound)
}

/// The read-only `/flows` endpoints, for any process that runs flows (a node or `strait
/// mirror run`). Flows are changed over QUIC with mutual TLS and ACLs (`PutFlow`,
/// `RemoveFlow`), never over this listener.
pub fn flow_routes<S: Clone + Send + Sync + 'static>(flows: Arc<FlowManager>) -> Router<S> {
    Router::new()
        .route("/flows", get(list_flows))
        .route("/flows/{name}", get(get_flow))
        .with_state(flows)
}

type Reply = (StatusCode, Json<Value>);

fn refused(e: ManagerError) -> Reply {
    let code = match e {
        ManagerError::NotFound(_) => StatusCode::NOT_FOUND,
        ManagerError::Exists(_) => StatusCode::CONFLICT,
        ManagerError::Persist { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    (code, Json(json!({"error": e.to_string()})))
}

async fn list_flows(State(flows): State<Arc<FlowManager>>) -> Json<Value> {
    Json(json!({"flows": flows.list()}))
}

async fn get_flow(State(flows): State<Arc<FlowManager>>, Path(name): Path<String>) -> Reply {
    match flows.get(&name) {
        Some(f) => (StatusCode::OK, Json(json!(f))),
        None => refused(ManagerError::NotFound(name)),
    }
}

async fn ready(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    match readiness(&state) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Ready: storage recovered, the QUIC listener up, the configured flows started, and every
/// flow connected to its source.
pub(crate) fn readiness(state: &AdminState) -> Result<(), String> {
    if !state.ready.load(Ordering::Acquire) {
        return Err("the QUIC listener or the configured flows are not up yet".into());
    }
    let down: Vec<String> = state
        .flows
        .list()
        .into_iter()
        .filter(|f| !f.status.connected)
        .map(|f| f.spec.name)
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "flows not connected to their source: {}",
            down.join(", ")
        ))
    }
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let broker = &state.broker;
    let topics: Vec<Value> = broker
        .topics()
        .iter()
        .map(|t| {
            let partitions: Vec<Value> = t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let s = p.log.stats();
                    json!({"partition": i, "start_offset": s.log_start.0, "end_offset": s.log_end.0,
                        "high_watermark": s.high_watermark.0, "size_bytes": s.size_bytes, "segments": s.segments})
                })
                .collect();
            json!({"name": t.name.as_str(), "partitions": partitions, "mirror_of": t.mirror, "promoted": t.promoted})
        })
        .collect();
    let members: std::collections::BTreeMap<String, (String, usize)> = state
        .groups
        .list()
        .into_iter()
        .map(|g| (g.group, (g.state, g.members.len())))
        .collect();
    let mut lag: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (group, _, _, l) in group_lags(&state) {
        *lag.entry(group).or_default() += l;
    }
    let groups: Vec<Value> = members
        .iter()
        .map(|(g, (st, n))| json!({"group": g, "state": st, "members": n, "lag_records": lag.get(g).copied().unwrap_or(0)}))
        .collect();
    Json(json!({
        "cluster": broker.cluster,
        "node_id": broker.node_id,
        "address": state.quic_address,
        "ready": readiness(&state).is_ok(),
        "topics": topics,
        "flows": state.flows.list(),
        "outgoing_flows": state.outgoing.report(broker, crate::now_ms()),
        "groups": groups,
    }))
}

/// Every committed group offset with its lag: (group, topic, partition, lag in records).
pub(crate) fn group_lags(state: &AdminState) -> Vec<(String, String, u32, u64)> {
    let mut out = Vec::new();
    for g in state.groups.list() {
        for c in state.groups.fetch_offsets(&g.group, None) {
            let Ok(p) = state
                .broker
                .partition(&c.topic, strait_protocol::PartitionId(c.partition))
            else {
                continue;
            };
            let lag = p.log.high_watermark().0.saturating_sub(c.offset);
            out.push((g.group.clone(), c.topic, c.partition, lag));
        }
    }
    out
}
