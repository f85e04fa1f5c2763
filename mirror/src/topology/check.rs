//! The semantic checks of a topology: every problem names the element it concerns and the fix,
//! and everything that is allowed but worth knowing (an identity-mode cycle) becomes a note.
//!
//! Names are checked by following every topic through every flow, exactly as the flows would
//! name their copies (`naming::target_topic`), so a cycle is rejected only when it would really
//! build `a.b.a.orders`-style names, and a collision only when a copy would really land on an
//! existing name.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;

use strait_protocol::ids::TopicName;

use super::model::{Cluster, Topology};
use crate::naming::{target_topic, Naming};

/// One thing wrong with a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What it concerns, e.g. `flow east-to-west` or `cluster west, node 2`.
    pub element: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.element, self.message)
    }
}

/// Longest chain of copies the name walk follows; longer ones are cycles.
const HOPS_MAX: usize = 16;

/// The files a topology's certificates live in, relative to its certificate folder.
pub fn certificate_files(topology: &Topology) -> Vec<String> {
    let mut files = vec!["ca.crt".to_string()];
    let mut identity = |name: String| {
        files.push(format!("{name}.crt"));
        files.push(format!("{name}.key"));
    };
    for c in &topology.clusters {
        for n in &c.nodes {
            identity(node_identity(&c.name, n.id));
        }
    }
    identity("admin".into());
    for p in &topology.security.principals {
        identity(p.name.clone());
    }
    files
}

/// The certificate name (and principal) of a node.
pub fn node_identity(cluster: &str, id: u32) -> String {
    format!("{cluster}-{id}")
}

