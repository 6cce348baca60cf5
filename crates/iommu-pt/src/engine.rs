//! The format-independent radix-tree engine.
//!
//! All operations recurse over the tables a range touches and visit each touched entry once, so
//! they cost O(pages + tables) with no heap use; the only memory they take from the allocator is
//! table pages.
//!
//! - `map` runs the same recursion twice: a *plan* pass that reads only (refuses any overlap with
//!   an existing mapping and counts the tables that must be created), then, after reserving
//!   exactly that many tables, an *apply* pass that cannot fail. So a refused map changes nothing,
//!   and no transient mapping is ever visible to a device. Each chunk uses the largest leaf the
//!   format enables that the alignment of IOVA and physical address and the remaining length
//!   allow.
//! - `unmap` first splits the at most two large leaves cut by the range ends (or refuses, by
//!   policy), then clears every leaf in the range, unlinks tables that became empty and hands them
//!   back in a [`DeferredFree`] list rather than freeing them. Once the caller's invalidation
//!   completed, [`PageTable::recycle`] keeps a few of the emptied (hence zero) tables for the next
//!   map instead of returning them to the allocator.
//! - One exception keeps the common map/unmap cycle of a buffer cheap: an unmap that empties the
//!   tables along one path (the range lies inside one entry of each table above the lowest one)
//!   leaves them linked (they map nothing, so the invalidation covers leaves only), and the next
//!   map there finds its tables in place. At most
//!   one such *retained path* exists: an unmap that empties another one unlinks the previous one
//!   (its range joins that unmap's invalidation), and [`PageTable::prepare_map`] unlinks it where
//!   a map wants a large leaf in its place. Memory held beyond what the mappings need is thus one
//!   path plus the spare tables.
//! - `try_merge` is explicit: it replaces full tables of uniform, physically contiguous leaves by
//!   one large leaf where the format enables that size. Merging on every map would cost a
//!   512-entry scan per filled table on the hot path for a case (contiguous memory mapped in 4 KiB
//!   pieces) the caller can usually avoid by mapping larger ranges.

use core::mem::MaybeUninit;
use core::ops::Range;
use hwio::DmaAllocator;

use crate::format::{page_shift, page_size, Decoded, DirtyScheme, Format, Geometry, MAX_TOP_HEIGHT};
use crate::memory::{DeferredFree, TableList, TablePage};
use crate::{Error, Perm, ENTRIES_PER_TABLE, PAGE_SHIFT, PAGE_SIZE};

/// Where an IOVA leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the byte at the IOVA.
    pub phys: u64,
    /// Rights the leaf grants.
    pub perm: Perm,
    /// Size of the leaf (4 KiB, 2 MiB, 1 GiB).
    pub page_size: u64,
}

/// `unmap_breaking_before_make`'s invalidation of a block made invalid: (allocator, IOVA, size).
pub type BlockInvalidation<'a, A> = dyn FnMut(&mut A, u64, u64) + 'a;

/// What `unmap` does with a large leaf that the range covers only in part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitPolicy {
    /// Replace it by a table of smaller leaves, then unmap the covered ones.
    Split,
    /// Refuse the whole unmap with [`Error::WouldSplit`] (iommufd semantics: an unmap must not cut
    /// a mapping).
    Refuse,
}

/// Whether `read_and_clear_dirty` cleans what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyReadMode {
    /// Report and mark clean (the IOMMUFD default).
    ReadAndClear,
    /// Report only (IOMMU_DIRTY_NO_CLEAR).
    ReadOnly,
}

/// Result of `unmap`: what the caller's IOTLB invalidation must cover.
#[must_use = "freed_tables must be released after the IOTLB invalidation"]
#[derive(Debug)]
pub struct Unmapped {
    /// Smallest IOVA range covering every leaf removed and every table unlinked, `None` if
    /// nothing changed.
    pub range: Option<Range<u64>>,
    /// Bytes of leaves removed.
    pub bytes: u64,
    /// Largest leaf removed or split (0 if none): the invalidation granularity hint (VT-d PSI
    /// address mask, SMMU TLBI range TTL/TG).
    pub largest_page_size: u64,
    /// Tables unlinked. Non-empty means paging-structure caches must be invalidated too (VT-d:
    /// IH = 0; SMMU: non-leaf TLBI). Release after the invalidation completed.
    pub freed_tables: DeferredFree,
}

/// Result of `try_merge`.
#[must_use = "freed_tables must be released after the IOTLB invalidation"]
#[derive(Debug)]
pub struct Merged {
    /// Smallest IOVA range covering every new large leaf, `None` if nothing merged.
    pub range: Option<Range<u64>>,
    /// Number of tables replaced by a large leaf.
    pub merged_entries: usize,
    /// Largest leaf created (0 if none).
    pub largest_page_size: u64,
    /// The replaced tables, to release after invalidating the paging-structure caches for `range`.
    pub freed_tables: DeferredFree,
}

/// Result of `read_and_clear_dirty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyReport {
    /// 4 KiB pages reported dirty (bits set in the bitmap).
    pub dirty_pages: u64,
    /// Leaves marked clean. Non-zero means the caller must invalidate the IOTLB over the range:
    /// a cached translation would otherwise let writes go unrecorded.
    pub cleaned_entries: usize,
}

/// An I/O page table of format `F`.
///
/// Owns its table pages; [`PageTable::destroy`] returns them. Dropping a `PageTable` without
/// `destroy` leaks them (the allocator is not at hand in `Drop`).
#[derive(Debug)]
pub struct PageTable<F: Format> {
    format: F,
    geometry: Geometry,
    root: TablePage,
    /// Height of the largest leaf the format enables (0: only 4 KiB pages).
    largest_leaf_height: u8,
    /// Zeroed tables no walker can reach, kept for the next `map` (see `recycle`).
    spare: TableList,
    /// An IOVA whose path may hold tables that an unmap emptied and left linked (see the module
    /// documentation); they hang below the highest table of the path that maps nothing.
    retained: Option<u64>,
}

/// Tables `recycle` keeps at most: one 4 KiB mapping in an empty region of a 5-level tree needs
/// four, so eight cover a map/unmap cycle twice over while bounding memory held idle (64 KiB).
const SPARE_TABLES: usize = 8;

// SAFETY: every table page reached through the raw pointers inside is owned exclusively by this
// `PageTable` (allocated for it, linked only into its tree or its own lists, freed only through
// it), so moving it to another thread moves that ownership like a `Box` would.
unsafe impl<F: Format + Send> Send for PageTable<F> {}

