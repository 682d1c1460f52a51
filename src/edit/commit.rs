//! Multi-file commits that survive being killed at any point.
//!
//! An edit (or a restore) changes several files of a build folder: the rootfs and its header,
//! metadata.json, the manifest, and with `--drop-snapshot` the snapfile and memfiles. Each file is
//! replaced by one `rename(2)`, which is atomic; the set is not. So before the first rename a
//! small journal, [`JOURNAL`], is written into the build folder (atomically, fsynced): every step
//! with the inode of the file it moves, and what undoes it. Because a rename keeps the inode, the
//! state of each step can be told afterwards from the files alone — done (the destination has the
//! inode), pending (the source has it) — without trusting any timing.
//!
//! A run killed in the middle leaves the journal. The next tmpl that takes the build's lock
//! ([`recover`]) completes the commit when every pending step still has its source (the new files
//! were verified before the journal was written), and otherwise rolls the done steps back; `verify`
//! reports the journal as an interrupted commit. The callers order the steps so that every state
//! in between is one the orchestrator either serves correctly or refuses (see `apply`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fault;
use crate::error::{Error, Result};
pub use crate::vocab::journal::{
    BACKUP_PREFIX, JOURNAL, JOURNAL_NEW, Journal, JournalError, Kind, Step, StepState, Undo, WORK_PREFIX, read, state,
};

/// fsync a file by path.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::write(path, e))
}

/// fsync a directory, so the renames in it are on disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::write(dir, e))
}

/// Create `path` with `bytes`, fsynced.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| Error::write(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::write(path, e))
}

/// A step moving the existing file `from` to `to` (both relative to `dir`), undone as `undo`
/// says. Reads the inode now.
pub fn step(dir: &Path, from: &str, to: &str, undo: Undo) -> Result<Step> {
    let p = dir.join(from);
    let ino = std::fs::symlink_metadata(&p).map_err(|e| Error::read(&p, e))?.ino();
    Ok(Step { from: from.to_string(), to: to.to_string(), ino, undo })
}

fn write_journal(dir: &Path, j: &Journal) -> Result<()> {
    let text =
        serde_json::to_string_pretty(j).map_err(|e| Error::write(dir.join(JOURNAL), std::io::Error::other(e)))?;
    let tmp = dir.join(JOURNAL_NEW);
    write_synced(&tmp, format!("{text}\n").as_bytes())?;
    let live = dir.join(JOURNAL);
    std::fs::rename(&tmp, &live).map_err(|e| Error::write(&live, e))?;
    sync_dir(dir)
}

/// Remove tmpl folders named in a journal (never following a link).
fn remove_folders(dir: &Path, names: &[String]) -> Vec<String> {
    let mut failed = Vec::new();
    for n in names {
        let p = dir.join(n);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                if let Err(e) = std::fs::remove_dir_all(&p) {
                    failed.push(format!("{}: {e}", p.display()));
                }
            }
            Ok(_) => failed.push(format!("{} is not a folder; left alone", p.display())),
            Err(_) => {}
        }
    }
    failed
}

/// Remove the journal (the commit is settled), then fsync the folder.
fn remove_journal(dir: &Path) -> Result<()> {
    let p = dir.join(JOURNAL);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::write(&p, e)),
    }
    sync_dir(dir)
}

fn rename_in(dir: &Path, from: &str, to: &str) -> Result<()> {
    let (f, t) = (dir.join(from), dir.join(to));
    std::fs::rename(&f, &t).map_err(|e| Error::write(&t, e))
}

/// Finish: every step is done; remove the folders the commit no longer needs, then the journal.
fn complete_tail(dir: &Path, j: &Journal) -> Result<Vec<String>> {
    sync_dir(dir)?;
    fault::point("commit:synced")?;
    let failed = remove_folders(dir, &j.remove_on_complete);
    fault::point("commit:cleaned")?;
    remove_journal(dir)?;
    Ok(failed)
}

/// Undo every done step, last first; then remove the rollback folders and the journal.
fn roll_back(dir: &Path, j: &Journal) -> Result<Vec<String>> {
    let mut failed = Vec::new();
    for s in j.steps.iter().rev() {
        if state(dir, s) != StepState::Done {
            continue;
        }
        let r = match &s.undo {
            Undo::MoveBack => rename_in(dir, &s.to, &s.from),
            Undo::Restore { original } => rename_in(dir, original, &s.to),
            Undo::Delete => std::fs::remove_file(dir.join(&s.to)).map_err(|e| Error::write(dir.join(&s.to), e)),
        };
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    sync_dir(dir)?;
    if !failed.is_empty() {
        return Err(Error::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!(
                "rolling back an interrupted commit failed: {}; the journal {} is kept",
                failed.join("; "),
                dir.join(JOURNAL).display()
            )),
        });
    }
    let left = remove_folders(dir, &j.remove_on_rollback);
    remove_journal(dir)?;
    Ok(left)
}

