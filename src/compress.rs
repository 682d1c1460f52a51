//! Compression as E2B uses it since 2026-05 (reference: e2b-formats.md §3, §7): V4/V5 header
//! blocks are one LZ4 frame (4 MiB blocks, block and content checksums), and compressed data files
//! (`rootfs.ext4.zstd`, `memfile.lz4`, ...) are concatenations of independently compressed zstd
//! or LZ4 frames described by a frame table.
//!
//! The LZ4 *frame* decoder is ours (the block codec is `lz4_flex`): it reports a checksum failure
//! as such (the header's xxHash32 descriptor, block and content checksums are distinct findings),
//! notices a frame cut before its end mark, bounds its output before allocating, and stops at the
//! end of one frame so callers can tell what follows. zstd frames go through libzstd (`zstd`
//! crate), which checks the frame's content checksum.

use std::hash::Hasher;
use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};
use twox_hash::XxHash32;

/// Compression type of a frame table (`storage.CompressionType` in E2B).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Lz4,
}

impl Compression {
    /// From the u32 stored in a frame table (0 none, 1 zstd, 2 lz4).
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Lz4 => 2,
        }
    }

    /// Suffix of the data file (`.zstd`, `.lz4`, or none).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zstd",
            Compression::Lz4 => ".lz4",
        }
    }

    /// The most uncompressed bytes one block of a frame can hold: a decoder outputs nothing of a
    /// block before it has read all of it (zstd: `ZSTD_BLOCKSIZE_MAX`, 128 KiB, from the zstd
    /// format spec (RFC 8878 §3.1.1.2.3); LZ4: the largest block-maximum-size of the frame
    /// format, 4 MiB).
    pub fn block_span(self) -> u64 {
        match self {
            Compression::None => 1,
            Compression::Zstd => 128 << 10,
            Compression::Lz4 => 4 << 20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    /// From a data file's suffix.
    pub fn from_suffix(s: &str) -> Option<Self> {
        match s {
            ".zstd" => Some(Compression::Zstd),
            ".lz4" => Some(Compression::Lz4),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// LZ4 frame format (lz4_Frame_format.md): magic, FLG, BD, [content size], [dict id], HC, blocks
// (u32 size, high bit = stored uncompressed, 0 = end mark; data; [xxh32 of the stored bytes]),
// [xxh32 of the content].

pub const LZ4_MAGIC: u32 = 0x184D_2204;
const LZ4_WINDOW: usize = 64 * 1024;

/// Why an LZ4 frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lz4Error {
    #[error("not an LZ4 frame: magic {0:#010x}, expected 0x184d2204")]
    BadMagic(u32),
    #[error("bad LZ4 frame descriptor: {0}")]
    BadDescriptor(String),
    #[error("LZ4 frame descriptor checksum mismatch: stored {stored:#04x}, computed {computed:#04x}")]
    HeaderChecksum { stored: u8, computed: u8 },
    #[error("LZ4 block {block} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BlockChecksum { block: u64, stored: u32, computed: u32 },
    #[error("LZ4 content checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ContentChecksum { stored: u32, computed: u32 },
    #[error("LZ4 block {block} holds {size} bytes, more than the frame's {max}-byte block size")]
    BlockTooBig { block: u64, size: u64, max: u64 },
    #[error("LZ4 block {block} is corrupt: {reason}")]
    CorruptBlock { block: u64, reason: String },
    #[error("LZ4 frame is truncated: {0}")]
    Truncated(String),
    #[error("LZ4 frame decompresses to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("LZ4 frame says its content is {declared} bytes but holds {actual}")]
    ContentSize { declared: u64, actual: u64 },
    #[error("{0} bytes follow the LZ4 frame")]
    Trailing(u64),
    #[error("reading the LZ4 frame: {0}")]
    Io(String),
}

impl Lz4Error {
    /// One of the frame's own checksums failed (descriptor, block or content).
    pub fn is_checksum(&self) -> bool {
        matches!(
            self,
            Lz4Error::HeaderChecksum { .. } | Lz4Error::BlockChecksum { .. } | Lz4Error::ContentChecksum { .. }
        )
    }
}

/// Sizes of one decoded LZ4 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lz4Frame {
    /// Decompressed bytes.
    pub decoded: u64,
    /// Bytes of the frame consumed from the input.
    pub consumed: u64,
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), Lz4Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Lz4Error::Truncated(format!("input ends inside the {what}")),
        _ => Lz4Error::Io(e.to_string()),
    })
}

