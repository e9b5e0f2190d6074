//! The sockets the helper binds for a sandbox before its server starts, and transparent
//! mode's resolver file.
//!
//! The proxy listener (TCP `host:proxy_port`) is bound for every sandbox: the server may
//! connect to its proxy as its very first act, so the port must be listening before bwrap
//! runs, and a port someone else holds must stop the build (fail closed) instead of leaving
//! the sandbox talking to whoever holds it. The helper binds it, as it does the privileged
//! ports of transparent mode, and hands it over with the sandbox's other fds; the gateway
//! accepts on it.
//!
//! Some servers ignore proxy variables. For them the gateway answers DNS on the link's host
//! address (allowlisted names resolve to it) and takes the TLS connections that follow on port
//! 443, reading the host from the SNI. Ports below 1024 need privilege, so the helper binds
//! those three sockets (TCP 443, UDP 53, TCP 53) too. No NAT and no connection tracking: the
//! socket *is* the attribution.
//!
//! Each socket is bound to the link's host address and to the link itself (`SO_BINDTODEVICE`):
//! - packets arriving on another interface never reach it (the table only filters sandbox
//!   links, and Linux delivers a packet for any local address on any interface). The host's
//!   own processes still can (local delivery), but not from the sandbox's address: sending
//!   from a foreign source needs `IP_TRANSPARENT`, i.e. root. So a peer at the sandbox address
//!   is the sandbox;
//! - a socket the gateway still holds for a destroyed sandbox does not block the next sandbox
//!   in the same slot (same address, new link), and never receives its traffic: the kernel
//!   sees two sockets bound to different devices as no conflict.
//!
//! A socket bound to the same port without a device *does* conflict, on the wildcard address
//! or on the link's host address (bound before the link existed, with `IP_FREEBIND`): the
//! kernel treats a device-less bind as covering every device. Creation then fails with a
//! message saying so, and nothing of the sandbox is left. No socket here sets `SO_REUSEPORT`,
//! so nobody can share a port with one.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::firewall::Proto;
use privhelper_api::{DNS_PORT, Listeners, TLS_PORT, TransparentSockets};

/// Listen backlog of the TCP sockets (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// A socket that could not be made: which one, at which call, and why.
#[derive(Debug, thiserror::Error)]
#[error("{proto} {addr}: {call}: {source}{hint}", hint = if source.kind() == std::io::ErrorKind::AddrInUse {
    " (another socket holds this port on the wildcard address or on this one: the sandbox \
     is not started; bind host services to specific addresses, or choose another port)"
} else {
    ""
})]
pub struct SocketError {
    proto: &'static str,
    addr: SocketAddrV4,
    call: &'static str,
    source: std::io::Error,
}

/// Binds the proxy listener on `host:proxy_port` and, in transparent mode, the three sockets
/// of [`transparent`], all on `link` and close-on-exec.
pub fn bind(
    host: Ipv4Addr,
    link: &str,
    proxy_port: u16,
    transparent_mode: bool,
) -> Result<Listeners, SocketError> {
    Ok(Listeners {
        proxy: socket(host, proxy_port, link, Proto::Tcp)?,
        transparent: match transparent_mode {
            true => Some(transparent(host, link)?),
            false => None,
        },
    })
}

/// Binds TCP `host:443`, UDP `host:53` and TCP `host:53` on `link`.
fn transparent(host: Ipv4Addr, link: &str) -> Result<TransparentSockets, SocketError> {
    Ok(TransparentSockets {
        tls: socket(host, TLS_PORT, link, Proto::Tcp)?,
        dns_udp: socket(host, DNS_PORT, link, Proto::Udp)?,
        dns_tcp: socket(host, DNS_PORT, link, Proto::Tcp)?,
    })
}

fn socket(host: Ipv4Addr, port: u16, link: &str, proto: Proto) -> Result<OwnedFd, SocketError> {
    let name = match proto {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    };
    let addr = SocketAddrV4::new(host, port);
    let step = |call: &'static str| {
        move |source: std::io::Error| SocketError {
            proto: name,
            addr,
            call,
            source,
        }
    };
    // socket2 creates sockets with SOCK_CLOEXEC: nothing the helper starts inherits them.
    let socket = match proto {
        Proto::Tcp => Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)),
        Proto::Udp => Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)),
    }
    .map_err(step("socket"))?;
    if let Proto::Tcp = proto {
        // Lets a new listener bind while connections of an earlier one sit in TIME_WAIT; it
        // never lets two listeners share an address and port.
        socket
            .set_reuse_address(true)
            .map_err(step("SO_REUSEADDR"))?;
    }
    socket
        .bind_device(Some(link.as_bytes()))
        .map_err(step("SO_BINDTODEVICE"))?;
    socket.bind(&SockAddr::from(addr)).map_err(step("bind"))?;
    if let Proto::Tcp = proto {
        socket.listen(BACKLOG).map_err(step("listen"))?;
    }
    Ok(socket.into())
}

/// The sandbox's `/etc/resolv.conf`: the link's host address is its only nameserver.
pub fn resolv_conf(host: Ipv4Addr) -> String {
    format!("nameserver {host}\noptions attempts:2 timeout:1\n")
}

/// A pipe holding `data` with its write end closed, for bwrap's `--ro-bind-data`.
pub fn data_pipe(data: &[u8]) -> std::io::Result<OwnedFd> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Far below the pipe's capacity (64 KiB): the write cannot block.
    let mut rest = data;
    while !rest.is_empty() {
        let n = rustix::io::write(&write, rest)?;
        rest = &rest[n..];
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_names_only_the_host_address() {
        assert_eq!(
            resolv_conf(Ipv4Addr::new(10, 231, 0, 1)),
            "nameserver 10.231.0.1\noptions attempts:2 timeout:1\n"
        );
    }

    #[test]
    fn data_pipe_holds_the_data() {
        use std::io::Read;
        let fd = data_pipe(b"nameserver 10.231.0.1\n").unwrap();
        let mut got = String::new();
        std::fs::File::from(fd).read_to_string(&mut got).unwrap();
        assert_eq!(got, "nameserver 10.231.0.1\n");
    }
}
