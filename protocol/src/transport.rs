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
    /// How the sender paces itself. `Bbr` keeps long, lossy links full where loss-driven
    /// controllers collapse (1 % random loss over 150 ms caps Cubic near 100 KB/s).
    pub congestion: Congestion,
}

/// The congestion controller of a connection's sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Loss-based, quinn's default; fine on clean links.
    #[default]
    Cubic,
    NewReno,
    /// Model-based (bandwidth and RTT); for WAN links with random loss.
    Bbr,
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "newreno" => Ok(Congestion::NewReno),
            "bbr" => Ok(Congestion::Bbr),
            other => Err(format!(
                "unknown congestion controller {other:?}; use cubic, newreno or bbr"
            )),
        }
    }
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            streams_max: 1024,
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 64 << 20,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
            congestion: Congestion::Cubic,
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
    match limits.congestion {
        Congestion::Cubic => {}
        Congestion::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()));
        }
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
    }
    t.initial_mtu(1400);
    Arc::new(t)
}
