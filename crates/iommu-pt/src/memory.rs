//! Table pages: hardware entries the IOMMU walks, plus a software shadow the engine walks.
//!
//! Entries link tables by *physical* address, but the engine must reach a child table through a
//! CPU pointer, and `hwio::DmaAllocator` offers no physical-to-virtual translation. Each table
//! allocation therefore holds two halves:
//!
//! ```text
//! virt + 0                 : hardware entries, max(entries * 8, 4096) bytes, at `phys`
//! virt + hardware_bytes    : shadow, one `usize` per entry: the CPU address of the child table
//!                            that entry links to (0 when none)
//! ```
//!
//! The device only ever sees the first half (no entry points into the shadow). The price is one
//! extra page of memory per table page (0.2% of the memory a fully populated leaf table maps);
//! the gain is an engine with no heap, no lookup structure and O(1) descent per level.
//!
//! Tables of at most 512 entries also keep a count of their non-zero entries in the low bits of
//! their last shadow word (child tables are at least 4 KiB aligned, so a child address never
//! uses those bits): whether a table became empty after an unmap is then one read rather than a
//! scan of 512 entries.
//!
//! The shadow also threads intrusive lists through tables that are waiting to be linked
//! ([`TableList`] as a reservation pool) or waiting for the IOTLB invalidation before they may be
//! reused ([`DeferredFree`]): a table on such a list is linked from no live entry, so its first two
//! shadow words are free to hold the next element's physical and virtual address.

use core::sync::atomic::{AtomicU64, Ordering};
use hwio::{DmaAllocator, DmaBuffer};

use crate::{Error, ENTRIES_PER_TABLE};

/// Bytes of one hardware table page (4 KiB granule).
pub(crate) const TABLE_BYTES: usize = 4096;
/// Bytes of one entry.
const ENTRY_BYTES: usize = 8;
const _: () = assert!(ENTRIES_PER_TABLE * ENTRY_BYTES == TABLE_BYTES);
const _: () = assert!(core::mem::size_of::<usize>() <= ENTRY_BYTES);
const _: () = assert!(core::mem::size_of::<AtomicU64>() == ENTRY_BYTES);
/// Low bits of a shadow word that hold the live-entry count (see the module documentation):
/// below the 4 KiB alignment of every table, and wide enough for 512.
const LIVE_MASK: usize = TABLE_BYTES - 1;
const _: () = assert!(ENTRIES_PER_TABLE <= LIVE_MASK);

/// Bits of a table's physical address that carry log2 of its entry count instead (tables are
/// at least 4 KiB aligned, and no table has more than 2^63 entries).
const ENTRIES_SHIFT_MASK: u64 = 0x3f;

/// One table allocation (hardware entries + shadow). `Copy` because it is a handle: ownership of
/// the memory is tracked by the tree and the lists, not by this value. Two words, so the engine
/// passes it in registers: the CPU address, and the physical address with log2 of the entry
/// count in its low bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TablePage {
    virt: *mut u8,
    phys_and_entries_shift: u64,
}
const _: () = assert!(core::mem::size_of::<TablePage>() == 16);

impl TablePage {
    /// Bytes of the hardware half for a table of `entries` entries: a whole page at least, and
    /// for a concatenated root the entries themselves (Arm ARM requires the concatenated table
    /// to be aligned to its full size, hence the alignment request equal to this value).
    const fn hardware_bytes(entries: usize) -> usize {
        if entries * ENTRY_BYTES > TABLE_BYTES {
            entries * ENTRY_BYTES
        } else {
            TABLE_BYTES
        }
    }

    /// Allocates a zeroed table of `entries` entries (a power of two).
    pub(crate) fn allocate<A: DmaAllocator + ?Sized>(entries: usize, alloc: &mut A) -> Result<Self, Error> {
        let hardware = Self::hardware_bytes(entries);
        let buffer = alloc.alloc_zeroed(2 * hardware, hardware).ok_or(Error::OutOfMemory)?;
        // The allocator is outside this crate: check what the memory accessors below rely on.
        // The exact size matters because child tables are later freed through a `DmaBuffer`
        // rebuilt from (phys, virt, size) rather than the one returned here.
        // Page-aligned CPU addresses leave the low bits of a child pointer free for the count.
        let usable = buffer.size == 2 * hardware
            && buffer.phys.is_multiple_of(hardware as u64)
            && !buffer.virt.is_null()
            && (buffer.virt as usize).is_multiple_of(TABLE_BYTES);
        if !usable {
            alloc.free(buffer);
            return Err(Error::BadAllocation);
        }
        Ok(Self { virt: buffer.virt, phys_and_entries_shift: buffer.phys | entries.trailing_zeros() as u64 })
    }

