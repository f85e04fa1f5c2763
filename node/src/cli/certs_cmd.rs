//! `strait certs init|issue|inspect`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use strait_certs::Role;

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a CA: DIR/ca.crt and DIR/ca.key.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue DIR/NAME.crt and DIR/NAME.key signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        /// node, client or mirror.
        #[arg(long)]
        role: String,
        /// A DNS name or IP the node is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Show a certificate's subject, SANs, role and expiry.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir } => {
            strait_certs::init_ca(&dir)?;
            println!(
                "made CA {}/ca.crt (key {}/ca.key, mode 0600)",
                dir.display(),
                dir.display()
            );
        }
        CertsCommand::Issue {
            dir,
            name,
            role,
            hosts,
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("unknown role {role:?}; use node, client or mirror"))?;
            let (crt, key) = strait_certs::issue(&dir, &name, role, &hosts)?;
            println!(
                "issued {} and {} for {name} ({})",
                crt.display(),
                key.display(),
                role.as_str()
            );
        }
        CertsCommand::Inspect { file, json } => {
            let info = strait_certs::inspect(&file)?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("subject:  {}", info.subject);
                println!("issuer:   {}", info.issuer);
                println!(
                    "role:     {}",
                    info.role
                        .as_deref()
                        .unwrap_or(if info.is_ca { "ca" } else { "-" })
                );
                println!("sans:     {}", info.sans.join(", "));
                println!(
                    "expires:  in {} days (unix {})",
                    info.expires_in_seconds / 86_400,
                    info.not_after_unix
                );
            }
        }
    }
    Ok(())
}
