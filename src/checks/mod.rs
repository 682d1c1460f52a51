//! Checks: functions from a [`Build`] (and, for contents, a [`Rootfs`]) to findings.
//!
//! Every check module declares the findings it can emit as [`Check`] constants and lists them in
//! its `CHECKS`; [`catalog`] gathers them for `tmpl explain` and the documentation, and a test
//! proves that every id a check emits is in the catalog.

pub mod contents;
pub mod data;
pub mod header;
pub mod kernel;
pub mod leftovers;
pub mod manifest;
pub mod memfile;
pub mod metadata;
pub mod rootfs;
pub mod snapfile;

use crate::build::{AccessProblem, Build};
use crate::report::{Check, Finding, Severity};
use crate::rootfs::Rootfs;
use crate::rootfs::boot::{BootFacts, Scan};
use crate::vocab::Artifact;

/// Build-level findings.
pub const BUILD_EMPTY: Check = Check {
    id: "build.empty",
    severity: Severity::Error,
    title: "the build folder holds none of the build files",
    hint: "a build folder holds rootfs.ext4(.header), memfile(.header), snapfile and metadata.json; check the storage path and the build ID",
};
pub const BUILD_FOLDER_NOT_UUID: Check = Check {
    id: "build.folder-not-uuid",
    severity: Severity::Info,
    title: "the folder name is not a build ID",
    hint: "the orchestrator finds builds by <storage>/<build-id>/; rename the folder to its build ID before publishing it",
};

pub const BUILD_CHECK_FAILED: Check = Check {
    id: "build.check-failed",
    severity: Severity::Error,
    title: "tmpl failed while checking this build",
    hint: "something in this build's files made tmpl itself fail (a bug: report it with the message); the build was not fully checked, the other builds were",
};
pub const ACCESS_DENIED: Check = Check {
    id: "access.denied",
    severity: Severity::Error,
    title: "tmpl may not read a file or folder this build needs (permission)",
    hint: "nothing is known to be wrong with the build itself: run tmpl as a user that may read the storage (the orchestrator's, usually root) or grant the permission named; the checks that need it were not run (exit 4)",
};
pub const BUILD_UNREADABLE: Check = Check {
    id: "build.unreadable",
    severity: Severity::Error,
    title: "the build folder could not be opened",
    hint: "see the message: a file where the folder should be, a build file that is not a regular file, or an I/O error",
};

pub const CHECKS: &[&Check] =
    &[&BUILD_EMPTY, &BUILD_FOLDER_NOT_UUID, &ACCESS_DENIED, &BUILD_UNREADABLE, &BUILD_CHECK_FAILED];

/// A finding for a build that could not even be opened (verify goes on with the others): a
/// permission problem is `access.denied`, anything else `build.unreadable`.
pub fn open_failure(e: &crate::error::Error) -> Finding {
    let check = if e.is_permission() { &ACCESS_DENIED } else { &BUILD_UNREADABLE };
    Finding::new(check, None, e.to_string())
}

/// Whether these findings include a permission problem (the environment's, exit 4).
pub fn has_access_problem(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.id == ACCESS_DENIED.id)
}

/// Every finding tmpl can emit.
pub fn catalog() -> Vec<&'static Check> {
    let mut all: Vec<&'static Check> = Vec::new();
    for list in [
        CHECKS,
        metadata::CHECKS,
        header::CHECKS,
        data::CHECKS,
        snapfile::CHECKS,
        memfile::CHECKS,
        rootfs::CHECKS,
        contents::CHECKS,
        leftovers::CHECKS,
        kernel::CHECKS,
    ] {
        all.extend_from_slice(list);
    }
    all
}

/// Look up a check by id.
pub fn find(id: &str) -> Option<&'static Check> {
    catalog().into_iter().find(|c| c.id == id)
}

/// What one run of all checks over one build produced.
#[derive(Debug)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// The rootfs, when it could be opened (for facts and further checks).
    pub rootfs: Option<Rootfs>,
    /// What the rootfs does at boot (init chain, envd), when the rootfs could be read.
    pub boot: Option<BootFacts>,
    /// Bytes of data files read while checking.
    pub bytes_read: u64,
}

/// Run every offline check on a build. `scan` says when envd binaries are streamed for their
/// era (verify: only when flags need checking; inspect: always).
pub fn run(build: &Build, scan: Scan) -> Outcome {
    let mut outcome = run_checks(build, scan);
    if !build.access.is_empty() {
        outcome.findings = with_access_problems(&build.access, outcome.findings);
    }
    outcome
}

/// Findings about what a permission keeps tmpl from reading replace the findings that unreadable
/// item caused: a file that cannot be read is not "missing" or "corrupt", and a rootfs that cannot
/// be read through its layers is "not checked" rather than "unreadable".
pub fn with_access_problems(access: &[AccessProblem], findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = access
        .iter()
        .map(|a| {
            let what = if a.rootfs { " (the rootfs is read through it)" } else { "" };
            Finding::new(&ACCESS_DENIED, Some(a.file.clone()), format!("{}{what}", a.denied))
        })
        .collect();
    let rootfs_blocked = access.iter().any(|a| a.rootfs);
    for f in findings {
        if rootfs_blocked && f.id == rootfs::UNREADABLE.id {
            out.push(Finding::new(
                &rootfs::NOT_CHECKED,
                f.file,
                format!("{} (a permission problem, see access.denied)", f.message),
            ));
            continue;
        }
        if f.file.as_deref().is_some_and(|file| access.iter().any(|a| a.covers(file))) {
            continue;
        }
        out.push(f);
    }
    out
}

fn run_checks(build: &Build, scan: Scan) -> Outcome {
    let mut findings = Vec::new();
    if build.is_empty() {
        findings.push(Finding::new(&BUILD_EMPTY, None, format!("{} holds no build files", build.dir.display())));
        return Outcome { findings, rootfs: None, boot: None, bytes_read: 0 };
    }
    if build.folder_id.is_none() {
        findings.push(Finding::new(
            &BUILD_FOLDER_NOT_UUID,
            None,
            format!(
                "folder {:?} is not a UUID; identifying the build as {}",
                build.dir.file_name().unwrap_or_default(),
                build.id
            ),
        ));
    }
    findings.extend(metadata::check(build));
    for a in Artifact::ALL {
        findings.extend(header::check(build, a));
    }
    findings.extend(snapfile::check(build));
    findings.extend(memfile::check(build));
    let (rootfs, f, mut bytes_read) = rootfs::check(build, &findings);
    findings.extend(f);
    let boot = rootfs.as_ref().map(|fs| {
        let (facts, f) = contents::check(build, fs, scan);
        findings.extend(f);
        // After a reader panic nothing more is read from the image (contents says why).
        if !fs.reader_failed() {
            findings.extend(manifest::check(build, fs));
        }
        bytes_read += facts.bytes_read;
        facts
    });
    findings.extend(leftovers::check(build));
    Outcome { findings, rootfs, boot, bytes_read }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_ids_are_unique_and_well_formed() {
        let all = catalog();
        let mut ids: Vec<&str> = all.iter().map(|c| c.id).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate finding ids");
        for c in all {
            assert!(
                c.id.contains('.')
                    && c.id.chars().all(|ch| ch.is_ascii_lowercase() || ch == '.' || ch == '-' || ch.is_ascii_digit()),
                "{}",
                c.id
            );
            assert!(!c.title.is_empty(), "{}", c.id);
        }
    }
}
