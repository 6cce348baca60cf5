//! Firmware-required identity maps on QEMU: with `qemu-run.sh --fw-override rmrr` the machine
//! carries a DMAR (x86) or IORT (arm) override through fw_cfg that gives the first edu device
//! an RMRR or RMR region (`edu_contract::direct`). The server must take the override, and the
//! device must reach the region at IOVA == physical address from takeover on (before any
//! driver), while its driver has it attached and after a replace (edu scenario
//! `direct::SCENARIO`, which also checks that the region is reserved and refused to maps), and
//! once its driver is gone; the other edu device must not reach it. On a machine without the
//! override the test skips.
//!
//! The region is ordinary RAM here; on a real machine the firmware's memory map reserves it.
//! The test stands in for that: it takes the region's frames out of the kernel's pool before
//! the device first DMAs and gives them back only after the IOMMU is reset.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use edu_contract::direct;
use iommu_server_contract::status;

use crate::ensure;
use crate::ktest::{Test, TestResult};
use crate::mm;
use crate::process::{ExitReason, Kernel};
use crate::tests_iommu::iommu_tests::platform::ConfigSpace;
use crate::tests_iommu::iommu_tests::{discovery_agrees, edu_devices, err, exit_of, run_until, server_and_driver, skip_without_iommu, with_kernel, EduDevice, EDU_BUFFER};

pub const TESTS: &[Test] = &[Test { name: "rmrr::direct_region_reached_from_takeover_on", run: direct_region }];

const PAGE: usize = 4096;

/// The region's frames, out of the kernel's pool while this lives.
struct Claimed {
    frames: Vec<u64>,
}

impl Claimed {
    fn take() -> Result<Claimed, String> {
        let mut claimed = Claimed { frames: Vec::new() };
        let mut pool = mm::FRAMES.lock();
        for page in 0..direct::REGION_PAGES {
            let frame = direct::REGION + page * PAGE as u64;
            if !pool.take(frame) {
                drop(pool);
                return Err(format!("frame {frame:#x} of the direct region is not free"));
            }
            claimed.frames.push(frame);
        }
        Ok(claimed)
    }

    /// Page `index` of the region, through the direct map.
    fn page(&self, index: usize) -> &[u8] {
        // SAFETY: a frame this test took out of the pool, in the direct map; only the device
        // (through the IOMMU) and this test touch it, and the test reads it only while no DMA
        // runs.
        unsafe { core::slice::from_raw_parts(mm::phys_to_virt(self.frames[index]), PAGE) }
    }

