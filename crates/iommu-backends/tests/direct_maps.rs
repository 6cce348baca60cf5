//! Firmware-required identity maps (VT-d RMRR, IORT RMR) on both backends, against the
//! drivers' software units, in every kind of domain each offers (VT-d legacy, scalable second-
//! and first-level; SMMUv3 stage 1 and stage 2): the device reaches its region at IOVA ==
//! physical address from takeover on (its private blocking domain), after attach, after
//! replace and after detach; the domains it leaves stop mapping the region; a domain two
//! direct devices share keeps it until both left; nothing else is reachable while blocked;
//! the region is reported reserved.

use std::collections::BTreeMap;
use std::rc::Rc;

use hwio::DmaAllocator;
use iommu_abi::{Error, IovaRange, Perm};
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_backends::testing::{SmmuModelEnv, VtdModelEnv};
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, RequesterId, ReservedKind, Translation, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel};
use vtd::model::{qemu, FakeDma, PhysMemory, VtdModel};

const PAGE: u64 = 4096;
/// The device with a direct region, 00:03.0, and one without, 00:04.0.
const DIRECT: u32 = 0x0018;
const PLAIN: u32 = 0x0020;
/// A second device with the same direct region, 00:05.0.
const SHARING: u32 = 0x0028;
/// Where the tests map a client buffer.
const IOVA: u64 = 0x4000_0000;
const PAGING: DomainConfig = DomainConfig::Paging { nest_parent: false, dirty_tracking: false };

/// A backend on a model with the devices above, the direct region given to DIRECT and
/// SHARING, and what a device (by requester ID) reaches.
trait Machine {
    type Backend: IommuBackend;
    fn backend(&mut self) -> &mut Self::Backend;
    /// The direct region: two pages of the model's memory.
    fn region(&self) -> IovaRange;
    /// A page of the model's memory for client mappings.
    fn buffer(&self) -> u64;
    fn device_write(&self, rid: u32, iova: u64, data: &[u8]) -> bool;
    fn read(&self, phys: u64, len: usize) -> Vec<u8>;
}

struct Vtd {
    backend: VtdBackend<VtdModelEnv>,
    model: &'static VtdModel,
    region: IovaRange,
    buffer: u64,
}

impl Vtd {
    fn new(cap: u64, ecap: u64) -> Vtd {
        let memory = PhysMemory::new(0x1000_0000, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), cap, ecap)));
        let mut backend = VtdBackend::<VtdModelEnv>::new(FakeDma::new(memory));
        let region = backend.dma.alloc_zeroed(2 * PAGE as usize, PAGE as usize).expect("region").phys;
        let buffer = backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).expect("buffer").phys;
        let mut unit = Unit::bring_up(model, vtd::model::StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        // An RMRR as firmware states it: inclusive, so its end is the last byte.
        for rid in [DIRECT, SHARING] {
            unit.rmrrs.insert(rid as u16, vec![(region, region + 2 * PAGE - 1)]);
        }
        backend.units.push(unit);
        backend.install_direct_maps().expect("direct maps");
        Vtd { backend, model, region: IovaRange { start: region, last: region + 2 * PAGE - 1 }, buffer }
    }
}

impl Machine for Vtd {
    type Backend = VtdBackend<VtdModelEnv>;
    fn backend(&mut self) -> &mut Self::Backend {
        &mut self.backend
    }
    fn region(&self) -> IovaRange {
        self.region
    }
    fn buffer(&self) -> u64 {
        self.buffer
    }
    fn device_write(&self, rid: u32, iova: u64, data: &[u8]) -> bool {
        self.model.dma_write(vtd::RequesterId(rid as u16), None, iova, data).is_ok()
    }
    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.backend.dma.memory().read_bytes(phys, len).expect("inside memory")
    }
}

struct Smmu {
    backend: SmmuBackend<SmmuModelEnv>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    region: IovaRange,
    buffer: u64,
}

/// StreamID = requester ID + this, so a mix-up of the two shows.
const STREAM_OFFSET: u32 = 0x100;

