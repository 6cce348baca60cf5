//! Value types shared by drivers and the server: handles, rights, permissions, IOVA ranges,
//! fault records and unit information. They carry no behaviour beyond validation of their
//! own bit patterns, so the object model (`iommu-core`) and the wire codec agree by
//! construction.

use crate::error::Error;

/// Size of the smallest page the protocol deals in. Every IOVA, memory offset and mapping
/// length is a multiple of it.
pub const PAGE_SIZE: u64 = 4096;

/// A handle: an index into the calling client's handle table. Never 0 (0 encodes "none"
/// on the wire). A handle names one object with a set of [`Rights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

macro_rules! typed_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Handle);

        impl $name {
            /// The untyped handle, for `destroy`, `handle_derive` and `handle_revoke`.
            pub const fn handle(self) -> Handle {
                self.0
            }
        }
    };
}

typed_handle!(
    /// Handle of an I/O address space (IOAS).
    IoasId
);
typed_handle!(
    /// Handle of a hardware page table (HWPT): a paging or nested domain of one IOMMU unit.
    HwptId
);
typed_handle!(
    /// Handle of a bound device.
    DeviceId
);
typed_handle!(
    /// Handle of a fault queue.
    FaultId
);
typed_handle!(
    /// Handle of a registered memory object.
    MemoryId
);

bitflags::bitflags! {
    /// What a handle allows. Rights only ever shrink: `handle_derive` copies a subset. The
    /// creator of an object receives `Rights::all()`; a handle with `Rights::empty()` only
    /// names the object (e.g. for `get_info`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Rights: u32 {
        /// Map memory into an IOAS; change its allowed ranges.
        const MAP = 1 << 0;
        /// Unmap from an IOAS.
        const UNMAP = 1 << 1;
        /// Use an IOAS as the source of `ioas_copy`.
        const COPY_FROM = 1 << 2;
        /// Build on the object: allocate an HWPT over an IOAS or parent HWPT, attach a device
        /// to an HWPT, attach or bind a device, name a fault queue in an HWPT or SVA bind.
        const ATTACH = 1 << 3;
        /// Read fault records from a fault queue and respond to page requests.
        const READ_FAULTS = 1 << 4;
        /// Switch dirty tracking and read dirty bitmaps.
        const DIRTY = 1 << 5;
        /// Destroy the object.
        const DESTROY = 1 << 6;
        /// Derive handles with a subset of the rights and give them to a client.
        const GRANT = 1 << 7;
    }
}

/// Access a mapping grants to devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// Devices may read.
    pub read: bool,
    /// Devices may write.
    pub write: bool,
}

impl Perm {
    /// Read-only.
    pub const READ: Perm = Perm { read: true, write: false };
    /// Write-only.
    pub const WRITE: Perm = Perm { read: false, write: true };
    /// Read and write.
    pub const READ_WRITE: Perm = Perm { read: true, write: true };

    /// Whether `self` grants no more than `limit`.
    pub const fn within(self, limit: Perm) -> bool {
        (!self.read || limit.read) && (!self.write || limit.write)
    }
}

/// An inclusive range of IOVAs `[start, last]`. Inclusive, so that a range can end at the
/// top of the 64-bit space without overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IovaRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub last: u64,
}

impl IovaRange {
    /// The whole 64-bit space.
    pub const ALL: IovaRange = IovaRange { start: 0, last: u64::MAX };

    /// `[start, last]`, or [`Error::InvalidRange`] if `start > last`.
    pub const fn new(start: u64, last: u64) -> Result<IovaRange, Error> {
        if start > last {
            return Err(Error::InvalidRange);
        }
        Ok(IovaRange { start, last })
    }

    /// The range of `length` bytes at `start`: [`Error::ZeroLength`] for an empty range,
    /// [`Error::Overflow`] if it wraps.
    pub const fn from_start_len(start: u64, length: u64) -> Result<IovaRange, Error> {
        if length == 0 {
            return Err(Error::ZeroLength);
        }
        match start.checked_add(length - 1) {
            Some(last) => Ok(IovaRange { start, last }),
            None => Err(Error::Overflow),
        }
    }

    /// Whether the two ranges share an address.
    pub const fn intersects(&self, other: &IovaRange) -> bool {
        self.start <= other.last && other.start <= self.last
    }

