//! `strait node run`: flags override an optional TOML file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Deserialize;
use strait_node::admin::AdminState;
use strait_node::broker::Broker;
use strait_node::controller::{Controller, ControllerConfig};
use strait_node::server::kafka::{KafkaConfig, KafkaListener};
use strait_node::server::{ListenConfig, PeerLimits, Server};
use strait_node::storage::LogConfig;
use strait_protocol::frame::FrameLimits;
use strait_protocol::transport::TransportLimits;
use tracing::info;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Run a node until Ctrl-C or SIGTERM.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML file with the same settings (cluster, node_id, listen, advertise, data_dir, ca,
    /// cert, key, admin_listen, controllers, rack) and the sections [controller] (node
    /// session timeout, heartbeats), [topic_defaults] (settings every new topic
    /// starts from), [kafka] (the Kafka-wire listener), [limits] (frames, streams, windows, timeouts, connections, congestion),
    /// [security] (authorization, superusers, ACLs, CRL, certificate reloads), [quotas]
    /// (per-principal byte rates), [groups]
    /// (offset retention, rebalance timeout cap) and [[flows]] (mirror flows this node runs);
    /// docs/deploy.md has a commented example. Flags override the file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Name of the cluster this node belongs to (clients and flows see it).
    #[arg(long)]
    cluster: Option<String>,
    /// This node's id within its cluster.
    #[arg(long)]
    node_id: Option<u32>,
    /// UDP address to listen on, e.g. 127.0.0.1:7400.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address clients are told to use; defaults to --listen.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for topics, offsets and state; one node per directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CA certificate that signs the cluster's certificates (peers must chain to it).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This node's certificate (role node; `strait certs issue --role node`).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// TCP address of the admin HTTP listener (/health, /ready, /status), e.g. 127.0.0.1:9400.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// TCP address of the Kafka-wire listener, e.g. 127.0.0.1:9092 (TLS with client
    /// certificates unless [kafka] plaintext = true, which only a loopback address allows).
    #[arg(long)]
    kafka_listen: Option<SocketAddr>,
    /// The cluster's controller voters, `ID@HOST:PORT` at their QUIC addresses (1, 3 or 5),
    /// comma separated; nodes not named follow the metadata log as learners. Default: this
    /// node alone.
    #[arg(long, value_delimiter = ',')]
    controllers: Vec<String>,
    /// This node's rack or zone: a partition's replicas go to different ones where possible.
    #[arg(long)]
    rack: Option<String>,
}

/// The sections a node config file may hold beside its top-level settings (named in
/// `node run --help`; a test checks that the file accepts each and that the help names it).
#[cfg(test)]
pub const CONFIG_SECTIONS: [&str; 8] = [
    "[controller]",
    "[topic_defaults]",
    "[kafka]",
    "[limits]",
    "[security]",
    "[quotas]",
    "[groups]",
    "[[flows]]",
];

/// The node config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    cluster: Option<String>,
    node_id: Option<u32>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    /// The controller voters, `["1@host:port", …]` (see `--controllers`).
    #[serde(default)]
    controllers: Vec<String>,
    rack: Option<String>,
    #[serde(default)]
    controller: ControllerSection,
    /// Topic settings every new topic starts from, e.g. `flush = "always"`.
    #[serde(default)]
    topic_defaults: BTreeMap<String, toml::Value>,
    #[serde(default)]
    kafka: KafkaSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    security: Security,
    /// Per-principal produce and fetch byte rates (0: unlimited).
    #[serde(default)]
    quotas: strait_node::quota::QuotaConfig,
    /// Consumer groups: `"offsets.retention.minutes"` (default 7 days) and
    /// `rebalance_timeout_ms_max` (default 30 minutes).
    #[serde(default)]
    groups: strait_node::groups::GroupSettings,
    /// Mirror flows this node runs as its cluster's gateway, copying into its own cluster.
    #[serde(default)]
    flows: Vec<strait_mirror::FlowSpec>,
}

