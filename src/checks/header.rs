//! `*.header` checks and the data files they require (reference: e2b-formats.md §3, §7).
//! Every way a V4/V5 header can be corrupt has its own finding id.

use crate::build::{Build, HeaderError, Loaded};
use crate::checks::data;
use crate::compress::Compression;
use crate::header::{self, FLAG_PENDING_UPLOAD, Header, Issue, NORMALIZE_FIX_VERSION, ParseError};
use crate::report::{Check, Finding, Severity, human_bytes};
use crate::vocab::Artifact;
use crate::vocab::BuildId;

pub const INVALID: Check = Check {
    id: "header.invalid",
    severity: Severity::Error,
    title: "a header file is truncated or malformed",
    hint: "the orchestrator cannot map this build's blocks; restore the header from the source storage",
};
pub const V4_INNER_TOO_LARGE: Check = Check {
    id: "header.v4-inner-too-large",
    severity: Severity::Error,
    title: "V4/V5 header: inner block length over the 256 MiB cap",
    hint: "E2B's reader refuses it (v4MaxUncompressedHeaderSize); the length field is corrupt, restore the header from the source storage",
};
pub const V4_INNER_LENGTH: Check = Check {
    id: "header.v4-inner-length-mismatch",
    severity: Severity::Error,
    title: "V4/V5 header: inner block length does not match the LZ4 frame",
    hint: "the length field or the frame is corrupt (a partial rewrite or a header copied over another); restore the header from the source storage",
};
pub const V4_BAD_LZ4: Check = Check {
    id: "header.v4-bad-lz4",
    severity: Severity::Error,
    title: "V4/V5 header: the LZ4 frame is malformed or truncated",
    hint: "the header was cut short or overwritten; restore it from the source storage",
};
pub const V4_LZ4_CHECKSUM: Check = Check {
    id: "header.v4-lz4-checksum",
    severity: Severity::Error,
    title: "V4/V5 header: an LZ4 checksum (descriptor, block or content xxHash32) fails",
    hint: "bytes of the header changed after it was written (disk or copy corruption); restore it from the source storage",
};
pub const V4_TRUNCATED: Check = Check {
    id: "header.v4-truncated",
    severity: Severity::Error,
    title: "V4/V5 header: a count runs past the end of the inner block",
    hint: "the builds section or the mappings are shorter than their counts say; restore the header from the source storage",
};
pub const PENDING_UPLOAD: Check = Check {
    id: "header.pending-upload",
    severity: Severity::Error,
    title: "V4/V5 header has the IncompletePendingUpload flag set",
    hint: "E2B never stores such a header (StoreHeader refuses it): this is an in-flight header from a peer, copied mid-upload; re-copy the build once its upload has finished",
};
pub const UNKNOWN_FLAGS: Check = Check {
    id: "header.unknown-flags",
    severity: Severity::Warning,
    title: "V4/V5 header flags byte has bits E2B does not define",
    hint: "only bit 0 (IncompletePendingUpload) exists; the byte is probably corrupt",
};
pub const FRAME_TABLE_TYPE_ZERO: Check = Check {
    id: "header.frame-table-type-zero",
    severity: Severity::Error,
    title: "a frame table says \"uncompressed\" but lists frames",
    hint: "E2B rejects it as a corrupted header (compression type 0 with a frame count); restore the header from the source storage",
};
pub const FRAME_TABLE_UNKNOWN_TYPE: Check = Check {
    id: "header.frame-table-unknown-type",
    severity: Severity::Error,
    title: "a frame table names a compression type other than none, zstd or lz4",
    hint: "the header is corrupt or from a newer E2B; restore it from the source storage",
};
pub const FRAME_COUNT_CAP: Check = Check {
    id: "header.frame-count-cap",
    severity: Severity::Error,
    title: "a frame table lists more than 1 Mi frames",
    hint: "E2B refuses tables over maxDeserializedFrames (2 TiB of 2 MiB frames); the count is corrupt",
};
pub const FRAME_TABLE_INVALID: Check = Check {
    id: "header.frame-table-invalid",
    severity: Severity::Error,
    title: "a frame has a zero, negative or oversized size, or frames overlap",
    hint: "frames must be sorted and disjoint in both the compressed and the uncompressed file; restore the header from the source storage",
};
pub const V5_BUILD_COUNT_CAP: Check = Check {
    id: "header.v5-build-count-cap",
    severity: Severity::Error,
    title: "V5 build table over 65535 builds",
    hint: "the count is corrupt; restore the header from the source storage",
};
pub const V5_ENTRY_COUNT_CAP: Check = Check {
    id: "header.v5-entry-count-cap",
    severity: Severity::Error,
    title: "V5 mapping section over 8 Mi entries",
    hint: "E2B refuses it (maxV5MappingEntries); the count is corrupt",
};
pub const V5_BUILD_INDEX: Check = Check {
    id: "header.v5-build-index",
    severity: Severity::Error,
    title: "a V5 mapping entry points past the build table",
    hint: "the index column is corrupt; restore the header from the source storage",
};
pub const V5_OVERLAP: Check = Check {
    id: "header.v5-overlap",
    severity: Severity::Error,
    title: "a V5 mapping entry starts before the previous one ends",
    hint: "the offset column is corrupt; E2B's reader refuses the header",
};
pub const V5_BAD_ENTRY: Check = Check {
    id: "header.v5-bad-entry",
    severity: Severity::Error,
    title: "a V5 mapping entry is empty, out of range or past the device Size",
    hint: "the varint columns are corrupt; restore the header from the source storage",
};
pub const BUILD_ENTRY_INVALID: Check = Check {
    id: "header.build-entry-invalid",
    severity: Severity::Error,
    title: "a builds-section entry is invalid (negative size or listed twice)",
    hint: "the builds section is corrupt; restore the header from the source storage",
};
pub const NO_FRAME_TABLE: Check = Check {
    id: "header.no-frame-table",
    severity: Severity::Error,
    title: "a compressed data file has no frame table",
    hint: "compressed data can only be read through the frame table in a V4/V5 header (this build's or the data's own build's); restore that header",
};
pub const FRAME_TABLE_GAP: Check = Check {
    id: "header.frame-table-gap",
    severity: Severity::Error,
    title: "the mappings read compressed bytes no frame covers",
    hint: "the frame table was trimmed or is corrupt; reads of these blocks fail. Restore the headers from the source storage",
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
pub const TOO_MANY_BUILDS: Check = Check {
    id: "header.too-many-builds",
    severity: Severity::Error,
    title: "the mappings name more than 65535 builds",
    hint: "E2B caps a header's build table at 65535 builds (V5); a header naming more is corrupt. tmpl checks the data files of the first 65535 only; restore the header from the source storage",
};
pub const UNUSED_DATA: Check = Check {
    id: "header.unused-data",
    severity: Severity::Info,
    title: "a data file is present but the header maps no blocks to this build",
    hint: "harmless: the orchestrator never opens it",
};

pub const CHECKS: &[&Check] = &[
    &INVALID,
    &UNKNOWN_VERSION,
    &V4_INNER_TOO_LARGE,
    &V4_INNER_LENGTH,
    &V4_BAD_LZ4,
    &V4_LZ4_CHECKSUM,
    &V4_TRUNCATED,
    &PENDING_UPLOAD,
    &UNKNOWN_FLAGS,
    &FRAME_TABLE_TYPE_ZERO,
    &FRAME_TABLE_UNKNOWN_TYPE,
    &FRAME_COUNT_CAP,
    &FRAME_TABLE_INVALID,
    &V5_BUILD_COUNT_CAP,
    &V5_ENTRY_COUNT_CAP,
    &V5_BUILD_INDEX,
    &V5_OVERLAP,
    &V5_BAD_ENTRY,
    &BUILD_ENTRY_INVALID,
    &NO_FRAME_TABLE,
    &FRAME_TABLE_GAP,
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
    &TOO_MANY_BUILDS,
];

/// Most mapping issues reported per header and kind (the rest are counted).
const MAX_MAPPING_ISSUES: usize = 5;
/// Most mapping issues kept in memory while a header is checked (the rest are only counted).
const MAX_ISSUES_KEPT: usize = 1000;
/// Most data-file findings of one id per header (one per referenced build could be 65535).
const MAX_FINDINGS_PER_ID: usize = 20;
/// Most distinct builds whose data files are checked per header (E2B's V5 build-table cap).
const MAX_REFERENCED_BUILDS: usize = 65535;

/// The finding for a header that does not parse.
pub fn parse_check(e: &ParseError) -> &'static Check {
    match e {
        ParseError::UnknownVersion { .. } => &UNKNOWN_VERSION,
        ParseError::InnerTooLarge { .. } => &V4_INNER_TOO_LARGE,
        ParseError::InnerLengthMismatch { .. } => &V4_INNER_LENGTH,
        ParseError::Lz4(l) if l.is_checksum() => &V4_LZ4_CHECKSUM,
        ParseError::Lz4(_) => &V4_BAD_LZ4,
        ParseError::InnerTruncated { .. } => &V4_TRUNCATED,
        ParseError::FrameTableTypeZero { .. } => &FRAME_TABLE_TYPE_ZERO,
        ParseError::FrameTableUnknownType { .. } => &FRAME_TABLE_UNKNOWN_TYPE,
        ParseError::FrameCountCap { .. } => &FRAME_COUNT_CAP,
        ParseError::FrameInvalid { .. } => &FRAME_TABLE_INVALID,
        ParseError::V5BuildCountCap { .. } => &V5_BUILD_COUNT_CAP,
        ParseError::V5EntryCountCap { .. } => &V5_ENTRY_COUNT_CAP,
        ParseError::V5BuildIndex { .. } => &V5_BUILD_INDEX,
        ParseError::V5Overlap { .. } => &V5_OVERLAP,
        ParseError::V5BadEntry { .. } => &V5_BAD_ENTRY,
        ParseError::TooShort { .. }
        | ParseError::BodyNotMultiple { .. }
        | ParseError::NotYetSupported { .. }
        | ParseError::TooLarge { .. }
        | ParseError::FramedTooShort { .. }
        | ParseError::SizeOverflow { .. } => &INVALID,
    }
}

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
                    &NO_FRAME_TABLE,
                    hfile,
                    format!(
                        "{name} exists but {} is missing: compressed data cannot be read without its header",
                        a.header_name()
                    ),
                ));
            }
            return out;
        }
        Loaded::Invalid(HeaderError::Parse(e @ ParseError::UnknownVersion { .. })) => {
            out.push(Finding::new(&UNKNOWN_VERSION, hfile, e.to_string()));
            return out;
        }
        Loaded::Invalid(HeaderError::Parse(e)) => {
            out.push(Finding::new(parse_check(e), hfile, format!("{}: {e}", a.header_name())));
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
    out.extend(framed(h, hfile.clone()));
    out.extend(structure(h, hfile.clone()));
    out.extend(collapse(data_files(build, a, h), MAX_FINDINGS_PER_ID));
    out
}

