//! Rootfs content checks: the boot path read by `rootfs::boot` (init chain, wrapper scripts,
//! envd and how it is started, systemd unit, resolv.conf, `/.e2b`) judged into findings.
//!
//! The two failures these catch are the ones operators meet most: "Kernel panic - not syncing:
//! Attempted to kill init!" (no init, a dangling link, a wrapper passing envd a flag it no longer
//! accepts — Go's flag package exits 2 — or a wrapper that ends) and envd never starting.

use crate::build::Build;
use crate::envd::Problem;
use crate::report::{Check, Finding, Severity};
use crate::rootfs::FileKind;
use crate::rootfs::boot::{
    self, BootFacts, CommandFacts, Context, End, Helper, Lookup, ProgramKind, Resolution, Scan, Target,
};
use crate::rootfs::{Anomaly, Rootfs};
use crate::snapshot::Arch;

macro_rules! check {
    ($name:ident, $id:literal, $sev:ident, $title:literal, $hint:literal) => {
        pub const $name: Check = Check { id: $id, severity: Severity::$sev, title: $title, hint: $hint };
    };
}

check!(
    INIT_MISSING,
    "init.missing",
    Error,
    "the init the kernel runs does not exist",
    "E2B boots with init=/sbin/init; make it envd or a wrapper that starts envd: tmpl inject-envd BUILD --envd PATH"
);
check!(
    INIT_DANGLING,
    "init.dangling",
    Error,
    "the init symlink chain ends nowhere",
    "the kernel gets ENOENT (\"Requested init /sbin/init failed (error -2)\"); point the link at an existing executable, or tmpl inject-envd"
);
check!(
    INIT_LOOP,
    "init.loop",
    Error,
    "the init symlink chain loops",
    "the kernel gets ELOOP (error -40); replace /sbin/init with a link to the real init"
);
check!(
    INIT_UNREADABLE,
    "init.unreadable",
    Error,
    "the init chain could not be read from the image",
    "the image is damaged where init lives; run e2fsck -fn on an assembled copy"
);
check!(
    INIT_NOT_EXECUTABLE,
    "init.not-executable",
    Error,
    "init is not an executable regular file",
    "the kernel gets EACCES (error -13); chmod 0755 the file (tmpl inject-envd writes it with the right mode)"
);
check!(
    INIT_NOT_RUNNABLE,
    "init.not-runnable",
    Error,
    "init is neither an ELF binary nor a #! script",
    "the kernel gets ENOEXEC (error -8): an empty or truncated file, or a script without #!; replace it"
);
check!(
    INIT_WRONG_ARCH,
    "init.wrong-arch",
    Error,
    "init is built for another architecture",
    "the kernel cannot run it (ENOEXEC, or SIGSEGV for some); install the binary built for the VM's architecture"
);
check!(
    INIT_LOADER_MISSING,
    "init.loader-missing",
    Error,
    "init is dynamically linked and its loader is missing",
    "the kernel gets ENOENT for a file that exists; use a static binary or copy the loader (PT_INTERP) into the image"
);
check!(
    INIT_INTERPRETER_MISSING,
    "init.interpreter-missing",
    Error,
    "init is a script whose #! interpreter is missing or unusable",
    "the kernel gets ENOENT; install the shell (e.g. busybox) or change the #! line"
);
check!(
    INIT_ENVD_NOT_STARTED,
    "init.envd-not-started",
    Error,
    "nothing in the boot path starts envd",
    "the orchestrator waits for envd on port 49983 and gives up; start envd from init (tmpl inject-envd --as wrapper or --as service)"
);
check!(
    WRAPPER_EXEC_TARGET,
    "wrapper.exec-target-missing",
    Error,
    "a wrapper execs or starts a program that cannot run",
    "PID 1 exits when its exec fails (exit status 126/127) and envd never starts; fix the path or install the program"
);
check!(
    WRAPPER_COMMAND_MISSING,
    "wrapper.command-missing",
    Warning,
    "a wrapper runs a command that is not in the image",
    "the command fails at boot (status 127); install it or remove the line"
);
check!(
    WRAPPER_ENVD_FLAG,
    "wrapper.envd-flag",
    Error,
    "a wrapper passes envd a flag this envd does not accept",
    "envd exits with status 2 (Go flag error): \"Attempted to kill init! exitcode=0x00000200\" when it is PID 1; drop the flag (-debug and -cmd are gone; -debug's successor -isnotfc is only for envd outside Firecracker): tmpl rewrite-wrapper BUILD"
);
check!(
    WRAPPER_CRLF,
    "wrapper.crlf",
    Error,
    "the init script has DOS (CRLF) line endings",
    "sh reads the carriage return as part of every command (\"envd\\r: not found\"), and the kernel as part of the #! interpreter; convert the script with dos2unix (or sed -i 's/\\r$//') — or tmpl rewrite-wrapper"
);
check!(
    WRAPPER_PID1_EXITS,
    "wrapper.pid1-exits",
    Error,
    "the init script can reach its end",
    "when PID 1 returns the kernel panics (\"Attempted to kill init! exitcode=0x00000000\"); end with exec, or supervise envd in a loop: tmpl rewrite-wrapper BUILD"
);
check!(
    ENVD_MISSING,
    "envd.missing",
    Error,
    "envd is not in the image",
    "E2B expects /usr/bin/envd; install it: tmpl inject-envd BUILD --envd PATH"
);
check!(
    ENVD_NONSTANDARD,
    "envd.nonstandard-path",
    Info,
    "envd runs from a path other than /usr/bin/envd",
    "E2B's tools (envd swap, provisioning) expect /usr/bin/envd"
);
check!(ENVD_EMPTY, "envd.empty", Error, "the envd binary is empty", "a failed copy; install envd again");
check!(
    ENVD_NOT_ELF,
    "envd.not-elf",
    Error,
    "envd is not an ELF binary",
    "a text file, an HTML error page or an archive was installed as envd; install the real binary"
);
check!(ENVD_NOT_EXECUTABLE, "envd.not-executable", Error, "envd is not executable", "chmod 0755 /usr/bin/envd");
check!(
    ENVD_WRONG_ARCH,
    "envd.wrong-arch",
    Error,
    "envd is built for another architecture",
    "install the envd built for the VM's architecture"
);
check!(
    ENVD_LOADER_MISSING,
    "envd.loader-missing",
    Error,
    "envd is dynamically linked and its loader is missing",
    "E2B's envd is static; install a static build (CGO_ENABLED=0) or the loader"
);
check!(
    SYSTEMD_SERVICE_MISSING,
    "systemd.envd-service-missing",
    Error,
    "init is systemd but there is no envd.service",
    "install the unit and its wants link: tmpl inject-envd BUILD --envd PATH --as service"
);
check!(
    SYSTEMD_MASKED,
    "systemd.envd-masked",
    Error,
    "envd.service is masked (a link to /dev/null)",
    "remove the mask link so systemd can start envd"
);
check!(
    SYSTEMD_NOT_ENABLED,
    "systemd.envd-not-enabled",
    Error,
    "envd.service is not enabled",
    "link it into multi-user.target.wants (E2B uses an absolute link): tmpl inject-envd --as service"
);
check!(
    SYSTEMD_NO_EXEC_START,
    "systemd.no-exec-start",
    Error,
    "envd.service has no ExecStart=",
    "systemd refuses to start a service without ExecStart"
);
check!(
    SYSTEMD_EXEC_START_MISSING,
    "systemd.exec-start-missing",
    Error,
    "envd.service's ExecStart program cannot run",
    "systemd logs status=203/EXEC and envd never starts; fix the path or install the program"
);
check!(
    SYSTEMD_ENVD_FLAG,
    "systemd.envd-flag",
    Error,
    "envd.service passes envd a flag this envd does not accept",
    "envd exits with status 2 and systemd restarts it forever; drop the flag from ExecStart"
);
check!(
    ENVD_TRUNCATED,
    "envd.truncated",
    Error,
    "the envd binary is cut short",
    "its ELF headers describe bytes past the end of the file (an interrupted copy): the kernel maps the missing part and envd dies with SIGBUS or SIGSEGV when it starts; install the whole binary: tmpl inject-envd BUILD --envd PATH"
);
check!(
    OVER_CAP,
    "rootfs.over-cap",
    Warning,
    "a file in the boot path claims a size tmpl does not read",
    "tmpl caps what it reads from an image (symlink targets 4095 bytes as the kernel does, scripts and units 1 MiB, directories 32 MiB); an inode over the cap is corrupt or not what it should be, and what lies behind it was not checked. Run e2fsck -fn on an assembled copy"
);
check!(
    READER_PANIC,
    "rootfs.reader-panic",
    Error,
    "the ext4 reader failed on this filesystem",
    "the filesystem is corrupt in a way the ext4 reader (ext4-view) does not survive; the rest of the rootfs contents were not checked. Run e2fsck -fn on an assembled copy to see the damage, and restore the rootfs from the source storage"
);
check!(
    RESOLV_DANGLING,
    "rootfs.resolv-conf-dangling",
    Warning,
    "/etc/resolv.conf is a dangling symlink",
    "DNS fails in the sandbox unless something creates the target at boot (systemd-resolved does, envd as init does not); write a regular file"
);
check!(
    RESOLV_MISSING,
    "rootfs.resolv-conf-missing",
    Warning,
    "/etc/resolv.conf does not exist",
    "DNS fails in the sandbox; E2B's build writes one"
);
check!(
    E2B_MARKER_MISMATCH,
    "rootfs.e2b-marker-mismatch",
    Warning,
    "/.e2b names another build",
    "the rootfs was built as another build (copied, or a snapshot of a template); harmless for snapshots, a sign of a hand copy otherwise"
);

