//! HWPTs, attachments, nesting, PASIDs, SVA and dirty tracking; atomicity under injected
//! hardware failures.

use iommu_abi::{Error, Invalidation, IovaChoice, Stage1Config, Stage1Format, INVALIDATIONS_PER_CALL};

use super::*;
use crate::fake::Call;

fn vtd_stage1() -> Stage1Config {
    Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: 0x1_0000, address_width: 48, table_entries_log2: 0 }
}

#[test]
fn map_rolls_back_every_domain_when_any_map_fails() {
    // Fail each of the four backend maps in turn (two runs into two domains).
    for failing_call in 1..=4 {
        let mut h = harness();
        let (ioas, device, _) = h.attached_setup();
        h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
        // Two physical runs: scattered object pages 0 and 1 are not adjacent.
        h.server.backend_mut().fail_nth_call(failing_call);
        let result = h.map(A, ioas, MEM_SCATTERED, 0, 0x2000, IovaChoice::Fixed(0x4000_0000));
        assert_eq!(result, Err(Error::HardwareFailure), "failing call {failing_call}");
        assert_eq!(h.server.backend().total_mapped_pages(), 0, "failing call {failing_call}");
        assert_eq!(h.server.pinned_pages(), 0);
        assert_eq!(h.server.ioas_unmap_all(A, ioas), Ok(0), "no area was recorded");
        h.assert_clean();
    }
}

#[test]
fn failed_pin_releases_pins_taken_by_the_same_request() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    // Pages 1..2 pinned already, so mapping 0..4 pins two runs: [0] and [3].
    h.map(A, ioas, MEM, 0x1000, 0x2000, IovaChoice::Fixed(0x1_0000)).unwrap();
    h.server.memory_mut().fail_nth_pin(2);
    assert_eq!(h.map(A, ioas, MEM, 0, 0x4000, IovaChoice::Fixed(0x10_0000)), Err(Error::NoResources));
    assert_eq!(h.server.pinned_pages(), 2);
    h.assert_clean();
}

#[test]
fn hwpt_alloc_replays_mappings_and_rolls_back() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    h.map(A, ioas, MEM, 0, 0x2000, IovaChoice::Fixed(0x1_0000)).unwrap();
    h.map(A, ioas, MEM, 0x4000, 0x2000, IovaChoice::Fixed(0x2_0000)).unwrap();
    let objects = h.server.object_count();
    for failing_call in 1..=3 {
        h.server.backend_mut().fail_nth_call(failing_call);
        assert_eq!(h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()), Err(Error::HardwareFailure));
        assert_eq!(h.server.backend().live_domains(), 0, "failing call {failing_call}");
        assert_eq!(h.server.object_count(), objects);
        h.assert_clean();
    }
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.backend().mapped_pages(HwDomainId(3)), 4, "both areas replayed into the new domain");
    h.server.destroy(A, hwpt).unwrap();
    assert_eq!(h.server.backend().live_domains(), 0);
    h.assert_clean();
}

#[test]
fn hwpt_alloc_refuses_a_domain_too_small_for_existing_mappings() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, SMMU, SMMU_DEV);
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1_0000_0000)).unwrap();
    assert_eq!(h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()), Err(Error::ReservedConflict));
    assert_eq!(h.server.backend().live_domains(), 0);
    h.assert_clean();
}

#[test]
fn hwpt_features_must_exist_on_the_unit() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, SMMU, SMMU_DEV);
    let nest = HwptAllocOptions { nest_parent: true, ..HwptAllocOptions::default() };
    let dirty = HwptAllocOptions { dirty_tracking: true, ..HwptAllocOptions::default() };
    // A fault queue needs no feature: units without page requests still report
    // unrecoverable faults (faults::units_without_page_requests_still_queue_unrecoverable_faults).
    for options in [nest, dirty] {
        assert_eq!(h.server.hwpt_alloc(A, device, ioas, options), Err(Error::NotSupported));
    }
    assert_eq!(h.server.hwpt_alloc(A, ioas, ioas, HwptAllocOptions::default()), Err(Error::WrongType));
    assert_eq!(h.server.backend().live_domains(), 0);
}

