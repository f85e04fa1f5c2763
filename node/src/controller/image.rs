//! The metadata image: what the controller's log describes once applied, and the commands that
//! change it.
//!
//! Every decision that depends on the image (where a new topic's replicas go, who leads once a
//! node is fenced, which producer ids a block gets) is taken while applying, from the image
//! alone, so it is taken identically on every node that applies the same log, and a command
//! proposed on stale information is judged against the image as it is when it commits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub nodes: BTreeMap<u64, NodeRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// The first producer id no block has covered yet.
    pub next_producer_id: u64,
}

/// A registered node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its QUIC address, as clients and peers reach it.
    pub address: String,
    /// Its Kafka listener's advertised address, when it has one.
    pub kafka_address: Option<String>,
    /// Its rack or zone: replicas of one partition go to different ones where possible.
    pub rack: Option<String>,
    /// Raised at every registration: a fence names the incarnation it fences, so a node that
    /// re-registered in between is not fenced by an old verdict.
    pub incarnation: u64,
    /// Silent past its session timeout: it leads nothing until it registers again.
    pub fenced: bool,
}

/// A topic and where its partitions live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub partitions: Vec<PartitionRecord>,
    /// Topic settings (`retention.ms`, `cleanup.policy`, …) as given.
    pub settings: BTreeMap<String, String>,
}

/// One partition's replicas, leader and in-sync set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The nodes holding a replica; the first is the preferred leader.
    pub replicas: Vec<u64>,
    /// None while no in-sync replica is alive (the partition is offline).
    pub leader: Option<u64>,
    /// Raised at every change of leader, so a deposed leader's requests can be told apart.
    pub leader_epoch: u32,
    pub isr: Vec<u64>,
}

/// A change to the image, as proposed to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node (re)joins: a new incarnation, unfenced, leading again the offline partitions
    /// whose in-sync set it is in.
    RegisterNode {
        node_id: u64,
        address: String,
        kafka_address: Option<String>,
        rack: Option<String>,
    },
    /// The node's `incarnation` went silent: its leaderships move to other in-sync replicas.
    FenceNode {
        node_id: u64,
        incarnation: u64,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        /// None: 3 when the cluster has 3 nodes or more, otherwise the node count.
        replication_factor: Option<u16>,
        settings: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Sets (or, with an empty value, removes) the given settings.
    AlterTopic {
        name: String,
        settings: BTreeMap<String, String>,
    },
    /// Reserves `count` producer ids for one node's idempotent producers.
    AllocateProducerIds {
        count: u64,
    },
}

/// What applying an entry gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied, nothing to report (also the answer to blank and membership entries).
    Applied,
    Registered {
        incarnation: u64,
    },
    /// The new topic's replicas, per partition.
    TopicCreated {
        replicas: Vec<Vec<u64>>,
    },
    ProducerIds {
        first: u64,
        count: u64,
    },
    /// Judged against the image at commit and not applied.
    Refused(Refusal),
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown node {0}: it has never registered")]
    UnknownNode(u64),
    #[error("replication factor {wanted} needs {wanted} live nodes; the cluster has {live}: add nodes or lower replication.factor")]
    NotEnoughNodes { wanted: u16, live: usize },
    #[error("a topic needs 1 to {max} partitions, not {given}")]
    Partitions { given: u32, max: u32 },
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
}

/// Most partitions one topic may have (the node's own limit).
pub const PARTITIONS_MAX: u32 = 10_000;

