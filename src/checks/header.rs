//! `*.header` checks and the data files they require (reference: e2b-formats.md §3).

use crate::build::{Artifact, Build, HeaderError, Loaded};
use crate::header::{self, Header, Issue, NORMALIZE_FIX_VERSION, ParseError};
use crate::report::{Check, Finding, Severity, human_bytes};
use crate::storage::BuildId;

pub const INVALID: Check = Check {
    id: "header.invalid",
    severity: Severity::Error,
    title: "a header file is truncated or malformed",
    hint: "the orchestrator cannot map this build's blocks; restore the header from the source storage",
};
pub const UNSUPPORTED_VERSION: Check = Check {
    id: "header.unsupported-version",
    severity: Severity::Info,
    title: "V4/V5 header (2026 layout): not yet supported by this tmpl",
    hint: "the header and the data it maps were not checked",
};
pub const UNKNOWN_VERSION: Check = Check {
    id: "header.unknown-version",
    severity: Severity::Error,
    title: "header version is not one E2B has written (1–5)",
    hint: "the file is not an E2B header or is corrupt",
};
pub const BUILD_ID_MISMATCH: Check = Check {
    id: "header.build-id-mismatch",
    severity: Severity::Error,
    title: "the header's BuildId is not the build folder",
    hint: "the header was copied from another build; blocks it maps to \"itself\" are read from the wrong folder",
};
pub const MAPPING_ORDER: Check = Check {
    id: "header.mapping-order",
    severity: Severity::Error,
    title: "mappings are not sorted and contiguous",
    hint: "header versions ≥ 3 must map [0, Size) with sorted, contiguous ranges; the reader may serve wrong or zero blocks",
};
pub const COVERAGE: Check = Check {
    id: "header.coverage",
    severity: Severity::Error,
    title: "mappings do not cover [0, Size)",
    hint: "reads past the last mapping fail or return zeros",
};
pub const BLOCK_SIZE: Check = Check {
    id: "header.block-size",
    severity: Severity::Error,
    title: "BlockSize is not a power of two",
    hint: "rootfs headers use 4096, memfile headers 4096 or 2097152 (hugepages)",
};
pub const UNALIGNED: Check = Check {
    id: "header.unaligned",
    severity: Severity::Warning,
    title: "a mapping is not 4 KiB aligned",
    hint: "E2B maps whole 4 KiB pages",
};
pub const MISSING_BUILD: Check = Check {
    id: "header.missing-build",
    severity: Severity::Error,
    title: "a build the header maps blocks to is not in storage",
    hint: "copy the ancestor build (its data files) into storage, e.g. with E2B's copy-build; deleting an ancestor breaks every build layered on it",
};
pub const ANCESTOR_DATA_MISSING: Check = Check {
    id: "header.ancestor-data-missing",
    severity: Severity::Error,
    title: "an ancestor's data file is missing",
    hint: "the ancestor folder exists but lacks the data file this build reads from it; restore it from the source storage",
};
pub const DATA_TOO_SHORT: Check = Check {
    id: "header.data-too-short",
    severity: Severity::Error,
    title: "a data file is shorter than the mappings need",
    hint: "the file was truncated (interrupted copy or upload); restore it from the source storage",
};
pub const ROOTFS_MISSING_DATA: Check = Check {
    id: "rootfs.missing-data",
    severity: Severity::Error,
    title: "the header maps blocks to this build but rootfs.ext4 is missing",
    hint: "restore rootfs.ext4 from the source storage; without it the rootfs cannot be assembled",
};
pub const MEMFILE_MISSING_DATA: Check = Check {
    id: "memfile.missing-data",
    severity: Severity::Error,
    title: "the header maps blocks to this build but memfile is missing",
    hint: "restore memfile from the source storage; without it the memory snapshot cannot be served",
};
pub const ROOTFS_HEADERLESS: Check = Check {
    id: "rootfs.headerless",
    severity: Severity::Info,
    title: "no rootfs header: rootfs.ext4 is read as a full image",
    hint: "legacy layout (before 2025-03); the data file must be the whole filesystem",
};
pub const MEMFILE_HEADERLESS: Check = Check {
    id: "memfile.headerless",
    severity: Severity::Info,
    title: "no memfile header: memfile is read as a full memory image",
    hint: "legacy layout (before 2025-03); the data file must hold all of guest memory",
};
pub const ROOTFS_NOT_BLOCK_MULTIPLE: Check = Check {
    id: "rootfs.not-block-multiple",
    severity: Severity::Error,
    title: "headerless rootfs.ext4 is not a whole number of 4 KiB blocks",
    hint: "the orchestrator maps headerless data in whole blocks; the file was truncated or is not an image",
};
pub const MEMFILE_NOT_BLOCK_MULTIPLE: Check = Check {
    id: "memfile.not-block-multiple",
    severity: Severity::Error,
    title: "headerless memfile is not a whole number of 2 MiB blocks",
    hint: "the orchestrator serves headerless memfiles in 2 MiB pages; the file was truncated",
};
pub const UNUSED_DATA: Check = Check {
    id: "header.unused-data",
    severity: Severity::Info,
    title: "a data file is present but the header maps no blocks to this build",
    hint: "harmless: the orchestrator never opens it",
};

