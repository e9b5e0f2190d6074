//! A small OCI image builder for tests: a root directory (say from `rootfs::build`) becomes an
//! `oci-layout` directory with one gzip layer, an image config and a manifest, so that tests
//! can import, push or pull a real image without a container engine. The layer is made by GNU
//! tar with fixed owners, order and times and by `gzip -n` (no name, no time), so the same tree
//! gives the same digest; gzip, because skopeo compresses an uncompressed layer it pushes,
//! which would change the digest the test pinned.

use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// What was built: the digests (`sha256:<hex>`) of the manifest, the config and the layer.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `bytes` as a blob of `layout`; returns its descriptor's digest and size.
fn blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    (digest, bytes.len())
}

/// The tree under `root` as an uncompressed tar: entries named from the root without a
/// leading `./`, owned by 0:0, sorted, dated 1970.
pub fn layer_tar(root: &Path) -> Vec<u8> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-cf",
            "-",
            "-C",
        ])
        .arg(root)
        .args(&names)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `bytes` through `gzip -n` (reproducible: no file name, no time stamp).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// Builds `layout` (an `oci-layout` directory, tagged `tag`) from the tree under `root`, with
/// `run` as the image config's `config` object (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`,
/// `User`, ...).
pub fn build_layout(layout: &Path, root: &Path, run: serde_json::Value, tag: &str) -> Built {
    let tar = layer_tar(root);
    let diff_id = sha256(&tar);
    let (layer_digest, layer_size) = blob(layout, &gzip(&tar));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (config_digest, config_size) = blob(layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    Built {
        manifest_digest,
        config_digest,
        layer_digest,
    }
}
