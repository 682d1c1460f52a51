//! The test guest kernel (scripts/build-test-kernel.sh, `TMPL_TEST_GUEST_KERNEL`) boots the way
//! E2B's orchestrator boots a sandbox: QEMU's microvm machine under TCG standing in for
//! Firecracker, the root disk on virtio-blk over virtio-mmio (devices announced on the command
//! line), eth0 on virtio-net configured by the kernel from E2B's `ip=`, and envd answering
//! `GET /health` with 204 from the host through a port forward to the guest's 49983.
//!
//! Two boots, each a few seconds under TCG: the test envd as PID 1 (to 204), and a `#!` wrapper
//! passing the removed `-debug` flag (to the kernel panic E2B's seeds show).

mod guest_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guest_support::{KillOnDrop, build_test_envd, free_port, guest_kernel, have_tool, http};

/// The orchestrator's production kernel command line: `packages/orchestrator/pkg/sandbox/fc/
/// kernel_args.go` (keys sorted when rendered; pinned in `kernel_args_test.go`), with the `ip=`
/// value built in `fc/process.go` (guest 169.254.0.21, gateway = tap 169.254.0.22/30, device eth0,
/// the tap's name where the kernel expects DNS server 0).
const E2B_CMDLINE: &str = "i8042.noaux i8042.nokbd init=/sbin/init \
                           ip=169.254.0.21::169.254.0.22:255.255.255.252:instance:eth0:off:tap0 \
                           ipv6.autoconf=1 ipv6.disable=0 loglevel=1 panic=1 pci=off quiet \
                           random.trust_cpu=on reboot=k rootflags=discard";
/// What Firecracker appends for a read-write root drive (`vmm_config/boot_source.rs`); QEMU
/// appends the `virtio_mmio.device=` list itself (microvm, acpi=off).
const FIRECRACKER_APPEND: &str = "root=/dev/vda rw";
/// Generous for TCG on a loaded 2-core CI machine; boots take 2–7 s there.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn tools() -> bool {
    have_tool("qemu-system-x86_64") && have_tool("mkfs.ext4") && have_tool("gcc")
}

/// An ext4 root filesystem made with `mkfs.ext4 -d`: the test envd at /usr/bin/envd and `init`
/// written to /sbin/init (a symlink target when it starts with "->").
fn rootfs(dir: &Path, init: &str) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["sbin", "usr/bin", "dev", "proc", "sys", "tmp", "run", "etc"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let envd = build_test_envd(dir);
    std::fs::copy(&envd, tree.join("usr/bin/envd")).unwrap();
    let sbin_init = tree.join("sbin/init");
    if let Some(target) = init.strip_prefix("->") {
        std::os::unix::fs::symlink(target, &sbin_init).unwrap();
    } else {
        std::fs::write(&sbin_init, init).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sbin_init, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let image = dir.join("rootfs.ext4");
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("16M")
        .output()
        .unwrap();
    assert!(o.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&o.stderr));
    image
}

