//! External tools, each called from one place, with their output parsed and their failure modes
//! handled there (see `e2fs` for mkfs.ext4 / e2fsck).

pub mod debugfs;
pub mod e2fs;

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::error::{Error, Result};

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
    Err(Error::Environment(format!(
        "{name} not found on PATH or in /usr/sbin; install it with: apt-get install -y {package}"
    )))
}

/// Run a command to completion, capturing its output; failing to start is an environment error.
pub fn run(tool: &'static str, cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|e| Error::Tool { tool, message: format!("cannot start: {e}") })
}

/// The last lines of a tool's stderr/stdout, for error messages.
pub fn tail(out: &Output, lines: usize) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
