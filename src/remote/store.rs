//! [`Store`]: a synchronous blob client for one template storage (S3, GCS, Azure Blob or a local
//! directory), with retries, timeouts, bounded concurrency and request counting.
//!
//! Object keys are relative names such as `<build-id>/memfile`; a [`Location`] prefix is put in
//! front of them. Keys are checked before anything is sent: no empty segments, no `.` or `..`,
//! no control characters, so a key can never name something outside the storage.
//!
//! Every read checks the length it got: object_store clamps a range that runs past the end
//! without an error, so a short answer becomes [`Error::ShortRead`]. Writes stream from a reader
//! through multipart uploads; at most `part_size × (parts_in_flight + 1)` bytes are in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::azure::{AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder};
use object_store::gcp::{GcpCredential, GcpCredentialProvider, GoogleCloudStorageBuilder};
use object_store::limit::LimitStore;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig, StaticCredentialProvider, WriteMultipart,
};
use tokio::runtime::Handle;

use super::env::Env;
use super::error::{Error, Result, classify};
use super::location::Location;
use super::runtime::{Counters, CountingConnector, Stats, handle};

/// The metadata key under which E2B stores the uncompressed size of a compressed object
/// (`storageopts.ObjectMetadataUncompressedSize`). S3 sends it as `x-amz-meta-uncompressed-size`,
/// GCS as `x-goog-meta-uncompressed-size`, Azure as `x-ms-meta-uncompressed__size` (Azure keys
/// must be C# identifiers; E2B's `encodeAzureMetadata` turns `-` into `__`), and Local storage
/// keeps it in a sidecar file `<object>.uncompressed-size` (decimal).
pub const UNCOMPRESSED_SIZE_KEY: &str = "uncompressed-size";

/// Suffix of E2B's Local-storage sidecar holding [`UNCOMPRESSED_SIZE_KEY`].
pub const SIDECAR_SUFFIX: &str = ".uncompressed-size";

/// User metadata of an object, keys in E2B's spelling (lower case, `-`).
pub type Metadata = BTreeMap<String, String>;

/// Longest key accepted (S3 and GCS allow 1024 bytes).
pub const MAX_KEY_LEN: usize = 1024;

/// S3's limit on the number of parts of a multipart upload is 10,000; part sizes are chosen so
/// that an upload of known size needs at most this many.
const MAX_PARTS: u64 = 9_000;
/// S3's smallest part (except the last).
const MIN_PART: u64 = 5 << 20;
/// Largest object read whole by [`Store::read_all`] callers' caps are checked against this too.
const SIDECAR_MAX: u64 = 64;

/// Timeouts, retries and limits. The defaults suit a CLI on a node: fail within about a minute
/// when a store is unreachable, and never hold more than a few parts in memory.
#[derive(Clone, Debug)]
pub struct Config {
    /// TCP/TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Idle timeout: the longest wait for the next bytes of a response, including its head
    /// (default 15 s, E2B's S3/Azure read timeout).
    pub read_timeout: Duration,
    /// Upper bound for one whole request including its body (default 300 s; blocks and parts are
    /// a few MiB, so this only ends a crawling transfer).
    pub request_timeout: Duration,
    /// Retries of a failed request (5xx, 429, connection errors, timeouts of idempotent
    /// requests), and of a body cut mid-way (resumed where it broke). Default 4.
    pub max_retries: usize,
    /// No new retry after this long since the first attempt (default 60 s).
    pub retry_timeout: Duration,
    /// First backoff; it doubles up to `max_backoff` (defaults 100 ms, 5 s).
    pub init_backoff: Duration,
    pub max_backoff: Duration,
    /// Requests in flight per store, all callers together (default 16).
    pub max_concurrency: usize,
    /// Part size of multipart uploads and the size above which an upload is multipart (default
    /// 16 MiB; raised for large objects so an upload stays under 9,000 parts).
    pub part_size: u64,
    /// Parts uploaded at once per upload (default 4).
    pub parts_in_flight: usize,
    /// Size of the ranged GETs of [`Store::reader`] (default 8 MiB), and how many of them run
    /// ahead of the reader (default 2).
    pub stream_chunk: u64,
    pub stream_readahead: usize,
    /// Most entries a listing may return (default 1,000,000).
    pub max_list_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(300),
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_concurrency: 16,
            part_size: 16 << 20,
            parts_in_flight: 4,
            stream_chunk: 8 << 20,
            stream_readahead: 2,
            max_list_entries: 1_000_000,
        }
    }
}

impl Config {
    /// The defaults, with the operator's overrides from the environment:
    /// `TMPL_REMOTE_TIMEOUT` (seconds: the idle read timeout, and the connect timeout when
    /// smaller), `TMPL_REMOTE_RETRIES` (retries per request) and `TMPL_REMOTE_CONCURRENCY`
    /// (requests in flight per store). A value that does not parse is ignored.
    pub fn from_env(env: &Env) -> Config {
        let mut c = Config::default();
        if let Some(t) = env.get("TMPL_REMOTE_TIMEOUT").and_then(|v| v.trim().parse::<f64>().ok())
            && t > 0.0
            && t < 86_400.0
        {
            c.read_timeout = Duration::from_secs_f64(t);
            c.connect_timeout = c.connect_timeout.min(c.read_timeout);
            c.request_timeout = c.request_timeout.max(c.read_timeout);
        }
        if let Some(n) = env.get("TMPL_REMOTE_RETRIES").and_then(|v| v.trim().parse::<usize>().ok()) {
            c.max_retries = n.min(20);
        }
        if let Some(n) = env.get("TMPL_REMOTE_CONCURRENCY").and_then(|v| v.trim().parse::<usize>().ok())
            && n > 0
        {
            c.max_concurrency = n.min(256);
        }
        c
    }

