//! What a rootfs does at boot, read offline: the init chain (what `/sbin/init` is, link by
//! link, and what it finally runs), the programs along it (ELF facts, `#!` interpreters, loaders),
//! the commands wrapper scripts run, how envd is started (exec'd by init, by a wrapper, by a
//! systemd unit, by busybox's inittab or OpenRC) and with which flags, the envd binaries
//! themselves, `/etc/resolv.conf` and the `/.e2b` marker.
//!
//! Everything here is a fact with a status; `checks::contents` turns statuses into findings.
//! Nothing is judged or printed here. Reads go through [`Rootfs`] (and so through `Device`):
//! following `/sbin/init` reads kilobytes; scanning an envd binary for its era reads the binary
//! and is only done when asked ([`Scan`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::script::{self, Script};
use super::{Entry, FileKind, Rootfs, RootfsError, unit};
use crate::elf::{self, ElfInfo};
use crate::envd::{self, BinaryFacts, MarkerScan, Problem};
use crate::snapshot::Arch;

/// Where E2B's orchestrator and build expect envd (`storage.GuestEnvdPath`).
pub const ENVD_PATH: &str = "/usr/bin/envd";
/// What E2B boots (`init=/sbin/init`, `constants.SystemdInitPath`).
pub const DEFAULT_INIT: &str = "/sbin/init";
/// The kernel follows at most 40 symlinks in one lookup (ELOOP after that).
pub const MAX_LINKS: usize = 40;
/// How deep wrapper scripts calling wrapper scripts are followed.
const MAX_SCRIPT_DEPTH: usize = 3;
/// systemd unit and script files larger than this are not read whole.
const MAX_TEXT: u64 = 1024 * 1024;
/// Commands of one script (or inittab) checked: each may look a program up in every PATH
/// directory, so a crafted megabyte of commands must not cost a lookup apiece. Real wrappers and
/// inittabs have tens.
const MAX_COMMANDS: usize = 1000;
/// Directory entries examined where the boot path lists a directory (`*.wants` directories,
/// drop-ins, runlevels): real systems have tens.
const MAX_LISTED: usize = 256;

/// When to stream envd binaries for their era and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Always (`inspect`).
    Always,
    /// Only when an envd invocation passes flags that need an era to check (`verify`).
    WhenFlagsNeedIt,
}

/// What the caller knows about the build around the rootfs.
#[derive(Clone, Debug)]
pub struct Context {
    /// The architecture binaries must be built for (snapfile's, else the host's).
    pub arch: Option<Arch>,
    /// Where `arch` came from, for messages.
    pub arch_source: &'static str,
    /// The init the kernel is told to run (`init=` from metadata's cmdline_args, else /sbin/init).
    pub init: String,
    pub scan: Scan,
}

impl Default for Context {
    fn default() -> Self {
        Context { arch: Arch::host(), arch_source: "host", init: DEFAULT_INIT.to_string(), scan: Scan::Always }
    }
}

/// One step of a path resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub path: String,
    pub kind: FileKind,
    /// The symlink's target as stored (relative or absolute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// How resolving a path ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum End {
    /// The path does not exist at all.
    Missing { path: String },
    /// A symlink in the chain points at nothing.
    Dangling { link: String, target: String },
    /// More than 40 links, or a cycle.
    Loop { path: String },
    /// Something else went wrong reading the image.
    Unreadable { path: String, message: String },
    /// The chain ends in this inode (its `path` is the canonical path).
    Found { entry: Entry },
}

/// A path followed link by link inside the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub path: String,
    pub hops: Vec<Hop>,
    pub end: End,
}

impl Resolution {
    pub fn found(&self) -> Option<&Entry> {
        match &self.end {
            End::Found { entry } => Some(entry),
            _ => None,
        }
    }

    /// A one-line description of the chain: `/sbin/init -> /usr/bin/envd`.
    pub fn describe(&self) -> String {
        let mut s = self.path.clone();
        for h in &self.hops {
            if let Some(t) = &h.target {
                s.push_str(" -> ");
                s.push_str(t);
            }
        }
        s
    }
}

fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The path a relative symlink at `link` points to: its directory made canonical, then the
/// target's leading `.` and `..` applied to it (exact, since that directory has no symlinks left),
/// the rest appended as stored.
fn join_relative(fs: &Rootfs, link: &str, target: &str) -> String {
    let dir = parent_dir(link);
    let mut base: Vec<String> = fs
        .canonicalize(dir)
        .unwrap_or_else(|_| dir.to_string())
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut rest = target;
    loop {
        if let Some(r) = rest.strip_prefix("../") {
            base.pop();
            rest = r;
        } else if rest == ".." {
            base.pop();
            rest = "";
        } else if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else {
            break;
        }
    }
    let mut out = String::new();
    for c in &base {
        out.push('/');
        out.push_str(c);
    }
    if !rest.is_empty() {
        out.push('/');
        out.push_str(rest.trim_start_matches('/'));
    }
    if out.is_empty() { "/".to_string() } else { out }
}

/// Follow `path` link by link (each hop shown), the way the kernel's `execve` would.
pub fn resolve(fs: &Rootfs, path: &str) -> Resolution {
    let mut hops = Vec::new();
    let mut cur = path.to_string();
    let mut seen = BTreeSet::new();
    let end = loop {
        if hops.len() > MAX_LINKS || !seen.insert(cur.clone()) {
            break End::Loop { path: cur };
        }
        let entry = match fs.lstat(&cur) {
            Ok(Some(e)) => e,
            Ok(None) if hops.is_empty() => break End::Missing { path: cur },
            Ok(None) => {
                let link = hops.last().map(|h: &Hop| h.path.clone()).unwrap_or_default();
                break End::Dangling { link, target: cur };
            }
            Err(RootfsError::Loop { path }) => break End::Loop { path },
            Err(e) => break End::Unreadable { path: cur, message: e.to_string() },
        };
        if entry.kind != FileKind::Symlink {
            hops.push(Hop { path: cur.clone(), kind: entry.kind, target: None });
            let canonical = fs.canonicalize(&cur).unwrap_or(cur);
            break End::Found { entry: Entry { path: canonical, ..entry } };
        }
        let target = match fs.read_link(&cur) {
            Ok(t) => t,
            Err(e) => break End::Unreadable { path: cur, message: e.to_string() },
        };
        hops.push(Hop { path: cur.clone(), kind: FileKind::Symlink, target: Some(target.clone()) });
        cur = if target.starts_with('/') { target } else { join_relative(fs, &cur, &target) };
    };
    Resolution { path: path.to_string(), hops, end }
}

/// What kind of program a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramKind {
    Systemd,
    Busybox,
    Envd,
    /// A shell script (or any `#!` script).
    Script,
    /// Some other ELF executable.
    Elf,
    /// Neither ELF nor `#!`: the kernel returns ENOEXEC.
    NotRunnable,
    /// An empty file.
    Empty,
}

/// An executable's loader (`PT_INTERP`) or a script's interpreter, and whether it is usable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Helper {
    pub resolution: Resolution,
    /// Found, a regular file, executable.
    pub usable: bool,
    /// ELF facts of the helper (interpreters only; loaders are not examined further).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfInfo>,
}

/// One executable file in the image, examined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Program {
    pub path: String,
    pub mode: u16,
    pub len: u64,
    pub kind: ProgramKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfInfo>,
    /// Why the head is not an ELF (when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_elf: Option<String>,
    /// `machine` differs from the expected architecture.
    pub wrong_arch: bool,
    /// The ELF headers describe more bytes than the file has: a cut copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// The dynamic loader (`PT_INTERP`) of a dynamically linked ELF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loader: Option<Helper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shebang: Option<script::Shebang>,
    /// A script's interpreter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Helper>,
}

