//! OCI images written straight into an image store's blob store, from tar streams built entry
//! by entry: hostile ones included (absolute names, `..`, device nodes, modes with type bits,
//! PAX records), which the `tar` crate's own builder refuses to write. Also decompression
//! bombs, made block by block so that building one costs nothing.

use gateway::image::blobs::BlobStore;
use gateway::image::digest::Digest;
use gateway::image::oci::{self, Platform};
use tar::{EntryType, Header};

/// A tar stream under construction.
#[derive(Debug, Default, Clone)]
pub struct Tar {
    out: Vec<u8>,
}

/// A fixed mtime for entries (so tests can check it is kept).
pub const MTIME: u64 = 1_600_000_000;

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Directory, 0o755, b"", b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Regular, 0o644, b"", data)
    }

    pub fn exe(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Regular, 0o755, b"", data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            EntryType::Symlink,
            0o777,
            target.as_bytes(),
            b"",
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            EntryType::Link,
            0o644,
            target.as_bytes(),
            b"",
        )
    }

    /// An empty whiteout file (`.wh.NAME`, `.wh..wh..opq`).
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, b"")
    }

    /// Any entry, names as given (a GNU long-name header first if over 100 bytes).
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        self.entry_sized(name, kind, mode, link, data, data.len() as u64)
    }

    /// An entry whose header declares `size` bytes, followed by `data` (a bomb declares more
    /// than it carries; the caller appends the rest).
    pub fn entry_sized(
        &mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        link: &[u8],
        data: &[u8],
        size: u64,
    ) -> &mut Self {
        if name.len() > 100 {
            self.gnu_long_name(name);
        }
        let mut h = Header::new_gnu();
        let short = &name[..name.len().min(100)];
        h.as_old_mut().name[..short.len()].copy_from_slice(short);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.pad();
        self
    }

    /// A GNU long-name header (type `L`) for the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        self.extension(
            EntryType::GNULongName,
            b"././@LongLink",
            &[name, b"\0"].concat(),
        )
    }

    /// A PAX extended header (type `x`) for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            // "LEN key=value\n", LEN counting itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.extension(EntryType::XHeader, b"PaxHeaders/x", &body)
    }

    fn extension(&mut self, kind: EntryType, name: &[u8], body: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(body);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let rem = self.out.len() % 512;
        if rem != 0 {
            self.out.resize(self.out.len() + 512 - rem, 0);
        }
    }

    /// The bytes so far, without the end-of-archive blocks.
    pub fn unterminated(&self) -> Vec<u8> {
        self.out.clone()
    }

    /// The finished stream (two zero blocks at the end).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// How a test layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    None,
    Gzip,
    Zstd,
}

impl Packing {
    pub fn media_type(self) -> &'static str {
        match self {
            Packing::None => oci::MEDIA_OCI_LAYER_TAR,
            Packing::Gzip => oci::MEDIA_OCI_LAYER_GZIP,
            Packing::Zstd => oci::MEDIA_OCI_LAYER_ZSTD,
        }
    }

    pub fn pack(self, tar: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match self {
            Packing::None => tar.to_vec(),
            Packing::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Packing::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

/// A stored layer: its descriptor fields and the diff_id its config will list.
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: &'static str,
    pub diff_id: Digest,
}

/// Stores `bytes` as a blob; its digest and size.
pub fn put(blobs: &BlobStore, bytes: &[u8]) -> (Digest, u64) {
    let d = Digest::of(bytes);
    let mut w = blobs.writer(&d, bytes.len() as u64).unwrap();
    w.write(bytes).unwrap();
    w.commit().unwrap();
    (d, bytes.len() as u64)
}

/// Stores a layer made of `tar`, compressed by `packing`.
pub fn layer(blobs: &BlobStore, tar: &[u8], packing: Packing) -> LayerRef {
    layer_blob(blobs, &packing.pack(tar), packing, Digest::of(tar))
}

/// Stores a layer blob as given, claiming `diff_id`.
pub fn layer_blob(blobs: &BlobStore, blob: &[u8], packing: Packing, diff_id: Digest) -> LayerRef {
    let (digest, size) = put(blobs, blob);
    LayerRef {
        digest,
        size,
        media_type: packing.media_type(),
        diff_id,
    }
}

/// Stores a config and manifest for `layers` (bottom first); the manifest's digest and size.
pub fn image(blobs: &BlobStore, layers: &[LayerRef]) -> (Digest, u64) {
    image_labelled(blobs, layers, "")
}

/// As [`image`], with a label that makes the config (and so the image) distinct.
pub fn image_labelled(blobs: &BlobStore, layers: &[LayerRef], label: &str) -> (Digest, u64) {
    let host = Platform::host();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = serde_json::json!({
        "architecture": host.architecture,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/server"], "Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(blobs, &serde_json::to_vec(&config).unwrap());
    let layer_json: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": layer_json,
    });
    put(blobs, &serde_json::to_vec(&manifest).unwrap())
}

/// Stores an index listing `manifests` as (digest, size, architecture).
pub fn index(blobs: &BlobStore, manifests: &[(Digest, u64, &str)]) -> (Digest, u64) {
    let entries: Vec<_> = manifests
        .iter()
        .map(|(d, size, arch)| {
            serde_json::json!({
                "mediaType": oci::MEDIA_OCI_MANIFEST, "digest": d.to_string(), "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::MEDIA_OCI_INDEX, "manifests": entries,
    });
    put(blobs, &serde_json::to_vec(&index).unwrap())
}

/// A gzip stream of `prefix` followed by `zeros_mib` MiB of zeros, as concatenated members (each
/// 1 MiB of zeros compressed once and repeated): about 1 KiB per MiB.
pub fn gzip_bomb(prefix: &[u8], zeros_mib: usize) -> Vec<u8> {
    let mut out = Packing::Gzip.pack(prefix);
    let member = Packing::Gzip.pack(&vec![0u8; 1 << 20]);
    for _ in 0..zeros_mib {
        out.extend_from_slice(&member);
    }
    out
}

/// A zstd frame carrying `prefix` in raw blocks, then `zeros_mib` MiB of zeros in RLE blocks
/// (4 bytes per 128 KiB): 10 GiB in about 320 KiB.
pub fn zstd_bomb(prefix: &[u8], zeros_mib: usize) -> Vec<u8> {
    const BLOCK: usize = 128 << 10;
    let mut out = 0xFD2F_B528u32.to_le_bytes().to_vec();
    // No content size, not single-segment; window 128 KiB (exponent 7).
    out.extend_from_slice(&[0x00, 7 << 3]);
    let blocks = zeros_mib * 8;
    let block_header = |size: usize, kind: u32, last: bool| {
        let v = ((size as u32) << 3) | (kind << 1) | u32::from(last);
        v.to_le_bytes()[..3].to_vec()
    };
    for chunk in prefix.chunks(BLOCK) {
        out.extend_from_slice(&block_header(chunk.len(), 0, false));
        out.extend_from_slice(chunk);
    }
    for i in 0..blocks {
        out.extend_from_slice(&block_header(BLOCK, 1, i + 1 == blocks));
        out.push(0);
    }
    if blocks == 0 {
        out.extend_from_slice(&block_header(0, 0, true));
    }
    out
}
