//! `debugfs -w`: write into an ext4 image without mounting it (e2fsprogs, no root).
//!
//! Two traps, both handled here (dependencies.md §4, verified with e2fsprogs 1.47.0):
//! - its exit status says nothing about whether a command worked, so every operation is followed
//!   by a marker line (an unknown command whose "Command not found" echo on stderr is
//!   unbuffered, so ordered): the stderr lines between two markers are that operation's errors,
//!   and any such line fails the batch;
//! - it ignores a dirty journal (a later replay erases what it wrote): callers must check
//!   `needs_recovery` first (the editor refuses, or replays with `e2fsck -fy` on request).
//!
//! It also does not overwrite (`write` fails when the file exists) and copies the host file's
//! permission bits, so a file is written as `rm` (when it exists), `write`, then `sif` for mode,
//! uid and gid; and `mkdir` of an existing directory corrupts the filesystem, so callers only
//! create directories they know are missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Result, ToolError};
use super::{find, run};

/// One change, as debugfs commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Remove a file or symlink (must exist).
    Rm(String),
    /// Create `path` from the host file `host` (must not exist), then set mode, owner.
    Write { host: PathBuf, path: String, mode: u16, uid: u32, gid: u32 },
    /// Create a symlink (must not exist).
    Symlink { path: String, target: String },
    /// Create a directory (must not exist), then set its mode and owner.
    Mkdir { path: String, mode: u16, uid: u32, gid: u32 },
}

const MARK: &str = "tmpl_mark_";

/// debugfs splits on whitespace and understands double quotes; refuse what it cannot quote.
fn quote(s: &str) -> Result<String> {
    if s.is_empty() || s.contains(['"', '\n', '\r', '\0']) {
        return Err(ToolError::Unusable {
            input: s.to_string(),
            reason: "the debugfs backend cannot write a path with quotes or line breaks; use --backend mount",
        });
    }
    Ok(if s.contains([' ', '\t']) { format!("\"{s}\"") } else { s.to_string() })
}

impl Op {
    fn lines(&self) -> Result<Vec<String>> {
        Ok(match self {
            Op::Rm(p) => vec![format!("rm {}", quote(p)?)],
            Op::Write { host, path, mode, uid, gid } => {
                let p = quote(path)?;
                vec![
                    format!("write {} {p}", quote(&host.to_string_lossy())?),
                    format!("sif {p} mode 0{:o}", 0o100000 | u32::from(*mode)),
                    format!("sif {p} uid {uid}"),
                    format!("sif {p} gid {gid}"),
                ]
            }
            Op::Symlink { path, target } => vec![format!("symlink {} {}", quote(path)?, quote(target)?)],
            Op::Mkdir { path, mode, uid, gid } => {
                let p = quote(path)?;
                vec![
                    format!("mkdir {p}"),
                    format!("sif {p} mode 0{:o}", 0o040000 | u32::from(*mode)),
                    format!("sif {p} uid {uid}"),
                    format!("sif {p} gid {gid}"),
                ]
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Op::Rm(p) => format!("remove {p}"),
            Op::Write { path, .. } => format!("write {path}"),
            Op::Symlink { path, target } => format!("link {path} -> {target}"),
            Op::Mkdir { path, .. } => format!("mkdir {path}"),
        }
    }
}

/// The command file for `ops`, a marker after each operation.
pub fn script(ops: &[Op]) -> Result<String> {
    let mut s = String::new();
    for (i, op) in ops.iter().enumerate() {
        for l in op.lines()? {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str(&format!("{MARK}{i}\n"));
    }
    Ok(s)
}

/// Split debugfs's stderr into the error lines of each operation. `Err((index, lines))` names
/// the first operation that printed anything.
pub fn attribute(stderr: &str, n_ops: usize) -> std::result::Result<(), (usize, Vec<String>)> {
    let mut current = 0usize;
    let mut errors: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let l = line.trim();
        if l.is_empty() || (l.starts_with("debugfs ") && l.contains('(') && current == 0 && errors.is_empty()) {
            continue; // the version banner
        }
        if let Some(rest) = l.strip_prefix("debugfs: Command not found ")
            && let Some(n) = rest.strip_prefix(MARK).and_then(|n| n.trim().parse::<usize>().ok())
        {
            if !errors.is_empty() {
                return Err((n, errors));
            }
            current = n + 1;
            continue;
        }
        errors.push(l.to_string());
    }
    if !errors.is_empty() {
        return Err((current.min(n_ops.saturating_sub(1)), errors));
    }
    if current < n_ops {
        // debugfs stopped before the end (crashed, or could not open the image).
        return Err((current, vec![format!("debugfs stopped after {current} of {n_ops} operations")]));
    }
    Ok(())
}

/// Apply `ops` to `image` with one `debugfs -w -f` run; fail (naming the operation and what
/// debugfs said) if any operation printed an error.
pub fn apply(image: &Path, ops: &[Op], work: &Path) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let debugfs = find("debugfs", "e2fsprogs")?;
    let cmd_file = work.join("debugfs.cmds");
    std::fs::write(&cmd_file, script(ops)?).map_err(|e| ToolError::write(&cmd_file, e))?;
    let mut child = Command::new(debugfs)
        .arg("-w")
        .arg("-f")
        .arg(&cmd_file)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Start { tool: "debugfs", program: None, source })?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|source| ToolError::Start { tool: "debugfs", program: None, source })?;
    match attribute(&stderr, ops.len()) {
        Ok(()) => Ok(()),
        Err((i, lines)) => Err(ToolError::Failed {
            tool: "debugfs",
            message: format!(
                "{} failed: {} (exit status {})",
                ops.get(i).map(Op::describe).unwrap_or_else(|| "an operation".into()),
                lines.join("; "),
                status.code().unwrap_or(-1)
            ),
        }),
    }
}

