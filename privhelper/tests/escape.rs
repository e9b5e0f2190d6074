//! The escape suite: an attack program runs inside real sandboxes and tries to break out. Each
//! attack runs in a fresh sandbox and the test asserts its exact outcome; at the end the host is
//! checked for harm. Privileged: needs root.

use std::net::TcpListener;
use std::time::Duration;

use futures_util::StreamExt;
use privhelper_api::{Listeners, PrivHelperProxy, SandboxInfo, SandboxSpec};
use testkit::helper::{Harness, PROXY_PORT};

/// How an attack ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The attack program was killed by this signal (bwrap reports 128 + n).
    Killed(i32),
    /// The attack printed its one-line verdict (without the `ATTACK <name>` prefix).
    Said(String),
}

/// Whether an outcome is the expected one.
type Check = Box<dyn Fn(&Outcome) -> bool>;

const SIGSYS: i32 = 31;
const SIGKILL: i32 = 9;

/// Runs `gigmcp-attack ARGS` in a fresh sandbox (created by `spec_fn`) and waits for its end.
/// `on_start` runs once the sandbox exists; what it returns is handed back with the outcome.
async fn attack_with<T>(
    client: &PrivHelperProxy<'static>,
    spec: SandboxSpec,
    on_start: impl FnOnce(&SandboxInfo) -> T,
) -> (Outcome, T) {
    let mut exits = client.receive_sandbox_exited().await.unwrap();
    let (info, stdin, stdout, stderr, _pidfd, _sockets) =
        client.create_sandbox(&spec).await.expect("create sandbox");
    let keep = on_start(&info);
    let out = testkit::helper::read_all(stdout, Duration::from_secs(60));
    let err = testkit::helper::read_all(stderr, Duration::from_secs(5));
    drop(stdin);
    let code = loop {
        let signal = tokio::time::timeout(Duration::from_secs(60), exits.next())
            .await
            .expect("no SandboxExited signal")
            .expect("signal stream ended");
        let args = signal.args().unwrap();
        if args.id == info.id {
            break args.code;
        }
    };
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    let name = spec.argv.get(1).cloned().unwrap_or_default();
    if code > 128 {
        assert!(text.is_empty(), "{name}: killed but printed {text:?}");
        return (Outcome::Killed(code - 128), keep);
    }
    assert_eq!(
        code,
        0,
        "{name}: exit {code}, stdout {text:?}, stderr {}",
        String::from_utf8_lossy(&err)
    );
    let rest = text
        .strip_prefix(&format!("ATTACK {name} "))
        .unwrap_or_else(|| panic!("{name}: unexpected output {text:?}"));
    (Outcome::Said(rest.to_owned()), keep)
}

async fn attack(
    h: &Harness,
    client: &PrivHelperProxy<'static>,
    rootfs: &str,
    args: &[&str],
) -> Outcome {
    let mut argv = vec!["/bin/gigmcp-attack"];
    argv.extend_from_slice(args);
    attack_with(client, h.spec(rootfs, &argv), |_| ()).await.0
}

fn said(s: &str) -> Outcome {
    Outcome::Said(s.to_owned())
}

