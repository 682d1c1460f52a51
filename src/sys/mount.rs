//! Kernel mounts of ext4 images for the `mount` write backend: [`mount_image`] attaches the image
//! to an autoclear loop device ([`super::loopdev`]) and mounts it in a **private mount namespace**
//! owned by a dedicated thread, then returns a [`Mounted`] guard whose [`Mounted::path`] reaches
//! the filesystem through `/proc/<pid>/task/<tid>/root/...`.
//!
//! Why a namespace: a mount made in tmpl's own namespace (the host's) outlives a tmpl killed with
//! SIGKILL — a read-write mount of a work copy and its loop device stay behind, and a later clean-up
//! that deletes the work copy leaves a mount of a deleted file. The namespace here belongs to one
//! thread of tmpl and to nothing else: when tmpl dies, however it dies, the kernel tears the
//! namespace down, which unmounts the filesystem (writing it back), and the last close of the
//! loop device then releases it (autoclear). The mount point lives on a tmpfs mounted inside the
//! same namespace, so nothing is created on the host's disks either. No other process sees the
//! mount; `findmnt` on the host does not list it.
//!
//! The guard's promise while tmpl runs: whatever happens after the mount — an error, a panic that
//! unwinds — dropping it unmounts (retrying briefly while busy, then a lazy `MNT_DETACH` as a last
//! resort) and closes the loop fd, so the kernel releases the device. Callers that are about to
//! trust the image call [`Mounted::unmount`] instead, which `syncfs`es first, reports every
//! failure, and returns only once the loop device is released.
//!
//! [`host_mounts`] and [`remove_host_mount`] find and remove mounts that tmpl versions before the
//! namespace left in the host namespace (`<tmp>/tmpl-mount-XXXXXX`).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::inuse::{Holder, holders_on_fs, is_mount_point};
use super::loopdev::{AttachMethod, LoopDevice, LoopError, LoopOptions, wait_released};
use crate::device::{Device, ReadAt};
use crate::error::Error;
use crate::rootfs::Superblock;

/// The filesystem type mounted.
pub const FSTYPE: &str = "ext4";

/// Prefix of the temporary mount point directories.
pub const TARGET_PREFIX: &str = "tmpl-mount-";

/// Waits between unmount attempts while the filesystem is busy (about 0.3 s in all), before the
/// lazy detach.
const BUSY_BACKOFF_MS: [u64; 5] = [10, 20, 40, 80, 160];

/// How long [`Mounted::unmount`] waits for the kernel to release the loop device.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How to mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Mount read-only on a read-only loop device: nothing can write to the image.
    pub read_only: bool,
    /// Byte offset of the filesystem in the image file.
    pub offset: u64,
    /// Bytes of the image from `offset` that hold the filesystem (0 = to the end).
    pub size_limit: u64,
    /// Directory in which the temporary mount point is created (default: the system temp dir).
    pub parent: Option<PathBuf>,
    /// Force the pre-5.8 loop ioctls (see [`LoopOptions::force_legacy`]).
    pub force_legacy_loop: bool,
    /// `MS_NOSYMFOLLOW` (Linux 5.10+): the host never follows a symlink inside the image, so a
    /// write through the mount cannot land outside it whatever the image's links say.
    pub no_symfollow: bool,
}

impl MountOptions {
    /// Read-write with the defaults.
    pub fn read_write() -> Self {
        MountOptions::default()
    }

    /// Read-only with the defaults.
    pub fn read_only() -> Self {
        MountOptions { read_only: true, ..MountOptions::default() }
    }

    /// `MS_NOATIME | MS_NODEV | MS_NOSUID`, plus `MS_RDONLY` when read-only. No atime updates
    /// (a read does not change the image); device nodes and setuid bits in a guest image mean
    /// nothing on the host.
    pub fn flags(&self) -> MountFlags {
        let mut f = MountFlags::NOATIME | MountFlags::NODEV | MountFlags::NOSUID;
        if self.read_only {
            f |= MountFlags::RDONLY;
        }
        if self.no_symfollow {
            f |= MountFlags::NOSYMFOLLOW;
        }
        f
    }
}

