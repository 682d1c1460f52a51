//! `tmpl inject-envd` and `tmpl rewrite-wrapper` end to end on real ext4 images: both backends,
//! every mode, every guard, bad envd files, injected faults, forks of layered builds; debugfs,
//! e2fsck and tmpl's own reader as oracles.

mod common;

use std::path::PathBuf;

use common::fixtures::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tmpl::vocab::BuildId;

fn run(store: &Store, args: &[&str]) -> (i32, Value, String) {
    let out = common::tmpl().arg("--storage").arg(&store.w.root).arg("--json").args(args).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} / {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap(), v, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn dir(store: &Store, id: &str) -> PathBuf {
    store.w.root.join(id)
}

fn no_scratch_left(store: &Store, id: &str) {
    for e in std::fs::read_dir(dir(store, id)).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".tmpl-work-"), "scratch folder left behind: {n}");
    }
    for e in std::fs::read_dir(&store.w.root).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".partial"), "partial fork left behind: {n}");
    }
}

/// A storage with one full-image build made from `setup`.
fn store_with(setup: impl FnOnce(&Tree, &Bins)) -> Option<(Store, &'static Bins)> {
    let bins = bins()?;
    if !common::require("debugfs") || !common::require("e2fsck") {
        return None;
    }
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    setup(&t, bins);
    s.full(BUILD, &t);
    Some((s, bins))
}

fn envd_arg(b: &Bins) -> String {
    b.envd.to_string_lossy().into_owned()
}

/// Give BUILD a memory snapshot (snapfile, memfile + header) and v2 metadata, as E2B writes them.
fn with_memory_snapshot(s: &Store) -> BuildId {
    let id = BuildId::parse(BUILD).unwrap();
    s.w.snapfile(&id, "8.0.0", 64).unwrap();
    s.w.memfile(&id, 64, true).unwrap();
    s.w.metadata(&id, "v1.14.1_431f1fc", false).unwrap();
    id
}

/// Check the result of an injection with the oracles: debugfs sees the file, e2fsck is clean,
/// verify has no errors.
fn assert_injected(s: &Store, id: &str, b: &Bins) {
    let img = dir(s, id).join("rootfs.ext4");
    assert_eq!(common::debugfs_cat(&img, "/usr/bin/envd"), std::fs::read(&b.envd).unwrap(), "debugfs reads envd back");
    let stat = tmpl::tools::debugfs::stat(&img, "/usr/bin/envd").unwrap();
    assert!(stat.contains("Mode:  0755") && stat.contains("User:     0   Group:     0"), "{stat}");
    assert!(common::fsck_clean(&img), "e2fsck -fn is clean");
    let (code, f) = s.verify(id);
    assert!(!f.iter().any(|(_, sev, _)| sev == "error"), "{f:?}");
    assert_eq!(code, 0);
}

#[test]
fn debugfs_init_mode_in_place() {
    let Some((s, b)) = store_with(|t, _| {
        t.file("/sbin/init", "#!/bin/sh\nexec /nonexistent\n", 0o755);
    }) else {
        return;
    };
    let image = dir(&s, BUILD).join("rootfs.ext4");
    std::fs::set_permissions(&image, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(&image, Some(1000), Some(1000)).unwrap();
    }
    let before = std::fs::read(&image).unwrap();
    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--as", "init"]);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["mode"], "init");
    assert_eq!(v["plan"]["target"]["kind"], "in-place");
    assert_injected(&s, BUILD, b);
    let img = dir(&s, BUILD).join("rootfs.ext4");
    assert!(tmpl::tools::debugfs::stat(&img, "/sbin/init").unwrap().contains("Fast link dest: \"/usr/bin/envd\""));
    // The backup holds the original image, byte for byte.
    let backup = PathBuf::from(v["applied"]["backup_dir"].as_str().unwrap());
    assert_eq!(std::fs::read(backup.join("rootfs.ext4")).unwrap(), before);
    // The manifest records the files with their digests.
    let m: Value = serde_json::from_slice(&std::fs::read(dir(&s, BUILD).join("tmpl-manifest.json")).unwrap()).unwrap();
    let envd_entry = m["files"].as_array().unwrap().iter().find(|f| f["path"] == "/usr/bin/envd").unwrap().clone();
    assert_eq!(
        envd_entry["sha256"].as_str().unwrap(),
        tmpl::rootfs::hex(&Sha256::digest(std::fs::read(&b.envd).unwrap()))
    );
    assert_eq!(v["applied"]["verification"]["fsck_clean"], true);
    // The edited image keeps the original's mode and owner.
    let m = std::fs::metadata(&image).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mode() & 0o7777, 0o640);
    if root {
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
    }
    no_scratch_left(&s, BUILD);
}

