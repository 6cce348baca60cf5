//! The model's recoverable faults: the PRI queue with CMD_PRI_RESP, stalled transactions with
//! CMD_RESUME, and a device that holds its access until either answer ([`RecoverableDevice`]).
//! QEMU 10.0.2 has neither (IDR0.PRI = 0, STALL_MODEL = 0b01); a configuration that sets
//! IDR0.PRI (bit 16) and STALL_MODEL = 0b00 gets them, written from the spec (3.9, 8.1, 4.7):
//! * a page request is queued only while SMMUEN and PRIQEN are set and the stream's STE is
//!   valid and not abort; otherwise the SMMU answers a request closing its group (Last) itself
//!   with Deny;
//! * a request finding the PRI queue full is dropped with PRIQ_PROD.OVFLG toggled (once per
//!   acknowledgement); if it closes its group the SMMU answers it itself with Success, so the
//!   device asks again instead of waiting forever (the model's choice, as the VT-d model's);
//! * a stage-1 translation-class fault of a stream whose CD has S = 1 and whose STE has
//!   S1STALLD = 0 stalls: the event is recorded with Stall = 1 and a fresh STAG (whatever CD.R
//!   says), and the transaction waits for CMD_RESUME with that STAG; CMD_RESUME naming no
//!   stalled transaction does nothing;
//! * every request queued while IRQ_CTRL.PRIQ_IRQEN is set raises the PRI queue interrupt
//!   (counted, [`SmmuModel::priq_interrupts`]), the wired SPI or MSI software waits on.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{Access, Aborted, SmmuModel, State};
use crate::cmd::Command;
use crate::pri::{PageRequest, PriResponse, ResumeAction};
use crate::queue::QueuePointer;
use crate::regs::{cr0, irq_ctrl, queue_base_addr, queue_base_log2size};
use crate::ste::StreamConfig;

const OVFLG: u32 = 1 << 31;

/// A CMD_PRI_RESP as the device received it (or the SMMU's own answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriResponseRecord {
    pub stream_id: u32,
    pub substream_id: Option<u32>,
    pub group: u16,
    /// Resp: 0 Deny, 1 Fail, 2 Success ([`PriResponse`]).
    pub response: u8,
    /// The SMMU answered by itself.
    pub from_smmu: bool,
}

#[derive(Debug, Clone, Copy)]
struct Stalled {
    stream_id: u32,
    /// The CMD_RESUME action once it came.
    resumed: Option<u8>,
}

#[derive(Default)]
pub(super) struct RecoverableState {
    pub(super) priq_base: u64,
    pub(super) priq_prod: u32,
    pub(super) priq_cons: u32,
    responses: Vec<PriResponseRecord>,
    stalled: BTreeMap<u16, Stalled>,
    next_stag: u16,
    interrupts: u64,
}

