//! Client sessions of the revisions that have them (2025-06-18, 2025-11-25): created by
//! `initialize`, named by `Mcp-Session-Id`, bound to the token and endpoint that created them,
//! forgotten after a time unused. One token cannot take every slot: past
//! [`SESSIONS_PER_TOKEN`], its least recently used session is ended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Caller;
use crate::mcp::refusal::Refusal;

/// Sessions one token may hold; past it, its least recently used session is ended.
const SESSIONS_PER_TOKEN: usize = 64;

#[derive(Debug)]
struct ClientSession {
    endpoint: String,
    token_id: String,
    revision: &'static str,
    last_used: Instant,
}

#[derive(Debug)]
pub(super) struct ClientSessions {
    max: usize,
    idle: Duration,
    table: Mutex<HashMap<String, ClientSession>>,
}

impl ClientSessions {
    pub(super) fn new(max: usize, idle: Duration) -> Self {
        Self {
            max,
            idle,
            table: Mutex::default(),
        }
    }

    /// Checks that `id` is a live session of `caller` (and of `version`, if the request names
    /// one), and marks it used.
    pub(super) fn touch(
        &self,
        caller: &Caller,
        id: Option<&str>,
        version: Option<&str>,
    ) -> Result<(), Refusal> {
        let id = id.ok_or(Refusal::MissingSession)?;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get_mut(id) {
            Some(s)
                if s.token_id == caller.token_id
                    && s.endpoint == caller.endpoint
                    && s.last_used.elapsed() < self.idle =>
            {
                if version.is_some_and(|v| v != s.revision) {
                    return Err(Refusal::VersionDiffersFromSession);
                }
                s.last_used = Instant::now();
                Ok(())
            }
            _ => Err(Refusal::UnknownSession),
        }
    }

    /// A new session of `caller` at `revision`; its id (128 random bits, hex).
    pub(super) fn create(
        &self,
        caller: &Caller,
        revision: &'static str,
    ) -> Result<String, Refusal> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.idle;
        if table.len() >= self.max {
            table.retain(|_, s| s.last_used.elapsed() < idle);
        }
        let oldest_of_caller = table
            .iter()
            .filter(|(_, s)| s.token_id == caller.token_id)
            .fold((0, None), |(n, oldest), (k, s)| match oldest {
                Some((_, t)) if t <= s.last_used => (n + 1, oldest),
                _ => (n + 1, Some((k.clone(), s.last_used))),
            });
        if let (n, Some((oldest, _))) = oldest_of_caller
            && n >= SESSIONS_PER_TOKEN
        {
            table.remove(&oldest);
        }
        if table.len() >= self.max {
            return Err(Refusal::TooManySessions);
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| Refusal::NoRandomness)?;
        let id = hex::encode(raw);
        table.insert(
            id.clone(),
            ClientSession {
                endpoint: caller.endpoint.clone(),
                token_id: caller.token_id.clone(),
                revision,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Ends session `id` if it is `caller`'s.
    pub(super) fn end(&self, caller: &Caller, id: &str) -> Result<(), Refusal> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(id) {
            Some(s) if s.token_id == caller.token_id => {
                table.remove(id);
                Ok(())
            }
            _ => Err(Refusal::NoSuchSession),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(token: &str) -> Caller {
        Caller {
            endpoint: "e".into(),
            token_id: token.into(),
        }
    }

    const REV: &str = "2025-11-25";

    #[test]
    fn a_created_session_is_live_for_its_token_only() {
        let s = ClientSessions::new(10, Duration::from_secs(60));
        let id = s.create(&caller("a"), REV).unwrap();
        assert_eq!(s.touch(&caller("a"), Some(&id), None), Ok(()));
        assert_eq!(
            s.touch(&caller("b"), Some(&id), None),
            Err(Refusal::UnknownSession)
        );
    }

    #[test]
    fn a_request_without_a_session_id_is_refused() {
        let s = ClientSessions::new(10, Duration::from_secs(60));
        assert_eq!(
            s.touch(&caller("a"), None, None),
            Err(Refusal::MissingSession)
        );
    }

    #[test]
    fn a_request_naming_another_revision_than_its_session_is_refused() {
        let s = ClientSessions::new(10, Duration::from_secs(60));
        let id = s.create(&caller("a"), REV).unwrap();
        assert_eq!(
            s.touch(&caller("a"), Some(&id), Some("2025-06-18")),
            Err(Refusal::VersionDiffersFromSession)
        );
    }

    #[test]
    fn a_session_unused_past_the_idle_time_is_unknown() {
        let s = ClientSessions::new(10, Duration::ZERO);
        let id = s.create(&caller("a"), REV).unwrap();
        assert_eq!(
            s.touch(&caller("a"), Some(&id), None),
            Err(Refusal::UnknownSession)
        );
    }

    #[test]
    fn one_token_past_its_share_loses_its_least_recently_used_session() {
        let s = ClientSessions::new(1000, Duration::from_secs(60));
        let first = s.create(&caller("a"), REV).unwrap();
        let second = s.create(&caller("a"), REV).unwrap();
        for _ in 2..SESSIONS_PER_TOKEN {
            s.create(&caller("a"), REV).unwrap();
        }
        s.touch(&caller("a"), Some(&first), None).unwrap();
        s.create(&caller("a"), REV).unwrap();
        assert_eq!(s.touch(&caller("a"), Some(&first), None), Ok(()));
        assert_eq!(
            s.touch(&caller("a"), Some(&second), None),
            Err(Refusal::UnknownSession)
        );
    }

    #[test]
    fn a_full_table_refuses_new_sessions() {
        let s = ClientSessions::new(1, Duration::from_secs(60));
        s.create(&caller("a"), REV).unwrap();
        assert_eq!(s.create(&caller("b"), REV), Err(Refusal::TooManySessions));
    }

    #[test]
    fn only_the_owner_ends_a_session() {
        let s = ClientSessions::new(10, Duration::from_secs(60));
        let id = s.create(&caller("a"), REV).unwrap();
        assert_eq!(s.end(&caller("b"), &id), Err(Refusal::NoSuchSession));
        assert_eq!(s.end(&caller("a"), &id), Ok(()));
        assert_eq!(s.end(&caller("a"), &id), Err(Refusal::NoSuchSession));
    }
}
