//! The audit trail (DESIGN 3.9): every admin change, secret use and security decision is an
//! entry in the store's `audit_events` table and a structured log line with target `audit`
//! (which journald keeps as fields). Entries name secrets, never carry their values.

use std::sync::Arc;

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
