//! Rootfs checks that need only the filesystem's superblock: is there an ext4 filesystem on the
//! assembled device, is its journal clean, can tmpl read its contents, is it truncated.
//! Content checks (init chain, envd) build on the [`Rootfs`] this returns.

use std::sync::Arc;

use crate::build::Build;
use crate::device::{Device, DeviceError};
use crate::report::{Check, Finding, Severity, human_bytes};
use crate::rootfs::{Rootfs, Superblock, SuperblockError};
use crate::vocab::Artifact;

pub const MISSING: Check = Check {
    id: "rootfs.missing",
    severity: Severity::Error,
    title: "the build has no rootfs at all",
    hint: "every build needs rootfs.ext4 or rootfs.ext4.header; restore them from the source storage",
};
pub const NOT_EXT4: Check = Check {
    id: "rootfs.not-ext4",
    severity: Severity::Error,
    title: "no ext4 filesystem on the assembled rootfs",
    hint: "the data file (or one of the layers it maps) is not the image it should be; the kernel will fail to mount root",
};
pub const NEEDS_RECOVERY: Check = Check {
    id: "rootfs.needs-recovery",
    severity: Severity::Warning,
    title: "the ext4 journal needs recovery",
    hint: "a boot replays it, but offline editors (debugfs) ignore it and a later replay undoes their writes; tmpl inject-envd refuses such images unless asked to replay the journal first",
};
pub const UNSUPPORTED_FEATURES: Check = Check {
    id: "rootfs.unsupported-features",
    severity: Severity::Warning,
    title: "ext4 features tmpl's reader does not support",
    hint: "the kernel can mount it, but tmpl cannot check its contents",
};
pub const TRUNCATED: Check = Check {
    id: "rootfs.truncated",
    severity: Severity::Error,
    title: "the filesystem is larger than the device",
    hint: "blocks past the end are missing: the image or its header Size was cut short",
};
pub const FS_ERRORS: Check = Check {
    id: "rootfs.fs-errors",
    severity: Severity::Warning,
    title: "the filesystem is marked as having errors",
    hint: "run e2fsck -fn on an assembled copy to see them",
};
pub const UNREADABLE: Check = Check {
    id: "rootfs.unreadable",
    severity: Severity::Error,
    title: "the rootfs cannot be read",
    hint: "a layer's data file is missing or short (see the header findings) or the filesystem is corrupt",
};
pub const NOT_CHECKED: Check = Check {
    id: "rootfs.not-checked",
    severity: Severity::Info,
    title: "rootfs contents were not checked",
    hint: "fix the findings above first",
};

pub const CHECKS: &[&Check] =
    &[&MISSING, &NOT_EXT4, &NEEDS_RECOVERY, &UNSUPPORTED_FEATURES, &TRUNCATED, &FS_ERRORS, &UNREADABLE, &NOT_CHECKED];

fn file() -> Option<String> {
    Some("rootfs.ext4".to_string())
}

/// Superblock checks. Returns the opened filesystem (when readable), the findings, and the
/// number of bytes read through the device.
pub fn check(build: &Build, earlier: &[Finding]) -> (Option<Rootfs>, Vec<Finding>, u64) {
    let mut out = Vec::new();
    if build.rootfs.is_absent() {
        out.push(Finding::new(&MISSING, file(), "neither rootfs.ext4 nor rootfs.ext4.header exists"));
        return (None, out, 0);
    }
    let blocked = earlier.iter().any(|f| {
        f.severity == Severity::Error
            && (f.id.starts_with("header.") || f.id == "rootfs.missing-data" || f.id == "rootfs.not-block-multiple")
            && f.file.as_deref().is_none_or(|p| !p.starts_with("memfile"))
    });
    let dev = match Device::open(build, Artifact::Rootfs) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            let check =
                if blocked || matches!(e, DeviceError::Unavailable { .. }) { &NOT_CHECKED } else { &UNREADABLE };
            let check = super::unreadable(build, e.io_kind(), check);
            out.push(Finding::new(check, file(), e.to_string()));
            return (None, out, 0);
        }
    };
    let sb = match Superblock::read(&*dev) {
        Ok(sb) => sb,
        Err(SuperblockError::Device(e)) => {
            let check = super::unreadable(build, e.io_kind(), if blocked { &NOT_CHECKED } else { &UNREADABLE });
            out.push(Finding::new(check, file(), e.to_string()));
            return (None, out, dev.bytes_read());
        }
        Err(e) => {
            out.push(Finding::new(&NOT_EXT4, file(), e.to_string()));
            return (None, out, dev.bytes_read());
        }
    };
    if sb.needs_recovery() {
        out.push(Finding::new(
            &NEEDS_RECOVERY,
            file(),
            "needs_recovery is set: the journal holds transactions not yet written back",
        ));
    }
    if sb.has_errors() {
        out.push(Finding::new(&FS_ERRORS, file(), "s_state has the errors bit set"));
    }
    if sb.fs_bytes() > dev.size() {
        out.push(Finding::new(
            &TRUNCATED,
            file(),
            format!(
                "the superblock says {} ({} blocks of {}), the device has {}",
                human_bytes(sb.fs_bytes()),
                sb.blocks_count,
                sb.block_size,
                human_bytes(dev.size())
            ),
        ));
    }
    let unreadable = sb.unreadable_features();
    if !unreadable.is_empty() {
        out.push(Finding::new(&UNSUPPORTED_FEATURES, file(), format!("features {}", unreadable.join(", "))));
        return (None, out, dev.bytes_read());
    }
    use crate::device::ReadAt;
    match Rootfs::open(dev.clone()) {
        Ok(fs) => {
            let n = dev.bytes_read();
            (Some(fs), out, n)
        }
        Err(e) if e.is_read_failure() => {
            let message = e.read_failure().unwrap_or_default();
            out.push(Finding::new(if blocked { &NOT_CHECKED } else { &UNREADABLE }, file(), message));
            (None, out, dev.bytes_read())
        }
        Err(e) => {
            out.push(Finding::new(&NOT_EXT4, file(), e.to_string()));
            (None, out, dev.bytes_read())
        }
    }
}
