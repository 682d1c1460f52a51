//! tmpl: find and fix broken E2B sandbox templates.
//!
//! Layers, top to bottom (see ../shared/design.md): `cli` parses; `commands` resolve inputs,
//! call the domain and return a report; `output`/`report` render it; the domain modules
//! (`storage`, `build`, `metadata`, `header`, `snapshot`, `device`, `rootfs`, `elf`, `checks`)
//! never print and never import clap.

pub mod access;
pub mod build;
pub mod cache;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod deep;
pub mod demo;
pub mod device;
pub mod edit;
pub mod elf;
pub mod envd;
pub mod error;
pub mod exit_code;
pub mod explain;
pub mod header;
pub mod kconfig;
pub mod layer;
pub mod leftovers;
pub mod metadata;
pub mod output;
pub mod progress;
pub mod remote;
pub mod report;
pub mod rootfs;
pub mod snapshot;
pub mod storage;
pub mod sys;
pub mod tools;
pub mod vm;
pub mod vocab;

pub use commands::{Ctx, Outcome};
pub use error::{Error, Result};

use cli::{Cli, Command};
use output::Output;

/// Run a parsed command line, writing to `out`; returns the process exit code. The one place
/// that renders an outcome and maps an error to its exit code.
pub fn run(cli: Cli, out: &Output) -> u8 {
    let name = cli.command.name();
    match execute(cli, out).and_then(|outcome| outcome.emit(out)) {
        Ok(code) => code,
        Err(e) => out.error(name, &e),
    }
}

/// Run a parsed command line and return what it produced, unrendered (the in-process test tier
/// calls this). Notes and progress go to `out`; the storage root comes from `--storage` and the
/// process environment.
pub fn execute(cli: Cli, out: &Output) -> Result<Outcome> {
    let ctx = Ctx::new(cli.global.storage.clone(), &|k| std::env::var(k).ok(), out);
    dispatch(cli.command, &ctx)
}

/// Run one command.
pub fn dispatch(command: Command, ctx: &Ctx) -> Result<Outcome> {
    match command {
        Command::Verify(a) => commands::verify::run(a, ctx),
        Command::Inspect(a) => commands::inspect::run(a, ctx),
        Command::Demo(a) => commands::demo::run(a, ctx),
        Command::Explain(a) => commands::explain::run(a, ctx),
        Command::BootTest(a) => commands::boot_test::run(a, ctx),
        Command::CheckKernel(a) => commands::check_kernel::run(a, ctx),
        Command::InjectEnvd(a) => commands::inject_envd::run(a, ctx),
        Command::RewriteWrapper(a) => commands::rewrite_wrapper::run(a, ctx),
        Command::PurgeCache(a) => commands::purge_cache::run(a, ctx),
        Command::Backups(a) => commands::backups::run(a, ctx),
    }
}