#[test]
fn attach_checks_unit_and_state_and_fails_atomically() {
    let mut h = harness();
    let (ioas, device, hwpt) = h.attached_setup();
    assert_eq!(h.server.device_attach(A, device, hwpt, None), Err(Error::AlreadyAttached));
    let smmu_device = h.bind(A, SMMU, SMMU_DEV);
    assert_eq!(h.server.device_attach(A, smmu_device, hwpt, None), Err(Error::IncompatibleUnit));
    let second = h.bind(A, VTD, DEV2);
    h.server.backend_mut().fail_nth_call(1);
    assert_eq!(h.server.device_attach(A, second, hwpt, None), Err(Error::HardwareFailure));
    assert_eq!(h.server.backend().attachment(VTD, DEV2, None), None);
    assert_eq!(h.server.device_detach(A, second, None), Err(Error::NotAttached), "the failed attach left no record");
    assert_eq!(h.server.destroy(A, ioas), Err(Error::Busy));
    h.assert_clean();
}

#[test]
fn replace_switches_without_a_blocked_window_and_keeps_the_old_on_failure() {
    let mut h = harness();
    let (ioas, device, old) = h.attached_setup();
    let new = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.device_replace(A, device, new, Some(3)), Err(Error::NotAttached));
    h.server.backend_mut().fail_nth_call(1);
    assert_eq!(h.server.device_replace(A, device, new, None), Err(Error::HardwareFailure));
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), Some(Translation::Domain(HwDomainId(1))));
    assert_eq!(h.server.destroy(A, new), Ok(()), "the failed replace did not make the new HWPT busy");
    let new = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    h.clear_log();
    h.server.device_replace(A, device, new, None).unwrap();
    assert_eq!(
        h.calls(),
        vec![Call::Replace { unit: VTD, rid: DEV, pasid: None, translation: Translation::Domain(HwDomainId(3)) }],
        "one atomic switch, no block"
    );
    assert_eq!(h.server.destroy(A, old), Ok(()), "the old HWPT was released");
    assert_eq!(h.server.destroy(A, new), Err(Error::Busy));
    h.assert_clean();
}

#[test]
fn detach_blocks_the_device() {
    let mut h = harness();
    let (_, device, hwpt) = h.attached_setup();
    h.clear_log();
    h.server.device_detach(A, device, None).unwrap();
    assert_eq!(h.calls(), vec![Call::Block { unit: VTD, rid: DEV, pasid: None }]);
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), None);
    assert_eq!(h.server.device_detach(A, device, None), Err(Error::NotAttached));
    h.server.destroy(A, hwpt).unwrap();
    h.server.destroy(A, device).unwrap();
    assert_eq!(h.server.destroy(A, device), Err(Error::NoSuchObject), "double destroy");
    h.assert_clean();
}

#[test]
fn devices_bind_once_and_start_blocked() {
    let mut h = harness();
    h.clear_log();
    let device = h.bind(A, VTD, DEV);
    assert_eq!(h.calls(), vec![Call::Block { unit: VTD, rid: DEV, pasid: None }]);
    let grant = DeviceGrant { unit: VTD, rid: DEV, pasid_bits: 20 };
    assert_eq!(h.server.device_bind(B, grant), Err(Error::DeviceAlreadyBound));
    let unknown_unit = DeviceGrant { unit: UnitId(9), rid: DEV, pasid_bits: 0 };
    assert_eq!(h.server.device_bind(A, unknown_unit), Err(Error::BadCapability));
    h.server.destroy(A, device).unwrap();
    assert!(h.server.device_bind(B, grant).is_ok(), "unbinding frees the device for another client");
}

#[test]
fn nested_hwpt_over_a_nest_parent() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let plain = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.hwpt_alloc_nested(A, device, plain, vtd_stage1(), None), Err(Error::NotNestParent));
    let parent = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { nest_parent: true, ..Default::default() }).unwrap();
    let smmu_format = Stage1Config { format: Stage1Format::SmmuV3ContextDescriptors, table_root: 0x1000, address_width: 0, table_entries_log2: 4 };
    assert_eq!(h.server.hwpt_alloc_nested(A, device, parent, smmu_format, None), Err(Error::NotSupported));
    let misaligned = Stage1Config { table_root: 0x1_0010, ..vtd_stage1() };
    assert_eq!(h.server.hwpt_alloc_nested(A, device, parent, misaligned, None), Err(Error::Unaligned));
    assert_eq!(h.server.hwpt_alloc_nested(A, device, parent, vtd_stage1(), None), Err(Error::NotMapped), "the parent does not map the root");
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1_0000)).unwrap();
    let nested = h.server.hwpt_alloc_nested(A, device, parent, vtd_stage1(), None).unwrap();
    assert_eq!(h.server.hwpt_alloc_nested(A, device, nested, vtd_stage1(), None), Err(Error::NotNestParent), "no nesting of nested");
    let smmu_device = h.bind(A, SMMU, SMMU_DEV);
    assert_eq!(h.server.hwpt_alloc_nested(A, smmu_device, parent, vtd_stage1(), None), Err(Error::IncompatibleUnit));
    // Reserved regions apply to the stage-2 IOAS of a nested attachment.
    h.server.device_attach(A, device, nested, None).unwrap();
    assert_eq!(h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(MSI_WINDOW.start)), Err(Error::ReservedRegion));
    assert_eq!(h.server.destroy(A, parent), Err(Error::Busy), "a parent with a nested child");
    h.server.device_detach(A, device, None).unwrap();
    h.server.destroy(A, nested).unwrap();
    h.server.destroy(A, parent).unwrap();
    h.server.ioas_unmap_all(A, ioas).unwrap();
    h.assert_clean();
}