fn read_u32<R: Read>(r: &mut R, what: &str) -> Result<u32, Lz4Error> {
    let mut b = [0u8; 4];
    read_full(r, &mut b, what)?;
    Ok(u32::from_le_bytes(b))
}

/// Decode one LZ4 frame from `r`, passing the decompressed bytes to `sink` block by block
/// (at most 4 MiB at a time). Output beyond `limit` bytes is refused before it is produced.
/// Returns `Ok(None)` when `r` is at its end before the frame starts.
pub fn lz4_decode_frame<R: Read>(
    r: &mut R,
    limit: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Option<Lz4Frame>, Lz4Error> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut magic[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Lz4Error::Truncated("input ends inside the magic number".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Lz4Error::Io(e.to_string())),
        }
    }
    let magic = u32::from_le_bytes(magic);
    if magic != LZ4_MAGIC {
        return Err(Lz4Error::BadMagic(magic));
    }
    let mut consumed = 4u64;
    let mut desc = [0u8; 14];
    read_full(r, &mut desc[..2], "frame descriptor")?;
    let (flg, bd) = (desc[0], desc[1]);
    if flg >> 6 != 1 {
        return Err(Lz4Error::BadDescriptor(format!("version {} (expected 1)", flg >> 6)));
    }
    if flg & 0x02 != 0 || bd & 0x8F != 0 {
        return Err(Lz4Error::BadDescriptor("reserved bits are set".into()));
    }
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let has_content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    if flg & 0x01 != 0 {
        return Err(Lz4Error::BadDescriptor("dictionary frames are not used by E2B".into()));
    }
    let max_block: u64 = match (bd >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        v => return Err(Lz4Error::BadDescriptor(format!("block size id {v}"))),
    };
    let mut dlen = 2;
    let mut declared = None;
    if has_content_size {
        read_full(r, &mut desc[2..10], "frame descriptor")?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&desc[2..10]);
        declared = Some(u64::from_le_bytes(b));
        dlen = 10;
    }
    let mut hc = [0u8; 1];
    read_full(r, &mut hc, "frame descriptor")?;
    let [_, computed, _, _] = XxHash32::oneshot(0, &desc[..dlen]).to_le_bytes();
    if hc[0] != computed {
        return Err(Lz4Error::HeaderChecksum { stored: hc[0], computed });
    }
    consumed += dlen as u64 + 1;

    let mut content = XxHash32::with_seed(0);
    let mut src: Vec<u8> = Vec::new();
    let mut dst: Vec<u8> = Vec::new();
    // Linked blocks reference up to 64 KiB of the previous output.
    let mut window: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut block = 0u64;
    loop {
        let word = read_u32(r, "block size (no end mark)")?;
        consumed += 4;
        if word == 0 {
            break;
        }
        let stored = word & 0x8000_0000 != 0;
        let size = u64::from(word & 0x7FFF_FFFF);
        if size > max_block {
            return Err(Lz4Error::BlockTooBig { block, size, max: max_block });
        }
        src.resize(crate::num::usize_from(size), 0);
        read_full(r, &mut src, "block data")?;
        consumed += size;
        if block_checksums {
            let stored_sum = read_u32(r, "block checksum")?;
            consumed += 4;
            let computed = XxHash32::oneshot(0, &src);
            if stored_sum != computed {
                return Err(Lz4Error::BlockChecksum { block, stored: stored_sum, computed });
            }
        }
        let out: &[u8] = if stored {
            &src
        } else {
            dst.resize(crate::num::usize_from(max_block), 0);
            let n = if independent || window.is_empty() {
                lz4_flex::block::decompress_into(&src, &mut dst)
            } else {
                lz4_flex::block::decompress_into_with_dict(&src, &mut dst, &window)
            }
            .map_err(|e| Lz4Error::CorruptBlock { block, reason: e.to_string() })?;
            &dst[..n]
        };
        if total + out.len() as u64 > limit {
            return Err(Lz4Error::TooLarge { limit });
        }
        total += out.len() as u64;
        if content_checksum {
            content.write(out);
        }
        if !independent {
            window.extend_from_slice(out);
            if window.len() > LZ4_WINDOW {
                window.drain(..window.len() - LZ4_WINDOW);
            }
        }
        sink(out).map_err(|e| Lz4Error::Io(e.to_string()))?;
        block += 1;
    }
    if content_checksum {
        let stored = read_u32(r, "content checksum")?;
        consumed += 4;
        let computed = content.finish_32();
        if stored != computed {
            return Err(Lz4Error::ContentChecksum { stored, computed });
        }
    }
    if let Some(d) = declared
        && d != total
    {
        return Err(Lz4Error::ContentSize { declared: d, actual: total });
    }
    Ok(Some(Lz4Frame { decoded: total, consumed }))
}

