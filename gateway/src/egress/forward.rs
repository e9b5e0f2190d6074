//! One request, from the sandbox to the upstream and back: checks, the search of the head for
//! what must not leave, credential swap, body scan, pooled upstream request, response checks
//! (nothing the scrubber cannot read: no content or transfer coding, no partial content) and
//! scrub, audit.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::audit::{Deny, redact_path};
use super::context::{SandboxCtx, UpBody, refusal};
use super::needles::{HostNeedles, Owner};
use super::policy::Target;
use super::request;
use super::rewrite::Replacements;
use super::scrub::{BoxError, Counted, Scan, Scrub, scrub_headers};
use crate::vault::SecretValue;

/// A request inside an intercepted TLS connection to `target`.
pub(crate) async fn tunneled(
    ctx: Arc<SandboxCtx>,
    target: Target,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let (parts, body) = req.into_parts();
    if let Err(deny) = request::check_tunneled(&parts, &target) {
        return Ok(deny_request(&ctx, &target, &parts, &deny));
    }
    Ok(forward(ctx, target, "https", parts, body).await)
}

/// A plain-HTTP absolute-form request on the proxy port.
pub(crate) async fn plain(ctx: Arc<SandboxCtx>, req: Request<Incoming>) -> Response<UpBody> {
    let (parts, body) = req.into_parts();
    let target = match request::check_plain(&parts) {
        Ok(t) => t,
        Err(deny) => {
            let shown = parts
                .uri
                .authority()
                .map(|a| a.as_str().chars().take(300).collect::<String>())
                .unwrap_or_default();
            ctx.audit_denied(&shown, &deny, "kind=http");
            return refusal(&deny);
        }
    };
    if let Err(deny) = ctx.policy.check_plain_http(&target) {
        ctx.audit_denied(&target.to_string(), &deny, "kind=http");
        return refusal(&deny);
    }
    if let Err(deny) = ctx.admit_target(&target).await {
        return deny_request(&ctx, &target, &parts, &deny);
    }
    forward(ctx, target, "http", parts, body).await
}

fn request_detail(parts: &Parts) -> String {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("method={} path=\"{}\"", parts.method, redact_path(pq))
}

fn deny_request(ctx: &SandboxCtx, target: &Target, parts: &Parts, deny: &Deny) -> Response<UpBody> {
    deny_with(ctx, target, &request_detail(parts), deny)
}

fn deny_with(ctx: &SandboxCtx, target: &Target, detail: &str, deny: &Deny) -> Response<UpBody> {
    ctx.audit_denied(&target.to_string(), deny, detail);
    refusal(deny)
}

async fn forward(
    ctx: Arc<SandboxCtx>,
    target: Target,
    scheme: &'static str,
    mut parts: Parts,
    body: Incoming,
) -> Response<UpBody> {
    let detail = request_detail(&parts);
    request::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST); // the client derives it from the URI
    parts.headers.remove(EXPECT); // answered on our side by hyper
    let values = ctx.credential_values().await;
    let needles = match ctx.needles_for(&target.host, &values) {
        Ok(n) => n,
        Err(deny) => return deny_request(&ctx, &target, &parts, &deny),
    };
    // Before the swap: what the sandbox itself sent must not carry a real value, nor another
    // host's placeholder.
    if let Some(deny) = head_leak(&ctx, &parts, &needles) {
        return deny_request(&ctx, &target, &parts, &deny);
    }
    let used = match swap_credentials(&ctx, &target, scheme, &mut parts, &values) {
        Ok(used) => used,
        Err(deny) => return deny_request(&ctx, &target, &parts, &deny),
    };
    if needles.scrub.is_some() {
        // The scrubber reads whole, uncoded responses: an encoded or partial echo would carry
        // a value past it.
        request::strip_ranges(&mut parts.headers);
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let found = Arc::new(Mutex::new(None));
    let up_bytes = Arc::new(AtomicU64::new(0));
    let counter = up_bytes.clone();
    let counted = Counted::new(body, move |n, _| counter.store(n, Ordering::Relaxed));
    let checked = checked_body(&ctx, counted, &needles, &found).await;
    let up_body = match checked.and_then(|b| Ok((b, upstream_uri(scheme, &target, &parts)?))) {
        Ok((b, uri)) => {
            parts.uri = uri;
            b
        }
        Err(deny) => return deny_request(&ctx, &target, &parts, &deny),
    };
    parts.version = Version::HTTP_11; // the client picks h1 or h2 by the upstream's ALPN
    let upstream = ctx.client.request(Request::from_parts(parts, up_body));
    let result = tokio::time::timeout(ctx.shared.limits.upstream_timeout, upstream).await;
    let tripped = *found.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = tripped {
        let deny = leak_denial(&ctx, &needles, i, "body");
        return deny_with(&ctx, &target, &detail, &deny);
    }
    let resp = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(sandbox = %ctx.id, target = %target, error = %e, "egress: upstream failed");
            return deny_with(&ctx, &target, &detail, &Deny::UpstreamFailed);
        }
        Err(_) => return deny_with(&ctx, &target, &detail, &Deny::UpstreamTimeout),
    };
    let (mut rparts, rbody) = resp.into_parts();
    let body = match response_body(&mut rparts, rbody, needles.scrub.clone()) {
        Ok(b) => b,
        Err(deny) => return deny_with(&ctx, &target, &detail, &deny),
    };
    let status = rparts.status.as_u16();
    let audit_ctx = ctx.clone();
    let target_text = target.to_string();
    let credentials = if used.is_empty() {
        "-".to_owned()
    } else {
        used.join(",")
    };
    let body = Counted::new(body, move |down, complete| {
        audit_ctx.audit_ok(
            "egress.request",
            &target_text,
            format!(
                "{detail} status={status} bytes_up={} bytes_down={down} credentials={credentials} complete={complete}",
                up_bytes.load(Ordering::Relaxed)
            ),
        );
    });
    Response::from_parts(rparts, body.boxed_unsync())
}