    fn check(&self, store: &str) -> Result<()> {
        let bad = |reason: &str| Err(Error::Config { store: store.to_string(), reason: reason.to_string() });
        if self.max_concurrency == 0 || self.parts_in_flight == 0 {
            return bad("max_concurrency and parts_in_flight must be at least 1");
        }
        if self.part_size < MIN_PART || self.part_size > 5 << 30 {
            return bad("part_size must be between 5 MiB and 5 GiB (S3's part limits)");
        }
        if self.stream_chunk == 0 || self.stream_chunk > 1 << 30 {
            return bad("stream_chunk must be between 1 byte and 1 GiB");
        }
        Ok(())
    }

    fn client_options(&self, allow_http: bool, env: &Env, endpoint_is_http: bool) -> ClientOptions {
        let mut o = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(self.connect_timeout)
            .with_read_timeout(self.read_timeout)
            .with_timeout(self.request_timeout);
        // reqwest is built without its system-proxy feature; honour the usual variables here.
        let proxy = if endpoint_is_http {
            env.first(&["HTTP_PROXY", "http_proxy"])
        } else {
            env.first(&["HTTPS_PROXY", "https_proxy"])
        };
        if let Some(p) = proxy {
            o = o.with_proxy_url(p.trim());
            if let Some(no) = env.first(&["NO_PROXY", "no_proxy"]) {
                o = o.with_proxy_excludes(no.trim());
            }
        }
        o
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig { init_backoff: self.init_backoff, max_backoff: self.max_backoff, base: 2.0 },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// What a HEAD (or a listing) tells about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the storage (and its prefix).
    pub key: String,
    /// Stored size in bytes (compressed size for a compressed object).
    pub size: u64,
    /// The ETag (S3 and Azure quote it; compare as given). Not a content hash in general.
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// User metadata, keys in E2B's spelling. Empty in listings (they do not carry it).
    pub metadata: Metadata,
}

impl ObjectInfo {
    /// E2B's uncompressed size of a compressed object ([`UNCOMPRESSED_SIZE_KEY`]), if recorded
    /// and a decimal number.
    pub fn uncompressed_size(&self) -> Option<u64> {
        self.metadata.get(UNCOMPRESSED_SIZE_KEY).and_then(|v| v.trim().parse().ok())
    }
}

/// Which provider's credentials to ask for before the first request.
#[derive(Debug)]
enum Credentials {
    Aws(AwsCredentialProvider),
    Gcp(GcpCredentialProvider),
    Azure(AzureCredentialProvider),
}

#[derive(Debug)]
struct Cloud {
    store: Arc<dyn ObjectStore>,
    rt: Handle,
    credentials: Credentials,
    credentials_ok: AtomicBool,
    /// Hint shown when no credentials can be had.
    credential_hint: &'static str,
    azure_metadata: bool,
}

#[derive(Debug)]
enum Backend {
    Cloud(Cloud),
    Local { root: PathBuf },
}

#[derive(Debug)]
struct Inner {
    location: Location,
    config: Config,
    counters: Arc<Counters>,
    backend: Backend,
}

/// A synchronous client for one template storage. Cheap to clone (shared state, shared counts).
///
/// Credentials come only from the environment given to [`Store::open`] (see the table in
/// docs/remote.md); the first remote operation asks the provider's credential chain once, so a
/// missing credential is [`Error::NoCredentials`] naming the variables, not a generic failure.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

const AWS_HINT: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or \
AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or run where the container credentials \
(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) or the instance metadata service give a role; AWS_PROFILE \
and ~/.aws files are not read";
const GCP_HINT: &str = "set GOOGLE_APPLICATION_CREDENTIALS to a service-account or authorized-user \
JSON file, run `gcloud auth application-default login`, or run on GCE/GKE with a service account \
(metadata server); STORAGE_EMULATOR_HOST points at an emulator without credentials";
const AZURE_HINT: &str = "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with \
AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_TOKEN), a service principal (AZURE_CLIENT_ID, \
AZURE_CLIENT_SECRET, AZURE_TENANT_ID), workload identity (AZURE_FEDERATED_TOKEN_FILE) or a managed \
identity";

impl Store {
    /// Open `location` with credentials and settings from `env`. Nothing is sent yet (local
    /// storage: the directory must exist).
    pub fn open(location: &Location, env: &Env, config: &Config) -> Result<Store> {
        let name = location.to_string();
        config.check(&name)?;
        let counters = Arc::new(Counters::default());
        let backend = match location {
            Location::Local { path } => {
                let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
                if !md.is_dir() {
                    return Err(Error::Config { store: name, reason: "is not a directory".into() });
                }
                Backend::Local { root: path.clone() }
            }
            _ => Backend::Cloud(open_cloud(location, env, config, &counters)?),
        };
        Ok(Store { inner: Arc::new(Inner { location: location.clone(), config: config.clone(), counters, backend }) })
    }

    /// The storage this client reads.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Counts since the store was opened (all clones together).
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// `s3://bucket/prefix/key` (or the local path), as errors name it.
    pub fn object_url(&self, key: &str) -> String {
        self.inner.location.object_url(key)
    }

    fn op(&self) {
        Counters::add(&self.inner.counters.operations, 1);
    }

