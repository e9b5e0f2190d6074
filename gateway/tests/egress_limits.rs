//! The egress proxy under load and abuse: a hundred megabytes each way arrive byte-exact, the
//! connection limit holds against slowloris clients and against a thousand concurrent
//! connections.
//!
//! Real parts, as root: real network namespaces and veths, a fake HTTPS upstream in its own
//! netns, the proxy on the host side of a "client" netns that plays the sandbox, and real
//! clients (curl, and raw rustls/TCP clients made inside the client netns).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::audit::{AuditQueue, Auditor};
use gateway::egress::EgressLimits;
use gateway::egress::audit::{Deny, EgressAudit, FLOOD_PER_SECOND};
use gateway::store::{SqliteStore, Store};
use sha2::{Digest, Sha256};
use testkit::egress::*;
use tokio::io::AsyncWriteExt;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn hundred_megabytes_each_way_byte_exact() {
    testkit::privileged("hundred_megabytes_each_way_byte_exact", 4, || async {
        let fx = Fixture::new(limits()).await;
        const N: usize = 100 * 1024 * 1024;
        // Upload: streamed through, checksum computed by the upstream.
        let up = fx.dir.path().join("up.bin");
        let data = testkit::upstream::pattern(7, N);
        std::fs::write(&up, &data).unwrap();
        let want = format!("{N} {}", sha256_hex(&data));
        for v in ["--http1.1", "--http2"] {
            let out = fx.curl(&[
                v,
                "--data-binary",
                &format!("@{}", up.display()),
                "https://api.test.example/sum",
            ]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert_eq!(out.text(), want, "{v}");
        }
        drop(data);
        // Download with a credential injected: every byte goes through the scrubber.
        let down = fx.dir.path().join("down.bin");
        let t = Instant::now();
        let out = fx.curl(&[
            "-H",
            &format!("Authorization: Bearer {}", fx.token_ph()),
            "-o",
            &down.to_string_lossy(),
            &format!("https://api.test.example/big?n={N}"),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        eprintln!(
            "100 MB scrubbed download through the proxy (debug build): {:?}",
            t.elapsed()
        );
        let got = std::fs::read(&down).unwrap();
        assert_eq!(got.len(), N);
        assert!(got == testkit::upstream::pattern(0, N), "download differs");
    });
}

#[test]
fn connection_limit_and_slowloris() {
    testkit::privileged("connection_limit_and_slowloris", 4, || async {
        let fx = Fixture::new(EgressLimits {
            max_connections: 6,
            ..limits()
        })
        .await;
        // Six tunnels held open: the limit.
        let mut held = Vec::new();
        for _ in 0..6 {
            let (s, head) = connect_tunnel(&fx, "api.test.example:443").await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            held.push(s);
        }
        let (_s, head) = connect_tunnel(&fx, "api.test.example:443").await;
        assert!(head.starts_with("HTTP/1.1 503"), "past the limit: {head}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok = fx.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://api.test.example/",
        ]);
        assert_eq!(
            ok.text(),
            "200",
            "after the held connections closed: {}",
            ok.stderr
        );

        // Slowloris: a CONNECT head dribbled byte by byte is cut off at the header timeout (2 s),
        // while a normal client is served meanwhile.
        let mut slow = connect_from(&fx.net.client_ns, fx.proxy.local_addr()).await;
        let started = Instant::now();
        let dribble = tokio::spawn(async move {
            for b in
                b"CONNECT api.test.example:443 HTTP/1.1\r\nHost: api.test.example:443\r\nX-Slow: "
                    .iter()
                    .chain([b'a'; 200].iter())
            {
                if slow.write_all(&[*b]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let normal = fx.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://api.test.example/",
        ]);
        assert_eq!(normal.text(), "200");
        let cut_after = dribble.await.unwrap();
        assert!(
            cut_after < Duration::from_secs(8),
            "slowloris lasted {cut_after:?}"
        );
        // The same inside a tunnel: a request head dribbled after the TLS handshake.
        let mut t = h1_tunnel(&fx, "api.test.example").await;
        let started = Instant::now();
        let mut cut = false;
        for b in b"GET / HTTP/1.1\r\nHost: api.test.example\r\nX-Slow: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if t.write_all(&[*b]).await.is_err() || t.flush().await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cut, "inner slowloris not cut off");
        assert!(started.elapsed() < Duration::from_secs(8));

        let events = fx.audit().await;
        assert!(
            denied_with(&events, "", "too many connections"),
            "{events:#?}"
        );
    });
}

#[test]
fn a_thousand_concurrent_connections_stay_within_the_limit() {
    testkit::privileged(
        "a_thousand_concurrent_connections_stay_within_the_limit",
        4,
        || async {
            const CLIENTS: usize = 1000;
            let limits = EgressLimits::default();
            let limit = limits.max_connections;
            assert!(limit < CLIENTS);
            let fx = Fixture::new(limits).await;
            // All connections open at once from the sandbox's address, then all ask for a tunnel.
            let mut streams = Vec::with_capacity(CLIENTS);
            for _ in 0..CLIENTS {
                streams.push(connect_from(&fx.net.client_ns, fx.proxy.local_addr()).await);
            }
            let heads = futures_util::future::join_all(streams.iter_mut().map(|s| async move {
                let authority = "api.test.example:443";
                s.write_all(
                    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
                )
                .await
                .ok();
                tokio::time::timeout(Duration::from_secs(20), read_head(s))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            }))
            .await;
            let ok = heads
                .iter()
                .filter(|h| h.starts_with("HTTP/1.1 200"))
                .count();
            let refused = heads
                .iter()
                .filter(|h| h.starts_with("HTTP/1.1 503"))
                .count();
            eprintln!(
                "{CLIENTS} concurrent: {ok} tunnels, {refused} refused with 503 (limit {limit})"
            );
            assert_eq!(ok, limit, "tunnels past the limit");
            assert_eq!(ok + refused, CLIENTS, "every connection got a clear answer");
            drop(streams);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = fx.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://api.test.example/",
            ]);
            assert_eq!(
                after.text(),
                "200",
                "the proxy still serves: {}",
                after.stderr
            );
            let events = fx.audit().await;
            assert!(
                denied_with(&events, "", "too many connections"),
                "refusals audited"
            );
        },
    );
}

/// The egress audit's flood limit is per sandbox: one sandbox's storm of refusals neither
/// silences another's nor goes uncounted (a real SQLite audit table).
#[tokio::test]
async fn one_sandbox_flood_neither_silences_another_nor_goes_uncounted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let shared = EgressAudit::new(AuditQueue::new(Auditor::new(store.clone(), "test")));
    let (a, b) = (shared.for_sandbox(), shared.for_sandbox());
    let storm = FLOOD_PER_SECOND + 150;
    for _ in 0..storm {
        a.denied("a", "x", &Deny::TooManyConnections, "", true);
    }
    b.denied("b", "x", &Deny::TooManyConnections, "", true);
    a.report_suppressed("a");
    shared.flush().await;
    let events = store.audit_recent(10_000).unwrap();
    let of = |who: &str| {
        let tag = format!("sandbox={who} ");
        events
            .iter()
            .filter(|e| e.detail.starts_with(&tag))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("b").len(), 1, "B's refusal is recorded during A's flood");
    let rows = of("a");
    assert_eq!(
        rows.len() as u32,
        FLOOD_PER_SECOND + 1,
        "A's: the limit plus a summary"
    );
    assert!(
        rows.iter().any(|e| e.detail.ends_with("suppressed=150")),
        "the rest are counted"
    );
}
