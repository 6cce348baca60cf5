//! IOAS: map/unmap validation, IOVA allocation, copy and pin accounting, allowed and
//! reserved ranges.

use iommu_abi::{Error, IovaChoice, IovaRange, Perm, PAGE_SIZE};

use super::*;
use crate::fake::Call;

#[test]
fn map_validation_errors_are_distinct_and_change_nothing() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x10_0000)).unwrap();
    let pinned = h.server.pinned_pages();
    let cases: Vec<(u64, u64, u64, IovaChoice, Perm, Error)> = vec![
        (MEM, 0, 0, IovaChoice::Auto, Perm::READ, Error::ZeroLength),
        (MEM, 0, 0x1800, IovaChoice::Auto, Perm::READ, Error::Unaligned),
        (MEM, 0x800, 0x1000, IovaChoice::Auto, Perm::READ, Error::Unaligned),
        (MEM, 0, 0x1000, IovaChoice::Fixed(0x2_0800), Perm::READ, Error::Unaligned),
        (MEM, u64::MAX - 0xfff, 0x2000, IovaChoice::Auto, Perm::READ, Error::Overflow),
        (MEM, 0, 0x2000, IovaChoice::Fixed(u64::MAX - 0xfff), Perm::READ, Error::Overflow),
        (MEM, 0, 0x1000, IovaChoice::Fixed(0x10_3000), Perm::READ, Error::Overlap),
        (MEM, 0, 0x4000, IovaChoice::Fixed(0xf_e000), Perm::READ, Error::Overlap),
        (MEM, 0, 0x1000, IovaChoice::Auto, Perm { read: false, write: false }, Error::BadPermissions),
        (MEM_RO, 0, 0x1000, IovaChoice::Auto, Perm::READ_WRITE, Error::PermissionDenied),
        (MEM_RO, 0x1_0000, 0x1000, IovaChoice::Auto, Perm::READ, Error::OutOfObjectRange),
        (MEM_OF_B, 0, 0x1000, IovaChoice::Auto, Perm::READ, Error::BadCapability),
        (999, 0, 0x1000, IovaChoice::Auto, Perm::READ, Error::BadCapability),
    ];
    for (cap, offset, length, iova, perm, expected) in cases {
        let result = h.server.ioas_map(A, ioas, cap, offset, length, iova, perm);
        assert_eq!(result, Err(expected), "cap {cap} offset {offset:#x} length {length:#x} {iova:?}");
    }
    assert_eq!(h.server.pinned_pages(), pinned);
    assert_eq!(h.server.ioas_unmap_all(A, ioas), Ok(0x4000), "only the first mapping exists");
    h.assert_clean();
}

#[test]
fn map_outside_aperture_and_allowed_ranges() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, SMMU, SMMU_DEV);
    h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1_0000_0000)), Err(Error::OutsideAperture));
    assert_eq!(h.map(A, ioas, MEM, 0, 0x2000, IovaChoice::Fixed(0xffff_f000)), Err(Error::OutsideAperture), "straddles the top");
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0xffff_f000)), Ok(0xffff_f000));

    let allowed = IovaRange::new(0x4000_0000, 0x4fff_ffff).unwrap();
    assert_eq!(h.server.ioas_allow_iovas(A, ioas, &[allowed]), Err(Error::AreasOutsideAllowed));
    h.server.ioas_unmap_all(A, ioas).unwrap();
    h.server.ioas_allow_iovas(A, ioas, &[allowed]).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1000)), Err(Error::OutsideAperture));
    let auto = h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto).unwrap();
    assert!(allowed.contains_range(&IovaRange::from_start_len(auto, 0x1000).unwrap()));
    assert_eq!(h.server.ioas_iova_ranges(A, ioas), Ok(vec![allowed]));
    h.assert_clean();
}

#[test]
fn allowed_ranges_are_validated() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let bad = IovaRange { start: 0x2000, last: 0x1000 };
    assert_eq!(h.server.ioas_allow_iovas(A, ioas, &[bad]), Err(Error::InvalidRange));
    let unaligned = IovaRange::new(0x1000, 0x1800).unwrap();
    assert_eq!(h.server.ioas_allow_iovas(A, ioas, &[unaligned]), Err(Error::Unaligned));
    let top = IovaRange::new(0xffff_0000_0000_0000, u64::MAX).unwrap();
    assert_eq!(h.server.ioas_allow_iovas(A, ioas, &[top]), Ok(()), "the top of the space is page-aligned");
    h.server.ioas_allow_iovas(A, ioas, &[]).unwrap();
    assert_eq!(h.server.ioas_iova_ranges(A, ioas), Ok(vec![IovaRange::ALL]), "empty list lifts the restriction");
}

