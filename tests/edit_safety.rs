//! The mutating commands under adversity (issue 12): killed at every step of a commit, raced by a
//! process that opens the image, raced by a second tmpl, run beside a live orchestrator, next to
//! builds with unreadable headers; and what they leave behind, listed, restored and cleaned by
//! `tmpl backups`. Real ext4 images, real processes, real SIGKILL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tmpl::commands::backups::{Action, BackupsReport};
use tmpl::edit::backups::StepAction;
use tmpl::edit::fault::{FAULT_ENV, PAUSE_FILE_ENV};
use tmpl::vocab::BuildId;

fn cmd(s: &Store) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tmpl"));
    c.arg("--storage").arg(&s.w.root);
    c
}

/// A `backups --json` document read as the report type the binary serialised; it serialises back
/// to the same document (less the envelope: format version, command, ok).
#[track_caller]
fn backups_report(doc: &Value) -> BackupsReport {
    let r: BackupsReport = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    let mut plain = doc.clone();
    for k in ["format_version", "command", "ok"] {
        assert!(plain.as_object_mut().unwrap().remove(k).is_some(), "no {k} in {doc:#}");
    }
    assert_eq!(serde_json::to_value(&r).unwrap(), plain);
    r
}

fn json(s: &Store, args: &[&str]) -> (i32, Value, String) {
    let out = cmd(s).arg("--json").args(args).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} / {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn dir(s: &Store) -> PathBuf {
    s.w.root.join(BUILD)
}

fn sha(p: &Path) -> Option<String> {
    std::fs::read(p).ok().map(|b| tmpl::rootfs::hex(&Sha256::digest(b)))
}

/// A storage with one full-image build that has a shell.
fn store() -> Option<(Store, &'static Bins)> {
    let b = bins()?;
    if !common::require("debugfs") || !common::require("e2fsck") {
        return None;
    }
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.shell();
    s.full(BUILD, &t);
    Some((s, b))
}

/// The build gets a memory snapshot (snapfile, memfile + header), v2 metadata, and a rootfs
/// header with a nil range (so an edit rewrites the header too: every kind of step in one commit).
fn with_snapshot_and_header(s: &Store) {
    let id = BuildId::parse(BUILD).unwrap();
    s.w.snapfile(&id, "8.0.0", 64).unwrap();
    s.w.memfile(&id, 64, true).unwrap();
    s.w.metadata(&id, "v1.14.1_431f1fc", false).unwrap();
    let d = dir(s);
    let len = std::fs::metadata(d.join("rootfs.ext4")).unwrap().len();
    let mut h = tmpl::header::headerless(id, len, 4096);
    h.version = 3;
    h.synthesized = false;
    h.mappings = vec![
        tmpl::header::Mapping { offset: 0, length: len - 4096, build: id, storage_offset: 0 },
        tmpl::header::Mapping { offset: len - 4096, length: 4096, build: BuildId::nil(), storage_offset: 0 },
    ];
    std::fs::write(d.join("rootfs.ext4.header"), tmpl::header::encode(&h)).unwrap();
}

/// Start tmpl paused at `step`; returns once it waits there.
fn spawn_paused(s: &Store, step: &str, args: &[&str]) -> (Child, PathBuf) {
    let pause = s.dir.path().join(format!("pause-{}", step.replace(':', "-")));
    let _ = std::fs::remove_file(&pause);
    let mut child = cmd(s)
        .env(FAULT_ENV, format!("pause:{step}"))
        .env(PAUSE_FILE_ENV, &pause)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pause.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("tmpl ended ({st}) before {step}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(start.elapsed() < Duration::from_secs(120), "tmpl never reached {step}");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, pause)
}

/// What E2B's orchestrator makes of the build's files as they are.
#[derive(Debug, PartialEq, Eq)]
enum View {
    /// Served as before the edit (resume from the old snapshot, or a cold boot of the old disk).
    Old,
    /// Served as after the edit (cold boot of the new disk).
    New,
    /// Refused: no snapfile to resume and metadata that does not allow a cold boot.
    Refused,
    /// Served wrongly.
    Mix(String),
}

struct Before {
    rootfs: Option<String>,
    header: Option<String>,
    metadata: Option<String>,
    memfile: Option<String>,
    snapfile: Option<String>,
}

impl Before {
    fn of(d: &Path) -> Before {
        Before {
            rootfs: sha(&d.join("rootfs.ext4")),
            header: sha(&d.join("rootfs.ext4.header")),
            metadata: sha(&d.join("metadata.json")),
            memfile: sha(&d.join("memfile")),
            snapfile: sha(&d.join("snapfile")),
        }
    }
}

/// What an orchestrator makes of the build: `honours_cold_boot` for one that reads
/// `filesystem_only` (2026-06 on); older ones resume from the snapfile whenever there is one.
fn view_by(d: &Path, old: &Before, honours_cold_boot: bool) -> View {
    let now = Before::of(d);
    let meta: Value = std::fs::read(d.join("metadata.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let cold = honours_cold_boot && meta["filesystem_only"] == true;
    let identity = std::fs::read(d.join("rootfs.ext4.header"))
        .ok()
        .and_then(|b| tmpl::header::parse(&b).ok())
        .is_some_and(|h| h.is_identity() && !h.mappings.iter().any(|m| m.is_nil()));
    let old_rootfs = now.rootfs == old.rootfs;
    if now.snapfile.is_some() && !cold {
        // A resume: memory, disk and header must all be the old ones.
        if old_rootfs && now.header == old.header && now.memfile == old.memfile {
            return View::Old;
        }
        return View::Mix(format!(
            "the old snapshot would resume over rootfs old={old_rootfs}, header old={}, memfile old={}",
            now.header == old.header,
            now.memfile == old.memfile
        ));
    }
    if cold {
        return match (old_rootfs, now.header == old.header, identity) {
            (true, true, _) | (true, _, true) => View::Old,
            (false, _, true) => View::New,
            (false, _, false) => View::Mix("the new image read through the old header (nil range)".into()),
            (true, false, false) => View::Mix("the old image with an unknown header".into()),
        };
    }
    View::Refused
}

/// The build as both orchestrator generations see it; a mix for either is returned.
fn view(d: &Path, old: &Before) -> View {
    let (new, older) = (view_by(d, old, true), view_by(d, old, false));
    match (&new, &older) {
        (View::Mix(m), _) => View::Mix(format!("orchestrator 2026-06+: {m}")),
        (_, View::Mix(m)) => View::Mix(format!("orchestrator before 2026-06: {m}")),
        _ => new,
    }
}

fn finding_ids(s: &Store) -> (i32, Vec<(String, String, String, String)>) {
    let (code, v, _) = json(s, &["verify", BUILD]);
    let f = v["builds"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let g = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (g("id"), g("severity"), g("message"), g("hint"))
        })
        .collect();
    (code, f)
}

fn leftover_names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmpl-"))
        .collect();
    v.sort();
    v
}

/// Every point of an in-place `--drop-snapshot` commit, in order (one rename each, then the
/// folder fsync and the clean-up).
const COMMIT_POINTS: &[&str] = &[
    "before-commit",
    "commit:journal",
    "commit:snapfile",
    "commit:memfile",
    "commit:memfile.header",
    "commit:metadata.json",
    "commit:rootfs.ext4.header",
    "commit:rootfs.ext4",
    "commit:tmpl-manifest.json",
    "commit:synced",
    "commit:cleaned",
];

/// Item 1: killed at every step of the commit (SIGKILL sent by tmpl itself at the step, or for
/// some steps by the test while tmpl waits there), the build is always one the orchestrator
/// serves correctly (old or new) or refuses — never the old snapshot over the new disk; verify
/// calls an interrupted commit an error naming the command that finishes it; and the next run
/// (`tmpl backups --recover`, or the next edit) completes it, or `--roll-back` undoes it exactly.
#[test]
fn a_commit_killed_at_any_step_is_never_misused_and_is_completed_or_rolled_back() {
    let Some((probe, b)) = store() else { return };
    drop(probe);
    let envd = b.envd.to_string_lossy().into_owned();
    let edit = ["inject-envd", BUILD, "--drop-snapshot", "--envd", envd.as_str()];
    let mut hit = Vec::new();
    for (i, point) in COMMIT_POINTS.iter().enumerate() {
        for how in ["self-kill", "sigkill", "roll-back"] {
            // SIGKILL from outside for a few steps, a roll-back for a few others.
            if how == "sigkill" && !["commit:memfile", "commit:rootfs.ext4.header", "commit:synced"].contains(point) {
                continue;
            }
            if how == "roll-back" && !["commit:journal", "commit:metadata.json", "commit:rootfs.ext4"].contains(point) {
                continue;
            }
            let (s, _) = store().unwrap();
            with_snapshot_and_header(&s);
            let d = dir(&s);
            let old = Before::of(&d);
            let tree_before = common::hash_tree(&d);
            let status = if how == "sigkill" {
                let (mut child, pause) = spawn_paused(&s, point, &edit);
                child.kill().unwrap();
                let st = child.wait().unwrap();
                std::fs::remove_file(&pause).unwrap();
                st
            } else {
                cmd(&s).env(FAULT_ENV, format!("kill:{point}")).args(edit).output().unwrap().status
            };
            let ctx = format!("killed ({how}) at {point}");
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{ctx}: {status}");
            hit.push(*point);

            // What the orchestrator would do with the build now.
            let v = view(&d, &old);
            assert!(!matches!(v, View::Mix(_)), "{ctx}: {v:?}");
            let journal = d.join(".tmpl-commit.json").exists();
            let (code, f) = finding_ids(&s);
            if journal {
                let e = f.iter().find(|x| x.0 == "edit.interrupted-commit").unwrap_or_else(|| panic!("{ctx}: {f:?}"));
                assert_eq!(e.1, "error", "{ctx}");
                assert!(e.3.contains(&format!("tmpl backups {BUILD} --recover")), "{ctx}: {e:?}");
                assert_eq!(code, 1, "{ctx}");
            } else {
                // Killed before the journal: nothing of the build changed.
                assert_eq!(v, View::Old, "{ctx}");
            }

            if how == "roll-back" {
                let (code, r, err) = json(&s, &["backups", BUILD, "--roll-back"]);
                assert_eq!(code, 0, "{ctx}: {err} {r:#}");
                assert_eq!(r["recovered"]["outcome"], "rolled-back", "{ctx}");
                assert_eq!(common::hash_tree(&d), tree_before, "{ctx}: rolled back byte for byte");
                continue;
            }
            // Settle it: alternately the explicit command and the next edit (which also makes the
            // edit when the killed run never got to its journal).
            let (code, r, err) = if journal && i % 2 == 0 {
                json(&s, &["backups", BUILD, "--recover"])
            } else {
                json(&s, &["inject-envd", BUILD, "--drop-snapshot", "--envd", &envd])
            };
            assert_eq!(code, 0, "{ctx}: {err} {r:#}");
            if journal {
                let text = r.to_string();
                assert!(text.contains("completed"), "{ctx}: the run says it completed the commit: {r:#}");
            }
            assert!(!d.join(".tmpl-commit.json").exists(), "{ctx}");
            let after = view(&d, &old);
            {
                assert_eq!(after, View::New, "{ctx}");
                assert_eq!(
                    common::debugfs_cat(&d.join("rootfs.ext4"), "/usr/bin/envd"),
                    std::fs::read(&b.envd).unwrap()
                );
            }
            let (code, f) = finding_ids(&s);
            assert!(!f.iter().any(|x| x.1 == "error"), "{ctx}: {f:?}");
            assert_eq!(code, 0, "{ctx}");
            let left = leftover_names(&d);
            assert!(left.iter().all(|n| n.starts_with(".tmpl-backup-")), "{ctx}: {left:?}");
            if journal {
                // The originals, snapshot included, are in the killed run's backup.
                let backups: Vec<PathBuf> = left.iter().map(|n| d.join(n)).collect();
                assert!(backups.iter().any(|b| sha(&b.join("snapfile")) == old.snapfile), "{ctx}: {left:?}");
            }
        }
    }
    hit.dedup();
    assert_eq!(hit, COMMIT_POINTS, "every point of the commit was reached");
}

/// Item 4/1: a restore is a commit like an edit's: killed at any step it is never misused, verify
/// reports it, and `tmpl backups --recover` completes it (the original build, snapshot included).
#[test]
fn a_restore_killed_at_any_step_is_never_misused_and_is_completed() {
    let points = [
        "before-commit",
        "commit:journal",
        "commit:rootfs.ext4",
        "commit:rootfs.ext4.header",
        "commit:memfile",
        "commit:memfile.header",
        "commit:metadata.json",
        "commit:snapfile",
        "commit:tmpl-manifest.json",
        "commit:synced",
        "commit:cleaned",
    ];
    for point in points {
        let Some((s, b)) = store() else { return };
        with_snapshot_and_header(&s);
        let d = dir(&s);
        let original = Before::of(&d);
        let (code, v, err) = json(&s, &["inject-envd", BUILD, "--drop-snapshot", "--envd", &b.envd.to_string_lossy()]);
        assert_eq!(code, 0, "{err}");
        let backup = PathBuf::from(v["applied"]["backup_dir"].as_str().unwrap());
        let name = backup.file_name().unwrap().to_string_lossy().into_owned();
        let st = cmd(&s)
            .env(FAULT_ENV, format!("kill:{point}"))
            .args(["backups", BUILD, "--restore", &name])
            .status()
            .unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9), "{point}");
        let v = view(&d, &original);
        assert!(!matches!(v, View::Mix(_)), "restore killed at {point}: {v:?}");
        let journal = d.join(".tmpl-commit.json").exists();
        let (_, f) = finding_ids(&s);
        assert_eq!(journal, f.iter().any(|x| x.0 == "edit.interrupted-commit" && x.1 == "error"), "{point}: {f:?}");
        let (code, r, err) = json(&s, &["backups", BUILD, if journal { "--recover" } else { "--clean" }]);
        assert_eq!(code, 0, "{point}: {err} {r:#}");
        if !journal {
            // Killed before its journal: the edited build is untouched, the backup still there.
            assert!(backup.exists(), "{point}");
            continue;
        }
        let now = Before::of(&d);
        assert_eq!(
            (&now.rootfs, &now.header, &now.metadata, &now.memfile, &now.snapfile),
            (&original.rootfs, &original.header, &original.metadata, &original.memfile, &original.snapfile),
            "{point}: completed to the original"
        );
        assert!(leftover_names(&d).iter().all(|n| n.starts_with(".tmpl-backup-")), "{point}");
    }
}

