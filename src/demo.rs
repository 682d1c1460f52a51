//! The built-in demo: a small storage with healthy builds and one build per failure operators
//! hit, made from real parts (ext4 images from `mkfs.ext4 -d`, compacted V3 layers, sparse
//! memfiles, snapfiles that are complete states as the Firecracker release in each build's
//! metadata writes them: `fixtures::snapfile`). `tmpl demo` verifies it and checks that every
//! planted fault is found; the test suite uses the same builders.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Build;
use crate::compress::Compression;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::fixtures::layer::{self, LayerFormat, Parent};
use crate::header::{self, Header};
use crate::metadata;
use crate::progress::NoProgress;
use crate::snapshot::Arch;
use crate::storage::BuildLocation;
use crate::tools::e2fs::{self, MkfsOptions};
use crate::vocab::Artifact;
use crate::vocab::BuildId;

/// Marker file that identifies a demo storage (so `--dir` can be reused safely).
pub const MARKER: &str = ".tmpl-demo";
/// Firecracker/kernel versions the demo builds claim (E2B defaults). Each build's snapfile is a
/// complete state as that release writes it ([`crate::fixtures::snapfile`]).
pub const FC_VERSION: &str = "v1.14.1_431f1fc";
/// The release the 2026 (compressed V4/V5) demo builds claim: bitcode snapfiles.
pub const FC_VERSION_BITCODE: &str = "v1.16.1";
pub const KERNEL_VERSION: &str = "vmlinux-6.1.158";
/// Guest memory of demo snapshots.
pub const MEM_MIB: u64 = 64;
const IMAGE_SIZE: u64 = 16 * 1024 * 1024;
const FS_UUID: &str = "d3d3d3d3-0000-4000-8000-000000000001";

/// One demo build and what verify must say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub build_id: BuildId,
    pub name: &'static str,
    pub description: &'static str,
    /// Finding ids verify must report (empty for healthy builds, which must have no errors or
    /// warnings).
    pub expect: Vec<&'static str>,
    /// What `tmpl boot-test` says about it (QEMU, the E2B-like test guest kernel), when the demo
    /// envd and a shell are in the images ([`BootSupport::runnable`]).
    pub boot: BootExpect,
    /// Why the boot verdict is what it is, when that is not obvious from the fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_note: Option<&'static str>,
}

