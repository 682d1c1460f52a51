//! Memory of `verify --all` does not grow with the number of builds (issue 12, item 8): ten
//! builds with big V4 headers once held every parsed header until the end (977 MB for ten,
//! 2.9 GiB with `--deep`). Measured in-process by a counting allocator, so the number is the
//! heap tmpl itself uses, exactly, whatever else runs on the machine. One test in this binary:
//! nothing else allocates while it measures.
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "test and fixture data of known, small sizes"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tmpl::header::{self, BuildInfo, FrameTable, Header, Mapping};
use tmpl::storage::{BuildLocation, Storage};
use tmpl::vocab::Artifact;
use tmpl::vocab::BuildId;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are updated.
#[expect(unsafe_code, reason = "a counting allocator forwards to the system one")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Mappings per header: 200,000 × 40 bytes, an 8 MB inner block (LZ4 makes it small on disk).
const MAPPINGS: u64 = 200_000;

/// A V4 memfile header of `MAPPINGS` contiguous 4 KiB mappings onto `id`'s own data file.
fn heavy_header(id: BuildId) -> Vec<u8> {
    let h = Header {
        version: 4,
        block_size: 4096,
        size: MAPPINGS * 4096,
        generation: 1,
        build_id: id,
        base_build_id: id,
        mappings: (0..MAPPINGS)
            .map(|i| Mapping { offset: i * 4096, length: 4096, build: id, storage_offset: i * 4096 })
            .collect(),
        synthesized: false,
        flags: 0,
        builds: vec![BuildInfo {
            build: id,
            file_size: (MAPPINGS * 4096) as i64,
            checksum: [0; 32],
            frames: FrameTable::default(),
        }],
    };
    header::try_encode(&h).unwrap()
}

fn storage_of(root: &Path, n: usize, bytes: &[u8]) -> (Storage, Vec<BuildLocation>) {
    let mut locs = Vec::new();
    for i in 0..n {
        let id = BuildId::parse(&format!("{:08x}-0000-4000-8000-000000000001", i + 1)).unwrap();
        let dir = root.join(id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(Artifact::Memfile.header_name()), bytes).unwrap();
        // A small sparse data file, so --deep has a file to stream per build.
        let f = std::fs::File::create(dir.join("memfile")).unwrap();
        f.set_len(MAPPINGS * 4096).unwrap();
        locs.push(BuildLocation { dir, folder_id: Some(id), storage_root: root.to_path_buf() });
    }
    (Storage::resolve(Some(root), &|_| None).unwrap(), locs)
}

/// Peak heap during `verify --all` (and with `--deep`) of `n` builds, above what was in use
/// before.
fn peak(root: &Path, n: usize, bytes: &[u8], deep: bool) -> usize {
    let (storage, locs) = storage_of(&root.join(format!("s{n}")), n, bytes);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let progress = tmpl::progress::NoProgress;
    let report = tmpl::commands::verify::verify_all_with(
        &storage,
        &locs,
        false,
        None,
        deep.then_some(&progress as &dyn tmpl::progress::Progress),
    )
    .unwrap();
    assert_eq!(report.builds.len(), n);
    let p = PEAK.load(Ordering::Relaxed) - base;
    drop(report);
    p
}

#[test]
fn verify_all_memory_does_not_grow_with_the_number_of_builds() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = heavy_header(BuildId::nil());
    for deep in [false, true] {
        let two = peak(dir.path(), 2, &bytes, deep);
        let ten = peak(dir.path(), 10, &bytes, deep);
        let parsed = (MAPPINGS * 48) as usize;
        eprintln!("deep={deep}: peak heap 2 builds {} MB, 10 builds {} MB", two >> 20, ten >> 20);
        // Keeping the 8 extra builds' parsed headers would add at least 8 × 8 MB.
        assert!(ten < two + 2 * parsed, "deep={deep}: {ten} bytes for 10 builds vs {two} for 2");
    }
}
