//! `tmpl boot-test` to `health` evidence: builds repaired by `tmpl inject-envd --as MODE` with the
//! test envd (demo/envd.c, which answers `GET /health` with 204 like envd), booted
//! by tmpl on the E2B-like test guest kernel (`TMPL_TEST_GUEST_KERNEL`, built by
//! scripts/build-test-kernel.sh) under QEMU microvm with E2B's kernel command line and network.
//! And the failure E2B's seeds show: a wrapper passing the removed `-debug`, to the panic verdict.
//!
//! `--as service` is not booted here: proving it needs a real systemd rootfs (systemd, its unit
//! tree, libraries, dbus) that a fresh CI clone cannot assemble from what is installed; the unit
//! inject-envd writes is checked by tests/inject.rs instead.

mod common;
mod guest_support;

use std::path::{Path, PathBuf};

use serde_json::Value;

const BUILD: &str = "b0140000-0000-4000-8000-000000000001";

/// The guest kernel and the tools, or None to skip (a failure in CI).
fn setup() -> Option<PathBuf> {
    let k = guest_support::guest_kernel()?;
    for tool in ["qemu-system-x86_64", "mkfs.ext4", "gcc", "debugfs"] {
        if !common::require(tool) {
            return None;
        }
    }
    Some(k)
}

/// busybox applets the inject-envd wrapper uses.
const APPLETS: &[&str] = &["sh", "mount", "mkdir", "sleep", "cat", "echo", "ls"];

