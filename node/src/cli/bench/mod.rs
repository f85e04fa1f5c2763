//! `strait bench log|produce|consume`: figures with same-run baselines, reported as ratios.
//!
//! Machines are noisy, so every figure is printed next to a baseline measured in the same run on
//! the same machine: a raw sequential disk write, a raw `write + fdatasync` loop, one raw QUIC
//! stream with the node's TLS setup, and a raw QUIC request/response.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde_json::{json, Value};
use strait_certs::Role;
use strait_node::broker::Broker;
use strait_node::server::{ListenConfig, Server};
use strait_node::storage::{LogConfig, PartitionLog};
use strait_protocol::client::{
    Admin, Client, ClientOptions, Consumer, ConsumerConfig, Producer, ProducerConfig,
};
use strait_protocol::transport::{transport_config, TransportLimits};
use strait_protocol::{Acks, BatchBuilder, Compression, OffsetSpec, RecordBatch};

mod controller;
mod kafka;
mod progress;
mod storm;

use progress::Phase;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The partition log against raw disk writes.
    Log(LogArgs),
    /// Producing to an in-process node over QUIC against raw QUIC and raw disk.
    Produce(NetArgs),
    /// Consuming from an in-process node over QUIC against raw QUIC and raw disk.
    Consume(NetArgs),
    /// A mirror flow between two in-process clusters against single-node produce throughput.
    Mirror(NetArgs),
    /// A mirror flow through the UDP impairment proxy: catch-up over a clean proxy against the
    /// same over a long, lossy link, per congestion controller, whole and once the first
    /// quarter of the backlog arrived (steady).
    Wan(WanArgs),
    /// This machine's raw ceilings, which every other figure is quoted against: one QUIC
    /// stream with the node's TLS, one TCP + TLS stream, sequential disk writes with and
    /// without fdatasync.
    Baseline(BaselineArgs),
    /// Single-record produce round trips on one connection, quiet and then while other
    /// connections storm the node with 32 MiB fetches and large produces (p99 ratio).
    Storm(storm::StormArgs),
    /// Three controller voters and two learners: a metadata change until every voter and
    /// every node applied it (p50, p99) against one fdatasync, then elections (p50, p99).
    Controller(controller::ControllerArgs),
    /// librdkafka (kcat) producing and consuming through the Kafka listener against Strait's
    /// own client over QUIC, a raw QUIC stream and a raw TCP + TLS stream.
    Kafka(kafka::KafkaBenchArgs),
}

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Directory on the disk to measure (a temporary subdirectory is made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// MiB written by each disk run and sent over the QUIC stream.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct WanArgs {
    /// MiB of 1 KiB records in each backlog the flow catches up on (large enough that the
    /// controller's start-up over a long RTT is a small part of the time).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Longest a copy runs; the rate is then what was copied so far.
    #[arg(long, default_value_t = 60)]
    seconds_max: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Round-trip time of the impaired link.
    #[arg(long, default_value_t = 150)]
    rtt_ms: u64,
    /// Fraction of datagrams dropped on the impaired link, each way.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// The link's bandwidth in MB/s, in both runs (a capacity, not an impairment: the clear
    /// run has it too); 0 for none, when the proxy's own forwarding speed is the limit.
    #[arg(long, default_value_t = 0)]
    link_mb_s: u64,
    /// QUIC stream receive window in MiB (`[limits] stream_window_bytes`); 0 for the default.
    #[arg(long, default_value_t = 0)]
    stream_window_mib: u32,
    /// QUIC connection receive window in MiB (`connection_window_bytes`); 0 for the default.
    #[arg(long, default_value_t = 0)]
    connection_window_mib: u32,
    /// The flow's `fetch_kb`: the size of a streaming fetch's frames on short paths, and
    /// half the credit each partition's stream starts with (it then grows with the link).
    #[arg(long, default_value_t = 32 << 10)]
    fetch_kb: u32,
    /// Most MiB the flow holds fetched but not yet appended (`in_flight_mb`).
    #[arg(long, default_value_t = 512)]
    in_flight_mb: u32,
    /// Congestion controllers of the source node to compare (comma separated).
    #[arg(long, default_value = "adaptive,bbr,cubic", value_delimiter = ',')]
    congestion: Vec<strait_protocol::transport::Congestion>,
    /// Run the nodes and the flow exactly as they run with no settings at all (the node's
    /// default congestion controller, QUIC windows, and the flow's default fetch size and
    /// in-flight budget), overriding the tuned values above.
    #[arg(long)]
    defaults: bool,
    /// Directory for the nodes' data and certificates (a temporary subdirectory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Directory on the disk to measure (a temporary subdirectory is made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// MiB written by the raw and `flush = os` runs.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// MiB written by each `flush = always` run.
    #[arg(long, default_value_t = 256)]
    always_mib: u64,
    /// MiB of unflushed tail for the recovery run.
    #[arg(long, default_value_t = 1024)]
    recovery_mib: u64,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct NetArgs {
    /// Records produced (and consumed or mirrored).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Acknowledgement of the measured producer: none, leader or all.
    #[arg(long, default_value = "leader")]
    acks: Acks,
    /// Directory for the node's data and certificates (a temporary subdirectory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Producer batch size in KiB.
    #[arg(long, default_value_t = 1024)]
    batch_kib: usize,
    /// Produce requests in flight per partition. Above 1, requests travel on separate streams
    /// and may reach the node out of order; idempotence then retries them into order.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Consume as a group with 1, 2 and 4 members (bench consume).
    #[arg(long)]
    group: bool,
    /// bench mirror: run the flow inside the target node (`gateway`, as flows declared in a
    /// node config run) or as a separate client of both clusters (`standalone`).
    #[arg(long, default_value = "gateway")]
    mirror_mode: String,
    /// bench mirror: most KiB one fetch of the flow may return (the flow's `fetch_kb`).
    #[arg(long, default_value_t = 4096)]
    fetch_kb: u32,
    /// bench mirror: the flow's in-flight budget in MiB (`in_flight_mb`).
    #[arg(long, default_value_t = 64)]
    in_flight_mb: u32,
    /// Single-record round trips measured for latency.
    #[arg(long, default_value_t = 2000)]
    round_trips: u32,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
    /// The benchmark topic.
    #[arg(skip = String::from("bench"))]
    topic: String,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => {
            let json = args.json;
            let report = tokio::task::spawn_blocking(move || bench_log(&args)).await??;
            print_report("log", &report, json);
        }
        BenchCommand::Produce(args) => {
            let report = bench_net(&args, false).await?;
            print_report("produce", &report, args.json);
        }
        BenchCommand::Consume(args) => {
            let report = bench_net(&args, true).await?;
            print_report("consume", &report, args.json);
        }
        BenchCommand::Mirror(args) => {
            let report = bench_mirror(&args).await?;
            print_report("mirror", &report, args.json);
        }
        BenchCommand::Wan(args) => {
            let report = bench_wan(&args).await?;
            print_report("wan", &report, args.json);
        }
        BenchCommand::Baseline(args) => {
            let report = bench_baseline(&args).await?;
            print_report("baseline", &report, args.json);
        }
        BenchCommand::Storm(args) => {
            let report = storm::bench_storm(&args).await?;
            print_report("storm", &report, args.json);
        }
        BenchCommand::Controller(args) => {
            let report = controller::bench_controller(&args).await?;
            print_report("controller", &report, args.json);
        }
        BenchCommand::Kafka(args) => {
            let report = kafka::bench_kafka(&args).await?;
            print_report("kafka", &report, args.json);
        }
    }
    Ok(())
}

