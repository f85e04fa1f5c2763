//! A small HTTP/1.1 client for the admin listeners (`mirror status`, topology commands).

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Sends one request to `admin` (HOST:PORT, optionally with `http://`) and returns the JSON
/// body; a non-2xx answer becomes an error carrying the server's message.
pub async fn request(
    admin: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let address = admin.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot reach the admin listener at {address}; is the node (or mirror run) started with --admin-listen {address}?"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, address)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let raw = response.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).trim().to_string()));
    if !status.is_success() {
        let msg = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        anyhow::bail!("{address}{path}: {status}: {msg}");
    }
    Ok(value)
}

pub async fn get(admin: &str, path: &str) -> anyhow::Result<Value> {
    request(admin, hyper::Method::GET, path, None).await
}
