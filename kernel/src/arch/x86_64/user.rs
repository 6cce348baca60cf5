//! Entering and leaving user mode.
//!
//! `run_user` saves the kernel's callee-saved registers and stack pointer, loads the thread's
//! registers and IRETs to ring 3. Every way back (SYSCALL, exception or interrupt in ring 3)
//! stores the user registers into the same `UserContext` and resumes the kernel as if
//! `run_user` had returned. The kernel therefore never runs on behalf of a thread on a
//! separate stack, and has no kernel threads.

use super::cpu::{USER_CODE, USER_DATA};
use super::interrupts;
use crate::arch::Trap;

/// User registers; the assembly below depends on the field offsets (see the assertions
/// below). Private: only `new` and the assembly write them, which keeps RIP canonical.
#[repr(C)]
#[derive(Debug, Clone, Default)]
pub struct UserContext {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    // The frame IRETQ takes, in its order: the exit path returns through it in place.
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
    /// Set by the exit path: the vector taken, or `SYSCALL_MARKER`.
    vector: u64,
    error_code: u64,
    fault_address: u64,
}

// The general registers in the order of the assembly's offsets, then the IRETQ frame.
const _: () = assert!(core::mem::offset_of!(UserContext, r15) == 112);
const _: () = assert!(core::mem::offset_of!(UserContext, rip) == 120);
const _: () = assert!(core::mem::offset_of!(UserContext, ss) == core::mem::offset_of!(UserContext, rip) + 32);

const SYSCALL_MARKER: u64 = 0x100;
/// RFLAGS bits user code keeps across a trap: CF PF AF ZF SF DF OF. IF is always set; IOPL,
/// TF, AC, NT and the rest stay clear. The assembly applies this where it saves RFLAGS.
const USER_RFLAGS_MASK: u64 = 0xCD5;
const RFLAGS_IF: u64 = 0x200;
const RFLAGS_RESERVED_ONE: u64 = 0x2;
/// Addresses below 2^47 are canonical (the lower half; the upper half is the kernel's).
const CANONICAL_LOWER_HALF_BITS: u32 = 47;

impl UserContext {
    pub fn new(entry: u64, stack_top: u64, arg0: u64) -> Self {
        // `run_user` relies on it: IRETQ to a non-canonical RIP faults in ring 0.
        assert!(entry >> CANONICAL_LOWER_HALF_BITS == 0, "user entry point {entry:#x} outside the lower half");
        UserContext {
            rip: entry,
            cs: USER_CODE.into(),
            rflags: RFLAGS_IF | RFLAGS_RESERVED_ONE,
            rsp: stack_top,
            ss: USER_DATA.into(),
            rdi: arg0,
            ..Default::default()
        }
    }

    /// System call number (rax).
    pub fn syscall_number(&self) -> u64 {
        self.rax
    }

    /// Arguments in rdi, rsi, rdx, r10, r8, r9 (r10 replaces rcx, which SYSCALL overwrites).
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    /// Results in rax, rdi, rsi, rdx, r10, r8, r9 (up to seven words).
    pub fn set_syscall_result(&mut self, values: &[u64]) {
        let slots: [&mut u64; 7] =
            [&mut self.rax, &mut self.rdi, &mut self.rsi, &mut self.rdx, &mut self.r10, &mut self.r8, &mut self.r9];
        for (slot, value) in slots.into_iter().zip(values) {
            *slot = *value;
        }
    }

    pub fn pc(&self) -> u64 {
        self.rip
    }
}

#[repr(C)]
struct PerCpu {
    kernel_rsp: u64,
    context: u64,
    user_rsp_scratch: u64,
}

#[no_mangle]
static mut PERCPU: PerCpu = PerCpu { kernel_rsp: 0, context: 0, user_rsp_scratch: 0 };

extern "C" {
    fn run_user_asm(ctx: *mut UserContext);
}

