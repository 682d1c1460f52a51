//! The template CI pipeline, `scripts/template-ci.sh`, run end to end as CI runs it: on the demo
//! storage (`tmpl demo`) and on full images built here with `mkfs.ext4 -d`, with a static test
//! envd compiled here (`common::fake_envd_source`), the real tmpl binary, real debugfs and, when a
//! kernel is available (CI: TMPL_TEST_KERNEL), a real boot under QEMU.
//!
//! Oracles: `tmpl verify` run separately on the result, `debugfs -R cat` of the new image against
//! the envd file, the storage listing and file hashes before and after, the boot's serial console.

mod common;
mod guest_support;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tmpl::demo::ids;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/template-ci.sh");
const TMPL: &str = env!("CARGO_BIN_EXE_tmpl");
const BUILD: &str = "a1000000-0000-4000-8000-000000000001";

/// Static helpers for the images: the fake envd (current flags; prints "envd running" and stays
/// alive), an envd that exits at once, and a multi-call `mount`/`mkdir`/`sleep` for the wrapper.
struct Bins {
    _dir: tempfile::TempDir,
    envd: PathBuf,
    exiting_envd: PathBuf,
    toolbox: PathBuf,
}

const EXITING_ENVD: &str = r#"#include <stdio.h>
static const char *FLAGS[] = { "port", "version", "commit", "isnotfc", "cgroup-root", "verbose", "no-cgroups", "resume-handover", 0 };
int main(int argc, char **argv) {
  if (argc > 1000) for (int i = 0; FLAGS[i]; i++) puts(FLAGS[i]);
  fprintf(stderr, "envd: cannot start: no network\n");
  return 1;
}
"#;

/// `mount -t TYPE [-o OPTS] SRC DIR`, `mkdir [-p] DIR...`, `sleep N`, chosen by argv[0]: what the
/// wrapper inject-envd writes needs to bring up /proc, /sys and /dev (no busybox on the runner).
const TOOLBOX: &str = r#"#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
  const char *name = strrchr(argv[0], '/'); name = name ? name + 1 : argv[0];
  if (!strcmp(name, "sleep")) { if (argc > 1) sleep((unsigned)atoi(argv[1])); return 0; }
  if (!strcmp(name, "mkdir")) { for (int i = 1; i < argc; i++) if (argv[i][0] != '-') mkdir(argv[i], 0755); return 0; }
  if (!strcmp(name, "mount")) {
    const char *type = 0, *pos[2] = { 0, 0 }; char data[256] = ""; unsigned long flags = 0; int n = 0;
    for (int i = 1; i < argc; i++) {
      if (!strcmp(argv[i], "-t") && i + 1 < argc) type = argv[++i];
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
        char opts[256]; strncpy(opts, argv[++i], sizeof opts - 1); opts[sizeof opts - 1] = 0;
        for (char *o = strtok(opts, ","); o; o = strtok(0, ",")) {
          if (!strcmp(o, "nosuid")) flags |= MS_NOSUID;
          else if (!strcmp(o, "nodev")) flags |= MS_NODEV;
          else { if (data[0]) strncat(data, ",", sizeof data - strlen(data) - 1); strncat(data, o, sizeof data - strlen(data) - 1); }
        }
      } else if (n < 2) pos[n++] = argv[i];
    }
    if (n != 2 || !type) { fprintf(stderr, "mount: usage: mount -t TYPE [-o OPTS] SRC DIR\n"); return 1; }
    if (mount(pos[0], pos[1], type, flags, data[0] ? data : 0)) { fprintf(stderr, "mount %s: %s\n", pos[1], strerror(errno)); return 32; }
    return 0;
  }
  fprintf(stderr, "%s: not in this toolbox\n", name);
  return 127;
}
"#;

