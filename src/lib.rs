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

pub use error::{Error, Result};

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: cli::Cli) -> u8 {
    let g = &cli.global;
    let out = output::Output::new(g.json, g.quiet, g.verbose, g.color.resolve(), g.no_progress);
    let name = cli.command.name();
    match commands::dispatch(cli, &out) {
        Ok(code) => code,
        Err(e) => out.error(name, &e),
    }
}
