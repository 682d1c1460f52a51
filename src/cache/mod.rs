//! Node-local cache invalidation: cache roots (env/flags) → the entries of given builds →
//! a [`Plan`] → [`apply`] (rename into a trash folder, then delete in parallel) → [`Outcome`].
//!
//! Never prints, never imports clap. Callers:
//!
//! ```no_run
//! use tmpl::cache::{self, Options, RootFlags, Roots, Selection};
//! use tmpl::progress::NoProgress;
//! # fn main() -> tmpl::Result<()> {
//! let id = tmpl::vocab::BuildId::parse("11111111-2222-4333-8444-555555555555")?;
//! let roots = Roots::from_env(&RootFlags::default());
//! let plan = cache::plan(&roots, &Options::new(Selection::builds([id])))?;
//! let outcome = cache::apply(&plan, &NoProgress);
//! assert!(outcome.totals.failed == 0);
//! # Ok(()) }
//! ```
//!
//! Safety rules, in the order they are applied:
//! 1. a root that does not look like its cache (no entry of that shape and not empty) is refused
//!    as a whole; so is a root that is, or contains, a protected path (the template storage);
//! 2. a root that is a symlink is resolved once, and the resolution is reported; the root is then
//!    opened once and everything below it is reached from that handle, one name at a time, never
//!    following a symlink and never re-resolving a path string (`walk::open_beneath`: `openat2`
//!    with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, else `O_NOFOLLOW`); symlinked entries are
//!    removed as links, and an entry or parent folder that changed between listing and deleting
//!    (moved, or swapped for a symlink) is left alone;
//! 3. entries that look like a stored build, or sit on another filesystem, are never deleted;
//! 4. entries that a process holds open or mapped are never deleted (deleting them would free
//!    nothing and could break a running sandbox) — the shared chunk cache excepted, which is
//!    designed for live deletion;
//! 5. while the orchestrator runs (lock held, or Firecracker processes holding these builds'
//!    files), only the shared chunk cache is purged, unless `force`;
//! 6. deletion first renames every entry into `<root>/.tmpl-trash-*` (same filesystem, atomic;
//!    `renameat` between the parent's and the trash's handles),
//!    so an interrupted purge leaves whole entries or none; trash left by an earlier run is
//!    reported and removed (unless another purge holds its lock).

pub mod discover;
pub mod liveness;
pub mod roots;
pub mod summary;
pub mod walk;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use discover::{EntryType, Layout, Loc, TRASH_PREFIX};
pub use liveness::{Liveness, LockState, ProcRef};
pub use roots::{CacheKind, RootFlags, RootSpec, Roots, Source, SourceKind};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::sys;
use crate::vocab::BuildId;

/// Which builds to purge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Builds(BTreeSet<BuildId>),
    /// Every build, plus sandbox files no process has open.
    All,
}

impl Selection {
    pub fn builds(ids: impl IntoIterator<Item = BuildId>) -> Selection {
        Selection::Builds(ids.into_iter().collect())
    }

    fn matches(&self, id: Option<BuildId>) -> bool {
        match (self, id) {
            (Selection::All, _) => true,
            (Selection::Builds(set), Some(id)) => set.contains(&id),
            (Selection::Builds(_), None) => false,
        }
    }
}

/// How to plan.
#[derive(Clone, Debug)]
pub struct Options {
    pub selection: Selection,
    /// Purge non-live-safe caches even while the orchestrator runs (open files still are not).
    pub force: bool,
    /// Only these kinds (None: all).
    pub kinds: Option<Vec<CacheKind>>,
    /// Paths no cache root may be or contain (the template storage).
    pub protect: Vec<PathBuf>,
    /// Threads for measuring and deleting (0: 4 per core, at least 8 — unlinks wait on I/O).
    pub jobs: usize,
}

impl Options {
    pub fn new(selection: Selection) -> Self {
        Options { selection, force: false, kinds: None, protect: Vec::new(), jobs: 0 }
    }

    fn threads(&self) -> usize {
        if self.jobs > 0 {
            return self.jobs;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        (cores * 4).max(8)
    }
}

/// State of one cache root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootStatus {
    /// Scanned.
    Ok,
    /// The folder does not exist: nothing cached.
    Absent,
    /// Not configured (the shared chunk cache is off by default).
    Unset,
    /// Left out by the caller (`--cache`).
    Excluded,
    /// Does not look like this cache: nothing in it is touched.
    Refused,
    /// Could not be read.
    Error,
}

/// One entry to delete (or that was considered).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<BuildId>,
    pub path: PathBuf,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub layout: Layout,
    /// `st_blocks` × 512 over the entry's tree (what `du -B1 -s` says).
    pub allocated_bytes: u64,
    pub files: u64,
    pub dirs: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Sandbox cache: the `<sandboxID>-<rand>` the file belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Where it is below its root, by names and identities (what a purge acts on; `path` is for
    /// people). Not in the JSON: an entry read back from a report has no identity
    /// ([`Loc::unknown`]), so it matches no file.
    #[serde(skip, default = "Loc::unknown")]
    pub loc: Loc,
}

/// Why an entry is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The orchestrator runs and this cache is not safe to purge live (`--force` overrides).
    OrchestratorRunning,
    /// A process holds it open or mapped.
    InUse,
    /// It does not look like an entry of this cache (e.g. a stored build).
    NotCacheShaped,
    /// It is a mount point or on another filesystem: it cannot be renamed into the trash.
    OtherFilesystem,
    /// Another purge is deleting this trash folder right now.
    TrashInUse,
    /// It could not be measured.
    Unreadable,
    /// It, or the folder holding it, changed between planning and deleting: moved, replaced, or
    /// swapped for a symlink.
    Changed,
    /// It sits behind a symlink in the root (a legacy `<templateID>` link): never followed.
    BehindSymlink,
}

