//! The SMMUv3 backend against the `smmuv3` crate's software SMMU, which caches STEs, CDs,
//! translations and walks until the matching command drops them: map, unmap with its
//! invalidation finished before the pages go back (also on an SMMU that consumes commands
//! slowly), table recycling, an invalidation that never completes, and event draining. Each
//! test runs with stage-1 and with stage-2 domains.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use iommu_abi::{Access, FaultReason, Perm};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::{DomainConfig, DrainedFault, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use smmuv3::model::{CommandConsumption, FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use smmuv3::EventType;


const MEMORY_BASE: u64 = 0x4000_0000;
/// The backend's tables and queues live below this; the test's data pages above.
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
const TWO_MIB: u64 = 2 << 20;
/// Data pages: a 2 MiB block, then two single pages.
const LARGE: u64 = TABLES_END;
const SMALL: u64 = TABLES_END + TWO_MIB;
const OTHER: u64 = SMALL + PAGE;
/// The device under test: requester ID 00:03.0, which the firmware maps to this StreamID.
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
const STAGES: [DomainStage; 2] = [DomainStage::Stage1, DomainStage::Stage2];

struct Rig {
    backend: SmmuBackend<Model>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    domain: HwDomainId,
}

impl Rig {
    /// One SMMU brought up by the backend in `stage`, the device attached to a fresh domain.
    fn new(stage: DomainStage) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu())));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        let unit = backend.add_unit(model, 0x0905_0000, stage, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        assert_eq!((unit, backend.units[0].stage), (0, stage));
        let domain = backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: false, dirty_tracking: false }).expect("domain").id;
        backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("attach");
        Rig { backend, model, memory, domain }
    }

    fn device_write(&self, iova: u64, data: &[u8]) -> Result<(), Option<EventType>> {
        self.model.dma_write(STREAM, None, iova, data).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(phys, len).expect("inside memory")
    }

    fn drain(&mut self) -> (usize, Vec<DrainedFault>) {
        let mut faults = Vec::new();
        let reported = self.backend.drain_faults(UnitId(0), &mut |fault| faults.push(fault));
        (reported, faults)
    }
}

#[test]
fn a_mapped_page_is_reached_at_its_iova_and_nowhere_else() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        rig.backend.map(rig.domain, IOVA, SMALL, PAGE, Perm::READ_WRITE).expect("map");
        rig.device_write(IOVA + 0x10, b"through the SMMU").expect("mapped write");
        assert_eq!(rig.read(SMALL + 0x10, 16), b"through the SMMU");
        assert!(rig.device_write(IOVA + PAGE, b"x").is_err(), "{stage:?}: the next page is not mapped");
    }
}

/// The object model unpins the pages as soon as `unmap` returns: by then the SMMU must not
/// reach them, although its TLB held the translation, even when it consumes one command per
/// look at CMDQ_CONS (the backend must wait for the CMD_SYNC, not only queue the TLBI).
#[test]
fn unmap_returns_only_once_the_smmu_cannot_reach_the_pages() {
    for (stage, commands) in STAGES.into_iter().flat_map(|stage| [(stage, CommandConsumption::OnProdWrite), (stage, CommandConsumption::PerConsRead(1))]) {
        let mut rig = Rig::new(stage);
        rig.backend.map(rig.domain, IOVA, SMALL, PAGE, Perm::READ_WRITE).expect("map");
        rig.device_write(IOVA, b"cached").expect("a write that fills the TLB");
        assert!(rig.model.tlb_entries() > 0);
        rig.model.set_command_consumption(commands);

        rig.backend.unmap(rig.domain, IOVA, PAGE);
        // What the object model does next: the page goes back, and its next owner writes it.
        rig.memory.write_bytes(SMALL, b"the next owner's secret").expect("inside memory");

        assert_eq!(rig.device_write(IOVA, b"late"), Err(Some(EventType::Translation)), "{stage:?} {commands:?}: the device still writes a released page");
        assert_eq!(rig.read(SMALL, 23), b"the next owner's secret");
    }
}

