//! Second-level dirty tracking (ECAP.SSADS, PASID-entry SSADE) against the `vtd` model, which
//! sets A and D in second-level entries as the spec says (QEMU has no SSADS, so this path is
//! model-tested only): the bitmap names exactly the pages the device wrote, a read clears
//! them, and a write after the read is recorded again, which needs the read's invalidation
//! (the model's IOTLB, like hardware, keeps a write translation cached until invalidated).
//! Units without SSADS say so and refuse.

use hwio::DmaAllocator;
use iommu_abi::{Error, IovaRange, Perm, UnitCaps};
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, VtdModel};


const MEMORY_BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const DEVICE: u16 = 0x0018;
const IOVA: u64 = 0x4000_0000;
/// ECAP.SSADS (bit 45): second-stage accessed/dirty support.
const ECAP_SSADS: u64 = 1 << 45;

struct Rig {
    backend: VtdBackend<Model>,
    model: &'static VtdModel,
}

impl Rig {
    fn new(ecap: u64) -> Rig {
        let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), qemu::CAP, ecap)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        Rig { backend, model }
    }

    /// A tracking domain with the device attached and `pages` pages mapped at IOVA.
    fn tracked_domain(&mut self, pages: u64) -> HwDomainId {
        let config = DomainConfig::Paging { nest_parent: false, dirty_tracking: true };
        let domain = self.backend.domain_alloc(UnitId(0), &config).expect("tracking domain").id;
        self.backend.attach(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(domain)).expect("attach");
        let memory = self.backend.dma.alloc_zeroed((pages * PAGE) as usize, PAGE as usize).expect("memory").phys;
        self.backend.map(domain, IOVA, memory, pages * PAGE, Perm::READ_WRITE).expect("map");
        domain
    }

    fn write(&self, page: u64) {
        self.model.dma_write(vtd::RequesterId(DEVICE), None, IOVA + page * PAGE, b"dirty").expect("mapped write");
    }

    fn read(&self, page: u64) {
        self.model.dma_read(vtd::RequesterId(DEVICE), None, IOVA + page * PAGE, 8).expect("mapped read");
    }

    /// The bitmap of the 64 pages from IOVA at `page_size`.
    fn bitmap(&mut self, domain: HwDomainId, page_size: u64, clear: bool) -> u64 {
        let mut bitmap = [0u64; 1];
        let range = IovaRange::from_start_len(IOVA, 64 * page_size).expect("range");
        self.backend.read_and_clear_dirty(domain, range, page_size, clear, &mut bitmap).expect("read the dirty bits");
        bitmap[0]
    }
}

fn pages(list: &[u64]) -> u64 {
    list.iter().fold(0, |set, page| set | 1 << page)
}

#[test]
fn second_level_writes_are_reported_once_and_again_after_the_read() {
    let mut rig = Rig::new(qemu::ECAP_SCALABLE | ECAP_SSADS);
    assert!(rig.backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::DIRTY_TRACKING));
    let domain = rig.tracked_domain(16);
    rig.write(9);
    rig.backend.set_dirty_tracking(domain, true).expect("switch on");
    assert_eq!(rig.bitmap(domain, PAGE, true), 0, "switching on forgot the write before it");

    rig.read(2);
    for page in [1, 5, 12] {
        rig.write(page);
    }
    assert_eq!(rig.bitmap(domain, PAGE, false), pages(&[1, 5, 12]), "reads do not dirty");
    assert_eq!(rig.bitmap(domain, PAGE, false), pages(&[1, 5, 12]), "NO_CLEAR kept the bits");
    assert_eq!(rig.bitmap(domain, 8 * PAGE, false), pages(&[0, 1]), "32 KiB pages: pages 1, 5 and 12 fold into 0 and 1");
    assert_eq!(rig.bitmap(domain, PAGE, true), pages(&[1, 5, 12]));
    assert_eq!(rig.bitmap(domain, PAGE, true), 0, "a second read without new writes is empty");

    // The model cached page 5's write translation; only the read's invalidation makes the
    // next write walk again and set D.
    rig.write(5);
    assert_eq!(rig.bitmap(domain, PAGE, true), pages(&[5]), "a write after the read is recorded again");
}

#[test]
fn units_without_dirty_bits_refuse_tracking() {
    for ecap in [qemu::ECAP_LEGACY, qemu::ECAP_SCALABLE] {
        let mut rig = Rig::new(ecap);
        assert!(!rig.backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::DIRTY_TRACKING), "ECAP {ecap:#x}");
        let config = DomainConfig::Paging { nest_parent: false, dirty_tracking: true };
        assert_eq!(rig.backend.domain_alloc(UnitId(0), &config).map(|d| d.id), Err(Error::NotSupported), "ECAP {ecap:#x}");
        let plain = rig.backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).expect("domain").id;
        assert_eq!(rig.backend.set_dirty_tracking(plain, true), Err(Error::NotSupported), "ECAP {ecap:#x}");
    }
}
