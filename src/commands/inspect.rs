//! `tmpl inspect BUILD`: every fact about one build, read offline.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::build::{self, Artifact, Build, FileFacts, Loaded};
use crate::checks;
use crate::cli::GlobalArgs;
use crate::error::Result;
use crate::header::{BuildInfo, Mapping, hex};
use crate::metadata::Metadata;
use crate::output::Output;
use crate::report::{Report, Style, human_bytes, sanitize};
use crate::rootfs::Superblock;
use crate::snapshot::SnapfileInfo;
use crate::storage::BuildId;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
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
    pub bytes: u64,
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
    pub own_bytes: u64,
    pub inherited_bytes: u64,
    pub nil_bytes: u64,
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
    /// With `--mappings`: every mapping of each header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings: Option<PerArtifact<Vec<Mapping>>>,
    /// With `--frames`: the builds section of each header (V4/V5; empty for V1–V3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<PerArtifact<Vec<BuildInfo>>>,
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
            .referenced_builds()
            .into_iter()
            .map(|id| MappedBuild {
                build_id: id,
                bytes: h.mappings.iter().filter(|m| m.build == id).map(|m| m.length).sum(),
                required_len: h.required_len(&id),
            })
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
    let mut names: Vec<String> = build::KNOWN_FILES.iter().map(|s| s.to_string()).collect();
    for a in Artifact::ALL {
        names.extend(build.artifact(a).compressed.iter().map(|(n, _)| n.clone()));
    }
    names.extend(build.extra_files.iter().cloned());
    for n in names {
        if let Ok(Some(f)) = build::stat(&build.path(&n)) {
            files.push(FileRow { name: n, len: f.len, allocated: f.allocated });
        }
    }
    let (filesystem, filesystem_error) = match checks::open_rootfs(build) {
        Ok(fs) => (Some(fs_facts(&fs.superblock)), None),
        Err(e) => (None, Some(e)),
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
        dependents: build::dependents(&build.storage_root, &build.id).unwrap_or_default(),
        snapfile_status: status(&build.snapfile),
        snapfile_error: match &build.snapfile {
            Loaded::Invalid(e) => Some(e.clone()),
            _ => None,
        },
        snapfile: build.snapfile.parsed().cloned(),
        filesystem,
        filesystem_error,
        mappings: None,
        frames: None,
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

pub fn run(args: Args, g: &GlobalArgs, out: &Output) -> Result<u8> {
    let storage = super::storage(g)?;
    let loc = storage.locate(&args.build)?;
    let build = Build::open(&loc)?;
    let mut report = inspect(&build)?;
    low_level(&build, args.mappings, args.frames, &mut report);
    Ok(out.emit(&report))
}

fn opt(s: Option<&str>) -> String {
    s.map(|v| sanitize(v).into_owned()).unwrap_or_else(|| "-".into())
}

impl InspectReport {
    fn render_artifact(&self, w: &mut dyn Write, style: &Style, name: &str, a: &ArtifactFacts) -> io::Result<()> {
        writeln!(w, "\n{}", style.bold(name))?;
        match &a.data {
            Some(d) => writeln!(w, "  data       {} ({} allocated)", human_bytes(d.len), human_bytes(d.allocated))?,
            None => writeln!(w, "  data       -")?,
        }
        if !a.compressed.is_empty() {
            writeln!(w, "  compressed {}", a.compressed.join(", "))?;
        }
        match (&a.header, a.header_status) {
            (Some(h), _) => {
                let kind = if h.synthesized { " (empty body: one self mapping)" } else { "" };
                writeln!(
                    w,
                    "  header     V{} block {} size {} generation {}{kind}",
                    h.format,
                    h.block_size,
                    human_bytes(h.size),
                    h.generation
                )?;
                writeln!(w, "  build      {}   base {}", h.build_id, h.base_build_id)?;
                writeln!(
                    w,
                    "  mappings   {}: own {}, inherited {}, zero {}",
                    h.mappings,
                    human_bytes(h.own_bytes),
                    human_bytes(h.inherited_bytes),
                    human_bytes(h.nil_bytes)
                )?;
                for b in &h.builds {
                    let me = if b.build_id == self.build_id { " (this build)" } else { "" };
                    writeln!(w, "    {} {}{me}", b.build_id, human_bytes(b.bytes))?;
                }
            }
            (None, "absent") => writeln!(w, "  header     - (headerless: data read as a full image)")?,
            (None, _) => writeln!(w, "  header     invalid: {}", opt(a.header_error.as_deref()))?,
        }
        Ok(())
    }
}

impl Report for InspectReport {
    fn command(&self) -> &'static str {
        "inspect"
    }

    fn ok(&self) -> bool {
        true
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{} {}", style.bold("build"), self.build_id)?;
        writeln!(w, "  path       {}", self.path.display())?;
        writeln!(w, "\n{}", style.bold("files"))?;
        for f in &self.files {
            writeln!(
                w,
                "  {:<24} {:>12} ({} allocated)",
                sanitize(&f.name),
                human_bytes(f.len),
                human_bytes(f.allocated)
            )?;
        }
        writeln!(w, "\n{}", style.bold("metadata.json"))?;
        match &self.metadata {
            Some(m) => {
                writeln!(
                    w,
                    "  version    {} → effective {}{}",
                    m.version,
                    m.effective_version,
                    if m.contents_ignored { " (contents ignored by the orchestrator)" } else { "" }
                )?;
                if let Some(t) = &m.template {
                    writeln!(w, "  build_id   {}", opt(t.build_id.as_deref()))?;
                    writeln!(w, "  kernel     {}", opt(t.kernel_version.as_deref()))?;
                    writeln!(w, "  firecracker {}", opt(t.firecracker_version.as_deref()))?;
                }
                if m.filesystem_only {
                    writeln!(w, "  filesystem_only: cold boot on resume")?;
                }
                if let Some(p) = &m.from_template_build_id {
                    writeln!(w, "  from       {p}")?;
                }
                if let Some(s) = &m.start_command {
                    writeln!(w, "  start      {}", sanitize(s))?;
                }
            }
            None => writeln!(
                w,
                "  {}{}",
                self.metadata_status,
                self.metadata_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )?,
        }
        self.render_artifact(w, style, "rootfs", &self.rootfs)?;
        if let Some(fs) = &self.filesystem {
            writeln!(
                w,
                "  ext4       {} in {} blocks of {}, uuid {}, label {:?}{}",
                human_bytes(fs.size),
                fs.blocks,
                fs.block_size,
                fs.uuid,
                sanitize(&fs.label),
                if fs.needs_recovery { ", NEEDS RECOVERY" } else { "" }
            )?;
        } else if let Some(e) = &self.filesystem_error {
            writeln!(w, "  ext4       unreadable: {}", sanitize(e))?;
        }
        self.render_artifact(w, style, "memfile", &self.memfile)?;
        writeln!(w, "\n{}", style.bold("snapfile"))?;
        match &self.snapfile {
            Some(s) => {
                let enc = s.encoding.map(|e| format!("{e:?}").to_lowercase()).unwrap_or_else(|| "unknown".into());
                let ver = s
                    .version
                    .clone()
                    .or(s.data_version.map(|d| format!("data version {d}")))
                    .unwrap_or_else(|| "-".into());
                writeln!(w, "  format     {enc}, {ver}, {}", s.arch.map(|a| a.name()).unwrap_or("unknown arch"))?;
                writeln!(w, "  size       {} bytes", s.len)?;
                if let Some(m) = s.mem_size_mib {
                    writeln!(
                        w,
                        "  memory     {m} MiB{}",
                        if s.huge_pages == Some(true) { " (hugepages)" } else { "" }
                    )?;
                }
                writeln!(
                    w,
                    "  crc64      {} stored 0x{:016x}, computed 0x{:016x} ({})",
                    if s.crc_ok { "ok" } else { "MISMATCH" },
                    s.stored_crc,
                    s.computed_crc,
                    s.computed_crc
                )?;
            }
            None => writeln!(
                w,
                "  {}{}",
                self.snapfile_status,
                self.snapfile_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )?,
        }
        writeln!(w, "\n{}", style.bold("lineage"))?;
        let list = |v: &[BuildId]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
            }
        };
        writeln!(w, "  reads from {}", list(&self.dependencies))?;
        writeln!(w, "  read by    {}", list(&self.dependents))?;
        self.render_low_level(w, style)
    }
}

