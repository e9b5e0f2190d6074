//! Noisy neighbours: one sandbox opening thousands of connections to its proxy port, transparent
//! 443 or DNS over TCP cannot starve another sandbox or the daemon. Past its caps a connection is
//! closed at once (not held), the refusals are audited at a bounded rate and all counted, the
//! gateway-wide bound keeps the daemon's fds under it, and the sandbox cannot raise its own fd
//! limit.
//!
//! Real parts, as root: network namespaces and veths, the fake HTTPS upstream, the proxy on the
//! host side of two "sandbox" namespaces sharing one egress state, a storm from a separate
//! process inside a sandbox's namespace (so this process's fds are the gateway's), and a real
//! sandbox for the fd limit. Counts are random and printed.
//!
//! The tests of this file run one at a time ([`one_at_a_time`]): they count this process's fds,
//! which another test's sockets would inflate.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gateway::egress::EgressLimits;
use gateway::egress::audit::FLOOD_PER_SECOND;
use gateway::store::AuditEvent;
use testkit::egress::{Fixture, limits};
use testkit::names::random_in;
use testkit::neighbours::{Neighbour, Storm, Wave, get_through, open_fds};

/// A refused connection must be closed by then (the old refusal waited 500 ms for a request).
/// Every first wave here refuses fewer than one listener's refusal budget for a tick (500), so
/// none of it waits in the kernel's queue for the next tick.
const AT_ONCE: f64 = 0.3;

/// Held by every test of this file for its whole run (a failed test's poison is ignored).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn storm_limits(cap: usize, bound: usize) -> EgressLimits {
    EgressLimits {
        max_connections: cap,
        max_gateway_connections: bound,
        // Long enough that admitted idle connections stay held for the whole test.
        header_read_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(30),
        ..limits()
    }
}

async fn first_wave(mut storm: Storm) -> (Storm, Wave) {
    tokio::task::spawn_blocking(move || {
        let wave = storm.first_wave();
        (storm, wave)
    })
    .await
    .unwrap()
}

/// The first wave of `count` connections against a listener capped at `cap`: exactly `cap`
/// held, every other one closed at once.
fn assert_capped(what: &str, wave: &Wave, count: usize, cap: usize) {
    eprintln!(
        "{what}: {count} connections, cap {cap}: held {}, closed {}, slowest close {:.3} s, slowest connect {:.3} s",
        wave.held,
        wave.closed.len(),
        wave.closed.iter().cloned().fold(0.0, f64::max),
        wave.slowest_connect
    );
    assert_eq!(
        wave.failed, 0,
        "{what}: every connection reaches the listener"
    );
    assert_eq!(wave.opened, count, "{what}");
    assert_eq!(
        wave.held, cap,
        "{what}: exactly the cap is admitted and held"
    );
    assert_eq!(
        wave.closed.len(),
        count - cap,
        "{what}: the excess is closed"
    );
    for (i, t) in wave.closed.iter().enumerate() {
        assert!(*t < AT_ONCE, "{what}: excess connection {i} held {t:.3} s");
    }
}

fn refusals_of<'a>(
    events: &'a [AuditEvent],
    sandbox: &'a str,
    reason: &'a str,
) -> impl Iterator<Item = &'a AuditEvent> + 'a {
    let tag = format!("sandbox={sandbox} ");
    events
        .iter()
        .filter(move |e| e.action == "egress.denied" && e.detail.contains(&tag))
        .filter(move |e| e.detail.contains(reason))
}

