//! Two VT-d units and two SMMUs, each pair under one backend and one object model (the
//! machines QEMU 10.0.2 cannot build: it has one unit per machine). The two devices carry the
//! same requester ID, one behind each unit (two PCI segments, or two root complexes), so
//! anything that names a device by its requester ID alone is caught:
//! - each device is attached to a domain on its own unit, never through the other;
//! - one IOAS with a device on each unit mirrors every map into both units' domains (also the
//!   mappings made before the second domain existed), and every unmap out of both;
//! - each unit's faults reach the queue of the device behind that unit, named by its handle.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use hwio::DmaAllocator;
use iommu_abi::{Access, Error, FaultReason, FaultRecord, Handle, IovaChoice, Perm};
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_backends::testing::{read_faults, SmmuModelEnv, VtdModelEnv};
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::fake::{FakeMemory as FakeKernel, FakeObject};
use iommu_core::{ClientId, DeviceGrant, HwptAllocOptions, IommuBackend, MemoryObjectId, ObjectModel, RequesterId, ServerConfig, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel};
use vtd::model::{qemu, FakeDma, PhysMemory, VtdModel};

const DRIVER: ClientId = ClientId(1);
/// The driver's memory capability: four pages.
const MEM: u64 = 100;
const PAGE: u64 = 4096;
const MEM_SIZE: u64 = 4 * PAGE;
/// The requester ID of both devices: 00:03.0 behind each unit.
const DEVICE: u16 = 0x0018;
const IOVA: u64 = 0x4000_0000;
const UNITS: [UnitId; 2] = [UnitId(0), UnitId(1)];

/// What a rig's device on unit `unit` does: a DMA write or read at `iova`, `Err` when it faults.
trait Devices {
    fn write(&self, unit: usize, iova: u64, data: &[u8]) -> Result<(), ()>;
    fn read(&self, unit: usize, iova: u64, len: usize) -> Result<Vec<u8>, ()>;
    /// The driver's memory, as the CPU sees it.
    fn memory(&self, offset: u64, len: usize) -> Vec<u8>;
}

/// The same scenario on either architecture: the driver binds one device per unit.
struct Scenario<B: IommuBackend> {
    server: ObjectModel<B, FakeKernel>,
    devices: [Handle; 2],
    faults: [Handle; 2],
}

impl<B: IommuBackend> Scenario<B> {
    fn new(backend: B, memory_phys: u64) -> Self {
        let mut kernel = FakeKernel::new(Rc::new(RefCell::new(Vec::new())));
        kernel.add_object(MEM, FakeObject { id: MemoryObjectId(1), owner: DRIVER, size: MEM_SIZE, writable: true, phys_base: memory_phys, scattered: false });
        let mut server = ObjectModel::new(backend, kernel, ServerConfig::default());
        assert!(server.open_client(DRIVER));
        let devices = UNITS.map(|unit| server.device_bind(DRIVER, DeviceGrant { unit, rid: RequesterId(DEVICE.into()), pasid_bits: 0 }).expect("bind"));
        let faults = UNITS.map(|_| server.fault_alloc(DRIVER).expect("fault queue"));
        Scenario { server, devices, faults }
    }

    fn drain(&mut self, unit: UnitId) -> usize {
        self.server.drain_faults(unit, &mut |_, _| {})
    }

    fn faults_of(&mut self, index: usize) -> Vec<FaultRecord> {
        read_faults(&mut self.server, DRIVER, self.faults[index], 8)
    }

