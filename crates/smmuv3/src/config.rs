//! Translation configurations the IOMMU server hands to the driver when attaching a stream.
//!
//! The page tables themselves come from the `iommu-pt` crate; the driver only needs their root
//! address and the parameters that describe their shape. Each configuration is validated against
//! the SMMU's ID registers (and QEMU's known limits) before anything is written, so an invalid
//! request never reaches a live STE.

use crate::error::SmmuError;
use crate::regs::{address_size_encoding, Granule, Httu, IdRegisters};

/// MAIR used when the caller has no opinion: Attr0 = Normal write-back RW-allocate (0xFF),
/// Attr1 = Device-nGnRE (0x04), Attr2 = Normal non-cacheable (0x44). Page tables select one of
/// these with AttrIndx.
pub const DEFAULT_MAIR: u64 = 0x0000_0000_0044_04FF;

/// The largest output size the driver programs into CD.IPS / STE.S2PS: 48 bits (encoding 5).
/// QEMU 10.0.2 aborts on IPS = 6 (52 bits), and 52-bit tables need a different descriptor format.
pub const MAX_OUTPUT_BITS: u32 = 48;

/// Stage-1 translation for one stream: a CD pointing at a VMSAv8-64 table rooted at `ttb0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Config {
    /// ASID tagging this address space's TLB entries (from `Smmu::alloc_asid`).
    pub asid: u16,
    /// Physical (or, nested, intermediate physical) address of the level-0.. root table.
    pub ttb0: u64,
    /// Input range is 64 - T0SZ bits; 16..=39 (QEMU rejects other values). The starting level
    /// follows from T0SZ and the granule.
    pub t0sz: u8,
    pub granule: Granule,
    /// MAIR0/MAIR1 as one 64-bit value.
    pub mair: u64,
    /// Output address size wanted; the driver programs min(this, IDR5.OAS, 48).
    pub output_bits: u32,
    /// Record translation, address-size, access and permission faults (CD.R).
    pub record_faults: bool,
    /// Hardware access-flag and dirty-state update (CD.HA and CD.HD; needs IDR0.HTTU = 0b10):
    /// writes through writable-clean leaves (DBM, AP[2] set) clear AP[2].
    pub hardware_dirty: bool,
}

impl Stage1Config {
    /// A configuration with [`DEFAULT_MAIR`], 48-bit output and fault recording on.
    pub fn new(asid: u16, ttb0: u64, t0sz: u8, granule: Granule) -> Stage1Config {
        Stage1Config {
            asid,
            ttb0,
            t0sz,
            granule,
            mair: DEFAULT_MAIR,
            output_bits: MAX_OUTPUT_BITS,
            record_faults: true,
            hardware_dirty: false,
        }
    }

    /// The IPS the driver programs for this configuration on this SMMU.
    pub fn effective_output_bits(&self, id: &IdRegisters) -> u32 {
        self.output_bits.min(id.oas_bits()).min(MAX_OUTPUT_BITS)
    }

    pub(crate) fn validate(&self, id: &IdRegisters) -> Result<(), SmmuError> {
        if !id.stage1() {
            return Err(SmmuError::Unsupported("stage 1 translation (IDR0.S1P = 0)"));
        }
        if !id.supports_granule(self.granule) {
            return Err(SmmuError::Unsupported("stage-1 granule (IDR5)"));
        }
        if !(16..=39).contains(&self.t0sz) {
            return Err(SmmuError::InvalidConfig("stage-1 T0SZ must be 16..=39"));
        }
        if (self.asid as u32) >> id.asid_bits() != 0 {
            return Err(SmmuError::InvalidConfig("ASID wider than IDR0.ASID16 allows"));
        }
        if address_size_encoding(self.effective_output_bits(id)).is_none() {
            return Err(SmmuError::InvalidConfig("stage-1 output size has no IPS encoding"));
        }
        if self.hardware_dirty && id.httu() != Httu::AccessFlagAndDirty {
            return Err(SmmuError::Unsupported("hardware dirty-state update (IDR0.HTTU != 0b10)"));
        }
        check_table_base(self.ttb0, self.effective_output_bits(id))
    }
}

