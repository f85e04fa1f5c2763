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

/// What the admin endpoints read.
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub quic_address: String,
    /// Set once the QUIC listener accepts connections.
    pub ready: AtomicBool,
    pub flows: Arc<FlowManager>,
}

/// Binds the admin listener and serves it in the background. Returns the bound address.
pub async fn start(address: SocketAddr, state: Arc<AdminState>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot bind the admin listener on {address}: {e}; pick a free --admin-listen"
        )
    })?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status))
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

async fn ready(State(state): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the QUIC listener is not up yet\n",
        )
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
            json!({"name": t.name.as_str(), "partitions": partitions})
        })
        .collect();
    Json(json!({
        "cluster": broker.cluster,
        "node_id": broker.node_id,
        "address": state.quic_address,
        "ready": state.ready.load(Ordering::Acquire),
        "topics": topics,
        "flows": state.flows.list(),
    }))
}