/// One entry slot of a table that a range touches: the part `[start, end)` of the slot starting at
/// `base`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    base: u64,
    start: u64,
    end: u64,
}

impl Slot {
    /// Whether the range covers the whole slot.
    fn whole(&self, height: u8) -> bool {
        self.start == self.base && self.end - self.base == page_size(height)
    }
}

/// The slots of one table (height `height`, `entries` entries) that `[start, end)` touches.
struct Slots {
    next: u64,
    end: u64,
    height: u8,
    index_mask: usize,
}

impl Slots {
    fn new(start: u64, end: u64, height: u8, entries: usize) -> Self {
        Self { next: start, end, height, index_mask: entries - 1 }
    }
}

impl Iterator for Slots {
    type Item = Slot;
    fn next(&mut self) -> Option<Slot> {
        if self.next >= self.end {
            return None;
        }
        let size = page_size(self.height);
        let base = self.next & !(size - 1);
        // No overflow: ranges end at or below the input limit, at most 2^57.
        let end = self.end.min(base + size);
        let slot = Slot {
            index: (self.next >> page_shift(self.height)) as usize & self.index_mask,
            base,
            start: self.next,
            end,
        };
        self.next = end;
        Some(slot)
    }
}

/// The entries of one table written by an operation, flushed together once it is done with the
/// table (one `flush_for_device` per table rather than per entry).
#[derive(Default)]
struct WrittenEntries {
    span: Option<(usize, usize)>,
}

impl WrittenEntries {
    fn note(&mut self, index: usize) {
        self.span = Some(match self.span {
            Some((first, last)) => (first.min(index), last.max(index)),
            None => (index, index),
        });
    }

    fn flush<A: DmaAllocator + ?Sized>(self, table: TablePage, alloc: &A) {
        if let Some((first, last)) = self.span {
            table.flush_entries(first, last, alloc);
        }
    }
}

/// Accumulates the IOVA extent, byte count and largest leaf of what an operation changed.
#[derive(Default)]
struct Extent {
    range: Option<Range<u64>>,
    bytes: u64,
    largest_page_size: u64,
    leaves: usize,
}

impl Extent {
    fn record(&mut self, base: u64, size: u64) {
        let end = base + size;
        self.range = Some(match self.range.take() {
            Some(range) => range.start.min(base)..range.end.max(end),
            None => base..end,
        });
        self.bytes += size;
        self.leaves += 1;
        self.largest_page_size = self.largest_page_size.max(size);
    }

    /// Widens the range over `[start, end)` (tables unlinked there) without counting leaves.
    fn cover(&mut self, start: u64, end: u64) {
        self.range = Some(match self.range.take() {
            Some(range) => range.start.min(start)..range.end.max(end),
            None => start..end,
        });
    }

    /// Records `count` 4 KiB leaves removed between `start` and `end`.
    fn record_pages(&mut self, start: u64, end: u64, count: usize) {
        self.range = Some(match self.range.take() {
            Some(range) => range.start.min(start)..range.end.max(end),
            None => start..end,
        });
        self.bytes += count as u64 * PAGE_SIZE;
        self.leaves += count;
        self.largest_page_size = self.largest_page_size.max(PAGE_SIZE);
    }
}

/// A leaf found by a walk.
#[derive(Clone, Copy)]
struct FoundLeaf {
    table: TablePage,
    index: usize,
    height: u8,
    phys: u64,
    attributes: u64,
}

/// The (parent, entry, child) steps of one descent: the path `unmap` took, to unlink what it
/// emptied. At most one step per level below the root. Left uninitialized beyond `len`: this
/// sits on the path of every small unmap, where zeroing it cost more than the walk.
struct PathSteps {
    steps: [MaybeUninit<(TablePage, usize, TablePage)>; MAX_TOP_HEIGHT as usize],
    len: usize,
}

impl PathSteps {
    fn new() -> Self {
        Self { steps: [const { MaybeUninit::uninit() }; MAX_TOP_HEIGHT as usize], len: 0 }
    }

    fn push(&mut self, parent: TablePage, index: usize, child: TablePage) {
        self.steps[self.len].write((parent, index, child));
        self.len += 1;
    }

    /// Step `depth` (0: the one from the root).
    fn step(&self, depth: usize) -> (TablePage, usize, TablePage) {
        assert!(depth < self.len, "step {depth} of a path of {}", self.len);
        // SAFETY: steps below `len` were written by `push` (checked above), and the element type
        // is `Copy`, so reading it leaves the array as it was.
        unsafe { self.steps[depth].assume_init() }
    }

    /// Deepest first: unlinks each child that became empty and queues it for release after
    /// the invalidation; stops at the first that still maps something (its parents do too).
    /// Returns the depth of the highest step unlinked.
    fn unlink_emptied<A: DmaAllocator + ?Sized>(&self, freed: &mut DeferredFree, alloc: &A) -> Option<usize> {
        let mut highest = None;
        for depth in (0..self.len).rev() {
            let (parent, index, child) = self.step(depth);
            if !child.is_empty() {
                break;
            }
            freed.push(child);
            parent.store(index, 0);
            parent.forget_child(index);
            parent.flush_entries(index, index, alloc);
            highest = Some(depth);
        }
        highest
    }
}

/// Where a call of `unmap_level` stands in an unmap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The first walk of an unmap, before any split: gives up (`None`) rather than change
    /// anything if the range needs a split or the per-entry loop.
    FirstTry,
    /// The top of the full unmap, after the splits.
    Top,
    /// Below the per-entry loop of a larger unmap: never keeps an emptied path.
    Nested,
}

/// State of one of the two passes of `map` (see the module documentation).
struct MapPass<'a> {
    /// `None` in the plan pass, which only reads. In the apply pass, the tables the plan
    /// counted, to be linked where the range needs a table that does not exist.
    reserved: Option<&'a mut TableList>,
    /// Tables the plan pass found missing.
    tables_needed: usize,
}

