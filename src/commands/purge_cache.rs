//! `tmpl purge-cache --build-id ID... | --all`: delete every node-local cache entry of the given
//! builds, safely; `--show-roots` says where the caches are; `--summarize` merges the JSON
//! reports of many nodes (a Nomad sysbatch dispatch) into one.

use std::io::{self, Read};
use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome};
use crate::cache::summary::{self, ClusterSummary};
use crate::cache::{self, CacheKind, Liveness, Options, RootFlags, Roots, Selection, Source, SourceKind, Verdict};
use crate::error::{Error, Result, UsageError};
use crate::exit_code;
use crate::vocab::BuildId;

/// Exit codes of this command (also in the README).
pub const EXIT_CODES: &str = "\
Exit status: 0 everything selected was purged, or nothing was cached (with --dry-run: nothing would be skipped); \
3 a build ID is not a UUID, or empty (nothing is touched); 4 a deletion failed, or a cache root or an entry \
could not be read; 5 something was left alone by a safety rule (orchestrator running, entry in use, entry changed \
or swapped for a symlink during the purge, builds behind a symlinked template folder, root that does not look like \
its cache, stored build) while the rest was purged. --summarize: 0 every node clean, 5 some node skipped \
something, 4 a node failed, reported an error, sent no report (--expect-nodes) or sent something else.";

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("mode").args(["build_ids", "all", "show_roots", "summarize"]).required(true)),
    after_help = EXIT_CODES
)]
pub struct Args {
    /// Build IDs (UUIDs) whose cache entries go; repeat the flag or separate with commas
    #[arg(long = "build-id", value_name = "ID", num_args = 1.., action = clap::ArgAction::Append)]
    pub build_ids: Vec<String>,
    /// Every build's entries, leftover trash, and sandbox files no process has open
    #[arg(long)]
    pub all: bool,
    /// Show where each cache root is and which setting chose it
    #[arg(long)]
    pub show_roots: bool,
    /// Merge per-node `purge-cache --json` reports (files, or - for stdin) into a cluster summary
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub summarize: Vec<PathBuf>,
    /// With --summarize: how many nodes must have reported
    #[arg(long, value_name = "N", requires = "summarize")]
    pub expect_nodes: Option<usize>,
    /// Plan only: list what would be deleted and why the rest is skipped
    #[arg(long, env = "TMPL_PURGE_DRY_RUN", value_parser = FalseyValueParser::new())]
    pub dry_run: bool,
    /// Also purge caches that are unsafe while the orchestrator runs (open files are still kept)
    #[arg(long, env = "TMPL_PURGE_FORCE", value_parser = FalseyValueParser::new())]
    pub force: bool,
    /// Only these caches (template, build, chunk, sandbox, snapshot); default all
    #[arg(long = "cache", value_name = "KIND", value_delimiter = ',', value_enum)]
    pub caches: Vec<CacheKind>,
    /// ORCHESTRATOR_BASE_PATH (parent of template/, build/, sandbox/)
    #[arg(long, value_name = "DIR")]
    pub base_path: Option<PathBuf>,
    /// TEMPLATE_CACHE_DIR
    #[arg(long, value_name = "DIR")]
    pub template_cache: Option<PathBuf>,
    /// DEFAULT_CACHE_DIR
    #[arg(long, value_name = "DIR")]
    pub build_cache: Option<PathBuf>,
    /// SHARED_CHUNK_CACHE_PATH
    #[arg(long, value_name = "DIR")]
    pub chunk_cache: Option<PathBuf>,
    /// SANDBOX_CACHE_DIR
    #[arg(long, value_name = "DIR")]
    pub sandbox_cache: Option<PathBuf>,
    /// SNAPSHOT_CACHE_DIR
    #[arg(long, value_name = "DIR")]
    pub snapshot_cache: Option<PathBuf>,
    /// ORCHESTRATOR_LOCK_PATH
    #[arg(long, value_name = "FILE")]
    pub lock_path: Option<PathBuf>,
    /// A self-hosted folder with e2b-template-cache, e2b-chunk-cache, e2b-sandbox-cache,
    /// e2b-snapshot-cache, e2b-orchestrator/ and e2b-orchestrator.lock
    #[arg(long, value_name = "DIR")]
    pub e2b_dir: Option<PathBuf>,
    /// Worker threads for measuring and deleting [default: 4 per core, at least 8]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Node name in the report (default: TMPL_NODE_NAME, else the hostname)
    #[arg(long, value_name = "NAME", env = "TMPL_NODE_NAME")]
    pub node_name: Option<String>,
}

