//! The crate's error type. Variants are grouped by what the operator can do about them, and
//! [`Error::exit_code`] maps each one to a documented exit code without a catch-all arm.

use std::io;
use std::path::PathBuf;

use crate::exit_code;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a command. Findings about a build are not errors: they are data in
/// the report. An `Error` means the command could not do its job at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments that clap accepted but that do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A build argument that is not a UUID (and not a path).
    #[error(
        "invalid build ID {0:?}: expected a UUID such as 11111111-2222-3333-4444-555555555555, or a path to a build directory"
    )]
    BadBuildId(String),
    /// Input that exists but is not what it must be.
    #[error("{}: {message}", path.display())]
    InvalidInput { path: PathBuf, message: String },
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
    /// Something about the machine: a missing tool, a missing privilege.
    #[error("{0}")]
    Environment(String),
    /// An external tool failed; `message` is what it said, already parsed.
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    /// A safety check refused the operation before anything was written.
    #[error("refused: {message}")]
    Refused { message: String, reasons: Vec<String> },
    /// A verification step failed after a change was prepared; the change was rolled back.
    #[error("verification failed: {0}")]
    VerificationFailed(String),
}

impl Error {
    /// The documented exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::BadBuildId(_) => exit_code::INVALID_INPUT,
            Error::InvalidInput { .. } => exit_code::INVALID_INPUT,
            Error::Read { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => exit_code::ENVIRONMENT,
                _ if is_environment(source) => exit_code::ENVIRONMENT,
                _ => exit_code::INVALID_INPUT,
            },
            Error::PermissionDenied { .. } => exit_code::ENVIRONMENT,
            Error::Write { .. } => exit_code::ENVIRONMENT,
            Error::Environment(_) => exit_code::ENVIRONMENT,
            Error::Tool { .. } => exit_code::ENVIRONMENT,
            Error::Refused { .. } => exit_code::REFUSED,
            Error::VerificationFailed(_) => exit_code::FINDINGS,
        }
    }

    /// A short, stable name for the JSON error document.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::BadBuildId(_) => "bad-build-id",
            Error::InvalidInput { .. } => "invalid-input",
            Error::Read { .. } => "read",
            Error::PermissionDenied { .. } => "permission-denied",
            Error::Write { .. } => "write",
            Error::Environment(_) => "environment",
            Error::Tool { .. } => "tool",
            Error::Refused { .. } => "refused",
            Error::VerificationFailed(_) => "verification-failed",
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
        if crate::access::is_denied(&source) {
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
                if crate::access::is_denied(&source) =>
            {
                Error::PermissionDenied { denied: Box::new(crate::access::diagnose(&path)), source }
            }
            DeviceError::Open { path, source, .. } | DeviceError::Read { path, source, .. }
                if is_environment(&source) =>
            {
                Error::Read { path, source }
            }
            e => Error::invalid(dir, e.to_string()),
        }
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

    /// Shorthand for invalid input at a path.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidInput { path: path.into(), message: message.into() }
    }

    /// Shorthand for a refusal with reasons.
    pub fn refused(message: impl Into<String>, reasons: Vec<String>) -> Self {
        Error::Refused { message: message.into(), reasons }
    }
}

/// Read failures of the machine rather than of the input: I/O errors, out of memory, too many
/// open files (README: exit 4, "environment (missing tool, permission, I/O)").
fn is_environment(e: &io::Error) -> bool {
    const EIO: i32 = 5;
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(EIO | ENOMEM | ENFILE | EMFILE)) || e.kind() == io::ErrorKind::OutOfMemory
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
        assert!(e.is_permission() && e.kind() == "permission-denied");
        assert!(e.to_string().starts_with("permission denied: cannot read /nonexistent/x: uid "), "{e}");
    }
}
