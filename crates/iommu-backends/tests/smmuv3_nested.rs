//! Nested domains of the SMMUv3 backend against the `smmuv3` crate's software SMMU: the
//! client's own CD and stage-1 tables, at IPAs its stage-2 parent maps; DMA follows stage 1
//! then stage 2; stage-1 invalidations scoped to the domain's own VMID; faults reported with
//! their stage; and what a hostile CD or stage-1 table can reach (only what the parent maps).

use std::collections::BTreeMap;
use std::rc::Rc;

use iommu_abi::{FaultReason, FaultStage, Invalidation, Perm, Stage1Config as NestedConfig, Stage1Format, UnitCaps};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::{DomainConfig, DrainedFault, HwDomainId, IommuBackend, RequesterId, Translation, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use smmuv3::{ContextDescriptor, EventType};


const MEMORY_BASE: u64 = 0x4000_0000;
/// The backend's tables and queues live below this.
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
/// The client's memory for its CDs and stage-1 tables (16 pages), which the parent maps at
/// `GUEST_IPA`.
const GUEST: u64 = TABLES_END;
const GUEST_IPA: u64 = 0x1_0000_0000;
/// Data pages the parent maps at `DATA_IPA` (and the next IPA pages).
const DATA: u64 = GUEST + 16 * PAGE;
const DATA_IPA: u64 = 0x2_0000_0000;
/// A page the parent does not map.
const SECRET: u64 = DATA + 4 * PAGE;
/// Two devices (requester ID → StreamID).
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const OTHER_DEVICE: u32 = 0x0020;
const OTHER_STREAM: u32 = 0x0120;
/// The device's VA, translated by the client's stage 1.
const VA: u64 = 0x4000_0000;
const ASID: u16 = 0x55;
/// Stage-1 descriptors: valid table/page, AF, AP[1] (EL0 accessible, read/write).
const TABLE: u64 = 0b11;
const S1_RW: u64 = 0b11 | 1 << 10 | 1 << 6;

/// The client's side: CDs and stage-1 tables it writes into its own memory, naming every
/// table by its IPA.
struct Client {
    memory: Rc<FakeMemory>,
    next_page: u64,
}

impl Client {
    /// A zeroed page of client memory: its physical address and its IPA.
    fn page(&mut self) -> (u64, u64) {
        let pa = GUEST + self.next_page * PAGE;
        self.next_page += 1;
        assert!(self.next_page <= 16, "client memory exhausted");
        (pa, GUEST_IPA + (pa - GUEST))
    }

    fn pa_of(ipa: u64) -> u64 {
        GUEST + (ipa - GUEST_IPA)
    }

    /// A stage-1 table tree for 39-bit VAs (T0SZ 25, walk from level 1); returns the root's IPA.
    fn stage1_root(&mut self) -> u64 {
        self.page().1
    }

    /// Maps the page at `va` to `ipa` in the tree at `root_ipa`, creating tables as needed.
    fn map(&mut self, root_ipa: u64, va: u64, ipa: u64) {
        let mut table = root_ipa;
        for level in 1..3 {
            let slot = Self::pa_of(table) + ((va >> (39 - 9 * level)) & 0x1ff) * 8;
            let entry = self.memory.read_u64(slot).unwrap();
            table = if entry & TABLE == TABLE {
                entry & 0x0000_ffff_ffff_f000
            } else {
                let (_, next) = self.page();
                assert!(self.memory.write_u64(slot, next | TABLE));
                next
            };
        }
        let slot = Self::pa_of(table) + ((va >> 12) & 0x1ff) * 8;
        assert!(self.memory.write_u64(slot, ipa | S1_RW));
    }

    /// Writes a CD (ASID `asid`, TTB0 the IPA `ttb0`) into a fresh page; returns its IPA.
    fn cd(&mut self, asid: u16, ttb0: u64) -> u64 {
        let (pa, ipa) = self.page();
        self.write_cd(pa, asid, ttb0);
        ipa
    }

    fn write_cd(&self, pa: u64, asid: u16, ttb0: u64) {
        let mut cd = ContextDescriptor::default();
        // 39-bit VAs, 4 KiB granule, TTB1 off, 44-bit IPAs (IPS 4), AArch64 tables, abort and
        // record faults.
        cd.set_t0sz(25).set_epd1(true).set_ips(4).set_aa64(true).set_abort_faults(true).set_record_faults(true);
        cd.set_asid(u64::from(asid)).set_ttb0(ttb0).set_mair(smmuv3::config::DEFAULT_MAIR).set_valid(true);
        for (index, word) in cd.words.iter().enumerate() {
            assert!(self.memory.write_u64(pa + 8 * index as u64, *word));
        }
    }
}

/// What `Rig::attached` set up: the nested domain, its stage-1 root (IPA) and its CD.
struct Attached {
    domain: HwDomainId,
    root: u64,
    cd_pa: u64,
}

struct Rig {
    backend: SmmuBackend<Model>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    parent: HwDomainId,
    client: Client,
}

impl Rig {
    /// One SMMU in `stage` (the server's choice for paging domains), a stage-2 nest parent
    /// mapping the client's memory and four data pages.
    fn new(stage: DomainStage) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu())));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        let streams = BTreeMap::from([(DEVICE, STREAM), (OTHER_DEVICE, OTHER_STREAM)]);
        backend.add_unit(model, 0x0905_0000, stage, streams).expect("bring-up");
        assert!(backend.unit_info(UnitId(0)).unwrap().caps.contains(UnitCaps::NESTING));
        let parent = backend.domain_alloc(UnitId(0), &DomainConfig::Paging { nest_parent: true, dirty_tracking: false }).expect("parent").id;
        backend.map(parent, GUEST_IPA, GUEST, 16 * PAGE, Perm::READ_WRITE).expect("client memory");
        backend.map(parent, DATA_IPA, DATA, 4 * PAGE, Perm::READ_WRITE).expect("data");
        Rig { backend, model, memory: memory.clone(), parent, client: Client { memory, next_page: 0 } }
    }

    fn nested(&mut self, cd_ipa: u64) -> Result<HwDomainId, iommu_abi::Error> {
        let stage1 = NestedConfig { format: Stage1Format::SmmuV3ContextDescriptors, table_root: cd_ipa, address_width: 0, table_entries_log2: 0 };
        self.backend.domain_alloc(UnitId(0), &DomainConfig::Nested { parent: self.parent, stage1 }).map(|domain| domain.id)
    }

    /// A nested domain whose stage 1 maps `VA` to `DATA_IPA`, with `DEVICE` attached.
    fn attached(&mut self) -> Attached {
        let root = self.client.stage1_root();
        self.client.map(root, VA, DATA_IPA);
        let cd = self.client.cd(ASID, root);
        let domain = self.nested(cd).expect("nested domain");
        self.backend.attach(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("attach");
        Attached { domain, root, cd_pa: Client::pa_of(cd) }
    }

    fn write(&self, stream: u32, iova: u64, data: &[u8]) -> Result<(), Option<EventType>> {
        self.model.dma_write(stream, None, iova, data).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(phys, len).expect("inside memory")
    }

    fn drain(&mut self) -> Vec<DrainedFault> {
        let mut faults = Vec::new();
        self.backend.drain_faults(UnitId(0), &mut |fault| faults.push(fault));
        faults
    }
}

