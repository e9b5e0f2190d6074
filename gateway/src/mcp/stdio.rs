//! One MCP session with a server over its stdin/stdout (newline-delimited JSON-RPC), shared by
//! every client request routed to that server.
//!
//! The gateway numbers its own requests, so clients' ids never reach the server and two clients
//! using the same id cannot be confused. What the server writes is bounded: a line longer than
//! the limit, or one that is not JSON-RPC, ends the session (the server is reported as broken
//! and every pending call fails), because nothing after it can be trusted to be framed right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::jsonrpc::{self, Message};

/// The protocol revision the gateway speaks to servers (widely implemented by server SDKs).
pub const SERVER_PROTOCOL: &str = "2025-06-18";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("server {server} is not available: {reason}")]
    Closed { server: String, reason: String },
    #[error("server {server} did not answer {method} within {secs} s")]
    Timeout {
        server: String,
        method: String,
        secs: u64,
    },
    /// The server answered with a JSON-RPC error (kept whole, passed on to the client).
    #[error("server answered with an error")]
    Remote(Value),
    #[error("request cancelled by the client")]
    Cancelled,
}

/// Bounds on what a server may send.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Longest line (one message) accepted from the server.
    pub max_message_bytes: usize,
    /// Requests in flight to one server.
    pub max_pending: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_pending: 1024,
        }
    }
}

/// A server's tools as it listed them.
pub type ToolList = Arc<Vec<serde_json::Map<String, Value>>>;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>>;

/// A live stdio session. Cheap to share (`Arc`); ends when the server's stdout closes or it
/// breaks the protocol.
#[derive(Debug)]
pub struct ServerSession {
    server: String,
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    limits: SessionLimits,
    notifications: broadcast::Sender<Value>,
    /// `Some(reason)` once the session has ended (the first reason is kept).
    closed: watch::Sender<Option<String>>,
    /// What the server said in `initialize`.
    pub init: Mutex<Option<Value>>,
    /// The server's last complete tool listing; cleared when it says its list changed.
    tools: Mutex<Option<ToolList>>,
}