    /// Size, ETag and user metadata of `key` (one HEAD request).
    pub fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.op();
        check_key(key)?;
        match &self.inner.backend {
            Backend::Local { root } => local_head(root, key),
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let path = self.path(key)?;
                let opts = GetOptions { head: true, ..GetOptions::default() };
                let r = c.rt.block_on(c.store.get_opts(&path, opts)).map_err(|e| classify(self.object_url(key), e))?;
                let metadata = decode_metadata(&r.attributes, c.azure_metadata);
                Ok(info(key.to_string(), &r.meta, metadata))
            }
        }
    }

    /// Like [`head`](Self::head), but a missing object is `Ok(None)`.
    pub fn head_if_exists(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self.head(key) {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.kind() == super::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Exactly the bytes `range` of `key`: a shorter answer is [`Error::ShortRead`]. An empty
    /// range sends nothing.
    pub fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read_range_checked(key, range, None)
    }

    /// [`read_range`](Self::read_range) that also fails with [`Error::Changed`] when the object's
    /// ETag is no longer `etag` (the object was replaced since it was opened).
    pub fn read_range_checked(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Bytes> {
        self.op();
        check_key(key)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        match &self.inner.backend {
            Backend::Local { root } => local_read(root, key, range, &self.inner.counters),
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let path = self.path(key)?;
                c.rt.block_on(fetch(
                    c.store.clone(),
                    path,
                    self.object_url(key),
                    range,
                    etag.map(str::to_string),
                    self.inner.counters.clone(),
                ))
            }
        }
    }

    /// Several ranges of `key` at once (at most `max_concurrency` requests in flight), each
    /// checked like [`read_range`](Self::read_range). The answer is in the order of `ranges`.
    pub fn read_ranges(&self, key: &str, ranges: &[Range<u64>], etag: Option<&str>) -> Result<Vec<Bytes>> {
        self.op();
        check_key(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                ranges.iter().map(|r| local_read(root, key, r.clone(), &self.inner.counters)).collect()
            }
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let path = self.path(key)?;
                let url = self.object_url(key);
                let jobs = ranges.iter().map(|r| {
                    fetch(
                        c.store.clone(),
                        path.clone(),
                        url.clone(),
                        r.clone(),
                        etag.map(str::to_string),
                        self.inner.counters.clone(),
                    )
                });
                let n = self.inner.config.max_concurrency;
                c.rt.block_on(futures_util::stream::iter(jobs).buffered(n).try_collect())
            }
        }
    }

    /// The whole object, refused without reading it when it is larger than `max` bytes (for
    /// `metadata.json` and headers).
    pub fn read_all(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let i = self.head(key)?;
        if i.size > max {
            return Err(Error::TooLarge { object: self.object_url(key), size: i.size, max });
        }
        Ok(self.read_range_checked(key, 0..i.size, i.etag.as_deref())?.to_vec())
    }

    /// A sequential reader over the whole object (ranged GETs of `stream_chunk` bytes, a few
    /// ahead of the reader). It ends with [`Error::ShortRead`] if the object has fewer bytes than
    /// its HEAD said, and with [`Error::Changed`] if it is replaced meanwhile.
    pub fn reader(&self, key: &str) -> Result<ObjectReader> {
        let info = self.head(key)?;
        let kind = match &self.inner.backend {
            Backend::Local { root } => {
                let path = root.join(key);
                ReaderKind::Local(File::open(&path).map_err(|e| Error::io(&path, e))?, path)
            }
            Backend::Cloud(c) => ReaderKind::Cloud {
                store: c.store.clone(),
                rt: c.rt.clone(),
                path: self.path(key)?,
                url: self.object_url(key),
                pending: std::collections::VecDeque::new(),
            },
        };
        Ok(ObjectReader {
            counters: self.inner.counters.clone(),
            chunk: self.inner.config.stream_chunk,
            readahead: self.inner.config.stream_readahead.max(1),
            info,
            next_fetch: 0,
            pos: 0,
            current: Bytes::new(),
            kind,
        })
    }

    /// Every object under `prefix` (a key prefix such as `<build-id>/`, or "" for all), in no
    /// guaranteed order, without metadata. More than `max_list_entries` is an error.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.op();
        let cap = self.inner.config.max_list_entries;
        match &self.inner.backend {
            Backend::Local { root } => local_list(root, prefix, cap),
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let p = self.dir_path(prefix)?;
                let base = self.key_base();
                let url = self.object_url(prefix);
                c.rt.block_on(async {
                    let mut s = c.store.list(Some(&p));
                    let mut out = Vec::new();
                    while let Some(m) = s.next().await {
                        let m = m.map_err(|e| classify(url.clone(), e))?;
                        if out.len() >= cap {
                            return Err(Error::TooManyEntries { prefix: url.clone(), cap });
                        }
                        let full: &str = m.location.as_ref();
                        let key = full.strip_prefix(&base).unwrap_or(full).to_string();
                        out.push(info(key, &m, Metadata::new()));
                    }
                    Ok(out)
                })
            }
        }
    }

    /// The "directories" directly under `prefix` (for "" at the top: the build IDs), sorted.
    pub fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        self.op();
        let cap = self.inner.config.max_list_entries;
        match &self.inner.backend {
            Backend::Local { root } => {
                let dir = if prefix.trim_matches('/').is_empty() {
                    root.clone()
                } else {
                    check_key(prefix.trim_matches('/'))?;
                    root.join(prefix.trim_matches('/'))
                };
                let mut out = Vec::new();
                for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                    let e = e.map_err(|e| Error::io(&dir, e))?;
                    if e.file_type().map_err(|err| Error::io(e.path(), err))?.is_dir() {
                        if out.len() >= cap {
                            return Err(Error::TooManyEntries { prefix: dir.display().to_string(), cap });
                        }
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                out.sort();
                Ok(out)
            }
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let p = self.dir_path(prefix)?;
                let url = self.object_url(prefix);
                let r = c.rt.block_on(c.store.list_with_delimiter(Some(&p))).map_err(|e| classify(url.clone(), e))?;
                if r.common_prefixes.len() > cap {
                    return Err(Error::TooManyEntries { prefix: url, cap });
                }
                let mut out: Vec<String> =
                    r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// Store `data` as `key` in one request (atomic: readers see the old or the new object).
    pub fn put(&self, key: &str, data: &[u8], metadata: &Metadata) -> Result<()> {
        self.put_reader(key, &mut io::Cursor::new(data), Some(data.len() as u64), metadata).map(|_| ())
    }

    /// Store what `reader` yields as `key`, streaming: one PUT when it is at most `part_size`
    /// bytes, otherwise a multipart upload (aborted on error). `size_hint` (the expected size)
    /// only chooses the part size. Returns the number of bytes stored. The object appears
    /// atomically when the upload completes; local storage writes a temporary file and renames
    /// it. On local storage only [`UNCOMPRESSED_SIZE_KEY`] of `metadata` is kept (in E2B's
    /// sidecar, written after the object, as E2B does); other keys are dropped.
    pub fn put_reader(
        &self,
        key: &str,
        reader: &mut dyn Read,
        size_hint: Option<u64>,
        metadata: &Metadata,
    ) -> Result<u64> {
        self.op();
        check_key(key)?;
        match &self.inner.backend {
            Backend::Local { root } => local_put(root, key, reader, metadata, &self.inner.counters),
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let path = self.path(key)?;
                let url = self.object_url(key);
                let attributes = encode_metadata(metadata, c.azure_metadata);
                let part = part_size(self.inner.config.part_size, size_hint);
                let first = read_up_to(reader, part).map_err(|e| Error::io(format!("source of {url}"), e))?;
                if (first.len() as u64) < part {
                    let n = first.len() as u64;
                    let opts = PutOptions { attributes, ..PutOptions::default() };
                    c.rt.block_on(c.store.put_opts(&path, PutPayload::from(first), opts))
                        .map_err(|e| classify(url, e))?;
                    Counters::add(&self.inner.counters.bytes_written, n);
                    return Ok(n);
                }
                // Object stores stamp whole seconds; allow for that and a little clock skew.
                let began = SystemTime::now() - Duration::from_secs(5);
                let opts = PutMultipartOptions { attributes, ..PutMultipartOptions::default() };
                let upload =
                    c.rt.block_on(c.store.put_multipart_opts(&path, opts)).map_err(|e| classify(url.clone(), e))?;
                // WriteMultipart spawns each part on the runtime: enter it on this thread.
                let _guard = c.rt.enter();
                let mut w = WriteMultipart::new_with_chunk_size(upload, crate::num::usize_from(part));
                let mut total = 0u64;
                let mut chunk = first;
                let result: Result<()> = loop {
                    if chunk.is_empty() {
                        break Ok(());
                    }
                    if let Err(e) = c.rt.block_on(w.wait_for_capacity(self.inner.config.parts_in_flight)) {
                        break Err(classify(url.clone(), e));
                    }
                    total += chunk.len() as u64;
                    Counters::add(&self.inner.counters.bytes_written, chunk.len() as u64);
                    w.put(Bytes::from(chunk));
                    chunk = match read_up_to(reader, part) {
                        Ok(c) => c,
                        Err(e) => break Err(Error::io(format!("source of {url}"), e)),
                    };
                };
                match result {
                    Ok(()) => match c.rt.block_on(w.finish()).map_err(|e| classify(url, e)) {
                        Ok(_) => Ok(total),
                        // A completion whose answer was lost (a timeout) and that the client
                        // retried finds its upload gone (S3: 404 NoSuchUpload; moto: 500): the
                        // first attempt completed it. An object there with the uploaded size,
                        // written since this upload began, settles it; callers that must be sure
                        // read the object back (tmpl copy does).
                        Err(e) if e.kind() != super::ErrorKind::Permission => match self.head_if_exists(key) {
                            Ok(Some(i)) if i.size == total && i.last_modified.is_some_and(|t| t >= began) => Ok(total),
                            _ => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                    Err(e) => {
                        // Best effort: the upload's parts are discarded; the error that stopped
                        // it is the one to report.
                        let _ = c.rt.block_on(w.abort());
                        Err(e)
                    }
                }
            }
        }
    }

    /// Copy `from` to `to` inside this storage (server-side for object stores; the copy keeps
    /// the source's metadata).
    pub fn copy_object(&self, from: &str, to: &str) -> Result<()> {
        self.op();
        check_key(from)?;
        check_key(to)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let mut src = File::open(root.join(from)).map_err(|e| Error::io(root.join(from), e))?;
                local_put(root, to, &mut src, &Metadata::new(), &self.inner.counters)?;
                let side = root.join(format!("{from}{SIDECAR_SUFFIX}"));
                if side.is_file() {
                    std::fs::copy(&side, root.join(format!("{to}{SIDECAR_SUFFIX}")))
                        .map_err(|e| Error::io(&side, e))?;
                }
                Ok(())
            }
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let (f, t) = (self.path(from)?, self.path(to)?);
                c.rt.block_on(c.store.copy(&f, &t)).map_err(|e| classify(self.object_url(from), e))
            }
        }
    }

    /// Delete `key`. Deleting a missing object is not an error on S3 and Azure (their APIs
    /// succeed); GCS and local storage report [`ErrorKind::NotFound`](super::ErrorKind).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.op();
        check_key(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let p = root.join(key);
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))
            }
            Backend::Cloud(c) => {
                self.ensure_credentials(c)?;
                let path = self.path(key)?;
                c.rt.block_on(c.store.delete(&path)).map_err(|e| classify(self.object_url(key), e))
            }
        }
    }

    /// Ask the credential chain once; later calls are free. A failure is
    /// [`Error::NoCredentials`] with the variables that would help.
    fn ensure_credentials(&self, c: &Cloud) -> Result<()> {
        if c.credentials_ok.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = c.rt.block_on(async {
            match &c.credentials {
                Credentials::Aws(p) => p.get_credential().await.map(|_| ()),
                Credentials::Gcp(p) => p.get_credential().await.map(|_| ()),
                Credentials::Azure(p) => p.get_credential().await.map(|_| ()),
            }
        });
        match r {
            Ok(()) => {
                c.credentials_ok.store(true, Ordering::Release);
                Ok(())
            }
            Err(source) => Err(Error::NoCredentials {
                store: self.inner.location.to_string(),
                hint: c.credential_hint.into(),
                source,
            }),
        }
    }

    /// `prefix/` as object_store sees keys.
    fn key_base(&self) -> String {
        let p = self.inner.location.prefix();
        if p.is_empty() { String::new() } else { format!("{p}/") }
    }

    fn path(&self, key: &str) -> Result<ObjPath> {
        let full = format!("{}{key}", self.key_base());
        ObjPath::parse(&full).map_err(|_| Error::InvalidKey { key: key.to_string(), reason: "not a valid object path" })
    }

    fn dir_path(&self, prefix: &str) -> Result<ObjPath> {
        let p = prefix.trim_matches('/');
        if !p.is_empty() {
            check_key(p)?;
        }
        let full = format!("{}{p}", self.key_base());
        ObjPath::parse(full.trim_end_matches('/'))
            .map_err(|_| Error::InvalidKey { key: prefix.to_string(), reason: "not a valid object path" })
    }
}

