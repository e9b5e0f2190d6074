//! Reconfiguring the sandbox's network namespace from inside: rtnetlink messages built here and
//! the SIOCSIFADDR ioctl, each trying to add an address or a route to the sandbox's link.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use super::{socket, zero_or_errno};
use crate::cli::Ipv4Prefix;
use crate::errno::Errno;
use crate::report::Outcome;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends an rtattr (length, type, payload, padding).
fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// A complete netlink message: header (sequence 1, port 0) followed by `body`.
fn nl_message(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg
}

fn ifaddr_body(prefix: Ipv4Prefix, ifindex: u32) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, prefix.len, 0, 0];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    push_attr(&mut body, IFA_LOCAL, &prefix.addr.octets());
    push_attr(&mut body, IFA_ADDRESS, &prefix.addr.octets());
    body
}

fn route_body(dst: Ipv4Prefix, ifindex: u32) -> Vec<u8> {
    let mut body = vec![
        libc::AF_INET as u8,
        dst.len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_LINK,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut body, RTA_DST, &dst.addr.octets());
    push_attr(&mut body, RTA_OIF, &ifindex.to_ne_bytes());
    body
}

/// The error code of the NLMSG_ERROR ack for sequence 1 in `reply`: Some(0) is success.
fn parse_ack(reply: &[u8]) -> Option<i32> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= reply.len() {
        let u32_at = |o: usize| u32::from_ne_bytes(reply[o..o + 4].try_into().unwrap_or([0; 4]));
        let len = u32_at(off) as usize;
        let ty = u16::from_ne_bytes([reply[off + 4], reply[off + 5]]);
        let seq = u32_at(off + 8);
        if len < NLMSG_HDRLEN || off + len > reply.len() {
            return None;
        }
        if ty == NLMSG_ERROR && seq == 1 && len >= NLMSG_HDRLEN + 4 {
            return Some(u32_at(off + NLMSG_HDRLEN) as i32);
        }
        off += align4(len);
    }
    None
}

/// Sends one rtnetlink request to the kernel and waits (2 s at most) for its ack.
fn rtnetlink(ty: u16, flags: u16, body: &[u8]) -> Result<(), Errno> {
    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: timeout is a readable timeval of the length passed.
    zero_or_errno(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let msg = nl_message(ty, flags | NLM_F_REQUEST | NLM_F_ACK, body);
    // SAFETY: msg is a readable buffer of the length passed; kernel is a live sockaddr_nl.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent == -1 {
        return Err(Errno::last());
    }
    let mut reply = vec![0u8; 8192];
    loop {
        // SAFETY: reply is a writable buffer of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if n == -1 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        match parse_ack(&reply[..n as usize]) {
            Some(0) => return Ok(()),
            Some(code) => return Err(Errno(-code)),
            None => continue,
        }
    }
}

/// The interface index of `iface`, or 0 (the kernel still checks permissions first, so the
/// request is still worth sending).
fn ifindex(iface: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return 0;
    };
    // SAFETY: name is a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        eprintln!("interface {iface}: {} (sending index 0)", Errno::last());
    }
    index
}

/// SIOCSIFADDR on the alias label `<iface>:9`: adds an address without replacing the primary.
fn ioctl_add_alias(iface: &str, addr: Ipv4Addr) -> Result<String, Errno> {
    let mut label = format!("{iface}:9");
    label.truncate(libc::IFNAMSIZ - 1);
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // struct ifreq: 16-byte name, then a union (sockaddr_in here); 40 bytes on 64-bit.
    let mut ifr = [0u8; 40];
    ifr[..label.len()].copy_from_slice(label.as_bytes());
    ifr[16..18].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    ifr[20..24].copy_from_slice(&addr.octets());
    // SAFETY: ifr is a writable buffer at least as large as struct ifreq.
    zero_or_errno(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFADDR, ifr.as_mut_ptr()) })?;
    // Undo: clearing IFF_UP on an alias label deletes that alias address.
    let mut down = [0u8; 40];
    down[..label.len()].copy_from_slice(label.as_bytes());
    // SAFETY: down is a writable buffer at least as large as struct ifreq (flags = 0).
    let removed =
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, down.as_mut_ptr()) } == 0;
    Ok(format!(
        "SIOCSIFADDR {addr} on {label} ({})",
        if removed {
            "removed again"
        } else {
            "NOT removed"
        }
    ))
}

pub fn add_address(iface: &str, prefix: Ipv4Prefix) -> Outcome {
    let index = ifindex(iface);
    let body = ifaddr_body(prefix, index);
    let netlink_err = match rtnetlink(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body) {
        Ok(()) => {
            let removed = rtnetlink(RTM_DELADDR, 0, &body).is_ok();
            return Outcome::Succeeded(format!(
                "RTM_NEWADDR {prefix} on {iface} ({})",
                if removed {
                    "removed again"
                } else {
                    "NOT removed"
                }
            ));
        }
        Err(e) => e,
    };
    eprintln!("add-address: rtnetlink RTM_NEWADDR: {netlink_err}");
    match ioctl_add_alias(iface, prefix.addr) {
        Ok(detail) => Outcome::Succeeded(detail),
        Err(e) => {
            eprintln!("add-address: SIOCSIFADDR: {e}");
            Outcome::Blocked(netlink_err)
        }
    }
}

pub fn add_route(iface: &str, dst: Ipv4Prefix) -> Outcome {
    let body = route_body(dst, ifindex(iface));
    match rtnetlink(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &body) {
        Ok(()) => {
            let removed = rtnetlink(RTM_DELROUTE, 0, &body).is_ok();
            Outcome::Succeeded(format!(
                "RTM_NEWROUTE {dst} dev {iface} ({})",
                if removed {
                    "removed again"
                } else {
                    "NOT removed"
                }
            ))
        }
        Err(e) => Outcome::Blocked(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded() {
        let mut buf = Vec::new();
        push_attr(&mut buf, 7, &[1, 2, 3, 4, 5]);
        assert_eq!(buf.len(), 12);
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), 9);
        assert_eq!(u16::from_ne_bytes([buf[2], buf[3]]), 7);
    }

    #[test]
    fn messages_and_acks() {
        let prefix: Ipv4Prefix = "192.0.2.1/32".parse().unwrap();
        let body = ifaddr_body(prefix, 3);
        assert_eq!(body.len(), 8 + 8 + 8);
        let msg = nl_message(RTM_NEWADDR, NLM_F_REQUEST, &body);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(
            route_body("1.2.3.0/24".parse().unwrap(), 2).len(),
            12 + 8 + 8
        );

        let mut ack = nl_message(NLMSG_ERROR, 0, &(-libc::EPERM).to_ne_bytes());
        ack.extend_from_slice(&msg[..NLMSG_HDRLEN]);
        let total = ack.len() as u32;
        ack[0..4].copy_from_slice(&total.to_ne_bytes());
        assert_eq!(parse_ack(&ack), Some(-libc::EPERM));
        assert_eq!(parse_ack(&ack[..10]), None);
    }
}
