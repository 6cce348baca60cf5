//! Test rig: fake memory, the model SMMU, a driver instance, and a hand-written page-table
//! builder (VMSAv8-64, 4K granule) for stage-1 and stage-2 tables.

use alloc::rc::Rc;
use core::cell::Cell;

use crate::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use crate::smmu::{Env, Smmu, SmmuOptions};
use crate::SmmuError;

pub const MEM_BASE: u64 = 0x4000_0000;
pub const MEM_SIZE: usize = 32 << 20;
/// The driver's DMA allocations stay below this; page tables and data pages live above.
pub const DRIVER_END: u64 = MEM_BASE + (16 << 20);
pub const TABLES_BASE: u64 = DRIVER_END;
pub const GUEST_BASE: u64 = MEM_BASE + (24 << 20);

/// Descriptor bits: valid + table/page, access flag.
pub const VALID_PAGE: u64 = 0b11;
pub const AF: u64 = 1 << 10;
/// Stage-1 page, read/write, EL0-accessible (AP[1]), as `iommu-pt` would write it.
pub const S1_RW: u64 = VALID_PAGE | AF | 1 << 6;
/// Stage-1 page, read-only (AP[2]).
pub const S1_RO: u64 = S1_RW | 1 << 7;
/// Stage-2 page, S2AP = read/write.
pub const S2_RW: u64 = VALID_PAGE | AF | 0b11 << 6;
/// Stage-2 page, S2AP = read-only.
pub const S2_RO: u64 = VALID_PAGE | AF | 0b01 << 6;

pub struct Rig {
    pub smmu: Smmu<SmmuModel>,
    pub dma: ModelDma,
    pub clock: StepClock,
    pub memory: Rc<FakeMemory>,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(ModelConfig::qemu(), SmmuOptions::default()).expect("bring-up on the QEMU model")
    }

    /// The QEMU model without range invalidation (IDR3.RIL, bit 10, clear).
    pub fn without_range_invalidation(options: SmmuOptions) -> Rig {
        let mut config = ModelConfig::qemu();
        config.idr[3] &= !(1 << 10);
        Rig::with(config, options).expect("bring-up on the model without RIL")
    }

    pub fn with(config: ModelConfig, options: SmmuOptions) -> Result<Rig, SmmuError> {
        let memory = FakeMemory::new(MEM_BASE, MEM_SIZE);
        let mut dma = ModelDma::in_range(memory.clone(), MEM_BASE, DRIVER_END);
        let clock = StepClock::new(1_000);
        let model = SmmuModel::new(memory.clone(), config);
        let smmu = Smmu::init(model, &mut Env { dma: &mut dma, clock: &clock }, options)?;
        Ok(Rig { smmu, dma, clock, memory })
    }

    /// The driver and an environment borrowing the rig's allocator and clock.
    pub fn parts(&mut self) -> (&mut Smmu<SmmuModel>, Env<'_>) {
        (&mut self.smmu, Env { dma: &mut self.dma, clock: &self.clock })
    }

    pub fn model(&self) -> &SmmuModel {
        self.smmu.registers()
    }
}

/// Builds 4K-granule tables in fake memory from a bump region. Next-level table pointers are
/// written as `physical - delta` (wrapping): with `delta` 0 the walker sees physical addresses; for
/// a nested guest, `delta` = PA - IPA of the region, so descriptors hold IPAs that stage 2
/// translates.
pub struct PageTables {
    memory: Rc<FakeMemory>,
    next: Cell<u64>,
    delta: u64,
}

impl PageTables {
    pub fn new(memory: &Rc<FakeMemory>, base: u64, delta: u64) -> PageTables {
        PageTables { memory: memory.clone(), next: Cell::new(base), delta }
    }

    /// A zeroed, size-aligned table (concatenated stage-2 roots need more than 4K).
    pub fn alloc(&self, size: u64) -> u64 {
        let addr = (self.next.get() + size - 1) & !(size - 1);
        self.next.set(addr + size);
        addr
    }

    /// Physical address → the address the walker sees.
    pub fn walker_address(&self, pa: u64) -> u64 {
        pa.wrapping_sub(self.delta)
    }

    /// Maps the 4K page at `va` to `pa` with leaf attributes `leaf`.
    pub fn map(&self, root: u64, start_level: u32, input_bits: u32, va: u64, pa: u64, leaf: u64) {
        let slot = self.leaf_slot(root, start_level, input_bits, va);
        assert!(self.memory.write_u64(slot, pa | leaf));
    }

    /// Clears the leaf entry of `va` (leaving the tables).
    pub fn unmap(&self, root: u64, start_level: u32, input_bits: u32, va: u64) {
        let slot = self.leaf_slot(root, start_level, input_bits, va);
        assert!(self.memory.write_u64(slot, 0));
    }

    /// Points the level-`level` table descriptor on `va`'s path at a new, empty table (the old
    /// one stays intact), as an unmap that freed a table and a later map that built another
    /// would: a non-leaf entry changed.
    pub fn relink(&self, root: u64, start_level: u32, input_bits: u32, va: u64, level: u32) {
        let mut table = root;
        for current in start_level..=level {
            let shift = 12 + (3 - current) * 9;
            let bits = if current == start_level { input_bits - shift } else { 9 };
            let slot = table + ((va >> shift) & ((1 << bits) - 1)) * 8;
            let desc = self.memory.read_u64(slot).unwrap();
            assert!(desc & 0b11 == 0b11, "relinking below a missing table");
            if current == level {
                let next = self.alloc(4096);
                assert!(self.memory.write_u64(slot, self.walker_address(next) | 0b11));
                return;
            }
            table = (desc & 0x0000_FFFF_FFFF_F000).wrapping_add(self.delta);
        }
    }

    fn leaf_slot(&self, root: u64, start_level: u32, input_bits: u32, va: u64) -> u64 {
        let mut table = root;
        for level in start_level..3 {
            let shift = 12 + (3 - level) * 9;
            let bits = if level == start_level { input_bits - shift } else { 9 };
            let slot = table + ((va >> shift) & ((1 << bits) - 1)) * 8;
            let desc = self.memory.read_u64(slot).unwrap();
            table = if desc & 1 == 0 {
                let next = self.alloc(4096);
                assert!(self.memory.write_u64(slot, self.walker_address(next) | 0b11));
                next
            } else {
                (desc & 0x0000_FFFF_FFFF_F000).wrapping_add(self.delta)
            };
        }
        table + ((va >> 12) & 0x1FF) * 8
    }
}
