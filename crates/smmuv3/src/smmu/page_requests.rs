//! The PRI queue, page group responses and stalled transactions ([`crate::pri`]).

use alloc::vec::Vec;

use hwio::{DmaBuffer, Registers};

use super::{Env, Smmu};
use crate::cmd::Command;
use crate::dma::{self, alloc_aligned, read_word, write_word};
use crate::error::SmmuError;
use crate::pri::{PageRequest, PriEntry, PriResponse, ResumeAction};
use crate::queue::QueuePointer;
use crate::regs::{cr0, irq_ctrl, offset, queue_base_value};

/// PRIQ_PROD.OVFLG / PRIQ_CONS.OVACKFLG (bit 31).
const OVERFLOW_FLAG: u32 = 1 << 31;

pub(super) struct PriQueue {
    pub(super) buf: DmaBuffer,
    log2_entries: u32,
}

/// Result of [`Smmu::drain_page_requests`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriDrain {
    pub requests: Vec<PageRequest>,
    /// The PRI queue overflowed since the previous drain: requests were lost (the SMMU
    /// answered the groups they closed itself).
    pub overflowed: bool,
}

impl<R: Registers> Smmu<R> {
    /// Sets up the PRI queue (2^min(IDR1.PRIQS, `log2_cap`) entries), enables it (CR0.PRIQEN)
    /// and its interrupt. Needs IDR0.PRI.
    pub fn enable_page_requests(&mut self, env: &mut Env<'_>, log2_cap: u32) -> Result<(), SmmuError> {
        if !self.id.pri() {
            return Err(SmmuError::Unsupported("page requests (IDR0.PRI)"));
        }
        if self.priq.is_some() {
            return Err(SmmuError::InvalidConfig("the PRI queue is already enabled"));
        }
        let log2_entries = self.id.priq_log2_max().min(log2_cap);
        let buf = alloc_aligned(env.dma, PriEntry::SIZE << log2_entries)?;
        self.regs.write64(offset::PRIQ_BASE, queue_base_value(buf.phys, log2_entries));
        self.regs.write32(offset::PRIQ_PROD, 0);
        self.regs.write32(offset::PRIQ_CONS, 0);
        self.priq = Some(PriQueue { buf, log2_entries });
        let enabled = self.regs.read32(offset::CR0);
        self.write_cr0(env.clock, enabled | cr0::PRIQEN)?;
        let interrupts = self.regs.read32(offset::IRQ_CTRL);
        self.write_irq_ctrl(env.clock, interrupts | irq_ctrl::PRIQ_IRQEN)
    }

    /// Whether the PRI queue is enabled.
    pub fn page_requests_enabled(&self) -> bool {
        self.priq.is_some()
    }

    /// Reads and consumes every PRI queue entry, with the queue's overflow protocol (as the
    /// event queue's: OVFLG copied into OVACKFLG acknowledges it).
    pub fn drain_page_requests(&mut self) -> PriDrain {
        let Some(queue) = &self.priq else { return PriDrain::default() };
        let log2 = queue.log2_entries;
        let prod_reg = self.regs.read32(offset::PRIQ_PROD);
        let cons_reg = self.regs.read32(offset::PRIQ_CONS);
        dma::acquire_from_device();
        let prod = QueuePointer::from_register(log2, prod_reg);
        let mut cons = QueuePointer::from_register(log2, cons_reg);
        let mut drain = PriDrain::default();
        while !prod.is_empty_with(cons) {
            let off = cons.index() as usize * PriEntry::SIZE;
            let entry = PriEntry { words: [read_word(&queue.buf, off), read_word(&queue.buf, off + 8)] };
            drain.requests.push(entry.decode());
            cons = cons.next();
        }
        drain.overflowed = (prod_reg ^ cons_reg) & OVERFLOW_FLAG != 0;
        self.regs.write32(offset::PRIQ_CONS, cons.register_value() | (prod_reg & OVERFLOW_FLAG));
        drain
    }

    /// Answers page request group `group` of `sid` (CMD_PRI_RESP, then CMD_SYNC).
    pub fn respond_to_page_group(&mut self, env: &mut Env<'_>, sid: u32, ssid: Option<u32>, group: u16, response: PriResponse) -> Result<(), SmmuError> {
        if self.priq.is_none() {
            return Err(SmmuError::InvalidConfig("page requests are not enabled"));
        }
        self.execute(env, &[Command::pri_resp(sid, ssid, group, response)])
    }

    /// Makes stage-1 translation faults of `sid` stall (CD.S = 1) or abort (CD.S = 0). The
    /// stream must be attached at stage 1; needs IDR0.STALL_MODEL to allow stalls. CD word 0
    /// changes in one store, then CMD_CFGI_CD + CMD_SYNC.
    pub fn set_stall(&mut self, env: &mut Env<'_>, sid: u32, stall: bool) -> Result<(), SmmuError> {
        if self.id.stall_unsupported() {
            return Err(SmmuError::Unsupported("stalling faults (IDR0.STALL_MODEL)"));
        }
        let cd = self.contexts.get(&sid).ok_or(SmmuError::InvalidConfig("the stream has no stage-1 context descriptor"))?;
        let mut descriptor = crate::cd::ContextDescriptor::default();
        descriptor.words[0] = read_word(cd, 0);
        descriptor.set_stall(stall);
        write_word(cd, 0, descriptor.words[0]);
        dma::flush(&*env.dma, cd, 0, 8);
        self.execute(env, &[Command::cfgi_cd(sid, 0, true)])
    }

    /// Resumes (`Retry`) or aborts (`Terminate`) the transaction of `sid` stalled with `stag`
    /// (CMD_RESUME, then CMD_SYNC).
    pub fn resume_stalled(&mut self, env: &mut Env<'_>, sid: u32, stag: u16, action: ResumeAction) -> Result<(), SmmuError> {
        self.execute(env, &[Command::resume(sid, stag, action)])
    }
}
