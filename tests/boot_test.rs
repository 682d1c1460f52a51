//! `tmpl boot-test` on real images under real QEMU with a real kernel (a Debian cloud kernel
//! extracted by scripts/fetch-test-kernel.sh, found through TMPL_TEST_KERNEL or
//! target/test-kernel/). Each test builds its image with mkfs.ext4 -d from a tree holding a
//! static C init, boots it (TCG unless a test says otherwise: `-m 256 -smp 1`, a few seconds
//! each) and checks the verdict, the console evidence and that the build folder is unchanged.
//!
//! The last cases boot tmpl inject-envd's own wrapper around a static test envd (ok, with the
//! wrapper's marker on the console) and a hand-written wrapper passing the removed `-debug`
//! (the exitcode=0x00000200 panic, decoded to `wrapper.envd-flag`, then fixed by rewrite-wrapper).

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use tmpl::device::Device;
use tmpl::fixtures::layer::{self, Parent};
use tmpl::progress::NoProgress;
use tmpl::vocab::Artifact;
use tmpl::vocab::BuildId;

const BASE: &str = "b0070000-0000-4000-8000-000000000001";
const CHILD: &str = "c0070000-0000-4000-8000-000000000002";

/// Everything a boot test needs, or None to skip.
fn setup() -> Option<PathBuf> {
    let k = common::test_kernel()?;
    for tool in ["qemu-system-x86_64", "mkfs.ext4", "gcc"] {
        if !common::require(tool) {
            return None;
        }
    }
    Some(k)
}

const MARKER_INIT: &str = r#"#include <stdio.h>
#include <unistd.h>
#include <sys/reboot.h>
int main(void) {
  printf("tmpl-init: starting envd\n"); fflush(stdout);
  sync();
  reboot(RB_POWER_OFF);
  for (;;) pause();
}
"#;

const EXIT2_INIT: &str = r#"#include <stdio.h>
int main(void) {
  fprintf(stderr, "flag provided but not defined: -debug\nUsage of /usr/bin/envd:\n");
  return 2;
}
"#;

const QUIET_INIT: &str = r#"#include <stdio.h>
#include <unistd.h>
int main(void) {
  printf("service custom-ready\n"); fflush(stdout);
  for (;;) pause();
}
"#;

