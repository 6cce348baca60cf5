//! The page request queue (spec 7.5) and page group responses.
//!
//! Enabled once, before any device is attached: every scalable context entry written after
//! [`VtdUnit::enable_page_requests`] carries PRE (page request enable), so a device with PRI
//! may send page requests; before it, the unit answers them itself with "invalid request".

use hwio::{Clock, DmaAllocator, Registers};

use super::{Mode, VtdUnit, PAGE};
use crate::descriptors::Invalidation;
use crate::dma::DmaTable;
use crate::page_request::{PageRequest, PageRequestDescriptor, PageRequestReport, DESCRIPTOR_BYTES};
use crate::regs::{self, event_control, page_queue_index, pqa, prs};
use crate::{RequesterId, VtdError};

/// The unit's page request queue: one page of descriptors (PQA.PQS = 0).
#[derive(Debug)]
pub(super) struct PageRequestQueue {
    memory: DmaTable,
}

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Sets up the page request queue (PQH = PQT = 0, then PQA). Needs scalable mode and
    /// ECAP.PRS, and must come before the first attach (module docs).
    pub fn enable_page_requests<A: DmaAllocator>(&mut self, alloc: &mut A) -> Result<(), VtdError> {
        if self.require_mode()? != Mode::Scalable || !self.hw.ecap.page_requests() {
            return Err(VtdError::Unsupported("page requests need scalable mode and ECAP.PRS"));
        }
        if self.page_requests.is_some() || !self.devices.is_empty() {
            return Err(VtdError::InvalidArgument("page requests are enabled once, before any attach"));
        }
        // The unit writes descriptors; the driver only reads them: coherent or not, nothing of
        // the queue is ever flushed for the device.
        let memory = DmaTable::allocate(alloc, PAGE, true)?;
        self.hw.regs.write64(regs::PQH, 0);
        self.hw.regs.write64(regs::PQT, 0);
        self.hw.regs.write64(regs::PQA, memory.phys() & pqa::ADDRESS | pqa::PQS.place(0));
        self.page_requests = Some(PageRequestQueue { memory });
        Ok(())
    }

    /// Whether the page request queue is set up.
    pub fn page_requests_enabled(&self) -> bool {
        self.page_requests.is_some()
    }

    /// Programs the page request event MSI (PEDATA, PEADDR, PEUADDR) and unmasks it.
    pub fn enable_page_request_interrupts(&mut self, msi_address: u64, msi_data: u32) {
        self.hw.regs.write32(regs::PEDATA, msi_data);
        self.hw.regs.write32(regs::PEADDR, msi_address as u32);
        self.hw.regs.write32(regs::PEUADDR, (msi_address >> 32) as u32);
        self.hw.regs.write32(regs::PECTL, 0);
    }

    /// Masks the page request event (PECTL.IM); requests are still queued.
    pub fn mask_page_request_interrupts(&mut self) {
        self.hw.regs.write32(regs::PECTL, event_control::IM);
    }

    /// Takes every descriptor between PQH and PQT, oldest first, and hands the slots back
    /// (PQH = PQT). PPR is cleared first, so a request the unit writes meanwhile sets it again
    /// and raises a new event rather than being missed. PRO, if set, is reported and cleared.
    pub fn drain_page_requests(&mut self) -> PageRequestReport {
        let mut report = PageRequestReport::default();
        let Some(queue) = &self.page_requests else { return report };
        let registers = &self.hw.regs;
        registers.write32(regs::PRS, prs::PPR);
        let head = (registers.read64(regs::PQH) & page_queue_index::OFFSET) as usize;
        let tail = (registers.read64(regs::PQT) & page_queue_index::OFFSET) as usize;
        let mut offset = head;
        while offset != tail {
            let mut descriptor = PageRequestDescriptor::default();
            for (index, word) in descriptor.words.iter_mut().enumerate() {
                *word = queue.memory.read_word(offset + index * 8);
            }
            // A descriptor of a type this driver does not know is skipped: it names no
            // request to answer.
            report.requests.extend(PageRequest::decode(&descriptor));
            offset = (offset + DESCRIPTOR_BYTES) % PAGE;
        }
        registers.write64(regs::PQH, tail as u64);
        if registers.read32(regs::PRS) & prs::PRO != 0 {
            report.overflowed = true;
            registers.write32(regs::PRS, prs::PRO);
        }
        report
    }

    /// Answers page request group `group` of `requester` (at `pasid` if its requests carried
    /// one) with a page group response descriptor, and waits until the unit has taken it.
    /// `code` is one of [`crate::descriptors::response_code`].
    pub fn respond_to_page_group<A: DmaAllocator>(
        &mut self,
        requester: RequesterId,
        pasid: Option<u32>,
        group: u16,
        code: u8,
        alloc: &A,
    ) -> Result<(), VtdError> {
        if self.page_requests.is_none() {
            return Err(VtdError::NotInitialized);
        }
        self.hw.invalidate(alloc, &[Invalidation::PageGroupResponse { requester: requester.0, pasid, group, code }])
    }
}
