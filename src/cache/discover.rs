//! Which entries of a cache root belong to which build, and whether the root looks like that
//! cache at all. Reads directory listings and `lstat`s only, through directory handles
//! (`walk::open_beneath`): never follows a symlink, never re-resolves a path.
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

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use super::roots::CacheKind;
use super::walk;
use crate::sys::FileId;
use crate::vocab::BuildId;

/// Prefix of tmpl's trash folders inside a cache root.
pub const TRASH_PREFIX: &str = ".tmpl-trash-";

/// How an entry sits in its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Dir,
    File,
    Symlink,
    Other,
}

impl EntryType {
    pub fn of(ft: FileType) -> EntryType {
        match ft {
            FileType::Symlink => EntryType::Symlink,
            FileType::Directory => EntryType::Dir,
            FileType::RegularFile => EntryType::File,
            _ => EntryType::Other,
        }
    }
}

/// Where an entry is, as names below its root (never a path to resolve): the legacy
/// `<templateID>` folder it sits in (with that folder's identity when listed), its own name, and
/// its identity (device, inode from `lstat`) when listed. A purge re-opens the parent from the
/// root's handle and acts only when both identities still match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub parent: Option<(OsString, FileId)>,
    pub name: OsString,
    pub id: FileId,
}

impl Loc {
    /// No place and no identity: what an entry read back from a JSON report has.
    pub fn unknown() -> Self {
        Loc { parent: None, name: OsString::new(), id: FileId { dev: 0, ino: 0 } }
    }
}

/// One entry found in a root.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub build_id: Option<BuildId>,
    /// For messages and the report.
    pub path: PathBuf,
    pub loc: Loc,
    pub entry_type: EntryType,
    pub layout: Layout,
    /// Why this entry must not be deleted whatever the flags (it does not look like the cache).
    pub not_cache: Option<String>,
    /// Why it could not be looked into (then it is not deleted either).
    pub unreadable: Option<String>,
    /// Chunk cache: object folders inside the build folder.
    pub objects: Vec<String>,
    /// Symlink entries: the link's text (never followed).
    pub link_target: Option<String>,
    /// Sandbox cache: `<sandboxID>-<rand>`, shared by a sandbox's files.
    pub group: Option<String>,
}

/// A trash folder left in a root.
#[derive(Clone, Debug)]
pub struct TrashFound {
    pub path: PathBuf,
    pub loc: Loc,
}

/// A folder being listed: its handle and its path (for messages).
struct Dir<'a> {
    fd: BorrowedFd<'a>,
    path: &'a Path,
    /// `Some` for a legacy `<templateID>` folder.
    parent: Option<(OsString, FileId)>,
}

impl Candidate {
    fn new(build_id: Option<BuildId>, dir: &Dir<'_>, name: &OsStr, layout: Layout) -> Option<Self> {
        // Identity now; an entry gone meanwhile is no candidate.
        let st = walk::stat_at(dir.fd, name).ok()?;
        let entry_type = EntryType::of(FileType::from_raw_mode(st.st_mode));
        let link_target = (entry_type == EntryType::Symlink)
            .then(|| rustix::fs::readlinkat(dir.fd, name, Vec::new()).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned());
        Some(Candidate {
            build_id,
            path: dir.path.join(name),
            loc: Loc { parent: dir.parent.clone(), name: name.to_os_string(), id: walk::file_id(&st) },
            entry_type,
            layout,
            not_cache: None,
            unreadable: None,
            objects: Vec::new(),
            link_target,
            group: None,
        })
    }
}

/// What a root holds.
#[derive(Debug, Default)]
pub struct Found {
    /// Entries of any build (the caller selects).
    pub entries: Vec<Candidate>,
    /// Trash folders (`.tmpl-trash-*`) from earlier runs.
    pub trash: Vec<TrashFound>,
    /// Whether at least one entry has this cache's shape.
    pub evidence: bool,
    /// Whether the root holds nothing but `lost+found` and trash.
    pub empty: bool,
    /// Entries that belong to no build (left alone).
    pub other: usize,
    /// Legacy `<templateID>` folders that could not be listed (with why): what they hold is
    /// unknown, so a purge cannot say it got everything.
    pub unlisted: Vec<(PathBuf, String)>,
    /// Template cache: `<templateID>` entries that are symlinks to folders holding build-ID
    /// folders. Never followed; listed (read-only) only to report the builds behind them.
    pub behind_links: Vec<LinkedFolder>,
}

