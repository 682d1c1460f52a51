//! `tmpl verify BUILD... | --all`: every offline check, findings per build.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome};
use crate::build::Build;
use crate::checks;
use crate::deep;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::{Finding, Severity, Tally};
use crate::storage::{BuildLocation, Storage, StorageSource};
use crate::vocab::BuildId;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 no errors (with --strict: no warnings either); 1 errors found; 3 a BUILD is \
not a UUID or a build folder, or the storage cannot be listed (--all); 4 a permission kept tmpl from reading a build \
(access.denied), no storage is set and the default one cannot be read, or another environment failure.")]
pub struct Args {
    /// Build IDs (UUIDs) or paths to build directories
    #[arg(value_name = "BUILD", required_unless_present = "all")]
    pub builds: Vec<String>,
    /// Verify every build in the storage
    #[arg(long, conflicts_with = "builds")]
    pub all: bool,
    /// Treat warnings as failures too
    #[arg(long)]
    pub strict: bool,
    /// Also read every data file the builds depend on (compressed ones frame by frame): lengths
    /// against the headers and sidecars, and the SHA-256 where a V4/V5 header records one
    #[arg(long)]
    pub deep: bool,
    /// The node's kernels (orchestrator HOST_KERNELS_DIR): each build's kernel_version must exist
    /// there as <dir>/<kernel_version>/<arch>/vmlinux.bin or <dir>/<kernel_version>/vmlinux.bin
    #[arg(long, value_name = "DIR", env = "HOST_KERNELS_DIR")]
    pub host_kernels_dir: Option<PathBuf>,
    /// The node's Firecracker binaries (orchestrator FIRECRACKER_VERSIONS_DIR): each build's
    /// firecracker_version must exist as <dir>/<version>/<arch>/firecracker or <dir>/<version>/firecracker
    #[arg(long, value_name = "DIR", env = "FIRECRACKER_VERSIONS_DIR")]
    pub firecracker_versions_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BuildResult {
    pub build_id: BuildId,
    pub path: PathBuf,
    pub ok: bool,
    pub tally: Tally,
    pub findings: Vec<Finding>,
    /// With `--deep`: every data file the build reads, streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<Vec<deep::FileResult>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub builds: usize,
    pub failed: usize,
    /// Builds tmpl could not fully read because of a permission (`access.denied`): exit 4.
    pub access_denied: usize,
    #[serde(flatten)]
    pub tally: Tally,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyReport {
    pub storage: PathBuf,
    pub storage_source: StorageSource,
    pub strict: bool,
    pub builds: Vec<BuildResult>,
    pub summary: Summary,
    /// Entries under the storage root that are not build folders (with --all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_entries: Option<usize>,
    /// With --all: tmpl's partial forks in the storage root, named and sized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<crate::edit::leftovers::Leftover>,
    /// With `--deep`: files streamed, bytes read and hashed, time and throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<deep::Summary>,
    /// Remote storage: the requests this run sent and the bytes they fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::Stats>,
}

/// Check one located build. A build that cannot be opened (a permission, a file where its folder
/// should be) is a result with that finding, so a run over many builds goes on.
pub fn verify_one(loc: &BuildLocation, strict: bool) -> BuildResult {
    match verify_open(loc, strict, false) {
        Ok(c) => c.result,
        Err(e) => unopened(loc, &e),
    }
}

/// The result of a build that could not be opened.
fn unopened(loc: &BuildLocation, e: &Error) -> BuildResult {
    result(loc.folder_id.unwrap_or_else(BuildId::nil), loc.dir.clone(), vec![checks::open_failure(e)], false)
}

/// What checking one build leaves for `--deep`: the data files to stream and the permission
/// problems that would keep tmpl from streaming them (the build itself is not kept open).
struct Checked {
    result: BuildResult,
    jobs: Vec<deep::Job>,
    deep_denied: Vec<crate::build::AccessProblem>,
}

/// Check one located build and, with `deep`, list the data files it reads (so the build itself
/// need not stay open: memory does not grow with the number of builds). Isolated: a panic while
/// checking (a bug met by this build's files) becomes a finding on this build, and the run goes
/// on with the others.
fn verify_open(loc: &BuildLocation, strict: bool, deep: bool) -> Result<Checked> {
    let checked = crate::rootfs::guard::isolate(|| -> Result<Checked> {
        let build = Build::open(loc)?;
        let outcome = checks::run(&build, crate::rootfs::boot::Scan::WhenFlagsNeedIt);
        let (jobs, deep_denied) =
            if deep { (deep::jobs(&build), build.deep_access_problems()) } else { (Vec::new(), Vec::new()) };
        Ok(Checked { result: result(build.id, build.dir.clone(), outcome.findings, strict), jobs, deep_denied })
    });
    match checked {
        Ok(r) => r,
        Err(panic) => {
            let f = Finding::new(&checks::BUILD_CHECK_FAILED, None, format!("checking this build stopped: {panic}"));
            let result = result(loc.folder_id.unwrap_or_else(BuildId::nil), loc.dir.clone(), vec![f], strict);
            Ok(Checked { result, jobs: Vec::new(), deep_denied: Vec::new() })
        }
    }
}

fn result(build_id: BuildId, path: PathBuf, mut findings: Vec<Finding>, strict: bool) -> BuildResult {
    let tally = Tally::of(&findings);
    let ok = tally.errors == 0 && (!strict || tally.warnings == 0);
    findings.sort_by_key(|f| f.severity);
    BuildResult { build_id, path, ok, tally, findings, deep: None }
}

/// Verify a set of located builds in parallel, in the given order.
pub fn verify_all(
    storage: &Storage,
    locs: &[BuildLocation],
    strict: bool,
    other_entries: Option<usize>,
) -> Result<VerifyReport> {
    verify_all_with(storage, locs, strict, other_entries, None)
}

/// [`verify_all`], and with `deep` (a progress sink) also stream every data file the builds read
/// (each shared file once).
pub fn verify_all_with(
    storage: &Storage,
    locs: &[BuildLocation],
    strict: bool,
    other_entries: Option<usize>,
    deep: Option<&dyn Progress>,
) -> Result<VerifyReport> {
    let mut deep_summary = None;
    let checked: Vec<Checked> = locs
        .par_iter()
        .map(|l| {
            verify_open(l, strict, deep.is_some()).unwrap_or_else(|e| Checked {
                result: unopened(l, &e),
                jobs: Vec::new(),
                deep_denied: Vec::new(),
            })
        })
        .collect();
    let builds: Vec<BuildResult> = match deep {
        None => checked.into_iter().map(|c| c.result).collect(),
        Some(progress) => {
            let mut results = Vec::with_capacity(checked.len());
            let mut per_build = Vec::with_capacity(checked.len());
            let mut denied = Vec::with_capacity(checked.len());
            for c in checked {
                per_build.push((c.result.build_id, c.jobs));
                denied.push(c.deep_denied);
                results.push(c.result);
            }
            let outcome = deep::verify_jobs(per_build, progress);
            for ((r, denied), (_, files, findings)) in results.iter_mut().zip(denied).zip(outcome.per_build) {
                r.findings.extend(findings);
                // A data file a permission keeps us from streaming is named as such.
                if !denied.is_empty() {
                    r.findings = checks::with_access_problems(&denied, std::mem::take(&mut r.findings));
                }
                r.findings.sort_by_key(|f| f.severity);
                r.tally = Tally::of(&r.findings);
                r.ok = r.tally.errors == 0 && (!strict || r.tally.warnings == 0);
                r.deep = Some(files);
            }
            deep_summary = Some(outcome.summary);
            results
        }
    };
    let mut tally = Tally::default();
    for b in &builds {
        tally.merge(b.tally);
    }
    let summary = Summary {
        builds: builds.len(),
        failed: builds.iter().filter(|b| !b.ok).count(),
        access_denied: builds.iter().filter(|b| checks::has_access_problem(&b.findings)).count(),
        tally,
    };
    // Builds given as paths are read where they are: name their folder, not the resolved storage.
    let (root, source) = match locs.first().map(|l| &l.storage_root) {
        Some(r) if *r != storage.root && locs.iter().all(|l| l.storage_root == *r) => {
            (r.clone(), StorageSource::BuildPath)
        }
        _ => (storage.root.clone(), storage.source.clone()),
    };
    Ok(VerifyReport {
        storage: root,
        storage_source: source,
        strict,
        builds,
        summary,
        leftovers: if other_entries.is_some() { crate::edit::leftovers::in_storage(&storage.root) } else { Vec::new() },
        other_entries,
        deep: deep_summary,
        remote: None,
    })
}

/// Resolve BUILD arguments (all validated before any is looked up) or `--all`.
pub fn locate(storage: &Storage, builds: &[String], all: bool) -> Result<(Vec<BuildLocation>, Option<usize>)> {
    if all {
        let (ids, other) = storage.list_builds()?;
        let locs = ids
            .iter()
            .map(|id| BuildLocation {
                dir: storage.build_dir(id),
                folder_id: Some(*id),
                storage_root: storage.root.clone(),
            })
            .collect();
        return Ok((locs, Some(other)));
    }
    for b in builds {
        if !b.contains('/') {
            BuildId::parse(b)?;
        }
    }
    // A build a permission keeps us from even finding is still checked (and reported as such)
    // with the others; a build that does not exist stops the run (a typo: exit 3).
    let locs = builds
        .iter()
        .map(|b| match storage.locate(b).map_err(Error::from) {
            Err(e) if e.is_permission() && !b.contains('/') => {
                let id = BuildId::parse(b)?;
                Ok(BuildLocation {
                    dir: storage.build_dir(&id),
                    folder_id: Some(id),
                    storage_root: storage.root.clone(),
                })
            }
            r => r,
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((locs, None))
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let storage = ctx.storage()?;
    let (locs, other) = locate(&storage, &args.builds, args.all)?;
    if locs.is_empty() {
        return Err(Error::invalid(&storage.root, "holds no build folders (UUID-named directories)"));
    }
    ctx.debug(&format!("storage {} ({}), {} build(s)", storage.root.display(), storage.source.describe(), locs.len()));
    let deep = args.deep.then_some(ctx.progress());
    let run = || verify_all_with(&storage, &locs, args.strict, other, deep);
    // Builds in a bucket wait on the network, not on the CPU: check up to 16 at once (each
    // store also caps its requests in flight).
    let mut report = match crate::remote::mount::is_mounted(&storage.root) {
        true => match rayon::ThreadPoolBuilder::new().num_threads(16).build() {
            Ok(pool) => pool.install(run)?,
            Err(_) => run()?,
        },
        false => run()?,
    };
    let dirs = checks::kernel::NodeDirs {
        kernels: args.host_kernels_dir.filter(|p| !p.as_os_str().is_empty()),
        firecrackers: args.firecracker_versions_dir.filter(|p| !p.as_os_str().is_empty()),
    };
    if dirs.kernels.is_some() || dirs.firecrackers.is_some() {
        add_node_findings(&mut report, &locs, &dirs, args.strict);
    }
    report.remote = crate::remote::mount::store_of(&storage.root).map(|s| s.stats());
    Ok(Outcome::Verify(report))
}

/// Can this node start each build: its kernel_version and firecracker_version under the node's
/// directories (a template naming a kernel the node lacks cannot start).
fn add_node_findings(report: &mut VerifyReport, locs: &[BuildLocation], dirs: &checks::kernel::NodeDirs, strict: bool) {
    let arch = checks::kernel::node_arch();
    for (b, loc) in report.builds.iter_mut().zip(locs) {
        let Ok(build) = Build::open(loc) else { continue };
        let Some(meta) = build.meta().filter(|m| !m.contents_ignored) else { continue };
        let found = checks::kernel::node_findings(dirs, meta.kernel_version(), meta.firecracker_version(), arch);
        if found.is_empty() {
            continue;
        }
        b.findings.extend(found);
        b.findings.sort_by_key(|f| f.severity);
        b.tally = Tally::of(&b.findings);
        b.ok = !fails(&b.findings, strict);
    }
    let mut tally = Tally::default();
    for b in &report.builds {
        tally.merge(b.tally);
    }
    report.summary.tally = tally;
    report.summary.failed = report.builds.iter().filter(|b| !b.ok).count();
}

/// Severity counts that fail a build.
pub fn fails(findings: &[Finding], strict: bool) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error || (strict && f.severity == Severity::Warning))
}
