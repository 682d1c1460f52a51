//! tmpl: find and fix broken E2B sandbox templates.
//!
//! Layers, top to bottom (docs/architecture.md draws them with the module graph): `cli` parses; `commands` resolve inputs,
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
pub mod copy;
pub mod deep;
pub mod demo;
pub mod device;
pub mod edit;
pub mod elf;
pub mod envd;
pub mod error;
pub mod exit_code;
pub mod explain;
pub mod fixtures;
pub mod header;
pub mod kconfig;
pub mod leftovers;
pub mod metadata;
pub mod num;
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

/// Whether `--json` is among `args` (before a `--`): a command line clap refuses is then reported
/// as a JSON error document too.
pub fn json_requested<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> bool {
    args.iter().skip(1).map(AsRef::as_ref).take_while(|a| *a != "--").any(|a| a == "--json")
}

/// Report a command line clap refused, with `--json`: clap's message on stderr and one JSON
/// error document (`ok: false`, kind `usage`, `exit_code` 2) on stdout; returns the exit code.
/// `args` name the subcommand when there is one.
pub fn usage_error<S: AsRef<std::ffi::OsStr>>(err: &clap::Error, args: &[S], out: &Output) -> u8 {
    use clap::CommandFactory;
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let cmd = Cli::command();
    let command = args
        .iter()
        .skip(1)
        .filter_map(|a| a.as_ref().to_str())
        .find_map(|a| cmd.get_subcommands().find(|s| s.get_name() == a).map(|s| s.get_name().to_string()))
        .unwrap_or_else(|| "tmpl".to_string());
    let e = Error::Usage(error::UsageError::CommandLine(message));
    let code = out.error(&command, &e);
    for line in rendered.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        out.note(line);
    }
    code
}

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
        Command::Copy(a) => commands::copy::run(a, ctx),
        Command::Completions(a) => commands::completions::run(a, ctx, <Cli as clap::CommandFactory>::command()),
        Command::Man(a) => commands::man::run(a, ctx, <Cli as clap::CommandFactory>::command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use output::{ErrorDoc, Mode};

    /// docs/architecture.md (linked from the README, which links nothing outside the repository)
    /// names every module of the crate.
    #[test]
    fn the_architecture_page_names_every_module() {
        let page = include_str!("../docs/architecture.md");
        for line in include_str!("lib.rs").lines() {
            if let Some(m) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
                let named = page.lines().any(|l| {
                    l.split_whitespace().any(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_') == m)
                });
                assert!(named, "docs/architecture.md does not name the module {m}");
            }
        }
        assert!(!include_str!("../README.md").contains("../shared"), "the README links outside the repository");
    }

    /// With --json, a command line clap refuses is one JSON error document (kind usage, exit 2)
    /// naming the subcommand; without --json nothing is asked of us (clap prints its message).
    #[test]
    fn a_refused_command_line_with_json_is_a_json_error_document() {
        let args = ["tmpl", "verify", "--json", "--no-such-flag"];
        let err = Cli::try_parse_from(args).unwrap_err();
        assert!(json_requested(&args) && err.use_stderr());
        let (out, captured) = Output::capture(Mode { json: true, ..Mode::default() }, b"");
        assert_eq!(usage_error(&err, &args, &out), exit_code::USAGE);
        let doc: ErrorDoc = serde_json::from_slice(&captured.stdout()).unwrap();
        assert!(!doc.ok);
        assert_eq!((doc.command.as_str(), doc.error.kind, doc.error.exit_code), ("verify", error::ErrorKind::Usage, 2));
        assert!(doc.error.message.contains("--no-such-flag"), "{}", doc.error.message);
        assert!(captured.stderr().contains("--no-such-flag"));

        assert!(!json_requested(&["tmpl", "verify", "--", "--json"]));
        assert!(!json_requested(&["tmpl", "verify", "x"]));
        // No subcommand: the document names tmpl.
        let args = ["tmpl", "--json"];
        let err = Cli::try_parse_from(args).unwrap_err();
        let (out, captured) = Output::capture(Mode { json: true, ..Mode::default() }, b"");
        assert_eq!(usage_error(&err, &args, &out), 2);
        let doc: ErrorDoc = serde_json::from_slice(&captured.stdout()).unwrap();
        assert_eq!(doc.command, "tmpl");
    }
}
