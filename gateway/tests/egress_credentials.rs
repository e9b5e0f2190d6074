//! The egress proxy's credential swap: a placeholder is swapped for the real credential in the
//! declared place only and scrubbed from what comes back, a placeholder bound to another host
//! is refused before anything reaches it, and plain HTTP is allowed only where declared and never
//! carries a placeholder.
//!
//! Real parts, as root: real network namespaces and veths, a fake HTTPS upstream in its own
//! netns, the proxy on the host side of a "client" netns that plays the sandbox, and real
//! clients (curl, and raw rustls/TCP clients made inside the client netns).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::Version;
use testkit::egress::*;

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
            // (the upstream knows the value from an earlier request: the Basic one above).
            let unprompted = fx.curl(&["-i", "https://api.test.example/reflect?from=last&chunk=2"]);
            assert_eq!(unprompted.code, 0);
            assert!(
                !contains(&unprompted.stdout, B64.encode(BASIC_VALUE).as_bytes()),
                "{}",
                unprompted.text()
            );
            let basic_ph = B64.encode(format!("alice:{}", fx.ph["BASIC_PW"]));
            assert!(
                unprompted
                    .text()
                    .contains(&format!("reflected: Basic {basic_ph} end")),
                "{}",
                unprompted.text()
            );

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
