//! `tmpl purge-cache`'s human output: the text rendering of [`PurgeReport`], [`RootsReport`] and
//! [`SummaryReport`] (their JSON is the structs themselves). Kept beside the command, apart from
//! the code that plans and applies the purge.

use std::io::{self, Write};

use super::purge_cache::*;
use crate::cache::summary::NodeVerdict;
use crate::cache::{EntryStatus, RootStatus, Verdict};
use crate::report::{Report, Style, human_bytes, sanitize};
use crate::vocab::BuildId;

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn short(id: &Option<BuildId>) -> String {
    id.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
}

impl Report for PurgeReport {
    fn command(&self) -> &'static str {
        "purge-cache"
    }

    fn ok(&self) -> bool {
        self.outcome.verdict == Verdict::Clean
    }

    fn failure_code(&self) -> u8 {
        self.exit_code
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let o = &self.outcome;
        let what = if o.all {
            "every build".to_string()
        } else {
            let ids: Vec<String> = o.build_ids.iter().map(|i| i.to_string()).collect();
            format!("{} ({})", plural(ids.len(), "build"), ids.join(", "))
        };
        let dry = if o.dry_run { "dry run: nothing deleted. " } else { "" };
        writeln!(w, "{}purge-cache on {}: {what}", dry, style.bold(&sanitize(&self.node)))?;
        let state = if o.orchestrator.running { "running" } else { "not running" };
        writeln!(
            w,
            "orchestrator: {state} — {}{}",
            sanitize(&o.orchestrator.reason),
            if o.force { " (--force)" } else { "" }
        )?;
        for c in &o.caches {
            let root = c
                .facts
                .root
                .as_ref()
                .map(|p| sanitize(&p.display().to_string()).into_owned())
                .unwrap_or_else(|| "-".into());
            let head = format!("{:<9} {root}", c.facts.kind.name());
            match c.facts.status {
                RootStatus::Ok => writeln!(w, "{} ({})", style.bold(&head), sanitize(&c.facts.source.detail))?,
                RootStatus::Absent => writeln!(w, "{head}: absent (nothing cached)")?,
                RootStatus::Unset => writeln!(w, "{head}: {}", sanitize(&c.facts.source.detail))?,
                RootStatus::Excluded => writeln!(w, "{head}: not selected (--cache)")?,
                RootStatus::Refused | RootStatus::Error => writeln!(
                    w,
                    "{}: {}: {}",
                    style.bold(&head),
                    style.ok(false),
                    sanitize(c.facts.reason.as_deref().unwrap_or(""))
                )?,
            }
            for n in &c.facts.notes {
                writeln!(w, "    note: {}", sanitize(n))?;
            }
            for e in &c.facts.entries {
                let label = match e.status {
                    EntryStatus::Planned => "would purge",
                    EntryStatus::Purged => "purged",
                    EntryStatus::Gone => "gone",
                    EntryStatus::Failed => "FAILED",
                };
                let objs = if e.entry.objects.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", e.entry.objects.join(", "))
                };
                writeln!(
                    w,
                    "    {label:<11} {} {}{} — {}, {}",
                    short(&e.entry.build_id),
                    sanitize(&e.entry.path.display().to_string()),
                    sanitize(&objs),
                    human_bytes(e.entry.allocated_bytes),
                    plural(crate::num::usize_from(e.entry.files), "file"),
                )?;
                if let Some(err) = &e.error {
                    writeln!(w, "                {}", sanitize(err))?;
                }
            }
            for s in &c.facts.skipped {
                writeln!(
                    w,
                    "    {:<11} {} {} — {}: {}",
                    "skipped",
                    short(&s.entry.build_id),
                    sanitize(&s.entry.path.display().to_string()),
                    serde_json::to_value(s.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    sanitize(&s.detail)
                )?;
            }
        }
        let t = &o.totals;
        let verb = if o.dry_run { "would free" } else { "freed" };
        writeln!(
            w,
            "\ntotal: {} {}, {} {verb} (allocated); {} skipped for safety ({}); {} failed; {} refused",
            crate::report::count(if o.dry_run { t.entries } else { t.purged }, "entry", "entries"),
            if o.dry_run { "planned" } else { "purged" },
            human_bytes(if o.dry_run { t.planned_bytes } else { t.freed_bytes }),
            t.skipped,
            human_bytes(t.skipped_bytes),
            t.failed,
            plural(t.refused_roots, "root"),
        )
    }
}