/// What `tmpl boot-test BUILD --kernel K` must say about a demo build (measured with the
/// E2B-like guest kernel of scripts/build-test-kernel.sh under QEMU, TCG or KVM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum BootExpect {
    /// Verdict `ok` on `health` evidence (exit 0): envd answered `GET /health` through the
    /// guest's network.
    Health,
    /// Verdict `panic` (exit 1); the kernel's panic line contains `panic`.
    Panic { panic: &'static str },
    /// boot-test cannot assemble a rootfs from the build: it boots nothing and exits 3 (bad
    /// build) with an error that contains `error`.
    NotBootable { error: &'static str },
}

impl BootExpect {
    /// The exit status of `tmpl boot-test`.
    pub fn exit_code(self) -> u8 {
        match self {
            BootExpect::Health => crate::exit_code::OK,
            BootExpect::Panic { .. } => crate::exit_code::FINDINGS,
            BootExpect::NotBootable { .. } => crate::exit_code::INVALID_INPUT,
        }
    }

    /// One phrase for the demo table.
    pub fn describe(self) -> String {
        match self {
            BootExpect::Health => "ok on health".into(),
            BootExpect::Panic { panic } => format!("panic ({panic})"),
            BootExpect::NotBootable { .. } => "not bootable (exit 3: no rootfs to assemble)".into(),
        }
    }
}

/// The base images' /etc/motd (the child's edit replaces it).
const BASE_MOTD: &[u8] = b"the tmpl demo base\n";

/// Boot notes shared by the faults boot-test does not see.
const SNAPSHOT_ONLY: &str =
    "boot-test cold-boots the rootfs and never reads the snapfile: it boots; only E2B's resume from the snapshot fails";
const MEMORY_ONLY: &str =
    "boot-test cold-boots the rootfs and never reads the memfile: it boots; only E2B's resume from the snapshot fails";

/// Whether the demo builds can boot: the envd and the shell in their images.
#[derive(Debug, Clone, Serialize)]
pub struct BootSupport {
    /// The envd is the demo envd (demo/envd.c, static), not the stand-in that cannot run.
    pub envd_runs: bool,
    /// What the envd is, or why it is the stand-in.
    pub envd: String,
    pub shell: Shell,
}

impl BootSupport {
    pub fn new(shell: &Shell) -> BootSupport {
        let (envd_runs, envd) = match envd_binary() {
            Ok(b) => (true, format!("demo/envd.c, static, {} KiB", b.len() / 1024)),
            Err(why) => (false, format!("a stand-in that cannot run: {why}")),
        };
        BootSupport { envd_runs, envd, shell: shell.clone() }
    }

    /// The builds boot as their [`Scenario::boot`] says: the envd runs and the wrapper build
    /// has a shell.
    pub fn runnable(&self) -> bool {
        self.envd_runs && !matches!(self.shell, Shell::Missing { .. })
    }
}

fn id(s: &str) -> BuildId {
    BuildId::parse(s).expect("demo IDs are valid")
}

/// Build IDs used by the demo (stable, so the README can refer to them).
pub mod ids {
    pub const BASE: &str = "b0000000-0000-4000-8000-000000000001";
    pub const CHILD: &str = "c0000000-0000-4000-8000-000000000002";
    pub const FS_ONLY: &str = "f0000000-0000-4000-8000-000000000003";
    pub const LEGACY: &str = "10000000-0000-4000-8000-000000000004";
    pub const CRC: &str = "e1000000-0000-4000-8000-000000000011";
    pub const SHORT_MEMFILE: &str = "e2000000-0000-4000-8000-000000000012";
    pub const FC_MISMATCH: &str = "e3000000-0000-4000-8000-000000000013";
    pub const MISSING_ANCESTOR: &str = "e4000000-0000-4000-8000-000000000014";
    pub const TRUNCATED_HEADER: &str = "e5000000-0000-4000-8000-000000000015";
    pub const COPIED: &str = "e6000000-0000-4000-8000-000000000016";
    pub const FAKE_SNAPFILE: &str = "e7000000-0000-4000-8000-000000000017";
    pub const ENVD_FLAG: &str = "e8000000-0000-4000-8000-000000000018";
    pub const DANGLING_INIT: &str = "e9000000-0000-4000-8000-000000000019";
    /// Healthy V4 base with zstd-compressed rootfs and memfile.
    pub const ZSTD_BASE: &str = "a0000000-0000-4000-8000-000000000005";
    /// Healthy V5 child of ZSTD_BASE with LZ4-compressed data.
    pub const LZ4_CHILD: &str = "a0000000-0000-4000-8000-000000000006";
    pub const LZ4_CHECKSUM: &str = "eb000000-0000-4000-8000-00000000001b";
    pub const PENDING_UPLOAD: &str = "ec000000-0000-4000-8000-00000000001c";
    pub const SHORT_COMPRESSED: &str = "ea000000-0000-4000-8000-00000000001a";
    /// A v1.16 (bitcode) snapfile zero-padded by a copy: Firecracker v1.15+ refuse it.
    pub const PADDED_BITCODE: &str = "ed000000-0000-4000-8000-00000000001d";
    /// A memfile of a bigger VM next to the snapfile.
    pub const BIG_MEMFILE: &str = "ee000000-0000-4000-8000-00000000001e";
    /// Referenced by MISSING_ANCESTOR, deliberately absent.
    pub const GONE: &str = "deadbeef-0000-4000-8000-0000000000ff";

    /// Every build the demo writes (a directory holding only these and the marker is a demo).
    pub const ALL: &[&str] = &[
        BASE,
        CHILD,
        FS_ONLY,
        LEGACY,
        CRC,
        SHORT_MEMFILE,
        FC_MISMATCH,
        MISSING_ANCESTOR,
        TRUNCATED_HEADER,
        COPIED,
        FAKE_SNAPFILE,
        ENVD_FLAG,
        DANGLING_INIT,
        ZSTD_BASE,
        LZ4_CHILD,
        LZ4_CHECKSUM,
        PENDING_UPLOAD,
        SHORT_COMPRESSED,
        PADDED_BITCODE,
        BIG_MEMFILE,
    ];
}

/// Every build ID the demo writes.
pub fn all_ids() -> &'static [&'static str] {
    ids::ALL
}

/// A directory tree for a minimal rootfs: `/sbin/init` → `/usr/bin/envd` (the demo envd,
/// [`envd_binary`], or the [`stand_in_envd`] when this tmpl was built without it),
/// resolv.conf and the `/.e2b` marker.
pub fn rootfs_tree(dir: &Path, build_id: &str, extra: &[(&str, &[u8])]) -> Result<()> {
    let w = |rel: &str, data: &[u8]| -> Result<()> {
        let p = dir.join(rel.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
        }
        std::fs::write(&p, data).map_err(|e| Error::write(&p, e))
    };
    match envd_binary() {
        Ok(bin) => w("usr/bin/envd", bin)?,
        Err(_) => w("usr/bin/envd", &stand_in_envd())?,
    }
    set_mode(&dir.join("usr/bin/envd"), 0o755)?;
    w("etc/resolv.conf", b"nameserver 8.8.8.8\n")?;
    w(".e2b", format!("ENV_ID=demo\nTEMPLATE_ID=demo\nBUILD_ID={build_id}\n").as_bytes())?;
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| Error::write(dir, e))?;
    }
    std::fs::create_dir_all(dir.join("sbin")).map_err(|e| Error::write(dir, e))?;
    let init = dir.join("sbin/init");
    if !init.exists() {
        std::os::unix::fs::symlink("/usr/bin/envd", &init).map_err(|e| Error::write(&init, e))?;
    }
    for (rel, data) in extra {
        w(rel, data)?;
    }
    Ok(())
}

/// The demo envd: demo/envd.c, compiled static by build.rs and embedded zstd-compressed. It
/// parses envd's current flags the way envd does (an unknown flag exits 2), listens on 49983 and
/// answers `GET /health` with 204, so `boot-test` proves `health` on the demo builds. `Err`
/// says why this tmpl was built without it (another target, no static libc).
pub fn envd_binary() -> std::result::Result<&'static [u8], &'static str> {
    static ENVD: std::sync::OnceLock<std::result::Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    ENVD.get_or_init(load_envd).as_deref().map_err(String::as_str)
}

