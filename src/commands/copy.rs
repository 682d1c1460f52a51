//! `tmpl copy BUILD --to DST [--from SRC]`: copy a build and its ancestors between storages
//! (local directories, `s3://`, `gs://`, `azblob://`), planned, ordered, verified, rolled back on
//! failure. The domain is `crate::copy`; this file resolves the two storages and renders.

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::copy::{self, Action, BuildPlan, Conflict, Item};
use crate::error::{Error, Result};
use crate::remote::{self as remote, Location, Stats, Store};
use crate::vocab::BuildId;

#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "SRC and DST are storage URLs (s3://bucket?endpoint=...&region=...&s3ForcePathStyle=true, \
gs://bucket, azblob://container, file:///path) or local directories. Credentials come from each provider's \
environment (see the README, \"Builds in object storage\").

Order: ancestors first; in each build data files, then headers, then the snapfile, metadata.json last, so a \
half-copied build never looks complete. Every object written is read back and compared (size, uncompressed size, \
SHA-256); on any failure the objects this run wrote are deleted again. Objects already at DST with the same \
SHA-256 are skipped, so a copy can be repeated.

Exit status: 0 copied (or planned, with --dry-run); 1 an object differs after writing (rolled back); 3 no such build \
at SRC, or an ancestor it needs is in neither storage; 4 a storage failed (credentials, network, timeouts); 5 DST \
holds a different build with the same ID (nothing written)."
)]
pub struct Args {
    /// Build ID (UUID) to copy
    #[arg(value_name = "BUILD")]
    pub build: String,
    /// Source storage (default: the global --storage / TEMPLATE_STORAGE_URL resolution)
    #[arg(long, value_name = "SRC")]
    pub from: Option<String>,
    /// Destination storage (a local directory is created if missing)
    #[arg(long, value_name = "DST")]
    pub to: String,
    /// Copy only the build, not the builds its headers read from
    #[arg(long)]
    pub no_ancestors: bool,
    /// Show what would be copied and skipped; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// How the copy ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// `--dry-run`: nothing written.
    Planned,
    Copied,
    /// A different build with the same ID is at the destination: nothing written.
    Refused,
    /// An ancestor the build reads is in neither storage: nothing written.
    MissingAncestors,
    /// A storage failed or a copy differed; what this run wrote was deleted again.
    Failed,
}

#[derive(Debug, Default, Serialize)]
pub struct CopySummary {
    pub objects: usize,
    pub copied: usize,
    pub skipped: usize,
    pub bytes_copied: u64,
    /// HTTP requests sent to each storage (0 for local directories).
    pub source_requests: u64,
    pub destination_requests: u64,
}

#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub build: BuildId,
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub status: Status,
    pub builds: Vec<BuildPlan>,
    /// Every object, in write order, with what was (or would be) done.
    pub objects: Vec<Item>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_ancestors: Vec<BuildId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Objects under the build's prefix that are not copied (nested folders such as backups).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<copy::FailureReport>,
    pub summary: CopySummary,
}

/// A storage argument: a URL or a directory (a missing local directory is created unless
/// `create` is false).
fn open_store(arg: &str, create: bool) -> Result<Store> {
    // An empty value would resolve to the default storage: never a silent source or destination.
    if arg.trim().is_empty() {
        return Err(Error::Usage(crate::error::UsageError::StorageUrl(
            "an empty storage; give a directory or a storage URL".into(),
        )));
    }
    let r = remote::resolve(Some(arg), &remote::Env::empty()).map_err(|e| {
        if e.kind() == remote::ErrorKind::Config {
            Error::Usage(crate::error::UsageError::StorageUrl(e.to_string()))
        } else {
            Error::from(e)
        }
    })?;
    if let Location::Local { path } = &r.location
        && create
    {
        std::fs::create_dir_all(path).map_err(|e| Error::write(path, e))?;
    }
    let env = remote::Env::from_process();
    Ok(Store::open(&r.location, &env, &remote::Config::from_env(&env))?)
}

