//! Fault recording (spec 7.2.1): draining the fault recording registers and the fault event
//! interrupt.

use alloc::vec::Vec;

use hwio::{Clock, Registers};

use super::VtdUnit;
use crate::fault::{record, DecodedFault, FaultReport};
use crate::regs::{self, event_control, fsts};

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Programs the fault event MSI (FEDATA, FEADDR, FEUADDR) and unmasks it (FECTL.IM=0).
    pub fn enable_fault_interrupts(&mut self, msi_address: u64, msi_data: u32) {
        self.hw.regs.write32(regs::FEDATA, msi_data);
        self.hw.regs.write32(regs::FEADDR, msi_address as u32);
        self.hw.regs.write32(regs::FEUADDR, (msi_address >> 32) as u32);
        self.hw.regs.write32(regs::FECTL, 0);
    }

    /// Masks the fault event interrupt (FECTL.IM=1); faults are still recorded.
    pub fn mask_fault_interrupts(&mut self) {
        self.hw.regs.write32(regs::FECTL, event_control::IM);
    }

    /// Reads, decodes and clears every pending fault record (F bits), starting at FSTS.FRI,
    /// and clears FSTS.PFO.
    pub fn drain_faults(&mut self) -> FaultReport {
        let mut faults = Vec::new();
        let overflowed = self.drain_faults_each(|fault| faults.push(fault));
        FaultReport { faults, overflowed }
    }

    /// [`Self::drain_faults`], handing each fault to `each` as it is read (fault delivery
    /// allocates nothing); returns whether faults were lost (FSTS.PFO).
    pub fn drain_faults_each(&mut self, mut each: impl FnMut(DecodedFault)) -> bool {
        let registers = &self.hw.regs;
        let cap = self.hw.cap;
        let status = registers.read32(regs::FSTS);
        let overflowed = status & fsts::PFO != 0;
        if status & fsts::PPF != 0 {
            let count = cap.fault_record_count();
            let first = fsts::FRI.get(status.into()) as usize % count;
            for step in 0..count {
                let offset = cap.fault_recording_offset() + (first + step) % count * regs::FAULT_RECORD_SIZE;
                // F lives in the high word: read it first, then the address.
                let high = registers.read64(offset + 8);
                let Some(fault) = DecodedFault::decode(registers.read64(offset), high) else {
                    break;
                };
                registers.write32(offset + record::F_DWORD, record::F_IN_DWORD);
                each(fault);
            }
        }
        if overflowed {
            registers.write32(regs::FSTS, fsts::PFO);
        }
        overflowed
    }
}