#[cfg(tmpl_demo_envd)]
fn load_envd() -> std::result::Result<Vec<u8>, String> {
    const PACKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envd.zst"));
    let len: usize = env!("TMPL_DEMO_ENVD_LEN").parse().map_err(|e| format!("TMPL_DEMO_ENVD_LEN: {e}"))?;
    zstd::bulk::decompress(PACKED, len).map_err(|e| format!("the embedded demo envd does not decompress: {e}"))
}

#[cfg(not(tmpl_demo_envd))]
fn load_envd() -> std::result::Result<Vec<u8>, String> {
    Err(format!("this tmpl was built without the demo envd: {}", env!("TMPL_DEMO_ENVD_MISSING")))
}

/// A stand-in envd: an ELF header for this machine followed by the flag names a current envd
/// embeds (so tmpl can tell its era). Not runnable: the demo uses it only when this tmpl was
/// built without the demo envd ([`envd_binary`]), and the tests use it where nothing runs.
pub fn stand_in_envd() -> Vec<u8> {
    let machine = Arch::host().unwrap_or(Arch::X86_64).elf_machine();
    let mut b = crate::elf::synthetic(machine, None);
    b.extend_from_slice(b"\0envd\0port\0version\0commit\0isnotfc\0cgroup-root\0verbose\0no-cgroups\0resume-handover\0");
    b
}

/// Applets the demo links to busybox: the shell, and what the init wrapper
/// (templates/init-wrapper.sh) and the hand-written wrappers run besides shell built-ins.
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "mount", "mkdir", "sleep", "cat", "echo", "ls"];

/// Where a static busybox is looked for.
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// At most this many bytes of a host program or library are read to find what it needs.
const MAX_HOST_FILE: u64 = 64 << 20;

/// The working shell the demo images carry: taken from this machine, so the wrapper builds
/// (`/sbin/init` a `#!/bin/sh` script) really run it when `boot-test` boots them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Shell {
    /// A static busybox, installed as `/bin/busybox` with [`BUSYBOX_APPLETS`] linked to it.
    Busybox { source: PathBuf },
    /// The host's `/bin/sh` with its program interpreter and the shared libraries it needs
    /// (`DT_NEEDED`, transitively), each copied to the path the loader looks for it at.
    HostSh { files: Vec<HostFile> },
    /// No shell could be taken: the wrapper builds cannot run their script.
    Missing { reason: String },
}

/// A host file copied into the demo images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    /// Path in the image.
    pub guest: String,
    /// Where its bytes come from (symlinks resolved).
    pub host: PathBuf,
}

impl Shell {
    /// The shell to use: a static busybox of this machine's architecture, else the host's
    /// `/bin/sh` with its loader and libraries, else none (with the reason).
    pub fn find() -> Shell {
        let Some(arch) = Arch::host() else {
            return Shell::Missing { reason: format!("no shell for {} guests", std::env::consts::ARCH) };
        };
        for bb in BUSYBOX.iter().map(Path::new) {
            if let Ok(info) = host_elf(bb).map(|(info, _)| info)
                && info.is_static
                && info.machine == arch.elf_machine()
            {
                return Shell::Busybox { source: bb.to_path_buf() };
            }
        }
        match Shell::host_sh() {
            Shell::Missing { reason } => Shell::Missing {
                reason: format!(
                    "no static busybox ({}), and the host's /bin/sh cannot be copied: {reason}",
                    BUSYBOX.join(", ")
                ),
            },
            sh => sh,
        }
    }

    /// The host's `/bin/sh` with its loader and libraries (what [`Shell::find`] takes when there
    /// is no static busybox), or why it cannot be copied.
    pub fn host_sh() -> Shell {
        let Some(arch) = Arch::host() else {
            return Shell::Missing { reason: format!("no shell for {} guests", std::env::consts::ARCH) };
        };
        match host_sh(arch) {
            Ok(files) => Shell::HostSh { files },
            Err(reason) => Shell::Missing { reason },
        }
    }

    /// One line for the demo's output.
    pub fn describe(&self) -> String {
        match self {
            Shell::Busybox { source } => {
                format!("static busybox from {} ({})", source.display(), BUSYBOX_APPLETS.join(", "))
            }
            Shell::HostSh { files } => format!(
                "the host's /bin/sh with {}",
                files.iter().skip(1).map(|f| f.guest.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Shell::Missing { reason } => format!("none: {reason}"),
        }
    }

    /// Put the shell into a rootfs tree.
    pub fn install(&self, tree: &Path) -> Result<()> {
        let copy = |host: &Path, guest: &str| -> Result<()> {
            let dest = tree.join(guest.trim_start_matches('/'));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
            }
            std::fs::copy(host, &dest).map_err(|e| Error::write(&dest, e))?;
            set_mode(&dest, 0o755)
        };
        match self {
            Shell::Busybox { source } => {
                copy(source, "/bin/busybox")?;
                for a in BUSYBOX_APPLETS {
                    let link = tree.join("bin").join(a);
                    if std::fs::symlink_metadata(&link).is_err() {
                        std::os::unix::fs::symlink("busybox", &link).map_err(|e| Error::write(&link, e))?;
                    }
                }
            }
            Shell::HostSh { files } => {
                for f in files {
                    copy(&f.host, &f.guest)?;
                }
            }
            Shell::Missing { .. } => {}
        }
        Ok(())
    }
}

/// A host file's ELF facts and its bytes (at most [`MAX_HOST_FILE`]), symlinks resolved.
fn host_elf(path: &Path) -> std::result::Result<(crate::elf::ElfInfo, Vec<u8>), String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_HOST_FILE).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    // The whole file, not its first HEAD_BYTES: glibc's libc.so.6 has a PT_INTERP past them.
    let info = crate::elf::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((info, bytes))
}

