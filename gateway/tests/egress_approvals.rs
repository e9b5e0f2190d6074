//! Approvals never open the host: whatever private ranges an admin approved for a server, the
//! egress proxy never connects to the sandbox pool, the host's own addresses (kept current as
//! they change), the gateway's listen addresses, loopback, unspecified, multicast, link-local
//! or the cloud metadata and host-agent addresses, in any IPv6 form; `server add` refuses such
//! approvals and names the overlap (that part: `admin_approvals.rs`).
//!
//! Real parts, as root: the test's own network namespace plays the host (a link carries
//! its addresses, a canary listens on 0.0.0.0 and [::]), a named namespace plays the sandbox
//! on a veth whose host side is in the pool, the proxy runs in-process; the attacker speaks
//! CONNECT from the sandbox and, when a tunnel is admitted, pushes a request through it so
//! that the proxy dials. Names, ports and addresses are random.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::audit::Auditor;
use gateway::egress::{EgressConfig, EgressProxy, EgressShared, SandboxEgress, StaticResolver};
use gateway::manifest::Manifest;
use gateway::store::{AuditEvent, SqliteStore, Store};
use gateway::vault::{MasterKey, Vault};
use ipnet::IpNet;
use testkit::canary::{Canary, HostLink};
use testkit::egress::{connect_from, denied_with, limits, read_head, tls_client};
use testkit::netns::{NamedNetns, ip_ok};
use tokio::io::AsyncWriteExt;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("random");
    b
}

fn random_port() -> u16 {
    20_000 + u16::from_le_bytes(random()) % 40_000
}

fn label() -> String {
    hex::encode(random::<5>())
}

/// An address in public space (no special class): 45.0.0.0/8 and 62.0.0.0/8 are ordinary
/// unicast, and nothing in the test's namespace routes there unless the test says so.
fn random_public() -> Ipv4Addr {
    let [a, b, c, d] = random();
    Ipv4Addr::new(if a % 2 == 0 { 45 } else { 62 }, b, c, 1 + d % 250)
}

fn random_public_v6() -> Ipv6Addr {
    let [a, b, c, d] = random();
    Ipv6Addr::new(
        0x2a01,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
        0,
        0,
        0,
        0,
        1,
    )
}

fn mapped(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V6(v4.to_ipv6_mapped())
}

fn nat64(v4: Ipv4Addr) -> IpAddr {
    let [a, b, c, d] = v4.octets();
    IpAddr::V6(Ipv6Addr::new(
        0x64,
        0xff9b,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    ))
}

/// The sandbox: a named namespace on a veth whose host side (N.1, in the pool) is where the
/// proxy listens; the pool is 10.242.0.0/16 and N random.
struct Sandbox {
    ns: NamedNetns,
    n: u8,
}

const POOL: &str = "10.242.0.0/16";

impl Sandbox {
    fn new() -> Self {
        let ns = NamedNetns::add(testkit::names::unique("gmeg"));
        let n = 1 + random::<1>()[0] % 250;
        let host_link = format!("ga{}", label());
        ip_ok(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ip_ok(&[
            "addr",
            "add",
            &format!("10.242.{n}.1/30"),
            "dev",
            &host_link,
        ]);
        ip_ok(&["link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            ip_ok(&all);
        };
        inside(&["addr", "add", &format!("10.242.{n}.2/30"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &format!("10.242.{n}.1")]);
        Self { ns, n }
    }

    fn host_side(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 242, self.n, 1)
    }

    fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 242, self.n, 2)
    }
}

/// The proxy for one server whose manifest allows each name on `port`, with `approved`.
struct Proxy {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    shared: Arc<EgressShared>,
    proxy: EgressProxy,
    ca_pem: PathBuf,
    port: u16,
    sandbox_ns: String,
}