/// The refusal for scan needle `i` found in `place`: a placeholder sent to a host its
/// credential is not bound to, or a real value anywhere.
fn leak_denial(ctx: &SandboxCtx, needles: &HostNeedles, i: usize, place: &'static str) -> Deny {
    let Owner { credential, real } = needles.owners[i];
    let credential = ctx.policy.credentials[credential].name.to_string();
    if real {
        Deny::ValueExfiltration { credential, place }
    } else {
        Deny::Exfiltration { credential, place }
    }
}

/// What in the request's head must not leave, if anything.
fn head_leak(ctx: &SandboxCtx, parts: &Parts, needles: &HostNeedles) -> Option<Deny> {
    let set = needles.scan.as_ref()?;
    let (i, place) = request::needle_place(parts, set)?;
    Some(leak_denial(ctx, needles, i, place))
}

/// The swap: only over TLS, only to a bound host, only in the declared place. Returns the
/// names of the credentials injected. `values` are the policy's credentials' real values.
fn swap_credentials(
    ctx: &SandboxCtx,
    target: &Target,
    scheme: &str,
    parts: &mut Parts,
    values: &[Option<SecretValue>],
) -> Result<Vec<String>, Deny> {
    let mut used: Vec<String> = Vec::new();
    if scheme != "https" {
        return Ok(used);
    }
    let creds = ctx.policy.credentials.iter().zip(values);
    for (cred, value) in creds.filter(|(c, _)| c.bound_to(&target.host)) {
        if !request::wants(parts, cred) {
            continue;
        }
        let value = value.as_ref().ok_or_else(|| Deny::CredentialUnavailable {
            credential: cred.name.to_string(),
        })?;
        request::inject(parts, cred, value.expose())?;
        used.push(cred.name.to_string());
    }
    Ok(used)
}

/// The request body, searched for what must not leave: whole before anything is sent when
/// its declared length is small enough, else as it streams (a hit is put in `found`).
async fn checked_body(
    ctx: &SandboxCtx,
    counted: Counted<Incoming>,
    needles: &HostNeedles,
    found: &Arc<Mutex<Option<usize>>>,
) -> Result<UpBody, Deny> {
    let limit = ctx.shared.limits.max_buffered_body as u64;
    let Some(set) = needles.scan.clone() else {
        return Ok(counted.map_err(BoxError::from).boxed_unsync());
    };
    if counted.size_hint().exact().is_some_and(|n| n <= limit) {
        let whole = counted
            .collect()
            .await
            .map_err(|_| Deny::BadHeader)?
            .to_bytes();
        if let Some(i) = set.first_in(&whole) {
            return Err(leak_denial(ctx, needles, i, "body"));
        }
        return Ok(Full::new(whole).map_err(|e| match e {}).boxed_unsync());
    }
    Ok(Scan::new(counted, set, found.clone()).boxed_unsync())
}

/// The absolute URI the upstream client is given: the checked target, the request's path.
fn upstream_uri(scheme: &str, target: &Target, parts: &Parts) -> Result<Uri, Deny> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let default_port = if scheme == "https" { 443 } else { 80 };
    let uri = if target.port == default_port {
        format!("{scheme}://{}{pq}", target.host)
    } else {
        format!("{scheme}://{}:{}{pq}", target.host, target.port)
    };
    uri.parse::<Uri>().map_err(|_| Deny::BadAuthority)
}

/// Whether a response from a host a credential is bound to is one the scrubber can read:
/// no content coding (asked for identity), no transfer coding but chunked (hyper removes only
/// that one), no partial content (the request's Range was stripped).
fn check_scrubbable(rparts: &http::response::Parts) -> Result<(), Deny> {
    let coded = |h: &HeaderMap, name, allowed: &[u8]| {
        h.get_all(name).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(allowed))
        })
    };
    if coded(&rparts.headers, CONTENT_ENCODING, b"identity")
        || coded(&rparts.headers, TRANSFER_ENCODING, b"chunked")
    {
        return Err(Deny::EncodedResponse);
    }
    if rparts.status == StatusCode::PARTIAL_CONTENT {
        return Err(Deny::RangedResponse);
    }
    Ok(())
}

/// The response: hop-by-hop headers removed, and with `scrub` (a credential is bound to the
/// host) checked, then scrubbed of every form of the real values, head, body and trailers.
fn response_body(
    rparts: &mut http::response::Parts,
    rbody: Incoming,
    scrub: Option<Replacements>,
) -> Result<UpBody, Deny> {
    let Some(set) = scrub else {
        request::strip_hop_by_hop(&mut rparts.headers);
        return Ok(rbody.map_err(BoxError::from).boxed_unsync());
    };
    check_scrubbable(rparts)?;
    request::strip_hop_by_hop(&mut rparts.headers);
    // An HTTP/1.1 upstream's own reason phrase would be relayed unscrubbed.
    rparts.extensions.remove::<hyper::ext::ReasonPhrase>();
    scrub_headers(&mut rparts.headers, &set);
    rparts.headers.remove(CONTENT_LENGTH);
    Ok(Scrub::new(rbody, set).boxed_unsync())
}
