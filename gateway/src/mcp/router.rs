//! What an endpoint offers: the tools of its servers, namespaced `<server>__<tool>`, filtered to
//! the endpoint's subset ∩ the manifest's, and calls routed to the server that owns the tool.
//! Anything outside the subset is neither listed nor callable. A list a server of the endpoint
//! cannot contribute to (it cannot start, fails or hangs) is an error naming that server and why
//! (`not_listed`), never a shorter list; for a start failure "why" is the launcher's category
//! (`Launcher::client_reason`), its full text is the admin's (audit, log).
//!
//! Names are shown as [`super::names`] makes them (unambiguous); a server whose stored name
//! breaks the rule (installed before it) is not offered at all, and a name a server lists twice
//! is shown once: both are reported in [`Handled::hidden`] for the audit.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::approval::ToolGate;
use super::jsonrpc::{self, Id, code};
use super::names::{Shown, URI_SEP, namespaced, shown, split};
use super::progress::Relay;
use super::redact::Redactor;
use super::refusal::Refusal;
use super::stdio::{CallError, ServerSession, ToolList};
use super::view::{EndpointView, Exposed};
use crate::manifest::valid_server_name;

/// A kind of list that is passed through, namespaced: the method, the array in its result, and
/// the field of each item that carries the server's name for it.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    pub method: &'static str,
    pub key: &'static str,
    pub field: &'static str,
}

pub const PROMPTS: Listing = Listing {
    method: "prompts/list",
    key: "prompts",
    field: "name",
};
pub const RESOURCES: Listing = Listing {
    method: "resources/list",
    key: "resources",
    field: "uri",
};
pub const TEMPLATES: Listing = Listing {
    method: "resources/templates/list",
    key: "resourceTemplates",
    field: "uriTemplate",
};

/// Tools listed per page to clients.
const PAGE: usize = 100;
/// Pages read from one server's `tools/list` before giving up (a server paging forever).
const MAX_SERVER_PAGES: usize = 100;

/// Told the server session and the gateway's id of a request once it is sent.
pub type Started = Box<dyn FnOnce(Arc<ServerSession>, u64) + Send>;

/// What a caller may want from a tool call in flight.
#[derive(Default)]
pub struct CallHooks {
    /// Receives the server's progress notifications for this call (under the client's token).
    /// Bounded: a client that stops reading loses progress, never the gateway's memory.
    pub progress: Option<tokio::sync::mpsc::Sender<Value>>,
    /// Told the server session and the gateway's id of the request once it is sent, so that a
    /// cancellation from the client can be relayed.
    pub started: Option<Started>,
}

impl std::fmt::Debug for CallHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallHooks")
    }
}

/// Gives a live session with a server, starting it if needed.
pub trait Sessions: Send + Sync {
    fn session(
        &self,
        server: &str,
    ) -> impl Future<Output = Result<Arc<ServerSession>, CallError>> + Send;

    /// Servers' list changes as they happen: (server, the `notifications/*/list_changed`
    /// method it sent).
    fn list_changes(&self) -> tokio::sync::broadcast::Receiver<(String, String)>;
}

/// The server notifications that say a list changed (relayed to clients, per endpoint).
pub const LIST_CHANGED: [&str; 3] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
];

/// What handling one request produced: the response, a refusal to audit if any, the secrets
/// redacted (`arguments:<name>` / `result:<name>`), and what a listing hid (ambiguous names).
#[derive(Debug, Default)]
pub struct Handled {
    pub response: Value,
    pub refused: Option<Refusal>,
    pub redacted: Vec<String>,
    pub hidden: Vec<String>,
}

