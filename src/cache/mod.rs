//! Node-local cache invalidation: cache roots (env/flags) → the entries of given builds →
//! a [`Plan`] → [`apply`] (rename into a trash folder, then delete in parallel) → [`Outcome`].
//!
//! Never prints, never imports clap. Callers:
//!
//! ```no_run
//! use tmpl::cache::{self, Options, RootFlags, Roots, Selection};
//! use tmpl::progress::NoProgress;
//! # fn main() -> tmpl::Result<()> {
//! let id = tmpl::storage::BuildId::parse("11111111-2222-4333-8444-555555555555")?;
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
//! 2. a root that is a symlink is resolved once, and the resolution is reported; inside a root
//!    nothing is followed: symlinked entries are removed as links;
//! 3. entries that look like a stored build, or sit on another filesystem, are never deleted;
//! 4. entries that a process holds open or mapped are never deleted (deleting them would free
//!    nothing and could break a running sandbox) — the shared chunk cache excepted, which is
//!    designed for live deletion;
//! 5. while the orchestrator runs (lock held, or Firecracker processes holding these builds'
//!    files), only the shared chunk cache is purged, unless `force`;
//! 6. deletion first renames every entry into `<root>/.tmpl-trash-*` (same filesystem, atomic),
//!    so an interrupted purge leaves whole entries or none; trash left by an earlier run is
//!    reported and removed (unless another purge holds its lock).

pub mod discover;
pub mod liveness;
pub mod roots;
pub mod summary;
pub mod walk;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

pub use discover::{EntryType, Layout, TRASH_PREFIX};
pub use liveness::{Liveness, LockState, ProcRef};
pub use roots::{CacheKind, RootFlags, RootSpec, Roots, Source, SourceKind};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::storage::BuildId;
use crate::sys;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Sandbox cache: the `<sandboxID>-<rand>` the file belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// Why an entry is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
}

/// An entry left alone, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub entry: Entry,
    pub reason: SkipReason,
    pub detail: String,
}

