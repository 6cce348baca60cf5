//! The seam between the hardware-neutral object model and the IOMMU drivers (VT-d,
//! SMMUv3).
//!
//! The object model decides *what* the hardware must look like; a backend only performs
//! single, already-validated steps on one unit. The ordering guarantees the object model
//! relies on are part of each method's contract:
//!
//! * [`IommuBackend::unmap`] returns only after the IOTLB (and device TLBs) no longer hold
//!   the translations: the object model unpins pages right after it returns.
//! * [`IommuBackend::replace`] switches a device from one translation to another without a
//!   window in which it is blocked or translated by neither.
//! * [`IommuBackend::block`] returns only after in-flight translations through the old
//!   domain are invalidated.
//!
//! Operations that must not fail (unmap, block, domain free, page responses) return `()`:
//! if a driver cannot complete them (e.g. an invalidation timeout) the only safe reaction is
//! to stop the unit translating (fail closed), which the driver does itself before
//! returning. Fallible operations leave the hardware unchanged when they fail.

use alloc::vec::Vec;
use iommu_abi::{Access, Error, FaultReason, FaultStage, Invalidation, IovaRange, PageResponseCode, Perm, Stage1Config, UnitCaps, UnitKind};

/// Index of an IOMMU unit, as the server numbered them at discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(pub u32);

/// A device's requester ID on its unit: PCI bus/device/function (VT-d) or StreamID
/// (SMMUv3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequesterId(pub u32);

/// The backend's name for a domain (a set of I/O page tables plus a domain/ASID/VMID tag).
/// Backends keep their domains in a [`slot_table::SlotTable`] under it (every map and unmap
/// starts with this lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HwDomainId(pub u64);

slot_table::slot_key!(HwDomainId, 32, 32);

/// A domain the backend allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwDomain {
    /// The backend's name for it.
    pub id: HwDomainId,
    /// The IOVAs it can translate.
    pub aperture: IovaRange,
    /// Supported page sizes as a bit set (bit `n` set: 2^n-byte pages). Must include 4 KiB.
    pub page_sizes: u64,
}

/// What kind of domain to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainConfig {
    /// A domain whose page tables the server fills from an IOAS.
    Paging {
        /// May serve as the stage-2 parent of nested domains.
        nest_parent: bool,
        /// Supports hardware dirty tracking.
        dirty_tracking: bool,
    },
    /// A user-owned stage-1 table translated through the parent's stage 2.
    Nested {
        /// The stage-2 parent (allocated with `nest_parent`).
        parent: HwDomainId,
        /// The user's stage-1 table.
        stage1: Stage1Config,
    },
}

/// A process address space the kernel vouched for, for SVA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressSpace {
    /// The kernel's identity of the address space.
    pub id: u64,
    /// Physical address of its top-level page table (x86: the CR3 frame; AArch64: the
    /// TTBR0_EL1 table, 48-bit input, 4 KiB granule).
    pub root: u64,
    /// AArch64: the CPU's MAIR_EL1, which the tables' AttrIndx fields index (a context
    /// descriptor walking them must hold the same). 0 on x86.
    pub mair: u64,
}

/// What a device (or PASID) is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// A paging or nested domain.
    Domain(HwDomainId),
    /// A process address space shared with the CPU (SVA).
    ProcessAddressSpace(AddressSpace),
}

/// The kind of a reserved IOVA region of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservedKind {
    /// Firmware requires an identity mapping (VT-d RMRR, IORT RMR); the backend installs it
    /// when it attaches the device. Users may not map there.
    Direct,
    /// The interrupt (MSI) window: DMA writes there are interrupts, not memory.
    Msi,
}

/// An IOVA region a device cannot use for DMA to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservedRegion {
    /// The addresses.
    pub range: IovaRange,
    /// Why.
    pub kind: ReservedKind,
}

/// What a device's MSI capability is programmed with to raise routed MSIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u32,
    pub data: u32,
}

/// Static facts about a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitInfo {
    /// Architecture.
    pub kind: UnitKind,
    /// Features.
    pub caps: UnitCaps,
}

/// A fault the hardware reported, decoded by the backend for the object model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// Reporting unit.
    pub unit: UnitId,
    /// Faulting device.
    pub rid: RequesterId,
    /// PASID of the transaction, if any.
    pub pasid: Option<u32>,
    /// Faulting address.
    pub iova: u64,
    /// Kind of access.
    pub access: Access,
    /// Why it faulted.
    pub reason: FaultReason,
    /// For [`FaultReason::PageRequest`]: what the backend answers by, as it numbers it (a PRI
    /// page request group index, delivered once per group for its last request since the
    /// response is per group; or an SMMU stall tag, marked so it never equals a group index).
    pub group: u32,
    /// The stage that faulted (nested domains; `Unspecified` for one-stage translation).
    pub stage: FaultStage,
}

/// One fault as a backend drains it from a unit: the object model's event, and the unit's own
/// code for it (for the server's status page; the backends name codes for the log with a
/// `fault_name` of their own, since every fault is copied on its way to a queue and only the
/// log of undelivered faults needs the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainedFault {
    /// The fault.
    pub event: FaultEvent,
    /// The unit's reason code: a VT-d fault reason (FR, 8 bits), an SMMUv3 EventID (8 bits);
    /// 0 for a page request.
    pub code: u8,
}

