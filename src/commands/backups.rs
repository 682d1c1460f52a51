//! `tmpl backups BUILD [--restore NAME | --prune [--keep N] | --clean | --recover | --roll-back]`:
//! the backups in-place edits keep, what killed runs leave, and interrupted commits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::edit_report::CacheStep;
use super::{Ctx, Outcome};
use crate::edit::backups::{self, Listing, Pruned, Restored};
use crate::edit::commit::{self, Recovered};
use crate::error::Result;
use crate::vocab::BuildId;

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("action").args(["restore", "prune", "clean", "recover", "roll_back"])),
    after_help = "Without an action: list the build's backups (newest first, with sizes and contents), work \
folders of edits, an interrupted commit, partial forks of the build and stale mounts of older tmpl versions. \
Every action takes the build's lock, and first completes an interrupted commit (except --roll-back, which undoes \
it). --restore and --recover/--roll-back purge this node's caches of the build, as an edit does.\n\n\
Exit status: 0 done; 2 usage (a name that is not a backup of the build); 3 no such backup; 4 I/O, or the cache \
purge failed; 5 refused (another tmpl holds the lock, the rootfs is in use, other builds read this one, a \
commit whose files were moved by hand); 6 restored, but this node keeps serving the old bytes (the orchestrator \
runs, so its caches were left alone)."
)]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// Put the backup NAME (.tmpl-backup-<time>) back in place, transactionally; the files it
    /// replaces are saved as a new backup, NAME itself is used up
    #[arg(long, value_name = "NAME")]
    pub restore: Option<String>,
    /// Delete all but the newest --keep backups
    #[arg(long)]
    pub prune: bool,
    /// How many backups --prune keeps (newest first)
    #[arg(long, value_name = "N", default_value_t = 1, requires = "prune")]
    pub keep: usize,
    /// Remove what killed runs left: work folders, their stale mounts, partial forks of this build
    #[arg(long)]
    pub clean: bool,
    /// Complete an interrupted commit (also done by every other action and by the next edit)
    #[arg(long)]
    pub recover: bool,
    /// Undo an interrupted commit instead of completing it
    #[arg(long)]
    pub roll_back: bool,
    /// Show what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not purge this node's caches after a restore or a recovery
    #[arg(long)]
    pub no_purge: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackupsReport {
    pub build_id: BuildId,
    pub path: PathBuf,
    pub action: Action,
    pub dry_run: bool,
    /// An interrupted commit settled before the action (or by --recover / --roll-back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<Pruned>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caches: Option<CacheStep>,
    /// The state after the action.
    pub listing: Listing,
    pub notes: Vec<String>,
    pub next_steps: Vec<String>,
}

/// What `tmpl backups` was asked to do (`action` in the report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    List,
    Restore,
    Prune,
    Clean,
    Recover,
    RollBack,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Restore => "restore",
            Action::Prune => "prune",
            Action::Clean => "clean",
            Action::Recover => "recover",
            Action::RollBack => "roll-back",
        }
    }
}

fn action(args: &Args) -> Action {
    if args.restore.is_some() {
        Action::Restore
    } else if args.prune {
        Action::Prune
    } else if args.clean {
        Action::Clean
    } else if args.recover {
        Action::Recover
    } else if args.roll_back {
        Action::RollBack
    } else {
        Action::List
    }
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let loc = ctx.local_storage("backups", &args.build)?.locate(&args.build)?;
    let action = action(&args);
    let mutating = action != Action::List && !args.dry_run;
    // The lock comes first: nothing of the build is read while another tmpl changes it.
    let lock = if action == Action::List { None } else { Some(crate::edit::lock_build(&loc.dir, mutating)?) };
    let mut notes = Vec::new();
    let mut recovered = None;
    if mutating {
        recovered = if action == Action::RollBack {
            commit::roll_back_interrupted(&loc.dir)?
        } else {
            commit::recover(&loc.dir)?
        };
        if recovered.is_none() && matches!(action, Action::Recover | Action::RollBack) {
            notes.push("there was no interrupted commit".into());
        }
    }
    let build = crate::build::Build::open(&loc)?;
    let (mut restored, mut pruned) = (None, None);
    match (action, &lock) {
        (Action::Restore, Some(lock)) => {
            let name = args.restore.as_deref().unwrap_or_default();
            restored = Some(backups::restore(&build, name, lock, args.dry_run)?);
        }
        (Action::Prune, Some(lock)) => pruned = Some(backups::prune(&build.dir, args.keep, lock, args.dry_run)?),
        _ => {}
    }
    // Dead leftovers go with every action that holds the lock (a dry run lists them).
    if let Some(lock) = &lock
        && matches!(action, Action::Clean | Action::Prune)
    {
        notes.extend(backups::clean(&build, lock, args.dry_run));
    }
    let changed_files = recovered.is_some() || (restored.is_some() && !args.dry_run);
    let mut next = Vec::new();
    let caches = if changed_files && args.no_purge {
        next.push(format!("purge this build's node caches on every node: tmpl purge-cache --build-id {}", build.id));
        Some(CacheStep::skipped())
    } else if changed_files {
        Some(super::purge_after_edit(build.id, &build.storage_root, ctx.progress()))
    } else {
        None
    };
    if caches.as_ref().is_some_and(|c| !c.in_effect) {
        next.extend(super::not_in_effect_steps(build.id));
    }
    drop(lock);
    let listing = backups::list(&build.dir, &build.storage_root, &build.id);
    if let Some(j) = &listing.journal
        && !j.in_progress
    {
        next.push(format!(
            "tmpl backups {} --recover completes the interrupted commit (--roll-back undoes it)",
            build.id
        ));
    }
    if action == Action::List
        && listing.journal.is_none()
        && listing.work_folders.iter().chain(&listing.forks).chain(&listing.mounts).any(|x| !x.in_use)
    {
        next.push(format!("tmpl backups {} --clean removes what killed runs left", build.id));
    }
    if action == Action::List && listing.backups.len() > 1 {
        next.push(format!("tmpl backups {} --prune --keep 1 keeps only the newest backup", build.id));
    }
    let report = BackupsReport {
        build_id: build.id,
        path: build.dir.clone(),
        action,
        dry_run: args.dry_run,
        recovered,
        restored,
        pruned,
        caches,
        listing,
        notes,
        next_steps: next,
    };
    Ok(Outcome::Backups(Box::new(report)))
}
