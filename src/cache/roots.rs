//! Where the orchestrator keeps its node-local caches, resolved the way it resolves them.
//!
//! Facts (e2b-formats.md §4; e2b-dev/infra `packages/orchestrator/pkg/cfg/model.go` and
//! `packages/shared/pkg/storage/sandbox.go`): `ORCHESTRATOR_BASE_PATH` (default `/orchestrator`) is
//! the parent of `template/` (`TEMPLATE_CACHE_DIR`), `build/` (`DEFAULT_CACHE_DIR`, called
//! `DEFAULT_CACHE_PATH` in older releases) and `sandbox/` (`SANDBOX_CACHE_DIR`); `SNAPSHOT_CACHE_DIR`
//! defaults to `/mnt/snapshot-cache`; `SHARED_CHUNK_CACHE_PATH` is empty (disabled) by default;
//! `ORCHESTRATOR_LOCK_PATH` defaults to `/orchestrator.lock`. Values may reference other variables
//! (`${ORCHESTRATOR_BASE_PATH}/x`, expanded with the base's default when it is unset), empty values
//! count as unset, and relative paths are made absolute.
//!
//! Self-hosted clusters often keep everything under one folder with `e2b-*` names
//! (`<dir>/e2b-template-cache`, `e2b-chunk-cache`, `e2b-sandbox-cache`, `e2b-snapshot-cache`,
//! `e2b-orchestrator` as the base path, `e2b-orchestrator.lock`); `--e2b-dir DIR` selects that
//! layout. `e2b-template-storage` and `e2b-build-cache` (the layer-cache bucket) are never caches
//! to purge and are never chosen.
//!
//! Precedence for each root: its own flag, then `--e2b-dir`, then its environment variable, then
//! the value derived from the base path (flag, `--e2b-dir`, `ORCHESTRATOR_BASE_PATH`, default).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The orchestrator's default base path.
pub const DEFAULT_BASE: &str = "/orchestrator";
/// The orchestrator's default lock file.
pub const DEFAULT_LOCK: &str = "/orchestrator.lock";
/// The default snapshot cache (a tmpfs in E2B's IaC).
pub const DEFAULT_SNAPSHOT_CACHE: &str = "/mnt/snapshot-cache";

/// One kind of node-local cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// `TEMPLATE_CACHE_DIR`: `<buildID>/cache/<uuid>/{snapfile,metadata.json}`; older releases
    /// `<templateID>/<buildID>/cache/...` (with per-sandbox folders inside).
    Template,
    /// `DEFAULT_CACHE_DIR`: flat files `<buildID>-<file>-<random>`, `resize-disk-<buildID>-*`.
    Build,
    /// `SHARED_CHUNK_CACHE_PATH`: `<buildID>/<object>/` chunk trees, shared by nodes (NFS).
    Chunk,
    /// `SANDBOX_CACHE_DIR`: per-sandbox `rootfs-<sandboxID>-<rand>.cow` / `.link`, `restore-*`.
    Sandbox,
    /// `SNAPSHOT_CACHE_DIR`: `<buildID>-memfile-<uuid>.full` during pauses.
    Snapshot,
}

impl CacheKind {
    pub const ALL: [CacheKind; 5] =
        [CacheKind::Template, CacheKind::Build, CacheKind::Chunk, CacheKind::Sandbox, CacheKind::Snapshot];