/// Why an image could not be mounted or unmounted. Every message names the image, device or
/// mount point involved and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error("cannot read the superblock of {}: {message}", image.display())]
    ReadImage { image: PathBuf, message: String },
    #[error("{} is not an ext4 filesystem{}: {reason}", image.display(), at_offset(*offset))]
    NotExt4 { image: PathBuf, offset: u64, reason: String },
    #[error(
        "{} is truncated: its ext4 filesystem is {fs_bytes} bytes but only {available} are available{}; \
         the image was cut short (copy it again from its source)",
        image.display(), at_offset(*offset)
    )]
    Truncated { image: PathBuf, offset: u64, fs_bytes: u64, available: u64 },
    #[error(
        "{}: the ext4 journal needs recovery, which a read-only mount cannot do; mount it read-write \
         (which replays the journal) or run `e2fsck -fy` on a copy first",
        image.display()
    )]
    NeedsRecovery { image: PathBuf },
    #[error(
        "{what} failed for {}: {source}; the mount backend needs root (CAP_SYS_ADMIN) to use a private mount \
         namespace: run as root or use --backend debugfs",
        image.display()
    )]
    Namespace {
        image: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a mount point in {}: {source}", parent.display())]
    MountPoint {
        parent: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {} ({}) on {}: {source}; {hint}", image.display(), device.display(), target.display())]
    Mount {
        image: PathBuf,
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error(
        "syncing {} (mounted from {}) failed: {source}; the image may be missing writes: do not use it",
        target.display(), image.display()
    )]
    Sync {
        image: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unmount {} ({}): {source}", target.display(), image.display())]
    Unmount {
        image: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve {guest} inside {}: {source}", image.display())]
    Resolve {
        image: PathBuf,
        guest: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} ({}) was still in use{}; it was detached lazily and {} is released when the last file is closed: \
         do not use the image before then",
        target.display(), image.display(), describe_holders(holders), device.display()
    )]
    Busy { image: PathBuf, device: PathBuf, target: PathBuf, holders: Vec<Holder> },
}

fn at_offset(offset: u64) -> String {
    if offset == 0 { String::new() } else { format!(" at offset {offset}") }
}

fn describe_holders(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> =
        holders.iter().map(|h| format!("{} (pid {}) {}", h.comm, h.pid, h.path.display())).collect();
    format!(" by {}", list.join(", "))
}

impl MountError {
    /// The errno-specific advice for a failed `mount(2)` of ext4 from a loop device.
    fn mount_hint(e: Errno) -> &'static str {
        match e {
            Errno::PERM | Errno::ACCESS => {
                "the mount backend needs root (CAP_SYS_ADMIN): run as root or use --backend debugfs"
            }
            Errno::NODEV => "the kernel has no ext4 driver: `modprobe ext4`, or use --backend debugfs",
            Errno::ROFS => "the device is read-only: mount read-only, or check that the image file is writable",
            Errno::BUSY => "the device is already in use (another mount of the same image?): see `losetup -a`",
            // EINVAL (bad superblock), EUCLEAN (EFSCORRUPTED), EBADMSG (EFSBADCRC), EIO, ...
            _ => {
                "the kernel refused the filesystem (corrupt, or features this kernel lacks): `dmesg | tail` \
                 says why; check it with `e2fsck -fn`"
            }
        }
    }
}

impl From<MountError> for Error {
    fn from(e: MountError) -> Error {
        match e {
            // Input that is not what it must be (exit 3): nothing about the machine to fix.
            MountError::NotExt4 { ref image, .. } | MountError::Truncated { ref image, .. } => {
                Error::invalid_from(image.clone(), e)
            }
            // Everything else is the machine: privileges, drivers, devices, I/O (exit 4).
            other => Error::environment(other),
        }
    }
}

/// Time spent in each step (for benchmarks and `--verbose`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MountTimings {
    pub attach: Duration,
    pub mount: Duration,
}

/// What the namespace thread is asked to do.
enum Request {
    /// Unmount (retrying while busy, then lazily) and end the thread.
    Unmount(mpsc::Sender<Result<(), UnmountFailure>>),
}

/// Why the thread could not unmount cleanly.
enum UnmountFailure {
    /// Still busy after the retries; detached lazily.
    Busy,
    /// `umount2` failed otherwise.
    Failed(io::Error),
}

