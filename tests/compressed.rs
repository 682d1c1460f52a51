//! Current E2B builds end to end: V4/V5 headers, compressed data files (zstd and LZ4 frames),
//! the Local provider's size sidecar, `verify --deep`, and `inspect --mappings/--frames`.
//! Fixtures are real ext4 images (`mkfs.ext4 -d`) written as layers by the crate's own writer,
//! which follows the reference layouts (e2b-formats.md §3, §7); debugfs is the oracle for file
//! contents.
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tmpl::build::Build;
use tmpl::compress::Compression;
use tmpl::demo::StorageWriter;
use tmpl::device::{Device, ReadAt};
use tmpl::fixtures::layer::LayerFormat;
use tmpl::header::{self, Header};
use tmpl::storage::BuildLocation;
use tmpl::vocab::Artifact;
use tmpl::vocab::BuildId;

const BASE: &str = "b5000000-0000-4000-8000-000000000001";
const CHILD: &str = "c5000000-0000-4000-8000-000000000002";

fn id(s: &str) -> BuildId {
    BuildId::parse(s).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    w: StorageWriter,
    base_img: PathBuf,
    child_img: PathBuf,
}

/// Files in the images, compared one by one with debugfs on the originals.
const FILES: &[&str] = &["/usr/bin/envd", "/etc/resolv.conf", "/.e2b", "/etc/motd", "/opt/big.bin"];

impl Fixture {
    /// A zstd V4 base and a child over it in `child_format`, from two real ext4 images.
    fn new(child_format: LayerFormat) -> Option<Fixture> {
        if !common::require("mkfs.ext4") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let w = StorageWriter::new(&dir.path().join("store")).unwrap();
        let tree = dir.path().join("tree");
        // A file of a few MiB so the data spans several 2 MiB frames.
        let big: Vec<u8> = (0..3_500_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        tmpl::demo::rootfs_tree(&tree, BASE, &[("etc/motd", b"base\n"), ("opt/big.bin", &big)]).unwrap();
        let base_img = dir.path().join("base.ext4");
        common::mkfs(&tree, &base_img, 16);
        std::fs::write(tree.join("etc/motd"), "the child changed this file\n").unwrap();
        let mut big2 = big.clone();
        big2[1_000_000..1_000_100].fill(7);
        std::fs::write(tree.join("opt/big.bin"), &big2).unwrap();
        let child_img = dir.path().join("child.ext4");
        common::mkfs(&tree, &child_img, 16);
        let zstd4 = LayerFormat::framed(4, Compression::Zstd);
        w.layer_as(&id(BASE), Artifact::Rootfs, &base_img, None, 0, &zstd4).unwrap();
        w.memfile_as(&id(BASE), 64, &zstd4, dir.path()).unwrap();
        w.snapfile(&id(BASE), "8.0.0", 64).unwrap();
        w.metadata(&id(BASE), "v1.14.1_431f1fc", false).unwrap();
        w.layer_as(&id(CHILD), Artifact::Rootfs, &child_img, Some(&id(BASE)), 1, &child_format).unwrap();
        w.memfile_as(&id(CHILD), 64, &child_format, dir.path()).unwrap();
        w.snapfile(&id(CHILD), "8.0.0", 64).unwrap();
        w.metadata(&id(CHILD), "v1.14.1_431f1fc", false).unwrap();
        Some(Fixture { dir, w, base_img, child_img })
    }

    fn root(&self) -> &Path {
        &self.w.root
    }

    fn path(&self, b: &str, name: &str) -> PathBuf {
        self.root().join(b).join(name)
    }

    fn open(&self, b: &str) -> Build {
        Build::open(&BuildLocation {
            dir: self.root().join(b),
            folder_id: Some(id(b)),
            storage_root: self.root().into(),
        })
        .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = common::tmpl().arg("--storage").arg(self.root()).arg("--json").args(args).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap(), v)
    }

