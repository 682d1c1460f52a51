//! `tmpl inspect BUILD`: every fact about one build, read offline.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

pub use super::inspect_render::describe_program;
use super::{Ctx, Outcome};
use crate::build::{self, Build, FileFacts, Loaded};
use crate::checks::contents;
use crate::error::Result;
use crate::error::{Error, UsageError};
use crate::header::{BuildInfo, Mapping};
use crate::metadata::Metadata;
use crate::report::human_bytes;
use crate::rootfs::boot::{self, BootFacts, Program, Resolution, Scan};
use crate::rootfs::{Anomaly, FileKind, Rootfs, Superblock};
use crate::snapshot::SnapfileInfo;
use crate::vocab::Artifact;
use crate::vocab::BuildId;
use crate::vocab::files::ROOTFS;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0; 3 when the build (or --path in its rootfs) is not a build or is corrupt; \
4 when a permission keeps tmpl from reading it (the facts that could be read are still shown).")]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// Show one file of the rootfs (read through the build's layers, without mounting)
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// With --path: print the file's content (raw bytes; in --json as text or base64, up to 16 MiB)
    #[arg(long, requires = "path")]
    pub cat: bool,
    /// Also list every mapping of both headers: offset, length, build, storage offset
    #[arg(long)]
    pub mappings: bool,
    /// Also list the builds section of V4/V5 headers: each build's size, SHA-256 and frame table
    /// (compression, uncompressed/compressed offsets and sizes)
    #[arg(long)]
    pub frames: bool,
}

#[derive(Debug, Serialize)]
pub struct FileRow {
    pub name: String,
    pub len: u64,
    pub allocated: u64,
}

#[derive(Debug, Serialize)]
pub struct MappedBuild {
    pub build_id: BuildId,
    /// Bytes mapped to the build; `null` when the lengths add up past 2^64 (a corrupt header).
    pub bytes: Option<u64>,
    /// Bytes of its data file the mappings read up to.
    pub required_len: u64,
}

#[derive(Debug, Serialize)]
pub struct HeaderFacts {
    pub version: u64,
    pub format: u64,
    pub block_size: u64,
    pub size: u64,
    pub generation: u64,
    pub build_id: BuildId,
    pub base_build_id: BuildId,
    pub mappings: usize,
    pub synthesized: bool,
    /// Bytes mapped to this build, other builds and nothing; `null` when the lengths add up
    /// past 2^64 (a corrupt header: `verify` reports the mapping that overflows).
    pub own_bytes: Option<u64>,
    pub inherited_bytes: Option<u64>,
    pub nil_bytes: Option<u64>,
    pub builds: Vec<MappedBuild>,
}

#[derive(Debug, Serialize)]
pub struct ArtifactFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<FileFacts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compressed: Vec<String>,
    /// `absent`, `parsed` or `invalid`.
    pub header_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderFacts>,
}

#[derive(Debug, Serialize)]
pub struct FsFacts {
    pub block_size: u64,
    pub blocks: u64,
    pub size: u64,
    pub uuid: String,
    pub label: String,
    pub needs_recovery: bool,
    pub features: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub build_id: BuildId,
    pub path: PathBuf,
    pub storage: PathBuf,
    pub files: Vec<FileRow>,
    pub metadata_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub rootfs: ArtifactFacts,
    pub memfile: ArtifactFacts,
    /// Builds this one reads data from.
    pub dependencies: Vec<BuildId>,
    /// Builds in the same storage that read data from this one.
    pub dependents: Vec<BuildId>,
    pub snapfile_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapfile_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapfile: Option<SnapfileInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_error: Option<String>,
    /// What tmpl refused to read from the rootfs (sizes over its caps) or where the ext4 reader
    /// failed; the boot facts stop there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rootfs_anomalies: Vec<Anomaly>,
    /// What the rootfs does at boot: init chain, wrapper, envd, systemd, resolv.conf, /.e2b.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootFacts>,
    /// With `--mappings`: every mapping of each header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings: Option<PerArtifact<Vec<Mapping>>>,
    /// With `--frames`: the builds section of each header (V4/V5; empty for V1–V3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<PerArtifact<Vec<BuildInfo>>>,
    /// Files and folders a permission keeps tmpl from reading (then inspect exits 4).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_denied: Vec<build::AccessProblem>,
    /// What tmpl's edits left: backups, work folders, a commit journal, partial forks, mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<crate::edit::leftovers::Leftover>,
}

/// One value per artifact.
#[derive(Debug, Serialize)]
pub struct PerArtifact<T> {
    pub rootfs: T,
    pub memfile: T,
}

fn status<T, E>(l: &Loaded<T, E>) -> &'static str {
    match l {
        Loaded::Absent => "absent",
        Loaded::Parsed(_) => "parsed",
        Loaded::Invalid(_) => "invalid",
    }
}

