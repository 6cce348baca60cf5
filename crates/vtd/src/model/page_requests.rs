//! The model's page request queue and a device with ATS and PRI ([`PriDevice`]).
//!
//! What the model does, written from the spec (7.5) independently of the driver:
//! * a page request is accepted only from a requester whose scalable context entry is present
//!   with PRE (bit 4) set, and for a PASID only with PASIDE (bit 3); otherwise, or before PQA
//!   is programmed, the unit answers the group itself with "invalid request";
//! * an accepted request is written as a 32-byte descriptor at PQT, PQT advances, PPR is set,
//!   and the page request event is raised when PPR goes from 0 to 1 (pended in PECTL.IP while
//!   PECTL.IM is set);
//! * a request finding the queue full sets PRO and is not queued; if it closes its group
//!   (LPIG) the unit answers the group itself with "success", so the device retries (and
//!   asks again) rather than waiting forever;
//! * page group response descriptors from the invalidation queue reach the device in order;
//!   [`VtdModel::page_responses`] lists them all, the unit's own answers marked as such.

use alloc::vec::Vec;

use super::{CachedContext, ModelState, VtdModel};
use crate::descriptors::{response_code, PageGroupResponseDescriptor};
use crate::page_request::{PageRequest, DESCRIPTOR_BYTES};
use crate::regs::{self, event_control, page_queue_index, pqa, prs};
use crate::RequesterId;

/// A page group response as the device received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageGroupResponse {
    pub requester: RequesterId,
    pub pasid: Option<u32>,
    pub group: u16,
    /// A [`response_code`].
    pub code: u8,
    /// The unit answered by itself (no descriptor from software).
    pub from_unit: bool,
}

/// Page request registers and what the devices received.
#[derive(Debug)]
pub(super) struct PageRequestState {
    pqh: u64,
    pqt: u64,
    pqa: u64,
    prs: u32,
    pectl: u32,
    pedata: u32,
    peaddr: u32,
    peuaddr: u32,
    responses: Vec<PageGroupResponse>,
    interrupts: Vec<(u64, u32)>,
}

impl Default for PageRequestState {
    fn default() -> Self {
        PageRequestState {
            pqh: 0,
            pqt: 0,
            pqa: 0,
            prs: 0,
            pectl: event_control::IM,
            pedata: 0,
            peaddr: 0,
            peuaddr: 0,
            responses: Vec::new(),
            interrupts: Vec::new(),
        }
    }
}

impl PageRequestState {
    pub(super) fn is_64bit_register(offset: usize) -> bool {
        matches!(offset, regs::PQH | regs::PQT | regs::PQA)
    }

    pub(super) fn read64(&self, offset: usize) -> Option<u64> {
        match offset {
            regs::PQH => Some(self.pqh),
            regs::PQT => Some(self.pqt),
            regs::PQA => Some(self.pqa),
            _ => None,
        }
    }

    pub(super) fn write64(&mut self, offset: usize, value: u64) -> bool {
        match offset {
            regs::PQH => self.pqh = value & page_queue_index::OFFSET,
            regs::PQT => self.pqt = value & page_queue_index::OFFSET,
            regs::PQA => self.pqa = value,
            _ => return false,
        }
        true
    }

    pub(super) fn read32(&self, offset: usize) -> Option<u32> {
        match offset {
            regs::PRS => Some(self.prs),
            regs::PECTL => Some(self.pectl),
            regs::PEDATA => Some(self.pedata),
            regs::PEADDR => Some(self.peaddr),
            regs::PEUADDR => Some(self.peuaddr),
            _ => None,
        }
    }

    pub(super) fn write32(&mut self, offset: usize, value: u32) -> bool {
        match offset {
            // PPR and PRO are write-1-to-clear; the pending event goes once both are clear.
            regs::PRS => {
                self.prs &= !(value & (prs::PPR | prs::PRO));
                if self.prs == 0 {
                    self.pectl &= !event_control::IP;
                }
            }
            regs::PECTL => {
                self.pectl = self.pectl & event_control::IP | value & event_control::IM;
                if self.pectl & (event_control::IM | event_control::IP) == event_control::IP {
                    self.pectl &= !event_control::IP;
                    self.send_interrupt();
                }
            }
            regs::PEDATA => self.pedata = value,
            regs::PEADDR => self.peaddr = value,
            regs::PEUADDR => self.peuaddr = value,
            _ => return false,
        }
        true
    }

