//! A build's rootfs or memfile as one block device, assembled from its header mappings.
//!
//! Every byte of an image that tmpl reads goes through [`Device`]: each mapped range is read from
//! the owning build's data file at its storage offset, nil ranges read as zeros, and a headerless
//! build is its plain data file. Plain data files are read positionally (`pread`) straight into
//! the caller's buffer. Compressed data files (`rootfs.ext4.zstd`, `memfile.lz4`) are read through
//! their frame table: only the frames a read touches are read and decompressed (of a remote
//! object, a scattered read decodes only the start of a frame through the bytes it needs; see
//! `prefix_target`), and the last few are kept in a small cache (at most [`FRAME_CACHE_BYTES`]). Memory use does not depend on the
//! image size. Errors name the build, file and offset (and the frame).
//!
//! Layered, compacted, compressed and full builds look the same to the rootfs reader, the editor
//! and the VM runner through this type.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::build::Build;
use crate::compress::{Compression, FrameDecoder};
use crate::header::{FrameTable, Header, Mapping};
use crate::progress::Progress;
use crate::vocab::Artifact;
use crate::vocab::BuildId;

/// The bytes of one data file: a local file, or an object of a remote storage read by ranged GETs
/// through a bounded block cache (a path under a [`crate::remote::mount`] root). Every `Device`
/// source and `verify --deep` read data files through this, so remote builds go the same way as
/// local ones.
#[derive(Debug)]
pub enum Blob {
    Local(File),
    Remote(Box<crate::remote::RemoteFile>),
}

impl Blob {
    /// Open the data file at `path` (remote when the path is under a mounted storage).
    pub fn open(path: &Path) -> io::Result<Blob> {
        match crate::remote::mount::open(path) {
            Some(r) => r.map(|f| Blob::Remote(Box::new(f))),
            None => File::open(path).map(Blob::Local),
        }
    }

    /// Its length in bytes.
    pub fn size(&self) -> io::Result<u64> {
        match self {
            Blob::Local(f) => f.metadata().map(|m| m.len()),
            Blob::Remote(r) => Ok(r.size()),
        }
    }

    /// The local file, when it is one (for `copy_file_range` and hole detection).
    pub fn as_file(&self) -> Option<&File> {
        match self {
            Blob::Local(f) => Some(f),
            Blob::Remote(_) => None,
        }
    }

    /// Read up to `buf.len()` bytes at `offset`; 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Blob::Local(f) => f.read_at(buf, offset),
            Blob::Remote(r) => {
                let n = crate::num::usize_from(r.size().saturating_sub(offset).min(crate::num::u64_from(buf.len())));
                r.read_exact_at(&mut buf[..n], offset).map_err(crate::remote::mount::to_io)?;
                Ok(n)
            }
        }
    }

    /// Fill `buf` from `offset` (`UnexpectedEof` when the file is shorter).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Blob::Local(f) => f.read_exact_at(buf, offset),
            Blob::Remote(r) => r.read_exact_at(buf, offset).map_err(crate::remote::mount::to_io),
        }
    }

    /// True for an object of a remote storage (where every byte fetched costs).
    pub fn is_remote(&self) -> bool {
        matches!(self, Blob::Remote(_))
    }
}

/// `[pos, end)` of a [`Blob`] as a sequential reader (the input of a frame decoder).
struct BlobRange<'a> {
    blob: &'a Blob,
    pos: u64,
    end: u64,
}

impl io::Read for BlobRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = crate::num::usize_from(self.end.saturating_sub(self.pos).min(crate::num::u64_from(buf.len())));
        self.blob.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Decompressed frames kept per device (E2B frames are 2 MiB: 16 of them).
pub const FRAME_CACHE_BYTES: usize = 32 << 20;

/// How much of a frame to decode for a read that needs its first `need` bytes, when `have` bytes
/// of it are already decoded: `None` for the whole frame. Only scattered reads of remote objects
/// (`partial`) decode frames in part: there every compressed byte is fetched over the network,
/// while a local frame, or one a stream reads to its end anyway, is decoded whole (which also
/// checks the frame's checksum). A zstd or LZ4 frame decodes only from its start, so a byte near
/// a frame's end costs nearly the whole frame whatever the reader; what this saves is the rest of
/// the frame after the last byte a read needs. Each extension at least doubles the prefix, so
/// reading a frame from start to end decodes it at most about twice over.
fn prefix_target(partial: bool, compression: Compression, need: usize, have: usize, size_u: usize) -> Option<usize> {
    if !partial || compression == Compression::None {
        return None;
    }
    let t = need.max(have.saturating_mul(2));
    (t < size_u).then_some(t)
}

