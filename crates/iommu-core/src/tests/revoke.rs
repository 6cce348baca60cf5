//! Revocation reaching the IOMMU: `revoke_memory` removes every area over the revoked pages
//! (unmap, which invalidates, before unpin) and the registrations of the object, and nothing
//! else; `revoke_device` blocks and unbinds the device.

use iommu_abi::{Error, IovaChoice, Perm, PAGE_SIZE};

use super::*;
use crate::fake::Call;

const OBJECT_1: MemoryObjectId = MemoryObjectId(1);

/// Index of the first call matching `pick`.
fn first(calls: &[Call], pick: impl Fn(&Call) -> bool) -> usize {
    calls.iter().position(pick).unwrap_or_else(|| panic!("no such call in {calls:?}"))
}

#[test]
fn revoked_pages_are_unmapped_then_unpinned_and_nothing_else_is_touched() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    let revoked = h.map(A, ioas, MEM, 0, 4 * PAGE_SIZE, IovaChoice::Fixed(0x10_0000 * 4)).unwrap();
    let copy = h.server.ioas_copy(A, ioas, IovaChoice::Fixed(0x80_0000), ioas, revoked, 2 * PAGE_SIZE, Perm::READ).unwrap();
    let same_object_elsewhere = h.map(A, ioas, MEM, 8 * PAGE_SIZE, 2 * PAGE_SIZE, IovaChoice::Fixed(0x90_0000)).unwrap();
    let other_object = h.server.ioas_map(A, ioas, MEM_RO, 0, PAGE_SIZE, IovaChoice::Fixed(0xa0_0000), Perm::READ).unwrap();
    // Client B's own IOAS over another page range of the same object.
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let of_b = h.server.ioas_map(B, ioas_b, MEM_OF_B, 100 * PAGE_SIZE, PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).unwrap();
    let pinned_before = h.server.memory().pinned_pages();
    h.clear_log();

    // The kernel reports the pin of pages 0..4 of object 1: the area over them and its copy go.
    let outcome = h.server.revoke_memory(OBJECT_1, 0, 4);
    assert_eq!(outcome, Revoked { areas: 2, registrations: 0 });
    let calls = h.calls();
    let unmapped = first(&calls, |call| matches!(call, Call::Unmap { iova, .. } if *iova == revoked));
    let unmapped_copy = first(&calls, |call| matches!(call, Call::Unmap { iova, .. } if *iova == copy));
    // Each page is unpinned only once no domain maps it: pages 2..4 after the area's unmap,
    // pages 0..2 after the copy's too.
    let unpinned_tail = first(&calls, |call| *call == Call::Unpin { object: OBJECT_1, offset: 2 * PAGE_SIZE, length: 2 * PAGE_SIZE });
    let unpinned_head = first(&calls, |call| *call == Call::Unpin { object: OBJECT_1, offset: 0, length: 2 * PAGE_SIZE });
    assert!(unmapped < unpinned_tail && unmapped.max(unmapped_copy) < unpinned_head, "unpinned before every domain was unmapped: {calls:?}");
    assert_eq!(h.server.memory().pinned_pages(), pinned_before - 4, "pages 0..4 unpinned, no other");
    assert!(!h.server.memory().pinned().contains(&(OBJECT_1, 0)));

    // The driver learns of it on its next unmap; everything else still stands.
    assert_eq!(h.server.ioas_unmap(A, ioas, revoked, 4 * PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(h.server.ioas_unmap(A, ioas, copy, 2 * PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(h.server.ioas_unmap(A, ioas, same_object_elsewhere, 2 * PAGE_SIZE), Ok(2 * PAGE_SIZE));
    assert_eq!(h.server.ioas_unmap(A, ioas, other_object, PAGE_SIZE), Ok(PAGE_SIZE));
    assert_eq!(h.server.ioas_unmap(B, ioas_b, of_b, PAGE_SIZE), Ok(PAGE_SIZE));
    assert_eq!(h.server.memory().pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn a_revoked_area_over_pages_another_client_shares_goes_for_both() {
    let mut h = harness();
    let ioas_a = h.server.ioas_alloc(A).unwrap();
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    let of_a = h.map(A, ioas_a, MEM, 0, PAGE_SIZE, IovaChoice::Auto).unwrap();
    // B maps the same page through its own capability: pinned once, under A's map.
    let of_b = h.server.ioas_map(B, ioas_b, MEM_OF_B, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), 1);
    assert_eq!(h.server.revoke_memory(OBJECT_1, 0, 1), Revoked { areas: 2, registrations: 0 });
    assert_eq!(h.server.memory().pinned_pages(), 0, "the revoked pin is released");
    assert_eq!(h.server.ioas_unmap(A, ioas_a, of_a, PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(h.server.ioas_unmap(B, ioas_b, of_b, PAGE_SIZE), Err(Error::NotMapped));
    // B still holds the memory: it maps it again, pinned afresh.
    h.server.ioas_map(B, ioas_b, MEM_OF_B, 0, PAGE_SIZE, IovaChoice::Fixed(of_b), Perm::READ_WRITE).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), 1);
    h.assert_clean();
}

#[test]
fn a_revoked_registration_goes_with_every_area_mapped_from_it() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    let memory = h.server.memory_register(A, MEM).unwrap();
    let near = h.server.ioas_map_registered(A, ioas, memory, 0, PAGE_SIZE, IovaChoice::Fixed(0x40_0000), Perm::READ_WRITE).unwrap();
    let far = h.server.ioas_map_registered(A, ioas, memory, 200 * PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(0x50_0000), Perm::READ_WRITE).unwrap();
    let untouched = h.server.ioas_map(A, ioas, MEM_4M, 0, PAGE_SIZE, IovaChoice::Fixed(0x60_0000), Perm::READ_WRITE).unwrap();
    h.clear_log();
    // One kernel pin of the registration is revoked: the registration cannot stand.
    assert_eq!(h.server.revoke_memory(OBJECT_1, 5, 1), Revoked { areas: 2, registrations: 1 });
    let calls = h.calls();
    let last_unmap = calls.iter().rposition(|call| matches!(call, Call::Unmap { .. })).unwrap();
    let unpinned = first(&calls, |call| matches!(call, Call::Unpin { object, .. } if *object == OBJECT_1));
    assert!(last_unmap < unpinned, "unpinned before unmapping: {calls:?}");
    assert_eq!(h.server.ioas_unmap(A, ioas, near, PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(h.server.ioas_unmap(A, ioas, far, PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(
        h.server.ioas_map_registered(A, ioas, memory, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ),
        Err(Error::NoSuchObject)
    );
    assert_eq!(h.server.memory().pinned_pages(), 1, "only the other object's page is pinned");
    assert_eq!(h.server.ioas_unmap(A, ioas, untouched, PAGE_SIZE), Ok(PAGE_SIZE));
    h.assert_clean();
}

#[test]
fn revoking_pages_nothing_uses_changes_nothing() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let iova = h.map(A, ioas, MEM, 0, PAGE_SIZE, IovaChoice::Auto).unwrap();
    h.clear_log();
    assert_eq!(h.server.revoke_memory(OBJECT_1, 1, 10), Revoked::default());
    assert_eq!(h.server.revoke_memory(MemoryObjectId(99), 0, 1), Revoked::default());
    assert_eq!(h.calls(), Vec::<Call>::new());
    assert_eq!(h.server.ioas_unmap(A, ioas, iova, PAGE_SIZE), Ok(PAGE_SIZE));
    h.assert_clean();
}

#[test]
fn a_revoked_device_is_blocked_and_unbound() {
    let mut h = harness();
    let (ioas, device, hwpt) = h.attached_setup();
    let iova = h.map(A, ioas, MEM, 0, PAGE_SIZE, IovaChoice::Auto).unwrap();
    let other = h.bind(B, VTD, DEV2);
    h.clear_log();
    assert!(h.server.revoke_device(VTD, DEV));
    assert!(h.calls().contains(&Call::Block { unit: VTD, rid: DEV, pasid: None }), "{:?}", h.calls());
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), None);
    assert_eq!(h.server.device_attach(A, device, hwpt, None), Err(Error::NoSuchObject));
    assert!(!h.server.revoke_device(VTD, DEV), "unbound already");
    // The other device and the mappings stay; the device can be bound again.
    assert!(h.server.get_info(B, other).is_ok());
    assert_eq!(h.server.ioas_unmap(A, ioas, iova, PAGE_SIZE), Ok(PAGE_SIZE));
    h.bind(A, VTD, DEV);
    h.assert_clean();
}
