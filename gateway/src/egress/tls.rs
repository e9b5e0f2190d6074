//! rustls configurations (ring only, never the process-wide default provider): the intercepting
//! server side and the verifying upstream client side.
//!
//! System roots are read from PEM bundles here rather than through `rustls-native-certs`,
//! whose `openssl-probe` dependency the workspace's dependency policy refuses by name. The
//! lookup is the same on Linux: `SSL_CERT_FILE`, `SSL_CERT_DIR`, then the distributions'
//! well-known bundle paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::EgressError;
use super::ca::MintingResolver;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Alpine
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // Fedora, RHEL
    "/etc/pki/tls/certs/ca-bundle.crt",   // older RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // others
];

fn err(what: &str, e: impl std::fmt::Display) -> EgressError {
    EgressError::Tls(format!("{what}: {e}"))
}

/// Certificates from a PEM file; unparsable entries are skipped.
fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// The system's trust anchors.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return pem_certs(Path::new(&file));
    }
    if let Some(dir) = std::env::var_os("SSL_CERT_DIR") {
        let mut out = Vec::new();
        for d in std::env::split_paths(&dir) {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                out.extend(pem_certs(&p));
            }
        }
        return out;
    }
    BUNDLES
        .iter()
        .map(|p| pem_certs(Path::new(p)))
        .find(|c| !c.is_empty())
        .unwrap_or_default()
}

/// Upstream TLS: system roots plus an optional extra CA file (tests, internal APIs). Refuses
/// to start with no trust anchor at all (fail closed). ALPN is set by hyper-rustls.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, EgressError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots());
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| err("extra CA file", e))?;
        for c in certs {
            roots
                .add(c.map_err(|e| err("extra CA file", e))?)
                .map_err(|e| err("extra CA file", e))?;
        }
    }
    if roots.is_empty() {
        return Err(EgressError::Tls(
            "no trusted root certificates found for upstream TLS".into(),
        ));
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("client config", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The intercepting side: leaves from `resolver`, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<MintingResolver>) -> Result<Arc<ServerConfig>, EgressError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("server config", e))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
