//! `strait topic …`, `strait produce`, `strait consume`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use strait_protocol::client::{
    Admin, Client, ClientError, ClientOptions, Consumer, ConsumerConfig, ConsumerRecord,
    FailoverConfig, FailoverConsumer, GroupConfig, Producer, ProducerConfig,
};
use strait_protocol::{Acks, Compression, Header, OffsetSpec};

use super::output::table;
use super::ConnArgs;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Name of the topic.
        name: String,
        /// Number of partitions (they can grow later, never shrink).
        #[arg(long)]
        partitions: u32,
        /// KEY=VALUE (retention.ms, retention.bytes, segment.bytes, cleanup.policy, flush …).
        #[arg(long = "config")]
        configs: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List topics.
    List {
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a topic's settings and per-partition offsets and sizes.
    Describe {
        /// Name of the topic.
        name: String,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Grow a topic to more partitions (partitions are never removed) and/or change its
    /// settings; settings not named keep their values.
    Alter {
        /// Name of the topic.
        name: String,
        /// New partition count, larger than today's.
        #[arg(long, required_unless_present = "configs")]
        partitions: Option<u32>,
        /// KEY=VALUE, as for create.
        #[arg(long = "config")]
        configs: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a topic and its data.
    Delete {
        /// Name of the topic.
        name: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Split each record at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// A record whose value is exactly MARKER is sent with a null value (a tombstone, which
    /// compaction uses to delete the key).
    #[arg(long, value_name = "MARKER")]
    null_value: Option<String>,
    /// What ends a record instead of a newline, for values that contain newlines: one byte,
    /// or one of the escapes \n, \t, \0.
    #[arg(long, default_value = "\\n")]
    delimiter: String,
    /// A header KEY=VALUE on every record; repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Send every record to this partition (default: by key, as Kafka's murmur2; sticky without a key).
    #[arg(long)]
    partition: Option<u32>,
    /// When the node answers: none (not at all), leader (once written) or all (once durable under the topic's flush policy).
    #[arg(long, default_value = "leader")]
    acks: Acks,
    /// Codec of the batches: none, gzip, snappy, lz4 or zstd (Kafka's five; any Kafka
    /// consumer reads them).
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read (or give --pattern).
    #[arg(required_unless_present = "pattern")]
    topic: Option<String>,
    /// Read every topic whose whole name matches this regular expression (with --group, new
    /// matching topics join the subscription as they appear).
    #[arg(long, value_name = "REGEX", conflicts_with_all = ["topic", "partition", "offset", "topology"])]
    pattern: Option<String>,
    /// kcat-like output: %t topic, %p partition, %o offset, %T timestamp (ms), %k key, %v value,
    /// %h headers (k=v,…), %% a percent sign; \n and \t escapes. No newline is added: end the
    /// format with \n. Default: the value, preceded by the key and a tab when there is one,
    /// followed by a tab and the headers when there are any.
    #[arg(long, conflicts_with = "json")]
    format: Option<String>,
    /// Start at the earliest offset of every partition (default: the latest).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Stop after this long without a new record.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// One JSON object per record.
    #[arg(long)]
    json: bool,
    /// Consume as a member of this group: partitions are assigned by the group and positions
    /// are committed (every second, and on exit).
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// Rebalance protocol of the group: eager or cooperative.
    #[arg(long, default_value = "eager")]
    group_protocol: String,
    /// With --group: fail over automatically to the replica cluster this topology declares
    /// (and take the clusters' addresses from it instead of --bootstrap).
    #[arg(long, requires = "group")]
    topology: Option<std::path::PathBuf>,
    /// With --topology: the cluster to start on (default: the topic's first origin).
    #[arg(long, requires = "topology")]
    primary: Option<String>,
    /// With --topology: the cluster to fail over to (default: where a flow copies the topic).
    #[arg(long, requires = "topology")]
    replica: Option<String>,
    /// With --topology: how long every probe of the active cluster must fail before the group
    /// moves to the other one.
    #[arg(long, requires = "topology", default_value_t = 2000)]
    failover_after_ms: u64,
    /// With --topology: move back to the primary once it has answered every probe for this
    /// long (after a failback: `mirror reverse`, then the restored primary). Without it the
    /// consumer stays on the replica.
    #[arg(long, requires = "topology")]
    failback_after_ms: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Where `consume` reads from: one cluster, or a primary with automatic failover.
enum Source {
    Plain(Box<Consumer>),
    Failover(Box<FailoverConsumer>),
}

impl Source {
    async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        match self {
            Source::Plain(c) => c.poll(timeout).await,
            Source::Failover(c) => c.poll(timeout).await,
        }
    }

    /// Gives records back: the next poll (and so the commit on exit) starts at `offset`.
    fn rewind(&mut self, topic: &str, partition: u32, offset: u64) {
        match self {
            Source::Plain(c) => c.seek(topic, partition, offset),
            Source::Failover(c) => c.consumer().seek(topic, partition, offset),
        }
    }

    async fn close(self) -> Result<(), ClientError> {
        match self {
            Source::Plain(c) => c.close().await,
            Source::Failover(mut c) => c.consumer().commit().await,
        }
    }
}

pub fn client(conn: &ConnArgs) -> anyhow::Result<Arc<Client>> {
    let tls = conn.tls()?;
    Ok(Client::new(ClientOptions::new(conn.bootstrap()?, tls)))
}

fn parse_configs(configs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    configs
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--config {c:?} has no '='; write KEY=VALUE"))
        })
        .collect()
}

pub async fn topic(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
            conn,
        } => {
            Admin::new(client(&conn)?)
                .create_topic(&name, partitions, parse_configs(&configs)?)
                .await?;
            println!("created topic {name} with {partitions} partitions");
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            conn,
        } => {
            let admin = Admin::new(client(&conn)?);
            if let Some(partitions) = partitions {
                admin.add_partitions(&name, partitions).await?;
                println!("topic {name} now has {partitions} partitions");
            }
            if !configs.is_empty() {
                admin
                    .alter_topic_config(&name, parse_configs(&configs)?)
                    .await?;
                println!("topic {name}: set {}", configs.join(", "));
            }
        }
        TopicCommand::Delete { name, conn } => {
            Admin::new(client(&conn)?).delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::List { json, conn } => {
            let meta = Admin::new(client(&conn)?).metadata(None).await?;
            if json {
                let topics: Vec<Value> = meta
                    .topics
                    .iter()
                    .map(|t| json!({"name": t.name, "partitions": t.partitions.len()}))
                    .collect();
                println!("{}", json!({"cluster": meta.cluster, "topics": topics}));
            } else {
                let rows = meta
                    .topics
                    .iter()
                    .map(|t| vec![t.name.clone(), t.partitions.len().to_string()])
                    .collect();
                print!("{}", table(&["TOPIC", "PARTITIONS"], rows));
            }
        }
        TopicCommand::Describe { name, json, conn } => {
            let d = Admin::new(client(&conn)?).describe_topic(&name).await?;
            if json {
                let parts: Vec<Value> = d
                    .partitions
                    .iter()
                    .map(|p| {
                        json!({"partition": p.id, "leader": p.leader, "leader_epoch": p.leader_epoch,
                        "start_offset": p.start_offset, "end_offset": p.end_offset,
                        "high_watermark": p.high_watermark, "size_bytes": p.size_bytes, "segments": p.segments})
                    })
                    .collect();
                let configs: serde_json::Map<String, Value> = d
                    .configs
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                println!(
                    "{}",
                    json!({"name": d.name, "configs": configs, "partitions": parts})
                );
            } else {
                println!("topic {}", d.name);
                for (k, v) in &d.configs {
                    println!("  {k} = {v}");
                }
                let rows = d
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.to_string(),
                            p.leader.to_string(),
                            p.start_offset.to_string(),
                            p.end_offset.to_string(),
                            p.size_bytes.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["PARTITION", "LEADER", "START", "END", "SIZE_BYTES"], rows)
                );
            }
        }
    }
    Ok(())
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let delimiter = delimiter_byte(&args.delimiter)?;
    let headers = parse_headers(&args.headers)?;
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client(&args.conn)?, config);
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut line = Vec::new();
    let mut deliveries = Vec::new();
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let null = args.null_value.as_deref().map(str::as_bytes);
    loop {
        line.clear();
        if reader.read_until(delimiter, &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&delimiter) {
            line.pop();
        }
        let (key, value) = match sep.and_then(|s| find(&line, s).map(|i| (i, s.len()))) {
            Some((i, n)) => (Some(&line[..i]), &line[i + n..]),
            None => (None, &line[..]),
        };
        let value = (Some(value) != null).then_some(value);
        deliveries.push(
            producer
                .send(&args.topic, args.partition, key, value, &headers)
                .await?,
        );
    }
    producer.flush().await;
    let mut acked = 0u64;
    let mut first_error = None;
    for d in deliveries {
        match d.wait().await {
            Ok(_) => acked += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"acknowledged": acked, "failed": first_error.as_ref().map(|e| e.to_string())})
        );
    } else {
        println!("{acked} records acknowledged");
    }
    match first_error {
        Some(e) => Err(anyhow::anyhow!(e).context("some records were not acknowledged")),
        None => Ok(()),
    }
}

