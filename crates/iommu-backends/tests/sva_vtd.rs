//! Shared virtual addressing on the VT-d backend against the `vtd` crate's software unit with
//! first-level translation (QEMU's `x-flts=on`): a process's own x86-64 tables, bound through
//! the object model, are walked at its virtual addresses; the kernel half (U/S = 0) is not
//! reachable; a process's unmap is invalidated before the kernel's record is acknowledged, so
//! a frame reused after the acknowledgement is out of the device's reach; PASID-tagged DMA
//! (model-tested: no QEMU device issues it) reaches the address space bound at its PASID only.

use std::cell::Cell;

use hwio::DmaAllocator;
use iommu_abi::wire::SVA_UNTAGGED;
use iommu_abi::{Error, UnitCaps};
use iommu_backends::testing::VtdModelEnv as Model;
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::fake::FakeMemory;
use iommu_core::{AddressSpace, AddressSpaceChange, ClientId, DeviceGrant, IommuBackend, ObjectModel, RequesterId, ServerConfig, UnitId};
use vtd::model::{qemu, FakeDma, PhysMemory, StepClock, TableFormat, TestPageTable, VtdModel};


const MEMORY_BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
/// The device under test, 00:03.0.
const DEVICE: u16 = 0x0018;
const CLIENT: ClientId = ClientId(1);
/// Virtual addresses of the bound process: a writable page, a read-only one, one never mapped.
const BUFFER: u64 = 0x40_0000;
const READ_ONLY: u64 = BUFFER + PAGE;
const UNMAPPED: u64 = BUFFER + 2 * PAGE;
/// A kernel-half address every process maps (PML4 slot 256), supervisor-only.
const KERNEL: u64 = 0xffff_8000_0010_0000;
/// The kernel's name for the bound address space.
const SPACE_ID: u64 = 42;

/// What the kernel would hand the server for the process: its tables (user half U/S = 1,
/// kernel half shared and U/S = 0) and the frames behind them.
struct Process {
    tables: TestPageTable,
    buffer: u64,
    read_only: u64,
    kernel_frame: u64,
}

struct Rig {
    server: ObjectModel<VtdBackend<Model>, FakeMemory>,
    model: &'static VtdModel,
    memory: std::rc::Rc<PhysMemory>,
    process: Process,
    device: iommu_abi::Handle,
}

impl Rig {
    fn new(ecap: u64) -> Rig {
        let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), qemu::CAP_FLTS, ecap)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory.clone()));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        assert!(backend.unit_info(UnitId(0)).expect("unit").caps.contains(UnitCaps::SVA), "a first-level unit offers SVA");
        let process = Self::process(&mut backend.dma);
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut server = ObjectModel::new(backend, FakeMemory::new(log), ServerConfig::default());
        assert!(server.open_client(CLIENT));
        let device = server.device_bind(CLIENT, DeviceGrant { unit: UnitId(0), rid: RequesterId(DEVICE.into()), pasid_bits: 20 }).expect("bind");
        Rig { server, model, memory, process, device }
    }

    fn process(dma: &mut FakeDma) -> Process {
        let mut frame = || dma.alloc_zeroed(PAGE as usize, PAGE as usize).expect("memory").phys;
        let (buffer, read_only, kernel_frame) = (frame(), frame(), frame());
        let mut tables = TestPageTable::new(dma, TableFormat::FirstLevel, 4);
        tables.map_4k(dma, BUFFER, buffer, true);
        tables.map_4k(dma, READ_ONLY, read_only, false);
        // The kernel half: a supervisor-only table tree whose top entry every process shares.
        let mut kernel = TestPageTable::new(dma, TableFormat::FirstLevel, 4).supervisor_only();
        kernel.map_4k(dma, KERNEL, kernel_frame, true);
        let slot = (KERNEL >> 39 & 0x1ff) * 8;
        let shared = dma.memory().read_u64(kernel.root() + slot).expect("inside memory");
        dma.memory().write_u64(tables.root() + slot, shared).expect("inside memory");
        Process { tables, buffer, read_only, kernel_frame }
    }

    fn space(&self) -> AddressSpace {
        AddressSpace { id: SPACE_ID, root: self.process.tables.root(), mair: 0 }
    }

    fn write(&self, pasid: Option<u32>, va: u64, data: &[u8]) -> Result<(), u8> {
        self.model.dma_write(vtd::RequesterId(DEVICE), pasid, va, data)
    }

    fn read(&self, pasid: Option<u32>, va: u64, len: usize) -> Result<Vec<u8>, u8> {
        self.model.dma_read(vtd::RequesterId(DEVICE), pasid, va, len)
    }

    fn frame(&self, phys: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(phys, len).expect("inside memory")
    }
}

