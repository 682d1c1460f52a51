//! Which entries of a cache root belong to which build, and whether the root looks like that
//! cache at all. Reads directory listings and `lstat`s only; never follows a symlink.
//!
//! Layouts (e2b-formats.md §4):
//! - template cache: `<root>/<buildID>/cache/<uuid>/...`; before 568dd8f47
//!   `<root>/<templateID>/<buildID>/cache/<uuid>/...` (sandbox folders lived inside);
//! - build cache and snapshot cache: flat files `<buildID>-...`, and `resize-disk-<buildID>-...`;
//! - shared chunk cache: `<root>/<buildID>/<object>/` folders of chunks;
//! - sandbox cache: `<disk>-<sandboxID>-<rand>.cow`, `.link`, `restore-<sandboxID>-<rand>/` — per
//!   sandbox, not per build; a `.link` whose target names a build ties the sandbox to it.
//!
//! Root check, in the manner of E2B's clean-nfs-cache: a root must hold at least one entry with
//! that cache's shape, or be empty (`lost+found` and tmpl's own trash aside); otherwise it is
//! refused, which catches a variable pointing one level too high or at the template storage.
//! Single entries that look like a *stored build* (regular `rootfs.ext4`, `memfile`, `*.header`
//! ... files where a cache keeps folders) are never deleted.

use std::fs::{self, FileType};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::roots::CacheKind;
use crate::storage::BuildId;

/// Prefix of tmpl's trash folders inside a cache root.
pub const TRASH_PREFIX: &str = ".tmpl-trash-";

/// How an entry sits in its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `<root>/<buildID>` (template and chunk caches).
    BuildDir,
    /// `<root>/<templateID>/<buildID>` (template cache before 2025-08).
    LegacyTemplateDir,
    /// `<root>/<buildID>-...` (build and snapshot caches).
    PrefixedFile,
    /// `<root>/resize-disk-<buildID>-...` (build cache).
    ResizeDiskFile,
    /// A file of one sandbox (sandbox cache).
    SandboxFile,
    /// A trash folder left by an earlier, interrupted purge.
    Trash,
}

/// File type of an entry, from `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Dir,
    File,
    Symlink,
    Other,
}

impl EntryType {
    pub fn of(ft: FileType) -> EntryType {
        if ft.is_symlink() {
            EntryType::Symlink
        } else if ft.is_dir() {
            EntryType::Dir
        } else if ft.is_file() {
            EntryType::File
        } else {
            EntryType::Other
        }
    }
}

/// One entry found in a root.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub build_id: Option<BuildId>,
    pub path: PathBuf,
    pub entry_type: EntryType,
    pub layout: Layout,
    /// Why this entry must not be deleted whatever the flags (it does not look like the cache).
    pub not_cache: Option<String>,
    /// Chunk cache: object folders inside the build folder.
    pub objects: Vec<String>,
    /// Symlink entries: the link's text (never followed).
    pub link_target: Option<String>,
    /// Sandbox cache: `<sandboxID>-<rand>`, shared by a sandbox's files.
    pub group: Option<String>,
}

impl Candidate {
    fn new(build_id: Option<BuildId>, path: PathBuf, ft: FileType, layout: Layout) -> Self {
        let entry_type = EntryType::of(ft);
        let link_target = (entry_type == EntryType::Symlink)
            .then(|| fs::read_link(&path).ok().map(|t| t.to_string_lossy().into_owned()))
            .flatten();
        Candidate { build_id, path, entry_type, layout, not_cache: None, objects: Vec::new(), link_target, group: None }
    }
}

/// What a root holds.
#[derive(Debug, Default)]
pub struct Found {
    /// Entries of any build (the caller selects).
    pub entries: Vec<Candidate>,
    /// Trash folders (`.tmpl-trash-*`) from earlier runs.
    pub trash: Vec<PathBuf>,
    /// Whether at least one entry has this cache's shape.
    pub evidence: bool,
    /// Whether the root holds nothing but `lost+found` and trash.
    pub empty: bool,
    /// Entries that belong to no build (left alone).
    pub other: usize,
}

