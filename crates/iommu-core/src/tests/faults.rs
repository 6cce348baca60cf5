//! Fault routing, bounded queues with overflow accounting, page-request responses.

use iommu_abi::{FaultStage, Access, Error, FaultReason, FaultRecord, PageResponseCode, Rights};

use super::*;
use crate::fake::Call;

fn event(rid: RequesterId, pasid: Option<u32>, reason: FaultReason, group: u32) -> FaultEvent {
    FaultEvent { unit: VTD, rid, pasid, iova: 0x4000_0123, access: Access::WRITE, reason, group, stage: FaultStage::Unspecified }
}

/// An IOAS, DEV bound and attached to an HWPT with a fault queue.
fn with_fault_queue(h: &mut Harness) -> (Handle, Handle, Handle) {
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.device_attach(A, device, hwpt, None).unwrap();
    (device, fault, hwpt)
}

#[test]
fn faults_go_to_the_queue_of_the_attached_hwpt() {
    let mut h = harness();
    let (device, fault, _) = with_fault_queue(&mut h);
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A });
    let readout = h.server.read_faults(A, fault, 8).unwrap();
    assert_eq!(
        readout.records,
        vec![FaultRecord { device, pasid: None, iova: 0x4000_0123, access: Access::WRITE, reason: FaultReason::Translation, cookie: 0, stage: FaultStage::Unspecified }]
    );
    assert_eq!(readout.overflow, 0);
    assert_eq!(h.server.read_faults(A, fault, 8).unwrap().records, vec![], "records are consumed");
}

/// The event thread's path: the object model drains one unit through the backend, queues
/// what it can route and tells the caller where each fault went; other units keep theirs.
#[test]
fn drained_faults_reach_their_queues_and_the_caller_learns_whom_to_wake() {
    let mut h = harness();
    let (_, fault, _) = with_fault_queue(&mut h);
    let drained = |rid, iova| DrainedFault { event: FaultEvent { iova, ..event(rid, None, FaultReason::Translation, 0) }, code: 5 };
    let other_unit = DrainedFault { event: FaultEvent { unit: SMMU, ..event(SMMU_DEV, None, FaultReason::Translation, 0) }, code: 0x10 };
    h.server.backend_mut().record_fault(drained(DEV, 0x1000));
    h.server.backend_mut().record_fault(other_unit);
    h.server.backend_mut().record_fault(drained(RequesterId(0x99), 0x2000));

    let mut seen = Vec::new();
    let reported = h.server.drain_faults(VTD, &mut |fault, delivery| seen.push((fault.event.iova, delivery)));

    assert_eq!(reported, 2);
    assert_eq!(seen, vec![(0x1000, FaultDelivery::Queued { owner: A }), (0x2000, FaultDelivery::Unrouted)]);
    assert_eq!(h.server.read_faults(A, fault, 8).unwrap().records.iter().map(|r| r.iova).collect::<Vec<_>>(), vec![0x1000]);
    assert_eq!(h.server.drain_faults(VTD, &mut |_, _| panic!("drained twice")), 0);
    let mut smmu = Vec::new();
    assert_eq!(h.server.drain_faults(SMMU, &mut |fault, _| smmu.push(fault.event.rid)), 1);
    assert_eq!(smmu, vec![SMMU_DEV]);
}