/// The thread that owns the private mount namespace, and where the filesystem is in it.
#[derive(Debug)]
struct Namespace {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The mount point as the namespace sees it (`<parent>/tmpl-mount-<pid>`).
    target: PathBuf,
    /// The same directory reached from any thread of tmpl: `/proc/<pid>/task/<tid>/root<target>`.
    path: PathBuf,
    /// `/proc/<pid>/task/<tid>/mountinfo`: the namespace's mount table.
    mountinfo: PathBuf,
    /// `/proc/<pid>/task/<tid>`: gone once the thread and its namespace are.
    task: PathBuf,
}

/// Enter a new mount namespace on this thread (and only this thread: `CLONE_FS` gives it its own
/// root and working directory first, so the rest of tmpl is not moved).
#[expect(unsafe_code, reason = "unshare(CLONE_NEWNS) has no safe wrapper; the one unsafe call is justified below")]
fn unshare_mount_namespace() -> rustix::io::Result<()> {
    use rustix::thread::UnshareFlags;
    // SAFETY: `unshare_unsafe` is unsafe because of CLONE_FILES (file descriptors created on
    // other threads would become invisible to this one). Only CLONE_FS and CLONE_NEWNS are
    // passed: the fd table stays shared, and they affect nothing but this thread's root, cwd,
    // umask and mount namespace.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
}

impl Namespace {
    /// Start the thread: private namespace, a tmpfs on `parent`, `device` mounted on
    /// `<parent>/tmpl-mount-<pid>`. Returns once it is mounted (or why not).
    fn start(device: &Path, image: &Path, parent: &Path, flags: MountFlags) -> Result<Namespace, MountError> {
        let target = parent.join(format!("{TARGET_PREFIX}{}", std::process::id()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, MountError>>();
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (dev, img, par, tgt) = (device.to_path_buf(), image.to_path_buf(), parent.to_path_buf(), target.clone());
        let thread = std::thread::Builder::new()
            .name("tmpl-mount-ns".into())
            .spawn(move || {
                let setup = (|| -> Result<(), MountError> {
                    let ns_err = |what: &'static str, e: Errno| MountError::Namespace {
                        image: img.clone(),
                        what,
                        source: io::Error::from_raw_os_error(e.raw_os_error()),
                    };
                    unshare_mount_namespace().map_err(|e| ns_err("unshare(CLONE_NEWNS)", e))?;
                    // Nothing mounted here may propagate back to the host.
                    rustix::mount::mount_change(
                        "/",
                        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
                    )
                    .map_err(|e| ns_err("making the namespace private", e))?;
                    let tmpfs_flags = MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
                    rustix::mount::mount("tmpl", &par, "tmpfs", tmpfs_flags, Some(c"mode=0700,size=64k"))
                        .map_err(|e| ns_err("mounting a private tmpfs for the mount point", e))?;
                    std::fs::create_dir(&tgt)
                        .map_err(|source| MountError::MountPoint { parent: par.clone(), source })?;
                    rustix::mount::mount(&dev, &tgt, FSTYPE, flags, None).map_err(|e| MountError::Mount {
                        image: img.clone(),
                        device: dev.clone(),
                        target: tgt.clone(),
                        source: io::Error::from_raw_os_error(e.raw_os_error()),
                        hint: MountError::mount_hint(e),
                    })?;
                    Ok(())
                })();
                let failed = setup.is_err();
                let _ = ready_tx.send(setup.map(|()| rustix::thread::gettid().as_raw_nonzero().get()));
                if failed {
                    // The namespace (and anything mounted in it) goes with the thread.
                    return;
                }
                // Wait for the unmount request; a dropped sender (the guard is gone) means the same.
                let reply = match req_rx.recv() {
                    Ok(Request::Unmount(reply)) => Some(reply),
                    Err(_) => None,
                };
                let result = unmount_with_retries(&tgt);
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            })
            .map_err(|source| MountError::MountPoint { parent: parent.to_path_buf(), source })?;
        let tid = match ready_rx.recv() {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(MountError::Namespace {
                    image: image.to_path_buf(),
                    what: "the mount thread",
                    source: io::Error::other("it ended before mounting"),
                });
            }
        };
        let task = PathBuf::from(format!("/proc/{}/task/{tid}", std::process::id()));
        let path = task.join("root").join(target.strip_prefix("/").unwrap_or(&target));
        Ok(Namespace {
            requests: Some(req_tx),
            thread: Some(thread),
            target,
            path,
            mountinfo: task.join("mountinfo"),
            task,
        })
    }

