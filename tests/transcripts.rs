//! Terminal transcripts: the human output (colour off) of verify, inspect, explain,
//! `purge-cache --dry-run` and `inject-envd --dry-run` on the demo storage, as insta snapshots
//! (tests/snapshots/), so a change of wording is a reviewed diff. Run in-process through
//! `tmpl::execute`; paths of temporary directories, allocated sizes (they depend on the host's
//! filesystem), the checksums of the demo's deliberately corrupt frames and the sizes of its
//! compressed images (both change from run to run), and the hash and size of the demo envd (the
//! C toolchain's) are redacted.
//! `cargo test` checks them; `INSTA_UPDATE=always` (or cargo-insta) rewrites them after a
//! deliberate change.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use tmpl::demo::ids;
use tmpl::output::{Mode, Output};

/// The demo storage, created once per test binary (needs mkfs.ext4 and busybox).
struct Demo {
    _dir: tempfile::TempDir,
    storage: PathBuf,
    envd: PathBuf,
}

fn demo() -> Option<&'static Demo> {
    static DEMO: OnceLock<Option<Demo>> = OnceLock::new();
    DEMO.get_or_init(|| {
        // busybox: the demo images' shell is the host's (demo::Shell::find); the transcripts are
        // of images with busybox-static's, as in CI.
        if !common::require("mkfs.ext4") || !common::require("debugfs") || !common::require("busybox") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let shell = tmpl::demo::Shell::find();
        assert!(matches!(shell, tmpl::demo::Shell::Busybox { .. }), "{shell:?}");
        tmpl::demo::create_with(&storage, &shell).expect("the demo storage");
        // The demo's own stand-in envd (an ELF header and a current envd's flag names).
        let envd = dir.path().join("envd");
        std::fs::write(&envd, tmpl::demo::stand_in_envd()).unwrap();
        Some(Demo { _dir: dir, storage, envd })
    })
    .as_ref()
}

/// Run `tmpl ARGS` in-process with colour and progress off; (exit code, stdout).
fn transcript(args: &[&str]) -> (u8, String) {
    let cli = tmpl::cli::Cli::try_parse_from(std::iter::once("tmpl").chain(args.iter().copied())).unwrap();
    let mode = Mode { verbose: cli.global.verbose, ..Mode::default() };
    let (out, captured) = Output::capture(mode, b"");
    let code = tmpl::run(cli, &out);
    (code, captured.stdout_text())
}

/// Snapshot `text` with the demo's temporary directory and host-dependent numbers redacted.
fn check(name: &str, d: &Demo, code: u8, text: &str) {
    let root = d._dir.path().to_string_lossy().into_owned();
    let mut text = text.replace(&root, "[TMP]");
    // The demo envd is compiled on the machine that builds tmpl (build.rs): its hash and size
    // come from the C toolchain.
    if let Ok(envd) = tmpl::demo::envd_binary() {
        use sha2::Digest;
        let sha: String = sha2::Sha256::digest(envd).iter().map(|b| format!("{b:02x}")).collect();
        let size = tmpl::report::human_bytes(u64::try_from(envd.len()).unwrap());
        text = text.replace(&sha, "[DEMO-ENVD-SHA256]").replace(&size, "[DEMO-ENVD-SIZE]");
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.add_filter(r"\d+(\.\d+)? (B|KiB|MiB|GiB) allocated", "[N] allocated");
    settings.add_filter(
        r"LZ4 block (\d+) checksum mismatch: stored 0x[0-9a-f]+, computed 0x[0-9a-f]+",
        "LZ4 block $1 checksum mismatch: stored [XXH32], computed [XXH32]",
    );
    // The demo's compressed images differ in size from run to run (mkfs.ext4 writes the time).
    settings.add_filter(
        r"is \d+ bytes but its frame table reaches byte \d+ \(\d+ missing\)",
        "is [N] bytes but its frame table reaches byte [M] ([M-N] missing)",
    );
    settings.add_filter(r"\(compressed bytes \d+\.\.\d+,", "(compressed bytes [C],");
    settings.bind(|| insta::assert_snapshot!(name, format!("exit {code}\n{text}")));
}

fn storage(d: &Demo) -> &str {
    d.storage.to_str().unwrap()
}

#[test]
fn verify_all() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["--storage", storage(d), "verify", "--all"]);
    check("verify_all", d, code, &text);
}

