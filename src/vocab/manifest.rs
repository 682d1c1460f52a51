//! `tmpl-manifest.json`, written beside a build that tmpl edited: what was injected (each file's
//! path, kind, size, mode, owner and SHA-256), with which envd, mode and backend, when and by
//! which tmpl. `tmpl verify` compares the rootfs against it and reports drift (a hand edit after
//! tmpl's). E2B ignores files it does not know in a build folder. The editor writes it; the checks
//! read it.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use super::files::MANIFEST as FILE;

/// Files up to this size are compared by SHA-256 on every verify; larger ones (envd) by size,
/// mode and owner, so that `verify --all` stays fast.
pub const HASH_ON_VERIFY: u64 = 1024 * 1024;
/// A manifest is a few KiB; anything bigger is not one of ours.
const MANIFEST_CAP: u64 = 16 * 1024 * 1024;

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Read(#[from] super::SmallFileError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    /// `regular` or `symlink`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub len: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEnvd {
    pub path: String,
    pub sha256: String,
    pub len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub written_by: String,
    pub written_at: String,
    pub build_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd: Option<ManifestEnvd>,
    pub files: Vec<ManifestFile>,
}

/// Read a build's manifest: `Ok(None)` when there is none.
pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    match super::read_small(&dir.join(FILE), MANIFEST_CAP)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
    }
}

/// The current time as RFC 3339 UTC (`2026-11-22T21:50:00Z`), from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
pub fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1_795_391_999), "2026-11-22T23:59:59Z");
    }
}
