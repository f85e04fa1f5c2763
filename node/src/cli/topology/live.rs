//! The live side of a topology: reading what the clusters hold (topics over QUIC with the
//! operator's `admin` certificate, flows from each node's read-only admin listener) and
//! carrying out the changes of a plan, every one over QUIC with mutual TLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use strait_mirror::topology::Topology;
use strait_mirror::FlowSpec;
use strait_protocol::client::{Admin, Client, ClientOptions};
use strait_protocol::message::{Request, Response};

use super::plan::{Change, Live, LiveNode, LiveTopic};
use crate::cli::http;

/// A topology with the files it needs to reach its clusters.
pub struct Federation {
    pub topology: Topology,
    pub path: PathBuf,
    pub certs_dir: PathBuf,
    pub state_dir: PathBuf,
    tls: Option<rustls::ClientConfig>,
}

impl Federation {
    pub fn new(topology: Topology, path: PathBuf, certs_dir: PathBuf, state_dir: PathBuf) -> Self {
        Federation {
            topology,
            path,
            certs_dir,
            state_dir,
            tls: None,
        }
    }

    /// The operator's client identity (`admin.crt` in the certificate folder).
    fn tls(&mut self) -> anyhow::Result<rustls::ClientConfig> {
        if let Some(tls) = &self.tls {
            return Ok(tls.clone());
        }
        let d = &self.certs_dir;
        let tls = strait_certs::client_config(
            &d.join("ca.crt"),
            &d.join("admin.crt"),
            &d.join("admin.key"),
        )
        .with_context(|| {
            format!(
                "cannot load the operator certificate in {}; `strait topology up {}` makes it",
                d.display(),
                self.path.display()
            )
        })?;
        self.tls = Some(tls.clone());
        Ok(tls)
    }

    /// A client for one cluster, quick to give up when the cluster is down.
    pub fn client(&mut self, cluster: &str) -> anyhow::Result<Arc<Client>> {
        let bootstrap: Vec<String> = self
            .topology
            .cluster(cluster)
            .map(|c| c.nodes.iter().map(|n| n.address.clone()).collect())
            .unwrap_or_default();
        let mut opts = ClientOptions::new(bootstrap, self.tls()?);
        opts.client_id = "strait-topology".into();
        opts.connect_timeout = Duration::from_secs(3);
        opts.request_timeout = Duration::from_secs(15);
        opts.reconnect_backoff_max = Duration::from_millis(500);
        Ok(Client::new(opts))
    }

    /// A client for one node of a cluster (flows run in a particular node, the gateway).
    pub fn node_client(&mut self, cluster: &str, node: u32) -> anyhow::Result<Arc<Client>> {
        let address = self
            .topology
            .cluster(cluster)
            .and_then(|c| c.nodes.iter().find(|n| n.id == node))
            .map(|n| n.address.clone())
            .with_context(|| format!("no node {node} in cluster {cluster}"))?;
        let mut opts = ClientOptions::new(vec![address], self.tls()?);
        opts.client_id = "strait-topology".into();
        opts.connect_timeout = Duration::from_secs(3);
        opts.request_timeout = Duration::from_secs(30);
        Ok(Client::new(opts))
    }

