//! One admitted JSON-RPC message, by method: `initialize` (a new session), `ping`, the lists
//! and gets routed through the endpoint's [`Router`], `tools/call` in a task of its own (so that
//! a client going away does not cut the bookkeeping of a call the server runs), cancellations
//! relayed to the server that runs the call. Every answered request is audited.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use super::admission::{SESSION_HEADER, SESSION_REVISIONS};
use super::{Caller, Front, Resp, json_response, sse};
use crate::audit::Outcome;
use crate::mcp::jsonrpc::{self, Id, Message, code};
use crate::mcp::router::{self, Handled, Router, Sessions};

/// Messages queued for one streamed response.
const STREAM_QUEUE: usize = 256;

/// A notification or a response from the client: nothing to answer.
fn accepted() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// The revision a client asks for in `initialize`, or our newest.
fn session_revision(params: Option<&Map<String, Value>>) -> &'static str {
    let asked = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    SESSION_REVISIONS
        .iter()
        .copied()
        .find(|r| *r == asked)
        .unwrap_or(SESSION_REVISIONS[SESSION_REVISIONS.len() - 1])
}

fn initialized(id: &Id, revision: &str) -> Value {
    jsonrpc::result(
        id,
        json!({
            "protocolVersion": revision,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": false},
            },
            "serverInfo": {"name": "gigmcp", "version": env!("CARGO_PKG_VERSION")},
        }),
    )
}

/// What a listing hid, for the audit: bounded, since the names come from a server (one that
/// lists a million duplicates gets a count, not a million names).
fn hidden_detail(hidden: &[String]) -> String {
    const SHOWN: usize = 20;
    let names: Vec<String> = hidden
        .iter()
        .take(SHOWN)
        .map(|h| h.chars().take(160).collect::<String>().replace('"', "'"))
        .collect();
    format!("hidden={} names=\"{}\"", hidden.len(), names.join("; "))
}

