//! The DNS answerer of transparent mode: allowlisted names resolve to N.1 (where the proxy
//! takes TLS on 443), every other name is NXDOMAIN, other record types are refused. Nothing is
//! ever forwarded to a real resolver, so long labels, TXT queries and the like have nowhere to go.
//!
//! A small hand-written parser rather than hickory-proto: we read one question and write one
//! A record, which is ~100 lines over bytes that are easy to test exhaustively, against ~67
//! extra crates (and their build time) for a general DNS library.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::addresses::fold_mapped;
use super::audit::EgressAudit;

/// Largest query accepted (plain DNS; EDNS is not needed for one A record).
pub const MAX_QUERY: usize = 512;
const TTL: u32 = 60;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SVCB: u16 = 64;
const TYPE_HTTPS: u16 = 65;
const CLASS_IN: u16 = 1;

const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;

/// What became of a query (for the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An A record for an allowlisted name.
    Answered(String),
    /// An allowlisted name, a type with no data here (AAAA, HTTPS, SVCB).
    NoData(String),
    NxDomain(String),
    Refused(&'static str),
    NotImplemented,
    FormErr,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A reply header: `id` and RD from the query, QR, AA and RA set.
fn header(query: &[u8], rcode: u8, questions: u16, answers: u16) -> Vec<u8> {
    let rd = query[2] & 0x01;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[0..2]);
    out.push(0x80 | 0x04 | rd); // QR, opcode 0, AA, RD echoed
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&questions.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// The reply to `query`, or `None` to drop it (too short, too long, or not a query).
pub fn answer(query: &[u8], allowlist: &HashSet<String>, answer_ip: Ipv4Addr) -> Option<Vec<u8>> {
    answer_verdict(query, allowlist, answer_ip).map(|(reply, _)| reply)
}

/// The question's name as labels, and the offset just past it; `None` if it runs past the
/// end or uses compression (not allowed in a question).
fn question_labels(query: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let mut pos = 12;
    let mut labels: Vec<&[u8]> = Vec::new();
    loop {
        let len = *query.get(pos)?;
        pos += 1;
        if len == 0 {
            return Some((labels, pos));
        }
        if len & 0xc0 != 0 {
            return None; // a compression pointer or extended label in a question
        }
        labels.push(query.get(pos..pos + len as usize)?);
        pos += len as usize;
    }
}

/// A host name we could have on an allowlist: 1 to 63 bytes a label of letters, digits, `-`
/// and `_`, at most 253 in all.
fn sane_name(labels: &[&[u8]]) -> bool {
    let text_len: usize = labels
        .iter()
        .map(|l| l.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    !labels.is_empty()
        && text_len <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        })
}

/// [`answer`] with what happened.
pub fn answer_verdict(
    query: &[u8],
    allowlist: &HashSet<String>,
    answer_ip: Ipv4Addr,
) -> Option<(Vec<u8>, Verdict)> {
    if query.len() < 12 || query.len() > MAX_QUERY || query[2] & 0x80 != 0 {
        return None; // never answer a response: no reflection loops
    }
    let opcode = (query[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Some((header(query, NOTIMP, 0, 0), Verdict::NotImplemented));
    }
    let counts = [
        be16(query, 4)?,
        be16(query, 6)?,
        be16(query, 8)?,
        be16(query, 10)?,
    ];
    // One question, no answers or authorities; one additional record (an EDNS OPT) is ignored.
    if counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
        return Some((header(query, FORMERR, 0, 0), Verdict::FormErr));
    }
    let formerr = || Some((header(query, FORMERR, 0, 0), Verdict::FormErr));
    let Some((labels, pos)) = question_labels(query) else {
        return formerr();
    };
    let (Some(qtype), Some(qclass)) = (be16(query, pos), be16(query, pos + 2)) else {
        return formerr();
    };
    let question = &query[12..pos + 4];
    let reply = |rcode: u8, answers: u16| {
        let mut out = header(query, rcode, 1, answers);
        out.extend_from_slice(question);
        out
    };
    if !sane_name(&labels) {
        return Some((reply(REFUSED, 0), Verdict::Refused("malformed name")));
    }
    if qclass != CLASS_IN {
        return Some((reply(REFUSED, 0), Verdict::Refused("class")));
    }
    let name = labels
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    if !allowlist.contains(&name) {
        // The same answer for every type: the name does not exist as far as the sandbox knows.
        return Some((reply(NXDOMAIN, 0), Verdict::NxDomain(name)));
    }
    match qtype {
        TYPE_A => {
            let mut out = reply(NOERROR, 1);
            out.extend_from_slice(&[0xc0, 0x0c]); // the name in the question
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&answer_ip.octets());
            Some((out, Verdict::Answered(name)))
        }
        // No data, so stub resolvers fall back to the A answer without waiting.
        TYPE_AAAA | TYPE_HTTPS | TYPE_SVCB => Some((reply(NOERROR, 0), Verdict::NoData(name))),
        _ => Some((reply(REFUSED, 0), Verdict::Refused("type"))),
    }
}

/// What a serving loop answers, for whom.
#[derive(Debug)]
pub struct Served {
    pub names: HashSet<String>,
    pub answer_ip: Ipv4Addr,
    /// Queries from any other address are dropped.
    pub expected_peer: IpAddr,
    pub sandbox_id: String,
    pub audit: Option<EgressAudit>,
}

