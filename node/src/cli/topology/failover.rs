//! `strait group failover G --topology FILE --to CLUSTER`: the operator's failover of a group.
//! It applies, on the target cluster, the group's offsets that the flows into that cluster
//! checkpointed there (already translated), clamped to what the target holds — the same
//! positions the automatic `FailoverConsumer` resumes from — and prints them.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_json::json;
use strait_mirror::naming::Naming;
use strait_protocol::client::Admin;
use strait_protocol::message::{Request, Response};
use strait_protocol::OffsetSpec;

use super::live::Federation;
use crate::cli::output::table;

/// The offsets to apply, per (target topic, partition).
pub async fn fail_over_group(
    fed: &mut Federation,
    group: &str,
    to: &str,
    json: bool,
) -> anyhow::Result<()> {
    let t = fed.topology.clone();
    if t.cluster(to).is_none() {
        bail!("{} declares no cluster {to:?}", fed.path.display());
    }
    let flows: Vec<_> = t
        .flows
        .iter()
        .filter(|f| f.target == to)
        .filter_map(|f| Some((f, f.spec(&t).to_config().ok()?)))
        .filter(|(_, c)| {
            c.groups.as_ref().is_some_and(|g| g.is_match(group))
                && !c.groups_exclude.as_ref().is_some_and(|g| g.is_match(group))
        })
        .collect();
    if flows.is_empty() {
        bail!("no flow into {to} carries the offsets of group {group:?}; set `groups` on a flow into {to} in {}", fed.path.display());
    }
    let client = fed.client(to)?;
    let req = Request::FetchOffsets {
        group: group.into(),
        partitions: None,
    };
    let committed = match client
        .call(&req, &[])
        .await
        .with_context(|| format!("cannot reach cluster {to}"))?
        .0
    {
        Response::CommittedOffsets(list) => list,
        other => bail!("unexpected answer {other:?}"),
    };
    let admin = Admin::new(client.clone());
    let mut offsets: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for c in committed {
        let carried = flows.iter().any(|(f, config)| match config.naming {
            Naming::Prefix => c
                .topic
                .strip_prefix(&format!("{}.", f.source))
                .is_some_and(|s| config.topics.is_match(s)),
            _ => config.topics.is_match(&c.topic),
        });
        if !carried {
            continue;
        }
        let (end, _) = admin
            .list_offset(&c.topic, c.partition, OffsetSpec::Latest)
            .await?;
        offsets.insert((c.topic, c.partition), c.offset.min(end));
    }
    if offsets.is_empty() {
        bail!("cluster {to} holds no checkpointed offsets of group {group:?} yet; the flow copies them once the group commits on its source");
    }
    admin
        .commit_group_offsets(group, &offsets, "failover")
        .await
        .with_context(|| {
            format!(
            "cannot apply the offsets of group {group:?} on {to}: it must have no members there"
        )
        })?;
    if json {
        let list: Vec<_> = offsets
            .iter()
            .map(|((topic, partition), offset)| json!({"topic": topic, "partition": partition, "offset": offset}))
            .collect();
        println!(
            "{}",
            json!({"group": group, "cluster": to, "offsets": list})
        );
    } else {
        println!("group {group} now resumes on {to} at:");
        let rows = offsets
            .iter()
            .map(|((t, p), o)| vec![t.clone(), p.to_string(), o.to_string()])
            .collect();
        print!("{}", table(&["TOPIC", "PARTITION", "OFFSET"], rows));
        println!("consume there with `strait consume TOPIC --group {group} --bootstrap …`");
    }
    Ok(())
}
