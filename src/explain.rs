//! Decode what operators paste: kernel panics, Firecracker and orchestrator errors, envd and
//! shell messages from a serial console. Each recognised line becomes an [`Explanation`]: what it
//! means (wait statuses and errnos decoded), the likely cause, the tmpl finding ids that confirm
//! it offline, and the command to run. `tmpl boot-test` decodes its console through the same
//! function, so a boot verdict and a pasted log read the same way.
//!
//! Sources of the decoding rules: peers-and-demand.md §1.2 (symptom → cause → check),
//! firecracker-snapshot.md §3 (CRC and snapshot error texts per Firecracker version),
//! e2b-formats.md §5 (envd flags), Linux `init/main.c` and `kernel/exit.c` (panic texts; the
//! `exitcode` is the wait status of PID 1), and Go's `flag` package (exit status 2).
//!
//! Finding ids are referenced only through [`RULES`], one table, so a test can check them
//! against `checks::catalog()`.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::envd;
use crate::rootfs::superblock;

mod fc_snapshot;
use crate::snapshot::{self, FirecrackerVersion};
pub use fc_snapshot::{WORDINGS, Wording};

/// The command that confirms most findings offline.
pub const VERIFY: &str = "tmpl verify <build>";
/// Reading the init chain by hand.
const CAT_INIT: &str = "tmpl inspect <build> --path /sbin/init --cat";

/// One decoding rule: a stable key, a title and the finding ids that confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub key: &'static str,
    pub title: &'static str,
    /// Finding ids (`tmpl verify`) that confirm this cause offline.
    pub findings: &'static [&'static str],
}

const INIT_ENOENT: &[&str] = &["init.missing", "init.dangling", "init.loader-missing", "init.interpreter-missing"];
const INIT_ALL: &[&str] = &[
    "init.missing",
    "init.dangling",
    "init.loop",
    "init.not-executable",
    "init.not-runnable",
    "init.wrong-arch",
    "init.loader-missing",
    "init.interpreter-missing",
];

/// Every rule. The ONLY place finding ids are named in this module.
/// The rules, one constant each: a decoder names the rule it found by its constant, so a
/// misspelt rule does not compile (no lookup by key, no fallback).
pub mod rule {
    use super::{INIT_ALL, INIT_ENOENT, Rule};

