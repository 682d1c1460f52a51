//! Read a build's root filesystem without mounting it: ext4 (via `ext4-view`) over a
//! [`Device`], so full images, compacted layers and compressed builds all read the same way and
//! nothing needs root.
//!
//! This module is the read side only. It never prints; it returns facts and errors.

pub mod boot;
pub mod guard;
pub mod script;
pub mod superblock;
pub mod unit;

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read, FileType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::device::{Device, ReadAt};
pub use superblock::{Superblock, SuperblockError};

/// Adapter: ext4-view reads through our device.
struct DevReader(Arc<Device>);

impl Ext4Read for DevReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(|e| Box::new(e) as _)
    }
}

/// The kind of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// The kind in words, for prose ("replaces a regular file").
    pub fn noun(self) -> &'static str {
        match self {
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
        }
    }
}

impl From<FileType> for FileKind {
    fn from(t: FileType) -> Self {
        match t {
            FileType::Regular => FileKind::Regular,
            FileType::Directory => FileKind::Directory,
            FileType::Symlink => FileKind::Symlink,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
        }
    }
}

/// Metadata of one path in the image (not following a final symlink).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub path: String,
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub len: u64,
}

impl Entry {
    /// Executable by someone (any x bit), as the kernel requires of init.
    pub fn is_executable(&self) -> bool {
        self.kind == FileKind::Regular && self.mode & 0o111 != 0
    }
}

