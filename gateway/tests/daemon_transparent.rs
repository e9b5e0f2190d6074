//! Transparent mode in production, end to end through `gigmcpd`: a real Node MCP server whose
//! tool calls Node's built-in `fetch` (which ignores `HTTPS_PROXY`) runs in a real sandbox
//! built by the real helper (private bus); the manifest says nothing about transparent mode, so
//! the default for a server with egress turns it on. The fake upstream in its own network
//! namespace must receive the real key; the server must only ever see its placeholder.
//!
//! Everything is installed with the real `gigmcp` CLI and served by the real `gigmcpd`; the
//! proxy port, the key, the server's name and the front's port are chosen at random.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::env::{TestEnv, random_hex, run_with_stdin, text};
use testkit::helper::{Harness, POOL};
use testkit::sandbox_egress::{UPSTREAM_IP, UpNet, which};
use testkit::{rootfs, upstream};

const API_HOST: &str = "api.test.example";

/// An MCP server on stdio (newline-delimited JSON-RPC) with one tool, `fetch`: a GET of
/// `https://api.test.example/echo` with the credential's placeholder as a bearer token. It
/// answers with the status, and hex of the token it sent and of the body it got back (hex, so
/// no redaction on the way to the test can hide what the server saw).
const SERVER_JS: &str = r#"
const readline = require('readline');
const send = (m) => process.stdout.write(JSON.stringify(m) + '\n');
const hex = (s) => Buffer.from(s, 'utf8').toString('hex');
const tools = [{name: 'fetch', description: 'GET the echo API', inputSchema: {type: 'object'}}];
readline.createInterface({input: process.stdin}).on('line', async (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  const reply = (result) => send({jsonrpc: '2.0', id: m.id, result});
  if (m.method === 'initialize') {
    return reply({protocolVersion: m.params.protocolVersion, capabilities: {tools: {}},
                  serverInfo: {name: 'fetcher', version: '1.0.0'}});
  }
  if (m.method === 'tools/list') return reply({tools});
  if (m.method !== 'tools/call') {
    return send({jsonrpc: '2.0', id: m.id, error: {code: -32601, message: 'unknown method'}});
  }
  const sent = process.env.API_TOKEN;
  try {
    const r = await fetch('https://api.test.example/echo?c=daemon-transparent',
                          {headers: {authorization: 'Bearer ' + sent}});
    const body = await r.text();
    const text = JSON.stringify({status: r.status, sent: hex(sent), body: hex(body)});
    reply({content: [{type: 'text', text}]});
  } catch (e) {
    reply({content: [{type: 'text', text: 'FETCH FAILED ' + e + ' ' + (e.cause || '')}],
           isError: true});
  }
});
"#;

