//! A certificate's life after issue: rotation (a fresh key and certificate for the same name,
//! role and hosts) and revocation (a CRL signed by the CA, with a next-update date after which
//! nodes refuse every client until it is refreshed).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{inspect, issue_with_validity, load_certs, CertError, Role};

/// The CA's record of what it revoked, from which every CRL is signed.
const REVOKED: &str = "revoked.json";
/// The CRL nodes load (`[security] crl`).
pub const CRL_FILE: &str = "ca.crl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    pub name: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    pub revoked_at_unix: i64,
}

/// Issues a fresh key and certificate for `name`, keeping its role and hosts, valid `days`.
/// The files are replaced atomically (key first), so a node watching them never reads half a
/// file. Returns the new certificate's path and the old one's serial (hex).
pub fn rotate(dir: &Path, name: &str, days: i64) -> Result<(PathBuf, String), CertError> {
    let crt = dir.join(format!("{name}.crt"));
    let old = inspect(&crt)?;
    let old_serial = serial_of(&crt)?;
    let role = old
        .role
        .as_deref()
        .and_then(Role::parse)
        .ok_or_else(|| CertError::Invalid {
            path: crt.clone(),
            what: "Strait certificate",
            reason: "it names no role (node, client or mirror); issue a new one with `strait certs issue`".into(),
        })?;
    let hosts: Vec<String> = old
        .sans
        .iter()
        .filter_map(|s| s.strip_prefix("DNS:").or_else(|| s.strip_prefix("IP:")))
        .filter(|h| role == Role::Node || *h != name)
        .map(str::to_string)
        .collect();
    let now = OffsetDateTime::now_utc();
    let (crt, _) = issue_with_validity(
        dir,
        name,
        role,
        &hosts,
        now - Duration::hours(1),
        now + Duration::days(days),
    )?;
    Ok((crt, old_serial))
}

/// The serial number of the first certificate in a PEM file, hex.
pub fn serial_of(path: &Path) -> Result<String, CertError> {
    let certs = load_certs(path)?;
    let (_, cert) = X509Certificate::from_der(&certs[0]).map_err(|e| CertError::Invalid {
        path: path.into(),
        what: "certificate",
        reason: e.to_string(),
    })?;
    Ok(hex(cert.raw_serial()))
}

/// Revokes the certificate `DIR/NAME.crt` (or the serial given) and re-signs `DIR/ca.crl`,
/// valid for `days`. Revoking twice changes nothing but the CRL's dates.
pub fn revoke(
    dir: &Path,
    name: &str,
    serial: Option<&str>,
    days: i64,
) -> Result<PathBuf, CertError> {
    let serial = match serial {
        Some(s) => s.to_ascii_lowercase(),
        None => serial_of(&dir.join(format!("{name}.crt")))?,
    };
    let mut revoked = revoked_list(dir)?;
    if !revoked.iter().any(|r| r.serial == serial) {
        revoked.push(Revoked {
            name: name.into(),
            serial,
            revoked_at_unix: OffsetDateTime::now_utc().unix_timestamp(),
        });
        let path = dir.join(REVOKED);
        let raw = serde_json::to_vec_pretty(&revoked).map_err(|e| CertError::Invalid {
            path: path.clone(),
            what: "revocation list",
            reason: e.to_string(),
        })?;
        write_atomically(&path, &raw)?;
    }
    write_crl(dir, days)
}

/// What the CA revoked so far.
pub fn revoked_list(dir: &Path) -> Result<Vec<Revoked>, CertError> {
    let path = dir.join(REVOKED);
    match fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw).map_err(|e| CertError::Invalid {
            path,
            what: "revocation list",
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CertError::Read {
            path,
            cause: source,
        }),
    }
}

/// Signs `DIR/ca.crl` afresh from the CA's revocation list, valid from an hour ago (clock
/// skew) for `days` days. Run it before the previous one's next update: nodes refuse every
/// client once their CRL is stale.
pub fn write_crl(dir: &Path, days: i64) -> Result<PathBuf, CertError> {
    write_crl_valid(dir, OffsetDateTime::now_utc() + Duration::days(days))
}

/// Like [`write_crl`] with an explicit next update (tests make stale CRLs with it).
pub fn write_crl_valid(dir: &Path, next_update: OffsetDateTime) -> Result<PathBuf, CertError> {
    let revoked = revoked_list(dir)?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|source| CertError::Read {
            path: p.into(),
            cause: source,
        })
    };
    let (ca_pem, key_pem) = (read(&ca_crt)?, read(&ca_key)?);
    let invalid = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |e: rcgen::Error| CertError::Invalid {
            path,
            what,
            reason: e.to_string(),
        }
    };
    let key = KeyPair::from_pem(&key_pem).map_err(invalid(&ca_key, "CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, key).map_err(invalid(&ca_crt, "CA certificate"))?;
    let now = OffsetDateTime::now_utc();
    let this_update = (now - Duration::hours(1)).min(next_update - Duration::seconds(1));
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(now.unix_timestamp_nanos() as u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&unhex(&r.serial)),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at_unix)
                    .unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    let path = dir.join(CRL_FILE);
    write_atomically(&path, crl.pem()?.as_bytes())?;
    Ok(path)
}

/// Writes through a temporary file and a rename, so readers see the old file or the new one.
pub(crate) fn write_atomically(path: &Path, raw: &[u8]) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, raw)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|source| CertError::Write {
            path: path.into(),
            cause: source,
        })
}

fn hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{init_ca, issue};

    #[test]
    fn rotation_keeps_name_role_and_hosts_and_revocation_lists_the_serial() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        let (crt, _) = issue(dir.path(), "n1", Role::Node, &["127.0.0.1".into()]).unwrap();
        let before = inspect(&crt).unwrap();
        let (crt, old_serial) = rotate(dir.path(), "n1", 30).unwrap();
        let after = inspect(&crt).unwrap();
        assert_eq!(after.role, before.role);
        assert_eq!(after.sans, before.sans);
        assert_ne!(serial_of(&crt).unwrap(), old_serial);
        assert!(after.expires_in_seconds < 31 * 86_400);
        let crl = revoke(dir.path(), "n1", Some(&old_serial), 7).unwrap();
        revoke(dir.path(), "n1", Some(&old_serial), 7).unwrap();
        assert_eq!(revoked_list(dir.path()).unwrap().len(), 1);
        let pem = fs::read_to_string(crl).unwrap();
        assert!(pem.contains("BEGIN X509 CRL"));
    }
}
