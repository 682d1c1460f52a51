//! Walking and deleting cache trees without ever following a symlink or re-resolving a path.
//!
//! Everything here works relative to directory handles: a folder below a cache root is opened
//! from its parent's handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//! kernel has it (Linux ≥ 5.6), `openat(O_NOFOLLOW | O_DIRECTORY)` otherwise, one name at a time;
//! stats, unlinks and renames are relative to those handles (`statat` with
//! `AT_SYMLINK_NOFOLLOW`, `unlinkat`, `renameat`). A symlink met anywhere is measured and removed
//! as a link, and a folder swapped for a symlink while we work makes its open fail (or the handle
//! already open keeps pointing at the real folder) instead of leading out of the tree. Paths are
//! carried along for messages only.
//!
//! Subdirectories and batches of files are handled in parallel with rayon (reference:
//! dependencies.md §6 — parallel unlinks pay off because each unlink waits on I/O, especially on
//! filesystems mounted with `discard`).
//!
//! Sizes are *allocated* bytes (`st_blocks` × 512, what `du -B1` reports; memfiles and chunk
//! files are sparse, so apparent sizes overstate what a purge frees). Directories count, hard
//! links count once.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::sys::inuse::FileId;

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
    // st_blocks is a signed blkcnt_t; a negative count (never written by Linux) counts as 0.
    u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512)
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// A stat field widened to u64: dev_t, ino_t and nlink_t are u64 on x86_64 Linux but u32 for
/// nlink_t on aarch64: generic, so it is a widening on one target and the identity on another.
fn wide<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// Device and inode of a stat.
pub fn file_id(st: &Stat) -> FileId {
    FileId { dev: wide(st.st_dev), ino: wide(st.st_ino) }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Set once `openat2` is found missing (kernel < 5.6) or filtered (seccomp): use `openat`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open the folder `name` (one path component) inside `dirfd` without following any symlink.
/// A symlink (or anything not a folder) there fails with `ELOOP`/`ENOTDIR`.
pub fn open_beneath(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a single name")));
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(dirfd, name, DIR_FLAGS, Mode::empty(), resolve) {
            Err(Errno::NOSYS) | Err(Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // Retried by the kernel's own rules (a rename elsewhere on the filesystem): once more
            // with openat, which has the same guarantees for a single name with O_NOFOLLOW.
            Err(Errno::AGAIN) => {}
            r => return Ok(r?),
        }
    }
    Ok(rustix::fs::openat(dirfd, name, DIR_FLAGS, Mode::empty())?)
}

/// Open a cache root (already resolved: its last component must not be a symlink).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty())?)
}