    /// Stable short name (JSON, `--cache`).
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Template => "template",
            CacheKind::Build => "build",
            CacheKind::Chunk => "chunk",
            CacheKind::Sandbox => "sandbox",
            CacheKind::Snapshot => "snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<CacheKind> {
        CacheKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The orchestrator's environment variable for this root.
    pub fn env(self) -> &'static str {
        match self {
            CacheKind::Template => "TEMPLATE_CACHE_DIR",
            CacheKind::Build => "DEFAULT_CACHE_DIR",
            CacheKind::Chunk => "SHARED_CHUNK_CACHE_PATH",
            CacheKind::Sandbox => "SANDBOX_CACHE_DIR",
            CacheKind::Snapshot => "SNAPSHOT_CACHE_DIR",
        }
    }

    /// The tmpl flag that overrides this root.
    pub fn flag(self) -> &'static str {
        match self {
            CacheKind::Template => "--template-cache",
            CacheKind::Build => "--build-cache",
            CacheKind::Chunk => "--chunk-cache",
            CacheKind::Sandbox => "--sandbox-cache",
            CacheKind::Snapshot => "--snapshot-cache",
        }
    }

    /// Folder name in a self-hosted `e2b-*` layout (the build cache lives under the base path).
    pub fn e2b_dir_name(self) -> Option<&'static str> {
        match self {
            CacheKind::Template => Some("e2b-template-cache"),
            CacheKind::Build => None,
            CacheKind::Chunk => Some("e2b-chunk-cache"),
            CacheKind::Sandbox => Some("e2b-sandbox-cache"),
            CacheKind::Snapshot => Some("e2b-snapshot-cache"),
        }
    }

    /// Sub-folder of the base path used by default.
    fn base_subdir(self) -> Option<&'static str> {
        match self {
            CacheKind::Template => Some("template"),
            CacheKind::Build => Some("build"),
            CacheKind::Sandbox => Some("sandbox"),
            CacheKind::Chunk | CacheKind::Snapshot => None,
        }
    }

    /// Whether deleting its entries is safe while the orchestrator runs: only the shared chunk
    /// cache (a read-through cache whose misses fall back to object storage; E2B's own
    /// clean-nfs-cache deletes whole build folders there live).
    pub fn safe_live(self) -> bool {
        self == CacheKind::Chunk
    }

    /// Human title.
    pub fn title(self) -> &'static str {
        match self {
            CacheKind::Template => "template cache",
            CacheKind::Build => "build cache",
            CacheKind::Chunk => "shared chunk cache",
            CacheKind::Sandbox => "sandbox cache",
            CacheKind::Snapshot => "snapshot cache",
        }
    }
}

/// Flags that override the environment (all optional).
#[derive(Clone, Debug, Default)]
pub struct RootFlags {
    pub base_path: Option<PathBuf>,
    pub template_cache: Option<PathBuf>,
    pub build_cache: Option<PathBuf>,
    pub chunk_cache: Option<PathBuf>,
    pub sandbox_cache: Option<PathBuf>,
    pub snapshot_cache: Option<PathBuf>,
    pub lock_path: Option<PathBuf>,
    /// A self-hosted folder holding `e2b-template-cache`, `e2b-chunk-cache`, ...
    pub e2b_dir: Option<PathBuf>,
}

impl RootFlags {
    fn for_kind(&self, kind: CacheKind) -> Option<&Path> {
        match kind {
            CacheKind::Template => self.template_cache.as_deref(),
            CacheKind::Build => self.build_cache.as_deref(),
            CacheKind::Chunk => self.chunk_cache.as_deref(),
            CacheKind::Sandbox => self.sandbox_cache.as_deref(),
            CacheKind::Snapshot => self.snapshot_cache.as_deref(),
        }
    }
}

/// What chose a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Flag,
    E2bDir,
    Env,
    BasePath,
    Default,
    Unset,
}

/// Where a path came from, for `--show-roots` and the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    /// E.g. `--template-cache`, `TEMPLATE_CACHE_DIR`, `ORCHESTRATOR_BASE_PATH + /template`.
    pub detail: String,
}

impl Source {
    fn new(kind: SourceKind, detail: impl Into<String>) -> Self {
        Source { kind, detail: detail.into() }
    }
}

/// One cache root: its path (None when disabled) and where that came from.
#[derive(Clone, Debug, Serialize)]
pub struct RootSpec {
    pub kind: CacheKind,
    pub path: Option<PathBuf>,
    pub source: Source,
}