fn is_url(arg: &str) -> bool {
    let l = arg.trim().to_ascii_lowercase();
    ["gs:", "s3:", "azblob:", "file:"].iter().any(|p| l.starts_with(p)) || l.contains("://")
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let id = BuildId::parse(&args.build)?;
    let src = match &args.from {
        Some(f) => open_store(f, false)?,
        None => {
            let s = ctx.storage()?;
            match remote::mount::store_of(&s.root) {
                Some(store) => store,
                None => open_store(&s.root.to_string_lossy(), false)?,
            }
        }
    };
    // A dry run to a local directory that does not exist yet plans against an empty one
    // (nothing is created).
    let empty = tempfile::tempdir().map_err(|e| Error::write(std::env::temp_dir(), e))?;
    let dst = match open_store(&args.to, !args.dry_run) {
        Err(_) if args.dry_run && !is_url(&args.to) && !std::path::Path::new(&args.to).exists() => {
            open_store(&empty.path().to_string_lossy(), false)?
        }
        r => r?,
    };
    let to_label = if args.dry_run && !is_url(&args.to) { Some(args.to.clone()) } else { None };
    if src.location() == dst.location() {
        return Err(Error::Usage(crate::error::UsageError::StorageUrl(format!(
            "--from and --to are the same storage ({})",
            src.location()
        ))));
    }
    let (s0, d0) = (src.stats(), dst.stats());
    let opts = copy::Options { with_ancestors: !args.no_ancestors };
    let planned = copy::plan(&src, &dst, id, &opts)?;
    let mut report = CopyReport {
        build: id,
        from: src.location().to_string(),
        to: to_label.unwrap_or_else(|| dst.location().to_string()),
        dry_run: args.dry_run,
        status: Status::Planned,
        builds: Vec::new(),
        objects: Vec::new(),
        missing_ancestors: Vec::new(),
        conflicts: Vec::new(),
        left_out: Vec::new(),
        failure: None,
        summary: CopySummary::default(),
    };
    let mut plan = match planned {
        Ok(p) => p,
        Err(conflicts) => {
            report.status = Status::Refused;
            report.conflicts = conflicts;
            return Ok(finish(report, &src, &dst, s0, d0));
        }
    };
    report.left_out = std::mem::take(&mut plan.left_out);
    if !plan.missing_ancestors.is_empty() {
        report.status = Status::MissingAncestors;
    } else if !args.dry_run {
        match copy::execute(&src, &dst, &mut plan, ctx.progress()) {
            Ok(Ok(())) => report.status = Status::Copied,
            Ok(Err(conflicts)) => {
                report.status = Status::Refused;
                report.conflicts = conflicts;
            }
            Err(f) => {
                report.status = Status::Failed;
                report.failure = Some((*f).into());
            }
        }
    }
    report.builds = plan.builds;
    report.objects = plan.items;
    report.missing_ancestors = plan.missing_ancestors;
    Ok(finish(report, &src, &dst, s0, d0))
}

fn finish(mut report: CopyReport, src: &Store, dst: &Store, s0: Stats, d0: Stats) -> Outcome {
    let s = &mut report.summary;
    s.objects = report.objects.len();
    let done = |i: &&Item| matches!(i.action, Action::Copy | Action::Replace);
    let copied: Vec<&Item> = report.objects.iter().filter(done).filter(|i| report.dry_run || i.verified).collect();
    s.copied = if report.status == Status::Failed || report.status == Status::Refused { 0 } else { copied.len() };
    s.bytes_copied = if s.copied == 0 { 0 } else { copied.iter().map(|i| i.size).sum() };
    s.skipped = report.objects.iter().filter(|i| i.action == Action::Skip).count();
    s.source_requests = src.stats().since(&s0).requests;
    s.destination_requests = dst.stats().since(&d0).requests;
    Outcome::Copy(Box::new(report))
}
