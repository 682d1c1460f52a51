//! External tools, each called from one place, with their output parsed and their failure modes
//! handled there (see `e2fs` for mkfs.ext4 / e2fsck).

pub mod debugfs;
pub mod e2fs;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Result of a tool call.
pub type Result<T, E = ToolError> = std::result::Result<T, E>;

/// Why an external tool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed (the environment's: exit 4).
    #[error("{name} not found on PATH or in /usr/sbin; install it with: apt-get install -y {package}")]
    Missing { name: String, package: String },
    /// The tool could not be started (or waited for).
    #[error("{tool} failed: cannot start{}: {source}", program.as_deref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Start {
        tool: &'static str,
        program: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    /// Talking to a running tool failed (its API socket).
    #[error("{tool} failed: {what}: {source}")]
    Io {
        tool: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    /// The tool ran and failed; `message` is what it said, already parsed.
    #[error("{tool} failed: {message}")]
    Failed { tool: &'static str, message: String },
    /// A file the call needs could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Input the tool cannot be given (a path debugfs cannot quote); the message is the reason,
    /// the input is named by whoever shows it.
    #[error("{reason}")]
    Unusable { input: String, reason: &'static str },
}

impl ToolError {
    /// Is the tool missing (rather than failing)?
    pub fn is_missing(&self) -> bool {
        matches!(self, ToolError::Missing { .. })
    }

    /// A call that failed with the tool's own words.
    pub fn failed(tool: &'static str, message: impl Into<String>) -> Self {
        ToolError::Failed { tool, message: message.into() }
    }

    fn write(path: &Path, source: io::Error) -> Self {
        ToolError::Write { path: path.to_path_buf(), source }
    }
}

/// Directories searched after `PATH` (e2fsprogs lives in /sbin, often not on a user's PATH).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Find an executable by name; `package` names the Debian package for the error message.
pub fn find(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(EXTRA_DIRS.iter().map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ToolError::Missing { name: name.to_string(), package: package.to_string() })
}

/// Run a command to completion, capturing its output; failing to start is an environment error.
pub fn run(tool: &'static str, cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|source| ToolError::Start { tool, program: None, source })
}

/// The last lines of a tool's stderr/stdout, for error messages.
pub fn tail(out: &Output, lines: usize) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
