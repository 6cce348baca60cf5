//! QEMU's `edu` device (PCI 1234:11e8): identification, liveness and its DMA engine.

use hwio::{Registers, VolatileRegion};
use userlib::syscall;

/// Register offsets (those below 0x80 take 4-byte accesses only).
mod reg {
    pub const IDENTIFICATION: usize = 0x00;
    pub const LIVENESS: usize = 0x04;
    pub const INTERRUPT_STATUS: usize = 0x24;
    pub const INTERRUPT_RAISE: usize = 0x60;
    pub const INTERRUPT_ACKNOWLEDGE: usize = 0x64;
    pub const DMA_SOURCE: usize = 0x80;
    pub const DMA_DESTINATION: usize = 0x88;
    pub const DMA_COUNT: usize = 0x90;
    pub const DMA_COMMAND: usize = 0x98;
}

/// DMA command bits.
mod cmd {
    pub const RUN: u64 = 1 << 0;
    pub const TO_RAM: u64 = 1 << 1;
    /// Raise the interrupt (status `DMA_DONE`) when the transfer is done.
    pub const INTERRUPT: u64 = 1 << 2;
}

/// Interrupt status bit the device sets when a DMA with `cmd::INTERRUPT` finished.
pub const DMA_DONE: u32 = 0x100;

/// The expected identification register: version 1.0, "ed".
pub const IDENTIFICATION: u32 = 0x0100_00ed;
/// The device's internal buffer (bus addresses of DMA on the device side).
pub const BUFFER: u64 = 0x40000;

/// Instructions (TSC ticks) to wait for one DMA: the device takes 100 ms of virtual time.
const DMA_TIMEOUT: u64 = 20_000_000_000;

pub struct Edu {
    /// The first page of BAR0; the DMA registers take 8-byte accesses, the others 4-byte.
    registers: VolatileRegion,
}

impl Edu {
    /// # Safety
    /// `base` must map the device's BAR0 (at least its first page, page-aligned) for the life
    /// of the value.
    pub unsafe fn new(base: u64) -> Edu {
        // SAFETY: the caller's contract.
        Edu { registers: unsafe { VolatileRegion::at_address(base as usize, 4096) } }
    }

    fn read32(&self, offset: usize) -> u32 {
        self.registers.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.registers.write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        self.registers.read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        self.registers.write64(offset, value)
    }

    pub fn identification(&self) -> u32 {
        self.read32(reg::IDENTIFICATION)
    }

    /// Whether the device answers: the liveness register reads back the complement.
    pub fn is_alive(&self) -> bool {
        self.write32(reg::LIVENESS, 0x1234_5678);
        self.read32(reg::LIVENESS) == !0x1234_5678
    }

    /// Runs one DMA of `count` bytes and waits until the device reports it finished (which it
    /// also does when the IOMMU refused the transfer: edu does not report DMA errors).
    pub fn dma(&self, source: u64, destination: u64, count: u64, to_ram: bool) -> Result<(), &'static str> {
        self.start_dma(source, destination, count, to_ram);
        self.wait_dma()
    }

    /// Starts one DMA of `count` bytes and returns at once.
    pub fn start_dma(&self, source: u64, destination: u64, count: u64, to_ram: bool) {
        self.start_dma_with(source, destination, count, if to_ram { cmd::TO_RAM } else { 0 });
    }

    /// Starts one DMA that raises the device's interrupt (status [`DMA_DONE`]) when done.
    pub fn start_dma_interrupting(&self, source: u64, destination: u64, count: u64, to_ram: bool) {
        self.start_dma_with(source, destination, count, cmd::INTERRUPT | if to_ram { cmd::TO_RAM } else { 0 });
    }

    fn start_dma_with(&self, source: u64, destination: u64, count: u64, flags: u64) {
        self.write64(reg::DMA_SOURCE, source);
        self.write64(reg::DMA_DESTINATION, destination);
        self.write64(reg::DMA_COUNT, count);
        self.write64(reg::DMA_COMMAND, cmd::RUN | flags);
    }

    /// Whether a DMA is still running.
    pub fn dma_running(&self) -> bool {
        self.read64(reg::DMA_COMMAND) & cmd::RUN != 0
    }

    /// The interrupt status register: why the device raised its interrupt.
    pub fn interrupt_status(&self) -> u32 {
        self.read32(reg::INTERRUPT_STATUS)
    }

    /// Sets `bits` in the interrupt status, which raises the device's interrupt.
    pub fn raise_interrupt(&self, bits: u32) {
        self.write32(reg::INTERRUPT_RAISE, bits);
    }

    /// Clears `bits` of the interrupt status.
    pub fn acknowledge_interrupt(&self, bits: u32) {
        self.write32(reg::INTERRUPT_ACKNOWLEDGE, bits);
    }

    /// Waits until the device reports the DMA it runs finished.
    pub fn wait_dma(&self) -> Result<(), &'static str> {
        hwio::wait::poll_until_pausing(&userlib::InstructionClock, DMA_TIMEOUT, || !self.dma_running(), syscall::yield_now)
            .map_err(|_| "edu DMA did not finish")
    }
}
