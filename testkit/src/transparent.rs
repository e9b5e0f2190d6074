//! Transparent-mode sandboxes for the helper's tests: the attack program as a sandbox, a
//! sleeper, one attack run to its verdict, and one-shot TCP and UDP servers on the sockets the
//! helper hands over (the proxy listener and transparent mode's three), with non-blocking
//! checks that nothing arrived.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use privhelper_api::{Listeners, PrivHelperProxy, SandboxInfo, SandboxSpec};

use crate::helper::Harness;

/// What the attack program sends in its probes.
pub const PROBE: &[u8] = b"gigmcp-attack-probe";

/// A transparent sandbox running the attack program with `args`.
pub fn transparent(h: &Harness, rootfs: &str, args: &[&str]) -> SandboxSpec {
    let mut argv = vec!["/bin/gigmcp-attack"];
    argv.extend_from_slice(args);
    let mut spec = h.spec(rootfs, &argv);
    spec.transparent = true;
    spec
}

/// A sandbox that only sleeps, transparent or not.
pub fn sleeper(h: &Harness, rootfs: &str, transparent_mode: bool) -> SandboxSpec {
    let mut spec = h.spec(rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]);
    spec.transparent = transparent_mode;
    spec
}

/// Runs one attack in a fresh sandbox. `serve` gets the sandbox and the sockets the helper bound
/// for it (listening since before the attack started) as soon as it exists; its thread's result is returned with the attack's verdict (the line
/// without `ATTACK <name> `). Returns once the sandbox is gone and its slot free again.
pub async fn run<T: Send + 'static>(
    client: &PrivHelperProxy<'static>,
    spec: SandboxSpec,
    serve: impl FnOnce(&SandboxInfo, Listeners) -> JoinHandle<T>,
) -> (SandboxInfo, String, T) {
    let mut exits = client.receive_sandbox_exited().await.unwrap();
    let (info, stdin, stdout, stderr, _pidfd, sockets) =
        client.create_sandbox(&spec).await.expect("create sandbox");
    let sockets = Listeners::from_reply(sockets).expect("1 or 4 sockets");
    assert_eq!(
        sockets.transparent.is_some(),
        spec.transparent,
        "transparent sockets iff transparent"
    );
    let served = serve(&info, sockets);
    let out = crate::helper::read_all(stdout, Duration::from_secs(60));
    let err = crate::helper::read_all(stderr, Duration::from_secs(5));
    drop(stdin);
    loop {
        let signal = tokio::time::timeout(Duration::from_secs(60), exits.next())
            .await
            .expect("no SandboxExited signal")
            .expect("signal stream ended");
        let args = signal.args().unwrap();
        if args.id == info.id {
            assert_eq!(
                args.code,
                0,
                "exit {}: {}",
                args.code,
                String::from_utf8_lossy(&err)
            );
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    let name = &spec.argv[1];
    let verdict = text
        .strip_prefix(&format!("ATTACK {name} "))
        .unwrap_or_else(|| panic!("{name}: unexpected output {text:?}"))
        .to_owned();
    (info, verdict, served.join().expect("server thread"))
}

/// Accepts one connection within `timeout`, reads the probe and answers `reply`. The peer, or
/// `None` if nobody came.
pub fn serve_tcp(
    fd: OwnedFd,
    reply: &'static [u8],
    timeout: Duration,
) -> JoinHandle<Option<SocketAddr>> {
    let listener = TcpListener::from(fd);
    std::thread::spawn(move || {
        let (mut stream, peer) = accept_within(&listener, timeout)?;
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut probe = vec![0u8; PROBE.len()];
        stream.read_exact(&mut probe).unwrap();
        assert_eq!(probe, PROBE);
        stream.write_all(reply).unwrap();
        Some(peer)
    })
}

/// Receives one datagram within `timeout` and answers `reply`: the sender, or `None`.
pub fn serve_udp(
    fd: OwnedFd,
    reply: &'static [u8],
    timeout: Duration,
) -> JoinHandle<Option<SocketAddr>> {
    let socket = UdpSocket::from(fd);
    std::thread::spawn(move || {
        socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 512];
        let (n, peer) = socket.recv_from(&mut buf).ok()?;
        assert_eq!(&buf[..n], PROBE);
        socket.send_to(reply, peer).unwrap();
        Some(peer)
    })
}

/// Accepts one connection within `timeout`, polling without blocking.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok(conn) => return Some(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// Nothing queued on a listener (checked without blocking).
pub fn nothing_arrived_tcp(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Nothing queued on a UDP socket (checked without blocking).
pub fn nothing_arrived_udp(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    matches!(socket.recv_from(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A server thread with nothing to do, for sockets a probe must not reach.
pub fn done() -> JoinHandle<()> {
    std::thread::spawn(|| ())
}