    pub const PANIC_INIT_EXIT_0: Rule = Rule {
        key: "panic.init-exit-0",
        title: "PID 1 exited with status 0",
        findings: &["wrapper.pid1-exits", "wrapper.exec-target-missing", "envd.missing"],
    };
    pub const PANIC_INIT_EXIT_1: Rule = Rule {
        key: "panic.init-exit-1",
        title: "PID 1 exited with status 1",
        findings: &["wrapper.exec-target-missing", "envd.missing", "envd.wrong-arch"],
    };
    pub const PANIC_INIT_EXIT_2: Rule = Rule {
        key: "panic.init-exit-2",
        title: "PID 1 exited with status 2 (Go flag error or Go panic)",
        findings: &["wrapper.envd-flag", "systemd.envd-flag", "envd.wrong-arch"],
    };
    pub const PANIC_INIT_EXIT_126: Rule = Rule {
        key: "panic.init-exit-126",
        title: "PID 1 exited with status 126 (found but cannot execute)",
        findings: &["init.not-executable", "envd.wrong-arch", "wrapper.exec-target-missing"],
    };
    pub const PANIC_INIT_EXIT_127: Rule = Rule {
        key: "panic.init-exit-127",
        title: "PID 1 exited with status 127 (command or interpreter not found)",
        findings: &[
            "init.interpreter-missing",
            "wrapper.exec-target-missing",
            "envd.missing",
            "envd.loader-missing",
            "init.loader-missing",
        ],
    };
    pub const PANIC_INIT_EXIT_OTHER: Rule = Rule {
        key: "panic.init-exit-other",
        title: "PID 1 exited with a non-zero status",
        findings: &["wrapper.exec-target-missing"],
    };
    pub const PANIC_INIT_SIGNAL_SEGV: Rule = Rule {
        key: "panic.init-signal-segv",
        title: "PID 1 was killed by SIGSEGV",
        findings: &["init.wrong-arch", "envd.wrong-arch", "init.loader-missing", "envd.loader-missing"],
    };
    pub const PANIC_INIT_SIGNAL_ILL: Rule = Rule {
        key: "panic.init-signal-ill",
        title: "PID 1 was killed by SIGILL",
        findings: &["init.wrong-arch", "envd.wrong-arch"],
    };
    pub const PANIC_INIT_SIGNAL_BUS: Rule = Rule {
        key: "panic.init-signal-bus",
        title: "PID 1 was killed by SIGBUS",
        findings: &["memfile.size-mismatch"],
    };
    pub const PANIC_INIT_SIGNAL_KILL: Rule =
        Rule { key: "panic.init-signal-kill", title: "PID 1 was killed by SIGKILL", findings: &[] };
    pub const PANIC_INIT_SIGNAL_OTHER: Rule =
        Rule { key: "panic.init-signal-other", title: "PID 1 was killed by a signal", findings: &[] };
    pub const INIT_EXEC_ENOENT: Rule =
        Rule { key: "init.exec-enoent", title: "the kernel could not find init (ENOENT)", findings: INIT_ENOENT };
    pub const INIT_EXEC_ENOEXEC: Rule = Rule {
        key: "init.exec-enoexec",
        title: "init is not an executable format (ENOEXEC)",
        findings: &["init.not-runnable", "init.wrong-arch", "envd.not-elf", "envd.empty"],
    };
    pub const INIT_EXEC_EACCES: Rule =
        Rule { key: "init.exec-eacces", title: "init is not executable (EACCES)", findings: &["init.not-executable"] };
    pub const INIT_EXEC_ELOOP: Rule =
        Rule { key: "init.exec-eloop", title: "init is a symlink loop (ELOOP)", findings: &["init.loop"] };
    pub const INIT_EXEC_ENOTDIR: Rule =
        Rule { key: "init.exec-enotdir", title: "a directory in init's path is not one", findings: &["init.dangling"] };
    pub const INIT_EXEC_EIO: Rule = Rule {
        key: "init.exec-eio",
        title: "I/O error reading init",
        findings: &["rootfs.fs-errors", "rootfs.truncated"],
    };
    pub const INIT_EXEC_OTHER: Rule =
        Rule { key: "init.exec-other", title: "the kernel could not run init", findings: INIT_ALL };
    pub const INIT_NONE_FOUND: Rule =
        Rule { key: "init.none-found", title: "no working init found", findings: INIT_ALL };
    pub const ENVD_FLAG_UNDEFINED: Rule = Rule {
        key: "envd.flag-undefined",
        title: "a Go program (envd) was given a flag it does not define",
        findings: &["wrapper.envd-flag", "systemd.envd-flag"],
    };
    pub const SNAPFILE_CRC: Rule =
        Rule { key: "snapfile.crc", title: "snapfile CRC64 validation failed", findings: &["snapfile.crc-mismatch"] };
    pub const SNAPFILE_MAGIC: Rule = Rule {
        key: "snapfile.magic",
        title: "snapfile magic does not match the architecture",
        findings: &["snapfile.bad-magic", "snapfile.crc-zero", "snapfile.foreign-arch"],
    };
    pub const SNAPFILE_VERSION: Rule = Rule {
        key: "snapfile.version",
        title: "snapfile format version not loadable by this Firecracker",
        findings: &["snapfile.version-mismatch", "snapfile.bad-header"],
    };
    pub const SNAPFILE_TOO_SHORT: Rule =
        Rule { key: "snapfile.too-short", title: "snapfile shorter than its CRC", findings: &["snapfile.too-short"] };
    pub const SNAPFILE_TOO_LARGE: Rule = Rule {
        key: "snapfile.too-large",
        title: "snapfile over Firecracker's size limit",
        findings: &["snapfile.too-large"],
    };
    pub const SNAPFILE_DECODE: Rule = Rule {
        key: "snapfile.decode",
        title: "Firecracker could not decode the snapfile",
        findings: &[
            "snapfile.version-mismatch",
            "snapfile.state-undecodable",
            "snapfile.bad-header",
            "snapfile.crc-mismatch",
        ],
    };
    pub const SNAPFILE_DECODE_SHORT: Rule = Rule {
        key: "snapfile.decode-short",
        title: "the snapfile's state ended before Firecracker finished decoding it",
        findings: &[
            "snapfile.version-mismatch",
            "snapfile.state-undecodable",
            "snapfile.crc-mismatch",
            "snapfile.too-short",
        ],
    };
    pub const SNAPFILE_DECODE_HEADER: Rule = Rule {
        key: "snapfile.decode-header",
        title: "the snapfile's header is not a Firecracker header (version string unreadable)",
        findings: &["snapfile.bad-magic", "snapfile.crc-zero", "snapfile.bad-header"],
    };
    pub const SNAPFILE_BITCODE: Rule = Rule {
        key: "snapfile.bitcode",
        title: "Firecracker v1.15+ could not decode the bitcode snapfile",
        findings: &[
            "snapfile.trailing-bytes",
            "snapfile.version-mismatch",
            "snapfile.crc-mismatch",
            "snapfile.bad-magic",
            "snapfile.state-undecodable",
        ],
    };
    pub const SNAPFILE_OPEN: Rule = Rule {
        key: "snapfile.open",
        title: "Firecracker could not open the snapfile",
        findings: &["snapfile.missing", "snapfile.unreadable"],
    };
    pub const SNAPFILE_IO: Rule =
        Rule { key: "snapfile.io", title: "reading the snapfile failed", findings: &["snapfile.unreadable"] };
    pub const SNAPFILE_MEMORY_REGIONS: Rule = Rule {
        key: "snapfile.memory-regions",
        title: "the snapshot state fails Firecracker's memory sanity check",
        findings: &["snapfile.memory-regions"],
    };
    pub const SNAPSHOT_DEVICE_OVERRIDE: Rule = Rule {
        key: "snapshot.device-override",
        title: "the load request overrides a device the snapshot does not have",
        findings: &[],
    };
    pub const MEMFILE_RESTORE: Rule = Rule {
        key: "memfile.restore",
        title: "guest memory could not be restored",
        findings: &["memfile.size-mismatch", "memfile.missing", "memfile.missing-data", "header.data-too-short"],
    };
    pub const HOST_UFFD: Rule =
        Rule { key: "host.uffd", title: "the host kernel refused userfaultfd registration", findings: &[] };
    pub const ROOTFS_NO_ROOT_DEVICE: Rule =
        Rule { key: "rootfs.no-root-device", title: "the kernel found no root device", findings: &[] };
    pub const KERNEL_VIRTIO_MMIO_PROBE: Rule = Rule {
        key: "kernel.virtio-mmio-probe",
        title: "the guest kernel could not set up a virtio-mmio device",
        findings: &["kernel.virtio-discovery"],
    };
    pub const ROOTFS_MOUNT_FAILED: Rule = Rule {
        key: "rootfs.mount-failed",
        title: "the kernel could not mount the root filesystem",
        findings: &["rootfs.not-ext4", "rootfs.truncated", "rootfs.needs-recovery"],
    };
    pub const EXT4_NOT_FOUND: Rule =
        Rule { key: "ext4.not-found", title: "no ext4 filesystem on the root device", findings: &["rootfs.not-ext4"] };
    pub const EXT4_ERROR: Rule = Rule {
        key: "ext4.error",
        title: "ext4 found corruption",
        findings: &["rootfs.fs-errors", "rootfs.truncated", "header.data-too-short"],
    };
    pub const EXT4_RECOVERY: Rule =
        Rule { key: "ext4.recovery", title: "the ext4 journal needs recovery", findings: &["rootfs.needs-recovery"] };
    pub const EXT4_FEATURES: Rule = Rule {
        key: "ext4.features",
        title: "the kernel does not support the image's ext4 features",
        findings: &["rootfs.unsupported-features"],
    };
    pub const HOST_ENVD_MISSING: Rule =
        Rule { key: "host.envd-missing", title: "the node's envd binary is missing", findings: &[] };
    pub const HOST_EXEC_FAILED: Rule =
        Rule { key: "host.exec-failed", title: "the orchestrator could not start a program", findings: &[] };
    pub const GUEST_NOT_FOUND: Rule = Rule {
        key: "guest.not-found",
        title: "a program in the guest was not found",
        findings: &[
            "wrapper.exec-target-missing",
            "envd.missing",
            "envd.loader-missing",
            "init.interpreter-missing",
            "init.loader-missing",
        ],
    };
    pub const GUEST_EXEC_FORMAT: Rule = Rule {
        key: "guest.exec-format",
        title: "a program in the guest is for another architecture or not a program",
        findings: &["envd.wrong-arch", "init.wrong-arch", "init.not-runnable", "envd.not-elf"],
    };
    pub const GUEST_PERMISSION: Rule = Rule {
        key: "guest.permission",
        title: "a program in the guest is not executable",
        findings: &["init.not-executable", "envd.not-executable", "wrapper.exec-target-missing"],
    };
    pub const SYSTEMD_UNIT_MISSING: Rule = Rule {
        key: "systemd.unit-missing",
        title: "systemd has no envd.service",
        findings: &["systemd.envd-service-missing", "systemd.envd-masked", "systemd.envd-not-enabled"],
    };
    pub const SYSTEMD_EXEC_FAILED: Rule = Rule {
        key: "systemd.exec-failed",
        title: "systemd could not start envd",
        findings: &["systemd.exec-start-missing", "envd.missing", "envd.loader-missing", "envd.wrong-arch"],
    };
    pub const SYSTEMD_ENVD_EXITED: Rule = Rule {
        key: "systemd.envd-exited",
        title: "envd's service process exited",
        findings: &["systemd.envd-flag", "wrapper.envd-flag", "envd.wrong-arch", "envd.loader-missing"],
    };
    pub const WRAPPER_ENVD_EXITED: Rule = Rule {
        key: "wrapper.envd-exited",
        title: "envd exited under tmpl's init wrapper (restarted)",
        findings: &["wrapper.envd-flag", "wrapper.command-missing", "envd.wrong-arch", "envd.loader-missing"],
    };
    pub const GUEST_OOM: Rule = Rule { key: "guest.oom", title: "the guest ran out of memory", findings: &[] };
    pub const METADATA_SEMVER: Rule = Rule {
        key: "metadata.semver",
        title: "a version field in metadata.json is empty or not a version",
        findings: &["metadata.no-template", "metadata.bad-field", "metadata.unknown-firecracker", "metadata.absent"],
    };
    pub const KERNEL_PANIC: Rule = Rule { key: "kernel.panic", title: "kernel panic", findings: &[] };
}

