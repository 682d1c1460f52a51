//! Firecracker's snapshot-load errors, every wording from v1.7.0 to v1.16.1, each mapped to the
//! snapfile finding that confirms it offline.
//!
//! Where the wordings come from (all `firecracker-microvm/firecracker`, by tag; the Display texts
//! are the `///` doc comments of `displaydoc` enums):
//! * `src/vmm/src/snapshot/mod.rs`, enum `Error` (v1.7) / `SnapshotError` (v1.8+): the variants
//!   were identical from v1.7.0 to v1.13.2, changed at v1.14.0 (bincode decode/encode, `IO Error`,
//!   CRC without a number), at v1.15.0 (bitcode, size limit) and at v1.16.0 ("occurred").
//! * `src/vmm/src/persist.rs`: `SnapshotStateFromFileError` ("Failed to load snapshot state from
//!   file", "Failed to open snapshot file", "Failed to read snapshot file metadata" until v1.13,
//!   "Unknown Network Device." from v1.12, "Unknown Vsock Device." from v1.16),
//!   `RestoreFromSnapshotError` ("Failed to get snapshot state from file", "Invalid snapshot
//!   state"), `SnapShotStateSanityCheckError` (the "DRAM" texts from v1.14);
//!   `src/vmm/src/rpc_interface.rs`: "Load snapshot error", "Failed to restore from snapshot".
//! * The text after "serialization/deserialization:" is the decoder's own: bincode 1.3.3's
//!   `ErrorKind` Display (v1.7–v1.11: "io error: failed to fill whole buffer", "tag for enum is
//!   not valid, found N", ...), bincode 2.0.1's `DecodeError`, whose Display is its Debug form
//!   (v1.12–v1.14: `Io { inner: ..., additional: 8 }`, `UnexpectedVariant { ... found: 97 }`,
//!   `OtherString("...")`), bitcode 0.6.9's `Error`, which a release build prints as "bitcode
//!   error" (a debug build prints the reason: "Expected EOF", "EOF", ...), and semver 1.0's
//!   parse errors for the header's version string ("empty string, expected a semver version").

use std::sync::LazyLock;

use regex::Regex;

use super::{Explanation, ex, explain_crc, explain_magic, explain_version, re};

/// One wording: which releases print it, where it is defined, and how to recognise it.
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    pub id: &'static str,
    /// Firecracker releases whose `PUT /snapshot/load` prints it.
    pub releases: &'static str,
    /// Tag and file that define the text.
    pub source: &'static str,
    /// A regex matching the text (capture groups are read by [`explain`]).
    pub pattern: &'static str,
}