    fn send_interrupt(&mut self) {
        let address = (self.peuaddr as u64) << 32 | self.peaddr as u64;
        self.interrupts.push((address, self.pedata));
    }

    /// A page group response descriptor reached the head of the invalidation queue.
    pub(super) fn respond(&mut self, descriptor: &PageGroupResponseDescriptor) {
        self.responses.push(PageGroupResponse {
            requester: RequesterId(descriptor.requester() as u16),
            pasid: descriptor.pasid_present().then_some(descriptor.pasid() as u32),
            group: descriptor.group() as u16,
            code: descriptor.response_code() as u8,
            from_unit: false,
        });
    }

    fn answer_itself(&mut self, request: &PageRequest, code: u8) {
        let PageRequest { requester, pasid, group, .. } = *request;
        self.responses.push(PageGroupResponse { requester, pasid, group, code, from_unit: true });
    }
}

impl ModelState {
    /// Whether the unit takes page requests from `requester` (at `pasid`).
    fn accepts_page_requests(&mut self, memory: &super::PhysMemory, requester: RequesterId, pasid: Option<u32>) -> bool {
        if self.gsts & regs::gcmd::TE == 0 || self.prq.pqa == 0 {
            return false;
        }
        let walker = self.walker(memory);
        match self.context(walker, requester) {
            Ok(CachedContext::Scalable { page_requests_enabled, pasid_enabled, .. }) => {
                page_requests_enabled && (pasid.is_none() || pasid_enabled)
            }
            _ => false,
        }
    }
}

impl VtdModel {
    /// A device's page request (PCIe PRI). Returns whether the unit queued it (else it
    /// answered the group itself, or dropped a request that does not close its group).
    pub fn page_request(&self, request: PageRequest) -> bool {
        let mut state = self.state.borrow_mut();
        if !state.accepts_page_requests(&self.memory, request.requester, request.pasid) {
            if request.last_in_group {
                state.prq.answer_itself(&request, response_code::INVALID_REQUEST);
            }
            return false;
        }
        let queue_bytes = 4096u64 << pqa::PQS.get(state.prq.pqa);
        let next = (state.prq.pqt + DESCRIPTOR_BYTES as u64) % queue_bytes;
        if next == state.prq.pqh {
            state.prq.prs |= prs::PRO;
            if request.last_in_group {
                state.prq.answer_itself(&request, response_code::SUCCESS);
            }
            return false;
        }
        let slot = (state.prq.pqa & pqa::ADDRESS) + state.prq.pqt;
        for (index, word) in request.encode().words.iter().enumerate() {
            self.memory.write_u64(slot + index as u64 * 8, *word).expect("the page request queue lies in memory");
        }
        state.prq.pqt = next;
        if state.prq.prs & prs::PPR == 0 {
            state.prq.prs |= prs::PPR;
            if state.prq.pectl & event_control::IM != 0 {
                state.prq.pectl |= event_control::IP;
            } else {
                state.prq.send_interrupt();
            }
        }
        true
    }

    /// Every page group response devices received so far, in order.
    pub fn page_responses(&self) -> Vec<PageGroupResponse> {
        self.state.borrow().prq.responses.clone()
    }

    /// Page request event MSIs sent: (address, data).
    pub fn page_request_interrupts(&self) -> Vec<(u64, u32)> {
        self.state.borrow().prq.interrupts.clone()
    }

    /// An ATS translation request: the translation, or the fault reason, goes back to the
    /// device and no fault is recorded (the device decides what to do: a PRI device asks for
    /// the page).
    pub fn translation_request(&self, requester: RequesterId, pasid: Option<u32>, iova: u64, write: bool) -> Result<u64, u8> {
        let mut state = self.state.borrow_mut();
        if state.gsts & regs::gcmd::TE == 0 {
            return Ok(iova);
        }
        let walker = state.walker(&self.memory);
        state.translate(walker, requester, pasid, iova, write).map_err(|(reason, _)| reason)
    }
}

/// How a [`PriDevice`] access ended, or that it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriOutcome {
    /// Every byte was written (or read: the bytes).
    Completed(Vec<u8>),
    /// Held: page requests went out in this group; the device waits for its response.
    Held { group: u16 },
    /// Failed: the response was not "success" (its code), or the retried access still did
    /// not translate (the fault reason).
    Failed(u8),
}

