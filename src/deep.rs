//! `verify --deep`: stream every data file a build depends on and check it against its headers
//! (reference: e2b-formats.md §7): its uncompressed length against the builds section's size and
//! the Local provider's `.uncompressed-size` sidecar, every compressed frame against the frame
//! table (size, and the frame's own zstd/LZ4 checksum), and, where a V4/V5 header records a
//! non-zero SHA-256, the digest of the uncompressed bytes.
//!
//! Throughput: files are hashed in parallel (rayon, largest first), and within each file a
//! producer thread reads and decompresses while the consumer hashes, so the two cores of a node
//! both work even on one file. A file shared by several builds (a common ancestor) is read once.
//!
//! Time follows the allocated data: a plain file's holes (`SEEK_DATA`/`SEEK_HOLE`) are never
//! read. Where a header records a SHA-256 the holes are hashed as zeros from memory (SHA-256 has
//! to see every byte); where none is recorded nothing is hashed, and the pass reads every
//! allocated byte (read errors) and counts the length.
//!
//! Memory is bounded whatever the number of builds and the size of the files: a job is a path
//! and a few numbers (no parsed header, no frame table: the table is read again from its header
//! when its file is streamed, and dropped after), and each file in flight holds a few buffers of
//! one read chunk (1 MiB) or one frame (at most [`crate::header::MAX_FRAME_U`]) plus its table.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::Build;
use crate::checks::data;
use crate::compress::{self, Compression, FrameDecoder, FrameErrorKind};
use crate::header::{self, FrameTable, hex};
use crate::progress::Progress;
use crate::report::{Check, Finding};
use crate::vocab::Artifact;
use crate::vocab::BuildId;

/// Read size for plain files.
const CHUNK: usize = 1 << 20;
/// Buffers queued between the reader/decompressor and the hasher, per file.
const QUEUE: usize = 3;

/// One data file to stream.
#[derive(Debug, Clone)]
pub struct Job {
    pub build: BuildId,
    pub artifact: Artifact,
    pub path: PathBuf,
    /// `<build-id>/<name>`.
    pub name: String,
    pub compression: Compression,
    /// Where the most complete frame table known is (compressed files): the header file and
    /// the build whose builds-section entry holds it. Read when the file is streamed.
    pub table_from: Option<(PathBuf, BuildId)>,
    /// Uncompressed end of that table (progress only).
    pub table_end_u: Option<u64>,
    /// Uncompressed size from a builds section.
    pub file_size: Option<u64>,
    /// The sidecar's value, when it parses.
    pub sidecar: Option<u64>,
    pub checksum: Option<[u8; 32]>,
    /// Bytes on disk.
    pub stored_len: u64,
}

impl Job {
    /// Uncompressed bytes expected (for progress).
    fn expected_u(&self) -> u64 {
        self.file_size.or(self.sidecar).or(self.table_end_u).unwrap_or(if self.compression == Compression::None {
            self.stored_len
        } else {
            0
        })
    }
}

/// What streaming one file showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileResult {
    /// `<build-id>/<name>`.
    pub file: String,
    pub compression: Compression,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Uncompressed bytes of the file (holes included); hashed when a SHA-256 is recorded.
    pub bytes_hashed: u64,
    /// The file was read (or decompressed) to its end.
    pub complete: bool,
    /// Frames decompressed (compressed files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// SHA-256 of the uncompressed bytes: computed when a header records one to compare with
    /// (absent otherwise, and when the file could not be read to its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 the header records, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    /// Length, frames and (when recorded) digest all agree.
    pub ok: bool,
    #[serde(skip)]
    problems: Vec<(&'static Check, String)>,
    #[serde(skip, default = "BuildId::nil")]
    build: BuildId,
}

/// Totals of a deep pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub files: usize,
    pub bytes_read: u64,
    pub bytes_hashed: u64,
    pub seconds: f64,
    /// Uncompressed megabytes (10^6) hashed per second of wall time.
    pub mb_per_s: f64,
    pub threads: usize,
}

/// The outcome of a deep pass over several builds.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per build: its files' results and findings.
    pub per_build: Vec<(BuildId, Vec<FileResult>, Vec<Finding>)>,
    pub summary: Summary,
}

/// The data files `build` depends on, through both headers.
pub fn jobs(build: &Build) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    for a in Artifact::ALL {
        let Some(h) = build.artifact(a).effective_header(build.id) else { continue };
        for id in h.referenced_builds() {
            let df = build.data_file(&h, id, a);
            let Some(facts) = df.facts else { continue };
            if df.compression != Compression::None && df.table.is_none() {
                continue;
            }
            let header_of = if df.full_table_from_own { build.dir_of(&id) } else { build.dir.clone() };
            out.push(Job {
                build: id,
                artifact: a,
                name: format!("{id}/{}{}", a.data_name(), df.compression.suffix()),
                path: df.path,
                compression: df.compression,
                table_from: df.full_table.as_ref().map(|_| (header_of.join(a.header_name()), id)),
                table_end_u: df.full_table.as_ref().map(|t| t.end_u()),
                file_size: df.file_size,
                sidecar: df.sidecar.and_then(|s| s.ok()),
                checksum: df.checksum,
                stored_len: facts.len,
            });
        }
    }
    out
}

