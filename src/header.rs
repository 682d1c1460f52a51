//! E2B `*.header` files: the map from a build's logical device (rootfs or guest memory) onto the
//! data files of the builds that own each range (reference: e2b-formats.md §3).
//!
//! ```text
//! Metadata, 64 bytes, little-endian        V1–V3 body: records until EOF, 40 bytes each
//!   0  u64  Version (format = & 0xFFFF)      0  u64  Offset         (device byte offset)
//!   8  u64  BlockSize                        8  u64  Length
//!  16  u64  Size (logical device bytes)     16  [16] BuildId        (nil = zeros, no storage)
//!  24  u64  Generation                      32  u64  BuildStorageOffset (in the owner's
//!  32  [16] BuildId                                   uncompressed data file)
//!  48  [16] BaseBuildId
//! ```
//!
//! Versions 1–3 share this layout. V4 and V5 (2026) keep the 64-byte prefix and add a flags byte,
//! the inner block's length and one LZ4 frame holding a builds section (per referenced build: data
//! file size, SHA-256, frame table) and the mappings (V4: 40-byte records; V5: varint columns);
//! see [`framed`]. All versions parse into the same [`Header`].

mod framed;

use serde::{Serialize, Serializer};

use crate::compress::{Compression, Lz4Error};
use crate::vocab::BuildId;

pub use framed::{EncodeError, encode_inner, try_encode};

pub const META_LEN: usize = 64;
pub const MAPPING_LEN: usize = 40;
/// Largest header we read (E2B caps the V4 inner block at 256 MiB; V1–V3 are smaller in practice).
pub const MAX_HEADER_BYTES: u64 = 256 * 1024 * 1024 + META_LEN as u64;
/// Cap on a V4/V5 inner block's declared uncompressed length (`v4MaxUncompressedHeaderSize`,
/// 256 MiB since 2026; it was 64 MiB).
pub const MAX_INNER_LEN: u64 = 256 * 1024 * 1024;
/// Cap on frames per frame table (`maxDeserializedFrames`).
pub const MAX_FRAMES: u64 = 1 << 20;
/// Cap on one frame's uncompressed size. E2B's frames are 2 MiB by default and must divide its
/// 4 MiB chunk size; tmpl refuses larger ones so a crafted table cannot make it allocate more.
pub const MAX_FRAME_U: u64 = 16 << 20;
/// Cap on one frame's compressed size (incompressible data grows a little).
pub const MAX_FRAME_C: u64 = 2 * MAX_FRAME_U;
/// Cap on V5 non-nil mapping entries (`maxV5MappingEntries`, 8 Mi).
pub const MAX_V5_ENTRIES: u64 = 8 << 20;
/// Cap on distinct builds in a V5 build table (65535).
pub const MAX_V5_BUILDS: u64 = 65535;
/// Flags bit 0: `IncompletePendingUpload` (never persisted by E2B).
pub const FLAG_PENDING_UPLOAD: u8 = 0x01;
/// Version from which the mapping must be sorted, contiguous and cover `[0, Size)` exactly
/// (`NormalizeFixVersion` in E2B).
pub const NORMALIZE_FIX_VERSION: u64 = 3;
/// The page unit E2B uses for rootfs blocks and for synthesising headerless mappings.
pub const PAGE: u64 = 4096;
/// Block size of headerless memfiles (`oldMemfileHugePageSize`).
pub const HUGE_PAGE: u64 = 2 * 1024 * 1024;

/// One range of the logical device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub offset: u64,
    pub length: u64,
    /// The build whose data file holds these bytes; nil means the range reads as zeros.
    pub build: BuildId,
    pub storage_offset: u64,
}

impl Mapping {
    /// End of the range on the device; saturates at `u64::MAX` for a range that overflows
    /// ([`validate`] reports it as [`Issue::Overflow`]).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    /// End of the range in the owner's data file; saturates like [`Mapping::end`].
    pub fn storage_end(&self) -> u64 {
        self.storage_offset.saturating_add(self.length)
    }

    /// Offset or storage offset plus length runs past 2^64.
    pub fn overflows(&self) -> bool {
        self.offset.checked_add(self.length).is_none() || self.storage_offset.checked_add(self.length).is_none()
    }

