//! Where a flow writes: a remote cluster over QUIC (a [`Client`]), or the very node the flow
//! runs in, which appends copied batches straight into its own logs with no network hop (the
//! gateway mode). Sources are always remote.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use strait_protocol::client::{Client, ClientError};
use strait_protocol::message::{Request, Response, TopicInfo};
use strait_protocol::{Provenance, RecordBatch};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A cluster a flow can send requests to.
pub trait Endpoint: Send + Sync {
    /// One request with its payload; the answer with its payload.
    fn call<'a>(
        &'a self,
        request: &'a Request,
        payload: &'a [Bytes],
    ) -> BoxFuture<'a, Result<(Response, Bytes), ClientError>>;

    /// The name of the cluster behind this endpoint.
    fn cluster(&self) -> BoxFuture<'_, Result<String, ClientError>>;

    /// The cluster's name when known without asking (the node a flow runs in knows its own).
    fn cluster_name(&self) -> Option<String> {
        None
    }

    /// Appends batches the flow copied (and checked on arrival) to a partition of this
    /// cluster: a `MirrorAppend` request, which the target node checks again on arrival. The
    /// node a flow runs in overrides this to take the checked batches as they are.
    fn append_copies<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        batches: Vec<(RecordBatch, Provenance)>,
    ) -> BoxFuture<'a, Result<Response, ClientError>> {
        Box::pin(async move {
            let (batches, provenance): (Vec<_>, Vec<_>) = batches.into_iter().unzip();
            let request = Request::MirrorAppend {
                topic: topic.into(),
                partition,
                provenance,
            };
            let payload: Vec<Bytes> = batches.into_iter().map(RecordBatch::into_bytes).collect();
            Ok(self.call(&request, &payload).await?.0)
        })
    }
}

impl Endpoint for Client {
    fn call<'a>(
        &'a self,
        request: &'a Request,
        payload: &'a [Bytes],
    ) -> BoxFuture<'a, Result<(Response, Bytes), ClientError>> {
        Box::pin(Client::call(self, request, payload))
    }

    fn cluster(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move { Ok(self.connection().await?.hello.cluster.clone()) })
    }
}

/// Sends a request whose answer carries no payload, turning an unexpected answer into an error.
pub(crate) async fn ask(
    endpoint: &dyn Endpoint,
    request: &Request,
) -> Result<Response, ClientError> {
    let (response, _) = endpoint.call(request, &[]).await?;
    if let Response::Error(e) = response {
        return Err(ClientError::Wire(e));
    }
    Ok(response)
}

/// The topic's metadata on the endpoint's cluster, if it exists.
pub(crate) async fn topic_info(
    endpoint: &dyn Endpoint,
    topic: &str,
) -> Result<Option<TopicInfo>, ClientError> {
    let req = Request::Metadata {
        topics: Some(vec![topic.to_string()]),
    };
    match ask(endpoint, &req).await? {
        Response::Metadata(m) => Ok(m.topics.into_iter().find(|t| t.name == topic)),
        other => Err(ClientError::Invalid(format!(
            "unexpected metadata answer {other:?}"
        ))),
    }
}