/// The host's `/bin/sh`, its program interpreter and the libraries it needs, found in the
/// standard library directories the way the dynamic loader looks for them (no ld.so.cache).
fn host_sh(arch: Arch) -> std::result::Result<Vec<HostFile>, String> {
    let sh = Path::new("/bin/sh");
    let real = std::fs::canonicalize(sh).map_err(|e| format!("{}: {e}", sh.display()))?;
    let (info, bytes) = host_elf(&real)?;
    if info.machine != arch.elf_machine() || !info.is_executable_type() {
        return Err(format!("{} is not an {} executable", real.display(), arch.name()));
    }
    let mut files = vec![HostFile { guest: "/bin/sh".into(), host: real.clone() }];
    let mut skip = std::collections::BTreeSet::new();
    if let Some(interp) = &info.interpreter {
        let host = std::fs::canonicalize(interp).map_err(|e| format!("its loader {interp}: {e}"))?;
        files.push(HostFile { guest: interp.clone(), host });
        // The loader is named again by libc's DT_NEEDED: it is there already.
        skip.extend(Path::new(interp).file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    let needed = |b: &[u8], what: &Path| {
        crate::elf::needed(b).ok_or_else(|| format!("{}: its dynamic section cannot be read", what.display()))
    };
    let mut queue = if info.is_static { Vec::new() } else { needed(&bytes, &real)? };
    let triple = format!("{}-linux-gnu", arch.name());
    let dirs = [
        format!("/lib/{triple}"),
        format!("/usr/lib/{triple}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ];
    while let Some(lib) = queue.pop() {
        if !skip.insert(lib.clone()) {
            continue;
        }
        if lib.contains('/') || skip.len() > 64 {
            return Err(format!("it needs {lib:?}, which the demo does not resolve"));
        }
        let Some(guest) = dirs.iter().map(|d| format!("{d}/{lib}")).find(|p| Path::new(p).is_file()) else {
            return Err(format!("it needs {lib}, which is in none of {}", dirs.join(", ")));
        };
        let host = std::fs::canonicalize(&guest).map_err(|e| format!("{guest}: {e}"))?;
        let (_, b) = host_elf(&host)?;
        queue.extend(needed(&b, &host)?);
        files.push(HostFile { guest, host });
    }
    Ok(files)
}

/// An init wrapper of the kind operators write by hand, passing envd `flag`.
pub fn hand_written_wrapper(flag: &str) -> String {
    format!(
        "#!/bin/sh\n# written by hand in 2025\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nexec /usr/bin/envd {flag}\n"
    )
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::write(p, e))
}

/// `mkfs.ext4 -d tree image` with the demo's pinned UUID.
pub fn make_image(tree: &Path, image: &Path, size: u64) -> Result<()> {
    Ok(e2fs::mkfs_from_dir(tree, image, &MkfsOptions { uuid: FS_UUID, label: "rootfs", size, features: None })?)
}

/// Helpers to write builds into a storage root.
pub struct StorageWriter {
    pub root: PathBuf,
}

impl StorageWriter {
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::write(root, e))?;
        Ok(StorageWriter { root: root.to_path_buf() })
    }

    pub fn dir(&self, id: &BuildId) -> Result<PathBuf> {
        let d = self.root.join(id.to_string());
        std::fs::create_dir_all(&d).map_err(|e| Error::write(&d, e))?;
        Ok(d)
    }

    pub fn write(&self, id: &BuildId, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.dir(id)?.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::write(&p, e))
    }

    pub fn metadata(&self, id: &BuildId, fc: &str, filesystem_only: bool) -> Result<()> {
        self.write(
            id,
            "metadata.json",
            metadata::render_v2(&id.to_string(), KERNEL_VERSION, fc, filesystem_only).as_bytes(),
        )
    }

    /// A snapfile of snapshot `version` for a VM of `mem_mib` (x86_64): the complete state the
    /// Firecracker release that writes `version` writes, for the versions tmpl ships a
    /// Firecracker-written state of (4.0.0, 6.0.0, 8.0.0, 10.0.0: [`crate::fixtures::snapfile`]); for other
    /// versions only the header, `vm_info` and regions (enough for tmpl, not for Firecracker).
    pub fn snapfile(&self, id: &BuildId, version: &str, mem_mib: u64) -> Result<Vec<u8>> {
        let bytes = match crate::fixtures::snapfile::for_version(version) {
            Some(release) => crate::fixtures::snapfile::snapfile(release, &crate::fixtures::snapfile::Vm::new(mem_mib)),
            None => crate::fixtures::snapfile::build_bincode(
                Arch::X86_64,
                version,
                &crate::fixtures::snapfile::bincode_state_prefix(version, mem_mib, "/fc-vm/vmlinux.bin"),
            ),
        };
        self.write(id, "snapfile", &bytes)?;
        Ok(bytes)
    }

    /// A sparse memfile of `mem_mib` owned entirely by this build, with a V3 header.
    pub fn memfile(&self, id: &BuildId, mem_mib: u64, with_header: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let len = mem_mib << 20;
        layer::sparse_file(&dir.join("memfile"), len, 8)?;
        if with_header {
            let mut h = header::headerless(*id, len, header::PAGE);
            h.version = 3;
            h.generation = 0;
            h.synthesized = false;
            crate::sys::write_atomic(&dir.join("memfile.header"), &header::encode(&h))?;
        }
        Ok(())
    }

    /// Store `image` as build `id`'s rootfs: a compacted layer over `parent` (or a base).
    pub fn rootfs_layer(
        &self,
        id: &BuildId,
        image: &Path,
        parent: Option<&BuildId>,
        generation: u64,
    ) -> Result<Header> {
        self.layer_as(id, Artifact::Rootfs, image, parent, generation, &LayerFormat::V3)
    }

    /// Store `image` as build `id`'s `artifact` in `format` (V3, or V4/V5 with compressed
    /// frames), as a compacted layer over `parent`'s (read through its own header and frames).
    pub fn layer_as(
        &self,
        id: &BuildId,
        artifact: Artifact,
        image: &Path,
        parent: Option<&BuildId>,
        generation: u64,
        format: &LayerFormat,
    ) -> Result<Header> {
        let dir = self.dir(id)?;
        let img = Device::plain_file(image).map_err(|e| Error::invalid(image, e.to_string()))?;
        match parent {
            None => Ok(layer::write_layer_as(&img, &dir, *id, artifact, None, generation, format, &NoProgress)?.header),
            Some(p) => {
                let pdir = self.root.join(p.to_string());
                let pb = Build::open(&BuildLocation {
                    dir: pdir.clone(),
                    folder_id: Some(*p),
                    storage_root: self.root.clone(),
                })?;
                let Some(ph) = pb.artifact(artifact).header.parsed() else {
                    return Err(Error::invalid(&pdir, format!("{} is missing or invalid", artifact.header_name())));
                };
                let pdev = Device::open(&pb, artifact).map_err(|e| Error::invalid(&pdir, e.to_string()))?;
                Ok(layer::write_layer_as(
                    &img,
                    &dir,
                    *id,
                    artifact,
                    Some(Parent { header: ph, device: &pdev }),
                    generation,
                    format,
                    &NoProgress,
                )?
                .header)
            }
        }
    }

    /// Guest memory of `mem_mib` stored as a compacted (mostly nil) layer in `format`.
    pub fn memfile_as(&self, id: &BuildId, mem_mib: u64, format: &LayerFormat, scratch: &Path) -> Result<Header> {
        let img = scratch.join(format!("{id}.mem"));
        layer::sparse_file(&img, mem_mib << 20, 8)?;
        let h = self.layer_as(id, Artifact::Memfile, &img, None, 0, format);
        let _ = std::fs::remove_file(&img);
        h
    }
}

