//! `privhelper.toml`: the helper's configuration. It is root's, not the gateway's: every path a
//! sandbox can see and every identity it can run as is fixed here, never in a request.

use std::path::{Component, Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/gigmcp/privhelper.toml";

/// The lowest sandbox uid: above system and login users.
const MIN_UID_BASE: u32 = 100_000;
/// Every sandbox uid is below this (2^31).
const UID_END: u32 = 1 << 31;
/// 1000 CPUs' worth: a higher ceiling is a typo, not a machine.
const MAX_CPU_PERCENT: u32 = 100_000;

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
    /// Ports of the host's own services (1024 and up: lower ones are refused anyway), refused
    /// as a sandbox's proxy port: the helper binds the proxy port as root on the link's host
    /// address, and the sandbox may connect there.
    pub host_service_ports: Vec<u16>,
    pub ceilings: Ceilings,
}

/// [`Config::host_service_ports`]' default: gigmcpd's own MCP front (8750), and the usual
/// local services of a server that must never look like a sandbox's proxy: the Docker API
/// (2375, 2376), MySQL (3306), PostgreSQL (5432), Redis (6379), memcached (11211), MongoDB
/// (27017).
pub const DEFAULT_HOST_SERVICE_PORTS: [u16; 8] = [8750, 2375, 2376, 3306, 5432, 6379, 11211, 27017];

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