/// An entry left alone, with the reason.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub entry: Entry,
    pub reason: SkipReason,
    pub detail: String,
}

/// One cache root as planning found it: what a root's plan and its outcome both say. `E` is an
/// entry: planned ([`Entry`]) in a [`CachePlan`], done ([`EntryResult`]) in a [`CacheOutcome`].
/// Both embed it flattened, so their JSON keeps these fields at the top level, in this order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RootFacts<E> {
    pub kind: CacheKind,
    /// The folder scanned (after resolving a symlinked root).
    pub root: Option<PathBuf>,
    /// The configured path when it was a symlink (then `root` is its target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink: Option<PathBuf>,
    pub source: Source,
    pub status: RootStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// In a plan: entries to delete, leftover trash included (`layout: trash`).
    pub entries: Vec<E>,
    pub skipped: Vec<Skipped>,
    /// Entries of other builds, or of no build, left alone.
    pub other_entries: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The plan for one cache root.
#[derive(Clone, Debug, Serialize)]
pub struct CachePlan {
    #[serde(flatten)]
    pub facts: RootFacts<Entry>,
    /// The root, opened once when planning; every step below it starts from this handle.
    #[serde(skip)]
    root_fd: Option<Arc<OwnedFd>>,
}

/// What a purge will do.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub build_ids: Vec<BuildId>,
    pub all: bool,
    pub force: bool,
    pub orchestrator: Liveness,
    pub caches: Vec<CachePlan>,
    #[serde(skip)]
    threads: usize,
}

