//! Runtime for user programs: the entry point, system-call stubs, `println!`, and a panic
//! handler that reports and exits.
//!
//! A program defines `fn main(arg: u64) -> u64`-like entry through [`entry!`]; the kernel starts
//! its first thread at `_start` with one argument word.
#![no_std]

pub mod syscall;

/// The instruction counter as the clock that bounds a user program's waits on hardware or on
/// another process (`hwio::wait`): one instruction per nanosecond under `-icount shift=0`;
/// the budgets are generous either way.
pub struct InstructionClock;

impl hwio::Clock for InstructionClock {
    fn now_ns(&self) -> u64 {
        syscall::instruction_counter()
    }
}

use core::fmt::{self, Write};
pub use kernel_abi::Error;

/// Declares the program's main function: `entry!(main)` with `fn main(arg: u64) -> u64`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub extern "C" fn _start(arg: u64) -> ! {
            let code: u64 = $main(arg);
            $crate::syscall::exit(code)
        }
    };
}

pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(kernel_abi::MAX_DEBUG_WRITE) {
            syscall::debug_write(chunk).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::Console, $($arg)*);
    }};
}

/// Exit code a program reports when it panicked.
pub const PANIC_EXIT_CODE: u64 = 101;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = match info.location() {
        Some(at) => writeln!(Console, "user panic at {}:{}: {}", at.file(), at.line(), info.message()),
        None => writeln!(Console, "user panic: {}", info.message()),
    };
    syscall::exit(PANIC_EXIT_CODE)
}
