//! Intel VT-d second-level (second-stage) paging entries.
//!
//! Spec: Intel VT-d Architecture Specification §3.7 (second-stage translation) and §9.8 (format
//! of second-stage paging entries); capabilities in §11.4.2 (CAP_REG: SAGAW bits 12:8, SLLPS bits
//! 37:34).
//!
//! An entry is present when R or W is set; non-leaf entries carry R and W (and X when execute
//! requests are in use) so that only the leaf decides the access rights. Large leaves (2 MiB in an
//! SL-PDE, 1 GiB in an SL-PDPE) set PS (bit 7). SNP (bit 11) is set on leaves only when the caller
//! asks: it is reserved unless ECAP.SC = 1 (QEMU treats it as reserved unless snoop control is
//! enabled). A/D (bits 8/9) are written by hardware only with second-stage A/D enabled (SSADE).

use crate::format::{Decoded, DirtyScheme, Format, Geometry, LargePages};
use crate::{Error, Perm};
use hwio::bits::{addr_mask, get};

/// One second-level paging entry (VT-d §9.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct SecondLevelEntry(pub u64);
const _: () = assert!(core::mem::size_of::<SecondLevelEntry>() == 8);

impl SecondLevelEntry {
    /// R, bit 0: reads allowed (with W, presence).
    pub const READ: u64 = 1 << 0;
    /// W, bit 1: writes allowed.
    pub const WRITE: u64 = 1 << 1;
    /// X, bit 2: execute requests allowed (only with execute requests enabled).
    pub const EXECUTE: u64 = 1 << 2;
    /// PS, bit 7: this SL-PDE / SL-PDPE is a 2 MiB / 1 GiB leaf.
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// A, bit 8: accessed (hardware-set with SSADE).
    pub const ACCESSED: u64 = 1 << 8;
    /// D, bit 9: dirty (hardware-set on write with SSADE).
    pub const DIRTY: u64 = 1 << 9;
    /// SNP, bit 11: force snooping (ECAP.SC).
    pub const SNOOP: u64 = 1 << 11;
    /// ADDR, bits 51:12: next table or page frame.
    pub const ADDRESS: u64 = addr_mask(12, 51);

    pub const fn read(self) -> bool {
        self.0 & Self::READ != 0
    }
    pub const fn write(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    pub const fn execute(self) -> bool {
        self.0 & Self::EXECUTE != 0
    }
    pub const fn page_size(self) -> bool {
        self.0 & Self::PAGE_SIZE != 0
    }
    pub const fn accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }
    pub const fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }
    pub const fn snoop(self) -> bool {
        self.0 & Self::SNOOP != 0
    }
    #[inline(always)]
    pub const fn address(self) -> u64 {
        self.0 & Self::ADDRESS
    }
    /// Present: R or W set.
    pub const fn present(self) -> bool {
        self.read() || self.write()
    }
}

impl LargePages {
    /// The large leaves CAP_REG.SLLPS (bits 37:34; its bit 0 = 2 MiB, bit 1 = 1 GiB) advertises.
    pub const fn from_vtd_cap(cap: u64) -> LargePages {
        let sllps = get(cap, 34, 4);
        LargePages { two_mib: sllps & 0b01 != 0, one_gib: sllps & 0b10 != 0 }
    }
}

/// The caller's choices for a second-level table, all derived from the unit's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondLevelConfig {
    /// 3, 4 or 5 levels: an AGAW the unit supports (CAP_REG.SAGAW).
    pub levels: u8,
    /// Input (IOVA) bits translated: 39 / 48 / 57 for 3 / 4 / 5 levels, or fewer (CAP.MGAW).
    pub address_width: u8,
    /// Output (host physical) address bits, at most 52.
    pub output_bits: u8,
    /// Large leaves to use; at most what CAP_REG.SLLPS allows ([`LargePages::from_vtd_cap`]).
    pub large_pages: LargePages,
    /// Execute requests are enabled: honour [`Perm::EXECUTE`] through the X bit.
    pub execute_requests: bool,
    /// Set SNP in leaves (needs ECAP.SC).
    pub snoop: bool,
    /// Hardware records writes in D (second-stage A/D, SSADE in the PASID entry).
    pub dirty_tracking: bool,
}