/// Plan a purge: resolve and check every root, find the selected builds' entries, measure them,
/// and decide what is safe. Reads only.
pub fn plan(roots: &Roots, opts: &Options) -> Result<Plan> {
    let pool = pool(opts.threads())?;
    let mut orchestrator = liveness::probe(&roots.lock);
    let protect: Vec<PathBuf> = opts.protect.iter().map(|p| std::fs::canonicalize(p).unwrap_or(p.clone())).collect();
    let mut caches: Vec<CachePlan> =
        pool.install(|| roots.caches.iter().map(|spec| plan_root(spec, opts, &protect)).collect());

    // Open files: never delete what a process holds (the chunk cache aside, see the module doc).
    let files = entry_files(&caches);
    let mut busy: HashMap<(usize, usize), Vec<sys::Holder>> = HashMap::new();
    if !files.is_empty() {
        let wanted: Vec<(sys::FileId, &Path)> = files.iter().map(|(_, _, id, p)| (*id, p.as_path())).collect();
        match sys::holders_of(&wanted) {
            Ok(hs) => {
                let mut fc = Vec::new();
                for h in hs {
                    if let Some((ci, ei, _, _)) = files.iter().find(|(_, _, _, p)| *p == h.path) {
                        if h.comm.contains("firecracker") && !fc.iter().any(|p: &ProcRef| p.pid == h.pid) {
                            fc.push(ProcRef { pid: h.pid, comm: h.comm.clone(), path: h.path.clone() });
                        }
                        busy.entry((*ci, *ei)).or_default().push(h);
                    }
                }
                orchestrator.add_firecracker(fc);
            }
            Err(e) => {
                // Cannot tell: treat everything as in use.
                for (ci, ei, _, p) in &files {
                    busy.entry((*ci, *ei)).or_default().push(sys::Holder {
                        pid: 0,
                        comm: format!("unknown (cannot scan /proc: {e})"),
                        path: p.clone(),
                        access: sys::inuse::Access::Open,
                    });
                }
            }
        }
    }
    for (ci, c) in caches.iter_mut().enumerate() {
        // A sandbox's files go together.
        let busy_groups: BTreeSet<String> = c
            .facts
            .entries
            .iter()
            .enumerate()
            .filter(|(ei, _)| busy.contains_key(&(ci, *ei)))
            .filter_map(|(_, e)| e.sandbox.clone())
            .collect();
        let entries = std::mem::take(&mut c.facts.entries);
        for (ei, e) in entries.into_iter().enumerate() {
            if let Some(hs) = busy.get(&(ci, ei)) {
                let who: Vec<String> = hs.iter().take(3).map(|h| format!("pid {} ({})", h.pid, h.comm)).collect();
                let detail =
                    format!("open by {}: deleting it frees nothing and can break a running sandbox", who.join(", "));
                c.facts.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if e.sandbox.as_ref().is_some_and(|g| busy_groups.contains(g)) {
                let detail = "another file of the same sandbox is open".to_string();
                c.facts.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if orchestrator.running && !opts.force && !c.facts.kind.safe_live() && e.layout != Layout::Trash {
                let detail =
                    format!("{}; only the shared chunk cache is purged live (--force overrides)", orchestrator.reason);
                c.facts.skipped.push(Skipped { entry: e, reason: SkipReason::OrchestratorRunning, detail });
            } else {
                c.facts.entries.push(e);
            }
        }
    }

    let (build_ids, all) = match &opts.selection {
        Selection::Builds(s) => (s.iter().copied().collect(), false),
        Selection::All => (Vec::new(), true),
    };
    Ok(Plan { build_ids, all, force: opts.force, orchestrator, caches, threads: opts.threads() })
}

/// One call for library users (e.g. after an in-place change of a build): purge every node-local
/// cache entry of `ids`, roots from the process environment like the orchestrator's, the template
/// storage protected. `dry_run` plans only. The outcome says per entry what happened and why
/// anything was skipped (`outcome.verdict`).
pub fn purge_builds(
    ids: &[BuildId],
    storage_root: Option<&Path>,
    force: bool,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let roots = Roots::from_env(&RootFlags::default());
    let mut opts = Options::new(Selection::builds(ids.iter().copied()));
    opts.force = force;
    opts.protect.extend(storage_root.map(Path::to_path_buf));
    let plan = plan(&roots, &opts)?;
    Ok(if dry_run { plan.preview() } else { apply(&plan, progress) })
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tmpl-purge-{i}"))
        .build()
        .map_err(|source| Error::environment(WorkerThreads { threads, source }))
}

/// The worker threads of a purge could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {threads} worker threads: {source}")]
pub struct WorkerThreads {
    threads: usize,
    #[source]
    source: rayon::ThreadPoolBuildError,
}

fn empty_plan(spec: &RootSpec, status: RootStatus, reason: Option<String>) -> CachePlan {
    CachePlan {
        facts: RootFacts {
            kind: spec.kind,
            root: spec.path.clone(),
            symlink: None,
            source: spec.source.clone(),
            status,
            reason,
            entries: Vec::new(),
            skipped: Vec::new(),
            other_entries: 0,
            notes: Vec::new(),
        },
        root_fd: None,
    }
}

fn plan_root(spec: &RootSpec, opts: &Options, protect: &[PathBuf]) -> CachePlan {
    if opts.kinds.as_ref().is_some_and(|ks| !ks.contains(&spec.kind)) {
        return empty_plan(spec, RootStatus::Excluded, None);
    }
    let Some(configured) = spec.path.clone() else {
        return empty_plan(spec, RootStatus::Unset, None);
    };
    let mut cp = empty_plan(spec, RootStatus::Ok, None);
    let meta = match std::fs::symlink_metadata(&configured) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return empty_plan(spec, RootStatus::Absent, None),
        Err(e) => {
            return empty_plan(spec, RootStatus::Error, Some(format!("cannot inspect {}: {e}", configured.display())));
        }
    };
    let root = if meta.file_type().is_symlink() {
        match std::fs::canonicalize(&configured) {
            Ok(t) => {
                cp.facts.notes.push(format!(
                    "{} is a symlink to {}: purging inside {}",
                    configured.display(),
                    t.display(),
                    t.display()
                ));
                cp.facts.symlink = Some(configured.clone());
                t
            }
            Err(e) => {
                return empty_plan(
                    spec,
                    RootStatus::Refused,
                    Some(format!("{} is a symlink that does not resolve: {e}", configured.display())),
                );
            }
        }
    } else {
        configured.clone()
    };
    cp.facts.root = Some(root.clone());
    // The root is opened once; everything below it is reached from this handle.
    let root_fd = match walk::open_root(&root) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            cp.facts.status = RootStatus::Refused;
            cp.facts.reason = Some(format!("{} is not a directory", root.display()));
            return cp;
        }
        Err(e) => {
            cp.facts.status = RootStatus::Error;
            cp.facts.reason = Some(format!("cannot open {}: {e}", root.display()));
            return cp;
        }
    };
    let root_dev = match rustix::fs::fstat(&root_fd) {
        Ok(st) => walk::file_id(&st).dev,
        Err(e) => {
            cp.facts.status = RootStatus::Error;
            cp.facts.reason = Some(format!("cannot inspect {}: {e}", root.display()));
            return cp;
        }
    };
    let canon = std::fs::canonicalize(&root).unwrap_or(root.clone());
    if canon == Path::new("/") {
        cp.facts.status = RootStatus::Refused;
        cp.facts.reason = Some("the filesystem root is never a cache root".into());
        return cp;
    }
    if let Some(p) = protect.iter().find(|p| p.starts_with(&canon)) {
        cp.facts.status = RootStatus::Refused;
        cp.facts.reason =
            Some(format!("{} is or contains the template storage {}: never purged", root.display(), p.display()));
        return cp;
    }
    let found = match discover::scan(spec.kind, root_fd.as_fd(), &root) {
        Ok(f) => f,
        Err(e) => {
            cp.facts.status = RootStatus::Error;
            cp.facts.reason = Some(format!("cannot list {}: {e}", root.display()));
            return cp;
        }
    };
    if !found.evidence && !found.empty {
        cp.facts.status = RootStatus::Refused;
        cp.facts.reason = Some(format!(
            "{} holds {} entries but none shaped like a {} ({}): wrong variable, or one level too high?",
            root.display(),
            found.entries.len() + found.other,
            spec.kind.title(),
            expected_shape(spec.kind)
        ));
        return cp;
    }
    let mut unattributed = 0;
    let mut chosen = Vec::new();
    for c in found.entries {
        if opts.selection.matches(c.build_id) {
            chosen.push(c);
        } else {
            if spec.kind == CacheKind::Sandbox && c.build_id.is_none() {
                unattributed += 1;
            }
            cp.facts.other_entries += 1;
        }
    }
    if unattributed > 0 && matches!(opts.selection, Selection::Builds(_)) {
        cp.facts.notes.push(format!(
            "{unattributed} sandbox files are not tied to a build (their .link names none): only --all reclaims them, when no process has them open"
        ));
    }
    // What the purge cannot reach: selected builds behind a symlinked legacy folder, and legacy
    // folders that could not be listed (they may hold selected builds).
    let unreached = |path: PathBuf, build_id: Option<BuildId>| Entry {
        build_id,
        path: path.clone(),
        entry_type: EntryType::Other,
        layout: Layout::LegacyTemplateDir,
        allocated_bytes: 0,
        files: 0,
        dirs: 0,
        objects: Vec::new(),
        link_target: None,
        sandbox: None,
        loc: Loc {
            parent: None,
            name: path.file_name().unwrap_or_default().to_os_string(),
            id: sys::FileId { dev: 0, ino: 0 },
        },
    };
    for l in &found.behind_links {
        for id in l.ids.iter().filter(|id| opts.selection.matches(Some(**id))) {
            let detail = format!(
                "{} is a symlink to {}: nothing behind a symlink is purged (give its target as its own root: --template-cache)",
                l.path.display(),
                l.target
            );
            cp.facts.skipped.push(Skipped {
                entry: unreached(l.path.join(id.to_string()), Some(*id)),
                reason: SkipReason::BehindSymlink,
                detail,
            });
        }
    }
    for (path, why) in &found.unlisted {
        let detail = format!("cannot list it ({why}): it may hold entries of the selected builds");
        cp.facts.skipped.push(Skipped { entry: unreached(path.clone(), None), reason: SkipReason::Unreadable, detail });
    }
    let measured: Vec<(discover::Candidate, io::Result<walk::Usage>)> = chosen
        .into_par_iter()
        .map(|c| {
            let u = open_parent(&root_fd, &c.loc).and_then(|parent| {
                check_entry(parent.as_fd(), &c.loc)?;
                walk::measure_at(parent.as_fd(), &c.loc.name)
            });
            (c, u)
        })
        .collect();
    for (c, usage) in measured {
        let u = usage.as_ref().copied().unwrap_or_default();
        let entry = Entry {
            build_id: c.build_id,
            path: c.path.clone(),
            entry_type: c.entry_type,
            layout: c.layout,
            allocated_bytes: u.allocated_bytes,
            files: u.files,
            dirs: u.dirs,
            objects: c.objects.clone(),
            link_target: c.link_target.clone(),
            sandbox: c.group.clone(),
            loc: c.loc.clone(),
        };
        if let Some(why) = c.not_cache {
            cp.facts.skipped.push(Skipped { entry, reason: SkipReason::NotCacheShaped, detail: why });
        } else if let Some(why) = c.unreadable {
            cp.facts.skipped.push(Skipped { entry, reason: SkipReason::Unreadable, detail: why });
        } else if let Err(e) = usage {
            if e.kind() == io::ErrorKind::NotFound {
                continue; // removed meanwhile
            }
            let reason = if is_changed(&e) { SkipReason::Changed } else { SkipReason::Unreadable };
            cp.facts.skipped.push(Skipped { entry, reason, detail: e.to_string() });
        } else if c.loc.id.dev != root_dev {
            let detail = "on another filesystem (a mount point?): it cannot be renamed into the trash".to_string();
            cp.facts.skipped.push(Skipped { entry, reason: SkipReason::OtherFilesystem, detail });
        } else {
            cp.facts.entries.push(entry);
        }
    }
    for t in found.trash {
        let u = walk::measure_at(root_fd.as_fd(), &t.loc.name).unwrap_or_default();
        let entry = Entry {
            build_id: None,
            path: t.path.clone(),
            entry_type: EntryType::Dir,
            layout: Layout::Trash,
            allocated_bytes: u.allocated_bytes,
            files: u.files,
            dirs: u.dirs,
            objects: Vec::new(),
            link_target: None,
            sandbox: None,
            loc: t.loc.clone(),
        };
        if trash_in_use(root_fd.as_fd(), &t.loc.name) {
            let detail = "another purge holds its lock and is deleting it".to_string();
            cp.facts.skipped.push(Skipped { entry, reason: SkipReason::TrashInUse, detail });
        } else {
            cp.facts.notes.push(format!("{} was left by an interrupted purge: removing it", t.path.display()));
            cp.facts.entries.push(entry);
        }
    }
    cp.root_fd = Some(Arc::new(root_fd));
    cp
}

