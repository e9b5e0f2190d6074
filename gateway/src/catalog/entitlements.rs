//! What a manifest entitles a server to, as the admin reads it before `install` and `upgrade`:
//! egress hosts and ports, credentials with the hosts each may reach and how each is injected,
//! tools, limits, and the private ranges it asks for with why.
//!
//! An upgrade is shown as a diff of entitlements, one line each, and an upgrade that adds any
//! (a host, a port, a credential host, a tool, a range, a higher or removed limit) needs the
//! admin to quote the diff's digest: the digest binds the diff to the server, both versions
//! and the new image, so an approval cannot be replayed onto another upgrade.
//!
//! Everything the manifest says is escaped for the terminal (`crate::terminal`). This module
//! knows nothing of registries or the store.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::manifest::{Inject, Limits, Manifest};
use crate::terminal::escape;

/// What a manifest entitles a server to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlements {
    /// host → (ports, plain HTTP)
    egress: BTreeMap<String, (BTreeSet<u16>, bool)>,
    /// credential name → (hosts, how injected, description)
    credentials: BTreeMap<String, (BTreeSet<String>, String, String)>,
    /// `None`: every tool the server offers.
    tools: Option<BTreeSet<String>>,
    limits: Limits,
    private_ranges: BTreeMap<IpNet, String>,
    /// What the server runs and how: command, each env variable with its value, workdir,
    /// transparent mode; one line each, as the diff shows them.
    runs: BTreeSet<String>,
}

/// The prefixes of the diff's lines about what the server runs: any change of them (even a
/// removal: dropping an env variable changes what runs) needs the admin's approval.
const RUN_LINES: [&str; 4] = ["command ", "env ", "workdir ", "transparent "];

/// The entitlements one version has and the other has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Entitlements {
    pub fn of(manifest: &Manifest) -> Self {
        let egress = manifest
            .egress
            .iter()
            .map(|e| (e.host.clone(), (e.ports.iter().copied().collect(), e.http)))
            .collect();
        let credentials = manifest
            .credentials
            .iter()
            .map(|c| {
                let hosts = c.hosts.iter().cloned().collect();
                (
                    c.name.clone(),
                    (hosts, injection(&c.inject), c.description.clone()),
                )
            })
            .collect();
        let tools = (!manifest.tools.is_empty()).then(|| manifest.tools.iter().cloned().collect());
        let private_ranges = manifest
            .private_ranges
            .iter()
            .map(|r| (r.cidr, r.reason.clone()))
            .collect();
        Self {
            egress,
            credentials,
            tools,
            limits: manifest.limits.unwrap_or_default(),
            private_ranges,
            runs: runs(manifest),
        }
    }

    /// Multi-line text for the admin; every value from the manifest escaped.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        out.push("egress:".to_owned());
        if self.egress.is_empty() {
            out.push("  (none: the server reaches no network)".to_owned());
        }
        for (host, (ports, http)) in &self.egress {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            let http = if *http { " (plain HTTP allowed)" } else { "" };
            out.push(format!("  {}: {}{http}", escape(host), ports.join(", ")));
        }
        out.push("credentials:".to_owned());
        if self.credentials.is_empty() {
            out.push("  (none)".to_owned());
        }
        for (name, (hosts, inject, description)) in &self.credentials {
            let hosts: Vec<String> = hosts.iter().map(|h| escape(h)).collect();
            let about = if description.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(description))
            };
            out.push(format!("  {}{about}", escape(name)));
            out.push(format!(
                "    sent only to {}, as {}",
                hosts.join(", "),
                escape(inject)
            ));
        }
        match &self.tools {
            None => out.push("tools: all the server offers".to_owned()),
            Some(tools) => {
                let tools: Vec<String> = tools.iter().map(|t| escape(t)).collect();
                out.push(format!("tools: {}", tools.join(", ")));
            }
        }
        out.push(format!(
            "limits: {} (the lower of these and the gateway's)",
            limits(&self.limits)
        ));
        if !self.private_ranges.is_empty() {
            out.push("private ranges (each needs your --approve-range):".to_owned());
            for (cidr, reason) in &self.private_ranges {
                out.push(format!("  {cidr}: {}", escape(reason)));
            }
        }
        out.join("\n")
    }

    /// What `newer` adds to and removes from these entitlements.
    pub fn diff(&self, newer: &Entitlements) -> EntitlementDiff {
        let (old, new) = (self.lines(), newer.lines());
        let mut added: Vec<String> = new.difference(&old).cloned().collect();
        let mut removed: Vec<String> = old.difference(&new).cloned().collect();
        for (what, unit, before, after) in [
            (
                "memory",
                " MiB",
                self.limits.memory_mib,
                newer.limits.memory_mib,
            ),
            (
                "pids",
                "",
                self.limits.pids.map(u64::from),
                newer.limits.pids.map(u64::from),
            ),
            (
                "cpu",
                "%",
                self.limits.cpu_percent.map(u64::from),
                newer.limits.cpu_percent.map(u64::from),
            ),
        ] {
            // Absent is no bound of the manifest's own: above any number.
            let rank = |v: Option<u64>| v.unwrap_or(u64::MAX);
            let show =
                |v: Option<u64>| v.map_or("the gateway's".to_owned(), |n| format!("{n}{unit}"));
            let line = format!("limit {what} {} → {}", show(before), show(after));
            match rank(after).cmp(&rank(before)) {
                std::cmp::Ordering::Greater => added.push(line),
                std::cmp::Ordering::Less => removed.push(line),
                std::cmp::Ordering::Equal => {}
            }
        }
        EntitlementDiff { added, removed }
    }

    /// One line per entitlement (limits apart: they are compared by size).
    fn lines(&self) -> BTreeSet<String> {
        let mut lines = BTreeSet::new();
        for (host, (ports, http)) in &self.egress {
            for port in ports {
                let http = if *http { " (plain HTTP)" } else { "" };
                lines.insert(format!("egress {}:{port}{http}", escape(host)));
            }
        }
        for (name, (hosts, inject, _)) in &self.credentials {
            for host in hosts {
                lines.insert(format!(
                    "credential {} → {} as {}",
                    escape(name),
                    escape(host),
                    escape(inject)
                ));
            }
        }
        match &self.tools {
            None => {
                lines.insert("tools: all".to_owned());
            }
            Some(tools) => lines.extend(tools.iter().map(|t| format!("tool {}", escape(t)))),
        }
        lines.extend(
            self.private_ranges
                .keys()
                .map(|r| format!("private range {r}")),
        );
        lines.extend(self.runs.iter().cloned());
        lines
    }
}

