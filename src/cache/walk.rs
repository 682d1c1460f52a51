//! Walking and deleting cache trees without ever following a symlink.
//!
//! Everything here works relative to directory descriptors opened with `O_NOFOLLOW |
//! O_DIRECTORY` (rustix `openat`/`statat`/`unlinkat`): a symlink met anywhere is measured and
//! removed as a link, and a directory swapped for a symlink during the walk makes the open fail
//! instead of leading out of the tree. Subdirectories and batches of files are handled in
//! parallel with rayon (reference: dependencies.md §6 — parallel unlinks pay off because each
//! unlink waits on I/O, especially on filesystems mounted with `discard`).
//!
//! Sizes are *allocated* bytes (`st_blocks` × 512, what `du -B1` reports; memfiles and chunk
//! files are sparse, so apparent sizes overstate what a purge frees). Directories count, hard
//! links count once.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};

/// What a tree holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `st_blocks` × 512 over every inode (directories included, hard links once).
    pub allocated_bytes: u64,
    /// Non-directory inodes (files, symlinks, sockets...).
    pub files: u64,
    /// Directories, the top one included.
    pub dirs: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.allocated_bytes += o.allocated_bytes;
        self.files += o.files;
        self.dirs += o.dirs;
    }

    /// Inodes in all (the unit of deletion progress).
    pub fn items(&self) -> u64 {
        self.files + self.dirs
    }
}

fn blocks(st: &Stat) -> u64 {
    #[allow(clippy::unnecessary_cast)]
    let b = st.st_blocks as u64;
    b.saturating_mul(512)
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn open_dir_at(dirfd: impl AsFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Names in a directory (without `.` and `..`) with their types (`None` when the filesystem
/// does not say: the caller stats).
fn list(fd: &OwnedFd) -> io::Result<Vec<(CString, Option<FileType>)>> {
    let mut out = Vec::new();
    for e in Dir::read_from(fd)? {
        let e = e?;
        let name = e.file_name();
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        let t = e.file_type();
        out.push((name.to_owned(), (t != FileType::Unknown).then_some(t)));
    }
    Ok(out)
}

fn lstat(path: &Path) -> io::Result<Stat> {
    Ok(rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Allocated bytes, files and directories of `path`, never following symlinks (a symlink counts
/// as itself). A missing path is an error.
pub fn measure(path: &Path) -> io::Result<Usage> {
    let st = lstat(path)?;
    let seen = Mutex::new(HashSet::new());
    if !is_dir(&st) {
        return Ok(Usage { allocated_bytes: blocks(&st), files: 1, dirs: 0 });
    }
    let fd = open_dir(path)?;
    let mut u = measure_dir(&fd, &seen)?;
    u.add(Usage { allocated_bytes: blocks(&st), files: 0, dirs: 1 });
    Ok(u)
}

fn measure_dir(fd: &OwnedFd, seen: &Mutex<HashSet<(u64, u64)>>) -> io::Result<Usage> {
    let names = list(fd)?;
    let mut own = Usage::default();
    let mut subdirs = Vec::new();
    for (name, _) in names {
        let st = match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we looked (a live chunk cache): it no longer counts.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if is_dir(&st) {
            own.add(Usage { allocated_bytes: blocks(&st), files: 0, dirs: 1 });
            subdirs.push(name);
            continue;
        }
        #[allow(clippy::unnecessary_cast)]
        if st.st_nlink as u64 > 1 {
            #[allow(clippy::unnecessary_cast)]
            let key = (st.st_dev as u64, st.st_ino as u64);
            if !seen.lock().map(|mut s| s.insert(key)).unwrap_or(true) {
                own.files += 1;
                continue;
            }
        }
        own.add(Usage { allocated_bytes: blocks(&st), files: 1, dirs: 0 });
    }
    let sub: io::Result<Vec<Usage>> = subdirs
        .par_iter()
        .map(|name| match open_dir_at(fd, name) {
            Ok(sfd) => measure_dir(&sfd, seen),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Usage::default()),
            Err(e) => Err(e),
        })
        .collect();
    for u in sub? {
        own.add(u);
    }
    Ok(own)
}

/// Failures while removing a tree: how many items stayed and the first few messages.
#[derive(Debug, Default)]
pub struct RemoveErrors {
    pub count: u64,
    pub messages: Vec<String>,
}

impl RemoveErrors {
    fn push(&mut self, path: &Path, e: impl std::fmt::Display) {
        self.count += 1;
        if self.messages.len() < 5 {
            self.messages.push(format!("{}: {e}", path.display()));
        }
    }

    pub fn summary(&self) -> String {
        let more = if self.count as usize > self.messages.len() {
            format!(" (and {} more)", self.count as usize - self.messages.len())
        } else {
            String::new()
        };
        format!("{}{more}", self.messages.join("; "))
    }
}

/// Remove `path` and everything below it, in parallel, never following symlinks. `done(n)` is
/// called as inodes go (batched). Items that vanish meanwhile are fine (another purge on a
/// shared cache); other failures are collected and the rest is still removed.
pub fn remove_tree(path: &Path, done: &(dyn Fn(u64) + Sync)) -> Result<(), RemoveErrors> {
    let errors = Mutex::new(RemoveErrors::default());
    let st = match lstat(path) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            let mut r = RemoveErrors::default();
            r.push(path, e);
            return Err(r);
        }
    };
    if is_dir(&st) {
        match open_dir(path) {
            Ok(fd) => remove_contents(&fd, path, &errors, done),
            Err(e) => record(&errors, path, e),
        }
        match rustix::fs::unlinkat(CWD, path, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => done(1),
            Err(e) => record(&errors, path, e),
        }
    } else {
        match rustix::fs::unlinkat(CWD, path, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => done(1),
            Err(e) => record(&errors, path, e),
        }
    }
    let errors = errors.into_inner().unwrap_or_default();
    if errors.count == 0 { Ok(()) } else { Err(errors) }
}

fn record(errors: &Mutex<RemoveErrors>, path: &Path, e: impl std::fmt::Display) {
    if let Ok(mut g) = errors.lock() {
        g.push(path, e);
    }
}

/// Files are unlinked in batches of this many per rayon task.
const BATCH: usize = 64;

fn remove_contents(fd: &OwnedFd, path: &Path, errors: &Mutex<RemoveErrors>, done: &(dyn Fn(u64) + Sync)) {
    let names = match list(fd) {
        Ok(n) => n,
        Err(e) => return record(errors, path, e),
    };
    let mut files = Vec::with_capacity(names.len());
    let mut dirs = Vec::new();
    for (name, t) in names {
        let t = match t {
            Some(t) => t,
            None => match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    record(errors, &path.join(name_path(&name)), e);
                    continue;
                }
            },
        };
        if t == FileType::Directory { dirs.push(name) } else { files.push(name) }
    }
    let unlink_files = || {
        files.par_chunks(BATCH).for_each(|chunk| {
            let mut n = 0;
            for name in chunk {
                match rustix::fs::unlinkat(fd, name.as_c_str(), AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => n += 1,
                    Err(e) => record(errors, &path.join(name_path(name)), e),
                }
            }
            done(n);
        })
    };
    let remove_dirs = || {
        dirs.par_iter().for_each(|name| {
            let sub = path.join(name_path(name));
            match open_dir_at(fd, name) {
                Ok(sfd) => remove_contents(&sfd, &sub, errors, done),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => return record(errors, &sub, e),
            }
            match rustix::fs::unlinkat(fd, name.as_c_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => done(1),
                Err(e) => record(errors, &sub, e),
            }
        })
    };
    rayon::join(unlink_files, remove_dirs);
}

fn name_path(name: &CStr) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
}

