//! Where results go: one report struct per command, rendered as human text or as one JSON
//! document on stdout; errors and progress on stderr. The only place that decides formats,
//! colour and terminals.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::Error;
use crate::exit_code;
use crate::progress::{NoProgress, Progress};
use crate::report::{Report, Style};

/// Version of the JSON contract (bumped on incompatible changes).
pub const FORMAT_VERSION: u32 = 1;

/// How output is produced for this run.
#[derive(Debug, Clone)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    pub progress: bool,
}

#[derive(Serialize)]
struct Envelope<'a, R: Serialize> {
    format_version: u32,
    command: &'static str,
    ok: bool,
    #[serde(flatten)]
    report: &'a R,
}

#[derive(Serialize)]
struct ErrorDoc<'a> {
    format_version: u32,
    command: &'a str,
    ok: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'static str,
    message: String,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    details: &'a [String],
    exit_code: u8,
}

impl Output {
    pub fn new(json: bool, quiet: bool, verbose: u8, color: Option<bool>, no_progress: bool) -> Self {
        let color = color.unwrap_or_else(|| io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
        let progress = !no_progress && !json && !quiet && io::stderr().is_terminal();
        Output { json, quiet, verbose, color, progress }
    }

    /// Plain output for tests: no colour, no progress.
    pub fn plain() -> Self {
        Output { json: false, quiet: false, verbose: 0, color: false, progress: false }
    }

    fn style(&self) -> Style {
        Style { color: self.color, verbose: self.verbose > 0 }
    }

    /// Write a report to stdout and return the exit code it implies.
    pub fn emit<R: Report>(&self, report: &R) -> u8 {
        let code = if report.ok() { exit_code::OK } else { report.failure_code() };
        if self.quiet {
            return code;
        }
        let mut stdout = io::stdout().lock();
        let res = if self.json {
            let env = Envelope { format_version: FORMAT_VERSION, command: report.command(), ok: report.ok(), report };
            serde_json::to_writer_pretty(&mut stdout, &env).map_err(io::Error::other).and_then(|_| writeln!(stdout))
        } else {
            report.render(&mut stdout, &self.style())
        };
        match res {
            Ok(()) => code,
            // A closed pipe (`tmpl verify | head`) is not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
            Err(e) => {
                eprintln!("tmpl: error: writing output: {e}");
                exit_code::ENVIRONMENT
            }
        }
    }

    /// Report an error (stderr, and a JSON document on stdout in JSON mode); return its code.
    pub fn error(&self, command: &str, err: &Error) -> u8 {
        let code = err.exit_code();
        eprintln!("tmpl: error: {err}");
        let mut src = std::error::Error::source(err);
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        for d in err.details() {
            eprintln!("  - {d}");
        }
        if self.json && !self.quiet {
            let doc = ErrorDoc {
                format_version: FORMAT_VERSION,
                command,
                ok: false,
                error: ErrorBody {
                    kind: err.kind().name(),
                    message: err.to_string(),
                    details: err.details(),
                    exit_code: code,
                },
            };
            let mut stdout = io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut stdout, &doc);
            let _ = writeln!(stdout);
        }
        code
    }

    /// A note for the operator on stderr (suppressed by `-q` and in JSON mode unless `-v`).
    pub fn note(&self, msg: &str) {
        if !self.quiet && (!self.json || self.verbose > 0) {
            eprintln!("{msg}");
        }
    }

    /// Debug detail on stderr with `-v`.
    pub fn debug(&self, msg: &str) {
        if self.verbose > 0 {
            eprintln!("tmpl: {msg}");
        }
    }

    /// Stdout for commands whose result is a byte stream (`inspect --path P --cat`), not a report.
    pub fn raw_stdout(&self) -> io::StdoutLock<'static> {
        io::stdout().lock()
    }

    /// A progress sink: a bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Box<dyn Progress> {
        if self.progress { Box::new(Bar::default()) } else { Box::new(NoProgress) }
    }
}

/// indicatif-backed progress (stderr).
#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let pb = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        if let Ok(mut g) = self.bar.lock()
            && let Some(old) = g.replace(pb)
        {
            old.finish_and_clear();
        }
    }

    fn start_items(&self, what: &str, total: u64) {
        let pb = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:24} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        if let Ok(mut g) = self.bar.lock()
            && let Some(old) = g.replace(pb)
        {
            old.finish_and_clear();
        }
    }

    fn inc(&self, n: u64) {
        if let Ok(g) = self.bar.lock()
            && let Some(pb) = g.as_ref()
        {
            pb.inc(n);
        }
    }

    fn finish(&self) {
        if let Ok(mut g) = self.bar.lock()
            && let Some(pb) = g.take()
        {
            pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_template_is_valid() {
        assert!(
            indicatif::ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
            )
            .is_ok()
        );
    }
}
