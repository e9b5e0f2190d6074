//! The privileged crates' dependencies, checked with `cargo tree`:
//! - each privileged crate (the root daemon, the sandbox init, the D-Bus API) links exactly the
//!   crates of its committed allowlist (`<crate>/deps.allowlist`): adding, removing or upgrading
//!   a crate in its closure fails here, printing the difference, until the list is updated in
//!   the same commit — so every new root dependency is a visible, reviewed decision;
//! - none of them links HTTP, TLS, JSON-RPC or SQL code;
//! - ring is the only crypto provider rustls may use: no aws-lc, no OpenSSL anywhere.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const PRIVILEGED: [&str; 3] = ["privhelper", "sandbox-init", "privhelper-api"];

/// `name version` of every package `cargo tree` lists for `args`.
fn tree(args: &[&str]) -> BTreeSet<String> {
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
    let packages: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect();
    assert!(!packages.is_empty(), "cargo tree listed nothing");
    packages
}

/// The normal (run-time and proc-macro) dependency closure of `krate`, without itself.
fn closure(krate: &str) -> BTreeSet<String> {
    let mut packages = tree(&["-p", krate, "-e", "normal"]);
    packages.retain(|p| p.split(' ').next() != Some(krate));
    packages
}

/// The committed allowlist of `krate`: one `name version` a line; `#` starts a comment.
fn allowlist(krate: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("deps.allowlist");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Fails, listing what was added (`+`) and removed (`-`), when `krate`'s closure is not its
/// allowlist.
fn assert_matches_allowlist(krate: &str) {
    let (now, allowed) = (closure(krate), allowlist(krate));
    let added: Vec<_> = now.difference(&allowed).map(|p| format!("+ {p}")).collect();
    let removed: Vec<_> = allowed.difference(&now).map(|p| format!("- {p}")).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{krate}'s dependencies differ from {krate}/deps.allowlist:\n{}\n{}\nIf the change is \
         intended, update the allowlist in the same commit (and say in it what the crate is for).",
        added.join("\n"),
        removed.join("\n"),
    );
}

fn forbidden_in(packages: &BTreeSet<String>, forbidden: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter_map(|p| p.split(' ').next())
        .filter(|p| {
            forbidden
                .iter()
                .any(|f| p == f || p.starts_with(&format!("{f}-")))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_root_daemon_links_exactly_its_allowlist() {
    assert_matches_allowlist("privhelper");
}

#[test]
fn the_sandbox_init_links_exactly_its_allowlist() {
    assert_matches_allowlist("sandbox-init");
}

#[test]
fn the_dbus_api_links_exactly_its_allowlist() {
    assert_matches_allowlist("privhelper-api");
}

#[test]
fn no_privileged_crate_links_network_protocol_or_sql_code() {
    for krate in PRIVILEGED {
        let found = forbidden_in(
            &closure(krate),
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
        assert!(found.is_empty(), "{krate} depends on {found:?}");
    }
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
