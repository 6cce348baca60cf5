//! Local APIC (timer, EOI), I/O APIC (device lines), and the kernel-mode trap handler.
//!
//! Vectors: 0x20 timer; 0x30 + GSI for I/O APIC lines (GSI < 24); 0xFF spurious.
//! The legacy 8259 PICs are masked. QEMU's APIC timer counts at 1 GHz (its fixed APIC bus
//! frequency), so with divide-by-1 the initial count for `hz` ticks per second is 1e9 / hz.

use crate::arch::Trap;
use boot::DIRECT_MAP_BASE;
use crate::mm::device_register;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use spin::Mutex;
use x86_64::instructions::port::Port;

const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_EOI: usize = 0xB0;
/// In-service register, bits 31:0 (vectors 0-31); bits 255:32 follow at 0x110..0x170.
const LAPIC_ISR_LOW: usize = 0x100;
/// Interrupt command register, low word (vector, delivery mode, shorthand); writing it sends.
const LAPIC_ICR_LOW: usize = 0x300;
/// ICR bit 14: level assert (required for every delivery mode but INIT de-assert).
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// ICR bits 19:18 = 01: destination shorthand "self" (delivery mode 000, fixed).
const ICR_SHORTHAND_SELF: u32 = 0b01 << 18;
const LAPIC_SPURIOUS: usize = 0xF0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_DIVIDE: usize = 0x3E0;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const SVR_APIC_ENABLE: u32 = 1 << 8;
const APIC_TIMER_HZ: u64 = 1_000_000_000;

const IOAPIC_BASE: u64 = 0xFEC0_0000;
const IOAPIC_LINES: u32 = 24;
const IOREDTBL_MASKED: u64 = 1 << 16;
/// PCI INTx lines (GSI >= 16 on q35) are level-triggered, active-low (ACPI MADT defaults for PCI).
const IOREDTBL_LEVEL_ACTIVE_LOW: u64 = (1 << 15) | (1 << 13);

pub const TIMER_VECTOR: u8 = 0x20;
pub const IOAPIC_VECTOR_BASE: u8 = 0x30;
const SPURIOUS_VECTOR: u8 = 0xFF;

fn lapic_write(reg: usize, value: u32) {
    // SAFETY: the LAPIC register page is in the direct map (below 4 GiB); `reg` is one of the
    // architectural register offsets above.
    unsafe { device_register::<u32>(LAPIC_BASE + reg as u64) }.write(value)
}

static IOAPIC_LOCK: Mutex<()> = Mutex::new(());

fn ioapic_write(index: u32, value: u32) {
    let _guard = IOAPIC_LOCK.lock();
    // SAFETY: IOREGSEL at +0 and IOWIN at +0x10 of the I/O APIC, 32-bit registers in the
    // direct map; the lock keeps the select/window pair together.
    unsafe {
        device_register::<u32>(IOAPIC_BASE).write(index);
        device_register::<u32>(IOAPIC_BASE + 0x10).write(value);
    }
}

fn set_redirection(gsi: u32, entry: u64) {
    ioapic_write(0x10 + 2 * gsi, entry as u32);
    ioapic_write(0x11 + 2 * gsi, (entry >> 32) as u32);
}

/// One bit per GSI: edge-triggered, active-high (ISA lines) rather than level, active-low (PCI).
static EDGE_TRIGGERED: AtomicU32 = AtomicU32::new(0xFFFF);

fn redirection_entry(gsi: u32, masked: bool) -> u64 {
    let vector = (IOAPIC_VECTOR_BASE as u32 + gsi) as u64;
    let edge = EDGE_TRIGGERED.load(Ordering::Relaxed) & (1 << gsi) != 0;
    let trigger = if edge { 0 } else { IOREDTBL_LEVEL_ACTIVE_LOW };
    // Destination: physical mode, APIC ID 0 (bits 63:56).
    vector | trigger | if masked { IOREDTBL_MASKED } else { 0 }
}

pub fn init_interrupts() {
    // SAFETY: masking both 8259s through their data ports only stops legacy interrupts.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
    lapic_write(LAPIC_SPURIOUS, SVR_APIC_ENABLE | SPURIOUS_VECTOR as u32);
    for gsi in 0..IOAPIC_LINES {
        set_redirection(gsi, redirection_entry(gsi, true));
    }
}

pub fn start_timer(hz: u32) {
    lapic_write(LAPIC_TIMER_DIVIDE, 0b1011); // divide by 1
    lapic_write(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | TIMER_VECTOR as u32);
    lapic_write(LAPIC_TIMER_INITIAL, (APIC_TIMER_HZ / hz as u64) as u32);
}

/// Sets the trigger mode of I/O APIC line `gsi` (the line stays masked). MSI lines have none.
pub fn irq_configure(gsi: u32, edge: bool) {
    if gsi < IOAPIC_LINES {
        let bit = 1 << gsi;
        if edge {
            EDGE_TRIGGERED.fetch_or(bit, Ordering::Relaxed);
        } else {
            EDGE_TRIGGERED.fetch_and(!bit, Ordering::Relaxed);
        }
        set_redirection(gsi, redirection_entry(gsi, true));
    }
}

/// Unmasks or masks I/O APIC line `gsi`. Lines out of range are ignored (the kernel checks
/// them against the IRQ capability before calling).
pub fn irq_set_enabled(gsi: u32, enabled: bool) {
    if gsi < IOAPIC_LINES {
        set_redirection(gsi, redirection_entry(gsi, !enabled));
    }
}

