//! The report shared by the editing commands (`inject-envd`, `rewrite-wrapper`): the plan, and
//! after applying it what was written, verified, backed up and purged, and what to do next.

use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome};

use crate::edit::{self, Applied, Backend, EditOptions, Plan, Target};
use crate::error::Result;
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

/// A build locked for an edit, with an interrupted commit settled first.
pub struct Prepared {
    pub build: crate::build::Build,
    pub lock: edit::BuildLock,
    /// What settling an interrupted commit did (for the report's notes).
    pub notes: Vec<String>,
}

/// Locate BUILD, lock it (exclusive for an in-place edit, shared for a dry run or a fork's
/// source) before anything of it is read, settle an interrupted commit (completing it, and
/// purging this node's caches of the build as an edit does), then open it.
pub fn prepare(ctx: &Ctx, arg: &str, args: &EditArgs) -> Result<Prepared> {
    let loc = ctx.local_storage("the edit", arg)?.locate(arg)?;
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
    Ok(Prepared { build, lock, notes })
}

#[derive(Debug, Serialize)]
pub struct EditReport {
    #[serde(skip)]
    pub command: EditCommand,
    pub dry_run: bool,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caches: Option<CacheStep>,
    pub notes: Vec<String>,
    pub next_steps: Vec<String>,
}

/// Run a plan (or show it), purge caches after an in-place edit, and say what comes next.
pub fn finish(
    command: EditCommand,
    plan: Plan,
    boot_ctx: &crate::rootfs::boot::Context,
    prepared: Prepared,
    args: &EditArgs,
    ctx: &Ctx,
) -> Result<Outcome> {
    let Prepared { build, lock, notes: mut early } = prepared;
    if args.dry_run {
        let next = match (&plan.refused, plan.target) {
            (Some(_), _) => vec!["the guards refuse this plan (above); --fork writes a new build instead".to_string()],
            (None, Target::InPlace) => vec!["run again without --dry-run to apply".to_string()],
            (None, Target::Fork { .. }) => vec!["run again without --dry-run to write the new build".to_string()],
        };
        let report =
            EditReport { command, dry_run: true, plan, applied: None, caches: None, notes: early, next_steps: next };
        return Ok(Outcome::Edit(Box::new(report)));
    }
    let (applied, mut notes) = edit::apply(&build, plan.clone(), boot_ctx, ctx.progress(), &lock)?;
    drop(lock);
    notes.append(&mut early);
    let mut next = Vec::new();
    let caches = match plan.target {
        Target::Fork { new_build_id } => {
            next.push(format!(
                "point the template at the new build {new_build_id} (its tag/alias in E2B's database); no cache purge is needed for a new build ID"
            ));
            next.push(format!("tmpl verify {new_build_id}"));
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
    let report = EditReport { command, dry_run: false, plan, applied: Some(applied), caches, notes, next_steps: next };
    Ok(Outcome::Edit(Box::new(report)))
}