    pub fn is_nil(&self) -> bool {
        self.build.is_nil()
    }
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The raw 64-bit version field; the format is `version & 0xFFFF`.
    pub version: u64,
    pub block_size: u64,
    pub size: u64,
    pub generation: u64,
    pub build_id: BuildId,
    pub base_build_id: BuildId,
    #[serde(skip)]
    pub mappings: Vec<Mapping>,
    /// True when the body was empty and one self mapping was synthesised, as E2B's reader does.
    pub synthesized: bool,
    /// V4/V5: the flags byte (bit 0 = IncompletePendingUpload). 0 for V1–V3.
    pub flags: u8,
    /// V4/V5: the builds section, in stored order (E2B sorts it by UUID bytes). Empty for V1–V3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuildInfo>,
}

/// One frame of a compressed data file: uncompressed range `[start_u, start_u + size_u)` stored
/// at `[start_c, start_c + size_c)` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub start_u: u64,
    pub start_c: u64,
    pub size_u: u32,
    pub size_c: u32,
}

impl Frame {
    /// Parsed frames start below 2^63 and are under 2^31 bytes, so the sums never saturate.
    pub fn end_u(&self) -> u64 {
        self.start_u.saturating_add(u64::from(self.size_u))
    }

    pub fn end_c(&self) -> u64 {
        self.start_c.saturating_add(u64::from(self.size_c))
    }
}

/// The decompression index of one build's data file (`FrameTable`). Empty (or compression
/// `None`) means the data file is stored uncompressed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrameTable {
    pub compression: Compression,
    pub frames: Vec<Frame>,
}

impl FrameTable {
    /// True when the data file is compressed and this table describes (some of) its frames.
    pub fn is_compressed(&self) -> bool {
        self.compression != Compression::None && !self.frames.is_empty()
    }

    /// Index of the frame holding uncompressed offset `u`, if any (frames are sorted by `start_u`).
    pub fn locate(&self, u: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.start_u <= u);
        let i = i.checked_sub(1)?;
        (u < self.frames[i].end_u()).then_some(i)
    }

    /// The first uncompressed offset in `[start, end)` that no frame covers.
    pub fn first_gap(&self, start: u64, end: u64) -> Option<u64> {
        let mut at = start;
        while at < end {
            match self.locate(at) {
                Some(i) => at = self.frames[i].end_u(),
                None => return Some(at),
            }
        }
        None
    }

    /// Frames run from offset 0 in both spaces with no gaps: the table describes the whole file
    /// (not trimmed to the frames one header reads).
    pub fn is_contiguous(&self) -> bool {
        let mut u = 0;
        let mut c = 0;
        for f in &self.frames {
            if f.start_u != u || f.start_c != c {
                return false;
            }
            u = f.end_u();
            c = f.end_c();
        }
        true
    }

    /// The frames overlapping any of the uncompressed `[start, end)` ranges (E2B's
    /// `TrimToRanges`: what a child header keeps of an ancestor's table).
    pub fn trimmed_to(&self, ranges: &[(u64, u64)]) -> FrameTable {
        let frames = self
            .frames
            .iter()
            .filter(|f| ranges.iter().any(|&(s, e)| f.start_u < e && s < f.end_u()))
            .copied()
            .collect();
        FrameTable { compression: self.compression, frames }
    }

    /// End of the last frame in uncompressed bytes.
    pub fn end_u(&self) -> u64 {
        self.frames.last().map_or(0, Frame::end_u)
    }

    /// End of the last frame in compressed bytes (the data file must be at least this long).
    pub fn end_c(&self) -> u64 {
        self.frames.last().map_or(0, Frame::end_c)
    }
}

/// What the mappings of one header read from one build ([`Header::build_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildStats {
    pub build: BuildId,
    /// Bytes mapped to the build; `None` when the sum overflows 64 bits.
    pub bytes: Option<u64>,
    /// Bytes of its data file the mappings need: max(storage offset + length), saturating.
    pub required_len: u64,
}

/// One entry of a V4/V5 builds section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub build: BuildId,
    /// Uncompressed size of the build's data file (0 = unknown, e.g. inherited from a V3 layer).
    pub file_size: i64,
    /// SHA-256 of the uncompressed data file; all zero = unknown.
    #[serde(serialize_with = "hex_or_null")]
    pub checksum: [u8; 32],
    pub frames: FrameTable,
}

