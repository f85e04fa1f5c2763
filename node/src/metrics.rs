//! What a node counts while it serves (requests, their latency, bytes and records per topic,
//! refused handshakes, live connections), and the Prometheus text format it is exposed in
//! (`/metrics` on the admin listener; names and help in `docs/metrics.md`).
//!
//! Counting costs a few relaxed atomic adds per request; nothing here allocates on the hot
//! path once a topic or request kind has been seen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket latency histogram.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Bytes and records through one topic.
#[derive(Default)]
pub struct TopicIo {
    pub produce_records: AtomicU64,
    pub produce_bytes: AtomicU64,
    pub fetch_records: AtomicU64,
    pub fetch_bytes: AtomicU64,
    pub mirror_append_bytes: AtomicU64,
}

/// A live client connection, for its QUIC statistics.
pub struct LiveConnection {
    pub peer: SocketAddr,
    pub principal: String,
    pub connection: quinn::Connection,
}

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    /// (request kind, succeeded) → count.
    pub requests: DashMap<(&'static str, bool), AtomicU64>,
    pub latency: DashMap<&'static str, Histogram>,
    pub topics: DashMap<String, TopicIo>,
    /// Refused TLS handshakes by reason.
    pub handshake_failures: DashMap<&'static str, AtomicU64>,
    pub connections: DashMap<usize, LiveConnection>,
    /// Security events by name: certificate reloads, connections refused by a limit, …
    pub events: DashMap<&'static str, AtomicU64>,
}

impl Metrics {
    pub fn request(&self, kind: &'static str, ok: bool, took: Duration) {
        self.requests
            .entry((kind, ok))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        self.latency.entry(kind).or_default().observe(took);
    }

    pub fn topic(&self, topic: &str, f: impl FnOnce(&TopicIo)) {
        if let Some(io) = self.topics.get(topic) {
            f(&io);
            return;
        }
        f(&self.topics.entry(topic.to_string()).or_default());
    }