/// A tree with /sbin/init built from `init_c` (or the given symlink, or nothing).
enum Init<'a> {
    Binary(&'a str),
    Symlink(&'a str),
    None,
}

fn tree(dir: &Path, init: Init) -> PathBuf {
    let t = dir.join("tree");
    for d in ["sbin", "dev", "proc", "sys", "usr/bin", "etc"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::write(t.join("etc/hostname"), "boot-test\n").unwrap();
    match init {
        Init::Binary(src) => {
            let bin = common::static_binary(dir, "init", src);
            std::fs::copy(bin, t.join("sbin/init")).unwrap();
        }
        Init::Symlink(target) => std::os::unix::fs::symlink(target, t.join("sbin/init")).unwrap(),
        Init::None => {}
    }
    t
}

/// A storage with one headerless build holding the full image of `tree`.
fn full_build(dir: &Path, tree: &Path) -> PathBuf {
    let storage = dir.join("storage");
    let b = storage.join(BASE);
    std::fs::create_dir_all(&b).unwrap();
    common::mkfs(tree, &b.join("rootfs.ext4"), 32);
    storage
}

/// Run boot-test with TMPDIR set to an empty directory, and check that the boot left nothing in it
/// (work directory, assembled image, QEMU overlay, console).
fn boot(storage: &Path, build: &str, kernel: &Path, extra: &[&str]) -> (Value, i32) {
    let _turn = common::vm_turn();
    let tmp = storage.parent().unwrap().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = common::tmpl()
        .env("TMPDIR", &tmp)
        .arg("--json")
        .arg("--storage")
        .arg(storage)
        .args(["boot-test", build, "--settle", "1"])
        .args(if extra.contains(&"--timeout") { &[][..] } else { &["--timeout", "90"][..] })
        .arg("--kernel")
        .arg(kernel)
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

fn rules(v: &Value) -> Vec<String> {
    v["decoded"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap().to_string()).collect()
}

#[test]
fn healthy_init_boots_to_the_marker_and_the_build_is_unchanged() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path(), Init::Binary(MARKER_INIT));
    let storage = full_build(dir.path(), &t);
    let before = common::hash_tree(&storage);
    // --accel auto: KVM when it works, else a reported fallback to TCG.
    let (v, code) = boot(&storage, BASE, &k, &["--accel", "auto"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["marker"]["text"], "tmpl-init: starting envd");
    assert!(v["boot_ms"].as_u64().unwrap() > 0);
    assert_eq!(v["root_device"], "/dev/nvme0n1", "Debian's cloud kernel has NVMe built in");
    assert_eq!(v["root"]["source"]["kind"], "build-file");
    assert_eq!(v["kernel"]["format"]["kind"], "bz-image");
    let accel = v["accel"].as_str().unwrap();
    if accel == "tcg" && Path::new("/dev/kvm").exists() {
        assert!(v["accel_note"].as_str().is_some_and(|n| n.contains("TCG")), "a KVM fallback is reported: {v:#}");
    }
    assert!(v["decoded"].as_array().unwrap().is_empty(), "{v:#}");
    assert_eq!(common::hash_tree(&storage), before, "boot-test must not write to the build folder");
}

#[test]
fn init_exiting_2_is_the_decoded_exitcode_0x200_panic() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path(), Init::Binary(EXIT2_INIT));
    let storage = full_build(dir.path(), &t);
    let before = common::hash_tree(&storage);
    let (v, code) = boot(&storage, BASE, &k, &["--accel", "tcg"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "panic");
    let failure = v["failure"]["text"].as_str().unwrap();
    assert!(failure.contains("Attempted to kill init! exitcode=0x00000200"), "{failure}");
    assert!(v["summary"].as_str().unwrap().contains("status 2"));
    let decoded = rules(&v);
    assert!(decoded.contains(&"panic.init-exit-2".to_string()), "{decoded:?}");
    assert!(decoded.contains(&"envd.flag-undefined".to_string()), "{decoded:?}");
    let evidence: Vec<&str> =
        v["console_evidence"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert!(evidence.iter().any(|l| l.contains("flag provided but not defined: -debug")), "{evidence:?}");
    assert!(evidence.iter().any(|l| l.contains("exitcode=0x00000200")), "{evidence:?}");
    let panic = v["decoded"].as_array().unwrap().iter().find(|e| e["rule"] == "panic.init-exit-2").unwrap();
    assert!(panic["findings"].as_array().unwrap().iter().any(|f| f == "wrapper.envd-flag"));
    assert_eq!(common::hash_tree(&storage), before);
}

#[test]
fn missing_and_dangling_init_are_enoent() {
    let Some(k) = setup() else { return };
    for (name, init) in [("missing", Init::None), ("dangling", Init::Symlink("/usr/bin/envd"))] {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path(), init);
        let storage = full_build(dir.path(), &t);
        let (v, code) = boot(&storage, BASE, &k, &["--accel", "tcg"]);
        assert_eq!(code, 1, "{name}: {v:#}");
        assert_eq!(v["verdict"], "panic", "{name}");
        let failure = v["failure"]["text"].as_str().unwrap();
        assert!(failure.contains("Requested init /sbin/init failed (error -2)"), "{name}: {failure}");
        let e = v["decoded"].as_array().unwrap().iter().find(|e| e["rule"] == "init.exec-enoent").unwrap();
        let findings: Vec<&str> = e["findings"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert!(findings.contains(&"init.missing") && findings.contains(&"init.dangling"), "{findings:?}");
        assert!(e["meaning"].as_str().unwrap().contains("ENOENT"));
    }
}

#[test]
fn a_layered_build_is_assembled_and_boots() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    // Base: an image whose init exits 2; child: the same filesystem with a healthy init.
    let base_dir = dir.path().join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    let base_img = dir.path().join("base.ext4");
    common::mkfs(&tree(&base_dir, Init::Binary(EXIT2_INIT)), &base_img, 32);
    let child_dir = dir.path().join("child");
    std::fs::create_dir_all(&child_dir).unwrap();
    let child_img = dir.path().join("child.ext4");
    common::mkfs(&tree(&child_dir, Init::Binary(MARKER_INIT)), &child_img, 32);

    let (bid, cid) = (BuildId::parse(BASE).unwrap(), BuildId::parse(CHILD).unwrap());
    let (bdir, cdir) = (storage.join(BASE), storage.join(CHILD));
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::create_dir_all(&cdir).unwrap();
    let base_dev = Device::plain_file(&base_img).unwrap();
    let base = layer::write_layer(&base_dev, &bdir, bid, Artifact::Rootfs, None, 0, &NoProgress).unwrap();
    let parent_dev = Device::from_header(&base.header, |x| storage.join(x.to_string()).join("rootfs.ext4")).unwrap();
    let child_dev = Device::plain_file(&child_img).unwrap();
    let child = layer::write_layer(
        &child_dev,
        &cdir,
        cid,
        Artifact::Rootfs,
        Some(Parent { header: &base.header, device: &parent_dev }),
        1,
        &NoProgress,
    )
    .unwrap();
    assert!(child.own_bytes < std::fs::metadata(&child_img).unwrap().len() / 4, "the child owns only changed blocks");
    let before = common::hash_tree(&storage);

    let (v, code) = boot(&storage, CHILD, &k, &["--accel", "tcg"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["root"]["source"]["kind"], "assembled");
    assert_eq!(v["root"]["source"]["layers"], 2);
    // The base alone boots its own (broken) init: the layers really differ.
    let (v, _) = boot(&storage, BASE, &k, &["--accel", "tcg"]);
    assert_eq!(v["verdict"], "panic");
    assert!(rules(&v).contains(&"panic.init-exit-2".to_string()));
    assert_eq!(common::hash_tree(&storage), before, "neither build folder changed");
}

#[test]
fn expect_regex_settles_and_default_marker_times_out() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path(), Init::Binary(QUIET_INIT));
    let storage = full_build(dir.path(), &t);
    let console = dir.path().join("console.txt");
    let (v, code) = boot(
        &storage,
        BASE,
        &k,
        &["--accel", "tcg", "--expect", "custom-re[a-z]+", "--console", console.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["marker"]["text"], "service custom-ready");
    let saved = std::fs::read_to_string(&console).unwrap();
    assert!(saved.contains("Run /sbin/init as init process") && saved.contains("service custom-ready"));
    let (v, code) = boot(&storage, BASE, &k, &["--accel", "tcg", "--timeout", "12"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "timeout");
    assert!(v["elapsed_ms"].as_u64().unwrap() >= 12_000);
    assert!(!v["console_tail"].as_array().unwrap().is_empty());
    // The NVMe path cannot give health: marker is the default, and the summary says what was
    // reached instead.
    assert_eq!((&v["required"], &v["strongest_available"]), (&Value::from("marker"), &Value::from("marker")));
    assert!(v["available_reason"].as_str().unwrap().contains("nvme"), "{v:#}");
    assert!(v["summary"].as_str().unwrap().contains("strongest evidence: alive"), "{v:#}");
    // --require alive: PID 1 kept running with no panic is enough (the weakest level, named).
    let (v, code) = boot(&storage, BASE, &k, &["--accel", "tcg", "--require", "alive", "--alive-after", "2"]);
    assert_eq!((code, &v["evidence"]), (0, &Value::from("alive")), "{v:#}");
    assert!(v["summary"].as_str().unwrap().contains("weakest"), "{v:#}");
    // --require health cannot be met on this backend: an environment error before any boot.
    let out = common::tmpl()
        .arg("--storage")
        .arg(&storage)
        .args(["boot-test", BASE, "--require", "health", "--kernel"])
        .arg(&k)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("health evidence is not available here"));
}

#[test]
fn missing_kernel_names_what_was_tried_and_bad_regex_is_usage() {
    if !common::require("qemu-system-x86_64") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join(BASE);
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("rootfs.ext4"), vec![0u8; 8192]).unwrap();
    let out = common::tmpl()
        .arg("--storage")
        .arg(dir.path())
        .args(["boot-test", BASE, "--kernel", "/nonexistent/vmlinuz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/vmlinuz: does not exist") && err.contains("--kernel"), "{err}");
    let out = common::tmpl()
        .arg("--storage")
        .arg(dir.path())
        .args(["boot-test", BASE, "--expect", "(unclosed"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--expect"));
    let out = common::tmpl().arg("--storage").arg(dir.path()).args(["boot-test", "../.."]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

/// A stand-in `firecracker` for the backend's process handling: it serves the API socket given by
/// `--api-sock` like Firecracker (204 to each PUT, recording method, path and body to
/// `requests.log` beside the socket), and after `InstanceStart` prints a guest console on stdout
/// and exits, as Firecracker does when the guest reboots. The real Firecracker cannot run here
/// (it needs a working KVM); the API conversation itself is also tested against an in-process
/// fake server in `vm::firecracker`.
const FAKE_FIRECRACKER: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
  const char *sock = 0;
  for (int i = 1; i + 1 < argc; i++) if (!strcmp(argv[i], "--api-sock")) sock = argv[i + 1];
  if (!sock) { fprintf(stderr, "no --api-sock\n"); return 1; }
  char logp[4096]; snprintf(logp, sizeof logp, "%s.requests.log", sock);
  FILE *log = fopen(logp, "w");
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX }; strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4)) { perror("bind"); return 1; }
  for (;;) {
    int c = accept(s, 0, 0); if (c < 0) return 1;
    char buf[65536]; size_t n = 0; char *end = 0; buf[0] = 0;
    while (!(end = strstr(buf, "\r\n\r\n"))) { ssize_t k = read(c, buf + n, sizeof buf - 1 - n); if (k <= 0) break; n += k; buf[n] = 0; }
    if (!end) { close(c); continue; }
    char *cl = strstr(buf, "Content-Length: "); size_t len = cl ? strtoul(cl + 16, 0, 10) : 0;
    size_t have = n - (end + 4 - buf);
    while (have < len) { ssize_t k = read(c, buf + n, sizeof buf - 1 - n); if (k <= 0) break; n += k; have += k; buf[n] = 0; }
    char method[16], path[256]; sscanf(buf, "%15s %255s", method, path);
    fprintf(log, "%s %s %.*s\n", method, path, (int)len, end + 4); fflush(log);
    const char *ok = "HTTP/1.1 204 \r\nServer: Firecracker API\r\n\r\n";
    write(c, ok, strlen(ok)); close(c);
    if (!strcmp(path, "/actions")) break;
  }
  printf("[    0.500000] Run /sbin/init as init process\ntmpl-init: starting envd\n[    0.600000] reboot: Restarting system\n");
  fflush(stdout);
  return 0;
}
"#;

