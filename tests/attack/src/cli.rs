//! Command line: `gigmcp-attack <attack-name> [args...]`, `gigmcp-attack list`, `gigmcp-attack help`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Every attack: name and argument synopsis (as printed by `help`). `list` prints the names.
pub const ATTACKS: &[(&str, &str)] = &[
    // Syscall level: seccomp should kill (SIGSYS) or refuse these.
    ("unshare-user", ""),
    ("unshare-net", ""),
    ("setns", "[ns-path (default /proc/self/ns/net)]"),
    ("clone-newuser", ""),
    ("clone3", ""),
    ("mount", ""),
    ("fsopen", ""),
    ("open-tree", ""),
    ("move-mount", ""),
    ("pivot-root", ""),
    ("chroot", ""),
    ("ptrace-sibling", ""),
    ("process-vm-readv", ""),
    ("bpf", ""),
    ("perf-event-open", ""),
    ("keyctl", ""),
    ("io-uring-setup", ""),
    ("userfaultfd", ""),
    ("open-by-handle-at", ""),
    ("x32-syscall", ""),
    ("kexec-load", ""),
    ("init-module", ""),
    ("reboot", ""),
    ("settimeofday", ""),
    // Isolation level: these should fail with an errno, or report observations.
    ("read-file", "<path>"),
    ("write-rootfs", "<path>"),
    ("list-processes", ""),
    ("list-interfaces", ""),
    (
        "add-address",
        "[iface (default eth0)] [ipv4/prefix (default 203.0.113.77/32)]",
    ),
    (
        "add-route",
        "[iface (default eth0)] [ipv4/prefix (default 1.2.3.0/24)]",
    ),
    ("raw-socket", ""),
    (
        "spoof-source",
        "<src-ip> <dst-ip> <port> [timeout_ms (default 2000)]",
    ),
    ("connect", "<ip> <port> [timeout_ms (default 2000)]"),
    ("udp-send", "<ip> <port>"),
    ("udp-roundtrip", "<ip> <port> [timeout_ms (default 2000)]"),
    ("tcp-roundtrip", "<ip> <port> [timeout_ms (default 2000)]"),
    ("tcp-fastopen", "<ip> <port>"),
    ("mptcp-connect", "<ip> <port> [timeout_ms (default 2000)]"),
    ("dbus-system", ""),
    ("env", ""),
    ("cwd", ""),
    ("gain-capability", ""),
    ("fork-bomb", "<n>"),
    ("memory-hog", "<mib>"),
    ("fd-limit", "<n>"),
    // The sandbox's pid 1 (bwrap) and the kernel keyrings.
    ("pid1-cmdline", ""),
    ("pid1-environ", ""),
    ("pid1-mem", ""),
    ("pid1-fds", ""),
    ("signal-pid1", "<signal number>"),
    ("pidfd-signal-pid1", "<signal number>"),
    ("pidfd-getfd-pid1", ""),
    ("session-keyrings", ""),
    // Helpers for tests that need a live or trivial server.
    ("ping-sleep", "<seconds>"),
    ("echo-stdio", ""),
    ("hello", ""),
];

pub const DEFAULT_TIMEOUT_MS: u64 = 2000;