fn bins() -> Option<&'static Bins> {
    static BINS: OnceLock<Option<Bins>> = OnceLock::new();
    BINS.get_or_init(|| {
        for tool in ["gcc", "mkfs.ext4", "debugfs", "e2fsck", "jq"] {
            if !common::require(tool) {
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let envd = common::static_binary(
            dir.path(),
            "envd",
            &common::fake_envd_source(
                "0.5.1",
                &["port", "version", "commit", "isnotfc", "cgroup-root", "verbose", "no-cgroups", "resume-handover"],
            ),
        );
        let exiting_envd = common::static_binary(dir.path(), "envd-exits", EXITING_ENVD);
        let toolbox = common::static_binary(dir.path(), "toolbox", TOOLBOX);
        Some(Bins { _dir: dir, envd, exiting_envd, toolbox })
    })
    .as_ref()
}

/// One test's scratch space: the work directory and node-cache roots that point into it (an
/// in-place edit purges this node's caches; the machine's own /orchestrator stays out of it).
struct Scratch {
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout must be exactly one JSON document.
    fn summary(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    fn step<'a>(v: &'a Value, name: &str) -> &'a Value {
        v["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name}: {v:#}"))
    }
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `tmpl demo --dir` into `<scratch>/demo`.
    fn demo(&self) -> PathBuf {
        let d = self.path("demo");
        common::tmpl().args(["demo", "-q", "--dir"]).arg(&d).assert().success();
        d
    }

    /// Run the pipeline with `args` (after `--tmpl`), no kernel from the environment unless
    /// `envs` sets one, and the node caches inside the scratch directory.
    fn run<I, S>(&self, args: I, envs: &[(&str, &OsStr)]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        // bash by its path: some tests give the script a PATH of their own.
        let mut c = Command::new(tmpl::tools::find("bash", "bash").unwrap());
        c.arg(SCRIPT).arg("--tmpl").arg(TMPL).args(args);
        for k in [
            "TMPL_KERNEL",
            "TMPL_STORAGE",
            "SHARED_CHUNK_CACHE_PATH",
            "TEMPLATE_CACHE_DIR",
            "DEFAULT_CACHE_DIR",
            "SANDBOX_CACHE_DIR",
        ] {
            c.env_remove(k);
        }
        c.env("ORCHESTRATOR_BASE_PATH", self.path("orchestrator"))
            .env("ORCHESTRATOR_LOCK_PATH", self.path("orchestrator.lock"))
            .env("SNAPSHOT_CACHE_DIR", self.path("snapshot-cache"));
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Build folders of a storage.
fn listing(storage: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(storage)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn verify(storage: &Path, id: &str) -> (i32, Value) {
    let out = common::tmpl().arg("--storage").arg(storage).args(["--json", "verify", id]).output().unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

fn is_uuid(s: &str) -> bool {
    tmpl::vocab::BuildId::parse(s).is_ok() && s == s.to_lowercase()
}

/// A storage with one full image (BUILD) whose /sbin/init is a hand-written wrapper passing envd
/// the removed `-debug` flag, with a working shell and the toolbox, and `envd` as /usr/bin/envd.
fn wrapper_storage(s: &Scratch, b: &Bins, envd: &Path) -> PathBuf {
    let tree = common::fixtures::Tree::new(s.dir.path());
    tree.shell().copy("/usr/bin/envd", envd).file("/sbin/init", tmpl::demo::hand_written_wrapper("-debug"), 0o755);
    tree.copy("/bin/toolbox", &b.toolbox)
        .link("/bin/mount", "toolbox")
        .link("/bin/mkdir", "toolbox")
        .link("/bin/sleep", "toolbox");
    let storage = s.path("store");
    std::fs::create_dir_all(storage.join(BUILD)).unwrap();
    common::mkfs(&tree.root, &storage.join(BUILD).join("rootfs.ext4"), 24);
    // A filesystem-only build (metadata v2 names its kernel and Firecracker, as E2B writes it).
    let w = tmpl::demo::StorageWriter::new(&storage).unwrap();
    w.metadata(&tmpl::vocab::BuildId::parse(BUILD).unwrap(), "v1.14.1_431f1fc", true).unwrap();
    storage
}

#[test]
fn healthy_path_forks_the_envd_flag_build_into_a_clean_new_build() {
    let Some(b) = bins() else { return };
    let s = Scratch::new();
    let storage = s.demo();
    let old = ids::ENVD_FLAG;
    let before = listing(&storage);
    let old_files = common::hash_tree(&storage.join(old));
    let (code, _) = verify(&storage, old);
    assert_eq!(code, 1, "the demo build has wrapper.envd-flag");

    let work = s.path("work");
    let r =
        s.run(
            [OsStr::new("--storage"), storage.as_os_str(), OsStr::new("--envd"), b.envd.as_os_str()]
                .into_iter()
                .chain([OsStr::new("--no-boot-test"), OsStr::new("--work-dir"), work.as_os_str(), OsStr::new(old)]),
            &[],
        );
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v = r.summary();
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["command"], "template-ci");
    assert_eq!(v["build_id"], old);
    assert_eq!(v["target"], "fork");
    assert_eq!(v["failed_step"], Value::Null);
    let names: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["verify-source", "inject-envd", "verify-result", "boot-test"]);

    // verify-source found the error inject-envd repairs and went on.
    let vs = Run::step(&v, "verify-source");
    assert_eq!(vs["status"], "proceeded");
    assert_eq!(vs["exit_code"], 1);
    assert_eq!(vs["repairable_errors"], serde_json::json!(["wrapper.envd-flag"]));
    assert_eq!(vs["blocking_errors"], serde_json::json!([]));
    assert_eq!(vs["report"]["command"], "verify");
    // Every step that ran: its command, argv, a duration and its report, embedded and on disk.
    for name in ["verify-source", "inject-envd", "verify-result"] {
        let st = Run::step(&v, name);
        assert!(st["command"].as_str().unwrap().starts_with(TMPL), "{st:#}");
        assert_eq!(st["argv"][0], TMPL);
        assert!(st["duration_ms"].is_u64());
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(st["report_path"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(on_disk, st["report"], "{name}: the embedded report is the step's JSON");
        assert!(Path::new(st["report_path"].as_str().unwrap()).starts_with(&work));
    }
    let inj = Run::step(&v, "inject-envd");
    assert_eq!(inj["status"], "ok");
    assert!(inj["argv"].as_array().unwrap().iter().any(|a| a == "--fork"), "fork is the default: {inj:#}");

    // The new build: a fresh ID, the only new folder, clean for verify, holding our envd.
    let new = v["new_build_id"].as_str().unwrap();
    assert!(is_uuid(new) && new != old, "{new}");
    assert_eq!(inj["report"]["applied"]["build_id"], new);
    let mut after = before.clone();
    after.push(new.to_string());
    after.sort();
    assert_eq!(listing(&storage), after);
    let (code, rep) = verify(&storage, new);
    assert_eq!(code, 0, "tmpl verify accepts the new build: {rep:#}");
    assert_eq!(Run::step(&v, "verify-result")["report"], rep, "verify-result saw what verify sees");
    let image = storage.join(new).join("rootfs.ext4");
    assert_eq!(common::debugfs_cat(&image, "/usr/bin/envd"), std::fs::read(&b.envd).unwrap());
    let init = String::from_utf8(common::debugfs_cat(&image, "/sbin/init")).unwrap();
    assert!(init.contains("tmpl-init: starting envd") && !init.contains("-debug"), "{init}");
    assert!(common::fsck_clean(&image));
    // The old build is untouched and still fails.
    assert_eq!(common::hash_tree(&storage.join(old)), old_files);
    assert_eq!(verify(&storage, old).0, 1);

    // boot-test was skipped as asked; the purge is for the old build.
    let bt = Run::step(&v, "boot-test");
    assert_eq!(bt["status"], "skipped");
    assert_eq!(bt["note"], "--no-boot-test");
    let dispatch = format!("nomad job dispatch -meta build_ids={old} tmpl-purge-cache");
    assert_eq!(v["purge"]["command"], dispatch.as_str());
    assert_eq!(v["purge"]["build_ids"], serde_json::json!([old]));
    assert!(v["purge"]["when"].as_str().unwrap().contains(new));
    // Human progress and the dispatch on stderr; the same summary in the work directory.
    assert!(r.stderr.contains("[1/4] verify-source") && r.stderr.contains(&dispatch), "{}", r.stderr);
    assert_eq!(v["work_dir"], work.canonicalize().unwrap().to_str().unwrap());
    let saved: Value = serde_json::from_slice(&std::fs::read(work.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved, v);
}

#[test]
fn errors_inject_envd_does_not_repair_stop_at_verify_with_its_exit_code() {
    let Some(b) = bins() else { return };
    let s = Scratch::new();
    let storage = s.demo();
    let before = listing(&storage);
    for (id, finding) in [
        (ids::TRUNCATED_HEADER, "header.invalid"),
        (ids::CRC, "snapfile.crc-mismatch"),
        (ids::MISSING_ANCESTOR, "header.missing-build"),
        (ids::COPIED, "metadata.build-id-mismatch"),
    ] {
        let (expected, _) = verify(&storage, id);
        assert_ne!(expected, 0);
        let r = s.run(
            [OsStr::new("--storage"), storage.as_os_str(), OsStr::new("--envd"), b.envd.as_os_str(), OsStr::new(id)],
            &[],
        );
        assert_eq!(r.code, expected, "{id}: the pipeline exits with verify's code\n{}", r.stderr);
        let v = r.summary();
        assert_eq!(v["ok"], false);
        assert_eq!(v["exit_code"], expected);
        assert_eq!(v["failed_step"], "verify-source");
        assert_eq!(v["new_build_id"], Value::Null);
        assert_eq!(v["purge"], Value::Null);
        assert_eq!(v["steps"].as_array().unwrap().len(), 1, "fail fast: {v:#}");
        let st = &v["steps"][0];
        assert_eq!(st["status"], "failed");
        assert!(st["blocking_errors"].as_array().unwrap().iter().any(|e| e == finding), "{id}: {st:#}");
        assert!(r.stderr.contains("FAILED") && r.stderr.contains(finding), "{}", r.stderr);
    }
    assert_eq!(listing(&storage), before, "no build was created");
}

#[test]
fn a_refused_edit_propagates_inject_envds_exit_code() {
    let Some(b) = bins() else { return };
    let s = Scratch::new();
    let storage = s.demo();
    let before = listing(&storage);
    let old_files = common::hash_tree(&storage.join(ids::ENVD_FLAG));
    let base = || [OsStr::new("--storage"), storage.as_os_str(), OsStr::new("--envd"), b.envd.as_os_str()];

    // An envd argument this envd does not accept: inject-envd refuses (5) before writing.
    let r = s.run(
        base().into_iter().chain([OsStr::new("--envd-arg"), OsStr::new("-debug"), OsStr::new(ids::ENVD_FLAG)]),
        &[],
    );
    assert_eq!(r.code, 5, "{}", r.stderr);
    let v = r.summary();
    assert_eq!(v["failed_step"], "inject-envd");
    assert_eq!(v["exit_code"], 5);
    let names: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["verify-source", "inject-envd"]);
    let st = Run::step(&v, "inject-envd");
    assert_eq!(st["exit_code"], 5);
    assert_eq!(st["report"]["error"]["kind"], "refused");
    assert!(st["argv"].as_array().unwrap().iter().any(|a| a == "--envd-arg=-debug"), "{st:#}");
    assert!(st["note"].as_str().unwrap().contains("envd would exit with status 2"), "{st:#}");

    // --in-place on a build with a memory snapshot and a compacted layer: refused by the guards.
    let r = s.run(base().into_iter().chain([OsStr::new("--in-place"), OsStr::new(ids::ENVD_FLAG)]), &[]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    let v = r.summary();
    assert_eq!(v["target"], "in-place");
    assert_eq!(v["failed_step"], "inject-envd");
    let argv = &Run::step(&v, "inject-envd")["argv"];
    assert!(!argv.as_array().unwrap().iter().any(|a| a == "--fork"), "{argv}");

    assert_eq!(listing(&storage), before, "no build was created");
    assert_eq!(common::hash_tree(&storage.join(ids::ENVD_FLAG)), old_files, "the build is unchanged");
}

#[test]
fn in_place_repairs_a_full_image_and_asks_for_the_purge_now() {
    let Some(b) = bins() else { return };
    let s = Scratch::new();
    let storage = wrapper_storage(&s, b, &b.envd);
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            b.envd.as_os_str(),
            OsStr::new("--in-place"),
            OsStr::new("--no-boot-test"),
            OsStr::new(BUILD),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.summary();
    assert_eq!(v["new_build_id"], BUILD, "in place keeps the build ID");
    assert_eq!(listing(&storage), [BUILD]);
    assert_eq!(verify(&storage, BUILD).0, 0);
    let init = String::from_utf8(common::debugfs_cat(&storage.join(BUILD).join("rootfs.ext4"), "/sbin/init")).unwrap();
    assert!(init.contains("tmpl-init: starting envd"), "{init}");
    let backups = std::fs::read_dir(storage.join(BUILD))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmpl-backup-"))
        .count();
    assert_eq!(backups, 1, "inject-envd kept the original rootfs");
    assert!(v["purge"]["when"].as_str().unwrap().starts_with("now"), "{v:#}");
    assert_eq!(v["purge"]["command"], format!("nomad job dispatch -meta build_ids={BUILD} tmpl-purge-cache"));
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let s = Scratch::new();
    // A stand-in tmpl that records every call: validation must not call it.
    let calls = s.path("calls");
    let fake = s.path("fake-tmpl");
    std::fs::write(&fake, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 0\n", calls.display())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let envd = s.path("envd");
    std::fs::write(&envd, b"\x7fELF").unwrap();
    let storage = s.path("store");
    std::fs::create_dir_all(storage.join(BUILD)).unwrap();
    let not_exec = s.path("not-exec");
    std::fs::write(&not_exec, b"").unwrap();
    let (e, st, ne) = (envd.to_str().unwrap(), storage.to_str().unwrap(), not_exec.to_str().unwrap());
    let other = "11111111-2222-4333-8444-555555555555";
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec![], 2),
        (vec!["--bogus", "--envd", e, BUILD], 2),
        (vec![BUILD], 2),
        (vec!["--envd"], 2),
        (vec!["--envd", e, BUILD, other], 2),
        (vec!["--envd", e, "--as", "magic", BUILD], 2),
        (vec!["--envd", e, "--fork", "--in-place", BUILD], 2),
        (vec!["--envd", e, "not-a-uuid"], 3),
        (vec!["--envd", e, "../etc"], 3),
        (vec!["--envd", e, "A1000000-0000-4000-8000-000000000001"], 3),
        (vec!["--envd", "/nonexistent/envd", BUILD], 3),
        (vec!["--envd", e, "--kernel", "/nonexistent/vmlinuz", BUILD], 3),
        (vec!["--envd", e, "--storage", "/nonexistent/store", BUILD], 3),
        (vec!["--envd", e, "--storage", st, other], 3),
    ];
    for (i, (args, code)) in cases.iter().enumerate() {
        let work = s.path(&format!("work-{i}"));
        let mut c = Command::new("bash");
        c.arg(SCRIPT).arg("--tmpl").arg(&fake).arg("--work-dir").arg(&work).args(args);
        c.env_remove("TMPL_KERNEL").env_remove("TMPL_STORAGE");
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert!(stderr.starts_with("template-ci: "), "{args:?}: {stderr}");
        assert!(!work.exists(), "{args:?}: no work directory before validation passed");
    }
    // A --tmpl that is not executable is invalid input too.
    let out =
        Command::new("bash").arg(SCRIPT).args(["--tmpl", ne, "--envd", e, "--storage", st, BUILD]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!calls.exists(), "tmpl was called: {}", std::fs::read_to_string(&calls).unwrap_or_default());
    // --help is not an error.
    let out = Command::new("bash").arg(SCRIPT).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--no-boot-test"));
}

#[test]
fn boot_test_step_boots_the_injected_envd() {
    let Some(b) = bins() else { return };
    let Some(k) = common::test_kernel() else { return };
    let _turn = common::vm_turn();
    let s = Scratch::new();
    let storage = wrapper_storage(&s, b, &b.envd);
    let work = s.path("work");
    // The kernel comes from TMPL_KERNEL, as in CI jobs; the boot is bounded.
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            b.envd.as_os_str(),
            OsStr::new("--work-dir"),
            work.as_os_str(),
            OsStr::new("--boot-arg=--timeout=60"),
            OsStr::new(BUILD),
        ],
        &[("TMPL_KERNEL", k.as_os_str())],
    );
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v = r.summary();
    assert_eq!(v["ok"], true);
    let bt = Run::step(&v, "boot-test");
    assert_eq!(bt["status"], "ok", "{bt:#}");
    assert_eq!(bt["exit_code"], 0);
    assert_eq!(bt["report"]["verdict"], "ok");
    assert_eq!(bt["report"]["build_id"], v["new_build_id"]);
    assert!(bt["report"]["marker"]["text"].as_str().unwrap().starts_with("tmpl-init: starting envd"), "{bt:#}");
    let argv = bt["argv"].as_array().unwrap();
    assert!(argv.windows(2).any(|w| w[0] == "--kernel" && w[1] == k.to_str().unwrap()), "{argv:?}");
    assert!(argv.iter().any(|a| a == "--timeout=60"), "--boot-arg passes through: {argv:?}");
    // The console proves the injected envd itself ran (it prints this and stays alive).
    let console = std::fs::read_to_string(bt["console_path"].as_str().unwrap()).unwrap();
    assert!(console.contains("envd running"), "{console}");
    assert!(!console.contains("envd exited"), "{console}");
}

#[test]
fn a_failed_boot_fails_the_pipeline() {
    let Some(b) = bins() else { return };
    let Some(k) = common::test_kernel() else { return };
    let _turn = common::vm_turn();
    let s = Scratch::new();
    let storage = wrapper_storage(&s, b, &b.envd);
    // envd as PID 1 that exits at once: the kernel panics ("Attempted to kill init!").
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            b.exiting_envd.as_os_str(),
            OsStr::new("--as"),
            OsStr::new("init"),
            OsStr::new("--kernel"),
            k.as_os_str(),
            OsStr::new("--boot-arg=--timeout=60"),
            OsStr::new(BUILD),
        ],
        &[],
    );
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v = r.summary();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failed_step"], "boot-test");
    assert_eq!(v["purge"], Value::Null, "nothing to purge for a build that does not boot");
    let bt = Run::step(&v, "boot-test");
    assert_eq!(bt["status"], "failed");
    assert_eq!(bt["report"]["verdict"], "panic", "{bt:#}");
    // The new build is kept for inspection and named.
    let new = v["new_build_id"].as_str().unwrap();
    assert!(storage.join(new).is_dir());
    assert!(v["note"].as_str().unwrap().contains(new));
}

