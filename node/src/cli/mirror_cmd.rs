//! `strait mirror run|status|translate`: flows standalone (from flags or a config file), their
//! progress from any process that runs them, and exact offset translation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;
use strait_mirror::{Connector, FlowManager, FlowSpec};
use strait_protocol::client::{Client, ClientOptions};
use strait_protocol::message::{Request, Response};

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Run mirror flows until Ctrl-C or SIGTERM: one from flags, or those of --config.
    Run(RunArgs),
    /// Per flow and partition: state, source end, mirrored offset, lag, last error, gaps.
    Status {
        /// Admin address of the node or `mirror run` that runs the flows, e.g. 127.0.0.1:9400.
        #[arg(long, env = "STRAIT_ADMIN")]
        admin: String,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Add (or, with --replace, reconfigure) a flow in a running node, from a TOML file
    /// holding one flow's fields; no restart needed. Sent over QUIC with mutual TLS (`alter`
    /// on the cluster).
    Add {
        /// Admin address of the node that runs the flow (its QUIC address is read there).
        #[arg(long, env = "STRAIT_ADMIN")]
        admin: String,
        /// TOML with the fields of one [[flows]] entry (name, source_bootstrap, topics, …).
        #[arg(long)]
        spec: PathBuf,
        /// Reconfigure the flow if one of that name runs (otherwise adding it again is refused).
        #[arg(long)]
        replace: bool,
        /// The operator's identity: changes travel over QUIC with mutual TLS and are checked
        /// against the node's ACLs, never over the admin HTTP listener.
        #[command(flatten)]
        access: super::Identity,
    },
    /// Stop and forget a flow in a running node; what it copied stays. Sent over QUIC with
    /// mutual TLS (`alter` on the cluster).
    Remove {
        /// Admin address of the node that runs the flow (its QUIC address is read there).
        #[arg(long, env = "STRAIT_ADMIN")]
        admin: String,
        /// Name of the flow.
        #[arg(long)]
        flow: String,
        /// The operator's identity: changes travel over QUIC with mutual TLS and are checked
        /// against the node's ACLs, never over the admin HTTP listener.
        #[command(flatten)]
        access: super::Identity,
    },
    /// Failover: stop a flow (for some topics, or all), make its mirror topics writable, and
    /// report per partition the recovery point and the records at risk.
    Promote {
        /// Name of the flow.
        #[arg(long)]
        flow: String,
        /// Source topic (or its mirror topic) to promote; repeatable. Default: every topic.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Admin address of the node that runs the flow.
        #[arg(long, env = "STRAIT_ADMIN", required_unless_present = "topology")]
        admin: Option<String>,
        /// Find the flow's node in this topology file instead of --admin (and, without
        /// --ca/--cert/--key, use the topology's operator certificate).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        /// The operator's identity: changes travel over QUIC with mutual TLS and are checked
        /// against the node's ACLs, never over the admin HTTP listener.
        #[command(flatten)]
        access: super::Identity,
    },
    /// Failback after a promote: the old primary's topics become mirrors of the promoted
    /// copies. Its divergent tail (accepted, never mirrored) is quarantined in
    /// `<topic>.diverged` at the same offsets and reported; then only what it lacks is copied.
    Reverse {
        /// Name of the flow.
        #[arg(long)]
        flow: String,
        /// The topology that declares the flow (for both clusters' nodes).
        #[arg(long)]
        topology: PathBuf,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Where a source record is on the target cluster (ask the target's bootstrap).
    Translate {
        /// Cluster the record was produced on (the flow's source).
        #[arg(long)]
        source_cluster: String,
        /// Topic on the source cluster.
        #[arg(long)]
        topic: String,
        /// Partition on the source cluster.
        #[arg(long)]
        partition: u32,
        /// Offset on the source cluster.
        #[arg(long)]
        offset: u64,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: super::ConnArgs,
    },
}

/// A client for the node whose admin listener is at `admin`: its QUIC address is read from the
/// (read-only) `/status` there.
async fn node_client(admin: &str, tls: rustls::ClientConfig) -> anyhow::Result<Arc<Client>> {
    let status = super::http::get(admin, "/status").await?;
    let address = status["address"]
        .as_str()
        .with_context(|| format!("{admin}/status names no QUIC address"))?
        .to_string();
    Ok(Client::new(ClientOptions::new(vec![address], tls)))
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML file: target_bootstrap, ca, cert, key, admin_listen and [[flows]] tables.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The flow's name (mirror topics record it).
    #[arg(long)]
    name: Option<String>,
    /// Addresses of the source cluster's nodes, HOST:PORT[,HOST:PORT…].
    #[arg(long, value_delimiter = ',')]
    source_bootstrap: Vec<String>,
    /// Addresses of the target cluster's nodes, HOST:PORT[,HOST:PORT…].
    #[arg(long, value_delimiter = ',')]
    target_bootstrap: Vec<String>,
    /// Source topics to copy: a regular expression matched against the whole name.
    #[arg(long)]
    topics: Option<String>,
    /// Consumer groups whose committed offsets are carried to the target (checkpoints).
    #[arg(long)]
    groups: Option<String>,
    /// Consumer groups whose offsets are not carried, matched against the whole name.
    #[arg(long)]
    groups_exclude: Option<String>,
    /// Source topics to leave out, matched against the whole name.
    #[arg(long)]
    exclude: Option<String>,
    /// How target topics are named: prefix (`east.orders`, read-only, same offsets) or
    /// identity (same name, local writes too, provenance stops loops).
    #[arg(long, default_value = "prefix")]
    naming: String,
    /// Seconds between looks for new matching topics and partitions.
    #[arg(long, default_value_t = 5)]
    refresh_s: u64,
    /// Cap on the copy rate in MB/s (all partitions together); no cap by default.
    #[arg(long)]
    max_mb_s: Option<u64>,
    /// Delete a target topic when its source topic is deleted (default: report only).
    #[arg(long)]
    propagate_deletes: bool,
    /// TCP address for /health and /flows (what `mirror status` reads).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// CA certificate that signed both clusters' node certificates.
    #[arg(long, env = "STRAIT_CA")]
    ca: Option<PathBuf>,
    /// The flow's certificate (role mirror).
    #[arg(long, env = "STRAIT_CERT")]
    cert: Option<PathBuf>,
    /// The flow's private key.
    #[arg(long, env = "STRAIT_KEY")]
    key: Option<PathBuf>,
}

/// The `mirror run --config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorFile {
    /// Target cluster of flows that do not name their own.
    #[serde(default)]
    target_bootstrap: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    #[serde(default)]
    flows: Vec<FlowSpec>,
}

/// Clients for flows, all with the same certificate.
pub fn connector(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Connector> {
    // Flows run for months: their identity is re-read when the files change.
    let tls = strait_certs::reloading_client_config(ca, cert, key)
        .context("cannot load the certificate mirror flows connect with")?;
    Ok(Arc::new(move |bootstrap: Vec<String>, client_id: &str| {
        let mut options = ClientOptions::new(bootstrap, tls.clone());
        options.client_id = client_id.to_string();
        Client::new(options)
    }))
}

pub async fn run(command: MirrorCommand) -> anyhow::Result<()> {
    match command {
        MirrorCommand::Run(args) => run_flows(args).await,
        MirrorCommand::Status { admin, flow, json } => status(&admin, flow.as_deref(), json).await,
        MirrorCommand::Add {
            admin,
            spec,
            replace,
            access,
        } => {
            let raw = std::fs::read_to_string(&spec)
                .with_context(|| format!("cannot read {}", spec.display()))?;
            let flow: FlowSpec = toml::from_str(&raw)
                .with_context(|| format!("{} is not a valid flow", spec.display()))?;
            flow.to_config()?;
            let client = node_client(&admin, access.tls()?).await?;
            let changed = super::topology::live::put_flow(&client, &flow, replace).await?;
            if changed {
                println!("flow {} running at {admin}", flow.name);
            } else {
                println!(
                    "flow {} already runs at {admin} with these settings; nothing changed",
                    flow.name
                );
            }
            Ok(())
        }
        MirrorCommand::Remove {
            admin,
            flow,
            access,
        } => {
            let client = node_client(&admin, access.tls()?).await?;
            super::topology::live::remove_flow(&client, &flow).await?;
            println!("flow {flow} removed from {admin}; what it copied stays on the target");
            Ok(())
        }
        MirrorCommand::Promote {
            flow,
            topics,
            admin,
            topology,
            json,
            access,
        } => {
            let client = match (admin, topology) {
                (Some(a), _) => node_client(&a, access.tls()?).await?,
                (None, Some(file)) => gateway_client(&file, &flow, &access).await?,
                (None, None) => anyhow::bail!("name the flow's node with --admin or --topology"),
            };
            let request = Request::PromoteFlow {
                flow: flow.clone(),
                topics,
            };
            let answer = match client.call(&request, &[]).await?.0 {
                Response::Promoted(p) => serde_json::to_value(p)?,
                other => anyhow::bail!("unexpected answer to a promotion: {other:?}"),
            };
            print_promotion(&answer, json);
            Ok(())
        }
        MirrorCommand::Reverse {
            flow,
            topology,
            json,
        } => reverse(&flow, &topology, json).await,
        MirrorCommand::Translate {
            source_cluster,
            topic,
            partition,
            offset,
            json,
            conn,
        } => {
            let client = super::client_cmd::client(&conn)?;
            let req = Request::TranslateOffset {
                source_cluster,
                topic,
                partition,
                offset,
                position: false,
            };
            match client.call(&req, &[]).await?.0 {
                Response::Translated {
                    topic,
                    partition,
                    offset,
                } if json => {
                    println!(
                        "{}",
                        serde_json::json!({"topic": topic, "partition": partition, "offset": offset})
                    );
                }
                Response::Translated {
                    topic,
                    partition,
                    offset,
                } => println!("{topic} partition {partition} offset {offset}"),
                other => anyhow::bail!("unexpected answer {other:?}"),
            }
            Ok(())
        }
    }
}

async fn run_flows(args: RunArgs) -> anyhow::Result<()> {
    let file: MirrorFile = match &args.config {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&raw)
                .with_context(|| format!("{} is not a valid mirror config", path.display()))?
        }
        None => MirrorFile::default(),
    };
    let mut flows = file.flows;
    if let Some(name) = &args.name {
        let topics = args
            .topics
            .clone()
            .context("--name needs --topics (a regular expression of source topics)")?;
        anyhow::ensure!(
            !args.source_bootstrap.is_empty(),
            "--name needs --source-bootstrap (the source cluster's nodes)"
        );
        let mut spec = FlowSpec::new(name, args.source_bootstrap.clone(), &topics);
        spec.target_bootstrap = args.target_bootstrap.clone();
        spec.exclude = args.exclude.clone();
        spec.groups = args.groups.clone();
        spec.groups_exclude = args.groups_exclude.clone();
        spec.naming = args.naming.clone();
        spec.refresh_ms = args.refresh_s.max(1) * 1000;
        spec.max_mb_s = args.max_mb_s;
        spec.propagate_deletes = args.propagate_deletes;
        flows.push(spec);
    }
    anyhow::ensure!(
        !flows.is_empty(),
        "no flow to run: pass --name, --source-bootstrap, --target-bootstrap and --topics, or --config FILE with [[flows]]"
    );
    let need = |flag: &str| anyhow::anyhow!("missing --{flag} (or `{flag}` in --config)");
    let ca = args.ca.or(file.ca).ok_or_else(|| need("ca"))?;
    let cert = args.cert.or(file.cert).ok_or_else(|| need("cert"))?;
    let key = args.key.or(file.key).ok_or_else(|| need("key"))?;
    let target = if args.target_bootstrap.is_empty() {
        file.target_bootstrap
    } else {
        args.target_bootstrap
    };
    let connect = connector(&ca, &cert, &key)?;
    let default_target = (!target.is_empty())
        .then(|| -> Arc<dyn strait_mirror::Endpoint> { connect(target, "strait-mirror-target") });
    let manager = FlowManager::new(connect, default_target, None);
    if let Some(address) = args.admin_listen.or(file.admin_listen) {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot bind the admin listener on {address}"))?;
        let bound = listener.local_addr()?;
        let router = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok\n" }))
            .merge(strait_node::admin::flow_routes(manager.clone()));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "admin listener stopped");
            }
        });
        println!("admin listener on http://{bound}");
    }
    let names: Vec<String> = flows.iter().map(|f| f.name.clone()).collect();
    manager.start_configured(flows)?;
    println!("mirror flows running: {}", names.join(", "));
    super::node_cmd::wait_for_shutdown().await;
    manager.shutdown().await;
    Ok(())
}