#[test]
fn wrapper_mode_with_a_real_shell_and_flags() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell().link("/sbin/init", "/nonexistent");
        std::fs::remove_dir(t.p("/tmp")).unwrap();
    }) else {
        return;
    };
    let (code, v, err) = run(
        &s,
        &[
            "inject-envd",
            BUILD,
            "--envd",
            &envd_arg(b),
            "--envd-arg",
            "-isnotfc",
            "--envd-arg=-port",
            "--envd-arg",
            "49983",
        ],
    );
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["mode"], "wrapper", "auto picks the wrapper when a shell works");
    assert!(v["plan"]["mode_reason"].as_str().unwrap().contains("/bin/sh"));
    assert!(
        v["plan"]["changes"].as_array().unwrap().iter().any(|c| c["action"] == "mkdir" && c["path"] == "/tmp"),
        "missing mount points are created: {v}"
    );
    assert_injected(&s, BUILD, b);
    let init = s.inspect(BUILD);
    let script = &init["boot"]["init"]["script"];
    assert_eq!(script["keeps_running"], true);
    let envd_cmd = script["commands"].as_array().unwrap().iter().find(|c| c["envd"] == true).unwrap().clone();
    assert_eq!(envd_cmd["words"], serde_json::json!(["/usr/bin/envd", "-isnotfc", "-port", "49983"]));
    assert_eq!(envd_cmd["flags"]["problems"], serde_json::json!([]));
    // The image has dash but no mount/sleep: planned as warnings, not a failure.
    let warnings = v["plan"]["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("`mount`")), "{warnings:?}");
}

#[test]
fn service_mode_for_systemd_images_and_auto_decisions() {
    let Some((s, b)) = store_with(|t, b| {
        t.copy("/lib/systemd/systemd", &b.systemd).link("/sbin/init", "/lib/systemd/systemd");
    }) else {
        return;
    };
    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["plan"]["mode"], "service", "auto picks the service with systemd");
    assert_injected(&s, BUILD, b);
    let img = dir(&s, BUILD).join("rootfs.ext4");
    let unit = common::debugfs_cat(&img, "/etc/systemd/system/envd.service");
    assert!(String::from_utf8_lossy(&unit).contains("ExecStart=/usr/bin/envd\n"));
    let link = tmpl::tools::debugfs::stat(&img, "/etc/systemd/system/multi-user.target.wants/envd.service").unwrap();
    assert!(link.contains("/etc/systemd/system/envd.service"), "{link}");
    let i = s.inspect(BUILD);
    assert_eq!(i["boot"]["envd_started_by"], serde_json::json!(["systemd"]));

    // --as service without systemd is refused; --as wrapper without a shell too.
    let Some((s, b)) = store_with(|t, b| {
        t.envd_as_init(b);
    }) else {
        return;
    };
    let before = common::hash_tree(&dir(&s, BUILD));
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--as", "service"]);
    assert_eq!(code, 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("systemd"));
    let (code, _, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--as", "wrapper"]);
    assert_eq!(code, 5);
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before);
    // auto without systemd or shell: init.
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(v["plan"]["mode"], "init");
    assert_eq!(v["dry_run"], true);
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before, "a dry run changes nothing");
}

