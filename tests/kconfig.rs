//! `tmpl::kconfig` on real kernels: the test guest kernel built by scripts/build-test-kernel.sh
//! (IKCONFIG inside an ELF vmlinux and inside an xz+BCJ bzImage payload) and Debian's cloud kernel
//! (an LZ4 bzImage without IKCONFIG, its config-* beside it). Synthetic images are covered by the
//! unit tests in src/kconfig.rs.

mod guest_support;

use std::io::Read;
use std::path::Path;

use guest_support::{debian_kernel, guest_kernel};
use tmpl::kconfig::{self, Compression, ConfigOrigin, ImageKind, Profile, Setting, Severity};

fn failing(checks: &[kconfig::Check], severity: Severity) -> Vec<&'static str> {
    checks.iter().filter(|c| !c.ok && c.severity == severity).map(|c| c.id).collect()
}

/// Decompress the whole payload: it must be as long as its size trailer says, and an ELF.
fn payload_is_the_vmlinux(kernel: &Path, compression: Compression) {
    let mut p = kconfig::open_payload(kernel).unwrap();
    assert_eq!(p.compression, compression);
    let mut head = [0u8; 4];
    p.reader.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"\x7fELF");
    let rest = std::io::copy(&mut p.reader.take(kconfig::MAX_PAYLOAD_BYTES), &mut std::io::sink()).unwrap();
    assert_eq!(rest + 4, p.size, "decompressed size = the payload's size trailer");
}

#[test]
fn the_guest_kernel_carries_its_config_and_meets_every_boot_requirement() {
    let Some(vmlinux) = guest_kernel() else { return };
    let config = kconfig::load(&vmlinux, None).unwrap();
    assert!(matches!(config.origin, ConfigOrigin::Embedded { image: ImageKind::Elf, compression: None, .. }));
    assert_eq!(config.discovery(), kconfig::Discovery::CommandLine);

    // The embedded config is the one the build script kept beside the image...
    let dir = vmlinux.parent().unwrap();
    let beside = kconfig::read_config_file(&dir.join("config"), true).unwrap();
    assert_eq!(config.options, beside.options);
    assert!(config.release.is_some());
    // ...and every line of the repository's fragment is in it.
    let fragment =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/tmpl-guest.config")).unwrap();
    let wanted: Vec<&str> = fragment.lines().filter(|l| l.starts_with("CONFIG_")).collect();
    assert!(wanted.len() > 50);
    for line in wanted {
        let (name, value) = line.trim_start_matches("CONFIG_").split_once('=').unwrap();
        assert_eq!(config.get(name).to_string(), value, "{line}");
    }

    // Nothing a boot needs is missing, for Firecracker or for boot-test's QEMU.
    for profile in [Profile::Firecracker, Profile::QemuMicrovm] {
        let checks = kconfig::check(&config, profile);
        assert_eq!(failing(&checks, Severity::Fatal), Vec::<&str>::new(), "{profile:?}");
        assert_eq!(failing(&checks, Severity::Warning), Vec::<&str>::new(), "{profile:?}");
        // What it leaves out on purpose are E2B features a boot test does not exercise.
        assert!(failing(&checks, Severity::Info).contains(&"balloon"));
    }

    // The same kernel as a bzImage: an xz payload with the x86 BCJ filter (scripts/xz_wrap.sh).
    let bz = dir.join("bzImage");
    let e = kconfig::read_embedded(&bz).unwrap();
    assert!(matches!(e.image, ImageKind::BzImage { protocol } if protocol >= 0x020f), "{:?}", e.image);
    assert_eq!(e.compression, Some(Compression::Xz));
    assert_eq!(e.config.unwrap().options, config.options);
    payload_is_the_vmlinux(&bz, Compression::Xz);
}

