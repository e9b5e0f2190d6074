//! The audit trail (DESIGN 3.9): every admin change, secret use and security decision is an
//! entry in the store's `audit_events` table and a structured log line with target `audit`
//! (which journald keeps as fields). Entries name secrets, never carry their values.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use crate::store::{AuditEvent, Store, StoreError, now_ms};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// Records audit events on behalf of one actor (a uid, a token id, the daemon itself).
#[derive(Debug, Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    actor: String,
}

impl Auditor {
    pub fn new(store: Arc<dyn Store>, actor: impl Into<String>) -> Self {
        Self {
            store,
            actor: actor.into(),
        }
    }

    /// Records several events at once: each is logged, and all are persisted in one
    /// transaction (for high-rate sources such as the egress proxy).
    pub fn record_many(&self, events: &[(&str, &str, Outcome, &str)]) -> Result<(), StoreError> {
        let now = now_ms();
        let rows: Vec<AuditEvent> = events
            .iter()
            .map(|(action, target, outcome, detail)| {
                self.log(action, target, *outcome, detail);
                AuditEvent {
                    ts_ms: now,
                    actor: self.actor.clone(),
                    action: (*action).to_owned(),
                    target: (*target).to_owned(),
                    outcome: outcome.as_str().to_owned(),
                    detail: (*detail).to_owned(),
                }
            })
            .collect();
        self.store.audit_append_many(&rows)
    }

    fn log(&self, action: &str, target: &str, outcome: Outcome, detail: &str) {
        tracing::info!(
            target: "audit",
            actor = %self.actor,
            action,
            object = target,
            outcome = outcome.as_str(),
            detail,
            "audit"
        );
    }

    /// Records an event. A failure to persist it is returned: an action that cannot be audited
    /// should not be reported as done.
    pub fn record(
        &self,
        action: &str,
        target: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.log(action, target, outcome, detail);
        self.store.audit_append(&AuditEvent {
            ts_ms: now_ms(),
            actor: self.actor.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.as_str().to_owned(),
            detail: detail.to_owned(),
        })
    }
}

enum Entry {
    Event {
        action: &'static str,
        target: String,
        outcome: Outcome,
        detail: String,
    },
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Most events written in one transaction.
const BATCH: usize = 512;

/// After the first event of a batch, how long the writer lets more gather before writing. The
/// request path then neither wakes the writer nor waits for a transaction per request (on a busy
/// proxy that was a thread wake-up and a commit per request, competing with the traffic).
const GATHER: Duration = Duration::from_millis(10);

/// Writes events in batches: one transaction for whatever queued up within [`GATHER`] of the
/// first, instead of one per request. A flush request is served at once.
fn drain(auditor: Auditor, rx: Receiver<Entry>) {
    while let Ok(first) = rx.recv() {
        if matches!(first, Entry::Event { .. }) {
            std::thread::sleep(GATHER);
        }
        let mut events = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(entry) = next.take() {
            match entry {
                Entry::Event {
                    action,
                    target,
                    outcome,
                    detail,
                } => events.push((action, target, outcome, detail)),
                Entry::Flush(done) => flushes.push(done),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let batch: Vec<(&str, &str, Outcome, &str)> = events
            .iter()
            .map(|(a, t, o, d)| (*a, t.as_str(), *o, d.as_str()))
            .collect();
        if !batch.is_empty() {
            if let Err(e) = auditor.record_many(&batch) {
                tracing::error!(error = %e, "cannot persist {} audit events", batch.len());
            }
        }
        // Flushes are answered only once everything queued before them is written.
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write(auditor: &Auditor, action: &str, target: &str, outcome: Outcome, detail: &str) {
    if let Err(e) = auditor.record(action, target, outcome, detail) {
        tracing::error!(error = %e, action, "cannot persist an audit event");
    }
}

/// Events recorded from request paths (the MCP front, the egress proxy): queued to one writer
/// thread that persists them in batches, so no request waits on a disk sync. When the queue is
/// full the caller records synchronously instead of dropping the entry.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    auditor: Auditor,
    tx: SyncSender<Entry>,
}

impl AuditQueue {
    pub fn new(auditor: Auditor) -> Self {
        let (tx, rx) = sync_channel(65536);
        let writer = auditor.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || drain(writer, rx))
            .expect("spawn the audit writer thread");
        Self { auditor, tx }
    }

    pub fn record(&self, action: &'static str, target: &str, outcome: Outcome, detail: String) {
        let entry = Entry::Event {
            action,
            target: target.to_owned(),
            outcome,
            detail,
        };
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(Entry::Event {
                action,
                target,
                outcome,
                detail,
            })) => write(&self.auditor, action, &target, outcome, &detail),
            Err(_) => tracing::error!("audit writer is gone"),
        }
    }

    /// The auditor behind the queue (for rare events recorded synchronously).
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// Waits until everything recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || sender.send(Entry::Flush(tx)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = rx.await;
        }
    }
}

/// An auditor on its own queue (one writer thread); clone an [`AuditQueue`] to share one.
impl From<Auditor> for AuditQueue {
    fn from(auditor: Auditor) -> Self {
        Self::new(auditor)
    }
}
