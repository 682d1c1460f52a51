//! Where results go: one report struct per command, rendered as human text or as one JSON
//! document on the output's stdout; notes, errors and progress on its stderr. The only place that
//! decides formats, colour and terminals.
//!
//! An [`Output`] writes to any pair of writers (and reads any input for commands that take
//! stdin): [`Output::stdio`] is the process's, [`Output::capture`] keeps everything in memory for
//! tests.

use std::io::{self, IsTerminal, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::exit_code;
use crate::progress::{NoProgress, Progress};
use crate::report::{Report, Style};

/// Version of the JSON contract (bumped on incompatible changes).
pub const FORMAT_VERSION: u32 = 1;

/// How output is produced for this run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    pub progress: bool,
    /// The input is a terminal (a command reading it says so first).
    pub stdin_terminal: bool,
}

impl Mode {
    /// The mode of a run whose stdout/stderr are the process's: colour and progress only on a
    /// terminal (`color`: `Some` forces it either way), never with `NO_COLOR`.
    pub fn for_terminal(json: bool, quiet: bool, verbose: u8, color: Option<bool>, no_progress: bool) -> Self {
        let color = color.unwrap_or_else(|| {
            auto_color(
                io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").is_some(),
                std::env::var("TERM").ok().as_deref(),
            )
        });
        let progress = !no_progress && !json && !quiet && io::stderr().is_terminal();
        Mode { json, quiet, verbose, color, progress, stdin_terminal: io::stdin().is_terminal() }
    }

    /// Styling for human output.
    pub fn style(&self) -> Style {
        Style { color: self.color, verbose: self.verbose > 0 }
    }
}

/// Colour by default: only on a terminal, not with `NO_COLOR` set (no-color.org), not on a
/// `TERM=dumb` terminal (which cannot show it).
pub fn auto_color(stdout_terminal: bool, no_color: bool, term: Option<&str>) -> bool {
    stdout_terminal && !no_color && term != Some("dumb")
}

type Sink = Mutex<Box<dyn Write + Send>>;

/// The I/O of one run: where results, notes and errors are written, and the input commands read
/// with `-`.
pub struct Output {
    pub mode: Mode,
    stdout: Sink,
    stderr: Sink,
    stdin: Mutex<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// What [`Output::capture`] collected.
#[derive(Clone, Default)]
pub struct Captured {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn stdout(&self) -> Vec<u8> {
        lock(&self.stdout).clone()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }
}

/// A writer into shared memory (for [`Output::capture`]).
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The JSON document of a run that ended in an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub format_version: u32,
    pub command: String,
    pub ok: bool,
    pub error: ErrorBody,
}

/// What failed, in an [`ErrorDoc`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    pub exit_code: u8,
}

#[derive(Serialize)]
struct Envelope<'a, R: Serialize> {
    format_version: u32,
    command: &'static str,
    ok: bool,
    #[serde(flatten)]
    report: &'a R,
}

impl Output {
    /// Any writers and input.
    pub fn new(
        mode: Mode,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
        stdin: Box<dyn Read + Send>,
    ) -> Self {
        Output { mode, stdout: Mutex::new(stdout), stderr: Mutex::new(stderr), stdin: Mutex::new(stdin) }
    }

    /// The process's stdout, stderr and stdin.
    pub fn stdio(mode: Mode) -> Self {
        Output::new(mode, Box::new(io::stdout()), Box::new(io::stderr()), Box::new(io::stdin()))
    }

    /// Everything in memory (no colour, no progress unless `mode` says so), with `stdin` as the
    /// input: for tests.
    pub fn capture(mode: Mode, stdin: &[u8]) -> (Self, Captured) {
        let c = Captured::default();
        let out = Output::new(
            mode,
            Box::new(Shared(c.stdout.clone())),
            Box::new(Shared(c.stderr.clone())),
            Box::new(io::Cursor::new(stdin.to_vec())),
        );
        (out, c)
    }

    pub fn style(&self) -> Style {
        self.mode.style()
    }

    /// Write a report and return the exit code it implies.
    pub fn emit<R: Report>(&self, report: &R) -> u8 {
        let code = if report.ok() { exit_code::OK } else { report.failure_code() };
        if self.mode.quiet {
            return code;
        }
        let mut stdout = lock(&self.stdout);
        let res = if self.mode.json {
            let env = Envelope { format_version: FORMAT_VERSION, command: report.command(), ok: report.ok(), report };
            serde_json::to_writer_pretty(&mut *stdout, &env).map_err(io::Error::other).and_then(|()| writeln!(stdout))
        } else {
            report.render(&mut *stdout, &self.style())
        };
        let res = res.and_then(|()| stdout.flush());
        drop(stdout);
        self.written(res, code)
    }

