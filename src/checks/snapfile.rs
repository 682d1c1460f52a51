//! snapfile checks (reference: firecracker-snapshot.md §1–3, §6).

use crate::build::{Build, Loaded};
use crate::report::{Check, Finding, Severity, human_bytes};
use crate::snapshot::{Arch, Encoding, FirecrackerVersion, Region, STATE_LIMIT};
use crate::vocab::files::SNAPFILE;

pub const MISSING: Check = Check {
    id: "snapfile.missing",
    severity: Severity::Error,
    title: "no snapfile for a build with a memory snapshot",
    hint: "the orchestrator needs the snapfile to resume memory; restore it, or mark the build filesystem_only (tmpl inject-envd --drop-snapshot) for a cold boot",
};
pub const UNREADABLE: Check = Check {
    id: "snapfile.unreadable",
    severity: Severity::Error,
    title: "the snapfile cannot be read",
    hint: "check permissions and the disk",
};
pub const TOO_SHORT: Check = Check {
    id: "snapfile.too-short",
    severity: Severity::Error,
    title: "the snapfile is shorter than its 8-byte CRC",
    hint: "Firecracker fails with \"Snapshot file is smaller than CRC length\"; restore the snapfile",
};
pub const BAD_MAGIC: Check = Check {
    id: "snapfile.bad-magic",
    severity: Severity::Error,
    title: "not a Firecracker snapshot (magic)",
    hint: "the file is foreign, zeroed or a placeholder; restore the real snapfile from the source storage (a hand-made snapfile can never work)",
};
pub const BAD_HEADER: Check = Check {
    id: "snapfile.bad-header",
    severity: Severity::Error,
    title: "the snapshot header cannot be decoded",
    hint: "Firecracker rejects it (invalid format version or version string); restore the snapfile",
};
pub const CRC_MISMATCH: Check = Check {
    id: "snapfile.crc-mismatch",
    severity: Severity::Error,
    title: "CRC64 over the snapfile does not match its trailer",
    hint: "the bytes changed after Firecracker wrote them (truncation, partial copy, bit rot, mixed files); restore the snapfile from the source storage. Never re-stamp the CRC: it hides the corruption",
};
pub const CRC_ZERO: Check = Check {
    id: "snapfile.crc-zero",
    severity: Severity::Warning,
    title: "the stored CRC is 0",
    hint: "an all-zero or zero-padded file passes Firecracker's CRC check (init and xorout are 0); the content must be checked on its own",
};
pub const TRAILING_ZEROS: Check = Check {
    id: "snapfile.trailing-zeros",
    severity: Severity::Warning,
    title: "zero bytes were appended after the snapshot",
    hint: "a copy or pre-allocation padded the file; the CRC still passes and Firecracker v1.7–v1.14 ignore bytes after the state, but truncating the file to the length shown (truncate -s LENGTH snapfile, after keeping a copy) restores the original",
};
pub const TRAILING_BYTES: Check = Check {
    id: "snapfile.trailing-bytes",
    severity: Severity::Error,
    title: "bytes follow the end of a bitcode snapshot",
    hint: "Firecracker v1.15+ decodes the state with bitcode, which refuses any byte after it (\"An error occurred during bitcode serialization: bitcode error\"), although the CRC still passes; keep a copy, then truncate the file to the length shown: truncate -s LENGTH snapfile",
};
pub const MEMORY_REGIONS: Check = Check {
    id: "snapfile.memory-regions",
    severity: Severity::Error,
    title: "the snapshot's guest memory regions fail Firecracker's sanity check",
    hint: "Firecracker refuses to restore it (\"Invalid snapshot state: ...\"); the state was not written by Firecracker for a running VM (hand-made or default): restore the real snapfile",
};
pub const STATE_UNDECODABLE: Check = Check {
    id: "snapfile.state-undecodable",
    severity: Severity::Warning,
    title: "the state does not decode as far as its memory regions",
    hint: "tmpl reads vm_info, the KVM capabilities and the memory regions as the snapshot version lays them out; a state that stops or differs there was cut short or not written by that Firecracker release, and Firecracker fails to decode it",
};
pub const VERSION_MISMATCH: Check = Check {
    id: "snapfile.version-mismatch",
    severity: Severity::Error,
    title: "the snapshot version does not match the build's Firecracker",
    hint: "the orchestrator loads the snapfile with the firecracker_version from metadata.json; a snapshot from another release fails to load (usually with a decode error, not a version error)",
};
pub const TOO_LARGE: Check = Check {
    id: "snapfile.too-large",
    severity: Severity::Warning,
    title: "the snapfile is larger than Firecracker's 10 MB state limit",
    hint: "Firecracker refuses to decode state over its limit; the file probably has junk appended",
};
pub const FOREIGN_ARCH: Check = Check {
    id: "snapfile.foreign-arch",
    severity: Severity::Info,
    title: "the snapshot is for another CPU architecture than this machine",
    hint: "fine if the orchestrator nodes are of that architecture",
};
pub const UNUSED: Check = Check {
    id: "snapfile.unused",
    severity: Severity::Info,
    title: "a filesystem-only build still has a snapfile",
    hint: "resume is a cold boot; the snapfile is not used",
};

