//! Boot a build's rootfs in a real VM and decide a verdict from its serial console.
//!
//! `boot_test` never writes to the build: QEMU opens a full image read-only with a copy-on-write
//! overlay (`snapshot=on`), layered builds are assembled into a temporary image through
//! [`crate::device::Device`], and Firecracker gets a temporary copy (or the image read-only). The
//! work directory (overlay, assembled image, console, sockets) is removed when the boot ends,
//! and every VMM process is killed and reaped. Every boot is bounded by a timeout.
//!
//! The verdict is `ok` when the expected marker appears on the console and no failure (kernel
//! panic, envd service exit) follows within a settle time. Failures carry the console lines that
//! prove them, decoded by [`crate::explain`].

pub mod console;
pub mod firecracker;
pub mod http;
pub mod image;
pub mod kernel;
pub mod net;
pub mod netns;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use self::console::{End, Line, WatchConfig, Watched};
use self::image::RootImage;
use self::kernel::{Kernel, KernelSource, RootBus};
use self::qemu::Accel;
use crate::build::Build;
use crate::error::{Error, Result};
use crate::explain::{self, Explanation};
use crate::progress::Progress;

/// The line the init wrapper written by `tmpl inject-envd` prints just before it execs envd.
pub const DEFAULT_MARKER: &str = "tmpl-init: starting envd";
/// What `boot-test` waits for by default: the wrapper's marker, or systemd starting envd.service
/// (E2B's own images run envd as a systemd service).
pub const DEFAULT_EXPECT: &str = r"tmpl-init: starting envd|Started envd\.service|Started Env Daemon Service";

/// How strong the proof of a good boot is, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// PID 1 still running some seconds after the kernel ran it, no panic, no "envd exited". The
    /// weakest: it does not show that envd runs, only that nothing visibly died.
    Alive,
    /// The expected console line (tmpl's wrapper, or systemd starting envd.service).
    Marker,
    /// `GET /health` on envd's port answered 2xx through the guest's own network, which is what
    /// the orchestrator waits for. The strongest.
    Health,
}

impl Evidence {
    pub fn name(self) -> &'static str {
        match self {
            Evidence::Alive => "alive",
            Evidence::Marker => "marker",
            Evidence::Health => "health",
        }
    }

    /// What the level proves, for the report.
    pub fn meaning(self) -> &'static str {
        match self {
            Evidence::Alive => "PID 1 kept running with no panic (weakest: envd itself is not proven)",
            Evidence::Marker => "the expected console line appeared",
            Evidence::Health => {
                "envd answered GET /health through the guest's network (what the orchestrator waits for)"
            }
        }
    }
}

/// Which VMM boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    Qemu,
    Firecracker,
}

/// Acceleration requested for QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when it works (probed), else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Node directories (orchestrator environment variables, e2b-formats.md §4).
#[derive(Debug, Clone)]
pub struct HostDirs {
    pub kernels: PathBuf,
    pub fc_versions: PathBuf,
    pub boot: PathBuf,
}

impl HostDirs {
    /// `HOST_KERNELS_DIR`, `FIRECRACKER_VERSIONS_DIR` (orchestrator defaults), `/boot`.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| {
            std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| d.into())
        };
        HostDirs {
            kernels: var("HOST_KERNELS_DIR", kernel::DEFAULT_KERNELS_DIR),
            fc_versions: var("FIRECRACKER_VERSIONS_DIR", firecracker::DEFAULT_VERSIONS_DIR),
            boot: PathBuf::from("/boot"),
        }
    }
}

/// Everything `boot_test` needs besides the build.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub vmm: Vmm,
    pub kernel: Option<PathBuf>,
    /// Firecracker binary (else from FIRECRACKER_VERSIONS_DIR).
    pub firecracker: Option<PathBuf>,
    pub timeout: Duration,
    pub settle: Duration,
    pub expect: Regex,
    /// Extra kernel command-line arguments (appended last).
    pub append: Option<String>,
    pub accel: AccelChoice,
    pub memory_mib: u32,
    /// How long a KVM guest gets to print its first line before TCG is tried.
    pub kvm_probe: Duration,
    /// Firecracker: attach a full image read-only instead of booting a copy.
    pub read_only_root: bool,
    pub dirs: HostDirs,
    /// Copy the whole console log here.
    pub save_console: Option<PathBuf>,
    /// Where the temporary work directory is created (default: TMPDIR).
    pub work_parent: Option<PathBuf>,
    /// The weakest evidence that passes; None: the strongest this backend and kernel can give.
    pub require: Option<Evidence>,
    /// How long PID 1 must run for `alive` evidence.
    pub alive_after: Duration,
}

