//! What envd accepts on its command line, era by era — the one table tmpl uses to lint wrapper
//! scripts, units and `--envd-arg` values (reference: e2b-formats.md §5, `packages/envd/main.go`).
//!
//! envd parses flags with Go's `flag` package: `-x` and `--x` are the same flag, values are
//! `-x=v` or `-x v` (booleans only `-x` or `-x=true`), parsing stops at the first non-flag
//! argument or `--`, and an unknown flag prints usage and exits with status 2 — which, when envd
//! is PID 1 or is exec'd by the init wrapper, is "Attempted to kill init! exitcode=0x00000200".

use serde::Serialize;

/// One flag and when envd accepted it. Dates are `YYYY-MM-DD` of the change in e2b-dev/infra.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlagSpec {
    pub name: &'static str,
    pub takes_value: bool,
    /// First date it was accepted (None: since the beginning).
    pub since: Option<&'static str>,
    /// First date it was no longer accepted (None: still accepted).
    pub until: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every envd flag there has been.
pub const FLAGS: &[FlagSpec] = &[
    FlagSpec {
        name: "port",
        takes_value: true,
        since: Some("2024-05-01"),
        until: None,
        meaning: "listen port (default 49983)",
    },
    FlagSpec { name: "version", takes_value: false, since: None, until: None, meaning: "print the version and exit" },
    FlagSpec {
        name: "commit",
        takes_value: false,
        since: Some("2025-07-01"),
        until: None,
        meaning: "print the source commit and exit",
    },
    FlagSpec {
        name: "debug",
        takes_value: false,
        since: None,
        until: Some("2025-07-02"),
        meaning: "old name of -isnotfc (print all logs to stdout)",
    },
    FlagSpec {
        name: "isnotfc",
        takes_value: false,
        since: Some("2025-07-02"),
        until: None,
        meaning: "run outside Firecracker (no MMDS poll)",
    },
    FlagSpec {
        name: "cmd",
        takes_value: true,
        since: None,
        until: Some("2026-05-14"),
        meaning: "command to start when the daemon starts",
    },
    FlagSpec {
        name: "cgroup-root",
        takes_value: true,
        since: Some("2025-12-11"),
        until: None,
        meaning: "cgroup v2 root (default /sys/fs/cgroup)",
    },
    FlagSpec { name: "verbose", takes_value: false, since: Some("2026-05-15"), until: None, meaning: "logs to stdout" },
    FlagSpec {
        name: "no-cgroups",
        takes_value: false,
        since: Some("2026-05-24"),
        until: None,
        meaning: "no-op cgroup manager",
    },
    FlagSpec {
        name: "resume-handover",
        takes_value: false,
        since: Some("2026-07-28"),
        until: None,
        meaning: "internal: live self-upgrade",
    },
];

/// Look up a flag by name.
pub fn flag(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// A period of envd releases with one flag surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Era {
    pub name: &'static str,
    /// First day of the era (`""` for the oldest): the change that opened it.
    pub since: &'static str,
    /// A date inside the era, used to decide which flags it accepts.
    pub date: &'static str,
}

/// Eras in order, oldest first; they are told apart by marker strings in the binary.
pub const ERAS: &[Era] = &[
    Era { name: "before 2025-07 (-debug, -cmd)", since: "", date: "2025-06-01" },
    Era { name: "2025-07 to 2025-12 (-isnotfc, -cmd)", since: "2025-07-02", date: "2025-09-01" },
    Era { name: "2025-12 to 2026-05 (-cgroup-root, -cmd)", since: "2025-12-11", date: "2026-02-01" },
    Era { name: "since 2026-05-24 (-cmd removed, -no-cgroups)", since: "2026-05-24", date: "2026-06-01" },
    Era { name: "since 2026-07-28 (-resume-handover)", since: "2026-07-28", date: "2026-09-01" },
];

/// Newest era known; what a current envd accepts.
pub fn current() -> &'static Era {
    ERAS.last().expect("eras are not empty")
}

impl Era {
    /// Whether this era's envd accepts `name`.
    pub fn accepts(&self, name: &str) -> bool {
        flag(name).is_some_and(|f| f.since.is_none_or(|s| s <= self.date) && f.until.is_none_or(|u| self.date < u))
    }

    /// The flags this era accepts.
    pub fn flags(&self) -> Vec<&'static str> {
        FLAGS.iter().filter(|f| self.accepts(f.name)).map(|f| f.name).collect()
    }
}

/// The era of an envd built from a commit of `date` (`YYYY-MM-DD...`, e.g. Go's `vcs.time`).
pub fn era_for_date(date: &str) -> &'static Era {
    let day = date.get(..10).unwrap_or(date);
    ERAS.iter().rev().find(|e| e.since <= day).unwrap_or(&ERAS[0])
}

