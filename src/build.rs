//! The model of one build: its folder, metadata, headers, snapfile facts and which data files
//! exist. A build is opened once into [`Build`]; checks and commands take `&Build`.
//!
//! Opening reads only small files (metadata.json, headers) and streams the snapfile (a few MB at
//! most) for its CRC; data files (rootfs, memfile) are only `stat`ed, so a 16 GiB sparse memfile
//! costs nothing here.

use std::borrow::Cow;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compress::Compression;
use crate::header::{self, FrameTable, Header};
use crate::metadata::{self, Metadata};
use crate::snapshot::{self, SnapfileInfo};
use crate::storage::BuildLocation;
use crate::vocab::Artifact;
use crate::vocab::files::{METADATA, SIDECAR_SUFFIX, SNAPFILE, is_build_file};
use crate::vocab::read_small;
use crate::vocab::{BuildId, SmallFileError};

const MAX_SIDECAR_BYTES: u64 = 64;

/// Result of opening a build.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Why a build folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A build file that is not a regular file (the message is read after its path).
    #[error("is not a regular file")]
    NotAFile { path: PathBuf },
}

impl BuildError {
    /// The file or folder the error is about.
    pub fn path(&self) -> &Path {
        match self {
            BuildError::Io { path, .. } | BuildError::NotAFile { path } => path,
        }
    }

    /// Is this a permission problem?
    pub fn is_permission(&self) -> bool {
        matches!(self, BuildError::Io { source, .. } if crate::access::is_denied(source))
    }

    fn io(path: &Path, source: io::Error) -> Self {
        BuildError::Io { path: path.to_path_buf(), source }
    }
}

/// Size facts of a file: apparent length and allocated bytes (st_blocks · 512).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    pub len: u64,
    pub allocated: u64,
}

/// `stat` a file; `None` when it does not exist.
pub fn stat(path: &Path) -> Result<Option<FileFacts>> {
    // A build in a remote storage: the object's size from the build's listing.
    if let Some(r) = crate::remote::mount::stat(path) {
        use crate::remote::mount::Stat;
        return match r {
            Ok(Stat::File(len)) => Ok(Some(FileFacts { len, allocated: len })),
            Ok(Stat::Missing) => Ok(None),
            Ok(Stat::Dir) => Err(BuildError::NotAFile { path: path.to_path_buf() }),
            Err(e) => Err(BuildError::io(path, e)),
        };
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(FileFacts { len: m.len(), allocated: m.blocks() * 512 })),
        Ok(_) => Err(BuildError::NotAFile { path: path.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BuildError::io(path, e)),
    }
}

/// Is there a build folder at `path` (a prefix with objects, in a remote storage)? A remote
/// listing that fails does not make a build missing: reading it then names the failure.
pub fn is_dir(path: &Path) -> bool {
    match crate::remote::mount::stat(path) {
        Some(Ok(crate::remote::mount::Stat::Dir) | Err(_)) => true,
        Some(Ok(_)) => false,
        None => path.is_dir(),
    }
}

/// The outcome of reading one small structured file.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", content = "value", rename_all = "lowercase")]
pub enum Loaded<T, E = String> {
    Absent,
    Parsed(T),
    Invalid(E),
}

impl<T, E> Loaded<T, E> {
    pub fn parsed(&self) -> Option<&T> {
        match self {
            Loaded::Parsed(t) => Some(t),
            _ => None,
        }
    }
}

/// The files of one artifact (rootfs or memfile).
#[derive(Clone, Debug)]
pub struct ArtifactFiles {
    pub artifact: Artifact,
    /// The plain data file.
    pub data: Option<FileFacts>,
    /// Compressed data files present (`rootfs.ext4.zstd`, ...), by name.
    pub compressed: Vec<(String, FileFacts)>,
    pub header_file: Option<FileFacts>,
    pub header: Loaded<Header, HeaderError>,
}