/// The boot's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The marker appeared and nothing failed within the settle time.
    Ok,
    /// The guest kernel panicked.
    Panic,
    /// systemd reported envd's service failing.
    EnvdFailed,
    /// The VM stopped (powered off, halted) without printing the marker.
    NoMarker,
    /// Neither marker nor failure within the timeout.
    Timeout,
    /// The VMM could not run the guest at all.
    VmmError,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Panic => "panic",
            Verdict::EnvdFailed => "envd-failed",
            Verdict::NoMarker => "no-marker",
            Verdict::Timeout => "timeout",
            Verdict::VmmError => "vmm-error",
        }
    }
}

/// One VMM start.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<RootBus>,
    pub result: String,
    pub elapsed_ms: u64,
}

/// Everything a boot showed.
#[derive(Debug, Clone, Serialize)]
pub struct BootOutcome {
    pub verdict: Verdict,
    pub summary: String,
    pub vmm: Vmm,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel_note: Option<String>,
    pub kernel: Kernel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firecracker: Option<PathBuf>,
    pub root_device: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_bus: Option<RootBus>,
    pub root_bus_reason: String,
    pub root: RootImage,
    pub cmdline: String,
    pub expect: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<Line>,
    /// From VMM start to the marker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<u64>,
    /// The whole boot-test, including probes, retries and image assembly.
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Line>,
    /// The strongest evidence the boot gave (none when it failed).
    pub evidence: Option<Evidence>,
    /// The weakest evidence that passes (`--require`, else `strongest_available`).
    pub required: Evidence,
    /// The strongest evidence this backend and kernel can give, and why.
    pub strongest_available: Evidence,
    pub available_reason: String,
    /// The `GET /health` probe: where, and its first 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// The kernel's line starting PID 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<Line>,
    /// Console lines that prove the verdict (on failure).
    pub console_evidence: Vec<Line>,
    /// The console decoded by `tmpl explain`.
    pub decoded: Vec<Explanation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub console_lines: usize,
    /// The end of the console (on failure).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub console_tail: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_saved: Option<PathBuf>,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_calls: Vec<firecracker::ApiCall>,
    /// The VMM's own messages, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmm_output: Option<String>,
}

/// The health probe's part of a boot.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// What was probed (a host port forwarded to the guest's 169.254.0.21:49983, or the guest's
    /// address inside the sandbox namespace).
    pub url: String,
    /// The guest side: `169.254.0.21:49983`.
    pub guest: String,
    /// The first 2xx status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// VMM start to the first 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// Kernel start (its first console output) to the first 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_kernel_ms: Option<u64>,
    /// The last failed attempt, when none succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Lines of console tail shown on failure.
const TAIL: usize = 30;
/// Lines before the failure kept as evidence.
const CONTEXT: usize = 6;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appended to the command line of TCG boots (see `boot_qemu`).
pub const TCG_CMDLINE: &str = "no_timer_check";

/// The kernel command line for QEMU (E2B's essentials, plus the build's `cmdline_args` and
/// `--append`, in that order so later ones win).
pub fn qemu_cmdline(bus: RootBus, build: &Build, append: Option<&str>) -> String {
    if bus == RootBus::VirtioMmio {
        // Firecracker-like: the orchestrator's arguments, what Firecracker appends for a
        // read-write root drive (`root=/dev/vda rw`), then the template's and the operator's.
        // QEMU microvm (acpi=off) appends `virtio_mmio.device=...` after all of it, so nothing
        // here may contain `--`.
        let mut parts = net::orchestrator_args();
        parts.extend(["root=/dev/vda".to_string(), "rw".into()]);
        parts.extend(metadata_args(build));
        parts.extend(append.map(str::to_string));
        return parts.join(" ");
    }
    let mut parts = vec![
        "console=ttyS0".to_string(),
        "earlycon=uart8250,io,0x3f8".into(),
        format!("root={}", bus.device()),
        "rw".into(),
        "rootfstype=ext4".into(),
        "init=/sbin/init".into(),
        "panic=-1".into(),
        "reboot=k".into(),
    ];
    parts.extend(metadata_args(build));
    parts.extend(append.map(str::to_string));
    parts.join(" ")
}

