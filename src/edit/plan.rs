//! Plans: what an edit will write into a build's rootfs and why, decided from the image as it is
//! (read through the layered device) before anything is written. `--dry-run` prints the plan;
//! `apply` executes exactly it.

use std::path::PathBuf;

use serde::Serialize;
use sha2::Digest;

use super::envd_file::HostEnvd;
use super::render;
use crate::build::Build;
use crate::envd::{self, Problem};
use crate::error::{Error, Result, UsageError};
use crate::rootfs::boot::{self, Context, End, Lookup, ProgramKind};
use crate::rootfs::{FileKind, Rootfs, script};
use crate::vocab::Artifact;
use crate::vocab::BuildId;

/// Where E2B's unit lives and the link that enables it (e2b-formats.md §5).
pub const UNIT_PATH: &str = "/etc/systemd/system/envd.service";
pub const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/envd.service";

/// How envd is made to start at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `/sbin/init` is envd itself.
    Init,
    /// `/sbin/init` is tmpl's sh wrapper that mounts, logs to the console and supervises envd.
    Wrapper,
    /// The systemd unit and wants link E2B uses.
    Service,
}

/// `--as`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    Auto,
    Init,
    Wrapper,
    Service,
}

/// How bytes get into the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// e2fsprogs' debugfs: no root, no mount.
    Debugfs,
    /// A kernel loop mount (root).
    Mount,
}

/// Where the result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// Replace the build's rootfs.ext4 (after the guards allow it).
    InPlace,
    /// Write a new, self-contained build.
    Fork { new_build_id: BuildId },
}

/// What a file written into the image holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Content {
    /// Copied from a host file.
    Host { path: PathBuf },
    /// Rendered text.
    Text { text: String },
}

/// One change to the image. Paths are canonical inside the image (no symlinked components).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    Mkdir {
        path: String,
        mode: u16,
    },
    Write {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaces: Option<FileKind>,
        #[serde(skip_serializing)]
        content: Content,
        mode: u16,
        uid: u32,
        gid: u32,
        len: u64,
        sha256: String,
    },
    Link {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaces: Option<FileKind>,
        target: String,
    },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Mkdir { path, .. } | Change::Write { path, .. } | Change::Link { path, .. } => path,
        }
    }
}

/// Why a dry run's plan would be refused if applied (the guards' reasons, all at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub message: String,
    pub reasons: Vec<String>,
}

impl Refusal {
    /// From a refusal error; other errors are not refusals.
    pub fn from_error(e: Error) -> std::result::Result<Refusal, Error> {
        match e {
            Error::Refused { message, reasons } => Ok(Refusal { message, reasons }),
            other => Err(other),
        }
    }

    /// Merge another refusal's reasons into this one.
    pub fn merge(mut self, other: Refusal) -> Refusal {
        self.reasons.push(other.message);
        self.reasons.extend(other.reasons);
        self
    }
}

/// A complete edit, decided.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The command that made it (`inject-envd`, `rewrite-wrapper`).
    #[serde(skip)]
    pub command: &'static str,
    pub build_id: BuildId,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub mode_reason: String,
    pub backend: Backend,
    /// The envd being installed (inject-envd) or kept (rewrite-wrapper: its path in the image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd: Option<HostEnvd>,
    pub envd_path: String,
    pub envd_args: Vec<String>,
    /// Flags of the old wrapper that were dropped (rewrite-wrapper).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_args: Vec<String>,
    pub changes: Vec<Change>,
    /// The snapshot files go to the backup and metadata becomes filesystem_only.
    pub drop_snapshot: bool,
    pub backup: bool,
    /// The journal is replayed on the work copy first (debugfs ignores it).
    pub replay_journal: bool,
    /// The header has nil ranges or is missing parts: it is rewritten to map every block of the
    /// (full) data file to this build, so no written block lands in a nil range.
    pub rewrite_header: bool,
    /// Kernel and Firecracker versions written into metadata.json when tmpl writes one (fork,
    /// --drop-snapshot): the build's own, or --kernel-version/--firecracker-version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<(String, String)>,
    pub warnings: Vec<String>,
    /// A dry run only: what the guards would refuse (the plan is shown anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Options common to inject-envd and rewrite-wrapper.
