//! Guest kernels: which file to boot, what format it is, and which root-disk drivers it has built
//! in (there is no initramfs, so the root disk's driver and ext4 must be `=y`).
//!
//! Resolution order (first that QEMU can boot wins; every candidate is recorded in `tried` so an
//! error can say what was looked at): `--kernel`; the build's `kernel_version` under
//! `HOST_KERNELS_DIR` (`<ver>/vmlinux.bin`, `<ver>/<arch>/vmlinux.bin`, e2b-formats.md §4); the
//! kernels under `/boot` (the running kernel's first, then newest first).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Default `HOST_KERNELS_DIR` of an orchestrator node.
pub const DEFAULT_KERNELS_DIR: &str = "/fc-kernels";
/// Architecture directory names E2B nodes use under the kernels/versions dirs.
pub const ARCH_DIRS: &[&str] = &["x86_64", "amd64"];

/// What kind of kernel image a file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KernelFormat {
    /// x86 boot protocol image (`vmlinuz`): QEMU boots it directly.
    BzImage {
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Uncompressed ELF `vmlinux` with a PVH entry note: QEMU boots it (Firecracker kernels).
    ElfPvh,
    /// Uncompressed ELF without a PVH note: Firecracker boots it, QEMU cannot.
    ElfNoPvh,
    /// Anything else.
    Unknown { what: String },
}

impl KernelFormat {
    pub fn qemu_can_boot(&self) -> bool {
        matches!(self, KernelFormat::BzImage { .. } | KernelFormat::ElfPvh)
    }

    pub fn describe(&self) -> String {
        match self {
            KernelFormat::BzImage { version: Some(v) } => format!("bzImage {v}"),
            KernelFormat::BzImage { version: None } => "bzImage".into(),
            KernelFormat::ElfPvh => "ELF vmlinux with PVH entry".into(),
            KernelFormat::ElfNoPvh => "ELF vmlinux without PVH entry (QEMU cannot boot it)".into(),
            KernelFormat::Unknown { what } => format!("not a kernel image ({what})"),
        }
    }
}

fn read_at(f: &File, off: u64, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, off).ok()?;
    Some(b)
}

fn u16le(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u32le(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// Xen ELF note type of the 32-bit PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`), which QEMU's
/// `-kernel` uses to boot an uncompressed vmlinux.
const XEN_ELFNOTE_PHYS32_ENTRY: u64 = 18;

/// Inspect a kernel file (reads a few KiB: headers and note segments).
pub fn inspect(path: &Path) -> std::io::Result<KernelFormat> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let Some(head) = read_at(&f, 0, 1024.min(crate::num::usize_from(len))) else {
        return Ok(KernelFormat::Unknown { what: format!("{len} bytes") });
    };
    if head.len() >= 0x210 && &head[0x202..0x206] == b"HdrS" && head[0x1FE] == 0x55 && head[0x1FF] == 0xAA {
        // The setup header's kernel_version field points at a NUL-terminated string (offset + 0x200).
        let kv = u16le(&head, 0x20E);
        let version = if kv > 0 {
            read_at(&f, kv + 0x200, 128).map(|b| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                let s = String::from_utf8_lossy(&b[..end]).into_owned();
                s.split_whitespace().next().unwrap_or_default().to_string()
            })
        } else {
            None
        };
        return Ok(KernelFormat::BzImage { version: version.filter(|v| !v.is_empty()) });
    }
    if head.len() >= 64 && &head[..4] == b"\x7fELF" {
        if head[4] != 2 || head[5] != 1 {
            return Ok(KernelFormat::Unknown { what: "ELF that is not 64-bit little-endian".into() });
        }
        let phoff = u64le(&head, 0x20);
        let phentsize = u16le(&head, 0x36);
        let phnum = u16le(&head, 0x38).min(64);
        for i in 0..phnum {
            let Some(ph) = read_at(&f, phoff + i * phentsize, 56) else { break };
            if u32le(&ph, 0) != 4 {
                continue; // not PT_NOTE
            }
            let (off, size) = (u64le(&ph, 8), u64le(&ph, 0x20).min(64 * 1024));
            let Some(notes) = read_at(&f, off, crate::num::usize_from(size)) else { continue };
            let mut p = 0usize;
            while p + 12 <= notes.len() {
                let namesz = crate::num::usize_from(u32le(&notes, p));
                let descsz = crate::num::usize_from(u32le(&notes, p + 4));
                let ty = u32le(&notes, p + 8);
                let name_start = p + 12;
                let name_end = name_start + namesz;
                if name_end > notes.len() {
                    break;
                }
                if &notes[name_start..name_end] == b"Xen\0" && ty == XEN_ELFNOTE_PHYS32_ENTRY {
                    return Ok(KernelFormat::ElfPvh);
                }
                p = name_start + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
            }
        }
        return Ok(KernelFormat::ElfNoPvh);
    }
    Ok(KernelFormat::Unknown { what: crate::elf::describe_magic(&head) })
}