/// The kernel command line for Firecracker (it adds `root=/dev/vda rw|ro` itself).
pub fn firecracker_cmdline(build: &Build, append: Option<&str>) -> String {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "pci=off",
        "i8042.nokbd",
        "i8042.noaux",
        "rootfstype=ext4",
        "init=/sbin/init",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    parts.extend(metadata_args(build));
    parts.extend(append.map(str::to_string));
    parts.join(" ")
}

fn metadata_args(build: &Build) -> Vec<String> {
    build
        .meta()
        .filter(|m| !m.contents_ignored)
        .map(|m| {
            m.cmdline_args.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect()
        })
        .unwrap_or_default()
}

/// Verdict from what the watch saw: ok when the evidence reaches `required`.
fn verdict_of(w: &Watched, required: Evidence) -> Verdict {
    if let Some(f) = &w.failure {
        return if f.text.contains("Kernel panic") { Verdict::Panic } else { Verdict::EnvdFailed };
    }
    if w.evidence().is_some_and(|e| e >= required) {
        return Verdict::Ok;
    }
    match w.end {
        End::Timeout => Verdict::Timeout,
        End::NoOutput | End::Stalled => Verdict::VmmError,
        End::Exited if w.first_output_at.is_none() => Verdict::VmmError,
        _ => Verdict::NoMarker,
    }
}

fn end_text(w: &Watched, required: Evidence) -> String {
    match (verdict_of(w, required), w.end) {
        (Verdict::Ok, _) => format!("{} evidence", w.evidence().map(Evidence::name).unwrap_or_default()),
        (Verdict::Panic, _) | (Verdict::EnvdFailed, _) => "failed".into(),
        (_, End::Timeout) => "timeout".into(),
        (_, End::NoOutput) => "no console output".into(),
        (_, End::Stalled) => "console output stopped before the kernel ran init".into(),
        (_, End::Exited) => format!("VMM exited ({})", w.exit.map(|s| s.to_string()).unwrap_or_default()),
        (_, End::Halted) => "guest halted".into(),
        (_, _) => "stopped".into(),
    }
}

/// Assemble the outcome from the last attempt.
struct Finish<'a> {
    vmm: Vmm,
    accel: Option<Accel>,
    accel_note: Option<String>,
    kernel: Kernel,
    firecracker: Option<PathBuf>,
    bus: Option<RootBus>,
    bus_reason: String,
    root: RootImage,
    cmdline: String,
    opts: &'a BootOptions,
    started: Instant,
    attempts: Vec<Attempt>,
    api_calls: Vec<firecracker::ApiCall>,
    vmm_output: Option<String>,
    notes: Vec<String>,
    required: Evidence,
    available: (Evidence, String),
    health: Option<net::HealthTarget>,
}

