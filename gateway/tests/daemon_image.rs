//! Servers run from OCI images, end to end through the real `gigmcp` CLI, the real `gigmcpd`,
//! the real helper (private bus) and bwrap: an image built here as an `oci-layout` (one layer:
//! a shell, an MCP server script, the mount points), imported, installed with `server add
//! --image`, and called. The image's config supplies the command (`Entrypoint` + `Cmd`), an
//! environment variable, the working directory and a `User` the sandbox ignores; the server
//! reports what it got. Then: a byte of the installed root changed on disk refuses the next
//! start (the client gets the category, the audit the reason); images that cannot run are
//! refused at `server add` by name, leaving nothing installed; `image rm` of an image in use is
//! refused; `gc` removes only what no server uses. Names and values are random.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::env::{TestEnv, random_hex, run_with_stdin, text};
use testkit::helper::{Harness, POOL};
use testkit::{oci, rootfs};

/// An MCP server in POSIX shell (newline-delimited JSON-RPC, ids copied as they came): one
/// tool, `whoami`, answering where it runs, as whom, with which arguments and variables.
const SERVER_SH: &str = r#"#!/bin/sh
uid=unknown
while read -r k v rest; do [ "$k" = "Uid:" ] && uid=$v; done < /proc/self/status
while IFS= read -r line; do
  case "$line" in *'"id":'*) ;; *) continue ;; esac
  id=${line#*\"id\":}; id=${id%%[,\}]*}
  case "$line" in
    *'"method":"initialize"'*)
      pv=${line#*\"protocolVersion\":\"}; pv=${pv%%\"*}
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"%s","capabilities":{"tools":{}},"serverInfo":{"name":"img","version":"1"}}}\n' "$id" "$pv" ;;
    *'"method":"tools/list"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"whoami","description":"where and as whom","inputSchema":{"type":"object"}}]}}\n' "$id" ;;
    *'"method":"tools/call"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"cwd=%s uid=%s args=%s greeting=%s proxy=%s"}]}}\n' "$id" "$(pwd)" "$uid" "$*" "$IMAGE_GREETING" "$HTTPS_PROXY" ;;
    *)
      printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id" ;;
  esac
done
"#;

/// A root with the shell as `/bin/sh` (and its libraries), the server at `/srv/server`, the
/// working directory `workdir`, and the mount points.
fn server_root(root: &Path, workdir: &str) {
    rootfs::build(root, &[(PathBuf::from("/usr/bin/dash"), "bin/sh")]);
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("srv/server"), SERVER_SH).unwrap();
    std::fs::create_dir_all(root.join(workdir.trim_start_matches('/'))).unwrap();
    let ok = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("srv/server"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// Runs gigmcp with the test's configuration.
struct Admin<'a> {
    config: &'a Path,
    env: &'a TestEnv,
}

impl Admin<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
        cmd.arg("--config")
            .arg(self.config)
            .arg("--state-dir")
            .arg(&self.env.state_dir)
            .arg("--master-key-file")
            .arg(&self.env.key_file)
            .args(args);
        run_with_stdin(&mut cmd, b"")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "gigmcp {args:?} succeeded: {}",
            text(&out)
        );
        text(&out)
    }
}

