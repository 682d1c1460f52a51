//! Guest kernel configs: read the build configuration of a kernel image, and check it against what
//! an E2B/Firecracker guest needs ([`check`]). The later `check-kernel` command (and `boot-test`,
//! `verify`) turn the [`Check`]s into findings; this module never prints.
//!
//! Where a config comes from, in the order [`load`] tries:
//! 1. a file given explicitly (`--config`): a `.config`, `/boot/config-*`, or a gzip'd
//!    `/proc/config.gz`;
//! 2. the image itself, when the kernel was built with `CONFIG_IKCONFIG=y`: `kernel/configs.c`
//!    places `"IKCFG_ST"`, the gzip'd `.config` (`kernel/config_data.gz`) and `"IKCFG_ED"` in
//!    `.rodata`. The image is searched as a stream for `IKCFG_ST 1f 8b 08` (the same 11 bytes
//!    `scripts/extract-ikconfig` searches for); one gzip member is inflated and must be followed by
//!    `IKCFG_ED`. Images:
//!    - ELF `vmlinux` (what Firecracker boots; E2B's `vmlinux.bin`), an arm64 `Image` or any other
//!      uncompressed image: searched as it is;
//!    - x86 bzImage (`Documentation/x86/boot.rst`):
//!      ```text
//!      0x1F1 u8  setup_sects (0 means 4)   protected-mode code at (setup_sects + 1) * 512
//!      0x1FE u16 boot_flag 0xAA55          0x202 "HdrS"   0x206 u16 protocol (>= 0x0208 here)
//!      0x248 u32 payload_offset (from the protected-mode code)   0x24C u32 payload_length
//!      ```
//!      The payload is the compressed vmlinux; its last 4 bytes are the uncompressed size (gzip's
//!      ISIZE, or the `size_append` trailer `scripts/Makefile.lib` adds to the other formats).
//!      Decompressed here: gzip, xz (with the x86 BCJ filter the kernel uses), lzma, zstd and
//!      legacy LZ4 (`lz4 -l`: magic `02 21 4c 18`, then `[u32 size][block]`, blocks of at most
//!      8 MiB). bzip2 and LZO payloads are recognised and refused with
//!      [`KconfigError::UnsupportedCompression`] (no kernel E2B, Firecracker or Debian ships uses
//!      them; give the config file instead);
//! 3. a config file beside the image: `config-<ver>` for `vmlinuz-<ver>`/`vmlinux-<ver>` (Debian's
//!    `/boot`), else `config`, `.config`, or the only `config-*` in the directory.
//!
//! Sizes read from a file are capped before use: a config is at most [`MAX_CONFIG_BYTES`], a
//! decompressed payload at most [`MAX_PAYLOAD_BYTES`], an image at most [`MAX_IMAGE_BYTES`];
//! nothing larger than a 1 MiB read buffer, one 8 MiB LZ4 block or a decoder's window is held.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Largest config text accepted (real ones are 50–300 KB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Largest decompressed bzImage payload (Debian's is 53 MB).
pub const MAX_PAYLOAD_BYTES: u64 = 256 << 20;
/// Largest image searched (an ELF vmlinux with full debug info is up to ~1 GB).
pub const MAX_IMAGE_BYTES: u64 = 2 << 30;

const MARKER_START: &[u8] = b"IKCFG_ST\x1f\x8b\x08";
const MARKER_END: &[u8; 8] = b"IKCFG_ED";
const MARKER_LEN: usize = 8;
const CHUNK: usize = 1 << 20;
/// What [`identify`] and [`bz_payload`] look at.
const HEAD_BYTES: usize = 0x300;
/// Legacy LZ4 (`lz4 -l`): magic, and the uncompressed size of every block but the last.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// Memory the xz/lzma decoders may use (the kernel's xz dictionary is 32 MiB).
const LZMA_MEM_LIMIT_KIB: u32 = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// The config itself

/// One option's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "value", rename_all = "kebab-case")]
pub enum Setting {
    /// `=y`
    Builtin,
    /// `=m`: a module, which a guest booted without an initramfs never loads.
    Module,
    /// `# CONFIG_X is not set`, `=n`, or absent from the file.
    NotSet,
    /// A number or string.
    Value(String),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Builtin => f.write_str("y"),
            Setting::Module => f.write_str("m"),
            Setting::NotSet => f.write_str("not set"),
            Setting::Value(v) => f.write_str(v),
        }
    }
}

/// What kind of file a kernel image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ImageKind {
    /// ELF `vmlinux`.
    Elf,
    /// x86 boot-protocol image with its boot protocol version (`0x020f` = 2.15).
    BzImage { protocol: u16 },
    /// arm64 `Image` (`ARM\x64` at 0x38).
    Arm64Image,
    /// A gzip file: a gzip'd `Image`, or `/proc/config.gz`.
    Gzip,
    /// Anything else, searched as raw bytes.
    Raw,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageKind::Elf => f.write_str("ELF vmlinux"),
            ImageKind::BzImage { protocol } => {
                write!(f, "bzImage (boot protocol {}.{:02})", protocol >> 8, protocol & 0xff)
            }
            ImageKind::Arm64Image => f.write_str("arm64 Image"),
            ImageKind::Gzip => f.write_str("gzip file"),
            ImageKind::Raw => f.write_str("raw image"),
        }
    }
}

/// How a bzImage payload is compressed (x86 `arch/x86/boot/compressed/Makefile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4Legacy,
    Zstd,
}

impl Compression {
    /// Identify a payload by its first bytes.
    pub fn from_magic(b: &[u8]) -> Option<Compression> {
        Some(match b {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0x5d, 0x00, 0x00, ..] => Compression::Lzma,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [0x89, b'L', b'Z', b'O', ..] => Compression::Lzo,
            [0x02, 0x21, 0x4c, 0x18, ..] => Compression::Lz4Legacy,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4Legacy => "lz4 (legacy frame)",
            Compression::Zstd => "zstd",
        }
    }

    /// Can [`load`] decompress it?
    pub fn supported(self) -> bool {
        !matches!(self, Compression::Bzip2 | Compression::Lzo)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a config was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum ConfigOrigin {
    /// IKCONFIG inside the image; `offset` is where `IKCFG_ST` starts in the image, or in the
    /// decompressed payload when `compression` is set.
    Embedded {
        image: ImageKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        compression: Option<Compression>,
        offset: u64,
    },
    /// A config file; `beside_kernel` when [`load`] found it next to the image.
    File { path: PathBuf, beside_kernel: bool },
}

/// A parsed kernel `.config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelConfig {
    /// Option names without the `CONFIG_` prefix.
    pub options: BTreeMap<String, Setting>,
    /// From the header comment (`# Linux/x86 6.1.192 Kernel Configuration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub origin: ConfigOrigin,
}

impl KernelConfig {
    /// Parse `.config` text: `CONFIG_X=y|m|n|<value>` and `# CONFIG_X is not set`; other lines are
    /// ignored. A later line for the same option wins, as in Kconfig.
    pub fn parse(text: &str, origin: ConfigOrigin) -> KernelConfig {
        let mut options = BTreeMap::new();
        let mut release = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("CONFIG_") {
                let Some((name, value)) = rest.split_once('=') else { continue };
                if !valid_name(name) {
                    continue;
                }
                let setting = match value {
                    "y" => Setting::Builtin,
                    "m" => Setting::Module,
                    "n" => Setting::NotSet,
                    v => Setting::Value(v.to_string()),
                };
                options.insert(name.to_string(), setting);
            } else if let Some(rest) = line.strip_prefix("# CONFIG_") {
                if let Some(name) = rest.strip_suffix(" is not set")
                    && valid_name(name)
                {
                    options.insert(name.to_string(), Setting::NotSet);
                }
            } else if release.is_none()
                && let Some(rest) = line.strip_prefix("# Linux/")
                && let Some(rest) = rest.strip_suffix(" Kernel Configuration")
            {
                release = rest.split_whitespace().nth(1).map(str::to_string);
            }
        }
        KernelConfig { options, release, origin }
    }

    /// The option's setting (`NotSet` when the file does not mention it). `name` without `CONFIG_`.
    pub fn get(&self, name: &str) -> &Setting {
        self.options.get(name).unwrap_or(&Setting::NotSet)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.get(name) == &Setting::Builtin
    }

    /// Which architecture the config is for.
    pub fn arch(&self) -> Arch {
        if self.is_builtin("X86_64") || self.is_builtin("X86") {
            Arch::X86
        } else if self.is_builtin("ARM64") {
            Arch::Arm64
        } else {
            Arch::Other
        }
    }

