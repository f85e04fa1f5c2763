//! What separates the live clusters from a topology file: a pure comparison, so `plan` shows
//! exactly what `apply` will do.
//!
//! The topology owns the topics it declares (created where they originate, grown, their
//! settings kept as written) and every flow on its nodes (flows a node runs that the file does
//! not declare are stopped). Topics it does not declare are left alone: a plan never deletes
//! data.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use strait_mirror::topology::Topology;
use strait_mirror::FlowSpec;

use strait_node::storage::LogConfig;

/// A topic as one cluster has it.
#[derive(Debug, Clone)]
pub struct LiveTopic {
    pub partitions: u32,
    /// Every setting, in the node's own spelling.
    pub configs: BTreeMap<String, String>,
}

/// One node's flows, by name.
#[derive(Debug, Clone, Default)]
pub struct LiveNode {
    pub flows: BTreeMap<String, FlowSpec>,
}

/// What the clusters hold now, read by `live::read`.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// cluster → topic → state; only the topics the file declares are described.
    pub topics: BTreeMap<String, BTreeMap<String, LiveTopic>>,
    /// (cluster, node id) → flows.
    pub nodes: BTreeMap<(String, u32), LiveNode>,
}

/// One change `apply` makes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    CreateTopic {
        cluster: String,
        topic: String,
        partitions: u32,
        configs: BTreeMap<String, String>,
    },
    AddPartitions {
        cluster: String,
        topic: String,
        from: u32,
        to: u32,
    },
    AlterTopic {
        cluster: String,
        topic: String,
        /// key → (live value, wanted value).
        configs: BTreeMap<String, (String, String)>,
    },
    StartFlow {
        cluster: String,
        node: u32,
        flow: FlowSpec,
    },
    ReconfigureFlow {
        cluster: String,
        node: u32,
        flow: FlowSpec,
        /// `field: live → wanted`, one per changed field.
        differences: Vec<String>,
    },
    StopFlow {
        cluster: String,
        node: u32,
        flow: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::CreateTopic {
                cluster,
                topic,
                partitions,
                configs,
            } => {
                write!(
                    f,
                    "+ create topic {topic} on {cluster} ({partitions} partitions"
                )?;
                for (k, v) in configs {
                    write!(f, ", {k}={v}")?;
                }
                write!(f, ")")
            }
            Change::AddPartitions {
                cluster,
                topic,
                from,
                to,
            } => {
                write!(
                    f,
                    "~ grow topic {topic} on {cluster}: {from} → {to} partitions"
                )
            }
            Change::AlterTopic {
                cluster,
                topic,
                configs,
            } => {
                write!(f, "~ alter topic {topic} on {cluster}:")?;
                for (k, (from, to)) in configs {
                    write!(f, " {k} {from} → {to}")?;
                }
                Ok(())
            }
            Change::StartFlow {
                cluster,
                node,
                flow,
            } => write!(
                f,
                "+ start flow {} on {cluster} node {node} (from {}, topics {:?}, {} naming)",
                flow.name,
                flow.source_bootstrap.join(","),
                flow.topics,
                flow.naming
            ),
            Change::ReconfigureFlow {
                cluster,
                node,
                flow,
                differences,
            } => write!(
                f,
                "~ reconfigure flow {} on {cluster} node {node}: {}",
                flow.name,
                differences.join("; ")
            ),
            Change::StopFlow {
                cluster,
                node,
                flow,
            } => {
                write!(f, "- stop flow {flow} on {cluster} node {node}")
            }
        }
    }
}

/// Why the clusters cannot be made to match the file.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("topic {topic}: setting {key}={value} is invalid: {reason}")]
    BadConfig {
        topic: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("topic {topic} on {cluster} has {live} partitions but the file asks for {wanted}; partitions are never removed (records are keyed to them): raise the count in the file")]
    Shrink {
        cluster: String,
        topic: String,
        live: u32,
        wanted: u32,
    },
}

/// A topic's wanted settings in the node's own spelling (`infinite` → `-1` …), so that a
/// setting written differently but meaning the same is no change.
pub fn canonical_configs(
    topic: &str,
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PlanError> {
    let mut out = BTreeMap::new();
    for (key, value) in configs {
        let bad = |reason: String| PlanError::BadConfig {
            topic: topic.into(),
            key: key.clone(),
            value: value.clone(),
            reason,
        };
        let mut config = LogConfig::default();
        config.set(key, value).map_err(|e| bad(e.to_string()))?;
        let spelled = config
            .to_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| value.clone());
        out.insert(key.clone(), spelled);
    }
    Ok(out)
}