/// Node and its libraries, the server at `/app/server.js`.
fn fetcher_rootfs(root: &Path) {
    rootfs::build(root, &[(which("node"), "bin/node")]);
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(root.join("app/server.js"), SERVER_JS).unwrap();
    let ok = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// The helper's default `host_service_ports` (`privhelper::config`; the gateway's tests do not
/// link the helper) and the fixtures' usual proxy port: a random proxy port avoids them all.
const NOT_PROXY_PORTS: [u16; 9] = [3128, 8750, 2375, 2376, 3306, 5432, 6379, 11211, 27017];

/// A random port above the privileged range and outside the helper's host service ports.
fn random_port() -> u16 {
    loop {
        let port = u16::from_str_radix(&random_hex(2), 16).unwrap();
        if port >= 1024 && !NOT_PROXY_PORTS.contains(&port) {
            return port;
        }
    }
}

fn unhex(s: &Value) -> String {
    String::from_utf8(hex::decode(s.as_str().expect("hex string")).unwrap()).unwrap()
}

#[test]
fn node_fetch_in_a_server_under_gigmcpd_reaches_its_bound_host_with_the_key_swapped() {
    testkit::privileged(
        "node_fetch_in_a_server_under_gigmcpd_reaches_its_bound_host_with_the_key_swapped",
        2,
        || async {
            let h = Harness::start(0).await;
            let empty = h.count_host();
            let net = UpNet::create();
            let test_ca = upstream::TestCa::new(&[API_HOST]);
            let up_ip = IpAddr::V4(net.upstream_ip());
            let upstream =
                upstream::Upstream::start(&net.ns.name, SocketAddr::new(up_ip, 443), &test_ca)
                    .await;
            let env = TestEnv::new();
            let upstream_ca = env.dir.path().join("upstream-ca.pem");
            std::fs::write(&upstream_ca, &test_ca.ca_pem).unwrap();

            let key = format!("sk-live-{}", random_hex(16));
            let server = format!("fetch{}", random_hex(3));
            let (proxy_port, front_port) = (random_port(), testkit::free_loopback_port());
            let config = env.dir.path().join("gigmcp.toml");
            std::fs::write(
                &config,
                format!(
                    "[gateway]\nstate_dir = \"{state}\"\nlisten = \"127.0.0.1:{front_port}\"\n\
                     allow_unsigned_servers = true\n\
                     [sandbox]\npool = \"{POOL}\"\nbus = \"{bus}\"\nimages_dir = \"{images}\"\n\
                     ca_dir = \"{ca}\"\nproxy_port = {proxy_port}\n\
                     [egress]\nextra_ca_file = \"{up_ca}\"\n\
                     [egress.hosts]\n\"{API_HOST}\" = [\"{up_ip}\"]\n",
                    state = env.state_dir.display(),
                    bus = h.address,
                    images = h.images.display(),
                    ca = h.ca_dir.display(),
                    up_ca = upstream_ca.display(),
                ),
            )
            .unwrap();
            let admin = |args: &[&str], stdin: &[u8]| {
                let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
                cmd.arg("--config")
                    .arg(&config)
                    .arg("--state-dir")
                    .arg(&env.state_dir)
                    .arg("--master-key-file")
                    .arg(&env.key_file)
                    .args(args);
                let out = run_with_stdin(&mut cmd, stdin);
                assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
                String::from_utf8(out.stdout).unwrap()
            };

            // The installation, as an admin makes it: secret on stdin, server, endpoint, token.
            admin(&["secret", "set", "API_TOKEN"], key.as_bytes());
            let image = env.dir.path().join("fetcher-rootfs");
            fetcher_rootfs(&image);
            let manifest = json!({
                "name": server, "version": "1.0.0",
                "command": ["/bin/node", "/app/server.js"],
                // libuv's io_uring is killed by the seccomp policy; Node falls back without it.
                "env": {"UV_USE_IO_URING": "0", "HOME": "/tmp"},
                "egress": [{"host": API_HOST}],
                "credentials": [{"name": "API_TOKEN", "hosts": [API_HOST],
                    "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
                "tools": ["fetch"],
            });
            let manifest_file = env.dir.path().join("manifest.json");
            std::fs::write(&manifest_file, manifest.to_string()).unwrap();
            admin(
                &[
                    "server",
                    "add",
                    &server,
                    "--rootfs",
                    image.to_str().unwrap(),
                    "--manifest",
                    manifest_file.to_str().unwrap(),
                    "--unsigned",
                    "--approve-range",
                    // The upstream alone: its /30 holds the host's side, which no approval opens.
                    &format!("{UPSTREAM_IP}/32"),
                ],
                b"",
            );
            admin(
                &[
                    "endpoint",
                    "add",
                    "e",
                    "--server",
                    &format!("{server}=fetch"),
                ],
                b"",
            );
            let token = admin(&["endpoint", "token", "create", "e", "--label", "t"], b"");
            let token = token.lines().last().unwrap().trim().to_owned();

            // gigmcpd itself, in the test's network namespace (where the helper and pool are).
            let mut daemon = testkit::process::start_gigmcpd(
                Path::new(env!("CARGO_BIN_EXE_gigmcpd")),
                &config,
                &env.key_file,
            );

            // The tool call: the pool starts the server in its sandbox, Node's fetch resolves
            // the host through the gateway's DNS and connects to N.1:443.
            let front = SocketAddr::from(([127, 0, 0, 1], front_port));
            let name = format!("{server}__fetch");
            let called = testkit::mcp::rpc(
                front,
                "e",
                &token,
                "tools/call",
                json!({"name": name, "arguments": {}}),
            )
            .await;
            let said: Value = serde_json::from_str(
                called["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{called}")),
            )
            .unwrap_or_else(|_| panic!("the server's fetch failed: {called}"));
            assert_eq!(said["status"], 200, "{said}");

            // The upstream got the real key, in the declared place.
            let seen = upstream.seen();
            let request = seen
                .iter()
                .find(|s| s.path_and_query == "/echo?c=daemon-transparent")
                .expect("the request reached the upstream");
            assert_eq!(
                request.header("authorization"),
                Some(format!("Bearer {key}").as_bytes())
            );
            // The server only ever had its placeholder: it sent it, and the echo of the real key
            // came back as the placeholder.
            let (sent, body) = (unhex(&said["sent"]), unhex(&said["body"]));
            assert!(sent.starts_with("gmcp_ph_"), "{sent}");
            assert!(
                !sent.contains(&key) && !body.contains(&key),
                "the key reached the server"
            );
            assert!(
                body.contains(&format!("Bearer {sent}")),
                "the echoed key was not scrubbed back to the placeholder: {body}"
            );

            // Transparent mode it was: the TLS came in on N.1:443, host from SNI.
            let live = h.client().await.list_sandboxes().await.unwrap();
            assert_eq!(live.len(), 1, "{live:?}");
            // (The daemon's audit queue writes in batches: give it a moment.)
            let store = env.store();
            let transparent_connect = |events: &[gateway::store::AuditEvent]| {
                events.iter().any(|e| {
                    e.action == "egress.connect"
                        && e.target == format!("{API_HOST}:443")
                        && e.detail.contains("kind=transparent")
                })
            };
            let mut events = store.audit_recent(10_000).unwrap();
            for _ in 0..50 {
                if transparent_connect(&events) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                events = store.audit_recent(10_000).unwrap();
            }
            assert!(
                transparent_connect(&events),
                "no transparent-mode connection audited: {events:#?}"
            );

            // An orderly stop takes the sandbox with it.
            daemon.stop(Duration::from_secs(20));
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while h.count_host() != empty && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(h.count_host(), empty, "gigmcpd's stop left something");
        },
    );
}
