//! Shared helpers for integration tests: real tools, real images, static test binaries.
//!
//! Tests that need an external tool call [`require`]: with `TMPL_TEST_REQUIRE_TOOLS=1` (set in CI)
//! a missing tool fails the test; otherwise the test prints why it skips.
#![allow(dead_code, reason = "shared by several test crates, each using a part; `expect` would be unfulfilled in some")]

pub mod fixtures;
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `TMPL_TEST_REQUIRE_TOOLS=1` (CI): a test that cannot run fails instead of skipping. The one
/// meaning of the variable: exactly "1" (any other value, or unset, lets tests skip).
pub fn tools_required() -> bool {
    std::env::var("TMPL_TEST_REQUIRE_TOOLS").as_deref() == Ok("1")
}

/// A test cannot run here because `why`: panics when [`tools_required`], else prints why it
/// skips. Returns false, for `if !cond { return skip(..) }`-style early returns.
pub fn skip(why: &str) -> bool {
    if tools_required() {
        panic!("{why} (TMPL_TEST_REQUIRE_TOOLS=1: this test must run)");
    }
    eprintln!("SKIP: {why}");
    false
}

/// Is `tool` available? Panics in CI (TMPL_TEST_REQUIRE_TOOLS=1) when it is not.
pub fn require(tool: &str) -> bool {
    if tmpl::tools::find(tool, "the package providing it").is_ok() {
        return true;
    }
    skip(&format!("{tool} is required but not installed"))
}

/// The tmpl binary under test.
pub fn tmpl() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("tmpl").expect("tmpl binary")
}

/// Compile a C program statically (`gcc -static -Os`) into `dir/name`.
pub fn static_binary(dir: &Path, name: &str, c_source: &str) -> PathBuf {
    assert!(require("gcc"), "gcc is needed to build static test binaries");
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, c_source).unwrap();
    let out = dir.join(name);
    let st = Command::new("gcc").args(["-static", "-Os", "-s", "-o"]).arg(&out).arg(&src).output().unwrap();
    assert!(st.status.success(), "gcc failed: {}", String::from_utf8_lossy(&st.stderr));
    out
}

/// C source of a fake envd: accepts the flags listed (Go style, `-x`/`--x`, `-x=v`/`-x v` for
/// `port`/`cmd`/`cgroup-root`), prints `version` for `-version`, exits 2 with Go-like usage on any
/// other flag, else prints `envd running` and sleeps. Flag names appear as strings in the binary,
/// like in the real Go binary, so era detection works on it.
pub fn fake_envd_source(version: &str, flags: &[&str]) -> String {
    let list: Vec<String> = flags.iter().map(|f| format!("\"{f}\"")).collect();
    // Only the value flags this envd has, so no other flag name ends up in the binary.
    let valued: Vec<String> = flags
        .iter()
        .filter(|f| matches!(**f, "port" | "cmd" | "cgroup-root"))
        .map(|f| format!("\"{f}\""))
        .chain(std::iter::once("0".to_string()))
        .collect();
    format!(
        r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
static const char *VERSION = "{version}";
static const char *FLAGS[] = {{ {list}, 0 }};
static const char *VALUED[] = {{ {valued} }};
static int known(const char *n, const char **t) {{ for (int i = 0; t[i]; i++) if (!strcmp(t[i], n)) return 1; return 0; }}
int main(int argc, char **argv) {{
  for (int i = 1; i < argc; i++) {{
    const char *a = argv[i];
    if (a[0] != '-') break;
    if (!strcmp(a, "--")) break;
    a += (a[1] == '-') ? 2 : 1;
    char name[64]; size_t n = strcspn(a, "="); if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, a, n); name[n] = 0;
    if (!known(name, FLAGS)) {{ fprintf(stderr, "flag provided but not defined: -%s\nUsage of envd:\n", name); return 2; }}
    if (!strcmp(name, "version")) {{ printf("%s\n", VERSION); return 0; }}
    if (known(name, VALUED) && a[n] != '=') i++;
  }}
  printf("envd running\n"); fflush(stdout);
  for (;;) pause();
}}
"#,
        list = list.join(", "),
        valued = valued.join(", ")
    )
}

/// `mkfs.ext4 -d tree image` (pinned UUID and hash seed), `size_mib` MiB.
pub fn mkfs(tree: &Path, image: &Path, size_mib: u64) {
    assert!(require("mkfs.ext4"));
    tmpl::demo::make_image(tree, image, size_mib << 20).expect("mkfs.ext4");
}

