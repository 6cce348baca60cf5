//! The IOMMU server's backends: [`iommu_core::IommuBackend`] on Intel VT-d ([`vtd`]) and on
//! Arm SMMUv3 ([`smmuv3`]).
//!
//! A backend composes a unit driver (the `vtd` or `smmuv3` crate) with `iommu-pt` page tables
//! into the steps the object model asks for, in the order safety needs: unmap, invalidate and
//! wait, hand unlinked tables back, and only then return (after which the object model unpins
//! the pages); on units in caching mode, flush after a map; fail closed when an invalidation
//! does not complete. Both are generic over an [`Environment`] (the `hwio` register, DMA
//! memory and clock types, and where log lines go), so the IOMMU server runs them on MMIO and
//! kernel memory, and host tests (`tests/`) run them on the drivers' software models.
#![no_std]

extern crate alloc;

mod direct;
mod dirty;
pub mod smmuv3;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vtd;

use iommu_abi::{Error, Perm};
use iommu_core::HwDomainId;

/// What a backend runs on.
pub trait Environment {
    /// A unit's register block.
    type Registers: hwio::Registers;
    /// Memory for tables and queues.
    type Dma: hwio::DmaAllocator;
    /// The clock bounding every wait on a unit.
    type Clock: hwio::Clock;
    /// Writes one line of the server's log (what a unit reported, what was routed).
    fn log(line: core::fmt::Arguments<'_>);
    /// Whether `Dma::flush_for_device` writes CPU stores back to memory, for units that do not
    /// snoop CPU caches (an SMMU with IDR0.COHACC = 0). Without it such units are refused.
    const CACHE_MAINTENANCE: bool = false;
}

/// What the in-server benchmark needs of a backend beyond the object model's interface.
pub trait Measured {
    /// The backend and the mode of unit 0 (e.g. "vtd (legacy second-level)"), `None` if the
    /// machine has no unit.
    fn describe(&self) -> Option<(&'static str, &'static str)>;
    /// Invalidates every cached translation of `domain` and waits for it; `false` if it failed.
    fn invalidate_domain(&mut self, domain: HwDomainId) -> bool;
}

fn table_error(error: iommu_pt::Error) -> Error {
    match error {
        iommu_pt::Error::OutOfMemory | iommu_pt::Error::BadAllocation => Error::NoResources,
        iommu_pt::Error::OutOfRange => Error::OutsideAperture,
        iommu_pt::Error::AlreadyMapped { .. } => Error::Overlap,
        iommu_pt::Error::UnsupportedPermission => Error::BadPermissions,
        _ => Error::HardwareFailure,
    }
}

/// An unmap failed. The object model only unmaps whole areas it mapped, so a split (the only
/// fallible step) never happens; if one did, the translations would outlive the pages, so the
/// server stops. Out of line: the message formatting would otherwise weigh on every unmap.
#[cold]
#[inline(never)]
fn unmap_failed(iova: u64, length: u64, error: iommu_pt::Error) -> ! {
    panic!("FATAL: page-table unmap {iova:#x}+{length:#x} failed: {error:?}");
}

fn table_perm(perm: Perm) -> iommu_pt::Perm {
    let mut bits = iommu_pt::Perm::NONE;
    if perm.read {
        bits = bits | iommu_pt::Perm::READ;
    }
    if perm.write {
        bits = bits | iommu_pt::Perm::WRITE;
    }
    bits
}
