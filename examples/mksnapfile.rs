//! Benchmark input: a valid bincode-era x86_64 snapfile ("8.0.0") of about SIZE_MIB MiB, its
//! payload pseudo-random, its CRC trailer correct.
//!
//! Usage: cargo run --release --example mksnapfile -- FILE SIZE_MIB

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: mksnapfile FILE SIZE_MIB")?;
    let mib: usize = args.next().ok_or("usage: mksnapfile FILE SIZE_MIB")?.parse()?;
    let mut payload = tmpl::fixtures::snapfile::bincode_state_prefix("8.0.0", 512, "vmlinux.bin");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while payload.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    let bytes = tmpl::fixtures::snapfile::build_bincode(tmpl::snapshot::Arch::X86_64, "8.0.0", &payload);
    std::fs::File::create(&path)?.write_all(&bytes)?;
    Ok(())
}
