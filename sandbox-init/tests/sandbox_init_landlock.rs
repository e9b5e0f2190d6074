//! Landlock under the real `gigmcp-sandbox-init`: writes only to /tmp, the data dir and devices,
//! TCP connect only to the proxy port and no bind, TLS and DNS ports only with transparent mode,
//! and signals and abstract unix sockets scoped to the sandbox. Needs root.
//!
//! Most checks come with a control: the same probe without init, showing that the operation
//! works there and so that the test would notice if init stopped blocking it. How init is run
//! (directly as root, or in bwrap as uid 65534) is in `testkit::init`.

use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener};

use testkit::init::*;

#[test]
fn landlock_allows_writes_only_to_tmp_data_and_devices() {
    if !testkit::require_root("landlock_allows_writes_only_to_tmp_data_and_devices") {
        return;
    }
    let data = scratch(NOBODY);
    let var_tmp = scratch(NOBODY);
    let binds = Binds {
        data: Some(data.path()),
        var_tmp: Some(var_tmp.path()),
    };
    fn write(path: &str) -> [&str; 3] {
        [PROBE_IN_SANDBOX, "write", path]
    }

    // Control: without init, the mounts and file modes allow all of these.
    for path in ["/var/tmp/control", "/data/control"] {
        let out = sandboxed(&binds, &write(path));
        assert_eq!(assert_ran(&out), "write ok\n", "{path}");
    }

    for (path, want) in [
        ("/tmp/x", "write ok\n"),
        ("/data/x", "write ok\n"),
        ("/dev/null", "write ok\n"),
        ("/dev/full", "write ok\n"),
        ("/var/tmp/x", "write errno=13\n"),
        ("/dev/urandom", "write errno=13\n"),
    ] {
        let out = sandboxed_init(&binds, 3128, &["--data"], &write(path));
        assert_eq!(assert_ran(&out), want, "{path}");
    }
    assert!(data.path().join("x").exists());
    assert!(!var_tmp.path().join("x").exists());

    // Without --data, /data is as read-only as the rest.
    let out = sandboxed_init(&binds, 3128, &[], &write("/data/y"));
    assert_eq!(assert_ran(&out), "write errno=13\n");
    assert!(!data.path().join("y").exists());
}

#[test]
fn landlock_allows_tcp_connect_only_to_the_proxy_port_and_no_bind() {
    if !testkit::require_root("landlock_allows_tcp_connect_only_to_the_proxy_port_and_no_bind") {
        return;
    }
    let proxy = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let proxy_port = proxy.local_addr().expect("addr").port();
    let other_port = other.local_addr().expect("addr").port().to_string();
    let binds = Binds::default();

    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "connect", &other_port]);
    assert_eq!(assert_ran(&control), "connect ok\n");
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "bind", "0"]);
    assert_eq!(assert_ran(&control), "bind ok\n");

    let out = sandboxed_init(
        &binds,
        proxy_port,
        &[],
        &[PROBE_IN_SANDBOX, "connect", &proxy_port.to_string()],
    );
    assert_eq!(assert_ran(&out), "connect ok\n");
    let out = sandboxed_init(
        &binds,
        proxy_port,
        &[],
        &[PROBE_IN_SANDBOX, "connect", &other_port],
    );
    assert_eq!(assert_ran(&out), "connect errno=13\n");
    for port in ["0", &proxy_port.to_string()] {
        let out = sandboxed_init(&binds, proxy_port, &[], &[PROBE_IN_SANDBOX, "bind", port]);
        assert_eq!(assert_ran(&out), "bind errno=13\n", "bind {port}");
    }
}

#[test]
fn landlock_allows_tls_and_dns_ports_only_with_transparent() {
    if !testkit::require_root("landlock_allows_tls_and_dns_ports_only_with_transparent") {
        return;
    }
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other_port = other.local_addr().expect("addr").port().to_string();
    let binds = Binds::default();
    for port in ["443", "53"] {
        // Landlock refuses with EACCES; past it the host's loopback answers (a listener there,
        // or ECONNREFUSED without one).
        let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "connect", port]);
        assert_eq!(assert_ran(&out), "connect errno=13\n", "without: {port}");
        let out = sandboxed_init(
            &binds,
            3128,
            &["--transparent"],
            &[PROBE_IN_SANDBOX, "connect", port],
        );
        let got = assert_ran(&out);
        assert!(
            got == "connect ok\n" || got == "connect errno=111\n",
            "with --transparent: {port}: {got}"
        );
    }
    // Transparent mode opens those two ports and nothing else; bind stays closed (port 0:
    // ports below 1024 would be refused to uid 65534 anyway).
    let out = sandboxed_init(
        &binds,
        3128,
        &["--transparent"],
        &[PROBE_IN_SANDBOX, "connect", &other_port],
    );
    assert_eq!(assert_ran(&out), "connect errno=13\n");
    let out = sandboxed_init(
        &binds,
        3128,
        &["--transparent"],
        &[PROBE_IN_SANDBOX, "bind", "0"],
    );
    assert_eq!(assert_ran(&out), "bind errno=13\n");
}

#[test]
fn landlock_scopes_signals_and_abstract_unix_sockets() {
    if !testkit::require_root("landlock_scopes_signals_and_abstract_unix_sockets") {
        return;
    }
    let binds = Binds::default();
    // pid 1 of the sandbox is bwrap, outside init's landlock domain.
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "kill", "1"]);
    assert_eq!(assert_ran(&control), "kill ok\n");
    let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "kill", "1"]);
    assert_eq!(assert_ran(&out), "kill errno=1\n");

    // The sandbox shares the test's network namespace, so it could reach this socket.
    let name = format!("gigmcp-init-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let _listener = UnixListener::bind_addr(&addr).expect("bind abstract socket");
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "abstract", &name]);
    assert_eq!(assert_ran(&control), "abstract ok\n");
    let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "abstract", &name]);
    assert_eq!(assert_ran(&out), "abstract errno=1\n");
}
