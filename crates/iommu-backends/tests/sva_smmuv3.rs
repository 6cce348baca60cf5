//! Shared virtual addressing on the SMMUv3 backend against the `smmuv3` crate's software SMMU
//! (QEMU 10.0.2's: one CD per stream, no substreams): a process's own AArch64 table, bound
//! through the object model, is walked at its virtual addresses; the kernel's half (TTBR1's,
//! not in the CD) is not reachable; a process's unmap is invalidated (TLBI_NH_VA under the
//! binding's ASID, CMD_SYNC) before the kernel's record is acknowledged, so a frame reused
//! after the acknowledgement is out of the device's reach; the process's end blocks the stream.
//! On a model with substreams (IDR1.SSIDSIZE > 0, which QEMU lacks; linear and two-level CD
//! tables) a binding at a PASID is that SubstreamID's CD: tagged DMA walks the process's
//! tables, an unbind blocks that SubstreamID only, and an unmap is invalidated under that
//! binding's ASID before the acknowledgement.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use iommu_abi::wire::SVA_UNTAGGED;
use iommu_abi::{Error, UnitCaps};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::fake::FakeMemory as FakeMemorySource;
use iommu_core::{AddressSpace, AddressSpaceChange, ClientId, DeviceGrant, IommuBackend, ObjectModel, RequesterId, ServerConfig, Translation, UnitId};
use smmuv3::cmd::opcode;
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use smmuv3::EventType;


const MEMORY_BASE: u64 = 0x4000_0000;
/// The backend's tables and queues live below this; the process's tables and frames above.
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const PAGE: u64 = 4096;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const CLIENT: ClientId = ClientId(1);
/// The CPU's MAIR_EL1 (Attr0 Device-nGnRE, Attr1 Normal write-back, Attr2 Normal
/// non-cacheable), which the process's AttrIndx fields index.
const CPU_MAIR: u64 = 0x44_FF_04;
const SPACE_ID: u64 = 42;
/// Virtual addresses of the bound process.
const BUFFER: u64 = 0x40_0000;
const READ_ONLY: u64 = BUFFER + PAGE;
const UNMAPPED: u64 = BUFFER + 2 * PAGE;
/// A page whose descriptor has AF clear.
const NOT_ACCESSED: u64 = BUFFER + 3 * PAGE;
/// A kernel address (TTBR1_EL1's half).
const KERNEL: u64 = 0xffff_0000_4000_0000;

// VMSAv8-64 descriptor bits (Arm ARM D8.3), as the kernel writes them.
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx = 1: Normal write-back in the CPU's MAIR.
const ATTR_NORMAL: u64 = 1 << 2;
const AP_EL0: u64 = 1 << 6;
const AP_READ_ONLY: u64 = 1 << 7;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const NOT_GLOBAL: u64 = 1 << 11;

/// A process's 4-level, 4 KiB-granule table in the model's memory, built the way the kernel
/// builds a user address space.
struct ProcessTables {
    memory: Rc<FakeMemory>,
    root: u64,
    next_frame: Cell<u64>,
}

impl ProcessTables {
    fn new(memory: Rc<FakeMemory>, first_frame: u64) -> ProcessTables {
        let tables = ProcessTables { memory, root: 0, next_frame: Cell::new(first_frame) };
        ProcessTables { root: tables.frame(), ..tables }
    }

    fn frame(&self) -> u64 {
        let frame = self.next_frame.get();
        self.next_frame.set(frame + PAGE);
        self.memory.write_bytes(frame, &[0; PAGE as usize]).expect("inside memory");
        frame
    }

    fn leaf_slot(&self, va: u64) -> u64 {
        let mut table = self.root;
        for level in 0..3 {
            let slot = table + (va >> (39 - 9 * level) & 0x1ff) * 8;
            let entry = self.memory.read_u64(slot).expect("inside memory");
            table = if entry & VALID != 0 {
                entry & 0x0000_ffff_ffff_f000
            } else {
                let next = self.frame();
                self.memory.write_u64(slot, next | TABLE_OR_PAGE | VALID);
                next
            };
        }
        table + (va >> 12 & 0x1ff) * 8
    }

