//! Write an image into storage the way E2B does since 2025: as a compacted layer. Zero blocks
//! become nil mappings, blocks identical to the parent's map onto the parent's bytes, and only
//! the remaining blocks are stored in this build's data file, described by a V3 header.
//!
//! Used by `--fork` (a self-contained new build), the demo and the layered test fixtures.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::build::Artifact;
use crate::device::{Device, ReadAt};
use crate::error::{Error, Result};
use crate::header::{self, Header, Mapping};
use crate::progress::Progress;
use crate::storage::BuildId;

/// The layer this build sits on.
pub struct Parent<'a> {
    pub header: &'a Header,
    pub device: &'a Device,
}

/// Result of writing a layer.
#[derive(Debug, Clone)]
pub struct Written {
    pub header: Header,
    /// Bytes stored in this build's data file.
    pub own_bytes: u64,
}

fn mapping_at(h: &Header, off: u64) -> Option<&Mapping> {
    let i = h.mappings.partition_point(|m| m.end() <= off);
    h.mappings.get(i).filter(|m| m.offset <= off)
}

/// Read `image` (any `ReadAt`) block by block and write `<dir>/<artifact data>` plus
/// `<dir>/<artifact header>` for build `id`. `dir` must exist. Block size 4096.
pub fn write_layer(
    image: &dyn ReadAt,
    dir: &Path,
    id: BuildId,
    artifact: Artifact,
    parent: Option<Parent>,
    generation: u64,
    progress: &dyn Progress,
) -> Result<Written> {
    const BS: u64 = header::PAGE;
    let size = image.size();
    let data_path = dir.join(artifact.data_name());
    let mut data = File::create(&data_path).map_err(|e| Error::write(&data_path, e))?;
    let mut maps: Vec<Mapping> = Vec::new();
    let mut own = 0u64;
    let mut buf = vec![0u8; BS as usize];
    let mut pbuf = vec![0u8; BS as usize];
    let push = |maps: &mut Vec<Mapping>, m: Mapping| {
        if let Some(last) = maps.last_mut()
            && last.build == m.build
            && last.end() == m.offset
            && (m.build.is_nil() || last.storage_end() == m.storage_offset)
        {
            last.length += m.length;
            return;
        }
        maps.push(m);
    };
    progress.start("writing layer", size);
    let mut off = 0u64;
    while off < size {
        let n = BS.min(size - off) as usize;
        buf[n..].fill(0);
        image.read_exact_at(&mut buf[..n], off).map_err(|e| Error::invalid(dir, e.to_string()))?;
        let m = if buf.iter().all(|&b| b == 0) {
            Mapping { offset: off, length: BS, build: BuildId::nil(), storage_offset: 0 }
        } else {
            let same_as_parent = match &parent {
                Some(p) if off + n as u64 <= p.device.size() => {
                    p.device.read_exact_at(&mut pbuf[..n], off).map_err(|e| Error::invalid(dir, e.to_string()))?;
                    pbuf[..n] == buf[..n]
                }
                _ => false,
            };
            match (same_as_parent, parent.as_ref().and_then(|p| mapping_at(p.header, off))) {
                (true, Some(pm)) if !pm.is_nil() => Mapping {
                    offset: off,
                    length: BS,
                    build: pm.build,
                    storage_offset: pm.storage_offset + (off - pm.offset),
                },
                _ => {
                    data.write_all(&buf).map_err(|e| Error::write(&data_path, e))?;
                    let m = Mapping { offset: off, length: BS, build: id, storage_offset: own };
                    own += BS;
                    m
                }
            }
        };
        push(&mut maps, m);
        off += BS;
        progress.inc(n as u64);
    }
    progress.finish();
    data.sync_all().map_err(|e| Error::write(&data_path, e))?;
    let base = parent.as_ref().map_or(id, |p| p.header.base_build_id);
    let header = Header {
        version: 3,
        block_size: BS,
        size,
        generation,
        build_id: id,
        base_build_id: base,
        mappings: maps,
        synthesized: false,
        flags: 0,
        builds: Vec::new(),
    };
    if own == 0 {
        // E2B stores no data file when a layer owns nothing.
        std::fs::remove_file(&data_path).map_err(|e| Error::write(&data_path, e))?;
    }
    let hpath = dir.join(artifact.header_name());
    write_atomic(&hpath, &header::encode(&header))?;
    Ok(Written { header, own_bytes: own })
}

/// Write a file by writing a temporary sibling and renaming it into place (and truncating: E2B's
/// Local provider does not truncate when it rewrites).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::write(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::write(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::write(path, e))?;
    tmp.persist(path).map_err(|e| Error::write(path, e.error))?;
    Ok(())
}

/// A sparse file of `len` bytes with `pages` pattern pages written at spread offsets (a
/// stand-in memfile whose length is what matters).
pub fn sparse_file(path: &Path, len: u64, pages: u64) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::write(path, e))?;
    f.set_len(len).map_err(|e| Error::write(path, e))?;
    let page = [0x5Au8; 4096];
    for i in 0..pages {
        let off = (len / pages.max(1)) * i / 4096 * 4096;
        if off + 4096 <= len {
            f.write_all_at(&page, off).map_err(|e| Error::write(path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    #[test]
    fn base_then_child_layer_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let (bid, cid) = (BuildId::from_bytes([0xB; 16]), BuildId::from_bytes([0xC; 16]));
        let (bdir, cdir) = (dir.path().join(bid.to_string()), dir.path().join(cid.to_string()));
        std::fs::create_dir_all(&bdir).unwrap();
        std::fs::create_dir_all(&cdir).unwrap();
        let mut img: Vec<u8> = (0..64 * 1024u32).map(|i| (i / 4096) as u8).collect(); // block 0 is zero
        img[20 * 1024..24 * 1024].fill(0);
        let base = write_layer(&img, &bdir, bid, Artifact::Rootfs, None, 0, &NoProgress).unwrap();
        assert!(base.header.mappings.iter().any(|m| m.is_nil()));
        assert_eq!(base.own_bytes, 64 * 1024 - 2 * 4096);
        assert!(header::validate(&base.header).is_empty());
        let bdev = Device::from_header(&base.header, |x| dir.path().join(x.to_string()).join("rootfs.ext4")).unwrap();
        let mut edited = img.clone();
        edited[40 * 1024] ^= 0xFF; // change one block
        let child = write_layer(
            &edited,
            &cdir,
            cid,
            Artifact::Rootfs,
            Some(Parent { header: &base.header, device: &bdev }),
            1,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(child.own_bytes, 4096);
        assert_eq!(child.header.base_build_id, bid);
        assert!(header::validate(&child.header).is_empty());
        let cdev = Device::from_header(&child.header, |x| dir.path().join(x.to_string()).join("rootfs.ext4")).unwrap();
        let mut back = vec![0u8; edited.len()];
        cdev.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, edited);
        // The stored header parses back to the same mappings.
        let stored = header::parse(&std::fs::read(cdir.join("rootfs.ext4.header")).unwrap()).unwrap();
        assert_eq!(stored, child.header);
    }
}
