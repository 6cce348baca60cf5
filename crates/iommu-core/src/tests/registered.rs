//! Registered memory: verified and pinned once, then mapped with no kernel call; pins stay
//! counted once per page however the page is mapped; validation and teardown.

use iommu_abi::{Error, IovaChoice, Perm, Rights, PAGE_SIZE};

use super::*;
use crate::fake::Call;

fn kernel_calls(h: &Harness) -> usize {
    h.calls().iter().filter(|call| matches!(call, Call::Pin { .. } | Call::Unpin { .. })).count()
}

#[test]
fn maps_from_registered_memory_need_no_kernel_call() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    let memory = h.server.memory_register(A, MEM).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), (MIB / PAGE_SIZE) as usize, "pinned whole, once");
    h.clear_log();
    for _ in 0..3 {
        let iova = h.server.ioas_map_registered(A, ioas, memory, 0x3000, 0x2000, IovaChoice::Fixed(0x40_0000), Perm::READ_WRITE);
        assert_eq!(iova, Ok(0x40_0000));
        assert_eq!(h.server.ioas_unmap(A, ioas, 0x40_0000, 0x2000), Ok(0x2000));
    }
    assert_eq!(kernel_calls(&h), 0, "{:?}", h.calls());
    let maps: Vec<Call> = h.calls().into_iter().filter(|call| matches!(call, Call::Map { .. })).collect();
    assert_eq!(maps.len(), 3);
    assert!(matches!(maps[0], Call::Map { iova: 0x40_0000, length: 0x2000, .. }));
    // The frames are the object's: the same as a map through the capability gives.
    let through_cap = h.map(A, ioas, MEM, 0x3000, 0x2000, IovaChoice::Fixed(0x80_0000)).unwrap();
    let phys_of = |log: &[Call], at: u64| {
        log.iter().find_map(|call| match call {
            Call::Map { iova, phys, .. } if *iova == at => Some(*phys),
            _ => None,
        })
    };
    let log = h.calls();
    assert_eq!(phys_of(&log, 0x40_0000), phys_of(&log, through_cap));
    assert_eq!(h.server.memory().pinned_pages(), (MIB / PAGE_SIZE) as usize, "the capability map pinned nothing new");
    h.server.ioas_unmap_all(A, ioas).unwrap();
    h.server.destroy(A, memory).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn a_mapped_registration_is_busy_and_copies_outlive_it() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let other = h.server.ioas_alloc(A).unwrap();
    let memory = h.server.memory_register(A, MEM).unwrap();
    let iova = h.server.ioas_map_registered(A, ioas, memory, 0, 4 * PAGE_SIZE, IovaChoice::Auto, Perm::READ).unwrap();
    assert_eq!(h.server.destroy(A, memory), Err(Error::Busy));
    // A copy takes uses of the pages itself.
    let copy = h.server.ioas_copy(A, other, IovaChoice::Auto, ioas, iova, 4 * PAGE_SIZE, Perm::READ).unwrap();
    assert_eq!(h.server.ioas_unmap(A, ioas, iova, 4 * PAGE_SIZE), Ok(4 * PAGE_SIZE));
    assert_eq!(h.server.destroy(A, memory), Ok(()));
    assert_eq!(h.server.memory().pinned_pages(), 4, "the copy keeps its pages pinned");
    assert_eq!(h.server.ioas_map_registered(A, ioas, memory, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Err(Error::NoSuchObject));
    assert_eq!(h.server.ioas_unmap(A, other, copy, 4 * PAGE_SIZE), Ok(4 * PAGE_SIZE));
    assert_eq!(h.server.memory().pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn a_shared_registration_goes_with_its_owner() {
    let mut h = harness();
    let memory = h.server.memory_register(A, MEM).unwrap();
    let lent = h.server.handle_derive(A, memory, Rights::MAP, B).unwrap();
    let ioas_of_b = h.server.ioas_alloc(B).unwrap();
    let iova = h.server.ioas_map_registered(B, ioas_of_b, lent, 0, 2 * PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).unwrap();
    assert_eq!(h.server.destroy(B, lent), Err(Error::MissingRight), "lent without DESTROY");
    h.server.close_client(A).unwrap();
    // B's mapping of A's memory went with A (unmapped, hence invalidated, before unpinning).
    assert_eq!(h.server.ioas_unmap(B, ioas_of_b, iova, 2 * PAGE_SIZE), Err(Error::NotMapped));
    assert_eq!(h.server.memory().pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn registered_map_validation_errors_are_distinct_and_change_nothing() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let memory = h.server.memory_register(A, MEM).unwrap();
    let read_only = h.server.memory_register(A, MEM_RO).unwrap();
    let no_map = h.server.handle_derive(A, memory, Rights::DESTROY, A).unwrap();
    // B registers the same object through its own capability: its pages stay pinned once.
    let of_b = h.server.memory_register(B, MEM_OF_B).unwrap();
    h.server.ioas_map_registered(A, ioas, memory, 0, 0x4000, IovaChoice::Fixed(0x10_0000), Perm::READ_WRITE).unwrap();
    let pinned = h.server.memory().pinned_pages();
    h.clear_log();
    let cases: Vec<(Handle, u64, u64, IovaChoice, Perm, Error)> = vec![
        (memory, 0, 0, IovaChoice::Auto, Perm::READ, Error::ZeroLength),
        (memory, 0, 0x1800, IovaChoice::Auto, Perm::READ, Error::Unaligned),
        (memory, 0x800, 0x1000, IovaChoice::Auto, Perm::READ, Error::Unaligned),
        (memory, u64::MAX - 0xfff, 0x2000, IovaChoice::Auto, Perm::READ, Error::Overflow),
        (memory, MIB - 0x1000, 0x2000, IovaChoice::Auto, Perm::READ, Error::OutOfObjectRange),
        (memory, 0, 0x1000, IovaChoice::Fixed(0x10_3000), Perm::READ, Error::Overlap),
        (memory, 0, 0x1000, IovaChoice::Auto, Perm { read: false, write: false }, Error::BadPermissions),
        (read_only, 0, 0x1000, IovaChoice::Auto, Perm::READ_WRITE, Error::PermissionDenied),
        (no_map, 0, 0x1000, IovaChoice::Auto, Perm::READ, Error::MissingRight),
        (ioas, 0, 0x1000, IovaChoice::Auto, Perm::READ, Error::WrongType),
        (Handle(999), 0, 0x1000, IovaChoice::Auto, Perm::READ, Error::NoSuchObject),
    ];
    for (handle, offset, length, iova, perm, expected) in cases {
        let result = h.server.ioas_map_registered(A, ioas, handle, offset, length, iova, perm);
        assert_eq!(result, Err(expected), "handle {handle:?} offset {offset:#x} length {length:#x} {iova:?}");
    }
    assert_eq!(h.server.memory().pinned_pages(), pinned);
    assert!(h.calls().is_empty(), "nothing reached the backend or the kernel: {:?}", h.calls());
    assert_eq!(h.server.ioas_unmap_all(A, ioas), Ok(0x4000), "only the first mapping exists");
    h.server.destroy(A, memory).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), (MIB / PAGE_SIZE + 0x1_0000 / PAGE_SIZE) as usize, "B's registration and A's read-only one");
    h.server.destroy(B, of_b).unwrap();
    h.server.destroy(A, read_only).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn registration_is_refused_without_a_memory_capability_and_leaves_nothing_pinned() {
    let mut h = harness();
    assert_eq!(h.server.memory_register(A, MEM_OF_B), Err(Error::BadCapability), "B's capability, not A's");
    assert_eq!(h.server.memory_register(A, 999), Err(Error::BadCapability));
    h.server.memory_mut().fail_nth_pin(1);
    assert_eq!(h.server.memory_register(A, MEM), Err(Error::NoResources));
    assert_eq!(h.server.memory().pinned_pages(), 0);
    assert_eq!(h.server.object_count(), 0, "no object is left half-made");
    h.assert_clean();
}

#[test]
fn closing_a_client_releases_its_registrations_and_their_mappings() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    let memory = h.server.memory_register(A, MEM).unwrap();
    let scattered = h.server.memory_register(A, MEM_SCATTERED).unwrap();
    h.server.ioas_map_registered(A, ioas, memory, 0, 8 * PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).unwrap();
    h.server.ioas_map_registered(A, ioas, scattered, 0, 4 * PAGE_SIZE, IovaChoice::Auto, Perm::READ).unwrap();
    h.server.close_client(A).unwrap();
    assert_eq!(h.server.memory().pinned_pages(), 0);
    assert_eq!(h.server.object_count(), 0);
    h.assert_clean();
}
