//! Findings and the report contract shared by every command.
//!
//! A [`Finding`] is data: a stable `id` (such as `snapfile.crc-mismatch`), a severity, the file it
//! is about, a message and a fix hint. Checks declare what they can report as [`Check`] constants
//! so that `tmpl explain` and the documentation can list every id, and a test can prove that each
//! emitted id is declared. A [`Report`] is one serde struct per command; the human text and the
//! `--json` document are both rendered from it (see `output`).

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::exit_code;

/// Severity of a finding. Only `error` makes `verify` exit 1 (`--strict` adds `warning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A kind of problem a check can report: its id, default severity, one-line title and default
/// fix hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub hint: &'static str,
}

/// One thing a check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    /// The file this is about: a build file name (`snapfile`), another build's file
    /// (`<build-id>/rootfs.ext4`), or a path inside the rootfs (`rootfs:/sbin/init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    /// A finding of `check` with its default severity and hint.
    pub fn new(check: &Check, file: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Finding {
            id: check.id.to_string(),
            severity: check.severity,
            file: file.into(),
            message: message.into(),
            hint: (!check.hint.is_empty()).then(|| check.hint.to_string()),
        }
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Counts of findings by severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

impl Tally {
    pub fn of(findings: &[Finding]) -> Self {
        let mut t = Tally::default();
        for f in findings {
            t.add(f.severity);
        }
        t
    }

    pub fn add(&mut self, s: Severity) {
        match s {
            Severity::Error => self.errors += 1,
            Severity::Warning => self.warnings += 1,
            Severity::Info => self.infos += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.errors += other.errors;
        self.warnings += other.warnings;
        self.infos += other.infos;
    }
}

/// Styling for human output (colour only on a terminal, never with `NO_COLOR`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    pub color: bool,
    pub verbose: bool,
}

impl Style {
    pub fn severity(&self, s: Severity) -> String {
        let label = s.label();
        if !self.color {
            return label.to_string();
        }
        let code = match s {
            Severity::Error => "1;31",
            Severity::Warning => "1;33",
            Severity::Info => "36",
        };
        format!("\x1b[{code}m{label}\x1b[0m")
    }

    pub fn bold(&self, s: &str) -> String {
        if self.color { format!("\x1b[1m{s}\x1b[0m") } else { s.to_string() }
    }

    pub fn ok(&self, ok: bool) -> String {
        let (label, code) = if ok { ("ok", "32") } else { ("FAILED", "1;31") };
        if self.color { format!("\x1b[{code}m{label}\x1b[0m") } else { label.to_string() }
    }
}

/// What every command returns: serialisable for `--json`, renderable for humans.
pub trait Report: Serialize {
    /// The subcommand name, as it appears in the JSON envelope.
    fn command(&self) -> &'static str;
    /// Whether the command achieved what was asked (false makes the exit code non-zero).
    fn ok(&self) -> bool;
    /// Exit code when not ok. Defaults to 1 (findings).
    fn failure_code(&self) -> u8 {
        exit_code::FINDINGS
    }
    /// Human rendering.
    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()>;
}

/// `n` and the noun in the number it takes: `count(1, "entry", "entries")` is "1 entry".
pub fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str, many: &str) -> String {
    if n == N::from(1) { format!("1 {one}") } else { format!("{n} {many}") }
}

/// Render findings as indented lines, used by several commands.
pub fn render_findings(w: &mut dyn Write, style: &Style, findings: &[Finding], indent: &str) -> io::Result<()> {
    for f in findings {
        if f.severity == Severity::Info && !style.verbose {
            continue;
        }
        let file = f.file.as_deref().map(|p| format!(" [{}]", sanitize(p))).unwrap_or_default();
        writeln!(w, "{indent}{}: {}{}: {}", style.severity(f.severity), f.id, file, sanitize(&f.message))?;
        if let Some(h) = &f.hint {
            writeln!(w, "{indent}    hint: {}", sanitize(h))?;
        }
    }
    Ok(())
}

/// Escape control characters so names read from images cannot drive the terminal.
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Human-readable byte size (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_right_number() {
        assert_eq!(count(1usize, "entry", "entries"), "1 entry");
        assert_eq!(count(0u64, "entry", "entries"), "0 entries");
        assert_eq!(count(2usize, "file", "files"), "2 files");
    }

    #[test]
    fn sanitize_escapes_terminal_controls() {
        assert_eq!(sanitize("plain"), "plain");
        assert_eq!(sanitize("a\x1b[2Jb"), "a\\u{1b}[2Jb");
    }

    #[test]
    fn tally_counts_by_severity() {
        let c = Check { id: "x.y", severity: Severity::Warning, title: "t", hint: "" };
        let fs = vec![Finding::new(&c, None, "m"), Finding::new(&c, None, "m").severity(Severity::Error)];
        assert_eq!(Tally::of(&fs), Tally { errors: 1, warnings: 1, infos: 0 });
        assert!(fs[0].hint.is_none());
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2 * 1024 * 1024), "2.0 MiB");
    }
}
