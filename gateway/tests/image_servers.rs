//! Issue 11's end-to-end acceptance with real community servers, through the real `gigmcp` CLI
//! and the real `gigmcpd`: each package is built with `gigmcp image build` (Debian base, the
//! install step in a sandbox whose egress reaches only the package registry), pushed with
//! `--push` to a real docker-registry (HTTPS with a test CA, configured in
//! `[[images.registries]]`), installed with `server add --image HOST/REPO@sha256:…` (pulled by
//! digest) and called through the MCP front:
//! - `@modelcontextprotocol/server-github` (npm): `search_users` with a random query reaches a
//!   fake GitHub API at `api.github.com` (its own network namespace, a test CA) carrying the
//!   real token; the server's environment only ever held the placeholder, and the answer it
//!   got back shows the placeholder where the API echoed the token;
//! - `@modelcontextprotocol/server-everything` (npm): `echo` of a random message;
//! - `mcp-server-time` (PyPI): `get_current_time`.
//!
//! One registry and one build of each image for the whole file; the bases are cached under
//! `target/image-build-bases` (as `image_build.rs` caches them). The CLI runs in the host's
//! network namespace (its install step's proxy dials the package mirror from there, and the
//! registry is on the host's loopback); gigmcpd and the helper in the test's own.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::env::{TestEnv, random_hex, text};
use testkit::helper::{Harness, POOL, PROXY_PORT};
use testkit::netns::Netns;
use testkit::registry::{Registry, RegistryAuth, random_name};
use testkit::sandbox_egress::{UPSTREAM_IP, UpNet};
use testkit::upstream;

const GITHUB: &str = "npm:@modelcontextprotocol/server-github@2025.4.8";
const EVERYTHING: &str = "npm:@modelcontextprotocol/server-everything@2026.8.31";
const TIME: &str = "pypi:mcp-server-time==2026.10.19";
const GITHUB_API: &str = "api.github.com";
const TOKEN_VAR: &str = "GITHUB_PERSONAL_ACCESS_TOKEN";

/// `gigmcp` with the test's configuration, run in the host's network namespace.
struct Admin {
    host: Netns,
    config: PathBuf,
    state_dir: PathBuf,
    key_file: PathBuf,
}

impl Admin {
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--master-key-file")
            .arg(&self.key_file)
            .args(args);
        let stdin = stdin.to_vec();
        self.host
            .run(move || testkit::env::run_with_stdin(&mut cmd, &stdin))
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Builds `spec` with the CLI (`name` for a package that declares none), pushed to `push_to`;
/// returns the digest it printed and how long the build took.
fn build(
    admin: &Admin,
    h: &Harness,
    spec: &str,
    name: Option<&str>,
    base: &str,
    mirror: IpAddr,
    push_to: &str,
) -> (String, Duration) {
    let out = h.dir.path().join(format!("layout-{}", random_hex(3)));
    let cache = testkit::bins::target_dir().join("image-build-bases");
    let started = Instant::now();
    let named = name.map(|n| ["--name", n]);
    let done = admin.run(
        &[
            "image",
            "build",
            spec,
            "--base",
            base,
            "--out",
            out.to_str().unwrap(),
            "--push",
            push_to,
            "--data-root",
            h.data_root.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--registry-address",
            &mirror.to_string(),
        ]
        .into_iter()
        .chain(named.iter().flatten().copied())
        .collect::<Vec<_>>(),
        b"",
    );
    let took = started.elapsed();
    assert!(done.status.success(), "image build {spec}: {}", text(&done));
    let digest = String::from_utf8(done.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains(&format!("pushed {push_to}@{digest}")),
        "{stderr}"
    );
    eprintln!("[image_servers] built {spec} -> {digest} in {took:?}");
    (digest, took)
}

/// `pid` and every process below it (from each process's parent in `/proc/<pid>/stat`).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let ppid: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        parent_of.push((p, ppid));
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let at = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == at)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// The text of a tool call's first content item.
fn answer(called: &Value) -> String {
    called["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {called}"))
        .to_owned()
}

