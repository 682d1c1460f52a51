//! One file per subcommand: resolve inputs, call the domain, return a report. No byte parsing
//! and no format decisions here.

pub mod backups;
pub mod boot_test;
pub mod check_kernel;
pub mod demo;
pub mod edit_report;
pub mod explain;
pub mod inject_envd;
pub mod inspect;
pub mod purge_cache;
pub mod rewrite_wrapper;
pub mod verify;

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::output::Output;
use crate::progress::Progress;
use crate::report::Style;
use crate::storage::{Storage, StorageUrlError};

/// What a run resolved once, for every command: the storage root (or why it could not be
/// resolved, reported only by commands that need it), styling, the progress sink and where
/// notes go.
pub struct Ctx<'a> {
    storage: std::result::Result<Storage, StorageUrlError>,
    /// `--storage` as given (the demo writes there, and never where the environment points).
    pub storage_flag: Option<PathBuf>,
    pub style: Style,
    /// JSON output was asked for (`inspect --cat` then puts the content in the report).
    pub json: bool,
    progress: Box<dyn Progress>,
    out: &'a Output,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("storage", &self.storage).field("json", &self.json).finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// Resolve the storage root from `--storage` and the environment (`env`), once.
    pub fn new(storage_flag: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>, out: &'a Output) -> Self {
        let storage = Storage::resolve(storage_flag.as_deref(), env).map_err(|e| match e {
            crate::storage::StorageError::Url(u) => u,
            // Resolving reads nothing: only a storage URL can be wrong.
            other => StorageUrlError::NotAUrl(other.to_string()),
        });
        Ctx { storage, storage_flag, style: out.style(), json: out.mode.json, progress: out.progress(), out }
    }

    /// The storage root of this run.
    pub fn storage(&self) -> Result<Storage> {
        self.storage.clone().map_err(Error::environment)
    }

    /// Resolve a BUILD argument (a UUID, checked before any file is touched, or a path) and open
    /// it.
    pub fn open_build(&self, arg: &str) -> Result<crate::build::Build> {
        let loc = self.storage()?.locate(arg)?;
        Ok(crate::build::Build::open(&loc)?)
    }

    /// The progress sink (a bar on a terminal, nothing otherwise).
    pub fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// A note for the operator on stderr (not in JSON or quiet mode unless `-v`).
    pub fn note(&self, msg: &str) {
        self.out.note(msg);
    }

    /// Debug detail on stderr with `-v`.
    pub fn debug(&self, msg: &str) {
        self.out.debug(msg);
    }

    /// The run's input (stdin), at most `cap` bytes.
    pub fn read_input(&self, cap: u64) -> std::io::Result<Vec<u8>> {
        self.out.read_input(cap)
    }
}

/// What a command returns: a report (serialisable and renderable) or raw bytes.
#[derive(Debug)]
pub enum Outcome {
    Verify(verify::VerifyReport),
    Inspect(Box<inspect::InspectReport>),
    InspectPath(Box<inspect::PathReport>),
    /// `inspect --path P --cat` (text mode): the file's bytes, streamed when written.
    Cat(inspect::Cat),
    Demo(Box<demo::DemoReport>),
    Explain(explain::ExplainReport),
    BootTest(Box<boot_test::BootTestReport>),
    CheckKernel(Box<check_kernel::CheckKernelReport>),
    Edit(Box<edit_report::EditReport>),
    Purge(Box<purge_cache::PurgeReport>),
    CacheRoots(purge_cache::RootsReport),
    ClusterSummary(Box<purge_cache::SummaryReport>),
    Backups(Box<backups::BackupsReport>),
}

impl Outcome {
    /// Write the outcome to `out` (text, JSON or bytes) and return the exit code.
    pub fn emit(self, out: &Output) -> Result<u8> {
        Ok(match self {
            Outcome::Verify(r) => out.emit(&r),
            Outcome::Inspect(r) => out.emit(&*r),
            Outcome::InspectPath(r) => out.emit(&*r),
            Outcome::Cat(c) => return out.emit_bytes(|w: &mut dyn Write| c.write_to(w)),
            Outcome::Demo(r) => out.emit(&*r),
            Outcome::Explain(r) => out.emit(&r),
            Outcome::BootTest(r) => out.emit(&*r),
            Outcome::CheckKernel(r) => out.emit(&*r),
            Outcome::Edit(r) => out.emit(&*r),
            Outcome::Purge(r) => out.emit(&*r),
            Outcome::CacheRoots(r) => out.emit(&r),
            Outcome::ClusterSummary(r) => out.emit(&*r),
            Outcome::Backups(r) => out.emit(&*r),
        })
    }

