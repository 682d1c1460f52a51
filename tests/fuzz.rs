//! Never-panic, bounded-memory and bounded-time properties, as ordinary tests on the stable
//! toolchain (issue 12): structured mutation of valid seeds made at test time — the demo's
//! builds (V3 layers, V4 zstd and V5 LZ4 headers, snapfiles, metadata) and small ext4 images
//! made with `mkfs.ext4 -d` — over every parser and the whole verify/inspect path.
//!
//! Most cases run in-process against the domain functions; a subset goes through the binary for
//! the process-level properties (a JSON document, a documented exit code, no panic message, no
//! signal). Each case is deterministic (`case N` in a failure message reproduces it: the
//! mutation depends only on the case number), its heap peak is measured by a counting allocator
//! (per thread), and its time is bounded generously to catch a hang, not to measure speed.
//!
//! Cases per test: `TMPL_FUZZ_CASES` scales them (default 1 = what CI runs, a couple of minutes
//! on two cores in all).
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tmpl::build::Build;
use tmpl::storage::BuildLocation;
use tmpl::vocab::BuildId;

// ---------------------------------------------------------------------------------------------
// A counting allocator: the heap in use and its peak, per thread (tests run in parallel threads;
// the in-process paths measured here allocate on the calling thread).

struct Counting;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get().saturating_add(n);
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn sub(n: usize) {
    let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(n)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters change.
#[expect(unsafe_code, reason = "a counting allocator forwards to the system one")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap a single case may use at its peak. The largest legitimate allocation on these inputs is
/// a V4/V5 inner block (capped at 256 MiB by the format, but the seeds are small) and a 16 MiB
/// whole-file read; anything near a gigabyte means a size from the input was trusted.
const MAX_CASE_HEAP: usize = 320 << 20;
/// Wall time one case may take before it counts as a hang (cases take milliseconds).
const MAX_CASE_TIME: Duration = Duration::from_secs(60);

/// Run one case: no panic may escape, the heap peak and the time are bounded.
fn case<T>(what: &str, n: usize, f: impl FnOnce() -> T) -> T {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let started = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f));
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    let r = r.unwrap_or_else(|_| panic!("{what}, case {n}: panicked (see the message above)"));
    assert!(peak <= MAX_CASE_HEAP, "{what}, case {n}: heap peak {peak} bytes");
    assert!(elapsed <= MAX_CASE_TIME, "{what}, case {n}: took {elapsed:?}");
    r
}

