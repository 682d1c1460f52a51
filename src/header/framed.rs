//! V4 and V5 headers (reference: e2b-formats.md §3; E2B `serialization_v4.go`,
//! `serialization_v5.go`, `compress_frame_table.go`).
//!
//! ```text
//! [Metadata 64 B][u8 flags][u32 innerLen][LZ4 frame of the inner block, to EOF]
//! inner:  u32 numBuilds
//!         numBuilds × { BuildId[16] | FileSize i64 | SHA-256 [32] | FrameTable }
//!         V4: u32 numMappings, numMappings × 40-byte V3 record
//!         V5: u32 M, M × BuildId[16]; u32 N (non-nil entries); then four columns of N varints:
//!             offset deltas, lengths, zigzag storage-offset deltas (all in 4096-byte pages),
//!             build-table indexes
//! FrameTable: u32 compression (0 none, 1 zstd, 2 lz4) | u32 count |
//!             count × { StartU i64 | StartC i64 | SizeU i32 | SizeC i32 }
//! ```
//!
//! Every limit is checked before anything is allocated from a count read from the file, and each
//! corruption has its own [`ParseError`] variant (and so its own finding).

use super::{
    BuildInfo, Frame, FrameTable, Header, MAPPING_LEN, MAX_FRAME_C, MAX_FRAME_U, MAX_FRAMES, MAX_INNER_LEN,
    MAX_V5_BUILDS, MAX_V5_ENTRIES, META_LEN, Mapping, PAGE, ParseError, encode_meta, synthesize_if_empty,
};
use crate::compress::{Compression, Lz4Error, lz4_decode_all, lz4_encode};
use crate::vocab::BuildId;

/// Bytes of the flags byte and the inner length after the metadata.
const PREFIX: usize = 5;
/// Smallest builds-section entry: id, size, checksum, empty frame table.
const MIN_BUILD_ENTRY: u64 = 16 + 8 + 32 + 8;
const FRAME_ENTRY: u64 = 24;

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn take(&mut self, n: usize, section: &'static str) -> Result<&'a [u8], ParseError> {
        if self.b.len() - self.pos < n {
            return Err(ParseError::InnerTruncated { section, need: n as u64, have: self.remaining() });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, section: &'static str) -> Result<u32, ParseError> {
        let s = self.take(4, section)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn i32(&mut self, section: &'static str) -> Result<i32, ParseError> {
        Ok(i32::from_le_bytes(self.u32(section)?.to_le_bytes()))
    }

    fn i64(&mut self, section: &'static str) -> Result<i64, ParseError> {
        let s = self.take(8, section)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_le_bytes(a))
    }

    fn id(&mut self, section: &'static str) -> Result<BuildId, ParseError> {
        let s = self.take(16, section)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(s);
        Ok(BuildId::from_bytes(a))
    }

    /// Go `binary.ReadUvarint`: LEB128, at most 10 bytes.
    fn uvarint(&mut self, entry: u64, section: &'static str) -> Result<u64, ParseError> {
        let mut x = 0u64;
        let mut shift = 0u32;
        for i in 0..10 {
            let b = self.take(1, section)?[0];
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(x | u64::from(b) << shift);
            }
            x |= u64::from(b & 0x7F) << shift;
            shift += 7;
        }
        Err(ParseError::V5BadEntry { entry, reason: format!("malformed varint (overflows 64 bits) in the {section}") })
    }

    /// Go `binary.ReadVarint`: zigzag over a uvarint.
    fn varint(&mut self, entry: u64, section: &'static str) -> Result<i64, ParseError> {
        let ux = self.uvarint(entry, section)?;
        // ux >> 1 is below 2^63: it fits.
        let x = i64::try_from(ux >> 1).unwrap_or(i64::MAX);
        Ok(if ux & 1 != 0 { !x } else { x })
    }
}

