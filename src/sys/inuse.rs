//! Is a file in use? Three independent questions, each answered from procfs/sysfs:
//!
//! - [`holders`]: processes with the file open (`/proc/<pid>/fd/*`) or mapped
//!   (`/proc/<pid>/maps`), matched by device and inode so renames and relative paths do not
//!   matter;
//! - [`flock_holders`]: processes holding an `flock`/POSIX lock on it, from `/proc/locks`
//!   (`<n>: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF`), without taking the lock;
//! - [`loop_uses`]: loop devices backed by it (`/sys/block/loop*/loop/backing_file`) and where
//!   those devices are mounted (`/proc/self/mountinfo`);
//! - [`holders_on_fs`] / [`is_mount_point`]: who keeps a mounted filesystem busy, and whether a
//!   path is a mount point (used by the mount guard in `sys::mount`).
//!
//! Processes we may not inspect (other users' `/proc/<pid>/fd` without privilege) are skipped;
//! callers that need certainty run as root.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// Identity of an existing path (following symlinks).
    pub fn of(path: &Path) -> io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId { dev: m.dev(), ino: m.ino() })
    }

    /// Kernel device number split as `/proc` prints it (major, minor).
    fn major_minor(&self) -> (u64, u64) {
        // glibc's gnu_dev_major/minor encoding of a 64-bit dev_t.
        let major = ((self.dev >> 32) & 0xffff_f000) | ((self.dev >> 8) & 0x0000_0fff);
        let minor = ((self.dev >> 12) & 0xffff_ff00) | (self.dev & 0x0000_00ff);
        (major, minor)
    }
}

/// How a process uses a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Open,
    Mapped,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Open => "open",
            Access::Mapped => "mapped",
        })
    }
}

/// One process using one of the files asked about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// The process name (`/proc/<pid>/comm`).
    pub comm: String,
    pub path: PathBuf,
    pub access: Access,
}

fn pids() -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let e = e?;
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            out.push(pid);
        }
    }
    Ok(out)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Processes that have any of `paths` open or mapped. Paths that do not exist are ignored.
pub fn holders(paths: &[&Path]) -> io::Result<Vec<Holder>> {
    let wanted: Vec<(FileId, &Path)> = paths.iter().filter_map(|p| FileId::of(p).ok().map(|id| (id, *p))).collect();
    holders_of(&wanted)
}

/// Processes that have any of the files with these identities open or mapped; each holder is
/// reported with the path given beside the identity (for callers that stat through directory
/// handles, never by path: `cache::walk`).
pub fn holders_of<P: AsRef<Path>>(wanted: &[(FileId, P)]) -> io::Result<Vec<Holder>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let lookup = |id: FileId| wanted.iter().find(|(w, _)| *w == id).map(|(_, p)| p.as_ref().to_path_buf());
    let mut out = BTreeSet::new();
    for pid in pids()? {
        // Open descriptors.
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in rd.flatten() {
                if let Ok(m) = std::fs::metadata(fd.path())
                    && let Some(path) = lookup(FileId { dev: m.dev(), ino: m.ino() })
                {
                    out.insert(Holder { pid, comm: comm(pid), path, access: Access::Open });
                }
            }
        }
        // Memory mappings: "addr perms offset maj:min inode path".
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            for line in maps.lines() {
                let mut f = line.split_whitespace();
                let (Some(_), Some(_), Some(_), Some(dev), Some(ino)) =
                    (f.next(), f.next(), f.next(), f.next(), f.next())
                else {
                    continue;
                };
                let Ok(ino) = ino.parse::<u64>() else { continue };
                if ino == 0 {
                    continue;
                }
                for (w, p) in wanted {
                    if w.ino == ino && dev_matches(dev, w) {
                        out.insert(Holder {
                            pid,
                            comm: comm(pid),
                            path: p.as_ref().to_path_buf(),
                            access: Access::Mapped,
                        });
                    }
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Processes with any file on the filesystem whose device number is `dev` open, mapped, or as
/// their working directory (what keeps a mount busy). Paths are as `/proc` shows them.
pub fn holders_on_fs(dev: u64) -> io::Result<Vec<Holder>> {
    let mut out = BTreeSet::new();
    let id = FileId { dev, ino: 0 };
    for pid in pids()? {
        let mut links: Vec<PathBuf> = vec![PathBuf::from(format!("/proc/{pid}/cwd"))];
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            links.extend(rd.flatten().map(|e| e.path()));
        }
        for link in links {
            if std::fs::metadata(&link).is_ok_and(|m| m.dev() == dev) {
                let path = std::fs::read_link(&link).unwrap_or(link);
                out.insert(Holder { pid, comm: comm(pid), path, access: Access::Open });
            }
        }
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            for line in maps.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 6 && f[4] != "0" && dev_matches(f[3], &id) {
                    out.insert(Holder { pid, comm: comm(pid), path: PathBuf::from(f[5]), access: Access::Mapped });
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Is `path` (taken literally; pass a canonical path) a mount point in this process's mount
/// namespace (`/proc/self/mountinfo`)?
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&text).iter().any(|p| p == path))
}

/// Every mount point in a mountinfo text.
fn mount_points(text: &str) -> Vec<PathBuf> {
    text.lines().filter_map(|l| l.split_whitespace().nth(4)).map(|mp| PathBuf::from(unescape_octal(mp))).collect()
}

/// `maj:min` in hex, as `/proc/<pid>/maps` and `/proc/locks` print devices.
fn dev_matches(text: &str, id: &FileId) -> bool {
    let (major, minor) = id.major_minor();
    let mut it = text.split(':');
    match (
        it.next().and_then(|s| u64::from_str_radix(s, 16).ok()),
        it.next().and_then(|s| u64::from_str_radix(s, 16).ok()),
    ) {
        (Some(a), Some(b)) => a == major && b == minor,
        _ => false,
    }
}

/// PIDs holding a lock (flock, POSIX or OFD) on `path`, read from `/proc/locks` without taking
/// it. `Ok(vec![])` when nobody holds one or the file does not exist.
pub fn flock_holders(path: &Path) -> io::Result<Vec<u32>> {
    let id = match FileId::of(path) {
        Ok(id) => id,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text = std::fs::read_to_string("/proc/locks")?;
    Ok(parse_locks(&text, &id))
}

/// Parse `/proc/locks` for locks on `id`. Lines look like
/// `1: FLOCK  ADVISORY  WRITE 1234 fe:00:4711 0 EOF`; blocked waiters (`1: -> FLOCK ...`) are
/// not holders.
fn parse_locks(text: &str, id: &FileId) -> Vec<u32> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            continue;
        }
        let (Ok(pid), Some(dev_ino)) = (fields[4].parse::<u32>(), fields.get(5)) else { continue };
        let Some((dev, ino)) = dev_ino.rsplit_once(':') else { continue };
        if ino.parse::<u64>().ok() == Some(id.ino) && dev_matches(dev, id) {
            out.insert(pid);
        }
    }
    out.into_iter().collect()
}

