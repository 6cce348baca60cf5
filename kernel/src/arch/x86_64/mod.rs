//! x86_64: 16550 serial console, GDT/TSS/IDT, SYSCALL entry, LAPIC timer, IOAPIC lines,
//! 4-level paging.

mod cpu;
mod interrupts;
pub mod paging;
mod serial;
mod user;

pub use cpu::init_cpu;
pub use interrupts::{
    init_interrupts, interrupts_on_exception_vectors, irq_configure, irq_set_enabled, send_self_interrupt, start_timer,
    wait_for_interrupt, MSI_LINES, MSI_LINE_BASE,
};
pub use serial::console_write;
pub use user::{run_user, UserContext};

/// QEMU's `isa-debug-exit` device (iobase 0xf4): writing v exits QEMU with status (v << 1) | 1.
/// We write 0 for success (status 1) and 1 for failure (status 3); the runner maps them back.
const DEBUG_EXIT_PORT: u16 = 0xf4;

pub fn exit_qemu(success: bool) -> ! {
    // SAFETY: port 0xf4 is QEMU's debug-exit device, which only ends the VM.
    unsafe { x86_64::instructions::port::Port::<u32>::new(DEBUG_EXIT_PORT).write(if success { 0 } else { 1 }) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The TSC, which advances one tick per guest instruction under `-icount shift=0`.
pub fn instruction_counter() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear, so it is allowed at any privilege.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `in` of `width` (1, 2 or 4) bytes; the caller checked the port against a capability.
pub fn port_read(port: u16, width: u8) -> u32 {
    use x86_64::instructions::port::Port;
    // SAFETY: the port lies in an I/O-port range the platform description hands out, which
    // contains no port the kernel itself uses.
    unsafe {
        match width {
            1 => Port::<u8>::new(port).read() as u32,
            2 => Port::<u16>::new(port).read() as u32,
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// `out` of `width` (1, 2 or 4) bytes; the caller checked the port against a capability.
pub fn port_write(port: u16, width: u8, value: u32) {
    use x86_64::instructions::port::Port;
    // SAFETY: as in `port_read`.
    unsafe {
        match width {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}
