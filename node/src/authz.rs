//! The node's authorizer: the ACLs from its config (fixed while it runs) plus the ones added
//! with `strait acl add` (persisted in `acls.json` in the data directory), and the superusers
//! who skip them.
//!
//! A refusal names the principal, the operation and the resource the principal asked for, and
//! the command that would grant it; it never says whether the resource exists, so a principal
//! learns nothing about topics or groups it may not describe.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use strait_protocol::acl::{
    decide, AclEntry, AclListing, AclRule, Decision, Operation, ResourceKind,
};
use strait_protocol::{ErrorCode, WireError};
use tracing::warn;

/// The `[security]` part of a node config that concerns authorization.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// Enforce the ACLs. Off, every authenticated principal may do everything (mutual TLS
    /// still decides who connects at all).
    pub enabled: bool,
    /// Principals that skip the rules (operators, the federation's own nodes).
    pub superusers: Vec<String>,
    pub acls: Vec<AclRule>,
}

/// Why the ACL store could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ACL file ({source}); fix or remove it")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid ACL {rule}: {reason}")]
    Invalid { rule: String, reason: String },
}

const FILE: &str = "acls.json";

#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    superusers: BTreeSet<String>,
    fixed: Vec<AclRule>,
    dynamic: RwLock<Vec<AclRule>>,
    path: Option<PathBuf>,
}

impl Authorizer {
    /// Loads the persisted rules from `data_dir` (if any) beside the config's.
    pub fn open(config: AuthzConfig, data_dir: Option<&Path>) -> Result<Authorizer, AuthzError> {
        for rule in &config.acls {
            rule.validate().map_err(|reason| AuthzError::Invalid {
                rule: rule.to_string(),
                reason,
            })?;
        }
        let path = data_dir.map(|d| d.join(FILE));
        let dynamic = match &path {
            Some(p) if p.exists() => {
                let raw = std::fs::read(p).map_err(|source| AuthzError::Read {
                    path: p.clone(),
                    source,
                })?;
                serde_json::from_slice(&raw).map_err(|source| AuthzError::Parse {
                    path: p.clone(),
                    source,
                })?
            }
            _ => Vec::new(),
        };
        Ok(Authorizer {
            enabled: config.enabled,
            superusers: config.superusers.into_iter().collect(),
            fixed: config.acls,
            dynamic: RwLock::new(dynamic),
            path,
        })
    }

