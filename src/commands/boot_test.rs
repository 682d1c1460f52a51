//! `tmpl boot-test BUILD`: boot the build's rootfs under QEMU (or the node's Firecracker) and
//! prove that init reaches envd, without the E2B stack. Never writes to the build.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::explain::render_explanations;
use super::{Ctx, Outcome};
use crate::error::{Result, UsageError};
use crate::exit_code;
use crate::report::{Report, Style, sanitize};
use crate::vm::{self, AccelChoice, BootOptions, BootOutcome, Evidence, HostDirs, Verdict, Vmm};
use crate::vocab::BuildId;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VmmArg {
    Qemu,
    Firecracker,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EvidenceArg {
    /// envd answered GET /health (2xx) through the guest's network
    Health,
    /// the expected console line appeared
    Marker,
    /// PID 1 kept running (--alive-after) with no panic and no "envd exited" (weakest)
    Alive,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 ok (the required evidence was seen); 1 the boot failed (panic, envd exited, \
too weak evidence, timeout); 3 bad build; 4 no QEMU/kernel/firecracker, the VMM could not run the guest, or the \
required evidence is impossible with this backend and kernel.\n\
Evidence, strongest first: health (GET /health on envd's 49983 answered 2xx through the guest's network: a \
virtio-mmio kernel with virtio-net and IP_PNP booted on QEMU microvm with E2B's ip= command line), marker (the \
expected console line), alive (PID 1 still running --alive-after seconds after the kernel ran it: the weakest). \
Default --require: the strongest the backend and kernel can give (see tmpl check-kernel).\n\
Kernel: --kernel (or TMPL_KERNEL), else metadata's kernel_version under HOST_KERNELS_DIR (if QEMU can boot it), \
else /boot/vmlinuz-*. The kernel needs its root-disk driver (NVMe or virtio-blk) and ext4 built in: no initramfs is used.")]
pub struct Args {
    /// Build ID (UUID) or path to a build directory
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// Guest kernel (bzImage, or vmlinux with a PVH note for QEMU)
    #[arg(long, value_name = "PATH", env = "TMPL_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub timeout: u64,
    /// After the marker, how long no panic may follow (seconds, fractions allowed)
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub settle: f64,
    /// Regex that proves the boot reached its goal (default: the inject-envd wrapper's
    /// "tmpl-init: starting envd", or systemd starting envd.service)
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Extra kernel command-line arguments
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Which VMM boots the guest
    #[arg(long, value_enum, default_value_t = VmmArg::Qemu)]
    pub vmm: VmmArg,
    /// QEMU acceleration: auto probes KVM and falls back to TCG
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// Guest memory in MiB
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub memory: u32,
    /// Save the whole serial console to this file
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// Firecracker binary (default: FIRECRACKER_VERSIONS_DIR/<firecracker_version>/firecracker)
    #[arg(long, value_name = "PATH")]
    pub firecracker: Option<PathBuf>,
    /// Firecracker: attach a full image read-only instead of booting a temporary copy
    #[arg(long)]
    pub read_only_root: bool,
    /// Where the temporary work directory goes (assembled image, overlay, console); default TMPDIR
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The weakest evidence that passes (default: the strongest this backend and kernel can give)
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub require: Option<EvidenceArg>,
    /// For `alive` evidence: seconds PID 1 must keep running after the kernel ran it
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub alive_after: f64,
}

#[derive(Debug, Serialize)]
pub struct BootTestReport {
    pub build_id: BuildId,
    pub path: PathBuf,
    #[serde(flatten)]
    pub outcome: BootOutcome,
}

impl Report for BootTestReport {
    fn command(&self) -> &'static str {
        "boot-test"
    }

    fn ok(&self) -> bool {
        self.outcome.verdict == Verdict::Ok
    }

    fn failure_code(&self) -> u8 {
        if self.outcome.verdict == Verdict::VmmError { exit_code::ENVIRONMENT } else { exit_code::FINDINGS }
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let o = &self.outcome;
        let head = if o.verdict == Verdict::Ok {
            style.ok(true)
        } else {
            format!("{} ({})", style.ok(false), o.verdict.label())
        };
        writeln!(w, "{head} {}: {}", style.bold(&self.build_id.to_string()), sanitize(&o.summary))?;
        let vmm = match (o.vmm, o.accel) {
            (Vmm::Qemu, Some(a)) => format!("qemu, {}", a.name()),
            (Vmm::Qemu, None) => "qemu".into(),
            (Vmm::Firecracker, _) => {
                format!("firecracker {}", o.firecracker.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
            }
        };
        writeln!(w, "  vmm:     {vmm}{}", o.accel_note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())?;
        writeln!(
            w,
            "  kernel:  {} ({}, {})",
            o.kernel.path.display(),
            o.kernel.format.describe(),
            o.kernel.source.label()
        )?;
        writeln!(w, "  root:    {} — {}", o.root_device, o.root_bus_reason)?;
        writeln!(w, "  image:   {}", o.root.describe())?;
        if style.verbose {
            writeln!(w, "  cmdline: {}", o.cmdline)?;
        }
        let got = match o.evidence {
            Some(e) => format!("{} — {}", e.name(), e.meaning()),
            None => "none".into(),
        };
        writeln!(w, "  evidence: {got}")?;
        writeln!(
            w,
            "  required: {}{}",
            o.required.name(),
            if o.required == o.strongest_available {
                " (the strongest available)".to_string()
            } else {
                format!(" (strongest available: {})", o.strongest_available.name())
            }
        )?;
        if style.verbose || o.strongest_available != Evidence::Health {
            writeln!(w, "  because: {}", sanitize(&o.available_reason))?;
        }
        if let Some(h) = &o.health {
            let status = match (h.status, h.ms) {
                (Some(code), Some(ms)) => format!(
                    "{code} after {:.1} s from VMM start{}",
                    ms as f64 / 1000.0,
                    h.after_kernel_ms
                        .map(|k| format!(", {:.1} s from kernel start", k as f64 / 1000.0))
                        .unwrap_or_default()
                ),
                _ => format!(
                    "no 2xx{}",
                    h.last_error.as_ref().map(|e| format!(" (last: {})", sanitize(e))).unwrap_or_default()
                ),
            };
            writeln!(w, "  health:  GET {} (guest {}): {status}", h.url, h.guest)?;
        }
        let boot = o.boot_ms.map(|b| format!("marker after {:.1} s, ", b as f64 / 1000.0)).unwrap_or_default();
        writeln!(w, "  time:    {boot}{:.1} s in all", o.elapsed_ms as f64 / 1000.0)?;
        if let Some(m) = &o.marker {
            writeln!(w, "  marker:  console line {}: {}", m.line, sanitize(&m.text))?;
        }
        if let Some(l) = &o.init {
            writeln!(w, "  init:    console line {}: {}", l.line, sanitize(&l.text))?;
        }
        for n in &o.notes {
            writeln!(w, "  note:    {}", sanitize(n))?;
        }
        if o.verdict == Verdict::Ok {
            return Ok(());
        }
        if !o.console_evidence.is_empty() {
            writeln!(w, "\n{}", style.bold("evidence (console):"))?;
            for l in &o.console_evidence {
                writeln!(w, "  {:>5}  {}", l.line, sanitize(&l.text))?;
            }
        }
        if !o.decoded.is_empty() {
            writeln!(w, "\n{}", style.bold("decoded:"))?;
            render_explanations(w, style, &o.decoded, "  ")?;
        }
        if let Some(v) = &o.vmm_output {
            writeln!(w, "\n{}", style.bold("VMM output:"))?;
            for l in v.lines().take(20) {
                writeln!(w, "  {}", sanitize(l))?;
            }
        }
        if !o.console_tail.is_empty() {
            writeln!(
                w,
                "\n{}",
                style.bold(&format!("console (last {} of {} lines):", o.console_tail.len(), o.console_lines))
            )?;
            for l in &o.console_tail {
                writeln!(w, "  {}", sanitize(l))?;
            }
        }
        if let Some(p) = &o.console_saved {
            writeln!(w, "\nfull console: {}", p.display())?;
        }
        Ok(())
    }
}

/// Validate arguments into domain options.
pub fn options(args: &Args) -> Result<BootOptions> {
    let expect = args.expect.as_deref().unwrap_or(vm::DEFAULT_EXPECT);
    let expect =
        regex::Regex::new(expect).map_err(|e| UsageError::BadRegex { flag: "--expect", source: Box::new(e) })?;
    let range = |flag, min, max, unit| UsageError::OutOfRange { flag, min, max, unit };
    if args.timeout == 0 || args.timeout > 3600 {
        return Err(range("--timeout", 1, 3600, "seconds").into());
    }
    if !(args.settle.is_finite() && (0.0..=600.0).contains(&args.settle)) {
        return Err(range("--settle", 0, 600, "seconds").into());
    }
    if !(16..=65536).contains(&args.memory) {
        return Err(range("--memory", 16, 65536, "MiB").into());
    }
    if !(args.alive_after.is_finite() && (0.5..=600.0).contains(&args.alive_after)) {
        return Err(range("--alive-after", 1, 600, "seconds").into());
    }
    Ok(BootOptions {
        vmm: match args.vmm {
            VmmArg::Qemu => Vmm::Qemu,
            VmmArg::Firecracker => Vmm::Firecracker,
        },
        kernel: args.kernel.clone().filter(|p| !p.as_os_str().is_empty()),
        firecracker: args.firecracker.clone(),
        timeout: Duration::from_secs(args.timeout),
        settle: Duration::from_secs_f64(args.settle),
        expect,
        append: args.append.clone().filter(|a| !a.trim().is_empty()),
        accel: match args.accel {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        },
        memory_mib: args.memory,
        kvm_probe: vm::qemu::KVM_PROBE,
        read_only_root: args.read_only_root,
        dirs: HostDirs::from_env(),
        save_console: args.console.clone(),
        work_parent: args.work_dir.clone(),
        require: args.require.map(|r| match r {
            EvidenceArg::Health => Evidence::Health,
            EvidenceArg::Marker => Evidence::Marker,
            EvidenceArg::Alive => Evidence::Alive,
        }),
        alive_after: Duration::from_secs_f64(args.alive_after),
    })
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let opts = options(&args)?;
    let build = ctx.open_build(&args.build)?;
    ctx.note(&format!(
        "booting {} under {} (up to {} s)...",
        build.id,
        if opts.vmm == Vmm::Qemu { "QEMU" } else { "Firecracker" },
        args.timeout
    ));
    let outcome = vm::boot_test(&build, &opts, ctx.progress())?;
    Ok(Outcome::BootTest(Box::new(BootTestReport { build_id: build.id, path: build.dir.clone(), outcome })))
}
