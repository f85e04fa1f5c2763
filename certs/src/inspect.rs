//! Reading certificates back: for `strait certs inspect` and for naming a peer's principal.

use std::path::Path;

use serde::Serialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{load_certs, CertError};

/// What `strait certs inspect` shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub common_name: Option<String>,
    pub issuer: String,
    pub role: Option<String>,
    pub sans: Vec<String>,
    pub is_ca: bool,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub expires_in_seconds: i64,
}

/// Describes the first certificate of a PEM file.
pub fn inspect(path: &Path) -> Result<CertInfo, CertError> {
    let certs = load_certs(path)?;
    let invalid = |reason: String| CertError::Invalid {
        path: path.into(),
        what: "certificate",
        reason,
    };
    let (_, cert) = X509Certificate::from_der(&certs[0]).map_err(|e| invalid(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(raw) => sans.push(format!("IP:{}", ip_string(raw))),
                other => sans.push(format!("{other:?}")),
            }
        }
    }
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let info = CertInfo {
        subject: cert.subject().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string),
        issuer: cert.issuer().to_string(),
        role: cert
            .subject()
            .iter_organizational_unit()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string),
        sans,
        is_ca: cert.is_ca(),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: not_after,
        expires_in_seconds: not_after - now,
    };
    Ok(info)
}

/// The principal a certificate authenticates: its common name.
pub fn principal_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    drop(cert);
    Some(cn)
}

/// The role a certificate was issued for (its organizational unit), if it names one.
pub fn role_of(der: &[u8]) -> Option<crate::Role> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let ou = cert
        .subject()
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    drop(cert);
    crate::Role::parse(&ou)
}

fn ip_string(raw: &[u8]) -> String {
    match raw.len() {
        4 => std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            std::net::Ipv6Addr::from(b).to_string()
        }
        _ => format!("{raw:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_config, init_ca, issue, server_config, Role};

    #[test]
    fn a_ca_issues_certificates_that_inspect_and_configure() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        assert!(
            init_ca(dir.path()).is_err(),
            "an existing CA is never overwritten"
        );
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let (crt, key) = issue(
            dir.path(),
            "node-1",
            Role::Node,
            &["127.0.0.1".into(), "localhost".into()],
        )
        .unwrap();
        let info = inspect(&crt).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("node-1"));
        assert_eq!(info.role.as_deref(), Some("node"));
        assert!(
            info.sans.contains(&"IP:127.0.0.1".to_string()),
            "{:?}",
            info.sans
        );
        assert!(info.expires_in_seconds > 300 * 24 * 3600);
        server_config(&dir.path().join("ca.crt"), &crt, &key).unwrap();
        let (ccrt, ckey) = issue(dir.path(), "app", Role::Client, &[]).unwrap();
        client_config(&dir.path().join("ca.crt"), &ccrt, &ckey).unwrap();
        let der = load_certs(&ccrt).unwrap();
        assert_eq!(principal_of(&der[0]).as_deref(), Some("app"));
    }
}