/// Every wording, most specific first. The first that matches a line explains it.
pub const WORDINGS: &[Wording] = &[
    Wording {
        id: "crc-debug",
        releases: "v1.0–v1.1",
        source: "v1.0.0:src/snapshot/src/lib.rs (Error::Crc64, no Display)",
        pattern: r"\bCrc64\((0x[0-9a-fA-F]+|\d+)\)",
    },
    Wording {
        id: "crc-number",
        releases: "v1.2–v1.13",
        source: "v1.7.0…v1.13.2:src/vmm/src/snapshot/mod.rs (SnapshotError::Crc64(u64))",
        pattern: r"CRC64 validation failed:\s*(\d+)",
    },
    Wording {
        id: "crc",
        releases: "v1.14–v1.16",
        source: "v1.14.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::Crc64)",
        pattern: r"CRC64 validation failed",
    },
    Wording {
        id: "magic",
        releases: "v1.7–v1.16",
        source: "v1.7.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::InvalidMagic)",
        pattern: r"Magic value does not match arch(?::\s*(\d+))?",
    },
    Wording {
        id: "version",
        releases: "v1.7–v1.16",
        source: "v1.7.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::InvalidFormatVersion)",
        pattern: r"Invalid (?:data|format) version(?::\s*v?([0-9]+(?:\.[0-9]+){0,2}))?",
    },
    Wording {
        id: "smaller-than-crc",
        releases: "v1.7–v1.13",
        source: "v1.7.0…v1.13.2:src/vmm/src/snapshot/mod.rs (SnapshotError::InvalidSnapshotSize)",
        pattern: r"Snapshot file is smaller than CRC length",
    },
    Wording {
        id: "too-short-for-crc",
        releases: "v1.15–v1.16",
        source: "v1.15.0…v1.16.1:src/vmm/src/snapshot/mod.rs (Snapshot::load: IO Error \"File too short to contain CRC\")",
        pattern: r"File too short to contain CRC",
    },
    Wording {
        id: "size-limit",
        releases: "v1.15–v1.16",
        source: "v1.15.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::SizeLimitExceeded)",
        pattern: r"Snapshot size exceeds limit of (\d+) bytes",
    },
    Wording {
        id: "serde",
        releases: "v1.7–v1.13",
        source: "v1.7.0…v1.13.2:src/vmm/src/snapshot/mod.rs (SnapshotError::Serde)",
        pattern: r"(?:An error occured with )?serialization/deserialization:\s*(.*)$",
    },
    Wording {
        id: "bincode-decode",
        releases: "v1.14",
        source: "v1.14.0…v1.14.4:src/vmm/src/snapshot/mod.rs (SnapshotError::Decode)",
        pattern: r"An error occured during bincode decoding:\s*(.*)$",
    },
    Wording {
        id: "bitcode-v1.15",
        releases: "v1.15",
        source: "v1.15.0…v1.15.1:src/vmm/src/snapshot/mod.rs (SnapshotError::Bitcode)",
        pattern: r"An error occured during bitcode serialization:\s*(.*)$",
    },
    Wording {
        id: "bitcode-v1.16",
        releases: "v1.16",
        source: "v1.16.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::Bitcode)",
        pattern: r"An error occurred during bitcode serialization:\s*(.*)$",
    },
    Wording {
        id: "io-errno",
        releases: "v1.7–v1.13",
        source: "v1.7.0…v1.13.2:src/vmm/src/snapshot/mod.rs (SnapshotError::Io(i32))",
        pattern: r"An IO error occurred:\s*(-?\d+)",
    },
    Wording {
        id: "open",
        releases: "v1.7–v1.16",
        source: "v1.7.0…v1.16.1:src/vmm/src/persist.rs (SnapshotStateFromFileError::Open)",
        pattern: r"Failed to open snapshot file:\s*(.*)$",
    },
    Wording {
        id: "meta",
        releases: "v1.7–v1.13",
        source: "v1.7.0…v1.13.2:src/vmm/src/persist.rs (SnapshotStateFromFileError::Meta)",
        pattern: r"Failed to read snapshot file metadata:\s*(.*)$",
    },
    Wording {
        id: "io",
        releases: "v1.14–v1.16",
        source: "v1.14.0…v1.16.1:src/vmm/src/snapshot/mod.rs (SnapshotError::Io)",
        pattern: r"Failed to load snapshot state from file: IO Error:\s*(.*)$",
    },
    Wording {
        id: "unknown-net",
        releases: "v1.12–v1.16",
        source: "v1.12.0…v1.16.1:src/vmm/src/persist.rs (SnapshotStateFromFileError::UnknownNetworkDevice)",
        pattern: r"Unknown Network Device\.",
    },
    Wording {
        id: "unknown-vsock",
        releases: "v1.16",
        source: "v1.16.0…v1.16.1:src/vmm/src/persist.rs (SnapshotStateFromFileError::UnknownVsockDevice)",
        pattern: r"Unknown Vsock Device\.",
    },
    Wording {
        id: "no-memory",
        releases: "v1.7–v1.16",
        source: "v1.7.0…v1.16.1:src/vmm/src/persist.rs (SnapShotStateSanityCheckError::NoMemory)",
        pattern: r"No memory region defined",
    },
    Wording {
        id: "dram",
        releases: "v1.14–v1.16",
        source: "v1.14.0…v1.16.1:src/vmm/src/persist.rs (SnapShotStateSanityCheckError::{NoDramMemory, DramMemoryTooManySlots, DramMemoryUnplugged})",
        pattern: r"(No DRAM memory region defined|DRAM memory has more than a single slot|DRAM memory is unplugged)",
    },
    Wording {
        id: "deserialize-old",
        releases: "v1.0–v1.6",
        source: "v1.0.0…v1.6.0:src/vmm/src/persist.rs (Cannot deserialize the microVM state)",
        pattern: r"Cannot deserialize the microVM state:?\s*(.*)$",
    },
];

