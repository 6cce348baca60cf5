//! SMMUv3 stage-1 translation tables: VMSAv8-64 stage 1, 4 KiB granule, 48-bit output.
//!
//! Spec: Arm ARM (DDI 0487) D8.2 (translation table walk, starting level from TnSZ) and D8.3
//! (descriptor formats: table, block, page); D8.4.6 (hardware dirty state, DBM); SMMUv3 (IHI
//! 0070) §5.4 (Context Descriptor: T0SZ, TG0, IPS, MAIR, HD) and §3.13 (HTTU).
//!
//! Descriptor bits 1:0: `0b11` is a table at lookup levels 0-2 and a page at level 3; `0b01` is a
//! block at levels 1-2 (1 GiB, 2 MiB); anything else is invalid (block at level 0 needs LPA2).
//! Leaves set:
//! - AttrIndx[4:2] to the caller's MAIR index for normal memory (the CD carries MAIR);
//! - AP[1] (bit 6) so unprivileged device accesses are allowed, AP[2] (bit 7) for read-only;
//! - SH[9:8] = 0b11 inner shareable;
//! - AF (bit 10) always: QEMU's SMMU has no HTTU and faults on AF = 0;
//! - nG (bit 11) when the caller asks (ASID-tagged mappings);
//! - PXN (53) and UXN/XN (54) unless execute is granted;
//! - DBM (bit 51) on writable leaves when dirty tracking is on. As in Linux, such leaves start
//!   "writable-dirty" (AP[2] clear): cleaning sets AP[2], and a walker with HTTU (CD.HD = 1)
//!   clears it again on the next write. Without HTTU a write to a cleaned leaf faults, so enable
//!   dirty tracking only where SMMU_IDR0.HTTU = 0b10.

use crate::format::{Decoded, DirtyScheme, Format, Geometry, LargePages};
use crate::{Error, Perm};
use hwio::bits::{addr_mask, get, with};

/// One VMSAv8-64 stage-1 descriptor (Arm ARM D8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Stage1Entry(pub u64);
const _: () = assert!(core::mem::size_of::<Stage1Entry>() == 8);

impl Stage1Entry {
    /// Bit 0: valid.
    pub const VALID: u64 = 1 << 0;
    /// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// AP[1], bit 6: accessible to unprivileged (EL0-like) requests.
    pub const AP_UNPRIVILEGED: u64 = 1 << 6;
    /// AP[2], bit 7: read-only.
    pub const AP_READ_ONLY: u64 = 1 << 7;
    /// SH[1:0] = 0b11: inner shareable (the value of [`Self::shareability`]).
    pub const INNER_SHAREABLE: u8 = 0b11;
    /// AF, bit 10: access flag.
    pub const ACCESS_FLAG: u64 = 1 << 10;
    /// nG, bit 11: not global (tagged with the ASID).
    pub const NOT_GLOBAL: u64 = 1 << 11;
    /// DBM, bit 51: dirty bit modifier.
    pub const DBM: u64 = 1 << 51;
    /// PXN, bit 53: privileged execute never.
    pub const PXN: u64 = 1 << 53;
    /// UXN / XN, bit 54: unprivileged execute never.
    pub const UXN: u64 = 1 << 54;
    /// Output address, bits 47:12 (4 KiB granule, no LPA2).
    pub const ADDRESS: u64 = addr_mask(12, 47);

    pub const fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    pub const fn table_or_page(self) -> bool {
        self.0 & Self::TABLE_OR_PAGE != 0
    }
    /// AttrIndx[2:0], bits 4:2: index into MAIR.
    #[inline(always)]
    pub const fn attr_index(self) -> u8 {
        get(self.0, 2, 3) as u8
    }
    #[inline(always)]
    pub const fn with_attr_index(self, index: u8) -> Self {
        Self(with(self.0, 2, 3, index as u64))
    }
    pub const fn unprivileged(self) -> bool {
        self.0 & Self::AP_UNPRIVILEGED != 0
    }
    pub const fn read_only(self) -> bool {
        self.0 & Self::AP_READ_ONLY != 0
    }
    /// SH[1:0], bits 9:8.
    #[inline(always)]
    pub const fn shareability(self) -> u8 {
        get(self.0, 8, 2) as u8
    }
    #[inline(always)]
    pub const fn with_shareability(self, shareability: u8) -> Self {
        Self(with(self.0, 8, 2, shareability as u64))
    }
    pub const fn access_flag(self) -> bool {
        self.0 & Self::ACCESS_FLAG != 0
    }
    pub const fn not_global(self) -> bool {
        self.0 & Self::NOT_GLOBAL != 0
    }
    pub const fn dbm(self) -> bool {
        self.0 & Self::DBM != 0
    }
    pub const fn privileged_execute_never(self) -> bool {
        self.0 & Self::PXN != 0
    }
    pub const fn unprivileged_execute_never(self) -> bool {
        self.0 & Self::UXN != 0
    }
    #[inline(always)]
    pub const fn address(self) -> u64 {
        self.0 & Self::ADDRESS
    }
}