/// Every rule (what `tmpl explain` documents and its tests read).
pub const RULES: &[&Rule] = &[
    &rule::PANIC_INIT_EXIT_0,
    &rule::PANIC_INIT_EXIT_1,
    &rule::PANIC_INIT_EXIT_2,
    &rule::PANIC_INIT_EXIT_126,
    &rule::PANIC_INIT_EXIT_127,
    &rule::PANIC_INIT_EXIT_OTHER,
    &rule::PANIC_INIT_SIGNAL_SEGV,
    &rule::PANIC_INIT_SIGNAL_ILL,
    &rule::PANIC_INIT_SIGNAL_BUS,
    &rule::PANIC_INIT_SIGNAL_KILL,
    &rule::PANIC_INIT_SIGNAL_OTHER,
    &rule::INIT_EXEC_ENOENT,
    &rule::INIT_EXEC_ENOEXEC,
    &rule::INIT_EXEC_EACCES,
    &rule::INIT_EXEC_ELOOP,
    &rule::INIT_EXEC_ENOTDIR,
    &rule::INIT_EXEC_EIO,
    &rule::INIT_EXEC_OTHER,
    &rule::INIT_NONE_FOUND,
    &rule::ENVD_FLAG_UNDEFINED,
    &rule::SNAPFILE_CRC,
    &rule::SNAPFILE_MAGIC,
    &rule::SNAPFILE_VERSION,
    &rule::SNAPFILE_TOO_SHORT,
    &rule::SNAPFILE_TOO_LARGE,
    &rule::SNAPFILE_DECODE,
    &rule::SNAPFILE_DECODE_SHORT,
    &rule::SNAPFILE_DECODE_HEADER,
    &rule::SNAPFILE_BITCODE,
    &rule::SNAPFILE_OPEN,
    &rule::SNAPFILE_IO,
    &rule::SNAPFILE_MEMORY_REGIONS,
    &rule::SNAPSHOT_DEVICE_OVERRIDE,
    &rule::MEMFILE_RESTORE,
    &rule::HOST_UFFD,
    &rule::ROOTFS_NO_ROOT_DEVICE,
    &rule::KERNEL_VIRTIO_MMIO_PROBE,
    &rule::ROOTFS_MOUNT_FAILED,
    &rule::EXT4_NOT_FOUND,
    &rule::EXT4_ERROR,
    &rule::EXT4_RECOVERY,
    &rule::EXT4_FEATURES,
    &rule::HOST_ENVD_MISSING,
    &rule::HOST_EXEC_FAILED,
    &rule::GUEST_NOT_FOUND,
    &rule::GUEST_EXEC_FORMAT,
    &rule::GUEST_PERMISSION,
    &rule::SYSTEMD_UNIT_MISSING,
    &rule::SYSTEMD_EXEC_FAILED,
    &rule::SYSTEMD_ENVD_EXITED,
    &rule::WRAPPER_ENVD_EXITED,
    &rule::GUEST_OOM,
    &rule::METADATA_SEMVER,
    &rule::KERNEL_PANIC,
];

/// One recognised line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// 1-based line number in the input.
    pub line: usize,
    /// The line as given (trimmed).
    pub text: String,
    /// Rule key (stable).
    pub rule: &'static str,
    /// What the line says, decoded.
    pub meaning: String,
    /// The likely cause(s).
    pub cause: String,
    /// Decoded values (hex forms, errno names, versions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Finding ids that confirm the cause (`tmpl verify`).
    pub findings: Vec<&'static str>,
    /// Commands to run.
    pub commands: Vec<String>,
    /// True for lines that end the boot or the operation (panics, load failures).
    pub fatal: bool,
}

/// The result of decoding a text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decoded {
    pub lines: usize,
    pub explanations: Vec<Explanation>,
    /// How recognised lines relate (e.g. "line 311 is why PID 1 exited on line 312").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Decoded {
    /// The first fatal explanation, if any.
    pub fn first_fatal(&self) -> Option<&Explanation> {
        self.explanations.iter().find(|e| e.fatal)
    }
}

/// How a process ended, from a wait status (what the kernel prints as `exitcode=0x...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WaitStatus {
    Exited { code: u8 },
    Signaled { signal: u8, core_dumped: bool },
}

/// Decode a wait status: low 7 bits = terminating signal (0 = normal exit), bit 7 = core dump,
/// bits 8..16 = exit code.
pub fn decode_wait_status(status: u32) -> WaitStatus {
    let sig = (status & 0x7f) as u8;
    if sig == 0 {
        WaitStatus::Exited { code: ((status >> 8) & 0xff) as u8 }
    } else {
        WaitStatus::Signaled { signal: sig, core_dumped: status & 0x80 != 0 }
    }
}

/// Name and meaning of a Linux signal number (x86_64/aarch64 numbering).
pub fn signal_name(n: u8) -> (&'static str, &'static str) {
    match n {
        1 => ("SIGHUP", "hangup"),
        2 => ("SIGINT", "interrupt"),
        3 => ("SIGQUIT", "quit"),
        4 => ("SIGILL", "illegal instruction"),
        5 => ("SIGTRAP", "trace trap"),
        6 => ("SIGABRT", "abort"),
        7 => ("SIGBUS", "bus error (access to memory that is not backed)"),
        8 => ("SIGFPE", "arithmetic exception"),
        9 => ("SIGKILL", "killed"),
        11 => ("SIGSEGV", "segmentation fault"),
        13 => ("SIGPIPE", "broken pipe"),
        15 => ("SIGTERM", "terminated"),
        31 => ("SIGSYS", "bad system call"),
        _ => ("signal", "unusual signal"),
    }
}

/// Name and meaning of a Linux errno (positive number).
pub fn errno_name(n: u32) -> (&'static str, &'static str) {
    match n {
        1 => ("EPERM", "operation not permitted"),
        2 => ("ENOENT", "no such file or directory"),
        5 => ("EIO", "I/O error"),
        6 => ("ENXIO", "no such device"),
        7 => ("E2BIG", "argument list too long"),
        8 => ("ENOEXEC", "exec format error"),
        12 => ("ENOMEM", "out of memory"),
        13 => ("EACCES", "permission denied"),
        20 => ("ENOTDIR", "not a directory"),
        21 => ("EISDIR", "is a directory"),
        22 => ("EINVAL", "invalid argument"),
        36 => ("ENAMETOOLONG", "file name too long"),
        40 => ("ELOOP", "too many levels of symbolic links"),
        _ => ("errno", "unusual error"),
    }
}

fn re(s: &str) -> Regex {
    Regex::new(s).expect("explain patterns are valid")
}

static EXITCODE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)exit\s*code[=: ]+0x([0-9a-f]{1,8})"));
static VIRTIO_MMIO_PROBE: LazyLock<Regex> =
    LazyLock::new(|| re(r"virtio-mmio: probe of (\S+) failed with error (-?\d+)"));
static REQUESTED_INIT: LazyLock<Regex> = LazyLock::new(|| re(r"Requested init (\S+) failed \(error (-?\d+)\)"));
static STARTING_INIT: LazyLock<Regex> =
    LazyLock::new(|| re(r"Starting init: (\S+) exists but couldn't execute it \(error (-?\d+)\)"));
static FLAG_UNDEFINED: LazyLock<Regex> =
    LazyLock::new(|| re(r"flag provided but not defined: -{1,2}([A-Za-z0-9_.-]+)"));
static NO_ROOT_DEVICE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?:VFS: Cannot open root device "?([^" ]*)"? or unknown-block\((\d+),(\d+)\)|Unable to mount root fs on unknown-block\((\d+),(\d+)\))"#,
    )
});
static EXT4_FEATURES: LazyLock<Regex> = LazyLock::new(|| {
    re(r"EXT4-fs \(([^)]+)\): couldn't mount (RDWR )?because of unsupported optional features \(([0-9a-fA-F]+)\)")
});
static FORK_EXEC: LazyLock<Regex> =
    LazyLock::new(|| re(r"fork/exec (\S+?):? (no such file or directory|permission denied|exec format error)"));
static GUEST_NOT_FOUND: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:^|[\s:])(/[^\s:]+|[A-Za-z0-9_.-]+): (?:not found|No such file or directory)\s*$"));
static GUEST_EXEC_FORMAT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(/[^\s:]+):.*(?:Exec format error|cannot execute binary file)"));
static GUEST_PERMISSION: LazyLock<Regex> = LazyLock::new(|| re(r"(/[^\s:]+): Permission denied\s*$"));
static SYSTEMD_EXEC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"([A-Za-z0-9@_.-]+\.service): (?:Failed to execute (?:command|(\S+?)):?|Failed at step EXEC spawning (\S+?):) (.+)$",
    )
});
static SYSTEMD_EXITED: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(envd\.service): Main process exited, code=(exited|killed|dumped), status=(\d+)(?:/([A-Z0-9]+))?")
});
static WRAPPER_EXITED: LazyLock<Regex> = LazyLock::new(|| re(r"tmpl-init: envd exited with status (\d+)"));
static SYSTEMD_UNIT_MISSING: LazyLock<Regex> =
    LazyLock::new(|| re(r"Unit (envd\.service) (?:not found|could not be found)"));
