//! The names of a build's files (E2B's storage layout, e2b-formats.md §1:
//! `packages/shared/pkg/storage/paths.go`) and of what tmpl itself writes in and beside a build
//! folder. Every other module names files through these constants.

use serde::{Deserialize, Serialize};

pub const METADATA: &str = "metadata.json";
pub const SNAPFILE: &str = "snapfile";
pub const ROOTFS: &str = "rootfs.ext4";
pub const ROOTFS_HEADER: &str = "rootfs.ext4.header";
pub const MEMFILE: &str = "memfile";
pub const MEMFILE_HEADER: &str = "memfile.header";
/// Every file name a build directory may hold (uncompressed names).
pub const KNOWN_FILES: &[&str] = &[METADATA, ROOTFS, ROOTFS_HEADER, MEMFILE, MEMFILE_HEADER, SNAPFILE];
/// Suffixes of compressed data files (V4/V5 builds): `rootfs.ext4.zstd`, `memfile.lz4`.
pub const COMPRESSED_SUFFIXES: &[&str] = &[".zstd", ".lz4"];
/// The Local provider's sidecar beside a compressed object: its uncompressed size in decimal
/// (`<object>.uncompressed-size`, `storage_fs.go`).
pub const SIDECAR_SUFFIX: &str = ".uncompressed-size";

/// The page unit E2B uses for rootfs blocks and for synthesising headerless mappings.
pub const PAGE: u64 = 4096;
/// Block size of headerless memfiles (`oldMemfileHugePageSize`).
pub const HUGE_PAGE: u64 = 2 * 1024 * 1024;

/// What tmpl wrote into the rootfs (`tmpl-manifest.json`, beside the build's files).
pub const MANIFEST: &str = "tmpl-manifest.json";
/// The journal of a multi-file commit in the build folder.
pub const JOURNAL: &str = ".tmpl-commit.json";
/// Where the journal is written before it is renamed into place.
pub const JOURNAL_NEW: &str = ".tmpl-commit.json.new";
/// Prefix of an edit's work folder in the build folder.
pub const WORK_PREFIX: &str = ".tmpl-work-";
/// Prefix of a backup folder in the build folder.
pub const BACKUP_PREFIX: &str = ".tmpl-backup-";
/// A fork's folder while it is written: `<storage>/.tmpl-fork-<new-id>.partial/`.
pub const FORK_PREFIX: &str = ".tmpl-fork-";
pub const FORK_SUFFIX: &str = ".partial";
/// The file in a partial fork that names its source build and writer.
pub const FORK_OWNER: &str = ".tmpl-fork.json";

/// The two block devices a build describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Artifact {
    Rootfs,
    Memfile,
}

impl Artifact {
    pub const ALL: [Artifact; 2] = [Artifact::Rootfs, Artifact::Memfile];

    /// Name of the (uncompressed) data file.
    pub fn data_name(self) -> &'static str {
        match self {
            Artifact::Rootfs => ROOTFS,
            Artifact::Memfile => MEMFILE,
        }
    }

    pub fn header_name(self) -> &'static str {
        match self {
            Artifact::Rootfs => ROOTFS_HEADER,
            Artifact::Memfile => MEMFILE_HEADER,
        }
    }

    /// Block size E2B assumes for headerless data files.
    pub fn headerless_block_size(self) -> u64 {
        match self {
            Artifact::Rootfs => PAGE,
            Artifact::Memfile => HUGE_PAGE,
        }
    }

    /// Prefix of finding ids about this artifact.
    pub fn label(self) -> &'static str {
        match self {
            Artifact::Rootfs => "rootfs",
            Artifact::Memfile => "memfile",
        }
    }

    /// Every name a data file of this artifact may have: plain, compressed, and the compressed
    /// files' size sidecars.
    pub fn data_file_names(self) -> Vec<String> {
        let mut names = vec![self.data_name().to_string()];
        for s in COMPRESSED_SUFFIXES {
            names.push(format!("{}{s}", self.data_name()));
            names.push(format!("{}{s}{SIDECAR_SUFFIX}", self.data_name()));
        }
        names
    }
}

/// Is `name` one of the files of a build (metadata, snapfile, headers, data files in any
/// compression, sidecars)?
pub fn is_build_file(name: &str) -> bool {
    KNOWN_FILES.contains(&name) || Artifact::ALL.iter().any(|a| a.data_file_names().iter().any(|n| n == name))
}

/// Is `name` a partial fork's folder (`.tmpl-fork-<id>.partial`)?
pub fn is_partial_fork(name: &str) -> bool {
    name.starts_with(FORK_PREFIX) && name.ends_with(FORK_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_files_are_recognised_in_every_compression() {
        for n in ["metadata.json", "rootfs.ext4.zstd", "memfile.lz4.uncompressed-size", "memfile.header"] {
            assert!(is_build_file(n), "{n}");
        }
        for n in ["rootfs.ext4.gz", ".tmpl-backup-x", "tmpl-manifest.json"] {
            assert!(!is_build_file(n), "{n}");
        }
        assert!(is_partial_fork(".tmpl-fork-11111111-2222-3333-4444-555555555555.partial"));
    }
}