impl Smmu {
    fn new(stage: DomainStage) -> Smmu {
        const BASE: u64 = 0x4000_0000;
        const TABLES_END: u64 = BASE + (16 << 20);
        let memory = FakeMemory::new(BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu())));
        let mut backend = SmmuBackend::<SmmuModelEnv>::new(ModelDma::in_range(memory.clone(), BASE, TABLES_END), smmuv3::model::StepClock::new(1_000));
        let streams = BTreeMap::from([DIRECT, PLAIN, SHARING].map(|rid| (rid, rid + STREAM_OFFSET)));
        backend.add_unit(model, 0x0905_0000, stage, streams).expect("bring-up");
        let region = TABLES_END;
        for rid in [DIRECT, SHARING] {
            backend.units[0].rmrs.insert(rid, vec![(region, region + 2 * PAGE - 1)]);
        }
        backend.install_direct_maps().expect("direct maps");
        Smmu { backend, model, memory, region: IovaRange { start: region, last: region + 2 * PAGE - 1 }, buffer: TABLES_END + 4 * PAGE }
    }
}

impl Machine for Smmu {
    type Backend = SmmuBackend<SmmuModelEnv>;
    fn backend(&mut self) -> &mut Self::Backend {
        &mut self.backend
    }
    fn region(&self) -> IovaRange {
        self.region
    }
    fn buffer(&self) -> u64 {
        self.buffer
    }
    fn device_write(&self, rid: u32, iova: u64, data: &[u8]) -> bool {
        self.model.dma_write(rid + STREAM_OFFSET, None, iova, data).is_ok()
    }
    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(phys, len).expect("inside memory")
    }
}

/// DIRECT writes `tag` into the last page of its region at IOVA == physical address; whether
/// the bytes arrived there.
fn reaches_region<M: Machine>(m: &M, rid: u32, tag: &[u8]) -> bool {
    let at = m.region().last + 1 - PAGE + 0x40;
    m.device_write(rid, at, tag) && m.read(at, tag.len()) == tag
}

/// Whether `domain` maps something at the region (a client mapping there collides).
fn domain_maps_region<M: Machine>(m: &mut M, domain: HwDomainId) -> bool {
    let (start, buffer) = (m.region().start, m.buffer());
    match m.backend().map(domain, start, buffer, PAGE, Perm::READ_WRITE) {
        Ok(()) => {
            m.backend().unmap(domain, start, PAGE);
            false
        }
        Err(Error::Overlap) => true,
        Err(error) => panic!("unexpected map error {error:?}"),
    }
}

fn direct_region_follows_the_device<M: Machine>(mut m: M, what: &str) {
    let unit = UnitId(0);
    // Takeover: no client, no attach, and the device already reaches its region, only that.
    assert!(reaches_region(&m, DIRECT, b"at takeover"), "{what}: the region is not mapped from takeover on");
    assert!(!m.device_write(DIRECT, IOVA, b"x"), "{what}: a blocked direct device reached something else");
    assert!(!reaches_region(&m, PLAIN, b"plain"), "{what}: a device without the region reached it");
    let reserved = m.backend().reserved_regions(unit, RequesterId(DIRECT));
    assert!(reserved.iter().any(|r| r.kind == ReservedKind::Direct && r.range == m.region()), "{what}: not reported reserved: {reserved:?}");
    assert!(m.backend().reserved_regions(unit, RequesterId(PLAIN)).iter().all(|r| r.kind != ReservedKind::Direct), "{what}");

    // Attach to a client's domain, which maps a buffer too.
    let first = m.backend().domain_alloc(unit, &PAGING).expect("domain").id;
    let buffer = m.buffer();
    m.backend().map(first, IOVA, buffer, PAGE, Perm::READ_WRITE).expect("map");
    assert!(!domain_maps_region(&mut m, first), "{what}: the region is in a domain before the device is");
    m.backend().attach(unit, RequesterId(DIRECT), None, Translation::Domain(first)).expect("attach");
    assert!(reaches_region(&m, DIRECT, b"after attach"), "{what}: attach lost the region");
    assert!(m.device_write(DIRECT, IOVA, b"buffer") && m.read(buffer, 6) == b"buffer", "{what}: the client's mapping");
    assert!(domain_maps_region(&mut m, first), "{what}");

    // Replace: the new domain gets the region, the old one loses it.
    let second = m.backend().domain_alloc(unit, &PAGING).expect("domain").id;
    m.backend().replace(unit, RequesterId(DIRECT), None, Translation::Domain(second)).expect("replace");
    assert!(reaches_region(&m, DIRECT, b"after replace"), "{what}: replace lost the region");
    assert!(!m.device_write(DIRECT, IOVA, b"x"), "{what}: the old domain still translates");
    assert!(!domain_maps_region(&mut m, first), "{what}: the domain left behind still maps the region");

    // A second direct device in the same domain: the region stays until both left.
    m.backend().attach(unit, RequesterId(SHARING), None, Translation::Domain(second)).expect("attach");
    m.backend().block(unit, RequesterId(DIRECT), None);
    assert!(domain_maps_region(&mut m, second), "{what}: the region left with one of its two devices");
    assert!(reaches_region(&m, SHARING, b"shared"), "{what}");

    // Detach (block): back to the private domain, the region still there, nothing else.
    assert!(reaches_region(&m, DIRECT, b"after detach"), "{what}: detach lost the region");
    assert!(!m.device_write(DIRECT, IOVA, b"x"), "{what}: a detached device reached a client mapping");
    m.backend().block(unit, RequesterId(SHARING), None);
    assert!(!domain_maps_region(&mut m, second), "{what}: the region outlived the last device that needed it");
    assert!(reaches_region(&m, SHARING, b"blocked"), "{what}");

    // Re-attach after detach, into the first domain again.
    m.backend().attach(unit, RequesterId(DIRECT), None, Translation::Domain(first)).expect("attach again");
    assert!(reaches_region(&m, DIRECT, b"attached again") && domain_maps_region(&mut m, first), "{what}");
    m.backend().block(unit, RequesterId(DIRECT), None);
    m.backend().unmap(first, IOVA, PAGE);
    m.backend().domain_free(first);
    m.backend().domain_free(second);
    assert!(reaches_region(&m, DIRECT, b"domains gone"), "{what}");
}

