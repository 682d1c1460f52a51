//! Is the orchestrator running on this node? Answered without taking its lock.
//!
//! Since e2b-dev/infra 1320d6e38 (2026-06) the orchestrator holds an exclusive `flock` on
//! `ORCHESTRATOR_LOCK_PATH` and writes its PID into the file, removing it on a clean exit; from
//! 2025-05 to 2026-06 the file's mere existence was the guard (e2b-formats.md §4). Taking the
//! lock, even briefly, could make an orchestrator starting at that moment fail, so the lock is
//! read from `/proc/locks` (`sys::flock_holders`). A second signal is Firecracker processes
//! holding files of the builds being purged (`sys::holders`), which also catches development
//! mode, where no lock is taken.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

/// State of the orchestrator lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    /// No lock file: no orchestrator (or one in development mode).
    Absent,
    /// Someone holds a lock on it.
    Held,
    /// Not locked, but it names a live process (an orchestrator from before 2026-06).
    PidAlive,
    /// Not locked and it names a process that is gone: left by a crash.
    Stale,
    /// Not locked and names no process: an orchestrator from before 2026-06 may be running.
    Unlocked,
    /// Could not be inspected.
    Unknown,
}

/// A process holding one of the purged files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: u32,
    pub comm: String,
    pub path: PathBuf,
}

/// The verdict on liveness with its evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Liveness {
    pub lock_path: PathBuf,
    pub lock: LockState,
    /// PIDs holding the lock, or the PID written in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Firecracker processes with files of the selected builds open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firecracker: Vec<ProcRef>,
    /// Whether the orchestrator counts as running (only the shared chunk cache is purged then,
    /// unless forced).
    pub running: bool,
    /// One line saying why.
    pub reason: String,
}

impl Liveness {
    /// Add Firecracker evidence found while checking open files.
    pub fn add_firecracker(&mut self, procs: Vec<ProcRef>) {
        if procs.is_empty() {
            return;
        }
        let list: Vec<String> = procs.iter().take(3).map(|p| format!("pid {} ({})", p.pid, p.comm)).collect();
        let why = format!("Firecracker processes hold files of these builds: {}", list.join(", "));
        self.reason = if self.running { format!("{}; {why}", self.reason) } else { why };
        self.running = true;
        self.firecracker = procs;
    }
}

/// Probe the lock at `path` without taking it.
pub fn probe(path: &Path) -> Liveness {
    let mk = |lock, pids, running, reason: String| Liveness {
        lock_path: path.to_path_buf(),
        lock,
        pids,
        firecracker: Vec::new(),
        running,
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return mk(LockState::Absent, vec![], false, format!("no lock file at {}", path.display()));
        }
        Err(e) => {
            return mk(LockState::Unknown, vec![], true, format!("cannot inspect the lock {}: {e}", path.display()));
        }
        Ok(_) => {}
    }
    match sys::flock_holders(path) {
        Ok(pids) if !pids.is_empty() => {
            let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
            return mk(
                LockState::Held,
                pids,
                true,
                format!("the orchestrator lock {} is held by pid {}", path.display(), list.join(", ")),
            );
        }
        Ok(_) => {}
        Err(e) => {
            return mk(
                LockState::Unknown,
                vec![],
                true,
                format!("cannot read /proc/locks for {}: {e}", path.display()),
            );
        }
    }
    match read_pid(path) {
        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => mk(
            LockState::PidAlive,
            vec![pid],
            true,
            format!(
                "{} is not locked but names live pid {pid} (an orchestrator before 2026-06 only creates the file)",
                path.display()
            ),
        ),
        Some(pid) => mk(
            LockState::Stale,
            vec![pid],
            false,
            format!("{} is left over: not locked and pid {pid} is gone", path.display()),
        ),
        None => mk(
            LockState::Unlocked,
            vec![],
            true,
            format!(
                "{} exists without a lock or a PID: an orchestrator before 2026-06 may be running (--force if it is stopped)",
                path.display()
            ),
        ),
    }
}

/// The PID written in the lock file (first line, at most 64 bytes read).
fn read_pid(path: &Path) -> Option<u32> {
    let mut buf = [0u8; 64];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_whitespace().next()?.parse::<u32>().ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_states() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("orchestrator.lock");
        assert_eq!(probe(&p).lock, LockState::Absent);
        assert!(!probe(&p).running);

        std::fs::write(&p, b"").unwrap();
        assert_eq!(probe(&p).lock, LockState::Unlocked);
        assert!(probe(&p).running);

        std::fs::write(&p, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(probe(&p).lock, LockState::PidAlive);

        std::fs::write(&p, b"4194304999").unwrap();
        assert_eq!(probe(&p).lock, LockState::Stale);
        assert!(!probe(&p).running);

        let f = std::fs::File::open(&p).unwrap();
        f.lock().unwrap();
        let l = probe(&p);
        assert_eq!(l.lock, LockState::Held);
        assert_eq!(l.pids, vec![std::process::id()]);
        assert!(l.running && l.reason.contains("held by pid"));
        f.unlock().unwrap();
    }
}
