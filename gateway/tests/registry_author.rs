//! The registry author's offline tools, driven through the real `gigmcp` binary: no daemon,
//! no state directory, no master key.

use std::path::Path;
use std::process::{Command, Output};

fn gigmcp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gigmcp"))
        // A state directory that does not exist: the author's verbs must not open one.
        .args(["--state-dir", "/nonexistent/gigmcp-state"])
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("gigmcp runs")
}

fn random_label() -> String {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).unwrap();
    format!("h{}", hex::encode(bytes))
}

fn write(dir: &Path, name: &str, manifest: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, manifest.to_string()).unwrap();
    path.display().to_string()
}

fn clean(host: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "srv", "version": "1.0.0",
        "egress": [{"host": host}],
        "credentials": [{"name": "API_TOKEN", "hosts": [host],
                         "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
        "tools": ["search"],
    })
}

#[test]
fn lint_of_clean_manifests_says_so_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.json",
        &clean(&format!("{}.example.com", random_label())),
    );
    let b = write(dir.path(), "b.json", &clean("api.example.org"));
    let out = gigmcp(&["registry", "lint", &a, &b]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, format!("{a}: no findings\n{b}: no findings\n"));
}

#[test]
fn lint_prints_each_finding_as_file_field_rule_message_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let tunnel = format!("{}.trycloudflare.com", random_label());
    let mut bad = clean("api.example.com");
    bad["egress"] =
        serde_json::json!([{"host": "api.example.com", "ports": [443, 8080]}, {"host": tunnel}]);
    bad["tools"] = serde_json::json!([]);
    let bad = write(dir.path(), "bad.json", &bad);
    let good = write(dir.path(), "good.json", &clean("api.example.com"));
    let out = gigmcp(&["registry", "lint", &good, &bad]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], format!("{good}: no findings"));
    assert!(
        lines[1].starts_with(&format!("{bad}: egress[0].ports[1]: port: port 8080 ")),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{bad}: egress[1].host: exfiltration: \"{tunnel}\" is trycloudflare.com"
        )),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with(&format!("{bad}: tools: tools-empty: ")),
        "{stdout}"
    );
}

#[test]
fn lint_of_a_file_that_is_not_a_manifest_is_a_parse_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, r#"{"name": "srv", "version": "1", "egres": []}"#).unwrap();
    let shown = path.display().to_string();
    let out = gigmcp(&["registry", "lint", &shown]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{shown}: (manifest): parse: unknown field `egres`"
        )),
        "{stdout}"
    );
}

/// `server.json` and `curation.toml` of an npm server with one secret, in `dir`.
fn server_dir(dir: &Path, egress_host: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let server = serde_json::json!({
        "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
        "name": "io.github.example-org/issues",
        "description": "Create and search issues",
        "version": "1.4.2",
        "packages": [{
            "registryType": "npm", "identifier": "@example-org/issues-mcp", "version": "1.4.2",
            "transport": {"type": "stdio"},
            "environmentVariables": [{"name": "ISSUES_TOKEN", "isRequired": true, "isSecret": true}]
        }]
    });
    std::fs::write(dir.join("server.json"), server.to_string()).unwrap();
    let curation = format!(
        "name = \"issues\"\ntools = [\"create_issue\"]\n[[egress]]\nhost = \"{egress_host}\"\n\
         [[secrets]]\nenv = \"ISSUES_TOKEN\"\nhosts = [\"{egress_host}\"]\n\
         inject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\n"
    );
    std::fs::write(dir.join("curation.toml"), curation).unwrap();
    dir.display().to_string()
}

