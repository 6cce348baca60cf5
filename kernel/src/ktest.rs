//! In-kernel test harness. The command line `test=<filter>` runs every registered test whose
//! name starts with `<filter>`, or with one of its comma-separated prefixes (`test=all` runs
//! all but the runner self-tests) and reports each
//! on the serial line as `TEST <name> ... ok`, `TEST <name> ... skipped: <why>` or
//! `TEST <name> ... FAILED: <why>`, then `TESTS DONE passed=<n> failed=<m> skipped=<k>`, then
//! ends QEMU with success only if nothing failed. The host runner (scripts/qemu-tests.py) reads
//! these lines and holds them to its declared list of the tests each configuration runs.

use alloc::string::String;
use spin::Mutex;

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

/// Why the running test does not apply to this machine, once it said so with [`skip`].
static SKIP_REASON: Mutex<Option<String>> = Mutex::new(None);

/// Marks the running test as not applicable to this machine (e.g. an IOMMU test booted
/// without an IOMMU): it then returns `Ok(())` and is reported as skipped, not as passed.
/// A skipped test that returns an error still fails.
pub fn skip(why: String) {
    *SKIP_REASON.lock() = Some(why);
}

/// Runs the tests selected by `filter`, then exits QEMU.
pub fn run(filter: &str, tests: &[Test]) -> ! {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for test in tests.iter().filter(|t| selected(filter, t.name)) {
        crate::println!("TEST {} ... start", test.name);
        *SKIP_REASON.lock() = None;
        let result = (test.run)();
        match (result, SKIP_REASON.lock().take()) {
            (Ok(()), None) => {
                passed += 1;
                crate::println!("TEST {} ... ok", test.name);
            }
            (Ok(()), Some(why)) => {
                skipped += 1;
                crate::println!("TEST {} ... skipped: {}", test.name, why);
            }
            (Err(why), _) => {
                failed += 1;
                crate::println!("TEST {} ... FAILED: {}", test.name, why);
            }
        }
    }
    crate::println!("TESTS DONE passed={} failed={} skipped={}", passed, failed, skipped);
    crate::arch::exit_qemu(failed == 0 && passed + skipped > 0);
}

fn selected(filter: &str, name: &str) -> bool {
    if name.starts_with("selftest::") {
        return name.starts_with(filter) && filter.starts_with("selftest::");
    }
    filter == "all" || filter.split(',').any(|prefix| name.starts_with(prefix))
}