fn artifact_facts(b: &Build, a: Artifact) -> ArtifactFacts {
    let f = b.artifact(a);
    let header = f.header.parsed().map(|h| {
        let (own, inherited, nil) = h.byte_split();
        let builds = h
            .build_stats()
            .into_iter()
            .map(|s| MappedBuild { build_id: s.build, bytes: s.bytes, required_len: s.required_len })
            .collect();
        HeaderFacts {
            version: h.version,
            format: h.format(),
            block_size: h.block_size,
            size: h.size,
            generation: h.generation,
            build_id: h.build_id,
            base_build_id: h.base_build_id,
            mappings: h.mappings.len(),
            synthesized: h.synthesized,
            own_bytes: own,
            inherited_bytes: inherited,
            nil_bytes: nil,
            builds,
        }
    });
    ArtifactFacts {
        data: f.data,
        compressed: f.compressed.iter().map(|(n, _)| n.clone()).collect(),
        header_status: status(&f.header),
        header_error: match &f.header {
            Loaded::Invalid(e) => Some(e.to_string()),
            _ => None,
        },
        header,
    }
}

fn fs_facts(sb: &Superblock) -> FsFacts {
    FsFacts {
        block_size: sb.block_size,
        blocks: sb.blocks_count,
        size: sb.fs_bytes(),
        uuid: sb.uuid.clone(),
        label: sb.volume_name.clone(),
        needs_recovery: sb.needs_recovery(),
        features: sb.features(),
    }
}

/// Gather the facts of a build.
pub fn inspect(build: &Build) -> Result<InspectReport> {
    let mut files = Vec::new();
    let mut names: Vec<String> = crate::vocab::files::KNOWN_FILES.iter().map(|s| s.to_string()).collect();
    for a in Artifact::ALL {
        names.extend(build.artifact(a).compressed.iter().map(|(n, _)| n.clone()));
    }
    names.extend(build.extra_files.iter().cloned());
    for n in names {
        if let Ok(Some(f)) = build::stat(&build.path(&n)) {
            files.push(FileRow { name: n, len: f.len, allocated: f.allocated });
        }
    }
    let (filesystem, filesystem_error, boot, rootfs_anomalies) = match Rootfs::of_build(build) {
        Ok(fs) => {
            let boot = boot::gather(&fs, &contents::context(build, Scan::Always));
            (Some(fs_facts(&fs.superblock)), None, Some(boot), fs.anomalies())
        }
        Err(e) => (None, Some(e.to_string()), None, Vec::new()),
    };
    Ok(InspectReport {
        build_id: build.id,
        path: build.dir.clone(),
        storage: build.storage_root.clone(),
        files,
        metadata_status: status(&build.metadata),
        metadata_error: match &build.metadata {
            Loaded::Invalid(e) => Some(e.clone()),
            _ => None,
        },
        metadata: build.meta().cloned(),
        rootfs: artifact_facts(build, Artifact::Rootfs),
        memfile: artifact_facts(build, Artifact::Memfile),
        dependencies: build.dependencies(),
        dependents: build::dependents(&build.storage_root, &build.id).map(|(d, _)| d).unwrap_or_default(),
        snapfile_status: status(&build.snapfile),
        snapfile_error: match &build.snapfile {
            Loaded::Invalid(e) => Some(e.clone()),
            _ => None,
        },
        snapfile: build.snapfile.parsed().cloned(),
        filesystem,
        filesystem_error,
        rootfs_anomalies,
        boot,
        mappings: None,
        frames: None,
        access_denied: build.access.clone(),
        leftovers: crate::edit::leftovers::in_build(&build.dir)
            .into_iter()
            .chain(crate::edit::leftovers::forks_of(&build.storage_root, &build.id))
            .collect(),
    })
}

/// The low-level view: mappings and builds sections as stored (`--mappings`, `--frames`).
fn low_level(build: &Build, mappings: bool, frames: bool, report: &mut InspectReport) {
    let header = |a: Artifact| build.artifact(a).effective_header(build.id);
    if mappings {
        let maps = |a| header(a).map(|h| h.mappings.clone()).unwrap_or_default();
        report.mappings = Some(PerArtifact { rootfs: maps(Artifact::Rootfs), memfile: maps(Artifact::Memfile) });
    }
    if frames {
        let builds = |a| header(a).map(|h| h.builds.clone()).unwrap_or_default();
        report.frames = Some(PerArtifact { rootfs: builds(Artifact::Rootfs), memfile: builds(Artifact::Memfile) });
    }
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let build = ctx.open_build(&args.build)?;
    if let Some(path) = &args.path {
        return crate::rootfs::guard::isolate(|| inspect_path(&build, path, args.cat, ctx.json))
            .map_err(|panic| Error::invalid_from(&build.dir, Failed { what: format!("reading {path}"), panic }))?;
    }
    // Isolated: a panic while reading this build's files is an error on it (exit 3), not a crash.
    let mut report = crate::rootfs::guard::isolate(|| inspect(&build))
        .map_err(|panic| Error::invalid_from(&build.dir, Failed { what: "reading this build".to_string(), panic }))??;
    low_level(&build, args.mappings, args.frames, &mut report);
    Ok(Outcome::Inspect(Box::new(report)))
}