/// The record delimiter: one byte, or an escape.
fn delimiter_byte(text: &str) -> anyhow::Result<u8> {
    match text {
        "\\n" => Ok(b'\n'),
        "\\t" => Ok(b'\t'),
        "\\0" => Ok(0),
        t if t.len() == 1 => Ok(t.as_bytes()[0]),
        t => anyhow::bail!(
            "--delimiter {t:?} is not one byte; give a single character or \\n, \\t, \\0"
        ),
    }
}

/// `KEY=VALUE` headers.
fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<Header>> {
    headers
        .iter()
        .map(|h| {
            let (key, value) = h
                .split_once('=')
                .with_context(|| format!("header {h:?} is not KEY=VALUE"))?;
            Ok(Header {
                key: key.to_string(),
                value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
            })
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let spec = if args.from_beginning {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    if let Some(group) = &args.group {
        let mut config = GroupConfig {
            auto_commit_interval_ms: Some(1000),
            ..GroupConfig::new(group)
        };
        match args.group_protocol.as_str() {
            "eager" => {}
            "cooperative" => config = config.cooperative(),
            other => anyhow::bail!("unknown --group-protocol {other:?}; use eager or cooperative"),
        }
        let consumer_config = ConsumerConfig {
            reset: spec,
            ..ConsumerConfig::default()
        };
        let mut source = match &args.topology {
            Some(file) => Source::Failover(Box::new(failover_consumer(
                &args,
                file,
                config,
                consumer_config,
            )?)),
            None => {
                let mut consumer = Consumer::new(client(&args.conn)?, consumer_config);
                match (&args.pattern, &args.topic) {
                    (Some(pattern), _) => consumer.subscribe_pattern(pattern, config)?,
                    (None, Some(topic)) => consumer.subscribe(&[topic.as_str()], config),
                    (None, None) => anyhow::bail!("name a topic or give --pattern REGEX"),
                }
                Source::Plain(Box::new(consumer))
            }
        };
        let result = print_records(&mut source, &args).await;
        source.close().await?;
        return result;
    }
    let mut consumer = Consumer::new(client(&args.conn)?, ConsumerConfig::default());
    if let Some(pattern) = &args.pattern {
        let partitions = matching_partitions(&args.conn, pattern).await?;
        consumer.assign(&partitions, spec).await?;
        return print_records(&mut Source::Plain(Box::new(consumer)), &args).await;
    }
    let topic = args.topic.clone().unwrap_or_default();
    match (args.partition, args.offset) {
        (Some(p), Some(o)) => {
            consumer
                .assign(&[(topic.clone(), p)], OffsetSpec::Earliest)
                .await?;
            consumer.seek(&topic, p, o);
        }
        (Some(p), None) => consumer.assign(&[(topic.clone(), p)], spec).await?,
        _ => consumer.assign_topic(&topic, spec).await?,
    }
    print_records(&mut Source::Plain(Box::new(consumer)), &args).await
}

/// Every partition of every topic whose whole name matches `pattern`.
async fn matching_partitions(conn: &ConnArgs, pattern: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let re = regex::Regex::new(&format!("^(?:{pattern})$"))
        .with_context(|| format!("--pattern {pattern:?} is not a regular expression"))?;
    let meta = Admin::new(client(conn)?).metadata(None).await?;
    let partitions: Vec<(String, u32)> = meta
        .topics
        .iter()
        .filter(|t| re.is_match(&t.name))
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.id)))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "no topic matches --pattern {pattern:?}; `strait topic list` shows the topics (the pattern must match a whole name)"
    );
    Ok(partitions)
}

