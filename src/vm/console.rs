//! The guest's serial console, captured to a file by the VMM, read as it grows; and the watch
//! loop that decides when a boot is over (marker seen and settled, panic, VM stopped, timeout).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use regex::Regex;

use super::Evidence;
use super::net::{HealthTarget, get_health};

/// Lines kept in memory; a guest that floods its console is still watched, only not stored.
const MAX_LINES: usize = 100_000;
/// Longest line kept (a flood without newlines is cut into pieces).
const MAX_LINE: usize = 16 * 1024;

/// A console log file read incrementally.
#[derive(Debug)]
pub struct Console {
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
    lines: Vec<String>,
    dropped: usize,
    bytes: u64,
}

impl Console {
    pub fn new(path: &Path) -> Self {
        Console { path: path.to_path_buf(), pos: 0, partial: Vec::new(), lines: Vec::new(), dropped: 0, bytes: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the guest has written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Read what was appended; returns the index of the first new complete line.
    pub fn poll(&mut self) -> io::Result<usize> {
        let first_new = self.lines.len();
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(first_new),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        f.take(8 << 20).read_to_end(&mut buf)?;
        self.pos += buf.len() as u64;
        self.bytes += buf.len() as u64;
        for &b in &buf {
            if b == b'\n' || self.partial.len() >= MAX_LINE {
                self.push_line();
                if b == b'\n' {
                    continue;
                }
            }
            self.partial.push(b);
        }
        Ok(first_new)
    }

    /// Take an unterminated last line as a line (at the end of a boot).
    pub fn flush(&mut self) -> usize {
        let first_new = self.lines.len();
        if !self.partial.is_empty() {
            self.push_line();
        }
        first_new
    }

    fn push_line(&mut self) {
        let raw = std::mem::take(&mut self.partial);
        let text = String::from_utf8_lossy(&raw);
        let text = strip_escapes(text.trim_end_matches(['\r', '\n'])).replace('\r', "");
        if self.lines.len() < MAX_LINES {
            self.lines.push(text);
        } else {
            self.dropped += 1;
        }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Lines not stored because the console was flooded.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The whole captured text.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// `line` without terminal escape sequences: systemd colours its status lines on a serial console
/// (`[  OK  ] Started \x1b[0;1;39menvd.service\x1b[0m - Env Daemon Service.`), and the marker,
/// the failure rules and the report read the text. Removes CSI sequences (ESC `[`, parameter and
/// intermediate bytes, one final byte in `@`..`~`, ECMA-48) and other ESC sequences (ECMA-35).
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // CSI: parameters and intermediates (0x20..=0x3f), then the final byte.
            while chars.next_if(|c| (' '..='?').contains(c)).is_some() {}
            chars.next_if(|c| ('@'..='~').contains(c));
        } else {
            // ESC, intermediates (0x20..=0x2f), one final byte (`ESC ( B`, `ESC c`), ECMA-35.
            while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
            chars.next_if(|c| ('0'..='~').contains(c));
        }
    }
    out
}

/// A running VMM process, as the watch loop sees it.
pub trait VmProcess {
    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> io::Result<Option<ExitStatus>>;
}

impl VmProcess for std::process::Child {
    fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.try_wait()
    }
}

/// What to wait for.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub marker: Regex,
    pub timeout: Duration,
    /// After the marker, how long no failure may follow.
    pub settle: Duration,
    /// Give up early when the guest prints nothing within this time (the KVM probe).
    pub first_output: Option<Duration>,
    /// Give up early when the guest, having printed, prints nothing more for this long before
    /// the kernel runs init (the KVM probe: nested KVM can stall a guest in early boot, e.g. at
    /// "APIC: Switch to symmetric I/O mode setup", where the same guest under TCG boots).
    pub stall_before_init: Option<Duration>,
    /// Probe envd's `GET /health` here while the guest runs.
    pub health: Option<HealthTarget>,
    /// PID 1 counts as alive once it has run this long (since the kernel's `Run ... as init
    /// process` line) with no failure.
    pub alive_after: Duration,
    /// The boot is decided (and, after `settle`, ends) once evidence at least this strong is seen.
    pub goal: Evidence,
}