/// Item 3: a process that opens the rootfs after the plan was made (here: while tmpl waits right
/// before its commit) makes the commit refuse with exit 5, naming it; the build is unchanged.
#[test]
fn a_process_opening_the_image_before_the_commit_makes_it_refuse() {
    let Some((s, b)) = store() else { return };
    let d = dir(&s);
    let before = common::hash_tree(&d);
    let envd = b.envd.to_string_lossy().into_owned();
    let (child, pause) = spawn_paused(&s, "before-commit", &["inject-envd", BUILD, "--envd", &envd]);
    let img = d.join("rootfs.ext4");
    let mut holder = Command::new("sh").arg("-c").arg("exec 3<\"$0\"; sleep 60").arg(&img).spawn().unwrap();
    let start = Instant::now();
    while !tmpl::sys::holders(&[&img]).unwrap().iter().any(|h| h.pid == holder.id()) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&pause).unwrap();
    let out = child.wait_with_output().unwrap();
    holder.kill().unwrap();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("nothing was replaced") && err.contains(&format!("process {}", holder.id())), "{err}");
    assert_eq!(common::hash_tree(&d), before, "the build is byte-for-byte as it was");
}

/// Item 5: two concurrent edits of one build: the second is refused at once with exit 5, saying
/// that another tmpl edit holds the build's lock and its pid (not "rootfs in use"); the first
/// completes. A dry run meanwhile is refused the same way.
#[test]
fn a_second_concurrent_edit_names_the_lock_holder() {
    let Some((s, b)) = store() else { return };
    let envd = b.envd.to_string_lossy().into_owned();
    let edit = ["inject-envd", BUILD, "--envd", envd.as_str()];
    let (first, pause) = spawn_paused(&s, "before-commit", &edit);
    let pid = first.id();
    for extra in [None, Some("--dry-run")] {
        let out = cmd(&s).args(edit).args(extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains("another tmpl edit holds the lock") && err.contains(&format!("pid {pid}")), "{err}");
        assert!(err.contains("inject-envd"), "the holder's command line is shown: {err}");
        assert!(!err.contains("in use"), "{err}");
    }
    std::fs::remove_file(&pause).unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Item 4: leftovers are named with their sizes by verify and inspect; `tmpl backups` lists,
/// cleans, restores (transactionally, saving what it replaces) and prunes.
#[test]
fn leftovers_are_named_and_tmpl_backups_lists_cleans_restores_and_prunes() {
    let Some((s, b)) = store() else { return };
    with_snapshot_and_header(&s);
    let d = dir(&s);
    let original = Before::of(&d);
    let errors = |f: &[(String, String, String, String)]| {
        f.iter().filter(|x| x.1 == "error").map(|x| x.0.clone()).collect::<Vec<_>>()
    };
    let original_errors = errors(&finding_ids(&s).1);
    let envd = b.envd.to_string_lossy().into_owned();
    let (code, v, err) = json(&s, &["inject-envd", BUILD, "--drop-snapshot", "--envd", &envd]);
    assert_eq!(code, 0, "{err}");
    let backup = PathBuf::from(v["applied"]["backup_dir"].as_str().unwrap());
    let backup_name = backup.file_name().unwrap().to_string_lossy().into_owned();
    // A run killed after its work copy was verified leaves the work folder.
    let st =
        cmd(&s).env(FAULT_ENV, "kill:after-verify").args(["inject-envd", BUILD, "--envd", &envd]).status().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    let work = leftover_names(&d).into_iter().find(|n| n.starts_with(".tmpl-work-")).expect("a work folder");

    let (code, f) = finding_ids(&s);
    assert_eq!(code, 0, "leftovers are warnings: {f:?}");
    let named = |id: &str, name: &str| {
        f.iter()
            .find(|x| x.0 == id && x.2.contains(name))
            .unwrap_or_else(|| panic!("{id} naming {name}: {f:?}"))
            .clone()
    };
    let bk = named("leftover.backup", &backup_name);
    assert!(bk.1 == "warning" && bk.2.contains("MiB") && bk.3.contains(&format!("tmpl backups {BUILD}")), "{bk:?}");
    let wk = named("leftover.work-folder", &work);
    assert!(wk.2.contains("MiB") && wk.3.contains("--clean"), "{wk:?}");
    let text = String::from_utf8(cmd(&s).args(["verify", BUILD]).output().unwrap().stdout).unwrap();
    assert!(text.contains(&backup_name) && text.contains(&work), "the human report names them: {text}");
    let i = s.inspect(BUILD);
    let kinds: Vec<&str> = i["leftovers"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["backup", "work-folder"], "{i:#}");
    assert!(i["leftovers"][0]["bytes"].as_u64().unwrap() > 1 << 20, "a backup holds a full image: {i:#}");

    let (code, l, _) = json(&s, &["backups", BUILD]);
    assert_eq!(code, 0);
    assert_eq!(l["listing"]["backups"][0]["name"], backup_name.as_str());
    let contents = l["listing"]["backups"][0]["contents"].to_string();
    assert!(contents.contains("snapfile") && contents.contains("rootfs.ext4"), "{contents}");
    assert_eq!(l["listing"]["work_folders"][0]["name"], work.as_str());
    let typed = backups_report(&l);
    assert_eq!((typed.action, typed.listing.backups.len()), (Action::List, 1), "{typed:#?}");

    let (code, c, _) = json(&s, &["backups", BUILD, "--clean"]);
    assert_eq!(code, 0, "{c:#}");
    assert_eq!(leftover_names(&d), vec![backup_name.clone()]);

    // Restore: a dry run changes nothing; the real one brings the snapshot back exactly.
    let before_restore = common::hash_tree(&d);
    let edited = Before::of(&d);
    let (code, r, _) = json(&s, &["backups", BUILD, "--restore", &backup_name, "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(r["restored"]["steps"].as_array().unwrap().last().unwrap()["file"], "tmpl-manifest.json");
    let typed = backups_report(&r);
    assert!(typed.dry_run && typed.action == Action::Restore, "{typed:#?}");
    let steps = typed.restored.expect("a restore plan").steps;
    assert!(steps.iter().any(|s| s.action == StepAction::Restore && s.file == "rootfs.ext4"), "{steps:#?}");
    assert_eq!(common::hash_tree(&d), before_restore);
    let (code, r, err) = json(&s, &["backups", BUILD, "--restore", &backup_name]);
    assert_eq!(code, 0, "{err} {r:#}");
    let now = Before::of(&d);
    assert_eq!(
        (&now.rootfs, &now.header, &now.metadata, &now.memfile, &now.snapfile),
        (&original.rootfs, &original.header, &original.metadata, &original.memfile, &original.snapfile)
    );
    assert!(!d.join("tmpl-manifest.json").exists(), "the original had no manifest");
    assert!(!backup.exists(), "the restored backup is used up");
    let saved = PathBuf::from(r["restored"]["saved_as"].as_str().unwrap());
    assert_eq!(sha(&saved.join("rootfs.ext4")), edited.rootfs, "what the restore replaced is kept");
    assert!(r["caches"]["status"].is_string());
    assert!(backups_report(&r).caches.is_some());
    let (_, f) = finding_ids(&s);
    assert_eq!(errors(&f), original_errors, "verify sees the original build again: {f:?}");
    // Restore the restore: the edited state again.
    let saved_name = saved.file_name().unwrap().to_string_lossy().into_owned();
    let (code, _, err) = json(&s, &["backups", BUILD, "--restore", &saved_name]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(Before::of(&d).rootfs, edited.rootfs);

    let (code, p, _) = json(&s, &["backups", BUILD, "--prune", "--keep", "0"]);
    assert_eq!(code, 0);
    assert_eq!(p["pruned"]["removed"].as_array().unwrap().len(), 1, "{p:#}");
    assert_eq!(backups_report(&p).pruned.map(|p| p.removed.len()), Some(1));
    assert!(leftover_names(&d).is_empty());
    // Names that are not backups of the build are refused before anything is touched.
    let (code, _, _) = json(&s, &["backups", BUILD, "--restore", "../../etc"]);
    assert_eq!(code, 2);
}

/// Item 4 (forks): a killed `--fork` leaves `.tmpl-fork-<id>.partial`; `verify --all` names it
/// with its size, verify of the source build reports it, and `tmpl backups SRC --clean` or the
/// next fork removes it.
#[test]
fn an_interrupted_fork_is_named_and_cleaned() {
    let Some((s, b)) = store() else { return };
    let envd = b.envd.to_string_lossy().into_owned();
    let versions = ["--kernel-version", "vmlinux-6.1.158", "--firecracker-version", "v1.14.1_431f1fc"];
    let fork = |id: &str, fault: Option<&str>| {
        let mut c = cmd(&s);
        if let Some(f) = fault {
            c.env(FAULT_ENV, f);
        }
        c.args(["inject-envd", BUILD, "--envd", &envd, "--fork-id", id]).args(versions).output().unwrap()
    };
    let new = "f5000000-0000-4000-8000-000000000005";
    let out = fork(new, Some("kill:after-verify"));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));
    let partial = format!(".tmpl-fork-{new}.partial");
    assert!(s.w.root.join(&partial).is_dir());
    let text = String::from_utf8(cmd(&s).args(["verify", "--all"]).output().unwrap().stdout).unwrap();
    assert!(text.contains(&partial) && text.contains("MiB") && text.contains("interrupted --fork"), "{text}");
    assert!(!text.contains("other entr"), "the partial fork is named, not counted: {text}");
    let (_, f) = finding_ids(&s);
    assert!(f.iter().any(|x| x.0 == "leftover.fork" && x.2.contains(&partial)), "{f:?}");
    let (code, c, _) = json(&s, &["backups", BUILD, "--clean"]);
    assert_eq!(code, 0);
    assert!(c["notes"].to_string().contains("interrupted --fork"), "{c:#}");
    assert!(!s.w.root.join(&partial).exists());
    // Killed again; the next fork (to the same ID) takes the dead one's place.
    let out = fork(new, Some("kill:after-verify"));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));
    let out = fork(new, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.w.root.join(&partial).exists());
    assert!(!s.w.root.join(new).join(tmpl::vocab::files::FORK_OWNER).exists());
    let v = common::tmpl().arg("--storage").arg(&s.w.root).args(["--json", "verify", new]).output().unwrap();
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["builds"][0]["tally"]["errors"], 0, "{v:#}");
}