/// `hwpt_invalidate` reads its entries from the memory object once, carries them out in order
/// on the nested HWPT's own domain, and stops at the first one that is malformed or refused.
#[test]
fn stage1_invalidations_stop_at_the_first_bad_entry() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let parent = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { nest_parent: true, ..Default::default() }).unwrap();
    h.map(A, ioas, MEM, 0, 0x1000, IovaChoice::Fixed(0x1_0000)).unwrap();
    let nested = h.server.hwpt_alloc_nested(A, device, parent, vtd_stage1(), None).unwrap();
    let good = [
        Invalidation::Stage1Range { asid: 3, va: 0x7000, pages: 2, leaf_only: true },
        Invalidation::ContextDescriptor,
        Invalidation::Stage1Asid { asid: 3 },
    ];
    let mut words: Vec<u64> = good.iter().flat_map(|entry| entry.encode()).collect();
    words.extend_from_slice(&[2 | 1 << 32, 0x7800]);
    words.extend_from_slice(&Invalidation::Stage1Asid { asid: 4 }.encode());
    h.server.memory_mut().fill_words(MEM, 0x40, &words);
    let log_start = h.log.borrow().len();

    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x40, 5), Ok(3), "the fourth entry has an unaligned VA");

    let domain = HwDomainId(2);
    let done: Vec<Call> = h.log.borrow()[log_start..].to_vec();
    assert_eq!(done, good.map(|entry| Call::InvalidateStage1 { domain, entry }));
    let refused_asid = Invalidation::Stage1Asid { asid: 0x100 }.encode();
    h.server.memory_mut().fill_words(MEM, 0x40, &refused_asid);
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x40, 2), Ok(0), "an ASID the unit refuses");
    assert_eq!(h.server.hwpt_invalidate(A, parent, MEM, 0x40, 1), Err(Error::NotSupported), "not nested");
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x48, 1), Err(Error::Unaligned));
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x40, 0), Err(Error::InvalidRange));
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x40, INVALIDATIONS_PER_CALL + 1), Err(Error::InvalidRange));
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM, 0x10_0000, 1), Err(Error::OutOfObjectRange));
    assert_eq!(h.server.hwpt_invalidate(A, nested, MEM_SCATTERED, 0x40, 1).map(|_| ()), Ok(()), "any memory object of the caller");
    assert_eq!(h.server.hwpt_invalidate(B, nested, MEM, 0x40, 1), Err(Error::NoSuchObject), "B holds no handle of it");
}

#[test]
fn pasid_attachments_need_an_owned_pasid_the_device_supports() {
    let mut h = harness();
    let (_, device, hwpt) = h.attached_setup();
    assert_eq!(h.server.device_attach(A, device, hwpt, Some(5)), Err(Error::NoSuchPasid));
    let pasid = h.server.pasid_alloc(A).unwrap();
    assert_eq!(pasid, 1, "PASID 0 is never handed out");
    let b_pasid = h.server.pasid_alloc(B).unwrap();
    assert_ne!(pasid, b_pasid, "server-wide unique");
    assert_eq!(h.server.device_attach(A, device, hwpt, Some(b_pasid)), Err(Error::NoSuchPasid), "B's PASID");
    let narrow = h.server.device_bind(A, DeviceGrant { unit: VTD, rid: DEV2, pasid_bits: 1 }).unwrap();
    let wide = h.server.pasid_alloc(A).unwrap();
    assert_eq!(h.server.device_attach(A, narrow, hwpt, Some(wide)), Err(Error::PasidOutOfRange));
    h.server.device_attach(A, device, hwpt, Some(pasid)).unwrap();
    assert_eq!(h.server.backend().attachment(VTD, DEV, Some(pasid)), Some(Translation::Domain(HwDomainId(1))));
    assert_eq!(h.server.pasid_free(A, pasid), Err(Error::Busy));
    assert_eq!(h.server.pasid_free(B, pasid), Err(Error::NoSuchPasid));
    h.server.device_detach(A, device, Some(pasid)).unwrap();
    assert_eq!(h.server.backend().attachment(VTD, DEV, None), Some(Translation::Domain(HwDomainId(1))), "RID untouched");
    h.server.pasid_free(A, pasid).unwrap();
    assert_eq!(h.server.pasid_free(A, pasid), Err(Error::NoSuchPasid), "double free");
    let smmu_device = h.bind(A, SMMU, SMMU_DEV);
    let ioas = h.server.ioas_alloc(A).unwrap();
    let smmu_hwpt = h.server.hwpt_alloc(A, smmu_device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.device_attach(A, smmu_device, smmu_hwpt, Some(wide)), Err(Error::NotSupported));
    h.assert_clean();
}