#[test]
fn mount_backend_in_place() {
    if !common::require_root() {
        return;
    }
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--backend", "mount"]);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["backend"], "mount");
    assert_injected(&s, BUILD, b);
    let img = dir(&s, BUILD).join("rootfs.ext4");
    assert!(tmpl::sys::loop_uses(&img).unwrap().is_empty(), "no loop device left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("tmpl-mount-"), "no mount left:\n{mounts}");
}

#[test]
fn the_memory_snapshot_guard_and_drop_snapshot() {
    let Some((s, b)) = store_with(|t, b| {
        t.envd_as_init(b);
    }) else {
        return;
    };
    with_memory_snapshot(&s);
    let before = common::hash_tree(&dir(&s, BUILD));
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    assert_eq!(code, 5);
    let details = v["error"]["details"].to_string();
    assert!(
        details.contains("memory snapshot") && details.contains("--fork") && details.contains("--drop-snapshot"),
        "{v}"
    );
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before, "refused: nothing changed");

    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--drop-snapshot"]);
    assert_eq!(code, 0, "{err} {v}");
    let d = dir(&s, BUILD);
    assert!(!d.join("snapfile").exists() && !d.join("memfile").exists() && !d.join("memfile.header").exists());
    let backup = PathBuf::from(v["applied"]["backup_dir"].as_str().unwrap());
    assert!(backup.join("snapfile").exists() && backup.join("memfile").exists());
    let meta: Value = serde_json::from_slice(&std::fs::read(d.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["filesystem_only"], true);
    assert_eq!(meta["template"]["build_id"], BUILD);
    assert!(v["notes"].to_string().contains("cold boot"));
    let (_, f) = s.verify(BUILD);
    assert!(!f.iter().any(|(_, sev, _)| sev == "error"), "{f:?}");
}

#[test]
fn layered_builds_need_fork_and_fork_makes_a_self_contained_build() {
    let Some(bins) = bins() else { return };
    let s = Store::new();
    let base = BuildId::parse("b2000000-0000-4000-8000-000000000001").unwrap();
    let child = BuildId::parse("c2000000-0000-4000-8000-000000000002").unwrap();
    let t = Tree::new(s.dir.path());
    t.shell().file("/sbin/init", "#!/bin/sh\nexec /usr/bin/envd -debug\n", 0o755).copy("/usr/bin/envd", &bins.old_envd);
    let img = s.dir.path().join("base.ext4");
    common::mkfs(&t.root, &img, 16);
    s.w.rootfs_layer(&base, &img, None, 0).unwrap();
    t.file("/etc/motd", "child\n", 0o644);
    let img2 = s.dir.path().join("child.ext4");
    common::mkfs(&t.root, &img2, 16);
    s.w.rootfs_layer(&child, &img2, Some(&base), 1).unwrap();
    let (base_s, child_s) = (base.to_string(), child.to_string());
    let before_base = common::hash_tree(&dir(&s, &base_s));
    let before_child = common::hash_tree(&dir(&s, &child_s));

    // The base is read by the child: in place is refused, naming the child.
    let (code, v, _) = run(&s, &["inject-envd", &base_s, "--envd", &envd_arg(bins)]);
    assert_eq!(code, 5);
    assert!(v["error"]["details"].to_string().contains(&child_s), "{v}");
    // The child is a diff layer.
    let (code, v, _) = run(&s, &["inject-envd", &child_s, "--envd", &envd_arg(bins)]);
    assert_eq!(code, 5);
    assert!(v["error"]["details"].to_string().contains("diff layer"), "{v}");

    // --fork NEW_ID: assembled through the layers, patched, a new self-contained build. These
    // builds have no metadata.json: the fork's must name a kernel and a Firecracker.
    let new = "f2000000-0000-4000-8000-000000000003";
    let (code, v, _) = run(&s, &["inject-envd", &child_s, "--envd", &envd_arg(bins), "--fork-id", new]);
    assert_eq!(code, 5, "{v}");
    assert!(v["error"]["details"].to_string().contains("--kernel-version"), "{v}");
    let versions = ["--kernel-version", "vmlinux-6.1.158", "--firecracker-version", "v1.14.1_431f1fc"];
    let mut args = vec!["inject-envd", &child_s, "--envd"];
    let envd = envd_arg(bins);
    args.extend([envd.as_str(), "--fork-id", new]);
    args.extend(versions);
    let (code, v, err) = run(&s, &args);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["target"]["new_build_id"], new);
    assert!(v["next_steps"].to_string().contains("no cache purge"));
    assert_eq!(common::hash_tree(&dir(&s, &base_s)), before_base, "the source builds are untouched");
    assert_eq!(common::hash_tree(&dir(&s, &child_s)), before_child);
    let nd = dir(&s, new);
    let h = tmpl::header::parse(&std::fs::read(nd.join("rootfs.ext4.header")).unwrap()).unwrap();
    assert!(h.is_identity() && h.build_id.to_string() == new && h.base_build_id.to_string() == new, "{h:?}");
    let meta: Value = serde_json::from_slice(&std::fs::read(nd.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["template"]["build_id"], new);
    assert_eq!(meta["template"]["kernel_version"], "vmlinux-6.1.158");
    assert_eq!(meta["filesystem_only"], true);
    assert!(!nd.join("snapfile").exists() && !nd.join("memfile").exists());
    // The child's own file came through the layers, and the new envd is in.
    let motd = common::cat(&s.w.root, new, "/etc/motd");
    assert_eq!(motd, b"child\n");
    assert_injected(&s, new, bins);
    no_scratch_left(&s, &child_s);

    // A fresh random ID, and a fork onto an existing build is refused.
    let mut args = vec!["inject-envd", &child_s, "--envd", envd.as_str(), "--fork"];
    args.extend(versions);
    let (code, v, _) = run(&s, &args);
    assert_eq!(code, 0, "{v}");
    let fresh = v["plan"]["target"]["new_build_id"].as_str().unwrap().to_string();
    assert!(BuildId::parse(&fresh).is_ok() && fresh != new);
    let mut args = vec!["inject-envd", &child_s, "--envd", envd.as_str(), "--fork-id", new];
    args.extend(versions);
    let (code, _, _) = run(&s, &args);
    assert_eq!(code, 5);
}

#[test]
fn an_image_in_use_is_not_touched() {
    let Some((s, b)) = store_with(|t, b| {
        t.envd_as_init(b);
    }) else {
        return;
    };
    let img = dir(&s, BUILD).join("rootfs.ext4");
    let before = common::hash_tree(&dir(&s, BUILD));
    // Held open by another process (as a running Firecracker would).
    let mut holder =
        std::process::Command::new("sh").arg("-c").arg("exec 3<\"$0\"; sleep 30").arg(&img).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(code, 5, "{v}");
    assert!(v["error"]["details"].to_string().contains("process"), "{v}");
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before);

    // Mounted (by a loop device): refused too.
    if common::require_root() {
        let m = tmpl::sys::mount_image(&img, &tmpl::sys::MountOptions::read_only()).unwrap();
        let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
        m.unmount().unwrap();
        assert_eq!(code, 5, "{v}");
        assert!(v["error"]["details"].to_string().contains("loop device"), "{v}");
    }
}

