//! Network attacks: reconfiguring the sandbox's netns, raw sockets, spoofing, egress probes.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::errno::Errno;
use crate::report::Outcome;

/// Wraps a just-created descriptor, or returns errno if creation failed (-1).
fn owned(fd: libc::c_int) -> Result<OwnedFd, Errno> {
    if fd == -1 {
        return Err(Errno::last());
    }
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: socket takes integers only.
    owned(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })
}

fn zero_or_errno(r: libc::c_int) -> Result<(), Errno> {
    if r == -1 { Err(Errno::last()) } else { Ok(()) }
}

/// An IPv4 or IPv6 socket address in its C form.
enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SockAddr {
    fn new(ip: IpAddr, port: u16) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                sin_zero: [0; 8],
            }),
            IpAddr::V6(v6) => Self::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: port.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            }),
        }
    }

    fn family(&self) -> libc::c_int {
        match self {
            Self::V4(_) => libc::AF_INET,
            Self::V6(_) => libc::AF_INET6,
        }
    }

    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            Self::V4(a) => (
                std::ptr::from_ref(a).cast(),
                std::mem::size_of_val(a) as libc::socklen_t,
            ),
            Self::V6(a) => (
                std::ptr::from_ref(a).cast(),
                std::mem::size_of_val(a) as libc::socklen_t,
            ),
        }
    }
}

fn set_int_opt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: value is a readable c_int of the length passed.
    zero_or_errno(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// Non-blocking connect, then poll for up to `timeout_ms`; ETIMEDOUT when it expires.
fn connect_with_timeout(fd: &OwnedFd, addr: &SockAddr, timeout_ms: u64) -> Result<(), Errno> {
    let (sa, len) = addr.as_ptr();
    // SAFETY: sa points at a live sockaddr of length len.
    if unsafe { libc::connect(fd.as_raw_fd(), sa, len) } == 0 {
        return Ok(());
    }
    let err = Errno::last();
    if err.0 != libc::EINPROGRESS {
        return Err(err);
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Errno(libc::ETIMEDOUT));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: pfd is one valid, writable pollfd.
        match unsafe { libc::poll(&raw mut pfd, 1, ms) } {
            -1 if Errno::last().0 == libc::EINTR => continue,
            -1 => return Err(Errno::last()),
            0 => continue,
            _ => break,
        }
    }
    let mut so_error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: so_error and len are valid, writable and len matches so_error's size.
    zero_or_errno(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut so_error).cast(),
            &raw mut len,
        )
    })?;
    if so_error == 0 {
        Ok(())
    } else {
        Err(Errno(so_error))
    }
}

fn tcp_socket(addr: &SockAddr) -> Result<OwnedFd, Errno> {
    socket(addr.family(), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
}

pub fn connect(ip: IpAddr, port: u16, timeout_ms: u64) -> Outcome {
    let addr = SockAddr::new(ip, port);
    let result = tcp_socket(&addr).and_then(|fd| connect_with_timeout(&fd, &addr, timeout_ms));
    match result {
        Ok(()) => Outcome::Succeeded(format!("connected to {}", fmt_endpoint(ip, port))),
        Err(e) => Outcome::Blocked(e),
    }
}

pub fn spoof_source(src: IpAddr, dst: IpAddr, port: u16, timeout_ms: u64) -> Outcome {
    let dst_addr = SockAddr::new(dst, port);
    let fd = match tcp_socket(&dst_addr) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Blocked(e),
    };
    // IP_FREEBIND lets us bind an address this netns does not own; IP_TRANSPARENT needs
    // CAP_NET_ADMIN/CAP_NET_RAW and is expected to fail (ignored).
    if let Err(e) = set_int_opt(&fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1) {
        eprintln!("spoof-source: IP_FREEBIND: {e}");
    }
    if let Err(e) = set_int_opt(&fd, libc::IPPROTO_IP, libc::IP_TRANSPARENT, 1) {
        eprintln!("spoof-source: IP_TRANSPARENT: {e} (ignored)");
    }
    let src_addr = SockAddr::new(src, 0);
    let (sa, len) = src_addr.as_ptr();
    // SAFETY: sa points at a live sockaddr of length len.
    if let Err(e) = zero_or_errno(unsafe { libc::bind(fd.as_raw_fd(), sa, len) }) {
        eprintln!("spoof-source: bind {src}: {e}");
        return Outcome::Blocked(e);
    }
    match connect_with_timeout(&fd, &dst_addr, timeout_ms) {
        Ok(()) => Outcome::Succeeded(format!(
            "connected to {} from {src}",
            fmt_endpoint(dst, port)
        )),
        Err(e) => Outcome::Blocked(e),
    }
}

pub const UDP_PROBE: &[u8] = b"gigmcp-attack-probe";

