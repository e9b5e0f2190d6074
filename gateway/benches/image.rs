//! Image store figures (issue 11's "unpack MB/s", and the cost of the check before every
//! start): install of a generated ~50 MB layer (uncompressed, gzip, zstd) and verify of the
//! installed root, in MB/s of file bytes, beside GNU tar extracting the same stream to a
//! directory. Best of three runs each.
//!
//! `cargo bench -p gateway --bench image` (add `--profile dev` for a quick debug-build run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway::image::{ImageStore, UnpackLimits};
use testkit::layers::{self, Packing, Tar};

const RUNS: usize = 3;

/// Bytes from a 16-letter alphabet: about 2:1 under gzip, like binaries and text in images.
fn content(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        for i in 0..8 {
            out.push(b'a' + ((*seed >> (i * 4)) & 15) as u8);
        }
    }
    out.truncate(len);
    out
}

/// ~50 MB: 4,000 small files in 100 directories and five 5 MB ones.
fn layer_tar() -> (Vec<u8>, u64) {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut tar = Tar::new();
    let mut bytes = 0u64;
    for d in 0..100 {
        tar.dir(&format!("usr/lib/d{d}/"));
        for f in 0..40 {
            let len = 1000 + (f * 397) % 12_000;
            tar.file(&format!("usr/lib/d{d}/f{f}"), &content(&mut seed, len));
            bytes += len as u64;
        }
    }
    for big in 0..5 {
        let len = 5 << 20;
        tar.exe(&format!("usr/bin/big{big}"), &content(&mut seed, len));
        bytes += len as u64;
    }
    (tar.finish(), bytes)
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().unwrap()
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let (tar, file_bytes) = layer_tar();
    println!(
        "layer: {:.1} MB tar, {:.1} MB in files",
        tar.len() as f64 / 1e6,
        file_bytes as f64 / 1e6
    );
    let dir = tempfile::tempdir().unwrap();
    for packing in [Packing::None, Packing::Gzip, Packing::Zstd] {
        let images = dir.path().join(format!("{packing:?}"));
        let store = ImageStore::open(&images, UnpackLimits::default()).unwrap();
        let layer = layers::layer(store.blobs(), &tar, packing);
        let (digest, size) = layers::image(store.blobs(), std::slice::from_ref(&layer));
        let install = best(|| {
            store.remove(&digest).ok();
            let t = Instant::now();
            store.install(&digest, size, "bench").unwrap();
            t.elapsed()
        });
        let verify = best(|| {
            let t = Instant::now();
            store.verify(&digest).unwrap();
            t.elapsed()
        });
        let blob = store.blobs().path(&layer.digest);
        let gnu = gnu_tar(&blob, packing, dir.path());
        println!(
            "{packing:?}: {:.1} MB compressed; install {:.0} ms = {:.0} MB/s (GNU tar x {:.0} ms = \
             {:.0} MB/s, ratio {:.2}); verify {:.0} ms = {:.0} MB/s",
            layer.size as f64 / 1e6,
            install.as_secs_f64() * 1e3,
            mbps(file_bytes, install),
            gnu.as_secs_f64() * 1e3,
            mbps(file_bytes, gnu),
            install.as_secs_f64() / gnu.as_secs_f64(),
            verify.as_secs_f64() * 1e3,
            mbps(file_bytes, verify),
        );
        store.remove(&digest).unwrap();
    }
}

/// GNU tar extracting the same blob into a fresh directory (zstd through `tar --zstd` when
/// the `zstd` program is installed; otherwise the uncompressed figure stands in).
fn gnu_tar(blob: &Path, packing: Packing, scratch: &Path) -> Duration {
    let flag = match packing {
        Packing::None => None,
        Packing::Gzip => Some("-z"),
        Packing::Zstd => Some("--zstd"),
    };
    best(|| {
        let out = scratch.join("gnu-tar");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let t = Instant::now();
        let mut cmd = Command::new("tar");
        cmd.arg("-x").arg("-C").arg(&out).arg("-f").arg(blob);
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        let status = cmd.status().unwrap();
        let took = t.elapsed();
        assert!(
            status.success(),
            "tar failed on {packing:?} (is zstd installed?)"
        );
        took
    })
}
