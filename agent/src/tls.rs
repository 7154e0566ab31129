//! Optional TLS for `serve`: a rustls server configuration (ring provider, TLS 1.2 and 1.3,
//! ALPN `http/1.1`, no client certificates) from a PEM certificate chain and private key given
//! by `--tls-cert` / `--tls-key` (env `GPUSCOUT_TLS_CERT` / `GPUSCOUT_TLS_KEY`). The files are
//! read once at start (no reload: restart the pod when cert-manager renews them). A file that
//! cannot be read, holds no certificate or no key, or a key that does not match is a
//! configuration error (one line, exit 2). These are the agent's own files, not host data, so
//! they are read directly rather than through `HostRoot`.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--tls-cert {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("--tls-key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("--tls-cert/--tls-key: {0}")]
    Config(#[source] rustls::Error),
}

/// Build the acceptor from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::Cert {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Cert {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Cert {
            path: cert.to_owned(),
            reason: "no PEM CERTIFICATE block".to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(Error::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
