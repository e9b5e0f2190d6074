//! The install step: the package manager run inside a gigmcp sandbox, and what it left read
//! back as untrusted input.
//!
//! Install scripts (npm's `preinstall`/`postinstall`, a setup.py) are code nobody here has
//! read, so they run as any server does: the builder image read-only, uid 65534, the sandbox's
//! own network namespace whose one route is the egress proxy, and a manifest whose egress is
//! exactly the package registry (`registry.npmjs.org:443`; `pypi.org:443` and
//! `files.pythonhosted.org:443`; or the host of `--registry`). The package manager trusts the
//! gateway's CA (the helper binds it over the image's bundle; `NODE_EXTRA_CA_CERTS`, `PIP_CERT`
//! and the launcher's CA variables point at it). The only writable place that outlives the
//! sandbox is its data dir: the package lands in `/data/app` (its cache in `/data/cache`, its
//! `HOME` in `/data/home`, both discarded).
//!
//! npm and pip caches are not shared between builds: a cache mounted read-write into one
//! build's sandbox could be poisoned by that build's install scripts for the next one. Each
//! build downloads afresh from the registry (a local mirror in CI).
//!
//! Reading the output: the data dir belongs to the sandbox's uid once the helper handed it
//! over. The install command's last step makes `/data/app` readable by everyone (`chmod -R
//! go+rX`), which is what lets the builder read it when it runs as the `gigmcp` user; as root
//! (CI) it reads it regardless. An install script that undoes that only fails its own build.
//! The tree is then walked by [`Tree`] beneath the data dir's fd, never following a link.
//!
//! The sandbox itself is reached through [`SandboxRunner`], which `crate::sandbox` implements
//! on the real launcher: this module knows what to run, not how a sandbox is made.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use super::spec::{Ecosystem, Spec};
use crate::manifest::Manifest;

/// Printed by the install command once the package manager succeeded.
pub const DONE: &str = "gigmcp-build: installed";

/// What the install sandbox is.
#[derive(Debug, Clone)]
pub struct InstallSandbox {
    /// The sandbox's server name (in the helper's logs and the audit).
    pub name: String,
    /// The builder root, relative to the helper's `images_dir`.
    pub rootfs: String,
    /// The data dir, a name in the helper's `data_root`.
    pub data_dir: String,
    pub manifest: Manifest,
    /// Registry addresses in reserved space the operator opted in to (`--registry-address`).
    pub reserved_opt_in: Vec<IpAddr>,
}

/// What the install command wrote, once it ended.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command ran past its deadline and the sandbox was destroyed.
    pub timed_out: bool,
}

/// Runs a command in a sandbox to its end.
pub trait SandboxRunner: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    fn run(
        &self,
        job: InstallSandbox,
        timeout: Duration,
    ) -> impl Future<Output = Result<Finished, Self::Error>> + Send;
}

/// Where packages come from: the index URL the package manager is given, and the hosts (with
/// port) the sandbox may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub url: String,
    pub hosts: Vec<(String, u16)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error(
        "--registry {0:?}: expected https://HOST[:PORT][/PATH] with a DNS name (no IP literal, \
         no user info, no query)"
    )]
    Url(String),
}

impl Registry {
    /// The public registry for `eco`, or the one `url` names.
    pub fn for_ecosystem(eco: Ecosystem, url: Option<&str>) -> Result<Self, RegistryError> {
        let Some(url) = url else {
            return Ok(match eco {
                Ecosystem::Npm => Self {
                    url: "https://registry.npmjs.org/".into(),
                    hosts: vec![("registry.npmjs.org".into(), 443)],
                },
                Ecosystem::Pypi => Self {
                    url: "https://pypi.org/simple/".into(),
                    hosts: vec![
                        ("pypi.org".into(), 443),
                        ("files.pythonhosted.org".into(), 443),
                    ],
                },
            });
        };
        let bad = || RegistryError::Url(url.chars().take(200).collect());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (authority, 443),
        };
        let host_ok = host.split('.').count() >= 2
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            && host.parse::<IpAddr>().is_err()
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if !host_ok || !path_ok || port == 0 {
            return Err(bad());
        }
        let mut url = url.to_owned();
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Self {
            url,
            hosts: vec![(host.to_owned(), port)],
        })
    }
}

