//! Read a build's root filesystem without mounting it: ext4 (via `ext4-view`) over a
//! [`Device`], so full images, compacted layers and compressed builds all read the same way and
//! nothing needs root.
//!
//! This module is the read side only. It never prints; it returns facts and errors.

pub mod boot;
pub mod script;
pub mod superblock;
pub mod unit;

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
    NotExt4(String),
    #[error("the filesystem uses features the reader does not support: {}", .0.join(", "))]
    Unsupported(Vec<&'static str>),
    #[error("the filesystem is corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {message}")]
    Path { path: String, message: String },
    #[error("{path}: more than 40 symbolic links while resolving it (a loop)")]
    Loop { path: String },
    #[error("reading the image: {0}")]
    Io(String),
}

fn path_err(path: &str, e: Ext4Error) -> RootfsError {
    match e {
        Ext4Error::Io(inner) => RootfsError::Io(inner.to_string()),
        Ext4Error::Corrupt(c) => RootfsError::Path { path: path.to_string(), message: format!("corrupt: {c}") },
        Ext4Error::TooManySymlinks => RootfsError::Loop { path: path.to_string() },
        other => RootfsError::Path { path: path.to_string(), message: other.to_string() },
    }
}

/// An ext4 filesystem on a device.
pub struct Rootfs {
    fs: Ext4,
    pub superblock: Superblock,
    device: Arc<Device>,
}

impl std::fmt::Debug for Rootfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rootfs").field("superblock", &self.superblock).finish_non_exhaustive()
    }
}

/// Largest file [`Rootfs::read`] returns whole (scripts, units, configs).
pub const MAX_READ: u64 = 16 * 1024 * 1024;

impl Rootfs {
    /// Check the superblock ourselves (to name unsupported features), then load.
    pub fn open(device: Arc<Device>) -> Result<Rootfs, RootfsError> {
        let superblock = match Superblock::read(&*device) {
            Ok(s) => s,
            Err(SuperblockError::Device(e)) => return Err(RootfsError::Io(e.to_string())),
            Err(e) => return Err(RootfsError::NotExt4(e.to_string())),
        };
        let unreadable = superblock.unreadable_features();
        if !unreadable.is_empty() {
            return Err(RootfsError::Unsupported(unreadable));
        }
        let fs = Ext4::load(Box::new(DevReader(device.clone()))).map_err(|e| match e {
            Ext4Error::Io(inner) => RootfsError::Io(inner.to_string()),
            Ext4Error::Incompatible(i) => RootfsError::NotExt4(format!("incompatible: {i}")),
            other => RootfsError::Corrupt(other.to_string()),
        })?;
        Ok(Rootfs { fs, superblock, device })
    }

    /// The device underneath (for read accounting).
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Metadata of `path` without following a final symlink; `None` if it does not exist.
    pub fn lstat(&self, path: &str) -> Result<Option<Entry>, RootfsError> {
        match self.fs.symlink_metadata(path) {
            Ok(m) => Ok(Some(Entry {
                path: path.to_string(),
                kind: m.file_type().into(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                len: m.len(),
            })),
            Err(Ext4Error::NotFound) => Ok(None),
            // A parent that is not a directory (or a dangling parent link) also means "absent".
            Err(Ext4Error::NotADirectory) => Ok(None),
            Err(e) => Err(path_err(path, e)),
        }
    }

    /// The path with every symlink and `.`/`..` resolved inside the image (like `realpath`).
    pub fn canonicalize(&self, path: &str) -> Result<String, RootfsError> {
        let p = self.fs.canonicalize(path).map_err(|e| path_err(path, e))?;
        Ok(p.display().to_string())
    }

    /// The target of symlink `path`, as stored.
    pub fn read_link(&self, path: &str) -> Result<String, RootfsError> {
        let t = self.fs.read_link(path).map_err(|e| path_err(path, e))?;
        Ok(String::from_utf8_lossy(t.as_ref()).into_owned())
    }

    /// A whole file (following symlinks), refusing files over [`MAX_READ`].
    pub fn read(&self, path: &str) -> Result<Vec<u8>, RootfsError> {
        let m = self.fs.metadata(path).map_err(|e| path_err(path, e))?;
        if m.len() > MAX_READ {
            return Err(RootfsError::Path {
                path: path.into(),
                message: format!("{} bytes is too large to read whole", m.len()),
            });
        }
        self.fs.read(path).map_err(|e| path_err(path, e))
    }

    /// The first `n` bytes of a file (following symlinks).
    pub fn read_head(&self, path: &str, n: usize) -> Result<Vec<u8>, RootfsError> {
        let mut f = self.fs.open(path).map_err(|e| path_err(path, e))?;
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let k = f.read_bytes(&mut out[got..]).map_err(|e| path_err(path, e))?;
            if k == 0 {
                break;
            }
            got += k;
        }
        out.truncate(got);
        Ok(out)
    }

    /// Stream a file through `sink` in 1 MiB pieces (following symlinks).
    pub fn stream(&self, path: &str, mut sink: impl FnMut(&[u8]) -> io::Result<()>) -> Result<u64, RootfsError> {
        let mut f = self.fs.open(path).map_err(|e| path_err(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let k = f.read_bytes(&mut buf).map_err(|e| path_err(path, e))?;
            if k == 0 {
                return Ok(total);
            }
            sink(&buf[..k]).map_err(|e| RootfsError::Io(e.to_string()))?;
            total += k as u64;
        }
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

    /// Names and kinds of a directory's entries (without `.` and `..`), sorted.
    pub fn read_dir(&self, path: &str) -> Result<Vec<(String, FileKind)>, RootfsError> {
        let mut out = Vec::new();
        for e in self.fs.read_dir(path).map_err(|e| path_err(path, e))? {
            let e = e.map_err(|e| path_err(path, e))?;
            let name = e.file_name().display().to_string();
            if name == "." || name == ".." {
                continue;
            }
            let kind = e.file_type().map_err(|e| path_err(path, e))?.into();
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
