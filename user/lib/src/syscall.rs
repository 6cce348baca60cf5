//! Raw system calls (see `kernel_abi` for the convention).

use kernel_abi::{Error, Syscall};


/// Issues system call `number` with up to six arguments; returns the status and the first
/// result word.
#[inline(always)]
fn raw(number: u64, args: [u64; 6]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SYSCALL transfers to the kernel, which preserves every register except the result
    // registers and rcx/r11 (clobbered by the instruction itself); memory is only read or
    // written as the call's contract says.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            inlateout("rdi") args[0] => value,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            inlateout("r9") args[5] => _,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: SVC transfers to the kernel, which preserves every register except x0..x6 (the
    // result registers); memory is only read or written as the call's contract says.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") number,
            inlateout("x0") args[0] => status,
            inlateout("x1") args[1] => value,
            inlateout("x2") args[2] => _,
            inlateout("x3") args[3] => _,
            inlateout("x4") args[4] => _,
            inlateout("x5") args[5] => _,
            lateout("x6") _,
            options(nostack),
        );
    }
    (status, value)
}

fn check(status: u64) -> Result<(), Error> {
    match status {
        0 => Ok(()),
        s => Err(Error::from_status(s).unwrap_or(Error::InvalidArgument)),
    }
}

pub fn debug_write(bytes: &[u8]) -> Result<(), Error> {
    check(raw(Syscall::DebugWrite as u64, [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0]).0)
}

/// `debug_write` with an arbitrary pointer, for tests that hand the kernel bad addresses.
pub fn debug_write_raw(ptr: u64, len: u64) -> Result<(), Error> {
    check(raw(Syscall::DebugWrite as u64, [ptr, len, 0, 0, 0, 0]).0)
}

pub fn exit(code: u64) -> ! {
    raw(Syscall::Exit as u64, [code, 0, 0, 0, 0, 0]);
    unreachable!("exit returned")
}

pub fn yield_now() {
    raw(Syscall::Yield as u64, [0; 6]);
}

/// Issues an arbitrary system call number, for tests of the kernel's argument checking.
pub fn raw_call(number: u64, args: [u64; 6]) -> u64 {
    raw(number, args).0
}
