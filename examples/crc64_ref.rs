//! Benchmark reference: the CRC64 of a snapfile as Firecracker computes it, with the `crc64`
//! crate Firecracker depends on (`crc64(0, bytes 0..len-8)`), read in 64 KiB pieces like
//! Firecracker's CRC reader. Prints the computed and stored values.
//!
//! Usage: cargo run --release --example crc64_ref -- SNAPFILE
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: crc64_ref SNAPFILE")?;
    let mut f = std::fs::File::open(&path)?;
    let len = f.metadata()?.len();
    let body = len.checked_sub(8).ok_or("file shorter than 8 bytes")?;
    let mut crc = 0u64;
    let mut left = body;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n])?;
        crc = crc64::crc64(crc, &buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 8];
    f.read_exact(&mut trailer)?;
    println!("computed {crc} stored {}", u64::from_le_bytes(trailer));
    Ok(())
}
