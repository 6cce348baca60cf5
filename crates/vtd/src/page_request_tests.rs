//! The page request queue and page group responses, driver against the model, with a PRI
//! device that holds its access until the answer.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use hwio::DmaAllocator;

use crate::descriptors::response_code;
use crate::model::{qemu, FakeDma, PageGroupResponse, PhysMemory, PriDevice, PriOutcome, StepClock, TableFormat, TestPageTable, VtdModel};
use crate::page_request::PageRequest;
use crate::unit::{Mode, Translation, VtdUnit};
use crate::{RequesterId, VtdError};

const MEMORY_BASE: u64 = 0x1000_0000;
/// ECAP.PRS, bit 29.
const ECAP_PRS: u64 = 1 << 29;
const DEVICE: RequesterId = RequesterId(0x0018);
const IOVA: u64 = 0x4000_0000;

struct Rig {
    dma: FakeDma,
    /// The unit's registers, leaked so a device can hold the model while the driver runs.
    model: &'static VtdModel,
    unit: VtdUnit<&'static VtdModel, StepClock>,
    table: TestPageTable,
}

impl Rig {
    /// A scalable unit with page requests (unless `page_requests` is false) and DEVICE
    /// attached at RID_PASID and PASID 5 to one empty second-level table.
    fn new(page_requests: bool) -> Rig {
        let memory: Rc<PhysMemory> = PhysMemory::new(MEMORY_BASE, 8 << 20);
        let mut dma = FakeDma::new(memory.clone());
        let model: &'static VtdModel =
            Box::leak(Box::new(VtdModel::new(memory, qemu::CAP, qemu::ECAP_SCALABLE | qemu::ECAP_PASID | ECAP_PRS)));
        let mut unit = VtdUnit::new(model, StepClock::new(1_000));
        unit.init(Mode::Scalable, &mut dma).expect("init");
        if page_requests {
            unit.enable_page_requests(&mut dma).expect("page request queue");
            unit.enable_page_request_interrupts(0xfee0_0000, 0x61);
        }
        let table = TestPageTable::new(&mut dma, TableFormat::SecondLevel, 4);
        let translation = Translation::SecondLevel { root: table.root(), levels: 4 };
        unit.attach(DEVICE, 1, translation, &mut dma).expect("attach");
        unit.attach_pasid(DEVICE, 5, 1, translation, &mut dma).expect("attach PASID 5");
        Rig { dma, model, unit, table }
    }

    /// Maps a fresh page at `iova`; returns it.
    fn map(&mut self, iova: u64) -> u64 {
        let page = self.dma.alloc_zeroed(4096, 4096).unwrap().phys;
        self.table.map_4k(&mut self.dma, iova, page, true);
        page
    }
}

#[test]
fn a_held_access_completes_after_the_page_is_mapped_and_the_group_answered() {
    let mut rig = Rig::new(true);
    let model = rig.model;
    let mut device = PriDevice::new(model, DEVICE);
    assert_eq!(device.write(Some(5), IOVA + 0x10, b"after the pager"), PriOutcome::Held { group: 1 });
    assert_eq!(model.page_request_interrupts(), vec![(0xfee0_0000, 0x61)], "one page request event");
    assert!(rig.unit.drain_faults().faults.is_empty(), "a translation request records no fault");

    let report = rig.unit.drain_page_requests();
    assert!(!report.overflowed);
    assert_eq!(
        report.requests,
        vec![PageRequest { requester: DEVICE, pasid: Some(5), address: IOVA, read: false, write: true, last_in_group: true, group: 1 }]
    );
    assert!(rig.unit.drain_page_requests().requests.is_empty(), "PQH moved past what was read");
    assert_eq!(device.poll(), vec![], "nothing answered yet: the device still waits");

    let page = rig.map(IOVA);
    rig.unit.respond_to_page_group(DEVICE, Some(5), 1, response_code::SUCCESS, &rig.dma).expect("response");
    assert_eq!(device.poll(), vec![(1, PriOutcome::Completed(b"after the pager".to_vec()))]);
    assert_eq!(rig.dma.memory().read_bytes(page + 0x10, 15).unwrap(), b"after the pager");
    assert_eq!(
        model.page_responses(),
        vec![PageGroupResponse { requester: DEVICE, pasid: Some(5), group: 1, code: response_code::SUCCESS, from_unit: false }]
    );
}

#[test]
fn a_group_of_requests_is_answered_once_and_the_whole_access_retried() {
    let mut rig = Rig::new(true);
    let model = rig.model;
    let first = rig.map(IOVA);
    let mut device = PriDevice::new(model, DEVICE);
    // Three pages, the first mapped: two requests in one group, LPIG on the second only.
    let data = vec![0xa5u8; 3 * 4096];
    assert_eq!(device.write(None, IOVA, &data), PriOutcome::Held { group: 1 });
    let requests = rig.unit.drain_page_requests().requests;
    let shape: Vec<(u64, bool, u16, Option<u32>)> = requests.iter().map(|r| (r.address, r.last_in_group, r.group, r.pasid)).collect();
    assert_eq!(shape, vec![(IOVA + 0x1000, false, 1, None), (IOVA + 0x2000, true, 1, None)]);
    let second = rig.map(IOVA + 0x1000);
    let third = rig.map(IOVA + 0x2000);
    rig.unit.respond_to_page_group(DEVICE, None, 1, response_code::SUCCESS, &rig.dma).unwrap();
    assert_eq!(device.poll(), vec![(1, PriOutcome::Completed(data.clone()))]);
    for page in [first, second, third] {
        assert_eq!(rig.dma.memory().read_bytes(page, 4096).unwrap(), vec![0xa5; 4096]);
    }
}