/// Turns a taken interrupt vector into a `Trap`, masking device lines (they are level-triggered:
/// the line stays asserted until the user driver has serviced the device) and signalling EOI.
pub fn acknowledge(vector: u8) -> Trap {
    let trap = match vector {
        TIMER_VECTOR => Some(Trap::Timer),
        v if (IOAPIC_VECTOR_BASE..IOAPIC_VECTOR_BASE + IOAPIC_LINES as u8).contains(&v) => {
            let gsi = (v - IOAPIC_VECTOR_BASE) as u32;
            irq_set_enabled(gsi, false);
            Some(Trap::DeviceIrq(gsi))
        }
        v if (MSI_VECTOR_BASE..MSI_VECTOR_BASE + MSI_LINES as u8).contains(&v) => Some(Trap::DeviceIrq(MSI_LINE_BASE + (v - MSI_VECTOR_BASE) as u32)),
        _ => None,
    };
    if vector != SPURIOUS_VECTOR {
        lapic_write(LAPIC_EOI, 0);
    }
    trap.unwrap_or(Trap::Timer)
}

/// Where the trap stubs read the in-service bits of vectors 0-31 (the LAPIC page is in the
/// direct map, below 4 GiB).
pub const LAPIC_ISR_LOW_VIRT: u64 = DIRECT_MAP_BASE + LAPIC_BASE + LAPIC_ISR_LOW as u64;

/// Set by the trap stubs in the vector word of an interrupt that arrived on vector 0-31 (see
/// `exception_vector` in user.rs); above every vector and `SYSCALL_MARKER`.
pub const INTERRUPT_ON_EXCEPTION_VECTOR: u64 = 0x200;

/// Interrupts that arrived on exception vectors, and the vectors already logged (one bit each).
static INTERRUPTS_ON_EXCEPTION_VECTORS: AtomicU64 = AtomicU64::new(0);
static LOGGED_EXCEPTION_VECTORS: AtomicU32 = AtomicU32::new(0);

/// An interrupt on exception vector `vector` (0-31), which only a device's stray or hostile MSI
/// (or an IPI) can raise: acknowledged, counted, logged the first time for each vector; it
/// does not stop the machine nor kill the interrupted thread.
pub fn interrupt_on_exception_vector(vector: u8) -> Trap {
    let vector = vector & 31;
    lapic_write(LAPIC_EOI, 0);
    INTERRUPTS_ON_EXCEPTION_VECTORS.fetch_add(1, Ordering::Relaxed);
    if LOGGED_EXCEPTION_VECTORS.fetch_or(1 << vector, Ordering::Relaxed) & (1 << vector) == 0 {
        crate::println!("[kernel] an interrupt arrived on exception vector {vector} (a device's MSI?): spurious, ignored");
    }
    Trap::Spurious
}

/// How many interrupts arrived on exception vectors (`interrupt_on_exception_vector`).
pub fn interrupts_on_exception_vectors() -> u64 {
    INTERRUPTS_ON_EXCEPTION_VECTORS.load(Ordering::Relaxed)
}

/// Sends this CPU an interrupt on `vector` through the LAPIC (fixed delivery, shorthand self);
/// taken once interrupts are enabled.
pub fn send_self_interrupt(vector: u8) {
    lapic_write(LAPIC_ICR_LOW, ICR_SHORTHAND_SELF | ICR_LEVEL_ASSERT | vector as u32);
}

/// MSIs are delivered to vectors 0x50.. and reported as lines `MSI_LINE_BASE + n`: a device
/// whose MSI data names vector 0x50 + n (address 0xFEE00000, APIC 0) raises line 1000 + n.
pub const MSI_VECTOR_BASE: u8 = 0x50;
pub const MSI_LINE_BASE: u32 = 1000;
pub const MSI_LINES: u32 = 32;

/// The 15 general registers pushed by `kernel_trap` in user.rs, then the CPU frame.
#[repr(C)]
pub struct KernelTrapFrame {
    r15: u64, r14: u64, r13: u64, r12: u64, r11: u64, r10: u64, r9: u64, r8: u64,
    rbp: u64, rdi: u64, rsi: u64, rdx: u64, rcx: u64, rbx: u64, rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
}

/// The interrupt that ended the last `wait_for_interrupt` idle, encoded as vector + 1 (0: none).
static PENDING_VECTOR: AtomicU32 = AtomicU32::new(0);

/// Kernel-mode interrupts and exceptions. Exceptions in the kernel are bugs: report and stop.
/// An interrupt on an exception vector is not one: it is acknowledged and idling goes on.
pub extern "C" fn kernel_trap(frame: &mut KernelTrapFrame) {
    let vector = frame.vector;
    if vector & INTERRUPT_ON_EXCEPTION_VECTOR != 0 {
        interrupt_on_exception_vector(vector as u8);
        return;
    }
    if vector >= 32 {
        PENDING_VECTOR.store(vector as u32 + 1, Ordering::Relaxed);
        return;
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    crate::println!(
        "KERNEL EXCEPTION vector {} error {:#x} at rip {:#x} (cs {:#x}, rflags {:#x}, rsp {:#x}) cr2 {:#x}",
        vector, frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp, cr2
    );
    crate::println!(
        "  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    crate::println!(
        "  r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15
    );
    super::exit_qemu(false);
}

/// Idles with interrupts enabled until one arrives, and reports it.
pub fn wait_for_interrupt() -> Trap {
    loop {
        let pending = PENDING_VECTOR.swap(0, Ordering::Relaxed);
        if pending != 0 {
            return acknowledge((pending - 1) as u8);
        }
        // STI's one-instruction shadow makes STI; HLT atomic: no wake-up is lost.
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
}
