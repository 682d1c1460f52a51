//! `tmpl inject-envd` and `rewrite-wrapper`'s human output: the text rendering of [`EditReport`] (its JSON is the struct itself). Kept
//! beside the command, apart from the code that does the work.

use std::io::{self, Write};

use super::edit_report::*;
use crate::edit::Target;
use crate::edit::plan::{Change, Content};
use crate::report::{Report, Style, human_bytes, render_findings, sanitize};

impl Report for EditReport {
    fn command(&self) -> &'static str {
        self.command.name()
    }

    /// The edit itself either completed or returned an error. After it, a failed cache purge
    /// (exit 4) or caches left alone because the orchestrator runs (exit 6) make the run not ok:
    /// this node still serves the old bytes. A dry run whose plan the guards refuse exits 5.
    fn ok(&self) -> bool {
        self.failure_code() == crate::exit_code::OK
    }

    fn failure_code(&self) -> u8 {
        if self.dry_run && self.plan.refused.is_some() {
            return crate::exit_code::REFUSED;
        }
        // A fork that did not reach its destination is not done, whatever the edit did.
        if let Some(code) = self.publish.as_ref().map(|p| p.exit_code()).filter(|c| *c != crate::exit_code::OK) {
            return code;
        }
        self.caches.as_ref().map_or(crate::exit_code::OK, CacheStep::exit_code)
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let p = &self.plan;
        let unpublished = self.publish.as_ref().is_some_and(|p| p.exit_code() != crate::exit_code::OK);
        let state = if self.dry_run {
            "plan (dry run: nothing written)"
        } else if unpublished {
            "FAILED: the new build was not published"
        } else {
            "done"
        };
        writeln!(w, "{} {} {}", style.bold(self.command.name()), p.build_id, state)?;
        if let Some(m) = p.mode {
            writeln!(w, "  mode      {} — {}", format!("{m:?}").to_lowercase(), sanitize(&p.mode_reason))?;
        }
        writeln!(w, "  backend   {}", format!("{:?}", p.backend).to_lowercase())?;
        match p.target {
            Target::InPlace => writeln!(
                w,
                "  target    in place{}{}",
                if p.drop_snapshot { ", memory snapshot dropped (filesystem_only)" } else { "" },
                if p.rewrite_header { ", header rewritten to map every block to the build" } else { "" }
            )?,
            Target::Fork { new_build_id } => match &self.publish {
                Some(p) => writeln!(
                    w,
                    "  target    new build {new_build_id} in {} (the old build is untouched)",
                    sanitize(&p.to)
                )?,
                None => writeln!(w, "  target    new build {new_build_id} (the old build is untouched)")?,
            },
        }
        if let Some(e) = &p.envd {
            writeln!(
                w,
                "  envd      {}: {} {} ELF, {}, sha256 {}{}{}",
                sanitize(&e.path.display().to_string()),
                if e.elf.is_static { "static" } else { "dynamic" },
                e.elf.machine_name(),
                human_bytes(e.len),
                &e.sha256[..16.min(e.sha256.len())],
                e.binary.version.as_deref().map(|v| format!(", version {}", sanitize(v))).unwrap_or_default(),
                e.binary.era.map(|v| format!(", era {v}")).unwrap_or_default(),
            )?;
        } else {
            writeln!(w, "  envd      {} (kept)", sanitize(&p.envd_path))?;
        }
        if !p.envd_args.is_empty() {
            writeln!(w, "  args      {}", sanitize(&p.envd_args.join(" ")))?;
        }
        if !p.dropped_args.is_empty() {
            writeln!(w, "  dropped   {} (this envd does not accept them)", sanitize(&p.dropped_args.join(" ")))?;
        }
        writeln!(w, "  changes")?;
        for c in &p.changes {
            let line = match c {
                Change::Mkdir { path, mode } => format!("mkdir  {path} {mode:04o}"),
                Change::Write { path, replaces, content, mode, len, sha256, .. } => format!(
                    "write  {path} {mode:04o} root:root {}{}{}{}",
                    human_bytes(*len),
                    if sha256.is_empty() { String::new() } else { format!(" sha256 {}", &sha256[..16]) },
                    match content {
                        Content::Host { path } => format!(" from {}", path.display()),
                        Content::Text { .. } => " (generated)".into(),
                    },
                    replaces.map(|k| format!(" (replaces a {})", k.noun())).unwrap_or_default()
                ),
                Change::Link { path, replaces, target } => format!(
                    "link   {path} -> {target}{}",
                    replaces.map(|k| format!(" (replaces a {})", k.noun())).unwrap_or_default()
                ),
            };
            writeln!(w, "    {}", sanitize(&line))?;
        }
        for warning in &p.warnings {
            writeln!(w, "  {}: {}", style.severity(crate::report::Severity::Warning), sanitize(warning))?;
        }
        if let Some(r) = &p.refused {
            writeln!(
                w,
                "  {}   {}",
                style.severity(crate::report::Severity::Error),
                sanitize(&format!("refused: {}", r.message))
            )?;
            for reason in &r.reasons {
                writeln!(w, "    - {}", sanitize(reason))?;
            }
        }
        if let Some(a) = &self.applied {
            let v = &a.verification;
            writeln!(
                w,
                "  verified  {} read back (sha256, mode, owner), boot path checked, e2fsck -fn {}",
                crate::report::count(v.files.len(), "file", "files"),
                if v.fsck_clean { "clean" } else { "NOT clean" }
            )?;
            render_findings(w, style, &v.findings, "    ")?;
            if let Some(b) = &a.backup_dir {
                writeln!(w, "  backup    {}", b.display())?;
            }
            if !a.snapshot_dropped.is_empty() {
                writeln!(w, "  snapshot  moved out: {}", a.snapshot_dropped.join(", "))?;
            }
            writeln!(w, "  manifest  {}", a.manifest.display())?;
        }
        if let Some(p) = &self.publish {
            render_publish(w, style, p)?;
        }
        render_outcome_tail(w, self.caches.as_ref(), &self.notes, &self.next_steps)
    }
}

