//! COM1 16550 UART, polled output only.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TX_EMPTY: u8 = 1 << 5;

pub fn console_write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

fn put(byte: u8) {
    // SAFETY: COM1's data and line-status ports; reading LSR and writing THR have no effect
    // beyond the UART.
    unsafe {
        let mut status = Port::<u8>::new(LINE_STATUS);
        while status.read() & TX_EMPTY == 0 {}
        Port::<u8>::new(COM1).write(byte);
    }
}
