//! One request, from the sandbox to the upstream and back: checks, placeholder search,
//! credential swap, body scan, pooled upstream request, response scrub, audit.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, HOST};
use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::audit::{Deny, redact_path};
use super::context::{SandboxCtx, UpBody, refusal};
use super::policy::Target;
use super::request::{self, ScrubPair};
use super::rewrite::Replacements;
use super::scrub::{BoxError, Counted, Scan, Scrub, first_index, scrub_headers};

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
    let creds = &ctx.policy.credentials;
    if let Err(deny) = request::find_exfiltration(&parts, creds, &target.host) {
        return deny_request(&ctx, &target, &parts, &deny);
    }
    let (used, pairs) = match swap_credentials(&ctx, &target, scheme, &mut parts).await {
        Ok(swapped) => swapped,
        Err(deny) => return deny_request(&ctx, &target, &parts, &deny),
    };
    // The body: placeholders of credentials not bound here must not leave.
    let unbound: Vec<String> = creds
        .iter()
        .filter(|c| !c.bound_to(&target.host))
        .map(|c| c.placeholder.clone())
        .collect();
    let found = Arc::new(Mutex::new(None));
    let up_bytes = Arc::new(AtomicU64::new(0));
    let counter = up_bytes.clone();
    let counted = Counted::new(body, move |n, _| counter.store(n, Ordering::Relaxed));
    let checked = checked_body(&ctx, counted, &unbound, &found).await;
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
        let deny = exfiltration_in_body(&ctx, &unbound[i]);
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
    request::strip_hop_by_hop(&mut rparts.headers);
    let body = match response_body(&mut rparts, rbody, pairs) {
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

/// The swap: only over TLS, only to a bound host, only in the declared place. The names of the
/// credentials injected, and the (real value, placeholder) pairs the response is scrubbed of
/// (asked unencoded when there are any).
async fn swap_credentials(
    ctx: &SandboxCtx,
    target: &Target,
    scheme: &str,
    parts: &mut Parts,
) -> Result<(Vec<String>, Vec<ScrubPair>), Deny> {
    let mut used: Vec<String> = Vec::new();
    let mut pairs: Vec<ScrubPair> = Vec::new();
    if scheme != "https" {
        return Ok((used, pairs));
    }
    let bound = || {
        ctx.policy
            .credentials
            .iter()
            .filter(|c| c.bound_to(&target.host))
    };
    for cred in bound() {
        if !request::wants(parts, cred) {
            continue;
        }
        let value =
            ctx.secrets
                .get(&cred.name)
                .await
                .ok_or_else(|| Deny::CredentialUnavailable {
                    credential: cred.name.to_string(),
                })?;
        pairs.extend(request::inject(parts, cred, value.expose())?);
        used.push(cred.name.to_string());
    }
    // Responses from a bound host are scrubbed of every credential bound to it, injected in
    // this request or not (the host knows them all).
    for cred in bound() {
        if used.iter().any(|u| u == cred.name.as_str()) {
            continue;
        }
        if let Some(value) = ctx.secrets.get(&cred.name).await {
            pairs.push((
                zeroize::Zeroizing::new(value.expose().to_vec()),
                zeroize::Zeroizing::new(cred.placeholder.as_bytes().to_vec()),
            ));
        }
    }
    if !pairs.is_empty() {
        // An encoded echo would carry the value past the scrubber.
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    Ok((used, pairs))
}

/// The request body, checked for `unbound` placeholders: whole before anything is sent when
/// its declared length is small enough, else as it streams (a hit is put in `found`).
async fn checked_body(
    ctx: &SandboxCtx,
    counted: Counted<Incoming>,
    unbound: &[String],
    found: &Arc<Mutex<Option<usize>>>,
) -> Result<UpBody, Deny> {
    let limit = ctx.shared.limits.max_buffered_body as u64;
    if unbound.is_empty() {
        return Ok(counted.map_err(BoxError::from).boxed_unsync());
    }
    if counted.size_hint().exact().is_some_and(|n| n <= limit) {
        let whole = counted
            .collect()
            .await
            .map_err(|_| Deny::BadHeader)?
            .to_bytes();
        if let Some(i) = unbound
            .iter()
            .position(|p| first_index(&whole, p.as_bytes()).is_some())
        {
            return Err(exfiltration_in_body(ctx, &unbound[i]));
        }
        return Ok(Full::new(whole).map_err(|e| match e {}).boxed_unsync());
    }
    Scan::new(counted, unbound.to_vec(), found.clone())
        .map(|scan| scan.boxed_unsync())
        .ok_or(Deny::BadHeader)
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

/// The response body, scrubbed of `pairs`' real values (an encoded one is refused: it would
/// carry them past the scrubber).
fn response_body(
    rparts: &mut http::response::Parts,
    rbody: Incoming,
    pairs: Vec<ScrubPair>,
) -> Result<UpBody, Deny> {
    if pairs.is_empty() {
        return Ok(rbody.map_err(BoxError::from).boxed_unsync());
    }
    let encoded = rparts
        .headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Deny::EncodedResponse);
    }
    Ok(match Replacements::new(pairs) {
        Some(set) => {
            scrub_headers(&mut rparts.headers, &set);
            rparts.headers.remove(CONTENT_LENGTH);
            Scrub::new(rbody, set).boxed_unsync()
        }
        None => rbody.map_err(BoxError::from).boxed_unsync(),
    })
}

fn exfiltration_in_body(ctx: &SandboxCtx, placeholder: &str) -> Deny {
    let credential = ctx
        .policy
        .credentials
        .iter()
        .find(|c| c.placeholder == placeholder)
        .map(|c| c.name.to_string())
        .unwrap_or_default();
    Deny::Exfiltration {
        credential,
        place: "body",
    }
}
