//! Command-line parsing and the subcommands' entry points. Human output by default, `--json`
//! for scripts; errors carry their cause and fix up to `main`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod acl_cmd;
mod bench;
mod certs_cmd;
mod client_cmd;
mod cluster_cmd;
mod debug_cmd;
mod group_cmd;
mod http;
mod mirror_cmd;
mod node_cmd;
mod output;
pub mod profile;
mod topology;

#[derive(Parser, Debug)]
#[command(
    name = "strait",
    version,
    about = "A commit-log broker that federates clusters across regions over QUIC"
)]
pub struct Cli {
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human")]
    pub log_format: String,
    /// The profile giving the cluster's addresses and the client identity where flags and
    /// environment do not (default: the current profile; see `strait profile`).
    #[arg(long, global = true, env = "STRAIT_PROFILE")]
    pub profile: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node.
    #[command(subcommand)]
    Node(node_cmd::NodeCommand),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(client_cmd::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(client_cmd::ProduceArgs),
    /// Consume records and print them.
    Consume(client_cmd::ConsumeArgs),
    /// Inspect consumer groups and move their offsets.
    #[command(subcommand)]
    Group(group_cmd::GroupCommand),
    /// Run mirror flows between clusters.
    #[command(subcommand)]
    Mirror(mirror_cmd::MirrorCommand),
    /// Describe a federation in one file; validate, plan, apply, or run it locally (up).
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Make and inspect certificates.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Named clusters and identities, so commands need no --bootstrap, --ca, --cert, --key.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// List, add and remove a node's access rules (ACLs).
    #[command(subcommand)]
    Acl(acl_cmd::AclCommand),
    /// The cluster's controller quorum and nodes.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Benchmarks with same-run baselines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script: `strait completions bash > /etc/bash_completion.d/strait`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (strait.1 and one per subcommand, e.g. strait-topic-create.1) to a folder.
    Man {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Test helpers for the crash suites.
    #[command(subcommand, hide = true)]
    Debug(debug_cmd::DebugCommand),
}

/// How a client reaches a cluster.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Node addresses, HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "STRAIT_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    #[command(flatten)]
    pub identity: Identity,
}

impl ConnArgs {
    /// The client's TLS identity (see [`Identity::tls`]).
    pub fn tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        self.identity.tls()
    }

    /// The node addresses: from --bootstrap or STRAIT_BOOTSTRAP, else the profile's.
    pub fn bootstrap(&self) -> anyhow::Result<Vec<String>> {
        if !self.bootstrap.is_empty() {
            return Ok(self.bootstrap.clone());
        }
        match profile::selected() {
            Some((_, p)) if !p.bootstrap.is_empty() => Ok(p.bootstrap.clone()),
            _ => anyhow::bail!(
                "no node address: give --bootstrap HOST:PORT, set STRAIT_BOOTSTRAP, or choose a profile (--profile NAME, STRAIT_PROFILE, `strait profile use NAME`)"
            ),
        }
    }
}

/// A client's certificate files: the CA that signed the nodes' certificates, its own
/// certificate and its key. Every command that talks to a node over QUIC takes them.
#[derive(Args, Debug, Clone, Default)]
pub struct Identity {
    /// CA certificate that signed the nodes' certificates.
    #[arg(long, env = "STRAIT_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate.
    #[arg(long, env = "STRAIT_CERT")]
    pub cert: Option<PathBuf>,
    /// This client's private key.
    #[arg(long, env = "STRAIT_KEY")]
    pub key: Option<PathBuf>,
}

impl Identity {
    /// The client's TLS config; a missing file flag says every way to give it. Files not given
    /// by flag or environment come from the chosen profile.
    pub fn tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        self.with_profile().files()
    }

    /// These files, completed from the chosen profile.
    fn with_profile(&self) -> Identity {
        let mut out = self.clone();
        if let Some((_, p)) = profile::selected() {
            out.ca = out.ca.or_else(|| p.ca.clone());
            out.cert = out.cert.or_else(|| p.cert.clone());
            out.key = out.key.or_else(|| p.key.clone());
        }
        out
    }

    fn files(&self) -> anyhow::Result<rustls::ClientConfig> {
        let missing: Vec<&str> = [
            ("--ca (or STRAIT_CA)", self.ca.is_none()),
            ("--cert (or STRAIT_CERT)", self.cert.is_none()),
            ("--key (or STRAIT_KEY)", self.key.is_none()),
        ]
        .into_iter()
        .filter_map(|(what, gone)| gone.then_some(what))
        .collect();
        let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
            anyhow::bail!(
                "no client identity: missing {}. A client needs the CA that signed the nodes' certificates (--ca), its own certificate (--cert) and its key (--key), by flag, environment or profile (--profile NAME, STRAIT_PROFILE); `strait certs issue --dir CA_DIR --name NAME --role client` makes one",
                missing.join(", ")
            );
        };
        strait_certs::client_config(ca, cert, key)
            .context("cannot load the client certificate; check --ca, --cert and --key")
    }

    /// Whether all three files were given (by flag, environment or profile).
    pub fn given(&self) -> bool {
        let i = self.with_profile();
        i.ca.is_some() && i.cert.is_some() && i.key.is_some()
    }
}

pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level(&cli.command)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn default_level(command: &Command) -> &'static str {
    match command {
        Command::Node(_) | Command::Mirror(_) => "info",
        Command::Topology(topology::TopologyCommand::Up { .. }) => "info",
        _ => "warn",
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Profile(_) | Command::Node(_)) {
        profile::select(cli.profile.as_deref())?;
    }
    match cli.command {
        Command::Node(c) => node_cmd::run(c).await,
        Command::Topic(c) => client_cmd::topic(c).await,
        Command::Produce(a) => client_cmd::produce(a).await,
        Command::Consume(a) => client_cmd::consume(a).await,
        Command::Group(c) => group_cmd::run(c).await,
        Command::Mirror(c) => mirror_cmd::run(c).await,
        Command::Topology(c) => topology::run(c).await,
        Command::Certs(c) => certs_cmd::run(c),
        Command::Profile(c) => profile::run(c),
        Command::Acl(c) => acl_cmd::run(c).await,
        Command::Cluster(c) => cluster_cmd::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "strait", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display()))?;
            println!("man pages written to {}", dir.display());
            Ok(())
        }
        Command::Debug(c) => debug_cmd::run(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if !sub.is_hide_set() {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(
            &<Cli as clap::CommandFactory>::command(),
            "strait",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "flags without help text:\n{}",
            missing.join("\n")
        );
    }
}
