//! The kernel-mount building block (`tmpl::sys::{loopdev, mount}`) against real ext4 images from
//! `mkfs.ext4 -d`, with `debugfs`, `e2fsck -fn`, the rootfs reader, sysfs and mountinfo as
//! oracles.
//!
//! These need root (CAP_SYS_ADMIN and /dev/loop-control). Not root: they skip with a message,
//! unless `TMPL_TEST_REQUIRE_TOOLS=1` (CI), where they fail. Root that still cannot mount
//! (no loop driver, no capability in a container) fails: that is a broken test machine.
//!
//! Mounts live in a private mount namespace owned by one thread of the process: the host's
//! mount table never lists them, and they go with the process however it ends (the last tests
//! kill a real tmpl while it has an image mounted).
//!
//! Every test ends with [`assert_clean`]: no loop device backs the image, the mount point is not
//! in /proc/self/mountinfo and its directory is gone.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tmpl::device::Device;
use tmpl::rootfs::Rootfs;
use tmpl::sys::{
    AttachMethod, LoopDevice, LoopOptions, MountError, MountOptions, is_mount_point, loop_uses, mount_image,
};

/// Root? If not: fail when `TMPL_TEST_REQUIRE_TOOLS=1`, else say why and skip.
fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    common::skip("the mount tests need root (CAP_SYS_ADMIN, /dev/loop-control); run them as root")
}

/// A scratch area: an image built from a small tree, and an empty parent for mount points (so a
/// leftover directory is visible).
struct Scratch {
    dir: tempfile::TempDir,
    image: PathBuf,
    parent: PathBuf,
}

impl Scratch {
    fn new(size_mib: u64) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for d in ["etc", "usr/bin", "sbin", "tmp"] {
            std::fs::create_dir_all(tree.join(d)).unwrap();
        }
        std::fs::write(tree.join("etc/hostname"), "sandbox\n").unwrap();
        std::fs::write(tree.join("usr/bin/old"), vec![7u8; 100_000]).unwrap();
        // An absolute directory link, as merged-/usr images have: it must resolve inside the image.
        std::os::unix::fs::symlink("/usr/bin", tree.join("bin")).unwrap();
        let image = dir.path().join("rootfs.ext4");
        common::mkfs(&tree, &image, size_mib);
        let parent = dir.path().join("mnt");
        std::fs::create_dir(&parent).unwrap();
        Scratch { dir, image, parent }
    }

    fn opts(&self) -> MountOptions {
        MountOptions { parent: Some(self.parent.clone()), ..MountOptions::default() }
    }

    fn opts_ro(&self) -> MountOptions {
        MountOptions { read_only: true, ..self.opts() }
    }

    fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.parent).unwrap().map(|e| e.unwrap().path()).collect()
    }
}

/// Wait (up to 3 s, for a transient opener such as udev's probe) until no loop device backs
/// `image`, then check the mount point is neither mounted nor present (for the path into the
/// private namespace: the namespace is gone).
fn assert_clean(s: &Scratch, target: Option<&Path>) {
    let start = Instant::now();
    loop {
        let uses = loop_uses(&s.image).unwrap();
        if uses.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "loop device left behind: {uses:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(t) = target {
        assert!(!is_mount_point(t).unwrap(), "{} still in /proc/self/mountinfo", t.display());
        assert!(!t.exists(), "mount point {} not removed", t.display());
    }
    assert!(s.leftovers().is_empty(), "left in the mount parent: {:?}", s.leftovers());
}

