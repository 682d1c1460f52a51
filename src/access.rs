//! Naming a permission problem: which file or folder tmpl may not read, where the missing
//! permission is (the path itself or a folder above it), which permission that is, and for which
//! user. Used wherever a read fails with `EACCES`/`EPERM`, so an operator reads "uid 1000 needs
//! search (x) permission on /srv/templates/<id>" instead of "missing" or "corrupt".
//!
//! Answered with `faccessat2(AT_EACCESS)` (the effective user's permission, as the kernel checks
//! it, ACLs included) on every folder from `/` down, then on the path itself. Never prints.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, Mode, OFlags};
use serde::Serialize;

/// A permission tmpl lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denied {
    /// What tmpl tried to read.
    pub path: PathBuf,
    /// Where the permission is missing: `path` itself or a folder above it.
    pub at: PathBuf,
    /// The permission needed there, in words (`read (r)`, `search (x)`, `read and search (r-x)`).
    pub needs: String,
    /// The user tmpl runs as (`uid 65534 (nobody)`).
    pub user: String,
    /// When the mode bits seem to allow it: what else can refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "permission denied: cannot read {}: {} needs {} permission on ",
            self.path.display(),
            self.user,
            self.needs
        )?;
        if self.at == self.path {
            write!(f, "it")?;
        } else {
            write!(f, "{}", self.at.display())?;
        }
        if let Some(n) = &self.note {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// Is `e` a permission error (`EACCES` or `EPERM`)?
pub fn is_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

fn allowed(path: &Path, access: Access) -> bool {
    rustix::fs::accessat(CWD, path, access, AtFlags::EACCESS).is_ok()
}

/// May the effective user search (enter) the folder `path`?
pub fn allowed_search(path: &Path) -> bool {
    allowed(path, Access::EXEC_OK)
}

/// Explain why reading `path` was refused. Call after a read failed with a permission error.
pub fn diagnose(path: &Path) -> Denied {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let user = user();
    let mut above: Vec<&Path> = abs.ancestors().skip(1).collect();
    above.reverse();
    for dir in above {
        if !allowed(dir, Access::EXEC_OK) {
            return Denied { path: abs.clone(), at: dir.to_path_buf(), needs: "search (x)".into(), user, note: None };
        }
    }
    let is_dir = std::fs::metadata(&abs).is_ok_and(|m| m.is_dir());
    let (needs, missing) = if is_dir {
        let r = allowed(&abs, Access::READ_OK);
        let x = allowed(&abs, Access::EXEC_OK);
        let needs = match (r, x) {
            (false, true) => "read (r)",
            (true, false) => "search (x)",
            _ => "read and search (r-x)",
        };
        (needs, !(r && x))
    } else {
        ("read (r)", !allowed(&abs, Access::READ_OK))
    };
    let note = (!missing).then(|| {
        "the mode bits allow it: an ACL, a security module (SELinux, AppArmor) or the mount refuses it".to_string()
    });
    Denied { path: abs.clone(), at: abs, needs: needs.into(), user, note }
}

/// Can the effective user read `path`? A file is opened for reading (non-blocking: a FIFO does
/// not hang) and closed; a folder is opened and must be searchable. `Ok(None)` when it can (or
/// does not exist: the caller reports that), `Ok(Some(denied))` when a permission refuses it.
pub fn check_readable(path: &Path) -> io::Result<Option<Denied>> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => {
            let st = rustix::fs::fstat(fd.as_fd())?;
            let dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
            if dir && !allowed(path, Access::EXEC_OK) {
                return Ok(Some(diagnose(path)));
            }
            Ok(None)
        }
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => {
            let e = io::Error::from(e);
            if is_denied(&e) { Ok(Some(diagnose(path))) } else { Err(e) }
        }
    }
}

/// `uid N (name)` of the effective user; the name from `/etc/passwd` when it lists the uid.
pub fn user() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = passwd_name(uid);
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

fn passwd_name(uid: u32) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open("/etc/passwd").ok()?.take(4 << 20).read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_things_and_missing_ones_are_not_denied() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert_eq!(check_readable(&d.path().join("f")).unwrap(), None);
        assert_eq!(check_readable(d.path()).unwrap(), None);
        assert_eq!(check_readable(&d.path().join("absent")).unwrap(), None);
        assert!(user().starts_with("uid "));
    }

    #[test]
    fn the_message_names_path_user_permission_and_place() {
        let d = Denied {
            path: "/s/b/rootfs.ext4".into(),
            at: "/s/b".into(),
            needs: "search (x)".into(),
            user: "uid 65534 (nobody)".into(),
            note: None,
        };
        assert_eq!(
            d.to_string(),
            "permission denied: cannot read /s/b/rootfs.ext4: uid 65534 (nobody) needs search (x) permission on /s/b"
        );
    }
}
