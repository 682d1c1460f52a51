//! Loop devices without libclang: `/dev/loop-control` + `LOOP_CONFIGURE` through rustix's typed
//! ioctl module (see ../shared/reference/dependencies.md §2–3 for why not loopdev/sys-mount).
//!
//! [`LoopDevice::attach`] takes a free device (`LOOP_CTL_GET_FREE`, retried when another process
//! wins the race for it), binds the image to it in one step with `LOOP_CONFIGURE` (kernel ≥ 5.8)
//! and always sets `LO_FLAGS_AUTOCLEAR`: the kernel unbinds the device by itself when its last
//! opener goes — after the filesystem is unmounted *and* the [`LoopDevice`] (which holds an fd on
//! it) is dropped. A crash therefore cannot leave a device bound once the mount is gone.
//!
//! On kernels without `LOOP_CONFIGURE` it falls back to `LOOP_SET_FD` + `LOOP_SET_STATUS64` and
//! says so in [`LoopDevice::method`]: between those two calls the device is bound without
//! autoclear, so a crash in that window leaves it bound (`losetup -d` releases it).
//!
//! All `unsafe` of the crate's loop support is in the private `raw` module below.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::error::Error;

/// The loop control device.
pub const LOOP_CONTROL: &str = "/dev/loop-control";

/// How many times a free device is requested before giving up (each attempt can lose the race
/// to another process between `LOOP_CTL_GET_FREE` and binding).
const ATTACH_ATTEMPTS: u32 = 32;

/// What to attach and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Bind read-only: the image is opened `O_RDONLY` and the device refuses writes.
    pub read_only: bool,
    /// Byte offset of the filesystem inside the image file.
    pub offset: u64,
    /// Size limit in bytes from `offset` (0 = to the end of the file).
    pub size_limit: u64,
    /// Use `LOOP_SET_FD` + `LOOP_SET_STATUS64` even when `LOOP_CONFIGURE` works (tests of the
    /// fallback path; normally it is chosen only on kernels older than 5.8).
    pub force_legacy: bool,
}

/// Which ioctls bound the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMethod {
    /// `LOOP_CONFIGURE`: file, offset, size limit and flags set atomically (kernel ≥ 5.8).
    Configure,
    /// `LOOP_SET_FD` then `LOOP_SET_STATUS64`: autoclear is set in a second step.
    Legacy,
}

impl AttachMethod {
    /// A note for reports when the fallback was used.
    pub fn note(self) -> Option<&'static str> {
        match self {
            AttachMethod::Configure => None,
            AttachMethod::Legacy => Some(
                "the kernel has no LOOP_CONFIGURE (older than 5.8): the loop device was bound with \
                 LOOP_SET_FD and autoclear set afterwards with LOOP_SET_STATUS64; a crash between the \
                 two would leave it bound (release it with `losetup -d`)",
            ),
        }
    }
}

/// Why a loop device could not be attached, queried or detached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(
        "cannot use {LOOP_CONTROL} to attach {}: {source}; the mount backend needs root (CAP_SYS_ADMIN): \
         run as root or use --backend debugfs",
        image.display()
    )]
    NotPermitted {
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no loop device support: cannot open {LOOP_CONTROL} ({source}); load the driver (`modprobe loop`), \
         give the container the loop devices, or use --backend debugfs"
    )]
    NoLoopControl {
        #[source]
        source: io::Error,
    },
    #[error("cannot open image {} ({}): {source}", image.display(), if *read_only { "read-only" } else { "read-write" })]
    OpenImage {
        image: PathBuf,
        read_only: bool,
        #[source]
        source: io::Error,
    },
    #[error("cannot open loop device {} for {}: {source}", device.display(), image.display())]
    OpenDevice {
        device: PathBuf,
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no free loop device for {} after {ATTACH_ATTEMPTS} attempts (last: {source}); detach unused ones \
         (`losetup -a`, `losetup -d /dev/loopN`) or raise max_loop",
        image.display()
    )]
    NoFreeDevice {
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind {} to {} with {op}: {source}", image.display(), device.display())]
    Bind {
        op: &'static str,
        image: PathBuf,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the status of {}: {source}", device.display())]
    Status {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot detach {} from {}: {source}", device.display(), image.display())]
    Detach {
        device: PathBuf,
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} still backs {} after {:?}: something else holds the device open (see `losetup -a`, `fuser -vm {}`)",
        image.display(), device.display(), waited, device.display()
    )]
    NotReleased { device: PathBuf, image: PathBuf, waited: Duration },
}

