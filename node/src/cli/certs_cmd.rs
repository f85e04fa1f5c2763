//! `strait certs init|issue|rotate|revoke|crl|inspect`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use strait_certs::Role;

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a CA: DIR/ca.crt and DIR/ca.key.
    Init {
        /// Folder of the CA (ca.crt, ca.key) and the certificates it issued.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue DIR/NAME.crt and DIR/NAME.key signed by the CA in DIR.
    Issue {
        /// Folder of the CA (ca.crt, ca.key) and the certificates it issued.
        #[arg(long)]
        dir: PathBuf,
        /// Name of the certificate (its common name: the principal ACLs name).
        #[arg(long)]
        name: String,
        /// node, client or mirror.
        #[arg(long)]
        role: String,
        /// A DNS name or IP the node is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a fresh key and certificate for NAME with the same role and hosts, replacing its
    /// files atomically; nodes and flows using them pick them up without a restart.
    Rotate {
        /// Folder of the CA (ca.crt, ca.key) and the certificates it issued.
        #[arg(long)]
        dir: PathBuf,
        /// Name of the certificate (its common name: the principal ACLs name).
        #[arg(long)]
        name: String,
        /// Validity of the new certificate.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Also revoke the old certificate (re-signs DIR/ca.crl).
        #[arg(long)]
        revoke_old: bool,
        /// Print JSON for scripts instead of the human format.
        #[arg(long)]
        json: bool,
    },
    /// Revoke NAME's certificate (or a serial) and re-sign DIR/ca.crl; point nodes at it with
    /// `[security] crl`.
    Revoke {
        /// Folder of the CA (ca.crt, ca.key) and the certificates it issued.
        #[arg(long)]
        dir: PathBuf,
        /// Name of the certificate (its common name: the principal ACLs name).
        #[arg(long)]
        name: String,
        /// Revoke this serial (hex) instead of the one in DIR/NAME.crt.
        #[arg(long)]
        serial: Option<String>,
        /// Days until the CRL's next update; re-sign it with `strait certs crl` before then.
        #[arg(long, default_value_t = 7)]
        crl_days: i64,
    },
    /// Re-sign DIR/ca.crl with a new next update (nodes refuse everyone once it is stale).
    Crl {
        /// Folder of the CA (ca.crt, ca.key) and the certificates it issued.
        #[arg(long)]
        dir: PathBuf,
        /// Days until the CRL must be refreshed (nodes refuse a stale CRL).
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Show a certificate's subject, SANs, role and expiry.
    Inspect {
        /// Certificate file (PEM) to describe.
        file: PathBuf,
        /// Print JSON for scripts instead of the human format.
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
        CertsCommand::Rotate {
            dir,
            name,
            days,
            revoke_old,
            json,
        } => {
            let (crt, old_serial) = strait_certs::rotate(&dir, &name, days)?;
            let crl = if revoke_old {
                Some(strait_certs::revoke(&dir, &name, Some(&old_serial), 7)?)
            } else {
                None
            };
            let serial = strait_certs::serial_of(&crt)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": name, "certificate": crt, "serial": serial,
                        "old_serial": old_serial, "crl": crl,
                    })
                );
            } else {
                println!(
                    "rotated {name}: {} (serial {serial}, replaces {old_serial})",
                    crt.display()
                );
                if let Some(crl) = crl {
                    println!("revoked the old certificate in {}", crl.display());
                }
            }
        }
        CertsCommand::Revoke {
            dir,
            name,
            serial,
            crl_days,
        } => {
            let crl = strait_certs::revoke(&dir, &name, serial.as_deref(), crl_days)?;
            println!(
                "revoked {name}; {} lists {} certificate(s) and is valid for {crl_days} days",
                crl.display(),
                strait_certs::revoked_list(&dir)?.len()
            );
        }
        CertsCommand::Crl { dir, days } => {
            let crl = strait_certs::write_crl(&dir, days)?;
            println!("re-signed {} (valid for {days} days)", crl.display());
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