#[test]
fn pasids_are_not_reused_immediately_and_run_out() {
    let mut h = harness_with(ServerConfig { max_pasid: 3, ..ServerConfig::default() });
    assert_eq!(h.server.pasid_alloc(A), Ok(1));
    assert_eq!(h.server.pasid_alloc(A), Ok(2));
    h.server.pasid_free(A, 1).unwrap();
    assert_eq!(h.server.pasid_alloc(A), Ok(3), "the freed 1 is not handed out next");
    assert_eq!(h.server.pasid_alloc(A), Ok(1), "wraps round");
    assert_eq!(h.server.pasid_alloc(B), Err(Error::PasidExhausted));
    h.server.close_client(A).unwrap();
    assert_eq!(h.server.allocated_pasids(), 0);
    assert!(h.server.pasid_alloc(B).is_ok());
}

#[test]
fn sva_bind_is_an_attachment_of_its_own_kind() {
    let mut h = harness();
    let device = h.bind(A, VTD, DEV);
    let pasid = h.server.pasid_alloc(A).unwrap();
    let space = AddressSpace { id: 7, root: 0x5000_0000, mair: 0 };
    h.server.sva_bind(A, device, pasid, space, None).unwrap();
    assert_eq!(h.server.backend().attachment(VTD, DEV, Some(pasid)), Some(Translation::ProcessAddressSpace(space)));
    assert_eq!(h.server.sva_bind(A, device, pasid, space, None), Err(Error::AlreadyAttached));
    assert_eq!(h.server.device_detach(A, device, Some(pasid)), Err(Error::NotAttached), "not an HWPT attachment");
    assert_eq!(h.server.destroy(A, device), Err(Error::Busy));
    h.server.sva_unbind(A, device, pasid).unwrap();
    assert_eq!(h.server.sva_unbind(A, device, pasid), Err(Error::NotAttached));
    assert_eq!(h.server.backend().attachment(VTD, DEV, Some(pasid)), None);
    let smmu_device = h.bind(A, SMMU, SMMU_DEV);
    let smmu_pasid = h.server.pasid_alloc(A).unwrap();
    assert_eq!(h.server.sva_bind(A, smmu_device, smmu_pasid, space, None), Err(Error::NotSupported));
    h.assert_clean();
}

#[test]
fn dirty_tracking_reads_and_clears_bits() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let plain = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions::default()).unwrap();
    assert_eq!(h.server.hwpt_set_dirty_tracking(A, plain, true), Err(Error::NotSupported));
    h.server.destroy(A, plain).unwrap();
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { dirty_tracking: true, ..Default::default() }).unwrap();
    let domain = HwDomainId(2);
    h.map(A, ioas, MEM, 0, 0x10_000, IovaChoice::Fixed(0x10_0000)).unwrap();
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, true), Err(Error::DirtyTrackingOff));
    h.server.hwpt_set_dirty_tracking(A, hwpt, true).unwrap();
    h.server.backend_mut().mark_dirty(domain, 0x10_1000);
    h.server.backend_mut().mark_dirty(domain, 0x10_f000);
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, true), Ok(vec![(1 << 1) | (1 << 15)]));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, true), Ok(vec![0]), "cleared by the read");
    h.server.backend_mut().mark_dirty(domain, 0x10_9000);
    assert_eq!(h.server.get_dirty_bitmap(A, ioas, 0x10_0000, 0x10_000, 0x8000, true), Ok(vec![0b10]), "through the IOAS, 32K pages");
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x3000, true), Err(Error::InvalidPageSize));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_1000, 0x2000, 0x2000, true), Err(Error::Unaligned));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0, 0x1000, true), Err(Error::ZeroLength));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0, 1 << 40, 0x1000, true), Err(Error::BitmapTooLarge));
    assert_eq!(h.server.get_dirty_bitmap(A, device, 0, 0x1000, 0x1000, true), Err(Error::WrongType));
    let no_dirty = h.server.handle_derive(A, hwpt, iommu_abi::Rights::ATTACH, A).unwrap();
    assert_eq!(h.server.hwpt_set_dirty_tracking(A, no_dirty, false), Err(Error::MissingRight));
    h.server.backend_mut().fail_nth_call(1);
    assert_eq!(h.server.hwpt_set_dirty_tracking(A, hwpt, false), Err(Error::HardwareFailure));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x1000, 0x1000, true), Ok(vec![0]), "still on after the failed switch");
    h.assert_clean();
}

