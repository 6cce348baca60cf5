//! A pager on VT-d (against the `vtd` model): a driver resolves its device's page request by
//! mapping memory and answering success, and the device's held access completes; a request
//! left pending when the attachment goes is answered "invalid request"; no group is answered
//! twice; DMA tagged with a PASID goes through the PASID's own domain. The whole server path
//! runs: the object model over the VT-d backend, the event thread's drain, the driver's
//! `fault_read` / `ioas_map` / `fault_respond`.

use std::cell::RefCell;
use std::rc::Rc;

use hwio::DmaAllocator;
use iommu_abi::{Access, Error, FaultReason, Handle, IovaChoice, PageResponseCode, Perm};
use iommu_backends::testing::{VtdModelEnv as Model, read_faults};
use iommu_backends::vtd::{Unit, VtdBackend};
use iommu_core::fake::{FakeMemory, FakeObject};
use iommu_core::{ClientId, DeviceGrant, FaultDelivery, HwptAllocOptions, IommuBackend, MemoryObjectId, ObjectModel, RequesterId, ServerConfig, UnitId};
use vtd::descriptors::response_code;
use vtd::regs;
use vtd::model::{qemu, FakeDma, PageGroupResponse, PhysMemory, PriDevice, PriOutcome, StepClock, VtdModel};



/// ECAP.PRS, bit 29.
const ECAP_PRS: u64 = 1 << 29;
const DRIVER: ClientId = ClientId(1);
/// The driver's memory capability: 64 KiB.
const MEM: u64 = 100;
const MEM_SIZE: u64 = 0x1_0000;
const DEVICE: u16 = 0x0018;
const IOVA: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

struct Rig {
    server: ObjectModel<VtdBackend<Model>, FakeMemory>,
    model: &'static VtdModel,
    /// Physical address of the driver's memory object.
    memory: u64,
    device: Handle,
    ioas: Handle,
    fault: Handle,
    hwpt: Handle,
}

impl Rig {
    /// A scalable unit with page requests; the driver's device bound and attached (no PASID)
    /// to an HWPT of an empty IOAS that reports to the driver's fault queue.
    fn new() -> Rig {
        let phys = PhysMemory::new(0x1000_0000, 16 << 20);
        let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(phys.clone(), qemu::CAP, qemu::ECAP_SCALABLE | qemu::ECAP_PASID | ECAP_PRS)));
        let mut backend = VtdBackend::<Model>::new(FakeDma::new(phys));
        let unit = Unit::bring_up(model, StepClock::new(1_000), 48, &mut backend.dma).expect("bring-up");
        backend.units.push(unit);
        let memory = backend.dma.alloc_zeroed(MEM_SIZE as usize, PAGE as usize).expect("driver memory").phys;
        let mut kernel = FakeMemory::new(Rc::new(RefCell::new(Vec::new())));
        kernel.add_object(MEM, FakeObject { id: MemoryObjectId(1), owner: DRIVER, size: MEM_SIZE, writable: true, phys_base: memory, scattered: false });
        let mut server = ObjectModel::new(backend, kernel, ServerConfig::default());
        assert!(server.open_client(DRIVER));
        let device = server.device_bind(DRIVER, DeviceGrant { unit: UnitId(0), rid: RequesterId(DEVICE.into()), pasid_bits: 20 }).expect("bind");
        let ioas = server.ioas_alloc(DRIVER).unwrap();
        let fault = server.fault_alloc(DRIVER).unwrap();
        let hwpt = server.hwpt_alloc(DRIVER, device, ioas, HwptAllocOptions { fault: Some(fault), ..Default::default() }).expect("hwpt");
        server.device_attach(DRIVER, device, hwpt, None).expect("attach");
        Rig { server, model, memory, device, ioas, fault, hwpt }
    }

    fn pri_device(&self) -> PriDevice<'static> {
        PriDevice::new(self.model, vtd::RequesterId(DEVICE))
    }

    /// The server's event thread: drain the unit into the fault queues.
    fn event_thread(&mut self) -> Vec<FaultDelivery> {
        let mut deliveries = Vec::new();
        self.server.drain_faults(UnitId(0), &mut |_, delivery| deliveries.push(delivery));
        deliveries
    }

    fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.server.backend().dma.memory().read_bytes(phys, len).unwrap()
    }

    /// Responses the device received that software sent (not the unit's own).
    fn responses(&self) -> Vec<(Option<u32>, u16, u8)> {
        self.model.page_responses().iter().filter(|r| !r.from_unit).map(|r| (r.pasid, r.group, r.code)).collect()
    }
}

