//! Argument codecs: for one field of a request, the argument words and flag bits it claims,
//! the rights a handle in it needs, and how its value is written and checked. The operation
//! table names one codec per field; every word and flag bit no field of the operation claims
//! must be zero.

use super::{IovaChoice, MapFlags, Message, RangeList, DIRTY_BITMAP_MAX_PAGES, MSI_MAX, PASID_MAX, RANGES_PER_MESSAGE};
use crate::error::Error;
use crate::types::{Handle, IovaRange, PageResponseCode, Perm, Rights, Stage1Config, Stage1Format, PAGE_SIZE};

/// What one argument claims of a request message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The argument words it occupies: bit `i` set for word `i` (1..8).
    pub words: u8,
    /// The flag bits (request word 0, bits 16..32, shifted down) it owns.
    pub flags: u16,
}

impl Claim {
    /// Nothing claimed.
    pub const NONE: Claim = Claim { words: 0, flags: 0 };

    const fn word(at: usize) -> Claim {
        Claim { words: 1 << at, flags: 0 }
    }

    const fn flag(bits: u16) -> Claim {
        Claim { words: 0, flags: bits }
    }

    /// What `self` and `other` claim together.
    pub const fn and(self, other: Claim) -> Claim {
        Claim { words: self.words | other.words, flags: self.flags | other.flags }
    }
}

/// The coding of one request argument.
pub(super) trait Arg {
    /// The decoded value.
    type Value;
    /// The words and flag bits the argument occupies.
    fn claim(&self) -> Claim;
    /// For a handle, the rights it needs (empty: any holder may use it); `None` for an
    /// argument that is no handle.
    fn rights(&self) -> Option<Rights> {
        None
    }
    /// Write `value` into `msg` and `flags` (encoding never fails: a value the protocol
    /// cannot carry is written as given and refused by `get`).
    fn put(&self, value: Self::Value, msg: &mut Message, flags: &mut u16);
    /// Read and check the value.
    fn get(&self, msg: &Message, flags: u16) -> Result<Self::Value, Error>;
}

/// A whole word, any value.
#[derive(Clone, Copy)]
pub(super) struct Word(pub usize);

/// A handle in the low half of word `.0`, which needs the rights `.1`.
#[derive(Clone, Copy)]
pub(super) struct HandleWord(pub usize, pub Rights);

/// A handle in a word that is present when the flag bit `valid` is set (the word is zero
/// otherwise).
#[derive(Clone, Copy)]
pub(super) struct HandleIf {
    pub at: usize,
    pub valid: u16,
    pub rights: Rights,
}

/// A 20-bit PASID.
#[derive(Clone, Copy)]
pub(super) struct PasidWord(pub usize);

/// A PASID present when the flag bit `valid` is set (the word is zero otherwise).
#[derive(Clone, Copy)]
pub(super) struct PasidIf {
    pub at: usize,
    pub valid: u16,
}

/// A 32-bit value in the low half of a word.
#[derive(Clone, Copy)]
pub(super) struct U32Word(pub usize);

/// A flag bit: set means true.
#[derive(Clone, Copy)]
pub(super) struct Flag(pub u16);

/// A flag bit: set means false (the default, clear, is true).
#[derive(Clone, Copy)]
pub(super) struct FlagClear(pub u16);

/// An IOVA word used only with [`MapFlags::FIXED_IOVA`] (zero otherwise: the server picks).
#[derive(Clone, Copy)]
pub(super) struct FixedIova(pub usize);

/// The [`MapFlags::READ`] and [`MapFlags::WRITE`] flag bits.
#[derive(Clone, Copy)]
pub(super) struct MapPerm;

/// Up to [`RANGES_PER_MESSAGE`] `(start, last)` pairs from word `.0` on; the flags hold the
/// number of pairs (all 16 bits: a larger count is `TooManyRanges`, not a reserved bit).
#[derive(Clone, Copy)]
pub(super) struct Ranges(pub usize);

/// A stage-1 configuration in three words: format, table root, and bits 0..8 address width,
/// 8..16 log2 table entries.
#[derive(Clone, Copy)]
pub(super) struct Stage1(pub usize);

/// A page-response code.
#[derive(Clone, Copy)]
pub(super) struct ResponseCode(pub usize);

/// Rights bits in the low half of a word.
#[derive(Clone, Copy)]
pub(super) struct RightsWord(pub usize);

/// A number of MSIs: a power of two up to [`MSI_MAX`] (`InvalidRange` otherwise).
#[derive(Clone, Copy)]
pub(super) struct MsiCount(pub usize);

/// The page size of a dirty-bitmap query: a power of two of at least 4 KiB, small enough
/// that the length in word `length_at` fits the reply's bitmap.
#[derive(Clone, Copy)]
pub(super) struct DirtyPageSize {
    pub at: usize,
    pub length_at: usize,
}

fn handle_word(word: u64) -> Result<Handle, Error> {
    u32::try_from(word).map(Handle).map_err(|_| Error::ReservedBitsSet)
}