impl Finish<'_> {
    fn outcome(self, w: &Watched, console: &console::Console) -> BootOutcome {
        let verdict = verdict_of(w, self.required);
        let lines = console.lines();
        let decoded = explain::explain(&console.text());
        let mut notes = self.notes;
        notes.extend(decoded.notes.iter().cloned());
        let mut evidence: Vec<Line> = Vec::new();
        if verdict != Verdict::Ok {
            let mut idx: Vec<usize> = decoded.explanations.iter().map(|e| e.line).collect();
            if let Some(f) = &w.failure {
                let start = f.line.saturating_sub(CONTEXT).max(1);
                idx.extend(start..=f.line);
            }
            idx.sort_unstable();
            idx.dedup();
            evidence =
                idx.into_iter().filter_map(|n| lines.get(n - 1).map(|t| Line { line: n, text: t.clone() })).collect();
        }
        // The tail ends a few lines after a failure (the call trace after a panic is noise here).
        let end = w.failure.as_ref().map_or(lines.len(), |f| (f.line + 2).min(lines.len()));
        let console_tail =
            if verdict == Verdict::Ok { Vec::new() } else { lines[end.saturating_sub(TAIL)..end].to_vec() };
        if console.dropped() > 0 {
            notes.push(format!("{} console lines were not kept (the guest flooded its console)", console.dropped()));
        }
        let console_saved = self
            .opts
            .save_console
            .as_ref()
            .and_then(|dest| std::fs::copy(console.path(), dest).ok().map(|_| dest.clone()));
        if let (Some(dest), None) = (&self.opts.save_console, &console_saved) {
            notes.push(format!("could not save the console to {}", dest.display()));
        }
        let first_fatal = decoded.first_fatal().cloned();
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        let reached = w.evidence();
        let short_of = match reached {
            Some(e) => format!(
                " (strongest evidence: {}{})",
                e.name(),
                match e {
                    Evidence::Alive => format!(", PID 1 running since {:.1} s", secs(w.init_at)),
                    Evidence::Marker => format!(", marker after {:.1} s", secs(w.marker_at)),
                    Evidence::Health => String::new(),
                }
            ),
            None if w.init_at.is_some() => format!(" (the kernel ran PID 1 after {:.1} s)", secs(w.init_at)),
            None => String::new(),
        };
        let probe_note = match (&self.health, &w.health, &w.health_last_error) {
            (Some(t), None, last) if self.required == Evidence::Health => format!(
                "; GET {} never answered 2xx{}",
                t.url(),
                last.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default()
            ),
            _ => String::new(),
        };
        let settle = self.opts.settle.as_secs_f64();
        let summary = match verdict {
            Verdict::Ok => match reached.unwrap_or(Evidence::Alive) {
                Evidence::Health => format!(
                    "envd answered GET /health with {} after {:.1} s and nothing failed within {settle:.1} s",
                    w.health.map(|h| h.0).unwrap_or_default(),
                    secs(w.health.map(|h| h.1)),
                ),
                Evidence::Marker => format!(
                    "the marker appeared after {:.1} s and nothing failed within {settle:.1} s",
                    secs(w.marker_at)
                ),
                Evidence::Alive => format!(
                    "PID 1 was still running {:.0} s after the kernel ran it, with no panic (alive: the weakest evidence)",
                    self.opts.alive_after.as_secs_f64()
                ),
            },
            Verdict::Panic | Verdict::EnvdFailed => {
                let line = w.failure.as_ref().map(|f| strip_ts(&f.text).to_string()).unwrap_or_default();
                match first_fatal.as_ref().or(decoded.explanations.first()) {
                    Some(e) => format!("{line} — {}", e.meaning),
                    None => line,
                }
            }
            Verdict::NoMarker => format!(
                "the VM stopped after {:.1} s without {} evidence{short_of}",
                w.elapsed.as_secs_f64(),
                self.required.name()
            ),
            Verdict::Timeout => format!(
                "no {} evidence and no failure within {} s{}{short_of}{probe_note}",
                self.required.name(),
                self.opts.timeout.as_secs(),
                if w.first_output_at.is_none() { " (and no console output at all)" } else { "" }
            ),
            Verdict::VmmError => {
                let msg = self.vmm_output.as_deref().and_then(|o| o.lines().rev().find(|l| !l.trim().is_empty()));
                format!("the VMM did not run the guest{}", msg.map(|m| format!(": {m}")).unwrap_or_default())
            }
        };
        BootOutcome {
            verdict,
            summary,
            vmm: self.vmm,
            accel: self.accel,
            accel_note: self.accel_note,
            kernel: self.kernel,
            firecracker: self.firecracker,
            root_device: self.bus.map(|b| b.device()).unwrap_or("/dev/vda"),
            root_bus: self.bus,
            root_bus_reason: self.bus_reason,
            root: self.root,
            cmdline: self.cmdline,
            expect: self.opts.expect.as_str().to_string(),
            marker: w.marker.clone(),
            boot_ms: w.marker_at.map(ms),
            elapsed_ms: ms(self.started.elapsed()),
            failure: w.failure.clone(),
            evidence: if verdict == Verdict::Ok { reached } else { reached.filter(|_| w.failure.is_none()) },
            required: self.required,
            strongest_available: self.available.0,
            available_reason: self.available.1,
            health: self.health.as_ref().map(|t| HealthReport {
                url: t.url(),
                guest: format!("{}:{}", net::GUEST_IP, net::ENVD_PORT),
                status: w.health.map(|h| h.0),
                ms: w.health.map(|h| ms(h.1)),
                after_kernel_ms: w.health.zip(w.first_output_at).map(|(h, k)| ms(h.1.saturating_sub(k))),
                last_error: if w.health.is_none() { w.health_last_error.clone() } else { None },
            }),
            init: w.init.clone(),
            console_evidence: evidence,
            decoded: decoded.explanations,
            notes,
            console_lines: lines.len() + console.dropped(),
            console_tail,
            console_saved,
            attempts: self.attempts,
            api_calls: self.api_calls,
            vmm_output: if verdict == Verdict::VmmError { self.vmm_output } else { None },
        }
    }
}

