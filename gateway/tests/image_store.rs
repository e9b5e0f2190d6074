//! The image store on real files: layers written as real tar, gzip and zstd streams, unpacked
//! beneath a directory fd, checked, removed and garbage-collected. Every hostile layer is
//! refused with the entry named, leaves nothing in `roots/`, `index/` or `tmp/`, and writes
//! nothing outside the image root (a canary directory beside the store stays as it was).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gateway::image::digest::Digest;
use gateway::image::{ImageError, ImageStore, UnpackError, UnpackLimits};
use tar::EntryType;
use testkit::layers::{self, LayerRef, MTIME, Packing, Tar};

/// A store in a fresh directory, with a canary directory beside it.
struct Fixture {
    _dir: tempfile::TempDir,
    images: PathBuf,
    canary: PathBuf,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Self {
        Self::with_limits(UnpackLimits::default())
    }

    fn with_limits(limits: UnpackLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let canary = dir.path().join("canary");
        fs::create_dir_all(canary.join("sub")).unwrap();
        fs::write(canary.join("sub/keep"), "canary").unwrap();
        let store = ImageStore::open(&images, limits).unwrap();
        Self {
            _dir: dir,
            images,
            canary,
            store,
        }
    }

    fn layer(&self, tar: &Tar, packing: Packing) -> LayerRef {
        layers::layer(self.store.blobs(), &tar.finish(), packing)
    }

    fn install(&self, layers: &[LayerRef]) -> Result<gateway::image::ImageRecord, ImageError> {
        let (digest, size) = layers::image(self.store.blobs(), layers);
        self.store.install(&digest, size, "test/image@x")
    }

    fn rootfs(&self, pinned: &Digest) -> PathBuf {
        self.images.join(ImageStore::rootfs_relative(pinned))
    }

