//! Guest kernels and the node's host directories as findings: what an E2B guest needs from its
//! kernel's config ([`crate::kconfig::check`]), and whether a build's `kernel_version` and
//! `firecracker_version` exist on this node.
//!
//! Host layout (e2b-dev/infra `packages/orchestrator/pkg/sandbox/fc/config.go`, `pkg/cfg/model.go`,
//! read at 54693ff35; docs/guest-kernel.md): the kernel is
//! `<HOST_KERNELS_DIR>/<kernel_version>/<arch>/vmlinux.bin` when that exists, else
//! `<HOST_KERNELS_DIR>/<kernel_version>/vmlinux.bin`; the Firecracker binary is
//! `<FIRECRACKER_VERSIONS_DIR>/<fc_version>/<arch>/firecracker`, else
//! `<FIRECRACKER_VERSIONS_DIR>/<fc_version>/firecracker`. `<arch>` is `amd64` or `arm64`
//! (`TARGET_ARCH` normalised, else Go's GOARCH). Defaults: `/fc-kernels`, `/fc-versions`. The
//! orchestrator stats both before it starts a sandbox ("error stating kernel file").

use std::path::{Path, PathBuf};

use crate::kconfig::{self, KernelConfig, Profile};
use crate::report::{Check, Finding, Severity};

pub const KERNEL_BOOT: Check = Check {
    id: "kernel.boot-requirement",
    severity: Severity::Error,
    title: "the guest kernel lacks something an E2B guest needs to boot or to answer on envd's port",
    hint: "rebuild the kernel with the option built in (=y); see tmpl check-kernel and docs/guest-kernel.md",
};
pub const KERNEL_DISCOVERY: Check = Check {
    id: "kernel.virtio-discovery",
    severity: Severity::Error,
    title: "the guest kernel cannot find its virtio-mmio devices",
    hint: "build the kernel with CONFIG_VIRTIO_MMIO=y and CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y (devices on the \
           command line, as Firecracker and QEMU microvm announce them), or CONFIG_ACPI=y for Firecracker >= 1.8",
};
pub const KERNEL_DEGRADED: Check = Check {
    id: "kernel.degraded",
    severity: Severity::Warning,
    title: "the guest boots, but something operators rely on is lost",
    hint: "rebuild the kernel with the option built in (=y)",
};
pub const KERNEL_FEATURE: Check = Check {
    id: "kernel.feature-missing",
    severity: Severity::Info,
    title: "an E2B sandbox feature is unavailable with this kernel",
    hint: "rebuild the kernel with the option built in (=y) if sandboxes need the feature",
};
pub const KERNEL_NOT_ON_NODE: Check = Check {
    id: "node.kernel-missing",
    severity: Severity::Error,
    title: "the build's kernel_version is not in HOST_KERNELS_DIR on this node",
    hint: "the orchestrator cannot start sandboxes of this build here (\"error stating kernel file\"): install the \
           kernel as <HOST_KERNELS_DIR>/<kernel_version>/<arch>/vmlinux.bin, or rebuild the template with a \
           kernel the node has",
};
pub const FIRECRACKER_NOT_ON_NODE: Check = Check {
    id: "node.firecracker-missing",
    severity: Severity::Error,
    title: "the build's firecracker_version is not in FIRECRACKER_VERSIONS_DIR on this node",
    hint: "the orchestrator cannot start sandboxes of this build here (\"error stating firecracker binary\"): \
           install it as <FIRECRACKER_VERSIONS_DIR>/<firecracker_version>/<arch>/firecracker, or rebuild the \
           template with a version the node has",
};

pub const CHECKS: &[&Check] = &[
    &KERNEL_BOOT,
    &KERNEL_DISCOVERY,
    &KERNEL_DEGRADED,
    &KERNEL_FEATURE,
    &KERNEL_NOT_ON_NODE,
    &FIRECRACKER_NOT_ON_NODE,
];

/// One finding per requirement `config` fails for `profile`, worst first.
pub fn config_findings(config: &KernelConfig, profile: Profile) -> Vec<Finding> {
    let mut out: Vec<Finding> = kconfig::check(config, profile)
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| {
            let check = match (c.id, c.severity) {
                ("virtio-discovery", _) => &KERNEL_DISCOVERY,
                (_, kconfig::Severity::Fatal) => &KERNEL_BOOT,
                (_, kconfig::Severity::Warning) => &KERNEL_DEGRADED,
                (_, kconfig::Severity::Info) => &KERNEL_FEATURE,
            };
            let mut message = format!("{} ({})", c.message, c.id);
            if let Some(s) = c.symptom {
                message.push_str(&format!("; on the console: \"{}\"", s.line));
            }
            Finding::new(check, format!("CONFIG_{}", c.option), message).hint(c.hint)
        })
        .collect();
    out.sort_by_key(|f| f.severity);
    out
}

/// The orchestrator's `<arch>` directory name for this machine (`amd64`, `arm64`).
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Where the orchestrator looks for a kernel, in its order.
pub fn kernel_paths(dir: &Path, version: &str, arch: &str) -> [PathBuf; 2] {
    [dir.join(version).join(arch).join("vmlinux.bin"), dir.join(version).join("vmlinux.bin")]
}

