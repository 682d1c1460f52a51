//! Complete snapfiles as a given Firecracker release writes them, for the demo and tests.
//!
//! tmpl ships one snapfile per release that Firecracker's own snapshot code wrote for a default
//! `MicrovmState` with `vm_info.mem_size_mib = 512` (x86_64; `tests/fixtures/firecracker/`,
//! whose README names how each was made). Such a state has no vCPUs and no devices. To describe
//! another VM, [`snapfile`] keeps every byte of that state after the memory regions as it is and
//! re-encodes only what comes before them (the header, `vm_info`, the KVM capabilities and the
//! regions), then appends a fresh CRC. With `mem_size_mib = 512`, no kernel, no boot arguments and
//! no regions it reproduces the shipped file byte for byte (a test checks this); the files it
//! makes for the demo were loaded by Firecracker's own `Snapshot` load path of the same release
//! (see the README there).

use super::{Encoding, X86_64_MAGIC, analyze_bytes, bitcode, crc64_redis};

/// A Firecracker release tmpl can write complete snapfiles for.
#[derive(Debug)]
pub struct Release {
    /// Firecracker release (`v1.12.1`).
    pub name: &'static str,
    /// Snapshot format version it writes (`6.0.0`).
    pub version: &'static str,
    pub encoding: Encoding,
    /// The release's snapfile of a default state with 512 MiB (x86_64).
    pub base: &'static [u8],
    /// Start of x86_64's 32-bit MMIO gap in this release: memory above it is a second region at
    /// 4 GiB (`arch_memory_regions` in `src/vmm/src/arch/x86_64/mod.rs`, `layout.rs`).
    gap_start: u64,
}

const MIB: u64 = 1 << 20;

pub const V1_10_1: Release = Release {
    name: "v1.10.1",
    version: "4.0.0",
    encoding: Encoding::Bincode,
    base: include_bytes!("../../tests/fixtures/firecracker/v1.10.1-mem512.snapfile"),
    gap_start: 3328 * MIB,
};
pub const V1_12_1: Release = Release {
    name: "v1.12.1",
    version: "6.0.0",
    encoding: Encoding::Bincode,
    base: include_bytes!("../../tests/fixtures/firecracker/v1.12.1-mem512.snapfile"),
    gap_start: 3328 * MIB,
};
pub const V1_14_1: Release = Release {
    name: "v1.14.1",
    version: "8.0.0",
    encoding: Encoding::Bincode,
    base: include_bytes!("../../tests/fixtures/firecracker/v1.14.1-mem512.snapfile"),
    gap_start: 3072 * MIB,
};
pub const V1_16_1: Release = Release {
    name: "v1.16.1",
    version: "10.0.0",
    encoding: Encoding::Bitcode,
    base: include_bytes!("../../tests/fixtures/firecracker/v1.16.1-mem512.snapfile"),
    gap_start: 3072 * MIB,
};

pub const RELEASES: &[&Release] = &[&V1_10_1, &V1_12_1, &V1_14_1, &V1_16_1];

/// The shipped release that writes snapshot version `version`, if any.
pub fn for_version(version: &str) -> Option<&'static Release> {
    RELEASES.iter().copied().find(|r| r.version == version)
}

/// The VM a snapfile describes.
#[derive(Debug, Clone)]
pub struct Vm<'a> {
    pub mem_size_mib: u64,
    pub kernel_image_path: &'a str,
    pub boot_args: Option<&'a str>,
    /// Whether to record the guest memory regions Firecracker would have (`false` reproduces the
    /// default state, whose region list is empty: Firecracker then refuses to restore it).
    pub with_regions: bool,
}

impl Vm<'_> {
    /// A VM of `mem_size_mib` with a kernel, boot arguments and its memory regions.
    pub fn new(mem_size_mib: u64) -> Vm<'static> {
        Vm {
            mem_size_mib,
            kernel_image_path: "/fc-kernels/vmlinux.bin",
            boot_args: Some("console=ttyS0 reboot=k panic=1 pci=off"),
            with_regions: true,
        }
    }
}

impl Release {
    /// x86_64 guest memory regions for `mem_mib`: (guest address, size).
    fn regions(&self, mem_mib: u64) -> Vec<(u64, u64)> {
        let size = mem_mib.saturating_mul(MIB);
        if size <= self.gap_start {
            vec![(0, size)]
        } else {
            vec![(0, self.gap_start), (1 << 32, size - self.gap_start)]
        }
    }

    /// The shipped state's bytes after its (empty) memory region list, before the CRC.
    fn rest(&self) -> &'static [u8] {
        let info = analyze_bytes(self.base);
        let end = info.prefix_end.and_then(|e| usize::try_from(e).ok()).unwrap_or(0);
        self.base.get(end..self.base.len().saturating_sub(8)).unwrap_or(&[])
    }
}

