//! SMMUv3 stage-2 translation tables: VMSAv8-64 stage 2, 4 KiB granule, 48-bit output.
//!
//! Spec: Arm ARM (DDI 0487) D8.2.7 (stage-2 starting level and concatenated tables), D8.3
//! (descriptor formats), D8.5 (stage-2 memory attributes, S2AP); SMMUv3 (IHI 0070) §5.2 (STE:
//! S2T0SZ, S2SL0, S2TG, S2PS).
//!
//! Leaves set MemAttr[5:2] = 0b1111 (normal, inner and outer write-back, when FWB is off),
//! S2AP[7:6] (bit 6 read, bit 7 write: write-only is expressible), SH = inner shareable, AF
//! always (no HTTU in QEMU), and XN[1] (bit 54) unless execute is granted (XN[0], bit 53, stays 0
//! so the encoding means "execute never" with and without FEAT_XNX).
//!
//! The starting level is the caller's (STE.S2SL0), and the starting table may be up to 16
//! concatenated tables (e.g. a 40-bit IPA space starting at level 1 uses 2 tables: one
//! allocation of 8 KiB aligned to 8 KiB). Starting at level 3 (FEAT_TTST) is not supported.
//! Stage-2 DBM dirty tracking is not implemented.

use crate::format::{Decoded, DirtyScheme, Format, Geometry, LargePages};
use crate::smmu_stage1::{decode_vmsa, encode_vmsa_leaf};
use crate::{Error, Perm};
use hwio::bits::{addr_mask, get, with};

/// One VMSAv8-64 stage-2 descriptor (Arm ARM D8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Stage2Entry(pub u64);
const _: () = assert!(core::mem::size_of::<Stage2Entry>() == 8);

impl Stage2Entry {
    /// Bit 0: valid.
    pub const VALID: u64 = 1 << 0;
    /// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// MemAttr = 0b1111: normal memory, outer and inner write-back cacheable.
    pub const NORMAL_WRITE_BACK: u8 = 0b1111;
    /// MemAttr = 0b0001: Device-nGnRE (Arm ARM D8.6.5, stage 2 with FWB = 0).
    pub const DEVICE_NGNRE: u8 = 0b0001;
    /// S2AP[0], bit 6: reads allowed.
    pub const S2AP_READ: u64 = 1 << 6;
    /// S2AP[1], bit 7: writes allowed.
    pub const S2AP_WRITE: u64 = 1 << 7;
    /// SH[1:0] = 0b11: inner shareable (the value of [`Self::shareability`]).
    pub const INNER_SHAREABLE: u8 = 0b11;
    /// AF, bit 10.
    pub const ACCESS_FLAG: u64 = 1 << 10;
    /// XN[0], bit 53 (FEAT_XNX).
    pub const XN0: u64 = 1 << 53;
    /// XN[1] / XN, bit 54: execute never.
    pub const XN: u64 = 1 << 54;
    /// Output address, bits 47:12.
    pub const ADDRESS: u64 = addr_mask(12, 47);

    pub const fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    /// MemAttr[3:0], bits 5:2.
    #[inline(always)]
    pub const fn mem_attr(self) -> u8 {
        get(self.0, 2, 4) as u8
    }
    #[inline(always)]
    pub const fn with_mem_attr(self, mem_attr: u8) -> Self {
        Self(with(self.0, 2, 4, mem_attr as u64))
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
    pub const fn readable(self) -> bool {
        self.0 & Self::S2AP_READ != 0
    }
    pub const fn writable(self) -> bool {
        self.0 & Self::S2AP_WRITE != 0
    }
    pub const fn access_flag(self) -> bool {
        self.0 & Self::ACCESS_FLAG != 0
    }
    /// Whether XN[1:0] allows execution at every exception level (0b00).
    pub const fn executable(self) -> bool {
        self.0 & (Self::XN | Self::XN0) == 0
    }
    #[inline(always)]
    pub const fn address(self) -> u64 {
        self.0 & Self::ADDRESS
    }
}

/// The caller's choices for a stage-2 table (they go into the STE as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Config {
    /// Input (IPA) bits: 64 - STE.S2T0SZ, 25 to 48.
    pub input_bits: u8,
    /// VMSA lookup level the walk starts at: 0, 1 or 2.
    pub start_level: u8,
    /// Output (PA) bits, STE.S2PS: at most 48.
    pub output_bits: u8,
    /// Block sizes to use.
    pub large_pages: LargePages,
}

/// The SMMUv3 stage-2 format with a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuStage2 {
    config: Stage2Config,
    geometry: Geometry,
}

impl SmmuStage2 {
    /// Checks the combination against Arm ARM D8.2.7: the starting level must resolve the top
    /// input bits with at most 16 concatenated tables.
    pub fn new(config: Stage2Config) -> Result<Self, Error> {
        let supported = (25..=48).contains(&config.input_bits)
            && config.start_level <= 2
            && config.output_bits <= 48
            && config.large_pages.is_consistent();
        if !supported {
            return Err(Error::InvalidConfig);
        }
        let geometry = Geometry::new(3 - config.start_level, config.input_bits, 16)?;
        Ok(Self { config, geometry })
    }

