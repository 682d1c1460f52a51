//! The crate's error type. Domain modules have their own error enums (`vocab::BuildIdError`,
//! `storage::StorageError`, `build::BuildError`, `device::DeviceError`, `rootfs::RootfsError`,
//! `tools::ToolError`, ...); they convert into [`Error`] keeping the domain error (or the I/O
//! error underneath) as the [`std::error::Error::source`]. Each variant has a [`ErrorKind`], and
//! [`Error::exit_code`] derives the documented exit code from the variant and, for I/O, from the
//! I/O error's kind — never from a message's text.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exit_code;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A typed cause kept under an error (downcast it to the domain error it came from).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A cause that is only words: what tmpl found wrong, when no domain error type says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

/// Arguments that clap accepted but that do not make sense (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{flag} is not a valid regex: {source}")]
    BadRegex {
        flag: &'static str,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("{flag} must be between {min} and {max} {unit}")]
    OutOfRange { flag: &'static str, min: u64, max: u64, unit: &'static str },
    #[error("--dir {} and --storage {} name different directories; give one", dir.display(), storage.display())]
    TwoDirectories { dir: PathBuf, storage: PathBuf },
    #[error("--path must be absolute (inside the rootfs), got {0:?}")]
    RelativePath(String),
    #[error("--build-id needs at least one build ID")]
    NoBuildIds,
    #[error("--fork needs a build ID other than the source's")]
    ForkToItself,
    #[error("--drop-snapshot is for in-place edits; a --fork never has a memory snapshot")]
    DropSnapshotWithFork,
    #[error(
        "{why}, and envd as init gets no arguments from the kernel, so --envd-arg cannot be passed; use --as wrapper or --as service"
    )]
    ArgsForInit { why: &'static str },
    #[error(
        "{0:?} is not a backup name: expected a .tmpl-backup-<time> folder of the build (tmpl backups BUILD lists them)"
    )]
    NotABackupName(String),
    #[error("--storage: {0}")]
    StorageUrl(String),
    #[error("--to: {0}")]
    DestinationUrl(String),
    #[error("--to names where a --fork goes; an in-place edit stays where the build is (add --fork)")]
    ToWithoutFork,
    #[error("{var}=pause:{step} needs {needs}")]
    FaultPauseFile { var: &'static str, step: String, needs: &'static str },
    #[error("no man page for {name:?}; there is one for: {known}")]
    NoManPage { name: String, known: String },
    /// What clap refused (unknown flag, missing argument, bad value), in its words.
    #[error("{0}")]
    CommandLine(String),
}

/// The class of an error: its JSON `kind` and, with the I/O error underneath, its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Usage,
    BadBuildId,
    InvalidInput,
    Read,
    PermissionDenied,
    Write,
    Environment,
    Tool,
    Refused,
    VerificationFailed,
    Internal,
}

impl ErrorKind {
    /// The short, stable name in the JSON error document.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::BadBuildId => "bad-build-id",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Read => "read",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::Write => "write",
            ErrorKind::Environment => "environment",
            ErrorKind::Tool => "tool",
            ErrorKind::Refused => "refused",
            ErrorKind::VerificationFailed => "verification-failed",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Everything that can stop a command. Findings about a build are not errors: they are data in
/// the report. An `Error` means the command could not do its job at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments that clap accepted but that do not make sense together.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A build argument that is not a UUID (and not a path).
    #[error(transparent)]
    BadBuildId(#[from] crate::vocab::BuildIdError),
    /// Input that exists but is not what it must be; `source` says what is wrong with it.
    #[error("{}: {source}", path.display())]
    InvalidInput {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    /// Input that could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A permission refused a read: the path, where the permission is missing, which one, and
    /// for which user (environment: exit 4, whatever the command).
    #[error("{denied}")]
    PermissionDenied {
        denied: Box<crate::access::Denied>,
        #[source]
        source: io::Error,
    },
    /// Output that could not be written (disk full, permission).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something about the machine: a storage setting, a kernel, a privilege, threads.
    #[error(transparent)]
    Environment(Cause),
    /// An external tool is missing or failed.
    #[error(transparent)]
    Tool(crate::tools::ToolError),
    /// A safety check refused the operation before anything was written.
    #[error("refused: {message}")]
    Refused { message: String, reasons: Vec<String> },
    /// A verification step failed after a change was prepared; the change was rolled back.
    #[error("verification failed: {0}")]
    VerificationFailed(#[source] Cause),
    /// A precondition inside tmpl did not hold (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::BadBuildId(_) => ErrorKind::BadBuildId,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Read { .. } => ErrorKind::Read,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Write { .. } => ErrorKind::Write,
            Error::Environment(_) => ErrorKind::Environment,
            Error::Tool(t) if t.is_missing() => ErrorKind::Environment,
            Error::Tool(_) => ErrorKind::Tool,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::VerificationFailed(_) => ErrorKind::VerificationFailed,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The documented exit code for this error: from its kind, and for a read from the kind of
    /// the I/O error (a permission or an I/O error is the environment's, anything else means the
    /// input is unusable).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::BadBuildId(_) | Error::InvalidInput { .. } => exit_code::INVALID_INPUT,
            Error::Read { source, .. } if is_environment(source) => exit_code::ENVIRONMENT,
            Error::Read { .. } => exit_code::INVALID_INPUT,
            Error::PermissionDenied { .. } | Error::Write { .. } | Error::Environment(_) | Error::Tool(_) => {
                exit_code::ENVIRONMENT
            }
            Error::Refused { .. } => exit_code::REFUSED,
            Error::VerificationFailed(_) | Error::Internal(_) => exit_code::FINDINGS,
        }
    }

    /// Extra lines (reasons for a refusal) shown under the message.
    pub fn details(&self) -> &[String] {
        match self {
            Error::Refused { reasons, .. } => reasons,
            _ => &[],
        }
    }

    /// Shorthand for a read error with its path; a permission error is diagnosed (where the
    /// permission is missing, which one) into [`Error::PermissionDenied`].
    pub fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        // Local permissions are not why an object store refused a request: keep its message.
        if crate::access::is_denied(&source) && !crate::remote::mount::is_mounted(&path) {
            return Error::PermissionDenied { denied: Box::new(crate::access::diagnose(&path)), source };
        }
        Error::Read { path, source }
    }

