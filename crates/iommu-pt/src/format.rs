//! The seam between the generic radix-tree engine and one hardware entry format.
//!
//! Heights, not levels: every format here is a radix tree of 4 KiB tables holding 512 64-bit
//! entries, so the engine numbers tables by *height* above the leaf level. An entry in a table of
//! height `h` maps (or points at a table covering) `4 KiB << (9 * h)` bytes:
//!
//! | height | one entry covers | VT-d name (level)      | x86-64 paging | VMSAv8-64 lookup level |
//! |--------|------------------|------------------------|---------------|------------------------|
//! | 0      | 4 KiB            | SL-PTE / FL-PTE (1)    | PTE           | 3                      |
//! | 1      | 2 MiB            | SL-PDE / FL-PDE (2)    | PDE           | 2                      |
//! | 2      | 1 GiB            | SL-PDPE / FL-PDPE (3)  | PDPTE         | 1                      |
//! | 3      | 512 GiB          | SL-PML4E / FL-PML4E (4)| PML4E         | 0                      |
//! | 4      | 256 TiB          | SL-PML5E / FL-PML5E (5)| PML5E         | -1 (LPA2 only)         |

use crate::{Error, Perm, ENTRIES_PER_TABLE_SHIFT, PAGE_SHIFT};

/// The greatest height a table tree may have: five-level paging (VT-d 5-level, x86 LA57).
pub const MAX_TOP_HEIGHT: u8 = 4;

/// Bytes one entry of a table at `height` covers.
pub const fn page_size(height: u8) -> u64 {
    1u64 << page_shift(height)
}

/// log2 of [`page_size`].
pub const fn page_shift(height: u8) -> u32 {
    PAGE_SHIFT + ENTRIES_PER_TABLE_SHIFT * height as u32
}

/// Shape of one tree: how tall it is and how many input-address bits it translates.
///
/// The root table has `2^(input_bits - page_shift(top_height))` entries. That is at most 512 for
/// an ordinary root, fewer when the input range does not fill the top level (VMSA T0SZ between
/// two levels, x86 first-level paging limited to the lower canonical half), and up to 16 x 512
/// for a VMSA stage-2 concatenated starting table (Arm ARM D8.2.7, "Concatenated translation
/// tables for the initial lookup").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    top_height: u8,
    input_bits: u8,
}

impl Geometry {
    /// A tree whose root is at `top_height` translating `input_bits` of address.
    /// `max_root_tables` is 1, or up to 16 for formats that allow concatenated root tables.
    pub fn new(top_height: u8, input_bits: u8, max_root_tables: usize) -> Result<Self, Error> {
        if top_height > MAX_TOP_HEIGHT || max_root_tables == 0 || !max_root_tables.is_power_of_two() {
            return Err(Error::InvalidConfig);
        }
        let lowest = page_shift(top_height);
        let highest = page_shift(top_height + 1) + max_root_tables.trailing_zeros();
        let bits = u32::from(input_bits);
        if bits <= lowest || bits > highest || bits > 57 {
            return Err(Error::InvalidConfig);
        }
        Ok(Self { top_height, input_bits })
    }

    /// Height of the root table.
    pub const fn top_height(&self) -> u8 {
        self.top_height
    }

    /// Number of table levels a walk visits (`top_height + 1`).
    pub const fn levels(&self) -> u8 {
        self.top_height + 1
    }

    /// Width of the input (IOVA / IPA) space in bits.
    pub const fn input_bits(&self) -> u8 {
        self.input_bits
    }

    /// Entries in the root table (a power of two, possibly above 512 when concatenated).
    pub const fn root_entries(&self) -> usize {
        1usize << (self.input_bits as u32 - page_shift(self.top_height))
    }

    /// One past the highest translatable input address.
    pub const fn input_limit(&self) -> u64 {
        1u64 << self.input_bits
    }
}

/// Which large leaves (besides 4 KiB pages) a configuration enables.
///
/// 1 GiB leaves require 2 MiB leaves: splitting a 1 GiB leaf must be able to produce 2 MiB ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LargePages {
    /// 2 MiB leaves (height 1).
    pub two_mib: bool,
    /// 1 GiB leaves (height 2).
    pub one_gib: bool,
}

impl LargePages {
    /// Only 4 KiB pages.
    pub const NONE: LargePages = LargePages { two_mib: false, one_gib: false };
    /// 2 MiB and 1 GiB leaves.
    pub const ALL: LargePages = LargePages { two_mib: true, one_gib: true };

    /// Whether a leaf may sit at `height` (4 KiB pages always may).
    pub const fn allows(self, height: u8) -> bool {
        match height {
            0 => true,
            1 => self.two_mib,
            2 => self.one_gib,
            _ => false,
        }
    }

    /// Whether the set is usable (no 1 GiB without 2 MiB).
    pub const fn is_consistent(self) -> bool {
        self.two_mib || !self.one_gib
    }
}

/// What one raw entry means, as the engine needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Not present: a walk through it faults.
    Absent,
    /// Points at the next table down, at physical address `phys`.
    Table { phys: u64 },
    /// Maps `page_size(height)` bytes at `phys`. `attributes` is the raw entry without its address
    /// and without the bits that only encode the size/type (PS, VMSA block-vs-page), so a leaf can
    /// be re-encoded at another height with the same permissions, memory type and dirty state.
    Leaf { phys: u64, attributes: u64 },
}

