//! Write an image into storage the way E2B does since 2025: as a compacted layer. Zero blocks
//! become nil mappings, blocks identical to the parent's map onto the parent's bytes, and only
//! the remaining blocks are stored in this build's data file, described by a V3 header — or, as
//! E2B does since 2026-05, by a V4/V5 header with a builds section (size, SHA-256 and frame table
//! of each build it reads) and a data file of independently compressed frames
//! (`rootfs.ext4.zstd`, `memfile.lz4`) with the Local provider's `.uncompressed-size` sidecar.
//!
//! Used by `--fork` (a self-contained new build), the demo and the layered test fixtures.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::compress::{self, Compression};
use crate::device::{Device, ReadAt};
use crate::error::{Error, Result};
use crate::header::{self, BuildInfo, Frame, FrameTable, Header, Mapping};
use crate::progress::Progress;
use crate::vocab::Artifact;
use crate::vocab::BuildId;
use crate::vocab::files::SIDECAR_SUFFIX;

/// E2B's default frame size (`DefaultCompressFrameSize`, 2 MiB of uncompressed data).
pub const DEFAULT_FRAME_SIZE: u32 = 2 << 20;

/// How a layer is stored: header version, data compression and frame size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerFormat {
    /// 3 (no builds section), 4 or 5.
    pub version: u64,
    /// Compression of the data file (V4/V5 only).
    pub compression: Compression,
    pub frame_size: u32,
}

impl LayerFormat {
    /// The 2025 layout: V3 header, plain data file.
    pub const V3: LayerFormat =
        LayerFormat { version: 3, compression: Compression::None, frame_size: DEFAULT_FRAME_SIZE };

    /// A V4/V5 layout with `compression`.
    pub fn framed(version: u64, compression: Compression) -> LayerFormat {
        LayerFormat { version, compression, frame_size: DEFAULT_FRAME_SIZE }
    }
}

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
/// `<dir>/<artifact header>` for build `id` (V3 layout). `dir` must exist. Block size 4096.
pub fn write_layer(
    image: &dyn ReadAt,
    dir: &Path,
    id: BuildId,
    artifact: Artifact,
    parent: Option<Parent>,
    generation: u64,
    progress: &dyn Progress,
) -> Result<Written> {
    write_layer_as(image, dir, id, artifact, parent, generation, &LayerFormat::V3, progress)
}

