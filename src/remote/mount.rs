//! Remote storages mounted under a path, so the one model of a build reads them.
//!
//! A remote storage (`s3://bucket`, `gs://bucket`, `azblob://container`) is given a root path
//! spelled like its URL (`s3://bucket`, plus `#2`, `#3`... when two different stores share a
//! name). Paths under that root name objects: `s3://bucket/<build-id>/memfile` is the object
//! `<build-id>/memfile`. The few places that touch build files by path (`build::stat`,
//! `vocab::read_small`, the snapfile reader, the storage listing, and `device::Blob`, the backing of
//! every `Device`) ask [`find`] first and read through the mount when the path is under one, so
//! `Build`, the checks, `Device`, the rootfs reader and `verify --deep` work on remote builds
//! unchanged:
//!
//! * a build folder is one LIST of `<build-id>/` (cached), which gives every object's size;
//! * small files (metadata, headers) are one ranged GET each, capped like local ones;
//! * data files are [`RemoteFile`]s: ranged GETs through a bounded block cache, so the header
//!   decides which bytes are fetched;
//! * E2B's uncompressed-size sidecar (`<object>.uncompressed-size`, Local storage only) is
//!   answered from the object's provider metadata (`x-amz-meta-uncompressed-size`,
//!   `x-goog-meta-uncompressed-size`, `x-ms-meta-uncompressed__size`) when no such object exists.
//!
//! Nothing is ever written under a mount root: the root is not a local directory. The editing
//! commands read a remote base through it and write forks through [`Store`] (`edit::publish`).
//!
//! Errors become `io::Error`s (for the path-based callers) whose kind says what happened:
//! not found, permission denied, timed out, connection refused (unavailable), unexpected end
//! (truncated); the message is the remote error's, naming the object's URL.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Error, ErrorKind};
use super::file::{CacheConfig, RemoteFile};
use super::location::Location;
use super::store::{ObjectInfo, ObjectReader, SIDECAR_SUFFIX, Store};
use crate::compress::Compression;

static MOUNTS: RwLock<Vec<Arc<Mount>>> = RwLock::new(Vec::new());

/// Objects directly under one build prefix, by name (empty: no such build).
#[derive(Debug, Default)]
struct Listing {
    objects: BTreeMap<String, ObjectInfo>,
    /// Names of "folders" under the build prefix (a backup folder, ...).
    dirs: Vec<String>,
}

/// One remote storage, readable by path.
#[derive(Debug)]
pub struct Mount {
    root: PathBuf,
    store: Store,
    cache: CacheConfig,
    listings: Mutex<HashMap<String, Arc<Listing>>>,
    heads: Mutex<HashMap<String, ObjectInfo>>,
}

/// Mount `store` (or return the mount that already serves the same location).
pub fn mount(store: Store) -> Arc<Mount> {
    let mut all = MOUNTS.write().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = all.iter().find(|m| m.store.location() == store.location()) {
        return m.clone();
    }
    let loc = store.location();
    let mut base = match loc {
        // Never the directory itself: a local store mounted for tests must not shadow local reads.
        Location::Local { path } => format!("file://{}", path.display()),
        Location::S3 { bucket, .. } | Location::Gcs { bucket, .. } | Location::Azure { container: bucket, .. } => {
            format!("{}://{bucket}", loc.scheme())
        }
    };
    if !loc.prefix().is_empty() {
        base = format!("{base}/{}", loc.prefix());
    }
    let mut root = PathBuf::from(&base);
    let mut n = 2;
    while all.iter().any(|m| m.root == root) {
        root = PathBuf::from(format!("{base}#{n}"));
        n += 1;
    }
    let m = Arc::new(Mount {
        root,
        store,
        cache: CacheConfig::default(),
        listings: Mutex::default(),
        heads: Mutex::default(),
    });
    all.push(m.clone());
    m
}

/// The mount `path` is under, and the path's components below its root.
pub fn find(path: &Path) -> Option<(Arc<Mount>, Vec<String>)> {
    let all = MOUNTS.read().unwrap_or_else(|p| p.into_inner());
    if all.is_empty() {
        return None;
    }
    for m in all.iter() {
        if let Ok(rest) = path.strip_prefix(&m.root) {
            let mut parts = Vec::new();
            for c in rest.components() {
                match c {
                    Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                    Component::CurDir => {}
                    // `..` or a root under a mount never names an object.
                    _ => return Some((m.clone(), vec!["..".into()])),
                }
            }
            return Some((m.clone(), parts));
        }
    }
    None
}

