//! `strait cluster describe`: the controller quorum and the nodes of a cluster, as the node
//! asked sees them.

use clap::Subcommand;
use strait_protocol::client::Admin;
use strait_protocol::message::ClusterDescription;

use super::client_cmd::client;
use super::output::table;
use super::ConnArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The controller voters and leader, and every node with its state.
    Describe {
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Describe { json, conn } => {
            let cluster = Admin::new(client(&conn)?).describe_cluster().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cluster)?);
            } else {
                print!("{}", human(&cluster));
            }
        }
    }
    Ok(())
}

fn human(c: &ClusterDescription) -> String {
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    let mut out = format!(
        "cluster {} (answered by node {})\ncontroller leader: {}  term {}  applied index {}\nvoters: {}\nlearners: {}\n\n",
        c.cluster,
        c.node_id,
        c.leader.map_or("none (no quorum)".to_string(), |l| l.to_string()),
        c.term,
        c.applied_index.map_or("-".to_string(), |i| i.to_string()),
        ids(&c.voters),
        ids(&c.learners),
    );
    let rows = c
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.to_string(),
                n.address.clone(),
                n.rack.clone().unwrap_or_else(|| "-".into()),
                if n.voter { "voter" } else { "learner" }.into(),
                n.state.clone(),
                n.incarnation.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "ADDRESS", "RACK", "ROLE", "STATE", "INCARNATION"],
        rows,
    ));
    out
}