/// A build copied out of the storage and verified by path: the summary names the folder it is
/// in, not the storage tmpl would otherwise use (no --storage here).
#[test]
fn verify_one_build_by_path() {
    let Some(d) = demo() else { return };
    let copy = d._dir.path().join("copies/copy-of-a-build");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(d.storage.join(ids::LEGACY))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, text) = transcript(&["verify", &format!("{}/", copy.display())]);
    assert!(
        text.contains("in [TMP]/copies:") || text.contains(&format!("in {}:", copy.parent().unwrap().display())),
        "{text}"
    );
    check("verify_one_build_by_path", d, code, &text);
}

#[test]
fn inspect_child() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["--storage", storage(d), "inspect", ids::CHILD]);
    check("inspect_child", d, code, &text);
}

#[test]
fn inspect_path() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["--storage", storage(d), "inspect", ids::BASE, "--path", "/sbin/init"]);
    check("inspect_path", d, code, &text);
}

#[test]
fn explain_crc_error() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["explain", "CRC64 validation failed: 14172926256603030733"]);
    check("explain_crc_error", d, code, &text);
}

#[test]
fn explain_finding_id() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["explain", "wrapper.envd-flag"]);
    check("explain_finding_id", d, code, &text);
}

#[test]
fn inject_envd_dry_run() {
    let Some(d) = demo() else { return };
    let envd = d.envd.to_str().unwrap();
    let (code, text) =
        transcript(&["--storage", storage(d), "inject-envd", ids::ENVD_FLAG, "--envd", envd, "--dry-run"]);
    check("inject_envd_dry_run", d, code, &text);
}

/// A node's caches holding entries of two demo builds, under one folder given by flags.
fn caches(top: &Path) -> Vec<String> {
    let put = |p: PathBuf, n: usize| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![0x5a; n]).unwrap();
    };
    for id in [ids::BASE, ids::CHILD] {
        put(
            top.join(format!("orchestrator/template/{id}/cache/0f0f0f0f-0000-4000-8000-000000000000/snapfile")),
            20_000,
        );
        put(top.join(format!("orchestrator/build/{id}-rootfs.ext4-r4nd0m")), 12_345);
        put(top.join(format!("chunks/{id}/memfile/000000000000-4194304.bin")), 4096);
    }
    put(top.join(format!("orchestrator/build/{}-rootfs.ext4-other", ids::CRC)), 100);
    let arg = |flag: &str, p: PathBuf| [flag.to_string(), p.to_string_lossy().into_owned()];
    [
        arg("--base-path", top.join("orchestrator")),
        arg("--chunk-cache", top.join("chunks")),
        arg("--snapshot-cache", top.join("snapshot-cache")),
        arg("--lock-path", top.join("orchestrator.lock")),
        ["--node-name".into(), "node-1".into()],
    ]
    .concat()
}

#[test]
fn purge_cache_dry_run() {
    let Some(d) = demo() else { return };
    let top = d._dir.path().join("node");
    let mut args = vec!["--storage".to_string(), storage(d).to_string(), "purge-cache".into()];
    args.extend(caches(&top));
    args.extend(["--build-id".into(), format!("{},{}", ids::BASE, ids::CHILD), "--dry-run".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = transcript(&args);
    check("purge_cache_dry_run", d, code, &text);
    // A dry run deletes nothing.
    assert!(top.join(format!("orchestrator/build/{}-rootfs.ext4-r4nd0m", ids::BASE)).exists());
}

/// `--mappings` prints the table alone; with -v the whole report comes first.
#[test]
fn inspect_mappings_table_only() {
    let Some(d) = demo() else { return };
    let (code, text) = transcript(&["--storage", storage(d), "inspect", ids::CHILD, "--mappings"]);
    assert!(!text.contains("metadata.json") && text.contains("rootfs mappings"), "{text}");
    check("inspect_mappings_table_only", d, code, &text);
    let (_, verbose) = transcript(&["--storage", storage(d), "-v", "inspect", ids::CHILD, "--mappings"]);
    assert!(verbose.starts_with(&format!("build {}", ids::CHILD)) && verbose.contains("rootfs mappings"), "{verbose}");
}
