//! What the running system says about files: which processes hold them open or mapped, who holds
//! an `flock` on them, and whether an image backs a loop device or a mount. Read from `/proc` and
//! `/sys` only; nothing here takes a lock, opens a device or changes anything.
//!
//! Used by the safety guards of the mutating commands (an image in use is never edited, a cache
//! entry in use is never deleted) and by `purge-cache`'s liveness probe of the orchestrator lock.

pub mod inuse;

pub use inuse::{FileId, Holder, LoopUse, flock_holders, holders, loop_uses};
