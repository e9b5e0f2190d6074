//! The CLI on the running daemon: the real `gigmcpd` serving `org.gigmcp.Gateway1` on a real
//! private `dbus-daemon` (the shipped policy, the daemon's user mapped to root), and the real
//! `gigmcp` given neither `--state-dir` nor a master key, so every command below crosses the
//! bus. Each verb group: secrets (the value passed as a descriptor), servers, endpoints and
//! tokens (a revoked token refused by the MCP front), registries and the two-step consent;
//! the errors for what does not exist; the clear error without a daemon. Names and values
//! are random. Nothing here starts a sandbox, so nothing needs root.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};

use gateway::store::{ServerRecord, Store, ToolDefinition};
use testkit::bus::PrivateBus;
use testkit::env::{TestEnv, random_hex, run_with_stdin, text};
use testkit::process::Tied;

struct Daemon {
    env: TestEnv,
    config: PathBuf,
    address: String,
    port: u16,
    _daemon: Tied,
    _bus: PrivateBus,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private bus with the shipped policy, and gigmcpd on it over a fresh state directory in
/// which `seed` put records first.
fn daemon(seed: impl FnOnce(&dyn Store)) -> Daemon {
    daemon_on(seed, false, "")
}

/// As [`daemon`]; with `let_nobody_call`, the bus also lets `nobody` call the daemon (a
/// policy gone wrong), to reach the daemon's own check.
/// `gateway` is added to the configuration's `[gateway]` table.
fn daemon_on(seed: impl FnOnce(&dyn Store), let_nobody_call: bool, gateway: &str) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    seed(&*env.store());
    let bus_dir = env.dir.path().join("bus");
    std::fs::create_dir_all(&bus_dir).unwrap();
    for dir in [env.dir.path(), &bus_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Root may monitor this bus (the system bus's own rule: root sees everything anyway).
    std::fs::create_dir_all(bus_dir.join("system.d")).unwrap();
    std::fs::write(
        bus_dir.join("system.d/zz-test-monitor.conf"),
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy user="root">
  <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
</policy></busconfig>"#,
    )
    .unwrap();
    let bus = PrivateBus::start(
        &bus_dir,
        "org.gigmcp.Gateway1.conf",
        let_nobody_call.then_some("org.gigmcp.Gateway1"),
    );
    let port = free_port();
    let config = env.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\n{gateway}\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n[sandbox]\nbus = \"{}\"\nca_dir = \"{}\"\nimages_dir = \"{}\"\n",
            env.state_dir.display(),
            bus.address,
            env.dir.path().join("ca").display(),
            env.dir.path().join("images").display(),
        ),
    )
    .unwrap();
    let daemon = testkit::process::start_gigmcpd(
        std::path::Path::new(env!("CARGO_BIN_EXE_gigmcpd")),
        &config,
        &env.key_file,
    );
    Daemon {
        address: bus.address.clone(),
        env,
        config,
        port,
        _daemon: daemon,
        _bus: bus,
    }
}