impl<F: Format> PageTable<F> {
    /// An empty table tree (just the root) in `format`'s configuration.
    pub fn new<A: DmaAllocator + ?Sized>(alloc: &mut A, format: F) -> Result<Self, Error> {
        let geometry = format.geometry();
        let top = geometry.top_height();
        let leaves_can_split = (1..=top).all(|h| !format.leaf_allowed(h) || format.leaf_allowed(h - 1));
        let output_bits = format.output_bits();
        if !format.leaf_allowed(0) || !leaves_can_split || !(32..=52).contains(&output_bits) {
            return Err(Error::InvalidConfig);
        }
        let largest_leaf_height = (0..=top).rev().find(|&h| format.leaf_allowed(h)).unwrap_or(0);
        let root = TablePage::allocate(geometry.root_entries(), alloc)?;
        Ok(Self { format, geometry, root, largest_leaf_height, spare: TableList::new(), retained: None })
    }

    /// The format and its configuration.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// Shape of the tree.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Physical address of the root table (for the context / PASID entry, CD TTB0, STE S2TTB).
    pub fn root_phys(&self) -> u64 {
        self.root.phys()
    }

    /// Number of levels a walk visits.
    pub fn levels(&self) -> u8 {
        self.geometry.levels()
    }

    /// Maps `[iova, iova + len)` to `[phys, phys + len)` with `perm`.
    ///
    /// Refuses, changing nothing, if any part of the range is already mapped, if an address or
    /// the length is not 4 KiB aligned or zero, if either range wraps or leaves its address
    /// width, if the format cannot express `perm`, or if table memory runs out.
    pub fn map<A: DmaAllocator + ?Sized>(
        &mut self,
        iova: u64,
        phys: u64,
        len: u64,
        perm: Perm,
        alloc: &mut A,
    ) -> Result<(), Error> {
        let end = self.check_input_range(iova, len)?;
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let phys_end = phys.checked_add(len).ok_or(Error::Overflow)?;
        if phys_end > 1u64 << self.format.output_bits() {
            return Err(Error::OutputOutOfRange);
        }
        let attributes = self.format.leaf_attributes(perm)?;
        if let Some(result) = self.map_on_existing_path(iova, end, phys, attributes, alloc) {
            return result;
        }
        let top = self.geometry.top_height();

        let mut plan = MapPass { reserved: None, tables_needed: 0 };
        self.map_level(Some(self.root), top, iova, end, phys, attributes, &mut plan, alloc)?;
        // The spare tables are the reservation; allocate only what they lack.
        let mut allocated = TableList::reserve(plan.tables_needed.saturating_sub(self.spare.len()), alloc)?;
        let mut reserved = core::mem::take(&mut self.spare);
        reserved.append(&mut allocated);
        let mut apply = MapPass { reserved: Some(&mut reserved), tables_needed: 0 };
        let result = self.map_level(Some(self.root), top, iova, end, phys, attributes, &mut apply, alloc);
        // The plan counted exactly what the apply pass links; anything left was never visible to
        // a walker and stays zero.
        self.spare = reserved;
        result
    }

    /// The common small map in one walk: the range lies inside one entry of every table down to
    /// an existing table that takes it whole, as 4 KiB leaves or as one large leaf. `None` if a
    /// table on the way is missing or the range spans entries above the lowest table: then the
    /// two passes of `map` decide (they agree with this on every outcome, only slower).
    fn map_on_existing_path<A: DmaAllocator + ?Sized>(
        &self,
        start: u64,
        end: u64,
        phys: u64,
        attributes: u64,
        alloc: &A,
    ) -> Option<Result<(), Error>> {
        let (mut table, mut height) = (self.root, self.geometry.top_height());
        while height > 0 {
            let size = page_size(height);
            let base = start & !(size - 1);
            if end - base > size {
                return None;
            }
            let index = (start >> page_shift(height)) as usize & (table.entries() - 1);
            let decoded = self.format.decode(table.load(index), height);
            let one_leaf = start == base && end - base == size && self.format.leaf_allowed(height) && phys.is_multiple_of(size);
            match decoded {
                Decoded::Leaf { .. } => return Some(Err(Error::AlreadyMapped { iova: base })),
                Decoded::Absent if one_leaf => {
                    table.store(index, self.format.encode_leaf(attributes, phys, height));
                    table.flush_entries(index, index, alloc);
                    return Some(Ok(()));
                }
                Decoded::Absent => return None,
                // A table where the large leaf would go (the retained path, or live smaller
                // leaves): the two passes tell which (see `map_slots`).
                Decoded::Table { .. } if one_leaf => return None,
                Decoded::Table { phys: child } => table = table.child(index, child),
            }
            height -= 1;
        }
        Some(self.map_pages(Some(table), start, end, phys, attributes, false, alloc).and_then(|()| {
            self.map_pages(Some(table), start, end, phys, attributes, true, alloc)
        }))
    }

    /// Whether a leaf at `height` can map the chunk `slot` of the range at `phys`.
    fn leaf_fits(&self, height: u8, slot: &Slot, phys: u64) -> bool {
        self.format.leaf_allowed(height) && slot.whole(height) && phys.is_multiple_of(page_size(height))
    }

    /// One level of `map`. `table` is `None` in the plan pass below a table that does not exist
    /// yet (everything there is absent); in the apply pass it is always a table. `phys` is the
    /// output address of `start`.
    ///
    /// While the range lies inside one entry that is not a leaf for it (the path of a small map
    /// down to its leaf table), this descends in a loop. Tables it creates on the way are linked
    /// to each other at once (no walker reaches them yet), and the highest of them into the live
    /// tree last, once everything below it is written. Ranges that span entries go through
    /// [`PageTable::map_slots`].
    #[allow(clippy::too_many_arguments)]
    fn map_level<A: DmaAllocator + ?Sized>(
        &self,
        table: Option<TablePage>,
        height: u8,
        start: u64,
        end: u64,
        phys: u64,
        attributes: u64,
        pass: &mut MapPass<'_>,
        alloc: &A,
    ) -> Result<(), Error> {
        let (mut table, mut height) = (table, height);
        let mut first_new: Option<(TablePage, usize, TablePage)> = None;
        loop {
            if height == 0 {
                self.map_pages(table, start, end, phys, attributes, pass.reserved.is_some(), alloc)?;
                break;
            }
            let size = page_size(height);
            let base = start & !(size - 1);
            let one_leaf = start == base && end - base == size && self.format.leaf_allowed(height) && phys.is_multiple_of(size);
            if end - base > size || one_leaf {
                self.map_slots(table, height, start, end, phys, attributes, pass, alloc)?;
                break;
            }
            if let Some(parent) = table {
                let index = (start >> page_shift(height)) as usize & (parent.entries() - 1);
                table = match self.format.decode(parent.load(index), height) {
                    Decoded::Leaf { .. } => return Err(Error::AlreadyMapped { iova: base }),
                    Decoded::Table { phys: child_phys } => Some(parent.child(index, child_phys)),
                    Decoded::Absent => match pass.reserved.as_deref_mut() {
                        None => {
                            pass.tables_needed += 1;
                            None
                        }
                        Some(reserved) => {
                            // The plan counted this table (see `map_slots`).
                            let child = reserved.pop().ok_or(Error::OutOfMemory)?;
                            if first_new.is_none() {
                                first_new = Some((parent, index, child));
                            } else {
                                parent.link_child(index, child, self.format.encode_table(child.phys()), alloc);
                            }
                            Some(child)
                        }
                    },
                };
            } else {
                // Plan pass below a missing table: one more table per level.
                pass.tables_needed += 1;
            }
            height -= 1;
        }
        if let Some((parent, index, child)) = first_new {
            parent.link_child(index, child, self.format.encode_table(child.phys()), alloc);
        }
        Ok(())
    }

