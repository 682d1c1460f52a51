//! `tmpl inject-envd BUILD --envd PATH [--as auto|init|wrapper|service]`: install envd at
//! /usr/bin/envd and make it start at boot, transactionally and verified.

use super::edit_report::{self, EditArgs, EditCommand};
use super::{Ctx, Outcome};
use crate::edit::ModeChoice;

/// `--as` (the command line's view of `edit::ModeChoice`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Auto,
    Init,
    Wrapper,
    Service,
}
use crate::edit::inject::{self, InjectOptions};
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 done (or planned, with --dry-run); 1 the edited copy failed verification (the build \
is unchanged); 2 usage; 3 bad build or envd file (not ELF, wrong architecture, loader missing); 4 a tool failed \
(debugfs, e2fsck, mount), or the cache purge after an in-place edit failed (the edit itself is done); 5 refused by \
a safety check — memory snapshot, dependent builds, compacted layer, image in use (also when a process opened it \
while the edit ran), dirty journal, removed envd flags, no kernel/Firecracker version for the metadata it must \
write, another tmpl holding the build's lock (named with its PID) — nothing was written (--dry-run prints the plan \
first); 6 done, but this node's caches were left alone because the orchestrator runs: it serves the old build until \
the orchestrator restarts with them purged (use --fork on a live node). A run killed during its commit is completed \
by the next edit of the build or `tmpl backups BUILD --recover`.

Remote storage (--storage s3://..., gs://..., azblob://...): a build there is never edited in place (exit 5, naming \
the --fork command). --fork reads the base through its headers and writes the new build beside it in the same \
bucket, or to --to DST (a directory or another storage URL): assembled and verified in a staging folder in $TMPDIR \
(room for the full image, checked first; removed afterwards, and by the next run if this one is killed), then copied with \
metadata.json last, every object read back and compared. Exit 4 also when that copy failed (credentials, a missing \
bucket, 5xx or timeouts after the retries: what it wrote is deleted again, nothing of the fork is at DST), 1 when \
an object differs after writing (deleted again too), 5 when DST already holds a complete build with the fork's ID."
)]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// The envd binary to install (static ELF for the VM's architecture)
    #[arg(long, value_name = "PATH")]
    pub envd: std::path::PathBuf,
    /// How envd starts: auto picks service (systemd), else wrapper (a shell exists), else init
    #[arg(long = "as", value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// An extra envd argument (repeat for several); checked against the flags this envd accepts
    #[arg(long = "envd-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub envd_args: Vec<String>,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let mut own = vec!["--envd".to_string(), args.envd.to_string_lossy().into_owned()];
    if !matches!(args.mode, ModeArg::Auto) {
        own.extend(["--as".to_string(), format!("{:?}", args.mode).to_lowercase()]);
    }
    for a in &args.envd_args {
        own.push(format!("--envd-arg={a}"));
    }
    let prepared = edit_report::prepare(ctx, EditCommand::InjectEnvd, &args.build, &args.edit, &own)?;
    let build = &prepared.build;
    let opts = InjectOptions {
        envd: args.envd.clone(),
        mode: match args.mode {
            ModeArg::Auto => ModeChoice::Auto,
            ModeArg::Init => ModeChoice::Init,
            ModeArg::Wrapper => ModeChoice::Wrapper,
            ModeArg::Service => ModeChoice::Service,
        },
        envd_args: args.envd_args.clone(),
        edit: args.edit.options()?,
    };
    let (plan, boot_ctx) = inject::plan_inject(build, &opts)?;
    edit_report::finish(EditCommand::InjectEnvd, plan, &boot_ctx, prepared, &args.edit, ctx)
}
