//! The remote storage layer (src/remote) against real servers started by the tests: moto (S3),
//! fake-gcs-server (GCS) and azurite (Azure Blob), reached through the same URLs and environment
//! variables an operator sets for E2B. Faults (503s, cut bodies, slow answers, injected 403s,
//! dropped connections) come from the loopback proxy in tests/common/servers.rs in front of the
//! real server. Request counts are measured by the store's own counters and asserted.
//!
//! GCS objects are seeded here through fake-gcs-server's JSON API (it serves object_store's XML
//! API uploads only for signed URLs); `tmpl copy` to `gs://` is tested in
//! tests/remote_commands.rs through an adapter (`Action::GcsXmlPut`). Not covered against a
//! server: GCS XML multipart uploads and virtual-hosted S3 addressing with a custom endpoint
//! (needs `bucket.host` DNS).
#![expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::servers::{self, Action, Emulator, FaultProxy, Server, server, unique_name};
use sha2::{Digest, Sha256};
use tmpl::remote::{
    AZURITE_ACCOUNT, AZURITE_KEY, CacheConfig, Config, Env, Error, ErrorKind, Location, Metadata, RemoteFile, Store,
    UNCOMPRESSED_SIZE_KEY, parse_storage_url, resolve,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    S3,
    Gcs,
    Azure,
}

/// A fresh bucket (container) on the provider's server.
struct Bucket {
    p: P,
    server: &'static Server,
    name: String,
}

fn bucket(p: P) -> Option<Bucket> {
    let e = match p {
        P::S3 => Emulator::Moto,
        P::Gcs => Emulator::FakeGcs,
        P::Azure => Emulator::Azurite,
    };
    let server = server(e)?;
    let name = unique_name("b");
    match p {
        P::S3 => servers::s3_create_bucket(server.port, &name),
        P::Gcs => servers::gcs_create_bucket(server.port, &name),
        P::Azure => servers::azure_create_container(server.port, &name),
    }
    Some(Bucket { p, server, name })
}

/// Settings for tests: short backoffs, small parts.
fn config() -> Config {
    Config {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        init_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        part_size: 5 << 20,
        stream_chunk: 4 << 20,
        ..Config::default()
    }
}

/// Settings for fault tests: a 500 ms idle timeout.
fn fault_config() -> Config {
    Config { read_timeout: Duration::from_millis(500), ..config() }
}

fn connection_string(endpoint: &str, key: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
}

impl Bucket {
    /// The storage URL an operator would write for this bucket behind `endpoint`.
    fn location(&self, endpoint: &str) -> Location {
        let url = match self.p {
            P::S3 => format!("s3://{}?endpoint={endpoint}&s3ForcePathStyle=true&region=us-east-1", self.name),
            P::Gcs => format!("gs://{}", self.name),
            P::Azure => format!("azblob://{}", self.name),
        };
        parse_storage_url(&url).unwrap()
    }

    /// The credentials environment for `endpoint`; metadata-server fallbacks point at a closed
    /// loopback port.
    fn env(&self, endpoint: &str) -> Env {
        let closed = format!("http://127.0.0.1:{}", servers::closed_port());
        match self.p {
            P::S3 => Env::from_pairs([
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_METADATA_ENDPOINT", closed.as_str()),
            ]),
            P::Gcs => Env::from_pairs([("STORAGE_EMULATOR_HOST", endpoint)]),
            P::Azure => Env::from_pairs([
                ("AZURE_STORAGE_CONNECTION_STRING", connection_string(endpoint, AZURITE_KEY)),
                ("IDENTITY_ENDPOINT", format!("{closed}/metadata/identity/oauth2/token")),
            ]),
        }
    }

    fn store_at(&self, endpoint: &str, cfg: &Config) -> Store {
        Store::open(&self.location(endpoint), &self.env(endpoint), cfg).unwrap()
    }

    fn store(&self) -> Store {
        self.store_at(&self.server.endpoint(), &config())
    }