/// [`write_layer`] in a chosen layout. For V4/V5 the header carries a builds section: this
/// build's size, SHA-256 and frame table, and the entries of the parent's header for every
/// ancestor still referenced (tables trimmed to the frames this layer reads, as E2B does).
#[expect(clippy::too_many_arguments, reason = "the layout knobs of a layer; a struct would be built once per call")]
pub fn write_layer_as(
    image: &dyn ReadAt,
    dir: &Path,
    id: BuildId,
    artifact: Artifact,
    parent: Option<Parent>,
    generation: u64,
    format: &LayerFormat,
    progress: &dyn Progress,
) -> Result<Written> {
    const BS: u64 = header::PAGE;
    let size = image.size();
    let data_path = dir.join(artifact.data_name());
    let mut data = File::create(&data_path).map_err(|e| Error::write(&data_path, e))?;
    let mut maps: Vec<Mapping> = Vec::new();
    let mut own = 0u64;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; crate::num::usize_from(BS)];
    let mut pbuf = vec![0u8; crate::num::usize_from(BS)];
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
        let n = crate::num::usize_from(BS.min(size - off));
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
                // The parent header is untrusted: a storage offset that overflows is not reused.
                (true, Some(pm)) if !pm.is_nil() && pm.storage_offset.checked_add(pm.length).is_some() => Mapping {
                    offset: off,
                    length: BS,
                    build: pm.build,
                    storage_offset: pm.storage_offset + (off - pm.offset),
                },
                _ => {
                    data.write_all(&buf).map_err(|e| Error::write(&data_path, e))?;
                    sha.update(&buf);
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
    let mut header = Header {
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
    drop(data);
    if own == 0 {
        // E2B stores no data file when a layer owns nothing.
        std::fs::remove_file(&data_path).map_err(|e| Error::write(&data_path, e))?;
    }
    let hpath = dir.join(artifact.header_name());
    if format.version < 4 {
        write_atomic(&hpath, &header::encode(&header))?;
        return Ok(Written { header, own_bytes: own });
    }
    header.version = format.version;
    let mut frames = FrameTable::default();
    if own > 0 && format.compression != Compression::None {
        frames = compress_file(&data_path, artifact, format)?;
        std::fs::remove_file(&data_path).map_err(|e| Error::write(&data_path, e))?;
    }
    let checksum: [u8; 32] = if own > 0 { sha.finalize().into() } else { [0; 32] };
    let mut builds = vec![BuildInfo {
        build: id,
        file_size: i64::try_from(own)
            .map_err(|_| Error::invalid(&data_path, format!("{own} bytes do not fit a header's signed 64-bit size")))?,
        checksum,
        frames,
    }];
    if let Some(p) = &parent {
        for other in header.referenced_builds() {
            if other == id {
                continue;
            }
            if let Some(e) = p.header.build_info(&other) {
                let ranges: Vec<(u64, u64)> = header
                    .mappings
                    .iter()
                    .filter(|m| m.build == other)
                    .map(|m| (m.storage_offset, m.storage_end()))
                    .collect();
                builds.push(BuildInfo { frames: e.frames.trimmed_to(&ranges), ..e.clone() });
            }
        }
    }
    builds.sort_by(|a, b| a.build.as_bytes().cmp(b.build.as_bytes()));
    header.builds = builds;
    let bytes = header::try_encode(&header).map_err(|e| Error::invalid(&hpath, e.to_string()))?;
    write_atomic(&hpath, &bytes)?;
    Ok(Written { header, own_bytes: own })
}

/// Compress `plain` into `<data><suffix>` frame by frame, write the Local provider's size
/// sidecar, and return the frame table.
fn compress_file(plain: &Path, artifact: Artifact, format: &LayerFormat) -> Result<FrameTable> {
    let dir = plain.parent().unwrap_or(Path::new("."));
    let name = format!("{}{}", artifact.data_name(), format.compression.suffix());
    let out_path = dir.join(&name);
    let mut src = File::open(plain).map_err(|e| Error::read(plain, e))?;
    let mut out = File::create(&out_path).map_err(|e| Error::write(&out_path, e))?;
    let mut buf = vec![0u8; format.frame_size.max(4096) as usize];
    let (mut u, mut c) = (0u64, 0u64);
    let mut frames = Vec::new();
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::read(plain, e)),
            }
        }
        if n == 0 {
            break;
        }
        let enc = compress::encode_frame(format.compression, &buf[..n]).map_err(|e| Error::write(&out_path, e))?;
        out.write_all(&enc).map_err(|e| Error::write(&out_path, e))?;
        let (Ok(size_u), Ok(size_c)) = (u32::try_from(n), u32::try_from(enc.len())) else {
            return Err(Error::invalid(
                &out_path,
                format!("a frame of {n} bytes compressed to {} does not fit a frame table", enc.len()),
            ));
        };
        frames.push(Frame { start_u: u, start_c: c, size_u, size_c });
        u += n as u64;
        c += enc.len() as u64;
    }
    out.sync_all().map_err(|e| Error::write(&out_path, e))?;
    let sidecar = dir.join(format!("{name}{SIDECAR_SUFFIX}"));
    std::fs::write(&sidecar, u.to_string()).map_err(|e| Error::write(&sidecar, e))?;
    Ok(FrameTable { compression: format.compression, frames })
}

