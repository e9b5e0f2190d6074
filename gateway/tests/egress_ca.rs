//! The egress proxy's interception CA: its key is sealed in the vault, leaf certificates are
//! cached, and the key survives a restart while a lost certificate file is rewritten.
//!
//! Real parts, as root: real network namespaces and veths, a fake HTTPS upstream in its own
//! netns, the proxy on the host side of a "client" netns that plays the sandbox, and real
//! clients (curl, and raw rustls/TCP clients made inside the client netns).

use testkit::egress::*;

#[test]
fn ca_is_sealed_in_the_vault_and_leaves_are_cached() {
    testkit::privileged(
        "ca_is_sealed_in_the_vault_and_leaves_are_cached",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let pem = std::fs::read_to_string(fx.cacert()).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(!pem.contains("PRIVATE KEY"));
            // The key is a vault secret; the database holds no plaintext key.
            let names: Vec<String> = {
                let vault = gateway::vault::Vault::open(
                    fx.store.clone(),
                    gateway::vault::MasterKey::generate().unwrap(),
                );
                assert!(vault.is_err(), "another master key must be refused");
                fx.store
                    .secret_list()
                    .unwrap()
                    .into_iter()
                    .map(|m| m.name)
                    .collect()
            };
            assert!(
                names.contains(&gateway::egress::CA_KEY_SECRET.to_owned()),
                "{names:?}"
            );

            for _ in 0..3 {
                assert_eq!(
                    fx.curl(&[
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "https://api.test.example/"
                    ])
                    .text(),
                    "200"
                );
            }
            assert_eq!(
                fx.curl(&[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "https://other.test.example/"
                ])
                .text(),
                "200"
            );
            let stats = fx.shared.leaf_cache_stats();
            assert_eq!(stats.misses, 2, "{stats:?}");
            assert_eq!(stats.hits, 2, "{stats:?}");
            assert_eq!(stats.entries, 2);
        },
    );
}

#[tokio::test]
async fn ca_key_survives_a_restart_and_the_certificate_file_is_rewritten_if_lost() {
    use gateway::egress::{EgressConfig, EgressShared};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn gateway::store::Store> =
        Arc::new(gateway::store::SqliteStore::open_in(&dir.path().join("s")).unwrap());
    let key = gateway::vault::MasterKey::generate().unwrap();
    let vault = Arc::new(gateway::vault::Vault::open(store.clone(), key).unwrap());
    let cert = dir.path().join("ca.pem");
    let auditor = gateway::audit::Auditor::new(store.clone(), "test");
    let start = || {
        EgressShared::new(
            vault.clone(),
            auditor.clone(),
            EgressConfig::new(cert.clone()),
        )
        .unwrap()
    };
    let first = start();
    let pem1 = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(first.ca_cert_pem(), pem1);
    drop(first);
    let second = start();
    assert_eq!(
        std::fs::read_to_string(&cert).unwrap(),
        pem1,
        "same key: file kept"
    );
    drop(second);
    std::fs::remove_file(&cert).unwrap();
    let third = start();
    let pem3 = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(third.ca_cert_pem(), pem3);
    assert_ne!(pem1, pem3, "re-issued (new serial and validity)");
    // Re-issued for the same key: the same 65-byte P-256 public point inside both.
    let der = |pem: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let (a, b) = (der(&pem1), der(&pem3));
    let common = a
        .windows(65)
        .filter(|w| w[0] == 4)
        .any(|w| b.windows(65).any(|x| x == w));
    assert!(common, "the re-issued certificate has another key");
    let names: Vec<String> = store
        .secret_list()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, [gateway::egress::CA_KEY_SECRET]);
}
