//! Firecracker's `snapfile` (vmstate) read offline, for every encoding E2B may have on disk
//! (reference: firecracker-snapshot.md §1–3, §6).
//!
//! ```text
//! versionize (FC v0.23–v1.6)   bincode (v1.7–v1.14)            bitcode (v1.15+, columns: bitcode.rs)
//!   0  u64 magic | 1            0  u64 magic (low 16 bits 0)      u64 column: magic
//!   8  u16 data_version         8  u64 L, 16: L bytes "4.0.0"     str column: version "10.0.0"
//!  10  u64 mem_size_mib        16+L u64 mem_size_mib, ...         u64 column: mem_size_mib, ...
//!      ...                         ...
//! len-8 u64 CRC-64/REDIS over bytes 0..len-8 (all three encodings)
//! ```
//!
//! How far the state is decoded: the header (magic, version), then `vm_info` (`mem_size_mib`,
//! `smt`, `cpu_template`, `boot_source`, `huge_pages`), the KVM capabilities (v1.12+) and the
//! guest memory regions (base, size; v1.14+ also region type and plugged slots), laid out as the
//! snapshot version says. Every length and count read is capped before use. The rest of the state
//! (vCPUs, devices, KVM and interrupt-controller state) is not decoded: only the CRC covers it.
//!
//! The CRC is CRC-64/REDIS (poly 0xAD93D23594C935A9 reflected, init 0, xorout 0), computed by
//! `crc-fast`'s `Crc64Redis`. Do NOT use `crc64fast` here: it computes CRC-64/XZ, a different
//! CRC, and would report every healthy snapfile as corrupt.
//!
//! The file is streamed; only the first 64 KiB are kept for header decoding.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crc_fast::{CrcAlgorithm, Digest};
use serde::Serialize;

pub mod bitcode;

/// `BASE_MAGIC_ID` for x86_64 (high 48 bits).
pub const X86_64_MAGIC: u64 = 0x0710_1984_8664_0000;
/// `BASE_MAGIC_ID` for aarch64.
pub const AARCH64_MAGIC: u64 = 0x0710_1984_AAAA_0000;
/// Firecracker's deserialisation limit for the state (bincode era: 10 MiB; bitcode: 10 MB).
pub const STATE_LIMIT: u64 = 10 * 1024 * 1024;
/// Bytes of the head kept for decoding.
const HEAD: usize = 64 * 1024;
/// Files up to this size are rescanned byte by byte to find where a valid snapshot ends.
const SCAN_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// ELF `e_machine` for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The architecture this binary was built for.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    fn from_magic(magic: u64) -> Option<Arch> {
        match magic & !0xFFFF {
            X86_64_MAGIC => Some(Arch::X86_64),
            AARCH64_MAGIC => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Firecracker v0.23–v1.6.
    Versionize,
    /// Firecracker v1.7–v1.14.
    Bincode,
    /// Firecracker v1.15+.
    Bitcode,
}

/// One guest memory region from the state's prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Region {
    pub base_address: u64,
    pub size: u64,
    /// v1.14+: a hot-pluggable region (virtio-mem), not part of `mem_size_mib`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hotpluggable: bool,
    /// v1.14+: how many KVM slots the region has, and how many of them are plugged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugged_slots: Option<u64>,
}

impl Region {
    pub fn new(base_address: u64, size: u64) -> Self {
        Region { base_address, size, ..Default::default() }
    }
}

/// Everything read from a snapfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapfileInfo {
    pub len: u64,
    pub magic: u64,
    pub arch: Option<Arch>,
    pub encoding: Option<Encoding>,
    /// Low 16 bits of the magic (the old "format version": 1 for versionize, 0 since v1.7).
    pub format_version: u16,
    /// Snapshot version string ("4.0.0") for bincode/bitcode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// versionize data version (u16 at offset 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_version: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_image_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<Region>>,
    /// Which Firecracker layout the regions decoded with (`v1.13` or `v1.14` for 8.0.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<&'static str>,
    pub stored_crc: u64,
    pub computed_crc: u64,
    pub crc_ok: bool,
    /// Zero bytes at the very end of the file.
    pub trailing_zero_bytes: u64,
    /// When the CRC fails or the file is zero-padded: the length at which a CRC-valid snapshot
    /// ends (the running CRC over 0..L is 0), if there is one before the end of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_prefix_len: Option<u64>,
    /// Why the header could not be decoded, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_error: Option<String>,
    /// Why the state could not be decoded as far as the memory regions, when the header could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// Byte offset just after the memory regions: how far tmpl decoded the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_end: Option<u64>,
}

impl SnapfileInfo {
    /// Guest memory the snapshot expects, in bytes.
    pub fn mem_bytes(&self) -> Option<u64> {
        self.mem_size_mib.and_then(|m| m.checked_mul(1 << 20))
    }

    /// Sum of the region sizes that make up `mem_size_mib` (hot-pluggable regions excluded).
    pub fn regions_total(&self) -> Option<u64> {
        self.regions.as_deref().and_then(dram_total)
    }
}

// ---------------------------------------------------------------------------------------------
// CRC-64/REDIS

