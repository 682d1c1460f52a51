//! The root disk a VM boots: never the build's file opened for writing.
//!
//! A full (plain, headerless or one-mapping) image is handed to QEMU directly with `snapshot=on`,
//! so QEMU opens it read-only and keeps every guest write in a temporary overlay in the work
//! directory. A layered or compacted build is assembled through [`Device::assemble_to`] into a
//! sparse temporary image first. Firecracker has no copy-on-write overlay, so it gets a temporary
//! copy (or, with `read_only`, the plain image attached read-only).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Build;
use crate::device::{Device, ReadAt};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::vocab::Artifact;

/// Where the root disk's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RootSource {
    /// The build's own full image, opened read-only.
    BuildFile { path: PathBuf },
    /// A temporary image assembled from the build's header mappings.
    Assembled { path: PathBuf, layers: usize, bytes: u64 },
}

/// A prepared root disk.
#[derive(Debug, Clone, Serialize)]
pub struct RootImage {
    pub source: RootSource,
    /// Size of the disk in bytes.
    pub size: u64,
}

impl RootImage {
    /// The file the VMM opens.
    pub fn path(&self) -> &Path {
        match &self.source {
            RootSource::BuildFile { path } | RootSource::Assembled { path, .. } => path,
        }
    }

    pub fn describe(&self) -> String {
        match &self.source {
            RootSource::BuildFile { path } => format!("{} (the build's full image, opened read-only)", path.display()),
            RootSource::Assembled { layers, .. } => format!(
                "a temporary image assembled from {layers} build(s)' layers ({})",
                crate::report::human_bytes(self.size)
            ),
        }
    }
}

/// Prepare the root disk of `build` in `work` (a temporary directory the caller removes).
/// `need_copy`: the VMM cannot protect the build's file itself (Firecracker), so even a full image
/// is copied.
pub fn prepare(build: &Build, work: &Path, need_copy: bool, progress: &dyn Progress) -> Result<RootImage> {
    let dev = Device::open(build, Artifact::Rootfs).map_err(|e| Error::device(&build.dir, e))?;
    let size = dev.size();
    if size == 0 {
        return Err(Error::invalid(&build.dir, "the rootfs is empty (size 0)"));
    }
    let sources = dev.source_builds();
    // A build in a remote storage is always assembled into the work folder (ranged GETs).
    if dev.is_plain() && !need_copy && !dev.is_remote() && sources.len() == 1 {
        let path = build.data_path(&sources[0], Artifact::Rootfs);
        let len = std::fs::metadata(&path).map_err(|e| Error::read(&path, e))?.len();
        if len == size {
            return Ok(RootImage { source: RootSource::BuildFile { path }, size });
        }
    }
    let path = work.join("rootfs.ext4");
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::write(&path, e))?;
    dev.assemble_to(&out, progress).map_err(|e| Error::invalid(&build.dir, e.to_string()))?;
    out.sync_all().map_err(|e| Error::write(&path, e))?;
    Ok(RootImage { source: RootSource::Assembled { path, layers: sources.len(), bytes: dev.bytes_read() }, size })
}