#[test]
fn vtd_rmrr_mapped_in_every_domain_the_device_is_attached_to() {
    direct_region_follows_the_device(Vtd::new(qemu::CAP, qemu::ECAP_LEGACY), "legacy");
    direct_region_follows_the_device(Vtd::new(qemu::CAP, qemu::ECAP_SCALABLE), "scalable second-level");
    direct_region_follows_the_device(Vtd::new(qemu::CAP_FLTS, qemu::ECAP_FLTS), "scalable first-level");
}

#[test]
fn smmu_rmr_mapped_in_every_domain_the_device_is_attached_to() {
    direct_region_follows_the_device(Smmu::new(DomainStage::Stage1), "stage 1");
    direct_region_follows_the_device(Smmu::new(DomainStage::Stage2), "stage 2");
}

/// A failed attach (a client mapping sits where the region must go; the object model refuses
/// this earlier, the backend must not break on it either) leaves the device where it was and
/// the domain as it was.
#[test]
fn a_failed_attach_changes_nothing() {
    let mut m = Vtd::new(qemu::CAP, qemu::ECAP_LEGACY);
    let unit = UnitId(0);
    let domain = m.backend.domain_alloc(unit, &PAGING).expect("domain").id;
    let (start, buffer) = (m.region.start + PAGE, m.buffer);
    m.backend.map(domain, start, buffer, PAGE, Perm::READ).expect("map");
    assert_eq!(m.backend.attach(unit, RequesterId(DIRECT), None, Translation::Domain(domain)), Err(Error::Overlap));
    assert!(reaches_region(&m, DIRECT, b"still private"));
    m.backend.dma.memory().write_bytes(buffer, b"BUFR").expect("inside memory");
    let seen = m.model.dma_read(vtd::RequesterId(DIRECT as u16), None, start, 4).expect("the region, identity-mapped");
    assert_ne!(seen, b"BUFR", "the device moved to the domain");
    // The domain kept its own mapping and got nothing of the region.
    m.backend.unmap(domain, start, PAGE);
    assert!(!domain_maps_region(&mut m, domain));
}

/// A process's tables cannot carry a device's RMRR/RMR maps: SVA is refused for it.
#[test]
fn direct_devices_are_not_bound_to_process_address_spaces() {
    let mut m = Smmu::new(DomainStage::Stage1);
    let space = iommu_core::AddressSpace { id: 1, root: 0x4100_0000, mair: 0xff };
    assert_eq!(m.backend.attach(UnitId(0), RequesterId(DIRECT), None, Translation::ProcessAddressSpace(space)), Err(Error::NotSupported));
    assert!(reaches_region(&m, DIRECT, b"still direct"));
}