pub const CHECKS: &[&Check] = &[
    &INIT_MISSING,
    &INIT_DANGLING,
    &INIT_LOOP,
    &INIT_UNREADABLE,
    &INIT_NOT_EXECUTABLE,
    &INIT_NOT_RUNNABLE,
    &INIT_WRONG_ARCH,
    &INIT_LOADER_MISSING,
    &INIT_INTERPRETER_MISSING,
    &INIT_ENVD_NOT_STARTED,
    &WRAPPER_EXEC_TARGET,
    &WRAPPER_COMMAND_MISSING,
    &WRAPPER_ENVD_FLAG,
    &WRAPPER_PID1_EXITS,
    &WRAPPER_CRLF,
    &ENVD_MISSING,
    &ENVD_NONSTANDARD,
    &ENVD_EMPTY,
    &ENVD_NOT_ELF,
    &ENVD_NOT_EXECUTABLE,
    &ENVD_WRONG_ARCH,
    &ENVD_LOADER_MISSING,
    &ENVD_TRUNCATED,
    &OVER_CAP,
    &READER_PANIC,
    &SYSTEMD_SERVICE_MISSING,
    &SYSTEMD_MASKED,
    &SYSTEMD_NOT_ENABLED,
    &SYSTEMD_NO_EXEC_START,
    &SYSTEMD_EXEC_START_MISSING,
    &SYSTEMD_ENVD_FLAG,
    &RESOLV_DANGLING,
    &RESOLV_MISSING,
    &E2B_MARKER_MISMATCH,
];

