//! Server-sent events: a session's `GET` stream (the list changes of its endpoint's servers,
//! so that clients list again through the filters, and a keep-alive comment so that dead
//! clients are noticed), and the body of a tool call answered as a stream (its progress, then
//! its response).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::{Caller, Front, Resp, admission};
use crate::mcp::refusal::Refusal;
use crate::mcp::router::Sessions;

/// A comment on idle `GET` streams this often.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// Sessions with their `GET` stream open (one each).
#[derive(Debug, Default)]
pub(super) struct OpenStreams(Arc<Mutex<HashSet<String>>>);

/// A `GET` stream's state; when the client goes, the body is dropped and so is the session's
/// mark as having a stream.
struct StreamState {
    changes: tokio::sync::broadcast::Receiver<(String, String)>,
    tick: tokio::time::Interval,
    servers: HashSet<String>,
    sid: String,
    streams: Arc<Mutex<HashSet<String>>>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.sid);
    }
}

fn message_frame(msg: &Value) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("event: message\ndata: {msg}\n\n")))
}

/// An event-stream response of `events`.
fn event_stream<St>(events: St) -> Resp
where
    St: futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static,
{
    let mut r = Response::new(StreamBody::new(events).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

/// The messages sent to `rx`, as events, until its senders are gone.
pub(super) fn relayed(mut rx: tokio::sync::mpsc::Receiver<Value>) -> Resp {
    event_stream(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|m| m.map(|v| Ok::<_, Infallible>(message_frame(&v))))
    }))
}

impl<S: Sessions + 'static> Front<S> {
    /// `GET`: the session's stream of server-initiated messages. One per session.
    pub(super) fn stream(&self, caller: &Caller, h: &HeaderMap) -> Result<Resp, Refusal> {
        if !admission::accepts_sse(h) {
            return Err(Refusal::StreamNotAccepted);
        }
        let version = admission::version(h);
        if version == Some(admission::STATELESS_REVISION) {
            return Err(Refusal::NoStreamWithoutSession);
        }
        self.sessions
            .touch(caller, admission::session_id(h), version)?;
        let sid = admission::session_id(h).unwrap_or_default().to_owned();
        let streams = self.streams.0.clone();
        if !streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid.clone())
        {
            return Err(Refusal::StreamOpenAlready);
        }
        let servers: HashSet<String> = self
            .store
            .endpoint_get(&caller.endpoint)
            .ok()
            .flatten()
            .map(|e| e.servers.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let state = StreamState {
            changes: self.servers.list_changes(),
            tick: tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE),
            servers,
            sid,
            streams,
        };
        Ok(event_stream(futures_util::stream::unfold(
            state,
            next_stream_event,
        )))
    }
}

/// The next event of a `GET` stream: a list change of one of the endpoint's servers, or a
/// keep-alive; `None` once the server pool is gone.
async fn next_stream_event(
    mut st: StreamState,
) -> Option<(Result<Frame<Bytes>, Infallible>, StreamState)> {
    loop {
        tokio::select! {
            change = st.changes.recv() => match change {
                Ok((server, method)) if st.servers.contains(&server) => {
                    let frame = message_frame(&json!({"jsonrpc": "2.0", "method": method}));
                    return Some((Ok(frame), st));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            },
            _ = st.tick.tick() => {
                return Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), st));
            }
        }
    }
}