pub fn udp_send(ip: IpAddr, port: u16) -> Outcome {
    let addr = SockAddr::new(ip, port);
    let fd = match socket(addr.family(), libc::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Blocked(e),
    };
    let (sa, len) = addr.as_ptr();
    // SAFETY: the payload is a readable static buffer; sa points at a live sockaddr of length len.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            UDP_PROBE.as_ptr().cast(),
            UDP_PROBE.len(),
            0,
            sa,
            len,
        )
    };
    if r == -1 {
        return Outcome::Blocked(Errno::last());
    }
    Outcome::Result(format!("sent {r} bytes to {}", fmt_endpoint(ip, port)))
}

fn io_errno(e: &std::io::Error) -> Errno {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Errno(libc::ETIMEDOUT),
        _ => Errno(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Sends [`UDP_PROBE`] from a connected UDP socket (so only the target's answer counts) and
/// reports the first reply within `timeout_ms`: `RESULT reply <bytes>`.
pub fn udp_roundtrip(ip: IpAddr, port: u16, timeout_ms: u64) -> Outcome {
    let any: IpAddr = if ip.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let result = (|| {
        let socket = std::net::UdpSocket::bind((any, 0))?;
        socket.connect((ip, port))?;
        socket.set_read_timeout(Some(Duration::from_millis(timeout_ms.max(1))))?;
        socket.send(UDP_PROBE)?;
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf)?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    })();
    match result {
        Ok(reply) => Outcome::Result(format!("reply {}", crate::report::escape_bytes(&reply))),
        Err(e) => Outcome::Blocked(io_errno(&e)),
    }
}

/// Connects over TCP, sends [`UDP_PROBE`] and reports what comes back within `timeout_ms`
/// (until the peer closes or 512 bytes): `RESULT reply <bytes>`.
pub fn tcp_roundtrip(ip: IpAddr, port: u16, timeout_ms: u64) -> Outcome {
    use std::io::{Read, Write};
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let result = (|| {
        let mut stream =
            std::net::TcpStream::connect_timeout(&std::net::SocketAddr::new(ip, port), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(UDP_PROBE)?;
        let mut reply = Vec::new();
        stream.take(512).read_to_end(&mut reply)?;
        Ok::<_, std::io::Error>(reply)
    })();
    match result {
        Ok(reply) => Outcome::Result(format!("reply {}", crate::report::escape_bytes(&reply))),
        Err(e) => Outcome::Blocked(io_errno(&e)),
    }
}

/// TCP Fast Open to ip:port with `sendto(MSG_FASTOPEN)`: the connect happens inside the send,
/// where landlock's TCP rule does not look (seccomp kills it).
pub fn tcp_fastopen(ip: IpAddr, port: u16) -> Outcome {
    let addr = SockAddr::new(ip, port);
    let fd = match socket(addr.family(), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Blocked(e),
    };
    let (sa, len) = addr.as_ptr();
    let data = b"gigmcp-attack";
    // SAFETY: data and sa point at live buffers of the lengths passed.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            sa,
            len,
        )
    };
    match r {
        -1 => Outcome::Blocked(Errno::last()),
        n => Outcome::Succeeded(format!(
            "sent {n} bytes with the SYN to {}",
            fmt_endpoint(ip, port)
        )),
    }
}

/// An MPTCP connection to ip:port: landlock's TCP rule does not apply to MPTCP sockets
/// (seccomp kills the socket).
pub fn mptcp_connect(ip: IpAddr, port: u16, timeout_ms: u64) -> Outcome {
    const IPPROTO_MPTCP: libc::c_int = 262;
    let addr = SockAddr::new(ip, port);
    let result = socket(
        addr.family(),
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
        IPPROTO_MPTCP,
    )
    .and_then(|fd| connect_with_timeout(&fd, &addr, timeout_ms));
    match result {
        Ok(()) => Outcome::Succeeded(format!("MPTCP to {}", fmt_endpoint(ip, port))),
        Err(e) => Outcome::Blocked(e),
    }
}

fn fmt_endpoint(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

pub fn raw_socket() -> Outcome {
    let attempts = [
        (
            "AF_INET/SOCK_RAW",
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
        ),
        (
            "AF_PACKET/SOCK_RAW",
            socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        ),
    ];
    let worked: Vec<&str> = attempts
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(what, _)| *what)
        .collect();
    for (what, r) in &attempts {
        if let Err(e) = r {
            eprintln!("raw-socket: {what}: {e}");
        }
    }
    match attempts.iter().find_map(|(_, r)| r.as_ref().err()) {
        Some(e) if worked.is_empty() => Outcome::Blocked(*e),
        _ => Outcome::Succeeded(worked.join(",")),
    }
}

pub const DBUS_SYSTEM_SOCKETS: [&str; 2] = [
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
];

pub fn dbus_system() -> Outcome {
    let mut first_err = None;
    for path in DBUS_SYSTEM_SOCKETS {
        match UnixStream::connect(path) {
            Ok(_) => return Outcome::Succeeded(format!("connected to {path}")),
            Err(e) => {
                let e = Errno::from_io(&e);
                eprintln!("dbus-system: {path}: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    Outcome::Blocked(first_err.unwrap_or(Errno(libc::ENOENT)))
}

// ---- rtnetlink ----------------------------------------------------------------------------

mod netlink;

pub use netlink::{add_address, add_route};