fn at(path: &str) -> Option<String> {
    Some(format!("rootfs:{path}"))
}

/// The context of a build: the architecture (snapfile's, else the host's) and the init path
/// (`init=` in metadata's cmdline_args, else /sbin/init).
pub fn context(build: &Build, scan: Scan) -> Context {
    let snap_arch = build.snapfile.parsed().and_then(|s| s.arch);
    let (arch, arch_source) = match snap_arch {
        Some(a) => (Some(a), "snapfile"),
        None => (Arch::host(), "host"),
    };
    let init = build
        .meta()
        .and_then(|m| m.cmdline_args.get("init").cloned())
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| boot::DEFAULT_INIT.to_string());
    Context { arch, arch_source, init, scan }
}

/// Gather the boot facts of a build's rootfs and judge them. What the filesystem refused to read
/// (sizes over a cap, a reader panic) is a finding too; after a reader panic the facts are
/// incomplete, so only that is reported.
pub fn check(build: &Build, fs: &Rootfs, scan: Scan) -> (BootFacts, Vec<Finding>) {
    let facts = boot::gather(fs, &context(build, scan));
    let generation = build.rootfs.header.parsed().map(|h| h.generation);
    let anomalies = anomaly_findings(&fs.anomalies());
    if fs.reader_failed() {
        return (facts, anomalies);
    }
    // A build whose identity is unknown (folder not a UUID, no header or metadata naming it)
    // cannot be compared with /.e2b.
    let id = (!build.id.is_nil()).then(|| build.id.to_string());
    let mut findings = judge(&facts, id.as_deref(), generation);
    findings.extend(anomalies);
    (facts, findings)
}

