//! `tmpl backups`: the backups and leftovers of one build — listed, restored, pruned, cleaned —
//! and interrupted commits settled.
//!
//! A restore is a commit like an edit's ([`super::commit`]): the backup's files are staged in a
//! work folder by hard link, the build's current files are saved into a new backup (so the
//! restore can itself be undone), and the renames run in an order where every state in between
//! is one the orchestrator serves correctly or refuses. The restored backup is consumed (its
//! files are the build's files now; keeping a second name for the same inodes would let a later
//! in-place change of one alter the other).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::apply::{BuildLock, in_use};
use super::commit::{self, BACKUP_PREFIX, Journal, Undo};
use super::leftovers::{self, Kind, Leftover};
use crate::build::Build;
use crate::error::{Error, Result, UsageError};
pub use crate::leftovers::{JournalState, journal_state};
use crate::vocab::Artifact;
use crate::vocab::BuildId;
use crate::vocab::files::{COMPRESSED_SUFFIXES, METADATA, SNAPFILE};

/// Everything `tmpl backups BUILD` lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listing {
    pub backups: Vec<Leftover>,
    pub work_folders: Vec<Leftover>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalState>,
    /// Partial forks of this build in the storage root.
    pub forks: Vec<Leftover>,
    /// Host mounts of this build's work copies left by older tmpl versions.
    pub mounts: Vec<Leftover>,
}

/// List a build's backups and leftovers.
pub fn list(dir: &Path, storage_root: &Path, id: &BuildId) -> Listing {
    let mut l = Listing {
        backups: Vec::new(),
        work_folders: Vec::new(),
        journal: journal_state(dir),
        forks: leftovers::forks_of(storage_root, id),
        mounts: Vec::new(),
    };
    for x in leftovers::in_build(dir) {
        match x.kind {
            Kind::Backup => l.backups.push(x),
            Kind::WorkFolder => l.work_folders.push(x),
            Kind::Mount => l.mounts.push(x),
            Kind::Journal | Kind::Fork => {}
        }
    }
    // Newest first (the names are UTC time stamps).
    l.backups.sort_by(|a, b| b.name.cmp(&a.name));
    l
}

/// The backup folder `name` of a build: a `.tmpl-backup-*` folder directly in it, not a link.
pub fn backup_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let name = name.trim_end_matches('/');
    if !name.starts_with(BACKUP_PREFIX) || name.contains('/') || name == BACKUP_PREFIX {
        return Err(UsageError::NotABackupName(name.to_string()).into());
    }
    let p = dir.join(name);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(Error::invalid(&p, "is not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::invalid(&p, "no such backup (tmpl backups BUILD lists them)"))
        }
        Err(e) => Err(Error::read(&p, e)),
    }
}

/// The build files a restore sets to the backup's (present there: restored; absent there but
/// present now: moved out).
fn managed_names() -> Vec<String> {
    let mut v: Vec<String> = vec![
        Artifact::Rootfs.data_name().into(),
        Artifact::Rootfs.header_name().into(),
        METADATA.into(),
        super::manifest::FILE.into(),
        SNAPFILE.into(),
        Artifact::Memfile.data_name().into(),
        Artifact::Memfile.header_name().into(),
    ];
    for s in COMPRESSED_SUFFIXES {
        v.push(format!("{}{s}", Artifact::Memfile.data_name()));
        v.push(format!("{}{s}.uncompressed-size", Artifact::Memfile.data_name()));
    }
    v
}

fn is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// One planned change of a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStep {
    pub action: StepAction,
    pub file: String,
}

/// What a restore does to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepAction {
    /// The backup's file goes live.
    Restore,
    /// The current file is saved and goes.
    Remove,
}

impl StepAction {
    pub fn name(self) -> &'static str {
        match self {
            StepAction::Restore => "restore",
            StepAction::Remove => "remove",
        }
    }
}