#[test]
fn a_bound_process_is_reached_at_its_own_virtual_addresses_and_nowhere_else() {
    let mut rig = Rig::new(qemu::ECAP_FLTS);
    let space = rig.space();
    rig.memory.write_bytes(rig.process.read_only, b"the process wrote this").unwrap();
    assert!(rig.write(None, BUFFER, b"x").is_err(), "unbound, the device is blocked");

    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");

    rig.write(None, BUFFER + 0x10, b"through the process's tables").expect("write to a writable page");
    assert_eq!(rig.frame(rig.process.buffer + 0x10, 28), b"through the process's tables");
    assert_eq!(rig.read(None, READ_ONLY, 22).expect("read"), b"the process wrote this");
    assert_eq!(rig.write(None, READ_ONLY, b"x"), Err(0x85), "a read-only page took a write");
    assert_eq!(rig.write(None, UNMAPPED, b"x"), Err(0x71), "a page the process never mapped");
    assert_eq!(rig.read(None, KERNEL, 8), Err(0x81), "a kernel-half address (U/S = 0) was reached");
    assert_eq!(rig.write(None, KERNEL, b"x"), Err(0x81));
    assert_eq!(rig.frame(rig.process.kernel_frame, 1), [0]);

    rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED).expect("sva_unbind");
    assert!(rig.write(None, BUFFER, b"late").is_err(), "unbound, the device still reaches the process");
    assert_eq!(rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED), Err(Error::NotAttached));
}

/// The kernel holds an unmapped frame until the server acknowledges its record; the server
/// acknowledges only after the unit dropped the cached translation, so the frame's next owner
/// is out of the device's reach.
#[test]
fn an_unmapped_frame_is_reused_only_after_the_invalidation() {
    let mut rig = Rig::new(qemu::ECAP_FLTS);
    let space = rig.space();
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");
    rig.write(None, BUFFER, b"cached").expect("a write that fills the IOTLB");

    // The process unmaps the page; the kernel clears the entry and reports it.
    rig.process.tables.unmap_4k(&FakeDma::new(rig.memory.clone()), BUFFER);
    let invalidations = rig.model.invalidations().len();
    let device_after_reuse = Cell::new(None);
    let (memory, frame, model) = (rig.memory.clone(), rig.process.buffer, rig.model);
    let change = AddressSpaceChange::Shrunk { iova: BUFFER, length: PAGE };
    let bindings = rig.server.address_space_record(SPACE_ID, change, || {
        // The acknowledgement: the kernel gives the frame to its next owner, and the device,
        // which runs on its own, writes at the old address right then.
        memory.write_bytes(frame, b"the next owner's canary").unwrap();
        device_after_reuse.set(Some(model.dma_write(vtd::RequesterId(DEVICE), None, BUFFER, b"stale")));
    });

    assert_eq!(bindings, 1);
    assert!(rig.model.invalidations().len() > invalidations, "the record was acknowledged without an invalidation");
    assert_eq!(device_after_reuse.get(), Some(Err(0x71)), "the device wrote the frame after it was reused");
    assert_eq!(rig.frame(frame, 23), b"the next owner's canary");
    assert_eq!(rig.write(None, BUFFER, b"stale"), Err(0x71));
}

/// Why the order matters: the unit keeps the translation it cached after the process's entry
/// is gone, so a frame reused before the invalidation is written by the device.
#[test]
fn without_the_invalidation_the_unit_still_reaches_the_unmapped_frame() {
    let mut rig = Rig::new(qemu::ECAP_FLTS);
    let space = rig.space();
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");
    rig.write(None, BUFFER, b"cached").expect("a write that fills the IOTLB");
    rig.process.tables.unmap_4k(&FakeDma::new(rig.memory.clone()), BUFFER);
    rig.write(None, BUFFER, b"stale").expect("the unit answers from its IOTLB");
    assert_eq!(rig.frame(rig.process.buffer, 5), b"stale");
}

