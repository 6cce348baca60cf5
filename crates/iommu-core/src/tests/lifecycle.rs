//! Object table, rights, derived handles and revocation, destroy rules, and client
//! teardown order.

use iommu_abi::{FaultStage, Error, FaultReason, Handle, IovaChoice, PageResponseCode, Perm, Rights, Stage1Config, Stage1Format};

use super::*;
use crate::fake::Call;

#[test]
fn handles_are_never_zero_and_not_reused() {
    let mut h = harness();
    let first = h.server.ioas_alloc(A).unwrap();
    assert_eq!(first, Handle(1));
    h.server.destroy(A, first).unwrap();
    let mut seen = alloc::collections::BTreeSet::from([first]);
    for _ in 0..100 {
        let next = h.server.ioas_alloc(A).unwrap();
        assert!(next.0 != 0 && seen.insert(next), "{next:?} issued twice");
        assert_eq!(h.server.ioas_unmap_all(A, first), Err(Error::NoSuchObject), "the old handle stays dead");
        h.server.destroy(A, next).unwrap();
    }
    assert_eq!(h.server.ioas_alloc(ClientId(99)), Err(Error::NoSuchClient));
    assert!(!h.server.open_client(A), "already open");
    let beyond = ClientId(ServerConfig::default().max_clients);
    assert!(!h.server.open_client(beyond), "client ids index the client table");
    assert_eq!(h.server.ioas_alloc(beyond), Err(Error::NoSuchClient));
}

#[test]
fn a_full_handle_table_refuses_new_objects_and_creates_nothing() {
    let mut h = harness_with(ServerConfig { limits: ClientLimits::UNLIMITED, ..ServerConfig::default() });
    let live: alloc::vec::Vec<Handle> = (0..u16::MAX).map(|_| h.server.ioas_alloc(A).unwrap()).collect();
    let objects = h.server.object_count();
    assert_eq!(h.server.ioas_alloc(A), Err(Error::NoResources));
    assert_eq!(h.server.fault_alloc(A), Err(Error::NoResources));
    assert_eq!(h.server.object_count(), objects, "nothing half-created");
    h.server.destroy(A, live[7]).unwrap();
    let again = h.server.ioas_alloc(A).unwrap();
    assert!(!live.contains(&again));
    assert_eq!(h.server.ioas_alloc(B), Ok(Handle(1)), "other clients' tables are their own");
}

#[test]
fn destroy_rules() {
    let mut h = harness();
    let (ioas, device, hwpt) = h.attached_setup();
    let fault = h.server.fault_alloc(A).unwrap();
    let with_fault = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).unwrap();
    assert_eq!(h.server.destroy(A, Handle(999)), Err(Error::NoSuchObject));
    assert_eq!(h.server.destroy(A, ioas), Err(Error::Busy), "IOAS with HWPTs");
    assert_eq!(h.server.destroy(A, hwpt), Err(Error::Busy), "HWPT with a device");
    assert_eq!(h.server.destroy(A, device), Err(Error::Busy), "attached device");
    assert_eq!(h.server.destroy(A, fault), Err(Error::Busy), "fault queue used by an HWPT");
    let no_destroy = h.server.handle_derive(A, with_fault, Rights::all().difference(Rights::DESTROY), A).unwrap();
    assert_eq!(h.server.destroy(A, no_destroy), Err(Error::MissingRight));
    h.server.destroy(A, with_fault).unwrap();
    assert_eq!(h.server.destroy(A, no_destroy), Err(Error::NoSuchObject), "destroy removed every handle to it");
    h.server.destroy(A, fault).unwrap();
    assert_eq!(h.server.destroy(A, fault), Err(Error::NoSuchObject), "double destroy");
    // An IOAS with mappings but no HWPT can be destroyed; its pages are unpinned.
    let lone = h.server.ioas_alloc(A).unwrap();
    h.map(A, lone, MEM, 0, 0x2000, IovaChoice::Auto).unwrap();
    h.server.destroy(A, lone).unwrap();
    assert_eq!(h.server.pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn wrong_types_are_reported() {
    let mut h = harness();
    let (ioas, device, hwpt) = h.attached_setup();
    assert_eq!(h.server.device_attach(A, device, ioas, None), Err(Error::WrongType));
    assert_eq!(h.server.device_attach(A, hwpt, hwpt, None), Err(Error::WrongType));
    assert_eq!(h.server.hwpt_alloc(A, device, hwpt, HwptAllocOptions::default()), Err(Error::WrongType));
    assert_eq!(h.server.read_faults(A, ioas, 1), Err(Error::WrongType));
    assert_eq!(h.server.get_info(A, ioas), Err(Error::WrongType));
}

#[test]
fn interrupt_source_needs_a_device_handle_with_attach() {
    let mut h = harness();
    let (ioas, device, _hwpt) = h.attached_setup();
    assert_eq!(h.server.device_interrupt_source(A, device), Ok((VTD, DEV)));
    assert_eq!(h.server.device_interrupt_source(A, ioas), Err(Error::WrongType));
    assert_eq!(h.server.device_interrupt_source(B, device), Err(Error::NoSuchObject), "another client's handle");
    let no_attach = h.server.handle_derive(A, device, Rights::all().difference(Rights::ATTACH), B).unwrap();
    assert_eq!(h.server.device_interrupt_source(B, no_attach), Err(Error::MissingRight));
}

#[test]
fn unbinding_a_device_releases_its_msis() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let _other = h.bind(B, VTD, DEV2);
    h.clear_log();
    h.server.destroy(A, device).unwrap();
    assert_eq!(h.calls(), vec![Call::ReleaseMsis { unit: VTD, rid: DEV }], "destroy");
    h.clear_log();
    h.server.close_client(B).unwrap();
    assert!(h.calls().contains(&Call::ReleaseMsis { unit: VTD, rid: DEV2 }), "its owner's teardown");
}