    /// A block device (a build's rootfs or memfile through its layers) that could not be opened or
    /// read: a permission or an I/O error on a data file is the environment's (exit 4, the file
    /// named); anything else means the build at `dir` is not usable as it is (exit 3).
    pub fn device(dir: impl Into<PathBuf>, e: crate::device::DeviceError) -> Self {
        use crate::device::DeviceError;
        match e {
            DeviceError::Open { path, source, .. } | DeviceError::Read { path, source, .. }
                if crate::access::is_denied(&source) || is_environment(&source) =>
            {
                Error::read(path, source)
            }
            e => Error::InvalidInput { path: dir.into(), source: Box::new(e) },
        }
    }

    /// The filesystem of a rootfs at `image` (a build folder, or an image file) that could not be
    /// read: the device underneath as [`Error::device`], an I/O error on the image as a read,
    /// anything else (not ext4, corrupt, a path that is not there) invalid input.
    pub fn rootfs(image: impl Into<PathBuf>, e: crate::rootfs::RootfsError) -> Self {
        use crate::rootfs::RootfsError;
        let image = image.into();
        match e {
            RootfsError::Device(d) => Error::device(image, d),
            RootfsError::Sink(source) => Error::Write { path: PathBuf::from("<stdout>"), source },
            e => Error::InvalidInput { path: image, source: Box::new(e) },
        }
    }

    /// A permission problem found before reading (exit 4).
    pub fn denied(denied: crate::access::Denied) -> Self {
        Error::PermissionDenied { denied: Box::new(denied), source: io::Error::from(io::ErrorKind::PermissionDenied) }
    }

    /// Whether this error is a permission problem.
    pub fn is_permission(&self) -> bool {
        match self {
            Error::PermissionDenied { .. } => true,
            Error::Read { source, .. } | Error::Write { source, .. } => crate::access::is_denied(source),
            _ => false,
        }
    }

    /// Shorthand for a write error with its path.
    pub fn write(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Write { path: path.into(), source }
    }

    /// Invalid input at a path, described in words.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidInput { path: path.into(), source: Box::new(Message(message.into())) }
    }

    /// Invalid input at a path, with the domain error that says why.
    pub fn invalid_from(path: impl Into<PathBuf>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::InvalidInput { path: path.into(), source: Box::new(source) }
    }

    /// Something about the machine, with the error that says what.
    pub fn environment(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Environment(Box::new(source))
    }

    /// Something about the machine, described in words.
    pub fn environment_msg(message: impl Into<String>) -> Self {
        Error::Environment(Box::new(Message(message.into())))
    }

    /// A verification that failed, described in words.
    pub fn verification(message: impl Into<String>) -> Self {
        Error::VerificationFailed(Box::new(Message(message.into())))
    }

    /// Shorthand for a refusal with reasons.
    pub fn refused(message: impl Into<String>, reasons: Vec<String>) -> Self {
        Error::Refused { message: message.into(), reasons }
    }

    /// The causes under this error that add to its message, outermost first (a cause whose text
    /// the message above it already contains is left out).
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut above = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let text = s.to_string();
            if !above.contains(&text) {
                out.push(text.clone());
            }
            above = text;
            src = s.source();
        }
        out
    }

    /// The I/O error at the bottom of the chain, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(self);
        let mut found = None;
        while let Some(s) = src {
            if let Some(e) = s.downcast_ref::<io::Error>() {
                found = Some(e);
            }
            src = s.source();
        }
        found
    }
}