/// Stream the data files of `builds` (each file once) and return per-build results.
pub fn verify(builds: &[&Build], progress: &dyn Progress) -> Outcome {
    let per_build: Vec<(BuildId, Vec<Job>)> = builds.iter().map(|b| (b.id, jobs(b))).collect();
    verify_jobs(per_build, progress)
}

/// Stream the data files of builds given as their [`jobs`] (so the builds themselves need not
/// be kept open) and return per-build results, in the order given.
pub fn verify_jobs(builds: Vec<(BuildId, Vec<Job>)>, progress: &dyn Progress) -> Outcome {
    let started = Instant::now();
    // Distinct files, and which builds read each.
    let mut files: Vec<Job> = Vec::new();
    let mut readers: Vec<Vec<usize>> = Vec::new();
    let mut index: std::collections::HashMap<PathBuf, usize> = std::collections::HashMap::new();
    let ids: Vec<BuildId> = builds.iter().map(|(id, _)| *id).collect();
    for (bi, (_, build_jobs)) in builds.into_iter().enumerate() {
        for j in build_jobs {
            match index.get(&j.path).copied() {
                Some(i) => {
                    let f = &mut files[i];
                    f.checksum = f.checksum.or(j.checksum);
                    f.file_size = f.file_size.or(j.file_size);
                    if !readers[i].contains(&bi) {
                        readers[i].push(bi);
                    }
                }
                None => {
                    index.insert(j.path.clone(), files.len());
                    files.push(j);
                    readers.push(vec![bi]);
                }
            }
        }
    }
    let total: u64 = files.iter().map(Job::expected_u).fold(0, u64::saturating_add);
    progress.start("verifying data (--deep)", total);
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].stored_len));
    let results: Vec<(usize, FileResult)> = order.par_iter().map(|&i| (i, stream(&files[i], progress))).collect();
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let mut by_file: Vec<Option<FileResult>> = vec![None; files.len()];
    for (i, r) in results {
        by_file[i] = Some(r);
    }
    let mut per_build: Vec<(BuildId, Vec<FileResult>, Vec<Finding>)> =
        ids.iter().map(|id| (*id, Vec::new(), Vec::new())).collect();
    let mut summary =
        Summary { files: files.len(), seconds, threads: rayon::current_num_threads(), ..Summary::default() };
    for (i, r) in by_file.into_iter().enumerate() {
        let Some(r) = r else { continue };
        summary.bytes_read = summary.bytes_read.saturating_add(r.bytes_read);
        summary.bytes_hashed = summary.bytes_hashed.saturating_add(r.bytes_hashed);
        for &bi in &readers[i] {
            let own = r.build == ids[bi];
            let label = if own {
                r.file.split_once('/').map_or(r.file.clone(), |(_, n)| n.to_string())
            } else {
                r.file.clone()
            };
            let entry = &mut per_build[bi];
            for (check, msg) in &r.problems {
                entry.2.push(Finding::new(check, Some(label.clone()), msg.clone()));
            }
            entry.1.push(r.clone());
        }
    }
    summary.mb_per_s = if seconds > 0.0 { summary.bytes_hashed as f64 / 1e6 / seconds } else { 0.0 };
    Outcome { per_build, summary }
}

/// Why producing a file's bytes stopped early.
enum Fault {
    Read(String),
    Frame { index: Option<u64>, kind: FrameErrorKind, message: String },
}

struct Produced {
    bytes_read: u64,
    frames: Option<u64>,
    partial_table: bool,
}

/// What the producer hands the hasher: bytes read, or a run of zeros (a hole, never read).
enum Piece {
    Data(Vec<u8>),
    Zeros(u64),
}

/// Read a job's frame table again from its header (so none is held while the job waits).
fn load_table(from: &(PathBuf, BuildId)) -> Result<FrameTable, String> {
    let bytes = crate::vocab::read_small(&from.0, header::MAX_HEADER_BYTES)
        .map_err(|e| format!("{}: {e}", from.0.display()))?
        .ok_or_else(|| format!("{} is gone", from.0.display()))?;
    let h = header::parse(&bytes).map_err(|e| format!("{}: {e}", from.0.display()))?;
    drop(bytes);
    h.build_info(&from.1)
        .map(|b| b.frames.clone())
        .filter(FrameTable::is_compressed)
        .ok_or_else(|| format!("{} no longer holds a frame table for {}", from.0.display(), from.1))
}

