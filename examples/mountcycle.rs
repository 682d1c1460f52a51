//! How long tmpl's mount cycle (loop attach + mount, then syncfs + unmount + loop release) takes
//! on this machine: the median of 5 cycles, read-write and read-only, on a 64 MiB ext4 image made
//! with `mkfs.ext4 -d`. A measurement, not a test (it asserts nothing): `scripts/bench.sh` runs it
//! as root and prints `RESULT|` lines. Needs root (CAP_SYS_ADMIN, /dev/loop-control).

use std::path::Path;

use tmpl::sys::{MountOptions, time_cycle};
use tmpl::tools::e2fs::{self, MkfsOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let tree = dir.path().join("tree");
    for d in ["etc", "usr/bin", "sbin", "tmp"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    std::fs::write(tree.join("etc/hostname"), "sandbox\n")?;
    std::fs::write(tree.join("usr/bin/old"), vec![7u8; 100_000])?;
    let image = dir.path().join("rootfs.ext4");
    let mkfs = MkfsOptions {
        uuid: "d3d3d3d3-0000-4000-8000-0000000000aa",
        label: "bench",
        size: 64 * 1024 * 1024,
        features: None,
    };
    e2fs::mkfs_from_dir(&tree, &image, &mkfs)?;
    let parent = dir.path().join("mnt");
    std::fs::create_dir(&parent)?;
    for read_only in [false, true] {
        let opts = MountOptions { parent: Some(parent.clone()), read_only, ..MountOptions::default() };
        let mut runs = Vec::new();
        for _ in 0..5 {
            runs.push(time_cycle(Path::new(&image), &opts)?);
        }
        runs.sort_by_key(|t| t.total);
        let med = runs[runs.len() / 2];
        let mode = if read_only { "read-only" } else { "read-write" };
        println!(
            "RESULT|mount cycle ({mode}), median of 5, 64 MiB image|attach {:?}, mount {:?}, sync+unmount+release {:?}|total {:?}",
            med.attach, med.mount, med.unmount, med.total
        );
    }
    Ok(())
}
