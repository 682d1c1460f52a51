//! Just enough ELF to judge a binary before it becomes PID 1: class, byte order, type,
//! machine, and whether it needs a program interpreter (`PT_INTERP`) or is static.
//!
//! ```text
//! e_ident[0..4] = 7f 'E' 'L' 'F'   [4] class 1=32 2=64   [5] data 1=LE 2=BE
//! e_type @16 u16   e_machine @18 u16
//! ELF64: e_phoff @32 u64, e_phentsize @54 u16, e_phnum @56 u16
//! ELF32: e_phoff @28 u32, e_phentsize @42 u16, e_phnum @44 u16
//! program header: p_type u32 @0; ELF64 p_offset @8 u64, p_filesz @32 u64;
//!                                  ELF32 p_offset @4 u32, p_filesz @16 u32
//! ELF64: e_shoff @40 u64, e_shentsize @58 u16, e_shnum @60 u16
//! ELF32: e_shoff @32 u32, e_shentsize @46 u16, e_shnum @48 u16
//! note: namesz u32, descsz u32, type u32, name (4-byte aligned), desc (4-byte aligned)
//! ```
//!
//! A truncated copy is told from the headers alone: every loadable segment (`PT_LOAD`) and the
//! section header table must lie inside the file ([`ElfInfo::truncated`]); the kernel maps a
//! segment past the end of the file and the program dies with SIGBUS or SIGSEGV when it runs.
//! Parsing works on a prefix of the file (callers pass the first [`HEAD_BYTES`]); program
//! headers and the interpreter path sit at the start of every real binary.

use serde::Serialize;

/// How much of a file callers should read for [`parse`].
pub const HEAD_BYTES: usize = 64 * 1024;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElfInfo {
    pub class: u8,
    pub little_endian: bool,
    /// `e_type`: 2 = executable, 3 = shared object / PIE.
    pub elf_type: u16,
    pub machine: u16,
    /// The program interpreter (dynamic loader), when the binary is dynamically linked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// True when there is no `PT_INTERP`: static, or static-pie.
    pub is_static: bool,
    pub has_dynamic_section: bool,
    /// Where the last loadable segment's bytes end in the file: max(`p_offset + p_filesz`) over
    /// `PT_LOAD` (saturating: an overflowing segment ends at `u64::MAX`).
    pub load_end: u64,
    /// Where the section header table ends (`e_shoff + e_shnum * e_shentsize`), when the
    /// binary has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sections_end: Option<u64>,
    /// The binary carries a Go build-ID note (a `PT_NOTE` named "Go"): it was built by Go, so it
    /// has Go build information too.
    pub go: bool,
}

impl ElfInfo {
    pub fn machine_name(&self) -> &'static str {
        machine_name(self.machine)
    }

    pub fn is_executable_type(&self) -> bool {
        matches!(self.elf_type, 2 | 3)
    }

    /// Why a file of `len` bytes cannot be this binary whole (it was cut short), or `None`.
    pub fn truncated(&self, len: u64) -> Option<String> {
        if self.load_end > len {
            return Some(format!(
                "its loadable segments end at byte {} but the file has {len} bytes: it was cut short (it crashes when run)",
                self.load_end
            ));
        }
        match self.sections_end {
            Some(end) if end > len => Some(format!(
                "its section header table ends at byte {end} but the file has {len} bytes: it was cut short"
            )),
            _ => None,
        }
    }
}

/// Why bytes are not a usable ELF binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("empty file")]
    Empty,
    #[error("not an ELF file (starts with {0})")]
    NotElf(String),
    #[error("ELF header is truncated")]
    Truncated,
    #[error("unsupported ELF class {0}")]
    BadClass(u8),
    #[error("unsupported ELF byte order {0}")]
    BadEndian(u8),
    #[error("program headers lie outside the first {0} bytes")]
    PhdrsOutOfRange(usize),
}