/// Parse the part of a V4/V5 header after the 64-byte metadata into `h`.
pub(super) fn parse_body(h: &mut Header, body: &[u8]) -> Result<(), ParseError> {
    let version = h.format();
    if body.len() < PREFIX {
        return Err(ParseError::FramedTooShort { version, len: META_LEN + body.len() });
    }
    h.flags = body[0];
    let inner_len = u64::from(u32::from_le_bytes([body[1], body[2], body[3], body[4]]));
    if inner_len > MAX_INNER_LEN {
        return Err(ParseError::InnerTooLarge { inner_len });
    }
    let inner = match lz4_decode_all(&body[PREFIX..], inner_len) {
        Ok(v) => v,
        Err(Lz4Error::TooLarge { .. }) => {
            return Err(ParseError::InnerLengthMismatch {
                declared: inner_len,
                actual: format!("more than {inner_len} bytes"),
            });
        }
        Err(e) => return Err(ParseError::Lz4(e)),
    };
    if inner.len() as u64 != inner_len {
        return Err(ParseError::InnerLengthMismatch { declared: inner_len, actual: inner.len().to_string() });
    }
    let mut c = Cursor { b: &inner, pos: 0 };
    h.builds = parse_builds(&mut c)?;
    if version == 5 {
        h.mappings = parse_v5_mappings(&mut c, h.size)?;
    } else {
        let n = u64::from(c.u32("mapping count")?);
        if n > c.remaining() / MAPPING_LEN as u64 {
            return Err(ParseError::InnerTruncated {
                section: "mappings",
                need: n * MAPPING_LEN as u64,
                have: c.remaining(),
            });
        }
        let mut maps = Vec::with_capacity(crate::num::usize_from(n));
        for _ in 0..n {
            let r = c.take(MAPPING_LEN, "mappings")?;
            maps.push(Mapping {
                offset: super::u64_at(r, 0),
                length: super::u64_at(r, 8),
                build: super::id_at(r, 16),
                storage_offset: super::u64_at(r, 32),
            });
        }
        h.mappings = maps;
        synthesize_if_empty(h)?;
    }
    Ok(())
}

fn parse_builds(c: &mut Cursor) -> Result<Vec<BuildInfo>, ParseError> {
    let n = u64::from(c.u32("builds count")?);
    if n > c.remaining() / MIN_BUILD_ENTRY {
        return Err(ParseError::InnerTruncated {
            section: "builds section",
            need: n * MIN_BUILD_ENTRY,
            have: c.remaining(),
        });
    }
    let mut builds = Vec::with_capacity(crate::num::usize_from(n));
    for _ in 0..n {
        let build = c.id("builds section")?;
        let file_size = c.i64("builds section")?;
        let mut checksum = [0u8; 32];
        checksum.copy_from_slice(c.take(32, "builds section")?);
        let frames = parse_frame_table(c, build)?;
        builds.push(BuildInfo { build, file_size, checksum, frames });
    }
    Ok(builds)
}

fn parse_frame_table(c: &mut Cursor, build: BuildId) -> Result<FrameTable, ParseError> {
    let ct = c.u32("frame table")?;
    let count = c.u32("frame table")?;
    if ct == 0 && count > 0 {
        return Err(ParseError::FrameTableTypeZero { build, count });
    }
    if count == 0 {
        // E2B reads "type 0 or count 0" as uncompressed.
        return Ok(FrameTable::default());
    }
    let Some(compression) = Compression::from_u32(ct) else {
        return Err(ParseError::FrameTableUnknownType { build, compression: ct });
    };
    let count = u64::from(count);
    if count > MAX_FRAMES {
        return Err(ParseError::FrameCountCap { build, count });
    }
    if count * FRAME_ENTRY > c.remaining() {
        return Err(ParseError::InnerTruncated {
            section: "frame table",
            need: count * FRAME_ENTRY,
            have: c.remaining(),
        });
    }
    let mut frames: Vec<Frame> = Vec::with_capacity(crate::num::usize_from(count));
    for i in 0..count {
        let (su, sc) = (c.i64("frame table")?, c.i64("frame table")?);
        let (zu, zc) = (c.i32("frame table")?, c.i32("frame table")?);
        let bad = |reason: String| ParseError::FrameInvalid { build, frame: i, reason };
        let (Ok(start_u), Ok(start_c)) = (u64::try_from(su), u64::try_from(sc)) else {
            return Err(bad(format!("negative start (U {su}, C {sc})")));
        };
        let (Ok(size_u), Ok(size_c)) = (u32::try_from(zu), u32::try_from(zc)) else {
            return Err(bad(format!("zero or negative size (U {zu}, C {zc})")));
        };
        if size_u == 0 || size_c == 0 {
            return Err(bad(format!("zero or negative size (U {zu}, C {zc})")));
        }
        let f = Frame { start_u, start_c, size_u, size_c };
        if u64::from(f.size_u) > MAX_FRAME_U || u64::from(f.size_c) > MAX_FRAME_C {
            return Err(bad(format!(
                "{} bytes uncompressed / {} compressed is over tmpl's limit of {MAX_FRAME_U} / {MAX_FRAME_C} (E2B writes 2 MiB frames)",
                f.size_u, f.size_c
            )));
        }
        if let Some(p) = frames.last() {
            if f.start_u < p.end_u() {
                return Err(bad(format!("starts at U {} before the previous frame ends at {}", f.start_u, p.end_u())));
            }
            if f.start_c < p.end_c() {
                return Err(bad(format!("starts at C {} before the previous frame ends at {}", f.start_c, p.end_c())));
            }
        }
        frames.push(f);
    }
    Ok(FrameTable { compression, frames })
}

