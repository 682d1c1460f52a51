//! `tmpl man [COMMAND] [--out DIR]`: man pages generated from the clap definition, one per
//! command: tmpl(1), tmpl-verify(1), tmpl-inspect(1), ...

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::error::{Error, Result, UsageError};
use crate::report::{Report, Style};

#[derive(Debug, clap::Args)]
#[command(after_help = "Without --out, the page of COMMAND (tmpl(1) without one) is written to stdout as roff: \
tmpl man verify | man -l -\n\
Exit status: 0; 2 for an unknown command; 4 when --out cannot be written.")]
pub struct Args {
    /// The command whose page is written to stdout (e.g. verify); none: tmpl(1)
    #[arg(value_name = "COMMAND", conflicts_with = "out")]
    pub command: Option<String>,
    /// Write every page (tmpl.1, tmpl-verify.1, ...) into DIR (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// One generated page.
#[derive(Debug, Serialize)]
pub struct ManPage {
    /// The page's name, e.g. `tmpl-verify`.
    pub name: String,
    /// Where it was written (`--out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The roff source (when written to stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roff: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ManReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    pub pages: Vec<ManPage>,
}

impl Report for ManReport {
    fn command(&self) -> &'static str {
        "man"
    }

    fn ok(&self) -> bool {
        true
    }

    fn render(&self, w: &mut dyn Write, _style: &Style) -> io::Result<()> {
        if let Some(dir) = &self.out {
            let n = self.pages.len();
            writeln!(w, "{n} man {} written to {}", if n == 1 { "page" } else { "pages" }, dir.display())?;
            for p in &self.pages {
                if let Some(f) = &p.file {
                    writeln!(w, "  {}", f.display())?;
                }
            }
            return Ok(());
        }
        for p in &self.pages {
            if let Some(roff) = &p.roff {
                w.write_all(roff.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// The command tree `cli` as clap builds it (bin names like `tmpl verify`, global flags
/// propagated to each subcommand), without the `help` subcommand.
fn built(cli: clap::Command) -> clap::Command {
    let mut cmd = cli.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every page: `(name, roff)` for tmpl and each visible subcommand, in definition order.
pub fn pages(cli: clap::Command) -> Vec<(String, String)> {
    let root = built(cli);
    let subs: Vec<String> =
        root.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| format!("tmpl-{}", s.get_name())).collect();
    let mut out = vec![("tmpl".to_string(), render(&root, &subs))];
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tmpl-{}", sub.get_name());
        out.push((name, render(sub, &["tmpl".to_string()])));
    }
    out
}

/// One page's roff, with a SEE ALSO section naming `see_also` (section 1).
fn render(cmd: &clap::Command, see_also: &[String]) -> String {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_string();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("tmpl {}", env!("CARGO_PKG_VERSION")))
        .manual("tmpl manual");
    let mut buf = Vec::new();
    // Rendering into memory cannot fail.
    let _ = man.render(&mut buf);
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if !see_also.is_empty() {
        let refs: Vec<String> = see_also.iter().map(|n| format!("\\fB{}\\fR(1)", n.replace('-', "\\-"))).collect();
        s.push_str(".SH \"SEE ALSO\"\n");
        s.push_str(&refs.join(", "));
        s.push('\n');
    }
    s
}

fn write_pages(dir: &Path, cli: clap::Command) -> Result<Vec<ManPage>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    pages(cli)
        .into_iter()
        .map(|(name, roff)| {
            let file = dir.join(format!("{name}.1"));
            std::fs::write(&file, roff).map_err(|e| Error::write(&file, e))?;
            Ok(ManPage { name, file: Some(file), roff: None })
        })
        .collect()
}

/// `cli` is the command tree to document (tmpl's, from the entry layer: this module does not
/// import `cli`).
pub fn run(args: Args, _ctx: &Ctx, cli: clap::Command) -> Result<Outcome> {
    if let Some(dir) = args.out {
        let pages = write_pages(&dir, cli)?;
        return Ok(Outcome::Man(ManReport { out: Some(dir), pages }));
    }
    let want = match args.command.as_deref() {
        None | Some("tmpl") => "tmpl".to_string(),
        Some(c) => format!("tmpl-{}", c.strip_prefix("tmpl-").unwrap_or(c)),
    };
    let all = pages(cli);
    let known: Vec<&str> = all.iter().map(|(n, _)| n.strip_prefix("tmpl-").unwrap_or(n)).collect();
    let known = known.join(", ");
    match all.into_iter().find(|(n, _)| *n == want) {
        Some((name, roff)) => {
            Ok(Outcome::Man(ManReport { out: None, pages: vec![ManPage { name, file: None, roff: Some(roff) }] }))
        }
        None => Err(UsageError::NoManPage { name: want, known }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// One page per visible subcommand plus tmpl(1); each names every long flag the command
    /// accepts (global ones included), so the pages cannot drift from the flags.
    #[test]
    fn a_page_per_command_naming_every_flag() {
        let root = built(crate::cli::Cli::command());
        let pages = pages(crate::cli::Cli::command());
        assert_eq!(pages.len(), 1 + root.get_subcommands().count());
        assert_eq!(pages[0].0, "tmpl");
        for sub in root.get_subcommands() {
            let name = format!("tmpl-{}", sub.get_name());
            let (_, roff) = pages.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no page {name}"));
            assert!(roff.contains(&format!("\n.TH {} 1 ", name.to_uppercase())), "{name}: {}", &roff[..200]);
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    // roff escapes '-' as '\-'.
                    assert!(roff.contains(&long.replace('-', "\\-")), "{name} lacks --{long}");
                }
            }
            assert!(roff.contains("\\-\\-storage"), "{name} lacks the global --storage");
        }
        for sub in root.get_subcommands() {
            let listed = sub.get_name().replace('-', "\\-");
            assert!(pages[0].1.contains(&listed), "tmpl(1) does not list {}", sub.get_name());
        }
    }

    #[test]
    fn pages_are_written_to_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(&dir.path().join("man1"), crate::cli::Cli::command()).unwrap();
        assert!(written.iter().any(|p| p.name == "tmpl-verify"));
        for p in &written {
            let f = p.file.as_ref().unwrap();
            assert!(std::fs::read_to_string(f).unwrap().contains("\n.TH TMPL"), "{}", f.display());
        }
    }
}
