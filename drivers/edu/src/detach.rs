//! DETACH_STOPS_DMA: `device_detach` stops the device's DMA while its old domain still maps
//! the pages, and an attach brings it back (`contract::detach`). On VT-d scalable mode the
//! detach clears the PASID entry at RID_PASID, in legacy mode the context entry; on SMMUv3 the
//! stream goes back to the blocking domain.

use crate::contract::{detach, report};
use crate::edu;
use crate::{buffer, check, connect_first, copy_page, expect_error, expect_no_fault, fill_pattern, open_device, report_page, same_bytes, slot, va, Outcome};
use hwio::SharedWords;
use iommu_abi::{Error, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// What the destination is filled with to show afterwards that no DMA wrote it.
const UNTOUCHED: u8 = 0x5a;
/// The driver's turns (yields) to wait for each command: the starter waits for the server to
/// record the fault in between, which on a busy host takes many of them.
const COMMAND_TURNS: u64 = 1_000_000;

/// Waits until the starter writes `command` to the report page.
fn await_command(report_page: &SharedWords<{ PAGE_SIZE as usize / 8 }>, command: u64, code: u64) -> Outcome {
    let mut turns = 0;
    while report_page.read(report::COMMAND) != command {
        turns += 1;
        check(turns < COMMAND_TURNS, code, "no command from the starter")?;
        syscall::yield_now();
    }
    Ok(())
}

pub fn detach_stops_dma() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (270, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT; the starter reads it.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (271, "device_bind"))?;
    let faults = iommu.fault_alloc().map_err(|_| (272, "fault_alloc"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (273, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (274, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (275, "device_attach"))?;

    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    fill_pattern(source, 0x27);
    destination.fill(UNTOUCHED);
    let mapped = iommu.ioas_map(ioas, slot::BUFFER, 0, 2 * PAGE_SIZE, IovaChoice::Fixed(detach::SOURCE_IOVA), Perm::READ_WRITE);
    check(mapped == Ok(detach::SOURCE_IOVA), 276, "map the source and the destination")?;
    copy_page(&edu, detach::SOURCE_IOVA, detach::DESTINATION_IOVA, 277)?;
    check(same_bytes("copy while attached", source, destination), 278, "RAM -> device -> RAM copy differs while attached")?;
    expect_no_fault(&mut iommu, faults, 279)?;

    // Detached, with the IOAS still mapping both pages: only the detach can stop the device.
    destination.fill(UNTOUCHED);
    iommu.device_detach(device, None).map_err(|_| (280, "device_detach"))?;
    expect_error(iommu.device_detach(device, None), Error::NotAttached, 281, "detach a detached device")?;
    println!("edu-driver: device detached; the IOAS still maps its pages");
    report_page.write(report::PHASE, detach::DETACHED);

    await_command(&report_page, detach::WRITE, 282)?;
    // The device's buffer holds the source's bytes from the copy above.
    edu.dma(edu::BUFFER, detach::DESTINATION_IOVA, PAGE_SIZE, true).map_err(|why| (283, why))?;
    check(destination.iter().all(|&b| b == UNTOUCHED), 284, "the detached device wrote the old domain's page")?;
    report_page.write(report::PHASE, detach::WRITE_REFUSED);

    await_command(&report_page, detach::READ, 285)?;
    fill_pattern(source, 0x28);
    edu.dma(detach::SOURCE_IOVA, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (286, why))?;
    report_page.write(report::PHASE, detach::READ_REFUSED);

    await_command(&report_page, detach::REATTACH, 287)?;
    // The detached device's faults went to no queue: the queue was the HWPT's, which the
    // device had left.
    expect_no_fault(&mut iommu, faults, 288)?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (289, "attach again"))?;
    // Whatever the refused read left in the device's buffer, it is not the refilled source.
    edu.dma(edu::BUFFER, detach::DESTINATION_IOVA, PAGE_SIZE, true).map_err(|why| (290, why))?;
    check(source.iter().zip(destination.iter()).any(|(s, d)| s != d), 291, "the detached device read the old domain's page")?;
    destination.fill(UNTOUCHED);
    copy_page(&edu, detach::SOURCE_IOVA, detach::DESTINATION_IOVA, 292)?;
    check(same_bytes("copy after the attach", source, destination), 293, "RAM -> device -> RAM copy differs after attaching again")?;
    expect_no_fault(&mut iommu, faults, 294)?;
    println!("edu-driver: detached, the device reached neither page and its faults went to no queue; attached again, it copies");
    Ok(())
}
