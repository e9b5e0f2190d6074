//! The demo's two halves, one binary (built by the project, so the demo needs nothing else):
//!
//! - `gigmcp-demo-server` (no arguments): an MCP server on stdio with one tool, `get_quote`,
//!   which calls `https://api.demo.example/quote` through `HTTPS_PROXY` with
//!   `Authorization: Bearer $DEMO_API_KEY`. Inside a Gig'MCP sandbox that variable holds a
//!   placeholder; the gateway's proxy swaps in the real key on the way out.
//! - `gigmcp-demo-server upstream ADDR CA_OUT KEY_FILE`: that API. It makes its own CA and
//!   certificate for `api.demo.example`, writes the CA to `CA_OUT` (the gateway trusts it), and
//!   answers `/quote` only to the key in `KEY_FILE`, echoing the `Authorization` it received.
//!
//! The JSON-RPC here is the bare minimum for a demo server, written by hand to keep the demo's
//! image one small binary.

use std::convert::Infallible;
use std::io::BufRead;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, pem::PemObject,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API_HOST: &str = "api.demo.example";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("upstream") if args.len() == 5 => rt.block_on(upstream(&args[2], &args[3], &args[4])),
        None => serve_stdio(&rt),
        _ => {
            eprintln!("usage: gigmcp-demo-server [upstream ADDR CA_OUT KEY_FILE]");
            std::process::exit(2);
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The MCP server: one request per line on stdin, one response per line on stdout.
fn serve_stdio(rt: &tokio::runtime::Runtime) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id").cloned() else {
            continue; // a notification
        };
        let method = msg["method"].as_str().unwrap_or("");
        let reply = match method {
            "initialize" => json!({"jsonrpc":"2.0","id":id,"result":{
                "protocolVersion": msg["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "gigmcp-demo", "version": env!("CARGO_PKG_VERSION")}}}),
            "ping" => json!({"jsonrpc":"2.0","id":id,"result":{}}),
            "tools/list" => json!({"jsonrpc":"2.0","id":id,"result":{"tools":[{
                "name": "get_quote",
                "description": "Fetches a quote from the demo API (needs the DEMO_API_KEY credential).",
                "inputSchema": {"type": "object", "properties": {}}}, {
                "name": "echo",
                "description": "Returns its text argument (a trivial tool, for benchmarks).",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}}),
            "tools/call" if msg["params"]["name"] == "echo" => {
                let text = msg["params"]["arguments"]["text"].as_str().unwrap_or("");
                json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}})
            }
            "tools/call" if msg["params"]["name"] == "get_quote" => {
                let text = match rt.block_on(get_quote()) {
                    Ok(t) => t,
                    Err(e) => format!("the demo API could not be reached: {e}"),
                };
                json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}})
            }
            _ => {
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"method not found"}})
            }
        };
        println!("{reply}");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// GET https://api.demo.example/quote through the HTTPS_PROXY (CONNECT), trusting
/// SSL_CERT_FILE, as any well-behaved client does.
async fn get_quote() -> Result<String, BoxError> {
    let proxy = std::env::var("HTTPS_PROXY")?;
    let proxy = proxy.trim_start_matches("http://").trim_end_matches('/');
    let key = std::env::var("DEMO_API_KEY")?;
    let mut tcp = tokio::net::TcpStream::connect(proxy).await?;
    tcp.write_all(
        format!("CONNECT {API_HOST}:443 HTTP/1.1\r\nHost: {API_HOST}:443\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if tcp.read(&mut b).await? == 0 {
            return Err("proxy closed the connection".into());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("proxy refused: {}", head.lines().next().unwrap_or("")).into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(std::env::var("SSL_CERT_FILE")?)? {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(API_HOST)?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/quote")
        .header("host", API_HOST)
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
}

/// The demo API.
async fn upstream(addr: &str, ca_out: &str, key_file: &str) {
    let key = std::fs::read_to_string(key_file).expect("key file");
    let key = Arc::new(key.trim().to_owned());
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Gig'MCP demo API CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = p.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(p, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec![API_HOST.to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    std::fs::write(ca_out, ca_cert.pem()).expect("write the CA");
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    eprintln!("demo API listening on {addr}");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let key = key.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let ok = auth == format!("Bearer {key}");
                        let body = json!({
                            "authorized": ok,
                            "quote": if ok { "Trust is good; a sandbox is better." } else { "" },
                            // Echoed on purpose: the gateway turns the real key back into the
                            // placeholder before the server sees it.
                            "authorization_received": auth,
                        });
                        let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
                        if !ok {
                            *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}
