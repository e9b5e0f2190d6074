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

    // The swap: only over TLS, only to a bound host, only in the declared place.
    let mut used: Vec<String> = Vec::new();
    let mut pairs: Vec<ScrubPair> = Vec::new();
    if scheme == "https" {
        for cred in creds.iter().filter(|c| c.bound_to(&target.host)) {
            if !request::wants(&parts, cred) {
                continue;
            }
            let Some(value) = ctx.secrets.get(&cred.name).await else {
                let deny = Deny::CredentialUnavailable {
                    credential: cred.name.to_string(),
                };
                return deny_request(&ctx, &target, &parts, &deny);
            };
            match request::inject(&mut parts, cred, value.expose()) {
                Ok(p) => pairs.extend(p),
                Err(deny) => return deny_request(&ctx, &target, &parts, &deny),
            }
            used.push(cred.name.to_string());
        }
    }
    // Responses from a bound host are scrubbed of every credential bound to it, injected in
    // this request or not (the host knows them all).
    if scheme == "https" {
        for cred in creds.iter().filter(|c| c.bound_to(&target.host)) {
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
    }
    let scrubbing = !pairs.is_empty();
    if scrubbing {
        // An encoded echo would carry the value past the scrubber.
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }

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
    let limit = ctx.shared.limits.max_buffered_body as u64;
    let up_body: UpBody = if unbound.is_empty() {
        counted.map_err(BoxError::from).boxed_unsync()
    } else if counted.size_hint().exact().is_some_and(|n| n <= limit) {
        let whole = match counted.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return deny_request(&ctx, &target, &parts, &Deny::BadHeader),
        };
        if let Some(i) = unbound
            .iter()
            .position(|p| first_index(&whole, p.as_bytes()).is_some())
        {
            let deny = exfiltration_in_body(&ctx, &unbound[i]);
            return deny_request(&ctx, &target, &parts, &deny);
        }
        Full::new(whole).map_err(|e| match e {}).boxed_unsync()
    } else {
        match Scan::new(counted, unbound.clone(), found.clone()) {
            Some(scan) => scan.boxed_unsync(),
            None => return deny_request(&ctx, &target, &parts, &Deny::BadHeader),
        }
    };

    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let default_port = if scheme == "https" { 443 } else { 80 };
    let uri = if target.port == default_port {
        format!("{scheme}://{}{pq}", target.host)
    } else {
        format!("{scheme}://{}:{}{pq}", target.host, target.port)
    };
    parts.uri = match uri.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return deny_request(&ctx, &target, &parts, &Deny::BadAuthority),
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
    let body: UpBody = if !scrubbing {
        rbody.map_err(BoxError::from).boxed_unsync()
    } else {
        let encoded = rparts
            .headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return deny_with(&ctx, &target, &detail, &Deny::EncodedResponse);
        }
        match Replacements::new(pairs) {
            Some(set) => {
                scrub_headers(&mut rparts.headers, &set);
                rparts.headers.remove(CONTENT_LENGTH);
                Scrub::new(rbody, set).boxed_unsync()
            }
            None => rbody.map_err(BoxError::from).boxed_unsync(),
        }
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