#[test]
fn a_compacted_base_layer_is_refused_in_place() {
    let Some(bins) = bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.envd_as_init(bins);
    let img = s.dir.path().join("img.ext4");
    common::mkfs(&t.root, &img, 16);
    let id = BuildId::parse(BUILD).unwrap();
    s.w.rootfs_layer(&id, &img, None, 0).unwrap();
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(bins)]);
    assert_eq!(code, 5);
    assert!(v["error"]["details"].to_string().contains("compacted"), "{v}");
}

#[test]
fn a_full_image_header_with_nil_ranges_is_rewritten() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    // A V3 header over the full image that marks all-zero blocks as nil (as E2B elides them).
    let d = dir(&s, BUILD);
    let bytes = std::fs::read(d.join("rootfs.ext4")).unwrap();
    let id = BuildId::parse(BUILD).unwrap();
    let mut maps: Vec<tmpl::header::Mapping> = Vec::new();
    for (i, block) in bytes.chunks(4096).enumerate() {
        let nil = block.iter().all(|&x| x == 0);
        let m = tmpl::header::Mapping {
            offset: i as u64 * 4096,
            length: 4096,
            build: if nil { BuildId::nil() } else { id },
            storage_offset: if nil { 0 } else { i as u64 * 4096 },
        };
        match maps.last_mut() {
            Some(l) if l.build == m.build && l.end() == m.offset => l.length += 4096,
            _ => maps.push(m),
        }
    }
    let h = tmpl::header::Header {
        version: 3,
        block_size: 4096,
        size: bytes.len() as u64,
        generation: 0,
        build_id: id,
        base_build_id: id,
        mappings: maps,
        synthesized: false,
        flags: 0,
        builds: Vec::new(),
    };
    std::fs::write(d.join("rootfs.ext4.header"), tmpl::header::encode(&h)).unwrap();
    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["rewrite_header"], true);
    let nh = tmpl::header::parse(&std::fs::read(d.join("rootfs.ext4.header")).unwrap()).unwrap();
    assert!(nh.is_identity(), "{nh:?}");
    // Read through the header, the new envd is there (its blocks were in nil ranges before).
    let cat = common::cat(&s.w.root, BUILD, "/usr/bin/envd");
    assert_eq!(cat, std::fs::read(&b.envd).unwrap());
}

