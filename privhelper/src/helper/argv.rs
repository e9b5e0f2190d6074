//! bwrap's command line for one sandbox, as a pure function of the checked spec and the
//! configuration, so that what a sandbox is made of can be read, and tested, in one place.
//!
//! The fds bwrap reads are passed at fixed numbers from 3 up, in this order: the rootfs, the
//! data dir (if any), one per CA copy, then transparent mode's resolv.conf. [`numbered`] gives
//! the numbers; [`bwrap_args`] names the same numbers in the same order.
//!
//! bwrap gets its options through one more fd, after all of them ([`Argv::through_fd`]: its
//! argv is only `--args N -- <init and its arguments>`): bwrap stays in the sandbox as its pid 1, and anything in the sandbox
//! can read `/proc/1/cmdline`, which would otherwise show the init's host path and the server's
//! whole environment.

use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use sandbox_init::SANDBOX_PATH as INIT_IN_SANDBOX;

/// The uid and gid the server has inside its user namespace.
const SANDBOX_ID: &str = "65534";
/// The first fd number bwrap is handed (0-2 are the server's stdio).
const FIRST_FD: RawFd = 3;

/// What the command line depends on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The init binary on the host, bound read-only at [`INIT_IN_SANDBOX`].
    pub init: &'a Path,
    pub tmp_bytes: u64,
    pub data: bool,
    /// Where each CA copy goes inside the sandbox, in the order of their fds.
    pub ca_dests: &'a [&'a str],
    /// Transparent mode: init opens 443 and 53, and resolv.conf is replaced.
    pub transparent: bool,
    pub env: &'a [(String, String)],
    pub argv: &'a [String],
    /// The server's working directory inside the sandbox (checked by `validate`).
    pub workdir: &'a str,
    pub proxy_port: u16,
    pub allow_degraded_landlock: bool,
}

/// Gives `fds` (in the order the module comment lists) the numbers bwrap expects them at.
pub fn numbered(fds: impl IntoIterator<Item = OwnedFd>) -> Vec<(OwnedFd, RawFd)> {
    fds.into_iter().zip(FIRST_FD..).collect()
}

/// bwrap's command line: its options, then `--` and the command it runs in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    pub options: Vec<OsString>,
    /// The init and its own arguments (the server's argv among them): inside-sandbox paths
    /// only, as `/proc/2/cmdline` shows them anyway.
    pub command: Vec<OsString>,
}

impl Argv {
    /// The whole argv after the program name.
    pub fn all(&self) -> Vec<OsString> {
        let mut out = self.options.clone();
        out.push("--".into());
        out.extend(self.command.iter().cloned());
        out
    }

    /// The same command line with the options read from fd `fd` (`--args`), which holds
    /// [`args_file`] of them; bwrap reads only options there, the command stays in its argv.
    pub fn through_fd(self, fd: RawFd) -> Self {
        Argv {
            options: vec!["--args".into(), fd.to_string().into()],
            command: self.command,
        }
    }
}

/// The number of the `--args` fd: the first after those of `pass_fds`.
pub fn args_fd(pass_fds: &[(OwnedFd, RawFd)]) -> RawFd {
    pass_fds
        .iter()
        .map(|&(_, n)| n + 1)
        .max()
        .unwrap_or(FIRST_FD)
}