/// An IPv4 prefix such as `203.0.113.77/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl std::str::FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr = addr
            .parse()
            .map_err(|_| format!("not an IPv4 address: {addr:?}"))?;
        let len = len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("not a prefix length (0-32): {len:?}"))?;
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One attack with its parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attack {
    UnshareUser,
    UnshareNet,
    Setns {
        path: String,
    },
    CloneNewuser,
    Clone3,
    Mount,
    Fsopen,
    OpenTree,
    MoveMount,
    PivotRoot,
    Chroot,
    PtraceSibling,
    ProcessVmReadv,
    Bpf,
    PerfEventOpen,
    Keyctl,
    IoUringSetup,
    Userfaultfd,
    OpenByHandleAt,
    X32Syscall,
    KexecLoad,
    InitModule,
    Reboot,
    Settimeofday,
    ReadFile {
        path: String,
    },
    WriteRootfs {
        path: String,
    },
    ListProcesses,
    ListInterfaces,
    AddAddress {
        iface: String,
        prefix: Ipv4Prefix,
    },
    AddRoute {
        iface: String,
        dst: Ipv4Prefix,
    },
    RawSocket,
    SpoofSource {
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    Connect {
        ip: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    UdpSend {
        ip: IpAddr,
        port: u16,
    },
    UdpRoundtrip {
        ip: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    TcpRoundtrip {
        ip: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    TcpFastopen {
        ip: IpAddr,
        port: u16,
    },
    MptcpConnect {
        ip: IpAddr,
        port: u16,
        timeout_ms: u64,
    },
    DbusSystem,
    Env,
    /// Prints the working directory the server started in.
    Cwd,
    GainCapability,
    ForkBomb {
        n: u32,
    },
    MemoryHog {
        mib: u64,
    },
    /// Reports `RLIMIT_NOFILE`, tries to raise it to `n`, then opens files until refused.
    FdLimit {
        n: u64,
    },
    Pid1Cmdline,
    Pid1Environ,
    Pid1Mem,
    Pid1Fds,
    SignalPid1 {
        signal: i32,
    },
    PidfdSignalPid1 {
        signal: i32,
    },
    PidfdGetfdPid1,
    SessionKeyrings,
    PingSleep {
        seconds: u64,
    },
    EchoStdio,
    Hello,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    List,
    Help,
    Run { name: String, attack: Attack },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NoAttack,
    Unknown(String),
    Usage { name: String, message: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAttack => write!(
                f,
                "usage: gigmcp-attack <attack-name> [args...] | list | help"
            ),
            Self::Unknown(name) => write!(
                f,
                "unknown attack {name:?}; `gigmcp-attack list` prints the attack names"
            ),
            Self::Usage { name, message } => {
                let synopsis = ATTACKS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, s)| s);
                write!(
                    f,
                    "{name}: {message}; usage: gigmcp-attack {name} {synopsis}"
                )
            }
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, ParseError> {
    let Some((name, rest)) = args.split_first() else {
        return Err(ParseError::NoAttack);
    };
    match name.as_str() {
        "list" => return Ok(Command::List),
        "help" | "--help" | "-h" => return Ok(Command::Help),
        _ => {}
    }
    if !ATTACKS.iter().any(|(n, _)| n == name) {
        return Err(ParseError::Unknown(name.clone()));
    }
    let mut a = Args {
        name,
        rest,
        next: 0,
    };
    let attack = match name.as_str() {
        "unshare-user" => Attack::UnshareUser,
        "unshare-net" => Attack::UnshareNet,
        "setns" => Attack::Setns {
            path: a.optional("/proc/self/ns/net")?,
        },
        "clone-newuser" => Attack::CloneNewuser,
        "clone3" => Attack::Clone3,
        "mount" => Attack::Mount,
        "fsopen" => Attack::Fsopen,
        "open-tree" => Attack::OpenTree,
        "move-mount" => Attack::MoveMount,
        "pivot-root" => Attack::PivotRoot,
        "chroot" => Attack::Chroot,
        "ptrace-sibling" => Attack::PtraceSibling,
        "process-vm-readv" => Attack::ProcessVmReadv,
        "bpf" => Attack::Bpf,
        "perf-event-open" => Attack::PerfEventOpen,
        "keyctl" => Attack::Keyctl,
        "io-uring-setup" => Attack::IoUringSetup,
        "userfaultfd" => Attack::Userfaultfd,
        "open-by-handle-at" => Attack::OpenByHandleAt,
        "x32-syscall" => Attack::X32Syscall,
        "kexec-load" => Attack::KexecLoad,
        "init-module" => Attack::InitModule,
        "reboot" => Attack::Reboot,
        "settimeofday" => Attack::Settimeofday,
        "read-file" => Attack::ReadFile {
            path: a.required("path")?,
        },
        "write-rootfs" => Attack::WriteRootfs {
            path: a.required("path")?,
        },
        "list-processes" => Attack::ListProcesses,
        "list-interfaces" => Attack::ListInterfaces,
        "add-address" => Attack::AddAddress {
            iface: a.optional("eth0")?,
            prefix: a.parsed_or("ipv4/prefix", "203.0.113.77/32")?,
        },
        "add-route" => Attack::AddRoute {
            iface: a.optional("eth0")?,
            dst: a.parsed_or("ipv4/prefix", "1.2.3.0/24")?,
        },
        "raw-socket" => Attack::RawSocket,
        "spoof-source" => {
            let src: IpAddr = a.parsed("src-ip")?;
            let dst: IpAddr = a.parsed("dst-ip")?;
            if src.is_ipv4() != dst.is_ipv4() {
                return Err(a.usage("src-ip and dst-ip must be the same address family".into()));
            }
            Attack::SpoofSource {
                src,
                dst,
                port: a.parsed("port")?,
                timeout_ms: a.parsed_or("timeout_ms", &DEFAULT_TIMEOUT_MS.to_string())?,
            }
        }
        "connect" => Attack::Connect {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
            timeout_ms: a.parsed_or("timeout_ms", &DEFAULT_TIMEOUT_MS.to_string())?,
        },
        "udp-send" => Attack::UdpSend {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
        },
        "udp-roundtrip" => Attack::UdpRoundtrip {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
            timeout_ms: a.parsed_or("timeout_ms", &DEFAULT_TIMEOUT_MS.to_string())?,
        },
        "tcp-roundtrip" => Attack::TcpRoundtrip {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
            timeout_ms: a.parsed_or("timeout_ms", &DEFAULT_TIMEOUT_MS.to_string())?,
        },
        "tcp-fastopen" => Attack::TcpFastopen {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
        },
        "mptcp-connect" => Attack::MptcpConnect {
            ip: a.parsed("ip")?,
            port: a.parsed("port")?,
            timeout_ms: a.parsed_or("timeout_ms", &DEFAULT_TIMEOUT_MS.to_string())?,
        },
        "dbus-system" => Attack::DbusSystem,
        "env" => Attack::Env,
        "cwd" => Attack::Cwd,
        "gain-capability" => Attack::GainCapability,
        "fork-bomb" => Attack::ForkBomb { n: a.parsed("n")? },
        "memory-hog" => Attack::MemoryHog {
            mib: a.parsed("mib")?,
        },
        "fd-limit" => Attack::FdLimit { n: a.parsed("n")? },
        "pid1-cmdline" => Attack::Pid1Cmdline,
        "pid1-environ" => Attack::Pid1Environ,
        "pid1-mem" => Attack::Pid1Mem,
        "pid1-fds" => Attack::Pid1Fds,
        "signal-pid1" => Attack::SignalPid1 {
            signal: a.parsed("signal number")?,
        },
        "pidfd-signal-pid1" => Attack::PidfdSignalPid1 {
            signal: a.parsed("signal number")?,
        },
        "pidfd-getfd-pid1" => Attack::PidfdGetfdPid1,
        "session-keyrings" => Attack::SessionKeyrings,
        "ping-sleep" => Attack::PingSleep {
            seconds: a.parsed("seconds")?,
        },
        "echo-stdio" => Attack::EchoStdio,
        "hello" => Attack::Hello,
        other => return Err(ParseError::Unknown(other.to_owned())),
    };
    a.finish()?;
    Ok(Command::Run {
        name: name.clone(),
        attack,
    })
}

/// Positional argument cursor for one attack.
struct Args<'a> {
    name: &'a str,
    rest: &'a [String],
    next: usize,
}

impl Args<'_> {
    fn usage(&self, message: String) -> ParseError {
        ParseError::Usage {
            name: self.name.to_owned(),
            message,
        }
    }

    fn take(&mut self) -> Option<&str> {
        let arg = self.rest.get(self.next)?;
        self.next += 1;
        Some(arg)
    }

    fn required(&mut self, what: &str) -> Result<String, ParseError> {
        match self.take() {
            Some(v) => Ok(v.to_owned()),
            None => Err(self.usage(format!("missing <{what}>"))),
        }
    }

    fn optional(&mut self, default: &str) -> Result<String, ParseError> {
        Ok(self.take().unwrap_or(default).to_owned())
    }

    fn parse_value<T: std::str::FromStr>(&self, what: &str, v: &str) -> Result<T, ParseError> {
        v.parse()
            .map_err(|_| self.usage(format!("invalid <{what}>: {v:?}")))
    }

    fn parsed<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        let v = self.required(what)?;
        self.parse_value(what, &v)
    }

    fn parsed_or<T: std::str::FromStr>(
        &mut self,
        what: &str,
        default: &str,
    ) -> Result<T, ParseError> {
        let v = self.optional(default)?;
        self.parse_value(what, &v)
    }

    fn finish(&self) -> Result<(), ParseError> {
        match self.rest.get(self.next..) {
            Some([]) | None => Ok(()),
            Some(extra) => Err(self.usage(format!("unexpected arguments {extra:?}"))),
        }
    }
}

#[cfg(test)]
mod tests;
