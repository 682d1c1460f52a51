//! `tmpl inspect BUILD`: every fact about one build, read offline.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::build::{self, Build, FileFacts, Loaded};
use crate::checks::contents;
use crate::error::Result;
use crate::error::{Error, UsageError};
use crate::header::{BuildInfo, Mapping, hex};
use crate::metadata::Metadata;
use crate::report::{Report, Style, human_bytes, sanitize};
use crate::rootfs::boot::{
    self, BootFacts, CommandFacts, End, EnvdStart, Lookup, Program, ProgramKind, Resolution, Scan,
};
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
    /// Requests sent to a remote storage by this run, and the bytes they fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::Stats>,
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
    let resolution = boot::resolve(&fs, path);
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
                    Err(e) => report.content_base64 = Some(base64(e.as_bytes())),
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
    report.remote = crate::remote::mount::store_of(&build.storage_root).map(|s| s.stats());
    Ok(Outcome::InspectPath(Box::new(report)))
}

/// A sum of untrusted lengths: its size, or that it overflowed.
fn sum_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "more than 2^64 bytes (the lengths overflow)".to_string(), human_bytes)
}

/// Standard base64 (RFC 4648) with padding.
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Report for PathReport {
    fn command(&self) -> &'static str {
        "inspect"
    }

    fn ok(&self) -> bool {
        true
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{} {}", style.bold(&sanitize(&self.path)), sanitize(&self.resolution.describe()))?;
        if let Some(e) = self.resolution.found() {
            writeln!(
                w,
                "  {}  {}  mode {:04o}  uid {} gid {}  {}",
                sanitize(&e.path),
                kind_name(e.kind),
                e.mode,
                e.uid,
                e.gid,
                human_bytes(e.len)
            )?;
        }
        if let Some(p) = &self.program {
            writeln!(w, "  program  {}", describe_program(p))?;
        }
        if let Some(h) = &self.sha256 {
            writeln!(w, "  sha256   {h}")?;
        }
        if let Some(why) = &self.sha256_skipped {
            writeln!(w, "  sha256   not computed: {why}")?;
        }
        if let Some(entries) = &self.entries {
            for e in entries {
                writeln!(w, "  {:<10} {}", kind_name(e.kind), sanitize(&e.name))?;
            }
        }
        if let Some(r) = &self.remote {
            writeln!(
                w,
                "  remote   {} requests ({} GET, {} HEAD), {} fetched",
                r.requests,
                r.get,
                r.head,
                human_bytes(r.bytes_read)
            )?;
        }
        if let Some(t) = &self.content_utf8 {
            write!(w, "{t}")?;
        }
        Ok(())
    }
}

fn render_commands(w: &mut dyn Write, cmds: &[CommandFacts], indent: &str) -> io::Result<()> {
    for c in cmds {
        let mut notes = Vec::new();
        if c.exec {
            notes.push("exec".to_string());
        }
        if c.background {
            notes.push("background".to_string());
        }
        match &c.lookup {
            Lookup::Broken { target } => notes.push(format!("CANNOT RUN: {}", contents::why(&target.resolution))),
            Lookup::NotInPath { .. } => notes.push("NOT FOUND in PATH".to_string()),
            Lookup::Dynamic => notes.push("not checked (variable)".to_string()),
            _ => {}
        }
        if let Some(f) = &c.flags {
            if f.problems.is_empty() {
                notes.push(format!("envd flags ok for {}", f.era));
            } else {
                let p: Vec<String> = f.problems.iter().map(|p| p.describe()).collect();
                notes.push(format!("BAD ENVD FLAGS: {}", p.join("; ")));
            }
        }
        let at = c.at.rsplit(':').next().unwrap_or("");
        let notes = if notes.is_empty() { String::new() } else { format!("   [{}]", notes.join(", ")) };
        writeln!(w, "{indent}{at:>4}  {}{notes}", sanitize(&c.words.join(" ")))?;
        if !c.nested.is_empty() {
            render_commands(w, &c.nested, &format!("{indent}      "))?;
        }
    }
    Ok(())
}

