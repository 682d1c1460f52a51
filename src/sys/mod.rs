//! What the running system says about files: which processes hold them open or mapped, who holds
//! an `flock` on them, and whether an image backs a loop device or a mount. Read from `/proc` and
//! `/sys` only; nothing in `inuse` takes a lock, opens a device or changes anything.
//!
//! `loopdev` and `mount` (root only) attach an image to an autoclear loop device and mount it
//! behind a guard that always unmounts: the kernel-mount write backend's building block.
//!
//! Used by the safety guards of the mutating commands (an image in use is never edited, a cache
//! entry in use is never deleted) and by `purge-cache`'s liveness probe of the orchestrator lock.

pub mod inuse;
pub mod loopdev;
pub mod mount;

pub use inuse::{
    FileId, Holder, LoopUse, flock_holders, holders, holders_of, holders_on_fs, is_mount_point, lock_holders, loop_uses,
};
pub use loopdev::{AttachMethod, LoopDevice, LoopError, LoopOptions, LoopStatus};
pub use mount::{CycleTimings, MountError, MountOptions, MountTimings, Mounted, mount_image, time_cycle};

/// Write a file by writing a temporary sibling and renaming it into place (and truncating: E2B's
/// Local provider does not truncate when it rewrites).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> crate::error::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| crate::error::Error::write(dir, e))?;
    tmp.write_all(bytes).map_err(|e| crate::error::Error::write(path, e))?;
    // E2B's Local provider writes 0644; a temp file starts at 0600.
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| crate::error::Error::write(path, e))?;
    tmp.as_file().sync_all().map_err(|e| crate::error::Error::write(path, e))?;
    tmp.persist(path).map_err(|e| crate::error::Error::write(path, e.error))?;
    Ok(())
}
