//! The CA: makes `ca.crt`/`ca.key` and issues role certificates signed by it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::CertError;

/// What a certificate's holder is; written into the certificate's organizational unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A broker: server and client auth (nodes also dial each other), hosts as SANs.
    Node,
    /// An application: client auth only.
    Client,
    /// A mirror flow reading from a source cluster: client auth only.
    Mirror,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Mirror => "mirror",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "node" => Some(Role::Node),
            "client" => Some(Role::Client),
            "mirror" => Some(Role::Mirror),
            _ => None,
        }
    }
}

const CA_VALIDITY_DAYS: i64 = 3650;

/// Makes a new CA in `dir`: `ca.crt` and `ca.key` (mode 0600). Refuses to overwrite one.
pub fn init_ca(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.into(),
        cause: source,
    })?;
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    for path in [&crt, &key] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    let key_pair = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Strait CA");
    dn.push(DnType::OrganizationName, "Strait");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key_pair)?;
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    fs::write(&crt, cert.pem()).map_err(|source| CertError::Write {
        path: crt,
        cause: source,
    })
}

/// Issues `DIR/NAME.crt` and `DIR/NAME.key` for a role, valid for a year from now.
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), CertError> {
    let now = OffsetDateTime::now_utc();
    issue_with_validity(
        dir,
        name,
        role,
        hosts,
        now - Duration::hours(1),
        now + Duration::days(365),
    )
}

/// Issues a certificate with an explicit validity window (tests use it to make expired ones).
pub fn issue_with_validity(
    dir: &Path,
    name: &str,
    role: Role,
    hosts: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(PathBuf, PathBuf), CertError> {
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let ca_pem = fs::read_to_string(&ca_crt).map_err(|source| CertError::Read {
        path: ca_crt.clone(),
        cause: source,
    })?;
    let key_pem = fs::read_to_string(&ca_key).map_err(|source| CertError::Read {
        path: ca_key.clone(),
        cause: source,
    })?;
    let ca_pair = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&ca_key, "CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_pair)
        .map_err(|e| invalid(&ca_crt, "CA certificate", e))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::OrganizationName, "Strait");
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client | Role::Mirror => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = subject_alt_names(name, role, hosts)?;
    let key_pair = KeyPair::generate()?;
    let cert = params.signed_by(&key_pair, &issuer)?;
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    // Key first, each through a rename: a node watching the files sees old or new, never half.
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    crate::lifecycle::write_atomically(&crt, cert.pem().as_bytes())?;
    Ok((crt, key))
}

fn subject_alt_names(name: &str, role: Role, hosts: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut sans = Vec::new();
    let mut all: Vec<&str> = hosts.iter().map(String::as_str).collect();
    if role == Role::Node && all.is_empty() {
        all.extend(["localhost", "127.0.0.1", "::1"]);
    }
    for host in all {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            sans.push(SanType::IpAddress(ip));
        } else {
            let dns = host
                .to_string()
                .try_into()
                .map_err(|_| CertError::BadHost(host.into()))?;
            sans.push(SanType::DnsName(dns));
        }
    }
    if role != Role::Node {
        if let Ok(dns) = name.to_string().try_into() {
            sans.push(SanType::DnsName(dns));
        }
    }
    Ok(sans)
}

fn invalid(path: &Path, what: &'static str, e: rcgen::Error) -> CertError {
    CertError::Invalid {
        path: path.into(),
        what,
        reason: e.to_string(),
    }
}

/// Writes a key file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("key.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| CertError::Write {
        path: path.into(),
        cause: source,
    })
}
