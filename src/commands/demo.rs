//! `tmpl demo`: create a storage with healthy and broken builds, verify it, and check that every
//! planted fault was found. Needs no E2B cluster (only mkfs.ext4 from e2fsprogs).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::verify::{self, VerifyReport};
use super::{Ctx, Outcome};
use crate::demo::{self, BootSupport, Scenario};
use crate::error::{Error, Result, UsageError};
use crate::report::{Report, Severity, Style};
use crate::storage::{Storage, StorageSource};

#[derive(Debug, clap::Args)]
#[command(after_long_help = "Where the demo storage goes: --dir DIR, else the global --storage DIR, else a new \
directory /tmp/tmpl-demo-*. TMPL_STORAGE and the other storage variables are NOT used: they name a real storage. \
DIR may be missing or empty; a non-empty DIR is reused only if it holds an earlier demo and nothing else \
(its demo builds are replaced); any other non-empty directory is refused, so the demo never mixes into a real \
storage.\n\
Exit status: 0 every planted fault was found and the healthy builds are clean; 1 otherwise; 4 mkfs.ext4 is \
missing or DIR cannot be written; 5 DIR is refused (not empty and not an earlier demo).")]
pub struct Args {
    /// Where to create the demo storage (default: the global --storage, else a new directory
    /// under /tmp). A non-empty directory is only reused if it holds an earlier demo.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioResult {
    #[serde(flatten)]
    pub scenario: Scenario,
    pub detected: bool,
    pub missing: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub storage: PathBuf,
    /// Whether `tmpl boot-test` can boot the builds (each scenario's `boot` says what it must
    /// say then).
    pub boot: BootSupport,
    pub scenarios: Vec<ScenarioResult>,
    pub all_detected: bool,
    pub verify: VerifyReport,
}

impl Report for DemoReport {
    fn command(&self) -> &'static str {
        "demo"
    }

    fn ok(&self) -> bool {
        self.all_detected
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        writeln!(w, "{}\n", style.bold(&format!("$ tmpl --storage {} verify --all", self.storage.display())))?;
        self.verify.render(w, style)?;
        writeln!(w, "\n{}", style.bold("demo scenarios"))?;
        for s in &self.scenarios {
            let mark = if s.detected { style.ok(true) } else { style.ok(false) };
            let what = if s.scenario.expect.is_empty() {
                "no errors or warnings".to_string()
            } else {
                s.scenario.expect.join(", ")
            };
            writeln!(w, "  {mark} {:<32} {} — expects {what}", s.scenario.name, s.scenario.build_id)?;
            if !s.missing.is_empty() {
                writeln!(w, "      missing: {}", s.missing.join(", "))?;
            }
            if self.boot.runnable() {
                let note = s.scenario.boot_note.map(|n| format!(" — {n}")).unwrap_or_default();
                writeln!(w, "      boot-test: {}{note}", s.scenario.boot.describe())?;
            }
        }
        writeln!(w, "\n{}", style.bold("boot-test"))?;
        writeln!(w, "  envd:  {}", self.boot.envd)?;
        writeln!(w, "  shell: {}", self.boot.shell.describe())?;
        if self.boot.runnable() {
            writeln!(
                w,
                "  The builds boot as listed above (QEMU with an E2B-like guest kernel: docs/guest-kernel.md):\n  \
                 K=$(scripts/build-test-kernel.sh target)\n  \
                 tmpl --storage {} boot-test {} --kernel \"$K\"",
                self.storage.display(),
                demo::ids::CHILD
            )?;
        } else {
            writeln!(w, "  These builds cannot boot: boot-test on them fails whatever the fault.")?;
        }
        writeln!(
            w,
            "\n{}\nTry: tmpl --storage {} inspect {}",
            if self.all_detected {
                "Every planted fault was found, and the healthy builds are clean."
            } else {
                "Some planted faults were NOT found."
            },
            self.storage.display(),
            demo::ids::CHILD
        )?;
        Ok(())
    }
}

/// The directory the demo writes: `--dir`, else the global `--storage`, else a new temporary
/// directory. Never the storage named by the environment.
pub fn target(dir: Option<PathBuf>, storage: Option<PathBuf>) -> Result<PathBuf> {
    let chosen = match (dir, storage) {
        (Some(d), Some(s)) if d != s => {
            return Err(UsageError::TwoDirectories { dir: d, storage: s }.into());
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            return Ok(tempfile::Builder::new()
                .prefix("tmpl-demo-")
                .tempdir()
                .map_err(|e| Error::write(std::env::temp_dir(), e))?
                .keep());
        }
    };
    prepare(&chosen)?;
    Ok(chosen)
}

