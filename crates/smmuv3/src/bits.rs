//! Bit-field helpers shared by the register, STE, CD, command and event layouts.
//!
//! Every layout in this crate is a little array of 64-bit words; fields are named by
//! `(word, lowest bit, width)` exactly as the SMMUv3 specification (IHI 0070) draws them, so the
//! accessors read like the tables in the spec.

/// A mask of the low `width` bits.
pub(crate) const fn low_mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Bits `[lo + width - 1 : lo]` of `word`, shifted down to bit 0.
pub(crate) const fn get(word: u64, lo: u32, width: u32) -> u64 {
    (word >> lo) & low_mask(width)
}

/// `word` with bits `[lo + width - 1 : lo]` replaced by `value`.
///
/// A value wider than the field is a programming error in this crate (every public setter
/// validates or narrows its input first), hence the debug assertion; release builds truncate.
pub(crate) const fn with(word: u64, lo: u32, width: u32, value: u64) -> u64 {
    debug_assert!(value & !low_mask(width) == 0, "value does not fit its field");
    (word & !(low_mask(width) << lo)) | ((value & low_mask(width)) << lo)
}

/// Mask selecting address bits `[hi:lo]` in place (addresses are stored unshifted: an STE's
/// S1ContextPtr occupies bits [51:6] of word 0 and holds address bits [51:6]).
pub(crate) const fn addr_mask(lo: u32, hi: u32) -> u64 {
    low_mask(hi + 1) & !low_mask(lo)
}

/// Generates a named getter and chaining setter for each numeric field of a `words: [u64; N]`
/// layout: `name, set_name: word W, bits LO, width N;`.
macro_rules! numeric_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bits $lo:literal, width $width:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> u64 {
                crate::bits::get(self.words[$w], $lo, $width)
            }
            $(#[$doc])*
            pub fn $set(&mut self, value: u64) -> &mut Self {
                self.words[$w] = crate::bits::with(self.words[$w], $lo, $width, value);
                self
            }
        )*
    };
}

/// Like [`numeric_fields`] for single-bit flags, as `bool`.
macro_rules! flag_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bit $bit:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> bool {
                crate::bits::get(self.words[$w], $bit, 1) == 1
            }
            $(#[$doc])*
            pub fn $set(&mut self, value: bool) -> &mut Self {
                self.words[$w] = crate::bits::with(self.words[$w], $bit, 1, value as u64);
                self
            }
        )*
    };
}

/// Address fields stored unshifted in bits `[hi:lo]` of a word; the low bits of the address must be
/// zero (the field's alignment).
macro_rules! address_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bits $hi:literal : $lo:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> u64 {
                self.words[$w] & crate::bits::addr_mask($lo, $hi)
            }
            $(#[$doc])*
            pub fn $set(&mut self, address: u64) -> &mut Self {
                let mask = crate::bits::addr_mask($lo, $hi);
                debug_assert!(address & !mask == 0, "address misaligned or too wide for its field");
                self.words[$w] = (self.words[$w] & !mask) | (address & mask);
                self
            }
        )*
    };
}

pub(crate) use {address_fields, flag_fields, numeric_fields};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_without_disturbing_neighbours() {
        let word = with(u64::MAX, 32, 6, 0b10_1010);
        assert_eq!(get(word, 32, 6), 0b10_1010);
        assert_eq!(get(word, 0, 32), 0xFFFF_FFFF);
        assert_eq!(get(word, 38, 26), low_mask(26));
        assert_eq!(addr_mask(6, 51), 0x000F_FFFF_FFFF_FFC0);
    }
}
