//! Declarative federations: one TOML file names the clusters, their nodes, the certificates, the
//! topics and the flows between clusters (`docs/topologies.md`). This module parses and checks
//! such a file; it does no I/O beyond reading it and looking for certificate files, so the
//! commands that compare it with live clusters (`strait topology plan|apply|up`) build on a
//! value that is known to be sound.

mod check;
mod model;
mod voters;

use std::path::{Path, PathBuf};

pub use check::{certificate_files, check, node_identity, Problem};
pub use model::{
    Cluster, Defaults, FailoverPair, Flow, Node, Principal, Security, Topic, Topology, Wan,
};
pub use voters::{parse_voters, VoterError};

/// Why a topology file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("cannot read {path}: {reason}; check the path")]
    Read { path: PathBuf, reason: String },
    /// The message carries the line and column (from the TOML parser).
    #[error("{path} is not a valid topology: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// A topology that parsed and passed every check, with where its certificates live.
#[derive(Debug, Clone)]
pub struct LoadedTopology {
    pub topology: Topology,
    pub path: PathBuf,
    /// The certificate folder the file names (relative to the file), if any.
    pub certs_dir: Option<PathBuf>,
    /// Allowed but worth knowing: identity cycles, certificates still to make.
    pub notes: Vec<String>,
}

/// Parses `text` (read from `path`, which only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Topology, TopologyError> {
    toml::from_str(text).map_err(|e| TopologyError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads, parses and checks a topology file.
pub fn load(path: &Path) -> Result<LoadedTopology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let topology = parse(path, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let certs_dir = topology.security.certs_dir.as_ref().map(|d| base.join(d));
    let notes =
        check(&topology, certs_dir.as_deref()).map_err(|problems| TopologyError::Invalid {
            path: path.to_path_buf(),
            problems,
        })?;
    Ok(LoadedTopology {
        topology,
        path: path.to_path_buf(),
        certs_dir,
        notes,
    })
}

#[cfg(test)]
mod tests;
