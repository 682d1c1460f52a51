//! Benchmark input: an envd-like ELF binary of about SIZE_MIB MiB laid out like a Go build of
//! envd (code, read-only data with the current flag names, Go's tables, `.go.buildinfo`, data,
//! with a section header table); see `tmpl::fixtures::envd_elf`.
//!
//! Usage: cargo run --release --example mkenvd -- FILE SIZE_MIB

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: mkenvd FILE SIZE_MIB")?;
    let mib: usize = args.next().ok_or("usage: mkenvd FILE SIZE_MIB")?.parse()?;
    let flags = ["port", "version", "commit", "isnotfc", "cgroup-root", "verbose", "no-cgroups", "resume-handover"];
    let bytes = tmpl::fixtures::envd_elf::envd_elf(mib << 20, &flags, None, Some("2026-09-01T00:00:00Z"));
    std::fs::write(&path, bytes)?;
    Ok(())
}
