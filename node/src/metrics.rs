//! What a node counts while it serves (requests, their latency, bytes and records per topic,
//! refused handshakes, live connections), and their exposition through prometheus-client
//! with typed label sets (`/metrics` on the admin listener, OpenMetrics text; names and help
//! in `docs/metrics.md`).
//!
//! Counting costs a few relaxed atomic adds per request; nothing here allocates on the hot
//! path once a topic or request kind has been seen.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Writes one metric family of values read at scrape time through prometheus-client: `name`
/// as the series are named (a counter's ends in `_total`, which the encoder adds back), one
/// sample per typed label set. Whole numbers are written as integers.
pub fn family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    kind: Kind,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let (family_name, metric_type) = match kind {
        Kind::Counter => (
            name.strip_suffix("_total").unwrap_or(name),
            MetricType::Counter,
        ),
        Kind::Gauge => (name, MetricType::Gauge),
    };
    let mut metric = e.encode_descriptor(family_name, help, None, metric_type)?;
    for (labels, value) in rows {
        let sample = metric.encode_family(&labels)?;
        let whole = value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15;
        match (kind, whole) {
            (Kind::Counter, true) => ConstCounter::new(value.max(0.0) as u64).encode(sample)?,
            (Kind::Counter, false) => ConstCounter::new(value).encode(sample)?,
            (Kind::Gauge, true) => ConstGauge::new(value as i64).encode(sample)?,
            (Kind::Gauge, false) => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

/// The node's counters as a prometheus-client collector: read when `/metrics` is scraped.
pub struct Counters(pub std::sync::Arc<Metrics>);

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

impl Collector for Counters {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        expose_counters(&self.0, &mut e)
    }
}

/// Renders collectors as the OpenMetrics text prometheus-client writes (what Prometheus
/// scrapes; it ends with `# EOF`).
pub fn render(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value, escaped as the exposition format requires (`\\`, `\"` and `\n`):
/// group names, principals and file paths may hold any of them, and prometheus-client writes
/// `String` label values as they are.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl From<String> for LabelText {
    fn from(s: String) -> Self {
        LabelText(s)
    }
}

impl From<&str> for LabelText {
    fn from(s: &str) -> Self {
        LabelText(s.to_string())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestOutcome {
    request: LabelText,
    outcome: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestKind {
    request: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    peer: LabelText,
    principal: LabelText,
}

/// The counters of `m` (requests, latency, topic I/O, handshakes, connections).
pub fn expose_counters(m: &Metrics, e: &mut DescriptorEncoder) -> fmt::Result {
    let requests: BTreeMap<(String, bool), u64> = m
        .requests
        .iter()
        .map(|r| {
            (
                (r.key().0.to_string(), r.key().1),
                r.value().load(Ordering::Relaxed),
            )
        })
        .collect();
    family(
        e,
        "strait_requests_total",
        Kind::Counter,
        "Requests served, by kind and outcome (ok or error).",
        requests.into_iter().map(|((request, ok), n)| {
            let outcome = if ok { "ok" } else { "error" }.to_string();
            (
                RequestOutcome {
                    request: request.into(),
                    outcome: outcome.into(),
                },
                n as f64,
            )
        }),
    )?;
    let mut latency = e.encode_descriptor(
        "strait_request_duration_seconds",
        "Time from a request's arrival to its answer, by kind.",
        None,
        MetricType::Histogram,
    )?;
    let mut kinds: Vec<&'static str> = m.latency.iter().map(|r| *r.key()).collect();
    kinds.sort_unstable();
    for kind in kinds {
        let Some(h) = m.latency.get(kind) else {
            continue;
        };
        let count = h.count.load(Ordering::Relaxed);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
            .iter()
            .zip(&h.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let within: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(within)));
        latency
            .encode_family(&RequestKind {
                request: kind.into(),
            })?
            .encode_histogram::<NoLabelSet>(
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                count,
                &buckets,
                None,
            )?;
    }
    let topics: BTreeMap<String, [u64; 5]> = m
        .topics
        .iter()
        .map(|r| {
            let io = r.value();
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (
                r.key().clone(),
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
        family(
            e,
            name,
            Kind::Counter,
            help,
            topics.iter().map(|(t, v)| {
                (
                    TopicLabel {
                        topic: t.as_str().into(),
                    },
                    v[i] as f64,
                )
            }),
        )?;
    }
    let mut refused: Vec<(&'static str, u64)> = m
        .handshake_failures
        .iter()
        .map(|r| (*r.key(), r.value().load(Ordering::Relaxed)))
        .collect();
    refused.sort_unstable();
    family(
        e,
        "strait_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes refused, by reason (no_certificate, unknown_ca, expired, not_yet_valid, revoked, timeout, other).",
        refused.into_iter().map(|(r, n)| (ReasonLabel { reason: r.into() }, n as f64)),
    )?;
    let mut events: Vec<(&'static str, u64)> = m
        .events
        .iter()
        .map(|r| (*r.key(), r.value().load(Ordering::Relaxed)))
        .collect();
    events.sort_unstable();
    family(
        e,
        "strait_security_events_total",
        Kind::Counter,
        "Certificate reloads (cert_reload_ok, cert_reload_failed) and peers cut off by a limit (limit_*), by event.",
        events.into_iter().map(|(r, n)| (EventLabel { event: r.into() }, n as f64)),
    )?;
    family(
        e,
        "strait_storage_corruptions_total",
        Kind::Counter,
        "Corrupt batches detected in segments, by what was done (truncated: a torn tail past the recovery point was cut; offline: the partition was taken offline).",
        crate::storage::corruption::counts()
            .into_iter()
            .map(|(a, n)| (ActionLabel { action: a.name().into() }, n as f64)),
    )?;
    expose_connections(m, e)
}

fn expose_connections(m: &Metrics, e: &mut DescriptorEncoder) -> fmt::Result {
    let conns: Vec<(String, String, quinn::ConnectionStats)> = m
        .connections
        .iter()
        .map(|c| {
            (
                c.peer.to_string(),
                c.principal.clone(),
                c.connection.stats(),
            )
        })
        .collect();
    family(
        e,
        "strait_connections",
        Kind::Gauge,
        "Open client connections.",
        [(Vec::<(String, String)>::new(), conns.len() as f64)],
    )?;
    type Field = fn(&quinn::ConnectionStats) -> f64;
    let fields: [(&str, Kind, &str, Field); 7] = [
        (
            "strait_quic_rtt_seconds",
            Kind::Gauge,
            "Smoothed round-trip time of a connection.",
            |s| s.path.rtt.as_secs_f64(),
        ),
        (
            "strait_quic_cwnd_bytes",
            Kind::Gauge,
            "Congestion window of a connection.",
            |s| s.path.cwnd as f64,
        ),
        (
            "strait_quic_lost_packets_total",
            Kind::Counter,
            "Packets a connection declared lost.",
            |s| s.path.lost_packets as f64,
        ),
        (
            "strait_quic_lost_bytes_total",
            Kind::Counter,
            "Bytes a connection declared lost.",
            |s| s.path.lost_bytes as f64,
        ),
        (
            "strait_quic_congestion_events_total",
            Kind::Counter,
            "Congestion events of a connection.",
            |s| s.path.congestion_events as f64,
        ),
        (
            "strait_quic_sent_bytes_total",
            Kind::Counter,
            "UDP payload bytes sent on a connection.",
            |s| s.udp_tx.bytes as f64,
        ),
        (
            "strait_quic_received_bytes_total",
            Kind::Counter,
            "UDP payload bytes received on a connection.",
            |s| s.udp_rx.bytes as f64,
        ),
    ];
    for (name, kind, help, f) in fields {
        family(
            e,
            name,
            kind,
            help,
            conns.iter().map(|(peer, principal, s)| {
                (
                    ConnectionLabels {
                        peer: peer.as_str().into(),
                        principal: principal.as_str().into(),
                    },
                    f(s),
                )
            }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Quoted;

    impl Collector for Quoted {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            family(
                &mut e,
                "strait_test",
                Kind::Gauge,
                "A quoted label.",
                [(
                    TopicLabel {
                        topic: "a\"b\\c\nd".into(),
                    },
                    1.5,
                )],
            )
        }
    }

    #[test]
    fn exposition_is_prometheus_text() {
        let m = std::sync::Arc::new(Metrics::default());
        m.request("produce", true, Duration::from_micros(300));
        m.request("produce", false, Duration::from_millis(30));
        m.topic("orders", |io| {
            io.produce_records.fetch_add(3, Ordering::Relaxed);
        });
        m.handshake_failed(handshake_reason("invalid peer certificate: Expired"));
        let text = render(vec![Box::new(Counters(m)), Box::new(Quoted)]);
        for line in [
            "strait_requests_total{request=\"produce\",outcome=\"ok\"} 1\n",
            "strait_request_duration_seconds_bucket{le=\"0.0005\",request=\"produce\"} 1\n",
            "strait_request_duration_seconds_bucket{le=\"+Inf\",request=\"produce\"} 2\n",
            "strait_request_duration_seconds_count{request=\"produce\"} 2\n",
            "strait_produce_records_total{topic=\"orders\"} 3\n",
            "strait_tls_handshake_failures_total{reason=\"expired\"} 1\n",
            "strait_test{topic=\"a\\\"b\\\\c\\nd\"} 1.5\n",
            "# TYPE strait_request_duration_seconds histogram\n",
            "# TYPE strait_requests counter\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
