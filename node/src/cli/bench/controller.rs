//! `strait bench controller`: three controller voters and (by default) two learners in one
//! process, each behind its own node listener (QUIC + mTLS, as between machines). Times how
//! long a metadata change takes from its proposal until every voter, and every node, has
//! applied it. The same-run baseline is one fdatasync
//! of a small write: a change commits only once the leader and a follower have synced it.
//! Then elections: the leader's controller stops (its node stays up and answers the others'
//! calls with errors, as a node whose controller died would), and the time until the other
//! two agree on a new leader is measured; the stopped one starts again from its disk and
//! rejoins before the next round. (`tests/tests/controller*.rs` kill real processes and cut
//! links; they print their election times too.)

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use strait_certs::Role;
use strait_node::broker::Broker;
use strait_node::controller::{Command, Controller, ControllerConfig, Outcome};
use strait_node::server::{ListenConfig, Server};
use strait_node::storage::LogConfig;

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Metadata changes timed (topic creations, one at a time).
    #[arg(long, default_value_t = 500)]
    changes: u32,
    /// Nodes beside the three voters, following the metadata log as learners; a change is
    /// timed until every node, learners included, applied it.
    #[arg(long, default_value_t = 2)]
    learners: u32,
    /// Leader failures timed (the leader's controller stopped, then started again).
    #[arg(long, default_value_t = 10)]
    elections: u32,
    /// The quorum's Raft heartbeat, in ms (a new leader after 24–32 of them).
    #[arg(long, default_value_t = 100)]
    raft_heartbeat_ms: u64,
    /// Directory for the voters' data and certificates (a temporary subdirectory).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    pub json: bool,
}

const CLUSTER: &str = "bench";