impl BuildInfo {
    /// The checksum, unless it is all zeros (unknown).
    pub fn known_checksum(&self) -> Option<[u8; 32]> {
        (self.checksum != [0u8; 32]).then_some(self.checksum)
    }

    /// The file size, when known (positive).
    pub fn known_size(&self) -> Option<u64> {
        u64::try_from(self.file_size).ok().filter(|&n| n > 0)
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_or_null<S: Serializer>(c: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    if *c == [0u8; 32] { s.serialize_none() } else { s.serialize_str(&hex(c)) }
}

/// Why a header cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{len} bytes is shorter than the 64-byte header prefix")]
    TooShort { len: usize },
    #[error("body of {body} bytes is not a whole number of 40-byte mappings ({extra} bytes left over)")]
    BodyNotMultiple { body: usize, extra: usize },
    #[error("header format version {version} is newer than tmpl supports (V4/V5 are LZ4-framed)")]
    NotYetSupported { version: u64 },
    #[error("unknown header format version {version}")]
    UnknownVersion { version: u64 },
    #[error("header of {len} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")]
    TooLarge { len: u64 },
    #[error("V{version} header of {len} bytes ends before its flags byte and inner length (69 bytes)")]
    FramedTooShort { version: u64, len: usize },
    #[error("inner block length {inner_len} exceeds the {MAX_INNER_LEN}-byte cap")]
    InnerTooLarge { inner_len: u64 },
    #[error("inner block length is {declared} but the LZ4 frame decompresses to {actual}")]
    InnerLengthMismatch { declared: u64, actual: String },
    #[error("inner block: {0}")]
    Lz4(Lz4Error),
    #[error("inner block ends inside the {section} ({need} bytes needed, {have} left)")]
    InnerTruncated { section: &'static str, need: u64, have: u64 },
    #[error("frame table of build {build}: compression type 0 (none) but {count} frames")]
    FrameTableTypeZero { build: BuildId, count: u32 },
    #[error("frame table of build {build}: unknown compression type {compression}")]
    FrameTableUnknownType { build: BuildId, compression: u32 },
    #[error("frame table of build {build}: {count} frames, over the cap of {MAX_FRAMES}")]
    FrameCountCap { build: BuildId, count: u64 },
    #[error("frame table of build {build}, frame {frame}: {reason}")]
    FrameInvalid { build: BuildId, frame: u64, reason: String },
    #[error("V5 build table has {count} builds, over the cap of {MAX_V5_BUILDS}")]
    V5BuildCountCap { count: u64 },
    #[error("V5 mapping section has {count} entries, over the cap of {MAX_V5_ENTRIES}")]
    V5EntryCountCap { count: u64 },
    #[error("V5 entry {entry} names build index {index}, but the build table has {builds} builds")]
    V5BuildIndex { entry: u64, index: u64, builds: u64 },
    #[error("V5 entry {entry} starts at byte {offset}, before the previous entry ends at {previous_end}")]
    V5Overlap { entry: u64, offset: u64, previous_end: u64 },
    #[error("V5 entry {entry}: {reason}")]
    V5BadEntry { entry: u64, reason: String },
    #[error("device Size {size} cannot be mapped: rounded up to 4096-byte pages it does not fit in 64 bits")]
    SizeOverflow { size: u64 },
}

/// The format version, from the raw version field.
pub fn format_version(raw: u64) -> u64 {
    raw & 0xFFFF
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn id_at(b: &[u8], off: usize) -> BuildId {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    BuildId::from_bytes(a)
}

/// Peek at the format version of a header without parsing the rest (None if under 8 bytes).
pub fn peek_version(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= 8).then(|| format_version(u64_at(bytes, 0)))
}

/// Parse a V1–V3 header. An empty body yields one synthesised mapping
/// `[0, roundup(Size, 4096)) → BuildId @ 0`, as E2B's reader does.
pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
    if bytes.len() as u64 > MAX_HEADER_BYTES {
        return Err(ParseError::TooLarge { len: bytes.len() as u64 });
    }
    if bytes.len() < META_LEN {
        return Err(ParseError::TooShort { len: bytes.len() });
    }
    let version = u64_at(bytes, 0);
    let mut h = Header {
        version,
        block_size: u64_at(bytes, 8),
        size: u64_at(bytes, 16),
        generation: u64_at(bytes, 24),
        build_id: id_at(bytes, 32),
        base_build_id: id_at(bytes, 48),
        mappings: Vec::new(),
        synthesized: false,
        flags: 0,
        builds: Vec::new(),
    };
    match format_version(version) {
        1..=3 => {}
        4 | 5 => {
            framed::parse_body(&mut h, &bytes[META_LEN..])?;
            return Ok(h);
        }
        v => return Err(ParseError::UnknownVersion { version: v }),
    }
    let body = &bytes[META_LEN..];
    if !body.len().is_multiple_of(MAPPING_LEN) {
        return Err(ParseError::BodyNotMultiple { body: body.len(), extra: body.len() % MAPPING_LEN });
    }
    h.mappings = body
        .chunks_exact(MAPPING_LEN)
        .map(|r| Mapping {
            offset: u64_at(r, 0),
            length: u64_at(r, 8),
            build: id_at(r, 16),
            storage_offset: u64_at(r, 32),
        })
        .collect();
    synthesize_if_empty(&mut h)?;
    Ok(h)
}

/// `Size` rounded up to a whole number of 4096-byte pages, if that fits in 64 bits.
pub fn page_rounded(size: u64) -> Option<u64> {
    size.div_ceil(PAGE).checked_mul(PAGE)
}

/// An empty mapping list reads as one self mapping `[0, roundup(Size, 4096))` (V1–V4). A Size
/// whose rounding overflows is refused (E2B's reader would wrap it to an empty mapping).
fn synthesize_if_empty(h: &mut Header) -> Result<(), ParseError> {
    if h.mappings.is_empty() {
        let length = page_rounded(h.size).ok_or(ParseError::SizeOverflow { size: h.size })?;
        h.synthesized = true;
        h.mappings.push(Mapping { offset: 0, length, build: h.build_id, storage_offset: 0 });
    }
    Ok(())
}

fn encode_meta(h: &Header, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&h.block_size.to_le_bytes());
    out.extend_from_slice(&h.size.to_le_bytes());
    out.extend_from_slice(&h.generation.to_le_bytes());
    out.extend_from_slice(h.build_id.as_bytes());
    out.extend_from_slice(h.base_build_id.as_bytes());
}