/// The install command for `spec` (a shell script; every value in it was checked by
/// [`Spec::parse`] or [`Registry::for_ecosystem`] to hold no shell syntax).
pub fn command(spec: &Spec, registry: &Registry) -> Vec<String> {
    let url = &registry.url;
    let install = match spec {
        Spec::Npm { name, version } => npm_install(url, &format!("{name}@{version}")),
        Spec::Dir {
            ecosystem: Ecosystem::Npm,
            ..
        } => format!(
            // npm would link a directory instead of installing it: pack it first (its
            // `prepare`/`prepack` scripts run here, inside the sandbox too).
            "mkdir -p /data/pkg\ncd /data/src\nnpm pack --pack-destination /data/pkg \
             --registry={url} --loglevel=warn >/dev/null\ncd /data\n{}",
            npm_install(url, "/data/pkg/*.tgz")
        ),
        Spec::Pypi { name, version } => pip_install(url, &format!("{name}=={version}")),
        Spec::Dir {
            ecosystem: Ecosystem::Pypi,
            ..
        } => pip_install(url, "/data/src"),
    };
    let script = format!(
        "set -eu\nmkdir -p /data/home /data/cache /data/tmp /data/app\n{install}\n\
         chmod -R u+rwX,go+rX /data/app\necho '{DONE}'\n"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn npm_install(url: &str, what: &str) -> String {
    format!(
        "npm install --prefix /data/app --omit=dev --no-audit --no-fund --no-update-notifier \
         --loglevel=warn --registry={url} {what}"
    )
}

fn pip_install(url: &str, what: &str) -> String {
    format!(
        "python3 -m pip install --target /data/app --no-compile --no-cache-dir \
         --disable-pip-version-check --no-input --no-warn-script-location --index-url {url} \
         {what}"
    )
}

/// The install sandbox's manifest: the command, its environment, and egress to the registry
/// alone.
pub fn manifest(name: &str, spec: &Spec, registry: &Registry) -> serde_json::Value {
    let egress: Vec<serde_json::Value> = registry
        .hosts
        .iter()
        .map(|(host, port)| serde_json::json!({"host": host, "ports": [port]}))
        .collect();
    serde_json::json!({
        "name": name,
        "version": "0",
        "command": command(spec, registry),
        "env": {
            "PATH": crate::manifest::DEFAULT_PATH,
            "HOME": "/data/home",
            // The sandbox's /tmp is a small tmpfs; unpacked wheels and tarballs go here.
            "TMPDIR": "/data/tmp",
            "npm_config_cache": "/data/cache",
            "npm_config_update_notifier": "false",
            // libuv (Node.js) uses io_uring when it can, and the sandbox's seccomp policy
            // kills io_uring_*: libuv falls back to its thread pool when told to.
            "UV_USE_IO_URING": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        "egress": egress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_registry_is_one_https_dns_name_and_its_port() {
        let r = Registry::for_ecosystem(Ecosystem::Npm, Some("https://npm.example.org:8443/r"))
            .unwrap();
        assert_eq!(r.hosts, vec![("npm.example.org".into(), 8443)]);
        assert_eq!(r.url, "https://npm.example.org:8443/r/");
        for bad in [
            "http://npm.example.org/",
            "https://127.0.0.1/",
            "https://user@npm.example.org/",
            "https://npm.example.org/a b",
            "https://npm.example.org/?q=1",
            "https://localhost/",
            "https://npm.example.org:0/",
        ] {
            assert!(
                Registry::for_ecosystem(Ecosystem::Npm, Some(bad)).is_err(),
                "{bad}"
            );
        }
        let pypi = Registry::for_ecosystem(Ecosystem::Pypi, None).unwrap();
        assert_eq!(pypi.hosts.len(), 2);
    }
}