/// The contents of the `--args` file, in bwrap's format: every argument followed by a NUL
/// (an argument cannot hold a NUL itself: the spec's strings are checked C strings by then).
pub fn args_file(args: &[OsString]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

/// bwrap's full command line for the inputs.
pub fn bwrap_args(i: &Inputs<'_>) -> Argv {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |list: &[&str]| args.extend(list.iter().map(OsString::from));
    // Every namespace but the network one: the launcher's child has already entered the
    // sandbox's own netns, which the sandbox must not be able to change. No nested user
    // namespaces.
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
    ]);
    push(&[
        "--uid",
        SANDBOX_ID,
        "--gid",
        SANDBOX_ID,
        "--hostname",
        "sandbox",
    ]);
    push(&["--ro-bind-fd", "3", "/", "--proc", "/proc", "--dev", "/dev"]);
    let tmp = i.tmp_bytes.to_string();
    push(&["--size", &tmp, "--tmpfs", "/tmp", "--tmpfs", "/run"]);
    args.push("--ro-bind".into());
    args.push(i.init.into());
    args.push(INIT_IN_SANDBOX.into());
    let mut next = FIRST_FD + 1;
    let mut fd = || {
        let n = next;
        next += 1;
        OsString::from(n.to_string())
    };
    if i.data {
        args.extend(["--bind-fd".into(), fd(), "/data".into()]);
    }
    // Copies, not binds: the sandbox reads the CA bundle and resolv.conf, never the host's file.
    let resolv_conf = format!("/{}", super::validate::RESOLV_CONF);
    let transparent = i.transparent.then_some(resolv_conf.as_str());
    for dest in i.ca_dests.iter().copied().chain(transparent) {
        let copy = [
            "--perms".into(),
            "0444".into(),
            "--ro-bind-data".into(),
            fd(),
        ];
        args.extend(copy.into_iter().chain([dest.into()]));
    }
    args.push("--clearenv".into());
    for (k, v) in i.env {
        args.extend(["--setenv".into(), k.into(), v.into()]);
    }
    args.extend(["--chdir".into(), i.workdir.into()]);
    let mut command = vec![OsString::from(INIT_IN_SANDBOX)];
    let init = sandbox_init::args::Args {
        proxy_port: i.proxy_port,
        transparent: i.transparent,
        data: i.data,
        allow_degraded_landlock: i.allow_degraded_landlock,
        server: i.argv.iter().map(OsString::from).collect(),
    };
    command.extend(init.to_args());
    Argv {
        options: args,
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "--unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup \
        --disable-userns --die-with-parent --new-session --uid 65534 --gid 65534 --hostname sandbox \
        --ro-bind-fd 3 / --proc /proc --dev /dev --size 1048576 --tmpfs /tmp --tmpfs /run \
        --ro-bind /usr/libexec/gigmcp/gigmcp-sandbox-init /run/gigmcp/init";

    fn inputs<'a>(env: &'a [(String, String)], argv: &'a [String]) -> Inputs<'a> {
        Inputs {
            init: Path::new("/usr/libexec/gigmcp/gigmcp-sandbox-init"),
            tmp_bytes: 1 << 20,
            data: false,
            ca_dests: &[],
            transparent: false,
            env,
            argv,
            workdir: "/tmp",
            proxy_port: 3128,
            allow_degraded_landlock: false,
        }
    }

    fn line(args: Vec<OsString>) -> String {
        let words: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        words.join(" ")
    }

    fn env() -> Vec<(String, String)> {
        vec![("HTTPS_PROXY".into(), "http://10.231.0.1:3128".into())]
    }

    fn argv() -> Vec<String> {
        vec!["node".into(), "server.js".into()]
    }

    #[test]
    fn a_plain_sandbox_gets_the_rootfs_the_init_and_the_spec_environment() {
        let (env, argv) = (env(), argv());
        assert_eq!(
            line(bwrap_args(&inputs(&env, &argv)).all()),
            format!(
                "{HEAD} --clearenv --setenv HTTPS_PROXY http://10.231.0.1:3128 --chdir /tmp -- \
                 /run/gigmcp/init --proxy-port 3128 -- node server.js"
            )
        );
    }

    #[test]
    fn a_data_dir_is_bound_writable_at_slash_data_from_fd_4() {
        let (env, argv) = (env(), argv());
        let i = Inputs {
            data: true,
            ..inputs(&env, &argv)
        };
        assert_eq!(
            line(bwrap_args(&i).all()),
            format!(
                "{HEAD} --bind-fd 4 /data --clearenv --setenv HTTPS_PROXY \
                 http://10.231.0.1:3128 --chdir /tmp -- /run/gigmcp/init --proxy-port 3128 \
                 --data -- node server.js"
            )
        );
    }

    #[test]
    fn a_ca_bundle_is_copied_read_only_to_every_destination_after_the_data_dir() {
        let (env, argv) = (env(), argv());
        let dests = ["/run/gigmcp/ca.pem", "/etc/ssl/certs/ca-certificates.crt"];
        let i = Inputs {
            data: true,
            ca_dests: &dests,
            ..inputs(&env, &argv)
        };
        assert_eq!(
            line(bwrap_args(&i).all()),
            format!(
                "{HEAD} --bind-fd 4 /data --perms 0444 --ro-bind-data 5 /run/gigmcp/ca.pem \
                 --perms 0444 --ro-bind-data 6 /etc/ssl/certs/ca-certificates.crt --clearenv \
                 --setenv HTTPS_PROXY http://10.231.0.1:3128 --chdir /tmp -- /run/gigmcp/init \
                 --proxy-port 3128 --data -- node server.js"
            )
        );
    }

    #[test]
    fn transparent_mode_replaces_resolv_conf_and_tells_init() {
        let (env, argv) = (env(), argv());
        let dests = ["/run/gigmcp/ca.pem"];
        let i = Inputs {
            transparent: true,
            ca_dests: &dests,
            allow_degraded_landlock: true,
            ..inputs(&env, &argv)
        };
        assert_eq!(
            line(bwrap_args(&i).all()),
            format!(
                "{HEAD} --perms 0444 --ro-bind-data 4 /run/gigmcp/ca.pem --perms 0444 \
                 --ro-bind-data 5 /etc/resolv.conf --clearenv --setenv HTTPS_PROXY \
                 http://10.231.0.1:3128 --chdir /tmp -- /run/gigmcp/init --proxy-port 3128 \
                 --transparent --allow-degraded-landlock -- node server.js"
            )
        );
    }

    #[test]
    fn the_server_starts_in_its_working_directory() {
        let (env, argv) = (env(), argv());
        let i = Inputs {
            workdir: "/srv/app",
            ..inputs(&env, &argv)
        };
        assert_eq!(
            line(bwrap_args(&i).all()),
            format!(
                "{HEAD} --clearenv --setenv HTTPS_PROXY http://10.231.0.1:3128 --chdir /srv/app \
                 -- /run/gigmcp/init --proxy-port 3128 -- node server.js"
            )
        );
    }

    #[test]
    fn fds_are_numbered_from_3_in_the_order_given() {
        let fds: Vec<OwnedFd> = (0..3)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let numbers: Vec<RawFd> = numbered(fds).into_iter().map(|(_, n)| n).collect();
        assert_eq!(numbers, [3, 4, 5]);
    }

    #[test]
    fn bwrap_reads_its_arguments_from_the_fd_after_the_others() {
        let fds: Vec<OwnedFd> = (0..2)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let fd = args_fd(&numbered(fds));
        assert_eq!(fd, 5);
        assert_eq!(args_fd(&[]), FIRST_FD);
        let (env, argv) = (env(), argv());
        let full = bwrap_args(&inputs(&env, &argv));
        let file = args_file(&full.options);
        assert_eq!(
            line(full.clone().through_fd(fd).all()),
            "--args 5 -- /run/gigmcp/init --proxy-port 3128 -- node server.js"
        );
        assert_eq!(file.last(), Some(&0));
        let words: Vec<&[u8]> = file[..file.len() - 1].split(|&b| b == 0).collect();
        assert_eq!(words.len(), full.options.len());
        for (w, a) in words.iter().zip(&full.options) {
            assert_eq!(*w, a.as_bytes());
        }
        // Nothing of the host and nothing of the environment is left in bwrap's own argv.
        let argv = line(full.through_fd(fd).all());
        for leak in ["/usr/libexec", "HTTPS_PROXY", "10.231.0.1"] {
            assert!(!argv.contains(leak), "{leak} in {argv}");
        }
    }

    #[test]
    fn init_and_helper_agree_on_the_transparent_ports() {
        assert_eq!(sandbox_init::args::TLS_PORT, privhelper_api::TLS_PORT);
        assert_eq!(sandbox_init::args::DNS_PORT, privhelper_api::DNS_PORT);
    }
}