    /// A refusal: names `entry`, leaves nothing behind, touched nothing outside.
    fn assert_refused(
        &self,
        result: Result<gateway::image::ImageRecord, ImageError>,
        entry: &str,
    ) -> ImageError {
        let err = match result {
            Ok(r) => panic!("installed {} although it holds {entry:?}", r.pinned),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(text.contains(entry), "the error names {entry:?}: {text}");
        self.assert_nothing_left();
        err
    }

    fn assert_nothing_left(&self) {
        for dir in ["roots", "index", "tmp"] {
            let left: Vec<_> = fs::read_dir(self.images.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{dir}/ holds {left:?}");
        }
        assert_eq!(
            tree_of(&self.canary),
            BTreeMap::from([
                ("/".to_string(), "d".to_string()),
                ("/sub".into(), "d".into()),
                ("/sub/keep".into(), "f canary".into()),
            ]),
            "the canary beside the store is untouched"
        );
        let beside: HashSet<_> = fs::read_dir(self.images.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(beside, HashSet::from(["images".into(), "canary".into()]));
    }
}

/// A tree as path → type and content (links: target; files: contents), without following.
fn tree_of(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
        let path = root.join(rel.trim_start_matches('/'));
        let meta = fs::symlink_metadata(&path).unwrap();
        let key = if rel.is_empty() {
            "/".to_string()
        } else {
            rel.to_string()
        };
        if meta.file_type().is_symlink() {
            out.insert(
                key,
                format!("l {}", fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(key, "d".into());
            for e in fs::read_dir(&path).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                walk(root, &format!("{rel}/{name}"), out);
            }
        } else {
            out.insert(
                key,
                format!("f {}", String::from_utf8_lossy(&fs::read(&path).unwrap())),
            );
        }
    }
    walk(root, "", &mut out);
    out
}

fn name(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}{}", hex::encode(b))
}

fn unpack_error(err: &ImageError) -> &UnpackError {
    match err {
        ImageError::Unpack { source, .. } => source,
        ImageError::Refused(source) => source,
        other => panic!("not an unpack refusal: {other}"),
    }
}

fn any_packing() -> Packing {
    [Packing::None, Packing::Gzip, Packing::Zstd][testkit::names::random_in(0..3)]
}

#[test]
fn an_image_installs_as_a_read_only_tree_with_modes_for_other_and_mtimes_kept() {
    let f = Fixture::new();
    let mut t = Tar::new();
    t.dir("bin/")
        .exe("bin/server", b"#!/bin/sh\n")
        .file("etc/config", b"k=v")
        .entry(b"etc/secret", EntryType::Regular, 0o600, b"", b"s")
        .entry(b"root/", EntryType::Directory, 0o700, b"", b"")
        .symlink("bin/sh", "/usr/bin/dash")
        .hardlink("etc/config2", "etc/config");
    for packing in [Packing::None, Packing::Gzip, Packing::Zstd] {
        let record = f.install(&[f.layer(&t, packing)]);
        let record = record.unwrap_or_else(|e| panic!("{packing:?}: {e}"));
        let root = f.rootfs(&record.pinned);
        let mode = |p: &str| {
            fs::symlink_metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/server"), 0o555);
        assert_eq!(mode("etc/config"), 0o444);
        assert_eq!(
            mode("etc/secret"),
            0o444,
            "other reads what the owner could"
        );
        for dir in ["", "bin", "etc", "root"] {
            assert_eq!(mode(dir), 0o555, "{dir:?}");
        }
        assert_eq!(
            fs::metadata(root.join("etc/config")).unwrap().mtime(),
            MTIME as i64
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/usr/bin/dash")
        );
        assert_eq!(
            fs::metadata(root.join("etc/config2")).unwrap().ino(),
            fs::metadata(root.join("etc/config")).unwrap().ino()
        );
        assert_eq!(record.entries, 9, "root, 3 dirs, 5 files and links");
        assert_eq!(record.unpacked_bytes, 10 + 3 + 1 + 3);
        assert_eq!(
            record.config.config.entrypoint.as_deref(),
            Some(&["/bin/server".to_string()][..])
        );
        // Installing it again answers with the record already there.
        let (digest, size) = layers::image(f.store.blobs(), &[f.layer(&t, packing)]);
        assert_eq!(digest, record.pinned);
        let again = f.store.install(&digest, size, "other").unwrap();
        assert_eq!(again.added_ms, record.added_ms);
        assert_eq!(again.reference, "test/image@x");
        f.store.verify(&record.pinned).unwrap();
        f.store.remove(&record.pinned).unwrap();
    }
    f.assert_nothing_left();
}

#[test]
fn an_index_is_resolved_to_the_host_platform() {
    let f = Fixture::new();
    let mine = layers::image(
        f.store.blobs(),
        &[f.layer(Tar::new().file("a", b"1"), Packing::Gzip)],
    );
    let other = layers::image_labelled(
        f.store.blobs(),
        &[f.layer(Tar::new().file("b", b"2"), Packing::Gzip)],
        "other",
    );
    let host = gateway::image::oci::Platform::host().architecture;
    let foreign = if host == "amd64" { "arm64" } else { "amd64" };
    let (index, size) = layers::index(
        f.store.blobs(),
        &[
            (other.0.clone(), other.1, foreign),
            (mine.0.clone(), mine.1, host.as_str()),
        ],
    );
    let record = f.store.install(&index, size, "r").unwrap();
    assert_eq!(record.pinned, index);
    assert_eq!(record.manifest, mine.0);
    assert!(f.rootfs(&index).join("a").is_file());
    assert!(!f.rootfs(&index).join("b").exists());
}

#[test]
fn an_absolute_path_is_refused() {
    let f = Fixture::new();
    let n = name("abs");
    let target = format!("{}/{n}", f.canary.display());
    let err = f.assert_refused(
        f.install(&[f.layer(
            Tar::new().file("ok", b"").file(&target, b"x"),
            any_packing(),
        )]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::Absolute { .. }),
        "{err}"
    );
}

#[test]
fn a_dot_dot_component_is_refused() {
    let f = Fixture::new();
    let n = name("up");
    let err = f.assert_refused(
        f.install(&[f.layer(
            Tar::new().file(&format!("a/../../canary/{n}"), b"x"),
            any_packing(),
        )]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::DotDot { .. }),
        "{err}"
    );
}

#[test]
fn device_nodes_are_refused() {
    for kind in [EntryType::Char, EntryType::Block] {
        let f = Fixture::new();
        let n = name("dev");
        let err = f.assert_refused(
            f.install(&[f.layer(
                Tar::new().entry(n.as_bytes(), kind, 0o644, b"", b""),
                any_packing(),
            )]),
            &n,
        );
        assert!(
            matches!(unpack_error(&err), UnpackError::DeviceNode { .. }),
            "{err}"
        );
    }
}

#[test]
fn a_fifo_is_refused() {
    let f = Fixture::new();
    let n = name("fifo");
    let err = f.assert_refused(
        f.install(&[f.layer(
            Tar::new().entry(n.as_bytes(), EntryType::Fifo, 0o644, b"", b""),
            any_packing(),
        )]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::Fifo { .. }),
        "{err}"
    );
}

#[test]
fn a_socket_is_refused() {
    // Tar has no socket type: a writer that stores the mode's type bits can still say one.
    let f = Fixture::new();
    let n = name("sock");
    let err = f.assert_refused(
        f.install(&[f.layer(
            Tar::new().entry(n.as_bytes(), EntryType::Regular, 0o140644, b"", b""),
            any_packing(),
        )]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::Socket { .. }),
        "{err}"
    );
}

#[test]
fn setuid_setgid_and_sticky_bits_are_refused() {
    for (kind, mode) in [
        (EntryType::Regular, 0o4755),
        (EntryType::Regular, 0o2755),
        (EntryType::Directory, 0o1777),
    ] {
        let f = Fixture::new();
        let n = name("bits");
        let err = f.assert_refused(
            f.install(&[f.layer(
                Tar::new()
                    .dir("d")
                    .entry(format!("d/{n}").as_bytes(), kind, mode, b"", b""),
                any_packing(),
            )]),
            &n,
        );
        assert!(
            matches!(unpack_error(&err), UnpackError::SpecialBits { .. }),
            "{mode:o}: {err}"
        );
    }
}

#[test]
fn extended_attributes_are_refused() {
    for key in [
        "SCHILY.xattr.security.capability",
        "LIBARCHIVE.xattr.user.x",
        "SCHILY.acl.access",
    ] {
        let f = Fixture::new();
        let n = name("xattr");
        let err = f.assert_refused(
            f.install(&[f.layer(
                Tar::new().pax(&[(key, b"\x01\x00\x00\x02")]).file(&n, b"x"),
                any_packing(),
            )]),
            &n,
        );
        assert!(
            matches!(unpack_error(&err), UnpackError::Xattr { .. }),
            "{key}: {err}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn a_hard_link_to_a_path_not_in_the_image_is_refused() {
    let f = Fixture::new();
    let n = name("hl");
    let err = f.assert_refused(
        f.install(&[f.layer(
            Tar::new().file("a", b"").hardlink(&n, &name("missing")),
            any_packing(),
        )]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::HardLinkMissing { .. }),
        "{err}"
    );
}

#[test]
fn a_hard_link_to_etc_passwd_is_refused() {
    for target in [
        "/etc/passwd",
        "../../../../etc/passwd",
        "etc/../../etc/passwd",
    ] {
        let f = Fixture::new();
        let n = name("passwd");
        let err = f.assert_refused(
            f.install(&[f.layer(Tar::new().hardlink(&n, target), any_packing())]),
            &n,
        );
        assert!(
            matches!(unpack_error(&err), UnpackError::HardLinkOutside { .. }),
            "{target}: {err}"
        );
    }
    // Nor does "etc/passwd" mean the host's: it is the image's, and this image has none.
    let f = Fixture::new();
    let n = name("passwd");
    let err = f.assert_refused(
        f.install(&[f.layer(Tar::new().hardlink(&n, "etc/passwd"), any_packing())]),
        &n,
    );
    assert!(
        matches!(unpack_error(&err), UnpackError::HardLinkMissing { .. }),
        "{err}"
    );
}

#[test]
fn a_hard_link_to_an_earlier_layers_symlink_or_through_it_is_refused() {
    let f = Fixture::new();
    let lower = f.layer(
        Tar::new()
            .symlink("passwd", "/etc/passwd")
            .symlink("hostetc", "/etc")
            .dir("d"),
        any_packing(),
    );
    for (target, through) in [("passwd", false), ("hostetc/passwd", true), ("d", false)] {
        let n = name("hl");
        let upper = f.layer(Tar::new().hardlink(&n, target), any_packing());
        let err = f.assert_refused(f.install(&[lower.clone(), upper]), &n);
        let e = unpack_error(&err);
        if through {
            assert!(
                matches!(e, UnpackError::SymlinkInPath { .. }),
                "{target}: {err}"
            );
        } else {
            assert!(
                matches!(e, UnpackError::HardLinkNotRegular { .. }),
                "{target}: {err}"
            );
        }
    }
}

#[test]
fn duplicate_and_ambiguous_entries_in_one_layer_are_refused() {
    let n = name("dup");
    let cases: Vec<(Tar, &str)> = vec![
        (
            Tar::new().file(&n, b"1").file(&n, b"2").clone(),
            "Duplicate",
        ),
        (
            Tar::new()
                .file(&format!("./{n}"), b"1")
                .file(&n, b"2")
                .clone(),
            "Duplicate",
        ),
        (
            Tar::new().dir(&format!("{n}/")).dir(&n).clone(),
            "Duplicate",
        ),
        (
            Tar::new().file(&format!("a/./{n}"), b"1").clone(),
            "Ambiguous",
        ),
        (
            Tar::new().file(&format!("a//{n}"), b"1").clone(),
            "Ambiguous",
        ),
        (Tar::new().file(&format!("{n}/"), b"1").clone(), "Ambiguous"),
        (
            Tar::new()
                .file(&n, b"1")
                .whiteout(&format!(".wh.{n}"))
                .clone(),
            "Duplicate",
        ),
        (
            Tar::new()
                .gnu_long_name(format!("{n}-long").as_bytes())
                .pax(&[("path", format!("{n}-pax").as_bytes())])
                .file("short", b"")
                .clone(),
            "Ambiguous",
        ),
        (
            Tar::new().pax(&[("size", b"7")]).file(&n, b"1").clone(),
            "Ambiguous",
        ),
        (
            Tar::new()
                .entry(
                    format!("{n}\u{7}").as_bytes(),
                    EntryType::Regular,
                    0o644,
                    b"",
                    b"",
                )
                .clone(),
            "BadName",
        ),
        (
            Tar::new()
                .entry(
                    &[n.as_bytes(), b"\xff"].concat(),
                    EntryType::Regular,
                    0o644,
                    b"",
                    b"",
                )
                .clone(),
            "BadName",
        ),
    ];
    for (tar, class) in cases {
        let f = Fixture::new();
        let err = f.assert_refused(f.install(&[f.layer(&tar, any_packing())]), &n);
        let got = format!("{:?}", unpack_error(&err));
        assert!(got.starts_with(class), "{class}: {got}");
    }
}

#[test]
fn a_whiteout_naming_dot_dot_or_a_path_outside_is_refused() {
    for (entry, class) in [
        (".wh..", "WhiteoutOutside"),
        ("d/.wh..", "WhiteoutOutside"),
        ("d/.wh...", "WhiteoutOutside"),
        ("../.wh.canary", "DotDot"),
        ("/.wh.etc", "Absolute"),
        (".wh..wh.plnk", "UnsupportedType"),
    ] {
        let f = Fixture::new();
        let n = name("wh");
        let lower = f.layer(Tar::new().file(&format!("d/{n}"), b"x"), any_packing());
        let upper = f.layer(Tar::new().file(&n, b"").whiteout(entry), any_packing());
        let err = f.assert_refused(f.install(&[lower, upper]), entry);
        let got = format!("{:?}", unpack_error(&err));
        assert!(got.starts_with(class), "{entry}: {got}");
    }
}

#[test]
fn a_write_through_a_symlink_in_the_same_layer_is_refused() {
    let f = Fixture::new();
    let n = name("pwn");
    let tar = Tar::new()
        .symlink("out", &f.canary.display().to_string())
        .file(&format!("out/{n}"), b"pwned")
        .clone();
    let err = f.assert_refused(f.install(&[f.layer(&tar, any_packing())]), &n);
    assert!(
        matches!(unpack_error(&err), UnpackError::SymlinkInPath { .. }),
        "{err}"
    );
}

#[test]
fn a_write_through_an_earlier_layers_symlink_is_refused() {
    let f = Fixture::new();
    let n = name("pwn");
    for (link, target) in [
        ("out", f.canary.display().to_string()),
        ("rel", "../../../../canary".to_string()),
        ("deep", "sub/../../..".to_string()),
    ] {
        let lower = f.layer(Tar::new().symlink(link, &target), any_packing());
        let upper = f.layer(
            Tar::new().file(&format!("{link}/sub/{n}"), b"pwned"),
            any_packing(),
        );
        let err = f.assert_refused(f.install(&[lower, upper]), &n);
        assert!(
            matches!(unpack_error(&err), UnpackError::SymlinkInPath { .. }),
            "{err}"
        );
        // Replacing the link itself is allowed: it writes the link, not through it.
        let upper = f.layer(Tar::new().file(link, b"now a file"), any_packing());
        let lower = f.layer(Tar::new().symlink(link, &target), any_packing());
        let record = f.install(&[lower, upper]).unwrap();
        assert_eq!(
            fs::read(f.rootfs(&record.pinned).join(link)).unwrap(),
            b"now a file"
        );
        f.store.remove(&record.pinned).unwrap();
    }
}

#[test]
fn a_directory_symlink_in_layer_one_then_a_file_beneath_it_in_layer_two_is_refused() {
    let f = Fixture::new();
    let n = name("dir");
    let lower = f.layer(
        Tar::new().dir("usr/lib").symlink("lib", "usr/lib"),
        any_packing(),
    );
    let upper = f.layer(Tar::new().file(&format!("lib/{n}"), b"x"), any_packing());
    let err = f.assert_refused(f.install(&[lower, upper]), &n);
    assert!(
        matches!(unpack_error(&err), UnpackError::SymlinkInPath { .. }),
        "{err}"
    );
}

#[test]
fn whiteouts_and_opaque_directories_across_three_layers_give_the_exact_tree() {
    let f = Fixture::new();
    let one = f.layer(
        Tar::new()
            .file("keep", b"1")
            .file("gone", b"1")
            .file("dir/a", b"1")
            .file("dir/sub/b", b"1")
            .file("opaque/x", b"1")
            .file("opaque/deep/y", b"1")
            .symlink("link", "keep")
            .file("replaced/z", b"1"),
        Packing::Gzip,
    );
    let two = f.layer(
        Tar::new()
            .whiteout(".wh.gone")
            .whiteout("dir/sub/.wh.b")
            .whiteout("opaque/.wh..wh..opq")
            .file("opaque/new", b"2")
            .file("opaque/deep/z", b"2")
            .whiteout(".wh.link")
            .file("replaced", b"2")
            .whiteout(".wh.never-existed"),
        Packing::Zstd,
    );
    let three = f.layer(
        Tar::new()
            .file("gone", b"3")
            .whiteout(".wh.keep")
            .dir("opaque")
            .whiteout("opaque/deep/.wh.z")
            .whiteout("dir/.wh..wh..opq"),
        Packing::None,
    );
    let record = f.install(&[one, two, three]).unwrap();
    let tree = tree_of(&f.rootfs(&record.pinned));
    let expected: BTreeMap<String, String> = [
        ("/", "d"),
        ("/gone", "f 3"),
        ("/dir", "d"),
        ("/opaque", "d"),
        ("/opaque/new", "f 2"),
        ("/opaque/deep", "d"),
        ("/replaced", "f 2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(tree, expected);
    f.store.verify(&record.pinned).unwrap();
}

#[test]
fn a_layer_whose_content_does_not_match_its_diff_id_is_refused() {
    let f = Fixture::new();
    let n = name("diff");
    let tar = Tar::new().file(&n, b"x").finish();
    let packing = any_packing();
    let mut other = tar.clone();
    other[600] ^= 1;
    let layer = layers::layer_blob(
        f.store.blobs(),
        &packing.pack(&tar),
        packing,
        Digest::of(&other),
    );
    let err = f.install(&[layer]).unwrap_err();
    assert!(
        matches!(unpack_error(&err), UnpackError::DiffIdMismatch { .. }),
        "{err}"
    );
    f.assert_nothing_left();
}

#[test]
fn a_layer_blob_changed_in_the_store_is_refused() {
    let f = Fixture::new();
    let packing = [Packing::None, Packing::Gzip][testkit::names::random_in(0..2)];
    let layer = f.layer(Tar::new().file("a", &[7u8; 4000]), packing);
    let (digest, size) = layers::image(f.store.blobs(), std::slice::from_ref(&layer));
    let path = f.store.blobs().path(&layer.digest);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x55;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, &bytes).unwrap();
    let err = f.store.install(&digest, size, "r").unwrap_err();
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    f.assert_nothing_left();
}

#[test]
fn limits_are_refused_with_the_limit_named() {
    let small = UnpackLimits {
        max_layers: 2,
        max_entries_per_layer: 5,
        max_entries: 8,
        max_path_bytes: 300,
        max_file_bytes: 20_000,
        max_layer_bytes: 64 << 10,
        max_image_bytes: 80 << 10,
        ..UnpackLimits::default()
    };
    let n = name("lim");
    let f = Fixture::with_limits(small.clone());
    let l = |t: &Tar| f.layer(t, Packing::None);
    let tiny = l(Tar::new().file(&n, b""));
    let err = f
        .install(&[tiny.clone(), tiny.clone(), tiny.clone()])
        .unwrap_err();
    assert!(
        matches!(
            unpack_error(&err),
            UnpackError::TooManyLayers { count: 3, .. }
        ),
        "{err}"
    );
    f.assert_nothing_left();

    let mut many = Tar::new();
    for i in 0..6 {
        many.file(&format!("{n}{i}"), b"");
    }
    let err = f.install(&[l(&many)]).unwrap_err();
    assert!(
        matches!(
            unpack_error(&err),
            UnpackError::TooManyLayerEntries { limit: 5 }
        ),
        "{err}"
    );
    f.assert_nothing_left();

    let mut four = Tar::new();
    let mut four_more = Tar::new();
    for i in 0..5 {
        four.file(&format!("a{i}"), b"");
        four_more.file(&format!("b{i}"), b"");
    }
    let err = f.install(&[l(&four), l(&four_more)]).unwrap_err();
    assert!(
        matches!(unpack_error(&err), UnpackError::TooManyEntries { limit: 8 }),
        "{err}"
    );
    f.assert_nothing_left();

    let long = format!("{n}/{}", "p".repeat(300));
    let err = f.assert_refused(f.install(&[l(Tar::new().file(&long, b""))]), &n);
    assert!(
        matches!(unpack_error(&err), UnpackError::PathTooLong { .. }),
        "{err}"
    );
    let component = "c".repeat(256);
    let err = f
        .install(&[l(Tar::new().file(&component, b""))])
        .unwrap_err();
    assert!(
        matches!(unpack_error(&err), UnpackError::PathTooLong { .. }),
        "{err}"
    );
    f.assert_nothing_left();

    let err = f.assert_refused(f.install(&[l(Tar::new().file(&n, &[1u8; 20_001]))]), &n);
    assert!(
        matches!(
            unpack_error(&err),
            UnpackError::FileTooLarge { size: 20_001, .. }
        ),
        "{err}"
    );

    let mut big = Tar::new();
    for i in 0..4 {
        big.file(&format!("{n}{i}"), &[2u8; 4096 * 4]);
    }
    let err = f.install(&[l(&big)]).unwrap_err();
    assert!(err.to_string().contains("max_layer_bytes"), "{err}");
    f.assert_nothing_left();

    let mut half = Tar::new();
    let mut other_half = Tar::new();
    for i in 0..3 {
        half.file(&format!("h{i}"), &[3u8; 4096 * 4]);
        other_half.file(&format!("o{i}"), &[4u8; 4096 * 4]);
    }
    let err = f.install(&[l(&half), l(&other_half)]).unwrap_err();
    assert!(err.to_string().contains("max_image_bytes"), "{err}");
    f.assert_nothing_left();
}

#[test]
fn a_shared_layer_is_stored_once_and_one_images_root_cannot_touch_the_others() {
    let f = Fixture::new();
    let shared = f.layer(
        Tar::new().file("lib/shared", b"shared bytes"),
        Packing::Gzip,
    );
    let a = f
        .install(&[
            shared.clone(),
            f.layer(Tar::new().file("a", b"a"), Packing::Gzip),
        ])
        .unwrap();
    let b = f
        .install(&[
            shared.clone(),
            f.layer(Tar::new().file("b", b"b"), Packing::Gzip),
        ])
        .unwrap();
    let shared_blobs = f
        .store
        .blobs()
        .list()
        .unwrap()
        .into_iter()
        .filter(|d| *d == shared.digest)
        .count();
    assert_eq!(shared_blobs, 1);
    let (ra, rb) = (f.rootfs(&a.pinned), f.rootfs(&b.pinned));
    assert_ne!(
        fs::metadata(ra.join("lib/shared")).unwrap().ino(),
        fs::metadata(rb.join("lib/shared")).unwrap().ino(),
        "no inode is shared between images"
    );
    // Someone with the daemon's uid changes image a's copy: b's stays as installed.
    fs::set_permissions(ra.join("lib/shared"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(ra.join("lib/shared"), b"changed").unwrap();
    assert_eq!(fs::read(rb.join("lib/shared")).unwrap(), b"shared bytes");
    f.store.verify(&b.pinned).unwrap();
    f.store.remove(&a.pinned).unwrap();
    assert!(!ra.exists());
    assert_eq!(fs::read(rb.join("lib/shared")).unwrap(), b"shared bytes");
    f.store.verify(&b.pinned).unwrap();
    assert!(f.store.blobs().contains(&shared.digest));
}

#[test]
fn verify_catches_a_changed_byte_a_changed_mode_and_an_added_file() {
    let f = Fixture::new();
    let layer = f.layer(
        Tar::new().file("etc/a", b"abc").exe("bin/x", b"x"),
        any_packing(),
    );
    let record = f.install(&[layer]).unwrap();
    let root = f.rootfs(&record.pinned);
    f.store.verify(&record.pinned).unwrap();
    let tampered = |f: &Fixture| match f.store.verify(&record.pinned) {
        Err(ImageError::Tampered { digest, path }) => {
            assert_eq!(digest, record.pinned);
            path
        }
        other => panic!("not refused: {other:?}"),
    };

    let file = root.join("etc/a");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, b"abd").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    assert_eq!(tampered(&f).as_deref(), Some("/etc/a"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, b"abc").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    f.store.verify(&record.pinned).unwrap();

    fs::set_permissions(root.join("bin/x"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(tampered(&f).as_deref(), Some("/bin/x"));
    fs::set_permissions(root.join("bin/x"), fs::Permissions::from_mode(0o555)).unwrap();
    f.store.verify(&record.pinned).unwrap();

    let n = name("added");
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc").join(&n), b"").unwrap();
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o555)).unwrap();
    let path = tampered(&f).unwrap();
    // The directory's own line is unchanged (0555 again): the first difference is the file.
    assert_eq!(path, format!("/etc/{n}"));
    let err = f.store.verify(&record.pinned).unwrap_err().to_string();
    assert!(err.contains(&n), "{err}");
}

#[test]
fn gc_keeps_what_it_is_told_and_removes_every_other_image_and_unreferenced_blob() {
    let f = Fixture::new();
    let shared = f.layer(Tar::new().file("s", b"s"), Packing::Gzip);
    let only_a = f.layer(Tar::new().file("a", b"a"), Packing::Zstd);
    let only_b = f.layer(Tar::new().file("b", b"b"), Packing::Gzip);
    let a = f.install(&[shared.clone(), only_a.clone()]).unwrap();
    let b = f.install(&[shared.clone(), only_b.clone()]).unwrap();
    let stray = layers::put(f.store.blobs(), b"a blob no image names").0;
    // A stale unpack directory (no one holds its lock) and a live one.
    fs::create_dir_all(f.store.blobs().tmp_dir().join("unpack-stale/rootfs")).unwrap();

    let report = f.store.gc(&HashSet::from([a.pinned.clone()])).unwrap();
    assert_eq!(report.images, vec![b.pinned.clone()]);
    let removed: HashSet<_> = report.blobs.iter().cloned().collect();
    let expected: HashSet<_> = [
        b.pinned.clone(),
        b.config_digest.clone(),
        only_b.digest.clone(),
        stray,
    ]
    .into();
    assert_eq!(removed, expected);
    assert_eq!(report.tmp, vec!["unpack-stale".to_string()]);
    assert!(report.bytes_freed > 0);

    assert!(f.store.get(&b.pinned).unwrap().is_none());
    assert!(!f.rootfs(&b.pinned).exists());
    for kept in [&a.pinned, &a.config_digest, &shared.digest, &only_a.digest] {
        assert!(f.store.blobs().contains(kept), "{kept}");
    }
    f.store.verify(&a.pinned).unwrap();
    assert_eq!(f.store.list().unwrap().len(), 1);

    let report = f.store.gc(&HashSet::new()).unwrap();
    assert_eq!(report.images, vec![a.pinned.clone()]);
    assert!(f.store.blobs().list().unwrap().is_empty());
    f.assert_nothing_left();
}

#[test]
fn opening_the_store_removes_a_root_whose_install_crashed_before_its_record() {
    let f = Fixture::new();
    let record = f
        .install(&[f.layer(Tar::new().file("a", b"a"), Packing::Gzip)])
        .unwrap();
    fs::remove_file(f.images.join(format!("index/{}.json", record.pinned.hex()))).unwrap();
    let store = ImageStore::open(&f.images, UnpackLimits::default()).unwrap();
    assert!(store.get(&record.pinned).unwrap().is_none());
    f.assert_nothing_left();
}
