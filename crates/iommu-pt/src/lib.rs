//! IOMMU I/O page-table builders: one radix-tree engine, four hardware entry formats.
//!
//! # Design
//!
//! Every format this crate builds is a radix tree of 4 KiB tables of 512 64-bit entries: Intel
//! VT-d second-level paging, VT-d first-level paging (the x86-64 4/5-level format), and Arm
//! VMSAv8-64 stage-1 and stage-2 translation tables with the 4 KiB granule as walked by an
//! SMMUv3. They differ only in how one entry encodes "next table", "leaf" and "permissions", so:
//!
//! - [`PageTable<F>`](PageTable) is the engine: map, unmap (with large-page split and reclaim of
//!   emptied tables), translate, merge, dirty read-and-clear, destroy. It is generic over
//! - a [`Format`] value, which encodes and decodes entries and carries the caller's choices
//!   (levels, address widths, enabled large pages, memory attributes). One module per format:
//!   [`vtd_second_level`], [`vtd_first_level`], [`smmu_stage1`], [`smmu_stage2`]; each defines a
//!   typed entry (newtype over `u64` with named bit accessors) and its configuration.
//!
//! Table memory comes from [`hwio::DmaAllocator`]; the `memory` module documents the page
//! layout (hardware entries plus a CPU-side shadow of child pointers) and why.
//!
//! # Rules the engine keeps towards a live walker
//!
//! - A new table is written completely, flushed, and only then linked (with a store barrier in
//!   between); the link is one 64-bit store.
//! - Every entry write is followed by `flush_for_device` on the written entries before the
//!   operation returns (VT-d with ECAP.C = 0 walks do not snoop CPU caches).
//! - Nothing an unmap or merge unlinks is freed: unlinked tables go to a [`DeferredFree`] list
//!   that the caller releases after the IOTLB and paging-structure-cache invalidation. The
//!   results ([`Unmapped`], [`Merged`]) say what that invalidation must cover.
//! - A failed `map` changes nothing: it checks the whole range for existing mappings and
//!   reserves every table it will need before it writes its first entry.
//!
//! # Block-size changes are done in place
//!
//! Splitting a large leaf (partial unmap) and merging a full table into a large leaf
//! ([`PageTable::try_merge`]) replace one entry with an equivalent one by a single store: every
//! address translates identically before and after. VT-d permits this. VMSA formally requires
//! break-before-make for a change of block size unless the SMMU implements level-2 BBM
//! (SMMU_IDR3.BBML = 2); otherwise a TLB holding both may report a conflict (F_TLB_CONFLICT).
//! Callers on such SMMUs that want to rule this out pass [`SplitPolicy::Refuse`] and do not call
//! `try_merge`. (Linux's io-pgtable-arm splits blocks in place the same way.)
#![cfg_attr(not(test), no_std)]

mod engine;
mod format;
mod memory;
pub mod smmu_stage1;
pub mod smmu_stage2;
pub mod vtd_first_level;
pub mod vtd_second_level;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod fake_dma;

pub use engine::{BlockInvalidation, DirtyReadMode, DirtyReport, Merged, PageTable, SplitPolicy, Translation, Unmapped};
pub use format::{page_shift, page_size, Decoded, DirtyScheme, Format, Geometry, LargePages, MAX_TOP_HEIGHT};
pub use memory::DeferredFree;

/// log2 of the smallest page (the 4 KiB translation granule).
pub const PAGE_SHIFT: u32 = 12;
/// The smallest page: every address and length handed to the engine is a multiple of it.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Entries in one (non-concatenated) table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// log2 of [`ENTRIES_PER_TABLE`]: address bits one level resolves.
pub const ENTRIES_PER_TABLE_SHIFT: u32 = 9;
const _: () = assert!(1 << ENTRIES_PER_TABLE_SHIFT == ENTRIES_PER_TABLE);

/// Access rights of a mapping, as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perm(u8);

impl Perm {
    /// No access (not mappable; the result of decoding nothing).
    pub const NONE: Perm = Perm(0);
    /// Device reads of memory (DMA towards the device).
    pub const READ: Perm = Perm(1 << 0);
    /// Device writes to memory.
    pub const WRITE: Perm = Perm(1 << 1);
    /// Instruction fetch / execute requests (VT-d Execute-Requested, SMMU instruction accesses).
    pub const EXECUTE: Perm = Perm(1 << 2);
    /// Device memory (registers, such as an interrupt doorbell): Arm Device-nGnRE, so writes
    /// reach the device in order and are never merged or cached. Formats without memory types
    /// (VT-d) refuse it.
    pub const DEVICE: Perm = Perm(1 << 3);
    /// Read and write, the common DMA mapping.
    pub const READ_WRITE: Perm = Perm(Self::READ.0 | Self::WRITE.0);

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no right is granted.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets of rights.
    pub const fn union(self, other: Perm) -> Perm {
        Perm(self.0 | other.0)
    }
}

impl core::ops::BitOr for Perm {
    type Output = Perm;
    fn bitor(self, other: Perm) -> Perm {
        self.union(other)
    }
}

/// Why an operation was refused. Every refusal leaves the tree translating exactly as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A length of zero.
    ZeroLength,
    /// An address or length that is not a multiple of [`PAGE_SIZE`].
    Unaligned,
    /// `address + length` does not fit in 64 bits.
    Overflow,
    /// Part of the input range is at or above `2^input_bits` of the tree.
    OutOfRange,
    /// Part of the output (physical) range is at or above `2^output_bits` of the format.
    OutputOutOfRange,
    /// The slot of a page-table entry starting at `iova` already maps something in the range.
    AlreadyMapped { iova: u64 },
    /// Unmapping would cut the `page_size` leaf at `iova`, and the caller refused splits.
    WouldSplit { iova: u64, page_size: u64 },
    /// The DMA allocator ran out of memory.
    OutOfMemory,
    /// The DMA allocator returned a buffer of the wrong size or alignment (it was given back).
    BadAllocation,
    /// The format or its configuration cannot express these access rights.
    UnsupportedPermission,
    /// A configuration outside what the format or this crate supports.
    InvalidConfig,
    /// The format, as configured, records no dirty state.
    DirtyTrackingUnsupported,
    /// The bitmap has fewer bits than the range has 4 KiB pages.
    BitmapTooSmall,
}