/// Run a commit: write the journal, do every step in order, then settle. On an error the done
/// steps are undone (and the error returned); if even that fails, the journal stays for
/// [`recover`] and the error says so. Returns folders that could not be removed at the end.
pub fn run(dir: &Path, j: &Journal) -> Result<Vec<String>> {
    write_journal(dir, j)?;
    let forward = (|| -> Result<Vec<String>> {
        fault::point("commit:journal")?;
        for s in &j.steps {
            rename_in(dir, &s.from, &s.to)?;
            fault::point(&format!("commit:{}", s.live()))?;
        }
        complete_tail(dir, j)
    })();
    match forward {
        Ok(left) => Ok(left),
        Err(e) => match roll_back(dir, j) {
            Ok(_) => Err(e),
            Err(rb) => Err(Error::Write {
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!(
                    "{e}; then {rb}. Run `tmpl backups {} --recover` to finish or undo it",
                    j.build_id
                )),
            }),
        },
    }
}

/// What [`recover`] did with an interrupted commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The pending steps were done: the build is in the new state.
    Completed,
    /// The done steps were undone: the build is as it was before.
    RolledBack,
}

/// An interrupted commit settled by [`recover`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recovered {
    pub journal: Journal,
    pub outcome: Outcome,
    /// Steps that had been done when the commit was interrupted.
    pub steps_done: usize,
    /// Folders that could not be removed afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
}

impl Recovered {
    /// One line for a report.
    pub fn describe(&self) -> String {
        format!(
            "an interrupted {} commit (tmpl {}, pid {}, started {}) was {}: {} of {} steps had been done",
            match self.journal.kind {
                Kind::Edit => "edit",
                Kind::Restore => "restore",
            },
            self.journal.command,
            self.journal.pid,
            self.journal.started_at,
            match self.outcome {
                Outcome::Completed => "completed",
                Outcome::RolledBack => "rolled back",
            },
            self.steps_done,
            self.journal.steps.len()
        )
    }
}

/// Settle an interrupted commit in `dir`, if there is one. The caller holds the build's
/// exclusive lock (so the run that wrote the journal is gone). Completes the commit when no step
/// is lost; with a lost step (a file moved by hand) nothing is touched and the error lists every
/// step's state.
pub fn recover(dir: &Path) -> Result<Option<Recovered>> {
    let _ = std::fs::remove_file(dir.join(JOURNAL_NEW));
    let j = match read(dir) {
        Ok(None) => return Ok(None),
        Ok(Some(j)) => j,
        Err(e) => {
            return Err(Error::refused(
                format!("{} holds a damaged commit journal", dir.display()),
                vec![
                    e.to_string(),
                    format!("compare the build with its newest .tmpl-backup-* folder and remove {JOURNAL} by hand"),
                ],
            ));
        }
    };
    let states = j.states(dir);
    let steps_done = states.iter().filter(|s| **s == StepState::Done).count();
    if states.contains(&StepState::Lost) {
        let lines = j
            .steps
            .iter()
            .zip(&states)
            .map(|(s, st)| format!("{} -> {}: {st:?}", s.from, s.to).to_lowercase())
            .collect();
        return Err(Error::refused(
            format!(
                "the interrupted commit in {} cannot be completed or undone: files it moves are missing (moved by hand?)",
                dir.display()
            ),
            lines,
        ));
    }
    for s in j.steps.iter().zip(&states).filter(|(_, st)| **st == StepState::Pending).map(|(s, _)| s) {
        rename_in(dir, &s.from, &s.to)?;
    }
    let left = complete_tail(dir, &j)?;
    Ok(Some(Recovered { journal: j, outcome: Outcome::Completed, steps_done, left }))
}

