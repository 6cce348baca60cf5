//! Nested domains of the VT-d backend (PGTT 011b: the client's first-level table over the
//! server's second-level parent) against the `vtd` crate's software unit with ECAP.NEST. QEMU
//! 10.0.2 rejects nested PASID entries, so this is the only place they are exercised.

use hwio::DmaAllocator;
use iommu_abi::{FaultStage, Invalidation, Perm, Stage1Config, Stage1Format, UnitCaps};
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::{DomainConfig, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, TableFormat, TestPageTable, VtdModel};


const MEMORY_BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const DEVICE: u16 = 0x0018;
/// ECAP.NEST (bit 26) and ECAP.FLTS (bit 47) on top of QEMU's scalable second-level ECAP.
const ECAP_NESTED: u64 = qemu::ECAP_SCALABLE | 1 << 26 | 1 << 47;
/// Guest-physical = physical + `GPA_BIAS` for the client's tables and data.
const GPA_BIAS: u64 = 0x1_0000_0000;
/// The device's address, which the client's first level translates.
const VA: u64 = 0x4000_0000;

struct Rig {
    backend: VtdBackend<Model>,
    model: &'static VtdModel,
    parent: HwDomainId,
    nested: HwDomainId,
    guest: TestPageTable,
    pages: [u64; 2],
}

impl Rig {
    /// The parent maps the client's table pages and two data pages at their guest-physical
    /// addresses; the client's first level maps `VA` to the first data page; the device is
    /// attached to the nested domain.
    fn new() -> Rig {
        let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), qemu::CAP_FLTS, ECAP_NESTED)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        assert!(backend.unit_info(UnitId(0)).unwrap().caps.contains(UnitCaps::NESTING));
        let parent = backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: true, dirty_tracking: false }).expect("parent").id;
        let pages = [0, 1].map(|_| backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).unwrap().phys);
        let mut guest = TestPageTable::new(&mut backend.dma, TableFormat::FirstLevel, 4).with_pointer_bias(GPA_BIAS);
        guest.map_4k(&mut backend.dma, VA, pages[0] + GPA_BIAS, true);
        for &table in guest.table_pages().to_vec().iter().chain(&pages) {
            backend.map(parent, table + GPA_BIAS, table, PAGE, Perm::READ_WRITE).expect("parent map");
        }
        let stage1 = Stage1Config { format: Stage1Format::VtdFirstLevel, table_root: guest.root() + GPA_BIAS, address_width: 48, table_entries_log2: 0 };
        let nested = backend.domain_alloc(UnitId(0), &DomainConfig::Nested { parent, stage1 }).expect("nested").id;
        backend.attach(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(nested)).expect("attach");
        Rig { backend, model, parent, nested, guest, pages }
    }

    fn write(&self, data: &[u8]) -> Result<(), u8> {
        self.model.dma_write(vtd::RequesterId(DEVICE), None, VA, data)
    }

    fn read(&self, phys: u64) -> Vec<u8> {
        self.backend.dma.memory().read_bytes(phys, 8).unwrap()
    }
}

#[test]
fn dma_follows_the_clients_first_level_then_the_servers_second_level() {
    let mut rig = Rig::new();
    rig.write(b"nested!!").expect("nested DMA");
    assert_eq!(rig.read(rig.pages[0]), b"nested!!");

    // The client moves VA to the second page: cached until it invalidates.
    rig.guest.map_4k(&mut rig.backend.dma, VA, rig.pages[1] + GPA_BIAS, true);
    rig.write(b"cached..").unwrap();
    assert_eq!(rig.read(rig.pages[0]), b"cached..", "the model caches the combined translation");
    let range = Invalidation::Stage1Range { asid: 0, va: VA, pages: 1, leaf_only: true };
    rig.backend.invalidate_stage1(rig.nested, range).expect("invalidate");
    rig.write(b"moved...").unwrap();
    assert_eq!(rig.read(rig.pages[1]), b"moved...", "the DMA did not follow the client's first level");
    assert!(rig.backend.invalidate_stage1(rig.nested, Invalidation::Stage1Asid { asid: 1 }).is_err(), "VT-d has no ASIDs");
    assert!(rig.backend.invalidate_stage1(rig.parent, Invalidation::Stage1Asid { asid: 0 }).is_err(), "not a nested domain");
}