/// A symlink in a template-cache root to a folder that holds `<buildID>` folders.
#[derive(Debug)]
pub struct LinkedFolder {
    pub path: PathBuf,
    pub target: String,
    pub ids: Vec<BuildId>,
}

/// Most names read from behind a symlinked legacy folder.
const MAX_LINKED_NAMES: usize = 100_000;

/// A regular file with one of these names is a *stored* build's file, never a cache's.
fn is_storage_file_name(name: &str) -> bool {
    const STEMS: [&str; 4] = ["rootfs.ext4", "memfile", "snapfile", "metadata.json"];
    STEMS.iter().any(|s| name == *s || name.starts_with(&format!("{s}.")))
        || name.ends_with(".header")
        || name == "build_id"
}

/// Children of a folder as (name, type), sorted.
fn children(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, FileType)>> {
    Ok(walk::children(fd)?.into_iter().map(|(n, t)| (n.to_string_lossy().into_owned(), t)).collect())
}

/// A build folder that holds a stored build's files, where the cache would have folders.
fn storage_like(kids: &[(String, FileType)]) -> Option<String> {
    let files: Vec<&str> = kids
        .iter()
        .filter(|(n, t)| *t == FileType::RegularFile && is_storage_file_name(n))
        .map(|(n, _)| n.as_str())
        .collect();
    (!files.is_empty()).then(|| {
        format!(
            "holds {} as regular files: this looks like a stored template build, not a cache entry",
            files.join(", ")
        )
    })
}

/// The children of a candidate folder, opened from its parent's handle; `None` (with the
/// candidate marked unreadable) when it cannot be opened without following a symlink.
fn entry_children(c: &mut Candidate, dir: &Dir<'_>) -> Option<Vec<(String, FileType)>> {
    let r = walk::open_beneath(dir.fd, &c.loc.name).and_then(|fd| {
        let st = rustix::fs::fstat(&fd)?;
        if walk::file_id(&st) != c.loc.id {
            return Err(io::Error::other("changed while it was being listed"));
        }
        children(fd.as_fd())
    });
    match r {
        Ok(k) => Some(k),
        Err(e) => {
            c.unreadable = Some(format!("cannot be listed: {e}"));
            None
        }
    }
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
        return (ft == FileType::Directory && rest.contains('-')).then(|| rest.to_string());
    }
    let stem = name.strip_suffix(".cow").or_else(|| name.strip_suffix(".link"))?;
    let (_disk, key) = stem.split_once('-')?;
    key.contains('-').then(|| key.to_string())
}