#[derive(Clone, Debug)]
pub struct EditOptions {
    pub backend: Backend,
    /// `--fork` / `--fork-id ID`: `Some(None)` is a fresh random ID.
    pub fork: Option<Option<BuildId>>,
    pub drop_snapshot: bool,
    pub replay_journal: bool,
    pub backup: bool,
    pub purge: bool,
    /// Versions for metadata.json when the build's own are missing (legacy builds).
    pub kernel_version: Option<String>,
    pub firecracker_version: Option<String>,
    /// Plan only (`--dry-run`).
    pub dry_run: bool,
}

/// Where a path goes inside the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The path with its directory made canonical.
    pub path: String,
    /// Directories to create first, outermost first.
    pub missing_dirs: Vec<String>,
    /// What is there now (not following a final symlink).
    pub existing: Option<FileKind>,
}

/// Place `path` in the image: canonicalize its directory (so `/sbin/init` in a merged-usr image
/// is written as `/usr/sbin/init`), list the directories to create, and see what is there.
pub fn place(fs: &Rootfs, path: &str) -> Result<Placement> {
    let bad = |m: String| Error::invalid("rootfs.ext4", m);
    let (dir, name) = path.rsplit_once('/').ok_or_else(|| bad(format!("{path} is not absolute")))?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad(format!("{path} does not name a file")));
    }
    let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    // The deepest existing ancestor.
    let mut base = "/".to_string();
    let mut i = 0;
    while i < comps.len() {
        let cand = format!("{}/{}", base.trim_end_matches('/'), comps[i]);
        match boot::resolve(fs, &cand).end {
            End::Found { entry } if entry.kind == FileKind::Directory => {
                base = entry.path;
                i += 1;
            }
            End::Found { entry } => return Err(bad(format!("{cand} is a {:?}, not a directory", entry.kind))),
            End::Missing { .. } => break,
            End::Dangling { link, .. } => {
                return Err(bad(format!("{link} is a dangling link where a directory is needed")));
            }
            End::Loop { path } => return Err(bad(format!("{path} is a symlink loop"))),
            End::Unreadable { path, message } => return Err(bad(format!("{path}: {message}"))),
        }
    }
    let mut missing = Vec::new();
    for c in &comps[i..] {
        base = format!("{}/{c}", base.trim_end_matches('/'));
        missing.push(base.clone());
    }
    let full = format!("{}/{name}", base.trim_end_matches('/'));
    let existing =
        if missing.is_empty() { fs.lstat(&full).map_err(|e| bad(e.to_string()))?.map(|e| e.kind) } else { None };
    if existing == Some(FileKind::Directory) {
        return Err(bad(format!("{full} is a directory; refusing to replace it")));
    }
    Ok(Placement { path: full, missing_dirs: missing, existing })
}

/// Builder of a change list that creates each missing directory once.
#[derive(Default)]
pub struct Changes {
    pub list: Vec<Change>,
}

impl Changes {
    fn dirs(&mut self, p: &Placement) {
        for d in &p.missing_dirs {
            if !self.list.iter().any(|c| matches!(c, Change::Mkdir { path, .. } if path == d)) {
                self.list.push(Change::Mkdir { path: d.clone(), mode: 0o755 });
            }
        }
    }

    pub fn write(&mut self, fs: &Rootfs, path: &str, content: Content, mode: u16) -> Result<String> {
        let p = place(fs, path)?;
        self.dirs(&p);
        let (len, sha256) = match &content {
            Content::Text { text } => (text.len() as u64, crate::rootfs::hex(&sha2::Sha256::digest(text.as_bytes()))),
            Content::Host { path } => {
                let m = std::fs::metadata(path).map_err(|e| Error::read(path, e))?;
                (m.len(), String::new())
            }
        };
        self.list.push(Change::Write {
            path: p.path.clone(),
            replaces: p.existing,
            content,
            mode,
            uid: 0,
            gid: 0,
            len,
            sha256,
        });
        Ok(p.path)
    }

