//! Server lifecycle: a server's session starts on first use, is shared by every caller, and
//! after it ends (crash, protocol violation) the next use starts a new one, no sooner than an
//! exponential backoff allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::router::{LIST_CHANGED, Sessions};
use super::stdio::{CallError, ServerSession, SessionLimits};
use crate::audit::{AuditQueue, Outcome};
use crate::store::{ServerRecord, Store};

/// A started server: its stdio, and whatever keeps it alive (dropping it stops the server).
pub struct Launched {
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// The server's stderr, if captured: logged with caps and kept in [`ServerLogs`].
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub guard: Box<dyn Send + Sync>,
}

/// Longest stderr line kept; most lines a minute logged per server; lines kept per server.
const STDERR_LINE: usize = 2048;
const STDERR_LINES_PER_MINUTE: u32 = 600;
const KEPT_LINES: usize = 1000;

/// The last [`KEPT_LINES`] stderr lines of each server (for `gigmcp server logs`), escaped
/// ([`crate::terminal::escape_bytes`]).
#[derive(Debug, Default)]
pub struct ServerLogs {
    lines: std::sync::Mutex<HashMap<String, std::collections::VecDeque<String>>>,
}

impl ServerLogs {
    fn push(&self, server: &str, line: String) {
        let mut all = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let q = all.entry(server.to_owned()).or_default();
        if q.len() == KEPT_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines of `server`'s stderr, oldest first.
    pub fn tail(&self, server: &str, n: usize) -> Vec<String> {
        let all = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        all.get(server)
            .map(|q| q.iter().skip(q.len().saturating_sub(n)).cloned().collect())
            .unwrap_or_default()
    }
}

/// A server's stderr into the log and [`ServerLogs`]: lines cut at [`STDERR_LINE`] bytes, at
/// most [`STDERR_LINES_PER_MINUTE`] a minute (the rest counted and reported).
async fn capture_stderr(
    server: String,
    err: Box<dyn AsyncRead + Send + Unpin>,
    logs: Arc<ServerLogs>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut r = tokio::io::BufReader::new(err);
    let mut buf = Vec::new();
    let mut window = Instant::now();
    let (mut count, mut dropped) = (0u32, 0u64);
    loop {
        buf.clear();
        let mut limited = (&mut r).take(64 * 1024);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if window.elapsed() >= Duration::from_secs(60) {
            if dropped > 0 {
                tracing::warn!(%server, dropped, "server stderr: lines dropped (rate limit)");
            }
            window = Instant::now();
            count = 0;
            dropped = 0;
        }
        count += 1;
        if count > STDERR_LINES_PER_MINUTE {
            dropped += 1;
            continue;
        }
        let end = buf.len().min(STDERR_LINE);
        // Escaped from the raw bytes, before anything keeps or logs the line: the journal and
        // `gigmcp server logs` show what the server wrote, never obey it (and invalid UTF-8
        // stays visible as `\xNN` rather than lost as U+FFFD).
        let raw = buf[..end].trim_ascii_end();
        let line = crate::terminal::escape_bytes(raw);
        tracing::info!(%server, "stderr: {line}");
        logs.push(&server, line);
    }
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Launched")
    }
}

/// Starts a server's process (in production, in a sandbox through the privileged helper).
/// Its error names the step that failed; the pool writes it to the audit and the log, and
/// tells the MCP client only [`Launcher::client_reason`].
pub trait Launcher: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    fn launch(
        &self,
        server: &ServerRecord,
    ) -> impl Future<Output = Result<Launched, Self::Error>> + Send;

    /// What a client holding only an endpoint token is told when [`Launcher::launch`] fails:
    /// a category, never the error's text, which can name host paths, the helper's bus
    /// address, host users or the image's layout (the admin reads those in the audit).
    fn client_reason(err: &Self::Error) -> &'static str;
}

/// What keeps a started server alive. Shared with the session's watcher, which drops it (so
/// the sandbox goes) as soon as the session ends; a stop takes it first.
type GuardSlot = Arc<std::sync::Mutex<Option<Box<dyn Send + Sync>>>>;