/// A rootfs tree; with `shell`, a static busybox and its applets (busybox-static, CI installs it).
fn tree(dir: &Path, shell: bool) -> Option<PathBuf> {
    let t = dir.join("tree");
    for d in ["sbin", "bin", "usr/bin", "dev", "proc", "sys", "tmp", "run", "etc"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::write(t.join("etc/hostname"), "boot-evidence\n").unwrap();
    std::fs::write(t.join("etc/resolv.conf"), "nameserver 8.8.8.8\n").unwrap();
    if shell {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(Path::new).find(|p| p.is_file());
        let Some(busybox) = busybox else {
            assert!(!guest_support::required(), "busybox-static is not installed (TMPL_TEST_REQUIRE_TOOLS=1)");
            eprintln!("SKIP: busybox-static is not installed");
            return None;
        };
        std::fs::copy(busybox, t.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", t.join("bin").join(a)).unwrap();
        }
    }
    Some(t)
}

fn storage_with(dir: &Path, tree: &Path) -> PathBuf {
    let storage = dir.join("storage");
    std::fs::create_dir_all(storage.join(BUILD)).unwrap();
    common::mkfs(tree, &storage.join(BUILD).join("rootfs.ext4"), 32);
    storage
}

fn inject(storage: &Path, envd: &Path, mode: &str) {
    let out = common::tmpl()
        .arg("--storage")
        .arg(storage)
        .args(["inject-envd", BUILD, "--as", mode, "--envd"])
        .arg(envd)
        .output()
        .unwrap();
    assert!(out.status.success(), "inject-envd --as {mode}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `tmpl --json boot-test` on the guest kernel; the report and the exit code.
fn boot(storage: &Path, kernel: &Path, extra: &[&str]) -> (Value, i32) {
    let _turn = common::vm_turn();
    let tmp = storage.parent().unwrap().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = common::tmpl()
        .env("TMPDIR", &tmp)
        .args(["--json", "--storage"])
        .arg(storage)
        .args(["boot-test", BUILD, "--accel", "tcg", "--settle", "1", "--kernel"])
        .arg(kernel)
        .args(if extra.contains(&"--timeout") { &[][..] } else { &["--timeout", "120"][..] })
        .args(extra)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "boot-test left temporary files: {left:?}");
    (v, out.status.code().unwrap_or(-1))
}

/// The report proves `health`: 204 from the test envd through the guest's network, with E2B's
/// `ip=` on the kernel command line, reached within the boot.
fn assert_health(v: &Value, code: i32) {
    assert_eq!((code, &v["verdict"]), (0, &Value::from("ok")), "{v:#}");
    assert_eq!(v["evidence"], "health", "{v:#}");
    assert_eq!(v["required"], "health", "the default is the strongest available: {v:#}");
    assert_eq!(v["strongest_available"], "health");
    assert_eq!(v["health"]["status"], 204);
    assert_eq!(v["health"]["guest"], "169.254.0.21:49983");
    let ms = v["health"]["ms"].as_u64().unwrap();
    assert!(ms > 0 && ms < 120_000, "{ms}");
    let cmdline = v["cmdline"].as_str().unwrap();
    for arg in [
        "ip=169.254.0.21::169.254.0.22:255.255.255.252:instance:eth0:off:tap0",
        "init=/sbin/init",
        "panic=1",
        "reboot=k",
        "pci=off",
        "rootflags=discard",
        "root=/dev/vda",
    ] {
        assert!(cmdline.split(' ').any(|a| a == arg), "{arg} not in {cmdline}");
    }
    assert_eq!(v["root_device"], "/dev/vda");
    assert_eq!(v["root_bus"], "virtio-mmio");
}

#[test]
fn inject_envd_as_init_boots_to_health() {
    let Some(kernel) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let envd = guest_support::build_test_envd(dir.path());
    // No shell in the image: the case where `--as auto` picks init too.
    let Some(t) = tree(dir.path(), false) else { return };
    let storage = storage_with(dir.path(), &t);
    inject(&storage, &envd, "init");
    let before = common::hash_tree(&storage);
    let (v, code) = boot(&storage, &kernel, &[]);
    assert_health(&v, code);
    // envd as PID 1 prints no marker: only health (or alive) can prove this build.
    assert!(v["marker"].is_null(), "{v:#}");
    assert!(v["init"]["text"].as_str().unwrap().contains("Run /sbin/init as init process"));
    assert_eq!(common::hash_tree(&storage), before, "boot-test changed the build");
}

#[test]
fn inject_envd_as_wrapper_boots_to_health() {
    let Some(kernel) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let envd = guest_support::build_test_envd(dir.path());
    let Some(t) = tree(dir.path(), true) else { return };
    let storage = storage_with(dir.path(), &t);
    inject(&storage, &envd, "wrapper");
    let (v, code) = boot(&storage, &kernel, &[]);
    assert_health(&v, code);
    // The wrapper's own line is on the console too.
    assert!(v["marker"]["text"].as_str().unwrap().starts_with("tmpl-init: starting envd"), "{v:#}");
}

#[test]
fn a_wrapper_passing_the_removed_debug_flag_fails_with_the_panic_verdict() {
    let Some(kernel) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let envd = guest_support::build_test_envd(dir.path());
    let Some(t) = tree(dir.path(), true) else { return };
    std::fs::copy(&envd, t.join("usr/bin/envd")).unwrap();
    // The seeds' hand-written wrapper: PID 1 execs envd with a flag it no longer accepts.
    std::fs::write(t.join("sbin/init"), "#!/bin/sh\nmount -t proc proc /proc\nexec /usr/bin/envd -debug\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let storage = storage_with(dir.path(), &t);
    let (v, code) = boot(&storage, &kernel, &[]);
    assert_eq!((code, &v["verdict"]), (1, &Value::from("panic")), "{v:#}");
    assert!(v["evidence"].is_null(), "a failed boot has no evidence: {v:#}");
    assert!(v["failure"]["text"].as_str().unwrap().contains("Attempted to kill init! exitcode=0x00000200"));
    let rules: Vec<&str> = v["decoded"].as_array().unwrap().iter().filter_map(|e| e["rule"].as_str()).collect();
    assert!(rules.contains(&"envd.flag-undefined") && rules.contains(&"panic.init-exit-2"), "{rules:?}");
    assert!(v["health"]["status"].is_null(), "{v:#}");
}

#[test]
fn require_alive_passes_on_a_running_init_and_names_the_level() {
    let Some(kernel) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    // An init that runs forever and serves nothing: alive, but never health.
    let init = common::static_binary(dir.path(), "init", "#include <unistd.h>\nint main(void){for(;;)pause();}\n");
    let Some(t) = tree(dir.path(), false) else { return };
    std::fs::copy(&init, t.join("sbin/init")).unwrap();
    let storage = storage_with(dir.path(), &t);
    let (v, code) = boot(&storage, &kernel, &["--require", "alive", "--alive-after", "2"]);
    assert_eq!((code, &v["verdict"], &v["evidence"]), (0, &Value::from("ok"), &Value::from("alive")), "{v:#}");
    assert_eq!(v["required"], "alive");
    assert_eq!(v["strongest_available"], "health");
    // The same build with the default (health) fails: envd never answers.
    let (v, code) = boot(&storage, &kernel, &["--timeout", "15"]);
    assert_eq!((code, &v["verdict"]), (1, &Value::from("timeout")), "{v:#}");
    let summary = v["summary"].as_str().unwrap();
    assert!(summary.contains("no health evidence") && summary.contains("strongest evidence: alive"), "{summary}");
    assert!(summary.contains("GET http://127.0.0.1:"), "{summary}");
}