/// Name of an ELF machine number.
/// Fixed-size fields of an ELF structure read in the file's byte order; `None` past the end.
#[derive(Clone, Copy)]
struct Fields<'a> {
    bytes: &'a [u8],
    le: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(self, o: usize) -> Option<[u8; N]> {
        self.bytes.get(o..o.checked_add(N)?)?.try_into().ok()
    }
    fn u16(self, o: usize) -> Option<u16> {
        self.array(o).map(|b| if self.le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }
    fn u32(self, o: usize) -> Option<u32> {
        self.array(o).map(|b| if self.le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
    fn u64(self, o: usize) -> Option<u64> {
        self.array(o).map(|b| if self.le { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    }
}

pub fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "i386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        258 => "loongarch",
        _ => "unknown",
    }
}

/// Describe the first bytes of a non-ELF file for error messages.
pub fn describe_magic(head: &[u8]) -> String {
    if head.starts_with(b"#!") {
        let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
        return format!("a script: {}", String::from_utf8_lossy(&line[..line.len().min(80)]));
    }
    let n = head.len().min(4);
    let hex: Vec<String> = head[..n].iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

/// Parse an ELF header and its program headers from the first bytes of a file.
pub fn parse(head: &[u8]) -> Result<ElfInfo, ElfError> {
    if head.is_empty() {
        return Err(ElfError::Empty);
    }
    if !head.starts_with(b"\x7fELF") {
        return Err(ElfError::NotElf(describe_magic(head)));
    }
    if head.len() < 52 {
        return Err(ElfError::Truncated);
    }
    let class = head[4];
    let data = head[5];
    let le = match data {
        1 => true,
        2 => false,
        d => return Err(ElfError::BadEndian(d)),
    };
    let f = Fields { bytes: head, le };
    let (u16_at, u32_at, u64_at) = (|o| f.u16(o), |o| f.u32(o), |o| f.u64(o));
    let elf_type = u16_at(16).ok_or(ElfError::Truncated)?;
    let machine = u16_at(18).ok_or(ElfError::Truncated)?;
    let (phoff, phentsize, phnum, shoff, shentsize, shnum) = match class {
        2 => (
            u64_at(32).ok_or(ElfError::Truncated)?,
            u16_at(54).ok_or(ElfError::Truncated)?,
            u16_at(56).ok_or(ElfError::Truncated)?,
            u64_at(40).ok_or(ElfError::Truncated)?,
            u16_at(58).ok_or(ElfError::Truncated)?,
            u16_at(60).ok_or(ElfError::Truncated)?,
        ),
        1 => (
            u64::from(u32_at(28).ok_or(ElfError::Truncated)?),
            u16_at(42).ok_or(ElfError::Truncated)?,
            u16_at(44).ok_or(ElfError::Truncated)?,
            u64::from(u32_at(32).ok_or(ElfError::Truncated)?),
            u16_at(46).ok_or(ElfError::Truncated)?,
            u16_at(48).ok_or(ElfError::Truncated)?,
        ),
        c => return Err(ElfError::BadClass(c)),
    };
    let out_of_range = || ElfError::PhdrsOutOfRange(head.len());
    let mut interpreter = None;
    let mut has_dynamic_section = false;
    let mut load_end = 0u64;
    let mut go = false;
    for i in 0..u64::from(phnum) {
        // At most 65535 · 65535: no overflow in the product.
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(out_of_range)?;
        let field = |rel: usize| at.checked_add(rel).ok_or_else(out_of_range);
        let p_type = u32_at(at).ok_or_else(out_of_range)?;
        let (off, size) = if class == 2 {
            (u64_at(field(8)?), u64_at(field(32)?))
        } else {
            (u32_at(field(4)?).map(u64::from), u32_at(field(16)?).map(u64::from))
        };
        let (off, size) = (off.ok_or_else(out_of_range)?, size.ok_or_else(out_of_range)?);
        match p_type {
            PT_LOAD => load_end = load_end.max(off.saturating_add(size)),
            PT_INTERP => {
                let s = usize::try_from(off).ok().zip(usize::try_from(size).ok());
                let bytes = s.and_then(|(o, n)| head.get(o..o.checked_add(n)?)).ok_or_else(out_of_range)?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                interpreter = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
            PT_DYNAMIC => has_dynamic_section = true,
            PT_NOTE => {
                let s = usize::try_from(off).ok().zip(usize::try_from(size).ok());
                if let Some(notes) = s.and_then(|(o, n)| head.get(o..o.checked_add(n)?)) {
                    go |= has_go_note(notes, le);
                }
            }
            _ => {}
        }
    }
    // e_shnum · e_shentsize is at most 65535 · 65535: no overflow; the sum saturates.
    let sections_end =
        (shoff != 0 && shnum != 0).then(|| shoff.saturating_add(u64::from(shnum) * u64::from(shentsize)));
    Ok(ElfInfo {
        class,
        little_endian: le,
        elf_type,
        machine,
        is_static: interpreter.is_none(),
        interpreter,
        has_dynamic_section,
        load_end,
        sections_end,
        go,
    })
}

/// Does a note segment hold a note named "Go" (Go's build-ID note, `.note.go.buildid`)?
fn has_go_note(mut notes: &[u8], le: bool) -> bool {
    let u32_of = |b: &[u8]| -> Option<u32> {
        let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
    };
    // Each note is at least 12 bytes, so the loop ends within the segment.
    while notes.len() >= 12 {
        let (Some(namesz), Some(descsz)) = (u32_of(notes), notes.get(4..).and_then(u32_of)) else { return false };
        let pad = |n: u32| usize::try_from(n).ok().and_then(|n| n.checked_add(3)).map(|n| n & !3);
        let (Some(name_len), Some(desc_len)) = (pad(namesz), pad(descsz)) else { return false };
        let Some(name) = notes.get(12..).and_then(|r| r.get(..usize::try_from(namesz).ok()?)) else { return false };
        if name == b"Go\0" {
            return true;
        }
        let Some(next) = 12usize.checked_add(name_len).and_then(|n| n.checked_add(desc_len)) else { return false };
        let Some(rest) = notes.get(next..) else { return false };
        notes = rest;
    }
    false
}

/// `sh_type` of a section that occupies no bytes in the file (`.bss`).
pub const SHT_NOBITS: u32 = 8;
/// `sh_flags` bit: the section holds machine code.
pub const SHF_EXECINSTR: u64 = 0x4;
/// At most this many bytes of section header table are read (65535 headers of 64 bytes).
pub const MAX_SECTION_TABLE: u64 = 65535 * 64;
/// At most this many bytes of section names (`.shstrtab`) are read.
pub const MAX_SECTION_NAMES: u64 = 1 << 20;

/// One section header, as far as callers need it.
///
/// ```text
/// ELF64 (64 bytes): sh_name @0 u32, sh_type @4 u32, sh_flags @8 u64, sh_offset @24 u64, sh_size @32 u64
/// ELF32 (40 bytes): sh_name @0 u32, sh_type @4 u32, sh_flags @8 u32, sh_offset @16 u32, sh_size @20 u32
/// e_shstrndx: ELF64 @62 u16, ELF32 @50 u16 (the section holding the names)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub offset: u64,
    pub size: u64,
}

/// Where a file's section header table lies, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionTable {
    class: u8,
    little_endian: bool,
    pub offset: u64,
    /// `e_shnum · e_shentsize` bytes.
    pub len: u64,
    entsize: u16,
    names_index: u16,
}

/// The section header table of the ELF file whose first bytes are `head`: `None` when the file
/// has none, or its header sizes are not the standard ones (a foreign or damaged file).
pub fn section_table(head: &[u8]) -> Option<SectionTable> {
    if !head.starts_with(b"\x7fELF") || head.len() < 64 {
        return None;
    }
    let (class, le) = (head[4], head[5] == 1);
    if head[5] != 1 && head[5] != 2 {
        return None;
    }
    let f = Fields { bytes: head, le };
    let (u16_at, u32_at, u64_at) = (|o| f.u16(o), |o| f.u32(o), |o| f.u64(o));
    let (offset, entsize, num, names_index, want) = match class {
        2 => (u64_at(40)?, u16_at(58)?, u16_at(60)?, u16_at(62)?, 64),
        1 => (u64::from(u32_at(32)?), u16_at(46)?, u16_at(48)?, u16_at(50)?, 40),
        _ => return None,
    };
    // e_shnum 0 with e_shoff set means more than 65279 sections (the count is in section 0):
    // no binary tmpl reads has that many, so it is treated as having none.
    if offset == 0 || num == 0 || entsize != want || names_index >= num {
        return None;
    }
    let len = u64::from(num) * u64::from(entsize);
    Some(SectionTable { class, little_endian: le, offset, len, entsize, names_index })
}

impl SectionTable {
    /// The headers in `table` (the `len` bytes at `offset`), named from the names section
    /// `read_names(offset, len)` returns (the caller caps and reads it). `None` when a header
    /// or the names lie outside what was read.
    pub fn sections(&self, table: &[u8], read_names: impl FnOnce(u64, u64) -> Option<Vec<u8>>) -> Option<Vec<Section>> {
        let le = self.little_endian;
        let u32_of = |b: &[u8], o: usize| -> Option<u32> {
            let a: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
            Some(if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
        };
        let u64_of = |b: &[u8], o: usize| -> Option<u64> {
            let a: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
            Some(if le { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) })
        };
        let mut raw = Vec::new();
        for h in table.chunks_exact(usize::from(self.entsize)) {
            let name = u32_of(h, 0)?;
            let sh_type = u32_of(h, 4)?;
            let (flags, offset, size) = if self.class == 2 {
                (u64_of(h, 8)?, u64_of(h, 24)?, u64_of(h, 32)?)
            } else {
                (u64::from(u32_of(h, 8)?), u64::from(u32_of(h, 16)?), u64::from(u32_of(h, 20)?))
            };
            raw.push((name, Section { name: String::new(), sh_type, flags, offset, size }));
        }
        let names_at = raw.get(usize::from(self.names_index))?;
        let names = read_names(names_at.1.offset, names_at.1.size)?;
        Some(
            raw.into_iter()
                .map(|(n, mut s)| {
                    let from = usize::try_from(n).ok().and_then(|n| names.get(n..)).unwrap_or_default();
                    let end = from.iter().position(|&b| b == 0).unwrap_or(from.len());
                    s.name = String::from_utf8_lossy(&from[..end]).into_owned();
                    s
                })
                .collect(),
        )
    }
}

/// The libraries a dynamically linked binary names (`DT_NEEDED`, in order), read from its whole
/// `file` through the section headers: the `.dynamic` section's entries, named in `.dynstr`.
/// `None` when the file has no such sections or they lie outside it; empty for a static binary.
///
/// ```text
/// .dynamic entry: ELF64 d_tag i64 @0, d_val u64 @8 (16 bytes); ELF32 d_tag @0, d_val @4 (8 bytes)
/// d_tag 0 = DT_NULL (end), 1 = DT_NEEDED (d_val: offset of the name in .dynstr)
/// ```
pub fn needed(file: &[u8]) -> Option<Vec<String>> {
    let table = section_table(file)?;
    let at = |off: u64, len: u64| -> Option<&[u8]> {
        let o = usize::try_from(off).ok()?;
        file.get(o..o.checked_add(usize::try_from(len).ok()?)?)
    };
    let sections = table.sections(at(table.offset, table.len)?, |o, n| at(o, n).map(<[u8]>::to_vec))?;
    let Some(dynamic) = sections.iter().find(|s| s.name == ".dynamic") else { return Some(Vec::new()) };
    let dynstr = sections.iter().find(|s| s.name == ".dynstr")?;
    let (entries, strings) = (at(dynamic.offset, dynamic.size)?, at(dynstr.offset, dynstr.size)?);
    let f = Fields { bytes: entries, le: table.little_endian };
    let width = if table.class == 2 { 16 } else { 8 };
    let mut names = Vec::new();
    for i in (0..entries.len() / width).map(|i| i * width) {
        let (tag, val) = if table.class == 2 {
            (f.u64(i)?, f.u64(i + 8)?)
        } else {
            (u64::from(f.u32(i)?), u64::from(f.u32(i + 4)?))
        };
        match tag {
            0 => break,
            1 => {
                let from = strings.get(usize::try_from(val).ok()?..)?;
                let end = from.iter().position(|&b| b == 0)?;
                names.push(String::from_utf8_lossy(&from[..end]).into_owned());
            }
            _ => {}
        }
    }
    Some(names)
}

/// Start of a Go binary's build information (`.go.buildinfo`), Go's `debug/buildinfo` format.
pub const GO_BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// What a Go binary says about how it was built, without running it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GoBuildInfo {
    /// Toolchain, e.g. `go1.23.7`.
    pub go_version: String,
    /// Main package path, e.g. `github.com/e2b-dev/infra/packages/envd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `vcs.revision` (the source commit) when the build stamped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcs_revision: Option<String>,
    /// `vcs.time` (commit time, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcs_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcs_modified: Option<bool>,
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Parse build info from bytes starting at [`GO_BUILDINFO_MAGIC`]. Only the inline format of
/// Go 1.18+ (flag bit 2: version and module strings follow at offset 32 as varint-prefixed
/// strings) is read; older binaries store pointers and give `None`.
pub fn go_buildinfo(b: &[u8]) -> Option<GoBuildInfo> {
    if !b.starts_with(GO_BUILDINFO_MAGIC) || b.len() < 33 || b[15] & 0x2 == 0 {
        return None;
    }
    let mut pos = 32usize;
    let string = |pos: &mut usize| -> Option<String> {
        let (len, n) = uvarint(b.get(*pos..)?)?;
        let start = pos.checked_add(n)?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let s = String::from_utf8_lossy(b.get(start..end)?).into_owned();
        *pos = end;
        Some(s)
    };
    let go_version = string(&mut pos)?;
    let mut module = string(&mut pos).unwrap_or_default();
    // The module string is wrapped in 16-byte sentinels.
    if module.len() >= 33 && module.as_bytes()[module.len() - 17] == b'\n' {
        module = String::from_utf8_lossy(&module.as_bytes()[16..module.len() - 16]).into_owned();
    }
    let mut info = GoBuildInfo { go_version, ..Default::default() };
    for line in module.lines() {
        let mut f = line.split('\t');
        match (f.next(), f.next()) {
            (Some("path"), Some(p)) => info.path = Some(p.to_string()),
            (Some("build"), Some(kv)) => match kv.split_once('=') {
                Some(("vcs.revision", v)) => info.vcs_revision = Some(v.to_string()),
                Some(("vcs.time", v)) => info.vcs_time = Some(v.to_string()),
                Some(("vcs.modified", v)) => info.vcs_modified = Some(v == "true"),
                _ => {}
            },
            _ => {}
        }
    }
    Some(info)
}

/// Go build info bytes as the Go linker writes them (inline format), for tests.
pub fn synthetic_go_buildinfo(go_version: &str, module_lines: &str) -> Vec<u8> {
    let mut b = GO_BUILDINFO_MAGIC.to_vec();
    b.push(8);
    b.push(2);
    b.resize(32, 0);
    let mut put = |s: &[u8]| {
        let mut n = s.len() as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                b.push(byte);
                break;
            }
            b.push(byte | 0x80);
        }
        b.extend_from_slice(s);
    };
    put(go_version.as_bytes());
    let mut m = vec![0x30u8; 16];
    m.extend_from_slice(module_lines.as_bytes());
    m.extend_from_slice(&[0x31u8; 16]);
    put(&m);
    b
}

