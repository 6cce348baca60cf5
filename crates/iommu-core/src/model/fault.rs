//! FAULT: fault queues, the routing of hardware faults to the queue of the faulting slot,
//! reading records and answering page requests.

use alloc::vec::Vec;
use iommu_abi::{Access, Error, FaultReason, FaultRecord, Handle, PageResponseCode, Rights};
use crate::budget::{self};
use crate::backend::{DrainedFault, FaultEvent, IommuBackend, UnitId};
use crate::memory::MemorySource;
use crate::objects::{Attachment, Body, FaultQueue, HwptParent, ObjectId, ObjectKind, PendingRequest, QueuedFault};
use crate::ClientId;

use super::ObjectModel;

/// Where a fault went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDelivery {
    /// Queued in a fault queue of `owner` (whom the server then notifies).
    Queued { owner: ClientId },
    /// The queue was full; counted in its overflow count (a page request was answered
    /// `Invalid` so the device does not wait forever).
    Overflowed,
    /// No queue: unknown device, no attachment for the PASID, or no fault queue on the
    /// attachment. Counted server-wide; a page request was answered `Invalid`.
    Unrouted,
}

impl<B: IommuBackend, M: MemorySource> ObjectModel<B, M> {
    /// Allocate a fault queue.
    pub fn fault_alloc(&mut self, client: ClientId) -> Result<Handle, Error> {
        self.charge_new_object(client, budget::FAULT_QUEUE)?;
        Ok(self.create(client, Body::Fault(FaultQueue::default())))
    }

    /// Drains `unit`'s fault records through the backend into the fault queues; `sink` learns
    /// where each went (whom to wake). Returns what [`IommuBackend::drain_faults`] returns.
    pub fn drain_faults(&mut self, unit: UnitId, sink: &mut dyn FnMut(&DrainedFault, FaultDelivery)) -> usize {
        let mut drained = core::mem::take(&mut self.drained);
        let reported = self.backend.drain_faults(unit, &mut |fault| drained.push(fault));
        // Read in place: moving each record out of the buffer costs two copies of it.
        for fault in &drained {
            let delivery = self.deliver_fault(fault.event);
            sink(fault, delivery);
        }
        drained.clear();
        self.drained = drained;
        reported
    }

    /// Route a hardware fault to the fault queue of the device's attachment.
    pub fn deliver_fault(&mut self, event: FaultEvent) -> FaultDelivery {
        let device = self.bound_devices.get(&(event.unit, event.rid)).copied();
        let route = device.and_then(|device| {
            let attachment = self.device(device).attachments.get(&event.pasid)?;
            Some((device, self.attachment_fault(attachment)?))
        });
        let is_request = event.reason == FaultReason::PageRequest;
        let Some((device, fault)) = route else {
            self.unrouted_faults += 1;
            if is_request {
                self.backend.page_response(event.unit, event.rid, event.pasid, event.group, PageResponseCode::Invalid);
            }
            return FaultDelivery::Unrouted;
        };
        let reason = self.fault_reason_in_ioas(device, &event);
        let label = self.device(device).label;
        let owner = self.objects[fault].owner;
        let depth = self.config.fault_queue_depth;
        // A queue is full at its depth or when its owner's budget cannot take the record.
        let full = self.fault_mut(fault).queued.len() >= depth
            || self.clients.get_mut(owner).expect("owners are live").account.charge_bytes(budget::FAULT_RECORD.bytes).is_err();
        let queue = self.fault_mut(fault);
        if full {
            queue.overflow += 1;
            if is_request {
                self.backend.page_response(event.unit, event.rid, event.pasid, event.group, PageResponseCode::Invalid);
            }
            return FaultDelivery::Overflowed;
        }
        let cookie = if is_request { queue.next_cookie() } else { 0 };
        let request = is_request.then_some(PendingRequest {
            device,
            unit: event.unit,
            rid: event.rid,
            pasid: event.pasid,
            group: event.group,
        });
        let record = FaultRecord { device: label, pasid: event.pasid, iova: event.iova, access: event.access, reason, cookie, stage: event.stage };
        queue.queued.push_back(QueuedFault { record, request });
        FaultDelivery::Queued { owner }
    }

    /// A translation fault at an IOVA that the device's IOAS maps, but without the access that
    /// faulted, is a permission fault. Some units cannot tell the two apart: VT-d reports a
    /// missing second-level leaf and a read-only one with the same reason (5h "lack of write
    /// permission", VT-d spec 7.1.3), so the backend reports both as translation faults and
    /// the IOAS, which knows what was mapped, decides.
    fn fault_reason_in_ioas(&self, device: ObjectId, event: &FaultEvent) -> FaultReason {
        if event.reason != FaultReason::Translation {
            return event.reason;
        }
        let Some(&Attachment::Hwpt(hwpt)) = self.device(device).attachments.get(&event.pasid) else { return event.reason };
        let HwptParent::Ioas(ioas) = self.hwpt(hwpt).parent else { return event.reason };
        let Some((_, area)) = self.ioas(ioas).areas.range(..=event.iova).next_back() else { return event.reason };
        let wants = |access: Access| event.access.bits() & access.bits() != 0;
        let inside = area.range.start <= event.iova && event.iova <= area.range.last;
        if inside && ((wants(Access::READ) && !area.perm.read) || (wants(Access::WRITE) && !area.perm.write)) {
            FaultReason::Permission
        } else {
            event.reason
        }
    }