pub const CHECKS: &[&Check] = &[
    &INVALID,
    &UNSUPPORTED_VERSION,
    &UNKNOWN_VERSION,
    &BUILD_ID_MISMATCH,
    &MAPPING_ORDER,
    &COVERAGE,
    &BLOCK_SIZE,
    &UNALIGNED,
    &MISSING_BUILD,
    &ANCESTOR_DATA_MISSING,
    &DATA_TOO_SHORT,
    &ROOTFS_MISSING_DATA,
    &MEMFILE_MISSING_DATA,
    &ROOTFS_HEADERLESS,
    &MEMFILE_HEADERLESS,
    &ROOTFS_NOT_BLOCK_MULTIPLE,
    &MEMFILE_NOT_BLOCK_MULTIPLE,
    &UNUSED_DATA,
];

/// Most mapping issues reported per header (the rest are counted).
const MAX_MAPPING_ISSUES: usize = 5;

fn missing_data(a: Artifact) -> &'static Check {
    match a {
        Artifact::Rootfs => &ROOTFS_MISSING_DATA,
        Artifact::Memfile => &MEMFILE_MISSING_DATA,
    }
}

pub fn check(build: &Build, a: Artifact) -> Vec<Finding> {
    let files = build.artifact(a);
    let hfile = Some(a.header_name().to_string());
    let mut out = Vec::new();
    let h = match &files.header {
        Loaded::Absent => {
            if let Some(d) = files.data {
                let (check, nb) = match a {
                    Artifact::Rootfs => (&ROOTFS_HEADERLESS, &ROOTFS_NOT_BLOCK_MULTIPLE),
                    Artifact::Memfile => (&MEMFILE_HEADERLESS, &MEMFILE_NOT_BLOCK_MULTIPLE),
                };
                out.push(Finding::new(
                    check,
                    Some(a.data_name().into()),
                    format!("{} has no header; read as a full image of {}", a.data_name(), human_bytes(d.len)),
                ));
                let bs = a.headerless_block_size();
                if d.len % bs != 0 {
                    out.push(Finding::new(
                        nb,
                        Some(a.data_name().into()),
                        format!(
                            "{} is {} bytes, {} bytes past the last whole {}-byte block",
                            a.data_name(),
                            d.len,
                            d.len % bs,
                            bs
                        ),
                    ));
                }
            } else if let Some((name, _)) = files.compressed.first() {
                out.push(Finding::new(
                    &INVALID,
                    hfile,
                    format!(
                        "{name} exists but {} is missing: compressed data cannot be read without its header",
                        a.header_name()
                    ),
                ));
            }
            return out;
        }
        Loaded::Invalid(HeaderError::Parse(ParseError::NotYetSupported { version })) => {
            out.push(Finding::new(
                &UNSUPPORTED_VERSION,
                hfile,
                format!("{} is a V{version} header; its mappings were not checked", a.header_name()),
            ));
            return out;
        }
        Loaded::Invalid(HeaderError::Parse(e @ ParseError::UnknownVersion { .. })) => {
            out.push(Finding::new(&UNKNOWN_VERSION, hfile, e.to_string()));
            return out;
        }
        Loaded::Invalid(e) => {
            out.push(Finding::new(&INVALID, hfile, format!("{}: {e}", a.header_name())));
            return out;
        }
        Loaded::Parsed(h) => h,
    };
    if let Some(folder) = build.folder_id
        && h.build_id != folder
    {
        out.push(Finding::new(
            &BUILD_ID_MISMATCH,
            hfile.clone(),
            format!("BuildId is {} but the folder is {folder}", h.build_id),
        ));
    }
    out.extend(structure(h, hfile.clone()));
    out.extend(data_files(build, a, h));
    out
}

