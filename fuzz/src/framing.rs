//! JSON-RPC framing of a server's stdout (`mcp::stdio::ServerSession`): newline-delimited
//! messages under a line cap, arriving in arbitrary chunks.
//!
//! Properties: a line over the cap is refused (the session ends saying so) whatever its end
//! (`\n`, `\r\n` or the end of the stream) and wherever the chunks split it; an endless line
//! is never buffered without bound (the session stops reading it within the cap plus one
//! read buffer); every valid message before the first bad line is relayed whole, in order,
//! and nothing after it; blank lines are skipped.

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use gateway::mcp::stdio::{ServerSession, SessionLimits};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Target;

pub const TARGET: Target = Target {
    name: "framing",
    check,
    ci_cases: 10_000,
};

/// The session's read buffer (`stdio.rs` reads through a 64 KiB `BufReader`).
const READ_BUFFER: usize = 64 * 1024;
/// The pipe between the fake server and the session.
const PIPE: usize = 512;

/// One line the server writes, and what the session must make of it.
#[derive(Debug)]
enum Line {
    /// Relayed to subscribers as this value.
    Notification(Value),
    /// Valid JSON-RPC the session answers or ignores (a ping, a response to nobody).
    Quiet,
    Blank,
    Invalid,
}

fn line(u: &mut Unstructured<'_>, i: usize, cap: usize) -> Result<(Line, Vec<u8>)> {
    let kind = u.int_in_range(0..=9)?;
    let (line, mut text) = match kind {
        0 => (Line::Blank, (*u.choose(&["", " ", "\t \r"])?).to_owned()),
        1 => (
            Line::Invalid,
            (*u.choose(&["{", "[]", "{\"jsonrpc\":\"1.0\"}", "null"])?).to_owned(),
        ),
        2 => (
            Line::Quiet,
            json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}).to_string(),
        ),
        3 => (
            Line::Quiet,
            json!({"jsonrpc": "2.0", "id": 99_999, "result": {}}).to_string(),
        ),
        _ => {
            let v = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": i, "pad": ""}});
            (Line::Notification(v.clone()), v.to_string())
        }
    };
    if let Line::Notification(v) = &line {
        // Padded to land near the cap most of the time: the off-by-one cases live there.
        let base = text.len();
        let want = match u.int_in_range(0..=2)? {
            0 => u.int_in_range(base..=base + 64)?,
            _ => {
                let low = cap.saturating_sub(3).max(base);
                u.int_in_range(low..=(cap + 3).max(low))?
            }
        };
        let mut v = v.clone();
        v["params"]["pad"] = json!("p".repeat(want - base));
        text = v.to_string();
        return Ok((Line::Notification(v), text.into_bytes()));
    }
    Ok((line, text.into_bytes()))
}

/// Writes `data` in chunks of the sizes `u` picks, as a server's stdout might arrive.
async fn write_chunked(w: &mut tokio::io::DuplexStream, data: &[u8], sizes: &[usize]) {
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        if w.write_all(&data[at..at + n]).await.is_err() {
            return; // the session stopped reading: it has refused something
        }
        at += n;
        i += 1;
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// What the session must do with `lines` (each with its terminator): the notifications it
/// relays, and the words its closing reason must contain.
fn oracle(lines: &[(Line, Vec<u8>, &str)], cap: usize) -> (Vec<Value>, String) {
    let mut relayed = Vec::new();
    for (kind, text, end) in lines {
        let content = text.len() + usize::from(*end == "\r\n");
        if content > cap {
            return (relayed, format!("over {cap} bytes"));
        }
        match kind {
            Line::Notification(v) => relayed.push(v.clone()),
            Line::Invalid => return (relayed, "protocol violation".into()),
            Line::Quiet | Line::Blank => {}
        }
        if end.is_empty() {
            break;
        }
    }
    (relayed, "server closed its stdout".into())
}

fn check_lines(u: &mut Unstructured<'_>) -> Result<()> {
    let cap = u.int_in_range(80..=600)?;
    let mut lines = Vec::new();
    for i in 0..u.int_in_range(1..=6)? {
        let (kind, text) = line(u, i, cap)?;
        lines.push((kind, text, *u.choose(&["\n", "\n", "\r\n"])?));
    }
    if u.ratio(1, 3)? {
        lines.last_mut().expect("one line at least").2 = ""; // the stream ends mid-line
    }
    let mut raw = Vec::new();
    for (_, text, end) in &lines {
        raw.extend_from_slice(text);
        raw.extend_from_slice(end.as_bytes());
    }
    let sizes: Vec<usize> = (0..u.int_in_range(1..=4)?)
        .map(|_| u.int_in_range(1..=cap * 2))
        .collect::<Result<_>>()?;
    let (relayed, reason) = oracle(&lines, cap);
    runtime().block_on(async {
        let (mut server, session_side) = tokio::io::duplex(PIPE);
        let limits = SessionLimits {
            max_message_bytes: cap,
            ..SessionLimits::default()
        };
        let session = ServerSession::start("fuzz", session_side, tokio::io::sink(), limits);
        let mut notes = session.subscribe();
        write_chunked(&mut server, &raw, &sizes).await;
        drop(server);
        let ended = tokio::time::timeout(Duration::from_secs(10), session.ended()).await;
        let ended = ended.expect("the session ends once the stream does");
        let shape: Vec<(usize, &str)> = lines.iter().map(|(_, t, e)| (t.len(), *e)).collect();
        assert!(
            ended.contains(&reason),
            "ended with {ended:?}, expected {reason:?}: {shape:?}"
        );
        let mut got = Vec::new();
        while let Ok(v) = notes.try_recv() {
            got.push(v);
        }
        assert_eq!(got, relayed, "relayed messages (cap {cap}): {shape:?}");
    });
    Ok(())
}

/// A server that writes one line and never ends it.
fn check_endless(u: &mut Unstructured<'_>) -> Result<()> {
    let cap = u.int_in_range(1..=200_000)?;
    let chunk = vec![b'x'; u.int_in_range(1..=65_536)?];
    runtime().block_on(async {
        let (mut server, session_side) = tokio::io::duplex(PIPE);
        let limits = SessionLimits {
            max_message_bytes: cap,
            ..SessionLimits::default()
        };
        let session = ServerSession::start("fuzz", session_side, tokio::io::sink(), limits);
        let bound = cap + 1 + READ_BUFFER + PIPE + chunk.len();
        let mut written = 0;
        while server.write_all(&chunk).await.is_ok() {
            written += chunk.len();
            assert!(
                written <= bound,
                "{written} bytes of one line taken under a cap of {cap}"
            );
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), session.ended()).await;
        let ended = ended.expect("the session ends");
        assert!(ended.contains(&format!("over {cap} bytes")), "{ended}");
    });
    Ok(())
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 16)? {
        check_endless(u)
    } else {
        check_lines(u)
    }
}