/// V4/V5 facts beyond parsing: the flags byte and the builds section.
fn framed(h: &Header, file: Option<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    if h.format() < 4 {
        return out;
    }
    if h.flags & FLAG_PENDING_UPLOAD != 0 {
        out.push(Finding::new(
            &PENDING_UPLOAD,
            file.clone(),
            format!("flags byte is {:#04x}: bit 0 (IncompletePendingUpload) is set", h.flags),
        ));
    }
    if h.flags & !FLAG_PENDING_UPLOAD != 0 {
        out.push(Finding::new(&UNKNOWN_FLAGS, file.clone(), format!("flags byte is {:#04x}", h.flags)));
    }
    for (i, b) in h.builds.iter().enumerate() {
        if b.file_size < 0 {
            out.push(Finding::new(
                &BUILD_ENTRY_INVALID,
                file.clone(),
                format!("build {} has a negative data file size {}", b.build, b.file_size),
            ));
        }
        if h.builds[..i].iter().any(|o| o.build == b.build) {
            out.push(Finding::new(
                &BUILD_ENTRY_INVALID,
                file.clone(),
                format!("build {} is listed more than once in the builds section", b.build),
            ));
        }
    }
    out
}

/// Sortedness, contiguity, coverage and block size, with severity by header version. At most
/// [`MAX_MAPPING_ISSUES`] findings per kind; the rest are counted.
fn structure(h: &Header, file: Option<String>) -> Vec<Finding> {
    let strict = h.format() >= NORMALIZE_FIX_VERSION;
    let sev = if strict { Severity::Error } else { Severity::Warning };
    let suffix = if strict { "" } else { " (tolerated by the reader for header versions below 3)" };
    let mut out = Vec::new();
    let (issues, total) = header::validate_capped(h, MAX_ISSUES_KEPT);
    let mut order_count = total - issues.len();
    let mut unaligned_count = 0usize;
    for issue in &issues {
        let check = match issue {
            Issue::BadBlockSize { .. } => {
                out.push(Finding::new(&BLOCK_SIZE, file.clone(), issue.describe()));
                continue;
            }
            Issue::Unaligned { .. } => {
                unaligned_count += 1;
                if unaligned_count > MAX_MAPPING_ISSUES {
                    continue;
                }
                &UNALIGNED
            }
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
                file.clone(),
                format!("… and {} more mapping-order problems", order_count - MAX_MAPPING_ISSUES),
            )
            .severity(sev),
        );
    }
    if unaligned_count > MAX_MAPPING_ISSUES {
        out.push(Finding::new(
            &UNALIGNED,
            file,
            format!("… and {} more unaligned mappings", unaligned_count - MAX_MAPPING_ISSUES),
        ));
    }
    out
}