/// Counts progress across threads and forwards it in batches.
pub struct Counter<'a> {
    pending: AtomicU64,
    sink: &'a (dyn Fn(u64) + Sync),
}

impl<'a> Counter<'a> {
    pub fn new(sink: &'a (dyn Fn(u64) + Sync)) -> Self {
        Counter { pending: AtomicU64::new(0), sink }
    }

    pub fn add(&self, n: u64) {
        let before = self.pending.fetch_add(n, Ordering::Relaxed);
        if before + n >= 1024 {
            let take = self.pending.swap(0, Ordering::Relaxed);
            if take > 0 {
                (self.sink)(take);
            }
        }
    }

    pub fn flush(&self) {
        let take = self.pending.swap(0, Ordering::Relaxed);
        if take > 0 {
            (self.sink)(take);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn measure_counts_allocated_bytes_and_never_follows_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![7u8; 1 << 20]).unwrap();
        let t = d.path().join("tree");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/f"), vec![1u8; 10000]).unwrap();
        let sparse = std::fs::File::create(t.join("a/b/sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        symlink(&outside, t.join("a/link")).unwrap();
        std::fs::hard_link(t.join("a/f"), t.join("a/b/f2")).unwrap();
        let u = measure(&t).unwrap();
        assert_eq!(u.dirs, 3);
        assert_eq!(u.files, 4);
        assert!(u.allocated_bytes < 200_000, "sparse or linked data was counted: {u:?}");
        assert!(u.allocated_bytes >= 10000);
    }

    #[test]
    fn remove_tree_removes_links_not_targets() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("sentinel"), b"keep").unwrap();
        let t = d.path().join("tree");
        for i in 0..300 {
            let dir = t.join(format!("d{}", i % 7)).join("x");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), b"data").unwrap();
        }
        symlink(&outside, t.join("d1/link-to-outside")).unwrap();
        let before = measure(&t).unwrap();
        let n = AtomicU64::new(0);
        remove_tree(&t, &|k| {
            n.fetch_add(k, Ordering::Relaxed);
        })
        .unwrap();
        assert!(!t.exists());
        assert_eq!(std::fs::read(outside.join("sentinel")).unwrap(), b"keep");
        assert_eq!(n.load(Ordering::Relaxed), before.items());
        // A missing path is already removed.
        remove_tree(&t, &|_| {}).unwrap();
    }
}
