//! `tmpl verify` end to end on temporary storages: one test per check family and corruption.

mod common;

use std::path::Path;

use serde_json::Value;
use tmpl::commands::verify::VerifyReport;
use tmpl::demo::StorageWriter;
use tmpl::header::{self, Header, Mapping};
use tmpl::report::Severity;
use tmpl::snapshot::{self, Arch};
use tmpl::storage::StorageSource;
use tmpl::vocab::BuildId;

const A: &str = "11111111-2222-3333-4444-555555555555";
const B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn id(s: &str) -> BuildId {
    BuildId::parse(s).unwrap()
}

/// A storage with a base build B (real ext4 image as a compacted layer, memory snapshot) and a
/// child A layered on it; every test then breaks one thing.
struct Fixture {
    dir: tempfile::TempDir,
    w: StorageWriter,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !common::require("mkfs.ext4") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let w = StorageWriter::new(&dir.path().join("store")).unwrap();
        let tree = dir.path().join("tree");
        tmpl::demo::rootfs_tree(&tree, B, &[]).unwrap();
        let img = dir.path().join("img.ext4");
        common::mkfs(&tree, &img, 8);
        // The child's image differs by one file, so its layer owns some blocks.
        std::fs::write(tree.join("etc/motd"), "child\n").unwrap();
        let child_img = dir.path().join("child.ext4");
        common::mkfs(&tree, &child_img, 8);
        for (bid, parent, image) in [(id(B), None, &img), (id(A), Some(id(B)), &child_img)] {
            w.rootfs_layer(&bid, image, parent.as_ref(), u64::from(parent.is_some())).unwrap();
            w.memfile(&bid, 64, true).unwrap();
            w.snapfile(&bid, "8.0.0", 64).unwrap();
            w.metadata(&bid, "v1.14.1_431f1fc", false).unwrap();
        }
        Some(Fixture { dir, w })
    }

    fn root(&self) -> &Path {
        &self.w.root
    }

    fn path(&self, build: &str, name: &str) -> std::path::PathBuf {
        self.root().join(build).join(name)
    }

    fn write(&self, build: &str, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(build, name), bytes).unwrap();
    }

    fn verify(&self, build: &str) -> (i32, Value) {
        let out = common::tmpl().arg("--storage").arg(self.root()).args(["--json", "verify", build]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap(), v)
    }
}

/// A `verify --json` document read as the report type the binary serialised; the typed report
/// serialises back to the same document (less the envelope: format version, command, ok), so no
/// field is lost or renamed on the way.
#[track_caller]
fn report(json: &[u8]) -> VerifyReport {
    let r: VerifyReport =
        serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(json)));
    let mut doc: Value = serde_json::from_slice(json).unwrap();
    for k in ["format_version", "command", "ok"] {
        assert!(doc.as_object_mut().unwrap().remove(k).is_some(), "no {k} in {doc:#}");
    }
    assert_eq!(serde_json::to_value(&r).unwrap(), doc);
    r
}

#[track_caller]
fn expect(v: &Value, id: &str, severity: &str) -> String {
    let fs = common::findings_of(v);
    fs.iter()
        .find(|(i, s, _)| i == id && s == severity)
        .map(|f| f.2.clone())
        .unwrap_or_else(|| panic!("no {severity} {id} in {fs:#?}"))
}

