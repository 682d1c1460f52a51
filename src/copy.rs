//! `tmpl copy`: a build and the builds its headers read from, between two storages (local
//! directories, S3, GCS, Azure), planned first, written in a safe order, verified, and rolled
//! back on failure.
//!
//! * **Plan** ([`plan`]): list the build at the source, read its headers, follow every build
//!   their mappings name (recursively, ancestors of ancestors too), list each at both ends. A
//!   build that exists complete at the destination (its `metadata.json` is there) with other
//!   contents is a different build with the same ID: refused. Objects of the same size at the
//!   destination are candidates for skipping; every other object is to be written.
//! * **Compare**: skip candidates are streamed at both ends and skipped only when their SHA-256
//!   agree (a build complete at the destination whose object differs is refused, before anything
//!   is written).
//! * **Write**, ancestors first, and within a build data files, then headers, then the snapfile
//!   and other files, `metadata.json` **last**: a reader (the orchestrator, `tmpl verify`) never
//!   sees a build with its completeness marker and missing data. Each object is streamed (a
//!   multipart upload or a temporary file renamed into place) with its user metadata carried
//!   over; E2B's uncompressed-size of a compressed object goes into the destination's own
//!   spelling (S3/GCS user metadata `uncompressed-size`, Azure `uncompressed__size`, the Local
//!   provider's `<object>.uncompressed-size` sidecar).
//! * **Verify** each object after writing: the destination's size and uncompressed-size agree
//!   with the source's, and its bytes, streamed back, have the SHA-256 of the source's bytes;
//!   headers are parsed again at the destination.
//! * **Roll back** on any failure: the objects this run wrote are deleted again (best effort,
//!   reported), so a failed copy leaves the destination as it was.
//!
//! Concurrency: objects are written one after another (each upload has parts in flight); the
//! order is the safety property.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::header;
use crate::progress::Progress;
use crate::remote::{Error, Result};
use crate::remote::{Metadata, ObjectInfo, SIDECAR_SUFFIX, Store};
use crate::vocab::BuildId;
use crate::vocab::files::METADATA;

/// What to copy.
#[derive(Clone, Debug)]
pub struct Options {
    /// Also copy the builds the headers read from (default true).
    pub with_ancestors: bool,
}

/// Why a build is part of the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The build asked for.
    Build,
    /// A build whose data the build's headers map.
    Ancestor,
}

/// What happens to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Not at the destination: written.
    Copy,
    /// At the destination with the same size: compared by SHA-256, skipped when identical.
    Compare,
    /// At the destination with the same SHA-256: left alone.
    Skip,
    /// At the destination with other contents in a build that is not complete there (an
    /// interrupted copy): written over.
    Replace,
}

/// One object of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub build: BuildId,
    pub key: String,
    pub size: u64,
    pub action: Action,
    /// E2B's uncompressed size of a compressed object, as the source records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    /// SHA-256 of the stored bytes (after the copy or the comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Verified at the destination after writing (size, uncompressed size, SHA-256).
    pub verified: bool,
}

/// One build of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct BuildPlan {
    pub id: BuildId,
    pub role: Role,
    /// Its `metadata.json` is at the destination already.
    pub complete_at_destination: bool,
}

/// The plan (and, after [`execute`], the outcome) of a copy.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub build: BuildId,
    pub builds: Vec<BuildPlan>,
    /// In write order.
    pub items: Vec<Item>,
    /// Builds the headers name that are neither at the source nor at the destination (the copy
    /// would be unreadable: refused by the caller).
    pub missing_ancestors: Vec<BuildId>,
    /// Objects at the source that are not copied (nested folders such as backups), by key.
    pub left_out: Vec<String>,
}

/// A different build with the same ID at the destination.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    pub build: BuildId,
    pub key: String,
    pub reason: String,
}

/// Order within a build: data, headers, snapfile and others, metadata.json last.
fn phase(name: &str) -> u8 {
    if name == METADATA {
        3
    } else if name.ends_with(".header") {
        1
    } else if name.starts_with("rootfs.ext4") || name.starts_with("memfile") {
        0
    } else {
        2
    }
}

fn list_build(store: &Store, id: &BuildId) -> Result<(BTreeMap<String, ObjectInfo>, Vec<String>)> {
    let prefix = format!("{id}/");
    let mut objects = BTreeMap::new();
    let mut nested = Vec::new();
    for o in store.list(&prefix)? {
        let Some(name) = o.key.strip_prefix(&prefix) else { continue };
        if name.contains('/') {
            nested.push(o.key.clone());
        } else if name.ends_with(SIDECAR_SUFFIX) {
            // Local storage's uncompressed-size sidecar: carried as the object's metadata.
        } else {
            objects.insert(name.to_string(), o);
        }
    }
    Ok((objects, nested))
}

