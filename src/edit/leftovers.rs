//! Removing what killed edits left (found by [`crate::leftovers`]): work folders, stale host
//! mounts, dead partial forks, and creating a fork's locked partial folder.
//!
//! Whether something is still in use is read from the locks tmpl holds while it works: an edit
//! holds an `flock` on the build folder, a fork one on its partial folder. Removing happens only
//! with the lock taken.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::apply::BuildLock;
use super::commit;
use crate::error::{Error, Result};
pub use crate::leftovers::{
    ForkOwner, Kind, Leftover, fork_owner, forks_of, in_build, in_storage, mounts_under, usage,
};
use crate::report::human_bytes;
use crate::sys::lock_holders;
use crate::vocab::BuildId;
use crate::vocab::files::{FORK_OWNER, FORK_PREFIX, FORK_SUFFIX, JOURNAL_NEW};

/// A partial fork without an owner file (written by a tmpl before it had one) counts as dead
/// once it is this old and unlocked.
pub const UNMARKED_FORK_AGE: Duration = Duration::from_secs(3600);

/// Remove the host-namespace mounts of images under `dir` (the caller holds the lock that proves
/// the tmpl that made them is gone). One note per mount.
pub(super) fn remove_mounts_under(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for m in mounts_under(dir) {
        let what = format!("{} ({})", m.target.display(), m.device.display());
        match crate::sys::mount::remove_host_mount(&m) {
            Ok(()) => notes.push(format!("unmounted {what}, a mount an older tmpl left when it was killed")),
            Err(e) => notes.push(format!("could not remove the stale mount {what}: {e}")),
        }
    }
    notes
}

/// With the build's exclusive lock: remove what earlier, killed runs left in the build folder —
/// their host mounts first (so no mounted file is deleted), then their work folders (except one
/// an unsettled journal still needs) and a half-written journal. Returns one note per removal.
pub fn clean_dead(dir: &Path, lock: &BuildLock) -> Vec<String> {
    if !lock.exclusive || lock.dir != dir {
        return Vec::new();
    }
    let mut notes = remove_mounts_under(dir);
    let needed: Vec<String> = match commit::read(dir) {
        Ok(Some(j)) => j.remove_on_complete.iter().chain(&j.remove_on_rollback).cloned().collect(),
        Ok(None) => Vec::new(),
        // A damaged journal: keep every folder it might name.
        Err(_) => return notes,
    };
    for l in in_build(dir) {
        match l.kind {
            Kind::WorkFolder if !needed.contains(&l.name) => match std::fs::remove_dir_all(&l.path) {
                Ok(()) => notes.push(format!("removed {}, left by an interrupted run", l.label())),
                Err(e) => notes.push(format!("could not remove {}: {e}", l.path.display())),
            },
            Kind::Journal if l.name == JOURNAL_NEW => {
                let _ = std::fs::remove_file(&l.path);
            }
            _ => {}
        }
    }
    notes
}

/// Try to take a partial fork's lock; `Some` when nobody holds it.
fn take_fork_lock(path: &Path) -> Option<File> {
    let f = File::open(path).ok()?;
    f.try_lock().ok()?;
    Some(f)
}

/// Is a partial fork dead (its writer gone)? Takes its lock to find out; returns it held.
fn dead_fork(path: &Path) -> Option<File> {
    let lock = take_fork_lock(path)?;
    if fork_owner(path).is_some() {
        return Some(lock);
    }
    // Unmarked: an older tmpl (which did not lock it) may still be writing it.
    let old = std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= UNMARKED_FORK_AGE);
    old.then_some(lock)
}

fn remove_fork(path: &Path) -> std::result::Result<String, String> {
    let (bytes, _) = usage(path);
    let mut notes = remove_mounts_under(path);
    std::fs::remove_dir_all(path).map_err(|e| format!("could not remove {}: {e}", path.display()))?;
    notes.push(format!(
        "removed {} ({}), an interrupted --fork",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        human_bytes(bytes)
    ));
    Ok(notes.join("; "))
}

/// Remove dead partial forks in the storage root (of `source` only, when given). A partial fork
/// is dead when its lock is free (and, for one without an owner file, it is over an hour old).
pub fn clean_dead_forks(root: &Path, source: Option<&BuildId>) -> Vec<String> {
    let mut notes = Vec::new();
    for l in in_storage(root) {
        if let Some(s) = source
            && l.source.as_deref() != Some(s.to_string().as_str())
        {
            continue;
        }
        if let Some(_lock) = dead_fork(&l.path) {
            match remove_fork(&l.path) {
                Ok(n) | Err(n) => notes.push(n),
            }
        }
    }
    notes
}