    /// How the kernel finds virtio-mmio devices (what boot-test must pick QEMU's `acpi=` from).
    pub fn discovery(&self) -> Discovery {
        if !self.is_builtin("VIRTIO_MMIO") {
            return Discovery::None;
        }
        match (self.is_builtin("ACPI"), self.is_builtin("VIRTIO_MMIO_CMDLINE_DEVICES")) {
            (true, true) => Discovery::Both,
            (true, false) => Discovery::Acpi,
            (false, true) => Discovery::CommandLine,
            (false, false) if self.arch() == Arch::Arm64 && self.is_builtin("OF") => Discovery::DeviceTree,
            (false, false) => Discovery::None,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The config's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    X86,
    Arm64,
    Other,
}

/// How a kernel discovers virtio-mmio devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Discovery {
    /// ACPI DSDT (`LNRO0005`): Firecracker ≥ 1.8 on x86_64, QEMU microvm with `acpi=on`.
    Acpi,
    /// `virtio_mmio.device=` on the command line: Firecracker (all versions), QEMU microvm with
    /// `acpi=off`.
    CommandLine,
    /// Both compiled in.
    Both,
    /// Flattened device tree (arm64 Firecracker).
    DeviceTree,
    /// No built-in virtio-mmio, or no way to find its devices.
    None,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a kernel's config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {size} bytes is more than a {what} can be ({limit} bytes)", path.display())]
    TooLarge { path: PathBuf, what: &'static str, size: u64, limit: u64 },
    #[error("{}: a {image}, not a bzImage", path.display())]
    NotBzImage { path: PathBuf, image: ImageKind },
    #[error("{}: the bzImage setup header is inconsistent: {reason}", path.display())]
    BadSetupHeader { path: PathBuf, reason: String },
    #[error(
        "{}: the kernel payload is compressed with {compression}, which tmpl does not decompress; \
         give the kernel's config file instead (--config)",
        path.display()
    )]
    UnsupportedCompression { path: PathBuf, compression: Compression },
    #[error("{}: the {compression} kernel payload is corrupt", path.display())]
    Decompress {
        path: PathBuf,
        compression: Compression,
        #[source]
        source: io::Error,
    },
    #[error("{}: the kernel payload decompresses to more than {limit} bytes", path.display())]
    PayloadTooLarge { path: PathBuf, limit: u64 },
    #[error("{}: the embedded config (IKCONFIG) at offset {offset} is corrupt", path.display())]
    EmbeddedCorrupt {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: the embedded config (IKCONFIG) at offset {offset} is not followed by its end marker \
         IKCFG_ED (truncated or damaged image)",
        path.display()
    )]
    EmbeddedUnterminated { path: PathBuf, offset: u64 },
    #[error("{}: {what} is not a kernel config (no CONFIG_ lines)", path.display())]
    NotAConfig { path: PathBuf, what: &'static str },
    #[error(
        "{}: {image}{} has no embedded config (CONFIG_IKCONFIG is not set) and no config file was \
         found beside it (looked for {}); give the kernel's config file (--config)",
        kernel.display(),
        compression.map(|c| format!(" with a {c} payload")).unwrap_or_default(),
        looked_for.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoConfig { kernel: PathBuf, image: ImageKind, compression: Option<Compression>, looked_for: Vec<PathBuf> },
}

// ---------------------------------------------------------------------------------------------
// Loading

/// The config of `kernel`: from `config` when given, else embedded in the image, else from a
/// config file beside it. When the embedded config cannot be read (unsupported or corrupt
/// payload) but a file beside the image exists, the file is used.
pub fn load(kernel: &Path, config: Option<&Path>) -> Result<KernelConfig, KconfigError> {
    if let Some(path) = config {
        return read_config_file(path, false);
    }
    let beside = config_candidates(kernel);
    let embedded = read_embedded(kernel);
    let found_beside = || beside.iter().find(|p| p.is_file());
    match embedded {
        Ok(Embedded { config: Some(c), .. }) => Ok(c),
        Ok(Embedded { image, compression, config: None }) => match found_beside() {
            Some(p) => read_config_file(p, true),
            None => {
                Err(KconfigError::NoConfig { kernel: kernel.to_path_buf(), image, compression, looked_for: beside })
            }
        },
        Err(e @ (KconfigError::Open { .. } | KconfigError::Read { .. })) => Err(e),
        Err(e) => match found_beside() {
            Some(p) => read_config_file(p, true),
            None => Err(e),
        },
    }
}

/// Config files that may sit beside `kernel`, most specific first.
pub fn config_candidates(kernel: &Path) -> Vec<PathBuf> {
    let dir = kernel.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = kernel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = Vec::new();
    for prefix in ["vmlinuz-", "vmlinux-", "bzImage-", "Image-"] {
        if let Some(suffix) = name.strip_prefix(prefix) {
            out.push(dir.join(format!("config-{suffix}")));
        }
    }
    out.push(dir.join("config"));
    out.push(dir.join(".config"));
    // The only config-* in the directory (an E2B-style <version>/ directory, a copied kernel).
    if let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { &dir }) {
        let mut configs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("config-"))
            .map(|e| dir.join(e.file_name()))
            .collect();
        if configs.len() == 1 && !out.contains(&configs[0]) {
            out.append(&mut configs);
        }
    }
    out
}

/// Read a config file (plain text, or gzip'd like `/proc/config.gz`).
pub fn read_config_file(path: &Path, beside_kernel: bool) -> Result<KernelConfig, KconfigError> {
    let file = File::open(path).map_err(|source| KconfigError::Open { path: path.to_path_buf(), source })?;
    let read_err = |source| KconfigError::Read { path: path.to_path_buf(), source };
    let size = file.metadata().map_err(read_err)?.len();
    let mut r = BufReader::new(file);
    let gzip = r.fill_buf().map_err(read_err)?.starts_with(&[0x1f, 0x8b]);
    let mut text = Vec::new();
    if gzip {
        let gz = flate2::bufread::GzDecoder::new(r);
        gz.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut text).map_err(|source| KconfigError::Decompress {
            path: path.to_path_buf(),
            compression: Compression::Gzip,
            source,
        })?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(KconfigError::TooLarge {
                path: path.to_path_buf(),
                what: "kernel config (decompressed)",
                size: text.len() as u64,
                limit: MAX_CONFIG_BYTES,
            });
        }
    } else {
        if size > MAX_CONFIG_BYTES {
            return Err(KconfigError::TooLarge {
                path: path.to_path_buf(),
                what: "kernel config",
                size,
                limit: MAX_CONFIG_BYTES,
            });
        }
        r.take(MAX_CONFIG_BYTES).read_to_end(&mut text).map_err(read_err)?;
    }
    let not_a_config = || KconfigError::NotAConfig { path: path.to_path_buf(), what: "the file" };
    let text = String::from_utf8(text).map_err(|_| not_a_config())?;
    let config = KernelConfig::parse(&text, ConfigOrigin::File { path: path.to_path_buf(), beside_kernel });
    if config.options.is_empty() {
        return Err(not_a_config());
    }
    Ok(config)
}

/// What [`read_embedded`] found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    pub image: ImageKind,
    /// The bzImage payload's compression.
    pub compression: Option<Compression>,
    /// `None` when the image carries no IKCONFIG.
    pub config: Option<KernelConfig>,
}

/// The config embedded in a kernel image (IKCONFIG), if it has one.
pub fn read_embedded(path: &Path) -> Result<Embedded, KconfigError> {
    let (mut file, size, head, image) = open_image(path)?;
    let read_err = |source| KconfigError::Read { path: path.to_path_buf(), source };

    if let ImageKind::BzImage { protocol } = image {
        let payload = bz_open(path, file, size, &head, protocol)?;
        let compression = payload.compression;
        let mut stream = Capped { inner: Tagged(payload.reader), left: MAX_PAYLOAD_BYTES };
        let found = find_ikconfig(&mut stream).map_err(|e| e.into_error(path, Some(compression)))?;
        // Decompress the rest too: a damaged payload fails its decoder's checks (CRC, frame
        // structure) only at the end, and a kernel that cannot decompress itself does not boot.
        io::copy(&mut stream, &mut io::sink())
            .map_err(|e| FindError::classify(e, None).into_error(path, Some(compression)))?;
        return Ok(Embedded {
            image,
            compression: Some(compression),
            config: found.map(|(offset, text)| {
                KernelConfig::parse(&text, ConfigOrigin::Embedded { image, compression: Some(compression), offset })
            }),
        });
    }

    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let found = if image == ImageKind::Gzip {
        // A gzip'd image (arm64 Image.gz): search the decompressed stream.
        let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(CHUNK, file));
        let mut stream = Capped { inner: Tagged(gz), left: MAX_PAYLOAD_BYTES };
        let found = find_ikconfig(&mut stream).map_err(|e| e.into_error(path, Some(Compression::Gzip)))?;
        io::copy(&mut stream, &mut io::sink())
            .map_err(|e| FindError::classify(e, None).into_error(path, Some(Compression::Gzip)))?;
        found
    } else {
        find_ikconfig(&mut file).map_err(|e| e.into_error(path, None))?
    };
    let compression = (image == ImageKind::Gzip).then_some(Compression::Gzip);
    Ok(Embedded {
        image,
        compression,
        config: found
            .map(|(offset, text)| KernelConfig::parse(&text, ConfigOrigin::Embedded { image, compression, offset })),
    })
}

fn open_image(path: &Path) -> Result<(File, u64, Vec<u8>, ImageKind), KconfigError> {
    let mut file = File::open(path).map_err(|source| KconfigError::Open { path: path.to_path_buf(), source })?;
    let read_err = |source| KconfigError::Read { path: path.to_path_buf(), source };
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_IMAGE_BYTES {
        return Err(KconfigError::TooLarge {
            path: path.to_path_buf(),
            what: "kernel image",
            size,
            limit: MAX_IMAGE_BYTES,
        });
    }
    let mut head = Vec::with_capacity(HEAD_BYTES);
    (&mut file).take(HEAD_BYTES as u64).read_to_end(&mut head).map_err(read_err)?;
    let image = identify(&head);
    Ok((file, size, head, image))
}