impl Handled {
    pub fn ok(response: Value) -> Self {
        Self {
            response,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
pub struct Router {
    /// What the endpoint offers.
    pub view: Arc<EndpointView>,
    pub call_timeout: Duration,
    /// Scans tool arguments and results for secret values.
    pub redactor: Option<Arc<Redactor>>,
    /// Hides tools whose definition is not the approved one.
    pub gate: Option<Arc<ToolGate>>,
}

impl Router {
    fn exposed(&self, server: &str) -> Option<&Exposed> {
        self.view.servers.iter().find(|e| e.server == server)
    }

    /// `tools/list`: every allowed tool of every server, namespaced, in pages of [`PAGE`].
    pub async fn list_tools<S: Sessions>(
        &self,
        sessions: &S,
        id: &Id,
        params: Option<&Map<String, Value>>,
    ) -> Handled {
        let start = match params.and_then(|p| p.get("cursor")) {
            None => 0,
            Some(Value::String(c)) => match c.parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    return Handled::ok(jsonrpc::error(
                        Some(id),
                        code::INVALID_PARAMS,
                        "invalid cursor",
                    ));
                }
            },
            Some(_) => {
                return Handled::ok(jsonrpc::error(
                    Some(id),
                    code::INVALID_PARAMS,
                    "invalid cursor",
                ));
            }
        };
        let mut all = Vec::new();
        let mut failed = Vec::new();
        let mut seen = Shown::default();
        for e in &self.view.servers {
            if !seen.server(&e.server) {
                continue;
            }
            match self.server_tools(sessions, &e.server).await {
                Ok(tools) => {
                    for t in tools.iter() {
                        let Some(name) = t.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        if !e.allows(name) {
                            continue;
                        }
                        let shown = namespaced(&e.server, name);
                        if !seen.first(&shown) {
                            continue;
                        }
                        let mut t = t.clone();
                        if let Some(d) = e.descriptions.get(name) {
                            t.insert("description".into(), Value::String(d.clone()));
                        }
                        t.insert("name".into(), Value::String(shown));
                        all.push(Value::Object(t));
                    }
                }
                Err(err) => {
                    tracing::warn!(server = %e.server, error = %err, "mcp: tools/list failed");
                    failed.push((e.server.as_str(), err));
                }
            }
        }
        if !failed.is_empty() {
            return Handled::ok(not_listed(id, &failed));
        }
        let page: Vec<Value> = all.iter().skip(start).take(PAGE).cloned().collect();
        let mut result = json!({ "tools": page });
        if start + PAGE < all.len() {
            result["nextCursor"] = Value::String((start + PAGE).to_string());
        }
        Handled {
            hidden: seen.hidden,
            ..self.listed(id, result)
        }
    }

    /// The tools a server offers: everything it lists (following its cursors, bounded; cached
    /// per session until it says its list changed), less what the gate hides.
    async fn server_tools<S: Sessions>(
        &self,
        sessions: &S,
        server: &str,
    ) -> Result<ToolList, CallError> {
        let s = sessions.session(server).await?;
        let listed = match s.cached_tools() {
            Some(t) => t,
            None => {
                let mut out = Vec::new();
                let mut cursor: Option<Value> = None;
                for _ in 0..MAX_SERVER_PAGES {
                    let params = cursor.take().map(|c| json!({ "cursor": c }));
                    let r = s.request("tools/list", params, self.call_timeout).await?;
                    if let Some(tools) = r.get("tools").and_then(Value::as_array) {
                        out.extend(tools.iter().filter_map(|t| t.as_object().cloned()));
                    }
                    match r.get("nextCursor") {
                        Some(c @ Value::String(_)) => cursor = Some(c.clone()),
                        _ => break,
                    }
                }
                let out = Arc::new(out);
                s.cache_tools(out.clone());
                out
            }
        };
        Ok(match &self.gate {
            Some(g) => g.visible(server, listed),
            None => listed,
        })
    }

    /// Prompts, resources or resource templates of every server, namespaced, in pages. A
    /// server that does not offer them is skipped.
    pub async fn list_passthrough<S: Sessions>(
        &self,
        sessions: &S,
        id: &Id,
        params: Option<&Map<String, Value>>,
        what: Listing,
    ) -> Handled {
        let start = match params.and_then(|p| p.get("cursor")) {
            None => 0,
            Some(Value::String(c)) if c.parse::<usize>().is_ok() => c.parse().unwrap_or(0),
            Some(_) => {
                return Handled::ok(jsonrpc::error(
                    Some(id),
                    code::INVALID_PARAMS,
                    "invalid cursor",
                ));
            }
        };
        let mut all = Vec::new();
        let mut seen = Shown::default();
        for e in &self.view.servers {
            if !seen.server(&e.server) {
                continue;
            }
            // A server that cannot start is an error (as in `tools/list`); one that runs but
            // does not offer this kind of list is skipped.
            let s = match sessions.session(&e.server).await {
                Ok(s) => s,
                Err(err) => return Handled::ok(not_listed(id, &[(e.server.as_str(), err)])),
            };
            let mut cursor: Option<Value> = None;
            for _ in 0..MAX_SERVER_PAGES {
                let p = cursor.take().map(|c| json!({ "cursor": c }));
                let Ok(r) = s.request(what.method, p, self.call_timeout).await else {
                    break;
                };
                for item in r
                    .get(what.key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(mut item) = item.as_object().cloned() else {
                        continue;
                    };
                    let Some(v) = item.get(what.field).and_then(Value::as_str) else {
                        continue;
                    };
                    let v = shown(&e.server, what.field, v);
                    if !seen.first(&v) {
                        continue;
                    }
                    item.insert(what.field.into(), Value::String(v));
                    all.push(Value::Object(item));
                }
                match r.get("nextCursor") {
                    Some(c @ Value::String(_)) => cursor = Some(c.clone()),
                    _ => break,
                }
            }
        }
        let page: Vec<Value> = all.iter().skip(start).take(PAGE).cloned().collect();
        let mut result = json!({ what.key: page });
        if start + PAGE < all.len() {
            result["nextCursor"] = Value::String((start + PAGE).to_string());
        }
        Handled {
            hidden: seen.hidden,
            ..self.listed(id, result)
        }
    }

    /// `prompts/get` (by `server__name`) or `resources/read` (by `server+uri`): routed to the
    /// server with its own name; URIs in the result are shown namespaced again; the result is
    /// scanned for secrets like a tool's.
    pub async fn get_passthrough<S: Sessions>(
        &self,
        sessions: &S,
        id: &Id,
        params: Option<&Map<String, Value>>,
        method: &str,
    ) -> Handled {
        let field = if method == "prompts/get" {
            "name"
        } else {
            "uri"
        };
        let Some(value) = params.and_then(|p| p.get(field)).and_then(Value::as_str) else {
            return Handled::ok(jsonrpc::error(
                Some(id),
                code::INVALID_PARAMS,
                &format!("{method} needs a {field}"),
            ));
        };
        let split = if field == "name" {
            split(value)
        } else {
            value
                .split_once(URI_SEP)
                .filter(|(server, _)| valid_server_name(server))
        };
        let Some((server, own)) = split.filter(|(s, _)| self.exposed(s).is_some()) else {
            return Handled {
                response: jsonrpc::error(
                    Some(id),
                    code::INVALID_PARAMS,
                    &format!("unknown {field}: {value}"),
                ),
                refused: Some(Refusal::UnknownTool { name: value.into() }),
                ..Handled::default()
            };
        };
        let mut fwd = Value::Object(params.cloned().unwrap_or_default());
        fwd[field] = Value::String(own.into());
        let mut redacted = Vec::new();
        if let Some(r) = &self.redactor {
            redacted.extend(
                r.redact(&mut fwd)
                    .into_iter()
                    .map(|n| format!("arguments:{n}")),
            );
        }
        let session = match sessions.session(server).await {
            Ok(s) => s,
            Err(err) => return Handled::ok(unavailable(id, &err)),
        };
        let mut response = match session.request(method, Some(fwd), self.call_timeout).await {
            Ok(mut r) => {
                for c in r
                    .get_mut("contents")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(u) = c.get("uri").and_then(Value::as_str).map(str::to_owned) {
                        c["uri"] = Value::String(shown(server, "uri", &u));
                    }
                }
                jsonrpc::result(id, r)
            }
            Err(CallError::Remote(err)) => json!({"jsonrpc": "2.0", "id": id, "error": err}),
            Err(err) => unavailable(id, &err),
        };
        if let Some(r) = &self.redactor {
            redacted.extend(
                r.redact(&mut response)
                    .into_iter()
                    .map(|n| format!("result:{n}")),
            );
        }
        Handled {
            response,
            redacted,
            ..Handled::default()
        }
    }

