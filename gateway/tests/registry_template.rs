//! The registry template's CI script (`registry/ci/run`) end to end, on real parts: a fresh
//! TUF repository (`gigmcp registry keygen` + `init`), a copy of `registry/` as it is
//! (`servers/time`, PyPI `mcp-server-time`; `servers/everything`, npm
//! `@modelcontextprotocol/server-everything`), the real helper running the install step (as
//! `image_build.rs` starts it), this machine's package mirror opted in by its address, and a
//! real docker-registry on loopback with a test CA to push to.
//!
//! One run builds, pushes, stages and signs; `gigmcp registry verify` from the fresh root then
//! passes and lists both entries, each pinning the digest the registry serves for its tag.
//! A second run without changes builds the same digest (reproducible), signs only a new
//! timestamp (targets and snapshot are unchanged) and the metadata still verifies. Then a
//! gateway pins the fresh root (`registry add`, the metadata over loopback HTTP), installs
//! `time` and calls `get_current_time` through an endpoint of `gigmcpd`.
//!
//! Without root or a build: `ci/run --lint-only` lints both servers of the template and stops;
//! an entry whose curation reaches a paste site (a random subdomain) stops `ci/run` at the
//! lint, naming the field, before anything is built, pushed or signed.
//!
//! Bases are cached under `target/debug/image-build-bases/` (shared with `image_build.rs`).
//! The publishing test is root only: a loud SKIP without root, a failure on CI.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gateway::image::build::base::{Bases, Recipe};
use gateway::image::build::spec::Ecosystem;
use serde_json::json;
use testkit::env::{TestEnv, run_with_stdin, text};
use testkit::helper::{Harness, POOL, PROXY_PORT};
use testkit::metadata::MetadataServer;
use testkit::netns::Netns;
use testkit::registry::{Registry, RegistryAuth, random_name};

fn bases_dir() -> PathBuf {
    testkit::bins::target_dir().join("image-build-bases")
}

/// The servers the template lists: (name, version = the pushed tag, ecosystem).
const SERVERS: [(&str, &str, Ecosystem); 2] = [
    ("everything", "2026.8.31", Ecosystem::Npm),
    ("time", "2026.10.19", Ecosystem::Pypi),
];

/// A copy of the template, as a registry repository's checkout would be.
fn template_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry");
    let copy = dir.join("registry");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    copy
}