    /// The directories the wrapper mounts on, created when the image lacks them (so the wrapper
    /// never needs `mkdir` for them at boot).
    pub fn mountpoints(&mut self, fs: &Rootfs) {
        for (d, mode) in [("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755), ("/tmp", 0o1777)] {
            if matches!(boot::resolve(fs, d).end, End::Missing { .. }) {
                self.list.push(Change::Mkdir { path: d.to_string(), mode });
            }
        }
    }

    pub fn link(&mut self, fs: &Rootfs, path: &str, target: &str) -> Result<String> {
        let p = place(fs, path)?;
        self.dirs(&p);
        self.list.push(Change::Link { path: p.path.clone(), replaces: p.existing, target: target.to_string() });
        Ok(p.path)
    }
}

/// Check extra envd arguments against the era of the envd being installed. Removed or unknown
/// flags are refused with the reason (envd would exit 2).
pub fn check_envd_args(args: &[String], era: &'static envd::Era) -> Result<()> {
    let (parsed, consumed) = envd::parse_args_counted(args);
    if let Some(stray) = args.get(consumed) {
        return Err(Error::refused(
            format!("--envd-arg {stray:?} is not a flag: envd stops reading flags there and ignores the rest"),
            vec![],
        ));
    }
    let problems = envd::check(&parsed, era);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::refused(
        "envd would exit with status 2 on these arguments (Go flag error; as PID 1: \"Attempted to kill init! exitcode=0x00000200\")",
        problems
            .iter()
            .map(|p| {
                let extra = match p {
                    Problem::Removed { .. } | Problem::Unknown { .. } => {
                        format!(" (this envd: {}; it accepts -{})", era.name, era.flags().join(", -"))
                    }
                    _ => String::new(),
                };
                format!("{}{extra}", p.describe())
            })
            .collect(),
    ))
}

/// How `auto` decides, given the image.
pub fn choose_mode(fs: &Rootfs, ctx: &Context, choice: ModeChoice) -> Result<(Mode, String)> {
    let init = boot::resolve(fs, &ctx.init);
    let init_kind = init.found().filter(|e| e.kind == FileKind::Regular).and_then(|e| boot::examine(fs, e, ctx).ok());
    let is_systemd = init_kind.as_ref().is_some_and(|p| p.kind == ProgramKind::Systemd);
    let shell = shell_in_image(fs, ctx);
    match choice {
        ModeChoice::Init => Ok((Mode::Init, "asked for (--as init): /sbin/init will be envd itself".into())),
        ModeChoice::Wrapper => match shell {
            Ok(_) => Ok((Mode::Wrapper, "asked for (--as wrapper)".into())),
            Err(why) => Err(Error::refused(
                "--as wrapper needs a working /bin/sh in the image",
                vec![why, "use --as init (envd as PID 1) or install a shell (busybox) first".into()],
            )),
        },
        ModeChoice::Service => {
            if is_systemd {
                Ok((Mode::Service, "asked for (--as service)".into()))
            } else {
                Err(Error::refused(
                    "--as service needs systemd as init",
                    vec![format!(
                        "{} is {}",
                        ctx.init,
                        init_kind.map(|p| format!("{:?}", p.kind).to_lowercase()).unwrap_or_else(|| "missing".into())
                    )],
                ))
            }
        }
        ModeChoice::Auto => Ok(if is_systemd {
            (Mode::Service, format!("auto: {} is systemd, so envd runs as E2B's envd.service", ctx.init))
        } else if let Ok(sh) = shell {
            (
                Mode::Wrapper,
                format!("auto: no systemd, and {sh} works, so a wrapper mounts /proc, /sys, /dev and supervises envd"),
            )
        } else {
            (Mode::Init, "auto: no systemd and no working /bin/sh, so /sbin/init will be envd itself".to_string())
        }),
    }
}

/// `/bin/sh` resolves to something runnable in the image.
pub fn shell_in_image(fs: &Rootfs, ctx: &Context) -> std::result::Result<String, String> {
    let r = boot::resolve(fs, "/bin/sh");
    let Some(e) = r.found() else { return Err(format!("/bin/sh: {}", crate::checks::contents::why(&r))) };
    let p = boot::examine(fs, e, ctx).map_err(|e| e.to_string())?;
    let t = boot::Target { resolution: r.clone(), program: Some(p), error: None };
    if t.runnable() { Ok(r.describe()) } else { Err(format!("{} cannot run in the image", r.describe())) }
}

