//! The Firecracker backend's network plumbing, for real as root: a fresh namespace holding tap0
//! as E2B's orchestrator sets it up (169.254.0.22/30, MAC 02:fc:00:00:00:06), `GET /health` to the
//! guest's 169.254.0.21:49983 from inside it, and everything removed afterwards, including what a
//! killed run left. KVM is not available on these machines, so the guest is a stand-in: the static
//! test envd serving /health inside the namespace on the guest's address.

mod common;
mod guest_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tmpl::vm::{net, netns};

#[test]
fn namespace_tap_and_health_probe_from_inside_and_nothing_left() {
    if !common::require_root() || !common::require("ip") || !common::require("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let envd = guest_support::build_test_envd(dir.path());
    // What a run killed before its cleanup leaves: a tmpl-<pid> namespace of a dead process.
    let stale = "tmpl-4294967295";
    let _ = Command::new("ip").args(["netns", "del", stale]).status();
    assert!(Command::new("ip").args(["netns", "add", stale]).status().unwrap().success());

    let ns = netns::create().expect("namespace");
    let path = ns.path();
    assert!(path.exists() && !Path::new(netns::NETNS_DIR).join(stale).exists(), "the stale namespace was reclaimed");
    let show = Command::new("ip").args(["-n", &ns.name, "addr", "show", "dev", "tap0"]).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("inet 169.254.0.22/30") && show.contains("link/ether 02:fc:00:00:00:06"), "{show}");
    // The host's namespace has no tap0: nothing was created outside.
    let host = Command::new("ip").args(["link", "show", "dev", "tap0"]).stderr(Stdio::null()).output().unwrap();
    assert!(!host.status.success(), "tap0 appeared in the host namespace");

    // The stand-in guest: envd on the guest's address inside the namespace.
    ns.ip(&["addr", "add", "169.254.0.21/32", "dev", "lo"]).unwrap();
    let mut cmd = Command::new(&ns.exec_prefix()[0]);
    cmd.args(&ns.exec_prefix()[1..]).arg(&envd).arg("-isnotfc").stdout(Stdio::null()).stderr(Stdio::null());
    let child = guest_support::KillOnDrop(cmd.spawn().unwrap());
    let target = ns.health_target();
    assert_eq!(target.url(), format!("http://{}:{}/health", net::GUEST_IP, net::ENVD_PORT));
    let start = Instant::now();
    let status = loop {
        match net::get_health(&target, Duration::from_millis(500)) {
            Ok(code) => break code,
            Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("no answer inside the namespace: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(status, 204);
    // The probe entered the namespace on its own thread: this thread did not move.
    let outside = net::get_health(&net::HealthTarget { addr: target.addr, netns: None }, Duration::from_millis(300));
    assert!(outside.is_err(), "the guest address answered outside the namespace: {outside:?}");

    drop(child);
    drop(ns);
    assert!(!path.exists(), "the namespace is still there");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("tmpl-"), "{}", String::from_utf8_lossy(&list.stdout));
}