impl From<LoopError> for Error {
    fn from(e: LoopError) -> Error {
        Error::environment(e)
    }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::PERM.raw_os_error() || c == Errno::ACCESS.raw_os_error())
}

/// What the kernel reports about a bound device (`LOOP_GET_STATUS64`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoopStatus {
    /// Device and inode of the backing file.
    pub backing_dev: u64,
    pub backing_ino: u64,
    pub offset: u64,
    pub size_limit: u64,
    pub read_only: bool,
    pub autoclear: bool,
}

/// A bound loop device. Holds an fd on it; dropping the guard closes the fd, and the kernel
/// releases the device once nothing else (a mount) has it open (autoclear).
#[derive(Debug)]
pub struct LoopDevice {
    fd: File,
    number: u32,
    path: PathBuf,
    image: PathBuf,
    image_id: (u64, u64),
    read_only: bool,
    method: AttachMethod,
}

impl LoopDevice {
    /// Bind `image` to a free loop device with autoclear set.
    pub fn attach(image: &Path, opts: &LoopOptions) -> Result<LoopDevice, LoopError> {
        let backing =
            OpenOptions::new().read(true).write(!opts.read_only).open(image).map_err(|source| {
                LoopError::OpenImage { image: image.to_path_buf(), read_only: opts.read_only, source }
            })?;
        let meta = backing.metadata().map_err(|source| LoopError::OpenImage {
            image: image.to_path_buf(),
            read_only: opts.read_only,
            source,
        })?;
        let image_id = (meta.dev(), meta.ino());
        let control = OpenOptions::new().read(true).write(true).open(LOOP_CONTROL).map_err(|source| {
            if is_permission(&source) {
                LoopError::NotPermitted { image: image.to_path_buf(), source }
            } else {
                LoopError::NoLoopControl { source }
            }
        })?;
        let name = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());