/// Why the rootfs (or a path in it) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("not an ext4 filesystem: {0}")]
    NotExt4(#[source] SuperblockError),
    #[error("not an ext4 filesystem: incompatible: {0}")]
    Incompatible(#[source] Ext4Error),
    #[error("the filesystem uses features the reader does not support: {}", .0.join(", "))]
    Unsupported(Vec<&'static str>),
    #[error("the filesystem is corrupt: {0}")]
    Corrupt(#[source] Ext4Error),
    #[error("{path}: {problem}")]
    Path {
        path: String,
        #[source]
        problem: PathProblem,
    },
    #[error("{path}: more than 40 symbolic links while resolving it (a loop)")]
    Loop { path: String },
    /// The device under the filesystem could not be read.
    #[error("reading the image: {0}")]
    Device(#[from] crate::device::DeviceError),
    /// The reader failed reading the image for another reason.
    #[error("reading the image: {0}")]
    Reader(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The caller's sink refused the bytes of a streamed file (a closed pipe, a full disk).
    #[error("writing the file out: {0}")]
    Sink(#[source] io::Error),
    /// A size read from the image is over what tmpl reads (see [`Anomaly::OverCap`]).
    #[error("{0}")]
    OverCap(Anomaly),
    /// The ext4 reader panicked (see [`Anomaly::ReaderPanic`]).
    #[error("{0}")]
    ReaderPanic(Anomaly),
}

/// Something about the image that made tmpl stop reading part of it: recorded by [`Rootfs`] as
/// it reads, and turned into findings by the checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anomaly {
    /// A size read from an inode is over the cap tmpl reads for that kind of file.
    OverCap {
        path: String,
        /// `symlink target`, `directory`, ...
        what: &'static str,
        size: u64,
        cap: u64,
    },
    /// The ext4 reader (`ext4-view`) panicked; every later read of this image is refused.
    ReaderPanic { path: String, message: String },
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anomaly::OverCap { path, what: what @ "symlink target", size, cap } => write!(
                f,
                "{path}: the inode says its {what} is {size} bytes, over the kernel's limit of {cap}: the inode is corrupt"
            ),
            Anomaly::OverCap { path, what, size, cap } if what.ends_with("count") => {
                write!(f, "{path}: {what} is {size}, over the {cap} tmpl examines: only the first {cap} were checked")
            }
            Anomaly::OverCap { path, what, size, cap } => {
                write!(f, "{path}: the inode says its {what} is {size} bytes, over the {cap} tmpl reads: not checked")
            }
            Anomaly::ReaderPanic { path, message } => {
                write!(f, "{path}: the ext4 reader (ext4-view) panicked: {message}")
            }
        }
    }
}

/// What is wrong with one path of the image.
#[derive(Debug, thiserror::Error)]
pub enum PathProblem {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("not found")]
    NotFound,
    #[error("not a symbolic link")]
    NotASymlink,
    #[error("{0} bytes is too large to read whole")]
    TooLarge(u64),
    /// The reader found the inode or a directory corrupt (an `Ext4Error::Corrupt`).
    #[error("corrupt: {}", corrupt_text(.0))]
    Corrupt(#[source] Ext4Error),
    #[error("{0}")]
    Reader(#[source] Ext4Error),
    #[error("{0}")]
    BadPath(#[source] ext4_view::PathError),
}

impl RootfsError {
    fn path(path: impl Into<String>, problem: PathProblem) -> Self {
        RootfsError::Path { path: path.into(), problem }
    }

    /// An error of the device or reader underneath (the image could not be read), rather than a
    /// fact about the filesystem.
    pub fn is_read_failure(&self) -> bool {
        matches!(self, RootfsError::Device(_) | RootfsError::Reader(_))
    }

    /// For a read failure: what failed, without the "reading the image" prefix.
    pub fn read_failure(&self) -> Option<String> {
        match self {
            RootfsError::Device(e) => Some(e.to_string()),
            RootfsError::Reader(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// What an `Ext4Error::Corrupt` says, without the reader's own prefix.
fn corrupt_text(e: &Ext4Error) -> String {
    match e {
        Ext4Error::Corrupt(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// The error of a failed read of the reader: the device error our adapter returned, or the
/// reader's own.
fn reader_io(inner: Box<dyn std::error::Error + Send + Sync + 'static>) -> RootfsError {
    match inner.downcast::<crate::device::DeviceError>() {
        Ok(d) => RootfsError::Device(*d),
        Err(other) => RootfsError::Reader(other),
    }
}

fn path_err(path: &str, e: Ext4Error) -> RootfsError {
    match e {
        Ext4Error::Io(inner) => reader_io(inner),
        e @ Ext4Error::Corrupt(_) => RootfsError::path(path, PathProblem::Corrupt(e)),
        Ext4Error::TooManySymlinks => RootfsError::Loop { path: path.to_string() },
        other => RootfsError::path(path, PathProblem::Reader(other)),
    }
}

/// An ext4 filesystem on a device.
///
/// Every read is bounded by what the image claims *and* by a cap: paths are resolved here, link
/// by link, so `ext4-view` only ever sees paths without symlinks (it would read a link target
/// whole, whatever size the inode claims); link targets over [`MAX_LINK_TARGET`], directories
/// over [`MAX_DIR_BYTES`] or [`MAX_DIR_ENTRIES`] and whole-file reads over [`MAX_READ`] are
/// refused and recorded as an [`Anomaly`]. Every call into `ext4-view` runs isolated
/// ([`guard::isolate`]): a panic in it is recorded, and from then on this filesystem refuses
/// every read (its reader's state is no longer trusted).
pub struct Rootfs {
    fs: Ext4,
    pub superblock: Superblock,
    device: Arc<Device>,
    anomalies: RefCell<Vec<Anomaly>>,
    /// Set by a reader panic: the message every later read fails with.
    poisoned: RefCell<Option<Anomaly>>,
    /// Bytes of file content handed to callers (holes included): the work a read path did.
    delivered: Cell<u64>,
}

impl std::fmt::Debug for Rootfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rootfs").field("superblock", &self.superblock).finish_non_exhaustive()
    }
}

/// Largest file [`Rootfs::read`] returns whole (scripts, units, configs).
pub const MAX_READ: u64 = 16 * 1024 * 1024;
/// Longest symlink target followed: the kernel refuses to create longer ones (`PATH_MAX`, 4096
/// bytes with the NUL) and reads at most a block of one.
pub const MAX_LINK_TARGET: u64 = 4095;
/// Largest directory searched or listed (about a million entries).
pub const MAX_DIR_BYTES: u64 = 32 * 1024 * 1024;
/// Most entries [`Rootfs::read_dir`] returns.
pub const MAX_DIR_ENTRIES: usize = 1 << 18;
/// Symlinks followed in one lookup before ELOOP (the kernel's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// How a lookup treats a symlink in the last component.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    All,
    ExceptLast,
}

/// A path resolved to an inode: its canonical path (no symlinks but perhaps the last) and
/// metadata.
struct Walked {
    path: Vec<u8>,
    meta: ext4_view::Metadata,
}

/// Why a lookup ended without an inode.
enum Miss {
    /// No such entry, or a parent is not a directory.
    Absent,
    Err(RootfsError),
}

impl From<RootfsError> for Miss {
    fn from(e: RootfsError) -> Self {
        Miss::Err(e)
    }
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Rootfs {
    /// The rootfs of a build, read through its layers: the one way commands open it (errors
    /// become [`crate::error::Error::rootfs`] at the build's `rootfs.ext4`).
    pub fn of_build(build: &crate::build::Build) -> Result<Rootfs, RootfsError> {
        let dev = Device::open(build, crate::vocab::Artifact::Rootfs)?;
        Rootfs::open(Arc::new(dev))
    }

    /// Check the superblock ourselves (to name unsupported features), then load.
    pub fn open(device: Arc<Device>) -> Result<Rootfs, RootfsError> {
        let superblock = match Superblock::read(&*device) {
            Ok(s) => s,
            Err(SuperblockError::Device(e)) => return Err(RootfsError::Device(e)),
            Err(e) => return Err(RootfsError::NotExt4(e)),
        };
        let unreadable = superblock.unreadable_features();
        if !unreadable.is_empty() {
            return Err(RootfsError::Unsupported(unreadable));
        }
        let reader = Box::new(DevReader(device.clone()));
        let loaded = guard::isolate(move || Ext4::load(reader)).map_err(|message| {
            RootfsError::ReaderPanic(Anomaly::ReaderPanic { path: "(superblock)".into(), message })
        })?;
        let fs = loaded.map_err(|e| match e {
            Ext4Error::Io(inner) => reader_io(inner),
            e @ Ext4Error::Incompatible(_) => RootfsError::Incompatible(e),
            other => RootfsError::Corrupt(other),
        })?;
        Ok(Rootfs {
            fs,
            superblock,
            device,
            anomalies: RefCell::default(),
            poisoned: RefCell::default(),
            delivered: Cell::new(0),
        })
    }

    /// The device underneath (for read accounting).
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Bytes of file content read so far (holes included, unlike the device's count): what a
    /// read path cost, whatever sizes the image claims.
    pub fn bytes_delivered(&self) -> u64 {
        self.delivered.get()
    }

    fn deliver(&self, n: usize) {
        self.delivered.set(self.delivered.get().saturating_add(n as u64));
    }

    /// Everything over a cap or failing inside the reader, in the order met (no duplicates).
    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.anomalies.borrow().clone()
    }

    /// The reader panicked on this image: every later read is refused.
    pub fn reader_failed(&self) -> bool {
        self.poisoned.borrow().is_some()
    }

    fn note(&self, a: Anomaly) {
        let mut list = self.anomalies.borrow_mut();
        if !list.contains(&a) {
            list.push(a);
        }
    }

    /// Record that a count or size read from the image at `path` is over a cap of the caller's
    /// (only the first `cap` were examined).
    pub fn note_over_cap(&self, path: &str, what: &'static str, size: u64, cap: u64) {
        self.note(Anomaly::OverCap { path: path.to_string(), what, size, cap });
    }

    fn over_cap(&self, path: &[u8], what: &'static str, size: u64, cap: u64) -> RootfsError {
        let a = Anomaly::OverCap { path: lossy(path), what, size, cap };
        self.note(a.clone());
        RootfsError::OverCap(a)
    }

    /// One call into ext4-view, isolated: a panic poisons this filesystem.
    fn call<T>(&self, path: &[u8], f: impl FnOnce(&Ext4) -> T) -> Result<T, RootfsError> {
        if let Some(a) = self.poisoned.borrow().clone() {
            return Err(RootfsError::ReaderPanic(a));
        }
        guard::isolate(|| f(&self.fs)).map_err(|message| {
            let a = Anomaly::ReaderPanic { path: lossy(path), message };
            self.note(a.clone());
            *self.poisoned.borrow_mut() = Some(a.clone());
            RootfsError::ReaderPanic(a)
        })
    }

    /// Metadata of a path that holds no symlink but perhaps its last component.
    fn meta_of(&self, path: &[u8]) -> Result<Option<ext4_view::Metadata>, RootfsError> {
        let p = ext4_view::Path::try_from(path).map_err(|e| RootfsError::path(lossy(path), PathProblem::BadPath(e)))?;
        match self.call(path, |fs| fs.symlink_metadata(p))? {
            Ok(m) => Ok(Some(m)),
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(None),
            Err(e) => Err(path_err(&lossy(path), e)),
        }
    }

    /// The target of the symlink at `path` (a path with no other symlink), capped.
    fn link_target(&self, path: &[u8], len: u64) -> Result<Vec<u8>, RootfsError> {
        if len > MAX_LINK_TARGET {
            return Err(self.over_cap(path, "symlink target", len, MAX_LINK_TARGET));
        }
        let p = ext4_view::Path::try_from(path).map_err(|e| RootfsError::path(lossy(path), PathProblem::BadPath(e)))?;
        let t = self.call(path, |fs| fs.read_link(p))?.map_err(|e| path_err(&lossy(path), e))?;
        Ok(t.as_ref().to_vec())
    }

    /// Resolve `path` the way the kernel does, one component at a time: `.` and `..` applied
    /// to the canonical path so far, each symlink's target (capped) spliced in, at most
    /// [`MAX_SYMLINKS`] links, directories searched only under [`MAX_DIR_BYTES`].
    fn walk(&self, path: &str, follow: Follow) -> Result<Walked, Miss> {
        if !path.starts_with('/') {
            return Err(Miss::Err(RootfsError::path(path, PathProblem::NotAbsolute)));
        }
        let root = self.meta_of(b"/")?.ok_or(Miss::Absent)?;
        // Components still to resolve, the next one last.
        let mut pending: Vec<Vec<u8>> =
            path.as_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty()).rev().map(<[u8]>::to_vec).collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut metas: Vec<ext4_view::Metadata> = vec![root];
        let mut links = 0usize;
        while let Some(comp) = pending.pop() {
            let dir = metas.last().ok_or(Miss::Absent)?;
            if !dir.is_dir() {
                return Err(Miss::Absent);
            }
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                if cur.pop().is_some() {
                    metas.pop();
                }
                continue;
            }
            if dir.len() > MAX_DIR_BYTES {
                return Err(self.over_cap(&join(&cur), "directory", dir.len(), MAX_DIR_BYTES).into());
            }
            cur.push(comp);
            let here = join(&cur);
            let Some(meta) = self.meta_of(&here)? else { return Err(Miss::Absent) };
            let last = pending.is_empty();
            if meta.is_symlink() && (follow == Follow::All || !last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Miss::Err(RootfsError::Loop { path: lossy(&here) }));
                }
                let target = self.link_target(&here, meta.len())?;
                cur.pop();
                if target.first() == Some(&b'/') {
                    cur.clear();
                    metas.truncate(1);
                }
                pending.extend(target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev().map(<[u8]>::to_vec));
                continue;
            }
            metas.push(meta);
        }
        let meta = metas.pop().ok_or(Miss::Absent)?;
        Ok(Walked { path: join(&cur), meta })
    }

    /// Resolve `path` following every symlink; a missing path is an error.
    fn resolved(&self, path: &str) -> Result<Walked, RootfsError> {
        match self.walk(path, Follow::All) {
            Ok(w) => Ok(w),
            Err(Miss::Absent) => Err(RootfsError::path(path, PathProblem::NotFound)),
            Err(Miss::Err(e)) => Err(e),
        }
    }

    fn entry(path: String, m: &ext4_view::Metadata) -> Entry {
        Entry { path, kind: m.file_type().into(), mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), len: m.len() }
    }

    /// Metadata of `path` without following a final symlink; `None` if it does not exist.
    pub fn lstat(&self, path: &str) -> Result<Option<Entry>, RootfsError> {
        match self.walk(path, Follow::ExceptLast) {
            Ok(w) => Ok(Some(Self::entry(path.to_string(), &w.meta))),
            Err(Miss::Absent) => Ok(None),
            Err(Miss::Err(e)) => Err(e),
        }
    }

    /// The path with every symlink and `.`/`..` resolved inside the image (like `realpath`).
    pub fn canonicalize(&self, path: &str) -> Result<String, RootfsError> {
        Ok(lossy(&self.resolved(path)?.path))
    }

    /// The target of symlink `path`, as stored (at most [`MAX_LINK_TARGET`] bytes).
    pub fn read_link(&self, path: &str) -> Result<String, RootfsError> {
        let w = match self.walk(path, Follow::ExceptLast) {
            Ok(w) => w,
            Err(Miss::Absent) => {
                return Err(RootfsError::path(path, PathProblem::NotFound));
            }
            Err(Miss::Err(e)) => return Err(e),
        };
        if !w.meta.is_symlink() {
            return Err(RootfsError::path(path, PathProblem::NotASymlink));
        }
        Ok(lossy(&self.link_target(&w.path, w.meta.len())?))
    }

    /// A regular file opened through its canonical path.
    fn open_file(&self, path: &str) -> Result<(Vec<u8>, ext4_view::File), RootfsError> {
        let w = self.resolved(path)?;
        let p = ext4_view::Path::try_from(w.path.as_slice())
            .map_err(|e| RootfsError::path(path, PathProblem::BadPath(e)))?;
        let f = self.call(&w.path, |fs| fs.open(p))?.map_err(|e| path_err(path, e))?;
        Ok((w.path, f))
    }

    /// A whole file (following symlinks), refusing files over [`MAX_READ`].
    pub fn read(&self, path: &str) -> Result<Vec<u8>, RootfsError> {
        let w = self.resolved(path)?;
        if w.meta.len() > MAX_READ {
            return Err(RootfsError::path(path, PathProblem::TooLarge(w.meta.len())));
        }
        let n = usize::try_from(w.meta.len()).unwrap_or(usize::MAX);
        self.read_head(path, n)
    }

    /// A whole file (following symlinks) of at most `cap` bytes; a larger one is refused and
    /// recorded as an [`Anomaly::OverCap`] (a script or config that big is not what it claims).
    pub fn read_capped(&self, path: &str, cap: u64) -> Result<Vec<u8>, RootfsError> {
        let w = self.resolved(path)?;
        if w.meta.len() > cap {
            return Err(self.over_cap(&w.path, "size", w.meta.len(), cap));
        }
        self.read_head(path, usize::try_from(w.meta.len()).unwrap_or(usize::MAX))
    }

    /// The first `n` bytes of a file (following symlinks).
    pub fn read_head(&self, path: &str, n: usize) -> Result<Vec<u8>, RootfsError> {
        let (canonical, mut f) = self.open_file(path)?;
        let n = n.min(usize::try_from(f.metadata().len()).unwrap_or(usize::MAX));
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let k = self.call(&canonical, |_| f.read_bytes(&mut out[got..]))?.map_err(|e| path_err(path, e))?;
            if k == 0 {
                break;
            }
            self.deliver(k);
            got += k;
        }
        out.truncate(got);
        Ok(out)
    }

    /// Read parts of one file (following symlinks once): `with` gets the file's length and a
    /// function that reads at an offset into a buffer (fewer bytes at the end of the file, 0
    /// past it), and what it returns is returned. Every byte read counts as delivered.
    pub fn read_parts<T>(
        &self,
        path: &str,
        with: impl FnOnce(u64, &mut dyn FnMut(u64, &mut [u8]) -> Result<usize, RootfsError>) -> T,
    ) -> Result<T, RootfsError> {
        let (canonical, mut f) = self.open_file(path)?;
        let len = f.metadata().len();
        let mut pos = 0u64;
        let mut read_at = |offset: u64, buf: &mut [u8]| -> Result<usize, RootfsError> {
            // Seeking restarts ext4-view's walk of the file's blocks: only when not already there.
            if offset != pos {
                self.call(&canonical, |_| f.seek_to(offset))?.map_err(|e| path_err(path, e))?;
                pos = offset;
            }
            let k = self.call(&canonical, |_| f.read_bytes(buf))?.map_err(|e| path_err(path, e))?;
            self.deliver(k);
            pos += k as u64;
            Ok(k)
        };
        Ok(with(len, &mut read_at))
    }

    /// Stream a file through `sink` in 1 MiB pieces (following symlinks).
    pub fn stream(&self, path: &str, sink: impl FnMut(&[u8]) -> io::Result<()>) -> Result<u64, RootfsError> {
        self.stream_at_most(path, u64::MAX, sink)
    }

    /// Stream at most the first `limit` bytes of a file through `sink` (following symlinks).
    pub fn stream_at_most(
        &self,
        path: &str,
        limit: u64,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, RootfsError> {
        let (canonical, mut f) = self.open_file(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while total < limit {
            let want = usize::try_from((limit - total).min(buf.len() as u64)).unwrap_or(buf.len());
            let k = self.call(&canonical, |_| f.read_bytes(&mut buf[..want]))?.map_err(|e| path_err(path, e))?;
            if k == 0 {
                break;
            }
            self.deliver(k);
            sink(&buf[..k]).map_err(RootfsError::Sink)?;
            total += k as u64;
        }
        Ok(total)
    }

    /// SHA-256 of a file's content, streamed.
    pub fn sha256(&self, path: &str) -> Result<[u8; 32], RootfsError> {
        let mut h = Sha256::new();
        self.stream(path, |b| {
            h.update(b);
            Ok(())
        })?;
        Ok(h.finalize().into())
    }

    /// Names and kinds of a directory's entries (without `.` and `..`), sorted. Directories over
    /// [`MAX_DIR_BYTES`] are refused; of a directory with more than [`MAX_DIR_ENTRIES`] entries
    /// only the first are listed (both recorded as an [`Anomaly`]).
    pub fn read_dir(&self, path: &str) -> Result<Vec<(String, FileKind)>, RootfsError> {
        let w = self.resolved(path)?;
        if w.meta.is_dir() && w.meta.len() > MAX_DIR_BYTES {
            return Err(self.over_cap(&w.path, "directory", w.meta.len(), MAX_DIR_BYTES));
        }
        let p = ext4_view::Path::try_from(w.path.as_slice())
            .map_err(|e| RootfsError::path(path, PathProblem::BadPath(e)))?;
        let iter = self.call(&w.path, |fs| fs.read_dir(p))?.map_err(|e| path_err(path, e))?;
        let mut out = Vec::new();
        let mut iter = iter;
        loop {
            let Some(e) = self.call(&w.path, |_| iter.next())? else { break };
            let e = e.map_err(|e| path_err(path, e))?;
            let name = e.file_name().display().to_string();
            if name == "." || name == ".." {
                continue;
            }
            if out.len() >= MAX_DIR_ENTRIES {
                // Only the first entries are listed; the rest are not read.
                let n = MAX_DIR_ENTRIES as u64;
                self.note_over_cap(&lossy(&w.path), "directory entry count", n + 1, n);
                break;
            }
            let kind = self.call(&w.path, |_| e.file_type())?.map_err(|e| path_err(path, e))?.into();
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