impl<S: Sessions + 'static> Front<S> {
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        caller: &Caller,
        msg: Message,
        sse: bool,
    ) -> Resp {
        let (id, method) = match &msg {
            Message::Request { id, method, .. } => (id.clone(), method.clone()),
            Message::Notification { method, .. } if method == "notifications/cancelled" => {
                self.cancelled(caller, msg.params()).await;
                return accepted();
            }
            // Other notifications and responses from the client: accepted, nothing to answer.
            _ => return accepted(),
        };
        let router = match self.router(&caller.endpoint) {
            Ok(r) => r,
            Err(e) => {
                self.record(
                    "mcp.call",
                    &caller.endpoint,
                    Outcome::Failed,
                    &format!("token={} error=\"{e}\"", caller.token_id),
                );
                return json_response(
                    StatusCode::OK,
                    &jsonrpc::error(Some(&id), code::INTERNAL_ERROR, "endpoint unavailable"),
                );
            }
        };
        let params = msg.params();
        let servers = &*self.servers;
        let handled = match method.as_str() {
            "initialize" => return self.initialize(caller, &id, params),
            "tools/call" => {
                return self
                    .tools_call(caller, router, id, params.cloned(), sse)
                    .await;
            }
            "ping" => Handled::ok(jsonrpc::result(&id, json!({}))),
            "tools/list" => router.list_tools(servers, &id, params).await,
            "prompts/list" => {
                router
                    .list_passthrough(servers, &id, params, router::PROMPTS)
                    .await
            }
            "resources/list" => {
                router
                    .list_passthrough(servers, &id, params, router::RESOURCES)
                    .await
            }
            "resources/templates/list" => {
                router
                    .list_passthrough(servers, &id, params, router::TEMPLATES)
                    .await
            }
            "prompts/get" | "resources/read" => {
                router.get_passthrough(servers, &id, params, &method).await
            }
            _ => Handled::ok(jsonrpc::error(
                Some(&id),
                code::METHOD_NOT_FOUND,
                "method not found",
            )),
        };
        self.audit_handled(caller, &method, params, &handled);
        json_response(StatusCode::OK, &handled.response)
    }

    /// `initialize`: a new session at the revision asked for (or our newest).
    fn initialize(&self, caller: &Caller, id: &Id, params: Option<&Map<String, Value>>) -> Resp {
        let revision = session_revision(params);
        let sid = match self.sessions.create(caller, revision) {
            Ok(sid) => sid,
            Err(r) => return self.refuse(&caller.endpoint, Some(caller), r),
        };
        let handled = Handled::ok(initialized(id, revision));
        self.audit_handled(caller, "initialize", params, &handled);
        let mut resp = json_response(StatusCode::OK, &handled.response);
        if let Ok(v) = HeaderValue::from_str(&sid) {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        resp
    }

    /// `tools/call`: as events when the client takes them and wants progress, else one answer.
    async fn tools_call(
        self: &Arc<Self>,
        caller: &Caller,
        router: Router,
        id: Id,
        params: Option<Map<String, Value>>,
        sse: bool,
    ) -> Resp {
        let wants_progress = params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("progressToken"))
            .is_some();
        // Bounded: progress beyond it is dropped for a client that does not read.
        let (progress, events) = if sse && wants_progress {
            let (tx, rx) = tokio::sync::mpsc::channel::<Value>(STREAM_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let Some(hooks) = self.inflight.reserve(caller, &id, progress.clone()) else {
            return json_response(
                StatusCode::OK,
                &jsonrpc::error(
                    Some(&id),
                    code::INVALID_REQUEST,
                    "a request with this id is already in flight",
                ),
            );
        };
        let front = self.clone();
        let who = caller.clone();
        let call_id = id.clone();
        // In its own task: a client that goes away mid-call does not cancel the bookkeeping
        // (audit, in-flight table) of a call the server already runs.
        let task = tokio::spawn(async move {
            let handled = router
                .call_tool(&*front.servers, &call_id, params.as_ref(), hooks)
                .await;
            front.inflight.forget(&who, &call_id);
            front.audit_handled(&who, "tools/call", params.as_ref(), &handled);
            match progress {
                Some(tx) => {
                    let _ = tx.send(handled.response).await;
                    None
                }
                None => Some(handled.response),
            }
        });
        if let Some(rx) = events {
            return sse::relayed(rx);
        }
        let response =
            task.await.ok().flatten().unwrap_or_else(|| {
                jsonrpc::error(Some(&id), code::INTERNAL_ERROR, "internal error")
            });
        json_response(StatusCode::OK, &response)
    }

    /// `notifications/cancelled`: relayed to the server that runs the call, under the
    /// gateway's id for it.
    async fn cancelled(&self, caller: &Caller, params: Option<&Map<String, Value>>) {
        let Some(rid) = params.and_then(|p| p.get("requestId")) else {
            return;
        };
        let reason = params.and_then(|p| p.get("reason")).and_then(Value::as_str);
        if let Some((session, gid)) = self.inflight.cancel(caller, rid) {
            session.cancel(gid, reason).await;
            self.record(
                "mcp.cancel",
                &caller.endpoint,
                Outcome::Ok,
                &format!(
                    "token={} request={}",
                    caller.token_id,
                    rid.to_string().chars().take(64).collect::<String>()
                ),
            );
        }
    }

    fn audit_handled(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<&Map<String, Value>>,
        handled: &Handled,
    ) {
        // The method and the tool's name are the client's words: quoted unless plain.
        let tool = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(|n| {
                format!(
                    " tool={}",
                    audit_value(&n.chars().take(128).collect::<String>())
                )
            })
            .unwrap_or_default();
        let what = format!(
            "token={} method={}{tool}",
            caller.token_id,
            audit_value(&method.chars().take(64).collect::<String>())
        );
        match &handled.refused {
            Some(r) => self.record(
                "mcp.denied",
                &caller.endpoint,
                Outcome::Denied,
                &format!("{what} reason=\"{}\"", r.reason()),
            ),
            None => match handled.response.get("error") {
                // The error's message says which server failed and why (e.g. one that could
                // not start): the trail keeps it, cut short, and quoted by `{:?}`: the
                // message can be a server's own words, whose `"` must not end the field.
                Some(e) => {
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    let message: String = message.chars().take(300).collect();
                    let detail = format!("{what} error={message:?}");
                    self.record("mcp.call", &caller.endpoint, Outcome::Failed, &detail);
                }
                None => self.record("mcp.call", &caller.endpoint, Outcome::Ok, &what),
            },
        }
        if !handled.hidden.is_empty() {
            self.record(
                "mcp.hidden",
                &caller.endpoint,
                Outcome::Denied,
                &format!("{what} {}", hidden_detail(&handled.hidden)),
            );
        }
        if !handled.redacted.is_empty() {
            self.record(
                "mcp.redacted",
                &caller.endpoint,
                Outcome::Denied,
                &format!("{what} secrets={}", handled.redacted.join(",")),
            );
        }
    }
}

/// `value` as one audit field's value: as is when plain (a name or a method), else quoted by
/// `{:?}`, so that a space, a `"` or a `key=` inside cannot end the field and write another,
/// nor a control character reach the table and the journal.
fn audit_value(value: &str) -> std::borrow::Cow<'_, str> {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'));
    if plain {
        value.into()
    } else {
        format!("{value:?}").into()
    }
}
