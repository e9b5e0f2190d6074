//! Pure per-request logic: the checks every inner request (each HTTP/1.1 request, each HTTP/2
//! stream) must pass, hop-by-hop headers (RFC 9110 7.6.1), the search of a request's head for
//! what must not leave (placeholders of other hosts' credentials, real values in any form),
//! and the credential swap in the declared place (header, Basic auth, query parameter).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::{AUTHORIZATION, CONNECTION, HOST, IF_RANGE, PROXY_AUTHORIZATION, RANGE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use zeroize::Zeroizing;

use super::audit::Deny;
use super::policy::{CredentialRule, Presentation, Target, parse_authority};
use super::rewrite::Replacements;

/// Hop-by-hop headers: never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// RFC 3986 unreserved characters stay as they are.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// CR, LF and NUL have no place in a header (request smuggling, header injection).
pub fn check_header_bytes(headers: &HeaderMap) -> Result<(), Deny> {
    let bad = headers
        .values()
        .any(|v| v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    if bad { Err(Deny::BadHeader) } else { Ok(()) }
}

fn host_headers_match(headers: &HeaderMap, target: &Target, required: bool) -> Result<(), Deny> {
    let hosts: Vec<&HeaderValue> = headers.get_all(HOST).iter().collect();
    match hosts.as_slice() {
        [] if !required => Ok(()),
        [one] => {
            let text = one.to_str().map_err(|_| Deny::HostMismatch)?;
            match parse_authority(text, 443) {
                Ok(t) if &t == target => Ok(()),
                _ => Err(Deny::HostMismatch),
            }
        }
        _ => Err(Deny::HostMismatch),
    }
}

/// TRACE (and IIS's TRACK) answer with the request as the upstream received it: with the real
/// credential in it, past the response scrubber's forms if the upstream encodes it.
fn check_method(method: &Method) -> Result<(), Deny> {
    if method == Method::TRACE || method.as_str().eq_ignore_ascii_case("TRACK") {
        return Err(Deny::TraceMethod);
    }
    Ok(())
}

/// Checks one request inside an intercepted TLS connection to `target`.
pub fn check_tunneled(parts: &Parts, target: &Target) -> Result<(), Deny> {
    if parts.method == Method::CONNECT {
        return Err(Deny::ConnectInTunnel);
    }
    check_method(&parts.method)?;
    check_header_bytes(&parts.headers)?;
    if parts.version == Version::HTTP_2 {
        if parts.uri.scheme_str() != Some("https") {
            return Err(Deny::NotOriginForm);
        }
        let authority = parts.uri.authority().ok_or(Deny::HostMismatch)?;
        match parse_authority(authority.as_str(), 443) {
            Ok(t) if &t == target => {}
            _ => return Err(Deny::HostMismatch),
        }
        host_headers_match(&parts.headers, target, false)
    } else {
        if parts.uri.scheme().is_some()
            || parts.uri.authority().is_some()
            || !parts.uri.path().starts_with('/')
        {
            return Err(Deny::NotOriginForm);
        }
        host_headers_match(&parts.headers, target, true)
    }
}

/// Checks a plain-HTTP proxy request (absolute-form `http://host[:port]/…`); returns its target.
pub fn check_plain(parts: &Parts) -> Result<Target, Deny> {
    check_method(&parts.method)?;
    check_header_bytes(&parts.headers)?;
    if parts.uri.scheme_str() != Some("http") {
        return Err(Deny::NotProxyRequest);
    }
    let authority = parts.uri.authority().ok_or(Deny::NotProxyRequest)?;
    let target = parse_authority(authority.as_str(), 80)?;
    let hosts: Vec<&HeaderValue> = parts.headers.get_all(HOST).iter().collect();
    match hosts.as_slice() {
        [] => Ok(target),
        [one] => match one.to_str().ok().map(|h| parse_authority(h, 80)) {
            Some(Ok(t)) if t == target => Ok(target),
            _ => Err(Deny::HostMismatch),
        },
        _ => Err(Deny::HostMismatch),
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// For a host a credential is bound to: a ranged response could hand out a slice of a
/// reflected value that no form of the whole value matches, so the whole is always asked for.
pub fn strip_ranges(headers: &mut HeaderMap) {
    headers.remove(RANGE);
    headers.remove(IF_RANGE);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The decoded `user:password` of a Basic `Authorization` value.
fn basic_decoded(value: &HeaderValue) -> Option<Zeroizing<Vec<u8>>> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    B64.decode(rest.trim()).ok().map(Zeroizing::new)
}

/// The first needle of `set` in the request's head, and where: header names and values (Basic
/// credentials decoded), the path and the query, each as sent and percent-decoded.
pub fn needle_place(parts: &Parts, set: &Replacements) -> Option<(usize, &'static str)> {
    for (name, value) in &parts.headers {
        let decoded = (name == AUTHORIZATION || name == PROXY_AUTHORIZATION)
            .then(|| basic_decoded(value))
            .flatten();
        let found = set
            .first_in(name.as_str().as_bytes())
            .or_else(|| set.first_in(value.as_bytes()))
            .or_else(|| decoded.and_then(|d| set.first_in(&d)));
        if let Some(i) = found {
            return Some((i, "header"));
        }
    }
    let path = parts.uri.path();
    let decoded = Zeroizing::new(percent_decode_str(path).collect::<Vec<u8>>());
    if let Some(i) = set
        .first_in(path.as_bytes())
        .or_else(|| set.first_in(&decoded))
    {
        return Some((i, "path"));
    }
    let q = parts.uri.query()?;
    let plus_as_space = Zeroizing::new(q.replace('+', " "));
    let decoded = Zeroizing::new(percent_decode_str(&plus_as_space).collect::<Vec<u8>>());
    set.first_in(q.as_bytes())
        .or_else(|| set.first_in(&decoded))
        .map(|i| (i, "query"))
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

fn decoded(s: &str) -> Vec<u8> {
    percent_decode_str(s).collect()
}

/// Whether the declared place of `cred` holds its placeholder (so the value is to be injected).
pub fn wants(parts: &Parts, cred: &CredentialRule) -> bool {
    let p = cred.placeholder.as_bytes();
    match &cred.inject {
        Presentation::Header {
            name,
            prefix,
            suffix,
        } => parts
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == format!("{prefix}{}{suffix}", cred.placeholder).as_bytes()),
        Presentation::Basic => parts
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .any(|v| basic_decoded(v).is_some_and(|d| contains(&d, p))),
        Presentation::Query { param } => parts.uri.query().is_some_and(|q| {
            query_pairs(q).any(|(k, v)| decoded(k) == param.as_bytes() && decoded(v) == p)
        }),
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(haystack.len() + with.len()));
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn sensitive(bytes: &[u8], cred: &CredentialRule) -> Result<HeaderValue, Deny> {
    let mut v = HeaderValue::from_bytes(bytes).map_err(|_| Deny::CredentialUnavailable {
        credential: cred.name.to_string(),
    })?;
    v.set_sensitive(true); // HTTP/2: never indexed by HPACK
    Ok(v)
}

/// Puts the real `value` of `cred` where its placeholder stands in the declared place. (What
/// comes back is scrubbed of every form of the value: `super::needles`.)
pub fn inject(parts: &mut Parts, cred: &CredentialRule, value: &[u8]) -> Result<(), Deny> {
    match &cred.inject {
        Presentation::Header {
            name,
            prefix,
            suffix,
        } => inject_header(parts, cred, value, (name, prefix, suffix)),
        Presentation::Basic => inject_basic(parts, cred, value),
        Presentation::Query { param } => inject_query(parts, cred, value, param),
    }
}

/// In a header: a value exactly `prefix placeholder suffix` becomes the real one.
fn inject_header(
    parts: &mut Parts,
    cred: &CredentialRule,
    value: &[u8],
    (name, prefix, suffix): (&http::HeaderName, &str, &str),
) -> Result<(), Deny> {
    let wanted = format!("{prefix}{}{suffix}", cred.placeholder);
    let mut real = Zeroizing::new(prefix.as_bytes().to_vec());
    real.extend_from_slice(value);
    real.extend_from_slice(suffix.as_bytes());
    let values: Vec<HeaderValue> = parts.headers.get_all(name).iter().cloned().collect();
    parts.headers.remove(name);
    for v in values {
        if v.as_bytes() == wanted.as_bytes() {
            parts.headers.append(name, sensitive(&real, cred)?);
        } else {
            parts.headers.append(name, v);
        }
    }
    Ok(())
}

/// HTTP Basic: the placeholder inside the decoded `user:password` is swapped.
fn inject_basic(parts: &mut Parts, cred: &CredentialRule, value: &[u8]) -> Result<(), Deny> {
    let ph = cred.placeholder.as_bytes();
    let values: Vec<HeaderValue> = parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .cloned()
        .collect();
    parts.headers.remove(AUTHORIZATION);
    for v in values {
        match basic_decoded(&v).filter(|d| contains(d, ph)) {
            Some(d) => {
                let swapped = replace_all(&d, ph, value);
                let encoded = Zeroizing::new(B64.encode(&*swapped));
                let mut header = Zeroizing::new(b"Basic ".to_vec());
                header.extend_from_slice(encoded.as_bytes());
                parts
                    .headers
                    .append(AUTHORIZATION, sensitive(&header, cred)?);
            }
            None => {
                parts.headers.append(AUTHORIZATION, v);
            }
        }
    }
    Ok(())
}

/// A query parameter whose decoded value is the placeholder gets the real value, encoded.
fn inject_query(
    parts: &mut Parts,
    cred: &CredentialRule,
    value: &[u8],
    param: &str,
) -> Result<(), Deny> {
    let ph = cred.placeholder.as_bytes();
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    // The value's bytes, encoded as they are: a value that is not UTF-8 must not be
    // replaced by U+FFFD on its way in.
    let encoded = Zeroizing::new(percent_encode(value, QUERY_VALUE).to_string());
    let rebuilt: Vec<String> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if decoded(k) == param.as_bytes() && decoded(v) == ph {
                format!("{k}={}", encoded.as_str())
            } else {
                kv.to_owned()
            }
        })
        .collect();
    let pq = Zeroizing::new(format!("{}?{}", parts.uri.path(), rebuilt.join("&")));
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(pq.parse().map_err(|_| Deny::CredentialUnavailable {
        credential: cred.name.to_string(),
    })?);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| Deny::BadAuthority)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SecretName;

    const PH: &str = "gmcp_ph_00112233445566778899aabbccddeeff";

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn target() -> Target {
        Target {
            host: "api.example.com".into(),
            port: 443,
        }
    }

    fn cred(inject: Presentation) -> CredentialRule {
        CredentialRule {
            name: SecretName::parse("TOKEN").unwrap(),
            placeholder: PH.into(),
            hosts: vec!["api.example.com".into()],
            inject,
        }
    }

    #[test]
    fn tunneled_requests() {
        let ok = parts(http::Request::get("/v1?x=1").header("host", "API.example.com:443"));
        assert_eq!(check_tunneled(&ok, &target()), Ok(()));
        let cases = [
            (
                http::Request::get("/").header("host", "other.example.com"),
                Deny::HostMismatch,
            ),
            (http::Request::get("/"), Deny::HostMismatch),
            (
                http::Request::get("/")
                    .header("host", "api.example.com")
                    .header("host", "api.example.com"),
                Deny::HostMismatch,
            ),
            (
                http::Request::get("/").header("host", "api.example.com:8443"),
                Deny::HostMismatch,
            ),
            (
                http::Request::get("https://other.example.com/").header("host", "api.example.com"),
                Deny::NotOriginForm,
            ),
            (
                http::Request::connect("other.example.com:443").header("host", "api.example.com"),
                Deny::ConnectInTunnel,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check_tunneled(&parts(req), &target()), Err(want));
        }
        let h2 = |uri: &str| {
            parts(
                http::Request::get(uri)
                    .version(Version::HTTP_2)
                    .header("x", "y"),
            )
        };
        assert_eq!(
            check_tunneled(&h2("https://api.example.com/x"), &target()),
            Ok(())
        );
        assert_eq!(
            check_tunneled(&h2("https://other.example.com/x"), &target()),
            Err(Deny::HostMismatch)
        );
        assert_eq!(
            check_tunneled(&h2("http://api.example.com/x"), &target()),
            Err(Deny::NotOriginForm)
        );
        let mut bad = h2("https://api.example.com/x");
        bad.headers
            .insert("host", HeaderValue::from_static("other.example.com"));
        assert_eq!(check_tunneled(&bad, &target()), Err(Deny::HostMismatch));
    }

    #[test]
    fn header_bytes() {
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("fine\tvalue"));
        assert_eq!(check_header_bytes(&h), Ok(()));
        // http refuses CR/LF/NUL itself; obs-text bytes pass it, and we still catch NUL-free ones.
        assert!(HeaderValue::from_bytes(b"a\r\nb").is_err());
    }

    #[test]
    fn plain_requests() {
        let p = parts(
            http::Request::get("http://plain.example.com/x").header("host", "plain.example.com"),
        );
        assert_eq!(check_plain(&p).unwrap().port, 80);
        let p = parts(
            http::Request::get("http://plain.example.com/x").header("host", "evil.example.com"),
        );
        assert_eq!(check_plain(&p), Err(Deny::HostMismatch));
        let p = parts(http::Request::get("/x"));
        assert_eq!(check_plain(&p), Err(Deny::NotProxyRequest));
        let p = parts(http::Request::get("http://10.0.0.1/x"));
        assert_eq!(check_plain(&p), Err(Deny::IpLiteral));
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("accept", "*/*"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn header_swap() {
        let c = cred(Presentation::Header {
            name: HeaderName::from_static("authorization"),
            prefix: "Bearer ".into(),
            suffix: String::new(),
        });
        let mut p = parts(http::Request::get("/").header("authorization", format!("Bearer {PH}")));
        assert!(wants(&p, &c));
        inject(&mut p, &c, b"sk-real").unwrap();
        assert_eq!(p.headers["authorization"], "Bearer sk-real");
        assert!(p.headers["authorization"].is_sensitive());
        // Not the declared format: nothing injected.
        let p = parts(http::Request::get("/").header("authorization", format!("token {PH}")));
        assert!(!wants(&p, &c));
        // A value that cannot be a header is refused, not sent.
        let mut p = parts(http::Request::get("/").header("authorization", format!("Bearer {PH}")));
        assert!(inject(&mut p, &c, b"bad\r\nvalue").is_err());
    }

    #[test]
    fn basic_swap() {
        let c = cred(Presentation::Basic);
        let user_ph = B64.encode(format!("alice:{PH}"));
        let mut p =
            parts(http::Request::get("/").header("authorization", format!("Basic {user_ph}")));
        assert!(wants(&p, &c));
        inject(&mut p, &c, b"s3cr:et").unwrap();
        let sent = p.headers["authorization"].to_str().unwrap().to_owned();
        assert_eq!(sent, format!("Basic {}", B64.encode("alice:s3cr:et")));
    }

    #[test]
    fn query_swap() {
        let c = cred(Presentation::Query {
            param: "api_key".into(),
        });
        let mut p = parts(http::Request::get(format!("/v1/x?a=1&api_key={PH}&b=2")));
        assert!(wants(&p, &c));
        inject(&mut p, &c, b"k/e y").unwrap();
        assert_eq!(p.uri.query(), Some("a=1&api_key=k%2Fe%20y&b=2"));
        let p = parts(http::Request::get(format!("/v1/x?other={PH}")));
        assert!(!wants(&p, &c));
    }

    /// Found by the `rewriter` fuzz target: a value that is not UTF-8 reached the query as
    /// U+FFFD.
    #[test]
    fn query_swap_keeps_every_byte_of_the_value() {
        let c = cred(Presentation::Query {
            param: "api_key".into(),
        });
        let mut p = parts(http::Request::get(format!("/v1/x?api_key={PH}")));
        inject(&mut p, &c, b"k\xff\xc3").unwrap();
        assert_eq!(p.uri.query(), Some("api_key=k%FF%C3"));
    }

    #[test]
    fn the_head_is_searched_everywhere_a_value_can_hide() {
        let ph = Zeroizing::new(PH.as_bytes().to_vec());
        let set = Replacements::exact(vec![(ph.clone(), ph)])
            .unwrap()
            .unwrap();
        for (req, place) in [
            (
                http::Request::get("/").header("x-anything", format!("pre{PH}post")),
                "header",
            ),
            (
                http::Request::get("/").header(
                    "authorization",
                    format!("Basic {}", B64.encode(format!("u:{PH}"))),
                ),
                "header",
            ),
            (http::Request::get(format!("/files/{PH}")), "path"),
            (
                http::Request::get(format!("/files/%67mcp_ph_{}", &PH[8..])),
                "path",
            ),
            (http::Request::get(format!("/?q={PH}")), "query"),
            (
                http::Request::get(format!("/?q=%67mcp_ph_{}", &PH[8..])),
                "query",
            ),
        ] {
            assert_eq!(needle_place(&parts(req), &set), Some((0, place)));
        }
        let clean = parts(http::Request::get("/?q=gmcp_ph_").header("x", "y"));
        assert_eq!(needle_place(&clean, &set), None);
    }

    #[test]
    fn trace_and_track_are_refused() {
        for m in ["TRACE", "TRACK", "track"] {
            let p = parts(
                http::Request::builder()
                    .method(m)
                    .uri("/")
                    .header("host", "api.example.com"),
            );
            assert_eq!(check_tunneled(&p, &target()), Err(Deny::TraceMethod), "{m}");
        }
    }
}
