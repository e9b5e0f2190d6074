//! Transparent mode, what is reachable: from inside the sandbox only its own TLS, DNS and proxy
//! ports on its host address, nftables alone allows exactly those, and traffic arriving on
//! another interface never reaches the sockets. Privileged: needs root.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use privhelper_api::Listeners;
use testkit::helper::Harness;
use testkit::transparent::*;

#[test]
fn from_inside_the_sandbox_only_its_own_tls_and_dns_and_proxy_are_reachable() {
    testkit::privileged(
        "from_inside_the_sandbox_only_its_own_tls_and_dns_and_proxy_are_reachable",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let t = Duration::from_secs(10);

            // A transparent neighbour in slot 0 (10.232.0.1 / .2); every attack runs in slot 1
            // (10.232.0.5 / .6).
            let (neighbour, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, true))
                .await
                .unwrap();
            assert_eq!(neighbour.host_addr, "10.232.0.1");
            let theirs = Listeners::from_reply(fds).unwrap().transparent.unwrap();
            let their_tls = TcpListener::from(theirs.tls);
            let their_udp = UdpSocket::from(theirs.dns_udp);
            let their_tcp53 = TcpListener::from(theirs.dns_tcp);
            let (own_host, own_sandbox) = ("10.232.0.5", "10.232.0.6");
            let from_sandbox = |peer: Option<SocketAddr>| {
                let peer = peer.expect("nothing arrived");
                assert_eq!(
                    peer.ip().to_string(),
                    own_sandbox,
                    "peer is not the sandbox"
                );
            };

            // TLS: connection and data both ways, on the handed-over socket, from the sandbox.
            let (info, got, peer) = run(
                &client,
                transparent(&h, &rootfs, &["tcp-roundtrip", own_host, "443"]),
                |_, s| serve_tcp(s.transparent.unwrap().tls, b"tls-ok", t),
            )
            .await;
            assert_eq!(info.host_addr, own_host);
            assert_eq!(got, "RESULT reply tls-ok");
            from_sandbox(peer);

            // DNS over UDP, and over TCP.
            let (_, got, peer) = run(
                &client,
                transparent(&h, &rootfs, &["udp-roundtrip", own_host, "53"]),
                |_, s| serve_udp(s.transparent.unwrap().dns_udp, b"dns-ok", t),
            )
            .await;
            assert_eq!(got, "RESULT reply dns-ok");
            from_sandbox(peer);
            let (_, got, peer) = run(
                &client,
                transparent(&h, &rootfs, &["tcp-roundtrip", own_host, "53"]),
                |_, s| serve_tcp(s.transparent.unwrap().dns_tcp, b"dns-tcp-ok", t),
            )
            .await;
            assert_eq!(got, "RESULT reply dns-tcp-ok");
            from_sandbox(peer);

            // The proxy port still works: the helper's listener, bound before the probe started
            // (which connects once, at once).
            let (_, got, peer) = run(
                &client,
                transparent(&h, &rootfs, &["connect", own_host, "3128"]),
                move |_, s| {
                    let proxy = TcpListener::from(s.proxy);
                    std::thread::spawn(move || accept_within(&proxy, t).map(|(_, peer)| peer))
                },
            )
            .await;
            assert_eq!(got, "SUCCEEDED connected to 10.232.0.5:3128");
            from_sandbox(peer);

            // The resolver is the link's host address.
            let (_, got, ()) = run(
                &client,
                transparent(&h, &rootfs, &["read-file", "/etc/resolv.conf"]),
                |_, _| done(),
            )
            .await;
            assert!(
                got.starts_with("SUCCEEDED read 32 bytes: nameserver 10.232.0.5\\noptions"),
                "{got}"
            );

            // Other ports on the own host address: landlock refuses TCP (nftables would drop it).
            for port in ["80", "8443", "3129", "22"] {
                let (_, got, ()) = run(
                    &client,
                    transparent(&h, &rootfs, &["connect", own_host, port, "1500"]),
                    |_, _| done(),
                )
                .await;
                assert_eq!(got, "BLOCKED EACCES", "TCP {port}");
            }
            // UDP to other ports: nftables drops it (landlock does not cover UDP).
            for port in [443u16, 3128, 54, 5353] {
                let udp = testkit::helper::udp_before_link(SocketAddr::new(
                    own_host.parse().unwrap(),
                    port,
                ));
                let (_, got, udp) = run(
                    &client,
                    transparent(&h, &rootfs, &["udp-send", own_host, &port.to_string()]),
                    // Bound before the sandbox starts, so a datagram that got through is seen.
                    move |_, _| std::thread::spawn(move || udp),
                )
                .await;
                assert!(got.starts_with("RESULT sent"), "{got}");
                std::thread::sleep(Duration::from_millis(300));
                assert!(
                    nothing_arrived_udp(&udp),
                    "a UDP datagram to port {port} arrived"
                );
            }

            // The neighbour's TLS and DNS: landlock allows the ports, but a sandbox has no route to
            // any other link.
            for (proto, port) in [("tcp", "443"), ("tcp", "53"), ("udp", "53")] {
                let args = match proto {
                    "tcp" => ["connect", "10.232.0.1", port, "1500"],
                    _ => ["udp-roundtrip", "10.232.0.1", port, "1500"],
                };
                let (_, got, ()) =
                    run(&client, transparent(&h, &rootfs, &args), |_, _| done()).await;
                assert_eq!(got, "BLOCKED ENETUNREACH", "neighbour {proto} {port}");
            }
            assert!(
                nothing_arrived_tcp(&their_tls),
                "reached the neighbour's TLS socket"
            );
            assert!(
                nothing_arrived_tcp(&their_tcp53),
                "reached the neighbour's TCP 53"
            );
            assert!(
                nothing_arrived_udp(&their_udp),
                "reached the neighbour's UDP 53"
            );

            // A sandbox that is not transparent: 443 refused by landlock, 53 too, UDP 53 dropped.
            for port in ["443", "53"] {
                let (_, got, ()) = run(
                    &client,
                    h.spec(
                        &rootfs,
                        &["/bin/gigmcp-attack", "connect", own_host, port, "1500"],
                    ),
                    |_, _| done(),
                )
                .await;
                assert_eq!(got, "BLOCKED EACCES", "not transparent: TCP {port}");
            }
            let udp =
                testkit::helper::udp_before_link(SocketAddr::new(own_host.parse().unwrap(), 53));
            let (_, got, udp) = run(
                &client,
                h.spec(&rootfs, &["/bin/gigmcp-attack", "udp-send", own_host, "53"]),
                move |_, _| std::thread::spawn(move || udp),
            )
            .await;
            assert!(got.starts_with("RESULT sent"), "{got}");
            std::thread::sleep(Duration::from_millis(300));
            assert!(nothing_arrived_udp(&udp), "not transparent: UDP 53 arrived");

            client.destroy_sandbox(&neighbour.id).await.unwrap();
        },
    );
}

