//! What tmpl's own edits left in and beside a build: an interrupted commit (the build's files
//! between two states), backups, work folders and partial forks with their sizes, and mounts of
//! work copies that older tmpl versions left in the host namespace.

use crate::build::Build;
use crate::leftovers::{self, Kind};
use crate::report::{Check, Finding, Severity};
use crate::vocab::files::JOURNAL;

pub const INTERRUPTED_COMMIT: Check = Check {
    id: "edit.interrupted-commit",
    severity: Severity::Error,
    title: "an edit or restore was killed during its commit: the build's files are between two states",
    hint: "tmpl backups BUILD --recover completes it (--roll-back undoes it); the next tmpl edit of the build does it too",
};
pub const COMMIT_RUNNING: Check = Check {
    id: "edit.commit-running",
    severity: Severity::Warning,
    title: "a tmpl edit is committing its changes to this build right now",
    hint: "verify again when it has finished",
};
pub const WORK_FOLDER: Check = Check {
    id: "leftover.work-folder",
    severity: Severity::Warning,
    title: "the work copy of an edit that was killed",
    hint: "tmpl backups BUILD --clean removes it (the next edit of the build does too)",
};
pub const BACKUP: Check = Check {
    id: "leftover.backup",
    severity: Severity::Warning,
    title: "a backup an in-place edit kept (the replaced rootfs and files)",
    hint: "tmpl backups BUILD lists them; --restore NAME puts one back, --prune --keep N removes older ones",
};
pub const FORK: Check = Check {
    id: "leftover.fork",
    severity: Severity::Warning,
    title: "a --fork of this build that was killed before it completed",
    hint: "tmpl backups BUILD --clean removes it (the next fork does too)",
};
pub const MOUNT: Check = Check {
    id: "leftover.mount",
    severity: Severity::Warning,
    title: "a mount of this build's work copy left by an older tmpl that was killed",
    hint: "tmpl backups BUILD --clean unmounts it and releases its loop device",
};

pub const CHECKS: &[&Check] = &[&INTERRUPTED_COMMIT, &COMMIT_RUNNING, &WORK_FOLDER, &BACKUP, &FORK, &MOUNT];

/// Findings for the leftovers of `build`.
pub fn check(build: &Build) -> Vec<Finding> {
    let id = build.id.to_string();
    let hint = |c: &Check| c.hint.replace("BUILD", &id);
    let mut out = Vec::new();
    // The work folder of an unsettled commit holds its new files: part of that finding.
    let mut committing: Vec<String> = Vec::new();
    if let Some(j) = leftovers::journal_state(&build.dir) {
        let c = if j.in_progress { &COMMIT_RUNNING } else { &INTERRUPTED_COMMIT };
        out.push(Finding::new(c, Some(JOURNAL.to_string()), j.describe()).hint(hint(c)));
        if let Some(j) = &j.journal {
            committing.extend(j.remove_on_complete.iter().chain(&j.remove_on_rollback).cloned());
        }
    }
    let storage_forks = leftovers::forks_of_cached(&build.storage_root, &build.id);
    for l in leftovers::in_build(&build.dir).into_iter().chain(storage_forks) {
        let c = match l.kind {
            Kind::Backup => &BACKUP,
            Kind::WorkFolder if committing.contains(&l.name) => continue,
            Kind::WorkFolder => &WORK_FOLDER,
            Kind::Fork => &FORK,
            Kind::Mount => &MOUNT,
            Kind::Journal => continue,
        };
        let files = if l.files == 1 { "1 file".to_string() } else { format!("{} files", l.files) };
        let mut msg = format!("{} holds {} in {files}", l.name, crate::report::human_bytes(l.bytes));
        if let Some(m) = &l.modified {
            msg.push_str(&format!(", last changed {m}"));
        }
        if l.kind == Kind::Mount {
            msg = format!("{} is still mounted: {}", l.name, l.contents.join(" "));
        }
        let mut f = Finding::new(c, Some(l.name.clone()), msg).hint(hint(c));
        if l.in_use && l.kind != Kind::Backup {
            f.severity = Severity::Info;
            f.message.push_str(&format!(" (in use: {} is running)", l.holders.join(", ")));
        }
        out.push(f);
    }
    out
}
