//! Register access, timing and invalidation: the part of the unit every operation uses.
//!
//! # Global command discipline (spec 11.4.4)
//! GCMD is write-only and some of its bits are one-shot commands (SRTP, SFL, WBF, SIRTP). A
//! command value is therefore computed from GSTS with only the persistent enables kept, one bit
//! is changed per write, and GSTS is polled (bounded by the clock) until it reflects the change.

use hwio::{Clock, DmaAllocator, Registers};

use crate::descriptors::Invalidation;
use crate::invalidate::{Invalidator, QueuedInvalidator, RegisterInvalidator};
use crate::regs::{self, gcmd, Capability, ExtendedCapability};
use crate::{wait_for, VtdError, WaitTarget};

/// The two invalidation engines as one type, chosen at `init`.
#[derive(Debug)]
pub(super) enum InvalidationEngine {
    Queued(QueuedInvalidator),
    Register(RegisterInvalidator),
}

impl Invalidator for InvalidationEngine {
    fn invalidate<R: Registers, C: Clock, A: DmaAllocator>(
        &mut self,
        regs: &R,
        clock: &C,
        alloc: &A,
        timeout_ns: u64,
        batch: &[Invalidation],
    ) -> Result<(), VtdError> {
        match self {
            InvalidationEngine::Queued(queue) => queue.invalidate(regs, clock, alloc, timeout_ns, batch),
            InvalidationEngine::Register(registers) => registers.invalidate(regs, clock, alloc, timeout_ns, batch),
        }
    }
}

/// Register access, timing and invalidation: the part of the unit every operation uses.
pub(super) struct Hardware<R, C> {
    pub(super) regs: R,
    pub(super) clock: C,
    pub(super) cap: Capability,
    pub(super) ecap: ExtendedCapability,
    pub(super) timeout_ns: u64,
    pub(super) invalidator: Option<InvalidationEngine>,
}

impl<R: Registers, C: Clock> Hardware<R, C> {
    /// Sets or clears one persistent GCMD enable and waits for GSTS to follow.
    pub(super) fn set_enable(&self, bit: u32, enable: bool) -> Result<(), VtdError> {
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        let command = if enable { persistent | bit } else { persistent & !bit };
        self.regs.write32(regs::GCMD, command);
        let expected = if enable { bit } else { 0 };
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(bit), || {
            self.regs.read32(regs::GSTS) & bit == expected
        })
    }

    /// Issues a one-shot GCMD command (SRTP, SIRTP) and waits for its status bit to be set.
    pub(super) fn one_shot(&self, bit: u32) -> Result<(), VtdError> {
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        self.regs.write32(regs::GCMD, persistent | bit);
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(bit), || {
            self.regs.read32(regs::GSTS) & bit != 0
        })
    }

    /// Flushes the write buffer when CAP.RWBF demands it after table updates (spec 6.8);
    /// WBFS clears when the flush is done.
    pub(super) fn flush_write_buffer(&self) -> Result<(), VtdError> {
        if !self.cap.requires_write_buffer_flush() {
            return Ok(());
        }
        let persistent = self.regs.read32(regs::GSTS) & gcmd::PERSISTENT;
        self.regs.write32(regs::GCMD, persistent | gcmd::WBF);
        wait_for(&self.clock, self.timeout_ns, WaitTarget::GlobalStatus(gcmd::WBF), || {
            self.regs.read32(regs::GSTS) & gcmd::WBF == 0
        })
    }

    pub(super) fn invalidate<A: DmaAllocator>(&mut self, alloc: &A, batch: &[Invalidation]) -> Result<(), VtdError> {
        if batch.is_empty() {
            return Ok(());
        }
        let engine = self.invalidator.as_mut().ok_or(VtdError::NotInitialized)?;
        engine.invalidate(&self.regs, &self.clock, alloc, self.timeout_ns, batch)
    }

    pub(super) fn coherent(&self) -> bool {
        self.ecap.coherent()
    }

    /// The address width used where an entry needs one but no table is walked
    /// (pass-through): the widest supported of 4, 3 and 5 levels.
    pub(super) fn pass_through_levels(&self) -> u8 {
        [4, 3, 5].into_iter().find(|&levels| self.cap.supports_second_level_levels(levels)).unwrap_or(4)
    }
}
