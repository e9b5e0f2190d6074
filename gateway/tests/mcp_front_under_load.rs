//! The official Python SDK is served while the front is under abuse: 2,000 idle connections
//! (from 50 loopback addresses, reconnecting as the front closes them), clients trickling
//! request heads and bodies, and a flood of random bad tokens, all from a separate attacker
//! process. The SDK must complete initialize, tools/list and a call in under 5 s each time;
//! the daemon's descriptors stay within its connection cap and the database grows by the audit
//! budget, not by the flood. The figures are printed (`--nocapture`).

use testkit::mcp as mcp_support;

use std::time::{Duration, Instant};

use gateway::mcp::front::{ConnLimits, FrontLimits};
use mcp_support::{Gw, venv};
use serde_json::{Value, json};

/// The attacker: idle connections, slow heads, slow bodies and a bad-token flood for
/// `duration` seconds; prints its counts as one JSON line.
const ATTACKER: &str = r#"
import asyncio, json, random, resource, string, sys, time
host, port, token, endpoint, duration, n_idle, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
end = time.monotonic() + duration
st = dict(idle_open=0, idle_max_open=0, idle_connects=0, idle_closed_by_server=0, connect_errors=0,
          slow_heads_closed=0, slow_bodies_408=0, flood_requests=0, flood_401=0)
def rnd(n): return "".join(random.choice(string.ascii_lowercase) for _ in range(n))

async def idle(i):
    src = ("127.1.0.%d" % (1 + i // 40), 0)
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=src)
        except OSError:
            st["connect_errors"] += 1; await asyncio.sleep(0.2); continue
        st["idle_connects"] += 1; st["idle_open"] += 1
        st["idle_max_open"] = max(st["idle_max_open"], st["idle_open"])
        try:
            left = end - time.monotonic()
            if left > 0 and await asyncio.wait_for(r.read(1), left) == b"":
                st["idle_closed_by_server"] += 1
        except (asyncio.TimeoutError, OSError):
            pass
        st["idle_open"] -= 1; w.close()

async def slow_head(i):
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=("127.2.0.%d" % (1 + i), 0))
            head = "POST /mcp/%s HTTP/1.1\r\nHost: %s:%d\r\nX-%s: %s" % (endpoint, host, port, rnd(6), rnd(5000))
            for c in head:
                w.write(c.encode()); await w.drain()
                await asyncio.sleep(0.5)
                if r.at_eof() or time.monotonic() > end: break
                try:
                    if await asyncio.wait_for(r.read(1), 0.001) == b"": break
                except asyncio.TimeoutError: pass
            st["slow_heads_closed"] += 1
        except OSError:
            st["connect_errors"] += 1; await asyncio.sleep(0.2)

async def slow_body(i):
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=("127.3.0.%d" % (1 + i), 0))
            w.write(("POST /mcp/%s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{" % (endpoint, host, port, token)).encode())
            await w.drain()
            async def dribble():
                while True:
                    await asyncio.sleep(0.5); w.write(b" "); await w.drain()
            d = asyncio.ensure_future(dribble())
            line = await r.readline()
            d.cancel()
            if line.startswith(b"HTTP/1.1 408"): st["slow_bodies_408"] += 1
            w.close()
        except OSError:
            st["connect_errors"] += 1; await asyncio.sleep(0.2)

async def flood(i):
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=("127.4.0.%d" % (1 + i), 0))
            while time.monotonic() < end:
                w.write(("POST /mcp/%s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s%s\r\n"
                         "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" % (endpoint, host, port, prefix, rnd(43))).encode())
                await w.drain()
                status = await r.readline()
                if status == b"":
                    break
                length = 0
                while True:
                    h = await r.readline()
                    if h in (b"\r\n", b""): break
                    if h.lower().startswith(b"content-length:"): length = int(h.split(b":")[1])
                await r.readexactly(length)
                st["flood_requests"] += 1
                if status.startswith(b"HTTP/1.1 401"): st["flood_401"] += 1
            w.close()
        except (OSError, asyncio.IncompleteReadError):
            st["connect_errors"] += 1; await asyncio.sleep(0.05)

