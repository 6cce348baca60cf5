//! aarch64 on QEMU `virt`: PL011 console, EL1 exception vectors, GICv2/GICv3 with the EL1
//! virtual timer, VMSAv8-64 4-level translation, EL0 entry and exit.
//!
//! The boot crate has already set up the state this module builds on: EL1, MMU on with the
//! kernel at its link address and the direct map of the low 4 GiB, MAIR_EL1 and TCR_EL1 as
//! described in `paging`, FP/SIMD enabled, all of DAIF masked. The kernel keeps DAIF masked
//! throughout; see `interrupts` for how interrupts are nevertheless taken.

mod console;
mod exceptions;
mod gic;
mod interrupts;
mod its;
pub mod paging;
mod user;

pub use console::console_write;
pub use exceptions::init_cpu;
pub use gic::msi_spis;
pub use its::{pending as lpis_pending, route as msi_route, taken as lpis_taken, translater as msi_translater, unroute as msi_unroute, RouteError as MsiRouteError};
pub use interrupts::{init_interrupts, init_its, irq_configure, irq_set_enabled, start_timer, wait_for_interrupt};
pub use user::{run_user, UserContext};

use aarch64_cpu::registers::{Readable, CNTVCT_EL0};

/// Semihosting (Arm "Semihosting for AArch32 and AArch64", v2.0), which QEMU implements with
/// `-semihosting`: `HLT #0xF000` with the operation in W0 and its parameter in X1. On AArch64,
/// SYS_EXIT (0x18) takes a pointer to {reason, subcode}; for reason ADP_Stopped_ApplicationExit
/// (0x20026) QEMU exits with status `subcode`.
const SEMIHOSTING_SYS_EXIT: u32 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Ends QEMU with exit status 0 (`success`) or 1.
pub fn exit_qemu(success: bool) -> ! {
    let parameters: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, if success { 0 } else { 1 }];
    // SAFETY: the semihosting call only reads the two-word block, which lives across the call;
    // QEMU does not return from SYS_EXIT.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            in("w0") SEMIHOSTING_SYS_EXIT,
            in("x1") parameters.as_ptr(),
            options(nostack, readonly),
        )
    };
    // SYS_EXIT does not return under QEMU; should a debugger resume the CPU anyway, park it.
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// CNTVCT_EL0, which counts guest instructions under `-icount shift=0` as the TSC does on x86.
pub fn instruction_counter() -> u64 {
    // The ISB keeps the read from being performed early, out of program order (Arm ARM D12.1.2:
    // counter reads are not ordered by themselves).
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTVCT_EL0.get()
}