async fn status(admin: &str, flow: Option<&str>, json: bool) -> anyhow::Result<()> {
    let body = super::http::get(admin, "/flows").await?;
    let mut flows: Vec<Value> = body["flows"].as_array().cloned().unwrap_or_default();
    if let Some(name) = flow {
        flows.retain(|f| f["spec"]["name"] == name);
        anyhow::ensure!(!flows.is_empty(), "no flow named {name:?} runs at {admin}");
    }
    if json {
        let out: Vec<Value> = flows.iter().map(|f| f["status"].clone()).collect();
        println!("{}", serde_json::json!({ "flows": out }));
        return Ok(());
    }
    for f in &flows {
        let s = &f["status"];
        println!(
            "flow {}  {} -> {}  naming {}  {}  lag {} records{}",
            s["name"].as_str().unwrap_or("?"),
            s["source_cluster"].as_str().unwrap_or("?"),
            s["target_cluster"].as_str().unwrap_or("?"),
            s["naming"].as_str().unwrap_or("?"),
            if s["connected"].as_bool() == Some(true) {
                "connected".to_string()
            } else {
                format!(
                    "DISCONNECTED for {:.0} s (the source's end is unknown until it heals)",
                    s["source_silent_seconds"].as_f64().unwrap_or(0.0)
                )
            },
            s["lag_records"],
            match s["heartbeat"]["latency_ms"].as_i64() {
                Some(ms) => format!("  heartbeat latency {ms} ms"),
                None => String::new(),
            }
        );
        if let Some(e) = s["last_error"].as_str() {
            println!("  last error: {e}");
        }
        for t in s["deleted_source_topics"].as_array().into_iter().flatten() {
            println!(
                "  source topic {} was deleted; its copy is kept",
                t.as_str().unwrap_or("?")
            );
        }
        println!(
            "  {:<28} {:>4} {:<12} {:>12} {:>12} {:>10} {:>9}  gaps / error",
            "source topic", "part", "state", "source end", "mirrored", "lag", "lag s"
        );
        for p in s["partitions"].as_array().into_iter().flatten() {
            let gaps: Vec<String> = p["gaps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| format!("GAP {}..{}", g["from"], g["to"]))
                .collect();
            println!(
                "  {:<28} {:>4} {:<12} {:>12} {:>12} {:>10} {:>9.1}  {}{}",
                p["source_topic"].as_str().unwrap_or("?"),
                p["partition"],
                p["state"].as_str().unwrap_or("?"),
                p["source_end_offset"],
                p["mirrored_offset"],
                p["lag_records"],
                p["lag_seconds"].as_f64().unwrap_or(0.0),
                gaps.join(" "),
                p["last_error"].as_str().unwrap_or("")
            );
        }
    }
    if flows.is_empty() {
        println!("no flows run at {admin}");
    }
    Ok(())
}

/// A topology file and its flow named `flow`.
fn topology_flow(
    file: &Path,
    flow: &str,
) -> anyhow::Result<(
    strait_mirror::topology::Topology,
    strait_mirror::topology::Flow,
)> {
    let loaded = strait_mirror::topology::load(file)?;
    let f = loaded
        .topology
        .flows
        .iter()
        .find(|f| f.name() == flow)
        .cloned()
        .with_context(|| format!("{} declares no flow {flow:?}", file.display()))?;
    Ok((loaded.topology, f))
}

/// A client for the node that runs `flow` in a topology file, with the given identity or the
/// topology's operator certificate.
async fn gateway_client(
    file: &Path,
    flow: &str,
    access: &super::Identity,
) -> anyhow::Result<Arc<Client>> {
    let (t, f) = topology_flow(file, flow)?;
    let gateway = f
        .gateway(&t)
        .with_context(|| format!("flow {flow} has no gateway node"))?;
    if access.given() {
        return Ok(Client::new(ClientOptions::new(
            vec![gateway.address.clone()],
            access.tls()?,
        )));
    }
    let mut fed = super::topology::federation(file, &Default::default())?;
    fed.node_client(&f.target, gateway.id)
}

fn print_promotion(answer: &Value, json: bool) {
    if json {
        println!("{answer}");
        return;
    }
    let flow = answer["flow"].as_str().unwrap_or("?");
    let names: Vec<&str> = answer["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    let stopped = if answer["flow_stopped"] == true {
        "stopped"
    } else {
        "stopped for these topics"
    };
    println!(
        "flow {flow} {stopped}; promoted (writable now): {}",
        names.join(", ")
    );
    let mut rows = Vec::new();
    for t in answer["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            rows.push(vec![
                t["topic"].as_str().unwrap_or("?").to_string(),
                p["partition"].to_string(),
                p["last_mirrored_offset"].to_string().replace("null", "-"),
                p["source_end_offset"].to_string(),
                p["records_at_risk"].to_string(),
            ]);
        }
    }
    print!(
        "{}",
        super::output::table(
            &[
                "TOPIC",
                "PARTITION",
                "LAST_MIRRORED",
                "SOURCE_END",
                "AT_RISK"
            ],
            rows
        )
    );
    println!(
        "records at risk: {} (accepted by {} but not copied here before the flow stopped)",
        answer["records_at_risk"],
        answer["source_cluster"].as_str().unwrap_or("the source")
    );
}