pub const CHECKS: &[&Check] = &[
    &MISSING,
    &UNREADABLE,
    &TOO_SHORT,
    &BAD_MAGIC,
    &BAD_HEADER,
    &CRC_MISMATCH,
    &CRC_ZERO,
    &TRAILING_ZEROS,
    &TRAILING_BYTES,
    &MEMORY_REGIONS,
    &STATE_UNDECODABLE,
    &VERSION_MISMATCH,
    &TOO_LARGE,
    &FOREIGN_ARCH,
    &UNUSED,
];

fn file() -> Option<String> {
    Some(SNAPFILE.to_string())
}

pub fn check(build: &Build) -> Vec<Finding> {
    let mut out = Vec::new();
    let info = match &build.snapfile {
        Loaded::Absent => {
            if !build.is_filesystem_only() {
                if build.memfile.is_absent() {
                    out.push(
                        Finding::new(&MISSING, file(), "no snapfile and no memory snapshot, and metadata does not say filesystem_only")
                            .severity(Severity::Warning)
                            .hint("only a cold boot is possible; mark the build filesystem_only in metadata version 2, or rebuild it"),
                    );
                } else {
                    out.push(Finding::new(
                        &MISSING,
                        file(),
                        "the build has memory (memfile) but no snapfile: it cannot be resumed",
                    ));
                }
            }
            return out;
        }
        Loaded::Invalid(e) => {
            out.push(Finding::new(&UNREADABLE, file(), format!("snapfile {e}")));
            return out;
        }
        Loaded::Parsed(i) => i,
    };
    if build.is_filesystem_only() {
        out.push(Finding::new(&UNUSED, file(), "metadata says filesystem_only; the snapfile is ignored"));
    }
    if info.len < 8 {
        out.push(Finding::new(&TOO_SHORT, file(), format!("snapfile is {} bytes", info.len)));
        return out;
    }
    if info.arch.is_none() {
        let what = if info.trailing_zero_bytes == info.len {
            "the file is all zeros".to_string()
        } else {
            format!("magic is 0x{:016x}", info.magic)
        };
        out.push(Finding::new(
            &BAD_MAGIC,
            file(),
            format!(
                "{what}; expected 0x{:016x} (x86_64) or 0x{:016x} (aarch64) in the high 48 bits",
                crate::snapshot::X86_64_MAGIC,
                crate::snapshot::AARCH64_MAGIC
            ),
        ));
    } else if let Some(e) = &info.header_error {
        out.push(Finding::new(&BAD_HEADER, file(), e.clone()));
    }
    let bitcode = info.encoding == Some(Encoding::Bitcode);
    if !info.crc_ok {
        let said = if bitcode {
            "Firecracker v1.14+ reports \"CRC64 validation failed\" (no number) once the state decodes; v1.15+ decode first, so a damaged bitcode state usually fails with \"bitcode error\" instead".to_string()
        } else {
            format!("Firecracker v1.2–v1.13 reports \"CRC64 validation failed: {}\"", info.computed_crc)
        };
        let mut msg = format!(
            "computed CRC64 {c} (0x{c:016x}) over bytes 0..{end}, stored {s} (0x{s:016x}); {said}",
            c = info.computed_crc,
            s = info.stored_crc,
            end = info.len - 8
        );
        if let Some(l) = info.valid_prefix_len {
            msg.push_str(&format!(
                "; a CRC-valid snapshot ends at byte {l}: {} bytes were appended after it (truncate -s {l} snapfile restores it)",
                info.len - l
            ));
        }
        out.push(Finding::new(&CRC_MISMATCH, file(), msg));
    } else if info.stored_crc == 0 && info.arch.is_some() {
        out.push(Finding::new(
            &CRC_ZERO,
            file(),
            "stored CRC is 0 (passes the check only because the bytes before it also CRC to 0)",
        ));
    }
    if info.crc_ok && info.trailing_zero_bytes >= 8 && info.arch.is_some() {
        let end = info.valid_prefix_len;
        let at = end.map(|l| format!("; the snapshot ends at byte {l}: truncate -s {l} snapfile")).unwrap_or_default();
        if bitcode {
            out.push(Finding::new(
                &TRAILING_BYTES,
                file(),
                format!(
                    "{} zero bytes follow the bitcode state and its CRC{at}; Firecracker v1.15+ refuses the file (\"bitcode error\"), v1.7–v1.14 would have ignored them",
                    info.trailing_zero_bytes
                ),
            ));
        } else {
            out.push(Finding::new(
                &TRAILING_ZEROS,
                file(),
                format!("{} zero bytes at the end of the file{at}", info.trailing_zero_bytes),
            ));
        }
    }
    if info.crc_ok && info.header_error.is_none() {
        if let Some(e) = &info.state_error {
            out.push(Finding::new(&STATE_UNDECODABLE, file(), e.clone()));
        }
        if let Some(msg) = info.regions.as_deref().and_then(|r| regions_insane(r, info.layout)) {
            out.push(Finding::new(&MEMORY_REGIONS, file(), msg));
        }
    }
    if info.len > STATE_LIMIT + 8 {
        out.push(Finding::new(
            &TOO_LARGE,
            file(),
            format!("snapfile is {} ({} bytes)", human_bytes(info.len), info.len),
        ));
    }
    if let (Some(arch), Some(host)) = (info.arch, Arch::host())
        && arch != host
    {
        out.push(Finding::new(
            &FOREIGN_ARCH,
            file(),
            format!("snapshot is {}, this machine is {}", arch.name(), host.name()),
        ));
    }
    out.extend(version_check(build, info));
    out
}

