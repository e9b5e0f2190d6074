//! What a sandbox shares with its server besides the kernel: bwrap, which stays in the sandbox
//! as its pid 1 and holds in memory every argument the helper gave it, and the kernel's
//! keyrings, which no namespace separates. The attack program runs in real sandboxes made by
//! the real helper. Privileged: needs root.
//!
//! Which mechanism holds each line: bwrap's argv is only `bwrap --args N` (the arguments come
//! through an fd) and its environment is empty; its memory and fds (`/proc/1/mem`,
//! `/proc/1/fd`, pidfd_getfd) are out of reach because init's landlock domain denies
//! ptrace-mode access to any process outside it (and seccomp kills ptrace, process_vm_* and
//! pidfd_getfd); signals to it are refused by landlock's signal scope; the session keyring is a
//! fresh one that the helper's launcher joins before it execs bwrap. Last, the network paths
//! landlock's TCP rule does not see (TCP Fast Open, MPTCP) die by SIGSYS in a real sandbox too
//! (`sandbox-init/tests/sandbox_init_network.rs` shows them reaching a listener without init).

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use privhelper_api::{PrivHelperProxy, SandboxSpec};
use testkit::helper::Harness;

const SIGSYS: i32 = 31;

/// How an attack ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The attack program was killed by this signal (bwrap reports 128 + n).
    Killed(i32),
    /// The attack printed its verdict (without the `ATTACK <name>` prefix).
    Said(String),
}

/// Runs the spec's attack in a fresh sandbox and waits for its end; the sandbox must exit with
/// the attack's own status (bwrap, pid 1, still alive to report it).
async fn run(client: &PrivHelperProxy<'static>, spec: SandboxSpec) -> Outcome {
    let mut exits = client.receive_sandbox_exited().await.unwrap();
    let (info, stdin, stdout, stderr, _pidfd, _sockets) =
        client.create_sandbox(&spec).await.expect("create sandbox");
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
    let name = spec.argv[1].clone();
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    if code > 128 {
        assert!(text.is_empty(), "{name}: killed but printed {text:?}");
        return Outcome::Killed(code - 128);
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
    Outcome::Said(rest.to_owned())
}

fn said(s: &str) -> Outcome {
    Outcome::Said(s.to_owned())
}

/// A spec running `gigmcp-attack ARGS`, with a random variable in its environment and a random
/// extra argument, which pid 1 must not show.
fn spec(h: &Harness, rootfs: &str, args: &[&str]) -> (SandboxSpec, String, String) {
    let mut argv = vec!["/bin/gigmcp-attack"];
    argv.extend_from_slice(args);
    let mut spec = h.spec(rootfs, &argv);
    let value = format!("gxv{:016x}", testkit::init::random_u64());
    let name = format!("GX{:08X}", testkit::init::random_u64() as u32);
    spec.env.push((name.clone(), value.clone()));
    (spec, name, value)
}

#[test]
fn bwraps_pid1_shows_neither_host_paths_nor_the_environment() {
    testkit::privileged(
        "bwraps_pid1_shows_neither_host_paths_nor_the_environment",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("img");
            let client = h.client().await;

            let (s, name, value) = spec(&h, &rootfs, &["pid1-cmdline"]);
            let Outcome::Said(line) = run(&client, s).await else {
                panic!("pid1-cmdline was killed");
            };
            let cmdline = line.strip_prefix("RESULT ").expect(&line);
            // `bwrap --args N -- <init> <init's arguments> -- <server argv>`: the options (host
            // paths, the environment) are in the fd; what is left are paths inside the sandbox.
            let words: Vec<&str> = cmdline.trim_end_matches("\\x00").split("\\x00").collect();
            assert_eq!(words[..2], ["bwrap", "--args"], "{cmdline}");
            assert!(words[2].parse::<u32>().is_ok(), "{cmdline}");
            assert_eq!(
                words[3..],
                [
                    "--",
                    "/run/gigmcp/init",
                    "--proxy-port",
                    &testkit::helper::PROXY_PORT.to_string(),
                    "--",
                    "/bin/gigmcp-attack",
                    "pid1-cmdline"
                ],
                "{cmdline}"
            );
            let images = h.images.display().to_string();
            for leak in [value.as_str(), name.as_str(), images.as_str(), "PATH"] {
                assert!(!cmdline.contains(leak), "{leak} in {cmdline}");
            }

            let (s, ..) = spec(&h, &rootfs, &["pid1-environ"]);
            let got = run(&client, s).await;
            assert!(
                got == said("BLOCKED EACCES") || got == said("RESULT empty"),
                "{got:?}"
            );
        },
    );
}

