//! Profiles, as rpk profiles and nats contexts: a named cluster address and client identity, so
//! commands need neither flags nor environment. Kept in `$XDG_CONFIG_HOME/strait/profiles.toml`
//! (else `~/.config/strait/profiles.toml`), mode 0600 since it names key files.
//!
//! Precedence, per setting: flags, then environment (`STRAIT_BOOTSTRAP`, `STRAIT_CA`,
//! `STRAIT_CERT`, `STRAIT_KEY`), then the profile chosen with `--profile` or `STRAIT_PROFILE`,
//! else the current one (`strait profile use`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// One cluster and the identity to reach it with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub bootstrap: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// The profiles file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profiles {
    /// Used when no profile is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Save a cluster's addresses and a client identity under NAME (replacing one of that name).
    Create {
        /// Name of the profile.
        name: String,
        /// Node addresses, HOST:PORT[,HOST:PORT…].
        #[arg(long, value_delimiter = ',', required = true)]
        bootstrap: Vec<String>,
        /// CA certificate that signed the nodes' certificates.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// This client's certificate.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// This client's private key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Also make it the current profile.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make NAME the profile used when none is named.
    Use {
        /// Name of the profile.
        name: String,
    },
    /// List the profiles; the current one is marked.
    List {
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Delete a profile.
    Delete {
        /// Name of the profile.
        name: String,
    },
}

/// Where profiles live.
pub fn file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("strait").join("profiles.toml")
}

/// Reads the profiles file; a missing one is empty.
pub fn load(path: &Path) -> anyhow::Result<Profiles> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid profiles file; fix it or delete it and create the profiles again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Changes the profiles file under an exclusive lock, so two commands writing at once (two
/// `topology up`, say) never lose each other's profiles.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Profiles) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = path.parent().unwrap_or(Path::new("."));
    strait_node::durable_file::create_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("profiles.lock"))
        .with_context(|| format!("cannot open {}", dir.join("profiles.lock").display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    let mut profiles = load(path)?;
    let out = change(&mut profiles)?;
    let text = toml::to_string_pretty(&profiles).context("cannot write the profiles")?;
    strait_node::durable_file::write_private(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(out)
}

/// Saves `profile` under `name` (what `profile create` and `topology up` do).
pub fn save(name: &str, profile: Profile, make_current: bool) -> anyhow::Result<PathBuf> {
    let path = file();
    update(&path, |p| {
        p.profiles.insert(name.to_string(), profile);
        if make_current {
            p.current = Some(name.to_string());
        }
        Ok(())
    })?;
    Ok(path)
}

static SELECTED: OnceLock<Option<(String, Profile)>> = OnceLock::new();

/// Chooses the profile for this run: `name` (from `--profile` or `STRAIT_PROFILE`), else the
/// current one. A named profile that does not exist is an error; no profile at all is fine.
pub fn select(name: Option<&str>) -> anyhow::Result<()> {
    let path = file();
    let chosen = match name {
        Some(name) => {
            let profiles = load(&path)?;
            let Some(p) = profiles.profiles.get(name) else {
                let known: Vec<&String> = profiles.profiles.keys().collect();
                anyhow::bail!(
                    "no profile {name:?} in {} (profiles: {known:?}); create it with `strait profile create {name} --bootstrap HOST:PORT --ca CA --cert CERT --key KEY`",
                    path.display()
                );
            };
            Some((name.to_string(), p.clone()))
        }
        // A broken file must not stop commands that name everything with flags: it is only
        // reported when a profile is asked for.
        None => load(&path).ok().and_then(|profiles| {
            let current = profiles.current?;
            let p = profiles.profiles.get(&current)?.clone();
            Some((current, p))
        }),
    };
    let _ = SELECTED.set(chosen);
    Ok(())
}

/// The profile chosen for this run, if any.
pub fn selected() -> Option<&'static (String, Profile)> {
    SELECTED.get().and_then(Option::as_ref)
}

/// An absolute path, so a profile works from any directory.
fn absolute(p: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    p.map(|p| {
        if !p.exists() {
            anyhow::bail!(
                "{} does not exist; give the path of an existing file",
                p.display()
            );
        }
        std::path::absolute(&p).with_context(|| format!("cannot resolve {}", p.display()))
    })
    .transpose()
}

pub fn run(command: ProfileCommand) -> anyhow::Result<()> {
    let path = file();
    match command {
        ProfileCommand::Create {
            name,
            bootstrap,
            ca,
            cert,
            key,
            make_current,
        } => {
            let profile = Profile {
                bootstrap,
                ca: absolute(ca)?,
                cert: absolute(cert)?,
                key: absolute(key)?,
            };
            save(&name, profile, make_current)?;
            println!(
                "profile {name} saved in {}{}",
                path.display(),
                if make_current { " (current)" } else { "" }
            );
        }
        ProfileCommand::Use { name } => {
            update(&path, |p| {
                if !p.profiles.contains_key(&name) {
                    anyhow::bail!(
                        "no profile {name:?}; `strait profile list` shows them, `strait profile create` makes one"
                    );
                }
                p.current = Some(name.clone());
                Ok(())
            })?;
            println!("using profile {name}");
        }
        ProfileCommand::List { json } => {
            let p = load(&path)?;
            if json {
                let list: Vec<_> = p
                    .profiles
                    .iter()
                    .map(|(name, prof)| {
                        serde_json::json!({
                            "name": name,
                            "current": p.current.as_deref() == Some(name.as_str()),
                            "bootstrap": prof.bootstrap,
                            "ca": prof.ca,
                            "cert": prof.cert,
                            "key": prof.key,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "file": path, "profiles": list }));
            } else if p.profiles.is_empty() {
                println!(
                    "no profiles in {}; `strait profile create NAME --bootstrap HOST:PORT --ca CA --cert CERT --key KEY` makes one",
                    path.display()
                );
            } else {
                for (name, prof) in &p.profiles {
                    let mark = if p.current.as_deref() == Some(name.as_str()) {
                        "*"
                    } else {
                        " "
                    };
                    println!("{mark} {name:<24} {}", prof.bootstrap.join(","));
                }
            }
        }
        ProfileCommand::Delete { name } => {
            update(&path, |p| {
                if p.profiles.remove(&name).is_none() {
                    anyhow::bail!("no profile {name:?}; `strait profile list` shows them");
                }
                if p.current.as_deref() == Some(name.as_str()) {
                    p.current = None;
                }
                Ok(())
            })?;
            println!("profile {name} deleted");
        }
    }
    Ok(())
}