/// Once a parent unmap returns the page goes back: the nested domain's combined IOTLB entry
/// must be gone too.
#[test]
fn a_parent_unmap_reaches_the_nested_domain() {
    let mut rig = Rig::new();
    rig.write(b"cached..").unwrap();
    rig.backend.unmap(rig.parent, rig.pages[0] + GPA_BIAS, PAGE);
    assert!(rig.write(b"late....").is_err(), "the nested DMA still reaches a page the parent unmapped");
    assert_eq!(rig.read(rig.pages[0]), b"cached..");
}

/// The client's first level can name any guest-physical address; only what the parent maps is
/// reached: a physical address used as a guest-physical one faults.
#[test]
fn a_hostile_first_level_reaches_only_what_the_parent_maps() {
    let mut rig = Rig::new();
    let secret = rig.backend.dma.alloc_zeroed(PAGE as usize, PAGE as usize).unwrap().phys;
    rig.backend.dma.memory().write_bytes(secret, b"secret..").unwrap();
    rig.guest.map_4k(&mut rig.backend.dma, VA + PAGE, secret, true);
    assert!(rig.model.dma_write(vtd::RequesterId(DEVICE), None, VA + PAGE, b"stolen..").is_err());
    assert_eq!(rig.read(secret), b"secret..");
}

impl Rig {
    /// The device writes `va` (a fault is expected); returns the reason code, the stage and
    /// the address of the one fault the backend drains.
    fn faulting_write(&mut self, va: u64) -> (u8, FaultStage, u64) {
        assert!(self.model.dma_write(vtd::RequesterId(DEVICE), None, va, b"faulting").is_err(), "the write at {va:#x} translated");
        let mut faults = Vec::new();
        self.backend.drain_faults(UnitId(0), &mut |fault| faults.push(fault));
        assert_eq!(faults.len(), 1, "one fault per refused write");
        (faults[0].code, faults[0].event.stage, faults[0].event.iova)
    }
}

/// A fault of a nested attachment names the stage its reason code (VT-d spec 7.1.3, the
/// scalable-mode reasons) belongs to: the client's first stage (SFS.x), the server's second
/// stage (SSS.x, also for a second-stage walk done to read a first-stage table); the write
/// permission code, which either stage raises, names none. A fault of an attachment that is
/// not nested names none either.
#[test]
fn nested_faults_name_their_stage() {
    let mut rig = Rig::new();
    // First stage: the client's table has no entry for VA + 2 pages (SFS.2, 71h).
    assert_eq!(rig.faulting_write(VA + 2 * PAGE), (0x71, FaultStage::Stage1, VA + 2 * PAGE));

    // Second stage: the client's entry for VA + 1 page names a guest-physical page the parent
    // does not map (SSS.2, 79h).
    rig.guest.map_4k(&mut rig.backend.dma, VA + PAGE, 0x7000_0000 + GPA_BIAS, true);
    assert_eq!(rig.faulting_write(VA + PAGE), (0x79, FaultStage::Stage2, VA + PAGE));

    // Second stage while reading a first-stage table: the parent no longer maps the client's
    // leaf table (a first-stage fault if the stage came from where the walk was).
    let leaf_table = *rig.guest.table_pages().last().expect("tables");
    rig.backend.unmap(rig.parent, leaf_table + GPA_BIAS, PAGE);
    assert_eq!(rig.faulting_write(VA), (0x79, FaultStage::Stage2, VA));
    rig.backend.map(rig.parent, leaf_table + GPA_BIAS, leaf_table, PAGE, Perm::READ_WRITE).expect("map the table again");

    // The parent maps the data page read-only: SGN.6 (85h), which names no stage.
    rig.backend.unmap(rig.parent, rig.pages[0] + GPA_BIAS, PAGE);
    rig.backend.map(rig.parent, rig.pages[0] + GPA_BIAS, rig.pages[0], PAGE, Perm::READ).expect("read-only");
    assert_eq!(rig.faulting_write(VA), (0x85, FaultStage::Unspecified, VA));

    // The device attached to the parent itself: one-stage faults name no stage.
    rig.backend.replace(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(rig.parent)).expect("replace");
    assert_eq!(rig.faulting_write(0x7100_0000).1, FaultStage::Unspecified);
    // Back on the nested domain, its faults name their stage again; after the detach, none.
    rig.backend.replace(UnitId(0), RequesterId(DEVICE.into()), None, Translation::Domain(rig.nested)).expect("replace");
    assert_eq!(rig.faulting_write(VA + 2 * PAGE).1, FaultStage::Stage1);
    rig.backend.block(UnitId(0), RequesterId(DEVICE.into()), None);
    assert_eq!(rig.faulting_write(VA + 2 * PAGE), (0x02, FaultStage::Unspecified, VA + 2 * PAGE));
}