/// Decode `src`, which must be exactly one LZ4 frame, into memory (at most `limit` bytes).
pub fn lz4_decode_all(src: &[u8], limit: u64) -> Result<Vec<u8>, Lz4Error> {
    let mut out = Vec::new();
    let mut r = src;
    let frame = lz4_decode_frame(&mut r, limit, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    if frame.is_none() {
        return Err(Lz4Error::Truncated("no frame".into()));
    }
    if !r.is_empty() {
        return Err(Lz4Error::Trailing(r.len() as u64));
    }
    Ok(out)
}

/// One LZ4 frame the way E2B writes header blocks: 4 MiB independent blocks, block checksums and
/// a content checksum.
pub fn lz4_encode(data: &[u8]) -> Vec<u8> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;
    let info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .block_checksums(true)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2 + 64));
    // Writing into a Vec cannot fail; the frame encoder's own errors are impossible for these
    // settings. Fall back to an empty frame rather than panic.
    if enc.write_all(data).is_err() {
        return Vec::new();
    }
    enc.finish().unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// Data frames.

/// Why a data frame could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// The frame is not valid compressed data (or is cut short).
    Corrupt,
    /// The frame's own checksum (zstd content checksum, LZ4 block/content checksum) failed.
    Checksum,
    /// The frame decompressed to a different size than the frame table says.
    Size,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    pub kind: FrameErrorKind,
    pub message: String,
}

impl FrameError {
    fn new(kind: FrameErrorKind, message: impl Into<String>) -> Self {
        FrameError { kind, message: message.into() }
    }

    fn from_lz4(e: Lz4Error, size_u: u64) -> Self {
        let kind = match &e {
            _ if e.is_checksum() => FrameErrorKind::Checksum,
            Lz4Error::TooLarge { .. } => {
                return FrameError::new(FrameErrorKind::Size, format!("decompresses to more than {size_u} bytes"));
            }
            _ => FrameErrorKind::Corrupt,
        };
        FrameError::new(kind, e.to_string())
    }

    fn from_zstd(e: &io::Error, size_u: u64) -> Self {
        let msg = e.to_string();
        if msg.contains("checksum") {
            FrameError::new(FrameErrorKind::Checksum, format!("zstd: {msg}"))
        } else if msg.contains("too small") {
            FrameError::new(FrameErrorKind::Size, format!("decompresses to more than {size_u} bytes"))
        } else {
            FrameError::new(FrameErrorKind::Corrupt, format!("zstd: {msg}"))
        }
    }
}

/// Reusable per-thread state for decompressing data frames.
pub struct FrameDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder").field("zstd", &self.zstd.is_some()).finish()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder { zstd: None }
    }

    /// Decompress `src` (exactly one frame of `compression`) into `out`, which is cleared first.
    /// The result must be exactly `size_u` bytes.
    pub fn decode_into(
        &mut self,
        compression: Compression,
        src: &[u8],
        size_u: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        out.clear();
        match compression {
            Compression::None => out.extend_from_slice(src),
            Compression::Zstd => {
                if self.zstd.is_none() {
                    let d = zstd::bulk::Decompressor::new()
                        .map_err(|e| FrameError::new(FrameErrorKind::Corrupt, format!("zstd context: {e}")))?;
                    self.zstd = Some(d);
                }
                let Some(d) = self.zstd.as_mut() else {
                    return Err(FrameError::new(FrameErrorKind::Corrupt, "zstd context unavailable"));
                };
                out.reserve(size_u);
                d.decompress_to_buffer(src, out).map_err(|e| FrameError::from_zstd(&e, size_u as u64))?;
            }
            Compression::Lz4 => {
                out.reserve(size_u);
                let mut r = src;
                let frame = lz4_decode_frame(&mut r, size_u as u64, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })
                .map_err(|e| FrameError::from_lz4(e, size_u as u64))?;
                if frame.is_none() {
                    return Err(FrameError::new(FrameErrorKind::Corrupt, "empty frame"));
                }
                if !r.is_empty() {
                    return Err(FrameError::new(
                        FrameErrorKind::Corrupt,
                        format!("{} bytes of the frame's compressed range follow its LZ4 frame", r.len()),
                    ));
                }
            }
        }
        if out.len() != size_u {
            return Err(FrameError::new(
                FrameErrorKind::Size,
                format!("decompresses to {} bytes, the frame table says {size_u}", out.len()),
            ));
        }
        Ok(())
    }
}