/// Stage-2 translation for one stream (or the outer stage of a nested stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Config {
    /// VMID tagging this stage-2 address space (from `Smmu::alloc_vmid`; never 0, which the
    /// driver reserves for stage-1-only streams).
    pub vmid: u16,
    /// Physical address of the stage-2 root (possibly concatenated) table.
    pub vttbr: u64,
    /// IPA range is 64 - T0SZ bits.
    pub t0sz: u8,
    /// Level of the root table (0..=3), as produced by the page-table builder; the driver turns it
    /// into STE.S2SL0, whose encoding depends on the granule.
    pub start_level: u8,
    pub granule: Granule,
    /// Output (physical) address size wanted; the driver programs min(this, IDR5.OAS, 48).
    pub output_bits: u32,
    /// Record stage-2 translation-class faults (STE.S2R).
    pub record_faults: bool,
}

impl Stage2Config {
    /// A configuration with 48-bit output and fault recording on.
    pub fn new(vmid: u16, vttbr: u64, t0sz: u8, start_level: u8, granule: Granule) -> Stage2Config {
        Stage2Config { vmid, vttbr, t0sz, start_level, granule, output_bits: MAX_OUTPUT_BITS, record_faults: true }
    }

    /// The S2PS the driver programs for this configuration on this SMMU.
    pub fn effective_output_bits(&self, id: &IdRegisters) -> u32 {
        self.output_bits.min(id.oas_bits()).min(MAX_OUTPUT_BITS)
    }

    /// STE.S2SL0 for `start_level` (VMSAv8-64 VTCR_EL2.SL0): with 4K granules SL0 = 2 - level
    /// (levels 0..=2); with 16K and 64K granules SL0 = 3 - level (levels 1..=3).
    pub fn sl0_encoding(granule: Granule, start_level: u8) -> Option<u64> {
        match (granule, start_level) {
            (Granule::Size4K, 0..=2) => Some(2 - start_level as u64),
            (Granule::Size16K | Granule::Size64K, 1..=3) => Some(3 - start_level as u64),
            _ => None,
        }
    }

    /// Inverse of [`Stage2Config::sl0_encoding`].
    pub fn start_level_from_sl0(granule: Granule, sl0: u64) -> Option<u8> {
        match (granule, sl0) {
            (Granule::Size4K, 0..=2) => Some(2 - sl0 as u8),
            (Granule::Size16K | Granule::Size64K, 0..=2) => Some(3 - sl0 as u8),
            _ => None,
        }
    }

    pub(crate) fn validate(&self, id: &IdRegisters) -> Result<(), SmmuError> {
        if !id.stage2() {
            return Err(SmmuError::Unsupported("stage 2 translation (IDR0.S2P = 0)"));
        }
        if !id.supports_granule(self.granule) {
            return Err(SmmuError::Unsupported("stage-2 granule (IDR5)"));
        }
        if self.vmid == 0 {
            return Err(SmmuError::InvalidConfig("VMID 0 is reserved for stage-1-only streams"));
        }
        if (self.vmid as u32) >> id.vmid_bits() != 0 {
            return Err(SmmuError::InvalidConfig("VMID wider than IDR0.VMID16 allows"));
        }
        let out = self.effective_output_bits(id);
        if address_size_encoding(out).is_none() {
            return Err(SmmuError::InvalidConfig("stage-2 output size has no S2PS encoding"));
        }
        // Spec (STE.S2T0SZ) and QEMU agree: at most 39, at least 64 - IAS, and at least 16 for 4K
        // and 16K granules. The IPA size can't exceed what the SMMU can output.
        let min_t0sz = if self.granule == Granule::Size64K { 64 - out } else { (64 - out).max(16) };
        if (self.t0sz as u32) < min_t0sz || self.t0sz > 39 {
            return Err(SmmuError::InvalidConfig("stage-2 T0SZ out of range for the output size"));
        }
        if Self::sl0_encoding(self.granule, self.start_level).is_none() {
            return Err(SmmuError::InvalidConfig("stage-2 start level not encodable in S2SL0"));
        }
        // The root level must resolve every IPA bit above it using at most 16 concatenated tables
        // (VMSAv8-64 stage-2 concatenation), and must not start below the needed level.
        let g = self.granule.shift();
        let level_shift = g + (3 - self.start_level as u32) * (g - 3);
        let ipa_bits = 64 - self.t0sz as u32;
        if ipa_bits <= level_shift || ipa_bits - level_shift > (g - 3) + 4 {
            return Err(SmmuError::InvalidConfig("stage-2 start level does not fit the IPA size"));
        }
        check_table_base(self.vttbr, out)
    }
}