/// CRC-64/REDIS of `data` (Firecracker's snapshot CRC), via crc-fast.
pub fn crc64_redis(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Redis, data)
}

/// Reflected form of the CRC-64/REDIS polynomial 0xAD93D23594C935A9 (RevEng catalogue).
const POLY_REFLECTED: u64 = 0xAD93D23594C935A9u64.reverse_bits();

const fn make_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY_REFLECTED } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = make_table();

/// Byte-at-a-time CRC-64/REDIS register update: slow, but exposes the register after every
/// byte, which the end-of-snapshot scan needs.
fn crc_step(crc: u64, b: u8) -> u64 {
    TABLE[((crc ^ b as u64) & 0xFF) as usize] ^ (crc >> 8)
}

// ---------------------------------------------------------------------------------------------
// Analysis

/// Analyse a snapfile on disk, streaming it.
pub fn analyze_file(path: &Path) -> io::Result<SnapfileInfo> {
    // A snapfile in a remote storage: streamed by ranged GETs, like a local one by read().
    if let Some(r) = crate::remote::mount::reader(path) {
        let (mut reader, len) = r?;
        return analyze(&mut reader, len, || {
            crate::remote::mount::reader(path)
                .unwrap_or_else(|| Err(io::Error::other("remote storage unmounted")))
                .map(|(r, _)| Box::new(r) as Box<dyn Read>)
        });
    }
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    analyze(&mut f, len, || File::open(path).map(|f| Box::new(f) as Box<dyn Read>))
}

/// Analyse an in-memory snapfile.
pub fn analyze_bytes(bytes: &[u8]) -> SnapfileInfo {
    let mut r = bytes;
    analyze(&mut r, bytes.len() as u64, || Ok(Box::new(bytes) as Box<dyn Read + '_>))
        .expect("reading from memory cannot fail")
}

/// Stream `len` bytes from `r`: keep the head, CRC everything before the trailer, count trailing
/// zeros. `reopen` gives a second reader when the end-of-snapshot scan is needed.
pub fn analyze<'a, R: Read + ?Sized>(
    r: &mut R,
    len: u64,
    reopen: impl FnOnce() -> io::Result<Box<dyn Read + 'a>>,
) -> io::Result<SnapfileInfo> {
    let mut head = Vec::with_capacity(HEAD.min(crate::num::usize_from(len)));
    let mut digest = Digest::new(CrcAlgorithm::Crc64Redis);
    let crc_end = len.saturating_sub(8);
    let mut pos = 0u64;
    let mut trailer = [0u8; 8];
    let mut trailing_zeros = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while pos < len {
        let want = crate::num::usize_from(len - pos).min(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while reading at byte {pos}"),
            ));
        }
        let chunk = &buf[..n];
        if head.len() < HEAD {
            let take = (HEAD - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        // CRC covers [0, crc_end).
        if pos < crc_end {
            let upto = crate::num::usize_from(crc_end - pos).min(n);
            digest.update(&chunk[..upto]);
        }
        // Trailer bytes [crc_end, len) that fall in this chunk.
        if len >= 8 && pos + n as u64 > crc_end {
            let from = crate::num::usize_from(crc_end.saturating_sub(pos));
            let at = crate::num::usize_from(pos + crate::num::u64_from(from) - crc_end);
            trailer[at..at + (n - from)].copy_from_slice(&chunk[from..]);
        }
        match chunk.iter().rposition(|&b| b != 0) {
            Some(last) => trailing_zeros = (n - 1 - last) as u64,
            None => trailing_zeros += n as u64,
        }
        pos += n as u64;
    }
    let stored_crc = u64::from_le_bytes(trailer);
    let computed_crc = digest.finalize();
    let crc_ok = len >= 8 && stored_crc == computed_crc;

    // Decode only the state bytes, never the CRC trailer.
    let state_head = &head[..head.len().min(crate::num::usize_from(crc_end))];
    let mut info = decode_head(state_head, len);
    info.stored_crc = stored_crc;
    info.computed_crc = computed_crc;
    info.crc_ok = crc_ok;
    info.trailing_zero_bytes = trailing_zeros;

    let suspicious = !crc_ok || (stored_crc == 0 && trailing_zeros >= 8 && len > 8);
    if suspicious && (8..=SCAN_LIMIT).contains(&len) && info.arch.is_some() {
        info.valid_prefix_len = scan_valid_end(&mut *reopen()?, len, header_len(&info))?;
    }
    Ok(info)
}

/// Minimum length a snapshot must have before its end can be detected (skip prefixes that lie
/// inside the header: leading zeros keep the register at 0).
fn header_len(info: &SnapfileInfo) -> u64 {
    match info.encoding {
        Some(Encoding::Versionize) => 10 + 8,
        Some(Encoding::Bincode) => 16 + info.version.as_ref().map_or(0, |v| v.len() as u64) + 8,
        Some(Encoding::Bitcode) => 10 + info.version.as_ref().map_or(0, |v| v.len() as u64) + 8,
        None => 16,
    }
}

/// One pass of the running CRC register. A valid snapshot of length L has crc(0..L) == 0, and
/// zero bytes appended after it keep the register at 0 (init = xorout = 0), while junk moves it
/// away. So the last position where the register *becomes* 0 (after being non-zero) and that
/// lies before the end of the file is where a valid snapshot ends. (If the stored CRC's top bytes
/// are themselves zero, the register reaches 0 that many bytes early; the position is then exact
/// to within those bytes.)
fn scan_valid_end(r: &mut dyn Read, len: u64, min: u64) -> io::Result<Option<u64>> {
    let mut crc = 0u64;
    let mut best = None;
    let mut pos = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while pos < len {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            let prev = crc;
            crc = crc_step(crc, b);
            pos += 1;
            if crc == 0 && prev != 0 && pos >= min && pos < len {
                best = Some(pos);
            }
        }
    }
    Ok(best)
}