impl WatchConfig {
    /// Marker-only watching (the Firecracker API tests, the KVM probe).
    pub fn marker(marker: Regex, timeout: Duration, settle: Duration) -> WatchConfig {
        WatchConfig {
            marker,
            timeout,
            settle,
            first_output: None,
            stall_before_init: None,
            health: None,
            alive_after: DEFAULT_ALIVE_AFTER,
            goal: Evidence::Marker,
        }
    }
}

/// Default time PID 1 must keep running for `alive` evidence.
pub const DEFAULT_ALIVE_AFTER: Duration = Duration::from_secs(5);
/// Time between `GET /health` attempts, and each attempt's timeout.
const HEALTH_EVERY: Duration = Duration::from_millis(200);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(700);

/// Why watching ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Marker seen and nothing failed within the settle time (VM still running).
    Settled,
    /// The VMM process exited.
    Exited,
    /// A kernel panic (or envd service failure) was seen; trailing lines collected.
    Failed,
    /// The guest halted or powered off (a `reboot:` line) and the VMM kept running.
    Halted,
    Timeout,
    /// No console output within `first_output`.
    NoOutput,
    /// Console output stopped for `stall_before_init` before the kernel ran init.
    Stalled,
}

/// A console line with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    pub line: usize,
    pub text: String,
}

/// What the watch saw.
#[derive(Debug, Clone)]
pub struct Watched {
    pub end: End,
    pub exit: Option<ExitStatus>,
    pub marker: Option<Line>,
    pub marker_at: Option<Duration>,
    /// The first line that means failure (kernel panic, envd service exit).
    pub failure: Option<Line>,
    pub first_output_at: Option<Duration>,
    pub elapsed: Duration,
    /// The kernel's `Run /sbin/init as init process` line, and when it appeared.
    pub init: Option<Line>,
    pub init_at: Option<Duration>,
    /// The first 2xx answer to `GET /health`: status and time.
    pub health: Option<(u16, Duration)>,
    /// The last non-2xx answer or error of the health probe (for the report).
    pub health_last_error: Option<String>,
    /// When PID 1 had been running `alive_after` with no failure.
    pub alive_at: Option<Duration>,
}

impl Watched {
    /// The strongest evidence seen (a failure voids all of it).
    pub fn evidence(&self) -> Option<Evidence> {
        if self.failure.is_some() {
            return None;
        }
        if self.health.is_some() {
            Some(Evidence::Health)
        } else if self.marker.is_some() {
            Some(Evidence::Marker)
        } else if self.alive_at.is_some() {
            Some(Evidence::Alive)
        } else {
            None
        }
    }
}

/// The kernel's line when it starts PID 1 (`init/main.c` `run_init_process`, KERN_INFO).
pub fn init_line(line: &str) -> bool {
    line.contains("Run ") && line.contains(" as init process")
}

/// What tmpl's init wrapper (templates/init-wrapper.sh) prints when envd exits and it restarts it.
pub const WRAPPER_ENVD_EXITED: &str = "tmpl-init: envd exited with status";

/// Lines that end a boot as failed, whenever they appear: a kernel panic, systemd seeing
/// envd.service exit, or tmpl's wrapper restarting an envd that exited.
pub fn is_failure_line(line: &str) -> bool {
    line.contains("Kernel panic - not syncing")
        || (line.contains("envd.service")
            && (line.contains("Main process exited") || line.contains("Failed with result")))
        || line.contains(WRAPPER_ENVD_EXITED)
}

/// Lines that say the guest has stopped on purpose.
fn is_halt_line(line: &str) -> bool {
    line.contains("reboot: Power down")
        || line.contains("reboot: System halted")
        || line.contains("reboot: Restarting system")
}

