//! One file per subcommand: resolve inputs, call the domain, return a report. No byte parsing
//! and no format decisions here.

pub mod boot_test;
pub mod demo;
pub mod edit_report;
pub mod explain;
pub mod inject_envd;
pub mod inspect;
pub mod purge_cache;
pub mod rewrite_wrapper;
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
        Command::InjectEnvd(a) => inject_envd::run(a, &g, out),
        Command::RewriteWrapper(a) => rewrite_wrapper::run(a, &g, out),
        Command::PurgeCache(a) => purge_cache::run(a, &g, out),
    }
}

/// The storage root for this run.
pub fn storage(g: &GlobalArgs) -> Result<Storage> {
    Storage::from_env(g.storage.as_deref())
}

/// Resolve a BUILD argument (a UUID, checked before any file is touched, or a path) and open it.
pub fn open_build(g: &GlobalArgs, arg: &str) -> Result<crate::build::Build> {
    let loc = storage(g)?.locate(arg)?;
    crate::build::Build::open(&loc)
}

/// After an in-place edit: purge this node's caches of the edited build (the purge-cache code,
/// the storage root protected). Entries a safety rule keeps (a running orchestrator) are reported.
pub fn purge_after_edit(
    id: crate::storage::BuildId,
    storage: &std::path::Path,
    out: &Output,
) -> edit_report::CacheStep {
    let progress = out.progress();
    match crate::cache::purge_builds(&[id], Some(storage), false, false, progress.as_ref()) {
        Ok(o) => {
            let t = &o.totals;
            let status = match o.verdict {
                crate::cache::Verdict::Clean => "purged",
                crate::cache::Verdict::SafetySkipped => "partly-skipped",
                crate::cache::Verdict::Failed => "failed",
            };
            let detail = format!(
                "{} entries, {} freed on this node{}",
                t.purged,
                crate::report::human_bytes(t.freed_bytes),
                if t.skipped > 0 {
                    format!("; {} left alone by a safety rule (see purge-cache)", t.skipped)
                } else {
                    String::new()
                }
            );
            edit_report::CacheStep { status, detail, report: serde_json::to_value(&o).ok() }
        }
        Err(e) => edit_report::CacheStep { status: "failed", detail: e.to_string(), report: None },
    }
}