fn strip_ts(s: &str) -> &str {
    let t = s.trim_start();
    match (t.starts_with('['), t.find(']')) {
        (true, Some(i)) => t[i + 1..].trim_start(),
        _ => t,
    }
}

fn work_dir(opts: &BootOptions) -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("tmpl-boot-");
    match &opts.work_parent {
        Some(p) => b.tempdir_in(p).map_err(|e| Error::write(p, e)),
        None => b.tempdir().map_err(|e| Error::write(std::env::temp_dir(), e)),
    }
}

/// Boot `build`'s rootfs and decide a verdict. Environment problems (no QEMU, no kernel) are
/// errors; everything the guest does is in the outcome.
pub fn boot_test(build: &Build, opts: &BootOptions, progress: &dyn Progress) -> Result<BootOutcome> {
    let started = Instant::now();
    let work = work_dir(opts)?;
    let out = match opts.vmm {
        Vmm::Qemu => boot_qemu(build, opts, work.path(), started, progress),
        Vmm::Firecracker => boot_firecracker(build, opts, work.path(), started, progress),
    };
    drop(work);
    out
}

/// What keeps a boot test from starting on this machine (the environment's: exit 4).
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "no kernel {what}; tried:\n  - {}\npass one with --kernel (e.g. a Debian cloud kernel extracted by scripts/fetch-test-kernel.sh)",
        tried.join("\n  - ")
    )]
    NoKernel { what: String, tried: Vec<String> },
    #[error("{} cannot boot this rootfs: {reason}", kernel.display())]
    KernelCannotBoot { kernel: PathBuf, reason: String },
    #[error("{} found no root disk on any bus it was tried with ({buses})", kernel.display())]
    NoRootDisk { kernel: PathBuf, buses: String },
    #[error("{evidence} evidence is not available here: {reason}; pass --require marker or --require alive")]
    EvidenceUnavailable { evidence: &'static str, reason: String },
    #[error("metadata.json has no template.{field}; pass {flag}")]
    NoVersion { field: &'static str, flag: &'static str },
    #[error("no firecracker binary for {version}; tried:\n  - {}\n(FIRECRACKER_VERSIONS_DIR={})", tried.join("\n  - "), dir.display())]
    NoFirecracker { version: String, tried: Vec<String>, dir: PathBuf },
}

impl From<VmError> for Error {
    fn from(e: VmError) -> Self {
        Error::environment(e)
    }
}

/// The strongest evidence the Firecracker backend can give with this kernel config.
fn firecracker_evidence(config: Option<&crate::kconfig::KernelConfig>) -> (Evidence, String) {
    use crate::kconfig::{Profile, Severity, check};
    let Some(config) = config else {
        return (
            Evidence::Marker,
            "the kernel's config is unknown: cannot tell whether it configures eth0 from ip=".into(),
        );
    };
    let missing: Vec<String> = check(config, Profile::Firecracker)
        .into_iter()
        .filter(|c| !c.ok && c.severity == Severity::Fatal)
        .map(|c| format!("CONFIG_{} {}", c.option, c.found))
        .collect();
    if missing.is_empty() {
        (
            Evidence::Health,
            "Firecracker runs in a fresh network namespace with tap0 (169.254.0.22/30) as under the orchestrator; \
             GET /health goes to 169.254.0.21:49983 from inside it"
                .into(),
        )
    } else {
        (
            Evidence::Marker,
            format!("the kernel lacks what an E2B guest needs ({}): see tmpl check-kernel", missing.join(", ")),
        )
    }
}

