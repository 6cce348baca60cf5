//! LIMITS_EXHAUSTED: a hostile driver runs a server started with small per-client limits out of
//! each of them in turn, and must get `NoResources` every time (not a crash, not another
//! error). It keeps what it took (but the one-page areas, which make room for the large ones
//! that exhaust server memory), so while it waits at `AT_LIMITS` it is at every limit at once;
//! the kernel test runs a good driver's DMA rounds then, checks the counts against the limits,
//! and after this driver exits, that the server's counters are back where they were.

use crate::contract::report;
use crate::{buffer, check, connect_first, report_page, slot, va, Outcome, FAULT_TIMEOUT};
use iommu_abi::{Error, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// Requests any one step may make before it counts as "the limit never came".
const MOST_PER_STEP: u64 = 64;
/// Where the one-page areas go: each a gigabyte and two megabytes from the last, so no two
/// share a last-level or next-to-last-level table.
const SCATTERED_BASE: u64 = 0x1_0000_0000;
const SCATTER_STRIDE: u64 = 0x4020_0000;
/// Pages of each large area: its frame list (8 bytes a page) is what exhausts server memory
/// before the area limit is reached.
const LARGE_AREA_PAGES: u64 = 128;
/// Where the large areas go, one a megabyte apart.
const LARGE_BASE: u64 = 0x2000_0000;
const LARGE_STRIDE: u64 = 0x10_0000;

/// Repeats `request` until it fails, which must be with `NoResources`; returns the successes.
fn until_refused(step: usize, what: &'static str, mut request: impl FnMut(u64) -> Result<(), Error>) -> Result<u64, (u64, &'static str)> {
    for count in 0..MOST_PER_STEP {
        match request(count) {
            Ok(()) => {}
            Err(Error::NoResources) => {
                println!("edu-driver: limits: {what}: {count} granted, then NoResources");
                return Ok(count);
            }
            Err(error) => {
                println!("edu-driver: limits: {what}: request {count} answered {error:?}, not NoResources");
                return Err((140 + step as u64, "a limit answered something other than NoResources"));
            }
        }
    }
    println!("edu-driver: limits: {what}: {MOST_PER_STEP} granted, no limit");
    Err((150 + step as u64, "a limit was never reached"))
}

pub fn limits_exhausted() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (130, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT and stays mapped.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (131, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (132, "ioas_alloc"))?;
    buffer(slot::BUFFER, LARGE_AREA_PAGES, MemFlags::empty())?;

    let mut counts = [0u64; report::LIMIT_STEPS];
    counts[0] = until_refused(0, "fault queues", |_| iommu.fault_alloc().map(drop))?;
    counts[1] = until_refused(1, "HWPTs", |_| iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map(drop))?;
    counts[2] = until_refused(2, "PASIDs", |_| iommu.pasid_alloc().map(drop))?;
    let one_page = |index: u64| SCATTERED_BASE + index * SCATTER_STRIDE;
    counts[3] = until_refused(3, "one-page areas", |index| {
        iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(one_page(index)), Perm::READ_WRITE).map(drop)
    })?;
    for index in 0..counts[3] {
        if iommu.ioas_unmap(ioas, one_page(index), PAGE_SIZE) != Ok(PAGE_SIZE) {
            return Err((136, "unmap a one-page area"));
        }
    }
    counts[4] = until_refused(4, "IOASes (handles)", |_| iommu.ioas_alloc().map(drop))?;
    counts[5] = until_refused(5, "large areas (server memory)", |index| {
        let iova = LARGE_BASE + index * LARGE_STRIDE;
        iommu.ioas_map(ioas, slot::BUFFER, 0, LARGE_AREA_PAGES * PAGE_SIZE, IovaChoice::Fixed(iova), Perm::READ_WRITE).map(drop)
    })?;

    for (step, count) in counts.into_iter().enumerate() {
        report_page.write(report::LIMIT_COUNTS + step, count);
    }
    report_page.write(report::PHASE, report::AT_LIMITS);
    let start = syscall::instruction_counter();
    while report_page.read(report::COMMAND) != report::LEAVE {
        check(syscall::instruction_counter() - start < FAULT_TIMEOUT, 137, "no command from the root task")?;
        syscall::yield_now();
    }
    // Exits holding everything: the server must reap it all.
    Ok(())
}
