//! Noisy neighbours: a second sandbox served by the same egress state as a [`Fixture`] (its own
//! client namespace, link and proxy), and a connection storm run from a sandbox's namespace by a
//! separate process, so the test process's fds are the gateway's alone.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use gateway::egress::{EgressProxy, SandboxEgress};
use tokio::io::AsyncWriteExt;

use crate::egress::{Fixture, connect_from, manifest, read_body, read_head, tls_client};
use crate::netns::{NamedNetns, ip_ok};
use crate::process::{Tied, spawn_tied};

/// Another sandbox on `fx`'s egress state: link 10.242.i.0/30 in the test's own namespace.
#[derive(Debug)]
pub struct Neighbour {
    pub ns: NamedNetns,
    pub proxy: EgressProxy,
}

impl Neighbour {
    pub async fn start(fx: &Fixture) -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = NamedNetns::add(crate::names::unique("gmeg"));
        let link = format!("gn{i}c");
        let host = Ipv4Addr::new(10, 242, i, 1);
        ip_ok(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ip_ok(&["addr", "add", &format!("{host}/30"), "dev", &link]);
        ip_ok(&["link", "set", &link, "up"]);
        let sandbox = format!("10.242.{i}.2");
        let n = ns.name.as_str();
        ip_ok(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{sandbox}/30"),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", n, "link", "set", "eth0", "up"]);
        ip_ok(&["-n", n, "link", "set", "lo", "up"]);
        let sb = SandboxEgress {
            sandbox_id: format!("neighbour{i}"),
            listen: SocketAddr::new(IpAddr::V4(host), 0),
            expected_peer: sandbox.parse().unwrap(),
            manifest: Arc::new(manifest()),
            placeholders: fx.ph.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            approved_ranges: vec![format!("10.240.{}.0/30", fx.net.index).parse().unwrap()],
            reserved_opt_in: Vec::new(),
        };
        let proxy = EgressProxy::spawn(sb, fx.shared.clone()).await.unwrap();
        Self { ns, proxy }
    }

    /// One request as a fresh client would make it: TCP, CONNECT, TLS (trusting `fx`'s CA),
    /// `GET /` on `api.test.example`. The status line, or what went wrong.
    pub async fn get(&self, fx: &Fixture) -> Result<String, String> {
        get_through(&self.ns.name, self.proxy.local_addr(), fx).await
    }
}

/// [`Neighbour::get`] from namespace `ns` through the proxy at `proxy`.
pub async fn get_through(ns: &str, proxy: SocketAddr, fx: &Fixture) -> Result<String, String> {
    const HOST: &str = "api.test.example";
    let mut s = connect_from(ns, proxy).await;
    s.write_all(format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    let head = read_head(&mut s)
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "CONNECT: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let mut tls = tls_client(s, fx.cacert(), HOST, &[b"http/1.1"])
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("GET: {e}"))?;
    let head = read_head(&mut tls).await.map_err(|e| format!("GET: {e}"))?;
    read_body(&mut tls, &head).await;
    let status = head.lines().next().unwrap_or_default().to_owned();
    match status.starts_with("HTTP/1.1 200") {
        true => Ok(status),
        false => Err(status),
    }
}

/// Latencies of `n` sequential [`get_through`] calls, in microseconds; the first failure ends it.
pub async fn latencies(
    ns: &str,
    proxy: SocketAddr,
    fx: &Fixture,
    n: usize,
) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        get_through(ns, proxy, fx)
            .await
            .map_err(|e| format!("request {i}: {e}"))?;
        out.push(t.elapsed().as_micros() as u64);
    }
    Ok(out)
}