/// Every cache root of a node, the base path and the orchestrator lock.
#[derive(Clone, Debug, Serialize)]
pub struct Roots {
    pub base: PathBuf,
    pub base_source: Source,
    pub caches: Vec<RootSpec>,
    pub lock: PathBuf,
    pub lock_source: Source,
}

impl Roots {
    /// Resolve from flags and an environment lookup (injectable for tests).
    pub fn resolve(flags: &RootFlags, env: &dyn Fn(&str) -> Option<String>) -> Roots {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let e2b = flags.e2b_dir.as_deref();

        let (base, base_source) = if let Some(p) = &flags.base_path {
            (absolute(p), Source::new(SourceKind::Flag, "--base-path"))
        } else if let Some(d) = e2b {
            (absolute(&d.join("e2b-orchestrator")), Source::new(SourceKind::E2bDir, "--e2b-dir + /e2b-orchestrator"))
        } else if let Some(v) = get("ORCHESTRATOR_BASE_PATH") {
            (absolute(Path::new(&expand(&v, &|_| None))), Source::new(SourceKind::Env, "ORCHESTRATOR_BASE_PATH"))
        } else {
            (PathBuf::from(DEFAULT_BASE), Source::new(SourceKind::Default, format!("default {DEFAULT_BASE}")))
        };
        let base_str = base.to_string_lossy().into_owned();
        // `${ORCHESTRATOR_BASE_PATH}` inside other values expands to the base in effect.
        let lookup = |name: &str| -> Option<String> {
            if name == "ORCHESTRATOR_BASE_PATH" { Some(base_str.clone()) } else { get(name) }
        };

        let mut caches = Vec::new();
        for kind in CacheKind::ALL {
            let spec = if let Some(p) = flags.for_kind(kind) {
                RootSpec { kind, path: Some(absolute(p)), source: Source::new(SourceKind::Flag, kind.flag()) }
            } else if let (Some(d), Some(name)) = (e2b, kind.e2b_dir_name()) {
                RootSpec {
                    kind,
                    path: Some(absolute(&d.join(name))),
                    source: Source::new(SourceKind::E2bDir, format!("--e2b-dir + /{name}")),
                }
            } else if let Some(v) = (e2b.is_none()).then(|| env_for(kind, &get)).flatten() {
                RootSpec {
                    kind,
                    path: Some(absolute(Path::new(&expand(&v.1, &lookup)))),
                    source: Source::new(SourceKind::Env, v.0),
                }
            } else if let Some(sub) = kind.base_subdir() {
                let detail = match base_source.kind {
                    SourceKind::Default => format!("default {DEFAULT_BASE}/{sub}"),
                    _ => format!("{} + /{sub}", base_source.detail),
                };
                RootSpec { kind, path: Some(base.join(sub)), source: Source::new(SourceKind::BasePath, detail) }
            } else if kind == CacheKind::Snapshot {
                RootSpec {
                    kind,
                    path: Some(PathBuf::from(DEFAULT_SNAPSHOT_CACHE)),
                    source: Source::new(SourceKind::Default, format!("default {DEFAULT_SNAPSHOT_CACHE}")),
                }
            } else {
                RootSpec {
                    kind,
                    path: None,
                    source: Source::new(
                        SourceKind::Unset,
                        format!("{} unset: the shared chunk cache is disabled", kind.env()),
                    ),
                }
            };
            caches.push(spec);
        }

        let (lock, lock_source) = if let Some(p) = &flags.lock_path {
            (absolute(p), Source::new(SourceKind::Flag, "--lock-path"))
        } else if let Some(d) = e2b {
            (
                absolute(&d.join("e2b-orchestrator.lock")),
                Source::new(SourceKind::E2bDir, "--e2b-dir + /e2b-orchestrator.lock"),
            )
        } else if let Some(v) = get("ORCHESTRATOR_LOCK_PATH") {
            (absolute(Path::new(&expand(&v, &lookup))), Source::new(SourceKind::Env, "ORCHESTRATOR_LOCK_PATH"))
        } else {
            (PathBuf::from(DEFAULT_LOCK), Source::new(SourceKind::Default, format!("default {DEFAULT_LOCK}")))
        };

        Roots { base, base_source, caches, lock, lock_source }
    }

