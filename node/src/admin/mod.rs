//! The admin HTTP listener (`--admin-listen`): `/health` (the process is alive), `/ready`
//! (storage recovered and the QUIC listener up), `/status` (JSON: node, cluster, topics,
//! partitions, flows) and `/flows` (the mirror flows this node runs as its cluster's gateway:
//! GET lists them with their progress, POST adds one, PUT `/flows/NAME` replaces one, DELETE
//! `/flows/NAME` removes one, all without a restart). It binds where the operator says,
//! typically loopback; it serves no records.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use strait_mirror::{FlowManager, FlowSpec, ManagerError};
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
        .route("/flows/{name}/promote", axum::routing::post(promote))
        .route("/topics/{name}/failback", axum::routing::post(failback))
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

/// The `/flows` endpoints, for any process that runs flows (a node or `strait mirror run`).
pub fn flow_routes<S: Clone + Send + Sync + 'static>(flows: Arc<FlowManager>) -> Router<S> {
    Router::new()
        .route("/flows", get(list_flows).post(add_flow))
        .route(
            "/flows/{name}",
            get(get_flow).put(replace_flow).delete(remove_flow),
        )
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

async fn add_flow(State(flows): State<Arc<FlowManager>>, Json(spec): Json<FlowSpec>) -> Reply {
    let name = spec.name.clone();
    match flows.add(spec) {
        Ok(true) => (
            StatusCode::CREATED,
            Json(json!({"flow": name, "changed": true})),
        ),
        Ok(false) => (
            StatusCode::OK,
            Json(json!({"flow": name, "changed": false})),
        ),
        Err(e) => refused(e),
    }
}

async fn replace_flow(
    State(flows): State<Arc<FlowManager>>,
    Path(name): Path<String>,
    Json(spec): Json<FlowSpec>,
) -> Reply {
    if spec.name != name {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": format!("the path names flow {name:?} but the body flow {:?}", spec.name)}),
            ),
        );
    }
    match flows.replace(spec).await {
        Ok(changed) => (
            StatusCode::OK,
            Json(json!({"flow": name, "changed": changed})),
        ),
        Err(e) => refused(e),
    }
}

async fn remove_flow(State(flows): State<Arc<FlowManager>>, Path(name): Path<String>) -> Reply {
    match flows.remove(&name).await {
        Ok(()) => (StatusCode::OK, Json(json!({"flow": name, "removed": true}))),
        Err(e) => refused(e),
    }
}

/// What `POST /flows/NAME/promote` takes: the source topics to promote (all when empty).
#[derive(Debug, Default, serde::Deserialize)]
struct PromoteRequest {
    #[serde(default)]
    topics: Vec<String>,
}

/// Failover: stops the flow for the named source topics (or all), makes their mirror topics
/// writable, and reports per partition the recovery point — the last source offset the target
/// holds, the last source end the flow saw, and the records in between, which are at risk if
/// the source is lost for good.
async fn promote(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Option<Json<PromoteRequest>>,
) -> Reply {
    let wanted = body.map(|Json(b)| b.topics).unwrap_or_default();
    // Accept the mirror topics' own names too (`east.orders` for `orders`).
    let mirrors: Vec<Arc<crate::broker::Topic>> = state
        .broker
        .topics()
        .into_iter()
        // The flow's heartbeat copy stays a mirror: it is the flow's, not the applications'.
        .filter(|t| {
            t.mirror
                .as_ref()
                .is_some_and(|m| m.flow == name && !m.source_topic.starts_with("__"))
        })
        .collect();
    let source_of = |t: &str| {
        mirrors
            .iter()
            .find(|m| m.name.as_str() == t)
            .and_then(|m| m.mirror.as_ref().map(|o| o.source_topic.clone()))
            .unwrap_or_else(|| t.to_string())
    };
    let sources: Vec<String> = wanted.iter().map(|t| source_of(t)).collect();
    let report = match state.flows.stop_for_promotion(&name, &sources).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let mut topics = Vec::new();
    let mut at_risk_total = 0u64;
    for m in mirrors.iter().filter(|m| {
        let source = m.mirror.as_ref().map(|o| o.source_topic.as_str());
        sources.is_empty() || source.is_some_and(|s| sources.iter().any(|w| w == s))
    }) {
        let promoted = match state.broker.promote_topic(m.name.as_str()) {
            Ok(t) => t,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": e.to_string()})),
                )
            }
        };
        let source_topic = m
            .mirror
            .as_ref()
            .map(|o| o.source_topic.clone())
            .unwrap_or_default();
        let ends = promoted
            .promoted
            .as_ref()
            .map(|p| p.end_offsets.clone())
            .unwrap_or_default();
        let partitions: Vec<Value> = ends
            .iter()
            .enumerate()
            .map(|(p, end)| {
                let seen = report
                    .status
                    .partitions
                    .iter()
                    .find(|s| s.source_topic == source_topic && s.partition == p as u32)
                    .map_or(*end, |s| s.source_end_offset.max(*end));
                at_risk_total += seen - end;
                json!({"partition": p, "last_mirrored_offset": end.checked_sub(1),
                    "next_offset": end, "source_end_offset": seen, "records_at_risk": seen - end})
            })
            .collect();
        topics.push(json!({"topic": m.name.as_str(), "source_topic": source_topic, "partitions": partitions}));
    }
    (
        StatusCode::OK,
        Json(
            json!({"flow": name, "source_cluster": report.status.source_cluster,
            "flow_stopped": sources.is_empty(), "topics": topics, "records_at_risk": at_risk_total}),
        ),
    )
}

/// What `POST /topics/NAME/failback` takes: where the new primary's copy took over, per
/// partition, and which topic of which cluster this topic now mirrors (through which flow).
#[derive(Debug, serde::Deserialize)]
struct FailbackRequest {
    common: Vec<u64>,
    mirror_of: crate::broker::MirrorOf,
}

/// Failback on the old primary: quarantines each partition's divergent tail into
/// `NAME.diverged` (same offsets), cuts it, and turns the topic into a mirror of the new
/// primary's copy, ready for the flow that copies it back.
async fn failback(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(req): Json<FailbackRequest>,
) -> Reply {
    let broker = state.broker.clone();
    let topic = name.clone();
    let done = tokio::task::spawn_blocking(move || {
        broker.quarantine_divergence(&topic, &req.common, req.mirror_of)
    })
    .await;
    match done {
        Ok(Ok(divergence)) => (
            StatusCode::OK,
            Json(
                json!({"topic": name, "quarantine": format!("{name}.diverged"), "diverged": divergence}),
            ),
        ),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        ),
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
        "groups": groups,
    }))
}

/// Every committed group offset with its lag: (group, topic, partition, lag in records).
pub(crate) fn group_lags(state: &AdminState) -> Vec<(String, String, u32, u64)> {
    let mut out = Vec::new();
    for g in state.groups.list() {
        for c in state.groups.fetch_offsets(&g.group, None) {
            let Ok(p) = state.broker.partition(&c.topic, c.partition) else {
                continue;
            };
            let lag = p.log.high_watermark().0.saturating_sub(c.offset);
            out.push((g.group.clone(), c.topic, c.partition, lag));
        }
    }
    out
}
