//! Polled output on the PL011 UART of QEMU `virt` (ARM PrimeCell UART (PL011) TRM, r1p5).
//!
//! QEMU's PL011 needs no baud-rate setup and transmits immediately; the kernel only enables the
//! UART and the transmitter, then waits on the "transmit FIFO full" flag before each byte so
//! that the code is also correct for a real PL011.

use crate::mm::device_register;
use volatile::VolatilePtr;
use core::sync::atomic::{AtomicBool, Ordering};

/// `virt`'s UART0 (hw/arm/virt.c memory map, also `/pl011@9000000` in the device tree).
const PL011_PHYS: u64 = 0x0900_0000;
/// UARTDR: data register; writing the low byte transmits it.
const UARTDR: usize = 0x000;
/// UARTFR: flag register; TXFF (bit 5) = transmit FIFO full.
const UARTFR: usize = 0x018;
const UARTFR_TXFF: u32 = 1 << 5;
/// UARTCR: control register; UARTEN (bit 0), TXE (bit 8), RXE (bit 9).
const UARTCR: usize = 0x030;
const UARTCR_UARTEN_TXE_RXE: u32 = (1 << 0) | (1 << 8) | (1 << 9);

static ENABLED: AtomicBool = AtomicBool::new(false);

fn register(offset: usize) -> VolatilePtr<'static, u32> {
    // SAFETY: the early direct map covers the first GiB with Device-nGnRE attributes, so the
    // UART's 32-bit registers are reachable at their direct-map address from `kernel_main` on;
    // accessing them only drives the UART.
    unsafe { device_register::<u32>(PL011_PHYS + offset as u64) }
}

/// Writes `bytes` to UART0, turning `\n` into `\r\n`.
pub fn console_write(bytes: &[u8]) {
    if !ENABLED.swap(true, Ordering::Relaxed) {
        register(UARTCR).write(UARTCR_UARTEN_TXE_RXE);
    }
    for &byte in bytes {
        if byte == b'\n' {
            write_byte(b'\r');
        }
        write_byte(byte);
    }
}

fn write_byte(byte: u8) {
    while register(UARTFR).read() & UARTFR_TXFF != 0 {
        core::hint::spin_loop();
    }
    register(UARTDR).write(byte as u32);
}
