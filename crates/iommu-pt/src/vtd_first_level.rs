//! Intel VT-d first-level (first-stage) paging entries: the x86-64 4-level / 5-level format.
//!
//! Spec: Intel SDM Vol. 3A §4.5 (4-level and 5-level paging; entry formats in the tables of
//! §4.5.4/§4.5.5); VT-d §3.6 (first-stage translation) and §9.7 (first-stage paging entries);
//! CAP_REG.FS1GP (bit 56) for 1 GiB pages.
//!
//! Choices and why:
//! - U/S (bit 2) is set at every level: a device request is a user-mode access unless it is
//!   privileged, and QEMU reports fault 0x81 when any level has U/S clear.
//! - A (bit 5) is set at every level, and D (bit 6) on writable leaves unless dirty tracking is
//!   on, so the walker never needs an atomic update just to set them (QEMU updates A/D in
//!   memory). With dirty tracking, writable leaves start with A and D clear and the walker sets
//!   them; cleaning clears both. Clearing A costs nothing on hardware (nothing here reads it)
//!   and is needed on QEMU 10.0: its walker writes A and D in one update that it skips when the
//!   leaf has either already, so a write through a leaf with A set would never set D.
//! - XD (bit 63) is used only when execute requests are enabled; QEMU ignores bits 63:52.
//! - The IOVA space is the lower canonical half: 47 bits at 4 levels, 56 at 5 (the root uses
//!   256 of its 512 entries). QEMU implements 4 levels only.

use crate::format::{Decoded, DirtyScheme, Format, Geometry, LargePages};
use crate::{Error, Perm};
use hwio::bits::addr_mask;

/// One first-level paging entry (SDM Vol. 3A §4.5; VT-d §9.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct FirstLevelEntry(pub u64);
const _: () = assert!(core::mem::size_of::<FirstLevelEntry>() == 8);

impl FirstLevelEntry {
    /// P, bit 0.
    pub const PRESENT: u64 = 1 << 0;
    /// R/W, bit 1: writes allowed.
    pub const WRITABLE: u64 = 1 << 1;
    /// U/S, bit 2: user-mode (non-privileged) accesses allowed.
    pub const USER: u64 = 1 << 2;
    /// A, bit 5.
    pub const ACCESSED: u64 = 1 << 5;
    /// D, bit 6 (leaves).
    pub const DIRTY: u64 = 1 << 6;
    /// PS, bit 7 (PDE / PDPTE): 2 MiB / 1 GiB leaf. (In a PTE bit 7 is PAT, left 0.)
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// XD, bit 63: no execute.
    pub const EXECUTE_DISABLE: u64 = 1 << 63;
    /// Address, bits 51:12.
    pub const ADDRESS: u64 = addr_mask(12, 51);

    pub const fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    pub const fn writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }
    pub const fn user(self) -> bool {
        self.0 & Self::USER != 0
    }
    pub const fn accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }
    pub const fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }
    pub const fn page_size(self) -> bool {
        self.0 & Self::PAGE_SIZE != 0
    }
    pub const fn execute_disable(self) -> bool {
        self.0 & Self::EXECUTE_DISABLE != 0
    }
    #[inline(always)]
    pub const fn address(self) -> u64 {
        self.0 & Self::ADDRESS
    }
}

/// The caller's choices for a first-level table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstLevelConfig {
    /// 4, or 5 where the PASID entry selects 5-level paging (FLPM); QEMU supports 4.
    pub levels: u8,
    /// Output (host physical) address bits, at most 52.
    pub output_bits: u8,
    /// Use 1 GiB pages (CAP_REG.FS1GP). 2 MiB pages are always available.
    pub one_gib_pages: bool,
    /// Execute requests are enabled: leaves without [`Perm::EXECUTE`] get XD.
    pub execute_requests: bool,
    /// The walker records writes in D (leaves start clean).
    pub dirty_tracking: bool,
}

/// The VT-d first-level format with a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdFirstLevel {
    config: FirstLevelConfig,
    geometry: Geometry,
}

impl VtdFirstLevel {
    pub fn new(config: FirstLevelConfig) -> Result<Self, Error> {
        if !(4..=5).contains(&config.levels) || config.output_bits > 52 {
            return Err(Error::InvalidConfig);
        }
        // Lower canonical half: one bit less than the levels resolve.
        let geometry = Geometry::new(config.levels - 1, 12 + 9 * config.levels - 1, 1)?;
        Ok(Self { config, geometry })
    }

    pub fn config(&self) -> &FirstLevelConfig {
        &self.config
    }

    fn large_pages(&self) -> LargePages {
        LargePages { two_mib: true, one_gib: self.config.one_gib_pages }
    }
}

impl Format for VtdFirstLevel {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn leaf_allowed(&self, height: u8) -> bool {
        self.large_pages().allows(height)
    }

    fn output_bits(&self) -> u8 {
        self.config.output_bits
    }

