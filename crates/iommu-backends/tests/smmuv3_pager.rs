//! A pager on SMMUv3 (against the `smmuv3` model configured with PRI and stalls, which QEMU
//! 10.0.2 lacks): a driver resolves its device's page request (PRI queue, CMD_PRI_RESP) and
//! its stalled transaction (stall event, CMD_RESUME) by mapping memory and answering success,
//! and the device's held access completes; every teardown answers; no request is answered
//! twice. The whole server path runs: the object model over the SMMUv3 backend.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use iommu_abi::{Access, Error, FaultReason, Handle, IovaChoice, PageResponseCode, Perm};
use iommu_backends::testing::{SmmuModelEnv as Model, read_faults};
use iommu_backends::smmuv3::{DomainStage, SmmuBackend};
use iommu_core::fake::{FakeMemory as FakeKernel, FakeObject};
use iommu_core::{ClientId, DeviceGrant, FaultDelivery, HwptAllocOptions, IommuBackend, MemoryObjectId, ObjectModel, RequesterId, ServerConfig, UnitId};
use smmuv3::model::{FakeMemory, ModelConfig, ModelDma, PriResponseRecord, RecoverableDevice, RecoverableOutcome, Recovery, SmmuModel, StepClock};



const MEMORY_BASE: u64 = 0x4000_0000;
const TABLES_END: u64 = MEMORY_BASE + (16 << 20);
const DRIVER: ClientId = ClientId(1);
const MEM: u64 = 100;
const MEM_SIZE: u64 = 0x1_0000;
const DEVICE: u32 = 0x0018;
const STREAM: u32 = 0x0118;
const IOVA: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

/// QEMU's SMMU plus IDR0.PRI (bit 16), STALL_MODEL (bits 25:24) = 0b00 (stall and
/// terminate), and a PRI queue of up to 2^8 entries (IDR1.PRIQS, bits 15:11).
fn recoverable_smmu() -> ModelConfig {
    let mut config = ModelConfig::qemu();
    config.idr[0] = (config.idr[0] & !(0b11 << 24)) | 1 << 16;
    config.idr[1] |= 8 << 11;
    config
}

struct Rig {
    server: ObjectModel<SmmuBackend<Model>, FakeKernel>,
    model: &'static SmmuModel,
    memory: Rc<FakeMemory>,
    device: Handle,
    ioas: Handle,
    fault: Handle,
}

impl Rig {
    fn new(stage: DomainStage) -> Rig {
        let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
        let model: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), recoverable_smmu())));
        let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory.clone(), MEMORY_BASE, TABLES_END), StepClock::new(1_000));
        backend.add_unit(model, 0x0905_0000, stage, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
        let mut kernel = FakeKernel::new(Rc::new(RefCell::new(Vec::new())));
        kernel.add_object(MEM, FakeObject { id: MemoryObjectId(1), owner: DRIVER, size: MEM_SIZE, writable: true, phys_base: TABLES_END, scattered: false });
        let mut server = ObjectModel::new(backend, kernel, ServerConfig::default());
        assert!(server.open_client(DRIVER));
        let device = server.device_bind(DRIVER, DeviceGrant { unit: UnitId(0), rid: RequesterId(DEVICE), pasid_bits: 0 }).expect("bind");
        let ioas = server.ioas_alloc(DRIVER).unwrap();
        let fault = server.fault_alloc(DRIVER).unwrap();
        let hwpt = server.hwpt_alloc(DRIVER, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).expect("hwpt");
        server.device_attach(DRIVER, device, hwpt, None).expect("attach");
        Rig { server, model, memory, device, ioas, fault }
    }

    fn event_thread(&mut self) -> Vec<FaultDelivery> {
        let mut deliveries = Vec::new();
        self.server.drain_faults(UnitId(0), &mut |_, delivery| deliveries.push(delivery));
        deliveries
    }

    /// The driver's pager: takes the one pending request, maps page `page` of its memory at
    /// the requested address, answers success.
    fn pager(&mut self, page: u64) {
        let records = read_faults(&mut self.server, DRIVER, self.fault, 8);
        assert_eq!(records.len(), 1, "{records:?}");
        let record = records[0];
        assert_eq!((record.device, record.pasid, record.iova & !(PAGE - 1), record.access, record.reason), (self.device, None, IOVA, Access::WRITE, FaultReason::PageRequest));
        self.server.ioas_map(DRIVER, self.ioas, MEM, page * PAGE, PAGE, IovaChoice::Fixed(IOVA), Perm::READ_WRITE).expect("map");
        self.server.fault_respond(DRIVER, self.fault, record.cookie, PageResponseCode::Success).expect("respond");
    }
}

