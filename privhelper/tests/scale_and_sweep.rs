//! 200 sandboxes created and destroyed concurrently; then the helper is SIGKILLed with 20 live
//! sandboxes and restarted: its start-up sweep must leave no netns, veth, nftables element,
//! cgroup or process of ours. Privileged: needs root.

use std::time::{Duration, Instant};

use testkit::helper::{Harness, HostCount};

async fn settle_to(h: &Harness, expected: &HostCount) -> HostCount {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = h.count_host();
        if &now == expected || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn two_hundred_concurrent_sandboxes_then_a_crash_leave_nothing() {
    testkit::privileged(
        "two_hundred_concurrent_sandboxes_then_a_crash_leave_nothing",
        2,
        || async {
            let mut h = Harness::start(0).await;
            let before = h.count_host();
            let rootfs = h.attack_rootfs("sleeper");
            let spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]);

            // 200 created concurrently (in waves of 50 in flight), all alive at once, then destroyed
            // concurrently the same way.
            let client = h.client().await;
            let mut live = Vec::new();
            for wave in 0..4 {
                let tasks: Vec<_> = (0..50)
                    .map(|_| {
                        let client = client.clone();
                        let spec = spec.clone();
                        tokio::spawn(async move { client.create_sandbox(&spec).await })
                    })
                    .collect();
                for t in tasks {
                    // Keep every fd: a server whose stdout reader is gone dies of SIGPIPE.
                    let (info, stdin, stdout, stderr, pidfd, _sockets) = t
                        .await
                        .unwrap()
                        .unwrap_or_else(|e| panic!("wave {wave}: {e:?}"));
                    live.push((info, (stdin, stdout, stderr, pidfd)));
                }
            }
            assert_eq!(client.list_sandboxes().await.unwrap().len(), 200);
            let peak = h.count_host();
            assert_eq!(peak.netns, before.netns + 200, "{peak:?}");
            assert_eq!(peak.links, before.links + 200, "{peak:?}");
            assert_eq!(peak.elements, before.elements + 400, "{peak:?}");
            let mut slots: Vec<u32> = live.iter().map(|(i, _)| i.slot).collect();
            slots.sort_unstable();
            slots.dedup();
            assert_eq!(slots.len(), 200, "two sandboxes shared a slot");
            // The system bus allows 128 pending calls per connection: 50 in flight at a time.
            while !live.is_empty() {
                let wave: Vec<_> = live.drain(..live.len().min(50)).collect();
                let tasks: Vec<_> = wave
                    .into_iter()
                    .map(|(info, fds)| {
                        let client = client.clone();
                        tokio::spawn(async move {
                            let r = client.destroy_sandbox(&info.id).await;
                            drop(fds);
                            r
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().expect("destroy");
                }
            }
            assert_eq!(
                settle_to(&h, &before).await,
                before,
                "after 200 create/destroy"
            );

            // 20 live sandboxes, half in transparent mode, then the helper dies without any chance to
            // clean up. The gateway keeps the handed-over sockets through the restart.
            let mut fds = Vec::new();
            let mut held_sockets = Vec::new();
            for n in 0..20 {
                let mut spec = spec.clone();
                spec.transparent = n % 2 == 0;
                let (info, i, o, e, p, sockets) = client.create_sandbox(&spec).await.unwrap();
                assert_eq!(sockets.len(), if spec.transparent { 4 } else { 1 });
                held_sockets.push(sockets);
                fds.push((info, i, o, e, p));
            }
            let with_20 = h.count_host();
            assert_eq!(with_20.netns, before.netns + 20);
            assert_eq!(with_20.elements, before.elements + 10 * 2 + 10 * 5);
            assert!(with_20.processes >= 20, "{with_20:?}");
            h.kill_helper();
            drop(fds);
            h.start_helper().await;
            assert_eq!(
                settle_to(&h, &before).await,
                before,
                "after SIGKILL and restart"
            );
            let client = h.client().await;
            assert!(client.list_sandboxes().await.unwrap().is_empty());
            // And the restarted helper works, transparent mode included, in a slot whose old sockets
            // are still open.
            let mut transparent = spec.clone();
            transparent.transparent = true;
            let (info, _stdin, _stdout, _stderr, _pidfd, sockets) =
                client.create_sandbox(&transparent).await.unwrap();
            assert_eq!(info.slot, 0);
            assert_eq!(sockets.len(), 4);
            client.destroy_sandbox(&info.id).await.unwrap();
            drop(held_sockets);
        },
    );
}
