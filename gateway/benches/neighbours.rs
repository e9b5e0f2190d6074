//! Noisy neighbours (issue section 4's figures): sandbox B's request latency and the MCP front's
//! latency, quiet and while sandbox A storms its proxy port with thousands of connections (a
//! first wave held open, then four threads reconnecting as fast as they can), as ratios from one
//! run. Everything the daemon would run is in this process on two worker threads, as in
//! `gigmcpd`: both sandboxes' proxies on one egress state, and the front (with the demo server's
//! `echo` tool as a plain child). The storm is a separate process in A's namespace. Root
//! (network namespaces); without root it says so and exits.
//!
//! `cargo bench -p gateway --bench neighbours` (add `--profile dev` for a quick debug-build
//! run; the ratios are what to compare).

use std::time::{Duration, Instant};

use gateway::egress::EgressLimits;
use serde_json::json;
use testkit::egress::Fixture;
use testkit::mcp::{Gw, rpc};
use testkit::neighbours::{Neighbour, Storm, latencies, percentile};

const REQUESTS: usize = 300;
const STORM: usize = 3000;

struct Figures {
    b: Vec<u64>,
    front: Vec<u64>,
}

async fn front_latencies(gw: &Gw, token: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = rpc(
            gw.addr,
            "bench",
            token,
            "tools/call",
            json!({"name": "bench__echo", "arguments": {"text": "hello"}}),
        )
        .await;
        assert!(r.get("result").is_some(), "{r}");
        out.push(t.elapsed().as_micros() as u64);
    }
    out
}

async fn measure(fx: &Fixture, b: &Neighbour, gw: &Gw, token: &str) -> Figures {
    let b_lat = latencies(&b.ns.name, b.proxy.local_addr(), fx, REQUESTS)
        .await
        .expect("B's requests");
    let front = front_latencies(gw, token, REQUESTS).await;
    Figures { b: b_lat, front }
}

fn show(name: &str, f: &Figures) {
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "{name:<6} B p50 {:>7.2} ms  p99 {:>7.2} ms   front p50 {:>7.2} ms  p99 {:>7.2} ms",
        ms(percentile(&f.b, 50.0)),
        ms(percentile(&f.b, 99.0)),
        ms(percentile(&f.front, 50.0)),
        ms(percentile(&f.front, 99.0)),
    );
}

/// `TcpExt` counters of this thread's network namespace (where the proxies listen; the main
/// thread is still in the host's).
fn tcp_ext(names: &[&str]) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(keys), Some(values)) = (lines.next(), lines.next()) else {
        return Vec::new();
    };
    keys.split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
        .collect()
}

fn main() {
    testkit::privileged("bench neighbours", 2, bench);
}

async fn bench() {
    // The default caps; A's admitted connections are held for the whole run (the worst case
    // for its neighbours), not freed by the 10 s header timeout halfway through.
    let fx = Fixture::new(EgressLimits {
        header_read_timeout: Duration::from_secs(120),
        ..EgressLimits::default()
    })
    .await;
    let b = Neighbour::start(&fx).await;
    let server = json!({"name": "bench", "version": "1",
        "command": [testkit::bins::workspace_bin("gigmcp-demo-server").to_str().unwrap()]});
    let gw = Gw::with(
        vec![("bench", server)],
        vec![("bench", vec![("bench", vec!["echo"])])],
        &[],
    )
    .await;
    let (_, token) = gw.token("bench");
    let cap = fx.shared.limits().max_connections;
    println!(
        "B: fresh connection + CONNECT + TLS + GET per request; front: tools/call echo, a fresh \
         connection each; {REQUESTS} sequential each; A's storm: {STORM} connections held \
         (cap {cap}), then reconnecting from 4 threads"
    );
    measure(&fx, &b, &gw, &token).await; // warm-up
    let quiet = measure(&fx, &b, &gw, &token).await;
    show("quiet", &quiet);

    let mut storm = Storm::start(
        &fx.net.client_ns,
        fx.proxy.local_addr(),
        STORM,
        Duration::from_millis(500),
    );
    let wave_started = Instant::now();
    let (storm, wave) = tokio::task::spawn_blocking(move || {
        let wave = storm.first_wave();
        (storm, wave)
    })
    .await
    .unwrap();
    println!(
        "first wave took {:.1} s, slowest connect {:.1} ms (listen-queue overflows in the proxies' namespace: {:?})",
        wave_started.elapsed().as_secs_f64(),
        wave.slowest_connect * 1e3,
        tcp_ext(&["ListenOverflows", "ListenDrops"])
    );
    let started = Instant::now();
    let stormy = measure(&fx, &b, &gw, &token).await;
    let secs = started.elapsed().as_secs_f64();
    let refused = tokio::task::spawn_blocking(move || storm.stop())
        .await
        .unwrap();
    show("storm", &stormy);
    println!(
        "storm: {} opened, {} held, {} closed at once (slowest {:.1} ms), then {refused} more \
         refused in {secs:.1} s ({:.0}/s); egress sockets at the end {}",
        wave.opened,
        wave.held,
        wave.closed.len(),
        wave.closed.iter().cloned().fold(0.0, f64::max) * 1e3,
        refused as f64 / secs,
        fx.shared.open_connections()
    );
    let ratio = |a: &[u64], q: &[u64], p: f64| percentile(a, p) as f64 / percentile(q, p) as f64;
    println!(
        "ratios storm/quiet: B p50 {:.2} p99 {:.2}; front p50 {:.2} p99 {:.2}",
        ratio(&stormy.b, &quiet.b, 50.0),
        ratio(&stormy.b, &quiet.b, 99.0),
        ratio(&stormy.front, &quiet.front, 50.0),
        ratio(&stormy.front, &quiet.front, 99.0),
    );
}