/// One finding per anomaly the filesystem recorded while it was read.
pub fn anomaly_findings(anomalies: &[Anomaly]) -> Vec<Finding> {
    anomalies
        .iter()
        .map(|a| match a {
            Anomaly::OverCap { path, what, .. } => {
                let f = Finding::new(&OVER_CAP, at(path), a.to_string());
                // A link target over the kernel's limit is a corrupt inode, not just unchecked.
                if *what == "symlink target" { f.severity(Severity::Error) } else { f }
            }
            Anomaly::ReaderPanic { path, .. } => Finding::new(
                &READER_PANIC,
                at(path),
                format!("{a}; the rootfs contents were not checked past this point"),
            ),
        })
        .collect()
}

/// Why a resolution did not end in a usable file, in words.
pub fn why(r: &Resolution) -> String {
    match &r.end {
        End::Missing { path } => format!("{path} does not exist"),
        End::Dangling { link, target } if *link == r.path => format!("{}: {target} does not exist", r.describe()),
        End::Dangling { link, target } => {
            format!("{}: {target} does not exist (dangling link {link})", r.describe())
        }
        End::Loop { path } => format!("{} loops (more than 40 links at {path})", r.describe()),
        End::Unreadable { path, message } => format!("{path} cannot be read: {message}"),
        End::Found { entry } => {
            if entry.kind != FileKind::Regular {
                format!("{} is a {:?}, not a regular file", entry.path, entry.kind).to_lowercase()
            } else {
                format!("{} (mode {:04o})", entry.path, entry.mode)
            }
        }
    }
}

fn helper_problem(h: &Helper, what: &str) -> String {
    if h.resolution.path.ends_with('\r') {
        return format!(
            "its {what} is {:?}: the #! line ends with a carriage return (DOS line endings), and no such file exists",
            h.resolution.path
        );
    }
    match h.resolution.found() {
        None => format!("its {what} {}", why(&h.resolution)),
        Some(e) if !e.is_executable() => format!("its {what} {} is not executable", e.path),
        Some(e) => format!(
            "its {what} {} is built for {}",
            e.path,
            h.elf.as_ref().map(|i| i.machine_name()).unwrap_or("another architecture")
        ),
    }
}

/// Why a target cannot run, or None when it can.
fn target_problem(t: &Target, expected: Option<Arch>) -> Option<String> {
    let Some(p) = &t.program else {
        return Some(match (&t.error, t.resolution.found()) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) if e.kind != FileKind::Regular => why(&t.resolution),
            _ => why(&t.resolution),
        });
    };
    if !p.executable() {
        return Some(format!("{} is not executable (mode {:04o})", p.path, p.mode));
    }
    match p.kind {
        ProgramKind::Empty => return Some(format!("{} is empty", p.path)),
        ProgramKind::NotRunnable => {
            return Some(format!(
                "{} is not runnable: {}",
                p.path,
                p.not_elf.as_deref().unwrap_or("no ELF header, no #!")
            ));
        }
        _ => {}
    }
    if p.wrong_arch {
        return Some(format!(
            "{} is built for {}, the VM is {}",
            p.path,
            p.elf.as_ref().map(|i| i.machine_name()).unwrap_or("?"),
            expected.map(|a| a.name()).unwrap_or("?")
        ));
    }
    if let Some(t) = &p.truncated {
        return Some(format!("{}: {t}", p.path));
    }
    if let Some(l) = p.loader.as_ref().filter(|l| !l.usable) {
        return Some(format!("{}: {}", p.path, helper_problem(l, "loader")));
    }
    if let Some(i) = p.interpreter.as_ref().filter(|i| !i.usable) {
        return Some(format!("{}: {}", p.path, helper_problem(i, "interpreter")));
    }
    None
}