impl Program {
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

fn helper(fs: &Rootfs, path: &str, ctx: &Context, examine_elf: bool) -> Helper {
    let resolution = resolve(fs, path);
    let (usable, elf) = match resolution.found() {
        Some(e) if e.is_executable() => {
            let elf = if examine_elf {
                fs.read_head(&e.path, elf::HEAD_BYTES).ok().and_then(|h| elf::parse(&h).ok())
            } else {
                None
            };
            let arch_ok = elf.as_ref().is_none_or(|i| ctx.arch.is_none_or(|a| a.elf_machine() == i.machine));
            (arch_ok, elf)
        }
        _ => (false, None),
    };
    Helper { resolution, usable, elf }
}

/// Read the head of a found regular file and say what it is.
pub fn examine(fs: &Rootfs, entry: &Entry, ctx: &Context) -> Result<Program, RootfsError> {
    let head = fs.read_head(&entry.path, elf::HEAD_BYTES)?;
    let base = entry.path.rsplit('/').next().unwrap_or("");
    let mut p = Program {
        path: entry.path.clone(),
        mode: entry.mode,
        len: entry.len,
        kind: ProgramKind::NotRunnable,
        elf: None,
        not_elf: None,
        wrong_arch: false,
        truncated: None,
        loader: None,
        shebang: None,
        interpreter: None,
    };
    if head.is_empty() {
        p.kind = ProgramKind::Empty;
        return Ok(p);
    }
    if let Some(sb) = script::shebang(&head) {
        p.kind = ProgramKind::Script;
        p.interpreter = Some(helper(fs, &sb.interpreter, ctx, true));
        p.shebang = Some(sb);
        return Ok(p);
    }
    match elf::parse(&head) {
        Ok(info) => {
            p.wrong_arch = ctx.arch.is_some_and(|a| a.elf_machine() != info.machine);
            p.truncated = info.truncated(entry.len);
            p.kind = if base == "systemd" {
                ProgramKind::Systemd
            } else if base == "busybox" || memchr::memmem::find(&head, b"BusyBox").is_some() {
                ProgramKind::Busybox
            } else if script::is_envd_name(base) {
                ProgramKind::Envd
            } else {
                ProgramKind::Elf
            };
            if let Some(interp) = &info.interpreter {
                p.loader = Some(helper(fs, interp, ctx, false));
            }
            p.elf = Some(info);
        }
        Err(e) => p.not_elf = Some(e.to_string()),
    }
    Ok(p)
}

/// A resolved path and, when it ends in a regular file, the program there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub resolution: Resolution,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Target {
    /// Can `execve` run it (found, regular, executable, right arch, loader/interpreter usable)?
    pub fn runnable(&self) -> bool {
        let Some(p) = &self.program else { return false };
        p.executable()
            && !p.wrong_arch
            && p.truncated.is_none()
            && !matches!(p.kind, ProgramKind::NotRunnable | ProgramKind::Empty)
            && p.loader.as_ref().is_none_or(|l| l.usable)
            && p.interpreter.as_ref().is_none_or(|i| i.usable)
    }
}

fn target(fs: &Rootfs, path: &str, ctx: &Context) -> Target {
    let resolution = resolve(fs, path);
    let (program, error) = match resolution.found() {
        Some(e) if e.kind == FileKind::Regular => match examine(fs, e, ctx) {
            Ok(p) => (Some(p), None),
            Err(err) => (None, Some(err.to_string())),
        },
        _ => (None, None),
    };
    Target { resolution, program, error }
}

/// How a command found its program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Lookup {
    /// A shell builtin or a function of the script.
    Builtin,
    /// Contains an unexpanded variable or substitution: cannot be checked.
    Dynamic,
    /// Found (by absolute path or in PATH).
    Found { target: Box<Target> },
    /// An absolute path that does not resolve to a runnable file.
    Broken { target: Box<Target> },
    /// A bare name found in none of the PATH directories.
    NotInPath { path: Vec<String> },
}