/// `lstat` of `name` inside `dirfd`.
pub fn stat_at(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Names in a directory (without `.` and `..`) with their types (`None` when the filesystem
/// does not say: the caller stats).
fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<(CString, Option<FileType>)>> {
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

/// Names in a directory with their types (from `lstat` where the listing does not say), sorted;
/// names that vanish meanwhile are left out.
pub fn children(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for (name, t) in list(fd)? {
        let t = match t {
            Some(t) => t,
            None => match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
        };
        out.push((OsStr::from_bytes(name.to_bytes()).to_os_string(), t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Allocated bytes, files and directories of `name` inside `dirfd`, never following symlinks (a
/// symlink counts as itself). A missing entry is an error.
pub fn measure_at(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Usage> {
    let st = stat_at(dirfd, name)?;
    if !is_dir(&st) {
        return Ok(Usage { allocated_bytes: blocks(&st), files: 1, dirs: 0 });
    }
    let fd = open_beneath(dirfd, name)?;
    let seen = Mutex::new(HashSet::new());
    let mut u = measure_dir(&fd, &seen)?;
    u.add(Usage { allocated_bytes: blocks(&st), files: 0, dirs: 1 });
    Ok(u)
}

/// [`measure_at`] for a path given whole (tests, tools): only its last component is not followed.
pub fn measure(path: &Path) -> io::Result<Usage> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let fd = rustix::fs::openat(CWD, parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    measure_at(fd.as_fd(), name)
}

fn measure_dir(fd: &OwnedFd, seen: &Mutex<HashSet<(u64, u64)>>) -> io::Result<Usage> {
    let names = list(fd.as_fd())?;
    let mut own = Usage::default();
    let mut subdirs = Vec::new();
    for (name, _) in names {
        let st = match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we looked (a live chunk cache): it no longer counts.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if is_dir(&st) {
            own.add(Usage { allocated_bytes: blocks(&st), files: 0, dirs: 1 });
            subdirs.push(name);
            continue;
        }
        if wide(st.st_nlink) > 1 {
            let id = file_id(&st);
            if !seen.lock().map(|mut s| s.insert((id.dev, id.ino))).unwrap_or(true) {
                own.files += 1;
                continue;
            }
        }
        own.add(Usage { allocated_bytes: blocks(&st), files: 1, dirs: 0 });
    }
    let sub: io::Result<Vec<Usage>> = subdirs
        .par_iter()
        .map(|name| match open_beneath(fd.as_fd(), cname(name)) {
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

fn cname(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

/// Regular files and symlinks under `name` inside `dirfd` (the entry itself when it is not a
/// folder), with the identity a process holding them would show in `/proc`: a regular file's own,
/// a symlink's target's (a running sandbox uses what its `.link` points at; following a link to
/// `stat` it reads nothing and changes nothing). Paths (`display` joined with the names) are for
/// messages. Never follows a symlink to a folder; unreadable folders are skipped.
pub fn files_at(dirfd: BorrowedFd<'_>, name: &OsStr, display: &Path) -> Vec<(FileId, PathBuf)> {
    let mut out = Vec::new();
    let Ok(st) = stat_at(dirfd, name) else { return out };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            if let Ok(fd) = open_beneath(dirfd, name) {
                files_in(&fd, display, &mut out);
            }
        }
        t => push_file(dirfd, name, t, &st, display, &mut out),
    }
    out
}

fn push_file(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    t: FileType,
    st: &Stat,
    path: &Path,
    out: &mut Vec<(FileId, PathBuf)>,
) {
    match t {
        FileType::RegularFile => out.push((file_id(st), path.to_path_buf())),
        FileType::Symlink => {
            if let Ok(target) = rustix::fs::statat(dirfd, name, AtFlags::empty()) {
                out.push((file_id(&target), path.to_path_buf()));
            }
        }
        _ => {}
    }
}

fn files_in(fd: &OwnedFd, path: &Path, out: &mut Vec<(FileId, PathBuf)>) {
    let Ok(kids) = children(fd.as_fd()) else { return };
    for (name, t) in kids {
        let p = path.join(&name);
        if t == FileType::Directory {
            if let Ok(sfd) = open_beneath(fd.as_fd(), &name) {
                files_in(&sfd, &p, out);
            }
        } else if let Ok(st) = stat_at(fd.as_fd(), &name) {
            push_file(fd.as_fd(), &name, FileType::from_raw_mode(st.st_mode), &st, &p, out);
        }
    }
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
        let more = if crate::num::usize_from(self.count) > self.messages.len() {
            format!(" (and {} more)", crate::num::usize_from(self.count) - self.messages.len())
        } else {
            String::new()
        };
        format!("{}{more}", self.messages.join("; "))
    }
}

/// Remove `name` inside `dirfd` and everything below it, in parallel, never following symlinks
/// (`display` is its path, for messages). `done(n)` is called as inodes go (batched). Items that
/// vanish meanwhile are fine (another purge on a shared cache); a folder swapped for a symlink
/// meanwhile is removed as the link; other failures are collected and the rest is still removed.
pub fn remove_tree_at(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    display: &Path,
    done: &(dyn Fn(u64) + Sync),
) -> Result<(), RemoveErrors> {
    let errors = Mutex::new(RemoveErrors::default());
    let st = match stat_at(dirfd, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            let mut r = RemoveErrors::default();
            r.push(display, e);
            return Err(r);
        }
    };
    if is_dir(&st) {
        remove_dir_at(dirfd, name, display, &errors, done);
    } else {
        unlink_at(dirfd, name, display, &errors, done);
    }
    let errors = errors.into_inner().unwrap_or_default();
    if errors.count == 0 { Ok(()) } else { Err(errors) }
}

/// Empty the folder open as `fd` (its path `display`, for messages), in parallel, never following
/// symlinks. The folder itself stays (the caller removes it from its parent's handle).
pub fn remove_contents_of(fd: &OwnedFd, display: &Path, done: &(dyn Fn(u64) + Sync)) -> Result<(), RemoveErrors> {
    let errors = Mutex::new(RemoveErrors::default());
    remove_contents(fd, display, &errors, done);
    let errors = errors.into_inner().unwrap_or_default();
    if errors.count == 0 { Ok(()) } else { Err(errors) }
}

fn record(errors: &Mutex<RemoveErrors>, path: &Path, e: impl std::fmt::Display) {
    if let Ok(mut g) = errors.lock() {
        g.push(path, e);
    }
}

/// Unlink a non-folder `name` inside `dirfd`.
fn unlink_at(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    errors: &Mutex<RemoveErrors>,
    done: &(dyn Fn(u64) + Sync),
) {
    match rustix::fs::unlinkat(dirfd, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => done(1),
        Err(e) => record(errors, path, e),
    }
}

/// Remove the folder `name` inside `dirfd`: open it from the handle (no symlink followed), empty
/// it, `rmdir` it. When it turned into something else meanwhile (a symlink), unlink that instead.
fn remove_dir_at(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    errors: &Mutex<RemoveErrors>,
    done: &(dyn Fn(u64) + Sync),
) {
    match open_beneath(dirfd, name) {
        Ok(fd) => remove_contents(&fd, path, errors, done),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::LOOP.raw_os_error() || c == Errno::NOTDIR.raw_os_error()) =>
        {
            return unlink_at(dirfd, name, path, errors, done);
        }
        Err(e) => return record(errors, path, e),
    }
    match rustix::fs::unlinkat(dirfd, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => done(1),
        // Swapped for a symlink after we emptied the real folder through its handle: the link
        // goes, its target is never touched (the real folder, now elsewhere, stays: reported).
        Err(Errno::NOTDIR) => {
            record(errors, path, "replaced by a non-folder while it was being deleted; removing that instead");
            let _ = rustix::fs::unlinkat(dirfd, name, AtFlags::empty());
        }
        Err(e) => record(errors, path, e),
    }
}

/// Files are unlinked in batches of this many per rayon task.
const BATCH: usize = 64;

fn remove_contents(fd: &OwnedFd, path: &Path, errors: &Mutex<RemoveErrors>, done: &(dyn Fn(u64) + Sync)) {
    let names = match list(fd.as_fd()) {
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
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    record(errors, &path.join(cname(&name)), e);
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
                    Ok(()) | Err(Errno::NOENT) => n += 1,
                    Err(e) => record(errors, &path.join(cname(name)), e),
                }
            }
            done(n);
        })
    };
    let remove_dirs = || {
        dirs.par_iter().for_each(|name| remove_dir_at(fd.as_fd(), cname(name), &path.join(cname(name)), errors, done))
    };
    rayon::join(unlink_files, remove_dirs);
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
        // A symlink measured as itself.
        assert_eq!(measure(&t.join("a/link")).unwrap().files, 1);
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
        let top = open_root(d.path()).unwrap();
        remove_tree_at(top.as_fd(), OsStr::new("tree"), &t, &|k| {
            n.fetch_add(k, Ordering::Relaxed);
        })
        .unwrap();
        assert!(!t.exists());
        assert_eq!(std::fs::read(outside.join("sentinel")).unwrap(), b"keep");
        assert_eq!(n.load(Ordering::Relaxed), before.items());
        // A missing entry is already removed.
        remove_tree_at(top.as_fd(), OsStr::new("tree"), &t, &|_| {}).unwrap();
        // A top entry that is a symlink to a folder goes as a link.
        symlink(&outside, d.path().join("tree")).unwrap();
        remove_tree_at(top.as_fd(), OsStr::new("tree"), &t, &|_| {}).unwrap();
        assert!(std::fs::symlink_metadata(&t).is_err());
        assert_eq!(std::fs::read(outside.join("sentinel")).unwrap(), b"keep");
    }

    #[test]
    fn folders_are_never_opened_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        symlink(d.path().join("real"), d.path().join("link")).unwrap();
        let top = open_root(d.path()).unwrap();
        assert!(open_beneath(top.as_fd(), OsStr::new("real")).is_ok());
        let e = open_beneath(top.as_fd(), OsStr::new("link")).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(c) if c == Errno::LOOP.raw_os_error() || c == Errno::NOTDIR.raw_os_error()),
            "{e}"
        );
        for bad in ["..", ".", "real/..", ""] {
            assert!(open_beneath(top.as_fd(), OsStr::new(bad)).is_err(), "{bad}");
        }
        // The openat fallback keeps the guarantee.
        NO_OPENAT2.store(true, Ordering::Relaxed);
        let r = open_beneath(top.as_fd(), OsStr::new("link"));
        NO_OPENAT2.store(false, Ordering::Relaxed);
        assert!(r.is_err());
        assert!(open_root(&d.path().join("link")).is_err(), "a root is opened as resolved, not through a link");
    }
}