impl Ceilings {
    /// Ceilings some spec can meet: at least the smallest limits the helper accepts, and a
    /// private /tmp with a size (tmpfs takes a size of 0 as "no limit").
    fn check(&self) -> Result<(), (&'static str, String)> {
        use crate::helper::{MIN_MEMORY, MIN_PIDS};
        if self.memory_max_bytes < MIN_MEMORY {
            return Err((
                "ceilings.memory_max_bytes",
                format!("must be at least {MIN_MEMORY} (the smallest limit a sandbox may ask)"),
            ));
        }
        if self.pids_max < MIN_PIDS {
            return Err((
                "ceilings.pids_max",
                format!("must be at least {MIN_PIDS} (the smallest limit a sandbox may ask)"),
            ));
        }
        if !(1..=MAX_CPU_PERCENT).contains(&self.cpu_percent) {
            return Err((
                "ceilings.cpu_percent",
                format!("must be 1 to {MAX_CPU_PERCENT}"),
            ));
        }
        if self.tmp_bytes == 0 || self.tmp_bytes > self.memory_max_bytes {
            return Err((
                "ceilings.tmp_bytes",
                format!(
                    "must be 1 to memory_max_bytes ({}): /tmp counts against the memory limit, \
                     and tmpfs reads 0 as no limit",
                    self.memory_max_bytes
                ),
            ));
        }
        Ok(())
    }
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
            host_service_ports: DEFAULT_HOST_SERVICE_PORTS.to_vec(),
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
        // Again once a name is resolved: the caller's uid must be outside the sandbox range.
        config
            .caller_outside_sandbox_uids()
            .map_err(|(k, m)| invalid(k, m))?;
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
        self.check_pool()?;
        self.check_uids()?;
        self.caller_outside_sandbox_uids()?;
        self.check_paths()?;
        self.ceilings.check()
    }

    /// A pool the links can use: a network address, room for at least 64 /30s, and no range
    /// with a meaning of its own (a sandbox link in loopback, link-local, multicast or
    /// reserved space would not route as the firewall expects, or would shadow the host's).
    fn check_pool(&self) -> Result<(), (&'static str, String)> {
        let pool = self.pool;
        if pool != pool.trunc() || pool.prefix_len() > 24 {
            return Err(("pool", format!("{pool} must be a /24 or larger network")));
        }
        let special: [(&str, Ipv4Net); 5] = [
            ("this-network", "0.0.0.0/8".parse().expect("literal")),
            ("loopback", "127.0.0.0/8".parse().expect("literal")),
            ("link-local", "169.254.0.0/16".parse().expect("literal")),
            ("multicast", "224.0.0.0/4".parse().expect("literal")),
            ("reserved", "240.0.0.0/4".parse().expect("literal")),
        ];
        for (what, range) in special {
            if range.contains(&pool) || pool.contains(&range) {
                return Err(("pool", format!("{pool} overlaps the {what} range {range}")));
            }
        }
        Ok(())
    }

    /// Sandbox uids (and gids) that every sandbox can run as: above system and login users,
    /// and below 2^31. Run as a host uid at or above 2^31, bwrap fails with "setting up uid
    /// map: Invalid argument" (checked on this project's kernel, 6.18, with uids 2^31 + 52 and
    /// 3e9; 2^31 - 648 works), so such a range would be accepted at start and then fail in
    /// every sandbox.
    fn check_uids(&self) -> Result<(), (&'static str, String)> {
        // Never root, never a system or login user: uid 0 would be catastrophic and a shared uid
        // would let sandboxes signal each other or the user's processes.
        if self.uid_base < MIN_UID_BASE {
            return Err(("uid_base", format!("must be at least {MIN_UID_BASE}")));
        }
        if self.uid_base >= UID_END {
            return Err((
                "uid_base",
                format!("{} is not below 2^31 ({UID_END})", self.uid_base),
            ));
        }
        if self.uid_count == 0 {
            return Err(("uid_count", "must be at least 1".into()));
        }
        let end = u64::from(self.uid_base) + u64::from(self.uid_count);
        if end > u64::from(UID_END) {
            return Err((
                "uid_count",
                format!(
                    "uid_base {} + uid_count {} = {end} passes 2^31 ({UID_END}): the last \
                     sandboxes would get uids bwrap cannot map",
                    self.uid_base, self.uid_count
                ),
            ));
        }
        Ok(())
    }

    /// The gateway's uid must not be one a sandbox runs as: a sandbox could then signal,
    /// trace or write as the gateway.
    fn caller_outside_sandbox_uids(&self) -> Result<(), (&'static str, String)> {
        let Some(uid) = self.allowed_uid else {
            return Ok(()); // a name, resolved later (`load` checks again)
        };
        let range = u64::from(self.uid_base)..u64::from(self.uid_base) + u64::from(self.uid_count);
        if range.contains(&u64::from(uid)) {
            let key = if self.allowed_user.is_some() {
                "allowed_user"
            } else {
                "allowed_uid"
            };
            return Err((
                key,
                format!(
                    "uid {uid} is in the sandbox range {}..{}: sandboxes would run as the gateway",
                    range.start, range.end
                ),
            ));
        }
        Ok(())
    }

    /// Every path absolute and plain (no `.` or `..`), no root directory as a root of
    /// requests (a rootfs "beneath /" is the host), and `data_root` apart from the two
    /// gateway-written roots: a data dir beneath `images_dir` could be named as another
    /// server's rootfs, and the gateway could plant entries in a data root inside its own.
    fn check_paths(&self) -> Result<(), (&'static str, String)> {
        let roots = [
            ("images_dir", &self.images_dir),
            ("data_root", &self.data_root),
            ("ca_dir", &self.ca_dir),
        ];
        let tools = [
            ("bwrap", &self.bwrap),
            ("nft", &self.nft),
            ("sandbox_init", &self.sandbox_init),
        ];
        for (key, path) in roots.iter().chain(&tools) {
            if !path.is_absolute() {
                return Err((key, format!("{} is not absolute", path.display())));
            }
            if path
                .components()
                .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
            {
                return Err((key, format!("{} has a . or .. component", path.display())));
            }
        }
        for (key, path) in roots {
            if path.parent().is_none() {
                return Err((key, "must not be /".into()));
            }
        }
        let data = &self.data_root;
        for (key, path) in [("images_dir", &self.images_dir), ("ca_dir", &self.ca_dir)] {
            if data.starts_with(path) || path.starts_with(data) {
                return Err((
                    "data_root",
                    format!(
                        "{} and {key} {} must not contain one another",
                        data.display(),
                        path.display()
                    ),
                ));
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
    use crate::helper::{MIN_MEMORY, MIN_PIDS};

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

    fn random_u64() -> u64 {
        let mut b = [0u8; 8];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).unwrap();
        u64::from_le_bytes(b)
    }

    /// A random number in `range`.
    fn pick(range: std::ops::Range<u64>) -> u64 {
        range.start + random_u64() % (range.end - range.start)
    }

    /// Loads `extra` (with `allowed_uid = 1000` unless it names a caller); the key the
    /// refusal names.
    fn refused_key(extra: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privhelper.toml");
        let caller = if extra.contains("allowed_uid") {
            ""
        } else {
            "allowed_uid = 1000\n"
        };
        std::fs::write(&path, format!("{caller}{extra}")).unwrap();
        match Config::load(&path) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{extra:?} was not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_their_key() {
        let base = pick(u64::from(MIN_UID_BASE)..u64::from(UID_END) - 4096);
        let room = u64::from(UID_END) - base;
        let sandbox_uid = pick(base..base + 4096);
        let cases: Vec<(String, &str)> = vec![
            // bwrap cannot map uids at or above 2^31: every sandbox would fail.
            (
                format!("uid_base = {}", pick(u64::from(UID_END)..1 << 32)),
                "uid_base",
            ),
            (
                format!(
                    "uid_base = {base}\nuid_count = {}",
                    pick(room + 1..room + 1_000_000)
                ),
                "uid_count",
            ),
            (
                format!("uid_base = {}", pick(0..u64::from(MIN_UID_BASE))),
                "uid_base",
            ),
            ("uid_count = 0".into(), "uid_count"),
            // The gateway's own uid among the sandboxes'.
            (
                format!("allowed_uid = {sandbox_uid}\nuid_base = {base}\nuid_count = 4096"),
                "allowed_uid",
            ),
            (format!("pool = \"127.{}.0.0/16\"", pick(0..256)), "pool"),
            (format!("pool = \"169.254.{}.0/24\"", pick(0..256)), "pool"),
            (format!("pool = \"{}.0.0.0/8\"", pick(224..256)), "pool"),
            ("pool = \"10.231.0.0/25\"".into(), "pool"),
            (
                format!(
                    "images_dir = \"/srv/i{0}\"\ndata_root = \"/srv/i{0}/data\"",
                    pick(0..1 << 30)
                ),
                "data_root",
            ),
            ("images_dir = \"/\"".into(), "images_dir"),
            (
                format!("bwrap = \"/usr/bin/../tmp/b{}\"", pick(0..1000)),
                "bwrap",
            ),
            (format!("nft = \"sbin/nft{}\"", pick(0..1000)), "nft"),
            (
                format!("[ceilings]\nmemory_max_bytes = {}", pick(0..MIN_MEMORY)),
                "ceilings.memory_max_bytes",
            ),
            (
                format!("[ceilings]\npids_max = {}", pick(0..u64::from(MIN_PIDS))),
                "ceilings.pids_max",
            ),
            ("[ceilings]\ncpu_percent = 0".into(), "ceilings.cpu_percent"),
            ("[ceilings]\ntmp_bytes = 0".into(), "ceilings.tmp_bytes"),
            (
                format!(
                    "[ceilings]\nmemory_max_bytes = {MIN_MEMORY}\ntmp_bytes = {}",
                    pick(MIN_MEMORY + 1..1 << 40)
                ),
                "ceilings.tmp_bytes",
            ),
        ];
        for (extra, key) in &cases {
            assert_eq!(refused_key(extra), *key, "{extra}");
        }
    }

    #[test]
    fn the_widest_uid_range_below_2_pow_31_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privhelper.toml");
        let count = pick(1..1 << 20);
        let base = u64::from(UID_END) - count;
        std::fs::write(
            &path,
            format!("allowed_uid = 1000\nuid_base = {base}\nuid_count = {count}\n"),
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(u64::from(c.uid_base) + u64::from(c.uid_count), 1 << 31);
    }
}