    /// The per-entry loop of `map` for a range that spans several entries of `table` (or is one
    /// whole leaf).
    #[allow(clippy::too_many_arguments)]
    fn map_slots<A: DmaAllocator + ?Sized>(
        &self,
        table: Option<TablePage>,
        height: u8,
        start: u64,
        end: u64,
        phys: u64,
        attributes: u64,
        pass: &mut MapPass<'_>,
        alloc: &A,
    ) -> Result<(), Error> {
        let entries = table.map_or(ENTRIES_PER_TABLE, |table| table.entries());
        let mut written = WrittenEntries::default();
        for slot in Slots::new(start, end, height, entries) {
            let slot_phys = phys + (slot.start - start);
            let existing = table.map(|table| (table, table.load(slot.index)));
            let decoded = existing.map_or(Decoded::Absent, |(_, raw)| self.format.decode(raw, height));
            // A table where a leaf would fit may be part of the retained path and map nothing:
            // descending into it maps the slot with smaller leaves and finds any real overlap.
            if self.leaf_fits(height, &slot, slot_phys) && !matches!(decoded, Decoded::Table { .. }) {
                if decoded != Decoded::Absent {
                    return Err(Error::AlreadyMapped { iova: slot.base });
                }
                if let (true, Some(table)) = (pass.reserved.is_some(), table) {
                    table.store(slot.index, self.format.encode_leaf(attributes, slot_phys, height));
                    written.note(slot.index);
                }
                continue;
            }
            let below = height - 1;
            match (decoded, existing) {
                (Decoded::Leaf { .. }, _) => return Err(Error::AlreadyMapped { iova: slot.base }),
                (Decoded::Table { phys: child_phys }, Some((table, _))) => {
                    let child = table.child(slot.index, child_phys);
                    self.map_level(Some(child), below, slot.start, slot.end, slot_phys, attributes, pass, alloc)?;
                }
                _ => {
                    let new_table = match pass.reserved.as_deref_mut() {
                        None => {
                            pass.tables_needed += 1;
                            None
                        }
                        // The plan counted one table per absent slot this pass descends into, so
                        // the reservation cannot run short unless plan and apply disagree.
                        Some(reserved) => Some(reserved.pop().ok_or(Error::OutOfMemory)?),
                    };
                    self.map_level(new_table, below, slot.start, slot.end, slot_phys, attributes, pass, alloc)?;
                    if let (Some(child), Some(table)) = (new_table, table) {
                        table.link_child(slot.index, child, self.format.encode_table(child.phys()), alloc);
                    }
                }
            }
        }
        if let Some(table) = table {
            written.flush(table, alloc);
        }
        Ok(())
    }

    /// The bottom level of `map`: 4 KiB leaves for `[start, end)`, all in `table`. The plan pass
    /// checks that every slot is free; the apply pass fills them in one sweep. This is the loop
    /// most pages of a large map go through, so it avoids the per-slot work of `map_level`.
    #[allow(clippy::too_many_arguments)]
    fn map_pages<A: DmaAllocator + ?Sized>(
        &self,
        table: Option<TablePage>,
        start: u64,
        end: u64,
        phys: u64,
        attributes: u64,
        apply: bool,
        alloc: &A,
    ) -> Result<(), Error> {
        // Below a table the plan pass found missing, every slot is free.
        let Some(table) = table else { return Ok(()) };
        let first = (start >> PAGE_SHIFT) as usize & (table.entries() - 1);
        let count = ((end - start) >> PAGE_SHIFT) as usize;
        if !apply {
            return match table.first_live(first, count) {
                Some(index) => Err(Error::AlreadyMapped { iova: start + ((index - first) as u64) * PAGE_SIZE }),
                None => Ok(()),
            };
        }
        table.fill_zero_entries(first, count, |i| self.format.encode_leaf(attributes, phys + i as u64 * PAGE_SIZE, 0));
        table.flush_entries(first, first + count - 1, alloc);
        Ok(())
    }

    /// Removes every mapping in `[iova, iova + len)`; holes are skipped.
    ///
    /// A large leaf cut by either end of the range is split first (allocating one table per
    /// level per end), or, with [`SplitPolicy::Refuse`], the unmap is refused before anything
    /// changed. If memory for a split runs out the call fails with `OutOfMemory`; splits already
    /// done translate exactly as the leaves they replaced, so the mappings are unchanged.
    pub fn unmap<A: DmaAllocator + ?Sized>(
        &mut self,
        iova: u64,
        len: u64,
        policy: SplitPolicy,
        alloc: &mut A,
    ) -> Result<Unmapped, Error> {
        self.unmap_splitting(iova, len, policy, None, alloc)
    }

    /// `unmap` with [`SplitPolicy::Split`] for a format whose walkers need break-before-make
    /// when a block becomes a table (Arm VMSA, D8.16.1; SMMUv3 3.21.1): a large leaf the range
    /// cuts is first made invalid, then `invalidate(alloc, iova, size)` must drop every cached
    /// translation and walk of its `size` bytes at `iova` and wait for that, and only then is
    /// the table of smaller leaves linked in its place. Meanwhile the leaf's whole span
    /// faults. A split without it would let a TLB hold the block and the new smaller entries
    /// at once (a TLB conflict). Splits are rare: the common unmap does not call `invalidate`.
    pub fn unmap_breaking_before_make<A: DmaAllocator + ?Sized>(
        &mut self,
        iova: u64,
        len: u64,
        alloc: &mut A,
        invalidate: &mut BlockInvalidation<'_, A>,
    ) -> Result<Unmapped, Error> {
        self.unmap_splitting(iova, len, SplitPolicy::Split, Some(invalidate), alloc)
    }