#[test]
fn derived_handles_carry_fewer_rights_to_another_client() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let map_only = h.server.handle_derive(A, ioas, Rights::MAP.union(Rights::GRANT), B).unwrap();
    assert_eq!(h.map(B, map_only, MEM_OF_B, 0, 0x1000, IovaChoice::Fixed(0x1000)), Ok(0x1000));
    assert_eq!(h.server.ioas_unmap(B, map_only, 0x1000, 0x1000), Err(Error::MissingRight));
    assert_eq!(h.server.destroy(B, map_only), Err(Error::MissingRight));
    assert_eq!(h.server.handle_derive(B, map_only, Rights::UNMAP, B), Err(Error::RightsEscalation));
    assert_eq!(h.server.handle_derive(A, ioas, Rights::MAP, ClientId(42)), Err(Error::NoSuchClient));
    let no_grant = h.server.handle_derive(A, ioas, Rights::MAP, A).unwrap();
    assert_eq!(h.server.handle_derive(A, no_grant, Rights::MAP, B), Err(Error::MissingRight));
    assert_eq!(h.server.ioas_copy(B, ioas_b, IovaChoice::Auto, map_only, 0x1000, 0x1000, Perm::READ), Err(Error::MissingRight), "no COPY_FROM");
    // The mapping B made through A's IOAS is A's: it shows in A's IOAS.
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x1000, 0x1000), Ok(0x1000));
}

#[test]
fn revoking_a_handle_revokes_everything_derived_from_it() {
    let mut h = harness();
    let c = ClientId(3);
    assert!(h.server.open_client(c));
    h.server.handle_accept(c, B, true).unwrap();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let shared = h.server.handle_derive(A, ioas, Rights::all(), A).unwrap();
    let for_b = h.server.handle_derive(A, shared, Rights::MAP.union(Rights::GRANT), B).unwrap();
    let for_c = h.server.handle_derive(B, for_b, Rights::MAP, c).unwrap();
    let sibling = h.server.handle_derive(A, ioas, Rights::MAP, B).unwrap();
    assert_eq!(h.server.ioas_iova_ranges(c, for_c).map(|r| r.len()), Ok(1));
    h.server.handle_revoke(A, shared).unwrap();
    assert_eq!(h.server.ioas_iova_ranges(B, for_b), Err(Error::NoSuchObject));
    assert_eq!(h.server.ioas_iova_ranges(c, for_c), Err(Error::NoSuchObject), "transitively");
    assert!(h.server.ioas_iova_ranges(B, sibling).is_ok(), "a handle derived from another source survives");
    assert!(h.server.ioas_iova_ranges(A, ioas).is_ok(), "the original and the object survive");
    assert_eq!(h.server.handle_revoke(A, shared), Err(Error::NoSuchObject));
    assert_eq!(h.server.handle_count(B), 1);
    assert_eq!(h.server.handle_count(c), 0);
}