    /// Whether `other` lies completely inside `self`.
    pub const fn contains_range(&self, other: &IovaRange) -> bool {
        self.start <= other.start && other.last <= self.last
    }

    /// The common part, if any.
    pub fn intersection(&self, other: &IovaRange) -> Option<IovaRange> {
        let start = self.start.max(other.start);
        let last = self.last.min(other.last);
        (start <= last).then_some(IovaRange { start, last })
    }
}

bitflags::bitflags! {
    /// Kinds of access a faulting transaction made.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Access: u8 {
        /// A read.
        const READ = 1 << 0;
        /// A write.
        const WRITE = 1 << 1;
        /// An instruction fetch.
        const EXEC = 1 << 2;
        /// A privileged (supervisor) access.
        const PRIV = 1 << 3;
    }
}

/// Why the IOMMU reported a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultReason {
    /// No translation for the address (unrecoverable: the transaction was aborted).
    Translation = 1,
    /// A translation exists but does not allow the access (unrecoverable).
    Permission = 2,
    /// The IOMMU could not walk a table the client owns (a nested stage-1 table or PASID
    /// table entry is invalid; unrecoverable).
    TableWalk = 3,
    /// A recoverable page request (PCIe PRI / SMMU stall): the device waits until the
    /// driver answers with `fault_respond` and the record's cookie.
    PageRequest = 4,
    /// The device wrote an interrupt request (an MSI, or a DMA write into the interrupt
    /// window) that interrupt remapping refused: no entry it may use names it (VT-d fault
    /// reasons 20h-26h). The record's `iova` holds the interrupt index the request named
    /// (0 for a compatibility-format request); the interrupt reached no CPU.
    Interrupt = 5,
}

impl FaultReason {
    /// Decode, or [`Error::BadEnumValue`].
    pub const fn from_u8(value: u8) -> Result<FaultReason, Error> {
        match value {
            1 => Ok(FaultReason::Translation),
            2 => Ok(FaultReason::Permission),
            3 => Ok(FaultReason::TableWalk),
            4 => Ok(FaultReason::PageRequest),
            5 => Ok(FaultReason::Interrupt),
            _ => Err(Error::BadEnumValue),
        }
    }
}

/// One fault as a driver reads it from a fault queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRecord {
    /// The faulting device, named by the handle `device_bind` returned to the device's owner.
    pub device: Handle,
    /// The PASID the transaction carried, if any.
    pub pasid: Option<u32>,
    /// The faulting address.
    pub iova: u64,
    /// What the transaction tried to do.
    pub access: Access,
    /// Why it faulted.
    pub reason: FaultReason,
    /// For [`FaultReason::PageRequest`]: the cookie to quote in `fault_respond`, never 0.
    /// 0 for other reasons.
    pub cookie: u32,
    /// Which translation stage faulted, where the unit says.
    pub stage: FaultStage,
}

/// The translation stage a fault arose in. Only a nested HWPT has two stages; a unit that
/// translates in one stage reports [`FaultStage::Unspecified`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum FaultStage {
    /// One-stage translation, or the unit does not say.
    #[default]
    Unspecified = 0,
    /// The driver's own stage-1 configuration: its tables, or its context descriptor.
    Stage1 = 1,
    /// The server's stage 2 (the parent HWPT), including stage-2 walks done for stage 1
    /// (the CD fetch, stage-1 table reads).
    Stage2 = 2,
}

impl FaultStage {
    /// Decode, or [`Error::BadEnumValue`].
    pub const fn from_u8(value: u8) -> Result<FaultStage, Error> {
        match value {
            0 => Ok(FaultStage::Unspecified),
            1 => Ok(FaultStage::Stage1),
            2 => Ok(FaultStage::Stage2),
            _ => Err(Error::BadEnumValue),
        }
    }
}

/// The answer to a page request, as in PCIe PRI "Page Request Group Response".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageResponseCode {
    /// The page is now mapped; the device retries the access.
    Success = 0,
    /// The request cannot be satisfied; the device fails this access only.
    Invalid = 1,
    /// Catastrophic failure; the device stops issuing page requests.
    Failure = 2,
}

