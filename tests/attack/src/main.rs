//! `gigmcp-attack`: the attack program of the sandbox escape test suite.
//!
//! The privileged tests copy this binary (and its shared libraries) into a minimal rootfs, run
//! it inside a Gig'MCP sandbox, and parse the single line it prints:
//!
//! ```text
//! ATTACK <name> BLOCKED <ERRNO-NAME>    the operation failed with that errno
//! ATTACK <name> SUCCEEDED <detail>     the attack worked: a security failure
//! ATTACK <name> RESULT <detail>        an observation the test checks itself
//! ```
//!
//! If seccomp kills the process (SIGSYS), nothing is printed. Exit status: 0 after the line,
//! 2 for an unknown attack or bad arguments, 3 when refused for host safety (see
//! [`host_safety`]).
//!
//! Unsafe code: the workspace denies `unsafe`, but this crate's whole purpose is to issue raw,
//! forbidden system calls (clone3, pivot_root, bpf, process_vm_readv, x32 numbers, ...) with
//! hand-built arguments, which no safe wrapper offers. It is a test tool that never runs in
//! the gateway or the helper. Every unsafe block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod child;
mod cli;
mod errno;
mod isolation;
mod net;
mod pid1;
mod report;
mod sys;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use cli::{ATTACKS, Attack, Command};
use report::Outcome;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::List) => {
            let mut out = String::new();
            for (name, _) in ATTACKS {
                out.push_str(name);
                out.push('\n');
            }
            emit(&out)
        }
        Ok(Command::Help) => {
            let mut out =
                String::from("usage: gigmcp-attack <attack-name> [args...] | list | help\n");
            for (name, synopsis) in ATTACKS {
                out.push_str(format!("  {name} {synopsis}").trim_end());
                out.push('\n');
            }
            emit(&out)
        }
        Ok(Command::Run { name, attack }) => {
            if let Some(why) = host_safety(&attack) {
                eprintln!("gigmcp-attack: refusing {name}: {why}");
                return ExitCode::from(3);
            }
            match run(attack) {
                Done::Report(outcome) => emit(&format!("{}\n", report::line(&name, &outcome))),
                Done::Exit(code) => code,
            }
        }
        Err(e) => {
            eprintln!("gigmcp-attack: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `text` to stdout and flushes it; exit status 1 if that fails.
fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gigmcp-attack: writing stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// Attacks that, if they worked as the real host root, would change the host: refused there.
/// Inside a sandbox (uid 65534 in a private user namespace) nothing is ever refused.
fn host_safety(attack: &Attack) -> Option<&'static str> {
    match attack {
        Attack::Mount | Attack::PivotRoot
            if child::is_host_root() && child::in_pid1_mount_namespace() =>
        {
            Some(
                "host root in the host mount namespace, or one it cannot tell apart (run it \
                 in a private one, e.g. `unshare -U -r -m`)",
            )
        }
        Attack::SignalPid1 { .. } | Attack::PidfdSignalPid1 { .. } if child::is_host_root() => {
            Some("host root in the initial user namespace: pid 1 would be the host's init")
        }
        Attack::Reboot | Attack::Settimeofday | Attack::KexecLoad if child::is_host_root() => {
            Some("host root in the initial user namespace: it would change global kernel state")
        }
        Attack::AddAddress { .. } | Attack::AddRoute { .. } if child::is_host_root() => Some(
            "host root in the initial user namespace: it would reconfigure a host network \
             namespace (run it under `unshare -U -r -n`)",
        ),
        _ => None,
    }
}

/// How an attack ended: a line to report, or (helpers doing their own output) an exit status.
#[derive(Debug)]
enum Done {
    Report(Outcome),
    Exit(ExitCode),
}

/// Runs one attack.
fn run(attack: Attack) -> Done {
    Done::Report(match attack {
        Attack::UnshareUser => sys::unshare_user(),
        Attack::UnshareNet => sys::unshare_net(),
        Attack::Setns { path } => sys::setns(&path),
        Attack::CloneNewuser => sys::clone_newuser(),
        Attack::Clone3 => sys::clone3(),
        Attack::Mount => sys::mount(),
        Attack::Fsopen => sys::fsopen(),
        Attack::OpenTree => sys::open_tree(),
        Attack::MoveMount => sys::move_mount(),
        Attack::PivotRoot => sys::pivot_root(),
        Attack::Chroot => sys::chroot(),
        Attack::PtraceSibling => sys::ptrace_sibling(),
        Attack::ProcessVmReadv => sys::process_vm_readv(),
        Attack::Bpf => sys::bpf(),
        Attack::PerfEventOpen => sys::perf_event_open(),
        Attack::Keyctl => sys::keyctl(),
        Attack::IoUringSetup => sys::io_uring_setup(),
        Attack::Userfaultfd => sys::userfaultfd(),
        Attack::OpenByHandleAt => sys::open_by_handle_at(),
        Attack::X32Syscall => sys::x32_syscall(),
        Attack::KexecLoad => sys::kexec_load(),
        Attack::InitModule => sys::init_module(),
        Attack::Reboot => sys::reboot(),
        Attack::Settimeofday => sys::settimeofday(),
        Attack::ReadFile { path } => isolation::read_file(&path),
        Attack::WriteRootfs { path } => isolation::write_rootfs(&path),
        Attack::ListProcesses => isolation::list_processes(),
        Attack::ListInterfaces => isolation::list_interfaces(),
        Attack::AddAddress { iface, prefix } => net::add_address(&iface, prefix),
        Attack::AddRoute { iface, dst } => net::add_route(&iface, dst),
        Attack::RawSocket => net::raw_socket(),
        Attack::SpoofSource {
            src,
            dst,
            port,
            timeout_ms,
        } => net::spoof_source(src, dst, port, timeout_ms),
        Attack::Connect {
            ip,
            port,
            timeout_ms,
        } => net::connect(ip, port, timeout_ms),
        Attack::UdpSend { ip, port } => net::udp_send(ip, port),
        Attack::UdpRoundtrip {
            ip,
            port,
            timeout_ms,
        } => net::udp_roundtrip(ip, port, timeout_ms),
        Attack::TcpRoundtrip {
            ip,
            port,
            timeout_ms,
        } => net::tcp_roundtrip(ip, port, timeout_ms),
        Attack::TcpFastopen { ip, port } => net::tcp_fastopen(ip, port),
        Attack::MptcpConnect {
            ip,
            port,
            timeout_ms,
        } => net::mptcp_connect(ip, port, timeout_ms),
        Attack::DbusSystem => net::dbus_system(),
        Attack::Env => isolation::env(),
        Attack::Cwd => isolation::cwd(),
        Attack::GainCapability => isolation::gain_capability(),
        Attack::ForkBomb { n } => isolation::fork_bomb(n),
        Attack::MemoryHog { mib } => isolation::memory_hog(mib),
        Attack::FdLimit { n } => isolation::fd_limit(n),
        Attack::Pid1Cmdline => pid1::pid1_cmdline(),
        Attack::Pid1Environ => pid1::pid1_environ(),
        Attack::Pid1Mem => pid1::pid1_mem(),
        Attack::Pid1Fds => pid1::pid1_fds(),
        Attack::SignalPid1 { signal } => pid1::signal_pid1(signal),
        Attack::PidfdSignalPid1 { signal } => pid1::pidfd_signal_pid1(signal),
        Attack::PidfdGetfdPid1 => pid1::pidfd_getfd_pid1(),
        Attack::SessionKeyrings => pid1::session_keyrings(),
        Attack::PingSleep { seconds } => {
            let ready = report::line("ping-sleep", &Outcome::Result("ready".into()));
            let code = emit(&format!("{ready}\n"));
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            return Done::Exit(code);
        }
        Attack::EchoStdio => return Done::Exit(echo_stdio()),
        Attack::Hello => return Done::Exit(emit("hello from sandbox\n")),
    })
}

/// Echoes stdin lines to stdout as `echo: <line>`, flushing each, until EOF.
fn echo_stdio() -> ExitCode {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("echo-stdio: reading stdin: {e}");
                return ExitCode::from(1);
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let written = out
            .write_all(b"echo: ")
            .and_then(|()| out.write_all(&line))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            eprintln!("echo-stdio: writing stdout: {e}");
            return ExitCode::from(1);
        }
    }
}
