//! Benchmark input: store an ext4 image as a filesystem-only build the way E2B stores rootfs
//! images since 2025, a compacted layer with a header (zero blocks nil, the rest in this build's
//! data file): V3 with a plain data file, or V4 with the data in independently compressed 2 MiB
//! frames (`rootfs.ext4.zstd` / `.lz4` with its size sidecar).
//!
//! Usage: cargo run --release --example mklayer -- IMAGE STORAGE_DIR BUILD_ID v3|v4-zstd|v4-lz4

use std::path::PathBuf;

use tmpl::compress::Compression;
use tmpl::demo::{self, StorageWriter};
use tmpl::fixtures::layer::LayerFormat;
use tmpl::vocab::{Artifact, BuildId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: mklayer IMAGE STORAGE_DIR BUILD_ID v3|v4-zstd|v4-lz4";
    let mut args = std::env::args().skip(1);
    let image = PathBuf::from(args.next().ok_or(USAGE)?);
    let root = PathBuf::from(args.next().ok_or(USAGE)?);
    let id = BuildId::parse(&args.next().ok_or(USAGE)?)?;
    let format = match args.next().ok_or(USAGE)?.as_str() {
        "v3" => LayerFormat::V3,
        "v4-zstd" => LayerFormat::framed(4, Compression::Zstd),
        "v4-lz4" => LayerFormat::framed(4, Compression::Lz4),
        other => return Err(format!("unknown layout {other}; {USAGE}").into()),
    };
    let w = StorageWriter::new(&root)?;
    let h = w.layer_as(&id, Artifact::Rootfs, &image, None, 0, &format)?;
    w.metadata(&id, demo::FC_VERSION, true)?;
    let owned: u64 = h.mappings.iter().filter(|m| m.build == id).map(|m| m.length).sum();
    println!("{id} {} mappings, {owned} bytes owned of {}", h.mappings.len(), h.size);
    Ok(())
}
