//! Enforces the workspace's dependency invariants with `cargo tree`:
//! - the privileged crate links no HTTP, TLS, JSON-RPC or SQL code;
//! - ring is the only crypto provider rustls may use: no aws-lc, no OpenSSL anywhere.

use std::process::Command;

fn tree(args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--prefix", "none", "--format", "{p}"])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packages: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(!packages.is_empty(), "cargo tree listed nothing");
    packages
}

fn forbidden_in(packages: &[String], forbidden: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            forbidden
                .iter()
                .any(|f| p == f || p.starts_with(&format!("{f}-")))
        })
        .cloned()
        .collect()
}

#[test]
fn privhelper_links_no_network_protocol_or_sql_code() {
    let packages = tree(&["-p", "privhelper", "-e", "normal"]);
    assert!(packages.iter().any(|p| p == "privhelper"));
    let found = forbidden_in(
        &packages,
        &[
            "hyper",
            "h2",
            "http",
            "reqwest",
            "rustls",
            "tokio-rustls",
            "openssl",
            "native-tls",
            "rusqlite",
            "libsqlite3",
            "sqlx",
            "postgres",
            "rmcp",
            "jsonrpc",
            "jsonrpsee",
        ],
    );
    assert!(found.is_empty(), "privhelper depends on {found:?}");
}

#[test]
fn no_crypto_provider_but_ring() {
    let packages = tree(&["--workspace", "-e", "normal,build"]);
    let found = forbidden_in(
        &packages,
        &[
            "aws-lc-rs",
            "aws-lc-sys",
            "aws-lc-fips-sys",
            "openssl",
            "openssl-sys",
            "boring",
            "boring-sys",
        ],
    );
    assert!(found.is_empty(), "forbidden crypto providers: {found:?}");
}

#[test]
fn the_check_sees_forbidden_crates() {
    // The gateway really does link SQLite: proves the matcher would catch it in privhelper.
    let packages = tree(&["-p", "gateway", "-e", "normal"]);
    assert_eq!(
        forbidden_in(&packages, &["rusqlite"]),
        vec!["rusqlite".to_owned()]
    );
}