/// Where a kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelSource {
    Flag,
    HostKernelsDir,
    Boot,
}

impl KernelSource {
    pub fn label(self) -> &'static str {
        match self {
            KernelSource::Flag => "from --kernel",
            KernelSource::HostKernelsDir => "from HOST_KERNELS_DIR",
            KernelSource::Boot => "from /boot",
        }
    }
}

/// A resolved kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub path: PathBuf,
    pub source: KernelSource,
    pub format: KernelFormat,
    /// The kernel's config file, when one was found next to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
}

/// `<dir>/<ver>/vmlinux.bin`, then `<dir>/<ver>/<arch>/vmlinux.bin`.
pub fn host_kernel_candidates(dir: &Path, version: &str) -> Vec<PathBuf> {
    let mut v = vec![dir.join(version).join("vmlinux.bin")];
    v.extend(ARCH_DIRS.iter().map(|a| dir.join(version).join(a).join("vmlinux.bin")));
    v
}

/// Kernels under a /boot-like directory: the running kernel's first, then by version, newest first.
pub fn boot_candidates(boot: &Path, running: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(boot) else { return Vec::new() };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vmlinuz-") && !n.ends_with(".old") && !n.ends_with(".sig"))
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
    if let Some(r) = running
        && let Some(i) = names.iter().position(|n| n == &format!("vmlinuz-{r}"))
    {
        let n = names.remove(i);
        names.insert(0, n);
    }
    names.into_iter().map(|n| boot.join(n)).collect()
}

/// Sort key: numeric runs compare as numbers ("6.1.0-10" < "6.1.0-9" is wrong as text).
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, std::mem::take(&mut text)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(0), String::new()));
                num.clear();
            }
            text.push(c);
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(0), String::new()));
    }
    if !text.is_empty() {
        out.push((0, text));
    }
    out
}

/// The kernel's `.config`: `config-<suffix>` beside `vmlinuz-<suffix>`/`vmlinux-<suffix>` (Debian
/// /boot layout), else `config` or `.config` in the same directory.
pub fn find_config(kernel: &Path) -> Option<PathBuf> {
    let dir = kernel.parent()?;
    let name = kernel.file_name()?.to_string_lossy();
    let mut c = Vec::new();
    for prefix in ["vmlinuz-", "vmlinux-"] {
        if let Some(suffix) = name.strip_prefix(prefix) {
            c.push(dir.join(format!("config-{suffix}")));
        }
    }
    c.push(dir.join("config"));
    c.push(dir.join(".config"));
    c.into_iter().find(|p| p.is_file())
}

/// `CONFIG_X=y|m|...` lines of a kernel config.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// How the root disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootBus {
    /// q35 + NVMe (Debian's cloud kernel has NVMe built in, virtio as modules).
    Nvme,
    /// q35 + virtio-blk-pci.
    VirtioPci,
    /// QEMU microvm + virtio-blk on virtio-mmio (Firecracker-style kernels).
    VirtioMmio,
}