impl RecoverableState {
    /// CMD_PRI_RESP and CMD_RESUME; `None` for any other command.
    pub(super) fn execute(&mut self, cmd: &Command) -> Option<()> {
        match cmd.op() {
            crate::cmd::opcode::PRI_RESP => {
                self.responses.push(PriResponseRecord {
                    stream_id: cmd.stream_id() as u32,
                    substream_id: cmd.ssv().then_some(cmd.substream_id() as u32),
                    group: cmd.pri_group() as u16,
                    response: cmd.pri_response() as u8,
                    from_smmu: false,
                });
            }
            crate::cmd::opcode::RESUME => {
                let tag = cmd.stall_tag() as u16;
                if let Some(stalled) = self.stalled.get_mut(&tag).filter(|s| s.stream_id == cmd.stream_id() as u32 && s.resumed.is_none()) {
                    stalled.resumed = Some(cmd.resume_action() as u8);
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// A new stall of `stream_id`: its tag.
    pub(super) fn stall(&mut self, stream_id: u32) -> u16 {
        let tag = self.next_stag;
        self.next_stag = self.next_stag.wrapping_add(1);
        self.stalled.insert(tag, Stalled { stream_id, resumed: None });
        tag
    }

    fn answer_itself(&mut self, request: &PageRequest, response: PriResponse) {
        self.responses.push(PriResponseRecord {
            stream_id: request.stream_id,
            substream_id: request.substream_id,
            group: request.group,
            response: response as u8,
            from_smmu: true,
        });
    }
}

impl SmmuModel {
    /// Whether a stage-1 translation fault of `sid` stalls: CD.S = 1, STE.S1STALLD = 0, and
    /// the SMMU supports stalls.
    pub(super) fn stalls(&self, state: &State, sid: u32) -> bool {
        let stall_capable = !self.id().stall_unsupported();
        let ste_allows = state.stes.get(&sid).is_some_and(|ste| !ste.s1_stall_disable());
        stall_capable && ste_allows && state.cds.get(&sid).is_some_and(|cd| cd.stall())
    }

    /// A device's page request (PCIe PRI). Returns whether the SMMU queued it.
    pub fn page_request(&self, request: PageRequest) -> bool {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let enabled = state.cr0 & (cr0::SMMUEN | cr0::PRIQEN) == cr0::SMMUEN | cr0::PRIQEN && self.id().pri();
        let stream_live = enabled
            && match state.stes.get(&request.stream_id).copied().map(Ok).unwrap_or_else(|| self.fetch_ste(state, request.stream_id)) {
                Ok(ste) => !matches!(ste.config(), Some(StreamConfig::Abort) | None),
                Err(_) => false,
            };
        let queue = &mut state.recoverable;
        if !stream_live {
            if request.last {
                queue.answer_itself(&request, PriResponse::Deny);
            }
            return false;
        }
        let log2 = queue_base_log2size(queue.priq_base).min(self.id().priq_log2_max());
        let prod = QueuePointer::from_register(log2, queue.priq_prod);
        let cons = QueuePointer::from_register(log2, queue.priq_cons);
        if prod.is_full_with(cons) {
            if (queue.priq_prod ^ queue.priq_cons) & OVFLG == 0 {
                queue.priq_prod ^= OVFLG;
            }
            if request.last {
                queue.answer_itself(&request, PriResponse::Success);
            }
            return false;
        }
        let address = queue_base_addr(queue.priq_base) + prod.index() as u64 * crate::pri::PriEntry::SIZE as u64;
        for (i, word) in request.encode().words.iter().enumerate() {
            assert!(self.memory.write_u64(address + 8 * i as u64, *word), "the PRI queue lies in memory");
        }
        queue.priq_prod = (queue.priq_prod & OVFLG) | prod.next().register_value();
        if state.irq_ctrl & irq_ctrl::PRIQ_IRQEN != 0 {
            queue.interrupts += 1;
        }
        true
    }

    /// PRI queue interrupts raised so far.
    pub fn priq_interrupts(&self) -> u64 {
        self.state.borrow().recoverable.interrupts
    }

    /// Every page group response devices received, in order.
    pub fn pri_responses(&self) -> Vec<PriResponseRecord> {
        self.state.borrow().recoverable.responses.clone()
    }

    /// How CMD_RESUME resolved the transaction stalled with `stag`: `None` while it waits
    /// (or if no such transaction stalled), else the Action field.
    pub fn stall_resolution(&self, stag: u16) -> Option<u8> {
        self.state.borrow().recoverable.stalled.get(&stag).and_then(|stalled| stalled.resumed)
    }

    /// Transactions stalled and not yet resumed.
    pub fn stalled_transactions(&self) -> usize {
        self.state.borrow().recoverable.stalled.values().filter(|stalled| stalled.resumed.is_none()).count()
    }

    /// An ATS translation request: the translation, or `None`, goes back to the device; no
    /// event, no stall.
    pub fn translation_request(&self, sid: u32, ssid: Option<u32>, iova: u64, access: Access) -> Option<u64> {
        let mut state = self.state.borrow_mut();
        if state.cr0 & cr0::SMMUEN == 0 {
            return None;
        }
        self.translate_locked(&mut state, sid, ssid, iova, access == Access::Write).ok()
    }
}

/// How a [`RecoverableDevice`] access ended, or that it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverableOutcome {
    /// Done: the bytes written or read.
    Completed(Vec<u8>),
    /// Waiting for the response to page request group `group` (PRI).
    AwaitingResponse { group: u16 },
    /// Stalled with `stag`, waiting for CMD_RESUME.
    Stalled { stag: u16 },
    /// The access failed: denied, terminated, or aborted again after its retry.
    Failed,
}

/// How the device recovers from a translation fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// PCIe ATS + PRI: translation requests, page requests for the missing pages.
    PageRequests,
    /// Plain DMA on a stream whose faults stall.
    Stall,
}

#[derive(Debug, Clone)]
struct Held {
    ssid: Option<u32>,
    iova: u64,
    data: Option<Vec<u8>>,
    len: usize,
    waiting: RecoverableOutcome,
}

/// A device on one StreamID that recovers from translation faults (see [`Recovery`]).
pub struct RecoverableDevice<'a> {
    model: &'a SmmuModel,
    sid: u32,
    recovery: Recovery,
    next_group: u16,
    held: Vec<Held>,
    seen_responses: usize,
}

impl<'a> RecoverableDevice<'a> {
    pub fn new(model: &'a SmmuModel, sid: u32, recovery: Recovery) -> Self {
        RecoverableDevice { model, sid, recovery, next_group: 1, held: Vec::new(), seen_responses: 0 }
    }