/// Which programs the wrapper needs that the image lacks (warnings, not refusals: the wrapper
/// still starts envd, but without them it cannot mount or back off).
pub fn wrapper_tool_warnings(fs: &Rootfs, ctx: &Context, text: &str) -> Vec<String> {
    let s = script::parse(text);
    let mut missing: Vec<(String, Vec<usize>)> = Vec::new();
    for c in &s.commands {
        let prog = c.program();
        if c.program_is_dynamic()
            || script::BUILTINS.contains(&prog)
            || s.functions.iter().any(|f| f == prog)
            || script::is_envd_name(prog)
        {
            continue;
        }
        if let Some((_, lines)) = missing.iter_mut().find(|(p, _)| p == prog) {
            lines.push(c.line);
            continue;
        }
        let found = script::search_path(&s).iter().any(|d| {
            let p = format!("{d}/{prog}");
            let r = boot::resolve(fs, &p);
            r.found().is_some_and(|e| {
                boot::examine(fs, e, ctx)
                    .map(|pr| boot::Target { resolution: r.clone(), program: Some(pr), error: None }.runnable())
                    .unwrap_or(false)
            })
        });
        if !found {
            missing.push((prog.to_string(), vec![c.line]));
        }
    }
    missing
        .into_iter()
        .map(|(p, lines)| {
            let l: Vec<String> = lines.iter().map(|n| n.to_string()).collect();
            format!("the image has no runnable `{p}`: the wrapper's line(s) {} will fail at boot", l.join(", "))
        })
        .collect()
}

/// The envd binary behind an init chain's wrapper, and the arguments it is started with.
pub struct WrapperFacts {
    pub script: String,
    pub envd: String,
    pub args: Vec<String>,
    /// Other commands of the old wrapper that the template does not run (shown to the operator).
    pub others: Vec<String>,
}

/// Commands the template covers itself (mounting the kernel filesystems, console output, PATH).
fn template_covers(words: &[String]) -> bool {
    let prog = words.first().map(|w| w.rsplit('/').next().unwrap_or(w)).unwrap_or("");
    match prog {
        "echo" | "printf" | "mkdir" | "sleep" | "export" | "set" | "true" | ":" | "[" | "test" | "exec" | "wait" => {
            true
        }
        "mount" => words.iter().any(|w| matches!(w.as_str(), "proc" | "sysfs" | "devtmpfs" | "devpts" | "tmpfs")),
        _ => false,
    }
}

/// Find the wrapper and the real envd binary in an image whose init is a script (following a
/// `/usr/local/bin/envd` script that execs `envd.real`).
pub fn find_wrapper(fs: &Rootfs, ctx: &Context) -> Result<WrapperFacts> {
    let facts = boot::gather(fs, &Context { scan: boot::Scan::WhenFlagsNeedIt, ..ctx.clone() });
    let Some(s) = &facts.init.script else {
        let what = match &facts.init.target.program {
            Some(p) => format!("{:?}", p.kind).to_lowercase(),
            None => crate::checks::contents::why(&facts.init.target.resolution),
        };
        return Err(Error::invalid(
            "rootfs.ext4",
            format!("{} is not a wrapper script ({what}); use tmpl inject-envd --as wrapper", ctx.init),
        ));
    };
    for c in s.commands.iter().flat_map(|c| c.walk()) {
        if !c.envd {
            continue;
        }
        let bin = match (&c.flags, &c.lookup) {
            (Some(f), _) if f.binary.is_some() => f.binary.clone(),
            (_, Lookup::Found { target } | Lookup::Broken { target }) => {
                target.program.as_ref().filter(|p| p.elf.is_some()).map(|p| p.path.clone())
            }
            _ => None,
        };
        if let Some(b) = bin {
            // Arguments of the outermost envd-named command in the init script itself.
            let outer = s.commands.iter().find(|oc| oc.envd).unwrap_or(c);
            let others = s
                .commands
                .iter()
                .filter(|oc| !oc.envd && !template_covers(&oc.words))
                .map(|oc| oc.words.join(" "))
                .collect();
            return Ok(WrapperFacts { script: s.path.clone(), envd: b, args: outer.words[1..].to_vec(), others });
        }
    }
    Err(Error::invalid(
        "rootfs.ext4",
        format!("{} does not start an envd binary that exists in the image; use tmpl inject-envd", s.path),
    ))
}

/// Which builds of the storage read this one's blocks, as far as an in-place edit must know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dependents {
    /// Builds whose headers map blocks of this build.
    pub builds: Vec<BuildId>,
    /// Headers tmpl cannot read but the orchestrator might (a newer format version, a tmpl
    /// cap, an unreadable file): whether they read this build is unknown, so they block.
    pub unknown: Vec<String>,
    /// Headers that neither tmpl nor the orchestrator can read (truncated, bad magic, a failed
    /// checksum): no served build can use them, so they do not block (the plan warns).
    pub unreadable: Vec<String>,
}

