//! Dirty tracking through the IOMMU server, with the edu device writing (edu scenarios
//! DIRTY_TRACKING and DIRTY_UNSUPPORTED, `drivers/edu/src/dirty.rs`, which make every check
//! on the bitmap). QEMU's VT-d sets dirty bits in first-level entries only (`vtd-flts`); its
//! second-level tables (no SSADS) and its SMMUv3 (no HTTU) have none, and there the server
//! must say so and refuse.

use crate::ensure;
use crate::ktest::{Test, TestResult};
use crate::process::ExitReason;
use crate::tests_iommu::iommu_tests::{discovery_agrees, exit_of, run_until, server_and_driver, skip_without_iommu, with_kernel};
use alloc::string::String;
use edu_contract::scenario;
use iommu_server_contract::status;

/// `status::UNIT0_MODE` of a VT-d unit whose domains are first-level tables.
const FIRST_LEVEL_MODE: u64 = 3;

/// Runs the edu driver's `scenario` (tracking: whether it is the one for units that set dirty
/// bits) where the unit fits it; skips elsewhere.
fn run_scenario(scenario: u64, tracking: bool) -> TestResult {
    with_kernel(|kernel| {
        let (server, driver_pid, _device) = server_and_driver(kernel, 0, scenario, &[1])?;
        if !discovery_agrees(&server)? {
            skip_without_iommu();
            return Ok(());
        }
        let first_level = cfg!(target_arch = "x86_64") && server.word(status::UNIT0_MODE) == FIRST_LEVEL_MODE;
        if first_level != tracking {
            let why = if tracking {
                "the unit sets no dirty bits (VT-d second level without SSADS, SMMUv3 without HTTU): dirty::refused_where_the_unit_has_no_dirty_bits checks the refusal"
            } else {
                "the unit sets dirty bits: dirty::edu_writes_reported_exactly checks them"
            };
            crate::ktest::skip(String::from(why));
            return Ok(());
        }
        kernel.start_process(driver_pid).map_err(|e| alloc::format!("start driver: {e:?}"))?;
        run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
        let exit = exit_of(kernel, driver_pid);
        ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
        run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
        ensure!(server.word(status::PINNED_PAGES) == 0, "{} pages still pinned after the driver ended", server.word(status::PINNED_PAGES));
        ensure!(!kernel.has_exited(server.pid), "server died");
        Ok(())
    })
}

fn edu_writes_reported_exactly() -> TestResult {
    run_scenario(scenario::DIRTY_TRACKING, true)
}

fn refused_without_dirty_bits() -> TestResult {
    run_scenario(scenario::DIRTY_UNSUPPORTED, false)
}

/// The cost of reading a GiB's bitmap (printed by the driver as a `bench:` line; the timing
/// means something under `-icount` only, which `scripts/bench.sh` gives).
fn bench_dirty_bitmap() -> TestResult {
    run_scenario(scenario::DIRTY_TRACKING | scenario::DIRTY_BENCH, true)
}

pub const TESTS: &[Test] = &[
    Test { name: "dirty::edu_writes_reported_exactly", run: edu_writes_reported_exactly },
    Test { name: "dirty::refused_where_the_unit_has_no_dirty_bits", run: refused_without_dirty_bits },
    Test { name: "bench::dirty_bitmap_1gib", run: bench_dirty_bitmap },
];