    /// Put an object there (GCS through the emulator's JSON API, the others through the store).
    fn seed(&self, key: &str, data: &[u8], meta: &[(&str, &str)]) {
        match self.p {
            P::Gcs => servers::gcs_seed(self.server.port, &self.name, key, data, meta),
            _ => {
                let m: Metadata = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                self.store().put(key, data, &m).unwrap();
            }
        }
    }
}

/// Deterministic pseudo-random bytes.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

macro_rules! per_provider {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn s3() {
                super::$name(super::P::S3)
            }
            #[test]
            fn gcs() {
                super::$name(super::P::Gcs)
            }
            #[test]
            fn azure() {
                super::$name(super::P::Azure)
            }
        }
    )*};
}

per_provider!(
    reads_lists_and_metadata,
    short_reads,
    not_found,
    block_cache_request_counts,
    faults,
    replaced_while_reading
);

/// head (size, ETag, E2B's uncompressed-size metadata in each provider's spelling), exact ranged
/// reads, listings, whole small objects; one request per HEAD.
fn reads_lists_and_metadata(p: P) {
    let Some(b) = bucket(p) else { return };
    let store = b.store();
    let mem = data((1 << 20) + 123, 1);
    b.seed("b1/memfile.zstd", &mem, &[(UNCOMPRESSED_SIZE_KEY, "4194304"), ("build-origin", "tmpl-test")]);
    b.seed("b1/metadata.json", br#"{"version":4}"#, &[]);
    b.seed("b2/snapfile", b"snap", &[]);

    let before = store.stats();
    let i = store.head("b1/memfile.zstd").unwrap();
    let d = store.stats().since(&before);
    assert_eq!((d.requests, d.head, d.operations), (1, 1, 1), "{p:?}: one HEAD: {d:?}");
    assert_eq!(i.size, mem.len() as u64);
    assert_eq!(i.uncompressed_size(), Some(4_194_304), "{p:?}: metadata {:?}", i.metadata);
    assert_eq!(i.metadata.get("build-origin").map(String::as_str), Some("tmpl-test"));
    assert!(i.etag.is_some() && i.last_modified.is_some(), "{i:?}");
    assert_eq!(store.head("b1/metadata.json").unwrap().uncompressed_size(), None);

    let before = store.stats();
    assert_eq!(store.read_range("b1/memfile.zstd", 1000..5096).unwrap(), mem[1000..5096]);
    let d = store.stats().since(&before);
    assert_eq!((d.get, d.bytes_read), (1, 4096), "{d:?}");
    let n = mem.len() as u64;
    let ranges = [0..10, 500_000..500_100, n - 5..n];
    let got = store.read_ranges("b1/memfile.zstd", &ranges, i.etag.as_deref()).unwrap();
    for (r, g) in ranges.iter().zip(&got) {
        assert_eq!(g[..], mem[r.start as usize..r.end as usize]);
    }

    let mut listed: Vec<(String, u64)> = store.list("b1").unwrap().into_iter().map(|o| (o.key, o.size)).collect();
    listed.sort();
    assert_eq!(listed, [("b1/memfile.zstd".to_string(), n), ("b1/metadata.json".to_string(), 13)]);
    assert_eq!(store.list("").unwrap().len(), 3);
    assert_eq!(store.list_dirs("").unwrap(), ["b1", "b2"]);
    assert_eq!(store.read_all("b1/metadata.json", 1024).unwrap(), br#"{"version":4}"#);
    let e = store.read_all("b1/memfile.zstd", 1024).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

/// object_store clamps a range past the end without an error; the store turns it into
/// `ShortRead` (kind truncated). A range starting at the end (416) is a short read of 0 bytes.
fn short_reads(p: P) {
    let Some(b) = bucket(p) else { return };
    let store = b.store();
    b.seed("s/rootfs.ext4", &data(1000, 2), &[]);
    let e = store.read_range("s/rootfs.ext4", 990..1010).unwrap_err();
    assert!(matches!(e, Error::ShortRead { expected: 20, got: 10, offset: 990, .. }), "{p:?}: {e}");
    assert_eq!(e.kind(), ErrorKind::Truncated);
    let e = store.read_range("s/rootfs.ext4", 1000..1010).unwrap_err();
    assert!(matches!(e, Error::ShortRead { got: 0, .. }), "{p:?}: {e}");
    let f = RemoteFile::open(&store, "s/rootfs.ext4", CacheConfig::default()).unwrap();
    let e = f.read_exact_at(&mut [0u8; 10], 995).unwrap_err();
    assert!(matches!(e, Error::PastEnd { size: 1000, .. }), "{e}");
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 990).unwrap();
    assert_eq!(buf[..], data(1000, 2)[990..]);
}

/// A missing object (or bucket) is `NotFound` at once: one request, no retries.
fn not_found(p: P) {
    let Some(b) = bucket(p) else { return };
    let store = b.store();
    let before = store.stats();
    let e = store.head("00000000-0000-4000-8000-000000000000/memfile").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
    assert!(e.to_string().contains(&format!("/{}/00000000-0000-4000-8000-000000000000/memfile", b.name)), "{e}");
    assert_eq!(store.stats().since(&before).requests, 1);
    assert_eq!(store.read_range("x/memfile", 0..10).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(RemoteFile::open(&store, "x/memfile", CacheConfig::default()).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.head_if_exists("x/memfile").unwrap(), None);
    let gone = Bucket { p, server: b.server, name: unique_name("missing") };
    assert_eq!(gone.store().head("x/memfile").unwrap_err().kind(), ErrorKind::NotFound, "{p:?}: missing bucket");
}

/// The measurement behind `RemoteFile`: scattered 4 KiB reads of a 32 MiB object cost one GET
/// per distinct 1 MiB block and nothing when repeated; sequential reading needs a GET every 9
/// blocks; a prefetch of scattered ranges costs one GET per run of adjacent blocks.
fn block_cache_request_counts(p: P) {
    let Some(b) = bucket(p) else { return };
    let size = 32 << 20;
    let obj = data(size, 3);
    b.seed("c/memfile", &obj, &[]);
    let store = b.store();
    let s0 = store.stats();
    // The mechanism with 1 MiB blocks (the default geometry is checked below).
    let mib = CacheConfig {
        block_size: 1 << 20,
        max_blocks: 32,
        max_blocks_per_request: 16,
        readahead_blocks: 8,
        readahead_first_blocks: 1,
        max_gap_blocks: 2,
    };
    let f = RemoteFile::open(&store, "c/memfile", mib).unwrap();
    assert_eq!(store.stats().since(&s0).requests, 1, "open is one HEAD");

    // 8 reads of 4 KiB in 6 distinct 1 MiB blocks.
    let offsets = [0u64, 8192, 5 << 20, (5 << 20) + 700_000, 11 << 20, 17 << 20, 23 << 20, (31 << 20) + 1000];
    let s1 = store.stats();
    for _pass in 0..2 {
        for &off in &offsets {
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, off).unwrap();
            assert_eq!(buf[..], obj[off as usize..off as usize + 4096], "{p:?} at {off}");
        }
    }
    let scattered = store.stats().since(&s1);
    assert_eq!(scattered.get, 6, "{p:?}: 16 scattered reads, 6 distinct blocks: {scattered:?}");
    assert_eq!(scattered.requests, 6);

    // 8 MiB sequentially in 64 KiB reads, from 12 MiB.
    let s2 = store.stats();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..128u64 {
        let off = (12 << 20) + i * (64 << 10);
        f.read_exact_at(&mut buf, off).unwrap();
        hasher.update(&buf);
    }
    assert_eq!(hasher.finalize()[..], Sha256::digest(&obj[12 << 20..20 << 20])[..]);
    let sequential = store.stats().since(&s2);
    // Block 12 alone (the first read is not known to be sequential), then with a read-ahead
    // window of 1, 2, 4 blocks: 13-14, 15-16 (17 is cached), 18-22.
    assert_eq!(sequential.get, 4, "{p:?}: 128 sequential reads over 8 blocks: {sequential:?}");

    // A prefetch of ranges in 3 runs of adjacent blocks (28-29, 24, 2), then reads that hit.
    let s3 = store.stats();
    f.prefetch(&[(28 << 20) + 5..(29 << 20) + 5, (24 << 20)..(24 << 20) + 1, (2 << 20)..(2 << 20) + 100]).unwrap();
    let prefetched = store.stats().since(&s3);
    assert_eq!(prefetched.get, 3, "{p:?}: {prefetched:?}");
    f.read_exact_at(&mut buf, 28 << 20).unwrap();
    f.read_exact_at(&mut buf[..100], 2 << 20).unwrap();
    assert_eq!(store.stats().since(&s3).get, 3);

    // The defaults: 64 KiB blocks, so the same scattered reads fetch 7 blocks of 64 KiB (0 and
    // 8192 share one), not 6 MiB.
    let small = RemoteFile::open(&store, "c/memfile", CacheConfig::default()).unwrap();
    let s4 = store.stats();
    for &off in &offsets {
        let mut buf = vec![0u8; 4096];
        small.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf[..], obj[off as usize..off as usize + 4096], "{p:?} at {off}");
    }
    let fine = store.stats().since(&s4);
    assert_eq!((fine.get, fine.bytes_read), (7, 7 * (64 << 10)), "{p:?}: {fine:?}");
    eprintln!(
        "MEASURED {p:?}: open {} req; 16 scattered 4 KiB reads (8 distinct, 6 blocks) {} GETs; \
         8 MiB sequential in 64 KiB reads {} GETs; prefetch of 3 runs {} GETs; cache {:?}",
        1,
        scattered.get,
        sequential.get,
        prefetched.get,
        f.stats()
    );
}

/// Faults injected by the proxy, each with the right error kind and request count. Retries:
/// 3 (4 attempts).
fn faults(p: P) {
    let Some(b) = bucket(p) else { return };
    let proxy = FaultProxy::start(b.server.port);
    let store = b.store_at(&proxy.endpoint(), &fault_config());
    let obj = data(64 << 10, 4);
    for key in ["transient", "persistent", "cutonce", "cutalways", "slowonce", "slowalways", "denied", "dropped"] {
        b.seed(&format!("f/{key}"), &obj, &[]);
    }
    let read = |key: &str| {
        let before = store.stats();
        let r = store.read_range(&format!("f/{key}"), 0..obj.len() as u64);
        (r, store.stats().since(&before))
    };
    let unavailable = Action::Respond {
        status: 503,
        body: "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into(),
    };

    // 503, 503, then the real answer: retried, 3 GETs.
    proxy.push(Some("GET"), "transient", 2, unavailable.clone());
    let (r, d) = read("transient");
    assert_eq!(r.unwrap()[..], obj[..], "{p:?}");
    assert_eq!((d.get, d.server_errors), (3, 2), "{p:?}: {d:?}");

    // 503 forever: unavailable after max_retries + 1 attempts.
    proxy.push(Some("GET"), "persistent", usize::MAX, unavailable);
    let (r, d) = read("persistent");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{p:?}: {e}");
    assert_eq!(d.get, 4, "{p:?}: {d:?}");

    // The body cut after 1000 bytes once: resumed from where it broke, 2 GETs.
    proxy.push(Some("GET"), "cutonce", 1, Action::Truncate { body_bytes: 1000 });
    let (r, d) = read("cutonce");
    assert_eq!(r.unwrap()[..], obj[..], "{p:?}");
    assert_eq!(d.get, 2, "{p:?}: {d:?}");

    // Cut every time: a truncated transfer.
    proxy.push(Some("GET"), "cutalways", usize::MAX, Action::Truncate { body_bytes: 1000 });
    let (r, d) = read("cutalways");
    let e = r.unwrap_err();
    assert!(matches!(e, Error::TransferCut { .. }), "{p:?}: {e:?}");
    assert_eq!(e.kind(), ErrorKind::Truncated);
    assert_eq!(d.get, 4, "{p:?}: {d:?}");

    // One answer slower than the idle timeout: retried.
    proxy.push(Some("GET"), "slowonce", 1, Action::Delay(Duration::from_millis(1500)));
    let (r, d) = read("slowonce");
    assert_eq!(r.unwrap()[..], obj[..], "{p:?}");
    assert_eq!(d.get, 2, "{p:?}: {d:?}");

    // Always too slow: a timeout.
    proxy.push(Some("GET"), "slowalways", usize::MAX, Action::Delay(Duration::from_millis(1500)));
    let t = Instant::now();
    let (r, d) = read("slowalways");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{p:?}: {e}");
    assert_eq!(d.get, 4, "{p:?}: {d:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // 403: not retried.
    proxy.push(
        None,
        "denied",
        usize::MAX,
        Action::Respond {
            status: 403,
            body: "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into(),
        },
    );
    let (r, d) = read("denied");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission, "{p:?}: {e}");
    assert_eq!(d.requests, 1, "{p:?}: {d:?}");

    // Connections closed without an answer: unavailable after the retries.
    proxy.push(Some("GET"), "dropped", usize::MAX, Action::Close);
    let (r, d) = read("dropped");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{p:?}: {e}");
    assert_eq!((d.get, d.transport_errors), (4, 4), "{p:?}: {d:?}");
    assert!(proxy.seen().iter().any(|(_, _, a)| *a == "pass"));
}

/// Parallel fetches are bounded by `max_concurrency`: 12 slow ranges with a limit of 3 never
/// have more than 3 requests at the server, and do run in parallel.
#[test]
fn s3_parallel_fetches_are_bounded() {
    let Some(b) = bucket(P::S3) else { return };
    let obj = data(12 << 10, 9);
    b.seed("p/memfile", &obj, &[]);
    let proxy = FaultProxy::start(b.server.port);
    proxy.push(Some("GET"), "memfile", usize::MAX, Action::Delay(Duration::from_millis(150)));
    let store = b.store_at(&proxy.endpoint(), &Config { max_concurrency: 3, ..config() });
    let ranges: Vec<_> = (0..12u64).map(|i| i * 1024..(i + 1) * 1024).collect();
    let got = store.read_ranges("p/memfile", &ranges, None).unwrap();
    assert!(got.iter().zip(&ranges).all(|(g, r)| g[..] == obj[r.start as usize..r.end as usize]));
    assert_eq!(store.stats().get, 12);
    let m = proxy.max_in_flight();
    assert!((2..=3).contains(&m), "{m} requests in flight at most");
}

/// An object replaced after it was opened is `Changed`, not a silent mix of old and new bytes.
fn replaced_while_reading(p: P) {
    let Some(b) = bucket(p) else { return };
    let store = b.store();
    b.seed("r/memfile", &data(3 << 20, 5), &[]);
    let cfg = CacheConfig { block_size: 1 << 20, ..CacheConfig::default() };
    let f = RemoteFile::open(&store, "r/memfile", cfg).unwrap();
    f.read_exact_at(&mut [0u8; 10], 0).unwrap();
    b.seed("r/memfile", &data(3 << 20, 6), &[]);
    let e = f.read_exact_at(&mut [0u8; 10], 2 << 20).unwrap_err();
    assert!(matches!(e, Error::Changed { .. }), "{p:?}: {e}");
}

/// Streaming multipart uploads (S3: POST, 3 part PUTs, POST; Azure: 3 Put Block, Put Block
/// List), metadata on them, a streaming read back, server-side copy and delete.
fn uploads(p: P) {
    let Some(b) = bucket(p) else { return };
    let store = b.store();
    let obj = data((12 << 20) + 17, 7);
    // A reader that hands out odd-sized pieces.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(777_777);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let meta: Metadata = [(UNCOMPRESSED_SIZE_KEY.to_string(), "99999999".to_string())].into();
    let before = store.stats();
    let n = store.put_reader("u/memfile.lz4", &mut Dribble(&obj), None, &meta).unwrap();
    let d = store.stats().since(&before);
    assert_eq!(n, obj.len() as u64);
    assert_eq!(d.bytes_written, n);
    match p {
        P::S3 => assert_eq!((d.post, d.put), (2, 3), "{d:?}"),
        _ => assert_eq!((d.post, d.put), (0, 4), "{d:?}"),
    }
    let i = store.head("u/memfile.lz4").unwrap();
    assert_eq!((i.size, i.uncompressed_size()), (n, Some(99_999_999)));

    let before = store.stats();
    let mut r = store.reader("u/memfile.lz4").unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert!(back == obj, "{p:?}: streamed bytes differ");
    let d = store.stats().since(&before);
    assert_eq!((d.head, d.get), (1, 4), "{p:?}: 12 MiB in 4 MiB chunks: {d:?}");

    let before = store.stats();
    store.put("u/metadata.json", b"{}", &Metadata::new()).unwrap();
    assert_eq!(store.stats().since(&before).put, 1, "a small object is one PUT");

    store.copy_object("u/memfile.lz4", "v/memfile.lz4").unwrap();
    let c = store.head("v/memfile.lz4").unwrap();
    assert_eq!((c.size, c.uncompressed_size()), (n, Some(99_999_999)));
    store.delete("v/memfile.lz4").unwrap();
    assert_eq!(store.head("v/memfile.lz4").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn s3_uploads() {
    uploads(P::S3)
}

#[test]
fn azure_uploads() {
    uploads(P::Azure)
}

/// The answer to S3's CompleteMultipartUpload lost after the server completed the upload: the
/// client times out and retries, and the retry finds the upload gone (404 NoSuchUpload). The
/// object is there with every byte, so the upload succeeded and must not be reported missing.
#[test]
fn s3_completion_answer_lost_is_not_a_failure() {
    let Some(b) = bucket(P::S3) else { return };
    let proxy = FaultProxy::start(b.server.port);
    let store = b.store_at(&proxy.endpoint(), &fault_config());
    let obj = data((10 << 20) + 5, 11);
    proxy.push(Some("POST"), "uploadId=", 1, Action::Hold(Duration::from_millis(1500)));
    // What S3 answers the retry (moto may complete twice, or answer 500 while the first runs).
    let no_such_upload = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>";
    proxy.push(Some("POST"), "uploadId=", 1, Action::Respond { status: 404, body: no_such_upload.into() });
    let n = store.put_reader("lost/memfile", &mut std::io::Cursor::new(&obj), None, &Metadata::new()).unwrap();
    assert_eq!(n, obj.len() as u64);
    let completions: Vec<_> =
        proxy.seen().into_iter().filter(|(m, path, _)| m == "POST" && path.contains("uploadId=")).collect();
    assert_eq!(completions.len(), 2, "the lost answer made the client retry: {completions:?}");
    assert_eq!((completions[0].2, completions[1].2), ("hold", "respond"));
    let mut back = Vec::new();
    b.store().reader("lost/memfile").unwrap().read_to_end(&mut back).unwrap();
    assert!(back == obj, "the object holds what was uploaded");
}

/// A real 403 from S3: moto with authentication on rejects unknown keys; not retried.
#[test]
fn s3_unknown_keys_are_denied() {
    let Some(s) = server(Emulator::MotoAuth) else { return };
    let loc = parse_storage_url(&format!("s3://any-bucket?endpoint={}&s3ForcePathStyle=true", s.endpoint())).unwrap();
    let env = Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN"), ("AWS_SECRET_ACCESS_KEY", "wrong")]);
    let store = Store::open(&loc, &env, &config()).unwrap();
    let e = store.head("b/memfile").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission, "{e}");
    assert_eq!(store.stats().requests, 1);
    assert!(!e.to_string().contains("wrong"), "{e}");
}

/// A real 403 from Azure: azurite checks the SharedKey signature.
#[test]
fn azure_wrong_key_is_denied() {
    let Some(b) = bucket(P::Azure) else { return };
    use base64::Engine;
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let env =
        Env::from_pairs([("AZURE_STORAGE_CONNECTION_STRING", connection_string(&b.server.endpoint(), &other_key))]);
    let store = Store::open(&b.location(&b.server.endpoint()), &env, &config()).unwrap();
    let e = store.head("b/memfile").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission, "{e}");
    assert_eq!(store.stats().requests, 1);
    assert!(!format!("{e:?}").contains(&other_key), "{e:?}");
}

/// No keys and no reachable instance metadata: `NoCredentials` naming the variables, quickly.
#[test]
fn s3_missing_credentials() {
    let Some(b) = bucket(P::S3) else { return };
    let closed = format!("http://127.0.0.1:{}", servers::closed_port());
    let env = Env::from_pairs([("AWS_METADATA_ENDPOINT", closed.as_str())]);
    let store = Store::open(&b.location(&b.server.endpoint()), &env, &config()).unwrap();
    let t = Instant::now();
    let e = store.head("b/memfile").unwrap_err();
    assert!(matches!(e, Error::NoCredentials { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Permission);
    assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn azure_missing_credentials() {
    let Some(b) = bucket(P::Azure) else { return };
    let closed = format!("http://127.0.0.1:{}/metadata/identity/oauth2/token", servers::closed_port());
    let env =
        Env::from_pairs([("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT), ("IDENTITY_ENDPOINT", closed.as_str())]);
    let store = Store::open(&b.location(&b.server.endpoint()), &env, &config()).unwrap();
    let e = store.head("b/memfile").unwrap_err();
    assert!(matches!(e, Error::NoCredentials { .. }), "{e:?}");
    assert!(e.to_string().contains("AZURE_STORAGE_CONNECTION_STRING"), "{e}");
}

/// GCS without credentials. object_store takes the GCE metadata address only from the process
/// environment, so this test runs itself again in a child process whose environment points the
/// metadata server at a closed loopback port (and HOME at an empty directory, so no gcloud ADC
/// file is found). Nothing reaches Google: the credential lookup fails first.
#[test]
fn gcs_missing_credentials() {
    if std::env::var_os("TMPL_TEST_GCS_CHILD").is_some() {
        let loc = parse_storage_url("gs://tmpl-test-no-credentials").unwrap();
        let store = Store::open(&loc, &Env::empty(), &config()).unwrap();
        let e = store.head("b/memfile").unwrap_err();
        assert!(matches!(e, Error::NoCredentials { .. }), "{e:?}");
        assert!(e.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let metadata = format!("127.0.0.1:{}", servers::closed_port());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["gcs_missing_credentials", "--exact", "--nocapture", "--test-threads=1"])
        .env("TMPL_TEST_GCS_CHILD", "1")
        .env("GCE_METADATA_HOST", &metadata)
        .env("GCE_METADATA_IP", &metadata)
        .env("HOME", home.path())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");
}

/// An endpoint nobody listens on: unavailable after the retries.
#[test]
fn unreachable_endpoint_is_unavailable() {
    let closed = format!("http://127.0.0.1:{}", servers::closed_port());
    let loc = parse_storage_url(&format!("s3://b?endpoint={closed}&s3ForcePathStyle=true")).unwrap();
    let env = Env::from_pairs([("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")]);
    let store = Store::open(&loc, &env, &config()).unwrap();
    let e = store.read_range("b/memfile", 0..10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let s = store.stats();
    assert_eq!((s.requests, s.transport_errors), (4, 4), "{s:?}");
}

/// TLS works with the ring provider the layer installs: an HTTPS server with an untrusted
/// (self-signed) certificate is refused with a certificate error, and nothing panics.
#[test]
fn untrusted_certificate_is_refused() {
    let Some(s) = server(Emulator::FakeGcsTls) else { return };
    let loc = parse_storage_url("gs://tls-bucket").unwrap();
    let env = Env::from_pairs([("STORAGE_EMULATOR_HOST", format!("https://127.0.0.1:{}", s.port))]);
    let store = Store::open(&loc, &env, &Config { max_retries: 0, ..config() }).unwrap();
    let e = store.head("b/memfile").unwrap_err();
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(" / {s}"));
        src = s.source();
    }
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
}

/// The legacy environment of an S3 node (STORAGE_PROVIDER=AWSBucket, TEMPLATE_BUCKET_NAME,
/// S3_USE_PATH_STYLE, AWS_ENDPOINT_URL, AWS_REGION) resolves to the bucket and reaches it.
#[test]
fn s3_legacy_environment_reaches_the_bucket() {
    let Some(b) = bucket(P::S3) else { return };
    b.seed("l/metadata.json", b"{}", &[]);
    let env = Env::from_pairs([
        ("STORAGE_PROVIDER", "AWSBucket"),
        ("TEMPLATE_BUCKET_NAME", b.name.as_str()),
        ("S3_USE_PATH_STYLE", "true"),
        ("AWS_ENDPOINT_URL", b.server.endpoint().as_str()),
        ("AWS_REGION", "eu-central-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]);
    let r = resolve(None, &env).unwrap();
    assert_eq!(r.location.to_string(), format!("s3://{}?s3ForcePathStyle=true", b.name));
    let store = Store::open(&r.location, &env, &config()).unwrap();
    assert_eq!(store.head("l/metadata.json").unwrap().size, 2);
}

/// Local storage through the same API: E2B's sidecar for the uncompressed size, atomic puts,
/// listings, streaming reads, copy, delete, and keys that cannot leave the directory.
#[test]
fn local_storage_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let loc = parse_storage_url(&format!("file://{}", dir.path().display())).unwrap();
    let store = Store::open(&loc, &Env::empty(), &config()).unwrap();
    let obj = data(3 << 20, 8);
    let meta: Metadata = [(UNCOMPRESSED_SIZE_KEY.to_string(), "12345".to_string())].into();
    store.put_reader("b/memfile.zstd", &mut &obj[..], Some(obj.len() as u64), &meta).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("b/memfile.zstd.uncompressed-size")).unwrap(), "12345");
    assert_eq!(std::fs::read(dir.path().join("b/memfile.zstd")).unwrap(), obj);
    let i = store.head("b/memfile.zstd").unwrap();
    assert_eq!((i.size, i.uncompressed_size()), (obj.len() as u64, Some(12345)));
    let mut keys: Vec<String> = store.list("b").unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    assert_eq!(keys, ["b/memfile.zstd", "b/memfile.zstd.uncompressed-size"]);
    assert_eq!(store.list_dirs("").unwrap(), ["b"]);
    let mut back = Vec::new();
    store.reader("b/memfile.zstd").unwrap().read_to_end(&mut back).unwrap();
    assert!(back == obj);
    store.copy_object("b/memfile.zstd", "c/memfile.zstd").unwrap();
    assert_eq!(store.head("c/memfile.zstd").unwrap().uncompressed_size(), Some(12345));
    store.delete("c/memfile.zstd").unwrap();
    assert_eq!(store.head("c/memfile.zstd").unwrap_err().kind(), ErrorKind::NotFound);
    for hostile in ["../escape", "b/../../etc/passwd", "/etc/passwd", "b//memfile"] {
        assert_eq!(store.head(hostile).unwrap_err().kind(), ErrorKind::Config, "{hostile}");
        assert!(store.put(hostile, b"x", &Metadata::new()).is_err());
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
    assert_eq!(store.stats().requests, 0);
}

#[test]
fn test_helpers_http_date_and_hmac() {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(servers::http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
    let t = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(servers::http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    // RFC 4231 test case 2.
    let mac = servers::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}
