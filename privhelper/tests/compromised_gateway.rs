//! The helper plays against a compromised gateway: every request that would reach host files,
//! host identities or unbounded resources is refused with a named D-Bus error, and nothing is
//! created. Privileged: needs root.

use std::process::Command;

use privhelper_api::{HelperError, SandboxSpec};
use testkit::helper::Harness;
use zbus::DBusError;

fn name_of(e: &HelperError) -> String {
    e.name().to_string()
}

async fn refused(h: &Harness, spec: &SandboxSpec, expected: &str) -> String {
    let before = h.count_host();
    let client = h.client().await;
    let err = match client.create_sandbox(spec).await {
        Ok((info, ..)) => panic!("accepted: {spec:?} → {info:?}"),
        Err(e) => e,
    };
    assert_eq!(
        name_of(&err),
        format!("org.gigmcp.PrivHelper1.Error.{expected}"),
        "{err:?}"
    );
    assert_eq!(
        h.count_host(),
        before,
        "a refused request created something"
    );
    assert!(client.list_sandboxes().await.unwrap().is_empty());
    format!("{err:?}")
}

#[test]
fn hostile_rootfs_paths_are_refused() {
    testkit::privileged("hostile_rootfs_paths_are_refused", 2, || async {
        let h = Harness::start(0).await;
        let good = h.attack_rootfs("good");
        // A symlink inside the images dir pointing at /etc, and one to a real image.
        std::os::unix::fs::symlink("/etc", h.images.join("etc-link")).unwrap();
        std::os::unix::fs::symlink(h.images.join(&good), h.images.join("good-link")).unwrap();
        std::fs::create_dir_all(h.images.join("nested")).unwrap();
        std::os::unix::fs::symlink("/", h.images.join("nested/root")).unwrap();
        let argv = ["/bin/gigmcp-attack", "hello"];
        let images = h.images.display().to_string();
        for rootfs in [
            "/".to_owned(),
            "/etc".to_owned(),
            "etc-link".to_owned(),
            "good-link".to_owned(),
            "nested/root".to_owned(),
            "../../../../etc".to_owned(),
            format!("{good}/../../.."),
            format!("{images}/../images/{good}"),
            format!("{images}/etc-link"),
            images.clone(),
            String::new(),
            "does-not-exist".to_owned(),
        ] {
            let msg = refused(&h, &h.spec(&rootfs, &argv), "RootfsOutsideImages").await;
            assert!(msg.contains("rootfs"), "{msg}");
        }
        // Sanity: the same request with the real image is accepted.
        let client = h.client().await;
        let (info, ..) = client.create_sandbox(&h.spec(&good, &argv)).await.unwrap();
        let _ = client.destroy_sandbox(&info.id).await;
    });
}

#[test]
fn incomplete_rootfs_is_refused_by_name() {
    testkit::privileged("incomplete_rootfs_is_refused_by_name", 2, || async {
        let h = Harness::start(0).await;
        let name = h.attack_rootfs("noproc");
        std::fs::remove_dir(h.images.join(&name).join("proc")).unwrap();
        let msg = refused(
            &h,
            &h.spec(&name, &["/bin/gigmcp-attack"]),
            "RootfsIncomplete",
        )
        .await;
        assert!(msg.contains("/proc"), "{msg}");

        // Transparent mode replaces /etc/resolv.conf: it must be a regular file, never a link
        // (bwrap would follow it) and never missing (no mount point in a read-only image).
        let name = h.attack_rootfs("noresolv");
        let resolv = h.images.join(&name).join("etc/resolv.conf");
        let mut spec = h.spec(&name, &["/bin/gigmcp-attack"]);
        spec.transparent = true;
        std::fs::remove_file(&resolv).unwrap();
        let msg = refused(&h, &spec, "RootfsIncomplete").await;
        assert!(msg.contains("/etc/resolv.conf"), "{msg}");
        std::os::unix::fs::symlink("/run/resolv.conf", &resolv).unwrap();
        let msg = refused(&h, &spec, "RootfsSymlink").await;
        assert!(msg.contains("/etc/resolv.conf"), "{msg}");
        // The same image is fine without transparent mode.
        let mut spec = h.spec(&name, &["/bin/gigmcp-attack", "ping-sleep", "600"]);
        spec.transparent = false;
        let client = h.client().await;
        let created = client.create_sandbox(&spec).await.unwrap();
        client.destroy_sandbox(&created.0.id).await.unwrap();
    });
}

/// A random name for a link's target, so that no fixed path can be special-cased.
fn random_target() -> String {
    format!("/gx{:016x}", testkit::init::random_u64())
}