fn sha256_file(p: &Path) -> [u8; 32] {
    let mut f = File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

fn debugfs_stat(image: &Path, path: &str) -> String {
    let out = std::process::Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap())
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sysfs(device: &Path, attr: &str) -> String {
    let name = device.file_name().unwrap();
    std::fs::read_to_string(Path::new("/sys/block").join(name).join(attr)).unwrap().trim().to_string()
}

fn envd_bytes() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// The write path the mount backend will use, checked from outside the kernel afterwards.
#[test]
fn write_through_the_mount_then_check_with_debugfs_and_e2fsck() {
    if !root() || !common::require("debugfs") {
        return;
    }
    let s = Scratch::new(32);
    let m = mount_image(&s.image, &s.opts()).unwrap();
    let target = m.path().to_path_buf();
    assert!(m.mount_point().starts_with(std::fs::canonicalize(&s.parent).unwrap()));
    assert!(m.is_mounted(), "listed in the private namespace's mount table");
    // Not in the host's: no tmpl mount there for anyone to trip over or leak.
    assert!(!is_mount_point(m.mount_point()).unwrap());
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains("tmpl-mount-"));
    assert!(s.leftovers().is_empty(), "nothing is created in the host's mount parent");
    let uses = loop_uses(&s.image).unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].device, m.device());
    assert!(uses[0].mount_points.is_empty(), "{uses:?}");
    assert_eq!(m.attach_method(), Some(AttachMethod::Configure), "this kernel has LOOP_CONFIGURE");
    assert_eq!(sysfs(m.device(), "loop/autoclear"), "1");
    assert_eq!(sysfs(m.device(), "ro"), "0");

    // What we can see through the mount is the image's tree.
    assert_eq!(std::fs::read_to_string(m.resolve("/etc/hostname").unwrap()).unwrap(), "sandbox\n");
    // Write a binary, replace /sbin/init with a symlink, as inject-envd will.
    let envd = envd_bytes();
    let p = m.resolve("/usr/bin/envd").unwrap();
    std::fs::write(&p, &envd).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/usr/bin/envd", m.resolve("/sbin/init").unwrap()).unwrap();
    // Through the image's absolute /bin -> /usr/bin link: lands in the image, not on the host.
    let tool = m.resolve("/bin/tmpl-mount-test-tool").unwrap();
    assert_eq!(tool, target.join("usr/bin/tmpl-mount-test-tool"));
    std::fs::write(&tool, b"tool\n").unwrap();
    assert!(!Path::new("/usr/bin/tmpl-mount-test-tool").exists());
    m.unmount().unwrap();
    assert_clean(&s, Some(&target));

    assert_eq!(common::debugfs_cat(&s.image, "/usr/bin/envd"), envd);
    assert_eq!(common::debugfs_cat(&s.image, "/usr/bin/tmpl-mount-test-tool"), b"tool\n");
    let st = debugfs_stat(&s.image, "/sbin/init");
    assert!(st.contains("Type: symlink") && st.contains("\"/usr/bin/envd\""), "{st}");
    assert!(debugfs_stat(&s.image, "/usr/bin/envd").contains("Mode:  0755"));
    assert!(common::fsck_clean(&s.image), "{:?}", tmpl::tools::e2fs::fsck_readonly(&s.image));
    // And the crate's own reader agrees.
    let fs = Rootfs::open(Arc::new(Device::plain_file(&s.image).unwrap())).unwrap();
    assert_eq!(fs.read_link("/sbin/init").unwrap(), "/usr/bin/envd");
    assert_eq!(fs.read("/usr/bin/envd").unwrap(), envd);
}

#[test]
fn read_only_refuses_writes_and_leaves_the_image_byte_identical() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let before = sha256_file(&s.image);
    let m = mount_image(&s.image, &s.opts_ro()).unwrap();
    let target = m.path().to_path_buf();
    assert!(m.read_only());
    assert_eq!(sysfs(m.device(), "ro"), "1");
    assert_eq!(sysfs(m.device(), "loop/autoclear"), "1");
    assert_eq!(std::fs::read_to_string(m.resolve("/etc/hostname").unwrap()).unwrap(), "sandbox\n");
    let e = std::fs::write(m.resolve("/etc/new").unwrap(), b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{e}");
    // The device itself refuses writes: at open or at write, depending on the kernel (EPERM,
    // EACCES or EROFS). If a write got through, the hash check below catches it too.
    let refused = match OpenOptions::new().write(true).open(m.device()) {
        Err(e) => e,
        Ok(dev) => std::os::unix::fs::FileExt::write_all_at(&dev, &[0xFF; 512], 0).unwrap_err(),
    };
    assert!(matches!(refused.raw_os_error(), Some(1 | 13 | 30)), "{refused}");
    m.unmount().unwrap();
    assert_clean(&s, Some(&target));
    assert_eq!(sha256_file(&s.image), before, "a read-only mount changed the image");
}