/// Positional reads of a fixed-size byte source.
pub trait ReadAt {
    /// Fill `buf` from `offset`, or fail.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError>;
    /// Total size in bytes.
    fn size(&self) -> u64;
}

/// Why a device could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("build {build} has no usable {artifact}: {reason}")]
    Unavailable { build: BuildId, artifact: &'static str, reason: String },
    #[error("cannot open {} of build {build}: {source}", path.display())]
    Open {
        build: BuildId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading device offset {offset}: build {build}, {} at byte {file_offset}: {source}", path.display())]
    Read {
        offset: u64,
        build: BuildId,
        path: PathBuf,
        file_offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("read of {len} bytes at offset {offset} goes past the end of the device ({size} bytes)")]
    OutOfRange { offset: u64, len: usize, size: u64 },
    #[error("the mapping at device offset {offset} (build {build}) runs past 2^64 bytes in its data file")]
    MappingOverflow { offset: u64, build: BuildId },
    #[error(
        "reading device offset {offset}: build {build}, {} frame {frame} (compressed bytes {start_c}..{end_c}, uncompressed {start_u}..): {reason}",
        path.display()
    )]
    Frame {
        offset: u64,
        build: BuildId,
        path: PathBuf,
        frame: usize,
        start_c: u64,
        end_c: u64,
        start_u: u64,
        reason: String,
    },
    #[error(
        "reading device offset {offset}: build {build}, {}: uncompressed byte {file_offset} is in no frame of the frame table",
        path.display()
    )]
    NotInFrameTable { offset: u64, build: BuildId, path: PathBuf, file_offset: u64 },
}

impl DeviceError {
    /// The underlying I/O error kind, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            DeviceError::Open { source, .. } | DeviceError::Read { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Source {
    build: BuildId,
    path: PathBuf,
    file: Blob,
    /// The frame table of a compressed data file; `None` for a plain one.
    frames: Option<Arc<FrameTable>>,
    /// Where the last read of a compressed data file ended (uncompressed offset), to tell a
    /// stream from scattered reads.
    last_end: AtomicU64,
}

/// How to open one build's data file.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// An uncompressed data file, read at storage offsets.
    Plain(PathBuf),
    /// A compressed data file and the table of its frames.
    Framed { path: PathBuf, table: Arc<FrameTable> },
}

/// (source index, frame index) → decompressed bytes.
type CachedFrame = ((usize, usize), Arc<Vec<u8>>);

/// Recently decompressed frames, most recent last.
#[derive(Debug, Default)]
struct FrameCache {
    frames: Vec<CachedFrame>,
    bytes: usize,
}

impl FrameCache {
    fn get(&mut self, key: (usize, usize)) -> Option<Arc<Vec<u8>>> {
        let i = self.frames.iter().position(|(k, _)| *k == key)?;
        let e = self.frames.remove(i);
        let v = e.1.clone();
        self.frames.push(e);
        Some(v)
    }