    /// `tools/call` of `<server>__<tool>`: refused unless in the subset and approved; otherwise
    /// forwarded with the server's own tool name and every other field as the client sent it.
    pub async fn call_tool<S: Sessions>(
        &self,
        sessions: &S,
        id: &Id,
        params: Option<&Map<String, Value>>,
        hooks: CallHooks,
    ) -> Handled {
        let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            return Handled::ok(jsonrpc::error(
                Some(id),
                code::INVALID_PARAMS,
                "tools/call needs a tool name",
            ));
        };
        let refused = |r: Refusal| Handled {
            response: r.answer(id),
            refused: Some(r),
            ..Handled::default()
        };
        let (server, tool) = match self.allowed(name) {
            Ok(found) => found,
            Err(r) => return refused(r),
        };
        match self.offered(sessions, server, tool).await {
            Ok(true) => {}
            Ok(false) => return refused(Refusal::NotApproved { name: name.into() }),
            Err(err) => return Handled::ok(unavailable(id, &err)),
        }
        let (mut fwd, mut redacted) = self.forwarded(params, tool);
        let session = match sessions.session(server).await {
            Ok(s) => s,
            Err(err) => return Handled::ok(unavailable(id, &err)),
        };
        let relay = Relay::start(&mut fwd, &session, hooks.progress, self.redactor.clone());
        let started = hooks.started;
        let call_session = session.clone();
        let result = session
            .request_with(
                "tools/call",
                Some(Value::Object(fwd)),
                self.call_timeout,
                |gid| {
                    if let Some(f) = started {
                        f(call_session, gid);
                    }
                },
            )
            .await;
        let in_progress = match relay {
            Some(relay) => relay.finish().await,
            None => Vec::new(),
        };
        let mut response = match result {
            Ok(r) => jsonrpc::result(id, r),
            Err(CallError::Remote(err)) => json!({"jsonrpc": "2.0", "id": id, "error": err}),
            Err(CallError::Cancelled) => {
                jsonrpc::error(Some(id), code::REQUEST_CANCELLED, "request cancelled")
            }
            Err(err) => unavailable(id, &err),
        };
        redacted.extend(self.redact(&mut response, "result"));
        redacted.extend(in_progress.into_iter().map(|n| format!("progress:{n}")));
        Handled {
            response,
            redacted,
            ..Handled::default()
        }
    }

    /// The server and its own name for the tool shown as `name`, if the endpoint offers it.
    fn allowed<'a>(&self, name: &'a str) -> Result<(&'a str, &'a str), Refusal> {
        let unknown = || Refusal::UnknownTool { name: name.into() };
        let (server, tool) = split(name).ok_or_else(unknown)?;
        let e = self.exposed(server).ok_or_else(unknown)?;
        if !e.allows(tool) {
            return Err(Refusal::NotInSubset { name: name.into() });
        }
        Ok((server, tool))
    }

    /// Whether the server lists `tool` with its approved definition: only such a tool may be
    /// called.
    async fn offered<S: Sessions>(
        &self,
        sessions: &S,
        server: &str,
        tool: &str,
    ) -> Result<bool, CallError> {
        let tools = self.server_tools(sessions, server).await?;
        Ok(tools
            .iter()
            .any(|t| t.get("name").and_then(Value::as_str) == Some(tool)))
    }

    /// The call's parameters as the server gets them: its own tool name, secrets redacted from
    /// everything forwarded (not only the arguments: `_meta`, unknown fields); and what was
    /// redacted.
    fn forwarded(
        &self,
        params: Option<&Map<String, Value>>,
        tool: &str,
    ) -> (Map<String, Value>, Vec<String>) {
        let mut fwd = params.cloned().unwrap_or_default();
        fwd.insert("name".into(), Value::String(tool.into()));
        let mut all = Value::Object(fwd);
        let redacted = self.redact(&mut all, "arguments");
        // Redaction rewrites strings inside; an object stays an object.
        let fwd = match all {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        (fwd, redacted)
    }

    /// Redacts secret values in `v`; what was found, as `<place>:<name>`.
    fn redact(&self, v: &mut Value, place: &str) -> Vec<String> {
        match &self.redactor {
            Some(r) => r
                .redact(v)
                .into_iter()
                .map(|n| format!("{place}:{n}"))
                .collect(),
            None => Vec::new(),
        }
    }

    /// A list answer, scanned for secrets before it leaves (a server's descriptions can carry
    /// what an upstream echoed).
    fn listed(&self, id: &Id, result: Value) -> Handled {
        let mut response = jsonrpc::result(id, result);
        let redacted = self.redact(&mut response, "result");
        Handled {
            response,
            redacted,
            ..Handled::default()
        }
    }
}

