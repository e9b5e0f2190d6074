//! What a sandbox runs: the image's configuration combined with the server's manifest and the
//! gateway's own variables, as one pure function ([`plan`]) that `server add` checks and the
//! launcher sends (docs/SANDBOX.md, "What an image must contain").
//!
//! - The command is the manifest's `command` if it has one, else the image's `Entrypoint`
//!   followed by its `Cmd` (the OCI rule); neither is a refusal naming the server.
//! - The environment is the image's `Env`, then the manifest's `env` over it, then the
//!   gateway's over both (credential placeholders, proxy and CA variables): an image cannot
//!   aim a client at another proxy or CA, nor pre-set a credential's variable. Each override
//!   of the image's or the manifest's value by the gateway's is noted for the audit. `PATH`
//!   defaults to [`DEFAULT_PATH`] when neither sets it; it is what the layout check resolves
//!   the command with.
//! - The working directory is the manifest's `workdir`, else the image's `WorkingDir`, else
//!   the sandbox's default (its private `/tmp`).
//! - The image's `User` is ignored: the sandbox always runs as 65534 (noted when the image
//!   asks for someone else).

use super::oci::RunConfig;
use crate::manifest::{DEFAULT_PATH, Manifest, check_workdir};

/// Where the helper mounts the CA bundle inside every sandbox.
pub const CA_IN_SANDBOX: &str = "/run/gigmcp/ca.pem";

/// Where an unsigned `server add --rootfs` copy of `name` lives, relative to the images
/// directory: beside the store's own `roots/` and `blobs/`, never among them (a server called
/// `roots` must not collide with the store).
pub fn copied_rootfs(name: &str) -> String {
    format!("dirs/{name}")
}

/// Variables naming the CA bundle, for the clients that read one (OpenSSL, curl, Python
/// requests, Node, git, pip).
const CA_VARIABLES: [&str; 6] = [
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
];

/// The sandbox's uid and gid, whatever the image asks for.
const SANDBOX_USER: &str = "65534";

/// What the sandbox runs, and what the admin should know about how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    pub argv: Vec<String>,
    /// The complete environment, each name once.
    pub env: Vec<(String, String)>,
    /// `None`: the sandbox's default working directory.
    pub workdir: Option<String>,
    /// Overrides and ignored settings, for the audit detail (names only, never values).
    pub notes: Vec<String>,
}

impl RunPlan {
    /// The `PATH` the command is looked up through.
    pub fn path(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
    }
}

/// Why a server has nothing runnable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "server {0}: the manifest has no command and the image no Entrypoint or Cmd: nothing to run"
    )]
    NoCommand(String),
    #[error(
        "server {server}: the image's Env entry {entry:?} is not NAME=VALUE with a usable name"
    )]
    ImageEnv { server: String, entry: String },
    #[error("server {server}: working directory {dir:?} ({from}): {problem}")]
    Workdir {
        server: String,
        dir: String,
        from: &'static str,
        problem: &'static str,
    },
}

/// The gateway's own variables for `manifest`'s sandbox: one placeholder per credential (never
/// the value), the proxy variables (`proxy_addr`: the helper substitutes the link's host
/// address for its token), and the CA variables pointing at the bundle the helper mounts.
pub fn gateway_env(
    placeholders: &[(String, String)],
    proxy_addr: &str,
    port: u16,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = placeholders.to_vec();
    let proxy = format!("http://{proxy_addr}:{port}");
    // ALL_PROXY too: an image's own value must not point curl and friends elsewhere.
    for k in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push((k.into(), proxy.clone()));
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.into(), String::new()));
    }
    for k in CA_VARIABLES {
        env.push((k.into(), CA_IN_SANDBOX.into()));
    }
    env
}

/// A name the helper accepts in a sandbox's environment.
fn usable_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sets `name` in `env`, keeping its first position; the previous value is returned.
fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) -> Option<String> {
    match env.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => Some(std::mem::replace(v, value.to_owned())),
        None => {
            env.push((name.to_owned(), value.to_owned()));
            None
        }
    }
}

