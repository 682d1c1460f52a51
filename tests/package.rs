//! The Debian package: `scripts/build-deb.sh` run on the tmpl binary under test, the result read
//! back with dpkg-deb (listing, control fields, extracted files). The binary is reused, not
//! rebuilt. Oracles: dpkg-deb's own view of the archive, the binary's `completions`/`man` output,
//! bash sourcing the packaged completion script, and dpkg-shlibdeps (when installed) for Depends.
//! CI also installs the package with `dpkg -i` and runs `man tmpl-verify` (.ci/run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const TMPL: &str = env!("CARGO_BIN_EXE_tmpl");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Build the .deb into `dir` from the binary under test; its path.
fn build(dir: &Path) -> PathBuf {
    let printed = run(Command::new(SCRIPT).args(["--binary", TMPL, "--out"]).arg(dir));
    PathBuf::from(printed.trim_end())
}

fn tools() -> bool {
    ["dpkg-deb", "dpkg", "objdump", "gzip", "bash"].iter().all(|t| common::require(t))
}

#[test]
fn the_deb_holds_binary_completions_man_pages_and_docs() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let arch = run(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    assert_eq!(deb.file_name().unwrap().to_str().unwrap(), format!("tmpl_{}_{arch}.deb", env!("CARGO_PKG_VERSION")));
    assert!(dir.path().join(format!("tmpl-{}-{arch}.tar.gz", env!("CARGO_PKG_VERSION"))).is_file());

    // Listing: every path, owned by root, with sane modes.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
            .to_string()
    };
    assert!(entry("usr/bin/tmpl").starts_with("-rwxr-xr-x root/root"), "{}", entry("usr/bin/tmpl"));
    let mut expected = vec![
        "usr/share/bash-completion/completions/tmpl".to_string(),
        "usr/share/zsh/vendor-completions/_tmpl".to_string(),
        "usr/share/fish/vendor_completions.d/tmpl.fish".to_string(),
        "usr/share/doc/tmpl/copyright".to_string(),
        "usr/share/doc/tmpl/README.md.gz".to_string(),
        "usr/share/doc/tmpl/changelog.gz".to_string(),
        "usr/share/doc/tmpl/CHANGELOG.md.gz".to_string(),
        "usr/share/doc/tmpl/examples/nomad/tmpl-purge-cache.hcl".to_string(),
        "usr/share/doc/tmpl/examples/ci/template-ci.sh".to_string(),
        "usr/share/doc/tmpl/examples/ci/template-ci.yml".to_string(),
        "usr/share/man/man1/tmpl.1.gz".to_string(),
    ];
    let pages = [
        "verify",
        "inspect",
        "demo",
        "explain",
        "boot-test",
        "inject-envd",
        "rewrite-wrapper",
        "purge-cache",
        "backups",
        "completions",
        "man",
    ];
    expected.extend(pages.iter().map(|c| format!("usr/share/man/man1/tmpl-{c}.1.gz")));
    for p in &expected {
        let e = entry(p);
        assert!(e.contains("root/root"), "{e}");
        if !p.ends_with(".sh") {
            assert!(e.starts_with("-rw-r--r--"), "{e}");
        }
    }
    assert!(!listing.lines().any(|l| !l.contains("root/root")), "a file not owned by root:\n{listing}");

    // Control fields.
    let field = |f: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f)).trim().to_string();
    assert_eq!(field("Package"), "tmpl");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), arch);
    assert_eq!(field("Recommends"), "e2fsprogs");
    assert_eq!(field("Suggests"), "qemu-system-x86");
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    if which("dpkg-shlibdeps") {
        assert_eq!(depends, shlibdeps(Path::new(TMPL)), "Depends differs from dpkg-shlibdeps'");
    }
    let md5sums = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("md5sums"));
    assert!(md5sums.lines().any(|l| l.ends_with("  usr/bin/tmpl")), "{md5sums}");

    // Contents: what the binary generates, gzipped man pages that are roff.
    let x = dir.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let bash = x.join("usr/share/bash-completion/completions/tmpl");
    assert_eq!(
        std::fs::read(&bash).unwrap(),
        Command::new(TMPL).args(["completions", "bash"]).output().unwrap().stdout
    );
    let page = run(Command::new("gzip").arg("-dc").arg(x.join("usr/share/man/man1/tmpl-verify.1.gz")));
    assert!(page.contains("\n.TH TMPL-VERIFY 1 "), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("\\-\\-deep"), "tmpl-verify(1) lacks --deep");
    let copyright = std::fs::read_to_string(x.join("usr/share/doc/tmpl/copyright")).unwrap();
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");
    // The packaged binary is the one under test (stripped), and runs.
    let v = run(Command::new(x.join("usr/bin/tmpl")).arg("--version"));
    assert_eq!(v.trim(), format!("tmpl {}", env!("CARGO_PKG_VERSION")));

    // bash loads the completion and completes subcommands with it.
    let script = format!(
        "source {}; complete -p tmpl; COMP_WORDS=(tmpl veri); COMP_CWORD=1; COMP_LINE='tmpl veri'; COMP_POINT=9; _tmpl tmpl veri tmpl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = run(Command::new("bash").arg("-c").arg(script));
    assert!(out.contains("-F _tmpl tmpl") && out.lines().any(|l| l == "verify"), "{out}");
}

#[test]
fn a_binary_that_is_not_this_version_is_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("tmpl");
    std::fs::write(&fake, "#!/bin/sh\necho tmpl 0.0.0-other\n").unwrap();
    run(Command::new("chmod").arg("755").arg(&fake));
    let out = Command::new(SCRIPT).arg("--binary").arg(&fake).arg("--out").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cargo.toml says"));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".deb"))
    );
}

fn which(tool: &str) -> bool {
    tmpl::tools::find(tool, "").is_ok()
}

/// What dpkg-shlibdeps computes for `binary` (it wants a debian/control beside it).
fn shlibdeps(binary: &Path) -> String {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("debian")).unwrap();
    std::fs::write(d.path().join("debian/control"), "Source: tmpl\n\nPackage: tmpl\nArchitecture: any\n").unwrap();
    let out = run(Command::new("dpkg-shlibdeps").arg("-O").arg(binary).current_dir(d.path()));
    out.trim().strip_prefix("shlibs:Depends=").unwrap_or_else(|| panic!("{out}")).to_string()
}
