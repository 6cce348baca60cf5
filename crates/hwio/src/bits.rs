//! The one bit-field convention of every hardware layout: registers, table entries, queue
//! descriptors, commands and records.
//!
//! A layout is a little array of 64-bit words. A field is named by `(word, lowest bit, width)`
//! exactly as the specifications draw them, so accessors read like the spec's tables. The bits a
//! specification reserves (software must write them as zero; hardware may fault on a one) are
//! declared too, per layout, with [`reserved_bits!`](crate::reserved_bits): a writer can then
//! refuse an entry with one of them set, and a software model can report it the way hardware
//! does (VT-d "reserved field set" faults, SMMUv3 C_BAD_STE).

/// A mask of the low `width` bits.
#[inline(always)]
pub const fn low_mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Bits `[lo + width - 1 : lo]` of `word`, shifted down to bit 0.
#[inline(always)]
pub const fn get(word: u64, lo: u32, width: u32) -> u64 {
    (word >> lo) & low_mask(width)
}

/// `word` with bits `[lo + width - 1 : lo]` replaced by `value`.
///
/// A value wider than the field is a programming error of the caller (every public setter
/// validates or narrows its input first), hence the debug assertion; release builds truncate.
#[inline(always)]
pub const fn with(word: u64, lo: u32, width: u32, value: u64) -> u64 {
    debug_assert!(value & !low_mask(width) == 0, "value does not fit its field");
    (word & !(low_mask(width) << lo)) | ((value & low_mask(width)) << lo)
}

/// Mask selecting bits `[hi:lo]` in place. Address fields are stored unshifted: an SMMU STE's
/// S1ContextPtr occupies bits [51:6] of word 0 and holds address bits [51:6].
#[inline(always)]
pub const fn addr_mask(lo: u32, hi: u32) -> u64 {
    low_mask(hi + 1) & !low_mask(lo)
}

/// A multi-bit field of a register, named by `(lowest bit, width)` as the specification draws
/// it: the accessors of registers read and written as one value (VT-d CCMD, IOTLB_REG, FSTS,
/// ...), which are not `words` layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub lo: u32,
    pub width: u32,
}

impl Field {
    pub const fn new(lo: u32, width: u32) -> Self {
        Self { lo, width }
    }

    /// The field's value in `word`, shifted down to bit 0.
    #[inline(always)]
    pub const fn get(self, word: u64) -> u64 {
        get(word, self.lo, self.width)
    }

    /// `word` with this field replaced by `value`.
    #[inline(always)]
    pub const fn with(self, word: u64, value: u64) -> u64 {
        with(word, self.lo, self.width, value)
    }

    /// `value` in the field's position, every other bit clear.
    #[inline(always)]
    pub const fn place(self, value: u64) -> u64 {
        with(0, self.lo, self.width, value)
    }

    /// The field's bits in place.
    #[inline(always)]
    pub const fn mask(self) -> u64 {
        low_mask(self.width) << self.lo
    }
}

/// Reserved bits found set in a layout: the first word holding any, and which of its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedBitsSet {
    pub word: usize,
    pub bits: u64,
}

/// A layout of 64-bit words whose reserved bits are declared (by [`reserved_bits!`](crate::reserved_bits)).
pub trait Layout {
    /// Per word, the bits the specification reserves.
    const RESERVED: &'static [u64];

    /// The layout's words, as hardware reads them.
    fn layout_words(&self) -> &[u64];

    /// The first word with reserved bits set, or `None` when the layout is clean.
    fn reserved_bits_set(&self) -> Option<ReservedBitsSet> {
        self.layout_words()
            .iter()
            .zip(Self::RESERVED)
            .enumerate()
            .find(|(_, (&value, &reserved))| value & reserved != 0)
            .map(|(word, (&value, &reserved))| ReservedBitsSet { word, bits: value & reserved })
    }
}

/// Generates a named getter and chaining setter for each numeric field of a `words: [u64; N]`
/// layout: `name, set_name: word W, bits LO, width N;`.
#[macro_export]
macro_rules! numeric_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bits $lo:literal, width $width:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> u64 {
                $crate::bits::get(self.words[$w], $lo, $width)
            }
            $(#[$doc])*
            pub fn $set(&mut self, value: u64) -> &mut Self {
                self.words[$w] = $crate::bits::with(self.words[$w], $lo, $width, value);
                self
            }
        )*
    };
}

/// Like [`numeric_fields!`](crate::numeric_fields) for single-bit flags, as `bool`.
#[macro_export]
macro_rules! flag_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bit $bit:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> bool {
                $crate::bits::get(self.words[$w], $bit, 1) == 1
            }
            $(#[$doc])*
            pub fn $set(&mut self, value: bool) -> &mut Self {
                self.words[$w] = $crate::bits::with(self.words[$w], $bit, 1, value as u64);
                self
            }
        )*
    };
}