/// The sandbox's command, environment and working directory for `server` (see the module's
/// rules). `image`: the image's run configuration; `None` for a plain root directory.
pub fn plan(
    server: &str,
    image: Option<&RunConfig>,
    manifest: &Manifest,
    gateway: &[(String, String)],
) -> Result<RunPlan, PlanError> {
    let empty = RunConfig::default();
    let image = image.unwrap_or(&empty);
    let mut notes = Vec::new();
    let argv = match &manifest.command {
        Some(command) => command.clone(),
        None => image
            .entrypoint
            .iter()
            .flatten()
            .chain(image.cmd.iter().flatten())
            .cloned()
            .collect(),
    };
    if argv.first().is_none_or(String::is_empty) {
        return Err(PlanError::NoCommand(server.to_owned()));
    }

    let mut env: Vec<(String, String)> = Vec::new();
    for entry in image.env.iter().flatten() {
        let bad = || PlanError::ImageEnv {
            server: server.to_owned(),
            entry: entry.chars().take(64).collect(),
        };
        let (name, value) = entry.split_once('=').ok_or_else(bad)?;
        if !usable_name(name) {
            return Err(bad());
        }
        // The sandbox sets PWD itself (the helper refuses a spec that names it).
        if name == "PWD" {
            notes.push("image Env PWD ignored: the sandbox sets it".to_owned());
            continue;
        }
        set(&mut env, name, value);
    }
    let from_image: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    for (name, value) in &manifest.env {
        set(&mut env, name, value);
    }
    for (name, value) in gateway {
        if set(&mut env, name, value).is_some() {
            let whose = if manifest.env.contains_key(name) {
                "manifest env"
            } else if from_image.contains(name) {
                "image Env"
            } else {
                continue; // the gateway's own, listed twice (HTTPS_PROXY and https_proxy are not)
            };
            notes.push(format!("{whose} {name} overridden by the gateway's"));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }

    let workdir = match (&manifest.workdir, &image.working_dir) {
        (Some(dir), _) => Some((dir.clone(), "the manifest's workdir")),
        (None, Some(dir)) if !dir.is_empty() => Some((dir.clone(), "the image's WorkingDir")),
        (None, _) => None,
    };
    if let Some((dir, from)) = &workdir {
        check_workdir(dir).map_err(|problem| PlanError::Workdir {
            server: server.to_owned(),
            dir: dir.clone(),
            from,
            problem,
        })?;
    }

    if let Some(user) = image.user.as_deref().filter(|u| !u.is_empty()) {
        let asked = user.split(':').next().unwrap_or(user);
        if asked != SANDBOX_USER && asked != "nobody" {
            notes.push(format!(
                "image User {user:?} ignored: the sandbox runs as {SANDBOX_USER}"
            ));
        }
    }
    Ok(RunPlan {
        argv,
        env,
        workdir: workdir.map(|(d, _)| d),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(prefix: &str) -> String {
        let mut b = [0u8; 5];
        getrandom::fill(&mut b).unwrap();
        format!("{prefix}{}", hex::encode(b)).to_uppercase()
    }

    fn manifest(extra: serde_json::Value) -> Manifest {
        let mut m = serde_json::json!({"name": "srv", "version": "1"});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Manifest::from_json(&m.to_string()).unwrap()
    }

    fn config(json: serde_json::Value) -> RunConfig {
        serde_json::from_value(json).unwrap()
    }

    fn value<'a>(plan: &'a RunPlan, name: &str) -> Option<&'a str> {
        plan.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_manifests_command_wins_else_entrypoint_then_cmd() {
        let image = config(serde_json::json!({"Entrypoint": ["/bin/node"], "Cmd": ["srv.js"]}));
        let own = manifest(serde_json::json!({"command": ["/bin/other", "-x"]}));
        let p = plan("srv", Some(&image), &own, &[]).unwrap();
        assert_eq!(p.argv, ["/bin/other", "-x"]);
        let none = manifest(serde_json::json!({}));
        let p = plan("srv", Some(&image), &none, &[]).unwrap();
        assert_eq!(p.argv, ["/bin/node", "srv.js"]);
        let cmd_only = config(serde_json::json!({"Cmd": ["/bin/sh", "-c", "x"]}));
        let p = plan("srv", Some(&cmd_only), &none, &[]).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn a_server_with_no_command_anywhere_is_refused_by_name() {
        let none = manifest(serde_json::json!({}));
        let server = random("s").to_lowercase();
        for image in [
            None,
            Some(config(serde_json::json!({}))),
            Some(config(serde_json::json!({"Entrypoint": [], "Cmd": [""]}))),
        ] {
            assert_eq!(
                plan(&server, image.as_ref(), &none, &[]),
                Err(PlanError::NoCommand(server.clone()))
            );
        }
    }

    #[test]
    fn environment_layers_image_then_manifest_then_gateway_and_notes_overrides() {
        let (mine, theirs, cred) = (random("V"), random("W"), random("CRED"));
        let image = config(serde_json::json!({"Cmd": ["/x"], "Env": [
            format!("{mine}=image"), format!("{theirs}=image"),
            format!("{cred}=image-token"), "HTTPS_PROXY=http://evil:1".to_owned(),
            "SSL_CERT_FILE=/etc/evil.pem".to_owned(), "PATH=/opt/bin:/bin".to_owned(),
        ]}));
        let m = manifest(serde_json::json!({"env": {theirs.clone(): "manifest"}}));
        let gateway = gateway_env(&[(cred.clone(), "gmcp_ph_x".into())], "@A@", 3128);
        let p = plan("srv", Some(&image), &m, &gateway).unwrap();
        assert_eq!(value(&p, &mine), Some("image"));
        assert_eq!(value(&p, &theirs), Some("manifest"));
        assert_eq!(value(&p, &cred), Some("gmcp_ph_x"));
        assert_eq!(value(&p, "HTTPS_PROXY"), Some("http://@A@:3128"));
        assert_eq!(value(&p, "SSL_CERT_FILE"), Some(CA_IN_SANDBOX));
        assert_eq!(p.path(), "/opt/bin:/bin");
        let mut names: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let len = names.len();
        names.dedup();
        assert_eq!(names.len(), len, "a name twice");
        for name in [cred.as_str(), "HTTPS_PROXY", "SSL_CERT_FILE"] {
            let note = format!("image Env {name} overridden by the gateway's");
            assert!(p.notes.contains(&note), "{note} not in {:?}", p.notes);
        }
        assert!(
            !p.notes.iter().any(|n| n.contains("image-token")),
            "a value in the notes"
        );
        assert!(!p.notes.iter().any(|n| n.contains(&mine)));
    }

    #[test]
    fn path_defaults_when_neither_image_nor_manifest_sets_it() {
        let p = plan(
            "srv",
            None,
            &manifest(serde_json::json!({"command": ["/x"]})),
            &[],
        )
        .unwrap();
        assert_eq!(p.path(), DEFAULT_PATH);
        assert_eq!(value(&p, "PATH"), Some(DEFAULT_PATH));
    }

    #[test]
    fn a_malformed_image_env_entry_is_refused_by_name_and_pwd_is_dropped() {
        for entry in ["NOEQUALS", "1X=y", "A-B=c", "=x"] {
            let image = config(serde_json::json!({"Cmd": ["/x"], "Env": [entry]}));
            let err = plan("srv", Some(&image), &manifest(serde_json::json!({})), &[]);
            assert!(
                matches!(&err, Err(PlanError::ImageEnv { entry: e, .. }) if e == entry),
                "{entry}: {err:?}"
            );
        }
        let image = config(serde_json::json!({"Cmd": ["/x"], "Env": ["PWD=/root"]}));
        let p = plan("srv", Some(&image), &manifest(serde_json::json!({})), &[]).unwrap();
        assert_eq!(value(&p, "PWD"), None);
    }

    #[test]
    fn workdir_is_the_manifests_else_the_images_and_must_be_clean() {
        let image = config(serde_json::json!({"Cmd": ["/x"], "WorkingDir": "/app"}));
        let none = manifest(serde_json::json!({}));
        assert_eq!(
            plan("srv", Some(&image), &none, &[])
                .unwrap()
                .workdir
                .as_deref(),
            Some("/app")
        );
        let own = manifest(serde_json::json!({"workdir": "/srv"}));
        assert_eq!(
            plan("srv", Some(&image), &own, &[])
                .unwrap()
                .workdir
                .as_deref(),
            Some("/srv")
        );
        let cmd = config(serde_json::json!({"Cmd": ["/x"]}));
        assert_eq!(plan("srv", Some(&cmd), &none, &[]).unwrap().workdir, None);
        for dir in ["app", "/app/../etc", "/./app"] {
            let image = config(serde_json::json!({"Cmd": ["/x"], "WorkingDir": dir}));
            assert!(
                matches!(plan("srv", Some(&image), &none, &[]),
                    Err(PlanError::Workdir { dir: d, from: "the image's WorkingDir", .. }) if d == dir),
                "{dir}"
            );
        }
    }

    #[test]
    fn the_images_user_is_ignored_and_noted_unless_it_is_the_sandboxs() {
        let none = manifest(serde_json::json!({}));
        let user = random("u").to_lowercase();
        let image = config(serde_json::json!({"Cmd": ["/x"], "User": format!("{user}:staff")}));
        let p = plan("srv", Some(&image), &none, &[]).unwrap();
        assert_eq!(
            p.notes,
            [format!(
                "image User \"{user}:staff\" ignored: the sandbox runs as 65534"
            )]
        );
        for same in ["65534", "65534:65534", "nobody", ""] {
            let image = config(serde_json::json!({"Cmd": ["/x"], "User": same}));
            assert!(
                plan("srv", Some(&image), &none, &[])
                    .unwrap()
                    .notes
                    .is_empty()
            );
        }
    }
}
