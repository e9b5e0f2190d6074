//! The MCP front as the official Python MCP SDK sees it: the SDK's Streamable HTTP client, with
//! a bearer token, lists and calls only its endpoint's subset of the community server
//! `mcp-server-time` (PyPI), over plain HTTP and over the front's own TLS termination, with a
//! real SQLite store behind it.

use testkit::mcp as mcp_support;

use std::time::Duration;

use mcp_support::{Gw, venv};
use serde_json::Value;

/// The official Python SDK's Streamable HTTP client with a bearer token.
const PY_CLIENT: &str = r#"
import asyncio, json, sys
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, token):
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer " + token}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                init = await s.initialize()
                print("VERSION", init.protocol_version, flush=True)
                tools = await s.list_tools()
                print("TOOLS", json.dumps(sorted(t.name for t in tools.tools)), flush=True)
                r = await s.call_tool("time__get_current_time", {"timezone": "UTC"})
                print("CALL", json.dumps([c.text for c in r.content if hasattr(c, "text")]), flush=True)
                try:
                    r = await s.call_tool("time__convert_time",
                        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"})
                    print("OUTSIDE", "ANSWERED", r.is_error, flush=True)
                except Exception as e:
                    print("OUTSIDE", "REFUSED", str(e), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

async fn python(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(venv().join("python"))
        .arg("-c")
        .arg(PY_CLIENT)
        .args(args)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("python client finished")
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(tag).map(str::trim))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_lists_and_calls_only_the_endpoints_subset() {
    let gw = Gw::start().await;
    let (token_id, token) = gw.token("agents");
    let (out, err) = python(&[&gw.url("agents"), &token]).await;
    assert!(out.contains("OUTSIDE"), "client failed:\n{out}\n{err}");
    // Endpoint subset {get_current_time} ∩ manifest {get_current_time, convert_time}.
    assert_eq!(line(&out, "TOOLS"), r#"["time__get_current_time"]"#);
    let call: Vec<String> = serde_json::from_str(line(&out, "CALL")).unwrap();
    let answer: Value = serde_json::from_str(&call[0]).expect("the tool's JSON result");
    assert_eq!(answer["timezone"], "UTC", "{answer}");
    let outside = line(&out, "OUTSIDE");
    assert!(
        outside.starts_with("REFUSED") && outside.contains("not available on this endpoint"),
        "{outside}"
    );
    // Every call is attributed to its token; the refusal is audited.
    let audit = gw.audit().await;
    let calls: Vec<_> = audit.iter().filter(|e| e.action == "mcp.call").collect();
    assert!(
        calls
            .iter()
            .any(|e| e.detail.contains(&format!("token={token_id}"))
                && e.detail.contains("tool=time__get_current_time")
                && e.outcome == "ok"),
        "{calls:#?}"
    );
    assert!(audit.iter().any(|e| e.action == "mcp.denied"
        && e.detail.contains("tool=time__convert_time")
        && e.detail.contains(&format!("token={token_id}"))));
    // The token is never in the audit trail.
    assert!(!audit.iter().any(|e| e.detail.contains(&token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_serves_the_python_sdk_over_https() {
    let gw = Gw::start().await;
    let (_, token) = gw.token("agents");
    // A certificate for localhost from a throwaway CA, as an admin would configure.
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "front test CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let acceptor = gateway::mcp::front::tls_acceptor(&cert_pem, &key_pem).unwrap();
    assert!(
        gateway::mcp::front::tls_acceptor(&cert_pem, &ca_pem).is_err(),
        "a certificate is no key"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let front = gateway::mcp::front::Front::new(
        gw.store.clone(),
        gateway::audit::Auditor::new(gw.store.clone(), "gigmcpd"),
        gw.pool.clone(),
        gateway::mcp::front::FrontLimits::default(),
        vec![format!("localhost:{port}")],
        vec![],
        None,
    );
    let serving = tokio::spawn(front.serve_with(listener, Some(acceptor)));
    let script = PY_CLIENT.replace(
        "httpx2.AsyncClient(headers={\"Authorization\": \"Bearer \" + token})",
        "httpx2.AsyncClient(headers={\"Authorization\": \"Bearer \" + token}, verify=ssl.create_default_context(cafile=sys.argv[3]))",
    ).replace("import asyncio, json, sys", "import asyncio, json, ssl, sys");
    assert_ne!(script, PY_CLIENT);
    let out = tokio::process::Command::new(venv().join("python"))
        .arg("-c")
        .arg(&script)
        .args([
            &format!("https://localhost:{port}/mcp/agents"),
            &token,
            ca_pem.to_str().unwrap(),
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"TOOLS ["time__get_current_time"]"#),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port gets nothing.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let plain = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await;
    if let Ok((mut send, conn)) = plain {
        tokio::spawn(conn);
        let req = http::Request::get("/mcp/agents")
            .header("host", format!("localhost:{port}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert!(send.send_request(req).await.is_err());
    }
    serving.abort();
}
