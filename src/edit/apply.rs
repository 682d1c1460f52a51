//! Applying a plan, transactionally: the edit happens on a copy in the build folder (or in the
//! new build's folder for `--fork`); the copy is verified — every written file read back
//! through the rootfs reader and compared by SHA-256, mode and owner, the boot path checked with
//! the same checks `verify` runs, `e2fsck -fn` clean — and only then committed: the guards are
//! checked once more under the build's lock, and the renames run as a journaled commit
//! ([`super::commit`]) in an order the orchestrator can never misuse, the originals kept in the
//! backup folder. Any failure before the commit leaves the build byte-for-byte as it was; a
//! failure during it puts the originals back; a kill during it is completed by the next run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::commit::{self, Journal, Undo, sync_dir, sync_file, write_synced};
use super::manifest;
use super::plan::{Backend, Change, Content, Plan, Target};
use crate::build::Build;
use crate::checks::contents;
use crate::device::{Device, copy_range};
use crate::error::{Error, Result};
use crate::header::{self, Header, Mapping};
use crate::metadata;
use crate::progress::Progress;
use crate::report::{Finding, Severity};
use crate::rootfs::boot::{self, Context};
use crate::rootfs::{FileKind, Rootfs, RootfsError, Superblock};
use crate::sys::lock_holders;
use crate::sys::write_atomic;
use crate::tools::{debugfs, e2fs};
use crate::vocab::Artifact;
use crate::vocab::BuildId;
use crate::vocab::files::{COMPRESSED_SUFFIXES, METADATA, SNAPFILE};

/// The fault-injection hook's variable (see [`super::fault`]).
pub use super::fault::FAULT_ENV;
use super::fault::point as fault;

/// One file as read back from the edited image.
#[derive(Clone, Debug, Serialize)]
pub struct WrittenFile {
    pub path: String,
    pub kind: FileKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub len: u64,
}

/// What verification of the edited image found.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub files: Vec<WrittenFile>,
    pub fsck_clean: bool,
    /// Content findings on the edited image (warnings and infos; errors fail the edit).
    pub findings: Vec<Finding>,
}

/// What an applied plan did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// The build that now holds the result (the same one, or the fork).
    pub build_id: BuildId,
    pub build_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,
    pub header_rewritten: bool,
    pub metadata_rewritten: bool,
    /// Snapshot files moved into the backup (or deleted with --no-backup).
    pub snapshot_dropped: Vec<String>,
    pub verification: Verification,
    pub manifest: PathBuf,
}

/// A scratch folder that is removed unless kept.
struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(parent: &Path, prefix: &str) -> Result<Scratch> {
        let dir =
            parent.join(format!("{prefix}{}", BuildId::new_random().to_string().split('-').next().unwrap_or("x")));
        std::fs::create_dir(&dir).map_err(|e| Error::write(&dir, e))?;
        Ok(Scratch { dir, keep: false })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Copy `src` to a new file `dst`, data ranges only (SEEK_DATA/SEEK_HOLE), each with
/// `copy_file_range` so the kernel (or a reflinking filesystem) moves the bytes; holes stay holes.
pub fn copy_sparse(src: &Path, dst: &Path, progress: &dyn Progress) -> Result<u64> {
    let s = File::open(src).map_err(|e| Error::read(src, e))?;
    let len = s.metadata().map_err(|e| Error::read(src, e))?.len();
    let d = File::options().write(true).create_new(true).open(dst).map_err(|e| Error::write(dst, e))?;
    // A reflink is a copy for free where the filesystem can (btrfs, xfs).
    if rustix::fs::ioctl_ficlone(&d, &s).is_ok() {
        return Ok(len);
    }
    d.set_len(len).map_err(|e| Error::write(dst, e))?;
    progress.start("copying image", len);
    let mut pos = 0u64;
    let mut copied = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&s, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => pos, // no SEEK_DATA: copy everything
        };
        let hole = rustix::fs::seek(&s, rustix::fs::SeekFrom::Hole(data)).unwrap_or(len).min(len);
        if hole > data {
            copy_range(&s, data, &d, data, hole - data).map_err(|e| Error::write(dst, e))?;
            copied += hole - data;
        }
        progress.inc(hole.saturating_sub(pos));
        pos = hole.max(data + 1);
    }
    progress.finish();
    d.sync_all().map_err(|e| Error::write(dst, e))?;
    Ok(copied)
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::read(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::read(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::rootfs::hex(&h.finalize()))
}