/// Fetch one range, checking its length and (optionally) the ETag. Owned arguments so it can
/// run as a spawned task.
async fn fetch(
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    url: String,
    range: Range<u64>,
    etag: Option<String>,
    counters: Arc<Counters>,
) -> Result<Bytes> {
    let expected = range.end - range.start;
    let opts = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..GetOptions::default() };
    let r = match store.get_opts(&path, opts).await {
        Ok(r) => r,
        // 416: the range starts at or past the end: nothing of it exists.
        Err(e) if super::error::transport(&e) == super::error::Transport::Status(416) => {
            return Err(Error::ShortRead { object: url, offset: range.start, expected, got: 0 });
        }
        Err(e) => return Err(classify(url, e)),
    };
    // Listings and GETs of some services (GCS, Azure) quote the same ETag differently; a weak
    // marker is not a change either.
    let bare = |t: &str| t.trim_start_matches("W/").trim_matches('"').to_string();
    if let (Some(want), Some(got)) = (&etag, &r.meta.e_tag)
        && bare(want) != bare(got)
    {
        return Err(Error::Changed { object: url, before: want.clone(), after: got.clone() });
    }
    let bytes = r.bytes().await.map_err(|e| classify(url.clone(), e))?;
    Counters::add(&counters.bytes_read, bytes.len() as u64);
    if bytes.len() as u64 != expected {
        return Err(Error::ShortRead { object: url, offset: range.start, expected, got: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// A key must be a plain relative name.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidKey { key: key.chars().take(200).collect(), reason });
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if key.contains('\\') {
        return bad("contains a backslash");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("has an empty, `.` or `..` segment (or a leading or trailing `/`)");
    }
    Ok(())
}

fn part_size(configured: u64, hint: Option<u64>) -> u64 {
    let needed = hint.map_or(0, |s| s.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
    configured.max(needed).min(5 << 30)
}

/// Read until `limit` bytes or the end.
fn read_up_to(r: &mut dyn Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

fn info(key: String, m: &object_store::ObjectMeta, metadata: Metadata) -> ObjectInfo {
    let t = m.last_modified;
    let last_modified = u64::try_from(t.timestamp())
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, t.timestamp_subsec_nanos()));
    ObjectInfo { key, size: m.size, etag: m.e_tag.clone(), last_modified, metadata }
}

/// E2B's spelling → the provider's (Azure: `-` → `__`, `encodeAzureMetadata`).
fn encode_metadata(m: &Metadata, azure: bool) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in m {
        let k = if azure { k.replace('-', "__") } else { k.clone() };
        a.insert(Attribute::Metadata(k.into()), AttributeValue::from(v.clone()));
    }
    a
}

/// The provider's spelling → E2B's (Azure: lower case, `__` → `-`, `decodeAzureMetadata`).
fn decode_metadata(a: &Attributes, azure: bool) -> Metadata {
    a.iter()
        .filter_map(|(k, v)| match k {
            Attribute::Metadata(k) => {
                let k = if azure { k.to_ascii_lowercase().replace("__", "-") } else { k.to_ascii_lowercase() };
                Some((k, v.as_ref().to_string()))
            }
            _ => None,
        })
        .collect()
}

fn open_cloud(location: &Location, env: &Env, config: &Config, counters: &Arc<Counters>) -> Result<Cloud> {
    let rt = handle()?;
    let name = location.to_string();
    let conn = CountingConnector { counters: counters.clone() };
    let store_err = |e: object_store::Error| Error::Config { store: name.clone(), reason: e.to_string() };
    let (store, credentials, credential_hint, azure_metadata): (Arc<dyn ObjectStore>, _, _, _) = match location {
        Location::S3 { bucket, endpoint, region, path_style, .. } => {
            let region = region.as_deref().or(env.first(&["AWS_REGION", "AWS_DEFAULT_REGION"])).unwrap_or("us-east-1");
            let endpoint = endpoint.as_deref().or(env.first(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
            let http = endpoint.is_some_and(|e| e.trim().starts_with("http://"));
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region.trim())
                .with_client_options(config.client_options(http, env, http))
                .with_retry(config.retry())
                .with_http_connector(conn);
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_ARN",
                "AWS_ROLE_SESSION_NAME",
                "AWS_ENDPOINT_URL_STS",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "AWS_METADATA_ENDPOINT",
            ] {
                if let Some(v) = env.get(var) {
                    let key = AmazonS3ConfigKey::from_str(&var.to_ascii_lowercase()).map_err(store_err)?;
                    b = b.with_config(key, v.trim());
                }
            }
            // The AWS SDK's name for the IMDS endpoint.
            if let Some(v) = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
                b = b.with_metadata_endpoint(v.trim().trim_end_matches('/'));
            }
            match endpoint.map(str::trim) {
                // object_store's default is path style; the AWS SDK's is virtual-hosted.
                Some(e) if *path_style => b = b.with_endpoint(e),
                Some(e) => b = b.with_endpoint(virtual_hosted(e, bucket)).with_virtual_hosted_style_request(true),
                None if !*path_style => b = b.with_virtual_hosted_style_request(true),
                None => {}
            }
            let s = b.build().map_err(store_err)?;
            let creds = Credentials::Aws(s.credentials().clone());
            (Arc::new(LimitStore::new(s, config.max_concurrency)), creds, AWS_HINT, false)
        }
        Location::Gcs { bucket, .. } => {
            let emulator = env.get("STORAGE_EMULATOR_HOST").map(|h| {
                let h = h.trim().trim_end_matches('/');
                if h.contains("://") { h.to_string() } else { format!("http://{h}") }
            });
            let http = emulator.as_deref().is_some_and(|e| e.starts_with("http://"));
            let mut b = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_client_options(config.client_options(http, env, http))
                .with_retry(config.retry())
                .with_http_connector(conn);
            if let Some(e) = &emulator {
                // An emulator takes no credentials. A static empty token, not only
                // skip_signature: object_store 0.14.2 still asks the credential chain (and so the
                // GCE metadata server) on uploads when only skip_signature is set.
                b = b
                    .with_base_url(e)
                    .with_skip_signature(true)
                    .with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential { bearer: String::new() })));
            } else {
                if let Some(v) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
                    b = b.with_application_credentials(v.trim());
                }
                if let Some(v) = env.first(&["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH"]) {
                    b = b.with_service_account_path(v.trim());
                }
                if let Some(v) = env.get("GOOGLE_SERVICE_ACCOUNT_KEY") {
                    b = b.with_service_account_key(v.trim());
                }
            }
            let s = b.build().map_err(|e| Error::NoCredentials {
                store: name.clone(),
                hint: GCP_HINT.into(),
                source: e,
            })?;
            let creds = Credentials::Gcp(s.credentials().clone());
            (Arc::new(LimitStore::new(s, config.max_concurrency)), creds, GCP_HINT, false)
        }
        Location::Azure { container, .. } => {
            let az = azure_settings(env, &name)?;
            let http = az.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
            let mut b = MicrosoftAzureBuilder::new()
                .with_container_name(container)
                .with_client_options(config.client_options(http, env, http))
                .with_retry(config.retry())
                .with_http_connector(conn);
            if let Some(a) = &az.account {
                b = b.with_account(a);
            }
            if let Some(e) = az.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(k) = &az.key {
                b = b.with_access_key(k);
            }
            if let Some(s) = &az.sas {
                b = b.with_config(AzureConfigKey::SasKey, s);
            }
            for (var, key) in [
                ("AZURE_CLIENT_ID", AzureConfigKey::ClientId),
                ("AZURE_CLIENT_SECRET", AzureConfigKey::ClientSecret),
                ("AZURE_TENANT_ID", AzureConfigKey::AuthorityId),
                ("AZURE_FEDERATED_TOKEN_FILE", AzureConfigKey::FederatedTokenFile),
                ("AZURE_AUTHORITY_HOST", AzureConfigKey::AuthorityHost),
            ] {
                if let Some(v) = env.get(var) {
                    b = b.with_config(key, v.trim());
                }
            }
            if let Some(v) = env.first(&["IDENTITY_ENDPOINT", "MSI_ENDPOINT"]) {
                b = b.with_msi_endpoint(v.trim());
            }
            let s = b.build().map_err(store_err)?;
            let creds = Credentials::Azure(s.credentials().clone());
            (Arc::new(LimitStore::new(s, config.max_concurrency)), creds, AZURE_HINT, true)
        }
        Location::Local { .. } => unreachable!("local storage has no cloud backend"),
    };
    Ok(Cloud { store, rt, credentials, credentials_ok: AtomicBool::new(false), credential_hint, azure_metadata })
}

