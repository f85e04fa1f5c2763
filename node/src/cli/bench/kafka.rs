//! `strait bench kafka`: librdkafka (kcat) producing and consuming 1 KiB records through the
//! node's Kafka listener, against Strait's own client on the QUIC path, one raw QUIC stream and
//! one raw TCP + TLS stream, all in the same run. CPU seconds of the node (this process) and of
//! kcat during each Kafka phase say which side limits it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use strait_node::server::kafka::{KafkaConfig, KafkaListener};
use strait_protocol::client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig};
use strait_protocol::{Acks, OffsetSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{mbps, produce_all, raw_quic, round, NetArgs, Rig, MIB};

#[derive(Args, Debug)]
pub struct KafkaBenchArgs {
    /// Records produced and consumed on each path.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Directory for the node's data and certificates (a temporary subdirectory).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    pub json: bool,
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs kcat processes side by side to completion; answers the wall time until the last ends
/// and their CPU seconds together (each read while it is a zombie, before it is reaped).
fn run_kcats(runs: &[(Vec<String>, Option<&Path>)]) -> anyhow::Result<(Duration, f64)> {
    let start = Instant::now();
    let mut children = Vec::new();
    for (args, stdin) in runs {
        let mut cmd = Command::new("kcat");
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some(file) = stdin {
            cmd.stdin(std::fs::File::open(file)?);
        }
        children.push(cmd.spawn().context(
            "cannot run kcat: install it (Debian: apt-get install kcat) to benchmark the Kafka listener",
        )?);
    }
    let mut cpu = vec![0.0; children.len()];
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (i, child) in children.iter().enumerate() {
            if done[i] {
                continue;
            }
            let pid = child.id();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(c) = cpu_seconds(pid) {
                cpu[i] = c;
            }
            done[i] = state
                .rfind(')')
                .and_then(|at| state.get(at + 2..at + 3))
                .is_none_or(|st| st == "Z");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "kcat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took, cpu.iter().sum()))
}

/// One raw TCP stream with the node's TLS 1.3 setup (client certificate included): the
/// ceiling any TCP front door could reach on this machine.
pub(super) async fn raw_tcp_tls(rig: &Rig, bytes: u64) -> anyhow::Result<f64> {
    let mut tls = strait_certs::server_config(
        &rig.certs.join("ca.crt"),
        &rig.certs.join("node-1.crt"),
        &rig.certs.join("node-1.key"),
    )?;
    tls.alpn_protocols.clear();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut s) = acceptor.accept(tcp).await else {
            return;
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n as u64;
            if total >= bytes {
                break;
            }
        }
        let _ = s.write_all(&total.to_le_bytes()).await;
        let _ = s.flush().await;
    });
    let mut client = rig.client_tls()?;
    client.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut s = connector
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let chunk = vec![5u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    s.flush().await?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).await?;
    let took = start.elapsed();
    sink.abort();
    Ok(mbps(sent, took))
}

