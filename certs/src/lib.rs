//! Strait's certificates: a small CA that issues node, client and mirror certificates, PEM
//! loading, and the rustls configs every connection uses.
//!
//! Every config here is built with one explicit crypto provider (ring) and TLS 1.3 only, as QUIC
//! requires; nothing relies on a process-wide default provider. Private keys are written with
//! mode 0600. A peer's principal is the common name of its certificate.

mod authority;
mod inspect;
mod lifecycle;
mod tls;

use std::path::PathBuf;

pub use authority::{init_ca, issue, issue_with_validity, Role};
pub use inspect::{inspect, principal_of, role_of, CertInfo};
pub use lifecycle::{
    revoke, revoked_list, rotate, serial_of, write_crl, write_crl_valid, Revoked, CRL_FILE,
};
pub use tls::{
    client_config, client_config_without_identity, load_certs, load_crls, load_key,
    reloading_client_config, server_config, server_config_with_crl, stamp, ALPN, CONTROLLER_ALPN,
};

/// Why a certificate operation failed; each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    // The I/O error is named in the message and is deliberately not the error's `source`:
    // callers print the chain, and it would appear twice.
    #[error("cannot read {path}: {cause}; check the path and permissions")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} already exists; remove it or use another --dir to make a new CA")]
    Exists { path: PathBuf },
    #[error("{path} holds no {what} in PEM form; pass the right file")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path} is not a valid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(rustls::Error),
    #[error("the key {key} does not belong to the certificate {cert}: pass the key made with that certificate (--key with --cert, or STRAIT_KEY with STRAIT_CERT)")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client certificate verifier could not be built: {0}")]
    Verifier(String),
    #[error("{0:?} is not a valid host: use a DNS name or an IP address")]
    BadHost(String),
}

impl From<rustls::Error> for CertError {
    fn from(e: rustls::Error) -> Self {
        CertError::Tls(e)
    }
}
