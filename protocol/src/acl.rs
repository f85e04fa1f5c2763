//! Access-control rules and how they decide: (principal, operation, resource pattern,
//! allow | deny). Pure, so the node, the CLI and the topology checker share one meaning.
//!
//! Deny overrides allow. A principal with no matching allow is refused (default deny); the
//! node's superusers skip the rules. Some operations imply others, as in Kafka: whoever may
//! read, write, delete, alter, mirror or use a group may also describe it, and a mirror flow
//! (operation `mirror`) may read the topics and groups it copies. Implications only widen
//! allows; a deny names exactly the operation it denies.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Fetch records, list offsets, commit a group's position in the topic.
    Read,
    /// Produce records.
    Write,
    /// Create topics.
    Create,
    /// Delete topics.
    Delete,
    /// See that a topic or group exists, its settings and offsets.
    Describe,
    /// Change settings, add partitions; manage ACLs (on the cluster).
    Alter,
    /// Copy as a replica: read a source, create mirror topics, append at explicit offsets.
    Mirror,
    /// Join, sync, heartbeat, leave and commit in a consumer group.
    Group,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Describe,
        Operation::Alter,
        Operation::Mirror,
        Operation::Group,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::Mirror => "mirror",
            Operation::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether an allow of `self` also allows `wanted`.
    fn implies(self, wanted: Operation) -> bool {
        use Operation::*;
        self == wanted
            || (wanted == Describe && self != Create)
            || (self == Mirror && matches!(wanted, Read | Group))
    }
}

/// What kind of thing a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Topic,
    Group,
    /// The node itself: ACL management (`alter`, `describe`).
    Cluster,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Cluster => "cluster",
        }
    }
}

/// How a rule's name matches a resource's name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    /// The exact name; `*` matches every name.
    #[default]
    Literal,
    /// Every name starting with the rule's name.
    Prefixed,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    #[default]
    Allow,
    Deny,
}

/// One rule. In TOML: `{ principal = "app", operation = "read", resource = "topic",
/// name = "orders.", pattern = "prefixed", permission = "allow" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A certificate's common name, or `*` for every authenticated principal.
    pub principal: String,
    pub operation: Operation,
    pub resource: ResourceKind,
    /// The topic or group name (or prefix); ignored for `cluster`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub pattern: PatternType,
    #[serde(default)]
    pub permission: Permission,
}

impl AclRule {
    /// Whether this rule speaks about `principal` doing something to `kind`/`name`.
    fn covers(&self, principal: &str, kind: ResourceKind, name: &str) -> bool {
        if self.principal != "*" && self.principal != principal {
            return false;
        }
        if self.resource != kind {
            return false;
        }
        if kind == ResourceKind::Cluster {
            return true;
        }
        match self.pattern {
            PatternType::Literal => self.name == "*" || self.name == name,
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }

    /// Checks the rule is well formed; the message names the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.principal.is_empty() {
            return Err("an ACL needs a principal (a certificate's common name, or \"*\")".into());
        }
        if self.resource != ResourceKind::Cluster
            && self.name.is_empty()
            && self.pattern == PatternType::Literal
        {
            return Err(format!(
                "an ACL on a {} needs a name (use \"*\" for all, or pattern = \"prefixed\")",
                self.resource.as_str()
            ));
        }
        Ok(())
    }
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.permission {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        };
        write!(
            f,
            "{verb} {:?} {} on ",
            self.principal,
            self.operation.as_str()
        )?;
        match (self.resource, self.pattern) {
            (ResourceKind::Cluster, _) => write!(f, "the cluster"),
            (kind, PatternType::Literal) => write!(f, "{} {:?}", kind.as_str(), self.name),
            (kind, PatternType::Prefixed) => {
                write!(f, "{}s prefixed {:?}", kind.as_str(), self.name)
            }
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No allow rule matched.
    NoRule,
    /// This deny rule matched.
    Denied(AclRule),
}

/// Decides one request against `rules`: deny first, then any implying allow.
pub fn decide<'a>(
    rules: impl Iterator<Item = &'a AclRule> + Clone,
    principal: &str,
    operation: Operation,
    kind: ResourceKind,
    name: &str,
) -> Decision {
    let covering = rules.filter(|r| r.covers(principal, kind, name));
    if let Some(deny) = covering
        .clone()
        .find(|r| r.permission == Permission::Deny && r.operation == operation)
    {
        return Decision::Denied(deny.clone());
    }
    if covering
        .clone()
        .any(|r| r.permission == Permission::Allow && r.operation.implies(operation))
    {
        Decision::Allowed
    } else {
        Decision::NoRule
    }
}

