//! What tmpl's edits leave in and beside a build, found and sized — never changed here (the
//! editor removes them, `edit::leftovers`): in a build folder `.tmpl-backup-<time>/` (the
//! originals of an in-place edit, kept on purpose), `.tmpl-work-*/` (the work copy of an edit
//! that was killed or is running), the commit journal `.tmpl-commit.json` (an interrupted commit),
//! and mounts of work copies that tmpl versions before the private mount namespace left in the
//! host namespace; in the storage root `.tmpl-fork-<id>.partial/` (a `--fork` that was killed or
//! is running).
//!
//! Whether something is still in use is read from the locks tmpl holds while it works (an edit
//! holds an `flock` on the build folder, a fork one on its partial folder), from `/proc/locks`,
//! without taking them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::report::human_bytes;
use crate::sys::lock_holders;
use crate::vocab::BuildId;
use crate::vocab::files::{BACKUP_PREFIX, FORK_OWNER, JOURNAL, JOURNAL_NEW, WORK_PREFIX, is_partial_fork};
use crate::vocab::journal::{self, Journal, StepState};

/// At most this many entries are walked to size one leftover.
const WALK_CAP: usize = 100_000;

/// What a leftover is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// For a fork: the build it was forked from (from its owner file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The file names inside (a backup's, a work folder's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    Some(crate::vocab::manifest::format_utc(t.as_secs()))
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
pub fn mounts_under(dir: &Path) -> Vec<crate::sys::mount::HostMount> {
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

pub fn fork_owner(path: &Path) -> Option<ForkOwner> {
    let bytes = crate::vocab::read_small(&path.join(FORK_OWNER), 64 * 1024).ok()??;
    serde_json::from_slice(&bytes).ok()
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

/// The state of a build's commit journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<Journal>,
    /// Why the journal cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<StepState>,
    /// A running tmpl holds the build's lock: the commit is happening now.
    pub in_progress: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

impl JournalState {
    pub fn steps_done(&self) -> usize {
        self.steps.iter().filter(|s| **s == StepState::Done).count()
    }

    /// One line for reports and findings.
    pub fn describe(&self) -> String {
        match &self.journal {
            Some(j) => format!(
                "a {} by tmpl {} (pid {}, started {}) {}: {} of {} renames done",
                match j.kind {
                    journal::Kind::Edit => "commit of an edit",
                    journal::Kind::Restore => "restore",
                },
                j.command,
                j.pid,
                j.started_at,
                if self.in_progress { "is running" } else { "was interrupted" },
                self.steps_done(),
                j.steps.len()
            ),
            None => format!("{} is damaged: {}", JOURNAL, self.error.as_deref().unwrap_or("?")),
        }
    }
}

/// The journal of a build folder, if any, with each step's state.
pub fn journal_state(dir: &Path) -> Option<JournalState> {
    let read = journal::read(dir);
    if matches!(read, Ok(None)) {
        return None;
    }
    let holders = lock_holders(dir);
    match read {
        Ok(None) => None,
        Ok(Some(j)) => Some(JournalState {
            steps: j.states(dir),
            journal: Some(j),
            error: None,
            in_progress: !holders.is_empty(),
            holders,
        }),
        Err(e) => Some(JournalState {
            journal: None,
            error: Some(e.to_string()),
            steps: Vec::new(),
            in_progress: !holders.is_empty(),
            holders,
        }),
    }
}