/// `debugfs -R "stat PATH"` output, for tests and diagnostics.
pub fn stat(image: &Path, path: &str) -> Result<String> {
    let debugfs = find("debugfs", "e2fsprogs")?;
    let out = run("debugfs", Command::new(debugfs).arg("-R").arg(format!("stat {}", quote(path)?)).arg(image))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_markers() {
        let ops = vec![
            Op::Rm("/sbin/init".into()),
            Op::Write { host: "/w/envd".into(), path: "/usr/bin/envd".into(), mode: 0o755, uid: 0, gid: 0 },
            Op::Symlink { path: "/sbin/init".into(), target: "/usr/bin/envd".into() },
        ];
        let s = script(&ops).unwrap();
        assert_eq!(
            s,
            "rm /sbin/init\ntmpl_mark_0\nwrite /w/envd /usr/bin/envd\nsif /usr/bin/envd mode 0100755\n\
             sif /usr/bin/envd uid 0\nsif /usr/bin/envd gid 0\ntmpl_mark_1\nsymlink /sbin/init /usr/bin/envd\ntmpl_mark_2\n"
        );
        assert!(script(&[Op::Rm("/a\"b".into())]).is_err());
        assert_eq!(quote("/with space").unwrap(), "\"/with space\"");
    }

    #[test]
    fn stderr_is_attributed_to_the_failing_operation() {
        let ok = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Command not found tmpl_mark_0\ndebugfs: Command not found tmpl_mark_1\n";
        assert_eq!(attribute(ok, 2), Ok(()));
        let bad = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Command not found tmpl_mark_0\n\
                   write: Ext2 file already exists \ndebugfs: Command not found tmpl_mark_1\n";
        assert_eq!(attribute(bad, 2), Err((1, vec!["write: Ext2 file already exists".into()])));
        let cut = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Command not found tmpl_mark_0\n";
        assert!(matches!(attribute(cut, 3), Err((1, _))));
        let open_fail =
            "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: Bad magic number in super-block while trying to open img\n";
        assert!(matches!(attribute(open_fail, 1), Err((0, _))));
    }
}
