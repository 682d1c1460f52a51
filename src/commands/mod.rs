//! One file per subcommand: resolve inputs, call the domain, return a report. No byte parsing
//! and no format decisions here.

pub mod backups;
mod backups_render;
pub mod boot_test;
pub mod check_kernel;
pub mod completions;
pub mod copy;
mod copy_render;
pub mod demo;
pub mod edit_report;
mod edit_report_render;
pub mod explain;
pub mod inject_envd;
pub mod inspect;
mod inspect_render;
pub mod man;
pub mod purge_cache;
mod purge_cache_render;
pub mod rewrite_wrapper;
pub mod verify;
mod verify_render;

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::output::Output;
use crate::progress::Progress;
use crate::report::Style;
use crate::storage::{Storage, StorageUrlError};

/// Why the storage of a run could not be resolved (kept until a command needs the storage).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageSetupError {
    #[error(transparent)]
    Url(#[from] StorageUrlError),
    /// A remote storage URL or its client could not be set up (`kind` gives the exit code).
    #[error("{message}")]
    Remote { message: String, kind: crate::remote::ErrorKind, from_flag: bool },
}

/// What a run resolved once, for every command: the storage root (or why it could not be
/// resolved, reported only by commands that need it), styling, the progress sink and where
/// notes go. A remote storage (`--storage s3://...`, `TEMPLATE_STORAGE_URL=gs://...`) is
/// mounted here ([`crate::remote::mount`]); its root path is spelled like its URL.
pub struct Ctx<'a> {
    storage: std::result::Result<Storage, StorageSetupError>,
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
        let storage = resolve_storage(storage_flag.as_deref(), env);
        Ctx { storage, storage_flag, style: out.style(), json: out.mode.json, progress: out.progress(), out }
    }

    /// The storage root of this run.
    pub fn storage(&self) -> Result<Storage> {
        self.storage.clone().map_err(setup_error)
    }

    /// The storage root of a command that works on a build's local folder (`backups`): a remote
    /// storage is refused (exit 5). Backups, journals and work folders exist only where builds
    /// are edited in place, and tmpl never edits a build in a bucket in place (`--fork` writes a
    /// new build there), so a bucket has none of tmpl's.
    pub fn local_storage(&self, command: &str, build: &str) -> Result<Storage> {
        let s = self.storage()?;
        if let Some(store) = crate::remote::mount::store_of(&s.root) {
            let url = store.location().to_string();
            return Err(Error::refused(
                format!("{command} works on local build folders; {url} is a remote storage"),
                vec![
                    "tmpl keeps backups and commit journals only beside builds it edits in place, and it never edits a build in remote storage in place".into(),
                    format!(
                        "to repair {build} there, write a new build beside it: tmpl --storage '{url}' inject-envd {build} --envd PATH --fork (or rewrite-wrapper {build} --fork)"
                    ),
                ],
            ));
        }
        Ok(s)
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

    /// Whether the run's input is a terminal (a person typing, not a pipe).
    pub fn input_is_terminal(&self) -> bool {
        self.out.mode.stdin_terminal
    }

    /// The run's input (stdin), at most `cap` bytes.
    pub fn read_input(&self, cap: u64) -> std::io::Result<Vec<u8>> {
        self.out.read_input(cap)
    }
}

/// The variables that choose the storage (credentials are read only when a store is opened).
const STORAGE_VARS: [&str; 6] = [
    "TMPL_STORAGE",
    "TEMPLATE_STORAGE_URL",
    "STORAGE_PROVIDER",
    "TEMPLATE_BUCKET_NAME",
    "LOCAL_TEMPLATE_STORAGE_BASE_PATH",
    "S3_USE_PATH_STYLE",
];

