//! Minimal hand-built page tables for tests: 4 KiB mappings in VT-d second-level format
//! (R bit 0, W bit 1) or IA-32e first-level format (P bit 0, R/W bit 1, U/S bit 2).
//!
//! Production tables come from the `iommu-pt` crate; these exist so the driver and model can
//! be tested on their own, and are deliberately simple: no large pages, no freeing.

use alloc::vec::Vec;

use hwio::DmaAllocator;

use super::memory::FakeDma;

/// Which entry format the tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    SecondLevel,
    FirstLevel,
}

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const SL_READ: u64 = 1 << 0;
const SL_WRITE: u64 = 1 << 1;
const FL_PRESENT: u64 = 1 << 0;
const FL_WRITE: u64 = 1 << 1;
const FL_USER: u64 = 1 << 2;

/// A page table under construction in [`FakeDma`] memory.
#[derive(Debug)]
pub struct TestPageTable {
    format: TableFormat,
    levels: u8,
    root: u64,
    pointer_bias: u64,
    tables: Vec<u64>,
    user_accessible: bool,
}

impl TestPageTable {
    pub fn new(dma: &mut FakeDma, format: TableFormat, levels: u8) -> Self {
        let root = dma.alloc_zeroed(4096, 4096).expect("page-table memory").phys;
        Self { format, levels, root, pointer_bias: 0, tables: Vec::from([root]), user_accessible: true }
    }

    /// Table pointers are stored as `phys + bias`: for nested translation the first-level
    /// tables hold guest-physical addresses, which a second-level table maps back.
    pub fn with_pointer_bias(mut self, bias: u64) -> Self {
        self.pointer_bias = bias;
        self
    }

    /// First-level entries written from now on have U/S clear (QEMU faults those with 81h).
    pub fn supervisor_only(mut self) -> Self {
        self.user_accessible = false;
        self
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Physical addresses of every table page, root first.
    pub fn table_pages(&self) -> &[u64] {
        &self.tables
    }

    fn flags(&self, leaf: bool, writable: bool) -> u64 {
        match self.format {
            TableFormat::SecondLevel => SL_READ | if !leaf || writable { SL_WRITE } else { 0 },
            TableFormat::FirstLevel => {
                FL_PRESENT
                    | if !leaf || writable { FL_WRITE } else { 0 }
                    | if self.user_accessible { FL_USER } else { 0 }
            }
        }
    }

    fn index(iova: u64, level: u8) -> u64 {
        iova >> (12 + 9 * (level as u32 - 1)) & 0x1ff
    }

    /// Maps the 4 KiB page at `iova` to `output` (stored as given, unbiased).
    pub fn map_4k(&mut self, dma: &mut FakeDma, iova: u64, output: u64, writable: bool) {
        let memory = dma.memory().clone();
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let slot = table + Self::index(iova, level) * 8;
            let entry = memory.read_u64(slot).expect("table inside memory");
            table = if entry & 1 != 0 {
                (entry & ADDRESS_MASK) - self.pointer_bias
            } else {
                let next = dma.alloc_zeroed(4096, 4096).expect("page-table memory").phys;
                self.tables.push(next);
                memory.write_u64(slot, (next + self.pointer_bias) | self.flags(false, true));
                next
            };
        }
        let leaf = table + Self::index(iova, 1) * 8;
        memory.write_u64(leaf, output & ADDRESS_MASK | self.flags(true, writable));
    }

    /// Points the level-`level` entry covering `iova` at a new, empty table (the old one stays
    /// intact in memory), as an unmap that freed a table and a later map that built another
    /// would. Returns the new table's physical address.
    pub fn relink(&mut self, dma: &mut FakeDma, iova: u64, level: u8) -> u64 {
        assert!((2..=self.levels).contains(&level), "only non-leaf levels link tables");
        let memory = dma.memory().clone();
        let mut table = self.root;
        for upper in (level + 1..=self.levels).rev() {
            let entry = memory.read_u64(table + Self::index(iova, upper) * 8).expect("table inside memory");
            assert!(entry & 1 != 0, "relinking below a missing table");
            table = (entry & ADDRESS_MASK) - self.pointer_bias;
        }
        let next = dma.alloc_zeroed(4096, 4096).expect("page-table memory").phys;
        self.tables.push(next);
        memory.write_u64(table + Self::index(iova, level) * 8, (next + self.pointer_bias) | self.flags(false, true));
        next
    }

    /// Removes the 4 KiB mapping at `iova` (leaves intermediate tables in place).
    pub fn unmap_4k(&self, dma: &FakeDma, iova: u64) {
        let memory = dma.memory();
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let entry = memory.read_u64(table + Self::index(iova, level) * 8).expect("table inside memory");
            assert!(entry & 1 != 0, "unmapping an address that was never mapped");
            table = (entry & ADDRESS_MASK) - self.pointer_bias;
        }
        memory.write_u64(table + Self::index(iova, 1) * 8, 0);
    }
}
