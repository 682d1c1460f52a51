//! Binary-level tests of the foundation: storage resolution, hostile arguments, exit codes, JSON.

mod common;

use common::tmpl;
use predicates::prelude::*;

#[test]
fn hostile_build_ids_are_refused_before_touching_files() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["..", "*", "", "not-a-uuid", "11111111-2222-3333-4444-55555555555"] {
        tmpl()
            .args(["--storage"])
            .arg(dir.path())
            .args(["verify", bad])
            .assert()
            .code(3)
            .stderr(predicate::str::contains("invalid build ID"));
    }
}

#[test]
fn json_error_document_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmpl()
        .arg("--json")
        .args(["verify", "11111111-2222-3333-4444-555555555555", "--storage"])
        .arg(dir.path())
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["command"], "verify");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["exit_code"], 3);
    assert!(v["error"]["message"].as_str().unwrap().contains("no build 11111111-2222-3333-4444-555555555555"));
}

/// A bucket in TEMPLATE_STORAGE_URL is used (no longer refused); without credentials the run ends
/// with exit 4 naming the variables that would give them. The GCE metadata server is pinned to a
/// closed loopback port, so nothing leaves the machine.
#[test]
fn bucket_storage_url_without_credentials_names_the_variables() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    tmpl()
        .env_clear()
        .env("TEMPLATE_STORAGE_URL", "gs://my-bucket")
        .env("GCE_METADATA_HOST", &closed)
        .env("GCE_METADATA_IP", &closed)
        .env("TMPL_REMOTE_RETRIES", "0")
        .args(["verify", "--all"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("GOOGLE_APPLICATION_CREDENTIALS"));
    // An unknown query parameter is refused by name before anything is sent (exit 2 from --storage).
    tmpl()
        .env_clear()
        .args(["--storage", "s3://b?use_path_style=true", "verify", "--all"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("use_path_style"));
}

#[test]
fn storage_url_file_scheme_is_used() {
    let dir = tempfile::tempdir().unwrap();
    tmpl()
        .env_remove("TMPL_STORAGE")
        .env("TEMPLATE_STORAGE_URL", format!("file://{}", dir.path().display()))
        .args(["verify", "--all"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(dir.path().to_str().unwrap()));
}

#[test]
fn a_directory_without_build_files_is_an_error_not_findings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    tmpl()
        .args(["verify"])
        .arg(format!("{}/", dir.path().display()))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not a build directory"));
}

#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    tmpl().args(["verify"]).assert().code(2);
    tmpl().args(["--help"]).assert().success().stdout(predicate::str::contains("Exit codes:"));
}

/// The binary itself: with --json, a command line clap refuses is one JSON error document on
/// stdout (exit 2); without --json, clap's usual message and no JSON.
#[test]
fn usage_errors_with_json_are_json() {
    let out = tmpl().args(["verify", "--json", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["command"], "verify");
    assert_eq!(doc["error"]["kind"], "usage");
    assert_eq!(doc["error"]["exit_code"], 2);
    assert!(doc["error"]["message"].as_str().unwrap().contains("--no-such-flag"));
    let out = tmpl().args(["verify", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("Usage: tmpl verify"));
    // --help with --json is still help.
    let out = tmpl().args(["--json", "verify", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Global options:"));
}