/// The changes that make `live` match `topology`, topics first, then flows.
pub fn plan(topology: &Topology, live: &Live) -> Result<Vec<Change>, PlanError> {
    let mut changes = Vec::new();
    let no_topics = BTreeMap::new();
    for topic in &topology.topics {
        let wanted = canonical_configs(&topic.name, &topic.configs(&topology.defaults))?;
        let partitions = topic.partitions(&topology.defaults);
        for cluster in &topic.origins {
            let have = live.topics.get(cluster).unwrap_or(&no_topics);
            let Some(existing) = have.get(&topic.name) else {
                changes.push(Change::CreateTopic {
                    cluster: cluster.clone(),
                    topic: topic.name.clone(),
                    partitions,
                    configs: topic.configs(&topology.defaults),
                });
                continue;
            };
            if existing.partitions > partitions {
                return Err(PlanError::Shrink {
                    cluster: cluster.clone(),
                    topic: topic.name.clone(),
                    live: existing.partitions,
                    wanted: partitions,
                });
            }
            if existing.partitions < partitions {
                changes.push(Change::AddPartitions {
                    cluster: cluster.clone(),
                    topic: topic.name.clone(),
                    from: existing.partitions,
                    to: partitions,
                });
            }
            let differing: BTreeMap<String, (String, String)> = wanted
                .iter()
                .filter_map(|(k, v)| {
                    let now = existing.configs.get(k).cloned().unwrap_or_default();
                    (now != *v).then(|| (k.clone(), (now, v.clone())))
                })
                .collect();
            if !differing.is_empty() {
                changes.push(Change::AlterTopic {
                    cluster: cluster.clone(),
                    topic: topic.name.clone(),
                    configs: differing,
                });
            }
        }
    }
    changes.extend(flow_changes(topology, live));
    Ok(changes)
}

fn flow_changes(topology: &Topology, live: &Live) -> Vec<Change> {
    let mut wanted: BTreeMap<(String, u32), BTreeMap<String, FlowSpec>> = BTreeMap::new();
    for flow in &topology.flows {
        if let Some(node) = flow.gateway(topology) {
            wanted
                .entry((flow.target.clone(), node.id))
                .or_default()
                .insert(flow.name(), flow.spec(topology));
        }
    }
    let mut changes = Vec::new();
    let empty = LiveNode::default();
    for cluster in &topology.clusters {
        for node in &cluster.nodes {
            let key = (cluster.name.clone(), node.id);
            let running = live.nodes.get(&key).unwrap_or(&empty);
            let declared = wanted.remove(&key).unwrap_or_default();
            for name in running.flows.keys().filter(|n| !declared.contains_key(*n)) {
                changes.push(Change::StopFlow {
                    cluster: cluster.name.clone(),
                    node: node.id,
                    flow: name.clone(),
                });
            }
            for (name, spec) in declared {
                match running.flows.get(&name) {
                    None => changes.push(Change::StartFlow {
                        cluster: cluster.name.clone(),
                        node: node.id,
                        flow: spec,
                    }),
                    Some(now) if *now != spec => changes.push(Change::ReconfigureFlow {
                        cluster: cluster.name.clone(),
                        node: node.id,
                        differences: differences(now, &spec),
                        flow: spec,
                    }),
                    Some(_) => {}
                }
            }
        }
    }
    changes
}

/// `field: live → wanted` for every field that differs.
fn differences(now: &FlowSpec, wanted: &FlowSpec) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (json(now), json(wanted)) else {
        return vec!["settings differ".into()];
    };
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {} → {v}", a.get(k).unwrap_or(&Value::Null)))
        .collect()
}

fn json(spec: &FlowSpec) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

/// The suffix `strait mirror reverse --flow F` gives the flow it starts (`F-reverse`, in the
/// old primary's node, copying the promoted topics back).
pub const REVERSE_SUFFIX: &str = "-reverse";