/// `[kafka]`: the Kafka-wire listener (off unless `listen` or `--kafka-listen` is given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct KafkaSection {
    listen: Option<SocketAddr>,
    /// `host:port` Kafka clients are told to connect to; defaults to `listen`.
    advertise: Option<String>,
    /// No TLS and no client certificates (principal `ANONYMOUS`): loopback addresses only.
    plaintext: bool,
    /// Kafka's `auto.create.topics.enable`: Metadata and Produce requests for an unknown
    /// topic create it (subject to the create ACL).
    #[serde(alias = "auto.create.topics.enable")]
    auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics asking for the default
    /// (Kafka's `num.partitions`).
    #[serde(alias = "num.partitions")]
    default_partitions: u32,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            listen: None,
            advertise: None,
            plaintext: false,
            auto_create_topics: false,
            default_partitions: 1,
        }
    }
}

/// `[controller]`: liveness of nodes and timing of the metadata quorum.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ControllerSection {
    /// A node not heard from for this long is fenced: its leaderships move (Kafka's
    /// `broker.session.timeout.ms`).
    session_timeout_ms: u64,
    /// How often a node tells the controller leader it is alive.
    heartbeat_interval_ms: u64,
    /// The quorum's Raft heartbeat. A follower honours a silent leader's lease for 16 of
    /// them, then waits 8–16 more before it stands: a new leader after 24–32 (2.4–3.2 s at
    /// the default 100 ms, so that metadata changes resume within 5 s of a leader's death).
    raft_heartbeat_ms: u64,
}