/// Keep at most `max` findings of each id (in order); the rest become one "… and N more" line of
/// that id, so a report's size does not grow with what a header names.
fn collapse(findings: Vec<Finding>, max: usize) -> Vec<Finding> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    let mut extra: Vec<(Finding, usize)> = Vec::new();
    for f in findings {
        let n = seen.entry(f.id.clone()).or_default();
        *n += 1;
        if *n <= max {
            out.push(f);
        } else if let Some(e) = extra.iter_mut().find(|(e, _)| e.id == f.id) {
            e.1 += 1;
        } else {
            extra.push((f, 1));
        }
    }
    for (f, n) in extra {
        let msg = format!("… and {n} more like the above");
        out.push(Finding { message: msg, file: None, ..f });
    }
    out
}

/// Every build the header maps blocks to must have a data file long enough: plain files by
/// length, compressed files through their frame table (coverage of the mappings, compressed
/// length) and their uncompressed size (builds section, `.uncompressed-size` sidecar).
fn data_files(build: &Build, a: Artifact, h: &Header) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut stats = h.build_stats();
    let files = build.artifact(a);
    if !stats.iter().any(|s| s.build == build.id) {
        if let Some(d) = files.data {
            out.push(Finding::new(
                &UNUSED_DATA,
                Some(a.data_name().into()),
                format!("{} ({}) is not used by the header", a.data_name(), human_bytes(d.len)),
            ));
        }
        for (name, f) in &files.compressed {
            out.push(Finding::new(
                &UNUSED_DATA,
                Some(name.clone()),
                format!("{name} ({}) is not used by the header", human_bytes(f.len)),
            ));
        }
    }
    if stats.len() > MAX_REFERENCED_BUILDS {
        out.push(Finding::new(
            &TOO_MANY_BUILDS,
            Some(a.header_name().to_string()),
            format!(
                "the mappings name {} builds; the data files of the first {MAX_REFERENCED_BUILDS} were checked",
                stats.len()
            ),
        ));
        stats.truncate(MAX_REFERENCED_BUILDS);
    }
    let mut missing_builds = 0usize;
    // Frame tables of the compressed data files, for one pass over the mappings below.
    let mut tables: std::collections::HashMap<BuildId, (std::sync::Arc<crate::header::FrameTable>, String)> =
        std::collections::HashMap::new();
    for st in &stats {
        let (id, need) = (st.build, st.required_len);
        if id != build.id && !crate::build::is_dir(&build.dir_of(&id)) {
            missing_builds += 1;
            if missing_builds <= MAX_MAPPING_ISSUES {
                out.push(Finding::new(
                    &MISSING_BUILD,
                    Some(id.to_string()),
                    format!(
                        "{} maps blocks to build {id}, which is not in {}",
                        a.header_name(),
                        build.storage_root.display()
                    ),
                ));
            }
            continue;
        }
        let df = build.data_file(h, id, a);
        let label = df.label.clone();
        let Some(facts) = df.facts else {
            if df.compression != Compression::None && df.table.is_none() {
                out.push(Finding::new(&NO_FRAME_TABLE, Some(label), "missing".to_string()));
                continue;
            }
            let other = if df.others.is_empty() {
                String::new()
            } else {
                format!(" (present instead: {})", df.others.join(", "))
            };
            let check = if id == build.id { missing_data(a) } else { &ANCESTOR_DATA_MISSING };
            let msg = if id == build.id {
                format!(
                    "{} maps {} of the device to this build, but {label} is missing{other}",
                    a.header_name(),
                    human_bytes(need)
                )
            } else {
                format!(
                    "build {id} is needed for {} of this {} but its {label} is missing{other}",
                    human_bytes(need),
                    a.label()
                )
            };
            out.push(Finding::new(check, Some(label), msg));
            continue;
        };
        if !df.others.is_empty() {
            out.push(Finding::new(
                &data::PLAIN_AND_COMPRESSED,
                Some(label.clone()),
                format!("{label} is read; {} also exists", df.others.join(", ")),
            ));
        }
        if df.compression == Compression::None {
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
            if let Some(size) = df.file_size
                && facts.len != size
            {
                out.extend(data::size_mismatch(&label, facts.len, size));
            }
            continue;
        }
        let Some(table) = df.table.as_ref() else {
            out.push(Finding::new(
                &NO_FRAME_TABLE,
                Some(label.clone()),
                format!(
                    "{label} is {} compressed data, but neither {} nor {id}'s own header has a frame table for it",
                    df.compression.name(),
                    a.header_name()
                ),
            ));
            continue;
        };
        tables.insert(id, (table.clone(), label.clone()));
        if facts.len < table.end_c() {
            out.push(Finding::new(
                &DATA_TOO_SHORT,
                Some(label.clone()),
                format!(
                    "{label} is {} bytes but its frame table reaches byte {} ({} missing)",
                    facts.len,
                    table.end_c(),
                    table.end_c() - facts.len
                ),
            ));
        }
        // Only the data's own table is known to be whole: an ancestor's entry in this header
        // may be trimmed to the frames this build reads (then the own header was not found).
        let whole =
            |t: &crate::header::FrameTable| id == build.id || df.full_table_from_own || df.file_size == Some(t.end_u());
        if let Some(full) = df.full_table.as_ref().filter(|t| t.is_contiguous() && whole(t)) {
            if let Some(size) = df.file_size
                && full.end_u() != size
            {
                out.push(Finding::new(
                    &data::SIZE_MISMATCH,
                    Some(label.clone()),
                    format!(
                        "the frame table covers {} uncompressed bytes but the builds section says {size}",
                        full.end_u()
                    ),
                ));
            }
            if facts.len > full.end_c() {
                out.push(
                    Finding::new(
                        &data::SIZE_MISMATCH,
                        Some(label.clone()),
                        format!(
                            "{label} is {} bytes, {} more than its frames: a stale tail (E2B's Local provider does not truncate on rewrite)",
                            facts.len,
                            facts.len - full.end_c()
                        ),
                    )
                    .severity(Severity::Warning),
                );
            }
        }
        if let Some(size) = df.file_size
            && size < need
        {
            out.push(Finding::new(
                &DATA_TOO_SHORT,
                Some(label.clone()),
                format!("the builds section says {label} holds {size} uncompressed bytes but the mappings read up to byte {need}"),
            ));
        }
        match &df.sidecar {
            None => {}
            Some(Err(e)) => out.push(Finding::new(
                &data::SIDECAR_INVALID,
                Some(format!("{label}{}", crate::vocab::files::SIDECAR_SUFFIX)),
                e.to_string(),
            )),
            Some(Ok(v)) => {
                let expect = df.file_size.or(df.full_table.as_ref().filter(|t| t.is_contiguous()).map(|t| t.end_u()));
                if let Some(e) = expect
                    && *v != e
                {
                    out.push(Finding::new(
                        &data::SIDECAR_MISMATCH,
                        Some(format!("{label}{}", crate::vocab::files::SIDECAR_SUFFIX)),
                        format!("the sidecar says {v} uncompressed bytes, the header {e}"),
                    ));
                } else if *v < need {
                    out.push(Finding::new(
                        &DATA_TOO_SHORT,
                        Some(format!("{label}{}", crate::vocab::files::SIDECAR_SUFFIX)),
                        format!("the sidecar says {v} uncompressed bytes but the mappings read up to byte {need}"),
                    ));
                }
            }
        }
    }
    if missing_builds > MAX_MAPPING_ISSUES {
        out.push(Finding::new(
            &MISSING_BUILD,
            None,
            format!(
                "… and {} more builds the header maps blocks to are not in storage",
                missing_builds - MAX_MAPPING_ISSUES
            ),
        ));
    }
    // Mappings reading compressed bytes no frame covers: one pass over the mappings.
    let mut gaps = 0usize;
    let mut first_label = None;
    for m in &h.mappings {
        let Some((table, label)) = tables.get(&m.build) else { continue };
        if let Some(g) = table.first_gap(m.storage_offset, m.storage_end()) {
            gaps += 1;
            first_label.get_or_insert_with(|| label.clone());
            if gaps <= MAX_MAPPING_ISSUES {
                out.push(Finding::new(
                    &FRAME_TABLE_GAP,
                    Some(label.clone()),
                    format!(
                        "mapping at device offset {} reads uncompressed bytes {}..{} of {label}; byte {g} is in no frame",
                        m.offset,
                        m.storage_offset,
                        m.storage_end()
                    ),
                ));
            }
        }
    }
    if gaps > MAX_MAPPING_ISSUES {
        out.push(Finding::new(
            &FRAME_TABLE_GAP,
            first_label,
            format!("… and {} more mappings outside the frame table", gaps - MAX_MAPPING_ISSUES),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_keeps_the_first_of_each_id_and_counts_the_rest() {
        let mut v: Vec<Finding> = (0..30).map(|i| Finding::new(&MISSING_BUILD, None, format!("b{i}"))).collect();
        v.push(Finding::new(&DATA_TOO_SHORT, None, "short"));
        let c = collapse(v, 3);
        let msgs: Vec<&str> = c.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(msgs, ["b0", "b1", "b2", "short", "… and 27 more like the above"]);
        assert_eq!(c[4].id, MISSING_BUILD.id);
    }
}
