//! VMSAv8-64 translation table walks as the model SMMU performs them (Arm ARM D8, restricted to
//! what SMMU page tables use: 4K/16K/64K granules, 48-bit output, no 52-bit descriptors).
//!
//! Simplifications, each shared with QEMU 10.0.2's SMMUv3: stage-1 AP[1] (EL0 access) and the
//! hierarchical APTable/XNTable bits are ignored (only AP[2], read-only, is checked); execute
//! permissions are not modelled (the model has no instruction fetches).

use crate::event::{EventType, FaultClass};

use super::memory::FakeMemory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    One,
    Two,
}

/// The shape of one stage's tables, decoded from a CD or an STE.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkConfig {
    pub stage: Stage,
    pub root: u64,
    pub granule_shift: u32,
    pub input_bits: u32,
    pub start_level: u32,
    pub output_bits: u32,
    /// Access flag fault disable (CD.AFFD / STE.S2AFFD).
    pub affd: bool,
}

impl WalkConfig {
    /// Stage-1 start level implied by the input size: enough levels of (granule - 3) bits each.
    pub fn stage1_start_level(input_bits: u32, granule_shift: u32) -> u32 {
        let stride = granule_shift - 3;
        let levels = (input_bits - granule_shift).div_ceil(stride);
        4 - levels
    }
}

/// A fault, with what the event record needs to describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub kind: EventType,
    pub stage2: bool,
    pub class: FaultClass,
    /// The IPA a stage-2 fault happened at.
    pub ipa: u64,
    /// The physical address whose fetch aborted (F_WALK_EABT).
    pub fetch_addr: u64,
}

impl Fault {
    pub fn new(kind: EventType, stage2: bool, class: FaultClass, ipa: u64) -> Fault {
        Fault { kind, stage2, class, ipa, fetch_addr: 0 }
    }
}

/// A successful walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub output: u64,
    /// Size of the page or block that mapped the address.
    pub size: u64,
    pub writable: bool,
}

/// Walks `cfg` for `addr`. `table_address` maps each table address to the physical address to
/// fetch from (identity, or a stage-2 translation for nested stage-1 walks; its faults are passed
/// through). `class` is reported for faults of this walk.
pub(crate) fn walk(
    memory: &FakeMemory,
    cfg: &WalkConfig,
    addr: u64,
    write: bool,
    class: FaultClass,
    table_address: &mut dyn FnMut(u64) -> Result<u64, Fault>,
) -> Result<Leaf, Fault> {
    let stage2 = cfg.stage == Stage::Two;
    let fault = |kind| Fault::new(kind, stage2, class, addr);
    if cfg.input_bits < 64 && addr >> cfg.input_bits != 0 {
        return Err(fault(EventType::Translation));
    }
    let g = cfg.granule_shift;
    let stride = g - 3;
    let mut table = cfg.root;
    for level in cfg.start_level..=3 {
        let shift = g + (3 - level) * stride;
        // The root level may resolve more than `stride` bits: concatenated stage-2 tables.
        let bits = if level == cfg.start_level { cfg.input_bits - shift } else { stride };
        let index = (addr >> shift) & crate::bits::low_mask(bits);
        let table_pa = table_address(table)?;
        let desc_addr = table_pa + index * 8;
        let Some(desc) = memory.read_u64(desc_addr) else {
            return Err(Fault { fetch_addr: desc_addr, ..fault(EventType::WalkExternalAbort) });
        };
        if desc & 1 == 0 || (level == 3 && desc & 2 == 0) {
            return Err(fault(EventType::Translation));
        }
        let next_or_output = desc & crate::bits::addr_mask(g, 47);
        if next_or_output >> cfg.output_bits != 0 {
            return Err(fault(EventType::AddressSize));
        }
        if level < 3 && desc & 2 != 0 {
            table = next_or_output;
            continue;
        }
        // Blocks exist at level 1 and 2 with 4K granules, at level 2 with 16K and 64K.
        if level < 3 && (level == 0 || (g != 12 && level < 2)) {
            return Err(fault(EventType::Translation));
        }
        if desc & (1 << 10) == 0 && !cfg.affd {
            return Err(fault(EventType::Access));
        }
        let (readable, writable) = match cfg.stage {
            // AP[2] (bit 7) = 1: read-only.
            Stage::One => (true, desc & (1 << 7) == 0),
            // S2AP (bits 7:6): bit 6 read, bit 7 write.
            Stage::Two => (desc & (1 << 6) != 0, desc & (1 << 7) != 0),
        };
        if (write && !writable) || (!write && !readable) {
            return Err(fault(EventType::Permission));
        }
        let size = 1u64 << shift;
        return Ok(Leaf { output: (next_or_output & !(size - 1)) | (addr & (size - 1)), size, writable });
    }
    unreachable!("level 3 always ends the walk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_start_levels_follow_input_size() {
        assert_eq!(WalkConfig::stage1_start_level(48, 12), 0);
        assert_eq!(WalkConfig::stage1_start_level(39, 12), 1);
        assert_eq!(WalkConfig::stage1_start_level(30, 12), 2);
        assert_eq!(WalkConfig::stage1_start_level(48, 14), 0);
        assert_eq!(WalkConfig::stage1_start_level(47, 14), 1);
        assert_eq!(WalkConfig::stage1_start_level(36, 14), 2);
        assert_eq!(WalkConfig::stage1_start_level(42, 16), 2);
    }
}