/// Would E2B's orchestrator fail on this header too? Its reader (`header.DeserializeBytes`,
/// e2b-dev/infra packages/shared/pkg/storage/header) rejects a file shorter than the 64-byte
/// metadata, a V1–V3 body that ends inside a 40-byte mapping, a V4/V5 block too short for its
/// length prefix, an LZ4 frame with a bad magic or a failed checksum, and an inner block that
/// ends early. Everything else — an unknown or newer version, a frame table type tmpl does not
/// know, caps that are tmpl's own — might be readable to some orchestrator, so it stays unknown.
pub fn orchestrator_rejects(e: &crate::header::ParseError) -> bool {
    use crate::compress::Lz4Error;
    use crate::header::ParseError as P;
    match e {
        P::TooShort { .. } | P::BodyNotMultiple { .. } | P::FramedTooShort { .. } | P::InnerTruncated { .. } => true,
        P::Lz4(l) => matches!(
            l,
            Lz4Error::BadMagic(_)
                | Lz4Error::HeaderChecksum { .. }
                | Lz4Error::BlockChecksum { .. }
                | Lz4Error::ContentChecksum { .. }
                | Lz4Error::Truncated(_)
                | Lz4Error::CorruptBlock { .. }
        ),
        _ => false,
    }
}

/// The builds of the storage whose headers map `id`'s blocks, each header classified by who can
/// read it (see [`Dependents`]).
pub fn edit_dependents(storage_root: &std::path::Path, id: &BuildId) -> Result<Dependents> {
    let rd = std::fs::read_dir(storage_root).map_err(|e| Error::read(storage_root, e))?;
    let mut out = Dependents::default();
    for entry in rd {
        let entry = entry.map_err(|e| Error::read(storage_root, e))?;
        let Some(other) = entry.file_name().to_str().and_then(|n| BuildId::parse(n).ok()) else { continue };
        if other == *id {
            continue;
        }
        for a in Artifact::ALL {
            let p = entry.path().join(a.header_name());
            let what = format!("{other}/{}", a.header_name());
            match crate::vocab::read_small(&p, crate::header::MAX_HEADER_BYTES) {
                Ok(None) => {}
                Err(e) => out.unknown.push(format!("{what}: {e}")),
                Ok(Some(bytes)) => match crate::header::parse(&bytes) {
                    Ok(h) if h.mappings.iter().any(|m| m.build == *id) => {
                        out.builds.push(other);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if orchestrator_rejects(&e) => out.unreadable.push(format!("{what}: {e}")),
                    Err(e) => out.unknown.push(format!("{what}: {e}")),
                },
            }
        }
    }
    out.builds.sort();
    out.builds.dedup();
    Ok(out)
}

/// Refusal reasons for editing `build` in place (empty: allowed).
pub fn in_place_refusals(build: &Build, opts: &EditOptions, deps: &Dependents) -> Vec<String> {
    let mut reasons = Vec::new();
    if build.has_memory_snapshot() && !opts.drop_snapshot {
        reasons.push(
            "the build has a memory snapshot (snapfile/memfile): its guest RAM holds the old envd and the old \
             page cache, so a resumed sandbox would see a filesystem that changed under it. Use --fork (a new \
             build, cold boot) or --drop-snapshot (keep the build ID, resume becomes a cold boot)"
                .to_string(),
        );
    }
    if !deps.builds.is_empty() {
        let list: Vec<String> = deps.builds.iter().map(|d| d.to_string()).collect();
        reasons.push(format!(
            "other builds read blocks of this build's rootfs: {}. Changing it would change them too; use --fork",
            list.join(", ")
        ));
    }
    if !deps.unknown.is_empty() {
        reasons.push(format!(
            "whether other builds read this one cannot be told: their headers cannot be read by tmpl but might be by \
             the orchestrator: {}. Repair them, or use --fork",
            deps.unknown.join("; ")
        ));
    }
    if let Err(why) = full_image(build) {
        reasons.push(format!("{why}; only --fork can edit it (it assembles a full image from the layers)"));
    }
    let data = build.path(Artifact::Rootfs.data_name());
    if std::fs::symlink_metadata(&data).is_ok_and(|m| m.file_type().is_symlink()) {
        reasons.push(format!(
            "{} is a symlink: an in-place edit would replace the link, not the image it points to; use --fork",
            data.display()
        ));
    }
    reasons
}

/// Is the build's rootfs.ext4 a full image (every block of the device at the same offset in
/// this build's own data file)? Nil ranges are allowed: they read as zeros and the file holds
/// zeros (or holes) there.
pub fn full_image(build: &Build) -> std::result::Result<(), String> {
    let files = &build.rootfs;
    if !files.compressed.is_empty() {
        let names: Vec<&str> = files.compressed.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!("the rootfs is stored compressed ({})", names.join(", ")));
    }
    let Some(data) = files.data else {
        return Err("the build has no rootfs.ext4 of its own (all its blocks come from other builds)".into());
    };
    let Some(h) = files.effective_header(build.id) else {
        return Err("the rootfs header cannot be read".into());
    };
    if let Some(m) = h.mappings.iter().find(|m| !m.is_nil() && m.build != build.id) {
        return Err(format!("the rootfs is a diff layer: it maps blocks to build {}", m.build));
    }
    for m in h.mappings.iter().filter(|m| !m.is_nil()) {
        if m.storage_offset != m.offset {
            return Err("the rootfs is a compacted layer (blocks stored at other offsets than on the device)".into());
        }
    }
    if data.len < h.size {
        return Err(format!(
            "rootfs.ext4 is {} bytes, shorter than the device ({} bytes): a compacted layer",
            data.len, h.size
        ));
    }
    Ok(())
}