    fn unmap_splitting<A: DmaAllocator + ?Sized>(
        &mut self,
        iova: u64,
        len: u64,
        policy: SplitPolicy,
        mut invalidate: Option<&mut BlockInvalidation<'_, A>>,
        alloc: &mut A,
    ) -> Result<Unmapped, Error> {
        let end = self.check_input_range(iova, len)?;
        let (root, top) = (self.root, self.geometry.top_height());
        let mut extent = Extent::default();
        let mut freed_tables = DeferredFree::new();
        // The common case takes one walk: a range inside one table that cuts no large leaf.
        let fast = self.unmap_level(root, top, iova, end, Walk::FirstTry, &mut extent, &mut freed_tables, alloc);
        let emptied_path_kept = match fast {
            Some(kept) => kept,
            None => {
                // Nothing changed yet. A large leaf may be cut by an end of the range.
                let range_ends = [iova, end];
                if policy == SplitPolicy::Refuse {
                    for boundary in range_ends {
                        if let Some(leaf) = self.leaf_cut_at(boundary) {
                            let size = page_size(leaf.height);
                            return Err(Error::WouldSplit { iova: boundary & !(size - 1), page_size: size });
                        }
                    }
                }
                for boundary in range_ends {
                    while let Some(leaf) = self.leaf_cut_at(boundary) {
                        let size = page_size(leaf.height);
                        match invalidate.as_deref_mut() {
                            Some(invalidate) => self.split_breaking_before_make(leaf, boundary & !(size - 1), alloc, invalidate)?,
                            None => self.split(leaf, alloc)?,
                        }
                        extent.largest_page_size = extent.largest_page_size.max(size);
                    }
                }
                self.unmap_level(root, top, iova, end, Walk::Top, &mut extent, &mut freed_tables, alloc) == Some(true)
            }
        };
        if emptied_path_kept {
            // One retained path at most: the previous one goes unless it runs along this one
            // (an IOVA in the same leaf-table span has the same tables above it).
            let leaf_table_span = page_size(1);
            if let Some(previous) = self.retained.replace(iova) {
                if previous / leaf_table_span != iova / leaf_table_span {
                    self.unlink_empty_path(previous, &mut extent, &mut freed_tables, alloc);
                }
            }
        }
        Ok(Unmapped {
            range: extent.range,
            bytes: extent.bytes,
            largest_page_size: extent.largest_page_size,
            freed_tables,
        })
    }

    /// The leaf containing `boundary` if `boundary` lies strictly inside it.
    fn leaf_cut_at(&self, boundary: u64) -> Option<FoundLeaf> {
        // No leaf is larger than the largest size the format enables: a boundary aligned to it
        // cuts nothing, and needs no walk.
        if boundary.is_multiple_of(page_size(self.largest_leaf_height)) {
            return None;
        }
        self.find_leaf(boundary).filter(|leaf| !boundary.is_multiple_of(page_size(leaf.height)))
    }

    /// Replaces a large leaf by a table of 512 leaves one height down with the same attributes
    /// (so the dirty state and permissions carry over), written and flushed before the swap.
    fn split<A: DmaAllocator + ?Sized>(&self, leaf: FoundLeaf, alloc: &mut A) -> Result<(), Error> {
        let child = self.table_of_smaller_leaves(&leaf, alloc)?;
        leaf.table.link_child(leaf.index, child, self.format.encode_table(child.phys()), alloc);
        Ok(())
    }

    /// The table of 512 leaves one height below `leaf` that a split links in its place,
    /// written and flushed, not yet linked.
    fn table_of_smaller_leaves<A: DmaAllocator + ?Sized>(&self, leaf: &FoundLeaf, alloc: &mut A) -> Result<TablePage, Error> {
        let below = leaf.height - 1;
        let child = TablePage::allocate(ENTRIES_PER_TABLE, alloc)?;
        for index in 0..ENTRIES_PER_TABLE {
            let phys = leaf.phys + index as u64 * page_size(below);
            child.store(index, self.format.encode_leaf(leaf.attributes, phys, below));
        }
        child.flush_entries(0, ENTRIES_PER_TABLE - 1, alloc);
        Ok(child)
    }

    /// `split` with break-before-make (`unmap_breaking_before_make`): the table is built and
    /// flushed first (so running out of memory changes nothing), then the leaf at `base` is
    /// cleared, flushed and invalidated, then the table is linked.
    fn split_breaking_before_make<A: DmaAllocator + ?Sized>(
        &self,
        leaf: FoundLeaf,
        base: u64,
        alloc: &mut A,
        invalidate: &mut BlockInvalidation<'_, A>,
    ) -> Result<(), Error> {
        let child = self.table_of_smaller_leaves(&leaf, alloc)?;
        leaf.table.store(leaf.index, 0);
        leaf.table.flush_entries(leaf.index, leaf.index, alloc);
        invalidate(alloc, base, page_size(leaf.height));
        leaf.table.link_child(leaf.index, child, self.format.encode_table(child.phys()), alloc);
        Ok(())
    }

    /// One level of `unmap`. At the top (`Walk::FirstTry`, `Walk::Top`), a range inside one
    /// entry of the root that empties the lowest table of its path leaves that path linked and
    /// returns `Some(true)` (the caller records it as the retained path); otherwise emptied tables
    /// are unlinked and queued on `freed`. `Walk::FirstTry` handles only a range that cuts no
    /// large leaf and needs no per-entry loop, and returns `None` having changed nothing
    /// otherwise.
    #[allow(clippy::too_many_arguments)]
    fn unmap_level<A: DmaAllocator + ?Sized>(
        &self,
        table: TablePage,
        height: u8,
        start: u64,
        end: u64,
        walk: Walk,
        extent: &mut Extent,
        freed: &mut DeferredFree,
        alloc: &A,
    ) -> Option<bool> {
        // Descend in a loop while the range lies inside one table entry (the path of a small
        // unmap), remembering the path to unlink the tables it empties on the way back.
        let (mut table, mut height) = (table, height);
        let mut path = PathSteps::new();
        loop {
            if height == 0 {
                self.unmap_pages(table, start, end, extent, alloc);
                break;
            }
            let size = page_size(height);
            let base = start & !(size - 1);
            let whole = start == base && end - base == size;
            let index = (start >> page_shift(height)) as usize & (table.entries() - 1);
            let decoded = self.format.decode(table.load(index), height);
            if whole && matches!(decoded, Decoded::Leaf { .. }) {
                // Exactly one leaf: no other entry to visit.
                table.store(index, 0);
                table.flush_entries(index, index, alloc);
                extent.record(base, size);
                break;
            }
            if end - base > size || whole {
                if walk == Walk::FirstTry {
                    return None;
                }
                self.unmap_slots(table, height, start, end, extent, freed, alloc);
                break;
            }
            match decoded {
                Decoded::Table { phys } => {
                    let child = table.child(index, phys);
                    path.push(table, index, child);
                    table = child;
                    height -= 1;
                }
                // A leaf only partly in the range: split it first (after a first try, `unmap`
                // split every such leaf, so none is here).
                Decoded::Leaf { .. } if walk == Walk::FirstTry => return None,
                // Nothing is mapped below.
                Decoded::Leaf { .. } | Decoded::Absent => break,
            }
        }
        // `table` is now the lowest table of the path, and never the root when the path is not
        // empty.
        if walk != Walk::Nested && path.len != 0 && table.is_empty() {
            return Some(true);
        }
        let _ = path.unlink_emptied(freed, alloc);
        Some(false)
    }

