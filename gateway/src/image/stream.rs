//! A layer's uncompressed tar stream: the stored blob (re-hashed against its digest as it is
//! read) decompressed by its media type, in pure Rust (gzip by miniz_oxide, zstd by ruzstd:
//! hostile bytes are parsed here), counted against the layer's budget and hashed for the
//! config's `diff_id`. The budget is the least of the layer limit, what the image limit has
//! left and the compression ratio times the compressed size, so a decompression bomb stops
//! once it has produced that much, with nothing buffered beyond the decoders' own windows
//! (32 KiB for deflate; for zstd the window the frame asks for, refused past a configured
//! ceiling before the decoder allocates it).

use std::io::{self, BufReader, Cursor, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use super::blobs::{BlobError, VerifyingReader};
use super::digest::{Digest, Hasher};
use super::limits::{RATIO_FLOOR_BYTES, UnpackLimits};
use super::oci::Compression;

/// Why a layer's stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the layer's tar stream passes the {limit}-byte layer limit (images.max_layer_bytes)")]
    LayerTooLarge { limit: u64 },
    #[error(
        "the image's layers pass the {limit}-byte limit for a whole image (images.max_image_bytes)"
    )]
    ImageTooLarge { limit: u64 },
    #[error(
        "the layer decompresses to more than {ratio} times its {compressed} compressed bytes \
         (images.max_compression_ratio): a decompression bomb"
    )]
    CompressionRatio { ratio: u64, compressed: u64 },
    #[error(
        "a zstd frame asks for a {window}-byte window, over the {limit}-byte ceiling \
         (images.max_zstd_window_bytes)"
    )]
    ZstdWindow { window: u64, limit: u64 },
    #[error("the layer is not valid {format}: {message}")]
    Decompress {
        format: &'static str,
        message: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// How many uncompressed bytes a layer may have, and which limit says so.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub bytes: u64,
    exceeded: Exceeded,
}

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Layer(u64),
    Image(u64),
    Ratio { ratio: u64, compressed: u64 },
}

impl Budget {
    /// The budget of a layer of `compressed` bytes when `used` bytes of the image's budget
    /// are spent.
    pub fn new(
        limits: &UnpackLimits,
        compression: Compression,
        compressed: u64,
        used: u64,
    ) -> Self {
        let mut budget = Self {
            bytes: limits.max_layer_bytes,
            exceeded: Exceeded::Layer(limits.max_layer_bytes),
        };
        let image_left = limits.max_image_bytes.saturating_sub(used);
        if image_left < budget.bytes {
            budget = Self {
                bytes: image_left,
                exceeded: Exceeded::Image(limits.max_image_bytes),
            };
        }
        if compression != Compression::None {
            let ratio = compressed
                .saturating_mul(limits.max_compression_ratio)
                .max(RATIO_FLOOR_BYTES);
            if ratio < budget.bytes {
                budget = Self {
                    bytes: ratio,
                    exceeded: Exceeded::Ratio {
                        ratio: limits.max_compression_ratio,
                        compressed,
                    },
                };
            }
        }
        budget
    }

    /// The refusal for going past this budget.
    pub fn error(&self) -> StreamError {
        match self.exceeded {
            Exceeded::Layer(limit) => StreamError::LayerTooLarge { limit },
            Exceeded::Image(limit) => StreamError::ImageTooLarge { limit },
            Exceeded::Ratio { ratio, compressed } => {
                StreamError::CompressionRatio { ratio, compressed }
            }
        }
    }
}

/// The uncompressed stream of one layer. Errors come out as `io::Error`s carrying a
/// [`StreamError`] (see [`StreamError::from_io`]), since the tar reader sits on top.
pub struct LayerStream {
    decoder: Decoder,
    read: u64,
    budget: Budget,
    hasher: Hasher,
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("read", &self.read)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Decoders read from a buffered blob and are read through a buffer: the tar reader asks for
/// 512-byte headers, and ruzstd in particular does a block's bookkeeping per read.
enum Decoder {
    None(Blob),
    Gzip(Box<BufReader<flate2::bufread::MultiGzDecoder<Blob>>>),
    Zstd(Box<BufReader<ZstdFrames>>),
}

/// The stored blob, read in large pieces: tar headers and zstd block headers are a few
/// hundred bytes, each of which would otherwise be a system call.
type Blob = BufReader<Fuse>;

const BLOB_BUFFER: usize = 256 << 10;
const DECODED_BUFFER: usize = 128 << 10;

impl LayerStream {
    pub fn new(
        blob: VerifyingReader,
        compression: Compression,
        budget: Budget,
        limits: &UnpackLimits,
    ) -> Self {
        let blob = BufReader::with_capacity(
            BLOB_BUFFER,
            Fuse {
                inner: blob,
                eof: false,
            },
        );
        let decoder = match compression {
            Compression::None => Decoder::None(blob),
            // Multi-member, as Go's reader (and so most registries' clients) accepts.
            Compression::Gzip => Decoder::Gzip(Box::new(BufReader::with_capacity(
                DECODED_BUFFER,
                flate2::bufread::MultiGzDecoder::new(blob),
            ))),
            Compression::Zstd => Decoder::Zstd(Box::new(BufReader::with_capacity(
                DECODED_BUFFER,
                ZstdFrames {
                    state: ZState::Between(blob),
                    max_window: limits.max_zstd_window_bytes,
                },
            ))),
        };
        Self {
            decoder,
            read: 0,
            budget,
            hasher: Hasher::default(),
        }
    }

