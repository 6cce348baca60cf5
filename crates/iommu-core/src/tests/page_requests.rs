//! Page requests left pending when their attachment goes are answered `Invalid`, once, on
//! every path: replace (also to a domain reporting to the same queue), client exit with its
//! own and with another client's devices, SVA unbind; and an answered request cannot be
//! answered again.

use iommu_abi::{Access, Error, FaultReason, PageResponseCode, Rights};

use super::*;
use crate::fake::Call;

fn request(rid: RequesterId, pasid: Option<u32>, group: u32) -> FaultEvent {
    FaultEvent { unit: VTD, rid, pasid, iova: 0x4000_0000, access: Access::WRITE, reason: FaultReason::PageRequest, group, stage: iommu_abi::FaultStage::Unspecified }
}

/// The page responses sent since the log was cleared: (rid, pasid, group, code).
fn responses(h: &Harness) -> Vec<(RequesterId, Option<u32>, u32, PageResponseCode)> {
    h.calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::PageResponse { rid, pasid, group, code, .. } => Some((rid, pasid, group, code)),
            _ => None,
        })
        .collect()
}

/// DEV attached to an HWPT of A's IOAS reporting to A's queue; returns (ioas, device, fault).
fn attached_with_queue(h: &mut Harness) -> (Handle, Handle, Handle) {
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.device_attach(A, device, hwpt, None).unwrap();
    (ioas, device, fault)
}

/// Replacing the domain answers the old domain's requests, read or not, even when the new
/// domain reports to the same queue (a `Success` for a page the pager mapped in the old
/// domain would send the device to retry in the new one).
#[test]
fn replace_answers_the_old_domains_requests_also_on_the_same_queue() {
    let mut h = harness();
    let (ioas, device, fault) = attached_with_queue(&mut h);
    let same_queue = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    h.server.deliver_fault(request(DEV, None, 1));
    h.server.deliver_fault(request(DEV, None, 2));
    let read = h.server.read_faults(A, fault, 1).unwrap().records[0];
    h.clear_log();

    h.server.device_replace(A, device, same_queue, None).unwrap();

    assert_eq!(
        responses(&h),
        vec![(DEV, None, 2, PageResponseCode::Invalid), (DEV, None, 1, PageResponseCode::Invalid)],
        "the queued and the read request"
    );
    assert_eq!(h.server.fault_respond(A, fault, read.cookie, PageResponseCode::Success), Err(Error::NoSuchFault), "answered twice");
    assert!(h.server.read_faults(A, fault, 8).unwrap().records.is_empty(), "the queued request's record went with it");
    // Requests of the new domain are routed and answered as usual.
    h.server.deliver_fault(request(DEV, None, 3));
    let cookie = h.server.read_faults(A, fault, 8).unwrap().records[0].cookie;
    h.clear_log();
    h.server.fault_respond(A, fault, cookie, PageResponseCode::Success).unwrap();
    assert_eq!(responses(&h), vec![(DEV, None, 3, PageResponseCode::Success)]);
    h.assert_clean();
}

/// Only the replaced slot's requests go: another PASID of the same device keeps its own.
#[test]
fn replace_leaves_other_pasids_requests_pending() {
    let mut h = harness();
    let (ioas, device, fault) = attached_with_queue(&mut h);
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    let other = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    let pasid = h.server.pasid_alloc(A).unwrap();
    h.server.device_attach(A, device, hwpt, Some(pasid)).unwrap();
    h.server.deliver_fault(request(DEV, Some(pasid), 7));
    h.server.deliver_fault(request(DEV, None, 8));
    h.clear_log();
    h.server.device_replace(A, device, other, Some(pasid)).unwrap();
    assert_eq!(responses(&h), vec![(DEV, Some(pasid), 7, PageResponseCode::Invalid)]);
    let left = h.server.read_faults(A, fault, 8).unwrap().records;
    assert_eq!((left.len(), left[0].pasid), (1, None));
}

/// A client that exits leaves no device waiting: each pending request, queued or read, is
/// answered once.
#[test]
fn client_exit_answers_every_pending_request_once() {
    let mut h = harness();
    let (_, _, fault) = attached_with_queue(&mut h);
    for group in [4, 5, 6] {
        h.server.deliver_fault(request(DEV, None, group));
    }
    h.server.read_faults(A, fault, 2).unwrap();
    h.clear_log();
    h.server.close_client(A).unwrap();
    let mut answered = responses(&h);
    answered.sort_by_key(|response| response.2);
    assert_eq!(
        answered,
        vec![
            (DEV, None, 4, PageResponseCode::Invalid),
            (DEV, None, 5, PageResponseCode::Invalid),
            (DEV, None, 6, PageResponseCode::Invalid)
        ]
    );
    h.assert_clean();
}

/// B's device attached to A's HWPT reports to A's queue; when A exits, B's device is blocked
/// and its requests in A's queue are answered, once.
#[test]
fn the_queue_owners_exit_answers_another_clients_requests() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let probe = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, probe, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    let shared = h.server.handle_derive(A, hwpt, Rights::ATTACH, B).unwrap();
    let device_b = h.bind(B, VTD, DEV2);
    h.server.device_attach(B, device_b, shared, None).unwrap();
    h.server.deliver_fault(request(DEV2, None, 9));
    h.server.deliver_fault(request(DEV2, None, 10));
    h.server.read_faults(A, fault, 1).unwrap();
    h.clear_log();
    h.server.close_client(A).unwrap();
    let mut answered = responses(&h);
    answered.sort_by_key(|response| response.2);
    assert_eq!(answered, vec![(DEV2, None, 9, PageResponseCode::Invalid), (DEV2, None, 10, PageResponseCode::Invalid)]);
    h.assert_clean();
}

#[test]
fn sva_unbind_answers_the_binds_requests() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let pasid = h.server.pasid_alloc(A).unwrap();
    h.server.sva_bind(A, device, pasid, AddressSpace { id: 1, root: 0x1000, mair: 2 }, Some(fault)).unwrap();
    h.server.deliver_fault(request(DEV, Some(pasid), 11));
    let cookie = h.server.read_faults(A, fault, 8).unwrap().records[0].cookie;
    h.clear_log();
    h.server.sva_unbind(A, device, pasid).unwrap();
    assert_eq!(responses(&h), vec![(DEV, Some(pasid), 11, PageResponseCode::Invalid)]);
    assert_eq!(h.server.fault_respond(A, fault, cookie, PageResponseCode::Success), Err(Error::NoSuchFault));
    assert_eq!(responses(&h).len(), 1, "a refused answer reached the device");
}

/// Each group is one record and one answer, whatever the driver sends after it.
#[test]
fn a_group_is_answered_once() {
    let mut h = harness();
    let (_, device, fault) = attached_with_queue(&mut h);
    h.server.deliver_fault(request(DEV, None, 12));
    let records = h.server.read_faults(A, fault, 8).unwrap().records;
    assert_eq!(records.len(), 1);
    h.clear_log();
    h.server.fault_respond(A, fault, records[0].cookie, PageResponseCode::Success).unwrap();
    assert_eq!(h.server.fault_respond(A, fault, records[0].cookie, PageResponseCode::Success), Err(Error::NoSuchFault));
    assert_eq!(h.server.fault_respond(A, fault, records[0].cookie, PageResponseCode::Invalid), Err(Error::NoSuchFault));
    h.server.device_detach(A, device, None).unwrap();
    assert_eq!(responses(&h), vec![(DEV, None, 12, PageResponseCode::Success)], "answered, then nothing more on detach");
}