/// The answer to a list some server of the endpoint could not contribute to: an error naming
/// every such server and why, not the others' items alone. A list result cannot say "and one
/// server is missing" (MCP lists carry no partial errors), so a partial list would make a
/// server that cannot start (incomplete image, helper refusal) look like a server with no
/// tools: the client would plan without them and nobody would notice. An error makes the
/// failure visible to the client and, through the audit, to the admin.
fn not_listed(id: &Id, failed: &[(&str, CallError)]) -> Value {
    let message = failed
        .iter()
        .map(|(server, err)| format!("server {server} is not available: {}", why(err)))
        .collect::<Vec<_>>()
        .join("; ");
    let servers: Vec<Value> = failed
        .iter()
        .map(|(server, err)| json!({"server": server, "reason": why(err)}))
        .collect();
    let mut answer = jsonrpc::error(Some(id), code::SERVER_UNAVAILABLE, &message);
    answer["error"]["data"] = json!({ "servers": servers });
    answer
}

/// Why a server could not answer, without its name (the caller puts it in front).
fn why(err: &CallError) -> String {
    match err {
        CallError::Closed { reason, .. } => reason.clone(),
        CallError::Timeout { method, secs, .. } => {
            format!("did not answer {method} within {secs} s")
        }
        CallError::Remote(e) => format!(
            "answered with an error: {}",
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
        ),
        CallError::Cancelled => "request cancelled".into(),
    }
}

fn unavailable(id: &Id, err: &CallError) -> Value {
    jsonrpc::error(Some(id), code::SERVER_UNAVAILABLE, &err.to_string())
}
