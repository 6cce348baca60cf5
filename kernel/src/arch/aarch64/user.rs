//! Entering and leaving EL0.
//!
//! `run_user` ERETs to EL0 with the thread's registers and returns when the thread traps back
//! (SVC, abort, any other synchronous exception, or an IRQ). `run_user_asm` (vectors.S) keeps
//! the kernel's callee-saved registers and the context pointer in a frame on the kernel stack;
//! since ERET to EL0 leaves SP_EL1 unchanged and exceptions from EL0 run on SP_EL1, the EL0
//! vectors find that frame at SP, store the user registers into the context (a system call only
//! those it reads or preserves) and return from `run_user_asm` as if it had been an ordinary
//! call. The kernel thus has no per-thread kernel
//! stacks, no kernel threads, and no per-CPU save area to keep consistent.
//!
//! System-call convention: `SVC #0`, number in x8, arguments in x0..x5, results in x0..x6; a
//! system call may change x0..x18, the registers AAPCS64 lets a call change (see `kernel_abi`),
//! so its entry path saves only the others.

use super::interrupts;
use crate::arch::Trap;
use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};

/// The user-visible registers of one thread; vectors.S depends on the layout. Private: only
/// `new` and the assembly write them, which keeps SPSR an EL0 state.
#[repr(C)]
#[derive(Debug, Clone, Default)]
pub struct UserContext {
    /// x0..x30 (x30 is the link register).
    x: [u64; 31],
    /// SP_EL0.
    sp: u64,
    /// ELR_EL1: where EL0 resumes.
    elr: u64,
    /// SPSR_EL1: EL0's PSTATE; only NZCV is kept from user code (see `SPSR_NZCV`).
    spsr: u64,
}

pub(super) const CTX_SP: usize = core::mem::offset_of!(UserContext, sp);
pub(super) const CTX_ELR: usize = core::mem::offset_of!(UserContext, elr);
const _: () = assert!(core::mem::offset_of!(UserContext, x) == 0);
const _: () = assert!(CTX_SP == 31 * 8);
// vectors.S loads and stores ELR and SPSR as one pair.
const _: () = assert!(core::mem::offset_of!(UserContext, spsr) == CTX_ELR + 8);

/// Values `run_user_asm` returns: which EL0 vector was taken.
pub(super) const TRAP_KIND_SYNC: u64 = 0;
pub(super) const TRAP_KIND_IRQ: u64 = 1;

/// SPSR_EL1 (Arm ARM C5.2.18) for EL0: M[4:0] = 0b00000 (AArch64 EL0t); D, A, I = 0 (debug,
/// SError and IRQ taken from user mode); F (bit 6) = 1: nothing is routed as FIQ. User code
/// keeps only its condition flags N, Z, C, V (bits 31:28); vectors.S applies this as it saves
/// SPSR_EL1.
pub(super) const SPSR_EL0T_FIQ_MASKED: u64 = 1 << 6;
pub(super) const SPSR_NZCV: u64 = 0xF << 28;

const SYSCALL_RESULT_REGISTERS: usize = 7;

// ESR_EL1 exception classes (Arm ARM D19.2, ESR_EL1.EC, bits [31:26]) that `run_user` tells
// apart.
const EC_SVC64: u64 = 0x15;
const EC_INSTRUCTION_ABORT_LOWER_EL: u64 = 0x20;
const EC_DATA_ABORT_LOWER_EL: u64 = 0x24;
/// ISS.WnR (bit 6) of a data abort: the access was a write.
const ISS_WNR: u64 = 1 << 6;

impl UserContext {
    pub fn new(entry: u64, stack_top: u64, arg0: u64) -> Self {
        let mut ctx = UserContext { elr: entry, sp: stack_top, spsr: SPSR_EL0T_FIQ_MASKED, ..Default::default() };
        ctx.x[0] = arg0;
        ctx
    }

    /// System call number (x8).
    pub fn syscall_number(&self) -> u64 {
        self.x[8]
    }

    /// Arguments in x0..x5.
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.x[0], self.x[1], self.x[2], self.x[3], self.x[4], self.x[5]]
    }

    /// Results in x0..x6 (values beyond seven are dropped).
    pub fn set_syscall_result(&mut self, values: &[u64]) {
        for (slot, value) in self.x[..SYSCALL_RESULT_REGISTERS].iter_mut().zip(values) {
            *slot = *value;
        }
    }

    pub fn pc(&self) -> u64 {
        self.elr
    }
}

extern "C" {
    fn run_user_asm(ctx: *mut UserContext) -> u64;
}

/// Runs the thread of `ctx` at EL0 until it traps back. Spurious interrupts are absorbed here.
pub fn run_user(ctx: &mut UserContext) -> Trap {
    // A PC or SP outside the user range needs no check: EL0 access to kernel addresses faults
    // (the kernel's pages are EL1-only and UXN) and comes back as a page fault.
    loop {
        // SAFETY: `ctx` is a valid, exclusively borrowed context for the duration of the call.
        // The assembly returns here on the next exception from EL0 with the kernel's
        // callee-saved registers and SP restored; SPSR, set by `new` or sanitised by the
        // assembly as it saved it, makes the ERET go to AArch64 EL0, where nothing can touch
        // kernel memory.
        let kind = unsafe { run_user_asm(ctx) };
        match kind {
            TRAP_KIND_SYNC => return decode_synchronous(),
            TRAP_KIND_IRQ => {
                if let Some(trap) = interrupts::acknowledge() {
                    return trap;
                }
            }
            _ => unreachable!("vectors.S returns one of the trap kinds"),
        }
    }
}

/// The synchronous exception just taken from EL0, from ESR_EL1 and FAR_EL1 (both still hold
/// it: the kernel takes no exception between the vector and here).
fn decode_synchronous() -> Trap {
    let esr = ESR_EL1.get();
    let class = (esr >> 26) & 0x3F;
    let fault_status = esr & 0x3F;
    match class {
        EC_SVC64 => Trap::Syscall,
        EC_INSTRUCTION_ABORT_LOWER_EL if is_page_fault(fault_status) => {
            Trap::PageFault { addr: FAR_EL1.get(), write: false, exec: true }
        }
        EC_DATA_ABORT_LOWER_EL if is_page_fault(fault_status) => {
            Trap::PageFault { addr: FAR_EL1.get(), write: esr & ISS_WNR != 0, exec: false }
        }
        _ => Trap::IllegalInstruction { code: esr },
    }
}

/// Whether an abort's fault status code (ISS bits [5:0]) is a translation, access-flag or
/// permission fault at any level (0b0001LL, 0b0010LL, 0b0011LL): what the address space decides.
/// Alignment faults, external aborts and the like are reported as illegal instructions.
fn is_page_fault(fault_status: u64) -> bool {
    matches!(fault_status >> 2, 0b0001..=0b0011)
}
