//! Import from an OCI layout, a directory or a tarball of one: every blob copied through a
//! `BlobWriter` (capped and verified like a pull's), the tarball read entry by entry and never
//! unpacked, and every refusal naming the offending entry and leaving nothing in the store.

use std::path::Path;

use gateway::image::blobs::BlobStore;
use gateway::image::layout::{Layout, LayoutError, Select};
use gateway::image::oci::Platform;
use testkit::registry::{
    TestImage, TestIndex, other_platform, random_name, store_is_empty, tar_layout, write_layout,
};

fn layout_with(dir: &Path, tag: &str) -> TestImage {
    let image = TestImage::random(&[1500, 40_000], Platform::host());
    write_layout(dir, &[(tag, &image.manifest)], &image.blobs());
    image
}

fn assert_imported(store: &BlobStore, image: &TestImage) {
    for b in image.blobs() {
        let got = store
            .read_small(&b.digest, b.bytes.len() as u64, 1 << 30)
            .unwrap();
        assert_eq!(got, b.bytes, "{}", b.digest);
    }
}

#[test]
fn a_layout_directory_imports_by_ref_name_and_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let tag = random_name("v");
    let image = layout_with(&dir.path().join("layout"), &tag);
    let layout = Layout::open(&dir.path().join("layout")).unwrap();
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    let got = layout.import(&Select::RefName(tag), &store).unwrap();
    assert_eq!(got.pinned.digest, image.manifest.digest);
    assert_eq!(got.layers.len(), 2);
    assert_imported(&store, &image);

    let other = tempfile::tempdir().unwrap();
    let store = BlobStore::open(other.path()).unwrap();
    let got = layout
        .import(&Select::Digest(image.manifest.digest.clone()), &store)
        .unwrap();
    assert_eq!(got.config.digest, image.config.digest);
    assert_imported(&store, &image);
}

#[test]
fn a_layout_tarball_imports_without_being_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let tag = random_name("v");
    let here = TestImage::random(&[3000], Platform::host());
    let there = TestImage::random(&[3100], other_platform());
    let index = TestIndex::new(vec![there.clone(), here.clone()]);
    let layout_dir = dir.path().join("layout");
    write_layout(&layout_dir, &[(&tag, &index.index)], &index.blobs());
    let tarball = dir.path().join("layout.tar");
    tar_layout(&layout_dir, &tarball);
    std::fs::remove_dir_all(&layout_dir).unwrap();
    let store_root = dir.path().join("store");
    let store = BlobStore::open(&store_root).unwrap();
    let got = Layout::open(&tarball)
        .unwrap()
        .import(&Select::RefName(tag), &store)
        .unwrap();
    assert_eq!(got.pinned.digest, index.index.digest);
    assert_eq!(got.manifest.digest, here.manifest.digest);
    assert_imported(&store, &here);
    for b in there.blobs() {
        assert!(!store.contains(&b.digest), "the other platform's blob");
    }
    // Nothing but the store was written next to the tarball.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["layout.tar", "store"]);
}

#[test]
fn a_tampered_blob_in_a_layout_is_refused_and_nothing_is_left() {
    for as_tar in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tag = random_name("v");
        let layout_dir = dir.path().join("layout");
        let image = layout_with(&layout_dir, &tag);
        let victim = &image.layers[1];
        let path = layout_dir.join("blobs/sha256").join(victim.digest.hex());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let source = if as_tar {
            let t = dir.path().join("l.tar");
            tar_layout(&layout_dir, &t);
            t
        } else {
            layout_dir.clone()
        };
        let root = dir.path().join("store");
        let store = BlobStore::open(&root).unwrap();
        let err = Layout::open(&source)
            .unwrap()
            .import(&Select::RefName(tag), &store)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&victim.digest.to_string()) && text.contains("does not match"),
            "tar={as_tar}: {text}"
        );
        assert!(
            store_is_empty(&root),
            "tar={as_tar}: nothing in blobs/ or tmp/"
        );
    }
}