/// An envd invocation's flags, checked against the envd it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlagCheck {
    pub args: Vec<String>,
    /// The envd binary whose flags apply (after following wrapper scripts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The era checked against, and whether it was told from the binary.
    pub era: &'static str,
    pub era_known: bool,
    pub problems: Vec<Problem>,
}

/// One command of a script (or of a unit's `ExecStart=`, or an inittab entry), checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandFacts {
    /// Where the command is: `rootfs:/sbin/init:12`.
    pub at: String,
    pub words: Vec<String>,
    pub exec: bool,
    pub background: bool,
    /// Runs envd (by name).
    pub envd: bool,
    pub lookup: Lookup,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<FlagCheck>,
    /// Commands of a script this command runs (a wrapper calling a wrapper).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nested: Vec<CommandFacts>,
}

impl CommandFacts {
    /// This command, and every nested one, depth first.
    pub fn walk(&self) -> Vec<&CommandFacts> {
        let mut out = vec![self];
        for n in &self.nested {
            out.extend(n.walk());
        }
        out
    }
}

/// A script in the boot path and what it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScriptFacts {
    pub path: String,
    pub commands: Vec<CommandFacts>,
    /// False when the script can fall off its end (fatal for PID 1).
    pub keeps_running: bool,
    /// DOS (CRLF) line endings.
    pub crlf: bool,
}

/// What `init=` resolves to and what it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InitFacts {
    pub target: Target,
    /// The init is a script: what it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptFacts>,
    /// Busybox init: `/etc/inittab` entries (or its built-in default) and `rcS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inittab: Option<Vec<CommandFacts>>,
    /// Bytes read through the device to resolve and examine the chain.
    pub bytes_read: u64,
}

/// envd as a systemd service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SystemdFacts {
    /// Where `envd.service` was found (first of the unit directories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The unit is a link to /dev/null.
    pub masked: bool,
    /// `*.wants/envd.service` links (and whether each resolves).
    pub wanted_by: Vec<(String, bool)>,
    pub exec_start: Vec<CommandFacts>,
}

/// envd under OpenRC (busybox init running openrc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenrcFacts {
    pub script: String,
    pub runlevels: Vec<String>,
    /// The daemon it starts (`command=` with `command_args=`), checked like a wrapper's command.
    pub commands: Vec<CommandFacts>,
}

/// One envd binary in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvdFacts {
    pub path: String,
    pub target: Target,
    /// What a scan of the binary found (era, version, Go build info).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryFacts>,
}

/// `/etc/resolv.conf`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvConf {
    pub resolution: Resolution,
}

/// The `/.e2b` marker E2B's build writes (KEY=VALUE lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct E2bMarker {
    pub entries: Vec<(String, String)>,
}

impl E2bMarker {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// How envd gets started, as far as the image shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvdStart {
    /// `/sbin/init` is envd.
    AsInit,
    /// The init script (or a script it runs) runs envd.
    Wrapper,
    /// An enabled systemd `envd.service`.
    Systemd,
    /// Busybox init's inittab or rcS runs it.
    Inittab,
    /// An OpenRC service in a runlevel.
    Openrc,
}

/// Everything the boot path of a rootfs shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_arch: Option<Arch>,
    pub arch_source: &'static str,
    pub init: InitFacts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openrc: Option<OpenrcFacts>,
    pub envd: Vec<EnvdFacts>,
    pub envd_started_by: Vec<EnvdStart>,
    pub resolv_conf: ResolvConf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2b_marker: Option<E2bMarker>,
    /// Bytes read through the device for all of the above.
    pub bytes_read: u64,
}

struct Walker<'a> {
    fs: &'a Rootfs,
    ctx: &'a Context,
    /// Scripts already opened (no wrapper recursion loops).
    visited: BTreeSet<String>,
    /// envd binaries met, by canonical path, with their scan when done.
    envd: Vec<EnvdFacts>,
}