        let kernel = kernel_version(&rustix::system::uname().release().to_string_lossy());
        let mut last: Option<io::Error> = None;
        for _ in 0..ATTACH_ATTEMPTS {
            let number = raw::get_free(&control).map_err(|e| {
                let source = errno_io(e);
                if is_permission(&source) {
                    LoopError::NotPermitted { image: image.to_path_buf(), source }
                } else {
                    LoopError::NoFreeDevice { image: image.to_path_buf(), source }
                }
            })?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            // The device must be opened for writing for the kernel to bind it read-write
            // (loop_configure marks the device read-only when the opener is read-only).
            let dev = match open_device(&path, !opts.read_only) {
                Ok(f) => f,
                // Freshly created by GET_FREE and its node not there yet, or taken and removed
                // by someone else: ask again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(source) => return Err(LoopError::OpenDevice { device: path, image: image.to_path_buf(), source }),
            };
            let info = raw::LoopInfo64::new(opts.offset, opts.size_limit, flags(opts.read_only), name.as_os_str());
            let bound = if opts.force_legacy || kernel.is_some_and(|v| v < (5, 8)) {
                legacy_bind(&dev, &backing, &info).map(|()| AttachMethod::Legacy)
            } else {
                match raw::configure(&dev, &backing, &info) {
                    Ok(()) => Ok(AttachMethod::Configure),
                    // Kernels before 5.8 answer the unknown ioctl with EINVAL (or ENOTTY); only
                    // when the version is unknown is that taken as "not supported".
                    Err(Errno::INVAL | Errno::NOTTY) if kernel.is_none() => {
                        legacy_bind(&dev, &backing, &info).map(|()| AttachMethod::Legacy)
                    }
                    Err(e) => Err(("LOOP_CONFIGURE", e)),
                }
            };
            match bound {
                Ok(method) => {
                    let fd = if opts.read_only {
                        dev
                    } else {
                        // Keep only a read-only fd on the device from here on, so that a kernel
                        // built without CONFIG_BLK_DEV_WRITE_MOUNTED still lets us mount it. The
                        // new fd is opened before the old one is closed: closing the last opener
                        // would trigger autoclear.
                        let ro = open_device(&path, false).map_err(|source| LoopError::OpenDevice {
                            device: path.clone(),
                            image: name.clone(),
                            source,
                        })?;
                        drop(dev);
                        ro
                    };
                    return Ok(LoopDevice {
                        fd,
                        number,
                        path,
                        image: name,
                        image_id,
                        read_only: opts.read_only,
                        method,
                    });
                }
                // Another process bound it between GET_FREE and our bind: ask again.
                Err((_, Errno::BUSY)) => {
                    last = Some(errno_io(Errno::BUSY));
                    continue;
                }
                Err((op, e)) => {
                    let source = errno_io(e);
                    return Err(if is_permission(&source) {
                        LoopError::NotPermitted { image: image.to_path_buf(), source }
                    } else {
                        LoopError::Bind { op, image: image.to_path_buf(), device: path, source }
                    });
                }
            }
        }
        Err(LoopError::NoFreeDevice {
            image: image.to_path_buf(),
            source: last.unwrap_or_else(|| errno_io(Errno::BUSY)),
        })
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// N of `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The image (canonical path) bound to the device.
    pub fn image(&self) -> &Path {
        &self.image
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Which ioctls bound the device; [`AttachMethod::note`] explains the fallback.
    pub fn method(&self) -> AttachMethod {
        self.method
    }

    /// `LOOP_GET_STATUS64`.
    pub fn status(&self) -> Result<LoopStatus, LoopError> {
        let info = raw::get_status(&self.fd)
            .map_err(|e| LoopError::Status { device: self.path.clone(), source: errno_io(e) })?;
        Ok(LoopStatus {
            backing_dev: info.lo_device,
            backing_ino: info.lo_inode,
            offset: info.lo_offset,
            size_limit: info.lo_sizelimit,
            read_only: info.lo_flags & raw::LO_FLAGS_READ_ONLY != 0,
            autoclear: info.lo_flags & raw::LO_FLAGS_AUTOCLEAR != 0,
        })
    }

    /// Unbind now (`LOOP_CLR_FD`) and wait until the device is free: for the path where the
    /// device was never mounted. With a mount still on it the kernel only marks it for autoclear.
    pub fn detach(self) -> Result<(), LoopError> {
        let r = raw::clear(&self.fd);
        let (device, image, id) = (self.path.clone(), self.image.clone(), self.image_id);
        drop(self);
        match r {
            // ENXIO: already unbound.
            Ok(()) | Err(Errno::NXIO) => wait_released(&device, &image, id, RELEASE_WAIT),
            Err(e) => Err(LoopError::Detach { device, image, source: errno_io(e) }),
        }
    }

    /// Close our fd and wait until the kernel has released the device (autoclear). Fails when
    /// another opener (a mount, a process) still keeps it bound after a short wait.
    pub fn release(self) -> Result<(), LoopError> {
        let (device, image, id) = (self.path.clone(), self.image.clone(), self.image_id);
        drop(self);
        wait_released(&device, &image, id, RELEASE_WAIT)
    }
}

/// How long [`LoopDevice::release`] waits for a transient opener (udev's probe) to let go.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

fn open_device(path: &Path, write: bool) -> io::Result<File> {
    // std opens with O_CLOEXEC.
    OpenOptions::new().read(true).write(write).open(path)
}

/// (major, minor) of a kernel release string such as `6.18.44-fc-v509`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn flags(read_only: bool) -> u32 {
    raw::LO_FLAGS_AUTOCLEAR | if read_only { raw::LO_FLAGS_READ_ONLY } else { 0 }
}

/// `LOOP_SET_FD` then `LOOP_SET_STATUS64` (offset, size limit, autoclear). Read-only comes from
/// the backing fd's mode here (LOOP_SET_STATUS64 cannot set it). On a status failure the device
/// is unbound again.
fn legacy_bind(dev: &File, backing: &File, info: &raw::LoopInfo64) -> Result<(), (&'static str, Errno)> {
    raw::set_fd(dev, backing).map_err(|e| ("LOOP_SET_FD", e))?;
    let mut status = *info;
    // Only AUTOCLEAR (and PARTSCAN) are settable through LOOP_SET_STATUS64.
    status.lo_flags &= raw::LO_FLAGS_AUTOCLEAR;
    if let Err(e) = raw::set_status(dev, &status) {
        let _ = raw::clear(dev);
        return Err(("LOOP_SET_STATUS64", e));
    }
    Ok(())
}