#[test]
fn auto_iova_is_aligned_never_zero_and_fills_holes() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let first = h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto).unwrap();
    assert_eq!(first, 0x1000, "IOVA 0 is never handed out");
    let small = h.map(A, ioas, MEM, 0, 0x3000, IovaChoice::Auto).unwrap();
    assert_eq!(small, 0x2000, "4 KiB alignment for a length below 2 MiB");
    let two_mib = h.map(A, ioas, MEM_4M, 0, 2 * MIB, IovaChoice::Auto).unwrap();
    assert_eq!(two_mib, 2 * MIB, "a 2 MiB mapping is 2 MiB aligned");
    // Unmapping the first page leaves a one-page hole that the next one-page map reuses.
    h.server.ioas_unmap(A, ioas, first, 0x1000).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0x1000, 0x1000, IovaChoice::Auto), Ok(0x1000));
    // A hole too small for the next mapping is skipped.
    assert_eq!(h.map(A, ioas, MEM, 0, 0x2000, IovaChoice::Auto), Ok(0x5000));
    h.assert_clean();
}

#[test]
fn auto_iova_reaches_the_top_and_reports_exhaustion() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let top_pages = IovaRange::new(u64::MAX - 0x2fff, u64::MAX).unwrap();
    h.server.ioas_allow_iovas(A, ioas, &[top_pages]).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Auto), Err(Error::NoIovaSpace), "bigger than the space");
    assert_eq!(h.map(A, ioas, MEM, 0, 0x2000, IovaChoice::Auto), Ok(u64::MAX - 0x2fff));
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto), Ok(u64::MAX - 0xfff), "last page of the space");
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Auto), Err(Error::NoIovaSpace), "full");
    assert_eq!(h.server.ioas_unmap(A, ioas, u64::MAX - 0xfff, 0x1000), Ok(0x1000));
    h.assert_clean();
}

#[test]
fn auto_iova_alignment_stays_inside_the_usable_range() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    // 2 MiB of space starting at an odd page: a 2 MiB mapping needs 2 MiB alignment,
    // and the only aligned start leaves the range.
    let odd = IovaRange::new(0x4000_1000, 0x4020_0fff).unwrap();
    h.server.ioas_allow_iovas(A, ioas, &[odd]).unwrap();
    assert_eq!(h.map(A, ioas, MEM_4M, 0, 2 * MIB, IovaChoice::Auto), Err(Error::NoIovaSpace));
    // A 1 MiB mapping only needs 4 KiB alignment and fits at the start.
    assert_eq!(h.map(A, ioas, MEM, 0, MIB, IovaChoice::Auto), Ok(0x4000_1000));
    // With room up to the next 2 MiB boundary plus 2 MiB, the aligned start is used.
    let wider = h.server.ioas_alloc(A).unwrap();
    h.server.ioas_allow_iovas(A, wider, &[IovaRange::new(0x4000_1000, 0x403f_ffff).unwrap()]).unwrap();
    assert_eq!(h.map(A, wider, MEM_4M, 0, 2 * MIB, IovaChoice::Auto), Ok(0x4020_0000));
    h.assert_clean();
}

#[test]
fn unmap_takes_whole_areas_only() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x10_0000)).unwrap();
    h.map(A, ioas, MEM, 0x4000, 0x2000, IovaChoice::Fixed(0x10_4000)).unwrap();
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x10_1000, 0x1000), Err(Error::PartialUnmap));
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x10_0000, 0x5000), Err(Error::PartialUnmap), "cuts the second area");
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x20_0000, 0x1000), Err(Error::NotMapped));
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x10_0000, 0), Err(Error::ZeroLength));
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x10_0800, 0x1000), Err(Error::Unaligned));
    assert_eq!(h.server.ioas_unmap(A, ioas, u64::MAX - 0xfff, 0x2000), Err(Error::Overflow));
    assert_eq!(h.server.pinned_pages(), 6, "failed unmaps changed nothing");
    // A range covering both areas and the space around them unmaps both.
    assert_eq!(h.server.ioas_unmap(A, ioas, 0xf_0000, 0x2_0000), Ok(0x6000));
    assert_eq!(h.server.pinned_pages(), 0);
    assert_eq!(h.server.ioas_unmap_all(A, ioas), Ok(0));
    h.assert_clean();
}

