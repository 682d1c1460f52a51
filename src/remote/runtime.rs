//! The one small tokio runtime behind the sync API, and request counting.
//!
//! tmpl is synchronous (std I/O, rayon). object_store is async, so the remote layer owns a
//! 2-worker multi-thread runtime, created on first use and kept for the life of the process. Sync
//! callers (the main thread, rayon workers) enter it with `Handle::block_on`; the workers drive the
//! sockets, so many threads may wait at once. Calling the sync API from *inside* a tokio runtime
//! panics (tokio forbids nested `block_on`); tmpl has no other runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use tokio::runtime::{Handle, Runtime};

use super::error::{Error, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The shared runtime's handle, starting it on first use. Also installs rustls' ring crypto
/// provider for the process (object_store is built without aws-lc; reqwest then needs a
/// process-wide provider before the first TLS connection).
pub(crate) fn handle() -> Result<Handle> {
    let rt = RUNTIME.get_or_init(|| {
        // Err means another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tmpl-remote")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(Error::Runtime(std::io::Error::other(e.clone()))),
    }
}

/// Request and byte counts of one [`Store`](super::Store) (all clones of it), since it was
/// opened. `requests` are real HTTP requests: retries, credential fetches and metadata-server
/// calls included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Calls of the store's API (head, read_range, list, put, ...), one per call.
    pub operations: u64,
    /// HTTP requests sent (0 for local storage).
    pub requests: u64,
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub post: u64,
    pub delete: u64,
    /// Responses with a 5xx status (each one was retried or became an error).
    pub server_errors: u64,
    /// Requests that got no response (connection refused or reset, timeout).
    pub transport_errors: u64,
    /// Object bytes received (ranged reads, streams).
    pub bytes_read: u64,
    /// Object bytes sent (puts, multipart parts).
    pub bytes_written: u64,
}

impl Stats {
    /// `self - earlier`, field by field (saturating).
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            operations: self.operations.saturating_sub(earlier.operations),
            requests: self.requests.saturating_sub(earlier.requests),
            get: self.get.saturating_sub(earlier.get),
            head: self.head.saturating_sub(earlier.head),
            put: self.put.saturating_sub(earlier.put),
            post: self.post.saturating_sub(earlier.post),
            delete: self.delete.saturating_sub(earlier.delete),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            transport_errors: self.transport_errors.saturating_sub(earlier.transport_errors),
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub operations: AtomicU64,
    requests: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    delete: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            operations: g(&self.operations),
            requests: g(&self.requests),
            get: g(&self.get),
            head: g(&self.head),
            put: g(&self.put),
            post: g(&self.post),
            delete: g(&self.delete),
            server_errors: g(&self.server_errors),
            transport_errors: g(&self.transport_errors),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
        }
    }

    pub fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// object_store's reqwest connector, counting every request it sends.
#[derive(Debug, Clone)]
pub(crate) struct CountingConnector {
    pub counters: Arc<Counters>,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CountingService { inner, counters: self.counters.clone() }))
    }
}

#[derive(Debug)]
struct CountingService {
    inner: HttpClient,
    counters: Arc<Counters>,
}

#[async_trait::async_trait]
impl HttpService for CountingService {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let c = &self.counters;
        Counters::add(&c.requests, 1);
        let per_method = match req.method().as_str() {
            "GET" => Some(&c.get),
            "HEAD" => Some(&c.head),
            "PUT" => Some(&c.put),
            "POST" => Some(&c.post),
            "DELETE" => Some(&c.delete),
            _ => None,
        };
        if let Some(m) = per_method {
            Counters::add(m, 1);
        }
        let res = self.inner.execute(req).await;
        match &res {
            Ok(r) if r.status().is_server_error() => Counters::add(&c.server_errors, 1),
            Ok(_) => {}
            Err(_) => Counters::add(&c.transport_errors, 1),
        }
        res
    }
}