    /// Unlinks the tables on `iova`'s path that map nothing (a retained path), queuing them on
    /// `freed`, cleared so that `recycle` can keep them, and widens `extent` over the span of
    /// the highest. Does nothing if every table on the path maps something.
    fn unlink_empty_path<A: DmaAllocator + ?Sized>(&self, iova: u64, extent: &mut Extent, freed: &mut DeferredFree, alloc: &A) {
        let (mut table, mut height) = (self.root, self.geometry.top_height());
        let mut path = PathSteps::new();
        while height > 0 {
            let index = (iova >> page_shift(height)) as usize & (table.entries() - 1);
            let Decoded::Table { phys } = self.format.decode(table.load(index), height) else { break };
            let child = table.child(index, phys);
            path.push(table, index, child);
            table = child;
            height -= 1;
        }
        // Unlinking the emptied table empties its parent if that was its only entry, and so on.
        let Some(highest) = path.unlink_emptied(freed, alloc) else { return };
        let span = page_size(self.geometry.top_height() - highest as u8);
        let base = iova & !(span - 1);
        extent.cover(base, base + span);
    }

    /// Prepares a map of `[iova, iova + len)` at `phys`: if it would put a large leaf where the
    /// retained path (see the module documentation) hangs, unlinks that path and returns what
    /// the caller must invalidate, non-leaf entries included, and then `recycle`, before calling
    /// [`PageTable::map`] (a walker may hold the unlinked tables in its paging-structure caches,
    /// which would hide the new leaf). Without this call `map` is still correct but maps that
    /// part with smaller leaves through the emptied tables.
    pub fn prepare_map<A: DmaAllocator + ?Sized>(&mut self, iova: u64, phys: u64, len: u64, alloc: &A) -> Option<Unmapped> {
        let retained = self.retained?;
        let end = iova.checked_add(len)?;
        // The leaf the map would put over the retained IOVA: the largest that fits there.
        let leaf_height = (1..=self.largest_leaf_height).rev().find(|&height| {
            let size = page_size(height);
            let block = retained & !(size - 1);
            self.format.leaf_allowed(height)
                && iova <= block
                && block.checked_add(size).is_some_and(|block_end| block_end <= end)
                && (phys.wrapping_add(block - iova)).is_multiple_of(size)
        })?;
        // In the way only if the entry that leaf would take links a table.
        let (mut table, mut height) = (self.root, self.geometry.top_height());
        loop {
            let index = (retained >> page_shift(height)) as usize & (table.entries() - 1);
            let Decoded::Table { phys: child } = self.format.decode(table.load(index), height) else { return None };
            if height == leaf_height {
                break;
            }
            table = table.child(index, child);
            height -= 1;
        }
        self.retained = None;
        let mut extent = Extent::default();
        let mut freed_tables = DeferredFree::new();
        self.unlink_empty_path(retained, &mut extent, &mut freed_tables, alloc);
        (!freed_tables.is_empty()).then_some(Unmapped { range: extent.range, bytes: 0, largest_page_size: 0, freed_tables })
    }

    /// The bottom level of `unmap`: clears the 4 KiB leaves of `[start, end)` in one sweep.
    fn unmap_pages<A: DmaAllocator + ?Sized>(&self, table: TablePage, start: u64, end: u64, extent: &mut Extent, alloc: &A) {
        let first = (start >> PAGE_SHIFT) as usize & (table.entries() - 1);
        let count = ((end - start) >> PAGE_SHIFT) as usize;
        let is_leaf = |raw| matches!(self.format.decode(raw, 0), Decoded::Leaf { .. });
        if let Some((cleared, low, high)) = table.clear_entries(first, count, is_leaf) {
            let iova_of = |index: usize| start + ((index - first) as u64) * PAGE_SIZE;
            extent.record_pages(iova_of(low), iova_of(high) + PAGE_SIZE, cleared);
            table.flush_entries(low, high, alloc);
        }
    }

    /// The per-entry loop of `unmap` for a range that spans several entries of `table` (or
    /// covers one whole).
    #[allow(clippy::too_many_arguments)]
    fn unmap_slots<A: DmaAllocator + ?Sized>(
        &self,
        table: TablePage,
        height: u8,
        start: u64,
        end: u64,
        extent: &mut Extent,
        freed: &mut DeferredFree,
        alloc: &A,
    ) {
        let mut written = WrittenEntries::default();
        for slot in Slots::new(start, end, height, table.entries()) {
            match self.format.decode(table.load(slot.index), height) {
                Decoded::Absent => {}
                // The splits in `unmap` left no leaf that the range covers only in part.
                Decoded::Leaf { .. } => {
                    if slot.whole(height) {
                        table.store(slot.index, 0);
                        written.note(slot.index);
                        extent.record(slot.base, page_size(height));
                    }
                }
                Decoded::Table { phys } => {
                    let child = table.child(slot.index, phys);
                    let emptied = if slot.whole(height) {
                        // Nothing in the child survives: unlink it whole without clearing its
                        // entries one by one.
                        self.retire_subtree(child, height - 1, slot.base, extent, freed);
                        true
                    } else {
                        self.unmap_level(child, height - 1, slot.start, slot.end, Walk::Nested, extent, freed, alloc);
                        if child.is_empty() {
                            freed.push(child);
                            true
                        } else {
                            false
                        }
                    };
                    if emptied {
                        table.store(slot.index, 0);
                        table.forget_child(slot.index);
                        written.note(slot.index);
                    }
                }
            }
        }
        written.flush(table, alloc);
    }

