//! Per-principal byte-rate quotas for produce and fetch, enforced the way Kafka does: the
//! request is served, then its answer is held back until the principal is back under its rate.
//! Only that principal's stream waits; nobody else slows down, and no request is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[quotas]` of a node config: rates in bytes per second; 0 means unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Every principal without an entry of its own.
    pub produce_bytes_per_sec: u64,
    pub fetch_bytes_per_sec: u64,
    /// `[[quotas.principals]]`: rates for one principal.
    pub principals: Vec<PrincipalQuota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalQuota {
    pub principal: String,
    #[serde(default)]
    pub produce_bytes_per_sec: u64,
    #[serde(default)]
    pub fetch_bytes_per_sec: u64,
}

/// Which rate a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

/// A token bucket holding at most one second of its rate.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct Quotas {
    config: QuotaConfig,
    buckets: Mutex<HashMap<(String, Direction), Bucket>>,
}

/// Longest a single answer is held back, so a client's request timeout is not reached.
const DELAY_MAX: Duration = Duration::from_secs(5);

impl Quotas {
    pub fn new(config: QuotaConfig) -> Quotas {
        Quotas {
            config,
            buckets: Mutex::default(),
        }
    }

    fn rate(&self, principal: &str, direction: Direction) -> u64 {
        let own = self
            .config
            .principals
            .iter()
            .find(|p| p.principal == principal);
        match (direction, own) {
            (Direction::Produce, Some(p)) => p.produce_bytes_per_sec,
            (Direction::Fetch, Some(p)) => p.fetch_bytes_per_sec,
            (Direction::Produce, None) => self.config.produce_bytes_per_sec,
            (Direction::Fetch, None) => self.config.fetch_bytes_per_sec,
        }
    }

    /// Charges `bytes` to the principal; answers how long to hold the response back.
    pub fn charge(&self, principal: &str, direction: Direction, bytes: u64) -> Duration {
        let rate = self.rate(principal, direction);
        if rate == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets
            .entry((principal.to_string(), direction))
            .or_insert(Bucket {
                tokens: rate,
                last: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate).min(DELAY_MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_rate_waits_and_others_do_not() {
        let q = Quotas::new(QuotaConfig {
            produce_bytes_per_sec: 0,
            fetch_bytes_per_sec: 0,
            principals: vec![PrincipalQuota {
                principal: "slow".into(),
                produce_bytes_per_sec: 1000,
                fetch_bytes_per_sec: 0,
            }],
        });
        assert_eq!(q.charge("slow", Direction::Produce, 1000), Duration::ZERO);
        let d = q.charge("slow", Direction::Produce, 2000);
        assert!(d >= Duration::from_millis(1900), "{d:?}");
        assert_eq!(q.charge("slow", Direction::Fetch, 1 << 30), Duration::ZERO);
        assert_eq!(
            q.charge("fast", Direction::Produce, 1 << 30),
            Duration::ZERO
        );
    }
}
