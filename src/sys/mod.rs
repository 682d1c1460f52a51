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