/// `scheme://host/path` → `scheme://bucket.host/path` (the AWS SDK's virtual-hosted addressing
/// of a custom endpoint).
fn virtual_hosted(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => endpoint.to_string(),
    }
}

/// Azure account, endpoint and key from the environment, E2B's order: a connection string,
/// else `AZURE_STORAGE_ACCOUNT_NAME` (+ `AZURE_STORAGE_ACCOUNT_KEY` or a SAS token).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AzureSettings {
    pub account: Option<String>,
    pub endpoint: Option<String>,
    pub key: Option<String>,
    pub sas: Option<String>,
}

/// Azurite's documented development account (Microsoft's public documentation; not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's documented development account key (public, not a secret).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub(crate) fn azure_settings(env: &Env, store: &str) -> Result<AzureSettings> {
    if let Some(cs) = env.first(&["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGEBLOB_CONNECTIONSTRING"]) {
        return parse_connection_string(cs).map_err(|reason| Error::InvalidEnv {
            var: "AZURE_STORAGE_CONNECTION_STRING",
            value: "<not shown>".into(),
            reason,
        });
    }
    let Some(account) = env.first(&["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"]) else {
        return Err(Error::Config {
            store: store.to_string(),
            reason: "no storage account: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME".into(),
        });
    };
    Ok(AzureSettings {
        account: Some(account.trim().to_string()),
        endpoint: None,
        key: env.get("AZURE_STORAGE_ACCOUNT_KEY").map(|k| k.trim().to_string()),
        sas: env.first(&["AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_KEY"]).map(|s| s.trim().to_string()),
    })
}