/// Make `dir` ready for a new demo: missing or empty is fine; an earlier demo (its marker, its
/// builds and nothing else) is cleared; anything else is refused and left untouched.
fn prepare(dir: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::read(dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::refused(format!("{} exists and is not a directory", dir.display()), vec![]));
    }
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))? {
        entries.push(e.map_err(|e| Error::read(dir, e))?.file_name());
    }
    if entries.is_empty() {
        return Ok(());
    }
    let demo_ids = demo::all_ids();
    let foreign: Vec<String> = entries
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n != demo::MARKER && !demo_ids.contains(&n.as_str()))
        .collect();
    if !dir.join(demo::MARKER).is_file() || !foreign.is_empty() {
        let mut reasons = Vec::new();
        if !dir.join(demo::MARKER).is_file() {
            reasons.push(format!("it has no {} marker: it is not an earlier demo", demo::MARKER));
        }
        if !foreign.is_empty() {
            let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
            reasons.push(format!(
                "it holds {} entr{} the demo did not create: {}{}",
                foreign.len(),
                if foreign.len() == 1 { "y" } else { "ies" },
                shown.join(", "),
                if foreign.len() > shown.len() { ", ..." } else { "" }
            ));
        }
        return Err(Error::refused(
            format!(
                "{} is not empty and is not only an earlier tmpl demo; choose an empty or new directory",
                dir.display()
            ),
            reasons,
        ));
    }
    for n in entries {
        let p = dir.join(&n);
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| Error::write(&p, e))?;
    }
    Ok(())
}

pub fn run(args: Args, ctx: &Ctx) -> Result<Outcome> {
    let root = target(args.dir, ctx.storage_flag.clone())?;
    let shell = demo::Shell::find();
    let boot = BootSupport::new(&shell);
    let scenarios = demo::create_with(&root, &shell)?;
    let storage = Storage { root: root.clone(), source: StorageSource::Flag };
    let (locs, other) = verify::locate(&storage, &[], true)?;
    let report = verify::verify_all(&storage, &locs, false, other)?;
    let results: Vec<ScenarioResult> = scenarios
        .into_iter()
        .map(|s| {
            let b = report.builds.iter().find(|b| b.build_id == s.build_id);
            let found: Vec<&str> = b.map(|b| b.findings.iter().map(|f| f.id.as_str()).collect()).unwrap_or_default();
            let missing: Vec<&'static str> = s.expect.iter().copied().filter(|e| !found.contains(e)).collect();
            let detected = if s.expect.is_empty() {
                b.is_some_and(|b| !b.findings.iter().any(|f| f.severity != Severity::Info))
            } else {
                missing.is_empty()
            };
            ScenarioResult { scenario: s, detected, missing }
        })
        .collect();
    let all_detected = results.iter().all(|r| r.detected);
    Ok(Outcome::Demo(Box::new(DemoReport { storage: root, boot, scenarios: results, all_detected, verify: report })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_like(dir: &Path) {
        std::fs::create_dir_all(dir.join(demo::ids::BASE)).unwrap();
        std::fs::write(dir.join(demo::ids::BASE).join("snapfile"), b"x").unwrap();
        std::fs::write(dir.join(demo::MARKER), b"created by tmpl demo\n").unwrap();
    }

    #[test]
    fn dir_wins_then_storage_then_a_new_temporary_directory() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        assert_eq!(target(Some(a.clone()), None).unwrap(), a);
        assert_eq!(target(None, Some(b.clone())).unwrap(), b);
        assert_eq!(target(Some(a.clone()), Some(a.clone())).unwrap(), a);
        let e = target(Some(a.clone()), Some(b.clone())).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        let tmp = target(None, None).unwrap();
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with("tmpl-demo-") && tmp.is_dir());
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn a_real_storage_is_refused_and_left_untouched() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("templates");
        let build = real.join("8f4e1a6e-0000-4000-8000-000000000001");
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("snapfile"), b"real").unwrap();
        for (dir, storage) in [(None, Some(real.clone())), (Some(real.clone()), None)] {
            let e = target(dir, storage).unwrap_err();
            assert!(matches!(e, Error::Refused { .. }), "{e}");
        }
        assert_eq!(std::fs::read(build.join("snapfile")).unwrap(), b"real");
        // A marker does not make a storage with other builds a demo.
        std::fs::write(real.join(demo::MARKER), b"").unwrap();
        let e = target(Some(real.clone()), None).unwrap_err();
        assert!(e.to_string().contains("not only an earlier tmpl demo"), "{e}");
        assert!(build.join("snapfile").exists());
        // A file is refused too.
        let f = t.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert!(target(Some(f), None).is_err());
    }

    #[test]
    fn an_earlier_demo_is_cleared_and_an_empty_directory_used() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("demo");
        demo_like(&d);
        assert_eq!(target(Some(d.clone()), None).unwrap(), d);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "the earlier demo's builds are gone");
        // Without its marker an earlier demo's builds are not recognised.
        std::fs::create_dir_all(d.join(demo::ids::BASE)).unwrap();
        assert!(target(Some(d.clone()), None).is_err());
        assert!(d.join(demo::ids::BASE).exists());
        let empty = t.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(target(None, Some(empty.clone())).unwrap(), empty);
    }
}
