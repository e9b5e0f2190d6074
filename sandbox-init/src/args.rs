//! The command line, parsed by hand (no parser crate in the sandbox's first process).
//!
//! ```text
//! gigmcp-sandbox-init --proxy-port PORT [--transparent] [--data] [--allow-degraded-landlock]
//!                     -- SERVER [ARG...]
//! ```
//!
//! Options come before `--`, in any order, each at most once; everything after `--` is the
//! server's argv, passed through untouched (it need not be UTF-8).

use std::ffi::OsString;

/// The TLS port `--transparent` lets the server connect to (the helper's `api::TLS_PORT`; a
/// test in the helper checks the two agree). Here rather than imported because init links
/// nothing of the D-Bus side.
pub const TLS_PORT: u16 = 443;
/// The DNS port (TCP) `--transparent` lets the server connect to (the helper's `api::DNS_PORT`).
pub const DNS_PORT: u16 = 53;

/// The synopsis printed with usage errors.
pub const USAGE: &str = "gigmcp-sandbox-init --proxy-port PORT [--transparent] [--data] \
                         [--allow-degraded-landlock] -- SERVER [ARG...]";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The only TCP port the server may connect to (the gateway's egress proxy), 1..=65535.
    pub proxy_port: u16,
    /// Transparent mode: TCP connect is also allowed to ports 443 and 53 ([`TLS_PORT`],
    /// [`DNS_PORT`]).
    pub transparent: bool,
    /// `/data` is mounted and the server may write there.
    pub data: bool,
    /// Run the server even if the kernel does not enforce landlock (prints a DEGRADED line).
    pub allow_degraded_landlock: bool,
    /// The server's argv; `server[0]` is looked up in `PATH` if it has no slash.
    pub server: Vec<OsString>,
}

/// Why a command line was refused; each names the argument at fault. One line, without the
/// synopsis (init appends it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The arguments ended before `--`.
    #[error("missing `--` before the server command")]
    MissingSeparator,
    /// An option came twice: rather than guess which one the helper meant, refuse.
    #[error("{0} given twice")]
    Repeated(&'static str),
    /// An option that takes a value came last.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// `--proxy-port`'s value is not a decimal number in 1..=65535.
    #[error("--proxy-port {0:?} is not a port number in 1..=65535")]
    BadPort(OsString),
    /// Not one of the options (also an `--option=value` spelling, or the server before `--`).
    #[error("unknown argument {0:?}")]
    Unknown(OsString),
    /// `--proxy-port` was not given.
    #[error("--proxy-port is required")]
    MissingProxyPort,
    /// Nothing, or an empty program name, after `--`.
    #[error("no server command after `--`")]
    NoServer,
}

/// Parses the arguments after argv\[0\].
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, ArgsError> {
    let mut args = args.into_iter();
    let mut proxy_port = None;
    let mut transparent = false;
    let mut data = false;
    let mut allow_degraded_landlock = false;
    loop {
        let Some(arg) = args.next() else {
            return Err(ArgsError::MissingSeparator);
        };
        let flag = |seen: &mut bool, name: &'static str| {
            if std::mem::replace(seen, true) {
                Err(ArgsError::Repeated(name))
            } else {
                Ok(())
            }
        };
        match arg.to_str() {
            Some("--") => break,
            Some("--transparent") => flag(&mut transparent, "--transparent")?,
            Some("--data") => flag(&mut data, "--data")?,
            Some("--allow-degraded-landlock") => {
                flag(&mut allow_degraded_landlock, "--allow-degraded-landlock")?
            }
            Some("--proxy-port") => {
                if proxy_port.is_some() {
                    return Err(ArgsError::Repeated("--proxy-port"));
                }
                let value = args.next().ok_or(ArgsError::MissingValue("--proxy-port"))?;
                proxy_port = Some(port(value)?);
            }
            _ => return Err(ArgsError::Unknown(arg)),
        }
    }
    let proxy_port = proxy_port.ok_or(ArgsError::MissingProxyPort)?;
    let server: Vec<OsString> = args.collect();
    if server.first().is_none_or(|p| p.is_empty()) {
        return Err(ArgsError::NoServer);
    }
    Ok(Args {
        proxy_port,
        transparent,
        data,
        allow_degraded_landlock,
        server,
    })
}

