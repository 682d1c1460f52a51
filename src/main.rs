//! The `tmpl` binary: parse, run, exit. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use tmpl::output::{Mode, Output};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match tmpl::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // With --json, a refused command line is a JSON error document too (help and --version
        // are not errors: clap prints them).
        Err(e) if e.use_stderr() && tmpl::json_requested(&args) => {
            let out = Output::stdio(Mode { json: true, ..Mode::default() });
            return ExitCode::from(tmpl::usage_error(&e, &args, &out));
        }
        Err(e) => e.exit(),
    };
    let out = Output::stdio(cli.global.mode());
    ExitCode::from(tmpl::run(cli, &out))
}