/// An Azure Storage connection string (`Key=Value;...`, keys case-insensitive). Errors never
/// include values (they hold keys).
pub(crate) fn parse_connection_string(cs: &str) -> std::result::Result<AzureSettings, String> {
    let mut kv = BTreeMap::new();
    for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err("a part of the connection string has no `=`".into());
        };
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| kv.get(k).filter(|v| !v.is_empty()).cloned();
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let base = get("developmentstorageproxyuri").unwrap_or_else(|| "http://127.0.0.1".into());
        return Ok(AzureSettings {
            account: Some(AZURITE_ACCOUNT.into()),
            endpoint: Some(format!("{}:10000/{AZURITE_ACCOUNT}", base.trim_end_matches('/'))),
            key: Some(AZURITE_KEY.into()),
            sas: None,
        });
    }
    let account = get("accountname");
    let endpoint = match (get("blobendpoint"), &account) {
        (Some(e), _) => Some(e.trim_end_matches('/').to_string()),
        (None, Some(a)) => {
            let proto = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
            let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
            Some(format!("{proto}://{a}.blob.{suffix}"))
        }
        (None, None) => return Err("connection string has neither AccountName nor BlobEndpoint".into()),
    };
    let account = account.or_else(|| {
        // SAS-only strings: the account is the first label of the endpoint's host.
        let e = endpoint.as_deref()?;
        let host = e.split_once("://")?.1.split(['/', ':']).next()?;
        Some(host.split('.').next()?.to_string())
    });
    let key = get("accountkey");
    let sas = get("sharedaccesssignature");
    if key.is_none() && sas.is_none() {
        return Err("connection string has neither AccountKey nor SharedAccessSignature".into());
    }
    Ok(AzureSettings { account, endpoint, key, sas })
}