    /// Write raw bytes (`inspect --path P --cat`) through `write`; return the exit code.
    pub fn emit_bytes(&self, write: impl FnOnce(&mut dyn Write) -> Result<(), Error>) -> Result<u8, Error> {
        if self.mode.quiet {
            return Ok(exit_code::OK);
        }
        let mut stdout = lock(&self.stdout);
        let res = write(&mut *stdout).and_then(|()| stdout.flush().map_err(|e| Error::write("<stdout>", e)));
        drop(stdout);
        match res {
            Ok(()) => Ok(exit_code::OK),
            // A closed pipe (`tmpl inspect ... --cat | head`) is not an error.
            Err(e) if e.io_error().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) => Ok(exit_code::OK),
            Err(e) => Err(e),
        }
    }

    fn written(&self, res: io::Result<()>, code: u8) -> u8 {
        match res {
            Ok(()) => code,
            // A closed pipe (`tmpl verify | head`) is not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
            Err(e) => {
                self.stderr_line(&format!("tmpl: error: writing output: {e}"));
                exit_code::ENVIRONMENT
            }
        }
    }

    /// Report an error (stderr, and a JSON document on stdout in JSON mode); return its code.
    pub fn error(&self, command: &str, err: &Error) -> u8 {
        let code = err.exit_code();
        self.stderr_line(&format!("tmpl: error: {err}"));
        for cause in err.causes() {
            self.stderr_line(&format!("  caused by: {cause}"));
        }
        for d in err.details() {
            self.stderr_line(&format!("  - {d}"));
        }
        if self.mode.json && !self.mode.quiet {
            let doc = ErrorDoc {
                format_version: FORMAT_VERSION,
                command: command.to_string(),
                ok: false,
                error: ErrorBody {
                    kind: err.kind(),
                    message: err.to_string(),
                    details: err.details().to_vec(),
                    exit_code: code,
                },
            };
            let mut stdout = lock(&self.stdout);
            let _ = serde_json::to_writer_pretty(&mut *stdout, &doc);
            let _ = writeln!(stdout);
            let _ = stdout.flush();
        }
        code
    }

    fn stderr_line(&self, line: &str) {
        let mut e = lock(&self.stderr);
        let _ = writeln!(e, "{line}");
        let _ = e.flush();
    }

    /// A note for the operator on stderr (suppressed by `-q` and in JSON mode unless `-v`).
    pub fn note(&self, msg: &str) {
        if !self.mode.quiet && (!self.mode.json || self.mode.verbose > 0) {
            self.stderr_line(msg);
        }
    }

    /// Debug detail on stderr with `-v`.
    pub fn debug(&self, msg: &str) {
        if self.mode.verbose > 0 {
            self.stderr_line(&format!("tmpl: {msg}"));
        }
    }

    /// Read the input to its end, at most `cap` bytes (more is cut off).
    pub fn read_input(&self, cap: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        lock(&self.stdin).by_ref().take(cap).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// A progress sink: a bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Box<dyn Progress> {
        if self.mode.progress { Box::new(Bar::default()) } else { Box::new(NoProgress) }
    }
}

/// indicatif-backed progress (on the terminal's stderr).
#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

const BYTES_TEMPLATE: &str = "{msg:24} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";
const ITEMS_TEMPLATE: &str = "{msg:24} [{bar:30}] {human_pos}/{human_len} {rate} eta {eta}";

/// An item rate as a person reads it: `96759/s`, `12.5/s` (indicatif's `{per_sec}` prints
/// `96,759.1477/s`).
pub fn items_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".to_string()
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}

impl Bar {
    fn begin(&self, what: &str, total: u64, template: &str) {
        let pb = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(template) {
            let style = style.with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&items_rate(s.per_sec()));
            });
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        if let Some(old) = lock(&self.bar).replace(pb) {
            old.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.begin(what, total, BYTES_TEMPLATE);
    }

    fn start_items(&self, what: &str, total: u64) {
        self.begin(what, total, ITEMS_TEMPLATE);
    }

    fn inc(&self, n: u64) {
        if let Some(pb) = lock(&self.bar).as_ref() {
            pb.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(pb) = lock(&self.bar).take() {
            pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_templates_are_valid() {
        assert!(ProgressStyle::with_template(BYTES_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(ITEMS_TEMPLATE).is_ok());
    }

    #[test]
    fn errors_are_written_with_their_causes_and_as_json() {
        let (out, c) = Output::capture(Mode { json: true, ..Mode::default() }, b"");
        let err = Error::read("/nonexistent", io::Error::from_raw_os_error(2));
        assert_eq!(out.error("verify", &err), exit_code::INVALID_INPUT);
        let doc: ErrorDoc = serde_json::from_slice(&c.stdout()).unwrap();
        assert_eq!((doc.ok, doc.error.kind, doc.error.exit_code), (false, ErrorKind::Read, 3));
        assert!(c.stderr().starts_with("tmpl: error: cannot read /nonexistent: "), "{}", c.stderr());
        assert!(!c.stderr().contains("caused by"), "the cause is in the message already: {}", c.stderr());
    }

    #[test]
    fn no_colour_without_a_terminal_with_no_color_or_on_a_dumb_terminal() {
        assert!(auto_color(true, false, Some("xterm-256color")));
        assert!(auto_color(true, false, None));
        assert!(!auto_color(true, false, Some("dumb")));
        assert!(!auto_color(true, true, Some("xterm")));
        assert!(!auto_color(false, false, Some("xterm")));
    }

    #[test]
    fn item_rates_are_whole_numbers_without_separators() {
        assert_eq!(items_rate(96_759.147_7), "96759/s");
        assert_eq!(items_rate(2.25), "2.2/s");
        assert_eq!(items_rate(0.0), "0/s");
        assert_eq!(items_rate(f64::NAN), "0/s");
        // The key is wired into the items template.
        let style = ProgressStyle::with_template(ITEMS_TEMPLATE).unwrap();
        let _ = style.with_key("rate", |_: &indicatif::ProgressState, _: &mut dyn std::fmt::Write| {});
        assert!(ITEMS_TEMPLATE.contains("{rate}") && !ITEMS_TEMPLATE.contains("per_sec"));
    }

    #[test]
    fn input_is_read_up_to_its_cap() {
        let (out, _) = Output::capture(Mode::default(), b"0123456789");
        assert_eq!(out.read_input(4).unwrap(), b"0123");
    }
}