pub async fn bench_controller(args: &ControllerArgs) -> anyhow::Result<Value> {
    let root = tempfile::Builder::new()
        .prefix(".strait-bench-")
        .tempdir_in(&args.dir)?;
    let certs = root.path().join("certs");
    strait_certs::init_ca(&certs)?;
    let mut servers = Vec::new();
    let nodes = 3 + u64::from(args.learners);
    for id in 1..=nodes {
        let name = format!("{CLUSTER}-{id}");
        strait_certs::issue(&certs, &name, Role::Node, &[])?;
        let data = root.path().join(&name);
        let broker = Broker::open(
            CLUSTER,
            strait_protocol::NodeId(id as u32),
            &data,
            LogConfig::default(),
        )?;
        let config = ListenConfig::local(
            certs.join("ca.crt"),
            certs.join(format!("{name}.crt")),
            certs.join(format!("{name}.key")),
        );
        servers.push((Server::start(broker, config)?, data));
    }
    let voters: BTreeMap<u64, String> = (1..=3u64)
        .zip(&servers)
        .map(|(id, (s, _))| (id, s.local_addr.to_string()))
        .collect();
    let mut configs = Vec::new();
    for (id, (server, data)) in (1..=nodes).zip(&servers) {
        let name = format!("{CLUSTER}-{id}");
        configs.push(ControllerConfig {
            cluster: CLUSTER.into(),
            node_id: id,
            voters: voters.clone(),
            advertised: server.local_addr.to_string(),
            kafka_address: None,
            rack: None,
            dir: data.join("controller"),
            tls: strait_certs::client_config(
                &certs.join("ca.crt"),
                &certs.join(format!("{name}.crt")),
                &certs.join(format!("{name}.key")),
            )?,
            transport: Default::default(),
            session_timeout: Duration::from_secs(9),
            heartbeat_interval: Duration::from_secs(1),
            raft_heartbeat: Duration::from_millis(args.raft_heartbeat_ms),
        });
    }
    let started = Instant::now();
    let mut members: Vec<Arc<Controller>> = Vec::new();
    for (config, (server, _)) in configs.iter().zip(&servers) {
        let controller = Controller::start(config.clone()).await?;
        server.set_controller(controller.clone());
        members.push(controller);
    }
    let leader = agreed_leader(&members).await?;
    let first_election = started.elapsed();
    // Topics are placed on registered nodes: wait until all have registered, and the
    // learners follow the log.
    for m in &members {
        m.image()
            .wait_for(|img| img.nodes.values().filter(|n| !n.fenced).count() == nodes as usize)
            .await?;
    }
    poll("the learners' joining", || {
        (members[leader].describe().learners.len() >= args.learners as usize).then_some(())
    })
    .await?;

    // Metadata changes: proposed through the leader, done when every node applied them.
    let mut change = Histogram::<u64>::new(3)?;
    let mut everywhere = Histogram::<u64>::new(3)?;
    for i in 0..args.changes {
        let name = format!("t{i}");
        let t0 = Instant::now();
        let outcome = members[leader]
            .propose(Command::CreateTopic {
                name: name.clone(),
                partitions: 1,
                replication_factor: Some(1),
                settings: BTreeMap::new(),
            })
            .await?;
        if let Outcome::Refused(why) = outcome {
            anyhow::bail!("the controller refused topic {name}: {why}");
        }
        let (voters, learners) = members.split_at(3);
        for (group, histogram) in [(voters, &mut change), (learners, &mut everywhere)] {
            for m in group {
                m.image()
                    .wait_for(|img| img.topics.contains_key(&name))
                    .await?;
            }
            histogram.record(t0.elapsed().as_micros() as u64)?;
        }
    }

    // Elections: stop the leader's controller, time until the other two agree on another.
    let mut election = Histogram::<u64>::new(3)?;
    let mut leader = leader;
    for round in 0..args.elections {
        members[leader].shutdown().await;
        let t0 = Instant::now();
        let survivors: Vec<Arc<Controller>> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| members[i].clone())
            .collect();
        let next = agreed_leader_but(&survivors, Some(leader))
            .await
            .with_context(|| format!("election {round}"))?;
        let elected = t0.elapsed();
        election.record(elected.as_micros() as u64)?;
        let restarted = Controller::start(configs[leader].clone()).await?;
        servers[leader].0.set_controller(restarted.clone());
        members[leader] = restarted;
        leader = agreed_leader(&members)
            .await
            .with_context(|| format!("after election {round}"))?;
        // Steady again before the next round: the restarted member holds the whole log (one
        // still behind cannot win, yet its failed elections delay the one that can).
        let applied = members[leader].describe().applied_index;
        poll("every member catching up", || {
            members
                .iter()
                .all(|m| m.describe().applied_index >= applied)
                .then_some(())
        })
        .await
        .with_context(|| format!("after election {round}"))?;
        tracing::debug!(round, ?elected, to = next, "election timed");
    }

    let probe = root.path().join("fsync-probe");
    let fsync_us = tokio::task::spawn_blocking(move || fdatasync_p50_us(&probe)).await??;
    for (m, (s, _)) in members.iter().zip(&servers) {
        m.shutdown().await;
        s.shutdown().await;
    }
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    Ok(json!({
        "voters": 3,
        "learners": args.learners,
        "raft_heartbeat_ms": args.raft_heartbeat_ms,
        "first_election_ms": first_election.as_millis() as u64,
        "change_to_all_voters_p50_us": p(&change, 0.5),
        "change_to_all_voters_p99_us": p(&change, 0.99),
        "change_to_every_node_p50_us": p(&everywhere, 0.5),
        "change_to_every_node_p99_us": p(&everywhere, 0.99),
        "changes": args.changes,
        "baseline_fdatasync_p50_us": fsync_us,
        "change_p50_over_fdatasync": super::round(p(&change, 0.5) as f64 / fsync_us.max(1) as f64),
        "elections": args.elections,
        "election_p50_ms": p(&election, 0.5) / 1000,
        "election_p99_ms": p(&election, 0.99) / 1000,
        "election_max_ms": election.max() / 1000,
    }))
}

/// Waits until every member names the same leader; answers its index (of the three).
async fn agreed_leader(members: &[Arc<Controller>]) -> anyhow::Result<usize> {
    agreed_leader_but(members, None).await
}

/// Waits until every member names the same leader, and not `old` (an index of the three).
async fn agreed_leader_but(
    members: &[Arc<Controller>],
    old: Option<usize>,
) -> anyhow::Result<usize> {
    poll("a leader every member names", || {
        let seen: Vec<Option<u64>> = members.iter().map(|m| m.describe().leader).collect();
        let index = (*seen.first()?)? as usize - 1;
        (seen.iter().all(|s| *s == seen[0]) && old != Some(index)).then_some(index)
    })
    .await
}

/// Polls `ready` every 10 ms until it answers, for at most a minute.
async fn poll<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no {what} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The median time of one fdatasync after a small write.
fn fdatasync_p50_us(path: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::create(path)?;
    let mut h = Histogram::<u64>::new(3)?;
    for _ in 0..200 {
        let t0 = Instant::now();
        f.write_all(&[7u8; 128])?;
        f.sync_data()?;
        h.record(t0.elapsed().as_micros() as u64)?;
    }
    std::fs::remove_file(path)?;
    Ok(h.value_at_quantile(0.5))
}
