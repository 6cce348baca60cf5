//! Polled output on the PL011 UART of QEMU `virt` (ARM PrimeCell UART (PL011) TRM, r1p5).
//!
//! QEMU's PL011 needs no baud-rate setup and transmits immediately; the kernel only enables the
//! UART and the transmitter, then waits on the "transmit FIFO full" flag before each byte so
//! that the code is also correct for a real PL011.

use crate::mm::phys_to_virt;
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

fn register(offset: usize) -> *mut u32 {
    // The early direct map covers the first GiB with Device-nGnRE attributes, so the UART's
    // registers are reachable at their direct-map address from `kernel_main` on.
    phys_to_virt(PL011_PHYS + offset as u64) as *mut u32
}

/// Writes `bytes` to UART0, turning `\n` into `\r\n`.
pub fn console_write(bytes: &[u8]) {
    if !ENABLED.swap(true, Ordering::Relaxed) {
        // SAFETY: UARTCR of the PL011 in the direct map; enabling UART, TX and RX has no effect on
        // memory.
        unsafe { register(UARTCR).write_volatile(UARTCR_UARTEN_TXE_RXE) };
    }
    for &byte in bytes {
        if byte == b'\n' {
            write_byte(b'\r');
        }
        write_byte(byte);
    }
}

fn write_byte(byte: u8) {
    // SAFETY: UARTFR and UARTDR of the PL011 in the direct map; reading the flags and writing a
    // byte to the data register only transmit it.
    unsafe {
        while register(UARTFR).read_volatile() & UARTFR_TXFF != 0 {
            core::hint::spin_loop();
        }
        register(UARTDR).write_volatile(byte as u32);
    }
}