#[test]
fn attach_sets_autoclear_offset_and_read_only_and_dropping_releases() {
    if !root() {
        return;
    }
    let s = Scratch::new(8);
    for legacy in [false, true] {
        let opts = LoopOptions { read_only: true, offset: 4096, size_limit: 1 << 20, force_legacy: legacy };
        let dev = LoopDevice::attach(&s.image, &opts).unwrap();
        assert_eq!(dev.method(), if legacy { AttachMethod::Legacy } else { AttachMethod::Configure });
        assert_eq!(dev.method().note().is_some(), legacy);
        let st = dev.status().unwrap();
        assert!(st.autoclear && st.read_only, "{st:?}");
        assert_eq!((st.offset, st.size_limit), (4096, 1 << 20));
        let md = std::fs::metadata(&s.image).unwrap();
        assert_eq!(st.backing_ino, std::os::unix::fs::MetadataExt::ino(&md));
        assert_eq!(sysfs(dev.path(), "loop/offset"), "4096");
        assert_eq!(sysfs(dev.path(), "size"), ((1u64 << 20) / 512).to_string());
        assert_eq!(loop_uses(&s.image).unwrap().len(), 1);
        // Dropping the guard (never mounted) is enough: autoclear.
        drop(dev);
        assert_clean(&s, None);
        // Explicit detach for the never-mounted error path, and release() that waits.
        LoopDevice::attach(&s.image, &opts).unwrap().detach().unwrap();
        assert!(loop_uses(&s.image).unwrap().is_empty());
        LoopDevice::attach(&s.image, &opts).unwrap().release().unwrap();
        assert!(loop_uses(&s.image).unwrap().is_empty());
    }
}

#[test]
fn the_legacy_loop_path_mounts_and_writes_too() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let opts = MountOptions { force_legacy_loop: true, ..s.opts() };
    let m = mount_image(&s.image, &opts).unwrap();
    let target = m.path().to_path_buf();
    assert_eq!(m.attach_method(), Some(AttachMethod::Legacy));
    assert_eq!(sysfs(m.device(), "loop/autoclear"), "1");
    std::fs::write(m.resolve("/etc/legacy").unwrap(), b"ok\n").unwrap();
    m.unmount().unwrap();
    assert_clean(&s, Some(&target));
    assert_eq!(common::debugfs_cat(&s.image, "/etc/legacy"), b"ok\n");
    assert!(common::fsck_clean(&s.image));
}

#[test]
fn a_filesystem_at_an_offset_is_mounted_and_the_bytes_around_it_untouched() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let fs_bytes = std::fs::read(&s.image).unwrap();
    let container = s.dir.path().join("disk.img");
    let mut f = File::create(&container).unwrap();
    f.write_all(&vec![0xAA; 1 << 20]).unwrap();
    f.write_all(&fs_bytes).unwrap();
    f.write_all(&vec![0xBB; 1 << 20]).unwrap();
    drop(f);
    let opts = MountOptions { offset: 1 << 20, size_limit: fs_bytes.len() as u64, ..s.opts() };
    let m = mount_image(&container, &opts).unwrap();
    let target = m.path().to_path_buf();
    assert_eq!(std::fs::read_to_string(m.resolve("/etc/hostname").unwrap()).unwrap(), "sandbox\n");
    std::fs::write(m.resolve("/etc/at-offset").unwrap(), vec![1u8; 200_000]).unwrap();
    m.unmount().unwrap();
    assert!(!is_mount_point(&target).unwrap() && !target.exists());
    assert!(loop_uses(&container).unwrap().is_empty());
    let after = std::fs::read(&container).unwrap();
    assert!(after[..1 << 20].iter().all(|&b| b == 0xAA), "bytes before the filesystem changed");
    assert!(after[(1 << 20) + fs_bytes.len()..].iter().all(|&b| b == 0xBB), "bytes after the filesystem changed");
    let inner = s.dir.path().join("inner.ext4");
    std::fs::write(&inner, &after[1 << 20..(1 << 20) + fs_bytes.len()]).unwrap();
    assert_eq!(common::debugfs_cat(&inner, "/etc/at-offset"), vec![1u8; 200_000]);
    assert!(common::fsck_clean(&inner));
}

#[test]
fn a_non_ext4_file_fails_cleanly() {
    // The superblock check runs before any device is touched: no root needed.
    let s = Scratch::new(8);
    let junk = s.dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 8 << 20]).unwrap();
    let e = mount_image(&junk, &s.opts()).unwrap_err();
    assert!(matches!(e, MountError::NotExt4 { .. }), "{e:?}");
    let err: tmpl::Error = e.into();
    assert_eq!(err.exit_code(), tmpl::exit_code::INVALID_INPUT);
    assert!(err.to_string().contains("junk.img"), "{err}");
    assert!(loop_uses(&junk).unwrap().is_empty());
    assert!(s.leftovers().is_empty());
    // A truncated copy is named as such.
    let cut = s.dir.path().join("cut.ext4");
    std::fs::copy(&s.image, &cut).unwrap();
    File::options().write(true).open(&cut).unwrap().set_len(2 << 20).unwrap();
    let e = mount_image(&cut, &s.opts()).unwrap_err();
    assert!(matches!(e, MountError::Truncated { .. }) && e.to_string().contains("truncated"), "{e:?}");
    assert!(loop_uses(&cut).unwrap().is_empty());
    assert_clean(&s, None);
}