impl RootBus {
    /// The guest's name for the disk.
    pub fn device(self) -> &'static str {
        match self {
            RootBus::Nvme => "/dev/nvme0n1",
            RootBus::VirtioPci | RootBus::VirtioMmio => "/dev/vda",
        }
    }

    /// Config options that must be built in (`=y`) for this bus.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            RootBus::Nvme => &["PCI", "BLK_DEV_NVME"],
            RootBus::VirtioPci => &["PCI", "VIRTIO_PCI", "VIRTIO_BLK"],
            RootBus::VirtioMmio => &["VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES", "VIRTIO_BLK"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RootBus::Nvme => "nvme",
            RootBus::VirtioPci => "virtio-pci",
            RootBus::VirtioMmio => "virtio-mmio",
        }
    }
}

/// The root bus choice: decided from the kernel config, or a list to try in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusPlan {
    pub candidates: Vec<RootBus>,
    /// True when the config decided (a single candidate); false when guessing.
    pub from_config: bool,
    pub reason: String,
}

/// Decide the root bus for a kernel format and (optional) parsed config. Errors when the config
/// shows no usable built-in driver or ext4 as a module.
pub fn plan_root_bus(format: &KernelFormat, config: Option<&BTreeMap<String, String>>) -> Result<BusPlan, String> {
    let order: &[RootBus] = match format {
        KernelFormat::ElfPvh => &[RootBus::VirtioMmio, RootBus::VirtioPci, RootBus::Nvme],
        _ => &[RootBus::Nvme, RootBus::VirtioPci, RootBus::VirtioMmio],
    };
    let Some(cfg) = config else {
        let guess: Vec<RootBus> =
            order.iter().copied().filter(|b| *b != RootBus::VirtioMmio || *format == KernelFormat::ElfPvh).collect();
        return Ok(BusPlan {
            reason: format!(
                "no kernel config found; trying {}",
                guess.iter().map(|b| b.name()).collect::<Vec<_>>().join(", then ")
            ),
            candidates: guess,
            from_config: false,
        });
    };
    let y = |k: &str| cfg.get(k).is_some_and(|v| v == "y");
    if !y("EXT4_FS") {
        return Err(format!(
            "the kernel has CONFIG_EXT4_FS={} (not built in); without an initramfs it cannot mount an ext4 root",
            cfg.get("EXT4_FS").map(String::as_str).unwrap_or("unset")
        ));
    }
    for b in order {
        if b.required().iter().all(|k| y(k)) {
            return Ok(BusPlan {
                candidates: vec![*b],
                from_config: true,
                reason: format!(
                    "kernel config has {}",
                    b.required().iter().map(|k| format!("CONFIG_{k}=y")).collect::<Vec<_>>().join(" ")
                ),
            });
        }
    }
    let show = |k: &str| format!("CONFIG_{k}={}", cfg.get(k).map(String::as_str).unwrap_or("unset"));
    Err(format!(
        "the kernel has no root-disk driver built in ({}, {}, {}); without an initramfs it cannot find its root disk",
        show("BLK_DEV_NVME"),
        show("VIRTIO_BLK"),
        show("VIRTIO_PCI")
    ))
}

