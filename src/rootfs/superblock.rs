//! The ext4 superblock, read by us before handing the device to the ext4 reader, so that
//! unsupported features and a dirty journal are reported by name.
//!
//! ```text
//! device offset 1024, 1024 bytes, little-endian (fields used here):
//!  0x04 u32 s_blocks_count_lo   0x18 u32 s_log_block_size   0x38 u16 s_magic = 0xEF53
//!  0x3A u16 s_state             0x5C u32 feature_compat     0x60 u32 feature_incompat
//!  0x64 u32 feature_ro_compat   0x68 [16] s_uuid            0x78 [16] s_volume_name
//!  0x150 u32 s_blocks_count_hi (64bit only)
//! ```
//! Feature bit names follow the kernel's `ext4.h` / e2fsprogs `lib/ext2fs/ext2_fs.h`.

use serde::Serialize;

use crate::device::{DeviceError, ReadAt};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_MAGIC: u16 = 0xEF53;
pub const INCOMPAT_RECOVER: u32 = 0x4;

const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];
/// Incompatible features the rootfs reader (ext4-view 1.0) refuses to load.
const UNREADABLE: u32 = 0x1 | 0x8 | 0x10 | 0x100 | 0x400 | 0x1000 | 0x4000 | 0x8000 | 0x20000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub state: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: String,
    pub volume_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SuperblockError {
    #[error("no ext4 superblock: magic at byte 1080 is 0x{0:04x}, not 0xef53")]
    BadMagic(u16),
    #[error("superblock block size 2^(10+{0}) is not valid")]
    BadBlockSize(u32),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

fn names(bits: u32, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = table.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    let known: u32 = table.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
    if bits & !known != 0 {
        out.push("unknown");
    }
    out
}

/// Names of `feature_incompat` bits (as printed by the kernel in hex, e.g. "unsupported
/// optional features (10000)").
pub fn incompat_names(bits: u32) -> Vec<&'static str> {
    names(bits, INCOMPAT)
}

/// Names of `feature_ro_compat` bits.
pub fn ro_compat_names(bits: u32) -> Vec<&'static str> {
    names(bits, RO_COMPAT)
}

impl Superblock {
    /// Parse the 1024-byte superblock.
    pub fn parse(b: &[u8; 1024]) -> Result<Superblock, SuperblockError> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let magic = u16_at(0x38);
        if magic != EXT4_MAGIC {
            return Err(SuperblockError::BadMagic(magic));
        }
        let log = u32_at(0x18);
        if log > 6 {
            return Err(SuperblockError::BadBlockSize(log));
        }
        let incompat = u32_at(0x60);
        let hi = if incompat & 0x80 != 0 { u64::from(u32_at(0x150)) } else { 0 };
        let uuid = crate::vocab::BuildId::from_bytes(b[0x68..0x78].try_into().unwrap_or([0; 16])).to_string();
        let name_end = b[0x78..0x88].iter().position(|&c| c == 0).unwrap_or(16);
        Ok(Superblock {
            block_size: 1024 << log,
            blocks_count: (hi << 32) | u64::from(u32_at(0x4)),
            inodes_count: u32_at(0x0),
            state: u16_at(0x3A),
            feature_compat: u32_at(0x5C),
            feature_incompat: incompat,
            feature_ro_compat: u32_at(0x64),
            uuid,
            volume_name: String::from_utf8_lossy(&b[0x78..0x78 + name_end]).into_owned(),
        })
    }

    /// Read and parse the superblock of a device.
    pub fn read(dev: &dyn ReadAt) -> Result<Superblock, SuperblockError> {
        let mut b = [0u8; 1024];
        dev.read_exact_at(&mut b, SUPERBLOCK_OFFSET)?;
        Self::parse(&b)
    }

    /// The journal holds transactions not yet written back (a kernel mount or e2fsck replays
    /// them; debugfs does not, and a later replay erases what it wrote).
    pub fn needs_recovery(&self) -> bool {
        self.feature_incompat & INCOMPAT_RECOVER != 0
    }

    /// Filesystem size in bytes according to the superblock.
    pub fn fs_bytes(&self) -> u64 {
        self.blocks_count.saturating_mul(self.block_size)
    }

    /// Incompatible features that ext4-view cannot read, by name.
    pub fn unreadable_features(&self) -> Vec<&'static str> {
        names(self.feature_incompat & UNREADABLE, INCOMPAT)
    }

    /// All feature names (compat, incompat, ro_compat).
    pub fn features(&self) -> Vec<&'static str> {
        let mut v = names(self.feature_compat, COMPAT);
        v.extend(names(self.feature_incompat, INCOMPAT));
        v.extend(names(self.feature_ro_compat, RO_COMPAT));
        v
    }

    /// `s_state` bit 2: errors were detected.
    pub fn has_errors(&self) -> bool {
        self.state & 0x2 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> [u8; 1024] {
        let mut b = [0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&1000u32.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&(0x40u32 | 0x2 | 0x80).to_le_bytes());
        b[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        b[0x78..0x7C].copy_from_slice(b"root");
        b
    }

    #[test]
    fn parses_fields_and_features() {
        let s = Superblock::parse(&sb()).unwrap();
        assert_eq!(s.block_size, 4096);
        assert_eq!(s.blocks_count, (1 << 32) | 1000);
        assert_eq!(s.volume_name, "root");
        assert!(!s.needs_recovery());
        assert!(s.unreadable_features().is_empty());
        assert!(s.features().contains(&"extent"));
    }

    #[test]
    fn flags_recovery_and_unreadable_features() {
        let mut b = sb();
        b[0x60..0x64].copy_from_slice(&(0x40u32 | 0x4 | 0x8000 | 0x10).to_le_bytes());
        let s = Superblock::parse(&b).unwrap();
        assert!(s.needs_recovery());
        assert_eq!(s.unreadable_features(), vec!["meta_bg", "inline_data"]);
        b[0x38] = 0;
        assert!(matches!(Superblock::parse(&b), Err(SuperblockError::BadMagic(_))));
    }
}
