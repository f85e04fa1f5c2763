//! QUIC transport settings shared by nodes and clients, chosen for bulk streaming on one
//! connection: windows large enough that one stream can fill a fast link, GSO and path MTU
//! discovery on (quinn's defaults, kept explicit here).

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Limits and windows of one QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Concurrent request streams a peer may open.
    pub streams_max: u32,
    /// Bytes one stream may have unread in flight.
    pub stream_window_bytes: u32,
    /// Bytes all streams of a connection may have unread in flight.
    pub connection_window_bytes: u32,
    pub idle_timeout_ms: u32,
    pub keep_alive_ms: u32,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            streams_max: 1024,
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 64 << 20,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
        }
    }
}

/// Builds quinn's transport config from the limits.
pub fn transport_config(limits: &TransportLimits) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.streams_max));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(limits.stream_window_bytes));
    t.receive_window(VarInt::from_u32(limits.connection_window_bytes));
    t.send_window(u64::from(limits.connection_window_bytes));
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        limits.idle_timeout_ms,
    ))));
    t.keep_alive_interval(Some(Duration::from_millis(u64::from(limits.keep_alive_ms))));
    t.enable_segmentation_offload(true);
    t.initial_mtu(1400);
    Arc::new(t)
}
