//! The rootfs read without mounting, on real ext4 images made with `mkfs.ext4 -d`: the init
//! chain, wrapper scripts, envd and systemd layouts, each broken the way operators meet them,
//! full and layered builds, and e2fsprogs (`debugfs -R cat`) as the oracle for file contents.

mod common;

use std::path::Path;

use common::fixtures::*;
use serde_json::Value;
use tmpl::vocab::BuildId;

#[test]
fn envd_as_init_is_healthy_and_its_era_and_version_are_read() {
    let Some((s, code, f)) = case(|t, b| {
        t.envd_as_init(b);
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), Vec::<String>::new(), "{f:?}");
    assert_eq!(code, 0);
    let v = s.inspect(BUILD);
    let boot = &v["boot"];
    assert_eq!(boot["init"]["target"]["program"]["kind"], "envd");
    assert_eq!(boot["init"]["target"]["resolution"]["hops"].as_array().unwrap().len(), 2);
    assert_eq!(boot["envd_started_by"], serde_json::json!(["as-init"]));
    let envd = &boot["envd"][0];
    assert_eq!(envd["path"], "/usr/bin/envd");
    assert_eq!(envd["binary"]["version"], "0.5.1");
    assert_eq!(envd["binary"]["era_source"], "flag names");
    assert!(envd["binary"]["era"].as_str().unwrap().contains("2026-07-28"), "{envd}");
    assert_eq!(envd["target"]["program"]["elf"]["is_static"], true);
}

#[test]
fn a_sh_wrapper_with_current_flags_is_healthy_and_missing_commands_are_warned() {
    let Some((s, code, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.envd).file(
            "/sbin/init",
            "#!/bin/sh\nmount -t proc proc /proc\nexport PATH=/usr/bin:/bin\nexec /usr/bin/envd -isnotfc -port 49983\n",
            0o755,
        );
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["wrapper.command-missing"], "{f:?}");
    assert!(message(&f, "wrapper.command-missing").contains("mount"));
    assert_eq!(code, 0, "a warning does not fail verify");
    let v = s.inspect(BUILD);
    let script = &v["boot"]["init"]["script"];
    assert_eq!(script["keeps_running"], true);
    let last = script["commands"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["exec"], true);
    assert_eq!(last["flags"]["problems"], serde_json::json!([]));
    assert_eq!(v["boot"]["init"]["target"]["program"]["interpreter"]["usable"], true);
}

#[test]
fn removed_envd_flags_in_a_wrapper_are_errors_for_a_new_envd_only() {
    for (flag, envd_is_old, expect) in [
        ("-debug", false, true),
        ("-cmd /start.sh", false, true),
        ("-debug", true, false),
        ("-cmd /start.sh", true, false),
    ] {
        let Some((_s, code, f)) = case(|t, b| {
            t.shell().copy("/usr/bin/envd", if envd_is_old { &b.old_envd } else { &b.envd }).file(
                "/sbin/init",
                format!("#!/bin/sh\nexec /usr/bin/envd {flag}\n"),
                0o755,
            );
        }) else {
            return;
        };
        let ids = content_ids(&f);
        assert_eq!(ids.contains(&"wrapper.envd-flag".to_string()), expect, "{flag} old={envd_is_old}: {f:?}");
        if expect {
            assert_eq!(code, 1);
            let m = message(&f, "wrapper.envd-flag");
            assert!(m.contains("was removed from envd"), "{m}");
        }
    }
}

#[test]
fn broken_init_chains() {
    type Setup = fn(&Tree, &Bins);
    let cases: &[(&str, Setup)] = &[
        ("init.missing", |t, b| {
            t.copy("/usr/bin/envd", &b.envd);
        }),
        ("init.dangling", |t, b| {
            t.copy("/usr/bin/envd", &b.envd).link("/sbin/init", "../usr/local/bin/envd");
        }),
        ("init.loop", |t, b| {
            t.copy("/usr/bin/envd", &b.envd).link("/sbin/init", "/sbin/a").link("/sbin/a", "b").link("/sbin/b", "init");
        }),
        ("init.interpreter-missing", |t, b| {
            t.copy("/usr/bin/envd", &b.envd).file("/sbin/init", "#!/bin/bash\nexec /usr/bin/envd\n", 0o755);
        }),
        ("init.not-executable", |t, b| {
            t.copy("/usr/bin/envd", &b.envd).file("/sbin/init", std::fs::read(&b.envd).unwrap(), 0o644);
        }),
        ("init.not-runnable", |t, b| {
            t.copy("/usr/bin/envd", &b.envd).file("/sbin/init", "exec /usr/bin/envd\n", 0o755);
        }),
    ];
    for (id, setup) in cases {
        let Some((_s, code, f)) = case(setup) else { return };
        assert!(content_ids(&f).contains(&id.to_string()), "{id}: {f:?}");
        assert_eq!(code, 1, "{id}");
    }
}