/// `debugfs -R "cat PATH" image` — the oracle for file contents.
pub fn debugfs_cat(image: &Path, path: &str) -> Vec<u8> {
    assert!(require("debugfs"));
    let out = Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap())
        .args(["-R", &format!("cat {path}")])
        .arg(image)
        .output()
        .unwrap();
    out.stdout
}

/// `e2fsck -fn image` exit status 0?
pub fn fsck_clean(image: &Path) -> bool {
    assert!(require("e2fsck"));
    tmpl::tools::e2fs::fsck_readonly(image).expect("e2fsck runs").clean
}

/// Copy a host program (resolved through symlinks) and the shared libraries it needs (per
/// `ldd`) into `tree` at the same paths.
pub fn copy_host_program(tree: &Path, program: &str) {
    let real = std::fs::canonicalize(program).unwrap();
    let mut files = vec![real.clone()];
    let ldd = Command::new("ldd").arg(&real).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        for tok in line.split_whitespace() {
            if tok.starts_with('/') {
                files.push(PathBuf::from(tok));
            }
        }
    }
    for f in files {
        let dest = tree.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if !dest.exists() {
            std::fs::copy(std::fs::canonicalize(&f).unwrap(), &dest).unwrap();
        }
    }
    let named = tree.join(program.trim_start_matches('/'));
    if !named.exists() && std::fs::symlink_metadata(&named).is_err() {
        std::fs::create_dir_all(named.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, named).unwrap();
    }
}

/// Copy the host's `/bin/sh` and the shared libraries it needs into `tree`, so the image has a
/// working shell.
pub fn copy_host_shell(tree: &Path) {
    copy_host_program(tree, "/bin/sh");
}

/// Running as root? In CI (TMPL_TEST_REQUIRE_TOOLS=1) a test that needs root fails without it;
/// locally it prints why it skips.
pub fn require_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip("this test needs root")
}

/// The test kernel for boot tests (TMPL_TEST_KERNEL, else target/test-kernel/vmlinuz-* from
/// scripts/fetch-test-kernel.sh) with QEMU installed, or None to skip; in CI
/// (TMPL_TEST_REQUIRE_TOOLS=1) a missing kernel or QEMU fails the test.
pub fn test_kernel() -> Option<PathBuf> {
    let from_env = std::env::var_os("TMPL_TEST_KERNEL").filter(|v| !v.is_empty()).map(PathBuf::from);
    let found = from_env.or_else(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-kernel");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    });
    match found {
        Some(k) if k.is_file() => require("qemu-system-x86_64").then_some(k),
        other => {
            skip(&format!("no test kernel ({other:?}): run scripts/fetch-test-kernel.sh and set TMPL_TEST_KERNEL"));
            None
        }
    }
}

/// (id, severity, message) of the first build's findings in a `verify --json` document. Panics
/// when the document has no `builds[0].findings` array or a finding lacks one of the fields: a
/// schema change must fail the "no such finding" checks, not make them pass on an empty list.
pub fn findings_of(v: &serde_json::Value) -> Vec<(String, String, String)> {
    let list = v["builds"][0]["findings"].as_array().unwrap_or_else(|| panic!("no builds[0].findings array in {v}"));
    list.iter()
        .map(|f| {
            let s =
                |k: &str| f[k].as_str().unwrap_or_else(|| panic!("finding without a string {k:?}: {f}")).to_string();
            (s("id"), s("severity"), s("message"))
        })
        .collect()
}

/// Everything under `root` (hidden files such as backups included): relative path → kind, mode
/// and SHA-256 of the content (or a link's target). Two equal digests mean nothing changed.
pub fn hash_tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let v = if m.is_dir() {
                walk(root, &p, out);
                format!("dir {:o}", m.mode())
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else {
                let h = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                format!("file {:o} {}", m.mode(), tmpl::rootfs::hex(&h))
            };
            out.insert(rel, v);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Held while a test boots a VM: QEMU under TCG needs a whole core, and several boots at once on
/// a 2-core CI machine slow each other past their timeouts. Tests in one binary run in parallel
/// threads; this makes their boots take turns.
pub fn vm_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// `tmpl --storage STORAGE inspect BUILD --path PATH --cat`: the file's bytes as tmpl reads them
/// through the build's layers (asserting the command succeeded).
pub fn cat(storage: &Path, build: &str, path: &str) -> Vec<u8> {
    let out = tmpl().arg("--storage").arg(storage).args(["inspect", build, "--path", path, "--cat"]).output().unwrap();
    assert!(out.status.success(), "inspect --cat {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
