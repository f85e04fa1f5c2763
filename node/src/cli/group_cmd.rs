//! `strait group list|describe|reset-offsets`.

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use strait_protocol::client::Admin;
use strait_protocol::message::{CommittedOffset, GroupDescription, Request, Response};
use strait_protocol::OffsetSpec;

use super::client_cmd::client;
use super::output::table;
use super::ConnArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List {
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// State, protocol, members and their assignments, and per partition committed offset,
    /// end offset and lag.
    Describe {
        /// Name of the consumer group.
        group: String,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Move a group's committed offsets (a preview unless --execute; refused while the group
    /// has members).
    ResetOffsets(ResetArgs),
    /// Move a group to another cluster of a topology: apply the offsets its flows
    /// checkpointed there (translated, clamped to what that cluster holds) and print them.
    Failover {
        /// Name of the consumer group.
        group: String,
        /// Topology that declares the flow carrying the group's offsets (primary and replica).
        #[arg(long)]
        topology: std::path::PathBuf,
        /// The cluster the group moves to.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        state: super::topology::StateArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Name of the consumer group.
    group: String,
    /// Topic whose offsets move (every partition).
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    to: ResetTarget,
    /// Apply the change; without it only the preview is printed.
    #[arg(long)]
    execute: bool,
    /// Print JSON for scripts instead of the human format.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// To the first offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end (skip everything produced so far).
    #[arg(long)]
    to_latest: bool,
    /// To this offset on every partition.
    #[arg(long)]
    to_offset: Option<u64>,
    /// To the first record at or after this time (ms since the Unix epoch).
    #[arg(long)]
    to_timestamp: Option<i64>,
}

pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Failover {
            group,
            topology,
            to,
            state,
            json,
        } => {
            let mut fed = super::topology::federation(&topology, &state)?;
            super::topology::failover::fail_over_group(&mut fed, &group, &to, json).await?;
        }
        GroupCommand::List { json, conn } => {
            let c = client(&conn)?;
            let groups = match c.call(&Request::ListGroups {}, &[]).await?.0 {
                Response::Groups(g) => g,
                other => anyhow::bail!("unexpected answer {other:?}"),
            };
            if json {
                let list: Vec<Value> = groups
                    .iter()
                    .map(|g| json!({"group": g.group, "state": g.state, "protocol": format!("{:?}", g.protocol).to_lowercase(), "members": g.members.len()}))
                    .collect();
                println!("{}", json!({ "groups": list }));
            } else {
                let rows = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.group.clone(),
                            g.state.clone(),
                            format!("{:?}", g.protocol).to_lowercase(),
                            g.members.len().to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["GROUP", "STATE", "PROTOCOL", "MEMBERS"], rows)
                );
            }
        }
        GroupCommand::Describe { group, json, conn } => describe(&group, json, &conn).await?,
        GroupCommand::ResetOffsets(args) => reset(args).await?,
    }
    Ok(())
}

async fn describe(group: &str, json_out: bool, conn: &ConnArgs) -> anyhow::Result<()> {
    let c = client(conn)?;
    let d: GroupDescription = match c
        .call(
            &Request::DescribeGroup {
                group: group.into(),
            },
            &[],
        )
        .await?
        .0
    {
        Response::GroupDescription(d) => d,
        other => anyhow::bail!("unexpected answer {other:?}"),
    };
    let committed: Vec<CommittedOffset> = match c
        .call(
            &Request::FetchOffsets {
                group: group.into(),
                partitions: None,
            },
            &[],
        )
        .await?
        .0
    {
        Response::CommittedOffsets(o) => o,
        other => anyhow::bail!("unexpected answer {other:?}"),
    };
    let mut partitions: BTreeSet<(String, u32)> = committed
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    for m in &d.members {
        partitions.extend(m.assignment.iter().cloned());
    }
    let admin = Admin::new(c.clone());
    let mut rows = Vec::new();
    for (topic, p) in partitions {
        let end = admin
            .list_offset(&topic, p, OffsetSpec::Latest)
            .await
            .map(|(o, _)| o)
            .ok();
        let offset = committed
            .iter()
            .find(|o| o.topic == topic && o.partition == p)
            .map(|o| o.offset);
        let owner = d
            .members
            .iter()
            .find(|m| m.assignment.contains(&(topic.clone(), p)))
            .map(|m| m.member_id.clone());
        let lag = match (end, offset) {
            (Some(e), Some(o)) => Some(e.saturating_sub(o)),
            (Some(e), None) => Some(e),
            _ => None,
        };
        rows.push((topic, p, offset, end, lag, owner));
    }
    if json_out {
        let members: Vec<Value> = d
            .members
            .iter()
            .map(|m| json!({"member_id": m.member_id, "principal": m.principal, "topics": m.topics,
                "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>()}))
            .collect();
        let parts: Vec<Value> = rows
            .iter()
            .map(|(t, p, o, e, l, m)| json!({"topic": t, "partition": p, "committed_offset": o, "end_offset": e, "lag": l, "member_id": m}))
            .collect();
        println!(
            "{}",
            json!({"group": d.group, "state": d.state, "protocol": format!("{:?}", d.protocol).to_lowercase(),
            "assignor": d.assignor, "generation": d.generation, "members": members, "partitions": parts})
        );
    } else {
        println!(
            "group {}  state {}  protocol {:?}  assignor {}  generation {}",
            d.group, d.state, d.protocol, d.assignor, d.generation
        );
        let dash = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        let table_rows = rows
            .into_iter()
            .map(|(t, p, o, e, l, m)| {
                vec![
                    t,
                    p.to_string(),
                    dash(o),
                    dash(e),
                    dash(l),
                    m.unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                table_rows
            )
        );
    }
    Ok(())
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let admin = Admin::new(c.clone());
    let d = admin.describe_topic(&args.topic).await?;
    let mut offsets = Vec::new();
    for p in &d.partitions {
        let target = if args.to.to_earliest {
            p.start_offset
        } else if args.to.to_latest {
            p.high_watermark
        } else if let Some(o) = args.to.to_offset {
            o.clamp(p.start_offset, p.high_watermark)
        } else {
            let ts = args.to.to_timestamp.unwrap_or_default();
            admin
                .list_offset(&args.topic, p.id, OffsetSpec::Timestamp(ts))
                .await?
                .0
        };
        offsets.push(CommittedOffset {
            topic: args.topic.clone(),
            partition: p.id,
            offset: target,
            metadata: String::new(),
        });
    }
    if args.execute {
        let req = Request::CommitOffsets {
            group: args.group.clone(),
            member_id: String::new(),
            generation: -1,
            offsets: offsets.clone(),
        };
        c.call(&req, &[]).await?;
    }
    if args.json {
        let list: Vec<Value> = offsets
            .iter()
            .map(|o| json!({"topic": o.topic, "partition": o.partition, "new_offset": o.offset}))
            .collect();
        println!(
            "{}",
            json!({"group": args.group, "executed": args.execute, "offsets": list})
        );
    } else {
        let rows = offsets
            .iter()
            .map(|o| {
                vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    o.offset.to_string(),
                ]
            })
            .collect();
        print!("{}", table(&["TOPIC", "PARTITION", "NEW_OFFSET"], rows));
        if !args.execute {
            println!("preview only: add --execute to apply");
        }
    }
    Ok(())
}