/// Resolve the storage like the orchestrator: a remote one is opened (nothing is sent yet) and
/// mounted; a local one keeps tmpl's local resolution.
fn resolve_storage(
    flag: Option<&std::path::Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Storage, StorageSetupError> {
    use crate::remote;
    let flag_text = flag.map(|p| p.to_string_lossy().into_owned());
    let vars = remote::Env::from_pairs(STORAGE_VARS.iter().filter_map(|n| env(n).map(|v| (n.to_string(), v))));
    let remote_err = |e: remote::Error| StorageSetupError::Remote {
        message: e.to_string(),
        kind: e.kind(),
        from_flag: flag_text.as_deref().is_some_and(|f| !f.trim().is_empty()),
    };
    let resolved = remote::resolve(flag_text.as_deref(), &vars).map_err(remote_err)?;
    let source = match resolved.source {
        remote::Source::Flag => crate::storage::StorageSource::Flag,
        remote::Source::TmplStorage => crate::storage::StorageSource::TmplStorage,
        remote::Source::TemplateStorageUrl => crate::storage::StorageSource::TemplateStorageUrl,
        remote::Source::StorageProvider => crate::storage::StorageSource::StorageProvider,
        remote::Source::LocalTemplateStorageBasePath => crate::storage::StorageSource::LocalTemplateStorageBasePath,
        remote::Source::Default => crate::storage::StorageSource::Default,
    };
    // A local directory (`--storage DIR`, `file:///DIR`, `file:rel`, the Local provider's path).
    if let remote::Location::Local { path } = &resolved.location {
        return Ok(Storage { root: path.clone(), source });
    }
    let process = remote::Env::from_process();
    let store =
        remote::Store::open(&resolved.location, &process, &remote::Config::from_env(&process)).map_err(remote_err)?;
    let m = remote::mount::mount(store);
    Ok(Storage { root: m.root().to_path_buf(), source })
}

/// The crate error for a storage that could not be set up: a bad `--storage` URL is a usage
/// error (2); the environment's settings, credentials and the store itself are the
/// environment's (4).
fn setup_error(e: StorageSetupError) -> Error {
    match e {
        StorageSetupError::Url(u) => Error::environment(u),
        StorageSetupError::Remote { message, kind: crate::remote::ErrorKind::Config, from_flag: true } => {
            Error::Usage(crate::error::UsageError::StorageUrl(message))
        }
        e @ StorageSetupError::Remote { .. } => Error::environment(e),
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
    Completions(completions::CompletionsReport),
    Man(man::ManReport),
    Copy(Box<copy::CopyReport>),
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
            Outcome::Completions(r) => out.emit(&r),
            Outcome::Man(r) => out.emit(&r),
            Outcome::Copy(r) => out.emit(&*r),
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
            Outcome::Completions(r) => code(r),
            Outcome::Man(r) => code(r),
            Outcome::Copy(r) => code(&**r),
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
                    "{} purged, {} left alone because the orchestrator is running ({}): THIS NODE KEEPS SERVING \
                     THE OLD BUILD until the orchestrator restarts with these caches purged",
                    crate::report::count(t.purged, "entry", "entries"),
                    t.skipped,
                    o.orchestrator.reason
                )
            } else if stale {
                format!(
                    "{} purged, {} left alone by a safety rule (files in use; see purge-cache): this node can \
                     still serve the old bytes from them",
                    crate::report::count(t.purged, "entry", "entries"),
                    t.skipped
                )
            } else {
                format!(
                    "{}, {} freed on this node{}",
                    crate::report::count(t.purged, "entry", "entries"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn storage_is_resolved_once_local_or_mounted() {
        let s = resolve_storage(Some(std::path::Path::new("file:///srv/t")), &env_of(&[])).unwrap();
        assert_eq!(s.root, PathBuf::from("/srv/t"));
        let s = resolve_storage(None, &env_of(&[("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "/l")])).unwrap();
        assert_eq!(
            (s.root, s.source),
            (PathBuf::from("/l"), crate::storage::StorageSource::LocalTemplateStorageBasePath)
        );
        // A bucket is mounted under a root spelled like its URL (nothing is sent yet).
        let s = resolve_storage(
            None,
            &env_of(&[("TEMPLATE_STORAGE_URL", "s3://tmpl-unit-bucket?endpoint=http://127.0.0.1:9&region=x")]),
        )
        .unwrap();
        assert_eq!(s.root, PathBuf::from("s3://tmpl-unit-bucket"));
        assert!(crate::remote::mount::is_mounted(&s.root.join("some-build")));
        assert_eq!(s.source, crate::storage::StorageSource::TemplateStorageUrl);
    }

    #[test]
    fn a_bad_url_is_usage_from_the_flag_and_environment_from_the_environment() {
        let e = resolve_storage(Some(std::path::Path::new("s3://b?endpint=x")), &env_of(&[])).unwrap_err();
        assert_eq!(setup_error(e).exit_code(), crate::exit_code::USAGE);
        let e = resolve_storage(None, &env_of(&[("TEMPLATE_STORAGE_URL", "gs://b?x=1")])).unwrap_err();
        assert_eq!(setup_error(e).exit_code(), crate::exit_code::ENVIRONMENT);
        let e = resolve_storage(None, &env_of(&[("STORAGE_PROVIDER", "AWSBucket")])).unwrap_err();
        assert!(setup_error(e).to_string().contains("TEMPLATE_BUCKET_NAME"));
    }
}