/// The error of an entry (or its parent folder) that is no longer what was listed.
#[derive(Debug)]
struct ChangedError(&'static str);

impl std::fmt::Display for ChangedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ChangedError {}

fn changed(what: &'static str) -> io::Error {
    io::Error::other(ChangedError(what))
}

/// Whether `e` says the entry or its parent changed since listing: our identity check, or a
/// folder that now is a symlink (or not a folder) when opened without following it.
fn is_changed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<ChangedError>())
        || matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::LOOP.raw_os_error()
            || c == rustix::io::Errno::NOTDIR.raw_os_error())
}

/// The folder holding `loc`, reached from the root's handle: the root itself, or the legacy
/// `<templateID>` folder when it is still the very folder that was listed (opened without
/// following a symlink; one swapped for a symlink fails here).
fn open_parent(root: &OwnedFd, loc: &Loc) -> io::Result<OwnedFd> {
    match &loc.parent {
        None => root.try_clone(),
        Some((name, id)) => {
            let fd = walk::open_beneath(root.as_fd(), name).map_err(|e| {
                if is_changed(&e) {
                    changed("its template folder was replaced by a symlink or a file since it was listed")
                } else {
                    e
                }
            })?;
            if walk::file_id(&rustix::fs::fstat(&fd)?) != *id {
                return Err(changed("its template folder was replaced since it was listed"));
            }
            Ok(fd)
        }
    }
}

/// The entry named by `loc` in its parent must still be the one listed (same device and inode,
/// from `lstat`: a symlink put in its place is another inode).
fn check_entry(parent: BorrowedFd<'_>, loc: &Loc) -> io::Result<()> {
    let st = walk::stat_at(parent, &loc.name)?;
    if walk::file_id(&st) != loc.id {
        return Err(changed("it was replaced since it was listed (moved, or swapped for a symlink)"));
    }
    Ok(())
}