/// `mirror reverse`: reads the promotions on the flow's target, reconciles each promoted topic
/// on the old source, and starts the flow that copies the promoted copies back.
async fn reverse(flow: &str, file: &Path, json: bool) -> anyhow::Result<()> {
    let (topology, f) = topology_flow(file, flow)?;
    let t = &topology;
    let new_primary = f.gateway(t).context("the flow has no gateway node")?;
    let old = t
        .cluster(&f.source)
        .and_then(|c| c.nodes.first())
        .context("the flow's source cluster has no node")?;
    let status = super::http::get(&new_primary.admin, "/status").await?;
    let promoted: Vec<&Value> = status["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|topic| topic["promoted"]["from"]["flow"] == flow)
        .collect();
    anyhow::ensure!(
        !promoted.is_empty(),
        "no topic of flow {flow} was promoted on {}; promote first (`strait mirror promote --flow {flow}`)",
        f.target
    );
    let reverse_name = format!("{flow}{}", super::topology::plan::REVERSE_SUFFIX);
    let mut fed = super::topology::federation(file, &Default::default())?;
    let old_node = fed.node_client(&f.source, old.id)?;
    let mut reconciled = Vec::new();
    let mut names = Vec::new();
    for topic in promoted {
        let copy = topic["name"].as_str().unwrap_or_default().to_string();
        let original = topic["promoted"]["from"]["source_topic"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let common: Vec<u64> = topic["promoted"]["end_offsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        let request = Request::FailbackTopic {
            name: original.clone(),
            common,
            mirror_of: strait_protocol::message::MirrorOrigin {
                flow: reverse_name.clone(),
                source_cluster: f.target.clone(),
                source_topic: copy.clone(),
            },
        };
        let answer = match old_node
            .call(&request, &[])
            .await
            .with_context(|| format!("cannot reconcile {original} on {}", f.source))?
            .0
        {
            Response::FailedBack {
                topic,
                quarantine,
                diverged,
            } => {
                serde_json::json!({"topic": topic, "quarantine": quarantine, "diverged": diverged})
            }
            other => anyhow::bail!("unexpected answer to a failback: {other:?}"),
        };
        names.push(regex::escape(&copy));
        reconciled.push(answer);
    }
    let source_bootstrap = t
        .cluster(&f.target)
        .map(|c| c.nodes.iter().map(|n| n.address.clone()).collect())
        .unwrap_or_default();
    let mut spec = FlowSpec::new(&reverse_name, source_bootstrap, &names.join("|"));
    spec.naming = "restore".into();
    spec.groups = f.groups.clone();
    spec.groups_exclude = f.groups_exclude.clone();
    super::topology::live::put_flow(&old_node, &spec, false).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"flow": reverse_name, "from": f.target, "to": f.source, "topics": reconciled})
        );
        return Ok(());
    }
    for r in &reconciled {
        for d in r["diverged"].as_array().into_iter().flatten() {
            println!(
                "{} partition {}: offsets {}..{} ({} records) were never mirrored; moved to {} at the same offsets",
                r["topic"].as_str().unwrap_or("?"),
                d["partition"],
                d["from"],
                d["to"],
                d["records"],
                r["quarantine"].as_str().unwrap_or("?")
            );
        }
    }
    println!(
        "flow {reverse_name} started on {}: {} now mirrors {} from {}",
        f.source,
        reconciled
            .iter()
            .filter_map(|r| r["topic"].as_str())
            .collect::<Vec<_>>()
            .join(", "),
        names.join(", ").replace('\\', ""),
        f.target
    );
    Ok(())
}