/// A kernel config as the `CONFIG_X -> value` map the root-bus plan reads.
fn config_map(c: &crate::kconfig::KernelConfig) -> std::collections::BTreeMap<String, String> {
    use crate::kconfig::Setting;
    c.options
        .iter()
        .filter_map(|(k, v)| match v {
            Setting::Builtin => Some((k.clone(), "y".to_string())),
            Setting::Module => Some((k.clone(), "m".to_string())),
            Setting::Value(v) => Some((k.clone(), v.clone())),
            Setting::NotSet => None,
        })
        .collect()
}

/// The strongest evidence a QEMU boot on `bus` with this kernel config can give, and why.
pub fn available_evidence(bus: Option<RootBus>, config: Option<&crate::kconfig::KernelConfig>) -> (Evidence, String) {
    use crate::kconfig::{Profile, Severity, check};
    if bus != Some(RootBus::VirtioMmio) {
        return (
            Evidence::Marker,
            format!(
                "the root disk is on {}: only the virtio-mmio (microvm) backend gives the guest E2B's network",
                bus.map(RootBus::name).unwrap_or("an unknown bus")
            ),
        );
    }
    let Some(config) = config else {
        return (
            Evidence::Marker,
            "the kernel's config is unknown (no IKCONFIG, no config file beside it): cannot tell whether it \
             configures eth0 from ip="
                .to_string(),
        );
    };
    let missing: Vec<String> = check(config, Profile::QemuMicrovm)
        .into_iter()
        .filter(|c| !c.ok && c.severity == Severity::Fatal)
        .map(|c| format!("CONFIG_{} {}", c.option, c.found))
        .collect();
    if missing.is_empty() {
        (
            Evidence::Health,
            "the kernel has virtio-mmio with command-line devices, virtio-net and IP_PNP: the guest takes \
             169.254.0.21 from ip= as under Firecracker"
                .to_string(),
        )
    } else {
        (
            Evidence::Marker,
            format!("the kernel lacks what an E2B guest needs ({}): see tmpl check-kernel", missing.join(", ")),
        )
    }
}

fn no_kernel(what: &str, tried: Vec<String>) -> Error {
    VmError::NoKernel { what: what.to_string(), tried }.into()
}