/// Encode a header in the layout of its version: V1–V3 mappings as stored (a synthesised body is
/// written empty); V4/V5 through [`try_encode`]. V5 stores mappings in 4 KiB pages: this function
/// rounds unaligned values down, `try_encode` refuses them.
pub fn encode(h: &Header) -> Vec<u8> {
    if matches!(h.format(), 4 | 5) {
        return framed::encode_lossy(h);
    }
    let n = if h.synthesized { 0 } else { h.mappings.len() };
    let mut out = Vec::with_capacity(META_LEN + n * MAPPING_LEN);
    encode_meta(h, &mut out);
    if !h.synthesized {
        for m in &h.mappings {
            out.extend_from_slice(&m.offset.to_le_bytes());
            out.extend_from_slice(&m.length.to_le_bytes());
            out.extend_from_slice(m.build.as_bytes());
            out.extend_from_slice(&m.storage_offset.to_le_bytes());
        }
    }
    out
}

/// The header E2B synthesises for a headerless build: one mapping of the whole data file to the
/// build itself (Version 1, Generation 1).
pub fn headerless(id: BuildId, data_len: u64, block_size: u64) -> Header {
    Header {
        version: 1,
        block_size,
        size: data_len,
        generation: 1,
        build_id: id,
        base_build_id: id,
        mappings: vec![Mapping { offset: 0, length: data_len, build: id, storage_offset: 0 }],
        synthesized: true,
        flags: 0,
        builds: Vec::new(),
    }
}