#[test]
fn every_escalation_syscall_is_stopped() {
    testkit::privileged("every_escalation_syscall_is_stopped", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("attack");
        let client = h.client().await;
        let expected = [
            ("unshare-user", Outcome::Killed(SIGSYS)),
            ("unshare-net", Outcome::Killed(SIGSYS)),
            ("setns", Outcome::Killed(SIGSYS)),
            ("clone-newuser", Outcome::Killed(SIGSYS)),
            // clone3 cannot be inspected by seccomp, so it answers ENOSYS and libc falls back to
            // clone, whose namespace flags are then killed.
            ("clone3", said("BLOCKED ENOSYS")),
            ("mount", Outcome::Killed(SIGSYS)),
            ("fsopen", Outcome::Killed(SIGSYS)),
            ("open-tree", Outcome::Killed(SIGSYS)),
            ("move-mount", Outcome::Killed(SIGSYS)),
            ("pivot-root", Outcome::Killed(SIGSYS)),
            ("chroot", Outcome::Killed(SIGSYS)),
            ("ptrace-sibling", Outcome::Killed(SIGSYS)),
            ("process-vm-readv", Outcome::Killed(SIGSYS)),
            ("bpf", Outcome::Killed(SIGSYS)),
            ("perf-event-open", Outcome::Killed(SIGSYS)),
            ("keyctl", Outcome::Killed(SIGSYS)),
            ("io-uring-setup", Outcome::Killed(SIGSYS)),
            ("userfaultfd", Outcome::Killed(SIGSYS)),
            ("open-by-handle-at", Outcome::Killed(SIGSYS)),
            ("x32-syscall", Outcome::Killed(SIGSYS)),
            ("kexec-load", Outcome::Killed(SIGSYS)),
            ("init-module", Outcome::Killed(SIGSYS)),
            ("reboot", Outcome::Killed(SIGSYS)),
            ("settimeofday", Outcome::Killed(SIGSYS)),
        ];
        let mut wrong = Vec::new();
        for (name, want) in expected {
            let got = attack(&h, &client, &rootfs, &[name]).await;
            eprintln!("{name}: {got:?}");
            if got != want {
                wrong.push(format!("{name}: expected {want:?}, got {got:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "attacks with the wrong outcome:\n{}",
            wrong.join("\n")
        );
        assert_eq!(h.count_host(), before, "resources left after the attacks");
    });
}

#[test]
fn the_sandbox_cannot_see_or_touch_the_host() {
    testkit::privileged("the_sandbox_cannot_see_or_touch_the_host", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("attack");
        let client = h.client().await;

        // Canaries in host places the sandbox must not read.
        let canary = format!("canary-{}", std::process::id());
        let canaries = [format!("/root/{canary}"), format!("/etc/{canary}")];
        for c in &canaries {
            std::fs::write(c, "host secret").unwrap();
        }
        let host_addrs = ip_addrs(&h.link_prefix);

        let mut checks: Vec<(Vec<String>, Check)> = Vec::new();
        let mut add = |args: &[&str], ok: Check| {
            checks.push((args.iter().map(|s| (*s).to_owned()).collect(), ok));
        };
        for c in &canaries {
            add(
                &["read-file", c],
                Box::new(|o| *o == said("BLOCKED ENOENT")),
            );
        }
        add(
            &["read-file", "/proc/1/root/etc/shadow"],
            Box::new(|o| matches!(o, Outcome::Said(s) if s.starts_with("BLOCKED"))),
        );
        for p in ["/etc/evil", "/bin/evil", "/evil"] {
            add(
                &["write-rootfs", p],
                Box::new(|o| *o == said("BLOCKED EROFS") || *o == said("BLOCKED EACCES")),
            );
        }
        add(
            &["list-processes"],
            Box::new(|o| *o == said("RESULT 1:bwrap 2:gigmcp-attack")),
        );
        add(
            &["list-interfaces"],
            Box::new(|o| *o == said("RESULT lo=127.0.0.1/8 eth0=10.232.0.2/30")),
        );
        add(&["add-address"], Box::new(|o| *o == said("BLOCKED EPERM")));
        add(&["add-route"], Box::new(|o| *o == said("BLOCKED EPERM")));
        // Raw IP sockets need a capability (EPERM); the packet family is killed by seccomp.
        add(&["raw-socket"], Box::new(|o| *o == Outcome::Killed(SIGSYS)));
        add(
            &["gain-capability"],
            Box::new(|o| *o == said("BLOCKED EPERM")),
        );
        add(&["dbus-system"], Box::new(|o| *o == said("BLOCKED ENOENT")));
        // Landlock allows TCP connect to the proxy port only: no packet leaves for anything else.
        add(
            &["connect", "1.1.1.1", "443"],
            Box::new(|o| *o == said("BLOCKED EACCES")),
        );
        add(
            &["connect", "10.232.0.1", "22"],
            Box::new(|o| *o == said("BLOCKED EACCES")),
        );
        add(
            &["connect", "127.0.0.1", "22"],
            Box::new(|o| *o == said("BLOCKED EACCES")),
        );
        // The proxy's port on loopback reaches the sandbox's own, empty loopback.
        add(
            &["connect", "127.0.0.1", &PROXY_PORT.to_string()],
            Box::new(|o| *o == said("BLOCKED ECONNREFUSED")),
        );
        add(
            &["env"],
            Box::new(|o| matches!(o, Outcome::Said(s) if s == "RESULT PATH=/bin")),
        );
        add(
            &["fork-bomb", "10000"],
            Box::new(|o| match o {
                Outcome::Said(s) => s
                    .strip_prefix("RESULT forked ")
                    .and_then(|r| r.split(' ').next()?.parse::<u32>().ok())
                    .is_some_and(|k| k < 64),
                Outcome::Killed(_) => false,
            }),
        );
        add(
            &["memory-hog", "2048"],
            Box::new(|o| match o {
                Outcome::Killed(sig) => *sig == SIGKILL,
                Outcome::Said(s) => s
                    .strip_prefix("RESULT touched ")
                    .and_then(|r| r.split(' ').next()?.parse::<u32>().ok())
                    .is_some_and(|k| k <= 256),
            }),
        );
        let mut wrong = Vec::new();
        for (args, ok) in &checks {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let got = attack(&h, &client, &rootfs, &args).await;
            eprintln!("{args:?}: {got:?}");
            if !ok(&got) {
                wrong.push(format!("{args:?}: {got:?}"));
            }
        }
        for c in &canaries {
            assert_eq!(std::fs::read_to_string(c).unwrap(), "host secret");
            std::fs::remove_file(c).unwrap();
        }
        assert!(
            wrong.is_empty(),
            "isolation failures:\n{}",
            wrong.join("\n")
        );
        assert_eq!(
            ip_addrs(&h.link_prefix),
            host_addrs,
            "host addresses changed"
        );
        assert_eq!(h.count_host(), before, "resources left");
    });
}

#[test]
fn the_proxy_port_is_the_only_way_out() {
    testkit::privileged("the_proxy_port_is_the_only_way_out", 2, || async {
        let h = Harness::start(0).await;
        let rootfs = h.attack_rootfs("attack");
        let client = h.client().await;

        // A neighbour sandbox (slot 0) to attack from a second one (slot 1).
        let (neighbour, _i, _o, _e, _p, neighbour_fds) = client
            .create_sandbox(&h.spec(&rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]))
            .await
            .unwrap();
        // The helper's proxy listeners (slot 1's host end is 10.232.0.5) and the neighbour's:
        // only the first may be reached, and only from slot 1's sandbox.
        let spec = h.spec(
            &rootfs,
            &["/bin/gigmcp-attack", "connect", "10.232.0.5", "3128"],
        );
        // The kernel completes the handshake from the listen backlog: no accept needed. The
        // helper bound it before the sandbox started: the probe connects once, at once.
        let (got, ()) = attack_with(&client, spec, |info| {
            assert_eq!(info.host_addr, "10.232.0.5");
        })
        .await;
        assert_eq!(
            got,
            said("SUCCEEDED connected to 10.232.0.5:3128"),
            "proxy port unreachable"
        );

        let neighbour_listener =
            TcpListener::from(Listeners::from_reply(neighbour_fds).unwrap().proxy);
        neighbour_listener.set_nonblocking(true).unwrap();
        // A sandbox has no default route: other links are not even routable from inside.
        for target in [
            neighbour.host_addr.as_str(),
            neighbour.sandbox_addr.as_str(),
        ] {
            let got = attack(&h, &client, &rootfs, &["connect", target, "3128", "1500"]).await;
            assert_eq!(
                got,
                said("BLOCKED ENETUNREACH"),
                "reached neighbour {target}"
            );
        }
        assert!(
            neighbour_listener.accept().is_err(),
            "a connection reached the neighbour's proxy"
        );

        // UDP is not covered by landlock: the firewall must drop it, even to the own link.
        let spec = h.spec(
            &rootfs,
            &["/bin/gigmcp-attack", "udp-send", "10.232.0.5", "5353"],
        );
        // Bound before the sandbox starts, so a datagram that got through would be seen.
        let udp = testkit::helper::udp_before_link("10.232.0.5:5353".parse().unwrap());
        let (got, udp) = attack_with(&client, spec, |info| {
            assert_eq!(info.host_addr, "10.232.0.5");
            udp.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            udp
        })
        .await;
        assert!(
            matches!(&got, Outcome::Said(s) if s.starts_with("RESULT sent")),
            "{got:?}"
        );
        let mut buf = [0u8; 64];
        assert!(
            udp.recv_from(&mut buf).is_err(),
            "a UDP datagram from a sandbox arrived"
        );
        client.destroy_sandbox(&neighbour.id).await.unwrap();
    });
}

