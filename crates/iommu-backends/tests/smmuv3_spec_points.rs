//! SMMUv3 rules QEMU 10.0.2 does not hold the server to, against an `smmuv3` model strict
//! enough to catch them:
//! - a stream moved from one stage-1 domain to another reuses its CD buffer; an SMMU may keep
//!   the old CD cached across CMD_CFGI_STE (QEMU drops it), so the CD is invalidated
//!   (CMD_CFGI_CD) before the STE goes live again, never after.

use std::collections::BTreeMap;

use iommu_abi::Perm;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_core::{DomainConfig, IommuBackend, RequesterId, Translation, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};

const MEMORY_BASE: u64 = 0x4000_0000;
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
const PAGING: DomainConfig = DomainConfig::Paging { nest_parent: false, dirty_tracking: false };

#[test]
fn a_reused_cd_is_invalidated_before_its_ste_goes_live() {
    let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
    let config = ModelConfig { cds_outlive_ste_invalidation: true, ..ModelConfig::qemu() };
    let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), config)));
    let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
    backend.add_unit(model, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
    let (first, second) = (TABLES_END, TABLES_END + PAGE);
    let domains = [first, second].map(|page| {
        let domain = backend.domain_alloc(UnitId(0), &PAGING).expect("domain").id;
        backend.map(domain, IOVA, page, PAGE, Perm::READ_WRITE).expect("map");
        domain
    });

    backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domains[0])).expect("attach");
    model.dma_write(STREAM, None, IOVA, b"first").expect("DMA through the first domain (its CD cached now)");
    backend.replace(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domains[1])).expect("replace");
    model.dma_write(STREAM, None, IOVA, b"second").expect("DMA through the second domain");

    assert_eq!(model.stale_cd_streams(), Vec::<u32>::new(), "the STE went live while the SMMU could still use the stream's old CD");
    assert_eq!(memory.read_bytes(first, 6).expect("inside memory"), b"first\0");
    assert_eq!(memory.read_bytes(second, 6).expect("inside memory"), b"second");
}