const STAGES: [DomainStage; 2] = [DomainStage::Stage1, DomainStage::Stage2];

#[test]
fn dma_follows_the_clients_stage1_then_the_servers_stage2() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        let Attached { domain: nested, root, .. } = rig.attached();
        rig.write(STREAM, VA + 0x20, b"stage 1 then 2").expect("translated write");
        assert_eq!(rig.read(DATA + 0x20, 14), b"stage 1 then 2", "{stage:?}");

        // The client points the page elsewhere: the TLB still holds the old walk until the
        // client invalidates it.
        rig.client.map(root, VA, DATA_IPA + PAGE);
        rig.write(STREAM, VA, b"cached").unwrap();
        assert_eq!(rig.read(DATA, 6), b"cached", "{stage:?}: the model caches stage-1 walks");
        let wrong_asid = Invalidation::Stage1Range { asid: ASID + 1, va: VA, pages: 1, leaf_only: true };
        rig.backend.invalidate_stage1(nested, wrong_asid).expect("another ASID of its own");
        rig.write(STREAM, VA, b"still").unwrap();
        assert_eq!(rig.read(DATA, 5), b"still", "{stage:?}: another ASID's invalidation left the entry");
        rig.backend.invalidate_stage1(nested, Invalidation::Stage1Range { asid: ASID, va: VA, pages: 1, leaf_only: true }).expect("invalidate");
        rig.write(STREAM, VA, b"moved").unwrap();
        assert_eq!(rig.read(DATA + PAGE, 5), b"moved", "{stage:?}: the DMA follows the new stage-1 entry");
    }
}

#[test]
fn faults_name_the_stage_that_faulted() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let Attached { root, .. } = rig.attached();
    // Stage 1: the client's table maps nothing at this VA.
    assert_eq!(rig.write(STREAM, VA + 8 * PAGE, b"x"), Err(Some(EventType::Translation)));
    // Stage 2: the client maps a VA to an IPA the parent does not map.
    rig.client.map(root, VA + 2 * PAGE, 0x3_0000_0000);
    assert_eq!(rig.write(STREAM, VA + 2 * PAGE, b"y"), Err(Some(EventType::Translation)));

    let faults: Vec<_> = rig.drain().iter().map(|f| (f.event.rid, f.event.iova, f.event.reason, f.event.stage)).collect();
    assert_eq!(
        faults,
        [
            (RequesterId(DEVICE), VA + 8 * PAGE, FaultReason::Translation, FaultStage::Stage1),
            (RequesterId(DEVICE), VA + 2 * PAGE, FaultReason::Translation, FaultStage::Stage2),
        ]
    );
}