/// List a root through its handle (`root` is its path, for messages). `Err` only when the root
/// itself cannot be read.
pub fn scan(kind: CacheKind, root_fd: BorrowedFd<'_>, root: &Path) -> io::Result<Found> {
    let mut f = Found { empty: true, ..Default::default() };
    let dir = Dir { fd: root_fd, path: root, parent: None };
    for (name, ft) in walk::children(root_fd)? {
        let lossy = name.to_string_lossy().into_owned();
        if lossy == "lost+found" {
            continue;
        }
        if lossy.starts_with(TRASH_PREFIX) && ft == FileType::Directory {
            if let Ok(st) = walk::stat_at(root_fd, &name) {
                let loc = Loc { parent: None, name: name.clone(), id: walk::file_id(&st) };
                f.trash.push(TrashFound { path: root.join(&name), loc });
            }
            continue;
        }
        f.empty = false;
        match kind {
            CacheKind::Template => scan_template(&mut f, &dir, &name, &lossy, ft),
            CacheKind::Chunk => scan_chunk(&mut f, &dir, &name, &lossy),
            CacheKind::Build | CacheKind::Snapshot => match prefixed_id(&lossy) {
                Some((id, layout)) if ft != FileType::Directory => {
                    f.evidence = true;
                    f.entries.extend(Candidate::new(Some(id), &dir, &name, layout));
                }
                _ => f.other += 1,
            },
            CacheKind::Sandbox => match sandbox_group(&lossy, ft) {
                Some(group) => {
                    f.evidence = true;
                    if let Some(mut c) = Candidate::new(None, &dir, &name, Layout::SandboxFile) {
                        c.group = Some(group);
                        f.entries.push(c);
                    }
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

fn scan_template(f: &mut Found, dir: &Dir<'_>, name: &OsStr, lossy: &str, ft: FileType) {
    if let Ok(id) = BuildId::parse(lossy) {
        if let Some(mut c) = Candidate::new(Some(id), dir, name, Layout::BuildDir) {
            if c.entry_type == EntryType::Dir {
                check_template_entry(&mut c, dir, &mut f.evidence);
            }
            f.entries.push(c);
        }
        return;
    }
    // Older layout: <templateID>/<buildID>/cache/... Only real folders are entered, opened from
    // the root's handle (a symlink there fails to open and is left alone).
    let path = dir.path.join(name);
    if ft == FileType::Symlink {
        f.other += 1;
        peek_behind_link(f, dir, name, &path);
        return;
    }
    if ft != FileType::Directory {
        f.other += 1;
        return;
    }
    let opened = walk::open_beneath(dir.fd, name)
        .and_then(|fd| rustix::fs::fstat(&fd).map(|st| (walk::file_id(&st), fd)).map_err(io::Error::from))
        .and_then(|(tid, fd)| walk::children(fd.as_fd()).map(|kids| (tid, fd, kids)));
    let (tid, fd, kids) = match opened {
        Ok(x) => x,
        Err(e) => {
            f.other += 1;
            // Swapped for a symlink or removed since the listing: not a folder of this root now.
            let gone = e.kind() == io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::LOOP.raw_os_error()
                    || c == rustix::io::Errno::NOTDIR.raw_os_error());
            if !gone {
                f.unlisted.push((path, e.to_string()));
            }
            return;
        }
    };
    let sub = Dir { fd: fd.as_fd(), path: &path, parent: Some((name.to_os_string(), tid)) };
    let mut any = false;
    {
        for (sname, _) in kids {
            let Ok(id) = BuildId::parse(&sname.to_string_lossy()) else { continue };
            any = true;
            if let Some(mut c) = Candidate::new(Some(id), &sub, &sname, Layout::LegacyTemplateDir) {
                if c.entry_type == EntryType::Dir {
                    check_template_entry(&mut c, &sub, &mut f.evidence);
                }
                f.entries.push(c);
            }
        }
    }
    if !any {
        f.other += 1;
    }
}

/// A symlink where a legacy `<templateID>` folder would be: list (read-only, through the link) the
/// build-ID folders behind it, so a purge of those builds can say it did not reach them.
fn peek_behind_link(f: &mut Found, dir: &Dir<'_>, name: &OsStr, path: &Path) {
    let Ok(target) = rustix::fs::readlinkat(dir.fd, name, Vec::new()) else { return };
    let Ok(rd) = std::fs::read_dir(path) else { return };
    let ids: Vec<BuildId> = rd
        .take(MAX_LINKED_NAMES)
        .flatten()
        .filter_map(|e| BuildId::parse(&e.file_name().to_string_lossy()).ok())
        .collect();
    if !ids.is_empty() {
        let target = target.to_string_lossy().into_owned();
        f.behind_links.push(LinkedFolder { path: path.to_path_buf(), target, ids });
    }
}

/// A template-cache entry holds `cache/` (or nothing) and no stored build's files.
fn check_template_entry(c: &mut Candidate, dir: &Dir<'_>, evidence: &mut bool) {
    let Some(kids) = entry_children(c, dir) else { return };
    if let Some(why) = storage_like(&kids) {
        c.not_cache = Some(why);
        return;
    }
    if kids.iter().any(|(n, t)| n == "cache" && *t == FileType::Directory) {
        *evidence = true;
    } else if !kids.is_empty() {
        c.not_cache = Some("has no cache/ folder: does not look like a template-cache entry".into());
    }
}

fn scan_chunk(f: &mut Found, dir: &Dir<'_>, name: &OsStr, lossy: &str) {
    let Ok(id) = BuildId::parse(lossy) else {
        f.other += 1;
        return;
    };
    let Some(mut c) = Candidate::new(Some(id), dir, name, Layout::BuildDir) else { return };
    if c.entry_type == EntryType::Dir
        && let Some(kids) = entry_children(&mut c, dir)
    {
        if let Some(why) = storage_like(&kids) {
            c.not_cache = Some(why);
        } else {
            c.objects = kids.iter().filter(|(_, t)| *t == FileType::Directory).map(|(n, _)| n.clone()).collect();
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
        let dir = FileType::Directory;
        assert_eq!(sandbox_group("rootfs-isb1-abc.cow", dir), Some("isb1-abc".into()));
        assert_eq!(sandbox_group("restore-isb1-abc", dir), Some("isb1-abc".into()));
        assert!(sandbox_group("notes.txt", dir).is_none());
        assert!(is_storage_file_name("memfile.zstd") && is_storage_file_name("rootfs.ext4.header"));
        assert!(!is_storage_file_name("size.txt"));
    }
}
