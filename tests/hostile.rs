//! Untrusted sizes, counts and dependencies in the read path (issue 12): each test makes the
//! hostile input with real tools (mkfs.ext4 -d, then debugfs to corrupt one inode the way a
//! damaged or crafted image would) and checks that tmpl answers with a finding, a JSON document
//! and a documented exit code — no abort, no panic, no unbounded read.
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "test and fixture data of known, small sizes"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::fixtures::{self, BUILD, Store, Tree};
use serde_json::Value;
use tmpl::device::Device;
use tmpl::rootfs::Rootfs;
use tmpl::rootfs::boot::{self, Context, End, Scan};

const OTHER: &str = "a2000000-0000-4000-8000-000000000002";

/// `debugfs -w -R CMD image`, asserting debugfs ran (it exits 0 even on errors, so the change is
/// checked by the callers through tmpl's view).
fn debugfs_w(image: &Path, cmd: &str) {
    assert!(common::require("debugfs"));
    let out = Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap())
        .args(["-w", "-R", cmd])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Run tmpl with `args` on `storage`: (exit code, the JSON document on stdout, stderr).
fn run_json(storage: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = common::tmpl().arg("--storage").arg(storage).arg("--json").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // A Rust panic message ("thread '…' panicked at …"); the words "panicked" in a finding about
    // the isolated ext4 reader are fine.
    assert!(!stderr.contains("panicked at"), "tmpl panicked: {stderr}");
    let code = out.status.code().unwrap_or_else(|| panic!("killed by a signal: {stderr}"));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {stderr}", String::from_utf8_lossy(&out.stdout)));
    (code, v, stderr)
}