/// `--cache KIND`: the cache kinds by their stable names (the domain type stays free of clap).
impl clap::ValueEnum for CacheKind {
    fn value_variants<'a>() -> &'a [Self] {
        &CacheKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

impl Args {
    fn flags(&self) -> RootFlags {
        RootFlags {
            base_path: self.base_path.clone(),
            template_cache: self.template_cache.clone(),
            build_cache: self.build_cache.clone(),
            chunk_cache: self.chunk_cache.clone(),
            sandbox_cache: self.sandbox_cache.clone(),
            snapshot_cache: self.snapshot_cache.clone(),
            lock_path: self.lock_path.clone(),
            e2b_dir: self.e2b_dir.clone(),
        }
    }
}

/// Parse `--build-id` values: commas and whitespace separate; every piece must be a UUID, and a
/// value with no piece at all (`--build-id ''`) is a bad build ID like any other (exit 3).
pub fn parse_build_ids(values: &[String]) -> Result<Vec<BuildId>> {
    let mut out = Vec::new();
    for v in values {
        let before = out.len();
        for piece in v.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
            out.push(BuildId::parse(piece)?);
        }
        if out.len() == before {
            return Err(crate::vocab::BuildIdError(v.clone()).into());
        }
    }
    if out.is_empty() {
        return Err(UsageError::NoBuildIds.into());
    }
    Ok(out)
}

/// This machine's name.
fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

pub fn run(a: Args, ctx: &Ctx) -> Result<Outcome> {
    if !a.summarize.is_empty() {
        return summarize(&a, ctx);
    }
    let roots = Roots::from_env(&a.flags());
    if a.show_roots {
        let storage = ctx.storage().ok();
        return Ok(Outcome::CacheRoots(RootsReport::new(&roots, storage.as_ref().map(|s| s.root.as_path()))));
    }
    let selection = if a.all { Selection::All } else { Selection::builds(parse_build_ids(&a.build_ids)?) };
    let mut opts = Options::new(selection);
    opts.force = a.force;
    opts.jobs = a.jobs;
    if !a.caches.is_empty() {
        opts.kinds = Some(a.caches.clone());
    }
    if let Ok(s) = ctx.storage() {
        opts.protect.push(s.root);
    }
    if let Some(d) = &a.e2b_dir {
        opts.protect.push(d.join("e2b-template-storage"));
        opts.protect.push(d.join("e2b-build-cache"));
    }
    let plan = cache::plan(&roots, &opts)?;
    let outcome = if a.dry_run { plan.preview() } else { cache::apply(&plan, ctx.progress()) };
    let report = PurgeReport::new(a.node_name.clone().unwrap_or_else(hostname), outcome);
    Ok(Outcome::Purge(Box::new(report)))
}

/// One node's purge (or dry run).
#[derive(Debug, Serialize, Deserialize)]
pub struct PurgeReport {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nomad_alloc_id: Option<String>,
    #[serde(flatten)]
    pub outcome: cache::Outcome,
    pub exit_code: u8,
}

impl PurgeReport {
    pub fn new(node: String, outcome: cache::Outcome) -> Self {
        let exit_code = verdict_code(outcome.verdict);
        let nomad_alloc_id = std::env::var("NOMAD_ALLOC_ID").ok().filter(|s| !s.is_empty());
        PurgeReport { node, nomad_alloc_id, outcome, exit_code }
    }
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Clean => exit_code::OK,
        Verdict::SafetySkipped => exit_code::REFUSED,
        Verdict::Failed => exit_code::ENVIRONMENT,
    }
}