/// tmpl itself failed (a panic, isolated) on a build's files.
#[derive(Debug, thiserror::Error)]
#[error("tmpl failed while {what}: {panic}")]
pub struct Failed {
    pub what: String,
    pub panic: String,
}

/// `inspect --path P --cat` in text mode: the file's bytes, streamed to the output when written.
pub struct Cat {
    fs: Rootfs,
    path: String,
    image: std::path::PathBuf,
}

impl std::fmt::Debug for Cat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cat").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Cat {
    /// Stream the file into `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> Result<()> {
        self.fs.stream(&self.path, |chunk| w.write_all(chunk)).map_err(|e| Error::rootfs(&self.image, e))?;
        Ok(())
    }
}

/// Largest file `inspect --path` hashes (a size read from the image bounds the time it takes):
/// more than any binary or config of a template (envd is 10–30 MB).
pub const MAX_HASH_BYTES: u64 = 512 * 1024 * 1024;

/// One file of the rootfs, read through the build's layers.
#[derive(Debug, Serialize)]
pub struct PathReport {
    pub build_id: BuildId,
    pub path: String,
    /// The path followed link by link.
    pub resolution: Resolution,
    /// What the file is, when it is a regular file (ELF facts, #! interpreter, loader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    /// A directory's entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<DirEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why there is no `sha256` for a regular file (its size is over the cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_skipped: Option<String>,
    /// With --cat in JSON: the content as UTF-8 text, or base64 when it is not text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_utf8: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Bytes read through the device.
    pub bytes_read: u64,
    /// What following the path cost (opening the rootfs and resolving it link by link), before
    /// the file was examined and hashed.
    pub follow: FollowCost,
    /// Requests sent to a remote storage by this run, and the bytes they fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::Stats>,
}

/// Bytes and requests spent on following a path to the file it ends in.
#[derive(Debug, Serialize)]
pub struct FollowCost {
    /// Bytes of the image read through the device.
    pub bytes_read: u64,
    /// Requests sent to a remote storage, and the bytes they fetched (remote builds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_bytes_read: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
}

fn inspect_path(build: &Build, path: &str, cat: bool, json: bool) -> Result<Outcome> {
    if !path.starts_with('/') {
        return Err(UsageError::RelativePath(path.to_string()).into());
    }
    if let Some(a) = build.rootfs_access_problem() {
        return Err(Error::denied(a.denied.clone()));
    }
    let image = build.path(ROOTFS);
    let fs = Rootfs::of_build(build).map_err(|e| Error::rootfs(&image, e))?;
    let store = crate::remote::mount::store_of(&build.storage_root);
    let resolution = boot::resolve(&fs, path);
    let followed = store.as_ref().map(crate::remote::Store::stats);
    let follow = FollowCost {
        bytes_read: fs.device().bytes_read(),
        remote_requests: followed.map(|s| s.requests),
        remote_bytes_read: followed.map(|s| s.bytes_read),
    };
    let Some(found) = resolution.found().cloned() else {
        return Err(Error::invalid(&image, format!("{path}: {}", contents::why(&resolution))));
    };
    let ctx = contents::context(build, Scan::Always);
    let err = |e: crate::rootfs::RootfsError| Error::rootfs(&image, e);
    if cat && !json {
        if found.kind != FileKind::Regular {
            return Err(Error::invalid(&image, format!("{path} is not a regular file")));
        }
        return Ok(Outcome::Cat(Cat { fs, path: found.path, image }));
    }
    let mut report = PathReport {
        build_id: build.id,
        path: path.to_string(),
        resolution,
        program: None,
        entries: None,
        sha256: None,
        sha256_skipped: None,
        content_utf8: None,
        content_base64: None,
        bytes_read: 0,
        follow,
        remote: None,
    };
    match found.kind {
        FileKind::Regular => {
            report.program = Some(boot::examine(&fs, &found, &ctx).map_err(err)?);
            if found.len <= MAX_HASH_BYTES {
                report.sha256 = Some(crate::rootfs::hex(&fs.sha256(&found.path).map_err(err)?));
            } else {
                report.sha256_skipped = Some(format!(
                    "the inode says the file is {}; tmpl hashes files up to {}",
                    human_bytes(found.len),
                    human_bytes(MAX_HASH_BYTES)
                ));
            }
            if cat {
                let bytes = fs.read(&found.path).map_err(err)?;
                match String::from_utf8(bytes) {
                    Ok(t) => report.content_utf8 = Some(t),
                    Err(e) => {
                        use base64::Engine as _;
                        report.content_base64 = Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()));
                    }
                }
            }
        }
        FileKind::Directory => {
            report.entries = Some(
                fs.read_dir(&found.path)
                    .map_err(err)?
                    .into_iter()
                    .map(|(name, kind)| DirEntry { name, kind })
                    .collect(),
            );
        }
        _ => {}
    }
    report.bytes_read = fs.device().bytes_read();
    report.remote = store.map(|s| s.stats());
    Ok(Outcome::InspectPath(Box::new(report)))
}