impl Default for ControllerSection {
    fn default() -> Self {
        ControllerSection {
            session_timeout_ms: 9_000,
            heartbeat_interval_ms: 1_000,
            raft_heartbeat_ms: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Limits {
    frame_bytes_max: u32,
    streams_per_connection_max: u32,
    stream_window_bytes: u32,
    connection_window_bytes: u32,
    /// Bytes sent and not yet acknowledged on one connection (what a long lossy link needs).
    send_window_bytes: u32,
    idle_timeout_ms: u32,
    request_read_timeout_ms: u64,
    handshake_timeout_ms: u64,
    retention_check_interval_ms: u64,
    connections_per_ip_max: u32,
    connections_per_principal_max: u32,
    pending_handshakes_max: u32,
    malformed_frames_per_connection_max: u32,
    /// Longest a peer may leave an answer unread (no bytes taken) before its stream is reset.
    answer_write_stall_ms: u64,
    /// Bytes of requests and fetch answers one connection may hold in the node at once.
    connection_memory_bytes_max: u64,
    /// Congestion controller for what this node sends: adaptive (default: cubic on paths under
    /// 10 ms of RTT, BBR on longer ones), or cubic, newreno or bbr for every connection.
    congestion: strait_protocol::transport::Congestion,
}

/// `[security]`: who may do what, and how certificates are watched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Security {
    /// Enforce `acls` (default deny for principals without a rule, except `superusers`).
    authorization: bool,
    superusers: Vec<String>,
    acls: Vec<strait_protocol::acl::AclRule>,
    /// A CRL (PEM) from `strait certs revoke`; revoked client certificates are refused, and a
    /// CRL past its next update refuses every client until it is refreshed.
    crl: Option<PathBuf>,
    /// How often the certificate, key, CA and CRL files are checked for changes (SIGHUP
    /// reloads at once).
    cert_reload_interval_ms: u64,
    /// Warn (log, `strait_certificate_expiring`) this many days before a certificate expires.
    cert_expiry_warning_days: u64,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            authorization: false,
            superusers: Vec::new(),
            acls: Vec::new(),
            crl: None,
            cert_reload_interval_ms: 5_000,
            cert_expiry_warning_days: 30,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let t = TransportLimits::default();
        Limits {
            frame_bytes_max: FrameLimits::default().frame_bytes_max,
            streams_per_connection_max: t.streams_max,
            stream_window_bytes: t.stream_window_bytes,
            connection_window_bytes: t.connection_window_bytes,
            send_window_bytes: t.send_window_bytes,
            idle_timeout_ms: t.idle_timeout_ms,
            request_read_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
            retention_check_interval_ms: 30_000,
            connections_per_ip_max: PeerLimits::default().connections_per_ip_max,
            connections_per_principal_max: PeerLimits::default().connections_per_principal_max,
            pending_handshakes_max: PeerLimits::default().pending_handshakes_max,
            malformed_frames_per_connection_max: PeerLimits::default()
                .malformed_frames_per_connection_max,
            answer_write_stall_ms: 30_000,
            connection_memory_bytes_max: PeerLimits::default().connection_memory_bytes_max,
            congestion: t.congestion,
        }
    }
}

/// Set by `topology up` on the nodes it starts: the pid of the `up` process. Such a node asks
/// the kernel for SIGTERM when its parent dies (even by kill -9), and so shuts down cleanly
/// instead of running on unowned.
pub const PARENT_PID_ENV: &str = "STRAIT_PARENT_PID";

/// Follows the parent named by [`PARENT_PID_ENV`], if any: SIGTERM when it dies, and an exit
/// now if it died before this node asked.
fn follow_parent() -> anyhow::Result<()> {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .context("cannot ask to be stopped with the `topology up` that started this node")?;
    let now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if now != parent {
        bail!("the `topology up` (pid {parent}) that started this node is gone; not starting");
    }
    Ok(())
}

pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Run(args) = command;
    follow_parent()?;
    let file: NodeFile = match &args.config {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&raw)
                .with_context(|| format!("{} is not a valid node config", path.display()))?
        }
        None => NodeFile::default(),
    };
    let need = |flag: &str| {
        anyhow::anyhow!(
            "missing --{flag} (or `{}` in --config)",
            flag.replace('-', "_")
        )
    };
    let cluster = args
        .cluster
        .or(file.cluster)
        .ok_or_else(|| need("cluster"))?;
    let node_id = args
        .node_id
        .or(file.node_id)
        .ok_or_else(|| need("node-id"))?;
    let listen = args.listen.or(file.listen).ok_or_else(|| need("listen"))?;
    let (voters, problems) =
        strait_mirror::topology::parse_voters(if args.controllers.is_empty() {
            &file.controllers
        } else {
            &args.controllers
        });
    if let Some(first) = problems.first() {
        bail!("{first}");
    }
    let voters: BTreeMap<u64, String> = voters
        .into_iter()
        .map(|(id, address)| (u64::from(id), address))
        .collect();
    let alone = voters.len() <= 1;
    let rack = args.rack.or(file.rack.clone());
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or_else(|| need("data-dir"))?;
    let ca = args.ca.or(file.ca).ok_or_else(|| need("ca"))?;
    let cert = args.cert.or(file.cert).ok_or_else(|| need("cert"))?;
    let key = args.key.or(file.key).ok_or_else(|| need("key"))?;
    let admin_listen = args.admin_listen.or(file.admin_listen);
    let advertise = args
        .advertise
        .or(file.advertise)
        .unwrap_or_else(|| listen.to_string());
    let mut defaults = LogConfig::default();
    for (k, v) in &file.topic_defaults {
        let value = match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        defaults.set(k, &value).context("in [topic_defaults]")?;
    }
    let limits = file.limits;
    if limits.frame_bytes_max < 1 << 16 {
        bail!("limits.frame_bytes_max must be at least 65536");
    }
    let early_admin = match admin_listen {
        Some(address) => Some(strait_node::admin::bind_early(address).await?),
        None => None,
    };
    // Test hook: hold recovery back so suites can watch `/ready` say "not yet".
    if let Some(ms) = std::env::var("STRAIT_TEST_RECOVERY_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let descriptors = strait_node::fd_budget::raise_limit();
    info!(limit = descriptors, "open-file limit");
    let broker = {
        let (cluster, data_dir) = (cluster.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || {
            Broker::open(
                &cluster,
                strait_protocol::NodeId(node_id),
                &data_dir,
                defaults,
            )
        })
        .await??
    };
    broker.start_background(Duration::from_millis(limits.retention_check_interval_ms));
    let (ca_path, cert_path) = (ca.clone(), cert.clone());
    let kafka_config = args
        .kafka_listen
        .or(file.kafka.listen)
        .map(|listen| KafkaConfig {
            listen,
            advertised: file
                .kafka
                .advertise
                .clone()
                .unwrap_or_else(|| listen.to_string()),
            plaintext: file.kafka.plaintext,
            auto_create_topics: file.kafka.auto_create_topics,
            auto_create_partitions: file.kafka.default_partitions,
            crl: file.security.crl.clone(),
            cert_reload_interval: Duration::from_millis(
                file.security.cert_reload_interval_ms.max(100),
            ),
            frame_bytes_max: limits.frame_bytes_max,
            request_read_timeout: Duration::from_millis(limits.request_read_timeout_ms),
            handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
            connections_per_ip_max: limits.connections_per_ip_max,
            ..KafkaConfig::new(listen, ca.clone(), cert.clone(), key.clone())
        });
    if let Some(k) = &kafka_config {
        k.validate().map_err(anyhow::Error::msg)?;
    }
    let listen_config = ListenConfig {
        listen,
        advertised: advertise,
        ca,
        cert,
        key,
        frame_limits: FrameLimits {
            frame_bytes_max: limits.frame_bytes_max,
        },
        transport: TransportLimits {
            streams_max: limits.streams_per_connection_max,
            stream_window_bytes: limits.stream_window_bytes,
            connection_window_bytes: limits.connection_window_bytes,
            send_window_bytes: limits.send_window_bytes,
            idle_timeout_ms: limits.idle_timeout_ms,
            congestion: limits.congestion,
            ..TransportLimits::default()
        },
        request_read_timeout: Duration::from_millis(limits.request_read_timeout_ms),
        answer_write_stall: Duration::from_millis(limits.answer_write_stall_ms.max(100)),
        handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
        authz: Arc::new(
            strait_node::authz::Authorizer::open(
                strait_node::authz::AuthzConfig {
                    enabled: file.security.authorization,
                    superusers: file.security.superusers.clone(),
                    acls: file.security.acls.clone(),
                },
                Some(&data_dir),
            )
            .context("in [security]")?,
        ),
        crl: file.security.crl.clone(),
        cert_reload_interval: Duration::from_millis(file.security.cert_reload_interval_ms.max(100)),
        cert_expiry_warning: Duration::from_secs(file.security.cert_expiry_warning_days * 86_400),
        peers: PeerLimits {
            connections_per_ip_max: limits.connections_per_ip_max,
            connections_per_principal_max: limits.connections_per_principal_max,
            pending_handshakes_max: limits.pending_handshakes_max,
            malformed_frames_per_connection_max: limits.malformed_frames_per_connection_max,
            connection_memory_bytes_max: limits
                .connection_memory_bytes_max
                .max(u64::from(limits.frame_bytes_max)),
        },
        quotas: Arc::new(strait_node::quota::Quotas::new(file.quotas.clone())),
        groups: file.groups,
    };
    let connect =
        super::mirror_cmd::connector(&listen_config.ca, &listen_config.cert, &listen_config.key)?;
    let advertised = listen_config.advertised.clone();
    let controller_config = ControllerConfig {
        cluster: cluster.clone(),
        node_id: u64::from(node_id),
        voters,
        advertised: advertised.clone(),
        kafka_address: kafka_config.as_ref().map(|k| k.advertised.clone()),
        rack,
        dir: data_dir.join("controller"),
        tls: strait_certs::client_config(
            &listen_config.ca,
            &listen_config.cert,
            &listen_config.key,
        )
        .context("cannot build the controller's TLS config; check ca, cert and key")?,
        transport: listen_config.transport,
        session_timeout: Duration::from_millis(file.controller.session_timeout_ms.max(100)),
        heartbeat_interval: Duration::from_millis(file.controller.heartbeat_interval_ms.max(10)),
        raft_heartbeat: Duration::from_millis(file.controller.raft_heartbeat_ms.max(10)),
    };
    if !alone && controller_config.session_timeout < controller_config.raft_heartbeat * 32 {
        tracing::warn!(
            session_timeout = ?controller_config.session_timeout,
            "the session timeout is shorter than a controller election (up to 32 raft heartbeats): every node stops taking writes while one runs; raise [controller] session_timeout_ms"
        );
    }
    let server = Server::start(broker.clone(), listen_config)?;
    let controller = Controller::start(controller_config)
        .await
        .context("cannot start the controller")?;
    server.set_controller(controller.clone());
    // A node takes writes once registered. Alone in its quorum it registers at once, so it
    // waits for that before it reports ready; a node of several voters serves reads meanwhile
    // (its peers may not be up yet) and takes writes once the quorum registers it.
    if alone && !controller.registered_within(Duration::from_secs(5)).await {
        tracing::warn!("not registered with the controller within 5 s; serving reads, refusing writes (retriable) until it is");
    }
    let kafka = match kafka_config {
        Some(k) => Some(KafkaListener::start(server.service(), k).await?),
        None => None,
    };
    let local: Arc<dyn strait_mirror::Endpoint> =
        server.local_endpoint(&format!("gateway:{cluster}/{node_id}"));
    let flows = strait_mirror::FlowManager::new(
        connect,
        Some(local),
        Some(strait_mirror::FlowStore {
            path: data_dir.join("flows.json"),
            write: strait_node::durable_file::write,
        }),
    );
    server.set_flows(flows.clone());
    let certificates = vec![
        ("node".to_string(), cert_path.clone()),
        ("ca".to_string(), ca_path.clone()),
    ];
    let admin = Arc::new(AdminState {
        controller: Some(controller.clone()),
        broker: broker.clone(),
        quic_address: advertised,
        ready: AtomicBool::new(false),
        flows: flows.clone(),
        metrics: server.metrics(),
        groups: server.groups(),
        outgoing: server.outgoing(),
        certificates,
        cert_expiry_warning_seconds: (file.security.cert_expiry_warning_days * 86_400) as i64,
    });
    if let Some(early) = early_admin {
        let bound = strait_node::admin::start(early, admin.clone()).await?;
        println!("admin listener on http://{bound}");
    }
    flows
        .start_configured(file.flows)
        .context("cannot start the flows in --config")?;
    admin.ready.store(true, Ordering::Release);
    println!(
        "strait node {node_id} of cluster {cluster} listening on {}",
        server.local_addr
    );
    if let Some(k) = &kafka {
        println!("Kafka listener on {}", k.local_addr);
    }
    let server = Arc::new(server);
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let server = server.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP: reloading TLS certificates");
                server.reload_certificates();
            }
        });
    }
    wait_for_shutdown().await;
    info!("shutting down");
    if let Some(k) = &kafka {
        k.shutdown();
    }
    flows.shutdown().await;
    controller.shutdown().await;
    server.shutdown().await;
    tokio::task::spawn_blocking(move || broker.close()).await?;
    Ok(())
}

pub async fn wait_for_shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every section in [`CONFIG_SECTIONS`] is one the file accepts (an unknown one is refused),
    /// so the list in `--help` cannot name a section that does not exist.
    #[test]
    fn the_documented_sections_are_the_accepted_ones() {
        for section in CONFIG_SECTIONS {
            let text = format!("{section}\n");
            let text = if section == "[[flows]]" {
                "[[flows]]\nname = \"f\"\nsource_bootstrap = [\"127.0.0.1:1\"]\ntopics = \".*\"\n"
                    .to_string()
            } else {
                text
            };
            if let Err(e) = toml::from_str::<NodeFile>(&text) {
                panic!("{section}: {e}");
            }
        }
        assert!(toml::from_str::<NodeFile>("[nonsense]\n").is_err());
    }
}