// ---------------------------------------------------------------------------------------------
// Local storage: plain files under a directory, E2B's Local provider layout.

fn local_head(root: &FsPath, key: &str) -> Result<ObjectInfo> {
    let p = root.join(key);
    let md = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
    if !md.is_file() {
        return Err(Error::io(&p, io::Error::new(io::ErrorKind::NotFound, "not a regular file")));
    }
    let mut metadata = Metadata::new();
    let side = root.join(format!("{key}{SIDECAR_SUFFIX}"));
    if let Ok(f) = File::open(&side) {
        let mut s = String::new();
        // A sidecar holds a decimal number; read no more than a few bytes of it.
        if f.take(SIDECAR_MAX).read_to_string(&mut s).is_ok() && s.trim().parse::<u64>().is_ok() {
            metadata.insert(UNCOMPRESSED_SIZE_KEY.into(), s.trim().to_string());
        }
    }
    Ok(ObjectInfo {
        key: key.to_string(),
        size: md.len(),
        etag: md.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| {
            use std::os::unix::fs::MetadataExt;
            format!("{:x}-{:x}-{:x}", md.ino(), d.as_nanos(), md.len())
        }),
        last_modified: md.modified().ok(),
        metadata,
    })
}

fn local_read(root: &FsPath, key: &str, range: Range<u64>, counters: &Counters) -> Result<Bytes> {
    let p = root.join(key);
    let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
    let want = usize::try_from(range.end - range.start).map_err(|_| Error::ShortRead {
        object: p.display().to_string(),
        offset: range.start,
        expected: range.end - range.start,
        got: 0,
    })?;
    let mut buf = vec![0u8; want];
    let mut got = 0usize;
    while got < want {
        match f.read_at(&mut buf[got..], range.start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Counters::add(&counters.bytes_read, got as u64);
    if got != want {
        return Err(Error::ShortRead {
            object: p.display().to_string(),
            offset: range.start,
            expected: want as u64,
            got: got as u64,
        });
    }
    Ok(Bytes::from(buf))
}

fn local_list(root: &FsPath, prefix: &str, cap: usize) -> Result<Vec<ObjectInfo>> {
    let p = prefix.trim_matches('/');
    let start = if p.is_empty() {
        root.to_path_buf()
    } else {
        check_key(p)?;
        root.join(p)
    };
    let mut out = Vec::new();
    let mut stack = vec![start.clone()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir == start => return Ok(out),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for e in rd {
            let e = e.map_err(|e| Error::io(&dir, e))?;
            let t = e.file_type().map_err(|err| Error::io(e.path(), err))?;
            // Symbolic links are not followed: a listing stays inside the directory.
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                if out.len() >= cap {
                    return Err(Error::TooManyEntries { prefix: start.display().to_string(), cap });
                }
                let path = e.path();
                let Some(key) = path.strip_prefix(root).ok().and_then(|k| k.to_str()).map(str::to_string) else {
                    continue;
                };
                let md = e.metadata().map_err(|err| Error::io(&path, err))?;
                out.push(ObjectInfo {
                    key,
                    size: md.len(),
                    etag: None,
                    last_modified: md.modified().ok(),
                    metadata: Metadata::new(),
                });
            }
        }
    }
    Ok(out)
}

/// The process's umask, from /proc/self/status (setting it to read it would race with other
/// threads creating files); 022 when unknown.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022)
}

