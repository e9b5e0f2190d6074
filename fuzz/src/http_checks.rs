//! The HTTP request checks of the egress proxy (`egress::request::check_tunneled`,
//! `check_plain`) behind hyper's HTTP/1.1 server, as the proxy runs them, against raw request
//! bytes written to smuggle: duplicate Host, Host/SNI mismatches, Content-Length together with
//! Transfer-Encoding, duplicate or odd Content-Length, obs-fold, bare LF, CR and NUL in values,
//! requests hidden in bodies.
//!
//! Properties: no request that passes the checks breaks what they promise, stated against the
//! raw bytes: exactly one Host, naming the TLS connection's host (SNI) and port; origin-form;
//! not CONNECT; no folded line or CR/LF/NUL in any header. What would be forwarded is framed
//! without ambiguity: at most one Content-Length, equal to the body read, and no
//! Transfer-Encoding. The proxy sees only the requests written, in their order (none hidden
//! in a body is ever served), and nothing after a request framed both ways (RFC 9112 6.1).
//! HTTP/2 requests (built as hyper hands them over) pass only with `https` and an
//! `:authority` and Host naming the SNI.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use gateway::egress::Target;
use gateway::egress::request::{check_plain, check_tunneled, strip_hop_by_hop};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Target as FuzzTarget, pick};

pub const TARGET: FuzzTarget = FuzzTarget {
    name: "http_checks",
    check,
    ci_cases: 20_000,
};

/// The path of a request planted inside a body: never to be served.
const SMUGGLED: &str = "/smuggled";

/// One request head as written, with what it was meant to say.
#[derive(Debug)]
struct Head {
    path: String,
    request_target: String,
    method: &'static str,
    hosts: Vec<String>,
    lengths: Vec<String>,
    te: Option<&'static str>,
    folded: bool,
    eol: &'static str,
}

fn host_value(u: &mut Unstructured<'_>, t: &Target) -> Result<String> {
    let h = &t.host;
    Ok(match u.int_in_range(0..=13)? {
        0..=3 => h.clone(),
        4 => pick::recase(u, h)?,
        5 => format!("{h}:{}", t.port),
        6 => format!("{h}.:{}", t.port),
        7 => format!("{h}:{}", t.port.wrapping_add(1)),
        8 => format!("other.{h}"),
        9 => format!("user@{h}"),
        10 => format!(" {h}\t"),
        11 => format!("{h}:0{}", t.port),
        12 => format!("{h}:+{}", t.port),
        _ => format!("{h}:{}:1", t.port),
    })
}

fn head(u: &mut Unstructured<'_>, t: &Target, index: usize) -> Result<Head> {
    let path = format!("/r{index}-{}", u.int_in_range(0..=9999u16)?);
    let request_target = match u.int_in_range(0..=9)? {
        0 => format!("https://{}{path}", t.host),
        1 => format!("http://{}{path}", t.host),
        2 => format!("{}:{}", t.host, t.port),
        3 => "*".into(),
        _ => format!("{path}?q={}", u.int_in_range(0..=9u8)?),
    };
    let method = *u.choose(&["GET", "GET", "POST", "POST", "PUT", "CONNECT", "OPTIONS"])?;
    let hosts = (0..*u.choose(&[1, 1, 1, 1, 0, 2])?)
        .map(|_| host_value(u, t))
        .collect::<Result<_>>()?;
    let lengths = (0..*u.choose(&[0, 0, 1, 1, 2])?)
        .map(|_| {
            Ok((*u.choose(&[
                "0",
                "5",
                "5",
                "05",
                "+5",
                "5, 5",
                "-1",
                "",
                "18446744073709551616",
            ])?)
            .to_owned())
        })
        .collect::<Result<_>>()?;
    let te = if u.ratio(1, 3)? {
        Some(*u.choose(&[
            "chunked",
            "chunked",
            "gzip, chunked",
            "chunked, gzip",
            "Chunked",
            "xchunked",
            "chunked\t",
        ])?)
    } else {
        None
    };
    Ok(Head {
        path,
        request_target,
        method,
        hosts,
        lengths,
        te,
        folded: u.ratio(1, 8)?,
        eol: if u.ratio(1, 8)? { "\n" } else { "\r\n" },
    })
}