    /// Everything allowed: for nodes without a `[security]` section and for tests.
    pub fn open_to_all() -> Authorizer {
        Authorizer {
            enabled: false,
            superusers: BTreeSet::new(),
            fixed: Vec::new(),
            dynamic: RwLock::new(Vec::new()),
            path: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` may do `op` to `kind`/`name`.
    pub fn allows(&self, principal: &str, op: Operation, kind: ResourceKind, name: &str) -> bool {
        self.decide(principal, op, kind, name) == Decision::Allowed
    }

    fn decide(&self, principal: &str, op: Operation, kind: ResourceKind, name: &str) -> Decision {
        if !self.enabled || self.superusers.contains(principal) {
            return Decision::Allowed;
        }
        let dynamic = self.dynamic.read().unwrap_or_else(|e| e.into_inner());
        decide(
            self.fixed.iter().chain(dynamic.iter()),
            principal,
            op,
            kind,
            name,
        )
    }

    /// Like [`Authorizer::allows`], with the refusal a client sees.
    pub fn check(
        &self,
        principal: &str,
        op: Operation,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), WireError> {
        let what = match kind {
            ResourceKind::Cluster => "the cluster".to_string(),
            k => format!("{} {name:?}", k.as_str()),
        };
        let target = match kind {
            ResourceKind::Cluster => "--cluster".to_string(),
            k => format!("--{} {name}", k.as_str()),
        };
        let why = match self.decide(principal, op, kind, name) {
            Decision::Allowed => return Ok(()),
            Decision::NoRule => format!(
                "no ACL allows it. An operator can grant it with `strait acl add --principal {principal} --operation {} {target}`",
                op.as_str()
            ),
            Decision::Denied(rule) => format!("the ACL \"{rule}\" denies it"),
        };
        warn!(%principal, operation = op.as_str(), resource = %what, "refused by ACL");
        Err(WireError::new(
            ErrorCode::UNAUTHORIZED,
            format!(
                "principal {principal:?} may not {} {what}: {why}",
                op.as_str()
            ),
        ))
    }

    pub fn listing(&self) -> AclListing {
        let dynamic = self.dynamic.read().unwrap_or_else(|e| e.into_inner());
        let entry = |source: &'static str| {
            move |rule: &AclRule| AclEntry {
                rule: rule.clone(),
                source: source.into(),
            }
        };
        AclListing {
            enabled: self.enabled,
            superusers: self.superusers.iter().cloned().collect(),
            acls: self
                .fixed
                .iter()
                .map(entry("config"))
                .chain(dynamic.iter().map(entry("dynamic")))
                .collect(),
        }
    }

    /// Adds a rule and persists the set before answering; adding a present rule changes nothing.
    pub fn add(&self, rule: AclRule) -> Result<(), WireError> {
        rule.validate()
            .map_err(|r| WireError::new(ErrorCode::INVALID_REQUEST, r))?;
        let mut dynamic = self.dynamic.write().unwrap_or_else(|e| e.into_inner());
        if self.fixed.contains(&rule) || dynamic.contains(&rule) {
            return Ok(());
        }
        let mut next = dynamic.clone();
        next.push(rule);
        self.persist(&next)?;
        *dynamic = next;
        Ok(())
    }

    /// Removes a rule added at run time; rules from the config file are refused with the fix.
    pub fn remove(&self, rule: &AclRule) -> Result<(), WireError> {
        let mut dynamic = self.dynamic.write().unwrap_or_else(|e| e.into_inner());
        if !dynamic.contains(rule) {
            let why = if self.fixed.contains(rule) {
                format!("the ACL \"{rule}\" comes from the node's config file; remove it there and restart the node")
            } else {
                format!("there is no ACL \"{rule}\"; `strait acl list` shows them")
            };
            return Err(WireError::new(ErrorCode::INVALID_REQUEST, why));
        }
        let next: Vec<AclRule> = dynamic.iter().filter(|r| *r != rule).cloned().collect();
        self.persist(&next)?;
        *dynamic = next;
        Ok(())
    }

    /// Writes the set to a temporary file, syncs it and renames it over the old one, so a crash
    /// leaves either the old set or the new one.
    fn persist(&self, rules: &[AclRule]) -> Result<(), WireError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let write = || -> std::io::Result<()> {
            let raw = serde_json::to_vec_pretty(rules).map_err(std::io::Error::other)?;
            crate::durable_file::write(path, &raw)
        };
        write().map_err(|e| {
            WireError::new(
                ErrorCode::STORAGE,
                format!("cannot save the ACLs to {}: {e}", path.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use strait_protocol::acl::{PatternType, Permission};

    use super::*;

    fn rule(op: Operation) -> AclRule {
        AclRule {
            principal: "app".into(),
            operation: op,
            resource: ResourceKind::Topic,
            name: "orders".into(),
            pattern: PatternType::Literal,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn added_rules_survive_a_reopen_and_config_rules_cannot_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthzConfig {
            enabled: true,
            superusers: vec!["root".into()],
            acls: vec![rule(Operation::Read)],
        };
        let a = Authorizer::open(config.clone(), Some(dir.path())).unwrap();
        assert!(a.allows("root", Operation::Delete, ResourceKind::Topic, "x"));
        assert!(a.allows("app", Operation::Read, ResourceKind::Topic, "orders"));
        let err = a
            .check("app", Operation::Write, ResourceKind::Topic, "orders")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UNAUTHORIZED);
        assert!(
            err.message
                .contains("strait acl add --principal app --operation write --topic orders"),
            "{}",
            err.message
        );
        a.add(rule(Operation::Write)).unwrap();
        assert!(a.remove(&rule(Operation::Read)).is_err());
        drop(a);
        let b = Authorizer::open(config, Some(dir.path())).unwrap();
        assert!(b.allows("app", Operation::Write, ResourceKind::Topic, "orders"));
        assert_eq!(b.listing().acls.len(), 2);
        b.remove(&rule(Operation::Write)).unwrap();
        assert!(!b.allows("app", Operation::Write, ResourceKind::Topic, "orders"));
    }
}