/// The stage-1 half of a nested stream: the CD lives in the client's own memory at an IPA that
/// stage 2 translates (iommufd's "nested HWPT": the guest owns its context descriptor and page
/// tables, the host owns stage 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedStage1 {
    /// IPA of the client's 64-byte CD.
    pub cd_ipa: u64,
}

impl NestedStage1 {
    /// Checks the CD address against the unit and the stage 2 that will translate it (as
    /// `Smmu::attach_nested` does), so a caller can refuse it before taking resources.
    pub fn validate(&self, id: &IdRegisters, s2: &Stage2Config) -> Result<(), SmmuError> {
        if !id.stage1() {
            return Err(SmmuError::Unsupported("stage 1 translation (IDR0.S1P = 0)"));
        }
        if !self.cd_ipa.is_multiple_of(64) {
            return Err(SmmuError::InvalidConfig("CD address must be 64-byte aligned"));
        }
        if self.cd_ipa >> (64 - s2.t0sz as u32) != 0 {
            return Err(SmmuError::InvalidConfig("CD IPA outside the stage-2 input range"));
        }
        Ok(())
    }
}

fn check_table_base(base: u64, output_bits: u32) -> Result<(), SmmuError> {
    if !base.is_multiple_of(16) {
        return Err(SmmuError::InvalidConfig("table base must be at least 16-byte aligned"));
    }
    if base >> output_bits != 0 {
        return Err(SmmuError::InvalidConfig("table base above the output address size"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: IdRegisters = IdRegisters { idr: [0x0D44_101B, 0x0273_0010, 0, 0x0000_0404, 0, 0x74] };

    #[test]
    fn sl0_round_trips_for_every_granule() {
        assert_eq!(Stage2Config::sl0_encoding(Granule::Size4K, 0), Some(2));
        assert_eq!(Stage2Config::sl0_encoding(Granule::Size4K, 2), Some(0));
        assert_eq!(Stage2Config::sl0_encoding(Granule::Size4K, 3), None);
        assert_eq!(Stage2Config::sl0_encoding(Granule::Size64K, 1), Some(2));
        for g in [Granule::Size4K, Granule::Size16K, Granule::Size64K] {
            for level in 0..=3 {
                if let Some(sl0) = Stage2Config::sl0_encoding(g, level) {
                    assert_eq!(Stage2Config::start_level_from_sl0(g, sl0), Some(level));
                }
            }
        }
    }

    #[test]
    fn stage2_validation_matches_qemu_limits() {
        // 40-bit IPA, 4K, start level 1: 40 - 30 = 10 bits at level 1 = 2 concatenated tables.
        assert_eq!(Stage2Config::new(1, 0x4000_0000, 24, 1, Granule::Size4K).validate(&QEMU), Ok(()));
        // OAS is 44 bits, so T0SZ must be >= 20.
        assert!(Stage2Config::new(1, 0x4000_0000, 16, 0, Granule::Size4K).validate(&QEMU).is_err());
        // 40-bit IPA from level 2 would need 2^(40-21-9) = 1024 concatenated tables.
        assert!(Stage2Config::new(1, 0x4000_0000, 24, 2, Granule::Size4K).validate(&QEMU).is_err());
        assert!(Stage2Config::new(0, 0x4000_0000, 24, 1, Granule::Size4K).validate(&QEMU).is_err());
    }

    #[test]
    fn stage1_validation_rejects_qemu_invalid_t0sz_and_clamps_ips() {
        let cfg = Stage1Config::new(1, 0x4000_0000, 16, Granule::Size4K);
        assert_eq!(cfg.validate(&QEMU), Ok(()));
        assert_eq!(cfg.effective_output_bits(&QEMU), 44);
        assert!(Stage1Config::new(1, 0x4000_0000, 40, Granule::Size4K).validate(&QEMU).is_err());
        assert!(Stage1Config::new(1, 0x4000_0008, 25, Granule::Size4K).validate(&QEMU).is_err());
        assert!(Stage1Config::new(1, 1 << 45, 25, Granule::Size4K).validate(&QEMU).is_err());
    }
}