fn render_boot(w: &mut dyn Write, style: &Style, b: &BootFacts) -> io::Result<()> {
    writeln!(w, "\n{}", style.bold("boot"))?;
    let t = &b.init.target;
    let what = match (&t.resolution.end, &t.program) {
        (_, Some(p)) => describe_program(p),
        (End::Found { .. }, None) => contents::why(&t.resolution),
        (_, None) => format!("BROKEN: {}", contents::why(&t.resolution)),
    };
    writeln!(w, "  init       {}", sanitize(&t.resolution.describe()))?;
    writeln!(w, "             {}", what)?;
    if let Some(s) = &b.init.script {
        writeln!(
            w,
            "  script     {}{}",
            sanitize(&s.path),
            if s.keeps_running { "" } else { " — CAN REACH ITS END (PID 1 would exit)" }
        )?;
        render_commands(w, &s.commands, "           ")?;
    }
    if let Some(cmds) = &b.init.inittab {
        writeln!(w, "  inittab")?;
        render_commands(w, cmds, "           ")?;
    }
    if let Some(sd) = &b.systemd {
        match &sd.unit {
            Some(u) => {
                let enabled: Vec<&str> = sd.wanted_by.iter().filter(|(_, ok)| *ok).map(|(l, _)| l.as_str()).collect();
                writeln!(
                    w,
                    "  systemd    {}{}, {}",
                    sanitize(u),
                    if sd.masked { " MASKED" } else { "" },
                    if enabled.is_empty() {
                        "NOT ENABLED".to_string()
                    } else {
                        format!("enabled by {}", enabled.join(", "))
                    }
                )?;
                render_commands(w, &sd.exec_start, "           ")?;
            }
            None => writeln!(w, "  systemd    no envd.service")?,
        }
    }
    if let Some(o) = &b.openrc {
        writeln!(
            w,
            "  openrc     {} in runlevels: {}",
            o.script,
            if o.runlevels.is_empty() { "none".into() } else { o.runlevels.join(", ") }
        )?;
    }
    for e in &b.envd {
        let desc = match &e.target.program {
            Some(p) => format!("{}, {}", describe_program(p), human_bytes(p.len)),
            None => format!("MISSING: {}", contents::why(&e.target.resolution)),
        };
        writeln!(w, "  envd       {}: {desc}", sanitize(&e.path))?;
        if let Some(bf) = &e.binary {
            let mut parts = Vec::new();
            if let Some(v) = &bf.version {
                parts.push(format!("version {}", sanitize(v)));
            }
            if let Some(era) = bf.era {
                parts.push(format!("era {era} (from {})", bf.era_source.unwrap_or("?")));
            }
            if let Some(go) = &bf.go {
                let mut g = sanitize(&go.go_version).into_owned();
                if let Some(r) = &go.vcs_revision {
                    g.push_str(&format!(", commit {}", sanitize(r)));
                }
                if let Some(t) = &go.vcs_time {
                    g.push_str(&format!(" ({})", sanitize(t)));
                }
                parts.push(g);
            }
            if !bf.looks_like_envd {
                parts.push("does not look like envd".into());
            }
            if !parts.is_empty() {
                writeln!(w, "             {}", parts.join("; "))?;
            }
        }
    }
    let started: Vec<&str> = b
        .envd_started_by
        .iter()
        .map(|s| match s {
            EnvdStart::AsInit => "init is envd",
            EnvdStart::Wrapper => "the init script",
            EnvdStart::Systemd => "systemd envd.service",
            EnvdStart::Inittab => "busybox inittab",
            EnvdStart::Openrc => "OpenRC",
        })
        .collect();
    writeln!(
        w,
        "  envd start {}",
        if started.is_empty() { "NOTHING STARTS ENVD".to_string() } else { started.join(", ") }
    )?;
    let rc = &b.resolv_conf.resolution;
    let rc_state = match &rc.end {
        End::Found { entry } if entry.kind == FileKind::Regular => {
            format!("{} ({})", sanitize(&rc.describe()), human_bytes(entry.len))
        }
        _ => sanitize(&contents::why(rc)).into_owned(),
    };
    writeln!(w, "  resolv     {rc_state}")?;
    if let Some(m) = &b.e2b_marker {
        let kv: Vec<String> = m.entries.iter().map(|(k, v)| format!("{}={}", sanitize(k), sanitize(v))).collect();
        writeln!(w, "  /.e2b      {}", kv.join(" "))?;
    }
    writeln!(
        w,
        "  read       {} through the layers ({} for the init chain)",
        human_bytes(b.bytes_read),
        human_bytes(b.init.bytes_read)
    )?;
    Ok(())
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
    }
}

