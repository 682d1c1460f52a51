//! Where builds live, and what names them.
//!
//! The storage root is resolved the way E2B's orchestrator resolves its Local provider
//! (reference: e2b-formats.md §1, `pkg/cfg/storage.go`): `--storage`, then `TMPL_STORAGE`, then
//! `TEMPLATE_STORAGE_URL` (only `file://`), then `LOCAL_TEMPLATE_STORAGE_BASE_PATH`, then the
//! orchestrator's default `/tmp/templates`. A build is `<root>/<build-id>/`, where the build ID is a
//! lower-case UUID. Anything that is not a UUID is refused before a file is touched, so a hostile
//! argument such as `../..` can never name a directory outside the root.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vocab::BuildId;
use crate::vocab::BuildIdError;
use crate::vocab::files::{Artifact, COMPRESSED_SUFFIXES, KNOWN_FILES};

/// Result of resolving storage and builds.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A `TEMPLATE_STORAGE_URL` tmpl cannot use (the environment's: exit 4).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageUrlError {
    #[error("TEMPLATE_STORAGE_URL={0:?} is not a URL; expected file:///path/to/templates")]
    NotAUrl(String),
    #[error(
        "TEMPLATE_STORAGE_URL uses the {0:?} scheme; tmpl reads only local storage (file://). Copy the builds to a local directory and pass --storage DIR"
    )]
    NotLocal(String),
    #[error("TEMPLATE_STORAGE_URL={0:?} names a host; use file:///absolute/path")]
    NamesAHost(String),
    #[error("TEMPLATE_STORAGE_URL={0:?} has no path")]
    NoPath(String),
}

/// Why a storage root or a build in it could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    BadBuildId(#[from] BuildIdError),
    #[error(transparent)]
    Url(#[from] StorageUrlError),
    /// No such build folder (the message is read after the folder's path).
    #[error("no build {id} in storage {} (storage chosen by {chosen_by}; use --storage DIR or TMPL_STORAGE)", root.display())]
    NoSuchBuild { dir: PathBuf, id: BuildId, root: PathBuf, chosen_by: &'static str },
    #[error("is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("is not a build directory: it holds none of {}", KNOWN_FILES.join(", "))]
    NotABuildDirectory { dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The storage root is the default one (nothing named another) and cannot be read.
    #[error(
        "cannot read the default storage {} (none of --storage, TMPL_STORAGE, TEMPLATE_STORAGE_URL, \
         LOCAL_TEMPLATE_STORAGE_BASE_PATH is set): {source}",
        path.display()
    )]
    DefaultUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// The path the error is about (a build folder, the root, the argument given).
    pub fn path(&self) -> &Path {
        match self {
            StorageError::NoSuchBuild { dir, .. } => dir,
            StorageError::NotADirectory { path }
            | StorageError::Io { path, .. }
            | StorageError::DefaultUnreadable { path, .. } => path,
            StorageError::NotABuildDirectory { dir } => dir,
            StorageError::BadBuildId(_) | StorageError::Url(_) => Path::new(""),
        }
    }

    /// Is this a permission problem?
    pub fn is_permission(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if crate::access::is_denied(source))
    }

    fn io(path: &Path, source: io::Error) -> Self {
        StorageError::Io { path: path.to_path_buf(), source }
    }
}

/// E2B's default Local storage path (`LOCAL_TEMPLATE_STORAGE_BASE_PATH` default).
pub const DEFAULT_STORAGE: &str = "/tmp/templates";

/// Which setting chose the storage root (shown by `inspect` and in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageSource {
    Flag,
    TmplStorage,
    TemplateStorageUrl,
    LocalTemplateStorageBasePath,
    /// `STORAGE_PROVIDER` with `TEMPLATE_BUCKET_NAME` (a bucket).
    StorageProvider,
    Default,
    /// The parent directory of a build given as a path.
    BuildPath,
}

impl StorageSource {
    pub fn describe(&self) -> &'static str {
        match self {
            StorageSource::Flag => "--storage",
            StorageSource::TmplStorage => "TMPL_STORAGE",
            StorageSource::TemplateStorageUrl => "TEMPLATE_STORAGE_URL",
            StorageSource::LocalTemplateStorageBasePath => "LOCAL_TEMPLATE_STORAGE_BASE_PATH",
            StorageSource::StorageProvider => "STORAGE_PROVIDER",
            StorageSource::Default => "default (/tmp/templates)",
            StorageSource::BuildPath => "parent of the build directory given",
        }
    }
}

/// A template storage root on the local filesystem.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Storage {
    pub root: PathBuf,
    pub source: StorageSource,
}

/// Where one build is, once an argument has been resolved.
#[derive(Clone, Debug)]
pub struct BuildLocation {
    /// The build directory.
    pub dir: PathBuf,
    /// The folder name when it is a UUID (the normal case).
    pub folder_id: Option<BuildId>,
    /// The storage root that holds this build's ancestors.
    pub storage_root: PathBuf,
}