impl EntitlementDiff {
    pub fn adds_any(&self) -> bool {
        !self.added.is_empty()
    }

    /// Whether an upgrade showing this diff needs `--approve DIGEST`: it adds an entitlement
    /// or changes what the server runs (command, env, workdir, transparent mode).
    pub fn needs_approval(&self) -> bool {
        let runs = |l: &String| RUN_LINES.iter().any(|p| l.starts_with(p));
        self.adds_any() || self.removed.iter().any(runs)
    }

    /// `+ egress api.example.com:443`, `- tool foo`: additions first.
    pub fn render(&self) -> String {
        let added = self.added.iter().map(|l| format!("+ {l}"));
        let removed = self.removed.iter().map(|l| format!("- {l}"));
        let lines: Vec<String> = added.chain(removed).collect();
        if lines.is_empty() {
            return "(no change in entitlements)".to_owned();
        }
        lines.join("\n")
    }

    /// The first 16 hex digits of the sha256 of this diff bound to the server, both versions,
    /// the new image digest and the new manifest (`Entry::manifest_json`): what `upgrade
    /// --approve DIGEST` must quote. The manifest's hash makes a re-signed entry with the same
    /// version and image but another manifest miss a digest given for the old one.
    // CONTRACT: takes the new manifest's JSON besides the contract's four parts.
    pub fn digest(
        &self,
        name: &str,
        from: &str,
        to: &str,
        image_digest: &str,
        manifest_json: &str,
    ) -> String {
        // A JSON array keeps the parts apart: no choice of names can make two different
        // inputs encode alike.
        let bound = serde_json::json!([
            "gigmcp.upgrade.v1",
            name,
            from,
            to,
            image_digest,
            hex::encode(Sha256::digest(manifest_json.as_bytes())),
            self.added,
            self.removed
        ]);
        let hash = Sha256::digest(bound.to_string().as_bytes());
        hex::encode(hash)[..16].to_owned()
    }
}

