//! Snapfiles written by Firecracker itself (`tests/fixtures/firecracker/`, see its README) read by
//! tmpl: encoding, version, CRC, `mem_size_mib`, a memfile of the wrong size, padding, truncation,
//! a flipped byte and version mismatches, for every release shipped; and what `inspect` shows.
//! In-process (Build::open + checks) except the `inspect` test, which runs the binary.

mod common;

use std::path::{Path, PathBuf};

use tmpl::build::Build;
use tmpl::fixtures::snapfile as state;
use tmpl::report::{Finding, Severity};
use tmpl::snapshot::{self, Arch, Encoding};
use tmpl::storage::BuildLocation;
use tmpl::vocab::BuildId;
use tmpl::vocab::files::SNAPFILE;

const ID: &str = "5e000000-0000-4000-8000-000000000001";

/// One shipped file and the facts its README records.
struct Fixture {
    file: &'static str,
    release: &'static str,
    encoding: Encoding,
    version: &'static str,
    len: u64,
    crc: u64,
    /// The number Firecracker's own load path printed ("CRC64 validation failed: N") for this
    /// file with byte len/2 XOR 0x40; v1.14+ print no number.
    flipped_crc: Option<u64>,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        file: "v1.10.1-mem512.snapfile",
        release: "v1.10.1_1fcdaec",
        encoding: Encoding::Bincode,
        version: "4.0.0",
        len: 1861,
        crc: 758452473649304109,
        flipped_crc: Some(11774934199125458696),
    },
    Fixture {
        file: "v1.12.1-mem512.snapfile",
        release: "v1.12.1_210cbac",
        encoding: Encoding::Bincode,
        version: "6.0.0",
        len: 1861,
        crc: 138223769361532750,
        flipped_crc: Some(12107216266756221547),
    },
    Fixture {
        file: "v1.14.1-mem512.snapfile",
        release: "v1.14.1_431f1fc",
        encoding: Encoding::Bincode,
        version: "8.0.0",
        len: 2253,
        crc: 9830425234324955015,
        flipped_crc: None,
    },
    Fixture {
        file: "v1.16.1-mem512.snapfile",
        release: "v1.16.1",
        encoding: Encoding::Bitcode,
        version: "10.0.0",
        len: 489,
        crc: 11693341571528759848,
        flipped_crc: None,
    },
];

fn bytes(f: &Fixture) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firecracker").join(f.file)).unwrap()
}

/// A storage with one build: `snapfile`, a headerless sparse `memfile` of `mem_mib` (none when
/// 0) and metadata naming `release`.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new(snap: &[u8], mem_mib: u64, release: &str) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join(ID);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join(SNAPFILE), snap).unwrap();
        if mem_mib > 0 {
            tmpl::fixtures::layer::sparse_file(&b.join("memfile"), mem_mib << 20, 4).unwrap();
        }
        std::fs::write(b.join("metadata.json"), tmpl::metadata::render_v2(ID, "vmlinux-6.1.158", release, false))
            .unwrap();
        Store { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(ID)
    }

    fn build(&self) -> Build {
        Build::open(&BuildLocation {
            dir: self.path(),
            folder_id: Some(BuildId::parse(ID).unwrap()),
            storage_root: self.dir.path().to_path_buf(),
        })
        .unwrap()
    }

    /// snapfile.* and memfile.* findings.
    fn findings(&self) -> Vec<Finding> {
        let b = self.build();
        let mut f = tmpl::checks::snapfile::check(&b);
        f.extend(tmpl::checks::memfile::check(&b));
        f
    }
}

fn ids(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|x| x.id.as_str()).collect()
}

fn has<'a>(f: &'a [Finding], id: &str, sev: Severity) -> &'a Finding {
    let x = f.iter().find(|x| x.id == id).unwrap_or_else(|| panic!("no {id} in {:#?}", ids(f)));
    assert_eq!(x.severity, sev, "{id}: {}", x.message);
    x
}

