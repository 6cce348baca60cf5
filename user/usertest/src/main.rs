//! Scenarios for the kernel's user-mode tests. The start argument selects one; the exit code
//! tells the test what happened (0 = the scenario's own checks passed).
#![no_std]
#![no_main]

use kernel_abi::{Error, Syscall};
use userlib::{println, syscall};

userlib::entry!(main);

/// Keep in sync with kernel/src/tests.rs.
mod scenario {
    pub const HELLO: u64 = 0;
    pub const NULL_WRITE: u64 = 1;
    pub const ILLEGAL_INSTRUCTION: u64 = 2;
    pub const BAD_POINTERS: u64 = 3;
    pub const SPIN: u64 = 4;
    pub const HOSTILE_SYSCALLS: u64 = 5;
    pub const KERNEL_READ: u64 = 6;
}

fn main(arg: u64) -> u64 {
    match arg {
        scenario::HELLO => {
            println!("hello from user mode");
            42
        }
        scenario::NULL_WRITE => {
            // SAFETY: deliberately invalid: the kernel must kill this process.
            unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>(), 1) };
            1
        }
        scenario::ILLEGAL_INSTRUCTION => {
            // SAFETY: deliberately undefined instruction: the kernel must kill this process.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                core::arch::asm!("ud2");
                #[cfg(target_arch = "aarch64")]
                core::arch::asm!("udf #0");
            }
            1
        }
        scenario::BAD_POINTERS => bad_pointers(),
        scenario::SPIN => loop {
            core::hint::spin_loop();
        },
        scenario::HOSTILE_SYSCALLS => hostile_syscalls(),
        scenario::KERNEL_READ => {
            // SAFETY: deliberately reads kernel memory: the kernel must kill this process.
            unsafe { core::ptr::read_volatile(0xFFFF_FFFF_8020_0000 as *const u64) }
        }
        _ => 2,
    }
}

/// Every pointer the kernel must refuse with BadAddress, not crash on.
fn bad_pointers() -> u64 {
    let cases: [(u64, u64); 6] = [
        (0, 8),                         // null page
        (0xFFFF_FFFF_8020_0000, 16),    // kernel image
        (0xFFFF_8000_0000_0000, 16),    // direct map
        (0x0000_7FFF_FFFF_FFF0, 0x100), // runs past the top of user space
        (u64::MAX - 4, 16),             // wraps around
        (0x10_0000_0000, 8),            // unmapped user address
    ];
    for (i, (ptr, len)) in cases.iter().enumerate() {
        if syscall::debug_write_raw(*ptr, *len) != Err(Error::BadAddress) {
            return 10 + i as u64;
        }
    }
    if syscall::debug_write_raw(0x40_0000, kernel_abi::MAX_DEBUG_WRITE as u64 + 1) != Err(Error::InvalidArgument) {
        return 20;
    }
    0
}

/// A bounded stream of pseudo-random and boundary arguments at every system call number (and
/// unknown ones). Exit is excluded (it would end the test) except with its real semantics at
/// the end. The kernel must answer each with an error or a success, never crash or hang.
fn hostile_syscalls() -> u64 {
    const BOUNDARY: [u64; 8] = [0, 1, 0xFFF, 0x1000, 0x7FFF_FFFF_FFFF, 0xFFFF_8000_0000_0000, u64::MAX - 1, u64::MAX];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000u64 {
        let mut args = [0u64; 6];
        for a in args.iter_mut() {
            let r = next();
            *a = if r & 1 == 0 { BOUNDARY[(r >> 1) as usize % BOUNDARY.len()] } else { r };
        }
        let number = match i % 4 {
            0 => Syscall::DebugWrite as u64,
            1 => Syscall::Yield as u64,
            2 => next() % 64,
            _ => next(),
        };
        if number == Syscall::Exit as u64 {
            continue;
        }
        let status = syscall::raw_call(number, args);
        if status != 0 && Error::from_status(status).is_none() {
            return 30;
        }
    }
    0
}
