//! Command-line definition (clap derive). Parsing only: no logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::exit_code;

#[derive(Debug, Parser)]
#[command(
    name = "tmpl",
    bin_name = "tmpl",
    version,
    about = "Find and fix broken E2B sandbox templates, offline",
    long_about = "tmpl checks and repairs E2B template builds (<storage>/<build-id>/ with metadata.json, \
rootfs.ext4, memfile, snapfile and *.header files) without a cluster, without mounting and without root.",
    after_long_help = exit_code::TABLE,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Template storage: a directory or gs://bucket, s3://bucket?endpoint=..&region=..,
    /// azblob://container, file:///dir (else TMPL_STORAGE, TEMPLATE_STORAGE_URL,
    /// STORAGE_PROVIDER + TEMPLATE_BUCKET_NAME, LOCAL_TEMPLATE_STORAGE_BASE_PATH, /tmp/templates)
    #[arg(long, global = true, value_name = "DIR|URL")]
    pub storage: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on stdout; the exit code tells the outcome
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (info findings, debug notes on stderr)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Colour in human output
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Never draw progress bars
    #[arg(long, global = true)]
    pub no_progress: bool,
}

impl GlobalArgs {
    /// How output is produced when it goes to the process's stdout and stderr.
    pub fn mode(&self) -> crate::output::Mode {
        crate::output::Mode::for_terminal(self.json, self.quiet, self.verbose, self.color.resolve(), self.no_progress)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    pub fn resolve(self) -> Option<bool> {
        match self {
            ColorWhen::Auto => None,
            ColorWhen::Always => Some(true),
            ColorWhen::Never => Some(false),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check builds offline: metadata, headers and ancestors, snapfile, memfile, rootfs
    Verify(commands::verify::Args),
    /// Show everything known about one build
    Inspect(commands::inspect::Args),
    /// Create a demo storage with healthy and broken builds and verify it
    Demo(commands::demo::Args),
    /// Decode a pasted panic, Firecracker error or console log: cause, findings, command
    Explain(commands::explain::Args),
    /// Boot a build's rootfs under QEMU (or the node's Firecracker) and prove init/envd start
    BootTest(commands::boot_test::Args),
    /// Check a guest kernel's config against what an E2B guest needs (IKCONFIG or a config file)
    CheckKernel(commands::check_kernel::Args),
    /// Install envd into a build's rootfs and make it start at boot (transactional, verified)
    InjectEnvd(commands::inject_envd::Args),
    /// Replace a hand-written init wrapper with tmpl's template, keeping the envd binary
    RewriteWrapper(commands::rewrite_wrapper::Args),
    /// Delete every node-local cache entry of builds (template, build, chunk, sandbox, snapshot
    /// caches), safely; --show-roots, --summarize for cluster-wide runs
    PurgeCache(commands::purge_cache::Args),
    /// List, restore and prune a build's backups; remove what killed edits left; finish an
    /// interrupted commit
    Backups(commands::backups::Args),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(commands::completions::Args),
    /// Print a man page, or write one per command with --out DIR
    Man(commands::man::Args),
    /// Copy a build and its ancestors between storages (directories, s3://, gs://, azblob://),
    /// verified, metadata.json last
    Copy(commands::copy::Args),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Verify(_) => "verify",
            Command::Inspect(_) => "inspect",
            Command::Demo(_) => "demo",
            Command::Explain(_) => "explain",
            Command::BootTest(_) => "boot-test",
            Command::CheckKernel(_) => "check-kernel",
            Command::InjectEnvd(_) => "inject-envd",
            Command::RewriteWrapper(_) => "rewrite-wrapper",
            Command::PurgeCache(_) => "purge-cache",
            Command::Backups(_) => "backups",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Copy(_) => "copy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let a = Cli::try_parse_from(["tmpl", "--json", "--storage", "/s", "verify", "--all"]).unwrap();
        let b = Cli::try_parse_from(["tmpl", "verify", "--all", "--json", "--storage", "/s"]).unwrap();
        assert!(a.global.json && b.global.json);
        assert_eq!(a.global.storage, b.global.storage);
    }

    fn help_of(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        e.render().to_string()
    }

    #[test]
    fn global_options_have_their_own_heading() {
        let help = help_of(&["tmpl", "verify", "--help"]);
        let (own, global) = help.split_once("Global options:").expect("a Global options heading");
        assert!(own.contains("--deep") && !own.contains("--storage"), "{help}");
        assert!(global.contains("--storage") && global.contains("--json") && !global.contains("--deep"), "{help}");
    }

    #[test]
    fn purge_cache_help_states_defaults_truthfully_and_plain_flags() {
        // Words only (the help is wrapped to the terminal's width).
        let help = help_of(&["tmpl", "purge-cache", "--help"]).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(!help.contains("[default: 0]"), "{help}");
        assert!(help.contains("[default: 4 per core, at least 8]"), "{help}");
        assert!(!help.contains("[=<BOOL>]") && !help.contains("<BOOL>"), "{help}");
        let cli = Cli::try_parse_from(["tmpl", "purge-cache", "--build-id", "x", "--dry-run", "--force"]).unwrap();
        let Command::PurgeCache(a) = cli.command else { panic!() };
        assert!(a.dry_run && a.force);
    }

    /// Every command's --help ends with what its exit statuses mean.
    #[test]
    fn every_command_help_has_an_exit_status_footer() {
        for sub in Cli::command().get_subcommands() {
            let help = help_of(&["tmpl", sub.get_name(), "--help"]);
            assert!(help.contains("Exit status: 0"), "{} --help has no exit status:\n{help}", sub.get_name());
        }
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:") && help.contains("5  refused"));
    }
}