static COMPILED: LazyLock<Vec<(Wording, Regex)>> =
    LazyLock::new(|| WORDINGS.iter().map(|w| (*w, re(w.pattern))).collect());

/// What a decoder's message says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// The state ended before the decoder was done.
    Short,
    /// The header's version string is not a version (a zeroed or foreign file).
    Header,
    /// bitcode found bytes after the state.
    Trailing,
    /// bitcode's release-build message: no reason given.
    Opaque,
    /// Anything else: a value the decoder did not expect at that place.
    Other,
}

static SEMVER: LazyLock<Regex> =
    LazyLock::new(|| re(r"semver version|version number|pre-release identifier|build metadata|exceeds u64::MAX"));

fn classify(msg: &str) -> Decode {
    let m = msg.trim();
    if m.contains("Expected EOF") {
        Decode::Trailing
    } else if m.contains("failed to fill whole buffer")
        || m.contains("UnexpectedEof")
        || m.contains("UnexpectedEnd")
        || m.contains("unexpected end of file")
        || m == "EOF"
    {
        Decode::Short
    } else if SEMVER.is_match(m) {
        Decode::Header
    } else if m == "bitcode error" || m.is_empty() {
        Decode::Opaque
    } else {
        Decode::Other
    }
}

/// Which decoder printed `msg` under a "serialization/deserialization" error.
fn serde_flavour(msg: &str) -> &'static str {
    let debug_form = [
        "Io {",
        "UnexpectedEnd",
        "UnexpectedVariant",
        "OtherString(",
        "InvalidBooleanValue",
        "Utf8 {",
        "LimitExceeded",
    ];
    if debug_form.iter().any(|d| msg.contains(d)) {
        "bincode 2's Debug form: Firecracker v1.12–v1.13 (E2B's v1.12.1 build)"
    } else {
        "bincode 1: Firecracker v1.7–v1.11 (E2B's v1.10.1 build)"
    }
}