#[test]
fn the_process_ending_blocks_the_device() {
    let mut rig = Rig::new(qemu::ECAP_FLTS);
    let space = rig.space();
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind");
    rig.write(None, BUFFER, b"cached").expect("bound");

    assert_eq!(rig.server.address_space_record(SPACE_ID, AddressSpaceChange::Gone, || {}), 1);

    assert!(rig.write(None, BUFFER, b"late").is_err(), "the device reaches a process that ended");
    assert_eq!(rig.server.sva_unbind(CLIENT, rig.device, SVA_UNTAGGED), Err(Error::NotAttached), "the binding is gone");
    // The domain-id came back: binding again works.
    rig.server.sva_bind(CLIENT, rig.device, SVA_UNTAGGED, space, None).expect("sva_bind again");
    rig.write(None, BUFFER, b"again").expect("bound again");
}

/// PASID-tagged DMA (model-tested: QEMU's devices issue none) on a unit with ECAP.PASID:
/// each PASID reaches the address space bound at it; the untagged DMA stays blocked.
#[test]
fn a_tagged_pasid_reaches_its_own_address_space_only() {
    let mut rig = Rig::new(qemu::ECAP_FLTS | qemu::ECAP_PASID);
    let space = rig.space();
    let other = Rig::process(&mut rig.server.backend_mut().dma);
    let other_space = AddressSpace { id: SPACE_ID + 1, root: other.tables.root(), mair: 0 };
    let unit = UnitId(0);
    let rid = RequesterId(DEVICE.into());
    rig.server.backend_mut().attach(unit, rid, Some(5), iommu_core::Translation::ProcessAddressSpace(space)).expect("bind at PASID 5");
    rig.server.backend_mut().attach(unit, rid, Some(6), iommu_core::Translation::ProcessAddressSpace(other_space)).expect("bind at PASID 6");

    rig.write(Some(5), BUFFER, b"five").expect("PASID 5");
    rig.write(Some(6), BUFFER, b"six").expect("PASID 6");
    assert_eq!(rig.frame(rig.process.buffer, 4), b"five");
    assert_eq!(rig.frame(other.buffer, 3), b"six");
    assert!(rig.write(None, BUFFER, b"x").is_err(), "untagged DMA reached a PASID's address space");
    assert!(rig.write(Some(7), BUFFER, b"x").is_err(), "an unbound PASID reached memory");
    assert_eq!(rig.read(Some(5), KERNEL, 1), Err(0x81), "the kernel half through a PASID");

    // An unmap in PASID 5's process is invalidated for that PASID.
    rig.process.tables.unmap_4k(&FakeDma::new(rig.memory.clone()), BUFFER);
    rig.server.backend_mut().invalidate_address_space(unit, rid, Some(5), BUFFER, PAGE);
    assert_eq!(rig.write(Some(5), BUFFER, b"x"), Err(0x71));
    rig.write(Some(6), BUFFER, b"still six").expect("the other PASID is untouched");

    rig.server.backend_mut().block(unit, rid, Some(6));
    assert!(rig.write(Some(6), BUFFER, b"x").is_err(), "PASID 6 unbound");
}

/// A unit without first-level translation cannot walk a process's tables.
#[test]
fn a_second_level_unit_offers_no_sva() {
    let memory = PhysMemory::new(MEMORY_BASE, 16 << 20);
    let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(memory.clone(), qemu::CAP, qemu::ECAP_SCALABLE)));
    let mut backend = VtdBackend::<Model>::new(FakeDma::new(memory));
    let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
    backend.units.push(unit);
    assert!(!backend.unit_info(UnitId(0)).unwrap().caps.contains(UnitCaps::SVA));
    let space = AddressSpace { id: 1, root: MEMORY_BASE, mair: 0 };
    assert_eq!(backend.attach(UnitId(0), RequesterId(DEVICE.into()), None, iommu_core::Translation::ProcessAddressSpace(space)), Err(Error::NotSupported));
}
