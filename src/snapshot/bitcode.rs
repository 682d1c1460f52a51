//! The part of bitcode 0.6's serde format that a Firecracker v1.15+ snapfile needs read (and,
//! for the demo, written): integer, bool, enum-variant, length and string columns.
//!
//! Facts from the `bitcode` 0.6.9 crate (the version Firecracker v1.15.0–v1.16.1 lock), files
//! `src/serde/{ser,de}.rs`, `src/pack.rs`, `src/pack_ints.rs`, `src/length.rs`, `src/str.rs`:
//!
//! * bitcode is columnar. `bitcode::serialize` gives every leaf of the serde tree (a struct
//!   field, a sequence's element type, an enum's payload) its own column, and writes the columns
//!   in the order serde first reaches them, depth first; a column holds the values of every
//!   instance of that leaf (for a `Vec<Region>`, all base addresses, then all sizes, ...). A
//!   column that is never reached (elements of an empty `Vec`, the payload of an `Option` that is
//!   `None`) is not written at all. For Firecracker's `Snapshot { header, data: MicrovmState }`
//!   every column up to the memory regions is reached exactly once, in field order.
//! * Byte column of `n` values (u8, enum variant indexes, the small part of lengths): `n <= 2`:
//!   the raw bytes. Otherwise a packing byte `v` (`ceil(v/2)`: 0 raw, 1..=5 base 16, 6, 4, 3, 2
//!   digits per byte; odd `v`: a minimum byte follows that is added to every value), then
//!   `ceil(n/d)` bytes each holding `d` base-`f` digits, least significant first.
//! * Integer column of `n` values of a `W`-byte type (u16/u32/u64; `usize` is a u64): nothing
//!   when `n == 0`; two raw bytes for one u16; otherwise a packing byte `v` (`ceil(v/2)` plus the
//!   type's own width index, 0 = 128, 1 = 64, 2 = 32, 3 = 16, 4 = 8 bits; odd `v`: a `W`-byte
//!   minimum follows), then the values at the packed width, little-endian (8-bit values as a
//!   byte column).
//! * bool column: `ceil(n/8)` bytes, bit `i` of byte `k` is value `8k + i`; no packing byte.
//! * Lengths (of strings and sequences): a byte column of `n` values where 255 means "large",
//!   then an integer (u64) column with one value per 255.
//! * String column: the lengths, then all the bytes, concatenated.
//! * `Option<T>` is an enum: variant 0 = `None`, 1 = `Some`, then the column(s) of the `Some`s.
//!
//! Nothing here trusts a count from the input: every count is capped by the caller and by the
//! bytes that remain, and arithmetic is checked. Errors are `None`; the caller says what failed.

/// Cap on the values one column may hold (the snapfile head tmpl keeps is 64 KiB anyway).
pub const MAX_VALUES: usize = 1 << 16;

