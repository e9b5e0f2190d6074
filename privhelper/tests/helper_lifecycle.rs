//! The helper as the gateway sees it: create a sandbox, talk to the server over the handed-over
//! fds, destroy it, and nothing is left. Privileged: needs root.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use testkit::helper::Harness;

async fn wait_until_clean(h: &Harness, expected: &testkit::helper::HostCount) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = h.count_host();
        if &now == expected || Instant::now() > deadline {
            assert_eq!(&now, expected, "resources left behind");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn create_talk_destroy_leaves_nothing() {
    testkit::privileged("create_talk_destroy_leaves_nothing", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("echo");
        let client = h.client().await;
        let (info, stdin, stdout, _stderr, pidfd, sockets) = client
            .create_sandbox(&h.spec(&rootfs, &["/bin/gigmcp-attack", "echo-stdio"]))
            .await
            .expect("create");
        assert_eq!(info.host_addr, "10.232.0.1");
        assert_eq!(info.sandbox_addr, "10.232.0.2");
        let listeners = privhelper_api::Listeners::from_reply(sockets).expect("the proxy's");
        assert!(
            listeners.transparent.is_none(),
            "not transparent: the proxy listener alone handed over"
        );
        let during = h.count_host();
        assert_eq!(during.netns, before.netns + 1, "{during:?}");
        assert_eq!(during.links, before.links + 1, "{during:?}");
        assert_eq!(during.elements, before.elements + 2, "{during:?}");
        assert!(during.cgroups > before.cgroups, "{during:?}");
        assert_eq!(client.list_sandboxes().await.unwrap(), vec![info.clone()]);

        // The server speaks over the handed-over stdio.
        let mut stdin = std::fs::File::from(std::os::fd::OwnedFd::from(stdin));
        let mut stdout = BufReader::new(std::fs::File::from(std::os::fd::OwnedFd::from(stdout)));
        for i in 0..3 {
            writeln!(stdin, "ping {i}").unwrap();
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert_eq!(line, format!("echo: ping {i}\n"));
        }
        drop(pidfd);

        client.destroy_sandbox(&info.id).await.expect("destroy");
        assert!(client.list_sandboxes().await.unwrap().is_empty());
        wait_until_clean(&h, &before).await;
        let err = client.destroy_sandbox(&info.id).await.unwrap_err();
        assert!(
            matches!(err, privhelper_api::HelperError::NotFound(_)),
            "{err:?}"
        );
    });
}

#[test]
fn closing_the_gateway_end_kills_the_sandbox() {
    testkit::privileged("closing_the_gateway_end_kills_the_sandbox", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("sleeper");
        let client = h.client().await;
        // A server that ignores stdin entirely: only the helper can end it.
        let (info, stdin, stdout, stderr, pidfd, _sockets) = client
            .create_sandbox(&h.spec(&rootfs, &["/bin/gigmcp-attack", "ping-sleep", "600"]))
            .await
            .expect("create");
        let mut ready = String::new();
        BufReader::new(std::fs::File::from(std::os::fd::OwnedFd::from(stdout)))
            .read_line(&mut ready)
            .unwrap();
        assert!(ready.contains("ready"), "{ready}");
        drop((stderr, pidfd));
        drop(stdin); // the gateway's end of stdin closes
        wait_until_clean(&h, &before).await;
        assert!(
            client
                .list_sandboxes()
                .await
                .unwrap()
                .iter()
                .all(|s| s.id != info.id),
            "sandbox still listed"
        );
    });
}

#[test]
fn a_server_that_exits_is_cleaned_up() {
    testkit::privileged("a_server_that_exits_is_cleaned_up", 2, || async {
        let h = Harness::start(0).await;
        let before = h.count_host();
        let rootfs = h.attack_rootfs("hello");
        let client = h.client().await;
        let (_info, _stdin, stdout, _stderr, _pidfd, _sockets) = client
            .create_sandbox(&h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]))
            .await
            .expect("create");
        let out = testkit::helper::read_all(stdout, Duration::from_secs(10));
        assert_eq!(String::from_utf8_lossy(&out), "hello from sandbox\n");
        wait_until_clean(&h, &before).await;
    });
}
