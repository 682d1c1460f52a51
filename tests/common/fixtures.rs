//! Fixtures shared by the rootfs and editing tests: static test binaries (a fake envd per era, a
//! dynamically linked one, a stand-in systemd), rootfs trees turned into real ext4 images with
//! `mkfs.ext4 -d`, and storages that hold builds made from them.
#![allow(dead_code, reason = "shared by several test crates, each using a part; `expect` would be unfulfilled in some")]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tmpl::demo::StorageWriter;

use super as common;

pub const CURRENT_FLAGS: &[&str] =
    &["port", "version", "commit", "isnotfc", "cgroup-root", "verbose", "no-cgroups", "resume-handover"];
pub const OLD_FLAGS: &[&str] = &["port", "version", "debug", "cmd"];

/// Static test binaries, compiled once per test process.
pub struct Bins {
    _dir: tempfile::TempDir,
    pub envd: PathBuf,
    pub old_envd: PathBuf,
    pub dynamic_envd: PathBuf,
    pub systemd: PathBuf,
}

pub fn bins() -> Option<&'static Bins> {
    static BINS: OnceLock<Option<Bins>> = OnceLock::new();
    BINS.get_or_init(|| {
        if !common::require("gcc") || !common::require("mkfs.ext4") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let envd = common::static_binary(dir.path(), "envd", &common::fake_envd_source("0.5.1", CURRENT_FLAGS));
        let old_envd = common::static_binary(dir.path(), "envd-old", &common::fake_envd_source("0.1.4", OLD_FLAGS));
        let src = dir.path().join("dyn.c");
        std::fs::write(&src, common::fake_envd_source("0.5.1", CURRENT_FLAGS)).unwrap();
        let dynamic_envd = dir.path().join("envd-dyn");
        let st = std::process::Command::new("gcc").args(["-Os", "-o"]).arg(&dynamic_envd).arg(&src).status().unwrap();
        assert!(st.success());
        let systemd = common::static_binary(dir.path(), "systemd", "int main(void){return 0;}\n");
        Some(Bins { _dir: dir, envd, old_envd, dynamic_envd, systemd })
    })
    .as_ref()
}

/// A rootfs tree under construction.
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(dir: &Path) -> Tree {
        let root = dir.join("tree");
        for d in ["proc", "sys", "dev", "run", "tmp", "sbin", "usr/bin", "etc", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 8.8.8.8\n").unwrap();
        Tree { root }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn file(&self, rel: &str, data: impl AsRef<[u8]>, mode: u32) -> &Self {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn copy(&self, rel: &str, from: &Path) -> &Self {
        self.file(rel, std::fs::read(from).unwrap(), 0o755)
    }

    pub fn link(&self, rel: &str, target: &str) -> &Self {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        symlink(target, &p).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.p(rel)).unwrap();
        self
    }

    /// envd as /usr/bin/envd and /sbin/init linking to it.
    pub fn envd_as_init(&self, bins: &Bins) -> &Self {
        self.copy("/usr/bin/envd", &bins.envd).link("/sbin/init", "/usr/bin/envd")
    }

    pub fn shell(&self) -> &Self {
        common::copy_host_shell(&self.root);
        self
    }
}

/// A storage holding builds made from trees.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub w: StorageWriter,
}

pub const BUILD: &str = "a1000000-0000-4000-8000-000000000001";

impl Store {
    pub fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let w = StorageWriter::new(&dir.path().join("store")).unwrap();
        Store { dir, w }
    }

    /// `mkfs.ext4 -d tree` into `<store>/<id>/rootfs.ext4` (a full, headerless image).
    pub fn full(&self, id: &str, tree: &Tree) -> PathBuf {
        let d = self.w.root.join(id);
        std::fs::create_dir_all(&d).unwrap();
        let img = d.join("rootfs.ext4");
        common::mkfs(&tree.root, &img, 16);
        img
    }

    pub fn verify(&self, id: &str) -> (i32, Findings) {
        let out = common::tmpl().arg("--storage").arg(&self.w.root).args(["--json", "verify", id]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let f = common::findings_of(&v);
        (out.status.code().unwrap(), f)
    }

    pub fn inspect(&self, id: &str) -> Value {
        let out = common::tmpl().arg("--storage").arg(&self.w.root).args(["--json", "inspect", id]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Ids of error and warning findings from the rootfs contents.
pub fn content_ids(f: &[(String, String, String)]) -> Vec<String> {
    let mut v: Vec<String> = f
        .iter()
        .filter(|(id, sev, _)| {
            sev != "info" && ["init.", "wrapper.", "envd.", "systemd.", "rootfs."].iter().any(|p| id.starts_with(p))
        })
        .map(|(id, _, _)| id.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn message<'a>(f: &'a [(String, String, String)], id: &str) -> &'a str {
    &f.iter().find(|(i, _, _)| i == id).unwrap_or_else(|| panic!("no {id} in {f:?}")).2
}

/// (id, severity, message) of each finding.
pub type Findings = Vec<(String, String, String)>;

/// Build one image from `setup` and verify it.
pub fn case(setup: impl FnOnce(&Tree, &Bins)) -> Option<(Store, i32, Findings)> {
    let bins = bins()?;
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    setup(&t, bins);
    s.full(BUILD, &t);
    let (code, f) = s.verify(BUILD);
    Some((s, code, f))
}
