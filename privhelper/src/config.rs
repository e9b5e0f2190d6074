//! `privhelper.toml`: the helper's configuration. It is root's, not the gateway's: every path a
//! sandbox can see and every identity it can run as is fixed here, never in a request.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/gigmcp/privhelper.toml";

/// Every key is optional but one of `allowed_user`/`allowed_uid`; the defaults are
/// [`Config::default`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The only user allowed to call the helper (the gateway's), by name...
    pub allowed_user: Option<String>,
    /// ...or by uid. Exactly one of the two must be set.
    pub allowed_uid: Option<u32>,
    /// Names nftables table `inet <instance>`, netns `<instance>-<id>` and the cgroup dir.
    pub instance: String,
    /// Prefix of the host-side veth names (1-4 lowercase letters); the firewall matches on it.
    pub link_prefix: String,
    /// Where image root filesystems live; a rootfs must resolve inside it.
    pub images_dir: PathBuf,
    /// Where per-server data directories live.
    pub data_root: PathBuf,
    /// Where the gateway puts CA bundles for sandboxes.
    pub ca_dir: PathBuf,
    /// IPv4 range carved into one /30 per sandbox; must match the gateway's.
    pub pool: Ipv4Net,
    /// First host uid (and gid) for sandboxes; sandbox in slot N runs as `uid_base + N`.
    pub uid_base: u32,
    /// How many sandbox uids there are (and so how many sandboxes at once, at most).
    pub uid_count: u32,
    pub bwrap: PathBuf,
    pub nft: PathBuf,
    /// The sandbox's first program, bound read-only into every sandbox.
    pub sandbox_init: PathBuf,
    /// Start sandboxes even where landlock is unavailable (audited). Off by default.
    pub allow_degraded_landlock: bool,
    pub ceilings: Ceilings,
}

/// Upper bounds on what a spec may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    pub memory_max_bytes: u64,
    pub pids_max: u32,
    pub cpu_percent: u32,
    /// Size of each sandbox's private /tmp (tmpfs, counts against memory).
    pub tmp_bytes: u64,
    /// `RLIMIT_NOFILE` of every sandbox process, soft and hard, set while the child is still
    /// root: unprivileged, the server can lower it but never raise it again, so a storm of
    /// connections from one sandbox is bounded before it reaches the gateway's caps.
    pub nofile: u64,
}

impl Default for Ceilings {
    fn default() -> Self {
        Self {
            memory_max_bytes: 2 << 30,
            pids_max: 512,
            cpu_percent: 200,
            tmp_bytes: 256 << 20,
            nofile: 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allowed_user: None,
            allowed_uid: None,
            instance: "gigmcp".into(),
            link_prefix: "gm".into(),
            images_dir: "/var/lib/gigmcp/images".into(),
            data_root: "/var/lib/gigmcp-sandbox/data".into(),
            ca_dir: "/var/lib/gigmcp/ca".into(),
            pool: "10.231.0.0/16".parse().expect("literal"),
            // Far above login and system users and the usual subuid ranges (100000 + 65536 * n).
            uid_base: 0x7000_0000,
            uid_count: 4096,
            bwrap: "/usr/bin/bwrap".into(),
            nft: "/usr/sbin/nft".into(),
            sandbox_init: "/usr/libexec/gigmcp/gigmcp-sandbox-init".into(),
            allow_degraded_landlock: false,
            ceilings: Ceilings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let de = toml::Deserializer::parse(&text)
            .map_err(|e| invalid("(syntax)", e.message().to_owned()))?;
        let mut config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| invalid(&e.path().to_string(), e.into_inner().message().to_owned()))?;
        config.validate().map_err(|(k, m)| invalid(k, m))?;
        if let Some(name) = &config.allowed_user {
            let user = nix::unistd::User::from_name(name)
                .map_err(|e| invalid("allowed_user", e.to_string()))?
                .ok_or_else(|| invalid("allowed_user", format!("no user named {name}")))?;
            config.allowed_uid = Some(user.uid.as_raw());
        }
        Ok(config)
    }

    /// The caller uid the helper accepts (resolved from `allowed_user` at load).
    pub fn caller_uid(&self) -> u32 {
        self.allowed_uid
            .expect("validated: set or resolved at load")
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.allowed_user.is_some() == self.allowed_uid.is_some() {
            return Err((
                "allowed_user",
                "set exactly one of allowed_user and allowed_uid".into(),
            ));
        }
        let lower = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        if !(1..=16).contains(&self.instance.len()) || !lower(&self.instance) {
            return Err(("instance", "use 1-16 of a-z 0-9".into()));
        }
        if !(1..=4).contains(&self.link_prefix.len())
            || !self.link_prefix.chars().all(|c| c.is_ascii_lowercase())
        {
            return Err(("link_prefix", "use 1-4 of a-z".into()));
        }
        if self.pool != self.pool.trunc() || self.pool.prefix_len() > 24 {
            return Err((
                "pool",
                format!("{} must be a /24 or larger network", self.pool),
            ));
        }
        // Never root, never a system or login user: uid 0 would be catastrophic and a shared uid
        // would let sandboxes signal each other or the user's processes.
        if self.uid_base < 100_000 {
            return Err(("uid_base", "must be at least 100000".into()));
        }
        if self.uid_count == 0 || self.uid_base.checked_add(self.uid_count).is_none() {
            return Err((
                "uid_count",
                "must be at least 1 and fit above uid_base".into(),
            ));
        }
        for (key, path) in [
            ("images_dir", &self.images_dir),
            ("data_root", &self.data_root),
            ("ca_dir", &self.ca_dir),
            ("bwrap", &self.bwrap),
            ("nft", &self.nft),
            ("sandbox_init", &self.sandbox_init),
        ] {
            if !path.is_absolute() {
                return Err((key, format!("{} is not absolute", path.display())));
            }
        }
        Ok(())
    }

    /// How many sandboxes may exist at once: /30s in the pool, capped by the uid range.
    pub fn slots(&self) -> u32 {
        let blocks = 1u64 << (30 - u32::from(self.pool.prefix_len()));
        u32::try_from(blocks)
            .unwrap_or(u32::MAX)
            .min(self.uid_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_naming_only_the_caller_takes_every_other_value_from_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privhelper.toml");
        std::fs::write(&path, "allowed_uid = 1000\n[ceilings]\npids_max = 64\n").unwrap();
        let want = Config {
            allowed_uid: Some(1000),
            ceilings: Ceilings {
                pids_max: 64,
                ..Ceilings::default()
            },
            ..Config::default()
        };
        assert_eq!(Config::load(&path).unwrap(), want);
        std::fs::write(&path, "allowed_uid = 1000\nuid_bsae = 5\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("uid_bsae"), "{err}");
    }
}