/// Why a header file could not be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HeaderError {
    #[error(transparent)]
    Parse(#[from] header::ParseError),
    #[error(transparent)]
    Read(#[from] SmallFileError),
}

impl Serialize for HeaderError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ArtifactFiles {
    /// The header the orchestrator would use: the stored one, or for a headerless build the
    /// synthesised one (one self mapping over the whole data file). `None` when neither exists
    /// or the stored header is unreadable.
    pub fn effective_header(&self, id: BuildId) -> Option<Cow<'_, Header>> {
        match &self.header {
            Loaded::Parsed(h) => Some(Cow::Borrowed(h)),
            Loaded::Invalid(_) => None,
            Loaded::Absent => {
                let d = self.data?;
                Some(Cow::Owned(header::headerless(id, d.len, self.artifact.headerless_block_size())))
            }
        }
    }

    /// True when nothing of this artifact exists.
    pub fn is_absent(&self) -> bool {
        self.data.is_none() && self.compressed.is_empty() && self.header_file.is_none()
    }
}

/// One build, read once.
#[derive(Clone, Debug)]
pub struct Build {
    pub dir: PathBuf,
    pub storage_root: PathBuf,
    /// The folder name when it is a UUID.
    pub folder_id: Option<BuildId>,
    /// The build's identity: the folder name, else the header's BuildId, else metadata's.
    pub id: BuildId,
    pub metadata_file: Option<FileFacts>,
    pub metadata: Loaded<Metadata>,
    pub snapfile_file: Option<FileFacts>,
    pub snapfile: Loaded<SnapfileInfo>,
    pub rootfs: ArtifactFiles,
    pub memfile: ArtifactFiles,
    /// Other entries in the folder (backups, manifests, stray files), sorted.
    pub extra_files: Vec<String>,
    /// Files and folders the checks read that a permission keeps tmpl from reading: this
    /// build's small files and rootfs data, its ancestors' folders and rootfs files.
    pub access: Vec<AccessProblem>,
}

/// A file or folder a build needs that tmpl may not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessProblem {
    /// The name findings use for it: `metadata.json`, `rootfs.ext4` (this build's),
    /// `<build-id>` (an ancestor's folder), `<build-id>/rootfs.ext4` (an ancestor's file).
    pub file: String,
    /// Whether reading the rootfs (through its layers) needs it.
    pub rootfs: bool,
    #[serde(flatten)]
    pub denied: crate::access::Denied,
}