/// "static x86_64 ELF (envd)", "#!/bin/sh script (interpreter /bin/sh: ok)", ...
pub fn describe_program(p: &Program) -> String {
    let kind = match p.kind {
        ProgramKind::Systemd => " (systemd)",
        ProgramKind::Busybox => " (busybox)",
        ProgramKind::Envd => " (envd)",
        _ => "",
    };
    let mut s = match (&p.elf, &p.shebang) {
        (Some(e), _) => {
            let link = if e.is_static { "static".to_string() } else { "dynamic".to_string() };
            let mut d = format!("{link} {} ELF{kind}", e.machine_name());
            if p.wrong_arch {
                d.push_str(" — WRONG ARCHITECTURE");
            }
            if let Some(l) = &p.loader {
                d.push_str(&format!(
                    ", loader {} {}",
                    sanitize(&l.resolution.path),
                    if l.usable { "present" } else { "MISSING" }
                ));
            }
            d
        }
        (None, Some(sb)) => {
            let ok = p.interpreter.as_ref().is_some_and(|i| i.usable);
            format!(
                "#!{}{} script, interpreter {}",
                sanitize(&sb.interpreter),
                sb.arg.as_deref().map(|a| format!(" {}", sanitize(a))).unwrap_or_default(),
                if ok { "present" } else { "MISSING or unusable" }
            )
        }
        (None, None) if p.kind == ProgramKind::Empty => "empty file".to_string(),
        (None, None) => format!("not runnable ({})", sanitize(p.not_elf.as_deref().unwrap_or("?"))),
    };
    if !p.executable() {
        s.push_str(&format!(", NOT EXECUTABLE (mode {:04o})", p.mode));
    }
    s
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
                    sum_bytes(h.own_bytes),
                    sum_bytes(h.inherited_bytes),
                    sum_bytes(h.nil_bytes)
                )?;
                for b in &h.builds {
                    let me = if b.build_id == self.build_id { " (this build)" } else { "" };
                    writeln!(w, "    {} {}{me}", b.build_id, sum_bytes(b.bytes))?;
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
        self.access_denied.is_empty()
    }

    /// A permission problem is the environment's: exit 4, with every fact that could be read.
    fn failure_code(&self) -> u8 {
        crate::exit_code::ENVIRONMENT
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{} {}", style.bold("build"), self.build_id)?;
        writeln!(w, "  path       {}", self.path.display())?;
        for a in &self.access_denied {
            writeln!(w, "  {} {}", style.severity(crate::report::Severity::Error), sanitize(&a.denied.to_string()))?;
        }
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
        if !self.leftovers.is_empty() {
            writeln!(w, "\n{}", style.bold("left by tmpl (tmpl backups BUILD)"))?;
            for l in &self.leftovers {
                writeln!(
                    w,
                    "  {:<40} {:>12} {}{}",
                    sanitize(&l.name),
                    human_bytes(l.bytes),
                    serde_json::to_value(l.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                    if l.in_use { format!(", in use by {}", l.holders.join(", ")) } else { String::new() }
                )?;
            }
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
        for a in &self.rootfs_anomalies {
            writeln!(w, "  NOT READ   {}", sanitize(&a.to_string()))?;
        }
        if let Some(b) = &self.boot {
            render_boot(w, style, b)?;
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
                        "  memory     mem_size_mib {m} ({m} MiB){}",
                        if s.huge_pages == Some(true) { ", hugepages" } else { "" }
                    )?;
                }
                if let Some(r) = &s.regions {
                    let list: Vec<String> =
                        r.iter().map(|x| format!("{} at 0x{:x}", human_bytes(x.size), x.base_address)).collect();
                    writeln!(w, "  regions    {}", if list.is_empty() { "none".to_string() } else { list.join(", ") })?;
                }
                if let Some(e) = s.state_error.as_ref().or(s.header_error.as_ref()) {
                    writeln!(w, "  decode     {}", sanitize(e))?;
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