/// Decodes the VMSAv8-64 descriptor type (Arm ARM D8.3.1), shared by both stages: bits 1:0 and
/// the lookup level decide; `height` 3 is lookup level 0, where a block is invalid.
pub(crate) fn decode_vmsa(raw: u64, height: u8, address_mask: u64) -> Decoded {
    let valid = raw & Stage1Entry::VALID != 0;
    let table_or_page = raw & Stage1Entry::TABLE_OR_PAGE != 0;
    let phys = raw & address_mask;
    match (valid, table_or_page, height) {
        (false, _, _) => Decoded::Absent,
        (true, true, 0) | (true, false, 1..=2) => {
            Decoded::Leaf { phys, attributes: raw & !(address_mask | Stage1Entry::TABLE_OR_PAGE) }
        }
        (true, true, _) => Decoded::Table { phys },
        // Block at level 3 (reserved) or level 0: a translation fault, i.e. nothing mapped.
        (true, false, _) => Decoded::Absent,
    }
}

/// Encodes a VMSAv8-64 leaf: a page at level 3 sets bit 1, a block leaves it clear.
pub(crate) fn encode_vmsa_leaf(attributes: u64, phys: u64, height: u8, address_mask: u64) -> u64 {
    let page = if height == 0 { Stage1Entry::TABLE_OR_PAGE } else { 0 };
    attributes | page | (phys & address_mask)
}

/// The caller's choices for a stage-1 table (they go into the Context Descriptor as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Config {
    /// Input (VA / IOVA) bits: 64 - CD.T0SZ, 25 to 48. 48 starts the walk at level 0, 39 at
    /// level 1, 30 at level 2.
    pub input_bits: u8,
    /// Output (IPA / PA) bits, CD.IPS: at most 48.
    pub output_bits: u8,
    /// MAIR index (0-7) of normal write-back memory in the CD's MAIR.
    pub mair_index: u8,
    /// MAIR index (0-7) of Device-nGnRE memory, for [`Perm::DEVICE`] mappings.
    pub device_mair_index: u8,
    /// Set nG on leaves (ASID-tagged TLB entries).
    pub not_global: bool,
    /// Block sizes to use.
    pub large_pages: LargePages,
    /// DBM on writable leaves (HTTU with CD.HD = 1).
    pub dirty_tracking: bool,
}

/// The SMMUv3 stage-1 format with a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuStage1 {
    config: Stage1Config,
    geometry: Geometry,
}

impl SmmuStage1 {
    pub fn new(config: Stage1Config) -> Result<Self, Error> {
        let supported = (25..=48).contains(&config.input_bits)
            && config.output_bits <= 48
            && config.mair_index < 8
            && config.device_mair_index < 8
            && config.device_mair_index != config.mair_index
            && config.large_pages.is_consistent();
        if !supported {
            return Err(Error::InvalidConfig);
        }
        // The walk starts at the level whose tables resolve the top input bit (Arm ARM D8.2.6).
        let top_height = (config.input_bits - 13) / 9;
        let geometry = Geometry::new(top_height, config.input_bits, 1)?;
        Ok(Self { config, geometry })
    }

    pub fn config(&self) -> &Stage1Config {
        &self.config
    }

    /// CD.T0SZ for this table.
    pub fn t0sz(&self) -> u8 {
        64 - self.config.input_bits
    }

    /// VMSA lookup level of the root table (0-2).
    pub fn start_level(&self) -> u8 {
        3 - self.geometry.top_height()
    }
}

