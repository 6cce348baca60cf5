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

/// Gathers what a formatting call writes and hands it to the kernel in pieces of up to
/// [`kernel_abi::MAX_DEBUG_WRITE`] bytes: one `debug_write` per line rather than one per
/// formatted piece (a line of a few numbers is a dozen pieces, and each system call also
/// makes the kernel copy and check a buffer).
pub struct LineWriter {
    buffer: [u8; kernel_abi::MAX_DEBUG_WRITE],
    len: usize,
}

impl LineWriter {
    pub const fn new() -> Self {
        Self { buffer: [0; kernel_abi::MAX_DEBUG_WRITE], len: 0 }
    }

    /// Writes out what is gathered.
    pub fn flush(&mut self) -> fmt::Result {
        let pending = &self.buffer[..self.len];
        self.len = 0;
        if !pending.is_empty() {
            syscall::debug_write(pending).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == self.buffer.len() {
                self.flush()?;
            }
            let take = rest.len().min(self.buffer.len() - self.len);
            self.buffer[self.len..self.len + take].copy_from_slice(&rest[..take]);
            self.len += take;
            rest = &rest[take..];
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::LineWriter::new();
        let _ = writeln!(line, $($arg)*);
        let _ = line.flush();
    }};
}

/// Exit code a program reports when it panicked.
pub const PANIC_EXIT_CODE: u64 = 101;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut line = LineWriter::new();
    let _ = match info.location() {
        Some(at) => writeln!(line, "user panic at {}:{}: {}", at.file(), at.line(), info.message()),
        None => writeln!(line, "user panic: {}", info.message()),
    };
    let _ = line.flush();
    syscall::exit(PANIC_EXIT_CODE)
}
