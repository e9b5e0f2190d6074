//! The transparent-mode DNS answerer (`egress::dns::answer`) against arbitrary queries.
//!
//! Properties: a query is dropped only when it is too short, too long or a response (no
//! reflection); every reply is a well-formed DNS message that echoes the id and the question
//! byte for byte; an A record is given only for an allowlisted name (case-insensitively), only
//! for type A class IN, and always names the proxy's address, never another; a name off the
//! allowlist never gets NOERROR.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use arbitrary::{Result, Unstructured};
use gateway::egress::dns::{MAX_QUERY, answer};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "dns",
    check,
    ci_cases: 20_000,
};

const NOERROR: u8 = 0;

/// A query the answerer should take seriously most of the time: a plausible header and one
/// question, about an allowlisted name or another, then a few bytes flipped now and then.
fn query(u: &mut Unstructured<'_>, allow: &[String]) -> Result<Vec<u8>> {
    if u.ratio(1, 8)? {
        return pick::bytes(u, MAX_QUERY + 8);
    }
    let mut q = u.bytes(2)?.to_vec();
    q.resize(2, 0);
    q.push(*u.choose(&[0x01, 0x00, 0x01, 0x81, 0x21, 0x11])?); // RD, response, opcode 4 / 2
    q.push(u.arbitrary()?);
    let counts: [u16; 4] = *u.choose(&[[1, 0, 0, 0], [1, 0, 0, 1], [1, 0, 0, 0], [2, 0, 0, 0]])?;
    let counts = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        counts
    };
    for c in counts {
        q.extend_from_slice(&c.to_be_bytes());
    }
    let name = match u.int_in_range(0..=4)? {
        0 | 1 => {
            let name = u.choose(allow)?.clone();
            pick::recase(u, &name)?
        }
        2 => format!("{}.{}", pick::host(u)?, u.choose(allow)?), // a sub-name: not allowed
        3 => pick::host(u)?,
        _ => String::from_utf8_lossy(&pick::bytes(u, 80)?).into_owned(),
    };
    for label in name.split('.') {
        let len = if u.ratio(1, 32)? {
            u.arbitrary()?
        } else {
            label.len() as u8
        };
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    if u.ratio(1, 32)? {
        q.extend_from_slice(&[0xc0, 0x0c]); // a compression pointer in a question
    }
    q.push(0);
    let qtype: u16 = *u.choose(&[1, 1, 28, 64, 65, 16, 255, 5])?;
    let qclass: u16 = *u.choose(&[1, 1, 1, 3, 255])?;
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    if counts[3] == 1 {
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]); // EDNS OPT
    }
    q.extend_from_slice(&pick::bytes(u, 8)?);
    if u.ratio(1, 4)? && !q.is_empty() {
        for _ in 0..u.int_in_range(1..=3)? {
            let at = u.choose_index(q.len())?;
            q[at] = u.arbitrary()?;
        }
    }
    Ok(q)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An independent reading of the question at offset 12: its end, and the name lower-cased.
fn read_question(msg: &[u8]) -> (usize, String) {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = msg[pos] as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        assert!(len <= 63, "a label in the reply's question is {len} bytes");
        labels.push(String::from_utf8_lossy(&msg[pos..pos + len]).to_ascii_lowercase());
        pos += len;
    }
    (pos + 4, labels.join("."))
}

fn check_reply(query: &[u8], reply: &[u8], allow: &HashSet<String>, ip: Ipv4Addr) {
    assert!(reply.len() >= 12, "reply shorter than a header");
    assert!(
        reply.len() <= 512,
        "reply of {} bytes: over UDP's 512",
        reply.len()
    );
    assert_eq!(reply[..2], query[..2], "id echoed");
    assert_eq!(reply[2] & 0xf8, 0x80, "QR set, opcode 0");
    assert_eq!(reply[2] & 0x01, query[2] & 0x01, "RD echoed");
    let rcode = reply[3] & 0x0f;
    assert!([0, 1, 3, 4, 5].contains(&rcode), "rcode {rcode}");
    let (qd, an) = (be16(reply, 4), be16(reply, 6));
    assert_eq!(
        (be16(reply, 8), be16(reply, 10)),
        (0, 0),
        "no authority/additional"
    );
    assert!(qd <= 1 && an <= qd, "{qd} questions, {an} answers");
    if qd == 0 {
        assert_eq!(
            reply.len(),
            12,
            "a header-only reply has nothing after the header"
        );
        assert_ne!(rcode, NOERROR, "NOERROR without a question");
        return;
    }
    let (end, name) = read_question(reply);
    assert_eq!(
        reply[12..end],
        query[12..end],
        "question echoed byte for byte"
    );
    let (qtype, qclass) = (be16(reply, end - 4), be16(reply, end - 2));
    if !allow.contains(&name) {
        assert_ne!(
            rcode, NOERROR,
            "NOERROR for {name:?}, which is not allowlisted"
        );
    }
    if an == 0 {
        assert_eq!(
            reply.len(),
            end,
            "bytes after the question of a reply with no answer"
        );
        return;
    }
    assert!(allow.contains(&name), "an answer for {name:?}");
    assert_eq!(
        (rcode, qtype, qclass),
        (NOERROR, 1, 1),
        "an answer to A/IN only"
    );
    let rr = &reply[end..];
    assert_eq!(rr.len(), 16, "exactly one A record after the question");
    assert_eq!(rr[..4], [0xc0, 0x0c, 0, 1], "owner = the question, type A");
    assert_eq!(rr[4..6], [0, 1], "class IN");
    assert_eq!(rr[10..12], [0, 4], "rdlength 4");
    assert_eq!(
        rr[12..],
        ip.octets(),
        "the answer names the proxy's address only"
    );
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let n = u.int_in_range(1..=3)?;
    let allow = pick::hosts(u, n)?;
    let ip = Ipv4Addr::new(10, 231, u.arbitrary()?, 1);
    let q = query(u, &allow)?;
    let set: HashSet<String> = allow.into_iter().collect();
    match answer(&q, &set, ip) {
        None => assert!(
            q.len() < 12 || q.len() > MAX_QUERY || q[2] & 0x80 != 0,
            "a {}-byte query dropped without reply",
            q.len()
        ),
        Some(reply) => {
            assert!(q.len() >= 12 && q.len() <= MAX_QUERY && q[2] & 0x80 == 0);
            check_reply(&q, &reply, &set, ip);
        }
    }
    Ok(())
}
