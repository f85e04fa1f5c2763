//! Heartbeats: a record written to the source's `__heartbeats` topic every interval and copied
//! like any other into the target's `__heartbeats.<source cluster>` mirror topic. The time from
//! its creation to its append on the target is the flow's end-to-end replication latency, and
//! it keeps being measured while user topics are idle.

use std::sync::Arc;
use std::time::Duration;

use strait_protocol::client::{Admin, Client, ClientError};
use strait_protocol::message::{Request, Response};
use strait_protocol::{Acks, BatchBuilder, Compression, ErrorCode};
use tokio::sync::watch;
use tracing::debug;

use crate::status::now_ms;

/// The source topic heartbeats are written to.
pub const HEARTBEAT_TOPIC: &str = "__heartbeats";

/// The mirror topic heartbeats of `source_cluster` land in on the target.
pub fn heartbeat_mirror(source_cluster: &str) -> String {
    format!("{HEARTBEAT_TOPIC}.{source_cluster}")
}

/// Writes one heartbeat every `interval` until stopped.
pub(crate) async fn beat(
    flow: String,
    source: Arc<Client>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let admin = Admin::new(source.clone());
    let mut created = false;
    while !*stop.borrow() {
        if !created {
            created = match admin
                .create_topic(
                    HEARTBEAT_TOPIC,
                    1,
                    vec![("retention.ms".into(), "86400000".into())],
                )
                .await
            {
                Ok(()) => true,
                Err(e) => e.code() == Some(ErrorCode::TOPIC_EXISTS),
            };
        }
        if created {
            if let Err(e) = write(&flow, &source).await {
                debug!(%flow, error = %e, "heartbeat not written; the flow's latency figure goes stale");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn write(flow: &str, source: &Client) -> Result<(), ClientError> {
    let now = now_ms();
    let mut b = BatchBuilder::new(Compression::None);
    b.push(
        now,
        Some(flow.as_bytes()),
        Some(now.to_string().as_bytes()),
        &[],
    );
    let req = Request::Produce {
        topic: HEARTBEAT_TOPIC.into(),
        partition: 0,
        acks: Acks::Leader,
    };
    match source.call(&req, &[b.finish().into_bytes()]).await?.0 {
        Response::Produced { .. } => Ok(()),
        other => Err(ClientError::Invalid(format!(
            "unexpected heartbeat answer {other:?}"
        ))),
    }
}