/// Sortedness, contiguity, coverage and block size, with severity by header version.
fn structure(h: &Header, file: Option<String>) -> Vec<Finding> {
    let strict = h.format() >= NORMALIZE_FIX_VERSION;
    let sev = if strict { Severity::Error } else { Severity::Warning };
    let suffix = if strict { "" } else { " (tolerated by the reader for header versions below 3)" };
    let mut out = Vec::new();
    let issues = header::validate(h);
    let mut order_count = 0usize;
    for issue in &issues {
        let check = match issue {
            Issue::BadBlockSize { .. } => {
                out.push(Finding::new(&BLOCK_SIZE, file.clone(), issue.describe()));
                continue;
            }
            Issue::Unaligned { .. } => &UNALIGNED,
            Issue::EndsShort { .. } | Issue::EndsPast { .. } => &COVERAGE,
            _ => {
                order_count += 1;
                if order_count > MAX_MAPPING_ISSUES {
                    continue;
                }
                &MAPPING_ORDER
            }
        };
        let f = Finding::new(check, file.clone(), format!("{}{suffix}", issue.describe()));
        out.push(if check.severity == Severity::Error { f.severity(sev) } else { f });
    }
    if order_count > MAX_MAPPING_ISSUES {
        out.push(
            Finding::new(
                &MAPPING_ORDER,
                file,
                format!("… and {} more mapping-order problems", order_count - MAX_MAPPING_ISSUES),
            )
            .severity(sev),
        );
    }
    out
}

/// Every build the header maps blocks to must have a data file long enough.
fn data_files(build: &Build, a: Artifact, h: &Header) -> Vec<Finding> {
    let mut out = Vec::new();
    let refs: Vec<BuildId> = h.referenced_builds();
    let files = build.artifact(a);
    if !refs.contains(&build.id)
        && let Some(d) = files.data
    {
        out.push(Finding::new(
            &UNUSED_DATA,
            Some(a.data_name().into()),
            format!("{} ({}) is not used by the header", a.data_name(), human_bytes(d.len)),
        ));
    }
    for id in refs {
        let need = h.required_len(&id);
        let (label, facts) = if id == build.id {
            let label = a.data_name().to_string();
            match files.data {
                Some(d) => (label, d),
                None if !files.compressed.is_empty() => {
                    out.push(Finding::new(
                        &UNSUPPORTED_VERSION,
                        Some(label),
                        "compressed data file: not checked by this version".to_string(),
                    ));
                    continue;
                }
                None => {
                    out.push(Finding::new(
                        missing_data(a),
                        Some(label),
                        format!(
                            "{} maps {} of the device to this build, but {} is missing",
                            a.header_name(),
                            human_bytes(need),
                            a.data_name()
                        ),
                    ));
                    continue;
                }
            }
        } else {
            let dir = build.dir_of(&id);
            let label = format!("{id}/{}", a.data_name());
            if !dir.is_dir() {
                out.push(Finding::new(
                    &MISSING_BUILD,
                    Some(id.to_string()),
                    format!(
                        "{} maps blocks to build {id}, which is not in {}",
                        a.header_name(),
                        build.storage_root.display()
                    ),
                ));
                continue;
            }
            match crate::build::stat(&dir.join(a.data_name())) {
                Ok(Some(d)) => (label, d),
                Ok(None) => {
                    let compressed = crate::build::COMPRESSED_SUFFIXES
                        .iter()
                        .any(|s| dir.join(format!("{}{s}", a.data_name())).exists());
                    if compressed {
                        out.push(Finding::new(
                            &UNSUPPORTED_VERSION,
                            Some(label),
                            "ancestor data is compressed: not checked by this version".to_string(),
                        ));
                    } else {
                        out.push(Finding::new(
                            &ANCESTOR_DATA_MISSING,
                            Some(label),
                            format!(
                                "build {id} is needed for {} of this {} but its {} is missing",
                                human_bytes(need),
                                a.label(),
                                a.data_name()
                            ),
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    out.push(Finding::new(&ANCESTOR_DATA_MISSING, Some(label), e.to_string()));
                    continue;
                }
            }
        };
        if facts.len < need {
            out.push(Finding::new(
                &DATA_TOO_SHORT,
                Some(label.clone()),
                format!(
                    "{label} is {} bytes but the mappings read up to byte {need} ({} missing)",
                    facts.len,
                    need - facts.len
                ),
            ));
        }
    }
    out
}