/// Waits until a destroyed sandbox's netns is gone (teardown finishes after the reply).
async fn settle(h: &Harness) {
    for _ in 0..100 {
        if h.count_host().netns == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a destroyed sandbox left {:?}", h.count_host());
}

#[test]
fn images_whose_mount_points_or_ca_paths_are_links_are_refused_by_name() {
    testkit::privileged(
        "images_whose_mount_points_or_ca_paths_are_links_are_refused_by_name",
        2,
        || async {
            let h = Harness::start(0).await;
            std::fs::write(h.ca_dir.join("gateway-ca.pem"), "not checked here\n").unwrap();
            let argv = ["/bin/gigmcp-attack", "ping-sleep", "600"];
            // (the path made a link, the place the error must name, what the spec asks for)
            for (n, (link, named)) in [
                ("proc", "/proc"),
                ("dev", "/dev"),
                ("tmp", "/tmp"),
                ("run", "/run"),
                ("data", "/data"),
                ("etc/resolv.conf", "/etc/resolv.conf"),
                (
                    "etc/ssl/certs/ca-certificates.crt",
                    "/etc/ssl/certs/ca-certificates.crt",
                ),
                ("etc/ssl/cert.pem", "/etc/ssl/cert.pem"),
                ("etc/ssl/certs", "/etc/ssl/certs"),
                ("etc/pki", "/etc/pki"),
                ("etc", "/etc"),
            ]
            .into_iter()
            .enumerate()
            {
                let name = h.attack_rootfs(&format!("link{n}"));
                let image = h.images.join(&name);
                let mut spec = h.spec(&name, &argv);
                spec.data_dir = format!("d{n}");
                spec.ca_bundle = "gateway-ca.pem".into();
                spec.transparent = true;
                // Control: the image as built is accepted with the same spec.
                let client = h.client().await;
                let created = client.create_sandbox(&spec).await.expect("control");
                client.destroy_sandbox(&created.0.id).await.unwrap();
                drop(created);
                settle(&h).await;

                let path = image.join(link);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
                    Ok(_) => std::fs::remove_file(&path).unwrap(),
                    Err(_) => {}
                }
                std::os::unix::fs::symlink(random_target(), &path).unwrap();
                let msg = refused(&h, &spec, "RootfsSymlink").await;
                assert!(
                    msg.contains(&format!("the image's {named} is a symbolic link")),
                    "{link}: {msg}"
                );
            }
        },
    );
}

#[test]
fn hostile_data_dirs_and_ca_bundles_are_refused() {
    testkit::privileged(
        "hostile_data_dirs_and_ca_bundles_are_refused",
        2,
        || async {
            let h = Harness::start(0).await;
            let rootfs = h.attack_rootfs("img");
            std::os::unix::fs::symlink("/root", h.data_root.join("evil")).unwrap();
            for data in ["../../etc", "/etc", "evil", "a/b", ".."] {
                let mut spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]);
                spec.data_dir = data.into();
                refused(&h, &spec, "DataDirOutsideRoot").await;
            }
            std::os::unix::fs::symlink("/etc/shadow", h.ca_dir.join("shadow.pem")).unwrap();
            std::fs::create_dir(h.ca_dir.join("dir.pem")).unwrap();
            for ca in [
                "../../etc/shadow",
                "/etc/shadow",
                "shadow.pem",
                "dir.pem",
                "missing.pem",
            ] {
                let mut spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]);
                spec.ca_bundle = ca.into();
                refused(&h, &spec, "InvalidCaBundle").await;
            }
        },
    );
}

#[test]
fn a_data_dir_too_deep_to_walk_is_refused() {
    testkit::privileged("a_data_dir_too_deep_to_walk_is_refused", 2, || async {
        let h = Harness::start(0).await;
        let rootfs = h.attack_rootfs("img");
        // What a server could leave behind in its own data dir.
        let mut deep = h.data_root.join("deep");
        for _ in 0..100 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let mut spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]);
        spec.data_dir = "deep".into();
        let msg = refused(&h, &spec, "InvalidSpec").await;
        assert!(msg.contains("deeper"), "{msg}");
        // The helper is still serving.
        assert!(h.client().await.list_sandboxes().await.is_ok());
    });
}