/// Fill in the SHA-256 of host files (the planner leaves them empty until apply, so a dry run
/// reads nothing big twice; the envd's is known from its inspection).
fn settle_hashes(plan: &mut Plan) -> Result<()> {
    let envd_hash = plan.envd.as_ref().map(|e| (e.path.clone(), e.sha256.clone()));
    for c in &mut plan.changes {
        if let Change::Write { content: Content::Host { path }, sha256, len, .. } = c
            && sha256.is_empty()
        {
            *sha256 = match &envd_hash {
                Some((p, h)) if p == path => h.clone(),
                _ => sha256_file(path)?,
            };
            *len = std::fs::metadata(&*path).map_err(|e| Error::read(&*path, e))?.len();
        }
    }
    Ok(())
}

/// Host files for the changes: text content is written into the scratch folder.
fn materialise(plan: &Plan, scratch: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    for (i, c) in plan.changes.iter().enumerate() {
        if let Change::Write { content, .. } = c {
            let p = match content {
                Content::Host { path } => path.clone(),
                Content::Text { text } => {
                    let p = scratch.join(format!("content-{i}"));
                    std::fs::write(&p, text).map_err(|e| Error::write(&p, e))?;
                    p
                }
            };
            out.push((i, p));
        }
    }
    Ok(out)
}

fn host_of(files: &[(usize, PathBuf)], i: usize) -> Result<&Path> {
    files
        .iter()
        .find(|(j, _)| *j == i)
        .map(|(_, p)| p.as_path())
        .ok_or(Error::Internal("a change has no content to write"))
}

fn apply_debugfs(image: &Path, plan: &Plan, files: &[(usize, PathBuf)], scratch: &Path) -> Result<()> {
    let mut ops = Vec::new();
    for (i, c) in plan.changes.iter().enumerate() {
        match c {
            Change::Mkdir { path, mode } => {
                ops.push(debugfs::Op::Mkdir { path: path.clone(), mode: *mode, uid: 0, gid: 0 });
            }
            Change::Write { path, replaces, mode, uid, gid, .. } => {
                if replaces.is_some() {
                    ops.push(debugfs::Op::Rm(path.clone()));
                }
                ops.push(debugfs::Op::Write {
                    host: host_of(files, i)?.to_path_buf(),
                    path: path.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                });
            }
            Change::Link { path, replaces, target } => {
                if replaces.is_some() {
                    ops.push(debugfs::Op::Rm(path.clone()));
                }
                ops.push(debugfs::Op::Symlink { path: path.clone(), target: target.clone() });
            }
        }
    }
    Ok(debugfs::apply(image, &ops, scratch)?)
}

fn apply_mount(image: &Path, plan: &Plan, files: &[(usize, PathBuf)]) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    // The host kernel parses this image: refuse one e2fsck already finds damaged.
    let fsck = e2fs::fsck_readonly(image)?;
    if !fsck.clean {
        return Err(Error::refused(
            "the image has filesystem errors; the mount backend does not hand a damaged ext4 to the host kernel",
            vec![
                format!("e2fsck -fn exit {}: {}", fsck.status, fsck.output),
                "repair a copy with e2fsck -fy, or use --backend debugfs".into(),
            ],
        ));
    }
    let opts = crate::sys::MountOptions { no_symfollow: true, ..crate::sys::MountOptions::read_write() };
    // Mounted in a private mount namespace: if tmpl is killed from here on, the kernel drops
    // the mount and the loop device with it.
    let m = crate::sys::mount_image(image, &opts)?;
    fault("mounted")?;
    // Directories are resolved inside the image (their symlinks, if any, stay in the image); the
    // final component is replaced, never followed; and the mount never follows a symlink.
    let host = |p: &str| -> Result<PathBuf> { Ok(m.resolve(p)?) };
    let werr = |p: &Path, e: std::io::Error| Error::write(p, e);
    for (i, c) in plan.changes.iter().enumerate() {
        match c {
            Change::Mkdir { path, mode } => {
                let p = host(path)?;
                std::fs::create_dir(&p).map_err(|e| werr(&p, e))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(u32::from(*mode)))
                    .map_err(|e| werr(&p, e))?;
                rustix::fs::chown(&p, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))
                    .map_err(|e| werr(&p, e.into()))?;
            }
            Change::Write { path, mode, uid, gid, .. } => {
                let p = host(path)?;
                let tmp = p.with_file_name(format!(
                    ".tmpl-new-{}",
                    p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                ));
                let _ = std::fs::remove_file(&tmp);
                let src = host_of(files, i)?;
                let s = File::open(src).map_err(|e| Error::read(src, e))?;
                let d = File::options().write(true).create_new(true).open(&tmp).map_err(|e| werr(&tmp, e))?;
                let n = s.metadata().map_err(|e| Error::read(src, e))?.len();
                copy_range(&s, 0, &d, 0, n).map_err(|e| werr(&tmp, e))?;
                rustix::fs::fchown(&d, Some(rustix::fs::Uid::from_raw(*uid)), Some(rustix::fs::Gid::from_raw(*gid)))
                    .map_err(|e| werr(&tmp, e.into()))?;
                d.set_permissions(std::fs::Permissions::from_mode(u32::from(*mode))).map_err(|e| werr(&tmp, e))?;
                d.sync_all().map_err(|e| werr(&tmp, e))?;
                std::fs::rename(&tmp, &p).map_err(|e| werr(&p, e))?;
            }
            Change::Link { path, target, .. } => {
                let p = host(path)?;
                let tmp = p.with_file_name(format!(
                    ".tmpl-new-{}",
                    p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                ));
                let _ = std::fs::remove_file(&tmp);
                symlink(target, &tmp).map_err(|e| werr(&tmp, e))?;
                std::fs::rename(&tmp, &p).map_err(|e| werr(&p, e))?;
            }
        }
    }
    m.unmount()?;
    Ok(())
}