/// A node whose orchestrator runs, with the build in its template cache.
struct Node {
    _dir: tempfile::TempDir,
    base: PathBuf,
    lock: PathBuf,
}

impl Node {
    fn new() -> Node {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("orchestrator");
        let entry = base.join("template").join(BUILD).join("cache/0f0f0f0f-0000-4000-8000-000000000000");
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::write(entry.join("rootfs.ext4"), vec![7u8; 8192]).unwrap();
        std::fs::create_dir_all(base.join("build")).unwrap();
        std::fs::create_dir_all(base.join("sandbox")).unwrap();
        let lock = d.path().join("orchestrator.lock");
        std::fs::write(&lock, b"").unwrap();
        Node { base, lock, _dir: d }
    }

    fn env(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ORCHESTRATOR_BASE_PATH", &self.base)
            .env("ORCHESTRATOR_LOCK_PATH", &self.lock)
            .env("SNAPSHOT_CACHE_DIR", self.base.join("snapshot-cache"));
    }
}

/// Item 14: an in-place edit (and a restore) on a node whose orchestrator runs changes the
/// build but cannot purge this node's caches: exit 6, saying the node serves the old build until
/// the orchestrator restarts, how (Nomad, systemd), and that --fork is the way on a live node.
#[test]
fn an_edit_under_a_running_orchestrator_exits_6_and_says_what_to_do() {
    let Some((s, b)) = store() else { return };
    let node = Node::new();
    let held = std::fs::File::open(&node.lock).unwrap();
    held.lock().unwrap();
    let envd = b.envd.to_string_lossy().into_owned();
    let mut c = cmd(&s);
    node.env(&mut c);
    let out = c.args(["inject-envd", BUILD, "--envd", &envd]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(tmpl::exit_code::NOT_IN_EFFECT as i32), "{text}");
    for part in ["OLD build", "nomad node drain -enable -self", "systemctl stop orchestrator", "--fork"] {
        assert!(text.contains(part), "{part:?} missing: {text}");
    }
    // The change itself was made.
    assert_eq!(common::debugfs_cat(&dir(&s).join("rootfs.ext4"), "/usr/bin/envd"), std::fs::read(&b.envd).unwrap());
    assert!(node.base.join("template").join(BUILD).exists(), "the running orchestrator's cache was left alone");
    // The same for a restore.
    let backup = leftover_names(&dir(&s)).into_iter().find(|n| n.starts_with(".tmpl-backup-")).unwrap();
    let mut c = cmd(&s);
    node.env(&mut c);
    let out = c.args(["--json", "backups", BUILD, "--restore", &backup]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["caches"]["in_effect"], false);
    // With the orchestrator stopped (it removes its lock file on a clean exit), the purge
    // happens and the edit exits 0.
    held.unlock().unwrap();
    std::fs::remove_file(&node.lock).unwrap();
    let mut c = cmd(&s);
    node.env(&mut c);
    let out = c.args(["inject-envd", BUILD, "--envd", &envd]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!node.base.join("template").join(BUILD).exists());
}