/// Starts the helper on `config_body` and expects it to refuse to start, saying `why`.
fn helper_refuses_to_start(config_body: &str, why: &str) {
    let dir = testkit::helper::open_tempdir();
    let config = dir.path().join("privhelper.toml");
    std::fs::write(&config, config_body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcp-privhelper"))
        .arg("--config")
        .arg(&config)
        .args(["--bus-address", "unix:path=/nonexistent/bus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{err}");
}

fn config_with(
    data_root: &std::path::Path,
    other_dirs: &std::path::Path,
    init: &std::path::Path,
) -> String {
    format!(
        "allowed_uid = 0\ninstance = \"{}\"\nlink_prefix = \"{}\"\npool = \"{}\"\nuid_base = {}\n\
         images_dir = \"{o}\"\nca_dir = \"{o}\"\ndata_root = \"{}\"\nsandbox_init = \"{}\"\n",
        // Generated like a harness's: refusing must not depend on a fixed name being free.
        testkit::names::unique("gt"),
        "gt",
        testkit::helper::POOL,
        testkit::names::uid_base(),
        data_root.display(),
        init.display(),
        o = other_dirs.display(),
    )
}

#[test]
fn the_helper_refuses_configured_dirs_behind_symlinks() {
    if !testkit::require_root("the_helper_refuses_configured_dirs_behind_symlinks") {
        return;
    }
    let dir = testkit::helper::open_tempdir();
    let link = dir.path().join("data-link");
    std::os::unix::fs::symlink("/", &link).unwrap();
    // Images and CA apart from the data root (the helper refuses nested roots).
    let other = dir.path().join("other");
    helper_refuses_to_start(
        &config_with(&link, &other, &testkit::bins::static_init()),
        "without following links",
    );
}

#[test]
fn the_helper_refuses_a_dynamically_linked_init() {
    if !testkit::require_root("the_helper_refuses_a_dynamically_linked_init") {
        return;
    }
    let dir = testkit::helper::open_tempdir();
    // The ordinary (dynamic) build of the init, from `cargo build --workspace --bins`: the init
    // is another package now, so cargo no longer hands this test its path.
    let init = testkit::bins::workspace_bin("gigmcp-sandbox-init");
    helper_refuses_to_start(
        &config_with(&dir.path().join("data"), &dir.path().join("other"), &init),
        "dynamically linked",
    );
}

#[test]
fn oversized_or_malformed_specs_are_refused() {
    testkit::privileged("oversized_or_malformed_specs_are_refused", 2, || async {
        let h = Harness::start(0).await;
        let rootfs = h.attack_rootfs("img");
        let base = h.spec(&rootfs, &["/bin/gigmcp-attack", "hello"]);
        let mut cases: Vec<(&str, SandboxSpec)> = Vec::new();
        let mut s = base.clone();
        s.env = (0..300).map(|i| (format!("K{i}"), "v".into())).collect();
        cases.push(("too many env entries", s));
        let mut s = base.clone();
        s.env = (0..100)
            .map(|i| (format!("K{i}"), "x".repeat(4000)))
            .collect();
        cases.push(("huge env", s));
        let mut s = base.clone();
        s.env = vec![("BAD=NAME".into(), "v".into())];
        cases.push(("env name with =", s));
        let mut s = base.clone();
        s.argv = vec!["x".repeat(10_000)];
        cases.push(("huge argument", s));
        let mut s = base.clone();
        s.argv = vec![];
        cases.push(("empty argv", s));
        let mut s = base.clone();
        s.server = "../etc".into();
        cases.push(("bad server id", s));
        let mut s = base.clone();
        s.limits.memory_max_bytes = u64::MAX;
        cases.push(("memory above ceiling", s));
        let mut s = base.clone();
        s.limits.pids_max = 1_000_000;
        cases.push(("pids above ceiling", s));
        let mut s = base.clone();
        s.limits.cpu_percent = 0;
        cases.push(("no cpu", s));
        let mut s = base.clone();
        s.proxy_port = 0;
        cases.push(("port 0", s));
        // Transparent mode's ports are the helper's to bind; every privileged port is the host's.
        for port in [443, 53] {
            let mut s = base.clone();
            s.transparent = true;
            s.proxy_port = port;
            cases.push(("transparent with a proxy port the helper binds", s));
        }
        for port in [22, 80, 1023] {
            let mut s = base.clone();
            s.proxy_port = port;
            cases.push(("a privileged proxy port", s));
        }
        for (what, spec) in cases {
            let msg = refused(&h, &spec, "InvalidSpec").await;
            assert!(!msg.is_empty(), "{what}");
        }
    });
}

#[test]
fn an_unauthorised_uid_is_refused_by_policy_and_by_the_helper() {
    testkit::privileged(
        "an_unauthorised_uid_is_refused_by_policy_and_by_the_helper",
        2,
        || async {
            let h = Harness::start(0).await;
            let before = h.count_host();
            let call = |user: &str| {
                let gid = match user {
                    "root" => 0,
                    "daemon" => 1,
                    _ => 65534,
                };
                Command::new("setpriv")
                    .args([
                        &format!("--reuid={user}"),
                        &format!("--regid={gid}"),
                        "--clear-groups",
                        "dbus-send",
                        &format!("--bus={}", h.address),
                        "--print-reply",
                        "--dest=org.gigmcp.PrivHelper1",
                        "/org/gigmcp/PrivHelper1",
                        "org.gigmcp.PrivHelper1.ListSandboxes",
                    ])
                    .output()
                    .unwrap()
            };
            // `daemon` is not in the bus policy: the bus itself refuses.
            let out = call("daemon");
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success());
            assert!(text.contains("AccessDenied"), "{text}");
            // `nobody` gets past the (test) policy, and the helper's own uid check refuses it.
            let out = call("nobody");
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success());
            assert!(
                text.contains("org.gigmcp.PrivHelper1.Error.PermissionDenied"),
                "{text}"
            );
            // Root, the configured caller, is served.
            let out = call("root");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(h.count_host(), before);
        },
    );
}

