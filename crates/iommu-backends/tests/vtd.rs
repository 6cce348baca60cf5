//! The VT-d backend against the `vtd` crate's software unit, which caches translations until
//! told otherwise, walks without snooping and records faults as the hardware does: map, unmap
//! with its invalidation finished before the pages go back, caching mode, table recycling, an
//! invalidation that never completes, and fault draining.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hwio::DmaAllocator;
use iommu_abi::{Access, FaultReason, Perm};
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, DrainedFault, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, VtdModel};


const MEMORY_BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const TWO_MIB: u64 = 2 << 20;
/// The device under test, 00:03.0.
const DEVICE: u16 = 0x0018;
/// Where the tests map: 2 MiB aligned, so a large leaf can go there too.
const IOVA: u64 = 0x4000_0000;

struct Rig {
    backend: VtdBackend<Model>,
    model: &'static VtdModel,
    domain: HwDomainId,
}

impl Rig {
    /// One unit with `cap`/`ecap`, brought up by the backend, with the device attached to a
    /// fresh paging domain.
    fn new(cap: u64, ecap: u64) -> Rig {
        let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), cap, ecap)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        let domain = backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).expect("domain").id;
        backend.attach(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(domain)).expect("attach");
        Rig { backend, model, domain }
    }

    fn legacy() -> Rig {
        Rig::new(qemu::CAP, qemu::ECAP_LEGACY)
    }

    /// `size` bytes of the model's memory aligned to their size, for a device to reach.
    fn memory(&mut self, size: u64) -> u64 {
        self.backend.dma.alloc_zeroed(size as usize, size as usize).expect("memory").phys
    }

    fn device_write(&self, iova: u64, data: &[u8]) -> Result<(), u8> {
        self.model.dma_write(vtd::RequesterId(DEVICE), None, iova, data)
    }

    fn device_read(&self, iova: u64, len: usize) -> Result<Vec<u8>, u8> {
        self.model.dma_read(vtd::RequesterId(DEVICE), None, iova, len)
    }

    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.backend.dma.memory().read_bytes(phys, len).expect("inside memory")
    }

    fn drain(&mut self) -> (usize, Vec<DrainedFault>) {
        let mut faults = Vec::new();
        let reported = self.backend.drain_faults(UnitId(0), &mut |fault| faults.push(fault));
        (reported, faults)
    }
}