fn pasid_word(word: u64) -> Result<u32, Error> {
    match u32::try_from(word) {
        Ok(pasid) if pasid <= PASID_MAX => Ok(pasid),
        _ => Err(Error::PasidOutOfRange),
    }
}

fn u32_word(word: u64) -> Result<u32, Error> {
    u32::try_from(word).map_err(|_| Error::ReservedBitsSet)
}

/// A value present when `valid` is set in `flags`; its word must be zero otherwise.
fn present_if<T>(flags: u16, valid: u16, word: u64, get: impl FnOnce(u64) -> Result<T, Error>) -> Result<Option<T>, Error> {
    if flags & valid != 0 {
        get(word).map(Some)
    } else if word != 0 {
        Err(Error::ReservedBitsSet)
    } else {
        Ok(None)
    }
}

impl Arg for Word {
    type Value = u64;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: u64, msg: &mut Message, _: &mut u16) {
        msg[self.0] = value;
    }
    fn get(&self, msg: &Message, _: u16) -> Result<u64, Error> {
        Ok(msg[self.0])
    }
}

impl Arg for HandleWord {
    type Value = Handle;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn rights(&self) -> Option<Rights> {
        Some(self.1)
    }
    fn put(&self, value: Handle, msg: &mut Message, _: &mut u16) {
        msg[self.0] = u64::from(value.0);
    }
    fn get(&self, msg: &Message, _: u16) -> Result<Handle, Error> {
        handle_word(msg[self.0])
    }
}

impl Arg for HandleIf {
    type Value = Option<Handle>;
    fn claim(&self) -> Claim {
        Claim { words: 1 << self.at, flags: self.valid }
    }
    fn rights(&self) -> Option<Rights> {
        Some(self.rights)
    }
    fn put(&self, value: Option<Handle>, msg: &mut Message, flags: &mut u16) {
        if let Some(handle) = value {
            msg[self.at] = u64::from(handle.0);
            *flags |= self.valid;
        }
    }
    fn get(&self, msg: &Message, flags: u16) -> Result<Option<Handle>, Error> {
        present_if(flags, self.valid, msg[self.at], handle_word)
    }
}

impl Arg for PasidWord {
    type Value = u32;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: u32, msg: &mut Message, _: &mut u16) {
        msg[self.0] = u64::from(value);
    }
    fn get(&self, msg: &Message, _: u16) -> Result<u32, Error> {
        pasid_word(msg[self.0])
    }
}

impl Arg for PasidIf {
    type Value = Option<u32>;
    fn claim(&self) -> Claim {
        Claim { words: 1 << self.at, flags: self.valid }
    }
    fn put(&self, value: Option<u32>, msg: &mut Message, flags: &mut u16) {
        if let Some(pasid) = value {
            msg[self.at] = u64::from(pasid);
            *flags |= self.valid;
        }
    }
    fn get(&self, msg: &Message, flags: u16) -> Result<Option<u32>, Error> {
        present_if(flags, self.valid, msg[self.at], pasid_word)
    }
}

impl Arg for U32Word {
    type Value = u32;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: u32, msg: &mut Message, _: &mut u16) {
        msg[self.0] = u64::from(value);
    }
    fn get(&self, msg: &Message, _: u16) -> Result<u32, Error> {
        u32_word(msg[self.0])
    }
}

impl Arg for Flag {
    type Value = bool;
    fn claim(&self) -> Claim {
        Claim::flag(self.0)
    }
    fn put(&self, value: bool, _: &mut Message, flags: &mut u16) {
        if value {
            *flags |= self.0;
        }
    }
    fn get(&self, _: &Message, flags: u16) -> Result<bool, Error> {
        Ok(flags & self.0 != 0)
    }
}

impl Arg for FlagClear {
    type Value = bool;
    fn claim(&self) -> Claim {
        Claim::flag(self.0)
    }
    fn put(&self, value: bool, _: &mut Message, flags: &mut u16) {
        if !value {
            *flags |= self.0;
        }
    }
    fn get(&self, _: &Message, flags: u16) -> Result<bool, Error> {
        Ok(flags & self.0 == 0)
    }
}

impl Arg for FixedIova {
    type Value = IovaChoice;
    fn claim(&self) -> Claim {
        Claim { flags: MapFlags::FIXED_IOVA.bits(), ..Claim::word(self.0) }
    }
    fn put(&self, value: IovaChoice, msg: &mut Message, flags: &mut u16) {
        if let IovaChoice::Fixed(iova) = value {
            msg[self.0] = iova;
            *flags |= MapFlags::FIXED_IOVA.bits();
        }
    }
    fn get(&self, msg: &Message, flags: u16) -> Result<IovaChoice, Error> {
        let fixed = present_if(flags, MapFlags::FIXED_IOVA.bits(), msg[self.0], Ok)?;
        Ok(fixed.map_or(IovaChoice::Auto, IovaChoice::Fixed))
    }
}