impl Format for SmmuStage1 {
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
        // A valid stage-1 descriptor always permits reads.
        if !perm.contains(Perm::READ) {
            return Err(Error::UnsupportedPermission);
        }
        let attr_index = if perm.contains(Perm::DEVICE) { self.config.device_mair_index } else { self.config.mair_index };
        let mut bits = Stage1Entry(Stage1Entry::VALID | Stage1Entry::AP_UNPRIVILEGED | Stage1Entry::ACCESS_FLAG)
            .with_attr_index(attr_index)
            .with_shareability(Stage1Entry::INNER_SHAREABLE)
            .0;
        if !perm.contains(Perm::WRITE) {
            bits |= Stage1Entry::AP_READ_ONLY;
        } else if self.config.dirty_tracking {
            bits |= Stage1Entry::DBM;
        }
        if self.config.not_global {
            bits |= Stage1Entry::NOT_GLOBAL;
        }
        if !perm.contains(Perm::EXECUTE) {
            bits |= Stage1Entry::PXN | Stage1Entry::UXN;
        }
        Ok(bits)
    }

    fn encode_leaf(&self, attributes: u64, phys: u64, height: u8) -> u64 {
        encode_vmsa_leaf(attributes, phys, height, Stage1Entry::ADDRESS)
    }

    fn encode_table(&self, phys: u64) -> u64 {
        (phys & Stage1Entry::ADDRESS) | Stage1Entry::VALID | Stage1Entry::TABLE_OR_PAGE
    }

    fn decode(&self, raw: u64, height: u8) -> Decoded {
        decode_vmsa(raw, height, Stage1Entry::ADDRESS)
    }

    fn permissions(&self, attributes: u64) -> Perm {
        let entry = Stage1Entry(attributes);
        let mut perm = Perm::READ;
        // Writable-clean (DBM with AP[2] set) is still writable: the walker marks it dirty.
        if !entry.read_only() || entry.dbm() {
            perm = perm | Perm::WRITE;
        }
        if !entry.unprivileged_execute_never() {
            perm = perm | Perm::EXECUTE;
        }
        if entry.attr_index() == self.config.device_mair_index {
            perm = perm | Perm::DEVICE;
        }
        perm
    }

    fn dirty_scheme(&self) -> Option<DirtyScheme> {
        self.config.dirty_tracking.then_some(DirtyScheme::ClearsReadOnlyOnWrite {
            read_only: Stage1Entry::AP_READ_ONLY,
            dbm: Stage1Entry::DBM,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(input_bits: u8) -> Stage1Config {
        Stage1Config {
            input_bits,
            output_bits: 48,
            mair_index: 1,
            device_mair_index: 2,
            not_global: true,
            large_pages: LargePages::ALL,
            dirty_tracking: false,
        }
    }

    #[test]
    fn leaf_and_table_bits() {
        let f = SmmuStage1::new(config(48)).unwrap();
        let rw = f.leaf_attributes(Perm::READ_WRITE).unwrap();
        assert_eq!(f.encode_leaf(rw, 0x1234_5000, 0), 0x0060_0000_1234_5f47);
        let read_exec = f.leaf_attributes(Perm::READ | Perm::EXECUTE).unwrap();
        assert_eq!(f.encode_leaf(read_exec, 0x4020_0000, 1), 0x4020_0fc5);
        assert_eq!(f.encode_table(0x8000_3000), 0x8000_3003);
        let entry = Stage1Entry(f.encode_leaf(rw, 0x1234_5000, 0));
        assert!(entry.access_flag() && entry.not_global() && entry.unprivileged());
        assert_eq!((entry.attr_index(), entry.shareability()), (1, 0b11));
    }

    #[test]
    fn dbm_on_writable_leaves_only() {
        let f = SmmuStage1::new(Stage1Config { dirty_tracking: true, ..config(39) }).unwrap();
        let rw = Stage1Entry(f.leaf_attributes(Perm::READ_WRITE).unwrap());
        assert!(rw.dbm() && !rw.read_only());
        let ro = Stage1Entry(f.leaf_attributes(Perm::READ).unwrap());
        assert!(!ro.dbm() && ro.read_only());
        // A cleaned writable leaf (AP[2] set again) still grants write.
        assert_eq!(f.permissions(rw.0 | Stage1Entry::AP_READ_ONLY), Perm::READ_WRITE);
    }

    #[test]
    fn descriptor_types_per_level() {
        let f = SmmuStage1::new(config(48)).unwrap();
        assert_eq!(f.decode(0x5003, 3), Decoded::Table { phys: 0x5003 & Stage1Entry::ADDRESS });
        assert_eq!(f.decode(0x5001, 3), Decoded::Absent, "no level-0 blocks with 4 KiB granule");
        assert_eq!(f.decode(0x5001, 0), Decoded::Absent, "bits 1:0 = 01 is reserved at level 3");
        assert!(matches!(f.decode(0x4000_0001, 2), Decoded::Leaf { phys: 0x4000_0000, .. }));
        assert!(matches!(f.decode(0x5003, 0), Decoded::Leaf { phys: 0x5000, .. }));
        assert_eq!(f.decode(0x5002, 1), Decoded::Absent);
    }

    #[test]
    fn start_level_follows_input_size() {
        let at = |bits| {
            let f = SmmuStage1::new(config(bits)).unwrap();
            (f.start_level(), f.t0sz(), f.geometry().root_entries())
        };
        assert_eq!(at(48), (0, 16, 512));
        assert_eq!(at(39), (1, 25, 512));
        assert_eq!(at(40), (0, 24, 2));
        assert_eq!(at(32), (1, 32, 4));
        assert_eq!(at(25), (2, 39, 16));
        assert_eq!(SmmuStage1::new(config(49)), Err(Error::InvalidConfig));
        assert_eq!(SmmuStage1::new(Stage1Config { mair_index: 8, ..config(48) }), Err(Error::InvalidConfig));
        let f = SmmuStage1::new(config(48)).unwrap();
        assert_eq!(f.leaf_attributes(Perm::WRITE), Err(Error::UnsupportedPermission));
    }
}