/// A minimal ELF64 little-endian executable image (header + one PT_LOAD, optional PT_INTERP)
/// for tests of the parser and of callers. Not runnable.
pub fn synthetic(machine: u16, interpreter: Option<&str>) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    let nph: u16 = if interpreter.is_some() { 2 } else { 1 };
    b[56..58].copy_from_slice(&nph.to_le_bytes());
    let interp_off = 64 + 56 * nph as u64;
    let mut ph = |p_type: u32, off: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[..4].copy_from_slice(&p_type.to_le_bytes());
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&p);
    };
    if let Some(i) = interpreter {
        ph(PT_INTERP, interp_off, i.len() as u64 + 1);
    }
    ph(1, 0, 0);
    if let Some(i) = interpreter {
        b.extend_from_slice(i.as_bytes());
        b.push(0);
    }
    b
}

/// [`synthetic`] with a second program header, a `PT_NOTE` holding Go's build-ID note (name
/// "Go"), as the Go linker writes it: for tests of the Go checks.
pub fn synthetic_go(machine: u16) -> Vec<u8> {
    let mut b = synthetic(machine, None);
    b[56..58].copy_from_slice(&2u16.to_le_bytes());
    let note_off: u64 = 64 + 2 * 56;
    let mut ph = vec![0u8; 56];
    ph[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
    ph[8..16].copy_from_slice(&note_off.to_le_bytes());
    ph[32..40].copy_from_slice(&20u64.to_le_bytes());
    b.truncate(64 + 56);
    b.extend_from_slice(&ph);
    for v in [3u32, 4, 4] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"Go\0\0abcd");
    b
}