    /// Rebuilds the handle of a 512-entry child table from the parent's entry and shadow.
    #[inline]
    fn child_handle(phys: u64, virt: *mut u8) -> Self {
        Self { virt, phys_and_entries_shift: phys | ENTRIES_PER_TABLE.trailing_zeros() as u64 }
    }

    #[inline]
    pub(crate) fn phys(&self) -> u64 {
        self.phys_and_entries_shift & !ENTRIES_SHIFT_MASK
    }

    #[inline]
    pub(crate) fn entries(&self) -> usize {
        1 << (self.phys_and_entries_shift & ENTRIES_SHIFT_MASK)
    }

    /// Returns the memory to the allocator. Only for tables no walker can reach any more.
    pub(crate) fn free<A: DmaAllocator + ?Sized>(self, alloc: &mut A) {
        let size = 2 * Self::hardware_bytes(self.entries());
        alloc.free(DmaBuffer { phys: self.phys(), virt: self.virt, size });
    }

    /// The hardware entry `index`, accessed atomically: a walker may concurrently set A/D bits
    /// (VT-d first-level, HTTU), and every store must be a single 64-bit write so a walker never
    /// sees half an entry.
    #[inline]
    fn entry(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.entries(), "entry index {index} outside a table of {}", self.entries());
        // SAFETY: `virt` is non-null, page aligned and valid for `hardware_bytes(entries)` bytes
        // (checked in `allocate`; child handles come from those same allocations), and `index` is
        // in bounds (asserted above). The memory stays allocated while this table is part of the
        // tree, and the returned reference does not outlive `&self`, which the engine only holds
        // while the table is part of the tree. The only other accessor is the IOMMU walker, which
        // uses atomic read-modify-write (VT-d) or single-copy-atomic 64-bit accesses (SMMU).
        unsafe { AtomicU64::from_ptr(self.virt.cast::<u64>().add(index)) }
    }

    #[inline]
    pub(crate) fn load(&self, index: usize) -> u64 {
        self.entry(index).load(Ordering::Acquire)
    }

    /// Writes an entry. The caller flushes it with [`TablePage::flush_entries`].
    #[inline]
    pub(crate) fn store(&self, index: usize, raw: u64) {
        let old = self.entry(index).swap(raw, Ordering::AcqRel);
        self.count_change(old, raw);
    }

    /// Writes `count` entries from `first` on, entry `first + i` getting `raw(i)`. Every one of
    /// them must be zero before (the map's plan pass checked), so the live count simply grows.
    /// The caller flushes them with [`TablePage::flush_entries`].
    pub(crate) fn fill_zero_entries(&self, first: usize, count: usize, raw: impl Fn(usize) -> u64) {
        assert!(first + count <= self.entries(), "fill of {count} entries at {first} in a table of {}", self.entries());
        for i in 0..count {
            let entry = self.entry(first + i);
            debug_assert_eq!(entry.load(Ordering::Relaxed), 0, "fill over a live entry");
            entry.store(raw(i), Ordering::Release);
        }
        if self.counts_live() && count != 0 {
            let word = self.read_shadow(self.count_word());
            self.write_shadow(self.count_word(), word + count);
        }
    }

    /// Zeroes every entry of `[first, first + count)` that `clear` selects; returns how many it
    /// cleared and the first and last index cleared.
    pub(crate) fn clear_entries(&self, first: usize, count: usize, clear: impl Fn(u64) -> bool) -> Option<(usize, usize, usize)> {
        assert!(first + count <= self.entries(), "clear of {count} entries at {first} in a table of {}", self.entries());
        let mut cleared: Option<(usize, usize, usize)> = None;
        for index in first..first + count {
            let entry = self.entry(index);
            let raw = entry.load(Ordering::Acquire);
            if raw != 0 && clear(raw) {
                entry.store(0, Ordering::Release);
                cleared = Some(match cleared {
                    Some((n, low, _)) => (n + 1, low, index),
                    None => (1, index, index),
                });
            }
        }
        if let (Some((n, _, _)), true) = (cleared, self.counts_live()) {
            let word = self.read_shadow(self.count_word());
            self.write_shadow(self.count_word(), word - n);
        }
        cleared
    }

    /// Index of the first entry of `[first, first + count)` that is not zero.
    pub(crate) fn first_live(&self, first: usize, count: usize) -> Option<usize> {
        assert!(first + count <= self.entries(), "scan of {count} entries at {first} in a table of {}", self.entries());
        (first..first + count).find(|&index| self.entry(index).load(Ordering::Acquire) != 0)
    }

    /// Atomically clears `bits`, returning the previous value (dirty-bit cleaning).
    pub(crate) fn fetch_clear(&self, index: usize, bits: u64) -> u64 {
        let old = self.entry(index).fetch_and(!bits, Ordering::AcqRel);
        self.count_change(old, old & !bits);
        old
    }

    /// Atomically sets `bits`, returning the previous value (DBM cleaning sets AP[2]).
    pub(crate) fn fetch_set(&self, index: usize, bits: u64) -> u64 {
        let old = self.entry(index).fetch_or(bits, Ordering::AcqRel);
        self.count_change(old, old | bits);
        old
    }

    /// Whether this table keeps a live-entry count (roots of more than 512 entries do not:
    /// the count would not fit below the alignment, and a root is never reclaimed anyway).
    #[inline]
    fn counts_live(&self) -> bool {
        self.entries() <= ENTRIES_PER_TABLE
    }

    /// The shadow word that carries the live-entry count in its low bits.
    #[inline]
    fn count_word(&self) -> usize {
        self.entries() - 1
    }

    /// Non-zero hardware entries, for tables that count them.
    #[inline]
    pub(crate) fn live_entries(&self) -> usize {
        self.read_shadow(self.count_word()) & LIVE_MASK
    }

    /// Keeps the live-entry count right when an entry changes from `old` to `new`.
    #[inline]
    fn count_change(&self, old: u64, new: u64) {
        if !self.counts_live() || (old == 0) == (new == 0) {
            return;
        }
        let word = self.read_shadow(self.count_word());
        let updated = if new == 0 { word - 1 } else { word + 1 };
        self.write_shadow(self.count_word(), updated);
    }

    /// Whether every hardware entry is zero.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        if self.counts_live() {
            self.live_entries() == 0
        } else {
            (0..self.entries()).all(|index| self.load(index) == 0)
        }
    }

    /// Pushes entries `[first, last]` out to a non-snooping walker.
    pub(crate) fn flush_entries<A: DmaAllocator + ?Sized>(&self, first: usize, last: usize, alloc: &A) {
        assert!(first <= last && last < self.entries(), "flush of entries {first}..={last}");
        // SAFETY: in bounds of the hardware half (asserted above); only the address is computed.
        let start = unsafe { self.virt.add(first * ENTRY_BYTES) };
        alloc.flush_for_device(start, (last - first + 1) * ENTRY_BYTES);
    }

    /// Pointer to shadow word `index`.
    #[inline]
    fn shadow_word(&self, index: usize) -> *mut usize {
        assert!(index < self.entries(), "shadow index {index} outside a table of {}", self.entries());
        // SAFETY: the shadow half starts `hardware_bytes` into the allocation and holds one word
        // per entry; `index` is in bounds (asserted above) and the allocation is 8-byte aligned.
        unsafe { self.virt.add(Self::hardware_bytes(self.entries())).cast::<usize>().add(index) }
    }

    #[inline]
    fn read_shadow(&self, index: usize) -> usize {
        // SAFETY: `shadow_word` is in bounds and aligned; the shadow is plain CPU memory that only
        // this engine touches, and the engine holds `&mut` on the tree for every write.
        unsafe { self.shadow_word(index).read() }
    }

    #[inline]
    fn write_shadow(&self, index: usize, value: usize) {
        // SAFETY: as in `read_shadow`.
        unsafe { self.shadow_word(index).write(value) }
    }

    /// The child table that entry `index` links to; `phys` is the address decoded from it.
    #[inline]
    pub(crate) fn child(&self, index: usize, phys: u64) -> TablePage {
        Self::child_handle(phys, (self.read_shadow(index) & !LIVE_MASK) as *mut u8)
    }

    /// Sets the child pointer of entry `index`, keeping the count bits the word may carry.
    fn set_child_pointer(&self, index: usize, virt: usize) {
        let count = self.read_shadow(index) & LIVE_MASK;
        self.write_shadow(index, virt | count);
    }

    /// Links entry `index` to `child` (writes the entry after the shadow) and flushes the entry.
    /// `child` must already be complete and flushed.
    pub(crate) fn link_child<A: DmaAllocator + ?Sized>(&self, index: usize, child: TablePage, raw: u64, alloc: &A) {
        self.set_child_pointer(index, child.virt as usize);
        order_table_writes_before_link();
        self.store(index, raw);
        self.flush_entries(index, index, alloc);
    }

    /// Forgets the child pointer of entry `index` (after the entry was cleared or replaced).
    pub(crate) fn forget_child(&self, index: usize) {
        self.set_child_pointer(index, 0);
    }
}