    /// Keep `v` as the bytes of `key` (replacing a shorter prefix of the same frame).
    fn put(&mut self, key: (usize, usize), v: Arc<Vec<u8>>) {
        if let Some(i) = self.frames.iter().position(|(k, _)| *k == key) {
            let (_, old) = self.frames.remove(i);
            self.bytes -= old.len();
        }
        self.bytes += v.len();
        self.frames.push((key, v));
        while self.bytes > FRAME_CACHE_BYTES && self.frames.len() > 1 {
            let (_, old) = self.frames.remove(0);
            self.bytes -= old.len();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Zero,
    File { source: usize, storage_offset: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    length: u64,
    target: Target,
}

/// A read-only block device over one or more data files.
#[derive(Debug)]
pub struct Device {
    size: u64,
    block_size: u64,
    segments: Vec<Segment>,
    sources: Vec<Source>,
    bytes_read: AtomicU64,
    /// True when the whole device is one file at identical offsets.
    plain: bool,
    cache: Mutex<FrameCache>,
    decoders: Mutex<Vec<FrameDecoder>>,
    /// (source, frame) → how far into the frame reads have needed bytes.
    frames_used: Mutex<std::collections::BTreeMap<(usize, usize), usize>>,
}

/// One compressed frame that reads of a [`Device`] needed, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameUse {
    /// The build whose data file holds the frame.
    pub build: BuildId,
    pub path: PathBuf,
    /// Index in that file's frame table, and the frame's entry.
    pub index: usize,
    pub frame: crate::header::Frame,
    pub compression: Compression,
    /// Uncompressed bytes from the frame's start up to the end of the furthest byte read.
    pub needed: usize,
}

impl Device {
    /// The device of `artifact` of `build`, through its header (or its plain data file when the
    /// build is headerless).
    pub fn open(build: &Build, artifact: Artifact) -> Result<Device, DeviceError> {
        let files = build.artifact(artifact);
        let unavailable =
            |reason: String| DeviceError::Unavailable { build: build.id, artifact: artifact.data_name(), reason };
        if let crate::build::Loaded::Invalid(e) = &files.header {
            return Err(unavailable(format!("{} is unreadable: {e}", artifact.header_name())));
        }
        // Headerless: the data file is the whole device, whatever the build is called (a build
        // copied to a folder that is not a UUID has no ID to map to).
        if matches!(files.header, crate::build::Loaded::Absent) && files.data.is_some() {
            return Self::plain_file_of(build.id, &build.path(artifact.data_name()));
        }
        let Some(header) = files.effective_header(build.id) else {
            return Err(unavailable(if files.compressed.is_empty() {
                format!("neither {} nor {} exists", artifact.data_name(), artifact.header_name())
            } else {
                format!(
                    "{} exists but {} does not: compressed data cannot be read without the frame table in its header",
                    files.compressed[0].0,
                    artifact.header_name()
                )
            }));
        };
        Self::from_specs(&header, |id| {
            let df = build.data_file(&header, *id, artifact);
            match (&df.compression, df.table) {
                (Compression::None, _) => Ok(SourceSpec::Plain(df.path)),
                (_, Some(table)) => Ok(SourceSpec::Framed { path: df.path, table }),
                (_, None) => Err(DeviceError::Unavailable {
                    build: *id,
                    artifact: artifact.data_name(),
                    reason: format!(
                        "{} is compressed but neither this header nor {}'s own header has its frame table",
                        df.label, id
                    ),
                }),
            }
        })
    }

    /// A device over a header, opening each referenced build's (plain) data file via `path_of`.
    pub fn from_header(header: &Header, path_of: impl Fn(&BuildId) -> PathBuf) -> Result<Device, DeviceError> {
        Self::from_specs(header, |id| Ok(SourceSpec::Plain(path_of(id))))
    }

    /// A device over a header, opening each referenced build's data file as `spec_of` says.
    pub fn from_specs(
        header: &Header,
        spec_of: impl Fn(&BuildId) -> Result<SourceSpec, DeviceError>,
    ) -> Result<Device, DeviceError> {
        let mut sources: Vec<Source> = Vec::new();
        let mut maps: Vec<Mapping> = header.mappings.iter().copied().filter(|m| m.length > 0).collect();
        maps.sort_by_key(|m| m.offset);
        let mut segments = Vec::with_capacity(maps.len());
        let mut pos = 0u64;
        for m in maps {
            // Overlaps (tolerated for header versions < 3): the earlier range keeps its bytes.
            let start = m.offset.max(pos);
            let end = m.end();
            if end <= start {
                continue;
            }
            if start > pos {
                segments.push(Segment { offset: pos, length: start - pos, target: Target::Zero });
            }
            let target = if m.is_nil() {
                Target::Zero
            } else {
                let idx = match sources.iter().position(|s| s.build == m.build) {
                    Some(i) => i,
                    None => {
                        let (path, frames) = match spec_of(&m.build)? {
                            SourceSpec::Plain(p) => (p, None),
                            SourceSpec::Framed { path, table } => (path, Some(table)),
                        };
                        let file = Blob::open(&path).map_err(|source| DeviceError::Open {
                            build: m.build,
                            path: path.clone(),
                            source,
                        })?;
                        sources.push(Source { build: m.build, path, file, frames, last_end: AtomicU64::new(u64::MAX) });
                        sources.len() - 1
                    }
                };
                // The storage range [storage_offset, + length) must fit in 64 bits, so every read
                // inside the segment can add its offset without overflow.
                let storage_offset = m
                    .storage_offset
                    .checked_add(start - m.offset)
                    .filter(|s| s.checked_add(end - start).is_some())
                    .ok_or(DeviceError::MappingOverflow { offset: m.offset, build: m.build })?;
                Target::File { source: idx, storage_offset }
            };
            segments.push(Segment { offset: start, length: end - start, target });
            pos = end;
        }
        let plain = segments.len() == 1
            && matches!(segments[0].target, Target::File { storage_offset: 0, source } if sources[source].frames.is_none())
            && segments[0].offset == 0;
        Ok(Device {
            size: header.size,
            block_size: header.block_size,
            segments,
            sources,
            bytes_read: AtomicU64::new(0),
            plain,
            cache: Mutex::default(),
            decoders: Mutex::default(),
            frames_used: Mutex::default(),
        })
    }

    /// A plain image file as a device (used for full images outside a build folder).
    pub fn plain_file(path: &Path) -> Result<Device, DeviceError> {
        Self::plain_file_of(BuildId::nil(), path)
    }

    /// A build's full image file as a device; errors name `build`.
    pub fn plain_file_of(build: BuildId, path: &Path) -> Result<Device, DeviceError> {
        let file = Blob::open(path).map_err(|source| DeviceError::Open { build, path: path.to_path_buf(), source })?;
        let size = file.size().map_err(|source| DeviceError::Open { build, path: path.to_path_buf(), source })?;
        Ok(Device {
            size,
            block_size: 4096,
            segments: vec![Segment { offset: 0, length: size, target: Target::File { source: 0, storage_offset: 0 } }],
            sources: vec![Source {
                build,
                path: path.to_path_buf(),
                file,
                frames: None,
                last_end: AtomicU64::new(u64::MAX),
            }],
            bytes_read: AtomicU64::new(0),
            plain: true,
            cache: Mutex::default(),
            decoders: Mutex::default(),
            frames_used: Mutex::default(),
        })
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Bytes read from data files so far (zero ranges are not counted).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// True when some bytes come from objects of a remote storage.
    pub fn is_remote(&self) -> bool {
        self.sources.iter().any(|s| matches!(s.file, Blob::Remote(_)))
    }

    /// True when some bytes come from compressed data files.
    pub fn is_compressed(&self) -> bool {
        self.sources.iter().any(|s| s.frames.is_some())
    }

    /// The compressed frames reads have needed so far, in source and frame order.
    pub fn frames_used(&self) -> Vec<FrameUse> {
        let used = self.frames_used.lock().map(|u| u.clone()).unwrap_or_default();
        used.into_iter()
            .filter_map(|((si, fi), needed)| {
                let src = &self.sources[si];
                let table = src.frames.as_ref()?;
                let frame = *table.frames.get(fi)?;
                let compression = table.compression;
                Some(FrameUse { build: src.build, path: src.path.clone(), index: fi, frame, compression, needed })
            })
            .collect()
    }

    /// Frame `fi` of source `si`, decompressed at least to its first `need` bytes (from the
    /// cache when recent; see [`prefix_target`] for when only a prefix is decoded).
    fn frame(&self, si: usize, fi: usize, need: usize, stream: bool, offset: u64) -> Result<Arc<Vec<u8>>, DeviceError> {
        let cached = self.cache.lock().ok().and_then(|mut c| c.get((si, fi)));
        if let Some(hit) = &cached
            && hit.len() >= need
        {
            return Ok(hit.clone());
        }
        let src = &self.sources[si];
        let Some(table) = src.frames.as_ref() else {
            return Err(DeviceError::NotInFrameTable {
                offset,
                build: src.build,
                path: src.path.clone(),
                file_offset: 0,
            });
        };
        let f = table.frames[fi];
        let err = |reason: String| DeviceError::Frame {
            offset,
            build: src.build,
            path: src.path.clone(),
            frame: fi,
            start_c: f.start_c,
            end_c: f.end_c(),
            start_u: f.start_u,
            reason,
        };
        let size_u = f.size_u as usize;
        let have = cached.as_ref().map_or(0, |c| c.len());
        let mut out = Vec::new();
        if let Some(want) = prefix_target(src.file.is_remote() && !stream, table.compression, need, have, size_u) {
            // The frame must lie within the object, as a whole-frame read would require; the
            // findings then do not depend on how much of the frame a read needs.
            let size = src.file.size().map_err(|e| err(e.to_string()))?;
            if f.end_c() > size {
                return Err(err(format!("the object ends at byte {size}, inside the frame")));
            }
            // One GET for the compressed bytes the prefix likely needs: through the end of the
            // block holding its last byte (a block is decoded whole), at the frame's average
            // ratio. The decoder's further reads, if any, go through the block cache.
            let through = crate::num::u64_from(want)
                .div_ceil(table.compression.block_span())
                .saturating_mul(table.compression.block_span())
                .min(u64::from(f.size_u));
            let estimate = (through * u64::from(f.size_c) / u64::from(f.size_u.max(1))).min(u64::from(f.size_c));
            if let Blob::Remote(r) = &src.file {
                let range = f.start_c..f.start_c + estimate;
                r.prefetch(std::slice::from_ref(&range)).map_err(|e| err(e.to_string()))?;
            }
            let input =
                io::BufReader::with_capacity(16 << 10, BlobRange { blob: &src.file, pos: f.start_c, end: f.end_c() });
            crate::compress::decode_prefix(table.compression, input, size_u, want, &mut out)
                .map_err(|e| err(e.message))?;
        } else {
            let mut cbuf = vec![0u8; f.size_c as usize];
            src.file.read_exact_at(&mut cbuf, f.start_c).map_err(|e| err(e.to_string()))?;
            let mut dec = self.decoders.lock().ok().and_then(|mut d| d.pop()).unwrap_or_default();
            let res = dec.decode_into(table.compression, &cbuf, size_u, &mut out);
            if let Ok(mut d) = self.decoders.lock() {
                d.push(dec);
            }
            res.map_err(|e| err(e.message))?;
        }
        let out = Arc::new(out);
        if let Ok(mut c) = self.cache.lock() {
            c.put((si, fi), out.clone());
        }
        Ok(out)
    }

    /// Read `dst` from uncompressed offset `file_offset` of compressed source `si`.
    fn read_framed(&self, si: usize, dst: &mut [u8], file_offset: u64, offset: u64) -> Result<(), DeviceError> {
        let src = &self.sources[si];
        let Some(table) = src.frames.as_ref() else {
            return Err(DeviceError::NotInFrameTable { offset, build: src.build, path: src.path.clone(), file_offset });
        };
        // A read that starts where the previous one ended is part of a stream: it will want the
        // rest of each frame, so it decodes whole frames.
        let end = file_offset.saturating_add(crate::num::u64_from(dst.len()));
        let stream = src.last_end.swap(end, Ordering::Relaxed) == file_offset;
        let mut done = 0usize;
        while done < dst.len() {
            let u = file_offset + done as u64;
            let Some(fi) = table.locate(u) else {
                return Err(DeviceError::NotInFrameTable {
                    offset: offset + done as u64,
                    build: src.build,
                    path: src.path.clone(),
                    file_offset: u,
                });
            };
            let within = crate::num::usize_from(u - table.frames[fi].start_u);
            let need = within.saturating_add(dst.len() - done).min(table.frames[fi].size_u as usize);
            if let Ok(mut used) = self.frames_used.lock() {
                let e = used.entry((si, fi)).or_default();
                *e = (*e).max(need);
            }
            let data = self.frame(si, fi, need, stream, offset + done as u64)?;
            let n = (data.len() - within).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// True when the device is a single file read at identical offsets (a full image).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// Builds whose files back this device.
    pub fn source_builds(&self) -> Vec<BuildId> {
        self.sources.iter().map(|s| s.build).collect()
    }

    fn segment_index(&self, offset: u64) -> usize {
        self.segments.partition_point(|s| s.offset + s.length <= offset)
    }

    /// Copy the whole device into `out` (a new, empty file), leaving zero ranges as holes.
    /// Uses `copy_file_range` so the kernel (or the filesystem, by reflink) moves the bytes.
    pub fn assemble_to(&self, out: &File, progress: &dyn Progress) -> Result<(), DeviceError> {
        let out_err = |source: io::Error| DeviceError::Read {
            offset: 0,
            build: BuildId::nil(),
            path: PathBuf::from("<output>"),
            file_offset: 0,
            source,
        };
        out.set_len(self.size).map_err(out_err)?;
        progress.start("assembling image", self.size);
        for seg in &self.segments {
            let len = seg.length.min(self.size.saturating_sub(seg.offset));
            if let Target::File { source, storage_offset } = seg.target
                && self.sources[source].frames.is_some()
            {
                // Compressed: decompress through the frames, leave zero chunks as holes.
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0u64;
                while done < len {
                    let n = crate::num::usize_from((len - done).min(crate::num::u64_from(buf.len())));
                    self.read_framed(source, &mut buf[..n], storage_offset + done, seg.offset + done)?;
                    if buf[..n].iter().any(|&b| b != 0) {
                        out.write_all_at(&buf[..n], seg.offset + done).map_err(out_err)?;
                    }
                    self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                    progress.inc(n as u64);
                    done += n as u64;
                }
                continue;
            }
            if let Target::File { source, storage_offset } = seg.target {
                let src = &self.sources[source];
                let copied = match &src.file {
                    Blob::Local(f) => copy_range(f, storage_offset, out, seg.offset, len),
                    remote => copy_blob(remote, storage_offset, out, seg.offset, len),
                };
                copied.map_err(|e| DeviceError::Read {
                    offset: seg.offset,
                    build: src.build,
                    path: src.path.clone(),
                    file_offset: storage_offset,
                    source: e,
                })?;
                self.bytes_read.fetch_add(len, Ordering::Relaxed);
            }
            progress.inc(len);
        }
        progress.finish();
        Ok(())
    }
}

/// Copy `len` bytes of a blob into a file, 4 MiB at a time (remote sources: ranged GETs).
fn copy_blob(src: &Blob, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = crate::num::usize_from((len - done).min(crate::num::u64_from(buf.len())));
        src.read_exact_at(&mut buf[..n], src_off + done)?;
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], dst_off + done)?;
        }
        done += n as u64;
    }
    Ok(())
}

/// Copy `len` bytes between files at given offsets: `copy_file_range`, falling back to a
/// buffered loop where the kernel refuses (cross-device on old kernels, special files).
pub fn copy_range(src: &File, mut src_off: u64, dst: &File, mut dst_off: u64, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut src_off), dst, Some(&mut dst_off), chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source file ended early")),
            Ok(n) => left -= n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    let n = crate::num::usize_from(left.min(crate::num::u64_from(buf.len())));
                    src.read_exact_at(&mut buf[..n], src_off)?;
                    dst.write_all_at(&buf[..n], dst_off)?;
                    src_off += n as u64;
                    dst_off += n as u64;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl ReadAt for Device {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(DeviceError::OutOfRange { offset, len: buf.len(), size: self.size });
        }
        let mut done = 0usize;
        let mut i = self.segment_index(offset);
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(seg) = self.segments.get(i).filter(|s| s.offset <= at) else {
                // Beyond the last mapping but within Size: unmapped, reads as zeros.
                let next = self.segments.get(i).map_or(u64::MAX, |s| s.offset);
                let n = crate::num::usize_from(next - at).min(buf.len() - done);
                buf[done..done + n].fill(0);
                done += n;
                continue;
            };
            let within = at - seg.offset;
            let n = crate::num::usize_from(seg.length - within).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match seg.target {
                Target::Zero => dst.fill(0),
                Target::File { source, storage_offset } if self.sources[source].frames.is_some() => {
                    self.read_framed(source, dst, storage_offset + within, at)?;
                    self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                }
                Target::File { source, storage_offset } => {
                    let src = &self.sources[source];
                    let file_offset = storage_offset + within;
                    src.file.read_exact_at(dst, file_offset).map_err(|e| DeviceError::Read {
                        offset: at,
                        build: src.build,
                        path: src.path.clone(),
                        file_offset,
                        source: e,
                    })?;
                    self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            done += n;
            i += 1;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        let start = usize::try_from(offset).ok().filter(|&s| s.checked_add(buf.len()).is_some_and(|e| e <= self.len()));
        let Some(start) = start else {
            return Err(DeviceError::OutOfRange { offset, len: buf.len(), size: self.len() as u64 });
        };
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Mapping;

    fn id(n: u8) -> BuildId {
        BuildId::from_bytes([n; 16])
    }

    /// An 8 MiB image (four 2 MiB frames) of bytes that compress about 2:1, stored as a V4 layer
    /// in `compression` in a folder read as a remote storage (a `file://` store, mounted): the
    /// device over it, the same build read locally, and the store (for its request counters).
    /// With `cut`, the data object is cut in the middle of that frame first.
    fn remote_compressed_layer(
        compression: Compression,
        cut: Option<usize>,
    ) -> (tempfile::TempDir, Device, Device, crate::remote::Store, crate::header::FrameTable) {
        use crate::remote::{Config, Env, Location, Store};
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let image: Vec<u8> = (0..8usize << 20)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2 == 0 { (x >> 56) as u8 } else { (i >> 12).to_le_bytes()[0] | 1 }
            })
            .collect();
        let img = dir.path().join("image");
        std::fs::write(&img, &image).unwrap();
        let root = dir.path().join("storage");
        let w = crate::demo::StorageWriter::new(&root).unwrap();
        let b = id(7);
        let format = crate::fixtures::layer::LayerFormat::framed(4, compression);
        let h = w.layer_as(&b, Artifact::Rootfs, &img, None, 0, &format).unwrap();
        let table = h.builds[0].frames.clone();
        if let Some(k) = cut {
            let data = root.join(format!("{b}/rootfs.ext4{}", compression.suffix()));
            std::fs::OpenOptions::new()
                .write(true)
                .open(data)
                .unwrap()
                .set_len(table.frames[k].start_c + u64::from(table.frames[k].size_c) / 2)
                .unwrap();
        }
        let open = |storage_root: &Path| {
            let loc = crate::storage::BuildLocation {
                dir: storage_root.join(b.to_string()),
                folder_id: Some(b),
                storage_root: storage_root.to_path_buf(),
            };
            Device::open(&Build::open(&loc).unwrap(), Artifact::Rootfs).unwrap()
        };
        let local = open(&root);
        let store = Store::open(&Location::Local { path: root.clone() }, &Env::empty(), &Config::default()).unwrap();
        let m = crate::remote::mount::mount(store.clone());
        let remote = open(m.root());
        assert!(remote.is_remote() && remote.is_compressed() && !local.is_remote());
        assert_eq!(table.frames.len(), 4);
        (dir, remote, local, store, table)
    }