/// Why an edited image failed its verification (the edit was rolled back).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Device(#[source] crate::device::DeviceError),
    #[error("the edited image cannot be read: {0}")]
    Unreadable(#[source] RootfsError),
    #[error("{0}")]
    Read(#[source] RootfsError),
    #[error("{0} is missing from the edited image")]
    Missing(String),
    #[error("{0} is not a directory after the edit")]
    NotADirectory(String),
    #[error("{path} reads back as {got} ({got_len} bytes), expected {sha256} ({len} bytes)")]
    Content { path: String, got: String, got_len: u64, sha256: String, len: u64 },
    #[error("{path} has mode {got_mode:04o} uid {got_uid} gid {got_gid}, expected {mode:04o} {uid} {gid}")]
    Owner { path: String, got_mode: u16, got_uid: u32, got_gid: u32, mode: u16, uid: u32, gid: u32 },
    #[error("{path} reads back as {got:?}, expected a link to {target}")]
    Link { path: String, got: String, target: String },
    /// The boot path of the edited image has error findings.
    #[error("the edited image would not boot envd: {}", .0.iter().map(|f| format!("{}: {}", f.id, f.message)).collect::<Vec<_>>().join("; "))]
    WouldNotBoot(Vec<Finding>),
    #[error("e2fsck -fn found problems (exit {status}): {output}")]
    Fsck { status: i32, output: String },
    /// The original image already had (some of) the problems.
    #[error("{source} — {}; repair the image first (e2fsck -fy on a copy) or fix those findings", before.join("; "))]
    AlreadyInOriginal {
        #[source]
        source: Box<VerifyError>,
        before: Vec<String>,
    },
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        Error::VerificationFailed(Box::new(e))
    }
}

/// Read every change back from `image`, check the boot path and run `e2fsck -fn`.
pub fn verify_image(image: &Path, plan: &Plan, ctx: &Context, build_id: BuildId) -> Result<Verification> {
    let dev = Device::plain_file(image).map_err(VerifyError::Device)?;
    let fs = Rootfs::open(Arc::new(dev)).map_err(VerifyError::Unreadable)?;
    let mut files = Vec::new();
    for c in &plan.changes {
        let path = c.path();
        let e = fs.lstat(path).map_err(VerifyError::Read)?.ok_or_else(|| VerifyError::Missing(path.to_string()))?;
        match c {
            Change::Mkdir { .. } => {
                if e.kind != FileKind::Directory {
                    return Err(VerifyError::NotADirectory(path.to_string()).into());
                }
            }
            Change::Write { mode, uid, gid, len, sha256, .. } => {
                let got = crate::rootfs::hex(&fs.sha256(path).map_err(VerifyError::Read)?);
                if e.kind != FileKind::Regular || got != *sha256 || e.len != *len {
                    return Err(VerifyError::Content {
                        path: path.to_string(),
                        got,
                        got_len: e.len,
                        sha256: sha256.clone(),
                        len: *len,
                    }
                    .into());
                }
                if e.mode != *mode || e.uid != *uid || e.gid != *gid {
                    return Err(VerifyError::Owner {
                        path: path.to_string(),
                        got_mode: e.mode,
                        got_uid: e.uid,
                        got_gid: e.gid,
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    }
                    .into());
                }
                files.push(WrittenFile {
                    path: path.to_string(),
                    kind: e.kind,
                    sha256: Some(got),
                    target: None,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    len: e.len,
                });
            }
            Change::Link { target, .. } => {
                let got = fs.read_link(path).map_err(VerifyError::Read)?;
                if e.kind != FileKind::Symlink || got != *target {
                    return Err(VerifyError::Link { path: path.to_string(), got, target: target.clone() }.into());
                }
                files.push(WrittenFile {
                    path: path.to_string(),
                    kind: e.kind,
                    sha256: None,
                    target: Some(got),
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    len: e.len,
                });
            }
        }
    }
    let facts = boot::gather(&fs, ctx);
    let findings = contents::judge(&facts, Some(&build_id.to_string()), None);
    let errors: Vec<Finding> = findings.iter().filter(|f| f.severity == Severity::Error).cloned().collect();
    if !errors.is_empty() {
        return Err(VerifyError::WouldNotBoot(errors).into());
    }
    let fsck = e2fs::fsck_readonly(image)?;
    if !fsck.clean {
        return Err(VerifyError::Fsck { status: fsck.status, output: fsck.output }.into());
    }
    Ok(Verification {
        files,
        fsck_clean: true,
        findings: findings.into_iter().filter(|f| f.severity != Severity::Error).collect(),
    })
}

