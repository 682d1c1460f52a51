//! Errors of the remote storage layer, each classified into an [`ErrorKind`] so a command can map
//! it to an exit code without looking at messages.
//!
//! `object_store` reports 404, 403 and 401 as their own variants, but everything else (5xx after
//! retries, timeouts, connections cut mid-body, TLS failures) arrives as one `Generic` error with
//! a boxed source. [`classify`] recovers the kind from that source chain: the public
//! `object_store::client::HttpError` carries the transport kind, and the status of a failed
//! request is part of the retry error's message (object_store 0.14 keeps that type private). The
//! tests against real servers (tests/remote.rs) pin each case, so an upgrade that changes the
//! wording fails there first.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use object_store::client::{HttpError, HttpErrorKind};

/// Result alias of the remote layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms an operator acts on. Every [`Error`] has exactly one kind.
///
/// Suggested exit codes (the integrating command decides): `NotFound` and `Truncated` are about
/// the build (3, invalid input); `Permission`, `Unavailable` and `Timeout` are about the
/// environment (4); `Config` is a usage error when it came from `--storage` (2) and an
/// environment error when it came from the environment (4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The object (or bucket/container) does not exist.
    NotFound,
    /// Credentials are missing, unusable or not allowed to do this (401, 403, no credential
    /// source).
    Permission,
    /// The service failed transiently (5xx, 429, connection refused or reset) and kept failing
    /// after the retries.
    Unavailable,
    /// No answer in time (connect, idle read or whole-request timeout) after the retries.
    Timeout,
    /// The storage URL, the environment or the configuration is invalid.
    Config,
    /// Fewer bytes than expected: the object is shorter than the caller needs, the server
    /// answered a range with less data, or the transfer was cut mid-body and could not be
    /// resumed.
    Truncated,
    /// Anything else (an unexpected answer, a local I/O error, a TLS failure).
    Other,
}

impl ErrorKind {
    /// A short stable name (`not-found`, `permission`, ...), as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Permission => "permission",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Config => "config",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Other => "other",
        }
    }
}

