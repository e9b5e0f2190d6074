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

#[tokio::test]
async fn a_wrong_password_is_refused_clearly_in_basic_and_bearer_modes() {
    for auth in [RegistryAuth::Basic, RegistryAuth::Bearer] {
        let reg = Registry::start(auth).await;
        let dir = tempfile::tempdir().unwrap();
        let (_, reference) = pushed_image(&reg, dir.path()).await;
        let store = BlobStore::open(&dir.path().join("store")).unwrap();
        let wrong = Zeroizing::new(random_name("wrong"));
        let client = RegistryClient::new(&reg.config(), Some(wrong.clone()), quick())
            .await
            .unwrap();
        let err = pull(&client, &reference, &store).await.unwrap_err();
        assert!(
            matches!(err, PullError::Registry(RegistryError::Unauthorized { .. })),
            "{auth:?}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains("refused the credentials"), "{text}");
        assert!(
            !text.contains(wrong.as_str()),
            "the password is never shown"
        );
        assert!(store_is_empty(&dir.path().join("store")), "{auth:?}");
    }
}

#[tokio::test]
async fn an_index_resolves_to_the_hosts_platform_only() {
    let reg = Registry::start(RegistryAuth::Anonymous).await;
    let dir = tempfile::tempdir().unwrap();
    let here = TestImage::random(&[2000, 30], Platform::host());
    let there = TestImage::random(&[2500], other_platform());
    let index = TestIndex::new(vec![there.clone(), here.clone()]);
    let repo = random_name("multi");
    let layout = dir.path().join("layout");
    write_layout(&layout, &[("v1", &index.index)], &index.blobs());
    reg.push_layout(&layout, "v1", &repo).await;
    let reference =
        Reference::parse(&format!("{}/{repo}@{}", reg.host(), index.index.digest)).unwrap();
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    let pulled = pull(&client(&reg).await, &reference, &store).await.unwrap();
    assert_eq!(pulled.pinned.digest, index.index.digest);
    assert_eq!(pulled.manifest.digest, here.manifest.digest);
    assert_eq!(pulled.config.digest, here.config.digest);
    let mut expected = vec![&index.index];
    expected.extend(here.blobs());
    assert_stored(&store, &expected);
    for b in there.blobs() {
        assert!(
            !store.contains(&b.digest),
            "the other platform's {}",
            b.digest
        );
    }
    assert_eq!(store.list().unwrap().len(), expected.len());
}

#[tokio::test]
async fn a_tampered_blob_in_the_registry_is_refused_and_nothing_is_left() {
    let reg = Registry::start(RegistryAuth::Anonymous).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, reference) = pushed_image(&reg, dir.path()).await;
    // The middle layer, same length, one byte changed where the registry keeps it.
    let victim = &image.layers[1];
    let path = reg.stored_blob(&victim.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).unwrap();
    let at = u32::from_le_bytes(r) as usize % bytes.len();
    bytes[at] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let err = pull(&client(&reg).await, &reference, &store)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&victim.digest.to_string()) && text.contains("does not match its digest"),
        "{text}"
    );
    assert!(store_is_empty(&root), "nothing in blobs/ or tmp/");
}

#[tokio::test]
async fn a_digest_the_registry_does_not_have_is_refused_and_nothing_is_left() {
    let reg = Registry::start(RegistryAuth::Anonymous).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, reference) = pushed_image(&reg, dir.path()).await;
    let wrong = reference.with_digest(Digest::of(random_name("absent").as_bytes()));
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let err = pull(&client(&reg).await, &wrong, &store).await.unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::NotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&wrong.digest.unwrap().to_string()));
    assert!(store_is_empty(&root));
}

#[tokio::test]
async fn a_pull_without_a_digest_is_refused_naming_why() {
    let reg = Registry::start(RegistryAuth::Anonymous).await;
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::parse(&format!("{}/a:latest", reg.host())).unwrap();
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let err = pull(&client(&reg).await, &reference, &store)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NoDigest(_)), "{err}");
    assert!(err.to_string().contains("by digest only"), "{err}");
}

