//! The commands on builds in object storage, against real servers started by the tests: moto
//! (S3), fake-gcs-server (GCS) and azurite (Azure Blob). `tmpl` runs as the operator runs it,
//! with `--storage URL` and each provider's credential variables; metadata-server fallbacks point
//! at a closed loopback port. Faults come from the loopback proxy in tests/common/servers.rs in
//! front of the real server.
//!
//! GCS goes through one more loopback proxy (`Action::GcsXmlPut` in tests/common/servers.rs):
//! tmpl uploads to GCS through the XML API (`PUT /bucket/object` with `x-goog-meta-*`, what real
//! GCS takes), which fake-gcs-server serves only for signed URLs; the proxy marks the PUT as one
//! and copies the ETag from fake-gcs-server's JSON answer into the header GCS sends. Uploads of
//! 16 MiB and more are XML multipart, which fake-gcs-server lacks, so the objects copied to GCS
//! here are smaller.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::servers::{self, Action, Emulator, FaultProxy, Server, server, unique_name};
use serde_json::Value;
use tmpl::vocab::{Artifact, BuildId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    S3,
    Gcs,
    Azure,
}

struct Bucket {
    p: P,
    server: &'static Server,
    name: String,
}

fn bucket(p: P) -> Option<Bucket> {
    let server = server(match p {
        P::S3 => Emulator::Moto,
        P::Gcs => Emulator::FakeGcs,
        P::Azure => Emulator::Azurite,
    })?;
    let name = unique_name("c");
    match p {
        P::S3 => servers::s3_create_bucket(server.port, &name),
        P::Gcs => servers::gcs_create_bucket(server.port, &name),
        P::Azure => servers::azure_create_container(server.port, &name),
    }
    Some(Bucket { p, server, name })
}

impl Bucket {
    fn url_at(&self, endpoint: &str) -> String {
        match self.p {
            P::S3 => format!("s3://{}?endpoint={endpoint}&s3ForcePathStyle=true&region=us-east-1", self.name),
            P::Gcs => format!("gs://{}", self.name),
            P::Azure => format!("azblob://{}", self.name),
        }
    }

    fn url(&self) -> String {
        self.url_at(&self.server.endpoint())
    }

    /// tmpl with this provider's credentials for `endpoint` and nothing else from the
    /// environment; short timeouts and few retries.
    fn tmpl_at(&self, endpoint: &str) -> assert_cmd::Command {
        let mut c = common::tmpl();
        let closed = format!("127.0.0.1:{}", servers::closed_port());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TMPL_REMOTE_TIMEOUT", "2")
            .env("TMPL_REMOTE_RETRIES", "2")
            .env("GCE_METADATA_HOST", &closed)
            .env("GCE_METADATA_IP", &closed)
            .env("AWS_METADATA_ENDPOINT", format!("http://{closed}"))
            .env("IDENTITY_ENDPOINT", format!("http://{closed}/metadata/identity/oauth2/token"));
        match self.p {
            P::S3 => {
                c.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test");
            }
            P::Gcs => {
                c.env("STORAGE_EMULATOR_HOST", endpoint);
            }
            P::Azure => {
                c.env(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    format!(
                        "DefaultEndpointsProtocol=http;AccountName={a};AccountKey={k};BlobEndpoint={endpoint}/{a};",
                        a = tmpl::remote::AZURITE_ACCOUNT,
                        k = tmpl::remote::AZURITE_KEY
                    ),
                );
            }
        }
        c
    }

    /// Where tmpl reaches this server: GCS through the upload adapter in front of
    /// fake-gcs-server, the others directly.
    fn endpoint(&self) -> String {
        match self.p {
            P::Gcs => gcs_front(self.server).endpoint(),
            _ => self.server.endpoint(),
        }
    }

    fn tmpl(&self) -> assert_cmd::Command {
        self.tmpl_at(&self.endpoint())
    }

