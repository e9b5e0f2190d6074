//! Pull by digest from a real registry (Debian's docker-registry over HTTPS with a test CA:
//! anonymous, htpasswd Basic, Bearer tokens from the test kit's token server) and from a
//! hostile scripted one; push round trip. Every refusal leaves nothing in `blobs/` or `tmp/`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gateway::config::RegistryConfig;
use gateway::image::blobs::BlobStore;
use gateway::image::digest::Digest;
use gateway::image::layout::{Layout, Select};
use gateway::image::oci::Platform;
use gateway::image::pull::{PullError, pull};
use gateway::image::push::{PushSource, push};
use gateway::image::reference::Reference;
use gateway::image::registry::{ClientOptions, RegistryClient, RegistryError, Timeouts};
use testkit::registry::{
    Hostile, Registry, RegistryAuth, Seen, TestImage, TestIndex, other_platform, random_name,
    reply, store_is_empty, streamed, write_layout,
};
use testkit::upstream::TestCa;
use zeroize::Zeroizing;

fn quick() -> ClientOptions {
    ClientOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            deadline_base: Duration::from_secs(10),
            min_rate_bytes_per_sec: 1 << 20,
        },
        ..ClientOptions::default()
    }
}

async fn client(reg: &Registry) -> RegistryClient {
    let pw = (reg.auth != RegistryAuth::Anonymous).then(|| reg.password());
    RegistryClient::new(&reg.config(), pw, quick())
        .await
        .unwrap()
}

/// A random image in a layout, pushed with skopeo to `reg` as `repo:tag`.
async fn pushed_image(reg: &Registry, dir: &Path) -> (TestImage, Reference) {
    let image = TestImage::random(&[3000, 70_000, 10], Platform::host());
    let repo = format!("{}/{}", random_name("team"), random_name("srv"));
    let tag = random_name("v");
    let layout = dir.join("layout");
    write_layout(&layout, &[(&tag, &image.manifest)], &image.blobs());
    reg.push_layout(&layout, &tag, &repo).await;
    let reference = Reference::parse(&format!(
        "{}/{repo}:{tag}@{}",
        reg.host(),
        image.manifest.digest
    ))
    .unwrap();
    (image, reference)
}

fn assert_stored(store: &BlobStore, blobs: &[&testkit::registry::Blob]) {
    for b in blobs {
        let got = store
            .read_small(&b.digest, b.bytes.len() as u64, 1 << 30)
            .unwrap();
        assert_eq!(got, b.bytes, "{}", b.digest);
    }
}

async fn pull_in_mode(auth: RegistryAuth) {
    let reg = Registry::start(auth).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, reference) = pushed_image(&reg, dir.path()).await;
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    let pulled = pull(&client(&reg).await, &reference, &store).await.unwrap();
    assert_eq!(pulled.pinned.digest, image.manifest.digest);
    assert_eq!(pulled.manifest, pulled.pinned);
    assert_eq!(pulled.config.digest, image.config.digest);
    assert_eq!(pulled.layers.len(), 3);
    assert_stored(&store, &image.blobs());
    assert_eq!(store.list().unwrap().len(), 5);
    if auth == RegistryAuth::Bearer {
        assert!(reg.tokens_issued() >= 1, "the token server was used");
    }
}

#[tokio::test]
async fn an_image_is_pulled_by_digest_from_an_anonymous_registry() {
    pull_in_mode(RegistryAuth::Anonymous).await;
}

#[tokio::test]
async fn an_image_is_pulled_by_digest_with_basic_credentials() {
    pull_in_mode(RegistryAuth::Basic).await;
}

#[tokio::test]
async fn an_image_is_pulled_by_digest_with_a_bearer_token() {
    pull_in_mode(RegistryAuth::Bearer).await;
}
