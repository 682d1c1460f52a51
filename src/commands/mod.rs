//! One file per subcommand: resolve inputs, call the domain, return a report. No byte parsing
//! and no format decisions here.

pub mod boot_test;
pub mod demo;
pub mod explain;
pub mod inspect;
pub mod purge_cache;
pub mod verify;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::Result;
use crate::output::Output;
use crate::storage::Storage;

/// Run the chosen command.
pub fn dispatch(cli: Cli, out: &Output) -> Result<u8> {
    let g = cli.global;
    match cli.command {
        Command::Verify(a) => verify::run(a, &g, out),
        Command::Inspect(a) => inspect::run(a, &g, out),
        Command::Demo(a) => demo::run(a, &g, out),
        Command::Explain(a) => explain::run(a, &g, out),
        Command::BootTest(a) => boot_test::run(a, &g, out),
        Command::PurgeCache(a) => purge_cache::run(a, &g, out),
    }
}

/// The storage root for this run.
pub fn storage(g: &GlobalArgs) -> Result<Storage> {
    Storage::from_env(g.storage.as_deref())
}
