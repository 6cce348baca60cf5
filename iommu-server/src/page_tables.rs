//! What both backends need between the object model and `iommu-pt`: its errors as protocol
//! errors, protocol permissions as page-table permissions, and the stop on a failed unmap.

use iommu_abi::{Error, Perm};
use userlib::println;

pub fn table_error(error: iommu_pt::Error) -> Error {
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
pub fn unmap_failed(iova: u64, length: u64, error: iommu_pt::Error) -> ! {
    println!("iommu-server: FATAL: unmap {iova:#x}+{length:#x} failed: {error:?}");
    panic!("page-table unmap failed");
}

pub fn table_perm(perm: Perm) -> iommu_pt::Perm {
    let mut bits = iommu_pt::Perm::NONE;
    if perm.read {
        bits = bits | iommu_pt::Perm::READ;
    }
    if perm.write {
        bits = bits | iommu_pt::Perm::WRITE;
    }
    bits
}
