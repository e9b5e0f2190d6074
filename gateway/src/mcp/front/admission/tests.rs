//! Admission checks on headers and bodies alone, plus token checks against a real store.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Uri};
use serde_json::json;

use super::*;
use crate::store::{SqliteStore, TokenRecord};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn origins() -> Origins {
    Origins {
        hosts: vec!["gw.test:443".into()],
        origins: vec!["https://app.test".into()],
    }
}

fn uri() -> Uri {
    Uri::from_static("/mcp/e")
}

#[test]
fn the_host_is_compared_without_regard_to_case() {
    let h = headers(&[("host", "GW.test:443")]);
    assert_eq!(origins().check(&h, &uri()), Ok(()));
}

#[test]
fn an_http2_authority_stands_for_a_missing_host_header() {
    let uri = Uri::from_static("https://gw.test:443/mcp/e");
    assert_eq!(origins().check(&HeaderMap::new(), &uri), Ok(()));
}

#[test]
fn a_browser_origin_not_configured_is_refused() {
    let h = headers(&[("host", "gw.test:443"), ("origin", "https://evil.test")]);
    assert_eq!(
        origins().check(&h, &uri()),
        Err(Refusal::OriginNotAllowed {
            origin: "https://evil.test".into()
        })
    );
}

#[test]
fn a_post_must_be_json() {
    let h = headers(&[("content-type", "text/plain")]);
    assert_eq!(check_post_headers(&h, 10), Err(Refusal::NotJson));
}

#[test]
fn a_post_must_accept_json_back() {
    let h = headers(&[
        ("content-type", "application/json; charset=utf-8"),
        ("accept", "text/event-stream"),
    ]);
    assert_eq!(check_post_headers(&h, 10), Err(Refusal::JsonNotAccepted));
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_reading() {
    let h = headers(&[
        ("content-type", "application/json"),
        ("content-length", "11"),
    ]);
    assert_eq!(check_post_headers(&h, 10), Err(Refusal::BodyTooLarge));
}

#[tokio::test]
async fn a_body_longer_than_the_limit_is_refused_while_reading() {
    let body = http_body_util::Full::new(Bytes::from(vec![b' '; 11]));
    assert_eq!(
        read_message(body, 10, std::time::Duration::from_secs(5))
            .await
            .unwrap_err(),
        Refusal::BodyTooLarge
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    // A body that never ends: the deadline is for the whole of it.
    let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >());
    assert_eq!(
        read_message(body, 10, std::time::Duration::from_millis(50))
            .await
            .unwrap_err(),
        Refusal::BodyTimeout
    );
}

#[test]
fn a_batch_is_refused() {
    assert_eq!(
        parse_message(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err(),
        Refusal::Batch
    );
}

#[test]
fn bytes_that_are_not_json_are_a_parse_error() {
    assert_eq!(parse_message(b"{").unwrap_err(), Refusal::MalformedJson);
}

#[test]
fn an_unknown_revision_is_refused_and_named_in_the_audit() {
    let msg = Message::parse(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).unwrap();
    let h = headers(&[("mcp-protocol-version", "1999-01-01")]);
    assert_eq!(
        revision(&h, &msg),
        Err(Refusal::UnsupportedVersion {
            version: "1999-01-01".into()
        })
    );
}

#[test]
fn the_stateless_revision_needs_the_name_header_of_a_call() {
    let msg = Message::parse(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "s__t"}}))
    .unwrap();
    let h = headers(&[
        ("mcp-protocol-version", STATELESS_REVISION),
        ("mcp-method", "tools/call"),
    ]);
    assert_eq!(revision(&h, &msg), Err(Refusal::HeadersMismatch));
    let h = headers(&[
        ("mcp-protocol-version", STATELESS_REVISION),
        ("mcp-method", "tools/call"),
        ("mcp-name", "s__t"),
    ]);
    assert_eq!(revision(&h, &msg), Ok(Revision::Stateless));
}

/// A store with one token for endpoint `e`, changed by `edit` first; the token's header.
fn store_with_token(
    edit: impl FnOnce(&mut TokenRecord),
) -> (tempfile::TempDir, Arc<dyn Store>, HeaderMap) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    store
        .endpoint_add(&crate::store::EndpointRecord {
            name: "e".into(),
            servers: Vec::new(),
        })
        .unwrap();
    let t = tokens::generate().unwrap();
    let mut record = TokenRecord {
        id: t.id.clone(),
        endpoint: "e".into(),
        hash: t.hash.to_vec(),
        label: "test".into(),
        created_ms: now_ms(),
        expires_ms: None,
        revoked_ms: None,
    };
    edit(&mut record);
    store.token_add(&record).unwrap();
    let h = headers(&[("authorization", &format!("Bearer {}", &*t.secret))]);
    (dir, store, h)
}

#[test]
fn a_live_token_for_the_endpoint_names_its_caller() {
    let (_dir, store, h) = store_with_token(|_| {});
    let caller = authenticate(&*store, "e", &h).unwrap();
    assert_eq!(caller.endpoint, "e");
}

#[test]
fn an_expired_token_is_refused() {
    let (_dir, store, h) = store_with_token(|t| t.expires_ms = Some(1));
    assert!(matches!(
        authenticate(&*store, "e", &h),
        Err(Refusal::ExpiredToken { .. })
    ));
}

#[test]
fn a_token_for_another_endpoint_is_refused() {
    let (_dir, store, h) = store_with_token(|_| {});
    assert!(matches!(
        authenticate(&*store, "f", &h),
        Err(Refusal::TokenForAnotherEndpoint { .. })
    ));
}

#[test]
fn a_token_of_the_wrong_shape_is_malformed() {
    let (_dir, store, _) = store_with_token(|_| {});
    let h = headers(&[("authorization", "Bearer gmcp_tk_short")]);
    assert_eq!(
        authenticate(&*store, "e", &h).unwrap_err(),
        Refusal::MalformedToken
    );
}