    pub fn event(&self, name: &'static str) {
        self.events
            .entry(name)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .entry(reason)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a TLS handshake was refused, as a bounded label.
pub fn handshake_reason(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("expired") {
        "expired"
    } else if e.contains("notvalidyet") || e.contains("not valid yet") {
        "not_yet_valid"
    } else if e.contains("unknownissuer")
        || e.contains("unknown issuer")
        || e.contains("badsignature")
    {
        "unknown_ca"
    } else if e.contains("revoked") {
        "revoked"
    } else if e.contains("nocertificate")
        || e.contains("no certificate")
        || e.contains("certificate required")
    {
        "no_certificate"
    } else if e.contains("timed out") || e.contains("timeout") {
        "timeout"
    } else {
        "other"
    }
}

/// Prometheus text exposition: one family at a time, samples right after their family.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.out, " {}", value as i64);
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// A whole family from (labels, value) rows.
    pub fn rows<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>,
    ) {
        self.family(name, kind, help);
        for (labels, value) in rows {
            let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &refs, value);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters of `m` (requests, latency, topic I/O, handshakes, connections).
pub fn expose_counters(m: &Metrics, x: &mut Exposition) {
    let requests: BTreeMap<(String, bool), u64> = m
        .requests
        .iter()
        .map(|e| {
            (
                (e.key().0.to_string(), e.key().1),
                e.value().load(Ordering::Relaxed),
            )
        })
        .collect();
    x.rows(
        "strait_requests_total",
        "counter",
        "Requests served, by kind and outcome (ok or error).",
        requests.into_iter().map(|((kind, ok), n)| {
            let outcome = if ok { "ok" } else { "error" };
            (
                vec![("request", kind), ("outcome", outcome.to_string())],
                n as f64,
            )
        }),
    );
    x.family(
        "strait_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its answer, by kind.",
    );
    let mut kinds: Vec<&'static str> = m.latency.iter().map(|e| *e.key()).collect();
    kinds.sort_unstable();
    for kind in kinds {
        let Some(h) = m.latency.get(kind) else {
            continue;
        };
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let le = bound.to_string();
            x.sample(
                "strait_request_duration_seconds_bucket",
                &[("request", kind), ("le", &le)],
                cumulative as f64,
            );
        }
        let count = h.count.load(Ordering::Relaxed) as f64;
        x.sample(
            "strait_request_duration_seconds_bucket",
            &[("request", kind), ("le", "+Inf")],
            count,
        );
        x.sample(
            "strait_request_duration_seconds_sum",
            &[("request", kind)],
            h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        x.sample(
            "strait_request_duration_seconds_count",
            &[("request", kind)],
            count,
        );
    }
    let topics: BTreeMap<String, [u64; 5]> = m
        .topics
        .iter()
        .map(|e| {
            let io = e.value();
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (
                e.key().clone(),
                [
                    l(&io.produce_records),
                    l(&io.produce_bytes),
                    l(&io.fetch_records),
                    l(&io.fetch_bytes),
                    l(&io.mirror_append_bytes),
                ],
            )
        })
        .collect();
    for (i, (name, help)) in [
        (
            "strait_produce_records_total",
            "Records appended by producers, per topic.",
        ),
        (
            "strait_produce_bytes_total",
            "Batch bytes appended by producers, per topic.",
        ),
        (
            "strait_fetch_records_total",
            "Offsets served to fetches (consumers and flows), per topic.",
        ),
        (
            "strait_fetch_bytes_total",
            "Batch bytes served to fetches, per topic.",
        ),
        (
            "strait_mirror_append_bytes_total",
            "Batch bytes appended by mirror flows, per target topic.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        x.rows(
            name,
            "counter",
            help,
            topics
                .iter()
                .map(|(t, v)| (vec![("topic", t.clone())], v[i] as f64)),
        );
    }
    let mut refused: Vec<(&'static str, u64)> = m
        .handshake_failures
        .iter()
        .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
        .collect();
    refused.sort_unstable();
    x.rows(
        "strait_tls_handshake_failures_total",
        "counter",
        "TLS handshakes refused, by reason (no_certificate, unknown_ca, expired, not_yet_valid, revoked, timeout, other).",
        refused.into_iter().map(|(r, n)| (vec![("reason", r.to_string())], n as f64)),
    );
    let mut events: Vec<(&'static str, u64)> = m
        .events
        .iter()
        .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
        .collect();
    events.sort_unstable();
    x.rows(
        "strait_security_events_total",
        "counter",
        "Certificate reloads (cert_reload_ok, cert_reload_failed) and peers cut off by a limit (limit_*), by event.",
        events.into_iter().map(|(r, n)| (vec![("event", r.to_string())], n as f64)),
    );
    x.rows(
        "strait_storage_corruptions_total",
        "counter",
        "Corrupt batches detected in segments, by what was done (truncated: a torn tail past the recovery point was cut; offline: the partition was taken offline).",
        crate::storage::corruption::counts()
            .into_iter()
            .map(|(a, n)| (vec![("action", a.name().to_string())], n as f64)),
    );
    expose_connections(m, x);
}

fn expose_connections(m: &Metrics, x: &mut Exposition) {
    let conns: Vec<(String, String, quinn::ConnectionStats)> = m
        .connections
        .iter()
        .map(|e| {
            (
                e.peer.to_string(),
                e.principal.clone(),
                e.connection.stats(),
            )
        })
        .collect();
    x.rows(
        "strait_connections",
        "gauge",
        "Open client connections.",
        [(vec![], conns.len() as f64)],
    );
    type Field = fn(&quinn::ConnectionStats) -> f64;
    let fields: [(&str, &str, &str, Field); 7] = [
        (
            "strait_quic_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of a connection.",
            |s| s.path.rtt.as_secs_f64(),
        ),
        (
            "strait_quic_cwnd_bytes",
            "gauge",
            "Congestion window of a connection.",
            |s| s.path.cwnd as f64,
        ),
        (
            "strait_quic_lost_packets_total",
            "counter",
            "Packets a connection declared lost.",
            |s| s.path.lost_packets as f64,
        ),
        (
            "strait_quic_lost_bytes_total",
            "counter",
            "Bytes a connection declared lost.",
            |s| s.path.lost_bytes as f64,
        ),
        (
            "strait_quic_congestion_events_total",
            "counter",
            "Congestion events of a connection.",
            |s| s.path.congestion_events as f64,
        ),
        (
            "strait_quic_sent_bytes_total",
            "counter",
            "UDP payload bytes sent on a connection.",
            |s| s.udp_tx.bytes as f64,
        ),
        (
            "strait_quic_received_bytes_total",
            "counter",
            "UDP payload bytes received on a connection.",
            |s| s.udp_rx.bytes as f64,
        ),
    ];
    for (name, kind, help, f) in fields {
        x.rows(
            name,
            kind,
            help,
            conns.iter().map(|(peer, principal, s)| {
                (
                    vec![("peer", peer.clone()), ("principal", principal.clone())],
                    f(s),
                )
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prometheus_text() {
        let m = Metrics::default();
        m.request("produce", true, Duration::from_micros(300));
        m.request("produce", false, Duration::from_millis(30));
        m.topic("orders", |io| {
            io.produce_records.fetch_add(3, Ordering::Relaxed);
        });
        m.handshake_failed(handshake_reason("invalid peer certificate: Expired"));
        let mut x = Exposition::default();
        expose_counters(&m, &mut x);
        x.rows(
            "strait_test",
            "gauge",
            "A \"quoted\" label.",
            [(vec![("topic", "a\"b".to_string())], 1.5)],
        );
        let text = x.finish();
        assert!(
            text.contains("strait_requests_total{request=\"produce\",outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_request_duration_seconds_bucket{request=\"produce\",le=\"0.0005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_request_duration_seconds_bucket{request=\"produce\",le=\"+Inf\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("strait_produce_records_total{topic=\"orders\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("strait_tls_handshake_failures_total{reason=\"expired\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("strait_test{topic=\"a\\\"b\"} 1.5\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE strait_request_duration_seconds histogram\n"));
    }
}