    /// The whole walk, on whichever pair of units `dma` reaches.
    fn run(&mut self, dma: &impl Devices) {
        let ioas = self.server.ioas_alloc(DRIVER).expect("IOAS");
        let hwpt0 = self.server.hwpt_alloc(DRIVER, self.devices[0], ioas, HwptAllocOptions { fault: Some(self.faults[0]), ..Default::default() }).expect("HWPT on unit 0");

        // A device is attached only through its own unit: unit 1's device refuses unit 0's
        // domain, and attaching unit 0's device leaves the device behind unit 1 blocked.
        assert_eq!(self.server.device_attach(DRIVER, self.devices[1], hwpt0, None), Err(Error::IncompatibleUnit));
        self.server.device_attach(DRIVER, self.devices[0], hwpt0, None).expect("attach on unit 0");
        let first = self.server.ioas_map(DRIVER, ioas, MEM, 0, PAGE, IovaChoice::Fixed(IOVA), Perm::READ_WRITE).expect("map");
        dma.write(0, first, b"unit 0, first page").expect("unit 0's device reaches its domain");
        assert_eq!(dma.memory(0, 18), b"unit 0, first page");
        assert_eq!(dma.write(1, first, b"x"), Err(()), "the device behind unit 1 went through unit 0's attachment");
        // A blocked device's fault is unit 1's, and reaches no queue (none is attached there).
        let unrouted = self.server.unrouted_faults();
        assert_eq!(self.drain(UNITS[0]), 0, "unit 0 reported the fault of the device behind unit 1");
        assert_eq!(self.drain(UNITS[1]), 1);
        assert_eq!(self.server.unrouted_faults(), unrouted + 1);
        assert!(self.faults_of(0).is_empty(), "a fault on unit 1 went to unit 0's device");

        // The second unit's domain mirrors what the IOAS already holds, then every new map.
        let hwpt1 = self.server.hwpt_alloc(DRIVER, self.devices[1], ioas, HwptAllocOptions { fault: Some(self.faults[1]), ..Default::default() }).expect("HWPT on unit 1");
        assert_eq!(self.server.device_attach(DRIVER, self.devices[0], hwpt1, None), Err(Error::IncompatibleUnit));
        assert_eq!(self.server.device_replace(DRIVER, self.devices[0], hwpt1, None), Err(Error::IncompatibleUnit));
        self.server.device_attach(DRIVER, self.devices[1], hwpt1, None).expect("attach on unit 1");
        assert_eq!(dma.read(1, first, 18), Ok(b"unit 0, first page".to_vec()), "the existing mapping is not in unit 1's domain");
        let second = self.server.ioas_map(DRIVER, ioas, MEM, PAGE, PAGE, IovaChoice::Fixed(IOVA + PAGE), Perm::READ_WRITE).expect("map");
        dma.write(0, second, b"unit 0, second").expect("unit 0 after the second map");
        dma.write(1, second + 0x100, b"unit 1, second").expect("unit 1 after the second map");
        assert_eq!(dma.memory(PAGE, 14), b"unit 0, second");
        assert_eq!(dma.memory(PAGE + 0x100, 14), b"unit 1, second");

        // An unmap leaves neither unit translating: each faults, and each fault reaches the
        // queue of the device behind the unit that reported it (VT-d records the page only).
        self.server.ioas_unmap(DRIVER, ioas, first, PAGE).expect("unmap");
        assert_eq!(dma.write(0, first, b"late"), Err(()), "unit 0 still translates an unmapped page");
        assert_eq!(dma.read(1, first + 8, 4), Err(()), "unit 1 still translates an unmapped page");
        assert_eq!(dma.memory(0, 18), b"unit 0, first page");
        assert_eq!(self.drain(UNITS[1]), 1);
        assert!(self.faults_of(0).is_empty(), "unit 1's fault went to unit 0's device");
        let unit1 = self.faults_of(1);
        assert_eq!(
            unit1.iter().map(|f| (f.device, f.iova & !(PAGE - 1), f.access, f.reason)).collect::<Vec<_>>(),
            [(self.devices[1], first, Access::READ, FaultReason::Translation)]
        );
        assert_eq!(self.drain(UNITS[0]), 1);
        let unit0 = self.faults_of(0);
        assert_eq!(
            unit0.iter().map(|f| (f.device, f.iova, f.access, f.reason)).collect::<Vec<_>>(),
            [(self.devices[0], first, Access::WRITE, FaultReason::Translation)]
        );
        assert!(self.faults_of(1).is_empty());

        // The other mapping is untouched on both units.
        assert_eq!(dma.read(0, second + 0x100, 14), Ok(b"unit 1, second".to_vec()));
        assert_eq!(dma.read(1, second, 14), Ok(b"unit 0, second".to_vec()));

        // Closing the client blocks both devices, each on its own unit.
        self.server.close_client(DRIVER).expect("close");
        assert_eq!(dma.write(0, second, b"x"), Err(()));
        assert_eq!(dma.write(1, second, b"x"), Err(()));
    }
}