#[test]
fn nothing_in_the_sandbox_can_write_pid1s_memory_reopen_its_fds_or_signal_it() {
    testkit::privileged(
        "nothing_in_the_sandbox_can_write_pid1s_memory_reopen_its_fds_or_signal_it",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("img");
            let client = h.client().await;
            let sig = |n: i32| n.to_string();
            let (kill, stop, term, cont) = (
                sig(libc::SIGKILL),
                sig(libc::SIGSTOP),
                sig(libc::SIGTERM),
                sig(libc::SIGCONT),
            );
            let cases: Vec<(Vec<&str>, Outcome)> = vec![
                (vec!["pid1-mem"], said("BLOCKED EACCES")),
                (vec!["pid1-fds"], said("BLOCKED EACCES")),
                (vec!["pidfd-getfd-pid1"], Outcome::Killed(SIGSYS)),
                (vec!["signal-pid1", &kill], said("BLOCKED EPERM")),
                (vec!["signal-pid1", &stop], said("BLOCKED EPERM")),
                (vec!["signal-pid1", &term], said("BLOCKED EPERM")),
                (vec!["signal-pid1", &cont], said("BLOCKED EPERM")),
                (vec!["pidfd-signal-pid1", &kill], said("BLOCKED EPERM")),
                (vec!["pidfd-signal-pid1", &term], said("BLOCKED EPERM")),
            ];
            let mut wrong = Vec::new();
            for (args, want) in cases {
                let (s, ..) = spec(&h, &rootfs, &args);
                let got = run(&client, s).await;
                if got != want {
                    wrong.push(format!("{args:?}: {got:?}, want {want:?}"));
                }
            }
            assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        },
    );
}

#[test]
fn the_network_paths_landlock_misses_are_killed_in_a_real_sandbox() {
    testkit::privileged(
        "the_network_paths_landlock_misses_are_killed_in_a_real_sandbox",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("img");
            let client = h.client().await;
            // The kill comes at the syscall, before any packet: the sandbox's own loopback, a
            // random port that is not the proxy's.
            let port = loop {
                let p = 1024 + (testkit::init::random_u64() % 60000) as u16;
                if p != testkit::helper::PROXY_PORT {
                    break p.to_string();
                }
            };
            for attack in ["tcp-fastopen", "mptcp-connect"] {
                let (s, ..) = spec(&h, &rootfs, &[attack, "127.0.0.1", &port]);
                assert_eq!(run(&client, s).await, Outcome::Killed(SIGSYS), "{attack}");
            }
        },
    );
}

/// The keyring serials `/proc/keys` shows this (root) test process.
fn host_keyrings() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/keys")
        .expect("read /proc/keys")
        .lines()
        .filter(|l| l.split_whitespace().nth(7) == Some("keyring"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The keyring serials a `session-keyrings` report lists.
fn keyrings_of(got: Outcome) -> BTreeSet<String> {
    let Outcome::Said(line) = got else {
        panic!("session-keyrings: {got:?}");
    };
    let list = line.strip_prefix("RESULT ").expect(&line);
    assert!(!list.is_empty(), "the sandbox sees no keyring of its own");
    list.split(',')
        .map(|k| {
            let (serial, description) = k.split_once('=').expect(k);
            // Only an anonymous session keyring: not the uid's user (session) keyring, which
            // outlives the sandbox and which every later sandbox of the same slot would get.
            assert_eq!(description, "_ses", "the sandbox sees {list}");
            serial.to_owned()
        })
        .collect()
}

#[test]
fn each_sandbox_has_its_own_session_keyring() {
    testkit::privileged("each_sandbox_has_its_own_session_keyring", 2, || async {
        let h = Harness::start(0).await;
        let rootfs = h.attack_rootfs("img");
        let client = h.client().await;
        let host = host_keyrings();
        assert!(!host.is_empty(), "the test process sees its own keyrings");
        // Two sandboxes alive at once (two slots, two uids). One run after another would share
        // a slot's uid, and an anonymous keyring is viewable by its uid until the kernel's
        // garbage collector takes it: the later sandbox could list the earlier one's, which is
        // the uid's business, not a shared session keyring.
        let (a, b) = (
            spec(&h, &rootfs, &["session-keyrings"]).0,
            spec(&h, &rootfs, &["session-keyrings"]).0,
        );
        let (a, b) = tokio::join!(run(&client, a), run(&client, b));
        let (a, b) = (keyrings_of(a), keyrings_of(b));
        for (name, sandbox) in [("a", &a), ("b", &b)] {
            assert!(
                sandbox.is_disjoint(&host),
                "sandbox {name} sees the host's keyrings {:?}",
                sandbox.intersection(&host).collect::<Vec<_>>()
            );
        }
        assert!(a.is_disjoint(&b), "{a:?} and {b:?}");
    });
}