/// Whatever the client writes into its stage 1 or CD, the SMMU reads and writes only through
/// the parent's stage 2: the physical address of memory the parent does not map, or of the
/// server's own tables, used as an IPA, faults and the memory stays untouched.
#[test]
fn a_hostile_stage1_reaches_only_what_the_parent_maps() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let Attached { root, .. } = rig.attached();
    assert!(rig.memory.write_u64(SECRET, 0x5ec7e7));
    rig.client.map(root, VA + PAGE, SECRET);
    let server_table = MEMORY_BASE;
    let table_word = rig.memory.read_u64(server_table).unwrap();
    rig.client.map(root, VA + 2 * PAGE, server_table);
    assert!(rig.write(STREAM, VA + PAGE, &[0xff; 8]).is_err());
    assert!(rig.write(STREAM, VA + 2 * PAGE, &[0xff; 8]).is_err());
    assert_eq!(rig.memory.read_u64(SECRET), Some(0x5ec7e7));
    assert_eq!(rig.memory.read_u64(server_table), Some(table_word));
    assert!(rig.drain().iter().all(|f| f.event.stage == FaultStage::Stage2));

    // A CD whose TTB0 is a physical address of server memory: the walk goes through stage 2.
    let root_at_secret = rig.client.cd(ASID, SECRET);
    let domain = rig.nested(root_at_secret).expect("the CD is the client's business");
    rig.backend.replace(UnitId(0), RequesterId(DEVICE), None, Translation::Domain(domain)).expect("replace");
    assert!(rig.write(STREAM, VA, b"z").is_err());
    assert_eq!(rig.memory.read_u64(SECRET), Some(0x5ec7e7));
    assert!(rig.drain().iter().all(|f| f.event.stage == FaultStage::Stage2));

    // A CD pointer outside the parent's IPA space or misaligned is refused outright.
    assert!(rig.nested(1 << 50).is_err());
    assert!(rig.nested(GUEST_IPA + 8).is_err());
}

/// Two nested domains over one parent, both using ASID 0x55: each has its own VMID, so one's
/// TLB entries never translate the other's DMA, and one's invalidations are confined to it.
#[test]
fn two_nested_domains_with_the_same_asid_stay_apart() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let first = rig.attached().domain;
    let other_root = rig.client.stage1_root();
    rig.client.map(other_root, VA, DATA_IPA + 2 * PAGE);
    let other_cd = rig.client.cd(ASID, other_root);
    let second = rig.nested(other_cd).unwrap();
    rig.backend.attach(UnitId(0), RequesterId(OTHER_DEVICE), None, Translation::Domain(second)).unwrap();
    rig.write(STREAM, VA, b"first").unwrap();
    rig.write(OTHER_STREAM, VA, b"second").unwrap();
    assert_eq!(rig.read(DATA, 5), b"first", "the second domain's DMA used the first's TLB entry");
    assert_eq!(rig.read(DATA + 2 * PAGE, 6), b"second", "the second domain used the first's TLB entry");
    assert_ne!(first, second);
}

/// An unmap in the parent must drop the nested domains' combined entries too: once it
/// returns, the page goes back, and the nested DMA must fault.
#[test]
fn a_parent_unmap_reaches_its_nested_domains() {
    for stage in STAGES {
        let mut rig = Rig::new(stage);
        rig.attached();
        rig.write(STREAM, VA, b"cached").expect("fills the TLB");
        rig.backend.unmap(rig.parent, DATA_IPA, PAGE);
        rig.memory.write_bytes(DATA, b"the next owner's").unwrap();
        assert_eq!(rig.write(STREAM, VA, b"late"), Err(Some(EventType::Translation)), "{stage:?}: the nested DMA still reaches the page");
        assert_eq!(rig.read(DATA, 16), b"the next owner's");
    }
}

/// A CD rewritten by the client takes effect once it invalidates the CD cache; the stream's
/// STE (and so the VMID and stage 2) is not the client's to change.
#[test]
fn a_rewritten_cd_takes_effect_after_its_invalidation() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let Attached { domain, cd_pa, .. } = rig.attached();
    rig.write(STREAM, VA, b"old").unwrap();
    let new_root = rig.client.stage1_root();
    rig.client.map(new_root, VA, DATA_IPA + 3 * PAGE);
    rig.client.write_cd(cd_pa, ASID + 1, new_root);
    rig.backend.invalidate_stage1(domain, Invalidation::ContextDescriptor).unwrap();
    rig.write(STREAM, VA, b"new").unwrap();
    assert_eq!(rig.read(DATA + 3 * PAGE, 3), b"new");
    let too_wide = Invalidation::Stage1Asid { asid: u16::MAX };
    assert!(rig.backend.invalidate_stage1(domain, too_wide).is_ok(), "QEMU's SMMU has 16-bit ASIDs");
    assert!(rig.backend.invalidate_stage1(rig.parent, Invalidation::ContextDescriptor).is_err(), "not a nested domain");
}