fn parse_v5_mappings(c: &mut Cursor, size: u64) -> Result<Vec<Mapping>, ParseError> {
    let size_pages = size.div_ceil(PAGE);
    if size_pages > u64::from(u32::MAX) {
        return Err(ParseError::V5BadEntry { entry: 0, reason: format!("device Size {size} is over 2^32 pages") });
    }
    let m = u64::from(c.u32("V5 build table")?);
    if m > MAX_V5_BUILDS {
        return Err(ParseError::V5BuildCountCap { count: m });
    }
    if m * 16 > c.remaining() {
        return Err(ParseError::InnerTruncated { section: "V5 build table", need: m * 16, have: c.remaining() });
    }
    let mut table = Vec::with_capacity(crate::num::usize_from(m));
    for _ in 0..m {
        table.push(c.id("V5 build table")?);
    }
    let n = u64::from(c.u32("V5 entry count")?);
    if n > MAX_V5_ENTRIES {
        return Err(ParseError::V5EntryCountCap { count: n });
    }
    let mut maps = Vec::new();
    if n == 0 {
        if size > 0 {
            maps.push(Mapping { offset: 0, length: size_pages * PAGE, build: BuildId::nil(), storage_offset: 0 });
        }
        return Ok(maps);
    }
    // Each entry takes at least one byte in each of the four columns.
    if n > c.remaining() / 4 {
        return Err(ParseError::InnerTruncated { section: "V5 columns", need: n * 4, have: c.remaining() });
    }
    let max = u64::from(u32::MAX);
    let n_us = crate::num::usize_from(n);
    let mut offsets = Vec::with_capacity(n_us);
    let mut prev = 0u64;
    for i in 0..n {
        let d = c.uvarint(i, "V5 offset column")?;
        prev = prev.saturating_add(d);
        if d > max || prev > max {
            return Err(ParseError::V5BadEntry { entry: i, reason: format!("offset page {prev} is over 2^32") });
        }
        offsets.push(prev);
    }
    let mut lengths = Vec::with_capacity(n_us);
    for i in 0..n {
        let v = c.uvarint(i, "V5 length column")?;
        if v > max {
            return Err(ParseError::V5BadEntry { entry: i, reason: format!("length of {v} pages is over 2^32") });
        }
        lengths.push(v);
    }
    let mut storage = Vec::with_capacity(n_us);
    let mut prev_s = 0i64;
    for i in 0..n {
        let d = c.varint(i, "V5 storage column")?;
        prev_s = prev_s.saturating_add(d);
        match u64::try_from(prev_s) {
            Ok(page) if page <= max => storage.push(page),
            _ => {
                return Err(ParseError::V5BadEntry {
                    entry: i,
                    reason: format!("storage page {prev_s} is out of range"),
                });
            }
        }
    }
    let mut idx = Vec::with_capacity(n_us);
    for i in 0..n {
        let v = c.uvarint(i, "V5 build-index column")?;
        if v >= m {
            return Err(ParseError::V5BuildIndex { entry: i, index: v, builds: m });
        }
        idx.push(crate::num::usize_from(v));
    }
    let mut current = 0u64;
    for i in 0..n_us {
        let (off, len) = (offsets[i], lengths[i]);
        let entry = i as u64;
        if len == 0 {
            return Err(ParseError::V5BadEntry { entry, reason: "length 0".into() });
        }
        if off < current {
            return Err(ParseError::V5Overlap { entry, offset: off * PAGE, previous_end: current * PAGE });
        }
        if off > current {
            maps.push(Mapping {
                offset: current * PAGE,
                length: (off - current) * PAGE,
                build: BuildId::nil(),
                storage_offset: 0,
            });
        }
        let end = off + len;
        if end > size_pages {
            return Err(ParseError::V5BadEntry {
                entry,
                reason: format!("ends at byte {} past the device Size {size}", end * PAGE),
            });
        }
        maps.push(Mapping {
            offset: off * PAGE,
            length: len * PAGE,
            build: table[idx[i]],
            storage_offset: storage[i] * PAGE,
        });
        current = end;
    }
    if current < size_pages {
        maps.push(Mapping {
            offset: current * PAGE,
            length: (size_pages - current) * PAGE,
            build: BuildId::nil(),
            storage_offset: 0,
        });
    }
    Ok(maps)
}