    #[test]
    fn a_scattered_remote_read_fetches_the_start_of_a_frame_not_all_of_it() {
        for c in [Compression::Zstd, Compression::Lz4] {
            let (_dir, remote, local, store, table) = remote_compressed_layer(c, None);
            let f1 = table.frames[1];
            let fetched = |before: crate::remote::Stats| store.stats().since(&before).bytes_read;
            let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
            // 4 KiB at 256 KiB into frame 1.
            let at = f1.start_u + (256 << 10);
            let s0 = store.stats();
            remote.read_exact_at(&mut a, at).unwrap();
            local.read_exact_at(&mut b, at).unwrap();
            assert_eq!(a, b, "{c:?}");
            let got = fetched(s0);
            if c == Compression::Zstd {
                // The compressed bytes through the zstd block holding the read (384 KiB of the
                // frame's 2 MiB), rounded to the 16 KiB cache blocks at both ends.
                let share = u64::from(f1.size_c) * 3 / 16;
                assert!(got <= share + (48 << 10), "{c:?}: fetched {got} of the frame's {}", f1.size_c);
                assert!(got < u64::from(f1.size_c) / 2, "{c:?}: fetched {got} of {}", f1.size_c);
            } else {
                // An LZ4 block holds up to 4 MiB: the frame is one block, fetched whole.
                assert!(got >= u64::from(f1.size_c), "{c:?}: fetched {got} of {}", f1.size_c);
            }
            // Further in the same frame: the prefix grows; the bytes still match.
            let at = f1.start_u + (1 << 20);
            remote.read_exact_at(&mut a, at).unwrap();
            local.read_exact_at(&mut b, at).unwrap();
            assert_eq!(a, b, "{c:?}");
            // The frames used and how far in.
            let used = remote.frames_used();
            assert_eq!(used.len(), 1, "{used:?}");
            assert_eq!((used[0].index, used[0].needed), (1, (1 << 20) + 4096));
            // A read near the end of frame 2 needs nearly all of it.
            let f2 = table.frames[2];
            let s1 = store.stats();
            remote.read_exact_at(&mut a, f2.end_u() - 4096).unwrap();
            local.read_exact_at(&mut b, f2.end_u() - 4096).unwrap();
            assert_eq!(a, b, "{c:?}");
            assert!(fetched(s1) >= u64::from(f2.size_c) * 9 / 10, "{c:?}: {}", fetched(s1));
        }
    }