/// The superblock looks like ext4 but the kernel refuses it: the failure happens after the loop
/// device was attached, and the device must still be released.
#[test]
fn a_filesystem_the_kernel_refuses_leaves_no_loop_device() {
    if !root() {
        return;
    }
    let s = Scratch::new(8);
    // Set an unknown incompat feature bit without fixing the superblock checksum: the kernel
    // rejects it (bad checksum, or an unsupported feature on a non-csum filesystem).
    let mut f = OpenOptions::new().read(true).write(true).open(&s.image).unwrap();
    let mut sb = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut sb, 1024 + 0x60).unwrap();
    let incompat = u32::from_le_bytes(sb) | 0x8000_0000;
    std::os::unix::fs::FileExt::write_all_at(&f, &incompat.to_le_bytes(), 1024 + 0x60).unwrap();
    f.flush().unwrap();
    drop(f);
    let e = mount_image(&s.image, &s.opts()).unwrap_err();
    let MountError::Mount { ref device, ref target, .. } = e else { panic!("expected a mount error, got {e:?}") };
    assert!(device.to_string_lossy().starts_with("/dev/loop"));
    let msg = e.to_string();
    assert!(msg.contains("rootfs.ext4") && msg.contains("dmesg"), "{msg}");
    assert_clean(&s, Some(target));
}

#[test]
fn a_panic_while_mounted_still_unmounts_and_releases() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let mut target = PathBuf::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let m = mount_image(&s.image, &s.opts()).unwrap();
        target = m.path().to_path_buf();
        std::fs::write(m.resolve("/etc/before-panic").unwrap(), b"written\n").unwrap();
        panic!("a later step failed");
    }));
    assert!(r.is_err());
    assert!(!target.as_os_str().is_empty());
    assert_clean(&s, Some(&target));
    // Drop's unmount wrote everything back.
    assert_eq!(common::debugfs_cat(&s.image, "/etc/before-panic"), b"written\n");
    assert!(common::fsck_clean(&s.image));
}

#[test]
fn an_error_after_mounting_still_unmounts() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    fn step(s: &Scratch, target: &mut PathBuf) -> Result<(), tmpl::Error> {
        let m = mount_image(&s.image, &s.opts())?;
        *target = m.path().to_path_buf();
        std::fs::write(m.resolve("/etc/partial")?, b"x").map_err(|e| tmpl::Error::write("/etc/partial", e))?;
        // A later step fails: the guard must still unmount.
        m.resolve("/no/such/file")?;
        m.unmount()?;
        Ok(())
    }
    let mut target = PathBuf::new();
    let e = step(&s, &mut target).unwrap_err();
    assert!(e.to_string().contains("/no/such/file") && e.to_string().contains("rootfs.ext4"), "{e}");
    assert_eq!(e.exit_code(), tmpl::exit_code::ENVIRONMENT);
    assert_clean(&s, Some(&target));
    // What was written before the failure reached the image through the guard's unmount.
    assert_eq!(common::debugfs_cat(&s.image, "/etc/partial"), b"x");
    assert!(common::fsck_clean(&s.image));
}

/// A file held open inside the mount: dropping the guard detaches lazily; the device goes when
/// the file is closed.
#[test]
fn a_busy_mount_is_still_released_by_the_guard() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let m = mount_image(&s.image, &s.opts()).unwrap();
    let target = m.path().to_path_buf();
    let mut held = File::open(m.resolve("/etc/hostname").unwrap()).unwrap();
    let t = Instant::now();
    drop(m);
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(2), "the guard waited {waited:?}");
    assert!(!is_mount_point(&target).unwrap(), "still mounted after the guard dropped");
    assert!(!target.exists());
    // Lazily detached: the open file still reads, and keeps the device until closed.
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "sandbox\n");
    assert_eq!(loop_uses(&s.image).unwrap().len(), 1);
    drop(held);
    assert_clean(&s, Some(&target));
    assert!(common::fsck_clean(&s.image));
}

