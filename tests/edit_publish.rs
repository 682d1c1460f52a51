//! In-process: `inject-envd --fork --to DIR` (`Cli::try_parse_from` → `tmpl::execute` → the
//! typed `EditReport`), from a compressed, layered demo build in one local storage to another
//! directory: the report's publish step, its text rendering and exit code, a dry run that
//! creates nothing, a fork ID already at the destination (refused), `--to` without `--fork`
//! (usage). The remote destinations (staged, copied, rolled back) are covered against real
//! servers in tests/remote_commands.rs.

mod common;

use std::path::Path;

use clap::Parser;
use tmpl::Outcome;
use tmpl::cli::Cli;
use tmpl::commands::edit_report::EditReport;
use tmpl::edit::publish::{Method, Status};
use tmpl::output::{Mode, Output};
use tmpl::report::{Report, Style};

fn run(args: &[&str]) -> tmpl::Result<Outcome> {
    let cli = Cli::try_parse_from(std::iter::once("tmpl").chain(args.iter().copied())).expect("command line parses");
    let (out, _captured) = Output::capture(Mode::default(), b"");
    tmpl::execute(cli, &out)
}

fn edit(args: &[&str]) -> Box<EditReport> {
    match run(args).unwrap_or_else(|e| panic!("{args:?}: {e} {:?}", e.details())) {
        Outcome::Edit(r) => r,
        other => panic!("{args:?} returned {other:?}"),
    }
}

fn text(r: &EditReport) -> String {
    let mut v = Vec::new();
    r.render(&mut v, &Style::default()).unwrap();
    String::from_utf8(v).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn fork_to_another_local_storage() {
    let Some(bins) = common::fixtures::bins() else { return };
    let d = tempfile::tempdir().unwrap();
    let storage = d.path().join("s");
    match run(&["demo", "--dir", storage.to_str().unwrap()]).unwrap() {
        Outcome::Demo(_) => {}
        other => panic!("demo returned {other:?}"),
    }
    let before = common::hash_tree(&storage);
    let to = d.path().join("repaired");
    let (s, t, envd) = (storage.to_str().unwrap(), to.to_str().unwrap(), bins.envd.to_str().unwrap());
    let child = tmpl::demo::ids::LZ4_CHILD;
    let new = "f6000000-0000-4000-8000-000000000001";
    let base = ["--storage", s, "inject-envd", child, "--envd", envd, "--fork-id", new, "--to", t];

    // A dry run plans the publish step and creates nothing.
    let plan = edit(&[&base[..], &["--dry-run"]].concat());
    let p = plan.publish.as_ref().expect("a publish step");
    assert_eq!((p.method, p.status, p.to.as_str()), (Method::Direct, Status::Planned, t));
    assert_eq!(plan.failure_code(), tmpl::exit_code::OK);
    assert!(!to.exists(), "a dry run creates nothing");

    let r = edit(&base);
    assert!(r.ok(), "{}", text(&r));
    let p = r.publish.as_ref().unwrap();
    assert_eq!((p.method, p.status, p.verified), (Method::Direct, Status::Published, true));
    let applied = r.applied.as_ref().unwrap();
    assert_eq!(applied.build_dir, to.join(new));
    assert!(applied.verification.fsck_clean);
    assert_eq!(names(&to), vec![new.to_string()], "only the new build (no partial folder)");
    assert_eq!(common::hash_tree(&storage), before, "the base's storage is unchanged");
    assert_eq!(common::cat(&to, new, "/usr/bin/envd"), std::fs::read(&bins.envd).unwrap());
    let shown = text(&r);
    assert!(shown.contains(&format!("new build {new} in {t}")), "{shown}");
    assert!(shown.contains(&format!("tmpl --storage {t} verify {new}")), "{shown}");
    // The new build verifies where it went.
    match run(&["--storage", t, "verify", new]).unwrap() {
        Outcome::Verify(v) => assert!(v.builds.iter().all(|b| b.tally.errors == 0), "{v:?}"),
        other => panic!("{other:?}"),
    }

    // The ID is taken at the destination now: refused before anything is written.
    let e = run(&base).unwrap_err();
    assert_eq!(e.exit_code(), tmpl::exit_code::REFUSED, "{e}");
    assert_eq!(names(&to), vec![new.to_string()]);
    // --to names where a fork goes: without --fork it is a usage error.
    let e = run(&["--storage", s, "inject-envd", child, "--envd", envd, "--to", t]).unwrap_err();
    assert_eq!(e.exit_code(), tmpl::exit_code::USAGE, "{e}");
    // An empty --to is not the default storage.
    let e = run(&["--storage", s, "inject-envd", child, "--envd", envd, "--fork", "--to", ""]).unwrap_err();
    assert_eq!(e.exit_code(), tmpl::exit_code::USAGE, "{e}");
    // --to the base's own storage is the ordinary fork beside it (no publish step).
    let r = edit(&["--storage", s, "inject-envd", child, "--envd", envd, "--fork", "--to", s]);
    assert!(r.publish.is_none() && r.ok(), "{}", text(&r));
}
