//! The MCP front under abuse, as an attacker on its internet-facing port would test it: silent
//! connections, request heads and bodies trickled in, stalled TLS handshakes, connection floods
//! past the caps, HTTP/2 stream floods, CONTINUATION floods and rapid resets (frames written by
//! hand), bad-token floods against the audit trail, sessions of another token, and two hostile
//! servers whose tool names would collide. Deadlines, caps, names and values are chosen
//! at random; every test runs in its own network namespace.

use testkit::mcp as mcp_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::mcp::front::{ConnLimits, FrontLimits};
use mcp_support::{Gw, http, post_headers, venv};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

/// A random value in `lo..hi`.
fn between(lo: u64, hi: u64) -> u64 {
    lo + random_u64() % (hi - lo)
}

/// A random lowercase name of `n` letters.
fn name(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'a' + (random_u64() % 26) as u8))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Limits with the given header deadline and everything else generous.
fn limits_with_header(header_read: Duration) -> FrontLimits {
    FrontLimits {
        connections: ConnLimits {
            header_read,
            ..ConnLimits::default()
        },
        ..FrontLimits::default()
    }
}

/// A tiny MCP server: tools from `$TOOLS` (a JSON list of names, duplicates kept), calls
/// answered `"$NAME:<tool>"`, a tool named `slow…` sleeps 3 s first.
const SERVER: &str = r#"
import json, os, sys, time
name = os.environ["NAME"]
tools = json.loads(os.environ["TOOLS"])
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        r = {"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":name,"version":"1"}}
    elif m == "tools/list":
        r = {"tools":[{"name":t,"description":"tool %d of %s" % (n, name),"inputSchema":{"type":"object"}} for n, t in enumerate(tools)]}
    elif m == "tools/call":
        if p["name"].startswith("slow"):
            time.sleep(3)
        r = {"content":[{"type":"text","text":"%s:%s" % (name, p["name"])}]}
    else:
        print(json.dumps({"jsonrpc":"2.0","id":i,"error":{"code":-32601,"message":"nf"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc":"2.0","id":i,"result":r}), flush=True)
"#;

fn server(name: &'static str, tools: &[&str]) -> (&'static str, Value) {
    let py = venv().join("python");
    (
        name,
        json!({"name": name, "version": "1", "command": [py.to_str().unwrap(), "-c", SERVER],
            "env": {"NAME": name, "TOOLS": serde_json::to_string(tools).unwrap()}}),
    )
}

/// Reads from `s` until the server closes it (EOF or reset); how long that took, or `None`
/// if it was still open after `within`.
async fn closed_after(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// Writes `bytes` one at a time every `gap` until the server closes the connection; how long
/// the connection survived.
async fn trickle(addr: SocketAddr, bytes: Vec<u8>, gap: Duration) -> Duration {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    writer.abort();
    assert!(closed.is_ok(), "still open after 60 s");
    start.elapsed()
}

/// The bounds a connection without a request must be closed in: not before its deadline, and
/// not much after it (the close grace and a scheduling margin).
fn assert_closed_at_deadline(survived: Duration, deadline: Duration, what: &str) {
    let grace = ConnLimits::default().close_grace;
    assert!(
        survived >= deadline - Duration::from_millis(100)
            && survived <= deadline + grace + Duration::from_millis(1500),
        "{what}: survived {survived:?}, the header timeout is {deadline:?}"
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "a_connection_that_sends_nothing_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            let survived = closed_after(&mut s, Duration::from_secs(30))
                .await
                .expect("closed by the server");
            assert_closed_at_deadline(survived, deadline, "silent connection");
            let audit = gw.audit().await;
            assert!(
                audit.iter().any(|e| e.action == "mcp.denied"
                    && e.target == "connection"
                    && e.detail.contains("no request within the header timeout")),
                "{audit:#?}"
            );
        },
    );
}

#[test]
fn a_request_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "a_request_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            // An HTTP/1.1 head whose header never ends, one byte per 500 ms (slowloris).
            let head = format!(
                "POST /mcp/{} HTTP/1.1\r\nHost: {}\r\nX-{}: {}",
                name(6),
                gw.addr,
                name(8),
                name(4000)
            );
            let h1 = trickle(gw.addr, head.into_bytes(), Duration::from_millis(500));
            // The HTTP/2 preface the same way: hyper's protocol detection alone would wait for
            // it forever.
            let h2 = trickle(
                gw.addr,
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                Duration::from_millis(500),
            );
            let (h1, h2) = tokio::join!(h1, h2);
            assert_closed_at_deadline(h1, deadline, "HTTP/1.1 head");
            assert_closed_at_deadline(h2, deadline, "HTTP/2 preface");
        },
    );
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A well-behaved but idle HTTP/2 client: the preface, then it acknowledges the server's
/// SETTINGS and answers every PING (so keep-alive pings alone cannot close it) and never opens
/// a stream. How long the connection lived.
async fn idle_h2_client(addr: SocketAddr) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    s.write_all(H2_START).await.unwrap();
    let live = async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            let answer = match (kind, flags & 1) {
                (0x4, 0) => vec![0, 0, 0, 0x4, 1, 0, 0, 0, 0],
                (0x6, 0) => [&[0, 0, 8, 0x6, 1, 0, 0, 0, 0][..], &payload].concat(),
                _ => continue,
            };
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), live)
        .await
        .expect("still open after 60 s");
    start.elapsed()
}

