//! `GET /metrics`: the node's counters plus gauges read at scrape time — partition offsets and
//! sizes, group lag, every flow's lag, latency, gaps and checkpoint staleness, certificate
//! expiry — encoded by prometheus-client with typed label sets. Names and help text are
//! listed in `docs/metrics.md`.

use std::fmt;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};

use super::AdminState;
use crate::metrics::{family, Counters, Kind, LabelText};

pub(super) async fn render(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let text = crate::metrics::render(vec![
        Box::new(Counters(state.metrics.clone())),
        Box::new(NodeGauges(state)),
    ]);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

/// What the node reads at scrape time.
struct NodeGauges(Arc<AdminState>);

impl fmt::Debug for NodeGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeGauges")
    }
}

impl Collector for NodeGauges {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        family(
            &mut e,
            "strait_ready",
            Kind::Gauge,
            "1 once storage is recovered, the QUIC listener is up and every flow is connected.",
            [(
                NodeLabels {
                    cluster: state.broker.cluster.as_str().into(),
                    node: state.broker.node_id.to_string().into(),
                },
                f64::from(u8::from(super::readiness(state).is_ok())),
            )],
        )?;
        controller(state, &mut e)?;
        partitions(state, &mut e)?;
        groups(state, &mut e)?;
        flows(state, &mut e)?;
        certificates(state, &mut e)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    cluster: LabelText,
    node: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    state: LabelText,
}