/// An ACL as listed: the rule and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    pub rule: AclRule,
    /// `config` (the node's file; edit it to change) or `dynamic` (`strait acl add`).
    pub source: String,
}

/// What `ListAcls` answers besides the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclListing {
    /// Whether the node enforces the rules at all.
    pub enabled: bool,
    pub superusers: Vec<String>,
    pub acls: Vec<AclEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(principal: &str, op: Operation, name: &str, pattern: PatternType) -> AclRule {
        AclRule {
            principal: principal.into(),
            operation: op,
            resource: ResourceKind::Topic,
            name: name.into(),
            pattern,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn deny_overrides_allow_and_no_rule_means_no() {
        let mut deny = rule(
            "app",
            Operation::Read,
            "orders.secret",
            PatternType::Literal,
        );
        deny.permission = Permission::Deny;
        let rules = [
            rule("app", Operation::Read, "orders.", PatternType::Prefixed),
            deny.clone(),
        ];
        let d = |op, name| decide(rules.iter(), "app", op, ResourceKind::Topic, name);
        assert_eq!(d(Operation::Read, "orders.eu"), Decision::Allowed);
        assert_eq!(d(Operation::Describe, "orders.eu"), Decision::Allowed);
        assert_eq!(d(Operation::Read, "orders.secret"), Decision::Denied(deny));
        assert_eq!(d(Operation::Write, "orders.eu"), Decision::NoRule);
        assert_eq!(d(Operation::Read, "payments"), Decision::NoRule);
        assert_eq!(
            decide(
                rules.iter(),
                "other",
                Operation::Read,
                ResourceKind::Topic,
                "orders.eu"
            ),
            Decision::NoRule
        );
    }

    #[test]
    fn wildcards_and_implications() {
        let rules = [
            rule("*", Operation::Describe, "*", PatternType::Literal),
            rule("flow", Operation::Mirror, "", PatternType::Prefixed),
        ];
        let d = |p, op, name| decide(rules.iter(), p, op, ResourceKind::Topic, name);
        assert_eq!(d("anyone", Operation::Describe, "x"), Decision::Allowed);
        assert_eq!(d("anyone", Operation::Read, "x"), Decision::NoRule);
        assert_eq!(d("flow", Operation::Read, "x"), Decision::Allowed);
        assert_eq!(d("flow", Operation::Mirror, "x"), Decision::Allowed);
        assert_eq!(d("flow", Operation::Write, "x"), Decision::NoRule);
        // Create does not imply describe, and nothing about topics covers groups.
        let creator = [rule("c", Operation::Create, "*", PatternType::Literal)];
        let dc = |op| decide(creator.iter(), "c", op, ResourceKind::Topic, "t");
        assert_eq!(dc(Operation::Create), Decision::Allowed);
        assert_eq!(dc(Operation::Describe), Decision::NoRule);
        assert_eq!(
            decide(
                rules.iter(),
                "flow",
                Operation::Describe,
                ResourceKind::Group,
                "g"
            ),
            Decision::NoRule
        );
    }

    #[test]
    fn rules_read_from_toml_with_defaults() {
        #[derive(Deserialize)]
        struct File {
            acls: Vec<AclRule>,
        }
        let f: File = toml::from_str(
            r#"acls = [{ principal = "app", operation = "write", resource = "topic", name = "t" },
                       { principal = "ops", operation = "alter", resource = "cluster" }]"#,
        )
        .unwrap();
        let r = f.acls[0].clone();
        assert_eq!(r.pattern, PatternType::Literal);
        assert_eq!(r.permission, Permission::Allow);
        assert!(r.validate().is_ok() && f.acls[1].validate().is_ok());
        let bad = AclRule {
            name: String::new(),
            ..r
        };
        assert!(bad.validate().unwrap_err().contains("needs a name"));
        let typo = toml::from_str::<File>(
            r#"acls = [{ principal = "a", operation = "wrte", resource = "topic", name = "t" }]"#,
        );
        assert!(typo.is_err());
    }
}