impl Proxy {
    async fn start(
        sandbox: &Sandbox,
        port: u16,
        names: &[(String, Vec<IpAddr>)],
        approved: Vec<IpNet>,
        gateway_listen: Vec<IpAddr>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&dir.path().join("state")).unwrap());
        let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
        let mut resolver = StaticResolver::new();
        for (name, addrs) in names {
            resolver.insert(name, addrs.clone());
        }
        let egress: Vec<String> = names
            .iter()
            // Plain HTTP and 443 too, so that every way out (CONNECT, absolute-form HTTP,
            // transparent TLS) is tried.
            .map(|(n, _)| format!(r#"{{"host":"{n}","ports":[{port},443],"http":true}}"#))
            .collect();
        let manifest = Manifest::from_json(&format!(
            r#"{{"name":"approvals","version":"1","command":["/bin/server"],"egress":[{}]}}"#,
            egress.join(",")
        ))
        .expect("test manifest");
        let ca_pem = dir.path().join("gateway-ca.pem");
        let mut config = EgressConfig::new(ca_pem.clone());
        config.limits = limits();
        config.resolver = Arc::new(resolver);
        config.sandbox_pool = POOL.parse().unwrap();
        config.gateway_listen = gateway_listen;
        let shared =
            EgressShared::new(vault, Auditor::new(store.clone(), "gigmcpd"), config).unwrap();
        let sb = SandboxEgress {
            sandbox_id: format!("appr{}", label()),
            listen: SocketAddr::new(IpAddr::V4(sandbox.host_side()), 0),
            expected_peer: sandbox.addr(),
            manifest: Arc::new(manifest),
            placeholders: Vec::new(),
            // As if stored before approvals were checked, or written past `server add`.
            approved_ranges: approved,
            reserved_opt_in: Vec::new(),
        };
        let proxy = EgressProxy::spawn(sb, shared.clone()).await.unwrap();
        Self {
            _dir: dir,
            store,
            shared,
            proxy,
            ca_pem,
            port,
            sandbox_ns: sandbox.ns.name.clone(),
        }
    }

    /// CONNECT `host:port` from the sandbox; returns the status line. An admitted tunnel is
    /// used as an attacker would: TLS through it and a request, so that the proxy dials.
    async fn attempt(&self, host: &str) -> String {
        let (tunnel, status) = self.connect(host).await;
        if status.contains(" 200 ") {
            self.request(tunnel, host).await;
        }
        status
    }

    async fn connect(&self, host: &str) -> (tokio::net::TcpStream, String) {
        let authority = format!("{host}:{}", self.port);
        let mut s = connect_from(&self.sandbox_ns, self.proxy.local_addr()).await;
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await.unwrap_or_default();
        let status = head.lines().next().unwrap_or_default().to_owned();
        (s, status)
    }

    /// One request through an admitted tunnel; returns the response's status line, if any.
    async fn request(&self, tunnel: tokio::net::TcpStream, host: &str) -> String {
        let Ok(mut tls) = tls_client(tunnel, &self.ca_pem, host, &[b"http/1.1"]).await else {
            return String::new();
        };
        let _ = tls
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}:{}\r\n\r\n", self.port).as_bytes())
            .await;
        match tokio::time::timeout(Duration::from_secs(10), read_head(&mut tls)).await {
            Ok(Ok(head)) => head.lines().next().unwrap_or_default().to_owned(),
            _ => String::new(),
        }
    }

    async fn audit(&self) -> Vec<AuditEvent> {
        self.shared.flush_audit().await;
        self.store.audit_recent(100_000).unwrap()
    }
}