/// Firecracker's `snapshot_state_sanity_check` on the decoded regions (`persist.rs`: every
/// release checks for at least one region; v1.14+ also for one plugged DRAM slot).
fn regions_insane(r: &[Region], layout: Option<&str>) -> Option<String> {
    if r.is_empty() {
        return Some(
            "the state lists no guest memory region: \"Invalid snapshot state: No memory region defined.\" (a default or hand-made state)"
                .into(),
        );
    }
    if !matches!(layout, Some("v1.14" | "v1.15-v1.16")) {
        return None;
    }
    let dram: Vec<&Region> = r.iter().filter(|x| !x.hotpluggable).collect();
    if dram.is_empty() {
        return Some("no region is DRAM: \"Invalid snapshot state: No DRAM memory region defined.\"".into());
    }
    if dram.iter().any(|x| x.slots != Some(1)) {
        return Some("a DRAM region has more than one slot: \"Invalid snapshot state: DRAM memory has more than a single slot.\"".into());
    }
    if dram.iter().any(|x| x.plugged_slots == Some(0)) {
        return Some("a DRAM region is unplugged: \"Invalid snapshot state: DRAM memory is unplugged.\"".into());
    }
    None
}

fn version_check(build: &Build, info: &crate::snapshot::SnapfileInfo) -> Option<Finding> {
    let m = build.meta()?;
    if m.contents_ignored {
        return None;
    }
    let fc_text = m.firecracker_version()?;
    let fc = FirecrackerVersion::parse(fc_text)?;
    if !fc.known() {
        return None;
    }
    let support = fc.snapshot_support();
    if support.can_load(info)? {
        // A v1.13-layout 8.0.0 snapshot under a v1.14 binary decodes wrongly even though the
        // version string matches.
        if fc.minor == 14 && info.layout == Some("v1.13") {
            return Some(Finding::new(
                &VERSION_MISMATCH,
                file(),
                format!(
                    "snapshot version 8.0.0 has the Firecracker v1.13 memory layout, but metadata says {fc_text} (v1.14 layout differs)"
                ),
            ));
        }
        return None;
    }
    let found = match info.encoding? {
        Encoding::Versionize => format!(
            "an old-format (versionize, Firecracker ≤ v1.6) snapshot, data version {}",
            info.data_version.unwrap_or(0)
        ),
        _ => format!("snapshot version {}", info.version.as_deref().unwrap_or("?")),
    };
    let expected = match (&support.writes, support.max_data_version) {
        (Some(_), _) => format!("loads {}", support.loads.join(" / ")),
        (None, Some(d)) => format!("loads versionize data versions ≤ {d}"),
        _ => "has no known snapshot format".into(),
    };
    Some(Finding::new(
        &VERSION_MISMATCH,
        file(),
        format!("{found}, but metadata says firecracker_version {fc_text}, which {expected}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(hotpluggable: bool, slots: Option<u64>, plugged: Option<u64>) -> Region {
        Region { base_address: 0, size: 64 << 20, hotpluggable, slots, plugged_slots: plugged }
    }

    /// Firecracker's own refusals of a memory layout, one per rule (their messages quoted).
    #[test]
    fn memory_regions_are_judged_like_firecracker_loads_them() {
        assert!(regions_insane(&[], None).unwrap().contains("No memory region defined"));
        // Before v1.14 only the presence of a region matters.
        assert_eq!(regions_insane(&[region(true, Some(2), Some(0))], Some("v1.13")), None);
        let v114 = Some("v1.14");
        assert!(regions_insane(&[region(true, Some(1), Some(1))], v114).unwrap().contains("No DRAM"));
        assert!(regions_insane(&[region(false, Some(2), Some(2))], v114).unwrap().contains("single slot"));
        assert!(regions_insane(&[region(false, Some(1), Some(0))], v114).unwrap().contains("unplugged"));
        assert_eq!(regions_insane(&[region(false, Some(1), Some(1))], Some("v1.15-v1.16")), None);
    }
}
