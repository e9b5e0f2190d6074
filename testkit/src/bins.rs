//! The workspace's built binaries, found from the running test binary's target directory, and
//! the static sandbox init, built on first use when missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>` of the running test or bench binary (`target/<profile>/deps/<binary>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// A workspace binary (built by `cargo build --workspace --bins`): from this build's profile,
/// else from the debug build.
pub fn workspace_bin(name: &str) -> PathBuf {
    let here = target_dir().join(name);
    let debug = target_dir().parent().unwrap().join("debug").join(name);
    [here, debug]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} missing: run `cargo build --workspace --bins` first (scripts/test does)")
        })
}

fn host_triple() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// The command that builds the static init, as scripts/test runs it.
fn static_init_command() -> String {
    format!(
        "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --locked -p sandbox-init \
         --bin gigmcp-sandbox-init --target {} --target-dir target/static-init",
        host_triple()
    )
}

/// The statically linked `gigmcp-sandbox-init` (the helper refuses a dynamic one) in
/// `target/static-init`. Brought up to date by cargo on first use in each test process (a no-op
/// when nothing changed), so a test never runs a stale init; a failed build fails the test with
/// the exact command to run.
pub fn static_init() -> PathBuf {
    static INIT: OnceLock<PathBuf> = OnceLock::new();
    INIT.get_or_init(|| {
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let static_dir = target_dir().parent().unwrap().join("static-init");
        let path = static_dir
            .join(host_triple())
            .join("debug/gigmcp-sandbox-init");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--quiet", "--locked", "-p", "sandbox-init"])
            .args(["--bin", "gigmcp-sandbox-init", "--target", host_triple()])
            .arg("--target-dir")
            .arg(&static_dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()) && path.exists(),
            "building {} failed: run `{}` in {}",
            path.display(),
            static_init_command(),
            workspace.display()
        );
        path
    })
    .clone()
}
