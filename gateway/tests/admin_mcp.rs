//! `gigmcp server|endpoint` through the real CLI binary on a real SQLite state directory.

use testkit::env as common;

use common::{TestEnv, text};

fn manifest(env: &TestEnv) -> std::path::PathBuf {
    let p = env.dir.path().join("manifest.json");
    std::fs::write(
        &p,
        r#"{"name":"demo","version":"1.2.0","command":["/bin/server"],"tools":["a","b"]}"#,
    )
    .unwrap();
    p
}

/// A root filesystem with what an image must contain (docs/SANDBOX.md) and `command` as an
/// executable.
fn complete_rootfs(env: &TestEnv, name: &str, command: &str) -> std::path::PathBuf {
    let rootfs = env.dir.path().join(name);
    for dir in gateway::admin::image_layout::MOUNT_POINTS {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    let program = rootfs.join(command.trim_start_matches('/'));
    std::fs::create_dir_all(program.parent().unwrap()).unwrap();
    std::fs::write(&program, b"\x7fELF").unwrap();
    common::chmod(&program, 0o755);
    rootfs
}

fn config(env: &TestEnv, allow: bool) -> std::path::PathBuf {
    let p = env.dir.path().join(format!("gigmcp-{allow}.toml"));
    let images = env.dir.path().join("images");
    std::fs::write(
        &p,
        format!(
            "[gateway]\nallow_unsigned_servers = {allow}\n[sandbox]\nimages_dir = \"{}\"\n",
            images.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn unsigned_servers_endpoints_and_tokens() {
    let env = TestEnv::new();
    let rootfs = complete_rootfs(&env, "rootfs", "/bin/server");
    let m = manifest(&env);
    let (m, r) = (m.to_str().unwrap(), rootfs.to_str().unwrap());

    // Refused unless the configuration allows unsigned servers; the refusal is audited.
    let deny = config(&env, false);
    let out = env.cli(
        &[
            "--config",
            deny.to_str().unwrap(),
            "server",
            "add",
            "demo",
            "--rootfs",
            r,
            "--manifest",
            m,
            "--unsigned",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unsigned servers are not allowed"),
        "{}",
        text(&out)
    );
    // --unsigned is required.
    let allow = config(&env, true);
    let c = allow.to_str().unwrap();
    let out = env.cli(
        &[
            "--config",
            c,
            "server",
            "add",
            "demo",
            "--rootfs",
            r,
            "--manifest",
            m,
        ],
        b"",
    );
    assert!(!out.status.success());

    let out = env.cli(
        &[
            "--config",
            c,
            "server",
            "add",
            "demo",
            "--rootfs",
            r,
            "--manifest",
            m,
            "--unsigned",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("WARNING") && text(&out).contains("UNSIGNED"),
        "{}",
        text(&out)
    );
    assert!(
        env.dir.path().join("images/dirs/demo/bin/server").is_file(),
        "rootfs copied into images_dir"
    );
    let out = env.cli(
        &[
            "--config",
            c,
            "server",
            "add",
            "demo",
            "--rootfs",
            r,
            "--manifest",
            m,
            "--unsigned",
        ],
        b"",
    );
    assert!(!out.status.success(), "installed twice");
    let out = env.cli(
        &[
            "--config",
            c,
            "server",
            "add",
            "Bad__Name",
            "--rootfs",
            r,
            "--manifest",
            m,
            "--unsigned",
        ],
        b"",
    );
    assert!(!out.status.success());
    let out = env.cli(&["server", "list"], b"");
    assert!(
        text(&out).contains("demo") && text(&out).contains("unsigned"),
        "{}",
        text(&out)
    );

    // Endpoints name existing servers only.
    let out = env.cli(&["endpoint", "add", "agents", "--server", "demo=a"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let out = env.cli(&["endpoint", "add", "broken", "--server", "nosuch"], b"");
    assert!(!out.status.success());
    let out = env.cli(&["endpoint", "add", "agents", "--server", "demo"], b"");
    assert!(!out.status.success(), "created twice");

    // An endpoint's own description of a tool, named as clients see it.
    let out = env.cli(
        &[
            "endpoint",
            "describe",
            "agents",
            "demo__a",
            "--description",
            "Does A.",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.store().endpoint_descriptions("agents").unwrap(),
        vec![("demo".to_string(), "a".to_string(), "Does A.".to_string())]
    );
    let out = env.cli(
        &["endpoint", "describe", "agents", "a", "--description", "x"],
        b"",
    );
    assert!(!out.status.success(), "a name without the server");
    let out = env.cli(
        &[
            "endpoint",
            "describe",
            "agents",
            "other__a",
            "--description",
            "x",
        ],
        b"",
    );
    assert!(
        !out.status.success(),
        "a server the endpoint does not expose"
    );

    // A token is printed once; only its hash is stored.
    let out = env.cli(
        &["endpoint", "token", "create", "agents", "--label", "laptop"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let secret = stdout
        .lines()
        .find(|l| l.starts_with("gmcp_tk_"))
        .expect("token printed")
        .to_owned();
    let id = stdout.split_whitespace().nth(2).unwrap().to_owned();
    let db = std::fs::read(env.db_path()).unwrap_or_default();
    assert!(
        !common::contains(&db, secret.as_bytes()),
        "token stored in clear"
    );
    let rec = env
        .store()
        .token_by_hash(&gateway::tokens::hash(&secret))
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.id.as_str(), rec.endpoint.as_str(), rec.label.as_str()),
        (id.as_str(), "agents", "laptop")
    );
    let out = env.cli(&["endpoint", "token", "create", "nosuch"], b"");
    assert!(!out.status.success());
    let out = env.cli(&["endpoint", "token", "revoke", &id], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        env.store()
            .token_by_hash(&gateway::tokens::hash(&secret))
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_some()
    );
    let out = env.cli(&["endpoint", "token", "revoke", &id], b"");
    assert!(!out.status.success(), "revoked twice");

    // Nothing to approve yet.
    let out = env.cli(&["server", "tools", "demo", "--approve", "a"], b"");
    assert!(!out.status.success());

    // Every action is in the audit trail, the token's secret nowhere.
    let audit = env.store().audit_recent(1000).unwrap();
    for action in ["server.add", "endpoint.add", "token.create", "token.revoke"] {
        assert!(audit.iter().any(|e| e.action == action), "{action}");
    }
    assert!(
        audit
            .iter()
            .any(|e| e.action == "server.add" && e.outcome == "failed")
    );
    assert!(!audit.iter().any(|e| e.detail.contains(&secret)));
}

#[test]
fn server_tools_show_a_servers_names_and_definitions_escaped() {
    use gateway::store::ToolDefinition;
    let env = TestEnv::new();
    let (server, marker) = (format!("s{}", common::random_hex(4)), common::random_hex(6));
    // A name that looks like `read_<marker>` but reads backwards and hides a zero-width
    // joiner, and definitions that clear the screen and carry a bidi isolate.
    let tool = format!("read_\u{202e}{marker}\u{200d}\u{1b}[2J");
    let def = |approved: bool, extra: &str| ToolDefinition {
        server: server.clone(),
        tool: tool.clone(),
        approved,
        definition: format!(
            "{{\"name\":\"{tool}\",\"description\":\"{extra}\u{2066}{marker}\u{2069}\\\\\"}}"
        ),
        digest: common::random_hex(32),
        seen_ms: 1,
    };
    let store = env.store();
    store
        .server_add(&gateway::store::ServerRecord {
            name: server.clone(),
            version: "1".into(),
            image_digest: "dir:/".into(),
            manifest: format!(r#"{{"name":"{server}","version":"1","command":["/s"]}}"#),
            source: "unsigned".into(),
            approved_ranges: Vec::new(),
            installed_ms: 1,
            origin: None,
        })
        .unwrap();
    store
        .tool_definitions_put(&[def(true, "old"), def(false, "new\r\u{9b}")])
        .unwrap();
    let out = env.cli(&["server", "tools", &server, "--diff"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8(out.stdout).expect("the rendering is UTF-8");
    let hidden: Vec<char> = shown
        .chars()
        .filter(|&c| c != '\n' && gateway::terminal::is_hidden(c))
        .collect();
    assert!(
        hidden.is_empty(),
        "hidden characters {hidden:?} in {shown:?}"
    );
    let name = format!("read_\\u{{202e}}{marker}\\u{{200d}}\\x1b[2J");
    assert!(
        shown.contains(&format!("{name}  CHANGED (hidden)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "\"description\":\"new\\x0d\\u{{009b}}\\u{{2066}}{marker}\\u{{2069}}\\\\\""
        )),
        "{shown}"
    );
}

#[test]
fn server_add_refuses_an_image_that_cannot_run_naming_what_is_missing() {
    use gateway::admin::image_layout::MOUNT_POINTS;
    let env = TestEnv::new();
    let c = config(&env, true);
    let name = format!("s{}", common::random_hex(4));
    let command = format!("/opt/{}/server", common::random_hex(4));
    let manifest = env.dir.path().join("m.json");
    std::fs::write(
        &manifest,
        format!(r#"{{"name":"{name}","version":"1","command":["{command}"]}}"#),
    )
    .unwrap();
    let add = |rootfs: &std::path::Path| {
        env.cli(
            &[
                "--config",
                c.to_str().unwrap(),
                "server",
                "add",
                &name,
                "--rootfs",
                rootfs.to_str().unwrap(),
                "--manifest",
                manifest.to_str().unwrap(),
                "--unsigned",
            ],
            b"",
        )
    };
    let pick = MOUNT_POINTS[usize::from(common::random_hex(1).as_bytes()[0]) % MOUNT_POINTS.len()];
    let mut cases: Vec<(std::path::PathBuf, String)> = Vec::new();
    // A mount point missing, then one that is a symbolic link.
    let r = complete_rootfs(&env, "missing", &command);
    std::fs::remove_dir(r.join(pick)).unwrap();
    cases.push((r, format!("no /{pick} directory")));
    let r = complete_rootfs(&env, "linked", &command);
    std::fs::remove_dir(r.join(pick)).unwrap();
    std::os::unix::fs::symlink("/", r.join(pick)).unwrap();
    cases.push((r, format!("/{pick} in the image is a symbolic link")));
    // The command absent (the host has /bin/sh; the image must have its own command).
    let r = complete_rootfs(&env, "nocommand", "/bin/other");
    cases.push((r, format!("the command \"{command}\" is not in the image")));
    // The command present but not executable.
    let r = complete_rootfs(&env, "noexec", &command);
    common::chmod(&r.join(command.trim_start_matches('/')), 0o644);
    cases.push((r, "has no execute permission".into()));
    for (rootfs, why) in &cases {
        let out = add(rootfs);
        assert!(!out.status.success(), "{} was installed", rootfs.display());
        assert!(text(&out).contains(why), "{why:?} not in: {}", text(&out));
        assert!(
            !env.dir.path().join("images/dirs").join(&name).exists(),
            "the refused copy was left in images_dir"
        );
    }
    let audit = env.store().audit_recent(100).unwrap();
    let failed = audit
        .iter()
        .filter(|e| e.action == "server.add" && e.target == name && e.outcome == "failed")
        .count();
    assert_eq!(failed, cases.len(), "{audit:#?}");
    // Complete, it installs.
    let out = add(&complete_rootfs(&env, "complete", &command));
    assert!(out.status.success(), "{}", text(&out));
}

/// The characters of `out` (stdout and stderr) a terminal would obey or hide.
fn hidden_in(out: &std::process::Output) -> Vec<char> {
    let shown = format!(
        "{}{}",
        String::from_utf8(out.stdout.clone()).expect("the rendering is UTF-8"),
        String::from_utf8(out.stderr.clone()).expect("the rendering is UTF-8")
    );
    shown
        .chars()
        .filter(|&c| c != '\n' && gateway::terminal::is_hidden(c))
        .collect()
}

#[test]
fn a_manifests_version_and_an_images_names_reach_the_terminal_escaped() {
    let env = TestEnv::new();
    let allow = config(&env, true);
    let c = allow.to_str().unwrap();
    let marker = common::random_hex(6);
    // The manifest is the server author's: its version sets the window title, clears the
    // screen and reverses what follows.
    let (server, m) = (
        format!("s{}", common::random_hex(4)),
        env.dir.path().join("m.json"),
    );
    let version = format!("1.0\\u001b]0;{marker}\\u0007\\u001b[2J\\u202e{marker}");
    std::fs::write(
        &m,
        format!(r#"{{"name":"{server}","version":"{version}","command":["/bin/server"]}}"#),
    )
    .unwrap();
    let rootfs = complete_rootfs(&env, &format!("r{marker}"), "/bin/server");
    let add = |name: &str, rootfs: &std::path::Path, m: &std::path::Path| {
        env.cli(
            &[
                "--config",
                c,
                "server",
                "add",
                name,
                "--rootfs",
                rootfs.to_str().unwrap(),
                "--manifest",
                m.to_str().unwrap(),
                "--unsigned",
            ],
            b"",
        )
    };
    let out = add(&server, &rootfs, &m);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        hidden_in(&out),
        Vec::<char>::new(),
        "server add: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("\\x1b]0;{marker}\\x07")),
        "{}",
        text(&out)
    );
    let out = env.cli(&["server", "list"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        hidden_in(&out),
        Vec::<char>::new(),
        "server list: {}",
        text(&out)
    );

    // The image is the author's too: a `#!` line naming an interpreter the image lacks is
    // quoted in the refusal, escaped.
    let rootfs = complete_rootfs(&env, &format!("s{marker}"), "/bin/server");
    std::fs::write(
        rootfs.join("bin/server"),
        format!("#!/opt/\u{1b}]0;{marker}\u{7}\u{202e}x\n"),
    )
    .unwrap();
    let other = format!("t{}", common::random_hex(4));
    let m2 = env.dir.path().join("m2.json");
    std::fs::write(
        &m2,
        format!(r#"{{"name":"{other}","version":"1","command":["/bin/server"]}}"#),
    )
    .unwrap();
    let out = add(&other, &rootfs, &m2);
    assert!(!out.status.success());
    assert!(text(&out).contains(&marker), "{}", text(&out));
    assert_eq!(
        hidden_in(&out),
        Vec::<char>::new(),
        "refusal: {}",
        text(&out)
    );
}