/// A little-endian ELF64 executable with a real section table: the ELF header, one `PT_LOAD`
/// covering the file, each `(name, sh_type, sh_flags, bytes)` section in order (16-byte
/// aligned), `.shstrtab`, then the section header table (index 0 is the null section), as
/// linkers lay them out. For tests and benchmarks of section-guided reads. Not runnable.
pub fn synthetic_sectioned(machine: u16, sections: &[(&str, u32, u64, &[u8])]) -> Vec<u8> {
    let mut b = synthetic(machine, None);
    let mut names = vec![0u8];
    let mut headers: Vec<(u32, u32, u64, u64, u64)> = vec![(0, 0, 0, 0, 0)];
    for (name, ty, flags, bytes) in sections {
        b.resize(b.len().next_multiple_of(16), 0);
        headers.push((
            u32::try_from(names.len()).expect("names of test sections fit"),
            *ty,
            *flags,
            b.len() as u64,
            bytes.len() as u64,
        ));
        names.extend_from_slice(name.as_bytes());
        names.push(0);
        if *ty != SHT_NOBITS {
            b.extend_from_slice(bytes);
        }
    }
    let strtab_name = u32::try_from(names.len()).expect("names of test sections fit");
    names.extend_from_slice(b".shstrtab\0");
    headers.push((strtab_name, 3, 0, b.len() as u64, names.len() as u64));
    b.extend_from_slice(&names);
    b.resize(b.len().next_multiple_of(8), 0);
    let shoff = b.len() as u64;
    for (name, ty, flags, off, size) in &headers {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&flags.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&h);
    }
    b[40..48].copy_from_slice(&shoff.to_le_bytes());
    b[58..60].copy_from_slice(&64u16.to_le_bytes());
    let count = u16::try_from(headers.len()).expect("fewer than 65535 test sections");
    b[60..62].copy_from_slice(&count.to_le_bytes());
    b[62..64].copy_from_slice(&(count - 1).to_le_bytes());
    // The one PT_LOAD (at byte 64) covers everything before the section header table.
    b[64 + 32..64 + 40].copy_from_slice(&shoff.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic() {
        let s = parse(&synthetic(62, None)).unwrap();
        assert_eq!((s.machine_name(), s.is_static, s.class), ("x86_64", true, 2));
        let d = parse(&synthetic(183, Some("/lib/ld-linux-aarch64.so.1"))).unwrap();
        assert_eq!(d.machine_name(), "aarch64");
        assert_eq!(d.interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        assert!(!d.is_static);
    }

    #[test]
    fn the_running_test_binary_parses() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let info = parse(&bytes[..HEAD_BYTES.min(bytes.len())]).unwrap();
        assert_eq!(info.machine_name(), std::env::consts::ARCH);
    }

    #[test]
    fn needed_libraries_are_read_from_the_dynamic_section() {
        // The test binary itself links glibc dynamically (target_env gnu).
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let libs = needed(&bytes).unwrap();
        if cfg!(target_env = "gnu") {
            assert!(libs.iter().any(|l| l == "libc.so.6"), "{libs:?}");
        }
        assert!(libs.iter().all(|l| l.contains(".so")), "{libs:?}");
        // Cut inside the section header table: not read.
        let table = section_table(&bytes).unwrap();
        assert_eq!(needed(&bytes[..usize::try_from(table.offset + 1).unwrap()]), None);
        // No section headers at all.
        assert_eq!(needed(&synthetic(62, None)), None);
    }

    #[test]
    fn a_cut_binary_is_told_from_its_headers() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let info = parse(&bytes[..HEAD_BYTES.min(bytes.len())]).unwrap();
        let len = bytes.len() as u64;
        assert!(info.load_end > 0 && info.load_end <= len);
        assert_eq!(info.truncated(len), None, "the whole file is whole");
        let cut = info.load_end - 1;
        assert!(info.truncated(cut).unwrap().contains("cut short"), "{:?}", info.truncated(cut));
        // Only the section headers lie past the end.
        if let Some(end) = info.sections_end.filter(|&e| e > info.load_end) {
            assert!(info.truncated(end - 1).unwrap().contains("section header table"));
        }
        // A segment whose offset + size overflows ends at u64::MAX.
        let mut b = synthetic(62, None);
        let ph = 64;
        b[ph + 8..ph + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes());
        let i = parse(&b).unwrap();
        assert_eq!(i.load_end, u64::MAX);
        assert!(i.truncated(1 << 40).is_some());
    }

    #[test]
    fn go_note_marks_a_go_binary() {
        assert!(!parse(&synthetic(62, None)).unwrap().go);
        let mut b = synthetic_go(62);
        assert!(parse(&b).unwrap().go);
        // A note whose name size runs past the segment is not read past it.
        let n = b.len();
        b[n - 20..n - 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!parse(&b).unwrap().go);
    }

    #[test]
    fn rejects_non_elf() {
        assert_eq!(parse(b""), Err(ElfError::Empty));
        assert!(matches!(parse(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf(m)) if m.contains("script")));
        assert!(matches!(parse(b"hello world, this is text"), Err(ElfError::NotElf(_))));
        assert_eq!(parse(b"\x7fELF\x02\x01"), Err(ElfError::Truncated));
        let mut b = synthetic(62, None);
        b[4] = 9;
        assert_eq!(parse(&b), Err(ElfError::BadClass(9)));
        let mut b = synthetic(62, Some("/lib64/ld-linux-x86-64.so.2"));
        b.truncate(130);
        assert!(matches!(parse(&b), Err(ElfError::PhdrsOutOfRange(_))));
    }

    #[test]
    fn go_buildinfo_inline_format() {
        let mods = "path\tgithub.com/e2b-dev/infra/packages/envd\nmod\tgithub.com/e2b-dev/infra/packages/envd\t(devel)\t\n\
                    build\tvcs.revision=0123abcd\nbuild\tvcs.time=2026-05-20T10:00:00Z\nbuild\tvcs.modified=false\n";
        let b = synthetic_go_buildinfo("go1.23.7", mods);
        let info = go_buildinfo(&b).unwrap();
        assert_eq!(info.go_version, "go1.23.7");
        assert_eq!(info.path.as_deref(), Some("github.com/e2b-dev/infra/packages/envd"));
        assert_eq!(info.vcs_revision.as_deref(), Some("0123abcd"));
        assert_eq!(info.vcs_time.as_deref(), Some("2026-05-20T10:00:00Z"));
        assert_eq!(info.vcs_modified, Some(false));
        let mut old = b.clone();
        old[15] = 0;
        assert_eq!(go_buildinfo(&old), None, "pre-1.18 pointer format is not read");
        assert_eq!(go_buildinfo(&b[..40]), None, "truncated");
    }

    proptest::proptest! {
        #[test]
        fn buildinfo_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut b = GO_BUILDINFO_MAGIC.to_vec();
            b.extend(bytes);
            let _ = go_buildinfo(&b);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut b = b"\x7fELF".to_vec();
            b.extend(bytes);
            let _ = parse(&b);
        }
    }
}