impl PageResponseCode {
    /// Decode, or [`Error::BadEnumValue`].
    pub const fn from_u64(value: u64) -> Result<PageResponseCode, Error> {
        match value {
            0 => Ok(PageResponseCode::Success),
            1 => Ok(PageResponseCode::Invalid),
            2 => Ok(PageResponseCode::Failure),
            _ => Err(Error::BadEnumValue),
        }
    }
}

/// The architecture of an IOMMU unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UnitKind {
    /// Intel VT-d remapping unit (DRHD).
    IntelVtd = 1,
    /// ARM SMMUv3.
    ArmSmmuV3 = 2,
}

impl UnitKind {
    /// Decode, or [`Error::BadEnumValue`].
    pub const fn from_u64(value: u64) -> Result<UnitKind, Error> {
        match value {
            1 => Ok(UnitKind::IntelVtd),
            2 => Ok(UnitKind::ArmSmmuV3),
            _ => Err(Error::BadEnumValue),
        }
    }
}

bitflags::bitflags! {
    /// Features of an IOMMU unit.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct UnitCaps: u32 {
        /// Nested translation (user stage-1 over a stage-2 parent).
        const NESTING = 1 << 0;
        /// Hardware dirty-bit tracking in stage-2/second-level tables.
        const DIRTY_TRACKING = 1 << 1;
        /// PASID-tagged attachments.
        const PASID = 1 << 2;
        /// Shared virtual addressing with process page tables.
        const SVA = 1 << 3;
        /// Recoverable page requests (PRI / stall).
        const PAGE_REQUESTS = 1 << 4;
    }
}

/// What `get_info` reports about a bound device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    /// The server's index of the IOMMU unit the device sits behind.
    pub unit: u32,
    /// Its architecture.
    pub kind: UnitKind,
    /// Its features.
    pub caps: UnitCaps,
    /// How many PASID bits the device supports (0: none).
    pub pasid_bits: u8,
}

/// Layout of a user-owned stage-1 table, for nested HWPTs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stage1Format {
    /// VT-d first-level (x86 4/5-level) page table; the root is a first-level table.
    VtdFirstLevel = 1,
    /// SMMUv3 context-descriptor table; the root is the CD table (S1ContextPtr).
    SmmuV3ContextDescriptors = 2,
}

impl Stage1Format {
    /// Decode, or [`Error::BadEnumValue`].
    pub const fn from_u64(value: u64) -> Result<Stage1Format, Error> {
        match value {
            1 => Ok(Stage1Format::VtdFirstLevel),
            2 => Ok(Stage1Format::SmmuV3ContextDescriptors),
            _ => Err(Error::BadEnumValue),
        }
    }

    /// The unit architecture that walks this format.
    pub const fn unit_kind(self) -> UnitKind {
        match self {
            Stage1Format::VtdFirstLevel => UnitKind::IntelVtd,
            Stage1Format::SmmuV3ContextDescriptors => UnitKind::ArmSmmuV3,
        }
    }
}

/// A user stage-1 table for a nested HWPT. The root is an address in the *parent's* IOVA
/// space: the IOMMU translates it through stage 2, so the server never touches it and needs
/// no pin for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage1Config {
    /// Table layout.
    pub format: Stage1Format,
    /// Address of the table root in the parent HWPT's IOVA space (4 KiB aligned).
    pub table_root: u64,
    /// VT-d: input address width (48 or 57). SMMUv3: ignored, must be 0.
    pub address_width: u8,
    /// SMMUv3: log2 of the number of context descriptors (0..=20). VT-d: must be 0.
    pub table_entries_log2: u8,
}

impl Stage1Config {
    /// Check the fields against the format; [`Error::Unaligned`] for a misaligned root,
    /// [`Error::NotSupported`] for widths or table sizes the format does not define.
    pub const fn validate(&self) -> Result<(), Error> {
        if !self.table_root.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let shape_ok = match self.format {
            Stage1Format::VtdFirstLevel => {
                (self.address_width == 48 || self.address_width == 57) && self.table_entries_log2 == 0
            }
            Stage1Format::SmmuV3ContextDescriptors => {
                self.address_width == 0 && self.table_entries_log2 <= 20
            }
        };
        if shape_ok {
            Ok(())
        } else {
            Err(Error::NotSupported)
        }
    }
}