#[test]
fn another_clients_copy_keeps_pages_pinned_after_the_owner_closes() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x3000, IovaChoice::Fixed(0x1_0000)).unwrap();
    let readable = h.server.handle_derive(A, ioas, Rights::COPY_FROM, B).unwrap();
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let device_b = h.bind(B, VTD, DEV2);
    h.server.hwpt_alloc(B, device_b, ioas_b, HwptAllocOptions::default()).unwrap();
    let at = h.server.ioas_copy(B, ioas_b, IovaChoice::Auto, readable, 0x1_0000, 0x3000, Perm::READ).unwrap();
    h.server.close_client(A).unwrap();
    assert_eq!(h.server.pinned_pages(), 3, "B's mapping still uses the pages");
    assert_eq!(h.server.backend().translate(HwDomainId(1), at), Some((0x8000_0000, Perm::READ)));
    h.server.close_client(B).unwrap();
    assert_eq!(h.server.pinned_pages(), 0);
    assert_eq!(h.server.object_count(), 0);
    h.assert_clean();
}

/// Index of the first and last call matching `pick`.
fn span(calls: &[Call], pick: impl Fn(&Call) -> bool) -> (usize, usize) {
    let first = calls.iter().position(&pick).expect("call present");
    let last = calls.iter().rposition(&pick).expect("call present");
    (first, last)
}

#[test]
fn closing_a_client_releases_everything_in_dependency_order() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let second_ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let sva_device = h.bind(A, VTD, RMRR_DEV);
    let fault = h.server.fault_alloc(A).unwrap();
    let parent = h
        .server
        .hwpt_alloc(A, device, ioas, HwptAllocOptions { nest_parent: true, fault: Some(fault), ..Default::default() })
        .unwrap();
    h.server.hwpt_alloc(A, device, second_ioas, HwptAllocOptions::default()).unwrap();
    h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x4000_0000)).unwrap();
    let stage1 = Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: 0x4000_2000, address_width: 48, table_entries_log2: 0 };
    let nested = h.server.hwpt_alloc_nested(A, device, parent, stage1, Some(fault)).unwrap();
    h.map(A, ioas, MEM_SCATTERED, 0, 0x2000, IovaChoice::Fixed(0x5000_0000)).unwrap();
    h.server.ioas_copy(A, second_ioas, IovaChoice::Auto, ioas, 0x4000_0000, 0x4000, Perm::READ).unwrap();
    let pasid = h.server.pasid_alloc(A).unwrap();
    h.server.device_attach(A, device, nested, None).unwrap();
    h.server.device_attach(A, device, parent, Some(pasid)).unwrap();
    let sva_pasid = h.server.pasid_alloc(A).unwrap();
    h.server.sva_bind(A, sva_device, sva_pasid, AddressSpace { id: 1, root: 0x7000_0000, mair: 0 }, Some(fault)).unwrap();
    // B attaches its own device to A's parent HWPT through a derived handle.
    let shared_parent = h.server.handle_derive(A, parent, Rights::ATTACH, B).unwrap();
    let device_b = h.bind(B, VTD, DEV2);
    h.server.device_attach(B, device_b, shared_parent, None).unwrap();
    // A page request is waiting for an answer.
    let request = FaultEvent { unit: VTD, rid: DEV, pasid: None, iova: 0x1000, access: iommu_abi::Access::READ, reason: FaultReason::PageRequest, group: 5, stage: FaultStage::Unspecified };
    assert_eq!(h.server.deliver_fault(request), FaultDelivery::Queued { owner: A });

    let attached_slots = h.server.backend().attached_slots();
    assert_eq!(attached_slots, 4);
    assert!(h.server.pinned_pages() > 0);
    h.clear_log();
    h.server.close_client(A).unwrap();
    let calls = h.calls();

    // Everything A owned is gone; B keeps only its (now blocked) device.
    assert_eq!(h.server.object_count(), 1);
    assert_eq!(h.server.handle_count(B), 1);
    assert_eq!(h.server.handle_count(A), 0);
    assert_eq!(h.server.pinned_pages(), 0);
    assert_eq!(h.server.memory().pinned_pages(), 0);
    assert_eq!(h.server.backend().live_domains(), 0);
    assert_eq!(h.server.backend().total_mapped_pages(), 0);
    assert_eq!(h.server.backend().attached_slots(), 0);
    assert_eq!(h.server.allocated_pasids(), 0);
    let blocks = calls.iter().filter(|call| matches!(call, Call::Block { .. })).count();
    assert_eq!(blocks, attached_slots, "every attachment was blocked exactly once");
    assert_eq!(calls.iter().filter(|call| matches!(call, Call::DomainFree { .. })).count(), 3);
    assert!(calls.contains(&Call::PageResponse { unit: VTD, rid: DEV, pasid: None, group: 5, code: PageResponseCode::Invalid }));
    // Order: blocks, then unmaps (with invalidation), then domain frees, and unpins last.
    let (_, last_block) = span(&calls, |call| matches!(call, Call::Block { .. }));
    let (first_unmap, last_unmap) = span(&calls, |call| matches!(call, Call::Unmap { .. }));
    let b_blocked = calls.iter().position(|call| *call == Call::Block { unit: VTD, rid: DEV2, pasid: None }).unwrap();
    let parent_freed = calls.iter().position(|call| *call == Call::DomainFree { domain: HwDomainId(1) }).unwrap();
    let (first_unpin, _) = span(&calls, |call| matches!(call, Call::Unpin { .. }));
    assert!(last_block < first_unmap, "devices blocked before their domains are torn down");
    assert!(b_blocked < parent_freed, "B's device is blocked before the HWPT it used is freed");
    assert!(last_unmap < first_unpin, "every unmap (and invalidation) before any unpin");
    // The nested domain (3, allocated after the mapping its root needs) is freed before its parent (1).
    let freed: Vec<HwDomainId> = calls
        .iter()
        .filter_map(|call| match call {
            Call::DomainFree { domain } => Some(*domain),
            _ => None,
        })
        .collect();
    let position = |d: u64| freed.iter().position(|f| *f == HwDomainId(d)).unwrap();
    assert!(position(3) < position(1));
    assert_eq!(h.server.close_client(A), Err(Error::NoSuchClient));
    h.server.destroy(B, device_b).unwrap();
    assert_eq!(h.server.object_count(), 0);
    h.assert_clean();
}

