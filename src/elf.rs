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
//! ```
//! Parsing works on a prefix of the file (callers pass the first [`HEAD_BYTES`]); program
//! headers and the interpreter path sit at the start of every real binary.

use serde::Serialize;

/// How much of a file callers should read for [`parse`].
pub const HEAD_BYTES: usize = 64 * 1024;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

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
}

impl ElfInfo {
    pub fn machine_name(&self) -> &'static str {
        machine_name(self.machine)
    }

    pub fn is_executable_type(&self) -> bool {
        matches!(self.elf_type, 2 | 3)
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
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = head.get(o..o + 2)?.try_into().ok()?;
        Some(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = head.get(o..o + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(o..o + 8)?.try_into().ok()?;
        Some(if le { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    };
    let elf_type = u16_at(16).ok_or(ElfError::Truncated)?;
    let machine = u16_at(18).ok_or(ElfError::Truncated)?;
    let (phoff, phentsize, phnum) = match class {
        2 => (
            u64_at(32).ok_or(ElfError::Truncated)?,
            u16_at(54).ok_or(ElfError::Truncated)?,
            u16_at(56).ok_or(ElfError::Truncated)?,
        ),
        1 => (
            u64::from(u32_at(28).ok_or(ElfError::Truncated)?),
            u16_at(42).ok_or(ElfError::Truncated)?,
            u16_at(44).ok_or(ElfError::Truncated)?,
        ),
        c => return Err(ElfError::BadClass(c)),
    };
    let mut interpreter = None;
    let mut has_dynamic_section = false;
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(ElfError::PhdrsOutOfRange(head.len()))?;
        let p_type = u32_at(at).ok_or(ElfError::PhdrsOutOfRange(head.len()))?;
        let (off, size) = if class == 2 {
            (u64_at(at + 8), u64_at(at + 32))
        } else {
            (u32_at(at + 4).map(u64::from), u32_at(at + 16).map(u64::from))
        };
        let (off, size) =
            (off.ok_or(ElfError::PhdrsOutOfRange(head.len()))?, size.ok_or(ElfError::PhdrsOutOfRange(head.len()))?);
        match p_type {
            PT_INTERP => {
                let s = usize::try_from(off).ok().zip(usize::try_from(size).ok());
                let bytes =
                    s.and_then(|(o, n)| head.get(o..o.checked_add(n)?)).ok_or(ElfError::PhdrsOutOfRange(head.len()))?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                interpreter = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
            PT_DYNAMIC => has_dynamic_section = true,
            _ => {}
        }
    }
    Ok(ElfInfo {
        class,
        little_endian: le,
        elf_type,
        machine,
        is_static: interpreter.is_none(),
        interpreter,
        has_dynamic_section,
    })
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

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut b = b"\x7fELF".to_vec();
            b.extend(bytes);
            let _ = parse(&b);
        }
    }
}
