//! A fork written to a remote storage (`--fork --to s3://...`, or `--fork` of a build that lives
//! in a bucket): the fork is assembled and verified by the ordinary fork pipeline
//! ([`super::apply::apply_fork_to`]) in a local **staging** storage, then **published** with the
//! copy domain ([`crate::copy`]): data, header, `metadata.json` last, every object read back and
//! compared, and on any failure the objects this run wrote are deleted again, so nothing of the
//! fork is visible at the destination.
//!
//! The staging storage is a fresh folder `tmpl-stage-<random>` in the system's temporary
//! directory (`TMPDIR`), mode 0700, locked (`flock`) for the whole run and removed afterwards,
//! on failure too. A run that is killed cannot remove it: the next staged fork removes every
//! staging folder of this user whose lock is free (see [`clean_dead_stages`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::copy::{self, Action, Conflict, Item};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::remote::{self, Store};
use crate::report::{Finding, human_bytes};
use crate::vocab::BuildId;
use crate::vocab::files::METADATA;

/// Name prefix of a staging folder in the temporary directory.
pub const STAGE_PREFIX: &str = "tmpl-stage-";
/// The owner file a staging folder gets once it is locked (who made it, for what).
const STAGE_OWNER: &str = ".tmpl-stage.json";
/// A staging folder without an owner file (its run died between creating and marking it) is
/// removed once its lock is free and it is this old.
const UNMARKED_STAGE_AGE: Duration = Duration::from_secs(600);

/// A locked staging storage, removed when dropped.
#[derive(Debug)]
pub struct Stage {
    root: PathBuf,
    _lock: File,
}

impl Stage {
    /// A new staging storage under `parent` (the system's temporary directory) for a fork of
    /// `source` to `new_id`. Dead staging folders of earlier runs are removed first (one note
    /// each).
    pub fn create(parent: &Path, source: &BuildId, new_id: &BuildId) -> Result<(Stage, Vec<String>)> {
        use std::os::unix::fs::DirBuilderExt;
        let notes = clean_dead_stages(parent);
        let short = BuildId::new_random().to_string();
        let root = parent.join(format!("{STAGE_PREFIX}{}", &short[..8]));
        std::fs::DirBuilder::new().mode(0o700).create(&root).map_err(|e| Error::write(&root, e))?;
        let lock = match File::open(&root).and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::other)) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(Error::write(&root, e));
            }
        };
        let stage = Stage { root, _lock: lock };
        let owner = serde_json::json!({
            "source": source.to_string(),
            "fork": new_id.to_string(),
            "pid": std::process::id(),
            "started_at": crate::vocab::manifest::utc_now(),
        });
        super::commit::write_synced(&stage.root.join(STAGE_OWNER), owner.to_string().as_bytes())?;
        Ok((stage, notes))
    }

    /// The staging storage's root (a local storage directory).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // A mount a killed mount-backend edit left would keep its files; none is expected here
        // (the edit mounts in a private namespace), but never delete through a mount.
        let _ = super::leftovers::remove_mounts_under(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Is there room in `parent` for a staged fork of a rootfs of `size` bytes? The assembled image
/// is written sparse (holes where the layers map nothing), so this is the worst case; a refusal
/// up front beats running out of space after minutes of work. `Err` (exit 4) names the
/// shortfall and `TMPDIR`.
pub fn check_room(parent: &Path, size: u64) -> Result<()> {
    let Ok(st) = rustix::fs::statvfs(parent) else { return Ok(()) };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free >= size {
        return Ok(());
    }
    Err(Error::environment_msg(format!(
        "the new build is assembled in {} before it is uploaded, and needs up to {} there ({} free); \
         set TMPDIR to a directory on a disk with room",
        parent.display(),
        human_bytes(size),
        human_bytes(free)
    )))
}

/// Remove the staging folders in `parent` that this user owns and no run holds (their runs were
/// killed). Returns one note per folder removed or that could not be removed.
pub fn clean_dead_stages(parent: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut notes = Vec::new();
    let Ok(rd) = std::fs::read_dir(parent) else { return notes };
    let me = rustix::process::geteuid().as_raw();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Not following symlinks: only real folders of this user.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        if !name.starts_with(STAGE_PREFIX) || !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let path = e.path();
        let Ok(f) = File::open(&path) else { continue };
        if f.try_lock().is_err() {
            continue; // a live run
        }
        let marked = path.join(STAGE_OWNER).exists();
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a >= UNMARKED_STAGE_AGE);
        if !marked && !old {
            continue; // just created by a run that has not locked it yet
        }
        let (bytes, _) = crate::leftovers::usage(&path);
        let _ = super::leftovers::remove_mounts_under(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => notes.push(format!(
                "removed {} ({}), the staging folder of a fork to a remote storage that was interrupted",
                path.display(),
                human_bytes(bytes)
            )),
            Err(err) => notes.push(format!("could not remove the dead staging folder {}: {err}", path.display())),
        }
    }
    notes
}

