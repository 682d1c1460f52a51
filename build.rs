//! Compiles the demo envd (demo/envd.c) into a static binary for `tmpl demo` and embeds it,
//! zstd-compressed (about 310 KiB instead of 800 KiB).
//!
//! It uses the C compiler Rust linking already needs on Linux (`$TMPL_DEMO_CC`, else `$CC`, else
//! `cc`) and glibc's static libc (`libc.a`, in libc6-dev on Debian and Ubuntu). When it cannot —
//! another target than the host, a target that is not Linux, no compiler or no static libc —
//! tmpl is still built: the demo then writes a stand-in envd that cannot run and says its builds
//! cannot boot (`cfg(tmpl_demo_envd)` is unset and `TMPL_DEMO_ENVD_MISSING` says why).

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "demo/envd.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CC");
    println!("cargo::rerun-if-env-changed=TMPL_DEMO_CC");
    println!("cargo::rustc-check-cfg=cfg(tmpl_demo_envd)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match compile(&out) {
        Ok(len) => {
            println!("cargo::rustc-cfg=tmpl_demo_envd");
            println!("cargo::rustc-env=TMPL_DEMO_ENVD_LEN={len}");
        }
        Err(why) => {
            println!("cargo::warning=the demo envd is not embedded ({why}): `tmpl demo` builds will not boot");
            println!("cargo::rustc-env=TMPL_DEMO_ENVD_MISSING={why}");
        }
    }
}

/// Compile [`SOURCE`] into `out/envd` and compress it to `out/envd.zst`; the binary's length.
fn compile(out: &Path) -> Result<usize, String> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (target, host) = (env("TARGET"), env("HOST"));
    if target != host {
        return Err(format!("cross-compiling for {target} on {host}"));
    }
    if env("CARGO_CFG_TARGET_OS") != "linux" {
        return Err(format!("the target OS is {}, not Linux", env("CARGO_CFG_TARGET_OS")));
    }
    // TMPL_DEMO_CC: a compiler for the demo envd only (e.g. musl-gcc), else the one Rust uses.
    let cc = ["TMPL_DEMO_CC", "CC"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|c| !c.is_empty()))
        .unwrap_or_else(|| "cc".into());
    let bin = out.join("envd");
    let o = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-o"])
        .arg(&bin)
        .arg(SOURCE)
        .output()
        .map_err(|e| format!("{cc} could not run: {e}"))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        let first = stderr.lines().find(|l| l.contains("error")).unwrap_or("no message").trim().to_string();
        return Err(format!("`{cc} -static` failed: {first}; a static libc (libc6-dev) is needed"));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo::warning={SOURCE}: {line}");
    }
    let bytes = std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let packed = zstd::bulk::compress(&bytes, 19).map_err(|e| format!("zstd: {e}"))?;
    std::fs::write(out.join("envd.zst"), packed).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(bytes.len())
}