/// Create the demo storage under `root`, with this machine's shell ([`Shell::find`]) in its
/// images, and return its scenarios.
pub fn create(root: &Path) -> Result<Vec<Scenario>> {
    create_with(root, &Shell::find())
}

/// Create the demo storage under `root` with `shell` in every image and return its scenarios.
pub fn create_with(root: &Path, shell: &Shell) -> Result<Vec<Scenario>> {
    let w = StorageWriter::new(root)?;
    let tree_of = |t: &Path, build_id: &str, extra: &[(&str, &[u8])]| -> Result<()> {
        rootfs_tree(t, build_id, extra)?;
        shell.install(t)
    };
    std::fs::write(root.join(MARKER), b"created by tmpl demo\n").map_err(|e| Error::write(root, e))?;
    let scratch = tempfile::tempdir().map_err(|e| Error::write(std::env::temp_dir(), e))?;
    let (base, child) = (id(ids::BASE), id(ids::CHILD));

    // Healthy base (generation 0): compacted layer of a real ext4 image, memory snapshot.
    let tree = scratch.path().join("tree");
    // The child edits /etc/motd: the base has one (of the same block count), so the child's
    // files are laid out where the base's are and its layer owns only the blocks that changed.
    tree_of(&tree, ids::BASE, &[("etc/motd", BASE_MOTD)])?;
    // The trees the diff layers compare are written back to back: mkfs.ext4 -d keeps each file's
    // times, so trees written in different seconds differ in every inode-table block.
    let tree2 = scratch.path().join("tree2");
    tree_of(&tree2, ids::CHILD, &[("etc/motd", b"built on the demo base\n")])?;
    let ztree = scratch.path().join("ztree");
    tree_of(&ztree, ids::ZSTD_BASE, &[("etc/motd", BASE_MOTD)])?;
    let base_img = scratch.path().join("base.ext4");
    make_image(&tree, &base_img, IMAGE_SIZE)?;
    w.rootfs_layer(&base, &base_img, None, 0)?;
    w.memfile(&base, MEM_MIB, true)?;
    w.snapfile(&base, "8.0.0", MEM_MIB)?;
    w.metadata(&base, FC_VERSION, false)?;

    // Healthy child: an edited image stored as a diff layer over the base.
    let child_img = scratch.path().join("child.ext4");
    make_image(&tree2, &child_img, IMAGE_SIZE)?;
    w.rootfs_layer(&child, &child_img, Some(&base), 1)?;
    w.memfile(&child, MEM_MIB, true)?;
    w.snapfile(&child, "8.0.0", MEM_MIB)?;
    w.metadata(&child, FC_VERSION, false)?;

    // Healthy filesystem-only snapshot: rootfs header only, no memory.
    let fs_only = id(ids::FS_ONLY);
    w.rootfs_layer(&fs_only, &base_img, Some(&base), 1)?;
    w.metadata(&fs_only, FC_VERSION, true)?;

    // Legacy headerless build (before 2025): full rootfs.ext4, memfile, snapfile, no metadata.
    let legacy = id(ids::LEGACY);
    let ldir = w.dir(&legacy)?;
    let ltree = scratch.path().join("ltree");
    tree_of(&ltree, ids::LEGACY, &[])?;
    make_image(&ltree, &ldir.join("rootfs.ext4"), IMAGE_SIZE)?;
    w.memfile(&legacy, MEM_MIB, false)?;
    w.snapfile(&legacy, "4.0.0", MEM_MIB)?;

    // Broken builds: each a layer over the base with one planted fault.
    let broken = |sid: &str| -> Result<BuildId> {
        let b = id(sid);
        w.rootfs_layer(&b, &base_img, Some(&base), 1)?;
        w.memfile(&b, MEM_MIB, true)?;
        w.metadata(&b, FC_VERSION, false)?;
        Ok(b)
    };
    let crc = broken(ids::CRC)?;
    let mut snap = w.snapfile(&crc, "8.0.0", MEM_MIB)?;
    snap[30] ^= 0x01;
    w.write(&crc, "snapfile", &snap)?;

    let short = broken(ids::SHORT_MEMFILE)?;
    w.snapfile(&short, "8.0.0", MEM_MIB)?;
    std::fs::remove_file(root.join(ids::SHORT_MEMFILE).join("memfile.header")).map_err(|e| Error::write(root, e))?;
    layer::sparse_file(&root.join(ids::SHORT_MEMFILE).join("memfile"), (MEM_MIB / 2) << 20, 4)?;

    let fcm = broken(ids::FC_MISMATCH)?;
    w.snapfile(&fcm, "8.0.0", MEM_MIB)?;
    w.metadata(&fcm, "v1.10.1_1fcdaec", false)?;

    let orphan = broken(ids::MISSING_ANCESTOR)?;
    w.snapfile(&orphan, "8.0.0", MEM_MIB)?;
    let opath = root.join(ids::MISSING_ANCESTOR).join("rootfs.ext4.header");
    let mut h = header::parse(&std::fs::read(&opath).map_err(|e| Error::read(&opath, e))?)
        .map_err(|e| Error::invalid(&opath, e.to_string()))?;
    for m in h.mappings.iter_mut().filter(|m| m.build == base) {
        m.build = id(ids::GONE);
    }
    crate::sys::write_atomic(&opath, &header::encode(&h))?;

    let trunc = broken(ids::TRUNCATED_HEADER)?;
    w.snapfile(&trunc, "8.0.0", MEM_MIB)?;
    let tpath = root.join(ids::TRUNCATED_HEADER).join("rootfs.ext4.header");
    let bytes = std::fs::read(&tpath).map_err(|e| Error::read(&tpath, e))?;
    std::fs::write(&tpath, &bytes[..bytes.len() - 1]).map_err(|e| Error::write(&tpath, e))?;

    let copied = broken(ids::COPIED)?;
    let mut snap = w.snapfile(&copied, "8.0.0", MEM_MIB)?;
    snap.extend(std::iter::repeat_n(0u8, 4096));
    w.write(&copied, "snapfile", &snap)?;
    w.write(&copied, "metadata.json", metadata::render_v2(ids::CHILD, KERNEL_VERSION, FC_VERSION, false).as_bytes())?;

    let fake = broken(ids::FAKE_SNAPFILE)?;
    w.write(&fake, "snapfile", &[0u8; 4096])?;

    let padded = broken(ids::PADDED_BITCODE)?;
    let mut snap = w.snapfile(&padded, "10.0.0", MEM_MIB)?;
    snap.extend(std::iter::repeat_n(0u8, 4096));
    w.write(&padded, "snapfile", &snap)?;
    w.metadata(&padded, FC_VERSION_BITCODE, false)?;

    let big = broken(ids::BIG_MEMFILE)?;
    w.snapfile(&big, "8.0.0", MEM_MIB)?;
    std::fs::remove_file(root.join(ids::BIG_MEMFILE).join("memfile.header")).map_err(|e| Error::write(root, e))?;
    layer::sparse_file(&root.join(ids::BIG_MEMFILE).join("memfile"), (MEM_MIB * 2) << 20, 4)?;

    // Rootfs faults, each a diff layer over the base that owns only the blocks its edit changed.
    let rootfs_fault = |sid: &str, tree_name: &str, edit: &dyn Fn(&Path) -> Result<()>| -> Result<BuildId> {
        let b = id(sid);
        let t = scratch.path().join(tree_name);
        tree_of(&t, sid, &[])?;
        edit(&t)?;
        let img = scratch.path().join(format!("{tree_name}.ext4"));
        make_image(&t, &img, IMAGE_SIZE)?;
        w.rootfs_layer(&b, &img, Some(&base), 1)?;
        w.memfile(&b, MEM_MIB, true)?;
        w.snapfile(&b, "8.0.0", MEM_MIB)?;
        w.metadata(&b, FC_VERSION, false)?;
        Ok(b)
    };
    let flag = rootfs_fault(ids::ENVD_FLAG, "tree-flag", &|t: &Path| {
        let init = t.join("sbin/init");
        std::fs::remove_file(&init).map_err(|e| Error::write(&init, e))?;
        std::fs::write(&init, hand_written_wrapper("-debug")).map_err(|e| Error::write(&init, e))?;
        set_mode(&init, 0o755)
    })?;
    let dangling = rootfs_fault(ids::DANGLING_INIT, "tree-dangling", &|t: &Path| {
        let init = t.join("sbin/init");
        std::fs::remove_file(&init).map_err(|e| Error::write(&init, e))?;
        std::os::unix::fs::symlink("/usr/local/bin/envd", &init).map_err(|e| Error::write(&init, e))
    })?;

    // 2026 builds: V4/V5 headers with builds sections, data in compressed frames.
    let zstd4 = LayerFormat::framed(4, Compression::Zstd);
    let lz4_5 = LayerFormat::framed(5, Compression::Lz4);
    let zbase = id(ids::ZSTD_BASE);
    let zbase_img = scratch.path().join("zbase.ext4");
    make_image(&ztree, &zbase_img, IMAGE_SIZE)?;
    w.layer_as(&zbase, Artifact::Rootfs, &zbase_img, None, 0, &zstd4)?;
    w.memfile_as(&zbase, MEM_MIB, &zstd4, scratch.path())?;
    w.snapfile(&zbase, "10.0.0", MEM_MIB)?;
    w.metadata(&zbase, FC_VERSION_BITCODE, false)?;
    let zchild = id(ids::LZ4_CHILD);
    w.layer_as(&zchild, Artifact::Rootfs, &child_img, Some(&zbase), 1, &lz4_5)?;
    w.memfile_as(&zchild, MEM_MIB, &lz4_5, scratch.path())?;
    w.snapfile(&zchild, "10.0.0", MEM_MIB)?;
    w.metadata(&zchild, FC_VERSION_BITCODE, false)?;
    let broken_z = |sid: &str| -> Result<BuildId> {
        let b = id(sid);
        w.layer_as(&b, Artifact::Rootfs, &child_img, Some(&zbase), 1, &zstd4)?;
        w.memfile_as(&b, MEM_MIB, &zstd4, scratch.path())?;
        w.snapfile(&b, "10.0.0", MEM_MIB)?;
        w.metadata(&b, FC_VERSION_BITCODE, false)?;
        Ok(b)
    };
    let zsum = broken_z(ids::LZ4_CHECKSUM)?;
    let zpath = root.join(ids::LZ4_CHECKSUM).join("rootfs.ext4.header");
    let mut bytes = std::fs::read(&zpath).map_err(|e| Error::read(&zpath, e))?;
    // Inside the first LZ4 block's data: 64 (metadata) + 5 (flags, length) + 7 (frame header)
    // + 4 (block size) bytes in.
    bytes[64 + 5 + 7 + 4 + 3] ^= 0x20;
    std::fs::write(&zpath, &bytes).map_err(|e| Error::write(&zpath, e))?;

    let pending = broken_z(ids::PENDING_UPLOAD)?;
    let ppath = root.join(ids::PENDING_UPLOAD).join("memfile.header");
    let mut bytes = std::fs::read(&ppath).map_err(|e| Error::read(&ppath, e))?;
    bytes[64] |= header::FLAG_PENDING_UPLOAD;
    std::fs::write(&ppath, &bytes).map_err(|e| Error::write(&ppath, e))?;

    let zshort = broken_z(ids::SHORT_COMPRESSED)?;
    let spath = root.join(ids::SHORT_COMPRESSED).join("rootfs.ext4.zstd");
    let f = std::fs::OpenOptions::new().write(true).open(&spath).map_err(|e| Error::write(&spath, e))?;
    let len = f.metadata().map_err(|e| Error::read(&spath, e))?.len();
    f.set_len(len / 2).map_err(|e| Error::write(&spath, e))?;

    Ok(vec![
        Scenario {
            build_id: base,
            name: "healthy base",
            description: "compacted V3 base layer of a real ext4 image, memory snapshot (a complete FC v1.14.1 state, 8.0.0)",
            boot: BootExpect::Health,
            boot_note: None,
            expect: vec![],
        },
        Scenario {
            build_id: child,
            name: "healthy child",
            description: "diff layer over the base: owns only the blocks its edit changed",
            boot: BootExpect::Health,
            boot_note: None,
            expect: vec![],
        },
        Scenario {
            build_id: fs_only,
            name: "filesystem-only",
            description: "rootfs header only, no memory: resumes by cold boot",
            boot: BootExpect::Health,
            boot_note: Some("E2B cold-boots it too: it has no memory snapshot"),
            expect: vec![],
        },
        Scenario {
            build_id: legacy,
            name: "legacy headerless",
            description: "2024 layout: full rootfs.ext4 and memfile, no headers, no metadata.json (FC v1.10.1 state, 4.0.0)",
            boot: BootExpect::Health,
            boot_note: Some("a full rootfs.ext4: QEMU opens it read-only with a copy-on-write overlay"),
            expect: vec![],
        },
        Scenario {
            build_id: crc,
            name: "CRC64 validation failed",
            description: "one flipped bit in the snapfile",
            boot: BootExpect::Health,
            boot_note: Some(SNAPSHOT_ONLY),
            expect: vec!["snapfile.crc-mismatch"],
        },
        Scenario {
            build_id: short,
            name: "memfile shorter than the VM",
            description: "headerless memfile of half the guest memory",
            boot: BootExpect::Health,
            boot_note: Some(MEMORY_ONLY),
            expect: vec!["memfile.size-mismatch"],
        },
        Scenario {
            build_id: fcm,
            name: "snapshot from another Firecracker",
            description: "8.0.0 snapshot, metadata says v1.10.1 (loads only 4.0.0)",
            boot: BootExpect::Health,
            boot_note: Some(SNAPSHOT_ONLY),
            expect: vec!["snapfile.version-mismatch"],
        },
        Scenario {
            build_id: orphan,
            name: "ancestor deleted",
            description: "rootfs header maps blocks to a build that is not in storage",
            boot: BootExpect::NotBootable { error: "deadbeef-0000-4000-8000-0000000000ff/rootfs.ext4" },
            boot_note: Some("the blocks the header maps to the deleted build cannot be read"),
            expect: vec!["header.missing-build"],
        },
        Scenario {
            build_id: trunc,
            name: "truncated header",
            description: "rootfs.ext4.header cut by one byte",
            boot: BootExpect::NotBootable { error: "rootfs.ext4.header is unreadable" },
            boot_note: None,
            expect: vec!["header.invalid"],
        },
        Scenario {
            build_id: copied,
            name: "hand-copied build",
            description: "metadata copied from another build; snapfile padded with zeros by the copy",
            boot: BootExpect::Health,
            boot_note: Some(SNAPSHOT_ONLY),
            expect: vec!["metadata.build-id-mismatch", "snapfile.trailing-zeros", "snapfile.crc-zero"],
        },
        Scenario {
            build_id: flag,
            name: "init wrapper passes -debug",
            description: "/sbin/init is a hand-written sh wrapper running `exec /usr/bin/envd -debug` (panic exitcode=0x00000200)",
            boot: BootExpect::Panic { panic: "Attempted to kill init! exitcode=0x00000200" },
            boot_note: Some(
                "the image's /bin/sh runs the wrapper; envd rejects -debug and exits 2; the wrapper exec'd it, so PID 1 exits",
            ),
            expect: vec!["wrapper.envd-flag"],
        },
        Scenario {
            build_id: dangling,
            name: "dangling /sbin/init",
            description: "/sbin/init links to /usr/local/bin/envd, which does not exist (\"Requested init /sbin/init failed (error -2)\")",
            boot: BootExpect::Panic { panic: "Requested init /sbin/init failed (error -2)" },
            boot_note: None,
            expect: vec!["init.dangling"],
        },
        Scenario {
            build_id: fake,
            name: "hand-made snapfile",
            description: "4 KiB of zeros written as a placeholder snapfile",
            boot: BootExpect::Health,
            boot_note: Some(SNAPSHOT_ONLY),
            expect: vec!["snapfile.bad-magic"],
        },
        Scenario {
            build_id: padded,
            name: "padded bitcode snapfile",
            description: "a v1.16 snapfile with 4 KiB of zeros appended by a copy: the CRC still passes, Firecracker v1.15+ refuse it",
            boot: BootExpect::Health,
            boot_note: Some(SNAPSHOT_ONLY),
            expect: vec!["snapfile.trailing-bytes"],
        },
        Scenario {
            build_id: big,
            name: "memfile larger than the VM",
            description: "headerless memfile of twice the guest memory (another VM's memory, or extended by a copy)",
            boot: BootExpect::Health,
            boot_note: Some(MEMORY_ONLY),
            expect: vec!["memfile.larger-than-vm"],
        },
        Scenario {
            build_id: zbase,
            name: "healthy compressed base (V4)",
            description: "V4 headers with builds section and SHA-256; rootfs.ext4.zstd and memfile.zstd in 2 MiB frames, with size sidecars; FC v1.16.1 bitcode state (10.0.0)",
            boot: BootExpect::Health,
            boot_note: None,
            expect: vec![],
        },
        Scenario {
            build_id: zchild,
            name: "healthy compressed child (V5)",
            description: "V5 varint mappings over the zstd base; its own blocks in LZ4 frames",
            boot: BootExpect::Health,
            boot_note: None,
            expect: vec![],
        },
        Scenario {
            build_id: zsum,
            name: "corrupt V4 header",
            description: "one flipped bit inside the header's LZ4 frame",
            boot: BootExpect::NotBootable { error: "rootfs.ext4.header is unreadable" },
            boot_note: None,
            expect: vec!["header.v4-lz4-checksum"],
        },
        Scenario {
            build_id: pending,
            name: "half-uploaded header",
            description: "memfile.header with IncompletePendingUpload set (copied from a peer mid-upload)",
            boot: BootExpect::Health,
            boot_note: Some(
                "the flag is on memfile.header: the rootfs is whole, and boot-test never reads the memfile",
            ),
            expect: vec!["header.pending-upload"],
        },
        Scenario {
            build_id: zshort,
            name: "truncated compressed data",
            description: "rootfs.ext4.zstd cut in half: its frame table reaches past the end",
            boot: BootExpect::NotBootable { error: "rootfs.ext4.zstd frame 0" },
            boot_note: None,
            expect: vec!["header.data-too-short"],
        },
    ])
}