fn flag_findings(c: &CommandFacts, check: &'static Check, out: &mut Vec<Finding>) {
    let Some(f) = &c.flags else { return };
    for p in &f.problems {
        let binary = f.binary.as_deref().unwrap_or(boot::ENVD_PATH);
        let era = if f.era_known {
            format!("the envd at {binary} looks like: {}", f.era)
        } else {
            format!("the era of {binary} cannot be told; checked against the current envd ({})", f.era)
        };
        let mut finding =
            Finding::new(check, Some(c.at.clone()), format!("`{}`: {} — {era}", c.words.join(" "), p.describe()));
        if !f.era_known && !matches!(p, Problem::Unknown { .. } | Problem::MissingValue { .. }) {
            finding = finding.severity(Severity::Warning);
        }
        out.push(finding);
    }
}

/// Commands that are missing but not critical, merged per script and program: (script, program)
/// → (line, command, why).
type Missing = std::collections::BTreeMap<(String, String), Vec<(String, String, String)>>;

fn command_findings(
    c: &CommandFacts,
    critical_ctx: bool,
    expected: Option<Arch>,
    out: &mut Vec<Finding>,
    missing: &mut Missing,
    unit: bool,
) {
    let critical = critical_ctx || c.exec || c.envd;
    let problem = match &c.lookup {
        Lookup::Broken { target } => Some(target_problem(target, expected).unwrap_or_else(|| "cannot run".into())),
        Lookup::NotInPath { path } => Some(format!("{} is in none of {}", c.words[0], path.join(":"))),
        _ => None,
    };
    if let Some(why) = problem {
        if unit || critical {
            let check = if unit { &SYSTEMD_EXEC_START_MISSING } else { &WRAPPER_EXEC_TARGET };
            out.push(Finding::new(check, Some(c.at.clone()), format!("`{}`: {why}", c.words.join(" "))));
        } else {
            let (script, line) = c.at.rsplit_once(':').unwrap_or((c.at.as_str(), ""));
            missing.entry((script.to_string(), c.words[0].clone())).or_default().push((
                line.to_string(),
                c.words.join(" "),
                why,
            ));
        }
    }
    flag_findings(c, if unit { &SYSTEMD_ENVD_FLAG } else { &WRAPPER_ENVD_FLAG }, out);
    for n in &c.nested {
        command_findings(n, false, expected, out, missing, false);
    }
}

fn missing_findings(missing: Missing, out: &mut Vec<Finding>) {
    for ((script, program), uses) in missing {
        let lines: Vec<&str> = uses.iter().map(|(l, _, _)| l.as_str()).collect();
        let (first_line, first_cmd, why) = &uses[0];
        let more = if uses.len() > 1 { format!(" (lines {})", lines.join(", ")) } else { String::new() };
        out.push(Finding::new(
            &WRAPPER_COMMAND_MISSING,
            Some(format!("{script}:{first_line}")),
            format!("`{first_cmd}`: {why}{more}; `{program}` fails wherever it is used"),
        ));
    }
}