fn boot_qemu(
    build: &Build,
    opts: &BootOptions,
    work: &Path,
    started: Instant,
    progress: &dyn Progress,
) -> Result<BootOutcome> {
    let qemu_bin = crate::tools::find(qemu::QEMU, qemu::QEMU_PACKAGE)?;
    let running = rustix::system::uname().release().to_string_lossy().into_owned();
    let kver = build.meta().filter(|m| !m.contents_ignored).and_then(|m| m.kernel_version()).map(str::to_string);
    let kernel = kernel::resolve_for_qemu(
        opts.kernel.as_deref(),
        kver.as_deref(),
        &opts.dirs.kernels,
        &opts.dirs.boot,
        Some(&running),
    )
    .map_err(|tried| no_kernel("QEMU can boot", tried))?;
    // The kernel's config: embedded (IKCONFIG) or a file beside it.
    let kconf = crate::kconfig::load(&kernel.path, kernel.config.as_deref()).ok();
    let config = kconf.as_ref().map(config_map);
    let plan = kernel::plan_root_bus(&kernel.format, config.as_ref())
        .map_err(|reason| VmError::KernelCannotBoot { kernel: kernel.path.clone(), reason })?;
    // The strongest evidence: health needs the microvm backend (the only one with E2B's guest
    // network) and a kernel that configures eth0 from ip=.
    let available = available_evidence(plan.candidates.first().copied(), kconf.as_ref());
    let required = opts.require.unwrap_or(available.0);
    let can_probe = plan.candidates.contains(&RootBus::VirtioMmio);
    if required == Evidence::Health && !can_probe {
        return Err(VmError::EvidenceUnavailable { evidence: required.name(), reason: available.1 }.into());
    }
    let root = image::prepare(build, work, false, progress)?;

    let mut accels: Vec<Accel> = match opts.accel {
        AccelChoice::Kvm => vec![Accel::Kvm],
        AccelChoice::Tcg => vec![Accel::Tcg],
        AccelChoice::Auto => vec![Accel::Kvm, Accel::Tcg],
    };
    let mut accel_note = None;
    if opts.accel == AccelChoice::Auto
        && let Err(why) = qemu::kvm_available()
    {
        accels = vec![Accel::Tcg];
        accel_note = Some(format!("{why}; using TCG (software emulation)"));
    }
    let mut attempts = Vec::new();
    let mut notes = Vec::new();
    let mut bus_reason = plan.reason.clone();
    type Last = (Watched, console::Console, Accel, RootBus, String, String, Option<net::HealthTarget>);
    let mut last: Option<Last> = None;
    let mut n = 0;
    'buses: for (bi, &bus) in plan.candidates.iter().enumerate() {
        let cmdline = qemu_cmdline(bus, build, opts.append.as_deref());
        // virtio-mmio boots get E2B's network: a host port forwarded to the guest's 49983.
        let net =
            if bus == RootBus::VirtioMmio { Some(net::free_local_port().map_err(Error::environment)?) } else { None };
        let health =
            net.map(|port| net::HealthTarget { addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)), netns: None });
        let mut ai = 0;
        while ai < accels.len() {
            let accel = accels[ai];
            n += 1;
            let can_fall_back = accel == Accel::Kvm && ai + 1 < accels.len();
            // Under TCG on a loaded host the emulated timer can miss the kernel's early IO-APIC
            // timer check ("IO-APIC + timer doesn't work!" panic, seen here at load 10):
            // skip that check, as is usual for guests.
            let cmdline = if accel == Accel::Tcg { format!("{cmdline} {TCG_CMDLINE}") } else { cmdline.clone() };
            let spec = qemu::QemuSpec {
                kernel: kernel.path.clone(),
                cmdline: cmdline.clone(),
                image: root.path().to_path_buf(),
                bus,
                accel,
                memory_mib: opts.memory_mib,
                console: work.join(format!("console-{n}.log")),
                host_port: net,
            };
            let cfg = WatchConfig {
                first_output: can_fall_back.then_some(opts.kvm_probe),
                stall_before_init: can_fall_back.then_some(opts.kvm_probe.saturating_mul(2)),
                health: health.clone(),
                alive_after: opts.alive_after,
                goal: required,
                ..WatchConfig::marker(opts.expect.clone(), opts.timeout, opts.settle)
            };
            let (run, console) = qemu::run(&qemu_bin, &spec, work, &cfg)?;
            attempts.push(Attempt {
                accel: Some(accel),
                bus: Some(bus),
                result: end_text(&run.watched, required),
                elapsed_ms: ms(run.watched.elapsed),
            });
            if can_fall_back && let Some(why) = qemu::kvm_failed(&run) {
                accel_note = Some(format!("{why}; fell back to TCG (software emulation)"));
                accels = vec![Accel::Tcg];
                ai = 0;
                continue;
            }
            let no_device = !plan.from_config
                && bi + 1 < plan.candidates.len()
                && explain::explain(&console.text()).explanations.iter().any(|e| e.rule == "rootfs.no-root-device");
            if no_device {
                notes.push(format!(
                    "the kernel found no {} disk; trying {}",
                    bus.name(),
                    plan.candidates[bi + 1].name()
                ));
                continue 'buses;
            }
            if !plan.from_config {
                bus_reason = format!("{}; {} worked", plan.reason, bus.name());
            }
            last = Some((run.watched, console, accel, bus, cmdline, run.qemu_output, health));
            break 'buses;
        }
    }
    let Some((w, console, accel, bus, cmdline, qemu_output, health)) = last else {
        return Err(VmError::NoRootDisk {
            kernel: kernel.path.clone(),
            buses: plan.candidates.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
        }
        .into());
    };
    let finish = Finish {
        vmm: Vmm::Qemu,
        accel: Some(accel),
        accel_note,
        kernel,
        firecracker: None,
        bus: Some(bus),
        bus_reason,
        root,
        cmdline,
        opts,
        started,
        attempts,
        api_calls: Vec::new(),
        vmm_output: (!qemu_output.is_empty()).then_some(qemu_output),
        notes,
        required,
        available: if bus == plan.candidates[0] { available } else { available_evidence(Some(bus), kconf.as_ref()) },
        health,
    };
    Ok(finish.outcome(&w, &console))
}

