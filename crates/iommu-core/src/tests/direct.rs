//! Reserved-region rules for a device with a firmware-required identity map (RMRR / IORT RMR,
//! `ReservedKind::Direct`): its region is reserved in whichever IOAS it is attached through,
//! follows it across replace, is lifted where it left, and a replace into an IOAS that maps
//! the region is refused with the device left where it was.

use iommu_abi::{Error, IovaChoice, IovaRange};

use super::*;

/// RMRR_DEV bound, and an IOAS with a paging HWPT for it.
fn ioas_for(h: &mut Harness, device: Handle) -> (Handle, Handle) {
    let ioas = h.server.ioas_alloc(A).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    (ioas, hwpt)
}

#[test]
fn iova_ranges_leave_out_the_direct_region_and_the_msi_window() {
    let mut h = harness();
    let device = h.bind(A, VTD, RMRR_DEV);
    let (ioas, hwpt) = ioas_for(&mut h, device);
    assert_eq!(h.server.ioas_iova_ranges(A, ioas).unwrap(), vec![IovaRange::new(0, VTD_APERTURE_LAST).unwrap()], "nothing reserved before the attach");
    h.server.device_attach(A, device, hwpt, None).unwrap();
    assert_eq!(
        h.server.ioas_iova_ranges(A, ioas).unwrap(),
        vec![
            IovaRange::new(0, RMRR.start - 1).unwrap(),
            IovaRange::new(RMRR.last + 1, MSI_WINDOW.start - 1).unwrap(),
            IovaRange::new(MSI_WINDOW.last + 1, VTD_APERTURE_LAST).unwrap(),
        ]
    );
    for (iova, length) in [(RMRR.start, 0x1000), (RMRR.last + 1 - 0x1000, 0x1000), (RMRR.start - 0x1000, 0x2000), (RMRR.last + 1 - 0x1000, 0x2000)] {
        assert_eq!(h.map(A, ioas, MEM, 0, length, IovaChoice::Fixed(iova)), Err(Error::ReservedRegion), "map at {iova:#x}+{length:#x}");
    }
    h.assert_clean();
}

#[test]
fn the_direct_region_follows_the_device_across_replace() {
    let mut h = harness();
    let device = h.bind(A, VTD, RMRR_DEV);
    let (first, first_hwpt) = ioas_for(&mut h, device);
    let (second, second_hwpt) = ioas_for(&mut h, device);
    h.server.device_attach(A, device, first_hwpt, None).unwrap();

    // The second IOAS maps inside the region: the replace is refused, nothing moves.
    h.map(A, second, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start + 0x4000)).unwrap();
    assert_eq!(h.server.device_replace(A, device, second_hwpt, None), Err(Error::ReservedConflict));
    assert_eq!(h.map(A, first, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Err(Error::ReservedRegion), "still reserved where the device is");
    h.server.ioas_unmap_all(A, second).unwrap();

    h.server.device_replace(A, device, second_hwpt, None).unwrap();
    assert_eq!(h.map(A, second, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Err(Error::ReservedRegion), "reserved where the device went");
    assert!(h.server.ioas_iova_ranges(A, second).unwrap().iter().all(|range| !range.intersects(&RMRR)));
    assert_eq!(h.map(A, first, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Ok(RMRR.start), "lifted where the device left");
    // Back: refused while the first IOAS maps there, as an attach would be.
    assert_eq!(h.server.device_replace(A, device, first_hwpt, None), Err(Error::ReservedConflict));
    h.assert_clean();
}

/// A device without a direct region shares the IOAS: while the direct device is attached its
/// region is reserved for both (they share the domain and its identity map); once it detaches
/// the region is free again.
#[test]
fn an_ioas_reserves_the_regions_of_every_attached_device() {
    let mut h = harness();
    let (ioas, _plain, hwpt) = h.attached_setup();
    let direct = h.bind(A, VTD, RMRR_DEV);
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Ok(RMRR.start));
    h.server.ioas_unmap_all(A, ioas).unwrap();
    h.server.device_attach(A, direct, hwpt, None).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Err(Error::ReservedRegion));
    let auto = h.map(A, ioas, MEM, 0, MIB, IovaChoice::Auto).unwrap();
    assert!(!IovaRange::from_start_len(auto, MIB).unwrap().intersects(&RMRR), "automatic placement chose the direct region");
    h.server.device_detach(A, direct, None).unwrap();
    h.server.ioas_unmap_all(A, ioas).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(RMRR.start)), Ok(RMRR.start));
    h.assert_clean();
}
