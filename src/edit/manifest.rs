//! Writing `tmpl-manifest.json` (its format is [`crate::vocab::manifest`]): the record of what an
//! edit wrote, made from the plan and its verification.

use std::path::Path;

use super::apply::Verification;
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::vocab::BuildId;
pub use crate::vocab::manifest::{FILE, Manifest, ManifestEnvd, ManifestFile, format_utc, utc_now};

/// The manifest of an edit of `build` (a fork of `forked_from`) that applied `plan`.
pub fn record(build: BuildId, forked_from: Option<BuildId>, plan: &Plan, v: &Verification) -> Manifest {
    Manifest {
        format_version: 1,
        written_by: format!("tmpl {}", env!("CARGO_PKG_VERSION")),
        written_at: utc_now(),
        build_id: build.to_string(),
        forked_from: forked_from.map(|b| b.to_string()),
        mode: plan.mode.map(|m| format!("{m:?}").to_lowercase()),
        backend: format!("{:?}", plan.backend).to_lowercase(),
        envd: plan.envd.as_ref().map(|e| ManifestEnvd {
            path: plan.envd_path.clone(),
            sha256: e.sha256.clone(),
            len: e.len,
            version: e.binary.version.clone(),
            era: e.binary.era.map(str::to_string),
        }),
        files: v
            .files
            .iter()
            .map(|f| ManifestFile {
                path: f.path.clone(),
                kind: if f.target.is_some() { "symlink".into() } else { "regular".into() },
                sha256: f.sha256.clone(),
                target: f.target.clone(),
                len: f.len,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            })
            .collect(),
    }
}

/// Write a manifest to `path` (atomically).
pub fn write_to(path: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(m).map_err(|e| Error::write(path, std::io::Error::other(e)))?;
    crate::sys::write_atomic(path, format!("{text}\n").as_bytes())
}