#[tokio::test]
async fn a_pushed_layout_pulls_back_byte_identical() {
    let reg = Registry::start(RegistryAuth::Bearer).await;
    let dir = tempfile::tempdir().unwrap();
    let image = TestImage::random(&[4000, 90_000], Platform::host());
    let tag = random_name("t");
    let layout_dir = dir.path().join("layout");
    write_layout(&layout_dir, &[(&tag, &image.manifest)], &image.blobs());
    let layout = Layout::open(&layout_dir).unwrap();
    let pinned = layout.select(&Select::RefName(tag.clone())).unwrap();
    let target =
        Reference::parse(&format!("{}/{}:{tag}", reg.host(), random_name("pushed"))).unwrap();
    let c = client(&reg).await;
    let digest = push(&c, PushSource::Layout(&layout), &pinned, &target)
        .await
        .unwrap();
    assert_eq!(digest, image.manifest.digest);
    // Pushing again finds every blob there (HEAD) and changes nothing.
    assert_eq!(
        push(&c, PushSource::Layout(&layout), &pinned, &target)
            .await
            .unwrap(),
        digest
    );
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let pulled = pull(&c, &target.with_digest(digest.clone()), &store)
        .await
        .unwrap();
    assert_eq!(pulled.layers.len(), 2);
    for b in image.blobs() {
        let from_layout =
            std::fs::read(layout_dir.join("blobs/sha256").join(b.digest.hex())).unwrap();
        let from_store = std::fs::read(store.path(&b.digest)).unwrap();
        assert_eq!(from_layout, from_store, "{}", b.digest);
    }
    // And from the store to another repository of the same registry.
    let again = target.clone();
    let again = Reference {
        repository: random_name("copy"),
        ..again
    };
    assert_eq!(
        push(&c, PushSource::Store(&store), &pulled.pinned, &again)
            .await
            .unwrap(),
        digest
    );
}

// ---------------------------------------------------------------------------------------------
// A hostile registry (plain HTTP on loopback, which `plain_http` allows only there)

/// A scripted registry on 127.0.0.1 serving `image`, with `twist` answering first when it
/// returns a response. Credentials (`user`/`pw`) are configured for the client.
struct Scripted {
    server: Hostile,
    config: RegistryConfig,
    password: Zeroizing<String>,
}

fn basic_of(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

type Twist =
    Box<dyn Fn(&Seen) -> Option<http::Response<testkit::registry::ReplyBody>> + Send + Sync>;

async fn scripted(image: &TestImage, require_basic: bool, twist: Twist) -> Scripted {
    let user = random_name("u");
    let password = Zeroizing::new(random_name("pw"));
    let expected = basic_of(&user, &password);
    let blobs: Vec<(String, Vec<u8>)> = image
        .blobs()
        .iter()
        .map(|b| (b.digest.to_string(), b.bytes.clone()))
        .collect();
    let server = Hostile::start("127.0.0.1:0".parse().unwrap(), None, move |seen: &Seen| {
        if let Some(r) = twist(seen) {
            return r;
        }
        let authorized = seen
            .headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if require_basic && !authorized {
            return reply(401, &[("www-authenticate", "Basic realm=\"r\"")], vec![]);
        }
        if seen.path_and_query == "/v2/" {
            return reply(200, &[], b"{}".to_vec());
        }
        for (digest, bytes) in &blobs {
            if seen.path_and_query.ends_with(digest.as_str()) {
                let ct = if seen.path_and_query.contains("/manifests/") {
                    gateway::image::oci::MEDIA_OCI_MANIFEST
                } else {
                    "application/octet-stream"
                };
                return reply(200, &[("content-type", ct)], bytes.clone());
            }
        }
        reply(
            404,
            &[],
            b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}".to_vec(),
        )
    })
    .await;
    let mut config = RegistryConfig::anonymous(&server.addr.to_string());
    config.plain_http = true;
    config.username = Some(user);
    config.password_secret = Some("pw".into());
    Scripted {
        server,
        config,
        password,
    }
}