/// Strings a Go binary embeds for its flag names, used to tell eras apart (newest first).
/// Each is the name of a flag introduced at the start of the era of the same index + 1.
const MARKERS: &[(&str, usize)] = &[("resume-handover", 4), ("no-cgroups", 3), ("cgroup-root", 2), ("isnotfc", 1)];

/// Marker strings to search for in a binary.
pub fn markers() -> impl Iterator<Item = &'static str> {
    MARKERS.iter().map(|(m, _)| *m)
}

/// The era of an envd binary given which markers it contains; `None` if it contains none and
/// does not look like envd at all (`looks_like_envd` false).
pub fn era_from_markers(found: &[&str], looks_like_envd: bool) -> Option<&'static Era> {
    for (m, idx) in MARKERS {
        if found.contains(m) {
            return Some(&ERAS[*idx]);
        }
    }
    looks_like_envd.then(|| &ERAS[0])
}

/// One argument as Go's flag package sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub raw: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Split arguments the way Go's `flag.Parse` does: flags until the first non-flag or `--`.
/// A value flag written `-x v` consumes the next argument.
pub fn parse_args(args: &[String]) -> Vec<Arg> {
    parse_args_counted(args).0
}

/// [`parse_args`], and how many of `args` Go's parser would consume (the rest are positional
/// arguments envd ignores).
pub fn parse_args_counted(args: &[String]) -> (Vec<Arg>, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let body = a.strip_prefix("--").unwrap_or(&a[1..]);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let mut arg = Arg { raw: a.clone(), name, value };
        if arg.value.is_none()
            && flag(&arg.name).is_some_and(|f| f.takes_value)
            && let Some(next) = args.get(i + 1)
        {
            arg.value = Some(next.clone());
            arg.raw = format!("{a} {next}");
            i += 1;
        }
        out.push(arg);
        i += 1;
    }
    (out, i)
}

/// Why envd would reject an argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// Never an envd flag.
    Unknown { flag: String },
    /// Was removed before this era.
    Removed { flag: String, until: &'static str, replacement: Option<&'static str> },
    /// Introduced after this era.
    TooNew { flag: String, since: &'static str },
    /// A value flag without a value ("flag needs an argument", also exit 2).
    MissingValue { flag: String },
}

impl Problem {
    pub fn describe(&self) -> String {
        match self {
            Problem::Unknown { flag } => format!("-{flag} is not an envd flag"),
            Problem::Removed { flag, until, replacement } => {
                let r = replacement
                    .map(|r| {
                        format!(
                            "; drop it (its successor -{r} makes envd skip Firecracker's MMDS, which is wrong inside a sandbox)"
                        )
                    })
                    .unwrap_or_else(|| "; drop it".to_string());
                format!("-{flag} was removed from envd on {until}{r}")
            }
            Problem::TooNew { flag, since } => format!("-{flag} only exists in envd built after {since}"),
            Problem::MissingValue { flag } => format!("-{flag} needs a value"),
        }
    }
}

/// Check parsed arguments against an era's flags. Exit status 2 follows from any problem.
pub fn check(args: &[Arg], era: &Era) -> Vec<Problem> {
    let mut out = Vec::new();
    for a in args {
        let Some(spec) = flag(&a.name) else {
            out.push(Problem::Unknown { flag: a.name.clone() });
            continue;
        };
        if !era.accepts(&a.name) {
            match (spec.since, spec.until) {
                (_, Some(u)) if u <= era.date => out.push(Problem::Removed {
                    flag: a.name.clone(),
                    until: u,
                    replacement: (spec.name == "debug").then_some("isnotfc"),
                }),
                (Some(s), _) => out.push(Problem::TooNew { flag: a.name.clone(), since: s }),
                _ => out.push(Problem::Unknown { flag: a.name.clone() }),
            }
            continue;
        }
        if spec.takes_value && a.value.is_none() {
            out.push(Problem::MissingValue { flag: a.name.clone() });
        }
    }
    out
}

/// How much of a binary [`MarkerScan`] reads at most (envd is 10–30 MB).
pub const SCAN_LIMIT: u64 = 64 * 1024 * 1024;
const BUILDINFO_CAPTURE: usize = 64 * 1024;

/// Search a byte stream for what identifies an envd binary without running it: the era markers
/// (flag names compiled into it), the word "envd", Go's build information (toolchain, module
/// path, commit and commit time) and a NUL-delimited version string (as C programs store
/// them). Chunks overlap by a small window so a marker split across chunks is still found.
#[derive(Debug, Default)]
pub struct MarkerScan {
    found: Vec<&'static str>,
    saw_envd: bool,
    tail: Vec<u8>,
    capture: Option<Vec<u8>>,
    buildinfo: Option<crate::elf::GoBuildInfo>,
    versions: std::collections::BTreeSet<String>,
    scanned: u64,
}