/// A group consumer of `args.topic` that fails over between the clusters `file` declares.
fn failover_consumer(
    args: &ConsumeArgs,
    file: &std::path::Path,
    group: GroupConfig,
    consumer_config: ConsumerConfig,
) -> anyhow::Result<FailoverConsumer> {
    let loaded = strait_mirror::topology::load(file)?;
    let pair = loaded
        .topology
        .failover_pair(
            args.topic.as_deref().unwrap_or_default(),
            args.primary.as_deref(),
            args.replica.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let tls = args.conn.tls()?;
    let failover = FailoverConfig {
        mapping: pair.mapping,
        failover_after: Duration::from_millis(args.failover_after_ms),
        failback_after: args.failback_after_ms.map(Duration::from_millis),
        ..FailoverConfig::default()
    };
    Ok(FailoverConsumer::new(
        pair.primary,
        pair.replica,
        tls,
        &[args.topic.as_deref().unwrap_or_default()],
        group,
        consumer_config,
        failover,
    ))
}

async fn print_records(source: &mut Source, args: &ConsumeArgs) -> anyhow::Result<()> {
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    loop {
        let records = source.poll(Duration::from_millis(200)).await?;
        let mut out = stdout.lock();
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut records = records.into_iter();
        while let Some(r) = records.next() {
            if args.json {
                let mut obj = serde_json::Map::new();
                obj.insert("topic".into(), json!(&*r.topic));
                obj.insert("partition".into(), json!(r.partition));
                obj.insert("offset".into(), json!(r.offset));
                obj.insert("timestamp_ms".into(), json!(r.timestamp_ms));
                put_bytes(&mut obj, "key", r.key.as_deref());
                put_bytes(&mut obj, "value", r.value.as_deref());
                if !r.headers.is_empty() {
                    let headers: Vec<Value> = r
                        .headers
                        .iter()
                        .map(|h| {
                            let mut o = serde_json::Map::new();
                            o.insert("key".into(), json!(h.key));
                            put_bytes(&mut o, "value", h.value.as_deref());
                            Value::Object(o)
                        })
                        .collect();
                    obj.insert("headers".into(), Value::Array(headers));
                }
                writeln!(out, "{}", Value::Object(obj))?;
            } else if let Some(format) = &args.format {
                write_formatted(&mut out, format, &r)?;
            } else {
                write_formatted(&mut out, default_format(&r), &r)?;
            }
            seen += 1;
            if args.max_records.is_some_and(|m| seen >= m) {
                out.flush()?;
                // The commit on exit must cover exactly what was printed: give the rest of
                // this poll back, per partition from its first unprinted record.
                let mut first_unprinted: BTreeMap<(Arc<str>, u32), u64> = BTreeMap::new();
                for rest in records {
                    first_unprinted
                        .entry((rest.topic.clone(), rest.partition))
                        .or_insert(rest.offset);
                }
                for ((topic, partition), offset) in first_unprinted {
                    source.rewind(&topic, partition, offset);
                }
                return Ok(());
            }
        }
        out.flush()?;
        if args
            .idle_exit_ms
            .is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms))
        {
            return Ok(());
        }
    }
}