impl MetadataImage {
    /// Applies `command`; a refused command leaves the image as it was.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match self.try_apply(command) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn try_apply(&mut self, command: &Command) -> Result<Outcome, Refusal> {
        match command {
            Command::RegisterNode {
                node_id,
                address,
                kafka_address,
                rack,
            } => Ok(self.register(*node_id, address, kafka_address, rack)),
            Command::FenceNode {
                node_id,
                incarnation,
            } => self.fence(*node_id, *incarnation),
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                settings,
            } => self.create_topic(name, *partitions, *replication_factor, settings),
            Command::DeleteTopic { name } => self
                .topics
                .remove(name)
                .map(|_| Outcome::Applied)
                .ok_or_else(|| Refusal::UnknownTopic(name.clone())),
            Command::AlterTopic { name, settings } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| Refusal::UnknownTopic(name.clone()))?;
                for (key, value) in settings {
                    if value.is_empty() {
                        topic.settings.remove(key);
                    } else {
                        topic.settings.insert(key.clone(), value.clone());
                    }
                }
                Ok(Outcome::Applied)
            }
            Command::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                self.next_producer_id = first
                    .checked_add(*count)
                    .ok_or(Refusal::ProducerIdsExhausted)?;
                Ok(Outcome::ProducerIds {
                    first,
                    count: *count,
                })
            }
        }
    }

    fn register(
        &mut self,
        node_id: u64,
        address: &str,
        kafka_address: &Option<String>,
        rack: &Option<String>,
    ) -> Outcome {
        let node = self.nodes.entry(node_id).or_default();
        node.address = address.to_string();
        node.kafka_address = kafka_address.clone();
        node.rack = rack.clone();
        node.incarnation += 1;
        node.fenced = false;
        let incarnation = node.incarnation;
        for part in self.partitions_mut() {
            if part.leader.is_none() && part.isr.contains(&node_id) {
                part.leader = Some(node_id);
                part.leader_epoch += 1;
            }
        }
        Outcome::Registered { incarnation }
    }

    fn fence(&mut self, node_id: u64, incarnation: u64) -> Result<Outcome, Refusal> {
        let node = self
            .nodes
            .get_mut(&node_id)
            .ok_or(Refusal::UnknownNode(node_id))?;
        if node.incarnation != incarnation || node.fenced {
            // It registered again since (or was fenced already): nothing to do.
            return Ok(Outcome::Applied);
        }
        node.fenced = true;
        let live: Vec<u64> = self.live_nodes();
        for part in self.partitions_mut() {
            if !part.isr.contains(&node_id) {
                continue;
            }
            // The last in-sync replica stays in the set (as Kafka keeps it): only it holds
            // everything acknowledged, so the partition waits offline for it to come back.
            if part.isr.len() > 1 {
                part.isr.retain(|n| *n != node_id);
            }
            if part.leader == Some(node_id) {
                part.leader = part.isr.iter().copied().find(|n| live.contains(n));
                part.leader_epoch += 1;
            }
        }
        Ok(Outcome::Applied)
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        settings: &BTreeMap<String, String>,
    ) -> Result<Outcome, Refusal> {
        if self.topics.contains_key(name) {
            return Err(Refusal::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(Refusal::Partitions {
                given: partitions,
                max: PARTITIONS_MAX,
            });
        }
        let order = self.placement_order();
        let wanted = replication_factor.unwrap_or_else(|| self.nodes.len().clamp(1, 3) as u16);
        if wanted == 0 || usize::from(wanted) > order.len() {
            return Err(Refusal::NotEnoughNodes {
                wanted,
                live: order.len(),
            });
        }
        // Start where the name says, so topics' first partitions do not all land on one node.
        let start = crc32c::crc32c(name.as_bytes()) as usize;
        let parts: Vec<PartitionRecord> = (0..partitions as usize)
            .map(|p| {
                let replicas: Vec<u64> = (0..usize::from(wanted))
                    .map(|r| order[(start + p + r) % order.len()])
                    .collect();
                PartitionRecord {
                    leader: replicas.first().copied(),
                    leader_epoch: 0,
                    isr: replicas.clone(),
                    replicas,
                }
            })
            .collect();
        let replicas = parts.iter().map(|p| p.replicas.clone()).collect();
        self.topics.insert(
            name.to_string(),
            TopicRecord {
                partitions: parts,
                settings: settings.clone(),
            },
        );
        Ok(Outcome::TopicCreated { replicas })
    }

    /// Live nodes ordered so that neighbours sit in different racks where there are several
    /// (racks taken in turn, as Kafka's rack-aware assignment does): any run of consecutive
    /// entries spans as many racks as it can.
    fn placement_order(&self) -> Vec<u64> {
        let mut racks: BTreeMap<Option<&str>, Vec<u64>> = BTreeMap::new();
        for (id, node) in self.nodes.iter().filter(|(_, n)| !n.fenced) {
            racks.entry(node.rack.as_deref()).or_default().push(*id);
        }
        let longest = racks.values().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()))
            .collect()
    }

    fn live_nodes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    fn partitions_mut(&mut self) -> impl Iterator<Item = &mut PartitionRecord> {
        self.topics
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(image: &mut MetadataImage, id: u64, rack: Option<&str>) -> u64 {
        match image.apply(&Command::RegisterNode {
            node_id: id,
            address: format!("127.0.0.1:{}", 9000 + id),
            kafka_address: None,
            rack: rack.map(str::to_string),
        }) {
            Outcome::Registered { incarnation } => incarnation,
            other => panic!("{other:?}"),
        }
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: u32, rf: Option<u16>) -> Outcome {
        image.apply(&Command::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            settings: BTreeMap::new(),
        })
    }

    #[test]
    fn replicas_spread_over_nodes_and_racks() {
        let mut image = MetadataImage::default();
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            register(&mut image, id, Some(rack));
        }
        let Outcome::TopicCreated { replicas } = create(&mut image, "t", 12, None) else {
            panic!("not created");
        };
        let mut led = BTreeMap::<u64, usize>::new();
        for set in &replicas {
            assert_eq!(set.len(), 3, "the default factor on six nodes: {set:?}");
            let racks: std::collections::BTreeSet<_> =
                set.iter().map(|n| image.nodes[n].rack.clone()).collect();
            assert_eq!(racks.len(), 3, "one replica per rack: {set:?}");
            *led.entry(set[0]).or_default() += 1;
        }
        assert_eq!(led.len(), 6, "every node leads some partition: {led:?}");
        assert!(led.values().all(|n| *n == 2), "evenly: {led:?}");
    }

    #[test]
    fn a_factor_above_the_live_nodes_is_refused_and_changes_nothing() {
        let mut image = MetadataImage::default();
        register(&mut image, 1, None);
        register(&mut image, 2, None);
        let before = image.clone();
        let out = create(&mut image, "t", 1, Some(3));
        assert_eq!(
            out,
            Outcome::Refused(Refusal::NotEnoughNodes { wanted: 3, live: 2 })
        );
        assert_eq!(image, before);
        assert!(
            matches!(create(&mut image, "t", 2, None), Outcome::TopicCreated { ref replicas } if replicas[0].len() == 2)
        );
        assert_eq!(
            create(&mut image, "t", 2, None),
            Outcome::Refused(Refusal::TopicExists("t".into()))
        );
    }

    #[test]
    fn fencing_moves_leadership_and_a_stale_fence_does_nothing() {
        let mut image = MetadataImage::default();
        let incarnations: Vec<u64> = (1..=3).map(|id| register(&mut image, id, None)).collect();
        create(&mut image, "t", 3, Some(3));
        let led_by_1: Vec<usize> = image.topics["t"]
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.leader == Some(1))
            .map(|(i, _)| i)
            .collect();
        assert!(!led_by_1.is_empty());
        image.apply(&Command::FenceNode {
            node_id: 1,
            incarnation: incarnations[0],
        });
        for (i, part) in image.topics["t"].partitions.iter().enumerate() {
            assert_ne!(part.leader, Some(1), "partition {i}: {part:?}");
            assert!(!part.isr.contains(&1));
            let expected_epoch = u32::from(led_by_1.contains(&i));
            assert_eq!(part.leader_epoch, expected_epoch, "partition {i}");
        }
        // Node 1 comes back with a new incarnation; the old verdict, replayed, changes nothing.
        let again = register(&mut image, 1, None);
        assert_eq!(again, incarnations[0] + 1);
        let before = image.clone();
        image.apply(&Command::FenceNode {
            node_id: 1,
            incarnation: incarnations[0],
        });
        assert_eq!(image, before);
        assert!(!image.nodes[&1].fenced);
    }

    #[test]
    fn the_last_in_sync_replica_stays_and_leads_again_when_it_returns() {
        let mut image = MetadataImage::default();
        let inc = register(&mut image, 7, None);
        create(&mut image, "solo", 1, None);
        image.apply(&Command::FenceNode {
            node_id: 7,
            incarnation: inc,
        });
        let part = &image.topics["solo"].partitions[0];
        assert_eq!(
            (part.leader, part.isr.clone(), part.leader_epoch),
            (None, vec![7], 1)
        );
        register(&mut image, 7, None);
        let part = &image.topics["solo"].partitions[0];
        assert_eq!((part.leader, part.leader_epoch), (Some(7), 2));
    }

    #[test]
    fn producer_id_blocks_never_overlap_and_never_wrap() {
        let mut image = MetadataImage::default();
        let a = image.apply(&Command::AllocateProducerIds { count: 1000 });
        let b = image.apply(&Command::AllocateProducerIds { count: 1000 });
        assert_eq!(
            a,
            Outcome::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            b,
            Outcome::ProducerIds {
                first: 1000,
                count: 1000
            }
        );
        image.next_producer_id = u64::MAX - 10;
        assert_eq!(
            image.apply(&Command::AllocateProducerIds { count: 1000 }),
            Outcome::Refused(Refusal::ProducerIdsExhausted)
        );
        assert_eq!(image.next_producer_id, u64::MAX - 10);
    }
}