/// Resolve the kernel QEMU boots. `tried` collects every candidate looked at, with why it was not
/// used, for the error message.
pub fn resolve_for_qemu(
    flag: Option<&Path>,
    kernel_version: Option<&str>,
    kernels_dir: &Path,
    boot_dir: &Path,
    running: Option<&str>,
) -> Result<Kernel, Vec<String>> {
    let mut tried = Vec::new();
    let consider = |path: &Path, source: KernelSource, tried: &mut Vec<String>| -> Option<Kernel> {
        match inspect(path) {
            Ok(format) if format.qemu_can_boot() => {
                Some(Kernel { path: path.to_path_buf(), source, format, config: find_config(path) })
            }
            Ok(format) => {
                tried.push(format!("{}: {}", path.display(), format.describe()));
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tried.push(format!("{}: does not exist", path.display()));
                None
            }
            Err(e) => {
                tried.push(format!("{}: {e}", path.display()));
                None
            }
        }
    };
    if let Some(p) = flag {
        return consider(p, KernelSource::Flag, &mut tried).ok_or(tried);
    }
    match kernel_version {
        Some(v) if !v.is_empty() && !v.contains('/') && v != ".." => {
            for p in host_kernel_candidates(kernels_dir, v) {
                if let Some(k) = consider(&p, KernelSource::HostKernelsDir, &mut tried) {
                    return Ok(k);
                }
            }
        }
        Some(v) => tried.push(format!("kernel_version {v:?} in metadata.json is not a directory name")),
        None => tried.push("metadata.json has no template.kernel_version (HOST_KERNELS_DIR not searched)".into()),
    }
    let boot = boot_candidates(boot_dir, running);
    if boot.is_empty() {
        tried.push(format!("{}: no vmlinuz-* kernels", boot_dir.display()));
    }
    for p in boot {
        if let Some(k) = consider(&p, KernelSource::Boot, &mut tried) {
            return Ok(k);
        }
    }
    Err(tried)
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;

    #[test]
    fn detects_bzimage_and_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = vec![0u8; 4096];
        b[0x1FE] = 0x55;
        b[0x1FF] = 0xAA;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20E..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        b[0x500..0x500 + 23].copy_from_slice(b"6.1.0-56-cloud-amd64 (d");
        let p = dir.path().join("vmlinuz-6.1.0-56-cloud-amd64");
        std::fs::write(&p, &b).unwrap();
        assert_eq!(inspect(&p).unwrap(), KernelFormat::BzImage { version: Some("6.1.0-56-cloud-amd64".into()) });
        std::fs::write(dir.path().join("config-6.1.0-56-cloud-amd64"), "CONFIG_EXT4_FS=y\n").unwrap();
        assert_eq!(find_config(&p), Some(dir.path().join("config-6.1.0-56-cloud-amd64")));
    }

    fn elf_with_note(name: &[u8], ty: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3A].copy_from_slice(&2u16.to_le_bytes());
        // phdr 0: PT_LOAD; phdr 1: PT_NOTE at 256, size 32
        b[64..68].copy_from_slice(&1u32.to_le_bytes());
        let ph = 64 + 56;
        b[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&256u64.to_le_bytes());
        b[ph + 0x20..ph + 0x28].copy_from_slice(&48u64.to_le_bytes());
        // a GNU note first, then the tested one
        let mut n = 256;
        for (nm, t, desc) in [(&b"GNU\0"[..], 3u32, 4u32), (name, ty, 4)] {
            b[n..n + 4].copy_from_slice(&(nm.len() as u32).to_le_bytes());
            b[n + 4..n + 8].copy_from_slice(&desc.to_le_bytes());
            b[n + 8..n + 12].copy_from_slice(&t.to_le_bytes());
            b[n + 12..n + 12 + nm.len()].copy_from_slice(nm);
            n += 12 + nm.len().div_ceil(4) * 4 + 4;
        }
        b
    }

    #[test]
    fn detects_pvh_notes_in_elf_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux.bin");
        std::fs::write(&p, elf_with_note(b"Xen\0", 18)).unwrap();
        assert_eq!(inspect(&p).unwrap(), KernelFormat::ElfPvh);
        std::fs::write(&p, elf_with_note(b"Xen\0", 17)).unwrap();
        assert_eq!(inspect(&p).unwrap(), KernelFormat::ElfNoPvh);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(!inspect(&p).unwrap().qemu_can_boot());
    }

    #[test]
    fn root_bus_follows_the_config() {
        let bz = KernelFormat::BzImage { version: None };
        let debian_cloud = parse_config(
            "CONFIG_PCI=y\nCONFIG_BLK_DEV_NVME=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_PCI=m\nCONFIG_EXT4_FS=y\n# CONFIG_X is not set\n",
        );
        let p = plan_root_bus(&bz, Some(&debian_cloud)).unwrap();
        assert_eq!((p.candidates, p.from_config), (vec![RootBus::Nvme], true));
        let virtio = parse_config("CONFIG_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_EXT4_FS=y\n");
        assert_eq!(plan_root_bus(&bz, Some(&virtio)).unwrap().candidates, vec![RootBus::VirtioPci]);
        let fc = parse_config(
            "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\n",
        );
        assert_eq!(plan_root_bus(&KernelFormat::ElfPvh, Some(&fc)).unwrap().candidates, vec![RootBus::VirtioMmio]);
        let modular = parse_config("CONFIG_PCI=y\nCONFIG_BLK_DEV_NVME=m\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\n");
        assert!(plan_root_bus(&bz, Some(&modular)).unwrap_err().contains("CONFIG_BLK_DEV_NVME=m"));
        let ext4m = parse_config("CONFIG_BLK_DEV_NVME=y\nCONFIG_PCI=y\nCONFIG_EXT4_FS=m\n");
        assert!(plan_root_bus(&bz, Some(&ext4m)).unwrap_err().contains("EXT4_FS=m"));
        let guess = plan_root_bus(&bz, None).unwrap();
        assert_eq!((guess.candidates, guess.from_config), (vec![RootBus::Nvme, RootBus::VirtioPci], false));
    }

    #[test]
    fn resolution_order_and_tried_list() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("fc-kernels");
        let boot = dir.path().join("boot");
        std::fs::create_dir_all(kdir.join("vmlinux-6.1.158/x86_64")).unwrap();
        std::fs::create_dir_all(&boot).unwrap();
        // A Firecracker kernel without PVH: QEMU cannot boot it, so /boot is used.
        let mut nopvh = vec![0u8; 128];
        nopvh[..6].copy_from_slice(b"\x7fELF\x02\x01");
        std::fs::write(kdir.join("vmlinux-6.1.158/x86_64/vmlinux.bin"), &nopvh).unwrap();
        let mut bz = vec![0u8; 1024];
        bz[0x1FE] = 0x55;
        bz[0x1FF] = 0xAA;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64"] {
            std::fs::write(boot.join(format!("vmlinuz-{v}")), &bz).unwrap();
        }
        let k = resolve_for_qemu(None, Some("vmlinux-6.1.158"), &kdir, &boot, None).unwrap();
        assert_eq!(k.path, boot.join("vmlinuz-6.1.0-10-amd64"), "newest first, numerically");
        assert_eq!(k.source, KernelSource::Boot);
        let k = resolve_for_qemu(None, Some("vmlinux-6.1.158"), &kdir, &boot, Some("6.1.0-9-amd64")).unwrap();
        assert_eq!(k.path, boot.join("vmlinuz-6.1.0-9-amd64"), "the running kernel first");
        let empty = dir.path().join("none");
        let tried = resolve_for_qemu(None, Some("vmlinux-6.1.158"), &kdir, &empty, None).unwrap_err();
        let all = tried.join("\n");
        assert!(all.contains("vmlinux-6.1.158/vmlinux.bin: does not exist"), "{all}");
        assert!(all.contains("without PVH entry"), "{all}");
        assert!(all.contains("no vmlinuz-* kernels"), "{all}");
        let tried = resolve_for_qemu(Some(&empty.join("k")), None, &kdir, &boot, None).unwrap_err();
        assert_eq!(tried.len(), 1, "--kernel is the only candidate when given");
    }
}
