//! How source topics are named on the target, and which ones a flow must not copy.

/// The naming mode of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Naming {
    /// `orders` from cluster `east` becomes the read-only mirror topic `east.orders`, with
    /// offsets identical to the source's.
    #[default]
    Prefix,
    /// `orders` stays `orders`: the target topic is an ordinary topic that local producers write
    /// too (active-active). Copied batches carry provenance; batches that already passed
    /// through the target are never copied back, so A⇄B pairs and rings do not loop.
    Identity,
    /// The way back after a failover (`strait mirror reverse`): the source's promoted copies
    /// of this cluster's topics (`east.orders` on `west`, for target `east`) return under
    /// their own names (`orders`), as read-only mirror topics at identical offsets. Only
    /// topics carrying the target's prefix are copied.
    Restore,
}

impl Naming {
    pub fn as_str(self) -> &'static str {
        match self {
            Naming::Prefix => "prefix",
            Naming::Identity => "identity",
            Naming::Restore => "restore",
        }
    }

    /// Whether copies land at the source's offsets in a read-only mirror topic.
    pub fn keeps_offsets(self) -> bool {
        matches!(self, Naming::Prefix | Naming::Restore)
    }
}

impl std::str::FromStr for Naming {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prefix" => Ok(Naming::Prefix),
            "identity" => Ok(Naming::Identity),
            "restore" => Ok(Naming::Restore),
            other => Err(format!("unknown naming {other:?}; use prefix or identity")),
        }
    }
}

/// The target topic for `topic` of `source_cluster`, or None when the flow must not copy it:
/// internal topics, and topics that are themselves mirrors of the target cluster (copying those
/// back would build `a.b.a.orders` names and loop).
pub fn target_topic(
    naming: Naming,
    source_cluster: &str,
    target_cluster: &str,
    topic: &str,
) -> Option<String> {
    if topic.starts_with("__") {
        return None;
    }
    match naming {
        Naming::Prefix => {
            if topic.starts_with(&format!("{target_cluster}.")) {
                return None;
            }
            Some(format!("{source_cluster}.{topic}"))
        }
        Naming::Identity => Some(topic.to_string()),
        Naming::Restore => topic
            .strip_prefix(&format!("{target_cluster}."))
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_and_loop_guard() {
        assert_eq!(
            target_topic(Naming::Prefix, "east", "west", "orders").as_deref(),
            Some("east.orders")
        );
        assert_eq!(
            target_topic(Naming::Prefix, "east", "west", "west.orders"),
            None,
            "a mirror of ours is not copied back"
        );
        assert_eq!(
            target_topic(Naming::Prefix, "east", "west", "__consumer_offsets"),
            None
        );
        assert_eq!(
            target_topic(Naming::Identity, "east", "west", "orders").as_deref(),
            Some("orders")
        );
        assert_eq!(
            target_topic(Naming::Restore, "west", "east", "east.orders").as_deref(),
            Some("orders")
        );
        assert_eq!(
            target_topic(Naming::Restore, "west", "east", "orders"),
            None
        );
        assert_eq!("identity".parse::<Naming>(), Ok(Naming::Identity));
        assert!("mirror".parse::<Naming>().is_err());
    }
}