#[test]
fn bad_envd_files_change_nothing() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    let work = s.dir.path().join("bad");
    std::fs::create_dir(&work).unwrap();
    let w = |name: &str, bytes: &[u8]| {
        let p = work.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    };
    let before = common::hash_tree(&dir(&s, BUILD));
    for (path, expect) in [
        (w("text", b"#!/bin/sh\necho envd\n"), "not an envd binary"),
        (w("empty", b""), "empty"),
        (w("arm", &tmpl::elf::synthetic(183, None)), "aarch64"),
        (b.dynamic_envd.to_string_lossy().into_owned(), "loader"),
        (work.join("missing").to_string_lossy().into_owned(), "cannot read"),
    ] {
        // The dynamic envd has its loader in this image (copied with the shell); use an image without.
        let (code, v, _) = if path.ends_with("envd-dyn") {
            let Some((s2, _)) = store_with(|t, b| {
                t.envd_as_init(b);
            }) else {
                return;
            };
            let before2 = common::hash_tree(&dir(&s2, BUILD));
            let r = run(&s2, &["inject-envd", BUILD, "--envd", &path]);
            assert_eq!(common::hash_tree(&dir(&s2, BUILD)), before2);
            r
        } else {
            run(&s, &["inject-envd", BUILD, "--envd", &path])
        };
        assert_eq!(code, 3, "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(expect), "{path}: {v}");
    }
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before);
}

#[test]
fn removed_flags_are_refused_for_a_new_envd() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    let before = common::hash_tree(&dir(&s, BUILD));
    for arg in ["-debug", "-cmd=/start.sh", "-bogus"] {
        let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--envd-arg", arg]);
        assert_eq!(code, 5, "{arg}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("status 2"), "{v}");
    }
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--envd-arg", "-debug", "--dry-run"]);
    assert_eq!(code, 5);
    assert!(v["error"]["details"].to_string().contains("-isnotfc"), "names the replacement: {v}");
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before);
    // The old envd still accepts -debug.
    let (code, v, err) =
        run(&s, &["inject-envd", BUILD, "--envd", &b.old_envd.to_string_lossy(), "--envd-arg", "-debug", "--dry-run"]);
    assert_eq!(code, 0, "{err} {v}");
}