#[test]
fn the_server_starts_in_the_working_directory_asked_for_and_only_in_one_of_the_image() {
    testkit::privileged("the_server_starts_in_the_working_directory", 2, || async {
        let h = Harness::start(0).await;
        let rootfs = h.attack_rootfs("img");
        let app = format!("srv/w{:016x}", testkit::init::random_u64());
        std::fs::create_dir_all(h.images.join(&rootfs).join(&app)).unwrap();
        let client = h.client().await;
        let cwd = |spec: SandboxSpec| {
            let client = client.clone();
            async move {
                let (_info, stdin, stdout, ..) = client.create_sandbox(&spec).await.unwrap();
                let out = testkit::helper::read_all(stdout, std::time::Duration::from_secs(30));
                drop(stdin);
                String::from_utf8_lossy(&out).trim().to_owned()
            }
        };
        let mut spec = h.spec(&rootfs, &["/bin/gigmcp-attack", "cwd"]);
        let target = random_target();
        std::os::unix::fs::symlink(&target, h.images.join(&rootfs).join("srv/link")).unwrap();
        std::fs::write(h.images.join(&rootfs).join("srv/file"), "x").unwrap();
        for (dir, error, says) in [
            ("/srv/link".to_owned(), "RootfsSymlink", "symbolic link"),
            (
                "/srv/file".to_owned(),
                "RootfsIncomplete",
                "not a directory",
            ),
            (
                format!("/{app}/missing"),
                "RootfsIncomplete",
                "does not exist",
            ),
            (format!("/{app}/../../etc"), "InvalidSpec", "clean path"),
            (app.clone(), "InvalidSpec", "absolute"),
            ("/tmp/x".to_owned(), "InvalidSpec", "mounts over"),
        ] {
            spec.workdir = dir.clone();
            let msg = refused(&h, &spec, error).await;
            assert!(msg.contains(says), "{dir}: {msg}");
        }
        // Refusals first: they are counted against a host with no sandbox being torn down.
        spec.workdir = format!("/{app}");
        assert_eq!(cwd(spec.clone()).await, format!("ATTACK cwd RESULT /{app}"));
        spec.workdir = String::new();
        assert_eq!(cwd(spec.clone()).await, "ATTACK cwd RESULT /tmp");
    });
}

#[test]
fn an_image_root_someone_else_could_write_is_refused() {
    testkit::privileged("an_image_root_someone_else_could_write", 2, || async {
        use std::os::unix::fs::PermissionsExt;
        let h = Harness::start(0).await;
        let hex = format!("{:016x}", testkit::init::random_u64());
        std::fs::create_dir_all(h.images.join("roots").join(&hex)).unwrap();
        let built = h.attack_rootfs("staging");
        let rel = format!("roots/{hex}/rootfs");
        std::fs::rename(h.images.join(&built), h.images.join(&rel)).unwrap();
        let spec = h.spec(&rel, &["/bin/gigmcp-attack", "ping-sleep", "600"]);
        let client = h.client().await;
        // As the store leaves it: read-only directories of the gateway's (here root's).
        for dir in [rel.clone(), format!("roots/{hex}"), "roots".to_owned()] {
            let p = h.images.join(&dir);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        for dir in [rel.clone(), format!("roots/{hex}"), "roots".to_owned()] {
            let p = h.images.join(&dir);
            for mode in [0o557, 0o575] {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                let msg = refused(&h, &spec, "RootfsWritable").await;
                assert!(
                    msg.contains("writable by its group or others"),
                    "{dir}: {msg}"
                );
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
            let stranger = 40_000 + (testkit::init::random_u64() % 10_000) as u32;
            std::os::unix::fs::chown(&p, Some(stranger), None).unwrap();
            let msg = refused(&h, &spec, "RootfsWritable").await;
            assert!(msg.contains(&format!("uid {stranger}")), "{dir}: {msg}");
            std::os::unix::fs::chown(&p, Some(0), None).unwrap();
        }
        // Held: the sleeper lives while its stdio is open.
        let created = client.create_sandbox(&spec).await.unwrap();
        client.destroy_sandbox(&created.0.id).await.unwrap();
    });
}