/// Where the orchestrator looks for a Firecracker binary, in its order.
pub fn firecracker_paths(dir: &Path, version: &str, arch: &str) -> [PathBuf; 2] {
    [dir.join(version).join(arch).join("firecracker"), dir.join(version).join("firecracker")]
}

/// A version string the orchestrator joins into a path: one plain directory name.
fn plain_name(v: &str) -> bool {
    !v.is_empty() && v != "." && v != ".." && !v.contains('/') && !v.contains('\0')
}

/// Node directories to check builds against (`HOST_KERNELS_DIR`, `FIRECRACKER_VERSIONS_DIR`).
#[derive(Debug, Clone, Default)]
pub struct NodeDirs {
    pub kernels: Option<PathBuf>,
    pub firecrackers: Option<PathBuf>,
}

/// Findings for a build whose metadata names `kernel_version` / `firecracker_version`: each must
/// exist under its directory (when that directory is given) as the orchestrator resolves it.
pub fn node_findings(
    dirs: &NodeDirs,
    kernel_version: Option<&str>,
    firecracker_version: Option<&str>,
    arch: &str,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut one = |dir: &Option<PathBuf>,
                   version: Option<&str>,
                   what: &str,
                   check: &Check,
                   paths: &dyn Fn(&Path, &str) -> [PathBuf; 2]| {
        let (Some(dir), Some(v)) = (dir, version) else { return };
        if !plain_name(v) {
            out.push(Finding::new(
                check,
                "metadata.json".to_string(),
                format!(
                    "{what} {v:?} is not a directory name; the orchestrator cannot find it under {}",
                    dir.display()
                ),
            ));
            return;
        }
        let candidates = paths(dir, v);
        if candidates.iter().any(|p| p.is_file()) {
            return;
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        out.push(Finding::new(
            check,
            "metadata.json".to_string(),
            format!("{what} {v} is not on this node: neither {} exists", tried.join(" nor ")),
        ));
    };
    one(&dirs.kernels, kernel_version, "kernel_version", &KERNEL_NOT_ON_NODE, &|d, v| kernel_paths(d, v, arch));
    one(&dirs.firecrackers, firecracker_version, "firecracker_version", &FIRECRACKER_NOT_ON_NODE, &|d, v| {
        firecracker_paths(d, v, arch)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconfig::ConfigOrigin;

    fn config(text: &str) -> KernelConfig {
        KernelConfig::parse(text, ConfigOrigin::File { path: "/c".into(), beside_kernel: false })
    }

    #[test]
    fn missing_command_line_devices_is_the_discovery_finding_with_a_hint() {
        let c = config(
            "CONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_VIRTIO_MMIO=y\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n",
        );
        let f = config_findings(&c, Profile::QemuMicrovm);
        let d = f.iter().find(|f| f.id == "kernel.virtio-discovery").expect("discovery finding");
        assert_eq!(d.file.as_deref(), Some("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"));
        assert!(d.hint.as_deref().unwrap().contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"), "{d:?}");
        assert!(f.iter().any(|f| f.id == "kernel.boot-requirement" && f.file.as_deref() == Some("CONFIG_IP_PNP")));
        assert_eq!(f[0].severity, Severity::Error, "worst first");
        // Firecracker >= 1.8 also announces devices in ACPI: ACPI=y satisfies it there.
        let acpi = config("CONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_ACPI=y\n");
        assert!(!config_findings(&acpi, Profile::Firecracker).iter().any(|f| f.id == "kernel.virtio-discovery"));
        assert!(config_findings(&acpi, Profile::QemuMicrovm).iter().any(|f| f.id == "kernel.virtio-discovery"));
    }

    #[test]
    fn node_dirs_follow_the_orchestrators_layout() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("fc-kernels");
        let f = d.path().join("fc-versions");
        std::fs::create_dir_all(k.join("vmlinux-6.1.158/amd64")).unwrap();
        std::fs::write(k.join("vmlinux-6.1.158/amd64/vmlinux.bin"), b"k").unwrap();
        std::fs::create_dir_all(k.join("vmlinux-6.1.102")).unwrap();
        std::fs::write(k.join("vmlinux-6.1.102/vmlinux.bin"), b"k").unwrap();
        std::fs::create_dir_all(f.join("v1.12.1_210cbac")).unwrap();
        std::fs::write(f.join("v1.12.1_210cbac/firecracker"), b"f").unwrap();
        let dirs = NodeDirs { kernels: Some(k.clone()), firecrackers: Some(f.clone()) };
        for kv in ["vmlinux-6.1.158", "vmlinux-6.1.102"] {
            assert!(node_findings(&dirs, Some(kv), Some("v1.12.1_210cbac"), "amd64").is_empty(), "{kv}");
        }
        let found = node_findings(&dirs, Some("vmlinux-6.1.999"), Some("v1.14.1_431f1fc"), "amd64");
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["node.kernel-missing", "node.firecracker-missing"]);
        assert!(found[0].message.contains("vmlinux-6.1.999/amd64/vmlinux.bin"), "{}", found[0].message);
        assert!(node_findings(&dirs, Some("../../etc"), None, "amd64")[0].message.contains("not a directory name"));
        // A directory not given is not checked; a version not named is not checked.
        assert!(node_findings(&NodeDirs::default(), Some("x"), Some("y"), "amd64").is_empty());
        assert!(node_findings(&dirs, None, None, "amd64").is_empty());
    }
}