fn ids(v: &Value, build: usize) -> Vec<String> {
    v["builds"][build]["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

/// A store with one healthy build (`OTHER`) and `BUILD` made from `setup`, then corrupted by
/// `corrupt` (given BUILD's image).
fn store(setup: impl FnOnce(&Tree, &fixtures::Bins), corrupt: impl FnOnce(&Path)) -> Option<Store> {
    let bins = fixtures::bins()?;
    let s = Store::new();
    let good = Tree::new(&s.dir.path().join("good"));
    good.envd_as_init(bins);
    s.full(OTHER, &good);
    let t = Tree::new(s.dir.path());
    setup(&t, bins);
    let img = s.full(BUILD, &t);
    corrupt(&img);
    Some(s)
}

/// Item 6: a symlink whose inode claims 64 GiB made tmpl try to allocate 64 GiB and abort (exit
/// 134, no JSON), and `verify --all` died with it. Now it is a finding on that build only.
#[test]
fn a_symlink_claiming_64_gib_is_a_finding_and_the_run_goes_on() {
    let Some(s) = store(
        |t, b| {
            t.envd_as_init(b);
        },
        |img| debugfs_w(img, "sif /sbin/init size 68719476736"),
    ) else {
        return;
    };
    let (code, v, _) = run_json(&s.w.root, &["verify", "--all"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["builds"].as_array().unwrap().len(), 2, "both builds are reported");
    let bi = v["builds"].as_array().unwrap().iter().position(|b| b["build_id"] == BUILD).unwrap();
    let found = ids(&v, bi);
    assert!(found.contains(&"rootfs.over-cap".into()) && found.contains(&"init.unreadable".into()), "{found:?}");
    let f = v["builds"][bi]["findings"].as_array().unwrap().iter().find(|f| f["id"] == "rootfs.over-cap").unwrap();
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("68719476736"), "{f}");
    let other = v["builds"].as_array().unwrap().iter().find(|b| b["build_id"] == OTHER).unwrap();
    assert_eq!(other["ok"], true, "{other:#}");
    // inspect and inspect --path answer too.
    let (code, v, _) = run_json(&s.w.root, &["inspect", BUILD]);
    assert_eq!(code, 0);
    assert_eq!(v["rootfs_anomalies"][0]["what"], "symlink target", "{:#}", v["rootfs_anomalies"]);
    let (code, v, _) = run_json(&s.w.root, &["inspect", BUILD, "--path", "/sbin/init"]);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(v["ok"], false);
}

/// Item 6: a directory claiming more than tmpl searches is refused before it is read, with a
/// finding; paths that do not go through it still resolve.
#[test]
fn a_directory_claiming_a_huge_size_is_not_searched() {
    let Some(s) = store(
        |t, b| {
            t.envd_as_init(b);
            t.file("/etc/systemd/system/x.conf", "x", 0o644);
        },
        |img| debugfs_w(img, "sif /etc/systemd size 68719476736"),
    ) else {
        return;
    };
    // A directory over the cap may be real (a million entries): a warning that it was not read.
    let (code, v, _) = run_json(&s.w.root, &["verify", BUILD]);
    assert_eq!(code, 0, "{v:#}");
    let f = v["builds"][0]["findings"].as_array().unwrap().iter().find(|f| f["id"] == "rootfs.over-cap").cloned();
    let f = f.unwrap_or_else(|| panic!("no rootfs.over-cap: {v:#}"));
    assert_eq!(f["severity"], "warning");
    assert!(f["message"].as_str().unwrap().contains("directory is 68719476736 bytes"), "{f}");
    assert!(!ids(&v, 0).contains(&"init.unreadable".into()), "init does not go through /etc/systemd");
}

/// Item 7: an envd inode and a wrapper inode claiming 1 TiB each. Reading them is bounded by
/// what the checks need (a head, a 64 MiB scan), not by what the inode claims: the bytes the
/// filesystem hands out are counted.
#[test]
fn a_terabyte_inode_costs_only_what_the_check_reads() {
    let Some(s) = store(
        |t, b| {
            t.copy("/usr/bin/envd", &b.envd).file("/sbin/init", "#!/usr/bin/envd\n", 0o755);
        },
        |img| {
            debugfs_w(img, "sif /usr/bin/envd size 1099511627776");
        },
    ) else {
        return;
    };
    let img = s.w.root.join(BUILD).join("rootfs.ext4");
    let fs = Rootfs::open(Arc::new(Device::plain_file(&img).unwrap())).unwrap();
    let facts = boot::gather(&fs, &Context { scan: Scan::Always, ..Context::default() });
    let envd = facts.envd.iter().find(|e| e.path == "/usr/bin/envd").unwrap();
    assert_eq!(envd.target.program.as_ref().unwrap().len, 1 << 40);
    assert!(fs.bytes_delivered() <= tmpl::envd::SCAN_LIMIT + (4 << 20), "{} bytes", fs.bytes_delivered());
    // inspect --path does not hash a terabyte: it says why there is no digest.
    let (code, v, _) = run_json(&s.w.root, &["inspect", BUILD, "--path", "/usr/bin/envd"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["sha256"].is_null() && v["sha256_skipped"].as_str().unwrap().contains("1.0 TiB"), "{v:#}");
    // A wrapper script claiming a terabyte is not read whole: a finding says it was not checked.
    debugfs_w(&img, "sif /sbin/init size 1099511627776");
    let (code, v, _) = run_json(&s.w.root, &["verify", BUILD]);
    assert_eq!(code, 1, "{v:#}");
    let f = v["builds"][0]["findings"].as_array().unwrap().iter().find(|f| f["id"] == "rootfs.over-cap").cloned();
    assert!(f.is_some_and(|f| f["message"].as_str().unwrap().contains("/sbin/init")), "{v:#}");
}

/// Item 9: a directory inode flagged as hashed (htree) whose first block is a plain linear
/// directory made ext4-view panic (exit 101 from verify, verify --deep, inspect and verify
/// --all). Now it is a `rootfs.reader-panic` finding on that build, and the run goes on.
#[test]
fn an_ext4_view_panic_is_a_finding_on_that_build() {
    let Some(s) = store(
        |t, b| {
            t.envd_as_init(b);
        },
        |img| debugfs_w(img, "sif /sbin flags 0x81000"),
    ) else {
        return;
    };
    for args in [&["verify", "--all"][..], &["verify", "--all", "--deep"]] {
        let (code, v, stderr) = run_json(&s.w.root, args);
        assert_eq!(code, 1, "{args:?}: {v:#}");
        assert!(stderr.is_empty(), "the panic is not printed: {stderr}");
        let b = v["builds"].as_array().unwrap().iter().find(|b| b["build_id"] == BUILD).unwrap();
        let f = b["findings"].as_array().unwrap().iter().find(|f| f["id"] == "rootfs.reader-panic").cloned();
        let f = f.unwrap_or_else(|| panic!("{args:?}: {b:#}"));
        assert!(f["message"].as_str().unwrap().contains("ext4-view"), "{f}");
        let other = v["builds"].as_array().unwrap().iter().find(|b| b["build_id"] == OTHER).unwrap();
        assert_eq!(other["ok"], true, "{other:#}");
    }
    let (code, v, _) = run_json(&s.w.root, &["inspect", BUILD]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["rootfs_anomalies"][0]["kind"], "reader-panic");
    let (code, v, _) = run_json(&s.w.root, &["inspect", BUILD, "--path", "/sbin/init"]);
    assert_eq!(code, 3, "{v:#}");
    assert!(v["error"]["message"].as_str().unwrap().contains("panicked"), "{v:#}");
}

/// Item 11: an envd cut to 100,000 bytes (it segfaults when run) was reported as a static ELF
/// and installed. `inject-envd` refuses it (exit 3, nothing written); one already in an image is
/// `envd.truncated`.
#[test]
fn a_truncated_envd_is_refused_and_reported() {
    let Some(bins) = fixtures::bins() else { return };
    let s = Store::new();
    let whole = std::fs::read(&bins.envd).unwrap();
    assert!(whole.len() > 200_000, "a static binary is several hundred KB");
    let cut = s.dir.path().join("envd-cut");
    std::fs::write(&cut, &whole[..100_000]).unwrap();
    let t = Tree::new(s.dir.path());
    t.envd_as_init(bins);
    s.full(BUILD, &t);
    let before = common::hash_tree(&s.w.root);
    let out = common::tmpl()
        .arg("--storage")
        .arg(&s.w.root)
        .args(["--json", "inject-envd", BUILD, "--envd"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("cut short"), "{v:#}");
    assert_eq!(common::hash_tree(&s.w.root), before, "nothing changed");
    // The same cut binary inside an image.
    let t2 = Tree::new(&s.dir.path().join("t2"));
    t2.file("/usr/bin/envd", &whole[..100_000], 0o755).link("/sbin/init", "/usr/bin/envd");
    s.full(OTHER, &t2);
    let (code, f) = s.verify(OTHER);
    assert_eq!(code, 1);
    let ids: Vec<&str> = f.iter().map(|(i, _, _)| i.as_str()).collect();
    assert!(ids.contains(&"envd.truncated") && ids.contains(&"init.not-runnable"), "{f:?}");
}

/// Item 16: a valid 4001-character `/sbin/init` link (the kernel follows up to 4095) was
/// reported as too long by the reader's own path limit.
#[test]
fn a_4001_character_init_link_is_followed() {
    let Some(bins) = fixtures::bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    let target = format!("/{}usr/bin/envd", "./".repeat((4001 - "/usr/bin/envd".len()) / 2));
    assert_eq!(target.len(), 4001);
    t.copy("/usr/bin/envd", &bins.envd).link("/sbin/init", &target);
    // 4 KiB blocks: ext4 stores a link target of up to a block less one byte.
    let d = s.w.root.join(BUILD);
    std::fs::create_dir_all(&d).unwrap();
    let img = d.join("rootfs.ext4");
    assert!(common::require("mkfs.ext4"));
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&t.root)
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    let fs = Rootfs::open(Arc::new(Device::plain_file(&img).unwrap())).unwrap();
    assert_eq!(fs.read_link("/sbin/init").unwrap(), target);
    let r = boot::resolve(&fs, "/sbin/init");
    assert!(matches!(&r.end, End::Found { entry } if entry.path == "/usr/bin/envd"), "{r:?}");
    let (_, f) = s.verify(BUILD);
    assert!(!f.iter().any(|(id, _, _)| id.starts_with("init.")), "{f:?}");
}

/// A sparse file of `len` bytes with 1 MiB of data at each of `at` (the rest holes).
fn sparse_file(path: &Path, len: u64, at: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (i, &off) in at.iter().enumerate() {
        f.write_all_at(&vec![0x5A ^ i as u8; 1 << 20], off).unwrap();
    }
    f.sync_all().unwrap();
}

fn deep_entry(v: &Value, name: &str) -> Value {
    v["builds"][0]["deep"]
        .as_array()
        .unwrap_or_else(|| panic!("no deep results: {v:#}"))
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no {name}: {v:#}"))
        .clone()
}

/// Item 7: `verify --deep` read every hole of a sparse memfile (8 GiB: 38.7 s). Now holes are
/// found with SEEK_DATA/SEEK_HOLE and never read: the bytes read are the allocated bytes. With
/// no SHA-256 recorded nothing is hashed; with one, the holes are hashed as zeros and the digest
/// is the file's (sha256sum's).
#[test]
fn deep_verify_reads_only_the_allocated_bytes_of_a_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let b = root.join(BUILD);
    std::fs::create_dir_all(&b).unwrap();
    // Headerless, no SHA-256: 8 GiB with 2 MiB allocated.
    sparse_file(&b.join("memfile"), 8 << 30, &[0, 5 << 30]);
    let (_, v, _) = run_json(&root, &["verify", "--deep", BUILD]);
    let m = deep_entry(&v, "memfile");
    assert_eq!(m["bytes_read"], 2 << 20, "{m:#}");
    assert_eq!(m["bytes_hashed"].as_u64(), Some(8 << 30), "the length is counted, holes included: {m:#}");
    assert_eq!(m["complete"], true);
    assert!(m["sha256"].is_null(), "no SHA-256 recorded: none computed ({m:#})");
    // A V4 header recording the SHA-256 of a 64 MiB sparse file: the holes are hashed as zeros.
    let id = tmpl::vocab::BuildId::parse(BUILD).unwrap();
    let len = 64u64 << 20;
    sparse_file(&b.join("memfile"), len, &[0, 40 << 20]);
    let want: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(b.join("memfile")).unwrap()).into()
    };
    let h = tmpl::header::Header {
        version: 4,
        block_size: 4096,
        size: len,
        generation: 1,
        build_id: id,
        base_build_id: id,
        mappings: vec![tmpl::header::Mapping { offset: 0, length: len, build: id, storage_offset: 0 }],
        synthesized: false,
        flags: 0,
        builds: vec![tmpl::header::BuildInfo {
            build: id,
            file_size: len as i64,
            checksum: want,
            frames: Default::default(),
        }],
    };
    std::fs::write(b.join("memfile.header"), tmpl::header::try_encode(&h).unwrap()).unwrap();
    let (_, v, _) = run_json(&root, &["verify", "--deep", BUILD]);
    let m = deep_entry(&v, "memfile");
    assert_eq!(m["bytes_read"], 2 << 20, "{m:#}");
    assert_eq!(m["sha256"].as_str(), Some(tmpl::header::hex(&want).as_str()), "{m:#}");
    assert_eq!(m["expected_sha256"], m["sha256"]);
    assert!(!ids(&v, 0).iter().any(|i| i.starts_with("data.") && i != "data.no-checksum"), "{:?}", ids(&v, 0));
}

/// Item 10: a V3 header with Size = 2^64 − 100 and no mappings is refused as invalid (tmpl once
/// invented a zero-length mapping after the rounding wrapped); two 2^63-byte mappings are an
/// overflow finding, and inspect says their sum overflows instead of printing `own 0 B`.
#[test]
fn sizes_that_overflow_are_findings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let b = root.join(BUILD);
    std::fs::create_dir_all(&b).unwrap();
    let id = tmpl::vocab::BuildId::parse(BUILD).unwrap();
    let mut h = tmpl::header::headerless(id, 4096, 4096);
    h.version = 3;
    h.synthesized = false;
    h.mappings.clear();
    h.size = u64::MAX - 99;
    std::fs::write(b.join("rootfs.ext4.header"), tmpl::header::encode(&h)).unwrap();
    let (code, v, _) = run_json(&root, &["verify", BUILD]);
    assert_eq!(code, 1);
    let f = v["builds"][0]["findings"].as_array().unwrap().iter().find(|f| f["id"] == "header.invalid").cloned();
    assert!(f.is_some_and(|f| f["message"].as_str().unwrap().contains("64 bits")), "{v:#}");
    let half = 1u64 << 63;
    h.size = u64::MAX;
    h.mappings = vec![
        tmpl::header::Mapping { offset: 0, length: half, build: id, storage_offset: 0 },
        tmpl::header::Mapping { offset: half, length: half, build: id, storage_offset: half },
    ];
    std::fs::write(b.join("rootfs.ext4.header"), tmpl::header::encode(&h)).unwrap();
    let (code, v, _) = run_json(&root, &["verify", BUILD]);
    assert_eq!(code, 1);
    let msgs: Vec<String> = v["builds"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "header.mapping-order")
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect();
    assert!(msgs.iter().any(|m| m.contains("runs past 2^64")), "{v:#}");
    let (code, v, _) = run_json(&root, &["inspect", BUILD]);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["rootfs"]["header"]["own_bytes"].is_null(), "{:#}", v["rootfs"]["header"]);
    assert!(v["rootfs"]["header"]["builds"][0]["bytes"].is_null());
}

/// Item 10: the tmpl crate's arithmetic is checked under `cargo test --release` too (the
/// release profile turns overflow checks off by default; Cargo.toml turns them on for tmpl).
#[test]
fn overflow_checks_are_on_in_every_profile() {
    let x = std::hint::black_box(u64::MAX);
    let wrapped = std::panic::catch_unwind(|| x + 1);
    assert!(wrapped.is_err(), "u64::MAX + 1 wrapped to {:?}", wrapped);
}
