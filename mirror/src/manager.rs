//! The flows a process runs (a node acting as its cluster's gateway, or a standalone `strait
//! mirror run`): started from a config, added, replaced and removed at run time, and persisted
//! so flows added through the admin API survive a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strait_protocol::client::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::copier::lock;
use crate::endpoint::Endpoint;
use crate::flow::MirrorFlow;
use crate::spec::{FlowSpec, SpecError};
use crate::status::{now_ms, FlowStatus};

/// Makes a client for a list of bootstrap addresses (with the process's certificate).
/// Makes a client of a cluster from its bootstrap addresses, introducing itself with a client
/// id (a flow's source client says which flow it is, so the source node can show who copies
/// from it).
pub type Connector = Arc<dyn Fn(Vec<String>, &str) -> Arc<Client> + Send + Sync>;

/// The client id a flow's source connection introduces itself with:
/// `strait-mirror/<flow>→<target>`, the target being the cluster the flow writes into (its
/// name when the flow runs in a node of it, else its bootstrap addresses).
pub fn flow_client_id(flow: &str, target: &str) -> String {
    format!("{FLOW_CLIENT_ID_PREFIX}{flow}→{target}")
}

/// What every flow's client id starts with.
pub const FLOW_CLIENT_ID_PREFIX: &str = "strait-mirror/";

/// Why a change to the running flows was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("flow {0:?} already runs with other settings; replace it (PUT /flows/{0}) or remove it first")]
    Exists(String),
    #[error("no flow named {0:?} runs here; list them with `strait mirror status`")]
    NotFound(String),
    #[error("flow {0}: target_bootstrap is empty and this process is not a node; name the target cluster's nodes")]
    NoTarget(String),
    #[error("flow {0:?} uses identity naming: its target topics already take local writes, so there is nothing to promote")]
    NotPromotable(String),
    #[error("cannot persist the flows to {path}: {reason}")]
    Persist { path: String, reason: String },
}

struct Running {
    spec: FlowSpec,
    status: Arc<Mutex<FlowStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A flow's description and progress, as the admin API and `mirror status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub spec: FlowSpec,
    pub status: FlowStatus,
}

/// What is persisted: flows added at run time, and config flows removed at run time.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    added: Vec<FlowSpec>,
    removed: Vec<String>,
}

/// Writes a state file durably (the node's `durable_file::write`: temporary file, fsync,
/// rename, fsync of the directory). Passed in because file durability is the node's room.
pub type WriteFile = fn(&std::path::Path, &[u8]) -> std::io::Result<()>;

/// Where run-time flow changes are kept, and how they are written.
#[derive(Clone)]
pub struct FlowStore {
    pub path: PathBuf,
    pub write: WriteFile,
}

/// The flows of one process.
pub struct FlowManager {
    connect: Connector,
    /// Where flows with an empty `target_bootstrap` write (the node itself), if anywhere.
    local_target: Option<Arc<dyn Endpoint>>,
    persist: Option<FlowStore>,
    flows: Mutex<BTreeMap<String, Running>>,
    changes: Mutex<Persisted>,
}

impl FlowManager {
    pub fn new(
        connect: Connector,
        local_target: Option<Arc<dyn Endpoint>>,
        persist: Option<FlowStore>,
    ) -> Arc<Self> {
        Arc::new(FlowManager {
            connect,
            local_target,
            persist,
            flows: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(Persisted::default()),
        })
    }

    /// Starts the configured flows, minus those removed at run time, plus those added then.
    /// A store that exists but cannot be read stops here with its name: silently starting
    /// from the config alone would resurrect removed flows and forget added ones.
    pub fn start_configured(&self, configured: Vec<FlowSpec>) -> Result<(), ManagerError> {
        let persisted: Persisted = match &self.persist {
            None => Persisted::default(),
            Some(store) => {
                let err = |reason: String| ManagerError::Persist {
                    path: store.path.display().to_string(),
                    reason,
                };
                match std::fs::read(&store.path) {
                    Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                        err(format!("it is damaged ({e}); fix or remove it (removing forgets the flows added and removed at run time) and restart"))
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
                    Err(e) => return Err(err(format!("cannot read it ({e})"))),
                }
            }
        };
        let mut all: BTreeMap<String, FlowSpec> = configured
            .into_iter()
            .filter(|f| !persisted.removed.contains(&f.name))
            .map(|f| (f.name.clone(), f))
            .collect();
        for f in &persisted.added {
            all.insert(f.name.clone(), f.clone());
        }
        *lock(&self.changes) = persisted;
        for spec in all.into_values() {
            self.spawn(spec)?;
        }
        Ok(())
    }

    /// Adds a flow at run time. Adding the very same description again changes nothing.
    pub fn add(&self, spec: FlowSpec) -> Result<bool, ManagerError> {
        if let Some(r) = lock(&self.flows).get(&spec.name) {
            if r.spec == spec {
                return Ok(false);
            }
            return Err(ManagerError::Exists(spec.name));
        }
        self.start_added(spec)?;
        Ok(true)
    }