/// A structural problem in the mapping list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    ZeroLength {
        index: usize,
        offset: u64,
    },
    /// Mapping `index` starts before the previous one.
    Unsorted {
        index: usize,
        offset: u64,
        previous: u64,
    },
    /// Mapping `index` starts after the previous one ended.
    Gap {
        index: usize,
        start: u64,
        end: u64,
    },
    /// Mapping `index` starts before the previous one ended.
    Overlap {
        index: usize,
        offset: u64,
        previous_end: u64,
    },
    /// The mappings do not start at 0.
    DoesNotStartAtZero {
        first: u64,
    },
    /// The mappings end before `Size`.
    EndsShort {
        end: u64,
        size: u64,
    },
    /// The mappings run past `Size` (more than block rounding allows).
    EndsPast {
        end: u64,
        size: u64,
    },
    /// BlockSize is zero or not a power of two.
    BadBlockSize {
        block_size: u64,
    },
    /// A mapping offset or length is not a multiple of 4096.
    Unaligned {
        index: usize,
        offset: u64,
        length: u64,
    },
    /// Offset + length or storage offset + length runs past 2^64.
    Overflow {
        index: usize,
        offset: u64,
        length: u64,
        storage_offset: u64,
    },
}

impl Issue {
    pub fn describe(&self) -> String {
        match self {
            Issue::ZeroLength { index, offset } => format!("mapping #{index} at offset {offset} has length 0"),
            Issue::Unsorted { index, offset, previous } => {
                format!("mapping #{index} at offset {offset} comes after a mapping at {previous}: not sorted")
            }
            Issue::Gap { index, start, end } => {
                format!("gap [{start}, {end}) before mapping #{index}: bytes no mapping covers")
            }
            Issue::Overlap { index, offset, previous_end } => {
                format!("mapping #{index} at offset {offset} overlaps the previous one, which ends at {previous_end}")
            }
            Issue::DoesNotStartAtZero { first } => format!("mappings start at {first}, not 0"),
            Issue::EndsShort { end, size } => format!("mappings end at {end} but the device Size is {size}"),
            Issue::EndsPast { end, size } => format!("mappings run to {end}, past the device Size {size}"),
            Issue::BadBlockSize { block_size } => format!("BlockSize {block_size} is not a power of two"),
            Issue::Unaligned { index, offset, length } => {
                format!("mapping #{index} (offset {offset}, length {length}) is not 4096-byte aligned")
            }
            Issue::Overflow { index, offset, length, storage_offset } => format!(
                "mapping #{index} (offset {offset}, length {length}, storage offset {storage_offset}) runs past 2^64 bytes"
            ),
        }
    }
}

/// Check sortedness, contiguity and coverage of `[0, Size)`.
pub fn validate(h: &Header) -> Vec<Issue> {
    validate_capped(h, usize::MAX).0
}

/// [`validate`], keeping at most `cap` issues (a header of millions of broken mappings costs no
/// more memory than that); the second value is how many issues there were in all.
pub fn validate_capped(h: &Header, cap: usize) -> (Vec<Issue>, usize) {
    let mut issues = Vec::new();
    let mut total = 0usize;
    let mut push = |issues: &mut Vec<Issue>, i: Issue| {
        total += 1;
        if issues.len() < cap {
            issues.push(i);
        }
    };
    if h.block_size == 0 || !h.block_size.is_power_of_two() {
        push(&mut issues, Issue::BadBlockSize { block_size: h.block_size });
    }
    let mut prev_end: Option<(u64, u64)> = None; // (offset, end)
    for (i, m) in h.mappings.iter().enumerate() {
        if m.length == 0 {
            push(&mut issues, Issue::ZeroLength { index: i, offset: m.offset });
        }
        if m.overflows() {
            push(
                &mut issues,
                Issue::Overflow { index: i, offset: m.offset, length: m.length, storage_offset: m.storage_offset },
            );
        }
        if m.offset % PAGE != 0 || m.length % PAGE != 0 {
            push(&mut issues, Issue::Unaligned { index: i, offset: m.offset, length: m.length });
        }
        match prev_end {
            None if m.offset != 0 => push(&mut issues, Issue::DoesNotStartAtZero { first: m.offset }),
            None => {}
            Some((poff, pend)) => {
                if m.offset < poff {
                    push(&mut issues, Issue::Unsorted { index: i, offset: m.offset, previous: poff });
                } else if m.offset < pend {
                    push(&mut issues, Issue::Overlap { index: i, offset: m.offset, previous_end: pend });
                } else if m.offset > pend {
                    push(&mut issues, Issue::Gap { index: i, start: pend, end: m.offset });
                }
            }
        }
        let end = m.end();
        prev_end = Some(match prev_end {
            Some((_, pend)) if pend > end => (m.offset, pend),
            _ => (m.offset, end),
        });
    }
    let end = prev_end.map(|(_, e)| e).unwrap_or(0);
    let bs = h.block_size.max(1);
    // A rounding that overflows allows any end.
    let rounded = h.size.div_ceil(bs).saturating_mul(bs);
    if end < h.size {
        push(&mut issues, Issue::EndsShort { end, size: h.size });
    } else if end > page_rounded(h.size).unwrap_or(u64::MAX) && end > rounded {
        push(&mut issues, Issue::EndsPast { end, size: h.size });
    }
    (issues, total)
}