/// Does `/dev/loopN` (by sysfs) still have the file `(dev, ino)` as its backing file?
pub(crate) fn still_bound(device: &Path, image: &Path, image_id: (u64, u64)) -> bool {
    let Some(name) = device.file_name() else { return false };
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let Ok(text) = std::fs::read_to_string(&sys) else { return false };
    let text = text.trim_end_matches('\n');
    // A backing file deleted while bound shows as "<path> (deleted)".
    if Path::new(text) == image || Path::new(text.trim_end_matches(" (deleted)")) == image {
        return true;
    }
    let backing = Path::new(text);
    std::fs::metadata(backing).is_ok_and(|m| (m.dev(), m.ino()) == image_id)
}

/// The backing file of `/dev/loopN` from sysfs, and whether it was deleted while bound.
/// `(None, false)` when the device is not bound.
pub fn backing_file(device: &Path) -> (Option<PathBuf>, bool) {
    let Some(name) = device.file_name() else { return (None, false) };
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let Ok(text) = std::fs::read_to_string(&sys) else { return (None, false) };
    let text = text.trim_end_matches('\n');
    match text.strip_suffix(" (deleted)") {
        Some(t) => (Some(PathBuf::from(t)), true),
        None => (Some(PathBuf::from(text)), false),
    }
}

/// Unbind `/dev/loopN` (`LOOP_CLR_FD`) if it is still bound to `backing` (or to anything, when
/// `backing` is `None`): for devices a killed tmpl bound without autoclear. A device nothing
/// holds is released at once; one still in use is marked for autoclear by the kernel.
pub fn clear_if_bound(device: &Path, backing: Option<&Path>) -> Result<(), LoopError> {
    let (now, _) = backing_file(device);
    let Some(now) = now else { return Ok(()) };
    if backing.is_some_and(|b| b != now) {
        return Ok(());
    }
    let dev = match open_device(device, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(LoopError::OpenDevice { device: device.to_path_buf(), image: now, source }),
    };
    match raw::clear(&dev) {
        Ok(()) | Err(Errno::NXIO) | Err(Errno::BUSY) => Ok(()),
        Err(e) => Err(LoopError::Detach { device: device.to_path_buf(), image: now, source: errno_io(e) }),
    }
}