    #[test]
    fn a_remote_stream_reads_whole_frames_and_matches_the_local_device() {
        for c in [Compression::Zstd, Compression::Lz4] {
            let (_dir, remote, local, store, table) = remote_compressed_layer(c, None);
            let s0 = store.stats();
            let (mut a, mut b) = (vec![0u8; 256 << 10], vec![0u8; 256 << 10]);
            let mut at = 0;
            while at < remote.size() {
                remote.read_exact_at(&mut a, at).unwrap();
                local.read_exact_at(&mut b, at).unwrap();
                assert_eq!(a, b, "{c:?} at {at}");
                at += a.len() as u64;
            }
            // Each compressed byte once (plus the rounding to whole cache blocks at the end), in
            // few ranged reads (6 here; 26 if each read grew a prefix): after the first read the
            // stream decodes whole frames, and the object's readahead fetches ahead of them.
            let total: u64 = table.frames.iter().map(|f| u64::from(f.size_c)).sum();
            let since = store.stats().since(&s0);
            let got = since.bytes_read;
            assert!(got >= total && got <= total + (16 << 10), "{c:?}: fetched {got} for {total}");
            assert!(since.operations <= 8, "{c:?}: {} ranged reads", since.operations);
            assert_eq!(remote.frames_used().len(), 4);
            assert!(remote.frames_used().iter().all(|u| u.needed == 2 << 20));
        }
    }