#[derive(Debug, Clone)]
struct HeldAccess {
    pasid: Option<u32>,
    iova: u64,
    /// `Some(bytes)` for a write, `None` for a read of `len` bytes.
    data: Option<Vec<u8>>,
    len: usize,
    group: u16,
}

/// A device with ATS and PRI on one requester ID: an access whose pages do not translate is
/// held, with one page request per missing page in one group (LPIG on the last), until the
/// group's response arrives; on "success" the device starts the access over (translation
/// requests, new page requests for what is still missing, else the DMA through the unit).
pub struct PriDevice<'a> {
    model: &'a VtdModel,
    requester: RequesterId,
    next_group: u16,
    held: Vec<HeldAccess>,
    /// How many of the model's responses this device has looked at.
    seen_responses: usize,
}

impl<'a> PriDevice<'a> {
    pub fn new(model: &'a VtdModel, requester: RequesterId) -> Self {
        PriDevice { model, requester, next_group: 1, held: Vec::new(), seen_responses: 0 }
    }

    /// A DMA write of `data` at `iova`.
    pub fn write(&mut self, pasid: Option<u32>, iova: u64, data: &[u8]) -> PriOutcome {
        self.start(HeldAccess { pasid, iova, data: Some(data.to_vec()), len: data.len(), group: 0 })
    }

    /// A DMA read of `len` bytes at `iova`.
    pub fn read(&mut self, pasid: Option<u32>, iova: u64, len: usize) -> PriOutcome {
        self.start(HeldAccess { pasid, iova, data: None, len, group: 0 })
    }

    fn pages(access: &HeldAccess) -> impl Iterator<Item = u64> {
        let first = access.iova & !0xfff;
        let last = (access.iova + access.len.max(1) as u64 - 1) & !0xfff;
        (first..=last).step_by(4096)
    }

    fn start(&mut self, mut access: HeldAccess) -> PriOutcome {
        let write = access.data.is_some();
        let missing: Vec<u64> = Self::pages(&access)
            .filter(|&page| self.model.translation_request(self.requester, access.pasid, page, write).is_err())
            .collect();
        if missing.is_empty() {
            return self.perform(&access);
        }
        let group = self.next_group;
        self.next_group = (self.next_group + 1) % 512;
        for (index, &page) in missing.iter().enumerate() {
            self.model.page_request(PageRequest {
                requester: self.requester,
                pasid: access.pasid,
                address: page,
                read: !write,
                write,
                last_in_group: index + 1 == missing.len(),
                group,
            });
        }
        access.group = group;
        self.held.push(access);
        PriOutcome::Held { group }
    }

    /// The access through the unit (translated DMA; faults are recorded as usual).
    fn perform(&self, access: &HeldAccess) -> PriOutcome {
        let result = match &access.data {
            Some(data) => self.model.dma_write(self.requester, access.pasid, access.iova, data).map(|()| data.clone()),
            None => self.model.dma_read(self.requester, access.pasid, access.iova, access.len),
        };
        match result {
            Ok(bytes) => PriOutcome::Completed(bytes),
            Err(reason) => PriOutcome::Failed(reason),
        }
    }

    /// Takes the responses that arrived since the last call and moves on the held accesses
    /// they answer: (answered group, outcome) each; an access still missing pages is held
    /// again under a new group. A response for no held group is ignored, as a device ignores
    /// an unexpected PRG response.
    pub fn poll(&mut self) -> Vec<(u16, PriOutcome)> {
        let responses = self.model.page_responses();
        let mut finished = Vec::new();
        for response in &responses[self.seen_responses..] {
            if response.requester != self.requester {
                continue;
            }
            let Some(index) = self.held.iter().position(|held| held.group == response.group && held.pasid == response.pasid) else {
                continue;
            };
            let access = self.held.remove(index);
            let group = access.group;
            // Success: the device starts over, asking again for any page still missing (a
            // pager may have mapped only some), as a PRI device retries its translations.
            let outcome = if response.code == response_code::SUCCESS { self.start(access) } else { PriOutcome::Failed(response.code) };
            finished.push((group, outcome));
        }
        self.seen_responses = responses.len();
        finished
    }

    /// How many accesses wait for a response.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