    /// Reads the live state of every cluster the file declares.
    pub async fn read(&mut self) -> anyhow::Result<Live> {
        let mut live = Live::default();
        let clusters: Vec<_> = self.topology.clusters.clone();
        for cluster in &clusters {
            let unreachable = format!(
                "cannot reach cluster {} at {}; is it running? (`strait topology up {}` starts it)",
                cluster.name,
                cluster
                    .nodes
                    .iter()
                    .map(|n| n.address.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                self.path.display()
            );
            let unreachable = || unreachable.clone();
            let admin = Admin::new(self.client(&cluster.name)?);
            let meta = admin.metadata(None).await.with_context(unreachable)?;
            let mut topics = BTreeMap::new();
            let declared = self
                .topology
                .topics
                .iter()
                .filter(|t| t.origins.contains(&cluster.name));
            for topic in declared {
                if !meta.topics.iter().any(|t| t.name == topic.name) {
                    continue;
                }
                let d = admin
                    .describe_topic(&topic.name)
                    .await
                    .with_context(unreachable)?;
                topics.insert(
                    topic.name.clone(),
                    LiveTopic {
                        partitions: d.partitions.len() as u32,
                        configs: d.configs.into_iter().collect(),
                    },
                );
            }
            live.topics.insert(cluster.name.clone(), topics);
            for node in &cluster.nodes {
                let flows = http::get(&node.admin, "/flows").await?;
                let mut running = LiveNode::default();
                for f in flows["flows"].as_array().into_iter().flatten() {
                    let spec: FlowSpec =
                        serde_json::from_value(f["spec"].clone()).with_context(|| {
                            format!(
                                "node {} of {} lists a flow this version cannot read: {f}",
                                node.id, cluster.name
                            )
                        })?;
                    running.flows.insert(spec.name.clone(), spec);
                }
                live.nodes.insert((cluster.name.clone(), node.id), running);
            }
        }
        Ok(live)
    }

    /// Carries out one change.
    pub async fn apply(&mut self, change: &Change) -> anyhow::Result<()> {
        let what = change.to_string();
        self.carry_out(change)
            .await
            .with_context(|| format!("cannot {}", what.trim_start_matches(['+', '~', '-', ' '])))
    }

    async fn carry_out(&mut self, change: &Change) -> anyhow::Result<()> {
        match change {
            Change::CreateTopic {
                cluster,
                topic,
                partitions,
                configs,
            } => {
                let pairs = configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Admin::new(self.client(cluster)?)
                    .create_topic(topic, *partitions, pairs)
                    .await?;
            }
            Change::AddPartitions {
                cluster, topic, to, ..
            } => {
                Admin::new(self.client(cluster)?)
                    .add_partitions(topic, *to)
                    .await?;
            }
            Change::AlterTopic {
                cluster,
                topic,
                configs,
            } => {
                let pairs = configs
                    .iter()
                    .map(|(k, (_, v))| (k.clone(), v.clone()))
                    .collect();
                Admin::new(self.client(cluster)?)
                    .alter_topic_config(topic, pairs)
                    .await?;
            }
            Change::StartFlow {
                cluster,
                node,
                flow,
            } => {
                put_flow(&*self.node_client(cluster, *node)?, flow, false).await?;
            }
            Change::ReconfigureFlow {
                cluster,
                node,
                flow,
                ..
            } => {
                put_flow(&*self.node_client(cluster, *node)?, flow, true).await?;
            }
            Change::StopFlow {
                cluster,
                node,
                flow,
            } => {
                remove_flow(&*self.node_client(cluster, *node)?, flow).await?;
            }
        }
        Ok(())
    }

    /// Per cluster: whether each node answers, and its flows with their progress.
    pub async fn status(&self) -> Value {
        let mut clusters = Vec::new();
        for cluster in &self.topology.clusters {
            let mut nodes = Vec::new();
            for node in &cluster.nodes {
                let status = http::get(&node.admin, "/status").await;
                let (up, topics, flows) = match &status {
                    Ok(s) => (true, s["topics"].clone(), s["flows"].clone()),
                    Err(_) => (false, Value::Null, Value::Null),
                };
                nodes.push(
                    json!({"id": node.id, "address": node.address, "admin": node.admin,
                    "up": up, "error": status.as_ref().err().map(|e| e.to_string()),
                    "topics": topics, "flows": flows}),
                );
            }
            clusters.push(json!({"name": cluster.name, "region": cluster.region, "nodes": nodes}));
        }
        json!({"topology": self.topology.name, "clusters": clusters})
    }
}

/// The default state dir of a topology: `.strait/<name>` under the current directory.
pub fn default_state_dir(topology: &Topology) -> PathBuf {
    Path::new(".strait").join(&topology.name)
}

/// Starts (or, with `replace`, reconfigures) a flow in the node `client` reaches; answers
/// whether anything changed.
pub async fn put_flow(client: &Client, flow: &FlowSpec, replace: bool) -> anyhow::Result<bool> {
    let request = Request::PutFlow {
        spec: serde_json::to_string(flow)?,
        replace,
    };
    match client.call(&request, &[]).await?.0 {
        Response::FlowChanged { changed, .. } => Ok(changed),
        other => anyhow::bail!("unexpected answer to a flow change: {other:?}"),
    }
}

/// Stops and forgets a flow in the node `client` reaches.
pub async fn remove_flow(client: &Client, flow: &str) -> anyhow::Result<()> {
    let request = Request::RemoveFlow { name: flow.into() };
    match client.call(&request, &[]).await?.0 {
        Response::FlowChanged { .. } => Ok(()),
        other => anyhow::bail!("unexpected answer to a flow removal: {other:?}"),
    }
}