impl SecondLevelConfig {
    /// `levels` levels covering their full width, 4 KiB pages only, no X / SNP / dirty.
    pub const fn basic(levels: u8, output_bits: u8) -> Self {
        Self {
            levels,
            address_width: 12 + 9 * levels,
            output_bits,
            large_pages: LargePages::NONE,
            execute_requests: false,
            snoop: false,
            dirty_tracking: false,
        }
    }
}

/// The VT-d second-level format with a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdSecondLevel {
    config: SecondLevelConfig,
    geometry: Geometry,
}

impl VtdSecondLevel {
    pub fn new(config: SecondLevelConfig) -> Result<Self, Error> {
        if !(3..=5).contains(&config.levels) || !config.large_pages.is_consistent() || config.output_bits > 52 {
            return Err(Error::InvalidConfig);
        }
        let geometry = Geometry::new(config.levels - 1, config.address_width, 1)?;
        Ok(Self { config, geometry })
    }

    pub fn config(&self) -> &SecondLevelConfig {
        &self.config
    }

    /// The context / PASID-entry AW (address width) encoding of this table's depth: 1 = 3-level
    /// (39-bit), 2 = 4-level (48-bit), 3 = 5-level (57-bit) (VT-d §9.3 / §9.6).
    pub fn agaw_encoding(&self) -> u8 {
        self.config.levels - 2
    }
}

impl Format for VtdSecondLevel {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn leaf_allowed(&self, height: u8) -> bool {
        self.config.large_pages.allows(height)
    }

    fn output_bits(&self) -> u8 {
        self.config.output_bits
    }

    fn leaf_attributes(&self, perm: Perm) -> Result<u64, Error> {
        let readable_or_writable = perm.contains(Perm::READ) || perm.contains(Perm::WRITE);
        // No memory types in VT-d tables: device memory cannot be asked for.
        if !readable_or_writable || perm.contains(Perm::DEVICE) || (perm.contains(Perm::EXECUTE) && !self.config.execute_requests) {
            return Err(Error::UnsupportedPermission);
        }
        let mut bits = 0;
        if perm.contains(Perm::READ) {
            bits |= SecondLevelEntry::READ;
        }
        if perm.contains(Perm::WRITE) {
            bits |= SecondLevelEntry::WRITE;
        }
        if perm.contains(Perm::EXECUTE) {
            bits |= SecondLevelEntry::EXECUTE;
        }
        if self.config.snoop {
            bits |= SecondLevelEntry::SNOOP;
        }
        Ok(bits)
    }

    fn encode_leaf(&self, attributes: u64, phys: u64, height: u8) -> u64 {
        let size = if height > 0 { SecondLevelEntry::PAGE_SIZE } else { 0 };
        attributes | size | (phys & SecondLevelEntry::ADDRESS)
    }

    fn encode_table(&self, phys: u64) -> u64 {
        let execute = if self.config.execute_requests { SecondLevelEntry::EXECUTE } else { 0 };
        (phys & SecondLevelEntry::ADDRESS) | SecondLevelEntry::READ | SecondLevelEntry::WRITE | execute
    }

    fn decode(&self, raw: u64, height: u8) -> Decoded {
        let entry = SecondLevelEntry(raw);
        if !entry.present() {
            Decoded::Absent
        } else if height > 0 && !entry.page_size() {
            Decoded::Table { phys: entry.address() }
        } else {
            let attributes = raw & !(SecondLevelEntry::ADDRESS | SecondLevelEntry::PAGE_SIZE);
            Decoded::Leaf { phys: entry.address(), attributes }
        }
    }

    fn permissions(&self, attributes: u64) -> Perm {
        let entry = SecondLevelEntry(attributes);
        let mut perm = Perm::NONE;
        if entry.read() {
            perm = perm | Perm::READ;
        }
        if entry.write() {
            perm = perm | Perm::WRITE;
        }
        if entry.execute() {
            perm = perm | Perm::EXECUTE;
        }
        perm
    }