/// Findings from boot facts. `build_id` and `generation` are used for the `/.e2b` check.
pub fn judge(f: &BootFacts, build_id: Option<&str>, generation: Option<u64>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut missing = Missing::new();
    let init = &f.init.target;
    let init_path = init.resolution.path.clone();
    // The init chain.
    match &init.resolution.end {
        End::Missing { path } => out.push(Finding::new(&INIT_MISSING, at(path), format!("{path} does not exist"))),
        End::Dangling { .. } => out.push(Finding::new(&INIT_DANGLING, at(&init_path), why(&init.resolution))),
        End::Loop { .. } => out.push(Finding::new(&INIT_LOOP, at(&init_path), why(&init.resolution))),
        End::Unreadable { .. } => out.push(Finding::new(&INIT_UNREADABLE, at(&init_path), why(&init.resolution))),
        End::Found { entry } => {
            let chain = init.resolution.describe();
            if entry.kind != FileKind::Regular || !entry.is_executable() {
                out.push(Finding::new(
                    &INIT_NOT_EXECUTABLE,
                    at(&init_path),
                    format!("{chain}: {}", why(&init.resolution)),
                ));
            } else if let Some(p) = &init.program {
                match p.kind {
                    ProgramKind::Empty | ProgramKind::NotRunnable => out.push(Finding::new(
                        &INIT_NOT_RUNNABLE,
                        at(&init_path),
                        format!("{chain}: {}", target_problem(init, f.expected_arch).unwrap_or_default()),
                    )),
                    _ if p.truncated.is_some() => out.push(Finding::new(
                        &INIT_NOT_RUNNABLE,
                        at(&init_path),
                        format!("{chain}: {}", target_problem(init, f.expected_arch).unwrap_or_default()),
                    )),
                    _ if p.wrong_arch => out.push(Finding::new(
                        &INIT_WRONG_ARCH,
                        at(&init_path),
                        format!(
                            "{chain}: {} (expected from the {})",
                            target_problem(init, f.expected_arch).unwrap_or_default(),
                            f.arch_source
                        ),
                    )),
                    _ => {}
                }
                if let Some(l) = p.loader.as_ref().filter(|l| !l.usable) {
                    out.push(Finding::new(
                        &INIT_LOADER_MISSING,
                        at(&init_path),
                        format!("{chain}: {}", helper_problem(l, "loader")),
                    ));
                }
                if let Some(i) = p.interpreter.as_ref().filter(|i| !i.usable) {
                    out.push(Finding::new(
                        &INIT_INTERPRETER_MISSING,
                        at(&init_path),
                        format!("{chain}: {}", helper_problem(i, "interpreter")),
                    ));
                }
            } else if let Some(e) = &init.error {
                out.push(Finding::new(&INIT_UNREADABLE, at(&init_path), e.clone()));
            }
        }
    }
    // What init runs.
    if let Some(s) = &f.init.script {
        if s.crlf {
            out.push(Finding::new(&WRAPPER_CRLF, at(&s.path), format!("{} has CRLF line endings", s.path)));
        }
        if !s.keeps_running {
            out.push(Finding::new(
                &WRAPPER_PID1_EXITS,
                at(&s.path),
                format!("{} runs as PID 1 and has no exec, loop, wait or foreground envd at its top level: when it ends, the kernel panics", s.path),
            ));
        }
        for c in &s.commands {
            command_findings(c, false, f.expected_arch, &mut out, &mut missing, false);
        }
    }
    if let Some(cmds) = &f.init.inittab {
        for c in cmds {
            command_findings(c, false, f.expected_arch, &mut out, &mut missing, false);
        }
    }
    let init_kind = init.program.as_ref().map(|p| p.kind);
    if let Some(o) = &f.openrc {
        for c in &o.commands {
            command_findings(c, true, f.expected_arch, &mut out, &mut missing, false);
        }
    }
    missing_findings(std::mem::take(&mut missing), &mut out);
    // systemd.
    if init_kind == Some(ProgramKind::Systemd) {
        match &f.systemd {
            Some(sd) if sd.unit.is_some() => {
                let unit = sd.unit.clone().unwrap_or_default();
                if sd.masked {
                    out.push(Finding::new(&SYSTEMD_MASKED, at(&unit), format!("{unit} links to /dev/null")));
                } else {
                    if !sd.wanted_by.iter().any(|(_, ok)| *ok) {
                        let msg = if sd.wanted_by.is_empty() {
                            format!("{unit} exists but no *.target.wants/envd.service link enables it")
                        } else {
                            format!(
                                "the links that enable it do not resolve: {}",
                                sd.wanted_by.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        };
                        out.push(Finding::new(&SYSTEMD_NOT_ENABLED, at(&unit), msg));
                    }
                    if sd.exec_start.is_empty() {
                        out.push(Finding::new(
                            &SYSTEMD_NO_EXEC_START,
                            at(&unit),
                            format!("{unit} has no ExecStart= in [Service]"),
                        ));
                    }
                    for c in &sd.exec_start {
                        command_findings(c, true, f.expected_arch, &mut out, &mut missing, true);
                    }
                }
            }
            _ => out.push(Finding::new(
                &SYSTEMD_SERVICE_MISSING,
                at("/etc/systemd/system/envd.service"),
                format!(
                    "{init_path} is systemd, and none of {} holds envd.service",
                    crate::rootfs::unit::UNIT_DIRS.join(", ")
                ),
            )),
        }
    }
    // envd binaries.
    let started = !f.envd_started_by.is_empty();
    let any_found = f.envd.iter().any(|e| e.target.resolution.found().is_some());
    for e in &f.envd {
        let t = &e.target;
        let Some(found) = t.resolution.found() else {
            if e.path == boot::ENVD_PATH || t.resolution.path == boot::ENVD_PATH {
                if any_found && started {
                    out.push(Finding::new(
                        &ENVD_NONSTANDARD,
                        at(boot::ENVD_PATH),
                        format!("{}; envd is started from elsewhere", why(&t.resolution)),
                    ));
                } else {
                    out.push(Finding::new(&ENVD_MISSING, at(boot::ENVD_PATH), why(&t.resolution)));
                }
            }
            continue;
        };
        let file = at(&found.path);
        if found.kind != FileKind::Regular {
            out.push(Finding::new(&ENVD_NOT_ELF, file, why(&t.resolution)));
            continue;
        }
        let Some(p) = &t.program else { continue };
        if p.kind == ProgramKind::Empty {
            out.push(Finding::new(&ENVD_EMPTY, file, format!("{} is 0 bytes", p.path)));
            continue;
        }
        if p.elf.is_none() {
            // A wrapper script named envd is fine when what it runs is checked; other content is not.
            if p.kind != ProgramKind::Script {
                out.push(Finding::new(
                    &ENVD_NOT_ELF,
                    file.clone(),
                    format!("{}: {}", p.path, p.not_elf.as_deref().unwrap_or("not ELF")),
                ));
            }
        } else {
            if p.wrong_arch {
                out.push(Finding::new(
                    &ENVD_WRONG_ARCH,
                    file.clone(),
                    target_problem(t, f.expected_arch).unwrap_or_default(),
                ));
            }
            if let Some(t) = &p.truncated {
                out.push(Finding::new(&ENVD_TRUNCATED, file.clone(), format!("{}: {t}", p.path)));
            }
            if let Some(l) = p.loader.as_ref().filter(|l| !l.usable) {
                out.push(Finding::new(
                    &ENVD_LOADER_MISSING,
                    file.clone(),
                    format!("{}: {}", p.path, helper_problem(l, "loader")),
                ));
            }
        }
        if !p.executable() {
            out.push(Finding::new(&ENVD_NOT_EXECUTABLE, file, format!("{} has mode {:04o}", p.path, p.mode)));
        }
    }
    // Is envd started at all?
    if !started && init.program.is_some() {
        let understood = matches!(init_kind, Some(ProgramKind::Script | ProgramKind::Systemd | ProgramKind::Busybox));
        // systemd without a unit already has its own finding.
        let covered = init_kind == Some(ProgramKind::Systemd);
        if !covered {
            let mut finding = Finding::new(
                &INIT_ENVD_NOT_STARTED,
                at(&init_path),
                format!(
                    "{} runs {}, and nothing it starts runs envd",
                    init.resolution.describe(),
                    init.program.as_ref().map(|p| p.path.as_str()).unwrap_or("?")
                ),
            );
            if !understood {
                finding = finding.severity(Severity::Warning).hint(
                    "tmpl cannot read what this init program starts; if it does not start envd, the sandbox never becomes ready",
                );
            }
            out.push(finding);
        }
    }
    // resolv.conf.
    match &f.resolv_conf.resolution.end {
        End::Missing { .. } => {
            out.push(Finding::new(&RESOLV_MISSING, at("/etc/resolv.conf"), "/etc/resolv.conf does not exist"))
        }
        End::Dangling { target, .. }
            if init_kind == Some(ProgramKind::Systemd) && target.starts_with("/run/systemd/resolve/") =>
        {
            let msg = format!("{} (systemd-resolved creates it at boot)", why(&f.resolv_conf.resolution));
            out.push(Finding::new(&RESOLV_DANGLING, at("/etc/resolv.conf"), msg).severity(Severity::Info));
        }
        End::Dangling { .. } => {
            out.push(Finding::new(&RESOLV_DANGLING, at("/etc/resolv.conf"), why(&f.resolv_conf.resolution)))
        }
        _ => {}
    }
    // /.e2b.
    if let (Some(m), Some(id)) = (&f.e2b_marker, build_id)
        && let Some(marked) = m.get("BUILD_ID")
        && marked != id
    {
        let mut finding = Finding::new(
            &E2B_MARKER_MISMATCH,
            at("/.e2b"),
            format!("/.e2b says BUILD_ID={marked}, this build is {id}"),
        );
        if generation.is_some_and(|g| g > 0) {
            finding = finding.severity(Severity::Info);
        }
        out.push(finding);
    }
    out
}