    fn map(&self, va: u64, frame: u64, attributes: u64) {
        let slot = self.leaf_slot(va);
        self.memory.write_u64(slot, frame | attributes | TABLE_OR_PAGE | VALID);
    }

    fn unmap(&self, va: u64) {
        let slot = self.leaf_slot(va);
        self.memory.write_u64(slot, 0);
    }
}

const USER_DATA: u64 = ATTR_NORMAL | AP_EL0 | INNER_SHAREABLE | ACCESS_FLAG | NOT_GLOBAL;

struct Rig {
    server: ObjectModel<SmmuBackend<Model>, FakeMemorySource>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    tables: ProcessTables,
    buffer: u64,
    read_only: u64,
    device: iommu_abi::Handle,
}

impl Rig {
    fn new() -> Rig {
        Rig::on(ModelConfig::qemu(), 0)
    }

    /// A rig on an SMMU with `config`, the device's PASID capability `pasid_bits` wide.
    fn on(config: ModelConfig, pasid_bits: u8) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), config)));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        assert!(backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::SVA), "a stage-1 SMMU offers SVA");
        let tables = ProcessTables::new(memory.clone(), TABLES_END);
        let (buffer, read_only) = (tables.frame(), tables.frame());
        tables.map(BUFFER, buffer, USER_DATA);
        tables.map(READ_ONLY, read_only, USER_DATA | AP_READ_ONLY);
        tables.map(NOT_ACCESSED, tables.frame(), USER_DATA & !ACCESS_FLAG);
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut server = ObjectModel::new(backend, FakeMemorySource::new(log), ServerConfig::default());
        assert!(server.open_client(CLIENT));
        let device = server.device_bind(CLIENT, DeviceGrant { unit: UnitId(0), rid: RequesterId(DEVICE), pasid_bits }).expect("bind");
        Rig { server, model, memory, tables, buffer, read_only, device }
    }

    fn space(&self) -> AddressSpace {
        AddressSpace { id: SPACE_ID, root: self.tables.root, mair: CPU_MAIR }
    }

    fn write(&self, va: u64, data: &[u8]) -> Result<(), Option<EventType>> {
        self.model.dma_write(STREAM, None, va, data).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn read(&self, va: u64, len: usize) -> Result<Vec<u8>, Option<EventType>> {
        self.model.dma_read(STREAM, None, va, len).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn frame(&self, phys: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(phys, len).expect("inside memory")
    }
}

#[test]
fn a_bound_process_is_reached_at_its_own_virtual_addresses_and_nowhere_else() {
    let mut rig = Rig::new();
    let space = rig.space();
    rig.memory.write_bytes(rig.read_only, b"the process wrote this").unwrap();
    assert!(rig.write(BUFFER, b"x").is_err(), "unbound, the stream is blocked");

    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");

    rig.write(BUFFER + 0x10, b"through the process's table").expect("write to a writable page");
    assert_eq!(rig.frame(rig.buffer + 0x10, 27), b"through the process's table");
    assert_eq!(rig.read(READ_ONLY, 22).expect("read"), b"the process wrote this");
    assert_eq!(rig.write(READ_ONLY, b"x"), Err(Some(EventType::Permission)), "a read-only page took a write");
    assert_eq!(rig.write(UNMAPPED, b"x"), Err(Some(EventType::Translation)), "a page the process never mapped");
    assert_eq!(rig.write(NOT_ACCESSED, b"x"), Err(Some(EventType::Access)), "AF = 0 must fault (CD.AFFD = 0)");
    assert_eq!(rig.read(KERNEL, 8), Err(Some(EventType::Translation)), "a kernel address was reached through the binding");

    rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED).expect("sva_unbind");
    assert!(rig.write(BUFFER, b"late").is_err(), "unbound, the device still reaches the process");
    let pasid = rig.server.pasid_alloc(CLIENT).expect("pasid_alloc");
    assert_eq!(rig.server.sva_bind(CLIENT, rig.device, pasid, space, None), Err(Error::NotSupported), "no substreams");
}