    pub fn write(&mut self, ssid: Option<u32>, iova: u64, data: &[u8]) -> RecoverableOutcome {
        self.start(Held { ssid, iova, data: Some(data.to_vec()), len: data.len(), waiting: RecoverableOutcome::Failed })
    }

    pub fn read(&mut self, ssid: Option<u32>, iova: u64, len: usize) -> RecoverableOutcome {
        self.start(Held { ssid, iova, data: None, len, waiting: RecoverableOutcome::Failed })
    }

    fn start(&mut self, mut access: Held) -> RecoverableOutcome {
        let outcome = match self.recovery {
            Recovery::PageRequests => self.request_pages(&access),
            Recovery::Stall => self.perform(&access),
        };
        if matches!(outcome, RecoverableOutcome::AwaitingResponse { .. } | RecoverableOutcome::Stalled { .. }) {
            access.waiting = outcome.clone();
            self.held.push(access);
        }
        outcome
    }

    /// PRI: one request per page that does not translate, in one group; or the access itself
    /// when every page translates.
    fn request_pages(&mut self, access: &Held) -> RecoverableOutcome {
        let kind = if access.data.is_some() { Access::Write } else { Access::Read };
        let first = access.iova & !0xfff;
        let last = (access.iova + access.len.max(1) as u64 - 1) & !0xfff;
        let missing: Vec<u64> = (first..=last)
            .step_by(4096)
            .filter(|&page| self.model.translation_request(self.sid, access.ssid, page, kind).is_none())
            .collect();
        if missing.is_empty() {
            return self.perform(access);
        }
        let group = self.next_group;
        self.next_group = (self.next_group + 1) % 512;
        for (index, &page) in missing.iter().enumerate() {
            self.model.page_request(PageRequest {
                stream_id: self.sid,
                substream_id: access.ssid,
                address: page,
                read: kind == Access::Read,
                write: kind == Access::Write,
                last: index + 1 == missing.len(),
                group,
            });
        }
        RecoverableOutcome::AwaitingResponse { group }
    }

    /// The access through the SMMU; a stall leaves it waiting on its tag.
    fn perform(&self, access: &Held) -> RecoverableOutcome {
        let result = match &access.data {
            Some(data) => self.model.dma_write(self.sid, access.ssid, access.iova, data).map(|()| data.clone()),
            None => self.model.dma_read(self.sid, access.ssid, access.iova, access.len),
        };
        match result {
            Ok(bytes) => RecoverableOutcome::Completed(bytes),
            Err(Aborted { event: Some(event) }) if event.stall() => RecoverableOutcome::Stalled { stag: event.stag() as u16 },
            Err(_) => RecoverableOutcome::Failed,
        }
    }

    /// Moves on the held accesses whose answer arrived: (what it waited for, what happened);
    /// one that waits again (new page requests, or a new stall) stays held.
    pub fn poll(&mut self) -> Vec<(RecoverableOutcome, RecoverableOutcome)> {
        let responses = self.model.pri_responses();
        let fresh = &responses[self.seen_responses..];
        let mut finished = Vec::new();
        let mut still_held = Vec::new();
        for mut access in core::mem::take(&mut self.held) {
            let resolution = match access.waiting {
                RecoverableOutcome::AwaitingResponse { group } => fresh
                    .iter()
                    .find(|r| r.stream_id == self.sid && r.group == group && r.substream_id == access.ssid)
                    .map(|r| r.response == PriResponse::Success as u8),
                RecoverableOutcome::Stalled { stag } => self.model.stall_resolution(stag).map(|action| action == ResumeAction::Retry as u8),
                _ => None,
            };
            let Some(retry) = resolution else {
                still_held.push(access);
                continue;
            };
            // A PRI device starts over (asking again for pages still missing); a stalled
            // transaction is translated again (and may stall again).
            let outcome = match (retry, self.recovery) {
                (false, _) => RecoverableOutcome::Failed,
                (true, Recovery::PageRequests) => self.request_pages(&access),
                (true, Recovery::Stall) => self.perform(&access),
            };
            let waited = core::mem::replace(&mut access.waiting, outcome.clone());
            if matches!(outcome, RecoverableOutcome::AwaitingResponse { .. } | RecoverableOutcome::Stalled { .. }) {
                still_held.push(access);
            }
            finished.push((waited, outcome));
        }
        self.held = still_held;
        self.seen_responses = responses.len();
        finished
    }

    /// How many accesses wait.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