/// Is `path` (a storage root) a mounted remote storage?
pub fn is_mounted(path: &Path) -> bool {
    find(path).is_some()
}

/// The store behind a mounted storage root (for request counts).
pub fn store_of(path: &Path) -> Option<Store> {
    find(path).map(|(m, _)| m.store.clone())
}

/// An `io::Error` that keeps the remote error's kind and message.
pub fn to_io(e: Error) -> io::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::Permission => io::ErrorKind::PermissionDenied,
        ErrorKind::Timeout => io::ErrorKind::TimedOut,
        ErrorKind::Unavailable => io::ErrorKind::ConnectionRefused,
        ErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
        ErrorKind::Config => io::ErrorKind::InvalidInput,
        ErrorKind::Other => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

fn not_found(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what}: not found"))
}

/// A small object read whole: `Ok(bytes)`, or `Err(size)` when it is larger than the cap.
pub type Small = Result<Vec<u8>, u64>;

/// What a path under a mount is.
pub enum Stat {
    Missing,
    Dir,
    File(u64),
}

impl Mount {
    /// The root path of this mount (`s3://bucket`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn listing(&self, build: &str) -> io::Result<Arc<Listing>> {
        if let Some(l) = self.listings.lock().unwrap_or_else(|p| p.into_inner()).get(build) {
            return Ok(l.clone());
        }
        let prefix = format!("{build}/");
        let mut l = Listing::default();
        for o in self.store.list(&prefix).map_err(to_io)? {
            let Some(rest) = o.key.strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                None => {
                    l.objects.insert(rest.to_string(), o);
                }
                Some((dir, _)) => {
                    if !l.dirs.iter().any(|d| d == dir) {
                        l.dirs.push(dir.to_string());
                    }
                }
            }
        }
        let l = Arc::new(l);
        self.listings.lock().unwrap_or_else(|p| p.into_inner()).insert(build.to_string(), l.clone());
        Ok(l)
    }

    /// Forget cached listings (after objects were written).
    pub fn forget(&self) {
        self.listings.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// What `parts` (components below the root) names: the root and a build prefix with objects
    /// are directories; `<build>/<name>` is an object.
    pub fn stat(&self, parts: &[String]) -> io::Result<Stat> {
        match parts {
            [] => Ok(Stat::Dir),
            [b] if b != ".." => Ok(if self.listing(b)?.objects.is_empty() && self.listing(b)?.dirs.is_empty() {
                Stat::Missing
            } else {
                Stat::Dir
            }),
            [b, name] if b != ".." => {
                let l = self.listing(b)?;
                Ok(match l.objects.get(name) {
                    Some(o) => Stat::File(o.size),
                    None if l.dirs.contains(name) => Stat::Dir,
                    None => Stat::Missing,
                })
            }
            _ => Ok(Stat::Missing),
        }
    }

    /// Names of the objects and folders directly under a build prefix.
    pub fn read_dir(&self, parts: &[String]) -> io::Result<Vec<String>> {
        match parts {
            [b] => {
                let l = self.listing(b)?;
                if l.objects.is_empty() && l.dirs.is_empty() {
                    return Err(not_found(self.store.object_url(&format!("{b}/"))));
                }
                Ok(l.objects.keys().cloned().chain(l.dirs.iter().cloned()).collect())
            }
            [] => self.store.list_dirs("").map_err(to_io),
            _ => Ok(Vec::new()),
        }
    }

    fn info(&self, parts: &[String]) -> io::Result<Option<ObjectInfo>> {
        match parts {
            [b, name] if b != ".." => Ok(self.listing(b)?.objects.get(name).cloned()),
            _ => Ok(None),
        }
    }

    /// The object's HEAD (cached): size, ETag and user metadata.
    fn head(&self, key: &str) -> io::Result<ObjectInfo> {
        if let Some(i) = self.heads.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(i.clone());
        }
        let i = self.store.head(key).map_err(to_io)?;
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), i.clone());
        Ok(i)
    }

    /// A small object read whole (`Ok(None)` when absent). An absent `<object>.uncompressed-size`
    /// is answered from `<object>`'s uncompressed-size metadata, as E2B's providers keep it.
    /// `Err(TooLarge)` size is returned as `Ok(Err(size))`.
    pub fn read_small(&self, parts: &[String], cap: u64) -> io::Result<Option<Small>> {
        if let Some(o) = self.info(parts)? {
            if o.size > cap {
                return Ok(Some(Err(o.size)));
            }
            let bytes = self.store.read_range_checked(&o.key, 0..o.size, o.etag.as_deref()).map_err(to_io)?;
            return Ok(Some(Ok(bytes.to_vec())));
        }
        if let [b, name] = parts
            && let Some(base) = name.strip_suffix(SIDECAR_SUFFIX)
            && let Some(o) = self.info(&[b.clone(), base.to_string()])?
        {
            let h = self.head(&o.key)?;
            return Ok(h.metadata.get(super::store::UNCOMPRESSED_SIZE_KEY).map(|v| Ok(v.clone().into_bytes())));
        }
        Ok(None)
    }

    /// A data object for positional reads through the block cache.
    pub fn open(&self, parts: &[String]) -> io::Result<RemoteFile> {
        let Some(o) = self.info(parts)? else {
            return Err(not_found(self.store.object_url(&parts.join("/"))));
        };
        let compressed = [Compression::Zstd, Compression::Lz4].iter().any(|c| o.key.ends_with(c.suffix()));
        let cache = if compressed { self.cache.for_compressed() } else { self.cache.clone() };
        RemoteFile::from_info(&self.store, o, cache).map_err(to_io)
    }

    /// A sequential reader of a whole object.
    pub fn reader(&self, parts: &[String]) -> io::Result<(ObjectReader, u64)> {
        let Some(o) = self.info(parts)? else {
            return Err(not_found(self.store.object_url(&parts.join("/"))));
        };
        let r = self.store.reader(&o.key).map_err(to_io)?;
        Ok((r, o.size))
    }
}