/// The builds `id`'s headers at `store` map (not `id`, not nil).
fn ancestors_of(store: &Store, id: &BuildId, objects: &BTreeMap<String, ObjectInfo>) -> Result<Vec<BuildId>> {
    let mut out = Vec::new();
    for name in ["rootfs.ext4.header", "memfile.header"] {
        let Some(o) = objects.get(name) else { continue };
        let bytes = store.read_all(&o.key, header::MAX_HEADER_BYTES)?;
        let h = header::parse(&bytes).map_err(|e| Error::Config {
            store: store.object_url(&o.key),
            reason: format!("not a usable header: {e}"),
        })?;
        for b in h.referenced_builds() {
            if b != *id && !b.is_nil() && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// Plan the copy of `id` from `src` to `dst`. Reads listings and headers only. `Err` with a
/// [`Conflict`] list when the destination holds a different build with one of the IDs.
pub fn plan(src: &Store, dst: &Store, id: BuildId, opts: &Options) -> Result<std::result::Result<Plan, Vec<Conflict>>> {
    let (objects, nested) = list_build(src, &id)?;
    if objects.is_empty() {
        return Err(Error::NotFound {
            object: src.object_url(&format!("{id}/")),
            source: "no objects under the build's prefix".into(),
        });
    }
    let mut order: Vec<(BuildId, Role, BTreeMap<String, ObjectInfo>)> = vec![(id, Role::Build, objects)];
    let mut left_out = nested;
    let mut missing = Vec::new();
    let mut i = 0;
    while opts.with_ancestors && i < order.len() {
        let (b, _, objs) = &order[i];
        let found = ancestors_of(src, b, objs)?;
        for a in found {
            if order.iter().any(|(x, _, _)| *x == a) || missing.contains(&a) {
                continue;
            }
            let (objs, nested) = list_build(src, &a)?;
            left_out.extend(nested);
            if objs.is_empty() {
                missing.push(a);
            } else {
                order.push((a, Role::Ancestor, objs));
            }
        }
        i += 1;
    }
    let mut builds = Vec::new();
    let mut items = Vec::new();
    let mut conflicts = Vec::new();
    // Ancestors first (deepest first), the build last.
    for (b, role, objs) in order.into_iter().rev() {
        let (at_dst, _) = list_build(dst, &b)?;
        let complete = at_dst.contains_key(METADATA);
        let mut mine: Vec<Item> = Vec::new();
        for (name, o) in &objs {
            let action = match at_dst.get(name) {
                None => Action::Copy,
                Some(d) if d.size == o.size => Action::Compare,
                Some(d) if complete => {
                    conflicts.push(Conflict {
                        build: b,
                        key: o.key.clone(),
                        reason: format!(
                            "the destination's {name} is {} bytes, the source's {}: a different build with the same ID",
                            d.size, o.size
                        ),
                    });
                    continue;
                }
                Some(_) => Action::Replace,
            };
            mine.push(Item {
                build: b,
                key: o.key.clone(),
                size: o.size,
                action,
                uncompressed_size: None,
                sha256: None,
                verified: false,
            });
        }
        mine.sort_by_key(|it| (phase(it.key.rsplit('/').next().unwrap_or("")), it.key.clone()));
        items.extend(mine);
        builds.push(BuildPlan { id: b, role, complete_at_destination: complete });
    }
    // A missing ancestor present at the destination is fine.
    let mut missing_ancestors = Vec::new();
    for a in missing {
        if list_build(dst, &a)?.0.is_empty() {
            missing_ancestors.push(a);
        }
    }
    if !conflicts.is_empty() {
        return Ok(Err(conflicts));
    }
    Ok(Ok(Plan { build: id, builds, items, missing_ancestors, left_out }))
}

/// Reads through, hashing and counting.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// SHA-256 and length of an object, streamed.
pub fn digest(store: &Store, key: &str) -> Result<([u8; 32], u64)> {
    let r = store.reader(key)?;
    let mut h = Hashing { inner: r, sha: Sha256::new(), n: 0 };
    io::copy(&mut h, &mut io::sink()).map_err(|e| Error::io(store.object_url(key), e))?;
    Ok((h.sha.finalize().into(), h.n))
}

/// What went wrong while executing a plan, and what the rollback did.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    /// The object the failure is about.
    pub key: String,
    /// Whether the failure is a verification mismatch (the copy was written but differs).
    pub verification: bool,
    /// Keys written by this run and deleted again.
    pub rolled_back: Vec<String>,
    /// Keys written by this run that could not be deleted (with why).
    pub left_behind: Vec<String>,
}

/// A failure as reports show it (`tmpl copy`, and the publish step of an edit's fork).
#[derive(Clone, Debug, Serialize)]
pub struct FailureReport {
    pub key: String,
    pub error: String,
    /// The remote error's kind (`not-found`, `permission`, `unavailable`, `timeout`, ...).
    pub kind: &'static str,
    /// The object was written but differs from its source.
    pub verification: bool,
    /// Objects this run wrote and deleted again.
    pub rolled_back: Vec<String>,
    /// Objects this run wrote that could not be deleted (with why): remove them by hand.
    pub left_behind: Vec<String>,
}

impl FailureReport {
    /// A failure before anything was written.
    pub fn before_writing(key: String, error: &Error) -> Self {
        FailureReport {
            key,
            error: error.to_string(),
            kind: error.kind().as_str(),
            verification: false,
            rolled_back: Vec::new(),
            left_behind: Vec::new(),
        }
    }
}

impl From<Failed> for FailureReport {
    fn from(f: Failed) -> Self {
        FailureReport {
            key: f.key,
            kind: f.error.kind().as_str(),
            error: f.error.to_string(),
            verification: f.verification,
            rolled_back: f.rolled_back,
            left_behind: f.left_behind,
        }
    }
}

/// Compare, write and verify the plan's objects (see the module documentation). On failure the
/// objects written by this run are deleted again. Comparing finds a same-size object that
/// differs in a complete build as a [`Conflict`] before anything is written.
pub fn execute(
    src: &Store,
    dst: &Store,
    plan: &mut Plan,
    progress: &dyn Progress,
) -> std::result::Result<std::result::Result<(), Vec<Conflict>>, Box<Failed>> {
    let complete: HashMap<BuildId, bool> = plan.builds.iter().map(|b| (b.id, b.complete_at_destination)).collect();
    let fail = |error: Error, key: &str, verification: bool, written: &[String]| {
        let (mut rolled_back, mut left_behind) = (Vec::new(), Vec::new());
        for k in written.iter().rev() {
            match dst.delete(k) {
                Ok(()) => rolled_back.push(k.clone()),
                Err(e) => left_behind.push(format!("{k}: {e}")),
            }
        }
        Box::new(Failed { error, key: key.to_string(), verification, rolled_back, left_behind })
    };
    // 1. Compare same-size objects at both ends before writing anything.
    let mut conflicts = Vec::new();
    let compare: u64 = plan.items.iter().filter(|i| i.action == Action::Compare).map(|i| i.size).sum();
    if compare > 0 {
        progress.start("comparing objects already at the destination", compare);
    }
    for it in plan.items.iter_mut().filter(|i| i.action == Action::Compare) {
        let (s, _) = digest(src, &it.key).map_err(|e| fail(e, &it.key, false, &[]))?;
        let (d, _) = digest(dst, &it.key).map_err(|e| fail(e, &it.key, false, &[]))?;
        progress.inc(it.size);
        if s == d {
            it.action = Action::Skip;
            it.sha256 = Some(header::hex(&s));
            it.verified = true;
        } else if complete.get(&it.build).copied().unwrap_or(false) {
            conflicts.push(Conflict {
                build: it.build,
                key: it.key.clone(),
                reason: "same size, other contents (SHA-256 differs): a different build with the same ID".into(),
            });
        } else {
            it.action = Action::Replace;
        }
    }
    if compare > 0 {
        progress.finish();
    }
    if !conflicts.is_empty() {
        return Ok(Err(conflicts));
    }
    let total: u64 =
        plan.items.iter().filter(|i| matches!(i.action, Action::Copy | Action::Replace)).map(|i| i.size).sum();
    progress.start("copying", total);
    // 2. Write and verify, in plan order (metadata.json of each build last).
    let mut written: Vec<String> = Vec::new();
    for it in plan.items.iter_mut().filter(|i| matches!(i.action, Action::Copy | Action::Replace)) {
        let head = src.head(&it.key).map_err(|e| fail(e, &it.key, false, &written))?;
        let meta: Metadata = head.metadata.clone();
        it.uncompressed_size = head.uncompressed_size();
        let reader = src.reader(&it.key).map_err(|e| fail(e, &it.key, false, &written))?;
        let mut h = Hashing { inner: reader, sha: Sha256::new(), n: 0 };
        let stored = dst.put_reader(&it.key, &mut h, Some(head.size), &meta);
        if it.action == Action::Copy || stored.is_ok() {
            written.push(it.key.clone());
        }
        let stored = stored.map_err(|e| fail(e, &it.key, false, &written))?;
        progress.inc(stored);
        let want: [u8; 32] = h.sha.finalize().into();
        // Verify at the destination: size, uncompressed size, bytes.
        let verify = || -> Result<Option<String>> {
            let d = dst.head(&it.key)?;
            if d.size != head.size || h.n != head.size {
                return Ok(Some(format!("{} bytes at the destination, {} at the source", d.size, head.size)));
            }
            if d.uncompressed_size() != head.uncompressed_size() {
                return Ok(Some(format!(
                    "uncompressed size {:?} at the destination, {:?} at the source",
                    d.uncompressed_size(),
                    head.uncompressed_size()
                )));
            }
            let (got, _) = digest(dst, &it.key)?;
            if got != want {
                return Ok(Some(format!(
                    "SHA-256 {} at the destination, {} at the source",
                    header::hex(&got),
                    header::hex(&want)
                )));
            }
            // Headers are read again at the destination and must parse as they do at the
            // source (a damaged build is copied as it is: that is how it gets repaired).
            if it.key.ends_with(".header") {
                let there = header::parse(&dst.read_all(&it.key, header::MAX_HEADER_BYTES)?);
                let here = header::parse(&src.read_all(&it.key, header::MAX_HEADER_BYTES)?);
                match (here, there) {
                    (Ok(a), Ok(b)) if a == b => {}
                    (Err(_), Err(_)) => {}
                    (_, Err(e)) => return Ok(Some(format!("the header does not parse at the destination: {e}"))),
                    _ => return Ok(Some("the header reads differently at the destination".into())),
                }
            }
            Ok(None)
        };
        match verify() {
            Ok(None) => {}
            Ok(Some(why)) => {
                let e = Error::Config { store: dst.object_url(&it.key), reason: format!("copy differs: {why}") };
                return Err(fail(e, &it.key, true, &written));
            }
            Err(e) => return Err(fail(e, &it.key, false, &written)),
        }
        it.sha256 = Some(header::hex(&want));
        it.verified = true;
    }
    progress.finish();
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{Config, Env, Location};

    use crate::progress::NoProgress as Quiet;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&Location::Local { path: dir.into() }, &Env::empty(), &Config::default()).unwrap()
    }

    #[test]
    fn metadata_goes_last_and_identical_objects_are_skipped() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = BuildId::from_bytes([7; 16]);
        let d = a.path().join(id.to_string());
        std::fs::create_dir(&d).unwrap();
        for (n, c) in
            [("metadata.json", &b"{}"[..]), ("snapfile", b"snap"), ("memfile", b"mem"), ("rootfs.ext4.zstd", b"z")]
        {
            std::fs::write(d.join(n), c).unwrap();
        }
        std::fs::write(d.join("rootfs.ext4.zstd.uncompressed-size"), b"4096").unwrap();
        let (src, dst) = (store(a.path()), store(b.path()));
        let mut p = plan(&src, &dst, id, &Options { with_ancestors: true }).unwrap().unwrap();
        let names: Vec<&str> = p.items.iter().map(|i| i.key.rsplit('/').next().unwrap()).collect();
        assert_eq!(names.last(), Some(&"metadata.json"), "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with(".uncompressed-size")), "{names:?}");
        execute(&src, &dst, &mut p, &Quiet).unwrap().unwrap();
        let out = b.path().join(id.to_string());
        assert_eq!(std::fs::read(out.join("memfile")).unwrap(), b"mem");
        assert_eq!(std::fs::read(out.join("rootfs.ext4.zstd.uncompressed-size")).unwrap(), b"4096");
        assert!(p.items.iter().all(|i| i.verified));
        // Again: everything is compared and skipped.
        let mut again = plan(&src, &dst, id, &Options { with_ancestors: true }).unwrap().unwrap();
        assert!(again.items.iter().all(|i| i.action == Action::Compare));
        execute(&src, &dst, &mut again, &Quiet).unwrap().unwrap();
        assert!(again.items.iter().all(|i| i.action == Action::Skip));
        // A different build with the same ID at the destination is a conflict.
        std::fs::write(out.join("memfile"), b"MEM").unwrap();
        let mut third = plan(&src, &dst, id, &Options { with_ancestors: true }).unwrap().unwrap();
        let c = execute(&src, &dst, &mut third, &Quiet).unwrap().unwrap_err();
        assert_eq!(c[0].key, format!("{id}/memfile"));
        std::fs::write(out.join("memfile"), b"MEMORY").unwrap();
        assert!(plan(&src, &dst, id, &Options { with_ancestors: true }).unwrap().is_err());
    }
}