/// The end of an edit's or a backup action's report: the caches step, notes, next steps.
pub(super) fn render_outcome_tail(
    w: &mut dyn Write,
    caches: Option<&CacheStep>,
    notes: &[String],
    next_steps: &[String],
) -> io::Result<()> {
    if let Some(c) = caches {
        writeln!(w, "  caches    {}: {}", c.status.name(), sanitize(&c.detail))?;
    }
    for n in notes {
        writeln!(w, "  note      {}", sanitize(n))?;
    }
    for s in next_steps {
        writeln!(w, "  next      {}", sanitize(s))?;
    }
    Ok(())
}

/// The publish step of a fork that went to another storage.
fn render_publish(w: &mut dyn Write, style: &Style, p: &crate::edit::publish::Publish) -> io::Result<()> {
    use crate::edit::publish::{Method, Status};
    let to = sanitize(&p.to);
    match (p.status, p.method) {
        (Status::Planned, Method::Direct) => writeln!(
            w,
            "  publish   straight into {to} (checked: no build with this ID there; its folder appears whole, by one rename)"
        )?,
        (Status::Planned, Method::Staged) => writeln!(
            w,
            "  publish   assembled in a staging folder in $TMPDIR, then copied to {to}: data, header, metadata.json last, \
             each object read back and compared; rolled back on failure; the staging folder removed (checked: the \
             storage answers and holds no complete build with this ID)"
        )?,
        (Status::Published, Method::Direct) => writeln!(w, "  publish   written into {to}")?,
        (Status::Published, Method::Staged) => writeln!(
            w,
            "  publish   {to}: {} written ({}), {} skipped (identical), {} ({} requests); staging folder {}",
            crate::report::count(p.written, "object", "objects"),
            human_bytes(p.bytes_written),
            p.skipped,
            if p.verified { "every object read back and verified" } else { "NOT verified" },
            p.requests,
            if p.staging_removed { "removed" } else { "NOT removed" }
        )?,
        (Status::Refused, _) => {
            writeln!(
                w,
                "  {}   publish refused: {to} holds a different build with the fork's ID; nothing written",
                style.severity(crate::report::Severity::Error)
            )?;
            for c in &p.conflicts {
                writeln!(w, "    - {}: {}", sanitize(&c.key), sanitize(&c.reason))?;
            }
        }
        (Status::Failed, _) => {
            if let Some(f) = &p.failure {
                writeln!(
                    w,
                    "  {}   publish to {to} failed at {}: {}",
                    style.severity(crate::report::Severity::Error),
                    sanitize(&f.detail.key),
                    sanitize(&f.detail.error)
                )?;
                writeln!(
                    w,
                    "  rollback  {} deleted again{}",
                    crate::report::count(f.detail.rolled_back.len(), "object", "objects"),
                    if f.detail.left_behind.is_empty() {
                        ": nothing of the fork is at the destination".to_string()
                    } else {
                        format!("; LEFT BEHIND: {}", sanitize(&f.detail.left_behind.join(", ")))
                    }
                )?;
                if let Some(finding) = &f.finding {
                    render_findings(w, style, std::slice::from_ref(finding), "    ")?;
                }
            }
        }
    }
    if style.verbose && p.status != Status::Planned {
        for o in &p.objects {
            writeln!(
                w,
                "    {:<64} {:>10}  {}",
                sanitize(&o.key),
                human_bytes(o.size),
                if o.verified { "verified" } else { "not written" }
            )?;
        }
    }
    Ok(())
}