/// How the fork reached its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Written straight into a local storage directory (the fork pipeline's own folder swap).
    Direct,
    /// Assembled in a local staging storage, then copied to a remote storage.
    Staged,
}

/// How the publish step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// `--dry-run`: nothing written.
    Planned,
    /// At the destination, every object written (or already identical) and verified.
    Published,
    /// A different build with the fork's ID appeared at the destination: nothing written.
    Refused,
    /// A storage failed or an object differed after writing; what this run wrote was deleted.
    Failed,
}

/// Why the publish step failed, and what the rollback did.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub detail: copy::FailureReport,
    /// `storage.unavailable` for a storage failure (not for a verification mismatch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<Finding>,
}

/// Where the fork went and how: the publish step of an edit's report.
#[derive(Clone, Debug, Serialize)]
pub struct Publish {
    /// The destination storage (a URL without credentials, or a directory).
    pub to: String,
    pub method: Method,
    pub status: Status,
    /// The staging storage the fork was assembled in (removed afterwards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged_in: Option<PathBuf>,
    /// The staging storage is gone again (false only while planned or when removing failed).
    pub staging_removed: bool,
    /// The objects of the fork at the destination, in write order, each with what was done.
    pub objects: Vec<Item>,
    /// Objects written (and verified), and left alone because identical ones were there.
    pub written: usize,
    pub skipped: usize,
    pub bytes_written: u64,
    /// Every object at the destination was read back and matched the staged one.
    pub verified: bool,
    /// HTTP requests sent to the destination (0 for a directory).
    pub requests: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Publish {
    /// The step before anything is written (a dry run, or the start of a real one).
    pub fn planned(to: String, method: Method) -> Publish {
        Publish {
            to,
            method,
            status: Status::Planned,
            staged_in: None,
            staging_removed: false,
            objects: Vec::new(),
            written: 0,
            skipped: 0,
            bytes_written: 0,
            verified: false,
            requests: 0,
            conflicts: Vec::new(),
            failure: None,
        }
    }

    /// The exit code this step implies (0 when published or planned).
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Planned | Status::Published => crate::exit_code::OK,
            Status::Refused => crate::exit_code::REFUSED,
            Status::Failed if self.failure.as_ref().is_some_and(|f| f.detail.verification) => {
                crate::exit_code::FINDINGS
            }
            // A destination that failed is the environment's, a missing bucket included.
            Status::Failed => crate::exit_code::ENVIRONMENT,
        }
    }
}

/// Before anything is assembled: the destination answers, and holds no complete build with the
/// fork's ID (refused, exit 5). Objects of an incomplete one (no `metadata.json`: a publish that
/// was killed) are written over; a note says so. A destination that cannot be listed (a missing
/// bucket, credentials, the network) is the environment's (exit 4).
pub fn preflight(dst: &Store, id: &BuildId) -> Result<Vec<String>> {
    let prefix = format!("{id}/");
    let there = dst
        .list(&prefix)
        .map_err(|e| Error::environment_msg(format!("the destination {} cannot be listed: {e}", dst.location())))?;
    if there.iter().any(|o| o.key == format!("{prefix}{METADATA}")) {
        return Err(Error::refused(
            format!("build {id} already exists at {}", dst.location()),
            vec!["choose another --fork-id (or none: a fresh ID)".into()],
        ));
    }
    Ok(if there.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} object(s) of an incomplete build {id} (no {METADATA}: an interrupted publish) at {} are written over",
            there.len(),
            dst.location()
        )]
    })
}