/// Address fields stored unshifted in bits `[hi:lo]` of a word; the low bits of the address must
/// be zero (the field's alignment).
#[macro_export]
macro_rules! address_fields {
    ($( $(#[$doc:meta])* $get:ident, $set:ident: word $w:literal, bits $hi:literal : $lo:literal; )*) => {
        $(
            $(#[$doc])*
            pub const fn $get(&self) -> u64 {
                self.words[$w] & $crate::bits::addr_mask($lo, $hi)
            }
            $(#[$doc])*
            pub fn $set(&mut self, address: u64) -> &mut Self {
                let mask = $crate::bits::addr_mask($lo, $hi);
                debug_assert!(address & !mask == 0, "address misaligned or too wide for its field");
                self.words[$w] = (self.words[$w] & !mask) | (address & mask);
                self
            }
        )*
    };
}

/// Declares the reserved bits of a `words: [u64; N]` layout, one line per reserved range as
/// the specification draws it (`word W, bits HI:LO;`), and implements
/// [`Layout`](crate::bits::Layout) from them.
#[macro_export]
macro_rules! reserved_bits {
    ($layout:ty, words $n:literal: $( $(#[$doc:meta])* word $w:literal, bits $hi:literal : $lo:literal; )*) => {
        impl $crate::bits::Layout for $layout {
            const RESERVED: &'static [u64] = &{
                let mut reserved = [0u64; $n];
                $(
                    $(#[$doc])*
                    {
                        reserved[$w] |= $crate::bits::addr_mask($lo, $hi);
                    }
                )*
                reserved
            };
            fn layout_words(&self) -> &[u64] {
                &self.words
            }
        }
    };
}

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
        assert_eq!(low_mask(64), u64::MAX);
    }

    #[test]
    fn register_fields_read_and_replace_only_their_bits() {
        let granularity = Field::new(61, 2);
        assert_eq!(granularity.mask(), 0x6000_0000_0000_0000);
        assert_eq!(granularity.place(0b10), 0x4000_0000_0000_0000);
        let word = granularity.with(u64::MAX, 0b01);
        assert_eq!(word, 0xBFFF_FFFF_FFFF_FFFF);
        assert_eq!(granularity.get(word), 0b01);
        assert_eq!(Field::new(0, 64).get(word), word);
    }

    /// A two-word layout in the style of a real one: V at word 0 bit 0, a 4-bit TYPE at 4:1,
    /// bits 11:5 reserved, an address in 51:12, bits 63:52 reserved; word 1 a 16-bit ID at
    /// 15:0 and everything above reserved.
    #[derive(Default)]
    struct Entry {
        words: [u64; 2],
    }

    impl Entry {
        crate::flag_fields! {
            valid, set_valid: word 0, bit 0;
        }
        crate::numeric_fields! {
            kind, set_kind: word 0, bits 1, width 4;
            id, set_id: word 1, bits 0, width 16;
        }
        crate::address_fields! {
            address, set_address: word 0, bits 51:12;
        }
    }

    crate::reserved_bits! {
        Entry, words 2:
        word 0, bits 11:5;
        word 0, bits 63:52;
        word 1, bits 63:16;
    }

    #[test]
    fn reserved_masks_are_the_declared_ranges() {
        assert_eq!(Entry::RESERVED, &[0xFFF0_0000_0000_0FE0, 0xFFFF_FFFF_FFFF_0000]);
    }

    #[test]
    fn every_field_at_its_widest_leaves_the_reserved_bits_clear() {
        let mut entry = Entry::default();
        entry.set_valid(true).set_kind(0xF).set_id(0xFFFF).set_address(addr_mask(12, 51));
        assert_eq!(entry.reserved_bits_set(), None);
        assert!(entry.valid());
        assert_eq!((entry.kind(), entry.id(), entry.address()), (0xF, 0xFFFF, addr_mask(12, 51)));
    }

    #[test]
    fn a_reserved_bit_set_by_hand_is_reported_with_its_word() {
        let mut entry = Entry::default();
        entry.set_valid(true);
        entry.words[1] |= 1 << 40;
        assert_eq!(entry.reserved_bits_set(), Some(ReservedBitsSet { word: 1, bits: 1 << 40 }));
        entry.words[0] |= 1 << 5;
        assert_eq!(entry.reserved_bits_set(), Some(ReservedBitsSet { word: 0, bits: 1 << 5 }));
    }
}