impl Served {
    fn note(&self, verdict: &Verdict) {
        let Some(audit) = &self.audit else { return };
        let deny = match verdict {
            Verdict::Answered(_) | Verdict::NoData(_) => return,
            Verdict::NxDomain(_) => super::audit::Deny::NotAllowlisted,
            _ => super::audit::Deny::BadAuthority,
        };
        let name = match verdict {
            Verdict::NxDomain(n) => n.chars().take(253).collect(),
            _ => "(dns)".to_owned(),
        };
        audit.denied(&self.sandbox_id, &name, &deny, "kind=dns", true);
    }
}

/// Answers UDP queries on `socket` until dropped.
pub async fn serve_udp(socket: UdpSocket, served: Arc<Served>) {
    let mut buf = vec![0u8; MAX_QUERY + 1];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if fold_mapped(peer.ip()) != served.expected_peer {
            continue;
        }
        if let Some((reply, verdict)) = answer_verdict(&buf[..n], &served.names, served.answer_ip) {
            served.note(&verdict);
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// A DNS-over-TCP connection lives at most this long, whatever it sends: an idle or slow one
/// gives its slot back (the listener's accept loop caps how many a sandbox holds).
pub const TCP_SESSION_TIME: Duration = Duration::from_secs(10);

/// Answers one DNS-over-TCP connection (2-byte length prefix, up to 16 queries), accepted and
/// attributed by the listener, for at most [`TCP_SESSION_TIME`].
pub async fn serve_tcp_connection(stream: TcpStream, served: Arc<Served>) {
    let _ = tokio::time::timeout(TCP_SESSION_TIME, tcp_session(stream, served)).await;
}

async fn tcp_session(mut stream: TcpStream, served: Arc<Served>) -> std::io::Result<()> {
    for _ in 0..16 {
        let len = stream.read_u16().await? as usize;
        if len > MAX_QUERY {
            return Ok(());
        }
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some((reply, verdict)) = answer_verdict(&query, &served.names, served.answer_ip) else {
            return Ok(());
        };
        served.note(&verdict);
        let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        stream.write_u16(len).await?;
        stream.write_all(&reply).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn rcode(reply: &[u8]) -> u8 {
        reply[3] & 0x0f
    }

    fn allow() -> HashSet<String> {
        HashSet::from(["api.example.com".to_string()])
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 231, 3, 1);

    #[test]
    fn allowlisted_a_gets_the_proxy_address() {
        let q = query("API.Example.com.", TYPE_A);
        let r = answer(&q, &allow(), IP).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(rcode(&r), NOERROR);
        assert_eq!(be16(&r, 6), Some(1), "one answer");
        assert_eq!(&r[12..q.len()], &q[12..], "question echoed byte for byte");
        assert_eq!(&r[r.len() - 4..], &IP.octets());
        assert_eq!(
            rcode(&answer(&query("api.example.com", TYPE_AAAA), &allow(), IP).unwrap()),
            NOERROR
        );
    }

    #[test]
    fn everything_else_is_refused_or_nonexistent() {
        let r = |q: &[u8]| answer(q, &allow(), IP).map(|r| rcode(&r));
        assert_eq!(r(&query("evil.example.com", TYPE_A)), Some(NXDOMAIN));
        assert_eq!(
            r(&query("evil.example.com", 16)),
            Some(NXDOMAIN),
            "TXT elsewhere"
        );
        assert_eq!(r(&query("api.example.com", 16)), Some(REFUSED), "TXT");
        assert_eq!(r(&query("api.example.com", 255)), Some(REFUSED), "ANY");
        let exfil = format!("{}.{}.evil.example.com", "a".repeat(63), "b".repeat(63));
        assert_eq!(r(&query(&exfil, TYPE_A)), Some(NXDOMAIN));
        let too_long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(
            r(&query(&too_long, TYPE_A)),
            Some(REFUSED),
            "> 253 characters"
        );
        assert_eq!(r(&query("bad!label.example.com", TYPE_A)), Some(REFUSED));
        let mut chaos = query("api.example.com", TYPE_A);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert_eq!(r(&chaos), Some(REFUSED), "class CH");
        let mut notify = query("api.example.com", TYPE_A);
        notify[2] = 4 << 3;
        assert_eq!(r(&notify), Some(NOTIMP));
        let mut two = query("api.example.com", TYPE_A);
        two[5] = 2;
        assert_eq!(r(&two), Some(FORMERR));
        let mut pointer = query("api.example.com", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(r(&pointer), Some(FORMERR));
        assert_eq!(
            r(&query("api.example.com", TYPE_A)[..20]),
            Some(FORMERR),
            "truncated"
        );
    }

    #[test]
    fn dropped_without_reply() {
        let mut response = query("api.example.com", TYPE_A);
        response[2] |= 0x80;
        assert!(answer(&response, &allow(), IP).is_none());
        assert!(answer(&[0u8; 11], &allow(), IP).is_none());
        assert!(answer(&vec![0u8; MAX_QUERY + 1], &allow(), IP).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..600 {
            let mut q: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = answer(&q, &allow(), IP);
            if q.len() > 12 {
                q[2] = 0x01;
                q[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
                let _ = answer(&q, &allow(), IP);
            }
        }
    }
}
