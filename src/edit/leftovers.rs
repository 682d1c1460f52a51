//! What edits leave behind, found, sized and — when nothing uses them any more — removed.
//!
//! In a build folder: `.tmpl-backup-<time>/` (the originals of an in-place edit, kept on
//! purpose), `.tmpl-work-*/` (the work copy of an edit that was killed or is running), the commit
//! journal `.tmpl-commit.json` (an interrupted commit, see [`super::commit`]), and mounts of work
//! copies that tmpl versions before the private mount namespace left in the host namespace. In the
//! storage root: `.tmpl-fork-<id>.partial/` (a `--fork` that was killed or is running).
//!
//! Whether something is still in use is read from the locks tmpl holds while it works: an edit
//! holds an `flock` on the build folder, a fork one on its partial folder. Reading `/proc/locks`
//! answers without taking them; removing happens only with the lock taken.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::apply::{BuildLock, lock_holders};
use super::commit::{self, BACKUP_PREFIX, JOURNAL, JOURNAL_NEW, WORK_PREFIX};
use crate::error::{Error, Result};
use crate::report::human_bytes;
use crate::storage::BuildId;

/// A fork's folder while it is written: `<storage>/.tmpl-fork-<new-id>.partial/`.
pub const FORK_PREFIX: &str = ".tmpl-fork-";
pub const FORK_SUFFIX: &str = ".partial";
/// The file in a partial fork that names its source build and writer.
pub const FORK_OWNER: &str = ".tmpl-fork.json";
/// A partial fork without an owner file (written by a tmpl before it had one) counts as dead
/// once it is this old and unlocked.
pub const UNMARKED_FORK_AGE: Duration = Duration::from_secs(3600);
/// At most this many entries are walked to size one leftover.
const WALK_CAP: usize = 100_000;

/// What a leftover is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `.tmpl-backup-*`: the originals an in-place edit replaced (or a restore saved).
    Backup,
    /// `.tmpl-work-*`: the work copy of an edit.
    WorkFolder,
    /// `.tmpl-commit.json`: an interrupted (or running) commit.
    Journal,
    /// `.tmpl-fork-*.partial`: a fork being written or killed.
    Fork,
    /// A `tmpl-mount-*` mount of a work copy in the host namespace, from an older tmpl.
    Mount,
}

/// One leftover.
#[derive(Clone, Debug, Serialize)]
pub struct Leftover {
    pub kind: Kind,
    pub name: String,
    pub path: PathBuf,
    /// Allocated bytes (what `du -B1` counts).
    pub bytes: u64,
    pub files: usize,
    /// Last modification time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// A running tmpl holds the lock that covers it: it is in use, not left over.
    pub in_use: bool,
    /// Processes holding that lock.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// For a fork: the build it was forked from (from its owner file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The file names inside (a backup's, a work folder's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<String>,
}

impl Leftover {
    /// `.tmpl-work-1a2b (16.0 MiB)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, human_bytes(self.bytes))
    }
}

/// Allocated bytes and file count under `path` (not following links), bounded.
pub fn usage(path: &Path) -> (u64, usize) {
    let mut bytes = 0u64;
    let mut files = 0usize;
    let mut seen = 0usize;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > WALK_CAP {
            break;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            bytes = bytes.saturating_add(m.blocks().saturating_mul(512));
            files += 1;
        }
    }
    (bytes, files)
}

fn modified(m: &std::fs::Metadata) -> Option<String> {
    let t = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(super::manifest::format_utc(t.as_secs()))
}

fn contents(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out.truncate(64);
    out
}

fn leftover(kind: Kind, path: &Path, holders: &[String]) -> Option<Leftover> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let (bytes, files) = usage(path);
    Some(Leftover {
        kind,
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        path: path.to_path_buf(),
        bytes,
        files,
        modified: modified(&m),
        in_use: !holders.is_empty(),
        holders: holders.to_vec(),
        source: None,
        contents: if m.is_dir() { contents(path) } else { Vec::new() },
    })
}