#[test]
fn the_dangling_message_names_the_chain() {
    let Some((_s, _, f)) = case(|t, b| {
        t.copy("/usr/bin/envd", &b.envd).link("/sbin/init", "../usr/local/bin/envd");
    }) else {
        return;
    };
    let m = message(&f, "init.dangling");
    assert!(
        m.contains("/sbin/init -> ../usr/local/bin/envd") && m.contains("/usr/local/bin/envd does not exist"),
        "{m}"
    );
}

#[test]
fn wrong_architecture_and_missing_loader() {
    let Some((_s, _, f)) = case(|t, _| {
        t.file("/usr/bin/envd", tmpl::elf::synthetic(183, None), 0o755).link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    let ids = content_ids(&f);
    assert!(ids.contains(&"init.wrong-arch".into()) && ids.contains(&"envd.wrong-arch".into()), "{f:?}");
    assert!(message(&f, "envd.wrong-arch").contains("aarch64"));

    // A dynamically linked envd in an image without its loader.
    let Some((_s, _, f)) = case(|t, b| {
        t.copy("/usr/bin/envd", &b.dynamic_envd).link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    let ids = content_ids(&f);
    assert!(ids.contains(&"init.loader-missing".into()) && ids.contains(&"envd.loader-missing".into()), "{f:?}");
    // With its loader and libraries copied in (as copy_host_shell does for sh), it is fine.
    let Some((_s, _, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.dynamic_envd).link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    assert!(!content_ids(&f).iter().any(|i| i.contains("loader")), "{f:?}");
}

fn systemd_tree(t: &Tree, b: &Bins, unit: Option<&str>, enabled: bool) {
    t.copy("/usr/bin/envd", &b.envd)
        .copy("/lib/systemd/systemd", &b.systemd)
        .link("/sbin/init", "/lib/systemd/systemd");
    if let Some(u) = unit {
        t.file("/etc/systemd/system/envd.service", u, 0o644);
        if enabled {
            t.link("/etc/systemd/system/multi-user.target.wants/envd.service", "/etc/systemd/system/envd.service");
        }
    }
}

const UNIT: &str = "[Unit]\nDescription=Env Daemon Service\n[Service]\nType=simple\nRestart=always\nExecStart=/usr/bin/envd\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn systemd_layouts() {
    let Some((s, code, f)) = case(|t, b| systemd_tree(t, b, Some(UNIT), true)) else { return };
    assert_eq!(content_ids(&f), Vec::<String>::new(), "{f:?}");
    assert_eq!(code, 0);
    let v = s.inspect(BUILD);
    assert_eq!(v["boot"]["init"]["target"]["program"]["kind"], "systemd");
    assert_eq!(v["boot"]["envd_started_by"], serde_json::json!(["systemd"]));

    let Some((_s, _, f)) = case(|t, b| systemd_tree(t, b, Some(UNIT), false)) else { return };
    assert_eq!(content_ids(&f), ["systemd.envd-not-enabled"], "{f:?}");
    let Some((_s, _, f)) = case(|t, b| systemd_tree(t, b, None, false)) else { return };
    assert_eq!(content_ids(&f), ["systemd.envd-service-missing"], "{f:?}");
    let Some((_s, _, f)) = case(|t, b| {
        systemd_tree(t, b, None, false);
        t.link("/etc/systemd/system/envd.service", "/dev/null");
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["systemd.envd-masked"], "{f:?}");
    // The 2024 unit: bash -l -c "envd -cmd ..." in an image without bash, with a current envd.
    let old = UNIT.replace("ExecStart=/usr/bin/envd", "ExecStart=/bin/bash -l -c \"/usr/bin/envd -cmd '/start.sh'\"");
    let Some((_s, code, f)) = case(|t, b| systemd_tree(t, b, Some(&old), true)) else { return };
    assert_eq!(content_ids(&f), ["systemd.envd-flag", "systemd.exec-start-missing"], "{f:?}");
    assert!(message(&f, "systemd.exec-start-missing").contains("/bin/bash"));
    assert_eq!(code, 1);
}

#[test]
fn the_envd_real_layout_is_followed_through_the_wrapper_named_envd() {
    let Some((s, code, f)) = case(|t, b| {
        t.shell()
            .copy("/usr/local/bin/envd.real", &b.envd)
            .file("/usr/local/bin/envd", "#!/bin/sh\nexec /usr/local/bin/envd.real \"$@\"\n", 0o755)
            .file("/sbin/init", "#!/bin/sh\nexec /usr/local/bin/envd -debug\n", 0o755);
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["wrapper.envd-flag"], "{f:?}");
    assert!(message(&f, "wrapper.envd-flag").contains("/usr/local/bin/envd.real"), "{f:?}");
    assert!(f.iter().any(|(id, sev, _)| id == "envd.nonstandard-path" && sev == "info"), "{f:?}");
    assert_eq!(code, 1);
    let v = s.inspect(BUILD);
    let cmd = &v["boot"]["init"]["script"]["commands"][0];
    assert_eq!(cmd["nested"][0]["words"][0], "/usr/local/bin/envd.real");
}

#[test]
fn a_wrapper_that_can_end_kills_pid_1() {
    let Some((_s, code, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.envd).file(
            "/sbin/init",
            "#!/bin/sh\n/usr/bin/envd &\necho started\n",
            0o755,
        );
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["wrapper.pid1-exits"], "{f:?}");
    assert_eq!(code, 1);
    // Supervised in a loop: fine.
    let Some((_s, _, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.envd).file(
            "/sbin/init",
            "#!/bin/sh\nwhile true; do /usr/bin/envd; sleep 1; done\n",
            0o755,
        );
    }) else {
        return;
    };
    assert!(!content_ids(&f).contains(&"wrapper.pid1-exits".into()), "{f:?}");
}

#[test]
fn nothing_starts_envd() {
    let Some((_s, code, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.envd).file("/sbin/init", "#!/bin/sh\nexec /bin/sh\n", 0o755);
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["init.envd-not-started"], "{f:?}");
    assert_eq!(code, 1);
}

#[test]
fn envd_missing_empty_or_not_elf() {
    let Some((_s, _, f)) = case(|t, _| {
        t.link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    assert!(content_ids(&f).contains(&"envd.missing".into()), "{f:?}");
    let Some((_s, _, f)) = case(|t, _| {
        t.file("/usr/bin/envd", "", 0o755).link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    let ids = content_ids(&f);
    assert!(ids.contains(&"envd.empty".into()) && ids.contains(&"init.not-runnable".into()), "{f:?}");
    let Some((_s, _, f)) = case(|t, _| {
        t.file("/usr/bin/envd", "<html>404 Not Found</html>\n", 0o755).link("/sbin/init", "/usr/bin/envd");
    }) else {
        return;
    };
    assert!(content_ids(&f).contains(&"envd.not-elf".into()), "{f:?}");
}

#[test]
fn resolv_conf_and_the_e2b_marker() {
    let Some((_s, code, f)) = case(|t, b| {
        t.envd_as_init(b).link("/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf").file(
            "/.e2b",
            "ENV_ID=x\nBUILD_ID=99999999-0000-4000-8000-000000000000\n",
            0o644,
        );
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["rootfs.e2b-marker-mismatch", "rootfs.resolv-conf-dangling"], "{f:?}");
    assert_eq!(code, 0, "warnings only");
}

/// Every regular file and symlink under `root`, as image paths.
fn walk(root: &Path, rel: &str, out: &mut Vec<(String, bool)>) {
    for e in std::fs::read_dir(root.join(rel.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let path = format!("{}/{}", rel.trim_end_matches('/'), e.file_name().to_string_lossy());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(root, &path, out);
        } else {
            out.push((path, ft.is_symlink()));
        }
    }
}

#[test]
fn a_layered_build_reads_like_its_full_image_file_by_file() {
    let Some(bins) = bins() else { return };
    let s = Store::new();
    let base_id = BuildId::parse("b1000000-0000-4000-8000-000000000001").unwrap();
    let child_id = BuildId::parse("c1000000-0000-4000-8000-000000000002").unwrap();
    let t = Tree::new(s.dir.path());
    t.envd_as_init(bins).shell();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.file("/opt/data.bin", &big, 0o644).file("/etc/motd", "base\n", 0o644);
    let base_img = s.dir.path().join("base.ext4");
    common::mkfs(&t.root, &base_img, 16);
    s.w.rootfs_layer(&base_id, &base_img, None, 0).unwrap();
    // The child: init becomes a wrapper, a file is changed, one added, one removed.
    let mut big2 = big.clone();
    big2[150_000] ^= 0xff;
    t.file("/sbin/init", "#!/bin/sh\nexec /usr/bin/envd -isnotfc\n", 0o755)
        .file("/opt/data.bin", &big2, 0o644)
        .file("/etc/new.conf", "added\n", 0o600)
        .remove("/etc/motd");
    let child_img = s.dir.path().join("child.ext4");
    common::mkfs(&t.root, &child_img, 16);
    s.w.rootfs_layer(&child_id, &child_img, Some(&base_id), 1).unwrap();
    let child = child_id.to_string();
    let owned = s.w.root.join(&child).join("rootfs.ext4").metadata().unwrap().len();
    assert!(owned < child_img.metadata().unwrap().len() / 4, "the child owns only the changed blocks ({owned} bytes)");

    let mut files = Vec::new();
    walk(&t.root, "/", &mut files);
    assert!(files.len() > 5);
    for (path, is_link) in &files {
        if *is_link {
            let out = common::tmpl()
                .arg("--storage")
                .arg(&s.w.root)
                .args(["--json", "inspect", &child, "--path", path])
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let target = std::fs::read_link(t.p(path)).unwrap();
            assert_eq!(v["resolution"]["hops"][0]["target"], target.to_string_lossy().as_ref(), "{path}");
            continue;
        }
        let ours = common::tmpl()
            .arg("--storage")
            .arg(&s.w.root)
            .args(["inspect", &child, "--path", path, "--cat"])
            .output()
            .unwrap();
        assert!(ours.status.success(), "{path}: {}", String::from_utf8_lossy(&ours.stderr));
        let oracle = common::debugfs_cat(&child_img, path);
        assert_eq!(ours.stdout, oracle, "{path} differs from debugfs's view of the full image");
        assert_eq!(ours.stdout, std::fs::read(t.p(path)).unwrap(), "{path} differs from the source tree");
    }
    // The removed file is gone in the child and present in the base.
    let gone = common::tmpl().arg("--storage").arg(&s.w.root).args(["inspect", &child, "--path", "/etc/motd"]).assert();
    gone.code(3);
    let base_motd = common::tmpl()
        .arg("--storage")
        .arg(&s.w.root)
        .args(["inspect", &base_id.to_string(), "--path", "/etc/motd", "--cat"])
        .output()
        .unwrap();
    assert_eq!(base_motd.stdout, b"base\n");
    // And verify sees the child's wrapper through the layers.
    let (_, f) = s.verify(&child);
    assert_eq!(content_ids(&f), Vec::<String>::new(), "{f:?}");
    let v = s.inspect(&child);
    assert_eq!(v["boot"]["init"]["target"]["program"]["kind"], "script");
}

#[test]
fn inspect_path_in_json_directories_and_errors() {
    let Some((s, _, _)) = case(|t, b| {
        t.envd_as_init(b).file("/etc/bin.dat", [0u8, 159, 146, 150], 0o600);
    }) else {
        return;
    };
    let json = |args: &[&str]| -> (i32, Value) {
        let out = common::tmpl()
            .arg("--storage")
            .arg(&s.w.root)
            .args(["--json", "inspect", BUILD])
            .args(args)
            .output()
            .unwrap();
        (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
    };
    let (code, v) = json(&["--path", "/etc/resolv.conf", "--cat"]);
    assert_eq!(code, 0);
    assert_eq!(v["content_utf8"], "nameserver 8.8.8.8\n");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64, "sha256 of the content is reported");
    let (_, v) = json(&["--path", "/etc/bin.dat", "--cat"]);
    assert_eq!(v["content_base64"], "AJ+Slg==");
    let (_, v) = json(&["--path", "/etc"]);
    let names: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"resolv.conf") && names.contains(&"bin.dat"), "{names:?}");
    let (_, v) = json(&["--path", "/sbin/init"]);
    assert_eq!(v["program"]["kind"], "envd");
    let (code, v) = json(&["--path", "/nope"]);
    assert_eq!(code, 3);
    assert!(v["error"]["message"].as_str().unwrap().contains("/nope does not exist"), "{v}");
    let out =
        common::tmpl().arg("--storage").arg(&s.w.root).args(["inspect", BUILD, "--path", "relative"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn following_init_in_a_large_image_reads_only_kilobytes() {
    let Some(bins) = bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.envd_as_init(bins);
    let d = s.w.root.join(BUILD);
    std::fs::create_dir_all(&d).unwrap();
    common::mkfs(&t.root, &d.join("rootfs.ext4"), 1024);
    let v = s.inspect(BUILD);
    let chain = v["boot"]["init"]["bytes_read"].as_u64().unwrap();
    let image = 1024u64 << 20;
    assert!(chain > 0 && chain < 512 * 1024, "read {chain} bytes of a {image}-byte image to follow /sbin/init");
}

#[test]
fn envd_facts_come_from_its_data_sections_not_the_whole_binary() {
    // An 8 MiB envd laid out like a Go build: era and version are read from .rodata, the data
    // sections and .go.buildinfo (located through the section headers), not from code or tables.
    let bin = tmpl::fixtures::envd_elf::envd_elf(
        8 << 20,
        &["port", "isnotfc", "cgroup-root"],
        Some("0.3.9"),
        Some("2026-02-01T00:00:00Z"),
    );
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.file("/usr/bin/envd", &bin, 0o755).link("/sbin/init", "/usr/bin/envd");
    let d = s.w.root.join(BUILD);
    std::fs::create_dir_all(&d).unwrap();
    common::mkfs(&t.root, &d.join("rootfs.ext4"), 256);
    let v = s.inspect(BUILD);
    let facts = &v["boot"]["envd"][0]["binary"];
    assert_eq!(facts["version"], "0.3.9", "{facts:#}");
    assert_eq!(facts["era_source"], "go vcs.time", "{facts:#}");
    assert_eq!(facts["era"], tmpl::envd::era_for_date("2026-02-01").name, "{facts:#}");
    assert_eq!(facts["go"]["go_version"], "go1.24.1", "{facts:#}");
    let markers: Vec<&str> = facts["markers"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(markers, ["cgroup-root", "isnotfc"], "{facts:#}");
    // The reader's byte counter: everything inspect read from the image for the boot path.
    let read = v["boot"]["bytes_read"].as_u64().unwrap();
    let len = bin.len() as u64;
    assert!(read < len / 4, "read {read} bytes of the image for a {len}-byte envd");
    assert!(facts["bytes_scanned"].as_u64().unwrap() < len / 4, "{facts:#}");
}

#[test]
fn busybox_inittab_and_openrc() {
    // Busybox as init: inittab runs envd (a `-` login-shell prefix is not a path).
    let Some((_s, code, f)) = case(|t, b| {
        t.copy("/bin/busybox", &b.systemd).link("/sbin/init", "/bin/busybox").copy("/usr/bin/envd", &b.envd).file(
            "/etc/inittab",
            "::sysinit:/etc/init.d/rcS\n::respawn:/usr/bin/envd -isnotfc\nttyS0::respawn:-/bin/busybox\n",
            0o644,
        );
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["wrapper.command-missing"], "only rcS is missing: {f:?}");
    assert!(message(&f, "wrapper.command-missing").contains("/etc/init.d/rcS"), "{f:?}");
    assert_eq!(code, 0);
    // An inittab that passes a removed flag.
    let Some((_s, _, f)) = case(|t, b| {
        t.copy("/bin/busybox", &b.systemd).link("/sbin/init", "/bin/busybox").copy("/usr/bin/envd", &b.envd).file(
            "/etc/inittab",
            "::respawn:/usr/bin/envd -debug\n",
            0o644,
        );
    }) else {
        return;
    };
    assert!(content_ids(&f).contains(&"wrapper.envd-flag".into()), "{f:?}");
    // OpenRC under busybox init: command= and command_args= are checked.
    let Some((s, _, f)) = case(|t, b| {
        t.copy("/bin/busybox", &b.systemd)
            .link("/sbin/init", "/bin/busybox")
            .copy("/usr/bin/envd", &b.envd)
            .file("/etc/inittab", "::sysinit:/sbin/openrc sysinit\n", 0o644)
            .copy("/sbin/openrc", &b.systemd)
            .file(
                "/etc/init.d/envd",
                "#!/sbin/openrc-run\ncommand=\"/usr/bin/envd\"\ncommand_args=\"-cmd /start.sh\"\nsupervisor=supervise-daemon\n",
                0o755,
            )
            .link("/etc/runlevels/default/envd", "/etc/init.d/envd");
    }) else {
        return;
    };
    assert!(content_ids(&f).contains(&"wrapper.envd-flag".into()), "{f:?}");
    assert!(message(&f, "wrapper.envd-flag").contains("-cmd"), "{f:?}");
    let v = s.inspect(BUILD);
    assert_eq!(v["boot"]["openrc"]["runlevels"], serde_json::json!(["default"]));
    assert!(v["boot"]["envd_started_by"].as_array().unwrap().iter().any(|x| x == "openrc"), "{v}");
}

#[test]
fn systemd_drop_ins_override_exec_start() {
    let dropin = "[Service]\nExecStart=\nExecStart=/usr/bin/envd -debug\n";
    let Some((_s, _, f)) = case(|t, b| {
        systemd_tree(t, b, Some(UNIT), true);
        t.file("/etc/systemd/system/envd.service.d/override.conf", dropin, 0o644);
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), ["systemd.envd-flag"], "{f:?}");
    assert!(f.iter().any(|(_, _, m)| m.contains("-debug")), "{f:?}");
}

#[test]
fn dos_line_endings_are_reported() {
    let Some((_s, code, f)) = case(|t, b| {
        t.shell().copy("/usr/bin/envd", &b.envd).file("/sbin/init", "#!/bin/sh\r\nexec /usr/bin/envd\r\n", 0o755);
    }) else {
        return;
    };
    let ids = content_ids(&f);
    assert!(ids.contains(&"wrapper.crlf".into()) && ids.contains(&"init.interpreter-missing".into()), "{f:?}");
    assert!(message(&f, "init.interpreter-missing").contains("carriage return"), "{f:?}");
    assert_eq!(code, 1);
}

#[test]
fn the_systemd_resolved_stub_is_fine_under_systemd() {
    let Some((_s, code, f)) = case(|t, b| {
        systemd_tree(t, b, Some(UNIT), true);
        t.link("/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf");
    }) else {
        return;
    };
    assert_eq!(content_ids(&f), Vec::<String>::new(), "{f:?}");
    assert!(f.iter().any(|(id, sev, _)| id == "rootfs.resolv-conf-dangling" && sev == "info"), "{f:?}");
    assert_eq!(code, 0);
}

#[test]
fn a_build_copied_to_a_folder_that_is_not_a_uuid() {
    let Some(bins) = bins() else { return };
    let s = Store::new();
    let t = Tree::new(s.dir.path());
    t.envd_as_init(bins);
    let loose = s.dir.path().join("loose/my-build");
    std::fs::create_dir_all(&loose).unwrap();
    common::mkfs(&t.root, &loose.join("rootfs.ext4"), 16);
    let out = common::tmpl().args(["--json", "verify"]).arg(&loose).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> =
        v["builds"][0]["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(!ids.iter().any(|i| i.starts_with("rootfs.") && *i != "rootfs.headerless"), "{v}");
    assert!(ids.contains(&"build.folder-not-uuid"), "{v}");
    let cat =
        common::tmpl().args(["inspect"]).arg(&loose).args(["--path", "/etc/resolv.conf", "--cat"]).output().unwrap();
    assert_eq!(cat.stdout, b"nameserver 8.8.8.8\n");
}
