//! Decompression bombs, gzip and zstd, refused fast with bounded memory and nothing left. One
//! test in its own binary, so the process's peak RSS (reset through `/proc/self/clear_refs`
//! before each install) is this unpack's alone.

use std::fs;
use std::time::{Duration, Instant};

use gateway::image::digest::Digest;
use gateway::image::{ImageError, ImageStore, StreamError, UnpackError, UnpackLimits};
use tar::EntryType;
use testkit::layers::{self, Packing, Tar};

const GIB_IN_MIB: usize = 1024;

fn kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn name() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("bomb{}", hex::encode(b))
}

#[test]
fn gzip_and_zstd_bombs_are_refused_fast_with_bounded_memory_and_nothing_left() {
    // The measure sees what buffering a bomb would cost: 96 MiB held is 96 MiB of peak.
    fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = kib("VmRSS:");
    let held = vec![1u8; 96 << 20];
    assert!(
        kib("VmHWM:") - before >= 90 * 1024,
        "peak RSS is measurable"
    );
    drop(held);

    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let store = ImageStore::open(&images, UnpackLimits::default()).unwrap();
    let n = name();
    let ten_gib = 10 * GIB_IN_MIB as u64 * (1 << 20);
    // A header declaring 10 GiB, whose zeros really follow.
    let declared = Tar::new()
        .entry_sized(n.as_bytes(), EntryType::Regular, 0o644, b"", b"", ten_gib)
        .unterminated();
    // Under the file limit, over what 100:1 of the compressed size allows.
    let under_file_limit = Tar::new()
        .entry_sized(n.as_bytes(), EntryType::Regular, 0o644, b"", b"", 900 << 20)
        .unterminated();
    // A valid, tiny tar, then zeros after its end (part of the stream the diff_id covers).
    let trailing = Tar::new().file(&n, b"x").finish();
    // A zstd frame asking for a 2 GiB window, which ruzstd would fill before yielding.
    let mut window = 0xFD2F_B528u32.to_le_bytes().to_vec();
    window.extend_from_slice(&[0x00, 21 << 3]);
    window.extend_from_slice(&[0x01, 0x00, 0x00]);

    let cases: Vec<(&str, Packing, Vec<u8>)> = vec![
        (
            "gzip, 10 GiB declared",
            Packing::Gzip,
            layers::gzip_bomb(&declared, 10 * GIB_IN_MIB),
        ),
        (
            "gzip, 256 MiB after the end",
            Packing::Gzip,
            layers::gzip_bomb(&trailing, GIB_IN_MIB / 4),
        ),
        (
            "zstd, 10 GiB declared",
            Packing::Zstd,
            layers::zstd_bomb(&declared, 10 * GIB_IN_MIB),
        ),
        (
            "zstd, 900 MiB declared",
            Packing::Zstd,
            layers::zstd_bomb(&under_file_limit, 900),
        ),
        (
            "zstd, 10 GiB after the end",
            Packing::Zstd,
            layers::zstd_bomb(&trailing, 10 * GIB_IN_MIB),
        ),
        ("zstd, a 2 GiB window", Packing::Zstd, window),
    ];
    for (what, packing, blob) in cases {
        let never_reached = Digest::of(what.as_bytes());
        let layer = layers::layer_blob(store.blobs(), &blob, packing, never_reached);
        let (digest, size) = layers::image(store.blobs(), &[layer]);
        fs::write("/proc/self/clear_refs", "5").unwrap();
        let rss_before = kib("VmRSS:");
        let started = Instant::now();
        let err = store.install(&digest, size, "bomb").unwrap_err();
        let took = started.elapsed();
        let growth_kib = kib("VmHWM:").saturating_sub(rss_before);
        println!(
            "{what}: {} compressed bytes refused in {took:?}, peak RSS growth {growth_kib} KiB: {err}",
            blob.len()
        );
        let ImageError::Unpack { source, .. } = &err else {
            panic!("{what}: not an unpack refusal: {err}");
        };
        match &**source {
            UnpackError::FileTooLarge { entry, .. } => assert_eq!(entry, &n, "{what}"),
            UnpackError::Limit {
                entry,
                source: StreamError::CompressionRatio { .. },
            } => assert_eq!(entry, &n, "{what}"),
            UnpackError::Stream(StreamError::CompressionRatio { .. }) => {
                assert!(what.contains("after the end"), "{what}")
            }
            UnpackError::Stream(StreamError::ZstdWindow { window, .. }) => {
                assert_eq!(*window, 1 << 31, "{what}")
            }
            other => panic!("{what}: refused for the wrong reason: {other}"),
        }
        assert!(took < Duration::from_secs(30), "{what}: {took:?}");
        assert!(growth_kib < 64 * 1024, "{what}: RSS grew {growth_kib} KiB");
        for sub in ["roots", "index", "tmp"] {
            assert_eq!(
                fs::read_dir(images.join(sub)).unwrap().count(),
                0,
                "{what}: {sub}/ is empty"
            );
        }
    }
}