/// Edit the image at `image` (a full image in a scratch folder) according to `plan`.
fn edit_image(image: &Path, plan: &Plan, scratch: &Path) -> Result<()> {
    let sb = {
        let dev = Device::plain_file(image).map_err(|e| Error::invalid(image, e.to_string()))?;
        Superblock::read(&dev).map_err(|e| Error::invalid(image, e.to_string()))?
    };
    if sb.needs_recovery() && plan.backend == Backend::Debugfs {
        if !plan.replay_journal {
            return Err(Error::refused(
                "the ext4 journal needs recovery, and debugfs ignores it: a later replay would erase what it writes",
                vec!["add --replay-journal (e2fsck replays it on the work copy first), or use --backend mount".into()],
            ));
        }
        e2fs::replay_journal(image)?;
    }
    let files = materialise(plan, scratch)?;
    match plan.backend {
        Backend::Debugfs => apply_debugfs(image, plan, &files, scratch),
        Backend::Mount => apply_mount(image, plan, &files),
    }
}

/// A header that maps the whole device of `size` bytes to `id`'s data file at the same offsets,
/// in the V1–V3 layout (the template's version when it is one of those, else 3: the data file
/// is a plain full image, so there are no frames to describe).
pub fn identity_header(template: Option<&Header>, id: BuildId, size: u64, generation: u64, base: BuildId) -> Header {
    Header {
        version: template.map(|h| h.version).filter(|v| (1..=3).contains(&header::format_version(*v))).unwrap_or(3),
        flags: 0,
        builds: Vec::new(),
        block_size: template.map_or(header::PAGE, |h| h.block_size),
        size,
        generation,
        build_id: id,
        base_build_id: base,
        mappings: vec![Mapping {
            offset: 0,
            length: size.div_ceil(header::PAGE) * header::PAGE,
            build: id,
            storage_offset: 0,
        }],
        synthesized: false,
    }
}

/// An `flock` on a build folder, held for a whole edit (other tmpl processes are refused with
/// the holder's PID; E2B's orchestrator does not lock, hence the in-use checks as well).
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
    pub dir: PathBuf,
    pub exclusive: bool,
}