/// The controller as this node sees it: whether it leads the quorum, the term, how far it
/// applied the metadata log, whether it may take writes, and the cluster's nodes by state.
fn controller(state: &AdminState, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some(c) = &state.controller else {
        return Ok(());
    };
    let d = c.describe();
    let node = || NodeLabels {
        cluster: state.broker.cluster.as_str().into(),
        node: state.broker.node_id.to_string().into(),
    };
    family(
        e,
        "strait_controller_leader",
        Kind::Gauge,
        "1 while this node leads its cluster's controller quorum.",
        [(node(), f64::from(u8::from(d.leader == Some(d.node_id))))],
    )?;
    family(
        e,
        "strait_controller_term",
        Kind::Gauge,
        "The controller quorum's term as this node knows it; each election raises it.",
        [(node(), d.term as f64)],
    )?;
    family(
        e,
        "strait_controller_applied_index",
        Kind::Gauge,
        "The last metadata-log entry this node applied.",
        [(node(), d.applied_index.unwrap_or(0) as f64)],
    )?;
    family(
        e,
        "strait_controller_takes_writes",
        Kind::Gauge,
        "1 while the controller counts this node alive (registered, confirmed within its session timeout); 0: it answers writes with not_leader.",
        [(node(), f64::from(u8::from(c.may_lead().is_ok())))],
    )?;
    let mut by_state = std::collections::BTreeMap::new();
    for n in &d.nodes {
        *by_state.entry(n.state.clone()).or_insert(0u32) += 1;
    }
    family(
        e,
        "strait_controller_nodes",
        Kind::Gauge,
        "The cluster's nodes by state (alive, fenced, unregistered), as this node's metadata shows them.",
        by_state.into_iter().map(|(s, n)| {
            (
                NodeStateLabels {
                    state: s.as_str().into(),
                },
                f64::from(n),
            )
        }),
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: LabelText,
    partition: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: LabelText,
    topic: LabelText,
    partition: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: LabelText,
    source_cluster: LabelText,
    target_cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowPartitionLabels {
    flow: LabelText,
    source_cluster: LabelText,
    target_cluster: LabelText,
    topic: LabelText,
    partition: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: LabelText,
    file: LabelText,
    subject: LabelText,
}

fn partitions(state: &AdminState, e: &mut DescriptorEncoder) -> fmt::Result {
    let mut rows: Vec<(PartitionLabels, [f64; 4])> = Vec::new();
    for t in state.broker.topics() {
        for (i, p) in t.partitions.iter().enumerate() {
            let s = p.log.stats();
            rows.push((
                PartitionLabels {
                    topic: t.name.to_string().into(),
                    partition: i.to_string().into(),
                },
                [
                    s.log_start.0 as f64,
                    s.log_end.0 as f64,
                    s.high_watermark.0 as f64,
                    s.size_bytes as f64,
                ],
            ));
        }
    }
    for (i, (name, help)) in [
        (
            "strait_partition_start_offset",
            "First readable offset of a partition.",
        ),
        (
            "strait_partition_end_offset",
            "Next offset a partition will assign.",
        ),
        (
            "strait_partition_high_watermark",
            "Offset below which consumers may read (durable end under flush=always).",
        ),
        (
            "strait_partition_size_bytes",
            "Bytes of a partition's segments on disk.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        family(
            e,
            name,
            Kind::Gauge,
            help,
            rows.iter().map(|(l, v)| (l.clone(), v[i])),
        )?;
    }
    Ok(())
}

fn groups(state: &AdminState, e: &mut DescriptorEncoder) -> fmt::Result {
    let rows = super::group_lags(state)
        .into_iter()
        .map(|(group, topic, partition, lag)| {
            (
                GroupLabels {
                    group: group.into(),
                    topic: topic.into(),
                    partition: partition.to_string().into(),
                },
                lag as f64,
            )
        });
    family(
        e,
        "strait_group_lag_records",
        Kind::Gauge,
        "Records between a group's committed offset and the partition's high watermark.",
        rows,
    )
}

fn flows(state: &AdminState, e: &mut DescriptorEncoder) -> fmt::Result {
    let now_ms = crate::now_ms();
    let reports = state.flows.list();
    let flow = |r: &strait_mirror::FlowReport| FlowLabels {
        flow: r.spec.name.as_str().into(),
        source_cluster: r.status.source_cluster.as_str().into(),
        target_cluster: r.status.target_cluster.as_str().into(),
    };
    family(
        e,
        "strait_mirror_connected",
        Kind::Gauge,
        "1 when the flow's last look at its source succeeded.",
        reports
            .iter()
            .map(|r| (flow(r), f64::from(u8::from(r.status.connected)))),
    )?;
    family(
        e,
        "strait_mirror_source_silent_seconds",
        Kind::Gauge,
        "Seconds since the flow last reached its source, while it cannot (grows during a partition).",
        reports
            .iter()
            .map(|r| (flow(r), r.status.source_silent_seconds)),
    )?;
    family(
        e,
        "strait_mirror_heartbeat_latency_seconds",
        Kind::Gauge,
        "Time from a heartbeat written on the source to its copy appended on the target (end-to-end replication latency).",
        reports
            .iter()
            .filter_map(|r| Some((flow(r), r.status.heartbeat?.latency_ms as f64 / 1000.0))),
    )?;
    family(
        e,
        "strait_mirror_checkpoint_staleness_seconds",
        Kind::Gauge,
        "Time since the flow last carried group offsets over.",
        reports.iter().filter_map(|r| {
            let at = r.status.checkpoints.as_ref()?.last_sync_ms?;
            Some((flow(r), (now_ms - at).max(0) as f64 / 1000.0))
        }),
    )?;
    let partition =
        |r: &strait_mirror::FlowReport, p: &strait_mirror::PartitionStatus| FlowPartitionLabels {
            flow: r.spec.name.as_str().into(),
            source_cluster: r.status.source_cluster.as_str().into(),
            target_cluster: r.status.target_cluster.as_str().into(),
            topic: p.source_topic.as_str().into(),
            partition: p.partition.to_string().into(),
        };
    type Field = fn(&strait_mirror::PartitionStatus) -> Option<f64>;
    let fields: [(&str, Kind, &str, Field); 7] = [
        (
            "strait_mirror_lag_records",
            Kind::Gauge,
            "Records on the source not yet on the target.",
            |p| Some(p.lag_records as f64),
        ),
        (
            "strait_mirror_lag_bytes",
            Kind::Gauge,
            "Estimated bytes on the source not yet on the target.",
            |p| Some(p.lag_bytes as f64),
        ),
        (
            "strait_mirror_lag_seconds",
            Kind::Gauge,
            "Age of the newest copied record while behind; 0 when caught up.",
            |p| Some(p.lag_seconds),
        ),
        (
            "strait_mirror_replication_latency_seconds",
            Kind::Gauge,
            "Append on the target minus the record's create time, for the last copied batch.",
            |p| p.replication_latency_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "strait_mirror_records_copied_total",
            Kind::Counter,
            "Records copied since the flow started.",
            |p| Some(p.records_copied as f64),
        ),
        (
            "strait_mirror_bytes_copied_total",
            Kind::Counter,
            "Batch bytes copied since the flow started.",
            |p| Some(p.bytes_copied as f64),
        ),
        (
            "strait_mirror_gaps_total",
            Kind::Counter,
            "Source ranges deleted before they could be copied.",
            |p| Some(p.gaps.len() as f64),
        ),
    ];
    for (name, kind, help, f) in fields {
        family(
            e,
            name,
            kind,
            help,
            reports.iter().flat_map(|r| {
                r.status
                    .partitions
                    .iter()
                    .filter_map(move |p| Some((partition(r, p), f(p)?)))
            }),
        )?;
    }
    Ok(())
}

fn certificates(state: &AdminState, e: &mut DescriptorEncoder) -> fmt::Result {
    let infos: Vec<_> = state
        .certificates
        .iter()
        .filter_map(|(what, path)| Some((what, path, strait_certs::inspect(path).ok()?)))
        .collect();
    let labels = |what: &String, path: &std::path::PathBuf, subject: &str| CertificateLabels {
        certificate: what.as_str().into(),
        file: path.display().to_string().into(),
        subject: subject.into(),
    };
    family(
        e,
        "strait_certificate_expiry_seconds",
        Kind::Gauge,
        "Seconds until a certificate the node uses expires (negative once expired).",
        infos.iter().map(|(what, path, info)| {
            (
                labels(what, path, &info.subject),
                info.expires_in_seconds as f64,
            )
        }),
    )?;
    family(
        e,
        "strait_certificate_expiring",
        Kind::Gauge,
        "1 when a certificate expires within [security] cert_expiry_warning_days: rotate it.",
        infos.iter().map(|(what, path, info)| {
            let soon = info.expires_in_seconds < state.cert_expiry_warning_seconds;
            (labels(what, path, &info.subject), f64::from(u8::from(soon)))
        }),
    )
}