#[test]
fn no_approval_opens_the_host_the_pool_loopback_or_metadata() {
    testkit::privileged(
        "no_approval_opens_the_host_the_pool_loopback_or_metadata",
        4,
        || async {
            let port = random_port();
            let canary = Canary::bind(port);
            let sandbox = Sandbox::new();
            let link = HostLink::new();
            let [r1, r2, r3, r4] = random();
            let host_public = random_public();
            let host_private = Ipv4Addr::new(172, 16 + r1 % 16, r2, 1 + r3 % 250);
            let host_v6 = random_public_v6();
            // A range delivered to the host by a local route, no address assigned (AnyIP).
            let anyip = Ipv4Addr::new(62, r4, r1, 0);
            let listen = random_public();
            let unassigned = random_public();
            let [l1, l2, l3] = random();
            let loopback = Ipv4Addr::new(127, l1, l2, 1 + l3 % 250);
            let other_sandbox = Ipv4Addr::new(10, 242, sandbox.n.wrapping_add(1 + l1 % 3), 2);
            for ip in [
                IpAddr::V4(host_public),
                IpAddr::V4(host_private),
                IpAddr::V6(host_v6),
                "169.254.169.254".parse().unwrap(),
                "169.254.170.2".parse().unwrap(),
                "100.100.100.200".parse().unwrap(),
                "168.63.129.16".parse().unwrap(),
                "fd00:ec2::254".parse().unwrap(),
            ] {
                link.add(ip);
            }
            ip_ok(&["route", "add", "local", &format!("{anyip}/24"), "dev", "lo"]);
            let anyip_member = Ipv4Addr::new(62, r4, r1, 1 + r2 % 250);

            // (what, the answer(s), the class the audit must name)
            let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
            let cases: Vec<(&str, Vec<IpAddr>, &str)> = vec![
                ("host public", vec![IpAddr::V4(host_public)], "host-address"),
                (
                    "host private",
                    vec![IpAddr::V4(host_private)],
                    "host-address",
                ),
                ("host v6", vec![IpAddr::V6(host_v6)], "host-address"),
                ("host mapped", vec![mapped(host_public)], "host-address"),
                ("host nat64", vec![nat64(host_public)], "host-address"),
                ("host anyip", vec![IpAddr::V4(anyip_member)], "host-address"),
                (
                    "second answer",
                    vec![IpAddr::V4(unassigned), IpAddr::V4(host_public)],
                    "host-address",
                ),
                (
                    "proxy N.1",
                    vec![IpAddr::V4(sandbox.host_side())],
                    "sandbox-pool",
                ),
                (
                    "sandbox N.2",
                    vec![IpAddr::V4(sandbox.addr())],
                    "sandbox-pool",
                ),
                ("other N.2", vec![IpAddr::V4(other_sandbox)], "sandbox-pool"),
                (
                    "pool mapped",
                    vec![mapped(sandbox.host_side())],
                    "sandbox-pool",
                ),
                ("gateway listen", vec![IpAddr::V4(listen)], "gateway-listen"),
                ("loopback", vec![IpAddr::V4(loopback)], "loopback"),
                ("loopback v6", vec![v4("::1")], "loopback"),
                ("loopback mapped", vec![mapped(loopback)], "loopback"),
                ("loopback nat64", vec![nat64(loopback)], "loopback"),
                ("loopback compat", vec![v4("::7f00:1")], "reserved"),
                ("metadata", vec![v4("169.254.169.254")], "cloud-metadata"),
                (
                    "metadata mapped",
                    vec![v4("::ffff:169.254.169.254")],
                    "cloud-metadata",
                ),
                (
                    "metadata nat64",
                    vec![v4("64:ff9b::a9fe:a9fe")],
                    "cloud-metadata",
                ),
                ("metadata compat", vec![v4("::a9fe:a9fe")], "reserved"),
                ("ecs agent", vec![v4("169.254.170.2")], "cloud-metadata"),
                ("alibaba", vec![v4("100.100.100.200")], "cloud-metadata"),
                ("azure", vec![v4("168.63.129.16")], "cloud-metadata"),
                (
                    "azure mapped",
                    vec![v4("::ffff:168.63.129.16")],
                    "cloud-metadata",
                ),
                ("aws v6", vec![v4("fd00:ec2::254")], "cloud-metadata"),
                ("unspecified", vec![v4("0.0.0.0")], "unspecified"),
                ("unspecified v6", vec![v4("::")], "unspecified"),
                (
                    "link-local",
                    vec![IpAddr::V4(Ipv4Addr::new(169, 254, r2 % 100, 1 + r3 % 250))],
                    "link-local",
                ),
                ("link-local v6", vec![v4("fe80::1")], "link-local"),
                (
                    "multicast",
                    vec![IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1 + r3 % 250))],
                    "multicast",
                ),
                ("broadcast", vec![v4("255.255.255.255")], "reserved"),
            ];
            let names: Vec<(String, Vec<IpAddr>)> = cases
                .iter()
                .map(|(_, addrs, _)| (format!("{}.approvals.example", label()), addrs.clone()))
                .collect();
            // Every range approved: only the checks before approvals stand in the way.
            let everything = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
            let proxy =
                Proxy::start(&sandbox, port, &names, everything, vec![IpAddr::V4(listen)]).await;

            // Each host-side address does reach the canary when dialled directly.
            for ip in [
                IpAddr::V4(host_public),
                IpAddr::V4(host_private),
                IpAddr::V6(host_v6),
                IpAddr::V4(anyip_member),
                IpAddr::V4(sandbox.host_side()),
                IpAddr::V4(loopback),
                v4("::1"),
                mapped(loopback),
                v4("169.254.169.254"),
                v4("169.254.170.2"),
                v4("100.100.100.200"),
                v4("168.63.129.16"),
                v4("fd00:ec2::254"),
                v4("0.0.0.0"),
            ] {
                canary.probe(ip).await;
            }
            canary.clear();

            let mut admitted = Vec::new();
            for ((what, _, _), (name, _)) in cases.iter().zip(&names) {
                let status = proxy.attempt(name).await;
                if !status.contains(" 403 ") {
                    admitted.push(format!("{what} ({name}): {status}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(canary.visits(), vec![], "the canary was reached");
            assert!(admitted.is_empty(), "admitted: {admitted:#?}");

            let events = proxy.audit().await;
            for ((what, _, class), (name, _)) in cases.iter().zip(&names) {
                let target = format!("{name}:{port}");
                assert!(
                    denied_with(&events, &target, "forbidden address")
                        && denied_with(&events, &target, &format!("class={class} ")),
                    "{what}: no denial of {target} with class={class}: {events:#?}"
                );
            }
        },
    );
}

#[test]
fn an_address_the_host_gains_is_refused_at_once_even_for_an_admitted_name() {
    testkit::privileged(
        "an_address_the_host_gains_is_refused_at_once_even_for_an_admitted_name",
        4,
        || async {
            let port = random_port();
            let canary = Canary::bind(port);
            let sandbox = Sandbox::new();
            let link = HostLink::new();
            let (early, late) = (random_public(), random_public_v6());
            let early_name = format!("{}.approvals.example", label());
            let late_name = format!("{}.approvals.example", label());
            let names = vec![
                (early_name.clone(), vec![IpAddr::V4(early)]),
                (late_name.clone(), vec![IpAddr::V6(late)]),
            ];
            let proxy = Proxy::start(&sandbox, port, &names, Vec::new(), Vec::new()).await;

            // Admitted while the address is nobody's: a tunnel is open, nothing dialled yet.
            let (tunnel, status) = proxy.connect(&early_name).await;
            assert!(status.contains(" 200 "), "{status}");

            // The host gains both addresses; the proxy is told nothing but what netlink says.
            link.add(IpAddr::V4(early));
            link.add(IpAddr::V6(late));
            let started = Instant::now();
            let late_status = proxy.attempt(&late_name).await;
            let again = proxy.attempt(&early_name).await;
            let refused_after = started.elapsed();
            assert!(late_status.contains(" 403 "), "fresh name: {late_status}");
            assert!(
                again.contains(" 403 "),
                "admitted name, asked again: {again}"
            );
            // The tunnel admitted before: its first request makes the proxy dial, which it
            // must not, now that the address is the host's.
            let answer = proxy.request(tunnel, &early_name).await;
            assert!(!answer.contains(" 200 "), "{answer}");
            canary.probe(IpAddr::V4(early)).await;
            canary.probe(IpAddr::V6(late)).await;
            let visits = canary.visits();
            assert_eq!(visits.len(), 2, "only the two probes: {visits:?}");

            let events = proxy.audit().await;
            for name in [&late_name, &early_name] {
                assert!(
                    denied_with(&events, &format!("{name}:{port}"), "class=host-address"),
                    "{name}: {events:#?}"
                );
            }

            // The set follows removals too: the address is nobody's again, the name admitted.
            link.del(IpAddr::V4(early));
            let (_, status) = proxy.connect(&early_name).await;
            assert!(status.contains(" 200 "), "after the address went: {status}");
            eprintln!("refused {refused_after:?} after the addresses appeared");
        },
    );
}

#[test]
fn plain_http_and_transparent_mode_apply_the_same_order() {
    testkit::privileged(
        "plain_http_and_transparent_mode_apply_the_same_order",
        4,
        || async {
            let port = random_port();
            let canary = Canary::bind(port);
            let canary_443 = Canary::bind(443);
            let sandbox = Sandbox::new();
            let link = HostLink::new();
            let own = random_public();
            link.add(IpAddr::V4(own));
            let metadata: IpAddr = "169.254.169.254".parse().unwrap();
            link.add(metadata);
            let (plain, sni) = (
                format!("{}.approvals.example", label()),
                format!("{}.approvals.example", label()),
            );
            let names = vec![
                (plain.clone(), vec![IpAddr::V4(own)]),
                (sni.clone(), vec![metadata]),
            ];
            let everything = vec!["0.0.0.0/0".parse().unwrap()];
            let proxy = Proxy::start(&sandbox, port, &names, everything, Vec::new()).await;
            canary.probe(IpAddr::V4(own)).await;
            canary_443.probe(metadata).await;
            canary.clear();
            canary_443.clear();

            // Absolute-form plain HTTP on the proxy port.
            let mut s = connect_from(&sandbox.ns.name, proxy.proxy.local_addr()).await;
            let request =
                format!("GET http://{plain}:{port}/ HTTP/1.1\r\nHost: {plain}:{port}\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            let head = read_head(&mut s).await.unwrap_or_default();
            assert!(head.starts_with("HTTP/1.1 403"), "plain HTTP: {head}");

            // Transparent mode: TLS to N.1:443, the host taken from SNI.
            let transparent = tokio::net::TcpListener::bind((sandbox.host_side(), 0))
                .await
                .unwrap();
            let at = transparent.local_addr().unwrap();
            let ns = sandbox.ns.name.clone();
            let (client, accepted) = tokio::join!(connect_from(&ns, at), transparent.accept());
            let (stream, peer) = accepted.unwrap();
            proxy.proxy.serve_transparent(stream, peer);
            let tls = tls_client(client, &proxy.ca_pem, &sni, &[b"http/1.1"]).await;
            assert!(
                tls.is_err(),
                "transparent TLS to a metadata name was served"
            );

            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(canary.visits(), vec![], "the canary was reached");
            assert_eq!(canary_443.visits(), vec![], "the canary on 443 was reached");
            let events = proxy.audit().await;
            assert!(
                denied_with(&events, &format!("{plain}:{port}"), "class=host-address"),
                "{events:#?}"
            );
            assert!(
                denied_with(&events, &format!("{sni}:443"), "class=cloud-metadata"),
                "{events:#?}"
            );
        },
    );
}
