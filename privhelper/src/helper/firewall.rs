//! The nftables table that confines sandbox links (DESIGN 3.5).
//!
//! One table, `inet <instance>`, whose rules never change after start-up: per-sandbox facts are
//! elements of a set (anti-spoof: link → its sandbox address) and a verdict map (link, host
//! address, port → accept), so a packet costs one interface-prefix compare and two hash lookups
//! whatever the number of sandboxes. Everything else from a sandbox link is dropped, and nothing
//! is forwarded to or from one.
//!
//! The `nft` binary applies the changes (as netavark does): its script input is atomic, and all
//! values put in a script are typed (`Ipv4Addr`, `u16`) or checked link names.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
#[error("nft failed: {0}")]
pub struct FirewallError(String);

#[derive(Debug, Clone)]
pub struct Firewall {
    nft: PathBuf,
    table: String,
    link_prefix: String,
}

/// The firewall facts of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRule {
    pub link: String,
    pub host: Ipv4Addr,
    pub sandbox: Ipv4Addr,
    pub proxy_port: u16,
}

impl Firewall {
    pub fn new(nft: PathBuf, table: &str, link_prefix: &str) -> Self {
        Self {
            nft,
            table: table.to_owned(),
            link_prefix: link_prefix.to_owned(),
        }
    }

    /// (Re)creates the table from scratch, which also drops every element a previous run left.
    pub fn install(&self) -> Result<(), FirewallError> {
        let (t, p) = (&self.table, &self.link_prefix);
        self.apply(&format!(
            r#"table inet {t}
delete table inet {t}
table inet {t} {{
    # Anti-spoof: a sandbox link may only carry its own sandbox address.
    set src_ok {{ type ifname . ipv4_addr; }}
    # The one thing a sandbox may reach: its proxy, on its link's host address.
    map proxy_ok {{ type ifname . ipv4_addr . inet_service : verdict; }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname "{p}*" jump from_sandbox
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{p}*" drop
        oifname "{p}*" drop
    }}
    chain from_sandbox {{
        meta nfproto ipv6 drop
        iifname . ip saddr != @src_ok drop
        meta l4proto tcp iifname . ip daddr . tcp dport vmap @proxy_ok
        drop
    }}
}}
"#
        ))
    }

    pub fn remove_table(&self) -> Result<(), FirewallError> {
        let t = &self.table;
        self.apply(&format!("table inet {t}\ndelete table inet {t}\n"))
    }

    pub fn allow(&self, rule: &LinkRule) -> Result<(), FirewallError> {
        self.apply(&self.elements("add", rule)?)
    }

    pub fn revoke(&self, rule: &LinkRule) -> Result<(), FirewallError> {
        self.apply(&self.elements("delete", rule)?)
    }

    fn elements(&self, verb: &str, r: &LinkRule) -> Result<String, FirewallError> {
        let valid = r.link.starts_with(&self.link_prefix)
            && r.link.len() <= 15
            && r.link.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(FirewallError(format!("refusing link name {:?}", r.link)));
        }
        let (t, l) = (&self.table, &r.link);
        let verdict = if verb == "add" { " : accept" } else { "" };
        Ok(format!(
            "{verb} element inet {t} src_ok {{ \"{l}\" . {} }}\n\
             {verb} element inet {t} proxy_ok {{ \"{l}\" . {} . {}{verdict} }}\n",
            r.sandbox, r.host, r.proxy_port
        ))
    }

    fn apply(&self, script: &str) -> Result<(), FirewallError> {
        let mut child = Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FirewallError(format!("cannot run {}: {e}", self.nft.display())))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|e| FirewallError(e.to_string()))?;
        let out = child
            .wait_with_output()
            .map_err(|e| FirewallError(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FirewallError(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_scripts_refuse_foreign_link_names() {
        let fw = Firewall::new("/usr/sbin/nft".into(), "gigmcp", "gm");
        let mut rule = LinkRule {
            link: "gm0123abcd".into(),
            host: Ipv4Addr::new(10, 231, 0, 1),
            sandbox: Ipv4Addr::new(10, 231, 0, 2),
            proxy_port: 3128,
        };
        let add = fw.elements("add", &rule).unwrap();
        assert!(add.contains("\"gm0123abcd\" . 10.231.0.2"), "{add}");
        assert!(add.contains(". 10.231.0.1 . 3128 : accept"), "{add}");
        for bad in ["eth0", "gm\"; flush ruleset", "gm0123456789abcdef"] {
            rule.link = bad.into();
            assert!(fw.elements("add", &rule).is_err(), "{bad}");
        }
    }
}