/// `key=N` in an audit detail.
fn number_after(detail: &str, key: &str) -> u64 {
    detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_storm_from_one_sandbox_is_closed_at_once_and_its_neighbour_is_served() {
    let _one = one_at_a_time();
    testkit::privileged("a_storm_from_one_sandbox_is_closed_at_once", 2, || async {
        let cap = random_in(8..40);
        let count = cap + random_in(60..300);
        // Room for A's cap and B's few connections, well below the storm.
        let bound = cap + 32;
        let fx = Fixture::new(storm_limits(cap, bound)).await;
        let b = Neighbour::start(&fx).await;
        b.get(&fx).await.expect("B before the storm");
        let baseline = open_fds();
        let started = Instant::now();

        let storm = Storm::start(
            &fx.net.client_ns,
            fx.proxy.local_addr(),
            count,
            Duration::from_millis(1500),
        );
        let (storm, wave) = first_wave(storm).await;
        assert_capped("proxy port", &wave, count, cap);
        assert_eq!(
            wave.answered_503,
            count - cap,
            "each refusal is answered 503"
        );

        // The storm goes on (A keeps reconnecting) while B is served.
        let mut most_fds = open_fds();
        for i in 0..30 {
            b.get(&fx)
                .await
                .unwrap_or_else(|e| panic!("B's request {i} during the storm: {e}"));
            most_fds = most_fds.max(open_fds());
        }
        let refused_later = tokio::task::spawn_blocking(move || storm.stop())
            .await
            .unwrap();
        // Flood windows are one second from the first refusal: at most two more than whole seconds.
        let elapsed = started.elapsed().as_secs() + 2;
        eprintln!(
            "then {refused_later} more refused during B's requests; fds {baseline} -> at most {most_fds} (bound {bound})"
        );
        assert!(
            most_fds <= baseline + bound + 16,
            "the daemon's fds grew from {baseline} to {most_fds}, past the bound {bound}"
        );
        assert!(fx.shared.open_connections() <= bound);

        // Stopping A's proxy reports what its flood limit did not record one by one.
        let a = fx.proxy.sandbox_id().to_owned();
        let Fixture {
            proxy,
            shared,
            store,
            ..
        } = fx;
        drop(proxy);
        shared.flush_audit().await;
        let mut events = store.audit_recent(1_000_000).unwrap();
        events.reverse();
        let rows: Vec<&AuditEvent> =
            refusals_of(&events, &a, "too many connections from this sandbox").collect();
        let suppressed: u64 = rows
            .iter()
            .map(|e| number_after(&e.detail, "suppressed_before="))
            .sum::<u64>()
            + refusals_of(&events, &a, "not recorded one by one")
                .map(|e| number_after(&e.detail, "suppressed="))
                .sum::<u64>();
        let refused = (count - cap) as u64 + refused_later;
        eprintln!(
            "audit: {} rows for {refused} refusals ({suppressed} counted in summaries) in {elapsed} s",
            rows.len()
        );
        assert!(
            rows.len() as u64 <= u64::from(FLOOD_PER_SECOND) * elapsed,
            "{} rows in {elapsed} s: not rate-limited",
            rows.len()
        );
        assert_eq!(
            rows.len() as u64 + suppressed,
            refused,
            "every refusal is counted"
        );
        assert!(
            rows.iter().all(|e| e.detail.contains("listener=proxy")),
            "rows name the listener"
        );
    });
}

#[test]
fn idle_connections_fill_the_cap_and_the_read_timeout_frees_them() {
    let _one = one_at_a_time();
    testkit::privileged("idle_connections_fill_the_cap", 2, || async {
        let cap = random_in(4..16);
        let count = cap + random_in(10..60);
        let fx = Fixture::new(EgressLimits {
            max_connections: cap,
            header_read_timeout: Duration::from_secs(2),
            ..limits()
        })
        .await;
        let storm = Storm::start(
            &fx.net.client_ns,
            fx.proxy.local_addr(),
            count,
            Duration::from_secs(6),
        );
        let (storm, wave) = first_wave(storm).await;
        let mut closed = wave.closed.clone();
        closed.sort_by(f64::total_cmp);
        eprintln!(
            "{count} idle connections, cap {cap}: first closed after {:.3} s, last after {:.3} s",
            closed.first().unwrap_or(&0.0),
            closed.last().unwrap_or(&0.0)
        );
        assert_eq!(wave.held, 0, "the read timeout closes the idle ones too");
        assert_eq!(closed.len(), count);
        let (refused, timed_out) = closed.split_at(count - cap);
        assert!(
            refused.iter().all(|t| *t < AT_ONCE),
            "excess closed at once"
        );
        assert!(
            timed_out.iter().all(|t| (1.5..5.0).contains(t)),
            "the held ones closed by the 2 s read timeout: {timed_out:?}"
        );
        drop(storm);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = get_through(&fx.net.client_ns, fx.proxy.local_addr(), &fx).await;
        a.expect("the slots are free again");
    });
}

/// A listener bound on the proxy's address (as the helper would bind it), handed to the proxy.
fn bind_on(fx: &Fixture, port: u16) -> std::net::TcpListener {
    std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(fx.net.proxy_ip()), port)).unwrap()
}

#[test]
fn transparent_443_closes_the_excess_at_once() {
    let _one = one_at_a_time();
    testkit::privileged("transparent_443_closes_the_excess_at_once", 2, || async {
        let cap = random_in(4..24);
        let count = cap + random_in(40..200);
        let fx = Fixture::new(storm_limits(cap, cap + 32)).await;
        let b = Neighbour::start(&fx).await;
        fx.proxy
            .adopt_transparent_listener(bind_on(&fx, 443))
            .unwrap();
        let to = SocketAddr::new(IpAddr::V4(fx.net.proxy_ip()), 443);
        let storm = Storm::start(&fx.net.client_ns, to, count, Duration::from_millis(1500));
        let (storm, wave) = first_wave(storm).await;
        assert_capped("transparent 443", &wave, count, cap);
        b.get(&fx).await.expect("B during the storm on 443");
        // 443 and the proxy port share the cap: the proxy port is full too.
        let busy = get_through(&fx.net.client_ns, fx.proxy.local_addr(), &fx).await;
        assert!(
            busy.as_ref().is_err_and(|e| e.contains("503")),
            "A's proxy port while 443 holds the cap: {busy:?}"
        );
        drop(storm);
        let events = fx.audit().await;
        let a = fx.proxy.sandbox_id();
        assert!(
            refusals_of(&events, a, "too many connections")
                .any(|e| e.detail.contains("listener=tls")),
            "refusals on 443 are audited"
        );
    });
}