/// The same with the explicit unmount: it reports who kept the mount busy.
#[test]
fn unmount_reports_a_busy_mount_and_who_holds_it() {
    if !root() {
        return;
    }
    let s = Scratch::new(16);
    let m = mount_image(&s.image, &s.opts()).unwrap();
    let target = m.path().to_path_buf();
    let held = OpenOptions::new().write(true).open(m.resolve("/etc/hostname").unwrap()).unwrap();
    let e = m.unmount().unwrap_err();
    let MountError::Busy { ref holders, .. } = e else { panic!("expected Busy, got {e:?}") };
    assert!(holders.iter().any(|h| h.pid == std::process::id()), "{holders:?}");
    let msg = e.to_string();
    assert!(msg.contains("detached lazily") && msg.contains("etc/hostname"), "{msg}");
    assert!(!is_mount_point(&target).unwrap());
    drop(held);
    assert_clean(&s, Some(&target));
}

/// Not root: the error says what to do. Runs the child below as `nobody` through setpriv.
#[test]
fn without_root_the_error_says_use_debugfs() {
    if !root() || !common::require("setpriv") {
        return;
    }
    let s = Scratch::new(8);
    // nobody must reach the image (read-write, as the mount backend opens it).
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&s.image, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_unprivileged_mount", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TMPL_MOUNT_CHILD_IMAGE", &s.image)
        .env("TMPL_MOUNT_CHILD_PARENT", std::env::temp_dir())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("CHILD-ERROR:"), "child did not run:\n{text}");
    assert!(text.contains("CAP_SYS_ADMIN") && text.contains("--backend debugfs"), "{text}");
    assert!(text.contains("exit code 4"), "{text}");
    assert_clean(&s, None);
}

/// Helper for the test above (run only by it, as an unprivileged user).
#[test]
#[ignore = "run by without_root_the_error_says_use_debugfs as nobody"]
fn child_unprivileged_mount() {
    let image = PathBuf::from(std::env::var_os("TMPL_MOUNT_CHILD_IMAGE").expect("run by the parent test"));
    let parent = PathBuf::from(std::env::var_os("TMPL_MOUNT_CHILD_PARENT").unwrap());
    assert!(!rustix::process::geteuid().is_root());
    let opts = MountOptions { parent: Some(parent), ..MountOptions::default() };
    let e = mount_image(&image, &opts).unwrap_err();
    let err: tmpl::Error = e.into();
    println!("CHILD-ERROR: {err} (exit code {})", err.exit_code());
}

/// The processes' mount tables that list a mount whose point contains `marker`.
fn mount_tables_listing(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let tasks = std::fs::read_dir(e.path().join("task"))
            .map(|rd| rd.flatten().map(|t| t.path()).collect())
            .unwrap_or_else(|_| vec![]);
        for t in tasks {
            if std::fs::read_to_string(t.join("mountinfo")).is_ok_and(|m| m.contains(marker)) {
                out.push(t.display().to_string());
            }
        }
    }
    out
}

fn work_image(build_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(build_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".tmpl-work-"))
        .map(|e| e.path().join("rootfs.ext4"))
}

