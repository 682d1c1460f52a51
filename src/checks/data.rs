//! Data-file findings: sizes against the headers and the Local provider's size sidecar
//! (metadata only, every `verify`), and what `verify --deep` finds when it streams the files:
//! SHA-256 and length against the V4/V5 builds section, and every compressed frame
//! (reference: e2b-formats.md §7).

use crate::report::{Check, Finding, Severity};

pub const SIZE_MISMATCH: Check = Check {
    id: "data.size-mismatch",
    severity: Severity::Error,
    title: "a data file's size differs from the size its header records",
    hint: "shorter: the file was truncated; longer: a stale tail from a rewrite. Restore it from the source storage",
};
pub const PLAIN_AND_COMPRESSED: Check = Check {
    id: "data.plain-and-compressed",
    severity: Severity::Warning,
    title: "both a plain and a compressed data file exist for one build",
    hint: "E2B writes one or the other; the header decides which is read, the other is left over from a copy",
};
pub const SIDECAR_INVALID: Check = Check {
    id: "data.sidecar-invalid",
    severity: Severity::Error,
    title: "the .uncompressed-size sidecar is not a decimal size",
    hint: "E2B's Local provider then reports the compressed size as the object size; rewrite the sidecar with the uncompressed size",
};
pub const SIDECAR_MISMATCH: Check = Check {
    id: "data.sidecar-mismatch",
    severity: Severity::Error,
    title: "the .uncompressed-size sidecar disagrees with the header",
    hint: "the sidecar belongs to another upload of the file; rewrite it with the header's size",
};
pub const CHECKSUM_MISMATCH: Check = Check {
    id: "data.checksum-mismatch",
    severity: Severity::Error,
    title: "a data file's SHA-256 differs from the one in its header",
    hint: "bytes changed after upload (disk or copy corruption); restore the file from the source storage",
};
pub const LENGTH_MISMATCH: Check = Check {
    id: "data.length-mismatch",
    severity: Severity::Error,
    title: "a data file holds a different number of bytes than its header (or sidecar) says",
    hint: "the file was truncated or extended after upload; restore it from the source storage",
};
pub const FRAME_CORRUPT: Check = Check {
    id: "data.frame-corrupt",
    severity: Severity::Error,
    title: "a compressed frame does not decompress",
    hint: "the compressed file is damaged or its frame table does not match it; restore both from the source storage",
};
pub const FRAME_CHECKSUM: Check = Check {
    id: "data.frame-checksum",
    severity: Severity::Error,
    title: "a compressed frame fails its own checksum (zstd content checksum, LZ4 block checksum)",
    hint: "bytes of the compressed file changed after upload; restore it from the source storage",
};
pub const FRAME_SIZE: Check = Check {
    id: "data.frame-size",
    severity: Severity::Error,
    title: "a compressed frame decompresses to a different size than its frame table says",
    hint: "the frame table belongs to another version of the file; restore the file and its header together",
};
pub const READ_ERROR: Check = Check {
    id: "data.read-error",
    severity: Severity::Error,
    title: "a data file could not be read to its end",
    hint: "an I/O error (failing disk, permissions): check the storage",
};
pub const NO_CHECKSUM: Check = Check {
    id: "data.no-checksum",
    severity: Severity::Info,
    title: "no SHA-256 is recorded for a data file: only its length and frames were checked",
    hint: "V1–V3 headers hold no checksums, and E2B records none for uncompressed Local uploads",
};
pub const PARTIAL_FRAME_TABLE: Check = Check {
    id: "data.partial-frame-table",
    severity: Severity::Info,
    title: "only a trimmed frame table is known: the file was decoded as a stream of frames",
    hint: "the data's own header (with the full table) is missing; copy it from the source storage",
};

pub const CHECKS: &[&Check] = &[
    &SIZE_MISMATCH,
    &PLAIN_AND_COMPRESSED,
    &SIDECAR_INVALID,
    &SIDECAR_MISMATCH,
    &CHECKSUM_MISMATCH,
    &LENGTH_MISMATCH,
    &FRAME_CORRUPT,
    &FRAME_CHECKSUM,
    &FRAME_SIZE,
    &READ_ERROR,
    &NO_CHECKSUM,
    &PARTIAL_FRAME_TABLE,
];

/// A plain data file whose length differs from the builds section's size: shorter is an error,
/// longer a warning (a stale tail: E2B's Local provider rewrites without truncating).
pub fn size_mismatch(label: &str, len: u64, size: u64) -> Option<Finding> {
    if len < size {
        Some(Finding::new(
            &SIZE_MISMATCH,
            Some(label.to_string()),
            format!("{label} is {len} bytes but the builds section says {size} ({} missing)", size - len),
        ))
    } else if len > size {
        Some(
            Finding::new(
                &SIZE_MISMATCH,
                Some(label.to_string()),
                format!("{label} is {len} bytes, {} more than the builds section's {size}: a stale tail", len - size),
            )
            .severity(Severity::Warning),
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_file_is_an_error_a_long_one_a_warning_an_exact_one_nothing() {
        let short = size_mismatch("rootfs.ext4.zstd", 100, 4096).expect("shorter is reported");
        assert_eq!((short.id.as_str(), short.severity), ("data.size-mismatch", Severity::Error));
        assert!(short.message.contains("3996 missing"), "{}", short.message);
        let long = size_mismatch("memfile", 8192, 4096).expect("longer is reported");
        assert_eq!(long.severity, Severity::Warning);
        assert!(long.message.contains("stale tail"), "{}", long.message);
        assert!(size_mismatch("memfile", 4096, 4096).is_none());
    }
}