/// The default human line: the value, after the key and a tab when there is a key, before a
/// tab and the headers when there are any.
fn default_format(r: &ConsumerRecord) -> &'static str {
    match (r.key.is_some(), r.headers.is_empty()) {
        (false, true) => "%v\\n",
        (true, true) => "%k\\t%v\\n",
        (false, false) => "%v\\t%h\\n",
        (true, false) => "%k\\t%v\\t%h\\n",
    }
}

/// Writes one record with a kcat-like format (see `--format`) straight to `out`.
fn write_formatted(out: &mut impl Write, format: &str, r: &ConsumerRecord) -> std::io::Result<()> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match (c, (c == '%' || c == '\\').then(|| chars.next()).flatten()) {
            ('%', Some('t')) => out.write_all(r.topic.as_bytes())?,
            ('%', Some('p')) => write!(out, "{}", r.partition)?,
            ('%', Some('o')) => write!(out, "{}", r.offset)?,
            ('%', Some('T')) => write!(out, "{}", r.timestamp_ms)?,
            ('%', Some('k')) => out.write_all(r.key.as_deref().unwrap_or_default())?,
            ('%', Some('v')) => out.write_all(r.value.as_deref().unwrap_or_default())?,
            ('%', Some('h')) => {
                for (i, h) in r.headers.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let value = String::from_utf8_lossy(h.value.as_deref().unwrap_or_default());
                    write!(out, "{sep}{}={value}", h.key)?;
                }
            }
            ('%', Some('%')) => out.write_all(b"%")?,
            ('\\', Some('n')) => out.write_all(b"\n")?,
            ('\\', Some('t')) => out.write_all(b"\t")?,
            ('\\', Some('\\')) => out.write_all(b"\\")?,
            (c, Some(other)) => write!(out, "{c}{other}")?,
            (c, None) => write!(out, "{c}")?,
        }
    }
    Ok(())
}

/// `key`/`value` as a UTF-8 string, `key_base64`/`value_base64` when not UTF-8, null when absent.
fn put_bytes(obj: &mut serde_json::Map<String, Value>, field: &str, data: Option<&[u8]>) {
    match data {
        None => {
            obj.insert(field.into(), Value::Null);
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => {
                obj.insert(field.into(), json!(s));
            }
            Err(_) => {
                obj.insert(
                    format!("{field}_base64"),
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
            }
        },
    }
}
