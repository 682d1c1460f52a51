//! `tmpl demo`: create a storage with healthy and broken builds, verify it, and check that every
//! planted fault was found. Needs no E2B cluster (only mkfs.ext4 from e2fsprogs).

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::verify::{self, VerifyReport};
use crate::cli::GlobalArgs;
use crate::demo::{self, Scenario};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::report::{Report, Severity, Style};
use crate::storage::{Storage, StorageSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the demo storage (default: a new directory under /tmp). An existing
    /// directory is only reused if it is a previous demo.
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

pub fn run(args: Args, _g: &GlobalArgs, out: &Output) -> Result<u8> {
    let root = match args.dir {
        Some(d) => {
            if d.exists() {
                let empty = std::fs::read_dir(&d).map_err(|e| Error::read(&d, e))?.next().is_none();
                if !empty && !d.join(demo::MARKER).exists() {
                    return Err(Error::refused(
                        format!("{} exists and is not a tmpl demo storage", d.display()),
                        vec![],
                    ));
                }
                if !empty {
                    std::fs::remove_dir_all(&d).map_err(|e| Error::write(&d, e))?;
                }
            }
            d
        }
        None => tempfile::Builder::new()
            .prefix("tmpl-demo-")
            .tempdir()
            .map_err(|e| Error::write(std::env::temp_dir(), e))?
            .keep(),
    };
    let scenarios = demo::create(&root)?;
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
    Ok(out.emit(&DemoReport { storage: root, scenarios: results, all_detected, verify: report }))
}