#[test]
fn the_firewall_alone_drops_spoofed_and_stray_packets() {
    testkit::privileged(
        "the_firewall_alone_drops_spoofed_and_stray_packets",
        2,
        || async {
            // With root inside the sandbox's netns (no landlock, no seccomp), only nftables stands
            // between the link and the host: spoofed sources and ports other than the proxy's drop.
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("attack");
            let client = h.client().await;
            let (info, _i, _o, _e, _p, fds) = client
                .create_sandbox(&h.spec(&rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]))
                .await
                .unwrap();
            let _proxy = TcpListener::from(Listeners::from_reply(fds).unwrap().proxy);
            let _other = TcpListener::bind((info.host_addr.as_str(), 2222)).unwrap();
            let port = PROXY_PORT.to_string();
            assert!(
                h.in_netns(&info, &["connect", &info.host_addr, &port])
                    .starts_with("SUCCEEDED connected to"),
                "the proxy port must be reachable from the right source"
            );
            assert!(
                h.in_netns(&info, &["connect", &info.host_addr, "2222", "1500"])
                    == "BLOCKED ETIMEDOUT"
            );
            assert!(
                h.in_netns(
                    &info,
                    &["spoof-source", "10.232.0.6", &info.host_addr, &port, "1500"]
                ) == "BLOCKED ETIMEDOUT",
                "a spoofed source got through"
            );
            client.destroy_sandbox(&info.id).await.unwrap();
        },
    );
}

fn ip_addrs(link_prefix: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(&format!(" {link_prefix}")))
        .collect::<Vec<_>>()
        .join("\n")
}
