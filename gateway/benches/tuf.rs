//! The cost of verifying a registry of 1,000 servers (issue 12's numbers): a targets.json of
//! 1,000 entries, each with a ~1 KiB `custom` manifest, signed by our `Repo` and read back by a
//! full `update` from the pinned root (DirFetch), and by `load` of the stored state. Prints the
//! time per full update, per entry, the file sizes and the update's peak memory above the
//! process's resident set.

use std::time::{Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::tuf::{self, Limits, Stored, cjson};
use serde_json::json;
use testkit::tuf::{Registry, random_target};

const SERVERS: usize = 1_000;

/// A manifest-sized custom value (about 1 KiB of JSON).
fn custom(i: usize) -> serde_json::Value {
    let hosts: Vec<_> = (0..6)
        .map(|h| json!({"host": format!("api{h}.server{i}.example.com"), "ports": [443]}))
        .collect();
    json!({"gigmcp": {
        "description": format!("Server number {i}: a community MCP server with a few tools."),
        "image": {"repository": format!("registry.example.com/mcp/server{i}"),
                  "mediaType": "application/vnd.oci.image.manifest.v1+json"},
        "manifest": {
            "name": format!("server{i}"), "version": "1.0.0",
            "command": ["/usr/bin/server", "--stdio"],
            "egress": hosts,
            "credentials": [{"name": "API_TOKEN", "hosts": [format!("api0.server{i}.example.com")],
                             "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
            "tools": ["search", "fetch", "list", "create", "update", "delete"],
            "limits": {"memory_mib": 256, "pids": 64, "cpu_percent": 50},
        },
    }})
}

/// Peak resident memory (VmHWM) and current (VmRSS), in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn registry() -> (Registry, Stored) {
    let now = SystemTime::now();
    let mut reg = Registry::new(now);
    for i in 0..SERVERS {
        reg.repo
            .set_target(random_target(&format!("server{i}/1.0.0"), custom(i)));
    }
    reg.publish(now);
    let pinned = reg.pinned();
    (reg, pinned)
}

fn report(reg: &Registry, pinned: &Stored) {
    let (_, targets) = reg.current_files();
    let size = std::fs::metadata(reg.path().join(&targets)).unwrap().len();
    // Reset the peak to the current resident set, so the peak after is the update's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (_, before) = memory();
    let started = Instant::now();
    let up = tuf::update(
        pinned,
        &mut reg.fetch(),
        &Limits::default(),
        SystemTime::now(),
    )
    .unwrap();
    let elapsed = started.elapsed();
    let (peak, _) = memory();
    println!(
        "tuf: {} targets, targets.json {:.2} MB; one full update {:.1} ms ({:.1} µs per entry), \
         peak memory +{:.1} MiB",
        up.targets.entries.len(),
        size as f64 / 1e6,
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / SERVERS as f64,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}

fn verify_1000(c: &mut Criterion) {
    let (reg, pinned) = registry();
    report(&reg, &pinned);
    let stored = tuf::update(
        &pinned,
        &mut reg.fetch(),
        &Limits::default(),
        SystemTime::now(),
    )
    .unwrap()
    .stored;
    let mut group = c.benchmark_group("tuf");
    group.sample_size(20);
    group.bench_function("update_1000_targets_from_pinned_root", |b| {
        b.iter(|| {
            tuf::update(
                &pinned,
                &mut reg.fetch(),
                &Limits::default(),
                SystemTime::now(),
            )
            .unwrap()
        })
    });
    group.bench_function("load_1000_targets_stored", |b| {
        b.iter(|| tuf::load(std::hint::black_box(&stored), &Limits::default()).unwrap())
    });
    // Where the time goes: reading the targets file (duplicate keys checked) and writing its
    // canonical form (what the signature covers).
    let raw = stored.targets.clone().unwrap();
    group.bench_function("parse_targets_json", |b| {
        b.iter(|| cjson::parse(std::hint::black_box(&raw)).unwrap())
    });
    // Baseline: serde_json's own Value (no duplicate-key check).
    group.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&raw)).unwrap())
    });
    let value = cjson::parse(&raw).unwrap();
    group.bench_function("canonicalise_targets_signed", |b| {
        b.iter(|| cjson::to_canonical(std::hint::black_box(&value["signed"])))
    });
    group.finish();
}

criterion_group!(benches, verify_1000);
criterion_main!(benches);
