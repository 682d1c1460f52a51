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
