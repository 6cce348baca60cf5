//! Page requests on VT-d: the unit's page request queue drained into the object model's
//! events, one per page request group, and the page group response sent back.

use alloc::collections::BTreeSet;
use iommu_abi::{Access, FaultReason, FaultStage, PageResponseCode};
use iommu_core::{DrainedFault, FaultEvent, RequesterId, UnitId};
use vtd::descriptors::response_code;
use vtd::VtdError;

use super::{TableKind, Unit};
use crate::Environment;

/// The page request groups a unit delivered and nobody has answered yet: (requester, PASID,
/// group index). A group is answered only while it is here, so never twice.
#[derive(Default)]
pub(super) struct OutstandingGroups(BTreeSet<(u16, Option<u32>, u16)>);

impl<E: Environment> Unit<E> {
    /// Sets up the page request queue if the unit has one (scalable mode, ECAP.PRS); called
    /// at bring-up, before any attach.
    pub(super) fn enable_page_requests(&mut self, dma: &mut E::Dma) -> Result<(), VtdError> {
        if self.kind == TableKind::LegacySecondLevel || !self.hw.extended_capability().page_requests() {
            return Ok(());
        }
        self.hw.enable_page_requests(dma)
    }

    /// Sends the unit's page request event as the MSI `address` / `data` (PEDATA E4h, PEADDR
    /// E8h, PEUADDR ECh, then PECTL E0h with IM, bit 31, cleared), if the unit has a page
    /// request queue; returns whether it has. A unit without one (every QEMU unit) keeps
    /// PECTL.IM set, as reset leaves it. The server gives it the fault event's MSI: one
    /// interrupt line wakes its event thread, whose drain of the unit takes the page requests
    /// after the faults.
    pub fn route_page_request_event(&mut self, address: u64, data: u32) -> bool {
        if !self.hw.page_requests_enabled() {
            return false;
        }
        self.hw.enable_page_request_interrupts(address, data);
        true
    }

    /// Takes the unit's page requests and gives `sink` one event per completed group (its
    /// last request, LPIG), recording the group as awaiting its response. Returns how many
    /// groups it delivered.
    pub(super) fn drain_page_requests(&mut self, unit_id: UnitId, sink: &mut dyn FnMut(DrainedFault)) -> usize {
        let report = self.hw.drain_page_requests();
        if report.overflowed {
            E::log(format_args!("iommu-server: unit {}: page request queue overflowed; the unit answered those groups", unit_id.0));
        }
        let mut delivered = 0;
        for request in report.requests.iter().filter(|request| request.last_in_group) {
            if !self.outstanding_groups.0.insert((request.requester.0, request.pasid, request.group)) {
                // The device reused a group index it has had no answer for: the answer to the
                // first delivery serves both.
                continue;
            }
            let mut access = Access::empty();
            if request.read {
                access = access.union(Access::READ);
            }
            if request.write {
                access = access.union(Access::WRITE);
            }
            let event = FaultEvent {
                unit: unit_id,
                rid: RequesterId(u32::from(request.requester.0)),
                pasid: request.pasid,
                iova: request.address,
                access,
                reason: FaultReason::PageRequest,
                group: u32::from(request.group),
                stage: FaultStage::Unspecified,
            };
            sink(DrainedFault { event, code: 0 });
            delivered += 1;
        }
        delivered
    }

    /// Sends the page group response for a group this unit delivered and nobody answered.
    pub(super) fn respond(&mut self, rid: RequesterId, pasid: Option<u32>, group: u32, code: PageResponseCode, dma: &E::Dma) {
        let Ok(group) = u16::try_from(group) else { return };
        let requester = rid.0 as u16;
        if !self.outstanding_groups.0.remove(&(requester, pasid, group)) {
            E::log(format_args!("iommu-server: page group {group} of {requester:#06x} is not awaiting an answer; none sent"));
            return;
        }
        let code = match code {
            PageResponseCode::Success => response_code::SUCCESS,
            PageResponseCode::Invalid => response_code::INVALID_REQUEST,
            PageResponseCode::Failure => response_code::RESPONSE_FAILURE,
        };
        // A response that does not reach the unit leaves one device waiting on one group;
        // nothing is unsafe about that, so it is logged rather than fatal.
        if let Err(error) = self.hw.respond_to_page_group(vtd::RequesterId(requester), pasid, group, code, dma) {
            E::log(format_args!("iommu-server: page group response to {requester:#06x} failed: {error:?}"));
        }
    }
}
