//! Interrupt remapping: the interrupt remapping table and its entries (spec 5.1, 9.10).

use hwio::{Clock, DmaAllocator, Registers};

use super::hardware::InvalidationEngine;
use super::{VtdUnit, IRTE_BYTES};
use crate::descriptors::Invalidation;
use crate::dma::DmaTable;
use crate::irq::{ApicMode, InterruptRemapEntry, RemappableMsi};
use crate::regs::{self, gcmd, irta};
use crate::tables::HardwareEntry;
use crate::{RequesterId, VtdError};

pub(super) struct InterruptTable {
    table: DmaTable,
    entries: u32,
    apic_mode: ApicMode,
}

impl<R: Registers, C: Clock> VtdUnit<R, C> {
    /// Installs a table of 2^`entries_log2` IRTEs (all not present: every remapped interrupt
    /// blocked), invalidates the interrupt entry cache and enables interrupt remapping, in the
    /// order spec 11.4.4 (GCMD.SIRTP) demands: IRTA (11.4.11.1: address 63:12, EIME bit 11,
    /// S 3:0 = log2(entries) - 1), SIRTP and its status IRTPS (GSTS bit 24), a global
    /// interrupt-entry-cache invalidation through the queue (6.5.2.7), and only then IRE
    /// (bit 25). Compatibility-format interrupts are blocked (CFI, bit 23, cleared if firmware
    /// left it set: with CFIS=1 they would bypass the table, spec 5.1.2.1). QEMU needs
    /// `kernel-irqchip=split` for its interrupt remapping.
    pub fn enable_interrupt_remapping<A: DmaAllocator>(
        &mut self,
        entries_log2: u8,
        apic_mode: ApicMode,
        alloc: &mut A,
    ) -> Result<(), VtdError> {
        self.require_mode()?;
        if !self.hw.ecap.interrupt_remapping() {
            return Err(VtdError::Unsupported("interrupt remapping needs ECAP.IR"));
        }
        if !matches!(self.hw.invalidator, Some(InvalidationEngine::Queued(_))) {
            return Err(VtdError::Unsupported("interrupt remapping needs queued invalidation"));
        }
        if apic_mode == ApicMode::X2Apic && !self.hw.ecap.extended_interrupt_mode() {
            return Err(VtdError::Unsupported("x2APIC destinations need ECAP.EIM"));
        }
        if !(1..=16).contains(&entries_log2) {
            return Err(VtdError::InvalidArgument("IRTE count must be 2^1..2^16"));
        }
        if self.interrupts.is_some() {
            return Err(VtdError::InvalidArgument("interrupt remapping already enabled"));
        }
        let table = DmaTable::allocate(alloc, IRTE_BYTES << entries_log2, self.hw.coherent())?;
        let extended = if apic_mode == ApicMode::X2Apic { irta::EIME } else { 0 };
        self.hw.regs.write64(regs::IRTA, table.phys() | extended | irta::S.place(entries_log2 as u64 - 1));
        self.interrupts = Some(InterruptTable { table, entries: 1 << entries_log2, apic_mode });
        self.hw.one_shot(gcmd::SIRTP)?;
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntryGlobal])?;
        if self.hw.regs.read32(regs::GSTS) & gcmd::CFI != 0 {
            self.hw.set_enable(gcmd::CFI, false)?;
        }
        self.hw.set_enable(gcmd::IRE, true)
    }

    /// Points IRTE `index` at `vector` on CPU `destination` (APIC id), accepting the interrupt
    /// only from `source`, and returns the MSI address/data to program into the device.
    /// The entry cache is invalidated afterwards, which is also how QEMU learns of the change.
    pub fn program_irte<A: DmaAllocator>(
        &mut self,
        index: u16,
        vector: u8,
        destination: u32,
        source: RequesterId,
        alloc: &mut A,
    ) -> Result<RemappableMsi, VtdError> {
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::Unsupported("interrupt remapping not enabled"))?;
        if index as u32 >= interrupts.entries {
            return Err(VtdError::InvalidArgument("IRTE index beyond table"));
        }
        if interrupts.apic_mode == ApicMode::XApic && destination > 0xff {
            return Err(VtdError::InvalidArgument("xAPIC destination beyond 8 bits"));
        }
        let entry = InterruptRemapEntry::remapped(vector, destination, interrupts.apic_mode, source);
        // A present entry is cleared and invalidated first ("blocked, never wrong").
        self.retire_irte(index, alloc)?;
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::NotInitialized)?;
        interrupts.table.publish(alloc, index as usize * IRTE_BYTES, &entry)?;
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntries { index, index_mask: 0 }])?;
        Ok(RemappableMsi::for_handle(index))
    }

    /// Makes IRTE `index` not present again.
    pub fn clear_irte<A: DmaAllocator>(&mut self, index: u16, alloc: &mut A) -> Result<(), VtdError> {
        if self.retire_irte(index, alloc)? {
            Ok(())
        } else {
            Err(VtdError::NotAttached)
        }
    }

    fn retire_irte<A: DmaAllocator>(&mut self, index: u16, alloc: &A) -> Result<bool, VtdError> {
        let interrupts = self.interrupts.as_ref().ok_or(VtdError::Unsupported("interrupt remapping not enabled"))?;
        if index as u32 >= interrupts.entries {
            return Err(VtdError::InvalidArgument("IRTE index beyond table"));
        }
        let offset = index as usize * IRTE_BYTES;
        if !interrupts.table.read_entry::<InterruptRemapEntry>(offset).is_present() {
            return Ok(false);
        }
        interrupts.table.clear(alloc, offset, InterruptRemapEntry::WORDS);
        self.hw.invalidate(alloc, &[Invalidation::InterruptEntries { index, index_mask: 0 }])?;
        Ok(true)
    }
}
