//! The audit trail (DESIGN 3.9): every admin change, secret use and security decision is an
//! entry in the store's `audit_events` table and a structured log line with target `audit`
//! (which journald keeps as fields). Entries name secrets, never carry their values.
//!
//! Request paths record through [`AuditQueue`], which never blocks them: events are queued to
//! one writer thread; what a full queue cannot take is counted and reported as one
//! `audit.overflow` event. Events anyone can cause at will (refusals of unauthenticated
//! requests) go through a [`Throttle`]: a few per second are recorded, the rest are counted by
//! reason and summarised as one `audit.suppressed` event per second of flood.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How often the writer looks at the throttles when nothing else wakes it, so that a flood
/// that stopped is still summarised.
const SUMMARY_POLL: Duration = Duration::from_secs(1);

/// What the writer thread shares with the queue's senders.
#[derive(Debug, Default)]
struct Shared {
    /// Events a full queue could not take since the writer last reported.
    overflowed: AtomicU64,
    throttles: Mutex<Vec<Arc<Throttle>>>,
}

impl Shared {
    /// `audit.overflow` and `audit.suppressed` events due now.
    fn summaries(&self, now: Instant) -> Vec<(&'static str, String, Outcome, String)> {
        let mut out = Vec::new();
        let lost = self.overflowed.swap(0, Ordering::Relaxed);
        if lost > 0 {
            out.push((
                "audit.overflow",
                "audit".to_owned(),
                Outcome::Failed,
                format!("dropped={lost} reason=\"audit queue full\""),
            ));
        }
        let throttles = self.throttles.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(throttles.iter().filter_map(|t| t.summary_due(now)));
        out
    }
}

