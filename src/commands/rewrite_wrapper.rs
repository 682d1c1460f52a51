//! `tmpl rewrite-wrapper BUILD`: replace a hand-written init wrapper with tmpl's known-good
//! template, keeping the envd binary it runs (also the `/usr/local/bin/envd` → `envd.real`
//! layout) and the flags that envd accepts.

use super::edit_report::{self, EditArgs, EditCommand};
use super::{Ctx, Outcome};
use crate::edit::inject;
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 done (or planned, with --dry-run); otherwise as inject-envd. 3 also when /sbin/init is not a wrapper script or starts no envd \
that exists in the image (use inject-envd then). A build in remote storage is edited only with --fork \
(and --to DST), as for inject-envd."
)]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// An extra envd argument for the new wrapper (repeat for several)
    #[arg(long = "envd-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub envd_args: Vec<String>,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let own: Vec<String> = args.envd_args.iter().map(|a| format!("--envd-arg={a}")).collect();
    let prepared = edit_report::prepare(ctx, EditCommand::RewriteWrapper, &args.build, &args.edit, &own)?;
    let (plan, boot_ctx) = inject::plan_rewrite(&prepared.build, &args.envd_args, &args.edit.options()?)?;
    edit_report::finish(EditCommand::RewriteWrapper, plan, &boot_ctx, prepared, &args.edit, ctx)
}