    /// Fills page `index` with `byte(i)` at each `i`.
    fn fill(&self, index: usize, byte: fn(usize) -> u8) {
        let page = mm::phys_to_virt(self.frames[index]);
        for i in 0..PAGE {
            // SAFETY: as in `page`; no DMA runs while the test writes.
            unsafe { page.add(i).write_volatile(byte(i)) };
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        let mut pool = mm::FRAMES.lock();
        for &frame in &self.frames {
            pool.free(frame);
        }
    }
}

/// Whether `page` holds `byte(i)` at every `i`; says where not.
fn holds(what: &str, page: &[u8], byte: fn(usize) -> u8) -> Result<(), String> {
    match page.iter().enumerate().find(|&(i, &b)| b != byte(i)) {
        None => Ok(()),
        Some((i, &b)) => Err(format!("{what}: byte {i} of the region's second page is {b:#x}, expected {:#x}", byte(i))),
    }
}

/// Has `device` (no driver's: the test programs it) copy the region's first page into its
/// buffer and from there into the region's second page, at IOVA == physical address.
fn device_copies(kernel: &mut Kernel, config: &ConfigSpace, device: EduDevice) -> TestResult {
    let (first, second) = (direct::REGION, direct::REGION + PAGE as u64);
    for (source, destination, to_ram) in [(first, EDU_BUFFER, false), (EDU_BUFFER, second, true)] {
        device.start_dma(config, source, destination, to_ram);
        run_until(kernel, "the edu's DMA", |_| !device.dma_running())?;
    }
    Ok(())
}

fn expected_requester_id() -> u16 {
    let (bus, device, function) = if cfg!(target_arch = "x86_64") { direct::DEVICE_X86_64 } else { direct::DEVICE_AARCH64 };
    u16::from(bus) << 8 | u16::from(device) << 3 | u16::from(function)
}

/// Server start arguments the test runs under: on arm both SMMU domain formats, stage 1 and
/// stage 2 (VT-d's table format follows the machine: each VT-d configuration is one).
const SERVER_ARGS: &[u64] = &[
    0,
    #[cfg(target_arch = "aarch64")]
    iommu_server_contract::start::STAGE2,
];

fn direct_region() -> TestResult {
    let mut region = None;
    for &server_arg in SERVER_ARGS {
        if !with_kernel(|kernel| run(kernel, server_arg, &mut region))? {
            break;
        }
    }
    // Only now, with the IOMMU reset and no device reaching it, does the region go back (kept
    // between the runs: freed frames are the next ones handed out).
    drop(region);
    Ok(())
}

/// One server with `server_arg` and the driver, the region claimed into `region` by the first
/// run; false if the machine cannot run the test.
fn run(kernel: &mut Kernel, server_arg: u64, region: &mut Option<Claimed>) -> Result<bool, String> {
    let (server, driver_pid, device) = server_and_driver(kernel, server_arg, direct::SCENARIO, &[1])?;
    if !discovery_agrees(&server)? {
        skip_without_iommu();
        return Ok(false);
    }
    if server.word(status::TABLE_OVERRIDE) == status::TABLE_OVERRIDE_NONE {
        crate::ktest::skip(String::from("no firmware-table override on this machine (qemu-run.sh --fw-override rmrr hands one over)"));
        return Ok(false);
    }
    // The server maps the region for the device already, but nothing has the device DMA yet.
    if region.is_none() {
        *region = Some(Claimed::take()?);
    }
    let region = region.as_ref().expect("claimed above");
    region.fill(0, direct::first_page_byte);
    ensure!(server.word(status::TABLE_OVERRIDE) == status::TABLE_OVERRIDE_TAKEN, "the server rejected the firmware-table override (its log says why)");
    ensure!(server.word(status::DIRECT_DEVICES) == 1, "the server keeps {} devices with identity maps, the override names 1", server.word(status::DIRECT_DEVICES));
    ensure!(device.rid == expected_requester_id(), "the driver's edu is {:#06x}, the override names {:#06x}", device.rid, expected_requester_id());
    let config = ConfigSpace::open()?;
    let other = edu_devices(&config).into_iter().find(|e| e.rid != device.rid).ok_or("no second edu device")?;

    // Takeover: no driver yet, the device already reaches its region, and only it does.
    let faults = server.word(status::FAULTS);
    device_copies(kernel, &config, device)?;
    holds("from takeover on", region.page(1), direct::first_page_byte)?;
    ensure!(server.word(status::FAULTS) == faults, "the device's DMA to its own region faulted before any driver existed");
    region.fill(1, |_| 0);
    let unrouted = server.word(status::UNROUTED_FAULTS);
    other.start_dma(&config, EDU_BUFFER, direct::REGION + PAGE as u64, true);
    run_until(kernel, "the other edu's blocked DMA to be reported", |_| !other.dma_running() && server.word(status::UNROUTED_FAULTS) > unrouted)?;
    holds("the other edu device", region.page(1), |_| 0)?;
    crate::println!("rmrr: from takeover on, edu {:#06x} reads and writes its region at IOVA == physical address; edu {:#06x} is refused", device.rid, other.rid);

    // Attached, replaced: the driver checks reservation, refusal and DMA; the last write
    // it has the device make into the region is the replaced pattern.
    kernel.start_process(driver_pid).map_err(err("start driver"))?;
    run_until(kernel, "the driver", |k| k.has_exited(driver_pid))?;
    let exit = exit_of(kernel, driver_pid);
    ensure!(exit == Some(ExitReason::Exited(0)), "driver ended with {exit:?}");
    holds("after attach and replace", region.page(1), direct::replaced_byte)?;

    // Detached and its driver gone: back in its blocking domain, still with its region.
    run_until(kernel, "the server to reap the driver", |_| server.word(status::CLIENTS_REAPED) == 1)?;
    region.fill(1, |_| 0);
    let faults = server.word(status::FAULTS);
    device_copies(kernel, &config, device)?;
    holds("after its driver ended", region.page(1), direct::first_page_byte)?;
    ensure!(server.word(status::FAULTS) == faults, "the device's DMA to its own region faulted after its driver ended");
    ensure!(!kernel.has_exited(server.pid), "server died");
    crate::println!("rmrr: server argument {server_arg:#x}: the region followed the device through attach, replace and detach");
    Ok(true)
}