fn scale() -> usize {
    std::env::var("TMPL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

// ---------------------------------------------------------------------------------------------
// Deterministic mutation.

/// SplitMix64: a case's mutations depend only on its number.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    /// A value from the edges integer fields break at, or a random one.
    fn edgy(&mut self) -> u64 {
        const EDGES: &[u64] = &[
            0,
            1,
            2,
            40,
            59,
            60,
            4095,
            4096,
            4097,
            65535,
            1 << 20,
            (1 << 31) - 1,
            1 << 31,
            u32::MAX as u64,
            1 << 32,
            1 << 40,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 99,
            u64::MAX - 4095,
            u64::MAX,
        ];
        if self.below(4) == 0 { self.next() } else { EDGES[self.below(EDGES.len())] }
    }
}

/// Random byte mutations: flips, overwrites with edge values, truncation, extension.
fn mutate_bytes(r: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..=r.below(4) {
        match r.below(6) {
            0 | 1 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            2 if b.len() >= 8 => {
                let i = r.below(b.len() - 7);
                b[i..i + 8].copy_from_slice(&r.edgy().to_le_bytes());
            }
            3 if b.len() >= 4 => {
                let i = r.below(b.len() - 3);
                b[i..i + 4].copy_from_slice(&(r.edgy() as u32).to_le_bytes());
            }
            4 => b.truncate(r.below(b.len() + 1)),
            _ => {
                let n = r.below(64);
                b.extend((0..n).map(|_| r.next() as u8));
            }
        }
    }
}

/// A header mutated by its structure: a metadata field or a mapping field set to an edge value,
/// or, for V4/V5, the inner block decompressed, mutated and recompressed with a correct length
/// (so the mutation reaches the builds section and the mappings past the LZ4 checksums).
fn mutate_header(r: &mut Rng, b: &mut Vec<u8>) {
    let version = tmpl::header::peek_version(b).unwrap_or(0);
    match r.below(3) {
        0 if b.len() >= 64 => {
            let field = [8usize, 16, 24][r.below(3)];
            b[field..field + 8].copy_from_slice(&r.edgy().to_le_bytes());
        }
        1 if matches!(version, 4 | 5) && b.len() > 69 => {
            let Ok(mut inner) = tmpl::compress::lz4_decode_all(&b[69..], 256 << 20) else { return };
            if inner.len() >= 8 && r.below(2) == 0 {
                // A count or size field of the builds section / mappings.
                let i = r.below(inner.len() - 7);
                let v = r.edgy();
                if r.below(2) == 0 {
                    inner[i..i + 4].copy_from_slice(&(v as u32).to_le_bytes());
                } else {
                    inner[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            } else {
                mutate_bytes(r, &mut inner);
            }
            let z = tmpl::compress::lz4_encode(&inner);
            b.truncate(65);
            b.extend_from_slice(&(inner.len() as u32).to_le_bytes());
            b.extend_from_slice(&z);
        }
        _ if b.len() >= 104 && version <= 3 => {
            let m = 64 + 40 * r.below((b.len() - 64) / 40);
            let field = [0usize, 8, 32][r.below(3)];
            if m + field + 8 <= b.len() {
                b[m + field..m + field + 8].copy_from_slice(&r.edgy().to_le_bytes());
            }
        }
        _ => mutate_bytes(r, b),
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// The demo storage, made in `dir` (real mkfs.ext4 images, V3/V4/V5 layers, snapfiles).
fn demo(dir: &Path) -> Option<PathBuf> {
    if !common::require("mkfs.ext4") {
        return None;
    }
    let root = dir.join("store");
    tmpl::demo::create(&root).expect("demo storage");
    Some(root)
}

fn build_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(BuildId::is_build_id))
        .collect();
    v.sort();
    v
}

fn loc(dir: &Path) -> BuildLocation {
    let id = dir.file_name().and_then(|n| n.to_str()).and_then(|n| BuildId::parse(n).ok());
    BuildLocation { dir: dir.to_path_buf(), folder_id: id, storage_root: dir.parent().unwrap().to_path_buf() }
}

/// Small files of a build that a mutation may target, and the kind of each.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Header,
    Metadata,
    Snapfile,
    Data,
}

fn targets(dir: &Path) -> Vec<(PathBuf, Kind)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let kind = if name.ends_with(".header") {
            Kind::Header
        } else if name == "metadata.json" {
            Kind::Metadata
        } else if name == "snapfile" {
            Kind::Snapfile
        } else if name.starts_with("rootfs.ext4") && !name.ends_with("size") {
            Kind::Data
        } else {
            continue;
        };
        out.push((p, kind));
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Parsers, in-process.

#[test]
fn parsers_never_panic_on_mutated_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = demo(dir.path()) else { return };
    let mut seeds: Vec<(Vec<u8>, Kind)> = Vec::new();
    for b in build_dirs(&root) {
        for (p, k) in targets(&b) {
            if k != Kind::Data {
                seeds.push((std::fs::read(&p).unwrap(), k));
            }
        }
    }
    assert!(seeds.iter().any(|(b, k)| *k == Kind::Header && tmpl::header::peek_version(b) == Some(5)));
    assert!(seeds.iter().any(|(b, k)| *k == Kind::Header && tmpl::header::peek_version(b) == Some(4)));
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let elf_head = exe[..tmpl::elf::HEAD_BYTES.min(exe.len())].to_vec();
    let bi = tmpl::elf::synthetic_go_buildinfo("go1.24.1", "path\tgithub.com/e2b-dev/infra/packages/envd\n");
    let script = tmpl::demo::hand_written_wrapper("-isnotfc").into_bytes();
    let unit =
        b"[Service]\nExecStart=/usr/bin/envd -port 49983\nRestart=always\n[Install]\nWantedBy=multi-user.target\n";
    let lz4 = tmpl::compress::lz4_encode(&exe[..1 << 16]);
    let zstd = tmpl::compress::encode_frame(tmpl::compress::Compression::Zstd, &exe[..1 << 16]).unwrap();
    let n = 2500 * scale();
    for i in 0..n {
        let mut r = Rng::new(i as u64);
        match i % 8 {
            0..=2 => {
                let pool: Vec<&Vec<u8>> = seeds.iter().filter(|(_, k)| *k == Kind::Header).map(|(b, _)| b).collect();
                let mut b = pool[r.below(pool.len())].clone();
                mutate_header(&mut r, &mut b);
                case("header::parse", i, || {
                    if let Ok(h) = tmpl::header::parse(&b) {
                        let _ = tmpl::header::validate(&h);
                        let _ = (h.byte_split(), h.build_stats(), h.is_identity());
                        let _ = tmpl::header::encode(&h);
                    }
                });
            }
            3 => {
                let pool: Vec<&Vec<u8>> = seeds.iter().filter(|(_, k)| *k != Kind::Header).map(|(b, _)| b).collect();
                let mut b = pool[r.below(pool.len())].clone();
                mutate_bytes(&mut r, &mut b);
                case("metadata/snapfile", i, || {
                    let _ = tmpl::metadata::parse(&b);
                    let _ = tmpl::snapshot::analyze_bytes(&b);
                });
            }
            4 => {
                let mut b = if r.below(2) == 0 { elf_head.clone() } else { tmpl::elf::synthetic_go(62) };
                mutate_bytes(&mut r, &mut b);
                let mut g = bi.clone();
                mutate_bytes(&mut r, &mut g);
                case("elf", i, || {
                    if let Ok(info) = tmpl::elf::parse(&b) {
                        let _ = info.truncated(r.edgy());
                    }
                    let _ = tmpl::elf::go_buildinfo(&g);
                    let mut scan = tmpl::envd::MarkerScan::default();
                    for c in b.chunks(1 + i % 97).chain(g.chunks(7)) {
                        scan.feed(c);
                    }
                    let _ = scan.finish();
                });
            }
            5 => {
                let mut s = if r.below(2) == 0 { script.clone() } else { unit.to_vec() };
                mutate_bytes(&mut r, &mut s);
                let text = String::from_utf8_lossy(&s).into_owned();
                case("script/unit", i, || {
                    let parsed = tmpl::rootfs::script::parse(&text);
                    for c in &parsed.commands {
                        let args = tmpl::envd::parse_args(c.args());
                        let _ = tmpl::envd::check(&args, tmpl::envd::current());
                    }
                    let _ = tmpl::rootfs::unit::parse(&text);
                    let _ = tmpl::rootfs::script::shebang(text.as_bytes());
                });
            }
            _ => {
                let (mut b, c) = if r.below(2) == 0 {
                    (lz4.clone(), tmpl::compress::Compression::Lz4)
                } else {
                    (zstd.clone(), tmpl::compress::Compression::Zstd)
                };
                mutate_bytes(&mut r, &mut b);
                let size_u = [1 << 16, 1, 0, 2 << 20, 16 << 20][r.below(5)];
                case("frames", i, || {
                    let _ = tmpl::compress::lz4_decode_all(&b, 1 << 20);
                    let mut out = Vec::new();
                    let _ = tmpl::compress::FrameDecoder::new().decode_into(c, &b, size_u, &mut out);
                    let _ = tmpl::compress::decode_stream(c, &b[..], &mut |_| Ok(()));
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole builds, in-process: verify (and deep) and inspect on a mutated demo build.

/// A build with no `build.check-failed` finding: no panic was caught inside the checks either.
fn assert_no_internal_failure(r: &tmpl::commands::verify::BuildResult, what: &str, n: usize) {
    if let Some(f) = r.findings.iter().find(|f| f.id == "build.check-failed") {
        panic!("{what}, case {n}: {}", f.message);
    }
}

#[test]
fn verify_and_inspect_never_panic_on_mutated_builds() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = demo(dir.path()) else { return };
    let builds = build_dirs(&root);
    let n = 500 * scale();
    for i in 0..n {
        let mut r = Rng::new(1_000_000 + i as u64);
        let b = &builds[r.below(builds.len())];
        let ts = targets(b);
        if ts.is_empty() {
            continue;
        }
        let (path, kind) = ts[r.below(ts.len())].clone();
        let original = std::fs::read(&path).unwrap();
        let mut m = original.clone();
        match kind {
            Kind::Header => mutate_header(&mut r, &mut m),
            Kind::Data => {
                // A few bytes of the image: mostly in the first blocks (superblock, group
                // descriptors, bitmaps, inode tables, the root directory), some anywhere.
                let span = if r.below(4) == 0 { m.len() } else { m.len().min(1 << 18) };
                for _ in 0..=r.below(8) {
                    if span >= 8 {
                        let at = r.below(span - 7);
                        if r.below(2) == 0 {
                            m[at..at + 8].copy_from_slice(&r.edgy().to_le_bytes());
                        } else {
                            m[at] ^= 1 << r.below(8);
                        }
                    }
                }
            }
            _ => mutate_bytes(&mut r, &mut m),
        }
        std::fs::write(&path, &m).unwrap();
        let l = loc(b);
        let deep = i % 10 == 0;
        case("verify", i, || {
            let report = if deep {
                let storage = tmpl::storage::Storage::resolve(Some(&root), &|_| None).unwrap();
                let p = tmpl::progress::NoProgress;
                tmpl::commands::verify::verify_all_with(
                    &storage,
                    std::slice::from_ref(&l),
                    false,
                    None,
                    Some(&p as &dyn tmpl::progress::Progress),
                )
                .unwrap()
                .builds
                .remove(0)
            } else {
                tmpl::commands::verify::verify_one(&l, false)
            };
            assert_no_internal_failure(&report, "verify", i);
        });
        if let Ok(build) = Build::open(&l) {
            case("inspect", i, || {
                let _ = tmpl::commands::inspect::inspect(&build);
            });
        }
        std::fs::write(&path, &original).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// ext4 images, in-process: inode and directory mutations under the rootfs reader.

struct Image {
    path: PathBuf,
    block: u64,
    /// Byte offsets of the inodes of interesting paths.
    inodes: Vec<(String, u64)>,
    /// Byte offsets of the first block of each directory.
    dir_blocks: Vec<u64>,
}

fn debugfs(image: &Path, cmd: &str, write: bool) -> String {
    let mut c = Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap());
    if write {
        c.arg("-w");
    }
    let out = c.args(["-R", cmd]).arg(image).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PATHS: &[&str] = &[
    "/",
    "/sbin",
    "/sbin/init",
    "/usr/bin",
    "/usr/bin/envd",
    "/etc",
    "/etc/init.d/rcS",
    "/etc/systemd/system",
    "/etc/systemd/system/envd.service",
    "/etc/systemd/system/multi-user.target.wants/envd.service",
    "/lib",
    "/many",
    "/long",
];

/// A small image from a tree with every kind of inode the boot path reads: a script init, a
/// symlink chain, an envd, a systemd unit and its wants link, a 300-entry directory (hashed by
/// e2fsck -D), a 3000-byte symlink (stored in a block).
fn seed_image(dir: &Path, name: &str, csum: bool) -> Image {
    let tree = dir.join(format!("tree-{name}"));
    for d in ["sbin", "usr/bin", "etc/init.d", "etc/systemd/system/multi-user.target.wants", "lib", "many"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    std::fs::write(tree.join("usr/bin/envd"), &exe[..200_000.min(exe.len())]).unwrap();
    std::fs::write(tree.join("etc/init.d/rcS"), "#!/bin/sh\n/usr/bin/envd -port 49983 &\nexec /bin/sh\n").unwrap();
    std::fs::write(tree.join("etc/systemd/system/envd.service"), "[Service]\nExecStart=/usr/bin/envd\n").unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/envd.service",
        tree.join("etc/systemd/system/multi-user.target.wants/envd.service"),
    )
    .unwrap();
    std::fs::write(tree.join("sbin/init"), "#!/lib/sh\nexec /usr/bin/envd\n").unwrap();
    std::os::unix::fs::symlink("../usr/bin/envd", tree.join("lib/sh")).unwrap();
    for k in 0..300 {
        std::fs::write(tree.join(format!("many/file-with-a-longish-name-{k:04}")), "x").unwrap();
    }
    std::os::unix::fs::symlink(format!("/{}usr/bin/envd", "./".repeat(1500)), tree.join("long")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["usr/bin/envd", "etc/init.d/rcS", "sbin/init"] {
        std::fs::set_permissions(tree.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.join(format!("{name}.ext4"));
    let features = if csum { "metadata_csum" } else { "^metadata_csum" };
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-O", features, "-d"])
        .arg(&tree)
        .arg(&path)
        .arg("8M")
        .status()
        .unwrap();
    assert!(st.success());
    let _ = Command::new("e2fsck").args(["-fyD"]).arg(&path).output();
    let block = 4096;
    let mut inodes = Vec::new();
    let mut dir_blocks = Vec::new();
    for p in PATHS {
        let out = debugfs(&path, &format!("imap {p}"), false);
        // "located at block 35, offset 0x0b00"
        let Some(rest) = out.split("located at block ").nth(1) else { continue };
        let (blk, off) = rest.split_once(", offset ").unwrap();
        let blk: u64 = blk.trim().parse().unwrap();
        let off = u64::from_str_radix(off.trim().trim_start_matches("0x"), 16).unwrap();
        inodes.push((p.to_string(), blk * block + off));
        if !p.contains('.') && !["/sbin/init", "/usr/bin/envd", "/long"].contains(p) {
            let blocks = debugfs(&path, &format!("blocks {p}"), false);
            if let Some(first) = blocks.split_whitespace().next().and_then(|b| b.parse::<u64>().ok()) {
                dir_blocks.push(first * block);
            }
        }
    }
    assert!(inodes.len() >= 10, "{inodes:?}");
    Image { path, block, inodes, dir_blocks }
}

/// Inode fields (ext4 inode layout): (offset, width).
const INODE_FIELDS: &[(u64, usize)] = &[
    (0, 2),   // i_mode
    (4, 4),   // i_size_lo
    (108, 4), // i_size_high
    (32, 4),  // i_flags
    (26, 2),  // i_links_count
    (40, 2),  // extent header magic
    (42, 2),  // entries
    (44, 2),  // max
    (46, 2),  // depth
    (52, 4),  // first extent: logical block
    (56, 2),  // length
    (58, 2),  // start (high)
    (60, 4),  // start (low)
    (64, 4),  // second extent / inline data
];

fn read_tree(fs: &tmpl::rootfs::Rootfs, ctx: &tmpl::rootfs::boot::Context) {
    let _ = tmpl::rootfs::boot::gather(fs, ctx);
    for p in PATHS {
        let _ = fs.lstat(p);
        let _ = fs.read_dir(p);
        let _ = fs.read_link(p);
        let _ = fs.read_head(p, 4096);
        let _ = fs.canonicalize(p);
    }
    let _ = fs.sha256("/usr/bin/envd");
}

#[test]
fn mutated_ext4_images_never_panic() {
    if !common::require("mkfs.ext4") || !common::require("debugfs") || !common::require("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seeds = [seed_image(dir.path(), "plain", false), seed_image(dir.path(), "csum", true)];
    let ctx = tmpl::rootfs::boot::Context { scan: tmpl::rootfs::boot::Scan::Always, ..Default::default() };
    let work = dir.path().join("work.ext4");
    let n = 700 * scale();
    let mut panics_seen = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..n {
        let mut r = Rng::new(2_000_000 + i as u64);
        // The checksummed image: mutations through debugfs (which keeps the inode checksums right,
        // so the reader gets past them); the plain one: bytes written directly.
        let csum = i % 4 == 0;
        let seed = &seeds[usize::from(csum)];
        std::fs::copy(&seed.path, &work).unwrap();
        if csum {
            let (p, _) = &seed.inodes[r.below(seed.inodes.len())];
            let (field, value) = match r.below(4) {
                0 => ("size", r.edgy()),
                1 => ("flags", [0x1000u64, 0x81000, 0x10080000, 0x80, 0x4000][r.below(5)] | (r.next() & 0x1000)),
                2 => ("mode", [0o040755u64, 0o120777, 0o100755, 0o020644, 0][r.below(5)]),
                _ => ("block[2]", r.edgy() & 0xFFFF_FFFF),
            };
            debugfs(&work, &format!("sif {p} {field} {value}"), true);
        } else {
            let f = std::fs::OpenOptions::new().write(true).open(&work).unwrap();
            for _ in 0..=r.below(3) {
                if r.below(4) == 0 && !seed.dir_blocks.is_empty() {
                    // A directory block: a rec_len, name_len or inode number.
                    let b = seed.dir_blocks[r.below(seed.dir_blocks.len())];
                    let at = b + r.below(seed.block as usize - 8) as u64;
                    f.write_all_at(&(r.edgy() as u32).to_le_bytes(), at).unwrap();
                } else {
                    let (_, ino) = &seed.inodes[r.below(seed.inodes.len())];
                    let (off, w) = INODE_FIELDS[r.below(INODE_FIELDS.len())];
                    let v = r.edgy().to_le_bytes();
                    f.write_all_at(&v[..w], ino + off).unwrap();
                }
            }
        }
        let panics = case("ext4", i, || {
            let dev = tmpl::device::Device::plain_file(&work).unwrap();
            let fs = match tmpl::rootfs::Rootfs::open(Arc::new(dev)) {
                Ok(fs) => fs,
                Err(e) => return vec![e.to_string()].into_iter().filter(|m| m.contains("panicked")).collect(),
            };
            read_tree(&fs, &ctx);
            fs.anomalies()
                .into_iter()
                .filter_map(|a| match a {
                    tmpl::rootfs::Anomaly::ReaderPanic { message, .. } => Some(message),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        for p in panics {
            // Where, not the numbers: one line per place in the reader.
            let place = p.rsplit_once(" (at ").map_or(p.clone(), |(_, at)| at.trim_end_matches(')').to_string());
            *panics_seen.entry(place).or_default() += 1;
        }
    }
    // The reader's panics were isolated and reported; listed for the upstream report.
    eprintln!("{n} image cases; ext4 reader panics (isolated, reported as findings): {panics_seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Through the binary: a JSON document and a documented exit code, whatever the input.

#[test]
fn the_binary_answers_json_with_a_documented_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = demo(dir.path()) else { return };
    let builds = build_dirs(&root);
    let n = 40 * scale();
    for i in 0..n {
        let mut r = Rng::new(3_000_000 + i as u64);
        let b = &builds[r.below(builds.len())];
        let ts = targets(b);
        let (path, kind) = ts[r.below(ts.len())].clone();
        let original = std::fs::read(&path).unwrap();
        let mut m = original.clone();
        if kind == Kind::Header {
            mutate_header(&mut r, &mut m)
        } else {
            mutate_bytes(&mut r, &mut m)
        }
        std::fs::write(&path, &m).unwrap();
        let id = b.file_name().unwrap().to_str().unwrap().to_string();
        let args: Vec<&str> = match i % 4 {
            0 => vec!["verify", &id],
            1 => vec!["verify", "--deep", &id],
            2 => vec!["inspect", &id],
            _ => vec!["verify", "--all"],
        };
        let out = common::tmpl().arg("--storage").arg(&root).arg("--json").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let Some(code) = out.status.code() else { panic!("case {i} {args:?}: killed by a signal; {stderr}") };
        assert!(matches!(code, 0 | 1 | 3), "case {i} {args:?}: exit {code}; {stderr}");
        assert!(!stderr.contains("panicked at"), "case {i} {args:?}: {stderr}");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("case {i} {args:?}: not one JSON document ({e}); {stderr}"));
        assert!(v["ok"].is_boolean(), "case {i} {args:?}: {v}");
        assert_eq!(v["ok"], code == 0, "case {i} {args:?}: {v}");
        if let Some(list) = v["builds"].as_array() {
            for b in list {
                let ids: Vec<&str> =
                    b["findings"].as_array().unwrap().iter().filter_map(|f| f["id"].as_str()).collect();
                assert!(!ids.contains(&"build.check-failed"), "case {i} {args:?}: {b:#}");
            }
        }
        std::fs::write(&path, &original).unwrap();
    }
}
