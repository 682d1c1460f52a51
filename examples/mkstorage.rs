//! Benchmark input: a storage of N builds shaped like a real one — one base build (a compacted
//! layer of a real ext4 image) and N-1 children layered on it, each with a sparse memfile of
//! MEM_MIB (default 512), a memfile header, a snapfile and metadata.
//!
//! Usage: cargo run --release --example mkstorage -- DIR N [MEM_MIB]

use std::path::PathBuf;

use tmpl::demo::{self, StorageWriter};
use tmpl::vocab::BuildId;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().ok_or("usage: mkstorage DIR N [MEM_MIB]")?);
    let n: usize = args.next().ok_or("usage: mkstorage DIR N [MEM_MIB]")?.parse()?;
    let mem: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let w = StorageWriter::new(&root)?;
    let scratch = tempfile::tempdir()?;
    let tree = scratch.path().join("tree");
    let base = BuildId::new_random();
    demo::rootfs_tree(&tree, &base.to_string(), &[])?;
    let img = scratch.path().join("base.ext4");
    demo::make_image(&tree, &img, 64 << 20)?;
    // The base: a compacted layer of a real ext4 image with a memory snapshot.
    w.rootfs_layer(&base, &img, None, 0)?;
    let snapshot = |id: &BuildId| -> tmpl::Result<()> {
        w.memfile(id, mem, true)?;
        w.snapfile(id, "8.0.0", mem)?;
        w.metadata(id, demo::FC_VERSION, false)
    };
    snapshot(&base)?;
    // Children: a rootfs header mapping every block onto the base (what a pause of an unchanged
    // filesystem produces), and their own memory snapshot.
    let base_header = tmpl::header::parse(&std::fs::read(root.join(base.to_string()).join("rootfs.ext4.header"))?)?;
    for _ in 1..n {
        let id = BuildId::new_random();
        let mut h = base_header.clone();
        h.build_id = id;
        h.generation = 1;
        w.write(&id, "rootfs.ext4.header", &tmpl::header::encode(&h))?;
        snapshot(&id)?;
    }
    println!("{n} builds in {}", root.display());
    Ok(())
}