/// A complete snapfile as `release` writes it for `vm` (x86_64).
pub fn snapfile(release: &Release, vm: &Vm) -> Vec<u8> {
    let regions = if vm.with_regions { release.regions(vm.mem_size_mib) } else { Vec::new() };
    let mut out = match release.encoding {
        Encoding::Bitcode => bitcode_prefix(release, vm, &regions),
        _ => bincode_prefix(release, vm, &regions),
    };
    out.extend_from_slice(release.rest());
    let crc = crc64_redis(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// x86_64 `StaticCpuTemplate::None` (variant 3 in every release v1.7–v1.16).
const CPU_TEMPLATE_NONE: u8 = 3;

fn bincode_prefix(release: &Release, vm: &Vm, regions: &[(u64, u64)]) -> Vec<u8> {
    let major = super::parse_semver(release.version).map_or(0, |v| v.0);
    let mut p = X86_64_MAGIC.to_le_bytes().to_vec();
    let string = |p: &mut Vec<u8>, s: &str| {
        p.extend_from_slice(&(s.len() as u64).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    string(&mut p, release.version);
    p.extend_from_slice(&vm.mem_size_mib.to_le_bytes());
    p.push(0); // smt
    p.extend_from_slice(&u32::from(CPU_TEMPLATE_NONE).to_le_bytes());
    string(&mut p, vm.kernel_image_path);
    p.push(0); // initrd_path: None
    match vm.boot_args {
        Some(a) => {
            p.push(1);
            string(&mut p, a);
        }
        None => p.push(0),
    }
    p.extend_from_slice(&0u32.to_le_bytes()); // huge_pages: None
    if major >= 6 {
        p.extend_from_slice(&0u64.to_le_bytes()); // kvm_state.kvm_cap_modifiers: empty
    }
    p.extend_from_slice(&(regions.len() as u64).to_le_bytes());
    let mut offset = 0u64;
    for &(base, size) in regions {
        p.extend_from_slice(&base.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        match major {
            1..=4 => p.extend_from_slice(&offset.to_le_bytes()), // file offset of the region
            8 => {
                p.extend_from_slice(&0u32.to_le_bytes()); // region_type: Dram
                p.extend_from_slice(&1u64.to_le_bytes()); // plugged: one slot,
                p.push(1); // plugged
            }
            _ => {}
        }
        offset = offset.saturating_add(size);
    }
    p
}

fn bitcode_prefix(release: &Release, vm: &Vm, regions: &[(u64, u64)]) -> Vec<u8> {
    let mut w = bitcode::Writer::default();
    w.ints(&[X86_64_MAGIC], 8);
    w.strings(&[release.version]);
    w.ints(&[vm.mem_size_mib], 8);
    w.bools(&[false]); // smt
    w.bytes(&[CPU_TEMPLATE_NONE]);
    w.strings(&[vm.kernel_image_path]);
    w.opt_strings(&[None]); // initrd_path
    w.opt_strings(&[vm.boot_args]);
    w.bytes(&[0]); // huge_pages: None
    w.lengths(&[0]); // kvm_state.kvm_cap_modifiers: empty
    w.lengths(&[regions.len() as u64]);
    if !regions.is_empty() {
        w.ints(&regions.iter().map(|r| r.0).collect::<Vec<_>>(), 8);
        w.ints(&regions.iter().map(|r| r.1).collect::<Vec<_>>(), 8);
        w.bytes(&vec![0; regions.len()]); // region_type: Dram
        w.lengths(&vec![1; regions.len()]); // one slot each,
        w.bools(&vec![true; regions.len()]); // plugged
    }
    w.out
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use crate::snapshot::Arch;

    #[test]
    fn the_default_state_is_reproduced_byte_for_byte() {
        for r in RELEASES {
            let vm = Vm { mem_size_mib: 512, kernel_image_path: "", boot_args: None, with_regions: false };
            assert_eq!(snapfile(r, &vm), r.base, "{}", r.name);
            let info = analyze_bytes(r.base);
            assert_eq!(info.version.as_deref(), Some(r.version), "{}", r.name);
            assert_eq!((info.arch, info.encoding, info.crc_ok), (Some(Arch::X86_64), Some(r.encoding), true));
        }
    }

    #[test]
    fn states_for_other_vms_decode_as_written() {
        for r in RELEASES {
            for mem in [64u64, 512, 3072, 4096, 65536] {
                let vm = Vm::new(mem);
                let b = snapfile(r, &vm);
                let i = analyze_bytes(&b);
                assert!(i.crc_ok && i.state_error.is_none(), "{} {mem}: {i:?}", r.name);
                assert_eq!(i.mem_size_mib, Some(mem), "{}", r.name);
                assert_eq!(i.kernel_image_path.as_deref(), Some(vm.kernel_image_path));
                assert_eq!(i.regions_total(), Some(mem << 20), "{} {mem}: {:?}", r.name, i.regions);
                assert_eq!(i.regions.as_ref().map(Vec::len), Some(if mem << 20 > r.gap_start { 2 } else { 1 }));
                // The tail after the regions is the release's own, unchanged.
                let end = i.prefix_end.unwrap() as usize;
                assert_eq!(&b[end..b.len() - 8], r.rest(), "{}", r.name);
            }
        }
    }
}