/// A reader over the columns of a bitcode blob, in order.
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Columns<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Columns { b, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// `n` values of base-`factor` digits, `digits` per byte, least significant first.
    fn arithmetic(&mut self, n: usize, factor: u8, digits: usize) -> Option<Vec<u8>> {
        let packed = self.take(n.div_ceil(digits))?;
        let mut out = Vec::with_capacity(n);
        for &p in packed {
            let mut v = p;
            for _ in 0..digits {
                if out.len() == n {
                    break;
                }
                out.push(v % factor);
                v /= factor;
            }
        }
        Some(out)
    }

    /// A byte column of `n` values (u8s, enum variants, small lengths).
    pub fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        if n > MAX_VALUES {
            return None;
        }
        if n <= 2 {
            return self.take(n).map(<[u8]>::to_vec);
        }
        let v = self.byte()?;
        let min = if v & 1 == 1 { Some(self.byte()?) } else { None };
        let mut out = match v.div_ceil(2) {
            0 => self.take(n)?.to_vec(),
            1 => self.arithmetic(n, 16, 2)?,
            2 => self.arithmetic(n, 6, 3)?,
            3 => self.arithmetic(n, 4, 4)?,
            4 => self.arithmetic(n, 3, 5)?,
            5 => self.arithmetic(n, 2, 8)?,
            _ => return None,
        };
        if let Some(m) = min {
            out.iter_mut().for_each(|x| *x = x.wrapping_add(m));
        }
        Some(out)
    }

    /// Enum variant indexes of `n` values.
    pub fn variants(&mut self, n: usize) -> Option<Vec<u8>> {
        self.bytes(n)
    }

    /// An integer column of `n` values of a `width`-byte unsigned type (2, 4 or 8).
    pub fn ints(&mut self, n: usize, width: usize) -> Option<Vec<u64>> {
        if n > MAX_VALUES || !matches!(width, 2 | 4 | 8) {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let le = |s: &[u8]| s.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if width == 2 && n == 1 {
            return self.take(2).map(|s| vec![le(s)]);
        }
        // The packing index of the type itself: u64 = 1, u32 = 2, u16 = 3.
        let own: u8 = match width {
            8 => 1,
            4 => 2,
            _ => 3,
        };
        let v = self.byte()?;
        let packing = v.div_ceil(2).checked_add(own)?;
        let min = if v & 1 == 1 { Some(le(self.take(width)?)) } else { None };
        let mut out: Vec<u64> = match packing {
            1 => self.take(n.checked_mul(8)?)?.chunks_exact(8).map(le).collect(),
            2 => self.take(n.checked_mul(4)?)?.chunks_exact(4).map(le).collect(),
            3 => self.take(n.checked_mul(2)?)?.chunks_exact(2).map(le).collect(),
            4 => self.bytes(n)?.into_iter().map(u64::from).collect(),
            // 0 would be 128-bit values: never chosen for types of at most 64 bits.
            _ => return None,
        };
        if let Some(m) = min {
            let mask = if width == 8 { u64::MAX } else { (1u64 << (width * 8)) - 1 };
            out.iter_mut().for_each(|x| *x = x.wrapping_add(m) & mask);
        }
        Some(out)
    }

    /// `n` bools.
    pub fn bools(&mut self, n: usize) -> Option<Vec<bool>> {
        if n > MAX_VALUES {
            return None;
        }
        Some(self.arithmetic(n, 2, 8)?.into_iter().map(|b| b == 1).collect())
    }

    /// `n` lengths (of strings or sequences), each at most `max`.
    pub fn lengths(&mut self, n: usize, max: u64) -> Option<Vec<u64>> {
        let small = self.bytes(n)?;
        let large_count = small.iter().filter(|&&v| v == 255).count();
        let mut large = self.ints(large_count, 8)?.into_iter();
        let out: Vec<u64> =
            small.iter().map(|&v| if v == 255 { large.next() } else { Some(u64::from(v)) }).collect::<Option<_>>()?;
        out.iter().all(|&l| l <= max).then_some(out)
    }

    /// `n` strings, each at most `max` bytes.
    pub fn strings(&mut self, n: usize, max: u64) -> Option<Vec<String>> {
        let lens = self.lengths(n, max)?;
        let mut out = Vec::with_capacity(n);
        for l in lens {
            let s = self.take(usize::try_from(l).ok()?)?;
            out.push(String::from_utf8(s.to_vec()).ok()?);
        }
        Some(out)
    }

    /// `n` `Option<String>`s.
    pub fn opt_strings(&mut self, n: usize, max: u64) -> Option<Vec<Option<String>>> {
        let tags = self.variants(n)?;
        if tags.iter().any(|&t| t > 1) {
            return None;
        }
        let somes = tags.iter().filter(|&&t| t == 1).count();
        let mut values = if somes > 0 { self.strings(somes, max)? } else { Vec::new() }.into_iter();
        Some(tags.iter().map(|&t| if t == 1 { values.next() } else { None }).collect())
    }
}

/// Writes columns the way bitcode 0.6 does (for values tmpl writes: the demo's snapfiles).
#[derive(Debug, Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

/// bitcode's byte packing for the largest value `max`: (packing code, base, digits per byte).
fn byte_packing(max: u8) -> (u8, u8, usize) {
    match max {
        0..=1 => (5, 2, 8),
        2 => (4, 3, 5),
        3 => (3, 4, 4),
        4..=5 => (2, 6, 3),
        6..=15 => (1, 16, 2),
        _ => (0, 0, 1),
    }
}

impl Writer {
    fn arithmetic(&mut self, v: &[u8], factor: u8, digits: usize) {
        for chunk in v.chunks(digits) {
            let acc = chunk.iter().rev().fold(0u8, |acc, &d| acc.wrapping_mul(factor).wrapping_add(d));
            self.out.push(acc);
        }
    }

    /// A byte column.
    pub fn bytes(&mut self, v: &[u8]) {
        if v.len() <= 2 {
            self.out.extend_from_slice(v);
            return;
        }
        let min = v.iter().copied().min().unwrap_or(0);
        let max = v.iter().copied().max().unwrap_or(0);
        let basic = byte_packing(max);
        let offset = byte_packing(max - min);
        // bitcode prefers the offset packing only when it is strictly tighter and n > 5.
        if offset.0 > basic.0 && v.len() > 5 {
            self.out.push(offset.0 * 2 - 1);
            self.out.push(min);
            let shifted: Vec<u8> = v.iter().map(|x| x - min).collect();
            self.arithmetic(&shifted, offset.1, offset.2);
        } else {
            self.out.push(basic.0 * 2);
            if basic.0 == 0 {
                self.out.extend_from_slice(v);
            } else {
                self.arithmetic(v, basic.1, basic.2);
            }
        }
    }

