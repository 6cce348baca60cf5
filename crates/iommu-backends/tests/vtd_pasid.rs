//! Per-PASID attachments of the VT-d backend in scalable mode, against the `vtd` crate's
//! software unit (QEMU has no device that tags DMA with a PASID): tagged DMA reaches the
//! domain of its PASID and nothing else; replace and detach retire the old PASID entry with the
//! PASID-cache invalidation before the IOTLB one; an unmap in a first-level domain attached at
//! several PASIDs invalidates every one of them. Each test runs on second-level (`vtd-sm`) and
//! first-level (`vtd-flts`) units with ECAP.PASID.

use hwio::DmaAllocator;
use iommu_abi::{Perm, UnitCaps};
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use vtd::descriptors::Invalidation;
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, VtdModel};


const MEMORY_BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const DEVICE: u16 = 0x0018;
const IOVA: u64 = 0x4000_0000;
const PASID: u32 = 5;
const OTHER_PASID: u32 = 6;

/// (name, CAP, ECAP) of the scalable-mode units with PASIDs.
const UNITS: [(&str, u64, u64); 2] =
    [("second-level", qemu::CAP, qemu::ECAP_SCALABLE | qemu::ECAP_PASID), ("first-level", qemu::CAP_FLTS, qemu::ECAP_FLTS | qemu::ECAP_PASID)];

struct Rig {
    backend: VtdBackend<Model>,
    model: &'static VtdModel,
    /// Domain A, at RID_PASID (untagged DMA), mapping `IOVA` to `a_page`.
    a: HwDomainId,
    a_page: u64,
    /// Domain B, mapping `IOVA` to `b_page`, attached at nothing yet.
    b: HwDomainId,
    b_page: u64,
}

impl Rig {
    fn new(cap: u64, ecap: u64) -> Rig {
        let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), cap, ecap)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        assert!(backend.unit_info(UnitId(0)).unwrap().caps.contains(UnitCaps::PASID));
        let paging = DomainConfig::Paging { nest_parent: false, dirty_tracking: false };
        let a = backend.domain_alloc(UnitId(0), &paging).expect("domain A").id;
        let b = backend.domain_alloc(UnitId(0), &paging).expect("domain B").id;
        let a_page = backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).unwrap().phys;
        let b_page = backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).unwrap().phys;
        backend.map(a, IOVA, a_page, PAGE, Perm::READ_WRITE).unwrap();
        backend.map(b, IOVA, b_page, PAGE, Perm::READ_WRITE).unwrap();
        backend.attach(UnitId(0), rid(), None, Translation::Domain(a)).expect("attach A untagged");
        Rig { backend, model, a, a_page, b, b_page }
    }

    fn write(&self, pasid: Option<u32>, data: &[u8]) -> Result<(), u8> {
        self.model.dma_write(vtd::RequesterId(DEVICE), pasid, IOVA, data)
    }

    fn read(&self, phys: u64) -> Vec<u8> {
        self.backend.dma.memory().read_bytes(phys, 8).unwrap()
    }
}

fn rid() -> RequesterId {
    RequesterId(DEVICE.into())
}

/// Position in `log` of the first invalidation `matches` accepts.
fn position(log: &[Invalidation], matches: impl Fn(&Invalidation) -> bool) -> Option<usize> {
    log.iter().position(matches)
}

/// The invalidations since `from` retire the PASID entry of (`did`'s) `pasid`: a PASID-cache
/// invalidation of it, and after it an IOTLB invalidation that covers its translations.
fn assert_retired_in_order(log: &[Invalidation], pasid: u32, context: &str) {
    let cache = position(log, |i| matches!(i, Invalidation::PasidCachePasid { pasid: p, .. } if *p == pasid));
    let iotlb = position(log, |i| matches!(i, Invalidation::IotlbDomain { .. }) || matches!(i, Invalidation::PasidIotlbAll { pasid: p, .. } if *p == pasid));
    let (Some(cache), Some(iotlb)) = (cache, iotlb) else { panic!("{context}: missing PASID-cache or IOTLB invalidation in {log:?}") };
    assert!(cache < iotlb, "{context}: the IOTLB was invalidated before the PASID cache (spec 6.5.3.3): {log:?}");
}

#[test]
fn tagged_dma_reaches_only_the_domain_of_its_pasid() {
    for (name, cap, ecap) in UNITS {
        let mut rig = Rig::new(cap, ecap);
        rig.backend.attach(UnitId(0), rid(), Some(PASID), Translation::Domain(rig.b)).expect("attach B at the PASID");
        rig.write(None, b"untagged").expect("untagged DMA");
        rig.write(Some(PASID), b"tagged 5").expect("tagged DMA");
        assert_eq!(rig.read(rig.a_page), b"untagged", "{name}");
        assert_eq!(rig.read(rig.b_page), b"tagged 5", "{name}");
        assert!(rig.write(Some(OTHER_PASID), b"stray").is_err(), "{name}: a PASID attached nowhere reached memory");
        assert_eq!(rig.backend.attach(UnitId(0), rid(), Some(1 << 20), Translation::Domain(rig.b)).map_err(|_| ()), Err(()), "{name}: a PASID wider than 20 bits");
    }
}

#[test]
fn replace_and_detach_retire_the_pasid_entry_cache_first() {
    for (name, cap, ecap) in UNITS {
        let mut rig = Rig::new(cap, ecap);
        rig.backend.attach(UnitId(0), rid(), Some(PASID), Translation::Domain(rig.b)).unwrap();
        rig.write(Some(PASID), b"cached B").expect("fills the caches with B's translation");

        let before = rig.model.invalidations().len();
        rig.backend.replace(UnitId(0), rid(), Some(PASID), Translation::Domain(rig.a)).expect("replace");
        assert_retired_in_order(&rig.model.invalidations()[before..], PASID, name);
        rig.write(Some(PASID), b"now in A").unwrap();
        assert_eq!(rig.read(rig.a_page), b"now in A", "{name}: the replaced PASID still translates through B");
        assert_eq!(rig.read(rig.b_page), b"cached B", "{name}");

        let before = rig.model.invalidations().len();
        rig.backend.block(UnitId(0), rid(), Some(PASID));
        assert_retired_in_order(&rig.model.invalidations()[before..], PASID, name);
        assert!(rig.write(Some(PASID), b"detached").is_err(), "{name}: a detached PASID still reaches memory");
        rig.write(None, b"untagged").expect("the untagged slot is untouched");
        assert_eq!(rig.read(rig.a_page), b"untagged", "{name}");
    }
}

/// A domain attached at RID_PASID and at a PASID: once an unmap returns, DMA with either must
/// fault. On first-level units each (domain, PASID) pair has its own IOTLB entries.
#[test]
fn an_unmap_reaches_every_pasid_the_domain_is_attached_at() {
    for (name, cap, ecap) in UNITS {
        let mut rig = Rig::new(cap, ecap);
        rig.backend.attach(UnitId(0), rid(), Some(PASID), Translation::Domain(rig.a)).unwrap();
        rig.write(None, b"untagged").unwrap();
        rig.write(Some(PASID), b"tagged 5").unwrap();
        rig.backend.unmap(rig.a, IOVA, PAGE);
        assert!(rig.write(None, b"late").is_err(), "{name}: untagged DMA after the unmap");
        assert!(rig.write(Some(PASID), b"late").is_err(), "{name}: tagged DMA after the unmap reached the released page");
        assert_eq!(rig.read(rig.a_page), b"tagged 5", "{name}");
    }
}