/// Orders every earlier write to table memory before the next write, so a walker that sees a new
/// link also sees the contents of the table it points to (VT-d walkers read memory in program
/// order on x86; Arm requires a barrier to the outer-shareable domain the SMMU belongs to, the
/// `dma_wmb` idiom).
pub(crate) fn order_table_writes_before_link() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `dmb oshst` orders stores; it reads and writes no memory or register that Rust
    // manages. Not marked `nomem`, so it is also a compiler barrier for memory accesses.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags));
    }
    // x86 stores become visible in program order (SDM Vol. 3A §9.2.2); only the compiler must
    // not reorder them, and a release fence compiles to no instruction there.
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(Ordering::Release);
}

/// An intrusive singly linked list of 512-entry table pages, threaded through shadow words 0
/// (next physical address) and 1 (next CPU address; 0 ends the list).
#[derive(Debug, Default)]
pub(crate) struct TableList {
    head: Option<TablePage>,
    len: usize,
}

impl TableList {
    pub(crate) const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    /// Allocates `count` zeroed tables, or none at all (`OutOfMemory`).
    pub(crate) fn reserve<A: DmaAllocator + ?Sized>(count: usize, alloc: &mut A) -> Result<Self, Error> {
        let mut list = Self::new();
        for _ in 0..count {
            match TablePage::allocate(ENTRIES_PER_TABLE, alloc) {
                Ok(table) => list.push(table),
                Err(error) => {
                    list.free_all(alloc);
                    return Err(error);
                }
            }
        }
        Ok(list)
    }

