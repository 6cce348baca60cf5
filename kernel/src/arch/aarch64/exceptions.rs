//! Exception vectors and the report of exceptions the kernel itself takes.
//!
//! The kernel runs with PSTATE.{D,A,I,F} masked, so the only exceptions taken at EL1 are
//! synchronous ones caused by kernel bugs (or an SError). Each is reported with its vector,
//! decoded ESR_EL1 (Arm ARM D19.2), ELR_EL1, FAR_EL1 and registers, then QEMU stops with a
//! failure status. Exceptions from EL0 are `run_user`'s business (see user.rs and vectors.S).

use super::user::{CTX_ELR, CTX_SP, SPSR_EL0T_FIQ_MASKED, SPSR_NZCV, TRAP_KIND_IRQ, TRAP_KIND_SYNC};
use aarch64_cpu::registers::{Writeable, CNTKCTL_EL1, VBAR_EL1};
use core::sync::atomic::{AtomicU32, Ordering};

/// Registers saved by `kernel_fault_entry`; vectors.S depends on the layout.
#[repr(C)]
struct KernelFaultFrame {
    x: [u64; 31],
    sp: u64,
    elr: u64,
    spsr: u64,
    esr: u64,
    far: u64,
}

const _: () = assert!(core::mem::size_of::<KernelFaultFrame>() == 288);
const FAULT_STACK_SIZE: usize = 16 * 1024;
/// `run_user_asm`'s frame: x19..x30 (12 registers) and the context pointer, 16-byte aligned.
const RUN_USER_FRAME_SIZE: usize = 112;
const RUN_USER_FRAME_CTX: usize = 96;

// SAFETY: the vector table and the two entry paths follow the register and stack discipline
// described in vectors.S: the kernel-fault path moves to its own stack and never returns; the
// EL0 paths only run while `run_user_asm`'s frame is at SP_EL1 (EL0 is entered only through
// `run_user_asm`) and restore exactly the registers that function saved before returning to its
// caller. The constants tie the assembly to `UserContext` and `KernelFaultFrame`.
core::arch::global_asm!(
    include_str!("vectors.S"),
    kind_sync = const TRAP_KIND_SYNC,
    kind_irq = const TRAP_KIND_IRQ,
    fault_frame_size = const core::mem::size_of::<KernelFaultFrame>(),
    fault_stack_size = const FAULT_STACK_SIZE,
    run_user_frame_size = const RUN_USER_FRAME_SIZE,
    run_user_frame_ctx = const RUN_USER_FRAME_CTX,
    ctx_sp = const CTX_SP,
    ctx_elr = const CTX_ELR,
    spsr_el0t = const SPSR_EL0T_FIQ_MASKED,
    spsr_nzcv = const SPSR_NZCV,
);

extern "C" {
    static exception_vectors: u8;
}

/// Installs the exception vectors and lets EL0 read the virtual counter.
pub fn init_cpu() {
    VBAR_EL1.set(core::ptr::addr_of!(exception_vectors) as u64);
    // CNTKCTL_EL1.EL0VCTEN (bit 1): EL0 may read CNTVCT_EL0 (as x86 user code may read the
    // TSC); EL0 access to the timers and the physical counter stays trapped.
    CNTKCTL_EL1.write(CNTKCTL_EL1::EL0VCTEN::SET);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

const VECTOR_NAMES: [&str; 16] = [
    "synchronous (EL1, SP_EL0)",
    "IRQ (EL1, SP_EL0)",
    "FIQ (EL1, SP_EL0)",
    "SError (EL1, SP_EL0)",
    "synchronous (EL1)",
    "IRQ (EL1)",
    "FIQ (EL1)",
    "SError (EL1)",
    "synchronous (EL0)",
    "IRQ (EL0)",
    "FIQ (EL0)",
    "SError (EL0)",
    "synchronous (EL0 AArch32)",
    "IRQ (EL0 AArch32)",
    "FIQ (EL0 AArch32)",
    "SError (EL0 AArch32)",
];

/// How many kernel faults are being reported: a fault while reporting one skips the report.
static FAULT_DEPTH: AtomicU32 = AtomicU32::new(0);

#[no_mangle]
extern "C" fn kernel_fault(frame: &KernelFaultFrame, vector: u64) -> ! {
    match FAULT_DEPTH.fetch_add(1, Ordering::Relaxed) {
        0 => {}
        1 => super::exit_qemu(false),
        // exit_qemu itself faulted (QEMU without -semihosting): nothing left to do.
        _ => loop {
            aarch64_cpu::asm::wfi();
        },
    }
    let class = (frame.esr >> 26) & 0x3F;
    crate::println!(
        "KERNEL EXCEPTION: {}: {} (EC {:#04x})",
        VECTOR_NAMES[vector as usize & 0xF],
        exception_class_name(class),
        class
    );
    if matches!(class, 0x20..=0x25) {
        let status = frame.esr & 0x3F;
        let access = if class >= 0x24 && frame.esr & (1 << 6) != 0 { "write" } else { "read/fetch" };
        crate::println!("  {} at {:#018x}: {}", access, frame.far, fault_status_name(status));
    }
    crate::println!(
        "  ESR {:#010x} ELR {:#018x} FAR {:#018x} SPSR {:#010x} SP {:#018x}",
        frame.esr,
        frame.elr,
        frame.far,
        frame.spsr,
        frame.sp
    );
    for (row, registers) in frame.x.chunks(4).enumerate() {
        crate::print!(" ");
        for (column, value) in registers.iter().enumerate() {
            crate::print!(" x{:<2} {:#018x}", row * 4 + column, value);
        }
        crate::println!();
    }
    super::exit_qemu(false)
}

/// ESR_EL1.EC (Arm ARM D19.2, table "ESR_ELx.EC").
fn exception_class_name(class: u64) -> &'static str {
    match class {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SVE/SIMD/FP access",
        0x0D => "branch target exception",
        0x0E => "illegal execution state",
        0x15 => "SVC in AArch64",
        0x18 => "trapped MSR/MRS/system instruction",
        0x19 => "trapped SVE access",
        0x1C => "pointer authentication failure",
        0x20 => "instruction abort from EL0",
        0x21 => "instruction abort from EL1",
        0x22 => "PC alignment fault",
        0x24 => "data abort from EL0",
        0x25 => "data abort from EL1",
        0x26 => "SP alignment fault",
        0x2C => "trapped floating-point exception",
        0x2F => "SError interrupt",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3C => "BRK instruction",
        _ => "other exception class",
    }
}

/// Instruction/data fault status code, ISS bits [5:0] of an abort (Arm ARM D19.2, ISS encoding
/// for an exception from a Data Abort).
fn fault_status_name(status: u64) -> &'static str {
    match status {
        0b000000..=0b000011 => "address size fault",
        0b000100..=0b000111 => "translation fault",
        0b001000..=0b001011 => "access flag fault",
        0b001100..=0b001111 => "permission fault",
        0b010000 => "synchronous external abort",
        0b010001 => "synchronous tag check fault",
        0b010100..=0b010111 => "synchronous external abort on table walk",
        0b100001 => "alignment fault",
        0b110000 => "TLB conflict abort",
        _ => "other fault",
    }
}
