//! Sandbox benchmarks (issue "Sandbox core"): cold start, destroy, helper memory.
//!
//! Needs root. Prints its numbers; run with `cargo bench -p privhelper --bench sandbox`.
//! - cold start: CreateSandbox → first byte of a trivial server's stdout, 100 runs, p50/p95,
//!   against a bare `bwrap` run of the same binary in the same process;
//! - destroy: DestroySandbox of a live sandbox, p50/p95;
//! - helper RSS idle and with 200 live sandboxes.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

const RUNS: usize = 100;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn first_byte(fd: OwnedFd) -> Instant {
    let mut file = std::fs::File::from(fd);
    let mut b = [0u8; 1];
    file.read_exact(&mut b).expect("a byte from the server");
    Instant::now()
}

fn main() {
    // In a fresh network namespace, as the privileged tests run (the helper's links are ours).
    testkit::privileged("sandbox bench", 2, bench);
}

async fn bench() {
    let h = testkit::helper::Harness::start(0).await;
    let client = h.client().await;
    let rootfs = h.attack_rootfs("bench");
    let rootfs_path = h.images.join(&rootfs);
    let hello = h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]);
    let sleeper = h.spec(&rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]);
    let idle_rss = h.helper_rss_kib();

    // Cold start through the helper.
    let mut exits = client.receive_sandbox_exited().await.unwrap();
    let mut cold = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let (info, _stdin, stdout, _stderr, _pidfd, _sockets) =
            client.create_sandbox(&hello).await.unwrap();
        let t1 = tokio::task::spawn_blocking(move || first_byte(stdout.into()))
            .await
            .unwrap();
        cold.push(t1 - t0);
        // Wait for the teardown so runs do not overlap.
        while let Some(sig) = exits.next().await {
            if sig.args().unwrap().id == info.id {
                break;
            }
        }
    }

    // An unread signal stream fills up and then stalls the whole connection (zbus applies
    // backpressure), so stop listening before the next phases.
    drop(exits);

    // The same binary under a bare bwrap with the same namespaces, no network or cgroup set-up.
    let mut bare = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let mut child = Command::new("bwrap")
            .args([
                "--unshare-user",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup",
                "--die-with-parent",
                "--ro-bind",
            ])
            .arg(&rootfs_path)
            .args([
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--",
                "/bin/gigmcp-attack",
                "hello",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let t1 = first_byte(child.stdout.take().unwrap().into());
        bare.push(t1 - t0);
        child.wait().unwrap();
    }

    // Destroy of a live sandbox.
    let mut destroy = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (info, _i, stdout, _e, _p, _t) = client.create_sandbox(&sleeper).await.unwrap();
        let _ready = tokio::task::spawn_blocking(move || first_byte(stdout.into()))
            .await
            .unwrap();
        let t0 = Instant::now();
        client.destroy_sandbox(&info.id).await.unwrap();
        destroy.push(t0.elapsed());
    }

    // Memory with 200 live sandboxes.
    let mut live = Vec::new();
    for _ in 0..200 {
        live.push(client.create_sandbox(&sleeper).await.unwrap());
    }
    let busy_rss = h.helper_rss_kib();
    for (info, ..) in &live {
        client.destroy_sandbox(&info.id).await.unwrap();
    }

    let (c50, c95) = (percentile(&mut cold, 0.5), percentile(&mut cold, 0.95));
    let (b50, b95) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.95));
    let (d50, d95) = (
        percentile(&mut destroy, 0.5),
        percentile(&mut destroy, 0.95),
    );
    println!("sandbox cold start (CreateSandbox -> first stdout byte), {RUNS} runs:");
    println!(
        "  gigmcp sandbox: p50 {}  p95 {}   (target p50 <= 50 ms)",
        ms(c50),
        ms(c95)
    );
    println!("  bare bwrap:     p50 {}  p95 {}", ms(b50), ms(b95));
    println!(
        "  ratio p50 sandbox/bare: {:.2}",
        c50.as_secs_f64() / b50.as_secs_f64()
    );
    println!("destroy (DestroySandbox of a live sandbox), {RUNS} runs:");
    println!("  p50 {}  p95 {}   (target p50 <= 20 ms)", ms(d50), ms(d95));
    println!("helper RSS: idle {idle_rss} KiB, with 200 live sandboxes {busy_rss} KiB");
}