/// Copy the fork `id` from the staging storage at `stage_root` to `dst` (see the module
/// documentation): ordered, verified, rolled back on failure. Never returns an error: the
/// outcome, a failure included, is the returned step.
pub fn publish(stage_root: &Path, dst: &Store, id: BuildId, progress: &dyn Progress) -> Publish {
    let mut step = Publish::planned(dst.location().to_string(), Method::Staged);
    step.staged_in = Some(stage_root.to_path_buf());
    let before = dst.stats();
    let fail = |step: &mut Publish, detail: copy::FailureReport| {
        step.status = Status::Failed;
        let finding = (!detail.verification).then(|| {
            Finding::new(
                &crate::checks::STORAGE_UNAVAILABLE,
                None,
                format!("publishing the fork {id} to {} failed: {}", dst.location(), detail.error),
            )
        });
        step.failure = Some(Failure { detail, finding });
    };
    let src = match Store::open(
        &remote::Location::Local { path: stage_root.to_path_buf() },
        &remote::Env::empty(),
        &remote::Config::default(),
    ) {
        Ok(s) => s,
        Err(e) => {
            fail(&mut step, copy::FailureReport::before_writing(format!("{id}/"), &e));
            return step;
        }
    };
    // The fork is self-contained (its header maps only itself): no ancestors to carry.
    let mut plan = match copy::plan(&src, dst, id, &copy::Options { with_ancestors: true }) {
        Ok(Ok(p)) => p,
        Ok(Err(conflicts)) => {
            step.status = Status::Refused;
            step.conflicts = conflicts;
            step.requests = dst.stats().since(&before).requests;
            return step;
        }
        Err(e) => {
            fail(&mut step, copy::FailureReport::before_writing(format!("{id}/"), &e));
            step.requests = dst.stats().since(&before).requests;
            return step;
        }
    };
    if let Some(a) = plan.missing_ancestors.first() {
        let e = remote::Error::Config {
            store: dst.location().to_string(),
            reason: format!("the fork reads build {a}, which is not at the destination (a fork is self-contained)"),
        };
        fail(&mut step, copy::FailureReport::before_writing(format!("{a}/"), &e));
        return step;
    }
    match copy::execute(&src, dst, &mut plan, progress) {
        Ok(Ok(())) => {
            step.status = Status::Published;
            step.verified = plan.items.iter().all(|i| i.verified);
        }
        Ok(Err(conflicts)) => {
            step.status = Status::Refused;
            step.conflicts = conflicts;
        }
        Err(f) => {
            fail(&mut step, copy::FailureReport::from(*f));
        }
    }
    let done = |i: &&Item| matches!(i.action, Action::Copy | Action::Replace) && i.verified;
    if step.status == Status::Published {
        step.written = plan.items.iter().filter(done).count();
        step.bytes_written = plan.items.iter().filter(done).map(|i| i.size).sum();
    }
    step.skipped = plan.items.iter().filter(|i| i.action == Action::Skip).count();
    step.objects = plan.items;
    step.requests = dst.stats().since(&before).requests;
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_stage_is_removed_and_a_live_one_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (BuildId::new_random(), BuildId::new_random());
        let (live, notes) = Stage::create(tmp.path(), &a, &b).unwrap();
        assert!(notes.is_empty());
        std::fs::write(live.root().join("x"), b"data").unwrap();
        // Held by this run: kept.
        assert!(clean_dead_stages(tmp.path()).is_empty());
        assert!(live.root().join("x").exists());
        // A killed run's stage: marked, lock free.
        let dead = tmp.path().join(format!("{STAGE_PREFIX}dead0001"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(STAGE_OWNER), b"{}").unwrap();
        // One being created right now (not marked yet, fresh): kept.
        let fresh = tmp.path().join(format!("{STAGE_PREFIX}fresh001"));
        std::fs::create_dir(&fresh).unwrap();
        let notes = clean_dead_stages(tmp.path());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("dead0001") && !dead.exists() && fresh.exists());
        let root = live.root().to_path_buf();
        drop(live);
        assert!(!root.exists(), "a stage is removed when dropped");
    }

    #[test]
    fn no_room_for_the_stage_is_the_environments() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(check_room(tmp.path(), 4096).is_ok());
        let e = check_room(tmp.path(), u64::MAX).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit_code::ENVIRONMENT);
        assert!(e.to_string().contains("TMPDIR"), "{e}");
    }

    #[test]
    fn publish_to_a_directory_store_and_preflight() {
        let (stage, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = BuildId::from_bytes([9; 16]);
        let d = stage.path().join(id.to_string());
        std::fs::create_dir(&d).unwrap();
        for (n, c) in [("rootfs.ext4", &b"image"[..]), ("rootfs.ext4.header", b"h"), ("metadata.json", b"{}")] {
            std::fs::write(d.join(n), c).unwrap();
        }
        let dst = Store::open(
            &remote::Location::Local { path: dst_dir.path().into() },
            &remote::Env::empty(),
            &remote::Config::default(),
        )
        .unwrap();
        assert!(preflight(&dst, &id).unwrap().is_empty());
        // Not a parseable header: plan reads headers for ancestors and fails; the step says so.
        let p = publish(stage.path(), &dst, id, &crate::progress::NoProgress);
        assert_eq!(p.status, Status::Failed, "{p:?}");
        assert_eq!(p.exit_code(), crate::exit_code::ENVIRONMENT);
        assert!(std::fs::read_dir(dst_dir.path()).unwrap().next().is_none(), "nothing written");
        // A real identity header: published, metadata.json last, verified.
        let h = super::super::apply::identity_header(None, id, 4096, 0, id);
        std::fs::write(d.join("rootfs.ext4.header"), crate::header::encode(&h)).unwrap();
        let p = publish(stage.path(), &dst, id, &crate::progress::NoProgress);
        assert_eq!((p.status, p.written, p.verified), (Status::Published, 3, true), "{p:?}");
        assert!(p.objects.last().unwrap().key.ends_with(METADATA));
        assert_eq!(std::fs::read(dst_dir.path().join(id.to_string()).join("rootfs.ext4")).unwrap(), b"image");
        // Now the ID is taken at the destination.
        let e = preflight(&dst, &id).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit_code::REFUSED);
    }
}