#[test]
fn faults_between_copy_and_rename_leave_the_build_as_it_was() {
    for step in ["after-verify", "before-commit", "commit:journal", "commit:rootfs.ext4", "commit:tmpl-manifest.json"] {
        let Some((s, b)) = store_with(|t, _| {
            t.shell();
        }) else {
            return;
        };
        let before = common::hash_tree(&dir(&s, BUILD));
        let out = common::tmpl()
            .env(tmpl::edit::apply::FAULT_ENV, step)
            .arg("--storage")
            .arg(&s.w.root)
            .args(["inject-envd", BUILD, "--envd", &envd_arg(b)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{step}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains(step));
        assert_eq!(common::hash_tree(&dir(&s, BUILD)), before, "{step}: the build is byte-for-byte as it was");
    }
}

#[test]
fn a_dirty_journal_is_refused_by_debugfs_unless_replayed() {
    if !common::require_root() || !common::require("xfs_io") {
        return;
    }
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    // A real dirty journal: mount, change something, shut the filesystem down without
    // checkpointing (what a crash leaves), unmount.
    let img = dir(&s, BUILD).join("rootfs.ext4");
    let m = tmpl::sys::mount_image(&img, &tmpl::sys::MountOptions::read_write()).unwrap();
    std::fs::create_dir(m.path().join("journalled")).unwrap();
    std::fs::write(m.path().join("etc/journalled.conf"), "x\n").unwrap();
    let st = std::process::Command::new(tmpl::tools::find("xfs_io", "xfsprogs").unwrap())
        .args(["-x", "-c", "shutdown -f"])
        .arg(m.path())
        .status()
        .unwrap();
    assert!(st.success());
    let _ = m.unmount();
    let sb = tmpl::rootfs::Superblock::read(&tmpl::device::Device::plain_file(&img).unwrap()).unwrap();
    assert!(sb.needs_recovery(), "the shutdown left the journal dirty");

    let before = common::hash_tree(&dir(&s, BUILD));
    let (code, v, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    assert_eq!(code, 5, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("journal"), "{v}");
    assert_eq!(common::hash_tree(&dir(&s, BUILD)), before);
    let (code, v, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--replay-journal"]);
    assert_eq!(code, 0, "{err} {v}");
    assert_injected(&s, BUILD, b);
    // The journal was replayed into the edited image (so no later replay can undo debugfs).
    let sb = tmpl::rootfs::Superblock::read(&tmpl::device::Device::plain_file(&img).unwrap()).unwrap();
    assert!(!sb.needs_recovery());
}

#[test]
fn rewrite_wrapper_keeps_the_binary_and_drops_removed_flags() {
    let Some((s, b)) = store_with(|t, b| {
        t.shell()
            .copy("/usr/local/bin/envd.real", &b.envd)
            .file("/usr/local/bin/envd", "#!/bin/sh\nexec /usr/local/bin/envd.real \"$@\"\n", 0o755)
            .file(
                "/sbin/init",
                "#!/bin/sh\nmount -t proc proc /proc\nexec /usr/local/bin/envd -debug -port 49983\n",
                0o755,
            );
    }) else {
        return;
    };
    let (code, f) = s.verify(BUILD);
    assert_eq!(code, 1);
    assert!(content_ids(&f).contains(&"wrapper.envd-flag".to_string()));
    let (code, v, err) = run(&s, &["rewrite-wrapper", BUILD]);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["plan"]["envd_path"], "/usr/local/bin/envd.real");
    assert_eq!(v["plan"]["dropped_args"], serde_json::json!(["-debug"]));
    assert_eq!(v["plan"]["envd_args"], serde_json::json!(["-port", "49983"]));
    let img = dir(&s, BUILD).join("rootfs.ext4");
    let init = String::from_utf8(common::debugfs_cat(&img, "/sbin/init")).unwrap();
    assert!(init.contains("ENVD=/usr/local/bin/envd.real") && init.contains("\"$ENVD\" -port 49983\n"), "{init}");
    assert_eq!(common::debugfs_cat(&img, "/usr/local/bin/envd.real"), std::fs::read(&b.envd).unwrap(), "binary kept");
    assert!(common::fsck_clean(&img));
    let (code, f) = s.verify(BUILD);
    assert!(!f.iter().any(|(_, sev, _)| sev == "error"), "{f:?}");
    assert_eq!(code, 0);
    // An image whose init is not a script has no wrapper to rewrite.
    let Some((s2, _)) = store_with(|t, b| {
        t.envd_as_init(b);
    }) else {
        return;
    };
    let (code, v, _) = run(&s2, &["rewrite-wrapper", BUILD]);
    assert_eq!(code, 3, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("inject-envd"));
}

#[test]
fn verify_reports_drift_from_the_manifest() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    let (code, _, err) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b)]);
    assert_eq!(code, 0, "{err}");
    let (_, f) = s.verify(BUILD);
    assert!(!f.iter().any(|(id, _, _)| id.starts_with("manifest.")), "{f:?}");
    // Someone edits /sbin/init by hand afterwards.
    let img = dir(&s, BUILD).join("rootfs.ext4");
    let hand = s.dir.path().join("hand");
    std::fs::write(&hand, "#!/bin/sh\nexec /usr/bin/envd\n").unwrap();
    let cmds = format!("rm /sbin/init\nwrite {} /sbin/init\nsif /sbin/init mode 0100755\n", hand.display());
    let cf = s.dir.path().join("cmds");
    std::fs::write(&cf, cmds).unwrap();
    let st = std::process::Command::new(tmpl::tools::find("debugfs", "e2fsprogs").unwrap())
        .args(["-w", "-f"])
        .arg(&cf)
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.code().is_some());
    let (_, f) = s.verify(BUILD);
    let drift: Vec<&(String, String, String)> = f.iter().filter(|(id, _, _)| id == "manifest.drift").collect();
    assert_eq!(drift.len(), 1, "{f:?}");
    assert!(drift[0].2.contains("/sbin/init"), "{drift:?}");
}

