//! Kernel console: `print!`/`println!` and the `log` facade over the arch serial port.

use core::fmt::{self, Write};
use spin::Mutex;

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::arch::console_write(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console);

pub fn print(args: fmt::Arguments) {
    // Interrupts are off in the kernel, so the lock can only be contended by a panic while
    // printing; never deadlock on that path.
    match CONSOLE.try_lock() {
        Some(mut console) => {
            let _ = console.write_fmt(args);
        }
        None => {
            let _ = Console.write_fmt(args);
        }
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($arg)*))));
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            crate::println!("[{:5}] {}", record.level(), record.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logging(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
