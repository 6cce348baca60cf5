//! What both backends need between the object model and `iommu-pt`: its errors as protocol
//! errors, and protocol permissions as page-table permissions.

use iommu_abi::{Error, Perm};

pub fn table_error(error: iommu_pt::Error) -> Error {
    match error {
        iommu_pt::Error::OutOfMemory | iommu_pt::Error::BadAllocation => Error::NoResources,
        iommu_pt::Error::OutOfRange => Error::OutsideAperture,
        iommu_pt::Error::AlreadyMapped { .. } => Error::Overlap,
        iommu_pt::Error::UnsupportedPermission => Error::BadPermissions,
        _ => Error::HardwareFailure,
    }
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