/// The bytes of `h` and the body its framing intends (chunked when Transfer-Encoding is
/// there, else the first Content-Length's worth), with a request planted inside.
fn render(u: &mut Unstructured<'_>, h: &Head, t: &Target) -> Result<Vec<u8>> {
    // (A planted request after a head without a body would be a real pipelined request.)
    let eol = h.eol;
    let version = *u.choose(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])?;
    let mut lines = vec![format!("{} {} {version}", h.method, h.request_target)];
    let mut headers: Vec<(String, String)> = Vec::new();
    headers.extend(h.hosts.iter().map(|v| ("Host".to_owned(), v.clone())));
    headers.extend(
        h.lengths
            .iter()
            .map(|v| ("Content-Length".to_owned(), v.clone())),
    );
    headers.extend(h.te.map(|v| ("Transfer-Encoding".to_owned(), v.to_owned())));
    headers.push(("X-Note".into(), "a".into()));
    // Order and case vary: some parsers care which of two framing headers comes first.
    for i in (1..headers.len()).rev() {
        headers.swap(i, u.int_in_range(0..=i)?);
    }
    for (name, value) in headers {
        let name = pick::recase(u, &name)?;
        lines.push(format!("{name}: {value}"));
        if h.folded && name.eq_ignore_ascii_case("x-note") {
            lines.push(format!(" folded{}", *u.choose(&["", "\r", "\0"])?));
        }
    }
    let mut out = lines.join(eol).into_bytes();
    out.extend_from_slice(format!("{eol}{eol}").as_bytes());
    let planted = format!("GET {SMUGGLED} HTTP/1.1\r\nHost: {}\r\n\r\n", t.host);
    if h.te.is_some() {
        out.extend_from_slice(format!("{:x}\r\n{planted}\r\n0\r\n\r\n", planted.len()).as_bytes());
    } else if let Some(n) = h.lengths.first().and_then(|v| v.parse::<usize>().ok()) {
        let mut body = planted.into_bytes();
        body.resize(n, b'x');
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// What the proxy's service saw of one request.
#[derive(Debug)]
struct Seen {
    path: String,
    tunneled_ok: bool,
    plain_ok: bool,
    forwarded_lengths: Vec<String>,
    forwarded_te: bool,
    body_len: Option<usize>,
}

/// The raw Host value names `t` (host case-insensitive, one trailing dot, port defaulting to
/// `default`), stated independently of `policy::parse_authority`.
fn names(value: &str, t: &Target, default: u16) -> bool {
    let v = value.to_ascii_lowercase();
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_owned(), p.parse::<u32>().ok())
        }
        Some(_) => return false,
        None => (v.clone(), Some(u32::from(default))),
    };
    host.strip_suffix('.').unwrap_or(&host) == t.host && port == Some(u32::from(t.port))
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

/// Serves `raw` on hyper's HTTP/1.1 server set up as the proxy's (`intercept.rs`,
/// `listener.rs`: header timeout, buffer and head limits, keep-alive), recording each request.
fn serve(raw: Vec<u8>, t: &Target) -> Vec<Seen> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let target = t.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (log, target) = (log.clone(), target.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            let tunneled_ok = check_tunneled(&parts, &target).is_ok();
            // As `listener::outer` dispatches: CONNECT opens a tunnel, all else is plain.
            let plain_ok = parts.method != http::Method::CONNECT && check_plain(&parts).is_ok();
            strip_hop_by_hop(&mut parts.headers);
            let forwarded_lengths = parts
                .headers
                .get_all(CONTENT_LENGTH)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let body_len = body.collect().await.ok().map(|b| b.to_bytes().len());
            log.lock().expect("not poisoned").push(Seen {
                path: parts.uri.path().to_owned(),
                tunneled_ok,
                plain_ok,
                forwarded_lengths,
                forwarded_te: parts.headers.contains_key(TRANSFER_ENCODING),
                body_len,
            });
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(2))
            .max_buf_size(16 * 1024)
            .max_header_size(16 * 1024)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(server), svc);
        let talk = async move {
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async move {
                let _ = wr.write_all(&raw).await;
                let _ = wr.shutdown().await;
            };
            let mut sink = Vec::new();
            let _ = tokio::join!(write, rd.read_to_end(&mut sink));
        };
        let done =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(conn, talk) });
        assert!(
            done.await.is_ok(),
            "the connection neither ended nor failed"
        );
    });
    Arc::try_unwrap(seen)
        .expect("the service is gone")
        .into_inner()
        .expect("not poisoned")
}

