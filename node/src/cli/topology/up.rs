//! `strait topology up|down`: a whole federation on this machine, for trying Strait and for
//! tests. `up` makes the certificates it lacks (once; later runs reuse them), starts every node
//! as a child process with its own config, data dir and log file under the state dir, applies
//! the topology, prints the endpoints and a ready-to-paste client command, and stops every node
//! cleanly on Ctrl-C, SIGTERM or `strait topology down`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use strait_certs::Role;
use strait_mirror::naming::target_topic;
use strait_mirror::topology::{node_identity, Topology};
use tokio::process::{Child, Command};
use tracing::warn;

use super::live::Federation;
use crate::cli::http;

/// What `down` needs to stop a running `up`: written once every node is ready.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpState {
    pub pid: u32,
    pub topology: String,
    pub nodes: Vec<UpNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpNode {
    pub cluster: String,
    pub id: u32,
    pub pid: u32,
    pub address: String,
    pub admin: String,
    /// The node's Kafka listener, if the topology gives it one.
    #[serde(default)]
    pub kafka: Option<String>,
    pub log: PathBuf,
}

const UP_FILE: &str = "up.json";
/// Where `topology stop-node` and `restart-node` leave requests for the running `up`.
const CONTROL_DIR: &str = "control";
/// How long a node may take to recover its storage and open its listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to close cleanly before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes every certificate the topology needs that is not there yet.
pub fn ensure_certificates(topology: &Topology, certs_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut made = Vec::new();
    if !certs_dir.join("ca.crt").is_file() {
        check_generate(topology, certs_dir, "ca.crt")?;
        strait_certs::init_ca(certs_dir)?;
        made.push("ca".to_string());
    }
    let mut wanted: Vec<(String, Role, Vec<String>)> = Vec::new();
    for c in &topology.clusters {
        for n in &c.nodes {
            let host = n
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string());
            let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
            hosts.extend(host.filter(|h| !hosts.contains(h)));
            wanted.push((node_identity(&c.name, n.id), Role::Node, hosts));
        }
    }
    wanted.push(("admin".into(), Role::Client, Vec::new()));
    for p in &topology.security.principals {
        let role = Role::parse(&p.role).with_context(|| {
            format!(
                "security.principals {}: unknown role {:?}; use node, client or mirror",
                p.name, p.role
            )
        })?;
        wanted.push((p.name.clone(), role, Vec::new()));
    }
    for (name, role, hosts) in wanted {
        if certs_dir.join(format!("{name}.crt")).is_file() {
            continue;
        }
        check_generate(topology, certs_dir, &format!("{name}.crt"))?;
        strait_certs::issue(certs_dir, &name, role, &hosts)?;
        made.push(name);
    }
    Ok(made)
}

fn check_generate(topology: &Topology, dir: &Path, file: &str) -> anyhow::Result<()> {
    if topology.security.generate {
        return Ok(());
    }
    bail!("{} is missing and security.generate is false; issue it with `strait certs` or allow generation", dir.join(file).display())
}

/// Runs the federation until Ctrl-C, SIGTERM or `topology down`.
pub async fn up(mut fed: Federation) -> anyhow::Result<()> {
    let state = fed.state_dir.clone();
    if let Some(running) = read_state(&state).filter(|s| alive(s.pid)) {
        bail!("this federation is already up (strait topology up, pid {}); stop it with `strait topology down {}`", running.pid, fed.path.display());
    }
    std::fs::create_dir_all(state.join("logs"))
        .with_context(|| format!("cannot create the state dir {}", state.display()))?;
    let made = ensure_certificates(&fed.topology, &fed.certs_dir)?;
    if !made.is_empty() {
        println!(
            "made certificates in {}: {}",
            fed.certs_dir.display(),
            made.join(", ")
        );
    }
    let mut children = Vec::new();
    let result = start_and_apply(&mut fed, &mut children).await;
    if let Err(e) = result {
        stop_all(&mut children).await;
        return Err(e);
    }
    wait_for_stop(&fed, &mut children).await;
    println!("stopping {} node(s)", children.len());
    stop_all(&mut children).await;
    let _ = std::fs::remove_file(state.join(UP_FILE));
    println!("federation {} stopped", fed.topology.name);
    Ok(())
}