#[track_caller]
fn clean(v: &Value) {
    let bad: Vec<_> = common::findings_of(v).into_iter().filter(|(_, s, _)| s != "info").collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn healthy_layered_builds_are_clean() {
    let Some(f) = Fixture::new() else { return };
    for b in [A, B] {
        let (code, v) = f.verify(b);
        clean(&v);
        assert_eq!(code, 0);
        assert_eq!(v["ok"], true);
    }
}

#[test]
fn metadata_every_version() {
    let Some(f) = Fixture::new() else { return };
    f.write(A, "metadata.json", format!(r#"{{"version":"v1","template":{{"template_id":"t","build_id":"{A}","kernel_version":"k","firecracker_version":"v1.10.1_1fcdaec"}}}}"#).as_bytes());
    let (code, v) = f.verify(A);
    expect(&v, "metadata.legacy-version", "info");
    assert_eq!(code, 0, "a v1 string document is legal");
    f.write(
        A,
        "metadata.json",
        format!(r#"{{"version":1,"template":{{"build_id":"{A}"}},"context":{{}}}}"#).as_bytes(),
    );
    expect(&f.verify(A).1, "metadata.legacy-version", "info");
    f.write(A, "metadata.json", format!(r#"{{"version":3,"template":{{"build_id":"{A}","kernel_version":"vmlinux-6.1.158","firecracker_version":"v1.14.1_431f1fc"}},"context":{{}},"new_thing":1}}"#).as_bytes());
    let (code, v) = f.verify(A);
    assert!(expect(&v, "metadata.future-version", "info").contains("new_thing"));
    assert_eq!(code, 0);
    // Version 2 must name its kernel and Firecracker: the orchestrator picks them by these names.
    f.write(A, "metadata.json", format!(r#"{{"version":2,"template":{{"build_id":"{A}","kernel_version":"","firecracker_version":"v1.14.1_431f1fc"}},"context":{{}}}}"#).as_bytes());
    let (code, v) = f.verify(A);
    assert!(expect(&v, "metadata.missing-versions", "error").contains("kernel_version"));
    assert_eq!(code, 1);
    std::fs::remove_file(f.path(A, "metadata.json")).unwrap();
    let (code, v) = f.verify(A);
    expect(&v, "metadata.absent", "info");
    assert_eq!(code, 0);
    f.write(A, "metadata.json", b"{\"version\":2,");
    let (code, v) = f.verify(A);
    expect(&v, "metadata.invalid", "error");
    assert_eq!(code, 1);
    f.write(
        A,
        "metadata.json",
        format!(r#"{{"version":2,"template":{{"build_id":"{B}"}},"context":{{}}}}"#).as_bytes(),
    );
    assert!(expect(&f.verify(A).1, "metadata.build-id-mismatch", "error").contains(B));
    f.write(
        A,
        "metadata.json",
        format!(r#"{{"version":2,"template":{{"build_id":"{A}"}},"filesystem_only":"yes"}}"#).as_bytes(),
    );
    expect(&f.verify(A).1, "metadata.bad-field", "error");
    f.write(A, "metadata.json", br#"{"template":{}}"#);
    expect(&f.verify(A).1, "metadata.no-version", "warning");
}

fn rootfs_header(f: &Fixture, b: &str) -> Header {
    header::parse(&std::fs::read(f.path(b, "rootfs.ext4.header")).unwrap()).unwrap()
}

#[test]
fn header_structure_and_size() {
    let Some(f) = Fixture::new() else { return };
    let bytes = std::fs::read(f.path(A, "rootfs.ext4.header")).unwrap();
    f.write(A, "rootfs.ext4.header", &bytes[..bytes.len() - 1]);
    let (code, v) = f.verify(A);
    assert!(expect(&v, "header.invalid", "error").contains("40-byte"));
    assert_eq!(code, 1);
    f.write(A, "rootfs.ext4.header", &bytes[..40]);
    expect(&f.verify(A).1, "header.invalid", "error");
    f.write(A, "rootfs.ext4.header", &bytes);

    // A gap: drop the second mapping. Error for V3, warning for V1.
    let mut h = rootfs_header(&f, A);
    assert!(h.mappings.len() > 2);
    h.mappings.remove(1);
    f.write(A, "rootfs.ext4.header", &header::encode(&h));
    expect(&f.verify(A).1, "header.mapping-order", "error");
    h.version = 1;
    f.write(A, "rootfs.ext4.header", &header::encode(&h));
    expect(&f.verify(A).1, "header.mapping-order", "warning");

    // Coverage short of Size.
    let mut h = rootfs_header(&f, B);
    h.size += 1 << 20;
    f.write(B, "rootfs.ext4.header", &header::encode(&h));
    expect(&f.verify(B).1, "header.coverage", "error");
}

#[test]
fn header_identity_ancestors_and_lengths() {
    let Some(f) = Fixture::new() else { return };
    // BuildId of another build.
    let mut h = rootfs_header(&f, A);
    h.build_id = id(B);
    f.write(A, "rootfs.ext4.header", &header::encode(&h));
    expect(&f.verify(A).1, "header.build-id-mismatch", "error");

    // Ancestor data shorter than mappings need.
    let h = rootfs_header(&f, A);
    let need = h.required_len(&id(B));
    let file = std::fs::OpenOptions::new().write(true).open(f.path(B, "rootfs.ext4")).unwrap();
    file.set_len(need - 4096).unwrap();
    f.write(A, "rootfs.ext4.header", &header::encode(&h));
    let msg = expect(&f.verify(A).1, "header.data-too-short", "error");
    assert!(msg.contains(&need.to_string()), "{msg}");

    // Ancestor data missing, then the whole ancestor.
    std::fs::remove_file(f.path(B, "rootfs.ext4")).unwrap();
    expect(&f.verify(A).1, "header.ancestor-data-missing", "error");
    std::fs::remove_dir_all(f.root().join(B)).unwrap();
    let (code, v) = f.verify(A);
    assert!(expect(&v, "header.missing-build", "error").contains(B));
    assert_eq!(code, 1);
}

#[test]
fn own_data_missing_or_short() {
    let Some(f) = Fixture::new() else { return };
    let h = rootfs_header(&f, A);
    assert!(h.required_len(&id(A)) > 0, "the child owns blocks");
    let data = std::fs::read(f.path(A, "rootfs.ext4")).unwrap();
    std::fs::remove_file(f.path(A, "rootfs.ext4")).unwrap();
    expect(&f.verify(A).1, "rootfs.missing-data", "error");
    f.write(A, "rootfs.ext4", &data[..data.len() / 2]);
    expect(&f.verify(A).1, "header.data-too-short", "error");
    std::fs::remove_file(f.path(A, "memfile")).unwrap();
    expect(&f.verify(A).1, "memfile.missing-data", "error");
}

#[test]
fn v4_and_v5_version_over_a_v3_body_is_a_missing_lz4_frame() {
    let Some(f) = Fixture::new() else { return };
    let mut bytes = std::fs::read(f.path(A, "memfile.header")).unwrap();
    for v in [4u8, 5] {
        bytes[0] = v;
        f.write(A, "memfile.header", &bytes);
        let (code, v) = f.verify(A);
        assert!(expect(&v, "header.v4-bad-lz4", "error").contains("magic"));
        assert_eq!(code, 1);
    }
    bytes[0] = 7;
    f.write(A, "memfile.header", &bytes);
    expect(&f.verify(A).1, "header.unknown-version", "error");
}

#[test]
fn headerless_builds_must_be_whole_blocks() {
    let Some(f) = Fixture::new() else { return };
    let legacy = "10000000-0000-4000-8000-000000000004";
    let dir = f.root().join(legacy);
    std::fs::create_dir_all(&dir).unwrap();
    let img = f.dir.path().join("img.ext4");
    std::fs::copy(&img, dir.join("rootfs.ext4")).unwrap();
    let (code, v) = f.verify(legacy);
    expect(&v, "rootfs.headerless", "info");
    expect(&v, "snapfile.missing", "warning");
    assert_eq!(code, 0);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(dir.join("rootfs.ext4"), &bytes).unwrap();
    let (_, v) = f.verify(legacy);
    expect(&v, "rootfs.not-block-multiple", "error");
    expect(&v, "rootfs.truncated", "error");
}

#[test]
fn snapfile_crc_mismatch_prints_both_values_in_decimal_and_hex() {
    let Some(f) = Fixture::new() else { return };
    let mut snap = std::fs::read(f.path(A, "snapfile")).unwrap();
    snap[20] ^= 0x80;
    let computed = snapshot::crc64_redis(&snap[..snap.len() - 8]);
    let stored = u64::from_le_bytes(snap[snap.len() - 8..].try_into().unwrap());
    f.write(A, "snapfile", &snap);
    let (code, v) = f.verify(A);
    let msg = expect(&v, "snapfile.crc-mismatch", "error");
    for needle in [computed.to_string(), format!("{computed:016x}"), stored.to_string(), format!("{stored:016x}")] {
        assert!(msg.contains(&needle), "{needle} not in {msg}");
    }
    assert_eq!(code, 1);
    // The human report shows it too.
    let out = common::tmpl().arg("--storage").arg(f.root()).args(["verify", A]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("CRC64 validation failed: {computed}")), "{text}");
}

#[test]
fn snapfile_padding_zero_crc_magic_and_size() {
    let Some(f) = Fixture::new() else { return };
    let good = std::fs::read(f.path(A, "snapfile")).unwrap();
    let mut padded = good.clone();
    padded.extend(vec![0u8; 8192]);
    f.write(A, "snapfile", &padded);
    let (_, v) = f.verify(A);
    assert!(expect(&v, "snapfile.trailing-zeros", "warning").contains(&format!("ends at byte {}", good.len())));
    expect(&v, "snapfile.crc-zero", "warning");
    let mut junk = good.clone();
    junk.extend_from_slice(b"appended junk");
    f.write(A, "snapfile", &junk);
    assert!(expect(&f.verify(A).1, "snapfile.crc-mismatch", "error").contains(&format!("ends at byte {}", good.len())));
    f.write(A, "snapfile", &[0u8; 4096]);
    expect(&f.verify(A).1, "snapfile.bad-magic", "error");
    f.write(A, "snapfile", b"{\"not\": \"a snapshot\"}\n");
    expect(&f.verify(A).1, "snapfile.bad-magic", "error");
    f.write(A, "snapfile", &[1, 2, 3]);
    expect(&f.verify(A).1, "snapfile.too-short", "error");
    let aarch = tmpl::fixtures::snapfile::build_bincode(
        Arch::Aarch64,
        "8.0.0",
        &tmpl::fixtures::snapfile::bincode_state_prefix("8.0.0", 64, "k"),
    );
    f.write(A, "snapfile", &aarch);
    if Arch::host() == Some(Arch::X86_64) {
        expect(&f.verify(A).1, "snapfile.foreign-arch", "info");
    }
}

#[test]
fn snapfile_version_against_firecracker() {
    let Some(f) = Fixture::new() else { return };
    let snap = |ver: &str| {
        tmpl::fixtures::snapfile::build_bincode(
            Arch::X86_64,
            ver,
            &tmpl::fixtures::snapfile::bincode_state_prefix(ver, 64, "k"),
        )
    };
    let meta = |fc: &str| tmpl::metadata::render_v2(A, "vmlinux-6.1.158", fc, false);
    // E2B's v1.14 fork loads 4.0.0 and 6.0.0 snapshots; upstream v1.14.0 does not.
    f.write(A, "snapfile", &snap("6.0.0"));
    clean(&f.verify(A).1);
    f.write(A, "metadata.json", meta("v1.14.0").as_bytes());
    expect(&f.verify(A).1, "snapfile.version-mismatch", "error");
    f.write(A, "metadata.json", meta("v1.12.1_210cbac").as_bytes());
    clean(&f.verify(A).1);
    f.write(A, "metadata.json", meta("v1.10.1_30cbb07").as_bytes());
    assert!(expect(&f.verify(A).1, "snapfile.version-mismatch", "error").contains("6.0.0"));
    // An old versionize snapshot under a new Firecracker.
    let mut old = vec![0x01, 0x00, 0x64, 0x86, 0x84, 0x19, 0x10, 0x07, 10, 0];
    old.extend_from_slice(&64u64.to_le_bytes());
    let crc = snapshot::crc64_redis(&old);
    old.extend_from_slice(&crc.to_le_bytes());
    f.write(A, "snapfile", &old);
    assert!(expect(&f.verify(A).1, "snapfile.version-mismatch", "error").contains("versionize"));
    f.write(A, "metadata.json", meta("v9.9.9").as_bytes());
    expect(&f.verify(A).1, "metadata.unknown-firecracker", "info");
}

#[test]
fn missing_snapfile_and_memory() {
    let Some(f) = Fixture::new() else { return };
    std::fs::remove_file(f.path(A, "snapfile")).unwrap();
    expect(&f.verify(A).1, "snapfile.missing", "error");
    std::fs::remove_file(f.path(A, "memfile")).unwrap();
    std::fs::remove_file(f.path(A, "memfile.header")).unwrap();
    f.write(A, "metadata.json", tmpl::metadata::render_v2(A, "k", "v1.14.1_431f1fc", true).as_bytes());
    let (code, v) = f.verify(A);
    clean(&v);
    assert_eq!(code, 0, "a filesystem-only build needs neither");
    f.write(A, "snapfile", &std::fs::read(f.path(B, "snapfile")).unwrap());
    f.write(A, "metadata.json", tmpl::metadata::render_v2(A, "k", "v1.14.1_431f1fc", false).as_bytes());
    expect(&f.verify(A).1, "memfile.missing", "error");
}

#[test]
fn memfile_size_against_snapshot_and_header() {
    let Some(f) = Fixture::new() else { return };
    // Header Size smaller than the VM's memory.
    let mut h = header::parse(&std::fs::read(f.path(A, "memfile.header")).unwrap()).unwrap();
    h.size = 32 << 20;
    h.mappings = vec![Mapping { offset: 0, length: 32 << 20, build: id(A), storage_offset: 0 }];
    f.write(A, "memfile.header", &header::encode(&h));
    let msg = expect(&f.verify(A).1, "memfile.size-mismatch", "error");
    assert!(msg.contains("mem_size_mib 64"), "{msg}");
    // Not page aligned.
    h.size = (64 << 20) + 100;
    h.mappings = vec![Mapping { offset: 0, length: (64 << 20) + 4096, build: id(A), storage_offset: 0 }];
    f.write(A, "memfile.header", &header::encode(&h));
    expect(&f.verify(A).1, "memfile.unaligned", "error");
    // Hugepages: 2 MiB block size demands 2 MiB multiples.
    h.block_size = 2 << 20;
    h.size = (63 << 20) + (512 << 10);
    h.mappings = vec![Mapping { offset: 0, length: 64 << 20, build: id(A), storage_offset: 0 }];
    f.write(A, "memfile.header", &header::encode(&h));
    assert!(expect(&f.verify(A).1, "memfile.unaligned", "error").contains("2.0 MiB"));
    // Headerless memfile length.
    std::fs::remove_file(f.path(A, "memfile.header")).unwrap();
    tmpl::fixtures::layer::sparse_file(&f.path(A, "memfile"), (48 << 20) + 4096, 2).unwrap();
    let v = f.verify(A).1;
    assert!(expect(&v, "memfile.size-mismatch", "error").contains("memfile length"));
    expect(&v, "memfile.not-block-multiple", "error");
}

#[test]
fn rootfs_superblock_checks() {
    let Some(f) = Fixture::new() else { return };
    // needs_recovery set by debugfs (valid superblock checksum).
    if common::require("debugfs") {
        let legacy = "10000000-0000-4000-8000-000000000004";
        let dir = f.root().join(legacy);
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("rootfs.ext4");
        std::fs::copy(f.dir.path().join("img.ext4"), &img).unwrap();
        let out = std::process::Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap())
            .args(["-w", "-R", "feature needs_recovery"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());
        expect(&f.verify(legacy).1, "rootfs.needs-recovery", "warning");
    }
    // Garbage where the layer that holds the child's superblock stores it.
    let h = rootfs_header(&f, A);
    let m = h
        .mappings
        .iter()
        .find(|m| m.offset <= 1024 && m.end() > 1024 && !m.is_nil())
        .expect("superblock block is mapped");
    let owner = m.build.to_string();
    let file = std::fs::OpenOptions::new().write(true).open(f.path(&owner, "rootfs.ext4")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAB; 1024], m.storage_offset + 1024 - m.offset).unwrap();
    let (code, v) = f.verify(A);
    assert!(expect(&v, "rootfs.not-ext4", "error").contains("magic"));
    assert_eq!(code, 1);
}

#[test]
fn verify_all_and_builds_as_paths() {
    let Some(f) = Fixture::new() else { return };
    std::fs::create_dir_all(f.root().join("lost+found")).unwrap();
    let out = common::tmpl().arg("--storage").arg(f.root()).args(["--json", "verify", "--all"]).output().unwrap();
    let r = report(&out.stdout);
    assert_eq!(r.summary.builds, 2);
    assert_eq!(r.other_entries, Some(1));
    assert_eq!(r.storage_source, StorageSource::Flag);
    assert_eq!(out.status.code(), Some(0));
    // A build given as a path: its parent is the storage for its ancestors.
    let out = common::tmpl().args(["--json", "verify"]).arg(f.root().join(A)).output().unwrap();
    let r = report(&out.stdout);
    assert_eq!(r.builds[0].build_id, id(A));
    assert_eq!(r.storage, f.root());
    assert_eq!(r.storage_source, StorageSource::BuildPath);
    clean(&serde_json::from_slice(&out.stdout).unwrap());
    // A copy of a build under a non-UUID folder name is identified by its header.
    let copy = f.dir.path().join("my-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["rootfs.ext4.header", "metadata.json"] {
        std::fs::copy(f.path(B, name), copy.join(name)).unwrap();
    }
    let out = common::tmpl().args(["--json", "verify"]).arg(&copy).output().unwrap();
    let r = report(&out.stdout);
    assert_eq!(r.builds[0].build_id, id(B));
    assert!(
        r.builds[0].findings.iter().any(|f| f.id == "build.folder-not-uuid" && f.severity == Severity::Info),
        "{r:#?}"
    );
}

/// verify never reads memfiles: a read would update the access time (relatime updates an atime
/// older than a day), which a control read proves is observable on this filesystem.
#[test]
fn verify_does_not_read_memfiles() {
    use std::fs::FileTimes;
    use std::time::{Duration, SystemTime};
    let Some(f) = Fixture::new() else { return };
    let mem = f.path(A, "memfile");
    let old = SystemTime::now() - Duration::from_secs(3 * 86400);
    let set_old = || {
        std::fs::File::options()
            .write(true)
            .open(&mem)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap()
    };
    let atime = || std::fs::metadata(&mem).unwrap().accessed().unwrap();
    // Control: a read is visible in the atime here.
    set_old();
    let before = atime();
    std::fs::read(&mem).unwrap();
    if atime() == before {
        eprintln!("SKIP: this filesystem does not record access times (noatime)");
        return;
    }
    set_old();
    let before = atime();
    let (code, _) = f.verify(A);
    assert_eq!(code, 0);
    assert_eq!(atime(), before, "verify read the memfile");
}

/// Issue 12 (item 13): permission problems are named as such on a real node. Tests run as root,
/// where mode bits stop nothing, so tmpl is run as uid/gid 65534 (`nobody`) through `setpriv`
/// (util-linux) on a storage whose folders are world-readable except the one under test: every
/// `EACCES` here is the kernel's. The binary is copied into the (world-readable) temporary folder
/// so the drop works wherever the checkout lives (e.g. under a 0700 /root).
struct AsNobody {
    bin: std::path::PathBuf,
}

impl AsNobody {
    fn new(f: &Fixture) -> Option<AsNobody> {
        if !common::require_root() || !common::require("setpriv") {
            return None;
        }
        use std::os::unix::fs::PermissionsExt;
        let top = f.dir.path();
        let bin = top.join("tmpl");
        // Copied by `cp`, not from this process: a file this (multi-threaded) test process holds
        // open for writing can leak into a child forked meanwhile by another test, and exec'ing
        // it then fails with ETXTBSY.
        let cp = std::process::Command::new("cp").arg(assert_cmd::cargo::cargo_bin("tmpl")).arg(&bin).status();
        assert!(cp.unwrap().success());
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // World-readable storage: folders 755, files 644.
        for dir in [top.to_path_buf(), f.root().to_path_buf(), f.root().join(A), f.root().join(B)] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            if dir.starts_with(f.root()) && dir != f.root() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
                }
            }
        }
        Some(AsNobody { bin })
    }

    /// Run tmpl as nobody with `--json`; (exit code, document).
    fn run(&self, f: &Fixture, args: &[&str]) -> (i32, Value) {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&self.bin)
            .arg("--storage")
            .arg(f.root())
            .arg("--json")
            .args(args)
            .current_dir(f.dir.path())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap(), v)
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The findings of one build in a verify report.
fn build_findings(v: &Value, build: &str) -> Vec<(String, String, String)> {
    let r: VerifyReport = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
    let b = r.builds.iter().find(|b| b.build_id == id(build)).unwrap_or_else(|| panic!("{build} not in {v:#}"));
    b.findings
        .iter()
        .map(|f| {
            let hint = f.hint.as_deref().unwrap_or("");
            (f.id.clone(), f.file.clone().unwrap_or_default(), format!("{} / {hint}", f.message))
        })
        .collect()
}

#[track_caller]
fn denied_only(fs: &[(String, String, String)], file: &str, needs: &str) {
    let d: Vec<_> = fs.iter().filter(|f| f.0 == "access.denied").collect();
    assert_eq!(d.len(), 1, "{fs:#?}");
    assert_eq!(d[0].1, file, "{fs:#?}");
    assert!(d[0].2.contains("uid 65534") && d[0].2.contains(&format!("needs {needs} permission")), "{fs:#?}");
    // Nothing else blames the build for what a permission hides.
    for (id, _, text) in fs {
        assert!(
            !(id.contains("missing")
                || id == "rootfs.unreadable"
                || text.contains("restore")
                || text.contains("corrupt")),
            "{id}: {text}"
        );
    }
}

/// A fixture and tmpl as nobody, after checking that the drop itself denies nothing: a readable
/// storage verifies clean as nobody.
fn as_nobody() -> Option<(Fixture, AsNobody)> {
    let f = Fixture::new()?;
    let nobody = AsNobody::new(&f)?;
    let (code, v) = nobody.run(&f, &["verify", "--all"]);
    clean(&v);
    assert_eq!(code, 0, "{v:#}");
    Some((f, nobody))
}

#[test]
fn an_unreadable_build_folder_is_a_permission_problem() {
    let Some((f, nobody)) = as_nobody() else { return };
    let dir_a = f.root().join(A);
    chmod(&dir_a, 0o700);
    let (code, v) = nobody.run(&f, &["verify", A]);
    assert_eq!(code, 4, "{v:#}");
    let fa = build_findings(&v, A);
    assert_eq!(fa.len(), 1, "{fa:#?}");
    assert!(fa[0].0 == "access.denied" && fa[0].2.contains(&format!("{}", dir_a.display())), "{fa:#?}");
    assert!(fa[0].2.contains("needs read and search (r-x) permission"), "{fa:#?}");
    // inspect: the same cause, the same exit code, the permission named.
    let (code, v) = nobody.run(&f, &["inspect", A]);
    assert_eq!((code, v["error"]["kind"].as_str()), (4, Some("permission-denied")), "{v:#}");
}

#[test]
fn verify_all_goes_on_past_an_unreadable_build_folder() {
    let Some((f, nobody)) = as_nobody() else { return };
    chmod(&f.root().join(A), 0o700);
    let (code, v) = nobody.run(&f, &["verify", "--all"]);
    assert_eq!(code, 4, "{v:#}");
    let r: VerifyReport = serde_json::from_value(v.clone()).unwrap();
    assert_eq!((r.summary.builds, r.summary.access_denied), (2, 1));
    assert_eq!(build_findings(&v, A)[0].0, "access.denied");
    let b = r.builds.iter().find(|b| b.build_id == id(B)).unwrap();
    assert!(b.ok, "{b:#?}");
}

#[test]
fn an_unsearchable_ancestor_folder_is_not_missing() {
    let Some((f, nobody)) = as_nobody() else { return };
    chmod(&f.root().join(B), 0o700);
    let (code, v) = nobody.run(&f, &["verify", A]);
    assert_eq!(code, 4, "{v:#}");
    denied_only(&build_findings(&v, A), B, "search (x)");
}

#[test]
fn an_unreadable_own_rootfs_is_not_missing_or_corrupt() {
    let Some((f, nobody)) = as_nobody() else { return };
    chmod(&f.path(A, "rootfs.ext4"), 0o600);
    let (code, v) = nobody.run(&f, &["verify", A]);
    assert_eq!(code, 4, "{v:#}");
    denied_only(&build_findings(&v, A), "rootfs.ext4", "read (r)");
    // inspect: every fact it could read, the permission named, exit 4.
    let (code, v) = nobody.run(&f, &["inspect", A]);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["access_denied"][0]["file"], "rootfs.ext4", "{v:#}");
    assert!(v["access_denied"][0]["needs"].as_str().unwrap().contains("read"), "{v:#}");
    assert_eq!(v["metadata_status"], "parsed", "{v:#}");
    // Commands that need the rootfs: the same cause, the same exit code (they said 3 before).
    for args in [&["inspect", A, "--path", "/etc/motd"][..], &["rewrite-wrapper", A, "--dry-run"]] {
        let (code, v) = nobody.run(&f, args);
        assert_eq!((code, v["error"]["kind"].as_str()), (4, Some("permission-denied")), "{args:?}: {v:#}");
        assert!(v["error"]["message"].as_str().unwrap().contains("rootfs.ext4"), "{v:#}");
    }
}

#[test]
fn a_build_given_as_a_path_that_may_not_be_read_is_a_permission_problem() {
    let Some((f, nobody)) = as_nobody() else { return };
    chmod(f.root(), 0o700);
    let path_arg = format!("{}/", f.root().join(A).display());
    let (code, v) = nobody.run(&f, &["verify", &path_arg]);
    assert_eq!((code, v["error"]["kind"].as_str()), (4, Some("permission-denied")), "{v:#}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("needs search (x) permission on {}", f.root().display())), "{msg}");
    // The build folder itself: not "is not a build directory" (exit 3).
    chmod(f.root(), 0o755);
    chmod(&f.root().join(A), 0o700);
    let (code, v) = nobody.run(&f, &["verify", &path_arg]);
    assert_eq!((code, v["error"]["kind"].as_str()), (4, Some("permission-denied")), "{v:#}");
}

#[test]
fn verify_checks_the_builds_kernel_and_firecracker_against_the_nodes_directories() {
    let dir = tempfile::tempdir().unwrap();
    let w = StorageWriter::new(&dir.path().join("store")).unwrap();
    let id: BuildId = "d0140000-0000-4000-8000-000000000001".parse().unwrap();
    w.metadata(&id, "v1.12.1_210cbac", true).unwrap();
    let kernels = dir.path().join("fc-kernels");
    let fcs = dir.path().join("fc-versions");
    let run = |extra: &[&std::ffi::OsStr]| {
        let out = common::tmpl()
            .env_remove("HOST_KERNELS_DIR")
            .env_remove("FIRECRACKER_VERSIONS_DIR")
            .arg("--storage")
            .arg(&w.root)
            .args(["--json", "verify"])
            .arg(id.to_string())
            .args(extra)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<String> =
            common::findings_of(&v).into_iter().map(|(id, _, _)| id).filter(|i| i.starts_with("node.")).collect();
        (ids, v)
    };
    // Not asked: nothing about the node.
    assert!(run(&[]).0.is_empty());
    let flags = [
        std::ffi::OsStr::new("--host-kernels-dir"),
        kernels.as_os_str(),
        std::ffi::OsStr::new("--firecracker-versions-dir"),
        fcs.as_os_str(),
    ];
    let (ids, v) = run(&flags);
    assert_eq!(ids, ["node.kernel-missing", "node.firecracker-missing"], "{v:#}");
    let msg = common::fixtures::message(&common::findings_of(&v), "node.kernel-missing").to_string();
    assert!(msg.contains(&kernels.join(tmpl::demo::KERNEL_VERSION).join("vmlinux.bin").display().to_string()), "{msg}");
    // The orchestrator's layouts: <ver>/<arch>/vmlinux.bin for the kernel, the flat one for firecracker.
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let k = kernels.join(tmpl::demo::KERNEL_VERSION).join(arch);
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join("vmlinux.bin"), b"kernel").unwrap();
    std::fs::create_dir_all(fcs.join("v1.12.1_210cbac")).unwrap();
    std::fs::write(fcs.join("v1.12.1_210cbac/firecracker"), b"fc").unwrap();
    let (ids, v) = run(&flags);
    assert!(ids.is_empty(), "{v:#}");
    // HOST_KERNELS_DIR from the environment, as on an orchestrator node.
    let out = common::tmpl()
        .env("HOST_KERNELS_DIR", dir.path().join("elsewhere"))
        .env_remove("FIRECRACKER_VERSIONS_DIR")
        .arg("--storage")
        .arg(&w.root)
        .args(["--json", "verify"])
        .arg(id.to_string())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(common::findings_of(&v).iter().any(|(id, sev, _)| id == "node.kernel-missing" && sev == "error"), "{v:#}");
    assert_eq!(out.status.code(), Some(1));
}
