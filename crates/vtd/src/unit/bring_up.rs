//! Bring-up ([`VtdUnit::init`]).
//!
//! Interrupt remapping and queued invalidation, if firmware or an ended server left them on, are
//! turned off (the queue's address can change only with QIE clear); an empty root table is
//! installed (RTADDR + SRTP, TTM selecting legacy or scalable mode); queued invalidation is
//! enabled when ECAP.QI (register-based otherwise); all caches are invalidated globally; stale
//! fault records are cleared; translation is enabled, and only then are protected memory
//! regions disabled (PMEN), which until then kept DMA from their memory. The root table is empty, so every requester id faults ("root entry not present"):
//! default deny, every device blocked until attached.
//!
//! Translation (TE) is never turned off on the way. A unit found translating belongs to an
//! ended server (or firmware), whose tables the kernel keeps in quarantine; with TE clear the
//! unit would pass DMA through untranslated to any address, so the new root table replaces
//! the old one while translation stays on (SRTP with TE set, spec 11.4.4 and 6.5), and the
//! global invalidations that follow drop every cached entry of the old tables.

use alloc::vec::Vec;

use hwio::{Clock, DmaAllocator, Registers};

use super::hardware::InvalidationEngine;
use super::{Mode, VtdUnit, PAGE};
use crate::descriptors::Invalidation;
use crate::dma::DmaTable;
use crate::invalidate::{QueuedInvalidator, RegisterInvalidator};
use crate::regs::{self, gcmd, pmen, rtaddr};
use crate::{wait_for, VtdError, WaitTarget};

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Brings the unit up with translation enabled and every requester blocked (module docs).
    /// Not retried: after an error the tables allocated so far stay with this object, and the
    /// caller reports the unit as failed.
    pub fn init<A: DmaAllocator>(&mut self, mode: Mode, alloc: &mut A) -> Result<(), VtdError> {
        if self.mode.is_some() {
            return Err(VtdError::InvalidArgument("unit already initialized"));
        }
        if mode == Mode::Scalable && !self.hw.ecap.scalable_mode() {
            return Err(VtdError::Unsupported("scalable mode needs ECAP.SMTS"));
        }
        if mode == Mode::Scalable && !self.hw.ecap.queued_invalidation() {
            return Err(VtdError::Unsupported("scalable mode needs queued invalidation"));
        }

        // Quiesce what an earlier owner may have left on, except translation (module docs).
        let status = self.hw.regs.read32(regs::GSTS);
        for bit in [gcmd::IRE, gcmd::QIE] {
            if status & bit != 0 {
                self.hw.set_enable(bit, false)?;
            }
        }

        let root = DmaTable::allocate(alloc, PAGE, self.hw.coherent())?;
        let mode_bits = match mode {
            Mode::Legacy => rtaddr::TTM_LEGACY,
            Mode::Scalable => rtaddr::TTM_SCALABLE,
        };
        self.hw.regs.write64(regs::RTADDR, root.phys() | mode_bits);
        self.root = Some(root);
        self.hw.flush_write_buffer()?;
        self.hw.one_shot(gcmd::SRTP)?;

        if self.hw.ecap.queued_invalidation() {
            let drain = (self.hw.cap.read_draining(), self.hw.cap.write_draining());
            let mut queue = QueuedInvalidator::new(alloc, mode == Mode::Scalable, self.hw.coherent())?.with_drain(drain.0, drain.1);
            queue.program(&self.hw.regs);
            self.hw.invalidator = Some(InvalidationEngine::Queued(queue));
            self.hw.set_enable(gcmd::QIE, true)?;
        } else {
            self.hw.invalidator = Some(InvalidationEngine::Register(RegisterInvalidator::new(
                self.hw.ecap.iotlb_register_offset(),
                self.hw.cap.read_draining(),
                self.hw.cap.write_draining(),
            )));
        }

        let mut batch = Vec::from([Invalidation::ContextGlobal]);
        if mode == Mode::Scalable {
            batch.push(Invalidation::PasidCacheGlobal);
        }
        batch.push(Invalidation::IotlbGlobal);
        self.hw.invalidate(alloc, &batch)?;

        self.drain_faults();
        self.hw.set_enable(gcmd::TE, true)?;
        // Protected memory regions firmware enabled keep DMA from that memory until now; they
        // go only once translation is on (spec 10.4.16), or DMA would pass untranslated in
        // between. With translation on they would still exempt their memory from the domains'
        // mappings (spec 11.4.13), so they go.
        if self.hw.cap.protected_low_region() || self.hw.cap.protected_high_region() {
            self.hw.regs.write32(regs::PMEN, 0);
            let registers = &self.hw.regs;
            wait_for(&self.hw.clock, self.hw.timeout_ns, WaitTarget::ProtectedMemory, || {
                registers.read32(regs::PMEN) & pmen::PRS == 0
            })?;
        }
        self.mode = Some(mode);
        Ok(())
    }
}