fn u64_le(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// Decode the header fields from the first bytes of the file (never panics).
fn decode_head(head: &[u8], len: u64) -> SnapfileInfo {
    let mut info = SnapfileInfo {
        len,
        magic: u64_le(head, 0).unwrap_or(0),
        arch: None,
        encoding: None,
        format_version: 0,
        version: None,
        data_version: None,
        mem_size_mib: None,
        huge_pages: None,
        kernel_image_path: None,
        regions: None,
        layout: None,
        stored_crc: 0,
        computed_crc: 0,
        crc_ok: false,
        trailing_zero_bytes: 0,
        valid_prefix_len: None,
        header_error: None,
        state_error: None,
        prefix_end: None,
    };
    if len < 8 {
        info.header_error = Some("file is shorter than the 8-byte CRC trailer".into());
        return info;
    }
    if head.len() < 8 {
        info.header_error = Some("no room for the magic before the CRC trailer".into());
        return info;
    }
    info.format_version = (info.magic & 0xFFFF) as u16;
    if let Some(arch) = Arch::from_magic(info.magic) {
        info.arch = Some(arch);
        match info.format_version {
            1 => {
                info.encoding = Some(Encoding::Versionize);
                info.data_version = head.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]));
                info.mem_size_mib = u64_le(head, 10);
            }
            0 => {
                info.encoding = Some(Encoding::Bincode);
                decode_bincode(head, &mut info);
            }
            v => info.header_error = Some(format!("format version {v} in the magic is neither 1 (versionize) nor 0")),
        }
        return info;
    }
    // bitcode (v1.15+): the magic is the first integer column, the version the first string column.
    let mut c = bitcode::Columns::new(head);
    if let Some(m) = c.ints(1, 8).and_then(|v| v.first().copied())
        && let Some(arch) = Arch::from_magic(m)
        && m & 0xFFFF == 0
    {
        info.magic = m;
        info.arch = Some(arch);
        info.encoding = Some(Encoding::Bitcode);
        decode_bitcode(&mut c, &mut info);
        return info;
    }
    info.header_error = Some(format!("magic 0x{:016x} is not a Firecracker snapshot magic", info.magic));
    info
}

/// A little cursor over the head for the bincode (fixint, little-endian) prefix walk.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes(s.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64_le(self.b, self.pos)?;
        self.pos += 8;
        Some(v)
    }
    fn bytes(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u64()?;
        if n > 64 * 1024 {
            return None;
        }
        String::from_utf8(self.bytes(n)?.to_vec()).ok()
    }
    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
    fn count(&mut self, max: u64) -> Option<u64> {
        let n = self.u64()?;
        (n <= max).then_some(n)
    }
}

