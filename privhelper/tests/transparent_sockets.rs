//! The sockets themselves: the helper binds the proxy port (every sandbox) and, in transparent
//! mode, TCP 443, UDP 53 and TCP 53 on a sandbox's host address and hands them over bound to
//! the link and held by the caller alone, a
//! reused slot gets fresh sockets while the old ones are still held, and fifty cycles leak no fd
//! in the helper. Privileged: needs root.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use futures_util::StreamExt;
use privhelper_api::{Listeners, PrivHelperProxy};
use testkit::helper::{Harness, PROXY_PORT};
use testkit::transparent::*;

/// The pids holding the socket behind `fd` (by inode, over all of /proc).
fn holders(fd: &impl AsRawFd) -> Vec<u32> {
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino();
    let want = format!("socket:[{ino}]");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        {
            pids.push(pid);
        }
    }
    pids
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The helper's fd count once it has stopped moving (the same for half a second, at most 10 s
/// of waiting). `SandboxExited` comes once a sandbox's processes are gone, while the helper may
/// still hold a short-lived fd (the background removal of the last link and netns, a netlink
/// connection closing): measured mid-flight, either end of the comparison could be off by one
/// (it was, both ways, under load). A leak does not settle back; a transient does.
async fn settled_fd_count(pid: u32) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (fd_count(pid), 0);
    while same < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fd_count(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

fn socket_facts(fd: &OwnedFd) -> (SocketAddr, bool, socket2::Type, Option<String>) {
    let s = socket2::SockRef::from(fd);
    (
        s.local_addr().unwrap().as_socket().unwrap(),
        s.is_listener().unwrap(),
        s.r#type().unwrap(),
        s.device().unwrap().map(|d| String::from_utf8(d).unwrap()),
    )
}

#[test]
fn the_sockets_are_bound_to_the_link_and_held_by_the_caller_alone() {
    testkit::privileged(
        "the_sockets_are_bound_to_the_link_and_held_by_the_caller_alone",
        2,
        || async {
            let h = Harness::start(0).await;
            let before = h.count_host();
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;

            // Not transparent: the proxy listener alone, two firewall elements, and nothing of
            // the helper's on transparent mode's ports (the test can bind them itself).
            let (plain, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, false))
                .await
                .unwrap();
            let plain_listeners = Listeners::from_reply(fds).unwrap();
            assert!(plain_listeners.transparent.is_none());
            assert_eq!(h.count_host().elements, before.elements + 2);
            let host = plain.host_addr.as_str();
            let plain_link = format!("{}{}", h.link_prefix, plain.id);
            let proxy_at = SocketAddr::new(host.parse().unwrap(), PROXY_PORT);
            assert_eq!(
                socket_facts(&plain_listeners.proxy),
                (proxy_at, true, socket2::Type::STREAM, Some(plain_link))
            );
            assert_eq!(holders(&plain_listeners.proxy), [std::process::id()]);
            let _t443 = TcpListener::bind((host, 443)).expect("nothing listens on 443");
            let _t53 = TcpListener::bind((host, 53)).expect("nothing listens on TCP 53");
            let _u53 = UdpSocket::bind((host, 53)).expect("nothing bound to UDP 53");

            // Transparent: three sockets, bound to the host address *and* the link.
            let (info, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, true))
                .await
                .unwrap();
            assert_eq!(h.count_host().elements, before.elements + 2 + 5);
            let link = format!("{}{}", h.link_prefix, info.id);
            let listeners = Listeners::from_reply(fds).unwrap();
            let s = listeners.transparent.expect("3 sockets");
            let at = |port: u16| SocketAddr::new(info.host_addr.parse().unwrap(), port);
            assert_eq!(
                socket_facts(&listeners.proxy),
                (
                    at(PROXY_PORT),
                    true,
                    socket2::Type::STREAM,
                    Some(link.clone())
                )
            );
            assert_eq!(
                socket_facts(&s.tls),
                (at(443), true, socket2::Type::STREAM, Some(link.clone()))
            );
            assert_eq!(
                socket_facts(&s.dns_udp),
                (at(53), false, socket2::Type::DGRAM, Some(link.clone()))
            );
            assert_eq!(
                socket_facts(&s.dns_tcp),
                (at(53), true, socket2::Type::STREAM, Some(link.clone()))
            );
            // Nobody else holds them: not the helper, not bwrap, not the sandbox.
            let me = std::process::id();
            for fd in [&listeners.proxy, &s.tls, &s.dns_udp, &s.dns_tcp] {
                assert_eq!(holders(fd), [me], "a socket is held by another process");
            }
            // The host's own connections do reach the listener (local delivery), but never with the
            // sandbox's address as the peer: that is how the gateway tells them apart.
            let tls = TcpListener::from(s.tls.try_clone().unwrap());
            let _host_side = TcpStream::connect_timeout(&at(443), Duration::from_secs(2)).unwrap();
            let (_, peer) = accept_within(&tls, Duration::from_secs(2)).expect("local connection");
            assert_ne!(peer.ip().to_string(), info.sandbox_addr);
            drop(tls);
            // Once the caller closes them, the ports are free: the helper kept no copy.
            drop((s, listeners.proxy));
            let _proxy = TcpListener::bind(at(PROXY_PORT)).expect("proxy port free");
            let _t443 = TcpListener::bind(at(443)).expect("443 free after the caller closed it");
            let _t53 = TcpListener::bind(at(53)).expect("TCP 53 free");
            let _u53 = UdpSocket::bind(at(53)).expect("UDP 53 free");

            client.destroy_sandbox(&info.id).await.unwrap();
            client.destroy_sandbox(&plain.id).await.unwrap();
        },
    );
}