/// A bzImage's decompressing payload stream: the kernel's ELF `vmlinux` (stripped), plus
/// relocations when it was built with `RANDOMIZE_BASE`.
pub struct Payload {
    pub protocol: u16,
    pub location: BzPayload,
    pub compression: Compression,
    /// The uncompressed size from the payload's trailer (at most [`MAX_PAYLOAD_BYTES`]).
    pub size: u64,
    /// The decompressed bytes. Not capped: callers cap (`take(size)`), as [`read_embedded`] does.
    pub reader: Box<dyn Read>,
}

/// Open a bzImage's payload for decompression.
pub fn open_payload(path: &Path) -> Result<Payload, KconfigError> {
    let (file, size, head, image) = open_image(path)?;
    match image {
        ImageKind::BzImage { protocol } => bz_open(path, file, size, &head, protocol),
        other => Err(KconfigError::NotBzImage { path: path.to_path_buf(), image: other }),
    }
}

fn bz_open(path: &Path, mut file: File, size: u64, head: &[u8], protocol: u16) -> Result<Payload, KconfigError> {
    let read_err = |source| KconfigError::Read { path: path.to_path_buf(), source };
    let location =
        bz_payload(head, size).map_err(|reason| KconfigError::BadSetupHeader { path: path.to_path_buf(), reason })?;
    file.seek(SeekFrom::Start(location.offset)).map_err(read_err)?;
    let mut magic = [0u8; 6];
    (&mut file).take(6).read_exact(&mut magic).map_err(read_err)?;
    let Some(compression) = Compression::from_magic(&magic) else {
        return Err(KconfigError::BadSetupHeader {
            path: path.to_path_buf(),
            reason: format!(
                "the payload at offset {} starts with {:02x?}, not a compression the kernel uses",
                location.offset, &magic
            ),
        });
    };
    if !compression.supported() {
        return Err(KconfigError::UnsupportedCompression { path: path.to_path_buf(), compression });
    }
    // The last 4 bytes are the uncompressed size: refuse an oversized payload up front.
    file.seek(SeekFrom::Start(location.offset + location.length - 4)).map_err(read_err)?;
    let mut trailer = [0u8; 4];
    file.read_exact(&mut trailer).map_err(read_err)?;
    let uncompressed = u64::from(u32::from_le_bytes(trailer));
    if uncompressed > MAX_PAYLOAD_BYTES {
        return Err(KconfigError::PayloadTooLarge { path: path.to_path_buf(), limit: MAX_PAYLOAD_BYTES });
    }
    file.seek(SeekFrom::Start(location.offset)).map_err(read_err)?;
    // gzip ends with its own trailer (ISIZE); the other formats carry the 4-byte size trailer
    // after their stream, which their decoders must not see.
    let input_len = if compression == Compression::Gzip { location.length } else { location.length - 4 };
    let input = BufReader::with_capacity(CHUNK, file.take(input_len));
    let reader = decoder(compression, input).map_err(|source| KconfigError::Decompress {
        path: path.to_path_buf(),
        compression,
        source,
    })?;
    Ok(Payload { protocol, location, compression, size: uncompressed, reader })
}

/// Identify an image from its first bytes (at least 0x250 of them for a bzImage).
pub fn identify(head: &[u8]) -> ImageKind {
    if head.starts_with(b"\x7fELF") {
        return ImageKind::Elf;
    }
    if head.len() >= 0x208 && &head[0x202..0x206] == b"HdrS" && head[0x1fe..0x200] == [0x55, 0xaa] {
        return ImageKind::BzImage { protocol: u16::from_le_bytes([head[0x206], head[0x207]]) };
    }
    if head.len() >= 0x3c && &head[0x38..0x3c] == b"ARM\x64" {
        return ImageKind::Arm64Image;
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return ImageKind::Gzip;
    }
    ImageKind::Raw
}

/// Where a bzImage's compressed payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BzPayload {
    /// File offset of the payload.
    pub offset: u64,
    pub length: u64,
}

/// Locate the payload from a bzImage's first bytes (at least 0x250) and the file's size; every
/// field is bounds-checked. The error says which field is wrong.
pub fn bz_payload(head: &[u8], file_size: u64) -> Result<BzPayload, String> {
    if head.len() < 0x250 {
        return Err(format!("the file is {} bytes, too short for a setup header", head.len()));
    }
    let protocol = u16::from_le_bytes([head[0x206], head[0x207]]);
    if protocol < 0x0208 {
        return Err(format!(
            "boot protocol {}.{:02} predates the payload fields (2.08)",
            protocol >> 8,
            protocol & 0xff
        ));
    }
    let setup_sects = match head[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]));
    let (payload_offset, length) = (u32_at(0x248), u32_at(0x24c));
    let offset = pm_start + payload_offset;
    let end = offset + length;
    if pm_start > file_size {
        return Err(format!(
            "setup_sects {setup_sects} puts the kernel at {pm_start}, past the end of the {file_size}-byte file"
        ));
    }
    if end > file_size {
        return Err(format!(
            "payload_offset {payload_offset} + payload_length {length} ends at {end}, past the end of the {file_size}-byte file"
        ));
    }
    if length < 10 {
        return Err(format!("payload_length {length} is too small for a compressed kernel"));
    }
    Ok(BzPayload { offset, length })
}

// ---------------------------------------------------------------------------------------------
// Stream search

/// Failures of [`find_ikconfig`], before the path is known.
#[derive(Debug)]
enum FindError {
    /// Reading the image or payload failed (not inside the embedded gzip).
    Read(io::Error),
    /// The payload decoder failed.
    Payload(io::Error),
    /// The decompressed payload passed [`MAX_PAYLOAD_BYTES`].
    PayloadTooLarge,
    Corrupt {
        offset: u64,
        source: io::Error,
    },
    Unterminated {
        offset: u64,
    },
    TooLarge {
        offset: u64,
    },
    NotText {
        offset: u64,
    },
}

impl FindError {
    /// Sort an I/O error by where it came from (see [`Tagged`], [`Capped`]).
    fn classify(e: io::Error, inside: Option<u64>) -> FindError {
        if e.get_ref().is_some_and(|i| i.is::<CapExceeded>()) {
            return FindError::PayloadTooLarge;
        }
        if e.get_ref().is_some_and(|i| i.is::<PayloadFailure>()) {
            return match e.into_inner().map(|b| b.downcast::<PayloadFailure>()) {
                Some(Ok(failure)) => FindError::Payload(failure.0),
                _ => FindError::Payload(io::Error::other("the payload decoder failed")),
            };
        }
        match inside {
            Some(offset) => FindError::Corrupt { offset, source: e },
            None => FindError::Read(e),
        }
    }

    fn into_error(self, path: &Path, compression: Option<Compression>) -> KconfigError {
        let path = path.to_path_buf();
        match self {
            FindError::Read(source) => KconfigError::Read { path, source },
            FindError::Payload(source) => match compression {
                Some(compression) => KconfigError::Decompress { path, compression, source },
                None => KconfigError::Read { path, source },
            },
            FindError::PayloadTooLarge => KconfigError::PayloadTooLarge { path, limit: MAX_PAYLOAD_BYTES },
            FindError::Corrupt { offset, source } => KconfigError::EmbeddedCorrupt { path, offset, source },
            FindError::Unterminated { offset } => KconfigError::EmbeddedUnterminated { path, offset },
            FindError::TooLarge { offset } => KconfigError::EmbeddedCorrupt {
                path,
                offset,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("it inflates to more than {MAX_CONFIG_BYTES} bytes"),
                ),
            },
            FindError::NotText { offset } => KconfigError::EmbeddedCorrupt {
                path,
                offset,
                source: io::Error::new(io::ErrorKind::InvalidData, "it is not a kernel config (no CONFIG_ lines)"),
            },
        }
    }
}

/// Search a stream for `IKCFG_ST` + a gzip member + `IKCFG_ED`; the offset of `IKCFG_ST` and the
/// inflated text. Holds at most one [`CHUNK`] of the stream.
fn find_ikconfig<R: Read>(mut r: R) -> Result<Option<(u64, String)>, FindError> {
    let finder = memchr::memmem::Finder::new(MARKER_START);
    let keep = MARKER_START.len() - 1;
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0usize;
    let mut base = 0u64; // stream offset of buf[0]
    loop {
        let n = loop {
            match r.read(&mut buf[filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FindError::classify(e, None)),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        filled += n;
        if let Some(p) = finder.find(&buf[..filled]) {
            let offset = base + p as u64;
            let input = io::Cursor::new(&buf[p + MARKER_LEN..filled]).chain(&mut r);
            return inflate_member(input, offset).map(Some);
        }
        if filled + keep >= buf.len() || filled >= keep {
            let tail = filled.min(keep);
            buf.copy_within(filled - tail..filled, 0);
            base += (filled - tail) as u64;
            filled = tail;
        }
    }
}

/// Inflate the gzip member at the start of `input` and check that `IKCFG_ED` follows it.
fn inflate_member<R: Read>(input: R, offset: u64) -> Result<(u64, String), FindError> {
    let mut gz = flate2::bufread::GzDecoder::new(BufReader::new(input));
    let mut text = Vec::new();
    (&mut gz).take(MAX_CONFIG_BYTES + 1).read_to_end(&mut text).map_err(|e| FindError::classify(e, Some(offset)))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(FindError::TooLarge { offset });
    }
    let mut end = [0u8; MARKER_LEN];
    match gz.into_inner().read_exact(&mut end) {
        Ok(()) if &end == MARKER_END => {}
        Ok(()) => return Err(FindError::Unterminated { offset }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FindError::Unterminated { offset }),
        Err(e) => return Err(FindError::classify(e, Some(offset))),
    }
    let text = String::from_utf8(text).map_err(|_| FindError::NotText { offset })?;
    if !text.lines().any(|l| l.starts_with("CONFIG_") || l.starts_with("# CONFIG_")) {
        return Err(FindError::NotText { offset });
    }
    Ok((offset, text))
}

/// Marks errors of the payload decoder, so they are not taken for a corrupt embedded config.
#[derive(Debug)]
struct PayloadFailure(io::Error);

impl fmt::Display for PayloadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PayloadFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

struct Tagged<R>(R);

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| io::Error::other(PayloadFailure(e)))
    }
}

