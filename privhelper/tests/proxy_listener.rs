//! The proxy listener is the helper's: bound on the sandbox's host address before the server
//! starts and handed over, so a server whose first act is to connect to its proxy always finds
//! it listening; a port someone else holds fails the sandbox closed and leaves nothing behind;
//! privileged ports and the host's service ports are refused. Ports are chosen at random.
//! Privileged: needs root.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use privhelper_api::{HelperError, Listeners, SandboxSpec};
use testkit::helper::Harness;
use testkit::transparent::{accept_within, run, sleeper};
use zbus::DBusError;

/// Slot 0's host address in the harness's pool: every sandbox here is alone, so it gets slot 0.
const SLOT0_HOST: &str = "10.232.0.1";

/// A random port in `lo..hi` that is none of `not`.
fn random_port(lo: u16, hi: u16, not: &[u16]) -> u16 {
    loop {
        let mut b = [0u8; 2];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).expect("random");
        let port = lo + u16::from_le_bytes(b) % (hi - lo);
        if !not.contains(&port) {
            return port;
        }
    }
}

/// A proxy port the helper accepts: unprivileged and none of its default host service ports.
fn usable_port() -> u16 {
    random_port(1024, 65535, &privhelper::config::DEFAULT_HOST_SERVICE_PORTS)
}

fn connect_first(h: &Harness, rootfs: &str, port: u16, transparent: bool) -> SandboxSpec {
    let port = port.to_string();
    let argv = ["/bin/gigmcp-attack", "connect", SLOT0_HOST, &port, "3000"];
    let mut spec = h.spec(rootfs, &argv);
    spec.proxy_port = port.parse().unwrap();
    spec.transparent = transparent;
    spec
}

#[test]
fn a_server_whose_first_act_is_to_connect_to_its_proxy_finds_it_listening_every_time() {
    testkit::privileged(
        "a_server_whose_first_act_is_to_connect_to_its_proxy_finds_it_listening_every_time",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let wait = Duration::from_secs(10);
            for n in 0..30 {
                let port = usable_port();
                let spec = connect_first(&h, &rootfs, port, n % 3 == 0);
                // The gateway side takes the listener only once CreateSandbox has answered,
                // long after the server may have connected: the backlog holds it meanwhile.
                let (info, got, peer) = run(&client, spec, move |_, s| {
                    let proxy = TcpListener::from(s.proxy);
                    std::thread::spawn(move || accept_within(&proxy, wait).map(|(_, p)| p))
                })
                .await;
                assert_eq!(info.host_addr, SLOT0_HOST);
                assert_eq!(
                    got,
                    format!("SUCCEEDED connected to {SLOT0_HOST}:{port}"),
                    "run {n}, port {port}"
                );
                let peer = peer.expect("the connection is on the handed-over listener");
                assert_eq!(peer.ip().to_string(), info.sandbox_addr, "run {n}");
            }
        },
    );
}

/// Creates a sandbox that must fail because its port is held, and checks that the error says
/// so and that nothing of the sandbox is left on the host.
async fn fails_closed(h: &Harness, spec: &SandboxSpec, what: &str) {
    let before = h.count_host();
    let client = h.client().await;
    let err = match client.create_sandbox(spec).await {
        Ok((info, ..)) => panic!("{what}: created {info:?} on a port someone else holds"),
        Err(e) => e,
    };
    assert_eq!(
        err.name(),
        "org.gigmcp.PrivHelper1.Error.Failed",
        "{what}: {err:?}"
    );
    let HelperError::Failed(msg) = &err else {
        unreachable!()
    };
    assert!(
        msg.starts_with("listener: TCP ")
            && msg.contains("bind")
            && msg.contains("holds this port"),
        "{what}: {msg}"
    );
    assert_eq!(
        h.count_host(),
        before,
        "{what}: a failed sandbox left something"
    );
    assert!(client.list_sandboxes().await.unwrap().is_empty(), "{what}");
}

#[test]
fn a_port_held_on_the_host_fails_the_sandbox_closed_and_leaves_nothing() {
    testkit::privileged(
        "a_port_held_on_the_host_fails_the_sandbox_closed_and_leaves_nothing",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let empty = h.count_host();

            // Held on the wildcard address.
            let port = usable_port();
            let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
            let spec = connect_first(&h, &rootfs, port, false);
            fails_closed(&h, &spec, "0.0.0.0").await;
            // Transparent mode's ports too, on the wildcard address.
            for tport in [443, 53] {
                let _held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, tport)).unwrap();
                let spec = sleeper(&h, &rootfs, true);
                fails_closed(&h, &spec, &format!("0.0.0.0:{tport}")).await;
            }

            // Held on the sandbox's own host address, bound before its link exists.
            let port2 = usable_port();
            let addr = SocketAddr::new(SLOT0_HOST.parse().unwrap(), port2);
            let held_there = testkit::helper::listen_before_link(addr);
            let spec2 = connect_first(&h, &rootfs, port2, false);
            fails_closed(&h, &spec2, "the host address").await;

            // Control: once the holders let go, the same specs build, on the helper's listener.
            drop((held, held_there));
            for spec in [spec, spec2] {
                let client = h.client().await;
                let (info, _i, _o, _e, _p, fds) = client.create_sandbox(&spec).await.unwrap();
                let listeners = Listeners::from_reply(fds).unwrap();
                let local = socket2::SockRef::from(&listeners.proxy)
                    .local_addr()
                    .unwrap();
                let want = SocketAddr::new(info.host_addr.parse().unwrap(), spec.proxy_port);
                assert_eq!(local.as_socket(), Some(want));
                client.destroy_sandbox(&info.id).await.unwrap();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while h.count_host() != empty && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(h.count_host(), empty);
        },
    );
}

#[test]
fn privileged_ports_and_the_hosts_service_ports_are_refused_as_proxy_ports() {
    testkit::privileged(
        "privileged_ports_and_the_hosts_service_ports_are_refused_as_proxy_ports",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let before = h.count_host();
            let services = privhelper::config::DEFAULT_HOST_SERVICE_PORTS;
            let mut ports: Vec<(u16, &str)> = (0..8)
                .map(|_| (random_port(1, 1024, &[]), "below 1024"))
                .collect();
            for _ in 0..4 {
                let service = services[usize::from(random_port(0, 8, &[]))];
                ports.push((service, "host_service_ports"));
            }
            for (port, why) in ports {
                for transparent in [false, true] {
                    let mut spec = sleeper(&h, &rootfs, transparent);
                    spec.proxy_port = port;
                    let err = client.create_sandbox(&spec).await.unwrap_err();
                    let HelperError::InvalidSpec(msg) = &err else {
                        panic!("port {port}: {err:?}");
                    };
                    assert!(
                        msg.contains("proxy_port") && msg.contains(why),
                        "{port}: {msg}"
                    );
                }
            }
            assert_eq!(h.count_host(), before, "a refused spec created something");
        },
    );
}