/// Poll sysfs until `device` no longer backs `image` (released, or reused for another file).
pub(crate) fn wait_released(device: &Path, image: &Path, image_id: (u64, u64), max: Duration) -> Result<(), LoopError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while still_bound(device, image, image_id) {
        if start.elapsed() >= max {
            return Err(LoopError::NotReleased {
                device: device.to_path_buf(),
                image: image.to_path_buf(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Ok(())
}

impl LoopDevice {
    /// Device/inode of the backing file (for [`wait_released`]).
    pub(crate) fn image_id(&self) -> (u64, u64) {
        self.image_id
    }

    /// Borrow the fd (for tests of the device itself).
    pub fn as_file(&self) -> &File {
        &self.fd
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The loop ioctls, their argument structs and the only `unsafe` code of the loop support.
///
/// Source of every constant and layout: the kernel's `include/uapi/linux/loop.h`.
#[expect(unsafe_code, reason = "the loop ioctls have no safe wrapper; every unsafe block here is justified")]
mod raw {
    use std::ffi::OsStr;
    use std::fs::File;
    use std::mem::{offset_of, size_of};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    use rustix::io::Errno;
    use rustix::ioctl::{Getter, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, ioctl};

    pub const LOOP_SET_FD: Opcode = 0x4C00;
    pub const LOOP_CLR_FD: Opcode = 0x4C01;
    pub const LOOP_SET_STATUS64: Opcode = 0x4C04;
    pub const LOOP_GET_STATUS64: Opcode = 0x4C05;
    pub const LOOP_CONFIGURE: Opcode = 0x4C0A;
    pub const LOOP_CTL_GET_FREE: Opcode = 0x4C82;

    pub const LO_FLAGS_READ_ONLY: u32 = 1;
    pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

    pub const LO_NAME_SIZE: usize = 64;
    pub const LO_KEY_SIZE: usize = 32;

    /// `struct loop_info64`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct LoopInfo64 {
        pub lo_device: u64,
        pub lo_inode: u64,
        pub lo_rdevice: u64,
        pub lo_offset: u64,
        pub lo_sizelimit: u64,
        pub lo_number: u32,
        pub lo_encrypt_type: u32,
        pub lo_encrypt_key_size: u32,
        pub lo_flags: u32,
        pub lo_file_name: [u8; LO_NAME_SIZE],
        pub lo_crypt_name: [u8; LO_NAME_SIZE],
        pub lo_encrypt_key: [u8; LO_KEY_SIZE],
        pub lo_init: [u64; 2],
    }

    /// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct LoopConfig {
        pub fd: u32,
        pub block_size: u32,
        pub info: LoopInfo64,
        pub reserved: [u64; 8],
    }

    // The layouts must match the kernel's byte for byte.
    const _: () = assert!(size_of::<LoopInfo64>() == 232);
    const _: () = assert!(offset_of!(LoopInfo64, lo_offset) == 24);
    const _: () = assert!(offset_of!(LoopInfo64, lo_number) == 40);
    const _: () = assert!(offset_of!(LoopInfo64, lo_flags) == 52);
    const _: () = assert!(offset_of!(LoopInfo64, lo_file_name) == 56);
    const _: () = assert!(offset_of!(LoopInfo64, lo_encrypt_key) == 184);
    const _: () = assert!(offset_of!(LoopInfo64, lo_init) == 216);
    const _: () = assert!(size_of::<LoopConfig>() == 304);
    const _: () = assert!(offset_of!(LoopConfig, info) == 8);
    const _: () = assert!(offset_of!(LoopConfig, reserved) == 240);

    impl LoopInfo64 {
        pub fn new(offset: u64, size_limit: u64, flags: u32, file_name: &OsStr) -> Self {
            let mut name = [0u8; LO_NAME_SIZE];
            // NUL-terminated, truncated like losetup does (informational only).
            let b = file_name.as_bytes();
            let n = b.len().min(LO_NAME_SIZE - 1);
            name[..n].copy_from_slice(&b[..n]);
            LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size_limit,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            }
        }
    }

    /// `LOOP_CTL_GET_FREE` returns the device number as the ioctl's return value, which none of
    /// rustix's ready-made patterns pass through.
    struct GetFree;

    // SAFETY: LOOP_CTL_GET_FREE takes no argument (the pointer is null and never dereferenced)
    // and returns a non-negative device number as the syscall result; nothing in userspace is
    // written, so IS_MUTATING is false.
    unsafe impl Ioctl for GetFree {
        type Output = u32;
        const IS_MUTATING: bool = false;
        fn opcode(&self) -> Opcode {
            LOOP_CTL_GET_FREE
        }
        fn as_ptr(&mut self) -> *mut core::ffi::c_void {
            core::ptr::null_mut()
        }
        unsafe fn output_from_ptr(out: IoctlOutput, _: *mut core::ffi::c_void) -> rustix::io::Result<u32> {
            u32::try_from(out).map_err(|_| Errno::RANGE)
        }
    }

    /// `ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)`: the number of a free (possibly new) device.
    pub fn get_free(control: &File) -> rustix::io::Result<u32> {
        // SAFETY: `control` is an open fd (of /dev/loop-control); GetFree's contract is above.
        unsafe { ioctl(control, GetFree) }
    }

    /// `ioctl(dev, LOOP_CONFIGURE, &loop_config)`.
    pub fn configure(dev: &File, backing: &File, info: &LoopInfo64) -> rustix::io::Result<()> {
        let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| Errno::BADF)?;
        let cfg = LoopConfig { fd, block_size: 0, info: *info, reserved: [0; 8] };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` through the pointer, which points
        // at `cfg` (layout asserted above) for the duration of the call; `backing` stays open
        // across the call, so the fd number in it is valid.
        unsafe { ioctl(dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(cfg)) }
    }

    /// `ioctl(dev, LOOP_SET_FD, backing_fd)`.
    pub fn set_fd(dev: &File, backing: &File) -> rustix::io::Result<()> {
        let fd = usize::try_from(backing.as_raw_fd()).map_err(|_| Errno::BADF)?;
        // SAFETY: LOOP_SET_FD takes the backing fd as a plain integer argument; `backing` is
        // open for the duration of the call.
        unsafe { ioctl(dev, IntegerSetter::<LOOP_SET_FD>::new_usize(fd)) }
    }

    /// `ioctl(dev, LOOP_SET_STATUS64, &loop_info64)`.
    pub fn set_status(dev: &File, info: &LoopInfo64) -> rustix::io::Result<()> {
        // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64` (layout asserted above) from
        // the pointer, which points at the Setter's copy for the duration of the call.
        unsafe { ioctl(dev, Setter::<LOOP_SET_STATUS64, LoopInfo64>::new(*info)) }
    }

    /// `ioctl(dev, LOOP_GET_STATUS64, &mut loop_info64)`.
    pub fn get_status(dev: &File) -> rustix::io::Result<LoopInfo64> {
        // SAFETY: LOOP_GET_STATUS64 fills a whole `struct loop_info64` (layout asserted above)
        // at the pointer, which is the Getter's own buffer of exactly that type; rustix reads it
        // back only after the call succeeded.
        unsafe { ioctl(dev, Getter::<LOOP_GET_STATUS64, LoopInfo64>::new()) }
    }

    /// `ioctl(dev, LOOP_CLR_FD)`.
    pub fn clear(dev: &File) -> rustix::io::Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { ioctl(dev, NoArg::<LOOP_CLR_FD>::new()) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The opcodes are `_IO('L', n)` (loop.h): type 'L' = 0x4C in bits 8..16, no size or
        /// direction bits.
        #[test]
        fn opcodes_are_io_l() {
            for (op, nr) in [
                (LOOP_SET_FD, 0x00),
                (LOOP_CLR_FD, 0x01),
                (LOOP_SET_STATUS64, 0x04),
                (LOOP_GET_STATUS64, 0x05),
                (LOOP_CONFIGURE, 0x0A),
                (LOOP_CTL_GET_FREE, 0x82),
            ] {
                assert_eq!(op, rustix::ioctl::opcode::none(b'L', nr));
            }
        }

        #[test]
        fn file_name_is_nul_terminated_and_truncated() {
            let long = "x".repeat(100);
            let i = LoopInfo64::new(4096, 0, LO_FLAGS_AUTOCLEAR, OsStr::new(&long));
            assert_eq!(i.lo_file_name[..63], [b'x'; 63]);
            assert_eq!(i.lo_file_name[63], 0);
            let s = LoopInfo64::new(0, 0, 0, OsStr::new("/a/b"));
            assert_eq!(&s.lo_file_name[..5], b"/a/b\0");
            assert_eq!(i.lo_offset, 4096);
            assert_eq!(i.lo_flags, LO_FLAGS_AUTOCLEAR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_always_autoclear() {
        assert_eq!(flags(false), raw::LO_FLAGS_AUTOCLEAR);
        assert_eq!(flags(true), raw::LO_FLAGS_AUTOCLEAR | raw::LO_FLAGS_READ_ONLY);
    }

    #[test]
    fn errors_name_things_and_map_to_environment() {
        let e = LoopError::NotPermitted {
            image: PathBuf::from("/s/b/rootfs.ext4"),
            source: io::Error::from_raw_os_error(Errno::PERM.raw_os_error()),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/s/b/rootfs.ext4") && msg.contains("CAP_SYS_ADMIN") && msg.contains("--backend debugfs"),
            "{msg}"
        );
        let err: Error = e.into();
        assert_eq!(err.exit_code(), crate::exit_code::ENVIRONMENT);
        let e = LoopError::NotReleased {
            device: PathBuf::from("/dev/loop7"),
            image: PathBuf::from("/i"),
            waited: Duration::from_secs(2),
        };
        assert!(e.to_string().contains("/dev/loop7"));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v509"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert!(kernel_version("5.4.0").unwrap() < (5, 8));
        assert!(kernel_version("5.10.1").unwrap() >= (5, 8));
        assert_eq!(kernel_version("weird"), None);
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn permission_errors_are_recognised() {
        assert!(is_permission(&errno_io(Errno::PERM)));
        assert!(is_permission(&errno_io(Errno::ACCESS)));
        assert!(!is_permission(&errno_io(Errno::BUSY)));
    }

    #[test]
    fn a_missing_image_is_named() {
        let e = LoopDevice::attach(Path::new("/nonexistent/rootfs.ext4"), &LoopOptions::default()).unwrap_err();
        assert!(matches!(e, LoopError::OpenImage { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/rootfs.ext4"));
    }

    #[test]
    fn an_unbound_device_is_not_still_bound() {
        assert!(!still_bound(Path::new("/dev/loop-nonexistent"), Path::new("/x"), (0, 0)));
        assert!(wait_released(Path::new("/dev/loop-nonexistent"), Path::new("/x"), (0, 0), Duration::ZERO).is_ok());
    }
}