impl Scripted {
    async fn client(&self, options: ClientOptions) -> RegistryClient {
        RegistryClient::new(&self.config, Some(self.password.clone()), options)
            .await
            .unwrap()
    }

    fn reference(&self, digest: &Digest) -> Reference {
        Reference::parse(&format!("{}/hostile/repo@{digest}", self.server.addr)).unwrap()
    }
}

/// Polls `tmp` while `f` runs: the largest temporary file seen.
async fn largest_tmp_file_during<T>(
    tmp: &Path,
    f: impl std::future::Future<Output = T>,
) -> (T, u64) {
    let max = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (max, stop, tmp) = (max.clone(), stop.clone(), tmp.to_owned());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                    if let Ok(m) = e.metadata() {
                        max.fetch_max(m.len(), Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    (out, max.load(Ordering::Relaxed))
}

#[tokio::test]
async fn a_manifest_whose_bytes_differ_from_its_digest_is_refused() {
    let image = TestImage::random(&[100], Platform::host());
    let mut tampered = image.manifest.bytes.clone();
    tampered.push(b' ');
    let wanted = image.manifest.digest.to_string();
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            s.path_and_query.ends_with(&wanted).then(|| {
                reply(
                    200,
                    &[("content-type", gateway::image::oci::MEDIA_OCI_MANIFEST)],
                    tampered.clone(),
                )
            })
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PullError::ManifestDigest { .. }), "{err}");
    assert!(err.to_string().contains("tampered"), "{err}");
    assert!(store_is_empty(dir.path()));
}

#[tokio::test]
async fn a_blob_longer_than_pinned_is_refused_and_never_written_past_its_size() {
    let image = TestImage::random(&[400_000], Platform::host());
    let layer = image.layers[0].clone();
    let pinned = layer.bytes.len() as u64;
    for declared in [true, false] {
        let (d, bytes) = (layer.digest.to_string(), layer.bytes.clone());
        let reg = scripted(
            &image,
            false,
            Box::new(move |s| {
                if !s.path_and_query.ends_with(&d) {
                    return None;
                }
                let mut longer = bytes.clone();
                longer.extend(std::iter::repeat_n(0x41, 300_000));
                Some(if declared {
                    reply(200, &[], longer)
                } else {
                    // No length: the client learns only by counting.
                    let chunk = longer[..16_384].to_vec();
                    streamed(
                        200,
                        &[],
                        chunk,
                        Some(longer.len() / 16_384),
                        Duration::from_micros(500),
                    )
                })
            }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let client = reg.client(quick()).await;
        let (result, largest) = largest_tmp_file_during(
            store.tmp_dir(),
            pull(&client, &reg.reference(&image.manifest.digest), &store),
        )
        .await;
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&layer.digest.to_string()) && text.contains(&pinned.to_string()),
            "declared={declared}: {text}"
        );
        assert!(
            largest <= pinned,
            "the temp file grew to {largest} > {pinned}"
        );
        assert!(store_is_empty(dir.path()), "declared={declared}");
    }
}