/// A regular file with one of these names is a *stored* build's file, never a cache's.
fn is_storage_file_name(name: &str) -> bool {
    const STEMS: [&str; 4] = ["rootfs.ext4", "memfile", "snapfile", "metadata.json"];
    STEMS.iter().any(|s| name == *s || name.starts_with(&format!("{s}.")))
        || name.ends_with(".header")
        || name == "build_id"
}

/// Children of a directory as (name, type); unreadable directories give an empty list.
fn children(dir: &Path) -> std::io::Result<Vec<(String, FileType)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Ok(ft) = e.file_type() else { continue };
        out.push((e.file_name().to_string_lossy().into_owned(), ft));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A build folder that holds a stored build's files, where the cache would have folders.
fn storage_like(dir: &Path) -> Option<String> {
    let kids = children(dir).ok()?;
    let files: Vec<&str> =
        kids.iter().filter(|(n, t)| t.is_file() && is_storage_file_name(n)).map(|(n, _)| n.as_str()).collect();
    (!files.is_empty()).then(|| {
        format!(
            "holds {} as regular files: this looks like a stored template build, not a cache entry",
            files.join(", ")
        )
    })
}

/// `<buildID>-...` or `resize-disk-<buildID>-...`.
fn prefixed_id(name: &str) -> Option<(BuildId, Layout)> {
    let (rest, layout) = match name.strip_prefix("resize-disk-") {
        Some(r) => (r, Layout::ResizeDiskFile),
        None => (name, Layout::PrefixedFile),
    };
    if rest.len() > 37 && rest.as_bytes()[36] == b'-' {
        return BuildId::parse(&rest[..36]).ok().map(|id| (id, layout));
    }
    None
}

/// Sandbox files: `<disk>-<sandboxID>-<rand>.cow|.link`, `restore-<sandboxID>-<rand>`. Returns
/// the `<sandboxID>-<rand>` group key.
fn sandbox_group(name: &str, ft: FileType) -> Option<String> {
    if let Some(rest) = name.strip_prefix("restore-") {
        return (ft.is_dir() && rest.contains('-')).then(|| rest.to_string());
    }
    let stem = name.strip_suffix(".cow").or_else(|| name.strip_suffix(".link"))?;
    let (_disk, key) = stem.split_once('-')?;
    key.contains('-').then(|| key.to_string())
}

/// List a root. `Err` only when the root itself cannot be read.
pub fn scan(kind: CacheKind, root: &Path) -> std::io::Result<Found> {
    let mut f = Found { empty: true, ..Default::default() };
    for (name, ft) in children(root)? {
        let path = root.join(&name);
        if name == "lost+found" {
            continue;
        }
        if name.starts_with(TRASH_PREFIX) && ft.is_dir() {
            f.trash.push(path);
            continue;
        }
        f.empty = false;
        match kind {
            CacheKind::Template => scan_template(&mut f, path, &name, ft),
            CacheKind::Chunk => scan_chunk(&mut f, path, &name, ft),
            CacheKind::Build | CacheKind::Snapshot => match prefixed_id(&name) {
                Some((id, layout)) if !ft.is_dir() => {
                    f.evidence = true;
                    f.entries.push(Candidate::new(Some(id), path, ft, layout));
                }
                _ => f.other += 1,
            },
            CacheKind::Sandbox => match sandbox_group(&name, ft) {
                Some(group) => {
                    f.evidence = true;
                    let mut c = Candidate::new(None, path, ft, Layout::SandboxFile);
                    c.group = Some(group);
                    f.entries.push(c);
                }
                None => f.other += 1,
            },
        }
    }
    if kind == CacheKind::Sandbox {
        attribute_sandboxes(&mut f.entries);
    }
    Ok(f)
}

