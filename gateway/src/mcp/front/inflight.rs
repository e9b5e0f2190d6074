//! Tool calls in flight, by (token id, the client's request id): where to relay a client's
//! `notifications/cancelled`. A call is reserved when accepted, marked sent once the server has
//! it under the gateway's id, and forgotten when answered; a cancellation that arrives before
//! the call is sent is remembered and carried out as soon as it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::Caller;
use crate::mcp::router::CallHooks;
use crate::mcp::stdio::ServerSession;

type Key = (String, String);

/// A client's tool call, for relaying its cancellation.
enum Flight {
    /// Accepted, not sent to the server yet.
    Reserved,
    /// Sent: the server's session and the gateway's id for it.
    Sent(Arc<ServerSession>, u64),
    /// The client cancelled it before it was sent: cancel as soon as it is.
    CancelledEarly,
}

#[derive(Default)]
pub(super) struct Inflight {
    flights: Arc<Mutex<HashMap<Key, Flight>>>,
}

fn key(caller: &Caller, id: &Value) -> Key {
    (caller.token_id.clone(), id.to_string())
}

impl Inflight {
    /// Hooks for a call: progress relayed to `progress`, and the call registered for
    /// cancellation by this caller. `None` if this caller already has a call with this id in
    /// flight (ids must be unique among a client's requests in flight, or a cancellation could
    /// reach the wrong one).
    pub(super) fn reserve(
        &self,
        caller: &Caller,
        id: &Value,
        progress: Option<tokio::sync::mpsc::Sender<Value>>,
    ) -> Option<CallHooks> {
        let key = key(caller, id);
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.contains_key(&key) {
                return None;
            }
            flights.insert(key.clone(), Flight::Reserved);
        }
        let flights = self.flights.clone();
        Some(CallHooks {
            progress,
            started: Some(Box::new(move |session, gid| {
                let mut flights = flights.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(flights.get(&key), Some(Flight::CancelledEarly)) {
                    flights.remove(&key);
                    tokio::spawn(async move { session.cancel(gid, None).await });
                } else {
                    flights.insert(key, Flight::Sent(session, gid));
                }
            })),
        })
    }

    /// The call is answered.
    pub(super) fn forget(&self, caller: &Caller, id: &Value) {
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(caller, id));
    }

    /// The client cancels its call `id`: the server's session and the gateway's id to cancel
    /// now, or `None` (not sent yet: it will be cancelled when it is; or not in flight).
    pub(super) fn cancel(&self, caller: &Caller, id: &Value) -> Option<(Arc<ServerSession>, u64)> {
        let key = key(caller, id);
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        match flights.remove(&key) {
            Some(Flight::Sent(session, gid)) => Some((session, gid)),
            Some(Flight::Reserved | Flight::CancelledEarly) => {
                flights.insert(key, Flight::CancelledEarly);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(token: &str) -> Caller {
        Caller {
            endpoint: "e".into(),
            token_id: token.into(),
        }
    }

    #[test]
    fn a_second_call_with_the_same_id_from_the_same_token_is_refused() {
        let f = Inflight::default();
        assert!(f.reserve(&caller("a"), &json!(1), None).is_some());
        assert!(f.reserve(&caller("a"), &json!(1), None).is_none());
    }

    #[test]
    fn the_same_id_from_another_token_is_another_call() {
        let f = Inflight::default();
        assert!(f.reserve(&caller("a"), &json!(1), None).is_some());
        assert!(f.reserve(&caller("b"), &json!(1), None).is_some());
    }

    #[test]
    fn an_answered_call_frees_its_id() {
        let f = Inflight::default();
        f.reserve(&caller("a"), &json!("x"), None).unwrap();
        f.forget(&caller("a"), &json!("x"));
        assert!(f.reserve(&caller("a"), &json!("x"), None).is_some());
    }

    #[test]
    fn a_cancellation_before_the_call_is_sent_is_kept_for_when_it_is() {
        let f = Inflight::default();
        f.reserve(&caller("a"), &json!(1), None).unwrap();
        assert!(f.cancel(&caller("a"), &json!(1)).is_none());
        assert!(matches!(
            f.flights.lock().unwrap().get(&key(&caller("a"), &json!(1))),
            Some(Flight::CancelledEarly)
        ));
    }

    #[test]
    fn a_cancellation_of_a_call_not_in_flight_is_ignored() {
        let f = Inflight::default();
        assert!(f.cancel(&caller("a"), &json!(1)).is_none());
        assert!(f.flights.lock().unwrap().is_empty());
    }
}