/// A locked partial folder for a fork to `new_id`, with its owner file. An existing one is
/// removed when dead, else the fork is refused naming the run that holds it.
pub fn create_fork_partial(root: &Path, new_id: &BuildId, source: &BuildId) -> Result<(PathBuf, File)> {
    let path = root.join(format!("{FORK_PREFIX}{new_id}{FORK_SUFFIX}"));
    for _ in 0..2 {
        match std::fs::create_dir(&path) {
            Ok(()) => {
                let lock = take_fork_lock(&path)
                    .ok_or_else(|| Error::refused(format!("{} was taken by another run", path.display()), vec![]))?;
                let owner = ForkOwner {
                    source: source.to_string(),
                    pid: std::process::id(),
                    started_at: crate::vocab::manifest::utc_now(),
                };
                let text = serde_json::to_vec(&owner).unwrap_or_default();
                commit::write_synced(&path.join(FORK_OWNER), &text)?;
                return Ok((path, lock));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some(_lock) = dead_fork(&path) {
                    remove_fork(&path)
                        .map_err(|m| Error::Write { path: path.clone(), source: std::io::Error::other(m) })?;
                    continue;
                }
                let holders = lock_holders(&path);
                return Err(Error::refused(
                    format!("a fork to {new_id} is in progress: {}", path.display()),
                    if holders.is_empty() {
                        vec![format!(
                            "it was written by an older tmpl without a lock; remove it if no tmpl is running, or wait until it is {} old",
                            "an hour"
                        )]
                    } else {
                        vec![format!("held by {}", holders.join(", "))]
                    },
                ));
            }
            Err(e) => return Err(Error::write(&path, e)),
        }
    }
    Err(Error::refused(format!("{} keeps reappearing", path.display()), vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_marked_fork_is_replaced_and_a_live_one_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let (src, new) = (BuildId::new_random(), BuildId::new_random());
        let (p, lock) = create_fork_partial(root, &new, &src).unwrap();
        std::fs::write(p.join("rootfs.ext4"), vec![1u8; 8192]).unwrap();
        let l = in_storage(root);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].source.as_deref(), Some(src.to_string().as_str()));
        // Our own lock is not another run's (in_use names other processes).
        assert!(!l[0].in_use && l[0].bytes >= 8192, "{l:?}");
        // Held: refused, and not cleaned.
        let e = create_fork_partial(root, &new, &src).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit_code::REFUSED);
        assert!(e.to_string().contains("in progress"), "{e}");
        assert!(clean_dead_forks(root, Some(&src)).is_empty());
        assert!(clean_dead_forks(root, None).is_empty());
        // The writer is gone: the next run takes it over, and a clean-up removes it.
        drop(lock);
        let (p2, lock2) = create_fork_partial(root, &new, &src).unwrap();
        assert!(!p2.join("rootfs.ext4").exists(), "the dead fork's files were removed");
        drop(lock2);
        assert!(clean_dead_forks(root, Some(&BuildId::new_random())).is_empty(), "another source's run");
        let notes = clean_dead_forks(root, Some(&src));
        assert!(notes[0].contains("interrupted --fork"), "{notes:?}");
        assert!(in_storage(root).is_empty());
    }

    #[test]
    fn an_unmarked_fresh_fork_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(format!("{FORK_PREFIX}{}{FORK_SUFFIX}", BuildId::new_random()));
        std::fs::create_dir(&p).unwrap();
        assert!(clean_dead_forks(d.path(), None).is_empty());
        assert!(p.exists());
    }

    #[test]
    fn build_leftovers_are_named_and_sized() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir(dir.join(".tmpl-backup-20260101T000000Z")).unwrap();
        std::fs::write(dir.join(".tmpl-backup-20260101T000000Z/rootfs.ext4"), vec![1u8; 40960]).unwrap();
        std::fs::create_dir(dir.join(".tmpl-work-ab12")).unwrap();
        std::fs::write(dir.join("rootfs.ext4"), b"x").unwrap();
        let l = in_build(dir);
        assert_eq!(l.iter().map(|l| l.kind).collect::<Vec<_>>(), vec![Kind::Backup, Kind::WorkFolder]);
        assert!(l[0].bytes >= 40960 && l[0].contents == vec!["rootfs.ext4".to_string()], "{l:?}");
        assert!(!l[1].in_use);
        let lock = super::super::apply::lock_build(dir, true).unwrap();
        let notes = clean_dead(dir, &lock);
        assert!(notes.iter().any(|n| n.contains(".tmpl-work-ab12")), "{notes:?}");
        assert_eq!(in_build(dir).len(), 1, "the backup is kept");
    }
}