impl Walker<'_> {
    /// The first [`MAX_COMMANDS`] commands or [`MAX_LISTED`] entries of a list; a longer list is
    /// recorded as an anomaly (a finding) and only its head is examined.
    fn capped<'t, T>(&self, items: &'t [T], path: &str, what: &'static str) -> &'t [T] {
        let cap = if what == "command count" || what == "line count" { MAX_COMMANDS } else { MAX_LISTED };
        if items.len() > cap {
            self.fs.note_over_cap(path, what, items.len() as u64, cap as u64);
            return &items[..cap];
        }
        items
    }

    /// A script, unit or config file; one over [`MAX_TEXT`] is not read (the filesystem records
    /// it as an anomaly, which becomes a finding).
    fn text(&self, path: &str) -> Option<String> {
        self.fs.read_capped(path, MAX_TEXT).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Note an envd binary and return its facts' index.
    fn envd_at(&mut self, path: &str) -> usize {
        let t = target(self.fs, path, self.ctx);
        let key = t.resolution.found().map(|e| e.path.clone()).unwrap_or_else(|| path.to_string());
        if let Some(i) = self.envd.iter().position(|e| e.path == key) {
            return i;
        }
        self.envd.push(EnvdFacts { path: key, target: t, binary: None });
        self.envd.len() - 1
    }

    fn scan(&mut self, i: usize) -> Option<&BinaryFacts> {
        if self.envd[i].binary.is_none()
            && let Some(p) = self.envd[i].target.program.as_ref().filter(|p| p.elf.is_some())
        {
            let path = p.path.clone();
            // Only the sections that can tell era and version, found through the ELF headers ...
            let guided = self.fs.read_parts(&path, |len, read_at| envd::scan_elf_sections(len, read_at)).ok().flatten();
            self.envd[i].binary = Some(guided.unwrap_or_else(|| {
                // ... or, when they cannot be used, the first SCAN_LIMIT bytes: an inode
                // claiming a terabyte costs no more.
                let mut scan = MarkerScan::default();
                let _ = self.fs.stream_at_most(&path, envd::SCAN_LIMIT, |chunk| {
                    scan.feed(chunk);
                    Ok(())
                });
                scan.finish()
            }));
        }
        self.envd[i].binary.as_ref()
    }

    /// The ELF envd behind a target: itself, or the envd a wrapper script of that name runs.
    fn envd_binary(&mut self, t: &Target, depth: usize) -> Option<usize> {
        let p = t.program.as_ref()?;
        match p.kind {
            ProgramKind::Script if depth < MAX_SCRIPT_DEPTH => {
                let text = self.text(&p.path)?;
                let s = script::parse(&text);
                let inner = s.commands.iter().find(|c| script::is_envd_name(c.program()) && !c.program_is_dynamic())?;
                let path = self.lookup_path(inner.program(), &s)?;
                let t2 = target(self.fs, &path, self.ctx);
                if t2.program.as_ref().is_some_and(|p| p.kind == ProgramKind::Script) {
                    self.envd_binary(&t2, depth + 1)
                } else {
                    Some(self.envd_at(&path))
                }
            }
            _ if p.elf.is_some() => Some(self.envd_at(&p.path)),
            _ => None,
        }
    }

    fn lookup_path(&self, program: &str, s: &Script) -> Option<String> {
        if program.starts_with('/') {
            return Some(program.to_string());
        }
        script::search_path(s)
            .into_iter()
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .find(|p| resolve(self.fs, p).found().is_some_and(|e| e.kind == FileKind::Regular))
    }

    fn command(&mut self, c: &script::Command, s: &Script, file: &str, depth: usize) -> CommandFacts {
        let program = c.program().to_string();
        let envd = script::is_envd_name(&program);
        let lookup = if c.program_is_dynamic() {
            Lookup::Dynamic
        } else if script::BUILTINS.contains(&program.as_str()) || s.functions.contains(&program) {
            Lookup::Builtin
        } else if program.contains('/') {
            let t = target(self.fs, &program, self.ctx);
            if t.runnable() { Lookup::Found { target: Box::new(t) } } else { Lookup::Broken { target: Box::new(t) } }
        } else {
            match self.lookup_path(&program, s) {
                Some(p) => {
                    let t = target(self.fs, &p, self.ctx);
                    if t.runnable() {
                        Lookup::Found { target: Box::new(t) }
                    } else {
                        Lookup::Broken { target: Box::new(t) }
                    }
                }
                None => Lookup::NotInPath { path: script::search_path(s) },
            }
        };
        let mut flags = None;
        let mut nested = Vec::new();
        if let Lookup::Found { target } | Lookup::Broken { target } = &lookup {
            if envd {
                let bin = self.envd_binary(target, 0);
                let args: Vec<String> = c.args().to_vec();
                let parsed = envd::parse_args(&args);
                let has_flags = !parsed.is_empty();
                if has_flags || self.ctx.scan == Scan::Always {
                    let facts = bin.and_then(|i| self.scan(i).cloned());
                    if has_flags {
                        let known = facts.as_ref().and_then(|f| f.era());
                        let era = known.unwrap_or_else(envd::current);
                        flags = Some(FlagCheck {
                            problems: envd::check(&parsed, era),
                            args,
                            binary: bin.map(|i| self.envd[i].path.clone()),
                            era: era.name,
                            era_known: known.is_some(),
                        });
                    }
                }
            }
            // A wrapper calling a wrapper: follow its commands too.
            if let Some(p) = target.program.as_ref().filter(|p| p.kind == ProgramKind::Script)
                && depth < MAX_SCRIPT_DEPTH
                && self.visited.insert(p.path.clone())
                && let Some(text) = self.text(&p.path)
            {
                let inner = script::parse(&text);
                for ic in self.capped(&inner.commands, &p.path, "command count") {
                    nested.push(self.command(ic, &inner, &p.path, depth + 1));
                }
            }
        } else if envd {
            // A bare `envd` not found: still note the envd everyone expects.
            self.envd_at(ENVD_PATH);
        }
        CommandFacts {
            at: format!("rootfs:{file}:{}", c.line),
            words: c.words.clone(),
            exec: c.exec,
            background: c.background,
            envd,
            lookup,
            flags,
            nested,
        }
    }

    fn script(&mut self, path: &str, text: &str) -> ScriptFacts {
        self.visited.insert(path.to_string());
        let s = script::parse(text);
        let commands =
            self.capped(&s.commands, path, "command count").iter().map(|c| self.command(c, &s, path, 0)).collect();
        ScriptFacts { path: path.to_string(), commands, keeps_running: s.keeps_running, crlf: s.crlf }
    }

    /// Commands of a text that is not a file of its own (unit ExecStart, inittab process).
    fn snippet(&mut self, text: &str, at: &str, line: usize) -> Vec<CommandFacts> {
        let s = script::parse(text);
        s.commands
            .iter()
            .map(|c| {
                let mut f = self.command(c, &s, at, 0);
                f.at = format!("rootfs:{at}:{line}");
                f
            })
            .collect()
    }

    fn systemd(&mut self) -> SystemdFacts {
        let mut facts = SystemdFacts { unit: None, masked: false, wanted_by: Vec::new(), exec_start: Vec::new() };
        for dir in unit::UNIT_DIRS {
            let p = format!("{dir}/envd.service");
            let r = resolve(self.fs, &p);
            if r.hops.is_empty() && matches!(r.end, End::Missing { .. }) {
                continue;
            }
            facts.masked = r.found().is_some_and(|e| e.path == "/dev/null" || e.kind == FileKind::CharDevice)
                || matches!(&r.end, End::Dangling { target, .. } if target == "/dev/null");
            facts.unit = Some(p.clone());
            // The unit, then its drop-ins (`envd.service.d/*.conf` in every unit directory,
            // by file name, the most specific directory winning a name), as systemd merges them.
            let mut entries: Vec<(String, unit::Entry)> = Vec::new();
            if let Some(text) = r.found().filter(|e| e.kind == FileKind::Regular).and_then(|e| self.text(&e.path)) {
                entries.extend(unit::parse(&text).into_iter().map(|e| (p.clone(), e)));
            }
            let mut dropins: BTreeMap<String, String> = BTreeMap::new();
            for d in unit::UNIT_DIRS.iter().rev() {
                let ddir = format!("{d}/envd.service.d");
                if let Ok(list) = self.fs.read_dir(&ddir) {
                    let confs: Vec<(String, FileKind)> =
                        list.into_iter().filter(|(n, _)| n.ends_with(".conf")).collect();
                    for (name, _) in self.capped(&confs, &ddir, "drop-in count") {
                        dropins.insert(name.clone(), format!("{ddir}/{name}"));
                    }
                }
            }
            for path in dropins.values() {
                if let Some(text) = self.text(path) {
                    entries.extend(unit::parse(&text).into_iter().map(|e| (path.clone(), e)));
                }
            }
            let mut starts: Vec<&(String, unit::Entry)> = Vec::new();
            for fe in entries.iter().filter(|(_, e)| e.section == "Service" && e.key == "ExecStart") {
                if fe.1.value.is_empty() {
                    starts.clear();
                } else {
                    starts.push(fe);
                }
            }
            let s = Script::default();
            for (file, e) in starts {
                for c in &unit::exec_commands(&e.value) {
                    let mut f = self.command(c, &s, file, 0);
                    f.at = format!("rootfs:{file}:{}", e.line);
                    facts.exec_start.push(f);
                }
            }
            break;
        }
        for dir in ["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"] {
            let Ok(entries) = self.fs.read_dir(dir) else { continue };
            let wants: Vec<(String, FileKind)> = entries.into_iter().filter(|(n, _)| n.ends_with(".wants")).collect();
            for (name, kind) in self.capped(&wants, dir, "*.wants directory count").iter().cloned() {
                if kind != FileKind::Directory || !name.ends_with(".wants") {
                    continue;
                }
                let link = format!("{dir}/{name}/envd.service");
                let r = resolve(self.fs, &link);
                if r.hops.is_empty() && matches!(r.end, End::Missing { .. }) {
                    continue;
                }
                facts.wanted_by.push((link, r.found().is_some()));
            }
        }
        facts
    }

    fn openrc(&mut self) -> Option<OpenrcFacts> {
        let script = "/etc/init.d/envd";
        resolve(self.fs, script).found()?;
        // An openrc-run script names its daemon in `command=` and its flags in `command_args=`.
        let mut commands = Vec::new();
        if let Some(text) = self.text(script) {
            let parsed = script::parse(&text);
            if let Some(cmd) = parsed.vars.get("command").filter(|c| !c.is_empty()) {
                let line = text.lines().position(|l| l.trim_start().starts_with("command=")).map_or(0, |i| i + 1);
                let args = parsed.vars.get("command_args").cloned().unwrap_or_default();
                let joined = script::parse(&format!("{} {args}", script::quote(cmd)));
                for c in &joined.commands {
                    let mut f = self.command(c, &joined, script, 0);
                    f.at = format!("rootfs:{script}:{line}");
                    commands.push(f);
                }
            }
        }
        let mut runlevels = Vec::new();
        if let Ok(levels) = self.fs.read_dir("/etc/runlevels") {
            for (level, _) in self.capped(&levels, "/etc/runlevels", "runlevel count").iter().cloned() {
                if self.fs.lstat(&format!("/etc/runlevels/{level}/envd")).ok().flatten().is_some() {
                    runlevels.push(level);
                }
            }
        }
        Some(OpenrcFacts { script: script.to_string(), runlevels, commands })
    }

    /// Busybox init: `/etc/inittab` `id:runlevels:action:process`, or its default (rcS).
    fn inittab(&mut self) -> Vec<CommandFacts> {
        let mut out = Vec::new();
        match self.text("/etc/inittab") {
            Some(text) => {
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in self.capped(&lines, "/etc/inittab", "line count").iter().enumerate() {
                    let l = line.trim();
                    if l.is_empty() || l.starts_with('#') {
                        continue;
                    }
                    let mut f = l.splitn(4, ':');
                    let (_, _, _, Some(process)) = (f.next(), f.next(), f.next(), f.next()) else { continue };
                    // A leading `-` asks busybox for a login shell; it is not part of the path.
                    out.extend(self.snippet(process.trim_start_matches('-'), "/etc/inittab", i + 1));
                }
            }
            None => {
                if let Some(text) = self.text("/etc/init.d/rcS") {
                    out.extend(self.script("/etc/init.d/rcS", &text).commands);
                }
            }
        }
        out
    }
}