#[test]
fn a_reused_slot_gets_fresh_sockets_while_the_old_ones_are_still_held() {
    testkit::privileged(
        "a_reused_slot_gets_fresh_sockets_while_the_old_ones_are_still_held",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let mut exits = client.receive_sandbox_exited().await.unwrap();

            // The gateway is slow to close a destroyed sandbox's sockets.
            let (old, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, true))
                .await
                .unwrap();
            let stale = Listeners::from_reply(fds).unwrap();
            client.destroy_sandbox(&old.id).await.unwrap();
            loop {
                let signal = tokio::time::timeout(Duration::from_secs(30), exits.next())
                    .await
                    .unwrap()
                    .unwrap();
                if signal.args().unwrap().id == old.id {
                    break;
                }
            }
            // Same slot, same address: the new sockets bind (another link) and get the traffic.
            let (new, got, peer) = run(
                &client,
                transparent(&h, &rootfs, &["tcp-roundtrip", &old.host_addr, "443"]),
                |_, s| {
                    serve_tcp(
                        s.transparent.unwrap().tls,
                        b"fresh",
                        Duration::from_secs(10),
                    )
                },
            )
            .await;
            assert_eq!(new.host_addr, old.host_addr);
            assert_eq!(got, "RESULT reply fresh");
            assert_eq!(peer.unwrap().ip().to_string(), new.sandbox_addr);
            let stale_tls = stale.transparent.unwrap().tls;
            assert!(nothing_arrived_tcp(&TcpListener::from(stale_tls)));
            assert!(nothing_arrived_tcp(&TcpListener::from(stale.proxy)));
        },
    );
}

#[test]
fn fifty_cycles_leak_no_fd_in_the_helper() {
    testkit::privileged("fifty_cycles_leak_no_fd_in_the_helper", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("attack");
        let client = h.client().await;
        let mut exits = client.receive_sandbox_exited().await.unwrap();
        // Warm up (the bus connection and runtime allocate what they keep on first use).
        let warm = vec![
            cycle(&client, &h, &rootfs).await,
            cycle(&client, &h, &rootfs).await,
        ];
        settle(&mut exits, warm).await;
        let pid = h.helper_pid();
        let start = settled_fd_count(pid).await;
        let mut ids = Vec::new();
        for _ in 0..50 {
            ids.push(cycle(&client, &h, &rootfs).await);
        }
        settle(&mut exits, ids).await;
        let end = settled_fd_count(pid).await;
        assert_eq!(end, start, "the helper's fd count changed over 50 cycles");
        assert_eq!(h.count_host(), before, "resources left");
    });
}

/// Creates a transparent sandbox and destroys it; every received fd is dropped on the way.
async fn cycle(client: &PrivHelperProxy<'static>, h: &Harness, rootfs: &str) -> String {
    // Keep the fds until destroyed: closing stdin would end the sandbox by itself.
    let created = client
        .create_sandbox(&sleeper(h, rootfs, true))
        .await
        .unwrap();
    client.destroy_sandbox(&created.0.id).await.unwrap();
    created.0.id
}

/// Waits for the `SandboxExited` of every id (announced once all its resources are gone).
async fn settle(exits: &mut privhelper_api::SandboxExitedStream, ids: Vec<String>) {
    let mut left: std::collections::HashSet<String> = ids.into_iter().collect();
    while !left.is_empty() {
        let signal = tokio::time::timeout(Duration::from_secs(30), exits.next())
            .await
            .unwrap()
            .unwrap();
        left.remove(signal.args().unwrap().id.as_str());
    }
}
