//! In-process tier: `Cli::try_parse_from` → `tmpl::execute` → a typed report, on temp dirs, with
//! no subprocess and no root. Hostile builds are made from the demo storage (real ext4 images,
//! the crate's own layer, header and snapfile encoders) with one fault each, and the finding ids
//! verify reports are collected: [`every_catalog_id_is_produced_in_process`] fails when a
//! catalog id is produced by no scenario here (beyond the named, shrinking `NOT_YET` list) or
//! when `NOT_YET` names an id that is produced or not in the catalog.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use tmpl::Outcome;
use tmpl::cli::Cli;
use tmpl::commands::verify::VerifyReport;
use tmpl::demo::ids;
use tmpl::header::{self, Header};
use tmpl::output::{Mode, Output};

/// Run a command line in-process and return its unrendered outcome.
fn run(args: &[&str]) -> tmpl::Result<Outcome> {
    let cli = Cli::try_parse_from(std::iter::once("tmpl").chain(args.iter().copied())).expect("command line parses");
    let (out, _captured) = Output::capture(Mode::default(), b"");
    tmpl::execute(cli, &out)
}

/// `verify ARGS..` on `storage`, typed.
fn verify(storage: &Path, args: &[&str]) -> VerifyReport {
    let mut all = vec!["--storage", storage.to_str().unwrap(), "verify"];
    all.extend_from_slice(args);
    match run(&all).unwrap_or_else(|e| panic!("verify {args:?}: {e}")) {
        Outcome::Verify(r) => r,
        other => panic!("verify returned {other:?}"),
    }
}

fn ids_of(r: &VerifyReport) -> BTreeSet<String> {
    r.builds.iter().flat_map(|b| b.findings.iter().map(|f| f.id.clone())).collect()
}

/// The demo storage, made once per test process (None when mkfs.ext4 is missing and tools are
/// not required).
fn demo() -> Option<&'static Path> {
    static DEMO: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DEMO.get_or_init(|| {
        if !common::require("mkfs.ext4") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("s");
        match run(&["demo", "--dir", storage.to_str().unwrap()]).unwrap() {
            Outcome::Demo(d) => assert!(d.all_detected, "the demo finds every planted fault"),
            other => panic!("demo returned {other:?}"),
        }
        Some((dir, storage))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

/// A fresh storage holding copies of the demo builds `builds` (sparse files stay sparse enough:
/// the demo images are 16 MiB).
fn storage_with(builds: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let src = demo().expect("demo storage");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    for b in builds {
        let to = root.join(b);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(src.join(b)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    (dir, root)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_header(path: &Path) -> Header {
    header::parse(&std::fs::read(path).unwrap()).unwrap()
}

fn write_header(path: &Path, h: &Header) {
    std::fs::write(path, header::try_encode(h).unwrap()).unwrap();
}

/// A V4/V5 header file with `inner` as its (LZ4-framed) inner block and the meta and flags of
/// the header at `like`: for inner blocks the encoder refuses to write.
fn raw_framed(like: &Path, inner: &[u8]) -> Vec<u8> {
    let orig = std::fs::read(like).unwrap();
    let mut out = orig[..header::META_LEN + 1].to_vec();
    out.extend_from_slice(&u32::try_from(inner.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&tmpl::compress::lz4_encode(inner));
    out
}

/// The builds section of a V5 header's inner block (what precedes the build table).
fn builds_section(h: &Header) -> Vec<u8> {
    let empty = Header { mappings: vec![], ..h.clone() };
    let inner = header::encode_inner(&empty).unwrap();
    // An empty build table (u32 0) and no entries (u32 0) follow the builds section.
    inner[..inner.len() - 8].to_vec()
}

/// One hostile build: what it is, the id verify must report, and how it is made. Returns the
/// storage and the verify arguments.
struct Scenario {
    expect: &'static str,
    make: fn() -> (tempfile::TempDir, PathBuf, Vec<String>),
}

fn one(root: PathBuf, dir: tempfile::TempDir, args: &[&str]) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    (dir, root, args.iter().map(|s| s.to_string()).collect())
}

/// A copy of the demo build `build` changed by `edit` (given the build folder), verified alone.
fn edited(build: &'static str, edit: fn(&Path)) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[build]);
    edit(&root.join(build));
    one(root, d, &[build])
}

/// Copies of `builds`, verified with `args`, unchanged.
fn one_of(builds: &[&str], args: &[&str]) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(builds);
    one(root, d, args)
}

fn data_file(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n != prefix && !n.ends_with(".header") && !n.contains("uncompressed-size")
        })
        .unwrap_or_else(|| panic!("no compressed {prefix} in {}", dir.display()))
}

/// Where the first build's frame table starts in a V4/V5 inner block: after the build count (4)
/// and the entry's ID (16), size (8) and SHA-256 (32). Its compression type (u32), frame count
/// (u32), then 24-byte frames (start U i64, start C i64, size U i32, size C i32) follow.
const FT: usize = 4 + 16 + 8 + 32;

/// The zstd V4 base with its rootfs header's inner block changed by `edit`.
fn frame_table_case(edit: fn(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[ids::ZSTD_BASE]);
    let p = root.join(ids::ZSTD_BASE).join("rootfs.ext4.header");
    let mut inner = header::encode_inner(&read_header(&p)).unwrap();
    edit(&mut inner);
    std::fs::write(&p, raw_framed(&p, &inner)).unwrap();
    one(root, d, &[ids::ZSTD_BASE])
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

/// The V5 child with a rootfs header whose mapping columns hold `entries` (offset page delta,
/// length in pages, zigzag storage page delta, build index), over a one-build table.
fn v5_entries_case(entries: &[(u64, u64, u64, u64)]) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LZ4_CHILD]);
    let p = root.join(ids::LZ4_CHILD).join("rootfs.ext4.header");
    let h = read_header(&p);
    let mut inner = builds_section(&h);
    inner.extend_from_slice(&1u32.to_le_bytes());
    inner.extend_from_slice(h.build_id.as_bytes());
    inner.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_le_bytes());
    for column in 0..4 {
        for e in entries {
            put_uvarint(&mut inner, [e.0, e.1, e.2, e.3][column]);
        }
    }
    std::fs::write(&p, raw_framed(&p, &inner)).unwrap();
    one(root, d, &[ids::LZ4_CHILD])
}

