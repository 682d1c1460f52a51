//! `tmpl copy`'s human output: the text rendering of [`CopyReport`] (its JSON is the struct itself). Kept
//! beside the command, apart from the code that does the work.

use std::io::{self, Write};

use super::copy::*;
use crate::copy::{self, Action};
use crate::exit_code;
use crate::report::{Report, Style, human_bytes};

impl Report for CopyReport {
    fn command(&self) -> &'static str {
        "copy"
    }

    fn ok(&self) -> bool {
        matches!(self.status, Status::Planned | Status::Copied)
    }

    fn failure_code(&self) -> u8 {
        match self.status {
            Status::Refused => exit_code::REFUSED,
            Status::MissingAncestors => exit_code::INVALID_INPUT,
            _ => match &self.failure {
                Some(f) if f.verification => exit_code::FINDINGS,
                Some(f) if matches!(f.kind, "not-found" | "truncated") => exit_code::INVALID_INPUT,
                _ => exit_code::ENVIRONMENT,
            },
        }
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{} {} → {}", style.bold(&format!("copy {}", self.build)), self.from, self.to)?;
        for b in &self.builds {
            let role = match b.role {
                copy::Role::Build => "build",
                copy::Role::Ancestor => "ancestor",
            };
            let at = if b.complete_at_destination { " (complete at the destination)" } else { "" };
            writeln!(w, "  {role:<8} {}{at}", b.id)?;
        }
        for o in &self.objects {
            let what = match (o.action, self.dry_run) {
                (Action::Copy, true) => "copy",
                (Action::Replace, true) => "replace",
                (Action::Compare, _) => "compare (same size)",
                (Action::Copy | Action::Replace, false) if o.verified => "copied, verified",
                (Action::Copy | Action::Replace, false) => "not copied",
                (Action::Skip, _) => "skip (identical)",
            };
            if style.verbose || self.dry_run || !o.verified {
                writeln!(w, "    {:<64} {:>10}  {what}", o.key, human_bytes(o.size))?;
            }
        }
        for a in &self.missing_ancestors {
            writeln!(
                w,
                "{}: ancestor {a} is in neither storage: the copy would be unreadable",
                style.severity(crate::report::Severity::Error)
            )?;
        }
        for c in &self.conflicts {
            writeln!(w, "{}: {}: {}", style.severity(crate::report::Severity::Error), c.key, c.reason)?;
        }
        for l in &self.left_out {
            writeln!(w, "  not copied (nested): {l}")?;
        }
        if let Some(f) = &self.failure {
            writeln!(w, "{}: {}: {}", style.severity(crate::report::Severity::Error), f.key, f.error)?;
            writeln!(w, "  rolled back: {} objects deleted at the destination", f.rolled_back.len())?;
            for l in &f.left_behind {
                writeln!(w, "  LEFT BEHIND: {l}")?;
            }
        }
        let s = &self.summary;
        let verb = match self.status {
            Status::Planned => "would copy",
            Status::Copied => "copied",
            _ => "copied nothing:",
        };
        writeln!(
            w,
            "\n{verb} {} of {} objects ({}), {} identical skipped; {} requests to the source, {} to the destination",
            s.copied,
            s.objects,
            human_bytes(s.bytes_copied),
            s.skipped,
            s.source_requests,
            s.destination_requests
        )?;
        if self.status == Status::Refused {
            writeln!(w, "refused: the destination holds a different build with this ID (exit 5); nothing was written")?;
        }
        Ok(())
    }
}