#[test]
fn faults_without_a_queue_are_counted_as_unrouted() {
    let mut h = harness();
    let (device, _, _) = with_fault_queue(&mut h);
    let (ioas_plain, plain_device) = (h.server.ioas_alloc(A).unwrap(), h.bind(A, VTD, DEV2));
    let plain = h.server.hwpt_alloc(A, plain_device, ioas_plain, HwptAllocOptions::default()).unwrap();
    h.server.device_attach(A, plain_device, plain, None).unwrap();
    h.clear_log();
    assert_eq!(h.server.deliver_fault(event(DEV2, None, FaultReason::Permission, 0)), FaultDelivery::Unrouted, "HWPT without queue");
    assert_eq!(h.server.deliver_fault(event(DEV, Some(9), FaultReason::Translation, 0)), FaultDelivery::Unrouted, "no PASID attachment");
    assert_eq!(h.server.deliver_fault(event(RequesterId(0x99), None, FaultReason::Translation, 0)), FaultDelivery::Unrouted, "unknown device");
    assert_eq!(h.server.deliver_fault(event(DEV2, None, FaultReason::PageRequest, 4)), FaultDelivery::Unrouted);
    assert_eq!(h.server.unrouted_faults(), 4);
    assert_eq!(
        h.calls(),
        vec![Call::PageResponse { unit: VTD, rid: DEV2, pasid: None, group: 4, code: PageResponseCode::Invalid }],
        "an unrouted page request is answered so the device does not hang"
    );
    h.server.device_detach(A, device, None).unwrap();
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Unrouted, "detached");
    assert_eq!(h.server.unrouted_faults(), 5);
}

#[test]
fn a_full_queue_counts_overflow_and_reports_it_once() {
    let mut h = harness_with(ServerConfig { fault_queue_depth: 2, ..ServerConfig::default() });
    let (_, fault, _) = with_fault_queue(&mut h);
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A });
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A });
    h.clear_log();
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Overflowed);
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::PageRequest, 8)), FaultDelivery::Overflowed);
    assert_eq!(h.calls(), vec![Call::PageResponse { unit: VTD, rid: DEV, pasid: None, group: 8, code: PageResponseCode::Invalid }]);
    let first = h.server.read_faults(A, fault, 1).unwrap();
    assert_eq!((first.records.len(), first.overflow), (1, 2));
    let second = h.server.read_faults(A, fault, 8).unwrap();
    assert_eq!((second.records.len(), second.overflow), (1, 0), "overflow is reported once");
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A }, "room again");
    assert_eq!(h.server.unrouted_faults(), 0);
}

#[test]
fn page_requests_are_answered_by_cookie() {
    let mut h = harness();
    let (_, fault, _) = with_fault_queue(&mut h);
    h.server.deliver_fault(event(DEV, None, FaultReason::PageRequest, 11));
    h.server.deliver_fault(event(DEV, None, FaultReason::PageRequest, 12));
    let records = h.server.read_faults(A, fault, 1).unwrap().records;
    let cookie = records[0].cookie;
    assert_ne!(cookie, 0);
    assert_eq!(h.server.fault_respond(A, fault, cookie + 1, PageResponseCode::Success), Err(Error::NoSuchFault), "still queued, not read");
    let reader_only = h.server.handle_derive(A, fault, Rights::ATTACH, A).unwrap();
    assert_eq!(h.server.fault_respond(A, reader_only, cookie, PageResponseCode::Success), Err(Error::MissingRight));
    h.clear_log();
    h.server.fault_respond(A, fault, cookie, PageResponseCode::Success).unwrap();
    assert_eq!(h.calls(), vec![Call::PageResponse { unit: VTD, rid: DEV, pasid: None, group: 11, code: PageResponseCode::Success }]);
    assert_eq!(h.server.fault_respond(A, fault, cookie, PageResponseCode::Success), Err(Error::NoSuchFault), "answered once");
}

#[test]
fn detaching_answers_the_requests_left_behind() {
    let mut h = harness();
    let (device, fault, _) = with_fault_queue(&mut h);
    h.server.deliver_fault(event(DEV, None, FaultReason::PageRequest, 1));
    h.server.deliver_fault(event(DEV, None, FaultReason::PageRequest, 2));
    h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0));
    h.server.read_faults(A, fault, 1).unwrap();
    h.clear_log();
    h.server.device_detach(A, device, None).unwrap();
    let responses: Vec<u32> = h
        .calls()
        .iter()
        .filter_map(|call| match call {
            Call::PageResponse { group, code: PageResponseCode::Invalid, .. } => Some(*group),
            _ => None,
        })
        .collect();
    assert_eq!(responses, vec![2, 1], "the queued and the awaiting request");
    let left = h.server.read_faults(A, fault, 8).unwrap().records;
    assert_eq!(left.len(), 1, "the unrecoverable record stays readable");
    assert_eq!(left[0].reason, FaultReason::Translation);
}

