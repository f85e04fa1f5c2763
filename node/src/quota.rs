//! Per-principal byte-rate quotas for produce and fetch, charged *before* the work: a request
//! reserves its bytes (a produce its payload, a fetch at most one second of its rate, to which
//! its answer is clamped) and waits, before it is served, until the principal's bucket covers
//! it. Reservations stand while they wait, so parallel streams queue behind each other instead
//! of all being served at once: the rate holds however many streams a principal opens. Only
//! that principal waits; nobody else slows down. A request that would wait past
//! [`QUEUE_MAX`] is refused with a retriable error instead (the client backs off and retries).

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

/// Longest a request waits for its reservation; beyond it the request is refused (retriable),
/// well inside a client's 30 s request timeout.
pub const QUEUE_MAX: Duration = Duration::from_secs(10);

/// The least a fetch may answer under a quota, so small rates still move whole batches.
const FETCH_CAP_MIN: u64 = 64 << 10;

/// A reservation the principal's rate cannot cover within [`QUEUE_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub rate_bytes_per_sec: u64,
    pub wait: Duration,
}

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

    /// Reserves `bytes` of the principal's rate before the work; answers how long the
    /// request must wait before it is served, or refuses (reserving nothing) when that would
    /// be longer than [`QUEUE_MAX`].
    pub fn reserve(
        &self,
        principal: &str,
        direction: Direction,
        bytes: u64,
    ) -> Result<Duration, OverQuota> {
        let rate = self.rate(principal, direction);
        if rate == 0 || bytes == 0 {
            return Ok(Duration::ZERO);
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = Self::refilled(&mut buckets, principal, direction, rate);
        let after = b.tokens - bytes as f64;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / rate as f64)
        };
        if wait > QUEUE_MAX {
            return Err(OverQuota {
                rate_bytes_per_sec: rate,
                wait,
            });
        }
        b.tokens = after;
        Ok(wait)
    }

    /// Settles a reservation once the work is done: what it did not use goes back to the
    /// bucket, and what it used beyond it (a fetch's first batch may be larger) is charged.
    pub fn settle(&self, principal: &str, direction: Direction, reserved: u64, used: u64) {
        let rate = self.rate(principal, direction);
        if rate == 0 || reserved == used {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = Self::refilled(&mut buckets, principal, direction, rate);
        b.tokens = (b.tokens + reserved as f64 - used as f64).min(rate as f64);
    }

    /// The most bytes one fetch of `principal` may answer: one second of its fetch rate (at
    /// least 64 KiB); None without a fetch quota.
    pub fn fetch_cap(&self, principal: &str) -> Option<u64> {
        match self.rate(principal, Direction::Fetch) {
            0 => None,
            rate => Some(rate.max(FETCH_CAP_MIN)),
        }
    }

    /// The principal's bucket, refilled for the time since it was last touched (it holds at
    /// most one second of its rate).
    fn refilled<'a>(
        buckets: &'a mut HashMap<(String, Direction), Bucket>,
        principal: &str,
        direction: Direction,
        rate: u64,
    ) -> &'a mut Bucket {
        let rate = rate as f64;
        let now = Instant::now();
        let b = buckets
            .entry((principal.to_string(), direction))
            .or_insert(Bucket {
                tokens: rate,
                last: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        b
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
        assert_eq!(
            q.reserve("slow", Direction::Produce, 1000),
            Ok(Duration::ZERO)
        );
        let d = q
            .reserve("slow", Direction::Produce, 2000)
            .expect("within the queue");
        assert!(d >= Duration::from_millis(1900), "{d:?}");
        // Parallel reservations queue: the next one waits behind the first.
        let next = q
            .reserve("slow", Direction::Produce, 2000)
            .expect("within the queue");
        assert!(
            next >= d + Duration::from_millis(1900),
            "{next:?} after {d:?}"
        );
        // Beyond the queue's bound: refused, and nothing reserved.
        let over = q
            .reserve("slow", Direction::Produce, 20_000)
            .expect_err("refused");
        assert_eq!(over.rate_bytes_per_sec, 1000);
        let again = q
            .reserve("slow", Direction::Produce, 1)
            .expect("still queued");
        assert!(again <= next + Duration::from_millis(100), "{again:?}");
        assert_eq!(
            q.reserve("slow", Direction::Fetch, 1 << 30),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            q.reserve("fast", Direction::Produce, 1 << 30),
            Ok(Duration::ZERO)
        );
        assert_eq!(q.fetch_cap("slow"), None);
    }
}
