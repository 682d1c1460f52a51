//! `tmpl verify`'s human output: the text rendering of [`VerifyReport`] (its JSON is the struct
//! itself). Kept beside the command, apart from the code that runs the checks.

use std::io::{self, Write};

use super::verify::*;
use crate::exit_code;
use crate::report::{Report, Severity, Style, human_bytes, render_findings, sanitize};

impl Report for VerifyReport {
    fn command(&self) -> &'static str {
        "verify"
    }

    fn ok(&self) -> bool {
        self.summary.failed == 0
    }

    /// A permission problem is the environment's (exit 4) even when other builds have findings:
    /// their results are in the report all the same.
    fn failure_code(&self) -> u8 {
        if self.summary.access_denied > 0 { exit_code::ENVIRONMENT } else { exit_code::FINDINGS }
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        for b in &self.builds {
            let t = &b.tally;
            let counts = match (t.errors, t.warnings) {
                (0, 0) => String::new(),
                (e, wn) => format!(" ({}, {})", plural(e, "error"), plural(wn, "warning")),
            };
            // A folder not named by a UUID (`verify ./copy-of-a-build/`) is shown by its path.
            let name = if b.build_id.is_nil() {
                sanitize(&b.path.display().to_string()).into_owned()
            } else {
                b.build_id.to_string()
            };
            writeln!(w, "{} {}{counts}", style.ok(b.ok), style.bold(&name))?;
            render_findings(w, style, &b.findings, "    ")?;
            for f in b.deep.iter().flatten() {
                let digest = match (&f.sha256, &f.expected_sha256) {
                    (Some(got), Some(want)) if got == want => "sha256 ok".to_string(),
                    (Some(_), Some(_)) => "SHA-256 MISMATCH".to_string(),
                    (_, None) if f.complete => "no sha256 recorded".to_string(),
                    _ => "not read to the end".to_string(),
                };
                if style.verbose || !f.ok {
                    writeln!(
                        w,
                        "    data  {:<52} {:>10} {}",
                        f.file,
                        human_bytes(f.bytes_hashed),
                        if f.ok { digest } else { format!("{digest}, FAILED") }
                    )?;
                }
            }
        }
        for l in &self.leftovers {
            writeln!(
                w,
                "{}: leftover.fork [{}]: {} in {} files, {}{}",
                style.severity(Severity::Warning),
                l.name,
                human_bytes(l.bytes),
                l.files,
                if l.in_use { "being written" } else { "an interrupted --fork" },
                l.source
                    .as_deref()
                    .map(|s| format!(" of {s} (tmpl backups {s} --clean removes it)"))
                    .unwrap_or_default()
            )?;
        }
        let s = &self.summary;
        let other = self
            .other_entries
            .map(|n| n.saturating_sub(self.leftovers.len()))
            .filter(|&n| n > 0)
            .map(|n| format!("; {} skipped", crate::report::count(n, "other entry", "other entries")))
            .unwrap_or_default();
        writeln!(
            w,
            "\n{} in {}: {} failed; {}, {}, {} info{other}",
            plural(s.builds, "build"),
            self.storage.display(),
            s.failed,
            plural(s.tally.errors, "error"),
            plural(s.tally.warnings, "warning"),
            s.tally.infos
        )?;
        if s.access_denied > 0 {
            writeln!(
                w,
                "{} could not be fully read: a permission is missing (access.denied above; exit 4)",
                plural(s.access_denied, "build")
            )?;
        }
        if let Some(d) = &self.deep {
            writeln!(
                w,
                "deep: {} data files, {} hashed ({} read) in {:.2} s: {:.0} MB/s on {} threads",
                d.files,
                human_bytes(d.bytes_hashed),
                human_bytes(d.bytes_read),
                d.seconds,
                d.mb_per_s,
                d.threads
            )?;
        }
        if let Some(r) = &self.remote {
            writeln!(
                w,
                "remote: {} requests ({} GET, {} HEAD), {} fetched",
                r.requests,
                r.get,
                r.head,
                human_bytes(r.bytes_read)
            )?;
        }
        if s.tally.infos > 0 && !style.verbose {
            writeln!(w, "(-v shows info findings; --json gives everything)")?;
        }
        Ok(())
    }
}

/// "1 error", "2 errors".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
