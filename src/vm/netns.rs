//! A sandbox network namespace as E2B's orchestrator sets one up for Firecracker, reduced to what
//! a boot test needs: a fresh namespace holding only `tap0` (169.254.0.22/30, MAC
//! 02:fc:00:00:00:06, up) and `lo`, so the guest (169.254.0.21 from the kernel's `ip=`) is reached
//! from inside the namespace at `http://169.254.0.21:49983/health` — the orchestrator's probe
//! without its veth pair, NAT rules or host routes (e2b-dev/infra `sandbox/network/slot.go`,
//! `network.go`). Nothing outside the namespace is touched, so it cannot collide with a running
//! orchestrator's `ns-N` / `veth-N` / iptables rules.
//!
//! Cleanup: the namespace (and the tap inside it) is deleted when [`SandboxNet`] is dropped. A
//! process killed before that leaves `tmpl-<pid>`; [`create`] first deletes every `tmpl-<pid>`
//! namespace whose process no longer exists, so an interrupted run is cleaned up by the next one.
//! The VMM runs inside with `ip netns exec NAME` ([`SandboxNet::exec_prefix`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::net::{self, HealthTarget};
use crate::error::{Error, Result};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
const PREFIX: &str = "tmpl-";

/// A namespace created by tmpl; deleted on drop.
#[derive(Debug)]
pub struct SandboxNet {
    pub name: String,
    ip: PathBuf,
}

fn ip_cmd(ip: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(ip).args(args).output().map_err(Error::environment)?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::environment_msg(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
}

/// The namespace name for this process.
pub fn own_name() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// `tmpl-<pid>` namespaces whose process is gone (left by a killed run).
pub fn stale(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

/// Create the namespace with its tap device, after removing stale ones. Needs root (CAP_NET_ADMIN
/// and CAP_SYS_ADMIN) and iproute2.
pub fn create() -> Result<SandboxNet> {
    let ip = crate::tools::find("ip", "iproute2")?;
    for old in stale(Path::new(NETNS_DIR)) {
        let _ = ip_cmd(&ip, &["netns", "del", &old]);
    }
    let name = own_name();
    if Path::new(NETNS_DIR).join(&name).exists() {
        let _ = ip_cmd(&ip, &["netns", "del", &name]);
    }
    ip_cmd(&ip, &["netns", "add", &name])?;
    // From here on, drop deletes the namespace whatever fails next.
    let ns = SandboxNet { name, ip };
    let tap_addr = format!("{}/{}", net::TAP_IP, net::TAP_PREFIX);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["tuntap", "add", "dev", net::TAP_NAME, "mode", "tap"],
        vec!["link", "set", net::TAP_NAME, "address", net::TAP_MAC],
        vec!["addr", "add", &tap_addr, "dev", net::TAP_NAME],
        vec!["link", "set", net::TAP_NAME, "up"],
    ] {
        let mut full = vec!["-n", ns.name.as_str()];
        full.extend(args);
        ip_cmd(&ns.ip, &full)?;
    }
    Ok(ns)
}

impl SandboxNet {
    /// The namespace's file (what `setns` opens).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run a program inside the namespace: `ip netns exec NAME PROGRAM ...`.
    pub fn exec_prefix(&self) -> Vec<std::ffi::OsString> {
        vec![self.ip.clone().into_os_string(), "netns".into(), "exec".into(), self.name.clone().into()]
    }

    /// envd's health endpoint as the orchestrator reaches it: the guest's address, from inside.
    pub fn health_target(&self) -> HealthTarget {
        HealthTarget { addr: (net::GUEST_IP, net::ENVD_PORT).into(), netns: Some(self.path()) }
    }

    /// Run `ip -n NAME ARGS` (tests and stand-ins add addresses with it).
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip_cmd(&self.ip, &full)
    }
}

impl Drop for SandboxNet {
    fn drop(&mut self) {
        // Processes still inside keep the namespace alive but not its name; the tap goes with it.
        let _ = ip_cmd(&self.ip, &["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_processes_namespaces_are_stale() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        for n in [format!("tmpl-{me}"), "tmpl-1".into(), "tmpl-4294967295".into(), "ns-1".into(), "tmpl-x".into()] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        // PID 1 exists; no PID is above pid_max's ceiling (2^22); other names are not tmpl's.
        assert_eq!(stale(d.path()), ["tmpl-4294967295"]);
    }
}