impl Daemon {
    /// `gigmcp ARGS` with the configuration and bus, never the state directory or key.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gigmcp"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(["--bus", &self.address])
            .args(args);
        run_with_stdin(&mut cmd, stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A command that must fail: its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert!(
            !out.status.success(),
            "gigmcp {args:?} succeeded: {}",
            text(&out)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// The audit rows of `action`, newest first.
    fn audited(&self, action: &str) -> Vec<gateway::store::AuditEvent> {
        self.env
            .store()
            .audit_recent(1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }

    /// The HTTP status the MCP front answers a POST with this bearer token.
    fn front_status(&self, endpoint: &str, token: &str) -> u16 {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "POST /mcp/{endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }
}

fn server_record(name: &str) -> ServerRecord {
    ServerRecord {
        name: name.into(),
        version: "1.0".into(),
        image_digest: format!("sha256:{}", random_hex(32)),
        manifest: serde_json::json!({"name": name, "version": "1.0", "command": ["/bin/false"]})
            .to_string(),
        source: "unsigned".into(),
        approved_ranges: vec![],
        installed_ms: 1,
        origin: None,
    }
}

#[test]
fn secrets_are_set_by_descriptor_listed_and_removed_through_the_daemon() {
    let d = daemon(|_| {});
    let name = format!("S_{}", random_hex(4).to_uppercase());
    let value = format!("v-{}", random_hex(16));
    // Everything the bus carries meanwhile, as root's monitor sees it.
    let capture = d.env.dir.path().join("monitor.txt");
    let mut monitor = Command::new("dbus-monitor");
    monitor
        .args(["--address", &d.address])
        .stdout(std::fs::File::create(&capture).unwrap());
    let mut monitor = testkit::process::spawn_tied(monitor, None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d.run(&["secret", "set", &name], format!("{value}\n").as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
    monitor.kill();
    let seen = std::fs::read_to_string(&capture).unwrap();
    assert!(
        seen.contains("SecretSet") && seen.contains(&name),
        "the monitor saw the call: {seen}"
    );
    assert!(!seen.contains(&value), "the value crossed the bus: {seen}");
    assert!(text(&out).contains(&format!("created secret {name} (version 1)")));
    let listed = d.ok(&["secret", "list"]);
    assert!(
        listed.contains(&name) && !listed.contains(&value),
        "{listed}"
    );
    // The value reached the vault exactly (the trailing newline dropped), in the daemon.
    let stored = d
        .env
        .vault()
        .get(&gateway::vault::SecretName::parse(&name).unwrap())
        .unwrap();
    assert_eq!(stored.expose(), value.as_bytes());
    // Audited as the caller, through the bus.
    let set = d.audited("secret.set");
    assert!(
        set.iter()
            .any(|e| e.target == name && e.actor == "dbus:uid=0"),
        "{set:?}"
    );
    assert!(d.ok(&["secret", "rm", &name]).contains("removed secret"));
    let err = d.refused(&["secret", "rm", &name]);
    assert!(err.contains(&format!("no secret named {name}")), "{err}");
    assert!(!d.ok(&["secret", "list"]).contains(&name));
}

#[test]
fn servers_endpoints_and_tokens_are_administered_through_the_daemon() {
    let server = format!("s{}", random_hex(4));
    let tool = "echo";
    let d = daemon(|store| {
        assert!(store.server_add(&server_record(&server)).unwrap());
        store
            .tool_definitions_put(&[ToolDefinition {
                server: server.clone(),
                tool: tool.into(),
                approved: false,
                definition: r#"{"name":"echo"}"#.into(),
                digest: random_hex(32),
                seen_ms: 1,
            }])
            .unwrap();
    });
    let listed = d.ok(&["server", "list"]);
    assert!(listed.contains(&server), "{listed}");
    let logs = d.ok(&["server", "logs", &server]);
    assert_eq!(
        logs.trim(),
        format!("server {server} has written nothing to stderr")
    );
    let tools = d.ok(&["server", "tools", &server]);
    assert!(tools.contains("NEW (hidden)"), "{tools}");
    d.ok(&["server", "tools", &server, "--approve", tool]);
    assert!(d.ok(&["server", "tools", &server]).contains("approved"));

    let endpoint = format!("e{}", random_hex(4));
    d.ok(&["endpoint", "add", &endpoint, "--server", &server]);
    d.ok(&[
        "endpoint",
        "describe",
        &endpoint,
        &format!("{server}__{tool}"),
        "--description",
        "says it back",
    ]);
    let created = d.ok(&["endpoint", "token", "create", &endpoint, "--label", "t"]);
    let id = created
        .split_whitespace()
        .nth(2)
        .expect("token id")
        .to_owned();
    let secret = created.lines().nth(1).expect("the token").trim().to_owned();
    assert_ne!(d.front_status(&endpoint, &secret), 401, "a live token");
    d.ok(&["endpoint", "token", "revoke", &id]);
    assert_eq!(d.front_status(&endpoint, &secret), 401, "a revoked token");
}

#[test]
fn what_does_not_exist_exits_non_zero_naming_it() {
    let d = daemon(|_| {});
    let ghost = format!("nosuch{}", random_hex(3));
    for verb in ["stop", "logs"] {
        let err = d.refused(&["server", verb, &ghost]);
        assert!(err.contains(&format!("no server named {ghost}")), "{err}");
    }
    let err = d.refused(&["server", "start", &ghost]);
    assert!(err.contains(&ghost), "{err}");
    let err = d.refused(&["endpoint", "token", "create", &ghost]);
    assert!(err.contains(&ghost), "{err}");
    d.refused(&["endpoint", "token", "revoke", &random_hex(8)]);
    let err = d.refused(&["registry", "sync", &ghost]);
    assert!(err.contains(&format!("no registry named {ghost}")), "{err}");
    // Rotation is offline only, and says how.
    let key = d.env.other_key("new.key");
    let err = d.refused(&[
        "vault",
        "rotate",
        "--new-master-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(err.contains("offline"), "{err}");
}

#[test]
fn without_the_daemon_the_cli_names_both_ways_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bus = PrivateBus::start(dir.path(), "org.gigmcp.Gateway1.conf", None);
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcp"))
        .args(["--bus", &bus.address, "secret", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("systemctl start gigmcp") && err.contains("--state-dir"),
        "{err}"
    );
}

#[test]
fn an_install_is_done_only_with_the_digest_of_what_the_daemon_shows_now() {
    let d = daemon(|_| {});
    let name = format!("s{}", random_hex(4));
    let manifest = serde_json::json!({"name": name, "version": "1.0", "tools": ["echo"]});
    let entry = testkit::signed_registry::entry(
        "reg.invalid/mcp/x",
        &format!("sha256:{}", random_hex(32)),
        512,
        &manifest,
    );
    let mut index = testkit::signed_registry::SignedRegistry::new();
    index.publish(&[&entry], &[]);
    let reg = format!("r{}", random_hex(4));
    let root = index.root_file();
    d.ok(&[
        "registry",
        "add",
        &reg,
        &index.url(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(d.ok(&["registry", "search", ""]).contains(&name));
    assert!(d.ok(&["registry", "list"]).contains(&reg));
    let shown = d.ok(&["registry", "show", &name]);
    assert!(shown.contains(&format!("{reg}/{name}/1.0")), "{shown}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(d.address.as_str())
            .build()
            .await
            .unwrap();
        let gw = gateway::control::Gateway1Proxy::new(&conn).await.unwrap();
        let asked = |e: zbus::Error| match e {
            zbus::Error::MethodError(n, Some(m), _) => (n.to_string(), m),
            other => panic!("{other}"),
        };
        // No consent: the text and its digest come back, nothing installed.
        let (kind, said) = asked(
            gw.server_install(&name, "", &[], &[], "")
                .await
                .unwrap_err(),
        );
        assert_eq!(kind, "org.gigmcp.Gateway1.Error.ConsentNeeded");
        let (digest, text) = said.split_once('\n').unwrap();
        assert!(
            digest.starts_with("sha256:") && text.contains(&name),
            "{said}"
        );
        // A digest of anything else (what was shown before a sync): asked again.
        let stale = format!("sha256:{}", random_hex(32));
        let (kind, again) = asked(
            gw.server_install(&name, "", &[], &[], &stale)
                .await
                .unwrap_err(),
        );
        assert_eq!(kind, "org.gigmcp.Gateway1.Error.ConsentNeeded");
        assert_eq!(again, said);
        // The right digest passes consent and goes on to the image (not there: refused).
        let (kind, _) = asked(
            gw.server_install(&name, "", &[], &[], digest)
                .await
                .unwrap_err(),
        );
        assert_ne!(kind, "org.gigmcp.Gateway1.Error.ConsentNeeded");
    });
    assert!(d.env.store().server_list().unwrap().is_empty());
    // The CLI does the same two steps: --yes shows the text, then the image is refused.
    let out = d.run(&["registry", "install", &name, "--yes"], b"");
    assert!(!out.status.success());
    assert!(text(&out).contains(&name), "{}", text(&out));
    assert!(d.env.store().server_list().unwrap().is_empty());
}

#[test]
fn a_caller_the_bus_lets_through_is_still_refused_by_the_daemon_and_audited() {
    if !testkit::require_root("control_cli") {
        return;
    }
    let name = format!("S_{}", random_hex(4).to_uppercase());
    let d = daemon_on(|_| {}, true, "");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_gigmcp"))
        .args(["--bus", &d.address, "secret", "rm", &name])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody removed a secret");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not root nor in gigmcp-admin"), "{err}");
    // Denials go through the daemon's audit queue: give its writer a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let denied = d.audited("secret.remove");
        if let Some(e) = denied.iter().find(|e| e.target == name) {
            assert_eq!(e.outcome, "denied");
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
            assert!(e.detail.contains(&format!("uid={nobody}")), "{e:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no denial audited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The `<method>`, `<signal>` and `<arg>` tags of the `org.gigmcp.Gateway1` interface in an
/// introspection document, in order, each with its attributes (comments dropped).
fn interface_tags(xml: &str) -> Vec<String> {
    let start = xml
        .find(r#"<interface name="org.gigmcp.Gateway1">"#)
        .expect("the interface");
    let body = &xml[start..];
    let body = &body[..body.find("</interface>").expect("its end")];
    let mut tags = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").expect("a closed comment") + 3..];
            continue;
        }
        let end = rest.find('>').expect("a closed tag");
        let tag = rest[1..end].trim_end_matches('/').trim();
        if ["method ", "signal ", "arg "]
            .iter()
            .any(|k| tag.starts_with(k))
        {
            tags.push(tag.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        rest = &rest[end + 1..];
    }
    tags
}

#[test]
fn the_interface_the_daemon_serves_is_the_one_docs_dbus_md_describes() {
    let d = daemon(|_| {});
    let out = Command::new("dbus-send")
        .args([
            &format!("--bus={}", d.address),
            "--print-reply=literal",
            "--dest=org.gigmcp.Gateway1",
            "/org/gigmcp/Gateway1",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let live = String::from_utf8(out.stdout).unwrap();
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DBUS.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let xml = doc
        .split("```xml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/DBUS.md has the introspection XML in a ```xml block");
    let (live, documented) = (interface_tags(&live), interface_tags(xml));
    assert!(live.len() > 40, "{live:?}");
    assert_eq!(
        documented,
        live,
        "docs/DBUS.md's XML is not what gigmcpd serves; the live interface:\n{}",
        live.join("\n")
    );
}

#[test]
fn layouts_and_tarballs_cross_as_descriptors_and_a_root_directory_is_refused() {
    let d = daemon_on(|_| {}, false, "allow_unsigned_servers = true");
    let dir = d.env.dir.path();
    let (rootfs, layout) = (dir.join("rootfs"), dir.join("layout"));
    testkit::rootfs::build(&rootfs, &[(PathBuf::from("/bin/true"), "bin/server")]);
    let manifest = dir.join("manifest.json");
    let write_manifest = |name: &str| {
        std::fs::write(
            &manifest,
            serde_json::json!({"name": name, "version": "1.0", "command": ["/bin/server"]})
                .to_string(),
        )
        .unwrap();
    };
    // A root directory is copied by `cp`, which cannot reach the daemon's descriptor:
    // refused over the bus, naming both ways on.
    let from_root = format!("r{}", random_hex(4));
    write_manifest(&from_root);
    let err = d.refused(&[
        "server",
        "add",
        &from_root,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--unsigned",
    ]);
    assert!(
        err.contains("offline only") && err.contains("oci-layout:"),
        "{err}"
    );

    // A layout directory, then the same layout as a tarball: the one image, installed once.
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let built = testkit::oci::build_layout(
        &layout,
        &rootfs,
        serde_json::json!({"Entrypoint": ["/bin/server"]}),
        "v1",
    );
    let imported = d.ok(&["image", "import", layout.to_str().unwrap()]);
    assert!(imported.contains(&built.manifest_digest), "{imported}");
    let tarball = dir.join("layout.tar");
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&layout)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let again = d.ok(&["image", "import", tarball.to_str().unwrap(), "--name", "v1"]);
    assert!(again.contains(&built.manifest_digest), "{again}");
    // A server from the layout by digest, its layout passed as a descriptor.
    let from_layout = format!("l{}", random_hex(4));
    write_manifest(&from_layout);
    d.ok(&[
        "server",
        "add",
        &from_layout,
        "--image",
        &format!("oci-layout:{}@{}", layout.display(), built.manifest_digest),
        "--manifest",
        manifest.to_str().unwrap(),
        "--unsigned",
    ]);
    let servers = d.ok(&["server", "list"]);
    assert!(
        servers.contains(&from_layout) && !servers.contains(&from_root),
        "{servers}"
    );
    let images = d.ok(&["image", "list"]);
    assert!(
        images.contains(&built.manifest_digest) && images.contains(&from_layout),
        "{images}"
    );
}