struct Running {
    node: UpNode,
    child: Child,
}

async fn start_and_apply(fed: &mut Federation, children: &mut Vec<Running>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the strait binary")?;
    let state = std::path::absolute(&fed.state_dir)?;
    let certs = std::path::absolute(&fed.certs_dir)?;
    for cluster in &fed.topology.clusters {
        for node in &cluster.nodes {
            let name = node_identity(&cluster.name, node.id);
            let data_dir = state.join(node.data_dir.clone().unwrap_or_else(|| name.clone()));
            let config = node_config(
                &fed.topology,
                cluster.name.as_str(),
                node,
                &data_dir,
                &certs,
            )?;
            let (config_path, log) = node_files(&state, &name);
            std::fs::write(&config_path, config)?;
            let child = spawn_node(&exe, &state, &name, false)?;
            let pid = child.id().unwrap_or_default();
            children.push(Running {
                node: UpNode {
                    cluster: cluster.name.clone(),
                    id: node.id,
                    pid,
                    address: node.address.clone(),
                    admin: node.admin.clone(),
                    kafka: node.kafka.clone(),
                    log,
                },
                child,
            });
        }
    }
    for r in children.iter_mut() {
        wait_ready(r).await?;
    }
    let live = fed.read().await?;
    let changes = super::plan::plan(&fed.topology, &live)?;
    for change in &changes {
        fed.apply(change).await?;
        println!("{change}");
    }
    let up = UpState {
        pid: std::process::id(),
        topology: fed.path.display().to_string(),
        nodes: children.iter().map(|r| r.node.clone()).collect(),
    };
    write_file(&state.join(UP_FILE), &serde_json::to_vec_pretty(&up)?)?;
    let profiles = write_profiles(fed, &up);
    print_endpoints(fed, &up, &profiles);
    Ok(())
}

/// Starts node `name` from its config in the state folder, logging to `logs/<name>.log`
/// (appending when `append`, so a restart keeps the earlier log).
/// Where node `name`'s config and log live in the state folder.
fn node_files(state: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        state.join(format!("{name}.toml")),
        state.join("logs").join(format!("{name}.log")),
    )
}

fn spawn_node(exe: &Path, state: &Path, name: &str, append: bool) -> anyhow::Result<Child> {
    let (config_path, log) = node_files(state, name);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(exe)
        .args(["node", "run", "--config"])
        .arg(&config_path)
        // The node stops when `up` dies, however it dies (see `node run`).
        .env(
            super::super::node_cmd::PARENT_PID_ENV,
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start node {name}"))
}

fn write_file(path: &Path, raw: &[u8]) -> anyhow::Result<()> {
    strait_node::durable_file::write(path, raw)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The node's config file: its place in the topology and the topology's topic defaults.
fn node_config(
    topology: &Topology,
    cluster: &str,
    node: &strait_mirror::topology::Node,
    data_dir: &Path,
    certs: &Path,
) -> anyhow::Result<String> {
    let name = node_identity(cluster, node.id);
    let mut doc = toml::Table::new();
    doc.insert("cluster".into(), cluster.into());
    doc.insert("node_id".into(), i64::from(node.id).into());
    doc.insert("listen".into(), node.address.clone().into());
    doc.insert("admin_listen".into(), node.admin.clone().into());
    if let Some(kafka) = &node.kafka {
        let mut section = toml::Table::new();
        section.insert("listen".into(), kafka.clone().into());
        doc.insert("kafka".into(), section.into());
    }
    doc.insert("data_dir".into(), data_dir.display().to_string().into());
    let voters = topology
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.controllers.clone())
        .unwrap_or_default();
    if !voters.is_empty() {
        doc.insert("controllers".into(), voters.into());
    }
    if let Some(rack) = &node.rack {
        doc.insert("rack".into(), rack.clone().into());
    }
    doc.insert(
        "ca".into(),
        certs.join("ca.crt").display().to_string().into(),
    );
    doc.insert(
        "cert".into(),
        certs
            .join(format!("{name}.crt"))
            .display()
            .to_string()
            .into(),
    );
    doc.insert(
        "key".into(),
        certs
            .join(format!("{name}.key"))
            .display()
            .to_string()
            .into(),
    );
    let defaults: toml::Table = topology
        .defaults
        .topic_configs
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::from(v.clone())))
        .collect();
    doc.insert("topic_defaults".into(), defaults.into());
    let sec = &topology.security;
    let mut superusers: Vec<String> = topology
        .clusters
        .iter()
        .flat_map(|c| c.nodes.iter().map(|n| node_identity(&c.name, n.id)))
        .chain(["admin".to_string()])
        .chain(sec.superusers.iter().cloned())
        .collect();
    superusers.dedup();
    let security = toml::Table::from_iter([
        ("authorization".to_string(), sec.authorization.into()),
        ("superusers".to_string(), superusers.into()),
        (
            "acls".to_string(),
            toml::Value::try_from(&sec.acls).context("the topology's ACLs")?,
        ),
    ]);
    doc.insert("security".into(), security.into());
    Ok(toml::to_string(&doc)?)
}

