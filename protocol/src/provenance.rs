//! Where a mirrored batch came from: every cluster it passed through.
//!
//! Provenance travels beside a batch, never inside it (a batch is Kafka's RecordBatch v2, which
//! has no room for it): a flow sends each batch's chain in `MirrorAppend`, the target keeps it
//! in the partition's provenance log, and fetches by mirror principals get it back, so a batch
//! copied across several hops still knows its origin, identity-mode rings never loop and
//! offset translation stays exact.

use serde::{Deserialize, Serialize};

use crate::ids::Offset;

/// Most mirror hops one batch may record: longer paths are refused, which also bounds what a
/// hostile peer can make a node keep.
pub const HOPS_MAX: usize = 16;

/// Longest cluster or topic name a hop may carry.
pub const HOP_NAME_MAX: usize = 255;

/// Every cluster a mirrored batch passed through, oldest first. The first hop is the record's
/// origin; the last is the cluster the batch was copied from most recently, with the offsets it
/// had there (what translation needs). An empty chain means "produced here".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Provenance {
    pub hops: Vec<Hop>,
}

/// One cluster a batch was copied from, and where it sat there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hop {
    pub cluster: String,
    pub topic: String,
    pub partition: u32,
    pub base_offset: u64,
}

/// Why a provenance chain is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvenanceError {
    #[error("the batch already passed through {HOPS_MAX} clusters; refusing to copy it further")]
    TooManyHops,
    #[error("a provenance hop names a cluster or topic longer than {HOP_NAME_MAX} bytes")]
    NameTooLong,
    #[error("provenance hop {cluster}/{topic}/{partition} at offset {base_offset} runs past the largest offset")]
    OffsetOverflow {
        cluster: String,
        topic: String,
        partition: u32,
        base_offset: u64,
    },
}

impl Provenance {
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Where the records were first produced.
    pub fn origin(&self) -> Option<&Hop> {
        self.hops.first()
    }

    /// The cluster the batch was copied from last.
    pub fn source(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// Whether the batch already passed through `cluster`: copying it there again would loop.
    pub fn includes(&self, cluster: &str) -> bool {
        self.hops.iter().any(|h| h.cluster == cluster)
    }

    /// The chain one more hop long: what a flow sends when it copies the batch out of `hop`.
    pub fn with_hop(&self, hop: Hop) -> Result<Provenance, ProvenanceError> {
        let mut next = self.clone();
        next.hops.push(hop);
        next.check(0)?;
        Ok(next)
    }

    /// Checks the bounds a node enforces on a chain it is sent for a batch spanning `span`
    /// offsets past its base: at most [`HOPS_MAX`] hops, short names, and source offsets that
    /// stay below [`Offset::MAX`] as the batch's own do.
    pub fn check(&self, span: u64) -> Result<(), ProvenanceError> {
        if self.hops.len() > HOPS_MAX {
            return Err(ProvenanceError::TooManyHops);
        }
        for h in &self.hops {
            if h.cluster.len() > HOP_NAME_MAX || h.topic.len() > HOP_NAME_MAX {
                return Err(ProvenanceError::NameTooLong);
            }
            if Offset(h.base_offset).checked_plus(span).is_none() {
                return Err(ProvenanceError::OffsetOverflow {
                    cluster: h.cluster.clone(),
                    topic: h.topic.clone(),
                    partition: h.partition,
                    base_offset: h.base_offset,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(cluster: &str, base_offset: u64) -> Hop {
        Hop {
            cluster: cluster.into(),
            topic: "orders".into(),
            partition: 3,
            base_offset,
        }
    }

    #[test]
    fn hops_accumulate_up_to_the_limit() {
        let mut p = Provenance::default().with_hop(hop("east", 1187)).unwrap();
        p = p.with_hop(hop("west", 7)).unwrap();
        assert_eq!(p.origin().unwrap().cluster, "east");
        assert_eq!(p.source().unwrap(), &hop("west", 7));
        assert!(p.includes("east") && p.includes("west") && !p.includes("north"));
        for i in 2..HOPS_MAX {
            p = p.with_hop(hop(&format!("c{i}"), 0)).unwrap();
        }
        assert_eq!(
            p.with_hop(hop("one-too-many", 0)),
            Err(ProvenanceError::TooManyHops)
        );
    }

    #[test]
    fn source_offsets_past_the_largest_are_refused() {
        let p = Provenance {
            hops: vec![hop("east", Offset::MAX.0 - 2)],
        };
        assert!(p.check(2).is_ok());
        assert!(matches!(
            p.check(3),
            Err(ProvenanceError::OffsetOverflow { .. })
        ));
        let long = Provenance {
            hops: vec![hop(&"x".repeat(HOP_NAME_MAX + 1), 0)],
        };
        assert_eq!(long.check(0), Err(ProvenanceError::NameTooLong));
    }
}