impl Arg for MapPerm {
    type Value = Perm;
    fn claim(&self) -> Claim {
        Claim::flag(MapFlags::READ.union(MapFlags::WRITE).bits())
    }
    fn put(&self, value: Perm, _: &mut Message, flags: &mut u16) {
        let mut bits = MapFlags::empty();
        bits.set(MapFlags::READ, value.read);
        bits.set(MapFlags::WRITE, value.write);
        *flags |= bits.bits();
    }
    fn get(&self, _: &Message, flags: u16) -> Result<Perm, Error> {
        let bits = MapFlags::from_bits_truncate(flags);
        Ok(Perm { read: bits.contains(MapFlags::READ), write: bits.contains(MapFlags::WRITE) })
    }
}

impl Arg for Ranges {
    type Value = RangeList;
    fn claim(&self) -> Claim {
        let words = ((1u16 << (2 * RANGES_PER_MESSAGE)) - 1) << self.0;
        Claim { words: words as u8, flags: u16::MAX }
    }
    fn put(&self, value: RangeList, msg: &mut Message, flags: &mut u16) {
        for (index, range) in value.as_slice().iter().enumerate() {
            msg[self.0 + 2 * index] = range.start;
            msg[self.0 + 2 * index + 1] = range.last;
        }
        *flags |= u16::from(value.len);
    }
    fn get(&self, msg: &Message, flags: u16) -> Result<RangeList, Error> {
        let count = usize::from(flags);
        if count > RANGES_PER_MESSAGE {
            return Err(Error::TooManyRanges);
        }
        let (pairs, unused) = msg[self.0..self.0 + 2 * RANGES_PER_MESSAGE].split_at(2 * count);
        if unused.iter().any(|&word| word != 0) {
            return Err(Error::ReservedBitsSet);
        }
        let mut ranges = [IovaRange::ALL; RANGES_PER_MESSAGE];
        for (range, pair) in ranges.iter_mut().zip(pairs.chunks_exact(2)) {
            *range = IovaRange::new(pair[0], pair[1])?;
        }
        RangeList::new(&ranges[..count])
    }
}

/// Stage-1 word 3: bits 0..8 address width, 8..16 log2 table entries, the rest reserved.
const STAGE1_ENTRIES_SHIFT: u32 = 8;
const STAGE1_GEOMETRY_RESERVED: u64 = !0xffff;

impl Arg for Stage1 {
    type Value = Stage1Config;
    fn claim(&self) -> Claim {
        Claim { words: 0b111 << self.0, flags: 0 }
    }
    fn put(&self, value: Stage1Config, msg: &mut Message, _: &mut u16) {
        msg[self.0] = value.format as u64;
        msg[self.0 + 1] = value.table_root;
        msg[self.0 + 2] = u64::from(value.address_width) | (u64::from(value.table_entries_log2) << STAGE1_ENTRIES_SHIFT);
    }
    fn get(&self, msg: &Message, _: u16) -> Result<Stage1Config, Error> {
        let geometry = msg[self.0 + 2];
        if geometry & STAGE1_GEOMETRY_RESERVED != 0 {
            return Err(Error::ReservedBitsSet);
        }
        Ok(Stage1Config {
            format: Stage1Format::from_u64(msg[self.0])?,
            table_root: msg[self.0 + 1],
            address_width: geometry as u8,
            table_entries_log2: (geometry >> STAGE1_ENTRIES_SHIFT) as u8,
        })
    }
}

impl Arg for ResponseCode {
    type Value = PageResponseCode;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: PageResponseCode, msg: &mut Message, _: &mut u16) {
        msg[self.0] = value as u64;
    }
    fn get(&self, msg: &Message, _: u16) -> Result<PageResponseCode, Error> {
        PageResponseCode::from_u64(msg[self.0])
    }
}

impl Arg for RightsWord {
    type Value = Rights;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: Rights, msg: &mut Message, _: &mut u16) {
        msg[self.0] = u64::from(value.bits());
    }
    fn get(&self, msg: &Message, _: u16) -> Result<Rights, Error> {
        Rights::from_bits(u32_word(msg[self.0])?).ok_or(Error::ReservedBitsSet)
    }
}

impl Arg for MsiCount {
    type Value = u32;
    fn claim(&self) -> Claim {
        Claim::word(self.0)
    }
    fn put(&self, value: u32, msg: &mut Message, _: &mut u16) {
        msg[self.0] = u64::from(value);
    }
    fn get(&self, msg: &Message, _: u16) -> Result<u32, Error> {
        match u32::try_from(msg[self.0]) {
            Ok(count) if count.is_power_of_two() && count <= MSI_MAX => Ok(count),
            _ => Err(Error::InvalidRange),
        }
    }
}

impl Arg for DirtyPageSize {
    type Value = u64;
    fn claim(&self) -> Claim {
        Claim::word(self.at)
    }
    fn put(&self, value: u64, msg: &mut Message, _: &mut u16) {
        msg[self.at] = value;
    }
    fn get(&self, msg: &Message, _: u16) -> Result<u64, Error> {
        let page_size = msg[self.at];
        if !page_size.is_power_of_two() || page_size < PAGE_SIZE {
            return Err(Error::InvalidPageSize);
        }
        if msg[self.length_at].div_ceil(page_size) > DIRTY_BITMAP_MAX_PAGES {
            return Err(Error::BitmapTooLarge);
        }
        Ok(page_size)
    }
}