#[test]
fn hostile_build_ids_and_paths() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    for bad in ["..", "../..", "*", ""] {
        let (code, _, _) = run(&s, &["inject-envd", bad, "--envd", &envd_arg(b)]);
        assert_eq!(code, 3, "{bad:?}");
    }
    let (code, _, _) = run(&s, &["inject-envd", BUILD, "--envd", &envd_arg(b), "--fork-id", "../x"]);
    assert_eq!(code, 3);
}

#[test]
fn fork_of_a_compressed_v5_build() {
    let Some(b) = bins() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo");
    let out = common::tmpl().args(["demo", "--dir"]).arg(&store).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let src = tmpl::demo::ids::LZ4_CHILD;
    assert!(store.join(src).join("rootfs.ext4.lz4").exists(), "the demo child is stored compressed");
    let new = "f3000000-0000-4000-8000-000000000004";
    let out = common::tmpl()
        .arg("--storage")
        .arg(&store)
        .args(["--json", "inject-envd", src, "--envd"])
        .arg(&b.envd)
        .args(["--fork-id", new])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = common::tmpl().arg("--storage").arg(&store).args(["--json", "verify", new]).output().unwrap();
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["builds"][0]["tally"]["errors"], 0, "{v}");
    assert_eq!(v["builds"][0]["tally"]["warnings"], 0, "{v}");
    let marker = common::cat(&store, new, "/.e2b");
    let marker = String::from_utf8(marker).unwrap();
    assert!(marker.contains(&format!("BUILD_ID={new}")) && marker.contains("TEMPLATE_ID=demo"), "{marker}");
    let cat = common::cat(&store, new, "/usr/bin/envd");
    assert_eq!(cat, std::fs::read(&b.envd).unwrap());
}

