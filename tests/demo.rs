//! `tmpl demo`: where it writes (`--dir`, the global `--storage`, never the storage environment),
//! what it refuses, and that its storage holds only its own builds.

mod common;

use std::collections::BTreeSet;

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
