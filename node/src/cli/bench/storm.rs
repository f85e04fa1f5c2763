//! `strait bench storm`: does the node stay responsive while others make it work hard? A
//! single-record produce round trip on one connection is timed while the node is quiet, then
//! while other connections run a storm of 32 MiB fetches and large produces, in the same run.
//! Storage I/O runs on blocking threads, never on the async workers that also drive quinn's
//! endpoint, so the storm's disk work does not stall the small request: the goal is a p99 under
//! the storm of at most 3× the quiet p99. The storm is one other client (one connection, with
//! all its fetches and produces in flight at once), run on its own thread and runtime as
//! another process would be.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use strait_protocol::client::{Admin, Client, Producer, ProducerConfig};
use strait_protocol::message::{Request, Response};
use strait_protocol::{BatchBuilder, Compression};

use super::Rig;

#[derive(Args, Debug)]
pub struct StormArgs {
    /// Round trips measured in each phase (after 100 of warm-up).
    #[arg(long, default_value_t = 2000)]
    round_trips: u32,
    /// Clients running 32 MiB fetches in a loop during the storm.
    #[arg(long, default_value_t = 4)]
    fetchers: u32,
    /// Clients producing 1 MiB batches in a loop during the storm.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// MiB written to the storm's topic before the storm, for the fetches to read.
    #[arg(long, default_value_t = 256)]
    backlog_mib: u64,
    /// Scheduling priority (nice, 0 to 19) of the storm's client thread. On a machine where
    /// the storm's client shares the node's cores, its decryption work competes with the node
    /// at 0; 19 models a client on another machine, which is what the node sees in production.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    storm_nice: i32,
    /// Directory for the node's data and certificates (a temporary subdirectory).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    pub json: bool,
}

const STORM_PARTITIONS: u32 = 4;
const FETCH_BYTES: u32 = 32 << 20;

pub async fn bench_storm(args: &StormArgs) -> anyhow::Result<Value> {
    let rig = Rig::start(&args.dir).await?;
    let admin = Admin::new(rig.client()?);
    admin.create_topic("bench", 1, vec![]).await?;
    admin
        .create_topic("storm", STORM_PARTITIONS, vec![])
        .await?;
    fill(&rig.client()?, args.backlog_mib).await?;

    // Its own connection, so the storm's streams never share its flow control.
    let probe = rig.client()?;
    let quiet = super::round_trips(&probe, args.round_trips, 100).await?;

    // The storm is another client: its own connection, driven by its own runtime on its own
    // thread, as another process would be, so its decryption work is not run by the node's
    // workers.
    let stop = Arc::new(AtomicBool::new(false));
    let (fetched, produced) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let storm_client = rig.client()?;
    let storm = {
        let (stop, fetched, produced) = (stop.clone(), fetched.clone(), produced.clone());
        let (fetchers, producers, nice) = (args.fetchers, args.producers, args.storm_nice);
        std::thread::spawn(move || -> anyhow::Result<()> {
            if nice != 0 {
                // On Linux a process priority set from a thread applies to that thread only.
                rustix::process::setpriority_process(None, nice)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..fetchers {
                    let (client, stop, fetched) =
                        (storm_client.clone(), stop.clone(), fetched.clone());
                    tasks.push(tokio::spawn(fetch_loop(
                        client,
                        i % STORM_PARTITIONS,
                        stop,
                        fetched,
                    )));
                }
                for i in 0..producers {
                    let (client, stop, produced) =
                        (storm_client.clone(), stop.clone(), produced.clone());
                    tasks.push(tokio::spawn(produce_loop(
                        client,
                        i % STORM_PARTITIONS,
                        stop,
                        produced,
                    )));
                }
                for task in tasks {
                    task.await??;
                }
                Ok(())
            })
        })
    };
    // Let the storm reach full strength before measuring under it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (fetched_before, produced_before) = (
        fetched.load(Ordering::Relaxed),
        produced.load(Ordering::Relaxed),
    );
    let stormy = super::round_trips(&probe, args.round_trips, 100).await?;
    let took = started.elapsed().as_secs_f64();
    let fetch_mb_s = (fetched.load(Ordering::Relaxed) - fetched_before) as f64 / took / 1e6;
    let produce_mb_s = (produced.load(Ordering::Relaxed) - produced_before) as f64 / took / 1e6;
    stop.store(true, Ordering::Relaxed);
    storm
        .join()
        .map_err(|_| anyhow::anyhow!("the storm's thread panicked"))??;
    let ratio = stormy.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99).max(1) as f64;
    Ok(json!({
        "quiet_round_trip_p50_us": quiet.value_at_quantile(0.5),
        "quiet_round_trip_p99_us": quiet.value_at_quantile(0.99),
        "storm_round_trip_p50_us": stormy.value_at_quantile(0.5),
        "storm_round_trip_p99_us": stormy.value_at_quantile(0.99),
        "storm_round_trip_p999_us": stormy.value_at_quantile(0.999),
        "p99_storm_over_quiet": super::round(ratio),
        "goal_p99_ratio_at_most": 3.0,
        "storm_fetch_mb_s": super::round(fetch_mb_s),
        "storm_produce_mb_s": super::round(produce_mb_s),
        "storm_fetchers": args.fetchers,
        "storm_producers": args.producers,
        "storm_nice": args.storm_nice,
        "round_trips": args.round_trips,
    }))
}

/// Writes `mib` MiB of 1 KiB records across the storm's partitions.
async fn fill(client: &Arc<Client>, mib: u64) -> anyhow::Result<()> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 5,
            batch_bytes: 1 << 20,
            ..ProducerConfig::default()
        },
    );
    let value = vec![b's'; 1024];
    let records = mib * 1024;
    let mut last = None;
    for i in 0..records {
        let p = (i % u64::from(STORM_PARTITIONS)) as u32;
        last = Some(
            producer
                .send("storm", Some(p), None, Some(&value), &[])
                .await?,
        );
    }
    producer.flush().await;
    if let Some(d) = last {
        d.wait().await?;
    }
    Ok(())
}

/// 32 MiB fetches of one partition, from the start again at its end, until told to stop.
async fn fetch_loop(
    client: Arc<Client>,
    partition: u32,
    stop: Arc<AtomicBool>,
    fetched: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let fetch = Request::Fetch {
            topic: "storm".into(),
            partition,
            offset,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
        };
        let (answer, payload) = client.call(&fetch, &[]).await?;
        let Response::Fetched { high_watermark, .. } = answer else {
            anyhow::bail!("unexpected fetch answer {answer:?}");
        };
        fetched.fetch_add(payload.len() as u64, Ordering::Relaxed);
        let next = strait_protocol::batch::split_batches(payload, &Default::default())?
            .last()
            .map(|b| b.next_offset().0);
        offset = match next {
            Some(n) if n < high_watermark => n,
            _ => 0,
        };
    }
    Ok(())
}

/// 1 MiB batches to one partition, one request at a time, until told to stop.
async fn produce_loop(
    client: Arc<Client>,
    partition: u32,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut b = BatchBuilder::new(Compression::None);
    let value = vec![b'p'; 1024];
    for _ in 0..1024 {
        b.push(strait_node::now_ms(), None, Some(&value), &[]);
    }
    let batch = b.finish().into_bytes();
    let produce = Request::Produce {
        topic: "storm".into(),
        partition,
        acks: strait_protocol::Acks::Leader,
    };
    while !stop.load(Ordering::Relaxed) {
        client.call(&produce, std::slice::from_ref(&batch)).await?;
        produced.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