/// `stat` of a path under a mount: `None` when the path is not under one.
pub fn stat(path: &Path) -> Option<io::Result<Stat>> {
    let (m, parts) = find(path)?;
    Some(m.stat(&parts))
}

/// Every build-prefix name at the top of a mounted storage.
pub fn list_dirs(root: &Path) -> Option<io::Result<Vec<String>>> {
    let (m, parts) = find(root)?;
    Some(m.read_dir(&parts))
}

/// A whole small object under a mount (see [`Mount::read_small`]).
pub fn read_small(path: &Path, cap: u64) -> Option<io::Result<Option<Small>>> {
    let (m, parts) = find(path)?;
    Some(m.read_small(&parts, cap))
}

/// A data object under a mount, for positional reads.
pub fn open(path: &Path) -> Option<io::Result<RemoteFile>> {
    let (m, parts) = find(path)?;
    Some(m.open(&parts))
}

/// A sequential reader of an object under a mount, and its size.
pub fn reader(path: &Path) -> Option<io::Result<(ObjectReader, u64)>> {
    let (m, parts) = find(path)?;
    Some(m.reader(&parts))
}

/// The object key a path under a mount names.
pub fn key_of(path: &Path) -> Option<String> {
    let (_, parts) = find(path)?;
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{Config, Env};

    #[test]
    fn paths_under_a_mount_read_objects_and_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b1");
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("metadata.json"), b"{}").unwrap();
        std::fs::write(b.join("memfile"), vec![7u8; 10000]).unwrap();
        let store =
            Store::open(&Location::Local { path: dir.path().into() }, &Env::empty(), &Config::default()).unwrap();
        let m = mount(store);
        let root = m.root().to_path_buf();
        assert!(matches!(stat(&root.join("b1")).unwrap().unwrap(), Stat::Dir));
        assert!(matches!(stat(&root.join("b2")).unwrap().unwrap(), Stat::Missing));
        assert!(matches!(stat(&root.join("b1/memfile")).unwrap().unwrap(), Stat::File(10000)));
        assert_eq!(read_small(&root.join("b1/metadata.json"), 10).unwrap().unwrap(), Some(Ok(b"{}".to_vec())));
        assert_eq!(read_small(&root.join("b1/memfile"), 10).unwrap().unwrap(), Some(Err(10000)));
        assert_eq!(read_small(&root.join("b1/nope"), 10).unwrap().unwrap(), None);
        assert_eq!(key_of(&root.join("b1/memfile")).unwrap(), "b1/memfile");
        let f = open(&root.join("b1/memfile")).unwrap().unwrap();
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 9997).unwrap();
        assert_eq!(buf, [7, 7, 7]);
        assert!(find(Path::new("/elsewhere/b1")).is_none());
    }
}