/// Everything under the images directory's store parts, for "nothing installed" checks.
fn store_contents(images: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in ["roots", "index", "blobs/sha256", "dirs"] {
        if let Ok(entries) = std::fs::read_dir(images.join(part)) {
            out.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

fn digest_in(out: &str) -> String {
    let at = out
        .find("sha256:")
        .unwrap_or_else(|| panic!("no digest in {out}"));
    out[at..at + 71].to_owned()
}

#[test]
fn a_server_runs_from_an_imported_image_as_its_config_says_and_a_changed_root_is_refused() {
    testkit::privileged("a_server_runs_from_an_imported_image", 2, || async {
        let h = Harness::start(0).await;
        let env = TestEnv::new();
        let server = format!("img{}", random_hex(3));
        let front_port = testkit::free_loopback_port();
        let config = env.dir.path().join("gigmcp.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nstate_dir = \"{state}\"\nlisten = \"127.0.0.1:{front_port}\"\n\
                 allow_unsigned_servers = true\n\
                 [sandbox]\npool = \"{POOL}\"\nbus = \"{bus}\"\nimages_dir = \"{images}\"\n\
                 ca_dir = \"{ca}\"\n",
                state = env.state_dir.display(),
                bus = h.address,
                images = h.images.display(),
                ca = h.ca_dir.display(),
            ),
        )
        .unwrap();
        let admin = Admin {
            config: &config,
            env: &env,
        };
        let (greeting, workdir, arg) = (
            format!("hello-{}", random_hex(4)),
            format!("/app/w{}", random_hex(4)),
            format!("--from-cmd-{}", random_hex(3)),
        );
        let run = json!({
            "Entrypoint": ["/srv/server"], "Cmd": [arg],
            "Env": [format!("IMAGE_GREETING={greeting}"), "PATH=/bin",
                    "HTTPS_PROXY=http://proxy.evil.example:1"],
            "WorkingDir": workdir, "User": "root",
        });
        let manifest = env.dir.path().join("manifest.json");
        std::fs::write(
            &manifest,
            json!({"name": server, "version": "1.0.0"}).to_string(),
        )
        .unwrap();
        let m = manifest.to_str().unwrap();

        // Images that cannot run are refused at add, by name, and nothing stays installed.
        let before = store_contents(&h.images);
        let broken = env.dir.path().join("broken-root");
        server_root(&broken, &workdir);
        std::fs::remove_dir(broken.join("proc")).unwrap();
        let no_proc = env.dir.path().join("no-proc");
        let built = oci::build_layout(&no_proc, &broken, run.clone(), "v1");
        let image = format!("oci-layout:{}@{}", no_proc.display(), built.manifest_digest);
        let said = admin.refused(&[
            "server",
            "add",
            &server,
            "--image",
            &image,
            "--manifest",
            m,
            "--unsigned",
        ]);
        assert!(said.contains("no /proc directory"), "{said}");
        assert_eq!(
            store_contents(&h.images),
            before,
            "a refused add left something"
        );
        let no_cmd = env.dir.path().join("no-cmd");
        let mut missing = run.clone();
        let program = format!("/srv/missing{}", random_hex(2));
        missing["Entrypoint"] = json!([program]);
        let fine = env.dir.path().join("root");
        server_root(&fine, &workdir);
        let built = oci::build_layout(&no_cmd, &fine, missing, "v1");
        let image = format!("oci-layout:{}@{}", no_cmd.display(), built.manifest_digest);
        let said = admin.refused(&[
            "server",
            "add",
            &server,
            "--image",
            &image,
            "--manifest",
            m,
            "--unsigned",
        ]);
        assert!(
            said.contains(&program) && said.contains("not in the image"),
            "{said}"
        );
        assert_eq!(
            store_contents(&h.images),
            before,
            "a refused add left something"
        );

        // The good image: imported, listed, installed as a server.
        let layout = env.dir.path().join("layout");
        let built = oci::build_layout(&layout, &fine, run.clone(), "v1");
        let out = admin.ok(&["image", "import", layout.to_str().unwrap()]);
        assert_eq!(digest_in(&out), built.manifest_digest, "{out}");
        let image = format!("oci-layout:{}@{}", layout.display(), built.manifest_digest);
        admin.ok(&[
            "server",
            "add",
            &server,
            "--image",
            &image,
            "--manifest",
            m,
            "--unsigned",
        ]);
        let listed = admin.ok(&["image", "list"]);
        assert!(
            listed.contains(&built.manifest_digest) && listed.contains(&server),
            "{listed}"
        );
        admin.ok(&["endpoint", "add", "e", "--server", &server]);
        let token = admin.ok(&["endpoint", "token", "create", "e", "--label", "t"]);
        let token = token.lines().last().unwrap().trim().to_owned();
        let store = env.store();
        let added = store
            .audit_recent(1000)
            .unwrap()
            .into_iter()
            .find(|e| e.action == "server.add" && e.target == server && e.outcome == "ok")
            .expect("server.add audited");
        for said in [
            format!("image={}", built.manifest_digest),
            format!("reference={image}"),
            "image Env HTTPS_PROXY overridden by the gateway's".to_owned(),
            "image User \"root\" ignored: the sandbox runs as 65534".to_owned(),
        ] {
            assert!(
                added.detail.contains(&said),
                "{said} not in {}",
                added.detail
            );
        }

        // In use: not removable, and gc keeps it while removing an unused image.
        let said = admin.refused(&["image", "rm", &built.manifest_digest]);
        assert!(said.contains(&server), "{said}");
        let other_root = env.dir.path().join("other-root");
        server_root(&other_root, "/other");
        std::fs::write(other_root.join("srv/unused"), random_hex(8)).unwrap();
        let other = env.dir.path().join("other");
        let unused = oci::build_layout(&other, &other_root, run.clone(), "v2");
        admin.ok(&["image", "import", other.to_str().unwrap(), "--name", "v2"]);
        let out = admin.ok(&["image", "gc"]);
        assert!(out.starts_with("removed 1 images and "), "{out}");
        let listed = admin.ok(&["image", "list"]);
        assert!(listed.contains(&built.manifest_digest), "{listed}");
        assert!(!listed.contains(&unused.manifest_digest), "{listed}");
        let blobs = h.images.join("blobs/sha256");
        assert!(
            !blobs
                .join(unused.layer_digest.trim_start_matches("sha256:"))
                .exists()
        );
        assert!(
            blobs
                .join(built.layer_digest.trim_start_matches("sha256:"))
                .exists()
        );

        // gigmcpd, in the test's network namespace.
        let mut daemon = testkit::process::start_gigmcpd(
            Path::new(env!("CARGO_BIN_EXE_gigmcpd")),
            &config,
            &env.key_file,
        );
        let front = SocketAddr::from(([127, 0, 0, 1], front_port));
        let call = || {
            testkit::mcp::rpc(
                front,
                "e",
                &token,
                "tools/call",
                json!({"name": format!("{server}__whoami"), "arguments": {}}),
            )
        };
        let called: Value = call().await;
        let said = called["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{called}"))
            .to_owned();
        assert!(said.contains(&format!("cwd={workdir} ")), "workdir: {said}");
        assert!(said.contains(" uid=65534 "), "user: {said}");
        assert!(
            said.contains(&format!(" args={arg} ")),
            "entrypoint + cmd: {said}"
        );
        assert!(
            said.contains(&format!(" greeting={greeting} ")),
            "image env: {said}"
        );
        assert!(
            said.contains(" proxy=http://10.") && !said.contains("evil"),
            "the gateway's proxy: {said}"
        );

        // A byte of the installed root changed: the next start (of a new daemon) is refused.
        daemon.stop(Duration::from_secs(20));
        let hex = built.manifest_digest.trim_start_matches("sha256:");
        let script = h.images.join(format!("roots/{hex}/rootfs/srv/server"));
        let mut bytes = std::fs::read(&script).unwrap();
        let at = bytes.len() - 2;
        bytes[at] ^= 0x20;
        std::fs::write(&script, &bytes).unwrap();
        let mut daemon = testkit::process::start_gigmcpd(
            Path::new(env!("CARGO_BIN_EXE_gigmcpd")),
            &config,
            &env.key_file,
        );
        let called: Value = call().await;
        let shown = called.to_string();
        assert!(
            shown.contains("does not match the digest it was installed with"),
            "the client's category: {shown}"
        );
        let failed =
            || {
                store.audit_recent(10_000).unwrap().into_iter().find(|e| {
                    e.action == "mcp.server.failed" && e.detail.contains("changed on disk")
                })
            };
        let mut event = failed();
        for _ in 0..50 {
            if event.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            event = failed();
        }
        let event = event.expect("the refused start audited with its reason");
        assert!(event.detail.contains("/srv/server"), "{}", event.detail);
        daemon.stop(Duration::from_secs(20));
    });
}

/// A real registry on loopback (Debian's docker-registry, a config of the test's own), with
/// `layout`'s image pushed by skopeo as `repo:v1`; killed with the returned guard.
fn registry_with(dir: &Path, layout: &Path, repo: &str) -> (testkit::process::Tied, u16) {
    let port = testkit::free_loopback_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(&config).stderr(Stdio::null());
    // In this thread's namespace, named: the kit's launcher thread may sit in another test's.
    let netns = testkit::netns::Netns::current();
    let registry = testkit::process::spawn_tied(cmd, Some(netns.as_fd())).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/{repo}:v1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out));
    (registry, port)
}

