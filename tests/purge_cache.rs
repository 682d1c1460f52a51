//! `tmpl purge-cache` end to end on temporary trees shaped like orchestrator nodes: every cache
//! kind, two builds, symlinks pointing out of the roots at a sentinel, a root that is not a
//! cache, files held open by this test process, the orchestrator lock held with flock, dry runs
//! that change nothing, byte counts against `du`, crash safety of the trash step, the cluster
//! summary and the Nomad job file.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tmpl::cache::{EntryStatus, LockState, Verdict};
use tmpl::commands::purge_cache::PurgeReport;

const A: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const B: &str = "bbbbbbbb-2222-4222-8222-222222222222";
/// A build whose template-cache entry is a symlink out of the root.
const C: &str = "cccccccc-3333-4333-8333-333333333333";

/// A node: every cache root under one temporary folder, plus an outside folder with a sentinel.
struct Node {
    _dir: tempfile::TempDir,
    top: PathBuf,
}

fn write(p: &Path, bytes: usize) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, vec![0x5au8; bytes]).unwrap();
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().to_path_buf();
        let n = Node { _dir: dir, top };
        let outside = n.outside();
        write(&outside.join("sentinel"), 100);
        for id in [A, B] {
            // Template cache, current layout, and the old <templateID>/<buildID> one with a
            // per-sandbox folder inside.
            write(&n.template().join(id).join("cache/0f0f0f0f-0000-4000-8000-000000000000/snapfile"), 20_000);
            write(&n.template().join(id).join("cache/0f0f0f0f-0000-4000-8000-000000000000/metadata.json"), 300);
            write(
                &n.template().join("base-tpl").join(id).join("cache/1e1e1e1e-0000-4000-8000-000000000000/snapfile"),
                5000,
            );
            write(&n.template().join("base-tpl").join(id).join("cache/1e1e/sandbox/isb/rnd/rootfs.ext4"), 9000);
            // Build cache: flat files, one sparse.
            write(&n.build().join(format!("{id}-rootfs.ext4-r4nd0m")), 12_345);
            let sparse = std::fs::File::create(n.build().join(format!("{id}-memfile-x1"))).unwrap();
            sparse.set_len(512 << 20).unwrap();
            std::fs::write(n.build().join(format!("resize-disk-{id}-grow.cache")), b"x").unwrap();
            // Chunk cache: <build>/<object>/ trees.
            for obj in ["memfile", "rootfs.ext4", "snapfile"] {
                for c in 0..4 {
                    write(&n.chunks().join(id).join(obj).join(format!("{c:012}-4194304.bin")), 4096 * (c + 1));
                }
                std::fs::write(n.chunks().join(id).join(obj).join("size.txt"), b"16777216").unwrap();
            }
            // Snapshot cache.
            write(&n.snapshot().join(format!("{id}-memfile-77777777-0000-4000-8000-000000000000.full")), 8192);
        }
        // A symlink out of the chunk tree of A, at the sentinel; and a template entry that is a
        // symlink to the outside folder.
        symlink(outside.join("sentinel"), n.chunks().join(A).join("memfile/evil-link")).unwrap();
        symlink(&outside, n.template().join(C)).unwrap();
        // Sandbox cache: sandbox 1 ran build A (its .link names A's template cache), sandbox 2's
        // link names a device.
        write(&n.sandbox().join("rootfs-isb1-r1.cow"), 40_000);
        symlink(n.template().join(A).join("cache/rootfs.ext4"), n.sandbox().join("rootfs-isb1-r1.link")).unwrap();
        write(&n.sandbox().join("rootfs-isb2-r2.cow"), 40_000);
        symlink("/dev/nbd7", n.sandbox().join("rootfs-isb2-r2.link")).unwrap();
        // Files of other builds or no build stay.
        write(&n.build().join("unrelated.txt"), 10);
        n
    }

    fn outside(&self) -> PathBuf {
        self.top.join("outside")
    }
    fn base(&self) -> PathBuf {
        self.top.join("orchestrator")
    }
    fn template(&self) -> PathBuf {
        self.base().join("template")
    }
    fn build(&self) -> PathBuf {
        self.base().join("build")
    }
    fn sandbox(&self) -> PathBuf {
        self.base().join("sandbox")
    }
    fn chunks(&self) -> PathBuf {
        self.top.join("chunks")
    }
    fn snapshot(&self) -> PathBuf {
        self.top.join("snapshot-cache")
    }
    fn lock(&self) -> PathBuf {
        self.top.join("orchestrator.lock")
    }

    /// `tmpl purge-cache` with this node's roots from the environment, as on a node.
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = common::tmpl();
        c.env_clear()
            .env("ORCHESTRATOR_BASE_PATH", self.base())
            .env("SHARED_CHUNK_CACHE_PATH", self.chunks())
            .env("SNAPSHOT_CACHE_DIR", self.snapshot())
            .env("ORCHESTRATOR_LOCK_PATH", self.lock())
            .env("TMPL_STORAGE", self.top.join("storage"))
            .env("TMPL_NODE_NAME", "node-under-test")
            .args(["--no-progress", "purge-cache"]);
        c
    }

    /// Run with `--json`; (exit code, document).
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap(), doc)
    }

    /// Run with `--json`; (exit code, the typed report).
    fn report(&self, args: &[&str]) -> (i32, PurgeReport) {
        let (code, doc) = self.json(args);
        (code, typed(&doc))
    }

    /// Every path under the node with type, size, mtime and inode: a full listing.
    fn listing(&self) -> BTreeMap<PathBuf, (u32, u64, i64, u64)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.top.clone()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.strip_prefix(&self.top).unwrap().to_path_buf(),
                (m.mode(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino()),
            );
            if m.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        out
    }
}