/// Where the next data at or after `off` starts, and where it ends (`SEEK_DATA`/`SEEK_HOLE`);
/// `(len, len)` when only a hole is left. Filesystems without them report all data.
fn data_extent(file: &File, off: u64, len: u64) -> (u64, u64) {
    use rustix::fs::{SeekFrom, seek};
    let start = match seek(file, SeekFrom::Data(off)) {
        Ok(d) => d.min(len),
        Err(rustix::io::Errno::NXIO) => return (len, len),
        Err(_) => return (off, len),
    };
    let end = seek(file, SeekFrom::Hole(start)).map_or(len, |h| h.min(len));
    (start, end.max(start))
}

/// Read (and decompress) `job` into `tx` in order, recycling buffers from `back`.
fn produce(
    job: &Job,
    tx: mpsc::SyncSender<Piece>,
    back: mpsc::Receiver<Vec<u8>>,
) -> Result<Produced, (Produced, Fault)> {
    let mut p = Produced { bytes_read: 0, frames: None, partial_table: false };
    let file = match crate::device::Blob::open(&job.path) {
        Ok(f) => f,
        Err(e) => return Err((p, Fault::Read(e.to_string()))),
    };
    let take = |size: usize| -> Vec<u8> {
        let mut b = back.try_recv().unwrap_or_default();
        b.resize(size, 0);
        b
    };
    let table = match (&job.compression, &job.table_from) {
        (Compression::None, _) | (_, None) => None,
        (_, Some(from)) => match load_table(from) {
            Ok(t) => Some(t),
            Err(e) => return Err((p, Fault::Read(format!("frame table: {e}")))),
        },
    };
    match (&job.compression, &table) {
        (Compression::None, _) | (_, None) => {
            let len = match file.size() {
                Ok(n) => n,
                Err(e) => return Err((p, Fault::Read(e.to_string()))),
            };
            let mut off = 0u64;
            while off < len {
                // A remote object has no holes to skip: it is streamed whole.
                let (start, end) = file.as_file().map_or((off, len), |f| data_extent(f, off, len));
                if start > off {
                    if tx.send(Piece::Zeros(start - off)).is_err() {
                        return Ok(p);
                    }
                    off = start;
                    continue;
                }
                while off < end {
                    let want = usize::try_from((end - off).min(CHUNK as u64)).unwrap_or(CHUNK);
                    let mut buf = take(want);
                    let n = match read_some(&file, &mut buf, off) {
                        Ok(n) => n,
                        Err(e) => return Err((p, Fault::Read(format!("at byte {off}: {e}")))),
                    };
                    if n == 0 {
                        // The file shrank while it was read.
                        return Ok(p);
                    }
                    buf.truncate(n);
                    off += n as u64;
                    p.bytes_read += n as u64;
                    if tx.send(Piece::Data(buf)).is_err() {
                        return Ok(p);
                    }
                }
            }
            Ok(p)
        }
        (c, Some(table)) if table.is_contiguous() => {
            let mut dec = FrameDecoder::new();
            let mut cbuf = Vec::new();
            let mut count = 0u64;
            for (i, f) in table.frames.iter().enumerate() {
                cbuf.resize(f.size_c as usize, 0);
                if let Err(e) = file.read_exact_at(&mut cbuf, f.start_c) {
                    p.frames = Some(count);
                    let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        format!("the file ends inside frame {i} (compressed bytes {}..{})", f.start_c, f.end_c())
                    } else {
                        format!("frame {i} at byte {}: {e}", f.start_c)
                    };
                    return Err((p, Fault::Read(why)));
                }
                p.bytes_read += u64::from(f.size_c);
                let mut out = take(0);
                if let Err(e) = dec.decode_into(*c, &cbuf, f.size_u as usize, &mut out) {
                    p.frames = Some(count);
                    return Err((
                        p,
                        Fault::Frame {
                            index: Some(i as u64),
                            kind: e.kind,
                            message: format!(
                                "frame {i} (compressed bytes {}..{}, uncompressed {}..{}): {}",
                                f.start_c,
                                f.end_c(),
                                f.start_u,
                                f.end_u(),
                                e.message
                            ),
                        },
                    ));
                }
                count += 1;
                if tx.send(Piece::Data(out)).is_err() {
                    break;
                }
            }
            p.frames = Some(count);
            Ok(p)
        }
        (c, Some(_)) => {
            // Only a trimmed table is known: decode the file as a stream of frames.
            p.partial_table = true;
            let mut counted = CountingReader { file: &file, pos: 0 };
            let mut sink = |b: &[u8]| -> std::io::Result<()> {
                let mut buf = take(0);
                buf.extend_from_slice(b);
                tx.send(Piece::Data(buf)).map_err(|_| std::io::Error::other("hasher stopped"))
            };
            let res = compress::decode_stream(*c, &mut counted, &mut sink);
            p.bytes_read = counted.pos;
            match res {
                Ok(_) => Ok(p),
                Err(e) => Err((p, Fault::Frame { index: None, kind: e.kind, message: e.message })),
            }
        }
    }
}