    /// An integer column of a `width`-byte unsigned type (2, 4 or 8).
    pub fn ints(&mut self, v: &[u64], width: usize) {
        if v.is_empty() {
            return;
        }
        if width == 2 && v.len() == 1 {
            self.out.extend_from_slice(&v[0].to_le_bytes()[..2]);
            return;
        }
        let own: u8 = match width {
            8 => 1,
            4 => 2,
            _ => 3,
        };
        let packing = |max: u64| -> u8 {
            match max {
                0..=0xFF => 4,
                0x100..=0xFFFF => 3,
                0x1_0000..=0xFFFF_FFFF => 2,
                _ => 1,
            }
        };
        let put = |w: &mut Writer, vals: &[u64], p: u8| match p {
            4 => w.bytes(&vals.iter().map(|&x| u8::try_from(x).unwrap_or(u8::MAX)).collect::<Vec<_>>()),
            _ => {
                let bytes = match p {
                    3 => 2,
                    2 => 4,
                    _ => 8,
                };
                for x in vals {
                    w.out.extend_from_slice(&x.to_le_bytes()[..bytes]);
                }
            }
        };
        // bitcode decides from the first 16 values whether packing can help at all.
        let sample = &v[..v.len().min(16)];
        let (smin, smax) = (sample.iter().min().copied().unwrap_or(0), sample.iter().max().copied().unwrap_or(0));
        if packing(smax - smin) == own {
            self.out.push(0);
            put(self, v, own);
            return;
        }
        let (min, max) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
        let basic = packing(max);
        let offset = packing(max - min);
        if offset > basic && v.len() > 5 {
            self.out.push((offset - own) * 2 - 1);
            self.out.extend_from_slice(&min.to_le_bytes()[..width]);
            let shifted: Vec<u64> = v.iter().map(|x| x - min).collect();
            put(self, &shifted, offset);
        } else {
            self.out.push((basic - own) * 2);
            put(self, v, basic);
        }
    }

    pub fn bools(&mut self, v: &[bool]) {
        let digits: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
        self.arithmetic(&digits, 2, 8);
    }

    pub fn lengths(&mut self, v: &[u64]) {
        let small: Vec<u8> = v.iter().map(|&l| u8::try_from(l).unwrap_or(255)).collect();
        self.bytes(&small);
        let large: Vec<u64> = v.iter().copied().filter(|&l| l >= 255).collect();
        self.ints(&large, 8);
    }

    pub fn strings(&mut self, v: &[&str]) {
        self.lengths(&v.iter().map(|s| s.len() as u64).collect::<Vec<_>>());
        for s in v {
            self.out.extend_from_slice(s.as_bytes());
        }
    }

    pub fn opt_strings(&mut self, v: &[Option<&str>]) {
        self.bytes(&v.iter().map(|s| u8::from(s.is_some())).collect::<Vec<_>>());
        let somes: Vec<&str> = v.iter().flatten().copied().collect();
        if !somes.is_empty() {
            self.strings(&somes);
        }
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test and fixture data of known, small sizes")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip_bytes(v: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(v);
        let mut c = Columns::new(&w.out);
        let got = c.bytes(v.len()).unwrap();
        assert_eq!(c.pos(), w.out.len(), "{v:?} -> {:02x?}", w.out);
        got
    }

    #[test]
    fn known_encodings() {
        // Values seen in Firecracker v1.16.1's own output (tests/fixtures/firecracker).
        let mut w = Writer::default();
        w.ints(&[512], 8);
        assert_eq!(w.out, [0x04, 0x00, 0x02]);
        let mut w = Writer::default();
        w.ints(&[super::super::X86_64_MAGIC], 8);
        assert_eq!(w.out, [0x00, 0x00, 0x00, 0x64, 0x86, 0x84, 0x19, 0x10, 0x07]);
        let mut w = Writer::default();
        w.ints(&[64 << 20], 8);
        assert_eq!(w.out, [0x02, 0x00, 0x00, 0x00, 0x04]);
        let mut w = Writer::default();
        w.strings(&["10.0.0"]);
        assert_eq!(w.out, b"\x0610.0.0");
    }

