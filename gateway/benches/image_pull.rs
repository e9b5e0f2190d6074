//! Pull of a ~50 MB image (five gzip layers of random bytes) by digest from the loopback
//! registry (a real docker-registry over HTTPS, Bearer tokens), against `skopeo copy
//! docker://… oci:DIR` of the same image, in one run: the median of a few of each into a fresh
//! store or directory, and their ratio (ours / skopeo's; below 1 is faster).
//!
//! `cargo bench -p gateway --bench image_pull` (add `--profile dev` for a quick debug-build
//! run: sha256 and TLS then cost several times more; the ratio is what to compare).

use std::time::{Duration, Instant};

use gateway::image::blobs::BlobStore;
use gateway::image::oci::Platform;
use gateway::image::pull::pull;
use gateway::image::reference::Reference;
use gateway::image::registry::{ClientOptions, RegistryClient};
use testkit::registry::{Registry, RegistryAuth, TestImage, random_name, write_layout};

const RUNS: usize = 5;
const LAYER: usize = 10 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let reg = Registry::start(RegistryAuth::Bearer).await;
    let dir = tempfile::tempdir().unwrap();
    // Stored deflate blocks: valid gzip, and building the image takes no time.
    let image = TestImage::random_at(&[LAYER; 5], Platform::host(), 0);
    let total: usize = image.blobs().iter().map(|b| b.bytes.len()).sum();
    let tag = random_name("v");
    let repo = random_name("bench");
    let layout = dir.path().join("layout");
    write_layout(&layout, &[(&tag, &image.manifest)], &image.blobs());
    reg.push_layout(&layout, &tag, &repo).await;
    let reference =
        Reference::parse(&format!("{}/{repo}@{}", reg.host(), image.manifest.digest)).unwrap();

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..RUNS {
        let root = dir.path().join(format!("store-{i}"));
        let t = Instant::now();
        let client = RegistryClient::new(
            &reg.config(),
            Some(reg.password()),
            ClientOptions::default(),
        )
        .await
        .unwrap();
        let store = BlobStore::open(&root).unwrap();
        pull(&client, &reference, &store).await.unwrap();
        ours.push(t.elapsed());
        // Blobs are 0444 in writable directories: removable as they are.
        std::fs::remove_dir_all(&root).unwrap();

        let out = dir.path().join(format!("oci-{i}"));
        let t = Instant::now();
        reg.skopeo(
            &format!("docker://{}/{repo}@{}", reg.host(), image.manifest.digest),
            &format!("oci:{}:x", out.display()),
        )
        .await;
        theirs.push(t.elapsed());
        std::fs::remove_dir_all(&out).unwrap();
    }
    let (o, s) = (median(ours.clone()), median(theirs.clone()));
    let mb = total as f64 / 1e6;
    println!("image: {mb:.1} MB in {} blobs", image.blobs().len());
    println!(
        "gigmcp pull : median {o:?} ({:.0} MB/s) of {ours:?}",
        mb / o.as_secs_f64()
    );
    println!(
        "skopeo copy : median {s:?} ({:.0} MB/s) of {theirs:?}",
        mb / s.as_secs_f64()
    );
    println!(
        "ratio (gigmcp / skopeo): {:.2}",
        o.as_secs_f64() / s.as_secs_f64()
    );
}