/// The pager: the device's write to an unmapped page is held; the driver reads the request,
/// maps a page of its memory there and answers success; the retried write lands in it.
#[test]
fn the_pager_maps_the_page_and_the_held_write_completes() {
    let mut rig = Rig::new();
    let pasid = rig.server.pasid_alloc(DRIVER).unwrap();
    rig.server.device_attach(DRIVER, rig.device, rig.hwpt, Some(pasid)).expect("PASID attach");
    let mut device = rig.pri_device();
    for (tag, group) in [(None, 1), (Some(pasid), 2)] {
        let iova = IOVA + u64::from(group) * PAGE;
        assert_eq!(device.write(tag, iova + 0x20, b"resolved by the pager"), PriOutcome::Held { group });
        assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }]);

        // The driver's pager.
        let records = read_faults(&mut rig.server, DRIVER, rig.fault, 8);
        assert_eq!(records.len(), 1);
        let record = records[0];
        assert_eq!((record.device, record.pasid, record.iova, record.access, record.reason), (rig.device, tag, iova, Access::WRITE, FaultReason::PageRequest));
        let offset = u64::from(group) * PAGE;
        rig.server.ioas_map(DRIVER, rig.ioas, MEM, offset, PAGE, IovaChoice::Fixed(record.iova), Perm::READ_WRITE).expect("map");
        assert_eq!(device.poll(), vec![], "the device answered before the driver did");
        rig.server.fault_respond(DRIVER, rig.fault, record.cookie, PageResponseCode::Success).expect("respond");

        assert_eq!(device.poll(), vec![(group, PriOutcome::Completed(b"resolved by the pager".to_vec()))]);
        assert_eq!(rig.read(rig.memory + offset + 0x20, 21), b"resolved by the pager");
    }
    assert_eq!(rig.responses(), vec![(None, 1, response_code::SUCCESS), (Some(pasid), 2, response_code::SUCCESS)]);
    assert_eq!(rig.server.fault_respond(DRIVER, rig.fault, 1, PageResponseCode::Success), Err(Error::NoSuchFault));
    assert_eq!(rig.responses().len(), 2, "answered twice");
}

/// Every teardown answers the device: detach, replace (to a domain on the same queue), and
/// the driver's exit; each held access fails with "invalid request" and nothing more is sent.
#[test]
fn pending_requests_are_answered_invalid_on_every_teardown() {
    // Detach, with the request read by the driver.
    let mut rig = Rig::new();
    let mut device = rig.pri_device();
    assert_eq!(device.write(None, IOVA, b"x"), PriOutcome::Held { group: 1 });
    rig.event_thread();
    let cookie = read_faults(&mut rig.server, DRIVER, rig.fault, 8)[0].cookie;
    rig.server.device_detach(DRIVER, rig.device, None).unwrap();
    assert_eq!(device.poll(), vec![(1, PriOutcome::Failed(response_code::INVALID_REQUEST))]);
    assert_eq!(rig.server.fault_respond(DRIVER, rig.fault, cookie, PageResponseCode::Success), Err(Error::NoSuchFault));
    assert_eq!(rig.responses(), vec![(None, 1, response_code::INVALID_REQUEST)]);

    // Replace by an HWPT reporting to the same queue, with the request still queued.
    let mut rig = Rig::new();
    let same_queue = rig.server.hwpt_alloc(DRIVER, rig.device, rig.ioas, HwptAllocOptions { fault: Some(rig.fault), ..Default::default() }).unwrap();
    let mut device = rig.pri_device();
    device.read(None, IOVA, 8);
    rig.event_thread();
    rig.server.device_replace(DRIVER, rig.device, same_queue, None).unwrap();
    assert_eq!(device.poll(), vec![(1, PriOutcome::Failed(response_code::INVALID_REQUEST))]);
    assert!(read_faults(&mut rig.server, DRIVER, rig.fault, 8).is_empty());

    // The driver exits (its queue is destroyed with it).
    let mut rig = Rig::new();
    let mut device = rig.pri_device();
    device.write(None, IOVA, b"y");
    device.write(None, IOVA + PAGE, b"z");
    rig.event_thread();
    read_faults(&mut rig.server, DRIVER, rig.fault, 1);
    rig.server.close_client(DRIVER).unwrap();
    let mut finished = device.poll();
    finished.sort_by_key(|(group, _)| *group);
    assert_eq!(finished, vec![(1, PriOutcome::Failed(1)), (2, PriOutcome::Failed(1))]);
    assert_eq!(rig.responses().len(), 2);
}