/// The order of a restore's changes: every state in between is one the orchestrator serves or
/// refuses. Snapshot files that go, first (snapfile before memfiles: without a snapfile there is
/// no resume); metadata that makes the build cold-boot only; the image, then its header (a
/// header written for the other image is never paired with this one for longer than it takes the
/// image to be right); memfiles; other metadata; the snapfile last (a resume becomes possible
/// only once everything it pairs with is in place); the manifest.
pub fn restore_order(dir: &Path, backup: &Path) -> Vec<RestoreStep> {
    let mem = Artifact::Memfile.data_name();
    let is_memfile = |n: &str| n.starts_with(mem);
    let mut out = Vec::new();
    let push = |out: &mut Vec<RestoreStep>, n: &str| {
        if is_file(&backup.join(n)) {
            out.push(RestoreStep { action: StepAction::Restore, file: n.to_string() });
        } else if exists(&dir.join(n)) {
            out.push(RestoreStep { action: StepAction::Remove, file: n.to_string() });
        }
    };
    let names = managed_names();
    // 1. Snapshot files that go.
    for n in std::iter::once(SNAPFILE).chain(names.iter().map(String::as_str).filter(|n| is_memfile(n))) {
        if !is_file(&backup.join(n)) && exists(&dir.join(n)) {
            out.push(RestoreStep { action: StepAction::Remove, file: n.to_string() });
        }
    }
    // 2. Metadata that says filesystem_only.
    let cold = crate::vocab::read_small(&backup.join(METADATA), crate::metadata::MAX_METADATA_BYTES)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("filesystem_only") == Some(&serde_json::Value::Bool(true)));
    if cold {
        push(&mut out, METADATA);
    }
    // 3. The image, then its header.
    push(&mut out, Artifact::Rootfs.data_name());
    push(&mut out, Artifact::Rootfs.header_name());
    // 4. Memfiles that come back.
    for n in names.iter().filter(|n| is_memfile(n)) {
        if is_file(&backup.join(n)) {
            out.push(RestoreStep { action: StepAction::Restore, file: n.clone() });
        }
    }
    // 5. Other metadata; 6. the snapfile; 7. the manifest.
    if !cold {
        push(&mut out, METADATA);
    }
    if is_file(&backup.join(SNAPFILE)) {
        out.push(RestoreStep { action: StepAction::Restore, file: SNAPFILE.to_string() });
    }
    push(&mut out, super::manifest::FILE);
    out
}

/// What a restore did (or would do).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    pub backup: String,
    pub steps: Vec<RestoreStep>,
    /// The new backup holding the files the restore replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_as: Option<PathBuf>,
}

/// Restore `name` into the build (the caller holds the exclusive lock and settled any journal).
pub fn restore(build: &Build, name: &str, lock: &BuildLock, dry_run: bool) -> Result<Restored> {
    let dir = &build.dir;
    if (!lock.exclusive && !dry_run) || lock.dir != *dir {
        return Err(Error::VerificationFailed("internal: a restore needs the build's exclusive lock".into()));
    }
    let backup = backup_dir(dir, name)?;
    let backup_name = name.trim_end_matches('/').to_string();
    if !is_file(&backup.join(Artifact::Rootfs.data_name())) {
        return Err(Error::invalid(&backup, "holds no rootfs.ext4: not a backup tmpl made"));
    }
    let mut reasons = in_use(build)?;
    let deps = super::plan::edit_dependents(&build.storage_root, &build.id)?;
    reasons.extend(
        deps.builds.iter().map(|d| format!("build {d} reads this build's blocks; restoring would change it too")),
    );
    reasons.extend(deps.unknown.iter().map(|u| format!("whether this header reads the build is unknown: {u}")));
    let steps = restore_order(dir, &backup);
    if dry_run || !reasons.is_empty() {
        if !reasons.is_empty() && !dry_run {
            return Err(Error::refused(format!("build {} cannot be restored from {backup_name}", build.id), reasons));
        }
        return Ok(Restored { backup: backup_name, steps, saved_as: None });
    }
    // Stage the backup's files by hard link, save the current ones into a new backup.
    let work =
        tempfile::Builder::new().prefix(commit::WORK_PREFIX).tempdir_in(dir).map_err(|e| Error::write(dir, e))?;
    let work_name = work.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let saved = super::apply::new_backup_dir(dir)?;
    let saved_name = saved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prepared = (|| -> Result<Vec<commit::Step>> {
        let mut jsteps = Vec::new();
        for s in &steps {
            let live = dir.join(&s.file);
            if s.action == StepAction::Remove {
                // The current file itself moves into the new backup.
                jsteps.push(commit::step(dir, &s.file, &format!("{saved_name}/{}", s.file), Undo::MoveBack)?);
                continue;
            }
            std::fs::hard_link(backup.join(&s.file), work.path().join(&s.file))
                .map_err(|e| Error::write(work.path(), e))?;
            let undo = if exists(&live) {
                // The current file stays reachable from the new backup (same inode).
                std::fs::hard_link(&live, saved.join(&s.file)).map_err(|e| Error::write(&saved, e))?;
                Undo::Restore { original: format!("{saved_name}/{}", s.file) }
            } else {
                Undo::Delete
            };
            jsteps.push(commit::step(dir, &format!("{work_name}/{}", s.file), &s.file, undo)?);
        }
        commit::sync_dir(work.path())?;
        commit::sync_dir(&saved)?;
        super::fault::point("before-commit")?;
        let busy = in_use(build)?;
        if !busy.is_empty() {
            return Err(Error::refused("the build's rootfs is in use; nothing was restored", busy));
        }
        Ok(jsteps)
    })();
    let jsteps = match prepared {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&saved);
            return Err(e);
        }
    };
    let journal = Journal {
        format_version: 1,
        kind: commit::Kind::Restore,
        command: "backups --restore".into(),
        build_id: build.id.to_string(),
        pid: std::process::id(),
        started_at: super::manifest::utc_now(),
        steps: jsteps,
        remove_on_complete: vec![work_name.clone(), backup_name.clone()],
        remove_on_rollback: vec![work_name, saved_name],
    };
    // The commit owns the work folder from here on.
    let _ = work.keep();
    commit::run(dir, &journal)?;
    Ok(Restored { backup: backup_name, steps, saved_as: Some(saved) })
}