/// The `p`th percentile (0..=100) of `samples`, nearest rank.
pub fn percentile(samples: &[u64], p: f64) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The storm client: opens `count` TCP connections one after the other, sends nothing, and
/// notes when each is closed by the other side (a watcher thread, from the moment each is
/// connected until `wave` seconds after the last one); prints that as one JSON line; then keeps connecting from four threads (each
/// new connection waited on until closed) until its stdin closes, and prints how many of those
/// the other side closed.
const STORM_PY: &str = r#"
import json, resource, selectors, socket, sys, threading, time
# Thousands of sockets: as many as this process may have.
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
host, port, count, wave = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sel, lock = selectors.DefaultSelector(), threading.Lock()
open_at, closed, stats = {}, [], {"failed": 0, "answered": 0, "slowest_connect": 0.0}
connected, deadline = threading.Event(), [0.0]
# A watcher of its own: a connect the kernel delays (the listener's queue full) must not delay
# noticing the closes of the connections already made.
def watch():
    while not (connected.is_set() and (not open_at or time.monotonic() > deadline[0])):
        if not open_at:
            time.sleep(0.01)
            continue
        events = sel.select(timeout=0.01)
        now = time.monotonic()
        with lock:
            for key, _ in events:
                s = key.fileobj
                if s not in open_at:
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    stats["answered"] += data.startswith(b"HTTP/1.1 503 ")
                    continue
                closed.append(now - open_at.pop(s))
                sel.unregister(s)
                s.close()
watcher = threading.Thread(target=watch)
watcher.start()
for _ in range(count):
    s = socket.socket()
    s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, port))
    except OSError:
        stats["failed"] += 1
        s.close()
        continue
    now = time.monotonic()
    stats["slowest_connect"] = max(stats["slowest_connect"], now - t)
    s.setblocking(False)
    with lock:
        open_at[s] = now
        sel.register(s, selectors.EVENT_READ)
deadline[0] = time.monotonic() + wave
connected.set()
watcher.join()
print(json.dumps({"opened": len(open_at) + len(closed), "failed": stats["failed"],
                  "closed": closed, "answered_503": stats["answered"], "held": len(open_at),
                  "slowest_connect": stats["slowest_connect"]}), flush=True)
stop, made = threading.Event(), [0] * 4
def storm(i):
    while not stop.is_set():
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError:
            continue
        with s:
            s.settimeout(2)
            try:
                while s.recv(4096):
                    pass
                made[i] += 1
            except ConnectionResetError:
                made[i] += 1
            except OSError:
                pass
threads = [threading.Thread(target=storm, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
print(json.dumps({"storm": sum(made)}), flush=True)
"#;

/// What the first wave of a storm saw.
#[derive(Debug, Clone)]
pub struct Wave {
    /// Connections established (the rest failed to connect).
    pub opened: usize,
    pub failed: usize,
    /// Seconds from connect to the proxy's close, one per connection closed within the wave.
    pub closed: Vec<f64>,
    /// Closed connections that got a 503 first.
    pub answered_503: usize,
    /// Connections still open at the end of the wave.
    pub held: usize,
    /// The longest a connect took, in seconds (a full accept queue shows here).
    pub slowest_connect: f64,
}

/// A storm from namespace `ns` against `to` (see [`STORM_PY`]); killed on drop.
#[derive(Debug)]
pub struct Storm {
    child: Tied,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Storm {
    pub fn start(ns: &str, to: SocketAddr, count: usize, wave: Duration) -> Self {
        let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
        let mut cmd = Command::new("python3");
        cmd.args(["-c", STORM_PY])
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(count.to_string())
            .arg(wave.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = spawn_tied(cmd, Some(netns.as_fd())).expect("start the storm");
        let stdin = child.child().stdin.take();
        let stdout = BufReader::new(child.child().stdout.take().expect("storm stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("storm output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("storm said {line:?}: {e}"))
    }

    /// Blocks until the first wave is over (call it from a blocking thread).
    pub fn first_wave(&mut self) -> Wave {
        let v = self.line();
        let n = |k: &str| v[k].as_u64().expect("count") as usize;
        Wave {
            opened: n("opened"),
            failed: n("failed"),
            closed: v["closed"]
                .as_array()
                .expect("closed")
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect(),
            answered_503: n("answered_503"),
            held: n("held"),
            slowest_connect: v["slowest_connect"].as_f64().unwrap_or(0.0),
        }
    }

    /// Ends the continuous storm; returns how many connections it made after the first wave.
    pub fn stop(mut self) -> u64 {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let v = self.line();
        self.child.stop(Duration::from_secs(2));
        v["storm"].as_u64().unwrap_or(0)
    }
}

/// Open fds of this process (the gateway, in these tests).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
