//! `gigmcp server start|stop|logs` through the real CLI binary, a real `dbus-daemon` with the
//! shipped `org.gigmcp.Gateway1` policy, and the control interface over a real server pool.
//! The bus, the pool and the servers are this test's own; nothing needs root except running
//! the CLI as `nobody` for the refusals (skipped loudly without root).

use testkit::mcp as mcp_support;

use std::process::Command;

use gateway::audit::{AuditQueue, Auditor};
use gateway::control::Control;
use serde_json::json;
use testkit::bus::PrivateBus;

/// A private bus with the shipped `org.gigmcp.Gateway1` policy (daemon user mapped to root);
/// with `let_nobody_call`, `nobody` may call too, to reach the daemon's own check. The guard
/// kills the bus when the test ends (also when it fails).
fn start_bus(dir: &std::path::Path, let_nobody_call: bool) -> (PrivateBus, String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bus = PrivateBus::start(
        dir,
        "org.gigmcp.Gateway1.conf",
        let_nobody_call.then_some("org.gigmcp.Gateway1"),
    );
    let address = bus.address.clone();
    (bus, address)
}

/// The interface over the test's pool and store, with the admin layer the daemon would hold.
fn control(gw: &mcp_support::Gw, audit: AuditQueue) -> Control {
    use gateway::admin::local::{AdminSettings, LocalAdmin};
    let admin = LocalAdmin::for_daemon(
        gw.store.clone(),
        gw.vault.clone(),
        "gigmcpd".into(),
        AdminSettings::from_config(&gateway::config::Config::default()),
    );
    Control::new(gw.pool.clone(), audit, admin)
}

fn cli(bus: &str, args: &[&str], as_nobody: bool) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_gigmcp");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).args(["--bus", bus]).output().unwrap()
}

