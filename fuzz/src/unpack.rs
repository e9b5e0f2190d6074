//! The layer unpacker (`gateway::image`): layers of tar entries built from a small, hostile
//! vocabulary (`..`, `.`, empty and absolute components, whiteouts, opaque markers, links to a
//! canary outside the store and to each other, device and fifo types, setuid and socket
//! modes, PAX records), installed into a fresh store. Property, whatever the store decides:
//! nothing outside the store changed (a canary beside it stays as it was); a refusal leaves
//! `roots/`, `index/` and `tmp/` empty; an install verifies, and its root holds only
//! directories (0555), files (0444 or 0555) and symbolic links.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use arbitrary::{Result, Unstructured};
use gateway::image::{ImageStore, UnpackLimits};
use tar::EntryType;
use testkit::layers::{self, Packing, Tar};

use crate::Target;

pub const TARGET: Target = Target {
    name: "unpack",
    check,
    ci_cases: 200,
};

const PLAIN: &[&str] = &["a", "b", "c", "out"];
const HOSTILE: &[&str] = &["..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh.."];

/// Whether this case may choose hostile values: half the cases are plain, so that images
/// install and the whiteout, link and replacement paths run; in the rest one choice in ten
/// is hostile.
struct Mood(bool);

impl Mood {
    fn hostile(&self, u: &mut Unstructured<'_>) -> Result<bool> {
        Ok(self.0 && u.ratio(1, 10)?)
    }
}

fn path(u: &mut Unstructured<'_>, mood: &Mood) -> Result<String> {
    let n = u.int_in_range(1..=3)?;
    let mut parts = Vec::new();
    for _ in 0..n {
        let set = if mood.hostile(u)? { HOSTILE } else { PLAIN };
        parts.push(*u.choose(set)?);
    }
    let (prefix, suffix) = if mood.hostile(u)? {
        (*u.choose(&["./", "/"])?, *u.choose(&["", "/"])?)
    } else {
        ("", "")
    };
    Ok(format!("{prefix}{}{suffix}", parts.join("/")))
}

fn layer(u: &mut Unstructured<'_>, canary: &Path, mood: &Mood) -> Result<Tar> {
    let mut tar = Tar::new();
    let mut written: Vec<String> = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let name = path(u, mood)?;
        let kind = if mood.hostile(u)? {
            *u.choose(&[EntryType::Char, EntryType::Fifo])?
        } else {
            *u.choose(&[
                EntryType::Regular,
                EntryType::Regular,
                EntryType::Directory,
                EntryType::Directory,
                EntryType::Symlink,
                EntryType::Link,
            ])?
        };
        let mode = if mood.hostile(u)? {
            *u.choose(&[0o4755, 0o1777, 0o140644])?
        } else {
            *u.choose(&[0o644, 0o755, 0o600])?
        };
        let canary_text = canary.display().to_string();
        let link = match kind {
            EntryType::Symlink => {
                let targets = [canary_text.as_str(), "../../canary", "a", "/", "out/.."];
                u.choose(&targets)?.to_string()
            }
            // A name written before (in this layer) unless hostile.
            EntryType::Link if !written.is_empty() && !mood.hostile(u)? => {
                u.choose(&written)?.clone()
            }
            EntryType::Link => path(u, mood)?,
            _ => String::new(),
        };
        if mood.hostile(u)? {
            let key = *u.choose(&["path", "SCHILY.xattr.user.x", "size", "mtime"])?;
            let value = path(u, mood)?;
            tar.pax(&[(key, value.as_bytes())]);
        }
        let data = crate::pick::bytes(u, if mood.0 { 64 } else { 40 })?;
        let data = if kind == EntryType::Regular {
            data
        } else {
            Vec::new()
        };
        tar.entry(name.as_bytes(), kind, mode, link.as_bytes(), &data);
        if kind == EntryType::Regular {
            written.push(name);
        }
    }
    Ok(tar)
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let images = dir.path().join("images");
    let canary = dir.path().join("canary");
    fs::create_dir_all(canary.join("sub")).expect("the canary");
    fs::write(canary.join("sub/keep"), "canary").expect("the canary");
    let limits = UnpackLimits {
        max_entries_per_layer: 16,
        max_file_bytes: 48,
        ..UnpackLimits::default()
    };
    let store = ImageStore::open(&images, limits).expect("a store");
    let mood = Mood(u.arbitrary()?);
    let mut refs = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let tar = layer(u, &canary, &mood)?;
        let packing = *u.choose(&[Packing::None, Packing::Gzip, Packing::Zstd])?;
        refs.push(layers::layer(store.blobs(), &tar.finish(), packing));
    }
    let (digest, size) = layers::image(store.blobs(), &refs);
    match store.install(&digest, size, "fuzz") {
        Ok(record) => {
            store
                .verify(&record.pinned)
                .unwrap_or_else(|e| panic!("an installed image does not verify: {e}"));
            let root = images.join(ImageStore::rootfs_relative(&record.pinned));
            check_modes(&root, &root);
        }
        Err(e) => {
            for sub in ["roots", "index", "tmp"] {
                let left = fs::read_dir(images.join(sub)).expect("store dirs").count();
                assert_eq!(left, 0, "{sub}/ holds {left} entries after a refusal: {e}");
            }
        }
    }
    let mut seen = BTreeMap::new();
    for entry in walkdir(&canary) {
        seen.insert(entry.0, entry.1);
    }
    let expected = BTreeMap::from([
        (String::new(), "d".to_string()),
        ("/sub".into(), "d".into()),
        ("/sub/keep".into(), "f canary".into()),
    ]);
    assert_eq!(seen, expected, "the canary beside the store changed");
    let beside = fs::read_dir(dir.path()).expect("the test dir").count();
    assert_eq!(beside, 2, "something appeared beside the store");
    Ok(())
}

fn check_modes(root: &Path, path: &Path) {
    let meta = fs::symlink_metadata(path).expect("a listed path");
    let mode = meta.permissions().mode() & 0o7777;
    let shown = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let kind = meta.file_type();
    if kind.is_dir() {
        assert_eq!(mode, 0o555, "directory /{shown}");
        for entry in fs::read_dir(path).expect("a directory") {
            check_modes(root, &entry.expect("an entry").path());
        }
    } else if kind.is_file() {
        assert!(mode == 0o444 || mode == 0o555, "file /{shown} is {mode:o}");
    } else {
        assert!(
            kind.is_symlink(),
            "/{shown} is neither directory, file nor link"
        );
    }
}

fn walkdir(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, path: &Path, out: &mut Vec<(String, String)>) {
        let rel = path
            .strip_prefix(root)
            .map(|p| {
                if p.as_os_str().is_empty() {
                    String::new()
                } else {
                    format!("/{}", p.display())
                }
            })
            .unwrap_or_default();
        let meta = fs::symlink_metadata(path).expect("a canary entry");
        if meta.is_dir() {
            out.push((rel, "d".into()));
            for e in fs::read_dir(path).expect("a canary dir") {
                walk(root, &e.expect("an entry").path(), out);
            }
        } else if meta.file_type().is_symlink() {
            out.push((rel, "l".into()));
        } else {
            let text = fs::read_to_string(path).unwrap_or_default();
            out.push((rel, format!("f {text}")));
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}