struct CountingReader<'a> {
    file: &'a crate::device::Blob,
    pos: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_some(f: &crate::device::Blob, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Zeros hashed in place of a hole.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Stream one file: a producer thread reads and decompresses, this thread counts the bytes and,
/// when the header records a SHA-256 to compare with, hashes them.
fn stream(job: &Job, progress: &dyn Progress) -> FileResult {
    let (tx, rx) = mpsc::sync_channel::<Piece>(QUEUE);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let hash = job.checksum.is_some();
    let mut sha = Sha256::new();
    let mut hashed = 0u64;
    let produced = std::thread::scope(|s| {
        let producer = s.spawn(move || produce(job, tx, back_rx));
        for piece in rx {
            match piece {
                Piece::Data(buf) => {
                    if hash {
                        sha.update(&buf);
                    }
                    hashed = hashed.saturating_add(buf.len() as u64);
                    progress.inc(buf.len() as u64);
                    let _ = back_tx.send(buf);
                }
                Piece::Zeros(n) => {
                    if hash {
                        let mut left = n;
                        while left > 0 {
                            let k = usize::try_from(left.min(ZEROS.len() as u64)).unwrap_or(ZEROS.len());
                            sha.update(&ZEROS[..k]);
                            left -= k as u64;
                        }
                    }
                    hashed = hashed.saturating_add(n);
                    progress.inc(n);
                }
            }
        }
        producer.join()
    });
    let mut problems: Vec<(&'static Check, String)> = Vec::new();
    let (p, fault) = match produced {
        Ok(Ok(p)) => (p, None),
        Ok(Err((p, f))) => (p, Some(f)),
        Err(_) => (
            Produced { bytes_read: 0, frames: None, partial_table: false },
            Some(Fault::Read("reader thread failed".into())),
        ),
    };
    if p.partial_table {
        problems.push((
            &data::PARTIAL_FRAME_TABLE,
            format!("no untrimmed frame table for {}: decoded as a stream of frames", job.name),
        ));
    }
    let complete = fault.is_none();
    match fault {
        None => {}
        Some(Fault::Read(m)) => problems.push((&data::READ_ERROR, format!("{}: {m}", job.name))),
        Some(Fault::Frame { index, kind, message }) => {
            let check = match kind {
                FrameErrorKind::Checksum => &data::FRAME_CHECKSUM,
                FrameErrorKind::Size => &data::FRAME_SIZE,
                FrameErrorKind::Corrupt => &data::FRAME_CORRUPT,
            };
            let rest = match index {
                Some(_) => "; the frames after it were not checked",
                None => "",
            };
            problems.push((check, format!("{message}{rest}")));
        }
    }
    let digest: Option<[u8; 32]> = (complete && hash).then(|| sha.finalize().into());
    if complete {
        if let Some(size) = job.file_size
            && hashed != size
        {
            problems.push((
                &data::LENGTH_MISMATCH,
                format!("{} holds {hashed} uncompressed bytes, the header says {size}", job.name),
            ));
        }
        if let Some(side) = job.sidecar
            && hashed != side
            && job.file_size != Some(side)
        {
            problems.push((
                &data::LENGTH_MISMATCH,
                format!("{} holds {hashed} uncompressed bytes, its .uncompressed-size sidecar says {side}", job.name),
            ));
        }
    }
    match (job.checksum, digest) {
        (Some(want), Some(got)) if want != got => problems.push((
            &data::CHECKSUM_MISMATCH,
            format!("SHA-256 of {} is {}, the header records {}", job.name, hex(&got), hex(&want)),
        )),
        (None, None) if complete => problems.push((
            &data::NO_CHECKSUM,
            format!(
                "{}: no SHA-256 in the headers; every allocated byte read, length{} checked",
                job.name,
                if job.table_from.is_some() { " and frames" } else { "" }
            ),
        )),
        _ => {}
    }
    let ok = problems.iter().all(|(c, _)| c.severity == crate::report::Severity::Info);
    FileResult {
        file: job.name.clone(),
        compression: job.compression,
        bytes_read: p.bytes_read,
        bytes_hashed: hashed,
        frames: p.frames,
        complete,
        sha256: digest.map(|d| hex(&d)),
        expected_sha256: job.checksum.map(|c| hex(&c)),
        ok,
        problems,
        build: job.build,
    }
}
