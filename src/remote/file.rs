//! [`RemoteFile`]: positional reads of one object through a bounded block cache.
//!
//! This is what a `Device` reads an image through, so the header decides which ranges are
//! fetched: a read is rounded out to whole blocks, blocks already cached cost nothing, and the
//! missing ones are fetched with as few ranged GETs as possible (adjacent misses are one GET;
//! separate runs are fetched in parallel). Blocks are small (64 KiB) so that a path walk through
//! an ext4 image fetches about what it reads; sequential reading is detected and pulls a
//! readahead window into the same GET that starts at one block and doubles with each sequential
//! miss up to `readahead_blocks` (a stream soon reads in 4 MiB GETs, two adjacent 4 KiB reads of
//! a walk do not); [`RemoteFile::prefetch`] fetches ranges the caller knows it will need (e.g.
//! every mapping of a header) ahead of time.
//!
//! Memory is bounded: at most `max_blocks` blocks stay cached (least recently used goes first;
//! each block owns its bytes, so a cached block never keeps a larger GET's buffer alive), plus
//! the blocks of reads in progress.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use super::error::{Error, Result};
use super::store::{ObjectInfo, Store};

/// Block cache settings of a [`RemoteFile`].
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Fetch granularity in bytes (default 64 KiB; at least 4 KiB). Small, so that the scattered
    /// reads of a path walk (superblock, group descriptors, inode tables, directory blocks) each
    /// fetch little more than they read; sequential reads get large GETs from the readahead.
    /// (Until 2026-11 this was 1 MiB: following `/sbin/init` in a 4 GiB V3 rootfs fetched 4 MiB.)
    pub block_size: u64,
    /// Blocks kept (default 512, so 32 MiB with the default block size).
    pub max_blocks: usize,
    /// Most blocks fetched by one GET (default 128, 8 MiB). Longer runs become several GETs in
    /// parallel.
    pub max_blocks_per_request: usize,
    /// Largest readahead window in blocks (default 64, 4 MiB): while reads are sequential, a miss
    /// also fetches the next blocks, `readahead_first_blocks` at first, twice as many at each
    /// further sequential miss.
    pub readahead_blocks: usize,
    /// The first readahead window in blocks (default 1, 64 KiB).
    pub readahead_first_blocks: usize,
    /// Two runs of missing blocks separated by at most this many cached blocks are fetched by
    /// one GET, the cached ones again (default 4, 256 KiB: less than a round trip costs).
    pub max_gap_blocks: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            block_size: 64 << 10,
            max_blocks: 512,
            max_blocks_per_request: 128,
            readahead_blocks: 64,
            readahead_first_blocks: 1,
            max_gap_blocks: 4,
        }
    }
}

impl CacheConfig {
    /// The same byte budgets (cache, GET, readahead, gap) in blocks of `block_size` bytes.
    pub fn with_block_size(&self, block_size: u64) -> CacheConfig {
        let scale = |blocks: usize| {
            let bytes = crate::num::u64_from(blocks).saturating_mul(self.block_size);
            crate::num::usize_from(bytes / block_size.max(1)).max(usize::from(blocks > 0))
        };
        CacheConfig {
            block_size,
            max_blocks: scale(self.max_blocks),
            max_blocks_per_request: scale(self.max_blocks_per_request),
            readahead_blocks: scale(self.readahead_blocks),
            readahead_first_blocks: scale(self.readahead_first_blocks),
            max_gap_blocks: scale(self.max_gap_blocks),
        }
    }

    /// For a compressed data object (`.zstd`, `.lz4`): 16 KiB blocks. Its frames are fetched by
    /// the compressed range a read needs (a frame's prefix, in one GET), so small blocks keep the
    /// rounding at the range's two ends small (following `/sbin/init` in a 4 GiB zstd layer
    /// fetches 1.43 MB, against 1.34 MB that no reader can go below; bench/results.md).
    pub fn for_compressed(&self) -> CacheConfig {
        self.with_block_size(self.block_size.min(16 << 10))
    }
}

/// What a [`RemoteFile`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// `read_exact_at` calls.
    pub reads: u64,
    /// Blocks a read found in the cache.
    pub block_hits: u64,
    /// Blocks fetched (reads, readahead and prefetch).
    pub blocks_fetched: u64,
    /// Ranged GETs sent (one per run of adjacent blocks).
    pub fetches: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
}