    /// Reads what the tar reader left (padding past the end-of-archive blocks is part of the
    /// diff_id), then returns the diff_id and the stream's length. The compressed blob is read
    /// to its end on the way, which is when its own digest is checked.
    pub fn finish(mut self) -> Result<(Digest, u64), StreamError> {
        io::copy(&mut self, &mut io::sink()).map_err(StreamError::from_io)?;
        // A decoder may stop at the end of its format's data: whatever follows in the blob
        // (none is allowed) must still be read, so the blob's digest is checked.
        let mut rest = [0u8; 1];
        let blob = match &mut self.decoder {
            Decoder::None(b) => Some(b),
            Decoder::Gzip(g) => Some(g.get_mut().get_mut()),
            Decoder::Zstd(z) => z.get_mut().source(),
        };
        let Some(blob) = blob else {
            return Err(StreamError::Decompress {
                format: "zstd",
                message: "the stream failed earlier".into(),
            });
        };
        if blob.read(&mut rest).map_err(StreamError::from_io)? != 0 {
            return Err(StreamError::Decompress {
                format: "a layer",
                message: "bytes follow the compressed stream".into(),
            });
        }
        Ok((self.hasher.finish(), self.read))
    }

    fn format(&self) -> &'static str {
        match self.decoder {
            Decoder::None(_) => "tar",
            Decoder::Gzip(_) => "gzip",
            Decoder::Zstd(_) => "zstd",
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read >= self.budget.bytes {
            // One byte more would pass the budget: ask for it only to know whether it exists.
            let mut probe = [0u8; 1];
            let n = self.read_decoded(&mut probe)?;
            if n == 0 {
                return Ok(0);
            }
            return Err(io::Error::other(self.budget.error()));
        }
        let room = (self.budget.bytes - self.read).min(buf.len() as u64) as usize;
        let n = self.read_decoded(&mut buf[..room])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl LayerStream {
    fn read_decoded(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let format = self.format();
        let result = match &mut self.decoder {
            Decoder::None(b) => b.read(buf),
            Decoder::Gzip(g) => g.read(buf),
            Decoder::Zstd(z) => z.read(buf),
        };
        result.map_err(|e| {
            let ours = e
                .get_ref()
                .is_some_and(|i| i.is::<StreamError>() || i.is::<BlobError>());
            if ours {
                e
            } else {
                io::Error::other(StreamError::Decompress {
                    format,
                    message: e.to_string(),
                })
            }
        })
    }
}

impl StreamError {
    /// The [`StreamError`] an `io::Error` from a [`LayerStream`] carries, if it carries one.
    pub fn take(e: io::Error) -> Result<StreamError, io::Error> {
        match e.get_ref() {
            Some(i) if i.is::<StreamError>() => Ok(*e
                .into_inner()
                .expect("checked")
                .downcast::<StreamError>()
                .expect("checked")),
            Some(i) if i.is::<BlobError>() => Ok(StreamError::Blob(
                *e.into_inner()
                    .expect("checked")
                    .downcast::<BlobError>()
                    .expect("checked"),
            )),
            _ => Err(e),
        }
    }

    fn from_io(e: io::Error) -> StreamError {
        Self::take(e).unwrap_or_else(|e| StreamError::Decompress {
            format: "a layer",
            message: e.to_string(),
        })
    }
}

/// The blob reader, never read again once it reported its end: the verifying reader checks
/// the digest at the end, once, and decoders may ask twice.
struct Fuse {
    inner: VerifyingReader,
    eof: bool,
}

impl Read for Fuse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.eof = n == 0;
        Ok(n)
    }
}

/// A zstd stream: frames one after another (skippable frames skipped), each one's window
/// checked from its header before ruzstd, which keeps a window's worth of output, sees it.
struct ZstdFrames {
    state: ZState,
    max_window: u64,
}

enum ZState {
    Between(Blob),
    InFrame(Box<FrameReader>),
    Done(Blob),
    Taken,
}

/// One frame's decoder, reading the frame header back from memory and then the blob.
type FrameReader = StreamingDecoder<io::Chain<Cursor<Vec<u8>>, Blob>, FrameDecoder>;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

impl ZstdFrames {
    /// The blob beneath, unless a failed read left the stream unusable.
    fn source(&mut self) -> Option<&mut Blob> {
        match &mut self.state {
            ZState::Between(s) | ZState::Done(s) => Some(s),
            ZState::InFrame(d) => Some(d.get_mut().get_mut().1),
            ZState::Taken => None,
        }
    }