#[test]
fn an_invalid_response_fails_the_access_and_writes_nothing() {
    let mut rig = Rig::new(true);
    let model = rig.model;
    let mut device = PriDevice::new(model, DEVICE);
    assert_eq!(device.read(Some(5), IOVA, 8), PriOutcome::Held { group: 1 });
    rig.unit.drain_page_requests();
    rig.unit.respond_to_page_group(DEVICE, Some(5), 1, response_code::INVALID_REQUEST, &rig.dma).unwrap();
    assert_eq!(device.poll(), vec![(1, PriOutcome::Failed(response_code::INVALID_REQUEST))]);
    assert_eq!(device.held(), 0);
}

/// Without PRE in the context entry the unit answers the device itself, and nothing reaches
/// the queue.
#[test]
fn a_unit_without_the_queue_answers_invalid_itself() {
    let mut rig = Rig::new(false);
    let model = rig.model;
    let mut device = PriDevice::new(model, DEVICE);
    assert_eq!(device.write(None, IOVA, b"x"), PriOutcome::Held { group: 1 });
    assert_eq!(device.poll(), vec![(1, PriOutcome::Failed(response_code::INVALID_REQUEST))]);
    assert!(model.page_responses()[0].from_unit);
    assert!(rig.unit.drain_page_requests().requests.is_empty());
    assert_eq!(
        rig.unit.respond_to_page_group(DEVICE, None, 1, response_code::SUCCESS, &rig.dma),
        Err(VtdError::NotInitialized)
    );
    assert!(model.page_request_interrupts().is_empty());
}

/// A full queue (127 descriptors: one slot stays free) sets PRO; the unit answers a closing
/// request itself with success, so the device retries instead of waiting forever; the driver
/// reports the overflow once and the queue takes requests again.
#[test]
fn a_full_queue_overflows_and_the_unit_answers_the_group() {
    let mut rig = Rig::new(true);
    let model = rig.model;
    let request = |group: u16| PageRequest { requester: DEVICE, pasid: None, address: IOVA, read: true, write: false, last_in_group: true, group };
    for group in 0..127 {
        assert!(model.page_request(request(group)), "request {group} was not queued");
    }
    assert!(!model.page_request(request(200)), "a full queue took a request");
    assert_eq!(
        model.page_responses(),
        vec![PageGroupResponse { requester: DEVICE, pasid: None, group: 200, code: response_code::SUCCESS, from_unit: true }]
    );
    let report = rig.unit.drain_page_requests();
    assert_eq!((report.requests.len(), report.overflowed), (127, true));
    assert!(!rig.unit.drain_page_requests().overflowed, "PRO was not cleared");
    assert!(model.page_request(request(201)), "the drained queue takes requests again");
    assert_eq!(rig.unit.drain_page_requests().requests, vec![request(201)]);
}

#[test]
fn page_requests_are_enabled_once_before_any_attach() {
    let mut rig = Rig::new(true);
    assert!(matches!(rig.unit.enable_page_requests(&mut rig.dma), Err(VtdError::InvalidArgument(_))));
    let memory = PhysMemory::new(MEMORY_BASE, 1 << 20);
    let mut dma = FakeDma::new(memory.clone());
    let mut legacy = VtdUnit::new(VtdModel::new(memory, qemu::CAP, qemu::ECAP_LEGACY | ECAP_PRS), StepClock::new(1_000));
    legacy.init(Mode::Legacy, &mut dma).unwrap();
    assert!(matches!(legacy.enable_page_requests(&mut dma), Err(VtdError::Unsupported(_))));
}

/// The page request event follows PPR: one MSI when the first request arrives, none for the
/// next while PPR stays set; masked, it is pended in PECTL.IP and sent on unmask.
#[test]
fn the_page_request_event_fires_once_per_pending_batch_and_respects_the_mask() {
    let mut rig = Rig::new(true);
    let model = rig.model;
    let request = |group: u16| PageRequest { requester: DEVICE, pasid: None, address: IOVA, read: true, write: false, last_in_group: true, group };
    model.page_request(request(1));
    model.page_request(request(2));
    assert_eq!(model.page_request_interrupts().len(), 1, "PPR was already set");
    rig.unit.drain_page_requests();
    rig.unit.mask_page_request_interrupts();
    model.page_request(request(3));
    assert_eq!(model.page_request_interrupts().len(), 1, "a masked event was sent");
    rig.unit.enable_page_request_interrupts(0xfee0_0000, 0x61);
    assert_eq!(model.page_request_interrupts(), vec![(0xfee0_0000, 0x61); 2], "the pended event was not sent on unmask");
    assert_eq!(rig.unit.drain_page_requests().requests, vec![request(3)]);
}
