//! In-kernel test harness. The command line `test=<filter>` runs every registered test whose
//! name starts with `<filter>` (`test=all` runs all but the runner self-tests) and reports each
//! on the serial line as `TEST <name> ... ok` or `TEST <name> ... FAILED: <why>`, then
//! `TESTS DONE passed=<n> failed=<m>`, then ends QEMU with success only if nothing failed.
//! The host runner (scripts/qemu-tests.py) reads these lines.

use alloc::string::String;

pub type TestResult = Result<(), String>;

pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

/// Fails the current test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(alloc::format!("{} ({}:{})", format_args!($($arg)*), file!(), line!()));
        }
    };
}

/// Runs the tests selected by `filter`, then exits QEMU.
pub fn run(filter: &str, tests: &[Test]) -> ! {
    let (mut passed, mut failed) = (0, 0);
    for test in tests.iter().filter(|t| selected(filter, t.name)) {
        crate::println!("TEST {} ... start", test.name);
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                crate::println!("TEST {} ... ok", test.name);
            }
            Err(why) => {
                failed += 1;
                crate::println!("TEST {} ... FAILED: {}", test.name, why);
            }
        }
    }
    crate::println!("TESTS DONE passed={} failed={}", passed, failed);
    crate::arch::exit_qemu(failed == 0 && passed > 0);
}

fn selected(filter: &str, name: &str) -> bool {
    if name.starts_with("selftest::") {
        return name.starts_with(filter) && filter.starts_with("selftest::");
    }
    filter == "all" || name.starts_with(filter)
}