fn expected_shape(kind: CacheKind) -> &'static str {
    match kind {
        CacheKind::Template => "<build-id>/cache/ or <template-id>/<build-id>/cache/",
        CacheKind::Build => "files <build-id>-*",
        CacheKind::Chunk => "<build-id>/<object>/ folders",
        CacheKind::Sandbox => "<disk>-<sandbox-id>-<rand>.cow/.link files",
        CacheKind::Snapshot => "files <build-id>-memfile-*",
    }
}

/// Regular files (and symlinks, whose targets a running sandbox may use) of every planned entry
/// outside the chunk cache, as (cache, entry, identity, path), reached through the root's handle.
fn entry_files(caches: &[CachePlan]) -> Vec<(usize, usize, sys::FileId, PathBuf)> {
    let mut out = Vec::new();
    for (ci, c) in caches.iter().enumerate() {
        let Some(root) = c.root_fd.as_deref() else { continue };
        if c.facts.kind.safe_live() {
            continue;
        }
        for (ei, e) in c.facts.entries.iter().enumerate() {
            if e.layout == Layout::Trash {
                continue;
            }
            let Ok(parent) = open_parent(root, &e.loc) else { continue };
            for (id, p) in walk::files_at(parent.as_fd(), &e.loc.name, &e.path) {
                out.push((ci, ei, id, p));
            }
        }
    }
    out
}

/// Whether another process holds the trash folder's lock (probed by taking it and releasing it:
/// the lock is tmpl's own, unlike the orchestrator's).
fn trash_in_use(root: BorrowedFd<'_>, name: &OsStr) -> bool {
    match walk::open_beneath(root, name) {
        Ok(fd) => match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&fd, rustix::fs::FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// What happened to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Dry run: would be deleted.
    Planned,
    /// Deleted.
    Purged,
    /// Vanished before it could be renamed (another node purged the shared cache first).
    Gone,
    /// Could not be (fully) deleted.
    Failed,
}

/// One entry's fate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntryResult {
    #[serde(flatten)]
    pub entry: Entry,
    pub status: EntryStatus,
    /// Allocated bytes actually released.
    pub freed_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts for one cache or for the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Entries planned (dry run) or attempted.
    pub entries: usize,
    pub purged: usize,
    pub planned_bytes: u64,
    pub freed_bytes: u64,
    pub skipped: usize,
    pub skipped_bytes: u64,
    pub failed: usize,
    /// Roots refused by the shape check (node totals only).
    pub refused_roots: usize,
    /// Roots that could not be read (node totals only).
    pub error_roots: usize,
}

/// What happened in one cache root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheOutcome {
    #[serde(flatten)]
    pub facts: RootFacts<EntryResult>,
    pub totals: Totals,
}

/// The overall result class, mapped to exit codes by the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Everything selected was purged (or would be), or there was nothing to do.
    Clean,
    /// Some entries or roots were left alone by a safety rule; the rest was purged.
    SafetySkipped,
    /// Some deletions failed, or a root or an entry could not be read.
    Failed,
}

/// A purge's result (or a dry run's plan, with every entry `planned`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub dry_run: bool,
    pub build_ids: Vec<BuildId>,
    pub all: bool,
    pub force: bool,
    pub orchestrator: Liveness,
    pub caches: Vec<CacheOutcome>,
    pub totals: Totals,
    pub verdict: Verdict,
}

impl Plan {
    /// The plan as an outcome of a dry run: nothing deleted, every entry `planned`.
    pub fn preview(&self) -> Outcome {
        let caches = self
            .caches
            .iter()
            .map(|c| {
                let entries = c
                    .facts
                    .entries
                    .iter()
                    .map(|e| EntryResult {
                        entry: e.clone(),
                        status: EntryStatus::Planned,
                        freed_bytes: 0,
                        error: None,
                    })
                    .collect();
                cache_outcome(c, entries, c.facts.skipped.clone())
            })
            .collect();
        finish(self, true, caches)
    }

    /// Total allocated bytes the plan would free.
    pub fn planned_bytes(&self) -> u64 {
        self.caches.iter().flat_map(|c| &c.facts.entries).map(|e| e.allocated_bytes).sum()
    }
}

fn cache_outcome(c: &CachePlan, entries: Vec<EntryResult>, skipped: Vec<Skipped>) -> CacheOutcome {
    let mut t = Totals { entries: entries.len(), skipped: skipped.len(), ..Default::default() };
    for e in &entries {
        t.planned_bytes += e.entry.allocated_bytes;
        t.freed_bytes += e.freed_bytes;
        match e.status {
            EntryStatus::Purged => t.purged += 1,
            EntryStatus::Failed => t.failed += 1,
            EntryStatus::Planned | EntryStatus::Gone => {}
        }
    }
    t.skipped_bytes = skipped.iter().map(|s| s.entry.allocated_bytes).sum();
    let f = &c.facts;
    CacheOutcome {
        facts: RootFacts {
            kind: f.kind,
            root: f.root.clone(),
            symlink: f.symlink.clone(),
            source: f.source.clone(),
            status: f.status,
            reason: f.reason.clone(),
            entries,
            skipped,
            other_entries: f.other_entries,
            notes: f.notes.clone(),
        },
        totals: t,
    }
}

