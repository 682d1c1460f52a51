//! The report shared by the editing commands (`inject-envd`, `rewrite-wrapper`): the plan, and
//! after applying it what was written, verified, backed up and purged, and what to do next.

use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome};

use std::path::PathBuf;

use crate::edit::publish::{self, Publish};
use crate::edit::{self, Applied, Backend, EditOptions, Plan, Target};
use crate::error::Result;
use crate::remote::{self, Store};
use crate::vocab::BuildId;

/// `--backend` (the command line's view of `edit::Backend`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    Debugfs,
    Mount,
}

/// Options of both editing commands.
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// How bytes get into the image: debugfs (no root) or a kernel loop mount (root)
    #[arg(long, value_enum, default_value_t = BackendArg::Debugfs)]
    pub backend: BackendArg,
    /// Write the result as a new build (a fresh UUID; --fork-id names it); the old build is
    /// untouched. The way to change a template that a running orchestrator serves
    #[arg(long)]
    pub fork: bool,
    /// The new build's ID for --fork (implies --fork)
    #[arg(long, value_name = "NEW_ID")]
    pub fork_id: Option<String>,
    /// Where --fork writes the new build: a storage directory or a storage URL (s3://...,
    /// gs://..., azblob://..., as for --storage). Default: the base build's own storage (a
    /// bucket too: the fork is assembled in $TMPDIR and copied there, verified)
    #[arg(long, value_name = "DST")]
    pub to: Option<String>,
    /// Edit a build that has a memory snapshot: move snapfile/memfile into the backup and mark
    /// the build filesystem_only (resume becomes a cold boot)
    #[arg(long)]
    pub drop_snapshot: bool,
    /// With debugfs, replay a dirty ext4 journal on the work copy first (debugfs ignores it)
    #[arg(long)]
    pub replay_journal: bool,
    /// Do not keep the original rootfs in .tmpl-backup-<time>/ after a successful edit
    #[arg(long)]
    pub no_backup: bool,
    /// Do not purge this build's node caches after an in-place edit
    #[arg(long)]
    pub no_purge: bool,
    /// Print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Kernel version for the metadata.json tmpl writes (--fork, --drop-snapshot) when the build's
    /// own metadata has none (legacy builds), e.g. vmlinux-6.1.158
    #[arg(long, value_name = "VERSION")]
    pub kernel_version: Option<String>,
    /// Firecracker version for that metadata.json, e.g. v1.14.1_431f1fc
    #[arg(long, value_name = "VERSION")]
    pub firecracker_version: Option<String>,
}

impl EditArgs {
    pub fn options(&self) -> Result<EditOptions> {
        let fork = match (&self.fork_id, self.fork) {
            (Some(id), _) => Some(Some(BuildId::parse(id)?)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        Ok(EditOptions {
            backend: match self.backend {
                BackendArg::Debugfs => Backend::Debugfs,
                BackendArg::Mount => Backend::Mount,
            },
            fork,
            drop_snapshot: self.drop_snapshot,
            replay_journal: self.replay_journal,
            backup: !self.no_backup,
            purge: !self.no_purge,
            kernel_version: self.kernel_version.clone(),
            firecracker_version: self.firecracker_version.clone(),
            dry_run: self.dry_run,
        })
    }

    /// Is this run a fork (`--fork` or `--fork-id`)?
    pub fn is_fork(&self) -> bool {
        self.fork || self.fork_id.is_some()
    }

    /// The flags of this run that a `--fork` run of it repeats (backend, journal, versions).
    fn fork_flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        if matches!(self.backend, BackendArg::Mount) {
            v.extend(["--backend".into(), "mount".into()]);
        }
        if self.replay_journal {
            v.push("--replay-journal".into());
        }
        for (flag, value) in
            [("--kernel-version", &self.kernel_version), ("--firecracker-version", &self.firecracker_version)]
        {
            if let Some(x) = value {
                v.extend([flag.to_string(), x.clone()]);
            }
        }
        v
    }
}

/// The command line that edits `build` as a fork instead: the run's storage flag, the command,
/// its own arguments (`own`), the edit flags a fork keeps, and `--fork`. Shell-quoted.
pub fn fork_command(ctx: &Ctx, command: EditCommand, build: &str, own: &[String], args: &EditArgs) -> String {
    let mut words = vec!["tmpl".to_string()];
    if let Some(s) = &ctx.storage_flag {
        words.extend(["--storage".into(), s.to_string_lossy().into_owned()]);
    }
    words.extend([command.name().to_string(), build.to_string()]);
    words.extend(own.iter().cloned());
    words.extend(args.fork_flags());
    words.push("--fork".into());
    let quoted: Vec<String> = words.iter().map(|w| crate::rootfs::script::quote(w)).collect();
    quoted.join(" ")
}

/// Which editing command ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditCommand {
    #[default]
    InjectEnvd,
    RewriteWrapper,
}