async fn bench_baseline(args: &BaselineArgs) -> anyhow::Result<Value> {
    let rig = Rig::start(&args.dir).await?;
    let bytes = args.mib.max(1) * MIB;
    let path = rig.certs.join("raw-disk");
    let (p, b) = (path.clone(), bytes);
    let plain = tokio::task::spawn_blocking(move || raw_write(&p, b, 64 << 10, true)).await??;
    let (p, b) = (path.clone(), bytes);
    let synced = tokio::task::spawn_blocking(move || raw_fdatasync_loop(&p, b)).await??;
    let (quic_mb_s, rtt_p50_us) = raw_quic(&rig, bytes).await?;
    let tcp_tls_mb_s = kafka::raw_tcp_tls(&rig, bytes).await?;
    rig.server.shutdown().await;
    let syncs = bytes.div_ceil(256 << 10);
    Ok(json!({
        "mib": args.mib,
        "raw_disk_write_mb_s": round(mbps(bytes, plain)),
        "raw_disk_write_fdatasync_256k_mb_s": round(mbps(bytes, synced)),
        "raw_fdatasync_per_s": round(syncs as f64 / synced.as_secs_f64().max(1e-9)),
        "raw_quic_stream_mb_s": round(quic_mb_s),
        "raw_quic_round_trip_p50_us": rtt_p50_us,
        "raw_tcp_tls_stream_mb_s": round(tcp_tls_mb_s),
    }))
}

fn print_report(name: &str, report: &Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    println!("bench {name}");
    if let Value::Object(map) = report {
        for (k, v) in map {
            println!("  {k:<40} {v}");
        }
    }
}

const MIB: u64 = 1 << 20;

/// 1 KiB records in ~64 KiB batches; a pool of distinct batches reused round-robin so the run
/// measures the log, not memory allocation.
fn batch_pool(count: usize) -> Vec<RecordBatch> {
    (0..count)
        .map(|n| {
            let mut b = BatchBuilder::new(Compression::None);
            let value = vec![(n % 251) as u8; 1024];
            for _ in 0..64 {
                b.push(strait_node::now_ms(), None, Some(&value), &[]);
            }
            b.finish()
        })
        .collect()
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Sequential `write` of `bytes` in chunks of `chunk`, then one fsync.
/// Writes `bytes` sequentially; with `sync`, the time includes the final fsync (the disk),
/// without it only the copy into the page cache (the ceiling of a `flush = os` append).
fn raw_write(path: &Path, bytes: u64, chunk: usize, sync: bool) -> anyhow::Result<Duration> {
    let buf = vec![7u8; chunk];
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let phase = Phase::start("raw disk", bytes, "bytes");
    let start = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&buf)?;
        written += chunk as u64;
        if written % (64 * MIB) == 0 {
            phase.at(written);
        }
    }
    if sync {
        f.sync_all()?;
    }
    let t = start.elapsed();
    phase.finish();
    std::fs::remove_file(path)?;
    Ok(t)
}

