//! `tmpl check-kernel VMLINUX`: read a guest kernel's config (IKCONFIG in the image, or a config
//! file beside it or given with --config) and report what an E2B guest needs and lacks, each as a
//! finding with a fix hint; and which evidence `boot-test` can get from it.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::checks::kernel::config_findings;
use crate::error::{Error, Result};
use crate::kconfig::{self, Check, ConfigOrigin, Discovery, KernelConfig, Profile};
use crate::report::{Finding, Report, Style, Tally, render_findings, sanitize};
use crate::vm::{self, Evidence};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    /// Firecracker under E2B's orchestrator (devices in ACPI or on the command line)
    Firecracker,
    /// tmpl boot-test on QEMU microvm (devices on the command line only)
    QemuMicrovm,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the kernel has everything an E2B guest needs to boot and answer on envd's \
port (warnings and missing features may remain); 1 it lacks something (error findings); 3 the file is not a \
kernel image, or its config cannot be read (no IKCONFIG and no config file: pass --config); 4 the file cannot be \
opened.")]
pub struct Args {
    /// The kernel image: ELF vmlinux (vmlinux.bin), bzImage, or arm64 Image
    #[arg(value_name = "VMLINUX")]
    pub kernel: PathBuf,
    /// The kernel's .config (or /proc/config.gz) when the image has no IKCONFIG
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Who boots the kernel
    #[arg(long, value_enum, default_value_t = ProfileArg::Firecracker)]
    pub profile: ProfileArg,
}

/// What `boot-test` can prove with this kernel.
#[derive(Debug, Serialize)]
pub struct BootTestInfo {
    pub strongest_evidence: Evidence,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct CheckKernelReport {
    pub kernel: PathBuf,
    pub profile: Profile,
    pub config: ConfigOrigin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub discovery: Discovery,
    pub boot_test: BootTestInfo,
    pub findings: Vec<Finding>,
    pub summary: Tally,
    /// Every requirement checked, satisfied or not.
    pub checks: Vec<Check>,
}

impl Report for CheckKernelReport {
    fn command(&self) -> &'static str {
        "check-kernel"
    }

    fn ok(&self) -> bool {
        self.summary.errors == 0
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let t = &self.summary;
        let head = if self.ok() { style.ok(true) } else { style.ok(false) };
        let passed = self.checks.iter().filter(|c| c.ok).count();
        writeln!(
            w,
            "{head} {}: {passed} of {} requirements met ({} errors, {} warnings, {} missing features)",
            style.bold(&self.kernel.display().to_string()),
            self.checks.len(),
            t.errors,
            t.warnings,
            t.infos
        )?;
        let origin = match &self.config {
            ConfigOrigin::Embedded { image, compression, .. } => format!(
                "embedded in the image (IKCONFIG, {image}{})",
                compression.map(|c| format!(", {c} payload")).unwrap_or_default()
            ),
            ConfigOrigin::File { path, beside_kernel } => {
                format!("{}{}", path.display(), if *beside_kernel { " (beside the kernel)" } else { "" })
            }
        };
        writeln!(
            w,
            "  config:    {}{}",
            sanitize(&origin),
            self.release.as_ref().map(|r| format!(", Linux {r}")).unwrap_or_default()
        )?;
        let discovery = match self.discovery {
            Discovery::Acpi => "ACPI only (Firecracker >= 1.8; QEMU microvm under TCG cannot boot it)",
            Discovery::CommandLine => "kernel command line (virtio_mmio.device=): Firecracker and QEMU microvm",
            Discovery::Both => "ACPI and the kernel command line",
            Discovery::DeviceTree => "device tree (arm64)",
            Discovery::None => "none: the kernel cannot find virtio-mmio devices",
        };
        writeln!(w, "  devices:   {discovery}")?;
        writeln!(
            w,
            "  boot-test: {} evidence at best — {}",
            self.boot_test.strongest_evidence.name(),
            sanitize(&self.boot_test.reason)
        )?;
        if !self.findings.is_empty() {
            writeln!(w)?;
            render_findings(w, style, &self.findings, "  ")?;
            if !style.verbose && t.infos > 0 {
                writeln!(w, "  ({} missing features not shown; -v shows them)", t.infos)?;
            }
        }
        if style.verbose {
            writeln!(w, "\n{}", style.bold("requirements:"))?;
            for c in &self.checks {
                writeln!(
                    w,
                    "  {} CONFIG_{}{} ({})",
                    if c.ok { "ok  " } else { "MISS" },
                    c.option,
                    c.requirement,
                    c.found
                )?;
            }
        }
        Ok(())
    }
}

fn load(args: &Args) -> Result<KernelConfig> {
    kconfig::load(&args.kernel, args.config.as_deref()).map_err(|e| match e {
        kconfig::KconfigError::Open { path, source } | kconfig::KconfigError::Read { path, source } => {
            Error::read(path, source)
        }
        other => Error::invalid_from(&args.kernel, other),
    })
}

pub fn run(args: Args, _ctx: &Ctx) -> Result<Outcome> {
    let config = load(&args)?;
    let profile = match args.profile {
        ProfileArg::Firecracker => Profile::Firecracker,
        ProfileArg::QemuMicrovm => Profile::QemuMicrovm,
    };
    let findings = config_findings(&config, profile);
    let (evidence, reason) = vm::available_evidence(Some(vm::kernel::RootBus::VirtioMmio), Some(&config));
    let report = CheckKernelReport {
        kernel: args.kernel.clone(),
        profile,
        release: config.release.clone(),
        discovery: config.discovery(),
        boot_test: BootTestInfo { strongest_evidence: evidence, reason },
        summary: Tally::of(&findings),
        findings,
        checks: kconfig::check(&config, profile),
        config: config.origin,
    };
    Ok(Outcome::CheckKernel(Box::new(report)))
}