pub async fn bench_kafka(args: &KafkaBenchArgs) -> anyhow::Result<Value> {
    let rig = Rig::start(&args.dir).await?;
    let total = args.records * args.record_size as u64;
    let raw_bytes = total.min(1 << 30);
    let tcp_tls = raw_tcp_tls(&rig, raw_bytes).await?;
    let (quic, _) = raw_quic(&rig, raw_bytes).await?;
    let kafka = KafkaListener::start(
        rig.server.service(),
        KafkaConfig::new(
            "127.0.0.1:0".parse()?,
            rig.certs.join("ca.crt"),
            rig.certs.join("node-1.crt"),
            rig.certs.join("node-1.key"),
        ),
    )
    .await?;
    let bootstrap = kafka.local_addr.to_string();
    let client = rig.client()?;
    let admin = Admin::new(client.clone());
    admin
        .create_topic("native", args.partitions, vec![])
        .await?;
    admin.create_topic("kafka", args.partitions, vec![]).await?;

    // Strait's own client over QUIC.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::Leader,
            linger_ms: 5,
            batch_bytes: 1 << 20,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b'x'; args.record_size];
    let net = NetArgs {
        records: args.records,
        record_size: args.record_size,
        partitions: args.partitions,
        acks: Acks::Leader,
        dir: args.dir.clone(),
        batch_kib: 1024,
        in_flight: 1,
        group: false,
        mirror_mode: "gateway".into(),
        fetch_kb: 4096,
        in_flight_mb: 64,
        round_trips: 0,
        json: false,
        topic: "native".into(),
    };
    let native_produce = produce_all(&producer, &net, &value).await?;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            partition_bytes_max: 4 << 20,
            ..Default::default()
        },
    );
    consumer
        .assign_topic("native", OffsetSpec::Earliest)
        .await?;
    let start = Instant::now();
    let mut seen = 0;
    while seen < args.records {
        let records = consumer.poll(Duration::from_secs(5)).await?;
        anyhow::ensure!(!records.is_empty(), "native consumer stalled at {seen}");
        seen += records.len() as u64;
    }
    let native_consume = start.elapsed();

    // librdkafka through kcat: one line per record.
    let input = rig.certs.join("kcat-input");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        let line = vec![b'k'; args.record_size.saturating_sub(1).max(1)];
        for _ in 0..args.records {
            f.write_all(&line)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    let certs = rig.certs.display().to_string();
    let common = vec![
        "-b".to_string(),
        bootstrap.clone(),
        "-X".into(),
        "security.protocol=ssl".into(),
        "-X".into(),
        format!("ssl.ca.location={certs}/ca.crt"),
        "-X".into(),
        format!("ssl.certificate.location={certs}/bench.crt"),
        "-X".into(),
        format!("ssl.key.location={certs}/bench.key"),
        "-t".into(),
        "kafka".into(),
    ];
    let mut produce = common.clone();
    produce.extend(
        [
            "-P",
            "-X",
            "linger.ms=5",
            "-X",
            "batch.size=1048576",
            "-X",
            "acks=1",
            "-X",
            "queue.buffering.max.kbytes=1048576",
        ]
        .map(String::from),
    );
    let node_before = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (kafka_produce, kcat_produce_cpu) =
        tokio::task::block_in_place(|| run_kcats(&[(produce.clone(), Some(&input))]))?;
    let node_produce_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - node_before;
    let ends: u64 = {
        let mut sum = 0;
        for p in 0..args.partitions {
            sum += admin.list_offset("kafka", p, OffsetSpec::Latest).await?.0;
        }
        sum
    };
    anyhow::ensure!(
        ends == args.records,
        "kcat stored {ends} of {} records",
        args.records
    );
    let mut consume = common;
    // The same per-partition fetch size as the native consumer above (4 MiB).
    consume.extend(
        [
            "-C",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "fetch.max.bytes=52428800",
            "-X",
            "max.partition.fetch.bytes=4194304",
            "-X",
            "fetch.wait.max.ms=100",
        ]
        .map(String::from),
    );
    let node_before = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (kafka_consume, kcat_consume_cpu) =
        tokio::task::block_in_place(|| run_kcats(&[(consume.clone(), None)]))?;
    let node_consume_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - node_before;
    // Two kcat producers side by side, each on its own topic: what the listener takes when one
    // client process is not the limit (they share the machine's two cores with the node).
    let mut pair = Vec::new();
    for topic in ["kafka-a", "kafka-b"] {
        admin.create_topic(topic, args.partitions, vec![]).await?;
        let mut p = produce.clone();
        let at = p.iter().position(|a| a == "kafka").unwrap_or(0);
        p[at] = topic.to_string();
        pair.push((p, Some(input.as_path())));
    }
    let node_before = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (kafka_produce_two, kcat_two_cpu) = tokio::task::block_in_place(|| run_kcats(&pair))?;
    let node_two_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - node_before;
    let _ = std::fs::remove_file(&input);
    kafka.shutdown();
    rig.server.shutdown().await;

    let native_produce_mb_s = mbps(total, native_produce);
    let native_consume_mb_s = mbps(total, native_consume);
    let kafka_produce_mb_s = mbps(total, kafka_produce);
    let kafka_consume_mb_s = mbps(total, kafka_consume);
    let limit = |node: f64, client: f64| {
        if node >= client {
            "node"
        } else {
            "client (kcat/librdkafka)"
        }
    };
    Ok(json!({
        "records": args.records,
        "record_bytes": args.record_size,
        "partitions": args.partitions,
        "raw_tcp_tls_stream_mb_s": round(tcp_tls),
        "raw_quic_stream_mb_s": round(quic),
        "native_quic_produce_mb_s": round(native_produce_mb_s),
        "native_quic_consume_mb_s": round(native_consume_mb_s),
        "kafka_produce_mb_s": round(kafka_produce_mb_s),
        "kafka_consume_mb_s": round(kafka_consume_mb_s),
        "kafka_produce_ratio_to_native": round(kafka_produce_mb_s / native_produce_mb_s),
        "kafka_consume_ratio_to_native": round(kafka_consume_mb_s / native_consume_mb_s),
        "kafka_produce_ratio_to_raw_tcp_tls": round(kafka_produce_mb_s / tcp_tls),
        "kafka_consume_ratio_to_raw_tcp_tls": round(kafka_consume_mb_s / tcp_tls),
        "kafka_produce_cpu_s_node": round(node_produce_cpu),
        "kafka_produce_cpu_s_kcat": round(kcat_produce_cpu),
        "kafka_produce_limited_by": limit(node_produce_cpu, kcat_produce_cpu),
        "kafka_consume_cpu_s_node": round(node_consume_cpu),
        "kafka_consume_cpu_s_kcat": round(kcat_consume_cpu),
        "kafka_consume_limited_by": limit(node_consume_cpu, kcat_consume_cpu),
        "kafka_produce_two_clients_mb_s": round(mbps(2 * total, kafka_produce_two)),
        "kafka_produce_two_clients_ratio_to_native": round(mbps(2 * total, kafka_produce_two) / native_produce_mb_s),
        "kafka_produce_two_clients_ratio_to_raw_tcp_tls": round(mbps(2 * total, kafka_produce_two) / tcp_tls),
        "kafka_produce_two_clients_cpu_s_node": round(node_two_cpu),
        "kafka_produce_two_clients_cpu_s_kcat": round(kcat_two_cpu),
        "raw_mib": raw_bytes / MIB,
    }))
}
