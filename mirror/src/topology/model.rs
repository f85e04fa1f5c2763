//! The topology file as written: clusters, security, topics and flows. Field names are a
//! contract (`docs/topologies.md` documents each); unknown fields are refused so a typo never
//! passes silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use strait_protocol::client::{ClusterEndpoint, TopicMapping};

use crate::spec::FlowSpec;

/// A whole federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Names the federation; `topology up` keeps its state under `.strait/<name>` by default.
    pub name: String,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub security: Security,
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub topics: Vec<Topic>,
    #[serde(default)]
    pub flows: Vec<Flow>,
}

/// Values every topic and flow starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Partitions of a topic that does not say.
    pub partitions: u32,
    /// Settings of every topic the topology creates (a topic's own `configs` win).
    pub topic_configs: BTreeMap<String, String>,
    /// Naming of a flow that does not say: `prefix` or `identity`.
    pub naming: String,
    pub refresh_ms: u64,
    pub checkpoint_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        let spec = FlowSpec::new("defaults", Vec::new(), ".*");
        Defaults {
            partitions: 1,
            topic_configs: BTreeMap::new(),
            naming: spec.naming,
            refresh_ms: spec.refresh_ms,
            checkpoint_interval_ms: spec.checkpoint_interval_ms,
            heartbeat_interval_ms: spec.heartbeat_interval_ms,
        }
    }
}

/// Where the certificates are, and who else gets one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Folder holding `ca.crt`, one `<cluster>-<node id>.crt/.key` per node and
    /// `admin.crt/.key` (the operator's client identity). Relative to the topology file.
    /// Unset: `<state dir>/certs`, made by `topology up`.
    #[serde(default)]
    pub certs_dir: Option<String>,
    /// Whether `topology up` may create missing certificates (a CA when `ca.crt` is missing).
    /// With `false`, every file must already exist and `validate` says which do not.
    #[serde(default = "yes")]
    pub generate: bool,
    /// Further identities `topology up` issues certificates for (applications, flows).
    #[serde(default)]
    pub principals: Vec<Principal>,
    /// Enforce `acls` on every node. The federation's own nodes and `admin` are always
    /// superusers (gateways read their sources with their node identity).
    #[serde(default)]
    pub authorization: bool,
    /// Further principals that skip the ACLs.
    #[serde(default)]
    pub superusers: Vec<String>,
    /// `[[security.acls]]`: rules every node of the federation enforces.
    #[serde(default)]
    pub acls: Vec<strait_protocol::acl::AclRule>,
}

fn yes() -> bool {
    true
}

impl Default for Security {
    fn default() -> Self {
        Security {
            certs_dir: None,
            generate: true,
            principals: Vec::new(),
            authorization: false,
            superusers: Vec::new(),
            acls: Vec::new(),
        }
    }
}

/// An identity with its own certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The certificate's common name, which the nodes see as the principal.
    pub name: String,
    /// `client`, `mirror` or `node`.
    pub role: String,
}

/// One cluster: a region's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub region: Option<String>,
    pub nodes: Vec<Node>,
    /// The controller quorum's voters, `["ID@HOST:PORT", …]` (1, 3 or 5 of the nodes, at their
    /// `address`), as in a node's config. Empty: each node is a one-voter quorum of itself.
    #[serde(default)]
    pub controllers: Vec<String>,
}

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: u32,
    /// UDP address of the QUIC listener, HOST:PORT.
    pub address: String,
    /// TCP address of the admin HTTP listener; flows are managed through it.
    pub admin: String,
    /// TCP address of the node's Kafka-wire listener (TLS with client certificates), if any.
    #[serde(default)]
    pub kafka: Option<String>,
    /// Data directory; relative paths are under the state dir. Default `<cluster>-<id>`.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Rack or zone: replicas of a partition go to different ones.
    #[serde(default)]
    pub rack: Option<String>,
}

/// A topic and the clusters it is produced on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Topic settings (`retention.ms`, `flush`, `cleanup.policy` …) over the defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Clusters where the topic is created and written by local producers.
    pub origins: Vec<String>,
}

/// A mirror flow from one cluster into another, run by the target cluster's gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Default `<source>-to-<target>`.
    #[serde(default)]
    pub name: Option<String>,
    pub source: String,
    pub target: String,
    /// Source topics to copy, a regular expression over the whole name. Default: all.
    #[serde(default = "all")]
    pub topics: String,
    #[serde(default)]
    pub exclude: Option<String>,
    /// Consumer groups whose committed offsets are translated onto the target.
    #[serde(default)]
    pub groups: Option<String>,
    #[serde(default)]
    pub groups_exclude: Option<String>,
    #[serde(default)]
    pub naming: Option<String>,
    #[serde(default)]
    pub refresh_ms: Option<u64>,
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Node id of the target cluster that runs the flow. Default: its first node.
    #[serde(default)]
    pub gateway: Option<u32>,
    #[serde(default)]
    pub propagate_deletes: bool,
    #[serde(default)]
    pub wan: Wan,
}

fn all() -> String {
    ".*".into()
}