struct VtdPair {
    models: [&'static VtdModel; 2],
    memory: Rc<PhysMemory>,
    driver_memory: u64,
}

impl Devices for VtdPair {
    fn write(&self, unit: usize, iova: u64, data: &[u8]) -> Result<(), ()> {
        self.models[unit].dma_write(vtd::RequesterId(DEVICE), None, iova, data).map_err(drop)
    }
    fn read(&self, unit: usize, iova: u64, len: usize) -> Result<Vec<u8>, ()> {
        self.models[unit].dma_read(vtd::RequesterId(DEVICE), None, iova, len).map_err(drop)
    }
    fn memory(&self, offset: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(self.driver_memory + offset, len).expect("inside memory")
    }
}

#[test]
fn two_vtd_units_each_translate_their_own_device() {
    for ecap in [qemu::ECAP_LEGACY, qemu::ECAP_SCALABLE] {
        let memory = PhysMemory::new(0x1000_0000, 16 << 20);
        let models = [0, 1].map(|_| &*Box::leak(Box::new(VtdModel::new(memory.clone(), qemu::CAP, ecap))));
        let mut backend = VtdBackend::<VtdModelEnv>::new(FakeDma::new(memory.clone()));
        for model in models {
            let unit = Unit::bring_up(model, vtd::model::StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
            backend.units.push(unit);
        }
        let driver_memory = backend.dma.alloc_zeroed(MEM_SIZE as usize, PAGE as usize).expect("driver memory").phys;
        let pair = VtdPair { models, memory, driver_memory };
        Scenario::new(backend, driver_memory).run(&pair);
    }
}

const SMMU_MEMORY: u64 = 0x4000_0000;
/// The backend's tables and queues live below this; the driver's memory above.
const SMMU_TABLES_END: u64 = SMMU_MEMORY + (16 << 20);
/// Each SMMU's StreamID for the device behind it (each root complex has its own ID map).
const STREAMS: [u32; 2] = [0x0118, 0x0218];

struct SmmuPair {
    models: [&'static SmmuModel; 2],
    memory: Rc<FakeMemory>,
}

impl Devices for SmmuPair {
    fn write(&self, unit: usize, iova: u64, data: &[u8]) -> Result<(), ()> {
        self.models[unit].dma_write(STREAMS[unit], None, iova, data).map_err(drop)
    }
    fn read(&self, unit: usize, iova: u64, len: usize) -> Result<Vec<u8>, ()> {
        self.models[unit].dma_read(STREAMS[unit], None, iova, len).map_err(drop)
    }
    fn memory(&self, offset: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(SMMU_TABLES_END + offset, len).expect("inside memory")
    }
}

#[test]
fn two_smmus_each_translate_their_own_device() {
    for stage in [DomainStage::Stage1, DomainStage::Stage2] {
        let memory = FakeMemory::new(SMMU_MEMORY, 24 << 20);
        let models = [0, 1].map(|_| &*Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu()))));
        let dma = ModelDma::in_range(memory.clone(), SMMU_MEMORY, SMMU_TABLES_END);
        let mut backend = SmmuBackend::<SmmuModelEnv>::new(dma, smmuv3::model::StepClock::new(1_000));
        for (index, (model, base)) in models.into_iter().zip([0x0905_0000, 0x0915_0000]).enumerate() {
            let unit = backend.add_unit(model, base, stage, BTreeMap::from([(u32::from(DEVICE), STREAMS[index])])).expect("bring-up");
            assert_eq!(unit, index);
        }
        let pair = SmmuPair { models, memory };
        Scenario::new(backend, SMMU_TABLES_END).run(&pair);
    }
}