/// Why a header cannot be written in its version's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("version {0} has no builds section (only V4/V5 do)")]
    NotFramed(u64),
    #[error(
        "V5 stores 4096-byte pages: mapping #{index} (offset {offset}, length {length}, storage {storage}) is not aligned"
    )]
    Unaligned { index: usize, offset: u64, length: u64, storage: u64 },
    #[error("V5 build table would hold {0} builds, over the cap of {MAX_V5_BUILDS}")]
    TooManyBuilds(usize),
    #[error("inner block of {0} bytes is over the {MAX_INNER_LEN}-byte cap")]
    TooLarge(usize),
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

/// A count written as the layout's u32: over 2^32 the block would be over the inner-length cap.
fn count32(n: usize) -> Result<[u8; 4], EncodeError> {
    u32::try_from(n).map(u32::to_le_bytes).map_err(|_| EncodeError::TooLarge(n))
}

fn put_frame_table(out: &mut Vec<u8>, t: &FrameTable) -> Result<(), EncodeError> {
    if !t.is_compressed() {
        out.extend_from_slice(&[0u8; 8]);
        return Ok(());
    }
    out.extend_from_slice(&t.compression.as_u32().to_le_bytes());
    out.extend_from_slice(&count32(t.frames.len())?);
    for f in &t.frames {
        // E2B's int64/int32 fields: the same little-endian bytes as these unsigned values (a
        // parsed frame's starts are below 2^63 and sizes below 2^31).
        out.extend_from_slice(&f.start_u.to_le_bytes());
        out.extend_from_slice(&f.start_c.to_le_bytes());
        out.extend_from_slice(&f.size_u.to_le_bytes());
        out.extend_from_slice(&f.size_c.to_le_bytes());
    }
    Ok(())
}