/// `write` of 256 KiB then `fdatasync`, repeated.
fn raw_fdatasync_loop(path: &Path, bytes: u64) -> anyhow::Result<Duration> {
    let buf = vec![9u8; 256 << 10];
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let phase = Phase::start("raw fdatasync", bytes, "bytes");
    let start = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&buf)?;
        f.sync_data()?;
        written += buf.len() as u64;
        if written % (16 * MIB) == 0 {
            phase.at(written);
        }
    }
    let t = start.elapsed();
    phase.finish();
    std::fs::remove_file(path)?;
    Ok(t)
}

fn append_all(
    log: &Arc<PartitionLog>,
    pool: &[RecordBatch],
    bytes: u64,
    appenders: usize,
) -> anyhow::Result<Duration> {
    let per = bytes / appenders as u64;
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..appenders)
            .map(|a| {
                let log = log.clone();
                s.spawn(move || -> anyhow::Result<()> {
                    let mut written = 0u64;
                    let mut i = a;
                    while written < per {
                        let b = pool[i % pool.len()].clone();
                        written += b.size_bytes() as u64;
                        log.append(b, strait_node::now_ms())?;
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an appender panicked"))??;
        }
        Ok(())
    })?;
    log.flush(strait_node::now_ms())?;
    Ok(start.elapsed())
}

fn open_log(dir: &Path, settings: &[&str]) -> anyhow::Result<Arc<PartitionLog>> {
    let config = LogConfig::default().with_settings(settings.iter().copied())?;
    Ok(Arc::new(
        PartitionLog::open(dir, "bench/0", config, strait_node::now_ms())?.0,
    ))
}

fn bench_log(args: &LogArgs) -> anyhow::Result<Value> {
    let root = tempfile::Builder::new()
        .prefix(".strait-bench-")
        .tempdir_in(&args.dir)
        .context("cannot make a bench directory")?;
    let pool = batch_pool(64);
    let batch_bytes = pool[0].size_bytes();
    let bytes = args.mib * MIB;
    let raw = raw_write(&root.path().join("raw"), bytes, batch_bytes, true)?;
    let os = append_all(
        &open_log(&root.path().join("os"), &["flush=os"])?,
        &pool,
        bytes,
        1,
    )?;
    std::fs::remove_dir_all(root.path().join("os"))?;
    let always_bytes = args.always_mib * MIB;
    let raw_sync = raw_fdatasync_loop(&root.path().join("rawsync"), always_bytes)?;
    let mut report = serde_json::Map::new();
    report.insert("record_bytes".into(), json!(1024));
    report.insert("batch_bytes".into(), json!(batch_bytes));
    report.insert("raw_write_mb_s".into(), json!(round(mbps(bytes, raw))));
    report.insert("log_os_mb_s".into(), json!(round(mbps(bytes, os))));
    report.insert(
        "log_os_ratio".into(),
        json!(round(raw.as_secs_f64() / os.as_secs_f64())),
    );
    report.insert(
        "raw_write_fdatasync_256k_mb_s".into(),
        json!(round(mbps(always_bytes, raw_sync))),
    );
    for appenders in [1usize, 8, 64] {
        let dir = root.path().join(format!("always{appenders}"));
        let t = append_all(
            &open_log(&dir, &["flush=always"])?,
            &pool,
            always_bytes,
            appenders,
        )?;
        std::fs::remove_dir_all(&dir)?;
        report.insert(
            format!("log_always_{appenders}_appenders_mb_s"),
            json!(round(mbps(always_bytes, t))),
        );
        report.insert(
            format!("log_always_{appenders}_appenders_ratio"),
            json!(round(raw_sync.as_secs_f64() / t.as_secs_f64())),
        );
    }
    let (seconds, scanned, scanned_segments, segments) = bench_recovery(
        &root.path().join("recovery"),
        &pool,
        args.recovery_mib * MIB,
    )?;
    report.insert(
        "recovery_unflushed_tail_mib".into(),
        json!(args.recovery_mib),
    );
    report.insert("recovery_seconds".into(), json!(round(seconds)));
    report.insert("recovery_bytes_scanned".into(), json!(scanned));
    report.insert(
        "recovery_segments_scanned".into(),
        json!(format!("{scanned_segments} of {segments}")),
    );
    Ok(Value::Object(report))
}

/// Writes 256 MiB that are synced and sealed, then an unflushed tail, "crashes" (drops the log
/// without closing it) and times the reopen.
fn bench_recovery(
    dir: &Path,
    pool: &[RecordBatch],
    tail: u64,
) -> anyhow::Result<(f64, u64, usize, usize)> {
    let settings = ["flush=os", "segment.bytes=134217728"];
    let log = open_log(dir, &settings)?;
    append_all(&log, pool, 256 * MIB, 1)?;
    log.flush_sealed(strait_node::now_ms())?;
    let mut written = 0;
    let mut i = 0;
    while written < tail {
        let b = pool[i % pool.len()].clone();
        written += b.size_bytes() as u64;
        log.append(b, strait_node::now_ms())?;
        i += 1;
    }
    drop(log);
    let config = LogConfig::default().with_settings(settings)?;
    let start = Instant::now();
    let (_, report) = PartitionLog::open(dir, "bench/0", config, strait_node::now_ms())?;
    Ok((
        start.elapsed().as_secs_f64(),
        report.bytes_scanned,
        report.segments_scanned,
        report.segments,
    ))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Certificates and an in-process node on loopback.
struct Rig {
    _root: tempfile::TempDir,
    certs: PathBuf,
    server: Server,
    broker: Arc<Broker>,
}

impl Rig {
    async fn start(dir: &Path) -> anyhow::Result<Rig> {
        Rig::start_cluster(dir, "bench", None).await
    }

    /// A node of cluster `cluster`; with `certs`, it shares that directory's CA and identities.
    async fn start_cluster(dir: &Path, cluster: &str, certs: Option<&Path>) -> anyhow::Result<Rig> {
        Rig::start_with(dir, cluster, certs, TransportLimits::default()).await
    }

    /// Like [`Rig::start_cluster`], with the node's QUIC settings.
    async fn start_with(
        dir: &Path,
        cluster: &str,
        certs: Option<&Path>,
        transport: TransportLimits,
    ) -> anyhow::Result<Rig> {
        let root = tempfile::Builder::new()
            .prefix(".strait-bench-")
            .tempdir_in(dir)?;
        let certs = match certs {
            Some(c) => c.to_path_buf(),
            None => {
                let certs = root.path().join("certs");
                strait_certs::init_ca(&certs)?;
                strait_certs::issue(&certs, "node-1", Role::Node, &[])?;
                strait_certs::issue(&certs, "bench", Role::Client, &[])?;
                strait_certs::issue(&certs, "bench-mirror", Role::Mirror, &[])?;
                certs
            }
        };
        let broker = Broker::open(
            cluster,
            strait_protocol::NodeId(1),
            &root.path().join("data"),
            LogConfig::default(),
        )?;
        let config = ListenConfig {
            transport,
            ..ListenConfig::local(
                certs.join("ca.crt"),
                certs.join("node-1.crt"),
                certs.join("node-1.key"),
            )
        };
        let server = Server::start(broker.clone(), config)?;
        Ok(Rig {
            _root: root,
            certs,
            server,
            broker,
        })
    }

    fn client_tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        Ok(strait_certs::client_config(
            &self.certs.join("ca.crt"),
            &self.certs.join("bench.crt"),
            &self.certs.join("bench.key"),
        )?)
    }

    fn client(&self) -> anyhow::Result<Arc<Client>> {
        Ok(Client::new(ClientOptions::new(
            vec![self.server.local_addr.to_string()],
            self.client_tls()?,
        )))
    }
}

async fn bench_net(args: &NetArgs, consume: bool) -> anyhow::Result<Value> {
    let rig = Rig::start(&args.dir).await?;
    let total = args.records * args.record_size as u64;
    let disk = raw_write(
        &rig.certs.join("raw-disk"),
        total.min(1 << 30),
        64 << 10,
        true,
    )?;
    let disk_mb_s = mbps(total.min(1 << 30), disk);
    let (quic_mb_s, quic_rtt_p50_us) = raw_quic(&rig, total.min(1 << 30)).await?;
    let client = rig.client()?;
    let admin = Admin::new(client.clone());
    admin.create_topic("bench", args.partitions, vec![]).await?;
    let config = ProducerConfig {
        acks: args.acks,
        linger_ms: 5,
        batch_bytes: args.batch_kib << 10,
        in_flight_per_partition: args.in_flight,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let value = vec![b'x'; args.record_size];
    // Warm-up: connections, segments, page cache.
    for _ in 0..1000 {
        producer
            .send("bench", None, None, Some(&value), &[])
            .await?;
    }
    producer.flush().await;
    let produce_time = produce_all(&producer, args, &value).await?;
    let mut report = serde_json::Map::new();
    report.insert("records".into(), json!(args.records));
    report.insert("record_bytes".into(), json!(args.record_size));
    report.insert("partitions".into(), json!(args.partitions));
    report.insert("raw_disk_write_mb_s".into(), json!(round(disk_mb_s)));
    report.insert("raw_quic_stream_mb_s".into(), json!(round(quic_mb_s)));
    let lower = disk_mb_s.min(quic_mb_s);
    if consume {
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                partition_bytes_max: 4 << 20,
                ..Default::default()
            },
        );
        consumer.assign_topic("bench", OffsetSpec::Earliest).await?;
        let wanted = args.records + 1000;
        let phase = Phase::start("consume", wanted, "records");
        let start = Instant::now();
        let mut seen = 0;
        while seen < wanted {
            let records = consumer.poll(Duration::from_secs(5)).await?;
            anyhow::ensure!(
                !records.is_empty(),
                "consumer stalled at {seen} of {wanted}"
            );
            seen += records.len() as u64;
            phase.at(seen);
        }
        let t = start.elapsed();
        phase.finish();
        let mb_s = mbps(seen * args.record_size as u64, t);
        report.insert(
            "consume_records_per_s".into(),
            json!((seen as f64 / t.as_secs_f64()) as u64),
        );
        report.insert("consume_mb_s".into(), json!(round(mb_s)));
        report.insert(
            "consume_ratio_to_lower_raw".into(),
            json!(round(mb_s / lower)),
        );
        if args.group {
            for members in [1usize, 2, 4] {
                let (records_per_s, mb_s) =
                    group_consume(&rig, members, wanted, args.record_size).await?;
                report.insert(
                    format!("group_{members}_members_records_per_s"),
                    json!(records_per_s as u64),
                );
                report.insert(format!("group_{members}_members_mb_s"), json!(round(mb_s)));
            }
        }
    } else {
        let mb_s = mbps(total, produce_time);
        report.insert(
            "produce_records_per_s".into(),
            json!((args.records as f64 / produce_time.as_secs_f64()) as u64),
        );
        report.insert("produce_mb_s".into(), json!(round(mb_s)));
        report.insert(
            "produce_ratio_to_lower_raw".into(),
            json!(round(mb_s / lower)),
        );
        let lat = round_trips(&client, args.round_trips, args.record_size).await?;
        report.insert(
            "produce_latency_p50_us".into(),
            json!(lat.value_at_quantile(0.5)),
        );
        report.insert(
            "produce_latency_p99_us".into(),
            json!(lat.value_at_quantile(0.99)),
        );
        report.insert(
            "produce_latency_p999_us".into(),
            json!(lat.value_at_quantile(0.999)),
        );
        report.insert("produce_latency_max_us".into(), json!(lat.max()));
        report.insert("raw_quic_round_trip_p50_us".into(), json!(quic_rtt_p50_us));
        report.insert(
            "produce_p50_ratio_to_raw_round_trip".into(),
            json!(round(
                lat.value_at_quantile(0.5) as f64 / quic_rtt_p50_us.max(1) as f64
            )),
        );
    }
    rig.server.shutdown().await;
    let broker = rig.broker.clone();
    tokio::task::spawn_blocking(move || broker.close()).await?;
    Ok(Value::Object(report))
}

