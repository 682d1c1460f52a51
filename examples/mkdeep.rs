//! Benchmark input for `verify --deep`: two builds with V4 headers (SHA-256 recorded) whose
//! rootfs and memfile each hold SIZE_MIB of half-compressible data (no zero blocks): one stored
//! uncompressed (`rootfs.ext4`, `memfile`), one in 2 MiB zstd frames (`rootfs.ext4.zstd`,
//! `memfile.zstd`, with size sidecars). The images are generated and written in 1 MiB pieces.
//!
//! Usage: cargo run --release --example mkdeep -- DIR SIZE_MIB
//! Prints the two build IDs (plain, zstd).
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

use std::io::Write;
use std::path::PathBuf;

use tmpl::compress::Compression;
use tmpl::demo::StorageWriter;
use tmpl::fixtures::layer::LayerFormat;
use tmpl::vocab::Artifact;
use tmpl::vocab::BuildId;

pub const PLAIN: &str = "d2000000-0000-4000-8000-000000000001";
pub const ZSTD: &str = "d2000000-0000-4000-8000-000000000002";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().ok_or("usage: mkdeep DIR SIZE_MIB")?);
    let mib: u64 = args.next().ok_or("usage: mkdeep DIR SIZE_MIB")?.parse()?;
    let w = StorageWriter::new(&root)?;
    let scratch = tempfile::tempdir_in(&root)?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for (n, artifact) in Artifact::ALL.into_iter().enumerate() {
        // Each 4 KiB block: 2 KiB of xorshift noise, then 2 KiB of a repeating pattern.
        let img = scratch.path().join(format!("img{n}"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&img)?);
        let mut block = vec![0u8; 4096];
        for i in 0..(mib << 20) / 4096 {
            for chunk in block[..2048].chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_le_bytes());
            }
            for (j, b) in block[2048..].iter_mut().enumerate() {
                *b = (j as u64 % 61 + i % 7) as u8 | 1;
            }
            f.write_all(&block)?;
        }
        f.flush()?;
        drop(f);
        for (id, format) in
            [(PLAIN, LayerFormat::framed(4, Compression::None)), (ZSTD, LayerFormat::framed(4, Compression::Zstd))]
        {
            w.layer_as(&BuildId::parse(id)?, artifact, &img, None, 0, &format)?;
        }
        std::fs::remove_file(&img)?;
    }
    println!("{PLAIN} {ZSTD}");
    Ok(())
}