    fn findings(&self, args: &[&str]) -> (i32, Vec<(String, String, String)>) {
        let (code, v) = self.json(args);
        let fs = v["builds"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["id"].as_str().unwrap().to_string(),
                    f["severity"].as_str().unwrap().to_string(),
                    f["message"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<(String, String, String)>>();
        for (id, _, _) in &fs {
            assert!(tmpl::checks::find(id).is_some(), "{id} is emitted but not in checks::catalog()");
        }
        (code, fs)
    }
}

#[track_caller]
fn has(fs: &[(String, String, String)], id: &str, severity: &str) -> String {
    fs.iter()
        .find(|(i, s, _)| i == id && s == severity)
        .map(|f| f.2.clone())
        .unwrap_or_else(|| panic!("no {severity} {id} in {fs:#?}"))
}

#[track_caller]
fn clean(fs: &[(String, String, String)]) {
    let bad: Vec<_> = fs.iter().filter(|(_, s, _)| s != "info").collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

fn read_device(d: &Device) -> Vec<u8> {
    let mut out = vec![0u8; d.size() as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        d.read_exact_at(chunk, (i as u64) << 20).unwrap();
    }
    out
}

/// The compressed layers read back equal to the original images, byte for byte and file by
/// file (debugfs on the originals is the oracle), for zstd and LZ4 children, V4 and V5.
#[test]
fn layered_compressed_builds_read_back_as_the_original_images() {
    for child_format in [LayerFormat::framed(5, Compression::Lz4), LayerFormat::framed(4, Compression::Zstd)] {
        let Some(f) = Fixture::new(child_format) else { return };
        assert!(f.path(BASE, "rootfs.ext4.zstd").exists() && !f.path(BASE, "rootfs.ext4").exists());
        let child_data = format!("rootfs.ext4{}", child_format.compression.suffix());
        assert!(f.path(CHILD, &child_data).exists());
        assert!(f.path(CHILD, &format!("{child_data}.uncompressed-size")).exists());
        for (b, img) in [(BASE, &f.base_img), (CHILD, &f.child_img)] {
            let build = f.open(b);
            let h = build.rootfs.header.parsed().unwrap();
            assert_eq!(h.format(), if b == BASE { 4 } else { child_format.version });
            let dev = Device::open(&build, Artifact::Rootfs).unwrap();
            assert!(dev.is_compressed());
            let original = std::fs::read(img).unwrap();
            assert!(read_device(&dev) == original, "{b}: device differs from the image");
            // File by file through the filesystem reader, against debugfs on the original.
            let fs = tmpl::rootfs::Rootfs::open(Arc::new(dev)).unwrap();
            for path in FILES {
                assert_eq!(fs.read(path).unwrap(), common::debugfs_cat(img, path), "{b}:{path}");
            }
            // assemble_to (boot-test, inject-envd --fork) materialises the same image.
            let out = tempfile::tempfile().unwrap();
            Device::open(&build, Artifact::Rootfs).unwrap().assemble_to(&out, &tmpl::progress::NoProgress).unwrap();
            let mut assembled = vec![0u8; original.len()];
            out.read_exact_at(&mut assembled, 0).unwrap();
            assert!(assembled == original);
        }
        // The child reads the base's zstd frames through its own (trimmed) table.
        let child = f.open(CHILD);
        let h = child.rootfs.header.parsed().unwrap();
        let inherited = h.build_info(&id(BASE)).unwrap();
        assert_eq!(inherited.frames.compression, Compression::Zstd);
        // Verify (metadata only) is clean for both; deep verify too, with checksums matched.
        for b in [BASE, CHILD] {
            let (code, fs) = f.findings(&["verify", b]);
            clean(&fs);
            assert_eq!(code, 0);
        }
        let (code, v) = f.json(&["verify", "--deep", CHILD]);
        assert_eq!(code, 0, "{v:#}");
        let files = v["builds"][0]["deep"].as_array().unwrap();
        // Its own rootfs and memfile, and the base's rootfs (its memfile is not layered).
        assert_eq!(files.len(), 3, "{files:#?}");
        for file in files {
            assert_eq!(file["ok"], true, "{file:#}");
            assert_eq!(file["sha256"], file["expected_sha256"], "{file:#}");
        }
        assert!(v["deep"]["bytes_hashed"].as_u64().unwrap() > 0);
        assert!(v["deep"]["mb_per_s"].as_f64().unwrap() > 0.0);
    }
}

/// The base's own rootfs, streamed by deep verify, hashes to what sha256sum says of the
/// uncompressed bytes.
#[test]
fn deep_digest_is_the_sha256_of_the_uncompressed_data() {
    let Some(f) = Fixture::new(LayerFormat::framed(5, Compression::Lz4)) else { return };
    let build = f.open(BASE);
    let h = build.rootfs.header.parsed().unwrap();
    let info = h.build_info(&id(BASE)).unwrap();
    // Decompress frame by frame with the crate's decoder and hash independently.
    use sha2::Digest;
    let z = std::fs::read(f.path(BASE, "rootfs.ext4.zstd")).unwrap();
    let mut plain = Vec::new();
    for fr in &info.frames.frames {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        plain.extend(d.decompress(&z[fr.start_c as usize..fr.end_c() as usize], fr.size_u as usize).unwrap());
    }
    assert_eq!(plain.len() as u64, info.known_size().unwrap());
    let want = header::hex(&sha2::Sha256::digest(&plain));
    assert_eq!(header::hex(&info.checksum), want);
    let (_, v) = f.json(&["verify", "--deep", BASE]);
    let file = v["builds"][0]["deep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["file"].as_str().unwrap().ends_with("rootfs.ext4.zstd"))
        .unwrap()
        .clone();
    assert_eq!(file["sha256"], want);
}

#[test]
fn deep_verify_catches_a_flipped_byte_and_a_wrong_length() {
    // Uncompressed V4 data (SHA-256 recorded, no frames): the digest is the only witness.
    let Some(f) = Fixture::new(LayerFormat::framed(4, Compression::None)) else { return };
    let data = f.path(CHILD, "rootfs.ext4");
    assert!(data.exists());
    let (code, fs) = f.findings(&["verify", "--deep", CHILD]);
    clean(&fs);
    assert_eq!(code, 0);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&data).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, 100).unwrap();
    file.write_all_at(&[b[0] ^ 0x04], 100).unwrap();
    // Plain verify cannot see it; deep verify does.
    let (code, fs) = f.findings(&["verify", CHILD]);
    assert!(!fs.iter().any(|(i, _, _)| i == "data.checksum-mismatch"));
    let _ = code;
    let (code, fs) = f.findings(&["verify", "--deep", CHILD]);
    assert!(has(&fs, "data.checksum-mismatch", "error").contains("SHA-256 of"));
    assert_eq!(code, 1);
    file.write_all_at(&b, 100).unwrap();
    // A longer file: a stale tail (warning without --deep, length mismatch with it).
    let len = file.metadata().unwrap().len();
    file.set_len(len + 4096).unwrap();
    let (_, fs) = f.findings(&["verify", CHILD]);
    has(&fs, "data.size-mismatch", "warning");
    let (code, fs) = f.findings(&["verify", "--deep", CHILD]);
    assert!(has(&fs, "data.length-mismatch", "error").contains(&format!("{}", len + 4096)));
    assert_eq!(code, 1);
    file.set_len(len).unwrap();
    let (code, _) = f.findings(&["verify", "--deep", CHILD]);
    assert_eq!(code, 0);
}

#[test]
fn deep_verify_checks_every_compressed_frame_and_the_sidecar() {
    let Some(f) = Fixture::new(LayerFormat::framed(5, Compression::Lz4)) else { return };
    // A flipped byte inside the base's zstd data: the frame's checksum or decoding fails.
    let z = f.path(BASE, "rootfs.ext4.zstd");
    let h: Header = f.open(BASE).rootfs.header.parsed().unwrap().clone();
    let fr = h.build_info(&id(BASE)).unwrap().frames.frames[1];
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&z).unwrap();
    let at = fr.start_c + u64::from(fr.size_c) - 2;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    let (code, fs) = f.findings(&["verify", "--deep", CHILD]);
    let msg = has(&fs, "data.frame-checksum", "error");
    assert!(msg.contains("frame 1"), "{msg}");
    assert_eq!(code, 1);
    file.write_all_at(&b, at).unwrap();
    // The sidecar disagrees with the header: plain verify sees it.
    let side = f.path(CHILD, "rootfs.ext4.lz4.uncompressed-size");
    let v: u64 = std::fs::read_to_string(&side).unwrap().parse().unwrap();
    std::fs::write(&side, (v + 4096).to_string()).unwrap();
    let (code, fs) = f.findings(&["verify", CHILD]);
    has(&fs, "data.sidecar-mismatch", "error");
    assert_eq!(code, 1);
    std::fs::write(&side, "12ab").unwrap();
    has(&f.findings(&["verify", CHILD]).1, "data.sidecar-invalid", "error");
    std::fs::write(&side, format!("{v}\n")).unwrap();
    clean(&f.findings(&["verify", CHILD]).1);
    // The base's own header gone (as after E2B's copy-build) and the child's table for it
    // trimmed (here: without frame 0): deep verify decodes the base's file as a stream of
    // frames and still checks its digest; the mappings into frame 0 are a frame-table gap.
    std::fs::remove_file(f.path(BASE, "rootfs.ext4.header")).unwrap();
    let cpath = f.path(CHILD, "rootfs.ext4.header");
    let mut ch = header::parse(&std::fs::read(&cpath).unwrap()).unwrap();
    let e = ch.builds.iter_mut().find(|b| b.build == id(BASE)).unwrap();
    e.frames.frames.remove(0);
    std::fs::write(&cpath, header::try_encode(&ch).unwrap()).unwrap();
    let (code, fs) = f.findings(&["verify", CHILD]);
    has(&fs, "header.frame-table-gap", "error");
    assert_eq!(code, 1);
    let (_, v) = f.json(&["verify", "--deep", CHILD]);
    let fs: Vec<&str> =
        v["builds"][0]["findings"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert!(fs.contains(&"data.partial-frame-table"), "{fs:?}");
    let base_file = v["builds"][0]["deep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["file"].as_str().unwrap().starts_with(BASE))
        .unwrap()
        .clone();
    assert_eq!(base_file["ok"], true, "{base_file:#}");
    assert_eq!(base_file["sha256"], base_file["expected_sha256"]);
    // Truncated compressed data: plain verify sees the frame table run past the end.
    let len = std::fs::metadata(&z).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&z).unwrap().set_len(len - 100).unwrap();
    has(&f.findings(&["verify", CHILD]).1, "header.data-too-short", "error");
}

/// Each corruption of a V4/V5 header in the reference has its own finding id.
#[test]
fn corrupt_headers_map_to_specific_findings() {
    let Some(f) = Fixture::new(LayerFormat::framed(5, Compression::Lz4)) else { return };
    let hpath = f.path(CHILD, "rootfs.ext4.header");
    let good = std::fs::read(&hpath).unwrap();
    let h = header::parse(&good).unwrap();
    let inner = header::encode_inner(&h).unwrap();
    // Rebuild a header file around an inner block, with an inner length and flags.
    let framed = |inner: &[u8], len: u32, flags: u8| {
        let mut out = good[..64].to_vec();
        out.push(flags);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend(tmpl::compress::lz4_encode(inner));
        out
    };
    let n = inner.len() as u32;
    // The offset of the first builds entry's frame table, and of the V5 columns' last byte.
    let ft = 4 + 16 + 8 + 32;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut b = good.clone();
    b[65..69].copy_from_slice(&((256u32 << 20) + 1).to_le_bytes());
    cases.push(("header.v4-inner-too-large", b));
    cases.push(("header.v4-inner-length-mismatch", framed(&inner, n + 1, 0)));
    cases.push(("header.v4-inner-length-mismatch", framed(&inner, n - 1, 0)));
    let mut b = good.clone();
    b[64 + 5 + 7 + 4 + 2] ^= 0x01;
    cases.push(("header.v4-lz4-checksum", b));
    let mut b = good.clone();
    b[69] = 0;
    cases.push(("header.v4-bad-lz4", b));
    cases.push(("header.v4-bad-lz4", good[..good.len() - 12].to_vec()));
    let mut i = inner.clone();
    i[ft..ft + 4].copy_from_slice(&0u32.to_le_bytes());
    cases.push(("header.frame-table-type-zero", framed(&i, n, 0)));
    let mut i = inner.clone();
    i[ft..ft + 4].copy_from_slice(&9u32.to_le_bytes());
    cases.push(("header.frame-table-unknown-type", framed(&i, n, 0)));
    let mut i = inner.clone();
    i[ft + 4..ft + 8].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
    cases.push(("header.frame-count-cap", framed(&i, n, 0)));
    let mut i = inner.clone();
    i[ft + 8 + 16..ft + 8 + 20].copy_from_slice(&0u32.to_le_bytes());
    cases.push(("header.frame-table-invalid", framed(&i, n, 0)));
    let mut i = inner.clone();
    let last = i.len() - 1;
    i[last] = 100;
    cases.push(("header.v5-build-index", framed(&i, n, 0)));
    cases.push(("header.v4-truncated", framed(&inner[..inner.len() - 3], n - 3, 0)));
    cases.push(("header.pending-upload", framed(&inner, n, 1)));
    for (want, bytes) in cases {
        std::fs::write(&hpath, &bytes).unwrap();
        let (code, fs) = f.findings(&["verify", CHILD]);
        has(&fs, want, "error");
        assert_eq!(code, 1, "{want}");
    }
    // V5 overlap: move the second entry's offset delta back.
    let mut h2 = h.clone();
    let maps: Vec<_> = h2.mappings.iter().filter(|m| !m.is_nil()).cloned().collect();
    assert!(maps.len() >= 2);
    h2.mappings = maps;
    h2.mappings[1].offset = h2.mappings[0].offset;
    let bytes = header::try_encode(&h2).unwrap();
    std::fs::write(&hpath, &bytes).unwrap();
    has(&f.findings(&["verify", CHILD]).1, "header.v5-overlap", "error");
    std::fs::write(&hpath, &good).unwrap();
    clean(&f.findings(&["verify", CHILD]).1);
}

#[test]
fn inspect_mappings_and_frames_as_json_and_text() {
    let Some(f) = Fixture::new(LayerFormat::framed(5, Compression::Lz4)) else { return };
    let (code, v) = f.json(&["inspect", CHILD, "--mappings", "--frames"]);
    assert_eq!(code, 0);
    let h = f.open(CHILD).rootfs.header.parsed().unwrap().clone();
    let maps = v["mappings"]["rootfs"].as_array().unwrap();
    assert_eq!(maps.len(), h.mappings.len());
    for (j, m) in maps.iter().zip(&h.mappings) {
        assert_eq!(j["offset"], m.offset);
        assert_eq!(j["length"], m.length);
        assert_eq!(j["build"], m.build.to_string());
        assert_eq!(j["storage_offset"], m.storage_offset);
    }
    let builds = v["frames"]["rootfs"].as_array().unwrap();
    let base = builds.iter().find(|b| b["build"] == BASE).unwrap();
    assert_eq!(base["frames"]["compression"], "zstd");
    let info = h.build_info(&id(BASE)).unwrap();
    assert_eq!(base["checksum"], header::hex(&info.checksum));
    let frames = base["frames"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), info.frames.frames.len());
    assert_eq!(frames[0]["size_u"], info.frames.frames[0].size_u);
    assert_eq!(frames[0]["start_c"], info.frames.frames[0].start_c);
    let own = builds.iter().find(|b| b["build"] == CHILD).unwrap();
    assert_eq!(own["frames"]["compression"], "lz4");
    assert!(v["memfile"]["header"]["format"] == 5);
    // Without the flags the low-level view is absent.
    let (_, v) = f.json(&["inspect", CHILD]);
    assert!(v.get("mappings").is_none() && v.get("frames").is_none());
    // Text.
    let out = common::tmpl()
        .arg("--storage")
        .arg(f.root())
        .args(["inspect", CHILD, "--frames", "--mappings"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rootfs mappings") && text.contains("storage offset"), "{text}");
    assert!(text.contains("rootfs builds section") && text.contains("zstd,") && text.contains("U offset"), "{text}");
    assert!(text.contains(&header::hex(&info.checksum)));
}

/// boot-test and inject-envd --fork materialise a compressed build through `vm::image`.
#[test]
fn inspect_reads_the_filesystem_of_a_compressed_build() {
    let Some(f) = Fixture::new(LayerFormat::framed(5, Compression::Lz4)) else { return };
    let (_, v) = f.json(&["inspect", CHILD]);
    assert!(v["filesystem"]["uuid"].is_string(), "{v:#}");
    let _ = &f.dir;
}