    proptest! {
        #[test]
        fn bytes_roundtrip(v in proptest::collection::vec(any::<u8>(), 0..80), cap in 0u8..=255) {
            let v: Vec<u8> = v.into_iter().map(|x| if cap == 0 { x } else { x % cap }).collect();
            prop_assert_eq!(roundtrip_bytes(&v), v);
        }

        #[test]
        fn ints_roundtrip(v in proptest::collection::vec(any::<u64>(), 0..40), shift in 0u32..64, width in prop_oneof![Just(2usize), Just(4), Just(8)]) {
            let mask = if width == 8 { u64::MAX } else { (1u64 << (width * 8)) - 1 };
            let v: Vec<u64> = v.into_iter().map(|x| (x >> shift) & mask).collect();
            let mut w = Writer::default();
            w.ints(&v, width);
            let mut c = Columns::new(&w.out);
            prop_assert_eq!(c.ints(v.len(), width).unwrap(), v);
            prop_assert_eq!(c.pos(), w.out.len());
        }

        #[test]
        fn strings_and_bools_roundtrip(s in proptest::collection::vec(".{0,300}", 0..6), b in proptest::collection::vec(any::<bool>(), 0..30)) {
            let refs: Vec<&str> = s.iter().map(String::as_str).collect();
            let mut w = Writer::default();
            w.strings(&refs);
            w.bools(&b);
            let mut c = Columns::new(&w.out);
            prop_assert_eq!(c.strings(s.len(), 1 << 20).unwrap(), s);
            prop_assert_eq!(c.bools(b.len()).unwrap(), b);
            prop_assert_eq!(c.pos(), w.out.len());
        }

        /// What the real bitcode 0.6.9 writes for random columns is what `Writer` writes, and
        /// `Columns` reads the values back.
        #[test]
        fn agrees_with_the_bitcode_crate(
            a in proptest::collection::vec(any::<u64>(), 0..40),
            b in proptest::collection::vec(0u32..300, 0..40),
            c in proptest::collection::vec(any::<u16>(), 0..4),
            d in proptest::collection::vec("[a-z!0-9]{0,300}", 0..5),
            e in proptest::collection::vec(any::<bool>(), 0..20),
            f in proptest::option::of("[ -~]{0,40}"),
            g in proptest::collection::vec(0u8..7, 0..30),
            shift in 0u32..64,
        ) {
            let a: Vec<u64> = a.into_iter().map(|x| x >> shift).collect();
            let real = ::bitcode::serialize(&(a.clone(), b.clone(), c.clone(), d.clone(), e.clone(), f.clone(), g.clone())).unwrap();
            let mut w = Writer::default();
            let seq_ints = |w: &mut Writer, v: &[u64], width: usize| {
                w.lengths(&[v.len() as u64]);
                w.ints(v, width);
            };
            seq_ints(&mut w, &a, 8);
            seq_ints(&mut w, &b.iter().map(|&x| u64::from(x)).collect::<Vec<_>>(), 4);
            seq_ints(&mut w, &c.iter().map(|&x| u64::from(x)).collect::<Vec<_>>(), 2);
            w.lengths(&[d.len() as u64]);
            if !d.is_empty() {
                w.strings(&d.iter().map(String::as_str).collect::<Vec<_>>());
            }
            w.lengths(&[e.len() as u64]);
            if !e.is_empty() {
                w.bools(&e);
            }
            w.opt_strings(&[f.as_deref()]);
            w.lengths(&[g.len() as u64]);
            if !g.is_empty() {
                w.bytes(&g);
            }
            prop_assert_eq!(&w.out, &real);
            let mut r = Columns::new(&real);
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(r.ints(n, 8).unwrap(), a);
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(r.ints(n, 4).unwrap(), b.iter().map(|&x| u64::from(x)).collect::<Vec<_>>());
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(r.ints(n, 2).unwrap(), c.iter().map(|&x| u64::from(x)).collect::<Vec<_>>());
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(if n > 0 { r.strings(n, 1000).unwrap() } else { vec![] }, d);
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(r.bools(n).unwrap(), e);
            prop_assert_eq!(r.opt_strings(1, 1000).unwrap(), vec![f]);
            let n = r.lengths(1, 1000).unwrap()[0] as usize;
            prop_assert_eq!(r.bytes(n).unwrap(), g);
            prop_assert_eq!(r.pos(), real.len());
        }

        /// Any bytes, any count: the reader returns or fails, never panics or over-allocates.
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..100_000, width in 0usize..10) {
            let mut c = Columns::new(&bytes);
            let _ = c.clone().bytes(n);
            let _ = c.clone().ints(n, width);
            let _ = c.clone().bools(n);
            let _ = c.clone().lengths(n, u64::MAX);
            let _ = c.clone().strings(n, 1 << 20);
            let _ = c.opt_strings(n, 1 << 20);
        }
    }
}