#[derive(Debug, Default)]
struct State {
    /// block index → (last use, bytes)
    blocks: HashMap<u64, (u64, Bytes)>,
    tick: u64,
    /// End of the previous read, to detect sequential reading.
    last_end: Option<u64>,
    /// Blocks the last sequential miss read ahead (0: reads are not sequential).
    window: u64,
    stats: CacheStats,
}

/// One object, readable at any offset. Safe to share between threads (`&self` reads); two
/// threads missing the same block at the same moment may both fetch it.
#[derive(Debug)]
pub struct RemoteFile {
    store: Store,
    info: ObjectInfo,
    cfg: CacheConfig,
    state: Mutex<State>,
}

impl RemoteFile {
    /// Open `key` (one HEAD for its size and ETag).
    pub fn open(store: &Store, key: &str, cfg: CacheConfig) -> Result<RemoteFile> {
        let info = store.head(key)?;
        RemoteFile::from_info(store, info, cfg)
    }

    /// Open an object whose size and ETag are already known (from a HEAD or a listing), without
    /// a request.
    pub fn from_info(store: &Store, info: ObjectInfo, cfg: CacheConfig) -> Result<RemoteFile> {
        if cfg.block_size < 4096 || cfg.block_size > 64 << 20 || cfg.max_blocks == 0 || cfg.max_blocks_per_request == 0
        {
            return Err(Error::Config {
                store: store.object_url(&info.key),
                reason: "block_size must be 4 KiB..64 MiB, max_blocks and max_blocks_per_request at least 1".into(),
            });
        }
        Ok(RemoteFile { store: store.clone(), info, cfg, state: Mutex::new(State::default()) })
    }