    /// Replaces a flow's settings (stop, then start with the new ones; state lives in the
    /// target, so it resumes exactly where it stood).
    pub async fn replace(&self, spec: FlowSpec) -> Result<bool, ManagerError> {
        spec.to_config()?;
        let same = lock(&self.flows).get(&spec.name).map(|r| r.spec == spec);
        match same {
            Some(true) => return Ok(false),
            Some(false) => self.stop(&spec.name).await?,
            None => {}
        }
        self.start_added(spec)?;
        Ok(true)
    }

    /// Starts a flow added at run time and persists it as added.
    fn start_added(&self, spec: FlowSpec) -> Result<(), ManagerError> {
        self.spawn(spec.clone())?;
        self.record(|p| {
            p.removed.retain(|n| *n != spec.name);
            p.added.retain(|f| f.name != spec.name);
            p.added.push(spec);
        })
    }

    /// Stops and forgets a flow; what it copied stays on the target.
    pub async fn remove(&self, name: &str) -> Result<(), ManagerError> {
        self.stop(name).await?;
        self.record(|p| {
            p.added.retain(|f| f.name != name);
            if !p.removed.iter().any(|n| n == name) {
                p.removed.push(name.to_string());
            }
        })
    }

    /// Every flow with its progress as of now.
    pub fn list(&self) -> Vec<FlowReport> {
        let now = now_ms();
        lock(&self.flows)
            .values()
            .map(|r| FlowReport {
                spec: r.spec.clone(),
                status: lock(&r.status).report(now),
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<FlowReport> {
        self.list().into_iter().find(|r| r.spec.name == name)
    }

    /// Stops a prefix-mode flow for `source_topics` (all of them when empty) so their mirror
    /// topics can be promoted: the whole flow is removed, or, for some topics, it keeps running
    /// with those excluded. Returns the flow's progress as of the stop, which is the recovery
    /// point of each partition.
    pub async fn stop_for_promotion(
        &self,
        name: &str,
        source_topics: &[String],
    ) -> Result<FlowReport, ManagerError> {
        let (spec, status) = {
            let flows = lock(&self.flows);
            let r = flows
                .get(name)
                .ok_or_else(|| ManagerError::NotFound(name.to_string()))?;
            (r.spec.clone(), r.status.clone())
        };
        if spec.naming == crate::Naming::Identity.as_str() {
            return Err(ManagerError::NotPromotable(name.to_string()));
        }
        if source_topics.is_empty() {
            self.remove(name).await?;
        } else {
            let escaped: Vec<String> = source_topics.iter().map(|t| regex::escape(t)).collect();
            let mut narrowed = spec.clone();
            narrowed.exclude = Some(match &spec.exclude {
                Some(e) => format!("(?:{e})|{}", escaped.join("|")),
                None => escaped.join("|"),
            });
            self.replace(narrowed).await?;
        }
        let status = lock(&status).report(now_ms());
        Ok(FlowReport { spec, status })
    }

    /// Stops every flow (on shutdown).
    pub async fn shutdown(&self) {
        let names: Vec<String> = lock(&self.flows).keys().cloned().collect();
        for n in names {
            let _ = self.stop(&n).await;
        }
    }

    fn spawn(&self, spec: FlowSpec) -> Result<(), ManagerError> {
        let config = spec.to_config()?;
        let (target, target_name): (Arc<dyn Endpoint>, String) = if spec.target_bootstrap.is_empty()
        {
            match &self.local_target {
                Some(local) => (
                    local.clone(),
                    local.cluster_name().unwrap_or_else(|| "its target".into()),
                ),
                None => return Err(ManagerError::NoTarget(spec.name)),
            }
        } else {
            (
                (self.connect)(spec.target_bootstrap.clone(), "strait-mirror-target"),
                spec.target_bootstrap.join(","),
            )
        };
        let source = (self.connect)(
            spec.source_bootstrap.clone(),
            &flow_client_id(&spec.name, &target_name),
        );
        let flow = MirrorFlow::new(config, source, target);
        let status = flow.status_handle();
        let (stop, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = flow.run(stop_rx).await {
                warn!(flow = %name, error = %e, "mirror flow ended with an error");
                lock(&flow.status_handle()).last_error = Some(e.to_string());
            }
        });
        info!(flow = %spec.name, "mirror flow scheduled");
        lock(&self.flows).insert(
            spec.name.clone(),
            Running {
                spec,
                status,
                stop,
                task,
            },
        );
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<(), ManagerError> {
        let running = lock(&self.flows)
            .remove(name)
            .ok_or_else(|| ManagerError::NotFound(name.to_string()))?;
        let _ = running.stop.send(true);
        let abort = running.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), running.task)
            .await
            .is_err()
        {
            abort.abort();
        }
        info!(flow = name, "mirror flow removed");
        Ok(())
    }

    fn record(&self, change: impl FnOnce(&mut Persisted)) -> Result<(), ManagerError> {
        let mut p = lock(&self.changes);
        change(&mut p);
        let Some(store) = &self.persist else {
            return Ok(());
        };
        let err = |reason: String| ManagerError::Persist {
            path: store.path.display().to_string(),
            reason,
        };
        let raw = serde_json::to_vec_pretty(&*p).map_err(|e| err(e.to_string()))?;
        (store.write)(&store.path, &raw).map_err(|e| err(e.to_string()))
    }
}