    pub(crate) fn push(&mut self, table: TablePage) {
        let (next_phys, next_virt) = match self.head {
            Some(next) => (next.phys() as usize, next.virt as usize),
            None => (0, 0),
        };
        table.write_shadow(0, next_phys);
        table.write_shadow(1, next_virt);
        self.head = Some(table);
        self.len += 1;
    }

    /// Removes the first table and restores its shadow words to zero, so a popped table is as
    /// fresh as a newly allocated one (its hardware half was never written while listed).
    pub(crate) fn pop(&mut self) -> Option<TablePage> {
        let table = self.head?;
        let next_phys = table.read_shadow(0) as u64;
        let next_virt = table.read_shadow(1);
        table.write_shadow(0, 0);
        table.write_shadow(1, 0);
        self.head = (next_virt != 0).then(|| TablePage::child_handle(next_phys, next_virt as *mut u8));
        self.len -= 1;
        Some(table)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Moves every table of `other` onto this list.
    pub(crate) fn append(&mut self, other: &mut TableList) {
        while let Some(table) = other.pop() {
            self.push(table);
        }
    }

    pub(crate) fn free_all<A: DmaAllocator + ?Sized>(&mut self, alloc: &mut A) {
        while let Some(table) = self.pop() {
            table.free(alloc);
        }
    }
}

/// Table pages unlinked from a tree that an IOMMU may still walk through stale paging-structure
/// cache entries. Release them only after the invalidation that covers them has completed
/// (VT-d: IOTLB page-selective invalidation with IH = 0, or domain-selective; SMMUv3: TLBI by VA
/// including non-leaf entries, then CMD_SYNC).
///
/// Holds no heap memory: the list runs through the pages themselves. Dropping it without
/// [`DeferredFree::release`] leaks the pages (the allocator is not at hand in `Drop`).
#[must_use = "the listed table pages leak unless released after the IOTLB invalidation"]
#[derive(Debug, Default)]
pub struct DeferredFree {
    tables: TableList,
}

// SAFETY: the listed pages are owned exclusively by this value (unlinked from every tree, on no
// other list); moving that ownership to another thread is like moving a `Box`.
unsafe impl Send for DeferredFree {}

impl DeferredFree {
    /// An empty list.
    pub const fn new() -> Self {
        Self { tables: TableList::new() }
    }

    /// Number of table pages waiting.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no table page is waiting (then no paging-structure-cache invalidation is needed).
    pub fn is_empty(&self) -> bool {
        self.tables.len() == 0
    }

    /// Moves every page of `other` onto this list (to release both after one invalidation).
    pub fn append(&mut self, mut other: DeferredFree) {
        while let Some(table) = other.tables.pop() {
            self.tables.push(table);
        }
    }

    /// Frees every listed page. Call after the invalidation completed.
    pub fn release<A: DmaAllocator + ?Sized>(mut self, alloc: &mut A) {
        self.tables.free_all(alloc);
    }

    pub(crate) fn push(&mut self, table: TablePage) {
        self.tables.push(table);
    }

    /// The listed pages, for the table tree that takes them back.
    pub(crate) fn into_list(mut self) -> TableList {
        core::mem::take(&mut self.tables)
    }
}