/// The kernel holds an unmapped frame until the server acknowledges its record; the server
/// acknowledges only after TLBI_NH_VA and CMD_SYNC, so the frame's next owner is out of reach.
#[test]
fn an_unmapped_frame_is_reused_only_after_the_invalidation() {
    let mut rig = Rig::new();
    let space = rig.space();
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");
    rig.write(BUFFER, b"cached").expect("a write that fills the TLB");
    rig.tables.unmap(BUFFER);
    rig.write(BUFFER, b"stale").expect("the SMMU answers from its TLB until told otherwise");
    let commands = rig.model.executed_commands().len();

    let device_after_reuse = Cell::new(None);
    let (memory, frame, model) = (rig.memory.clone(), rig.buffer, rig.model);
    let change = AddressSpaceChange::Shrunk { iova: BUFFER, length: PAGE };
    let bindings = rig.server.address_space_record(SPACE_ID, change, || {
        // The acknowledgement: the kernel gives the frame to its next owner, and the device
        // writes at the old address right then.
        memory.write_bytes(frame, b"the next owner's canary").unwrap();
        device_after_reuse.set(Some(model.dma_write(STREAM, None, BUFFER, b"stale").map_err(|a| a.event.map(|e| e.event_type()))));
    });

    assert_eq!(bindings, 1);
    assert_eq!(device_after_reuse.get(), Some(Err(Some(EventType::Translation))), "the device wrote the frame after it was reused");
    assert_eq!(rig.frame(frame, 23), b"the next owner's canary");
    let issued: Vec<u8> = rig.model.executed_commands()[commands..].iter().map(|command| command.opcode() as u8).collect();
    assert_eq!(issued, [opcode::TLBI_NH_VA, opcode::SYNC], "TLBI_NH_VA of the page, then CMD_SYNC");
}

#[test]
fn the_process_ending_blocks_the_stream() {
    let mut rig = Rig::new();
    let space = rig.space();
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");
    rig.write(BUFFER, b"cached").expect("bound");

    assert_eq!(rig.server.address_space_record(SPACE_ID, AddressSpaceChange::Gone, || {}), 1);

    assert!(rig.write(BUFFER, b"late").is_err(), "the device reaches a process that ended");
    assert_eq!(rig.frame(rig.buffer, 6), b"cached");
    assert_eq!(rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED), Err(Error::NotAttached), "the binding is gone");
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind again");
    rig.write(BUFFER, b"again").expect("bound again");
}

/// The backend refuses a substream binding on a unit without substreams (QEMU's SMMU: one CD
/// per stream) rather than bind the whole stream.
#[test]
fn substreams_are_refused() {
    let mut rig = Rig::new();
    let space = rig.space();
    let backend = rig.server.backend_mut();
    assert_eq!(backend.attach(UnitId(0), RequesterId(DEVICE), Some(1), Translation::ProcessAddressSpace(space)), Err(Error::NotSupported));
    assert!(rig.write(BUFFER, b"x").is_err(), "the stream stayed blocked");
}

/// QEMU's SMMU plus 8-bit SubstreamIDs (IDR1.SSIDSIZE, bits 10:6), and two-level CD tables
/// (IDR0.CD2L, bit 19) if asked.
fn smmu_with_substreams(two_level: bool) -> ModelConfig {
    let mut config = ModelConfig::qemu();
    config.idr[1] |= 8 << 6;
    if two_level {
        config.idr[0] |= 1 << 19;
    }
    config
}

impl Rig {
    fn with_substreams(two_level: bool) -> Rig {
        Rig::on(smmu_with_substreams(two_level), 8)
    }

