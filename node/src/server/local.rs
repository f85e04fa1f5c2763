//! The node as the target of a flow running inside it (the node is its cluster's gateway):
//! requests are served in-process by the request service under the node's own trusted session,
//! and copied batches go straight into the logs, CRC-checked once, never re-encoded.

use std::sync::Arc;

use bytes::Bytes;
use strait_protocol::batch;
use strait_protocol::client::ClientError;
use strait_protocol::{Provenance, RecordBatch, Request, Response, WireError};

use super::handlers::mirror::{mirror_append, with_provenance};
use super::handlers::{corrupt, Answer};
use super::service::{RequestService, Session};

/// The node as seen by a flow it runs; see `Server::local_endpoint`.
pub struct LocalEndpoint {
    service: Arc<RequestService>,
    session: Session,
}

impl LocalEndpoint {
    pub(super) fn new(service: Arc<RequestService>, flow_principal: &str) -> LocalEndpoint {
        LocalEndpoint {
            service,
            session: Session::trusted(flow_principal),
        }
    }

    /// Appends a `MirrorAppend` payload: each chunk is one batch, checked here first.
    async fn append_payload(
        &self,
        topic: &str,
        partition: u32,
        payload: &[Bytes],
        provenance: Vec<Provenance>,
    ) -> Result<Answer, WireError> {
        let limits = self.service.broker().topic(topic)?.config.decode_limits();
        let batches = payload
            .iter()
            .map(|b| RecordBatch::parse(b.clone(), &limits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(topic, partition, e))?;
        let batches = with_provenance(topic, partition, batches, provenance)?;
        self.append_checked(topic, partition, batches).await
    }

    /// Appends batches the flow in this node checked on arrival (size, structure, CRC): only
    /// the target topic's own limits remain to check, then they are appended as-is.
    async fn append_checked(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<(RecordBatch, Provenance)>,
    ) -> Result<Answer, WireError> {
        let started = std::time::Instant::now();
        let broker = self.service.broker();
        let t = broker.topic(topic)?;
        let limits = t.config.decode_limits();
        let bytes: u64 = batches.iter().map(|(b, _)| b.size_bytes() as u64).sum();
        for (b, _) in &batches {
            batch::total_len(b.as_bytes(), &limits)
                .and_then(|_| b.check_decompressed_size(limits.batch_bytes_decompressed_max))
                .map_err(|e| corrupt(topic, partition, e))?;
        }
        let answer = mirror_append(broker, &t, partition, batches).await;
        let m = self.service.metrics();
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

impl strait_mirror::Endpoint for LocalEndpoint {
    fn call<'a>(
        &'a self,
        request: &'a Request,
        payload: &'a [Bytes],
    ) -> strait_mirror::BoxFuture<'a, Result<(Response, Bytes), ClientError>> {
        Box::pin(async move {
            let answer = match request {
                Request::MirrorAppend {
                    topic,
                    partition,
                    provenance,
                } => {
                    self.append_payload(topic, *partition, payload, provenance.clone())
                        .await
                }
                other => {
                    let joined = join(payload.to_vec());
                    self.service
                        .handle(&self.session, other.clone(), joined)
                        .await
                }
            };
            match answer {
                Ok((Response::Error(e), _)) | Err(e) => Err(ClientError::Wire(e)),
                Ok((response, chunks)) => Ok((response, join(chunks))),
            }
        })
    }

    fn cluster(&self) -> strait_mirror::BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move { Ok(self.service.broker().cluster.clone()) })
    }

    fn cluster_name(&self) -> Option<String> {
        Some(self.service.broker().cluster.clone())
    }

    fn append_copies<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        batches: Vec<(RecordBatch, Provenance)>,
    ) -> strait_mirror::BoxFuture<'a, Result<Response, ClientError>> {
        Box::pin(async move {
            match self.append_checked(topic, partition, batches).await {
                Ok((Response::Error(e), _)) | Err(e) => Err(ClientError::Wire(e)),
                Ok((response, _)) => Ok(response),
            }
        })
    }
}

fn join(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    }
}
