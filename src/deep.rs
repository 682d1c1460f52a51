//! `verify --deep`: stream every data file a build depends on and check it against its headers
//! (reference: e2b-formats.md §7): its uncompressed length against the builds section's size and
//! the Local provider's `.uncompressed-size` sidecar, every compressed frame against the frame
//! table (size, and the frame's own zstd/LZ4 checksum), and, where a V4/V5 header records a
//! non-zero SHA-256, the digest of the uncompressed bytes.
//!
//! Throughput: files are hashed in parallel (rayon, largest first), and within each file a
//! producer thread reads and decompresses while the consumer hashes, so the two cores of a node
//! both work even on one file. Memory is bounded: a few buffers of one read chunk (1 MiB) or one
//! frame (at most [`crate::header::MAX_FRAME_U`]) per file in flight, whatever the file size.
//! A file shared by several builds (a common ancestor) is read once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::build::{Artifact, Build};
use crate::checks::data;
use crate::compress::{self, Compression, FrameDecoder, FrameErrorKind};
use crate::header::{FrameTable, hex};
use crate::progress::Progress;
use crate::report::{Check, Finding};
use crate::storage::BuildId;

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
    /// The most complete frame table known (compressed files).
    pub table: Option<Arc<FrameTable>>,
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
        self.file_size
            .or(self.sidecar)
            .or(self.table.as_ref().map(|t| t.end_u()))
            .unwrap_or(if self.compression == Compression::None { self.stored_len } else { 0 })
    }
}

/// What streaming one file showed.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// `<build-id>/<name>`.
    pub file: String,
    pub compression: Compression,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Uncompressed bytes hashed.
    pub bytes_hashed: u64,
    /// Frames decompressed (compressed files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// SHA-256 of the uncompressed bytes (absent when the file could not be read to its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 the header records, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    /// Length, frames and (when recorded) digest all agree.
    pub ok: bool,
    #[serde(skip)]
    problems: Vec<(&'static Check, String)>,
    #[serde(skip)]
    build: BuildId,
}

/// Totals of a deep pass.
#[derive(Debug, Clone, Default, Serialize)]
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
            out.push(Job {
                build: id,
                artifact: a,
                name: format!("{id}/{}{}", a.data_name(), df.compression.suffix()),
                path: df.path,
                compression: df.compression,
                table: df.full_table,
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
    let started = Instant::now();
    // Distinct files, and which builds read each.
    let mut files: Vec<Job> = Vec::new();
    let mut readers: Vec<Vec<usize>> = Vec::new();
    for (bi, b) in builds.iter().enumerate() {
        for j in jobs(b) {
            match files.iter().position(|f| f.path == j.path) {
                Some(i) => {
                    let f = &mut files[i];
                    f.checksum = f.checksum.or(j.checksum);
                    f.file_size = f.file_size.or(j.file_size);
                    if !readers[i].contains(&bi) {
                        readers[i].push(bi);
                    }
                }
                None => {
                    files.push(j);
                    readers.push(vec![bi]);
                }
            }
        }
    }
    let total: u64 = files.iter().map(Job::expected_u).sum();
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
        builds.iter().map(|b| (b.id, Vec::new(), Vec::new())).collect();
    let mut summary =
        Summary { files: files.len(), seconds, threads: rayon::current_num_threads(), ..Summary::default() };
    for (i, r) in by_file.into_iter().enumerate() {
        let Some(r) = r else { continue };
        summary.bytes_read += r.bytes_read;
        summary.bytes_hashed += r.bytes_hashed;
        for &bi in &readers[i] {
            let own = r.build == builds[bi].id;
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

/// Read (and decompress) `job` into `tx` in order, recycling buffers from `back`.
fn produce(
    job: &Job,
    tx: mpsc::SyncSender<Vec<u8>>,
    back: mpsc::Receiver<Vec<u8>>,
) -> Result<Produced, (Produced, Fault)> {
    let file = match File::open(&job.path) {
        Ok(f) => f,
        Err(e) => {
            return Err((Produced { bytes_read: 0, frames: None, partial_table: false }, Fault::Read(e.to_string())));
        }
    };
    let take = |size: usize| -> Vec<u8> {
        let mut b = back.try_recv().unwrap_or_default();
        b.resize(size, 0);
        b
    };
    let mut p = Produced { bytes_read: 0, frames: None, partial_table: false };
    match (&job.compression, &job.table) {
        (Compression::None, _) | (_, None) => {
            let mut off = 0u64;
            loop {
                let mut buf = take(CHUNK);
                let n = match read_some(&file, &mut buf, off) {
                    Ok(n) => n,
                    Err(e) => return Err((p, Fault::Read(format!("at byte {off}: {e}")))),
                };
                if n == 0 {
                    return Ok(p);
                }
                buf.truncate(n);
                off += n as u64;
                p.bytes_read = off;
                if tx.send(buf).is_err() {
                    return Ok(p);
                }
            }
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
                if tx.send(out).is_err() {
                    break;
                }
            }
            p.frames = Some(count);
            Ok(p)
        }
        (c, Some(_)) => {
            // Only a trimmed table is known: decode the file as a stream of frames.
            p.partial_table = true;
            let reader = CountingReader { file: &file, pos: 0 };
            let mut counted = reader;
            let mut sink = |b: &[u8]| -> std::io::Result<()> {
                let mut buf = take(0);
                buf.extend_from_slice(b);
                tx.send(buf).map_err(|_| std::io::Error::other("hasher stopped"))
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
    file: &'a File,
    pos: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_some(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
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

/// Stream one file: a producer thread reads and decompresses, this thread hashes.
fn stream(job: &Job, progress: &dyn Progress) -> FileResult {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let mut sha = Sha256::new();
    let mut hashed = 0u64;
    let produced = std::thread::scope(|s| {
        let producer = s.spawn(move || produce(job, tx, back_rx));
        for buf in rx {
            sha.update(&buf);
            hashed += buf.len() as u64;
            progress.inc(buf.len() as u64);
            let _ = back_tx.send(buf);
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
    let digest: Option<[u8; 32]> = complete.then(|| sha.finalize().into());
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
        (None, Some(_)) => problems.push((
            &data::NO_CHECKSUM,
            format!(
                "{}: no SHA-256 in the headers; length{} checked",
                job.name,
                if job.table.is_some() { " and frames" } else { "" }
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
        sha256: digest.map(|d| hex(&d)),
        expected_sha256: job.checksum.map(|c| hex(&c)),
        ok,
        problems,
        build: job.build,
    }
}
