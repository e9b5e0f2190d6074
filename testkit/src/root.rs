//! The one root check: privileged tests skip loudly without root, and may not skip on CI.

/// True if the privileged test `test` may run. Without root it prints a loud `SKIPPED` line and
/// returns false; on CI (`CI=true`) a skipped privileged test would be a silent hole in the
/// suite, so it panics instead.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: privileged test run without root on CI");
    }
    eprintln!(
        "\n*** SKIPPED {test}: needs root (namespaces, nftables, cgroups, bwrap). Run as root. ***\n"
    );
    false
}
