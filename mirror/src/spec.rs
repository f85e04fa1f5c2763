//! A flow as written in a config file, a topology or an admin API request: plain strings and
//! numbers, checked and turned into a [`FlowConfig`]. Field names are a contract.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::flow::FlowConfig;
use crate::naming::Naming;

/// Why a flow description cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("flow {flow}: {field} {pattern:?} is not a valid regular expression: {reason}")]
    BadRegex {
        flow: String,
        field: &'static str,
        pattern: String,
        reason: String,
    },
    #[error("flow {flow}: {reason}")]
    Invalid { flow: String, reason: String },
}

/// One flow's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    /// Addresses of the source cluster's nodes.
    pub source_bootstrap: Vec<String>,
    /// Addresses of the target cluster's nodes; empty inside a node, which is then the target.
    #[serde(default)]
    pub target_bootstrap: Vec<String>,
    /// Source topics to copy: a regular expression matched against the whole name.
    pub topics: String,
    #[serde(default)]
    pub exclude: Option<String>,
    /// Consumer groups whose committed offsets are carried over.
    #[serde(default)]
    pub groups: Option<String>,
    #[serde(default)]
    pub groups_exclude: Option<String>,
    /// `prefix` (default) or `identity`.
    #[serde(default = "default_naming")]
    pub naming: String,
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// 0 turns heartbeats off.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Cap on the copy rate in MB/s; none by default.
    #[serde(default)]
    pub max_mb_s: Option<u64>,
    /// Most bytes fetched but not yet appended, in MiB.
    #[serde(default = "default_in_flight_mb")]
    pub in_flight_mb: u32,
    /// Most bytes one fetch may return, in KiB; also the credit each partition's streaming
    /// fetch starts with.
    #[serde(default = "default_fetch_kb")]
    pub fetch_kb: u32,
    /// The most credit one partition's streaming fetch may grow to, in MiB (it grows only
    /// while the link needs it: about twice the bandwidth-delay product).
    #[serde(default = "default_window_max_mb")]
    pub window_max_mb: u32,
    #[serde(default)]
    pub propagate_deletes: bool,
}

fn default_naming() -> String {
    "prefix".into()
}
fn default_refresh_ms() -> u64 {
    5000
}
fn default_checkpoint_ms() -> u64 {
    250
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_in_flight_mb() -> u32 {
    64
}
fn default_fetch_kb() -> u32 {
    4096
}
fn default_window_max_mb() -> u32 {
    64
}

impl FlowSpec {
    /// A flow with defaults for everything but what it must say.
    pub fn new(name: &str, source_bootstrap: Vec<String>, topics: &str) -> FlowSpec {
        FlowSpec {
            name: name.into(),
            source_bootstrap,
            target_bootstrap: Vec::new(),
            topics: topics.into(),
            exclude: None,
            groups: None,
            groups_exclude: None,
            naming: default_naming(),
            refresh_ms: default_refresh_ms(),
            checkpoint_interval_ms: default_checkpoint_ms(),
            heartbeat_interval_ms: default_heartbeat_ms(),
            max_mb_s: None,
            in_flight_mb: default_in_flight_mb(),
            fetch_kb: default_fetch_kb(),
            window_max_mb: default_window_max_mb(),
            propagate_deletes: false,
        }
    }

    /// Checks the description and builds the flow's settings.
    pub fn to_config(&self) -> Result<FlowConfig, SpecError> {
        let invalid = |reason: String| SpecError::Invalid {
            flow: self.name.clone(),
            reason,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(format!(
                "name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        if self.source_bootstrap.is_empty() {
            return Err(invalid("source_bootstrap names no address".into()));
        }
        let whole = |field: &'static str, pattern: &str| {
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| SpecError::BadRegex {
                flow: self.name.clone(),
                field,
                pattern: pattern.into(),
                reason: e.to_string(),
            })
        };
        let naming: Naming = self.naming.parse().map_err(invalid)?;
        let mut c = FlowConfig::new(&self.name, whole("topics", &self.topics)?);
        c.exclude = self
            .exclude
            .as_deref()
            .map(|p| whole("exclude", p))
            .transpose()?;
        c.groups = self
            .groups
            .as_deref()
            .map(|p| whole("groups", p))
            .transpose()?;
        c.groups_exclude = self
            .groups_exclude
            .as_deref()
            .map(|p| whole("groups_exclude", p))
            .transpose()?;
        c.naming = naming;
        c.refresh = Duration::from_millis(self.refresh_ms.max(100));
        c.checkpoint_interval = Duration::from_millis(self.checkpoint_interval_ms.max(50));
        c.heartbeat_interval = (self.heartbeat_interval_ms > 0)
            .then(|| Duration::from_millis(self.heartbeat_interval_ms.max(50)));
        c.rate_bytes_per_s = self.max_mb_s.map(|mb| mb << 20);
        c.fetch_bytes_max = self.fetch_kb.clamp(64, 32 << 10) << 10;
        c.in_flight_bytes_max = self.in_flight_mb.clamp(1, 4096) << 20;
        c.stream_window_max = self.window_max_mb.clamp(1, 1024) << 20;
        c.propagate_deletes = self.propagate_deletes;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_flow_and_field() {
        let spec: FlowSpec = toml::from_str(
            "name = \"east-west\"\nsource_bootstrap = [\"127.0.0.1:1\"]\ntopics = \"orders.*\"\n",
        )
        .unwrap();
        let c = spec.to_config().unwrap();
        assert_eq!(c.naming, Naming::Prefix);
        assert!(c.topics.is_match("orders.eu") && !c.topics.is_match("xorders"));
        let mut bad = spec.clone();
        bad.groups = Some("(".into());
        let e = bad.to_config().unwrap_err().to_string();
        assert!(e.contains("east-west") && e.contains("groups"), "{e}");
        let mut bad = spec;
        bad.naming = "mirror".into();
        assert!(bad
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("prefix or identity"));
    }
}