fn wait_for_file(p: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !p.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("tmpl ended ({st}) before reaching the pause point: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "tmpl never reached the pause point");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tmpl killed with SIGKILL while the mount backend has its work copy mounted read-write: no
/// mount survives in any mount table and the loop device is released (the namespace went with
/// the process), every time; the next run removes the dead work folder and succeeds.
#[test]
fn a_tmpl_killed_while_mounted_leaves_no_mount_and_no_loop_device() {
    use common::fixtures::{BUILD, Store, Tree, bins};
    if !root() {
        return;
    }
    let Some(b) = bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.shell();
    s.full(BUILD, &t);
    let build_dir = s.w.root.join(BUILD);
    for round in 0..3 {
        let pause = s.dir.path().join(format!("paused-{round}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tmpl"))
            .env(tmpl::edit::fault::FAULT_ENV, "pause:mounted")
            .env(tmpl::edit::fault::PAUSE_FILE_ENV, &pause)
            .arg("--storage")
            .arg(&s.w.root)
            .args(["inject-envd", BUILD, "--backend", "mount", "--envd"])
            .arg(&b.envd)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_file(&pause, &mut child);
        let pid = child.id();
        let marker = format!("tmpl-mount-{pid}");
        // Mounted: the work copy backs a loop device; only tmpl's own namespace lists the mount.
        let work = work_image(&build_dir).expect("a work copy while mounted");
        assert_eq!(loop_uses(&work).unwrap().len(), 1, "round {round}");
        assert!(!mount_tables_listing(&marker).is_empty(), "tmpl's namespace lists the mount");
        assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&marker));
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        std::fs::remove_file(&pause).unwrap();
        let start = Instant::now();
        loop {
            let (uses, tables) = (loop_uses(&work).unwrap(), mount_tables_listing(&marker));
            if uses.is_empty() && tables.is_empty() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "left after SIGKILL: {uses:?} {tables:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(work.exists(), "the killed run's work copy is left for the next run to remove");
    }
    let out = common::tmpl()
        .arg("--storage")
        .arg(&s.w.root)
        .args(["--json", "inject-envd", BUILD, "--backend", "mount", "--envd"])
        .arg(&b.envd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = v["notes"].as_array().unwrap().iter().filter(|n| n.as_str().unwrap().contains(".tmpl-work-")).count();
    // Each killed run removed its predecessor's work folder first; this one removes the last.
    assert_eq!(removed, 1, "{v:#}");
    assert!(work_image(&build_dir).is_none());
    assert_eq!(common::debugfs_cat(&build_dir.join("rootfs.ext4"), "/usr/bin/envd"), std::fs::read(&b.envd).unwrap());
}

/// Detaches a host mount if the test fails before tmpl removed it.
struct HostMountGuard(PathBuf);

impl Drop for HostMountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// What tmpl versions before the private namespace left when killed: a read-write mount of a work
/// copy on `/tmp/tmpl-mount-XXXXXX` in the host namespace. verify and `tmpl backups` name it, and
/// the next edit of the build unmounts it (releasing the loop device) before it removes the work
/// folder — the old clean-up deleted the mounted file instead.
#[test]
fn a_stale_mount_of_an_older_tmpl_is_named_and_removed_by_the_next_run() {
    use common::fixtures::{BUILD, Store, Tree, bins};
    if !root() {
        return;
    }
    let Some(b) = bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.shell();
    s.full(BUILD, &t);
    let build_dir = s.w.root.join(BUILD);
    let work_dir = build_dir.join(".tmpl-work-0ld5ta1e");
    std::fs::create_dir(&work_dir).unwrap();
    let work = work_dir.join("rootfs.ext4");
    std::fs::copy(build_dir.join("rootfs.ext4"), &work).unwrap();
    let target = tempfile::Builder::new().prefix("tmpl-mount-").tempdir_in("/tmp").unwrap().keep();
    let guard = HostMountGuard(target.clone());
    let dev = LoopDevice::attach(&work, &LoopOptions::default()).unwrap();
    let device = dev.path().to_path_buf();
    rustix::mount::mount(dev.path(), &target, "ext4", rustix::mount::MountFlags::NOATIME, None).unwrap();
    drop(dev); // the mount holds the device now, as after a SIGKILL of the old tmpl
    assert!(is_mount_point(&target).unwrap());

    let (_, findings) = s.verify(BUILD);
    let mount = findings.iter().find(|(id, _, _)| id == "leftover.mount").expect("verify names the stale mount");
    assert!(mount.2.contains(&device.display().to_string()) && mount.2.contains("still mounted"), "{mount:?}");
    assert!(findings.iter().any(|(id, _, m)| id == "leftover.work-folder" && m.contains(".tmpl-work-0ld5ta1e")));
    let out = common::tmpl().arg("--storage").arg(&s.w.root).args(["--json", "backups", BUILD]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listing"]["mounts"][0]["path"], target.display().to_string(), "{v:#}");

    let out = common::tmpl()
        .arg("--storage")
        .arg(&s.w.root)
        .args(["--json", "inject-envd", BUILD, "--envd"])
        .arg(&b.envd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["notes"].to_string().contains("unmounted"), "{v:#}");
    assert!(!is_mount_point(&target).unwrap() && !target.exists(), "the stale mount and its directory are gone");
    assert!(!work_dir.exists());
    let (backing, _) = tmpl::sys::loopdev::backing_file(&device);
    assert!(backing.as_ref().is_none_or(|p| !p.starts_with(&build_dir)), "{device:?} still bound to {backing:?}");
    drop(guard);
}
