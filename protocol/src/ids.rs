//! Newtypes for the ids and positions that cross the wire and the disk.
//!
//! Offsets, partitions and epochs are all integers; keeping them apart in the type system stops a
//! partition number from ever being used as an offset.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The position of a record in a partition. Offsets only grow; a mirror may leave gaps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Offset(pub u64);

impl Offset {
    /// The largest offset a record may have, as in Kafka (offsets are int64 there). Every
    /// offset that enters from the wire or the disk is checked against it where it enters
    /// (batch parsing bounds base offset plus span, appends bound the log end), so offset
    /// arithmetic inside Strait has room and never wraps.
    pub const MAX: Offset = Offset(i64::MAX as u64);

    /// The offset `delta` records after this one, or None past [`Offset::MAX`].
    pub fn checked_plus(self, delta: u64) -> Option<Offset> {
        self.0
            .checked_add(delta)
            .filter(|o| *o <= Offset::MAX.0)
            .map(Offset)
    }

    /// The offset `delta` records after this one, for values already bounded by
    /// [`Offset::MAX`] where they entered (the sum then fits). Saturates rather than wraps, so
    /// even a missed check can never turn a huge offset into a small one.
    pub fn plus(self, delta: u64) -> Offset {
        Offset(self.0.saturating_add(delta))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition's number within its topic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The generation of a partition's leadership; bumps each time leadership moves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct LeaderEpoch(pub u32);

/// A node's id within its cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Longest topic name accepted, as in Kafka.
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// A topic name: 1–249 characters of `[A-Za-z0-9._-]`, never `.` or `..`.
///
/// Parsed once at the edge, so every `TopicName` inside Strait is safe to use as a directory name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TopicName(String);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicNameError {
    #[error("topic name is empty; give a name of 1 to {TOPIC_NAME_LEN_MAX} characters")]
    Empty,
    #[error("topic name is {len} characters long; the maximum is {TOPIC_NAME_LEN_MAX}")]
    TooLong { len: usize },
    #[error("topic name {name:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'")]
    BadCharacter { name: String, bad: char },
    #[error("topic name {0:?} is reserved for directories; pick another name")]
    Reserved(String),
}

impl TopicName {
    /// Parses a topic name, rejecting anything that could not be a directory name.
    pub fn new(name: impl Into<String>) -> Result<Self, TopicNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if name.len() > TOPIC_NAME_LEN_MAX {
            return Err(TopicNameError::TooLong { len: name.len() });
        }
        if name == "." || name == ".." {
            return Err(TopicNameError::Reserved(name));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNameError::BadCharacter { name, bad });
        }
        Ok(TopicName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TopicName::new(raw).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for TopicName {
    type Err = TopicNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_that_could_escape_a_directory_are_rejected() {
        assert!(TopicName::new("orders").is_ok());
        assert!(TopicName::new("east.orders-v2_x").is_ok());
        assert_eq!(TopicName::new(""), Err(TopicNameError::Empty));
        assert!(matches!(
            TopicName::new(".."),
            Err(TopicNameError::Reserved(_))
        ));
        assert!(matches!(
            TopicName::new("a/b"),
            Err(TopicNameError::BadCharacter { bad: '/', .. })
        ));
        assert!(matches!(
            TopicName::new("x".repeat(250)),
            Err(TopicNameError::TooLong { len: 250 })
        ));
    }
}
