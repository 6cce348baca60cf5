//! SVA bindings as the kernel reports their address spaces changing: the untagged slot, the
//! invalidation of every binding before the acknowledgement, teardown when the process goes,
//! and fault routing without page requests.

use iommu_abi::wire::SVA_UNTAGGED;
use iommu_abi::{Access, Error, FaultReason};

use super::*;

const SPACE: AddressSpace = AddressSpace { id: 7, root: 0x5000_0000, mair: 0 };
const OTHER_SPACE: AddressSpace = AddressSpace { id: 8, root: 0x6000_0000, mair: 0 };

#[test]
fn the_untagged_slot_is_the_devices_own_dma() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    h.server.sva_bind(A, device, SVA_UNTAGGED, SPACE, None).unwrap();
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), Some(Translation::ProcessAddressSpace(SPACE)));
    let ioas = h.server.ioas_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.device_attach(A, device, hwpt, None), Err(Error::AlreadyAttached), "the bind holds the slot");
    assert_eq!(h.server.device_detach(A, device, None), Err(Error::NotAttached), "not an HWPT attachment");
    h.server.sva_unbind(A, device, SVA_UNTAGGED).unwrap();
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), None);
    h.server.device_attach(A, device, hwpt, None).unwrap();
    h.assert_clean();
}

/// Each record of the kernel reaches every unit its address space is bound on, and no other
/// binding, before the acknowledgement.
#[test]
fn a_change_invalidates_every_binding_of_that_address_space_only_then_acknowledges() {
    let mut h = harness();
    let first = h.bind(A, VTD, DEV);
    let second = h.bind(A, VTD, DEV2);
    let pasid = h.server.pasid_alloc(A).unwrap();
    h.server.sva_bind(A, first, SVA_UNTAGGED, SPACE, None).unwrap();
    h.server.sva_bind(A, second, pasid, SPACE, None).unwrap();
    h.server.sva_bind(A, second, SVA_UNTAGGED, OTHER_SPACE, None).unwrap();
    h.clear_log();

    let change = AddressSpaceChange::Shrunk { iova: 0x40_0000, length: 0x1000 };
    let log = h.log.clone();
    let mut calls_when_acknowledged = None;
    let bindings = h.server.address_space_record(SPACE.id, change, || calls_when_acknowledged = Some(log.borrow().len()));
    assert_eq!(bindings, 2);

    let mut invalidations = h.calls();
    assert_eq!(calls_when_acknowledged, Some(2), "acknowledged before both invalidations were done");
    invalidations.sort_by_key(|call| format!("{call:?}"));
    assert_eq!(
        invalidations,
        [
            Call::InvalidateAddressSpace { unit: VTD, rid: DEV, pasid: None, iova: 0x40_0000, length: 0x1000 },
            Call::InvalidateAddressSpace { unit: VTD, rid: DEV2, pasid: Some(pasid), iova: 0x40_0000, length: 0x1000 },
        ]
    );
    let mut acknowledged = false;
    assert_eq!(h.server.address_space_record(99, change, || acknowledged = true), 0, "an unbound address space needs no invalidation");
    assert!(acknowledged, "a record of an unbound address space is acknowledged too");
    h.assert_clean();
}

#[test]
fn a_gone_address_space_leaves_its_devices_blocked() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let other = h.bind(A, VTD, DEV2);
    h.server.sva_bind(A, device, SVA_UNTAGGED, SPACE, None).unwrap();
    h.server.sva_bind(A, other, SVA_UNTAGGED, OTHER_SPACE, None).unwrap();
    h.clear_log();

    assert_eq!(h.server.address_space_record(SPACE.id, AddressSpaceChange::Gone, || {}), 1);

    assert_eq!(h.calls(), [Call::Block { unit: VTD, rid: DEV, pasid: None }]);
    assert_eq!(h.server.backend().attachment(VTD, DEV2, None), Some(Translation::ProcessAddressSpace(OTHER_SPACE)));
    assert_eq!(h.server.sva_unbind(A, device, SVA_UNTAGGED), Err(Error::NotAttached));
    let change = AddressSpaceChange::Shrunk { iova: 0, length: 0x1000 };
    assert_eq!(h.server.address_space_record(SPACE.id, change, || {}), 0, "the blocked device is no binding any more");
    h.server.destroy(A, device).unwrap();
    h.assert_clean();
}

/// A DMA fault through a binding (an unmapped page, a kernel address) is no page request: the
/// bind's queue takes it like an HWPT's (a bind naming a queue no longer needs PAGE_REQUESTS).
#[test]
fn binding_faults_reach_the_bind_queue() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    h.server.sva_bind(A, device, SVA_UNTAGGED, SPACE, Some(fault)).unwrap();
    let event = FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x40_0000, access: Access::WRITE, reason: FaultReason::Translation, group: 0, stage: iommu_abi::FaultStage::Unspecified };
    assert_eq!(h.server.deliver_fault(event), FaultDelivery::Queued { owner: A });
    let records = h.server.read_faults(A, fault, 8).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].device, records[0].pasid, records[0].iova, records[0].access), (device, None, 0x40_0000, Access::WRITE));
    h.assert_clean();
}