#[test]
fn nftables_alone_allows_exactly_proxy_tls_and_dns() {
    testkit::privileged(
        "nftables_alone_allows_exactly_proxy_tls_and_dns",
        2,
        || async {
            // Root in the sandbox's netns, without landlock or seccomp: only the firewall decides.
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;

            let (tr, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, true))
                .await
                .unwrap();
            let (plain, _i2, _o2, _e2, _p2, plain_fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, false))
                .await
                .unwrap();
            let plain_listeners = Listeners::from_reply(plain_fds).unwrap();
            assert!(plain_listeners.transparent.is_none());
            let listeners = Listeners::from_reply(fds).unwrap();
            let _proxy = TcpListener::from(listeners.proxy);
            let s = listeners.transparent.unwrap();
            let tls = TcpListener::from(s.tls);
            let tcp53 = TcpListener::from(s.dns_tcp);
            let udp53 = UdpSocket::from(s.dns_udp);
            let host = tr.host_addr.as_str();
            // Listeners on other ports of the same address, TCP and UDP.
            let _tcp_others: Vec<TcpListener> = [80u16, 8443, 3129]
                .iter()
                .map(|p| TcpListener::bind((host, *p)).unwrap())
                .collect();
            let udp_others: Vec<UdpSocket> = [443u16, 3128, 54]
                .iter()
                .map(|p| UdpSocket::bind((host, *p)).unwrap())
                .collect();

            // Exactly four ways in.
            assert_eq!(
                h.in_netns(&tr, &["connect", host, "3128"]),
                format!("SUCCEEDED connected to {host}:3128")
            );
            assert_eq!(
                h.in_netns(&tr, &["connect", host, "443"]),
                format!("SUCCEEDED connected to {host}:443")
            );
            assert!(accept_within(&tls, Duration::from_secs(2)).is_some());
            assert_eq!(
                h.in_netns(&tr, &["connect", host, "53"]),
                format!("SUCCEEDED connected to {host}:53")
            );
            assert!(accept_within(&tcp53, Duration::from_secs(2)).is_some());
            let echo = serve_udp(
                udp53.try_clone().unwrap().into(),
                b"answer",
                Duration::from_secs(5),
            );
            assert_eq!(
                h.in_netns(&tr, &["udp-roundtrip", host, "53"]),
                "RESULT reply answer"
            );
            assert_eq!(
                echo.join().unwrap().map(|p| p.ip().to_string()),
                Some(tr.sandbox_addr.clone())
            );

            // Everything else on the own address: dropped (ETIMEDOUT, not a refusal).
            for port in ["80", "8443", "3129", "22"] {
                assert_eq!(
                    h.in_netns(&tr, &["connect", host, port, "1000"]),
                    "BLOCKED ETIMEDOUT",
                    "TCP {port}"
                );
            }
            for port in ["443", "3128", "54"] {
                let got = h.in_netns(&tr, &["udp-send", host, port]);
                assert!(got.starts_with("RESULT sent"), "{got}");
            }
            std::thread::sleep(Duration::from_millis(300));
            for u in &udp_others {
                assert!(
                    nothing_arrived_udp(u),
                    "UDP to {:?} arrived",
                    u.local_addr()
                );
            }
            // The other sandbox's address (not transparent): its 443 and 53 are dropped too, and a
            // spoofed source cannot use the transparent sandbox's ports.
            for (args, what, expected) in [
                (
                    vec!["connect", plain.host_addr.as_str(), "443", "1000"],
                    "their 443",
                    "BLOCKED ENETUNREACH",
                ),
                (
                    vec!["connect", plain.host_addr.as_str(), "53", "1000"],
                    "their TCP 53",
                    "BLOCKED ENETUNREACH",
                ),
                (
                    vec![
                        "spoof-source",
                        plain.sandbox_addr.as_str(),
                        host,
                        "443",
                        "1000",
                    ],
                    "spoofed source to 443",
                    "BLOCKED ETIMEDOUT",
                ),
            ] {
                // Other links have no route from inside; the own link's firewall drops the spoof.
                assert_eq!(h.in_netns(&tr, &args), expected, "{what}");
            }
            assert!(nothing_arrived_tcp(&tls));
            assert_eq!(
                h.in_netns(
                    &tr,
                    &["udp-roundtrip", plain.host_addr.as_str(), "53", "1000"]
                ),
                "BLOCKED ENETUNREACH"
            );

            // The sandbox that is not transparent: proxy port only; 443 and 53 dropped even with
            // listeners there.
            let phost = plain.host_addr.as_str();
            let _pproxy = TcpListener::from(plain_listeners.proxy);
            let _p443 = TcpListener::bind((phost, 443)).unwrap();
            let _p53 = TcpListener::bind((phost, 53)).unwrap();
            let pudp53 = UdpSocket::bind((phost, 53)).unwrap();
            assert_eq!(
                h.in_netns(&plain, &["connect", phost, "3128"]),
                format!("SUCCEEDED connected to {phost}:3128")
            );
            for port in ["443", "53"] {
                assert_eq!(
                    h.in_netns(&plain, &["connect", phost, port, "1000"]),
                    "BLOCKED ETIMEDOUT",
                    "not transparent: TCP {port}"
                );
            }
            assert!(
                h.in_netns(&plain, &["udp-send", phost, "53"])
                    .starts_with("RESULT sent")
            );
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                nothing_arrived_udp(&pudp53),
                "not transparent: UDP 53 arrived"
            );
            // Nor can it reach the transparent sandbox's sockets: no route to another link.
            assert_eq!(
                h.in_netns(&plain, &["connect", host, "443", "1000"]),
                "BLOCKED ENETUNREACH"
            );
            assert!(nothing_arrived_tcp(&tls));
            assert!(nothing_arrived_udp(&udp53));

            client.destroy_sandbox(&tr.id).await.unwrap();
            client.destroy_sandbox(&plain.id).await.unwrap();
        },
    );
}