/// Item 15: a header the orchestrator cannot read either (truncated, cut inside a mapping, a
/// failed LZ4 checksum) does not block an in-place edit of another build; one it might read (a
/// newer version) does, and a dry run then prints the plan before the refusal.
#[test]
fn unreadable_headers_block_only_when_the_orchestrator_might_read_them() {
    let Some((s, b)) = store() else { return };
    let envd = b.envd.to_string_lossy().into_owned();
    let other = s.w.root.join("c1000000-0000-4000-8000-000000000003");
    std::fs::create_dir(&other).unwrap();
    let good = tmpl::header::encode(&tmpl::header::headerless(BuildId::parse(BUILD).unwrap(), 1 << 20, 4096));
    for (what, bytes) in [
        ("truncated", good[..40].to_vec()),
        ("cut inside a mapping", {
            let mut v = tmpl::header::encode(&{
                let mut h = tmpl::header::headerless(BuildId::parse(BUILD).unwrap(), 1 << 20, 4096);
                h.synthesized = false;
                h
            });
            v.truncate(v.len() - 3);
            v
        }),
    ] {
        std::fs::write(other.join("rootfs.ext4.header"), &bytes).unwrap();
        let (code, v, err) = json(&s, &["inject-envd", BUILD, "--envd", &envd, "--dry-run"]);
        assert_eq!(code, 0, "{what}: {err} {v:#}");
        assert!(v["plan"]["warnings"].to_string().contains("cannot read it either"), "{what}: {v:#}");
    }
    // Version 9: a future orchestrator may read it; whether it maps BUILD is unknown.
    let mut future = good.clone();
    future[0] = 9;
    std::fs::write(other.join("rootfs.ext4.header"), &future).unwrap();
    let before = common::hash_tree(&dir(&s));
    let (code, v, _) = json(&s, &["inject-envd", BUILD, "--envd", &envd, "--dry-run"]);
    assert_eq!(code, 5, "{v:#}");
    assert!(!v["plan"]["changes"].as_array().unwrap().is_empty(), "the plan is shown: {v:#}");
    assert!(v["plan"]["refused"]["reasons"].to_string().contains("version 9"), "{v:#}");
    let text =
        String::from_utf8(cmd(&s).args(["inject-envd", BUILD, "--envd", &envd, "--dry-run"]).output().unwrap().stdout)
            .unwrap();
    let (plan_at, refused_at) = (text.find("changes").unwrap(), text.find("refused").unwrap());
    assert!(plan_at < refused_at, "plan first, then the refusal: {text}");
    let (code, _, err) = json(&s, &["inject-envd", BUILD, "--envd", &envd]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(common::hash_tree(&dir(&s)), before);
}

/// Item 15 on the demo storage: its damaged headers (cut inside a mapping, a flipped bit in a V4
/// LZ4 frame) no longer block in-place edits of its full builds: the legacy full build can be
/// edited in place again (the plan warns about the two headers), and a real run edits it.
#[test]
fn the_demo_storage_allows_in_place_edits_again() {
    let Some(b) = bins() else { return };
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("demo");
    let out = common::tmpl().args(["demo", "--dir"]).arg(&store).output().unwrap();
    assert!(out.status.success());
    let legacy = tmpl::demo::ids::LEGACY;
    let run = |dry: bool| {
        let mut c = common::tmpl();
        c.arg("--storage")
            .arg(&store)
            .args(["--json", "inject-envd", legacy, "--drop-snapshot", "--envd"])
            .arg(&b.envd);
        c.args(["--kernel-version", "vmlinux-6.1.158", "--firecracker-version", "v1.14.1_431f1fc"]);
        if dry {
            c.arg("--dry-run");
        }
        let out = c.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), v)
    };
    let (code, v) = run(true);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["plan"]["target"]["kind"], "in-place");
    let warnings = v["plan"]["warnings"].to_string();
    for damaged in [tmpl::demo::ids::TRUNCATED_HEADER, tmpl::demo::ids::LZ4_CHECKSUM] {
        assert!(warnings.contains(damaged), "{damaged} is named as ignored: {warnings}");
    }
    let (code, v) = run(false);
    assert_eq!(code, 0, "{v:#}");
    let cat = common::cat(&store, legacy, "/usr/bin/envd");
    assert_eq!(cat, std::fs::read(&b.envd).unwrap());
}

/// Item 16: `--fork` is a plain flag, so it cannot swallow BUILD written after it; the new ID is
/// `--fork-id`.
#[test]
fn fork_before_build_keeps_the_build_argument() {
    let Some((s, b)) = store() else { return };
    let envd = b.envd.to_string_lossy().into_owned();
    let versions = ["--kernel-version", "k", "--firecracker-version", "f"];
    let (code, v, err) =
        json(&s, &[&["inject-envd", "--fork", BUILD, "--envd", &envd, "--dry-run"][..], &versions].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["plan"]["build_id"], BUILD);
    assert_eq!(v["plan"]["target"]["kind"], "fork");
    let new = "f6000000-0000-4000-8000-000000000006";
    let (code, v, _) =
        json(&s, &[&["inject-envd", BUILD, "--fork-id", new, "--envd", &envd, "--dry-run"][..], &versions].concat());
    assert_eq!(code, 0);
    assert_eq!(v["plan"]["target"]["new_build_id"], new);
    // The old spelling is a usage error now, not a fork of the wrong build.
    let out = cmd(&s).args(["inject-envd", "--fork", new, BUILD, "--envd", &envd, "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