impl InspectReport {
    fn render_low_level(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        if let Some(m) = &self.mappings {
            for (name, maps) in [("rootfs", &m.rootfs), ("memfile", &m.memfile)] {
                writeln!(w, "\n{}", style.bold(&format!("{name} mappings ({})", maps.len())))?;
                if maps.is_empty() {
                    writeln!(w, "  none (no header)")?;
                    continue;
                }
                writeln!(w, "  {:>14} {:>14}  {:<36} {:>14}", "offset", "length", "build", "storage offset")?;
                for x in maps {
                    let b = if x.is_nil() { "- (zeros)".to_string() } else { x.build.to_string() };
                    writeln!(w, "  {:>14} {:>14}  {:<36} {:>14}", x.offset, x.length, b, x.storage_offset)?;
                }
            }
        }
        if let Some(f) = &self.frames {
            for (name, builds) in [("rootfs", &f.rootfs), ("memfile", &f.memfile)] {
                writeln!(w, "\n{}", style.bold(&format!("{name} builds section")))?;
                if builds.is_empty() {
                    writeln!(w, "  none (V1–V3 header, or no header: data files are uncompressed)")?;
                    continue;
                }
                for b in builds {
                    let sha = b.known_checksum().map_or_else(|| "-".to_string(), |c| hex(&c));
                    let t = &b.frames;
                    let kind = if t.is_compressed() {
                        format!("{}, {} frames", t.compression.name(), t.frames.len())
                    } else {
                        "uncompressed".to_string()
                    };
                    writeln!(w, "  {}  size {}  {kind}", b.build, b.file_size)?;
                    writeln!(w, "    sha256 {sha}")?;
                    if t.is_compressed() {
                        writeln!(
                            w,
                            "    {:>6} {:>14} {:>10} {:>14} {:>10}",
                            "frame", "U offset", "U size", "C offset", "C size"
                        )?;
                        for (i, fr) in t.frames.iter().enumerate() {
                            writeln!(
                                w,
                                "    {:>6} {:>14} {:>10} {:>14} {:>10}",
                                i, fr.start_u, fr.size_u, fr.start_c, fr.size_c
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