/// Decompress the beginning of one frame of `compression` read from `r` into `out` (cleared
/// first), stopping once at least `want` bytes are out: a read of a few blocks from a large frame
/// then costs only the compressed bytes before them, not the whole frame (what a remote object
/// read by ranged GETs needs). At most one chunk of 64 KiB more than `want` is decoded; a frame
/// that ends first, or would decode to more than `size_u`, is a [`FrameErrorKind::Size`] error.
/// The frame's own checksum is stored at its end, so a prefix is not checked against it: decode
/// the whole frame with [`FrameDecoder::decode_into`] for that.
pub fn decode_prefix<R: BufRead>(
    compression: Compression,
    r: R,
    size_u: usize,
    want: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    const CHUNK: usize = 64 << 10;
    out.clear();
    let want = want.min(size_u);
    let too_big = || FrameError::new(FrameErrorKind::Size, format!("decompresses to more than {size_u} bytes"));
    match compression {
        Compression::None => {
            let mut r = r.take(crate::num::u64_from(want));
            r.read_to_end(out).map_err(|e| FrameError::new(FrameErrorKind::Corrupt, e.to_string()))?;
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)
                .map_err(|e| FrameError::from_zstd(&e, crate::num::u64_from(size_u)))?
                .single_frame();
            let mut chunk = vec![0u8; CHUNK];
            while out.len() < want {
                // One byte more than the frame may hold, to notice a frame that is too large.
                let room = (size_u - out.len() + 1).min(CHUNK);
                let n = match d.read(&mut chunk[..room]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(FrameError::from_zstd(&e, crate::num::u64_from(size_u))),
                };
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
                if out.len() > size_u {
                    return Err(too_big());
                }
            }
        }
        Compression::Lz4 => {
            let mut r = r;
            let mut stopped = false;
            let res = lz4_decode_frame(&mut r, crate::num::u64_from(size_u), &mut |b| {
                out.extend_from_slice(b);
                if out.len() >= want {
                    stopped = true;
                    return Err(io::Error::other("enough"));
                }
                Ok(())
            });
            match res {
                _ if stopped => {}
                Ok(Some(_)) => {}
                Ok(None) => return Err(FrameError::new(FrameErrorKind::Corrupt, "empty frame")),
                Err(e) => return Err(FrameError::from_lz4(e, crate::num::u64_from(size_u))),
            }
            if out.len() > size_u {
                return Err(too_big());
            }
        }
    }
    if out.len() < want {
        return Err(FrameError::new(
            FrameErrorKind::Size,
            format!("decompresses to {} bytes, the frame table says {size_u}", out.len()),
        ));
    }
    Ok(())
}

