//! MCP front numbers (issue 5): per-call overhead of `tools/call` through the gateway against
//! the same server spoken to directly over stdio; throughput with 64 concurrent clients;
//! `gigmcpd`'s resident memory idle and per idle client session.
//!
//! The server is `gigmcp-demo-server`'s trivial `echo` tool (build it first:
//! `cargo build --release -p gigmcp-demo-server`). The front runs in this process with a plain
//! child-process launcher: the sandbox does not sit on the stdio path (pipes either way).
//!
//! `cargo bench -p gateway --bench mcp`

use testkit::mcp as mcp_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CALLS: usize = 2000;
const WARMUP: usize = 200;
const CLIENTS: usize = 64;
const CALLS_PER_CLIENT: usize = 200;
const SESSIONS: usize = 2000;

fn demo_server() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/gigmcp-demo-server");
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p gigmcp-demo-server",
        p.display()
    );
    p
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 of `tools/call echo` straight over the server's stdio.
async fn direct() -> Duration {
    let mut child = tokio::process::Command::new(demo_server())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lat = Vec::new();
    for i in 0..WARMUP + CALLS {
        let req = json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
            "params":{"name":"echo","arguments":{"text":"hello"}}});
        let t = Instant::now();
        stdin
            .write_all(format!("{req}\n").as_bytes())
            .await
            .unwrap();
        let line = stdout.next_line().await.unwrap().unwrap();
        assert!(line.contains("hello"));
        if i >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    pct(&lat, 0.5)
}

/// One keep-alive HTTP/1.1 connection to the front; returns a closure-like sender.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn call(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: std::net::SocketAddr,
    bearer: &str,
    id: usize,
) {
    use http_body_util::BodyExt;
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
        "params":{"name":"bench__echo","arguments":{"text":"hello"}}});
    let req = http::Request::post("/mcp/bench")
        .header("host", addr.to_string())
        .header("authorization", bearer)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "bench__echo")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hello", "{v}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The real `gigmcpd`: RSS when idle, then after `SESSIONS` client sessions are opened.
async fn daemon_memory() {
    use std::io::BufRead;
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/gigmcpd");
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/gigmcp");
    if !bin.exists() || !cli.exists() {
        println!("gigmcpd memory: SKIPPED (cargo build --release --bins first)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let key = dir.path().join("master.key");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n[sandbox]\nca_dir = \"{}\"\n",
            state.display(),
            dir.path().join("ca").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&cli)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--master-key-file")
            .arg(&key)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::process::Command::new(&cli)
        .args(["vault", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    // An endpoint needs a server; sessions never start it.
    let store = gateway::store::SqliteStore::open_in(&state).unwrap();
    use gateway::store::Store;
    store
        .server_add(&gateway::store::ServerRecord {
            name: "bench".into(),
            version: "1".into(),
            image_digest: "dir:bench".into(),
            manifest: r#"{"name":"bench","version":"1","command":["/bin/x"]}"#.into(),
            source: "unsigned".into(),
            approved_ranges: vec![],
            installed_ms: 0,
            origin: None,
        })
        .unwrap();
    drop(store);
    run(&["endpoint", "add", "bench", "--server", "bench"]);
    let token = run(&["endpoint", "token", "create", "bench"])
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--master-key-file")
        .arg(&key)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for l in lines.by_ref() {
        if l.unwrap().contains("gigmcpd ready") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(child.id());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bearer = format!("Bearer {token}");
    let mut send = connect(addr).await;
    for i in 0..SESSIONS {
        let body = json!({"jsonrpc":"2.0","id":i,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"b","version":"1"}}});
        let req = http::Request::post("/mcp/bench")
            .header("host", addr.to_string())
            .header("authorization", bearer.as_str())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert!(resp.headers().contains_key("mcp-session-id"));
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with = rss_kib(child.id());
    println!(
        "gigmcpd RSS idle {:.1} MiB (goal <= 30 MiB); with {SESSIONS} idle client sessions {:.1} MiB: {:.1} KiB per session (goal <= 64 KiB)",
        idle as f64 / 1024.0,
        with as f64 / 1024.0,
        (with.saturating_sub(idle)) as f64 / SESSIONS as f64
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = child.wait();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = json!({"name": "bench", "version": "1",
        "command": [demo_server().to_str().unwrap()]});
    let gw = mcp_support::Gw::with(
        vec![("bench", server)],
        vec![("bench", vec![("bench", vec!["echo"])])],
        &[],
    )
    .await;
    let (_, token) = gw.token("bench");
    let bearer = format!("Bearer {token}");

    let d = direct().await;
    let mut send = connect(gw.addr).await;
    let mut lat = Vec::new();
    for i in 0..WARMUP + CALLS {
        let t = Instant::now();
        call(&mut send, gw.addr, &bearer, i).await;
        if i >= WARMUP {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    let g = pct(&lat, 0.5);
    println!("tools/call echo, {CALLS} sequential calls");
    println!("direct over stdio   p50 {:.3} ms", ms(d));
    println!(
        "through the gateway p50 {:.3} ms, p99 {:.3} ms; added p50 {:.0} us (goal <= 300 us), ratio of p50s {:.1}",
        ms(g),
        ms(pct(&lat, 0.99)),
        (g.as_secs_f64() - d.as_secs_f64()) * 1e6,
        g.as_secs_f64() / d.as_secs_f64()
    );

    // 64 clients, each on its own connection, against the one server session.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addr = gw.addr;
        let bearer = bearer.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(addr).await;
            let mut lat = Vec::with_capacity(CALLS_PER_CLIENT);
            for i in 0..CALLS_PER_CLIENT {
                let t = Instant::now();
                call(&mut send, addr, &bearer, c * 10_000 + i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    println!(
        "{CLIENTS} concurrent clients x {CALLS_PER_CLIENT} calls: {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms",
        all.len() as f64 / secs,
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.99))
    );

    daemon_memory().await;
}