/// Host-namespace tmpl mounts whose image lies under `dir`.
fn mounts_under(dir: &Path) -> Vec<crate::sys::mount::HostMount> {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    crate::sys::mount::host_mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.backing.as_ref().is_some_and(|b| b.starts_with(&canon) || b.starts_with(dir)))
        .collect()
}

/// Leftovers in a build folder (backups, work folders, the journal, stale mounts of its work
/// copies), sorted by kind and name.
pub fn in_build(dir: &Path) -> Vec<Leftover> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    // Read /proc/locks only for a folder that has something to report.
    let mut holders_cache: Option<Vec<String>> = None;
    let mut holders = |dir: &Path| holders_cache.get_or_insert_with(|| lock_holders(dir)).clone();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let kind = if is_dir && name.starts_with(BACKUP_PREFIX) {
            Kind::Backup
        } else if is_dir && name.starts_with(WORK_PREFIX) {
            Kind::WorkFolder
        } else if name == JOURNAL || name == JOURNAL_NEW {
            Kind::Journal
        } else {
            continue;
        };
        // A backup is not in use by an edit: it is kept on purpose.
        let h = if kind == Kind::Backup { Vec::new() } else { holders(dir) };
        out.extend(leftover(kind, &e.path(), &h));
    }
    for m in mounts_under(dir) {
        let holders = holders(dir);
        let (bytes, _) = m.backing.as_deref().map(usage).unwrap_or((0, 0));
        out.push(Leftover {
            kind: Kind::Mount,
            name: m.target.display().to_string(),
            path: m.target.clone(),
            bytes,
            files: 0,
            modified: None,
            in_use: !holders.is_empty(),
            holders: holders.clone(),
            source: None,
            contents: vec![format!(
                "{} on {}{}",
                m.device.display(),
                m.backing.as_deref().map(|b| b.display().to_string()).unwrap_or_default(),
                if m.backing_deleted { " (deleted)" } else { "" }
            )],
        });
    }
    out.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    out
}

/// The owner file of a partial fork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOwner {
    pub source: String,
    pub pid: u32,
    pub started_at: String,
}

fn fork_owner(path: &Path) -> Option<ForkOwner> {
    let bytes = crate::build::read_small(&path.join(FORK_OWNER), 64 * 1024).ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn is_partial_fork(name: &str) -> bool {
    name.starts_with(FORK_PREFIX) && name.ends_with(FORK_SUFFIX)
}

/// Partial forks in the storage root.
pub fn in_storage(root: &Path) -> Vec<Leftover> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_partial_fork(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let holders = lock_holders(&path);
        if let Some(mut l) = leftover(Kind::Fork, &path, &holders) {
            l.source = fork_owner(&path).map(|o| o.source);
            out.push(l);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Partial forks of one source build.
pub fn forks_of(root: &Path, source: &BuildId) -> Vec<Leftover> {
    let id = source.to_string();
    in_storage(root).into_iter().filter(|l| l.source.as_deref() == Some(id.as_str())).collect()
}

/// [`forks_of`] for checks that run once per build (`verify --all`): the storage root is scanned
/// once per run and again only when its modification time changes (an entry added or removed).
pub fn forks_of_cached(root: &Path, source: &BuildId) -> Vec<Leftover> {
    use std::sync::Mutex;
    type Cache = Option<(PathBuf, Option<SystemTime>, Vec<Leftover>)>;
    static CACHE: Mutex<Cache> = Mutex::new(None);
    let mtime = std::fs::metadata(root).and_then(|m| m.modified()).ok();
    let all = {
        let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match &*g {
            Some((r, t, l)) if r == root && *t == mtime && mtime.is_some() => l.clone(),
            _ => {
                let l = in_storage(root);
                *g = Some((root.to_path_buf(), mtime, l.clone()));
                l
            }
        }
    };
    let id = source.to_string();
    all.into_iter().filter(|l| l.source.as_deref() == Some(id.as_str())).collect()
}

/// Remove the host-namespace mounts of images under `dir` (the caller holds the lock that proves
/// the tmpl that made them is gone). One note per mount.
fn remove_mounts_under(dir: &Path) -> Vec<String> {
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
                    started_at: super::manifest::utc_now(),
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
