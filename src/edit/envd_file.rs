//! The envd binary an operator wants to install, checked on the host before anything is written:
//! a regular, non-empty ELF executable of sane size, its SHA-256, and its era and version read
//! from the bytes (never run). Checks against the build (architecture, loader present in the
//! image) are made by the planner, which knows the image.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::elf::{self, ElfInfo};
use crate::envd::{BinaryFacts, MarkerScan};
use crate::error::{Error, Result};

/// Larger than any envd ever built (10–30 MB); a guard against installing the wrong file.
pub const MAX_ENVD_BYTES: u64 = 512 * 1024 * 1024;

/// Facts of the envd file on the host.
#[derive(Clone, Debug, Serialize)]
pub struct HostEnvd {
    pub path: PathBuf,
    pub len: u64,
    pub sha256: String,
    pub elf: ElfInfo,
    pub binary: BinaryFacts,
}

/// Read and check the envd file: regular, non-empty, under [`MAX_ENVD_BYTES`], an ELF executable
/// (or PIE). Streams the file once for SHA-256 and the era scan.
pub fn inspect(path: &Path) -> Result<HostEnvd> {
    let meta = std::fs::metadata(path).map_err(|e| Error::read(path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(path, "--envd must be a regular file"));
    }
    if meta.len() == 0 {
        return Err(Error::invalid(path, "the envd file is empty"));
    }
    if meta.len() > MAX_ENVD_BYTES {
        return Err(Error::invalid(path, format!("{} bytes is too large for envd", meta.len())));
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::read(path, e))?;
    let mut head = Vec::with_capacity(elf::HEAD_BYTES);
    (&mut f).take(elf::HEAD_BYTES as u64).read_to_end(&mut head).map_err(|e| Error::read(path, e))?;
    let info = elf::parse(&head).map_err(|e| Error::invalid(path, format!("not an envd binary: {e}")))?;
    if !info.is_executable_type() {
        return Err(Error::invalid(
            path,
            format!("ELF type {} is not an executable (a library or object file?)", info.elf_type),
        ));
    }
    // A cut copy (an interrupted download) parses as ELF but crashes when run.
    if let Some(why) = info.truncated(meta.len()) {
        return Err(Error::invalid(path, format!("not a whole envd binary: {why}")));
    }
    let mut hasher = Sha256::new();
    let mut scan = MarkerScan::default();
    hasher.update(&head);
    scan.feed(&head);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::read(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        scan.feed(&buf[..n]);
    }
    let binary = scan.finish();
    if info.go && binary.go.is_none() {
        return Err(Error::invalid(
            path,
            "not a whole envd binary: it is a Go program but its Go build information is missing or cut short",
        ));
    }
    Ok(HostEnvd {
        path: path.to_path_buf(),
        len: meta.len(),
        sha256: crate::rootfs::hex(&hasher.finalize()),
        elf: info,
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_envd() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, b: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, b).unwrap();
            p
        };
        let msg = |p: PathBuf| inspect(&p).unwrap_err().to_string();
        assert!(msg(w("empty", b"")).contains("empty"));
        assert!(msg(w("text", b"#!/bin/sh\necho envd\n")).contains("a script"));
        assert!(msg(w("html", b"<html>404</html>")).contains("not an envd binary"));
        let mut so = elf::synthetic(62, None);
        so[16] = 1; // ET_REL
        assert!(msg(w("obj", &so)).contains("not an executable"));
        assert!(msg(dir.path().to_path_buf()).contains("regular file"));
        let ok = inspect(&w("envd", &[elf::synthetic(62, None), b"\0envd\0isnotfc\0".to_vec()].concat())).unwrap();
        assert_eq!(ok.elf.machine, 62);
        assert_eq!(ok.sha256.len(), 64);
        assert!(ok.binary.looks_like_envd);
        // Cut short: the loadable segment runs past the end of the file.
        let mut cut = elf::synthetic(62, None);
        cut[64 + 32..64 + 40].copy_from_slice(&100_000u64.to_le_bytes());
        assert!(msg(w("cut", &cut)).contains("cut short"));
        // A Go binary whose build information is gone (cut before .go.buildinfo).
        let go = [elf::synthetic_go(62), b"\0envd\0isnotfc\0".to_vec()].concat();
        assert!(msg(w("go-cut", &go)).contains("Go build information"));
        let bi = elf::synthetic_go_buildinfo("go1.24.1", "path\tgithub.com/e2b-dev/infra/packages/envd\n");
        let whole = inspect(&w("go", &[go, bi].concat())).unwrap();
        assert_eq!(whole.binary.go.unwrap().go_version, "go1.24.1");
    }
}