    /// Resolve from the real process environment.
    pub fn from_env(flags: &RootFlags) -> Roots {
        Self::resolve(flags, &|k| std::env::var(k).ok())
    }

    /// Explicit roots (library callers and tests): every cache kind given by path, no
    /// environment involved. Kinds missing from `paths` are disabled.
    pub fn explicit(paths: &[(CacheKind, PathBuf)], lock: PathBuf) -> Roots {
        let caches = CacheKind::ALL
            .into_iter()
            .map(|kind| match paths.iter().find(|(k, _)| *k == kind) {
                Some((_, p)) => {
                    RootSpec { kind, path: Some(absolute(p)), source: Source::new(SourceKind::Flag, "explicit") }
                }
                None => RootSpec { kind, path: None, source: Source::new(SourceKind::Unset, "not given") },
            })
            .collect();
        Roots {
            base: PathBuf::new(),
            base_source: Source::new(SourceKind::Unset, "not used"),
            caches,
            lock: absolute(&lock),
            lock_source: Source::new(SourceKind::Flag, "explicit"),
        }
    }

    /// The spec of one kind.
    pub fn get(&self, kind: CacheKind) -> &RootSpec {
        // `caches` always holds every kind, in `CacheKind::ALL` order.
        &self.caches[CacheKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }
}

/// The environment value for a kind (with the legacy `DEFAULT_CACHE_PATH` name).
fn env_for(kind: CacheKind, get: &dyn Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    if let Some(v) = get(kind.env()) {
        return Some((kind.env(), v));
    }
    if kind == CacheKind::Build
        && let Some(v) = get("DEFAULT_CACHE_PATH")
    {
        return Some(("DEFAULT_CACHE_PATH", v));
    }
    None
}

/// Make a path absolute against the current directory, like the orchestrator does (no symlink
/// resolution here; roots that are symlinks are resolved and reported when planning).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Expand `$NAME` and `${NAME}` the way Go's `os.Expand` does: unknown names become empty.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut lit = 0;
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        let (name, next) = if b[i + 1] == b'{' {
            match s[i + 2..].find('}') {
                Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            let len = s[i + 1..].bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
            if len == 0 {
                i += 1;
                continue;
            }
            (&s[i + 1..i + 1 + len], i + 1 + len)
        };
        out.push_str(&s[lit..i]);
        out.push_str(&lookup(name).unwrap_or_default());
        i = next;
        lit = next;
    }
    out.push_str(&s[lit..]);
    out
}