    /// The exit code the outcome implies (what [`Outcome::emit`] returns when writing works).
    pub fn exit_code(&self) -> u8 {
        fn code<R: crate::report::Report>(r: &R) -> u8 {
            if r.ok() { crate::exit_code::OK } else { r.failure_code() }
        }
        match self {
            Outcome::Verify(r) => code(r),
            Outcome::Inspect(r) => code(&**r),
            Outcome::InspectPath(r) => code(&**r),
            Outcome::Cat(_) => crate::exit_code::OK,
            Outcome::Demo(r) => code(&**r),
            Outcome::Explain(r) => code(r),
            Outcome::BootTest(r) => code(&**r),
            Outcome::CheckKernel(r) => code(&**r),
            Outcome::Edit(r) => code(&**r),
            Outcome::Purge(r) => code(&**r),
            Outcome::CacheRoots(r) => code(r),
            Outcome::ClusterSummary(r) => code(&**r),
            Outcome::Backups(r) => code(&**r),
        }
    }
}

/// After an in-place edit (or a restore): purge this node's caches of the build (the
/// purge-cache code, the storage root protected). Entries a safety rule keeps are reported; when
/// the rule was the running orchestrator, the change is not in effect on this node.
pub fn purge_after_edit(
    id: crate::vocab::BuildId,
    storage: &std::path::Path,
    progress: &dyn Progress,
) -> edit_report::CacheStep {
    use edit_report::CacheStatus;
    match crate::cache::purge_builds(&[id], Some(storage), false, false, progress) {
        Ok(o) => {
            let t = &o.totals;
            let status = match o.verdict {
                crate::cache::Verdict::Clean => CacheStatus::Purged,
                crate::cache::Verdict::SafetySkipped => CacheStatus::PartlySkipped,
                crate::cache::Verdict::Failed => CacheStatus::Failed,
            };
            // Entries of the build left in a cache: this node can still serve the old bytes.
            let stale = t.skipped > 0;
            let detail = if stale && o.orchestrator.running {
                format!(
                    "{} entries purged, {} left alone because the orchestrator is running ({}): THIS NODE KEEPS SERVING \
                     THE OLD BUILD until the orchestrator restarts with these caches purged",
                    t.purged, t.skipped, o.orchestrator.reason
                )
            } else if stale {
                format!(
                    "{} entries purged, {} left alone by a safety rule (files in use; see purge-cache): this node can \
                     still serve the old bytes from them",
                    t.purged, t.skipped
                )
            } else {
                format!(
                    "{} entries, {} freed on this node{}",
                    t.purged,
                    crate::report::human_bytes(t.freed_bytes),
                    if t.skipped > 0 {
                        format!("; {} left alone by a safety rule (see purge-cache)", t.skipped)
                    } else {
                        String::new()
                    }
                )
            };
            edit_report::CacheStep { status, detail, in_effect: !stale, report: Some(Box::new(o)) }
        }
        Err(e) => {
            edit_report::CacheStep { status: CacheStatus::Failed, detail: e.to_string(), in_effect: true, report: None }
        }
    }
}

/// What to do when a change is not in effect on this node (exit 6): the caches must be purged
/// while the orchestrator is stopped, with the Nomad and systemd commands; or use `--fork`.
pub fn not_in_effect_steps(id: crate::vocab::BuildId) -> Vec<String> {
    vec![
        format!(
            "this node serves the OLD build {id} until its orchestrator restarts with the build's caches purged \
             (stopping it ends the sandboxes running on this node): under Nomad, `nomad node drain -enable -self -yes` \
             (stops the orchestrator's system job here), `tmpl purge-cache --build-id {id}`, then \
             `nomad node drain -disable -self -yes`; under systemd, `systemctl stop orchestrator && tmpl purge-cache \
             --build-id {id} && systemctl start orchestrator`"
        ),
        "to change a template on a live node without a restart, use --fork: a new build ID is not cached anywhere, \
         point the template at it"
            .to_string(),
    ]
}