#[test]
fn community_servers_are_built_pushed_pulled_by_digest_and_called_through_gigmcpd() {
    if !testkit::require_root("image_servers") {
        return;
    }
    let started = Instant::now();
    let host = Netns::current();
    let npm_mirror = testkit::resolved_address("registry.npmjs.org");
    let pypi_mirror = testkit::resolved_address("pypi.org");
    // The registry on the host's loopback, where the CLI pushes and pulls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = rt.block_on(Registry::start(RegistryAuth::Anonymous));
    let registry_host = registry.host();
    let registry_ca = registry.config().ca_file.unwrap();
    testkit::privileged("image_servers", 2, move || async move {
        let h = Harness::start(0).await;
        let net = UpNet::create();
        let test_ca = upstream::TestCa::new(&[GITHUB_API]);
        let up_ip = IpAddr::V4(net.upstream_ip());
        let api =
            upstream::Upstream::start(&net.ns.name, SocketAddr::new(up_ip, 443), &test_ca).await;
        let env = TestEnv::new();
        let upstream_ca = env.dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca, &test_ca.ca_pem).unwrap();
        let front_port = testkit::free_loopback_port();
        let config = env.dir.path().join("gigmcp.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nstate_dir = \"{state}\"\nlisten = \"127.0.0.1:{front_port}\"\n\
                 allow_unsigned_servers = true\n\
                 [sandbox]\npool = \"{POOL}\"\nbus = \"{bus}\"\nimages_dir = \"{images}\"\n\
                 ca_dir = \"{ca}\"\nproxy_port = {PROXY_PORT}\n\
                 [egress]\nextra_ca_file = \"{up_ca}\"\n\
                 [egress.hosts]\n\"{GITHUB_API}\" = [\"{up_ip}\"]\n\
                 [[images.registries]]\nhost = \"{registry_host}\"\nca_file = \"{reg_ca}\"\n",
                state = env.state_dir.display(),
                bus = h.address,
                images = h.images.display(),
                ca = h.ca_dir.display(),
                up_ca = upstream_ca.display(),
                reg_ca = registry_ca.display(),
            ),
        )
        .unwrap();
        let admin = Admin {
            host,
            config: config.clone(),
            state_dir: env.state_dir.clone(),
            key_file: env.key_file.clone(),
        };

        // Built and pushed, each once.
        let mut built = Vec::new();
        // server-github 2025.4.8 predates mcpName.
        let github_name = Some("io.github.modelcontextprotocol/server-github");
        for (spec, name, base, mirror) in [
            (GITHUB, github_name, "node", npm_mirror),
            (EVERYTHING, None, "node", npm_mirror),
            (TIME, None, "python", pypi_mirror),
        ] {
            let repo = random_name("mcp/s");
            let push_to = format!("{registry_host}/{repo}:{}", random_name("t"));
            let (digest, took) = build(&admin, &h, spec, name, base, mirror, &push_to);
            built.push((format!("{registry_host}/{repo}@{digest}"), digest, took));
        }
        let build_times: Vec<_> = built.iter().map(|b| b.2).collect();

        // Installed from the registry by digest, each with the manifest an admin would write.
        let key = format!("ghp_{}", random_hex(18));
        admin.ok(&["secret", "set", TOKEN_VAR], key.as_bytes());
        let (gh, ev, tm) = (
            format!("gh{}", random_hex(3)),
            format!("ev{}", random_hex(3)),
            format!("tm{}", random_hex(3)),
        );
        let manifests = [
            json!({
                "name": gh, "version": "2025.4.8",
                "egress": [{"host": GITHUB_API}],
                "credentials": [{"name": TOKEN_VAR, "hosts": [GITHUB_API],
                    "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
                "tools": ["search_users"],
            }),
            json!({"name": ev, "version": "2026.8.31"}),
            json!({"name": tm, "version": "2026.10.19"}),
        ];
        for ((reference, digest, _), manifest) in built.iter().zip(&manifests) {
            let name = manifest["name"].as_str().unwrap();
            let file = env.dir.path().join(format!("{name}.json"));
            std::fs::write(&file, manifest.to_string()).unwrap();
            let mut args = vec![
                "server",
                "add",
                name,
                "--image",
                reference,
                "--manifest",
                file.to_str().unwrap(),
                "--unsigned",
            ];
            // The fake API alone: its /30 holds the host's side, which no approval opens.
            let approved = format!("{UPSTREAM_IP}/32");
            if name == gh {
                args.extend(["--approve-range", &approved]);
            }
            admin.ok(&args, b"");
            let hex = digest.trim_start_matches("sha256:");
            assert!(
                h.images.join(format!("roots/{hex}/rootfs")).is_dir(),
                "{reference} not installed"
            );
        }
        let listed = admin.ok(&["image", "list"], b"");
        for ((_, digest, _), name) in built.iter().zip([&gh, &ev, &tm]) {
            assert!(
                listed
                    .lines()
                    .any(|l| l.starts_with(digest.as_str()) && l.contains(name.as_str())),
                "{listed}"
            );
        }
        admin.ok(
            &[
                "endpoint",
                "add",
                "e",
                "--server",
                &format!("{gh}=search_users"),
                "--server",
                &ev,
                "--server",
                &tm,
            ],
            b"",
        );
        let token = admin.ok(&["endpoint", "token", "create", "e", "--label", "t"], b"");
        let token = token.lines().last().unwrap().trim().to_owned();

        let mut daemon = testkit::process::start_gigmcpd(
            Path::new(env!("CARGO_BIN_EXE_gigmcpd")),
            &config,
            &env.key_file,
        );
        let front = SocketAddr::from(([127, 0, 0, 1], front_port));
        let token = &token;
        let call = |tool: String, arguments: Value| async move {
            let started = Instant::now();
            let called = testkit::mcp::rpc(
                front,
                "e",
                token,
                "tools/call",
                json!({"name": tool, "arguments": arguments}),
            )
            .await;
            eprintln!(
                "[image_servers] {tool}: first call in {:?}",
                started.elapsed()
            );
            called
        };

        // server-github: the real token reached the API, the server had only its placeholder.
        let query = format!("u{}", random_hex(6));
        let called = call(format!("{gh}__search_users"), json!({"q": query})).await;
        let said = answer(&called);
        let seen = api.seen();
        let request = seen
            .iter()
            .find(|s| s.path_and_query.starts_with("/search/users?"))
            .unwrap_or_else(|| panic!("the search never reached the API: {said}"));
        assert!(
            request.path_and_query.contains(&format!("q={query}")),
            "{}",
            request.path_and_query
        );
        assert_eq!(
            String::from_utf8_lossy(request.header("authorization").unwrap_or_default()),
            format!("Bearer {key}"),
            "what the API received"
        );
        let found: Value = serde_json::from_str(&said).unwrap_or_else(|_| panic!("{said}"));
        assert_eq!(found["items"][0]["login"], query.as_str(), "{said}");
        let echoed = found["items"][0]["bio"].as_str().unwrap();
        let placeholder = echoed
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("{echoed}"));
        assert!(placeholder.starts_with("gmcp_ph_"), "{echoed}");
        assert!(!said.contains(&key), "the key reached the server: {said}");
        let sandboxes = h.client().await.list_sandboxes().await.unwrap();
        let sandbox = sandboxes
            .iter()
            .find(|s| s.server == gh)
            .unwrap_or_else(|| panic!("{sandboxes:?}"));
        let mut held = Vec::new();
        for pid in process_tree(sandbox.pid) {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let environ = String::from_utf8_lossy(&environ).into_owned();
            assert!(!environ.contains(&key), "pid {pid} holds the key");
            held.extend(
                environ
                    .split('\0')
                    .filter_map(|kv| kv.strip_prefix(&format!("{TOKEN_VAR}=")))
                    .map(str::to_owned),
            );
        }
        assert!(
            !held.is_empty(),
            "no process of the sandbox has {TOKEN_VAR}"
        );
        assert!(
            held.iter().all(|v| v == placeholder),
            "{held:?} vs {placeholder}"
        );

        // server-everything: an echo comes back.
        let message = format!("hello-{}", random_hex(8));
        let called = call(format!("{ev}__echo"), json!({"message": message})).await;
        let said = answer(&called);
        assert!(said.contains(&message), "{called}");

        // mcp-server-time: today's date in UTC.
        let called = call(
            format!("{tm}__get_current_time"),
            json!({"timezone": "UTC"}),
        )
        .await;
        let said = answer(&called);
        let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        assert!(
            said.contains("UTC") && said.contains(&today[..10]),
            "{called}"
        );

        daemon.stop(Duration::from_secs(20));
        eprintln!(
            "[image_servers] builds {build_times:?}; whole test {:?}",
            started.elapsed()
        );
    });
    drop(registry);
}