/// Writes events in batches: one transaction for whatever queued up within [`GATHER`] of the
/// first, instead of one per request. A flush request is served at once.
fn drain(auditor: Auditor, rx: Receiver<Entry>, shared: Arc<Shared>) {
    loop {
        let first = match rx.recv_timeout(SUMMARY_POLL) {
            Ok(first) => Some(first),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if matches!(first, Some(Entry::Event { .. })) {
            std::thread::sleep(GATHER);
        }
        let mut events = Vec::new();
        let mut flushes = Vec::new();
        let mut next = first;
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
        events.extend(shared.summaries(Instant::now()));
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

/// A budget for events anyone can cause at will: at most `per_second` recorded in each
/// one-second window; the rest are counted by reason and summarised once the window is over.
#[derive(Debug)]
pub struct Throttle {
    /// The action of the events it limits (the summary's target).
    action: &'static str,
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    recorded: u32,
    /// Reasons are `&'static str`: the map stays as small as the set of reasons.
    suppressed: BTreeMap<&'static str, u64>,
}

impl Throttle {
    fn new(action: &'static str, per_second: u32) -> Self {
        Self {
            action,
            per_second,
            window: Mutex::new(Window {
                start: Instant::now(),
                recorded: 0,
                suppressed: BTreeMap::new(),
            }),
        }
    }

    /// Whether one more event may be recorded now; if not, it is counted under `reason`.
    fn admit(&self, reason: &'static str, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(w.start) >= Duration::from_secs(1) && w.suppressed.is_empty() {
            w.start = now;
            w.recorded = 0;
        }
        if w.recorded < self.per_second {
            w.recorded += 1;
            return true;
        }
        *w.suppressed.entry(reason).or_default() += 1;
        false
    }

    /// The `audit.suppressed` event of a window that is over and suppressed something; the
    /// window starts again.
    fn summary_due(&self, now: Instant) -> Option<(&'static str, String, Outcome, String)> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.duration_since(w.start);
        if elapsed < Duration::from_secs(1) || w.suppressed.is_empty() {
            return None;
        }
        let total: u64 = w.suppressed.values().sum();
        let reasons: Vec<String> = w
            .suppressed
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let detail = format!(
            "suppressed={total} window_ms={} reasons=\"{}\"",
            elapsed.as_millis(),
            reasons.join("; ")
        );
        w.start = now;
        w.recorded = 0;
        w.suppressed.clear();
        Some((
            "audit.suppressed",
            self.action.to_owned(),
            Outcome::Denied,
            detail,
        ))
    }
}

/// Events recorded from request paths (the MCP front, the egress proxy): queued to one writer
/// thread that persists them in batches, so no request waits on a disk sync or a lock held by
/// the writer. When the queue is full the event is logged, counted and reported as
/// `audit.overflow` once the writer catches up: a request path never blocks on the audit.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    auditor: Auditor,
    tx: SyncSender<Entry>,
    shared: Arc<Shared>,
}

/// Events the queue holds before it overflows.
const QUEUE: usize = 65536;

impl AuditQueue {
    pub fn new(auditor: Auditor) -> Self {
        Self::with_capacity(auditor, QUEUE)
    }

    fn with_capacity(auditor: Auditor, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity);
        let writer = auditor.clone();
        let shared = Arc::new(Shared::default());
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || drain(writer, rx, for_writer))
            .expect("spawn the audit writer thread");
        Self {
            auditor,
            tx,
            shared,
        }
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
            })) => {
                // Still in the journal; the table gets the count.
                self.auditor.log(action, &target, outcome, &detail);
                self.shared.overflowed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => tracing::error!("audit writer is gone"),
        }
    }

    /// A [`Throttle`] of `per_second` events for `action`, summarised by this queue's writer.
    pub fn throttle(&self, action: &'static str, per_second: u32) -> Arc<Throttle> {
        let t = Arc::new(Throttle::new(action, per_second));
        self.shared
            .throttles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t.clone());
        t
    }

    /// Records an event of `throttle`'s action if its budget allows, else counts it under
    /// `reason` for the next `audit.suppressed` summary.
    pub fn record_throttled(
        &self,
        throttle: &Throttle,
        reason: &'static str,
        target: &str,
        outcome: Outcome,
        detail: String,
    ) {
        if throttle.admit(reason, Instant::now()) {
            self.record(throttle.action, target, outcome, detail);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn queue() -> (AuditQueue, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
        (
            AuditQueue::new(Auditor::new(store.clone(), "test")),
            store,
            dir,
        )
    }

    #[test]
    fn a_throttle_admits_its_budget_then_counts_by_reason() {
        let t = Throttle::new("mcp.denied", 2);
        let now = Instant::now();
        assert!(t.admit("a", now));
        assert!(t.admit("a", now));
        assert!(!t.admit("a", now));
        assert!(!t.admit("b", now));
        assert!(!t.admit("a", now));
        assert!(t.summary_due(now).is_none(), "the window is not over");
        let (action, _, outcome, detail) = t.summary_due(now + Duration::from_secs(1)).unwrap();
        assert_eq!((action, outcome), ("audit.suppressed", Outcome::Denied));
        assert!(detail.starts_with("suppressed=3 "), "{detail}");
        assert!(detail.contains("reasons=\"a=2; b=1\""), "{detail}");
        // A new window, a new budget; nothing left to summarise.
        assert!(t.admit("a", now + Duration::from_secs(1)));
        assert!(t.summary_due(now + Duration::from_secs(3)).is_none());
    }

    #[tokio::test]
    async fn a_flood_that_stops_is_still_summarised_by_the_writer() {
        let (q, store, _dir) = queue();
        let t = q.throttle("mcp.denied", 3);
        for _ in 0..100 {
            q.record_throttled(&t, "unknown token", "e", Outcome::Denied, "x".into());
        }
        // Nothing else is recorded: the writer's own poll must report the rest.
        tokio::time::sleep(SUMMARY_POLL * 2 + Duration::from_millis(500)).await;
        q.flush().await;
        let events = store.audit_recent(1000).unwrap();
        assert_eq!(
            events.iter().filter(|e| e.action == "mcp.denied").count(),
            3
        );
        let summary: Vec<_> = events
            .iter()
            .filter(|e| e.action == "audit.suppressed" && e.target == "mcp.denied")
            .collect();
        assert_eq!(summary.len(), 1, "{events:#?}");
        assert!(
            summary[0].detail.contains("reasons=\"unknown token=97\""),
            "{:?}",
            summary[0]
        );
    }

    #[test]
    fn a_full_queue_never_blocks_and_reports_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
        let q = AuditQueue::with_capacity(Auditor::new(store.clone(), "test"), 1);
        let started = Instant::now();
        for i in 0..5000 {
            q.record("mcp.call", "e", Outcome::Ok, format!("n={i}"));
        }
        // 5,000 synchronous SQLite commits would take far longer than this.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(q.flush());
        let events = store.audit_recent(10_000).unwrap();
        let kept = events.iter().filter(|e| e.action == "mcp.call").count() as u64;
        let dropped: u64 = events
            .iter()
            .filter(|e| e.action == "audit.overflow")
            .map(|e| {
                e.detail
                    .strip_prefix("dropped=")
                    .and_then(|d| d.split(' ').next())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(kept + dropped, 5000, "every event is written or counted");
        assert!(dropped > 0);
    }
}