    /// Ask the thread to unmount and wait for it to end.
    fn unmount(&mut self) -> Result<(), UnmountFailure> {
        let Some(tx) = self.requests.take() else { return Ok(()) };
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = tx.send(Request::Unmount(reply_tx)).is_ok();
        let result = if sent { reply_rx.recv().unwrap_or(Ok(())) } else { Ok(()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            // A join returns when the thread has left user space; the kernel tears its
            // namespace down a moment later, before the task leaves /proc. Wait for that, so
            // nothing of the namespace is left when this returns.
            let start = Instant::now();
            while self.task.exists() && start.elapsed() < RELEASE_WAIT {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        result
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// `umount2(target)`, retrying while busy, then lazily (`MNT_DETACH`).
fn unmount_with_retries(target: &Path) -> Result<(), UnmountFailure> {
    let mut attempt = 0;
    loop {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::BUSY) if attempt < BUSY_BACKOFF_MS.len() => {
                std::thread::sleep(Duration::from_millis(BUSY_BACKOFF_MS[attempt]));
                attempt += 1;
            }
            Err(Errno::BUSY) => {
                return match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH) {
                    Ok(()) => Err(UnmountFailure::Busy),
                    Err(e) => Err(UnmountFailure::Failed(io::Error::from_raw_os_error(e.raw_os_error()))),
                };
            }
            Err(e) => return Err(UnmountFailure::Failed(io::Error::from_raw_os_error(e.raw_os_error()))),
        }
    }
}

/// A mounted image. Dropping it unmounts; [`Mounted::unmount`] does it with error reporting.
#[derive(Debug)]
pub struct Mounted {
    image: PathBuf,
    device: PathBuf,
    /// Device number of the mounted filesystem (to find who keeps it busy).
    fs_dev: u64,
    read_only: bool,
    timings: MountTimings,
    /// `Some` until unmounted.
    ns: Option<Namespace>,
    /// `Some` until released; dropped after the unmount, so autoclear frees the device then.
    loop_dev: Option<LoopDevice>,
}

/// Attach `image` to an autoclear loop device and mount its ext4 filesystem in a private mount
/// namespace (see the module documentation and [`MountOptions`]; `parent` names the directory
/// the mount point appears in inside the namespace).
///
/// Checks the superblock first (ext4 magic, size, and for read-only a journal that needs no
/// recovery), so a wrong file fails before any device is touched. On every error nothing is
/// left behind: no loop device, no mount.
pub fn mount_image(image: &Path, opts: &MountOptions) -> Result<Mounted, MountError> {
    precheck(image, opts)?;
    let parent = match &opts.parent {
        Some(p) => p.clone(),
        None => std::env::temp_dir(),
    };
    let parent =
        std::fs::canonicalize(&parent).map_err(|source| MountError::MountPoint { parent: parent.clone(), source })?;

    let t0 = Instant::now();
    let loop_dev = LoopDevice::attach(
        image,
        &LoopOptions {
            read_only: opts.read_only,
            offset: opts.offset,
            size_limit: opts.size_limit,
            force_legacy: opts.force_legacy_loop,
        },
    )?;
    let attach = t0.elapsed();

    let t1 = Instant::now();
    // On failure `loop_dev` drops here: the fd closes and autoclear unbinds the never-mounted
    // device; the namespace went with its thread.
    let ns = Namespace::start(loop_dev.path(), loop_dev.image(), &parent, opts.flags())?;
    let mount = t1.elapsed();

    let mut m = Mounted {
        image: loop_dev.image().to_path_buf(),
        device: loop_dev.path().to_path_buf(),
        fs_dev: 0,
        read_only: opts.read_only,
        timings: MountTimings { attach, mount },
        ns: Some(ns),
        loop_dev: Some(loop_dev),
    };
    // From here on `m`'s Drop unmounts on any error.
    m.fs_dev = std::fs::metadata(m.path()).map(|md| md.dev()).map_err(|source| MountError::Mount {
        image: m.image.clone(),
        device: m.device.clone(),
        target: m.path().to_path_buf(),
        source,
        hint: "the mount cannot be reached through /proc/<pid>/task/<tid>/root",
    })?;
    Ok(m)
}

/// Superblock checks before anything is attached.
fn precheck(image: &Path, opts: &MountOptions) -> Result<(), MountError> {
    let dev = Device::plain_file(image)
        .map_err(|e| MountError::ReadImage { image: image.to_path_buf(), message: e.to_string() })?;
    let size = dev.size();
    let mut sb = [0u8; 1024];
    let at = opts.offset.saturating_add(1024);
    if at.saturating_add(1024) > size {
        return Err(MountError::NotExt4 {
            image: image.to_path_buf(),
            offset: opts.offset,
            reason: format!("the file is too small ({size} bytes) to hold a superblock"),
        });
    }
    dev.read_exact_at(&mut sb, at)
        .map_err(|e| MountError::ReadImage { image: image.to_path_buf(), message: e.to_string() })?;
    let sb = Superblock::parse(&sb).map_err(|e| MountError::NotExt4 {
        image: image.to_path_buf(),
        offset: opts.offset,
        reason: e.to_string(),
    })?;
    let mut available = size - opts.offset;
    if opts.size_limit != 0 {
        available = available.min(opts.size_limit);
    }
    if sb.fs_bytes() > available {
        return Err(MountError::Truncated {
            image: image.to_path_buf(),
            offset: opts.offset,
            fs_bytes: sb.fs_bytes(),
            available,
        });
    }
    if opts.read_only && sb.needs_recovery() {
        return Err(MountError::NeedsRecovery { image: image.to_path_buf() });
    }
    Ok(())
}

impl Mounted {
    /// The root of the mounted filesystem, reachable from any thread of this process (through
    /// the namespace thread's root: `/proc/<pid>/task/<tid>/root/<tmp>/tmpl-mount-<pid>`).
    pub fn path(&self) -> &Path {
        match &self.ns {
            Some(ns) => &ns.path,
            None => Path::new(""),
        }
    }

    /// The mount point as the private namespace sees it (for messages).
    pub fn mount_point(&self) -> &Path {
        match &self.ns {
            Some(ns) => &ns.target,
            None => Path::new(""),
        }
    }

    /// Is the filesystem mounted in the private namespace (its mount table lists it)? False
    /// once unmounted: the namespace is gone with its thread.
    pub fn is_mounted(&self) -> bool {
        let Some(ns) = &self.ns else { return false };
        std::fs::read_to_string(&ns.mountinfo)
            .is_ok_and(|t| t.lines().filter_map(|l| l.split_whitespace().nth(4)).any(|mp| Path::new(mp) == ns.target))
    }

    /// The host path of a guest path (`/usr/bin/envd` → `<mount>/usr/bin/envd`), with every
    /// directory on the way resolved *inside* the image: an absolute symlink such as
    /// `/sbin -> /usr/sbin` in the guest points into the mount, never at the host's `/usr/sbin`.
    /// The last component is not followed, so a symlink there can be replaced or read itself.
    pub fn resolve(&self, guest: &str) -> Result<PathBuf, MountError> {
        resolve_in_root(self.path(), guest).map_err(|source| MountError::Resolve {
            image: self.image.clone(),
            guest: guest.to_string(),
            source,
        })
    }

    /// The image (canonical path).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// `/dev/loopN`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Which loop ioctls were used; [`AttachMethod::note`] has the text for a report.
    pub fn attach_method(&self) -> Option<AttachMethod> {
        self.loop_dev.as_ref().map(LoopDevice::method)
    }

    pub fn timings(&self) -> MountTimings {
        self.timings
    }

    /// Sync, unmount, end the namespace, and wait until the loop device is released.
    /// `Ok(())` means every write reached the image file and nothing holds it any more.
    ///
    /// On failure the guard's cleanup still happens (a busy mount is detached lazily, the
    /// namespace ends, our loop fd is closed) and the error says what is left and why.
    pub fn unmount(mut self) -> Result<(), MountError> {
        let synced = self.sync();
        let unmounted = self.teardown(true);
        let released = match self.loop_dev.take() {
            Some(l) => {
                let (device, image, id) = (l.path().to_path_buf(), l.image().to_path_buf(), l.image_id());
                drop(l);
                // After a lazy detach the holders keep the device; don't wait for them.
                if unmounted.is_ok() {
                    wait_released(&device, &image, id, RELEASE_WAIT).map_err(MountError::from)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        };
        synced.and(unmounted).and(released)
    }

    /// `syncfs(2)` the mounted filesystem: reports write-back errors (EIO, ENOSPC) that a plain
    /// unmount would swallow.
    pub fn sync(&self) -> Result<(), MountError> {
        if self.read_only {
            return Ok(());
        }
        let err = |source| MountError::Sync { image: self.image.clone(), target: self.path().to_path_buf(), source };
        let dir = File::open(self.path()).map_err(err)?;
        rustix::fs::syncfs(&dir).map_err(|e| err(io::Error::from_raw_os_error(e.raw_os_error())))
    }

    /// Unmount (the namespace thread retries while busy, then detaches lazily) and end the
    /// namespace. `report`: collect the holders of a busy mount for the error (the explicit
    /// path); Drop skips that work.
    fn teardown(&mut self, report: bool) -> Result<(), MountError> {
        let Some(mut ns) = self.ns.take() else { return Ok(()) };
        let target = ns.target.clone();
        match ns.unmount() {
            Ok(()) => Ok(()),
            // Detached lazily: the filesystem lives on while its holders keep files open, so
            // they can still be found by its device number.
            Err(UnmountFailure::Busy) => Err(MountError::Busy {
                image: self.image.clone(),
                device: self.device.clone(),
                target,
                holders: if report { holders_on_fs(self.fs_dev).unwrap_or_default() } else { Vec::new() },
            }),
            Err(UnmountFailure::Failed(source)) => {
                Err(MountError::Unmount { image: self.image.clone(), target, source })
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Best effort and silent: Drop may run while a panic unwinds. The explicit path is
        // `unmount()`.
        let _ = self.teardown(false);
        // Closing the last fd lets autoclear release the device (at once, or when the holders
        // of a lazily detached mount close their files).
        self.loop_dev.take();
    }
}

/// A tmpl mount in the host's mount namespace: what tmpl versions that mounted there (before
/// the private namespace) leave when killed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostMount {
    pub target: PathBuf,
    pub device: PathBuf,
    /// The loop device's backing file, when it still has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing: Option<PathBuf>,
    /// The backing file was deleted while mounted.
    pub backing_deleted: bool,
}

/// Mounts in this process's mount namespace whose mount point is a `tmpl-mount-*` directory and
/// whose source is a loop device.
pub fn host_mounts() -> io::Result<Vec<HostMount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_host_mounts(&text)
        .into_iter()
        .map(|(target, device)| {
            let (backing, backing_deleted) = super::loopdev::backing_file(&device);
            HostMount { target, device, backing, backing_deleted }
        })
        .collect())
}

fn parse_host_mounts(text: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mp) = left.split_whitespace().nth(4) else { continue };
        let target = PathBuf::from(super::inuse::unescape_octal(mp));
        let is_ours = target.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TARGET_PREFIX));
        let mut r = right.split_whitespace();
        let (fstype, source) = (r.next(), r.next());
        if is_ours
            && fstype == Some(FSTYPE)
            && let Some(src) = source.filter(|s| s.starts_with("/dev/loop"))
        {
            out.push((target, PathBuf::from(src)));
        }
    }
    out
}