    /// Size of the object in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// The key, size, ETag and metadata it was opened with.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (entries are inserted whole).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fill `buf` with the object's bytes at `offset`. A read past the end is
    /// [`Error::PastEnd`]; a store that answers with fewer bytes is [`Error::ShortRead`]; an
    /// object replaced since it was opened is [`Error::Changed`].
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        let end = offset.checked_add(len).filter(|e| *e <= self.info.size).ok_or_else(|| Error::PastEnd {
            object: self.store.object_url(&self.info.key),
            offset,
            len,
            size: self.info.size,
        })?;
        if len == 0 {
            return Ok(());
        }
        let bs = self.cfg.block_size;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let last_block = (self.info.size - 1) / bs;
        let (have, missing) = {
            let mut st = self.lock();
            st.stats.reads += 1;
            let sequential = st.last_end == Some(offset);
            st.last_end = Some(end);
            let mut have = HashMap::new();
            let mut missing = Vec::new();
            for b in first..=last {
                match st.blocks.get(&b) {
                    Some((_, bytes)) => {
                        have.insert(b, bytes.clone());
                    }
                    None => missing.push(b),
                }
            }
            st.stats.block_hits += have.len() as u64;
            // Sequential and missing something: read ahead in the same request, a window that
            // doubles while the reads stay sequential.
            if !sequential {
                st.window = 0;
            } else if !missing.is_empty() && self.cfg.readahead_blocks > 0 {
                let first = self.cfg.readahead_first_blocks.clamp(1, self.cfg.readahead_blocks) as u64;
                let window = (st.window * 2).clamp(first, self.cfg.readahead_blocks as u64);
                st.window = window;
                let ahead =
                    (last + 1..=last.saturating_add(window).min(last_block)).filter(|b| !st.blocks.contains_key(b));
                missing.extend(ahead);
            }
            (have, missing)
        };
        let fetched = self.fetch_blocks(&missing)?;
        let mut pos = offset;
        let mut out = 0usize;
        while pos < end {
            let b = pos / bs;
            let block =
                have.get(&b).or_else(|| fetched.get(&b)).expect("every block of the read was fetched or cached");
            let in_block = crate::num::usize_from(pos - b * bs);
            let n = crate::num::usize_from(end - pos).min(block.len() - in_block);
            buf[out..out + n].copy_from_slice(&block[in_block..in_block + n]);
            out += n;
            pos += n as u64;
        }
        let mut st = self.lock();
        st.tick += 1;
        let t = st.tick;
        for b in have.keys() {
            if let Some(e) = st.blocks.get_mut(b) {
                e.0 = t;
            }
        }
        self.insert(&mut st, fetched, t);
        Ok(())
    }

    /// Fetch the blocks covering `ranges` now (coalesced, in parallel), so later reads of them
    /// hit the cache. Only as much as the cache holds is kept; ranges past the end are clipped.
    pub fn prefetch(&self, ranges: &[Range<u64>]) -> Result<()> {
        let bs = self.cfg.block_size;
        let size = self.info.size;
        let mut want: Vec<u64> = Vec::new();
        {
            let st = self.lock();
            for r in ranges {
                let (start, end) = (r.start.min(size), r.end.min(size));
                if start >= end {
                    continue;
                }
                want.extend((start / bs..=(end - 1) / bs).filter(|b| !st.blocks.contains_key(b)));
            }
        }
        want.sort_unstable();
        want.dedup();
        want.truncate(self.cfg.max_blocks);
        let fetched = self.fetch_blocks(&want)?;
        let mut st = self.lock();
        st.tick += 1;
        let t = st.tick;
        self.insert(&mut st, fetched, t);
        Ok(())
    }

    fn insert(&self, st: &mut State, fetched: HashMap<u64, Bytes>, tick: u64) {
        for (b, bytes) in fetched {
            st.blocks.insert(b, (tick, bytes));
        }
        while st.blocks.len() > self.cfg.max_blocks {
            let Some(oldest) = st.blocks.iter().min_by_key(|(_, (t, _))| *t).map(|(b, _)| *b) else { break };
            st.blocks.remove(&oldest);
        }
    }

    /// Fetch `blocks` (any order): runs of adjacent blocks become one ranged GET each (at most
    /// `max_blocks_per_request` blocks), all runs in parallel.
    fn fetch_blocks(&self, blocks: &[u64]) -> Result<HashMap<u64, Bytes>> {
        let mut out = HashMap::new();
        if blocks.is_empty() {
            return Ok(out);
        }
        let mut sorted = blocks.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let bs = self.cfg.block_size;
        let size = self.info.size;
        let gap = self.cfg.max_gap_blocks as u64;
        let mut runs: Vec<(u64, u64)> = Vec::new(); // (first block, count)
        for b in sorted {
            match runs.last_mut() {
                // Extend the run over a small gap (cached blocks fetched again).
                Some((f, n)) if b - (*f + *n) <= gap && (b - *f) < self.cfg.max_blocks_per_request as u64 => {
                    *n = b - *f + 1
                }
                _ => runs.push((b, 1)),
            }
        }
        let ranges: Vec<Range<u64>> = runs.iter().map(|&(f, n)| f * bs..((f + n) * bs).min(size)).collect();
        let got = self.store.read_ranges(&self.info.key, &ranges, self.info.etag.as_deref())?;
        let mut st = self.lock();
        st.stats.fetches += ranges.len() as u64;
        for ((first, n), bytes) in runs.into_iter().zip(got) {
            st.stats.bytes_fetched += bytes.len() as u64;
            st.stats.blocks_fetched += n;
            for i in 0..n {
                let start = crate::num::usize_from(i * bs);
                let stop = crate::num::usize_from((i + 1) * bs).min(bytes.len());
                // A slice would keep the whole GET's buffer (up to max_blocks_per_request blocks)
                // alive while any one of its blocks stays cached; a copy keeps the cache within
                // max_blocks × block_size.
                let block = if n == 1 { bytes.slice(start..stop) } else { Bytes::copy_from_slice(&bytes[start..stop]) };
                out.insert(first + i, block);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use crate::remote::{Config, Env, ErrorKind, Location};

    fn setup(size: usize) -> (tempfile::TempDir, Store, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/memfile"), &data).unwrap();
        let store =
            Store::open(&Location::Local { path: dir.path().into() }, &Env::empty(), &Config::default()).unwrap();
        (dir, store, data)
    }

    fn small() -> CacheConfig {
        CacheConfig {
            block_size: 4096,
            max_blocks: 4,
            max_blocks_per_request: 3,
            readahead_blocks: 2,
            readahead_first_blocks: 1,
            max_gap_blocks: 0,
        }
    }

    #[test]
    fn reads_match_the_object_and_the_cache_is_bounded() {
        let (_d, store, data) = setup(64 * 1024 + 100);
        let f = RemoteFile::open(&store, "b/memfile", small()).unwrap();
        for (off, len) in [(0usize, 10usize), (4090, 20), (8192, 4096), (65530, 106), (100, 30000)] {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf, data[off..off + len], "read {len} at {off}");
            assert!(f.lock().blocks.len() <= 4);
        }
        let e = f.read_exact_at(&mut [0u8; 2], data.len() as u64 - 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Truncated);
        assert!(matches!(e, Error::PastEnd { .. }));
    }

    #[test]
    fn hits_cost_nothing_and_adjacent_misses_are_one_fetch() {
        let (_d, store, _data) = setup(64 * 1024);
        let f = RemoteFile::open(&store, "b/memfile", small()).unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!((f.stats().fetches, f.stats().blocks_fetched), (1, 3));
        f.read_exact_at(&mut buf[..100], 5000).unwrap();
        assert_eq!(f.stats().fetches, 1);
        assert_eq!(f.stats().block_hits, 1);
    }

    #[test]
    fn sequential_reads_read_ahead() {
        let (_d, store, data) = setup(64 * 1024);
        let f = RemoteFile::open(&store, "b/memfile", small()).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1024];
        for off in (0..data.len()).step_by(1024) {
            f.read_exact_at(&mut buf, off as u64).unwrap();
            out.extend_from_slice(&buf);
        }
        assert_eq!(out, data);
        // 16 blocks: the first miss is not sequential (1 block); then each miss brings its block
        // and a window of 1, then 2 (the cap) more: 1 + 2 + 3 + 3 + 3 + 3 + 1.
        let s = f.stats();
        assert_eq!(s.blocks_fetched, 16);
        assert_eq!(s.fetches, 7, "{s:?}");
    }

    #[test]
    fn smaller_blocks_keep_the_byte_budgets() {
        let d = CacheConfig::default();
        let c = d.for_compressed();
        assert_eq!(c.block_size, 16 << 10);
        for (blocks, of) in [
            (c.max_blocks, d.max_blocks),
            (c.max_blocks_per_request, d.max_blocks_per_request),
            (c.readahead_blocks, d.readahead_blocks),
            (c.readahead_first_blocks, d.readahead_first_blocks),
            (c.max_gap_blocks, d.max_gap_blocks),
        ] {
            assert_eq!(blocks as u64 * c.block_size, of as u64 * d.block_size);
        }
        // Already small blocks stay; a zero (readahead off) stays zero.
        let off = CacheConfig { readahead_blocks: 0, ..small() };
        assert_eq!(off.for_compressed().block_size, 4096);
        assert_eq!(off.with_block_size(8192).readahead_blocks, 0);
    }

    #[test]
    fn the_first_readahead_window_is_configurable() {
        let (_d, store, _data) = setup(64 * 1024);
        let cfg = CacheConfig { readahead_blocks: 4, readahead_first_blocks: 3, max_blocks: 16, ..small() };
        let f = RemoteFile::open(&store, "b/memfile", cfg).unwrap();
        let mut buf = [0u8; 4096];
        f.read_exact_at(&mut buf, 0).unwrap();
        f.read_exact_at(&mut buf, 4096).unwrap();
        // The second read is sequential: its block and 3 ahead; the next miss (block 5, after
        // three hits) doubles the window to 6, capped at 4.
        assert_eq!(f.stats().blocks_fetched, 1 + 1 + 3);
        for b in 2..=5 {
            f.read_exact_at(&mut buf, b * 4096).unwrap();
        }
        assert_eq!(f.stats().blocks_fetched, 5 + 1 + 4);
    }

    #[test]
    fn small_gaps_are_fetched_again_instead_of_split() {
        let (_d, store, data) = setup(64 * 1024);
        for (gap, fetches) in [(0, 2), (1, 1)] {
            let f = RemoteFile::open(&store, "b/memfile", CacheConfig { max_gap_blocks: gap, ..small() }).unwrap();
            f.read_exact_at(&mut [0u8; 1], 4096).unwrap();
            let mut buf = vec![0u8; 3 * 4096];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, data[..3 * 4096]);
            assert_eq!(f.stats().fetches, 1 + fetches, "gap {gap}");
        }
    }

    #[test]
    fn prefetch_fills_the_cache() {
        let (_d, store, _data) = setup(64 * 1024);
        let f = RemoteFile::open(&store, "b/memfile", small()).unwrap();
        f.prefetch(&[0..10, 20000..20001, 40000..50000]).unwrap();
        let before = f.stats();
        assert_eq!(before.blocks_fetched, 4, "capped at max_blocks: {before:?}");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 5).unwrap();
        f.read_exact_at(&mut b, 20000).unwrap();
        assert_eq!(f.stats().fetches, before.fetches);
    }

    #[test]
    fn a_shrunken_object_is_a_short_read() {
        let (d, store, _data) = setup(64 * 1024);
        let f = RemoteFile::open(&store, "b/memfile", small()).unwrap();
        std::fs::OpenOptions::new().write(true).open(d.path().join("b/memfile")).unwrap().set_len(10000).unwrap();
        let e = f.read_exact_at(&mut [0u8; 100], 20000).unwrap_err();
        assert!(matches!(e, Error::ShortRead { got: 0, .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::Truncated);
    }
}