#[test]
fn a_blob_longer_than_its_descriptor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tag = random_name("v");
    let layout_dir = dir.path().join("layout");
    let image = layout_with(&layout_dir, &tag);
    let victim = &image.layers[0];
    let path = layout_dir.join("blobs/sha256").join(victim.digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(random_name("extra").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let root = dir.path().join("store");
    let store = BlobStore::open(&root).unwrap();
    let err = Layout::open(&layout_dir)
        .unwrap()
        .import(&Select::RefName(tag), &store)
        .unwrap_err();
    assert!(matches!(err, LayoutError::Size { .. }), "{err}");
    assert!(
        err.to_string().contains(&victim.digest.to_string()),
        "{err}"
    );
    assert!(store_is_empty(&root));
}

/// A tar of `entries` (raw names, type, data), written header by header so that names a
/// careful builder refuses (`../x`) can be written too.
fn raw_tar(path: &Path, entries: &[(&[u8], tar::EntryType, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if kind.is_symlink() || kind.is_hard_link() {
            h.set_size(0);
            h.as_old_mut().linkname[..10].copy_from_slice(b"index.json");
        }
        h.set_cksum();
        b.append(
            &h,
            if h.size().unwrap() == 0 {
                &[][..]
            } else {
                *data
            },
        )
        .unwrap();
    }
    b.finish().unwrap();
}

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn refused_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("hostile.tar");
    raw_tar(&t, entries);
    let err = Layout::open(&t).unwrap_err().to_string();
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    // Nothing was unpacked next to (or above) the tarball.
    let clean = names == ["hostile.tar"] && !dir.path().parent().unwrap().join("escaped").exists();
    (err, clean)
}

#[test]
fn a_layout_tarball_with_dot_dot_entries_is_refused_naming_the_entry() {
    use tar::EntryType::Regular;
    let name = format!("../escaped-{}", random_name(""));
    let (err, clean) = refused_tar(&[
        (b"oci-layout", Regular, LAYOUT),
        (name.as_bytes(), Regular, b"owned"),
    ]);
    assert!(err.contains(&name) && err.contains("outside"), "{err}");
    assert!(clean);
    let deep = format!("blobs/sha256/../../../{}", random_name("x"));
    let (err, clean) = refused_tar(&[(deep.as_bytes(), Regular, b"x")]);
    assert!(err.contains(&deep), "{err}");
    assert!(clean);
    let (err, _) = refused_tar(&[(b"/etc/passwd", Regular, b"x")]);
    assert!(err.contains("/etc/passwd"), "{err}");
}

#[test]
fn links_devices_duplicates_and_strangers_in_a_layout_tarball_are_refused() {
    use tar::EntryType::{Char, Link, Regular, Symlink};
    let blob = format!(
        "blobs/sha256/{}",
        gateway::image::digest::Digest::of(b"x").hex()
    );
    for (entries, says) in [
        (vec![(blob.as_bytes(), Symlink, &b""[..])], "symbolic link"),
        (vec![(blob.as_bytes(), Link, &b""[..])], "hard link"),
        (vec![(blob.as_bytes(), Char, &b""[..])], "Char"),
        (
            vec![
                (b"oci-layout".as_slice(), Regular, LAYOUT),
                (b"./oci-layout".as_slice(), Regular, LAYOUT),
            ],
            "appears twice",
        ),
        (
            vec![(b"blobs/sha256/not-a-digest".as_slice(), Regular, &b"x"[..])],
            "outside",
        ),
        (
            vec![(b"etc/shadow".as_slice(), Regular, &b"x"[..])],
            "outside",
        ),
    ] {
        let (err, clean) = refused_tar(&entries);
        assert!(err.contains(says), "{says}: {err}");
        assert!(clean);
    }
}

#[test]
fn an_oversized_index_json_is_refused() {
    use tar::EntryType::Regular;
    let big = vec![b' '; (4 << 20) + 1];
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("big.tar");
    raw_tar(
        &t,
        &[
            (b"oci-layout", Regular, LAYOUT),
            (b"index.json", Regular, &big),
        ],
    );
    let layout = Layout::open(&t).unwrap();
    let store = BlobStore::open(&dir.path().join("store")).unwrap();
    let err = layout
        .import(&Select::RefName("x".into()), &store)
        .unwrap_err();
    assert!(matches!(err, LayoutError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("index.json"), "{err}");
}

#[test]
fn a_name_matching_no_image_or_two_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestImage::random(&[10], Platform::host());
    let b = TestImage::random(&[11], Platform::host());
    let mut blobs = a.blobs();
    blobs.extend(b.blobs());
    write_layout(
        dir.path(),
        &[("same", &a.manifest), ("same", &b.manifest)],
        &blobs,
    );
    let layout = Layout::open(dir.path()).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let err = layout
        .import(&Select::RefName("same".into()), &store)
        .unwrap_err();
    assert!(matches!(err, LayoutError::Ambiguous { .. }), "{err}");
    let err = layout
        .import(&Select::RefName(random_name("none")), &store)
        .unwrap_err();
    assert!(matches!(err, LayoutError::NoMatch { .. }), "{err}");
    assert!(store_is_empty(store_dir.path()));
}

#[test]
fn a_layout_of_another_version_or_with_a_linked_blob_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tag = random_name("v");
    let image = layout_with(dir.path(), &tag);
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = Layout::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("2.0.0"), "{err}");
    std::fs::write(dir.path().join("oci-layout"), LAYOUT).unwrap();
    // A blob that is a symlink to a file outside the layout.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let victim = dir
        .path()
        .join("blobs/sha256")
        .join(image.config.digest.hex());
    std::fs::copy(&victim, outside.path()).unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink(outside.path(), &victim).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let err = Layout::open(dir.path())
        .unwrap()
        .import(&Select::RefName(tag), &store)
        .unwrap_err();
    assert!(
        err.to_string().contains(&image.config.digest.hex()),
        "{err}"
    );
    assert!(store_is_empty(store_dir.path()));
}

#[test]
fn an_imported_tarball_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let tag = random_name("v");
    let layout_dir = dir.path().join("layout");
    let image = layout_with(&layout_dir, &tag);
    let tarball = dir.path().join("l.tar");
    tar_layout(&layout_dir, &tarball);
    let root = dir.path().join("images");
    let images =
        gateway::image::ImageStore::open(&root, gateway::image::UnpackLimits::default()).unwrap();
    let record = Layout::open(&tarball)
        .unwrap()
        .import_and_install(&Select::RefName(tag.clone()), &images)
        .unwrap();
    assert_eq!(record.pinned, image.manifest.digest);
    assert!(record.reference.contains(&tag), "{}", record.reference);
    let rootfs = root.join(gateway::image::ImageStore::rootfs_relative(&record.pinned));
    assert_eq!(std::fs::read_dir(rootfs.join("data")).unwrap().count(), 2);
}