fn inner(h: &Header, strict: bool) -> Result<Vec<u8>, EncodeError> {
    let format = h.format();
    if !matches!(format, 4 | 5) {
        return Err(EncodeError::NotFramed(format));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&count32(h.builds.len())?);
    for b in &h.builds {
        out.extend_from_slice(b.build.as_bytes());
        out.extend_from_slice(&b.file_size.to_le_bytes());
        out.extend_from_slice(&b.checksum);
        put_frame_table(&mut out, &b.frames)?;
    }
    if format == 4 {
        let maps: &[Mapping] = if h.synthesized { &[] } else { &h.mappings };
        out.extend_from_slice(&count32(maps.len())?);
        for m in maps {
            out.extend_from_slice(&m.offset.to_le_bytes());
            out.extend_from_slice(&m.length.to_le_bytes());
            out.extend_from_slice(m.build.as_bytes());
            out.extend_from_slice(&m.storage_offset.to_le_bytes());
        }
    } else {
        let entries: Vec<(usize, &Mapping)> = h.mappings.iter().enumerate().filter(|(_, m)| !m.is_nil()).collect();
        let mut table: Vec<BuildId> = Vec::new();
        for (_, m) in &entries {
            if !table.contains(&m.build) {
                table.push(m.build);
            }
        }
        if table.len() as u64 > MAX_V5_BUILDS {
            return Err(EncodeError::TooManyBuilds(table.len()));
        }
        if strict
            && let Some((index, m)) = entries.iter().find(|(_, m)| (m.offset | m.length | m.storage_offset) % PAGE != 0)
        {
            return Err(EncodeError::Unaligned {
                index: *index,
                offset: m.offset,
                length: m.length,
                storage: m.storage_offset,
            });
        }
        out.extend_from_slice(&count32(table.len())?);
        for id in &table {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&count32(entries.len())?);
        let mut prev = 0u64;
        for (_, m) in &entries {
            let p = m.offset / PAGE;
            put_uvarint(&mut out, p.wrapping_sub(prev));
            prev = p;
        }
        for (_, m) in &entries {
            put_uvarint(&mut out, m.length / PAGE);
        }
        let mut prev = 0i64;
        for (_, m) in &entries {
            // A page number is below 2^52: it fits.
            let s = i64::try_from(m.storage_offset / PAGE).unwrap_or(i64::MAX);
            let d = s.wrapping_sub(prev);
            // Go's zigzag: the same 64 bits, read unsigned.
            put_uvarint(&mut out, u64::from_le_bytes(((d << 1) ^ (d >> 63)).to_le_bytes()));
            prev = s;
        }
        for (_, m) in &entries {
            let i = table.iter().position(|t| *t == m.build).unwrap_or(0);
            put_uvarint(&mut out, i as u64);
        }
    }
    if out.len() as u64 > MAX_INNER_LEN {
        return Err(EncodeError::TooLarge(out.len()));
    }
    Ok(out)
}

/// The uncompressed inner block of a V4/V5 header (builds section and mappings), as E2B lays it
/// out before LZ4-framing it.
pub fn encode_inner(h: &Header) -> Result<Vec<u8>, EncodeError> {
    inner(h, true)
}

fn assemble(h: &Header, inner: &[u8]) -> Vec<u8> {
    let frame = lz4_encode(inner);
    let mut out = Vec::with_capacity(META_LEN + PREFIX + frame.len());
    encode_meta(h, &mut out);
    out.push(h.flags);
    // `inner` is at most MAX_INNER_LEN (256 MiB) bytes, or the 8-byte empty block.
    out.extend_from_slice(&u32::try_from(inner.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&frame);
    out
}

/// Encode a header in its version's layout, refusing what the layout cannot represent.
pub fn try_encode(h: &Header) -> Result<Vec<u8>, EncodeError> {
    match h.format() {
        4 | 5 => Ok(assemble(h, &inner(h, true)?)),
        _ => Ok(super::encode(h)),
    }
}

/// [`try_encode`] for V4/V5 with V5 values rounded down to pages.
pub(super) fn encode_lossy(h: &Header) -> Vec<u8> {
    match inner(h, false) {
        Ok(i) => assemble(h, &i),
        // Too many builds or too large: write an empty builds section and no mappings rather
        // than a corrupt block; `try_encode` reports why.
        Err(_) => assemble(h, &[0u8; 8]),
    }
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and fixture data of known, small sizes"
)]
mod tests {
    use super::super::tests::TV_H3;
    use super::super::*;
    use crate::compress::lz4_encode;
    use proptest::prelude::*;

    const A: &str = "11111111-2222-3333-4444-555555555555";

