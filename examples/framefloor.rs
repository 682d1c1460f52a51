//! Benchmark helper: the fewest compressed bytes any reader must fetch to follow a path in a
//! rootfs stored as a compressed layer. A zstd or LZ4 frame decodes only from its start, so a
//! read that needs byte N of a frame needs every compressed byte up to the block holding N. This
//! follows PATH through the layer in STORAGE_DIR with tmpl's rootfs reader, takes the frames the
//! reads touched and how far into each they reached, and decodes each frame's start with input
//! fed 256 bytes at a time, counting the compressed bytes consumed when the needed bytes are out.
//!
//! Usage: cargo run --release --example framefloor -- STORAGE_DIR BUILD_ID PATH
//! Prints one line: `frames=N whole=BYTES floor=BYTES` (whole: the touched frames' full
//! compressed sizes; floor: the compressed prefixes the reads need, within 256 bytes).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use tmpl::build::Build;
use tmpl::compress::Compression;
use tmpl::rootfs::{Rootfs, boot};
use tmpl::storage::BuildLocation;
use tmpl::vocab::BuildId;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

const STEP: usize = 256;

/// Compressed bytes of `frame` consumed before `needed` bytes are decoded.
fn zstd_prefix(frame: &[u8], needed: usize) -> io::Result<usize> {
    let mut d = Decoder::new()?;
    let mut out = vec![0u8; needed.max(1)];
    let (mut pos, mut produced) = (0usize, 0usize);
    while produced < needed {
        if pos >= frame.len() {
            return Err(io::Error::other(format!("the frame ends after {produced} of {needed} bytes")));
        }
        let end = (pos + STEP).min(frame.len());
        let mut input = InBuffer::around(&frame[pos..end]);
        let mut output = OutBuffer::around(&mut out[produced..]);
        d.run(&mut input, &mut output)?;
        pos += input.pos();
        produced += output.pos();
    }
    Ok(pos)
}

/// The same for an LZ4 frame: blocks are read whole, so count what the decoder pulled.
fn lz4_prefix(frame: &[u8], needed: usize) -> io::Result<usize> {
    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (self.0.len() - self.1).min(buf.len()).min(STEP);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let mut r = Counting(frame, 0);
    let mut produced = 0usize;
    // The sink stops the decoder once enough is out; any other end is a short or corrupt frame.
    let res = tmpl::compress::lz4_decode_frame(&mut r, u64::MAX, &mut |b| {
        produced += b.len();
        if produced >= needed { Err(io::Error::other("enough")) } else { Ok(()) }
    });
    if produced >= needed {
        return Ok(r.1);
    }
    Err(io::Error::other(match res {
        Err(e) => format!("the frame does not decode: {e}"),
        Ok(_) => format!("the frame ends after {produced} of {needed} bytes"),
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: framefloor STORAGE_DIR BUILD_ID PATH";
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().ok_or(USAGE)?);
    let id = BuildId::parse(&args.next().ok_or(USAGE)?)?;
    let path = args.next().ok_or(USAGE)?;
    let loc = BuildLocation { dir: root.join(id.to_string()), folder_id: Some(id), storage_root: root };
    let build = Build::open(&loc)?;
    let fs = Rootfs::of_build(&build)?;
    let resolution = boot::resolve(&fs, &path);
    if resolution.found().is_none() {
        return Err(format!("{path} does not resolve: {}", resolution.describe()).into());
    }
    let used = fs.device().frames_used();
    let (mut whole, mut floor) = (0u64, 0u64);
    for u in &used {
        let mut bytes = vec![0u8; u.frame.size_c as usize];
        File::open(&u.path)?.read_exact_at(&mut bytes, u.frame.start_c)?;
        let n = match u.compression {
            Compression::Zstd => zstd_prefix(&bytes, u.needed)?,
            Compression::Lz4 => lz4_prefix(&bytes, u.needed)?,
            Compression::None => u.needed,
        };
        whole += u64::from(u.frame.size_c);
        floor += n as u64;
    }
    println!("frames={} whole={whole} floor={floor}", used.len());
    Ok(())
}