/// PRI, on stage-1 and on stage-2 domains: the page request reaches the driver's queue, the
/// pager maps and answers, CMD_PRI_RESP Success lets the device retry, and the write lands.
#[test]
fn the_pager_resolves_a_page_request() {
    for stage in [DomainStage::Stage1, DomainStage::Stage2] {
        let mut rig = Rig::new(stage);
        let mut device = RecoverableDevice::new(rig.model, STREAM, Recovery::PageRequests);
        assert_eq!(device.write(None, IOVA + 0x30, b"paged in"), RecoverableOutcome::AwaitingResponse { group: 1 });
        assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }], "{stage:?}");
        assert_eq!(device.poll(), vec![]);
        rig.pager(2);
        assert_eq!(device.poll(), vec![(RecoverableOutcome::AwaitingResponse { group: 1 }, RecoverableOutcome::Completed(b"paged in".to_vec()))]);
        assert_eq!(rig.memory.read_bytes(TABLES_END + 2 * PAGE + 0x30, 8).unwrap(), b"paged in");
        assert_eq!(
            rig.model.pri_responses(),
            vec![PriResponseRecord { stream_id: STREAM, substream_id: None, group: 1, response: 2, from_smmu: false }]
        );
    }
}

/// Stall: the stage-1 fault holds the transaction; the pager maps and answers; CMD_RESUME
/// Retry translates it again and the write lands.
#[test]
fn the_pager_resolves_a_stalled_transaction() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let mut device = RecoverableDevice::new(rig.model, STREAM, Recovery::Stall);
    let RecoverableOutcome::Stalled { stag } = device.write(None, IOVA + 0x40, b"resumed") else { panic!("the fault did not stall") };
    assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }]);
    assert_eq!(rig.model.stalled_transactions(), 1);
    rig.pager(3);
    assert_eq!(rig.model.stall_resolution(stag), Some(1), "not resumed with Retry");
    assert_eq!(device.poll(), vec![(RecoverableOutcome::Stalled { stag }, RecoverableOutcome::Completed(b"resumed".to_vec()))]);
    assert_eq!(rig.memory.read_bytes(TABLES_END + 3 * PAGE + 0x40, 7).unwrap(), b"resumed");
    assert_eq!(rig.model.stalled_transactions(), 0);
}

/// Detach, replace (to an HWPT on the same queue) and the driver's exit each answer what is
/// pending: the stalled transaction is terminated, the page request denied; once each.
#[test]
fn pending_requests_are_answered_on_every_teardown() {
    type Teardown = fn(&mut Rig);
    let teardowns: [(&str, Teardown); 3] = [
        ("detach", |rig| rig.server.device_detach(DRIVER, rig.device, None).unwrap()),
        ("replace", |rig| {
            let same_queue = rig.server.hwpt_alloc(DRIVER, rig.device, rig.ioas, HwptAllocOptions { fault: Some(rig.fault), ..Default::default() }).unwrap();
            rig.server.device_replace(DRIVER, rig.device, same_queue, None).unwrap();
        }),
        ("exit", |rig| rig.server.close_client(DRIVER).unwrap()),
    ];
    for (name, teardown) in teardowns {
        let mut rig = Rig::new(DomainStage::Stage1);
        let mut stalling = RecoverableDevice::new(rig.model, STREAM, Recovery::Stall);
        let RecoverableOutcome::Stalled { stag } = stalling.write(None, IOVA, b"x") else { panic!("no stall") };
        let mut requesting = RecoverableDevice::new(rig.model, STREAM, Recovery::PageRequests);
        requesting.read(None, IOVA + PAGE, 4);
        assert_eq!(rig.event_thread().len(), 2);
        let read = read_faults(&mut rig.server, DRIVER, rig.fault, 1)[0];
        teardown(&mut rig);
        assert_eq!(rig.model.stall_resolution(stag), Some(0), "{name}: the stall was not terminated");
        assert_eq!(stalling.poll(), vec![(RecoverableOutcome::Stalled { stag }, RecoverableOutcome::Failed)], "{name}");
        assert_eq!(requesting.poll(), vec![(RecoverableOutcome::AwaitingResponse { group: 1 }, RecoverableOutcome::Failed)], "{name}");
        assert_eq!(rig.model.pri_responses().iter().map(|r| r.response).collect::<Vec<_>>(), vec![0], "{name}: denied once");
        if name != "exit" {
            assert_eq!(rig.server.fault_respond(DRIVER, rig.fault, read.cookie, PageResponseCode::Success), Err(Error::NoSuchFault), "{name}");
        }
        assert_eq!(rig.model.pri_responses().len(), 1, "{name}: answered twice");
    }
}

