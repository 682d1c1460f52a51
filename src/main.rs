//! The `tmpl` binary: parse, run, exit. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tmpl::cli::Cli::parse();
    let out = tmpl::output::Output::stdio(cli.global.mode());
    ExitCode::from(tmpl::run(cli, &out))
}
