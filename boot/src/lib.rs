//! Entry code for both architectures. Each boot path brings the CPU from the state QEMU leaves
//! it in to 64-bit mode with the MMU on, the kernel mapped at its link address and physical
//! memory in the direct map, builds one architecture-neutral [`BootInfo`], and calls the kernel.
#![no_std]

mod info;
pub use info::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
mod aarch64;

extern "Rust" {
    /// Defined by the kernel; never returns.
    fn kernel_main(info: &'static BootInfo) -> !;
}