fn boot_firecracker(
    build: &Build,
    opts: &BootOptions,
    work: &Path,
    started: Instant,
    progress: &dyn Progress,
) -> Result<BootOutcome> {
    let meta = build.meta().filter(|m| !m.contents_ignored);
    let binary = match &opts.firecracker {
        Some(p) => p.clone(),
        None => {
            let Some(v) = meta.and_then(|m| m.firecracker_version()).filter(|v| !v.is_empty() && !v.contains('/'))
            else {
                return Err(VmError::NoVersion { field: "firecracker_version", flag: "--firecracker PATH" }.into());
            };
            firecracker::first_existing(&firecracker::binary_candidates(&opts.dirs.fc_versions, v)).map_err(
                |tried| VmError::NoFirecracker { version: v.to_string(), tried, dir: opts.dirs.fc_versions.clone() },
            )?
        }
    };
    let (kernel_path, source) = match &opts.kernel {
        Some(p) => (p.clone(), KernelSource::Flag),
        None => {
            let Some(v) = meta.and_then(|m| m.kernel_version()).filter(|v| !v.is_empty() && !v.contains('/')) else {
                return Err(VmError::NoVersion { field: "kernel_version", flag: "--kernel PATH" }.into());
            };
            let c = kernel::host_kernel_candidates(&opts.dirs.kernels, v);
            (
                firecracker::first_existing(&c)
                    .map_err(|tried| no_kernel(&format!("{v} in HOST_KERNELS_DIR"), tried))?,
                KernelSource::HostKernelsDir,
            )
        }
    };
    let format = kernel::inspect(&kernel_path).map_err(|e| Error::read(&kernel_path, e))?;
    let kernel = Kernel { config: kernel::find_config(&kernel_path), path: kernel_path, source, format };
    let root = image::prepare(build, work, !opts.read_only_root, progress)?;
    let read_only = matches!(root.source, image::RootSource::BuildFile { .. });
    // Health needs a kernel that configures eth0 from ip= and the sandbox's namespace with tap0
    // (root); without them the backend gives marker or alive.
    let kconf = crate::kconfig::load(&kernel.path, kernel.config.as_deref()).ok();
    let mut available = firecracker_evidence(kconf.as_ref());
    let required = opts.require.unwrap_or(available.0);
    let sandbox = if available.0 == Evidence::Health {
        match netns::create() {
            Ok(ns) => Some(ns),
            Err(e) => {
                available = (Evidence::Marker, format!("cannot set up the sandbox's network namespace: {e}"));
                None
            }
        }
    } else {
        None
    };
    if required == Evidence::Health && sandbox.is_none() {
        return Err(VmError::EvidenceUnavailable { evidence: required.name(), reason: available.1 }.into());
    }
    let cmdline = if sandbox.is_some() {
        // The orchestrator's arguments; Firecracker appends root=/dev/vda and its device list.
        let mut parts = net::orchestrator_args();
        parts.extend(metadata_args(build));
        parts.extend(opts.append.clone());
        parts.join(" ")
    } else {
        firecracker_cmdline(build, opts.append.as_deref())
    };
    let cfg = firecracker::FcConfig {
        kernel: kernel.path.clone(),
        boot_args: cmdline.clone(),
        rootfs: root.path().to_path_buf(),
        read_only,
        vcpus: 1,
        memory_mib: opts.memory_mib,
        network: sandbox.is_some(),
    };
    let health = sandbox.as_ref().map(netns::SandboxNet::health_target);
    let watch = WatchConfig {
        alive_after: opts.alive_after,
        goal: required,
        health: health.clone(),
        ..WatchConfig::marker(opts.expect.clone(), opts.timeout, opts.settle)
    };
    let prefix = sandbox.as_ref().map(netns::SandboxNet::exec_prefix).unwrap_or_default();
    let console_path = work.join("console.log");
    let ran = firecracker::run(&prefix, &binary, &cfg, work, &console_path, &watch);
    drop(sandbox);
    let (w, console, calls) = ran?;
    let finish = Finish {
        vmm: Vmm::Firecracker,
        accel: None,
        accel_note: None,
        kernel,
        firecracker: Some(binary),
        bus: None,
        bus_reason: format!("Firecracker virtio-blk ({})", if read_only { "read-only" } else { "temporary copy" }),
        root,
        cmdline,
        opts,
        started,
        attempts: vec![Attempt { accel: None, bus: None, result: end_text(&w, required), elapsed_ms: ms(w.elapsed) }],
        api_calls: calls,
        vmm_output: None,
        notes: Vec::new(),
        required,
        available,
        health,
    };
    Ok(finish.outcome(&w, &console))
}
