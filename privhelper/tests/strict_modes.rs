//! The helper's StrictModes: it refuses a configuration file, `bwrap`, `nft` or init that
//! anyone but root could change, and configuration values that cannot work. Real temporary
//! trees, real ownership (chown to a random uid no account has), real symlinks, and the real
//! `gigmcp-privhelper` binary, which must exit naming the path and why.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use privhelper::ownership::{Owners, UntrustedPath, check_file};

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom_fill(&mut b);
    u32::from_le_bytes(b)
}

fn getrandom_fill(b: &mut [u8]) {
    let n = rustix::rand::getrandom(&mut *b, rustix::rand::GetRandomFlags::empty()).unwrap();
    assert_eq!(n, b.len());
}

/// A uid (and gid) no account on this machine has, from a range the test kit's sandbox uids
/// do not use (0x3000_0000..0x4000_0000).
fn unused_id() -> u32 {
    loop {
        let id = 0x3000_0000 + random_u32() % 0x1000_0000;
        let taken = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
            .ok()
            .flatten()
            .is_some();
        if !taken {
            return id;
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `<tmp>/<random>/bin/tool`: root's, 0755 dirs, a 0755 file (what passes).
struct Tree {
    dir: tempfile::TempDir,
    bin: PathBuf,
    tool: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::Builder::new()
        .prefix("gigmcp-strict-")
        .tempdir()
        .unwrap();
    chmod(dir.path(), 0o755);
    let bin = dir.path().join(format!("bin{}", random_u32()));
    std::fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let tool = bin.join(format!("tool{}", random_u32()));
    std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
    chmod(&tool, 0o755);
    Tree { dir, bin, tool }
}

fn owners(gateway: u32) -> Owners {
    Owners {
        helper_uid: 0,
        gateway_uid: Some(gateway),
        gateway_gid: Some(gateway),
    }
}

#[test]
fn a_root_owned_tree_passes_and_every_component_someone_else_could_change_is_refused() {
    testkit::privileged("strict_modes_tree", 1, || async {
        let gateway = unused_id();
        let stranger = unused_id();
        let t = tree();
        assert_eq!(check_file(&t.tool, owners(gateway)).unwrap(), t.tool);

        // The directory holding the tool owned by the gateway, then by another user.
        chown(&t.bin, gateway, 0);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(
            matches!(&err, UntrustedPath::OwnedByGateway { component, uid, .. }
                if *component == t.bin && *uid == gateway),
            "{err}"
        );
        chown(&t.bin, stranger, 0);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(
            matches!(&err, UntrustedPath::NotRootOwned { component, uid, .. }
                if *component == t.bin && *uid == stranger),
            "{err}"
        );
        chown(&t.bin, 0, 0);

        // A group-writable parent (the gateway's group), then a world-writable file.
        chown(&t.bin, 0, gateway);
        chmod(&t.bin, 0o775);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(
            matches!(&err, UntrustedPath::Writable { component, who: "its group", .. }
                if *component == t.bin),
            "{err}"
        );
        assert!(err.to_string().contains("the gateway's group"), "{err}");
        chmod(&t.bin, 0o755);
        chmod(&t.tool, 0o757);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(
            matches!(&err, UntrustedPath::Writable { component, who: "others", .. }
                if *component == t.tool),
            "{err}"
        );
        chmod(&t.tool, 0o755);

        // The file itself the gateway's.
        chown(&t.tool, gateway, gateway);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(matches!(err, UntrustedPath::OwnedByGateway { .. }), "{err}");
        chown(&t.tool, 0, 0);
        assert!(check_file(&t.tool, owners(gateway)).is_ok());
        drop(t.dir);
    });
}

#[test]
fn a_symlink_is_followed_and_its_target_walked() {
    testkit::privileged("strict_modes_symlink", 1, || async {
        let gateway = unused_id();
        let good = tree();
        let evil = tree();
        // A root-owned link in a root-owned directory: fine while its target is root's.
        let link = good.bin.join(format!("link{}", random_u32()));
        symlink(&good.tool, &link).unwrap();
        assert_eq!(check_file(&link, owners(gateway)).unwrap(), good.tool);
        // Swapped to a target whose directory the gateway owns: refused, naming that directory.
        std::fs::remove_file(&link).unwrap();
        chown(&evil.bin, gateway, gateway);
        symlink(&evil.tool, &link).unwrap();
        let err = check_file(&link, owners(gateway)).unwrap_err();
        assert!(
            matches!(&err, UntrustedPath::OwnedByGateway { component, .. } if *component == evil.bin),
            "{err}"
        );
        // A relative link with `..` resolves against the link's own directory.
        std::fs::remove_file(&link).unwrap();
        let rel = Path::new("..")
            .join(good.bin.file_name().unwrap())
            .join(good.tool.file_name().unwrap());
        symlink(&rel, &link).unwrap();
        assert_eq!(check_file(&link, owners(gateway)).unwrap(), good.tool);
        // A link the gateway planted itself (lchown) is the gateway's even with a good target.
        chown(&link, gateway, gateway);
        let err = check_file(&link, owners(gateway)).unwrap_err();
        assert!(matches!(err, UntrustedPath::OwnedByGateway { .. }), "{err}");
        // A loop ends.
        let a = good.bin.join("loop-a");
        symlink(good.bin.join("loop-b"), &a).unwrap();
        symlink(&a, good.bin.join("loop-b")).unwrap();
        let err = check_file(&a, owners(gateway)).unwrap_err();
        assert!(matches!(err, UntrustedPath::TooManyLinks { .. }), "{err}");
    });
}

#[test]
fn a_sticky_world_writable_directory_is_crossed_only_to_roots_entries() {
    testkit::privileged("strict_modes_sticky", 1, || async {
        let gateway = unused_id();
        let t = tree();
        chmod(&t.bin, 0o1777);
        // The tool under a sticky /tmp-like dir: root's, so nobody else can swap it.
        assert!(check_file(&t.tool, owners(gateway)).is_ok());
        // Without the sticky bit anyone could rename it away.
        chmod(&t.bin, 0o777);
        let err = check_file(&t.tool, owners(gateway)).unwrap_err();
        assert!(
            matches!(err, UntrustedPath::Writable { who: "others", .. }),
            "{err}"
        );
        // Sticky, but the entry is someone else's.
        chmod(&t.bin, 0o1777);
        chown(&t.tool, gateway, gateway);
        assert!(check_file(&t.tool, owners(gateway)).is_err());
        // Not a regular file.
        assert!(matches!(
            check_file(&t.bin, owners(gateway)).unwrap_err(),
            UntrustedPath::NotAFile { .. }
        ));
    });
}

/// The harness's configuration text with `bwrap`, `nft` or the config's own place changed.
fn config_text(dir: &Path, extra: &str) -> String {
    let data = dir.join("data");
    let other = dir.join("other");
    for d in [&data, &other] {
        std::fs::create_dir_all(d).unwrap();
        chmod(d, 0o755);
    }
    format!(
        "allowed_uid = 0\ninstance = \"{}\"\nlink_prefix = \"gt\"\npool = \"{}\"\nuid_base = {}\n\
         images_dir = \"{o}\"\nca_dir = \"{o}\"\ndata_root = \"{}\"\nsandbox_init = \"{}\"\n{extra}",
        testkit::names::unique("gt"),
        testkit::helper::POOL,
        testkit::names::uid_base(),
        data.display(),
        testkit::bins::static_init().display(),
        o = other.display(),
    )
}

/// Runs the real helper on `config`; it must exit 1 before serving, its error containing
/// every one of `want`.
fn helper_refuses(config: &Path, want: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gigmcp-privhelper"))
        .arg("--config")
        .arg(config)
        .args(["--bus-address", "unix:path=/nonexistent/bus"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for w in want {
        assert!(err.contains(w), "missing {w:?} in: {err}");
    }
}

#[test]
fn the_helper_refuses_to_start_with_a_bwrap_nft_or_config_the_gateway_could_change() {
    testkit::privileged("strict_modes_helper", 1, || async {
        let gateway = unused_id();
        let t = tree();
        // A copy of bwrap in a directory the gateway owns.
        let bwrap = t.bin.join("bwrap");
        std::fs::copy("/usr/bin/bwrap", &bwrap).unwrap();
        chown(&t.bin, gateway, gateway);
        let config = t.dir.path().join("privhelper.toml");
        let text = config_text(t.dir.path(), &format!("bwrap = \"{}\"\n", bwrap.display()));
        // allowed_uid = the gateway's: the refusal says it is the gateway's directory.
        let text = text.replace("allowed_uid = 0", &format!("allowed_uid = {gateway}"));
        std::fs::write(&config, &text).unwrap();
        helper_refuses(
            &config,
            &[
                &t.bin.display().to_string(),
                &format!("gateway's uid {gateway}"),
            ],
        );

        // nft behind a group-writable directory.
        chown(&t.bin, 0, gateway);
        chmod(&t.bin, 0o775);
        let nft = t.bin.join("nft");
        std::fs::copy("/usr/sbin/nft", &nft).unwrap();
        let text = config_text(t.dir.path(), &format!("nft = \"{}\"\n", nft.display()));
        std::fs::write(&config, text).unwrap();
        helper_refuses(
            &config,
            &[&t.bin.display().to_string(), "writable by its group"],
        );

        // The configuration file itself writable by its group (e.g. a gigmcp group).
        chmod(&t.bin, 0o755);
        std::fs::write(&config, config_text(t.dir.path(), "")).unwrap();
        chown(&config, 0, gateway);
        chmod(&config, 0o664);
        helper_refuses(
            &config,
            &["the configuration file", "writable by its group"],
        );
    });
}

#[test]
fn the_helper_refuses_to_start_with_a_uid_range_bwrap_cannot_map() {
    testkit::privileged("strict_modes_uid_range", 1, || async {
        let dir = testkit::helper::open_tempdir();
        let config = dir.path().join("privhelper.toml");
        let base = (1u64 << 31) + u64::from(random_u32()) % (1 << 31);
        let text = config_text(dir.path(), "")
            .lines()
            .map(|l| {
                if l.starts_with("uid_base") {
                    format!("uid_base = {base}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text).unwrap();
        helper_refuses(&config, &["uid_base", &base.to_string(), "2^31"]);
    });
}

#[test]
fn the_helper_refuses_a_link_prefix_that_a_host_link_already_starts_with() {
    testkit::privileged("strict_modes_link_prefix", 1, || async {
        // The firewall matches sandbox links by `iifname "<prefix>*"`: with link_prefix "e",
        // "eth0"'s traffic would be dropped as a sandbox's, and the start-up sweep would
        // delete any such link it can as a leftover.
        let prefix: String = (0..3)
            .map(|_| char::from(b'q' + (random_u32() % 10) as u8))
            .collect();
        let host_link = format!("{prefix}eth{}", random_u32() % 1000);
        let peer = format!("p{}", random_u32() % 100_000);
        testkit::netns::ip_ok(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &peer,
        ]);
        let dir = testkit::helper::open_tempdir();
        let config = dir.path().join("privhelper.toml");
        let text = config_text(dir.path(), "").replace(
            "link_prefix = \"gt\"",
            &format!("link_prefix = \"{prefix}\""),
        );
        std::fs::write(&config, text).unwrap();
        helper_refuses(&config, &["link_prefix", &prefix, &host_link]);
        let still = testkit::netns::ip(&["link", "show", &host_link]);
        assert!(
            still.status.success(),
            "the helper deleted the host's link {host_link}"
        );
    });
}
