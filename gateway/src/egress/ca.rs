//! The per-installation interception CA (ECDSA P-256) and on-demand leaf certificates.
//!
//! The CA's private key (PKCS#8) is sealed in the vault as [`CA_KEY_SECRET`]; its certificate is
//! written as PEM to a file the privileged helper bind-mounts into sandboxes. Leaves are minted
//! per SNI only after the SNI was checked, and kept in a bounded LRU.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::vault::{SecretName, SecretValue, Vault, VaultError};

use super::EgressError;

/// The vault secret holding the CA's PKCS#8 private key.
pub const CA_KEY_SECRET: &str = "gigmcp.egress-ca-key";

const LEAF_DAYS: i64 = 30;
/// A cached leaf with less than this left is minted again.
const LEAF_RENEW: StdDuration = StdDuration::from_secs(7 * 24 * 3600);

/// The CA. Its key never leaves memory except sealed in the vault.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(<key redacted>)")
    }
}

fn serial() -> Result<SerialNumber, EgressError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| EgressError::Random)?;
    b[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&b))
}

/// The single source of the CA's name: reloading rebuilds the issuer from it.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "Gig'MCP egress CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "Gig'MCP");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)); // signs leaves only
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> EgressError {
    EgressError::Tls(format!("{what}: {e}"))
}

impl Ca {
    /// Loads the CA from the vault, or makes one on first start. The certificate is (re)written
    /// to `cert_path` unless the file already holds the certificate of this key.
    pub fn load_or_create(
        vault: &Vault,
        cert_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, EgressError> {
        let name =
            SecretName::parse(CA_KEY_SECRET).map_err(|e| EgressError::Config(e.to_string()))?;
        let key = match vault.get(&name) {
            Ok(sealed) => KeyPair::try_from(sealed.expose()).map_err(|e| tls_err("CA key", e))?,
            Err(VaultError::NotFound { .. }) => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| tls_err("CA keygen", e))?;
                let der = Zeroizing::new(key.serialize_der());
                vault.set(&name, &SecretValue::new(der))?;
                key
            }
            Err(e) => return Err(e.into()),
        };
        let existing = std::fs::read(cert_path).ok().filter(|pem| {
            CertificateDer::pem_slice_iter(pem)
                .next()
                .and_then(Result::ok)
                .is_some_and(|der| contains(&der, key.public_key_raw()))
        });
        let cert_pem = match existing {
            Some(pem) => String::from_utf8(pem).map_err(|e| tls_err("CA certificate", e))?,
            None => {
                let mut p = ca_params();
                let now = OffsetDateTime::now_utc();
                p.not_before = now - Duration::days(1);
                p.not_after = now + Duration::days(3650);
                p.serial_number = Some(serial()?);
                let pem = p
                    .self_signed(&key)
                    .map_err(|e| tls_err("CA certificate", e))?
                    .pem();
                write_public(cert_path, pem.as_bytes())?;
                pem
            }
        };
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            provider,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A fresh leaf for `host` (its own P-256 key), valid for 30 days.
    pub fn mint(&self, host: &str) -> Result<CertifiedKey, EgressError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| tls_err("leaf", e))?;
        let mut p =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| tls_err("leaf", e))?;
        p.distinguished_name.push(DnType::CommonName, host);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(serial()?);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(LEAF_DAYS);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("leaf", e))?;
        let der = Zeroizing::new(key.serialize_der());
        let signer = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())))
            .map_err(|e| tls_err("leaf key", e))?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes a world-readable file atomically (temp file + rename).
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), EgressError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| EgressError::Io(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Leaf cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

type Cache = lru::LruCache<String, (Arc<CertifiedKey>, Instant)>;

/// rustls certificate resolver: the leaf for the ClientHello's SNI, minted on a miss.
/// Only reached after the connection's SNI was checked against the policy.
pub struct MintingResolver {
    ca: Ca,
    cache: Mutex<Cache>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for MintingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintingResolver")
            .field("stats", &self.stats())
            .finish()
    }
}

impl MintingResolver {
    pub fn new(ca: Ca, capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            ca,
            cache: Mutex::new(lru::LruCache::new(cap)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached leaf for `host`, or a newly minted one (about 0.2 ms with ring, so inline).
    pub fn leaf(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let renew_before = StdDuration::from_secs(LEAF_DAYS as u64 * 24 * 3600) - LEAF_RENEW;
        if let Some((leaf, at)) = self.lock().get(host) {
            if at.elapsed() < renew_before {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Some(leaf.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let leaf = match self.ca.mint(host) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                tracing::error!(error = %e, host, "cannot mint a leaf certificate");
                return None;
            }
        };
        self.lock()
            .put(host.to_owned(), (leaf.clone(), Instant::now()));
        Some(leaf)
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI: no certificate, so the handshake fails.
        self.leaf(&hello.server_name()?.to_ascii_lowercase())
    }
}
