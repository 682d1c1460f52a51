//! Drift against `tmpl-manifest.json`: a file tmpl injected is gone, changed kind, size, mode,
//! owner, link target or (for files up to 1 MiB) content since tmpl wrote it.

use crate::build::Build;
use crate::report::{Check, Finding, Severity};
use crate::rootfs::{FileKind, Rootfs};
use crate::vocab::manifest::{self, Manifest};

pub const INVALID: Check = Check {
    id: "manifest.invalid",
    severity: Severity::Warning,
    title: "tmpl-manifest.json cannot be read",
    hint: "the record of what tmpl injected is damaged; tmpl inject-envd writes a new one",
};
pub const DRIFT: Check = Check {
    id: "manifest.drift",
    severity: Severity::Warning,
    title: "a file tmpl injected changed since",
    hint: "someone edited the image after tmpl did; run tmpl inject-envd again (or tmpl rewrite-wrapper) to restore a known state",
};

pub const CHECKS: &[&Check] = &[&INVALID, &DRIFT];

/// Compare the rootfs with the manifest, when the build has one.
pub fn check(build: &Build, fs: &Rootfs) -> Vec<Finding> {
    let m = match manifest::read(&build.dir) {
        Ok(Some(m)) => m,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![Finding::new(&INVALID, Some(manifest::FILE.to_string()), e.to_string())],
    };
    drift(&m, fs).into_iter().map(|msg| Finding::new(&DRIFT, Some(manifest::FILE.to_string()), msg)).collect()
}

/// What differs between the manifest and the image, one line per file.
pub fn drift(m: &Manifest, fs: &Rootfs) -> Vec<String> {
    let mut out = Vec::new();
    for f in &m.files {
        let e = match fs.lstat(&f.path) {
            Ok(Some(e)) => e,
            Ok(None) => {
                out.push(format!("{} (written {}) is gone", f.path, m.written_at));
                continue;
            }
            Err(e) => {
                out.push(format!("{}: {e}", f.path));
                continue;
            }
        };
        let want_link = f.kind == "symlink";
        if want_link != (e.kind == FileKind::Symlink) || (!want_link && e.kind != FileKind::Regular) {
            out.push(format!("{} was a {} and is now a {:?}", f.path, f.kind, e.kind));
            continue;
        }
        if want_link {
            match fs.read_link(&f.path) {
                Ok(t) if Some(&t) == f.target.as_ref() => {}
                Ok(t) => out.push(format!("{} now links to {t}, not {}", f.path, f.target.as_deref().unwrap_or("?"))),
                Err(e) => out.push(format!("{}: {e}", f.path)),
            }
            continue;
        }
        if e.len != f.len {
            out.push(format!("{} is {} bytes, tmpl wrote {}", f.path, e.len, f.len));
            continue;
        }
        if e.mode != f.mode || e.uid != f.uid || e.gid != f.gid {
            out.push(format!(
                "{} has mode {:04o} uid {} gid {}, tmpl wrote {:04o} {} {}",
                f.path, e.mode, e.uid, e.gid, f.mode, f.uid, f.gid
            ));
            continue;
        }
        if e.len <= manifest::HASH_ON_VERIFY
            && let Some(want) = &f.sha256
        {
            match fs.sha256(&f.path) {
                Ok(got) if crate::rootfs::hex(&got) == *want => {}
                Ok(got) => out.push(format!(
                    "{} content changed (sha256 {}, tmpl wrote {want})",
                    f.path,
                    crate::rootfs::hex(&got)
                )),
                Err(e) => out.push(format!("{}: {e}", f.path)),
            }
        }
    }
    out
}