/// An error of the remote storage layer. Messages name the object as a URL
/// (`s3://bucket/<build>/memfile`), never a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A storage URL that E2B's orchestrator would refuse (the message follows E2B's wording).
    #[error("storage URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with any userinfo removed.
        url: String,
        reason: String,
    },
    /// An environment variable with a value E2B's orchestrator would refuse.
    #[error("{var}={value:?}: {reason}")]
    InvalidEnv { var: &'static str, value: String, reason: String },
    /// A configuration that cannot work (e.g. an Azure container with no account).
    #[error("{store}: {reason}")]
    Config { store: String, reason: String },
    /// An object key that is not a plain relative name (`..`, empty segments, ...).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The object does not exist.
    #[error("{object}: not found")]
    NotFound {
        object: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The service refused the request (403/401): wrong or insufficient credentials.
    #[error("{object}: permission denied ({detail})")]
    PermissionDenied {
        object: String,
        detail: String,
        #[source]
        source: object_store::Error,
    },
    /// No credentials could be obtained for the store.
    #[error("{store}: no credentials ({hint})")]
    NoCredentials {
        store: String,
        /// Which variables or sources would provide them.
        hint: String,
        #[source]
        source: object_store::Error,
    },
    /// The service kept failing transiently (5xx, connection refused/reset) after the retries.
    #[error("{object}: service unavailable after retries")]
    Unavailable {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// No answer in time, after the retries.
    #[error("{object}: timed out")]
    Timeout {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// The transfer was cut mid-body and could not be resumed.
    #[error("{object}: transfer cut before the end of the data")]
    TransferCut {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// The store answered with fewer bytes than asked for inside the object's size (the object
    /// shrank, or a proxy cut it without an error).
    #[error("{object}: short read at byte {offset}: asked for {expected} bytes, got {got}")]
    ShortRead { object: String, offset: u64, expected: u64, got: u64 },
    /// A read past the end of the object: the object is shorter than the caller expects.
    #[error("{object}: read of {len} bytes at byte {offset} goes past the end of the object ({size} bytes)")]
    PastEnd { object: String, offset: u64, len: u64, size: u64 },
    /// The object was replaced while it was being read (its ETag changed).
    #[error("{object}: changed while being read (ETag {before:?}, now {after:?})")]
    Changed { object: String, before: String, after: String },
    /// An object larger than the caller allows reading whole (e.g. a 1 GiB `metadata.json`).
    #[error("{object}: {size} bytes, more than the {max} bytes allowed")]
    TooLarge { object: String, size: u64, max: u64 },
    /// A listing returned more entries than the configured cap.
    #[error("{prefix}: listing has more than {cap} entries")]
    TooManyEntries { prefix: String, cap: usize },
    /// Any other failure of the object store client.
    #[error("{object}: {source}")]
    Store {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file (Local storage, or the source of an upload) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The I/O runtime could not be started.
    #[error("cannot start the remote I/O runtime: {0}")]
    Runtime(#[source] io::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. } | Error::InvalidEnv { .. } | Error::Config { .. } | Error::InvalidKey { .. } => {
                ErrorKind::Config
            }
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::PermissionDenied { .. } | Error::NoCredentials { .. } => ErrorKind::Permission,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::TransferCut { .. } | Error::ShortRead { .. } | Error::PastEnd { .. } => ErrorKind::Truncated,
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::Permission,
                io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
                _ => ErrorKind::Other,
            },
            Error::Changed { .. }
            | Error::TooLarge { .. }
            | Error::TooManyEntries { .. }
            | Error::Store { .. }
            | Error::Runtime(_) => ErrorKind::Other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

/// The transport-level kind of a failed object_store call, from its source chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A request got a 5xx, 429 or 408 until the retries ran out.
    Status(u16),
    /// A connection could not be made or broke before a response.
    Connect,
    /// Timed out (connect, idle read or the whole request).
    Timeout,
    /// The response body broke off (error while reading the body of a 2xx response).
    Body,
    /// Something else.
    Other,
}

/// Find the transport kind of an `object_store::Error::Generic`.
///
/// A body error surfaces as `Generic { source: HttpError }` directly (object_store's
/// `retry_stream` returns it once its resume attempts are spent); a request that failed carries
/// a private retry error whose source chain ends in an `HttpError`, or whose message names the
/// status (`Server returned non-2xx status code: 503 Service Unavailable`).
pub(crate) fn transport(err: &object_store::Error) -> Transport {
    let object_store::Error::Generic { source, .. } = err else {
        return Transport::Other;
    };
    if let Some(h) = source.downcast_ref::<HttpError>() {
        return match h.kind() {
            HttpErrorKind::Timeout => Transport::Timeout,
            _ => Transport::Body,
        };
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(source.as_ref());
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            return match h.kind() {
                HttpErrorKind::Timeout => Transport::Timeout,
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => Transport::Connect,
                _ => Transport::Other,
            };
        }
        let msg = e.to_string();
        if let Some(code) = status_in(&msg) {
            return Transport::Status(code);
        }
        // object_store checks the Content-Range of some answers itself (Azure): a range that
        // starts at or past the end is then this message, not a 416.
        if msg.starts_with("Wanted range starting at ") {
            return Transport::Status(416);
        }
        cur = e.source();
    }
    Transport::Other
}

/// The HTTP status in object_store's "non-2xx status code: 503 ..." message.
fn status_in(msg: &str) -> Option<u16> {
    const NEEDLE: &str = "status code: ";
    let i = msg.find(NEEDLE)? + NEEDLE.len();
    let digits = msg.get(i..i + 3)?;
    digits.parse().ok().filter(|c| (100..600).contains(c))
}

/// Turn an object_store error about `object` into a classified [`Error`].
pub(crate) fn classify(object: String, err: object_store::Error) -> Error {
    match err {
        object_store::Error::NotFound { .. } => Error::NotFound { object, source: Box::new(err) },
        object_store::Error::PermissionDenied { .. } => {
            Error::PermissionDenied { object, detail: "403: the credentials are not allowed this".into(), source: err }
        }
        object_store::Error::Unauthenticated { .. } => {
            Error::PermissionDenied { object, detail: "401: the credentials were not accepted".into(), source: err }
        }
        object_store::Error::Generic { .. } => match transport(&err) {
            Transport::Status(s) if s >= 500 || s == 429 || s == 408 => Error::Unavailable { object, source: err },
            Transport::Status(404) => Error::NotFound { object, source: Box::new(err) },
            Transport::Status(401 | 403) => {
                Error::PermissionDenied { object, detail: "the credentials were not accepted".into(), source: err }
            }
            Transport::Connect => Error::Unavailable { object, source: err },
            Transport::Timeout => Error::Timeout { object, source: err },
            Transport::Body => Error::TransferCut { object, source: err },
            Transport::Status(_) | Transport::Other => Error::Store { object, source: err },
        },
        other => Error::Store { object, source: other },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_object_stores_message() {
        assert_eq!(status_in("Server returned non-2xx status code: 503 Service Unavailable: "), Some(503));
        assert_eq!(status_in("Server returned non-2xx status code: 429 Too Many Requests"), Some(429));
        assert_eq!(status_in("status code: 9"), None);
        assert_eq!(status_in("no status here"), None);
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::Permission,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Config,
            ErrorKind::Truncated,
            ErrorKind::Other,
        ];
        let names: std::collections::BTreeSet<_> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), kinds.len());
        for k in kinds {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn not_found_and_permission_map_without_retry_details() {
        let e = classify("s3://b/k".into(), object_store::Error::NotFound { path: "k".into(), source: "404".into() });
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "s3://b/k: not found");
        let e = classify(
            "s3://b/k".into(),
            object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() },
        );
        assert_eq!(e.kind(), ErrorKind::Permission);
    }
}