impl EditCommand {
    pub fn name(self) -> &'static str {
        match self {
            EditCommand::InjectEnvd => "inject-envd",
            EditCommand::RewriteWrapper => "rewrite-wrapper",
        }
    }
}

/// What the cache step after a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// `--no-purge`.
    Skipped,
    Purged,
    /// A safety rule kept entries.
    PartlySkipped,
    Failed,
}

impl CacheStatus {
    pub fn name(self) -> &'static str {
        match self {
            CacheStatus::Skipped => "skipped",
            CacheStatus::Purged => "purged",
            CacheStatus::PartlySkipped => "partly-skipped",
            CacheStatus::Failed => "failed",
        }
    }
}

/// What happened to the node caches of the edited build.
#[derive(Debug, Serialize, Deserialize)]
pub struct CacheStep {
    pub status: CacheStatus,
    pub detail: String,
    /// With `partly-skipped` while the orchestrator runs: this node keeps serving the old build.
    pub in_effect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<crate::cache::Outcome>>,
}

impl CacheStep {
    /// The step of a run with `--no-purge`.
    pub fn skipped() -> Self {
        CacheStep { status: CacheStatus::Skipped, detail: "--no-purge".into(), in_effect: true, report: None }
    }

    /// The exit code this cache step implies for a change that itself succeeded.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            CacheStatus::Failed => crate::exit_code::ENVIRONMENT,
            _ if !self.in_effect => crate::exit_code::NOT_IN_EFFECT,
            _ => crate::exit_code::OK,
        }
    }
}

/// Where a fork goes.
#[derive(Debug)]
pub enum Destination {
    /// The base's own local storage (an in-place edit, or a fork beside the base).
    Base,
    /// Another local storage directory (`--to DIR`): the fork is written there directly.
    Local(PathBuf),
    /// A remote storage (`--to URL`, or the base's bucket): staged locally, then copied.
    Remote(Store),
}

impl Destination {
    /// How a report names it.
    pub fn label(&self, base: &crate::build::Build) -> String {
        match self {
            Destination::Base => base.storage_root.display().to_string(),
            Destination::Local(p) => p.display().to_string(),
            Destination::Remote(s) => s.location().to_string(),
        }
    }
}

/// A build opened for an edit: locked (a local build; a remote one cannot be), an interrupted
/// commit settled first, and where a fork of it goes.
pub struct Prepared {
    pub build: crate::build::Build,
    /// `None` for a build in a remote storage: object stores have no locks, and tmpl only reads
    /// such a build (it is never edited in place).
    pub lock: Option<edit::BuildLock>,
    /// What settling an interrupted commit did (for the report's notes).
    pub notes: Vec<String>,
    pub destination: Destination,
}

/// `--to`: a directory (`Local`, created when the fork is written) or a remote storage.
fn open_destination(arg: &str) -> Result<Either> {
    use crate::error::UsageError;
    // An empty value would resolve to the default storage: never a silent destination.
    if arg.trim().is_empty() {
        return Err(UsageError::DestinationUrl("empty; give a directory or a storage URL".into()).into());
    }
    let r = remote::resolve(Some(arg), &remote::Env::empty()).map_err(|e| {
        if e.kind() == remote::ErrorKind::Config {
            crate::error::Error::Usage(UsageError::DestinationUrl(e.to_string()))
        } else {
            crate::error::Error::from(e)
        }
    })?;
    match r.location {
        remote::Location::Local { path } => Ok(Either::Dir(path)),
        loc => {
            let env = remote::Env::from_process();
            let store = Store::open(&loc, &env, &remote::Config::from_env(&env))
                .map_err(|e| crate::error::Error::environment_msg(format!("--to {loc}: {e}")))?;
            Ok(Either::Store(store))
        }
    }
}