/// Explain a snapshot-load error line; `None` when it is not one.
pub fn explain(line: usize, text: &str) -> Option<Explanation> {
    let (w, caps) = COMPILED.iter().find_map(|(w, r)| r.captures(text).map(|c| (w, c)))?;
    let cap = |i: usize| caps.get(i).map(|m| m.as_str());
    let e = match w.id {
        "crc-debug" => {
            let v = cap(1).unwrap_or("");
            let value = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            };
            explain_crc(line, text, value, true)
        }
        "crc-number" => explain_crc(line, text, cap(1).and_then(|v| v.parse().ok()), false),
        "crc" => explain_crc(line, text, None, false),
        "magic" => explain_magic(line, text, cap(1).and_then(|v| v.parse().ok())),
        "version" => explain_version(line, text, cap(1)),
        "smaller-than-crc" | "too-short-for-crc" => ex(
            line,
            text,
            &super::rule::SNAPFILE_TOO_SHORT,
            "the snapfile is shorter than 8 bytes".into(),
            "an empty or cut snapfile (interrupted copy or upload); restore it".into(),
        )
        .fatal(),
        "size-limit" => ex(
            line,
            text,
            &super::rule::SNAPFILE_TOO_LARGE,
            format!("the snapfile is larger than Firecracker's {} byte state limit", cap(1).unwrap_or("10000000")),
            "junk was appended to the snapfile, or it is not a snapfile".into(),
        )
        .fatal(),
        "serde" | "bincode-decode" | "bitcode-v1.15" | "bitcode-v1.16" | "deserialize-old" => {
            decode_error(line, text, w.id, cap(1).unwrap_or(""))
        }
        "io-errno" => {
            let n: i64 = cap(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            let (name, what) = super::errno_name(u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX));
            ex(
                line,
                text,
                &super::rule::SNAPFILE_IO,
                format!("reading the snapfile failed: errno {n} = {name} ({what})"),
                "Firecracker reads the file to the length it stat'ed; EINVAL (22) here means the read ended early: \
                 the file shrank while it was read (a copy still being written) or the disk failed"
                    .into(),
            )
            .fatal()
        }
        "open" => ex(
            line,
            text,
            &super::rule::SNAPFILE_OPEN,
            format!("Firecracker could not open the snapfile: {}", cap(1).unwrap_or("").trim()),
            "the snapfile does not exist where the orchestrator points Firecracker (the build's files were not \
             fetched or cached), or it is not readable"
                .into(),
        )
        .fatal(),
        "meta" | "io" => ex(
            line,
            text,
            &super::rule::SNAPFILE_IO,
            format!("reading the snapfile failed: {}", cap(1).unwrap_or("").trim()),
            "an I/O error on the node's copy of the snapfile: permissions, a failing disk, or a file that changed \
             while it was read"
                .into(),
        )
        .fatal(),
        "unknown-net" | "unknown-vsock" => ex(
            line,
            text,
            &super::rule::SNAPSHOT_DEVICE_OVERRIDE,
            format!(
                "the load request overrides a {} device that the snapshot does not have",
                if w.id == "unknown-net" { "network" } else { "vsock" }
            ),
            "the orchestrator's network_overrides/vsock_override name an interface id the VM was not built with: \
             the template was built with another network setup than this node uses; the snapfile itself is fine"
                .into(),
        )
        .fatal(),
        "no-memory" | "dram" => ex(
            line,
            text,
            &super::rule::SNAPFILE_MEMORY_REGIONS,
            format!(
                "the snapshot state fails Firecracker's sanity check: {}",
                cap(1).unwrap_or("No memory region defined")
            ),
            "the state does not describe a VM's memory the way Firecracker writes it for a running VM: a default or \
             hand-made state (it decodes, but cannot be restored)"
                .into(),
        )
        .fatal(),
        _ => return None,
    };
    Some(e.detail(format!("wording of Firecracker {} ({})", w.releases, w.source)))
}