#[test]
fn kernel_unavailable_skips_the_boot_test_step() {
    let Some(b) = bins() else { return };
    if !common::require("qemu-system-x86_64") {
        return;
    }
    let has_boot_kernels = std::fs::read_dir("/boot")
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
        .unwrap_or(false);
    if has_boot_kernels {
        common::skip("/boot has kernels, so boot-test finds one here (the no-QEMU test covers skipping)");
        return;
    }
    let s = Scratch::new();
    let storage = s.demo();
    let empty = s.path("no-kernels");
    std::fs::create_dir_all(&empty).unwrap();
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            b.envd.as_os_str(),
            OsStr::new(ids::ENVD_FLAG),
        ],
        &[("HOST_KERNELS_DIR", empty.as_os_str())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.summary();
    assert_eq!(v["ok"], true);
    let bt = Run::step(&v, "boot-test");
    assert_eq!(bt["status"], "skipped", "{bt:#}");
    assert_eq!(bt["exit_code"], 4, "boot-test ran and found no kernel");
    assert_eq!(bt["report"]["error"]["kind"], "environment");
    let note = bt["note"].as_str().unwrap();
    assert!(note.contains("no kernel") && note.contains(empty.to_str().unwrap()), "{note}");
    assert!(r.stderr.contains("boot-test: skipped"), "{}", r.stderr);
}