fn local_put(root: &FsPath, key: &str, reader: &mut dyn Read, metadata: &Metadata, counters: &Counters) -> Result<u64> {
    let dest = root.join(key);
    let dir = dest.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut tmp = tempfile::Builder::new().prefix(".tmpl-put-").tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("source of {}", dest.display()), e)),
        };
        tmp.write_all(&buf[..n]).map_err(|e| Error::io(tmp.path(), e))?;
        total += n as u64;
    }
    // A temporary file is 0600; a template file is readable like any other the orchestrator
    // writes (0644 before the umask).
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o644 & !umask();
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
    Counters::add(&counters.bytes_written, total);
    if let Some(v) = metadata.get(UNCOMPRESSED_SIZE_KEY) {
        let side = root.join(format!("{key}{SIDECAR_SUFFIX}"));
        let mut t = tempfile::Builder::new().prefix(".tmpl-put-").tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
        t.write_all(v.as_bytes()).map_err(|e| Error::io(t.path(), e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(0o644 & !umask());
            t.as_file().set_permissions(mode).map_err(|e| Error::io(t.path(), e))?;
        }
        t.persist(&side).map_err(|e| Error::io(&side, e.error))?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------

enum ReaderKind {
    Local(File, PathBuf),
    Cloud {
        store: Arc<dyn ObjectStore>,
        rt: Handle,
        path: ObjPath,
        url: String,
        pending: std::collections::VecDeque<tokio::task::JoinHandle<Result<Bytes>>>,
    },
}

/// A sequential reader of one object (from [`Store::reader`]). Use [`next_chunk`]
/// (typed errors) or `std::io::Read` (errors wrap an [`Error`]: `io::Error::get_ref()` and
/// downcast to get it back).
///
/// [`next_chunk`]: ObjectReader::next_chunk
pub struct ObjectReader {
    counters: Arc<Counters>,
    chunk: u64,
    readahead: usize,
    info: ObjectInfo,
    /// The next offset not yet requested.
    next_fetch: u64,
    /// Bytes handed out so far.
    pos: u64,
    current: Bytes,
    kind: ReaderKind,
}

impl ObjectReader {
    /// What the HEAD at open said (size, ETag, metadata).
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// The next piece of the object, `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        let size = self.info.size;
        if self.pos >= size {
            return Ok(None);
        }
        let bytes = match &mut self.kind {
            ReaderKind::Local(f, path) => {
                let want = crate::num::usize_from((size - self.pos).min(self.chunk));
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match f.read_at(&mut buf[got..], self.pos + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io(path.clone(), e)),
                    }
                }
                Counters::add(&self.counters.bytes_read, got as u64);
                if got != want {
                    return Err(Error::ShortRead {
                        object: path.display().to_string(),
                        offset: self.pos,
                        expected: want as u64,
                        got: got as u64,
                    });
                }
                Bytes::from(buf)
            }
            ReaderKind::Cloud { store, rt, path, url, pending } => {
                while pending.len() < self.readahead && self.next_fetch < size {
                    let end = (self.next_fetch + self.chunk).min(size);
                    pending.push_back(rt.spawn(fetch(
                        store.clone(),
                        path.clone(),
                        url.clone(),
                        self.next_fetch..end,
                        self.info.etag.clone(),
                        self.counters.clone(),
                    )));
                    self.next_fetch = end;
                }
                let Some(job) = pending.pop_front() else { return Ok(None) };
                match rt.block_on(job) {
                    Ok(r) => r?,
                    Err(e) => return Err(Error::Runtime(io::Error::other(e.to_string()))),
                }
            }
        };
        self.pos += bytes.len() as u64;
        Ok(Some(bytes))
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let ReaderKind::Cloud { pending, .. } = &mut self.kind {
            for j in pending.drain(..) {
                j.abort();
            }
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            match self.next_chunk() {
                Ok(Some(b)) => self.current = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(super::mount::to_io(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_plain_relative_names() {
        for ok in ["b/memfile", "0b2c/rootfs.ext4.header", "a b/c", "x"] {
            check_key(ok).unwrap();
        }
        for bad in ["", "/abs", "a//b", "a/../b", "..", "./a", "a/", "a\\b", "a\nb", &"k".repeat(1025)] {
            let e = check_key(bad).unwrap_err();
            assert_eq!(e.kind(), super::super::ErrorKind::Config, "{bad:?}");
        }
    }

    #[test]
    fn part_size_keeps_uploads_under_the_part_limit() {
        assert_eq!(part_size(16 << 20, None), 16 << 20);
        assert_eq!(part_size(16 << 20, Some(1 << 30)), 16 << 20);
        // 500 GiB / 9000 parts = 56.9 MiB, rounded up to 57 MiB.
        let p = part_size(16 << 20, Some(500 << 30));
        assert_eq!(p, 57 << 20);
        assert!((500u64 << 30).div_ceil(p) <= MAX_PARTS);
        assert_eq!(part_size(16 << 20, Some(u64::MAX)), 5 << 30);
    }

    #[test]
    fn azure_metadata_uses_e2bs_encoding() {
        let m: Metadata = [("uncompressed-size".to_string(), "42".to_string())].into();
        let a = encode_metadata(&m, true);
        assert_eq!(a.get(&Attribute::Metadata("uncompressed__size".into())).map(|v| v.as_ref()), Some("42"));
        assert_eq!(decode_metadata(&a, true), m);
        let a = encode_metadata(&m, false);
        assert_eq!(decode_metadata(&a, false), m);
    }

    #[test]
    fn connection_strings() {
        let s = parse_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        ))
        .unwrap();
        assert_eq!(s.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert_eq!(s.key.as_deref(), Some(AZURITE_KEY));
        let s =
            parse_connection_string("AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.usgovcloudapi.net").unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("https://acct.blob.core.usgovcloudapi.net"));
        let s = parse_connection_string(
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2020&sig=x%3D",
        )
        .unwrap();
        assert_eq!((s.account.as_deref(), s.sas.as_deref()), (Some("acct"), Some("sv=2020&sig=x%3D")));
        let s = parse_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        let e = parse_connection_string("AccountName=acct;AccountKey").unwrap_err();
        assert!(!e.contains("acct"), "{e}");
        assert!(parse_connection_string("AccountName=acct").is_err());
        assert!(parse_connection_string("AccountKey=c2VjcmV0").is_err());
    }

    #[test]
    fn azure_needs_an_account() {
        let e = azure_settings(&Env::empty(), "azblob://c").unwrap_err();
        assert_eq!(e.kind(), super::super::ErrorKind::Config);
        assert!(e.to_string().contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
        let s = azure_settings(
            &Env::from_pairs([("AZURE_STORAGE_ACCOUNT_NAME", "acct"), ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")]),
            "azblob://c",
        )
        .unwrap();
        assert_eq!((s.account.as_deref(), s.key.as_deref(), s.endpoint), (Some("acct"), Some("a2V5"), None));
    }

    #[test]
    fn virtual_hosted_endpoints_put_the_bucket_in_the_host() {
        assert_eq!(virtual_hosted("http://minio:9000", "b"), "http://b.minio:9000");
    }
}