/// Write a file by writing a temporary sibling and renaming it into place (and truncating: E2B's
/// Local provider does not truncate when it rewrites).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::write(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::write(path, e))?;
    // E2B's Local provider writes 0644; a temp file starts at 0600.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::write(path, e))?;
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
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
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

    fn open(root: &Path, id: BuildId) -> crate::build::Build {
        crate::build::Build::open(&crate::storage::BuildLocation {
            dir: root.join(id.to_string()),
            folder_id: Some(id),
            storage_root: root.to_path_buf(),
        })
        .unwrap()
    }

    #[test]
    fn compressed_base_and_child_read_back_through_frames() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (bid, cid) = (BuildId::from_bytes([0xB; 16]), BuildId::from_bytes([0xC; 16]));
        for d in [bid, cid] {
            std::fs::create_dir_all(root.join(d.to_string())).unwrap();
        }
        // 5 MiB with zero blocks, so frames are 2 MiB, 2 MiB and a short last one.
        let mut img: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i / 4096 % 251) as u8 ^ (i % 7) as u8).collect();
        img[..4096].fill(0);
        img[1 << 20..(1 << 20) + 8192].fill(0);
        let fmt = LayerFormat { frame_size: 1 << 20, ..LayerFormat::framed(4, Compression::Zstd) };
        let base = write_layer_as(&img, &root.join(bid.to_string()), bid, Artifact::Rootfs, None, 0, &fmt, &NoProgress)
            .unwrap();
        let bdir = root.join(bid.to_string());
        assert!(!bdir.join("rootfs.ext4").exists() && bdir.join("rootfs.ext4.zstd").exists());
        let sidecar = std::fs::read_to_string(bdir.join("rootfs.ext4.zstd.uncompressed-size")).unwrap();
        assert_eq!(sidecar, base.own_bytes.to_string());
        let info = base.header.build_info(&bid).unwrap();
        assert_eq!(info.known_size(), Some(base.own_bytes));
        assert!(info.frames.is_contiguous() && info.frames.frames.len() == 5);
        let b = open(root, bid);
        assert_eq!(b.rootfs.header.parsed(), Some(&base.header));
        let bdev = Device::open(&b, Artifact::Rootfs).unwrap();
        assert!(bdev.is_compressed() && !bdev.is_plain());
        let mut back = vec![0u8; img.len()];
        bdev.read_exact_at(&mut back, 0).unwrap();
        assert!(back == img);
        // A child layer as V5 with LZ4 frames, over the compressed base.
        let mut edited = img.clone();
        edited[3 * 1024 * 1024 + 5] ^= 0xFF;
        let fmt = LayerFormat::framed(5, Compression::Lz4);
        let child = write_layer_as(
            &edited,
            &root.join(cid.to_string()),
            cid,
            Artifact::Rootfs,
            Some(Parent { header: &base.header, device: &bdev }),
            1,
            &fmt,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(child.own_bytes, 4096);
        // The child's header carries the base's entry, trimmed to the frames it reads.
        let inherited = child.header.build_info(&bid).unwrap();
        assert_eq!(inherited.checksum, info.checksum);
        assert!(inherited.frames.frames.len() <= info.frames.frames.len());
        let c = open(root, cid);
        let cdev = Device::open(&c, Artifact::Rootfs).unwrap();
        let mut back = vec![0u8; edited.len()];
        cdev.read_exact_at(&mut back, 0).unwrap();
        assert!(back == edited);
        // Assembling writes the same bytes.
        let out = tempfile::tempfile().unwrap();
        cdev.assemble_to(&out, &NoProgress).unwrap();
        let mut assembled = vec![0u8; edited.len()];
        out.read_exact_at(&mut assembled, 0).unwrap();
        assert!(assembled == edited);
        // A corrupt frame is an error naming the build, the file and the frame.
        let zpath = bdir.join("rootfs.ext4.zstd");
        let mut z = std::fs::read(&zpath).unwrap();
        let f1 = info.frames.frames[1];
        z[(f1.start_c + u64::from(f1.size_c) / 2) as usize] ^= 0xFF;
        std::fs::write(&zpath, &z).unwrap();
        let bdev = Device::open(&open(root, bid), Artifact::Rootfs).unwrap();
        let s = f1.start_u + 100;
        let m = base
            .header
            .mappings
            .iter()
            .find(|m| m.build == bid && m.storage_offset <= s && s < m.storage_end())
            .unwrap();
        let err = bdev.read_exact_at(&mut [0u8; 16], m.offset + (s - m.storage_offset)).unwrap_err().to_string();
        assert!(err.contains(&bid.to_string()) && err.contains("rootfs.ext4.zstd") && err.contains("frame 1"), "{err}");
        // Reads touching only other frames still work.
        bdev.read_exact_at(&mut [0u8; 16], (5 << 20) - 100).unwrap();
    }
}