    #[test]
    fn a_remote_frame_beyond_the_end_of_its_object_is_an_error_whatever_the_read_needs() {
        // The object ends in the middle of frame 3: even the frame's first bytes, which decode
        // from what is there, are refused, as a local read (which reads the whole frame) refuses
        // them, so what a check finds does not depend on where in the frame a read falls.
        let (_dir, remote, local, _store, table) = remote_compressed_layer(Compression::Zstd, Some(3));
        let at = table.frames[3].start_u;
        for d in [&remote, &local] {
            let e = d.read_exact_at(&mut [0u8; 16], at).unwrap_err();
            assert!(matches!(e, DeviceError::Frame { frame: 3, .. }), "{e}");
        }
        // Frame 2, whole, still reads.
        remote.read_exact_at(&mut [0u8; 16], table.frames[2].start_u).unwrap();
    }

    #[test]
    fn reads_across_layers_and_nil_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (id(1), id(2));
        std::fs::write(dir.path().join("b"), vec![0xBB; 8192]).unwrap();
        std::fs::write(dir.path().join("a"), [vec![0xAA; 4096], vec![0xA2; 4096]].concat()).unwrap();
        let h = Header {
            version: 3,
            block_size: 4096,
            size: 16384,
            generation: 1,
            build_id: a,
            base_build_id: b,
            mappings: vec![
                Mapping { offset: 0, length: 8192, build: b, storage_offset: 0 },
                Mapping { offset: 8192, length: 4096, build: BuildId::nil(), storage_offset: 0 },
                Mapping { offset: 12288, length: 4096, build: a, storage_offset: 4096 },
            ],
            synthesized: false,
            flags: 0,
            builds: Vec::new(),
        };
        let d = Device::from_header(&h, |x| dir.path().join(if *x == a { "a" } else { "b" })).unwrap();
        let mut buf = vec![0u8; 16384];
        d.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..8192].iter().all(|&x| x == 0xBB));
        assert!(buf[8192..12288].iter().all(|&x| x == 0));
        assert!(buf[12288..].iter().all(|&x| x == 0xA2));
        assert_eq!(d.bytes_read(), 8192 + 4096);
        // A read straddling three segments.
        let mut small = [0u8; 3];
        d.read_exact_at(&mut small, 8191).unwrap();
        assert_eq!(small, [0xBB, 0, 0]);
        assert!(matches!(d.read_exact_at(&mut [0u8; 2], 16383), Err(DeviceError::OutOfRange { .. })));
        // Assembling writes the same bytes, with a hole where the nil range is.
        let out = tempfile::tempfile().unwrap();
        d.assemble_to(&out, &crate::progress::NoProgress).unwrap();
        let mut back = vec![0u8; 16384];
        out.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, buf);
    }

    /// The same device over a mounted storage (a local store standing for a bucket) reads the same
    /// bytes through `Blob::Remote`, and assembles through ranged reads.
    #[test]
    fn a_device_over_a_mounted_storage_reads_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = id(3);
        std::fs::create_dir(dir.path().join(a.to_string())).unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join(a.to_string()).join("rootfs.ext4"), &data).unwrap();
        let store = crate::remote::Store::open(
            &crate::remote::Location::Local { path: dir.path().into() },
            &crate::remote::Env::empty(),
            &crate::remote::Config::default(),
        )
        .unwrap();
        let root = crate::remote::mount::mount(store).root().to_path_buf();
        let h = crate::header::headerless(a, 3 * 4096, 4096);
        let d = Device::from_header(&h, |x| root.join(x.to_string()).join("rootfs.ext4")).unwrap();
        assert!(d.is_remote());
        let mut buf = vec![0u8; 5000];
        d.read_exact_at(&mut buf, 3000).unwrap();
        assert_eq!(buf, data[3000..8000]);
        let out = tempfile::tempfile().unwrap();
        d.assemble_to(&out, &crate::progress::NoProgress).unwrap();
        let mut back = vec![0u8; data.len()];
        out.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        let missing = Device::from_header(&h, |_| root.join("nope/rootfs.ext4")).unwrap_err();
        assert!(matches!(missing, DeviceError::Open { ref source, .. } if source.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn frame_cache_is_bounded_and_keeps_recent_frames() {
        let mut c = FrameCache::default();
        for i in 0..40 {
            c.put((0, i), Arc::new(vec![0u8; 2 << 20]));
            assert!(c.bytes <= FRAME_CACHE_BYTES);
        }
        assert_eq!(c.frames.len(), FRAME_CACHE_BYTES / (2 << 20));
        assert!(c.get((0, 39)).is_some() && c.get((0, 0)).is_none());
        // One frame larger than the budget is still kept (the one being read).
        c.put((1, 0), Arc::new(vec![0u8; FRAME_CACHE_BYTES + 1]));
        assert_eq!(c.frames.len(), 1);
    }

    #[test]
    fn errors_name_the_build_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let a = id(1);
        std::fs::write(dir.path().join("a"), vec![1u8; 100]).unwrap();
        let h = crate::header::headerless(a, 8192, 4096);
        let d = Device::from_header(&h, |_| dir.path().join("a")).unwrap();
        let err = d.read_exact_at(&mut [0u8; 10], 4096).unwrap_err().to_string();
        assert!(err.contains(&a.to_string()) && err.contains("offset 4096"), "{err}");
        let missing = Device::from_header(&h, |_| dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains(&a.to_string()), "{missing}");
    }
}