pub fn run_user(ctx: &mut UserContext) -> Trap {
    // SAFETY: `ctx` is a valid, exclusively borrowed context for the duration of the call; the
    // assembly returns here on the next trap from ring 3 with the kernel registers restored.
    // Of what IRETQ loads, only a non-canonical RIP would fault in ring 0, and RIP is always
    // canonical: an entry point `UserContext::new` checked, or where user code trapped. RSP and
    // RFLAGS are what user code left (the assembly sanitises RFLAGS as it saves it): a stack
    // pointer user code may not use faults in user mode.
    unsafe { run_user_asm(ctx) };
    match ctx.vector {
        SYSCALL_MARKER => Trap::Syscall,
        14 => Trap::PageFault {
            addr: ctx.fault_address,
            write: ctx.error_code & 2 != 0,
            exec: ctx.error_code & 0x10 != 0,
        },
        vector if vector & interrupts::INTERRUPT_ON_EXCEPTION_VECTOR != 0 => interrupts::interrupt_on_exception_vector(vector as u8),
        vector if vector < 32 => Trap::IllegalInstruction { code: vector },
        vector => interrupts::acknowledge(vector as u8),
    }
}

core::arch::global_asm!(
    r#"
.set CTX_RIP, {ctx_rip}
.set CTX_RFLAGS, {ctx_rflags}
.set CTX_RSP, {ctx_rsp}
.set CTX_VECTOR, {ctx_vector}
.set CTX_ERROR, {ctx_error}
.set CTX_FAULT, {ctx_fault}

.section .text.user_entry, "ax"
.global run_user_asm
run_user_asm:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, PERCPU(%rip)
    mov %rdi, PERCPU+8(%rip)
    /* IRETQ pops its frame from the context itself: interrupts stay masked until it has. */
    lea CTX_RIP(%rdi), %rsp
    mov 0(%rdi), %rax
    mov 8(%rdi), %rbx
    mov 16(%rdi), %rcx
    mov 24(%rdi), %rdx
    mov 32(%rdi), %rsi
    mov 48(%rdi), %rbp
    mov 56(%rdi), %r8
    mov 64(%rdi), %r9
    mov 72(%rdi), %r10
    mov 80(%rdi), %r11
    mov 88(%rdi), %r12
    mov 96(%rdi), %r13
    mov 104(%rdi), %r14
    mov 112(%rdi), %r15
    mov 40(%rdi), %rdi
    iretq

/* SYSCALL: RCX = user RIP, R11 = user RFLAGS, RSP still the user's, IF cleared by SFMASK. */
.global syscall_entry
syscall_entry:
    mov %rsp, PERCPU+16(%rip)
    mov PERCPU+8(%rip), %rsp
    mov %rax, 0(%rsp)
    mov %rbx, 8(%rsp)
    mov %rdx, 24(%rsp)
    mov %rsi, 32(%rsp)
    mov %rdi, 40(%rsp)
    mov %rbp, 48(%rsp)
    mov %r8, 56(%rsp)
    mov %r9, 64(%rsp)
    mov %r10, 72(%rsp)
    mov %r12, 88(%rsp)
    mov %r13, 96(%rsp)
    mov %r14, 104(%rsp)
    mov %r15, 112(%rsp)
    mov %rcx, CTX_RIP(%rsp)
    and ${user_rflags}, %r11
    or ${rflags_set}, %r11
    mov %r11, CTX_RFLAGS(%rsp)
    mov PERCPU+16(%rip), %rax
    mov %rax, CTX_RSP(%rsp)
    movq ${syscall_marker}, CTX_VECTOR(%rsp)
    /* Falls through to return_to_kernel. */

return_to_kernel:
    mov PERCPU(%rip), %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* 256 entry stubs, 16 bytes apart. Vectors whose exceptions push an error code (8, 10-14, 17,
 * 21, 29, 30) do not push the dummy one. Vectors 0-31 first find out whether an exception or
 * an interrupt brought them here. */
.p2align 4
.global trap_stubs
trap_stubs:
.set vector, 0
.rept 256
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    pushq $vector
    jmp exception_vector_with_error_code
    .else
    pushq $0
    pushq $vector
    .if vector < 32
    jmp exception_vector
    .else
    jmp trap_common
    .endif
    .endif
    .set vector, vector + 1
.endr

/* A device can deliver any vector, 0-31 included: an MSI is a memory write to 0xFEExxxxx whose
 * data names the vector, and without interrupt remapping nothing filters it. The local APIC
 * sets the vector's bit in its in-service register (ISR bits 31:0 at offset 0x100, SDM Vol. 3
 * §11.8.4) when it delivers an interrupt, never for an exception. An interrupt pushes no error
 * code: where an exception of this vector would have, a zero is inserted below the vector, so
 * that trap_common sees one frame layout. The vector is then marked, and the interrupt is
 * treated as spurious. */
exception_vector_with_error_code:
    call vector_in_service
    jnc trap_common
    pushq (%rsp)
    movq $0, 8(%rsp)
    orq ${interrupt_marker}, (%rsp)
    jmp trap_common

exception_vector:
    call vector_in_service
    jnc trap_common
    orq ${interrupt_marker}, (%rsp)
    jmp trap_common

/* Stack: return address, vector. CF = the vector's in-service bit; every register kept. */
vector_in_service:
    push %rax
    push %rcx
    mov 24(%rsp), %ecx
    movabs ${lapic_isr_low}, %rax
    mov (%rax), %eax
    bt %ecx, %eax
    pop %rcx
    pop %rax
    ret

/* Stack: vector, error, RIP, CS, RFLAGS, RSP, SS. */
trap_common:
    testb $3, 24(%rsp)
    jz kernel_trap
    push %rax
    mov PERCPU+8(%rip), %rax
    mov %rbx, 8(%rax)
    mov %rcx, 16(%rax)
    mov %rdx, 24(%rax)
    mov %rsi, 32(%rax)
    mov %rdi, 40(%rax)
    mov %rbp, 48(%rax)
    mov %r8, 56(%rax)
    mov %r9, 64(%rax)
    mov %r10, 72(%rax)
    mov %r11, 80(%rax)
    mov %r12, 88(%rax)
    mov %r13, 96(%rax)
    mov %r14, 104(%rax)
    mov %r15, 112(%rax)
    pop %rbx
    mov %rbx, 0(%rax)
    pop %rbx
    mov %rbx, CTX_VECTOR(%rax)
    pop %rbx
    mov %rbx, CTX_ERROR(%rax)
    pop %rbx
    mov %rbx, CTX_RIP(%rax)
    pop %rbx /* CS and, below, SS: always the user selectors the context holds from `new` */
    pop %rbx
    and ${user_rflags}, %rbx
    or ${rflags_set}, %rbx
    mov %rbx, CTX_RFLAGS(%rax)
    pop %rbx
    mov %rbx, CTX_RSP(%rax)
    pop %rbx
    mov %cr2, %rbx
    mov %rbx, CTX_FAULT(%rax)
    jmp return_to_kernel

kernel_trap:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call {kernel_trap_handler}
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
"#,
    ctx_rip = const core::mem::offset_of!(UserContext, rip),
    ctx_rflags = const core::mem::offset_of!(UserContext, rflags),
    ctx_rsp = const core::mem::offset_of!(UserContext, rsp),
    ctx_vector = const core::mem::offset_of!(UserContext, vector),
    ctx_error = const core::mem::offset_of!(UserContext, error_code),
    ctx_fault = const core::mem::offset_of!(UserContext, fault_address),
    syscall_marker = const SYSCALL_MARKER,
    user_rflags = const USER_RFLAGS_MASK,
    rflags_set = const RFLAGS_IF | RFLAGS_RESERVED_ONE,
    kernel_trap_handler = sym interrupts::kernel_trap,
    interrupt_marker = const interrupts::INTERRUPT_ON_EXCEPTION_VECTOR,
    lapic_isr_low = const interrupts::LAPIC_ISR_LOW_VIRT,
    options(att_syntax)
);