    /// Put a local storage's builds there with `tmpl copy` (the Local sidecar becomes
    /// `uncompressed-size` metadata). Setup, so a long timeout: moto answers a multipart
    /// completion only when it has joined the parts, which under load takes longer than the 2 s
    /// the tests use elsewhere, and a completion retried after a timeout finds the upload gone
    /// (moto `KeyError`, 500) while the first one still succeeds.
    fn upload(&self, storage: &Path, builds: &[&str]) {
        for b in builds {
            let out = self
                .tmpl()
                .env("TMPL_REMOTE_TIMEOUT", "60")
                .args(["copy", b, "--no-ancestors", "--json", "--from"])
                .arg(storage)
                .args(["--to", &self.url()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{b}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

/// The proxy in front of fake-gcs-server that lets it take GCS XML API uploads (see the module
/// documentation); one per test binary.
fn gcs_front(server: &Server) -> &'static FaultProxy {
    static FRONT: OnceLock<FaultProxy> = OnceLock::new();
    FRONT.get_or_init(|| {
        let p = FaultProxy::start(server.port);
        p.push(Some("PUT"), "", usize::MAX, Action::GcsXmlPut);
        p
    })
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// The demo storage (made once per test binary).
fn demo() -> &'static Path {
    static DEMO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DEMO
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("demo");
            let out = common::tmpl().args(["demo", "--json", "--dir"]).arg(&root).output().unwrap();
            assert!(out.status.code().is_some(), "demo ran");
            (d, root)
        })
        .1
}

/// (build, finding id, file, severity) of a verify report: what must agree between a local and
/// a remote copy of the same storage (messages name the storage, so they differ).
fn verdicts(v: &Value) -> BTreeMap<String, Vec<(String, String, String)>> {
    v["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let f = b["findings"].as_array().unwrap().iter().map(|f| {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                (s("id"), s("severity"), s("file"))
            });
            (b["build_id"].as_str().unwrap().to_string(), f.collect())
        })
        .collect()
}

/// Builds of the demo that are small (compressed) and whose ancestors are among them, for the
/// slower servers.
const SMALL: [&str; 5] = [
    "a0000000-0000-4000-8000-000000000005",
    "a0000000-0000-4000-8000-000000000006",
    "ea000000-0000-4000-8000-00000000001a",
    "eb000000-0000-4000-8000-00000000001b",
    "ec000000-0000-4000-8000-00000000001c",
];

/// The demo storage (S3: all of it; GCS and Azure: its compressed and header-only builds) in a
/// bucket verifies with the same findings as on disk, `--deep` included.
fn demo_verifies_as_on_disk(p: P) {
    let Some(b) = bucket(p) else { return };
    let local = demo();
    let all: Vec<String> = std::fs::read_dir(local)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let builds: Vec<&str> = if p == P::S3 { all.iter().map(String::as_str).collect() } else { SMALL.to_vec() };
    b.upload(local, &builds);
    for deep in [false, true] {
        let mut args = vec!["verify", "--json"];
        args.extend(&builds);
        if deep {
            args.push("--deep");
        }
        let here = common::tmpl().args(["--storage"]).arg(local).args(&args).output().unwrap();
        let there = b.tmpl().args(["--storage", &b.url()]).args(&args).output().unwrap();
        assert_eq!(here.status.code(), there.status.code(), "{}", String::from_utf8_lossy(&there.stdout));
        let (h, t) = (json(&here), json(&there));
        assert_eq!(verdicts(&h), verdicts(&t), "deep={deep}");
        assert_eq!(t["storage"], b.url().split('?').next().unwrap(), "the report names the bucket");
    }
    // --all lists the builds in the bucket.
    let all_there = json(&b.tmpl().args(["--storage", &b.url(), "verify", "--all", "--json"]).output().unwrap());
    assert_eq!(all_there["summary"]["builds"], builds.len());
}