/// A purge document read as the report type the binary serialised; the typed report serialises
/// back to the same document (less the envelope: format version, command, ok), so no field is lost
/// or renamed on the way, flattened ones included.
#[track_caller]
fn typed(doc: &Value) -> PurgeReport {
    let r: PurgeReport = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    let mut plain = doc.clone();
    for k in ["format_version", "command", "ok"] {
        assert!(plain.as_object_mut().unwrap().remove(k).is_some(), "no {k} in {doc:#}");
    }
    assert_eq!(serde_json::to_value(&r).unwrap(), plain);
    r
}

fn cache<'a>(doc: &'a Value, kind: &str) -> &'a Value {
    doc["caches"].as_array().unwrap().iter().find(|c| c["kind"] == kind).unwrap()
}

fn paths(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn du(p: &str) -> u64 {
    let out = Command::new("du").args(["-B1", "-s"]).arg(p).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn dry_run_changes_nothing_and_plans_every_entry_of_the_build() {
    let n = Node::new();
    let before = n.listing();
    let (code, doc) = n.json(&["--build-id", A, "--dry-run"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(n.listing(), before, "a dry run changed the tree");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["node"], "node-under-test");
    let t = |p: PathBuf| p.to_string_lossy().into_owned();
    assert_eq!(
        paths(&cache(&doc, "template")["entries"]),
        vec![t(n.template().join(A)), t(n.template().join("base-tpl").join(A))]
    );
    assert_eq!(
        paths(&cache(&doc, "build")["entries"]),
        vec![
            t(n.build().join(format!("{A}-memfile-x1"))),
            t(n.build().join(format!("{A}-rootfs.ext4-r4nd0m"))),
            t(n.build().join(format!("resize-disk-{A}-grow.cache")))
        ]
    );
    assert_eq!(paths(&cache(&doc, "chunk")["entries"]), vec![t(n.chunks().join(A))]);
    assert_eq!(
        paths(&cache(&doc, "sandbox")["entries"]),
        vec![t(n.sandbox().join("rootfs-isb1-r1.cow")), t(n.sandbox().join("rootfs-isb1-r1.link"))]
    );
    assert_eq!(paths(&cache(&doc, "snapshot")["entries"]).len(), 1);
    let r = typed(&doc);
    assert!(r.outcome.dry_run && r.outcome.verdict == Verdict::Clean, "{r:#?}");
    for e in r.outcome.caches.iter().flat_map(|c| &c.facts.entries) {
        assert_eq!((e.status, e.freed_bytes), (EntryStatus::Planned, 0), "{e:#?}");
    }
    // Text mode says the same, and a second dry run too.
    let out = n.cmd().args(["--build-id", A, "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run: nothing deleted") && text.contains("would purge"), "{text}");
    assert_eq!(n.listing(), before);
}

#[test]
fn only_the_named_builds_go_and_bytes_match_du() {
    let n = Node::new();
    let (_, plan) = n.report(&["--build-id", A, "--dry-run"]);
    // du of every planned entry, before anything is deleted.
    let mut expected = BTreeMap::new();
    for e in plan.outcome.caches.iter().flat_map(|c| &c.facts.entries) {
        let p = e.entry.path.to_string_lossy().into_owned();
        let d = du(&p);
        assert_eq!(e.entry.allocated_bytes, d, "{p}: report vs du -B1 -s");
        expected.insert(p, d);
    }
    // The sparse 512 MiB memfile counts as what it occupies, not its length.
    let sparse = n.build().join(format!("{A}-memfile-x1")).to_string_lossy().into_owned();
    assert!(expected[&sparse] < 1 << 20);
    let b_before: Vec<(PathBuf, u64)> =
        [n.template().join(B), n.chunks().join(B), n.template().join("base-tpl").join(B)]
            .into_iter()
            .map(|p| {
                let d = du(&p.to_string_lossy());
                (p, d)
            })
            .collect();

    let (code, doc) = n.report(&["--build-id", A]);
    assert_eq!(code, 0, "{doc:#?}");
    assert_eq!(doc.outcome.verdict, Verdict::Clean);
    assert_eq!(doc.exit_code, 0);
    let mut freed = 0;
    for e in doc.outcome.caches.iter().flat_map(|c| &c.facts.entries) {
        let p = e.entry.path.to_string_lossy().into_owned();
        assert_eq!(e.status, EntryStatus::Purged, "{p}");
        assert_eq!(e.freed_bytes, expected[&p], "{p}");
        assert!(std::fs::symlink_metadata(&p).is_err(), "{p} still exists");
        freed += expected[&p];
    }
    assert_eq!(doc.outcome.totals.freed_bytes, freed);
    assert_eq!(doc.outcome.totals.purged, expected.len());
    // B is untouched, byte for byte; so are the sentinel, the symlinked entry, unrelated files
    // and the sandbox that is not tied to A.
    for (p, d) in b_before {
        assert_eq!(du(&p.to_string_lossy()), d, "{p:?}");
    }
    assert!(n.build().join(format!("{B}-memfile-x1")).exists());
    assert!(n.snapshot().join(format!("{B}-memfile-77777777-0000-4000-8000-000000000000.full")).exists());
    assert_eq!(std::fs::read(n.outside().join("sentinel")).unwrap().len(), 100);
    assert!(std::fs::symlink_metadata(n.template().join(C)).unwrap().file_type().is_symlink());
    assert!(n.build().join("unrelated.txt").exists());
    assert!(n.sandbox().join("rootfs-isb2-r2.cow").exists());
    assert!(n.template().join("base-tpl").exists());
    // No trash left anywhere.
    let trash: Vec<_> = n.listing().into_keys().filter(|p| p.to_string_lossy().contains(".tmpl-trash-")).collect();
    assert!(trash.is_empty(), "{trash:?}");
}

#[test]
fn symlinks_out_of_a_root_are_removed_as_links_and_symlinked_roots_are_reported() {
    let n = Node::new();
    // The template cache root itself reached through a symlink.
    let link_root = n.top.join("tc-link");
    symlink(n.template(), &link_root).unwrap();
    let (code, doc) = n.cmd_json_with(&["--build-id", C, "--template-cache", link_root.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc:#}");
    let tc = cache(&doc, "template");
    assert_eq!(tc["symlink"], link_root.to_string_lossy().as_ref());
    assert_eq!(tc["root"], std::fs::canonicalize(n.template()).unwrap().to_string_lossy().as_ref());
    assert_eq!(tc["entries"][0]["type"], "symlink");
    assert!(std::fs::symlink_metadata(n.template().join(C)).is_err(), "the link is gone");
    assert_eq!(std::fs::read(n.outside().join("sentinel")).unwrap().len(), 100, "its target survives");
    // Purging A deletes A's chunk tree with the link inside it, never the sentinel it points at.
    let (code, _) = n.json(&["--build-id", A, "--cache", "chunk"]);
    assert_eq!(code, 0);
    assert!(!n.chunks().join(A).exists());
    assert_eq!(std::fs::read(n.outside().join("sentinel")).unwrap().len(), 100);
}

impl Node {
    fn cmd_json_with(&self, args: &[&str]) -> (i32, Value) {
        self.json(args)
    }
}

#[test]
fn a_root_that_is_not_a_cache_is_refused_untouched() {
    let n = Node::new();
    // SNAPSHOT_CACHE_DIR pointed one level too high; the chunk cache pointed at template storage.
    let storage = n.top.join("storage");
    write(&storage.join(A).join("rootfs.ext4"), 4096);
    write(&storage.join(A).join("metadata.json"), 100);
    let before = n.listing();
    let out = n
        .cmd()
        .env("SNAPSHOT_CACHE_DIR", &n.top)
        .env("SHARED_CHUNK_CACHE_PATH", &storage)
        .env("TMPL_STORAGE", "/nonexistent/tmpl-test-storage")
        .args(["--json", "--build-id", A, "--cache", "snapshot,chunk"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cache(&doc, "snapshot")["status"], "refused", "{doc:#}");
    assert!(cache(&doc, "snapshot")["reason"].as_str().unwrap().contains("one level too high"));
    assert_eq!(cache(&doc, "chunk")["status"], "refused");
    assert_eq!(doc["totals"]["refused_roots"], 2);
    assert_eq!(n.listing(), before);
    // The same storage, when it is the configured template storage, is refused by name.
    let (code, doc) = n.json(&["--build-id", A, "--cache", "chunk", "--chunk-cache", storage.to_str().unwrap()]);
    assert_eq!(code, 5);
    assert!(cache(&doc, "chunk")["reason"].as_str().unwrap().contains("template storage"), "{doc:#}");
    // A stored build inside a real chunk cache is skipped, the rest purged.
    write(&n.chunks().join(C).join("memfile"), 4096);
    let (code, doc) = n.json(&["--build-id", &format!("{A},{C}"), "--cache", "chunk"]);
    assert_eq!(code, 5);
    let chunk = cache(&doc, "chunk");
    assert_eq!(chunk["skipped"][0]["reason"], "not-cache-shaped");
    assert!(n.chunks().join(C).join("memfile").exists() && !n.chunks().join(A).exists());
}

#[test]
fn open_entries_are_kept_and_reported() {
    let n = Node::new();
    let snap = n.template().join(A).join("cache/0f0f0f0f-0000-4000-8000-000000000000/snapfile");
    let cow = n.sandbox().join("rootfs-isb1-r1.cow");
    let _f1 = std::fs::File::open(&snap).unwrap();
    let _f2 = std::fs::File::open(&cow).unwrap();
    let (code, doc) = n.json(&["--build-id", A]);
    assert_eq!(code, 5, "{doc:#}");
    assert_eq!(doc["verdict"], "safety-skipped");
    let tc = cache(&doc, "template");
    assert_eq!(tc["skipped"][0]["path"], n.template().join(A).to_string_lossy().as_ref());
    assert_eq!(tc["skipped"][0]["reason"], "in-use");
    assert!(tc["skipped"][0]["detail"].as_str().unwrap().contains(&format!("pid {}", std::process::id())));
    // The whole sandbox stays: its .cow is open, so its .link stays too.
    assert_eq!(cache(&doc, "sandbox")["skipped"].as_array().unwrap().len(), 2);
    assert!(
        snap.exists() && cow.exists() && std::fs::symlink_metadata(n.sandbox().join("rootfs-isb1-r1.link")).is_ok()
    );
    // Everything else of A went.
    assert!(!n.chunks().join(A).exists() && !n.template().join("base-tpl").join(A).exists());
    assert!(!n.build().join(format!("{A}-memfile-x1")).exists());
}

#[test]
fn a_held_orchestrator_lock_limits_the_purge_to_the_chunk_cache_unless_forced() {
    let n = Node::new();
    std::fs::write(n.lock(), format!("{}\n", std::process::id())).unwrap();
    let lock = std::fs::File::open(n.lock()).unwrap();
    lock.lock().unwrap();
    let (code, doc) = n.json(&["--build-id", A]);
    assert_eq!(code, 5, "{doc:#}");
    let o = typed(&doc).outcome.orchestrator;
    assert_eq!(o.lock, LockState::Held);
    assert!(o.running);
    assert_eq!(o.pids, vec![std::process::id()]);
    assert!(!n.chunks().join(A).exists(), "the shared chunk cache is purged live");
    for kind in ["template", "build", "sandbox", "snapshot"] {
        let c = cache(&doc, kind);
        assert!(c["entries"].as_array().unwrap().is_empty(), "{kind}");
        for s in c["skipped"].as_array().unwrap() {
            assert_eq!(s["reason"], "orchestrator-running");
        }
    }
    assert!(n.template().join(A).exists() && n.build().join(format!("{A}-memfile-x1")).exists());
    // The lock is only read: this process still holds it, nobody else took it.
    assert!(std::fs::read_to_string("/proc/locks").unwrap().contains(&format!(" {} ", std::process::id())));
    let (code, doc) = n.json(&["--build-id", A, "--force"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(!n.template().join(A).exists() && !n.build().join(format!("{A}-memfile-x1")).exists());
    lock.unlock().unwrap();
}

#[test]
fn flock_command_holding_the_lock_counts_too() {
    if !common::require("flock") {
        return;
    }
    let n = Node::new();
    std::fs::write(n.lock(), b"").unwrap();
    let mut holder = Command::new("flock").arg(n.lock()).args(["sleep", "30"]).spawn().unwrap();
    // Wait until the lock shows.
    for _ in 0..100 {
        if std::fs::read_to_string("/proc/locks").unwrap().lines().any(|l| l.contains(&format!(" {} ", holder.id()))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, doc) = n.json(&["--build-id", A, "--dry-run"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 5);
    assert_eq!(doc["orchestrator"]["lock"], "held", "{doc:#}");
    assert_eq!(cache(&doc, "chunk")["entries"].as_array().unwrap().len(), 1);
}

#[test]
fn non_uuid_build_ids_are_refused_before_touching_anything() {
    let n = Node::new();
    let before = n.listing();
    for bad in ["..", "*", "base-tpl", &format!("{A},../x"), &format!("{A}/"), "", " ", ","] {
        let out = n.cmd().args(["--build-id", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "--build-id {bad:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid build ID"), "--build-id {bad:?}");
    }
    assert_eq!(n.listing(), before);
    n.cmd().args(["--build-id", A, "--all"]).assert().code(2);
    n.cmd().assert().code(2);
}

#[test]
fn all_purges_every_build_and_unused_sandbox_files() {
    let n = Node::new();
    let (code, doc) = n.json(&["--all"]);
    assert_eq!(code, 0, "{doc:#}");
    for id in [A, B] {
        assert!(!n.chunks().join(id).exists() && !n.template().join(id).exists());
    }
    assert!(!n.sandbox().join("rootfs-isb2-r2.cow").exists());
    assert!(n.build().join("unrelated.txt").exists());
    assert_eq!(std::fs::read(n.outside().join("sentinel")).unwrap().len(), 100);
}

/// Kill the purge at many moments, from right after its trash folder appears (mid-staging) to
/// deep into the parallel delete: every entry is either whole in its place or gone from it
/// (renamed into the trash), never half-deleted; the next run removes the leftover trash.
#[test]
fn an_interrupted_purge_never_leaves_a_half_deleted_entry() {
    let n = Node::new();
    let gen_ids: Vec<String> = (0..12).map(|i| format!("dddddddd-0000-4000-8000-{i:012}")).collect();
    let files_per = 600;
    let fill = |id: &str| {
        for obj in ["memfile", "rootfs.ext4"] {
            for c in 0..files_per / 2 {
                write(&n.chunks().join(id).join(obj).join(format!("{c:012}-4194304.bin")), 64);
            }
        }
    };
    let trash_in = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains(".tmpl-trash-"))
    };
    let mut interrupted = 0;
    for extra_ms in [0u64, 0, 1, 3, 10, 30] {
        for id in &gen_ids {
            if !n.chunks().join(id).exists() {
                fill(id);
            }
        }
        let ids = gen_ids.join(",");
        let mut child =
            n.cmd_std().args(["--json", "--cache", "chunk", "--jobs", "2", "--build-id", &ids]).spawn().unwrap();
        let t0 = std::time::Instant::now();
        while trash_in(&n.chunks()).is_none() && t0.elapsed() < std::time::Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(extra_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() && trash_in(&n.chunks()).is_some() {
            interrupted += 1;
        }
        for id in &gen_ids {
            let p = n.chunks().join(id);
            if p.exists() {
                assert_eq!(
                    walk_count(&p),
                    files_per + 3,
                    "{p:?} is half-deleted after a kill {extra_ms} ms into the purge"
                );
            }
        }
        // The next run reports the trash as leftover and clears it.
        let (code, doc) = n.json(&["--build-id", &ids, "--cache", "chunk"]);
        assert_eq!(code, 0, "{doc:#}");
        for e in cache(&doc, "chunk")["entries"].as_array().unwrap() {
            assert_eq!(e["status"], "purged", "{e:#}");
        }
        assert!(trash_in(&n.chunks()).is_none());
        assert!(gen_ids.iter().all(|id| !n.chunks().join(id).exists()));
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} rounds were killed after staging began: the test did not exercise the trash"
    );
}

/// Inodes under a folder, itself included.
fn walk_count(p: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(q) = stack.pop() {
        n += 1;
        if std::fs::symlink_metadata(&q).unwrap().is_dir() {
            stack.extend(std::fs::read_dir(&q).unwrap().map(|e| e.unwrap().path()));
        }
    }
    n
}

impl Node {
    fn cmd_std(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("tmpl"));
        c.env_clear()
            .env("ORCHESTRATOR_BASE_PATH", self.base())
            .env("SHARED_CHUNK_CACHE_PATH", self.chunks())
            .env("ORCHESTRATOR_LOCK_PATH", self.lock())
            .args(["--no-progress", "purge-cache"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    }
}

#[test]
fn show_roots_says_where_each_root_came_from() {
    let n = Node::new();
    let (code, doc) = n.json(&["--show-roots", "--sandbox-cache", "/x/sbx"]);
    assert_eq!(code, 0);
    let roots = doc["caches"].as_array().unwrap();
    let get = |k: &str| roots.iter().find(|c| c["kind"] == k).unwrap();
    assert_eq!(get("template")["path"], n.template().to_string_lossy().as_ref());
    assert_eq!(get("template")["source"]["detail"], "ORCHESTRATOR_BASE_PATH + /template");
    assert_eq!(get("chunk")["source"]["kind"], "env");
    assert_eq!(get("sandbox")["source"]["kind"], "flag");
    assert_eq!(get("sandbox")["state"], "absent");
    assert_eq!(doc["orchestrator"]["lock"], "absent");
    // The self-hosted e2b-* layout.
    let e2b = n.top.join("e2b-storage");
    write(&e2b.join("e2b-chunk-cache").join(A).join("memfile/000000000000-4194304.bin"), 4096);
    std::fs::create_dir_all(e2b.join("e2b-template-storage").join(A)).unwrap();
    let out = common::tmpl().env_clear().args(["purge-cache", "--show-roots", "--e2b-dir"]).arg(&e2b).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("e2b-chunk-cache") && text.contains("--e2b-dir + /e2b-chunk-cache"), "{text}");
    let (code, doc) = n.json(&["--build-id", A, "--e2b-dir", e2b.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(cache(&doc, "chunk")["entries"][0]["status"], "purged");
    assert!(e2b.join("e2b-template-storage").join(A).exists());
}

#[test]
fn summarize_merges_node_reports() {
    let n1 = Node::new();
    let n2 = Node::new();
    let d = tempfile::tempdir().unwrap();
    let r1 = d.path().join("n1.json");
    let r2 = d.path().join("n2.json");
    let out1 = n1.cmd().env("TMPL_NODE_NAME", "n1").args(["--json", "--build-id", A]).output().unwrap();
    std::fs::write(&r1, &out1.stdout).unwrap();
    // Node 2: the orchestrator runs.
    let lock = std::fs::File::create(n2.lock()).unwrap();
    lock.lock().unwrap();
    let out2 = n2.cmd().env("TMPL_NODE_NAME", "n2").args(["--json", "--build-id", A]).output().unwrap();
    std::fs::write(&r2, &out2.stdout).unwrap();
    let one: Value = serde_json::from_slice(&out1.stdout).unwrap();

    let out = common::tmpl().args(["--json", "purge-cache", "--summarize"]).arg(&r1).arg(&r2).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["totals"]["nodes"], 2);
    assert_eq!(s["totals"]["clean"], 1);
    assert_eq!(s["totals"]["safety_skipped"], 1);
    assert_eq!(s["nodes"][1]["orchestrator_running"], true);
    assert_eq!(s["build_ids"][0], A);
    let freed1 = one["totals"]["freed_bytes"].as_u64().unwrap();
    let freed2: u64 = serde_json::from_slice::<Value>(&out2.stdout).unwrap()["totals"]["freed_bytes"].as_u64().unwrap();
    assert_eq!(s["totals"]["freed_bytes"].as_u64().unwrap(), freed1 + freed2);
    assert!(s["skipped"].as_array().unwrap().iter().all(|k| k["node"] == "n2"));

    // Concatenated on stdin (as `nomad alloc logs` piped), plus a node that sent nothing useful.
    let mut stream = out1.stdout.clone();
    stream.extend_from_slice(b"\n");
    stream.extend_from_slice(&out1.stdout);
    let out = common::tmpl()
        .args(["purge-cache", "--summarize", "-", "--expect-nodes", "2"])
        .write_stdin(stream.clone())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = common::tmpl()
        .args(["purge-cache", "--summarize", "-", "--expect-nodes", "3"])
        .write_stdin(stream)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 of 3 expected nodes did not report"));
    let out = common::tmpl().args(["purge-cache", "--summarize", "-"]).write_stdin("Killed\n").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    lock.unlock().unwrap();
}

#[test]
fn the_nomad_job_is_a_parameterized_sysbatch_running_purge_cache_json() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nomad/tmpl-purge-cache.hcl")).unwrap();
    let body: hcl::Body = hcl::parse(&text).expect("the job file parses as HCL");
    let job = body.blocks().find(|b| b.identifier() == "job").expect("a job block");
    assert_eq!(job.labels()[0].as_str(), "tmpl-purge-cache");
    let attr = |b: &hcl::Body, k: &str| b.attributes().find(|a| a.key.as_str() == k).map(|a| a.expr.clone());
    assert_eq!(attr(job.body(), "type"), Some(hcl::Expression::String("sysbatch".into())));
    let param = job.body().blocks().find(|b| b.identifier() == "parameterized").expect("parameterized");
    let strings = |e: Option<hcl::Expression>| -> Vec<String> {
        match e {
            Some(hcl::Expression::Array(v)) => v
                .into_iter()
                .map(|x| match x {
                    hcl::Expression::String(s) => s,
                    hcl::Expression::TemplateExpr(t) => t.to_string(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        }
    };
    assert_eq!(strings(attr(param.body(), "meta_required")), vec!["build_ids"]);
    assert_eq!(strings(attr(param.body(), "meta_optional")), vec!["dry_run", "force"]);
    // Defaults for the optional parameters.
    let meta = job.body().blocks().find(|b| b.identifier() == "meta").expect("meta defaults");
    assert!(attr(meta.body(), "dry_run").is_some() && attr(meta.body(), "force").is_some());
    let group = job.body().blocks().find(|b| b.identifier() == "group").unwrap();
    let task = group.body().blocks().find(|b| b.identifier() == "task").unwrap();
    assert_eq!(task.labels()[0].as_str(), "purge-cache");
    assert_eq!(attr(task.body(), "driver"), Some(hcl::Expression::String("raw_exec".into())));
    let config = task.body().blocks().find(|b| b.identifier() == "config").unwrap();
    // tmpl comes from the node (tmpl_path, the Debian package's /usr/bin/tmpl) or, with
    // tmpl_url, from an artifact unpacked into local/.
    let artifact = task.body().blocks().find(|b| b.identifier() == "dynamic" && b.labels()[0].as_str() == "artifact");
    let artifact = artifact.expect("a dynamic artifact block");
    let content = artifact.body().blocks().find(|b| b.identifier() == "content").unwrap();
    assert_eq!(attr(content.body(), "destination"), Some(hcl::Expression::String("local/".into())));
    let command = format!("{:?}", attr(config.body(), "command").expect("command"));
    assert!(
        command.contains("tmpl_url") && command.contains("tmpl_path") && command.contains("local/tmpl"),
        "{command}"
    );
    let var_default = |name: &str| {
        let v = body.blocks().find(|b| b.identifier() == "variable" && b.labels()[0].as_str() == name).unwrap();
        attr(v.body(), "default")
    };
    assert_eq!(var_default("tmpl_path"), Some(hcl::Expression::String("/usr/bin/tmpl".into())));
    assert_eq!(var_default("tmpl_url"), Some(hcl::Expression::String(String::new())));
    let args = strings(attr(config.body(), "args"));
    assert_eq!(&args[..2], ["purge-cache", "--json"]);
    let i = args.iter().position(|a| a == "--build-id").expect("--build-id");
    assert_eq!(args[i + 1], "${NOMAD_META_build_ids}");
    // dry_run/force reach the plain flags through their environment variables.
    let env = task.body().blocks().find(|b| b.identifier() == "env").unwrap();
    let tmpl_env = |k: &str| match attr(env.body(), k) {
        Some(hcl::Expression::TemplateExpr(t)) => t.to_string(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(tmpl_env("TMPL_PURGE_DRY_RUN"), "${NOMAD_META_dry_run}");
    assert_eq!(tmpl_env("TMPL_PURGE_FORCE"), "${NOMAD_META_force}");
    // Every cache variable reaches the task's environment.
    let env = task.body().blocks().find(|b| b.identifier() == "env").unwrap();
    for k in [
        "ORCHESTRATOR_BASE_PATH",
        "TEMPLATE_CACHE_DIR",
        "DEFAULT_CACHE_DIR",
        "SHARED_CHUNK_CACHE_PATH",
        "SANDBOX_CACHE_DIR",
        "SNAPSHOT_CACHE_DIR",
        "ORCHESTRATOR_LOCK_PATH",
    ] {
        assert!(attr(env.body(), k).is_some(), "{k} missing from env");
    }
    // The arguments the job passes are ones tmpl accepts (with the meta values substituted).
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("${NOMAD_META_build_ids}", &format!("{A},{B}"))
                .replace("${NOMAD_META_dry_run}", "true")
                .replace("${NOMAD_META_force}", "false")
                .replace("${node.unique.name}", "n1")
        })
        .collect();
    let n = Node::new();
    let before = n.listing();
    let out = common::tmpl()
        .env_clear()
        .env("ORCHESTRATOR_BASE_PATH", n.base())
        .env("ORCHESTRATOR_LOCK_PATH", n.lock())
        .env("TMPL_PURGE_DRY_RUN", "true")
        .env("TMPL_PURGE_FORCE", "false")
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["node"], "n1");
    assert_eq!(doc["build_ids"].as_array().unwrap().len(), 2);
    assert_eq!(n.listing(), before);
}

/// A process named `firecracker` holding a file of the build counts as a running orchestrator
/// (development mode takes no lock): only the shared chunk cache is purged.
#[test]
fn firecracker_holding_a_build_file_means_the_orchestrator_runs() {
    let n = Node::new();
    let fc = n.top.join("bin/firecracker");
    std::fs::create_dir_all(fc.parent().unwrap()).unwrap();
    std::fs::copy(std::fs::canonicalize("/bin/sh").unwrap(), &fc).unwrap();
    let held = n.build().join(format!("{A}-rootfs.ext4-r4nd0m"));
    let mut proc_ = Command::new(&fc)
        .arg("-c")
        .arg(format!("exec 3<'{}'; exec 4>'{}/ready'; sleep 30", held.display(), n.top.display()))
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !n.top.join("ready").exists() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (code, doc) = n.json(&["--build-id", A]);
    let _ = proc_.kill();
    let _ = proc_.wait();
    assert_eq!(code, 5, "{doc:#}");
    assert_eq!(doc["orchestrator"]["running"], true);
    assert_eq!(doc["orchestrator"]["firecracker"][0]["comm"], "firecracker");
    assert!(doc["orchestrator"]["reason"].as_str().unwrap().contains("Firecracker"));
    assert!(!n.chunks().join(A).exists());
    let tc = cache(&doc, "template");
    assert_eq!(tc["skipped"][0]["reason"], "orchestrator-running");
    assert!(n.template().join(A).exists() && held.exists());
}

/// deploy/nomad/collect.sh against a stand-in `nomad` that serves two nodes' real reports.
#[test]
fn collect_script_dispatches_waits_and_summarizes() {
    let n1 = Node::new();
    let d = tempfile::tempdir().unwrap();
    let out1 = n1.cmd().env("TMPL_NODE_NAME", "n1").args(["--json", "--build-id", A]).output().unwrap();
    std::fs::write(d.path().join("a1.json"), &out1.stdout).unwrap();
    let n2 = Node::new();
    let out2 = n2.cmd().env("TMPL_NODE_NAME", "n2").args(["--json", "--build-id", A]).output().unwrap();
    std::fs::write(d.path().join("a2.json"), &out2.stdout).unwrap();
    let fake = d.path().join("nomad");
    std::fs::write(
        &fake,
        r#"#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
case "$1 $2" in
  "job dispatch") echo "Dispatched Job ID = tmpl-purge-cache/dispatch-1-abc"; echo "Evaluation ID = x" ;;
  "job allocs") case "$*" in *ClientStatus*) echo "complete complete " ;; *) echo "a1 a2 " ;; esac ;;
  "alloc logs") cat "$FAKE_DIR/$3.json" ;;
  *) exit 1 ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", d.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nomad/collect.sh"))
        .args(["--dry-run", A, B])
        .env("PATH", path)
        .env("FAKE_DIR", d.path())
        .env("TMPL", assert_cmd::cargo::cargo_bin("tmpl"))
        .env("SUMMARY_JSON", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["totals"]["nodes"], 2);
    assert_eq!(s["totals"]["expected_nodes"], 2);
    assert_eq!(s["verdict"], "clean");
    let calls = std::fs::read_to_string(d.path().join("calls")).unwrap();
    assert!(calls.contains(&format!("-meta dry_run=true -meta build_ids={A},{B} tmpl-purge-cache")), "{calls}");
    assert!(calls.contains("alloc logs a2 purge-cache"));
}

/// Issue 12 (item 12): while purges run, another process swaps a legacy `<template-id>` parent
/// folder, a `<build-id>` entry and the purge's own trash folder for symlinks into an outside
/// folder that mirrors their names (so a purge that re-resolves a path string finds a same-named
/// victim there). Over many runs not one outside file may be lost. Against the path-string code
/// this lost outside files within the first runs; `TMPL_RACE_RUNS` sets the number of runs
/// (default 300).
#[test]
fn symlink_swaps_during_purges_never_delete_outside_the_roots() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tmpl::cache::{self, CacheKind, Options, Roots, Selection};

    let runs: usize = std::env::var("TMPL_RACE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let d = tempfile::tempdir().unwrap();
    let top = d.path().to_path_buf();
    let template = top.join("template");
    let chunks = top.join("chunks");
    let outside = top.join("outside");
    let tid = "base-tpl";
    let ids = [A, B];
    // The outside folder holds what each symlink's target would resolve the cache paths to.
    let mirror = |dir: &Path| {
        for id in ids {
            write(&dir.join(id).join("cache/0f0f/snapfile"), 10);
            write(&dir.join(id).join("memfile/000000000000-4194304.bin"), 10);
            // A trash folder's staged names.
            for n in 0..4 {
                write(&dir.join(format!("{n:06}-{id}")).join("cache/0f0f/snapfile"), 10);
                write(&dir.join(format!("{n:06}-{id}")).join("memfile/x.bin"), 10);
            }
        }
    };
    mirror(&outside);
    let outside_files = || walk_count(&outside);
    let before = outside_files();
    let fill = || {
        for id in ids {
            write(&template.join(tid).join(id).join("cache/1e1e/snapfile"), 100);
            write(&template.join(tid).join(id).join("cache/1e1e/metadata.json"), 10);
            write(&template.join(id).join("cache/2d2d/snapfile"), 100);
            write(&chunks.join(id).join("memfile/000000000000-4194304.bin"), 100);
            write(&chunks.join(id).join("rootfs.ext4/000000000000-4194304.bin"), 100);
        }
    };
    let swaps = Arc::new(AtomicU64::new(0));
    let (mut purged, mut changed) = (0usize, 0usize);
    for run in 0..runs {
        fill();
        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (template, chunks, outside) = (template.clone(), chunks.clone(), outside.clone());
            std::thread::spawn(move || {
                // Swap `path` for a symlink to `target` for a moment, then put it back.
                let swap = |path: &Path, target: &Path| {
                    let hold = path.with_file_name(format!(".hold-{}", path.file_name().unwrap().to_string_lossy()));
                    if std::fs::rename(path, &hold).is_ok() {
                        let _ = symlink(target, path);
                        swaps.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                        let _ = std::fs::remove_file(path);
                        let _ = std::fs::rename(&hold, path);
                    }
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match i % 4 {
                        0 => swap(&template.join(tid), &outside),
                        1 => swap(&template.join(ids[(i / 4 % 2) as usize]), &outside.join(ids[(i / 4 % 2) as usize])),
                        2 => swap(&chunks.join(ids[(i / 4 % 2) as usize]), &outside.join(ids[(i / 4 % 2) as usize])),
                        _ => {
                            for root in [&template, &chunks] {
                                let trash = std::fs::read_dir(root).ok().and_then(|rd| {
                                    rd.flatten()
                                        .map(|e| e.path())
                                        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmpl-trash-"))
                                });
                                if let Some(t) = trash {
                                    swap(&t, &outside);
                                }
                            }
                        }
                    }
                }
            })
        };
        let roots = Roots::explicit(
            &[(CacheKind::Template, template.clone()), (CacheKind::Chunk, chunks.clone())],
            top.join("orchestrator.lock"),
        );
        let mut opts = Options::new(Selection::builds(ids.iter().map(|i| tmpl::vocab::BuildId::parse(i).unwrap())));
        opts.jobs = 2;
        let outcome = cache::plan(&roots, &opts).map(|p| cache::apply(&p, &tmpl::progress::NoProgress));
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        if let Ok(o) = &outcome {
            purged += o.totals.purged;
            changed += o
                .caches
                .iter()
                .flat_map(|c| &c.facts.skipped)
                .filter(|s| s.reason == cache::SkipReason::Changed)
                .count();
        }
        let now = outside_files();
        assert_eq!(now, before, "run {run}: {} inodes lost outside the cache roots", before - now);
    }
    eprintln!(
        "{runs} runs: {purged} entries purged, {changed} left alone as changed, {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    // The race was real: entries were purged while swaps happened.
    assert!(purged >= runs, "only {purged} entries purged in {runs} runs");
    assert!(
        swaps.load(Ordering::Relaxed) >= runs as u64,
        "the racer swapped only {} times",
        swaps.load(Ordering::Relaxed)
    );
}

/// The deterministic form of the race above: between planning and deleting, the legacy
/// `<template-id>` folder and a `<build-id>` entry are swapped for symlinks into an outside
/// folder holding same-named victims. Nothing outside is touched, and the two entries are
/// reported as changed (exit 5), not purged (the old path-string code deleted the victims and
/// reported a clean purge).
#[test]
fn entries_swapped_for_symlinks_after_planning_are_left_alone_and_reported() {
    use tmpl::cache::{self, CacheKind, EntryStatus, Options, Roots, Selection, SkipReason, Verdict};
    let d = tempfile::tempdir().unwrap();
    let (template, outside) = (d.path().join("template"), d.path().join("outside"));
    for dir in [&template.join("base-tpl"), &template, &outside] {
        write(&dir.join(A).join("cache/1e1e/snapfile"), 100);
    }
    write(&template.join(B).join("cache/2d2d/snapfile"), 100);
    write(&outside.join(B).join("cache/2d2d/snapfile"), 100);
    let before = walk_count(&outside);
    let roots = Roots::explicit(&[(CacheKind::Template, template.clone())], d.path().join("lock"));
    let ids = [A, B].map(|i| tmpl::vocab::BuildId::parse(i).unwrap());
    let plan = cache::plan(&roots, &Options::new(Selection::builds(ids))).unwrap();
    assert_eq!(plan.caches.iter().map(|c| c.facts.entries.len()).sum::<usize>(), 3);
    // The swaps.
    std::fs::rename(template.join("base-tpl"), d.path().join("moved-tpl")).unwrap();
    symlink(&outside, template.join("base-tpl")).unwrap();
    std::fs::rename(template.join(B), d.path().join("moved-b")).unwrap();
    symlink(outside.join(B), template.join(B)).unwrap();
    let o = cache::apply(&plan, &tmpl::progress::NoProgress);
    assert_eq!(walk_count(&outside), before, "files outside the root were deleted: {o:#?}");
    let c = o.caches.iter().find(|c| c.facts.kind == CacheKind::Template).unwrap();
    let purged: Vec<_> =
        c.facts.entries.iter().filter(|e| e.status == EntryStatus::Purged).map(|e| &e.entry.path).collect();
    assert_eq!(purged, vec![&template.join(A)], "{o:#?}");
    let mut changed: Vec<_> =
        c.facts.skipped.iter().filter(|s| s.reason == SkipReason::Changed).map(|s| &s.entry.path).collect();
    changed.sort();
    let mut want = [template.join(B), template.join("base-tpl").join(A)];
    want.sort();
    assert_eq!(changed, want.iter().collect::<Vec<_>>(), "{o:#?}");
    assert!(c.facts.skipped.iter().all(|s| s.detail.contains("replaced")), "{o:#?}");
    assert_eq!(o.verdict, Verdict::SafetySkipped);
    // The real entries, moved away by the swapper, were not touched either.
    assert!(d.path().join("moved-tpl").join(A).join("cache/1e1e/snapfile").exists());
    assert!(d.path().join("moved-b/cache/2d2d/snapfile").exists());
}

/// A legacy `<template-id>` folder that is a symlink is never followed, but the selected builds
/// behind it are reported as not purged (exit 5), not passed over as if nothing were cached.
#[test]
fn builds_behind_a_symlinked_template_folder_are_reported_not_purged() {
    let n = Node::new();
    let elsewhere = n.top.join("other-disk");
    write(&elsewhere.join(A).join("cache/3c3c/snapfile"), 100);
    symlink(&elsewhere, n.template().join("linked-tpl")).unwrap();
    let (code, doc) = n.json(&["--build-id", A, "--cache", "template"]);
    assert_eq!(code, 5, "{doc:#}");
    let skipped = &cache(&doc, "template")["skipped"];
    let behind: Vec<&Value> = skipped.as_array().unwrap().iter().filter(|s| s["reason"] == "behind-symlink").collect();
    assert_eq!(behind.len(), 1, "{skipped:#}");
    assert_eq!(behind[0]["build_id"], A);
    assert!(behind[0]["detail"].as_str().unwrap().contains("is a symlink to"), "{skipped:#}");
    assert!(elsewhere.join(A).join("cache/3c3c/snapfile").exists());
    assert!(!n.template().join(A).exists(), "the rest was still purged");
    // A build with nothing behind the link is unaffected.
    let (code, doc) = n.json(&["--build-id", B, "--cache", "template"]);
    assert_eq!(code, 0, "{doc:#}");
}