#[test]
fn without_qemu_boot_test_is_skipped_unless_a_kernel_was_asked_for() {
    let Some(b) = bins() else { return };
    let s = Scratch::new();
    let storage = s.demo();
    // A PATH with only what the script itself runs (tmpl is given by path; debugfs and e2fsck are
    // found in /usr/sbin by tmpl): no QEMU.
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["jq", "mkdir", "mktemp", "cat", "rm"] {
        let p = tmpl::tools::find(tool, "coreutils").unwrap();
        std::os::unix::fs::symlink(p, bin.join(tool)).unwrap();
    }
    let base = || [OsStr::new("--storage"), storage.as_os_str(), OsStr::new("--envd"), b.envd.as_os_str()];
    let r = s.run(base().into_iter().chain([OsStr::new(ids::ENVD_FLAG)]), &[("PATH", bin.as_os_str())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.summary();
    let bt = Run::step(&v, "boot-test");
    assert_eq!(bt["status"], "skipped", "{bt:#}");
    assert!(bt["note"].as_str().unwrap().contains("qemu-system-x86_64 not found"), "{bt:#}");

    // With --kernel the boot-test is required: no QEMU fails the pipeline with boot-test's 4.
    let r = s.run(
        base().into_iter().chain([OsStr::new("--kernel"), b.envd.as_os_str(), OsStr::new(ids::ENVD_FLAG)]),
        &[("PATH", bin.as_os_str())],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let v = r.summary();
    assert_eq!(v["failed_step"], "boot-test");
    assert_eq!(Run::step(&v, "boot-test")["status"], "failed");
    assert!(v["note"].as_str().unwrap().contains("kept for inspection"), "{v:#}");
}

#[test]
fn script_is_shellcheck_clean() {
    if !common::require("shellcheck") {
        return;
    }
    let out = Command::new("shellcheck").arg(SCRIPT).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The example workflow (templates/ci/) is not run by our CI; check that it still calls the
/// script with options the script has, and does what its comments promise.
#[test]
fn example_workflow_uses_the_scripts_options() {
    let wf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/ci/template-ci.yml")).unwrap();
    let help = Command::new("bash").arg(SCRIPT).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "workflow_dispatch:",
        "build_id:",
        "envd_url:",
        "self-hosted",
        "qemu-system-x86",
        "e2fsprogs",
        "scripts/template-ci.sh \"${args[@]}\" \"$BUILD_ID\"",
        "actions/upload-artifact",
        ".purge.command",
    ] {
        assert!(wf.contains(needle), "the workflow lacks {needle:?}");
    }
    let mut used = 0;
    for line in wf.lines().filter(|l| l.trim_start().starts_with("args") || l.contains("args+=(")) {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(opt) = word.strip_prefix("--").filter(|o| !o.is_empty()) {
                assert!(help.contains(&format!("--{opt}")), "the workflow passes --{opt}, which the script lacks");
                used += 1;
            }
        }
    }
    assert!(used >= 4, "the workflow's script arguments were not found");
    // Inputs reach scripts through env: no `${{ }}` expression inside a `run: |` block.
    let mut run_indent: Option<usize> = None;
    let mut bodies = 0;
    for line in wf.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(ri) = run_indent {
            if line.trim().is_empty() || indent > ri {
                assert!(!line.contains("${{"), "an expression inside a run block: {line}");
                bodies += 1;
                continue;
            }
            run_indent = None;
        }
        if line.trim_start().trim_start_matches("- ").starts_with("run: |") {
            run_indent = Some(indent);
        }
    }
    assert!(bodies > 20, "run blocks were not found");
}

/// A storage whose build has no shell and no envd yet (what `--as init` is for), made with
/// `mkfs.ext4 -d`, with E2B-style metadata.
fn bare_storage(s: &Scratch) -> PathBuf {
    let tree = common::fixtures::Tree::new(s.dir.path());
    let storage = s.path("store");
    std::fs::create_dir_all(storage.join(BUILD)).unwrap();
    common::mkfs(&tree.root, &storage.join(BUILD).join("rootfs.ext4"), 24);
    let w = tmpl::demo::StorageWriter::new(&storage).unwrap();
    w.metadata(&tmpl::vocab::BuildId::parse(BUILD).unwrap(), "v1.14.1_431f1fc", true).unwrap();
    storage
}

#[test]
fn an_as_init_build_passes_with_health_evidence_on_the_guest_kernel() {
    let Some(_) = bins() else { return };
    let Some(k) = guest_support::guest_kernel() else { return };
    if !common::require("qemu-system-x86_64") {
        return;
    }
    let _turn = common::vm_turn();
    let s = Scratch::new();
    let envd = guest_support::build_test_envd(s.dir.path());
    let storage = bare_storage(&s);
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            envd.as_os_str(),
            OsStr::new("--as"),
            OsStr::new("init"),
            OsStr::new("--kernel"),
            k.as_os_str(),
            OsStr::new("--boot-arg=--accel=tcg"),
            OsStr::new(BUILD),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v = r.summary();
    let bt = Run::step(&v, "boot-test");
    assert_eq!((&bt["status"], &bt["evidence"], &bt["required"]), (&"ok".into(), &"health".into(), &"health".into()));
    assert!(bt["health_ms"].as_u64().unwrap() > 0, "{bt:#}");
    // The requirement is explicit: check-kernel said the kernel can give health.
    let argv = bt["argv"].as_array().unwrap();
    assert!(argv.windows(2).any(|w| w[0] == "--require" && w[1] == "health"), "{argv:?}");
    assert!(r.stderr.contains("boot-test: evidence health"), "{}", r.stderr);
}

#[test]
fn a_wrapper_passing_debug_fails_the_pipeline() {
    let Some(_) = bins() else { return };
    let s = Scratch::new();
    let envd = guest_support::build_test_envd(s.dir.path());
    let storage = bare_storage(&s);
    let before = common::hash_tree(&storage);
    // Asked to write a wrapper that passes the removed -debug: inject-envd refuses (the envd would
    // exit 2 as PID 1) and nothing is booted or written.
    let r = s.run(
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("--envd"),
            envd.as_os_str(),
            OsStr::new("--as"),
            OsStr::new("wrapper"),
            OsStr::new("--envd-arg=-debug"),
            OsStr::new("--no-boot-test"),
            OsStr::new(BUILD),
        ],
        &[],
    );
    assert_eq!(r.code, 5, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let v = r.summary();
    assert_eq!((&v["ok"], &v["failed_step"]), (&false.into(), &"inject-envd".into()));
    let why = Run::step(&v, "inject-envd").to_string();
    assert!(why.contains("-debug") && why.contains("0x00000200"), "{v:#}");
    assert_eq!(common::hash_tree(&storage), before, "the storage changed");
}