/// A copy of the demo's legacy (headerless) build whose rootfs.ext4 is made anew from the demo's
/// minimal tree after `edit` changed it (real `mkfs.ext4 -d`).
fn tree_case(edit: fn(&Path)) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[ids::LEGACY]);
    let tree = d.path().join("tree");
    tmpl::demo::rootfs_tree(&tree, ids::LEGACY, &[]).unwrap();
    edit(&tree);
    tmpl::demo::make_image(&tree, &root.join(ids::LEGACY).join("rootfs.ext4"), 16 << 20).unwrap();
    one(root, d, &[ids::LEGACY])
}

fn rm(t: &Path, rel: &str) {
    std::fs::remove_file(t.join(rel)).unwrap();
}

fn link(t: &Path, rel: &str, target: &str) {
    std::os::unix::fs::symlink(target, t.join(rel)).unwrap();
}

fn file(t: &Path, rel: &str, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = t.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `/sbin/init` replaced by the shell script `script` (with a `/bin/sh`).
fn wrapper(t: &Path, script: &[u8]) {
    shell(t);
    rm(t, "sbin/init");
    file(t, "sbin/init", script, 0o755);
}

/// A `/bin/sh` (a stand-in ELF for this machine: tmpl reads it, never runs it).
fn shell(t: &Path) {
    file(t, "bin/sh", &tmpl::demo::stand_in_envd(), 0o755);
}

/// `metadata.json` of the build folder `b` changed by `edit`.
fn meta(b: &Path, edit: fn(&mut serde_json::Value)) {
    let p = b.join("metadata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// `/sbin/init` a link to systemd (a stand-in ELF named systemd); `unit` as
/// /etc/systemd/system/envd.service, enabled by a multi-user.target.wants link when `enabled`.
fn systemd(t: &Path, unit: Option<&[u8]>, enabled: bool) {
    rm(t, "sbin/init");
    file(t, "lib/systemd/systemd", &tmpl::demo::stand_in_envd(), 0o755);
    link(t, "sbin/init", "/lib/systemd/systemd");
    if let Some(u) = unit {
        file(t, "etc/systemd/system/envd.service", u, 0o644);
    }
    if enabled {
        std::fs::create_dir_all(t.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        link(t, "etc/systemd/system/multi-user.target.wants/envd.service", "/etc/systemd/system/envd.service");
    }
}

/// A dynamically linked ELF for this machine whose loader (PT_INTERP) is not in the image.
fn dynamic_elf() -> Vec<u8> {
    let machine = tmpl::snapshot::Arch::host().unwrap_or(tmpl::snapshot::Arch::X86_64).elf_machine();
    tmpl::elf::synthetic(machine, Some("/lib/ld-musl-x86_64.so.1"))
}

/// A manifest naming one injected file, `/usr/bin/envd` as a 1-byte file (the demo's is longer).
const DRIFTED_MANIFEST: &str = r#"{"format_version":1,"written_by":"tmpl","written_at":"2026-01-01T00:00:00Z","build_id":"10000000-0000-4000-8000-000000000004","backend":"e2fs","files":[{"path":"/usr/bin/envd","kind":"file","len":1,"mode":493,"uid":0,"gid":0}]}"#;

/// The zstd V4 base's own entry in the builds section of `h`.
fn own(h: &mut Header) -> &mut header::BuildInfo {
    let id = h.build_id;
    h.builds.iter_mut().find(|b| b.build == id).expect("the header lists its own build")
}

/// The zstd V4 base with its rootfs header changed by `edit`, verified with `args`.
fn zstd_header(args: &[&str], edit: fn(&mut Header)) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[ids::ZSTD_BASE]);
    let p = root.join(ids::ZSTD_BASE).join("rootfs.ext4.header");
    let mut h = read_header(&p);
    edit(&mut h);
    write_header(&p, &h);
    one(root, d, args)
}

/// `debugfs -w -R cmd image` (real e2fsprogs writes the damage).
fn debugfs(image: &Path, cmd: &str) {
    let out = std::process::Command::new("debugfs").args(["-w", "-R", cmd]).arg(image).output().unwrap();
    assert!(out.status.success(), "debugfs {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// [`tree_case`] with the demo's minimal tree unchanged, then `cmd` run on the image by debugfs.
fn damaged_image(cmd: &str) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root, args) = tree_case(|_| {});
    debugfs(&root.join(ids::LEGACY).join("rootfs.ext4"), cmd);
    (d, root, args)
}

/// The legacy build with `snap` as its snapfile.
fn snapfile_case(snap: Vec<u8>) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (d, root) = storage_with(&[ids::LEGACY]);
    std::fs::write(root.join(ids::LEGACY).join("snapfile"), snap).unwrap();
    one(root, d, &[ids::LEGACY])
}

fn host_arch() -> tmpl::snapshot::Arch {
    tmpl::snapshot::Arch::host().unwrap_or(tmpl::snapshot::Arch::X86_64)
}

/// The build folder's snapfile replaced by a link to the sysfs attribute `target`.
fn sys_link(b: &Path, target: &str) {
    assert!(Path::new(target).exists(), "{target} exists on every Linux host");
    rm(b, "snapfile");
    link(b, "snapfile", target);
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        expect: "node.kernel-missing",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            let (kernels, fcs) = (d.path().join("fc-kernels"), d.path().join("fc-versions"));
            std::fs::create_dir_all(&kernels).unwrap();
            std::fs::create_dir_all(&fcs).unwrap();
            let (k, f) = (kernels.to_str().unwrap().to_string(), fcs.to_str().unwrap().to_string());
            let args = [ids::BASE, "--host-kernels-dir", &k, "--firecracker-versions-dir", &f];
            one(root, d, &args)
        },
    },
    Scenario {
        expect: "build.empty",
        make: || {
            let (d, root) = storage_with(&[]);
            std::fs::create_dir_all(root.join("0e000000-0000-4000-8000-000000000001")).unwrap();
            one(root, d, &["0e000000-0000-4000-8000-000000000001"])
        },
    },
    Scenario {
        expect: "build.folder-not-uuid",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::rename(root.join(ids::LEGACY), root.join("legacy-copy")).unwrap();
            let p = root.join("legacy-copy").to_str().unwrap().to_string();
            let (d, root, _) = one(root, d, &[]);
            (d, root, vec![p])
        },
    },
    Scenario {
        expect: "build.unreadable",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::remove_file(root.join(ids::LEGACY).join("snapfile")).unwrap();
            std::fs::create_dir(root.join(ids::LEGACY).join("snapfile")).unwrap();
            one(root, d, &["--all"])
        },
    },
    Scenario {
        expect: "rootfs.unsupported-features",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            let img = root.join(ids::LEGACY).join("rootfs.ext4");
            let b = std::fs::read(&img).unwrap();
            let incompat = u32::from_le_bytes(b[1024 + 0x60..1024 + 0x64].try_into().unwrap());
            // 0x20000: casefold, which tmpl's reader does not support.
            patch(&img, 1024 + 0x60, &(incompat | 0x20000).to_le_bytes());
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.fs-errors",
        make: || {
            edited(ids::LEGACY, |b| {
                let img = b.join("rootfs.ext4");
                let b = std::fs::read(&img).unwrap();
                let state = u16::from_le_bytes(b[1024 + 0x3A..1024 + 0x3C].try_into().unwrap());
                patch(&img, 1024 + 0x3A, &(state | 0x2).to_le_bytes());
            })
        },
    },
    Scenario {
        expect: "snapfile.too-large",
        make: || {
            edited(ids::LEGACY, |b| {
                let snap = b.join("snapfile");
                let f = std::fs::OpenOptions::new().write(true).open(&snap).unwrap();
                f.set_len(tmpl::snapshot::STATE_LIMIT + 4096).unwrap();
            })
        },
    },
    Scenario {
        expect: "snapfile.unused",
        make: || {
            let (d, root) = storage_with(&[ids::BASE, ids::FS_ONLY]);
            std::fs::copy(root.join(ids::BASE).join("snapfile"), root.join(ids::FS_ONLY).join("snapfile")).unwrap();
            one(root, d, &[ids::FS_ONLY])
        },
    },
    Scenario {
        expect: "metadata.no-template",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("metadata.json");
                let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                v["template"].as_object_mut().expect("metadata has a template object").remove("build_id");
                std::fs::write(&p, v.to_string()).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.block-size",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                h.block_size = 1000;
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.unknown-flags",
        make: || {
            edited(ids::ZSTD_BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                h.flags |= 0x80;
                write_header(&p, &h);
            })
        },
    },
    Scenario {
        expect: "header.v5-build-count-cap",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LZ4_CHILD]);
            let p = root.join(ids::LZ4_CHILD).join("rootfs.ext4.header");
            let mut inner = builds_section(&read_header(&p));
            inner.extend_from_slice(&u32::try_from(header::MAX_V5_BUILDS + 1).unwrap().to_le_bytes());
            std::fs::write(&p, raw_framed(&p, &inner)).unwrap();
            one(root, d, &[ids::LZ4_CHILD])
        },
    },
    Scenario {
        expect: "header.v5-entry-count-cap",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LZ4_CHILD]);
            let p = root.join(ids::LZ4_CHILD).join("rootfs.ext4.header");
            let mut inner = builds_section(&read_header(&p));
            inner.extend_from_slice(&0u32.to_le_bytes());
            inner.extend_from_slice(&u32::try_from(header::MAX_V5_ENTRIES + 1).unwrap().to_le_bytes());
            std::fs::write(&p, raw_framed(&p, &inner)).unwrap();
            one(root, d, &[ids::LZ4_CHILD])
        },
    },
    Scenario {
        expect: "header.v5-bad-entry",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LZ4_CHILD]);
            let p = root.join(ids::LZ4_CHILD).join("rootfs.ext4.header");
            let h = read_header(&p);
            let mut inner = builds_section(&h);
            inner.extend_from_slice(&1u32.to_le_bytes());
            inner.extend_from_slice(h.build_id.as_bytes());
            inner.extend_from_slice(&1u32.to_le_bytes());
            // One entry whose page number (2^62) times 4096 does not fit in 64 bits.
            let mut v = 1u64 << 62;
            while v >= 0x80 {
                inner.push(u8::try_from(v & 0x7f).unwrap() | 0x80);
                v >>= 7;
            }
            inner.push(u8::try_from(v).unwrap());
            inner.extend_from_slice(&[1, 0, 0]); // length 1 page, storage delta 0, build index 0
            std::fs::write(&p, raw_framed(&p, &inner)).unwrap();
            one(root, d, &[ids::LZ4_CHILD])
        },
    },
    Scenario {
        expect: "data.frame-corrupt",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let dir = root.join(ids::ZSTD_BASE);
            let h = read_header(&dir.join("rootfs.ext4.header"));
            let frames = &h.builds.iter().find(|b| b.build == h.build_id).unwrap().frames.frames;
            // The first frame's zstd magic overwritten: that frame does not decompress.
            patch(&data_file(&dir, "rootfs.ext4"), frames[0].start_c, b"JUNK");
            one(root, d, &["--deep", ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "metadata.invalid",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            std::fs::write(root.join(ids::BASE).join("metadata.json"), b"{ not json").unwrap();
            one(root, d, &[ids::BASE])
        },
    },
    Scenario {
        expect: "metadata.future-version",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            let p = root.join(ids::BASE).join("metadata.json");
            let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v["version"] = serde_json::json!(99);
            std::fs::write(&p, v.to_string()).unwrap();
            one(root, d, &[ids::BASE])
        },
    },
    Scenario {
        expect: "metadata.unknown-firecracker",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            let p = root.join(ids::BASE).join("metadata.json");
            let text = std::fs::read_to_string(&p).unwrap().replace(tmpl::demo::FC_VERSION, "v9.99.0_0000000");
            std::fs::write(&p, text).unwrap();
            one(root, d, &[ids::BASE])
        },
    },
    Scenario {
        expect: "memfile.missing",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::remove_file(root.join(ids::LEGACY).join("memfile")).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "memfile.not-block-multiple",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            let f = std::fs::OpenOptions::new().write(true).open(root.join(ids::LEGACY).join("memfile")).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len + 1).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.missing",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::remove_file(root.join(ids::LEGACY).join("rootfs.ext4")).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.not-block-multiple",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            let f = std::fs::OpenOptions::new().write(true).open(root.join(ids::LEGACY).join("rootfs.ext4")).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len + 1).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.truncated",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            let f = std::fs::OpenOptions::new().write(true).open(root.join(ids::LEGACY).join("rootfs.ext4")).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.not-ext4",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            patch(&root.join(ids::LEGACY).join("rootfs.ext4"), 1024 + 0x38, &[0, 0]);
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "rootfs.needs-recovery",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            let img = root.join(ids::LEGACY).join("rootfs.ext4");
            let b = std::fs::read(&img).unwrap();
            let incompat = u32::from_le_bytes(b[1024 + 0x60..1024 + 0x64].try_into().unwrap());
            // 0x4: needs_recovery (the journal holds transactions).
            patch(&img, 1024 + 0x60, &(incompat | 0x4).to_le_bytes());
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "snapfile.missing",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::remove_file(root.join(ids::LEGACY).join("snapfile")).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "snapfile.too-short",
        make: || {
            let (d, root) = storage_with(&[ids::LEGACY]);
            std::fs::write(root.join(ids::LEGACY).join("snapfile"), b"abc").unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "snapfile.foreign-arch",
        make: || {
            use tmpl::snapshot::Arch;
            let (d, root) = storage_with(&[ids::LEGACY]);
            let foreign = if Arch::host() == Some(Arch::X86_64) { Arch::Aarch64 } else { Arch::X86_64 };
            let snap = tmpl::fixtures::snapfile::build_bincode(
                foreign,
                "4.0.0",
                &tmpl::fixtures::snapfile::bincode_state_prefix("4.0.0", 64, "vmlinux"),
            );
            std::fs::write(root.join(ids::LEGACY).join("snapfile"), snap).unwrap();
            one(root, d, &[ids::LEGACY])
        },
    },
    Scenario {
        expect: "header.invalid",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            std::fs::write(root.join(ids::BASE).join("memfile.header"), [1u8; 10]).unwrap();
            one(root, d, &[ids::BASE])
        },
    },
    Scenario {
        expect: "header.unknown-version",
        make: || {
            let (d, root) = storage_with(&[ids::BASE]);
            patch(&root.join(ids::BASE).join("memfile.header"), 0, &9u64.to_le_bytes());
            one(root, d, &[ids::BASE])
        },
    },
    Scenario {
        expect: "data.sidecar-invalid",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let dir = root.join(ids::ZSTD_BASE);
            let data = data_file(&dir, "rootfs.ext4");
            let mut side = data.into_os_string();
            side.push(".uncompressed-size");
            std::fs::write(side, b"not a number").unwrap();
            one(root, d, &[ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "data.plain-and-compressed",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LEGACY]);
            std::fs::copy(root.join(ids::LEGACY).join("rootfs.ext4"), root.join(ids::ZSTD_BASE).join("rootfs.ext4"))
                .unwrap();
            one(root, d, &[ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "header.no-frame-table",
        make: || {
            edited(ids::ZSTD_BASE, |b| {
                std::fs::remove_file(b.join("rootfs.ext4.header")).unwrap();
            })
        },
    },
    Scenario {
        expect: "leftover.work-folder",
        make: || {
            edited(ids::LEGACY, |b| {
                std::fs::create_dir(b.join(".tmpl-work-1234")).unwrap();
            })
        },
    },
    Scenario {
        expect: "edit.interrupted-commit",
        make: || {
            edited(ids::LEGACY, |b| {
                std::fs::write(b.join(".tmpl-commit.json"), b"{}").unwrap();
            })
        },
    },
    Scenario { expect: "init.missing", make: || tree_case(|t| rm(t, "sbin/init")) },
    Scenario {
        expect: "init.loop",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                link(t, "sbin/init", "/sbin/init2");
                link(t, "sbin/init2", "/sbin/init");
            })
        },
    },
    Scenario {
        expect: "init.not-executable",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                file(t, "sbin/init", &tmpl::demo::stand_in_envd(), 0o644);
            })
        },
    },
    Scenario {
        expect: "init.not-runnable",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                file(t, "sbin/init", b"\x01\x02 neither ELF nor script", 0o755);
            })
        },
    },
    Scenario {
        expect: "init.interpreter-missing",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                file(t, "sbin/init", b"#!/bin/sh\nexec /usr/bin/envd\n", 0o755);
            })
        },
    },
    Scenario {
        expect: "wrapper.crlf",
        make: || {
            tree_case(|t| {
                wrapper(t, b"#!/bin/sh\r\nexec /usr/bin/envd\r\n");
            })
        },
    },
    Scenario {
        expect: "wrapper.exec-target-missing",
        make: || {
            tree_case(|t| {
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/not-there\n");
            })
        },
    },
    Scenario {
        expect: "wrapper.pid1-exits",
        make: || {
            tree_case(|t| {
                wrapper(t, b"#!/bin/sh\n/usr/bin/envd &\necho started\n");
            })
        },
    },
    Scenario {
        expect: "envd.missing",
        make: || {
            tree_case(|t| {
                rm(t, "usr/bin/envd");
                wrapper(t, b"#!/bin/sh\nmount -t proc proc /proc\n/usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "envd.empty",
        make: || {
            tree_case(|t| {
                file(t, "usr/bin/envd", b"", 0o755);
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "envd.not-elf",
        make: || {
            tree_case(|t| {
                file(t, "usr/bin/envd", b"this is not a program\n", 0o755);
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "envd.not-executable",
        make: || {
            tree_case(|t| {
                file(t, "usr/bin/envd", &tmpl::demo::stand_in_envd(), 0o644);
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "envd.nonstandard-path",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                rm(t, "usr/bin/envd");
                file(t, "opt/e2b/envd", &tmpl::demo::stand_in_envd(), 0o755);
                link(t, "sbin/init", "/opt/e2b/envd");
            })
        },
    },
    Scenario { expect: "rootfs.resolv-conf-missing", make: || tree_case(|t| rm(t, "etc/resolv.conf")) },
    Scenario {
        expect: "rootfs.resolv-conf-dangling",
        make: || {
            tree_case(|t| {
                rm(t, "etc/resolv.conf");
                link(t, "etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf");
            })
        },
    },
    Scenario {
        expect: "header.build-id-mismatch",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("memfile.header");
                let mut h = read_header(&p);
                h.build_id = tmpl::vocab::BuildId::parse(ids::GONE).unwrap();
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.unaligned",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                h.mappings[0].length += 1;
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.coverage",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                // The last mapping one block short: the device's end is mapped by nothing.
                let last = h.mappings.len() - 1;
                h.mappings[last].length -= h.block_size;
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.mapping-order",
        make: || {
            edited(ids::BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                assert!(h.mappings.len() > 1, "the demo base has several mappings");
                h.mappings.swap(0, 1);
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.v4-inner-length-mismatch",
        make: || {
            edited(ids::ZSTD_BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let b = std::fs::read(&p).unwrap();
                let at = header::META_LEN + 1;
                let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                patch(&p, u64::try_from(at).unwrap(), &(len + 8).to_le_bytes());
            })
        },
    },
    Scenario {
        expect: "header.v4-inner-too-large",
        make: || {
            edited(ids::ZSTD_BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                let too_big = u32::try_from(header::MAX_INNER_LEN + 1).unwrap();
                patch(&p, u64::try_from(header::META_LEN + 1).unwrap(), &too_big.to_le_bytes());
            })
        },
    },
    Scenario {
        expect: "header.v4-bad-lz4",
        make: || {
            edited(ids::ZSTD_BASE, |b| {
                let p = b.join("rootfs.ext4.header");
                patch(&p, u64::try_from(header::META_LEN + 5).unwrap(), b"NOPE");
            })
        },
    },
    Scenario {
        expect: "header.frame-table-type-zero",
        make: || frame_table_case(|inner| inner[FT..FT + 4].copy_from_slice(&0u32.to_le_bytes())),
    },
    Scenario {
        expect: "header.frame-table-unknown-type",
        make: || frame_table_case(|inner| inner[FT..FT + 4].copy_from_slice(&9u32.to_le_bytes())),
    },
    Scenario {
        expect: "header.frame-count-cap",
        make: || {
            frame_table_case(|inner| {
                let n = u32::try_from(header::MAX_FRAMES + 1).unwrap();
                inner[FT + 4..FT + 8].copy_from_slice(&n.to_le_bytes());
            })
        },
    },
    Scenario {
        expect: "header.frame-table-invalid",
        make: || frame_table_case(|inner| inner[FT + 8 + 16..FT + 8 + 20].copy_from_slice(&0u32.to_le_bytes())),
    },
    Scenario { expect: "header.v5-build-index", make: || v5_entries_case(&[(0, 1, 0, 5)]) },
    Scenario { expect: "header.v5-overlap", make: || v5_entries_case(&[(0, 2, 0, 0), (0, 1, 4, 0)]) },
    Scenario { expect: "data.no-checksum", make: || one_of(&[ids::BASE], &["--deep", ids::BASE]) },
    Scenario {
        expect: "data.checksum-mismatch",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let p = root.join(ids::ZSTD_BASE).join("rootfs.ext4.header");
            let mut h = read_header(&p);
            let own = h.build_id;
            h.builds.iter_mut().find(|b| b.build == own).unwrap().checksum[0] ^= 1;
            write_header(&p, &h);
            one(root, d, &["--deep", ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "data.frame-checksum",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let dir = root.join(ids::ZSTD_BASE);
            let h = read_header(&dir.join("rootfs.ext4.header"));
            let f = h.builds.iter().find(|b| b.build == h.build_id).unwrap().frames.frames[0];
            // The frame's last 4 bytes are its zstd content checksum.
            let at = f.start_c + u64::from(f.size_c) - 4;
            let data = data_file(&dir, "rootfs.ext4");
            let old = std::fs::read(&data).unwrap()[usize::try_from(at).unwrap()];
            patch(&data, at, &[old ^ 0xFF]);
            one(root, d, &["--deep", ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "data.sidecar-mismatch",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let mut side = data_file(&root.join(ids::ZSTD_BASE), "rootfs.ext4").into_os_string();
            side.push(".uncompressed-size");
            std::fs::write(side, b"12345").unwrap();
            one(root, d, &[ids::ZSTD_BASE])
        },
    },
    Scenario { expect: "header.v4-truncated", make: || frame_table_case(|inner| inner.truncate(inner.len() - 3)) },
    Scenario {
        expect: "memfile.missing-data",
        make: || {
            edited(ids::BASE, |b| {
                std::fs::remove_file(b.join("memfile")).unwrap();
            })
        },
    },
    Scenario {
        expect: "rootfs.missing-data",
        make: || {
            edited(ids::BASE, |b| {
                std::fs::remove_file(b.join("rootfs.ext4")).unwrap();
            })
        },
    },
    Scenario {
        expect: "header.ancestor-data-missing",
        make: || {
            let (d, root) = storage_with(&[ids::BASE, ids::CHILD]);
            std::fs::remove_file(root.join(ids::BASE).join("rootfs.ext4")).unwrap();
            one(root, d, &[ids::CHILD])
        },
    },
    Scenario {
        expect: "leftover.backup",
        make: || {
            edited(ids::LEGACY, |b| {
                std::fs::create_dir(b.join(".tmpl-backup-1")).unwrap();
            })
        },
    },
    Scenario {
        expect: "metadata.legacy-version",
        make: || edited(ids::BASE, |b| meta(b, |v| v["version"] = 1.into())),
    },
    Scenario {
        expect: "metadata.no-version",
        make: || {
            edited(ids::BASE, |b| {
                meta(b, |v| {
                    v.as_object_mut().unwrap().remove("version");
                })
            })
        },
    },
    Scenario {
        expect: "metadata.bad-field",
        make: || edited(ids::BASE, |b| meta(b, |v| v["template"]["kernel_version"] = 6.into())),
    },
    Scenario {
        expect: "metadata.missing-versions",
        make: || edited(ids::BASE, |b| meta(b, |v| v["template"]["kernel_version"] = "".into())),
    },
    Scenario {
        expect: "manifest.invalid",
        make: || edited(ids::LEGACY, |b| std::fs::write(b.join("tmpl-manifest.json"), b"{ not json").unwrap()),
    },
    Scenario {
        expect: "manifest.drift",
        make: || edited(ids::LEGACY, |b| std::fs::write(b.join("tmpl-manifest.json"), DRIFTED_MANIFEST).unwrap()),
    },
    Scenario {
        expect: "leftover.fork",
        make: || {
            edited(ids::LEGACY, |b| {
                let fork = b.parent().unwrap().join(".tmpl-fork-20000000-0000-4000-8000-000000000009.partial");
                let owner = format!(r#"{{"source":"{}","pid":1,"started_at":"2026-01-01T00:00:00Z"}}"#, ids::LEGACY);
                file(&fork, ".tmpl-fork.json", owner.as_bytes(), 0o644);
            })
        },
    },
    Scenario { expect: "systemd.envd-service-missing", make: || tree_case(|t| systemd(t, None, false)) },
    Scenario {
        expect: "systemd.envd-masked",
        make: || {
            tree_case(|t| {
                systemd(t, None, true);
                link(t, "etc/systemd/system/envd.service", "/dev/null");
            })
        },
    },
    Scenario {
        expect: "systemd.envd-not-enabled",
        make: || tree_case(|t| systemd(t, Some(b"[Service]\nExecStart=/usr/bin/envd\n"), false)),
    },
    Scenario {
        expect: "systemd.no-exec-start",
        make: || tree_case(|t| systemd(t, Some(b"[Service]\nType=simple\n"), true)),
    },
    Scenario {
        expect: "systemd.exec-start-missing",
        make: || tree_case(|t| systemd(t, Some(b"[Service]\nExecStart=/usr/bin/not-there\n"), true)),
    },
    Scenario {
        expect: "systemd.envd-flag",
        make: || tree_case(|t| systemd(t, Some(b"[Service]\nExecStart=/usr/bin/envd -debug\n"), true)),
    },
    Scenario {
        expect: "init.loader-missing",
        make: || {
            tree_case(|t| {
                rm(t, "sbin/init");
                file(t, "sbin/init", &dynamic_elf(), 0o755);
            })
        },
    },
    Scenario {
        expect: "envd.loader-missing",
        make: || {
            tree_case(|t| {
                file(t, "usr/bin/envd", &dynamic_elf(), 0o755);
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "envd.truncated",
        make: || {
            tree_case(|t| {
                let mut elf = tmpl::demo::stand_in_envd();
                // The PT_LOAD's p_filesz (program headers start at 64; p_filesz is at +32): 1 MiB
                // of a file that has a few hundred bytes.
                elf[96..104].copy_from_slice(&(1u64 << 20).to_le_bytes());
                file(t, "usr/bin/envd", &elf, 0o755);
                wrapper(t, b"#!/bin/sh\nexec /usr/bin/envd\n");
            })
        },
    },
    Scenario {
        expect: "rootfs.over-cap",
        make: || {
            tree_case(|t| {
                // A wrapper over the 1 MiB cap on scripts.
                let mut script = b"#!/bin/sh\nexec /usr/bin/envd\n".to_vec();
                script.resize(2 << 20, b'#');
                wrapper(t, &script);
            })
        },
    },
    Scenario {
        expect: "rootfs.reader-panic",
        // ext4-view 1.0.0 panics on a linear directory block whose inode has the htree flag
        // (EXT4_INDEX_FL 0x1000, beside EXTENTS_FL 0x80000): see src/rootfs/guard.rs.
        make: || damaged_image("sif /sbin flags 0x81000"),
    },
    Scenario {
        expect: "init.unreadable",
        // /sbin's extent header magic zeroed: the directory holding init cannot be read.
        make: || damaged_image("sif /sbin block[0] 0"),
    },
    Scenario {
        expect: "header.build-entry-invalid",
        make: || zstd_header(&[ids::ZSTD_BASE], |h| own(h).file_size = -1),
    },
    Scenario {
        expect: "header.unused-data",
        make: || {
            zstd_header(&[ids::ZSTD_BASE], |h| {
                for m in &mut h.mappings {
                    m.build = tmpl::vocab::BuildId::nil();
                }
            })
        },
    },
    Scenario {
        expect: "header.frame-table-gap",
        make: || {
            zstd_header(&[ids::ZSTD_BASE], |h| {
                // The last mapping reads uncompressed bytes past the last frame.
                let end = own(h).frames.frames.last().unwrap().end_u();
                let id = h.build_id;
                h.mappings.iter_mut().rfind(|m| m.build == id).unwrap().storage_offset = end;
            })
        },
    },
    Scenario { expect: "data.size-mismatch", make: || zstd_header(&[ids::ZSTD_BASE], |h| own(h).file_size += 4096) },
    Scenario {
        expect: "data.length-mismatch",
        make: || zstd_header(&["--deep", ids::ZSTD_BASE], |h| own(h).file_size += 4096),
    },
    Scenario {
        expect: "data.frame-size",
        make: || {
            zstd_header(&["--deep", ids::ZSTD_BASE], |h| {
                // The first frame claims one block more than it decompresses to.
                let frames = &mut own(h).frames.frames;
                frames[0].size_u += 4096;
                for f in &mut frames[1..] {
                    f.start_u += 4096;
                }
            })
        },
    },
    Scenario {
        expect: "data.read-error",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE]);
            let data = data_file(&root.join(ids::ZSTD_BASE), "rootfs.ext4");
            let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
            f.set_len(f.metadata().unwrap().len() / 2).unwrap();
            one(root, d, &["--deep", ids::ZSTD_BASE])
        },
    },
    Scenario {
        expect: "snapfile.memory-regions",
        make: || {
            use tmpl::fixtures::snapfile::{self as fc, Vm};
            snapfile_case(fc::snapfile(&fc::V1_12_1, &Vm { with_regions: false, ..Vm::new(64) }))
        },
    },
    Scenario {
        expect: "snapfile.state-undecodable",
        make: || snapfile_case(tmpl::fixtures::snapfile::build_bincode(host_arch(), "4.0.0", b"\x01")),
    },
    Scenario {
        expect: "snapfile.bad-header",
        make: || {
            let mut snap = tmpl::fixtures::snapfile::build_bincode(host_arch(), "4.0.0", b"");
            // The version string's length (after the 8-byte magic): 1 TiB.
            snap[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
            snapfile_case(snap)
        },
    },
    Scenario {
        expect: "data.partial-frame-table",
        make: || {
            let (d, root) = storage_with(&[ids::ZSTD_BASE, ids::LZ4_CHILD]);
            // The child's rootfs header keeps a trimmed table of the base's frames (its frames
            // start past offset 0), and the base's own header (with the full table) is gone.
            let p = root.join(ids::LZ4_CHILD).join("rootfs.ext4.header");
            let mut h = read_header(&p);
            let base = tmpl::vocab::BuildId::parse(ids::ZSTD_BASE).unwrap();
            for f in &mut h.builds.iter_mut().find(|b| b.build == base).unwrap().frames.frames {
                f.start_u += 4096;
            }
            write_header(&p, &h);
            std::fs::remove_file(root.join(ids::ZSTD_BASE).join("rootfs.ext4.header")).unwrap();
            one(root, d, &["--deep", ids::LZ4_CHILD])
        },
    },
    Scenario {
        expect: "header.too-many-builds",
        make: || {
            edited(ids::BASE, |b| {
                // One block from each of 65536 builds (one more than tmpl follows).
                let p = b.join("rootfs.ext4.header");
                let mut h = read_header(&p);
                let bs = h.block_size;
                h.mappings = (0..=u64::from(u16::MAX))
                    .map(|i| header::Mapping {
                        offset: i * bs,
                        length: bs,
                        build: tmpl::vocab::BuildId::parse(&format!("70000000-0000-4000-8000-{i:012x}")).unwrap(),
                        storage_offset: 0,
                    })
                    .collect();
                std::fs::write(&p, header::encode(&h)).unwrap();
            })
        },
    },
    Scenario {
        expect: "access.denied",
        // Root passes mode bits, but the kernel refuses to open a write-only sysfs attribute
        // for reading (EACCES, kernfs has no read for it): a snapfile linked to one.
        make: || edited(ids::LEGACY, |b| sys_link(b, "/sys/bus/platform/uevent")),
    },
    Scenario {
        expect: "snapfile.unreadable",
        // Opens, but reading fails (EINVAL: the loopback device has no link speed).
        make: || edited(ids::LEGACY, |b| sys_link(b, "/sys/class/net/lo/speed")),
    },
    Scenario {
        expect: "edit.commit-running",
        make: || {
            edited(ids::LEGACY, |b| {
                std::fs::write(b.join(".tmpl-commit.json"), b"{}").unwrap();
                // Another process holds the build folder's flock, as a committing edit does, until
                // the journal goes (with the scenario's temp dir); `locked` says it has the lock.
                let locked = b.parent().unwrap().join("locked");
                let script = format!(
                    "touch '{}'; while [ -e '{}' ]; do sleep 0.1; done",
                    locked.display(),
                    b.join(".tmpl-commit.json").display()
                );
                let mut holder =
                    std::process::Command::new("flock").arg(b).args(["sh", "-c", &script]).spawn().unwrap();
                // Reaped when it ends.
                std::thread::spawn(move || holder.wait());
                let start = std::time::Instant::now();
                while !locked.exists() {
                    assert!(start.elapsed().as_secs() < 30, "flock did not take the lock");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        },
    },
];

#[test]
fn each_hostile_build_gets_its_finding() {
    if demo().is_none() {
        return;
    }
    let mut failures = Vec::new();
    for s in SCENARIOS {
        let (_dir, root, args) = (s.make)();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = ids_of(&verify(&root, &args));
        if !got.contains(s.expect) {
            failures.push(format!("{}: verify {args:?} reported {got:?}", s.expect));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `check-kernel` in-process on a file that is no kernel, with a `.config` that sets nothing:
/// every requirement of an E2B guest is missing.
fn check_kernel_ids() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, config) = (dir.path().join("vmlinux.bin"), dir.path().join("config"));
    std::fs::write(&kernel, b"not a kernel").unwrap();
    // One option set, so it reads as a config; every requirement of an E2B guest is unset.
    std::fs::write(&config, "CONFIG_EXPERT=y\n").unwrap();
    let args = ["check-kernel", kernel.to_str().unwrap(), "--config", config.to_str().unwrap()];
    match run(&args).unwrap_or_else(|e| panic!("check-kernel: {e}")) {
        Outcome::CheckKernel(r) => r.findings.iter().map(|f| f.id.clone()).collect(),
        other => panic!("check-kernel returned {other:?}"),
    }
}

/// Catalog ids no in-process scenario produces, each for a reason a scenario cannot change. The
/// list may only shrink: an id here that a scenario produces, or that is not in the catalog,
/// fails the test.
/// - `build.check-failed`: the net under a panic inside the checks. A build produces it only
///   through a bug (tests/fuzz.rs asserts no mutated build ever does); the dependency panic
///   that is real (ext4-view, `rootfs.reader-panic` above) is caught closer by the rootfs guard.
/// - `leftover.mount`: needs a loop mount of a work copy left in the host namespace (root, a
///   mount that outlives the scenario). Covered by tests/mount.rs.
/// - `storage.unavailable`: a storage failing while a build is read needs an object-storage
///   server; tests/remote_commands.rs (`s3_faults`) produces it through a fault proxy in front
///   of moto.
const NOT_YET: &[&str] = &["build.check-failed", "leftover.mount", "storage.unavailable"];

#[test]
fn every_catalog_id_is_produced_in_process() {
    if demo().is_none() {
        return;
    }
    let mut produced: BTreeMap<String, String> = BTreeMap::new();
    for id in ids_of(&verify(demo().unwrap(), &["--all"])) {
        produced.entry(id).or_insert_with(|| "the demo storage".into());
    }
    for s in SCENARIOS {
        let (_dir, root, args) = (s.make)();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for id in ids_of(&verify(&root, &args)) {
            produced.entry(id).or_insert_with(|| s.expect.to_string());
        }
    }
    for id in check_kernel_ids() {
        produced.entry(id).or_insert_with(|| "check-kernel on a kernel configured with nothing".into());
    }
    let catalog: BTreeSet<&str> = tmpl::checks::catalog().iter().map(|c| c.id).collect();
    let strange: Vec<&String> = produced.keys().filter(|id| !catalog.contains(id.as_str())).collect();
    assert!(strange.is_empty(), "produced but not in the catalog: {strange:?}");
    let missing: Vec<&str> =
        catalog.iter().copied().filter(|id| !produced.contains_key(*id) && !NOT_YET.contains(id)).collect();
    let stale: Vec<&str> =
        NOT_YET.iter().copied().filter(|id| produced.contains_key(*id) || !catalog.contains(id)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "catalog ids produced by no in-process scenario: {missing:#?}\nNOT_YET entries that are produced or unknown: {stale:?}"
    );
}