impl Header {
    /// The format version (1–5).
    pub fn format(&self) -> u64 {
        format_version(self.version)
    }

    /// The builds-section entry of `id` (the last one, as E2B's map keeps it), V4/V5 only.
    pub fn build_info(&self, id: &BuildId) -> Option<&BuildInfo> {
        self.builds.iter().rev().find(|b| &b.build == id)
    }

    /// Distinct non-nil builds named by the mappings, in first-appearance order.
    pub fn referenced_builds(&self) -> Vec<BuildId> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &self.mappings {
            if !m.is_nil() && seen.insert(m.build) {
                out.push(m.build);
            }
        }
        out
    }

    /// Per referenced build, in first-appearance order and in one pass over the mappings: the
    /// bytes mapped to it (`None` when the sum overflows 64 bits) and the bytes of its data file
    /// the mappings need ([`Header::required_len`]).
    pub fn build_stats(&self) -> Vec<BuildStats> {
        let mut index: std::collections::HashMap<BuildId, usize> = std::collections::HashMap::new();
        let mut out: Vec<BuildStats> = Vec::new();
        for m in self.mappings.iter().filter(|m| !m.is_nil()) {
            let i = *index.entry(m.build).or_insert_with(|| {
                out.push(BuildStats { build: m.build, bytes: Some(0), required_len: 0 });
                out.len() - 1
            });
            let s = &mut out[i];
            s.bytes = s.bytes.and_then(|b| b.checked_add(m.length));
            s.required_len = s.required_len.max(m.storage_end());
        }
        out
    }

    /// Bytes of `build`'s data file the mappings need: max(storage_offset + length).
    pub fn required_len(&self, build: &BuildId) -> u64 {
        self.mappings.iter().filter(|m| &m.build == build).map(Mapping::storage_end).max().unwrap_or(0)
    }

    /// Bytes mapped to each category: (this build, other builds, nil); `None` for a category
    /// whose sum overflows 64 bits (the lengths are untrusted).
    pub fn byte_split(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let (mut own, mut other, mut nil) = (Some(0u64), Some(0u64), Some(0u64));
        for m in &self.mappings {
            let sum = if m.is_nil() {
                &mut nil
            } else if m.build == self.build_id {
                &mut own
            } else {
                &mut other
            };
            *sum = sum.and_then(|s| s.checked_add(m.length));
        }
        (own, other, nil)
    }

    /// True when the header maps the whole device to this build's data file at identical
    /// offsets, i.e. the data file is a full image.
    pub fn is_identity(&self) -> bool {
        let mut pos = 0;
        for m in &self.mappings {
            if m.build != self.build_id || m.offset != pos || m.storage_offset != m.offset {
                return false;
            }
            pos = m.end();
        }
        pos >= self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "11111111-2222-3333-4444-555555555555";
    const B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .lines()
            .flat_map(|l| l.split_once(':').map(|x| x.1).unwrap_or(l).split_whitespace())
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        digits
    }

    /// TV-H3 from e2b-formats.md: the V3 rootfs header of A (184 bytes).
    pub(crate) const TV_H3: &str = "\
0000: 03 00 00 00 00 00 00 00 00 10 00 00 00 00 00 00
0010: 00 40 00 00 00 00 00 00 01 00 00 00 00 00 00 00
0020: 11 11 11 11 22 22 33 33 44 44 55 55 55 55 55 55
0030: aa aa aa aa bb bb cc cc dd dd ee ee ee ee ee ee
0040: 00 00 00 00 00 00 00 00 00 20 00 00 00 00 00 00
0050: aa aa aa aa bb bb cc cc dd dd ee ee ee ee ee ee
0060: 00 00 00 00 00 00 00 00 00 20 00 00 00 00 00 00
0070: 00 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0080: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0090: 00 30 00 00 00 00 00 00 00 10 00 00 00 00 00 00
00a0: 11 11 11 11 22 22 33 33 44 44 55 55 55 55 55 55
00b0: 00 00 00 00 00 00 00 00";

    fn id(s: &str) -> BuildId {
        BuildId::parse(s).unwrap()
    }

    #[test]
    fn tv_h3_parses_as_the_reference_says() {
        let bytes = unhex(TV_H3);
        assert_eq!(bytes.len(), 184);
        let h = parse(&bytes).unwrap();
        assert_eq!((h.format(), h.block_size, h.size, h.generation), (3, 4096, 16384, 1));
        assert_eq!((h.build_id, h.base_build_id), (id(A), id(B)));
        assert_eq!(
            h.mappings,
            vec![
                Mapping { offset: 0, length: 8192, build: id(B), storage_offset: 0 },
                Mapping { offset: 8192, length: 4096, build: BuildId::nil(), storage_offset: 0 },
                Mapping { offset: 12288, length: 4096, build: id(A), storage_offset: 0 },
            ]
        );
        assert!(validate(&h).is_empty());
        assert_eq!(h.referenced_builds(), vec![id(B), id(A)]);
        assert_eq!(h.required_len(&id(A)), 4096);
        assert_eq!(h.required_len(&id(B)), 8192);
        assert_eq!(encode(&h), bytes);
    }

    #[test]
    fn tv_h3_variants() {
        let bytes = unhex(TV_H3);
        // Version 1 parses the same.
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert_eq!(parse(&v1).unwrap().format(), 1);
        // Truncated by one byte.
        assert_eq!(parse(&bytes[..183]), Err(ParseError::BodyNotMultiple { body: 119, extra: 39 }));
        assert_eq!(parse(&bytes[..63]), Err(ParseError::TooShort { len: 63 }));
        // Empty body → one synthesised self mapping.
        let h = parse(&bytes[..64]).unwrap();
        assert!(h.synthesized);
        assert_eq!(h.mappings, vec![Mapping { offset: 0, length: 16384, build: id(A), storage_offset: 0 }]);
        assert_eq!(encode(&h).len(), 64);
        // A gap at 8192: drop the nil mapping.
        let mut gap = bytes[..104].to_vec();
        gap.extend_from_slice(&bytes[144..]);
        let h = parse(&gap).unwrap();
        assert_eq!(validate(&h), vec![Issue::Gap { index: 1, start: 8192, end: 12288 }]);
        // Version 4/5 over a V3 body: no LZ4 frame where one must be.
        let mut v4 = bytes.clone();
        v4[0] = 4;
        assert!(matches!(parse(&v4), Err(ParseError::Lz4(Lz4Error::BadMagic(_)))));
        v4[0] = 5;
        assert!(matches!(parse(&v4), Err(ParseError::Lz4(Lz4Error::BadMagic(_)))));
        assert_eq!(parse(&v4[..68]), Err(ParseError::FramedTooShort { version: 5, len: 68 }));
        v4[0] = 9;
        assert_eq!(parse(&v4), Err(ParseError::UnknownVersion { version: 9 }));
        v4[0] = 0;
        assert_eq!(parse(&v4), Err(ParseError::UnknownVersion { version: 0 }));
    }

    #[test]
    fn validate_reports_each_shape() {
        let a = id(A);
        let mk = |maps: Vec<(u64, u64)>, size| Header {
            version: 3,
            block_size: 4096,
            size,
            generation: 0,
            build_id: a,
            base_build_id: a,
            mappings: maps
                .into_iter()
                .map(|(o, l)| Mapping { offset: o, length: l, build: a, storage_offset: o })
                .collect(),
            synthesized: false,
            flags: 0,
            builds: Vec::new(),
        };
        assert_eq!(validate(&mk(vec![(4096, 4096)], 8192)), vec![Issue::DoesNotStartAtZero { first: 4096 }]);
        assert_eq!(
            validate(&mk(vec![(0, 8192), (4096, 4096)], 8192)),
            vec![Issue::Overlap { index: 1, offset: 4096, previous_end: 8192 }]
        );
        assert_eq!(
            validate(&mk(vec![(4096, 4096), (0, 4096)], 8192))[1],
            Issue::Unsorted { index: 1, offset: 0, previous: 4096 }
        );
        assert_eq!(validate(&mk(vec![(0, 4096)], 8192)), vec![Issue::EndsShort { end: 4096, size: 8192 }]);
        assert_eq!(validate(&mk(vec![(0, 16384)], 8192)), vec![Issue::EndsPast { end: 16384, size: 8192 }]);
        assert!(validate(&mk(vec![(0, 8192)], 8000)).is_empty(), "rounding up to a page is fine");
        assert!(mk(vec![(0, 8192)], 8192).is_identity());
    }

    #[test]
    fn a_size_whose_page_rounding_overflows_is_refused_not_wrapped() {
        // Issue 12 item 10: Size = 2^64 − 100 and no mappings once gave a synthesised mapping of
        // length 0 (the rounding wrapped), which verify then reported as if the header held it.
        let mut bytes = unhex(TV_H3)[..64].to_vec();
        bytes[16..24].copy_from_slice(&(u64::MAX - 99).to_le_bytes());
        assert_eq!(parse(&bytes), Err(ParseError::SizeOverflow { size: u64::MAX - 99 }));
        // The largest Size that still rounds is accepted.
        bytes[16..24].copy_from_slice(&(u64::MAX - 4095).to_le_bytes());
        assert_eq!(parse(&bytes).unwrap().mappings[0].length, u64::MAX - 4095);
    }

    #[test]
    fn sums_of_untrusted_lengths_are_checked() {
        // Two 2^63-byte mappings: their sum is 2^64 (inspect once printed "own 0 B").
        let a = id(A);
        let half = 1u64 << 63;
        let h = Header {
            version: 3,
            block_size: 4096,
            size: u64::MAX,
            generation: 0,
            build_id: a,
            base_build_id: a,
            mappings: vec![
                Mapping { offset: 0, length: half, build: a, storage_offset: 0 },
                Mapping { offset: half, length: half, build: a, storage_offset: half },
            ],
            synthesized: false,
            flags: 0,
            builds: Vec::new(),
        };
        assert_eq!(h.byte_split(), (None, Some(0), Some(0)));
        assert_eq!(h.build_stats()[0].bytes, None);
        let issues = validate(&h);
        assert!(issues.iter().any(|i| matches!(i, Issue::Overflow { index: 1, .. })), "{issues:?}");
        assert!(issues.iter().any(|i| i.describe().contains("2^64")));
        // Capped validation keeps at most the cap and counts the rest.
        let many = Header {
            mappings: (0..100).map(|i| Mapping { offset: i * 10, length: 3, build: a, storage_offset: 0 }).collect(),
            ..h.clone()
        };
        let (kept, total) = validate_capped(&many, 7);
        assert_eq!(kept.len(), 7);
        assert!(total > 100, "{total}");
    }

    #[test]
    fn build_stats_match_the_slow_definitions() {
        let h = parse(&unhex(TV_H3)).unwrap();
        let stats = h.build_stats();
        assert_eq!(stats.iter().map(|s| s.build).collect::<Vec<_>>(), h.referenced_builds());
        for s in stats {
            assert_eq!(s.required_len, h.required_len(&s.build));
            assert_eq!(s.bytes, Some(h.mappings.iter().filter(|m| m.build == s.build).map(|m| m.length).sum()));
        }
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(
            version in 1u64..=3, block_pow in 12u32..=21, size in 0u64..1<<40, generation: u64,
            idb: [u8;16], baseb: [u8;16],
            maps in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<[u8;16]>(), any::<u64>()), 1..20),
        ) {
            let h = Header {
                version, block_size: 1 << block_pow, size, generation,
                build_id: BuildId::from_bytes(idb), base_build_id: BuildId::from_bytes(baseb),
                mappings: maps.into_iter().map(|(o,l,b,s)| Mapping{offset:o,length:l,build:BuildId::from_bytes(b),storage_offset:s}).collect(),
                synthesized: false,
                flags: 0,
                builds: Vec::new(),
            };
            let bytes = encode(&h);
            prop_assert_eq!(bytes.len(), META_LEN + MAPPING_LEN * h.mappings.len());
            prop_assert_eq!(parse(&bytes).unwrap(), h);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }
    }
}