/// A repository in `dir/repo` with a root key and a targets key; returns (repo, targets key).
fn init_repo(dir: &Path) -> (String, String) {
    let root_key = dir.join("root.key").display().to_string();
    let targets_key = dir.join("targets.key").display().to_string();
    for key in [&root_key, &targets_key] {
        let out = gigmcp(&["registry", "keygen", "--out", key]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let repo = dir.join("repo").display().to_string();
    let out = gigmcp(&[
        "registry",
        "init",
        &repo,
        "--root-key",
        &format!("{root_key}.pub"),
        "--targets-key",
        &format!("{targets_key}.pub"),
        "--key",
        &root_key,
        "--key",
        &targets_key,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (repo, targets_key)
}

fn image_layout(dir: &Path) -> (String, testkit::oci::Built) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(root.join("app/server.js"), random_label()).unwrap();
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let built = testkit::oci::build_layout(
        &layout,
        &root,
        serde_json::json!({"Entrypoint": ["/app/server.js"]}),
        "1.4.2",
    );
    (layout.display().to_string(), built)
}

#[test]
fn keygen_init_add_server_sign_then_verify_shows_the_entry_pinned_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, targets_key) = init_repo(dir.path());
    let server = server_dir(&dir.path().join("servers/issues"), "api.issues.example.com");
    let (layout, built) = image_layout(dir.path());
    let out = gigmcp(&[
        "registry",
        "add-server",
        &repo,
        "--server-dir",
        &server,
        "--image-layout",
        &layout,
        "--repository",
        "127.0.0.1:5000/servers/issues",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gigmcp(&["registry", "sign", &repo, "--key", &targets_key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&repo).join("staged-targets.json").exists());
    let root = format!("{repo}/1.root.json");
    let out = gigmcp(&["registry", "verify", &repo, "--root", &root]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("targets 2"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "issues/1.4.2 127.0.0.1:5000/servers/issues@{}",
            built.manifest_digest
        )),
        "{stdout}"
    );
    // Signing again with nothing staged is a new timestamp, nothing else.
    let out = gigmcp(&["registry", "sign", &repo, "--key", &targets_key]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("targets 2"),
        "{out:?}"
    );
}

#[test]
fn a_tampered_targets_file_fails_verify_naming_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, targets_key) = init_repo(dir.path());
    let server = server_dir(&dir.path().join("servers/issues"), "api.issues.example.com");
    let (layout, _) = image_layout(dir.path());
    let add = gigmcp(&[
        "registry",
        "add-server",
        &repo,
        "--server-dir",
        &server,
        "--image-layout",
        &layout,
        "--repository",
        "127.0.0.1:5000/servers/issues",
    ]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert!(
        gigmcp(&["registry", "sign", &repo, "--key", &targets_key])
            .status
            .success()
    );
    let file = Path::new(&repo).join("2.targets.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = text.replacen("api.issues.example.com", "api.issues.example.net", 1);
    assert_ne!(tampered, text);
    std::fs::write(&file, tampered).unwrap();
    let out = gigmcp(&[
        "registry",
        "verify",
        &repo,
        "--root",
        &format!("{repo}/1.root.json"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("targets"), "{stderr}");
}

#[test]
fn lint_findings_block_add_server_and_stage_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = init_repo(dir.path());
    let bin = format!("{}.webhook.site", random_label());
    let server = server_dir(&dir.path().join("servers/issues"), &bin);
    let (layout, _) = image_layout(dir.path());
    let out = gigmcp(&[
        "registry",
        "add-server",
        &repo,
        "--server-dir",
        &server,
        "--image-layout",
        &layout,
        "--repository",
        "127.0.0.1:5000/servers/issues",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused by lint"), "{stderr}");
    assert!(stderr.contains("egress[0].host: exfiltration"), "{stderr}");
    assert!(!Path::new(&repo).join("staged-targets.json").exists());
    // The same directory linted directly gives the same finding.
    let out = gigmcp(&["registry", "lint", &server]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{server}: egress[0].host: exfiltration"))
    );
}

/// `dir` served over HTTP on loopback by Python's `http.server`, killed on drop.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &str) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
            dir,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Served {
        child,
        url: format!("http://127.0.0.1:{port}/"),
    }
}

#[test]
fn verify_reads_a_repository_served_over_http_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, targets_key) = init_repo(dir.path());
    let server = server_dir(&dir.path().join("servers/issues"), "api.issues.example.com");
    let (layout, built) = image_layout(dir.path());
    let add = gigmcp(&[
        "registry",
        "add-server",
        &repo,
        "--server-dir",
        &server,
        "--image-layout",
        &layout,
        "--repository",
        "127.0.0.1:5000/servers/issues",
    ]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert!(
        gigmcp(&["registry", "sign", &repo, "--key", &targets_key])
            .status
            .success()
    );
    let served = serve(&repo);
    let out = gigmcp(&[
        "registry",
        "verify",
        &served.url,
        "--root",
        &format!("{repo}/1.root.json"),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&built.manifest_digest), "{stdout}");
}
