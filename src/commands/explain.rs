//! `tmpl explain TEXT...|-`: decode a pasted error, panic or whole console log (stdin with `-` or
//! no argument), or describe a finding id.

use std::io::{self, Write};

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::checks;
use crate::error::{Error, Result};
use crate::explain::{self, Explanation};
use crate::report::{Report, Style, sanitize};

/// Largest input read from stdin (a long console log is a few hundred KiB).
const MAX_INPUT: u64 = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when something was recognised, 1 when nothing was.")]
pub struct Args {
    /// The text to decode (several arguments are joined as lines); `-` or nothing reads stdin.
    /// A finding id (e.g. snapfile.crc-mismatch) shows what it means.
    #[arg(value_name = "TEXT")]
    pub text: Vec<String>,
}

/// A finding id given as input.
#[derive(Debug, Serialize)]
pub struct FindingInfo {
    pub id: String,
    pub title: String,
    pub hint: String,
    /// Decoding rules whose causes this finding confirms.
    pub explains: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ExplainReport {
    pub input_lines: usize,
    pub recognised: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<FindingInfo>,
    pub explanations: Vec<Explanation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report for ExplainReport {
    fn command(&self) -> &'static str {
        "explain"
    }

    fn ok(&self) -> bool {
        self.recognised
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        if let Some(f) = &self.finding {
            writeln!(w, "{}: {}", style.bold(&f.id), f.title)?;
            writeln!(w, "  fix:      {}", f.hint)?;
            if !f.explains.is_empty() {
                writeln!(w, "  confirms: {}", f.explains.join(", "))?;
            }
            return Ok(());
        }
        if self.explanations.is_empty() {
            writeln!(
                w,
                "Nothing recognised in {} line(s). tmpl knows kernel panics (Attempted to kill init, Requested init, \
                 No working init found, VFS, EXT4-fs), Firecracker snapshot errors (CRC64, magic, version, restore \
                 queue), envd flag errors and fork/exec failures.",
                self.input_lines
            )?;
            return Ok(());
        }
        render_explanations(w, style, &self.explanations, "")?;
        for n in &self.notes {
            writeln!(w, "note: {n}")?;
        }
        Ok(())
    }
}

/// Human rendering of explanations, shared with `boot-test`.
pub fn render_explanations(w: &mut dyn Write, style: &Style, list: &[Explanation], indent: &str) -> io::Result<()> {
    for e in list {
        writeln!(w, "{indent}{} {}", style.bold(&format!("line {}:", e.line)), sanitize(&e.text))?;
        writeln!(w, "{indent}  means:  {}", sanitize(&e.meaning))?;
        writeln!(w, "{indent}  cause:  {}", sanitize(&e.cause))?;
        for d in &e.details {
            writeln!(w, "{indent}  detail: {}", sanitize(d))?;
        }
        if !e.findings.is_empty() {
            writeln!(w, "{indent}  check:  {}", e.findings.join(", "))?;
        }
        if !e.commands.is_empty() {
            writeln!(w, "{indent}  run:    {}", e.commands.join("   "))?;
        }
    }
    Ok(())
}

fn read_stdin(ctx: &Ctx) -> Result<String> {
    if ctx.input_is_terminal() {
        ctx.note("tmpl explain: reading the text to decode from standard input; paste it, then press Ctrl-D (or pass it as arguments, or pipe it in)");
    }
    let buf = ctx.read_input(MAX_INPUT).map_err(|e| Error::read("<stdin>", e))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Decode `text` (or describe it, when it is a finding id).
pub fn explain_text(text: &str) -> ExplainReport {
    let trimmed = text.trim();
    if let Some(c) = checks::find(trimmed) {
        let explains = explain::RULES.iter().filter(|r| r.findings.contains(&c.id)).map(|r| r.key).collect();
        return ExplainReport {
            input_lines: 1,
            recognised: true,
            finding: Some(FindingInfo {
                id: c.id.to_string(),
                title: c.title.to_string(),
                hint: c.hint.to_string(),
                explains,
            }),
            explanations: Vec::new(),
            notes: Vec::new(),
        };
    }
    let d = explain::explain(text);
    ExplainReport {
        input_lines: d.lines,
        recognised: !d.explanations.is_empty(),
        finding: None,
        explanations: d.explanations,
        notes: d.notes,
    }
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let text = if args.text.is_empty() || args.text == ["-"] { read_stdin(ctx)? } else { args.text.join("\n") };
    Ok(Outcome::Explain(explain_text(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Mode, Output};

    fn explain_stdin(stdin_terminal: bool) -> String {
        let (out, captured) =
            Output::capture(Mode { stdin_terminal, ..Mode::default() }, b"CRC64 validation failed: 1\n");
        let ctx = Ctx::new(None, &|_| None, &out);
        let outcome = run(Args { text: Vec::new() }, &ctx).unwrap();
        assert_eq!(outcome.exit_code(), crate::exit_code::OK, "the piped text was read and recognised");
        captured.stderr()
    }

    /// With no argument on a terminal, explain says it reads standard input instead of waiting
    /// silently; from a pipe it says nothing.
    #[test]
    fn says_it_reads_standard_input_on_a_terminal() {
        assert!(explain_stdin(true).contains("reading the text to decode from standard input"));
        assert_eq!(explain_stdin(false), "");
    }
}