async fn wait_ready(r: &mut Running) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = r.child.try_wait()? {
            bail!(
                "node {} of {} exited ({status}) before it was ready; its log {} ends with:\n{}",
                r.node.id,
                r.node.cluster,
                r.node.log.display(),
                tail(&r.node.log)
            );
        }
        if http::get(&r.node.admin, "/ready").await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "node {} of {} is not ready after {READY_TIMEOUT:?}; see {}",
                r.node.id,
                r.node.cluster,
                r.node.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits for Ctrl-C or SIGTERM; a node that dies on its own is reported, the others keep
/// running.
async fn wait_for_stop(fed: &Federation, children: &mut [Running]) {
    let stop = crate::cli::node_cmd::wait_for_shutdown();
    tokio::pin!(stop);
    let mut reported = vec![false; children.len()];
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (i, request) in take_requests(&fed.state_dir, children) {
            let outcome = control(fed, &mut children[i], request).await;
            reported[i] = request == NodeAction::Stop || request == NodeAction::Kill;
            answer_request(fed, children, i, request, outcome);
        }
        for (r, said) in children.iter_mut().zip(reported.iter_mut()) {
            if let (false, Ok(Some(status))) = (*said, r.child.try_wait()) {
                eprintln!(
                    "node {} of {} exited ({status}); see {}",
                    r.node.id,
                    r.node.cluster,
                    r.node.log.display()
                );
                *said = true;
            }
        }
    }
}

/// What an operator asks of one node of a running `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// SIGTERM: a clean stop.
    Stop,
    /// SIGKILL: a crash, as a disaster drill.
    Kill,
    /// Start it again (stopping it first if it runs).
    Restart,
}

