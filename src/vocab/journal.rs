//! The journal of a multi-file commit (`.tmpl-commit.json` in a build folder): its format, how
//! it is read and validated, and the state of each of its steps told from the files alone. The
//! editor writes and runs it (`edit::commit`); the checks report it.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

pub use super::files::{BACKUP_PREFIX, JOURNAL, JOURNAL_NEW, WORK_PREFIX};

/// A journal is a few KiB; anything bigger is not one of ours.
const JOURNAL_CAP: u64 = 1 << 20;

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Read(#[from] super::SmallFileError),
    #[error("{JOURNAL} cannot be read: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{JOURNAL}: format_version {0} is not 1")]
    FormatVersion(u32),
    #[error("{JOURNAL}: {0:?} is not a path tmpl writes in a build folder")]
    ForeignPath(String),
}

/// How a done step is undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// Move the file back where it came from (`to` → `from`).
    MoveBack,
    /// Put the original back from where it was saved (`original` → `to`).
    Restore { original: String },
    /// There was no file before: remove `to`.
    Delete,
}

/// One rename of the commit. Paths are relative to the build folder: a file name, or
/// `.tmpl-work-*/<name>` / `.tmpl-backup-*/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub from: String,
    pub to: String,
    /// Inode of the file that moves (it keeps it through the rename).
    pub ino: u64,
    #[serde(flatten)]
    pub undo: Undo,
}

impl Step {
    /// The build file this step changes (the side of the rename that is not in a tmpl folder).
    pub fn live(&self) -> &str {
        if self.to.contains('/') { &self.from } else { &self.to }
    }
}

/// What a commit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// inject-envd / rewrite-wrapper in place.
    Edit,
    /// `tmpl backups --restore`.
    Restore,
}

/// The journal of one commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format_version: u32,
    pub kind: Kind,
    /// The command that started it (for messages).
    pub command: String,
    pub build_id: String,
    pub pid: u32,
    pub started_at: String,
    pub steps: Vec<Step>,
    /// tmpl folders removed once the commit is complete (the work folder; the backup with
    /// `--no-backup`; the consumed backup of a restore).
    pub remove_on_complete: Vec<String>,
    /// tmpl folders removed after a rollback (the work folder and the backup just made).
    pub remove_on_rollback: Vec<String>,
}

/// Where a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Pending,
    Done,
    /// Neither side has the file: someone moved or removed it.
    Lost,
}

fn ino_of(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().filter(|m| m.is_file()).map(|m| m.ino())
}

/// The state of `step` in `dir`.
pub fn state(dir: &Path, step: &Step) -> StepState {
    if ino_of(&dir.join(&step.to)) == Some(step.ino) {
        StepState::Done
    } else if ino_of(&dir.join(&step.from)) == Some(step.ino) {
        StepState::Pending
    } else {
        StepState::Lost
    }
}

/// A path in a journal must stay in the build folder: a file name, or one file inside a tmpl
/// work or backup folder (a damaged or hostile journal must not make recovery rename anything
/// else).
pub(crate) fn check_path(p: &str, folder_only: bool) -> Result<(), JournalError> {
    let comps: Vec<Component> = Path::new(p).components().collect();
    let normal = comps.iter().all(|c| matches!(c, Component::Normal(_)));
    let tmpl_folder = |c: &Component| {
        let n = c.as_os_str().to_string_lossy();
        n.starts_with(WORK_PREFIX) || n.starts_with(BACKUP_PREFIX)
    };
    let ok = normal
        && match comps.as_slice() {
            [one] if folder_only => tmpl_folder(one),
            [_] => !folder_only,
            [dir, _] => !folder_only && tmpl_folder(dir),
            _ => false,
        };
    if ok { Ok(()) } else { Err(JournalError::ForeignPath(p.to_string())) }
}

impl Journal {
    fn validate(&self) -> Result<(), JournalError> {
        if self.format_version != 1 {
            return Err(JournalError::FormatVersion(self.format_version));
        }
        for s in &self.steps {
            check_path(&s.from, false)?;
            check_path(&s.to, false)?;
            if let Undo::Restore { original } = &s.undo {
                check_path(original, false)?;
            }
        }
        for f in self.remove_on_complete.iter().chain(&self.remove_on_rollback) {
            check_path(f, true)?;
        }
        Ok(())
    }

    /// The state of every step.
    pub fn states(&self, dir: &Path) -> Vec<StepState> {
        self.steps.iter().map(|s| state(dir, s)).collect()
    }

    /// Can the commit be completed (no step lost)?
    pub fn can_complete(&self, dir: &Path) -> bool {
        self.states(dir).iter().all(|s| *s != StepState::Lost)
    }
}

/// Read the journal of a build folder: `Ok(None)` when there is none.
pub fn read(dir: &Path) -> Result<Option<Journal>, JournalError> {
    let Some(bytes) = super::read_small(&dir.join(JOURNAL), JOURNAL_CAP)? else { return Ok(None) };
    let j: Journal = serde_json::from_slice(&bytes)?;
    j.validate()?;
    Ok(Some(j))
}