#[test]
fn mount_backend_wrapper_and_fork_write_top_level_paths() {
    if !common::require_root() {
        return;
    }
    let Some((s, b)) = store_with(|t, _| {
        t.shell().file("/.e2b", "ENV_ID=x\nBUILD_ID=a1000000-0000-4000-8000-000000000001\n", 0o644);
        std::fs::remove_dir(t.p("/run")).unwrap();
    }) else {
        return;
    };
    // A fork with the mount backend writes /.e2b (top level) and creates /run.
    let new = "f4000000-0000-4000-8000-000000000005";
    let versions = ["--kernel-version", "vmlinux-6.1.158", "--firecracker-version", "v1.14.1_431f1fc"];
    let mut args = vec!["inject-envd", BUILD, "--envd"];
    let envd = envd_arg(b);
    args.extend([envd.as_str(), "--backend", "mount", "--as", "wrapper", "--fork-id", new]);
    args.extend(versions);
    let (code, v, err) = run(&s, &args);
    assert_eq!(code, 0, "{err} {v}");
    assert_injected(&s, new, b);
    let img = dir(&s, new).join("rootfs.ext4");
    assert!(String::from_utf8(common::debugfs_cat(&img, "/.e2b")).unwrap().contains(&format!("BUILD_ID={new}")));
    assert!(tmpl::tools::debugfs::stat(&img, "/run").unwrap().contains("Type: directory"));
    assert!(tmpl::sys::loop_uses(&img).unwrap().is_empty());
}

#[test]
fn late_faults_restore_header_snapshot_and_metadata() {
    let Some((s, b)) = store_with(|t, _| {
        t.shell();
    }) else {
        return;
    };
    let id = with_memory_snapshot(&s);
    // A header with a nil range, so the commit renames a header too.
    let d = dir(&s, BUILD);
    let len = std::fs::metadata(d.join("rootfs.ext4")).unwrap().len();
    let mut h = tmpl::header::headerless(id, len, 4096);
    h.version = 3;
    h.synthesized = false;
    h.mappings = vec![
        tmpl::header::Mapping { offset: 0, length: len - 4096, build: id, storage_offset: 0 },
        tmpl::header::Mapping { offset: len - 4096, length: 4096, build: BuildId::nil(), storage_offset: 0 },
    ];
    std::fs::write(d.join("rootfs.ext4.header"), tmpl::header::encode(&h)).unwrap();
    let before = common::hash_tree(&d);
    for step in ["commit:snapfile", "commit:metadata.json", "commit:rootfs.ext4.header", "commit:rootfs.ext4"] {
        let out = common::tmpl()
            .env(tmpl::edit::apply::FAULT_ENV, step)
            .arg("--storage")
            .arg(&s.w.root)
            .args(["inject-envd", BUILD, "--drop-snapshot", "--envd", &envd_arg(b)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{step}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            common::hash_tree(&d),
            before,
            "{step}: rootfs, header, snapfile, memfile and metadata are all back"
        );
    }
}

#[test]
fn the_rendered_wrapper_passes_shellcheck_and_sh_n() {
    if !common::require("shellcheck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("init");
    std::fs::write(
        &p,
        tmpl::edit::render::wrapper("/usr/local/bin/envd.real", &["-port".into(), "49983".into(), "it's".into()]),
    )
    .unwrap();
    let sc = std::process::Command::new("shellcheck").args(["-s", "sh"]).arg(&p).output().unwrap();
    assert!(sc.status.success(), "{}", String::from_utf8_lossy(&sc.stdout));
    let n = std::process::Command::new("sh").arg("-n").arg(&p).output().unwrap();
    assert!(n.status.success(), "{}", String::from_utf8_lossy(&n.stderr));
}