#[test]
fn dirty_bits_read_without_clearing_stay() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { dirty_tracking: true, ..Default::default() }).unwrap();
    let domain = HwDomainId(1);
    h.map(A, ioas, MEM, 0, 0x10_000, IovaChoice::Fixed(0x10_0000)).unwrap();
    h.server.hwpt_set_dirty_tracking(A, hwpt, true).unwrap();
    h.server.backend_mut().mark_dirty(domain, 0x10_3000);
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, false), Ok(vec![1 << 3]));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, false), Ok(vec![1 << 3]), "NO_CLEAR left the bit");
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, true), Ok(vec![1 << 3]));
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, 0x10_0000, 0x10_000, 0x1000, true), Ok(vec![0]));
    h.assert_clean();
}

/// The bitmap of a range of any size lands in the caller's memory, in one request; every
/// refusal comes before a dirty bit is read (the bits are still there afterwards).
#[test]
fn dirty_bitmap_is_written_into_caller_memory() {
    let mut h = harness();
    let ioas = h.server.ioas_alloc(A).unwrap();
    let device = h.bind(A, VTD, DEV);
    let hwpt = h.server.hwpt_alloc(A, device, ioas, HwptAllocOptions { dirty_tracking: true, ..Default::default() }).unwrap();
    let domain = HwDomainId(1);
    const GIB: u64 = 1 << 30;
    h.map(A, ioas, MEM_4M, 0, 4 << 20, IovaChoice::Fixed(GIB - (2 << 20))).unwrap();
    h.server.hwpt_set_dirty_tracking(A, hwpt, true).unwrap();
    // The first and last page of the first GiB, and one past it.
    for iova in [GIB - (2 << 20), GIB - 0x1000, GIB] {
        h.server.backend_mut().mark_dirty(domain, iova);
    }
    let into = |h: &mut Harness, memory, length, clear| h.server.get_dirty_bitmap_into(A, hwpt, 0, length, 0x1000, clear, memory);
    // 2^18 pages: 4096 words, 32 KiB.
    assert_eq!(into(&mut h, MEM_RO, GIB, true), Err(Error::PermissionDenied));
    assert_eq!(into(&mut h, MEM_SCATTERED, 4 * GIB, true), Err(Error::OutOfObjectRange), "128 KiB of bitmap in 64 KiB");
    assert_eq!(into(&mut h, 999, GIB, true), Err(Error::BadCapability));
    assert_eq!(into(&mut h, MEM, 1 << 40, true), Err(Error::BitmapTooLarge));
    assert_eq!(into(&mut h, MEM, GIB, false), Ok(2 * 0x1000), "two dirty pages in the first GiB, not cleared");
    assert_eq!(into(&mut h, MEM, GIB, true), Ok(2 * 0x1000));
    let memory = h.server.memory();
    let first_dirty_page = (GIB - (2 << 20)) / 0x1000;
    assert_eq!(memory.written_word(MEM, first_dirty_page / 64 * 8), 1);
    assert_eq!(memory.written_word(MEM, 4095 * 8), 1 << 63);
    assert_eq!((0..4096).filter(|word| memory.written_word(MEM, word * 8) != 0).count(), 2);
    assert_eq!(into(&mut h, MEM, GIB, true), Ok(0), "cleared by the read");
    assert_eq!(h.server.get_dirty_bitmap(A, hwpt, GIB, 0x1000, 0x1000, true), Ok(vec![1]), "the page past the range kept its bit");
    assert!(h.server.memory().violations().is_empty(), "{:?}", h.server.memory().violations());
    h.assert_clean();
}
