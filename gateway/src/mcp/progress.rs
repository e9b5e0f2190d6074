//! Progress of a tool call, relayed from its server to the client that made it.
//!
//! Two clients may pick the same progress token, and a server's notifications reach every
//! subscriber of its session, so the client's token is replaced by one unique in the gateway
//! before the call is sent; the server's progress for that token is relayed back under the
//! client's own token, redacted like the call's result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::redact::Redactor;
use super::stdio::ServerSession;

static NEXT_PROGRESS: AtomicU64 = AtomicU64::new(1);

/// A call's progress being relayed.
#[derive(Debug)]
pub struct Relay {
    task: tokio::task::JoinHandle<()>,
    done: oneshot::Sender<()>,
    /// Secrets redacted from relayed progress.
    hits: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Gives the call in `fwd` a gateway-unique progress token if the client sent one, and,
    /// if the client takes progress (`sink`), starts relaying the server's progress for it.
    pub fn start(
        fwd: &mut Map<String, Value>,
        session: &ServerSession,
        sink: Option<Sender<Value>>,
        redactor: Option<Arc<Redactor>>,
    ) -> Option<Self> {
        let meta = fwd.get_mut("_meta").and_then(Value::as_object_mut)?;
        let theirs = meta.get("progressToken")?.clone();
        let ours = format!(
            "gmcp-progress-{}",
            NEXT_PROGRESS.fetch_add(1, Ordering::Relaxed)
        );
        meta.insert("progressToken".into(), Value::String(ours.clone()));
        let sink = sink?;
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let relay = Relayer {
            theirs,
            ours,
            sink,
            redactor,
            hits: hits.clone(),
        };
        let mut notes = session.subscribe();
        let (done, mut finished) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    n = notes.recv() => match n {
                        Ok(n) => if !relay.pass(n) { return },
                        Err(RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                    _ = &mut finished => {
                        // The server sent its progress before its response: whatever is
                        // queued now belongs before the response.
                        while let Ok(n) = notes.try_recv() {
                            if !relay.pass(n) {
                                return;
                            }
                        }
                        return;
                    }
                }
            }
        });
        Some(Self { task, done, hits })
    }

    /// The call is answered: relays what the server sent before its answer, then stops; the
    /// secret names redacted from progress.
    pub async fn finish(self) -> Vec<String> {
        let _ = self.done.send(());
        let _ = self.task.await;
        std::mem::take(&mut *self.hits.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct Relayer {
    theirs: Value,
    ours: String,
    sink: Sender<Value>,
    redactor: Option<Arc<Redactor>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Relayer {
    /// Relays `n` if it is this call's progress; `false` once the client is gone.
    fn pass(&self, mut n: Value) -> bool {
        let mine = n["method"] == "notifications/progress"
            && n["params"]["progressToken"].as_str() == Some(self.ours.as_str());
        if !mine {
            return true;
        }
        n["params"]["progressToken"] = self.theirs.clone();
        if let Some(r) = &self.redactor {
            let found = r.redact(&mut n);
            self.hits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(found);
        }
        // A client that does not read loses progress, never the gateway's memory.
        match self.sink.try_send(n) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(_) => false,
        }
    }
}