impl NodeAction {
    fn as_str(self) -> &'static str {
        match self {
            NodeAction::Stop => "stop",
            NodeAction::Kill => "kill",
            NodeAction::Restart => "restart",
        }
    }

    fn parse(s: &str) -> Option<NodeAction> {
        [NodeAction::Stop, NodeAction::Kill, NodeAction::Restart]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// Requests left in the control folder, as (index of the node, action); each is removed as
/// it is taken.
fn take_requests(state: &Path, children: &[Running]) -> Vec<(usize, NodeAction)> {
    let dir = state.join(CONTROL_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((node, action)) = name.rsplit_once('.') else {
            continue;
        };
        let Some(action) = NodeAction::parse(action) else {
            continue;
        };
        let _ = std::fs::remove_file(e.path());
        if let Some(i) = children
            .iter()
            .position(|r| node_identity(&r.node.cluster, r.node.id) == node)
        {
            out.push((i, action));
        }
    }
    out
}

/// Carries out one request on a node of this `up`; answers its new pid when it was started.
async fn control(
    fed: &Federation,
    r: &mut Running,
    action: NodeAction,
) -> anyhow::Result<Option<u32>> {
    let name = node_identity(&r.node.cluster, r.node.id);
    let running = matches!(r.child.try_wait(), Ok(None));
    if running {
        let sig = if action == NodeAction::Kill {
            rustix::process::Signal::KILL
        } else {
            rustix::process::Signal::TERM
        };
        signal(r.node.pid, sig);
        if tokio::time::timeout(STOP_TIMEOUT, r.child.wait())
            .await
            .is_err()
        {
            let _ = r.child.kill().await;
        }
        println!(
            "node {} of {} {}",
            r.node.id,
            r.node.cluster,
            if action == NodeAction::Kill {
                "killed"
            } else {
                "stopped"
            }
        );
    }
    if action != NodeAction::Restart {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find the strait binary")?;
    let state = std::path::absolute(&fed.state_dir)?;
    r.child = spawn_node(&exe, &state, &name, true)?;
    r.node.pid = r.child.id().unwrap_or_default();
    wait_ready(r).await?;
    println!(
        "node {} of {} started again (pid {})",
        r.node.id, r.node.cluster, r.node.pid
    );
    Ok(Some(r.node.pid))
}

/// Records the outcome where the asking command waits for it, and the new pids in `up.json`.
fn answer_request(
    fed: &Federation,
    children: &[Running],
    i: usize,
    action: NodeAction,
    outcome: anyhow::Result<Option<u32>>,
) {
    let r = &children[i];
    let name = node_identity(&r.node.cluster, r.node.id);
    let answer = match &outcome {
        Ok(pid) => serde_json::json!({ "action": action.as_str(), "pid": pid }),
        Err(e) => serde_json::json!({ "action": action.as_str(), "error": format!("{e:#}") }),
    };
    let done = fed.state_dir.join(CONTROL_DIR).join(format!("{name}.done"));
    if let Err(e) = write_file(&done, answer.to_string().as_bytes()) {
        eprintln!("{e:#}");
    }
    if let Some(mut state) = read_state(&fed.state_dir) {
        state.nodes = children.iter().map(|r| r.node.clone()).collect();
        if let Ok(raw) = serde_json::to_vec_pretty(&state) {
            let _ = write_file(&fed.state_dir.join(UP_FILE), &raw);
        }
    }
}

/// Asks the running `up` of this state folder to stop, kill or restart one node, and waits
/// for it to be done (`topology stop-node`, `topology restart-node`).
pub async fn control_node(
    state_dir: &Path,
    cluster: &str,
    node: u32,
    action: NodeAction,
) -> anyhow::Result<Option<u32>> {
    let Some(up) = read_state(state_dir).filter(|s| alive(s.pid)) else {
        bail!(
            "nothing is up in {}: `strait topology up FILE` first (stop-node and restart-node act on the nodes it runs)",
            state_dir.display()
        );
    };
    if !up
        .nodes
        .iter()
        .any(|n| n.cluster == cluster && n.id == node)
    {
        let known: Vec<String> = up
            .nodes
            .iter()
            .map(|n| format!("{}/{}", n.cluster, n.id))
            .collect();
        bail!(
            "no node {node} in cluster {cluster:?} in this federation (nodes: {})",
            known.join(", ")
        );
    }
    let dir = state_dir.join(CONTROL_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = node_identity(cluster, node);
    let done = dir.join(format!("{name}.done"));
    let _ = std::fs::remove_file(&done);
    write_file(&dir.join(format!("{name}.{}", action.as_str())), b"")?;
    let deadline = Instant::now() + READY_TIMEOUT + STOP_TIMEOUT + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(raw) = std::fs::read(&done) {
            let _ = std::fs::remove_file(&done);
            let answer: serde_json::Value = serde_json::from_slice(&raw)?;
            if let Some(e) = answer["error"].as_str() {
                bail!("node {node} of {cluster}: {e}");
            }
            return Ok(answer["pid"].as_u64().map(|p| p as u32));
        }
        if !alive(up.pid) {
            bail!(
                "`topology up` (pid {}) stopped before acting on the request",
                up.pid
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "`topology up` (pid {}) did not act on the request in time; see its output",
        up.pid
    )
}

/// SIGTERM to every node, then SIGKILL to any still running after the stop timeout.
async fn stop_all(children: &mut [Running]) {
    for r in children.iter() {
        signal(r.node.pid, rustix::process::Signal::TERM);
    }
    for r in children.iter_mut() {
        if tokio::time::timeout(STOP_TIMEOUT, r.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "node {} of {} did not stop within {STOP_TIMEOUT:?}; killing it",
                r.node.id, r.node.cluster
            );
            let _ = r.child.kill().await;
        }
    }
}

/// Stops a running `up` from another terminal.
pub async fn down(state_dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(state_dir) else {
        println!(
            "nothing is up here (no {} in {})",
            UP_FILE,
            state_dir.display()
        );
        return Ok(());
    };
    if alive(state.pid) {
        signal(state.pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while alive(state.pid) && start.elapsed() < STOP_TIMEOUT + Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // An `up` killed without its cleanup leaves nodes behind: stop those too.
    for node in state.nodes.iter().filter(|n| alive(n.pid)) {
        signal(node.pid, rustix::process::Signal::TERM);
    }
    let start = Instant::now();
    while state.nodes.iter().any(|n| alive(n.pid)) && start.elapsed() < STOP_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in state.nodes.iter().filter(|n| alive(n.pid)) {
        signal(node.pid, rustix::process::Signal::KILL);
    }
    let _ = std::fs::remove_file(state_dir.join(UP_FILE));
    println!("stopped {} ({} node(s))", state.topology, state.nodes.len());
    Ok(())
}

pub fn read_state(state_dir: &Path) -> Option<UpState> {
    let raw = std::fs::read(state_dir.join(UP_FILE)).ok()?;
    serde_json::from_slice(&raw).ok()
}

fn pid(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

fn alive(p: u32) -> bool {
    pid(p).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
        && !std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn signal(p: u32, sig: rustix::process::Signal) {
    if let Some(p) = pid(p) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// The client principal of the federation (its certificate is in the certificate folder).
fn client_identity(t: &Topology) -> &str {
    t.security
        .principals
        .iter()
        .find(|p| p.role == "client")
        .map_or("admin", |p| p.name.as_str())
}

/// Saves one profile per cluster, `<topology>-<cluster>`, so the operator's commands need no
/// addresses or certificate flags. Answers the profile of each cluster; a failure to write is
/// reported and the commands printed with flags instead.
fn write_profiles(fed: &Federation, up: &UpState) -> BTreeMap<String, String> {
    let t = &fed.topology;
    let certs = std::path::absolute(&fed.certs_dir).unwrap_or_else(|_| fed.certs_dir.clone());
    let identity = client_identity(t);
    let mut written = BTreeMap::new();
    for c in &t.clusters {
        let bootstrap: Vec<String> = up
            .nodes
            .iter()
            .filter(|n| n.cluster == c.name)
            .map(|n| n.address.clone())
            .collect();
        let name = format!("{}-{}", t.name, c.name);
        let profile = crate::cli::profile::Profile {
            bootstrap,
            ca: Some(certs.join("ca.crt")),
            cert: Some(certs.join(format!("{identity}.crt"))),
            key: Some(certs.join(format!("{identity}.key"))),
        };
        match crate::cli::profile::save(&name, profile, false) {
            Ok(_) => {
                written.insert(c.name.clone(), name);
            }
            Err(e) => {
                warn!(profile = %name, error = %format!("{e:#}"), "could not save the cluster's profile")
            }
        }
    }
    written
}

fn print_endpoints(fed: &Federation, up: &UpState, profiles: &BTreeMap<String, String>) {
    let t = &fed.topology;
    println!(
        "\nfederation {} is up (state and logs in {})\n",
        t.name,
        fed.state_dir.display()
    );
    println!(
        "{:<12} {:<12} {:<5} {:<22} ADMIN",
        "CLUSTER", "REGION", "NODE", "ADDRESS"
    );
    for n in &up.nodes {
        let region = t
            .cluster(&n.cluster)
            .and_then(|c| c.region.clone())
            .unwrap_or_default();
        println!(
            "{:<12} {:<12} {:<5} {:<22} http://{}",
            n.cluster, region, n.id, n.address, n.admin
        );
    }
    for n in up.nodes.iter().filter(|n| n.kafka.is_some()) {
        println!(
            "Kafka bootstrap of {} (node {}): {} (TLS with a client certificate of the cluster's CA)",
            n.cluster,
            n.id,
            n.kafka.as_deref().unwrap_or_default()
        );
    }
    for f in &t.flows {
        println!(
            "flow {}: {} → {} ({} naming, topics {:?})",
            f.name(),
            f.source,
            f.target,
            f.spec(t).naming,
            f.topics
        );
    }
    let certs = std::path::absolute(&fed.certs_dir).unwrap_or_else(|_| fed.certs_dir.clone());
    let identity = client_identity(t);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "strait".into());
    if !profiles.is_empty() {
        println!(
            "\nprofiles: {} (`{exe} profile list`)",
            profiles.values().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!("\nin another terminal:\n");
    // Each cluster is named by its profile, or by address and certificate flags when its
    // profile could not be written.
    let target = |c: &str| match profiles.get(c) {
        Some(p) => format!("--profile {p}"),
        None => format!(
            "--bootstrap {} --ca {1}/ca.crt --cert {1}/{2}.crt --key {1}/{2}.key",
            t.cluster(c)
                .map(|c| c.nodes[0].address.clone())
                .unwrap_or_default(),
            certs.display(),
            identity
        ),
    };
    if let Some((topic, source, dest, copy)) = example(t) {
        println!(
            "  printf 'alice=1\\nbob=2\\n' | {exe} produce {topic} {} --key-separator =",
            target(&source)
        );
        println!(
            "  {exe} consume {copy} {} --from-beginning --idle-exit-ms 3000",
            target(&dest)
        );
        // The same through the Kafka listeners, with any Kafka client (kcat here).
        let kafka = |c: &str| {
            up.nodes
                .iter()
                .find(|n| n.cluster == c)
                .and_then(|n| n.kafka.clone())
        };
        if let (Some(from), Some(to)) = (kafka(&source), kafka(&dest)) {
            let ssl = format!(
                "-X security.protocol=ssl -X ssl.ca.location={0}/ca.crt -X ssl.certificate.location={0}/{1}.crt -X ssl.key.location={0}/{1}.key",
                certs.display(),
                identity
            );
            println!("  printf 'carol:3\\n' | kcat -b {from} {ssl} -P -t {topic} -K :");
            println!("  kcat -b {to} {ssl} -C -t {copy} -o beginning -e");
        }
    }
    println!("  {exe} topology status {}", fed.path.display());
    println!(
        "\nCtrl-C here, or `{exe} topology down {}`, stops every node.",
        fed.path.display()
    );
}

/// A declared topic and where a flow copies it: (topic, source, target, copy's name).
fn example(t: &Topology) -> Option<(String, String, String, String)> {
    t.flows.iter().find_map(|f| {
        let config = f.spec(t).to_config().ok()?;
        t.topics.iter().find_map(|topic| {
            let selected = topic.origins.contains(&f.source) && config.topics.is_match(&topic.name);
            let copy = target_topic(config.naming, &f.source, &f.target, &topic.name)
                .filter(|_| selected)?;
            Some((topic.name.clone(), f.source.clone(), f.target.clone(), copy))
        })
    })
}