    pub fn config(&self) -> &Stage2Config {
        &self.config
    }

    /// STE.S2T0SZ.
    pub fn t0sz(&self) -> u8 {
        64 - self.config.input_bits
    }

    /// STE.S2SL0 for the 4 KiB granule: 0 starts at level 2, 1 at level 1, 2 at level 0.
    pub fn sl0(&self) -> u8 {
        2 - self.config.start_level
    }

    /// Number of concatenated tables at the starting level (1 to 16).
    pub fn concatenated_tables(&self) -> usize {
        self.geometry.root_entries().div_ceil(crate::ENTRIES_PER_TABLE)
    }
}

impl Format for SmmuStage2 {
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
        if !perm.contains(Perm::READ) && !perm.contains(Perm::WRITE) {
            return Err(Error::UnsupportedPermission);
        }
        let memory_type = if perm.contains(Perm::DEVICE) { Stage2Entry::DEVICE_NGNRE } else { Stage2Entry::NORMAL_WRITE_BACK };
        let mut bits = Stage2Entry(Stage2Entry::VALID | Stage2Entry::ACCESS_FLAG)
            .with_mem_attr(memory_type)
            .with_shareability(Stage2Entry::INNER_SHAREABLE)
            .0;
        if perm.contains(Perm::READ) {
            bits |= Stage2Entry::S2AP_READ;
        }
        if perm.contains(Perm::WRITE) {
            bits |= Stage2Entry::S2AP_WRITE;
        }
        if !perm.contains(Perm::EXECUTE) {
            bits |= Stage2Entry::XN;
        }
        Ok(bits)
    }

    fn encode_leaf(&self, attributes: u64, phys: u64, height: u8) -> u64 {
        encode_vmsa_leaf(attributes, phys, height, Stage2Entry::ADDRESS)
    }

    fn encode_table(&self, phys: u64) -> u64 {
        (phys & Stage2Entry::ADDRESS) | Stage2Entry::VALID | Stage2Entry::TABLE_OR_PAGE
    }

    fn decode(&self, raw: u64, height: u8) -> Decoded {
        decode_vmsa(raw, height, Stage2Entry::ADDRESS)
    }

    fn permissions(&self, attributes: u64) -> Perm {
        let entry = Stage2Entry(attributes);
        let mut perm = Perm::NONE;
        if entry.readable() {
            perm = perm | Perm::READ;
        }
        if entry.writable() {
            perm = perm | Perm::WRITE;
        }
        if entry.executable() {
            perm = perm | Perm::EXECUTE;
        }
        if entry.mem_attr() == Stage2Entry::DEVICE_NGNRE {
            perm = perm | Perm::DEVICE;
        }
        perm
    }

    fn dirty_scheme(&self) -> Option<DirtyScheme> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(input_bits: u8, start_level: u8) -> Stage2Config {
        Stage2Config { input_bits, start_level, output_bits: 48, large_pages: LargePages::ALL }
    }

    #[test]
    fn leaf_and_table_bits() {
        let f = SmmuStage2::new(config(48, 0)).unwrap();
        let rw = f.leaf_attributes(Perm::READ_WRITE).unwrap();
        assert_eq!(f.encode_leaf(rw, 0x1234_5000, 0), 0x0040_0000_1234_57ff);
        let write_only_exec = f.leaf_attributes(Perm::WRITE | Perm::EXECUTE).unwrap();
        assert_eq!(f.encode_leaf(write_only_exec, 0x4000_0000, 2), 0x4000_07bd);
        assert_eq!(f.encode_table(0x9000), 0x9003);
        let entry = Stage2Entry(f.encode_leaf(rw, 0x1234_5000, 0));
        assert_eq!(entry.mem_attr(), 0b1111);
        assert!(entry.access_flag() && !entry.executable());
        assert_eq!(f.permissions(write_only_exec), Perm::WRITE | Perm::EXECUTE);
        assert_eq!(f.leaf_attributes(Perm::EXECUTE), Err(Error::UnsupportedPermission));
    }

    #[test]
    fn starting_level_and_concatenation() {
        let ipa40 = SmmuStage2::new(config(40, 1)).unwrap();
        assert_eq!((ipa40.sl0(), ipa40.t0sz(), ipa40.concatenated_tables()), (1, 24, 2));
        assert_eq!(ipa40.geometry().root_entries(), 1024);
        let ipa43 = SmmuStage2::new(config(43, 1)).unwrap();
        assert_eq!(ipa43.concatenated_tables(), 16);
        assert_eq!(SmmuStage2::new(config(44, 1)), Err(Error::InvalidConfig), "17+ tables");
        let ipa48 = SmmuStage2::new(config(48, 0)).unwrap();
        assert_eq!((ipa48.sl0(), ipa48.concatenated_tables()), (2, 1));
        assert_eq!(SmmuStage2::new(config(39, 0)), Err(Error::InvalidConfig), "level 0 resolves nothing");
        assert_eq!(SmmuStage2::new(config(32, 3)), Err(Error::InvalidConfig));
        assert_eq!(SmmuStage2::new(config(32, 2)).unwrap().concatenated_tables(), 4);
    }
}