    fn leaf_attributes(&self, perm: Perm) -> Result<u64, Error> {
        // Present implies readable: write-only and execute-only cannot be expressed.
        // No device memory type either (first-level PAT is left at write-back).
        if !perm.contains(Perm::READ) || perm.contains(Perm::DEVICE) || (perm.contains(Perm::EXECUTE) && !self.config.execute_requests) {
            return Err(Error::UnsupportedPermission);
        }
        let mut bits = FirstLevelEntry::PRESENT | FirstLevelEntry::USER;
        if perm.contains(Perm::WRITE) {
            bits |= FirstLevelEntry::WRITABLE;
            if !self.config.dirty_tracking {
                bits |= FirstLevelEntry::ACCESSED | FirstLevelEntry::DIRTY;
            }
        } else {
            bits |= FirstLevelEntry::ACCESSED;
        }
        if self.config.execute_requests && !perm.contains(Perm::EXECUTE) {
            bits |= FirstLevelEntry::EXECUTE_DISABLE;
        }
        Ok(bits)
    }

    fn encode_leaf(&self, attributes: u64, phys: u64, height: u8) -> u64 {
        let size = if height > 0 { FirstLevelEntry::PAGE_SIZE } else { 0 };
        attributes | size | (phys & FirstLevelEntry::ADDRESS)
    }

    fn encode_table(&self, phys: u64) -> u64 {
        (phys & FirstLevelEntry::ADDRESS)
            | FirstLevelEntry::PRESENT
            | FirstLevelEntry::WRITABLE
            | FirstLevelEntry::USER
            | FirstLevelEntry::ACCESSED
    }

    fn decode(&self, raw: u64, height: u8) -> Decoded {
        let entry = FirstLevelEntry(raw);
        if !entry.present() {
            Decoded::Absent
        } else if height > 0 && !entry.page_size() {
            Decoded::Table { phys: entry.address() }
        } else {
            let attributes = raw & !(FirstLevelEntry::ADDRESS | FirstLevelEntry::PAGE_SIZE);
            Decoded::Leaf { phys: entry.address(), attributes }
        }
    }

    fn permissions(&self, attributes: u64) -> Perm {
        let entry = FirstLevelEntry(attributes);
        let mut perm = Perm::READ;
        if entry.writable() {
            perm = perm | Perm::WRITE;
        }
        if self.config.execute_requests && !entry.execute_disable() {
            perm = perm | Perm::EXECUTE;
        }
        perm
    }

    fn dirty_scheme(&self) -> Option<DirtyScheme> {
        self.config.dirty_tracking.then_some(DirtyScheme::SetOnWrite {
            dirty: FirstLevelEntry::DIRTY,
            cleared: FirstLevelEntry::DIRTY | FirstLevelEntry::ACCESSED,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(execute_requests: bool, dirty_tracking: bool) -> VtdFirstLevel {
        VtdFirstLevel::new(FirstLevelConfig {
            levels: 4,
            output_bits: 46,
            one_gib_pages: true,
            execute_requests,
            dirty_tracking,
        })
        .unwrap()
    }

    #[test]
    fn leaf_and_table_bits() {
        let f = format(true, false);
        let rw = f.leaf_attributes(Perm::READ_WRITE).unwrap();
        assert_eq!(f.encode_leaf(rw, 0x1234_5000, 0), 0x8000_0000_1234_5067);
        let rx = f.leaf_attributes(Perm::READ | Perm::EXECUTE).unwrap();
        assert_eq!(f.encode_leaf(rx, 0x4000_0000, 2), 0x4000_00a5);
        assert_eq!(f.encode_table(0x7000), 0x7027);
        let tracking = format(false, true);
        let rw = tracking.leaf_attributes(Perm::READ_WRITE).unwrap();
        // PS, U/S, R/W, P: a writable leaf under tracking starts with A and D clear.
        assert_eq!(tracking.encode_leaf(rw, 0x20_0000, 1), 0x20_0087);
    }

    #[test]
    fn every_level_is_user_accessible() {
        let f = format(false, false);
        assert!(FirstLevelEntry(f.encode_table(0x1000)).user());
        let leaf = f.encode_leaf(f.leaf_attributes(Perm::READ).unwrap(), 0x1000, 0);
        assert!(FirstLevelEntry(leaf).user());
    }

    #[test]
    fn decode_and_permissions() {
        let f = format(true, true);
        let attributes = f.leaf_attributes(Perm::READ).unwrap();
        let raw = f.encode_leaf(attributes, 0x4000_0000, 2);
        assert_eq!(f.decode(raw, 2), Decoded::Leaf { phys: 0x4000_0000, attributes });
        assert_eq!(f.permissions(attributes), Perm::READ);
        assert_eq!(f.decode(f.encode_table(0x9000), 1), Decoded::Table { phys: 0x9000 });
        assert_eq!(f.decode(0x9000, 1), Decoded::Absent);
        assert_eq!(f.leaf_attributes(Perm::WRITE), Err(Error::UnsupportedPermission));
        assert_eq!(format(false, false).leaf_attributes(Perm::READ | Perm::EXECUTE), Err(Error::UnsupportedPermission));
    }

    #[test]
    fn lower_canonical_half_geometry() {
        let g = format(false, false).geometry();
        assert_eq!((g.levels(), g.input_bits(), g.root_entries()), (4, 47, 256));
        let five = FirstLevelConfig { levels: 5, output_bits: 52, one_gib_pages: false, execute_requests: false, dirty_tracking: false };
        assert_eq!(VtdFirstLevel::new(five).unwrap().geometry().input_bits(), 56);
        assert!(!VtdFirstLevel::new(five).unwrap().leaf_allowed(2));
        assert_eq!(VtdFirstLevel::new(FirstLevelConfig { levels: 3, ..five }), Err(Error::InvalidConfig));
    }
}