#[derive(Debug)]
struct CapExceeded;

impl fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {MAX_PAYLOAD_BYTES} bytes")
    }
}

impl std::error::Error for CapExceeded {}

/// Fails (instead of ending) when the inner stream has more than `left` bytes.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(CapExceeded)),
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Payload decoders

fn decoder<R: BufRead + 'static>(compression: Compression, input: R) -> io::Result<Box<dyn Read>> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(input, false, LZMA_MEM_LIMIT_KIB)),
        Compression::Lzma => Box::new(lzma_rust2::LzmaReader::new_mem_limit(input, LZMA_MEM_LIMIT_KIB, None)?),
        Compression::Lz4Legacy => Box::new(Lz4Legacy::new(input)?),
        Compression::Bzip2 | Compression::Lzo => {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("{compression} payloads")));
        }
    })
}

/// Legacy LZ4 frame (`lz4 -l`, the kernel's `KERNEL_LZ4`): `02 21 4c 18`, then blocks of
/// `[u32 LE compressed size][LZ4 block]` that each inflate to at most 8 MiB. A repeated magic
/// starts a concatenated frame.
struct Lz4Legacy<R> {
    inner: R,
    compressed: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    len: usize,
}

impl<R: Read> Lz4Legacy<R> {
    fn new(mut inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 4];
        inner.read_exact(&mut magic)?;
        if u32::from_le_bytes(magic) != LZ4_LEGACY_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a legacy LZ4 frame"));
        }
        Ok(Lz4Legacy { inner, compressed: Vec::new(), out: Vec::new(), pos: 0, len: 0 })
    }

    /// Decode the next block; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            let mut size = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match self.inner.read(&mut size[got..]) {
                    Ok(0) if got == 0 => return Ok(false),
                    Ok(0) => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "legacy LZ4 block size is truncated"));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let size = u32::from_le_bytes(size);
            if size == LZ4_LEGACY_MAGIC {
                continue;
            }
            // LZ4_compressBound(8 MiB) = 8 MiB + 8 MiB / 255 + 16.
            let bound = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
            let size = size as usize;
            if size == 0 || size > bound {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("legacy LZ4 block of {size} bytes (at most {bound})"),
                ));
            }
            self.compressed.resize(size, 0);
            self.inner.read_exact(&mut self.compressed)?;
            self.out.resize(LZ4_LEGACY_BLOCK, 0);
            self.len = lz4_flex::block::decompress_into(&self.compressed, &mut self.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("legacy LZ4 block: {e}")))?;
            self.pos = 0;
            return Ok(true);
        }
    }
}

impl<R: Read> Read for Lz4Legacy<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// What an E2B guest needs

/// Who boots the kernel: decides how virtio-mmio devices must be discoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Firecracker under E2B's orchestrator: devices in ACPI (Firecracker ≥ 1.8, x86_64) and on
    /// the command line (`virtio_mmio.device=`), so either route works.
    Firecracker,
    /// `tmpl boot-test` on QEMU's microvm machine under TCG with `acpi=off`: devices only on the
    /// command line (an ACPI-only kernel stalls on TCG microvm with `acpi=on`).
    QemuMicrovm,
}

/// How bad a missing requirement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// An E2B feature is unavailable in the guest; it still boots and answers.
    Info,
    /// The guest boots and envd answers, but something the operator relies on is lost (console
    /// evidence, resource control, kvm-clock, PTYs).
    Warning,
    /// The guest does not boot, or envd never answers `/health`.
    Fatal,
}

/// A console line that shows the requirement is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Symptom {
    /// The line, or its distinctive start.
    pub line: &'static str,
    /// Observed on a real boot (else inferred from the kernel or program source).
    pub seen: bool,
}

/// Another option a check looked at, and its setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    pub option: &'static str,
    pub found: Setting,
}

/// One requirement checked against a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`virtio-mmio`, `ip-autoconfig`, ...).
    pub id: &'static str,
    /// The option to set, without `CONFIG_`.
    pub option: &'static str,
    /// What is required, human-readable (`=y`, `=y, or ACPI=y`).
    pub requirement: String,
    /// The option's setting in the config.
    pub found: Setting,
    /// Alternatives (any of them built in satisfies the check) and conditions it looked at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
    pub ok: bool,
    /// The severity when the check fails.
    pub severity: Severity,
    /// Why an E2B guest needs it.
    pub why: &'static str,
    /// What happens without it.
    pub without: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symptom: Option<Symptom>,
    /// One sentence: the state and its consequence (or why it is needed, when ok).
    pub message: String,
    /// How to fix it (empty when ok).
    pub hint: String,
}

/// When a rule applies.
#[derive(Clone, Copy)]
enum When {
    Always,
    /// Only for x86 configs (and configs of unknown architecture).
    X86,
    /// Only for this profile (x86).
    X86Profile(Profile),
    /// The Firecracker profile on x86, only when the option is not built in.
    FirecrackerUnless(&'static str),
}

struct Rule {
    id: &'static str,
    option: &'static str,
    /// Any of these built in also satisfies the rule.
    or: &'static [&'static str],
    when: When,
    severity: Severity,
    why: &'static str,
    without: &'static str,
    symptom: Option<Symptom>,
}

const VFS_NO_ROOT: Symptom =
    Symptom { line: "VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6", seen: true };
const GO_NETPOLL: Symptom = Symptom { line: "fatal error: runtime: netpollinit failed", seen: false };
const INIT_ENOEXEC: Symptom =
    Symptom { line: "Kernel panic - not syncing: Requested init /sbin/init failed (error -8).", seen: true };
const SYSTEMD_REQUIRES: &str = "systemd, PID 1 of E2B's templates, requires it (systemd README, \"REQUIREMENTS\")";
const SYSTEMD_FAILS: &str = "systemd cannot start, so a template booting systemd never runs envd";
const CGROUP_WHY: &str = "envd puts the processes it starts into cgroups it tunes (cpu.weight, io.weight, \
                          memory.high/max/min/low, pids) under /sys/fs/cgroup";
const CGROUP_WITHOUT: &str = "envd reports that it cannot create its cgroup2 manager and runs processes \
                              without resource control";