impl From<crate::storage::StorageError> for Error {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match e {
            StorageError::BadBuildId(b) => Error::BadBuildId(b),
            StorageError::Url(u) => Error::environment(u),
            StorageError::Io { path, source } => Error::read(path, source),
            // No storage is configured on this machine and E2B's default is not there.
            e @ StorageError::DefaultUnreadable { .. } => Error::Environment(Box::new(e)),
            e => Error::InvalidInput { path: e.path().to_path_buf(), source: Box::new(e) },
        }
    }
}

/// A remote storage failure outside a build's checks: a missing object or one shorter than it
/// must be is the input's (3); permissions, credentials, an unreachable or failing service and
/// bad settings are the environment's (4).
impl From<crate::remote::Error> for Error {
    fn from(e: crate::remote::Error) -> Self {
        use crate::remote::ErrorKind as K;
        match e.kind() {
            K::NotFound | K::Truncated => Error::InvalidInput { path: "remote storage".into(), source: Box::new(e) },
            _ => Error::Environment(Box::new(e)),
        }
    }
}

impl From<crate::tools::ToolError> for Error {
    fn from(e: crate::tools::ToolError) -> Self {
        use crate::tools::ToolError;
        match e {
            ToolError::Write { path, source } => Error::Write { path, source },
            ToolError::Unusable { ref input, .. } => Error::InvalidInput { path: input.into(), source: Box::new(e) },
            e => Error::Tool(e),
        }
    }
}

impl From<crate::build::BuildError> for Error {
    fn from(e: crate::build::BuildError) -> Self {
        use crate::build::BuildError;
        match e {
            BuildError::Io { path, source } => Error::read(path, source),
            e => Error::InvalidInput { path: e.path().to_path_buf(), source: Box::new(e) },
        }
    }
}

/// Read failures of the machine rather than of the input: permissions, I/O errors, out of memory,
/// too many open files (README: exit 4, "environment (missing tool, permission, I/O)").
pub fn is_environment(e: &io::Error) -> bool {
    const EIO: i32 = 5;
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    crate::access::is_denied(e)
        || matches!(e.raw_os_error(), Some(EIO | ENOMEM | ENFILE | EMFILE))
        || matches!(
            e.kind(),
            io::ErrorKind::OutOfMemory
                // A remote storage that did not answer (crate::remote::mount::to_io).
                | io::ErrorKind::TimedOut
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_the_readme_codes() {
        let code = |e: io::Error| Error::read("/nonexistent/x", e).exit_code();
        assert_eq!(code(io::Error::from_raw_os_error(13)), exit_code::ENVIRONMENT);
        assert_eq!(code(io::Error::from_raw_os_error(1)), exit_code::ENVIRONMENT);
        assert_eq!(code(io::Error::from_raw_os_error(5)), exit_code::ENVIRONMENT);
        assert_eq!(code(io::Error::from_raw_os_error(2)), exit_code::INVALID_INPUT);
        assert_eq!(code(io::Error::from(io::ErrorKind::InvalidData)), exit_code::INVALID_INPUT);
        let e = Error::read("/nonexistent/x", io::Error::from_raw_os_error(13));
        assert!(e.is_permission() && e.kind() == ErrorKind::PermissionDenied);
        assert!(e.to_string().starts_with("permission denied: cannot read /nonexistent/x: uid "), "{e}");
    }

    #[test]
    fn causes_are_kept_and_shown_once() {
        let e = Error::invalid_from("/b", crate::vocab::BuildIdError("x".into()));
        let src = std::error::Error::source(&e).unwrap();
        assert!(src.downcast_ref::<crate::vocab::BuildIdError>().is_some(), "the domain error is the source");
        assert!(e.causes().is_empty(), "its text is in the message already: {:?}", e.causes());
        let r = Error::read("/x", io::Error::from_raw_os_error(5));
        assert_eq!(r.io_error().and_then(io::Error::raw_os_error), Some(5));
    }

    #[test]
    fn kinds_have_their_json_names() {
        for (k, n) in [(ErrorKind::BadBuildId, "bad-build-id"), (ErrorKind::VerificationFailed, "verification-failed")]
        {
            assert_eq!(k.name(), n);
            assert_eq!(serde_json::to_value(k).unwrap(), n);
        }
    }
}