#[test]
fn a_server_added_by_registry_reference_is_pulled_by_digest_once() {
    let env = TestEnv::new();
    let root = env.dir.path().join("root");
    let workdir = format!("/app/w{}", random_hex(3));
    server_root(&root, &workdir);
    let layout = env.dir.path().join("layout");
    let built = oci::build_layout(
        &layout,
        &root,
        json!({"Entrypoint": ["/srv/server"], "WorkingDir": workdir}),
        "v1",
    );
    let repo = format!("mcp/s{}", random_hex(3));
    let (registry, port) = registry_with(env.dir.path(), &layout, &repo);
    let images = env.dir.path().join("images");
    let config = env.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nallow_unsigned_servers = true\n[sandbox]\nimages_dir = \"{}\"\n\
             [[images.registries]]\nhost = \"127.0.0.1:{port}\"\nplain_http = true\n",
            images.display()
        ),
    )
    .unwrap();
    let admin = Admin {
        config: &config,
        env: &env,
    };
    let server = format!("reg{}", random_hex(3));
    let manifest = env.dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        json!({"name": server, "version": "1"}).to_string(),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();

    // A tag alone is refused: only a digest pins what runs.
    let tagged = format!("127.0.0.1:{port}/{repo}:v1");
    let said = admin.refused(&[
        "server",
        "add",
        &server,
        "--image",
        &tagged,
        "--manifest",
        m,
        "--unsigned",
    ]);
    assert!(said.contains("pin the image by digest"), "{said}");
    assert!(
        store_contents(&images)
            .iter()
            .all(|p| !p.starts_with(images.join("roots")))
    );

    let pinned = format!("127.0.0.1:{port}/{repo}:v1@{}", built.manifest_digest);
    admin.ok(&[
        "server",
        "add",
        &server,
        "--image",
        &pinned,
        "--manifest",
        m,
        "--unsigned",
    ]);
    let hex = built.manifest_digest.trim_start_matches("sha256:");
    assert!(
        images
            .join(format!("roots/{hex}/rootfs/srv/server"))
            .is_file()
    );
    let listed = admin.ok(&["image", "list"]);
    assert!(
        listed.contains(&built.manifest_digest) && listed.contains(&server),
        "{listed}"
    );
    // Installed: a second pull asks the registry for nothing (here, it is gone).
    drop(registry);
    let out = admin.ok(&["image", "pull", &pinned]);
    assert_eq!(digest_in(&out), built.manifest_digest, "{out}");
    let store = env.store();
    let events = store.audit_recent(100).unwrap();
    let added = events
        .iter()
        .find(|e| e.action == "server.add" && e.outcome == "ok")
        .expect("server.add audited");
    assert!(
        added.detail.contains(&format!("reference={pinned}"))
            && added
                .detail
                .contains(&format!("image={}", built.manifest_digest)),
        "{}",
        added.detail
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "server.add" && e.outcome == "failed"),
        "the refusal audited too"
    );
}