    fn unhex(s: &str) -> Vec<u8> {
        s.lines()
            .flat_map(|l| l.split_once(':').map(|x| x.1).unwrap_or(l).split_whitespace())
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// TV-H5 inner block from e2b-formats.md (116 bytes, before LZ4).
    const TV_H5_INNER: &str = "\
0000: 01 00 00 00 11 11 11 11 22 22 33 33 44 44 55 55
0010: 55 55 55 55 00 10 00 00 00 00 00 00 00 00 00 00
0020: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0030: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0040: 00 00 00 00 02 00 00 00 aa aa aa aa bb bb cc cc
0050: dd dd ee ee ee ee ee ee 11 11 11 11 22 22 33 33
0060: 44 44 55 55 55 55 55 55 02 00 00 00 00 03 02 01
0070: 00 00 00 01";

    /// The TV-H3 header restamped as `version` with the builds section of TV-H5.
    fn tv_h5(version: u64) -> Header {
        let mut h = parse(&unhex(TV_H3)).unwrap();
        h.version = version;
        h.builds = vec![BuildInfo {
            build: BuildId::parse(A).unwrap(),
            file_size: 4096,
            checksum: [0; 32],
            frames: FrameTable::default(),
        }];
        h
    }

    /// A full header file: TV-H3's metadata as `version`, `flags`, the inner length, the frame.
    fn file(version: u8, flags: u8, inner_len: u32, inner: &[u8]) -> Vec<u8> {
        let mut out = unhex(TV_H3)[..64].to_vec();
        out[0] = version;
        out.push(flags);
        out.extend_from_slice(&inner_len.to_le_bytes());
        out.extend(lz4_encode(inner));
        out
    }

    #[test]
    fn tv_h5_is_reproduced_byte_for_byte() {
        let inner = unhex(TV_H5_INNER);
        assert_eq!(inner.len(), 116);
        let h = tv_h5(5);
        assert_eq!(encode_inner(&h).unwrap(), inner);
        // The file around it, as the reference describes it.
        let bytes = try_encode(&h).unwrap();
        let mut meta = unhex(TV_H3)[..64].to_vec();
        meta[0] = 0x05;
        assert_eq!(&bytes[..64], &meta[..]);
        assert_eq!(&bytes[64..69], &[0x00, 0x74, 0x00, 0x00, 0x00]);
        assert_eq!(&bytes[69..73], &[0x04, 0x22, 0x4D, 0x18]);
        // Parsing the reference's inner block (framed by us) gives TV-H3's mappings and the build.
        let parsed = parse(&file(5, 0, 116, &inner)).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(parsed.mappings, parse(&unhex(TV_H3)).unwrap().mappings);
        let a = parsed.build_info(&BuildId::parse(A).unwrap()).unwrap();
        assert_eq!((a.known_size(), a.known_checksum(), a.frames.is_compressed()), (Some(4096), None, false));
        assert!(validate(&parsed).is_empty());
    }

    #[test]
    fn tv_h5_as_v4_is_the_builds_section_and_the_v3_body() {
        let h = tv_h5(4);
        let inner = encode_inner(&h).unwrap();
        assert_eq!(inner.len(), 192);
        assert_eq!(&inner[..68], &unhex(TV_H5_INNER)[..68]);
        assert_eq!(&inner[68..72], &[3, 0, 0, 0]);
        assert_eq!(&inner[72..], &unhex(TV_H3)[64..]);
        assert_eq!(parse(&try_encode(&h).unwrap()).unwrap(), h);
        assert_eq!(parse(&file(4, 0, 192, &inner)).unwrap(), h);
    }

    #[test]
    fn every_negative_vector_has_its_own_error() {
        let inner = unhex(TV_H5_INNER);
        let good = file(5, 0, 116, &inner);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut i = inner.clone();
            f(&mut i);
            parse(&file(5, 0, i.len() as u32, &i))
        };
        // innerLen over the 256 MiB cap.
        let mut b = good.clone();
        b[65..69].copy_from_slice(&((256u32 << 20) + 1).to_le_bytes());
        assert_eq!(parse(&b), Err(ParseError::InnerTooLarge { inner_len: (256 << 20) + 1 }));
        // innerLen not the decompressed length, either way.
        assert_eq!(
            parse(&file(5, 0, 115, &inner)),
            Err(ParseError::InnerLengthMismatch { declared: 115, actual: "more than 115 bytes".into() })
        );
        assert_eq!(
            parse(&file(5, 0, 117, &inner)),
            Err(ParseError::InnerLengthMismatch { declared: 117, actual: "116".into() })
        );
        // LZ4 checksums: a block byte, then the content checksum.
        let mut b = good.clone();
        b[69 + 11] ^= 0x01;
        assert!(matches!(parse(&b), Err(ParseError::Lz4(Lz4Error::BlockChecksum { .. }))), "{:?}", parse(&b));
        let mut b = good.clone();
        let n = b.len();
        b[n - 1] ^= 0x01;
        assert!(matches!(parse(&b), Err(ParseError::Lz4(Lz4Error::ContentChecksum { .. }))));
        // Frame table type 0 with a count.
        let a = BuildId::parse(A).unwrap();
        assert_eq!(with(&|i| i[0x40] = 1), Err(ParseError::FrameTableTypeZero { build: a, count: 1 }));
        // Unknown compression type, frame count over the cap, a zero-sized frame.
        assert_eq!(
            with(&|i| {
                i[0x3c] = 7;
                i[0x40] = 1;
            }),
            Err(ParseError::FrameTableUnknownType { build: a, compression: 7 })
        );
        assert_eq!(
            with(&|i| {
                i[0x3c] = 1;
                i[0x40..0x44].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
            }),
            Err(ParseError::FrameCountCap { build: a, count: (1 << 20) + 1 })
        );
        assert!(matches!(
            with(&|i| {
                i[0x3c] = 1;
                i[0x40] = 1;
                let frame = [0u8; 24];
                i.splice(0x44..0x44, frame);
            }),
            Err(ParseError::FrameInvalid { frame: 0, .. })
        ));
        // V5 build index out of range, V5 overlap.
        assert_eq!(with(&|i| i[0x73] = 2), Err(ParseError::V5BuildIndex { entry: 1, index: 2, builds: 2 }));
        assert_eq!(with(&|i| i[0x6d] = 1), Err(ParseError::V5Overlap { entry: 1, offset: 4096, previous_end: 8192 }));
        // V5 caps on builds and entries.
        assert_eq!(
            with(&|i| i[0x44..0x48].copy_from_slice(&65536u32.to_le_bytes())),
            Err(ParseError::V5BuildCountCap { count: 65536 })
        );
        assert_eq!(
            with(&|i| i[0x68..0x6c].copy_from_slice(&((8u32 << 20) + 1).to_le_bytes())),
            Err(ParseError::V5EntryCountCap { count: (8 << 20) + 1 })
        );
        // An entry past Size, a zero length.
        assert!(matches!(with(&|i| i[0x6f] = 2), Err(ParseError::V5BadEntry { entry: 1, .. })));
        assert!(matches!(with(&|i| i[0x6e] = 0), Err(ParseError::V5BadEntry { entry: 0, .. })));
        // A negative storage offset (zigzag 1 = -1).
        assert!(matches!(with(&|i| i[0x70] = 1), Err(ParseError::V5BadEntry { entry: 0, .. })));
        // The inner block cut short.
        assert!(matches!(with(&|i| i.truncate(0x70)), Err(ParseError::InnerTruncated { section: "V5 columns", .. })));
        assert!(matches!(with(&|i| i[0] = 9), Err(ParseError::InnerTruncated { section: "builds section", .. })));
        // The flags byte is data: bit 0 parses (it is a finding, not a parse error).
        let mut b = good.clone();
        b[64] = 1;
        assert_eq!(parse(&b).unwrap().flags, FLAG_PENDING_UPLOAD);
    }