/// The plan for one cache root.
#[derive(Clone, Debug, Serialize)]
pub struct CachePlan {
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
    /// Entries to delete, leftover trash included (`layout: trash`).
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// Entries of other builds, or of no build, left alone.
    pub other_entries: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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
    let mut files: Vec<(usize, usize, PathBuf)> = Vec::new();
    for (ci, c) in caches.iter().enumerate() {
        if c.kind.safe_live() {
            continue;
        }
        for (ei, e) in c.entries.iter().enumerate() {
            if e.layout != Layout::Trash {
                for p in files_of(&e.path) {
                    files.push((ci, ei, p));
                }
            }
        }
    }
    let mut busy: HashMap<(usize, usize), Vec<sys::Holder>> = HashMap::new();
    if !files.is_empty() {
        let paths: Vec<&Path> = files.iter().map(|(_, _, p)| p.as_path()).collect();
        match sys::holders(&paths) {
            Ok(hs) => {
                let mut fc = Vec::new();
                for h in hs {
                    if let Some((ci, ei, _)) = files.iter().find(|(_, _, p)| *p == h.path) {
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
                for (ci, ei, p) in &files {
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
            .entries
            .iter()
            .enumerate()
            .filter(|(ei, _)| busy.contains_key(&(ci, *ei)))
            .filter_map(|(_, e)| e.sandbox.clone())
            .collect();
        let entries = std::mem::take(&mut c.entries);
        for (ei, e) in entries.into_iter().enumerate() {
            if let Some(hs) = busy.get(&(ci, ei)) {
                let who: Vec<String> = hs.iter().take(3).map(|h| format!("pid {} ({})", h.pid, h.comm)).collect();
                let detail =
                    format!("open by {}: deleting it frees nothing and can break a running sandbox", who.join(", "));
                c.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if e.sandbox.as_ref().is_some_and(|g| busy_groups.contains(g)) {
                let detail = "another file of the same sandbox is open".to_string();
                c.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if orchestrator.running && !opts.force && !c.kind.safe_live() && e.layout != Layout::Trash {
                let detail =
                    format!("{}; only the shared chunk cache is purged live (--force overrides)", orchestrator.reason);
                c.skipped.push(Skipped { entry: e, reason: SkipReason::OrchestratorRunning, detail });
            } else {
                c.entries.push(e);
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
        .map_err(|e| Error::Environment(format!("cannot start {threads} worker threads: {e}")))
}

fn empty_plan(spec: &RootSpec, status: RootStatus, reason: Option<String>) -> CachePlan {
    CachePlan {
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
                cp.notes.push(format!(
                    "{} is a symlink to {}: purging inside {}",
                    configured.display(),
                    t.display(),
                    t.display()
                ));
                cp.symlink = Some(configured.clone());
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
    cp.root = Some(root.clone());
    let root_meta = match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            cp.status = RootStatus::Refused;
            cp.reason = Some(format!("{} is not a directory", root.display()));
            return cp;
        }
        Err(e) => {
            cp.status = RootStatus::Error;
            cp.reason = Some(format!("cannot inspect {}: {e}", root.display()));
            return cp;
        }
    };
    let canon = std::fs::canonicalize(&root).unwrap_or(root.clone());
    if canon == Path::new("/") {
        cp.status = RootStatus::Refused;
        cp.reason = Some("the filesystem root is never a cache root".into());
        return cp;
    }
    if let Some(p) = protect.iter().find(|p| p.starts_with(&canon)) {
        cp.status = RootStatus::Refused;
        cp.reason =
            Some(format!("{} is or contains the template storage {}: never purged", root.display(), p.display()));
        return cp;
    }
    let found = match discover::scan(spec.kind, &root) {
        Ok(f) => f,
        Err(e) => {
            cp.status = RootStatus::Error;
            cp.reason = Some(format!("cannot list {}: {e}", root.display()));
            return cp;
        }
    };
    if !found.evidence && !found.empty {
        cp.status = RootStatus::Refused;
        cp.reason = Some(format!(
            "{} holds {} entries but none shaped like a {} ({}): wrong variable, or one level too high?",
            root.display(),
            found.entries.len() + found.other,
            spec.kind.title(),
            expected_shape(spec.kind)
        ));
        return cp;
    }
    let root_dev = root_meta.dev();
    let mut unattributed = 0;
    let mut chosen = Vec::new();
    for c in found.entries {
        if opts.selection.matches(c.build_id) {
            chosen.push(c);
        } else {
            if spec.kind == CacheKind::Sandbox && c.build_id.is_none() {
                unattributed += 1;
            }
            cp.other_entries += 1;
        }
    }
    if unattributed > 0 && matches!(opts.selection, Selection::Builds(_)) {
        cp.notes.push(format!(
            "{unattributed} sandbox files are not tied to a build (their .link names none): only --all reclaims them, when no process has them open"
        ));
    }
    let measured: Vec<(discover::Candidate, io::Result<walk::Usage>, Option<u64>)> = chosen
        .into_par_iter()
        .map(|c| {
            let dev = std::fs::symlink_metadata(&c.path).ok().map(|m| m.dev());
            let u = walk::measure(&c.path);
            (c, u, dev)
        })
        .collect();
    for (c, usage, dev) in measured {
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
        };
        if let Some(why) = c.not_cache {
            cp.skipped.push(Skipped { entry, reason: SkipReason::NotCacheShaped, detail: why });
        } else if let Err(e) = usage {
            if e.kind() == io::ErrorKind::NotFound {
                continue; // removed meanwhile
            }
            cp.skipped.push(Skipped { entry, reason: SkipReason::Unreadable, detail: e.to_string() });
        } else if dev.is_some_and(|d| d != root_dev) {
            let detail = "on another filesystem (a mount point?): it cannot be renamed into the trash".to_string();
            cp.skipped.push(Skipped { entry, reason: SkipReason::OtherFilesystem, detail });
        } else {
            cp.entries.push(entry);
        }
    }
    for t in found.trash {
        let u = walk::measure(&t).unwrap_or_default();
        let entry = Entry {
            build_id: None,
            path: t.clone(),
            entry_type: EntryType::Dir,
            layout: Layout::Trash,
            allocated_bytes: u.allocated_bytes,
            files: u.files,
            dirs: u.dirs,
            objects: Vec::new(),
            link_target: None,
            sandbox: None,
        };
        if trash_in_use(&t) {
            let detail = "another purge holds its lock and is deleting it".to_string();
            cp.skipped.push(Skipped { entry, reason: SkipReason::TrashInUse, detail });
        } else {
            cp.notes.push(format!("{} was left by an interrupted purge: removing it", t.display()));
            cp.entries.push(entry);
        }
    }
    cp
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

/// Regular files (and symlinks, whose targets a running sandbox may use) under `path`, never
/// following symlinks; the path itself when it is not a directory.
fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() || m.file_type().is_symlink() {
            out.push(p);
        }
    }
    out
}

/// Whether another process holds the trash folder's lock (probed by taking it and releasing it:
/// the lock is tmpl's own, unlike the orchestrator's).
fn trash_in_use(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// What happened to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct CacheOutcome {
    pub kind: CacheKind,
    pub root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink: Option<PathBuf>,
    pub source: Source,
    pub status: RootStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub entries: Vec<EntryResult>,
    pub skipped: Vec<Skipped>,
    pub other_entries: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub totals: Totals,
}

/// The overall result class, mapped to exit codes by the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Everything selected was purged (or would be), or there was nothing to do.
    Clean,
    /// Some entries or roots were left alone by a safety rule; the rest was purged.
    SafetySkipped,
    /// Some deletions failed, or a root could not be read.
    Failed,
}

/// A purge's result (or a dry run's plan, with every entry `planned`).
#[derive(Clone, Debug, Serialize)]
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
                    .entries
                    .iter()
                    .map(|e| EntryResult {
                        entry: e.clone(),
                        status: EntryStatus::Planned,
                        freed_bytes: 0,
                        error: None,
                    })
                    .collect();
                cache_outcome(c, entries, c.skipped.clone())
            })
            .collect();
        finish(self, true, caches)
    }

    /// Total allocated bytes the plan would free.
    pub fn planned_bytes(&self) -> u64 {
        self.caches.iter().flat_map(|c| &c.entries).map(|e| e.allocated_bytes).sum()
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
    CacheOutcome {
        kind: c.kind,
        root: c.root.clone(),
        symlink: c.symlink.clone(),
        source: c.source.clone(),
        status: c.status,
        reason: c.reason.clone(),
        entries,
        skipped,
        other_entries: c.other_entries,
        notes: c.notes.clone(),
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
        match c.status {
            RootStatus::Refused => totals.refused_roots += 1,
            RootStatus::Error => totals.error_roots += 1,
            _ => {}
        }
    }
    let verdict = if totals.failed > 0 || totals.error_roots > 0 {
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

/// A trash folder this run created and holds locked until it is gone.
struct TrashDir {
    path: PathBuf,
    _lock: File,
    next: usize,
}

impl TrashDir {
    fn create(root: &Path) -> io::Result<TrashDir> {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let pid = std::process::id();
        for n in 0..100 {
            let path = root.join(format!("{TRASH_PREFIX}{ts}-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let lock = File::open(&path)?;
                    lock.try_lock().map_err(|e| io::Error::other(format!("cannot lock {}: {e}", path.display())))?;
                    return Ok(TrashDir { path, _lock: lock, next: 0 });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not create a trash folder"))
    }

    /// Move `entry` into the trash; returns its new path.
    fn take(&mut self, entry: &Path) -> io::Result<PathBuf> {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let to = self.path.join(format!("{:06}-{name}", self.next));
        self.next += 1;
        std::fs::rename(entry, &to)?;
        Ok(to)
    }
}

/// Apply a plan: re-check liveness and open files, rename every entry into a trash folder in its
/// root, then delete the trash in parallel. Never fails as a whole: each entry's fate is in the
/// outcome.
pub fn apply(plan: &Plan, progress: &dyn Progress) -> Outcome {
    let plan = recheck(plan);
    // 1. Stage: rename into the trash (atomic; an interrupted run leaves whole entries or none).
    struct Staged {
        cache: usize,
        entry: usize,
        path: PathBuf,
        _lock: Option<File>,
    }
    let mut results: Vec<Vec<EntryResult>> = plan
        .caches
        .iter()
        .map(|c| {
            c.entries
                .iter()
                .map(|e| EntryResult { entry: e.clone(), status: EntryStatus::Planned, freed_bytes: 0, error: None })
                .collect()
        })
        .collect();
    let mut skipped: Vec<Vec<Skipped>> = plan.caches.iter().map(|c| c.skipped.clone()).collect();
    let mut staged: Vec<Staged> = Vec::new();
    let mut trash_dirs: Vec<TrashDir> = Vec::new();
    for (ci, c) in plan.caches.iter().enumerate() {
        let Some(root) = &c.root else { continue };
        let mut trash: Option<usize> = None;
        for (ei, e) in c.entries.iter().enumerate() {
            let r = &mut results[ci][ei];
            if e.layout == Layout::Trash {
                let lock = File::open(&e.path).ok().filter(|f| f.try_lock().is_ok());
                if lock.is_some() {
                    staged.push(Staged { cache: ci, entry: ei, path: e.path.clone(), _lock: lock });
                } else if e.path.exists() {
                    r.status = EntryStatus::Gone;
                    r.error = Some("another purge took this trash folder".into());
                } else {
                    r.status = EntryStatus::Gone;
                }
                continue;
            }
            let t = match trash {
                Some(t) => t,
                None => match TrashDir::create(root) {
                    Ok(td) => {
                        trash_dirs.push(td);
                        trash = Some(trash_dirs.len() - 1);
                        trash_dirs.len() - 1
                    }
                    Err(err) => {
                        r.status = EntryStatus::Failed;
                        r.error = Some(format!("cannot create a trash folder in {}: {err}", root.display()));
                        continue;
                    }
                },
            };
            match trash_dirs[t].take(&e.path) {
                Ok(to) => staged.push(Staged { cache: ci, entry: ei, path: to, _lock: None }),
                Err(err) if err.kind() == io::ErrorKind::NotFound => r.status = EntryStatus::Gone,
                Err(err) => {
                    r.status = EntryStatus::Failed;
                    r.error = Some(format!("cannot move into the trash: {err}"));
                }
            }
        }
    }

    // 2. Sweep: delete the staged trees in parallel.
    let total: u64 =
        staged.iter().map(|s| results[s.cache][s.entry].entry.files + results[s.cache][s.entry].entry.dirs).sum();
    let done: Vec<std::result::Result<(), walk::RemoveErrors>> = if staged.is_empty() {
        Vec::new()
    } else {
        progress.start_items("purging cache entries", total);
        let sink = |n: u64| progress.inc(n);
        let counter = walk::Counter::new(&sink);
        let add = |n: u64| counter.add(n);
        let run = || staged.par_iter().map(|s| walk::remove_tree(&s.path, &add)).collect();
        let r = match pool(plan.threads) {
            Ok(p) => p.install(run),
            Err(_) => run(),
        };
        counter.flush();
        progress.finish();
        r
    };
    for (s, res) in staged.iter().zip(done) {
        let r = &mut results[s.cache][s.entry];
        match res {
            Ok(()) => {
                r.status = EntryStatus::Purged;
                r.freed_bytes = r.entry.allocated_bytes;
            }
            Err(errs) => {
                let left = walk::measure(&s.path).map(|u| u.allocated_bytes).unwrap_or(0);
                r.status = EntryStatus::Failed;
                r.freed_bytes = r.entry.allocated_bytes.saturating_sub(left);
                r.error = Some(format!(
                    "{} items not removed (left in {}): {}",
                    errs.count,
                    s.path.display(),
                    errs.summary()
                ));
            }
        }
    }
    // Our own trash folders are empty unless something failed (then the next run retries).
    for td in &trash_dirs {
        let _ = std::fs::remove_dir(&td.path);
    }
    drop(staged);
    drop(trash_dirs);

    let caches = plan
        .caches
        .iter()
        .zip(results)
        .zip(skipped.drain(..))
        .map(|((c, entries), sk)| cache_outcome(c, entries, sk))
        .collect();
    finish(&plan, false, caches)
}

/// Re-check, just before deleting, what may have changed since planning: the orchestrator lock
/// and processes opening the entries.
fn recheck(plan: &Plan) -> Plan {
    let mut fresh = plan.clone();
    let live = liveness::probe(&plan.orchestrator.lock_path);
    let has_unsafe =
        plan.caches.iter().any(|c| !c.kind.safe_live() && c.entries.iter().any(|e| e.layout != Layout::Trash));
    if !has_unsafe {
        return fresh;
    }
    // Open files, again, for the entries still planned outside the chunk cache.
    let mut files: Vec<(usize, usize, PathBuf)> = Vec::new();
    for (ci, c) in plan.caches.iter().enumerate() {
        if c.kind.safe_live() {
            continue;
        }
        for (ei, e) in c.entries.iter().enumerate() {
            if e.layout != Layout::Trash {
                files.extend(files_of(&e.path).into_iter().map(|p| (ci, ei, p)));
            }
        }
    }
    let paths: Vec<&Path> = files.iter().map(|(_, _, p)| p.as_path()).collect();
    let holders = sys::holders(&paths);
    let mut busy: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut fc = Vec::new();
    match &holders {
        Ok(hs) => {
            for h in hs {
                if let Some((ci, ei, _)) = files.iter().find(|(_, _, p)| *p == h.path) {
                    busy.insert((*ci, *ei));
                    if h.comm.contains("firecracker") {
                        fc.push(ProcRef { pid: h.pid, comm: h.comm.clone(), path: h.path.clone() });
                    }
                }
            }
        }
        Err(_) => busy.extend(files.iter().map(|(ci, ei, _)| (*ci, *ei))),
    }
    let mut live = live;
    live.add_firecracker(fc);
    let stop = live.running && !plan.force && !plan.orchestrator.running;
    for (ci, c) in fresh.caches.iter_mut().enumerate() {
        if c.kind.safe_live() {
            continue;
        }
        let entries = std::mem::take(&mut c.entries);
        for (ei, e) in entries.into_iter().enumerate() {
            if e.layout == Layout::Trash {
                c.entries.push(e);
            } else if busy.contains(&(ci, ei)) {
                let detail = "opened by a process after planning".to_string();
                c.skipped.push(Skipped { entry: e, reason: SkipReason::InUse, detail });
            } else if stop {
                let detail = format!("{} (the orchestrator started after planning)", live.reason);
                c.skipped.push(Skipped { entry: e, reason: SkipReason::OrchestratorRunning, detail });
            } else {
                c.entries.push(e);
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
        let c = &p.caches.iter().find(|c| c.kind == CacheKind::Chunk).unwrap();
        assert_eq!(c.status, RootStatus::Ok);
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].objects, vec!["memfile", "rootfs.ext4"]);
        assert_eq!(c.entries[0].files, 42);
        assert_eq!(c.other_entries, 1);
        let o = apply(&p, &NoProgress);
        assert_eq!(o.verdict, Verdict::Clean, "{o:#?}");
        assert!(!chunks.join(A).exists() && chunks.join(B).join("memfile/size.txt").exists());
        assert_eq!(o.totals.freed_bytes, c.entries[0].allocated_bytes);
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
        let c = p.caches.iter().find(|c| c.kind == CacheKind::Chunk).unwrap();
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].layout, Layout::Trash);
        assert_eq!(c.skipped[0].reason, SkipReason::TrashInUse);
        let o = apply(&p, &NoProgress);
        assert!(!old.exists() && busy.exists());
        assert_eq!(o.verdict, Verdict::SafetySkipped);
    }
}