#[test]
fn sva_faults_route_by_pasid() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let pasid = h.server.pasid_alloc(A).unwrap();
    h.server.sva_bind(A, device, pasid, AddressSpace { id: 1, root: 0x1000, mair: 0 }, Some(fault)).unwrap();
    assert_eq!(h.server.destroy(A, fault), Err(Error::Busy));
    assert_eq!(h.server.deliver_fault(event(DEV, Some(pasid), FaultReason::PageRequest, 3)), FaultDelivery::Queued { owner: A });
    assert_eq!(h.server.deliver_fault(event(DEV, None, FaultReason::Translation, 0)), FaultDelivery::Unrouted, "RID not attached");
    let record = h.server.read_faults(A, fault, 8).unwrap().records[0];
    assert_eq!((record.device, record.pasid, record.reason), (device, Some(pasid), FaultReason::PageRequest));
}

#[test]
fn units_without_page_requests_still_queue_unrecoverable_faults() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, SMMU, SMMU_DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.device_attach(A, device, hwpt, None).unwrap();
    let translation = FaultEvent { unit: SMMU, rid: SMMU_DEV, pasid: None, iova: 0x5000, access: Access::READ, reason: FaultReason::Translation, group: 0, stage: FaultStage::Unspecified };
    assert_eq!(h.server.deliver_fault(translation), FaultDelivery::Queued { owner: A });
    let records = h.server.read_faults(A, fault, 8).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].device, records[0].iova, records[0].access), (device, 0x5000, Access::READ));
    h.assert_clean();
}

#[test]
fn a_fault_names_the_owner_of_the_queue_it_lands_in() {
    let mut h = harness();
    let (_, fault, hwpt) = with_fault_queue(&mut h);
    // B attaches its own device to A's HWPT: its faults land in A's queue, so A is notified.
    let shared = h.server.handle_derive(A, hwpt, Rights::ATTACH, B).unwrap();
    let device_b = h.bind(B, VTD, DEV2);
    h.server.device_attach(B, device_b, shared, None).unwrap();
    assert_eq!(h.server.deliver_fault(event(DEV2, None, FaultReason::Translation, 0)), FaultDelivery::Queued { owner: A });
    assert_eq!(h.server.read_faults(A, fault, 8).unwrap().records.len(), 1);
}

/// VT-d reports a write to a read-only second-level leaf with the reason it uses for a missing
/// leaf; the IOAS tells them apart: a write inside a read-only area is a permission fault, a
/// read there is not (the read was refused for another reason), and a write outside every area
/// stays a translation fault.
#[test]
fn a_write_to_a_read_only_area_is_a_permission_fault() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.device_attach(A, device, hwpt, None).unwrap();
    let iova = h.server.ioas_map(A, ioas, MEM, 0, 0x2000, IovaChoice::Fixed(0x4000_0000), Perm::READ).unwrap();
    let at = |iova: u64, access: Access| FaultEvent { unit: VTD, rid: DEV, pasid: None, iova, access, reason: FaultReason::Translation, group: 0, stage: FaultStage::Unspecified };
    for event in [at(iova + 0x1ff8, Access::WRITE), at(iova + 0x10, Access::READ), at(iova + 0x2000, Access::WRITE)] {
        assert_eq!(h.server.deliver_fault(event), FaultDelivery::Queued { owner: A });
    }
    let reasons: Vec<FaultReason> = h.server.read_faults(A, fault, 8).unwrap().records.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, vec![FaultReason::Permission, FaultReason::Translation, FaultReason::Translation]);
}