#[test]
fn closing_after_revoking_own_handles_still_releases_everything() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto).unwrap();
    h.server.handle_revoke(A, ioas).unwrap();
    assert_eq!(h.server.object_count(), 3, "revoking a handle does not destroy the object");
    h.server.close_client(A).unwrap();
    assert_eq!(h.server.object_count(), 0);
    assert_eq!(h.server.pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn deriving_into_another_client_needs_its_consent() {
    let mut h = harness();
    let c = ClientId(3);
    assert!(h.server.open_client(c));
    let ioas = h.server.ioas_alloc(A).unwrap();
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let before = (h.server.handle_count(c), h.server.usage(c));
    assert_eq!(h.server.handle_derive(A, ioas, Rights::MAP, c), Err(Error::NotAccepted));
    assert_eq!((h.server.handle_count(c), h.server.usage(c)), before, "the recipient's table is untouched");
    assert_eq!(h.server.handle_derive(B, ioas_b, Rights::MAP, A), Err(Error::NotAccepted), "B accepting A is not A accepting B");
    assert!(h.server.handle_derive(A, ioas, Rights::MAP, A).is_ok(), "into one's own table needs no consent");

    h.server.handle_accept(c, A, true).unwrap();
    h.server.handle_accept(c, A, true).unwrap();
    let lent = h.server.handle_derive(A, ioas, Rights::MAP, c).unwrap();
    assert!(h.server.ioas_iova_ranges(c, lent).is_ok());
    assert_eq!(h.server.handle_derive(B, ioas_b, Rights::MAP, c), Err(Error::NotAccepted), "consent names one sender");
    // Withdrawing stops new handles; the ones already given stay until revoked.
    h.server.handle_accept(c, A, false).unwrap();
    assert_eq!(h.server.handle_derive(A, ioas, Rights::MAP, c), Err(Error::NotAccepted));
    assert!(h.server.ioas_iova_ranges(c, lent).is_ok());
    assert_eq!(h.server.handle_accept(c, ClientId(ServerConfig::default().max_clients), true), Err(Error::NoSuchClient));

    // A client that leaves takes the consent given to it along: a new client with its id
    // starts with none.
    h.server.handle_accept(c, A, true).unwrap();
    h.server.close_client(A).unwrap();
    assert!(h.server.open_client(A));
    let fresh = h.server.ioas_alloc(A).unwrap();
    assert_eq!(h.server.handle_derive(A, fresh, Rights::MAP, c), Err(Error::NotAccepted));
    assert_eq!(h.server.usage(c).unwrap().bytes, 0, "the consent entry was refunded");
}
