// EL1 exception vectors and the user-mode entry/exit path.
//
// The vector table (Arm ARM D1.3.1, "Exception vectors") has four groups of four 128-byte
// entries: current EL with SP_EL0, current EL with SP_ELx, lower EL in AArch64, lower EL in
// AArch32, each with synchronous, IRQ, FIQ and SError entries. VBAR_EL1 bits [10:0] are RES0,
// hence the 2 KiB alignment.
//
// - Lower EL AArch64 synchronous and IRQ: the thread in `run_user` trapped; store its registers
//   into its UserContext and return from `run_user_asm` (see below). A synchronous exception
//   is a system call or one that kills the thread, and a system call may change x0-x18 (what
//   AAPCS64 lets a call change; see kernel_abi): that path stores only what a system call reads
//   (its arguments x0-x5 and number x8) or preserves (x19-x30, SP, ELR, SPSR), in the vector
//   entry itself. An IRQ stores everything.
// - Everything else is a kernel bug or an unexpected event (the kernel itself runs with all of
//   DAIF masked; EL0 never runs AArch32 because SPSR.M is always EL0t AArch64, as
//   `UserContext::new` sets it and `sanitise_spsr` keeps it; no interrupt is configured as
//   FIQ): `kernel_fault_entry` reports it and stops QEMU.
//
// The operands in braces are constants from exceptions.rs and user.rs.

.macro kernel_fault_vector index
    .balign 128
    // TPIDR_EL1 is otherwise unused by this kernel: borrow it to free x0 for the index.
    msr     tpidr_el1, x0
    mov     x0, #\index
    b       kernel_fault_entry
.endm

// Sanitises the user's SPSR_EL1 in `reg` as it is saved: only the condition flags are user
// code's, the rest is AArch64 EL0t with FIQ masked (see user.rs).
.macro sanitise_spsr reg
    and     \reg, \reg, #{spsr_nzcv}
    orr     \reg, \reg, #{spsr_el0t}
.endm

// SP is SP_EL1, which still points at `run_user_asm`'s frame: ERET to EL0 does not change it.
// x9-x11 are free: a system call may change them.
.macro user_sync_vector
    .balign 128
0:
    ldr     x9, [sp, #{run_user_frame_ctx}]
    stp     x0, x1, [x9, #0]
    stp     x2, x3, [x9, #16]
    stp     x4, x5, [x9, #32]
    str     x8, [x9, #64]
    stp     x19, x20, [x9, #152]
    stp     x21, x22, [x9, #168]
    stp     x23, x24, [x9, #184]
    stp     x25, x26, [x9, #200]
    stp     x27, x28, [x9, #216]
    stp     x29, x30, [x9, #232]
    mrs     x10, sp_el0
    str     x10, [x9, #{ctx_sp}]
    mrs     x10, elr_el1
    mrs     x11, spsr_el1
    sanitise_spsr x11
    stp     x10, x11, [x9, #{ctx_elr}]
    mov     x0, #{kind_sync}
    b       return_to_kernel
    .if . - 0b > 128
    .error "the synchronous EL0 vector outgrew its entry"
    .endif
.endm

.macro user_irq_vector
    .balign 128
    // Free two registers by pushing the user's x0 and x1 below `run_user_asm`'s frame.
    stp     x0, x1, [sp, #-16]!
    b       user_irq_entry
.endm

.section .text.exception_vectors, "ax"
.balign 2048
.global exception_vectors
exception_vectors:
    kernel_fault_vector 0               // current EL, SP_EL0: synchronous
    kernel_fault_vector 1               //                     IRQ
    kernel_fault_vector 2               //                     FIQ
    kernel_fault_vector 3               //                     SError
    kernel_fault_vector 4               // current EL, SP_EL1: synchronous
    kernel_fault_vector 5               //                     IRQ
    kernel_fault_vector 6               //                     FIQ
    kernel_fault_vector 7               //                     SError
    user_sync_vector                    // lower EL, AArch64:  synchronous
    user_irq_vector                     //                     IRQ
    kernel_fault_vector 10              //                     FIQ
    kernel_fault_vector 11              //                     SError
    kernel_fault_vector 12              // lower EL, AArch32:  synchronous
    kernel_fault_vector 13              //                     IRQ
    kernel_fault_vector 14              //                     FIQ
    kernel_fault_vector 15              //                     SError

// x0 = vector index, TPIDR_EL1 = interrupted x0. The interrupted SP may be the cause (a
// stack overflow into the guard page), so the report runs on its own stack; TPIDRRO_EL0 and
// SP_EL0 serve as further scratch registers (this path never returns to EL0).
kernel_fault_entry:
    msr     tpidrro_el0, x1
    mov     x1, sp
    msr     sp_el0, x1
    adrp    x1, kernel_fault_stack_top
    add     x1, x1, :lo12:kernel_fault_stack_top
    mov     sp, x1
    sub     sp, sp, #{fault_frame_size}
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, sp_el0
    stp     x30, x2, [sp, #240]
    mrs     x2, tpidr_el1
    mrs     x3, tpidrro_el0
    stp     x2, x3, [sp, #0]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #256]
    mrs     x2, esr_el1
    mrs     x3, far_el1
    stp     x2, x3, [sp, #272]
    mov     x1, x0
    mov     x0, sp
    mov     x29, xzr
    bl      kernel_fault
    b       .

// fn run_user_asm(ctx: *mut UserContext) -> u64 (the trap kind)
//
// Saves the kernel's callee-saved registers (AAPCS64: x19-x29, plus x30 to return through) and
// `ctx` in a frame on the kernel stack, loads the user registers from `ctx` and ERETs. The
// frame stays where SP_EL1 points while EL0 runs; `user_trap_entry` finds it there.
.section .text.run_user, "ax"
.global run_user_asm
run_user_asm:
    sub     sp, sp, #{run_user_frame_size}
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    str     x0, [sp, #{run_user_frame_ctx}]
    ldr     x1, [x0, #{ctx_sp}]
    msr     sp_el0, x1
    ldp     x1, x2, [x0, #{ctx_elr}]    // elr, spsr
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    // Nothing after ERET executes architecturally; stop straight-line speculation past it.
    dsb     nsh
    isb

// [sp] = user x0, x1; [sp + 16] = run_user_asm's frame.
user_irq_entry:
    ldr     x0, [sp, #16 + {run_user_frame_ctx}]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, sp_el0
    str     x2, [x0, #{ctx_sp}]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    sanitise_spsr x3
    stp     x2, x3, [x0, #{ctx_elr}]
    mov     x0, #{kind_irq}
    // Falls through.

// Returns from `run_user_asm` with the trap kind in x0.
return_to_kernel:
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #{run_user_frame_size}
    ret

.section .bss.kernel_fault_stack, "aw", %nobits
.balign 16
    .space  {fault_stack_size}
kernel_fault_stack_top:
