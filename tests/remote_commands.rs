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

    /// [`Bucket::tmpl`] with a 30 s idle timeout, for the edits' multi-MiB publishes: on a loaded
    /// machine a slow server answers a multipart upload's completion after 2 s (see
    /// [`Bucket::upload`]); tests/remote.rs and s3_faults cover timeouts.
    fn tmpl_patient(&self) -> assert_cmd::Command {
        let mut c = self.tmpl();
        c.env("TMPL_REMOTE_TIMEOUT", "30");
        c
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

/// The entry of a `tmpl copy --json` report for the object whose key ends with `suffix`.
fn copied_object<'a>(report: &'a Value, suffix: &str) -> &'a Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no object ending with {suffix}: {report}"))
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
    // No byte is fetched twice: at most what the build stores (its rootfs is two zstd frames,
    // and /sbin/init → /usr/bin/envd, the demo's 800 KiB envd, spans both).
    let stored: u64 = std::fs::read_dir(demo().join(id)).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(v["remote"]["bytes_read"].as_u64().unwrap() <= stored, "{stored}: {}", v["remote"]);
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
    chain_with(root, [0xb5; 16], [0xc5; 16], &|t: &Path| std::fs::write(t.join("etc/child"), b"layered\n").unwrap())
}

/// [`chain`] with these IDs, the child's tree changed by `child` before it is imaged.
fn chain_with(root: &Path, base: [u8; 16], child: [u8; 16], edit_child: &dyn Fn(&Path)) -> (BuildId, BuildId) {
    use tmpl::device::Device;
    use tmpl::fixtures::layer::{self, LayerFormat, Parent};
    use tmpl::progress::NoProgress;
    let (base, child) = (BuildId::from_bytes(base), BuildId::from_bytes(child));
    let work = tempfile::tempdir().unwrap();
    let mut header = None;
    for (i, (id, c)) in
        [(base, tmpl::compress::Compression::Zstd), (child, tmpl::compress::Compression::Lz4)].into_iter().enumerate()
    {
        let tree = work.path().join(format!("tree{i}"));
        tmpl::demo::rootfs_tree(&tree, &id.to_string(), &[]).unwrap();
        if i == 1 {
            edit_child(&tree);
        }
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
    let zst = copied_object(&r, "rootfs.ext4.zstd");
    assert!(zst["uncompressed_size"].as_u64().unwrap() > 0, "the sidecar became S3 metadata: {zst}");
    // S3 → GCS, then GCS → Azure: each hop needs credentials for both ends, one environment.
    let mut to_gcs = gcs.tmpl();
    to_gcs.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test");
    let out = to_gcs.args(["copy", &child, "--json", "--from", &s3.url(), "--to", &gcs.url()]).output().unwrap();
    assert!(out.status.success(), "S3 → GCS: {}", String::from_utf8_lossy(&out.stdout));
    let r = json(&out);
    assert_eq!(r["status"], "copied", "{r}");
    let zst = copied_object(&r, "rootfs.ext4.zstd");
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
/// written), an edit in place (exit 5, naming the `--fork` command), a hostile build argument and an
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
    assert!(msg.contains(&format!(" inject-envd {id} --envd /bin/true --fork\n")), "{msg}");
    // Backups exist only beside builds edited in place: a bucket has none of tmpl's.
    let out = b.tmpl().args(["--storage", &url, "backups", id]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fork"));
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

// ---- Edits of builds in object storage: `--fork` reads the base from the bucket, `--to` says
// where the new build goes (issue 15 item 4).

/// SHA-256 of every object in a bucket, by key (to prove a base unchanged).
fn digests(b: &Bucket, url: &str) -> BTreeMap<String, String> {
    let store = tmpl::remote::Store::open(
        &tmpl::remote::parse_storage_url(url).unwrap(),
        &store_env(b),
        &tmpl::remote::Config::default(),
    )
    .unwrap();
    store
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| {
            let (d, _) = tmpl::copy::digest(&store, &o.key).unwrap();
            (o.key, tmpl::header::hex(&d))
        })
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    tmpl::header::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// The words of a POSIX sh command line quoted the way tmpl quotes (plain words, '...' with
/// '\'' for a quote).
fn sh_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if !quoted => {
                cur.extend(chars.next());
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// A compressed, layered demo build (LZ4 child over a zstd base) in S3: `inject-envd --fork --to`
/// another bucket writes a new build that verifies there and holds the new envd, leaving the
/// base's objects byte for byte as they were; the staging folder is gone afterwards. The same
/// without `--to` puts the fork beside its base; `--dry-run` writes nothing anywhere; an
/// in-place edit is refused (exit 5) with the exact `--fork` command, which then works; the
/// fork's ID taken at the destination is refused (exit 5); `--to` without `--fork` is a usage
/// error.
#[test]
fn inject_envd_fork_from_s3_to_another_bucket() {
    let Some(bins) = common::fixtures::bins() else { return };
    let (Some(src), Some(dst)) = (bucket(P::S3), bucket(P::S3)) else { return };
    let (base, child) = (tmpl::demo::ids::ZSTD_BASE, tmpl::demo::ids::LZ4_CHILD);
    src.upload(demo(), &[base, child]);
    let before = digests(&src, &src.url());
    let tmp = tempfile::tempdir().unwrap();
    let envd = bins.envd.to_str().unwrap();
    let run = |args: &[&str]| {
        let out =
            src.tmpl_patient().env("TMPDIR", tmp.path()).args(["--storage", &src.url()]).args(args).output().unwrap();
        let v = if out.stdout.is_empty() { Value::Null } else { json(&out) };
        (out.status.code(), v, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let new = "f5000000-0000-4000-8000-000000000001";
    // Dry run: the plan with its publish step, nothing written anywhere.
    let (code, v, err) =
        run(&["inject-envd", child, "--envd", envd, "--fork-id", new, "--to", &dst.url(), "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{err} {v}");
    assert_eq!(v["publish"]["status"], "planned");
    assert_eq!(v["publish"]["method"], "staged");
    assert!(object_keys(&dst, &dst.url()).is_empty(), "a dry run writes nothing at the destination");
    assert!(entries(tmp.path()).is_empty(), "a dry run stages nothing");
    // The fork, to the other bucket.
    let (code, v, err) = run(&["inject-envd", child, "--envd", envd, "--fork-id", new, "--to", &dst.url(), "--json"]);
    assert_eq!(code, Some(0), "{err} {v}");
    let p = &v["publish"];
    assert_eq!(
        (&p["status"], &p["method"], &p["verified"]),
        (&"published".into(), &"staged".into(), &true.into()),
        "{p}"
    );
    assert!(p["written"].as_u64().unwrap() >= 3 && p["staging_removed"] == true, "{p}");
    let keys: Vec<&str> = p["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert!(keys.iter().all(|k| k.starts_with(new)), "a full-image fork needs no ancestors: {keys:?}");
    assert_eq!(keys.last().copied(), Some(format!("{new}/metadata.json").as_str()), "metadata.json last");
    assert!(v["applied"]["build_dir"].as_str().unwrap().starts_with(&format!("s3://{}", dst.name)), "{v}");
    assert!(entries(tmp.path()).is_empty(), "the staging folder is removed: {:?}", entries(tmp.path()));
    assert_eq!(digests(&src, &src.url()), before, "the base's objects are unchanged");
    // At the destination: verify passes, the rootfs holds the new envd.
    let out = dst.tmpl().args(["--storage", &dst.url(), "verify", new, "--json"]).output().unwrap();
    let vv = json(&out);
    assert_eq!(out.status.code(), Some(0), "{vv}");
    assert_eq!(vv["builds"][0]["tally"]["errors"], 0, "{vv}");
    let out = dst
        .tmpl()
        .args(["--storage", &dst.url(), "inspect", new, "--path", "/usr/bin/envd", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["sha256"], sha256_hex(&bins.envd), "the fork's /usr/bin/envd is the new envd");
    // The same ID again: the destination holds it (exit 5), nothing changes there.
    let there = digests(&dst, &dst.url());
    let (code, _, err) = run(&["inject-envd", child, "--envd", envd, "--fork-id", new, "--to", &dst.url()]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(digests(&dst, &dst.url()), there);
    // --to without --fork: usage.
    let (code, _, err) = run(&["inject-envd", child, "--envd", envd, "--to", &dst.url()]);
    assert_eq!(code, Some(2), "{err}");
    // In place: refused with the exact --fork command, and that command works (the fork goes
    // beside its base in the same bucket).
    let (code, v, err) = run(&["inject-envd", child, "--envd", envd, "--json"]);
    assert_eq!(code, Some(5), "{err}");
    let details: Vec<&str> = v["error"]["details"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let line = details.iter().find_map(|d| d.split_once(": tmpl ").map(|(_, c)| c)).expect("a tmpl command line");
    assert!(line.ends_with(&format!("inject-envd {child} --envd {envd} --fork")), "{line}");
    assert_eq!(digests(&src, &src.url()), before, "a refused edit writes nothing");
    let words = sh_words(line);
    let out = src.tmpl_patient().env("TMPDIR", tmp.path()).arg("--json").args(&words).output().unwrap();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{line}: {v} {}", String::from_utf8_lossy(&out.stderr));
    let beside = v["plan"]["target"]["new_build_id"].as_str().unwrap().to_string();
    assert_eq!(v["publish"]["to"].as_str().unwrap().split('?').next(), src.url().split('?').next(), "{v}");
    let keys = digests(&src, &src.url());
    assert!(keys.contains_key(&format!("{beside}/metadata.json")), "the fork is beside its base");
    assert_eq!(keys.into_iter().filter(|(k, _)| !k.starts_with(&beside)).collect::<BTreeMap<_, _>>(), before);
    let out = src.tmpl().args(["--storage", &src.url(), "verify", &beside, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(entries(tmp.path()).is_empty());
}

/// A fork of a build in S3 (and GCS) to a local storage directory: written there directly (no
/// staging), verified there, the envd in it, the bucket unchanged.
#[test]
fn inject_envd_fork_from_s3_to_a_local_directory() {
    fork_to_a_local_directory(P::S3);
}

#[test]
fn inject_envd_fork_from_gcs_to_a_local_directory() {
    fork_to_a_local_directory(P::Gcs);
}

fn fork_to_a_local_directory(p: P) {
    let Some(bins) = common::fixtures::bins() else { return };
    let Some(src) = bucket(p) else { return };
    let (base, child) = (tmpl::demo::ids::ZSTD_BASE, tmpl::demo::ids::LZ4_CHILD);
    src.upload(demo(), &[base, child]);
    let before = digests(&src, &src.url());
    let (tmp, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let local = d.path().join("repaired");
    let new = "f5000000-0000-4000-8000-000000000002";
    let out = src
        .tmpl_patient()
        .env("TMPDIR", tmp.path())
        .args(["--storage", &src.url(), "inject-envd", child, "--envd"])
        .arg(&bins.envd)
        .args(["--fork-id", new, "--json", "--to"])
        .arg(&local)
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((&v["publish"]["method"], &v["publish"]["status"]), (&"direct".into(), &"published".into()));
    assert_eq!(entries(&local), vec![new.to_string()], "only the new build, no partial folder");
    assert!(entries(tmp.path()).is_empty(), "no staging for a local destination");
    let out = common::tmpl().arg("--storage").arg(&local).args(["verify", new, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(common::cat(&local, new, "/usr/bin/envd"), std::fs::read(&bins.envd).unwrap());
    assert_eq!(digests(&src, &src.url()), before);
}

/// A child build whose /sbin/init is a hand-written wrapper passing envd a flag it does not
/// accept (`-debug`), with a shell for it.
fn wrapper_child(t: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let init = t.join("sbin/init");
    std::fs::remove_file(&init).unwrap();
    std::fs::write(&init, tmpl::demo::hand_written_wrapper("-debug")).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(t.join("bin")).unwrap();
    let machine = tmpl::snapshot::Arch::host().unwrap_or(tmpl::snapshot::Arch::X86_64).elf_machine();
    std::fs::write(t.join("bin/sh"), tmpl::elf::synthetic(machine, None)).unwrap();
    std::fs::set_permissions(t.join("bin/sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sh", t.join("bin/mount")).unwrap();
}

/// `rewrite-wrapper` of a layered, compressed build in Azure: in place refused (exit 5, naming
/// the `--fork` command); `--fork` without `--to` writes the new build beside its base in the
/// same container, where it verifies without the wrapper's finding and runs envd with the
/// flags it accepts; the base's blobs are unchanged.
#[test]
fn rewrite_wrapper_fork_in_azure() {
    let Some(az) = bucket(P::Azure) else { return };
    let (d, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (base, child) = chain_with(d.path(), [0xb6; 16], [0xc6; 16], &wrapper_child);
    let (base, child) = (base.to_string(), child.to_string());
    az.upload(d.path(), &[&base, &child]);
    let before = digests(&az, &az.url());
    let url = az.url();
    let ids = |out: &std::process::Output| -> Vec<String> {
        common::findings_of(&json(out)).into_iter().map(|f| f.0).collect()
    };
    let out = az.tmpl().args(["--storage", &url, "verify", &child, "--json"]).output().unwrap();
    assert!(ids(&out).contains(&"wrapper.envd-flag".to_string()), "{}", String::from_utf8_lossy(&out.stdout));
    let out = az.tmpl().args(["--storage", &url, "rewrite-wrapper", &child]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!(" rewrite-wrapper {child} --fork\n")), "{err}");
    let out = az
        .tmpl_patient()
        .env("TMPDIR", tmp.path())
        .args(["--storage", &url, "rewrite-wrapper", &child, "--fork", "--json"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((&v["publish"]["status"], &v["publish"]["verified"]), (&"published".into(), &true.into()), "{v}");
    assert_eq!(v["publish"]["to"], url.as_str(), "beside its base");
    let new = v["plan"]["target"]["new_build_id"].as_str().unwrap().to_string();
    assert!(entries(tmp.path()).is_empty(), "the staging folder is removed");
    let out = az.tmpl().args(["--storage", &url, "verify", &new, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!ids(&out).contains(&"wrapper.envd-flag".to_string()));
    let out = az.tmpl().args(["--storage", &url, "inspect", &new, "--path", "/sbin/init", "--cat"]).output().unwrap();
    let init = String::from_utf8_lossy(&out.stdout);
    assert!(init.contains("/usr/bin/envd") && !init.contains("-debug"), "{init}");
    let after: BTreeMap<String, String> =
        digests(&az, &url).into_iter().filter(|(k, _)| !k.starts_with(&new)).collect();
    assert_eq!(after, before, "the base's blobs are unchanged");
}

/// Faults while a fork is published to S3: the destination answers 503 to every upload of
/// `metadata.json` (the last object): the run exits 4 with `storage.unavailable`, what it wrote
/// is deleted again, nothing of the fork is at the destination, the staging folder is gone and
/// the base unchanged. A run killed after staging leaves its staging folder and nothing at the
/// destination, and the next fork removes it; a failure there removes it at once. A destination
/// bucket that does not exist stops the run before anything is assembled (exit 4, nothing
/// staged).
#[test]
fn fork_publish_faults_leave_nothing_at_the_destination() {
    let Some(bins) = common::fixtures::bins() else { return };
    let (Some(src), Some(dst)) = (bucket(P::S3), bucket(P::S3)) else { return };
    let (base, child) = (tmpl::demo::ids::ZSTD_BASE, tmpl::demo::ids::LZ4_CHILD);
    src.upload(demo(), &[base, child]);
    let before = digests(&src, &src.url());
    let tmp = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(dst.server.port);
    let durl = dst.url_at(&proxy.endpoint());
    proxy.push(
        Some("PUT"),
        "metadata.json",
        usize::MAX,
        Action::Respond { status: 503, body: "<Error><Code>SlowDown</Code></Error>".into() },
    );
    let fork = |to: &str, json_out: bool| {
        let mut c = src.tmpl_patient();
        c.env("TMPDIR", tmp.path()).args(["--storage", &src.url(), "inject-envd", child, "--envd"]).arg(&bins.envd);
        c.args(["--fork", "--to", to]);
        if json_out {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = fork(&durl, true);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(4), "{v}");
    let p = &v["publish"];
    assert_eq!(p["status"], "failed", "{p}");
    let f = &p["failure"];
    assert!(f["key"].as_str().unwrap().ends_with("/metadata.json"), "{f}");
    assert_eq!(f["finding"]["id"], "storage.unavailable", "{f}");
    assert!(f["rolled_back"].as_array().unwrap().len() >= 2, "the data and header were written, then deleted: {f}");
    assert!(f["left_behind"].as_array().unwrap().is_empty(), "{f}");
    assert!(v.get("applied").is_none(), "no applied build is reported: {v}");
    assert!(object_keys(&dst, &dst.url()).is_empty(), "nothing of the fork at the destination");
    assert!(entries(tmp.path()).is_empty(), "the staging folder is removed on failure too");
    assert_eq!(digests(&src, &src.url()), before);
    // The text report says so.
    let out = fork(&durl, false);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED") && text.contains("nothing of the fork is at the destination"), "{text}");
    assert!(object_keys(&dst, &dst.url()).is_empty());
    // Killed after staging (SIGKILL: nothing of tmpl runs after it): the staging folder stays,
    // nothing is at the destination; the next such fork removes it and says so.
    proxy.clear();
    let killed = {
        let mut c = src.tmpl_patient();
        c.env("TMPDIR", tmp.path()).env(tmpl::edit::fault::FAULT_ENV, "kill:staged");
        c.args(["--storage", &src.url(), "inject-envd", child, "--envd"]).arg(&bins.envd);
        c.args(["--fork", "--to", &durl]).output().unwrap()
    };
    assert_eq!(killed.status.code(), None, "killed by a signal");
    let left = entries(tmp.path());
    assert!(left.len() == 1 && left[0].starts_with("tmpl-stage-"), "{left:?}");
    assert!(object_keys(&dst, &dst.url()).is_empty());
    // A failure after staging (in-process): the staging folder of this run is removed.
    let failed = {
        let mut c = src.tmpl_patient();
        c.env("TMPDIR", tmp.path()).env(tmpl::edit::fault::FAULT_ENV, "staged");
        c.args(["--storage", &src.url(), "inject-envd", child, "--envd"]).arg(&bins.envd);
        c.args(["--fork", "--to", &durl]).output().unwrap()
    };
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stderr));
    assert!(entries(tmp.path()).is_empty(), "the killed run's stage and this run's are gone");
    assert!(object_keys(&dst, &dst.url()).is_empty());
    std::fs::create_dir(tmp.path().join("tmpl-stage-deadbeef")).unwrap();
    std::fs::write(tmp.path().join("tmpl-stage-deadbeef/.tmpl-stage.json"), b"{}").unwrap();
    let out = fork(&durl, true);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert!(v["notes"].to_string().contains("tmpl-stage-deadbeef"), "the dead stage is named: {}", v["notes"]);
    assert!(entries(tmp.path()).is_empty());
    // A bucket that does not exist: refused before anything is assembled.
    let missing =
        format!("s3://{}-gone?endpoint={}&s3ForcePathStyle=true&region=us-east-1", dst.name, dst.server.endpoint());
    let out = fork(&missing, false);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be listed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(entries(tmp.path()).is_empty(), "nothing staged");
    assert_eq!(digests(&src, &src.url()), before);
}