/// How a format records that a device wrote through a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyScheme {
    /// The walker sets `dirty` on the first write: VT-d first-level D (bit 6), VT-d second-level
    /// D (bit 9, with SSADE). Cleaning clears `cleared`, which holds `dirty` and may hold the
    /// accessed bit too (see `vtd_first_level`).
    SetOnWrite { dirty: u64, cleared: u64 },
    /// Armv8.1 hardware dirty-state management (Arm ARM D8.4.6, SMMUv3 §3.13.3 HTTU): an entry
    /// with DBM set is "writable-clean" while `read_only` (AP[2]) is set; the walker clears
    /// `read_only` on the first write. Cleaning sets `read_only` again; entries without DBM are
    /// never dirty.
    ClearsReadOnlyOnWrite { read_only: u64, dbm: u64 },
}

impl DirtyScheme {
    /// Whether `raw` (a leaf) records a write.
    pub const fn is_dirty(self, raw: u64) -> bool {
        match self {
            DirtyScheme::SetOnWrite { dirty, .. } => raw & dirty != 0,
            DirtyScheme::ClearsReadOnlyOnWrite { read_only, dbm } => raw & dbm != 0 && raw & read_only == 0,
        }
    }
}

/// One hardware translation-table entry format.
///
/// The format value carries the caller's configuration (levels, enabled page sizes, memory
/// attributes), so one `PageTable<F>` type serves every configuration of one format.
///
/// Contract the engine relies on (checked by `PageTable::new` where it can be):
/// - `leaf_allowed(0)` holds, and `leaf_allowed(h)` implies `leaf_allowed(h - 1)`, so a large
///   leaf can always be split into leaves one height down.
/// - `decode(encode_table(p), h)` is `Table { phys: p }` for `h >= 1`, and
///   `decode(encode_leaf(a, p, h), h)` is `Leaf { phys: p, attributes: a }`.
/// - An all-zero entry decodes as `Absent`.
pub trait Format {
    /// Shape of the tree.
    fn geometry(&self) -> Geometry;
    /// Whether leaves (pages or blocks) may be placed in tables of `height`.
    fn leaf_allowed(&self, height: u8) -> bool;
    /// Width of output (physical) addresses the format and configuration can express.
    fn output_bits(&self) -> u8;
    /// Attribute bits of a newly mapped leaf with `perm`, or `UnsupportedPermission`.
    fn leaf_attributes(&self, perm: Perm) -> Result<u64, Error>;
    /// A leaf at `height` mapping `phys` (aligned to `page_size(height)`) with `attributes`.
    fn encode_leaf(&self, attributes: u64, phys: u64, height: u8) -> u64;
    /// A non-leaf entry pointing at the table at `phys`.
    fn encode_table(&self, phys: u64) -> u64;
    /// Interprets an entry found in a table of `height`.
    fn decode(&self, raw: u64, height: u8) -> Decoded;
    /// Access rights a leaf with `attributes` grants.
    fn permissions(&self, attributes: u64) -> Perm;
    /// How leaves record device writes, when the configuration tracks them.
    fn dirty_scheme(&self) -> Option<DirtyScheme>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_per_height() {
        assert_eq!(page_size(0), 4096);
        assert_eq!(page_size(1), 2 << 20);
        assert_eq!(page_size(2), 1 << 30);
        assert_eq!(page_size(3), 512 << 30);
    }

    #[test]
    fn geometry_root_entries_and_limits() {
        let four_level = Geometry::new(3, 48, 1).unwrap();
        assert_eq!(four_level.root_entries(), 512);
        assert_eq!(four_level.levels(), 4);
        assert_eq!(four_level.input_limit(), 1 << 48);
        // x86 lower canonical half: 47 bits at 4 levels uses half the PML4.
        assert_eq!(Geometry::new(3, 47, 1).unwrap().root_entries(), 256);
        // VMSA stage 2, 40-bit IPA starting at level 1: two concatenated tables.
        assert_eq!(Geometry::new(2, 40, 16).unwrap().root_entries(), 1024);
        assert_eq!(Geometry::new(2, 40, 1), Err(Error::InvalidConfig));
        // Too small for the height (a 39-bit space needs only 3 levels).
        assert_eq!(Geometry::new(3, 39, 1), Err(Error::InvalidConfig));
        assert_eq!(Geometry::new(5, 60, 1), Err(Error::InvalidConfig));
        assert_eq!(Geometry::new(2, 39, 3), Err(Error::InvalidConfig));
    }

    #[test]
    fn dbm_dirty_means_writable_and_read_only_clear() {
        let scheme = DirtyScheme::ClearsReadOnlyOnWrite { read_only: 1 << 7, dbm: 1 << 51 };
        assert!(scheme.is_dirty(1 << 51));
        assert!(!scheme.is_dirty((1 << 51) | (1 << 7)));
        // Without DBM the entry is read-only or not tracked: never dirty.
        assert!(!scheme.is_dirty(0));
    }
}
