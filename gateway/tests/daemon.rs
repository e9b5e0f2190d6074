//! `gigmcpd` as a process: configuration checking, start-up, and SIGTERM/SIGINT shutdown.

use testkit::env as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestEnv, text};
use gateway::vault::{SecretName, SecretValue};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn check(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gigmcp.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gigmcpd"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcpd"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/gigmcp.toml"),
            "--check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_rejects_bad_configs_with_key_and_line() {
    for (config, key, line) in [
        (
            "[gateway]\nlisten = \"127.0.0.1:1\"\nlsiten = \"x\"\n",
            "gateway.lsiten",
            3,
        ),
        ("[sandbox]\npool = 7\n", "sandbox.pool", 2),
        (
            "[log]\nlevel = \"info\"\n\n[sandbox]\npool = \"10.0.0.0/99\"\n",
            "sandbox.pool",
            5,
        ),
        ("[gateway]\nlisten = \"localhost\"\n", "gateway.listen", 2),
        (
            "[sandbox]\nserver_pids_max = 1\n",
            "sandbox.server_pids_max",
            2,
        ),
        ("[sandbox]\nproxy_port = 443\n", "sandbox.proxy_port", 2),
        (
            "[gateway]\ntls_cert_file = \"/etc/c.pem\"\n",
            "gateway.tls_key_file",
            1,
        ),
    ] {
        let out = check(config);
        assert_eq!(out.status.code(), Some(1), "accepted: {config}");
        let msg = text(&out);
        assert!(
            msg.contains(&format!(":{line}: key `{key}`")),
            "{config:?} → {msg}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcpd"))
        .args(["--config", "/nonexistent/gigmcp.toml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("/nonexistent/gigmcp.toml"));
}

/// Starts the daemon on `env`, waits for its "ready" line, and returns the child.
fn start(env: &TestEnv) -> std::process::Child {
    let config = env.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n[sandbox]\nca_dir = \"{}\"\n",
            env.state_dir.display(),
            env.dir.path().join("ca").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gigmcpd"))
        .arg("--config")
        .arg(&config)
        .arg("--master-key-file")
        .arg(&env.key_file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        assert!(Instant::now() < deadline, "gigmcpd did not become ready");
        match lines.next() {
            Some(Ok(line)) if line.contains("gigmcpd ready") => break,
            Some(Ok(_)) => continue,
            other => panic!("gigmcpd exited before ready: {other:?} {:?}", child.wait()),
        }
    }
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn stops_cleanly_on(signal: Signal) {
    let env = TestEnv::new();
    let mut child = start(&env);
    // A write committed while the daemon runs (another process, same database)...
    env.vault()
        .set(
            &SecretName::parse("WHILE_RUNNING").unwrap(),
            &SecretValue::from(&b"committed"[..]),
        )
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{signal} gave {status}");
    // ...survives the shutdown, and the database is intact.
    let vault = env.vault();
    assert_eq!(
        vault
            .get(&SecretName::parse("WHILE_RUNNING").unwrap())
            .unwrap()
            .expose(),
        b"committed"
    );
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let actions: Vec<_> = env
        .store()
        .audit_recent(10)
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.detail))
        .collect();
    assert!(
        actions.contains(&("daemon.stop".into(), signal.as_str().into())),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|(a, _)| a == "daemon.start"),
        "{actions:?}"
    );
}

#[test]
fn sigterm_stops_with_exit_0_and_keeps_committed_writes() {
    stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn sigint_stops_with_exit_0_and_keeps_committed_writes() {
    stops_cleanly_on(Signal::SIGINT);
}

#[test]
fn wrong_master_key_stops_the_daemon_before_it_serves() {
    let env = TestEnv::new();
    env.vault(); // the store now belongs to env's key
    let wrong = env.other_key("wrong.key");
    let config = env.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n[sandbox]\nca_dir = \"{}\"\n",
            env.state_dir.display(),
            env.dir.path().join("ca").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcpd"))
        .arg("--config")
        .arg(&config)
        .arg("--master-key-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not this store's"), "{}", text(&out));
    assert!(!text(&out).contains("gigmcpd ready"));
}

#[test]
fn world_readable_master_key_is_refused() {
    let env = TestEnv::new();
    common::chmod(&env.key_file, 0o644);
    let out = env.cli(&["vault", "status"], b"");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("readable by group or others"),
        "{}",
        text(&out)
    );
}
