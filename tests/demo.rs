//! `tmpl demo`: where it writes (`--dir`, the global `--storage`, never the storage environment),
//! what it refuses, and that its storage holds only its own builds; that `tmpl boot-test` gives
//! every demo build the verdict its scenario names (QEMU, the E2B-like test guest kernel); and
//! that the README's boot examples on the demo storage run as written.

mod common;
mod guest_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tmpl::demo::{BootExpect, BootSupport, Scenario, Shell};

use serde_json::Value;

#[test]
fn demo_writes_into_the_global_storage_and_only_its_own_builds() {
    if !common::require("mkfs.ext4") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let env_store = t.path().join("env-store");
    std::fs::create_dir_all(&env_store).unwrap();
    let out = common::tmpl()
        .arg("--storage")
        .arg(&store)
        .args(["--json", "demo"])
        .env("TMPL_STORAGE", &env_store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["storage"], store.to_str().unwrap());
    assert_eq!(v["all_detected"], true, "{v:#}");
    assert_eq!(std::fs::read_dir(&env_store).unwrap().count(), 0, "TMPL_STORAGE is never written");
    let entries: BTreeSet<String> =
        std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut expected: BTreeSet<String> = tmpl::demo::all_ids().iter().map(|s| s.to_string()).collect();
    expected.insert(tmpl::demo::MARKER.to_string());
    assert_eq!(entries, expected);
    // Every scenario's build is in the list the demo recognises as its own.
    for s in v["scenarios"].as_array().unwrap() {
        assert!(tmpl::demo::all_ids().contains(&s["build_id"].as_str().unwrap()), "{s}");
    }
    // Run again on it: an earlier demo is replaced.
    common::tmpl().arg("--storage").arg(&store).args(["-q", "demo"]).assert().success();
    // A build that is not the demo's makes the directory a real storage: refused, untouched.
    let foreign = store.join("8f4e1a6e-0000-4000-8000-000000000001");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("metadata.json"), b"{}").unwrap();
    let out = common::tmpl().arg("--storage").arg(&store).args(["demo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("8f4e1a6e-0000-4000-8000-000000000001"));
    assert!(store.join(tmpl::demo::ids::BASE).join("snapfile").exists(), "nothing was removed");
    // --dir and --storage naming different directories is a usage error.
    let out = common::tmpl().arg("--storage").arg(&store).arg("demo").arg("--dir").arg(&env_store).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The guest kernel, QEMU, mkfs.ext4 and busybox (the shell CI's demo images get), or None to
/// skip (a failure under TMPL_TEST_REQUIRE_TOOLS=1).
fn boot_setup() -> Option<PathBuf> {
    let k = guest_support::guest_kernel()?;
    for tool in ["qemu-system-x86_64", "mkfs.ext4", "busybox"] {
        if !common::require(tool) {
            return None;
        }
    }
    Some(k)
}

/// `tmpl --json --storage STORE boot-test ID` under TCG: exit status, report (when there is
/// one) and stderr.
fn boot_test(store: &Path, id: &str, kernel: &Path) -> (i32, Option<Value>, String) {
    let out = common::tmpl()
        .args(["--json", "--storage"])
        .arg(store)
        .args(["boot-test", id, "--accel", "tcg", "--settle", "1", "--timeout", "120", "--kernel"])
        .arg(kernel)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Does a boot-test result match the scenario's expectation? `Err` says how it does not.
fn check_boot(s: &Scenario, code: i32, v: Option<&Value>, stderr: &str) -> Result<(), String> {
    let want = i32::from(s.boot.exit_code());
    if code != want {
        return Err(format!("exit {code}, expected {want}: {v:?} {stderr}"));
    }
    match s.boot {
        BootExpect::Health => {
            let v = v.ok_or("no report")?;
            let got = (&v["verdict"], &v["evidence"], v["health"]["status"].as_u64());
            if got != (&Value::from("ok"), &Value::from("health"), Some(204)) {
                return Err(format!("not ok on health: {v:#}"));
            }
        }
        BootExpect::Panic { panic } => {
            let v = v.ok_or("no report")?;
            let summary = v["summary"].as_str().unwrap_or_default();
            if v["verdict"] != "panic" || !summary.contains(panic) {
                return Err(format!("not a panic with {panic:?}: {v:#}"));
            }
        }
        BootExpect::NotBootable { error } => {
            if v.is_some_and(|v| v.get("verdict").is_some()) || !stderr.contains(error) {
                return Err(format!("booted, or the error lacks {error:?}: {v:?} {stderr}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_demo_build_boots_to_the_verdict_its_scenario_names() {
    let Some(kernel) = boot_setup() else { return };
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("demo");
    let shell = Shell::find();
    assert!(matches!(shell, Shell::Busybox { .. }), "busybox-static is installed: {shell:?}");
    assert!(BootSupport::new(&shell).runnable(), "{:?}", BootSupport::new(&shell));
    let scenarios = tmpl::demo::create_with(&store, &shell).unwrap();
    assert_eq!(scenarios.len(), tmpl::demo::all_ids().len());
    // Every kind of verdict is in the table, so this test can tell them apart.
    for kind in ["health", "panic", "not-bootable"] {
        let n = scenarios.iter().filter(|s| serde_json::to_value(s.boot).unwrap()["verdict"] == kind).count();
        assert!(n > 0, "no scenario expects {kind}");
    }
    // Two boots at a time (QEMU under TCG takes a core each), the rest wait their turn.
    let _turn = common::vm_turn();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                while let Some(s) = scenarios.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let t0 = Instant::now();
                    let (code, v, stderr) = boot_test(&store, &s.build_id.to_string(), &kernel);
                    let r = check_boot(s, code, v.as_ref(), &stderr);
                    eprintln!("{} {:<36} {:?} in {:.1} s", s.build_id, s.name, s.boot, t0.elapsed().as_secs_f64());
                    if let Err(e) = r {
                        failures.lock().unwrap().push(format!("{} ({}): {e}", s.name, s.build_id));
                    }
                }
            });
        }
    });
    eprintln!("{} boot-tests in {:.1} s", scenarios.len(), start.elapsed().as_secs_f64());
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's boot examples on the demo storage: the `sh` block after `<!-- boot-examples -->`.
fn readme_boot_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (_, after) = readme.split_once("<!-- boot-examples -->\n```sh\n").expect("the README marks its boot examples");
    let (block, _) = after.split_once("```").unwrap();
    block.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The exit status a README line's comment announces (`# exit N: ...`), else 0.
fn announced_exit(line: &str) -> i32 {
    line.split_once('#')
        .and_then(|(_, c)| c.trim().strip_prefix("exit "))
        .and_then(|c| c.split(':').next())
        .map_or(0, |n| n.trim().parse().expect("# exit N"))
}

#[test]
fn readme_boot_examples_run_as_written() {
    let Some(kernel) = boot_setup() else { return };
    let lines = readme_boot_examples();
    assert!(lines.len() >= 5, "{lines:?}");
    // The lines run from a checkout's top directory: scripts/ and kernel/ (the fragment the
    // script hashes) as in this one, and target/ holding the kernel the script builds, which is
    // TMPL_TEST_GUEST_KERNEL (.ci/run sets it from the same command): the script finds it cached.
    let t = tempfile::tempdir().unwrap();
    let top = t.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for d in ["scripts", "kernel"] {
        std::os::unix::fs::symlink(repo.join(d), top.join(d)).unwrap();
    }
    let print = std::process::Command::new("scripts/build-test-kernel.sh")
        .args(["--print-path", "target"])
        .current_dir(top)
        .output()
        .unwrap();
    assert!(print.status.success(), "{}", String::from_utf8_lossy(&print.stderr));
    let wanted = PathBuf::from(String::from_utf8(print.stdout).unwrap().trim());
    let (want_dir, have_dir) = (wanted.parent().unwrap(), kernel.parent().unwrap());
    assert_eq!(
        want_dir.file_name(),
        have_dir.file_name(),
        "TMPL_TEST_GUEST_KERNEL={} is not the kernel scripts/build-test-kernel.sh makes from this checkout",
        kernel.display()
    );
    std::os::unix::fs::symlink(have_dir, want_dir).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tmpl")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut k = None;
    for line in &lines {
        let mut cmd = std::process::Command::new("bash");
        cmd.current_dir(top).env("PATH", &path).env_remove("TMPL_STORAGE").env_remove("TMPL_KERNEL");
        if let Some(k) = &k {
            cmd.env("K", k);
        }
        if line.starts_with("K=$(") {
            // Run the assignment and hand its value to the next lines.
            let out = cmd.args(["-euo", "pipefail", "-c"]).arg(format!("{line}\nprintf %s \"$K\"")).output().unwrap();
            assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
            let v = String::from_utf8(out.stdout).unwrap();
            assert_eq!(std::fs::canonicalize(&v).unwrap(), std::fs::canonicalize(&kernel).unwrap(), "{line}");
            k = Some(v);
            continue;
        }
        let out = cmd.args(["-c", line]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(announced_exit(line)), "{line}\n{stdout}\n{stderr}");
        if line.contains("--console boot.log") {
            let log = std::fs::read_to_string(top.join("boot.log")).unwrap();
            assert!(log.contains("Linux version"), "the whole console is kept: {log}");
        }
        if line.contains(" boot-test ") && announced_exit(line) == 0 {
            assert!(stdout.contains("health"), "{line}: {stdout}");
        }
    }
    assert!(k.is_some(), "the README sets K");
    assert!(top.join("demo-storage").join(tmpl::demo::MARKER).is_file(), "the demo wrote demo-storage");
}

#[test]
fn without_busybox_the_hosts_sh_with_its_loader_and_libraries_runs_the_wrapper() {
    let Some(kernel) = boot_setup() else { return };
    let shell = Shell::host_sh();
    let Shell::HostSh { files } = &shell else { panic!("the host's /bin/sh cannot be copied: {shell:?}") };
    // /bin/sh, its program interpreter and (glibc) libc, each where the loader looks for it.
    assert_eq!(files[0].guest, "/bin/sh");
    assert!(files.iter().any(|f| f.guest.starts_with("/lib") && f.guest.contains("ld-")), "{files:?}");
    if cfg!(target_env = "gnu") {
        assert!(files.iter().any(|f| f.guest.ends_with("/libc.so.6")), "{files:?}");
    }
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("demo");
    let scenarios = tmpl::demo::create_with(&store, &shell).unwrap();
    let _turn = common::vm_turn();
    // The -debug wrapper panics with envd's exit status 2 only if the shell ran it: a shell that
    // cannot run makes the kernel fail to start /sbin/init instead (a different panic).
    for id in [tmpl::demo::ids::ENVD_FLAG, tmpl::demo::ids::BASE] {
        let s = scenarios.iter().find(|s| s.build_id.to_string() == id).unwrap();
        let (code, v, stderr) = boot_test(&store, id, &kernel);
        check_boot(s, code, v.as_ref(), &stderr).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}
