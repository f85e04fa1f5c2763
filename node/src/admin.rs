//! The admin HTTP listener (`--admin-listen`): `/health` (the process is alive), `/ready`
//! (storage recovered and the QUIC listener up) and `/status` (JSON: node, cluster, topics,
//! partitions). It binds where the operator says, typically loopback; it serves no records.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::info;

use crate::broker::Broker;

/// What the admin endpoints read.
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub quic_address: String,
    /// Set once the QUIC listener accepts connections.
    pub ready: AtomicBool,
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
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    info!(admin = %bound, "admin listener up");
    Ok(bound)
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
    }))
}