/// A 2 MiB block replaces the emptied table a 4 KiB mapping left: the SMMU may hold that table
/// in its walk cache, so it is unlinked with a non-leaf invalidation before the table is used
/// again, here for the next 2 MiB region.
#[test]
fn tables_are_recycled_only_after_the_walk_cache_forgot_them() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        rig.backend.map(rig.domain, IOVA, SMALL, PAGE, Perm::READ_WRITE).expect("4 KiB map");
        rig.device_write(IOVA, b"walk").expect("a write that caches the walk");
        rig.backend.unmap(rig.domain, IOVA, PAGE);

        rig.backend.map(rig.domain, IOVA, LARGE, TWO_MIB, Perm::READ_WRITE).expect("2 MiB map over the emptied table");
        rig.device_write(IOVA + 0x3000, b"large leaf").expect("write through the 2 MiB block");
        assert_eq!(rig.read(LARGE + 0x3000, 10), b"large leaf");

        let allocations = rig.backend.dma.live_allocations();
        rig.backend.map(rig.domain, IOVA + TWO_MIB, OTHER, PAGE, Perm::READ_WRITE).expect("4 KiB map in the next region");
        assert_eq!(rig.backend.dma.live_allocations(), allocations, "{stage:?}: the unlinked table was not reused");
        rig.device_write(IOVA, b"first page").expect("write through the 2 MiB block");
        assert_eq!(rig.read(LARGE, 10), b"first page");
        assert_eq!(rig.read(OTHER, 10), [0; 10], "{stage:?}: a write to the 2 MiB region went through the recycled table");
    }
}

/// An SMMU that stops consuming commands: the backend must not return from the unmap (after
/// which the pages would be unpinned) and must say why.
#[test]
fn an_invalidation_that_never_completes_fails_closed() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        rig.backend.map(rig.domain, IOVA, SMALL, PAGE, Perm::READ_WRITE).expect("map");
        rig.device_write(IOVA, b"cached").expect("a write that fills the TLB");
        rig.model.set_command_consumption(CommandConsumption::Never);
        let allocations = rig.backend.dma.live_allocations();

        let unmapped = catch_unwind(AssertUnwindSafe(|| rig.backend.unmap(rig.domain, IOVA, PAGE)));

        let message = unmapped.expect_err("unmap returned although the TLB may still hold the translation");
        let message = message.downcast_ref::<String>().expect("a formatted panic message");
        assert!(message.contains("FATAL: TLB invalidation after unmap") && message.contains("Timeout"), "{message}");
        assert_eq!(rig.backend.dma.live_allocations(), allocations, "{stage:?}: table memory went back after a failed invalidation");
        rig.device_write(IOVA, b"stale").expect("the stale translation is still in the TLB");
    }
}

/// A burst of events of one stream in one page is one fault; an event naming no known stream
/// is counted but reaches no sink.
#[test]
fn events_are_drained_decoded_and_folded() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        assert!(rig.device_write(IOVA + 0x10, b"x").is_err());
        assert!(rig.device_write(IOVA + 0x20, b"y").is_err());
        assert!(rig.model.dma_read(STREAM, None, IOVA + PAGE, 4).is_err());
        assert!(rig.model.dma_write(0x0999, None, IOVA, b"z").is_err(), "a stream no function uses");

        let (reported, faults) = rig.drain();

        assert_eq!(reported, 3, "{stage:?}");
        let summary: Vec<_> = faults.iter().map(|f| (f.event.unit, f.event.rid, f.event.iova, f.event.access, f.event.reason, f.code)).collect();
        let (rid, translation) = (RequesterId(DEVICE), EventType::Translation.id());
        assert_eq!(
            summary,
            [
                (UnitId(0), rid, IOVA + 0x10, Access::WRITE, FaultReason::Translation, translation),
                (UnitId(0), rid, IOVA + PAGE, Access::READ, FaultReason::Translation, translation),
            ],
            "{stage:?}"
        );
        assert!(faults.iter().all(|f| iommu_backends::smmuv3::fault_name(f) == EventType::Translation.name()));
        assert_eq!(rig.drain(), (0, Vec::new()), "{stage:?}: the queue was not consumed");
    }
}