/// Folders that look like a self-hosted `e2b-*` layout (they hold an `e2b-*-cache` folder):
/// `/tmp` and the parent of the template storage, for a `--show-roots` hint.
pub fn e2b_dir_hints(storage_root: Option<&Path>) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("/tmp")];
    if let Some(parent) = storage_root.and_then(Path::parent) {
        candidates.push(parent.to_path_buf());
    }
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|dir| {
            CacheKind::ALL
                .iter()
                .filter_map(|k| k.e2b_dir_name())
                .any(|n| std::fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_dir()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_orchestrator() {
        let r = Roots::resolve(&RootFlags::default(), &env(&[]));
        assert_eq!(r.get(CacheKind::Template).path.as_deref(), Some(Path::new("/orchestrator/template")));
        assert_eq!(r.get(CacheKind::Build).path.as_deref(), Some(Path::new("/orchestrator/build")));
        assert_eq!(r.get(CacheKind::Sandbox).path.as_deref(), Some(Path::new("/orchestrator/sandbox")));
        assert_eq!(r.get(CacheKind::Snapshot).path.as_deref(), Some(Path::new("/mnt/snapshot-cache")));
        assert_eq!(r.get(CacheKind::Chunk).path, None);
        assert_eq!(r.get(CacheKind::Chunk).source.kind, SourceKind::Unset);
        assert_eq!(r.lock, Path::new("/orchestrator.lock"));
        assert_eq!(r.get(CacheKind::Template).source.kind, SourceKind::BasePath);
    }

    #[test]
    fn env_base_and_specific_values() {
        let r = Roots::resolve(
            &RootFlags::default(),
            &env(&[
                ("ORCHESTRATOR_BASE_PATH", "/a/b"),
                ("TEMPLATE_CACHE_DIR", "${ORCHESTRATOR_BASE_PATH}/tc"),
                ("SHARED_CHUNK_CACHE_PATH", "/nfs/chunks"),
                ("SANDBOX_CACHE_DIR", "  "),
                ("DEFAULT_CACHE_PATH", "/legacy/build"),
                ("ORCHESTRATOR_LOCK_PATH", "$ORCHESTRATOR_BASE_PATH.lock"),
            ]),
        );
        assert_eq!(r.base, Path::new("/a/b"));
        assert_eq!(r.get(CacheKind::Template).path.as_deref(), Some(Path::new("/a/b/tc")));
        assert_eq!(r.get(CacheKind::Template).source.detail, "TEMPLATE_CACHE_DIR");
        assert_eq!(r.get(CacheKind::Chunk).path.as_deref(), Some(Path::new("/nfs/chunks")));
        // Blank counts as unset.
        assert_eq!(r.get(CacheKind::Sandbox).path.as_deref(), Some(Path::new("/a/b/sandbox")));
        assert_eq!(r.get(CacheKind::Build).source.detail, "DEFAULT_CACHE_PATH");
        assert_eq!(r.lock, Path::new("/a/b.lock"));
    }

    #[test]
    fn default_base_expands_inside_other_values() {
        let r = Roots::resolve(&RootFlags::default(), &env(&[("SANDBOX_CACHE_DIR", "${ORCHESTRATOR_BASE_PATH}/sbx")]));
        assert_eq!(r.get(CacheKind::Sandbox).path.as_deref(), Some(Path::new("/orchestrator/sbx")));
    }

    #[test]
    fn flags_beat_e2b_dir_which_beats_env() {
        let flags =
            RootFlags { e2b_dir: Some("/srv/e2b".into()), chunk_cache: Some("/x/chunks".into()), ..Default::default() };
        let r = Roots::resolve(&flags, &env(&[("TEMPLATE_CACHE_DIR", "/env/tc"), ("ORCHESTRATOR_BASE_PATH", "/env")]));
        assert_eq!(r.get(CacheKind::Chunk).path.as_deref(), Some(Path::new("/x/chunks")));
        assert_eq!(r.get(CacheKind::Template).path.as_deref(), Some(Path::new("/srv/e2b/e2b-template-cache")));
        assert_eq!(r.get(CacheKind::Template).source.kind, SourceKind::E2bDir);
        assert_eq!(r.get(CacheKind::Build).path.as_deref(), Some(Path::new("/srv/e2b/e2b-orchestrator/build")));
        assert_eq!(r.get(CacheKind::Snapshot).path.as_deref(), Some(Path::new("/srv/e2b/e2b-snapshot-cache")));
        assert_eq!(r.lock, Path::new("/srv/e2b/e2b-orchestrator.lock"));
    }

    #[test]
    fn relative_values_become_absolute() {
        let r = Roots::resolve(&RootFlags::default(), &env(&[("TEMPLATE_CACHE_DIR", "rel/tc")]));
        let p = r.get(CacheKind::Template).path.clone().unwrap();
        assert!(p.is_absolute() && p.ends_with("rel/tc"), "{p:?}");
    }

    #[test]
    fn expansion_like_go() {
        let l = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$A/${A}/$B/${B}end/$/$", &l), "x/x//end/$/$");
        assert_eq!(expand("${unclosed", &l), "${unclosed");
        assert_eq!(expand("a$A_b", &l), "a");
    }
}