/// A server that says hello on stderr, then answers `initialize` (enough to be started).
const CHATTY: &str = r#"
import json, sys
print("hello from stderr", file=sys.stderr, flush=True)
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": "2025-06-18",
              "capabilities": {}, "serverInfo": {"name": "chatty", "version": "1"}}}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_start_stop_and_logs_over_the_bus() {
    mcp_support::require_venv();
    let py = mcp_support::venv().join("python");
    let chatty =
        json!({"name": "chatty", "version": "1", "command": [py.to_str().unwrap(), "-c", CHATTY]});
    let gw = mcp_support::Gw::with(
        vec![("chatty", chatty)],
        vec![("e", vec![("chatty", vec!["*"])])],
        &[],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_bus, address) = start_bus(dir.path(), false);
    let audit = AuditQueue::new(Auditor::new(gw.store.clone(), "gigmcpd"));
    let _conn = gateway::control::serve(&address, control(&gw, audit.clone()))
        .await
        .unwrap();

    let run = |args: &'static [&'static str]| {
        let address = address.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&address, args, false))
                .await
                .unwrap()
        }
    };
    let out = run(&["server", "start", "chatty"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("started server chatty"));
    assert_eq!(gw.launcher.pids.lock().unwrap().len(), 1);
    let mut logs = String::new();
    for _ in 0..50 {
        let out = run(&["server", "logs", "chatty", "--lines", "10"]).await;
        logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if logs.contains("hello from stderr") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logs.contains("hello from stderr"), "{logs}");
    let out = run(&["server", "stop", "chatty"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped server chatty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["server", "stop", "chatty"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not running"));
    let out = run(&["server", "start", "nosuch"]).await;
    assert!(!out.status.success());

    audit.flush().await;
    let trail = gw.store.audit_recent(1000).unwrap();
    assert!(trail.iter().any(|e| e.action == "server.start"
        && e.target == "chatty"
        && e.outcome == "ok"
        && e.detail.contains("uid=0")));
    assert!(
        trail
            .iter()
            .any(|e| e.action == "server.start" && e.target == "nosuch" && e.outcome == "failed")
    );
    assert!(
        trail
            .iter()
            .any(|e| e.action == "server.stop" && e.detail.contains("was_running=true"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_are_not_admins_are_refused_by_the_bus_and_by_the_daemon() {
    if nix::unistd::getuid().as_raw() != 0 {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this test as root"
        );
        eprintln!("SKIPPED callers_that_are_not_admins_are_refused: needs root to run as nobody");
        return;
    }
    let time = json!({"name": "time", "version": "1", "command": ["/bin/false"]});
    let gw = mcp_support::Gw::with(
        vec![("time", time)],
        vec![("e", vec![("time", vec!["*"])])],
        &[],
    )
    .await;
    for let_nobody_call in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_bus, address) = start_bus(dir.path(), let_nobody_call);
        let audit = AuditQueue::new(Auditor::new(gw.store.clone(), "gigmcpd"));
        let _conn = gateway::control::serve(&address, control(&gw, audit.clone()))
            .await
            .unwrap();
        let a = address.clone();
        let out = tokio::task::spawn_blocking(move || cli(&a, &["server", "stop", "time"], true))
            .await
            .unwrap();
        assert!(!out.status.success(), "nobody stopped a server");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if let_nobody_call {
            // Past the bus policy, the daemon's own check refuses, and audits it.
            assert!(
                err.contains("PermissionDenied") || err.contains("is not root"),
                "{err}"
            );
            audit.flush().await;
            let trail = gw.store.audit_recent(1000).unwrap();
            assert!(
                trail
                    .iter()
                    .any(|e| e.action == "server.stop" && e.outcome == "denied"),
                "{trail:#?}"
            );
        } else {
            assert!(
                err.contains("AccessDenied") || err.contains("denied"),
                "{err}"
            );
        }
    }
}

/// A server whose stderr carries what would drive the admin's terminal: an OSC title
/// sequence, a screen clear, a carriage return over the line, a bidi override, zero-width and
/// tag characters and bytes that are not UTF-8, around a random marker (from argv).
const HOSTILE_STDERR: &str = r#"
import json, sys
m = sys.argv[1].encode()
line = (b"\x1b]0;" + m + b"\x07\x1b[2J" + m + b"\rOK \xe2\x80\xae" + m + b"\xe2\x80\x8b\xf3\xa0\x81\x81"
        + b"\xff\xfe\x9b" + m + b"\n")
sys.stderr.buffer.write(line)
sys.stderr.flush()
for l in sys.stdin:
    q = json.loads(l)
    if q.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": q["id"], "result": {"protocolVersion": "2025-06-18",
              "capabilities": {}, "serverInfo": {"name": "h", "version": "1"}}}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_logs_show_a_servers_control_and_bidi_characters_escaped() {
    mcp_support::require_venv();
    let py = mcp_support::venv().join("python");
    let marker = testkit::env::random_hex(6);
    let hostile = json!({"name": "hostile", "version": "1",
        "command": [py.to_str().unwrap(), "-c", HOSTILE_STDERR, marker]});
    let gw = mcp_support::Gw::with(
        vec![("hostile", hostile)],
        vec![("e", vec![("hostile", vec!["*"])])],
        &[],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_bus, address) = start_bus(dir.path(), false);
    let audit = AuditQueue::new(Auditor::new(gw.store.clone(), "gigmcpd"));
    let _conn = gateway::control::serve(&address, control(&gw, audit))
        .await
        .unwrap();
    let run = |args: Vec<String>| {
        let address = address.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(&address, &args, false)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&["server", "start", "hostile"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shown = Vec::new();
    for _ in 0..50 {
        shown = run(args(&["server", "logs", "hostile"])).await.stdout;
        if String::from_utf8_lossy(&shown).matches(&marker).count() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = String::from_utf8(shown).expect("the rendering is UTF-8");
    let hidden: Vec<char> = text
        .chars()
        .filter(|&c| c != '\n' && gateway::terminal::is_hidden(c))
        .collect();
    assert!(
        hidden.is_empty(),
        "hidden characters {hidden:?} in {text:?}"
    );
    let want = format!(
        "\\x1b]0;{marker}\\x07\\x1b[2J{marker}\\x0dOK \\u{{202e}}{marker}\\u{{200b}}\\u{{e0041}}\
         \\xff\\xfe\\x9b{marker}"
    );
    assert!(text.contains(&want), "{text:?}\nwant {want:?}");
}