#[test]
fn dns_over_tcp_closes_the_excess_at_once() {
    let _one = one_at_a_time();
    testkit::privileged("dns_over_tcp_closes_the_excess_at_once", 2, || async {
        let dns_cap = random_in(2..10);
        let count = dns_cap + random_in(40..200);
        let fx = Fixture::new(EgressLimits {
            max_dns_connections: dns_cap,
            ..storm_limits(16, 64)
        })
        .await;
        let b = Neighbour::start(&fx).await;
        fx.proxy
            .adopt_dns(None, Some(bind_on(&fx, 53)), fx.net.proxy_ip())
            .unwrap();
        let to = SocketAddr::new(IpAddr::V4(fx.net.proxy_ip()), 53);
        // Held DNS connections end after 10 s whatever they send: the wave is shorter.
        let storm = Storm::start(&fx.net.client_ns, to, count, Duration::from_millis(1500));
        let (storm, wave) = first_wave(storm).await;
        assert_capped("DNS over TCP", &wave, count, dns_cap);
        b.get(&fx).await.expect("B during the DNS storm");
        // DNS has a pool of its own: A's proxy port still serves.
        get_through(&fx.net.client_ns, fx.proxy.local_addr(), &fx)
            .await
            .expect("A's proxy port while DNS is full");
        drop(storm);
        let events = fx.audit().await;
        let a = fx.proxy.sandbox_id();
        assert!(
            refusals_of(&events, a, "too many connections")
                .any(|e| e.detail.contains("listener=dns")),
            "refusals on 53 are audited"
        );
    });
}

#[test]
fn the_gateway_bound_holds_when_every_sandbox_cap_is_larger() {
    let _one = one_at_a_time();
    testkit::privileged("the_gateway_bound_holds", 2, || async {
        let bound = random_in(12..30);
        let count = bound + random_in(40..200);
        // Sandbox caps above the bound: only the gateway-wide bound can stop A.
        let fx = Fixture::new(storm_limits(1000, bound)).await;
        let b = Neighbour::start(&fx).await;
        let baseline = open_fds();
        let storm = Storm::start(
            &fx.net.client_ns,
            fx.proxy.local_addr(),
            count,
            Duration::from_millis(1500),
        );
        let (storm, wave) = first_wave(storm).await;
        assert_capped("gateway bound", &wave, count, bound);
        let during = open_fds();
        assert!(
            during <= baseline + bound + 8,
            "fds {baseline} -> {during} past the bound {bound}"
        );
        let refused = b.get(&fx).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("503")),
            "B at the gateway bound: {refused:?}"
        );
        drop(storm);
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.get(&fx).await.expect("B once A's connections are gone");
        let events = fx.audit().await;
        for who in [fx.proxy.sandbox_id(), b.proxy.sandbox_id()] {
            assert!(
                refusals_of(&events, who, "egress connection bound is reached")
                    .next()
                    .is_some(),
                "{who}'s refusals at the bound are audited"
            );
        }
    });
}

#[test]
fn a_sandbox_cannot_raise_its_fd_limit() {
    let _one = one_at_a_time();
    testkit::privileged("a_sandbox_cannot_raise_its_fd_limit", 2, || async {
        let nofile = random_in(64..2048);
        let mut h = testkit::helper::Harness::start(0).await;
        // The last table of the harness's configuration is [ceilings].
        let mut config = std::fs::read_to_string(&h.config).unwrap();
        config.push_str(&format!("nofile = {nofile}\n"));
        std::fs::write(&h.config, config).unwrap();
        h.kill_helper();
        h.start_helper().await;
        let rootfs = h.attack_rootfs("attack");
        let client = h.client().await;
        let spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "fd-limit", "1000000"]);
        let (_, verdict, ()) =
            testkit::transparent::run(&client, spec, |_, _| testkit::transparent::done()).await;
        eprintln!("nofile {nofile}: {verdict}");
        let want = format!("RESULT soft={nofile} hard={nofile} raise=EPERM opened=");
        assert!(verdict.starts_with(&want), "{verdict}");
        assert!(verdict.ends_with("then EMFILE"), "{verdict}");
        let opened: usize = number_after(&verdict, "opened=") as usize;
        assert!(opened < nofile, "{verdict}");
    });
}