impl Report for RootsReport {
    fn command(&self) -> &'static str {
        "purge-cache"
    }

    fn ok(&self) -> bool {
        true
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{:<9} {:<24} {:<36} {:<16} from", "cache", "variable", "path", "state")?;
        writeln!(
            w,
            "{:<9} {:<24} {:<36} {:<16} {}",
            "base",
            "ORCHESTRATOR_BASE_PATH",
            sanitize(&self.base.display().to_string()),
            if self.base.is_dir() { "exists" } else { "absent" },
            sanitize(&self.base_source.detail)
        )?;
        for c in &self.caches {
            let path = c.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
            let state = match &c.symlink_to {
                Some(t) => format!("{} (symlink → {})", c.state, t.display()),
                None => c.state.to_string(),
            };
            writeln!(
                w,
                "{:<9} {:<24} {:<36} {:<16} {}",
                style.bold(c.kind.name()),
                c.env,
                sanitize(&path),
                sanitize(&state),
                sanitize(&c.source.detail)
            )?;
        }
        writeln!(
            w,
            "{:<9} {:<24} {:<36} {:<16} {}",
            "lock",
            "ORCHESTRATOR_LOCK_PATH",
            sanitize(&self.orchestrator.lock_path.display().to_string()),
            serde_json::to_value(self.orchestrator.lock)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            sanitize(&self.lock_source.detail)
        )?;
        writeln!(
            w,
            "\norchestrator: {} — {}",
            if self.orchestrator.running { "running" } else { "not running" },
            sanitize(&self.orchestrator.reason)
        )?;
        for h in &self.hints {
            writeln!(w, "hint: {}", sanitize(h))?;
        }
        Ok(())
    }
}

impl Report for SummaryReport {
    fn command(&self) -> &'static str {
        "purge-cache"
    }

    fn ok(&self) -> bool {
        self.summary.verdict == Verdict::Clean
    }

    fn failure_code(&self) -> u8 {
        self.exit_code
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let s = &self.summary;
        let t = &s.totals;
        let what = if s.all { "every build".to_string() } else { s.build_ids.join(", ") };
        writeln!(
            w,
            "{}cluster purge of {}: {} reported ({} clean, {} skipped something, {} failed{})",
            if s.dry_run { "dry run: " } else { "" },
            sanitize(&what),
            plural(t.nodes, "node"),
            t.clean,
            t.safety_skipped,
            t.failed,
            t.expected_nodes.map(|e| format!(", {e} expected")).unwrap_or_default()
        )?;
        for n in &s.nodes {
            let v = match n.verdict {
                NodeVerdict::Clean => style.ok(true),
                NodeVerdict::SafetySkipped => "skipped".into(),
                NodeVerdict::Failed => style.ok(false),
                NodeVerdict::Error => "ERROR".into(),
                NodeVerdict::Invalid => "INVALID".into(),
            };
            let err = n.error.as_ref().map(|e| format!(" — {}", sanitize(e))).unwrap_or_default();
            writeln!(
                w,
                "  {v:<8} {:<24} {} purged, {} freed, {} skipped, {} failed{}{err}",
                sanitize(&n.node),
                n.purged,
                human_bytes(n.freed_bytes),
                n.skipped,
                n.failed,
                if n.orchestrator_running { " (orchestrator running)" } else { "" }
            )?;
        }
        writeln!(w, "\nper cache:")?;
        for k in &s.caches {
            writeln!(
                w,
                "  {:<9} {} nodes, {} entries ({} planned), {} purged, {} freed, {} skipped, {} failed{}",
                k.kind,
                k.nodes,
                k.entries,
                human_bytes(k.planned_bytes),
                k.purged,
                human_bytes(k.freed_bytes),
                k.skipped,
                k.failed,
                if k.shared { " (shared: counted once)" } else { "" }
            )?;
        }
        if !s.skipped.is_empty() {
            writeln!(w, "\nskipped:")?;
            for k in s.skipped.iter().take(50) {
                writeln!(w, "  {} {} {}: {}", sanitize(&k.node), k.kind, sanitize(&k.path), sanitize(&k.reason))?;
            }
            if s.skipped.len() > 50 {
                writeln!(w, "  ... and {} more (--json lists all)", s.skipped.len() - 50)?;
            }
        }
        if !s.failures.is_empty() {
            writeln!(w, "\nfailures:")?;
            for f in &s.failures {
                writeln!(w, "  {}", sanitize(f))?;
            }
        }
        writeln!(
            w,
            "\ntotal: {} purged, {} freed (allocated), {} skipped",
            crate::report::count(t.purged, "entry", "entries"),
            human_bytes(t.freed_bytes),
            t.skipped
        )
    }
}
