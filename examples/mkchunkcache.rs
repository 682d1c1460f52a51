//! Benchmark input: a shared-chunk-cache tree shaped like E2B's (`<build-id>/<object>/
//! %012d-4194304.bin` chunks plus `size.txt`), with small real chunks so that every file owns
//! blocks. The same arguments always give the same tree.
//!
//!   mkchunkcache DIR BUILDS CHUNKS_PER_OBJECT [CHUNK_BYTES]
//!
//! Two objects (memfile, rootfs.ext4) per build: BUILDS × 2 × CHUNKS_PER_OBJECT chunk files.
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: mkchunkcache DIR BUILDS CHUNKS_PER_OBJECT [CHUNK_BYTES]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let builds: u32 = args[2].parse().expect("BUILDS");
    let chunks: u32 = args[3].parse().expect("CHUNKS_PER_OBJECT");
    let bytes: usize = args.get(4).map(|s| s.parse().expect("CHUNK_BYTES")).unwrap_or(4096);
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    for b in 0..builds {
        let id = format!("c0000000-0000-4000-8000-{:012x}", b + 1);
        for obj in ["memfile", "rootfs.ext4"] {
            let d = dir.join(&id).join(obj);
            std::fs::create_dir_all(&d).expect("mkdir");
            for c in 0..chunks {
                let mut f = std::fs::File::create(d.join(format!("{c:012}-4194304.bin"))).expect("create");
                f.write_all(&data).expect("write");
            }
            std::fs::write(d.join("size.txt"), format!("{}", u64::from(chunks) * 4194304)).expect("size.txt");
        }
    }
}