#[test]
fn firecracker_backend_configures_the_vm_and_reads_its_console() {
    if !common::require("gcc") || !common::require("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fc = common::static_binary(dir.path(), "firecracker", FAKE_FIRECRACKER);
    let t = tree(dir.path(), Init::None);
    let storage = full_build(dir.path(), &t);
    let kernel = dir.path().join("vmlinux.bin");
    std::fs::write(&kernel, b"\x7fELF\x02\x01").unwrap();
    let before = common::hash_tree(&storage);
    let (v, code) = boot(
        &storage,
        BASE,
        &kernel,
        &["--vmm", "firecracker", "--firecracker", fc.to_str().unwrap(), "--memory", "128"],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["vmm"], "firecracker");
    assert_eq!(v["marker"]["line"], 2);
    let calls: Vec<String> = v["api_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c["method"], c["path"], c["status"]))
        .collect();
    assert_eq!(
        calls,
        [
            r#""PUT" "/boot-source" 204"#,
            r#""PUT" "/drives/rootfs" 204"#,
            r#""PUT" "/machine-config" 204"#,
            r#""PUT" "/actions" 204"#
        ]
    );
    let drive: Value = serde_json::from_str(v["api_calls"][1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(drive["is_read_only"], false, "Firecracker boots a temporary copy");
    assert_ne!(drive["path_on_host"].as_str().unwrap(), storage.join(BASE).join("rootfs.ext4").to_str().unwrap());
    assert_eq!(v["root"]["source"]["kind"], "assembled");
    let machine: Value = serde_json::from_str(v["api_calls"][2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(machine["mem_size_mib"], 128);
    assert_eq!(common::hash_tree(&storage), before);
    // --read-only-root attaches the build's full image itself, read-only.
    let (v, code) = boot(
        &storage,
        BASE,
        &kernel,
        &["--vmm", "firecracker", "--firecracker", fc.to_str().unwrap(), "--read-only-root"],
    );
    assert_eq!(code, 0, "{v:#}");
    let drive: Value = serde_json::from_str(v["api_calls"][1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(drive["is_read_only"], true);
    assert_eq!(drive["path_on_host"].as_str().unwrap(), storage.join(BASE).join("rootfs.ext4").to_str().unwrap());
    assert_eq!(common::hash_tree(&storage), before);
}

/// An image with a real shell, mount, mkdir and sleep from the host, and `envd` a static fake
/// envd of the current era (prints "envd running" and stays up; exits 2 on unknown flags).
fn shell_tree(dir: &Path) -> PathBuf {
    let t = tree(dir, Init::None);
    for p in ["/bin/sh", "/bin/mount", "/bin/mkdir", "/bin/sleep"] {
        common::copy_host_program(&t, p);
    }
    let envd = common::static_binary(
        dir,
        "envd",
        &common::fake_envd_source(
            "0.5.1",
            &["port", "version", "commit", "isnotfc", "cgroup-root", "verbose", "no-cgroups", "resume-handover"],
        ),
    );
    std::fs::copy(envd, t.join("usr/bin/envd")).unwrap();
    t
}

#[test]
fn inject_envds_wrapper_boots_to_envd() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = shell_tree(dir.path());
    let storage = full_build(dir.path(), &t);
    let envd = t.join("usr/bin/envd");
    let inject = common::tmpl()
        .arg("--storage")
        .arg(&storage)
        .args(["inject-envd", BASE, "--as", "wrapper", "--envd-arg", "-isnotfc", "--envd"])
        .arg(&envd)
        .output()
        .unwrap();
    assert!(inject.status.success(), "{}", String::from_utf8_lossy(&inject.stderr));
    let before = common::hash_tree(&storage.join(BASE));
    let log = dir.path().join("console.log");
    let (v, code) = boot(&storage, BASE, &k, &["--expect", "envd running", "--console", log.to_str().unwrap()]);
    assert_eq!(v["verdict"], "ok", "{v}");
    assert_eq!(code, 0);
    let console = std::fs::read_to_string(&log).unwrap();
    let marker = console.find("tmpl-init: starting envd").expect("the wrapper's marker is on the console");
    assert!(console[marker..].contains("envd running"), "envd started after the marker:\n{console}");
    assert_eq!(common::hash_tree(&storage.join(BASE)), before, "boot-test never writes to the build");
    // The default expectation (the wrapper's marker) works as well.
    let (v, _) = boot(&storage, BASE, &k, &[]);
    assert_eq!(v["verdict"], "ok", "{v}");
}

#[test]
fn a_hand_written_wrapper_passing_debug_panics_with_exitcode_0x200() {
    let Some(k) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = shell_tree(dir.path());
    std::fs::write(t.join("sbin/init"), "#!/bin/sh\nexec /usr/bin/envd -debug\n").unwrap();
    std::fs::set_permissions(t.join("sbin/init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let storage = full_build(dir.path(), &t);
    // Offline, verify predicts it ...
    let out = common::tmpl().arg("--storage").arg(&storage).args(["--json", "verify", BASE]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["builds"][0]["findings"].as_array().unwrap().iter().any(|f| f["id"] == "wrapper.envd-flag"), "{v}");
    // ... and the boot proves it.
    let (v, code) = boot(&storage, BASE, &k, &[]);
    assert_eq!(v["verdict"], "panic", "{v}");
    assert_eq!(code, 1);
    assert!(rules(&v).iter().any(|r| r == "panic.init-exit-2"), "{v}");
    let findings = v["decoded"].to_string();
    assert!(findings.contains("wrapper.envd-flag"), "{findings}");
    // rewrite-wrapper fixes it, and the fixed build boots.
    let fix = common::tmpl().arg("--storage").arg(&storage).args(["rewrite-wrapper", BASE]).output().unwrap();
    assert!(fix.status.success(), "{}", String::from_utf8_lossy(&fix.stderr));
    let (v, _) = boot(&storage, BASE, &k, &[]);
    assert_eq!(v["verdict"], "ok", "{v}");
}

#[test]
fn firecracker_backend_runs_in_a_sandbox_namespace_with_tap0_and_removes_it() {
    if !common::require("gcc") || !common::require("mkfs.ext4") || !common::require_root() || !common::require("ip") {
        return;
    }
    // The guest kernel's config (IKCONFIG) allows health, so the backend sets up the namespace.
    let Some(guest) = std::env::var_os("TMPL_TEST_GUEST_KERNEL").map(PathBuf::from).filter(|p| p.is_file()) else {
        assert!(std::env::var("TMPL_TEST_REQUIRE_TOOLS").as_deref() != Ok("1"), "TMPL_TEST_GUEST_KERNEL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fc = common::static_binary(dir.path(), "firecracker", FAKE_FIRECRACKER);
    let t = tree(dir.path(), Init::None);
    let storage = full_build(dir.path(), &t);
    // The stand-in Firecracker runs no guest: marker is all it can show; the plumbing is the point.
    let (v, code) = boot(
        &storage,
        BASE,
        &guest,
        &["--vmm", "firecracker", "--firecracker", fc.to_str().unwrap(), "--require", "marker"],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["strongest_available"], "health", "{v:#}");
    let paths: Vec<&str> = v["api_calls"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/boot-source", "/drives/rootfs", "/machine-config", "/network-interfaces/eth0", "/actions"]);
    let boot_source: Value = serde_json::from_str(v["api_calls"][0]["body"].as_str().unwrap()).unwrap();
    let args = boot_source["boot_args"].as_str().unwrap();
    assert!(args.contains("ip=169.254.0.21::169.254.0.22:255.255.255.252:instance:eth0:off:tap0"), "{args}");
    assert!(!args.contains("root="), "Firecracker appends root= itself: {args}");
    assert_eq!(v["health"]["url"], "http://169.254.0.21:49983/health");
    // Nothing left behind: the namespace (and tap0 with it) is gone.
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains("tmpl-"), "{list}");
}