/// The backend answers a request only while it awaits an answer.
#[test]
fn the_backend_never_answers_twice() {
    let mut rig = Rig::new(DomainStage::Stage1);
    let mut device = RecoverableDevice::new(rig.model, STREAM, Recovery::PageRequests);
    device.write(None, IOVA, b"x");
    rig.event_thread();
    let rid = RequesterId(DEVICE);
    for code in [PageResponseCode::Success, PageResponseCode::Invalid] {
        rig.server.backend_mut().page_response(UnitId(0), rid, None, 1, code);
    }
    rig.server.backend_mut().page_response(UnitId(0), rid, None, 7, PageResponseCode::Invalid);
    assert_eq!(rig.model.pri_responses(), vec![PriResponseRecord { stream_id: STREAM, substream_id: None, group: 1, response: 2, from_smmu: false }]);
}

/// The PRI queue's interrupt: bring-up of a unit with PRI sets IRQ_CTRL.PRIQ_IRQEN beside the
/// event queue's and global errors' (spec 6.3.15: bits 1, 2, 0); a page request raises it, and
/// the drain the server's event thread runs on it takes the request into the driver's queue.
/// A unit without PRI (QEMU's) leaves PRIQ_IRQEN clear.
#[test]
fn the_pri_queue_interrupt_is_enabled_and_its_drain_delivers() {
    use hwio::Registers;
    use smmuv3::regs::{irq_ctrl, offset};
    let mut rig = Rig::new(DomainStage::Stage1);
    let all = irq_ctrl::GERROR_IRQEN | irq_ctrl::PRIQ_IRQEN | irq_ctrl::EVENTQ_IRQEN;
    assert_eq!(rig.model.read32(offset::IRQ_CTRL), all);
    assert_eq!(rig.model.read32(offset::IRQ_CTRLACK), all);
    let mut device = RecoverableDevice::new(rig.model, STREAM, Recovery::PageRequests);
    assert_eq!(device.write(None, IOVA, b"x"), RecoverableOutcome::AwaitingResponse { group: 1 });
    assert_eq!(rig.model.priq_interrupts(), 1, "the page request raised no PRI queue interrupt");
    assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }]);
    assert_eq!(read_faults(&mut rig.server, DRIVER, rig.fault, 8)[0].reason, FaultReason::PageRequest);

    let memory = FakeMemory::new(MEMORY_BASE, 24 << 20);
    let qemu: &'static SmmuModel = Box::leak(Box::new(SmmuModel::new(memory.clone(), ModelConfig::qemu())));
    let mut backend = SmmuBackend::<Model>::new(ModelDma::in_range(memory, MEMORY_BASE, TABLES_END), StepClock::new(1_000));
    backend.add_unit(qemu, 0x0905_0000, DomainStage::Stage1, BTreeMap::from([(DEVICE, STREAM)])).expect("bring-up");
    assert_eq!(qemu.read32(offset::IRQ_CTRL), irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN);
}