impl Storage {
    /// Resolve the storage root from the flag and the environment (`env` is injectable so tests
    /// do not depend on the process environment).
    pub fn resolve(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Storage> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(p) = flag {
            return Ok(Storage { root: p.to_path_buf(), source: StorageSource::Flag });
        }
        if let Some(p) = get("TMPL_STORAGE") {
            return Ok(Storage { root: p.into(), source: StorageSource::TmplStorage });
        }
        if let Some(url) = get("TEMPLATE_STORAGE_URL") {
            return Ok(Storage { root: parse_storage_url(&url)?, source: StorageSource::TemplateStorageUrl });
        }
        if let Some(p) = get("LOCAL_TEMPLATE_STORAGE_BASE_PATH") {
            return Ok(Storage { root: p.into(), source: StorageSource::LocalTemplateStorageBasePath });
        }
        Ok(Storage { root: DEFAULT_STORAGE.into(), source: StorageSource::Default })
    }

    /// Resolve from the real process environment.
    pub fn from_env(flag: Option<&Path>) -> Result<Storage> {
        Self::resolve(flag, &|k| std::env::var(k).ok())
    }

    /// `<root>/<id>`.
    pub fn build_dir(&self, id: &BuildId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Resolve a BUILD argument: a UUID (looked up under the root) or, when it contains a `/`, a
    /// path to a build directory. Nothing is read before the argument has been validated.
    pub fn locate(&self, arg: &str) -> Result<BuildLocation> {
        if arg.contains('/') {
            return locate_path(Path::new(arg));
        }
        let id = BuildId::parse(arg)?;
        let dir = self.build_dir(&id);
        if let Some(r) = crate::remote::mount::stat(&dir) {
            use crate::remote::mount::Stat;
            return match r {
                Ok(Stat::Dir) => Ok(BuildLocation { dir, folder_id: Some(id), storage_root: self.root.clone() }),
                Ok(Stat::File(_)) => Err(StorageError::NotADirectory { path: dir }),
                Ok(Stat::Missing) => Err(StorageError::NoSuchBuild {
                    dir,
                    id,
                    root: self.root.clone(),
                    chosen_by: self.source.describe(),
                }),
                Err(e) => Err(StorageError::io(&dir, e)),
            };
        }
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(BuildLocation { dir, folder_id: Some(id), storage_root: self.root.clone() }),
            Ok(_) => Err(StorageError::NotADirectory { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NoSuchBuild { dir, id, root: self.root.clone(), chosen_by: self.source.describe() })
            }
            Err(e) => Err(StorageError::io(&dir, e)),
        }
    }

    /// Every UUID-named directory under the root, sorted. Other entries are counted, not listed.
    pub fn list_builds(&self) -> Result<(Vec<BuildId>, usize)> {
        // A bucket: the prefixes at its top (one delimited LIST).
        if let Some(r) = crate::remote::mount::list_dirs(&self.root) {
            let names = r.map_err(|e| StorageError::io(&self.root, e))?;
            let mut ids: Vec<BuildId> = names.iter().filter_map(|n| BuildId::parse(n).ok()).collect();
            ids.sort();
            let other = names.len() - ids.len();
            return Ok((ids, other));
        }
        let rd = std::fs::read_dir(&self.root).map_err(|e| match self.source {
            StorageSource::Default if !crate::access::is_denied(&e) => {
                StorageError::DefaultUnreadable { path: self.root.clone(), source: e }
            }
            _ => StorageError::io(&self.root, e),
        })?;
        let mut ids = Vec::new();
        let mut other = 0;
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io(&self.root, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| BuildId::parse(n).ok()) else {
                other += 1;
                continue;
            };
            // A UUID-named folder (or link to one) is a build; one a permission keeps us from
            // looking at is listed too, so verify reports the permission instead of skipping it.
            let is_build = match entry.file_type() {
                Ok(t) if t.is_dir() => true,
                Ok(t) if t.is_symlink() => match std::fs::metadata(entry.path()) {
                    Ok(m) => m.is_dir(),
                    Err(e) => crate::access::is_denied(&e),
                },
                Ok(_) => false,
                Err(e) => crate::access::is_denied(&e),
            };
            if is_build {
                ids.push(id);
            } else {
                other += 1;
            }
        }
        ids.sort();
        Ok((ids, other))
    }
}

