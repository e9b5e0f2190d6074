//! `registry sync` of an index of 1,000 servers (each target carrying a realistic entry: image
//! descriptor and a manifest with egress, credentials and tools, about 1.5 KB) over loopback
//! HTTP into a fresh SQLite store: the median of several first syncs, a sync with nothing new,
//! the same files fetched without any verification (the ratio's baseline), the verification
//! alone (`tuf::update` on bytes already in memory, and `tuf::load` of what the store holds)
//! per entry, and the peak resident memory a first sync adds.
//!
//! `cargo bench -p gateway --bench registry_sync` (add `--profile dev` for a quick debug-build
//! run: ed25519 and JSON then cost several times more). The metadata server runs in this
//! process, so the memory figure includes its copy of each file it serves.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use gateway::catalog::{self, HttpFetch};
use gateway::store::{RegistryRecord, SqliteStore, Store, now_ms};
use gateway::tuf::{self, Fetch, FetchError, Limits};
use serde_json::json;
use testkit::metadata::MetadataServer;
use testkit::tuf::Registry;

const SERVERS: usize = 1000;
const RUNS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What `/proc/self/status` says of `field` (kB), in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        << 10
}

/// Resets the peak resident size (VmHWM) to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// A target's `custom` value shaped like a registry entry.
fn entry(i: usize) -> serde_json::Value {
    let name = format!("server-{i:04}");
    json!({"gigmcp": {
        "description": format!("{name}: an MCP server that reads and writes issues of a hosted tracker for its users"),
        "image": {"repository": format!("registry.example.org/mcp/{name}"), "mediaType": "application/vnd.oci.image.manifest.v1+json"},
        "manifest": {
            "name": name, "version": "1.4.2",
            "command": ["node", "/app/dist/index.js", "--stdio"],
            "env": {"LOG_LEVEL": "info", "NODE_ENV": "production"},
            "egress": [{"host": "api.example.com", "ports": [443]}, {"host": "uploads.example.com", "ports": [443]}],
            "credentials": [{"name": format!("{name}-token"), "hosts": ["api.example.com"],
                             "inject": {"header": {"name": "Authorization", "format": "Bearer {}"}}}],
            "tools": ["list_issues", "get_issue", "create_issue", "update_issue", "add_comment", "search"],
            "limits": {"memory_mib": 256, "pids": 64, "cpu_percent": 50}
        },
        "source": {"registry_name": format!("org.example/{name}"), "package": format!("npm:@example/{name}@1.4.2")}
    }})
}

/// The files a first sync reads, held in memory: verification without any I/O.
struct Preloaded(HashMap<String, Vec<u8>>);

impl Fetch for Preloaded {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        match self.0.get(file) {
            Some(b) if b.len() as u64 > max => Err(FetchError::TooLarge {
                file: file.into(),
                max,
            }),
            Some(b) => Ok(b.clone()),
            None => Err(FetchError::NotFound { file: file.into() }),
        }
    }
}

fn fresh_store(reg: &Registry, url: &str) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    store
        .registry_add(&RegistryRecord {
            name: "bench".into(),
            location: url.into(),
            pinned_root: reg.pinned().root,
            ca_pem: None,
            added_ms: now_ms(),
        })
        .unwrap();
    (dir, store)
}

fn main() {
    let now = SystemTime::now();
    let mut reg = Registry::new(now);
    for i in 0..SERVERS {
        reg.add(&format!("server-{i:04}/1.4.2"), entry(i));
    }
    let v = reg.publish(now);
    let server = MetadataServer::start(reg.path());
    let url = server.url();
    let limits = Limits::default();
    let files = [
        "2.root.json".to_owned(),
        "timestamp.json".to_owned(),
        format!("{}.snapshot.json", v.snapshot),
        format!("{}.targets.json", v.targets),
    ];
    let targets_bytes = std::fs::read(reg.path().join(&files[3])).unwrap().len();

    // Baseline: the same four GETs, nothing verified or stored.
    let mut fetch = HttpFetch::new(&url, Duration::from_secs(60)).unwrap();
    let mut raw = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for f in &files {
            let _ = fetch.get(f, 64 << 20);
        }
        raw.push(t.elapsed());
    }

    let (mut first, mut again, mut peak) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..RUNS {
        let (_dir, store) = fresh_store(&reg, &url);
        let mut fetch = HttpFetch::new(&url, Duration::from_secs(60)).unwrap();
        reset_peak();
        let before = status_bytes("VmRSS:");
        let t = Instant::now();
        let report =
            catalog::sync(&store, "bench", &mut fetch, &limits, SystemTime::now()).unwrap();
        first.push(t.elapsed());
        peak = peak.max(status_bytes("VmHWM:").saturating_sub(before));
        assert_eq!(report.targets, SERVERS);
        let t = Instant::now();
        let report =
            catalog::sync(&store, "bench", &mut fetch, &limits, SystemTime::now()).unwrap();
        again.push(t.elapsed());
        assert!(!report.changed);
    }

    let mut memory: HashMap<String, Vec<u8>> = HashMap::new();
    for f in &files[1..] {
        memory.insert(f.clone(), std::fs::read(reg.path().join(f)).unwrap());
    }
    let mut verify = Vec::new();
    let mut stored = None;
    for _ in 0..RUNS {
        let mut fetch = Preloaded(memory.clone());
        let t = Instant::now();
        let up = tuf::update(&reg.pinned(), &mut fetch, &limits, now).unwrap();
        verify.push(t.elapsed());
        stored = Some(up.stored);
    }
    let stored = stored.unwrap();
    let mut load = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let loaded = tuf::load(&stored, &limits).unwrap();
        load.push(t.elapsed());
        assert_eq!(loaded.targets.entries.len(), SERVERS);
    }

    let (first, again, raw) = (median(first), median(again), median(raw));
    let (verify, load) = (median(verify), median(load));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / SERVERS as f64;
    println!(
        "registry sync: {SERVERS} servers, targets.json {targets_bytes} bytes, median of {RUNS}"
    );
    println!("  first sync (fetch + verify + store): {first:?}");
    println!("  sync with nothing new:               {again:?}");
    println!(
        "  the same files fetched, unverified:  {raw:?}  (first sync / fetch = {:.2})",
        first.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  verification alone (tuf::update):    {verify:?}  = {:.1} us per entry",
        per(verify)
    );
    println!(
        "  offline re-verification (tuf::load): {load:?}  = {:.1} us per entry",
        per(load)
    );
    println!(
        "  peak resident memory added by a first sync: {:.1} MiB",
        peak as f64 / f64::from(1 << 20)
    );
}