/// Lock a build folder: exclusive for an in-place edit, a restore or a clean-up; shared for a
/// dry run and a fork's source. Never waits: a held lock is a refusal naming the holder.
pub fn lock_build(dir: &Path, exclusive: bool) -> Result<BuildLock> {
    let f = File::open(dir).map_err(|e| Error::read(dir, e))?;
    let res = if exclusive { f.try_lock() } else { f.try_lock_shared() };
    match res {
        Ok(()) => Ok(BuildLock { _file: f, dir: dir.to_path_buf(), exclusive }),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holders = lock_holders(dir);
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let who = if holders.is_empty() { "another process".to_string() } else { holders.join(", ") };
            Err(Error::refused(
                format!("another tmpl edit holds the lock on build {name}: {who}"),
                vec![
                    "tmpl locks a build folder for the whole of an edit, restore or clean-up; run again when it has finished"
                        .into(),
                ],
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::read(dir, e)),
    }
}

/// Refusal reasons when the build's rootfs files are in use: open or mapped by a process (a
/// running Firecracker, a copy in progress), backing a loop device, mounted.
pub fn in_use(build: &Build) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    let me = std::process::id();
    let mut paths: Vec<PathBuf> =
        vec![build.path(Artifact::Rootfs.data_name()), build.path(Artifact::Rootfs.header_name())];
    for s in COMPRESSED_SUFFIXES {
        paths.push(build.path(&format!("{}{s}", Artifact::Rootfs.data_name())));
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    for h in crate::sys::holders(&refs).map_err(|e| Error::read("/proc", e))? {
        if h.pid != me {
            reasons.push(format!("{} is {} by process {} ({})", h.path.display(), h.access, h.pid, h.comm));
        }
    }
    let image = build.path(Artifact::Rootfs.data_name());
    if image.exists() {
        for u in crate::sys::loop_uses(&image).map_err(|e| Error::read(&image, e))? {
            let where_ = if u.mount_points.is_empty() {
                String::new()
            } else {
                format!(
                    ", mounted at {}",
                    u.mount_points.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            };
            reasons.push(format!("{} backs loop device {}{where_}", image.display(), u.device.display()));
        }
    }
    Ok(reasons)
}

/// Metadata for an edited build: the old document with `filesystem_only` set when the snapshot
/// is gone, and the build ID of the new build for a fork.
fn metadata_for(build: &Build, id: BuildId, versions: Option<&(String, String)>) -> (String, Vec<String>) {
    let notes = Vec::new();
    let doc = match build.meta() {
        Some(m) if m.effective_version >= 2 => {
            let mut v = m.with_build_id(&id.to_string());
            if let Some(o) = v.as_object_mut() {
                o.insert("filesystem_only".into(), serde_json::Value::Bool(true));
                o.remove("prefetch");
                if let (Some((k, f)), Some(t)) = (versions, o.get_mut("template").and_then(|t| t.as_object_mut())) {
                    t.insert("kernel_version".into(), serde_json::Value::String(k.clone()));
                    t.insert("firecracker_version".into(), serde_json::Value::String(f.clone()));
                }
            }
            serde_json::to_string(&v).unwrap_or_default()
        }
        _ => {
            let (k, f) = versions.cloned().unwrap_or_default();
            metadata::render_v2(&id.to_string(), &k, &f, true)
        }
    };
    (doc, notes)
}

fn now_utc() -> String {
    manifest::utc_now()
}

/// Apply a plan. `ctx` is the build's check context (architecture, init path); `lock` is the
/// build's lock, taken before the plan was made (exclusive for an in-place edit).
pub fn apply(
    build: &Build,
    mut plan: Plan,
    ctx: &Context,
    progress: &dyn Progress,
    lock: &BuildLock,
) -> Result<(Applied, Vec<String>)> {
    settle_hashes(&mut plan)?;
    match plan.target {
        Target::InPlace => apply_in_place(build, &plan, ctx, progress, lock),
        Target::Fork { new_build_id } => {
            apply_fork(build, &plan, ctx, new_build_id, &build.storage_root, progress, Some(lock))
        }
    }
}

/// Give `to` the owner and permission bits of `from` (the image the operator's tools expect).
fn keep_owner_and_mode(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::metadata(from) else { return Ok(()) };
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(|e| Error::write(to, e))?;
    // Only root can give files away; as another user the files are ours already.
    if rustix::process::geteuid().is_root() {
        rustix::fs::chown(to, Some(rustix::fs::Uid::from_raw(m.uid())), Some(rustix::fs::Gid::from_raw(m.gid())))
            .map_err(|e| Error::write(to, e.into()))?;
    }
    Ok(())
}

/// A new directory named `base`, or `base-2`, `base-3`... when that exists.
fn unique_dir(parent: &Path, base: &str) -> Result<PathBuf> {
    for n in 1..1000 {
        let p = parent.join(if n == 1 { base.to_string() } else { format!("{base}-{n}") });
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::write(&p, e)),
        }
    }
    Err(Error::Write { path: parent.join(base), source: std::io::Error::other("no free backup folder name") })
}