static SEMVER_EMPTY: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:empty string, expected a semver version|is not a valid semver|invalid semantic version)"));

fn cmds(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ex(line: usize, text: &str, r: &'static Rule, meaning: String, cause: String) -> Explanation {
    Explanation {
        line,
        text: text.to_string(),
        rule: r.key,
        meaning,
        cause,
        details: Vec::new(),
        findings: r.findings.to_vec(),
        commands: cmds(&[VERIFY]),
        fatal: false,
    }
}

impl Explanation {
    fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
    fn detail(mut self, d: impl Into<String>) -> Self {
        self.details.push(d.into());
        self
    }
    fn commands(mut self, c: &[&str]) -> Self {
        self.commands = cmds(c);
        self
    }
}

/// Decode PID 1's wait status (`exitcode=0x...`).
fn explain_exitcode(line: usize, text: &str, status: u32) -> Explanation {
    let ws = decode_wait_status(status);
    let hex = format!("wait status 0x{status:08x}");
    match ws {
        WaitStatus::Exited { code } => {
            let (key, cause) = match code {
                0 => (
                    &rule::PANIC_INIT_EXIT_0,
                    "init finished instead of running forever: a wrapper that starts envd in the background (`envd &`) and \
                     then ends, or one whose last command returned; PID 1 must `exec` envd (or a real init)"
                        .to_string(),
                ),
                1 => (
                    &rule::PANIC_INIT_EXIT_1,
                    "a command in the init script failed (e.g. under `set -e`), or envd stopped with a fatal error at \
                     start-up (Go's log.Fatal exits 1: port in use, cgroup setup, missing directory); read the console \
                     lines just before the panic"
                        .to_string(),
                ),
                2 => (
                    &rule::PANIC_INIT_EXIT_2,
                    "exit status 2 is what Go's flag package returns for a flag the program does not define (the init \
                     wrapper passes envd a flag this envd no longer accepts: -debug was renamed -isnotfc in 2025-07, \
                     -cmd was removed in 2026-05), and also what a Go runtime panic returns; a shell also exits 2 on a \
                     syntax error"
                        .to_string(),
                ),
                126 => (
                    &rule::PANIC_INIT_EXIT_126,
                    "a shell found the command but could not execute it: no exec permission, or a binary for another \
                     architecture"
                        .to_string(),
                ),
                127 => (
                    &rule::PANIC_INIT_EXIT_127,
                    "a shell could not find a command: the wrapper's exec target (envd) is missing, or its interpreter \
                     (#!/bin/bash in an image without bash) or the binary's dynamic loader (PT_INTERP) is missing"
                        .to_string(),
                ),
                c if c > 128 => {
                    let (name, what) = signal_name(c - 128);
                    (
                        &rule::PANIC_INIT_EXIT_OTHER,
                        format!(
                            "a shell reported that its child was killed by {name} ({what}); status {c} = 128 + {}",
                            c - 128
                        ),
                    )
                }
                c => (&rule::PANIC_INIT_EXIT_OTHER, format!("init (or the program it exec'd) exited with status {c}")),
            };
            ex(line, text, key, format!("PID 1 exited with status {code} ({hex})"), cause)
                .fatal()
                .detail(hex)
                .commands(&[VERIFY, CAT_INIT])
        }
        WaitStatus::Signaled { signal, core_dumped } => {
            let (name, what) = signal_name(signal);
            let (key, cause) = match signal {
                11 => (
                    &rule::PANIC_INIT_SIGNAL_SEGV,
                    "init (or envd) crashed: a binary for another architecture or libc variant, a dynamic binary whose \
                     loader or libraries do not match, or a corrupt binary",
                ),
                4 => (
                    &rule::PANIC_INIT_SIGNAL_ILL,
                    "the CPU cannot run an instruction in init or envd: built for a newer CPU level (x86-64-v3/AVX2) \
                     than the VM offers, or for another architecture",
                ),
                7 => (
                    &rule::PANIC_INIT_SIGNAL_BUS,
                    "memory behind a mapping is missing: on a snapshot resume, the memfile is shorter than the VM's \
                     memory; otherwise a truncated binary",
                ),
                9 => (
                    &rule::PANIC_INIT_SIGNAL_KILL,
                    "PID 1 was killed, usually by the out-of-memory killer: give the VM more memory, or look for \
                     \"Out of memory\" lines before the panic",
                ),
                _ => (
                    &rule::PANIC_INIT_SIGNAL_OTHER,
                    "PID 1 was killed by a signal; read the console lines before the panic",
                ),
            };
            let core = if core_dumped { ", core dumped" } else { "" };
            ex(line, text, key, format!("PID 1 was killed by {name} ({what}{core}); {hex}"), cause.to_string())
                .fatal()
                .detail(format!("signal {signal} = {name}"))
                .detail(hex)
                .commands(&[VERIFY, CAT_INIT])
        }
    }
}

fn explain_init_errno(line: usize, text: &str, path: &str, err: i64, requested: bool) -> Explanation {
    let n = u32::try_from(err.unsigned_abs()).unwrap_or(u32::MAX);
    let (name, what) = errno_name(n);
    let (key, cause) = match n {
        2 => (
            &rule::INIT_EXEC_ENOENT,
            format!(
                "{path} does not exist in the image, is a dangling symlink, or is a script or dynamic binary whose \
                 interpreter (#!) or loader (PT_INTERP) is missing: execve reports all of these as ENOENT"
            ),
        ),
        8 => (
            &rule::INIT_EXEC_ENOEXEC,
            format!(
                "{path} is neither an ELF for this CPU nor a script starting with #!: an ELF for another architecture, \
                 a truncated or empty file, or a script without a shebang line"
            ),
        ),
        13 => (
            &rule::INIT_EXEC_EACCES,
            format!("{path} (or its interpreter) has no execute permission, or is a directory or special file"),
        ),
        40 => (&rule::INIT_EXEC_ELOOP, format!("{path} is a symlink chain that loops or is deeper than 40 links")),
        20 => {
            (&rule::INIT_EXEC_ENOTDIR, format!("a component of {path} is a file or a link to a file, not a directory"))
        }
        5 => (
            &rule::INIT_EXEC_EIO,
            "the root filesystem could not be read where init lives: corrupt image or short layer".into(),
        ),
        _ => (&rule::INIT_EXEC_OTHER, format!("execve of {path} failed with {name} ({what})")),
    };
    let meaning = if requested {
        format!("the kernel could not run init={path}: error -{n} = {name} ({what})")
    } else {
        format!(
            "the kernel found {path} but could not run it: error -{n} = {name} ({what}); it tries the next candidate"
        )
    };
    let e = ex(line, text, key, meaning, cause).detail(format!("error -{n} = {name}")).commands(&[VERIFY, CAT_INIT]);
    if requested { e.fatal() } else { e }
}

fn explain_flag(line: usize, text: &str, flag: &str) -> Explanation {
    let cause = match envd::flag(flag) {
        Some(f) => match (f.since, f.until) {
            (_, Some(until)) => format!(
                "envd stopped accepting -{flag} on {until} ({}){}; the wrapper or unit that starts envd still passes \
                 it, and envd exits with status 2",
                f.meaning,
                if flag == "debug" {
                    "; drop it — its successor -isnotfc is for running envd outside Firecracker, wrong in a sandbox"
                } else {
                    ""
                }
            ),
            (Some(since), None) => format!(
                "-{flag} exists only since {since}: this envd is older than the wrapper expects; inject a newer envd or \
                 drop the flag"
            ),
            (None, None) => format!("-{flag} is a current envd flag, so the program that rejected it is not envd"),
        },
        None => format!("-{flag} was never an envd flag (known: {}); remove it from the wrapper", known_flags()),
    };
    ex(
        line,
        text,
        &rule::ENVD_FLAG_UNDEFINED,
        format!("a Go program rejected the flag -{flag} (it exits with status 2)"),
        cause,
    )
    .detail(format!("current envd flags: {}", envd::current().flags().join(", ")))
    .commands(&[VERIFY, CAT_INIT])
}

fn known_flags() -> String {
    envd::FLAGS.iter().map(|f| format!("-{}", f.name)).collect::<Vec<_>>().join(" ")
}

fn explain_crc(line: usize, text: &str, value: Option<u64>, debug_form: bool) -> Explanation {
    let versions = if debug_form {
        "the Crc64(N) form is printed by Firecracker v1.0–v1.1"
    } else if value.is_some() {
        "Firecracker v1.2–v1.13 print the number (E2B's v1.10.1 and v1.12.1 builds); v1.14+ print no number"
    } else {
        "without a number: Firecracker v1.14 or newer (E2B's v1.14.1 build)"
    };
    let mut e = ex(
        line,
        text,
        &rule::SNAPFILE_CRC,
        "the CRC-64 over the snapfile (all bytes but the last 8) does not equal the value stored in its last 8 bytes"
            .into(),
        "the snapfile's bytes changed after Firecracker wrote them: truncated, partially downloaded or copied, bit rot, \
         or a snapfile from another build. It is never caused by a Firecracker version mismatch (the CRC is checked \
         over raw bytes, with the same algorithm in every release). Restore the snapfile from the source storage; \
         never re-stamp the CRC"
            .into(),
    )
    .fatal()
    .detail(versions);
    if let Some(v) = value {
        e = e.detail(format!(
            "{v} = 0x{v:016x} is the CRC Firecracker COMPUTED over the file it loaded (the stored value is not printed); \
             `tmpl verify` shows the computed and stored CRC of the snapfile in storage: if its computed value is also \
             0x{v:016x}, that file is the one Firecracker read"
        ));
    }
    e
}

fn explain_magic(line: usize, text: &str, value: Option<u64>) -> Explanation {
    let mut e = ex(
        line,
        text,
        &rule::SNAPFILE_MAGIC,
        "the first 8 bytes of the snapfile are not this architecture's snapshot magic".into(),
        "the snapfile is not a Firecracker snapshot for this CPU architecture: a placeholder or zeroed file (a zero \
         file even passes the CRC check), a foreign file, or a snapshot taken on another architecture"
            .into(),
    )
    .fatal();
    if let Some(v) = value {
        let arch = match v & !0xFFFF {
            snapshot::X86_64_MAGIC => Some("x86_64"),
            snapshot::AARCH64_MAGIC => Some("aarch64"),
            _ => None,
        };
        let d = match (v, arch) {
            (0, _) => "magic 0: the file starts with zeros (a placeholder or zero-filled snapfile)".to_string(),
            (_, Some(a)) if v & 0xFFFF == 1 => {
                format!("0x{v:016x} is an {a} snapshot in the old versionize format (Firecracker ≤ v1.6)")
            }
            (_, Some(a)) => format!("0x{v:016x} is the {a} snapshot magic: the snapshot was taken on {a}"),
            _ => format!("0x{v:016x} is not a Firecracker snapshot magic: the file is not a snapfile"),
        };
        e = e.detail(d);
    }
    e
}

/// Firecracker releases whose snapshots carry this format version (`4.0.0` → v1.10.1+).
pub fn releases_writing(version: &str) -> Vec<String> {
    let Some((ma, mi, _)) = snapshot::parse_semver(version) else { return Vec::new() };
    let mut out = Vec::new();
    for minor in 7..=16u64 {
        for patch in [0u64, 1] {
            let fc = FirecrackerVersion { major: 1, minor, patch, commit: None };
            if let Some(w) = fc.snapshot_support().writes
                && snapshot::parse_semver(w).is_some_and(|(a, b, _)| a == ma && b == mi)
            {
                let name = if minor == 10 { format!("v1.10.{patch}+") } else { format!("v1.{minor}") };
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

fn explain_version(line: usize, text: &str, version: Option<&str>) -> Explanation {
    let mut e = ex(
        line,
        text,
        &rule::SNAPFILE_VERSION,
        "this Firecracker cannot load the snapshot format version in the snapfile".into(),
        "the snapshot was taken by a different Firecracker release than the one loading it: metadata.json's \
         firecracker_version does not match the snapfile, or the node runs another firecracker binary"
            .into(),
    )
    .fatal();
    if let Some(v) = version {
        let w = releases_writing(v);
        e = e.detail(if w.is_empty() {
            format!("format version {v} is not one tmpl knows")
        } else {
            format!("format version {v} is written by Firecracker {}", w.join(", "))
        });
    }
    e
}

fn explain_ext4_features(line: usize, text: &str, dev: &str, rdwr: bool, hex: &str) -> Explanation {
    let bits = u32::from_str_radix(hex, 16).unwrap_or(0);
    let names = if rdwr { superblock::ro_compat_names(bits) } else { superblock::incompat_names(bits) };
    let kind = if rdwr { "ro_compat" } else { "incompat" };
    ex(
        line,
        text,
        &rule::EXT4_FEATURES,
        format!(
            "the guest kernel cannot mount {dev}{}: unsupported {kind} features 0x{hex}",
            if rdwr { " read-write" } else { "" }
        ),
        "the image was made by a newer mke2fs than the guest kernel understands (e.g. orphan_file or \
         metadata_csum_seed on a 5.10 kernel); recreate the filesystem with those features off (mkfs.ext4 -O ^feature) \
         or use a newer guest kernel"
            .into(),
    )
    .fatal()
    .detail(format!("{kind} 0x{hex} = {}", names.join(", ")))
}

fn explain_root_device(line: usize, text: &str, caps: &regex::Captures) -> Explanation {
    let major = caps.get(2).or(caps.get(4)).and_then(|m| m.as_str().parse::<u32>().ok()).unwrap_or(0);
    let minor = caps.get(3).or(caps.get(5)).and_then(|m| m.as_str().parse::<u32>().ok()).unwrap_or(0);
    if major == 0 && minor == 0 {
        ex(
            line,
            text,
            &rule::ROOTFS_NO_ROOT_DEVICE,
            "the kernel found no block device for root= (unknown-block(0,0))".into(),
            "the guest kernel has no built-in driver for the disk (virtio_blk or nvme as a module, and no initramfs), or \
             root= names the wrong device; this is about the kernel and VM, not the template. With tmpl boot-test, \
             pass a kernel that has the driver built in (--kernel)"
                .into(),
        )
        .fatal()
        .commands(&["tmpl boot-test <build> --kernel <vmlinuz with CONFIG_BLK_DEV_NVME=y or CONFIG_VIRTIO_BLK=y>"])
    } else {
        ex(
            line,
            text,
            &rule::ROOTFS_MOUNT_FAILED,
            format!("the kernel found the root device ({major}:{minor}) but could not mount it"),
            "the device holds no filesystem the kernel can mount: not ext4, corrupt, truncated, or ext4 features the \
             kernel lacks (look for EXT4-fs lines just above)"
                .into(),
        )
        .fatal()
    }
}

/// Decode one line; `None` when nothing is recognised.
pub fn explain_line(line_no: usize, raw: &str) -> Option<Explanation> {
    let text = raw.trim();
    if text.is_empty() {
        return None;
    }
    if text.contains("Attempted to kill init")
        && let Some(c) = EXITCODE.captures(text)
        && let Ok(status) = u32::from_str_radix(&c[1], 16)
    {
        return Some(explain_exitcode(line_no, text, status));
    }
    if let Some(c) = REQUESTED_INIT.captures(text) {
        return Some(explain_init_errno(line_no, text, &c[1], c[2].parse().unwrap_or(0), true));
    }
    if let Some(c) = STARTING_INIT.captures(text) {
        return Some(explain_init_errno(line_no, text, &c[1], c[2].parse().unwrap_or(0), false));
    }
    if let Some(c) = VIRTIO_MMIO_PROBE.captures(text) {
        let errno: i64 = c[2].parse().unwrap_or(0);
        let (name, _) = errno_name(u32::try_from(errno.unsigned_abs()).unwrap_or(u32::MAX));
        return Some(
            ex(
                line_no,
                text,
                &rule::KERNEL_VIRTIO_MMIO_PROBE,
                format!("the kernel's virtio-mmio driver could not set up {} (error {errno}, {name})", &c[1]),
                "the guest kernel's virtio-mmio device discovery does not match how the VMM announces the devices: \
                 the devices come from `virtio_mmio.device=` on the command line (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) \
                 or from ACPI (CONFIG_ACPI, Firecracker >= 1.8), and an entry the kernel cannot map (EINVAL) or a \
                 region announced twice (EBUSY) fails the probe; without the device there is no root disk or eth0. \
                 This is about the kernel and the VMM, not the template"
                    .into(),
            )
            .commands(&["tmpl check-kernel <vmlinux>"]),
        );
    }
    if text.contains("No working init found") {
        return Some(
            ex(
                line_no,
                text,
                &rule::INIT_NONE_FOUND,
                "the kernel tried /sbin/init, /etc/init, /bin/init and /bin/sh and could run none of them".into(),
                "no init in the image: /sbin/init is missing or dangling and there is no /bin/sh, or every candidate \
                 fails to execute (see \"Starting init: ... error\" lines above)"
                    .into(),
            )
            .fatal()
            .commands(&[VERIFY, CAT_INIT]),
        );
    }
    if let Some(c) = FLAG_UNDEFINED.captures(text) {
        return Some(explain_flag(line_no, text, &c[1]));
    }
    if let Some(e) = fc_snapshot::explain(line_no, text) {
        return Some(e);
    }
    if text.contains("Could not restore queue") || text.contains("Virtio backend error") {
        return Some(
            ex(
                line_no,
                text,
                &rule::MEMFILE_RESTORE,
                "Firecracker could not restore a virtio queue from guest memory".into(),
                "the guest memory served to Firecracker (memfile through userfaultfd) is corrupt or inconsistent: a \
                 memfile shorter than the VM's memory, a header whose size or page size does not match, missing \
                 layer data, or vCPU/RAM settings different from the build's"
                    .into(),
            )
            .fatal(),
        );
    }
    if text.contains("userfaultfd") && (text.contains("ioctl") || text.contains("Failed to register")) {
        return Some(
            ex(
                line_no,
                text,
                &rule::HOST_UFFD,
                "the host kernel refused a userfaultfd operation".into(),
                "the node's kernel lacks the userfaultfd features the orchestrator needs (write-protect, hugetlbfs \
                 missing pages); this is a host problem, not the template: use the host kernel E2B supports"
                    .into(),
            )
            .fatal()
            .commands(&["uname -r"]),
        );
    }
    if let Some(c) = NO_ROOT_DEVICE.captures(text) {
        return Some(explain_root_device(line_no, text, &c));
    }
    if let Some(c) = EXT4_FEATURES.captures(text) {
        return Some(explain_ext4_features(line_no, text, &c[1], c.get(2).is_some(), &c[3]));
    }
    if text.contains("EXT4-fs") && text.contains("Can't find ext4 filesystem") {
        return Some(ex(
            line_no,
            text,
            &rule::EXT4_NOT_FOUND,
            "no ext4 superblock on the root device".into(),
            "the rootfs data (or one of its layers) is not an ext4 image".into(),
        ));
    }
    if text.contains("EXT4-fs")
        && (text.contains("recovery required on readonly filesystem")
            || text.contains("write access unavailable, cannot proceed"))
    {
        return Some(ex(
            line_no,
            text,
            &rule::EXT4_RECOVERY,
            "the journal needs replaying but the device is read-only".into(),
            "the image was not cleanly unmounted (needs_recovery); boot it read-write once, or run e2fsck -fy on a \
             copy, before using it read-only"
                .into(),
        ));
    }
    if text.contains("EXT4-fs error") || (text.contains("EXT4-fs") && text.contains("corrupt")) {
        return Some(ex(
            line_no,
            text,
            &rule::EXT4_ERROR,
            "the guest kernel found ext4 corruption".into(),
            "the filesystem is corrupt: a bad edit, a truncated image or layer, or blocks read from the wrong layer; \
             check it with e2fsck -fn on an assembled copy"
                .into(),
        ));
    }
    if let Some(c) = FORK_EXEC.captures(text) {
        let path = &c[1];
        let reason = &c[2];
        if path.ends_with("/envd") && path.starts_with("/fc-envd") {
            return Some(
                ex(
                    line_no,
                    text,
                    &rule::HOST_ENVD_MISSING,
                    format!("the orchestrator/template builder could not run the node's envd at {path}: {reason}"),
                    "HOST_ENVD_PATH (default /fc-envd/envd) on the build node is missing or not executable; the \
                     template is not at fault. Build envd and place it there (E2B: make build-and-upload/envd), or \
                     point HOST_ENVD_PATH at it"
                        .into(),
                )
                .fatal()
                .commands(&[&format!("ls -l {path}"), &format!("{path} -version")]),
            );
        }
        return Some(
            ex(
                line_no,
                text,
                &rule::HOST_EXEC_FAILED,
                format!("a host process could not start {path}: {reason}"),
                format!("{path} is missing, not executable, or for another architecture on the node"),
            )
            .commands(&[&format!("ls -l {path}"), &format!("file {path}")]),
        );
    }
    if let Some(c) = WRAPPER_EXITED.captures(text) {
        let n: u16 = c[1].parse().unwrap_or(0);
        let cause = match n {
            2 => "status 2: Go's flag error (the wrapper passes a flag this envd does not accept) or a Go panic"
                .to_string(),
            126 | 127 => format!(
                "status {n}: the shell could not run envd (missing, not executable, wrong architecture, loader missing)"
            ),
            n if n > 128 => {
                let (name, what) = signal_name(u8::try_from(n - 128).unwrap_or(0));
                format!("envd was killed by {name} ({what})")
            }
            n => format!("envd exited with status {n}; read its output just above"),
        };
        return Some(ex(
            line_no,
            text,
            &rule::WRAPPER_ENVD_EXITED,
            format!("tmpl's init wrapper saw envd exit with status {n} and restarts it"),
            cause,
        ));
    }
    if let Some(c) = SYSTEMD_UNIT_MISSING.captures(text) {
        return Some(ex(
            line_no,
            text,
            &rule::SYSTEMD_UNIT_MISSING,
            format!("systemd has no unit {}", &c[1]),
            "the image boots systemd but /etc/systemd/system/envd.service is missing or not enabled \
             (multi-user.target.wants/envd.service)"
                .into(),
        ));
    }
    if let Some(c) = SYSTEMD_EXITED.captures(text) {
        let n: u8 = c[3].parse().unwrap_or(0);
        let how = &c[2];
        let cause = if how == "exited" && n == 2 {
            "envd exited with status 2: Go's flag error (ExecStart passes a flag this envd does not accept, such as \
             -debug or -cmd) or a Go panic; systemd restarts it forever (Restart=always), so the sandbox never becomes \
             ready"
                .to_string()
        } else if how == "exited" && n == 203 {
            "status 203/EXEC: systemd could not execute ExecStart (missing file, no exec bit, wrong architecture, \
             missing loader)"
                .to_string()
        } else if how == "exited" {
            format!("envd exited with status {n} at start-up; read its log lines just above")
        } else {
            let (name, what) = signal_name(n);
            format!("envd was killed by {name} ({what}): wrong architecture or libc, or the OOM killer")
        };
        return Some(ex(
            line_no,
            text,
            &rule::SYSTEMD_ENVD_EXITED,
            format!("{} stopped: {how}, status {}", &c[1], &c[3]),
            cause,
        ));
    }
    if let Some(c) = SYSTEMD_EXEC.captures(text) {
        let unit = &c[1];
        let target = c.get(2).or(c.get(3)).map(|m| m.as_str()).unwrap_or("ExecStart");
        return Some(ex(
            line_no,
            text,
            &rule::SYSTEMD_EXEC_FAILED,
            format!("systemd could not start {unit}: {target}: {}", &c[4]),
            "ExecStart points at a file that is missing, not executable, for another architecture, or a dynamic \
             binary whose loader is missing"
                .into(),
        ));
    }
    if let Some(c) = GUEST_EXEC_FORMAT.captures(text) {
        return Some(ex(
            line_no,
            text,
            &rule::GUEST_EXEC_FORMAT,
            format!("{} could not be executed: wrong format", &c[1]),
            "a binary for another architecture (aarch64 envd on x86_64), or a file that is not a program".into(),
        ));
    }
    if let Some(c) = GUEST_PERMISSION.captures(text) {
        return Some(ex(
            line_no,
            text,
            &rule::GUEST_PERMISSION,
            format!("{} could not be executed: permission denied", &c[1]),
            "the file has no execute bit (or is on a noexec mount)".into(),
        ));
    }
    if let Some(c) = GUEST_NOT_FOUND.captures(text)
        && (text.contains("exec") || c[1].starts_with('/') || text.starts_with("sh:") || text.contains("line "))
    {
        return Some(ex(
            line_no,
            text,
            &rule::GUEST_NOT_FOUND,
            format!("{} was not found when a script tried to run it", &c[1]),
            "the program is missing from the image, or it is a dynamic binary whose loader (PT_INTERP) is missing \
             (the shell says \"not found\" for both); a shell that cannot find its command exits 127"
                .into(),
        ));
    }
    if text.contains("Out of memory: Killed process") || text.contains("Out of memory and no killable processes") {
        return Some(ex(
            line_no,
            text,
            &rule::GUEST_OOM,
            "the guest kernel's OOM killer ran".into(),
            "the VM has too little memory for what the template starts; raise the template's memory".into(),
        ));
    }
    if SEMVER_EMPTY.is_match(text) {
        return Some(ex(
            line_no,
            text,
            &rule::METADATA_SEMVER,
            "a version string (kernel, Firecracker or envd) was empty or not a version".into(),
            "metadata.json lacks template.firecracker_version/kernel_version (legacy or hand-written metadata), or the \
             build's envd version is unknown; a hand-made metadata.json or snapfile cannot work"
                .into(),
        ));
    }
    if text.contains("Kernel panic - not syncing") {
        return Some(
            ex(
                line_no,
                text,
                &rule::KERNEL_PANIC,
                "the guest kernel panicked".into(),
                "read the lines just before the panic for the cause".into(),
            )
            .fatal(),
        );
    }
    None
}

/// Split pasted text into lines; JSON-escaped newlines (`\n` inside one log line) count too.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for l in text.lines() {
        if l.contains("\\n") {
            out.extend(l.split("\\n"));
        } else {
            out.push(l);
        }
    }
    out
}

/// Rules that explain why PID 1 ended, when they appear before its panic.
const CAUSE_OF_INIT_EXIT: &[&str] = &[
    rule::ENVD_FLAG_UNDEFINED.key,
    rule::GUEST_NOT_FOUND.key,
    rule::GUEST_EXEC_FORMAT.key,
    rule::GUEST_PERMISSION.key,
    rule::GUEST_OOM.key,
    rule::HOST_EXEC_FAILED.key,
];

/// Decode every line of `text` (one message or a whole console log).
pub fn explain(text: &str) -> Decoded {
    let all = lines(text);
    let mut out = Decoded { lines: all.len(), ..Default::default() };
    let mut seen: Vec<String> = Vec::new();
    for (i, l) in all.iter().enumerate() {
        let Some(e) = explain_line(i + 1, l) else { continue };
        // A console repeats itself; keep the first of identical lines (timestamps stripped).
        let key = format!("{}|{}", e.rule, strip_timestamp(&e.text));
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.explanations.push(e);
    }
    // Relate causes to the PID 1 exit they explain.
    let exits: Vec<(usize, &'static str)> =
        out.explanations.iter().filter(|e| e.rule.starts_with("panic.init-")).map(|e| (e.line, e.rule)).collect();
    for (exit_line, exit_rule) in exits {
        let causes: Vec<usize> = out
            .explanations
            .iter()
            .filter(|e| e.line < exit_line && CAUSE_OF_INIT_EXIT.contains(&e.rule))
            .map(|e| e.line)
            .collect();
        if let Some(&c) = causes.last() {
            let what = if exit_rule == rule::PANIC_INIT_EXIT_2.key {
                " (exit status 2)"
            } else if exit_rule == rule::PANIC_INIT_EXIT_127.key {
                " (exit status 127)"
            } else {
                ""
            };
            out.notes.push(format!("line {c} is the likely reason PID 1 ended on line {exit_line}{what}"));
        }
    }
    if out.explanations.iter().any(|e| e.rule == rule::KERNEL_PANIC.key)
        && out.explanations.iter().filter(|e| e.fatal).count() > 1
    {
        // A generic panic line is redundant next to a specific one.
        out.explanations.retain(|e| e.rule != rule::KERNEL_PANIC.key);
    }
    out
}

fn strip_timestamp(s: &str) -> &str {
    let t = s.trim_start();
    if t.starts_with('[')
        && let Some(end) = t.find(']')
    {
        return t[end + 1..].trim_start();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding ids referenced before the check that emits them exists (none now).
    const PENDING_IDS: &[&str] = &[];

    #[test]
    fn virtio_mmio_probe_failure_points_at_the_kernels_device_discovery() {
        let d = explain("[    0.41] virtio-mmio: probe of virtio-mmio.0 failed with error -22\n");
        let e = &d.explanations[0];
        assert_eq!(e.rule, "kernel.virtio-mmio-probe");
        assert_eq!(e.findings, ["kernel.virtio-discovery"]);
        assert!(e.meaning.contains("virtio-mmio.0") && e.meaning.contains("EINVAL"), "{}", e.meaning);
        assert!(e.cause.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"), "{}", e.cause);
        assert!(e.commands.iter().any(|c| c.starts_with("tmpl check-kernel")));
    }

    #[test]
    fn every_referenced_finding_id_is_in_the_catalog_or_pending() {
        let catalog: Vec<&str> = crate::checks::catalog().iter().map(|c| c.id).collect();
        for r in RULES {
            for id in r.findings {
                assert!(
                    catalog.contains(id) || PENDING_IDS.contains(id),
                    "rule {} references {id}, which is neither in checks::catalog() nor pending",
                    r.key
                );
            }
        }
        // Ids claimed as pending must not silently shadow catalog entries with other meanings.
        for id in PENDING_IDS {
            assert!(id.contains('.') && !id.contains(' '), "{id}");
        }
        let mut keys: Vec<&str> = RULES.iter().map(|r| r.key).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(n, keys.len(), "duplicate rule keys");
    }

    fn one(text: &str) -> Explanation {
        let d = explain(text);
        assert_eq!(d.explanations.len(), 1, "{text}: {:#?}", d.explanations);
        d.explanations.into_iter().next().unwrap()
    }

    #[test]
    fn wait_statuses_decode_exit_codes_and_signals() {
        assert_eq!(decode_wait_status(0x200), WaitStatus::Exited { code: 2 });
        assert_eq!(decode_wait_status(0x100), WaitStatus::Exited { code: 1 });
        assert_eq!(decode_wait_status(0x7f00), WaitStatus::Exited { code: 127 });
        assert_eq!(decode_wait_status(0x0b), WaitStatus::Signaled { signal: 11, core_dumped: false });
        assert_eq!(decode_wait_status(0x8b), WaitStatus::Signaled { signal: 11, core_dumped: true });
        assert_eq!(decode_wait_status(0x09), WaitStatus::Signaled { signal: 9, core_dumped: false });
    }

    #[test]
    fn init_panics_map_to_their_causes() {
        let e = one("[    2.96] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200");
        assert_eq!(e.rule, "panic.init-exit-2");
        assert!(e.fatal && e.meaning.contains("status 2") && e.cause.contains("flag"));
        assert!(e.findings.contains(&"wrapper.envd-flag"));
        assert_eq!(one("Attempted to kill init! exitcode=0x00000100").rule, "panic.init-exit-1");
        let e = one("Attempted to kill init! exitcode=0x00007f00");
        assert_eq!(e.rule, "panic.init-exit-127");
        assert!(e.findings.contains(&"init.interpreter-missing"));
        let e = one("Attempted to kill init! exitcode=0x0000000b");
        assert_eq!(e.rule, "panic.init-signal-segv");
        assert!(e.meaning.contains("SIGSEGV") && e.findings.contains(&"init.wrong-arch"));
        assert!(one("Attempted to kill init! exitcode=0x00000009").meaning.contains("SIGKILL"));
        assert!(one("Attempted to kill init! exitcode=0x00008b00").cause.contains("SIGSEGV"));
    }

    #[test]
    fn init_errnos_are_named() {
        let e = one("Kernel panic - not syncing: Requested init /sbin/init failed (error -2).");
        assert_eq!(e.rule, "init.exec-enoent");
        assert!(e.meaning.contains("ENOENT") && e.findings.contains(&"init.dangling"));
        assert_eq!(one("Requested init /sbin/init failed (error -8).").rule, "init.exec-enoexec");
        let e = one("Requested init /sbin/init failed (error -13).");
        assert_eq!(e.findings, vec!["init.not-executable"]);
        assert_eq!(one("Requested init /sbin/init failed (error -40).").findings, vec!["init.loop"]);
        let e = one("Starting init: /sbin/init exists but couldn't execute it (error -8)");
        assert!(!e.fatal && e.rule == "init.exec-enoexec");
        assert_eq!(
            one("Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.").rule,
            "init.none-found"
        );
    }

    #[test]
    fn crc_numbers_are_shown_in_hex_and_never_blamed_on_versions() {
        let e = one("error loading snapshot: CRC64 validation failed: 14172926256603030733");
        assert_eq!(e.rule, "snapfile.crc");
        assert!(e.details.iter().any(|d| d.contains("0xc4b05956c8a164cd") && d.contains("COMPUTED")));
        assert!(e.details.iter().any(|d| d.contains("v1.2–v1.13")));
        assert!(e.cause.contains("never caused by a Firecracker version mismatch"));
        assert_eq!(e.findings, vec!["snapfile.crc-mismatch"]);
        let e = one("Load snapshot error: CRC64 validation failed");
        assert!(e.details.iter().any(|d| d.contains("v1.14")));
        let e = one("Cannot deserialize the microVM state: Crc64(0x103F8F528F5120B1)");
        assert!(e.details.iter().any(|d| d.contains("v1.0–v1.1")));
        assert!(e.details.iter().any(|d| d.contains("0x103f8f528f5120b1")));
    }

    #[test]
    fn snapshot_magic_and_version_errors() {
        let e = one("Magic value does not match arch: 0");
        assert!(e.details[0].contains("zeros") && e.findings.contains(&"snapfile.crc-zero"));
        let e = one(&format!("Magic value does not match arch: {}", snapshot::AARCH64_MAGIC));
        assert!(e.details[0].contains("aarch64"));
        let e = one("Invalid data version: 8.0.0");
        assert!(e.details[0].contains("v1.13") && e.details[0].contains("v1.14"), "{:?}", e.details);
        assert_eq!(releases_writing("4.0.0"), vec!["v1.10.1+"]);
    }

    #[test]
    fn envd_flags_are_dated() {
        let e = one("flag provided but not defined: -debug");
        assert!(e.cause.contains("2025-07-02") && e.cause.contains("-isnotfc"));
        assert!(one("flag provided but not defined: -cmd").cause.contains("2026-05-14"));
        assert!(one("flag provided but not defined: -frobnicate").cause.contains("never an envd flag"));
    }

    #[test]
    fn rootfs_and_host_messages() {
        assert_eq!(
            one("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)").rule,
            "rootfs.no-root-device"
        );
        assert_eq!(one("VFS: Unable to mount root fs on unknown-block(259,0)").rule, "rootfs.mount-failed");
        let e = one("EXT4-fs (vda): couldn't mount RDWR because of unsupported optional features (10000)");
        assert!(e.details[0].contains("orphan_present"), "{:?}", e.details);
        assert_eq!(one("EXT4-fs (vda): VFS: Can't find ext4 filesystem").findings, vec!["rootfs.not-ext4"]);
        assert_eq!(
            one("EXT4-fs error (device vda): ext4_lookup:1855: inode #2: comm init: deleted inode referenced").rule,
            "ext4.error"
        );
        let e = one("error: fork/exec /fc-envd/envd: no such file or directory");
        assert_eq!(e.rule, "host.envd-missing");
        assert!(e.findings.is_empty() && e.commands[0].contains("/fc-envd/envd"));
        assert_eq!(one("Could not restore queue.").findings[0], "memfile.size-mismatch");
        assert_eq!(one("/sbin/init: 3: exec: /usr/bin/envd: not found").rule, "guest.not-found");
        assert_eq!(
            one("envd.service: Failed at step EXEC spawning /usr/bin/envd: No such file or directory").rule,
            "systemd.exec-failed"
        );
        assert_eq!(one("Failed to start envd.service: Unit envd.service not found.").rule, "systemd.unit-missing");
        let e = one("envd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT");
        assert!(e.rule == "systemd.envd-exited" && e.cause.contains("flag"), "{e:?}");
        assert!(one("envd.service: Main process exited, code=killed, status=11/SEGV").cause.contains("SIGSEGV"));
        let w = one("tmpl-init: envd exited with status 2; restarting in 1s");
        assert!(w.rule == "wrapper.envd-exited" && w.cause.contains("flag"), "{w:?}");
        assert!(one("tmpl-init: envd exited with status 139; restarting in 1s").cause.contains("SIGSEGV"));
    }

    #[test]
    fn a_console_log_is_decoded_with_causes_related() {
        let log = "[    2.85] Run /sbin/init as init process\n\
                   flag provided but not defined: -debug\n\
                   Usage of envd:\n\
                   [    2.96] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\n\
                   [    2.97] CPU: 0 PID: 1 Comm: init Not tainted\n";
        let d = explain(log);
        assert_eq!(d.lines, 5);
        let rules: Vec<&str> = d.explanations.iter().map(|e| e.rule).collect();
        assert_eq!(rules, vec!["envd.flag-undefined", "panic.init-exit-2"]);
        assert_eq!(d.explanations[1].line, 4);
        assert_eq!(d.notes, vec!["line 2 is the likely reason PID 1 ended on line 4 (exit status 2)"]);
        assert_eq!(d.first_fatal().unwrap().line, 4);
        // JSON-escaped newlines inside one pasted log line.
        let d = explain(
            r#"{"msg":"boot failed","log":"flag provided but not defined: -cmd\nAttempted to kill init! exitcode=0x00000200"}"#,
        );
        assert_eq!(d.explanations.len(), 2);
    }

    #[test]
    fn harmless_boot_lines_are_not_explained() {
        let log = "EXT4-fs (nvme0n1): mounted filesystem with ordered data mode. Quota mode: none.\n\
                   VFS: Mounted root (ext4 filesystem) on device 259:0.\n\
                   Run /sbin/init as init process\n\
                   tmpl-init: starting envd\n\
                   reboot: Power down\n";
        assert!(explain(log).explanations.is_empty());
    }
}