/// Remove a stale host mount: unmount it (lazily when busy), remove its empty directory, and
/// unbind the loop device if nothing released it (a pre-5.8 kernel's legacy bind without
/// autoclear). The caller decides that it is stale.
pub fn remove_host_mount(m: &HostMount) -> Result<(), MountError> {
    let unmounted = match unmount_with_retries(&m.target) {
        Ok(()) | Err(UnmountFailure::Busy) => Ok(()),
        Err(UnmountFailure::Failed(source)) if source.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
            // Not mounted (any more).
            if is_mount_point(&m.target).unwrap_or(true) {
                Err(MountError::Unmount {
                    image: m.backing.clone().unwrap_or_default(),
                    target: m.target.clone(),
                    source,
                })
            } else {
                Ok(())
            }
        }
        Err(UnmountFailure::Failed(source)) => {
            Err(MountError::Unmount { image: m.backing.clone().unwrap_or_default(), target: m.target.clone(), source })
        }
    };
    unmounted?;
    // Never recursive: a directory that still holds anything is left alone.
    let _ = std::fs::remove_dir(&m.target);
    super::loopdev::clear_if_bound(&m.device, m.backing.as_deref()).map_err(MountError::from)
}

/// Symlinks followed at most while resolving one guest path (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// Resolve the directories of `guest` under `root` as if `root` were `/` (chroot semantics: an
/// absolute symlink restarts at `root`, `..` stops at `root`). The last component is joined as
/// is. Fails on a symlink loop, on a non-directory in the middle, and on a path without a final
/// name (`/`, `..`).
pub fn resolve_in_root(root: &Path, guest: &str) -> io::Result<PathBuf> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;

    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let guest_path = Path::new(guest);
    let name = match guest_path.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => return Err(invalid(format!("{guest:?} does not end in a file name"))),
    };
    let parent = guest_path.parent().unwrap_or(Path::new(""));
    let mut todo: VecDeque<OsString> = VecDeque::new();
    let push_front = |todo: &mut VecDeque<OsString>, p: &Path| {
        let parts: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        for part in parts.into_iter().rev() {
            todo.push_front(part);
        }
    };
    push_front(&mut todo, parent);
    let mut resolved = root.to_path_buf();
    let mut depth = 0usize;
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            if depth > 0 {
                resolved.pop();
                depth -= 1;
            }
            continue;
        }
        let next = resolved.join(&part);
        let md = std::fs::symlink_metadata(&next)?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(io::Error::from_raw_os_error(Errno::LOOP.raw_os_error()));
            }
            let target = std::fs::read_link(&next)?;
            if target.is_absolute() {
                resolved = root.to_path_buf();
                depth = 0;
            }
            push_front(&mut todo, &target);
        } else if md.is_dir() {
            resolved = next;
            depth += 1;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!(
                    "{} is not a directory",
                    Path::new("/").join(next.strip_prefix(root).unwrap_or(&next)).display()
                ),
            ));
        }
    }
    Ok(resolved.join(name))
}