fn scan_template(f: &mut Found, path: PathBuf, name: &str, ft: FileType) {
    if let Ok(id) = BuildId::parse(name) {
        let mut c = Candidate::new(Some(id), path, ft, Layout::BuildDir);
        if ft.is_dir() {
            check_template_entry(&mut c, &mut f.evidence);
        }
        f.entries.push(c);
        return;
    }
    // Older layout: <templateID>/<buildID>/cache/... Only real folders are entered.
    if !ft.is_dir() {
        f.other += 1;
        return;
    }
    let mut any = false;
    if let Ok(kids) = children(&path) {
        for (sub, sft) in kids {
            let Ok(id) = BuildId::parse(&sub) else { continue };
            any = true;
            let mut c = Candidate::new(Some(id), path.join(&sub), sft, Layout::LegacyTemplateDir);
            if sft.is_dir() {
                check_template_entry(&mut c, &mut f.evidence);
            }
            f.entries.push(c);
        }
    }
    if !any {
        f.other += 1;
    }
}

/// A template-cache entry holds `cache/` (or nothing) and no stored build's files.
fn check_template_entry(c: &mut Candidate, evidence: &mut bool) {
    if let Some(why) = storage_like(&c.path) {
        c.not_cache = Some(why);
        return;
    }
    let kids = children(&c.path).unwrap_or_default();
    if kids.iter().any(|(n, t)| n == "cache" && t.is_dir()) {
        *evidence = true;
    } else if !kids.is_empty() {
        c.not_cache = Some("has no cache/ folder: does not look like a template-cache entry".into());
    }
}

fn scan_chunk(f: &mut Found, path: PathBuf, name: &str, ft: FileType) {
    let Ok(id) = BuildId::parse(name) else {
        f.other += 1;
        return;
    };
    let mut c = Candidate::new(Some(id), path, ft, Layout::BuildDir);
    if ft.is_dir() {
        if let Some(why) = storage_like(&c.path) {
            c.not_cache = Some(why);
        } else {
            let kids = children(&c.path).unwrap_or_default();
            c.objects = kids.iter().filter(|(_, t)| t.is_dir()).map(|(n, _)| n.clone()).collect();
            if !c.objects.is_empty() {
                f.evidence = true;
            }
        }
    }
    f.entries.push(c);
}

/// A sandbox whose `.link` points at a path naming a build belongs to that build: give every
/// file of the sandbox that build ID.
fn attribute_sandboxes(entries: &mut [Candidate]) {
    let mut owner: Vec<(String, BuildId)> = Vec::new();
    for c in entries.iter() {
        if let (Some(g), Some(t)) = (&c.group, &c.link_target)
            && let Some(id) =
                Path::new(t).components().find_map(|comp| BuildId::parse(&comp.as_os_str().to_string_lossy()).ok())
        {
            owner.push((g.clone(), id));
        }
    }
    for c in entries.iter_mut() {
        if let Some(g) = &c.group {
            c.build_id = owner.iter().find(|(og, _)| og == g).map(|(_, id)| *id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "11111111-2222-4333-8444-555555555555";

    #[test]
    fn names() {
        assert_eq!(prefixed_id(&format!("{A}-memfile-xyz")).map(|x| x.1), Some(Layout::PrefixedFile));
        assert_eq!(prefixed_id(&format!("resize-disk-{A}-grow.cache")).map(|x| x.1), Some(Layout::ResizeDiskFile));
        assert!(prefixed_id(A).is_none());
        assert!(prefixed_id(&format!("{A}x-memfile")).is_none());
        let dir = fs::metadata("/").unwrap().file_type();
        assert_eq!(sandbox_group("rootfs-isb1-abc.cow", dir), Some("isb1-abc".into()));
        assert_eq!(sandbox_group("restore-isb1-abc", dir), Some("isb1-abc".into()));
        assert!(sandbox_group("notes.txt", dir).is_none());
        assert!(is_storage_file_name("memfile.zstd") && is_storage_file_name("rootfs.ext4.header"));
        assert!(!is_storage_file_name("size.txt"));
    }
}
