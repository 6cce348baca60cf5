//! Stage-1 dirty tracking with hardware dirty-state update (IDR0.HTTU = 0b10, CD.HA/HD, DBM
//! leaves) against the `smmuv3` model, which clears AP[2] of a writable-clean leaf on the first
//! write as the architecture says (QEMU has no HTTU, so this path is model-tested only): the
//! bitmap names exactly the pages the device wrote, a read cleans them (AP[2] set again), and a
//! write after the read is recorded again, which needs the read's TLB invalidation. An SMMU
//! without HTTU, and stage-2 domains, say so and refuse.

use std::collections::BTreeMap;

use iommu_abi::{Error, IovaRange, Perm, UnitCaps};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};


const MEMORY_BASE: u64 = 0x4000_0000;
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
const DATA: u64 = TABLES_END;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
/// IDR0.HTTU, bits [7:6] = 0b10: access flag and dirty state.
const IDR0_HTTU_DIRTY: u32 = 0b10 << 6;

struct Rig {
    backend: SmmuBackend<Model>,
    model: &'static SmmuModel,
}

impl Rig {
    fn new(stage: DomainStage, httu: bool) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let mut config = ModelConfig::qemu();
        if httu {
            config.idr[0] |= IDR0_HTTU_DIRTY;
        }
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), config)));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory, MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, stage, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        Rig { backend, model }
    }

    /// A tracking domain with the device attached and 16 pages mapped at IOVA.
    fn tracked_domain(&mut self) -> HwDomainId {
        let config = DomainConfig::Paging { nest_parent: false, dirty_tracking: true };
        let domain = self.backend.domain_alloc(UnitId(0), &config).expect("tracking domain").id;
        self.backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("attach");
        self.backend.map(domain, IOVA, DATA, 16 * PAGE, Perm::READ_WRITE).expect("map");
        domain
    }

    fn write(&self, page: u64) {
        self.model.dma_write(STREAM, None, IOVA + page * PAGE, b"dirty").expect("mapped write");
    }

    fn read(&self, page: u64) {
        self.model.dma_read(STREAM, None, IOVA + page * PAGE, 8).expect("mapped read");
    }

    fn bitmap(&mut self, domain: HwDomainId, page_size: u64, clear: bool) -> u64 {
        let mut bitmap = [0u64; 1];
        let range = IovaRange::from_start_len(IOVA, 64 * page_size).expect("range");
        self.backend.read_and_clear_dirty(domain, range, page_size, clear, &mut bitmap).expect("read the dirty state");
        bitmap[0]
    }
}

fn pages(list: &[u64]) -> u64 {
    list.iter().fold(0, |set, page| set | 1 << page)
}

#[test]
fn httu_writes_are_reported_once_and_again_after_the_read() {
    let mut rig = Rig::new(DomainStage::Stage1, true);
    assert!(rig.backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::DIRTY_TRACKING));
    let domain = rig.tracked_domain();
    // DBM leaves start writable-dirty (iommu_pt::smmu_stage1); switching on cleans them all.
    rig.backend.set_dirty_tracking(domain, true).expect("switch on");
    assert_eq!(rig.bitmap(domain, PAGE, true), 0, "switching on starts clean");

    rig.read(2);
    for page in [1, 5, 12] {
        rig.write(page);
    }
    assert_eq!(rig.bitmap(domain, PAGE, false), pages(&[1, 5, 12]), "reads do not dirty");
    assert_eq!(rig.bitmap(domain, PAGE, false), pages(&[1, 5, 12]), "NO_CLEAR kept the state");
    assert_eq!(rig.bitmap(domain, PAGE, true), pages(&[1, 5, 12]));
    assert_eq!(rig.bitmap(domain, PAGE, true), 0, "a second read without new writes is empty");

    // Page 5's write left a writable TLB entry; only the read's invalidation makes the next
    // write walk again and clear AP[2].
    rig.write(5);
    assert_eq!(rig.bitmap(domain, PAGE, true), pages(&[5]), "a write after the read is recorded again");
}

#[test]
fn smmus_without_httu_and_stage_2_refuse_tracking() {
    for (stage, httu) in [(DomainStage::Stage1, false), (DomainStage::Stage2, true)] {
        let mut rig = Rig::new(stage, httu);
        assert!(!rig.backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::DIRTY_TRACKING), "{stage:?}");
        let config = DomainConfig::Paging { nest_parent: false, dirty_tracking: true };
        assert_eq!(rig.backend.domain_alloc(UnitId(0), &config).map(|d| d.id), Err(Error::NotSupported), "{stage:?}");
        let plain = rig.backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).expect("domain").id;
        assert_eq!(rig.backend.set_dirty_tracking(plain, true), Err(Error::NotSupported), "{stage:?}");
    }
}
