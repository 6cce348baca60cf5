//! VMSAv8-64 translation table walks as the model SMMU performs them (Arm ARM D8, restricted to
//! what SMMU page tables use: 4K/16K/64K granules, 48-bit output, no 52-bit descriptors).
//!
//! Simplifications, each shared with QEMU 10.0.2's SMMUv3: stage-1 AP[1] (EL0 access) and the
//! hierarchical APTable/XNTable bits are ignored (only AP[2], read-only, is checked); execute
//! permissions are not modelled (the model has no instruction fetches).

use crate::event::{EventType, FaultClass};

use alloc::vec::Vec;

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
    /// Hardware access-flag and dirty-state update (CD.HA and CD.HD on an SMMU with
    /// IDR0.HTTU = 0b10): the walk sets AF instead of faulting, and a write through a
    /// writable-clean leaf (DBM set, AP[2] set) clears AP[2] (spec 3.13.3; Arm ARM D8.4.6).
    pub hardware_dirty: bool,
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
    /// Where the descriptor lies when it is a block (a leaf above level 3).
    pub block_descriptor: Option<u64>,
}

/// Memory as the SMMU's walker reads it: the CPU view when its accesses are coherent
/// (IDR0.COHACC), the flushed device view otherwise.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub memory: &'a FakeMemory,
    pub coherent: bool,
}

impl View<'_> {
    pub fn read_u64(&self, pa: u64) -> Option<u64> {
        if self.coherent {
            self.memory.read_u64(pa)
        } else {
            self.memory.device_read_u64(pa)
        }
    }

    /// The walker's atomic update of the descriptor at `pa`: memory, which the CPU then sees,
    /// becomes `update` of what the walker reads there now.
    fn update(&self, pa: u64, update: impl FnOnce(u64) -> u64) -> Option<()> {
        let current = self.read_u64(pa)?;
        self.memory.write_u64(pa, update(current)).then_some(())
    }
}

/// Stage-1 descriptor AF (bit 10), AP[2] (bit 7: read-only) and DBM (bit 51).
const ACCESS_FLAG: u64 = 1 << 10;
const AP2_READ_ONLY: u64 = 1 << 7;
const DBM: u64 = 1 << 51;

/// A cached table descriptor (spec 16.2 "walk cache"): the descriptor at `level` on the path of
/// every input address in `[input_base, input_base + size)`, tagged like TLB entries (`asid`
/// `None` for stage-2-only walks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalkEntry {
    pub vmid: u16,
    pub asid: Option<u16>,
    pub level: u32,
    pub granule_shift: u32,
    pub input_base: u64,
    pub size: u64,
    pub desc: u64,
}

/// The walk cache as one walk sees it: its tags.
pub(crate) struct WalkCursor<'a> {
    pub cache: &'a mut Vec<WalkEntry>,
    pub vmid: u16,
    pub asid: Option<u16>,
}

impl WalkCursor<'_> {
    fn get(&self, level: u32, granule_shift: u32, input_base: u64) -> Option<u64> {
        self.cache
            .iter()
            .find(|e| {
                (e.vmid, e.asid, e.level, e.granule_shift, e.input_base)
                    == (self.vmid, self.asid, level, granule_shift, input_base)
            })
            .map(|e| e.desc)
    }

    fn put(&mut self, level: u32, granule_shift: u32, input_base: u64, size: u64, desc: u64) {
        let entry = WalkEntry { vmid: self.vmid, asid: self.asid, level, granule_shift, input_base, size, desc };
        self.cache.push(entry);
    }
}

/// Walks `cfg` for `addr`. `table_address` maps each table address to the physical address to
/// fetch from (identity, or a stage-2 translation for nested stage-1 walks; its faults are passed
/// through). `class` is reported for faults of this walk. Table descriptors come from and go to
/// `cache` when one is given.
pub(crate) fn walk(
    memory: View,
    cfg: &WalkConfig,
    addr: u64,
    write: bool,
    class: FaultClass,
    table_address: &mut dyn FnMut(u64) -> Result<u64, Fault>,
    mut cache: Option<&mut WalkCursor>,
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
        let index = (addr >> shift) & hwio::bits::low_mask(bits);
        let region = 1u64 << shift;
        let input_base = addr & !(region - 1);
        let cached = cache.as_ref().and_then(|cache| cache.get(level, g, input_base));
        // Where the descriptor lives (None: from the walk cache, which holds table descriptors).
        let (desc, desc_addr) = match cached {
            Some(desc) => (desc, None),
            None => {
                let table_pa = table_address(table)?;
                let desc_addr = table_pa + index * 8;
                let Some(desc) = memory.read_u64(desc_addr) else {
                    return Err(Fault { fetch_addr: desc_addr, ..fault(EventType::WalkExternalAbort) });
                };
                (desc, Some(desc_addr))
            }
        };
        if desc & 1 == 0 || (level == 3 && desc & 2 == 0) {
            return Err(fault(EventType::Translation));
        }
        let next_or_output = desc & hwio::bits::addr_mask(g, 47);
        if next_or_output >> cfg.output_bits != 0 {
            return Err(fault(EventType::AddressSize));
        }
        if level < 3 && desc & 2 != 0 {
            if let (Some(cache), None) = (cache.as_deref_mut(), cached) {
                cache.put(level, g, input_base, region, desc);
            }
            table = next_or_output;
            continue;
        }
        // Blocks exist at level 1 and 2 with 4K granules, at level 2 with 16K and 64K.
        if level < 3 && (level == 0 || (g != 12 && level < 2)) {
            return Err(fault(EventType::Translation));
        }
        let updates = cfg.hardware_dirty && cfg.stage == Stage::One;
        let leaf_addr = desc_addr.expect("leaves are never cached in the walk cache");
        if desc & ACCESS_FLAG == 0 && updates {
            memory.update(leaf_addr, |now| now | ACCESS_FLAG).ok_or(fault(EventType::WalkExternalAbort))?;
        } else if desc & ACCESS_FLAG == 0 && !cfg.affd {
            return Err(fault(EventType::Access));
        }
        let (readable, writable) = match cfg.stage {
            // A write through a writable-clean leaf marks it dirty by clearing AP[2].
            Stage::One if write && updates && desc & (DBM | AP2_READ_ONLY) == DBM | AP2_READ_ONLY => {
                memory.update(leaf_addr, |now| now & !AP2_READ_ONLY).ok_or(fault(EventType::WalkExternalAbort))?;
                (true, true)
            }
            // AP[2] (bit 7) = 1: read-only.
            Stage::One => (true, desc & AP2_READ_ONLY == 0),
            // S2AP (bits 7:6): bit 6 read, bit 7 write.
            Stage::Two => (desc & (1 << 6) != 0, desc & (1 << 7) != 0),
        };
        if (write && !writable) || (!write && !readable) {
            return Err(fault(EventType::Permission));
        }
        let size = 1u64 << shift;
        let block_descriptor = (level < 3).then_some(leaf_addr);
        return Ok(Leaf { output: (next_or_output & !(size - 1)) | (addr & (size - 1)), size, writable, block_descriptor });
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
