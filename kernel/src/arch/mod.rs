//! The architecture seam. Everything above this module is architecture-neutral.
//!
//! Each architecture module provides the same items, re-exported here:
//!
//! CPU and console
//! - `fn init_cpu()`: descriptor tables / exception vectors, syscall entry, per-CPU state.
//!   Kernel-mode exceptions print the vector, faulting address and registers, then stop QEMU
//!   with a failure status.
//! - `fn console_write(bytes: &[u8])`: polled serial output (16550 COM1 / PL011).
//! - `fn exit_qemu(success: bool) -> !`: ends QEMU with a status the host runner reads
//!   (x86: isa-debug-exit, success = 0 -> exit status 1? see `qemu_exit_code` below; aarch64:
//!   semihosting SYS_EXIT_EXTENDED).
//! - `fn instruction_counter() -> u64`: TSC / CNTVCT, which count guest instructions under
//!   `-icount shift=0`.
//!
//! Interrupts (the kernel runs with interrupts masked; they are taken only in user mode and
//! while idling in `wait_for_interrupt`)
//! - `fn init_interrupts()`: interrupt controller(s) (LAPIC + IOAPIC / GICv2 or v3).
//! - `fn start_timer(hz: u32)`: periodic tick, reported as `Trap::Timer`.
//! - `fn irq_set_enabled(line: u32, enabled: bool)`: a device interrupt line (IOAPIC pin or GSI /
//!   GIC SPI INTID); a taken device interrupt is masked by the arch code and reported as
//!   `Trap::DeviceIrq(line)`; the kernel unmasks it when the user driver acknowledges.
//! - `fn wait_for_interrupt() -> Trap`: idles with interrupts enabled until one arrives.
//!
//! Address spaces (`paging` module)
//! - `AddressSpace::new(frames) -> Option<AddressSpace>`: a user address space sharing the kernel
//!   half. `map(va, pa, MapFlags, frames) -> Result<(), MapError>`, `unmap(va) -> Option<u64>`,
//!   `translate(va) -> Option<(u64, MapFlags)>`, `root() -> Root`, `destroy(frames)` (frees every
//!   table page it allocated, not the mapped frames). 4 KiB pages. User VAs are below
//!   `USER_TOP`.
//! - `Root`: where an address space's tables start. `Root::current()`, and
//!   `unsafe activate()`, which makes them current (the address space must not be destroyed).
//! - `fn protect_kernel_image()`: rebuilds the kernel mappings W^X (text RX, rodata R,
//!   data/bss RW NX, direct map RW NX).
//!
//! User mode (`user` module)
//! - `UserContext`: all user-visible registers of one thread.
//!   `UserContext::new(entry, stack_top, arg0)`, `syscall_args() -> [u64; 6]` (number first is
//!   separate: `syscall_number()`), `set_syscall_result(values: &[u64])`, `pc()`.
//! - `fn run_user(ctx: &mut UserContext) -> Trap`: enters user mode with `ctx` and returns when
//!   the thread traps back: the kernel is a loop around this call (no kernel threads).

use crate::mm::FrameAllocator;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

/// Why `run_user` or `wait_for_interrupt` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    Syscall,
    /// User access to `addr` not permitted by its address space.
    PageFault { addr: u64, write: bool, exec: bool },
    /// Undefined instruction, privileged instruction, alignment fault, or any other
    /// synchronous exception that user code caused; `code` is the arch's vector/syndrome.
    IllegalInstruction { code: u64 },
    Timer,
    DeviceIrq(u32),
    /// An interrupt nobody raises on purpose (x86: a device's MSI naming an exception vector):
    /// acknowledged and counted; the interrupted thread runs on.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Spurious,
}

/// Permissions of one user mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapFlags {
    pub writable: bool,
    pub executable: bool,
    /// Device memory: uncached (x86 PCD+PWT / aarch64 Device-nGnRE).
    pub device: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    AlreadyMapped,
    OutOfMemory,
    /// Not page-aligned, or outside the user half.
    BadAddress,
}

/// User virtual addresses are in `[PAGE_SIZE, USER_TOP)` on both architectures.
pub const USER_TOP: u64 = 0x0000_7FFF_FFFF_F000;
pub const PAGE_SIZE: u64 = 4096;

/// The frame allocator the arch page-table code draws from.
pub type Frames = FrameAllocator;
