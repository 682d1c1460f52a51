//! `tmpl backups`'s human output: the text rendering of [`BackupsReport`] (its JSON is the struct itself). Kept
//! beside the command, apart from the code that does the work.

use std::io::{self, Write};

use super::backups::*;
use super::edit_report::CacheStep;
use crate::edit::leftovers::Leftover;
use crate::report::{Report, Style, human_bytes, sanitize};

impl Report for BackupsReport {
    fn command(&self) -> &'static str {
        "backups"
    }

    fn ok(&self) -> bool {
        self.failure_code() == crate::exit_code::OK
    }

    fn failure_code(&self) -> u8 {
        self.caches.as_ref().map_or(crate::exit_code::OK, CacheStep::exit_code)
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let state = if self.dry_run { " (dry run: nothing changed)" } else { "" };
        writeln!(w, "{} {} {}{state}", style.bold("backups"), self.build_id, self.action.name())?;
        if let Some(r) = &self.recovered {
            writeln!(w, "  settled   {}", sanitize(&r.describe()))?;
        }
        if let Some(r) = &self.restored {
            writeln!(w, "  restore   {}{}", r.backup, if self.dry_run { " would be put back:" } else { " put back:" })?;
            for s in &r.steps {
                writeln!(w, "    {:<8} {}", s.action.name(), s.file)?;
            }
            if let Some(p) = &r.saved_as {
                writeln!(w, "  saved     the replaced files in {}", p.display())?;
            }
        }
        if let Some(p) = &self.pruned {
            for r in &p.removed {
                writeln!(w, "  {} {}", if self.dry_run { "would remove" } else { "removed" }, sanitize(&r.label()))?;
            }
        }
        let l = &self.listing;
        if let Some(j) = &l.journal {
            writeln!(w, "  {}: {}", style.severity(crate::report::Severity::Error), sanitize(&j.describe()))?;
        }
        let row = |w: &mut dyn Write, what: &str, x: &Leftover| -> io::Result<()> {
            let mut extra = Vec::new();
            if let Some(m) = &x.modified {
                extra.push(m.clone());
            }
            if x.in_use {
                extra.push(format!("in use by {}", x.holders.join(", ")));
            }
            if let Some(s) = &x.source {
                extra.push(format!("fork of {s}"));
            }
            if !x.contents.is_empty() {
                extra.push(x.contents.join(" "));
            }
            writeln!(
                w,
                "  {what:<9} {:<40} {:>10}  {}",
                sanitize(&x.name),
                human_bytes(x.bytes),
                sanitize(&extra.join(", "))
            )
        };
        if l.backups.is_empty() {
            writeln!(w, "  backups   none")?;
        }
        for b in &l.backups {
            row(w, "backup", b)?;
        }
        for x in &l.work_folders {
            row(w, "work", x)?;
        }
        for x in &l.forks {
            row(w, "fork", x)?;
        }
        for x in &l.mounts {
            row(w, "mount", x)?;
        }
        let total: u64 = l.backups.iter().chain(&l.work_folders).chain(&l.forks).map(|x| x.bytes).sum();
        writeln!(w, "  total     {}", human_bytes(total))?;
        super::edit_report_render::render_outcome_tail(w, self.caches.as_ref(), &self.notes, &self.next_steps)
    }
}
