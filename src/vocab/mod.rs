//! The vocabulary every layer shares, and nothing else: build IDs ([`BuildId`], with their own
//! error), the names of a build's files and of what tmpl writes beside them ([`files`]), and the
//! formats of tmpl's own records in a build folder ([`manifest`], [`journal`]).
//!
//! A leaf: it imports no other module of the crate, so the storage model, the parsers, the checks
//! and the editor can all use it without importing each other.

pub mod build_id;
pub mod files;
pub mod journal;
pub mod manifest;

pub use build_id::{BuildId, BuildIdError};
pub use files::Artifact;

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// Why a small structured file could not be read (see [`read_small`]).
#[derive(Clone, Debug, thiserror::Error)]
pub enum SmallFileError {
    #[error("cannot read: {0}")]
    Io(#[source] Arc<io::Error>),
    #[error("is not a regular file")]
    NotAFile,
    #[error("{len} bytes is larger than the {cap}-byte limit")]
    TooLarge { len: u64, cap: u64 },
    #[error("larger than the {cap}-byte limit")]
    Grew { cap: u64 },
}

impl SmallFileError {
    /// The I/O error underneath, if any (a permission problem, an EIO).
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            SmallFileError::Io(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Read a small structured file (header, metadata, sidecar, manifest, journal): `Ok(None)` when
/// it does not exist. It must be a regular file (a link to one is followed; a link to `/dev/zero`
/// or a FIFO is refused) and is read through a cap, so nothing can make tmpl read without bound.
pub fn read_small(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, SmallFileError> {
    // A file of a build in a remote storage: one ranged GET, the size checked before it.
    if let Some(r) = crate::remote::mount::read_small(path, cap) {
        return match r {
            Ok(None) => Ok(None),
            Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
            Ok(Some(Err(len))) => Err(SmallFileError::TooLarge { len, cap }),
            Err(e) => Err(SmallFileError::Io(Arc::new(e))),
        };
    }
    let f = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SmallFileError::Io(Arc::new(e))),
        Ok(f) => f,
    };
    let m = f.metadata().map_err(|e| SmallFileError::Io(Arc::new(e)))?;
    if !m.is_file() {
        return Err(SmallFileError::NotAFile);
    }
    if m.len() > cap {
        return Err(SmallFileError::TooLarge { len: m.len(), cap });
    }
    // The capacity is a hint only: a length that does not fit in memory starts empty.
    let mut out = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
    f.take(cap.saturating_add(1)).read_to_end(&mut out).map_err(|e| SmallFileError::Io(Arc::new(e)))?;
    if u64::try_from(out.len()).map_or(true, |n| n > cap) {
        return Err(SmallFileError::Grew { cap });
    }
    Ok(Some(out))
}