/// `inspect` of a rootfs in a bucket: its files through the header, `--path` and `--cat`, with
/// the requests it took.
fn inspect_reads_rootfs_contents(p: P) {
    let Some(b) = bucket(p) else { return };
    let id = "a0000000-0000-4000-8000-000000000005";
    b.upload(demo(), &[id]);
    let local = json(
        &common::tmpl()
            .arg("--storage")
            .arg(demo())
            .args(["inspect", id, "--path", "/sbin/init", "--json"])
            .output()
            .unwrap(),
    );
    let out = b.tmpl().args(["--storage", &b.url(), "inspect", id, "--path", "/sbin/init", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["sha256"], local["sha256"]);
    assert_eq!(v["resolution"], local["resolution"]);
    let requests = v["remote"]["requests"].as_u64().unwrap();
    assert!(requests > 0 && requests <= 16, "{requests} requests: {}", v["remote"]);
    assert!(v["remote"]["bytes_read"].as_u64().unwrap() < 1 << 20, "{}", v["remote"]);
    let cat =
        b.tmpl().args(["--storage", &b.url(), "inspect", id, "--path", "/etc/hostname", "--cat"]).output().unwrap();
    let cat_local = common::tmpl()
        .arg("--storage")
        .arg(demo())
        .args(["inspect", id, "--path", "/etc/hostname", "--cat"])
        .output()
        .unwrap();
    assert_eq!(cat.status.code(), cat_local.status.code());
    assert_eq!(cat.stdout, cat_local.stdout);
    let full = json(
        &b.tmpl().args(["--storage", &b.url(), "inspect", id, "--json", "--mappings", "--frames"]).output().unwrap(),
    );
    assert_eq!(full["build_id"], id);
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

per_provider!(demo_verifies_as_on_disk, inspect_reads_rootfs_contents, refusals_and_bad_input);

/// A layered, compressed V5 chain (base zstd, child lz4 on it) in a local storage.
fn chain(root: &Path) -> (BuildId, BuildId) {
    use tmpl::device::Device;
    use tmpl::fixtures::layer::{self, LayerFormat, Parent};
    use tmpl::progress::NoProgress;
    let (base, child) = (BuildId::from_bytes([0xb5; 16]), BuildId::from_bytes([0xc5; 16]));
    let work = tempfile::tempdir().unwrap();
    let mut header = None;
    for (i, (id, c)) in
        [(base, tmpl::compress::Compression::Zstd), (child, tmpl::compress::Compression::Lz4)].into_iter().enumerate()
    {
        let tree = work.path().join(format!("tree{i}"));
        let extra: &[(&str, &[u8])] = if i == 0 { &[] } else { &[("etc/child", b"layered\n")] };
        tmpl::demo::rootfs_tree(&tree, &id.to_string(), extra).unwrap();
        let img = work.path().join(format!("img{i}"));
        tmpl::demo::make_image(&tree, &img, 24 << 20).unwrap();
        let dir = root.join(id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let dev = Device::plain_file(&img).unwrap();
        let parent_dev = header.as_ref().map(|_: &tmpl::header::Header| {
            let b = tmpl::build::Build::open(&tmpl::storage::BuildLocation {
                dir: root.join(base.to_string()),
                folder_id: Some(base),
                storage_root: root.to_path_buf(),
            })
            .unwrap();
            Device::open(&b, Artifact::Rootfs).unwrap()
        });
        let parent = header.as_ref().zip(parent_dev.as_ref()).map(|(h, d)| Parent { header: h, device: d });
        let w = layer::write_layer_as(
            &dev,
            &dir,
            id,
            Artifact::Rootfs,
            parent,
            i as u64,
            &LayerFormat::framed(5, c),
            &NoProgress,
        )
        .unwrap();
        std::fs::write(
            dir.join("metadata.json"),
            format!(r#"{{"version":2,"template":{{"build_id":"{id}","kernel_version":"vmlinux-6.1.158","firecracker_version":"v1.16.1"}},"context":{{}}}}"#),
        )
        .unwrap();
        header = Some(w.header);
    }
    (base, child)
}

/// `tmpl copy` of a layered compressed V5 chain: local → S3 → GCS → Azure → local, every object
/// with the same SHA-256 at the end, and GCS → local too; the copies verify like the original.
#[test]
fn copy_round_trips_a_compressed_chain() {
    let (Some(s3), Some(az), Some(gcs)) = (bucket(P::S3), bucket(P::Azure), bucket(P::Gcs)) else { return };
    let d = tempfile::tempdir().unwrap();
    let (a, back, from_gcs) = (d.path().join("a"), d.path().join("back"), d.path().join("gcs"));
    let (base, child) = chain(&a);
    let child = child.to_string();
    let hop = |tool: &Bucket, from: &str, to: &str| {
        let out = tool.tmpl().args(["copy", &child, "--json", "--from", from, "--to", to]).output().unwrap();
        assert!(out.status.success(), "{from} → {to}: {}", String::from_utf8_lossy(&out.stdout));
        json(&out)
    };
    let r = hop(&s3, a.to_str().unwrap(), &s3.url());
    assert_eq!(r["status"], "copied");
    assert_eq!(r["builds"][0]["id"], base.to_string(), "the ancestor goes first");
    let keys: Vec<&str> = r["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert!(keys.last().unwrap().ends_with(&format!("{child}/metadata.json")), "metadata.json last: {keys:?}");
    let zst = r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with("rootfs.ext4.zstd"))
        .unwrap();
    assert!(zst["uncompressed_size"].as_u64().unwrap() > 0, "the sidecar became S3 metadata: {zst}");
    // S3 → GCS, then GCS → Azure: each hop needs credentials for both ends, one environment.
    let mut to_gcs = gcs.tmpl();
    to_gcs.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test");
    let out = to_gcs.args(["copy", &child, "--json", "--from", &s3.url(), "--to", &gcs.url()]).output().unwrap();
    assert!(out.status.success(), "S3 → GCS: {}", String::from_utf8_lossy(&out.stdout));
    let r = json(&out);
    assert_eq!(r["status"], "copied", "{r}");
    let zst = r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with("rootfs.ext4.zstd"))
        .unwrap();
    assert!(zst["uncompressed_size"].as_u64().unwrap() > 0, "S3 metadata became GCS metadata: {zst}");
    let mut to_azure = az.tmpl();
    to_azure.env("STORAGE_EMULATOR_HOST", gcs.endpoint());
    let out = to_azure.args(["copy", &child, "--json", "--from", &gcs.url(), "--to", &az.url()]).output().unwrap();
    assert!(out.status.success(), "GCS → Azure: {}", String::from_utf8_lossy(&out.stdout));
    hop(&az, &az.url(), back.to_str().unwrap());
    assert_eq!(common::hash_tree(&a), common::hash_tree(&back), "local → S3 → GCS → Azure → local changes no byte");
    // Again: every object is identical and skipped, nothing written.
    let again = hop(&az, &az.url(), back.to_str().unwrap());
    assert_eq!(again["summary"]["copied"], 0);
    assert_eq!(again["summary"]["skipped"], again["summary"]["objects"]);
    // GCS → local: the uncompressed-size metadata written to GCS is the Local sidecar again.
    hop(&gcs, &gcs.url(), from_gcs.to_str().unwrap());
    assert_eq!(common::hash_tree(&a), common::hash_tree(&from_gcs), "local → S3 → GCS → local changes no byte");
    // The chain verifies in each place the same way, deep too.
    let v_local =
        json(&common::tmpl().arg("--storage").arg(&a).args(["verify", &child, "--deep", "--json"]).output().unwrap());
    assert_eq!(v_local["summary"]["failed"], 0, "{v_local}");
    for (tool, url) in [(&s3, s3.url()), (&az, az.url()), (&gcs, gcs.url())] {
        let v = json(&tool.tmpl().args(["--storage", &url, "verify", &child, "--deep", "--json"]).output().unwrap());
        assert_eq!(verdicts(&v), verdicts(&v_local), "{url}");
        assert!(v["builds"][0]["deep"].as_array().unwrap().iter().all(|f| f["ok"] == true), "{v}");
    }
}

/// Refusals and bad input on a bucket: a different build with the same ID (exit 5, nothing
/// written), an edit in place (exit 5, with the copy commands), a hostile build argument and an
/// unknown URL parameter (exit 3 and 2), a build that is not there (exit 3), and object names
/// that are not builds.
fn refusals_and_bad_input(p: P) {
    let Some(b) = bucket(p) else { return };
    let id = "a0000000-0000-4000-8000-000000000005";
    b.upload(demo(), &[id]);
    let url = b.url();
    // Hostile and odd object names in the bucket are other entries, not builds, and harmless.
    for key in ["not-a-build/metadata.json", "a b/c", "..x/metadata.json", "a0000000-0000-4000-8000-000000000005x/y"] {
        match p {
            P::Gcs => servers::gcs_seed(b.server.port, &b.name, key, b"{}", &[]),
            _ => {
                let store = tmpl::remote::Store::open(
                    &tmpl::remote::parse_storage_url(&url).unwrap(),
                    &store_env(&b),
                    &tmpl::remote::Config::default(),
                )
                .unwrap();
                store.put(key, b"{}", &Default::default()).unwrap();
            }
        }
    }
    let all = json(&b.tmpl().args(["--storage", &url, "verify", "--all", "--json"]).output().unwrap());
    assert_eq!(all["summary"]["builds"], 1, "{all}");
    assert_eq!(all["other_entries"], 4);
    let edit = b.tmpl().args(["--storage", &url, "inject-envd", id, "--envd", "/bin/true"]).output().unwrap();
    assert_eq!(edit.status.code(), Some(5));
    let msg = String::from_utf8_lossy(&edit.stderr);
    assert!(msg.contains("tmpl copy") && msg.contains("--fork"), "{msg}");
    for (args, code) in [
        (vec!["verify", "../.."], 3),
        (vec!["verify", "b0000000-0000-4000-8000-0000000000ff"], 3),
        (vec!["inspect", "b0000000-0000-4000-8000-0000000000ff"], 3),
    ] {
        let out = b.tmpl().args(["--storage", &url]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    if p == P::S3 {
        let typo = format!("s3://{}?endpint=http://127.0.0.1:1", b.name);
        let out = b.tmpl().args(["--storage", &typo, "verify", "--all"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("endpint"));
    }
    // The same ID with other contents at the destination: refused, nothing written there.
    {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join(id);
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("metadata.json"), b"{\"other\":true}").unwrap();
        std::fs::write(other.join("snapfile"), b"x").unwrap();
        let before = object_keys(&b, &url);
        let out = b.tmpl().args(["copy", id, "--json", "--from"]).arg(d.path()).args(["--to", &url]).output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(json(&out)["status"], "refused");
        assert_eq!(object_keys(&b, &url), before, "nothing written");
        // --dry-run of a real copy writes nothing and says what it would do.
        let fresh = tempfile::tempdir().unwrap();
        let target = fresh.path().join("not-yet");
        let out = b
            .tmpl()
            .args(["--storage", &url, "copy", id, "--dry-run", "--json", "--to"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out);
        assert_eq!(v["status"], "planned");
        assert!(v["objects"].as_array().unwrap().iter().all(|o| o["action"] == "copy"));
        assert!(!target.exists(), "a dry run creates nothing");
    }
}

/// Credentials for an in-process `Store` on this bucket.
fn store_env(b: &Bucket) -> tmpl::remote::Env {
    match b.p {
        P::S3 => tmpl::remote::Env::from_pairs([("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")]),
        P::Gcs => tmpl::remote::Env::from_pairs([("STORAGE_EMULATOR_HOST", b.endpoint())]),
        P::Azure => tmpl::remote::Env::from_pairs([(
            "AZURE_STORAGE_CONNECTION_STRING",
            format!(
                "DefaultEndpointsProtocol=http;AccountName={a};AccountKey={k};BlobEndpoint={e}/{a};",
                a = tmpl::remote::AZURITE_ACCOUNT,
                k = tmpl::remote::AZURITE_KEY,
                e = b.server.endpoint()
            ),
        )]),
    }
}

fn object_keys(b: &Bucket, url: &str) -> Vec<(String, u64)> {
    let store = tmpl::remote::Store::open(
        &tmpl::remote::parse_storage_url(url).unwrap(),
        &store_env(b),
        &tmpl::remote::Config::default(),
    )
    .unwrap();
    let mut v: Vec<(String, u64)> = store.list("").unwrap().into_iter().map(|o| (o.key, o.size)).collect();
    v.sort();
    v
}

/// Faults through the proxy in front of moto: 503s that pass are retried and change nothing;
/// a data object that keeps failing, a cut transfer, a slow server and a truncated object are
/// findings on the build (exit 4 for the environment's, 1 for the build's); a copy whose upload
/// is refused is rolled back (nothing at the destination, exit 4); a missing ancestor stops the
/// copy before anything is written (exit 3); missing credentials name the variables (exit 4).
#[test]
fn s3_faults() {
    let Some(b) = bucket(P::S3) else { return };
    let id = "a0000000-0000-4000-8000-000000000005";
    b.upload(demo(), &[id]);
    let proxy = FaultProxy::start(b.server.port);
    let url = b.url_at(&proxy.endpoint());
    let verify = |extra: &[&str]| {
        let out = b
            .tmpl_at(&proxy.endpoint())
            .args(["--storage", &url, "verify", id, "--json"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), json(&out))
    };
    let (code, clean) = verify(&[]);
    assert_eq!(code, Some(0), "{clean}");
    // Two 503s on the rootfs: retried, same result.
    proxy.push(
        Some("GET"),
        "rootfs.ext4",
        2,
        Action::Respond { status: 503, body: "<Error><Code>SlowDown</Code></Error>".into() },
    );
    let (code, v) = verify(&[]);
    assert_eq!((code, verdicts(&v)), (Some(0), verdicts(&clean)));
    // 503 for good on the rootfs: the rootfs cannot be read; the environment's (exit 4).
    proxy.clear();
    proxy.push(
        Some("GET"),
        "rootfs.ext4",
        usize::MAX,
        Action::Respond { status: 503, body: "<Error><Code>SlowDown</Code></Error>".into() },
    );
    let (code, v) = verify(&[]);
    assert_eq!(code, Some(4), "{v}");
    assert!(v.to_string().contains("unavailable") || v.to_string().contains("503"), "{v}");
    // A body cut mid-way, every time.
    proxy.clear();
    proxy.push(Some("GET"), "rootfs.ext4", usize::MAX, Action::Truncate { body_bytes: 100 });
    let (code, v) = verify(&[]);
    assert_ne!(code, Some(0), "{v}");
    // A slow server: timeouts after the retries.
    proxy.clear();
    proxy.push(Some("GET"), "rootfs.ext4", usize::MAX, Action::Delay(std::time::Duration::from_secs(4)));
    let (code, v) = verify(&[]);
    assert_eq!(code, Some(4), "{v}");
    assert!(v.to_string().contains("timed out"), "{v}");
    proxy.clear();
    // A copy whose uploads are refused: rolled back, nothing at the destination.
    let dst = bucket(P::S3).unwrap();
    let dproxy = FaultProxy::start(dst.server.port);
    let durl = dst.url_at(&dproxy.endpoint());
    dproxy.push(
        Some("PUT"),
        "metadata.json",
        usize::MAX,
        Action::Respond { status: 403, body: "<Error><Code>AccessDenied</Code></Error>".into() },
    );
    let out = b.tmpl().args(["copy", id, "--json", "--from", &b.url(), "--to", &durl]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stdout));
    let v = json(&out);
    assert_eq!(v["status"], "failed");
    assert!(!v["failure"]["rolled_back"].as_array().unwrap().is_empty(), "{v}");
    assert!(object_keys(&dst, &dst.url()).is_empty(), "nothing left at the destination");
    // A missing ancestor (404): refused before writing (exit 3).
    let d = tempfile::tempdir().unwrap();
    let (_, child) = chain(d.path());
    let lone = tempfile::tempdir().unwrap();
    let cdir = lone.path().join(child.to_string());
    std::fs::create_dir(&cdir).unwrap();
    for e in std::fs::read_dir(d.path().join(child.to_string())).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), cdir.join(e.file_name())).unwrap();
    }
    let out = b
        .tmpl()
        .args(["copy", &child.to_string(), "--json", "--from"])
        .arg(lone.path())
        .args(["--to", &dst.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(object_keys(&dst, &dst.url()).is_empty());
    // The ancestor's data missing in the bucket: verify names it (exit 1).
    b.upload(d.path(), &[&child.to_string()]);
    let out = b.tmpl().args(["--storage", &b.url(), "verify", &child.to_string(), "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::findings_of(&json(&out)).iter().any(|f| f.0 == "header.missing-build"));
    // A truncated object (the rootfs cut short in the bucket).
    let zkey = format!("{child}/rootfs.ext4.lz4");
    let store = tmpl::remote::Store::open(
        &tmpl::remote::parse_storage_url(&b.url()).unwrap(),
        &store_env(&b),
        &tmpl::remote::Config::default(),
    )
    .unwrap();
    let full = store.read_all(&zkey, 1 << 30).unwrap();
    store.put(&zkey, &full[..full.len() / 2], &Default::default()).unwrap();
    let out = b.tmpl().args(["--storage", &b.url(), "verify", &child.to_string(), "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    // No credentials at all: exit 4, the variables named.
    let out = common::tmpl()
        .env_clear()
        .env("AWS_METADATA_ENDPOINT", format!("http://127.0.0.1:{}", servers::closed_port()))
        .env("TMPL_REMOTE_RETRIES", "0")
        .args(["--storage", &b.url(), "verify", id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AWS_ACCESS_KEY_ID")
            || String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID")
    );
}