/// Read the boot path of a rootfs.
pub fn gather(fs: &Rootfs, ctx: &Context) -> BootFacts {
    let dev = fs.device().clone();
    let start = dev.bytes_read();
    let mut w = Walker { fs, ctx, visited: BTreeSet::new(), envd: Vec::new() };

    let init_target = target(fs, &ctx.init, ctx);
    let mut init = InitFacts { target: init_target, script: None, inittab: None, bytes_read: 0 };
    let kind = init.target.program.as_ref().map(|p| p.kind);
    init.bytes_read = dev.bytes_read() - start;
    let mut started = Vec::new();
    match kind {
        Some(ProgramKind::Script) => {
            let path = init.target.program.as_ref().map(|p| p.path.clone()).unwrap_or_default();
            if let Some(text) = w.text(&path) {
                let s = w.script(&path, &text);
                if s.commands.iter().flat_map(CommandFacts::walk).any(|c| c.envd) {
                    started.push(EnvdStart::Wrapper);
                }
                init.script = Some(s);
            }
        }
        Some(ProgramKind::Envd) => {
            let path = init.target.program.as_ref().map(|p| p.path.clone()).unwrap_or_default();
            w.envd_at(&path);
            started.push(EnvdStart::AsInit);
        }
        Some(ProgramKind::Busybox) => {
            let cmds = w.inittab();
            if cmds.iter().flat_map(CommandFacts::walk).any(|c| c.envd) {
                started.push(EnvdStart::Inittab);
            }
            init.inittab = Some(cmds);
        }
        _ => {}
    }
    // An ELF init that is envd under another name (e.g. /sbin/init a copy of envd).
    if kind == Some(ProgramKind::Elf) && ctx.scan == Scan::Always {
        let path = init.target.program.as_ref().map(|p| p.path.clone()).unwrap_or_default();
        let i = w.envd_at(&path);
        if w.scan(i).is_some_and(|b| b.looks_like_envd) {
            started.push(EnvdStart::AsInit);
        } else {
            w.envd.remove(i);
        }
    }
    let systemd = (kind == Some(ProgramKind::Systemd)
        || resolve(fs, "/etc/systemd/system/envd.service").found().is_some())
    .then(|| w.systemd());
    if let Some(sd) = &systemd
        && kind == Some(ProgramKind::Systemd)
        && sd.unit.is_some()
        && !sd.masked
        && sd.wanted_by.iter().any(|(_, ok)| *ok)
    {
        started.push(EnvdStart::Systemd);
    }
    let openrc = w.openrc();
    if let Some(o) = &openrc
        && !o.runlevels.is_empty()
        && kind == Some(ProgramKind::Busybox)
    {
        started.push(EnvdStart::Openrc);
    }
    // E2B's own location is always examined.
    w.envd_at(ENVD_PATH);
    if ctx.scan == Scan::Always {
        for j in 0..w.envd.len() {
            w.scan(j);
        }
    }
    let resolv_conf = ResolvConf { resolution: resolve(fs, "/etc/resolv.conf") };
    let e2b_marker = w.text("/.e2b").map(|t| E2bMarker {
        entries: t
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect(),
    });
    BootFacts {
        expected_arch: ctx.arch,
        arch_source: ctx.arch_source,
        init,
        systemd,
        openrc,
        envd: w.envd,
        envd_started_by: started,
        resolv_conf,
        e2b_marker,
        bytes_read: dev.bytes_read() - start,
    }
}
