//! DMA tagged with a PASID on SMMUv3 (against the `smmuv3` model with substreams, which QEMU
//! 10.0.2 lacks), through the object model: the requester's own domain serves untagged DMA
//! (CD 0), each attached PASID its own domain (its CD), with linear and two-level CD tables.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use iommu_abi::{Handle, IovaChoice, Perm, UnitCaps};
use iommu_backends::testing::SmmuModelEnv as Model;
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::fake::{FakeMemory as FakeKernel, FakeObject};
use iommu_core::{ClientId, DeviceGrant, HwptAllocOptions, MemoryObjectId, ObjectModel, RequesterId, ServerConfig, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, SmmuModel, StepClock};
use smmuv3::EventType;


const MEMORY_BASE: u64 = 0x4000_0000;
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const DRIVER: ClientId = ClientId(1);
const MEM: u64 = 100;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

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

struct Rig {
    server: ObjectModel<SmmuBackend<Model>, FakeKernel>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    device: Handle,
}

impl Rig {
    fn new(two_level: bool) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), smmu_with_substreams(two_level))));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        let mut kernel = FakeKernel::new(Rc::new(RefCell::new(Vec::new())));
        kernel.add_object(MEM, FakeObject { id: MemoryObjectId(1), owner: DRIVER, size: 0x1_0000, writable: true, phys_base: TABLES_END, scattered: false });
        let mut server = ObjectModel::new(backend, kernel, ServerConfig::default());
        assert!(server.open_client(DRIVER));
        let device = server.device_bind(DRIVER, DeviceGrant { unit: UnitId(0), rid: RequesterId(DEVICE), pasid_bits: 8 }).expect("bind");
        Rig { server, model, memory, device }
    }

    /// An HWPT of a fresh IOAS mapping page `page` of the driver's memory at IOVA.
    fn domain_with_page(&mut self, page: u64) -> Handle {
        let ioas = self.server.ioas_alloc(DRIVER).unwrap();
        self.server.ioas_map(DRIVER, ioas, MEM, page * PAGE, PAGE, IovaChoice::Fixed(IOVA), Perm::READ_WRITE).unwrap();
        self.server.hwpt_alloc(DRIVER, self.device, ioas, HwptAllocOptions::default()).unwrap()
    }

    fn write(&self, ssid: Option<u32>, data: &[u8]) -> Result<(), Option<EventType>> {
        self.model.dma_write(STREAM, ssid, IOVA, data).map_err(|aborted| aborted.event.map(|event| event.event_type()))
    }

    fn page(&self, page: u64, len: usize) -> Vec<u8> {
        self.memory.read_bytes(TABLES_END + page * PAGE, len).unwrap()
    }
}

#[test]
fn each_pasid_is_translated_by_its_own_domain() {
    for two_level in [false, true] {
        let mut rig = Rig::new(two_level);
        assert!(rig.server.get_info(DRIVER, rig.device).unwrap().caps.contains(UnitCaps::PASID));
        let own = rig.domain_with_page(0);
        let tagged = rig.domain_with_page(1);
        let other = rig.domain_with_page(2);
        rig.server.device_attach(DRIVER, rig.device, own, None).unwrap();
        // PASIDs in two leaves of a two-level table.
        let first = rig.server.pasid_alloc(DRIVER).unwrap();
        let mut second = rig.server.pasid_alloc(DRIVER).unwrap();
        while second < 70 {
            second = rig.server.pasid_alloc(DRIVER).unwrap();
        }
        rig.server.device_attach(DRIVER, rig.device, tagged, Some(first)).expect("PASID attach");
        rig.server.device_attach(DRIVER, rig.device, other, Some(second)).expect("PASID attach in another leaf");

        rig.write(None, b"untagged").expect("untagged DMA");
        rig.write(Some(first), b"first").expect("tagged DMA");
        rig.write(Some(second), b"second").expect("tagged DMA");
        assert_eq!(rig.page(0, 8), b"untagged", "two-level: {two_level}");
        assert_eq!(rig.page(1, 5), b"first");
        assert_eq!(rig.page(2, 6), b"second");
        assert_eq!(rig.write(Some(first + 1), b"?"), Err(Some(EventType::BadCd)), "an unattached PASID");
        assert_eq!(rig.write(Some(1 << 8), b"?"), Err(Some(EventType::BadSubstreamId)), "beyond the CD table");

        // Switching the PASID moves its DMA; detaching it blocks only tagged DMA.
        rig.server.device_replace(DRIVER, rig.device, other, Some(first)).unwrap();
        rig.write(Some(first), b"moved").expect("DMA after replace");
        assert_eq!(rig.page(2, 5), b"moved");
        assert_eq!(rig.page(1, 5), b"first");
        rig.server.device_detach(DRIVER, rig.device, Some(first)).unwrap();
        assert_eq!(rig.write(Some(first), b"late"), Err(Some(EventType::BadCd)), "the detached PASID still translates");
        assert_eq!(rig.page(2, 5), b"moved");
        rig.write(None, b"still").expect("untagged DMA after the PASID went");
        // The requester's own slot is CD 0: detaching it blocks untagged DMA, not the PASIDs.
        rig.server.device_detach(DRIVER, rig.device, None).unwrap();
        assert!(rig.write(None, b"blocked").is_err(), "untagged DMA after detach");
        assert_eq!(rig.page(0, 5), b"still");
        rig.write(Some(second), b"kept").expect("the other PASID stays");
    }
}