/// Decompress a stream of concatenated frames from `r`, passing the output to `sink` in chunks
/// of at most 4 MiB. Returns the number of decompressed bytes. Used where no frame table
/// describes the bytes (a frame table trimmed to the frames a child reads).
pub fn decode_stream<R: Read>(
    compression: Compression,
    r: R,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, FrameError> {
    match compression {
        Compression::None => {
            let mut r = r;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf).map_err(|e| FrameError::new(FrameErrorKind::Corrupt, e.to_string()))?;
                if n == 0 {
                    return Ok(total);
                }
                sink(&buf[..n]).map_err(|e| FrameError::new(FrameErrorKind::Corrupt, e.to_string()))?;
                total += n as u64;
            }
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(r).map_err(|e| FrameError::from_zstd(&e, 0))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = match d.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(FrameError::from_zstd(&e, 0)),
                };
                if n == 0 {
                    return Ok(total);
                }
                sink(&buf[..n]).map_err(|e| FrameError::new(FrameErrorKind::Corrupt, e.to_string()))?;
                total += n as u64;
            }
        }
        Compression::Lz4 => {
            let mut r = r;
            let mut total = 0u64;
            while let Some(f) =
                lz4_decode_frame(&mut r, u64::MAX, sink).map_err(|e| FrameError::from_lz4(e, u64::MAX))?
            {
                total += f.decoded;
            }
            Ok(total)
        }
    }
}