fn gigmcp(args: &[&str]) -> String {
    let out = Command::new(testkit::bins::workspace_bin("gigmcp"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh repository in `dir/metadata`: one key for root, one for targets (which also signs
/// snapshot and timestamp). Returns (metadata, root key, targets key).
fn fresh_repository(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (root, targets) = (dir.join("root.key"), dir.join("targets.key"));
    for key in [&root, &targets] {
        gigmcp(&["registry", "keygen", "--out", key.to_str().unwrap()]);
    }
    let metadata = dir.join("metadata");
    let pubkey = |k: &Path| format!("{}.pub", k.display());
    gigmcp(&[
        "registry",
        "init",
        metadata.to_str().unwrap(),
        "--root-key",
        &pubkey(&root),
        "--targets-key",
        &pubkey(&targets),
        "--key",
        root.to_str().unwrap(),
        "--key",
        targets.to_str().unwrap(),
    ]);
    (metadata, root, targets)
}

/// What `ci/run` needs from its environment, all of it the test's own.
struct Ci {
    script: PathBuf,
    registry: String,
    metadata: PathBuf,
    keys: String,
    config: PathBuf,
    build_flags: String,
}

impl Ci {
    fn run(&self, host: &Netns) -> Output {
        let mut cmd = Command::new(&self.script);
        cmd.env("REGISTRY", &self.registry)
            .env("METADATA", &self.metadata)
            .env("KEYS", &self.keys)
            .env("GIGMCP", testkit::bins::workspace_bin("gigmcp"))
            .env("GIGMCP_CONFIG", &self.config)
            .env("BUILD_FLAGS", &self.build_flags);
        // From the host's namespace: the build's egress proxy dials the mirror from there,
        // and the docker-registry listens on its loopback.
        host.run(move || cmd.output().unwrap())
    }
}

/// `verify`'s listing (`  NAME/VERSION HOST/REPO@DIGEST` per entry): target path -> the
/// reference it pins.
fn pinned(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_once(' '))
        .map(|(target, reference)| (target.to_owned(), reference.to_owned()))
        .collect()
}

/// The digest the registry serves for `repo:tag` (its Docker-Content-Digest), asked over
/// HTTPS with the test CA as any client would.
fn served_digest(host: &Netns, registry: &Registry, repo: &str, tag: &str) -> String {
    let url = format!("https://{}/v2/{repo}/manifests/{tag}", registry.host());
    let mut cmd = Command::new("curl");
    cmd.args(["--fail", "--silent", "--show-error", "--head", "--cacert"])
        .arg(&registry.ca_file)
        .args([
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &url,
        ]);
    let out = host.run(move || cmd.output().unwrap());
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Docker-Content-Digest for {url}"))
}

/// The gateway's side of the index `ci/run` signed: `registry add` pinning its first root,
/// `install time --yes`, an endpoint exposing `get_current_time`, `gigmcpd`, and a
/// `tools/call` through the endpoint.
async fn install_and_call(config: &Path, env: &TestEnv, host: &Netns, url: &str, root: &Path) {
    let admin = |args: &[&str]| {
        let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
        cmd.arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(&env.state_dir)
            .arg("--master-key-file")
            .arg(&env.key_file)
            .args(args);
        let out = host.run(move || run_with_stdin(&mut cmd, b""));
        assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let reg = random_name("r");
    admin(&[
        "registry",
        "add",
        &reg,
        url,
        "--root",
        root.to_str().unwrap(),
    ]);
    admin(&["registry", "sync", &reg]);
    let shown = admin(&["registry", "install", "time", "--yes"]);
    assert!(shown.contains("installed server time"), "{shown}");
    let ep = random_name("ep");
    admin(&["endpoint", "add", &ep, "--server", "time=get_current_time"]);
    let token = admin(&["endpoint", "token", "create", &ep, "--label", "t"]);
    let token = token.lines().last().unwrap().trim().to_owned();
    let bin = Path::new(env!("CARGO_BIN_EXE_gigmcpd"));
    let mut daemon = testkit::process::start_gigmcpd(bin, config, &env.key_file);
    let front = gateway_front(config);
    let args = json!({"name": "time__get_current_time", "arguments": {"timezone": "UTC"}});
    let called = testkit::mcp::rpc(front, &ep, &token, "tools/call", args).await;
    let said = called["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{called}"));
    assert!(said.contains("UTC"), "{said}");
    daemon.stop(Duration::from_secs(20));
}

/// The front's address, as the configuration names it.
fn gateway_front(config: &Path) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap();
    listen.trim_matches('"').parse().unwrap()
}

/// `ci/run` with this environment (`GIGMCP` set), from the caller's namespace.
fn ci_run(script: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(script)
        .args(args)
        .env("GIGMCP", testkit::bins::workspace_bin("gigmcp"))
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn ci_run_lint_only_lints_every_server_of_the_template_and_stops() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/ci/run");
    let out = ci_run(&script, &["--lint-only"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for (name, _, _) in SERVERS {
        assert!(
            said.contains(&format!("servers/{name}/: no findings")),
            "{said}"
        );
    }
    assert!(
        text(&out).contains("ci: lint 2 server(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_entry_lint_refuses_stops_ci_run_before_anything_is_built_or_signed() {
    let work = tempfile::tempdir().unwrap();
    let template = template_copy(work.path());
    let host = format!("{}.pastebin.com", random_name("p"));
    let curation = template.join("servers/time/curation.toml");
    let mut text_of = std::fs::read_to_string(&curation).unwrap();
    text_of.push_str(&format!("\n[[egress]]\nhost = \"{host}\"\n"));
    std::fs::write(&curation, text_of).unwrap();
    let metadata = work.path().join("metadata");
    std::fs::create_dir(&metadata).unwrap();
    let metadata_str = metadata.to_str().unwrap();
    let out = ci_run(
        &template.join("ci/run"),
        &[],
        &[
            ("REGISTRY", "127.0.0.1:9"),
            ("METADATA", metadata_str),
            ("KEYS", "absent.key"),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("egress[0].host: exfiltration: \"{host}\"")),
        "{said}"
    );
    assert!(!said.contains(": build "), "{said}");
    assert_eq!(std::fs::read_dir(&metadata).unwrap().count(), 0);
}

/// One configuration for the CI's build and push and for the gateway: the harness's helper,
/// its image store, the docker-registry with its test CA, the front on a free port.
fn write_config(h: &Harness, gw: &TestEnv, registry: &Registry) -> PathBuf {
    let config = h.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\
             [sandbox]\nbus = \"{}\"\nimages_dir = \"{}\"\nca_dir = \"{}\"\n\
             proxy_port = {PROXY_PORT}\npool = \"{POOL}\"\n\
             [[images.registries]]\nhost = \"{}\"\nca_file = \"{}\"\n",
            gw.state_dir.display(),
            testkit::free_loopback_port(),
            h.address,
            h.images.display(),
            h.ca_dir.display(),
            registry.host(),
            registry.ca_file.display(),
        ),
    )
    .unwrap();
    config
}

/// Makes (or finds cached) the bases of both ecosystems, and returns the mirror's address:
/// `ci/run` passes one `BUILD_FLAGS` to every build, so npm and PyPI must share it here.
fn bases_and_mirror() -> IpAddr {
    let bases = Bases { cache: bases_dir() };
    let started = Instant::now();
    for eco in [Ecosystem::Npm, Ecosystem::Pypi] {
        for recipe in [Recipe::runtime(eco), Recipe::builder(eco)] {
            bases
                .ensure(&recipe)
                .unwrap_or_else(|e| panic!("base {}: {e}", recipe.name));
        }
    }
    eprintln!("[registry_template] bases ready in {:?}", started.elapsed());
    let npm = testkit::resolved_address("registry.npmjs.org");
    let pypi = testkit::resolved_address("pypi.org");
    assert_eq!(npm, pypi, "this test needs one mirror for npm and PyPI");
    npm
}

#[test]
fn ci_run_builds_pushes_and_signs_an_index_that_verifies_and_rebuilds_to_the_same_digest() {
    if !testkit::require_root("registry_template") {
        return;
    }
    let mirror = bases_and_mirror();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = rt.block_on(Registry::start(RegistryAuth::Anonymous));
    let work = tempfile::tempdir().unwrap();
    let template = template_copy(work.path());
    let (metadata, _root_key, targets_key) = fresh_repository(work.path());
    let root_json = metadata.join("1.root.json");
    let host = Netns::current();
    // In the host's namespace, where `gigmcp registry add` and `sync` run.
    let served = MetadataServer::start(&metadata);

    testkit::privileged("registry_template", 2, move || async move {
        let h = Harness::start(0).await;
        let gw = TestEnv::new();
        let config = write_config(&h, &gw, &registry);
        let ci = Ci {
            script: template.join("ci/run"),
            registry: registry.host(),
            metadata: metadata.clone(),
            keys: targets_key.display().to_string(),
            config: config.clone(),
            build_flags: format!(
                "--state-dir {} --data-root {} --cache {} --registry-address {mirror}",
                h.dir.path().join("state").display(),
                h.data_root.display(),
                bases_dir().display(),
            ),
        };
        let verify = || {
            gigmcp(&[
                "registry",
                "verify",
                metadata.to_str().unwrap(),
                "--root",
                root_json.to_str().unwrap(),
            ])
        };

        let first_started = Instant::now();
        let first = ci.run(&host);
        assert!(first.status.success(), "ci/run: {}", text(&first));
        let first_took = first_started.elapsed();
        let listing = verify();
        assert!(listing.contains("; 2 entries"), "{listing}");
        let digests = pinned(&listing);
        let wanted: BTreeMap<String, String> = SERVERS
            .iter()
            .map(|(name, version, _)| {
                let repo = format!("servers/{name}");
                let digest = served_digest(&host, &registry, &repo, version);
                (
                    format!("{name}/{version}"),
                    format!("{}/{repo}@{digest}", registry.host()),
                )
            })
            .collect();
        assert_eq!(digests, wanted, "{listing}");

        let second_started = Instant::now();
        let second = ci.run(&host);
        assert!(second.status.success(), "ci/run again: {}", text(&second));
        let relisting = verify();
        assert_eq!(pinned(&relisting), digests, "{relisting}");
        // Nothing changed: targets and snapshot stay, only a new timestamp is signed.
        assert!(
            relisting.contains("targets 2, snapshot 2, timestamp 3"),
            "{relisting}"
        );
        eprintln!(
            "[registry_template] {digests:?}: first ci/run {first_took:?}, second {:?}",
            second_started.elapsed()
        );

        let installed = Instant::now();
        install_and_call(&config, &gw, &host, &served.url(), &root_json).await;
        eprintln!(
            "[registry_template] install and tools/call in {:?}",
            installed.elapsed()
        );
        drop(registry);
    });
}