/// A loop device backed by the image, and its mount points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoopUse {
    pub device: PathBuf,
    pub mount_points: Vec<PathBuf>,
}

/// Loop devices whose backing file is `image`, each with where it is mounted.
pub fn loop_uses(image: &Path) -> io::Result<Vec<LoopUse>> {
    let want = FileId::of(image)?;
    let canon = std::fs::canonicalize(image)?;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else { return Ok(out) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else { continue };
        let backing = PathBuf::from(backing.trim_end_matches('\n'));
        let same = backing == canon || FileId::of(&backing).is_ok_and(|b| b == want);
        if same {
            let device = PathBuf::from("/dev").join(&name);
            out.push(LoopUse { mount_points: mount_points_of(&device)?, device });
        }
    }
    Ok(out)
}

/// Mount points whose source is `device` (from `/proc/self/mountinfo`).
fn mount_points_of(device: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text, device))
}

/// mountinfo: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
fn parse_mountinfo(text: &str, device: &Path) -> Vec<PathBuf> {
    let dev = device.to_string_lossy();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let source = right.split_whitespace().nth(1);
        if source == Some(dev.as_ref())
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            out.push(PathBuf::from(unescape_octal(mp)));
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pid N (tmpl inject-envd ...)` for each process holding an flock on `dir` (other than us).
pub fn lock_holders(dir: &Path) -> Vec<String> {
    let me = std::process::id();
    flock_holders(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| *p != me)
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    let words: Vec<String> = b
                        .split(|c| *c == 0)
                        .filter(|w| !w.is_empty())
                        .map(|w| String::from_utf8_lossy(w).into_owned())
                        .collect();
                    let mut line = words.iter().take(8).cloned().collect::<Vec<_>>().join(" ");
                    if words.len() > 8 {
                        line.push_str(" ...");
                    }
                    line
                })
                .unwrap_or_default();
            if cmd.is_empty() { format!("pid {pid}") } else { format!("pid {pid} ({cmd})") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_is_held_by_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"x").unwrap();
        let me = std::process::id();
        let before = holders(&[&p]).unwrap();
        assert!(before.iter().all(|h| h.pid != me), "{before:?}");
        let f = std::fs::File::open(&p).unwrap();
        let during = holders(&[&p]).unwrap();
        assert!(during.iter().any(|h| h.pid == me && h.access == Access::Open && h.path == p), "{during:?}");
        drop(f);
        assert!(holders(&[&p]).unwrap().iter().all(|h| h.pid != me));
        assert!(holders(&[&dir.path().join("absent")]).unwrap().is_empty());
    }

    #[test]
    fn a_held_flock_is_seen_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("orchestrator.lock");
        std::fs::write(&p, b"").unwrap();
        assert!(flock_holders(&p).unwrap().is_empty());
        let f = std::fs::File::open(&p).unwrap();
        f.lock().unwrap();
        assert_eq!(flock_holders(&p).unwrap(), vec![std::process::id()]);
        f.unlock().unwrap();
        assert!(flock_holders(&p).unwrap().is_empty());
        assert!(flock_holders(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn root_is_a_mount_point_and_a_tempdir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(&std::fs::canonicalize(dir.path()).unwrap()).unwrap());
    }

    #[test]
    fn our_cwd_and_open_files_hold_their_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("held");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let dev = f.metadata().unwrap().dev();
        let me = std::process::id();
        let held = holders_on_fs(dev).unwrap();
        assert!(held.iter().any(|h| h.pid == me && h.path == std::fs::canonicalize(&p).unwrap()), "{held:?}");
        drop(f);
    }

    #[test]
    fn proc_locks_lines() {
        let id = FileId { dev: (0xfe << 8), ino: 4711 };
        let text = "1: FLOCK  ADVISORY  WRITE 1234 fe:00:4711 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 999 fe:00:4711 0 EOF\n\
                    2: POSIX  ADVISORY  READ 77 fe:00:4712 0 EOF\n\
                    3: OFDLCK ADVISORY  READ -1 fe:00:4711 0 EOF\n";
        assert_eq!(parse_locks(text, &id), vec![1234]);
    }

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 7:0 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/loop0 rw\n\
                    37 35 7:1 / /other rw - ext4 /dev/loop1 rw\n";
        assert_eq!(parse_mountinfo(text, Path::new("/dev/loop0")), vec![PathBuf::from("/mnt/with space")]);
        assert_eq!(mount_points(text), vec![PathBuf::from("/mnt/with space"), PathBuf::from("/other")]);
    }
}
