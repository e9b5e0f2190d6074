//! How clients see the names of an endpoint's servers' tools, prompts and resources:
//! `<server>__<tool>` and `<server>+<uri>`. Unambiguous: server names never contain `__` nor
//! end in `_` ([`valid_server_name`], checked at install), so the first `__` of a shown name is
//! its separator and [`split`] inverts [`namespaced`] for every tool name; a listing shows each
//! name once ([`Shown`]).

use crate::manifest::valid_server_name;

/// Separator between server and tool (and prompt) names in what clients see.
pub const SEP: &str = "__";
/// Resource URIs are shown as `<server>+<uri>` (a scheme prefix, so templates still expand).
pub const URI_SEP: char = '+';

/// The name clients see for `tool` (or a prompt) of `server`.
pub fn namespaced(server: &str, tool: &str) -> String {
    format!("{server}{SEP}{tool}")
}

/// The server and its own name behind a shown name: split at the first `__`, which for a valid
/// server name is the separator [`namespaced`] put there.
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEP)
        .filter(|(server, _)| valid_server_name(server))
}

/// How a passed-through name is shown: `server__name` for prompts, `server+uri` for resources.
pub(super) fn shown(server: &str, field: &str, value: &str) -> String {
    if field == "name" {
        namespaced(server, value)
    } else {
        format!("{server}{URI_SEP}{value}")
    }
}

/// Names shown so far in one listing, and what had to be hidden.
#[derive(Debug, Default)]
pub(super) struct Shown {
    names: std::collections::HashSet<String>,
    pub(super) hidden: Vec<String>,
}

impl Shown {
    /// Whether `server` may be offered at all: not if its name could be read as another's.
    pub(super) fn server(&mut self, server: &str) -> bool {
        let ok = valid_server_name(server);
        if !ok {
            self.hidden
                .push(format!("server {server}: name ends in _ or contains __"));
        }
        ok
    }

    /// Whether `name` is new in this listing; a second item under it is hidden.
    pub(super) fn first(&mut self, name: &str) -> bool {
        let new = self.names.insert(name.to_owned());
        if !new {
            self.hidden.push(format!("{name}: listed twice"));
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Random bytes, drawn once per test.
    struct Random(std::vec::IntoIter<u8>);

    impl Random {
        fn new() -> Self {
            let mut b = vec![0u8; 1 << 20];
            getrandom::fill(&mut b).expect("random");
            Self(b.into_iter())
        }

        fn byte(&mut self) -> u8 {
            self.0.next().expect("enough random bytes")
        }

        /// A string over `alphabet`, 1 to `max` long.
        fn word(&mut self, alphabet: &[u8], max: usize) -> String {
            let len = 1 + usize::from(self.byte()) % max;
            (0..len)
                .map(|_| char::from(alphabet[usize::from(self.byte()) % alphabet.len()]))
                .collect()
        }

        /// A server name the rule lets through, from candidates full of underscores (so that
        /// loosening the rule lets `x_` or `x__y` through, and the properties below fail).
        pub(super) fn server(&mut self) -> String {
            loop {
                let name = self.word(b"ab0", 1) + &self.word(b"___ab-", 6);
                if valid_server_name(&name) {
                    return name;
                }
            }
        }
    }

    /// Underscores are most of the alphabet: `_x`, `x_`, `a__b`, `___` come up all the time.
    const HOSTILE: &[u8] = b"_____ab-";

    #[test]
    fn every_shown_name_splits_back_into_its_server_and_tool() {
        let mut r = Random::new();
        for _ in 0..20_000 {
            let server = r.server();
            let tool = r.word(HOSTILE, 8);
            let shown = namespaced(&server, &tool);
            assert_eq!(
                split(&shown),
                Some((server.as_str(), tool.as_str())),
                "{shown}"
            );
        }
    }

    #[test]
    fn no_two_servers_show_a_tool_under_one_name() {
        // Split is the inverse of namespaced, so a collision would split two ways: check it
        // directly on pairs anyway, as an attacker choosing two server names would.
        let mut r = Random::new();
        let mut seen: HashMap<String, (String, String)> = HashMap::new();
        for _ in 0..20_000 {
            let server = r.server();
            let tool = r.word(HOSTILE, 4);
            let shown = namespaced(&server, &tool);
            let owner = seen
                .entry(shown.clone())
                .or_insert_with(|| (server.clone(), tool.clone()));
            assert_eq!(owner, &(server, tool), "{shown} shown for two tools");
        }
    }

    #[test]
    fn the_server_name_rule_is_what_makes_names_unambiguous() {
        // Without it: server `x_` with tool `y` and server `x` with tool `_y` both show `x___y`.
        assert_eq!(namespaced("x_", "y"), namespaced("x", "_y"));
        assert!(!valid_server_name("x_") && !valid_server_name("x__y"));
        assert_eq!(split("x___y"), Some(("x", "_y")));
        assert_eq!(split("x__y__z"), Some(("x", "y__z")));
    }
}