/// Verify the edited image; when that fails, say which of the problems the original image
/// already had (so the operator repairs those first instead of blaming the edit).
fn verify_or_explain(
    image: &Path,
    plan: &Plan,
    ctx: &Context,
    id: BuildId,
    original: Option<&Path>,
) -> Result<Verification> {
    match verify_image(image, plan, ctx, id) {
        Ok(v) => Ok(v),
        Err(Error::VerificationFailed(cause)) => {
            let failed = match (original, cause.downcast::<VerifyError>()) {
                (Some(orig), Ok(v)) => (orig, *v),
                (_, Ok(v)) => return Err(Error::from(*v)),
                (_, Err(other)) => return Err(Error::VerificationFailed(other)),
            };
            let (orig, failed) = failed;
            let failing: Vec<String> = match &failed {
                VerifyError::WouldNotBoot(f) => f.iter().map(|f| f.id.clone()).collect(),
                _ => Vec::new(),
            };
            let mut before = Vec::new();
            if let Ok(f) = e2fs::fsck_readonly(orig)
                && !f.clean
            {
                before.push(format!("e2fsck -fn already fails on the original image (exit {})", f.status));
            }
            if let Ok(dev) = Device::plain_file(orig)
                && let Ok(fs) = Rootfs::open(Arc::new(dev))
            {
                let facts = boot::gather(&fs, ctx);
                for f in contents::judge(&facts, Some(&id.to_string()), None) {
                    if f.severity == Severity::Error && failing.contains(&f.id) {
                        before.push(format!("{} was already in the original image", f.id));
                    }
                }
            }
            if before.is_empty() {
                Err(failed.into())
            } else {
                Err(VerifyError::AlreadyInOriginal { source: Box::new(failed), before }.into())
            }
        }
        Err(e) => Err(e),
    }
}

/// The snapshot files an in-place edit with `--drop-snapshot` moves into the backup, in the
/// order they go: the snapfile first (without it the orchestrator cannot resume the build at
/// all, so no later state can pair the old memory with the new disk), then the memfiles.
fn snapshot_files(build: &Build) -> Vec<String> {
    let mut names = vec![SNAPFILE.to_string(), "memfile".to_string(), "memfile.header".to_string()];
    for s in COMPRESSED_SUFFIXES {
        names.push(format!("memfile{s}"));
        names.push(format!("memfile{s}.uncompressed-size"));
    }
    names.retain(|n| build.path(n).exists());
    names
}

