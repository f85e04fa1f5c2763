//! `strait acl list|add|remove`: a node's access rules, changed through the wire protocol and
//! persisted by the node.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;
use strait_protocol::acl::{AclListing, AclRule, Operation, PatternType, Permission, ResourceKind};
use strait_protocol::client::Admin;

use super::client_cmd::client;
use super::output::table;
use super::ConnArgs;

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Show the node's rules, superusers and whether it enforces them.
    List {
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a rule; the node persists it before answering.
    Add {
        #[command(flatten)]
        rule: RuleArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a rule added with `acl add` (rules from a node's config stay until edited there).
    Remove {
        #[command(flatten)]
        rule: RuleArgs,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// One rule on the command line.
#[derive(Args, Debug)]
pub struct RuleArgs {
    /// A certificate's common name, or '*' for every authenticated principal.
    #[arg(long)]
    principal: String,
    /// read, write, create, delete, describe, alter, mirror or group.
    #[arg(long)]
    operation: String,
    /// A topic name ('*' for all), or a prefix with --prefixed.
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group name ('*' for all), or a prefix with --prefixed.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The node itself (ACL management).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// Match every name starting with the given one.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow; a deny overrides every allow.
    #[arg(long)]
    deny: bool,
}

impl RuleArgs {
    fn rule(&self) -> anyhow::Result<AclRule> {
        let Some(operation) = Operation::parse(&self.operation) else {
            bail!(
                "unknown operation {:?}; use one of {}",
                self.operation,
                Operation::ALL.map(Operation::as_str).join(", ")
            );
        };
        let (resource, name) = match (&self.topic, &self.group, self.cluster) {
            (Some(t), None, false) => (ResourceKind::Topic, t.clone()),
            (None, Some(g), false) => (ResourceKind::Group, g.clone()),
            (None, None, true) => (ResourceKind::Cluster, String::new()),
            _ => bail!("name exactly one resource: --topic NAME, --group NAME or --cluster"),
        };
        let rule = AclRule {
            principal: self.principal.clone(),
            operation,
            resource,
            name,
            pattern: if self.prefixed {
                PatternType::Prefixed
            } else {
                PatternType::Literal
            },
            permission: if self.deny {
                Permission::Deny
            } else {
                Permission::Allow
            },
        };
        rule.validate().map_err(anyhow::Error::msg)?;
        Ok(rule)
    }
}

pub async fn run(command: AclCommand) -> anyhow::Result<()> {
    let (listing, json_out) = match command {
        AclCommand::List { json, conn } => (Admin::new(client(&conn)?).list_acls().await?, json),
        AclCommand::Add { rule, json, conn } => {
            let rule = rule.rule()?;
            (Admin::new(client(&conn)?).add_acl(rule).await?, json)
        }
        AclCommand::Remove { rule, json, conn } => {
            let rule = rule.rule()?;
            (Admin::new(client(&conn)?).remove_acl(rule).await?, json)
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&as_json(&listing))?);
    } else {
        print!("{}", human(&listing));
    }
    Ok(())
}

fn as_json(l: &AclListing) -> serde_json::Value {
    json!({
        "enabled": l.enabled,
        "superusers": l.superusers,
        "acls": l.acls.iter().map(|e| json!({
            "principal": e.rule.principal,
            "operation": e.rule.operation.as_str(),
            "resource": e.rule.resource.as_str(),
            "name": e.rule.name,
            "pattern": match e.rule.pattern { PatternType::Literal => "literal", PatternType::Prefixed => "prefixed" },
            "permission": match e.rule.permission { Permission::Allow => "allow", Permission::Deny => "deny" },
            "source": e.source,
        })).collect::<Vec<_>>(),
    })
}

fn human(l: &AclListing) -> String {
    let mut out = format!(
        "authorization: {}\nsuperusers: {}\n",
        if l.enabled {
            "enforced"
        } else {
            "off (every authenticated principal may do everything; set [security] authorization = true)"
        },
        if l.superusers.is_empty() {
            "none".to_string()
        } else {
            l.superusers.join(", ")
        }
    );
    let rows = l
        .acls
        .iter()
        .map(|e| {
            let r = &e.rule;
            vec![
                r.principal.clone(),
                format!("{:?}", r.permission).to_lowercase(),
                r.operation.as_str().into(),
                r.resource.as_str().into(),
                match (r.resource, r.pattern) {
                    (ResourceKind::Cluster, _) => "-".into(),
                    (_, PatternType::Prefixed) => format!("{}*", r.name),
                    _ => r.name.clone(),
                },
                e.source.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PRINCIPAL",
            "PERMISSION",
            "OPERATION",
            "RESOURCE",
            "NAME",
            "SOURCE",
        ],
        rows,
    ));
    out
}
