//! Builds in object storage: where template storage is, and a synchronous client for it.
//!
//! The pieces, bottom to top:
//!
//! * [`Location`] and [`resolve`]: the storage URL dialect E2B's orchestrator accepts (`gs://`,
//!   `s3://...?endpoint=&region=&s3ForcePathStyle=`, `azblob://`, `file:`), resolved from
//!   `--storage`, `TMPL_STORAGE`, `TEMPLATE_STORAGE_URL` or the legacy `STORAGE_PROVIDER`
//!   variables. Pure: the environment is an [`Env`] value.
//! * [`Store`]: a blob client over `object_store` (S3, GCS, Azure) or a local directory, with
//!   `head`, ranged reads that check their length, listings, streaming multipart uploads,
//!   server-side copy, delete; retries with backoff, timeouts, bounded concurrency and request
//!   counts ([`Stats`]). Credentials come only from the provider's usual environment variables
//!   (docs/remote.md lists them).
//! * [`RemoteFile`]: positional reads of one object through a bounded LRU block cache that
//!   coalesces adjacent misses into one ranged GET and reads ahead when reads are sequential.
//!
//! * [`mount`]: a remote storage under a root path spelled like its URL, through which
//!   `Build`, `Device` and the checks read remote builds unchanged.
//!
//! Every failure is an [`Error`] with an [`ErrorKind`] (not-found, permission, unavailable,
//! timeout, config, truncated, other) for the exit code.
//!
//! ```no_run
//! use tmpl::remote::{resolve, CacheConfig, Config, Env, RemoteFile, Store};
//!
//! let env = Env::from_process();
//! let storage = resolve(Some("s3://fc-templates?region=eu-west-1"), &env)?;
//! let store = Store::open(&storage.location, &env, &Config::default())?;
//! let memfile = RemoteFile::open(&store, "0b2c4f5e-0000-4000-8000-000000000001/memfile", CacheConfig::default())?;
//! let mut page = [0u8; 4096];
//! memfile.read_exact_at(&mut page, 1 << 30)?;
//! println!("{} requests", store.stats().requests);
//! # Ok::<(), tmpl::remote::Error>(())
//! ```

mod env;
mod error;
mod file;
mod location;
pub mod mount;
mod runtime;
mod store;

pub use env::Env;
pub use error::{Error, ErrorKind, Result};
pub use file::{CacheConfig, CacheStats, RemoteFile};
pub use location::{DEFAULT_LOCAL_PATH, Location, Resolved, S3_QUERY_PARAMETERS, Source, parse_storage_url, resolve};
pub use runtime::Stats;
pub use store::{
    AZURITE_ACCOUNT, AZURITE_KEY, Config, MAX_KEY_LEN, Metadata, ObjectInfo, ObjectReader, SIDECAR_SUFFIX, Store,
    UNCOMPRESSED_SIZE_KEY,
};

/// An I/O error kind that means a remote storage failed (not the build): see
/// `remote::mount::to_io`.
pub fn is_storage_failure(kind: Option<std::io::ErrorKind>) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        Some(K::TimedOut | K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted | K::PermissionDenied)
    )
}