#[tokio::test]
async fn an_endless_blob_ends_at_its_pinned_size() {
    let image = TestImage::random(&[50_000], Platform::host());
    let d = image.layers[0].digest.to_string();
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            s.path_and_query
                .ends_with(&d)
                .then(|| streamed(200, &[], vec![0x42; 65_536], None, Duration::ZERO))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::Blob(_))),
        "{err}"
    );
    assert!(err.to_string().contains("longer than"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(store_is_empty(dir.path()));
}

#[tokio::test]
async fn a_trickling_blob_ends_at_its_deadline() {
    let image = TestImage::random(&[5_000], Platform::host());
    let d = image.layers[0].digest.to_string();
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            s.path_and_query
                .ends_with(&d)
                .then(|| streamed(200, &[], vec![0x43], None, Duration::from_millis(20)))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    // The idle timeout never fires (a byte every 20 ms); the per-blob deadline does.
    let options = ClientOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            deadline_base: Duration::from_secs(1),
            min_rate_bytes_per_sec: 1 << 20,
        },
        ..ClientOptions::default()
    };
    let started = std::time::Instant::now();
    let err = pull(
        &reg.client(options).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::Timeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("deadline"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(store_is_empty(dir.path()));
}

/// A second scripted server on loopback: another origin (another port).
async fn other_origin(
    script: impl Fn(&Seen) -> http::Response<testkit::registry::ReplyBody> + Send + Sync + 'static,
) -> Hostile {
    Hostile::start("127.0.0.1:0".parse().unwrap(), None, script).await
}

#[tokio::test]
async fn a_token_realm_on_another_origin_is_followed_without_the_credentials() {
    let token = random_name("tok");
    let answer = serde_json::json!({"token": token}).to_string();
    let realm = other_origin(move |_| reply(200, &[], answer.clone().into_bytes())).await;
    let image = TestImage::random(&[700], Platform::host());
    let challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"hostile\"",
        realm.addr
    );
    let bearer = format!("Bearer {token}");
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            let ok = s
                .headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == bearer.as_bytes());
            (!ok).then(|| reply(401, &[("www-authenticate", challenge.as_str())], vec![]))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap();
    assert!(!realm.seen().is_empty(), "the realm was asked");
    assert!(!realm.saw_authorization(), "the realm got no credentials");
    assert!(
        realm.seen()[0]
            .path_and_query
            .contains("scope=repository%3Ahostile%2Frepo%3Apull"),
        "{:?}",
        realm.seen()
    );
}