/// The backend answers a group only while it awaits an answer: a second response to the same
/// group, or one to a group never delivered, reaches no device.
#[test]
fn the_backend_never_answers_a_group_twice() {
    let mut rig = Rig::new();
    let mut device = rig.pri_device();
    device.write(None, IOVA, b"x");
    rig.event_thread();
    let rid = RequesterId(DEVICE.into());
    rig.server.backend_mut().page_response(UnitId(0), rid, None, 1, PageResponseCode::Success);
    rig.server.backend_mut().page_response(UnitId(0), rid, None, 1, PageResponseCode::Invalid);
    rig.server.backend_mut().page_response(UnitId(0), rid, None, 9, PageResponseCode::Invalid);
    assert_eq!(
        rig.model.page_responses(),
        vec![PageGroupResponse { requester: vtd::RequesterId(DEVICE), pasid: None, group: 1, code: response_code::SUCCESS, from_unit: false }]
    );
}

/// DMA tagged with a PASID is translated by the domain attached at that PASID, untagged DMA
/// by the requester's own; detaching the PASID blocks only tagged DMA.
#[test]
fn pasid_tagged_dma_goes_through_the_pasids_domain() {
    let mut rig = Rig::new();
    let other_ioas = rig.server.ioas_alloc(DRIVER).unwrap();
    let per_pasid = rig.server.hwpt_alloc(DRIVER, rig.device, other_ioas, HwptAllocOptions::default()).unwrap();
    let pasid = rig.server.pasid_alloc(DRIVER).unwrap();
    rig.server.device_attach(DRIVER, rig.device, per_pasid, Some(pasid)).expect("PASID attach");
    rig.server.ioas_map(DRIVER, rig.ioas, MEM, 0, PAGE, IovaChoice::Fixed(IOVA), Perm::READ_WRITE).unwrap();
    rig.server.ioas_map(DRIVER, other_ioas, MEM, PAGE, PAGE, IovaChoice::Fixed(IOVA), Perm::READ_WRITE).unwrap();
    let rid = vtd::RequesterId(DEVICE);

    rig.model.dma_write(rid, None, IOVA, b"untagged").expect("untagged DMA");
    rig.model.dma_write(rid, Some(pasid), IOVA, b"tagged").expect("tagged DMA");
    assert_eq!(rig.read(rig.memory, 8), b"untagged");
    assert_eq!(rig.read(rig.memory + PAGE, 6), b"tagged");
    assert!(rig.model.dma_write(rid, Some(pasid + 1), IOVA, b"?").is_err(), "an unattached PASID reached memory");

    rig.server.device_detach(DRIVER, rig.device, Some(pasid)).unwrap();
    assert!(rig.model.dma_write(rid, Some(pasid), IOVA, b"late").is_err(), "the detached PASID still translates");
    assert_eq!(rig.read(rig.memory + PAGE, 6), b"tagged");
    rig.model.dma_write(rid, None, IOVA, b"still").expect("untagged DMA after the PASID went");
}

