//! `GET /metrics`: the node's counters plus gauges read at scrape time — partition offsets and
//! sizes, group lag, every flow's lag, latency, gaps and checkpoint staleness, certificate
//! expiry. Names and help text are listed in `docs/metrics.md`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AdminState;
use crate::metrics::{expose_counters, Exposition};

type Labels<'a> = Vec<(&'a str, String)>;

pub(super) async fn render(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut x = Exposition::default();
    let node = [
        ("cluster", state.broker.cluster.clone()),
        ("node", state.broker.node_id.to_string()),
    ];
    x.rows(
        "strait_ready",
        "gauge",
        "1 once storage is recovered, the QUIC listener is up and every flow is connected.",
        [(
            node.to_vec(),
            f64::from(u8::from(super::readiness(&state).is_ok())),
        )],
    );
    expose_counters(&state.metrics, &mut x);
    partitions(&state, &mut x);
    groups(&state, &mut x);
    flows(&state, &mut x);
    certificates(&state, &mut x);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        x.finish(),
    )
}

fn partitions(state: &AdminState, x: &mut Exposition) {
    let mut rows: Vec<(Labels<'static>, [f64; 4])> = Vec::new();
    for t in state.broker.topics() {
        for (i, p) in t.partitions.iter().enumerate() {
            let s = p.log.stats();
            rows.push((
                vec![("topic", t.name.to_string()), ("partition", i.to_string())],
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
        x.rows(
            name,
            "gauge",
            help,
            rows.iter().map(|(l, v)| (l.clone(), v[i])),
        );
    }
}

fn groups(state: &AdminState, x: &mut Exposition) {
    let rows = super::group_lags(state)
        .into_iter()
        .map(|(group, topic, partition, lag)| {
            (
                vec![
                    ("group", group),
                    ("topic", topic),
                    ("partition", partition.to_string()),
                ],
                lag as f64,
            )
        });
    x.rows(
        "strait_group_lag_records",
        "gauge",
        "Records between a group's committed offset and the partition's high watermark.",
        rows,
    );
}

fn flows(state: &AdminState, x: &mut Exposition) {
    let now_ms = crate::now_ms();
    let reports = state.flows.list();
    let flow = |r: &strait_mirror::FlowReport| -> Labels<'static> {
        vec![
            ("flow", r.spec.name.clone()),
            ("source_cluster", r.status.source_cluster.clone()),
            ("target_cluster", r.status.target_cluster.clone()),
        ]
    };
    x.rows(
        "strait_mirror_connected",
        "gauge",
        "1 when the flow's last look at its source succeeded.",
        reports
            .iter()
            .map(|r| (flow(r), f64::from(u8::from(r.status.connected)))),
    );
    x.rows(
        "strait_mirror_source_silent_seconds",
        "gauge",
        "Seconds since the flow last reached its source, while it cannot (grows during a partition).",
        reports
            .iter()
            .map(|r| (flow(r), r.status.source_silent_seconds)),
    );
    x.rows("strait_mirror_heartbeat_latency_seconds", "gauge",
        "Time from a heartbeat written on the source to its copy appended on the target (end-to-end replication latency).",
        reports.iter().filter_map(|r| Some((flow(r), r.status.heartbeat?.latency_ms as f64 / 1000.0))));
    x.rows(
        "strait_mirror_checkpoint_staleness_seconds",
        "gauge",
        "Time since the flow last carried group offsets over.",
        reports.iter().filter_map(|r| {
            let at = r.status.checkpoints.as_ref()?.last_sync_ms?;
            Some((flow(r), (now_ms - at).max(0) as f64 / 1000.0))
        }),
    );
    let partition = |r: &strait_mirror::FlowReport, p: &strait_mirror::PartitionStatus| {
        let mut l = flow(r);
        l.push(("topic", p.source_topic.clone()));
        l.push(("partition", p.partition.to_string()));
        l
    };
    type Field = fn(&strait_mirror::PartitionStatus) -> Option<f64>;
    let fields: [(&str, &str, &str, Field); 7] = [
        (
            "strait_mirror_lag_records",
            "gauge",
            "Records on the source not yet on the target.",
            |p| Some(p.lag_records as f64),
        ),
        (
            "strait_mirror_lag_bytes",
            "gauge",
            "Estimated bytes on the source not yet on the target.",
            |p| Some(p.lag_bytes as f64),
        ),
        (
            "strait_mirror_lag_seconds",
            "gauge",
            "Age of the newest copied record while behind; 0 when caught up.",
            |p| Some(p.lag_seconds),
        ),
        (
            "strait_mirror_replication_latency_seconds",
            "gauge",
            "Append on the target minus the record's create time, for the last copied batch.",
            |p| p.replication_latency_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "strait_mirror_records_copied_total",
            "counter",
            "Records copied since the flow started.",
            |p| Some(p.records_copied as f64),
        ),
        (
            "strait_mirror_bytes_copied_total",
            "counter",
            "Batch bytes copied since the flow started.",
            |p| Some(p.bytes_copied as f64),
        ),
        (
            "strait_mirror_gaps_total",
            "counter",
            "Source ranges deleted before they could be copied.",
            |p| Some(p.gaps.len() as f64),
        ),
    ];
    for (name, kind, help, f) in fields {
        x.rows(
            name,
            kind,
            help,
            reports.iter().flat_map(|r| {
                r.status
                    .partitions
                    .iter()
                    .filter_map(move |p| Some((partition(r, p), f(p)?)))
            }),
        );
    }
}

fn certificates(state: &AdminState, x: &mut Exposition) {
    let infos: Vec<_> = state
        .certificates
        .iter()
        .filter_map(|(what, path)| Some((what, path, strait_certs::inspect(path).ok()?)))
        .collect();
    let labels = |what: &String, path: &std::path::PathBuf, subject: &str| {
        vec![
            ("certificate", what.clone()),
            ("file", path.display().to_string()),
            ("subject", subject.to_string()),
        ]
    };
    x.rows(
        "strait_certificate_expiry_seconds",
        "gauge",
        "Seconds until a certificate the node uses expires (negative once expired).",
        infos.iter().map(|(what, path, info)| {
            (
                labels(what, path, &info.subject),
                info.expires_in_seconds as f64,
            )
        }),
    );
    x.rows(
        "strait_certificate_expiring",
        "gauge",
        "1 when a certificate expires within [security] cert_expiry_warning_days: rotate it.",
        infos.iter().map(|(what, path, info)| {
            let soon = info.expires_in_seconds < state.cert_expiry_warning_seconds;
            (labels(what, path, &info.subject), f64::from(u8::from(soon)))
        }),
    );
}