static RULES: &[Rule] = &[
    Rule {
        id: "64bit",
        option: "64BIT",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "Firecracker boots only 64-bit kernels (x86_64 and aarch64)",
        without: "the VMM refuses the image; `make tinyconfig` without ARCH=x86_64 builds a 32-bit kernel",
        symptom: None,
    },
    Rule {
        id: "virtio-mmio",
        option: "VIRTIO_MMIO",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "every Firecracker device (root disk, network, entropy, balloon) is a virtio-mmio device",
        without: "the kernel finds no root disk and panics mounting /dev/vda",
        symptom: Some(VFS_NO_ROOT),
    },
    Rule {
        id: "virtio-discovery",
        option: "VIRTIO_MMIO_CMDLINE_DEVICES",
        or: &["ACPI"],
        when: When::X86Profile(Profile::Firecracker),
        severity: Severity::Fatal,
        why: "Firecracker announces its virtio-mmio devices in ACPI tables (v1.8 and later) and as \
              `virtio_mmio.device=` on the command line; the kernel must read one of the two (E2B's \
              kernels use ACPI)",
        without: "the devices are never created (the command-line ones are silently ignored), the root \
                  disk is missing and the kernel panics mounting /dev/vda",
        symptom: Some(VFS_NO_ROOT),
    },
    Rule {
        id: "virtio-discovery",
        option: "VIRTIO_MMIO_CMDLINE_DEVICES",
        or: &[],
        when: When::X86Profile(Profile::QemuMicrovm),
        severity: Severity::Fatal,
        why: "boot-test runs QEMU's microvm machine with acpi=off, which announces the devices only as \
              `virtio_mmio.device=` on the command line (an ACPI-only kernel stalls under TCG on microvm \
              with acpi=on, right after \"APIC: Switch to symmetric I/O mode setup\")",
        without: "the root disk is never created and the kernel panics mounting /dev/vda",
        symptom: Some(VFS_NO_ROOT),
    },
    Rule {
        id: "mp-table",
        option: "X86_MPPARSE",
        or: &[],
        when: When::FirecrackerUnless("ACPI"),
        severity: Severity::Warning,
        why: "a kernel without ACPI finds its CPUs and IO-APIC in the MP table (Firecracker and QEMU \
              microvm's firmware provide one)",
        without: "no IO-APIC: the devices' interrupts are not routed (inferred from the source, not observed)",
        symptom: None,
    },
    Rule {
        id: "mp-table",
        option: "X86_MPPARSE",
        or: &[],
        when: When::X86Profile(Profile::QemuMicrovm),
        severity: Severity::Warning,
        why: "with acpi=off the kernel finds its CPUs and IO-APIC only in the MP table",
        without: "no IO-APIC: the devices' interrupts are not routed (inferred from the source, not observed)",
        symptom: None,
    },
    Rule {
        id: "virtio-blk",
        option: "VIRTIO_BLK",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the template's rootfs.ext4 is the virtio block device /dev/vda (root=/dev/vda)",
        without: "the kernel panics mounting /dev/vda",
        symptom: Some(VFS_NO_ROOT),
    },
    Rule {
        id: "ext4",
        option: "EXT4_FS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the root filesystem is ext4",
        without: "no filesystem can mount the root disk and the kernel panics",
        symptom: Some(Symptom { line: "Kernel panic - not syncing: VFS: Unable to mount root fs on", seen: false }),
    },
    Rule {
        id: "virtio-net",
        option: "VIRTIO_NET",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the sandbox's network is a virtio-net device, eth0 in the guest (tap0 on the host)",
        without: "there is no eth0: envd is unreachable and the orchestrator gives up waiting for POST /init",
        symptom: Some(Symptom { line: "IP-Config: Device `eth0' not found", seen: false }),
    },
    Rule {
        id: "ip-autoconfig",
        option: "IP_PNP",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the orchestrator sets the guest's address with the kernel argument \
              ip=169.254.0.21::169.254.0.22:255.255.255.252:instance:eth0:off:...; nothing in the guest \
              runs DHCP",
        without: "eth0 stays unconfigured and envd is unreachable; the kernel hands ip= to init as an \
                  unknown parameter",
        symptom: Some(Symptom { line: "Unknown kernel command line parameters \"ip=", seen: true }),
    },
    Rule {
        id: "unix-sockets",
        option: "UNIX",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "systemd, journald and envd's process API use Unix sockets",
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "elf",
        option: "BINFMT_ELF",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "init and envd are ELF programs",
        without: "the kernel cannot run init and panics",
        symptom: Some(INIT_ENOEXEC),
    },
    Rule {
        id: "script",
        option: "BINFMT_SCRIPT",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "#! init wrappers (tmpl rewrite-wrapper, busybox rcS scripts) start with an interpreter line",
        without: "a #! /sbin/init cannot run and the kernel panics",
        symptom: Some(INIT_ENOEXEC),
    },
    Rule {
        id: "futex",
        option: "FUTEX",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the Go runtime (envd) and glibc's threads block on futexes",
        without: "envd aborts at start; as PID 1 that is \"Attempted to kill init!\"",
        symptom: None,
    },
    Rule {
        id: "epoll",
        option: "EPOLL",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the Go runtime's network poller (envd's HTTP server) and systemd use epoll",
        without: "envd aborts at start",
        symptom: Some(GO_NETPOLL),
    },
    Rule {
        id: "eventfd",
        option: "EVENTFD",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "the Go runtime's network poller (Go 1.21 and later) wakes itself with an eventfd",
        without: "envd aborts at start",
        symptom: Some(GO_NETPOLL),
    },
    Rule {
        id: "devtmpfs",
        option: "DEVTMPFS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "systemd mounts devtmpfs on /dev; envd and its processes need /dev/null, /dev/ptmx, /dev/urandom",
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "procfs",
        option: "PROC_FS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "envd reads processes from /proc; systemd requires it",
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "sysfs",
        option: "SYSFS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: SYSTEMD_REQUIRES,
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "tmpfs",
        option: "TMPFS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "systemd mounts /run, /dev/shm and /tmp as tmpfs",
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "signalfd",
        option: "SIGNALFD",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: SYSTEMD_REQUIRES,
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "timerfd",
        option: "TIMERFD",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: SYSTEMD_REQUIRES,
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "inotify",
        option: "INOTIFY_USER",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: SYSTEMD_REQUIRES,
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "fhandle",
        option: "FHANDLE",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: SYSTEMD_REQUIRES,
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "cgroups",
        option: "CGROUPS",
        or: &[],
        when: When::Always,
        severity: Severity::Fatal,
        why: "systemd requires cgroups (v2, the unified hierarchy); envd manages its processes' cgroups",
        without: SYSTEMD_FAILS,
        symptom: None,
    },
    Rule {
        id: "serial-console",
        option: "SERIAL_8250_CONSOLE",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "console=ttyS0 is the 8250 UART (Firecracker's serial port, QEMU's isa-serial): the boot log \
              boot-test and explain read",
        without: "no console output: a failed boot shows nothing to explain it",
        symptom: None,
    },
    Rule {
        id: "printk",
        option: "PRINTK",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "kernel messages, including panics, reach the console",
        without: "the kernel prints nothing, not even its panic",
        symptom: None,
    },
    Rule {
        id: "devtmpfs-mount",
        option: "DEVTMPFS_MOUNT",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "an init other than systemd (envd as PID 1, a #! wrapper) starts with /dev populated",
        without: "init starts without /dev/console, so without stdin, stdout and stderr",
        symptom: Some(Symptom { line: "Warning: unable to open an initial console.", seen: false }),
    },
    Rule {
        id: "multiuser",
        option: "MULTIUSER",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "envd starts commands as the sandbox's user (setuid, setgroups)",
        without: "every process runs as root; user switching fails with ENOSYS",
        symptom: None,
    },
    Rule {
        id: "base-full",
        option: "BASE_FULL",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "systemd raises kernel.pid_max to 4194304 (sysctl.d/50-pid-max.conf, systemd 243 and later); \
              without BASE_FULL (tinyconfig) the kernel caps it at 32768",
        without: "systemd-sysctl.service fails at every boot (\"Failed to start ... Apply Kernel Variables\") and \
                  systemd reports the system degraded (seen on Debian 12's systemd 252)",
        symptom: None,
    },
    Rule {
        id: "ptys",
        option: "UNIX98_PTYS",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "envd's terminal API (PTY processes) opens /dev/ptmx",
        without: "interactive terminals in the sandbox fail",
        symptom: None,
    },
    Rule {
        id: "posix-timers",
        option: "POSIX_TIMERS",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "timer_create and clock_nanosleep on all clocks (Go's profiler, systemd, most runtimes)",
        without: "programs using POSIX timers fail with ENOSYS",
        symptom: None,
    },
    Rule {
        id: "file-locking",
        option: "FILE_LOCKING",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "flock and fcntl locks (package managers, databases, systemd)",
        without: "locking fails with ENOSYS",
        symptom: None,
    },
    Rule {
        id: "shmem",
        option: "SHMEM",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: "memfd_create and a swappable tmpfs (systemd, browsers in sandboxes)",
        without: "memfd_create fails; tmpfs falls back to ramfs without size limits",
        symptom: None,
    },
    Rule {
        id: "cgroup-memory",
        option: "MEMCG",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: CGROUP_WHY,
        without: CGROUP_WITHOUT,
        symptom: None,
    },
    Rule {
        id: "cgroup-cpu",
        option: "FAIR_GROUP_SCHED",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: CGROUP_WHY,
        without: CGROUP_WITHOUT,
        symptom: None,
    },
    Rule {
        id: "cgroup-io",
        option: "BLK_CGROUP_IOCOST",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: CGROUP_WHY,
        without: CGROUP_WITHOUT,
        symptom: None,
    },
    Rule {
        id: "cgroup-pids",
        option: "CGROUP_PIDS",
        or: &[],
        when: When::Always,
        severity: Severity::Warning,
        why: CGROUP_WHY,
        without: CGROUP_WITHOUT,
        symptom: None,
    },
    Rule {
        id: "kvm-clock",
        option: "KVM_GUEST",
        or: &[],
        when: When::X86,
        severity: Severity::Warning,
        why: "the orchestrator's provisioning boot passes clocksource=kvm-clock; kvm-clock keeps guest time \
              across snapshot restores",
        without: "the kernel ignores clocksource=kvm-clock and keeps a TSC/jiffies clock",
        symptom: None,
    },
    Rule {
        id: "pvh",
        option: "PVH",
        or: &[],
        when: When::X86Profile(Profile::QemuMicrovm),
        severity: Severity::Warning,
        why: "QEMU boots an ELF vmlinux (Firecracker's format) only through its PVH entry point",
        without: "QEMU cannot boot this vmlinux; boot-test needs the same kernel as a bzImage",
        symptom: None,
    },
    Rule {
        id: "ikconfig",
        option: "IKCONFIG",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "the kernel carries its own config, so check-kernel needs no separate config file",
        without: "check-kernel and boot-test need the config file (--config)",
        symptom: None,
    },
    Rule {
        id: "balloon",
        option: "VIRTIO_BALLOON",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "E2B can attach a balloon device to reclaim the guest's free memory",
        without: "the balloon device has no driver; the host cannot reclaim guest memory",
        symptom: None,
    },
    Rule {
        id: "entropy",
        option: "HW_RANDOM_VIRTIO",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "E2B attaches a virtio entropy device",
        without: "the entropy device is unused (random.trust_cpu=on still seeds the pool)",
        symptom: None,
    },
    Rule {
        id: "overlayfs",
        option: "OVERLAY_FS",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "Docker and other container tools inside sandboxes store images on overlayfs",
        without: "container tools in the sandbox fall back to slow storage drivers or fail",
        symptom: None,
    },
    Rule {
        id: "fuse",
        option: "FUSE_FS",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "FUSE filesystems inside sandboxes (bucket mounts, sshfs)",
        without: "FUSE mounts fail",
        symptom: None,
    },
    Rule {
        id: "nfs",
        option: "NFS_FS",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "E2B volumes are mounted over NFS from the orchestrator",
        without: "volume mounts fail",
        symptom: None,
    },
    Rule {
        id: "net-namespaces",
        option: "NET_NS",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "containers in sandboxes and systemd's PrivateNetwork= need network namespaces",
        without: "container tools fail; systemd ignores PrivateNetwork=",
        symptom: None,
    },
    Rule {
        id: "seccomp",
        option: "SECCOMP_FILTER",
        or: &[],
        when: When::Always,
        severity: Severity::Info,
        why: "container runtimes and systemd's SystemCallFilter= install seccomp filters",
        without: "container runtimes refuse to start; systemd skips SystemCallFilter=",
        symptom: None,
    },
];

