//! Benchmark input for issue 12's memory bound: COUNT builds whose memfile header is a V4 header
//! with an inner block of INNER_MIB (contiguous 4 KiB mappings, as many as fit: 256 MiB is E2B's
//! cap and about 6.7 million mappings), each with a sparse memfile of the size the header maps.
//! The header is written once and hard-linked into every build folder (the bytes are the same;
//! every build parses its own copy), so a hundred builds cost one header on disk.
//!
//! Usage: cargo run --release --example mkheavy -- DIR COUNT INNER_MIB
//!        cargo run --release --example mkheavy -- --checksum BUILD_DIR
//! The second form writes BUILD_DIR/memfile.header: a V4 header mapping the whole memfile to
//! the build and recording its SHA-256 (for `verify --deep` on a sparse memfile with a digest).

use std::path::PathBuf;

use tmpl::header::{self, BuildInfo, FrameTable, Header, Mapping};
use tmpl::vocab::BuildId;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: mkheavy DIR COUNT INNER_MIB | mkheavy --checksum BUILD_DIR";
    let mut args = std::env::args().skip(1);
    let first = args.next().ok_or(usage)?;
    if first == "--checksum" {
        return checksum_header(&PathBuf::from(args.next().ok_or(usage)?));
    }
    let root = PathBuf::from(first);
    let count: usize = args.next().ok_or(usage)?.parse()?;
    let inner_mib: u64 = args.next().ok_or(usage)?.parse()?;
    // The inner block: builds count (4) + one entry (64) + mappings count (4) + 40 per mapping.
    let n = ((inner_mib << 20) - 72) / 40;
    let id = BuildId::parse("d3000000-0000-4000-8000-000000000000")?;
    let size = n * 4096;
    let h = Header {
        version: 4,
        block_size: 4096,
        size,
        generation: 1,
        build_id: id,
        base_build_id: id,
        mappings: (0..n)
            .map(|i| Mapping { offset: i * 4096, length: 4096, build: id, storage_offset: i * 4096 })
            .collect(),
        synthesized: false,
        flags: 0,
        builds: vec![BuildInfo {
            build: id,
            file_size: i64::try_from(size)?,
            checksum: [0; 32],
            frames: FrameTable::default(),
        }],
    };
    std::fs::create_dir_all(&root)?;
    let template = root.join(".heavy.header");
    std::fs::write(&template, header::try_encode(&h)?)?;
    drop(h);
    for i in 0..count {
        let dir = root.join(format!("d3000000-0000-4000-8000-{:012x}", i + 1));
        std::fs::create_dir_all(&dir)?;
        std::fs::hard_link(&template, dir.join("memfile.header"))?;
        std::fs::File::create(dir.join("memfile"))?.set_len(size)?;
    }
    println!("{n} mappings per header, {} bytes on disk", std::fs::metadata(&template)?.len());
    Ok(())
}

fn checksum_header(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use sha2::Digest;
    use std::io::Read;
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or("BUILD_DIR must end in a build ID")?;
    let id = BuildId::parse(name)?;
    let mut f = std::fs::File::open(dir.join("memfile"))?;
    let size = f.metadata()?.len();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
    }
    let h = Header {
        version: 4,
        block_size: 4096,
        size,
        generation: 1,
        build_id: id,
        base_build_id: id,
        mappings: vec![Mapping { offset: 0, length: size, build: id, storage_offset: 0 }],
        synthesized: false,
        flags: 0,
        builds: vec![BuildInfo {
            build: id,
            file_size: i64::try_from(size)?,
            checksum: sha.finalize().into(),
            frames: FrameTable::default(),
        }],
    };
    std::fs::write(dir.join("memfile.header"), header::try_encode(&h)?)?;
    Ok(())
}
