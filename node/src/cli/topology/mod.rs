//! `strait topology validate|plan|apply|up|down|status`: a federation described once in a
//! TOML file (`docs/topologies.md`) and made so.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use strait_mirror::topology::{self, LoadedTopology, TopologyError};

pub mod failover;
pub(crate) mod live;
pub(crate) mod plan;
mod up;

pub use live::Federation;

#[derive(Subcommand, Debug)]
pub enum TopologyCommand {
    /// Check a topology file: syntax (with line and column) and meaning (clusters, addresses,
    /// cycles, name collisions, certificates).
    Validate {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Compare the file with the live clusters and print what `apply` would change.
    Plan {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Make the live clusters match the file: create and grow topics, set their settings,
    /// start, reconfigure and stop flows in running nodes. A second apply changes nothing.
    Apply {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        /// Apply even where it stops a failback in progress (a flow `mirror reverse` started).
        #[arg(long)]
        undo_reverse: bool,
    },
    /// Run the whole federation on this machine: certificates, every node, the topology
    /// applied; Ctrl-C stops it.
    Up {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Stop one node of a federation started by `up` (SIGTERM; with --kill, SIGKILL, as a
    /// disaster drill); `up` keeps it stopped until `restart-node`, and `down` still stops
    /// everything.
    StopNode {
        #[command(flatten)]
        target: NodeTarget,
        /// Kill it (SIGKILL) instead of a clean stop.
        #[arg(long)]
        kill: bool,
    },
    /// Start a node of a federation started by `up` again (stopping it first if it runs), as
    /// `up` runs it, so `down` stops it too: the old primary coming back in a failback.
    RestartNode {
        #[command(flatten)]
        target: NodeTarget,
    },
    /// Stop a federation started by `up` (from another terminal).
    Down {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Clusters, nodes, flows and their lag.
    Status {
        /// The topology file (TOML; docs/topologies.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
}

/// One node of a federation that `up` runs.
#[derive(clap::Args, Debug)]
pub struct NodeTarget {
    /// The topology file (TOML; docs/topologies.md).
    file: PathBuf,
    #[command(flatten)]
    state: StateArgs,
    /// Cluster of the node.
    #[arg(long)]
    cluster: String,
    /// Id of the node in its cluster.
    #[arg(long)]
    node: u32,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StateArgs {
    /// Where `up` keeps certificates, node configs, data and logs. Default: .strait/<name>.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub async fn run(command: TopologyCommand) -> anyhow::Result<()> {
    match command {
        TopologyCommand::Validate { file, json } => validate(&file, json),
        TopologyCommand::Plan { file, state, json } => {
            let mut fed = federation(&file, &state)?;
            let changes = changes(&mut fed).await?;
            for w in plan::undoes_reverse(&fed.topology, &changes) {
                eprintln!("warning: {w}");
            }
            report(&fed, &changes, json, false);
            Ok(())
        }
        TopologyCommand::Apply {
            file,
            state,
            json,
            undo_reverse,
        } => {
            let mut fed = federation(&file, &state)?;
            let changes = changes(&mut fed).await?;
            let undoes = plan::undoes_reverse(&fed.topology, &changes);
            if !undoes.is_empty() && !undo_reverse {
                anyhow::bail!("nothing applied: {}", undoes.join("; "));
            }
            for change in &changes {
                fed.apply(change).await?;
            }
            report(&fed, &changes, json, true);
            Ok(())
        }
        TopologyCommand::Up { file, state } => up::up(federation(&file, &state)?).await,
        TopologyCommand::StopNode { target, kill } => {
            let action = if kill {
                up::NodeAction::Kill
            } else {
                up::NodeAction::Stop
            };
            control_node(&target, action).await?;
            println!(
                "node {} of {} {}; `strait topology restart-node {} --cluster {} --node {}` starts it again",
                target.node,
                target.cluster,
                if kill { "killed" } else { "stopped" },
                target.file.display(),
                target.cluster,
                target.node
            );
            Ok(())
        }
        TopologyCommand::RestartNode { target } => {
            let pid = control_node(&target, up::NodeAction::Restart).await?;
            println!(
                "node {} of {} is running again (pid {})",
                target.node,
                target.cluster,
                pid.unwrap_or_default()
            );
            Ok(())
        }
        TopologyCommand::Down { file, state } => {
            let fed = federation(&file, &state)?;
            up::down(&fed.state_dir).await
        }
        TopologyCommand::Status { file, state, json } => {
            let fed = federation(&file, &state)?;
            print_status(&fed.status().await, json);
            Ok(())
        }
    }
}

/// Loads and checks the file, with the topic settings checked as a node would.
fn load(file: &Path) -> Result<LoadedTopology, TopologyError> {
    let loaded = topology::load(file)?;
    let t = &loaded.topology;
    let problems: Vec<topology::Problem> = t
        .topics
        .iter()
        .filter_map(|topic| plan::canonical_configs(&topic.name, &topic.configs(&t.defaults)).err())
        .map(|e| topology::Problem {
            element: "topics".into(),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(TopologyError::Invalid {
            path: file.to_path_buf(),
            problems,
        })
    }
}

pub fn federation(file: &Path, state: &StateArgs) -> anyhow::Result<Federation> {
    let loaded = load(file)?;
    let state_dir = state
        .state_dir
        .clone()
        .unwrap_or_else(|| live::default_state_dir(&loaded.topology));
    let certs_dir = loaded
        .certs_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("certs"));
    Ok(Federation::new(
        loaded.topology,
        file.to_path_buf(),
        certs_dir,
        state_dir,
    ))
}

async fn control_node(t: &NodeTarget, action: up::NodeAction) -> anyhow::Result<Option<u32>> {
    let fed = federation(&t.file, &t.state)?;
    up::control_node(&fed.state_dir, &t.cluster, t.node, action).await
}

async fn changes(fed: &mut Federation) -> anyhow::Result<Vec<plan::Change>> {
    let live = fed.read().await?;
    plan::plan(&fed.topology, &live).with_context(|| format!("cannot plan {}", fed.path.display()))
}

fn validate(file: &Path, json: bool) -> anyhow::Result<()> {
    match load(file) {
        Ok(loaded) => {
            let t = &loaded.topology;
            if json {
                println!(
                    "{}",
                    json!({"valid": true, "problems": [], "notes": loaded.notes})
                );
            } else {
                let nodes: usize = t.clusters.iter().map(|c| c.nodes.len()).sum();
                println!(
                    "{}: valid — {} clusters, {nodes} nodes, {} topics, {} flows",
                    file.display(),
                    t.clusters.len(),
                    t.topics.len(),
                    t.flows.len()
                );
                for n in &loaded.notes {
                    println!("  note: {n}");
                }
            }
            Ok(())
        }
        Err(e) if json => {
            let problems: Vec<Value> = match &e {
                TopologyError::Invalid { problems, .. } => problems
                    .iter()
                    .map(|p| json!({"element": p.element, "message": p.message}))
                    .collect(),
                other => vec![json!({"element": "file", "message": other.to_string()})],
            };
            println!(
                "{}",
                json!({"valid": false, "problems": problems, "notes": []})
            );
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn report(fed: &Federation, changes: &[plan::Change], json: bool, applied: bool) {
    if json {
        println!(
            "{}",
            json!({"topology": fed.topology.name, "applied": applied, "changes": changes})
        );
        return;
    }
    if changes.is_empty() {
        println!(
            "nothing to change: the clusters match {}",
            fed.path.display()
        );
        return;
    }
    for c in changes {
        println!("{c}");
    }
    let verb = if applied { "applied" } else { "to apply" };
    println!("{} change(s) {verb}", changes.len());
}

fn print_status(status: &Value, json: bool) {
    if json {
        println!("{status}");
        return;
    }
    println!("topology {}", status["topology"].as_str().unwrap_or("?"));
    for c in status["clusters"].as_array().into_iter().flatten() {
        for n in c["nodes"].as_array().into_iter().flatten() {
            let topics = n["topics"].as_array().map_or(0, Vec::len);
            println!(
                "cluster {:<10} node {:<3} {:<22} {}",
                c["name"].as_str().unwrap_or("?"),
                n["id"],
                n["address"].as_str().unwrap_or("?"),
                if n["up"] == true {
                    format!("up, {topics} topics")
                } else {
                    "DOWN".to_string()
                }
            );
            for f in n["flows"].as_array().into_iter().flatten() {
                let s = &f["status"];
                println!(
                    "  flow {:<24} {} → {}  {}  lag {} records{}",
                    s["name"].as_str().unwrap_or("?"),
                    s["source_cluster"].as_str().unwrap_or("?"),
                    s["target_cluster"].as_str().unwrap_or("?"),
                    if s["connected"] == true {
                        "connected"
                    } else {
                        "DISCONNECTED"
                    },
                    s["lag_records"],
                    s["heartbeat"]["latency_ms"]
                        .as_i64()
                        .map(|ms| format!(", latency {ms} ms"))
                        .unwrap_or_default()
                );
            }
        }
    }
}
