//! The `tmpl` binary: parse, run, exit. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tmpl::cli::Cli::parse();
    ExitCode::from(tmpl::run(cli))
}