#[test]
fn an_http2_connection_without_requests_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "an_http2_connection_without_requests_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            // HTTP/2 has no header timeout of its own, and this client answers pings.
            let survived = idle_h2_client(gw.addr).await;
            assert_closed_at_deadline(survived, deadline, "idle HTTP/2 connection");
        },
    );
}

#[test]
fn a_body_that_trickles_in_is_refused_at_the_body_deadline() {
    testkit::privileged(
        "a_body_that_trickles_in_is_refused_at_the_body_deadline",
        2,
        || async {
            let body_read = Duration::from_millis(between(1000, 2500));
            let limits = FrontLimits {
                body_read,
                ..FrontLimits::default()
            };
            let gw = Gw::with_limits(vec![], vec![("agents", vec![])], &[], limits).await;
            let (token_id, token) = gw.token("agents");
            let body = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad": name(2000)}})
                .to_string();
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            let head = format!(
                "POST /mcp/agents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                gw.addr,
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let start = Instant::now();
            let (mut rd, mut wr) = s.into_split();
            let writer = tokio::spawn(async move {
                for b in body.bytes() {
                    if wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                assert!(n > 0, "closed without an answer");
                got.extend_from_slice(&buf[..n]);
            }
            let answered = start.elapsed();
            writer.abort();
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            assert!(
                answered >= body_read - Duration::from_millis(100)
                    && answered <= body_read + Duration::from_millis(1500),
                "answered after {answered:?}, the body deadline is {body_read:?}"
            );
            let audit = gw.audit().await;
            assert!(audit.iter().any(|e| e.action == "mcp.denied"
                && e.detail.contains(&format!("token={token_id}"))
                && e.detail.contains("request body not received in time")));
        },
    );
}

/// A TLS acceptor for `localhost` from a throwaway CA.
fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    gateway::mcp::front::tls_acceptor(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap()
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_its_deadline() {
    testkit::privileged(
        "a_stalled_tls_handshake_is_closed_at_its_deadline",
        2,
        || async {
            let gw = Gw::with(vec![], vec![], &[]).await;
            let dir = tempfile::tempdir().unwrap();
            let tls_handshake = Duration::from_millis(between(1000, 2500));
            let limits = FrontLimits {
                connections: ConnLimits {
                    tls_handshake,
                    // Longer than the handshake's: the handshake's own deadline must act.
                    header_read: Duration::from_secs(60),
                    ..ConnLimits::default()
                },
                ..FrontLimits::default()
            };
            let front = gateway::mcp::front::Front::new(
                gw.store.clone(),
                gateway::audit::Auditor::new(gw.store.clone(), "gigmcpd"),
                gw.pool.clone(),
                limits,
                vec!["localhost".into()],
                vec![],
                None,
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serving = tokio::spawn(
                front
                    .clone()
                    .serve_with(listener, Some(tls_acceptor(dir.path()))),
            );
            // Silent, and the first bytes of a ClientHello and then silence.
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut partial = TcpStream::connect(addr).await.unwrap();
            partial
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
            let (a, b) = tokio::join!(
                closed_after(&mut silent, Duration::from_secs(30)),
                closed_after(&mut partial, Duration::from_secs(30))
            );
            for (what, survived) in [("silent", a), ("partial ClientHello", b)] {
                let survived = survived.expect("closed by the server");
                assert!(
                    survived >= tls_handshake - Duration::from_millis(100)
                        && survived <= tls_handshake + Duration::from_millis(1500),
                    "{what}: survived {survived:?}, the handshake deadline is {tls_handshake:?}"
                );
            }
            serving.abort();
        },
    );
}

/// A connection to `addr` from source address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(addr).await.unwrap()
}

#[test]
fn connections_past_the_caps_are_closed_at_once_and_audited() {
    testkit::privileged(
        "connections_past_the_caps_are_closed_at_once_and_audited",
        2,
        || async {
            let per_peer = between(2, 8) as usize;
            let total = per_peer * 2 + between(1, per_peer as u64) as usize;
            let limits = FrontLimits {
                connections: ConnLimits {
                    max_connections: total,
                    max_connections_per_peer: per_peer,
                    header_read: Duration::from_secs(60),
                    ..ConnLimits::default()
                },
                ..FrontLimits::default()
            };
            let gw = Gw::with_limits(vec![], vec![], &[], limits).await;
            let peer = |n: u8| Ipv4Addr::new(127, 0, 0, n);
            let mut held = Vec::new();
            for _ in 0..per_peer {
                held.push(connect_from(peer(2), gw.addr).await);
            }
            // The peer's next one is closed at once; the others are still open.
            let mut over = connect_from(peer(2), gw.addr).await;
            assert!(
                closed_after(&mut over, Duration::from_secs(2))
                    .await
                    .is_some(),
                "a connection past the per-peer cap ({per_peer}) stayed open"
            );
            for s in &mut held {
                assert!(closed_after(s, Duration::from_millis(50)).await.is_none());
            }
            // Other peers fill the total; the next one, from a fresh address, is closed.
            let mut n = 3;
            while held.len() < total {
                for _ in 0..per_peer.min(total - held.len()) {
                    held.push(connect_from(peer(n), gw.addr).await);
                }
                n += 1;
            }
            let mut over = connect_from(peer(200), gw.addr).await;
            assert!(
                closed_after(&mut over, Duration::from_secs(2))
                    .await
                    .is_some(),
                "a connection past the total cap ({total}) stayed open"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(gw.front.open_connections(), total);
            // A closed connection frees its slot.
            drop(held.pop());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut again = connect_from(peer(200), gw.addr).await;
            assert!(
                closed_after(&mut again, Duration::from_millis(300))
                    .await
                    .is_none()
            );
            let audit = gw.audit().await;
            for reason in [
                "too many connections from this address",
                "too many connections\"",
            ] {
                assert!(
                    audit
                        .iter()
                        .any(|e| e.target == "connection" && e.detail.contains(reason)),
                    "{reason}: {audit:#?}"
                );
            }
        },
    );
}

/// `n` requests with random bad tokens over one keep-alive HTTP/1.1 connection; statuses.
async fn bad_token_requests(addr: SocketAddr, endpoint: &str, n: usize) -> Vec<u16> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let req = http::Request::post(format!("/mcp/{endpoint}"))
            .header("host", addr.to_string())
            .header(
                "authorization",
                format!("Bearer {}{}", gateway::tokens::PREFIX, name(43)),
            )
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        send.ready().await.unwrap();
        statuses.push(send.send_request(req).await.unwrap().status().as_u16());
    }
    statuses
}

#[test]
fn a_bad_token_flood_is_audited_at_a_bounded_rate_and_every_refusal_counted() {
    testkit::privileged(
        "a_bad_token_flood_is_audited_at_a_bounded_rate_and_every_refusal_counted",
        2,
        || async {
            let per_second = between(3, 10) as u32;
            let limits = FrontLimits {
                unauthenticated_audit_per_second: per_second,
                ..FrontLimits::default()
            };
            let endpoint = leak(name(7));
            let gw = Gw::with_limits(vec![], vec![(endpoint, vec![])], &[], limits).await;
            let before = gw.audit().await.len();
            let start = Instant::now();
            let floods: Vec<_> = (0..4)
                .map(|_| tokio::spawn(bad_token_requests(gw.addr, endpoint, 300)))
                .collect();
            let mut sent = 0u64;
            for f in floods {
                let statuses = f.await.unwrap();
                assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
                sent += statuses.len() as u64;
            }
            let seconds = start.elapsed().as_secs() + 1;
            // The writer summarises a window once it is over, even with no new event.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let audit: Vec<_> = gw.audit().await.into_iter().skip(before).collect();
            let recorded = audit.iter().filter(|e| e.action == "mcp.denied").count() as u64;
            let summarised: u64 = audit
                .iter()
                .filter(|e| e.action == "audit.suppressed" && e.target == "mcp.denied")
                .map(|e| {
                    let n = e.detail.strip_prefix("suppressed=").unwrap();
                    n.split(' ').next().unwrap().parse::<u64>().unwrap()
                })
                .sum();
            assert!(
                recorded <= u64::from(per_second) * (seconds + 2),
                "{recorded} refusals recorded in {seconds} s at {per_second}/s"
            );
            assert_eq!(
                recorded + summarised,
                sent,
                "every refusal is recorded or counted"
            );
            assert!(
                audit
                    .iter()
                    .filter(|e| e.action == "audit.suppressed")
                    .all(|e| e.detail.contains("unknown token=")),
                "{audit:#?}"
            );
        },
    );
}

async fn initialize(gw: &Gw, endpoint: &str, bearer: &str, extra: &[(&str, &str)]) -> String {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (status, headers, resp) = http(
        gw.addr,
        "POST",
        &format!("/mcp/{endpoint}"),
        &post_headers(bearer, extra),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

/// One request: method, headers, body.
type Try<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_second_token_cannot_use_stream_end_or_cancel_in_another_tokens_session() {
    testkit::privileged(
        "a_second_token_cannot_use_stream_end_or_cancel_in_another_tokens_session",
        2,
        || async {
            let srv = leak(name(6));
            let endpoint = leak(name(6));
            let gw = Gw::with(
                vec![server(srv, &["slow"])],
                vec![(endpoint, vec![(srv, vec!["*"])])],
                &[],
            )
            .await;
            let path = format!("/mcp/{endpoint}");
            let (_, a) = gw.token(endpoint);
            let (b_id, b) = gw.token(endpoint);
            let (a, b) = (format!("Bearer {a}"), format!("Bearer {b}"));
            let sid = initialize(&gw, endpoint, &a, &[]).await;
            let own = initialize(&gw, endpoint, &b, &[]).await;
            let in_a = [("mcp-session-id", sid.as_str())];
            // A's call runs; B tries everything with A's session id.
            let call_id = random_u64() % 1_000_000;
            let call = json!({"jsonrpc":"2.0","id":call_id,"method":"tools/call",
                "params":{"name": format!("{srv}__slow"),"arguments":{}}});
            let (addr, a2, sid2) = (gw.addr, a.clone(), sid.clone());
            let path2 = path.clone();
            let running = tokio::spawn(async move {
                http(
                    addr,
                    "POST",
                    &path2,
                    &post_headers(&a2, &[("mcp-session-id", &sid2)]),
                    call.to_string().into_bytes(),
                )
                .await
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
            let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled",
                "params":{"requestId": call_id}})
            .to_string();
            let sse = [
                ("accept", "text/event-stream"),
                ("mcp-session-id", sid.as_str()),
            ];
            let with_b = post_headers(&b, &in_a);
            let tries: [Try; 4] = [
                ("POST", &with_b, &list),
                ("POST", &with_b, &cancel),
                ("DELETE", &with_b, ""),
                ("GET", &[("authorization", b.as_str()), sse[0], sse[1]], ""),
            ];
            for (method, headers, body) in tries {
                let (status, _, resp) =
                    http(gw.addr, method, &path, headers, body.as_bytes().to_vec()).await;
                assert_eq!(
                    status,
                    404,
                    "{method} {body} in another token's session: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
            // In its own session, B's cancellation of A's request id reaches nothing.
            let (status, _, _) = http(
                gw.addr,
                "POST",
                &path,
                &post_headers(&b, &[("mcp-session-id", &own)]),
                cancel.clone().into_bytes(),
            )
            .await;
            assert_eq!(status, 202);
            let (status, _, resp) = running.await.unwrap();
            assert_eq!(status, 200);
            let r: Value = serde_json::from_slice(&resp).unwrap();
            assert_eq!(
                r["result"]["content"][0]["text"],
                format!("{srv}:slow"),
                "A's call was not cancelled: {r}"
            );
            // A's session is still A's.
            let (status, _, _) = http(
                gw.addr,
                "POST",
                &path,
                &post_headers(&a, &in_a),
                list.into_bytes(),
            )
            .await;
            assert_eq!(status, 200);
            let audit = gw.audit().await;
            assert!(
                !audit.iter().any(|e| e.action == "mcp.cancel"),
                "{audit:#?}"
            );
            assert!(audit.iter().any(|e| e.action == "mcp.denied"
                && e.detail.contains(&format!("token={b_id}"))
                && e.detail.contains("unknown")));
        },
    );
}

#[test]
fn a_client_chosen_session_id_is_ignored_and_a_guessed_one_is_unknown() {
    testkit::privileged(
        "a_client_chosen_session_id_is_ignored_and_a_guessed_one_is_unknown",
        2,
        || async {
            let endpoint = leak(name(6));
            let gw = Gw::with(vec![], vec![(endpoint, vec![])], &[]).await;
            let (_, t) = gw.token(endpoint);
            let bearer = format!("Bearer {t}");
            let chosen = format!("{:016x}{:016x}", random_u64(), random_u64());
            let sid = initialize(&gw, endpoint, &bearer, &[("mcp-session-id", &chosen)]).await;
            assert_ne!(sid, chosen, "the client chose its session id");
            let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string();
            let guessed = format!("{:016x}{:016x}", random_u64(), random_u64());
            for id in [&chosen, &guessed] {
                let (status, _, _) = http(
                    gw.addr,
                    "POST",
                    &format!("/mcp/{endpoint}"),
                    &post_headers(&bearer, &[("mcp-session-id", id)]),
                    ping.clone().into_bytes(),
                )
                .await;
                assert_eq!(status, 404, "session id {id}");
            }
            // The session the front chose works, and its sized answer says its size (the
            // connection's bookkeeping around the body must not turn it chunked).
            let (status, headers, _) = http(
                gw.addr,
                "POST",
                &format!("/mcp/{endpoint}"),
                &post_headers(&bearer, &[("mcp-session-id", &sid)]),
                ping.clone().into_bytes(),
            )
            .await;
            assert_eq!(status, 200);
            assert!(headers.contains_key("content-length"), "{headers:?}");
        },
    );
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_hostile_servers_cannot_list_one_name_and_a_call_reaches_the_lister() {
    testkit::privileged(
        "two_hostile_servers_cannot_list_one_name_and_a_call_reaches_the_lister",
        2,
        || async {
            // `x` lists `_y` (and `y` twice); `x_` (a row from before the name rule) lists `y`:
            // both would be shown as `x___y`.
            let x = leak(name(5));
            let x_ = leak(format!("{x}_"));
            let y = name(5);
            let under = format!("_{y}");
            let endpoint = leak(name(6));
            let gw = Gw::with(
                vec![server(x, &[&under, &y, &y]), server(x_, &[&y])],
                vec![(endpoint, vec![(x, vec!["*"]), (x_, vec!["*"])])],
                &[],
            )
            .await;
            let (_, token) = gw.token(endpoint);
            let list = gw.rpc(endpoint, &token, "tools/list", json!({})).await;
            let mut names = tool_names(&list);
            let listed = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), listed, "a name listed twice: {list}");
            assert_eq!(names, [format!("{x}___{y}"), format!("{x}__{y}")]);
            let shown = format!("{x}___{y}");
            let r = gw
                .rpc(
                    endpoint,
                    &token,
                    "tools/call",
                    json!({"name": shown, "arguments": {}}),
                )
                .await;
            assert_eq!(
                r["result"]["content"][0]["text"],
                format!("{x}:{under}"),
                "the call reached another server than the one that listed {shown}: {r}"
            );
            // The ambiguous server is neither listed nor started.
            assert_eq!(gw.launcher.pids.lock().unwrap().len(), 1);
            let audit = gw.audit().await;
            let hidden: Vec<_> = audit.iter().filter(|e| e.action == "mcp.hidden").collect();
            assert!(
                hidden
                    .iter()
                    .any(|e| e.detail.contains(&format!("server {x_}:"))
                        && e.detail.contains(&format!("{x}__{y}: listed twice"))),
                "{hidden:#?}"
            );
        },
    );
}

/// HTTP/2 frames written and read by hand: the attacks below are sequences no client library
/// will send.
mod h2frames {
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK integer with an `n`-bit prefix.
    fn int(n: u32, mut v: usize, out: &mut Vec<u8>) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(v as u8);
            return;
        }
        out.push(max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// Header fields as HPACK literals without indexing (no Huffman, no table).
    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0);
            int(7, name.len(), &mut out);
            out.extend_from_slice(name.as_bytes());
            int(7, value.len(), &mut out);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// The next frame: (type, flags, stream, payload), or `None` once the connection is closed.
    pub async fn read(
        rd: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Option<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        rd.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// The server's SETTINGS as (identifier, value) pairs.
    pub fn settings(payload: &[u8]) -> Vec<(u16, u32)> {
        payload
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// A POST request's header block for `endpoint`.
fn request_block(addr: SocketAddr, endpoint: &str, token: &str, end: bool) -> Vec<u8> {
    let auth = format!("Bearer {token}");
    let path = format!("/mcp/{endpoint}");
    let authority = addr.to_string();
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    if !end {
        // A body announced and never sent: the stream stays open.
        fields.push(("content-length", "100"));
    }
    h2frames::block(&fields)
}

fn h2_limits(streams: u32, header_list: u32) -> FrontLimits {
    FrontLimits {
        connections: ConnLimits {
            h2_max_concurrent_streams: streams,
            h2_max_header_list_bytes: header_list,
            ..ConnLimits::default()
        },
        ..FrontLimits::default()
    }
}

#[test]
fn http2_streams_past_the_limit_are_refused_and_the_limits_are_advertised() {
    testkit::privileged(
        "http2_streams_past_the_limit_are_refused_and_the_limits_are_advertised",
        2,
        || async {
            use h2frames::*;
            let streams = between(4, 16) as u32;
            let header_list = between(8 << 10, 32 << 10) as u32;
            let endpoint = leak(name(6));
            let gw = Gw::with_limits(
                vec![],
                vec![(endpoint, vec![])],
                &[],
                h2_limits(streams, header_list),
            )
            .await;
            let (_, token) = gw.token(endpoint);
            let s = TcpStream::connect(gw.addr).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            wr.write_all(H2_START).await.unwrap();
            let (kind, _, _, payload) = read(&mut rd).await.expect("the server's SETTINGS");
            assert_eq!(kind, SETTINGS);
            let advertised = settings(&payload);
            assert!(advertised.contains(&(0x3, streams)), "{advertised:?}");
            assert!(advertised.contains(&(0x6, header_list)), "{advertised:?}");
            let mut burst = frame(SETTINGS, 1, 0, &[]);
            for n in 0..=streams {
                let block = request_block(gw.addr, endpoint, &token, false);
                burst.extend(frame(HEADERS, END_HEADERS, 1 + 2 * n, &block));
            }
            wr.write_all(&burst).await.unwrap();
            let last = 1 + 2 * streams;
            let reset = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let (kind, _, stream, payload) = read(&mut rd).await.expect("open");
                    if kind == RST_STREAM {
                        return (stream, u32::from_be_bytes(payload[..4].try_into().unwrap()));
                    }
                }
            })
            .await
            .expect("a stream past the limit is reset");
            // REFUSED_STREAM, for the one past the limit only.
            assert_eq!(
                reset,
                (last, 0x7),
                "stream {} of {streams} allowed",
                reset.0
            );
        },
    );
}

#[test]
fn an_http2_continuation_flood_is_cut_off_near_the_header_list_limit() {
    testkit::privileged(
        "an_http2_continuation_flood_is_cut_off_near_the_header_list_limit",
        2,
        || async {
            use h2frames::*;
            let header_list = between(8 << 10, 32 << 10) as u32;
            let endpoint = leak(name(6));
            let gw = Gw::with_limits(vec![], vec![], &[], h2_limits(8, header_list)).await;
            let s = TcpStream::connect(gw.addr).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            wr.write_all(H2_START).await.unwrap();
            let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = written.clone();
            let addr = gw.addr;
            let flood = tokio::spawn(async move {
                let first = request_block(addr, endpoint, "x", false);
                let _ = wr.write_all(&frame(HEADERS, 0, 1, &first)).await;
                // CONTINUATION frames of random headers without END_HEADERS, up to 16 MiB.
                for _ in 0..1024 {
                    let fields: Vec<(String, String)> = (0..16)
                        .map(|_| (format!("x-{}", name(8)), name(1000)))
                        .collect();
                    let refs: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let f = frame(CONTINUATION, 0, 1, &block(&refs));
                    if wr.write_all(&f).await.is_err() {
                        return;
                    }
                    counter.fetch_add(f.len(), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
            let goaway = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match read(&mut rd).await {
                        Some((GOAWAY, ..)) | None => {
                            return written.load(std::sync::atomic::Ordering::Relaxed);
                        }
                        Some(_) => {}
                    }
                }
            })
            .await
            .expect("the flood is cut off");
            flood.abort();
            // The limit plus what was in flight: far from the 16 MiB sent otherwise.
            assert!(
                goaway < 1 << 20,
                "{goaway} bytes of one header block taken (limit {header_list})"
            );
        },
    );
}

#[test]
fn an_http2_rapid_reset_burst_gets_the_connection_closed() {
    testkit::privileged(
        "an_http2_rapid_reset_burst_gets_the_connection_closed",
        2,
        || async {
            use h2frames::*;
            let endpoint = leak(name(6));
            let gw =
                Gw::with_limits(vec![], vec![(endpoint, vec![])], &[], h2_limits(32, 16384)).await;
            let (_, token) = gw.token(endpoint);
            let s = TcpStream::connect(gw.addr).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            wr.write_all(H2_START).await.unwrap();
            let mut burst = frame(SETTINGS, 1, 0, &[]);
            let n = between(500, 1000) as u32;
            for i in 0..n {
                let block = request_block(gw.addr, endpoint, &token, true);
                burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block));
                burst.extend(frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes()));
            }
            let _ = wr.write_all(&burst).await;
            let code = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match read(&mut rd).await {
                        Some((GOAWAY, _, _, p)) => {
                            return Some(u32::from_be_bytes(p[4..8].try_into().unwrap()));
                        }
                        None => return None,
                        Some(_) => {}
                    }
                }
            })
            .await
            .expect("the connection is closed after the burst");
            // ENHANCE_YOUR_CALM.
            assert_eq!(code, Some(0xb), "{n} streams opened and reset");
        },
    );
}