    fn write_tagged(&self, pasid: u32, va: u64, data: &[u8]) -> Result<(), Option<EventType>> {
        self.model.dma_write(STREAM, Some(pasid), va, data).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn read_tagged(&self, pasid: u32, va: u64, len: usize) -> Result<Vec<u8>, Option<EventType>> {
        self.model.dma_read(STREAM, Some(pasid), va, len).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    /// Two PASIDs: the first allocated, and one past 64 (in another leaf of a two-level table).
    fn two_pasids(&mut self) -> (u32, u32) {
        let first = self.server.pasid_alloc(CLIENT).expect("pasid_alloc");
        let mut second = self.server.pasid_alloc(CLIENT).expect("pasid_alloc");
        while second < 70 {
            second = self.server.pasid_alloc(CLIENT).expect("pasid_alloc");
        }
        (first, second)
    }

    fn opcodes_since(&self, commands: usize) -> Vec<u8> {
        self.model.executed_commands()[commands..].iter().map(|command| command.opcode() as u8).collect()
    }
}

#[test]
fn a_bound_process_is_reached_at_a_substream_and_unbinding_blocks_that_substream_only() {
    for two_level in [false, true] {
        let mut rig = Rig::with_substreams(two_level);
        let space = rig.space();
        // The same tables under another watch, as a second binding of the process.
        let again = AddressSpace { id: SPACE_ID + 1, ..space };
        let (first, second) = rig.two_pasids();
        rig.memory.write_bytes(rig.read_only, b"the process wrote this").unwrap();

        rig.server.sva_bind(CLIENT, rig.device, first, space, None).expect("sva_bind at a PASID");
        rig.server.sva_bind(CLIENT, rig.device, second, again, None).expect("sva_bind at a PASID in another CD leaf");

        assert!(rig.write(BUFFER, b"x").is_err(), "untagged DMA reached the process bound at PASIDs only (two-level: {two_level})");
        rig.write_tagged(first, BUFFER + 0x10, b"through the process's table").expect("tagged write");
        assert_eq!(rig.frame(rig.buffer + 0x10, 27), b"through the process's table");
        assert_eq!(rig.read_tagged(second, READ_ONLY, 22).expect("tagged read"), b"the process wrote this");
        assert_eq!(rig.write_tagged(first, READ_ONLY, b"x"), Err(Some(EventType::Permission)), "a read-only page took a write");
        assert_eq!(rig.write_tagged(first, UNMAPPED, b"x"), Err(Some(EventType::Translation)));
        assert_eq!(rig.read_tagged(second, KERNEL, 8), Err(Some(EventType::Translation)), "a kernel address through a substream (EPD1 = 1)");
        assert_eq!(rig.write_tagged(first + 1, BUFFER, b"x"), Err(Some(EventType::BadCd)), "an unbound PASID");

        // Unbinding: the CD is made invalid (CFGI_CD) before its ASID is invalidated.
        let commands = rig.model.executed_commands().len();
        rig.server.sva_unbind(CLIENT, rig.device, first).expect("sva_unbind");
        assert_eq!(rig.opcodes_since(commands), [opcode::CFGI_CD, opcode::SYNC, opcode::TLBI_NH_ASID, opcode::SYNC]);
        assert_eq!(rig.write_tagged(first, BUFFER, b"late"), Err(Some(EventType::BadCd)), "the unbound PASID still walks the process");
        rig.write_tagged(second, BUFFER, b"other").expect("the other PASID stays bound");
        assert_eq!(rig.frame(rig.buffer, 5), b"other");

        // Untagged DMA binds at CD 0 of the same table, beside the PASID.
        rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("untagged sva_bind on a unit with substreams");
        rig.write(BUFFER, b"plain").expect("untagged write");
        rig.write_tagged(second, BUFFER + 5, b"tagged").expect("the PASID survived CD 0 changing");
        assert_eq!(rig.frame(rig.buffer, 11), b"plaintagged");
        rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED).expect("untagged sva_unbind");
        assert!(rig.write(BUFFER, b"late").is_err(), "untagged DMA after its unbind");
        rig.write_tagged(second, BUFFER, b"still").expect("the PASID survived the untagged unbind");

        // The process's end blocks every binding of it.
        assert_eq!(rig.server.address_space_record(SPACE_ID + 1, AddressSpaceChange::Gone, || {}), 1);
        assert_eq!(rig.write_tagged(second, BUFFER, b"late"), Err(Some(EventType::BadCd)));
    }
}

/// Two bindings of the process's tables at two PASIDs (two watches, two ASIDs), both cached;
/// the process unmaps a page. The record of one watch is invalidated under its ASID before the
/// acknowledgement (a write after the frame's reuse faults), and under its ASID only: the
/// other binding answers from its TLB until its own record arrives.
#[test]
fn an_unmap_at_a_substream_is_invalidated_under_its_asid_before_the_acknowledgement() {
    for two_level in [false, true] {
        let mut rig = Rig::with_substreams(two_level);
        let space = rig.space();
        let again = AddressSpace { id: SPACE_ID + 1, ..space };
        let (first, second) = rig.two_pasids();
        rig.server.sva_bind(CLIENT, rig.device, first, space, None).expect("sva_bind");
        rig.server.sva_bind(CLIENT, rig.device, second, again, None).expect("sva_bind");
        rig.write_tagged(first, BUFFER, b"cached").expect("fills the TLB under the first ASID");
        rig.write_tagged(second, BUFFER, b"cached").expect("fills the TLB under the second ASID");
        rig.tables.unmap(BUFFER);
        rig.write_tagged(first, BUFFER, b"stale").expect("the SMMU answers from its TLB until told otherwise");

        let commands = rig.model.executed_commands().len();
        let after_reuse = Cell::new(None);
        let (memory, frame, model) = (rig.memory.clone(), rig.buffer, rig.model);
        let change = AddressSpaceChange::Shrunk { iova: BUFFER, length: PAGE };
        let bindings = rig.server.address_space_record(SPACE_ID, change, || {
            memory.write_bytes(frame, b"the next owner's canary").unwrap();
            after_reuse.set(Some(model.dma_write(STREAM, Some(first), BUFFER, b"stale").map_err(|a| a.event.map(|e| e.event_type()))));
        });

        assert_eq!(bindings, 1);
        assert_eq!(after_reuse.get(), Some(Err(Some(EventType::Translation))), "the device wrote the frame after it was reused (two-level: {two_level})");
        assert_eq!(rig.frame(frame, 23), b"the next owner's canary");
        assert_eq!(rig.opcodes_since(commands), [opcode::TLBI_NH_VA, opcode::SYNC]);
        // The second watch's record has not been processed: its ASID's entry is still there.
        assert_eq!(rig.read_tagged(second, BUFFER, 3), Ok(b"the".to_vec()), "the invalidation was not scoped to the binding's ASID");
        rig.server.address_space_record(SPACE_ID + 1, change, || {});
        assert_eq!(rig.read_tagged(second, BUFFER, 3), Err(Some(EventType::Translation)));
    }
}

/// The deliberately reordered variant of the test above: the frame is reused (the
/// acknowledgement) before the substream's invalidation. The device then writes into the next
/// owner's frame, which is what the test above checks cannot happen.
#[test]
fn acknowledging_before_the_substream_invalidation_lets_the_device_write_the_reused_frame() {
    let mut rig = Rig::with_substreams(false);
    let space = rig.space();
    let (first, _) = rig.two_pasids();
    rig.server.sva_bind(CLIENT, rig.device, first, space, None).expect("sva_bind");
    rig.write_tagged(first, BUFFER, b"cached").expect("fills the TLB");
    rig.tables.unmap(BUFFER);

    rig.memory.write_bytes(rig.buffer, b"the next owner's canary").unwrap();
    let late = rig.write_tagged(first, BUFFER, b"stale");
    rig.server.backend_mut().invalidate_address_space(UnitId(0), RequesterId(DEVICE), Some(first), BUFFER, PAGE);

    assert_eq!(late, Ok(()), "the reordered variant must expose the stale TLB entry");
    assert_eq!(rig.frame(rig.buffer, 5), b"stale", "the next owner's canary was overwritten");
    assert_eq!(rig.write_tagged(first, BUFFER, b"x"), Err(Some(EventType::Translation)), "after the invalidation");
}
