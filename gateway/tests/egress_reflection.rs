//! Reflection: what a bound upstream sends back never carries the real value in any form the
//! scrubber knows (headers, a value split over repeated headers, body frames of any size,
//! trailers; HTTP/1.1 and HTTP/2 to the sandbox), ranged requests cannot slice a value past
//! it, and TRACE/TRACK cannot echo one.
//!
//! As an attacker would: the sandbox asks the bound API (`/reflect` on the test upstream, an
//! API that echoes its caller's credential) for the injected value in every encoding, at
//! random offsets inside a longer encoded stream, in random frame sizes. The real value is
//! random per run. Real parts, as root: network namespaces, the proxy, a TLS upstream.

use testkit::egress::*;
use testkit::reflect::{ALL, below, holds, random_value, revealing};

fn random_hex(n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", below(256))).collect()
}

#[test]
fn a_bound_upstream_cannot_reflect_the_value_in_any_form() {
    testkit::privileged(
        "a_bound_upstream_cannot_reflect_the_value_in_any_form",
        4,
        || async {
            let value = random_value(16 + below(32));
            let fx =
                Fixture::with_values(limits(), [&value, "pw-basic-7a1b2c3d4e", "qk-3f2e1d0c9b"])
                    .await;
            let bearer = format!("Bearer {}", fx.token_ph());
            let mut cases = 0;
            for form in ALL {
                for h2 in [false, true] {
                    // Random bytes before and after the value inside the encoded stream (every
                    // base64 alignment over the runs), random frame size and header split.
                    let pre = random_hex(below(6));
                    let post = random_hex(below(4));
                    let path = format!(
                        "/reflect?form={form}&pre={pre}&post={post}&chunk={}&split={}&trailer=1",
                        1 + below(9),
                        1 + below(40)
                    );
                    let r = send(
                        &fx,
                        "api.test.example",
                        h2,
                        "GET",
                        &path,
                        &[("authorization", bearer.as_bytes())],
                        Vec::new(),
                    )
                    .await;
                    assert_eq!(
                        r.status,
                        200,
                        "{form} h2={h2}: {}",
                        String::from_utf8_lossy(&r.body)
                    );
                    let mut pre_bytes = hex::decode(&pre).unwrap();
                    pre_bytes.extend_from_slice(b"Bearer ");
                    let leak = revealing(
                        form,
                        &pre_bytes,
                        value.as_bytes(),
                        &hex::decode(&post).unwrap(),
                    );
                    assert!(leak.len() >= 8, "{form}: {leak:?}");
                    assert!(
                        !holds(&r.all(), &leak),
                        "{form} h2={h2}: {:?} reached the sandbox in {}",
                        String::from_utf8_lossy(&leak),
                        String::from_utf8_lossy(&r.all())
                    );
                    // The two halves of a value split over repeated headers, joined back.
                    let joined: Vec<u8> = String::from_utf8_lossy(&r.head)
                        .lines()
                        .filter_map(|l| l.strip_prefix("x-reflect-split: "))
                        .collect::<String>()
                        .into_bytes();
                    assert!(
                        !holds(&joined, &leak),
                        "{form} h2={h2}: split header rejoined"
                    );
                    assert!(r.body.starts_with(b"reflected: "), "{form}");
                    cases += 1;
                }
            }
            // The upstream did get the real value each time: the reflections were real.
            let seen = fx.upstream.seen();
            let with_value = seen
                .iter()
                .filter(|s| s.header("authorization") == Some(format!("Bearer {value}").as_bytes()))
                .count();
            assert_eq!(with_value, cases);
            assert!(
                seen.iter()
                    .all(|s| s.header("accept-encoding") == Some(&b"identity"[..]))
            );
        },
    );
}

#[test]
fn ranged_requests_are_made_whole_and_trace_is_refused() {
    testkit::privileged(
        "ranged_requests_are_made_whole_and_trace_is_refused",
        4,
        || async {
            let value = random_value(16 + below(32));
            let fx =
                Fixture::with_values(limits(), [&value, "pw-basic-7a1b2c3d4e", "qk-3f2e1d0c9b"])
                    .await;
            let bearer = format!("Bearer {}", fx.token_ph());
            let auth = ("authorization", bearer.as_bytes());
            let start = 1 + below(20);
            let range = format!("bytes={start}-{}", start + 3 + below(10));
            for h2 in [false, true] {
                // A slice of the reflection would cut the value where no form of the whole
                // matches: the Range is not forwarded to a host a credential is bound to.
                let r = send(
                    &fx,
                    "api.test.example",
                    h2,
                    "GET",
                    "/reflect?form=b64",
                    &[auth, ("range", range.as_bytes()), ("if-range", b"\"etag\"")],
                    Vec::new(),
                )
                .await;
                assert_eq!(r.status, 200);
                let last = fx.upstream.seen().last().unwrap().clone();
                assert_eq!(last.header("range"), None, "Range reached the bound host");
                assert_eq!(last.header("if-range"), None);
                // An upstream that answers with a part anyway is refused.
                let partial = send(
                    &fx,
                    "api.test.example",
                    h2,
                    "GET",
                    "/reflect?form=raw&status=206",
                    &[auth],
                    Vec::new(),
                )
                .await;
                assert_eq!(partial.status, 502);
                assert!(!holds(&partial.all(), value.as_bytes()));
                // TRACE and TRACK would echo the request with the credential in it.
                for method in ["TRACE", "TRACK"] {
                    let before = fx.upstream.seen().len();
                    let t = send(
                        &fx,
                        "api.test.example",
                        h2,
                        method,
                        "/",
                        &[auth],
                        Vec::new(),
                    )
                    .await;
                    assert_eq!(t.status, 405, "{method}");
                    assert_eq!(
                        fx.upstream.seen().len(),
                        before,
                        "{method} reached the upstream"
                    );
                }
            }
            // Where no credential is bound, a Range is the client's business.
            let r = send(
                &fx,
                "other.test.example",
                false,
                "GET",
                "/",
                &[("range", range.as_bytes())],
                Vec::new(),
            )
            .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                fx.upstream.seen().last().unwrap().header("range"),
                Some(range.as_bytes())
            );
            let events = fx.audit().await;
            assert!(denied_with(
                &events,
                "api.test.example:443",
                "partial response"
            ));
            assert!(denied_with(&events, "api.test.example:443", "TRACE/TRACK"));
            assert!(events.iter().all(|e| !e.detail.contains(&value)));
        },
    );
}