fn check_h1(u: &mut Unstructured<'_>, t: &Target) -> Result<()> {
    let heads: Vec<Head> = (0..u.int_in_range(1..=2)?)
        .map(|i| head(u, t, i))
        .collect::<Result<_>>()?;
    let mut raw = Vec::new();
    for h in &heads {
        raw.extend(render(u, h, t)?);
    }
    // One byte broken now and then: the heads no longer say what the bytes do, so only the
    // properties that need no head (framing, order, nothing hidden served) are checked then.
    let mutated = u.ratio(1, 16)? && !raw.is_empty();
    if mutated {
        let at = u.choose_index(raw.len())?;
        raw[at] = *u.choose(&[0, b'\r', b'\n', b' ', 0x80])?;
    }
    let shown = String::from_utf8_lossy(&raw).into_owned();
    let seen = serve(raw, t);
    for (i, s) in seen.iter().enumerate() {
        assert_ne!(
            s.path, SMUGGLED,
            "a request hidden in a body was served: {shown:?}"
        );
        let h = heads
            .get(i)
            .unwrap_or_else(|| panic!("request {i} served, {} written", heads.len()));
        if mutated {
            assert!(
                s.forwarded_lengths.len() <= 1 && !s.forwarded_te,
                "{shown:?}: {s:?}"
            );
            continue;
        }
        if s.path != h.path {
            assert!(
                !s.tunneled_ok && !s.plain_ok,
                "{s:?} passed as request {i} of {heads:?}"
            );
            continue;
        }
        if i > 0 {
            let prev = &heads[i - 1];
            assert!(
                prev.te.is_none() || prev.lengths.is_empty(),
                "a request served after one framed by both Content-Length and Transfer-Encoding"
            );
        }
        assert!(
            s.forwarded_lengths.len() <= 1,
            "{:?} forwarded",
            s.forwarded_lengths
        );
        assert!(!s.forwarded_te, "Transfer-Encoding forwarded");
        if let (Some(cl), Some(n)) = (s.forwarded_lengths.first(), s.body_len) {
            assert_eq!(
                cl.parse::<usize>().ok(),
                Some(n),
                "Content-Length {cl} on a body of {n}"
            );
        }
        let clean = !h.folded && h.method != "CONNECT";
        // Lengths as numbers: `5` and `05` say the same, which RFC 9110 lets a server merge.
        let distinct: std::collections::HashSet<Option<u64>> =
            h.lengths.iter().map(|v| v.parse().ok()).collect();
        if s.tunneled_ok {
            assert!(
                clean && h.request_target.starts_with('/'),
                "{shown:?} passed the tunnel checks"
            );
            assert_eq!(h.hosts.len(), 1, "{h:?}: passed without exactly one Host");
            assert!(
                names(h.hosts[0].trim_matches([' ', '\t']), t, 443),
                "{h:?} passed for {t:?}"
            );
            // With Transfer-Encoding the lengths are dropped unread (RFC 9112 6.3: it
            // overrides them), and nothing follows on the connection (checked above).
            assert!(
                h.te.is_some() || distinct.len() <= 1,
                "{h:?}: differing Content-Lengths passed"
            );
        }
        if s.plain_ok {
            assert!(
                clean && h.request_target.starts_with("http://"),
                "{h:?} passed as plain"
            );
            assert!(h.hosts.len() <= 1, "{h:?} passed as plain");
            assert!(
                h.te.is_some() || distinct.len() <= 1,
                "{h:?} passed as plain"
            );
        }
    }
    Ok(())
}

/// HTTP/2: `:authority`, scheme and any Host header against the SNI, on the request as hyper's
/// HTTP/2 server hands it over (h2 itself refuses connection-specific headers).
fn check_h2(u: &mut Unstructured<'_>, t: &Target) -> Result<()> {
    let authority = host_value(u, t)?;
    let scheme = *u.choose(&["https", "https", "http"])?;
    let Ok(uri) = format!("{scheme}://{authority}/x").parse::<http::Uri>() else {
        return Ok(());
    };
    let mut req = Request::get(uri).version(Version::HTTP_2);
    let hosts: Vec<String> = (0..*u.choose(&[0, 0, 1, 2])?)
        .map(|_| host_value(u, t))
        .collect::<Result<_>>()?;
    for h in &hosts {
        req = req.header(HOST, h.as_str());
    }
    let Ok(req) = req.body(()) else {
        return Ok(());
    };
    let (parts, ()) = req.into_parts();
    if check_tunneled(&parts, t).is_ok() {
        assert_eq!(scheme, "https");
        assert!(
            names(&authority, t, 443),
            ":authority {authority:?} passed for {t:?}"
        );
        assert!(hosts.len() <= 1, "two Host headers passed");
        assert!(
            hosts.iter().all(|h| names(h, t, 443)),
            "Host {hosts:?} passed for {t:?}"
        );
    }
    Ok(())
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let t = Target {
        host: pick::host(u)?,
        port: *u.choose(&[443, 443, 8443])?,
    };
    if u.ratio(1, 4)? {
        check_h2(u, &t)
    } else {
        check_h1(u, &t)
    }
}