/// A network namespace linked to the test's namespace by a veth outside the sandbox prefix (so
/// this helper's firewall does not filter it): stands for the host's LAN side. Its name is
/// generated (`/run/netns` is host-wide); deleting it on drop deletes the veth pair too.
struct Outside {
    netns: testkit::netns::NamedNetns,
}

impl Outside {
    const LINK: &str = "gxout0";

    fn new() -> Self {
        let ip = testkit::netns::ip_ok;
        let outside = Self {
            netns: testkit::netns::NamedNetns::add(testkit::names::unique("gx")),
        };
        let ns = outside.netns.name.as_str();
        ip(&[
            "link",
            "add",
            Self::LINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        ip(&["addr", "add", "10.233.255.1/30", "dev", Self::LINK]);
        ip(&["link", "set", Self::LINK, "up"]);
        ip(&["-n", ns, "addr", "add", "10.233.255.2/30", "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.233.255.1"]);
        outside
    }

    fn attack(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.netns.name])
            .arg(testkit::bins::workspace_bin("gigmcp-attack"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        text.strip_prefix(&format!("ATTACK {} ", args[0]))
            .unwrap_or_else(|| panic!("unexpected output {text:?}"))
            .to_owned()
    }
}

#[test]
fn traffic_arriving_on_another_interface_never_reaches_the_sockets() {
    testkit::privileged(
        "traffic_arriving_on_another_interface_never_reaches_the_sockets",
        2,
        || async {
            // The firewall only filters sandbox links; a LAN host can send to N.1 through the host's
            // other interfaces. The sockets are bound to the sandbox's link, so that traffic misses them.
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let (info, _i, _o, _e, _p, fds) = client
                .create_sandbox(&sleeper(&h, &rootfs, true))
                .await
                .unwrap();
            let s = Listeners::from_reply(fds).unwrap().transparent.unwrap();
            let (tls, udp53, tcp53) = (
                TcpListener::from(s.tls),
                UdpSocket::from(s.dns_udp),
                TcpListener::from(s.dns_tcp),
            );
            let host = info.host_addr.as_str();
            let outside = Outside::new();

            // Control: a socket bound to the address alone is reachable from there.
            let _unbound = TcpListener::bind((host, 8443)).unwrap();
            assert_eq!(
                outside.attack(&["connect", host, "8443", "1000"]),
                format!("SUCCEEDED connected to {host}:8443")
            );
            // The helper's sockets are not.
            for port in ["443", "53"] {
                assert!(
                    outside
                        .attack(&["connect", host, port, "1000"])
                        .starts_with("BLOCKED"),
                    "TCP {port} from another interface"
                );
            }
            assert!(
                outside
                    .attack(&["udp-roundtrip", host, "53", "1000"])
                    .starts_with("BLOCKED")
            );
            std::thread::sleep(Duration::from_millis(200));
            assert!(nothing_arrived_tcp(&tls));
            assert!(nothing_arrived_tcp(&tcp53));
            assert!(nothing_arrived_udp(&udp53));
            drop(outside);
            client.destroy_sandbox(&info.id).await.unwrap();
        },
    );
}
