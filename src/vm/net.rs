//! The guest's network as E2B's orchestrator sets it up, and the `GET /health` probe that proves
//! envd answers through it.
//!
//! Facts (e2b-dev/infra, `packages/orchestrator/pkg/sandbox/network/slot.go`, `fc/process.go`,
//! `fc/kernel_args.go`; see docs/guest-kernel.md): the guest is 169.254.0.21/30 behind a tap
//! device holding 169.254.0.22/30 inside the sandbox's network namespace; the kernel configures
//! `eth0` itself from `ip=` (`CONFIG_IP_PNP`), with no DHCP and no userspace helper; envd listens
//! on 49983 and the orchestrator accepts only 204 from it.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::http::read_response;

/// The guest's address (`NamespaceIP()`).
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 21);
/// The tap device's address inside the namespace, the guest's gateway (`TapIPString()`).
pub const TAP_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
/// `TapMaskString()`: a /30.
pub const TAP_MASK: &str = "255.255.255.252";
pub const TAP_PREFIX: u8 = 30;
/// envd's port (`consts.DefaultEnvdServerPort`).
pub const ENVD_PORT: u16 = 49983;
/// The guest's MAC (`fc/client.go`) and the tap's host-side MAC (`slot.go`).
pub const GUEST_MAC: &str = "02:fc:00:00:00:05";
pub const TAP_MAC: &str = "02:fc:00:00:00:06";
/// The tap's name inside the namespace (`TapName()`), and the guest's interface (`VpeerName()`).
pub const TAP_NAME: &str = "tap0";
pub const GUEST_IFACE: &str = "eth0";

/// The `ip=` value exactly as the orchestrator renders it:
/// `<client>::<gw>:<mask>:instance:<dev>:off:<tap name>` (the tap's name lands in the kernel's
/// DNS-server-0 field; the kernel parses it as an address and it is harmless).
pub fn ip_arg() -> String {
    format!("{GUEST_IP}::{TAP_IP}:{TAP_MASK}:instance:{GUEST_IFACE}:off:{TAP_NAME}")
}

/// The orchestrator's kernel arguments (`kernel_args.go`, rendered with keys sorted), in its
/// kernel-log mode (`console=ttyS0`, no `quiet`), with `loglevel=7` instead of 5 so the kernel's
/// `Run /sbin/init as init process` line (KERN_INFO) reaches the console as evidence.
/// Firecracker then appends `root=/dev/vda rw` and its `virtio_mmio.device=` list; QEMU microvm
/// (`acpi=off`) appends the device list itself.
pub fn orchestrator_args() -> Vec<String> {
    let ip = ip_arg();
    let args: [(&str, &str); 13] = [
        ("console", "ttyS0"),
        ("i8042.noaux", ""),
        ("i8042.nokbd", ""),
        ("init", "/sbin/init"),
        ("ip", &ip),
        ("ipv6.autoconf", "1"),
        ("ipv6.disable", "0"),
        ("loglevel", "7"),
        ("panic", "1"),
        ("pci", "off"),
        ("random.trust_cpu", "on"),
        ("reboot", "k"),
        ("rootflags", "discard"),
    ];
    args.iter().map(|(k, v)| if v.is_empty() { k.to_string() } else { format!("{k}={v}") }).collect()
}

/// Where and how to ask envd for its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTarget {
    /// The address that reaches the guest's 49983 (a QEMU port forward, or the guest itself
    /// inside the sandbox's namespace).
    pub addr: SocketAddr,
    /// Probe from inside this network namespace (`/var/run/netns/NAME`); None: this process's.
    pub netns: Option<std::path::PathBuf>,
}

impl HealthTarget {
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
}

/// One `GET /health`: the response's status. Errors while the guest is not listening (QEMU's user
/// networking accepts the connection and then closes it).
pub fn get_health(target: &HealthTarget, timeout: Duration) -> io::Result<u16> {
    match &target.netns {
        None => get_health_here(target.addr, timeout),
        Some(ns) => {
            // A network namespace is per thread: enter it on a short-lived thread so the caller
            // stays where it is.
            let ns = ns.clone();
            let addr = target.addr;
            std::thread::spawn(move || -> io::Result<u16> {
                let f = std::fs::File::open(&ns)?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&f),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                get_health_here(addr, timeout)
            })
            .join()
            .map_err(|_| io::Error::other("the probe thread panicked"))?
        }
    }
}

fn get_health_here(addr: SocketAddr, timeout: Duration) -> io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write: the request in one segment.
    let req =
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tmpl-boot-test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    Ok(read_response(&mut s)?.status)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (QEMU's port forward binds it).
pub fn free_local_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn the_ip_argument_is_the_orchestrators() {
        // Pinned in e2b-dev/infra fc/kernel_args_test.go.
        assert_eq!(ip_arg(), "169.254.0.21::169.254.0.22:255.255.255.252:instance:eth0:off:tap0");
        let a = orchestrator_args().join(" ");
        for want in ["init=/sbin/init", "panic=1", "reboot=k", "pci=off", "rootflags=discard", "ipv6.disable=0"] {
            assert!(a.split(' ').any(|w| w == want), "{want} missing from {a}");
        }
        assert!(!a.contains("--") && !a.contains("quiet"), "{a}");
    }

    #[test]
    fn health_probe_reads_the_status_and_fails_on_a_closed_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            // First connection: closed at once (what slirp does while nothing listens in the guest).
            drop(l.accept().unwrap());
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(req.starts_with("GET /health HTTP/1.1\r\n") && req.ends_with("\r\n\r\n"), "{req:?}");
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        });
        let target = HealthTarget { addr, netns: None };
        assert!(get_health(&target, Duration::from_secs(2)).is_err());
        assert_eq!(get_health(&target, Duration::from_secs(2)).unwrap(), 204);
        t.join().unwrap();
        assert_eq!(target.url(), format!("http://{addr}/health"));
    }
}