async def main():
    tasks = [idle(i) for i in range(n_idle)] + [slow_head(i) for i in range(50)] \
          + [slow_body(i) for i in range(50)] + [flood(i) for i in range(8)]
    await asyncio.gather(*tasks)
    print(json.dumps(st), flush=True)

asyncio.run(main())
"#;

/// The SDK's whole session, timed from before connecting to the call's answer.
const SDK: &str = r#"
import asyncio, json, sys, time
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, token):
    start = time.monotonic()
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer " + token}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                tools = await s.list_tools()
                r = await s.call_tool("time__get_current_time", {"timezone": "UTC"})
                print("DONE", time.monotonic() - start, json.dumps([t.name for t in tools.tools]), r.is_error, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

/// Seconds the SDK took, or a failure with its output.
async fn sdk_session(url: &str, token: &str) -> f64 {
    let out = tokio::process::Command::new(venv().join("python"))
        .arg("-c")
        .arg(SDK)
        .args([url, token])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the SDK finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DONE "))
        .unwrap_or_else(|| {
            panic!(
                "the SDK failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        done.contains(r#"["time__get_current_time"] False"#),
        "{done}"
    );
    done.split(' ').next().unwrap().parse().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Bytes in the store's files (database and WAL).
fn store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Raises this process's soft descriptor limit to its hard one (children inherit it).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

const IDLE: usize = 2000;
const MAX_CONNECTIONS: usize = 4096;
const AUDIT_PER_SECOND: u32 = 20;
const ATTACK_SECONDS: u64 = 24;

#[test]
fn the_python_sdk_is_served_in_under_5_s_while_the_front_is_under_abuse() {
    testkit::privileged(
        "the_python_sdk_is_served_in_under_5_s_while_the_front_is_under_abuse",
        2,
        || async {
            let nofile = raise_nofile();
            assert!(
                nofile as usize > MAX_CONNECTIONS + 512,
                "RLIMIT_NOFILE {nofile}"
            );
            let time = json!({
                "name": "time", "version": "1",
                "command": [venv().join("mcp-server-time").to_str().unwrap(), "--local-timezone", "UTC"],
            });
            let limits = FrontLimits {
                body_read: Duration::from_secs(8),
                unauthenticated_audit_per_second: AUDIT_PER_SECOND,
                connections: ConnLimits {
                    // The default: idle connections are held as long as a real deployment
                    // holds them.
                    header_read: ConnLimits::default().header_read,
                    max_connections: MAX_CONNECTIONS,
                    max_connections_per_peer: 64,
                    ..ConnLimits::default()
                },
                ..FrontLimits::default()
            };
            let gw = Gw::with_limits(
                vec![("time", time)],
                vec![("agents", vec![("time", vec!["get_current_time"])])],
                &[],
                limits,
            )
            .await;
            let (_, token) = gw.token("agents");
            let (_, attacker_token) = gw.token("agents");
            // Warm: the server started, the store's pages in place.
            let quiet = sdk_session(&gw.url("agents"), &token).await;
            gw.front.flush_audit().await;
            let fds_before = open_fds();
            let bytes_before = store_bytes(&gw.state_dir());
            let rows_before = gw.store.audit_recent(1_000_000).unwrap().len();

            let attacker = tokio::process::Command::new(venv().join("python"))
                .arg("-c")
                .arg(ATTACKER)
                .args([
                    "127.0.0.1",
                    &gw.addr.port().to_string(),
                    &attacker_token,
                    "agents",
                    &ATTACK_SECONDS.to_string(),
                    &IDLE.to_string(),
                    gateway::tokens::PREFIX,
                ])
                .kill_on_drop(true)
                .output();
            let attacker = tokio::spawn(attacker);
            // Descriptors and connections sampled all along.
            let front = gw.front.clone();
            let sampler = tokio::spawn(async move {
                let (mut fds, mut conns) = (0, 0);
                let end = Instant::now() + Duration::from_secs(ATTACK_SECONDS);
                while Instant::now() < end {
                    fds = fds.max(open_fds());
                    conns = conns.max(front.open_connections());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (fds, conns)
            });
            // Once the idle connections are up, the SDK, three times over the attack.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut sessions = Vec::new();
            for _ in 0..3 {
                sessions.push(sdk_session(&gw.url("agents"), &token).await);
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let out = attacker.await.unwrap().unwrap();
            let (max_fds, max_conns) = sampler.await.unwrap();
            let stats: Value = serde_json::from_slice(
                out.stdout
                    .split(|b| *b == b'\n')
                    .find(|l| l.starts_with(b"{"))
                    .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr))),
            )
            .unwrap();
            // The summaries of the last windows; every connection of the attack gone.
            // Every connection of the attack gone within the header timeout (an idle one is
            // closed by it at the latest) and a margin for a loaded machine.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let gone_by =
                Instant::now() + ConnLimits::default().header_read + Duration::from_secs(5);
            while gw.front.open_connections() > 0 && Instant::now() < gone_by {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let fds_after = open_fds();
            let conns_after = gw.front.open_connections();
            gw.front.flush_audit().await;
            let growth = store_bytes(&gw.state_dir()).saturating_sub(bytes_before);
            let audit = gw.store.audit_recent(1_000_000).unwrap();
            let rows = audit.len() - rows_before;
            let denied = audit[..rows]
                .iter()
                .filter(|e| e.action == "mcp.denied")
                .count();
            println!(
                "FIGURES sdk_quiet_s={quiet:.2} sdk_under_attack_s={sessions:.2?} \
                 front_max_open_connections={max_conns} fds_before={fds_before} \
                 fds_max={max_fds} fds_after={fds_after} store_growth_bytes={growth} audit_rows_added={rows} \
                 mcp_denied_rows={denied} attacker={stats}"
            );

            let slowest = sessions.iter().copied().fold(0.0, f64::max);
            assert!(slowest < 5.0, "the SDK took {sessions:?} s under attack");
            // The attacker held all of them; the front, sampled every 100 ms, at least three
            // quarters at once: on a loaded machine the attacker's ramp can outlast the header
            // timeout (10 s), which then closes the first before the last are open (seen:
            // 1,793 of 2,000 at load average 17).
            assert!(
                stats["idle_max_open"].as_u64().unwrap() >= IDLE as u64
                    && max_conns >= IDLE * 3 / 4,
                "the attack did not hold {IDLE} idle connections: {stats} (front: {max_conns})"
            );
            assert!(stats["idle_closed_by_server"].as_u64().unwrap() >= IDLE as u64);
            assert!(stats["slow_heads_closed"].as_u64().unwrap() > 0, "{stats}");
            assert!(stats["slow_bodies_408"].as_u64().unwrap() > 0, "{stats}");
            let flood = stats["flood_requests"].as_u64().unwrap();
            assert_eq!(stats["flood_401"].as_u64().unwrap(), flood);
            // Descriptors: the connection cap plus what the daemon held before.
            assert!(
                max_fds <= fds_before + MAX_CONNECTIONS,
                "{max_fds} descriptors open (before: {fds_before}, cap {MAX_CONNECTIONS})"
            );
            assert_eq!(conns_after, 0, "connections left open after the attack");
            assert!(
                fds_after <= fds_before + 8,
                "{fds_after} descriptors open after the attack (before: {fds_before})"
            );
            // The trail grows by the budget (and the authenticated slow bodies' 408s), never
            // by a row per flooded request.
            let budget = AUDIT_PER_SECOND as usize * (ATTACK_SECONDS as usize + 5);
            let slow_bodies = stats["slow_bodies_408"].as_u64().unwrap() as usize;
            assert!(
                denied <= budget + slow_bodies,
                "{denied} mcp.denied rows for {flood} flooded requests"
            );
            assert!(
                growth < 2 << 20,
                "the store grew by {growth} bytes for {flood} flooded requests"
            );
        },
    );
}