#[test]
fn the_debian_cloud_kernel_is_read_from_its_config_file_and_cannot_boot_an_e2b_guest() {
    let Some(vmlinuz) = debian_kernel() else { return };
    let e = kconfig::read_embedded(&vmlinuz).unwrap();
    assert!(matches!(e.image, ImageKind::BzImage { .. }));
    assert_eq!((e.compression, e.config), (Some(Compression::Lz4Legacy), None), "no IKCONFIG in Debian's kernel");
    payload_is_the_vmlinux(&vmlinuz, Compression::Lz4Legacy);

    let config = kconfig::load(&vmlinuz, None).unwrap();
    let ConfigOrigin::File { path, beside_kernel: true } = &config.origin else { panic!("{:?}", config.origin) };
    assert!(path.file_name().unwrap().to_string_lossy().starts_with("config-"), "{}", path.display());
    assert_eq!(config.get("VIRTIO_MMIO"), &Setting::Module);

    let fc = kconfig::check(&config, Profile::Firecracker);
    assert_eq!(failing(&fc, Severity::Fatal), ["virtio-mmio", "virtio-blk", "virtio-net", "ip-autoconfig"]);
    let qemu = kconfig::check(&config, Profile::QemuMicrovm);
    assert_eq!(
        failing(&qemu, Severity::Fatal),
        ["virtio-mmio", "virtio-discovery", "virtio-blk", "virtio-net", "ip-autoconfig"]
    );
    let ikconfig = fc.iter().find(|c| c.id == "ikconfig").unwrap();
    assert!(!ikconfig.ok && ikconfig.severity == Severity::Info);
}

fn check_kernel(args: &[&std::ffi::OsStr]) -> (serde_json::Value, i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tmpl"))
        .args(["--json", "check-kernel"])
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (v, out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_kernel_passes_the_guest_kernel_and_fails_debians_with_fix_hints() {
    if let Some(k) = guest_kernel() {
        let (v, code, err) = check_kernel(&[k.as_os_str()]);
        assert_eq!(code, 0, "{v:#} {err}");
        assert_eq!(v["summary"]["errors"], 0);
        assert_eq!(v["boot_test"]["strongest_evidence"], "health");
        assert_eq!(v["config"]["from"], "embedded", "{v:#}");
        assert_eq!(v["discovery"], "command-line");
    }
    if let Some(k) = debian_kernel() {
        let (v, code, err) = check_kernel(&[k.as_os_str()]);
        assert_eq!(code, 1, "{v:#} {err}");
        let f = v["findings"].as_array().unwrap();
        let ip = f.iter().find(|f| f["file"] == "CONFIG_IP_PNP").unwrap_or_else(|| panic!("{v:#}"));
        assert_eq!((&ip["id"], &ip["severity"]), (&"kernel.boot-requirement".into(), &"error".into()));
        assert!(ip["hint"].as_str().unwrap().contains("CONFIG_IP_PNP=y"));
        let mmio = f.iter().find(|f| f["file"] == "CONFIG_VIRTIO_MMIO").unwrap();
        assert!(mmio["message"].as_str().unwrap().contains("=m (a module)"), "{mmio}");
        assert_eq!(v["boot_test"]["strongest_evidence"], "marker");
        // boot-test's own profile: the command-line devices are required, ACPI does not stand in.
        let (v, _, _) =
            check_kernel(&[k.as_os_str(), std::ffi::OsStr::new("--profile"), std::ffi::OsStr::new("qemu-microvm")]);
        assert!(v["findings"].as_array().unwrap().iter().any(|f| f["id"] == "kernel.virtio-discovery"), "{v:#}");
    }
    // Not a kernel: invalid input (3), and nothing on stdout but the error envelope.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("vmlinux.bin");
    std::fs::write(&junk, b"#!/bin/sh\necho not a kernel\n").unwrap();
    let (_, code, err) = check_kernel(&[junk.as_os_str()]);
    assert_eq!(code, 3, "{err}");
    let (_, code, _) = check_kernel(&[dir.path().join("absent").as_os_str()]);
    assert!(code == 3 || code == 4, "{code}");
}
