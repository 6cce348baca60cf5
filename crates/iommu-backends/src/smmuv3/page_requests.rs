//! Recoverable faults on SMMUv3: page requests from the PRI queue and stalled transactions,
//! each delivered to the object model as one `PageRequest` event and answered once, with
//! CMD_PRI_RESP or CMD_RESUME. Units without PRI and stalls (QEMU 10.0.2) deliver none.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iommu_abi::{Access, FaultReason, FaultStage, PageResponseCode};
use iommu_core::{DrainedFault, FaultEvent, RequesterId, UnitId};
use smmuv3::pri::{PriResponse, ResumeAction};
use smmuv3::{DecodedEvent, Env, SmmuError};

use super::{access_of, DomainStage, SmmuUnit};
use crate::Environment;

/// The group number a stalled transaction is delivered with: its STAG with this bit set, so
/// it never equals a PRI group index (9 bits).
const STALL_GROUP: u32 = 1 << 16;
/// What a page request delivered with `group` is: a stalled transaction or a PRI request.
pub(super) fn request_name(group: u32) -> &'static str {
    if group & STALL_GROUP != 0 {
        "stalled transaction"
    } else {
        "page request"
    }
}

/// The PRI queue holds 2^8 requests (4 KiB).
const PRI_QUEUE_LOG2: u32 = 8;

/// How a delivered request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// CMD_PRI_RESP for (StreamID, SubstreamID, group).
    PageGroup { sid: u32, group: u16 },
    /// CMD_RESUME for (StreamID, STAG).
    Resume { sid: u32, stag: u16 },
}

/// Requests delivered and not yet answered, by (requester, PASID, group as delivered). A
/// request is answered only while it is here, so never twice.
#[derive(Default)]
pub(super) struct Outstanding(BTreeMap<(u32, Option<u32>, u32), Answer>);

impl<R: hwio::Registers> SmmuUnit<R> {
    /// Enables what the unit has of PRI and stalls; called at bring-up.
    pub(super) fn enable_recoverable_faults(&mut self, env: &mut Env<'_>) -> Result<(), SmmuError> {
        // Stalls are set in a stream's single CD: streams with CD tables (substreams) do not stall.
        self.stalls = self.stage == DomainStage::Stage1 && !self.hw.id_registers().stall_unsupported() && self.substream_bits() == 0;
        if self.hw.id_registers().pri() {
            self.hw.enable_page_requests(env, PRI_QUEUE_LOG2)?;
        }
        Ok(())
    }

    /// Whether the unit delivers page requests (PRI or stalls).
    pub(super) fn recoverable_faults(&self) -> bool {
        self.stalls || self.hw.page_requests_enabled()
    }

    fn deliver(&mut self, event: FaultEvent, answer: Answer, sink: &mut dyn FnMut(DrainedFault)) -> bool {
        if self.outstanding.0.insert((event.rid.0, event.pasid, event.group), answer).is_some() {
            // Reused before it was answered: the answer to the first delivery serves both.
            return false;
        }
        sink(DrainedFault { event, code: 0 });
        true
    }

    /// Stalled transactions, one event each (with a requester to answer for), and the PRI
    /// queue's requests, one event per group (its last request). Returns how many it
    /// delivered; `log` learns about what it could not.
    pub(super) fn deliver_recoverable(&mut self, unit_id: UnitId, stalls: Vec<DecodedEvent>, sink: &mut dyn FnMut(DrainedFault), log: &dyn Fn(core::fmt::Arguments<'_>)) -> usize {
        let mut delivered = 0;
        for stalled in stalls {
            let (Some(stag), Some(rid)) = (stalled.stall_tag, self.requester_of(stalled.stream_id)) else { continue };
            let event = FaultEvent {
                unit: unit_id,
                rid: RequesterId(rid),
                pasid: stalled.substream_id,
                iova: stalled.input_addr.unwrap_or(0),
                access: access_of(&stalled),
                reason: FaultReason::PageRequest,
                group: STALL_GROUP | u32::from(stag),
                stage: FaultStage::Unspecified,
            };
            delivered += usize::from(self.deliver(event, Answer::Resume { sid: stalled.stream_id, stag }, sink));
        }
        let drain = self.hw.drain_page_requests();
        if drain.overflowed {
            log(format_args!("iommu-server: unit {}: PRI queue overflowed; the SMMU answered those groups", unit_id.0));
        }
        for request in drain.requests.iter().filter(|request| request.last) {
            let Some(rid) = self.requester_of(request.stream_id) else { continue };
            let mut access = Access::empty();
            if request.read {
                access = access.union(Access::READ);
            }
            if request.write {
                access = access.union(Access::WRITE);
            }
            let event = FaultEvent {
                unit: unit_id,
                rid: RequesterId(rid),
                pasid: request.substream_id,
                iova: request.address,
                access,
                reason: FaultReason::PageRequest,
                group: u32::from(request.group),
                stage: FaultStage::Unspecified,
            };
            delivered += usize::from(self.deliver(event, Answer::PageGroup { sid: request.stream_id, group: request.group }, sink));
        }
        delivered
    }

    /// Answers a delivered request: success retries the access, anything else fails it.
    pub(super) fn answer<E: Environment>(&mut self, env: &mut Env<'_>, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode) {
        let Some(answer) = self.outstanding.0.remove(&(rid.0, pasid, group)) else {
            E::log(format_args!("iommu-server: request {group:#x} of {:#06x} is not awaiting an answer; none sent", rid.0));
            return;
        };
        let result = match answer {
            Answer::PageGroup { sid, group } => {
                let response = match code {
                    PageResponseCode::Success => PriResponse::Success,
                    PageResponseCode::Invalid => PriResponse::Deny,
                    PageResponseCode::Failure => PriResponse::Fail,
                };
                self.hw.respond_to_page_group(env, sid, pasid, group, response)
            }
            Answer::Resume { sid, stag } => {
                let action = if code == PageResponseCode::Success { ResumeAction::Retry } else { ResumeAction::Terminate };
                self.hw.resume_stalled(env, sid, stag, action)
            }
        };
        // An answer that does not reach the SMMU leaves one transaction waiting; nothing is
        // unsafe about that, so it is logged rather than fatal.
        if let Err(error) = result {
            E::log(format_args!("iommu-server: answer to {:#06x} failed: {error:?}", rid.0));
        }
    }
}