/// Does the header need rewriting after an in-place edit (a stored header with nil ranges, in
/// which new blocks would be invisible)?
pub fn header_needs_rewrite(build: &Build) -> bool {
    build.rootfs.header.parsed().is_some_and(|h| {
        // V4/V5 record the data file's size and SHA-256, which the edit changes.
        h.format() >= 4 || h.mappings.iter().any(|m| m.is_nil()) || !h.is_identity()
    })
}

/// The kernel and Firecracker versions for a metadata.json tmpl writes: the build's own, else
/// the options'; refused when neither has them (the orchestrator cannot cold-boot a build
/// without them).
pub fn metadata_versions(build: &Build, opts: &EditOptions) -> Result<(String, String)> {
    let meta = build.meta();
    let pick = |own: Option<&str>, given: &Option<String>| {
        given.clone().filter(|v| !v.is_empty()).or_else(|| own.filter(|v| !v.is_empty()).map(str::to_string))
    };
    let kernel = pick(meta.and_then(|m| m.kernel_version()), &opts.kernel_version);
    let fc = pick(meta.and_then(|m| m.firecracker_version()), &opts.firecracker_version);
    match (kernel, fc) {
        (Some(k), Some(f)) => Ok((k, f)),
        (k, f) => Err(Error::refused(
            "tmpl must write metadata.json (a cold-boot build), but the build does not say which kernel and Firecracker it runs on",
            vec![format!(
                "pass {}{} (E2B's defaults look like vmlinux-6.1.158 and v1.14.1_431f1fc)",
                if k.is_none() { "--kernel-version VERSION " } else { "" },
                if f.is_none() { "--firecracker-version VERSION" } else { "" }
            )],
        )),
    }
}

/// The new build ID for `--fork`, checked free in the storage.
pub fn fork_id(build: &Build, fork: Option<BuildId>) -> Result<BuildId> {
    let id = fork.unwrap_or_else(BuildId::new_random);
    if id == build.id {
        return Err(UsageError::ForkToItself.into());
    }
    let dir = build.storage_root.join(id.to_string());
    // A remote storage answers from its listing (a storage failure is not "free").
    let exists = match crate::remote::mount::stat(&dir) {
        Some(Ok(crate::remote::mount::Stat::Missing)) => false,
        Some(Ok(_)) => true,
        Some(Err(e)) => return Err(Error::read(&dir, e)),
        None => dir.exists(),
    };
    if exists {
        return Err(Error::refused(
            format!("build {id} already exists in the storage"),
            vec![dir.display().to_string()],
        ));
    }
    Ok(id)
}

/// The rootfs artifact files that an in-place edit replaces.
pub fn rootfs_paths(build: &Build) -> (PathBuf, PathBuf) {
    (build.path(Artifact::Rootfs.data_name()), build.path(Artifact::Rootfs.header_name()))
}

/// Render the text of the wrapper or unit for `mode`.
pub fn render_for(mode: Mode, envd_path: &str, args: &[String]) -> Option<String> {
    match mode {
        Mode::Init => None,
        Mode::Wrapper => Some(render::wrapper(envd_path, args)),
        Mode::Service => Some(render::unit(envd_path, args)),
    }
}