fn apply_in_place(
    build: &Build,
    plan: &Plan,
    ctx: &Context,
    progress: &dyn Progress,
    lock: &BuildLock,
) -> Result<(Applied, Vec<String>)> {
    if !lock.exclusive || lock.dir != build.dir {
        return Err(Error::VerificationFailed("internal: an in-place edit needs the build's exclusive lock".into()));
    }
    let mut notes = super::leftovers::clean_dead(&build.dir, lock);
    let busy = in_use(build)?;
    if !busy.is_empty() {
        return Err(Error::refused("the build's rootfs is in use", busy));
    }
    let (rootfs, header_path) = super::plan::rootfs_paths(build);
    let mut scratch = Scratch::new(&build.dir, commit::WORK_PREFIX)?;
    let work_name = scratch.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let work_image = scratch.dir.join("rootfs.ext4");
    copy_sparse(&rootfs, &work_image, progress)?;
    edit_image(&work_image, plan, &scratch.dir)?;
    sync_file(&work_image)?;
    let verification = verify_or_explain(&work_image, plan, ctx, build.id, Some(&rootfs))?;
    // The original's owner and mode, once the edit is done (a read-only original must not stop
    // debugfs from writing the copy).
    keep_owner_and_mode(&rootfs, &work_image)?;
    fault("after-verify")?;

    // Prepare every new file in the scratch folder before touching the build.
    let new_header = match (plan.rewrite_header, build.rootfs.header.parsed()) {
        (true, Some(h)) => {
            let nh = identity_header(Some(h), build.id, h.size, h.generation, h.base_build_id);
            let p = scratch.dir.join("rootfs.ext4.header");
            write_synced(&p, &header::encode(&nh))?;
            keep_owner_and_mode(&header_path, &p)?;
            Some(p)
        }
        _ => None,
    };
    let new_metadata = if plan.drop_snapshot {
        let (doc, n) = metadata_for(build, build.id, plan.versions.as_ref());
        notes.extend(n);
        notes.push(
            "the build is now filesystem_only: resume is a cold boot, which orchestrators before 2026-06 cannot do"
                .into(),
        );
        let p = scratch.dir.join("metadata.json");
        write_synced(&p, doc.as_bytes())?;
        Some(p)
    } else {
        None
    };
    let new_manifest = scratch.dir.join(manifest::FILE);
    manifest::write_to(&new_manifest, &manifest::record(build.id, None, plan, &verification))?;
    sync_dir(&scratch.dir)?;

    // Backup: the files the commit replaces, by hard link (a replaced file's inode survives the
    // rename there, with its owner, mode and times; a rollback renames it back).
    let backup = new_backup_dir(&build.dir)?;
    let backup_name = backup.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prepared = (|| -> Result<()> {
        std::fs::hard_link(&rootfs, backup.join("rootfs.ext4")).map_err(|e| Error::write(&backup, e))?;
        for name in [Artifact::Rootfs.header_name(), METADATA, manifest::FILE] {
            let p = build.path(name);
            if p.exists() {
                std::fs::hard_link(&p, backup.join(name)).map_err(|e| Error::write(&backup, e))?;
            }
        }
        sync_dir(&backup)?;
        fault("before-commit")?;
        // The guards again, now that the build is locked and the edit is ready, right before
        // the first rename: a process that opened the image, a build that started to read this
        // one, or a snapshot that appeared since the plan was made.
        let deps = super::plan::edit_dependents(&build.storage_root, &build.id)?;
        let snapshot_now = build.path(SNAPFILE).exists() || build.path("memfile").exists();
        let busy = in_use(build)?;
        if !deps.builds.is_empty()
            || !deps.unknown.is_empty()
            || (snapshot_now && !plan.drop_snapshot)
            || !busy.is_empty()
        {
            return Err(Error::refused(
                "the build changed while it was being edited; nothing was replaced",
                deps.builds
                    .iter()
                    .map(|d| format!("build {d} now reads this build's blocks"))
                    .chain(deps.unknown)
                    .chain(snapshot_now.then(|| "a memory snapshot appeared".to_string()))
                    .chain(busy)
                    .collect(),
            ));
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        let _ = std::fs::remove_dir_all(&backup);
        return Err(e);
    }

    // The commit, in an order where every state in between is one the orchestrator serves
    // correctly or refuses (never the old memory snapshot over the new disk):
    //   1. snapfile, then memfiles out (no snapfile: the orchestrator cannot resume; with the
    //      old metadata it refuses the build, old or new disk alike);
    //   2. metadata.json with filesystem_only (a cold boot of the disk that is there: the old
    //      one until 3., consistent);
    //   3. the identity header (it reads the same bytes from the old full image), the image;
    //   4. the manifest.
    let rel = |name: &str| format!("{work_name}/{name}");
    let saved = |name: &str| format!("{backup_name}/{name}");
    let dir = &build.dir;
    let snapshot_names = if plan.drop_snapshot { snapshot_files(build) } else { Vec::new() };
    let mut steps = Vec::new();
    for n in &snapshot_names {
        steps.push(commit::step(dir, n, &saved(n), Undo::MoveBack)?);
    }
    let undo_for = |name: &str| {
        if build.path(name).exists() { Undo::Restore { original: saved(name) } } else { Undo::Delete }
    };
    if new_metadata.is_some() {
        let m = METADATA;
        steps.push(commit::step(dir, &rel(m), m, undo_for(m))?);
    }
    if new_header.is_some() {
        let h = Artifact::Rootfs.header_name();
        steps.push(commit::step(dir, &rel(h), h, undo_for(h))?);
    }
    steps.push(commit::step(
        dir,
        &rel("rootfs.ext4"),
        "rootfs.ext4",
        Undo::Restore { original: saved("rootfs.ext4") },
    )?);
    steps.push(commit::step(dir, &rel(manifest::FILE), manifest::FILE, undo_for(manifest::FILE))?);
    let journal = Journal {
        format_version: 1,
        kind: commit::Kind::Edit,
        command: plan.command.to_string(),
        build_id: build.id.to_string(),
        pid: std::process::id(),
        started_at: now_utc(),
        steps,
        remove_on_complete: if plan.backup {
            vec![work_name.clone()]
        } else {
            vec![work_name.clone(), backup_name.clone()]
        },
        remove_on_rollback: vec![work_name.clone(), backup_name.clone()],
    };
    // From here on the commit owns the work folder: after a kill it is what completes the edit.
    scratch.keep = true;
    let left = commit::run(dir, &journal)?;
    notes.extend(left.into_iter().map(|l| format!("could not remove {l}")));
    let backup_dir = if plan.backup {
        Some(backup)
    } else {
        if !snapshot_names.is_empty() {
            notes.push(format!("--no-backup: {} deleted", snapshot_names.join(", ")));
        }
        None
    };
    Ok((
        Applied {
            build_id: build.id,
            build_dir: build.dir.clone(),
            backup_dir,
            header_rewritten: new_header.is_some(),
            metadata_rewritten: new_metadata.is_some(),
            snapshot_dropped: snapshot_names,
            verification,
            manifest: build.path(manifest::FILE),
        },
        notes,
    ))
}

/// A new, empty backup folder `.tmpl-backup-20261122T215000Z` (`-2`, `-3`... within a second).
pub fn new_backup_dir(dir: &Path) -> Result<PathBuf> {
    unique_dir(dir, &format!("{}{}", commit::BACKUP_PREFIX, now_utc().replace([':', '-'], "")))
}

/// Write `plan`'s fork (a [`Target::Fork`] plan) as a new build in the local storage `root`:
/// the base's own storage, another local storage (`--to DIR`), or the staging storage a fork to
/// a remote storage is assembled in ([`super::publish`]). `lock` is the base's shared lock; a
/// base in a remote storage has none (object stores have no locks; the base is only read).
pub fn apply_fork_to(
    build: &Build,
    mut plan: Plan,
    ctx: &Context,
    root: &Path,
    progress: &dyn Progress,
    lock: Option<&BuildLock>,
) -> Result<(Applied, Vec<String>)> {
    let Target::Fork { new_build_id } = plan.target else {
        return Err(Error::Internal("apply_fork_to needs a fork plan"));
    };
    settle_hashes(&mut plan)?;
    apply_fork(build, &plan, ctx, new_build_id, root, progress, lock)
}

fn apply_fork(
    build: &Build,
    plan: &Plan,
    ctx: &Context,
    new_id: BuildId,
    root: &Path,
    progress: &dyn Progress,
    lock: Option<&BuildLock>,
) -> Result<(Applied, Vec<String>)> {
    let locked = match lock {
        Some(l) => l.dir == build.dir,
        None => crate::remote::mount::is_mounted(&build.dir),
    };
    if !locked {
        return Err(Error::VerificationFailed("internal: a fork needs a lock on its source build".into()));
    }
    if crate::remote::mount::is_mounted(root) {
        return Err(Error::Internal("a fork is written to a local storage (a remote one gets it by a copy)"));
    }
    // Forks killed earlier (their lock is free) are removed first.
    let cleaned = super::leftovers::clean_dead_forks(root, None);
    let final_dir = root.join(new_id.to_string());
    // The partial folder is locked while it is written, so a later run can tell a live fork
    // from a killed one.
    let (partial, _partial_lock) = super::leftovers::create_fork_partial(root, &new_id, &build.id)?;
    let mut guard = Scratch { dir: partial.clone(), keep: false };
    let scratch = Scratch::new(&partial, ".work-")?;
    // The full rootfs, assembled through the source's layers (holes where it maps nothing).
    let image = partial.join(Artifact::Rootfs.data_name());
    let dev = Device::open(build, Artifact::Rootfs).map_err(|e| Error::device(&build.dir, e))?;
    let out = File::options().write(true).create_new(true).open(&image).map_err(|e| Error::write(&image, e))?;
    dev.assemble_to(&out, progress).map_err(|e| Error::invalid(&build.dir, e.to_string()))?;
    out.sync_all().map_err(|e| Error::write(&image, e))?;
    drop(out);
    edit_image(&image, plan, &scratch.dir)?;
    sync_file(&image)?;
    let verification = verify_or_explain(&image, plan, ctx, new_id, None)?;
    drop(scratch);
    fault("after-verify")?;
    // A self-contained build: a header mapping every block to its own full image, metadata with
    // the new ID and no memory snapshot (the old one holds the old envd in RAM).
    let size = std::fs::metadata(&image).map_err(|e| Error::read(&image, e))?.len();
    let h = identity_header(build.rootfs.header.parsed(), new_id, size, 0, new_id);
    write_atomic(&partial.join(Artifact::Rootfs.header_name()), &header::encode(&h))?;
    let (doc, mut notes) = metadata_for(build, new_id, plan.versions.as_ref());
    notes.extend(cleaned);
    write_atomic(&partial.join(METADATA), doc.as_bytes())?;
    manifest::write_to(&partial.join(manifest::FILE), &manifest::record(new_id, Some(build.id), plan, &verification))?;
    // The owner file has done its work; the new build folder holds only build files.
    std::fs::remove_file(partial.join(crate::vocab::files::FORK_OWNER))
        .map_err(|e| Error::write(partial.join(crate::vocab::files::FORK_OWNER), e))?;
    sync_dir(&partial)?;
    // Appear atomically, and never over a folder that appeared meanwhile (even an empty one).
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &partial,
        rustix::fs::CWD,
        &final_dir,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| Error::write(&final_dir, e.into()))?;
    guard.keep = true;
    sync_dir(root)?;
    notes.push(format!(
        "the new build {new_id} boots cold (filesystem_only, no memory snapshot); orchestrators before 2026-06 cannot cold-boot it"
    ));
    Ok((
        Applied {
            build_id: new_id,
            build_dir: final_dir.clone(),
            backup_dir: None,
            header_rewritten: true,
            metadata_rewritten: true,
            snapshot_dropped: Vec::new(),
            verification,
            manifest: final_dir.join(manifest::FILE),
        },
        notes,
    ))
}
