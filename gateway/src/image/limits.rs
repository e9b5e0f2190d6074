//! What an image may cost to unpack: the `[images]` section of `gigmcp.toml`. Every limit is
//! checked while the layer streams past (a tar header's declared size before its bytes are
//! read), so a decompression bomb stops after at most the limit, never buffered. The defaults
//! fit an image of about 1 GiB unpacked with room to spare.

use serde::Deserialize;

/// Unpack limits (`[images]` in `gigmcp.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnpackLimits {
    /// Layers in one image (Docker's own ceiling is 127).
    pub max_layers: usize,
    /// Tar entries (headers, extension headers included) in one layer.
    pub max_entries_per_layer: u64,
    /// Tar entries in all the layers of one image.
    pub max_entries: u64,
    /// The longest path in bytes (Linux's PATH_MAX); each component is also held to 255.
    pub max_path_bytes: usize,
    /// The largest single file.
    pub max_file_bytes: u64,
    /// Uncompressed bytes of one layer's tar stream.
    pub max_layer_bytes: u64,
    /// Uncompressed bytes of all the layers of one image.
    pub max_image_bytes: u64,
    /// Uncompressed bytes per compressed byte of a layer, beyond the first
    /// [`RATIO_FLOOR_BYTES`] (a tiny layer compresses far better than any real one).
    pub max_compression_ratio: u64,
    /// The largest window a zstd frame may ask for: the decoder keeps that much of the output
    /// in memory (zstd's own levels 1 to 19 stay within 8 MiB).
    pub max_zstd_window_bytes: u64,
}

/// Uncompressed bytes any layer may have whatever its compressed size (the compression ratio
/// applies past this).
pub const RATIO_FLOOR_BYTES: u64 = 1 << 20;

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_layers: 128,
            max_entries_per_layer: 200_000,
            max_entries: 500_000,
            max_path_bytes: 4096,
            max_file_bytes: 1 << 30,
            max_layer_bytes: 2 << 30,
            max_image_bytes: 3 << 30,
            max_compression_ratio: 100,
            max_zstd_window_bytes: 32 << 20,
        }
    }
}

impl UnpackLimits {
    /// The first limit that cannot admit any image (`images.<key>` and why).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, zero) in [
            ("images.max_layers", self.max_layers == 0),
            (
                "images.max_entries_per_layer",
                self.max_entries_per_layer == 0,
            ),
            ("images.max_entries", self.max_entries == 0),
            ("images.max_file_bytes", self.max_file_bytes == 0),
            (
                "images.max_compression_ratio",
                self.max_compression_ratio == 0,
            ),
        ] {
            if zero {
                return Err((key, "must be at least 1".into()));
            }
        }
        // A tar stream is at least one header and the two end blocks.
        for (key, value) in [
            ("images.max_layer_bytes", self.max_layer_bytes),
            ("images.max_image_bytes", self.max_image_bytes),
        ] {
            if value < 10 * 1024 {
                return Err((key, "must be at least 10240 (one tar record)".into()));
            }
        }
        if self.max_path_bytes < 255 {
            return Err(("images.max_path_bytes", "must be at least 255".into()));
        }
        if !(1 << 20..=1 << 27).contains(&self.max_zstd_window_bytes) {
            return Err((
                "images.max_zstd_window_bytes",
                "must be from 1048576 to 134217728 (zstd's own decoder stops at 128 MiB)".into(),
            ));
        }
        Ok(())
    }
}
