//! Child processes tied to the test process: killed and reaped when their guard drops (also
//! while a panic unwinds), and killed by the kernel if the test process dies first.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process, and
//! test threads (and tokio's blocking threads) come and go. So every tied child is forked by one
//! launcher thread that lives as long as the test process.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Reply = mpsc::Sender<std::io::Result<Child>>;

fn launcher() -> &'static Mutex<mpsc::Sender<(Command, Reply)>> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<(Command, Reply)>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, Reply)>();
        std::thread::Builder::new()
            .name("testkit-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the launcher thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it dies with the test process, optionally inside network namespace
/// `netns` (entered between fork and exec, so nothing else in the test changes namespace).
pub fn spawn_tied(mut cmd: Command, netns: Option<BorrowedFd<'_>>) -> std::io::Result<Tied> {
    let parent = std::process::id() as libc::pid_t;
    let netns = netns.map(|fd| fd.as_raw_fd());
    prepare(&mut cmd, parent, netns);
    let (tx, rx) = mpsc::channel();
    launcher()
        .lock()
        .expect("launcher lock")
        .send((cmd, tx))
        .expect("launcher thread alive");
    // The caller's borrow of `netns` lasts until here, so the fd stays open through the fork.
    let child = rx.recv().expect("launcher thread replied")?;
    Ok(Tied(Some(child)))
}

#[allow(unsafe_code)]
fn prepare(cmd: &mut Command, parent: libc::pid_t, netns: Option<libc::c_int>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (prctl, getppid, setns) on plain integers; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test may have died before prctl took effect: then nobody would send it.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A tied child: SIGKILLed and reaped on drop unless already reaped.
#[derive(Debug)]
pub struct Tied(Option<Child>);

impl Tied {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child not yet reaped")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child not yet reaped").id()
    }

    /// SIGTERM, then up to `grace` for an orderly exit, then SIGKILL; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL (no cleanup of its own can run), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `gigmcpd` (the binary at `bin`) on `config` with the master key in `key_file`, inside the
/// calling thread's network namespace (where a privileged test's helper and pool are), once it
/// logged "gigmcpd ready". Its stderr is echoed as `[gigmcpd] …` lines, so a failing test shows
/// what the daemon said; a daemon that exits or stays silent for 30 s fails the test.
pub fn start_gigmcpd(
    bin: &std::path::Path,
    config: &std::path::Path,
    key_file: &std::path::Path,
) -> Tied {
    use std::io::BufRead;
    use std::os::fd::AsFd;
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("--master-key-file")
        .arg(key_file)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped());
    let netns = crate::netns::Netns::current();
    let mut daemon = spawn_tied(cmd, Some(netns.as_fd())).expect("spawn gigmcpd");
    let stderr = daemon.child().stderr.take().expect("gigmcpd's stderr");
    let (ready_tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("gigmcpd ready") {
                let _ = ready_tx.send(());
            }
            eprintln!("[gigmcpd] {line}");
        }
    });
    ready
        .recv_timeout(Duration::from_secs(30))
        .expect("gigmcpd did not become ready");
    daemon
}