/// A write over three missing pages: the device sends a group of three requests and the
/// driver gets one record, for the group's last page, answered once; the pager maps that page,
/// the device asks again for the two still missing, and so on until the write completes.
#[test]
fn a_group_is_one_record_and_one_answer() {
    let mut rig = Rig::new();
    let mut device = rig.pri_device();
    let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i / 7) as u8).collect();
    assert_eq!(device.write(None, IOVA, &data), PriOutcome::Held { group: 1 });
    let mut answered = Vec::new();
    let outcome = loop {
        assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }], "one record per group");
        let records = read_faults(&mut rig.server, DRIVER, rig.fault, 8);
        assert_eq!(records.len(), 1);
        let page = (records[0].iova - IOVA) / PAGE;
        answered.push(page);
        rig.server.ioas_map(DRIVER, rig.ioas, MEM, page * PAGE, PAGE, IovaChoice::Fixed(records[0].iova), Perm::READ_WRITE).unwrap();
        rig.server.fault_respond(DRIVER, rig.fault, records[0].cookie, PageResponseCode::Success).unwrap();
        match device.poll().pop().expect("the answer reached the device").1 {
            PriOutcome::Held { .. } => continue,
            finished => break finished,
        }
    };
    assert_eq!(outcome, PriOutcome::Completed(data.clone()));
    assert_eq!(answered, vec![2, 1, 0], "each record names its group's last page");
    assert_eq!(rig.read(rig.memory, data.len()), data);
    let groups: Vec<u16> = rig.model.page_responses().iter().map(|response| response.group).collect();
    assert_eq!(groups, vec![1, 2, 3], "one answer per group");
}

/// The server routes the page request event where the fault event goes: PEDATA, PEADDR and
/// PEUADDR hold the MSI, then PECTL is unmasked; a device's page request raises that MSI
/// (the interrupt that wakes the server's event thread), and the drain it runs takes the
/// request into the driver's queue. A request after the drain raises it again.
#[test]
fn the_page_request_event_raises_the_fault_msi_and_its_drain_delivers() {
    let mut rig = Rig::new();
    let before = rig.model.register_writes().len();
    assert!(rig.server.backend_mut().units[0].route_page_request_event(0xfee0_0000, 0x50));
    let written: Vec<(usize, u64)> = rig.model.register_writes()[before..].iter().map(|w| (w.offset, w.value)).collect();
    assert_eq!(written, vec![(regs::PEDATA, 0x50), (regs::PEADDR, 0xfee0_0000), (regs::PEUADDR, 0), (regs::PECTL, 0)]);
    assert!(rig.model.page_request_interrupts().is_empty());

    let mut device = rig.pri_device();
    assert_eq!(device.write(None, IOVA, b"x"), PriOutcome::Held { group: 1 });
    assert_eq!(rig.model.page_request_interrupts(), vec![(0xfee0_0000, 0x50)], "the page request raised no event");
    assert_eq!(rig.event_thread(), vec![FaultDelivery::Queued { owner: DRIVER }]);
    let record = read_faults(&mut rig.server, DRIVER, rig.fault, 8)[0];
    assert_eq!((record.iova, record.reason), (IOVA, FaultReason::PageRequest));

    assert_eq!(device.write(None, IOVA + PAGE, b"y"), PriOutcome::Held { group: 2 });
    assert_eq!(rig.model.page_request_interrupts().len(), 2, "a request after the drain raised no event");
}

/// A unit without a page request queue (QEMU's scalable unit has no ECAP.PRS) is not routed:
/// no page request event register is written and PECTL stays masked.
#[test]
fn a_unit_without_page_requests_keeps_its_event_masked() {
    let phys = PhysMemory::new(0x1000_0000, 16 << 20);
    let model: &'static VtdModel = Box::leak(Box::new(VtdModel::new(phys.clone(), qemu::CAP, qemu::ECAP_SCALABLE | qemu::ECAP_PASID)));
    let mut dma = FakeDma::new(phys);
    let mut unit = Unit::<Model>::bring_up(model, StepClock::new(1_000), 48, &mut dma).expect("bring-up");
    let before = model.register_writes().len();
    assert!(!unit.route_page_request_event(0xfee0_0000, 0x50));
    assert!(model.register_writes()[before..].is_empty(), "registers written for a unit without page requests");
    assert_eq!(hwio::Registers::read32(&model, regs::PECTL) & 1 << 31, 1 << 31, "PECTL.IM cleared");
}