fn decode_error(line: usize, text: &str, id: &str, inner: &str) -> Explanation {
    let kind = classify(inner);
    let bitcode = id.starts_with("bitcode");
    let (key, meaning, cause) = match (kind, id) {
        (Decode::Trailing, _) => (
            &super::rule::SNAPFILE_BITCODE,
            "bitcode found bytes after the end of the state".to_string(),
            "the snapfile was padded or had bytes appended after Firecracker wrote it (a copy or pre-allocation): \
             Firecracker v1.15+ refuses any byte after the state; truncate the file to its real length"
                .to_string(),
        ),
        (Decode::Header, "bitcode-v1.15" | "bitcode-v1.16") => (
            &super::rule::SNAPFILE_BITCODE,
            "the snapfile's header does not decode as bitcode: it is not a v1.15+ snapfile".to_string(),
            "a bincode snapfile written by Firecracker v1.7–v1.14 (v1.15+ cannot read them), or a zeroed or foreign \
             file; compare the snapfile's version with metadata.json's firecracker_version"
                .to_string(),
        ),
        (Decode::Short, "bitcode-v1.15" | "bitcode-v1.16") => (
            &super::rule::SNAPFILE_BITCODE,
            "the bitcode state ended before Firecracker had decoded all of it".to_string(),
            "the snapfile was cut short (v1.15+ decode before they check the CRC), or it was written by the other \
             bitcode release (v1.15 and v1.16 lay the state out differently)"
                .to_string(),
        ),
        (Decode::Header, _) => (
            &super::rule::SNAPFILE_DECODE_HEADER,
            "the snapfile's header does not decode: its version string is not a version".to_string(),
            "the file is not a Firecracker snapshot: all zeros (a placeholder, which even passes the CRC check), \
             zero-filled by a failed copy, or a foreign file. Restore the snapfile from the source storage"
                .to_string(),
        ),
        (_, "bitcode-v1.15" | "bitcode-v1.16") => (
            &super::rule::SNAPFILE_BITCODE,
            "Firecracker (v1.15+) could not decode the bitcode state in the snapfile".to_string(),
            "a release build says only \"bitcode error\". In order of likelihood: bytes after the state (the file \
             was zero-padded by a copy: v1.15+ refuse trailing bytes, while v1.7–v1.14 ignored them), a snapfile \
             from another Firecracker release (v1.15 and v1.16 cannot read each other's or any bincode snapfile), \
             or damaged bytes (v1.15+ decode before they check the CRC)"
                .to_string(),
        ),
        (Decode::Short, _) => (
            &super::rule::SNAPFILE_DECODE_SHORT,
            "the VM state in the snapfile ended before Firecracker had decoded all of it".to_string(),
            if id == "bincode-decode" {
                "the state is laid out for another Firecracker release (v1.14 checks the header version first, so \
                 this is an 8.0.0 snapshot from v1.13, whose layout differs), or the file was cut short (v1.14 \
                 checks the CRC only after decoding)"
                    .to_string()
            } else {
                "the CRC was correct (it is checked first in v1.7–v1.13), so the bytes are as written: the state was \
                 written by another Firecracker release whose state is shorter, or by a tool that wrote only part of \
                 a state (a hand-made snapfile)"
                    .to_string()
            },
        ),
        _ => (
            &super::rule::SNAPFILE_DECODE,
            "Firecracker could not decode the VM state in the snapfile".to_string(),
            if id == "deserialize-old" {
                "the snapfile is not in a format this old Firecracker (≤ v1.6) reads: a newer snapshot, or a damaged file"
                    .to_string()
            } else {
                "the state is laid out for another Firecracker release (a decode error, not a version error, is the \
                 usual symptom in v1.7–v1.13, which decode the state before they compare versions), or it was not \
                 written by Firecracker at all"
                    .to_string()
            },
        ),
    };
    let mut e = ex(line, text, key, meaning, cause).fatal();
    if id == "serde" && !inner.is_empty() {
        e = e.detail(format!("decoder message \"{}\" is {}", inner.trim(), serde_flavour(inner)));
    } else if bitcode && kind == Decode::Opaque {
        e = e.detail("\"bitcode error\" is all a release build of bitcode says; tmpl verify tells the causes apart");
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One real-looking line per wording and Firecracker release, as `PUT /snapshot/load` returns
    /// it (E2B's orchestrator prefixes "error loading snapshot: "). The inner decoder messages of
    /// the v1.10.1, v1.12.1, v1.14.1 and v1.16.1 lines were printed by those releases' own load
    /// path on the file named in the comment; the others are the same texts under the prefix of
    /// the release that prints them.
    const GET: &str = "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: ";
    const LOAD: &str = "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: ";

    fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
        // (release, line, expected rule, expected finding among the rule's)
        let mut v: Vec<(&'static str, String, &'static str, &'static str)> = Vec::new();
        let bincode1 = ["v1.7.0", "v1.8.0", "v1.9.0", "v1.9.1", "v1.10.0", "v1.10.1", "v1.11.0"];
        let bincode2 = ["v1.12.0", "v1.12.1", "v1.13.0", "v1.13.1", "v1.13.2"];
        for r in bincode1.iter().chain(bincode2.iter()) {
            v.push((
                r,
                format!("{LOAD}CRC64 validation failed: 14172926256603030733"),
                "snapfile.crc",
                "snapfile.crc-mismatch",
            ));
            v.push((r, format!("{LOAD}Magic value does not match arch: 0"), "snapfile.magic", "snapfile.bad-magic"));
            v.push((r, format!("{LOAD}Invalid data version: 6.0.0"), "snapfile.version", "snapfile.version-mismatch"));
            v.push((
                r,
                format!("{LOAD}Snapshot file is smaller than CRC length."),
                "snapfile.too-short",
                "snapfile.too-short",
            ));
            v.push((r, format!("{LOAD}An IO error occurred: 22"), "snapfile.io", "snapfile.unreadable"));
            v.push((
                r,
                format!("{GET}Failed to open snapshot file: No such file or directory (os error 2)"),
                "snapfile.open",
                "snapfile.missing",
            ));
            v.push((
                r,
                format!("{GET}Failed to read snapshot file metadata: Permission denied (os error 13)"),
                "snapfile.io",
                "snapfile.unreadable",
            ));
            v.push((r, "Load snapshot error: Failed to restore from snapshot: Invalid snapshot state: No memory region defined.".to_string(), "snapfile.memory-regions", "snapfile.memory-regions"));
        }
        for r in bincode1 {
            // v1.10.1 on the v1.12.1 fixture's state / a truncated state / an all-zero file.
            v.push((
                r,
                format!(
                    "{LOAD}An error occured with serialization/deserialization: io error: failed to fill whole buffer"
                ),
                "snapfile.decode-short",
                "snapfile.version-mismatch",
            ));
            v.push((
                r,
                format!(
                    "{LOAD}An error occured with serialization/deserialization: empty string, expected a semver version"
                ),
                "snapfile.decode-header",
                "snapfile.bad-magic",
            ));
            v.push((
                r,
                format!(
                    "{LOAD}An error occured with serialization/deserialization: tag for enum is not valid, found 97"
                ),
                "snapfile.decode",
                "snapfile.version-mismatch",
            ));
            v.push((r, format!("{LOAD}An error occured with serialization/deserialization: invalid value: integer `97`, expected variant index 0 <= i < 6"), "snapfile.decode", "snapfile.version-mismatch"));
            v.push((r, format!("{LOAD}An error occured with serialization/deserialization: invalid u8 while decoding bool, expected 0 or 1, found 2"), "snapfile.decode", "snapfile.version-mismatch"));
            v.push((
                r,
                format!("{LOAD}An error occured with serialization/deserialization: the size limit has been reached"),
                "snapfile.decode",
                "snapfile.version-mismatch",
            ));
        }
        for r in bincode2 {
            v.push((r, format!("{LOAD}An error occured with serialization/deserialization: Io {{ inner: Error {{ kind: UnexpectedEof, message: \"failed to fill whole buffer\" }}, additional: 8 }}"), "snapfile.decode-short", "snapfile.version-mismatch"));
            v.push((r, format!("{LOAD}An error occured with serialization/deserialization: OtherString(\"empty string, expected a semver version\")"), "snapfile.decode-header", "snapfile.bad-magic"));
            v.push((r, format!("{LOAD}An error occured with serialization/deserialization: UnexpectedVariant {{ type_name: \"Option<T>\", allowed: Range {{ min: 0, max: 1 }}, found: 97 }}"), "snapfile.decode", "snapfile.version-mismatch"));
            v.push((
                r,
                format!("{LOAD}An error occured with serialization/deserialization: LimitExceeded"),
                "snapfile.decode",
                "snapfile.version-mismatch",
            ));
            v.push((r, format!("{GET}Unknown Network Device."), "snapshot.device-override", ""));
        }
        for r in ["v1.14.0", "v1.14.1", "v1.14.2", "v1.14.3", "v1.14.4"] {
            v.push((
                r,
                format!("{LOAD}An error occured during bincode decoding: UnexpectedEnd {{ additional: 3 }}"),
                "snapfile.decode-short",
                "snapfile.too-short",
            ));
            v.push((
                r,
                format!("{LOAD}An error occured during bincode decoding: LimitExceeded"),
                "snapfile.decode",
                "snapfile.version-mismatch",
            ));
            v.push((r, format!("{LOAD}CRC64 validation failed"), "snapfile.crc", "snapfile.crc-mismatch"));
            v.push((r, format!("{LOAD}Magic value does not match arch: 0"), "snapfile.magic", "snapfile.crc-zero"));
            v.push((r, format!("{LOAD}Invalid data version: 6.0.0"), "snapfile.version", "snapfile.version-mismatch"));
            v.push((
                r,
                format!("{LOAD}An error occured during bincode decoding: UnexpectedEnd {{ additional: 8 }}"),
                "snapfile.decode-short",
                "snapfile.version-mismatch",
            ));
            v.push((r, format!("{LOAD}An error occured during bincode decoding: UnexpectedVariant {{ type_name: \"Option<T>\", allowed: Range {{ min: 0, max: 1 }}, found: 97 }}"), "snapfile.decode", "snapfile.version-mismatch"));
            v.push((r, format!("{LOAD}An error occured during bincode decoding: OtherString(\"empty string, expected a semver version\")"), "snapfile.decode-header", "snapfile.bad-magic"));
            v.push((
                r,
                format!("{LOAD}IO Error: Permission denied (os error 13)"),
                "snapfile.io",
                "snapfile.unreadable",
            ));
            v.push((r, "Load snapshot error: Failed to restore from snapshot: Invalid snapshot state: DRAM memory is unplugged.".to_string(), "snapfile.memory-regions", "snapfile.memory-regions"));
        }
        for (r, word) in
            [("v1.15.0", "occured"), ("v1.15.1", "occured"), ("v1.16.0", "occurred"), ("v1.16.1", "occurred")]
        {
            v.push((
                r,
                format!("{LOAD}An error {word} during bitcode serialization: bitcode error"),
                "snapfile.bitcode",
                "snapfile.trailing-bytes",
            ));
            v.push((
                r,
                format!("{LOAD}An error {word} during bitcode serialization: Expected EOF"),
                "snapfile.bitcode",
                "snapfile.trailing-bytes",
            ));
            // Debug builds of Firecracker print bitcode's reason (these three from v1.16.1's own load
            // path on a padded file, a truncated one and a v1.12.1 snapfile).
            v.push((
                r,
                format!("{LOAD}An error {word} during bitcode serialization: empty string, expected a semver version"),
                "snapfile.bitcode",
                "snapfile.version-mismatch",
            ));
            v.push((
                r,
                format!("{LOAD}An error {word} during bitcode serialization: EOF"),
                "snapfile.bitcode",
                "snapfile.crc-mismatch",
            ));
            v.push((
                r,
                format!("{LOAD}IO Error: File too short to contain CRC"),
                "snapfile.too-short",
                "snapfile.too-short",
            ));
            v.push((
                r,
                format!("{LOAD}Snapshot size exceeds limit of 10000000 bytes"),
                "snapfile.too-large",
                "snapfile.too-large",
            ));
            v.push((r, format!("{LOAD}CRC64 validation failed"), "snapfile.crc", "snapfile.crc-mismatch"));
            v.push((
                r,
                format!("{LOAD}Magic value does not match arch: 508934815482511360"),
                "snapfile.magic",
                "snapfile.foreign-arch",
            ));
            v.push((r, format!("{LOAD}Invalid data version: 9.0.0"), "snapfile.version", "snapfile.version-mismatch"));
            v.push((r, "Load snapshot error: Failed to restore from snapshot: Invalid snapshot state: No DRAM memory region defined.".to_string(), "snapfile.memory-regions", "snapfile.memory-regions"));
        }
        for r in ["v1.14.0", "v1.14.4", "v1.15.0", "v1.15.1", "v1.16.0", "v1.16.1"] {
            v.push((r, format!("{GET}Unknown Network Device."), "snapshot.device-override", ""));
            v.push((
                r,
                format!("{GET}Failed to open snapshot file: No such file or directory (os error 2)"),
                "snapfile.open",
                "snapfile.missing",
            ));
        }
        for r in ["v1.16.0", "v1.16.1"] {
            v.push((r, format!("{GET}Unknown Vsock Device."), "snapshot.device-override", ""));
        }
        v
    }

    #[test]
    fn every_wording_of_every_release_is_recognised_and_mapped() {
        let mut used: Vec<&str> = Vec::new();
        for (release, line, rule, finding) in cases() {
            let d = super::super::explain(&format!("error loading snapshot: {line}"));
            assert_eq!(d.explanations.len(), 1, "{release}: {line}: {:#?}", d.explanations);
            let e = &d.explanations[0];
            assert_eq!(e.rule, rule, "{release}: {line}");
            assert!(e.fatal, "{release}: {line}");
            if !finding.is_empty() {
                assert!(e.findings.contains(&finding), "{release}: {line}: {:?}", e.findings);
            }
            let w = e.details.iter().find(|d| d.starts_with("wording of Firecracker")).expect("release detail");
            let id = COMPILED.iter().find(|(_, r)| r.is_match(&line)).unwrap().0.id;
            used.push(id);
            // The wording's release range covers the release the line came from.
            let minor: u32 = release.split('.').nth(1).unwrap().parse().unwrap();
            let range = WORDINGS.iter().find(|x| x.id == id).unwrap().releases;
            let bounds: Vec<u32> =
                range.split(['–', ' ']).filter_map(|p| p.strip_prefix("v1.").and_then(|m| m.parse().ok())).collect();
            let (lo, hi) = (bounds[0], *bounds.last().unwrap());
            assert!((lo..=hi).contains(&minor), "{release} not in {range} for {line} ({w})");
        }
        for w in WORDINGS {
            assert!(
                used.contains(&w.id) || w.id.ends_with("-old") || w.id == "crc-debug",
                "no test line for wording {}",
                w.id
            );
        }
    }

    #[test]
    fn the_issue_examples() {
        let d = super::super::explain(
            "Failed to load snapshot state from file: An error occured with serialization/deserialization: Io { inner: Error { kind: UnexpectedEof, message: \"failed to fill whole buffer\" }, additional: 8 }",
        );
        assert_eq!(d.explanations[0].rule, "snapfile.decode-short");
        assert!(d.explanations[0].details.iter().any(|x| x.contains("v1.12–v1.13")), "{:?}", d.explanations[0].details);
        let d = super::super::explain("… serialization/deserialization: empty string, expected a semver version");
        assert_eq!(d.explanations.len(), 1);
        assert_eq!(d.explanations[0].rule, "snapfile.decode-header", "blamed on the snapfile, not metadata");
        assert!(d.explanations[0].findings.contains(&"snapfile.bad-magic"));
        // Outside a snapshot error the same semver text is still about metadata.
        assert_eq!(
            super::super::explain("error: empty string, expected a semver version").explanations[0].rule,
            "metadata.semver"
        );
    }

    #[test]
    fn decoder_messages_are_classified() {
        assert_eq!(classify("io error: failed to fill whole buffer"), Decode::Short);
        assert_eq!(classify("UnexpectedEnd { additional: 3 }"), Decode::Short);
        assert_eq!(classify("EOF"), Decode::Short);
        assert_eq!(classify("Expected EOF"), Decode::Trailing);
        assert_eq!(
            classify("OtherString(\"unexpected character 'x' while parsing major version number\")"),
            Decode::Header
        );
        assert_eq!(classify("bitcode error"), Decode::Opaque);
        assert_eq!(classify("tag for enum is not valid, found 3"), Decode::Other);
    }
}