/// Roll an interrupted commit back instead of completing it (`tmpl backups --recover
/// --roll-back`).
pub fn roll_back_interrupted(dir: &Path) -> Result<Option<Recovered>> {
    let _ = std::fs::remove_file(dir.join(JOURNAL_NEW));
    let j = match read(dir) {
        Ok(None) => return Ok(None),
        Ok(Some(j)) => j,
        Err(e) => {
            return Err(Error::refused(
                format!("{} holds a damaged commit journal", dir.display()),
                vec![e.to_string()],
            ));
        }
    };
    let states = j.states(dir);
    let steps_done = states.iter().filter(|s| **s == StepState::Done).count();
    let left = roll_back(dir, &j)?;
    Ok(Some(Recovered { journal: j, outcome: Outcome::RolledBack, steps_done, left }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn setup() -> (tempfile::TempDir, Journal) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir(dir.join(".tmpl-work-1")).unwrap();
        std::fs::create_dir(dir.join(".tmpl-backup-1")).unwrap();
        std::fs::write(dir.join("rootfs.ext4"), b"old image").unwrap();
        std::fs::hard_link(dir.join("rootfs.ext4"), dir.join(".tmpl-backup-1/rootfs.ext4")).unwrap();
        std::fs::write(dir.join(".tmpl-work-1/rootfs.ext4"), b"new image").unwrap();
        std::fs::write(dir.join("snapfile"), b"snap").unwrap();
        std::fs::write(dir.join(".tmpl-work-1/tmpl-manifest.json"), b"{}").unwrap();
        let j = Journal {
            format_version: 1,
            kind: Kind::Edit,
            command: "inject-envd".into(),
            build_id: "b".into(),
            pid: 1,
            started_at: "t".into(),
            steps: vec![
                step(dir, "snapfile", ".tmpl-backup-1/snapfile", Undo::MoveBack).unwrap(),
                step(
                    dir,
                    ".tmpl-work-1/rootfs.ext4",
                    "rootfs.ext4",
                    Undo::Restore { original: ".tmpl-backup-1/rootfs.ext4".into() },
                )
                .unwrap(),
                step(dir, ".tmpl-work-1/tmpl-manifest.json", "tmpl-manifest.json", Undo::Delete).unwrap(),
            ],
            remove_on_complete: vec![".tmpl-work-1".into()],
            remove_on_rollback: vec![".tmpl-work-1".into(), ".tmpl-backup-1".into()],
        };
        (d, j)
    }

    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in walk(dir) {
            let rel = e.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&e).unwrap_or_default()));
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if p.is_dir() {
                out.extend(walk(&p));
            }
        }
        out
    }

    #[test]
    fn a_commit_runs_every_step_and_settles() {
        let (d, j) = setup();
        let dir = d.path();
        assert!(run(dir, &j).unwrap().is_empty());
        assert_eq!(std::fs::read(dir.join("rootfs.ext4")).unwrap(), b"new image");
        assert_eq!(std::fs::read(dir.join(".tmpl-backup-1/rootfs.ext4")).unwrap(), b"old image");
        assert_eq!(std::fs::read(dir.join(".tmpl-backup-1/snapfile")).unwrap(), b"snap");
        assert!(!dir.join("snapfile").exists() && !dir.join(".tmpl-work-1").exists());
        assert!(!dir.join(JOURNAL).exists());
    }

    /// Interrupted after each number of steps (as a kill leaves it, journal written): recovery
    /// completes; rolling back instead restores the original listing exactly.
    #[test]
    fn every_interruption_is_completed_or_rolled_back() {
        for done in 0..=3 {
            for complete in [true, false] {
                let (d, j) = setup();
                let dir = d.path();
                let before = listing(dir);
                write_journal(dir, &j).unwrap();
                for s in &j.steps[..done] {
                    rename_in(dir, &s.from, &s.to).unwrap();
                }
                let r = if complete { recover(dir) } else { roll_back_interrupted(dir) };
                let r = r.unwrap().unwrap();
                assert_eq!(r.steps_done, done);
                assert!(!dir.join(JOURNAL).exists());
                if complete {
                    assert_eq!(r.outcome, Outcome::Completed);
                    assert_eq!(std::fs::read(dir.join("rootfs.ext4")).unwrap(), b"new image");
                    assert!(dir.join("tmpl-manifest.json").exists() && !dir.join("snapfile").exists());
                } else {
                    assert_eq!(r.outcome, Outcome::RolledBack);
                    let after = listing(dir);
                    let want: Vec<_> = before.into_iter().filter(|(n, _)| !n.starts_with(".tmpl-")).collect();
                    assert_eq!(after, want, "{done} steps done");
                }
                assert!(recover(dir).unwrap().is_none(), "settled");
            }
        }
    }

    #[test]
    fn a_lost_file_stops_recovery_and_changes_nothing() {
        let (d, j) = setup();
        let dir = d.path();
        write_journal(dir, &j).unwrap();
        rename_in(dir, &j.steps[0].from, &j.steps[0].to).unwrap();
        std::fs::remove_file(dir.join(".tmpl-work-1/rootfs.ext4")).unwrap();
        let before = listing(dir);
        let e = recover(dir).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit_code::REFUSED);
        assert!(e.details().iter().any(|l| l.contains("lost")), "{e:?}");
        assert_eq!(listing(dir), before);
    }

    #[test]
    fn a_hostile_journal_is_refused() {
        let (d, mut j) = setup();
        let dir = d.path();
        j.steps[0].to = "../../etc/passwd".into();
        write_journal(dir, &j).unwrap();
        assert!(recover(dir).unwrap_err().to_string().contains("damaged"));
        j.steps[0].to = ".tmpl-backup-1/snapfile".into();
        j.remove_on_complete = vec!["rootfs.ext4".into()];
        write_journal(dir, &j).unwrap();
        assert!(read(dir).unwrap_err().to_string().contains("rootfs.ext4"));
        for ok in ["rootfs.ext4", ".tmpl-work-x/rootfs.ext4", ".tmpl-backup-2/memfile"] {
            assert!(crate::vocab::journal::check_path(ok, false).is_ok(), "{ok}");
        }
        for bad in ["/etc/passwd", "a/b", ".tmpl-work-x/../x", ".tmpl-work-x/a/b", ""] {
            assert!(crate::vocab::journal::check_path(bad, false).is_err(), "{bad}");
        }
    }
}