/// `--show-roots`.
#[derive(Debug, Serialize)]
pub struct RootsReport {
    pub base: PathBuf,
    pub base_source: Source,
    pub caches: Vec<RootLine>,
    pub orchestrator: Liveness,
    pub lock_source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// One root as configured.
#[derive(Debug, Serialize)]
pub struct RootLine {
    pub kind: CacheKind,
    pub env: &'static str,
    pub path: Option<PathBuf>,
    pub source: Source,
    /// exists, absent, not-a-directory, unset
    pub state: &'static str,
    /// Where a symlinked root leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_to: Option<PathBuf>,
}

impl RootsReport {
    pub fn new(roots: &Roots, storage_root: Option<&std::path::Path>) -> Self {
        let caches = roots
            .caches
            .iter()
            .map(|c| {
                let (state, symlink_to) = match &c.path {
                    None => ("unset", None),
                    Some(p) => match std::fs::symlink_metadata(p) {
                        Err(_) => ("absent", None),
                        Ok(m) if m.file_type().is_symlink() => {
                            let t = std::fs::canonicalize(p).ok();
                            (if p.is_dir() { "exists" } else { "absent" }, t)
                        }
                        Ok(m) if m.is_dir() => ("exists", None),
                        Ok(_) => ("not-a-directory", None),
                    },
                };
                RootLine {
                    kind: c.kind,
                    env: c.kind.env(),
                    path: c.path.clone(),
                    source: c.source.clone(),
                    state,
                    symlink_to,
                }
            })
            .collect();
        let any_env = roots
            .caches
            .iter()
            .any(|c| matches!(c.source.kind, SourceKind::Env | SourceKind::Flag | SourceKind::E2bDir));
        let hints = if any_env {
            Vec::new()
        } else {
            cache::roots::e2b_dir_hints(storage_root)
                .into_iter()
                .map(|d| {
                    format!(
                        "{} holds e2b-*-cache folders: a self-hosted layout? try --e2b-dir {}",
                        d.display(),
                        d.display()
                    )
                })
                .collect()
        };
        RootsReport {
            base: roots.base.clone(),
            base_source: roots.base_source.clone(),
            caches,
            orchestrator: cache::liveness::probe(&roots.lock),
            lock_source: roots.lock_source.clone(),
            hints,
        }
    }
}

/// `--summarize`.
#[derive(Debug, Serialize)]
pub struct SummaryReport {
    pub summarize: bool,
    #[serde(flatten)]
    pub summary: ClusterSummary,
    pub exit_code: u8,
}

/// Most text one summarize input may hold (a few hundred nodes' reports fit easily).
const MAX_INPUT: u64 = 256 << 20;

fn summarize(a: &Args, ctx: &Ctx) -> Result<Outcome> {
    let mut inputs = Vec::new();
    for f in &a.summarize {
        let (name, text) = if f.as_os_str() == "-" {
            let bytes = ctx.read_input(MAX_INPUT + 1).map_err(|e| Error::read("-", e))?;
            let s = String::from_utf8(bytes)
                .map_err(|e| Error::read("-", io::Error::new(io::ErrorKind::InvalidData, e)))?;
            ("-".to_string(), s)
        } else {
            let file = std::fs::File::open(f).map_err(|e| Error::read(f, e))?;
            let mut s = String::new();
            file.take(MAX_INPUT + 1).read_to_string(&mut s).map_err(|e| Error::read(f, e))?;
            (f.display().to_string(), s)
        };
        if text.len() as u64 > MAX_INPUT {
            return Err(Error::invalid(&name, format!("larger than {} MiB", MAX_INPUT >> 20)));
        }
        let parsed = summary::parse_stream(&name, &text);
        if parsed.is_empty() {
            inputs.push(summary::Input { source: name, doc: Err("empty input".into()) });
        } else {
            inputs.extend(parsed);
        }
    }
    let summary = summary::merge(&inputs, a.expect_nodes);
    let exit_code = verdict_code(summary.verdict);
    Ok(Outcome::ClusterSummary(Box::new(SummaryReport { summarize: true, summary, exit_code })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_kinds_parse_as_a_value_enum() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["tmpl", "purge-cache", "--all", "--cache", "chunk,build"]).unwrap();
        let crate::cli::Command::PurgeCache(a) = cli.command else { panic!("not purge-cache") };
        assert_eq!(a.caches, vec![CacheKind::Chunk, CacheKind::Build]);
        let e = crate::cli::Cli::try_parse_from(["tmpl", "purge-cache", "--all", "--cache", "chunks"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("template, build, chunk, sandbox, snapshot"), "{e}");
    }

    #[test]
    fn build_id_lists() {
        let ids = parse_build_ids(&[
            "aaaaaaaa-0000-4000-8000-000000000001,bbbbbbbb-0000-4000-8000-000000000002".into(),
            " cccccccc-0000-4000-8000-000000000003 ".into(),
        ])
        .unwrap();
        assert_eq!(ids.len(), 3);
        assert!(matches!(
            parse_build_ids(&["aaaaaaaa-0000-4000-8000-000000000001,..".into()]),
            Err(Error::BadBuildId(_))
        ));
        for empty in ["", " ", ","] {
            assert!(matches!(parse_build_ids(&[empty.into()]), Err(Error::BadBuildId(_))), "{empty:?}");
        }
    }
}