#[test]
fn a_mapped_page_is_reached_at_its_iova_and_nowhere_else() {
    let mut rig = Rig::legacy();
    let page = rig.memory(PAGE);
    rig.backend.map(rig.domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
    rig.device_write(IOVA + 0x10, b"through the IOMMU").expect("mapped write");
    assert_eq!(rig.read(page + 0x10, 17), b"through the IOMMU");
    assert!(rig.device_write(IOVA + PAGE, b"x").is_err(), "the next page is not mapped");

    rig.backend.map(rig.domain, IOVA + 2 * PAGE, page, PAGE, Perm::READ).expect("read-only map");
    assert_eq!(rig.device_read(IOVA + 2 * PAGE + 0x10, 4).expect("read"), b"thro");
    assert!(rig.device_write(IOVA + 2 * PAGE, b"x").is_err(), "a read-only mapping took a write");
}

/// The object model unpins the pages as soon as `unmap` returns, and the kernel may hand them
/// to anyone: by then the unit must not reach them, although it cached the translation.
#[test]
fn unmap_returns_only_once_the_unit_cannot_reach_the_pages() {
    let mut rig = Rig::legacy();
    let page = rig.memory(PAGE);
    rig.backend.map(rig.domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
    rig.device_write(IOVA, b"cached").expect("a write that fills the IOTLB");
    let invalidations = rig.model.invalidations().len();

    rig.backend.unmap(rig.domain, IOVA, PAGE);
    // What the object model does next: the page goes back, and its next owner writes it.
    rig.backend.dma.memory().write_bytes(page, b"the next owner's secret").expect("inside memory");

    assert_eq!(rig.device_read(IOVA, 8), Err(0x06), "the device still reads a released page");
    assert_eq!(rig.device_write(IOVA, b"late"), Err(0x05), "the device still writes a released page");
    assert_eq!(rig.read(page, 23), b"the next owner's secret");
    assert!(rig.model.invalidations().len() > invalidations, "unmap returned without invalidating the IOTLB");
}

/// Under CAP.CM the unit may cache not-present entries: a map must be followed by a flush, or
/// the device keeps faulting on what was just mapped.
#[test]
fn caching_mode_flushes_after_every_map() {
    let mut rig = Rig::new(qemu::CAP | qemu::CAP_CM, qemu::ECAP_LEGACY);
    let page = rig.memory(PAGE);
    assert!(rig.device_write(IOVA, b"early").is_err(), "nothing is mapped yet");
    let invalidations = rig.model.invalidations().len();

    rig.backend.map(rig.domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");

    assert!(rig.model.invalidations().len() > invalidations, "no flush after the map");
    rig.device_write(IOVA, b"after the map").expect("the cached fault was flushed");
    assert_eq!(rig.read(page, 13), b"after the map");
}

#[test]
fn no_flush_after_a_map_without_caching_mode() {
    let mut rig = Rig::legacy();
    let page = rig.memory(PAGE);
    let invalidations = rig.model.invalidations().len();
    rig.backend.map(rig.domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
    assert_eq!(rig.model.invalidations().len(), invalidations, "a unit without CM was flushed after a map");
}

/// A 2 MiB leaf replaces the emptied table a 4 KiB mapping left: the unit may hold that table
/// in its paging-structure caches, so it is unlinked with an invalidation that drops them
/// before the table is used again, here for another 2 MiB region.
#[test]
fn tables_are_recycled_only_after_the_caches_forgot_them() {
    let mut rig = Rig::legacy();
    let small = rig.memory(PAGE);
    let large = rig.memory(TWO_MIB);
    let other = rig.memory(PAGE);
    rig.backend.map(rig.domain, IOVA, small, PAGE, Perm::READ_WRITE).expect("4 KiB map");
    rig.device_write(IOVA, b"walk").expect("a write that caches the walk");
    rig.backend.unmap(rig.domain, IOVA, PAGE);

    rig.backend.map(rig.domain, IOVA, large, TWO_MIB, Perm::READ_WRITE).expect("2 MiB map over the emptied table");
    rig.device_write(IOVA + 0x3000, b"large leaf").expect("write through the 2 MiB leaf");
    assert_eq!(rig.read(large + 0x3000, 10), b"large leaf");

    // The next table the domain needs is the one it unlinked (no new allocation)...
    let allocations = rig.backend.dma.live_allocations();
    rig.backend.map(rig.domain, IOVA + TWO_MIB, other, PAGE, Perm::READ_WRITE).expect("4 KiB map in the next region");
    assert_eq!(rig.backend.dma.live_allocations(), allocations, "the unlinked table was not reused");
    // ...and a stale cached pointer to it would send this write to `other`.
    rig.device_write(IOVA, b"first page").expect("write through the 2 MiB leaf");
    assert_eq!(rig.read(large, 10), b"first page");
    assert_eq!(rig.read(other, 10), [0; 10], "a write to the 2 MiB region went through the recycled table");
}

/// A unit that never completes an invalidation: the backend must not return from the unmap
/// (after which the pages would be unpinned) and must say why.
#[test]
fn an_invalidation_that_never_completes_fails_closed() {
    let mut rig = Rig::legacy();
    let page = rig.memory(PAGE);
    rig.backend.map(rig.domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
    rig.device_write(IOVA, b"cached").expect("a write that fills the IOTLB");
    rig.backend.units[0].hw.set_timeout_ns(1_000_000);
    rig.model.stall_queue();
    let allocations = rig.backend.dma.live_allocations();

    let unmapped = catch_unwind(AssertUnwindSafe(|| rig.backend.unmap(rig.domain, IOVA, PAGE)));

    let message = unmapped.expect_err("unmap returned although the IOTLB may still hold the translation");
    let message = message.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.contains("FATAL: IOTLB invalidation") && message.contains("Timeout"), "{message}");
    assert_eq!(rig.backend.dma.live_allocations(), allocations, "table memory went back after a failed invalidation");
    // Why it must stop: the unit still translates through what it cached.
    rig.device_write(IOVA, b"stale").expect("the stale translation is still in the IOTLB");
}

/// QEMU's unit has one fault record: each fault is drained before the next.
#[test]
fn faults_are_drained_decoded_and_cleared() {
    let mut rig = Rig::legacy();
    let rid = RequesterId(DEVICE.into());
    let mut summary = Vec::new();
    let mut drain_one = |rig: &mut Rig| {
        let (reported, faults) = rig.drain();
        assert_eq!((reported, faults.len()), (1, 1));
        let f = faults[0].event;
        summary.push((f.unit, f.rid, f.pasid, f.iova, f.access, f.reason, faults[0].code, iommu_backends::vtd::fault_name(&faults[0])));
    };
    assert_eq!(rig.device_write(IOVA + 0x123, b"x"), Err(0x05));
    drain_one(&mut rig);
    assert_eq!(rig.device_read(IOVA + PAGE, 1), Err(0x06));
    drain_one(&mut rig);
    // An interrupt-remapping record names the index it asked for in bits 63:48.
    rig.model.inject_fault(vtd::RequesterId(DEVICE), 0x2a << 48, true, 0x22, None);
    drain_one(&mut rig);

    assert_eq!(
        summary,
        [
            (UnitId(0), rid, None, IOVA, Access::WRITE, FaultReason::Translation, 0x05, "write without write permission in second-level entry"),
            (UnitId(0), rid, None, IOVA + PAGE, Access::READ, FaultReason::Translation, 0x06, "read without read permission in second-level entry"),
            (UnitId(0), rid, None, 0x2a, Access::WRITE, FaultReason::Interrupt, 0x22, "interrupt remapping entry not present"),
        ]
    );
    assert_eq!(rig.drain(), (0, Vec::new()), "the record was not cleared");
    assert_eq!(rig.backend.drain_faults(UnitId(1), &mut |_| panic!("no such unit")), 0);
}