/// The diff's lines for what the server runs; every value escaped.
fn runs(manifest: &Manifest) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    lines.insert(match &manifest.command {
        None => "command: the image's".to_owned(),
        Some(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| format!("\"{}\"", escape(a))).collect();
            format!("command {}", argv.join(" "))
        }
    });
    lines.extend((manifest.env.iter()).map(|(k, v)| format!("env {}={}", escape(k), escape(v))));
    lines.insert(match &manifest.workdir {
        None => "workdir: the image's".to_owned(),
        Some(dir) => format!("workdir {}", escape(dir)),
    });
    lines.insert(format!("transparent {}", manifest.transparent_mode()));
    lines
}

fn injection(inject: &Inject) -> String {
    match inject {
        Inject::Header { name, format } => format!("header {name}: {format}"),
        Inject::Basic => "HTTP Basic password".to_owned(),
        Inject::Query { param } => format!("query parameter {param}"),
    }
}

fn limits(l: &Limits) -> String {
    let show =
        |v: Option<u64>, unit: &str| v.map_or("the gateway's".to_owned(), |n| format!("{n}{unit}"));
    format!(
        "memory {}, pids {}, cpu {}",
        show(l.memory_mib, " MiB"),
        show(l.pids.map(u64::from), ""),
        show(l.cpu_percent.map(u64::from), "%")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_label() -> String {
        let mut bytes = [0u8; 5];
        getrandom::fill(&mut bytes).unwrap();
        format!("h{}", hex::encode(bytes))
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "srv", "version": "1.0.0",
            "egress": [{"host": "api.example.com"}],
            "credentials": [{"name": "API_TOKEN", "hosts": ["api.example.com"],
                             "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
            "tools": ["search"],
            "limits": {"memory_mib": 256, "pids": 64},
            "private_ranges": [{"cidr": "10.1.0.0/16", "reason": "the wiki"}],
        })
    }

    fn push(array: &mut serde_json::Value, item: serde_json::Value) {
        array.as_array_mut().unwrap().push(item);
    }

    fn of(v: &serde_json::Value) -> Entitlements {
        Entitlements::of(&Manifest::from_json(&v.to_string()).unwrap())
    }

    fn diff(change: impl FnOnce(&mut serde_json::Value)) -> EntitlementDiff {
        let old = base();
        let mut new = base();
        change(&mut new);
        of(&old).diff(&of(&new))
    }

    #[test]
    fn adding_a_credential_host_adds_an_entitlement() {
        let host = format!("{}.example.com", random_label());
        let d = diff(|m| {
            push(&mut m["egress"], serde_json::json!({"host": host}));
            push(&mut m["credentials"][0]["hosts"], host.clone().into());
        });
        assert!(d.adds_any());
        assert!(
            d.added
                .iter()
                .any(|l| l.starts_with("credential API_TOKEN → ") && l.contains(&host)),
            "{d:?}"
        );
    }

    #[test]
    fn adding_an_egress_port_adds_an_entitlement() {
        let d = diff(|m| m["egress"][0]["ports"] = serde_json::json!([443, 8443]));
        assert_eq!(d.added, ["egress api.example.com:8443"]);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn adding_a_tool_or_dropping_the_tool_list_adds_an_entitlement() {
        let tool = random_label();
        let d = diff(|m| push(&mut m["tools"], tool.clone().into()));
        assert_eq!(d.added, [format!("tool {tool}")]);
        assert!(diff(|m| m["tools"] = serde_json::json!([])).adds_any());
    }

    #[test]
    fn adding_a_private_range_adds_an_entitlement() {
        let range = serde_json::json!({"cidr": "192.168.7.0/24", "reason": "NAS"});
        let d = diff(|m| push(&mut m["private_ranges"], range));
        assert_eq!(d.added, ["private range 192.168.7.0/24"]);
    }

    #[test]
    fn raising_or_removing_a_limit_adds_an_entitlement() {
        let d = diff(|m| m["limits"]["memory_mib"] = 512.into());
        assert_eq!(d.added, ["limit memory 256 MiB → 512 MiB"]);
        let d = diff(|m| m["limits"] = serde_json::json!({"memory_mib": 256}));
        assert_eq!(d.added, ["limit pids 64 → the gateway's"]);
    }

    #[test]
    fn removing_or_lowering_only_adds_nothing() {
        let d = diff(|m| {
            m["egress"][0]["ports"] = serde_json::json!([443]);
            m["credentials"] = serde_json::json!([]);
            m["private_ranges"] = serde_json::json!([]);
            m["limits"] = serde_json::json!({"memory_mib": 128, "pids": 8, "cpu_percent": 50});
        });
        assert!(!d.adds_any(), "{d:?}");
        assert_eq!(d.removed.len(), 5, "{d:?}");
        assert!(!d.needs_approval(), "{d:?}");
        assert!(
            d.render().lines().all(|l| l.starts_with("- ")),
            "{}",
            d.render()
        );
        let unchanged = diff(|_| {});
        assert!(!unchanged.adds_any());
        assert!(!unchanged.needs_approval());
        assert_eq!(unchanged.render(), "(no change in entitlements)");
    }

    #[test]
    fn changing_how_a_credential_is_injected_adds_an_entitlement() {
        let d = diff(|m| {
            m["credentials"][0]["inject"] = serde_json::json!({"type": "query", "param": "key"})
        });
        assert!(d.adds_any());
        assert_eq!(d.removed.len(), 1);
    }

    #[test]
    fn the_digest_changes_with_each_bound_input() {
        let d = diff(|m| push(&mut m["tools"], "other".into()));
        let img = format!("sha256:{}", "a".repeat(64));
        let digest = d.digest("srv", "1.0.0", "1.1.0", &img, "{}");
        assert_eq!(digest.len(), 16);
        assert_eq!(digest, d.digest("srv", "1.0.0", "1.1.0", &img, "{}"));
        let other_img = format!("sha256:{}", "b".repeat(64));
        let others = [
            d.digest("srv2", "1.0.0", "1.1.0", &img, "{}"),
            d.digest("srv", "1.0.1", "1.1.0", &img, "{}"),
            d.digest("srv", "1.0.0", "1.1.1", &img, "{}"),
            d.digest("srv", "1.0.0", "1.1.0", &other_img, "{}"),
            diff(|m| push(&mut m["tools"], "another".into()))
                .digest("srv", "1.0.0", "1.1.0", &img, "{}"),
            // A re-signed entry: same version and image, another manifest.
            d.digest("srv", "1.0.0", "1.1.0", &img, r#"{"command":["/bin/x"]}"#),
        ];
        for o in &others {
            assert_ne!(o, &digest);
        }
        // Moving text between parts is a different input too.
        assert_ne!(
            d.digest("a", "b1", "c", &img, "{}"),
            d.digest("ab", "1", "c", &img, "{}")
        );
    }

    /// What the server runs (`command`, `env`, `workdir`) and `transparent` are in the diff
    /// and need `--approve`: otherwise an upgrade changing only them would pass with `--yes`
    /// as "(no change in entitlements)" (say `NODE_OPTIONS=--require …`).
    #[test]
    fn a_change_of_command_env_workdir_or_transparent_shows_in_the_diff_and_needs_approval() {
        for (field, value) in [
            (
                "command",
                serde_json::json!(["/bin/sh", "-c", "curl https://api.example.com/x | sh"]),
            ),
            (
                "env",
                serde_json::json!({"NODE_OPTIONS": "--require /tmp/x.js"}),
            ),
            ("workdir", serde_json::json!("/tmp")),
            ("transparent", serde_json::json!(false)),
        ] {
            let d = diff(|m| m[field] = value.clone());
            assert_ne!(
                d.render(),
                "(no change in entitlements)",
                "changing {field} is invisible to the admin and to the approval digest"
            );
            assert!(
                d.needs_approval(),
                "changing {field} passes with --yes: {d:?}"
            );
        }
    }

    #[test]
    fn render_names_hosts_ports_credentials_tools_limits_and_ranges_escaped() {
        let mut m = base();
        m["credentials"][0]["description"] = "evil\u{1b}[2Jtext".into();
        let text = of(&m).render();
        for want in [
            "api.example.com: 443",
            "API_TOKEN",
            "sent only to api.example.com, as header Authorization: Bearer {}",
            "tools: search",
            "memory 256 MiB, pids 64, cpu the gateway's",
            "10.1.0.0/16: the wiki",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