#[test]
fn pages_are_pinned_once_across_maps_copies_domains_and_clients() {
    let mut h = harness();
    let (ioas, device, _) = h.attached_setup();
    let second_hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x10_0000_0000)).unwrap();
    // The same pages mapped again at another IOVA: no new pin.
    h.map(A, ioas, MEM, 0x2000, 0x4000, IovaChoice::Fixed(0x20_0000_0000)).unwrap();
    assert_eq!(h.server.pinned_pages(), 6, "pages 0..6 of object 1, each once");
    let other = h.server.ioas_alloc(A).unwrap();
    let copied = h.server.ioas_copy(A, other, IovaChoice::Auto, ioas, 0x10_0000_0000, 0x4000, Perm::READ).unwrap();
    // Client B maps the same memory object through its own capability.
    let ioas_b = h.server.ioas_alloc(B).unwrap();
    h.map(B, ioas_b, MEM_OF_B, 0, 0x1000, IovaChoice::Auto).unwrap();
    assert_eq!(h.server.pinned_pages(), 6);
    assert_eq!(h.server.memory().pinned_pages(), 6, "the kernel saw one pin per page");
    // Both HWPTs of the IOAS got every mapping.
    assert_eq!(h.server.backend().mapped_pages(HwDomainId(1)), 8);
    assert_eq!(h.server.backend().mapped_pages(HwDomainId(2)), 8);

    h.server.ioas_unmap_all(A, ioas).unwrap();
    assert_eq!(h.server.pinned_pages(), 4, "copy and B still use pages 0..4");
    h.server.destroy(A, second_hwpt).unwrap();
    h.server.ioas_unmap(A, other, copied, 0x4000).unwrap();
    assert_eq!(h.server.pinned_pages(), 1, "B's page 0");
    h.server.close_client(B).unwrap();
    assert_eq!(h.server.pinned_pages(), 0);
    h.assert_clean();
}

#[test]
fn scattered_pages_are_mapped_as_separate_runs() {
    let mut h = harness();
    let (ioas, _, _) = h.attached_setup();
    h.clear_log();
    h.map(A, ioas, MEM_SCATTERED, 0, 0x3000, IovaChoice::Fixed(0x4000_0000)).unwrap();
    h.map(A, ioas, MEM, 0, 0x3000, IovaChoice::Fixed(0x5000_0000)).unwrap();
    let maps: Vec<(u64, u64, u64)> = h
        .calls()
        .iter()
        .filter_map(|call| match call {
            Call::Map { iova, phys, length, .. } => Some((*iova, *phys, *length)),
            _ => None,
        })
        .collect();
    assert_eq!(
        maps,
        vec![
            (0x4000_0000, 0xa000_f000, 0x1000),
            (0x4000_1000, 0xa000_e000, 0x1000),
            (0x4000_2000, 0xa000_d000, 0x1000),
            (0x5000_0000, 0x8000_0000, 0x3000),
        ]
    );
    assert_eq!(h.server.backend().translate(HwDomainId(1), 0x4000_1234), Some((0xa000_e234, Perm::READ_WRITE)));
    h.assert_clean();
}

#[test]
fn copy_validates_source_coverage_and_permissions() {
    let mut h = harness();
    let src = h.server.ioas_alloc(A).unwrap();
    let dst = h.server.ioas_alloc(A).unwrap();
    h.server.ioas_map(A, src, MEM, 0, 0x2000, IovaChoice::Fixed(0x1_0000), Perm::READ).unwrap();
    h.map(A, src, MEM, 0x8000, 0x2000, IovaChoice::Fixed(0x1_2000)).unwrap();
    h.map(A, src, MEM, 0x10000, 0x1000, IovaChoice::Fixed(0x1_6000)).unwrap();
    assert_eq!(h.server.ioas_copy(A, dst, IovaChoice::Auto, src, 0x1_0000, 0x5000, Perm::READ), Err(Error::NotMapped), "hole");
    assert_eq!(h.server.ioas_copy(A, dst, IovaChoice::Auto, src, 0x1_0000, 0x3000, Perm::READ_WRITE), Err(Error::PermissionDenied));
    assert_eq!(h.server.ioas_copy(A, dst, IovaChoice::Auto, src, 0x1_0000, 0, Perm::READ), Err(Error::ZeroLength));
    assert_eq!(h.server.ioas_copy(A, dst, IovaChoice::Auto, src, 0x1_0800, 0x1000, Perm::READ), Err(Error::Unaligned));
    assert_eq!(h.server.ioas_copy(A, src, IovaChoice::Fixed(0x1_2000), src, 0x1_0000, 0x1000, Perm::READ), Err(Error::Overlap));
    // A copy spanning two areas (partially) becomes two areas at the destination.
    let at = h.server.ioas_copy(A, dst, IovaChoice::Fixed(0x8000_0000), src, 0x1_1000, 0x2000, Perm::READ).unwrap();
    assert_eq!(at, 0x8000_0000);
    assert_eq!(h.server.ioas_unmap(A, dst, 0x8000_0000, 0x1000), Ok(0x1000), "first piece is its own area");
    assert_eq!(h.server.ioas_unmap(A, dst, 0x8000_1000, 0x1000), Ok(0x1000));
    // Copy within the same IOAS.
    let again = h.server.ioas_copy(A, src, IovaChoice::Auto, src, 0x1_6000, 0x1000, Perm::READ_WRITE).unwrap();
    assert_ne!(again, 0x1_6000);
    assert_eq!(h.server.pinned_pages(), 5);
    h.assert_clean();
}

