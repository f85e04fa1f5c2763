//! PEM loading and the rustls configs for nodes (server) and clients, mirrors and nodes
//! dialing out (client).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::CertError;

/// The ALPN protocol id of Strait's wire, version 1.
pub const ALPN: &[u8] = b"strait/1";

/// The ALPN protocol id of controller traffic between nodes (Raft calls, forwarded
/// proposals, heartbeats): its own connections, never queued behind client data.
pub const CONTROLLER_ALPN: &[u8] = b"strait-controller/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let raw = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        cause: source,
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
        cause: source,
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

/// Loads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, CertError> {
    let raw = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        cause: source,
    })?;
    let crls: Result<Vec<_>, _> = CertificateRevocationListDer::pem_slice_iter(&raw).collect();
    let crls = crls.map_err(|e| CertError::Invalid {
        path: path.into(),
        what: "CRL",
        reason: e.to_string(),
    })?;
    if crls.is_empty() {
        return Err(CertError::NoPem {
            path: path.into(),
            what: "CRL",
        });
    }
    Ok(crls)
}

/// A node's server config: requires a client certificate chained to `ca` on every connection.
/// Early data stays off (rustls' default of 0), so there is no 0-RTT replay surface.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, CertError> {
    server_config_with_crl(ca, cert, key, None)
}

/// Like [`server_config`], also refusing client certificates revoked by the CRL in `crl`.
/// A CRL past its next update fails closed: every client is refused until it is refreshed,
/// since a node cannot tell which certificates were revoked since.
pub fn server_config_with_crl(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<ServerConfig, CertError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
    if let Some(crl) = crl {
        builder = builder
            .with_crls(load_crls(crl)?)
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration();
    }
    let verifier = builder
        .build()
        .map_err(|e| CertError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| identity_error(e, cert, key))?;
    config.alpn_protocols = vec![ALPN.to_vec(), CONTROLLER_ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// A client config presenting `cert` and trusting only `ca`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| identity_error(e, cert, key))?;
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

/// A client config that re-reads `ca`, `cert` and `key` when they change (checked at most once
/// a second, at the start of a handshake), so long-running clients such as mirror flows pick up
/// a rotated identity on their next connection. A file that fails to load keeps the previous
/// identity and logs why.
pub fn reloading_client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig, CertError> {
    let files = [ca.to_path_buf(), cert.to_path_buf(), key.to_path_buf()];
    let loaded = load_client_identity(&files)?;
    let reloading = Arc::new(ReloadingIdentity {
        state: std::sync::Mutex::new(Current {
            stamp: stamp(&files),
            checked: std::time::Instant::now(),
            key: loaded.0,
            verifier: loaded.1,
        }),
        files,
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(reloading.clone())
        .with_client_cert_resolver(reloading);
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

type Loaded = (Arc<CertifiedKey>, Arc<WebPkiServerVerifier>);

fn load_client_identity(files: &[PathBuf; 3]) -> Result<Loaded, CertError> {
    let [ca, cert, key] = files;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| CertError::Verifier(e.to_string()))?;
    let certified = CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider())?;
    Ok((Arc::new(certified), verifier))
}

/// Modification time and length of each file: a cheap test for "changed since last time".
pub fn stamp(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

#[derive(Debug)]
struct Current {
    stamp: Vec<Option<(std::time::SystemTime, u64)>>,
    checked: std::time::Instant,
    key: Arc<CertifiedKey>,
    verifier: Arc<WebPkiServerVerifier>,
}

#[derive(Debug)]
struct ReloadingIdentity {
    files: [PathBuf; 3],
    state: std::sync::Mutex<Current>,
}

impl ReloadingIdentity {
    fn current(&self) -> Loaded {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= std::time::Duration::from_secs(1) {
            s.checked = std::time::Instant::now();
            let now = stamp(&self.files);
            if now != s.stamp {
                s.stamp = now;
                match load_client_identity(&self.files) {
                    Ok((key, verifier)) => {
                        tracing::info!(cert = %self.files[1].display(), "client certificate reloaded");
                        s.key = key;
                        s.verifier = verifier;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "new client certificate files are not usable; keeping the previous identity")
                    }
                }
            }
        }
        (s.key.clone(), s.verifier.clone())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current().0)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for ReloadingIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().1.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().1.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().1.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().1.supported_verify_schemes()
    }
}

/// A key that does not match its certificate is named as such, with both files; other TLS
/// errors pass through.
fn identity_error(e: rustls::Error, cert: &Path, key: &Path) -> CertError {
    match e {
        rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => CertError::Tls(other),
    }
}
