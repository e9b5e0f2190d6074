//! Cold start of one server from an installed OCI image vs from a plain directory (issue 11's
//! figure), in one run: the same root (the demo server, its libraries, the mount points) as an
//! unsigned copy (`dirs/<name>`) and as an image installed in the store (`roots/<hex>/rootfs`,
//! verified against its tree digest before each start). Each start is the production
//! launcher's (`SandboxLauncher::start`, the real helper on a private bus, bwrap) up to the
//! server's answer to `initialize`; the sandbox is destroyed between starts. Root (namespaces,
//! nftables, cgroups); without root it says so and exits.
//!
//! `cargo bench -p gateway --bench image_start` (add `--profile dev` for a quick debug-build
//! run; the ratio is what to compare).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::audit::Auditor;
use gateway::egress::{EgressConfig, EgressShared};
use gateway::image::layout::{Layout, Select};
use gateway::image::{ImageStore, UnpackLimits};
use gateway::sandbox::{Helper, SandboxLauncher};
use gateway::store::{ServerRecord, SqliteStore, Store, now_ms};
use gateway::vault::{MasterKey, Vault};
use privhelper_api::Limits;
use serde_json::json;
use testkit::helper::{Harness, PROXY_PORT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const STARTS: usize = 15;

async fn cold_start(launcher: &SandboxLauncher, record: &ServerRecord) -> Duration {
    let t = Instant::now();
    let launched = launcher.start(record).await.expect("sandbox started");
    let (mut stdin, mut stdout) = (launched.stdin, tokio::io::BufReader::new(launched.stdout));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}});
    stdin
        .write_all(format!("{init}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let elapsed = t.elapsed();
    assert!(line.contains("\"result\""), "{line}");
    drop(launched.guard);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("image_start: SKIPPED (needs root: namespaces, nftables, cgroups)");
        return;
    }
    testkit::privileged("bench_image_start", 2, || async {
        let h = Harness::start(0).await;
        let demo = testkit::bins::workspace_bin("gigmcp-demo-server");
        let dir_name = "demo";
        let root = h.images.join("dirs").join(dir_name);
        testkit::rootfs::build(&root, &[(demo, "bin/server")]);
        let layout = h.dir.path().join("layout");
        let built = testkit::oci::build_layout(
            &layout,
            &root,
            json!({"Entrypoint": ["/bin/server"]}),
            "v1",
        );
        let images = Arc::new(ImageStore::open(&h.images, UnpackLimits::default()).unwrap());
        let stored = Layout::open(&layout)
            .unwrap()
            .import(
                &Select::Digest(
                    gateway::image::digest::Digest::parse(&built.manifest_digest).unwrap(),
                ),
                images.blobs(),
            )
            .unwrap();
        let installed = images
            .install(&stored.pinned.digest, stored.pinned.size, "bench")
            .unwrap();

        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&h.dir.path().join("state")).unwrap());
        let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
        let ca_pem = h.dir.path().join("gateway-ca.pem");
        let shared = EgressShared::new(
            vault,
            Auditor::new(store, "bench"),
            EgressConfig::new(ca_pem),
        )
        .unwrap();
        let launcher = SandboxLauncher {
            helper: Arc::new(Helper::connected(h.client().await)),
            egress: shared,
            proxy_port: PROXY_PORT,
            ca_bundle: String::new(),
            limits: Limits {
                memory_max_bytes: 256 << 20,
                pids_max: 64,
                cpu_percent: 100,
            },
            images,
            catalog: None,
        };
        let record = |image_digest: String, manifest: serde_json::Value| ServerRecord {
            name: "bench".into(),
            version: "1".into(),
            image_digest,
            manifest: manifest.to_string(),
            source: "unsigned".into(),
            approved_ranges: Vec::new(),
            installed_ms: now_ms(),
            origin: None,
        };
        let from_dir = record(
            format!("dir:{dir_name}"),
            json!({"name": "bench", "version": "1", "command": ["/bin/server"]}),
        );
        let from_image = record(
            installed.pinned.to_string(),
            json!({"name": "bench", "version": "1"}),
        );
        // One warm-up of each (page cache, the helper's first bus call), then interleaved.
        cold_start(&launcher, &from_dir).await;
        cold_start(&launcher, &from_image).await;
        let (mut dir, mut image) = (Vec::new(), Vec::new());
        for _ in 0..STARTS {
            dir.push(cold_start(&launcher, &from_dir).await);
            image.push(cold_start(&launcher, &from_image).await);
            // Let the helper finish the previous sandboxes' teardown.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (d, i) = (median(dir), median(image));
        // The part of an image's start that a directory's lacks: the tree digest recomputed.
        let verify: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                launcher.images.verify(&installed.pinned).unwrap();
                t.elapsed()
            })
            .collect();
        println!(
            "verify alone (median of 5): {:.1} ms",
            median(verify).as_secs_f64() * 1e3
        );
        println!(
            "cold start to initialize ({STARTS} each, median): directory {:.1} ms, image {:.1} ms \
             (root {} bytes, {} entries): image/directory = {:.2}",
            d.as_secs_f64() * 1e3,
            i.as_secs_f64() * 1e3,
            installed.unpacked_bytes,
            installed.entries,
            i.as_secs_f64() / d.as_secs_f64()
        );
    });
}