/// Settings for long, lossy links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wan {
    /// Most bytes fetched but not yet appended, in MiB: size it to bandwidth × RTT.
    pub in_flight_mb: u32,
    /// Most bytes one fetch returns, in KiB (a streaming fetch's frames on short paths, and
    /// half the credit its stream starts with).
    pub fetch_kb: u32,
    /// The most credit one partition's streaming fetch may grow to, in MiB.
    pub window_max_mb: u32,
    /// Cap on the copy rate in MB/s; none by default.
    pub max_mb_s: Option<u64>,
}

impl Default for Wan {
    fn default() -> Self {
        let spec = FlowSpec::new("defaults", Vec::new(), ".*");
        Wan {
            in_flight_mb: spec.in_flight_mb,
            fetch_kb: spec.fetch_kb,
            window_max_mb: spec.window_max_mb,
            max_mb_s: None,
        }
    }
}

impl Topology {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The clusters a failover client of `topic` uses: the primary (given, else the topic's
    /// first origin) and the replica (given, else the target of the first flow from the
    /// primary that copies the topic), with how the replica names the topic.
    pub fn failover_pair(
        &self,
        topic: &str,
        primary: Option<&str>,
        replica: Option<&str>,
    ) -> Result<FailoverPair, String> {
        let primary = match primary {
            Some(p) => p.to_string(),
            None => self
                .topics
                .iter()
                .find(|t| t.name == topic)
                .and_then(|t| t.origins.first().cloned())
                .ok_or_else(|| {
                    format!("topic {topic:?} is not declared; name its cluster with --primary")
                })?,
        };
        let flow = self
            .flows
            .iter()
            .filter(|f| f.source == primary && replica.is_none_or(|r| f.target == r))
            .find(|f| f.spec(self).to_config().is_ok_and(|c| c.selects(topic)))
            .ok_or_else(|| {
                format!(
                    "no flow copies {topic:?} out of {primary}; declare one, or name the replica"
                )
            })?;
        let endpoint = |name: &str| {
            self.cluster(name).map(|c| ClusterEndpoint {
                name: c.name.clone(),
                bootstrap: c.nodes.iter().map(|n| n.address.clone()).collect(),
            })
        };
        let mapping = match flow.spec(self).naming.as_str() {
            "identity" => TopicMapping::Identity,
            _ => TopicMapping::Prefix,
        };
        Ok(FailoverPair {
            primary: endpoint(&primary).ok_or_else(|| format!("no cluster {primary:?}"))?,
            replica: endpoint(&flow.target)
                .ok_or_else(|| format!("no cluster {:?}", flow.target))?,
            mapping,
        })
    }
}

/// A primary cluster, its replica, and how the replica names the primary's topics.
#[derive(Debug, Clone)]
pub struct FailoverPair {
    pub primary: ClusterEndpoint,
    pub replica: ClusterEndpoint,
    pub mapping: TopicMapping,
}

impl Topic {
    pub fn partitions(&self, defaults: &Defaults) -> u32 {
        self.partitions.unwrap_or(defaults.partitions)
    }

    /// The settings the topic is created with: the defaults, then its own.
    pub fn configs(&self, defaults: &Defaults) -> BTreeMap<String, String> {
        let mut all = defaults.topic_configs.clone();
        all.extend(self.configs.clone());
        all
    }
}

impl Flow {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-to-{}", self.source, self.target))
    }

    /// The flow as its gateway runs it: sources by address, the gateway itself as target.
    pub fn spec(&self, topology: &Topology) -> FlowSpec {
        let d = &topology.defaults;
        let source_bootstrap = topology
            .cluster(&self.source)
            .map(|c| c.nodes.iter().map(|n| n.address.clone()).collect())
            .unwrap_or_default();
        let mut spec = FlowSpec::new(&self.name(), source_bootstrap, &self.topics);
        spec.exclude = self.exclude.clone();
        spec.groups = self.groups.clone();
        spec.groups_exclude = self.groups_exclude.clone();
        spec.naming = self.naming.clone().unwrap_or_else(|| d.naming.clone());
        spec.refresh_ms = self.refresh_ms.unwrap_or(d.refresh_ms);
        spec.checkpoint_interval_ms = self
            .checkpoint_interval_ms
            .unwrap_or(d.checkpoint_interval_ms);
        spec.heartbeat_interval_ms = self
            .heartbeat_interval_ms
            .unwrap_or(d.heartbeat_interval_ms);
        spec.max_mb_s = self.wan.max_mb_s;
        spec.in_flight_mb = self.wan.in_flight_mb;
        spec.fetch_kb = self.wan.fetch_kb;
        spec.window_max_mb = self.wan.window_max_mb;
        spec.propagate_deletes = self.propagate_deletes;
        spec
    }

    /// The node of the target cluster that runs the flow.
    pub fn gateway<'a>(&self, topology: &'a Topology) -> Option<&'a Node> {
        let cluster = topology.cluster(&self.target)?;
        match self.gateway {
            Some(id) => cluster.nodes.iter().find(|n| n.id == id),
            None => cluster.nodes.first(),
        }
    }
}
