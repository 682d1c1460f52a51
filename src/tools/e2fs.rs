//! e2fsprogs: `mkfs.ext4 -d` to build images from a directory tree (demo, tests) and
//! `e2fsck -fn` as the read-only oracle of filesystem health.

use std::path::Path;
use std::process::Command;

use super::{Result, ToolError, find, run, tail};

/// Options for a reproducible image.
#[derive(Debug, Clone)]
pub struct MkfsOptions<'a> {
    /// Filesystem UUID and hash seed (pinned for reproducible images).
    pub uuid: &'a str,
    pub label: &'a str,
    /// Image size in bytes (a multiple of the block size).
    pub size: u64,
    /// Extra `-O` features (e.g. "^has_journal").
    pub features: Option<&'a str>,
}

/// `mkfs.ext4 -q -F -d <src> -U <uuid> -E hash_seed=<uuid> -L <label> -b 4096 <image> <size>K`.
/// The image file is created (or truncated) at `size` bytes.
pub fn mkfs_from_dir(src: &Path, image: &Path, opts: &MkfsOptions) -> Result<()> {
    let mkfs = find("mkfs.ext4", "e2fsprogs")?;
    let f = std::fs::File::create(image).map_err(|e| ToolError::write(image, e))?;
    f.set_len(opts.size).map_err(|e| ToolError::write(image, e))?;
    drop(f);
    let mut cmd = Command::new(mkfs);
    cmd.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", opts.uuid, "-E"])
        .arg(format!("hash_seed={}", opts.uuid))
        .args(["-L", opts.label, "-d"])
        .arg(src);
    if let Some(feat) = opts.features {
        cmd.args(["-O", feat]);
    }
    cmd.arg(image);
    cmd.env("E2FSPROGS_FAKE_TIME", "1700000000");
    let out = run("mkfs.ext4", &mut cmd)?;
    if !out.status.success() {
        return Err(ToolError::failed("mkfs.ext4", tail(&out, 5)));
    }
    Ok(())
}

/// Result of a read-only `e2fsck -fn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckResult {
    /// Exit status 0: no errors.
    pub clean: bool,
    pub status: i32,
    pub output: String,
}

/// `e2fsck -fn <image>`: read-only full check. Exit 0 = clean; 4 = errors left uncorrected
/// (what -n reports for any problem); 8 = operational error.
pub fn fsck_readonly(image: &Path) -> Result<FsckResult> {
    let e2fsck = find("e2fsck", "e2fsprogs")?;
    let out = run("e2fsck", Command::new(e2fsck).args(["-fn"]).arg(image))?;
    let status = out.status.code().unwrap_or(-1);
    if status >= 8 {
        return Err(ToolError::failed("e2fsck", format!("exit {status}: {}", tail(&out, 5))));
    }
    Ok(FsckResult { clean: status == 0, status, output: tail(&out, 20) })
}

/// Replay a dirty journal (`e2fsck -y -E journal_only`), nothing else. Used on a work copy only,
/// before debugfs writes into it (debugfs ignores the journal, and a later replay would undo its
/// writes). Exit 0/1 mean done; anything else is an error.
pub fn replay_journal(image: &Path) -> Result<()> {
    let e2fsck = find("e2fsck", "e2fsprogs")?;
    let out = run("e2fsck", Command::new(e2fsck).args(["-y", "-E", "journal_only"]).arg(image))?;
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        code => Err(ToolError::failed("e2fsck", format!("journal replay: exit {code:?}: {}", tail(&out, 5)))),
    }
}