/// Changes that would undo a failback in progress: stopping a flow that `mirror reverse`
/// started for a flow this file declares (and so starting that flow again in its old
/// direction). One warning per such flow, naming the way out.
pub fn undoes_reverse(topology: &Topology, changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::StopFlow {
                cluster,
                node,
                flow,
            } => {
                let original = flow.strip_suffix(REVERSE_SUFFIX)?;
                let declared = topology.flows.iter().find(|f| f.name() == original)?;
                Some(format!(
                    "flow {flow} on {cluster} (node {node}) is a failback in progress, started by `strait mirror reverse --flow {original}`; \
                     applying this file stops it and copies {} → {} again, undoing the failback. Finish the failback and declare the \
                     direction you want in the file, or run `topology apply --undo-reverse` to go back on purpose",
                    declared.source, declared.target
                ))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const FILE: &str = r#"
name = "p"
[defaults.topic_configs]
"retention.ms" = "infinite"
[[clusters]]
name = "east"
nodes = [{ id = 1, address = "127.0.0.1:7001", admin = "127.0.0.1:9001" }]
[[clusters]]
name = "west"
nodes = [{ id = 1, address = "127.0.0.1:7002", admin = "127.0.0.1:9002" }]
[[topics]]
name = "orders"
partitions = 4
origins = ["east"]
[[flows]]
source = "east"
target = "west"
topics = "orders"
"#;

    fn topology(text: &str) -> Topology {
        strait_mirror::topology::parse(Path::new("p.toml"), text).expect("parses")
    }

    /// The live state right after applying `t`.
    fn applied(t: &Topology) -> Live {
        let mut live = Live::default();
        for change in plan(t, &live).expect("plans") {
            match change {
                Change::CreateTopic {
                    cluster,
                    topic,
                    partitions,
                    configs,
                } => {
                    let mut all: BTreeMap<String, String> =
                        LogConfig::default().to_pairs().into_iter().collect();
                    all.extend(canonical_configs(&topic, &configs).expect("valid"));
                    live.topics.entry(cluster).or_default().insert(
                        topic,
                        LiveTopic {
                            partitions,
                            configs: all,
                        },
                    );
                }
                Change::StartFlow {
                    cluster,
                    node,
                    flow,
                } => {
                    live.nodes
                        .entry((cluster, node))
                        .or_default()
                        .flows
                        .insert(flow.name.clone(), flow);
                }
                other => panic!("a first plan only creates and starts: {other}"),
            }
        }
        live
    }

    #[test]
    fn a_plan_after_apply_is_empty() {
        let t = topology(FILE);
        let live = applied(&t);
        assert_eq!(plan(&t, &live).unwrap(), vec![]);
    }

    #[test]
    fn an_edit_plans_exactly_that_change() {
        let live = applied(&topology(FILE));
        let edited = topology(
            &FILE
                .replace(
                    "partitions = 4",
                    "partitions = 6\nconfigs = { \"retention.ms\" = \"60000\" }",
                )
                .replace("topics = \"orders\"", "topics = \"orders|payments\""),
        );
        let changes = plan(&edited, &live).unwrap();
        assert_eq!(changes.len(), 3, "{changes:#?}");
        assert!(matches!(
            &changes[0],
            Change::AddPartitions { from: 4, to: 6, .. }
        ));
        assert!(
            matches!(&changes[1], Change::AlterTopic { configs, .. } if configs["retention.ms"] == ("-1".into(), "60000".into()))
        );
        let Change::ReconfigureFlow { differences, .. } = &changes[2] else {
            panic!("{changes:?}")
        };
        assert_eq!(
            differences,
            &vec!["topics: \"orders\" → \"orders|payments\"".to_string()]
        );
    }

    #[test]
    fn flows_the_file_does_not_declare_are_stopped_and_shrinking_is_refused() {
        let mut live = applied(&topology(FILE));
        let without_flow = topology(&FILE[..FILE.find("[[flows]]").unwrap()]);
        let changes = plan(&without_flow, &live).unwrap();
        assert_eq!(
            changes,
            vec![Change::StopFlow {
                cluster: "west".into(),
                node: 1,
                flow: "east-to-west".into()
            }]
        );
        live.topics
            .get_mut("east")
            .unwrap()
            .get_mut("orders")
            .unwrap()
            .partitions = 8;
        let e = plan(&topology(FILE), &live).unwrap_err().to_string();
        assert!(e.contains("orders on east has 8 partitions"), "{e}");
    }

    /// After `mirror reverse`, the live node runs `east-to-west-reverse`, which the file does
    /// not declare: the plan would stop it, and says that this undoes the failback.
    #[test]
    fn a_plan_that_would_undo_a_reverse_says_so() {
        let t = topology(FILE);
        let mut live = applied(&t);
        let mut reverse = live.nodes[&("west".to_string(), 1)].flows["east-to-west"].clone();
        reverse.name = "east-to-west-reverse".into();
        live.nodes
            .entry(("east".into(), 1))
            .or_default()
            .flows
            .insert(reverse.name.clone(), reverse);
        let changes = plan(&t, &live).unwrap();
        let warnings = undoes_reverse(&t, &changes);
        assert_eq!(warnings.len(), 1, "{changes:#?}");
        assert!(
            warnings[0].contains("east-to-west-reverse") && warnings[0].contains("--undo-reverse"),
            "{}",
            warnings[0]
        );
        assert!(undoes_reverse(&t, &plan(&t, &applied(&t)).unwrap()).is_empty());
    }
}