fn decode_bincode(head: &[u8], info: &mut SnapfileInfo) {
    let mut c = Cursor { b: head, pos: 8 };
    let Some(vlen) = c.u64() else {
        info.header_error = Some("truncated before the version string".into());
        return;
    };
    if vlen > 64 {
        info.header_error = Some(format!("version string length {vlen} is implausible"));
        return;
    }
    let version = match c.bytes(vlen).map(std::str::from_utf8) {
        Some(Ok(v)) if parse_semver(v).is_some() => v.to_string(),
        _ => {
            info.header_error = Some("version string is not a semantic version".into());
            return;
        }
    };
    info.version = Some(version.clone());
    let Some(mem) = c.u64() else {
        info.state_error = Some("the state ends before vm_info.mem_size_mib".into());
        return;
    };
    info.mem_size_mib = Some(mem);
    // The rest of VmInfo, then memory regions.
    let walk = |c: &mut Cursor| -> Option<(bool, String)> {
        let _smt = c.u8().filter(|&b| b <= 1)?;
        let _cpu_template = c.u32()?;
        let kernel = c.string()?;
        let _initrd = c.opt_string()?;
        let _boot_args = c.opt_string()?;
        let huge = c.u32()?;
        (huge <= 1).then_some((huge == 1, kernel))
    };
    let Some((huge, kernel)) = walk(&mut c) else {
        info.state_error = Some(format!("vm_info does not decode as snapshot version {version} lays it out"));
        return;
    };
    info.huge_pages = Some(huge);
    info.kernel_image_path = Some(kernel);
    let after_vm_info = c.pos;
    let major = parse_semver(&version).map(|v| v.0).unwrap_or(0);
    let attempts: &[(&'static str, RegionWalk)] = match major {
        1..=4 => &[("v1.7-v1.10", regions_with_offset)],
        5 => &[("v1.11", regions_plain)],
        6 => &[("v1.12", |c| skip_caps(c).and_then(|_| regions_plain(c)))],
        8 => &[
            ("v1.14", |c| skip_caps(c).and_then(|_| regions_v114(c))),
            ("v1.13", |c| skip_caps(c).and_then(|_| regions_plain(c))),
        ],
        _ => return,
    };
    // 8.0.0 is written by v1.13 and v1.14 with different region layouts: take the walk whose
    // regions add up to mem_size_mib (an empty list reads the same in both).
    let decoded: Vec<(&'static str, Vec<Region>, usize)> = attempts
        .iter()
        .filter_map(|(layout, f)| {
            let mut c2 = Cursor { b: head, pos: after_vm_info };
            f(&mut c2).map(|r| (*layout, r, c2.pos))
        })
        .collect();
    let plausible = |r: &[Region]| dram_total(r) == mem.checked_mul(1 << 20);
    let pick = decoded
        .iter()
        .find(|(_, r, _)| !r.is_empty() && plausible(r))
        .or_else(|| decoded.iter().find(|(_, r, _)| r.is_empty()))
        .or(decoded.first());
    match pick {
        Some((layout, r, end)) => {
            info.layout = Some(if r.is_empty() && decoded.len() > 1 { "v1.13 or v1.14" } else { layout });
            info.regions = Some(r.clone());
            info.prefix_end = Some(*end as u64);
        }
        None => {
            info.state_error = Some(format!(
                "the memory regions do not decode as snapshot version {version} lays them out (decoded up to byte {after_vm_info})"
            ))
        }
    }
}

/// Sum of the sizes of the regions that make up `mem_size_mib` (not hot-pluggable ones).
fn dram_total(r: &[Region]) -> Option<u64> {
    r.iter().filter(|x| !x.hotpluggable).try_fold(0u64, |acc, x| acc.checked_add(x.size))
}

/// One way of walking from the end of VmInfo to the memory regions.
type RegionWalk = fn(&mut Cursor) -> Option<Vec<Region>>;

fn skip_caps(c: &mut Cursor) -> Option<()> {
    let n = c.count(4096)?;
    for _ in 0..n {
        c.string()?;
    }
    Some(())
}

fn regions_with_offset(c: &mut Cursor) -> Option<Vec<Region>> {
    let n = c.count(256)?;
    (0..n)
        .map(|_| {
            let r = Region::new(c.u64()?, c.u64()?);
            c.u64()?;
            Some(r)
        })
        .collect()
}

fn regions_plain(c: &mut Cursor) -> Option<Vec<Region>> {
    let n = c.count(256)?;
    (0..n).map(|_| Some(Region::new(c.u64()?, c.u64()?))).collect()
}

fn regions_v114(c: &mut Cursor) -> Option<Vec<Region>> {
    let n = c.count(256)?;
    (0..n)
        .map(|_| {
            let mut r = Region::new(c.u64()?, c.u64()?);
            let region_type = c.u32()?;
            if region_type > 1 {
                return None;
            }
            let slots = c.count(1 << 24)?;
            let plugged = c.bytes(slots)?;
            if plugged.iter().any(|&b| b > 1) {
                return None;
            }
            r.hotpluggable = region_type == 1;
            r.slots = Some(slots);
            r.plugged_slots = Some(plugged.iter().filter(|&&b| b == 1).count() as u64);
            Some(r)
        })
        .collect()
}

/// The bitcode state (Firecracker v1.15+), after the magic column: the version, then VmInfo,
/// KvmState's capabilities and the memory regions, column by column (see `bitcode.rs`).
fn decode_bitcode(c: &mut bitcode::Columns, info: &mut SnapfileInfo) {
    let version = match c.strings(1, 64).and_then(|v| v.into_iter().next()) {
        Some(v) if parse_semver(&v).is_some() => v,
        _ => {
            info.header_error = Some("bitcode header: the version string is unreadable".into());
            return;
        }
    };
    info.version = Some(version.clone());
    // Only the layouts tmpl knows (9.0.0: v1.15, 10.0.0: v1.16); a later one is header-only.
    if !parse_semver(&version).is_some_and(|v| matches!(v.0, 9 | 10)) {
        return;
    }
    let at = |c: &bitcode::Columns, what: &str| format!("{what} does not decode (bitcode column at byte {})", c.pos());
    let Some(mem) = c.ints(1, 8).and_then(|v| v.first().copied()) else {
        info.state_error = Some(at(c, "vm_info.mem_size_mib"));
        return;
    };
    info.mem_size_mib = Some(mem);
    let vm_info = |c: &mut bitcode::Columns| -> Option<(bool, String)> {
        c.bools(1)?; // smt
        c.variants(1)?.first().filter(|&&v| v <= 5)?; // cpu_template
        let kernel = c.strings(1, 4096)?.pop()?;
        c.opt_strings(1, 4096)?; // initrd_path
        c.opt_strings(1, 64 * 1024)?; // boot_args
        let huge = *c.variants(1)?.first().filter(|&&v| v <= 1)?;
        Some((huge == 1, kernel))
    };
    let Some((huge, kernel)) = vm_info(c) else {
        info.state_error = Some(at(c, "vm_info"));
        return;
    };
    info.huge_pages = Some(huge);
    info.kernel_image_path = Some(kernel);
    let regions = |c: &mut bitcode::Columns| -> Option<Vec<Region>> {
        let caps = *c.lengths(1, 4096)?.first()?;
        if caps > 0 {
            c.strings(usize::try_from(caps).ok()?, 64)?;
        }
        let n = usize::try_from(*c.lengths(1, 256)?.first()?).ok()?;
        if n == 0 {
            return Some(Vec::new());
        }
        let base = c.ints(n, 8)?;
        let size = c.ints(n, 8)?;
        let kind = c.variants(n)?;
        let slots = c.lengths(n, bitcode::MAX_VALUES as u64)?;
        let total = slots.iter().try_fold(0u64, |a, &s| a.checked_add(s))?;
        let plugged = if total > 0 { c.bools(usize::try_from(total).ok()?)? } else { Vec::new() };
        let mut flags = plugged.into_iter();
        (0..n)
            .map(|i| {
                let k = kind[i];
                if k > 1 {
                    return None;
                }
                let count = flags.by_ref().take(usize::try_from(slots[i]).ok()?).filter(|&b| b).count();
                Some(Region {
                    base_address: base[i],
                    size: size[i],
                    hotpluggable: k == 1,
                    slots: Some(slots[i]),
                    plugged_slots: Some(count as u64),
                })
            })
            .collect()
    };
    match regions(c) {
        Some(r) => {
            info.regions = Some(r);
            info.layout = Some("v1.15-v1.16");
            info.prefix_end = Some(c.pos() as u64);
        }
        None => info.state_error = Some(at(c, "kvm_state or vm_state.memory.regions")),
    }
}

// ---------------------------------------------------------------------------------------------
// Firecracker versions

/// `MAJOR.MINOR.PATCH` (pre-release/build suffixes ignored).
pub fn parse_semver(s: &str) -> Option<(u64, u64, u64)> {
    let core = s.split(['-', '+']).next()?;
    let mut it = core.split('.');
    let v = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    it.next().is_none().then_some(v)
}

/// A Firecracker release as E2B names it in metadata: `v1.14.1_431f1fc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirecrackerVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The commit suffix (E2B's own builds carry one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl FirecrackerVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let (ver, commit) = match s.split_once('_') {
            Some((v, c)) => (v, Some(c.to_string())),
            None => (s, None),
        };
        let (major, minor, patch) = parse_semver(ver)?;
        Some(FirecrackerVersion { major, minor, patch, commit })
    }

    /// What this release writes and what it can load.
    pub fn snapshot_support(&self) -> SnapshotSupport {
        let (m, n, p) = (self.major, self.minor, self.patch);
        let versionize = |dv: u16| SnapshotSupport {
            encoding: Encoding::Versionize,
            writes: None,
            loads: vec![],
            max_data_version: Some(dv),
        };
        let new = |enc: Encoding, w: &'static str, loads: &[&'static str]| SnapshotSupport {
            encoding: enc,
            writes: Some(w),
            loads: loads.to_vec(),
            max_data_version: None,
        };
        match (m, n) {
            (0, 23) => versionize(1),
            (0, 24) => versionize(2),
            (0, 25) => versionize(3),
            (1, 0) => versionize(4),
            (1, 1) => versionize(5),
            (1, 2) => versionize(6),
            (1, 3) if p == 0 => versionize(6),
            (1, 3) => versionize(7),
            (1, 4) => versionize(8),
            (1, 5) => versionize(9),
            (1, 6) => versionize(10),
            (1, 7) => new(Encoding::Bincode, "1.0.0", &["1.0.0"]),
            (1, 8) => new(Encoding::Bincode, "2.0.0", &["2.0.0"]),
            (1, 9) => new(Encoding::Bincode, "3.0.0", &["3.0.0"]),
            (1, 10) if p == 0 => new(Encoding::Bincode, "3.0.0", &["3.0.0"]),
            (1, 10) => new(Encoding::Bincode, "4.0.0", &["4.0.0"]),
            (1, 11) => new(Encoding::Bincode, "5.0.0", &["5.0.0"]),
            (1, 12) => new(Encoding::Bincode, "6.0.0", &["6.0.0"]),
            (1, 13) => new(Encoding::Bincode, "8.0.0", &["8.0.0"]),
            // E2B's v1.14 fork (named with a commit suffix) also loads v1.10 and v1.12 snapshots.
            (1, 14) if self.commit.is_some() => new(Encoding::Bincode, "8.0.0", &["8.0.0", "6.0.0", "4.0.0"]),
            (1, 14) => new(Encoding::Bincode, "8.0.0", &["8.0.0"]),
            (1, 15) => new(Encoding::Bitcode, "9.0.0", &["9.0.0"]),
            (1, 16) => new(Encoding::Bitcode, "10.0.0", &["10.0.0"]),
            _ => SnapshotSupport { encoding: Encoding::Bitcode, writes: None, loads: vec![], max_data_version: None },
        }
    }

    pub fn known(&self) -> bool {
        matches!((self.major, self.minor), (0, 23..=25) | (1, 0..=16))
    }
}