    #[test]
    fn compressed_frame_tables_round_trip() {
        let mut h = tv_h5(4);
        h.builds[0].frames = FrameTable {
            compression: Compression::Zstd,
            frames: vec![
                Frame { start_u: 0, start_c: 0, size_u: 2 << 20, size_c: 1000 },
                Frame { start_u: 4 << 20, start_c: 5000, size_u: 4096, size_c: 77 },
            ],
        };
        h.builds[0].checksum = [0xAB; 32];
        let back = parse(&try_encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        let t = &back.builds[0].frames;
        assert_eq!(
            (t.locate(0), t.locate((2 << 20) - 1), t.locate(2 << 20), t.locate(4 << 20)),
            (Some(0), Some(0), None, Some(1))
        );
        assert_eq!(t.first_gap(0, 4096), None);
        assert_eq!(t.first_gap(4096, (4 << 20) + 1), Some(2 << 20));
        assert!(!t.is_contiguous());
        assert_eq!((t.end_u(), t.end_c()), ((4 << 20) + 4096, 5077));
    }

    fn arb_id() -> impl Strategy<Value = BuildId> {
        prop_oneof![Just(BuildId::nil()), (1u8..5).prop_map(|n| BuildId::from_bytes([n; 16]))]
    }

    fn arb_builds() -> impl Strategy<Value = Vec<BuildInfo>> {
        proptest::collection::vec(
            (
                1u8..9,
                any::<i64>(),
                any::<[u8; 32]>(),
                prop_oneof![Just(Compression::Zstd), Just(Compression::Lz4)],
                proptest::collection::vec((0u64..1 << 30, 1u32..1 << 22, 1u32..1 << 22, 0u64..1 << 20), 0..6),
            )
                .prop_map(|(n, file_size, checksum, compression, sizes)| {
                    let (mut u, mut c) = (0u64, 0u64);
                    let frames: Vec<Frame> = sizes
                        .into_iter()
                        .map(|(gap, su, sc, gap_c)| {
                            let f = Frame { start_u: u + gap, start_c: c + gap_c, size_u: su, size_c: sc };
                            u = f.end_u();
                            c = f.end_c();
                            f
                        })
                        .collect();
                    let compression = if frames.is_empty() { Compression::None } else { compression };
                    BuildInfo {
                        build: BuildId::from_bytes([n; 16]),
                        file_size,
                        checksum,
                        frames: FrameTable { compression, frames },
                    }
                }),
            0..5,
        )
    }

    proptest! {
        #[test]
        fn v4_round_trip(
            block_pow in 12u32..=21, size: u64, generation: u64, flags: u8, builds in arb_builds(),
            maps in proptest::collection::vec((any::<u64>(), any::<u64>(), arb_id(), any::<u64>()), 1..30),
        ) {
            let h = Header {
                version: 4, block_size: 1 << block_pow, size, generation,
                build_id: BuildId::from_bytes([1; 16]), base_build_id: BuildId::from_bytes([2; 16]),
                mappings: maps.into_iter().map(|(o, l, b, s)| Mapping { offset: o, length: l, build: b, storage_offset: s }).collect(),
                synthesized: false, flags, builds,
            };
            prop_assert_eq!(parse(&try_encode(&h).unwrap()).unwrap(), h);
        }

        /// V5 stores only non-nil entries in pages; gaps and the tail come back as nil mappings.
        #[test]
        fn v5_round_trip(
            entries in proptest::collection::vec((0u64..4, 1u64..50, 1u8..6, 0u64..1000), 0..40),
            tail in 0u64..5, builds in arb_builds(),
        ) {
            let mut maps = Vec::new();
            let mut pos = 0u64;
            for (gap, len, b, st) in entries {
                if gap > 0 {
                    maps.push(Mapping { offset: pos * PAGE, length: gap * PAGE, build: BuildId::nil(), storage_offset: 0 });
                }
                maps.push(Mapping { offset: (pos + gap) * PAGE, length: len * PAGE, build: BuildId::from_bytes([b; 16]), storage_offset: st * PAGE });
                pos += gap + len;
            }
            if tail > 0 {
                maps.push(Mapping { offset: pos * PAGE, length: tail * PAGE, build: BuildId::nil(), storage_offset: 0 });
            }
            let size = (pos + tail) * PAGE;
            let h = Header {
                version: 5, block_size: 4096, size, generation: 3,
                build_id: BuildId::from_bytes([1; 16]), base_build_id: BuildId::from_bytes([2; 16]),
                mappings: maps, synthesized: false, flags: 0, builds,
            };
            let back = parse(&try_encode(&h).unwrap()).unwrap();
            prop_assert_eq!(&back, &h);
            prop_assert!(validate(&back).is_empty());
        }

        #[test]
        fn framed_parse_never_panics(version in 4u8..=5, flags: u8, inner in proptest::collection::vec(any::<u8>(), 0..300), delta in -3i64..3) {
            let len = (inner.len() as i64 + delta).max(0) as u32;
            let _ = parse(&file(version, flags, len, &inner));
        }

        #[test]
        fn framed_parse_of_mutated_headers_never_panics(pos in 0usize..200, val: u8) {
            let mut inner = unhex(TV_H5_INNER);
            let n = inner.len();
            inner[pos % n] = val;
            let _ = parse(&file(5, 0, n as u32, &inner));
            let mut v4 = encode_inner(&tv_h5(4)).unwrap();
            let n = v4.len();
            v4[pos % n] = val;
            let _ = parse(&file(4, 0, n as u32, &v4));
        }
    }
}