/// `TEMPLATE_STORAGE_URL`: `file:///abs/path` or `file:relative`; any other scheme is refused by
/// name, since tmpl reads local storage only.
pub fn parse_storage_url(url: &str) -> Result<PathBuf, StorageUrlError> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(StorageUrlError::NotAUrl(url.to_string()));
    };
    if !scheme.eq_ignore_ascii_case("file") {
        return Err(StorageUrlError::NotLocal(scheme.to_string()));
    }
    let path = if let Some(p) = rest.strip_prefix("//") {
        // file://host/path is not supported; file:///path has an empty host.
        if !p.starts_with('/') {
            return Err(StorageUrlError::NamesAHost(url.to_string()));
        }
        p
    } else {
        rest
    };
    if path.is_empty() {
        return Err(StorageUrlError::NoPath(url.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// A build given as a path: it must be a directory that holds at least one build file.
fn locate_path(path: &Path) -> Result<BuildLocation> {
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io(path, e))?;
    if !meta.is_dir() {
        return Err(StorageError::NotADirectory { path: path.to_path_buf() });
    }
    let dir = std::fs::canonicalize(path).map_err(|e| StorageError::io(path, e))?;
    // A folder we may not look into is a permission problem, not "not a build directory".
    std::fs::read_dir(&dir).map_err(|e| StorageError::io(&dir, e))?;
    let exists = |name: String| -> Result<bool> {
        let p = dir.join(name);
        match std::fs::metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(&p, e)),
        }
    };
    let mut holds_build_file = false;
    for name in KNOWN_FILES
        .iter()
        .map(|f| f.to_string())
        .chain(COMPRESSED_SUFFIXES.iter().flat_map(|s| Artifact::ALL.map(|a| format!("{}{s}", a.data_name()))))
    {
        if exists(name)? {
            holds_build_file = true;
            break;
        }
    }
    if !holds_build_file {
        return Err(StorageError::NotABuildDirectory { dir });
    }
    let folder_id = dir.file_name().and_then(|n| n.to_str()).and_then(|n| BuildId::parse(n).ok());
    let storage_root = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    Ok(BuildLocation { dir, folder_id, storage_root })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unreadable default storage is named as the default, its cause said once.
    #[test]
    fn an_unreadable_default_storage_says_it_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("templates");
        let default = Storage { root: root.clone(), source: StorageSource::Default };
        let err = crate::error::Error::from(default.list_builds().unwrap_err());
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot read the default storage {} (none of --storage", root.display())),
            "{msg}"
        );
        assert!(msg.ends_with("No such file or directory (os error 2)"), "{msg}");
        assert!(err.causes().is_empty(), "the cause is in the message: {:?}", err.causes());
        assert_eq!(err.exit_code(), crate::exit_code::ENVIRONMENT);
        // A storage named by the operator is just unreadable.
        let named = Storage { root: root.clone(), source: StorageSource::Flag };
        let msg = crate::error::Error::from(named.list_builds().unwrap_err()).to_string();
        assert!(msg.starts_with(&format!("cannot read {}: ", root.display())), "{msg}");
    }

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn storage_precedence_follows_the_orchestrator() {
        let s = Storage::resolve(Some(Path::new("/f")), &env_of(&[("TMPL_STORAGE", "/t")])).unwrap();
        assert_eq!((s.root, s.source), (PathBuf::from("/f"), StorageSource::Flag));
        let s =
            Storage::resolve(None, &env_of(&[("TMPL_STORAGE", "/t"), ("TEMPLATE_STORAGE_URL", "file:///u")])).unwrap();
        assert_eq!((s.root, s.source), (PathBuf::from("/t"), StorageSource::TmplStorage));
        let s = Storage::resolve(
            None,
            &env_of(&[("TEMPLATE_STORAGE_URL", "file:///u"), ("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "/l")]),
        )
        .unwrap();
        assert_eq!((s.root, s.source), (PathBuf::from("/u"), StorageSource::TemplateStorageUrl));
        let s = Storage::resolve(None, &env_of(&[("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "/l")])).unwrap();
        assert_eq!((s.root, s.source), (PathBuf::from("/l"), StorageSource::LocalTemplateStorageBasePath));
        let s = Storage::resolve(None, &env_of(&[("TMPL_STORAGE", "  ")])).unwrap();
        assert_eq!((s.root, s.source), (PathBuf::from(DEFAULT_STORAGE), StorageSource::Default));
    }

    #[test]
    fn storage_url_schemes() {
        assert_eq!(parse_storage_url("file:///var/e2b").unwrap(), PathBuf::from("/var/e2b"));
        assert_eq!(parse_storage_url("file:rel/dir").unwrap(), PathBuf::from("rel/dir"));
        for bad in ["gs://bucket/x", "s3://b", "https://x/y", "file://host/x", "file://", "nocolon"] {
            let err = parse_storage_url(bad).unwrap_err().to_string();
            assert!(err.contains("TEMPLATE_STORAGE_URL"), "{bad}: {err}");
        }
        assert!(parse_storage_url("gs://bucket").unwrap_err().to_string().contains("\"gs\""));
    }

    #[test]
    fn hostile_arguments_never_touch_the_filesystem() {
        let s = Storage { root: "/nonexistent-root".into(), source: StorageSource::Flag };
        for bad in ["..", "*", "", "abc"] {
            assert!(matches!(s.locate(bad), Err(StorageError::BadBuildId(_))));
        }
    }
}
