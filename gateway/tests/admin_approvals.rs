//! `gigmcp server add --approve-range` refuses approvals that overlap what the egress proxy
//! never opens (the host's own addresses, the gateway's listen address, the sandbox pool,
//! metadata, loopback, link-local, in any IPv6 form), are wider than a /8 or are public, and
//! names the overlap; each refusal is audited. The real CLI, as root in the test's own network
//! namespace, whose link carries a random private address as the host's own.

use std::net::{IpAddr, Ipv4Addr};

use testkit::canary::HostLink;
use testkit::env::{TestEnv, random_hex, text};

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("random");
    b
}

#[test]
fn server_add_refuses_approvals_that_overlap_the_host_naming_the_overlap() {
    testkit::privileged(
        "server_add_refuses_approvals_that_overlap_the_host_naming_the_overlap",
        2,
        || async {
            let env = TestEnv::new();
            let link = HostLink::new();
            let [a, b, c] = random();
            let own = Ipv4Addr::new(192, 168, a, 1 + b % 250);
            link.add(IpAddr::V4(own));
            let listen = Ipv4Addr::new(172, 16 + c % 16, a, 7);
            let images = env.dir.path().join("images");
            let config = env.dir.path().join("gigmcp.toml");
            std::fs::write(
                &config,
                format!(
                    "[gateway]\nallow_unsigned_servers = true\nlisten = \"{listen}:8750\"\n[sandbox]\nimages_dir = \"{}\"\npool = \"10.{}.0.0/16\"\n",
                    images.display(),
                    100 + c % 100,
                ),
            )
            .unwrap();
            // An image `server add` accepts (the layout it checks): only the approvals differ.
            let rootfs = env.dir.path().join("rootfs");
            for d in ["bin", "proc", "dev", "tmp", "run", "etc"] {
                std::fs::create_dir_all(rootfs.join(d)).unwrap();
            }
            let server = rootfs.join("bin/server");
            std::fs::write(&server, b"\x7fELF").unwrap();
            std::fs::set_permissions(&server, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let name = format!("s{}", random_hex(5));
            let manifest = env.dir.path().join("manifest.json");
            std::fs::write(
                &manifest,
                format!(
                    r#"{{"name":"{name}","version":"1","command":["/bin/server"],"egress":[{{"host":"api.approvals.example"}}]}}"#
                ),
            )
            .unwrap();
            let add = |range: &str| {
                env.cli(
                    &[
                        "--config",
                        config.to_str().unwrap(),
                        "server",
                        "add",
                        &name,
                        "--rootfs",
                        rootfs.to_str().unwrap(),
                        "--manifest",
                        manifest.to_str().unwrap(),
                        "--unsigned",
                        "--approve-range",
                        range,
                    ],
                    b"",
                )
            };
            let pool = format!("10.{}.0.0/16", 100 + c % 100);
            for (range, named) in [
                (
                    format!("192.168.{a}.0/24"),
                    format!("the host's own address {own}/32"),
                ),
                (
                    "192.168.0.0/16".to_string(),
                    format!("the host's own address {own}/32"),
                ),
                (
                    format!("::ffff:192.168.{a}.0/120"),
                    "reserved ::/8".to_string(),
                ),
                (
                    format!("172.{}.0.0/16", 16 + c % 16),
                    format!("the gateway's listen address {listen}/32"),
                ),
                ("10.0.0.0/8".to_string(), format!("the sandbox pool {pool}")),
                (
                    "169.254.0.0/16".to_string(),
                    "the cloud metadata address 169.254.169.254/32".to_string(),
                ),
                (
                    "100.64.0.0/10".to_string(),
                    "the cloud metadata address 100.100.100.200/32".to_string(),
                ),
                (
                    "fd00:ec2::/48".to_string(),
                    "the cloud metadata address fd00:ec2::254/128".to_string(),
                ),
                (
                    "127.0.0.0/8".to_string(),
                    "loopback 127.0.0.0/8".to_string(),
                ),
            ] {
                let out = add(&range);
                assert!(!out.status.success(), "{range} approved: {}", text(&out));
                assert!(
                    text(&out).contains(&format!("--approve-range {range} overlaps {named}")),
                    "{range}: {}",
                    text(&out)
                );
            }
            for (range, says) in [
                ("10.0.0.0/7", "wider than a /8"),
                ("45.1.2.0/24", "not private"),
            ] {
                let out = add(range);
                assert!(
                    !out.status.success() && text(&out).contains(says),
                    "{range}: {}",
                    text(&out)
                );
            }
            // Each refusal is in the audit trail with its reason; nothing was installed.
            let events = env.store().audit_recent(1000).unwrap();
            let refused = events
                .iter()
                .filter(|e| {
                    e.action == "server.add" && e.detail.contains("approvals never open it")
                })
                .count();
            assert_eq!(refused, 9, "{events:#?}");
            assert!(env.store().server_get(&name).unwrap().is_none());
            // A private range clear of all of them is accepted.
            let out = add(&format!("192.168.{}.0/24", a.wrapping_add(1)));
            assert!(out.status.success(), "{}", text(&out));
        },
    );
}