/// Check `config` against everything an E2B guest needs when booted by `profile`; one [`Check`]
/// per requirement that applies to the config's architecture, satisfied or not, in table order
/// (fatal boot requirements first).
pub fn check(config: &KernelConfig, profile: Profile) -> Vec<Check> {
    let x86 = config.arch() != Arch::Arm64;
    RULES
        .iter()
        .filter(|r| match r.when {
            When::Always => true,
            When::X86 => x86,
            When::X86Profile(p) => x86 && p == profile,
            When::FirecrackerUnless(option) => x86 && profile == Profile::Firecracker && !config.is_builtin(option),
        })
        .map(|r| evaluate(r, config))
        .collect()
}

fn evaluate(rule: &Rule, config: &KernelConfig) -> Check {
    let found = config.get(rule.option).clone();
    let mut related: Vec<Related> =
        rule.or.iter().map(|&option| Related { option, found: config.get(option).clone() }).collect();
    if let When::FirecrackerUnless(option) = rule.when {
        related.push(Related { option, found: config.get(option).clone() });
    }
    let ok = found == Setting::Builtin || rule.or.iter().any(|o| config.is_builtin(o));
    let requirement = std::iter::once("=y".to_string())
        .chain(rule.or.iter().map(|o| format!("{o}=y")))
        .collect::<Vec<_>>()
        .join(", or ");
    let (message, hint) = if ok {
        let by = match (&found, rule.or.iter().find(|o| config.is_builtin(o))) {
            (Setting::Builtin, _) | (_, None) => format!("CONFIG_{}=y", rule.option),
            (_, Some(o)) => format!("CONFIG_{o}=y"),
        };
        (format!("{by}: {}", rule.why), String::new())
    } else {
        let state = match &found {
            Setting::Module => format!("CONFIG_{}=m (a module)", rule.option),
            Setting::NotSet => format!("CONFIG_{} is not set", rule.option),
            Setting::Value(v) => format!("CONFIG_{}={v}", rule.option),
            Setting::Builtin => unreachable!("ok"),
        };
        let alternatives = if rule.or.is_empty() {
            String::new()
        } else {
            format!(" (nor {})", rule.or.iter().map(|o| format!("CONFIG_{o}")).collect::<Vec<_>>().join(", "))
        };
        let mut hint = format!("build the kernel with CONFIG_{}=y", rule.option);
        if !rule.or.is_empty() {
            hint.push_str(&format!(
                " (or {})",
                rule.or.iter().map(|o| format!("CONFIG_{o}=y")).collect::<Vec<_>>().join(", ")
            ));
        }
        if found == Setting::Module {
            hint.push_str(": a Firecracker guest boots without an initramfs, so modules are never loaded");
        }
        (format!("{state}{alternatives}: {}", rule.without), hint)
    };
    Check {
        id: rule.id,
        option: rule.option,
        requirement,
        found,
        related,
        ok,
        severity: rule.severity,
        why: rule.why,
        without: rule.without,
        symptom: rule.symptom,
        message,
        hint,
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use std::io::Write;

    const CONFIG: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.192 Kernel Configuration\n#\n\
                          CONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_VIRTIO_MMIO=y\n\
                          # CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_VIRTIO_BLK=m\n\
                          CONFIG_LOCALVERSION=\"-tmpl\"\nCONFIG_HZ=250\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `IKCFG_ST` + gzip'd config + `IKCFG_ED`, as kernel/configs.c lays it out.
    fn blob(config: &str) -> Vec<u8> {
        [b"IKCFG_ST".as_slice(), &gzip(config.as_bytes()), b"IKCFG_ED"].concat()
    }

    /// Deterministic filler that never contains the marker.
    fn filler(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 251) as u8
            })
            .collect()
    }

    /// A fake uncompressed kernel: ELF magic, filler, the blob at `at`, more filler.
    fn vmlinux(at: usize, config: Option<&str>) -> Vec<u8> {
        let mut v = b"\x7fELF\x02\x01\x01".to_vec();
        v.extend(filler(at - v.len(), 7));
        if let Some(c) = config {
            v.extend(blob(c));
        }
        v.extend(filler(4096, 9));
        v
    }

    fn write_tmp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn size_append(mut compressed: Vec<u8>, plain: &[u8]) -> Vec<u8> {
        compressed.extend((plain.len() as u32).to_le_bytes());
        compressed
    }

    fn compress(c: Compression, plain: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => gzip(plain),
            Compression::Zstd => size_append(zstd::encode_all(plain, 3).unwrap(), plain),
            Compression::Xz => {
                // As the kernel's scripts/xz_wrap.sh: the x86 BCJ filter before LZMA2, CRC32 check.
                let mut opts = lzma_rust2::XzOptions::with_preset(1);
                opts.set_check_sum_type(lzma_rust2::CheckType::Crc32);
                opts.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
                let mut w = lzma_rust2::XzWriter::new(Vec::new(), opts).unwrap();
                w.write_all(plain).unwrap();
                size_append(w.finish().unwrap(), plain)
            }
            Compression::Lzma => {
                let opts = lzma_rust2::LzmaOptions::with_preset(1);
                let mut w =
                    lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &opts, Some(plain.len() as u64)).unwrap();
                w.write_all(plain).unwrap();
                size_append(w.finish().unwrap(), plain)
            }
            Compression::Lz4Legacy => {
                let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
                for block in plain.chunks(LZ4_LEGACY_BLOCK) {
                    let c = lz4_flex::block::compress(block);
                    out.extend((c.len() as u32).to_le_bytes());
                    out.extend(c);
                }
                size_append(out, plain)
            }
            Compression::Bzip2 => size_append(b"BZh91AY&SY\x00\x01\x02\x03".to_vec(), plain),
            Compression::Lzo => size_append(b"\x89LZO\x00\r\n\x1a\n\x10\x30".to_vec(), plain),
        }
    }

    /// A bzImage-like file: a setup header (protocol 2.15, setup_sects 1) and `payload` 16 bytes
    /// after the protected-mode start, followed by `tail` bytes.
    fn bzimage(payload: &[u8], tail: usize) -> Vec<u8> {
        let mut f = vec![0u8; 1024 + 16];
        f[0x1f1] = 1;
        f[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f.extend(vec![0u8; tail]);
        f
    }

    #[test]
    fn parse_reads_values_not_set_lines_and_release() {
        let c = KernelConfig::parse(CONFIG, ConfigOrigin::File { path: "x".into(), beside_kernel: false });
        assert_eq!(c.release.as_deref(), Some("6.1.192"));
        assert_eq!(c.get("VIRTIO_MMIO"), &Setting::Builtin);
        assert_eq!(c.get("VIRTIO_BLK"), &Setting::Module);
        assert_eq!(c.get("VIRTIO_MMIO_CMDLINE_DEVICES"), &Setting::NotSet);
        assert!(c.options.contains_key("VIRTIO_MMIO_CMDLINE_DEVICES"), "explicit 'is not set' is recorded");
        assert_eq!(c.get("NEVER_MENTIONED"), &Setting::NotSet);
        assert_eq!(c.get("LOCALVERSION"), &Setting::Value("\"-tmpl\"".into()));
        assert_eq!(c.get("HZ"), &Setting::Value("250".into()));
        assert_eq!(c.arch(), Arch::X86);
        // A later line wins; malformed names are ignored.
        let c = KernelConfig::parse("CONFIG_A=y\nCONFIG_A=m\nCONFIG_B C=y\nCONFIG_=y\n", c.origin);
        assert_eq!(c.get("A"), &Setting::Module);
        assert_eq!(c.options.len(), 1);
    }

    #[test]
    fn finds_the_config_in_an_uncompressed_image_even_across_read_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // Every split of the 11-byte marker over the 1 MiB chunk boundary, and one far away.
        for at in [CHUNK - 11, CHUNK - 8, CHUNK - 3, CHUNK - 1, CHUNK, 3 * CHUNK + 12345] {
            let p = write_tmp(dir.path(), "vmlinux", &vmlinux(at, Some(CONFIG)));
            let e = read_embedded(&p).unwrap();
            assert_eq!(e.image, ImageKind::Elf);
            let c = e.config.expect("config found");
            assert_eq!(
                c.origin,
                ConfigOrigin::Embedded { image: ImageKind::Elf, compression: None, offset: at as u64 }
            );
            assert_eq!(c.get("VIRTIO_BLK"), &Setting::Module);
        }
        let p = write_tmp(dir.path(), "vmlinux", &vmlinux(5000, None));
        assert_eq!(read_embedded(&p).unwrap().config, None);
    }

    #[test]
    fn finds_the_config_in_every_supported_bzimage_payload() {
        let dir = tempfile::tempdir().unwrap();
        let inner = vmlinux(200_000, Some(CONFIG));
        for c in [Compression::Gzip, Compression::Zstd, Compression::Xz, Compression::Lzma, Compression::Lz4Legacy] {
            let p = write_tmp(dir.path(), "bzImage", &bzimage(&compress(c, &inner), 100));
            let e = read_embedded(&p).unwrap_or_else(|e| panic!("{c}: {e:?}"));
            assert_eq!(e.image, ImageKind::BzImage { protocol: 0x020f }, "{c}");
            assert_eq!(e.compression, Some(c));
            let config = e.config.unwrap_or_else(|| panic!("{c}: no config"));
            assert_eq!(
                config.origin,
                ConfigOrigin::Embedded { image: e.image, compression: Some(c), offset: 200_000 },
                "{c}"
            );
            assert_eq!(config.release.as_deref(), Some("6.1.192"));
            // The whole payload decompresses, to the trailer's size.
            let mut payload = open_payload(&p).unwrap();
            assert_eq!(payload.size, inner.len() as u64);
            let mut all = Vec::new();
            payload.reader.read_to_end(&mut all).unwrap();
            assert_eq!(all, inner, "{c}");
        }
    }

    #[test]
    fn lz4_legacy_spans_several_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // The config lies in the second 8 MiB block.
        let inner = vmlinux(LZ4_LEGACY_BLOCK + 77, Some(CONFIG));
        let p = write_tmp(dir.path(), "bzImage", &bzimage(&compress(Compression::Lz4Legacy, &inner), 0));
        let c = read_embedded(&p).unwrap().config.unwrap();
        assert!(matches!(c.origin, ConfigOrigin::Embedded { offset, .. } if offset == (LZ4_LEGACY_BLOCK + 77) as u64));
    }

    #[test]
    fn a_bzimage_without_ikconfig_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_tmp(dir.path(), "bzImage", &bzimage(&compress(Compression::Zstd, &vmlinux(5000, None)), 0));
        let e = read_embedded(&p).unwrap();
        assert_eq!((e.compression, e.config), (Some(Compression::Zstd), None));
    }

    #[test]
    fn bzip2_and_lzo_payloads_are_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        for c in [Compression::Bzip2, Compression::Lzo] {
            let p = write_tmp(dir.path(), "bzImage", &bzimage(&compress(c, b"whatever"), 0));
            let e = read_embedded(&p).unwrap_err();
            assert!(matches!(e, KconfigError::UnsupportedCompression { compression, .. } if compression == c), "{e:?}");
            assert!(e.to_string().contains("--config"), "{e}");
        }
    }

    #[test]
    fn bad_setup_headers_are_refused_with_the_field_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = bzimage(&compress(Compression::Gzip, &vmlinux(5000, Some(CONFIG))), 0);
        let len = good.len() as u32;
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("payload_offset", Box::new(move |f| f[0x248..0x24c].copy_from_slice(&len.to_le_bytes()))),
            ("payload_length", Box::new(|f| f[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes()))),
            ("setup_sects", Box::new(|f| f.truncate(0x300))),
            ("predates", Box::new(|f| f[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes()))),
            ("not a compression", Box::new(|f| f[1040..1044].copy_from_slice(b"\0\0\0\0"))),
            ("too small", Box::new(|f| f[0x24c..0x250].copy_from_slice(&4u32.to_le_bytes()))),
        ];
        for (what, damage) in cases {
            let mut f = good.clone();
            damage(&mut f);
            if what == "setup_sects" {
                f[0x1f1] = 200; // the kernel would start at 100 KiB, past the end
            }
            let p = write_tmp(dir.path(), "bzImage", &f);
            let e = read_embedded(&p).unwrap_err();
            assert!(
                matches!(&e, KconfigError::BadSetupHeader { reason, .. } if reason.contains(what)),
                "{what}: {e:?}"
            );
        }
    }

    #[test]
    fn an_oversized_size_trailer_is_refused_before_decompressing() {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = compress(Compression::Zstd, &vmlinux(5000, Some(CONFIG)));
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let p = write_tmp(dir.path(), "bzImage", &bzimage(&payload, 0));
        assert!(matches!(read_embedded(&p), Err(KconfigError::PayloadTooLarge { .. })));
    }

    #[test]
    fn the_decompressed_stream_is_capped() {
        let mut capped = Capped { inner: &[7u8; 100][..], left: 10 };
        let mut out = Vec::new();
        let e = capped.read_to_end(&mut out).unwrap_err();
        assert!(matches!(FindError::classify(e, None), FindError::PayloadTooLarge));
        assert_eq!(out.len(), 10);
        let mut exact = Capped { inner: &[7u8; 10][..], left: 10 };
        assert_eq!(exact.read_to_end(&mut Vec::new()).unwrap(), 10);
    }

    #[test]
    fn a_corrupt_payload_is_a_decompression_error_not_a_corrupt_config() {
        let dir = tempfile::tempdir().unwrap();
        // Compressible data (random bytes would be stored as-is: LZMA2 "uncompressed chunks",
        // where a flipped byte stays a flipped byte and the config after it is still found, as it
        // should be).
        let mut inner = b"\x7fELF".to_vec();
        for i in 0..30_000u32 {
            inner.extend(format!("kernel text {i:08} ").as_bytes());
        }
        inner.extend(blob(CONFIG));
        for c in [Compression::Xz, Compression::Lzma, Compression::Zstd, Compression::Gzip, Compression::Lz4Legacy] {
            let mut payload = compress(c, &inner);
            if c == Compression::Lz4Legacy {
                // The legacy frame has no checksums: only its structure can be wrong.
                payload[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
            } else {
                let mid = payload.len() / 3;
                for b in &mut payload[mid..mid + 64] {
                    *b ^= 0x5a;
                }
            }
            let p = write_tmp(dir.path(), "bzImage", &bzimage(&payload, 0));
            let e = read_embedded(&p).unwrap_err();
            assert!(matches!(&e, KconfigError::Decompress { compression, .. } if *compression == c), "{c}: {e:?}");
        }
    }

    #[test]
    fn corrupt_truncated_or_unterminated_embedded_configs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = vmlinux(10_000, Some(CONFIG));
        let gz_start = 10_000 + 8;
        let gz_len = gzip(CONFIG.as_bytes()).len();

        // A flipped byte inside the deflate data.
        let mut corrupt = good.clone();
        corrupt[gz_start + 20] ^= 0xff;
        let p = write_tmp(dir.path(), "corrupt", &corrupt);
        assert!(matches!(read_embedded(&p), Err(KconfigError::EmbeddedCorrupt { offset: 10_000, .. })));

        // The image ends in the middle of the gzip member.
        let p = write_tmp(dir.path(), "truncated", &good[..gz_start + gz_len / 2]);
        let e = read_embedded(&p).unwrap_err();
        assert!(
            matches!(
                e,
                KconfigError::EmbeddedCorrupt { offset: 10_000, .. } | KconfigError::EmbeddedUnterminated { .. }
            ),
            "{e:?}"
        );

        // Intact gzip, but no IKCFG_ED after it.
        let mut unterminated = good.clone();
        unterminated[gz_start + gz_len..gz_start + gz_len + 8].copy_from_slice(b"XXXXXXXX");
        let p = write_tmp(dir.path(), "unterminated", &unterminated);
        assert!(matches!(read_embedded(&p), Err(KconfigError::EmbeddedUnterminated { offset: 10_000, .. })));

        // A gzip member that is not a config.
        let mut v = b"\x7fELF".to_vec();
        v.extend([b"IKCFG_ST".as_slice(), &gzip(&[0u8; 300]), b"IKCFG_ED"].concat());
        let p = write_tmp(dir.path(), "binary", &v);
        assert!(matches!(read_embedded(&p), Err(KconfigError::EmbeddedCorrupt { .. })));
    }

    #[test]
    fn config_files_plain_gzipped_oversized_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_tmp(dir.path(), "config-6.1.0-test", CONFIG.as_bytes());
        let c = read_config_file(&p, false).unwrap();
        assert_eq!(c.get("VIRTIO_MMIO"), &Setting::Builtin);
        // /proc/config.gz
        let p = write_tmp(dir.path(), "config.gz", &gzip(CONFIG.as_bytes()));
        assert_eq!(read_config_file(&p, false).unwrap().get("VIRTIO_BLK"), &Setting::Module);
        // Larger than any config: refused by size, without reading it.
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(MAX_CONFIG_BYTES + 1).unwrap();
        assert!(matches!(read_config_file(&big, false), Err(KconfigError::TooLarge { .. })));
        // A gzip bomb is cut at the cap.
        let bomb = write_tmp(dir.path(), "bomb.gz", &gzip(&vec![b'#'; (MAX_CONFIG_BYTES + 10) as usize]));
        assert!(matches!(read_config_file(&bomb, false), Err(KconfigError::TooLarge { .. })));
        // Not a config.
        let p = write_tmp(dir.path(), "rootfs.ext4", &filler(5000, 3));
        assert!(matches!(read_config_file(&p, false), Err(KconfigError::NotAConfig { .. })));
        let p = write_tmp(dir.path(), "README", b"hello\n");
        assert!(matches!(read_config_file(&p, false), Err(KconfigError::NotAConfig { .. })));
        assert!(matches!(read_config_file(&dir.path().join("missing"), false), Err(KconfigError::Open { .. })));
    }

    #[test]
    fn load_prefers_the_given_file_then_the_image_then_a_file_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let given = write_tmp(dir.path(), "given.config", b"CONFIG_GIVEN=y\n");
        // A kernel without IKCONFIG and nothing beside it.
        let bare = write_tmp(
            dir.path(),
            "vmlinuz-6.1.0-test",
            &bzimage(&compress(Compression::Gzip, &vmlinux(5000, None)), 0),
        );
        let e = load(&bare, None).unwrap_err();
        let KconfigError::NoConfig { looked_for, compression, .. } = &e else { panic!("{e:?}") };
        assert_eq!(*compression, Some(Compression::Gzip));
        assert_eq!(looked_for[0], dir.path().join("config-6.1.0-test"));
        assert!(e.to_string().contains("--config"), "{e}");
        assert_eq!(load(&bare, Some(&given)).unwrap().get("GIVEN"), &Setting::Builtin);
        // The Debian layout: config-<ver> beside vmlinuz-<ver>.
        write_tmp(dir.path(), "config-6.1.0-test", CONFIG.as_bytes());
        let c = load(&bare, None).unwrap();
        assert_eq!(c.origin, ConfigOrigin::File { path: dir.path().join("config-6.1.0-test"), beside_kernel: true });
        // An image with IKCONFIG wins over the file beside it; --config wins over both.
        let own = write_tmp(dir.path(), "vmlinux-6.1.0-test", &vmlinux(5000, Some("CONFIG_OWN=y\n")));
        assert_eq!(load(&own, None).unwrap().get("OWN"), &Setting::Builtin);
        assert_eq!(load(&own, Some(&given)).unwrap().get("OWN"), &Setting::NotSet);
        // An unreadable payload falls back to the file beside the image.
        let bz2 = write_tmp(dir.path(), "vmlinuz-6.1.0-test", &bzimage(&compress(Compression::Bzip2, b"x"), 0));
        assert!(matches!(load(&bz2, None).unwrap().origin, ConfigOrigin::File { beside_kernel: true, .. }));
        assert!(matches!(load(&dir.path().join("nope"), None), Err(KconfigError::Open { .. })));
    }

    fn config(text: &str) -> KernelConfig {
        KernelConfig::parse(text, ConfigOrigin::File { path: "t".into(), beside_kernel: false })
    }

    fn failing(checks: &[Check], severity: Severity) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok && c.severity == severity).map(|c| c.id).collect()
    }

    /// Every option the rules name, built in: nothing fails.
    fn everything() -> String {
        let mut s = String::from("CONFIG_X86_64=y\n");
        for r in RULES {
            s.push_str(&format!("CONFIG_{}=y\n", r.option));
        }
        s
    }

    #[test]
    fn a_complete_config_passes_every_check_in_both_profiles() {
        let c = config(&everything());
        for profile in [Profile::Firecracker, Profile::QemuMicrovm] {
            let checks = check(&c, profile);
            assert!(checks.iter().all(|c| c.ok && c.hint.is_empty()), "{profile:?}");
            assert!(checks.iter().any(|c| c.id == "virtio-discovery"));
        }
    }

    #[test]
    fn e2b_kernels_pass_for_firecracker_and_fail_discovery_under_qemu() {
        // The lines that matter from e2b-dev/fc-kernels configs/x86_64/6.1.158.config.
        let e2b = everything().replace("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n", "")
            + "# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_ACPI=y\n# CONFIG_X86_MPPARSE is not set\n";
        let c = config(&e2b);
        assert_eq!(c.discovery(), Discovery::Acpi);
        let fc = check(&c, Profile::Firecracker);
        assert!(fc.iter().all(|c| c.ok), "{:?}", fc.iter().filter(|c| !c.ok).collect::<Vec<_>>());
        let d = fc.iter().find(|c| c.id == "virtio-discovery").unwrap();
        assert!(d.message.starts_with("CONFIG_ACPI=y"), "{}", d.message);
        assert!(!fc.iter().any(|c| c.id == "mp-table"), "MP table not needed with ACPI");

        let qemu = check(&c, Profile::QemuMicrovm);
        assert_eq!(failing(&qemu, Severity::Fatal), ["virtio-discovery"]);
        assert_eq!(failing(&qemu, Severity::Warning), ["mp-table"]);
    }

    #[test]
    fn debian_style_modules_and_missing_ip_pnp_are_fatal_with_hints() {
        let debian = everything()
            .replace("CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_MMIO=m")
            .replace("CONFIG_VIRTIO_BLK=y", "CONFIG_VIRTIO_BLK=m")
            .replace("CONFIG_VIRTIO_NET=y", "CONFIG_VIRTIO_NET=m")
            .replace("CONFIG_IP_PNP=y\n", "# CONFIG_IP_PNP is not set\n")
            .replace("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n", "")
            + "CONFIG_ACPI=y\n";
        let c = config(&debian);
        assert_eq!(c.discovery(), Discovery::None, "a module cannot discover anything at boot");
        let checks = check(&c, Profile::Firecracker);
        assert_eq!(failing(&checks, Severity::Fatal), ["virtio-mmio", "virtio-blk", "virtio-net", "ip-autoconfig"]);
        let mmio = checks.iter().find(|c| c.id == "virtio-mmio").unwrap();
        assert_eq!(mmio.found, Setting::Module);
        assert!(mmio.message.starts_with("CONFIG_VIRTIO_MMIO=m (a module)"), "{}", mmio.message);
        assert!(mmio.hint.contains("CONFIG_VIRTIO_MMIO=y") && mmio.hint.contains("initramfs"), "{}", mmio.hint);
        assert_eq!(mmio.symptom.map(|s| s.line), Some(VFS_NO_ROOT.line));
        let pnp = checks.iter().find(|c| c.id == "ip-autoconfig").unwrap();
        assert_eq!(pnp.found, Setting::NotSet);
        assert!(pnp.symptom.is_some_and(|s| s.seen && s.line.contains("ip=")));
    }

    #[test]
    fn discovery_needs_one_route_for_firecracker_and_the_command_line_for_qemu() {
        let none = everything().replace("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n", "");
        let c = config(&none);
        let fc = check(&c, Profile::Firecracker);
        let d = fc.iter().find(|c| c.id == "virtio-discovery").unwrap();
        assert!(!d.ok && d.severity == Severity::Fatal);
        assert_eq!(d.requirement, "=y, or ACPI=y");
        assert_eq!(d.related, [Related { option: "ACPI", found: Setting::NotSet }]);
        assert!(d.hint.contains("CONFIG_ACPI=y"), "{}", d.hint);
        assert!(d.message.contains("(nor CONFIG_ACPI)"), "{}", d.message);
        // Both routes: QEMU is happy too.
        assert_eq!(config(&(everything() + "CONFIG_ACPI=y\n")).discovery(), Discovery::Both);
    }

    #[test]
    fn a_base_small_kernel_warns_that_systemd_sysctl_fails() {
        // tinyconfig turns BASE_FULL off; systemd's kernel.pid_max = 4194304 then fails.
        let c = config(&everything().replace("CONFIG_BASE_FULL=y\n", ""));
        let checks = check(&c, Profile::QemuMicrovm);
        let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.id).collect();
        assert_eq!(failing, ["base-full"]);
        let b = checks.iter().find(|c| c.id == "base-full").unwrap();
        assert_eq!(b.severity, Severity::Warning);
        assert!(b.hint.contains("CONFIG_BASE_FULL=y"), "{}", b.hint);
        assert!(b.without.contains("systemd-sysctl.service"), "{}", b.without);
    }

    #[test]
    fn every_rule_is_in_the_documented_table() {
        let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guest-kernel.md")).unwrap();
        for r in RULES {
            assert!(doc.contains(&format!("`{}`", r.id)), "docs/guest-kernel.md lacks rule {}", r.id);
            assert!(doc.contains(&format!("`{}`", r.option)), "docs/guest-kernel.md lacks option {}", r.option);
        }
    }

    #[test]
    fn arm64_configs_skip_the_x86_rules() {
        let arm = everything()
            .replace("CONFIG_X86_64=y\n", "CONFIG_ARM64=y\nCONFIG_OF=y\n")
            .replace("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n", "")
            .replace("CONFIG_KVM_GUEST=y\n", "");
        let c = config(&arm);
        assert_eq!((c.arch(), c.discovery()), (Arch::Arm64, Discovery::DeviceTree));
        for profile in [Profile::Firecracker, Profile::QemuMicrovm] {
            let checks = check(&c, profile);
            assert!(checks.iter().all(|c| c.ok), "{profile:?}");
            assert!(!checks.iter().any(|c| ["virtio-discovery", "mp-table", "kvm-clock", "pvh"].contains(&c.id)));
        }
    }
}