    /// Accounts every leaf below `table` (whose first entry maps `base`) and queues `table` and
    /// every table below it for deferred release. Children are queued before their parent, whose
    /// shadow words the list link then overwrites.
    fn retire_subtree(&self, table: TablePage, height: u8, base: u64, extent: &mut Extent, freed: &mut DeferredFree) {
        for index in 0..table.entries() {
            let entry_base = base + index as u64 * page_size(height);
            match self.format.decode(table.load(index), height) {
                Decoded::Absent => {}
                Decoded::Leaf { .. } => extent.record(entry_base, page_size(height)),
                Decoded::Table { phys } => {
                    self.retire_subtree(table.child(index, phys), height - 1, entry_base, extent, freed)
                }
            }
        }
        freed.push(table);
    }

    /// Where `iova` leads, or `None` if unmapped or outside the input range.
    pub fn translate(&self, iova: u64) -> Option<Translation> {
        let leaf = self.find_leaf(iova)?;
        let size = page_size(leaf.height);
        Some(Translation {
            phys: leaf.phys + (iova & (size - 1)),
            perm: self.format.permissions(leaf.attributes),
            page_size: size,
        })
    }

    /// Walks to the leaf mapping `iova`.
    fn find_leaf(&self, iova: u64) -> Option<FoundLeaf> {
        if iova >= self.geometry.input_limit() {
            return None;
        }
        let mut table = self.root;
        let mut height = self.geometry.top_height();
        loop {
            let index = (iova >> page_shift(height)) as usize & (table.entries() - 1);
            match self.format.decode(table.load(index), height) {
                Decoded::Absent => return None,
                Decoded::Leaf { phys, attributes } => {
                    return Some(FoundLeaf { table, index, height, phys, attributes });
                }
                Decoded::Table { phys } => {
                    // A table link at height 0 breaks the format contract: treat as unmapped.
                    height = height.checked_sub(1)?;
                    table = table.child(index, phys);
                }
            }
        }
    }