    /// Take up to `max` records, oldest first, handing each to `each` (so that the reply is
    /// built without an allocation), and return the overflow count: faults lost since the
    /// previous read (it restarts at 0). Page requests read here await `fault_respond`.
    /// Needs READ_FAULTS.
    pub fn fault_read(&mut self, client: ClientId, fault: Handle, max: usize, mut each: impl FnMut(FaultRecord)) -> Result<u64, Error> {
        let fault = self.resolve(client, fault, ObjectKind::Fault, Rights::READ_FAULTS)?;
        let owner = self.objects[fault].owner;
        let queue = self.fault_mut(fault);
        // A page request keeps its record's charge while it awaits the answer.
        let mut finished = 0;
        for _ in 0..max {
            let Some(queued) = queue.queued.pop_front() else { break };
            match queued.request {
                Some(request) => {
                    queue.awaiting.insert(queued.record.cookie, request);
                }
                None => finished += 1,
            }
            each(queued.record);
        }
        let overflow = core::mem::take(&mut queue.overflow);
        self.clients.get_mut(owner).expect("owners are live").account.refund_bytes(budget::FAULT_RECORD.bytes * finished);
        Ok(overflow)
    }

    /// Answer a page request read from this queue. Needs READ_FAULTS.
    pub fn fault_respond(&mut self, client: ClientId, fault: Handle, cookie: u32, code: PageResponseCode) -> Result<(), Error> {
        let fault = self.resolve(client, fault, ObjectKind::Fault, Rights::READ_FAULTS)?;
        let request = self.fault_mut(fault).awaiting.remove(&cookie).ok_or(Error::NoSuchFault)?;
        self.refund(self.objects[fault].owner, budget::FAULT_RECORD);
        self.backend.page_response(request.unit, request.rid, request.pasid, request.group, code);
        Ok(())
    }

    /// Answer `Invalid` to page requests in the queue `fault` (queued or awaiting) of
    /// `device` (any if `None`) at `pasid` (any if `None`), and drop them, so no device
    /// waits on a request nobody will answer.
    pub(super) fn abort_page_requests(&mut self, fault: Option<ObjectId>, device: Option<ObjectId>, pasid: Option<Option<u32>>) {
        let Some(fault) = fault else { return };
        let matches = |request: &PendingRequest| device.is_none_or(|d| d == request.device) && pasid.is_none_or(|p| p == request.pasid);
        let queue = self.fault_mut(fault);
        let mut aborted = Vec::new();
        queue.queued.retain(|queued| match queued.request {
            Some(request) if matches(&request) => {
                aborted.push(request);
                false
            }
            _ => true,
        });
        queue.awaiting.retain(|_, request| {
            if matches(request) {
                aborted.push(*request);
                false
            } else {
                true
            }
        });
        self.refund(self.objects[fault].owner, budget::FAULT_RECORD.times(aborted.len() as u64));
        for request in aborted {
            self.backend.page_response(request.unit, request.rid, request.pasid, request.group, PageResponseCode::Invalid);
        }
    }

    pub(super) fn fault_users(&self, fault: ObjectId) -> (Vec<ObjectId>, Vec<(ObjectId, Option<u32>)>) {
        let mut hwpts = Vec::new();
        let mut binds = Vec::new();
        for (id, object) in self.objects.iter() {
            match &object.body {
                Body::Hwpt(hwpt) if hwpt.fault == Some(fault) => hwpts.push(id),
                Body::Device(device) => {
                    for (pasid, attachment) in &device.attachments {
                        if matches!(attachment, Attachment::Sva { fault: Some(f), .. } if *f == fault) {
                            binds.push((id, *pasid));
                        }
                    }
                }
                _ => {}
            }
        }
        (hwpts, binds)
    }

    /// Destroy a fault queue even if used: users lose their queue (their faults become
    /// unrouted) rather than being destroyed.
    pub(super) fn teardown_fault(&mut self, fault: ObjectId) {
        let (hwpts, binds) = self.fault_users(fault);
        for hwpt in hwpts {
            self.hwpt_mut(hwpt).fault = None;
        }
        for (device, pasid) in binds {
            if let Some(Attachment::Sva { fault, .. }) = self.device_mut(device).attachments.get_mut(&pasid) {
                *fault = None;
            }
        }
        self.free_unused(fault);
    }
}