/// Entries one `hwpt_invalidate` call carries at most (one page of them).
pub const INVALIDATIONS_PER_CALL: u32 = 256;

/// One cache invalidation of a nested HWPT's driver-owned stage 1, as `hwpt_invalidate`
/// reads it from a memory object: two little-endian 64-bit words.
///
/// ```text
/// word 0: bits  0..8  kind (1 stage-1 TLB by ASID, 2 stage-1 TLB by ASID and VA range,
///                     3 context-descriptor cache)
///         bit   8     leaf only (kind 2: only last-level entries changed)
///         bits 16..32 ASID (kinds 1 and 2)
///         bits 32..48 pages (kind 2: 1..=65535 pages of 4 KiB)
///         every other bit zero
/// word 1: kind 2: the first VA, 4 KiB aligned; otherwise zero
/// ```
///
/// The entry never names a VMID, domain or stream: the server applies it to the HWPT the
/// call names (on SMMUv3 with that HWPT's VMID), so a driver reaches no other domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// Every stage-1 TLB entry (and walk-cache entry) of `asid`.
    Stage1Asid { asid: u16 },
    /// Stage-1 TLB entries of `asid` for `pages` 4 KiB pages from `va`.
    Stage1Range { asid: u16, va: u64, pages: u16, leaf_only: bool },
    /// The cached copy of the HWPT's context descriptor (after the driver rewrote it).
    ContextDescriptor,
}

const INVALIDATION_KIND: u64 = 0xff;
const INVALIDATION_LEAF: u64 = 1 << 8;
const INVALIDATION_ASID_SHIFT: u32 = 16;
const INVALIDATION_PAGES_SHIFT: u32 = 32;
const INVALIDATION_WORD0_USED: u64 = INVALIDATION_KIND | INVALIDATION_LEAF | (0xffff << INVALIDATION_ASID_SHIFT) | (0xffff << INVALIDATION_PAGES_SHIFT);

impl Invalidation {
    /// Bytes of one encoded entry.
    pub const BYTES: u64 = 16;

    /// The two words of the entry.
    pub const fn encode(self) -> [u64; 2] {
        match self {
            Invalidation::Stage1Asid { asid } => [1 | (asid as u64) << INVALIDATION_ASID_SHIFT, 0],
            Invalidation::Stage1Range { asid, va, pages, leaf_only } => {
                let leaf = if leaf_only { INVALIDATION_LEAF } else { 0 };
                [2 | leaf | (asid as u64) << INVALIDATION_ASID_SHIFT | (pages as u64) << INVALIDATION_PAGES_SHIFT, va]
            }
            Invalidation::ContextDescriptor => [3, 0],
        }
    }