impl AccessProblem {
    /// Does a finding about `file` (a finding's label) concern this unreadable item?
    pub fn covers(&self, file: &str) -> bool {
        file == self.file || file.strip_prefix(self.file.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Probe `path` for a permission problem (`None` when readable or absent; other errors are left
/// to the checks, which report them as they are).
fn denied(path: &Path) -> Option<crate::access::Denied> {
    crate::access::check_readable(path).ok().flatten()
}

/// The files of `dir` for `artifact` that reading its data touches: the header and every data
/// file variant (plain, compressed, sidecars).
fn artifact_file_names(artifact: Artifact) -> Vec<String> {
    let mut names = vec![artifact.header_name().to_string()];
    names.extend(artifact.data_file_names());
    names
}

/// What a permission keeps tmpl from reading among the memfile data `verify --deep` streams:
/// this build's memfile files and, when its memfile header maps blocks to them, its ancestors'
/// (whose folders are already probed when opening).
fn memfile_access_problems(build: &Build) -> Vec<AccessProblem> {
    let mut out = Vec::new();
    let ids: Vec<BuildId> = match build.memfile.effective_header(build.id) {
        Some(h) => h.referenced_builds(),
        None => vec![build.id],
    };
    for id in ids {
        if build.access.iter().any(|a| a.file == id.to_string()) {
            continue;
        }
        let dir = build.dir_of(&id);
        for name in artifact_file_names(Artifact::Memfile) {
            if let Some(d) = denied(&dir.join(&name)) {
                let file = if id == build.id { name } else { format!("{id}/{name}") };
                if !build.access.iter().any(|a| a.file == file) {
                    out.push(AccessProblem { file, rootfs: false, denied: d });
                }
            }
        }
    }
    out
}

/// What a permission keeps tmpl from reading among the files the checks read: this build's small
/// files and rootfs files, its ancestors' folders (any artifact) and their rootfs files. Memfile
/// data is only `stat`ed by the checks and not probed here.
fn access_problems(build: &Build) -> Vec<AccessProblem> {
    let mut out = Vec::new();
    let mut own: Vec<(String, bool)> =
        [METADATA, SNAPFILE, Artifact::Memfile.header_name()].iter().map(|n| (n.to_string(), false)).collect();
    own.extend(artifact_file_names(Artifact::Rootfs).into_iter().map(|n| (n, true)));
    for (name, rootfs) in own {
        if let Some(d) = denied(&build.dir.join(&name)) {
            out.push(AccessProblem { file: name, rootfs, denied: d });
        }
    }
    // Once, not per dependency: a header may name 65535 builds.
    let rootfs_deps: std::collections::HashSet<BuildId> =
        build.rootfs.header.parsed().map(|h| h.referenced_builds().into_iter().collect()).unwrap_or_default();
    for id in build.dependencies() {
        let dir = build.dir_of(&id);
        let rootfs = rootfs_deps.contains(&id);
        // The folder: stat-able (its parent searchable) and itself searchable.
        let folder = match std::fs::metadata(&dir) {
            // Reading files in it needs only search (x) permission on it.
            Ok(m) if m.is_dir() => (!crate::access::allowed_search(&dir)).then(|| crate::access::Denied {
                path: dir.clone(),
                at: dir.clone(),
                needs: "search (x)".into(),
                user: crate::access::user(),
                note: None,
            }),
            Ok(_) => None,
            Err(e) if crate::access::is_denied(&e) => Some(crate::access::diagnose(&dir)),
            Err(_) => None,
        };
        if let Some(d) = folder {
            out.push(AccessProblem { file: id.to_string(), rootfs, denied: d });
            continue;
        }
        if rootfs {
            for name in artifact_file_names(Artifact::Rootfs) {
                if let Some(d) = denied(&dir.join(&name)) {
                    out.push(AccessProblem { file: format!("{id}/{name}"), rootfs, denied: d });
                }
            }
        }
    }
    out
}

/// A read of a file in a remote storage that failed because of the storage (see
/// `checks::is_storage_failure`).
fn remote_failure(path: &Path, e: &SmallFileError) -> bool {
    crate::remote::is_storage_failure(e.io().map(io::Error::kind)) && crate::remote::mount::is_mounted(path)
}

fn remote_error(path: &Path, e: &SmallFileError) -> BuildError {
    let kind = e.io().map_or(io::ErrorKind::Other, io::Error::kind);
    BuildError::io(path, io::Error::new(kind, e.to_string()))
}

fn open_artifact(dir: &Path, artifact: Artifact) -> Result<ArtifactFiles> {
    let data = stat(&dir.join(artifact.data_name()))?;
    let mut compressed = Vec::new();
    for s in crate::vocab::files::COMPRESSED_SUFFIXES {
        let name = format!("{}{s}", artifact.data_name());
        if let Some(f) = stat(&dir.join(&name))? {
            compressed.push((name, f));
        }
    }
    let hpath = dir.join(artifact.header_name());
    let header_file = stat(&hpath)?;
    let header = match read_small(&hpath, header::MAX_HEADER_BYTES) {
        // A remote storage that failed says nothing about the header: the build is unreadable.
        Err(e) if remote_failure(&hpath, &e) => return Err(remote_error(&hpath, &e)),
        Ok(None) => Loaded::Absent,
        Ok(Some(bytes)) => match header::parse(&bytes) {
            Ok(h) => Loaded::Parsed(h),
            Err(e) => Loaded::Invalid(HeaderError::Parse(e)),
        },
        Err(e) => Loaded::Invalid(HeaderError::Read(e)),
    };
    Ok(ArtifactFiles { artifact, data, compressed, header_file, header })
}

impl Build {
    /// Open a build directory: read metadata and headers, analyse the snapfile, stat the rest.
    pub fn open(loc: &BuildLocation) -> Result<Build> {
        let dir = &loc.dir;
        let mut extra_files = Vec::new();
        let remote = crate::remote::mount::find(dir);
        if let Some((m, parts)) = &remote {
            let names = m.read_dir(parts).map_err(|e| BuildError::io(dir, e))?;
            extra_files.extend(names.into_iter().filter(|n| !is_build_file(n)));
        } else {
            let rd = std::fs::read_dir(dir).map_err(|e| BuildError::io(dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| BuildError::io(dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_build_file(&name) {
                    extra_files.push(name);
                }
            }
        }
        extra_files.sort();

        let mpath = dir.join(METADATA);
        let metadata_file = stat(&mpath)?;
        let metadata = match read_small(&mpath, metadata::MAX_METADATA_BYTES) {
            Err(e) if remote_failure(&mpath, &e) => return Err(remote_error(&mpath, &e)),
            Ok(None) => Loaded::Absent,
            Ok(Some(b)) => match metadata::parse(&b) {
                Ok(m) => Loaded::Parsed(m),
                Err(e) => Loaded::Invalid(e.to_string()),
            },
            Err(e) => Loaded::Invalid(e.to_string()),
        };
        let spath = dir.join(SNAPFILE);
        let snapfile_file = stat(&spath)?;
        let snapfile = match snapfile_file {
            None => Loaded::Absent,
            Some(_) => match snapshot::analyze_file(&spath) {
                Ok(i) => Loaded::Parsed(i),
                Err(e)
                    if crate::remote::is_storage_failure(Some(e.kind()))
                        && crate::remote::mount::is_mounted(&spath) =>
                {
                    return Err(BuildError::io(&spath, e));
                }
                Err(e) => Loaded::Invalid(format!("cannot read: {e}")),
            },
        };
        let rootfs = open_artifact(dir, Artifact::Rootfs)?;
        let memfile = open_artifact(dir, Artifact::Memfile)?;

        let header_id = [&rootfs, &memfile].iter().find_map(|a| a.header.parsed().map(|h| h.build_id));
        let meta_id = metadata.parsed().and_then(|m| m.build_id()).and_then(|s| BuildId::parse(s).ok());
        let id = loc.folder_id.or(header_id).or(meta_id).unwrap_or_else(BuildId::nil);

        let mut build = Build {
            dir: dir.clone(),
            storage_root: loc.storage_root.clone(),
            folder_id: loc.folder_id,
            id,
            metadata_file,
            metadata,
            snapfile_file,
            snapfile,
            rootfs,
            memfile,
            extra_files,
            access: Vec::new(),
        };
        // Local permissions mean nothing for a remote build (a refused request is an error of its
        // own, with the object named).
        if remote.is_none() {
            build.access = access_problems(&build);
        }
        Ok(build)
    }

    /// Permission problems among the memfile data files `verify --deep` reads (this build's and
    /// its memfile ancestors'), beside [`Build::access`].
    pub fn deep_access_problems(&self) -> Vec<AccessProblem> {
        memfile_access_problems(self)
    }

    /// The first permission problem that keeps tmpl from reading the rootfs, for commands that
    /// need the rootfs and cannot go on without it.
    pub fn rootfs_access_problem(&self) -> Option<&AccessProblem> {
        self.access.iter().find(|a| a.rootfs)
    }

    pub fn artifact(&self, a: Artifact) -> &ArtifactFiles {
        match a {
            Artifact::Rootfs => &self.rootfs,
            Artifact::Memfile => &self.memfile,
        }
    }

    /// The directory holding build `id`'s files: this folder for this build, else a sibling.
    pub fn dir_of(&self, id: &BuildId) -> PathBuf {
        if *id == self.id { self.dir.clone() } else { self.storage_root.join(id.to_string()) }
    }

    /// Path of build `id`'s uncompressed data file for `artifact`.
    pub fn data_path(&self, id: &BuildId, artifact: Artifact) -> PathBuf {
        self.dir_of(id).join(artifact.data_name())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where build `id`'s data for `artifact` lives, as a reader of `header` (this build's header)
    /// finds it: the compressed file named by the frame table in `header`'s builds section, else
    /// by the table in `id`'s own header (E2B's reader falls back to it), else the plain file.
    /// Stats the file and reads the Local provider's size sidecar; never reads data.
    pub fn data_file(&self, header: &Header, id: BuildId, artifact: Artifact) -> DataFile {
        let dir = self.dir_of(&id);
        let entry = header.build_info(&id);
        // A child's entry for an ancestor may hold only the frames the child reads: a prefix of
        // the ancestor's table is contiguous too, so it is complete only when it also covers the
        // size the entry records.
        let complete = entry.is_some_and(|e| {
            e.frames.is_compressed()
                && e.frames.is_contiguous()
                && e.known_size().is_some_and(|s| s == e.frames.end_u())
        });
        let variants: Vec<(Compression, Option<FileFacts>)> = [Compression::None, Compression::Zstd, Compression::Lz4]
            .into_iter()
            .map(|c| (c, stat(&dir.join(format!("{}{}", artifact.data_name(), c.suffix()))).ok().flatten()))
            .collect();
        let plain_present = variants[0].1.is_some();
        // The build's own header: its self entry holds the untrimmed frame table, size and
        // SHA-256. Not needed by a V1–V3 reader of plain data (no builds sections anywhere).
        let own = if id == self.id || complete || (header.format() < 4 && plain_present) {
            None
        } else {
            read_small(&dir.join(artifact.header_name()), header::MAX_HEADER_BYTES)
                .ok()
                .flatten()
                .and_then(|b| header::parse(&b).ok())
        };
        let own_entry = own.as_ref().and_then(|h| h.build_info(&id));
        let this_table = entry.filter(|e| e.frames.is_compressed()).map(|e| Arc::new(e.frames.clone()));
        let own_table = own_entry.filter(|e| e.frames.is_compressed()).map(|e| Arc::new(e.frames.clone()));
        let (table, table_source) = match (&this_table, &own_table) {
            (Some(t), _) => (Some(t.clone()), Some(TableSource::ThisHeader)),
            (None, Some(t)) => (Some(t.clone()), Some(TableSource::OwnHeader)),
            (None, None) => (None, None),
        };
        let full_table = match (&own_table, &this_table) {
            (Some(t), _) => Some(t.clone()),
            (None, t) => t.clone(),
        };
        let file_size = entry.and_then(|e| e.known_size()).or_else(|| own_entry.and_then(|e| e.known_size()));
        let checksum = entry.and_then(|e| e.known_checksum()).or_else(|| own_entry.and_then(|e| e.known_checksum()));
        let compression = match &table {
            Some(t) => t.compression,
            None => variants
                .iter()
                .find(|(c, f)| *c == Compression::None && f.is_some())
                .or_else(|| variants.iter().find(|(_, f)| f.is_some()))
                .map_or(Compression::None, |(c, _)| *c),
        };
        let name = format!("{}{}", artifact.data_name(), compression.suffix());
        let path = dir.join(&name);
        let facts = variants.iter().find(|(c, _)| *c == compression).and_then(|(_, f)| *f);
        let others = variants
            .iter()
            .filter(|(c, f)| *c != compression && f.is_some())
            .map(|(c, _)| format!("{}{}", artifact.data_name(), c.suffix()))
            .collect();
        let sidecar = (compression != Compression::None).then(|| read_sidecar(&path)).flatten();
        let label = if id == self.id { name } else { format!("{id}/{name}") };
        DataFile {
            build: id,
            artifact,
            label,
            path,
            compression,
            table,
            table_source,
            full_table_from_own: own_table.is_some(),
            full_table,
            facts,
            file_size,
            checksum,
            sidecar,
            others,
        }
    }

    /// Builds whose data this build reads (distinct non-nil ids in both headers, minus itself).
    pub fn dependencies(&self) -> Vec<BuildId> {
        let mut deps = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for a in Artifact::ALL {
            if let Some(h) = self.artifact(a).header.parsed() {
                for id in h.referenced_builds() {
                    if id != self.id && seen.insert(id) {
                        deps.push(id);
                    }
                }
            }
        }
        deps
    }

    /// The metadata document, when parsed.
    pub fn meta(&self) -> Option<&Metadata> {
        self.metadata.parsed()
    }

    /// Metadata says this snapshot has no memory (resume is a cold boot).
    pub fn is_filesystem_only(&self) -> bool {
        self.meta().is_some_and(|m| m.filesystem_only)
    }

    /// A memory snapshot exists (snapfile, memfile or memfile header).
    pub fn has_memory_snapshot(&self) -> bool {
        self.snapfile_file.is_some() || !self.memfile.is_absent()
    }

    /// Does any file of the build exist?
    pub fn is_empty(&self) -> bool {
        self.metadata_file.is_none()
            && self.snapfile_file.is_none()
            && self.rootfs.is_absent()
            && self.memfile.is_absent()
    }
}

/// Where a frame table came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableSource {
    /// The builds section of the header being read.
    ThisHeader,
    /// The data file's own build's header (the reader's fallback).
    OwnHeader,
}

/// One build's data file for one artifact, resolved through the headers (see
/// [`Build::data_file`]).
#[derive(Clone, Debug)]
pub struct DataFile {
    pub build: BuildId,
    pub artifact: Artifact,
    /// The file's name for findings: `rootfs.ext4.zstd` for this build,
    /// `<build-id>/rootfs.ext4.zstd` for another.
    pub label: String,
    pub path: PathBuf,
    pub compression: Compression,
    /// The frame table a reader of the header uses (compressed files only).
    pub table: Option<Arc<FrameTable>>,
    pub table_source: Option<TableSource>,
    /// The most complete table known: the build's own (untrimmed) one when available.
    pub full_table: Option<Arc<FrameTable>>,
    /// `full_table` comes from the data's own build's header (else from `header`'s own entry).
    pub full_table_from_own: bool,
    /// `stat` of the file; `None` when it is missing.
    pub facts: Option<FileFacts>,
    /// Uncompressed size from a builds section (positive values only).
    pub file_size: Option<u64>,
    /// SHA-256 of the uncompressed data from a builds section (non-zero only).
    pub checksum: Option<[u8; 32]>,
    /// The `.uncompressed-size` sidecar: absent, a value, or why it is unusable.
    pub sidecar: Option<std::result::Result<u64, SidecarError>>,
    /// Other data files of the same build and artifact that exist (plain beside compressed).
    pub others: Vec<String>,
}

/// Why a `.uncompressed-size` sidecar cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Read(#[from] SmallFileError),
    #[error("{0:?} is not a decimal size")]
    NotDecimal(String),
}

/// Read a `.uncompressed-size` sidecar beside `path` (`None` when absent).
pub fn read_sidecar(path: &Path) -> Option<std::result::Result<u64, SidecarError>> {
    let mut p = path.as_os_str().to_owned();
    p.push(SIDECAR_SUFFIX);
    let bytes = match read_small(Path::new(&p), MAX_SIDECAR_BYTES) {
        Ok(None) => return None,
        Ok(Some(b)) => b,
        Err(e) => return Some(Err(SidecarError::Read(e))),
    };
    let text = String::from_utf8_lossy(&bytes);
    Some(text.trim().parse::<u64>().map_err(|_| SidecarError::NotDecimal(text.trim().to_string())))
}

/// Builds in `storage_root` whose headers map blocks to `id` (its dependents), and the builds
/// whose headers could not be read (so whether they depend on `id` is unknown), with why. Reads
/// only the header files of the other builds.
pub fn dependents(storage_root: &Path, id: &BuildId) -> Result<(Vec<BuildId>, Vec<String>)> {
    // A bucket may hold thousands of builds: reading every header to find dependents is not
    // done for remote storage.
    if crate::remote::mount::is_mounted(storage_root) {
        return Ok((
            Vec::new(),
            vec![format!("{}: dependents are not searched in remote storage", storage_root.display())],
        ));
    }
    let rd = match std::fs::read_dir(storage_root) {
        Ok(rd) => rd,
        Err(e) => return Err(BuildError::io(storage_root, e)),
    };
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| BuildError::io(storage_root, e))?;
        let Some(other) = entry.file_name().to_str().and_then(|n| BuildId::parse(n).ok()) else { continue };
        if other == *id {
            continue;
        }
        for a in Artifact::ALL {
            let p = entry.path().join(a.header_name());
            let parsed = match read_small(&p, header::MAX_HEADER_BYTES) {
                Ok(None) => continue,
                Ok(Some(bytes)) => header::parse(&bytes).map_err(HeaderError::Parse),
                Err(e) => Err(HeaderError::Read(e)),
            };
            match parsed {
                Ok(h) if h.mappings.iter().any(|m| m.build == *id) => {
                    out.push(other);
                    break;
                }
                Ok(_) => {}
                Err(e) => unknown.push(format!("{other}/{}: {e}", a.header_name())),
            }
        }
    }
    out.sort();
    out.dedup();
    Ok((out, unknown))
}
