//! PEM loading and the rustls configs for nodes (server) and clients, mirrors and nodes
//! dialing out (client).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertError;

/// The ALPN protocol id of Strait's wire, version 1.
pub const ALPN: &[u8] = b"strait/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let raw = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        source,
    })?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&raw).collect();
    let certs = certs.map_err(|e| CertError::Invalid {
        path: path.into(),
        what: "certificate",
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(CertError::NoPem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Loads the private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let raw = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&raw).map_err(|_| CertError::NoPem {
        path: path.into(),
        what: "private key",
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, CertError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store.add(cert).map_err(|e| CertError::Invalid {
            path: ca.into(),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// A node's server config: requires a client certificate chained to `ca` on every connection.
/// Early data stays off (rustls' default of 0), so there is no 0-RTT replay surface.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, CertError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| CertError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// A client config presenting `cert` and trusting only `ca`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// A client config with no certificate of its own; nodes refuse it. Used to test that they do.
pub fn client_config_without_identity(ca: &Path) -> Result<ClientConfig, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
