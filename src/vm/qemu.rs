//! The QEMU backend (`qemu-system-x86_64`): the one place QEMU is started.
//!
//! KVM is used when `/dev/kvm` opens read-write and the guest actually runs: a KVM boot must show
//! console output (earlycon) within a short probe time, and QEMU must not die on start, otherwise
//! the boot is retried under TCG and the reason reported. Every QEMU process is killed and reaped
//! when its attempt ends (a guard's `Drop`), and its `-snapshot` overlay lives in the work
//! directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use super::console::{self, Console, End, WatchConfig, Watched};
use super::kernel::RootBus;
use super::net;
use crate::error::{Error, Result};
use crate::tools::ToolError;

/// The QEMU binary name and its Debian package.
pub const QEMU: &str = "qemu-system-x86_64";
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Hardware acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Can this process use KVM at all? (`/dev/kvm` opened read-write.)
pub fn kvm_available() -> std::result::Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no /dev/kvm".into()),
        Err(e) => Err(format!("/dev/kvm cannot be opened: {e}")),
    }
}

/// One QEMU invocation.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub kernel: PathBuf,
    pub cmdline: String,
    pub image: PathBuf,
    pub bus: RootBus,
    pub accel: Accel,
    pub memory_mib: u32,
    pub console: PathBuf,
    /// microvm only: a virtio-net device on user networking laid out like E2B's slot (guest
    /// 169.254.0.21/30, gateway 169.254.0.22), with this host port on 127.0.0.1 forwarded to the
    /// guest's 49983.
    pub host_port: Option<u16>,
}

/// QEMU's option parser treats `,` as a separator; a literal comma is written twice.
fn escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The argument list (without the program name).
pub fn args(spec: &QemuSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(OsString::from(s));
    let machine = match spec.bus {
        RootBus::VirtioMmio => format!("microvm,accel={},acpi=off", spec.accel.name()),
        _ => format!("q35,accel={}", spec.accel.name()),
    };
    for s in ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-machine", &machine] {
        push(s);
    }
    push("-cpu");
    push(match spec.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    });
    push("-m");
    push(&spec.memory_mib.to_string());
    push("-smp");
    push("1");
    push("-serial");
    push(&format!("file:{}", spec.console.to_string_lossy()));
    push("-drive");
    push(&format!("file={},format=raw,if=none,id=root,snapshot=on", escape(&spec.image)));
    push("-device");
    push(match spec.bus {
        RootBus::Nvme => "nvme,drive=root,serial=tmplroot",
        RootBus::VirtioPci => "virtio-blk-pci,drive=root",
        RootBus::VirtioMmio => "virtio-blk-device,drive=root",
    });
    if let (RootBus::VirtioMmio, Some(port)) = (spec.bus, spec.host_port) {
        // slirp's network is the tap's /30; with a /30 its default DHCP start and DNS would both
        // be .23, so the DHCP start moves to the guest's address (the guest never asks: the kernel
        // configures eth0 from ip=). restrict=on keeps the guest off the host and the internet;
        // the port forward still works.
        push("-netdev");
        push(&format!(
            "user,id=eth0,net={net}/{prefix},host={tap},dhcpstart={guest},restrict=on,\
             hostfwd=tcp:127.0.0.1:{port}-{guest}:{envd}",
            net = std::net::Ipv4Addr::from(u32::from(net::GUEST_IP) & !((1u32 << (32 - net::TAP_PREFIX)) - 1)),
            prefix = net::TAP_PREFIX,
            tap = net::TAP_IP,
            guest = net::GUEST_IP,
            envd = net::ENVD_PORT,
        ));
        push("-device");
        push(&format!("virtio-net-device,netdev=eth0,mac={}", net::GUEST_MAC));
    }
    push("-kernel");
    a.push(spec.kernel.clone().into_os_string());
    a.push(OsString::from("-append"));
    a.push(OsString::from(&spec.cmdline));
    a
}

/// Kills and reaps the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Result of one QEMU run.
#[derive(Debug, Clone)]
pub struct Run {
    pub watched: Watched,
    /// QEMU's own stderr/stdout (errors about options, KVM, the kernel file).
    pub qemu_output: String,
}