    fn dirty_scheme(&self) -> Option<DirtyScheme> {
        self.config.dirty_tracking.then_some(DirtyScheme::SetOnWrite { dirty: SecondLevelEntry::DIRTY, cleared: SecondLevelEntry::DIRTY })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(large_pages: LargePages, execute_requests: bool, snoop: bool) -> VtdSecondLevel {
        let config = SecondLevelConfig { large_pages, execute_requests, snoop, ..SecondLevelConfig::basic(4, 46) };
        VtdSecondLevel::new(config).unwrap()
    }

    #[test]
    fn leaf_and_table_bits() {
        let plain = format(LargePages::ALL, false, false);
        let rw = plain.leaf_attributes(Perm::READ_WRITE).unwrap();
        assert_eq!(plain.encode_leaf(rw, 0x1234_5000, 0), 0x1234_5003);
        let read_only = plain.leaf_attributes(Perm::READ).unwrap();
        assert_eq!(plain.encode_leaf(read_only, 0x4000_0000, 1), 0x4000_0081);
        assert_eq!(plain.encode_table(0x1_0000_2000), 0x1_0000_2003);
        let full = format(LargePages::ALL, true, true);
        let rwx = full.leaf_attributes(Perm::READ_WRITE | Perm::EXECUTE).unwrap();
        assert_eq!(full.encode_leaf(rwx, 0x8000_0000, 2), 0x8000_0887);
        assert_eq!(full.encode_table(0x2000), 0x2007);
    }

    #[test]
    fn decode_round_trips_and_strips_size_bit() {
        let f = format(LargePages::ALL, false, true);
        let attributes = f.leaf_attributes(Perm::WRITE).unwrap();
        let raw = f.encode_leaf(attributes, 0x20_0000, 1);
        assert_eq!(f.decode(raw, 1), Decoded::Leaf { phys: 0x20_0000, attributes });
        assert_eq!(f.decode(f.encode_table(0x5000), 3), Decoded::Table { phys: 0x5000 });
        assert_eq!(f.decode(0, 2), Decoded::Absent);
        // X alone is not present (present = R | W).
        assert_eq!(f.decode(0x5000 | SecondLevelEntry::EXECUTE, 0), Decoded::Absent);
        assert_eq!(f.permissions(attributes), Perm::WRITE);
    }

    #[test]
    fn permissions_the_configuration_cannot_express_are_refused() {
        let f = format(LargePages::NONE, false, false);
        assert_eq!(f.leaf_attributes(Perm::READ | Perm::EXECUTE), Err(Error::UnsupportedPermission));
        assert_eq!(f.leaf_attributes(Perm::EXECUTE), Err(Error::UnsupportedPermission));
        assert_eq!(f.leaf_attributes(Perm::NONE), Err(Error::UnsupportedPermission));
    }

    #[test]
    fn configuration_checks() {
        assert_eq!(LargePages::from_vtd_cap(1 << 34), LargePages { two_mib: true, one_gib: false });
        assert_eq!(LargePages::from_vtd_cap(3 << 34), LargePages::ALL);
        let one_gib_only = LargePages { two_mib: false, one_gib: true };
        let bad = SecondLevelConfig { large_pages: one_gib_only, ..SecondLevelConfig::basic(4, 46) };
        assert_eq!(VtdSecondLevel::new(bad), Err(Error::InvalidConfig));
        assert_eq!(VtdSecondLevel::new(SecondLevelConfig::basic(6, 46)), Err(Error::InvalidConfig));
        let narrow = SecondLevelConfig { address_width: 40, ..SecondLevelConfig::basic(3, 46) };
        assert_eq!(VtdSecondLevel::new(narrow), Err(Error::InvalidConfig));
        let three = VtdSecondLevel::new(SecondLevelConfig::basic(3, 46)).unwrap();
        assert_eq!(three.geometry().input_bits(), 39);
        assert_eq!(three.agaw_encoding(), 1);
    }
}
