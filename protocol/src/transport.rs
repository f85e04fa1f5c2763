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
    /// Bytes this end may have sent and not yet seen acknowledged, over all streams. On a long
    /// lossy link every hole keeps a round trip and a half of data unacknowledged, so this
    /// must cover more than the bandwidth-delay product: 64 MiB held a 1 %-loss 150 ms link
    /// at ~0.6 of its clear rate in `strait bench wan`, 128 MiB at ~0.7. Memory is only used
    /// while a path needs it.
    pub send_window_bytes: u32,
    pub idle_timeout_ms: u32,
    pub keep_alive_ms: u32,
    /// How the sender paces itself. The default, `Adaptive`, is cubic on short paths and BBR
    /// on long ones (see `congestion`): BBR keeps long, lossy links full where loss-driven
    /// controllers collapse, and cubic is cheaper on loopback and LANs.
    pub congestion: Congestion,
    /// Kernel send and receive buffer asked for on the UDP socket. The default 208 KiB drops
    /// datagrams when a long link's window arrives in bursts, and every such drop is read
    /// as congestion. The kernel caps it at `net.core.rmem_max`/`wmem_max`.
    pub udp_buffer_bytes: u32,
}

/// The congestion controller of a connection's sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Cubic while the connection's minimum RTT is under 10 ms, BBR from there on.
    #[default]
    Adaptive,
    /// Loss-based, quinn's default; fine on clean links.
    Cubic,
    NewReno,
    /// Model-based (bandwidth and RTT); for WAN links with random loss.
    Bbr,
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adaptive" => Ok(Congestion::Adaptive),
            "cubic" => Ok(Congestion::Cubic),
            "newreno" => Ok(Congestion::NewReno),
            "bbr" => Ok(Congestion::Bbr),
            other => Err(format!(
                "unknown congestion controller {other:?}; use adaptive, cubic, newreno or bbr"
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
            send_window_bytes: 128 << 20,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
            congestion: Congestion::Adaptive,
            udp_buffer_bytes: 8 << 20,
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
    t.send_window(u64::from(limits.send_window_bytes));
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        limits.idle_timeout_ms,
    ))));
    t.keep_alive_interval(Some(Duration::from_millis(u64::from(limits.keep_alive_ms))));
    t.enable_segmentation_offload(true);
    match limits.congestion {
        Congestion::Adaptive => {
            t.congestion_controller_factory(Arc::new(crate::congestion::AdaptiveConfig::default()));
        }
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

/// Binds a UDP socket for a QUIC endpoint with the buffers `limits` ask for. When the kernel
/// grants less (its `rmem_max`/`wmem_max` cap), it says so once per process, with the fix.
pub fn udp_socket(
    address: std::net::SocketAddr,
    limits: &TransportLimits,
) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let wanted = limits.udp_buffer_bytes as usize;
    // Best effort: a refusal leaves the kernel's default, which still works.
    let _ = socket.set_recv_buffer_size(wanted);
    let _ = socket.set_send_buffer_size(wanted);
    // Linux reports double what was granted (it counts its bookkeeping). Past the kernel's
    // cap, a privileged process may force the size (as quic-go does).
    let mut granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < wanted {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, wanted);
        let _ = rustix::net::sockopt::set_socket_send_buffer_size_force(&socket, wanted);
        granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    }
    if granted < wanted {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::info!(
                wanted,
                granted,
                "the kernel granted a smaller UDP receive buffer than asked; long fast links may \
                 drop datagrams (raise it with `sysctl -w net.core.rmem_max={wanted} net.core.wmem_max={wanted}`)"
            );
        });
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// A QUIC endpoint on a socket from [`udp_socket`]; serving when `server` is given.
pub fn endpoint(
    address: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
    limits: &TransportLimits,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(address, limits)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime to drive the QUIC endpoint"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}
