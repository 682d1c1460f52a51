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

pub const STORAGE_UNAVAILABLE: Check = Check {
    id: "storage.unavailable",
    severity: Severity::Error,
    title: "the remote storage failed while this build was read",
    hint: "nothing is known to be wrong with the build: the object store kept failing (5xx, throttling, timeouts, connection errors) after the retries, or refused the credentials; run again, check the network and credentials, or raise TMPL_REMOTE_TIMEOUT / TMPL_REMOTE_RETRIES (exit 4)",
};

pub const CHECKS: &[&Check] = &[
    &BUILD_EMPTY,
    &BUILD_FOLDER_NOT_UUID,
    &ACCESS_DENIED,
    &BUILD_UNREADABLE,
    &BUILD_CHECK_FAILED,
    &STORAGE_UNAVAILABLE,
];

/// A finding for a build that could not even be opened (verify goes on with the others): a
/// permission problem is `access.denied`, a remote storage that failed `storage.unavailable`,
/// anything else `build.unreadable`.
pub fn open_failure(e: &crate::error::Error) -> Finding {
    let remote_failure = e.io_error().is_some_and(|io| is_storage_failure(Some(io.kind())))
        && matches!(e, crate::error::Error::Read { path, .. } if crate::remote::mount::is_mounted(path));
    let check = if remote_failure {
        &STORAGE_UNAVAILABLE
    } else if e.is_permission() {
        &ACCESS_DENIED
    } else {
        &BUILD_UNREADABLE
    };
    Finding::new(check, None, e.to_string())
}

pub use crate::remote::is_storage_failure;

/// The check for data of `build` that could not be read: `storage.unavailable` when the build is
/// in a remote storage that failed, else `default`.
pub fn unreadable(build: &Build, kind: Option<std::io::ErrorKind>, default: &'static Check) -> &'static Check {
    if is_storage_failure(kind) && crate::remote::mount::is_mounted(&build.dir) {
        &STORAGE_UNAVAILABLE
    } else {
        default
    }
}

/// Whether these findings include a permission problem or a failed remote storage (the
/// environment's, exit 4).
pub fn has_access_problem(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.id == ACCESS_DENIED.id || f.id == STORAGE_UNAVAILABLE.id)
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
        manifest::CHECKS,
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

    /// `text` up to its unit-test module (`#[cfg(test)]`, other attributes, then `mod tests`).
    fn without_tests(text: &str) -> &str {
        match text.find("\nmod tests {") {
            Some(at) => text[..at].rfind("#[cfg(test)]").map_or(&text[..at], |c| &text[..c]),
            None => text,
        }
    }

    /// Every `.rs` file under `src/` with its code (the unit-test module cut off: a test's
    /// mentions neither declare nor emit a check).
    fn sources() -> Vec<(std::path::PathBuf, String)> {
        let mut v = Vec::new();
        let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let t = without_tests(&std::fs::read_to_string(&p).unwrap()).to_string();
                    v.push((p, t));
                }
            }
        }
        v
    }

    /// Every check constant declared in `src/` (`pub const NAME` of type `Check`, written out or
    /// through a `check!(NAME, "id", ..)` macro): (file, const name, id).
    fn declared_checks() -> Vec<(std::path::PathBuf, String, String)> {
        let mut out = Vec::new();
        for (f, text) in sources() {
            let mut rest = text.as_str();
            while let Some(at) = rest.find(": Check = Check {") {
                let name = rest[..at].rsplit(|c: char| c.is_whitespace()).next().unwrap().to_string();
                let body = &rest[at..];
                if name.starts_with('$') {
                    // The `check!` macro's own definition (its uses are read below).
                    rest = &body[1..];
                    continue;
                }
                let id_at =
                    body.find("id: \"").unwrap_or_else(|| panic!("a Check literal in {} names no id", f.display())) + 5;
                let id = body[id_at..].split('"').next().unwrap().to_string();
                out.push((f.clone(), name, id));
                rest = &body[id_at..];
            }
            let mut rest = text.as_str();
            while let Some(at) = rest.find("\ncheck!(") {
                let body = &rest[at + "\ncheck!(".len()..];
                let name = body.split(',').next().unwrap().trim().to_string();
                let id = body.split('"').nth(1).unwrap().to_string();
                out.push((f.clone(), name, id));
                rest = body;
            }
        }
        out
    }

    /// The catalog (what `tmpl explain` lists) is exactly the set of checks the code declares,
    /// and every declared check is used somewhere besides its declaration and its module's
    /// `CHECKS` list (so the code can emit it). Read from the source so a new `Check` that is
    /// not listed, or a listed one nothing emits any more, fails here.
    #[test]
    fn catalog_matches_the_checks_the_code_declares_and_emits() {
        let declared = declared_checks();
        assert!(declared.len() > 50, "the source scan found only {} checks", declared.len());
        let mut declared_ids: Vec<&str> = declared.iter().map(|(_, _, id)| id.as_str()).collect();
        declared_ids.sort_unstable();
        let mut catalog_ids: Vec<&str> = catalog().iter().map(|c| c.id).collect();
        catalog_ids.sort_unstable();
        let not_listed: Vec<&&str> = declared_ids.iter().filter(|id| !catalog_ids.contains(id)).collect();
        let not_declared: Vec<&&str> = catalog_ids.iter().filter(|id| !declared_ids.contains(id)).collect();
        assert!(
            not_listed.is_empty() && not_declared.is_empty() && declared_ids.len() == catalog_ids.len(),
            "declared but not in checks::catalog(): {not_listed:?}; in the catalog but not found in src/: {not_declared:?}"
        );

        let all_sources = sources();
        let word = |hay: &str, name: &str| -> usize {
            hay.match_indices(name)
                .filter(|(i, _)| {
                    let before = hay[..*i].chars().next_back();
                    let after = hay[i + name.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
                .count()
        };
        for (file, name, id) in &declared {
            let module = file.file_stem().unwrap().to_str().unwrap();
            let module =
                if module == "mod" { file.parent().unwrap().file_name().unwrap().to_str().unwrap() } else { module };
            let mut uses = 0;
            for (p, text) in &all_sources {
                if p == file {
                    // Minus the declaration and the `CHECKS` list entry.
                    let list =
                        text.split("pub const CHECKS").nth(1).map(|t| t.split("];").next().unwrap()).unwrap_or("");
                    uses += word(text, name).saturating_sub(1 + word(list, name));
                } else {
                    uses += word(text, &format!("{module}::{name}"));
                }
            }
            assert!(uses > 0, "{id} ({}::{name}) is in the catalog but no code emits it", file.display());
        }
    }

    #[test]
    fn an_unopenable_build_is_access_denied_only_for_a_permission_problem() {
        use std::io::{Error as IoError, ErrorKind};
        let denied = crate::error::Error::read("/nonexistent/x", IoError::from(ErrorKind::PermissionDenied));
        assert_eq!(open_failure(&denied).id, ACCESS_DENIED.id);
        assert!(has_access_problem(&[open_failure(&denied)]));
        let other = crate::error::Error::read("/nonexistent/x", IoError::from(ErrorKind::InvalidData));
        assert_eq!(open_failure(&other).id, BUILD_UNREADABLE.id);
        assert!(!has_access_problem(&[open_failure(&other)]));
    }

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
