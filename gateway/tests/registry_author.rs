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
