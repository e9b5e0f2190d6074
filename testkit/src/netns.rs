//! A fresh network namespace for each privileged test, as netavark's tests do: the helper under
//! test, the test's own sockets and the gateway parts it runs in-process all live in it, so
//! links, addresses, nftables tables and ports are the test's alone and vanish with it.
//!
//! Namespaces belong to threads, and a thread's children (threads and processes) inherit its
//! namespace; so [`privileged`] unshares on a new thread *before* building the tokio runtime,
//! whose worker and blocking threads are then created inside.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Runs a privileged test: skips (loudly) without root, else runs `body` on a multi-threaded
/// tokio runtime with `worker_threads` workers inside a fresh network namespace whose loopback
/// is up. A panic in `body` fails the test as it would have without the wrapper.
pub fn privileged<F, Fut>(test: &str, worker_threads: usize, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !crate::require_root(test) {
        return;
    }
    let joined = std::thread::Builder::new()
        .name(test.to_owned())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            loopback_up();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(worker_threads)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(body());
        })
        .expect("spawn the test's netns thread")
        .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

/// `lo` up in the calling thread's namespace (a new namespace starts with it down).
fn loopback_up() {
    let out = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .expect("run ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip link set lo up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A handle on a network namespace, keeping it alive while held.
#[derive(Debug)]
pub struct Netns(File);

impl Netns {
    /// The calling thread's network namespace.
    pub fn current() -> Self {
        Self(File::open("/proc/thread-self/ns/net").expect("open /proc/thread-self/ns/net"))
    }

    /// The namespace pinned at `path` (e.g. `/run/netns/NAME`).
    pub fn open(path: &str) -> Self {
        Self(File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}")))
    }

    /// Whether this is the namespace the test process started in (its main thread's,
    /// `/proc/self/ns/net`): a privileged test still there would share links, tables and
    /// ports with every other test run on the machine.
    pub fn is_host(&self) -> bool {
        let ino = |m: std::fs::Metadata| (m.dev(), m.ino());
        let host = std::fs::metadata("/proc/self/ns/net").expect("stat /proc/self/ns/net");
        ino(self.0.metadata().expect("stat netns")) == ino(host)
    }

    /// Another handle on the same namespace.
    pub fn clone_handle(&self) -> Self {
        Self(self.0.try_clone().expect("dup netns fd"))
    }

    /// Runs `f` on a new thread inside this namespace; sockets made there stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = self.0.try_clone().expect("dup netns fd");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A named namespace (`ip netns add NAME`), for tools that take a name (`ip netns exec`);
/// deleted on drop. Name it with [`crate::names::unique`]: `/run/netns` is host-wide.
#[derive(Debug)]
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn add(name: String) -> Self {
        crate::names::sweep_stale();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        Netns::open(&self.path()).run(f)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `ip ARGS` (iproute2) in the caller's network namespace.
pub fn ip(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip")
}

/// Runs `ip ARGS` and fails the test, with ip's own message, if it fails.
pub fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