    /// Decode; [`Error::ReservedBitsSet`] for a bit the kind does not use,
    /// [`Error::BadEnumValue`] for an unknown kind, [`Error::Unaligned`] for a VA that is not
    /// 4 KiB aligned, [`Error::ZeroLength`] / [`Error::Overflow`] for a range of no page or
    /// past the end of the address space.
    pub const fn decode(words: [u64; 2]) -> Result<Invalidation, Error> {
        let [word, va] = words;
        if word & !INVALIDATION_WORD0_USED != 0 {
            return Err(Error::ReservedBitsSet);
        }
        let asid = (word >> INVALIDATION_ASID_SHIFT) as u16;
        let pages = (word >> INVALIDATION_PAGES_SHIFT) as u16;
        let leaf_only = word & INVALIDATION_LEAF != 0;
        match word & INVALIDATION_KIND {
            1 if va == 0 && pages == 0 && !leaf_only => Ok(Invalidation::Stage1Asid { asid }),
            2 => {
                if !va.is_multiple_of(PAGE_SIZE) {
                    Err(Error::Unaligned)
                } else if pages == 0 {
                    Err(Error::ZeroLength)
                } else if va.checked_add(pages as u64 * PAGE_SIZE - 1).is_none() {
                    Err(Error::Overflow)
                } else {
                    Ok(Invalidation::Stage1Range { asid, va, pages, leaf_only })
                }
            }
            3 if va == 0 && pages == 0 && asid == 0 && !leaf_only => Ok(Invalidation::ContextDescriptor),
            1 | 3 => Err(Error::ReservedBitsSet),
            _ => Err(Error::BadEnumValue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_and_refuse_every_stray_bit() {
        let entries = [
            Invalidation::Stage1Asid { asid: 0xffff },
            Invalidation::Stage1Range { asid: 7, va: 0xffff_ffff_f000, pages: 1, leaf_only: true },
            Invalidation::Stage1Range { asid: 0, va: 0x1000, pages: 0xffff, leaf_only: false },
            Invalidation::ContextDescriptor,
        ];
        for entry in entries {
            assert_eq!(Invalidation::decode(entry.encode()), Ok(entry));
        }
        assert_eq!(Invalidation::decode([0, 0]), Err(Error::BadEnumValue));
        assert_eq!(Invalidation::decode([4, 0]), Err(Error::BadEnumValue));
        assert_eq!(Invalidation::decode([1 | 1 << 48, 0]), Err(Error::ReservedBitsSet));
        assert_eq!(Invalidation::decode([1 | 1 << 9, 0]), Err(Error::ReservedBitsSet));
        assert_eq!(Invalidation::decode([1, 0x1000]), Err(Error::ReservedBitsSet), "kind 1 takes no VA");
        assert_eq!(Invalidation::decode([3 | 5 << 16, 0]), Err(Error::ReservedBitsSet), "kind 3 takes no ASID");
        assert_eq!(Invalidation::decode([2 | 1 << 32, 0x1800]), Err(Error::Unaligned));
        assert_eq!(Invalidation::decode([2, 0x1000]), Err(Error::ZeroLength));
        assert_eq!(Invalidation::decode([2 | 2 << 32, u64::MAX - 0xfff]), Err(Error::Overflow));
    }

    #[test]
    fn rights_reject_undefined_bits_and_compare_subsets() {
        assert_eq!(Rights::from_bits(0x100), None, "bit 8 is no right");
        let map_unmap = Rights::MAP.union(Rights::UNMAP);
        assert!(map_unmap.contains(Rights::MAP));
        assert!(!map_unmap.contains(Rights::DESTROY));
        assert_eq!(map_unmap.difference(Rights::MAP), Rights::UNMAP);
        assert_eq!(Rights::all().bits(), 0xff, "GRANT (bit 7) is the highest right");
    }

    #[test]
    fn ranges_are_inclusive_and_reject_wrap() {
        assert_eq!(IovaRange::from_start_len(0, 0), Err(Error::ZeroLength));
        assert_eq!(IovaRange::from_start_len(u64::MAX - 4095, 4096).unwrap().last, u64::MAX);
        assert_eq!(IovaRange::from_start_len(u64::MAX - 4095, 8192), Err(Error::Overflow));
        assert_eq!(IovaRange::new(5, 4), Err(Error::InvalidRange));
        let a = IovaRange::new(0x1000, 0x1fff).unwrap();
        let b = IovaRange::new(0x2000, 0x2fff).unwrap();
        assert!(!a.intersects(&b));
        assert_eq!(a.intersection(&b), None);
        assert!(IovaRange::ALL.contains_range(&b));
    }

    #[test]
    fn perm_subset() {
        assert!(Perm::READ.within(Perm::READ_WRITE));
        assert!(!Perm::READ_WRITE.within(Perm::READ));
        assert!(!Perm::WRITE.within(Perm::READ));
    }

    #[test]
    fn stage1_validation() {
        let mut config = Stage1Config {
            format: Stage1Format::VtdFirstLevel,
            table_root: 0x10_0000,
            address_width: 48,
            table_entries_log2: 0,
        };
        assert_eq!(config.validate(), Ok(()));
        config.table_root = 0x10_0800;
        assert_eq!(config.validate(), Err(Error::Unaligned));
        config.table_root = 0x10_0000;
        config.address_width = 39;
        assert_eq!(config.validate(), Err(Error::NotSupported));
        let smmu = Stage1Config {
            format: Stage1Format::SmmuV3ContextDescriptors,
            table_root: 0x2000,
            address_width: 0,
            table_entries_log2: 21,
        };
        assert_eq!(smmu.validate(), Err(Error::NotSupported));
    }
}
