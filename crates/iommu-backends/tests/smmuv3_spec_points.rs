//! SMMUv3 rules QEMU 10.0.2 does not hold the server to, against an `smmuv3` model strict
//! enough to catch them:
//! - a stream moved from one stage-1 domain to another reuses its CD buffer; an SMMU may keep
//!   the old CD cached across CMD_CFGI_STE (QEMU drops it), so the CD is invalidated
//!   (CMD_CFGI_CD) before the STE goes live again, never after;
//! - an unmap that cuts a block splits it break-before-make: the block goes invalid and out of
//!   the TLB (TLBI + CMD_SYNC) before the table of pages takes its place, so no TLB ever holds
//!   the block and its pages at once;
//! - an SMMU that does not snoop CPU caches (IDR0.COHACC = 0) is never assumed coherent: on a
//!   platform whose DMA allocator cannot write caches back it is refused and left aborting all
//!   traffic; where it can, the server's own tables reach it, and SVA, nesting and dirty
//!   tracking (tables and bits others write) are refused.

use std::collections::BTreeMap;

use iommu_abi::{Perm, UnitCaps};
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::Environment;
use iommu_core::{DomainConfig, IommuBackend, RequesterId, Translation, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use smmuv3::EventType;

const MEMORY_BASE: u64 = 0x4000_0000;
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
const TWO_MIB: u64 = 2 << 20;
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

#[test]
fn a_split_block_breaks_before_it_makes() {
    for stage in [DomainStage::Stage1, DomainStage::Stage2] {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let config = ModelConfig { break_before_make_checked: true, ..ModelConfig::qemu() };
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), config)));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, stage, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        let domain = backend.domain_alloc(UnitId(0), &PAGING).expect("domain").id;
        backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("attach");
        // One 2 MiB block, cached by a write through it.
        let block = TABLES_END;
        backend.map(domain, IOVA, block, TWO_MIB, Perm::READ_WRITE).expect("2 MiB map");
        model.dma_write(STREAM, None, IOVA + 3 * PAGE, b"cached").expect("DMA through the block");

        // An unmap of one page inside it splits the block.
        backend.unmap(domain, IOVA + PAGE, PAGE);

        assert_eq!(model.blocks_split_while_cached(), Vec::<u64>::new(), "{stage:?}: the block became a table while the TLB still held it");
        let translation = |event: Result<(), smmuv3::model::Aborted>| event.map_err(|aborted| aborted.event.map(|e| e.event_type()));
        assert_eq!(translation(model.dma_write(STREAM, None, IOVA + PAGE, b"x")), Err(Some(EventType::Translation)), "{stage:?}: the unmapped page");
        model.dma_write(STREAM, None, IOVA + 3 * PAGE + 6, b" and split").expect("the rest of the block, through its pages");
        assert_eq!(memory.read_bytes(block + 3 * PAGE, 16).expect("inside memory"), b"cached and split");
    }
}

/// IDR0.COHACC, bit 4.
const IDR0_COHACC: u32 = 1 << 4;

/// The server's environment on a platform whose DMA allocator does no cache maintenance.
struct WithoutCacheMaintenance;

impl Environment for WithoutCacheMaintenance {
    type Registers = &'static SmmuModel;
    type Dma = ModelDma;
    type Clock = StepClock;

    fn log(line: core::fmt::Arguments<'_>) {
        println!("{line}");
    }
}

fn non_coherent_smmu(memory: &std::rc::Rc<FakeMemory>) -> &'static SmmuModel {
    let mut config = ModelConfig::qemu();
    config.idr[0] &= !IDR0_COHACC;
    Box::leak(Box::new(SmmuModel::new(memory.clone(), config)))
}

#[test]
fn a_non_coherent_smmu_is_refused_without_cache_maintenance() {
    let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
    let model = non_coherent_smmu(&memory);
    model.dma_write(STREAM, None, TABLES_END, b"bypass").expect("out of reset the SMMU lets DMA bypass");
    let dma = ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END);
    let mut backend = SmmuBackend::<WithoutCacheMaintenance>::new(dma, StepClock::new(1_000));

    let refused = backend.add_unit(model, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)]));

    assert_eq!(refused, Err("SMMUv3 bring-up failed"), "a non-coherent SMMU was brought up with tables it cannot see");
    assert_eq!(backend.unit_count(), 0);
    let after = model.dma_write(STREAM, None, TABLES_END + PAGE, b"bypass");
    assert!(matches!(after, Err(smmuv3::model::Aborted { event: None })), "the refused SMMU does not abort all traffic: {after:?}");
}

#[test]
fn a_non_coherent_smmu_gets_clean_tables_and_no_shared_ones() {
    for stage in [DomainStage::Stage1, DomainStage::Stage2] {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model = non_coherent_smmu(&memory);
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, stage, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up with cache maintenance");
        let caps = backend.unit_info(UnitId(0)).expect("unit").caps;
        for shared in [UnitCaps::SVA, UnitCaps::NESTING, UnitCaps::DIRTY_TRACKING] {
            assert!(!caps.contains(shared), "{stage:?}: a non-coherent SMMU offers {shared:?}");
        }
        let domain = backend.domain_alloc(UnitId(0), &PAGING).expect("domain").id;
        backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("attach");
        backend.map(domain, IOVA, TABLES_END, PAGE, Perm::READ_WRITE).expect("map");
        model.dma_write(STREAM, None, IOVA, b"walked clean tables").expect("the walker sees the written-back tables");
        assert_eq!(memory.read_bytes(TABLES_END, 19).expect("inside memory"), b"walked clean tables");
    }
}

#[test]
fn a_coherent_smmu_offers_sva_and_nesting() {
    let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
    let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu())));
    let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
    backend.add_unit(model, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
    let caps = backend.unit_info(UnitId(0)).expect("unit").caps;
    assert!(caps.contains(UnitCaps::SVA) && caps.contains(UnitCaps::NESTING), "{caps:?}");
}