impl ServerSession {
    /// Starts the reader and writer tasks over a server's stdout and stdin.
    pub fn start<R, W>(server: &str, stdout: R, stdin: W, limits: SessionLimits) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, out_rx) = mpsc::channel::<Vec<u8>>(256);
        let (closed, _) = watch::channel(None);
        let (notifications, _) = broadcast::channel(1024);
        let s = Arc::new(Self {
            server: server.to_owned(),
            out,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            limits,
            notifications,
            closed,
            init: Mutex::new(None),
            tools: Mutex::new(None),
        });
        tokio::spawn(write_loop(stdin, out_rx));
        let reader = s.clone();
        tokio::spawn(async move {
            let reason = reader.read_loop(stdout).await;
            reader.close(reason);
        });
        s
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Why the session ended, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// Resolves when the session ends, with the reason.
    pub async fn ended(&self) -> String {
        let mut rx = self.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "session dropped".into();
            }
        }
    }

    /// Server notifications (progress, list changes, log messages), as sent.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.notifications.subscribe()
    }

    fn closed_error(&self) -> CallError {
        CallError::Closed {
            server: self.server.clone(),
            reason: self
                .closed_reason()
                .unwrap_or_else(|| "session ended".into()),
        }
    }

    /// Ends the session (the first reason is kept); every pending call fails.
    pub fn close(&self, reason: String) {
        let first = self.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::warn!(server = %self.server, %reason, "mcp: server session ended");
        }
        let waiting: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, w) in waiting {
            let _ = w.send(Err(self.closed_error()));
        }
    }

    /// Sends a request; waits for its result. `params` are passed as given.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        self.request_with(method, params, timeout, |_| {}).await
    }

    /// [`Self::request`], telling `started` the gateway's id for it once sent (so the caller
    /// can relay a cancellation). A request cancelled meanwhile ends with
    /// [`CallError::Cancelled`].
    pub async fn request_with(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
        started: impl FnOnce(u64),
    ) -> Result<Value, CallError> {
        let (id, rx) = self.register()?;
        let mut msg = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send(&msg).await?;
        started(id);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                self.forget(id);
                // A server that does not answer within the limit is treated as hung: the
                // session ends, the server is stopped and started afresh on the next call.
                self.close(format!(
                    "stopped answering ({method} took over {} s)",
                    timeout.as_secs()
                ));
                Err(CallError::Timeout {
                    server: self.server.clone(),
                    method: method.to_owned(),
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    /// Cancels request `id` on the client's behalf: the server is told
    /// (`notifications/cancelled`), and the waiting call ends with [`CallError::Cancelled`].
    pub async fn cancel(&self, id: u64, reason: Option<&str>) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(w) = waiter {
            let _ = w.send(Err(CallError::Cancelled));
            let mut params = json!({ "requestId": id });
            if let Some(r) = reason {
                params["reason"] = Value::String(r.chars().take(200).collect());
            }
            let _ = self.notify("notifications/cancelled", Some(params)).await;
        }
    }

    /// The id the next [`Self::request`] would use is reserved here, so a caller can cancel it.
    fn register(&self) -> Result<(u64, oneshot::Receiver<Result<Value, CallError>>), CallError> {
        if self.closed_reason().is_some() {
            return Err(self.closed_error());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= self.limits.max_pending {
            return Err(CallError::Closed {
                server: self.server.clone(),
                reason: "too many requests in flight".into(),
            });
        }
        p.insert(id, tx);
        Ok((id, rx))
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), CallError> {
        let mut msg = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send(&msg).await
    }

    async fn send(&self, msg: &Value) -> Result<(), CallError> {
        let mut line = serde_json::to_vec(msg).expect("a Value serializes");
        line.push(b'\n');
        self.out.send(line).await.map_err(|_| self.closed_error())
    }

    /// The cached tool listing, if still valid.
    pub fn cached_tools(&self) -> Option<ToolList> {
        self.tools.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn cache_tools(&self, tools: ToolList) {
        *self.tools.lock().unwrap_or_else(|e| e.into_inner()) = Some(tools);
    }

    /// The MCP handshake: `initialize`, then `notifications/initialized`.
    pub async fn initialize(&self, timeout: Duration) -> Result<Value, CallError> {
        let params = json!({
            "protocolVersion": SERVER_PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "gigmcp", "version": env!("CARGO_PKG_VERSION")},
        });
        let r = self.request("initialize", Some(params), timeout).await?;
        self.notify("notifications/initialized", None).await?;
        *self.init.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        Ok(r)
    }

    /// Reads until the server's stdout ends or breaks the protocol; returns why.
    async fn read_loop<R: AsyncRead + Unpin>(&self, stdout: R) -> String {
        let mut r = BufReader::with_capacity(64 * 1024, stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line_bounded(&mut r, &mut line, self.limits.max_message_bytes).await {
                Ok(0) => return "server closed its stdout".into(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let msg = match serde_json::from_slice::<Value>(text)
                .map_err(|_| jsonrpc::Invalid("not JSON"))
                .and_then(Message::parse)
            {
                Ok(m) => m,
                Err(e) => return format!("protocol violation: {e}"),
            };
            match msg {
                Message::Response { id, mut msg } => {
                    let Some(id) = id.as_u64() else {
                        continue; // not one of ours
                    };
                    let waiter = self
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(w) = waiter {
                        let out = match msg.remove("result") {
                            Some(r) => Ok(r),
                            None => Err(CallError::Remote(
                                msg.remove("error").unwrap_or(Value::Null),
                            )),
                        };
                        let _ = w.send(out);
                    }
                }
                Message::Notification { method, msg } => {
                    if method == "notifications/tools/list_changed" {
                        *self.tools.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    let _ = self.notifications.send(Value::Object(msg));
                }
                Message::Request { id, method, .. } => {
                    // Server-to-client requests: `ping` is answered here; the others
                    // (sampling, elicitation, roots) are refused cleanly for now.
                    let reply = if method == "ping" {
                        jsonrpc::result(&id, json!({}))
                    } else {
                        jsonrpc::error(
                            Some(&id),
                            jsonrpc::code::METHOD_NOT_FOUND,
                            "the gateway does not relay this request to clients",
                        )
                    };
                    let _ = self.send(&reply).await;
                }
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut stdin: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Why a server's stdout cannot give another line: the session ends with this as its reason.
#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error("reading the server's stdout: {0}")]
    Read(#[from] std::io::Error),
    #[error("protocol violation: a message over {0} bytes")]
    TooLong(usize),
}

/// Reads one `\n`-terminated line into `buf`, refusing to buffer more than `max` bytes.
async fn read_line_bounded<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, LineError> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            // A last line cut by the end of the stream has no `\n` to allow for: `max` bytes
            // at most, as any other (the bound below lets `max + 1` through for the `\n`).
            if buf.len() > max {
                return Err(LineError::TooLong(max));
            }
            return Ok(buf.len());
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Err(LineError::TooLong(max));
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_one(data: &[u8], max: usize) -> Result<Vec<u8>, LineError> {
        let mut r = BufReader::new(data);
        let mut line = Vec::new();
        read_line_bounded(&mut r, &mut line, max).await?;
        Ok(line)
    }

    /// Found by the `framing` fuzz target: a last line without `\n` got one byte more than
    /// the cap.
    #[tokio::test]
    async fn a_last_line_over_the_cap_is_refused_without_its_newline_too() {
        let max = 132;
        let cut = vec![b'x'; max + 1];
        assert!(matches!(
            read_one(&cut, max).await,
            Err(LineError::TooLong(132))
        ));
        assert_eq!(read_one(&cut[..max], max).await.unwrap(), &cut[..max]);
        let mut ended = cut[..max].to_vec();
        ended.push(b'\n');
        assert_eq!(read_one(&ended, max).await.unwrap(), ended);
        ended.insert(0, b'x');
        assert!(matches!(
            read_one(&ended, max).await,
            Err(LineError::TooLong(132))
        ));
    }
}
