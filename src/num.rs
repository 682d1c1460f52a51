//! Integer conversions for values read from files: checked or saturating, never an `as` that
//! truncates or wraps silently (clippy's cast lints are on crate-wide).

// tmpl runs on 64-bit Linux (x86_64, aarch64): a u64 length always fits a usize there, so
// [`usize_from`] is lossless; on a narrower target it would saturate, and every caller bounds the
// result (by a buffer's length or a cap) before using it.
const _: () = assert!(usize::BITS >= 64, "tmpl supports 64-bit targets only");

/// A length, offset or count as `usize` (saturating: lossless on the 64-bit targets tmpl
/// supports).
#[inline]
pub fn usize_from(n: impl Into<u64>) -> usize {
    usize::try_from(n.into()).unwrap_or(usize::MAX)
}

/// A `usize` (a buffer length) as `u64`: lossless on every target Rust supports today.
#[inline]
pub fn u64_from(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_lossless_in_range() {
        assert_eq!(usize_from(u64::MAX), usize::MAX);
        assert_eq!(usize_from(7u32), 7);
        assert_eq!(u64_from(usize::MAX), u64::MAX);
    }
}