#[tokio::test]
async fn credentials_asked_for_by_another_host_are_not_sent() {
    // The realm on another origin asks for Basic credentials.
    let realm =
        other_origin(|_| reply(401, &[("www-authenticate", "Basic realm=\"give\"")], vec![])).await;
    let image = TestImage::random(&[700], Platform::host());
    let challenge = format!("Bearer realm=\"http://{}/token\"", realm.addr);
    let reg = scripted(
        &image,
        false,
        Box::new(move |_| {
            Some(reply(
                401,
                &[("www-authenticate", challenge.as_str())],
                vec![],
            ))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry(RegistryError::CredentialsElsewhere { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&realm.addr.to_string()), "{err}");
    assert!(!realm.saw_authorization());
    assert!(store_is_empty(dir.path()));

    // A blob redirected to another host that then asks for credentials: refused the same way.
    let storage =
        other_origin(|_| reply(401, &[("www-authenticate", "Basic realm=\"s3\"")], vec![])).await;
    let d = image.layers[0].digest.to_string();
    let to = format!("http://{}/object", storage.addr);
    let reg = scripted(
        &image,
        true,
        Box::new(move |s| {
            s.path_and_query
                .ends_with(&d)
                .then(|| reply(307, &[("location", to.as_str())], vec![]))
        }),
    )
    .await;
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry(RegistryError::CredentialsElsewhere { .. })
        ),
        "{err}"
    );
    assert!(!storage.saw_authorization());
    assert!(store_is_empty(dir.path()));
}

#[tokio::test]
async fn a_redirect_to_another_origin_gets_no_authorization() {
    let image = TestImage::random(&[20_000], Platform::host());
    let layer = image.layers[0].clone();
    let bytes = layer.bytes.clone();
    let storage = other_origin(move |_| reply(200, &[], bytes.clone())).await;
    let d = layer.digest.to_string();
    let to = format!("http://{}/object/{}", storage.addr, random_name("o"));
    let reg = scripted(
        &image,
        true,
        Box::new(move |s| {
            // Only once authorized: the registry itself wants Basic credentials.
            (s.path_and_query.ends_with(&d) && s.headers.contains_key("authorization"))
                .then(|| reply(307, &[("location", to.as_str())], vec![]))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap();
    assert!(store.contains(&layer.digest));
    assert_eq!(storage.seen().len(), 1, "the redirect was followed");
    assert!(!storage.saw_authorization(), "storage got no Authorization");
    assert!(reg.server.saw_authorization(), "the registry did");
}

#[tokio::test]
async fn more_than_five_redirects_are_refused() {
    let image = TestImage::random(&[100], Platform::host());
    let d = image.layers[0].digest.to_string();
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            (s.path_and_query.contains(&d)).then(|| {
                let next = format!("{}x", s.path_and_query);
                reply(302, &[("location", next.as_str())], vec![])
            })
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry(RegistryError::TooManyRedirects { .. })
        ),
        "{err}"
    );
    assert!(store_is_empty(dir.path()));
}

// ---------------------------------------------------------------------------------------------
// A registry at a public address (in the test's own network namespace)

fn random_octet() -> u8 {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).unwrap();
    b[0].clamp(1, 254)
}

/// In a fresh netns: a TLS registry at a random address in 11.0.0.0/8 (public space, on this
/// namespace's loopback device), whose layer answer is `twist(other)`, `other` being a second
/// server at `other_ip`. Returns the pull's result and whether `other` saw any request.
async fn pull_from_public_registry(
    other_ip: std::net::IpAddr,
    twist: fn(SocketAddr) -> (bool, String),
) -> (Result<gateway::image::pull::Pulled, PullError>, usize) {
    let public: std::net::IpAddr = format!(
        "11.{}.{}.{}",
        random_octet(),
        random_octet(),
        random_octet()
    )
    .parse()
    .unwrap();
    for ip in [public, other_ip] {
        testkit::netns::ip_ok(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let ca = TestCa::new(&[&public.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let other = Hostile::start(SocketAddr::new(other_ip, 0), None, |_| {
        reply(200, &[], vec![])
    })
    .await;
    let image = TestImage::random(&[900], Platform::host());
    let (realm, target) = twist(other.addr);
    let blobs: Vec<(String, Vec<u8>)> = image
        .blobs()
        .iter()
        .map(|b| (b.digest.to_string(), b.bytes.clone()))
        .collect();
    let layer = image.layers[0].digest.to_string();
    let server = Hostile::start(
        SocketAddr::new(public, 0),
        Some(ca.issue(&[&public.to_string()], false)),
        move |s| {
            if realm && !s.headers.contains_key("authorization") {
                let c = format!("Bearer realm=\"{target}\"");
                return reply(401, &[("www-authenticate", c.as_str())], vec![]);
            }
            if !realm && s.path_and_query.ends_with(&layer) {
                return reply(307, &[("location", target.as_str())], vec![]);
            }
            if s.path_and_query == "/v2/" {
                return reply(200, &[], vec![]);
            }
            blobs
                .iter()
                .find(|(d, _)| s.path_and_query.ends_with(d.as_str()))
                .map_or_else(
                    || reply(404, &[], vec![]),
                    |(_, b)| reply(200, &[], b.clone()),
                )
        },
    )
    .await;
    let mut config = RegistryConfig::anonymous(&server.addr.to_string());
    config.ca_file = Some(ca_file);
    let client = RegistryClient::new(&config, None, quick()).await.unwrap();
    let reference =
        Reference::parse(&format!("{}/r@{}", server.addr, image.manifest.digest)).unwrap();
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let result = pull(&client, &reference, &store).await;
    if result.is_err() {
        assert!(store_is_empty(&root), "a refusal leaves nothing");
    }
    (result, other.seen().len())
}

fn assert_forbidden(
    result: Result<gateway::image::pull::Pulled, PullError>,
    seen: usize,
    class: &str,
) {
    let err = result.unwrap_err();
    match &err {
        PullError::Registry(RegistryError::ForbiddenAddress { class: c, .. }) => {
            assert_eq!(*c, class, "{err}")
        }
        other => panic!("expected a forbidden address, got: {other}"),
    }
    assert_eq!(seen, 0, "nothing reached the {class} address");
}

#[test]
fn a_token_realm_at_a_private_address_is_refused_for_a_public_registry() {
    testkit::privileged("image_pull::realm_private", 2, || async {
        let ip = format!(
            "10.{}.{}.{}",
            random_octet(),
            random_octet(),
            random_octet()
        )
        .parse()
        .unwrap();
        let (result, seen) =
            pull_from_public_registry(ip, |o| (true, format!("https://{o}/token"))).await;
        assert_forbidden(result, seen, "private");
    });
}

#[test]
fn a_redirect_to_a_link_local_address_is_refused_for_a_public_registry() {
    testkit::privileged("image_pull::redirect_link_local", 2, || async {
        let ip = format!("169.254.{}.{}", random_octet(), random_octet())
            .parse()
            .unwrap();
        let (result, seen) =
            pull_from_public_registry(ip, |o| (false, format!("https://{o}/blob"))).await;
        assert_forbidden(result, seen, "link-local");
    });
}

#[test]
fn a_redirect_to_loopback_is_refused_for_a_public_registry() {
    testkit::privileged("image_pull::redirect_loopback", 2, || async {
        let ip = format!(
            "127.{}.{}.{}",
            random_octet(),
            random_octet(),
            random_octet()
        )
        .parse()
        .unwrap();
        let (result, seen) =
            pull_from_public_registry(ip, |o| (false, format!("https://{o}/blob"))).await;
        assert_forbidden(result, seen, "loopback");
    });
}

#[tokio::test]
async fn a_pulled_image_is_installed_with_its_reference_recorded() {
    let reg = Registry::start(RegistryAuth::Basic).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, reference) = pushed_image(&reg, dir.path()).await;
    let root = dir.path().join("images");
    let images =
        gateway::image::ImageStore::open(&root, gateway::image::UnpackLimits::default()).unwrap();
    let record = gateway::image::pull::pull_and_install(&client(&reg).await, &reference, &images)
        .await
        .unwrap();
    assert_eq!(record.pinned, image.manifest.digest);
    assert_eq!(record.reference, reference.to_string());
    let rootfs = root.join(gateway::image::ImageStore::rootfs_relative(&record.pinned));
    let files = std::fs::read_dir(rootfs.join("data")).unwrap().count();
    assert_eq!(files, 3, "one file from each layer");
}

#[tokio::test]
async fn a_pushed_index_pulls_back_resolved_to_this_host() {
    let reg = Registry::start(RegistryAuth::Basic).await;
    let dir = tempfile::tempdir().unwrap();
    let here = TestImage::random(&[1200], Platform::host());
    let there = TestImage::random(&[1300], other_platform());
    let index = TestIndex::new(vec![here.clone(), there.clone()]);
    let layout_dir = dir.path().join("layout");
    write_layout(&layout_dir, &[("multi", &index.index)], &index.blobs());
    let layout = Layout::open(&layout_dir).unwrap();
    let pinned = layout.select(&Select::RefName("multi".into())).unwrap();
    let target = Reference::parse(&format!("{}/{}:multi", reg.host(), random_name("idx"))).unwrap();
    let c = client(&reg).await;
    let digest = push(&c, PushSource::Layout(&layout), &pinned, &target)
        .await
        .unwrap();
    assert_eq!(digest, index.index.digest);
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    let pulled = pull(&c, &target.with_digest(digest), &store).await.unwrap();
    assert_eq!(pulled.manifest.digest, here.manifest.digest);
    // The other platform's image went up too: it is in the registry by digest.
    assert!(
        c.has_blob(&target.repository, &there.layers[0].digest)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_push_whose_registry_answers_another_digest_fails() {
    let image = TestImage::random(&[300], Platform::host());
    let lie = Digest::of(random_name("lie").as_bytes()).to_string();
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            Some(match (s.method.as_str(), s.path_and_query.as_str()) {
                ("HEAD", _) => reply(200, &[], vec![]),
                ("PUT", p) if p.contains("/manifests/") => {
                    reply(201, &[("docker-content-digest", lie.as_str())], vec![])
                }
                _ => return None,
            })
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), &[("t", &image.manifest)], &image.blobs());
    let layout = Layout::open(dir.path()).unwrap();
    let pinned = layout.select(&Select::RefName("t".into())).unwrap();
    let target = Reference::parse(&format!("{}/hostile/repo:t", reg.server.addr)).unwrap();
    let err = push(
        &reg.client(quick()).await,
        PushSource::Layout(&layout),
        &pinned,
        &target,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            gateway::image::push::PushError::Registry(RegistryError::PushedDigest { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_oversized_token_answer_is_refused() {
    let huge = format!("{{\"token\":\"{}\"}}", "a".repeat(70 << 10));
    let realm = other_origin(move |_| {
        streamed(200, &[], huge.clone().into_bytes(), Some(1), Duration::ZERO)
    })
    .await;
    let image = TestImage::random(&[100], Platform::host());
    let challenge = format!("Bearer realm=\"http://{}/token\"", realm.addr);
    let reg = scripted(
        &image,
        false,
        Box::new(move |_| {
            Some(reply(
                401,
                &[("www-authenticate", challenge.as_str())],
                vec![],
            ))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let err = pull(
        &reg.client(quick()).await,
        &reg.reference(&image.manifest.digest),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry(RegistryError::TooLarge { max: 65536, .. })
        ),
        "{err}"
    );
    assert!(store_is_empty(dir.path()));
}

#[tokio::test]
async fn a_top_document_over_the_manifest_cap_is_refused_unread() {
    let image = TestImage::random(&[100], Platform::host());
    let wanted = image.manifest.digest.to_string();
    for declared in [true, false] {
        let wanted = wanted.clone();
        let reg = scripted(
            &image,
            false,
            Box::new(move |s| {
                s.path_and_query.ends_with(&wanted).then(|| {
                    if declared {
                        reply(200, &[], vec![b' '; (4 << 20) + 1])
                    } else {
                        streamed(200, &[], vec![b' '; 1 << 16], None, Duration::ZERO)
                    }
                })
            }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let err = pull(
            &reg.client(quick()).await,
            &reg.reference(&image.manifest.digest),
            &store,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, PullError::Registry(RegistryError::TooLarge { max, .. }) if max == 4 << 20),
            "declared={declared}: {err}"
        );
        assert!(store_is_empty(dir.path()));
    }
}

#[tokio::test]
async fn a_manifest_declaring_more_than_the_limits_allow_is_refused_before_any_blob_is_asked_for() {
    let image = TestImage::random(&[600], Platform::host());
    // The pinned manifest is the attacker's: its bytes match its digest, and it declares one
    // layer of 2^60 bytes (random digest), which the client would otherwise stream to disk.
    let fake_layer = Digest::of(random_name("huge").as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": gateway::image::oci::MEDIA_OCI_MANIFEST,
        "config": {
            "mediaType": gateway::image::oci::MEDIA_OCI_CONFIG,
            "digest": image.config.digest.to_string(),
            "size": image.config.bytes.len(),
        },
        "layers": [{
            "mediaType": gateway::image::oci::MEDIA_OCI_LAYER_GZIP,
            "digest": fake_layer.to_string(),
            "size": 1u64 << 60,
        }],
    })
    .to_string()
    .into_bytes();
    let pinned = Digest::of(&manifest);
    let path = format!("/manifests/{pinned}");
    let reg = scripted(
        &image,
        false,
        Box::new(move |s| {
            s.path_and_query.ends_with(&path).then(|| {
                reply(
                    200,
                    &[("content-type", gateway::image::oci::MEDIA_OCI_MANIFEST)],
                    manifest.clone(),
                )
            })
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let err = pull(&reg.client(quick()).await, &reg.reference(&pinned), &store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&fake_layer.to_string()), "{err}");
    assert!(err.to_string().contains("over the"), "{err}");
    let asked: Vec<String> = reg
        .server
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .filter(|p| p.contains("/blobs/"))
        .collect();
    assert!(asked.is_empty(), "blobs were requested: {asked:?}");
    assert!(store_is_empty(dir.path()));
}
