//! The nftables table that confines sandbox links (DESIGN 3.5).
//!
//! One table, `inet <instance>`, whose rules never change after start-up: per-sandbox facts are
//! elements of a set (anti-spoof: link → its sandbox address) and a verdict map (link, host
//! address, protocol, port → accept), so a packet costs one interface-prefix compare and two
//! hash lookups whatever the number of sandboxes. The protocol is part of the key, so allowing
//! UDP to a port never allows TCP to it (or the reverse). Everything else from a sandbox link
//! is dropped, and nothing is forwarded to or from one.
//!
//! Per sandbox the map holds TCP to the proxy port, and in transparent mode also TCP 443,
//! UDP 53 and TCP 53 — all on the link's own host address.
//!
//! The `nft` binary applies the changes (as netavark does): its script input is atomic, and all
//! values put in a script are typed (`Ipv4Addr`, `u16`, [`Proto`]) or checked link names.

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
    /// Also TCP 443, UDP 53 and TCP 53 (see `api::SandboxSpec::transparent`).
    pub transparent: bool,
}

/// A transport protocol in the verdict map's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl LinkRule {
    /// Exactly what the sandbox may reach on its link's host address, without duplicates.
    pub fn allowed(&self) -> Vec<(Proto, u16)> {
        use privhelper_api::{DNS_PORT, TLS_PORT};
        let mut out = vec![(Proto::Tcp, self.proxy_port)];
        if self.transparent {
            out.extend([
                (Proto::Tcp, TLS_PORT),
                (Proto::Udp, DNS_PORT),
                (Proto::Tcp, DNS_PORT),
            ]);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
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
    # What a sandbox may reach, on its link's host address: its proxy port over TCP, and in
    # transparent mode TCP 443 and DNS (UDP and TCP 53). The protocol is part of the key.
    map proxy_ok {{ type ifname . ipv4_addr . inet_proto . inet_service : verdict; }}
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
        iifname . ip daddr . meta l4proto . th dport vmap @proxy_ok
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
        let allowed: Vec<String> = r
            .allowed()
            .into_iter()
            .map(|(proto, port)| {
                format!("\"{l}\" . {} . {} . {port}{verdict}", r.host, proto.nft())
            })
            .collect();
        Ok(format!(
            "{verb} element inet {t} src_ok {{ \"{l}\" . {} }}\n\
             {verb} element inet {t} proxy_ok {{ {} }}\n",
            r.sandbox,
            allowed.join(", ")
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
            transparent: false,
        };
        let add = fw.elements("add", &rule).unwrap();
        assert!(add.contains("\"gm0123abcd\" . 10.231.0.2"), "{add}");
        assert!(add.contains(". 10.231.0.1 . tcp . 3128 : accept"), "{add}");
        for bad in ["eth0", "gm\"; flush ruleset", "gm0123456789abcdef"] {
            rule.link = bad.into();
            assert!(fw.elements("add", &rule).is_err(), "{bad}");
        }
    }

    #[test]
    fn transparent_mode_adds_exactly_tls_and_dns() {
        let fw = Firewall::new("/usr/sbin/nft".into(), "gigmcp", "gm");
        let mut rule = LinkRule {
            link: "gm0123abcd".into(),
            host: Ipv4Addr::new(10, 231, 0, 1),
            sandbox: Ipv4Addr::new(10, 231, 0, 2),
            proxy_port: 3128,
            transparent: false,
        };
        assert_eq!(rule.allowed(), [(Proto::Tcp, 3128)]);
        rule.transparent = true;
        assert_eq!(
            rule.allowed(),
            [
                (Proto::Tcp, 53),
                (Proto::Tcp, 443),
                (Proto::Tcp, 3128),
                (Proto::Udp, 53)
            ]
        );
        let add = fw.elements("add", &rule).unwrap();
        for want in [
            "\"gm0123abcd\" . 10.231.0.1 . tcp . 3128 : accept",
            "\"gm0123abcd\" . 10.231.0.1 . tcp . 443 : accept",
            "\"gm0123abcd\" . 10.231.0.1 . udp . 53 : accept",
            "\"gm0123abcd\" . 10.231.0.1 . tcp . 53 : accept",
        ] {
            assert!(add.contains(want), "{want} missing from {add}");
        }
        assert_eq!(add.matches(" : accept").count(), 4, "{add}");
        let delete = fw.elements("delete", &rule).unwrap();
        assert!(!delete.contains("accept"), "{delete}");
        assert_eq!(delete.matches("\"gm0123abcd\" . 10.231.0.1 .").count(), 4);
        // A proxy port equal to a transparent one is listed once (a second `delete` of the same
        // element would fail the whole script).
        rule.proxy_port = 443;
        assert_eq!(rule.allowed().len(), 3);
    }
}
