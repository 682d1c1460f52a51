//! Editing a build's rootfs: `inject-envd` and `rewrite-wrapper`. Plans first (`plan`: what to
//! write, decided from the image read through the layered device, with the safety guards), then
//! one transactional `apply` (edit a copy with debugfs or a kernel mount, verify it with the same
//! checks `verify` runs, rename it into place with a backup through a journaled `commit` — or
//! write a new build for `--fork`; `publish` stages a fork bound for a remote storage and copies it
//! there). `backups` and `leftovers` list, restore and clean what edits
//! keep and what killed runs leave; `fault` is the tests' fault-injection hook. Never prints; the
//! commands render plans and results.

pub mod apply;
pub mod backups;
pub mod commit;
pub mod envd_file;
pub mod fault;
pub mod inject;
pub mod leftovers;
pub mod manifest;
pub mod plan;
pub mod publish;
pub mod render;

pub use apply::{Applied, BuildLock, apply, apply_fork_to, lock_build};
pub use plan::{Backend, Change, EditOptions, Mode, ModeChoice, Plan, Target};