enum Either {
    Dir(PathBuf),
    Store(Store),
}

/// Do two local paths name the same directory (as far as can be told)?
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Locate BUILD, lock it (exclusive for an in-place edit, shared for a dry run or a fork's
/// source) before anything of it is read, settle an interrupted commit (completing it, and
/// purging this node's caches of the build as an edit does), then open it; and decide where a
/// fork goes. A build in a remote storage is only ever the base of a fork: an in-place edit of
/// it is refused (exit 5) naming the `--fork` command line that does the job (`own`: the
/// command's own arguments, for that line).
pub fn prepare(ctx: &Ctx, command: EditCommand, arg: &str, args: &EditArgs, own: &[String]) -> Result<Prepared> {
    if args.to.is_some() && !args.is_fork() {
        return Err(crate::error::UsageError::ToWithoutFork.into());
    }
    let storage = ctx.storage()?;
    let loc = storage.locate(arg)?;
    let base_store = remote::mount::store_of(&loc.dir);
    if let Some(store) = &base_store
        && !args.is_fork()
    {
        let url = store.location().to_string();
        let fork_command = fork_command(ctx, command, arg, own, args);
        return Err(crate::error::Error::refused(
            format!("{} does not edit builds in remote storage ({url}) in place", command.name()),
            vec![
                format!(
                    "write the repaired build as a new build beside it (assembled in $TMPDIR, copied up, verified): {fork_command}"
                ),
                "or to another storage with --to DST (a directory or a storage URL); then point the template at the new build ID"
                    .into(),
            ],
        ));
    }
    let destination = match (&args.to, &base_store) {
        (None, None) => Destination::Base,
        (None, Some(store)) => Destination::Remote(store.clone()),
        (Some(to), _) => match open_destination(to)? {
            Either::Dir(p) if base_store.is_none() && same_dir(&p, &loc.storage_root) => Destination::Base,
            Either::Dir(p) => Destination::Local(p),
            Either::Store(s) => Destination::Remote(s),
        },
    };
    if base_store.is_some() {
        let build = crate::build::Build::open(&loc)?;
        return Ok(Prepared { build, lock: None, notes: Vec::new(), destination });
    }
    let mut notes = Vec::new();
    let interrupted = !matches!(edit::commit::read(&loc.dir), Ok(None));
    if interrupted {
        if args.dry_run {
            let id = loc.folder_id.map(|i| i.to_string()).unwrap_or_else(|| arg.to_string());
            return Err(crate::error::Error::refused(
                format!("build {id} has an interrupted commit: its files are between two states"),
                vec![format!(
                    "tmpl backups {id} --recover completes it (or run this command without --dry-run, which does that first)"
                )],
            ));
        }
        let lock = edit::lock_build(&loc.dir, true)?;
        if let Some(r) = edit::commit::recover(&loc.dir)? {
            let line = r.describe();
            ctx.note(&format!("tmpl: {line}"));
            notes.push(line);
            if let Some(id) = loc.folder_id {
                let c = super::purge_after_edit(id, &loc.storage_root, ctx.progress());
                notes.push(format!("caches after that: {}: {}", c.status.name(), c.detail));
            }
        }
        drop(lock);
    }
    let exclusive = !args.dry_run && !args.is_fork();
    let lock = edit::lock_build(&loc.dir, exclusive)?;
    let build = crate::build::Build::open(&loc)?;
    Ok(Prepared { build, lock: Some(lock), notes, destination })
}

#[derive(Debug, Serialize)]
pub struct EditReport {
    #[serde(skip)]
    pub command: EditCommand,
    pub dry_run: bool,
    pub plan: Plan,
    /// Where a fork went when that is not beside its base in a local storage: another
    /// directory (`direct`), or a remote storage (`staged`, then copied and verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caches: Option<CacheStep>,
    pub notes: Vec<String>,
    pub next_steps: Vec<String>,
}

/// Before anything is assembled: the fork's ID must be free where it goes, and a remote
/// destination must answer and the staging folder have room. Returns the publish step as
/// planned (none for a fork beside its base) and notes.
fn check_destination(
    destination: &Destination,
    build: &crate::build::Build,
    id: BuildId,
) -> Result<(Option<Publish>, Vec<String>)> {
    match destination {
        Destination::Base => Ok((None, Vec::new())),
        Destination::Local(dir) => {
            let there = dir.join(id.to_string());
            if there.exists() {
                return Err(crate::error::Error::refused(
                    format!("build {id} already exists in {}", dir.display()),
                    vec![there.display().to_string(), "choose another --fork-id (or none: a fresh ID)".into()],
                ));
            }
            Ok((Some(Publish::planned(dir.display().to_string(), publish::Method::Direct)), Vec::new()))
        }
        Destination::Remote(store) => {
            let notes = publish::preflight(store, &id)?;
            let size = build.rootfs.effective_header(build.id).map_or(0, |h| h.size);
            publish::check_room(&std::env::temp_dir(), size)?;
            Ok((Some(Publish::planned(store.location().to_string(), publish::Method::Staged)), notes))
        }
    }
}

/// `tmpl --storage DST verify ID`, for a fork that went to DST.
fn verify_line(destination: &Destination, label: &str, id: BuildId) -> String {
    match destination {
        Destination::Base => format!("tmpl verify {id}"),
        _ => format!("tmpl --storage {} verify {id}", crate::rootfs::script::quote(label)),
    }
}

/// A fork bound for a remote storage: assembled and verified in a staging storage in the
/// system's temporary directory, published to `store` with the copy code, the staging storage
/// removed whatever happened. The applied fork (its folder and manifest named at `store`) only
/// when it was published.
fn fork_to_remote(
    build: &crate::build::Build,
    plan: &Plan,
    boot_ctx: &crate::rootfs::boot::Context,
    lock: Option<&edit::BuildLock>,
    store: &Store,
    id: BuildId,
    progress: &dyn crate::progress::Progress,
) -> Result<(Option<Applied>, Vec<String>, Publish)> {
    let size = build.rootfs.effective_header(build.id).map_or(0, |h| h.size);
    publish::check_room(&std::env::temp_dir(), size)?;
    let (stage, cleaned) = publish::Stage::create(&std::env::temp_dir(), &build.id, &id)?;
    let (mut applied, mut notes) = edit::apply_fork_to(build, plan.clone(), boot_ctx, stage.root(), progress, lock)?;
    notes.extend(cleaned);
    edit::fault::point("staged")?;
    let mut step = publish::publish(stage.root(), store, id, progress);
    let staged = stage.root().to_path_buf();
    drop(stage);
    step.staging_removed = !staged.exists();
    if !step.staging_removed {
        notes.push(format!("could not remove the staging folder {}", staged.display()));
    }
    if step.status != publish::Status::Published {
        notes.push(format!(
            "the fork {id} was assembled and verified in {} ({} read back, e2fsck -fn clean) but not published",
            staged.display(),
            crate::report::count(applied.verification.files.len(), "file", "files")
        ));
        return Ok((None, notes, step));
    }
    applied.build_dir = PathBuf::from(store.object_url(&id.to_string()));
    applied.manifest = PathBuf::from(store.object_url(&format!("{id}/{}", crate::vocab::files::MANIFEST)));
    Ok((Some(applied), notes, step))
}

/// What to do after a publish that did not happen.
fn unpublished_steps(step: &Publish, dest: &str) -> Vec<String> {
    let mut next = match step.status {
        publish::Status::Refused => vec![format!(
            "{dest} got a different build with the fork's ID meanwhile; nothing was written: run again with another --fork-id (or none)"
        )],
        _ => vec![format!(
            "nothing of the fork is at {dest}: fix what the failure names (credentials, the bucket, the network) and run the same command again"
        )],
    };
    if let Some(f) = step.failure.as_ref().filter(|f| !f.detail.left_behind.is_empty()) {
        next.push(format!("delete what could not be rolled back: {}", f.detail.left_behind.join(", ")));
    }
    next
}

/// Run a plan (or show it), publish a fork that goes elsewhere, purge caches after an in-place
/// edit, and say what comes next.
pub fn finish(
    command: EditCommand,
    plan: Plan,
    boot_ctx: &crate::rootfs::boot::Context,
    prepared: Prepared,
    args: &EditArgs,
    ctx: &Ctx,
) -> Result<Outcome> {
    let Prepared { build, lock, notes: mut early, destination } = prepared;
    let fork_id = match plan.target {
        Target::Fork { new_build_id } => Some(new_build_id),
        Target::InPlace => None,
    };
    let dest_label = destination.label(&build);
    let mut publish = None;
    if let Some(id) = fork_id {
        let (p, n) = check_destination(&destination, &build, id)?;
        publish = p;
        early.extend(n);
    }
    if args.dry_run {
        let next = match (&plan.refused, plan.target) {
            (Some(_), _) => vec!["the guards refuse this plan (above); --fork writes a new build instead".to_string()],
            (None, Target::InPlace) => vec!["run again without --dry-run to apply".to_string()],
            (None, Target::Fork { .. }) => match &destination {
                Destination::Remote(_) => vec![format!(
                    "run again without --dry-run to write the new build to {dest_label} (assembled in {}, which needs room for the full image)",
                    std::env::temp_dir().display()
                )],
                _ => vec!["run again without --dry-run to write the new build".to_string()],
            },
        };
        let report = EditReport {
            command,
            dry_run: true,
            plan,
            publish,
            applied: None,
            caches: None,
            notes: early,
            next_steps: next,
        };
        return Ok(Outcome::Edit(Box::new(report)));
    }
    let progress = ctx.progress();
    let (applied, mut notes) = match (&destination, fork_id) {
        (Destination::Base, _) => {
            let lock = lock.as_ref().ok_or(crate::error::Error::Internal("an edit beside its base needs its lock"))?;
            edit::apply(&build, plan.clone(), boot_ctx, progress, lock)?
        }
        (Destination::Local(dir), Some(_)) => {
            std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::write(dir, e))?;
            let r = edit::apply_fork_to(&build, plan.clone(), boot_ctx, dir, progress, lock.as_ref())?;
            if let Some(p) = publish.as_mut() {
                p.status = publish::Status::Published;
                p.verified = true;
            }
            r
        }
        (Destination::Remote(store), Some(id)) => {
            let (applied, notes, step) = fork_to_remote(&build, &plan, boot_ctx, lock.as_ref(), store, id, progress)?;
            let failed = step.exit_code() != crate::exit_code::OK;
            let next = if failed { unpublished_steps(&step, &dest_label) } else { Vec::new() };
            publish = Some(step);
            match applied {
                Some(a) if !failed => (a, notes),
                _ => {
                    let mut notes = notes;
                    notes.append(&mut early);
                    notes.sort();
                    notes.dedup();
                    let report = EditReport {
                        command,
                        dry_run: false,
                        plan,
                        publish,
                        applied: None,
                        caches: None,
                        notes,
                        next_steps: next,
                    };
                    return Ok(Outcome::Edit(Box::new(report)));
                }
            }
        }
        (_, None) => return Err(crate::error::Error::Internal("an in-place edit goes nowhere else")),
    };
    drop(lock);
    notes.append(&mut early);
    let mut next = Vec::new();
    let caches = match plan.target {
        Target::Fork { new_build_id } => {
            next.push(format!(
                "point the template at the new build {new_build_id} (its tag/alias in E2B's database); no cache purge is needed for a new build ID"
            ));
            next.push(verify_line(&destination, &dest_label, new_build_id));
            None
        }
        Target::InPlace if args.no_purge => {
            next.push(format!(
                "purge this build's node caches on every orchestrator node: tmpl purge-cache --build-id {}",
                build.id
            ));
            Some(CacheStep::skipped())
        }
        Target::InPlace => Some(super::purge_after_edit(build.id, &build.storage_root, ctx.progress())),
    };
    if caches.as_ref().is_some_and(|c| !c.in_effect) {
        next.extend(super::not_in_effect_steps(build.id));
    }
    if matches!(plan.target, Target::InPlace) {
        next.push(format!(
            "other nodes still cache the old bytes: run tmpl purge-cache --build-id {} on each (deploy/nomad)",
            build.id
        ));
    }
    notes.sort();
    notes.dedup();
    let report =
        EditReport { command, dry_run: false, plan, publish, applied: Some(applied), caches, notes, next_steps: next };
    Ok(Outcome::Edit(Box::new(report)))
}