/// Checks a topology. `certs_dir` is where its certificates are expected (None: they are made
/// by `topology up` in its state dir). Returns notes, or every problem found.
pub fn check(topology: &Topology, certs_dir: Option<&Path>) -> Result<Vec<String>, Vec<Problem>> {
    let mut c = Checker::default();
    c.clusters(topology);
    c.topics(topology);
    c.flows(topology);
    if c.problems.is_empty() {
        c.names(topology);
    }
    c.certificates(topology, certs_dir);
    c.acls(topology);
    if c.problems.is_empty() {
        Ok(c.notes)
    } else {
        Err(c.problems)
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    notes: Vec<String>,
}

impl Checker {
    fn problem(&mut self, element: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            element: element.into(),
            message: message.into(),
        });
    }

    /// `controllers`: `ID@HOST:PORT` entries naming 1, 3 or 5 of the cluster's own nodes, each
    /// at the address the node listens on (the nodes dial these; a typo would leave a voter
    /// no one reaches).
    fn controllers(&mut self, cluster: &Cluster, element: &str) {
        let (voters, problems) = super::voters::parse_voters(&cluster.controllers);
        for p in problems {
            self.problem(element, p.to_string());
        }
        for (id, address) in voters {
            match cluster.nodes.iter().find(|n| n.id == id) {
                None => self.problem(
                    element,
                    format!("controller {id}@{address} names node {id}, which this cluster does not declare; voters are nodes of their own cluster"),
                ),
                Some(node) if node.address != address => self.problem(
                    element,
                    format!("controller {id}@{address}: node {id} listens on {}; name it there", node.address),
                ),
                Some(_) => {}
            }
        }
    }

    fn clusters(&mut self, t: &Topology) {
        if t.name.is_empty() || !plain_name(&t.name) {
            self.problem(
                "topology",
                format!(
                    "name {:?} must be ASCII letters, digits, '-' or '_'",
                    t.name
                ),
            );
        }
        if t.clusters.is_empty() {
            self.problem("topology", "no [[clusters]]; declare at least one");
        }
        let mut names = BTreeSet::new();
        let mut listeners: Vec<(SocketAddr, String)> = Vec::new();
        let mut data_dirs = BTreeMap::new();
        for cluster in &t.clusters {
            let element = format!("cluster {}", cluster.name);
            if !plain_name(&cluster.name) {
                self.problem(&element, "a cluster name must be non-empty ASCII letters, digits, '-' or '_' (no '.': mirror topics are named <cluster>.<topic>)");
            }
            if !names.insert(cluster.name.clone()) {
                self.problem(&element, "declared twice; give each cluster its own name");
            }
            match cluster.nodes.len() {
                0 => self.problem(&element, "has no nodes; add a [[clusters.nodes]] entry"),
                1 => {}
                n => self.problem(&element, format!("has {n} nodes; a cluster of several nodes needs its partitions placed across them, which this version does not do yet (the controller quorum runs, the data plane follows): declare one node per cluster")),
            }
            self.controllers(cluster, &element);
            let mut ids = BTreeSet::new();
            for node in &cluster.nodes {
                let element = format!("cluster {}, node {}", cluster.name, node.id);
                if !ids.insert(node.id) {
                    self.problem(
                        &element,
                        "node id used twice in this cluster; give each node its own id",
                    );
                }
                let listeners_of = [
                    ("address", Some(&node.address)),
                    ("admin", Some(&node.admin)),
                    ("kafka", node.kafka.as_ref()),
                ];
                for (field, raw) in listeners_of
                    .into_iter()
                    .filter_map(|(f, r)| r.map(|r| (f, r)))
                {
                    let Ok(addr) = raw.parse::<SocketAddr>() else {
                        self.problem(
                            &element,
                            format!("{field} {raw:?} is not IP:PORT, e.g. 127.0.0.1:7400"),
                        );
                        continue;
                    };
                    let what = format!("{element} {field}");
                    if let Some((_, other)) = listeners.iter().find(|(a, _)| same_port(*a, addr)) {
                        self.problem(
                            &element,
                            format!(
                                "{field} {raw} is also {other}; give every listener its own port"
                            ),
                        );
                    }
                    listeners.push((addr, what));
                }
                let dir = node
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| node_identity(&cluster.name, node.id));
                if let Some(other) = data_dirs.insert(dir.clone(), element.clone()) {
                    self.problem(&element, format!("data_dir {dir:?} is also the data dir of {other}; nodes never share one"));
                }
            }
        }
    }

    fn topics(&mut self, t: &Topology) {
        let mut names = BTreeSet::new();
        for topic in &t.topics {
            let element = format!("topic {}", topic.name);
            if let Err(e) = TopicName::new(topic.name.clone()) {
                self.problem(&element, e.to_string());
            } else if topic.name.starts_with("__") {
                self.problem(
                    &element,
                    "names starting with \"__\" are the nodes' own; pick another",
                );
            }
            if !names.insert(topic.name.clone()) {
                self.problem(
                    &element,
                    "declared twice; list every origin cluster in one entry's origins",
                );
            }
            let partitions = topic.partitions(&t.defaults);
            if partitions == 0 || partitions > 10_000 {
                self.problem(
                    &element,
                    format!("partitions must be 1 to 10000, not {partitions}"),
                );
            }
            if topic.origins.is_empty() {
                self.problem(
                    &element,
                    "origins is empty; name the clusters where it is produced",
                );
            }
            for origin in &topic.origins {
                if t.cluster(origin).is_none() {
                    self.problem(&element, format!("origin {origin:?} is not a cluster of this topology; declare it under [[clusters]] or fix the name"));
                }
            }
        }
    }

    fn flows(&mut self, t: &Topology) {
        let mut names = BTreeSet::new();
        for flow in &t.flows {
            let name = flow.name();
            let element = format!("flow {name}");
            if !names.insert(name.clone()) {
                self.problem(&element, "declared twice; give each flow its own name");
            }
            for (side, cluster) in [("source", &flow.source), ("target", &flow.target)] {
                if t.cluster(cluster).is_none() {
                    let known: Vec<&str> = t.clusters.iter().map(|c| c.name.as_str()).collect();
                    self.problem(&element, format!("{side} {cluster:?} is not a cluster of this topology (clusters: {}); declare it or fix the name", known.join(", ")));
                }
            }
            if flow.source == flow.target {
                self.problem(
                    &element,
                    format!(
                        "copies cluster {} into itself; a flow needs two different clusters",
                        flow.source
                    ),
                );
            }
            if t.cluster(&flow.target).is_some() && flow.gateway(t).is_none() {
                self.problem(
                    &element,
                    format!(
                        "gateway {:?} is not a node of cluster {}",
                        flow.gateway, flow.target
                    ),
                );
            }
            if let Err(e) = flow.spec(t).to_config() {
                self.problem(&element, e.to_string());
            }
        }
    }

    /// Follows every topic through every flow, as the flows would name the copies.
    fn names(&mut self, t: &Topology) {
        let flows: Vec<_> = t
            .flows
            .iter()
            .filter_map(|f| Some((f, f.spec(t).to_config().ok()?)))
            .collect();
        // (cluster, topic) → what made it: None for a declared topic, else the flow.
        let mut made: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        let mut queue = VecDeque::new();
        for topic in &t.topics {
            for origin in &topic.origins {
                made.insert((origin.clone(), topic.name.clone()), None);
                queue.push_back((
                    origin.clone(),
                    topic.name.clone(),
                    vec![(origin.clone(), String::new())],
                ));
            }
        }
        let mut reported = BTreeSet::new();
        let mut selected: BTreeSet<String> = BTreeSet::new();
        while let Some((cluster, topic, hops)) = queue.pop_front() {
            for (flow, config) in flows.iter().filter(|(f, _)| f.source == cluster) {
                let Some(copy) = config
                    .selects(&topic)
                    .then(|| target_topic(config.naming, &flow.source, &flow.target, &topic))
                    .flatten()
                else {
                    continue;
                };
                selected.insert(flow.name());
                let mut path = hops.clone();
                path.push((flow.target.clone(), flow.name()));
                let passed = hops.iter().any(|(c, _)| *c == flow.target);
                let route = route(&path);
                match config.naming {
                    Naming::Identity if passed => {
                        let mut members: Vec<&str> = path.iter().map(|(c, _)| c.as_str()).collect();
                        members.sort_unstable();
                        members.dedup();
                        if reported.insert(("identity", members.join(","))) {
                            self.notes.push(format!("flow {} closes a cycle of identity-mode flows ({route}): allowed, since every copied batch carries its provenance and is never copied into a cluster it already passed through", flow.name()));
                        }
                        continue;
                    }
                    _ if passed || path.len() > HOPS_MAX => {
                        if reported.insert(("prefix", flow.name())) {
                            self.problem(format!("flow {}", flow.name()), format!("closes a cycle of prefix-mode flows ({route}): {topic:?} would come back as {copy:?} and the names would grow forever; use naming = \"identity\" for a cycle, or exclude the mirror topics from one flow"));
                        }
                        continue;
                    }
                    _ => {}
                }
                let key = (flow.target.clone(), copy.clone());
                match made.get(&key) {
                    None => {
                        made.insert(key, Some(flow.name()));
                        queue.push_back((flow.target.clone(), copy, path));
                    }
                    // Identity copies merge into the topic of the same name: that is
                    // active-active, and provenance keeps every record once.
                    Some(_) if config.naming == Naming::Identity => {
                        queue.push_back((flow.target.clone(), copy, path));
                    }
                    Some(by) => {
                        if reported.insert(("collision", format!("{}/{copy}", flow.target))) {
                            let other = match by {
                                None => format!(
                                    "the topic {copy:?} declared with origin {}",
                                    flow.target
                                ),
                                Some(f) => format!("the copy flow {f} makes"),
                            };
                            self.problem(format!("flow {}", flow.name()), format!("its mirror topic {copy:?} on cluster {} collides with {other}; rename the topic or narrow the flow's topics", flow.target));
                        }
                    }
                }
            }
        }
        for flow in &t.flows {
            if !selected.contains(&flow.name()) {
                self.notes.push(format!("flow {} selects none of the declared topics of {} yet; it copies matching topics once they exist", flow.name(), flow.source));
            }
        }
    }

    fn acls(&mut self, t: &Topology) {
        for (i, rule) in t.security.acls.iter().enumerate() {
            if let Err(reason) = rule.validate() {
                self.problem(format!("security.acls[{i}] ({rule})"), reason);
            }
        }
        if !t.security.acls.is_empty() && !t.security.authorization {
            self.notes.push("security.acls are declared but security.authorization is false: nodes keep them and do not enforce them".into());
        }
    }

    fn certificates(&mut self, t: &Topology, certs_dir: Option<&Path>) {
        let Some(dir) = certs_dir else {
            self.notes.push("certificates: made by `strait topology up` in its state dir (security.certs_dir is unset)".into());
            return;
        };
        let missing: Vec<String> = certificate_files(t)
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if missing.is_empty() {
            return;
        }
        let list = missing.join(", ");
        if t.security.generate {
            self.notes.push(format!(
                "certificates: {list} missing in {}; `strait topology up` makes them",
                dir.display()
            ));
        } else {
            self.problem("security", format!("certificate files missing in {}: {list}; issue them with `strait certs issue --dir {} --name NAME --role node|client` or set generate = true", dir.display(), dir.display()));
        }
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether two listeners would fight over a port.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn route(path: &[(String, String)]) -> String {
    path.iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}