/// One attach + mount + unmount cycle, timed (for benchmarks and the tests' report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CycleTimings {
    pub attach: Duration,
    pub mount: Duration,
    /// syncfs + unmount + loop release.
    pub unmount: Duration,
    pub total: Duration,
}

/// Mount `image`, unmount it at once, and say how long each step took.
pub fn time_cycle(image: &Path, opts: &MountOptions) -> Result<CycleTimings, MountError> {
    let start = Instant::now();
    let m = mount_image(image, opts)?;
    let MountTimings { attach, mount } = m.timings();
    let t = Instant::now();
    m.unmount()?;
    Ok(CycleTimings { attach, mount, unmount: t.elapsed(), total: start.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::inuse::Access;

    #[test]
    fn default_flags() {
        let rw = MountOptions::read_write().flags();
        assert!(rw.contains(MountFlags::NOATIME | MountFlags::NODEV | MountFlags::NOSUID));
        assert!(!rw.contains(MountFlags::RDONLY));
        assert!(MountOptions::read_only().flags().contains(MountFlags::RDONLY));
    }

    #[test]
    fn eperm_says_root_or_debugfs() {
        let h = MountError::mount_hint(Errno::PERM);
        assert!(h.contains("CAP_SYS_ADMIN") && h.contains("--backend debugfs"), "{h}");
        assert!(MountError::mount_hint(Errno::INVAL).contains("dmesg"));
        assert!(MountError::mount_hint(Errno::NODEV).contains("modprobe ext4"));
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let env: Error = MountError::Mount {
            image: "/s/rootfs.ext4".into(),
            device: "/dev/loop3".into(),
            target: "/tmp/tmpl-mount-x".into(),
            source: io::Error::from_raw_os_error(Errno::PERM.raw_os_error()),
            hint: MountError::mount_hint(Errno::PERM),
        }
        .into();
        assert_eq!(env.exit_code(), crate::exit_code::ENVIRONMENT);
        let msg = env.to_string();
        for part in ["/s/rootfs.ext4", "/dev/loop3", "/tmp/tmpl-mount-x", "--backend debugfs"] {
            assert!(msg.contains(part), "{part} missing from {msg}");
        }
        let busy: Error = MountError::Busy {
            image: "/i".into(),
            device: "/dev/loop1".into(),
            target: "/t".into(),
            holders: vec![Holder { pid: 42, comm: "sh".into(), path: "/t/x".into(), access: Access::Open }],
        }
        .into();
        assert_eq!(busy.exit_code(), crate::exit_code::ENVIRONMENT);
        assert!(busy.to_string().contains("sh (pid 42) /t/x"), "{busy}");
        let bad: Error = MountError::NotExt4 { image: "/i".into(), offset: 0, reason: "x".into() }.into();
        assert_eq!(bad.exit_code(), crate::exit_code::INVALID_INPUT);
    }

    #[test]
    fn a_non_ext4_file_is_refused_before_any_device_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("not-ext4.img");
        std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
        let parent = dir.path().join("mnt");
        std::fs::create_dir(&parent).unwrap();
        let opts = MountOptions { parent: Some(parent.clone()), ..MountOptions::default() };
        let e = mount_image(&img, &opts).unwrap_err();
        assert!(matches!(e, MountError::NotExt4 { .. }), "{e:?}");
        assert!(e.to_string().contains("not-ext4.img") && e.to_string().contains("0xef53"), "{e}");
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, b"x").unwrap();
        assert!(matches!(mount_image(&tiny, &opts).unwrap_err(), MountError::NotExt4 { .. }));
    }

    #[test]
    fn guest_paths_resolve_inside_the_root() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/file"), b"").unwrap();
        // Absolute and relative directory links, a loop, and a link as the last component.
        symlink("/usr/sbin", root.join("sbin")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("../../..", root.join("usr/sbin/up")).unwrap();
        symlink("/loop2", root.join("loop1")).unwrap();
        symlink("/loop1", root.join("loop2")).unwrap();
        symlink("/usr/bin/envd", root.join("usr/sbin/init")).unwrap();
        let r = |g: &str| resolve_in_root(&root, g);
        assert_eq!(r("/sbin/init").unwrap(), root.join("usr/sbin/init"));
        assert_eq!(r("sbin/init").unwrap(), root.join("usr/sbin/init"));
        assert_eq!(r("/bin/envd").unwrap(), root.join("usr/bin/envd"));
        // `..` and a link climbing out stop at the root (the host's /etc is never reached).
        assert_eq!(r("/sbin/up/etc/x").unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::create_dir(root.join("etc")).unwrap();
        assert_eq!(r("/../../etc/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(r("/sbin/up/etc/x").unwrap(), root.join("etc/x"));
        assert_eq!(r("/loop1/x").unwrap_err().raw_os_error(), Some(Errno::LOOP.raw_os_error()));
        assert_eq!(r("/usr/bin/file/x").unwrap_err().kind(), io::ErrorKind::NotADirectory);
        for bad in ["/", "", "/usr/.."] {
            assert_eq!(r(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn host_mounts_are_tmpl_mount_points_on_loop_devices() {
        let text = "36 35 7:0 / /tmp/tmpl-mount-AbC123 rw,noatime shared:1 - ext4 /dev/loop3 rw\n\
                    37 35 7:1 / /tmp/other rw - ext4 /dev/loop4 rw\n\
                    38 35 0:5 / /tmp/tmpl-mount-x rw - tmpfs tmpl rw\n\
                    39 35 7:2 / /var/tmp/tmpl-mount-with\\040space rw - ext4 /dev/loop5 rw\n";
        assert_eq!(
            parse_host_mounts(text),
            vec![
                (PathBuf::from("/tmp/tmpl-mount-AbC123"), PathBuf::from("/dev/loop3")),
                (PathBuf::from("/var/tmp/tmpl-mount-with space"), PathBuf::from("/dev/loop5")),
            ]
        );
    }
}
