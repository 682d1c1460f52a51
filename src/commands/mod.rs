//! One file per subcommand: resolve inputs, call the domain, return a report. No byte parsing
//! and no format decisions here.

pub mod backups;
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
        Command::Backups(a) => backups::run(a, &g, out),
    }
}

/// The storage root for this run.
pub fn storage(g: &GlobalArgs) -> Result<Storage> {
    Ok(Storage::from_env(g.storage.as_deref())?)
}

/// Resolve a BUILD argument (a UUID, checked before any file is touched, or a path) and open it.
pub fn open_build(g: &GlobalArgs, arg: &str) -> Result<crate::build::Build> {
    let loc = storage(g)?.locate(arg)?;
    Ok(crate::build::Build::open(&loc)?)
}

/// After an in-place edit (or a restore): purge this node's caches of the build (the
/// purge-cache code, the storage root protected). Entries a safety rule keeps are reported; when
/// the rule was the running orchestrator, the change is not in effect on this node.
pub fn purge_after_edit(id: crate::vocab::BuildId, storage: &std::path::Path, out: &Output) -> edit_report::CacheStep {
    let progress = out.progress();
    match crate::cache::purge_builds(&[id], Some(storage), false, false, progress.as_ref()) {
        Ok(o) => {
            let t = &o.totals;
            let status = match o.verdict {
                crate::cache::Verdict::Clean => "purged",
                crate::cache::Verdict::SafetySkipped => "partly-skipped",
                crate::cache::Verdict::Failed => "failed",
            };
            // Entries of the build left in a cache: this node can still serve the old bytes.
            let stale = t.skipped > 0;
            let detail = if stale && o.orchestrator.running {
                format!(
                    "{} entries purged, {} left alone because the orchestrator is running ({}): THIS NODE KEEPS SERVING \
                     THE OLD BUILD until the orchestrator restarts with these caches purged",
                    t.purged, t.skipped, o.orchestrator.reason
                )
            } else if stale {
                format!(
                    "{} entries purged, {} left alone by a safety rule (files in use; see purge-cache): this node can \
                     still serve the old bytes from them",
                    t.purged, t.skipped
                )
            } else {
                format!(
                    "{} entries, {} freed on this node{}",
                    t.purged,
                    crate::report::human_bytes(t.freed_bytes),
                    if t.skipped > 0 {
                        format!("; {} left alone by a safety rule (see purge-cache)", t.skipped)
                    } else {
                        String::new()
                    }
                )
            };
            edit_report::CacheStep { status, detail, in_effect: !stale, report: serde_json::to_value(&o).ok() }
        }
        Err(e) => edit_report::CacheStep { status: "failed", detail: e.to_string(), in_effect: true, report: None },
    }
}

/// What to do when a change is not in effect on this node (exit 6): the caches must be purged
/// while the orchestrator is stopped, with the Nomad and systemd commands; or use `--fork`.
pub fn not_in_effect_steps(id: crate::vocab::BuildId) -> Vec<String> {
    vec![
        format!(
            "this node serves the OLD build {id} until its orchestrator restarts with the build's caches purged \
             (stopping it ends the sandboxes running on this node): under Nomad, `nomad node drain -enable -self -yes` \
             (stops the orchestrator's system job here), `tmpl purge-cache --build-id {id}`, then \
             `nomad node drain -disable -self -yes`; under systemd, `systemctl stop orchestrator && tmpl purge-cache \
             --build-id {id} && systemctl start orchestrator`"
        ),
        "to change a template on a live node without a restart, use --fork: a new build ID is not cached anywhere, \
         point the template at it"
            .to_string(),
    ]
}
