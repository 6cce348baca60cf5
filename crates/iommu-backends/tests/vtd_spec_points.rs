//! VT-d rules QEMU 10.0.2 does not hold the server to, against a `vtd` model strict enough to
//! catch them:
//! - on a unit that drains in-flight DMA only when asked (CAP.DRD/DWD), every queued IOTLB
//!   invalidation asks (DR/DW): a write the device posted before the unmap must not reach the
//!   page after the unmap returned and the page went to its next owner;
//! - at takeover, translation goes on before the protected memory regions firmware enabled go
//!   off: there is never a moment when neither keeps DMA from memory.

use hwio::{DmaAllocator, Registers};
use iommu_abi::Perm;
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, IommuBackend, RequesterId, Translation, UnitId};
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, VtdModel};

const PAGE: u64 = 4096;
const DEVICE: u16 = 0x0018;
const IOVA: u64 = 0x4000_0000;
/// CAP.DWD (bit 54) and CAP.DRD (bit 55): the unit drains writes and reads only when an IOTLB
/// invalidation asks.
const CAP_DRAINS: u64 = 3 << 54;
/// CAP.PLMR (bit 5) and CAP.PHMR (bit 6): protected low and high memory regions.
const CAP_PROTECTED_MEMORY: u64 = 3 << 5;

fn unit(cap: u64, ecap: u64, before_bring_up: impl FnOnce(&VtdModel)) -> (VtdBackend<Model>, &'static VtdModel) {
    let memory = PhysMemory::new(0x1000_0000, 16 << 20);
    let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), cap, ecap)));
    before_bring_up(model);
    let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
    let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
    backend.units.push(unit);
    (backend, model)
}

#[test]
fn unmap_drains_the_writes_a_draining_unit_holds() {
    for ecap in [qemu::ECAP_LEGACY, qemu::ECAP_SCALABLE] {
        let (mut backend, model) = unit(qemu::CAP | CAP_DRAINS, ecap, |_| {});
        let domain = backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).expect("domain").id;
        backend.attach(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(domain)).expect("attach");
        let page = backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).expect("page").phys;
        backend.map(domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
        model.posted_write(vtd::RequesterId(DEVICE), None, IOVA, b"posted before the unmap").expect("translated while mapped");

        backend.unmap(domain, IOVA, PAGE);
        // What follows the unmap: the page goes back, and its next owner writes it.
        backend.dma.memory().write_bytes(page, b"the next owner's secret").expect("inside memory");

        let late = model.complete_writes_in_flight();
        assert_eq!(late, 0, "ECAP {ecap:#x}: {late} write(s) still in flight after the unmap returned (IOTLB invalidation without DW)");
        assert_eq!(backend.dma.memory().read_bytes(page, 23).expect("inside memory"), b"the next owner's secret");
    }
}

#[test]
fn protected_memory_goes_only_once_translation_is_on() {
    let mut firmware_state = None;
    let (_backend, model) = unit(qemu::CAP | CAP_PROTECTED_MEMORY, qemu::ECAP_LEGACY, |model| {
        // Firmware hands the unit over with protected memory on (EPM, bit 31).
        model.write32(vtd::regs::PMEN, 1 << 31);
        firmware_state = Some(model.translate(vtd::RequesterId(DEVICE), None, IOVA, true));
    });
    assert_eq!(firmware_state, Some(Err(0)), "the model does not block DMA under protected memory");
    assert!(!model.dma_was_exposed(), "protected memory went off before translation went on: untranslated DMA could reach any address");
    assert_eq!(model.read32(vtd::regs::PMEN) & 1, 0, "protected memory is still on (PRS), exempting memory from the domains");
    assert!(model.translate(vtd::RequesterId(DEVICE), None, IOVA, true).is_err(), "an unattached device reached memory after bring-up");
}