/// Compress one data frame the way E2B's uploader does: zstd with a content checksum, or an LZ4
/// frame with block checksums. Used by the layer writer (demo, fixtures).
pub fn encode_frame(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => {
            let mut c = zstd::bulk::Compressor::new(3)?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
            c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
            c.compress(data)
        }
        Compression::Lz4 => {
            use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
            use std::io::Write;
            let info =
                FrameInfo::new().block_size(BlockSize::Max4MB).block_mode(BlockMode::Independent).block_checksums(true);
            let mut enc = FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2 + 64));
            enc.write_all(data)?;
            enc.finish().map_err(io::Error::other)
        }
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) % 251) as u8 ^ (i / 4096) as u8).collect()
    }

    /// Bytes that compress about 2:1 and differ all along (so no block is a repeat of another).
    fn mixed(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2 == 0 { (x >> 56) as u8 } else { (i / 64) as u8 }
            })
            .collect()
    }

    /// A reader that counts what it hands out.
    struct Counting<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (self.data.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn a_frame_prefix_costs_about_its_share_of_the_compressed_bytes() {
        let data = mixed(2 << 20);
        for c in [Compression::Zstd, Compression::Lz4] {
            let enc = encode_frame(c, &data).unwrap();
            for want in [1usize, 300_000, 1 << 20, (2 << 20) - 4096] {
                let mut r = Counting { data: &enc, pos: 0 };
                let mut out = Vec::new();
                decode_prefix(c, io::BufReader::with_capacity(4096, &mut r), data.len(), want, &mut out).unwrap();
                assert!(out.len() >= want && out.len() <= data.len(), "{c:?} {want}: {}", out.len());
                assert_eq!(out, data[..out.len()], "{c:?} {want}");
                // Input read: what the wanted bytes took, plus at most a block and a buffer.
                let share = enc.len() as f64 * want as f64 / data.len() as f64;
                let block = if c == Compression::Zstd { 128 << 10 } else { 4 << 20 };
                let slack = (block as f64 * enc.len() as f64 / data.len() as f64) + 4096.0 * 2.0;
                assert!(
                    (r.pos as f64) <= (share + slack).min(enc.len() as f64),
                    "{c:?} want {want}: read {} of {} compressed bytes (share {share:.0})",
                    r.pos,
                    enc.len()
                );
            }
        }
    }

    #[test]
    fn a_frame_prefix_past_the_frame_or_the_table_is_a_size_error() {
        let data = mixed(300_000);
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let enc = encode_frame(c, &data).unwrap();
            let mut out = Vec::new();
            // The table says the frame holds more than it does: asking for bytes past its end.
            let e = decode_prefix(c, &enc[..], 400_000, 350_000, &mut out).unwrap_err();
            assert_eq!(e.kind, FrameErrorKind::Size, "{c:?}: {e}");
            // The table says it holds less: decoding past what the table allows.
            if c != Compression::None {
                let e = decode_prefix(c, &enc[..], 200_000, 200_000, &mut out);
                assert!(e.is_ok() || e.as_ref().is_err_and(|e| e.kind == FrameErrorKind::Size), "{c:?}: {e:?}");
            }
            // Cut short: corrupt or too short, never a panic.
            let e = decode_prefix(c, &enc[..enc.len() / 2], data.len(), data.len(), &mut out).unwrap_err();
            assert!(matches!(e.kind, FrameErrorKind::Size | FrameErrorKind::Corrupt), "{c:?}: {e}");
        }
    }

    #[test]
    fn lz4_round_trip_and_each_checksum() {
        let data = sample(5 << 20); // two 4 MiB blocks
        let enc = lz4_encode(&data);
        assert_eq!(&enc[..4], &[0x04, 0x22, 0x4D, 0x18]);
        assert_eq!(lz4_decode_all(&enc, data.len() as u64).unwrap(), data);
        // Bounded output.
        assert_eq!(lz4_decode_all(&enc, 100), Err(Lz4Error::TooLarge { limit: 100 }));
        // A flipped byte inside a block's data is a block checksum failure.
        let mut bad = enc.clone();
        bad[20] ^= 0xFF;
        assert!(matches!(lz4_decode_all(&bad, u64::MAX), Err(Lz4Error::BlockChecksum { block: 0, .. })));
        // The descriptor checksum.
        let mut bad = enc.clone();
        bad[6] ^= 0x01;
        assert!(matches!(lz4_decode_all(&bad, u64::MAX), Err(Lz4Error::HeaderChecksum { .. })));
        // The content checksum (last 4 bytes).
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x01;
        assert!(matches!(lz4_decode_all(&bad, u64::MAX), Err(Lz4Error::ContentChecksum { .. })));
        assert!(lz4_decode_all(&bad, u64::MAX).unwrap_err().is_checksum());
        // Cut before the end mark: truncated, not a short success.
        assert!(matches!(lz4_decode_all(&enc[..n - 8], u64::MAX), Err(Lz4Error::Truncated(_))));
        // Trailing bytes.
        let mut more = enc.clone();
        more.push(0);
        assert_eq!(lz4_decode_all(&more, u64::MAX), Err(Lz4Error::Trailing(1)));
        assert!(matches!(lz4_decode_all(b"nope", 10), Err(Lz4Error::BadMagic(_))));
    }

    #[test]
    fn lz4_flex_linked_frames_decode() {
        // A frame with linked blocks (the LZ4 default elsewhere) decodes too.
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let data = sample(600 << 10);
        let info = FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Linked).content_checksum(true);
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).unwrap();
        let bytes = enc.finish().unwrap();
        assert_eq!(lz4_decode_all(&bytes, u64::MAX).unwrap(), data);
    }

    #[test]
    fn data_frames_round_trip_and_fail_specifically() {
        let data = sample(2 << 20);
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        for c in [Compression::Zstd, Compression::Lz4] {
            let enc = encode_frame(c, &data).unwrap();
            d.decode_into(c, &enc, data.len(), &mut out).unwrap();
            assert_eq!(out, data);
            // Wrong size in the table.
            let e = d.decode_into(c, &enc, data.len() - 1, &mut out).unwrap_err();
            assert_eq!(e.kind, FrameErrorKind::Size, "{c:?} {e}");
            let e = d.decode_into(c, &enc, data.len() + 1, &mut out).unwrap_err();
            assert_eq!(e.kind, FrameErrorKind::Size, "{c:?} {e}");
            // Cut short.
            let e = d.decode_into(c, &enc[..enc.len() - 10], data.len(), &mut out).unwrap_err();
            assert_ne!(e.kind, FrameErrorKind::Size, "{c:?} {e}");
            // The frame's own checksum: zstd's content checksum is the last 4 bytes; an LZ4 data
            // frame ends with the last block's checksum, then the end mark.
            let mut bad = enc.clone();
            let n = bad.len();
            bad[if c == Compression::Zstd { n - 2 } else { n - 6 }] ^= 0x40;
            let e = d.decode_into(c, &bad, data.len(), &mut out).unwrap_err();
            assert_eq!(e.kind, FrameErrorKind::Checksum, "{c:?} {e}");
        }
    }

    #[test]
    fn streams_of_concatenated_frames() {
        let a = sample(1 << 20);
        let b = sample(3 << 19);
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let mut file = encode_frame(c, &a).unwrap();
            file.extend(encode_frame(c, &b).unwrap());
            let mut out = Vec::new();
            let n = decode_stream(c, &file[..], &mut |x| {
                out.extend_from_slice(x);
                Ok(())
            })
            .unwrap();
            assert_eq!(n as usize, a.len() + b.len());
            assert_eq!(out, [a.clone(), b.clone()].concat());
        }
    }
}