/// Start QEMU's microvm (TCG, acpi=off) the way Firecracker runs an E2B sandbox; with `port`, the
/// host's 127.0.0.1:`port` forwards to the guest's 169.254.0.21:49983.
fn boot(kernel: &Path, image: &Path, console: &Path, port: Option<u16>) -> KillOnDrop {
    // The guest's side of E2B's slot: 169.254.0.21/30 behind the tap's 169.254.0.22 (slirp needs
    // the DHCP start moved off .23, where a /30 puts its DNS); restrict=on keeps the guest off the
    // host and the internet, port forwards still work.
    let mut netdev =
        "user,id=eth0,net=169.254.0.20/30,host=169.254.0.22,dhcpstart=169.254.0.21,restrict=on".to_string();
    if let Some(port) = port {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-169.254.0.21:49983"));
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm,acpi=off", "-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg(format!("console=ttyS0 {E2B_CMDLINE} {FIRECRACKER_APPEND}"))
        .arg("-drive")
        .arg(format!("id=rootfs,file={},format=raw,if=none", image.display()))
        .args(["-device", "virtio-blk-device,drive=rootfs"])
        .args(["-netdev", &netdev, "-device", "virtio-net-device,netdev=eth0,mac=02:fc:00:00:00:05"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    KillOnDrop(child)
}

fn read_console(p: &Path) -> String {
    // The serial line turns "\n" into "\r\n".
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).replace("\r\n", "\n")
}

#[test]
fn envd_as_init_answers_health_204_on_the_e2b_command_line() {
    let Some(kernel) = guest_kernel() else { return };
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = rootfs(dir.path(), "->../usr/bin/envd");
    let console = dir.path().join("console.log");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let start = Instant::now();
    let mut qemu = boot(&kernel, &image, &console, Some(port));
    let first_204 = loop {
        if let Some(status) = qemu.0.try_wait().unwrap() {
            panic!("QEMU exited ({status}) before /health answered; console:\n{}", read_console(&console));
        }
        if start.elapsed() > BOOT_TIMEOUT {
            panic!("no 204 from /health within {BOOT_TIMEOUT:?}; console:\n{}", read_console(&console));
        }
        // Until the guest listens, slirp accepts and then closes the connection: an error here.
        if let Ok(204) = http(addr, "GET", "/health", b"", Duration::from_secs(2)) {
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("guest kernel {}: QEMU start to first GET /health 204: {} ms", kernel.display(), first_204.as_millis());
    // What the orchestrator sends next.
    assert_eq!(http(addr, "POST", "/init", br#"{"envVars":{}}"#, Duration::from_secs(10)).unwrap(), 204);

    let log = read_console(&console);
    assert!(log.contains("test-envd: listening on 0.0.0.0:49983 (version 0.0.0-tmpl-test, pid 1)"), "{log}");
    // The kernel saw E2B's command line and QEMU's command-line devices.
    let cmdline = log.lines().find(|l| l.starts_with("test-envd: cmdline: ")).unwrap_or_else(|| panic!("{log}"));
    assert!(cmdline.contains(E2B_CMDLINE) && cmdline.contains("virtio_mmio.device="), "{cmdline}");
    // IP_PNP configured eth0 from ip=: the default route via the tap's address 169.254.0.22
    // (/proc/net/route holds it as little-endian hex).
    let route = log.lines().find(|l| l.starts_with("test-envd: route: ")).unwrap_or_else(|| panic!("{log}"));
    assert!(route.contains("eth0\t00000000\t1600FEA9"), "{route}");
    assert!(!log.contains("Kernel panic"), "{log}");
}

#[test]
fn a_wrapper_passing_the_removed_debug_flag_panics_with_exitcode_0x200() {
    let Some(kernel) = guest_kernel() else { return };
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A #! wrapper as PID 1 that hands over to envd with a flag envd no longer accepts: the kernel
    // runs `/usr/bin/envd -debug /sbin/init`, envd exits 2, and PID 1 exiting panics the kernel.
    let image = rootfs(dir.path(), "#!/usr/bin/envd -debug\n");
    let console = dir.path().join("console.log");
    let start = Instant::now();
    let mut qemu = boot(&kernel, &image, &console, None);
    // panic=1 reboot=k and -no-reboot: QEMU exits about a second after the panic.
    let status = loop {
        if let Some(status) = qemu.0.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            panic!("QEMU still running after {BOOT_TIMEOUT:?}; console:\n{}", read_console(&console));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "guest kernel {}: QEMU start to exit after the panic: {} ms",
        kernel.display(),
        start.elapsed().as_millis()
    );
    let log = read_console(&console);
    assert!(status.success(), "QEMU exit {status}; console:\n{log}");
    assert!(log.contains("flag provided but not defined: -debug\nUsage of /usr/bin/envd:"), "{log}");
    assert!(log.contains("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200"), "{log}");
    assert!(!log.contains("test-envd: listening"), "{log}");
}

#[test]
fn the_kernel_under_test_is_the_one_the_repository_fragment_builds() {
    let Some(kernel) = guest_kernel() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-kernel.sh");
    if have_tool("shellcheck") {
        let o = Command::new("shellcheck").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    // Built by the script into DEST/test-kernel-<key>/vmlinux: the key of today's fragment and
    // linux-source must name the same directory, or the tests ran a stale kernel.
    let dest = kernel.parent().and_then(Path::parent).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(&script).args(args).arg(dest).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8_lossy(&o.stdout).trim().to_string(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (path, _) = run(&["--print-path"]);
    assert_eq!(Path::new(&path), kernel, "TMPL_TEST_GUEST_KERNEL is not the kernel kernel/tmpl-guest.config builds");
    // A second run finds it in the cache: the same path, nothing rebuilt.
    let (path, stderr) = run(&[]);
    assert_eq!(Path::new(&path), kernel);
    assert!(!stderr.contains("extracting"), "{stderr}");
    let info = std::fs::read_to_string(kernel.with_file_name("build-info")).unwrap();
    assert!(info.contains("vmlinux: wall ") && info.contains("kernel release: "), "{info}");
}
