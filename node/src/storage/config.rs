//! Per-topic log settings: segment rolling, retention, cleanup and durability.
//!
//! Settings arrive as `key=value` strings (the CLI, the wire, topic files) and are parsed here
//! once into typed values, so the log never sees a malformed setting.

use std::fmt;

use serde::{Deserialize, Serialize};
use strait_protocol::DecodeLimits;

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Every acknowledgement waits for an fsync; concurrent appends share one (group commit).
    Always,
    /// A background flusher fsyncs every N milliseconds; acks do not wait for it.
    IntervalMs(u64),
    /// The operating system decides; the node fsyncs only on roll and on clean shutdown.
    Os,
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::IntervalMs(ms) => write!(f, "interval_ms({ms})"),
            FlushPolicy::Os => f.write_str("os"),
        }
    }
}

impl std::str::FromStr for FlushPolicy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadValue {
            key: "flush".into(),
            value: s.into(),
            expected: "always, os, or interval_ms(N)",
        };
        match s {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            _ => {
                let inner = s
                    .strip_prefix("interval_ms(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                let ms: u64 = inner.trim().parse().map_err(|_| bad())?;
                if ms == 0 {
                    return Err(bad());
                }
                Ok(FlushPolicy::IntervalMs(ms))
            }
        }
    }
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupPolicy {
    /// Whole segments past retention are deleted.
    pub delete: bool,
    /// Sealed segments are rewritten to keep the latest record per key.
    pub compact: bool,
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.compact, self.delete) {
            (true, true) => f.write_str("compact,delete"),
            (true, false) => f.write_str("compact"),
            _ => f.write_str("delete"),
        }
    }
}

/// Why a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("unknown topic setting {0:?}; known settings: {KNOWN_KEYS}")]
    UnknownKey(String),
    #[error("setting {key}={value:?} is invalid; expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("setting {0:?} has no '='; write KEY=VALUE")]
    MissingEquals(String),
}

const KNOWN_KEYS: &str =
    "segment.bytes, segment.ms, retention.ms, retention.bytes, cleanup.policy, \
delete.retention.ms, flush, index.interval.bytes, max.batch.bytes, max.batch.decompressed.bytes";

/// Smallest segment size accepted; below this, rolling would dominate the work.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// The settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub cleanup: CleanupPolicy,
    pub delete_retention_ms: u64,
    pub flush: FlushPolicy,
    pub index_interval_bytes: u32,
    pub batch_bytes_max: u32,
    pub batch_bytes_decompressed_max: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup: CleanupPolicy {
                delete: true,
                compact: false,
            },
            delete_retention_ms: 24 * 3600 * 1000,
            flush: FlushPolicy::Os,
            index_interval_bytes: 4096,
            batch_bytes_max: 16 << 20,
            batch_bytes_decompressed_max: 64 << 20,
        }
    }
}

impl LogConfig {
    /// Applies one `key=value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |expected: &'static str| ConfigError::BadValue {
            key: key.into(),
            value: value.into(),
            expected,
        };
        let number = || value.parse::<u64>().map_err(|_| bad("a whole number"));
        let optional = || match value {
            "-1" | "infinite" => Ok(None),
            _ => value
                .parse::<u64>()
                .map(Some)
                .map_err(|_| bad("a whole number, or -1 for no limit")),
        };
        match key {
            "segment.bytes" => {
                let n = number()?;
                if n < SEGMENT_BYTES_MIN {
                    return Err(bad("at least 4096"));
                }
                self.segment_bytes = n;
            }
            "segment.ms" => self.segment_ms = optional()?,
            "retention.ms" => self.retention_ms = optional()?,
            "retention.bytes" => self.retention_bytes = optional()?,
            "delete.retention.ms" => self.delete_retention_ms = number()?,
            "flush" => self.flush = value.parse()?,
            "index.interval.bytes" => {
                self.index_interval_bytes =
                    u32::try_from(number()?).map_err(|_| bad("below 4294967296"))?
            }
            "max.batch.bytes" => {
                self.batch_bytes_max =
                    u32::try_from(number()?).map_err(|_| bad("below 4294967296"))?
            }
            "max.batch.decompressed.bytes" => {
                self.batch_bytes_decompressed_max =
                    u32::try_from(number()?).map_err(|_| bad("below 4294967296"))?
            }
            "cleanup.policy" => {
                self.cleanup = match value {
                    "delete" => CleanupPolicy {
                        delete: true,
                        compact: false,
                    },
                    "compact" => CleanupPolicy {
                        delete: false,
                        compact: true,
                    },
                    "compact,delete" | "delete,compact" => CleanupPolicy {
                        delete: true,
                        compact: true,
                    },
                    _ => return Err(bad("delete, compact, or compact,delete")),
                }
            }
            other => return Err(ConfigError::UnknownKey(other.into())),
        }
        Ok(())
    }

    /// Applies `KEY=VALUE` strings in order.
    pub fn with_settings<'a>(
        mut self,
        settings: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        for s in settings {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| ConfigError::MissingEquals(s.into()))?;
            self.set(k.trim(), v.trim())?;
        }
        Ok(self)
    }

    /// The settings as `key=value` pairs, for describing a topic.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let opt = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
        vec![
            ("cleanup.policy".into(), self.cleanup.to_string()),
            (
                "delete.retention.ms".into(),
                self.delete_retention_ms.to_string(),
            ),
            ("flush".into(), self.flush.to_string()),
            (
                "index.interval.bytes".into(),
                self.index_interval_bytes.to_string(),
            ),
            ("max.batch.bytes".into(), self.batch_bytes_max.to_string()),
            (
                "max.batch.decompressed.bytes".into(),
                self.batch_bytes_decompressed_max.to_string(),
            ),
            ("retention.bytes".into(), opt(self.retention_bytes)),
            ("retention.ms".into(), opt(self.retention_ms)),
            ("segment.bytes".into(), self.segment_bytes.to_string()),
            ("segment.ms".into(), opt(self.segment_ms)),
        ]
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            batch_bytes_max: self.batch_bytes_max,
            batch_bytes_decompressed_max: self.batch_bytes_decompressed_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_ones_name_the_fix() {
        let c = LogConfig::default()
            .with_settings([
                "flush=interval_ms(250)",
                "cleanup.policy=compact,delete",
                "retention.ms=-1",
            ])
            .unwrap();
        assert_eq!(c.flush, FlushPolicy::IntervalMs(250));
        assert!(c.cleanup.compact && c.cleanup.delete);
        assert_eq!(c.retention_ms, None);
        let err = LogConfig::default()
            .with_settings(["flush=sometimes"])
            .unwrap_err();
        assert!(err.to_string().contains("interval_ms(N)"), "{err}");
        assert!(matches!(
            LogConfig::default().set("nope", "1"),
            Err(ConfigError::UnknownKey(_))
        ));
        let round = LogConfig::default().to_pairs();
        let pairs: Vec<String> = round.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let back = LogConfig::default()
            .with_settings(pairs.iter().map(String::as_str))
            .unwrap();
        assert_eq!(back, LogConfig::default());
    }
}