impl std::fmt::Display for FirecrackerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(c) = &self.commit {
            write!(f, "_{c}")?;
        }
        Ok(())
    }
}

/// Snapshot compatibility of one Firecracker release (firecracker-snapshot.md §1d, §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSupport {
    pub encoding: Encoding,
    /// Version string written (new formats).
    pub writes: Option<&'static str>,
    /// Version strings it loads (exact major.minor matches; patch ignored).
    pub loads: Vec<&'static str>,
    /// versionize: newest data version it loads.
    pub max_data_version: Option<u16>,
}

impl SnapshotSupport {
    /// Whether a snapshot with this encoding/version can be loaded; `None` when unknown.
    pub fn can_load(&self, info: &SnapfileInfo) -> Option<bool> {
        match (info.encoding?, self.encoding) {
            (Encoding::Versionize, Encoding::Versionize) => Some(info.data_version? <= self.max_data_version?),
            (Encoding::Versionize, _) | (_, Encoding::Versionize) => Some(false),
            // bincode (v1.7–v1.14) and bitcode (v1.15+) releases cannot read each other's files.
            (a, b) if a != b => Some(false),
            _ => {
                if self.loads.is_empty() {
                    return None;
                }
                let (ma, mi, _) = parse_semver(info.version.as_deref()?)?;
                Some(self.loads.iter().any(|l| parse_semver(l).is_some_and(|(a, b, _)| a == ma && b == mi)))
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use crate::fixtures::snapfile::{self as state, bincode_state_prefix, build_bincode};

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn crc_is_crc64_redis_not_xz() {
        assert_eq!(crc64_redis(b"123456789"), 0xe9c6d914c4b8d9ca);
        assert_ne!(crc64_redis(b"123456789"), 0x995dc9bbdf1939fa, "that is CRC-64/XZ (crc64fast)");
        // Firecracker's own unit-test vectors (src/vmm/src/snapshot/crc.rs).
        assert_eq!(crc64_redis(&[1, 2, 3, 4, 5]), 0xFB0460DE06383654);
        assert_eq!(crc64_redis(&[123u8; 16]), 0x29D5357216326566);
        // The byte-wise table agrees with crc-fast on arbitrary data.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(data.iter().fold(0, |c, &b| crc_step(c, b)), crc64_redis(&data));
    }

    #[test]
    fn versionize_vectors() {
        // Test1 {0, 0, 1}, data version 1, x86_64 and aarch64.
        let x = unhex("0100648684191007 0100 0000000000000000 0000000000000000 01000000 0478d8d722b7337e");
        let i = analyze_bytes(&x);
        assert!(i.crc_ok, "{i:?}");
        assert_eq!((i.arch, i.encoding, i.data_version), (Some(Arch::X86_64), Some(Encoding::Versionize), Some(1)));
        assert_eq!(i.stored_crc, 9093813432869222404);
        let mut bad = x.clone();
        bad[20] = 123;
        let i = analyze_bytes(&bad);
        assert!(!i.crc_ok);
        assert_eq!(i.computed_crc, 0x103F8F528F5120B1, "the value Firecracker's own test asserts");
        let a = unhex("0100aaaa84191007 0100 0000000000000000 0000000000000000 01000000 a03eb6f91a766c77");
        let i = analyze_bytes(&a);
        assert!(i.crc_ok && i.arch == Some(Arch::Aarch64));
        let mut bad = a.clone();
        bad[20] = 123;
        assert_eq!(analyze_bytes(&bad).computed_crc, 0x19604e6aa13f6615);
        // v1.6-like, data version 10, mem 512.
        let v = unhex("01006486841910070a000002000000000000 3e75a06f460b5f07");
        let i = analyze_bytes(&v);
        assert!(i.crc_ok);
        assert_eq!((i.data_version, i.mem_size_mib), (Some(10), Some(512)));
        let v = unhex("0100aaaa841910070a000002000000000000 9c018915f98bfd78");
        assert!(analyze_bytes(&v).crc_ok);
    }

    #[test]
    fn bincode_vectors() {
        let cases = [
            ("00006486841910070500000000000000342e302e30 4489618dc63bd0dd", Arch::X86_64, "4.0.0", None),
            (
                "00006486841910070500000000000000342e302e30 0002000000000000 00 4201789a4aecd075",
                Arch::X86_64,
                "4.0.0",
                Some(512),
            ),
            (
                "00006486841910070500000000000000362e302e30 0002000000000000 00 306ba7a3080ec1c2",
                Arch::X86_64,
                "6.0.0",
                Some(512),
            ),
            (
                "00006486841910070500000000000000382e302e30 0002000000000000 00 d3c903e733cb5fba",
                Arch::X86_64,
                "8.0.0",
                Some(512),
            ),
            ("00006486841910070500000000000000362e302e30 78332cbad1f0d9b7", Arch::X86_64, "6.0.0", None),
            ("00006486841910070500000000000000382e302e30 a7865b66e7a7bd8a", Arch::X86_64, "8.0.0", None),
            (
                "0000aaaa841910070500000000000000342e302e30 0002000000000000 00 e64716b4722d8f7c",
                Arch::Aarch64,
                "4.0.0",
                Some(512),
            ),
            (
                "0000aaaa841910070500000000000000362e302e30 0002000000000000 00 942dc98d30cf9ecb",
                Arch::Aarch64,
                "6.0.0",
                Some(512),
            ),
            (
                "0000aaaa841910070500000000000000382e302e30 0002000000000000 00 778f6dc90b0a00b3",
                Arch::Aarch64,
                "8.0.0",
                Some(512),
            ),
            ("0000aaaa841910070500000000000000342e302e30 04ba02b141a2a3a5", Arch::Aarch64, "4.0.0", None),
            ("0000aaaa841910070500000000000000362e302e30 38004f865669aacf", Arch::Aarch64, "6.0.0", None),
            ("0000aaaa841910070500000000000000382e302e30 e7b5385a603ecef2", Arch::Aarch64, "8.0.0", None),
        ];
        for (hex, arch, ver, mem) in cases {
            let b = unhex(hex);
            let i = analyze_bytes(&b);
            assert!(i.crc_ok, "{hex}: {i:?}");
            assert_eq!(crc64_redis(&b), 0, "residue property");
            assert_eq!((i.arch, i.encoding, i.version.as_deref()), (Some(arch), Some(Encoding::Bincode), Some(ver)));
            assert_eq!(i.mem_size_mib, mem, "{hex}");
            let mut f = b.clone();
            f[3] ^= 0x40;
            assert!(!analyze_bytes(&f).crc_ok);
        }
        assert_eq!(
            analyze_bytes(&unhex("00006486841910070500000000000000342e302e30 0002000000000000 00 4201789a4aecd075"))
                .stored_crc,
            8489545102756675906
        );
    }

    #[test]
    fn realistic_v1_10_prefix_walk() {
        let b = unhex(
            "00006486841910070500000000000000342e302e30000200000000000000030000000700000000000000766d6c696e757800010d00000000000000636f6e736f6c653d74747953300000000001000000000000000000000000000000000000200000000000000000000000009320bf1d1c3cdc38",
        );
        let i = analyze_bytes(&b);
        assert!(i.crc_ok);
        assert_eq!(i.stored_crc, 4097215852456124563);
        assert_eq!(i.mem_size_mib, Some(512));
        assert_eq!(i.kernel_image_path.as_deref(), Some("vmlinux"));
        assert_eq!(i.huge_pages, Some(false));
        assert_eq!(i.regions, Some(vec![Region::new(0, 0x2000_0000)]));
    }

    #[test]
    fn built_prefixes_decode_for_every_layout() {
        for v in ["4.0.0", "5.0.0", "6.0.0", "8.0.0"] {
            let b = build_bincode(Arch::X86_64, v, &bincode_state_prefix(v, 1024, "vmlinux.bin"));
            let i = analyze_bytes(&b);
            assert!(i.crc_ok);
            assert_eq!(i.regions_total(), Some(1024 << 20), "{v}: {i:?}");
        }
        let b = build_bincode(Arch::X86_64, "8.0.0", &bincode_state_prefix("8.0.0", 512, "k"));
        assert_eq!(analyze_bytes(&b).layout, Some("v1.14"));
    }

    #[test]
    fn negative_vectors() {
        // All zeros: CRC "passes" but the magic does not.
        let i = analyze_bytes(&[0u8; 64]);
        assert!(i.crc_ok && i.arch.is_none() && i.header_error.is_some());
        // Valid + 4096 zero bytes: CRC still passes, padding found, true end reported.
        let good = unhex("00006486841910070500000000000000342e302e30 0002000000000000 00 4201789a4aecd075");
        let mut padded = good.clone();
        padded.extend(std::iter::repeat_n(0u8, 4096));
        let i = analyze_bytes(&padded);
        assert!(i.crc_ok && i.stored_crc == 0);
        assert_eq!(i.trailing_zero_bytes, 4096);
        assert_eq!(i.valid_prefix_len, Some(good.len() as u64));
        // Valid + non-zero junk: CRC fails, the scan finds the original end.
        let mut junk = good.clone();
        junk.extend_from_slice(b"garbage appended by a bad copy");
        let i = analyze_bytes(&junk);
        assert!(!i.crc_ok);
        assert_eq!(i.valid_prefix_len, Some(good.len() as u64));
        // Old-format magic (low 16 bits 1) with a new-format body is decoded as versionize.
        let mut old = good.clone();
        old[0] = 1;
        assert_eq!(analyze_bytes(&old).encoding, Some(Encoding::Versionize));
        // Unknown format version in the magic.
        let mut weird = good.clone();
        weird[0] = 7;
        assert!(analyze_bytes(&weird).header_error.is_some());
        // Too short.
        let i = analyze_bytes(&[1, 2, 3]);
        assert!(!i.crc_ok && i.header_error.is_some());
        // Truncated file: CRC fails.
        assert!(!analyze_bytes(&good[..good.len() - 3]).crc_ok);
    }

    #[test]
    fn bitcode_state_decodes_to_the_regions() {
        let b = state::snapfile(&state::V1_16_1, &state::Vm::new(4096));
        let i = analyze_bytes(&b);
        assert!(i.crc_ok && i.state_error.is_none(), "{i:?}");
        assert_eq!((i.encoding, i.version.as_deref()), (Some(Encoding::Bitcode), Some("10.0.0")));
        assert_eq!((i.mem_size_mib, i.huge_pages), (Some(4096), Some(false)));
        let r = i.regions.clone().unwrap();
        assert_eq!(r.iter().map(|x| (x.base_address, x.size)).collect::<Vec<_>>(), [(0, 3 << 30), (1 << 32, 1 << 30)]);
        assert!(r.iter().all(|x| !x.hotpluggable && x.slots == Some(1) && x.plugged_slots == Some(1)));
        // A cut inside the prefix is a state error, not a panic or a wrong value.
        let end = i.prefix_end.unwrap() as usize;
        for cut in 20..end {
            let mut t = b[..cut].to_vec();
            let crc = crc64_redis(&t);
            t.extend_from_slice(&crc.to_le_bytes());
            let j = analyze_bytes(&t);
            assert!(j.crc_ok && (j.state_error.is_some() || j.header_error.is_some()), "cut at {cut}: {j:?}");
        }
    }

    #[test]
    fn firecracker_versions() {
        let v = FirecrackerVersion::parse("v1.14.1_431f1fc").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.commit.as_deref()), (1, 14, 1, Some("431f1fc")));
        let s = v.snapshot_support();
        assert_eq!(s.writes, Some("8.0.0"));
        let snap = |ver: &str| analyze_bytes(&build_bincode(Arch::X86_64, ver, &[]));
        assert_eq!(s.can_load(&snap("4.0.0")), Some(true));
        assert_eq!(s.can_load(&snap("6.0.0")), Some(true));
        assert_eq!(s.can_load(&snap("5.0.0")), Some(false));
        let up = FirecrackerVersion::parse("v1.14.0").unwrap().snapshot_support();
        assert_eq!(up.can_load(&snap("6.0.0")), Some(false));
        let s110 = FirecrackerVersion::parse("v1.10.1_1fcdaec").unwrap().snapshot_support();
        assert_eq!(s110.writes, Some("4.0.0"));
        assert_eq!(s110.can_load(&snap("4.0.0")), Some(true));
        assert_eq!(s110.can_load(&snap("4.0.7")), Some(true), "patch ignored");
        assert_eq!(s110.can_load(&snap("6.0.0")), Some(false));
        assert_eq!(FirecrackerVersion::parse("v1.10.0").unwrap().snapshot_support().writes, Some("3.0.0"));
        assert_eq!(FirecrackerVersion::parse("v1.12.1_210cbac").unwrap().snapshot_support().writes, Some("6.0.0"));
        assert!(FirecrackerVersion::parse("latest").is_none());
        let v116 = FirecrackerVersion::parse("v1.16.1").unwrap().snapshot_support();
        assert_eq!(v116.can_load(&analyze_bytes(&state::snapfile(&state::V1_16_1, &state::Vm::new(64)))), Some(true));
        assert_eq!(v116.can_load(&snap("10.0.0")), Some(false), "a bincode file claiming 10.0.0");
        assert!(!FirecrackerVersion::parse("v2.0.0").unwrap().known());
    }

    proptest::proptest! {
        /// Firecracker-written states (bitcode and bincode), mutated: any bytes changed, cut or
        /// appended, analysis returns and keeps every value in range.
        #[test]
        fn mutated_states_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((0usize..2400, proptest::prelude::any::<u8>()), 0..12),
            cut in proptest::option::of(0usize..2400),
            restamp in proptest::prelude::any::<bool>(),
        ) {
            let mut b = state::snapfile(state::RELEASES[which], &state::Vm::new(64));
            for (at, v) in edits {
                let n = b.len();
                b[at % n] = v;
            }
            if let Some(c) = cut {
                b.truncate(c.min(b.len()));
            }
            if restamp && b.len() > 8 {
                let n = b.len() - 8;
                let crc = crc64_redis(&b[..n]);
                b[n..].copy_from_slice(&crc.to_le_bytes());
            }
            let i = analyze_bytes(&b);
            proptest::prop_assert_eq!(i.len, b.len() as u64);
            if let Some(r) = &i.regions {
                proptest::prop_assert!(r.len() <= 256);
            }
            proptest::prop_assert!(i.prefix_end.is_none_or(|e| e <= b.len() as u64));
        }

        #[test]
        fn analysis_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), magic in 0usize..4) {
            let mut b = bytes;
            let prefix: &[u8] = match magic {
                0 => &[0x00, 0x00, 0x64, 0x86, 0x84, 0x19, 0x10, 0x07],
                1 => &[0x01, 0x00, 0x64, 0x86, 0x84, 0x19, 0x10, 0x07],
                2 => &[0x00, 0x00, 0x00, 0x64, 0x86, 0x84, 0x19, 0x10, 0x07],
                _ => &[],
            };
            let mut v = prefix.to_vec();
            v.append(&mut b);
            let i = analyze_bytes(&v);
            proptest::prop_assert_eq!(i.len, v.len() as u64);
        }
    }
}
