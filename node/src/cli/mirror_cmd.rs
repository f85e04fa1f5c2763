//! `strait mirror run`: one flow, standalone, configured by flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use strait_mirror::{FlowConfig, MirrorFlow, Naming};
use strait_protocol::client::{Client, ClientOptions};
use strait_protocol::message::{Request, Response};

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Run one mirror flow until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Where a source record is on the target cluster (ask the target's bootstrap).
    Translate {
        #[arg(long)]
        source_cluster: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        #[arg(long)]
        offset: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: super::ConnArgs,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The flow's name (mirror topics record it).
    #[arg(long)]
    name: String,
    #[arg(long, value_delimiter = ',')]
    source_bootstrap: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    target_bootstrap: Vec<String>,
    /// Source topics to copy: a regular expression matched against the whole name.
    #[arg(long)]
    topics: String,
    /// Consumer groups whose committed offsets are carried to the target (checkpoints).
    #[arg(long)]
    groups: Option<String>,
    /// Source topics to leave out, matched against the whole name.
    #[arg(long)]
    exclude: Option<String>,
    /// How target topics are named: prefix (`east.orders`).
    #[arg(long, default_value = "prefix")]
    naming: String,
    /// Seconds between looks for new matching topics.
    #[arg(long, default_value_t = 5)]
    refresh_s: u64,
    /// Cap on the copy rate in MB/s (all partitions together); no cap by default.
    #[arg(long)]
    max_mb_s: Option<u64>,
    #[arg(long, env = "STRAIT_CA")]
    ca: PathBuf,
    /// The flow's certificate (role mirror).
    #[arg(long, env = "STRAIT_CERT")]
    cert: PathBuf,
    #[arg(long, env = "STRAIT_KEY")]
    key: PathBuf,
}

fn whole(pattern: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .with_context(|| format!("{pattern:?} is not a valid regular expression"))
}

pub async fn run(command: MirrorCommand) -> anyhow::Result<()> {
    let args = match command {
        MirrorCommand::Run(args) => args,
        MirrorCommand::Translate {
            source_cluster,
            topic,
            partition,
            offset,
            json,
            conn,
        } => {
            let client = super::client_cmd::client(&conn)?;
            let req = Request::TranslateOffset {
                source_cluster,
                topic,
                partition,
                offset,
            };
            match client.call(&req, &[]).await?.0 {
                Response::Translated {
                    topic,
                    partition,
                    offset,
                } if json => {
                    println!(
                        "{}",
                        serde_json::json!({"topic": topic, "partition": partition, "offset": offset})
                    );
                }
                Response::Translated {
                    topic,
                    partition,
                    offset,
                } => println!("{topic} partition {partition} offset {offset}"),
                other => anyhow::bail!("unexpected answer {other:?}"),
            }
            return Ok(());
        }
    };
    let naming: Naming = args
        .naming
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let tls = || {
        strait_certs::client_config(&args.ca, &args.cert, &args.key)
            .context("cannot load the flow's certificate")
    };
    let source = Client::new(ClientOptions::new(args.source_bootstrap.clone(), tls()?));
    let target = Client::new(ClientOptions::new(args.target_bootstrap.clone(), tls()?));
    let mut config = FlowConfig::new(&args.name, whole(&args.topics)?);
    config.exclude = args.exclude.as_deref().map(whole).transpose()?;
    config.groups = args.groups.as_deref().map(whole).transpose()?;
    config.naming = naming;
    config.refresh = Duration::from_secs(args.refresh_s.max(1));
    config.rate_bytes_per_s = args.max_mb_s.map(|mb| mb << 20);
    let flow = MirrorFlow::new(config, source, target);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::node_cmd::wait_for_shutdown().await;
        let _ = stop_tx.send(true);
    });
    println!("mirror flow {} running", args.name);
    flow.run(stop).await?;
    Ok(())
}