/// Consumes every record of `bench` with a fresh group of `members` consumers; the clock runs
/// from the first subscribe to the last record, rebalances included.
async fn group_consume(
    rig: &Rig,
    members: usize,
    wanted: u64,
    record_size: usize,
) -> anyhow::Result<(f64, f64)> {
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let group = format!("bench-{members}-{}", strait_node::now_ms());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..members {
        let client = rig.client()?;
        let seen = seen.clone();
        let group = group.clone();
        tasks.spawn(async move {
            let config = ConsumerConfig {
                partition_bytes_max: 4 << 20,
                ..Default::default()
            };
            let mut consumer = Consumer::new(client, config);
            let group_config = strait_protocol::client::GroupConfig {
                auto_commit_interval_ms: None,
                ..strait_protocol::client::GroupConfig::new(&group)
            };
            consumer.subscribe(&["bench"], group_config);
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.load(std::sync::atomic::Ordering::Relaxed) < wanted
                && Instant::now() < deadline
            {
                let n = consumer.poll(Duration::from_millis(200)).await?.len() as u64;
                seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            consumer.close().await?;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let t = start.elapsed();
    let n = seen.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(n >= wanted, "the group consumed {n} of {wanted} records");
    Ok((n as f64 / t.as_secs_f64(), mbps(n * record_size as u64, t)))
}

/// Produces a backlog on `east`, times a flow copying it to `west` (catch-up), then measures
/// end-to-end latency (produce on the source → readable on the target) with the flow live.
async fn bench_mirror(args: &NetArgs) -> anyhow::Result<Value> {
    let east = Rig::start_cluster(&args.dir, "east", None).await?;
    let west = Rig::start_cluster(&args.dir, "west", Some(&east.certs)).await?;
    let source = east.client()?;
    let target = west.client()?;
    Admin::new(source.clone())
        .create_topic("bench", args.partitions, vec![])
        .await?;
    let producer = Producer::new(
        source.clone(),
        ProducerConfig {
            batch_bytes: args.batch_kib << 10,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b'm'; args.record_size];
    let produce_t = produce_all(&producer, args, &value).await?;
    let total = args.records * args.record_size as u64;
    let ends = |client: Arc<Client>, topic: &'static str, partitions: u32| async move {
        let admin = Admin::new(client);
        let mut sum = 0;
        for p in 0..partitions {
            sum += admin
                .list_offset(topic, p, OffsetSpec::Latest)
                .await
                .map(|(o, _)| o)
                .unwrap_or(0);
        }
        sum
    };
    let flow_target: Arc<dyn strait_mirror::Endpoint> = match args.mirror_mode.as_str() {
        "gateway" => west.server.local_endpoint("bench-gateway"),
        "standalone" => {
            let tls = strait_certs::client_config(
                &east.certs.join("ca.crt"),
                &east.certs.join("bench-mirror.crt"),
                &east.certs.join("bench-mirror.key"),
            )?;
            Client::new(ClientOptions::new(
                vec![west.server.local_addr.to_string()],
                tls,
            ))
        }
        other => anyhow::bail!("unknown --mirror-mode {other:?}; use gateway or standalone"),
    };
    let mut config = strait_mirror::FlowConfig::new("bench", regex::Regex::new("^bench$")?);
    config.fetch_bytes_max = args.fetch_kb.clamp(64, 32 << 10) << 10;
    config.in_flight_bytes_max = args.in_flight_mb.clamp(1, 4096) << 20;
    let flow = Arc::new(strait_mirror::MirrorFlow::new(
        config,
        source.clone(),
        flow_target,
    ));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner = {
        let flow = flow.clone();
        tokio::spawn(async move { flow.run(stop).await })
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    while ends(target.clone(), "east.bench", args.partitions).await < args.records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the flow did not catch up within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = start.elapsed();
    let mut hist = Histogram::<u64>::new(3)?;
    let admin = Admin::new(target.clone());
    let single = Producer::new(
        source.clone(),
        ProducerConfig {
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    for _ in 0..args.round_trips.min(500) {
        let t = Instant::now();
        let offset = single
            .send("bench", Some(0), None, Some(&value), &[])
            .await?
            .wait()
            .await?;
        while admin
            .list_offset("east.bench", 0, OffsetSpec::Latest)
            .await?
            .0
            <= offset
        {
            tokio::task::yield_now().await;
        }
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    let _ = stop_tx.send(true);
    let _ = runner.await;
    // The ceiling of the copy's write side in this run: the same bytes into the page cache.
    let path = west.certs.join("raw-page-cache");
    let page_cache_t =
        tokio::task::spawn_blocking(move || raw_write(&path, total, 1 << 20, false)).await??;
    let page_cache_mb_s = mbps(total, page_cache_t);
    let produce_mb_s = mbps(total, produce_t);
    let mirror_mb_s = mbps(total, catch_up);
    let mut report = serde_json::Map::new();
    report.insert("records".into(), json!(args.records));
    report.insert("record_bytes".into(), json!(args.record_size));
    report.insert("partitions".into(), json!(args.partitions));
    report.insert("mirror_mode".into(), json!(args.mirror_mode));
    report.insert("flow_fetch_kb".into(), json!(args.fetch_kb));
    report.insert("flow_in_flight_mb".into(), json!(args.in_flight_mb));
    report.insert(
        "single_node_produce_mb_s".into(),
        json!(round(produce_mb_s)),
    );
    report.insert(
        "mirror_catch_up_records_per_s".into(),
        json!((args.records as f64 / catch_up.as_secs_f64()) as u64),
    );
    report.insert("mirror_catch_up_mb_s".into(), json!(round(mirror_mb_s)));
    report.insert(
        "mirror_ratio_to_produce".into(),
        json!(round(mirror_mb_s / produce_mb_s)),
    );
    report.insert(
        "raw_page_cache_write_mb_s".into(),
        json!(round(page_cache_mb_s)),
    );
    report.insert(
        "mirror_ratio_to_page_cache_write".into(),
        json!(round(mirror_mb_s / page_cache_mb_s)),
    );
    report.insert(
        "end_to_end_latency_p50_us".into(),
        json!(hist.value_at_quantile(0.5)),
    );
    report.insert(
        "end_to_end_latency_p99_us".into(),
        json!(hist.value_at_quantile(0.99)),
    );
    for rig in [&east, &west] {
        rig.server.shutdown().await;
        let broker = rig.broker.clone();
        tokio::task::spawn_blocking(move || broker.close()).await?;
    }
    Ok(Value::Object(report))
}

/// Catch-up of a backlog through the impairment proxy, clean and then over a long lossy link,
/// for each congestion controller of the source node.
async fn bench_wan(args: &WanArgs) -> anyhow::Result<Value> {
    use strait_node::impair::{Impairment, UdpProxy};
    let defaulted;
    let args = if args.defaults {
        let flow = strait_mirror::FlowSpec::new("defaults", Vec::new(), ".*");
        defaulted = WanArgs {
            congestion: vec![TransportLimits::default().congestion],
            stream_window_mib: 0,
            connection_window_mib: 0,
            fetch_kb: flow.fetch_kb,
            in_flight_mb: flow.in_flight_mb,
            dir: args.dir.clone(),
            ..*args
        };
        &defaulted
    } else {
        args
    };
    let records = args.mib.max(1) * MIB / 1024;
    let mut runs = Vec::new();
    for congestion in &args.congestion {
        let transport = wan_transport(args, *congestion);
        let east = Rig::start_with(&args.dir, "east", None, transport).await?;
        let west = Rig::start_with(&args.dir, "west", Some(&east.certs), transport).await?;
        let source = east.client()?;
        let producer = Producer::new(
            source.clone(),
            ProducerConfig {
                batch_bytes: 1 << 20,
                ..ProducerConfig::default()
            },
        );
        let value = vec![b'w'; 1000];
        for topic in ["clear", "lossy"] {
            Admin::new(source.clone())
                .create_topic(topic, args.partitions, vec![])
                .await?;
            for i in 0..records {
                let p = (i % u64::from(args.partitions)) as u32;
                producer
                    .send(topic, Some(p), None, Some(&value), &[])
                    .await?;
            }
        }
        producer.flush().await;
        let proxy = UdpProxy::start(east.server.local_addr).await;
        let through_proxy = || -> anyhow::Result<Arc<Client>> {
            let mut opts = ClientOptions::new(vec![proxy.address.to_string()], east.client_tls()?);
            opts.transport = transport;
            Ok(Client::new(opts))
        };
        let link = Impairment {
            rate_bytes_per_s: (args.link_mb_s > 0).then_some(args.link_mb_s * 1_000_000),
            ..Impairment::default()
        };
        proxy.set(None, link);
        let clear = wan_copy(through_proxy()?, &west, "clear", records, args).await?;
        proxy.set(
            None,
            Impairment {
                delay: Duration::from_millis(args.rtt_ms / 2),
                loss: args.loss,
                ..link
            },
        );
        let before: std::collections::HashSet<usize> = east
            .server
            .metrics()
            .connections
            .iter()
            .map(|c| *c.key())
            .collect();
        let lossy = wan_copy(through_proxy()?, &west, "lossy", records, args).await?;
        let after = sender_stats(&east, &before);
        let (clear_mb_s, lossy_mb_s) = (clear.mb_s(), lossy.mb_s());
        let steady = clear.steady_mb_s().zip(lossy.steady_mb_s());
        runs.push(json!({
            "congestion": format!("{congestion:?}").to_lowercase(),
            "clear_proxy_mb_s": round(clear_mb_s),
            "impaired_mb_s": round(lossy_mb_s),
            "impaired_copied_mib": lossy.records / 1024,
            "impaired_seconds": round(lossy.took.as_secs_f64()),
            "ratio": round(lossy_mb_s / clear_mb_s),
            "clear_steady_mb_s": steady.map(|(c, _)| round(c)),
            "impaired_steady_mb_s": steady.map(|(_, l)| round(l)),
            "steady_ratio": steady.map(|(c, l)| round(l / c)),
            "impaired_sender": {
                "lost_packets": after.lost_packets,
                "dropped_by_proxy": proxy.counts().1,
                "congestion_events": after.congestion_events,
                "sent_packets": after.sent_packets,
                "cwnd_bytes_at_end": after.cwnd,
            },
        }));
        for rig in [&east, &west] {
            rig.server.shutdown().await;
            let broker = rig.broker.clone();
            tokio::task::spawn_blocking(move || broker.close()).await?;
        }
    }
    Ok(json!({
        "defaults": args.defaults,
        "backlog_mib": args.mib,
        "partitions": args.partitions,
        "impaired_link": format!("{} ms RTT, {} % loss each way", args.rtt_ms, args.loss * 100.0),
        "link_mb_s": args.link_mb_s,
        "flow_fetch_kb": args.fetch_kb,
        "flow_in_flight_mb": args.in_flight_mb,
        "stream_window_bytes": wan_transport(args, Default::default()).stream_window_bytes,
        "connection_window_bytes": wan_transport(args, Default::default()).connection_window_bytes,
        "send_window_bytes": wan_transport(args, Default::default()).send_window_bytes,
        "runs": runs,
    }))
}

/// The transport of both ends of the WAN bench: defaults, with the windows asked for.
fn wan_transport(
    args: &WanArgs,
    congestion: strait_protocol::transport::Congestion,
) -> TransportLimits {
    let d = TransportLimits::default();
    let mib = |m: u32, default: u32| if m == 0 { default } else { m.min(4095) << 20 };
    TransportLimits {
        congestion,
        stream_window_bytes: mib(args.stream_window_mib, d.stream_window_bytes),
        connection_window_bytes: mib(args.connection_window_mib, d.connection_window_bytes),
        ..d
    }
}

/// Totals of what `rig`'s node sent on its connections other than `old` (the source side of
/// a flow).
fn sender_stats(rig: &Rig, old: &std::collections::HashSet<usize>) -> SenderStats {
    let mut total = SenderStats::default();
    for c in rig.server.metrics().connections.iter() {
        if old.contains(c.key()) {
            continue;
        }
        let s = c.connection.stats();
        total.lost_packets += s.path.lost_packets;
        total.congestion_events += s.path.congestion_events;
        total.sent_packets += s.path.sent_packets;
        total.cwnd = total.cwnd.max(s.path.cwnd);
    }
    total
}

#[derive(Default)]
struct SenderStats {
    lost_packets: u64,
    congestion_events: u64,
    sent_packets: u64,
    cwnd: u64,
}

/// Runs a gateway flow into `west` for `topic` until it holds `records` or the time limit
/// passes.
async fn wan_copy(
    source: Arc<Client>,
    west: &Rig,
    topic: &str,
    records: u64,
    args: &WanArgs,
) -> anyhow::Result<WanCopy> {
    let partitions = args.partitions;
    let mut config = strait_mirror::FlowConfig::new(
        &format!("wan-{topic}"),
        regex::Regex::new(&format!("^{topic}$"))?,
    );
    config.fetch_bytes_max = args.fetch_kb.clamp(64, 32 << 10) << 10;
    config.in_flight_bytes_max = args.in_flight_mb.clamp(1, 4095) << 20;
    let flow = Arc::new(strait_mirror::MirrorFlow::new(
        config,
        source,
        west.server.local_endpoint("bench-gateway"),
    ));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner = {
        let flow = flow.clone();
        tokio::spawn(async move { flow.run(stop).await })
    };
    let admin = Admin::new(west.client()?);
    let target = format!("east.{topic}");
    let start = Instant::now();
    let copied;
    // When a quarter of the backlog had arrived: the flow's start and the link's ramp are
    // behind it, so the rest measures the rate it keeps.
    let mut quarter: Option<(u64, Duration)> = None;
    loop {
        let mut sum = 0;
        for p in 0..partitions {
            sum += admin
                .list_offset(&target, p, OffsetSpec::Latest)
                .await
                .map(|(o, _)| o)
                .unwrap_or(0);
        }
        if quarter.is_none() && sum >= records / 4 {
            quarter = Some((sum, start.elapsed()));
        }
        // A loss-bound controller may need hours for the backlog: past the time limit, the
        // rate is what was copied so far.
        if sum >= records || start.elapsed() >= Duration::from_secs(args.seconds_max.max(1)) {
            copied = sum;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    let _ = stop_tx.send(true);
    let _ = runner.await;
    let steady = quarter
        .filter(|(at, when)| copied > *at && took > *when)
        .map(|(at, when)| (copied - at, took - when));
    Ok(WanCopy {
        records: copied,
        took,
        steady,
    })
}

/// What one copy of the WAN bench did: records copied and how long it took from the flow's
/// start, and the records and time after the first quarter of the backlog had arrived.
struct WanCopy {
    records: u64,
    took: Duration,
    steady: Option<(u64, Duration)>,
}

impl WanCopy {
    fn mb_s(&self) -> f64 {
        mbps(self.records * 1024, self.took)
    }

    fn steady_mb_s(&self) -> Option<f64> {
        self.steady
            .map(|(records, took)| mbps(records * 1024, took))
    }
}

/// Sends `args.records` records round-robin over the partitions and waits for every
/// acknowledgement; returns how long that took.
async fn produce_all(
    producer: &Producer,
    args: &NetArgs,
    value: &[u8],
) -> anyhow::Result<Duration> {
    let phase = Phase::start("produce", args.records, "records");
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(args.records as usize);
    for i in 0..args.records {
        let partition = (i % u64::from(args.partitions)) as u32;
        deliveries.push(
            producer
                .send(&args.topic, Some(partition), None, Some(value), &[])
                .await?,
        );
        if i % 65_536 == 0 {
            phase.at(i);
        }
    }
    producer.flush().await;
    for d in deliveries {
        d.wait().await?;
    }
    let took = start.elapsed();
    phase.finish();
    Ok(took)
}

/// Single-record produce round trips, one at a time, in microseconds.
async fn round_trips(
    client: &Arc<Client>,
    n: u32,
    record_size: usize,
) -> anyhow::Result<Histogram<u64>> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b'y'; record_size];
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..n + 100 {
        let start = Instant::now();
        let d = producer
            .send("bench", Some(0), None, Some(&value), &[])
            .await?;
        producer.flush().await;
        d.wait().await?;
        if i >= 100 {
            hist.record(start.elapsed().as_micros() as u64)?;
        }
    }
    Ok(hist)
}

/// One raw QUIC stream with the node's TLS setup, and raw request/response round trips.
async fn raw_quic(rig: &Rig, bytes: u64) -> anyhow::Result<(f64, u64)> {
    let tls = strait_certs::server_config(
        &rig.certs.join("ca.crt"),
        &rig.certs.join("node-1.crt"),
        &rig.certs.join("node-1.key"),
    )?;
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server_config.transport_config(transport_config(&TransportLimits::default()));
    let limits = TransportLimits::default();
    let server =
        strait_protocol::transport::endpoint("127.0.0.1:0".parse()?, Some(server_config), &limits)?;
    let addr = server.local_addr()?;
    let sink = tokio::spawn(async move {
        let Some(incoming) = server.accept().await else {
            return;
        };
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut total = 0u64;
                while let Ok(Some(chunk)) = recv.read_chunk(1 << 20, true).await {
                    total += chunk.bytes.len() as u64;
                }
                let _ = send.write_all(&total.to_le_bytes()).await;
                let _ = send.finish();
            });
        }
    });
    let mut endpoint = strait_protocol::transport::endpoint("0.0.0.0:0".parse()?, None, &limits)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(
        Arc::new(rig.client_tls()?),
    )?));
    client_config.transport_config(transport_config(&TransportLimits::default()));
    endpoint.set_default_client_config(client_config);
    let conn = endpoint.connect(addr, "127.0.0.1")?.await?;
    let chunk = Bytes::from(vec![5u8; 1 << 20]);
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut sent = 0;
    while sent < bytes {
        send.write_chunk(chunk.clone()).await?;
        sent += chunk.len() as u64;
    }
    send.finish()?;
    let mut ack = [0u8; 8];
    recv.read_exact(&mut ack).await?;
    let mb_s = mbps(sent, start.elapsed());
    let mut hist = Histogram::<u64>::new(3)?;
    let request = vec![1u8; 100];
    for i in 0..1100 {
        let start = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&request).await?;
        send.finish()?;
        recv.read_exact(&mut ack).await?;
        if i >= 100 {
            hist.record(start.elapsed().as_micros() as u64)?;
        }
    }
    conn.close(0u32.into(), b"done");
    sink.abort();
    Ok((mb_s, hist.value_at_quantile(0.5)))
}