/// Poll the console and the process until the boot is decided.
pub fn watch(proc: &mut dyn VmProcess, console: &mut Console, cfg: &WatchConfig) -> io::Result<Watched> {
    let start = Instant::now();
    let tail = Duration::from_millis(800);
    let mut w = Watched {
        end: End::Timeout,
        exit: None,
        marker: None,
        marker_at: None,
        failure: None,
        first_output_at: None,
        elapsed: Duration::ZERO,
        init: None,
        init_at: None,
        health: None,
        health_last_error: None,
        alive_at: None,
    };
    let mut failure_at: Option<Instant> = None;
    let mut halt_at: Option<Instant> = None;
    let mut goal_at: Option<Duration> = None;
    let mut next_probe = Duration::ZERO;
    let (mut seen_bytes, mut last_output_at) = (0, Duration::ZERO);
    loop {
        let exit = proc.exited()?;
        let first_new = console.poll()?;
        let first_new = if exit.is_some() { first_new.min(console.flush()) } else { first_new };
        let now = start.elapsed();
        if w.first_output_at.is_none() && console.bytes() > 0 {
            w.first_output_at = Some(now);
        }
        if console.bytes() != seen_bytes {
            (seen_bytes, last_output_at) = (console.bytes(), now);
        }
        for (i, text) in console.lines()[first_new..].iter().enumerate() {
            let n = first_new + i + 1;
            if w.failure.is_none() && is_failure_line(text) {
                w.failure = Some(Line { line: n, text: text.clone() });
                failure_at = Some(Instant::now());
            }
            if w.marker.is_none() && w.failure.is_none() && cfg.marker.is_match(text) {
                w.marker = Some(Line { line: n, text: text.clone() });
                w.marker_at = Some(now);
            }
            if halt_at.is_none() && is_halt_line(text) {
                halt_at = Some(Instant::now());
            }
            if w.init.is_none() && init_line(text) {
                w.init = Some(Line { line: n, text: text.clone() });
                w.init_at = Some(now);
            }
        }
        if exit.is_none()
            && w.failure.is_none()
            && w.health.is_none()
            && now >= next_probe
            && let Some(target) = &cfg.health
        {
            match get_health(target, HEALTH_TIMEOUT) {
                Ok(code) if (200..300).contains(&code) => w.health = Some((code, start.elapsed())),
                Ok(code) => w.health_last_error = Some(format!("HTTP {code}")),
                Err(e) => w.health_last_error = Some(e.to_string()),
            }
            next_probe = start.elapsed() + HEALTH_EVERY;
        }
        let now = start.elapsed();
        if w.alive_at.is_none() && w.failure.is_none() && w.init_at.is_some_and(|t| now >= t + cfg.alive_after) {
            w.alive_at = Some(now);
        }
        if goal_at.is_none() && w.evidence().is_some_and(|e| e >= cfg.goal) {
            goal_at = Some(now);
        }
        w.elapsed = now;
        if let Some(st) = exit {
            w.exit = Some(st);
            w.end = if w.failure.is_some() { End::Failed } else { End::Exited };
            return Ok(w);
        }
        if failure_at.is_some_and(|t| t.elapsed() >= tail) {
            w.end = End::Failed;
            return Ok(w);
        }
        if w.failure.is_none() && goal_at.is_some_and(|g| now >= g + cfg.settle) {
            w.end = End::Settled;
            return Ok(w);
        }
        if w.failure.is_none() && halt_at.is_some_and(|t| t.elapsed() >= tail) {
            w.end = End::Halted;
            return Ok(w);
        }
        if let Some(limit) = cfg.first_output
            && w.first_output_at.is_none()
            && now >= limit
        {
            w.end = End::NoOutput;
            return Ok(w);
        }
        if let Some(limit) = cfg.stall_before_init
            && w.first_output_at.is_some()
            && w.init.is_none()
            && w.failure.is_none()
            && now >= last_output_at + limit
        {
            w.end = End::Stalled;
            return Ok(w);
        }
        if now >= cfg.timeout {
            w.end = End::Timeout;
            return Ok(w);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;

    /// A process that "runs" while a script appends lines to the console at given times.
    struct Scripted {
        file: File,
        start: Instant,
        steps: Vec<(u64, &'static str)>,
        exit_after: Option<u64>,
    }

    impl VmProcess for Scripted {
        fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
            let ms = self.start.elapsed().as_millis() as u64;
            while let Some(&(t, s)) = self.steps.first() {
                if t > ms {
                    break;
                }
                self.file.write_all(s.as_bytes())?;
                self.steps.remove(0);
            }
            Ok(self.exit_after.filter(|&t| ms >= t).map(|_| ExitStatus::from_raw(0)))
        }
    }

    fn run(steps: Vec<(u64, &'static str)>, exit_after: Option<u64>, first_output: Option<u64>) -> (Watched, Console) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let file = File::create(&path).unwrap();
        let mut p = Scripted { file, start: Instant::now(), steps, exit_after };
        let mut c = Console::new(&path);
        let cfg = WatchConfig {
            first_output: first_output.map(Duration::from_millis),
            ..WatchConfig::marker(
                Regex::new("tmpl-init: starting envd").unwrap(),
                Duration::from_millis(1500),
                Duration::from_millis(300),
            )
        };
        let w = watch(&mut p, &mut c, &cfg).unwrap();
        (w, c)
    }

    #[test]
    fn alive_counts_from_the_init_line_and_a_panic_voids_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let cfg = WatchConfig {
            alive_after: Duration::from_millis(300),
            goal: Evidence::Alive,
            ..WatchConfig::marker(Regex::new("never").unwrap(), Duration::from_millis(2000), Duration::from_millis(200))
        };
        let steps = vec![(0, "[    0.5] Run /sbin/init as init process\n")];
        let mut p = Scripted { file: File::create(&path).unwrap(), start: Instant::now(), steps, exit_after: None };
        let w = watch(&mut p, &mut Console::new(&path), &cfg).unwrap();
        assert_eq!((w.end, w.evidence()), (End::Settled, Some(Evidence::Alive)));
        assert!(w.alive_at.unwrap() >= w.init_at.unwrap() + Duration::from_millis(300));
        assert!(w.elapsed < Duration::from_millis(1500), "stopped after the settle time, not the timeout");

        let path = dir.path().join("console2.log");
        let steps = vec![
            (0, "Run /sbin/init as init process\n"),
            (100, "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\n"),
        ];
        let mut p = Scripted { file: File::create(&path).unwrap(), start: Instant::now(), steps, exit_after: None };
        let w = watch(&mut p, &mut Console::new(&path), &cfg).unwrap();
        assert_eq!((w.end, w.evidence(), w.alive_at), (End::Failed, None, None));

        // Init that never runs long enough: the marker goal is not met by alive evidence.
        let path = dir.path().join("console3.log");
        let steps = vec![(0, "Run /sbin/init as init process\n")];
        let cfg = WatchConfig { goal: Evidence::Marker, ..cfg };
        let mut p = Scripted { file: File::create(&path).unwrap(), start: Instant::now(), steps, exit_after: None };
        let w = watch(&mut p, &mut Console::new(&path), &cfg).unwrap();
        assert_eq!((w.end, w.evidence()), (End::Timeout, Some(Evidence::Alive)));
    }

    #[test]
    fn output_that_stops_before_init_is_a_stall_and_after_init_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WatchConfig {
            stall_before_init: Some(Duration::from_millis(300)),
            ..WatchConfig::marker(Regex::new("never").unwrap(), Duration::from_millis(1500), Duration::from_millis(100))
        };
        let watch_steps = |name: &str, steps: Vec<(u64, &'static str)>| {
            let path = dir.path().join(name);
            let mut p = Scripted { file: File::create(&path).unwrap(), start: Instant::now(), steps, exit_after: None };
            watch(&mut p, &mut Console::new(&path), &cfg).unwrap()
        };
        let w = watch_steps(
            "stall.log",
            vec![(0, "Linux version 6.1\n"), (100, "APIC: Switch to symmetric I/O mode setup\n")],
        );
        assert_eq!(w.end, End::Stalled);
        assert!(w.elapsed >= Duration::from_millis(400) && w.elapsed < Duration::from_millis(1000), "{w:?}");
        // Silence after init (envd as PID 1 prints little) is no stall: the boot runs to its end.
        let w = watch_steps("quiet.log", vec![(0, "Linux version 6.1\n"), (50, "Run /sbin/init as init process\n")]);
        assert_eq!(w.end, End::Timeout);
        // Steady output before init is no stall either.
        let steps = (0..12).map(|i| (i * 100, "[    0.1] probing\n")).collect();
        let w = watch_steps("busy.log", steps);
        assert!(w.elapsed >= Duration::from_millis(1100), "{w:?}");
    }

    #[test]
    fn the_wrappers_restart_line_fails_the_boot() {
        let (w, _) = run(
            vec![
                (0, "tmpl-init: starting envd (/usr/bin/envd)\n"),
                (50, "tmpl-init: envd exited with status 2; restarting in 1s\n"),
            ],
            None,
            None,
        );
        assert!(w.marker.is_some());
        assert_eq!(w.failure.unwrap().line, 2);
        assert_eq!(w.end, End::Failed);
    }

    #[test]
    fn systemd_colours_are_stripped_so_the_marker_matches() {
        let line = "[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39menvd.service\x1b[0m - Env Daemon Service.";
        assert_eq!(strip_escapes(line), "[  OK  ] Started envd.service - Env Daemon Service.");
        assert_eq!(strip_escapes("a\x1b[?25lb\x1b(Bc\x1b"), "abc");
        assert_eq!(strip_escapes("plain [ text ]"), "plain [ text ]");
        // Through the console reader, as boot-test sees it, against boot-test's default expectation.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, format!("boot\r\n{line}\r\n")).unwrap();
        let mut c = Console::new(&path);
        c.poll().unwrap();
        assert_eq!(c.lines()[1], "[  OK  ] Started envd.service - Env Daemon Service.");
        assert!(Regex::new(crate::vm::DEFAULT_EXPECT).unwrap().is_match(&c.lines()[1]));
        assert!(!Regex::new(crate::vm::DEFAULT_EXPECT).unwrap().is_match(line), "the raw line does not match");
    }

    #[test]
    fn marker_then_quiet_settles() {
        let (w, c) = run(vec![(0, "boot\r\n"), (50, "tmpl-init: starting envd\r\n")], None, None);
        assert_eq!(w.end, End::Settled);
        assert_eq!(w.marker.unwrap().line, 2);
        assert!(w.marker_at.unwrap() >= Duration::from_millis(40));
        assert_eq!(c.lines(), ["boot", "tmpl-init: starting envd"]);
    }

    #[test]
    fn panic_after_marker_fails_within_settle() {
        let (w, _) = run(
            vec![
                (0, "tmpl-init: starting envd\n"),
                (100, "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\n"),
            ],
            None,
            None,
        );
        assert_eq!(w.end, End::Failed);
        assert_eq!(w.failure.unwrap().line, 2);
        assert!(w.marker.is_some());
    }

    #[test]
    fn exit_timeout_no_output_and_partial_lines() {
        let (w, c) = run(vec![(0, "Run /sbin/init\n"), (50, "no newline at the end")], Some(150), None);
        assert_eq!(w.end, End::Exited);
        assert!(w.marker.is_none() && w.exit.is_some());
        assert_eq!(c.lines().last().unwrap(), "no newline at the end");
        let (w, _) = run(vec![(0, "booting\n")], None, None);
        assert_eq!(w.end, End::Timeout);
        assert!(w.elapsed >= Duration::from_millis(1500));
        let (w, _) = run(vec![], None, Some(200));
        assert_eq!(w.end, End::NoOutput);
        let (w, _) = run(vec![(0, "x\n"), (20, "reboot: System halted\n")], None, None);
        assert_eq!(w.end, End::Halted);
    }
}
