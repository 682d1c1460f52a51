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

    /// The next chunk does not follow the last one in the file (a different section): no
    /// marker may span the two.
    pub fn gap(&mut self) {
        self.tail.clear();
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

/// Sections that can hold what [`MarkerScan`] looks for: string literals (Go's flag names,
/// C's NUL-terminated version strings, the word "envd") live in read-only data, initialised
/// data holds the rest, and `.go.buildinfo` the build information. Code, Go's tables
/// (`.gopclntab`, `.typelink`, ...), symbols and debug information cannot, and are most of a
/// binary: they are not read.
fn may_hold_strings(s: &crate::elf::Section) -> bool {
    let n = s.name.as_str();
    s.sh_type != crate::elf::SHT_NOBITS
        && s.flags & crate::elf::SHF_EXECINSTR == 0
        && (n == ".rodata"
            || n.starts_with(".rodata.")
            || n == ".data"
            || n.starts_with(".data.")
            || n == ".noptrdata"
            || n == ".go.buildinfo")
}

/// Read `buf.len()` bytes at `offset` through `read_at` (which may return fewer at a time; 0 is
/// the end of the file). Fails when the file ends first.
fn read_exact_at<E>(
    read_at: &mut impl FnMut(u64, &mut [u8]) -> Result<usize, E>,
    offset: u64,
    buf: &mut [u8],
) -> Option<()> {
    let mut got = 0usize;
    while got < buf.len() {
        let k = read_at(offset.checked_add(got as u64)?, &mut buf[got..]).ok()?;
        if k == 0 {
            return None;
        }
        got += k;
    }
    Some(())
}

/// [`MarkerScan`] over only the sections of an ELF file of `len` bytes that can hold what it
/// looks for, located through the section header table; `read_at(offset, buf)` reads the file.
/// `None` when that cannot be done — no section table, a foreign or damaged one, a section
/// past the end of the file, no read-only data section, a read error: the caller streams the
/// file instead ([`SCAN_LIMIT`] bytes at most), so the answer is never worse than a full scan.
/// At most [`SCAN_LIMIT`] bytes of sections are read.
pub fn scan_elf_sections<E>(
    len: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<usize, E>,
) -> Option<BinaryFacts> {
    let mut head = vec![0u8; usize::try_from(len.min(64)).ok()?];
    read_exact_at(&mut read_at, 0, &mut head)?;
    let table = crate::elf::section_table(&head)?;
    if table.len > crate::elf::MAX_SECTION_TABLE || table.offset.checked_add(table.len)? > len {
        return None;
    }
    let mut raw = vec![0u8; usize::try_from(table.len).ok()?];
    read_exact_at(&mut read_at, table.offset, &mut raw)?;
    let sections = table.sections(&raw, |off, n| {
        if n > crate::elf::MAX_SECTION_NAMES || off.checked_add(n)? > len {
            return None;
        }
        let mut names = vec![0u8; usize::try_from(n).ok()?];
        read_exact_at(&mut read_at, off, &mut names)?;
        Some(names)
    })?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for s in sections.iter().filter(|s| may_hold_strings(s)) {
        let end = s.offset.checked_add(s.size)?;
        if end > len {
            return None;
        }
        if s.size > 0 {
            ranges.push((s.offset, end));
        }
    }
    if !sections.iter().any(|s| s.name == ".rodata" || s.name.starts_with(".rodata.")) {
        return None;
    }
    // In file order, overlapping or adjacent sections merged: each byte is read once.
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut scan = MarkerScan::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut budget = SCAN_LIMIT;
    for (a, b) in merged {
        scan.gap();
        let stop = b.min(a.saturating_add(budget));
        let mut at = a;
        while at < stop {
            let n = usize::try_from((stop - at).min(buf.len() as u64)).ok()?;
            read_exact_at(&mut read_at, at, &mut buf[..n])?;
            scan.feed(&buf[..n]);
            at += n as u64;
            budget -= n as u64;
        }
    }
    Some(scan.finish())
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

    /// Every byte of `bin` through [`MarkerScan`], as tmpl read envd before section-guided reads.
    fn streamed(bin: &[u8]) -> BinaryFacts {
        let mut scan = MarkerScan::default();
        for c in bin.chunks(1 << 20) {
            scan.feed(c);
        }
        scan.finish()
    }

    /// [`scan_elf_sections`] over `bin` in memory, and how many bytes it read.
    fn guided(bin: &[u8]) -> (Option<BinaryFacts>, u64) {
        let mut read = 0u64;
        let f = scan_elf_sections(bin.len() as u64, |off, buf: &mut [u8]| {
            let from = bin.get(usize::try_from(off).unwrap()..).unwrap_or_default();
            let n = buf.len().min(from.len());
            buf[..n].copy_from_slice(&from[..n]);
            read += n as u64;
            Ok::<_, ()>(n)
        });
        (f, read)
    }

    fn same_but_bytes(mut a: BinaryFacts, b: &BinaryFacts) -> BinaryFacts {
        a.bytes_scanned = b.bytes_scanned;
        a
    }

    #[test]
    fn section_guided_scan_tells_what_the_full_scan_tells_reading_a_fraction() {
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (&["port", "isnotfc", "cgroup-root", "no-cgroups"], Some("0.5.1"), None),
            (&["port", "debug", "cmd"], Some("0.1.4"), None),
            (&["port", "isnotfc"], None, Some("2026-08-01T10:00:00Z")),
            (&["port", "isnotfc", "resume-handover"], Some("0.6.0"), Some("2026-09-01T00:00:00Z")),
        ];
        for (flags, version, time) in cases {
            let bin = crate::fixtures::envd_elf::envd_elf(8 << 20, flags, *version, *time);
            let full = streamed(&bin);
            let (g, read) = guided(&bin);
            let g = g.expect("a binary with a section table is read through it");
            assert_eq!(same_but_bytes(g.clone(), &full), full, "{flags:?}");
            assert!(full.era.is_some() && full.looks_like_envd, "{full:?}");
            assert_eq!(full.version.as_deref(), *version);
            assert_eq!(full.go.is_some(), time.is_some());
            // Code and Go's tables (3/4 of the file) are not read.
            assert!(read < bin.len() as u64 / 4, "read {read} of {} bytes", bin.len());
            assert!(g.bytes_scanned > 0 && g.bytes_scanned <= read, "{} of {read}", g.bytes_scanned);
        }
    }

    #[test]
    fn section_guided_scan_gives_way_to_the_full_scan_when_headers_cannot_be_used() {
        // No section table (the test envds built without one, stripped binaries).
        let plain = [crate::elf::synthetic(62, None), b"\0envd\0isnotfc\0".to_vec()].concat();
        assert_eq!(guided(&plain).0, None);
        let good = crate::fixtures::envd_elf::envd_elf(1 << 20, &["isnotfc"], None, None);
        let shoff = usize::try_from(u64::from_le_bytes(good[40..48].try_into().unwrap())).unwrap();
        // A section table past the end of the file (cut short).
        assert_eq!(guided(&good[..shoff + 10]).0, None);
        // A section whose offset + size runs past the end of the file.
        let mut bad = good.clone();
        let rodata = shoff + 2 * 64;
        bad[rodata + 32..rodata + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(guided(&bad).0, None);
        // A foreign header size, a names index past the table, a table claiming 65535 headers.
        let mut bad = good.clone();
        bad[58] = 63;
        assert_eq!(guided(&bad).0, None);
        let mut bad = good.clone();
        bad[62..64].copy_from_slice(&500u16.to_le_bytes());
        assert_eq!(guided(&bad).0, None);
        let mut bad = good.clone();
        bad[60..62].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(guided(&bad).0, None);
        // No read-only data section: nothing says where the strings are.
        let mut bad = good.clone();
        let names = good.windows(8).position(|w| w == b".rodata\0").unwrap();
        bad[names + 1] = b'x';
        assert_eq!(guided(&bad).0, None);
        // A read error.
        let f = scan_elf_sections(good.len() as u64, |_, _: &mut [u8]| Err::<usize, _>(()));
        assert_eq!(f, None);
    }

    proptest::proptest! {
        #[test]
        fn section_guided_scan_never_panics(edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..16)) {
            let mut bin = crate::fixtures::envd_elf::envd_elf(64 << 10, &["isnotfc"], Some("1.2.3"), None);
            let n = bin.len();
            for (at, v) in edits {
                // The ELF header and the section table at the end.
                let i = if at < 64 { at } else { n - 1 - (at % 1024) };
                bin[i] = v;
            }
            let _ = guided(&bin);
        }
    }
}