#[test]
fn reserved_regions_of_attached_devices_are_excluded() {
    let mut h = harness();
    let (ioas, _, hwpt) = h.attached_setup();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0xfee0_0000)), Err(Error::ReservedRegion));
    let ranges = h.server.ioas_iova_ranges(A, ioas).unwrap();
    assert_eq!(
        ranges,
        vec![
            IovaRange::new(0, MSI_WINDOW.start - 1).unwrap(),
            IovaRange::new(MSI_WINDOW.last + 1, VTD_APERTURE_LAST).unwrap()
        ]
    );
    // A device with an RMRR cannot join while a mapping sits in its direct region...
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)).unwrap();
    let rmrr_device = h.bind(A, VTD, RMRR_DEV);
    assert_eq!(h.server.device_attach(A, rmrr_device, hwpt, None), Err(Error::ReservedConflict));
    assert_eq!(h.server.backend().attachment(VTD, RMRR_DEV, None), None, "still blocked");
    // ...and once it joined, nobody can map there.
    h.server.ioas_unmap_all(A, ioas).unwrap();
    h.server.device_attach(A, rmrr_device, hwpt, None).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start + 0x1000)), Err(Error::ReservedRegion));
    let auto = h.map(A, ioas, MEM_4M, 0, 0x20_0000, IovaChoice::Auto).unwrap();
    assert!(!IovaRange::from_start_len(auto, 0x20_0000).unwrap().intersects(&RMRR));
    // Detaching the device releases its reserved region.
    h.server.device_detach(A, rmrr_device, None).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Ok(RMRR.start));
    h.assert_clean();
}

#[test]
fn handles_must_name_an_ioas_with_the_right() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let fault = h.server.fault_alloc(A).unwrap();
    assert_eq!(h.map(A, fault, MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::WrongType));
    assert_eq!(h.map(A, Handle(999), MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::NoSuchObject));
    assert_eq!(h.map(A, Handle(0), MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::NoSuchObject));
    assert_eq!(h.map(B, ioas, MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::NoSuchObject), "handles are per client");
    assert_eq!(h.map(ClientId(77), ioas, MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::NoSuchClient));
    let unmap_only = h.server.handle_derive(A, ioas, iommu_abi::Rights::UNMAP, A).unwrap();
    assert_eq!(h.map(A, unmap_only, MEM, 0, PAGE_SIZE, IovaChoice::Auto), Err(Error::MissingRight));
    assert_eq!(h.server.ioas_unmap_all(A, unmap_only), Ok(0));
}

#[test]
fn unmap_finds_exactly_the_areas_inside_its_range() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1000)).unwrap();
    h.map(A, ioas, MEM, 0x1000, 0x2000, IovaChoice::Fixed(0x3000)).unwrap();
    h.map(A, ioas, MEM, 0x3000, 0x1000, IovaChoice::Fixed(0x8000)).unwrap();
    // Only the middle area lies in [0x2000, 0x8000): the one before ends first, the one after
    // starts at the range's end.
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x2000, 0x6000), Ok(0x2000));
    assert_eq!(h.server.pinned_pages(), 2);
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x3000, 0x2000), Err(Error::NotMapped), "already gone");
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x8000, 0x1000), Ok(0x1000));
    assert_eq!(h.server.ioas_unmap(A, ioas, 0x1000, 0x1000), Ok(0x1000));
    assert_eq!(h.server.pinned_pages(), 0);
}
