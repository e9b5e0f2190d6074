//! HTTP/2 floods against the MCP front, with frames written by hand (no client library sends
//! these): streams past the concurrency limit, a CONTINUATION flood, a rapid-reset burst. Limits
//! are chosen at random; every test runs in its own network namespace.

use testkit::mcp as mcp_support;
use testkit::names::{between, random_name as name};

use std::net::SocketAddr;
use std::time::Duration;

use gateway::mcp::front::{ConnLimits, FrontLimits};
use mcp_support::Gw;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

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