/// Start QEMU and watch the console. `work` holds QEMU's snapshot overlay and its log.
pub fn run(qemu: &Path, spec: &QemuSpec, work: &Path, cfg: &WatchConfig) -> Result<(Run, Console)> {
    let log = work.join(format!("qemu-{}.log", spec.accel.name()));
    let out = std::fs::File::create(&log).map_err(|e| Error::write(&log, e))?;
    let err = out.try_clone().map_err(|e| Error::write(&log, e))?;
    let _ = std::fs::remove_file(&spec.console);
    let child = Command::new(qemu)
        .args(args(spec))
        .env("TMPDIR", work)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|source| ToolError::Start { tool: QEMU, program: Some(qemu.to_path_buf()), source })?;
    let mut guard = Guard(child);
    let mut console = Console::new(&spec.console);
    let watched = console::watch(&mut guard.0, &mut console, cfg).map_err(|e| Error::read(&spec.console, e))?;
    drop(guard);
    let qemu_output = std::fs::read_to_string(&log).unwrap_or_default().trim().to_string();
    Ok((Run { watched, qemu_output }, console))
}

/// Did a KVM attempt fail in a way that TCG may not (hang without output, death on start)?
pub fn kvm_failed(run: &Run) -> Option<String> {
    let w = &run.watched;
    match w.end {
        End::NoOutput => {
            Some(format!("KVM is present but the guest printed nothing within {:.0} s", w.elapsed.as_secs_f64()))
        }
        End::Stalled => Some(format!(
            "the KVM guest stopped printing before the kernel ran init ({:.0} s in)",
            w.elapsed.as_secs_f64()
        )),
        End::Exited if w.first_output_at.is_none() && w.exit.is_some_and(|s| !s.success()) => {
            let msg = run.qemu_output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            Some(format!("QEMU with KVM exited at start ({msg})"))
        }
        _ => None,
    }
}

/// Default time a KVM guest gets to print its first console line.
pub const KVM_PROBE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_protects_the_image_and_escapes_commas() {
        let spec = QemuSpec {
            kernel: "/k/vmlinuz".into(),
            cmdline: "console=ttyS0 root=/dev/nvme0n1".into(),
            image: "/store/a,b/rootfs.ext4".into(),
            bus: RootBus::Nvme,
            accel: Accel::Tcg,
            memory_mib: 256,
            console: "/w/console.log".into(),
            host_port: Some(4000),
        };
        let a: Vec<String> = args(&spec).into_iter().map(|s| s.into_string().unwrap()).collect();
        let joined = a.join(" ");
        assert!(joined.contains("file=/store/a,,b/rootfs.ext4,format=raw,if=none,id=root,snapshot=on"), "{joined}");
        assert!(joined.contains("-device nvme,drive=root") && joined.contains("-machine q35,accel=tcg"));
        assert!(joined.contains("-no-reboot") && joined.contains("-cpu max") && joined.contains("-m 256"));
        assert_eq!(a.last().unwrap(), "console=ttyS0 root=/dev/nvme0n1");
        let mmio = QemuSpec { bus: RootBus::VirtioMmio, accel: Accel::Kvm, ..spec.clone() };
        let joined = args(&mmio).into_iter().map(|s| s.into_string().unwrap()).collect::<Vec<_>>().join(" ");
        assert!(joined.contains("microvm,accel=kvm,acpi=off") && joined.contains("virtio-blk-device"));
        assert!(joined.contains("-cpu host"));
        assert!(
            joined.contains(
                "user,id=eth0,net=169.254.0.20/30,host=169.254.0.22,dhcpstart=169.254.0.21,restrict=on,\
                 hostfwd=tcp:127.0.0.1:4000-169.254.0.21:49983"
            ) && joined.contains("virtio-net-device,netdev=eth0,mac=02:fc:00:00:00:05"),
            "{joined}"
        );
        assert!(!args(&spec).iter().any(|a| a == "-netdev"), "no network on the q35/NVMe path");
    }
}