fn no_errors_or_warnings(f: &[Finding]) {
    let bad: Vec<&Finding> = f.iter().filter(|x| x.severity != Severity::Info).collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn fixtures_decode_as_firecracker_wrote_them() {
    for f in FIXTURES {
        let b = bytes(f);
        let i = snapshot::analyze_bytes(&b);
        assert_eq!((i.arch, i.encoding, i.version.as_deref()), (Some(Arch::X86_64), Some(f.encoding), Some(f.version)));
        assert!(i.crc_ok && i.header_error.is_none() && i.state_error.is_none(), "{}: {i:?}", f.file);
        assert_eq!(i.mem_size_mib, Some(512), "{}", f.file);
        assert_eq!(i.kernel_image_path.as_deref(), Some(""), "{}", f.file);
        assert_eq!(i.regions, Some(vec![]), "a default state has no memory regions ({})", f.file);
        assert_eq!(i.len, f.len, "{}", f.file);
        assert_eq!(i.stored_crc, f.crc, "{}: the README's CRC", f.file);
        assert_eq!(i.computed_crc, i.stored_crc);
    }
}

#[test]
fn memory_checks_use_mem_size_mib_of_every_encoding() {
    for f in FIXTURES {
        let b = bytes(f);
        // Right size: no memfile finding; the default state's empty region list is reported.
        let s = Store::new(&b, 512, f.release);
        let found = s.findings();
        assert!(!ids(&found).iter().any(|i| i.starts_with("memfile.")), "{}: {:#?}", f.file, found);
        assert!(has(&found, "snapfile.memory-regions", Severity::Error).message.contains("No memory region defined"));
        // Shorter: an error naming mem_size_mib.
        let s = Store::new(&b, 256, f.release);
        let found = s.findings();
        let m = &has(&found, "memfile.size-mismatch", Severity::Error).message;
        assert!(m.contains("mem_size_mib 512") && m.contains("268435456 bytes"), "{}: {m}", f.file);
        // Larger: a warning, the extra bytes counted.
        let s = Store::new(&b, 1024, f.release);
        let found = s.findings();
        let m = &has(&found, "memfile.larger-than-vm", Severity::Warning).message;
        assert!(m.contains("536870912 bytes are never read"), "{}: {m}", f.file);
        assert!(!ids(&found).contains(&"memfile.size-mismatch"));
    }
}

#[test]
fn complete_states_of_other_sizes_are_clean() {
    for r in state::RELEASES {
        let f = FIXTURES.iter().find(|f| f.version == r.version).unwrap();
        let snap = state::snapfile(r, &state::Vm::new(64));
        let s = Store::new(&snap, 64, f.release);
        no_errors_or_warnings(&s.findings());
        let i = snapshot::analyze_file(&s.path().join(SNAPFILE)).unwrap();
        assert_eq!(i.mem_size_mib, Some(64));
        assert_eq!(i.regions.as_ref().map(|r| (r.len(), r[0].size)), Some((1, 64 << 20)), "{}", r.name);
        // The memfile of another size is caught for this state too.
        let s = Store::new(&snap, 512, f.release);
        has(&s.findings(), "memfile.larger-than-vm", Severity::Warning);
    }
}

#[test]
fn padding_is_a_warning_for_bincode_and_an_error_for_bitcode() {
    for f in FIXTURES {
        let mut b = bytes(f);
        let len = b.len();
        b.extend(std::iter::repeat_n(0u8, 4096));
        let s = Store::new(&b, 512, f.release);
        let found = s.findings();
        has(&found, "snapfile.crc-zero", Severity::Warning);
        let i = snapshot::analyze_bytes(&b);
        assert_eq!(i.valid_prefix_len, Some(len as u64), "{}", f.file);
        if f.encoding == Encoding::Bitcode {
            let m = &has(&found, "snapfile.trailing-bytes", Severity::Error).message;
            assert!(m.contains(&format!("truncate -s {len} snapfile")), "{m}");
            assert!(!ids(&found).contains(&"snapfile.trailing-zeros"));
        } else {
            let m = &has(&found, "snapfile.trailing-zeros", Severity::Warning).message;
            assert!(m.contains(&format!("truncate -s {len} snapfile")), "{m}");
            assert!(!ids(&found).contains(&"snapfile.trailing-bytes"));
        }
    }
}

#[test]
fn truncation_and_a_flipped_byte_fail_the_crc_with_firecrackers_number() {
    for f in FIXTURES {
        let b = bytes(f);
        let s = Store::new(&b[..b.len() - 100], 512, f.release);
        has(&s.findings(), "snapfile.crc-mismatch", Severity::Error);
        let mut flipped = b.clone();
        flipped[b.len() / 2] ^= 0x40;
        let s = Store::new(&flipped, 512, f.release);
        let found = s.findings();
        let m = &has(&found, "snapfile.crc-mismatch", Severity::Error).message;
        let i = snapshot::analyze_bytes(&flipped);
        assert!(!i.crc_ok);
        if let Some(n) = f.flipped_crc {
            assert_eq!(i.computed_crc, n, "{}: the number Firecracker printed", f.file);
            assert!(m.contains(&format!("CRC64 validation failed: {n}")), "{m}");
        }
        if f.encoding == Encoding::Bitcode {
            assert!(m.contains("no number"), "{m}");
        }
    }
}

#[test]
fn versions_match_exactly_the_release_that_wrote_them() {
    for f in FIXTURES {
        let b = bytes(f);
        for other in FIXTURES {
            let s = Store::new(&b, 512, other.release);
            let mismatch = ids(&s.findings()).contains(&"snapfile.version-mismatch");
            // E2B's v1.14 build also loads 4.0.0 and 6.0.0 snapshots.
            let e2b_v114_loads = other.release == "v1.14.1_431f1fc" && matches!(f.version, "4.0.0" | "6.0.0");
            assert_eq!(mismatch, f.version != other.version && !e2b_v114_loads, "{} under {}", f.file, other.release);
        }
    }
}

#[test]
fn inspect_shows_mem_size_mib_for_both_releases() {
    for f in FIXTURES {
        let s = Store::new(&bytes(f), 512, f.release);
        let out = common::tmpl().arg("inspect").arg(s.path()).arg("--json").output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
        assert_eq!(v["snapfile"]["mem_size_mib"], 512, "{}: {v}", f.file);
        assert_eq!(v["snapfile"]["version"], f.version);
        let out = common::tmpl().arg("inspect").arg(s.path()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("mem_size_mib 512"), "{}: {text}", f.file);
        assert!(text.contains("regions    none"), "{}: {text}", f.file);
    }
}