/// What a scan of a binary found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BinaryFacts {
    /// Era markers found (flag names only some envd releases have).
    pub markers: Vec<&'static str>,
    pub looks_like_envd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<crate::elf::GoBuildInfo>,
    /// A version string, when exactly one NUL-delimited `N.N.N` string is in the binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The era the binary belongs to, and how it was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub era: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub era_source: Option<&'static str>,
    pub bytes_scanned: u64,
}

impl BinaryFacts {
    /// The era to check flags against (`None`: cannot be told).
    pub fn era(&self) -> Option<&'static Era> {
        self.era.and_then(|n| ERAS.iter().find(|e| e.name == n))
    }
}

fn semver_at(b: &[u8]) -> Option<&[u8]> {
    // digits . digits . digits, then NUL; at most 20 bytes.
    let end = b.iter().take(21).position(|&c| c == 0)?;
    let s = &b[..end];
    let parts: Vec<&[u8]> = s.split(|&c| c == b'.').collect();
    (parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 6 && p.iter().all(u8::is_ascii_digit)))
        .then_some(s)
}

impl MarkerScan {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.scanned += chunk.len() as u64;
        if let Some(cap) = self.capture.as_mut() {
            let want = BUILDINFO_CAPTURE.saturating_sub(cap.len());
            cap.extend_from_slice(&chunk[..want.min(chunk.len())]);
            if cap.len() >= BUILDINFO_CAPTURE {
                self.finish_capture();
            }
        }
        let mut buf = std::mem::take(&mut self.tail);
        let overlap = buf.len();
        buf.extend_from_slice(chunk);
        for m in markers() {
            if !self.found.contains(&m) && memchr::memmem::find(&buf, m.as_bytes()).is_some() {
                self.found.push(m);
            }
        }
        if !self.saw_envd && memchr::memmem::find(&buf, b"envd").is_some() {
            self.saw_envd = true;
        }
        if self.capture.is_none()
            && self.buildinfo.is_none()
            && let Some(p) = memchr::memmem::find(&buf, crate::elf::GO_BUILDINFO_MAGIC)
        {
            let end = buf.len().min(p + BUILDINFO_CAPTURE);
            self.capture = Some(buf[p..end].to_vec());
            if end - p >= BUILDINFO_CAPTURE {
                self.finish_capture();
            }
        }
        if self.versions.len() < 8 {
            for p in memchr::memchr_iter(0, &buf) {
                // Most NULs (a run of zeros, a hole) are not followed by a digit: skip them cheaply.
                if !buf.get(p + 1).is_some_and(u8::is_ascii_digit) {
                    continue;
                }
                if let Some(v) = buf.get(p + 1..).and_then(semver_at) {
                    // Only versions that start after the overlap were not seen already.
                    if p + 1 + v.len() >= overlap {
                        self.versions.insert(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
        let keep = 32.min(buf.len());
        self.tail = buf[buf.len() - keep..].to_vec();
    }

    fn finish_capture(&mut self) {
        if let Some(cap) = self.capture.take() {
            self.buildinfo = crate::elf::go_buildinfo(&cap);
        }
    }

    /// The era from the markers alone.
    pub fn era(&self) -> Option<&'static Era> {
        era_from_markers(&self.found, self.saw_envd)
    }

    pub fn found(&self) -> &[&'static str] {
        &self.found
    }

    /// Everything the scan found. The era comes from the Go commit time when the binary is
    /// stamped with one, else from the markers.
    pub fn finish(mut self) -> BinaryFacts {
        self.finish_capture();
        let go_is_envd = self.buildinfo.as_ref().and_then(|g| g.path.as_deref()).is_some_and(|p| p.ends_with("/envd"));
        let looks_like_envd = self.saw_envd || go_is_envd;
        let by_time =
            self.buildinfo.as_ref().and_then(|g| g.vcs_time.as_deref()).filter(|_| looks_like_envd).map(era_for_date);
        let (era, era_source) = match (by_time, era_from_markers(&self.found, looks_like_envd)) {
            (Some(e), _) => (Some(e.name), Some("go vcs.time")),
            (None, Some(e)) => {
                (Some(e.name), Some(if self.found.is_empty() { "no newer flag names" } else { "flag names" }))
            }
            (None, None) => (None, None),
        };
        let version = (self.versions.len() == 1).then(|| self.versions.into_iter().next()).flatten();
        BinaryFacts {
            markers: self.found,
            looks_like_envd,
            go: self.buildinfo,
            version,
            era,
            era_source,
            bytes_scanned: self.scanned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn go_flag_parsing() {
        let a = parse_args(&s(&["-port", "49983", "--isnotfc", "-cmd=/bin/app", "run", "-debug"]));
        assert_eq!(a.len(), 3, "stops at the first non-flag");
        assert_eq!(a[0].value.as_deref(), Some("49983"));
        assert_eq!(a[1].name, "isnotfc");
        assert_eq!(a[2].value.as_deref(), Some("/bin/app"));
        assert_eq!(parse_args(&s(&["--", "-debug"])).len(), 0);
    }

    #[test]
    fn eras_accept_what_the_table_says() {
        let cur = current();
        assert!(!cur.accepts("debug") && !cur.accepts("cmd") && cur.accepts("isnotfc") && cur.accepts("no-cgroups"));
        let old = &ERAS[0];
        assert!(old.accepts("debug") && old.accepts("cmd") && !old.accepts("isnotfc"));
        assert!(ERAS[2].accepts("cgroup-root") && ERAS[2].accepts("cmd") && !ERAS[1].accepts("cgroup-root"));
    }

    #[test]
    fn problems_explain_exit_status_2() {
        let p = check(&parse_args(&s(&["-debug"])), current());
        assert_eq!(
            p,
            vec![Problem::Removed { flag: "debug".into(), until: "2025-07-02", replacement: Some("isnotfc") }]
        );
        assert!(p[0].describe().contains("-isnotfc"));
        let p = check(&parse_args(&s(&["-cmd", "x"])), current());
        assert!(matches!(&p[0], Problem::Removed { flag, .. } if flag == "cmd"));
        let p = check(&parse_args(&s(&["-no-cgroups"])), &ERAS[1]);
        assert!(matches!(&p[0], Problem::TooNew { .. }));
        assert!(matches!(&check(&parse_args(&s(&["-bogus"])), current())[0], Problem::Unknown { .. }));
        assert!(matches!(&check(&parse_args(&s(&["-port"])), current())[0], Problem::MissingValue { .. }));
        assert!(check(&parse_args(&s(&["-port", "1", "-isnotfc"])), current()).is_empty());
    }

    #[test]
    fn markers_identify_eras_across_chunk_boundaries() {
        let mut scan = MarkerScan::default();
        scan.feed(b"xxxx envd xxxx cgroup-r");
        scan.feed(b"oot yyyy");
        assert_eq!(scan.era(), Some(&ERAS[2]));
        let mut plain = MarkerScan::default();
        plain.feed(b"hello world");
        assert_eq!(plain.era(), None);
        let mut old = MarkerScan::default();
        old.feed(b"github.com/e2b-dev/infra/packages/envd/internal");
        assert_eq!(old.era(), Some(&ERAS[0]));
    }

    #[test]
    fn eras_by_build_date() {
        assert_eq!(era_for_date("2025-01-01T00:00:00Z").name, ERAS[0].name);
        assert_eq!(era_for_date("2025-07-02T00:00:00Z").name, ERAS[1].name);
        assert_eq!(era_for_date("2026-06-10").name, ERAS[3].name);
        assert_eq!(era_for_date("2026-11-01").name, ERAS[4].name);
        for e in ERAS {
            assert!(e.since <= e.date, "{}", e.name);
            assert_eq!(era_for_date(e.date).name, e.name);
        }
    }

    #[test]
    fn scan_reads_go_buildinfo_and_versions_across_chunks() {
        let bi = crate::elf::synthetic_go_buildinfo(
            "go1.24.1",
            "path\tgithub.com/e2b-dev/infra/packages/envd\nbuild\tvcs.time=2025-09-03T12:00:00Z\n",
        );
        let mut bin = vec![0u8; 5000];
        bin.extend_from_slice(b"\x000.4.2\x00isnotfc\x00");
        bin.extend_from_slice(&bi);
        bin.extend(vec![0u8; 3000]);
        let mut scan = MarkerScan::default();
        for c in bin.chunks(7) {
            scan.feed(c);
        }
        let f = scan.finish();
        assert_eq!(f.version.as_deref(), Some("0.4.2"));
        assert_eq!(f.go.as_ref().unwrap().go_version, "go1.24.1");
        assert!(f.looks_like_envd);
        assert_eq!(f.era, Some(ERAS[1].name));
        assert_eq!(f.era_source, Some("go vcs.time"));
        assert_eq!(f.bytes_scanned, bin.len() as u64);
        // Two different version-like strings: no claim.
        let mut two = MarkerScan::default();
        two.feed(b"\x001.2.3\x00\x004.5.6\x00envd");
        assert_eq!(two.finish().version, None);
    }
}
