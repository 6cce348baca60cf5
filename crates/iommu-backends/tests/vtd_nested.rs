//! Nested domains of the VT-d backend (PGTT 011b: the client's first-level table over the
//! server's second-level parent) against the `vtd` crate's software unit with ECAP.NEST. QEMU
//! 10.0.2 rejects nested PASID entries, so this is the only place they are exercised.

use hwio::DmaAllocator;
use iommu_abi::{Invalidation, Perm, Stage1Config, Stage1Format, UnitCaps};
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