struct Live {
    session: Arc<ServerSession>,
    guard: GuardSlot,
    started: Instant,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Stopped on purpose: the watcher finds the slot empty and reports nothing.
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    last_used: Option<Instant>,
    failures: u32,
    /// No new start before this.
    not_before: Option<Instant>,
    /// Why the last start failed: callers refused during the backoff are told it too.
    last_failure: Option<String>,
}

/// First retry after this; doubled per consecutive failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that lived this long resets the failure count when it ends.
const STABLE: Duration = Duration::from_secs(60);

/// The wait before the next start after `failures` consecutive failures (≥ 1).
fn backoff(failures: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1 << failures.clamp(1, 16).saturating_sub(1))
        .min(BACKOFF_MAX)
}

pub struct ServerPool<L> {
    store: Arc<dyn Store>,
    logs: Arc<ServerLogs>,
    changes: tokio::sync::broadcast::Sender<(String, String)>,
    audit: AuditQueue,
    launcher: L,
    limits: SessionLimits,
    init_timeout: Duration,
    /// Per server, its own lock: a slow start holds up that server's callers only.
    servers: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<State>>>>,
}

impl<L> std::fmt::Debug for ServerPool<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPool").finish_non_exhaustive()
    }
}

impl<L: Launcher> ServerPool<L> {
    /// `audit` receives `mcp.server.failed` when a server crashes, breaks the protocol or hangs.
    pub fn new(
        store: Arc<dyn Store>,
        audit: impl Into<AuditQueue>,
        launcher: L,
        limits: SessionLimits,
    ) -> Self {
        Self {
            store,
            logs: Arc::default(),
            changes: tokio::sync::broadcast::channel(256).0,
            audit: audit.into(),
            launcher,
            limits,
            init_timeout: Duration::from_secs(30),
            servers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn state(&self, name: &str) -> Arc<tokio::sync::Mutex<State>> {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn all_states(&self) -> Vec<(String, Arc<tokio::sync::Mutex<State>>)> {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Stops a server (its session ends; the next use starts it again).
    pub async fn stop(&self, name: &str) -> bool {
        let known = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        match known {
            Some(state) => state.lock().await.live.take().is_some(),
            None => false,
        }
    }

    /// Stops every server not used for `idle`; returns their names.
    pub async fn stop_idle(&self, idle: Duration) -> Vec<String> {
        let mut stopped = Vec::new();
        for (name, state) in self.all_states() {
            // A server being started right now is not idle.
            let Ok(mut s) = state.try_lock() else {
                continue;
            };
            // Sessions that ended by themselves stay, so the next use applies the backoff.
            let running = s
                .live
                .as_ref()
                .is_some_and(|l| l.session.closed_reason().is_none());
            if running && s.last_used.is_none_or(|t| t.elapsed() >= idle) {
                s.live = None;
                stopped.push(name);
            }
        }
        stopped
    }

    /// Recent stderr lines of each server.
    pub fn logs(&self) -> &ServerLogs {
        &self.logs
    }

    /// Starts a server now (as its first use would).
    pub async fn start_now(&self, name: &str) -> Result<(), CallError> {
        self.session(name).await.map(|_| ())
    }

    /// Stops every server.
    pub async fn stop_all(&self) {
        for (_, state) in self.all_states() {
            state.lock().await.live = None;
        }
    }

    async fn start(&self, name: &str) -> Result<(Arc<ServerSession>, Live), CallError> {
        let unavailable = |reason: String| CallError::Closed {
            server: name.to_owned(),
            reason,
        };
        let record = self
            .store
            .server_get(name)
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(|| unavailable("not installed".into()))?;
        let launched = tokio::time::timeout(self.init_timeout, self.launcher.launch(&record))
            .await
            .map_err(|_| {
                let why = "the sandbox did not start in time";
                (why.to_owned(), why)
            })
            .and_then(|r| r.map_err(|e| (format!("cannot start: {e}"), L::client_reason(&e))));
        let mut launched = match launched {
            Ok(l) => l,
            Err((reason, told)) => {
                // Audited here, once per attempt: no session exists for the watcher below to
                // report (a failed `initialize` is reported by the watcher). The reason can
                // quote the manifest (its command): `{:?}` quotes it, so that its own `"`
                // cannot end the field and write another, nor a control reach the journal.
                tracing::warn!(server = %name, reason = %reason, "mcp: server not started");
                self.audit.record(
                    "mcp.server.failed",
                    name,
                    Outcome::Failed,
                    format!("reason={reason:?} not started; retried after a backoff"),
                );
                return Err(unavailable(format!(
                    "cannot start: {told} (the reason is in the gateway's audit)"
                )));
            }
        };
        if let Some(err) = launched.stderr.take() {
            tokio::spawn(capture_stderr(name.to_owned(), err, self.logs.clone()));
        }
        let session =
            ServerSession::start(name, launched.stdout, launched.stdin, self.limits.clone());
        let guard: GuardSlot = Arc::new(std::sync::Mutex::new(Some(launched.guard)));
        // When the session ends by itself (crash, garbage, a hang), the server is stopped at
        // once and reported, not only when the next call notices.
        let watched = session.clone();
        let slot = guard.clone();
        let audit = self.audit.clone();
        let server = name.to_owned();
        // Its list changes, for clients' streams.
        let mut notes = session.subscribe();
        let changes = self.changes.clone();
        let from = name.to_owned();
        tokio::spawn(async move {
            loop {
                match notes.recv().await {
                    Ok(n) => {
                        if let Some(m) = n["method"].as_str().filter(|m| LIST_CHANGED.contains(m)) {
                            let _ = changes.send((from.clone(), m.to_owned()));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::spawn(async move {
            let reason = watched.ended().await;
            let still_running = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if still_running.is_some() {
                drop(still_running);
                audit.record(
                    "mcp.server.failed",
                    &server,
                    Outcome::Failed,
                    format!("reason={reason:?} stopped; restarted on next use"),
                );
            }
        });
        if let Err(e) = session.initialize(self.init_timeout).await {
            // Ends the session, so the watcher stops the server now.
            session.close(format!("initialize failed: {e}"));
            return Err(e);
        }
        Ok((
            session.clone(),
            Live {
                session,
                guard,
                started: Instant::now(),
            },
        ))
    }
}

impl<L: Launcher> Sessions for ServerPool<L> {
    fn list_changes(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }

    async fn session(&self, name: &str) -> Result<Arc<ServerSession>, CallError> {
        // One start at a time per server: concurrent first calls wait for it rather than
        // starting the server several times; other servers are not held up.
        let state = self.state(name);
        let mut state = state.lock().await;
        state.last_used = Some(Instant::now());
        if let Some(live) = &state.live {
            let Some(ended) = live.session.closed_reason() else {
                return Ok(live.session.clone());
            };
            let lived = live.started.elapsed();
            state.live = None;
            state.last_failure = Some(ended);
            state.failures = if lived >= STABLE {
                1
            } else {
                state.failures + 1
            };
            state.not_before = Some(Instant::now() + backoff(state.failures));
        }
        if let Some(t) = state.not_before
            && Instant::now() < t
        {
            let last = state
                .last_failure
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(CallError::Closed {
                server: name.to_owned(),
                reason: format!(
                    "restarting after a failure{last}, in {} ms",
                    (t - Instant::now()).as_millis()
                ),
            });
        }
        match self.start(name).await {
            Ok((session, live)) => {
                state.live = Some(live);
                state.last_failure = None;
                Ok(session)
            }
            Err(e) => {
                state.failures += 1;
                state.not_before = Some(Instant::now() + backoff(state.failures));
                state.last_failure = Some(match &e {
                    CallError::Closed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                });
                Err(e)
            }
        }
    }
}