fn finish(plan: &Plan, dry_run: bool, caches: Vec<CacheOutcome>) -> Outcome {
    let mut totals = Totals::default();
    for c in &caches {
        let t = &c.totals;
        totals.entries += t.entries;
        totals.purged += t.purged;
        totals.planned_bytes += t.planned_bytes;
        totals.freed_bytes += t.freed_bytes;
        totals.skipped += t.skipped;
        totals.skipped_bytes += t.skipped_bytes;
        totals.failed += t.failed;
        match c.facts.status {
            RootStatus::Refused => totals.refused_roots += 1,
            RootStatus::Error => totals.error_roots += 1,
            _ => {}
        }
    }
    // An entry that could not be read is an I/O problem, not a safety rule: it fails the purge.
    let unreadable = caches.iter().flat_map(|c| &c.facts.skipped).any(|s| s.reason == SkipReason::Unreadable);
    let verdict = if totals.failed > 0 || totals.error_roots > 0 || unreadable {
        Verdict::Failed
    } else if totals.skipped > 0 || totals.refused_roots > 0 {
        Verdict::SafetySkipped
    } else {
        Verdict::Clean
    };
    Outcome {
        dry_run,
        build_ids: plan.build_ids.clone(),
        all: plan.all,
        force: plan.force,
        orchestrator: plan.orchestrator.clone(),
        caches,
        totals,
        verdict,
    }
}

/// A trash folder this run created in a root, open and locked until it is gone.
struct TrashDir {
    name: OsString,
    path: PathBuf,
    fd: OwnedFd,
    next: usize,
}

/// Longest entry name kept in a trash name (`NNNNNN-` is prefixed; NAME_MAX is 255).
const TRASH_NAME_KEEP: usize = 200;