/// Backups removed (or that would be) by a prune.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pruned {
    pub kept: Vec<String>,
    pub removed: Vec<Leftover>,
}

/// Keep the newest `keep` backups, remove the others (the caller holds the exclusive lock).
pub fn prune(dir: &Path, keep: usize, lock: &BuildLock, dry_run: bool) -> Result<Pruned> {
    if (!lock.exclusive && !dry_run) || lock.dir != dir {
        return Err(Error::VerificationFailed("internal: pruning needs the build's exclusive lock".into()));
    }
    let mut backups: Vec<Leftover> = leftovers::in_build(dir).into_iter().filter(|l| l.kind == Kind::Backup).collect();
    backups.sort_by(|a, b| b.name.cmp(&a.name));
    let removed: Vec<Leftover> = backups.split_off(keep.min(backups.len()));
    if !dry_run {
        for r in &removed {
            std::fs::remove_dir_all(&r.path).map_err(|e| Error::write(&r.path, e))?;
        }
        commit::sync_dir(dir)?;
    }
    Ok(Pruned { kept: backups.into_iter().map(|b| b.name).collect(), removed })
}

/// Remove what killed runs left: dead work folders, stale mounts of them, dead partial forks of
/// this build (the caller holds the exclusive lock). A dry run lists them.
pub fn clean(build: &Build, lock: &BuildLock, dry_run: bool) -> Vec<String> {
    if dry_run {
        let l = list(&build.dir, &build.storage_root, &build.id);
        return l
            .work_folders
            .iter()
            .chain(&l.mounts)
            .chain(&l.forks)
            .filter(|x| !x.in_use)
            .map(|x| format!("would remove {}", x.label()))
            .collect();
    }
    let mut notes = leftovers::clean_dead(&build.dir, lock);
    notes.extend(leftovers::clean_dead_forks(&build.storage_root, Some(&build.id)));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[RestoreStep]) -> Vec<String> {
        v.iter().map(|s| format!("{} {}", s.action.name(), s.file)).collect()
    }

    #[test]
    fn restoring_a_dropped_snapshot_brings_the_snapfile_back_last() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let b = dir.join(".tmpl-backup-x");
        std::fs::create_dir(&b).unwrap();
        for f in ["rootfs.ext4", "rootfs.ext4.header", "metadata.json", "tmpl-manifest.json"] {
            std::fs::write(dir.join(f), b"new").unwrap();
        }
        for f in ["rootfs.ext4", "rootfs.ext4.header", "snapfile", "memfile", "memfile.header"] {
            std::fs::write(b.join(f), b"old").unwrap();
        }
        std::fs::write(b.join("metadata.json"), br#"{"version":2}"#).unwrap();
        assert_eq!(
            names(&restore_order(dir, &b)),
            [
                "restore rootfs.ext4",
                "restore rootfs.ext4.header",
                "restore memfile",
                "restore memfile.header",
                "restore metadata.json",
                "restore snapfile",
                "remove tmpl-manifest.json"
            ]
        );
        // The other way round (a snapshot now, none in the backup; cold-boot metadata there).
        std::fs::write(b.join("metadata.json"), br#"{"filesystem_only":true}"#).unwrap();
        for f in ["snapfile", "memfile", "memfile.header"] {
            std::fs::remove_file(b.join(f)).unwrap();
            std::fs::write(dir.join(f), b"snap").unwrap();
        }
        assert_eq!(
            names(&restore_order(dir, &b)),
            [
                "remove snapfile",
                "remove memfile",
                "remove memfile.header",
                "restore metadata.json",
                "restore rootfs.ext4",
                "restore rootfs.ext4.header",
                "remove tmpl-manifest.json"
            ]
        );
    }

    #[test]
    fn backup_names_stay_in_the_build() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".tmpl-backup-1")).unwrap();
        assert!(backup_dir(d.path(), ".tmpl-backup-1/").is_ok());
        for bad in ["../x", ".tmpl-backup-1/../../etc", "rootfs.ext4", ".tmpl-backup-", ".tmpl-work-1"] {
            assert_eq!(backup_dir(d.path(), bad).unwrap_err().exit_code(), crate::exit_code::USAGE, "{bad}");
        }
        assert_eq!(backup_dir(d.path(), ".tmpl-backup-2").unwrap_err().exit_code(), crate::exit_code::INVALID_INPUT);
    }
}
