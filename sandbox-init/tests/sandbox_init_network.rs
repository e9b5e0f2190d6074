//! The network paths landlock's TCP rule does not see, closed by seccomp, in the landlock-only
//! harness (no firewall: the sandbox shares the test's own network namespace, so nothing but
//! init's confinement stands between the server and a listener on loopback). TCP Fast Open
//! (`MSG_FASTOPEN` on sendto, sendmsg and sendmmsg; `TCP_FASTOPEN_CONNECT`), MPTCP, SCTP and
//! DCCP must die by SIGSYS, netlink other than NETLINK_ROUTE too, and a listener on a port that
//! is not the proxy's must never accept. Each attack comes with its control: the same probe in
//! the same sandbox without init reaches the listener. Needs root.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use testkit::init::*;

const IPPROTO_MPTCP: i32 = 262;
const SOCK_DCCP: i32 = 6;

/// A listener on a kernel-chosen (random) loopback port that the sandbox must not reach.
fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port().to_string();
    (l, port)
}

/// Whether the listener has a connection waiting (looks for up to `wait`).
fn accepted(l: &TcpListener, wait: Duration) -> bool {
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() >= wait {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A proxy port for init's landlock rule: random, and not the listener's.
fn proxy_port(other: &str) -> u16 {
    loop {
        let p = 1024 + (random_u64() % 60000) as u16;
        if p.to_string() != other {
            return p;
        }
    }
}

/// Runs `attack` without init (control: it must reach the listener) and under init (it must die
/// by SIGSYS and the listener must never accept).
fn assert_closed(attack: &[&str], port: &str, l: &TcpListener) {
    let mut probe = vec![PROBE_IN_SANDBOX];
    probe.extend(attack);
    let control = sandboxed(&Binds::default(), &probe);
    let said = assert_ran(&control);
    assert!(said.ends_with(" ok\n"), "control {attack:?}: {said}");
    assert!(
        accepted(l, Duration::from_secs(2)),
        "control {attack:?} reached the listener"
    );

    let out = sandboxed_init(&Binds::default(), proxy_port(port), &[], &probe);
    assert_sigsys_in_sandbox(&out, &format!("{attack:?} under init"));
    assert!(
        !accepted(l, Duration::from_millis(300)),
        "{attack:?} reached the listener"
    );
}

#[test]
fn tcp_fast_open_is_killed_on_every_path() {
    testkit::privileged("tcp_fast_open_is_killed_on_every_path", 1, || async {
        let (l, port) = listener();
        for how in ["sendto", "sendmsg", "sendmmsg", "connect"] {
            assert_closed(&["fastopen", how, &port], &port, &l);
        }
    });
}

#[test]
fn mptcp_sockets_are_killed() {
    testkit::privileged("mptcp_sockets_are_killed", 1, || async {
        let (l, port) = listener();
        let (inet, stream, mptcp) = (
            libc::AF_INET.to_string(),
            libc::SOCK_STREAM.to_string(),
            IPPROTO_MPTCP.to_string(),
        );
        assert_closed(&["socket", &inet, &stream, &mptcp, &port], &port, &l);
    });
}

#[test]
fn ip_protocols_other_than_tcp_and_udp_and_netlink_other_than_route_are_killed() {
    testkit::privileged(
        "ip_protocols_other_than_tcp_and_udp_and_netlink_other_than_route_are_killed",
        1,
        || async {
            let (l, port) = listener();
            let proxy = proxy_port(&port);
            let n = |v: i32| v.to_string();
            for (family, kind, protocol) in [
                (libc::AF_INET6, libc::SOCK_STREAM, IPPROTO_MPTCP),
                (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
                (libc::AF_INET, libc::SOCK_SEQPACKET, 0),
                (libc::AF_INET6, libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP),
                (libc::AF_INET, SOCK_DCCP, 0),
                (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE),
                (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
                (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
                (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_SOCK_DIAG),
                (
                    libc::AF_NETLINK,
                    libc::SOCK_DGRAM,
                    libc::NETLINK_KOBJECT_UEVENT,
                ),
            ] {
                let attack = [
                    PROBE_IN_SANDBOX,
                    "socket",
                    &n(family),
                    &n(kind),
                    &n(protocol),
                    &port,
                ];
                let out = sandboxed_init(&Binds::default(), proxy, &[], &attack);
                assert_sigsys_in_sandbox(&out, &format!("socket({family}, {kind}, {protocol})"));
            }
            assert!(!accepted(&l, Duration::from_millis(300)));

            // What stays: TCP and UDP sockets, NETLINK_ROUTE; TCP only to the proxy port.
            for (family, kind, protocol, want) in [
                (libc::AF_INET, libc::SOCK_STREAM, 0, "connect errno=13\n"),
                (
                    libc::AF_INET,
                    libc::SOCK_STREAM,
                    libc::IPPROTO_TCP,
                    "connect errno=13\n",
                ),
                (
                    libc::AF_NETLINK,
                    libc::SOCK_RAW,
                    libc::NETLINK_ROUTE,
                    "socket ok\n",
                ),
            ] {
                let attack = [
                    PROBE_IN_SANDBOX,
                    "socket",
                    &n(family),
                    &n(kind),
                    &n(protocol),
                    &port,
                ];
                let out = sandboxed_init(&Binds::default(), proxy, &[], &attack);
                assert_eq!(
                    assert_ran(&out),
                    want,
                    "socket({family}, {kind}, {protocol})"
                );
            }
            assert!(!accepted(&l, Duration::from_millis(300)));
        },
    );
}