impl TrashDir {
    fn create(root: BorrowedFd<'_>, root_path: &Path) -> io::Result<TrashDir> {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let pid = std::process::id();
        for n in 0..100 {
            let name = OsString::from(format!("{TRASH_PREFIX}{ts}-{pid}-{n}"));
            match rustix::fs::mkdirat(root, &name, rustix::fs::Mode::RWXU) {
                Ok(()) => {
                    let path = root_path.join(&name);
                    let fd = walk::open_beneath(root, &name)?;
                    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .map_err(|e| io::Error::other(format!("cannot lock {}: {e}", path.display())))?;
                    return Ok(TrashDir { name, path, fd, next: 0 });
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("could not create a trash folder"))
    }

    /// Move the entry `loc` out of `parent` into the trash (handle to handle, never replacing
    /// anything there), if it is still the entry that was listed; returns its name in the trash.
    fn take(&mut self, parent: BorrowedFd<'_>, loc: &Loc) -> io::Result<OsString> {
        check_entry(parent, loc)?;
        let mut to = format!("{:06}-", self.next).into_bytes();
        to.extend(loc.name.as_bytes().iter().take(TRASH_NAME_KEEP));
        let to = OsString::from_vec(to);
        self.next += 1;
        match rustix::fs::renameat_with(parent, &loc.name, &self.fd, &to, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => Ok(to),
            // Filesystems without RENAME_NOREPLACE (NFS): the name is fresh in our own trash.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                rustix::fs::renameat(parent, &loc.name, &self.fd, &to)?;
                Ok(to)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What the sweep deletes.
enum Staged {
    /// An entry renamed into trash folder `trash` of this run, under `name`.
    InTrash { cache: usize, entry: usize, trash: usize, name: OsString },
    /// A leftover trash folder, open and locked by us: emptied through `fd`, then removed from
    /// the root by name.
    Leftover { cache: usize, entry: usize, fd: OwnedFd },
}

impl Staged {
    fn index(&self) -> (usize, usize) {
        match self {
            Staged::InTrash { cache, entry, .. } | Staged::Leftover { cache, entry, .. } => (*cache, *entry),
        }
    }
}

/// Apply a plan: re-check liveness and open files, rename every entry into a trash folder in its
/// root, then delete the trash in parallel. Never fails as a whole: each entry's fate is in the
/// outcome. Every step goes through the root's handle taken when planning.
pub fn apply(plan: &Plan, progress: &dyn Progress) -> Outcome {
    let plan = recheck(plan);
    let mut results: Vec<Vec<EntryResult>> = plan
        .caches
        .iter()
        .map(|c| {
            c.facts
                .entries
                .iter()
                .map(|e| EntryResult { entry: e.clone(), status: EntryStatus::Planned, freed_bytes: 0, error: None })
                .collect()
        })
        .collect();
    let mut skipped: Vec<Vec<Skipped>> = plan.caches.iter().map(|c| c.facts.skipped.clone()).collect();
    let mut moved: Vec<Vec<bool>> = plan.caches.iter().map(|c| vec![false; c.facts.entries.len()]).collect();

    // 1. Stage: rename into the trash (atomic; an interrupted run leaves whole entries or none).
    let mut staged: Vec<Staged> = Vec::new();
    let mut trash_dirs: Vec<(usize, TrashDir)> = Vec::new();
    for (ci, c) in plan.caches.iter().enumerate() {
        let (Some(root), Some(root_path)) = (c.root_fd.as_deref(), &c.facts.root) else { continue };
        let mut trash: Option<usize> = None;
        for (ei, e) in c.facts.entries.iter().enumerate() {
            let r = &mut results[ci][ei];
            if e.layout == Layout::Trash {
                match take_leftover(root, &e.loc) {
                    Ok(fd) => staged.push(Staged::Leftover { cache: ci, entry: ei, fd }),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => r.status = EntryStatus::Gone,
                    Err(err) => {
                        r.status = EntryStatus::Gone;
                        r.error = Some(if is_changed(&err) {
                            format!("left alone: {err}")
                        } else {
                            format!("another purge took this trash folder ({err})")
                        });
                    }
                }
                continue;
            }
            let t = match trash {
                Some(t) => t,
                None => match TrashDir::create(root.as_fd(), root_path) {
                    Ok(td) => {
                        trash_dirs.push((ci, td));
                        trash = Some(trash_dirs.len() - 1);
                        trash_dirs.len() - 1
                    }
                    Err(err) => {
                        r.status = EntryStatus::Failed;
                        r.error = Some(format!("cannot create a trash folder in {}: {err}", root_path.display()));
                        continue;
                    }
                },
            };
            let taken = open_parent(root, &e.loc).and_then(|parent| trash_dirs[t].1.take(parent.as_fd(), &e.loc));
            match taken {
                Ok(name) => staged.push(Staged::InTrash { cache: ci, entry: ei, trash: t, name }),
                Err(err) if err.kind() == io::ErrorKind::NotFound => r.status = EntryStatus::Gone,
                Err(err) if is_changed(&err) => {
                    moved[ci][ei] = true;
                    let detail = format!("left alone: {err}");
                    skipped[ci].push(Skipped { entry: e.clone(), reason: SkipReason::Changed, detail });
                }
                Err(err) => {
                    r.status = EntryStatus::Failed;
                    r.error = Some(format!("cannot move into the trash: {err}"));
                }
            }
        }
    }

    // 2. Sweep: delete the staged trees in parallel, from the trash handles.
    let items = |s: &Staged| {
        let (c, e) = s.index();
        results[c][e].entry.files + results[c][e].entry.dirs
    };
    let total: u64 = staged.iter().map(items).sum();
    let done: Vec<std::result::Result<(), walk::RemoveErrors>> = if staged.is_empty() {
        Vec::new()
    } else {
        progress.start_items("purging cache entries", total);
        let sink = |n: u64| progress.inc(n);
        let counter = walk::Counter::new(&sink);
        let add = |n: u64| counter.add(n);
        let run = || staged.par_iter().map(|s| sweep(s, &plan, &trash_dirs, &add)).collect();
        let r = match pool(plan.threads) {
            Ok(p) => p.install(run),
            Err(_) => run(),
        };
        counter.flush();
        progress.finish();
        r
    };
    for (s, res) in staged.iter().zip(done) {
        let (ci, ei) = s.index();
        let r = &mut results[ci][ei];
        match res {
            Ok(()) => {
                r.status = EntryStatus::Purged;
                r.freed_bytes = r.entry.allocated_bytes;
            }
            Err(errs) => {
                let (left, place) = match s {
                    Staged::InTrash { trash, name, .. } => {
                        let td = &trash_dirs[*trash].1;
                        (
                            walk::measure_at(td.fd.as_fd(), name).map(|u| u.allocated_bytes).unwrap_or(0),
                            td.path.join(name),
                        )
                    }
                    Staged::Leftover { .. } => (0, r.entry.path.clone()),
                };
                r.status = EntryStatus::Failed;
                r.freed_bytes = r.entry.allocated_bytes.saturating_sub(left);
                r.error =
                    Some(format!("{} items not removed (left in {}): {}", errs.count, place.display(), errs.summary()));
            }
        }
    }
    // Our own trash folders are empty unless something failed (then the next run retries).
    for (ci, td) in &trash_dirs {
        if let Some(root) = plan.caches[*ci].root_fd.as_deref() {
            let _ = rustix::fs::unlinkat(root, &td.name, rustix::fs::AtFlags::REMOVEDIR);
        }
    }
    drop(staged);
    drop(trash_dirs);

    let caches = plan
        .caches
        .iter()
        .zip(results)
        .zip(moved)
        .zip(skipped.drain(..))
        .map(|(((c, entries), moved), sk)| {
            let entries = entries.into_iter().zip(moved).filter(|(_, m)| !m).map(|(e, _)| e).collect();
            cache_outcome(c, entries, sk)
        })
        .collect();
    finish(&plan, false, caches)
}

/// Open and lock a leftover trash folder (it must still be the one listed).
fn take_leftover(root: &OwnedFd, loc: &Loc) -> io::Result<OwnedFd> {
    let fd = walk::open_beneath(root.as_fd(), &loc.name)?;
    if walk::file_id(&rustix::fs::fstat(&fd)?) != loc.id {
        return Err(changed("replaced since it was listed"));
    }
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
}

/// Delete one staged item.
fn sweep(
    s: &Staged,
    plan: &Plan,
    trash_dirs: &[(usize, TrashDir)],
    add: &(dyn Fn(u64) + Sync),
) -> std::result::Result<(), walk::RemoveErrors> {
    match s {
        Staged::InTrash { trash, name, .. } => {
            let td = &trash_dirs[*trash].1;
            walk::remove_tree_at(td.fd.as_fd(), name, &td.path.join(name), add)
        }
        Staged::Leftover { cache, entry, fd } => {
            let c = &plan.caches[*cache];
            let e = &c.facts.entries[*entry];
            walk::remove_contents_of(fd, &e.path, add)?;
            // `rmdir` removes only an empty folder and never follows a symlink: by name is safe.
            match c.root_fd.as_deref().map(|r| rustix::fs::unlinkat(r, &e.loc.name, rustix::fs::AtFlags::REMOVEDIR)) {
                Some(Ok(())) | Some(Err(rustix::io::Errno::NOENT)) => {
                    add(1);
                    Ok(())
                }
                Some(Err(err)) => {
                    Err(walk::RemoveErrors { count: 1, messages: vec![format!("{}: {err}", e.path.display())] })
                }
                None => Ok(()),
            }
        }
    }
}

/// Re-check, just before deleting, what may have changed since planning: the orchestrator lock
/// and processes opening the entries.
fn recheck(plan: &Plan) -> Plan {
    let mut fresh = plan.clone();
    let live = liveness::probe(&plan.orchestrator.lock_path);
    let has_unsafe = plan
        .caches
        .iter()
        .any(|c| !c.facts.kind.safe_live() && c.facts.entries.iter().any(|e| e.layout != Layout::Trash));
    if !has_unsafe {
        return fresh;
    }
    // Open files, again, for the entries still planned outside the chunk cache.
    let files = entry_files(&plan.caches);
    let wanted: Vec<(sys::FileId, &Path)> = files.iter().map(|(_, _, id, p)| (*id, p.as_path())).collect();
    let holders = sys::holders_of(&wanted);
    let mut busy: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut fc = Vec::new();
    match &holders {
        Ok(hs) => {
            for h in hs {
                if let Some((ci, ei, _, _)) = files.iter().find(|(_, _, _, p)| *p == h.path) {
                    busy.insert((*ci, *ei));
                    if h.comm.contains("firecracker") {
                        fc.push(ProcRef { pid: h.pid, comm: h.comm.clone(), path: h.path.clone() });
                    }
                }
            }
        }
        Err(_) => busy.extend(files.iter().map(|(ci, ei, _, _)| (*ci, *ei))),
    }
    let mut live = live;
    live.add_firecracker(fc);
    let stop = live.running && !plan.force && !plan.orchestrator.running;
    for (ci, c) in fresh.caches.iter_mut().enumerate() {
        if c.facts.kind.safe_live() {
            continue;
        }
        let entries = std::mem::take(&mut c.facts.entries);
        for (ei, e) in entries.into_iter().enumerate() {
            if e.layout == Layout::Trash {
                c.facts.entries.push(e);
            } else if busy.contains(&(ci, ei)) {
                let detail = "opened by a process after planning".to_string();
                c.facts.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if stop {
                let detail = format!("{} (the orchestrator started after planning)", live.reason);
                c.facts.skipped.push(Skipped { entry: e, reason: SkipReason::OrchestratorRunning, detail });
            } else {
                c.facts.entries.push(e);
            }
        }
    }
    if stop {
        fresh.orchestrator = live;
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::fs::File;

    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    fn id(s: &str) -> BuildId {
        BuildId::parse(s).unwrap()
    }

    fn chunk_tree(root: &Path, build: &str, chunks: usize) {
        for obj in ["memfile", "rootfs.ext4"] {
            let d = root.join(build).join(obj);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..chunks {
                std::fs::write(d.join(format!("{i:012}-4194304.bin")), vec![1u8; 4096]).unwrap();
            }
            std::fs::write(d.join("size.txt"), b"123").unwrap();
        }
    }

    #[test]
    fn chunk_cache_plan_apply_and_staging_is_atomic() {
        let d = tempfile::tempdir().unwrap();
        let chunks = d.path().join("chunks");
        chunk_tree(&chunks, A, 20);
        chunk_tree(&chunks, B, 5);
        let roots = Roots::explicit(&[(CacheKind::Chunk, chunks.clone())], d.path().join("lock"));
        let p = plan(&roots, &Options::new(Selection::builds([id(A)]))).unwrap();
        let c = &p.caches.iter().find(|c| c.facts.kind == CacheKind::Chunk).unwrap();
        assert_eq!(c.facts.status, RootStatus::Ok);
        assert_eq!(c.facts.entries.len(), 1);
        assert_eq!(c.facts.entries[0].objects, vec!["memfile", "rootfs.ext4"]);
        assert_eq!(c.facts.entries[0].files, 42);
        assert_eq!(c.facts.other_entries, 1);
        let o = apply(&p, &NoProgress);
        assert_eq!(o.verdict, Verdict::Clean, "{o:#?}");
        assert!(!chunks.join(A).exists() && chunks.join(B).join("memfile/size.txt").exists());
        assert_eq!(o.totals.freed_bytes, c.facts.entries[0].allocated_bytes);
        // Nothing left behind: no trash folder.
        let names: Vec<String> = std::fs::read_dir(&chunks)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![B.to_string()]);
    }

    #[test]
    fn leftover_trash_is_reported_and_removed_and_locked_trash_is_not() {
        let d = tempfile::tempdir().unwrap();
        let chunks = d.path().join("chunks");
        chunk_tree(&chunks, B, 1);
        let old = chunks.join(format!("{TRASH_PREFIX}1-2-0"));
        chunk_tree(&old, A, 3);
        let busy = chunks.join(format!("{TRASH_PREFIX}1-3-0"));
        std::fs::create_dir_all(busy.join("x")).unwrap();
        let lock = File::open(&busy).unwrap();
        lock.lock().unwrap();
        let roots = Roots::explicit(&[(CacheKind::Chunk, chunks.clone())], d.path().join("lock"));
        // Held in this process through another open file description: flock conflicts.
        let p = plan(&roots, &Options::new(Selection::builds([id(A)]))).unwrap();
        let c = p.caches.iter().find(|c| c.facts.kind == CacheKind::Chunk).unwrap();
        assert_eq!(c.facts.entries.len(), 1);
        assert_eq!(c.facts.entries[0].layout, Layout::Trash);
        assert_eq!(c.facts.skipped[0].reason, SkipReason::TrashInUse);
        let o = apply(&p, &NoProgress);
        assert!(!old.exists() && busy.exists());
        assert_eq!(o.verdict, Verdict::SafetySkipped);
    }
}
