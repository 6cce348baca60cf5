//! The stage a VT-d fault of a nested attachment names. A VT-d fault record has no stage
//! field: the reason code says it (VT-d spec 7.1.3, the scalable-mode fault reasons). Faults
//! of attachments that are not nested name none.

use alloc::collections::BTreeSet;
use iommu_abi::FaultStage;

/// A unit's requester slots attached to nested domains (PGTT 011b): (requester ID, PASID),
/// `None` for DMA without PASID (RID_PASID).
#[derive(Default)]
pub(super) struct NestedAttachments(BTreeSet<(u16, Option<u32>)>);

impl NestedAttachments {
    /// Records what the slot is attached to now: a nested domain or not (or nothing).
    pub(super) fn set(&mut self, rid: u16, pasid: Option<u32>, nested: bool) {
        if nested {
            self.0.insert((rid, pasid));
        } else {
            self.0.remove(&(rid, pasid));
        }
    }

    /// The stage a fault with reason `code` of the slot names. Units without nested
    /// attachments (every QEMU unit) pay one emptiness check.
    pub(super) fn stage(&self, rid: u16, pasid: Option<u32>, code: u8) -> FaultStage {
        if self.0.is_empty() || !self.0.contains(&(rid, pasid)) {
            return FaultStage::Unspecified;
        }
        nested_fault_stage(code)
    }
}

/// The stage a scalable-mode fault reason of nested translation names.
pub(super) fn nested_fault_stage(code: u8) -> FaultStage {
    match code {
        // SFS.x (70h-77h): a first-stage entry, or the first-stage pointer, of the client's
        // tables; SGN.1 (80h) a non-canonical input and SGN.2 (81h) a U/S violation, which
        // only first-stage translation checks.
        0x70..=0x77 | 0x80 | 0x81 => FaultStage::Stage1,
        // SSS.x (78h-7Fh): a second-stage entry or pointer, also when walked for a
        // first-stage table read; SGN.4/SGN.5 (83h/84h) an address beyond the host / second-
        // stage width; SGN.7 (86h) a missing read permission, which only second-stage entries
        // grant.
        0x78..=0x7f | 0x83 | 0x84 | 0x86 => FaultStage::Stage2,
        // SGN.6 (85h, write permission) is raised by either stage, PASID-entry faults (5xh) by
        // the server's configuration: the code names no stage.
        _ => FaultStage::Unspecified,
    }
}