    /// Replaces every table in `[iova, iova + len)` whose 512 leaves map physically contiguous
    /// memory, aligned to the larger size, with identical attributes, by one leaf of the larger
    /// size, where the format enables it. Works bottom-up, so 4 KiB pages can become 2 MiB and
    /// then 1 GiB leaves in one call. Leaves whose dirty state differs do not merge.
    pub fn try_merge<A: DmaAllocator + ?Sized>(&mut self, iova: u64, len: u64, alloc: &A) -> Result<Merged, Error> {
        let end = self.check_input_range(iova, len)?;
        let mut extent = Extent::default();
        let mut freed_tables = DeferredFree::new();
        self.merge_level(self.root, self.geometry.top_height(), iova, end, &mut extent, &mut freed_tables, alloc);
        Ok(Merged {
            range: extent.range,
            merged_entries: extent.leaves,
            largest_page_size: extent.largest_page_size,
            freed_tables,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn merge_level<A: DmaAllocator + ?Sized>(
        &self,
        table: TablePage,
        height: u8,
        start: u64,
        end: u64,
        extent: &mut Extent,
        freed: &mut DeferredFree,
        alloc: &A,
    ) {
        let mut written = WrittenEntries::default();
        for slot in Slots::new(start, end, height, table.entries()) {
            let Decoded::Table { phys } = self.format.decode(table.load(slot.index), height) else {
                continue;
            };
            let child = table.child(slot.index, phys);
            if height >= 2 {
                self.merge_level(child, height - 1, slot.start, slot.end, extent, freed, alloc);
            }
            if !slot.whole(height) || !self.format.leaf_allowed(height) {
                continue;
            }
            if let Some((first_phys, attributes)) = self.uniform_leaves(child, height - 1) {
                if first_phys.is_multiple_of(page_size(height)) {
                    table.store(slot.index, self.format.encode_leaf(attributes, first_phys, height));
                    table.forget_child(slot.index);
                    written.note(slot.index);
                    freed.push(child);
                    extent.record(slot.base, page_size(height));
                }
            }
        }
        written.flush(table, alloc);
    }

    /// If every entry of `table` is a leaf with the same attributes, mapping consecutive memory,
    /// the first output address and the attributes.
    fn uniform_leaves(&self, table: TablePage, height: u8) -> Option<(u64, u64)> {
        let Decoded::Leaf { phys: first_phys, attributes } = self.format.decode(table.load(0), height) else {
            return None;
        };
        let continues = |index: usize| match self.format.decode(table.load(index), height) {
            Decoded::Leaf { phys, attributes: other } => {
                other == attributes && phys == first_phys + index as u64 * page_size(height)
            }
            _ => false,
        };
        (1..table.entries()).all(continues).then_some((first_phys, attributes))
    }

    /// Reports which 4 KiB pages of `[iova, iova + len)` devices wrote since they were last
    /// cleaned: bit `i` of `bitmap` (bit `i % 64` of word `i / 64`) stands for the page at
    /// `iova + i * 4 KiB`. The range's bits are overwritten; other bits are left as they were.
    ///
    /// A dirty large leaf marks all its pages in the range. With `ReadAndClear`, leaves wholly
    /// inside the range are cleaned; a large leaf the range covers only in part is reported but
    /// not cleaned (cleaning it would lose the dirty state of its pages outside the range; so
    /// it is reported again next time, which over-reports but never loses a write).
    pub fn read_and_clear_dirty<A: DmaAllocator + ?Sized>(
        &mut self,
        iova: u64,
        len: u64,
        mode: DirtyReadMode,
        bitmap: &mut [u64],
        alloc: &A,
    ) -> Result<DirtyReport, Error> {
        let end = self.check_input_range(iova, len)?;
        let scheme = self.format.dirty_scheme().ok_or(Error::DirtyTrackingUnsupported)?;
        let pages = len / PAGE_SIZE;
        let words = pages.div_ceil(64);
        if (bitmap.len() as u64) < words {
            return Err(Error::BitmapTooSmall);
        }
        clear_bits(bitmap, 0, pages);
        let mut walk = DirtyWalk {
            scheme,
            mode,
            range_start: iova,
            bitmap: Some(bitmap),
            report: DirtyReport { dirty_pages: 0, cleaned_entries: 0 },
        };
        self.dirty_level(self.root, self.geometry.top_height(), iova, end, &mut walk, alloc);
        Ok(walk.report)
    }

    /// Marks every leaf wholly inside `[iova, iova + len)` clean, as `read_and_clear_dirty`
    /// does but with no bitmap to fill (switching tracking on starts from a clean table, over
    /// ranges far larger than any bitmap). The report counts what was dirty; as there, a
    /// non-zero `cleaned_entries` calls for an IOTLB invalidation of the range.
    pub fn clear_dirty<A: DmaAllocator + ?Sized>(&mut self, iova: u64, len: u64, alloc: &A) -> Result<DirtyReport, Error> {
        let end = self.check_input_range(iova, len)?;
        let scheme = self.format.dirty_scheme().ok_or(Error::DirtyTrackingUnsupported)?;
        let mut walk = DirtyWalk {
            scheme,
            mode: DirtyReadMode::ReadAndClear,
            range_start: iova,
            bitmap: None,
            report: DirtyReport { dirty_pages: 0, cleaned_entries: 0 },
        };
        self.dirty_level(self.root, self.geometry.top_height(), iova, end, &mut walk, alloc);
        Ok(walk.report)
    }

    fn dirty_level<A: DmaAllocator + ?Sized>(
        &self,
        table: TablePage,
        height: u8,
        start: u64,
        end: u64,
        walk: &mut DirtyWalk<'_>,
        alloc: &A,
    ) {
        let mut written = WrittenEntries::default();
        for slot in Slots::new(start, end, height, table.entries()) {
            let raw = table.load(slot.index);
            match self.format.decode(raw, height) {
                Decoded::Absent => {}
                Decoded::Table { phys } => {
                    self.dirty_level(table.child(slot.index, phys), height - 1, slot.start, slot.end, walk, alloc)
                }
                Decoded::Leaf { .. } => {
                    let clean = walk.mode == DirtyReadMode::ReadAndClear && slot.whole(height);
                    let dirty = if clean {
                        let was_dirty = clean_entry(table, slot.index, raw, walk.scheme);
                        if was_dirty {
                            written.note(slot.index);
                            walk.report.cleaned_entries += 1;
                        }
                        was_dirty
                    } else {
                        walk.scheme.is_dirty(raw)
                    };
                    if dirty {
                        let first_page = (slot.start - walk.range_start) / PAGE_SIZE;
                        let pages = (slot.end - slot.start) / PAGE_SIZE;
                        if let Some(bitmap) = walk.bitmap.as_deref_mut() {
                            set_bits(bitmap, first_page, pages);
                        }
                        walk.report.dirty_pages += pages;
                    }
                }
            }
        }
        written.flush(table, alloc);
    }

    /// Takes back the tables an `unmap` or `try_merge` unlinked, once the invalidation covering
    /// them completed (the same condition as [`DeferredFree::release`]): tables `unmap` emptied
    /// entry by entry are all zero and are kept (up to a few) for later maps; the rest go back to
    /// the allocator.
    pub fn recycle<A: DmaAllocator + ?Sized>(&mut self, freed: DeferredFree, alloc: &mut A) {
        let mut tables = freed.into_list();
        while let Some(table) = tables.pop() {
            if self.spare.len() < SPARE_TABLES && table.is_empty() {
                self.spare.push(table);
            } else {
                table.free(alloc);
            }
        }
    }

    /// Frees every table page, root included. Call only once no IOMMU can walk the tree any more
    /// (the context / PASID entry or STE / CD pointing at it was cleared and invalidated).
    pub fn destroy<A: DmaAllocator + ?Sized>(mut self, alloc: &mut A) {
        self.spare.free_all(alloc);
        self.free_tree(self.root, self.geometry.top_height(), alloc);
    }

    fn free_tree<A: DmaAllocator + ?Sized>(&self, table: TablePage, height: u8, alloc: &mut A) {
        for index in 0..table.entries() {
            if let Decoded::Table { phys } = self.format.decode(table.load(index), height) {
                self.free_tree(table.child(index, phys), height - 1, alloc);
            }
        }
        table.free(alloc);
    }

    /// Checks an input range and returns its end.
    fn check_input_range(&self, iova: u64, len: u64) -> Result<u64, Error> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if !iova.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let end = iova.checked_add(len).ok_or(Error::Overflow)?;
        if end > self.geometry.input_limit() {
            return Err(Error::OutOfRange);
        }
        Ok(end)
    }
}

/// State of one `read_and_clear_dirty` walk.
struct DirtyWalk<'a> {
    scheme: DirtyScheme,
    mode: DirtyReadMode,
    range_start: u64,
    /// Where the dirty pages are reported (`None`: only counted).
    bitmap: Option<&'a mut [u64]>,
    report: DirtyReport,
}

/// Marks the leaf `index` of `table` (last read as `raw`) clean; returns whether it was dirty.
/// The atomic read-modify-write keeps a dirty mark the walker sets concurrently, either in the
/// value returned now or in the entry for the next read.
fn clean_entry(table: TablePage, index: usize, raw: u64, scheme: DirtyScheme) -> bool {
    if !scheme.is_dirty(raw) {
        return false;
    }
    match scheme {
        DirtyScheme::SetOnWrite { dirty, cleared } => table.fetch_clear(index, cleared) & dirty != 0,
        DirtyScheme::ClearsReadOnlyOnWrite { read_only, .. } => table.fetch_set(index, read_only) & read_only == 0,
    }
}

/// Sets bits `[first, first + count)`; the caller checked the bitmap is long enough.
fn set_bits(bitmap: &mut [u64], first: u64, count: u64) {
    for_bit_words(first, count, |word, mask| bitmap[word] |= mask);
}

/// Clears bits `[first, first + count)`.
fn clear_bits(bitmap: &mut [u64], first: u64, count: u64) {
    for_bit_words(first, count, |word, mask| bitmap[word] &= !mask);
}

/// Calls `apply(word_index, mask)` for each 64-bit word that bits `[first, first + count)` touch.
fn for_bit_words(first: u64, count: u64, mut apply: impl FnMut(usize, u64)) {
    let mut bit = first;
    let end = first + count;
    while bit < end {
        let offset = bit % 64;
        let span = (64 - offset).min(end - bit);
        let mask = if span == 64 { u64::MAX } else { ((1u64 << span) - 1) << offset };
        apply((bit / 64) as usize, mask);
        bit += span;
    }
}