impl Args {
    /// The command line that [`parse`] turns back into `self` (argv\[0\] not included): what the
    /// helper passes after the init path.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> =
            vec!["--proxy-port".into(), self.proxy_port.to_string().into()];
        if self.transparent {
            out.push("--transparent".into());
        }
        if self.data {
            out.push("--data".into());
        }
        if self.allow_degraded_landlock {
            out.push("--allow-degraded-landlock".into());
        }
        out.push("--".into());
        out.extend(self.server.iter().cloned());
        out
    }
}

fn port(value: OsString) -> Result<u16, ArgsError> {
    value
        .to_str()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or(ArgsError::BadPort(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn full_and_minimal_command_lines() {
        let a = p(&[
            "--data",
            "--proxy-port",
            "3128",
            "--transparent",
            "--allow-degraded-landlock",
            "--",
            "node",
            "--x",
            "--",
        ])
        .expect("valid");
        assert_eq!(a.proxy_port, 3128);
        assert!(a.data && a.allow_degraded_landlock && a.transparent);
        assert_eq!(a.server, ["node", "--x", "--"].map(OsString::from));

        let a = p(&["--proxy-port", "65535", "--", "/bin/true"]).expect("valid");
        assert!(!a.data && !a.allow_degraded_landlock && !a.transparent);
        assert_eq!(a.server, [OsString::from("/bin/true")]);
    }

    #[test]
    fn to_args_round_trips() {
        for bits in 0..8u8 {
            let (transparent, data, allow_degraded_landlock) =
                (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let a = Args {
                proxy_port: 8443,
                transparent,
                data,
                allow_degraded_landlock,
                server: ["python3", "-m", "server", "--", "--data"]
                    .map(OsString::from)
                    .to_vec(),
            };
            assert_eq!(parse(a.to_args()), Ok(a));
        }
    }

    #[test]
    fn server_argv_may_be_any_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0xff, b'x']);
        let args = ["--proxy-port", "1", "--"]
            .map(OsString::from)
            .into_iter()
            .chain([odd.clone()]);
        assert_eq!(parse(args).expect("valid").server, [odd]);
    }

    #[test]
    fn errors_name_the_argument_at_fault() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'-', 0xff]);
        let args = ["--proxy-port", "1"]
            .map(OsString::from)
            .into_iter()
            .chain([odd.clone()]);
        assert_eq!(parse(args), Err(ArgsError::Unknown(odd)));
        assert_eq!(
            p(&["--proxy-port", "99999", "--", "x"]),
            Err(ArgsError::BadPort("99999".into()))
        );
        assert_eq!(
            p(&["--data", "--proxy-port", "1", "--data", "--", "x"]),
            Err(ArgsError::Repeated("--data"))
        );
        assert_eq!(
            p(&["--proxy-port"]),
            Err(ArgsError::MissingValue("--proxy-port"))
        );
    }

    #[test]
    fn error_messages() {
        for (args, want) in [
            (&[][..], "missing `--`"),
            (&["--proxy-port", "3128"][..], "missing `--`"),
            (&["--", "x"][..], "--proxy-port is required"),
            (&["--proxy-port", "3128", "--"][..], "no server command"),
            (&["--proxy-port", "3128", "--", ""][..], "no server command"),
            (&["--proxy-port"][..], "needs a value"),
            (&["--proxy-port", "0", "--", "x"][..], "not a port number"),
            (
                &["--proxy-port", "65536", "--", "x"][..],
                "not a port number",
            ),
            (&["--proxy-port", "+80", "--", "x"][..], "not a port number"),
            (&["--proxy-port", "", "--", "x"][..], "not a port number"),
            (
                &["--proxy-port", "1", "--proxy-port", "2", "--", "x"][..],
                "given twice",
            ),
            (
                &["--proxy-port", "1", "--data", "--data", "--", "x"][..],
                "--data given twice",
            ),
            (
                &[
                    "--transparent",
                    "--proxy-port",
                    "1",
                    "--transparent",
                    "--",
                    "x",
                ][..],
                "--transparent given twice",
            ),
            (
                &["--proxy-port", "1", "--transparent=443", "--", "x"][..],
                "unknown argument",
            ),
            (&["--proxy-port=1", "--", "x"][..], "unknown argument"),
            (
                &["--proxy-port", "1", "node"][..],
                "unknown argument \"node\"",
            ),
        ] {
            let err = p(args)
                .expect_err(&format!("{args:?} must fail"))
                .to_string();
            assert!(err.contains(want), "{args:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }
}
