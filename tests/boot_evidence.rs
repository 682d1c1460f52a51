//! `tmpl boot-test` to `health` evidence: builds repaired by `tmpl inject-envd --as MODE` with the
//! test envd (demo/envd.c, which answers `GET /health` with 204 like envd), booted
//! by tmpl on the E2B-like test guest kernel (`TMPL_TEST_GUEST_KERNEL`, built by
//! scripts/build-test-kernel.sh) under QEMU microvm with E2B's kernel command line and network.
//! And the failure E2B's seeds show: a wrapper passing the removed `-debug`, to the panic verdict.
//!
//! `--as service` boots a real Debian 12 systemd tree (scripts/build-systemd-rootfs.sh, read from
//! `TMPL_TEST_SYSTEMD_ROOTFS`) to `health`, with systemd starting the envd.service inject-envd
//! wrote and reaching multi-user.target with no failed unit.

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
    storage_sized(dir, tree, 32)
}

fn storage_sized(dir: &Path, tree: &Path, size_mib: u64) -> PathBuf {
    let storage = dir.join("storage");
    std::fs::create_dir_all(storage.join(BUILD)).unwrap();
    common::mkfs(tree, &storage.join(BUILD).join("rootfs.ext4"), size_mib);
    storage
}

/// The Debian 12 systemd tree (scripts/build-systemd-rootfs.sh) named by
/// `TMPL_TEST_SYSTEMD_ROOTFS`, or None to skip (a failure in CI).
fn systemd_rootfs() -> Option<PathBuf> {
    let how = "export TMPL_TEST_SYSTEMD_ROOTFS=$(scripts/build-systemd-rootfs.sh target)";
    let Some(tree) = std::env::var_os("TMPL_TEST_SYSTEMD_ROOTFS").filter(|v| !v.is_empty()).map(PathBuf::from) else {
        common::skip(&format!("TMPL_TEST_SYSTEMD_ROOTFS is not set; {how}"));
        return None;
    };
    if !tree.join("lib/systemd/systemd").is_file() {
        common::skip(&format!("TMPL_TEST_SYSTEMD_ROOTFS={} has no lib/systemd/systemd; {how}", tree.display()));
        return None;
    }
    // Built by the script into DEST/systemd-rootfs-<key>/tree: today's recipe must name the same
    // directory, or the test boots a stale tree.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-systemd-rootfs.sh");
    let dest = tree.parent().and_then(Path::parent).unwrap();
    let o = std::process::Command::new(&script).arg("--print-path").arg(dest).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        Path::new(String::from_utf8_lossy(&o.stdout).trim()),
        tree,
        "TMPL_TEST_SYSTEMD_ROOTFS is not the tree scripts/build-systemd-rootfs.sh builds today"
    );
    if common::require("shellcheck") {
        let o = std::process::Command::new("shellcheck").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    Some(tree)
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
        .args(["boot-test", BUILD, "--accel", "tcg", "--kernel"])
        .arg(kernel)
        .args(if extra.contains(&"--timeout") { &[][..] } else { &["--timeout", "120"][..] })
        .args(if extra.contains(&"--settle") { &[][..] } else { &["--settle", "1"][..] })
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

#[test]
fn inject_envd_as_service_boots_debian_systemd_to_health() {
    let Some(kernel) = setup() else { return };
    let Some(rootfs) = systemd_rootfs() else { return };
    // The tree holds root-only files (/etc/shadow) and root-owned everything: mkfs.ext4 -d must
    // read them and keep their owners.
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let envd = guest_support::build_test_envd(dir.path());
    let storage = storage_sized(dir.path(), &rootfs, 384);
    // verify on the real systemd image: what is missing before, nothing about envd after.
    let envd_findings = || -> Vec<String> {
        let out = common::tmpl().args(["--json", "--storage"]).arg(&storage).args(["verify", BUILD]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        common::findings_of(&v)
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| id.starts_with("systemd.") || id.starts_with("envd."))
            .collect()
    };
    assert_eq!(envd_findings(), ["systemd.envd-service-missing", "envd.missing"]);

    // `--as auto` sees systemd as /sbin/init and picks the service.
    let out = common::tmpl()
        .args(["--json", "--storage"])
        .arg(&storage)
        .args(["inject-envd", BUILD, "--as", "auto", "--dry-run", "--envd"])
        .arg(&envd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plan"]["mode"], "service", "{plan:#}");
    inject(&storage, &envd, "service");
    assert_eq!(envd_findings(), Vec::<String>::new());

    // systemd under TCG: health took 7-12 s on a 2-core machine; the settle time lets it go on to
    // multi-user.target, and a failure of envd.service within it fails the boot.
    let console = dir.path().join("console.log");
    let console_arg = console.to_str().unwrap();
    let (v, code) = boot(&storage, &kernel, &["--timeout", "240", "--settle", "20", "--console", console_arg]);
    assert_health(&v, code);
    eprintln!("systemd: health after {} ms", v["health"]["ms"]);
    // The default expectation matched systemd's own (coloured) status line.
    assert_eq!(v["marker"]["text"], "[  OK  ] Started envd.service - Env Daemon Service.", "{v:#}");

    let raw = std::fs::read_to_string(&console).unwrap();
    let lines: Vec<String> = raw.lines().map(|l| tmpl::vm::console::strip_escapes(l.trim_end_matches('\r'))).collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("systemd 252"), "not Debian 12's systemd:\n{raw}");
    // envd's stdout reaches the console (StandardOutput=journal+console).
    assert!(has("test-envd: listening on 0.0.0.0:49983"), "{raw}");
    assert!(has("Reached target multi-user.target"), "systemd did not reach multi-user.target:\n{raw}");
    // Nothing failed: the kernel has what systemd needs (e.g. kernel.pid_max = 4194304 needs
    // BASE_FULL), the unit is valid.
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains("FAILED") || l.contains("Failed to")).collect();
    assert!(failed.is_empty(), "failed units: {failed:#?}");
}