    /// Reads the next frame's header; `None` at the end of the stream.
    fn next_frame(&mut self, mut src: Blob) -> io::Result<Result<ZState, Blob>> {
        let mut magic = [0u8; 4];
        let got = read_full(&mut src, &mut magic)?;
        if got == 0 {
            return Ok(Err(src));
        }
        if got < 4 {
            return Err(zstd_error("truncated frame magic"));
        }
        let magic_num = u32::from_le_bytes(magic);
        if (0x184D_2A50..=0x184D_2A5F).contains(&magic_num) {
            let mut len = [0u8; 4];
            read_exact(&mut src, &mut len)?;
            let len = u64::from(u32::from_le_bytes(len));
            let skipped = io::copy(&mut (&mut src).take(len), &mut io::sink())?;
            if skipped != len {
                return Err(zstd_error("truncated skippable frame"));
            }
            return Ok(Ok(ZState::Between(src)));
        }
        if magic_num != ZSTD_MAGIC {
            return Err(zstd_error(&format!("bad frame magic {magic_num:#010x}")));
        }
        let mut header = magic.to_vec();
        let mut fhd = [0u8; 1];
        read_exact(&mut src, &mut fhd)?;
        header.push(fhd[0]);
        let single_segment = fhd[0] & 0x20 != 0;
        let window_descriptor = if single_segment {
            None
        } else {
            let mut wd = [0u8; 1];
            read_exact(&mut src, &mut wd)?;
            header.push(wd[0]);
            Some(wd[0])
        };
        let dict_len = [0usize, 1, 2, 4][usize::from(fhd[0] & 3)];
        let fcs_len = match fhd[0] >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let mut rest = vec![0u8; dict_len + fcs_len];
        read_exact(&mut src, &mut rest)?;
        let fcs_bytes = &rest[dict_len..];
        let mut content_size = [0u8; 8];
        content_size[..fcs_len].copy_from_slice(fcs_bytes);
        let mut content_size = u64::from_le_bytes(content_size);
        if fcs_len == 2 {
            content_size += 256;
        }
        header.extend_from_slice(&rest);
        let window = match window_descriptor {
            // Single segment: the window is the whole frame's content.
            None => content_size,
            Some(wd) => {
                let exponent = u32::from(wd >> 3);
                let base = 1u64 << (10 + exponent);
                base + (base / 8) * u64::from(wd & 7)
            }
        };
        if window > self.max_window {
            return Err(io::Error::other(StreamError::ZstdWindow {
                window,
                limit: self.max_window,
            }));
        }
        let decoder = StreamingDecoder::new(Cursor::new(header).chain(src))
            .map_err(|e| zstd_error(&e.to_string()))?;
        Ok(Ok(ZState::InFrame(Box::new(decoder))))
    }
}

impl Read for ZstdFrames {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(&mut self.state, ZState::Taken) {
                ZState::Done(src) => {
                    self.state = ZState::Done(src);
                    return Ok(0);
                }
                ZState::Between(src) => match self.next_frame(src)? {
                    Ok(state) => self.state = state,
                    Err(src) => self.state = ZState::Done(src),
                },
                ZState::InFrame(mut decoder) => {
                    let n = decoder.read(buf)?;
                    if n > 0 || buf.is_empty() {
                        self.state = ZState::InFrame(decoder);
                        return Ok(n);
                    }
                    let (_, src) = decoder.into_inner().into_inner();
                    self.state = ZState::Between(src);
                }
                ZState::Taken => return Err(zstd_error("a previous read failed")),
            }
        }
    }
}

fn zstd_error(message: &str) -> io::Error {
    io::Error::other(StreamError::Decompress {
        format: "zstd",
        message: message.into(),
    })
}

/// Reads until `buf` is full or the stream ends; how many bytes arrived.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_exact(src: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    if read_full(src, buf)? < buf.len() {
        return Err(zstd_error("truncated frame header"));
    }
    Ok(())
}