/// The operations the object model needs from an IOMMU driver.
pub trait IommuBackend {
    /// The unit's architecture and features, or `None` for an unknown unit.
    fn unit_info(&self, unit: UnitId) -> Option<UnitInfo>;

    /// The reserved regions of the device `rid` on `unit` (from firmware tables and the
    /// unit's MSI window).
    fn reserved_regions(&self, unit: UnitId, rid: RequesterId) -> Vec<ReservedRegion>;

    /// Allocate a domain on `unit`. Errors: `NoResources`, `NotSupported`,
    /// `HardwareFailure`.
    fn domain_alloc(&mut self, unit: UnitId, config: &DomainConfig) -> Result<HwDomain, Error>;

    /// Free a domain that has no mapping and no attached device, including any cached
    /// translations tagged with it.
    fn domain_free(&mut self, domain: HwDomainId);

    /// Map `length` bytes of physically contiguous memory at `phys` to `iova`. On error
    /// nothing of the range is mapped.
    fn map(&mut self, domain: HwDomainId, iova: u64, phys: u64, length: u64, perm: Perm) -> Result<(), Error>;

    /// Remove every translation in `[iova, iova + length)` and invalidate the IOTLB and
    /// device TLBs for it, waiting for the invalidation to complete.
    fn unmap(&mut self, domain: HwDomainId, iova: u64, length: u64);

    /// Attach an unattached (blocked) device, or one PASID of it, to `translation`.
    fn attach(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error>;

    /// Atomically switch an attached device (or PASID) to `translation`. On error the old
    /// translation stays in force.
    fn replace(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>, translation: Translation) -> Result<(), Error>;

    /// Make the device (or PASID) fault every DMA, with caches invalidated.
    fn block(&mut self, unit: UnitId, rid: RequesterId, pasid: Option<u32>);

    /// The process address space bound at (`rid`, `pasid`) (an `attach` with
    /// [`Translation::ProcessAddressSpace`]) shrank at `[iova, iova + length)`: drop what the
    /// unit cached of that range (leaves and paging-structure entries) and wait for that. The
    /// kernel holds the frames until the server acknowledges after this returns. A backend
    /// that refuses every process address space has nothing to invalidate and keeps this
    /// default.
    fn invalidate_address_space(&mut self, _unit: UnitId, _rid: RequesterId, _pasid: Option<u32>, _iova: u64, _length: u64) {}

    /// Switch dirty-bit tracking of a paging domain allocated with `dirty_tracking`. Switching
    /// on starts clean: every dirty bit of the domain is cleared (and the caches that could
    /// hold them invalidated). A backend whose units advertise no `DIRTY_TRACKING` keeps this
    /// default.
    fn set_dirty_tracking(&mut self, _domain: HwDomainId, _enable: bool) -> Result<(), Error> {
        Err(Error::NotSupported)
    }

    /// OR into `bitmap` one bit per `page_size` page of `range` that was written since the
    /// last read and, with `clear`, clear those dirty bits (with the invalidation that
    /// requires, so the next write is recorded again); without it (iommufd's NO_CLEAR) the
    /// bits stay as they are. Default: as `set_dirty_tracking`.
    fn read_and_clear_dirty(&mut self, _domain: HwDomainId, _range: IovaRange, _page_size: u64, _clear: bool, _bitmap: &mut [u64]) -> Result<(), Error> {
        Err(Error::NotSupported)
    }

    /// Route a block of the device's MSIs (x86 interrupt remapping), one per entry of
    /// `vectors` (a power of two of them), accepting each only from `rid`; returns the MSI
    /// address and data the device's MSI capability must hold. A backend without interrupt
    /// remapping keeps this default.
    fn route_msis(&mut self, _unit: UnitId, _rid: RequesterId, _vectors: &[u8]) -> Result<MsiMessage, Error> {
        Err(Error::NotSupported)
    }

    /// Whether the device has MSIs routed (`route_msis`, not yet released).
    fn msis_routed(&self, _unit: UnitId, _rid: RequesterId) -> bool {
        false
    }

    /// The device is unbound: its MSI routes go, with the invalidation that makes them
    /// unusable, before this returns.
    fn release_msis(&mut self, _unit: UnitId, _rid: RequesterId) {}

    /// Carry out one stage-1 cache invalidation of the nested domain `domain` (allocated
    /// with `DomainConfig::Nested`), tagged with that domain's own stage-2 identity (VMID /
    /// domain ID), and wait for it. `InvalidRange` for an entry the unit cannot carry out
    /// (an ASID wider than the unit's); a backend without nesting keeps this default.
    fn invalidate_stage1(&mut self, _domain: HwDomainId, _entry: Invalidation) -> Result<(), Error> {
        Err(Error::NotSupported)
    }

    /// Answer the page request group `group` of the device (PCIe PRG response / SMMU
    /// CMD_RESUME). A backend whose units advertise no `PAGE_REQUESTS` delivers no page
    /// request, so by default there is nothing to answer.
    fn page_response(&mut self, _unit: UnitId, _rid: RequesterId, _pasid: Option<u32>, _group: u32, _code: PageResponseCode) {}

    /// Take the fault records `unit` holds (fault recording registers, event queue), decode
    /// them and give each to `sink`, oldest first, leaving the unit ready to record more.
    /// Returns how many faults the unit reported: those given to `sink` plus those naming no
    /// device or address (configuration errors), which the backend only logs.
    fn drain_faults(&mut self, unit: UnitId, sink: &mut dyn FnMut(DrainedFault)) -> usize;
}
