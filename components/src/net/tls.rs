//! TLS for the network components: one rustls crypto provider (ring) for the
//! whole process, and a client config from PEM files.
//!
//! Every component that speaks TLS calls [`client_config`]; it installs the
//! provider first, so two libraries never disagree about which one to use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the system's trusted certificates are on Debian and its kin.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Installs ring as the process's rustls provider (once; later calls do nothing).
pub fn ensure_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The files a TLS client may be given, paths resolved against the flow's folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) to trust; unset: the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// A rustls client config trusting `files.ca_file` (or the system's roots),
/// presenting the client certificate when one is given. Errors name the file.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    ensure_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca = files.ca_file.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
    for cert in certs(&ca)? {
        roots.add(cert).map_err(|e| format!("`{}`: a CA certificate is not usable: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certs(cert)?, private_key(key)?)
            .map_err(|e| format!("client certificate `{}`: {e}", cert.display()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both `cert_file` and `key_file`".into()),
    };
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// The PEM certificates in `path` (at least one); errors name the file.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}`: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The PEM private key in `path`; errors name the file.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("`{}`: not a PEM private key: {e}", path.display()))?
        .ok_or_else(|| format!("`{}` holds no PEM private key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_load_and_missing_files_are_named() {
        assert!(client_config(&TlsFiles::default()).is_ok());
        let missing = TlsFiles { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsFiles::default() };
        assert!(client_config(&missing).unwrap_err().contains("/nonexistent/ca.pem"));
        let half = TlsFiles { cert_file: Some(SYSTEM_ROOTS.into()), ..TlsFiles::default() };
        assert!(client_config(&half).unwrap_err().contains("both"));
    }
}
