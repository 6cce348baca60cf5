//! SVA_BOUND_PROCESS: the device works in another process's address space (`contract::sva`).
//! The driver never maps anything in the IOMMU: the process's own page tables translate the
//! device's DMA. Its checks: the copy between the process's pages completes; after the process
//! unmapped the destination, the device's write there faults into the bind's queue, as does a
//! write to a kernel address; after the process ended, the binding is gone.

use crate::contract::{report, sva};
use crate::edu;
use crate::{await_write_fault, check, connect_first, copy_page, open_device, report_page, slot, va, Outcome, RefusedWrite, FAULT_TIMEOUT};
use hwio::SharedWords;
use iommu_abi::wire::SVA_UNTAGGED;
use iommu_abi::{Error, PAGE_SIZE};
use kernel_abi::MapFlags;
use userlib::{println, syscall};

/// Waits until the starter writes `command` to the report page.
pub(crate) fn await_command(report_page: &SharedWords<{ PAGE_SIZE as usize / 8 }>, command: u64, code: u64) -> Outcome {
    let start = syscall::instruction_counter();
    while report_page.read(report::COMMAND) != command {
        check(syscall::instruction_counter() - start < FAULT_TIMEOUT, code, "no command from the starter")?;
        syscall::yield_now();
    }
    Ok(())
}

pub fn bound_process() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (190, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT; the starter reads it.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (191, "device_bind"))?;
    let faults = iommu.fault_alloc().map_err(|_| (192, "fault_alloc"))?;
    iommu.sva_bind(device, SVA_UNTAGGED, sva::ADDRESS_SPACE_SLOT, Some(faults)).map_err(|error| {
        println!("edu-driver: sva_bind: {error:?}");
        (193, "sva_bind")
    })?;
    copy_page(&edu, sva::SOURCE_VA, sva::DESTINATION_VA, 194)?;
    println!("edu-driver: the device copied between the bound process's pages");
    report_page.write(report::PHASE, sva::COPIED);

    // The process unmaps the destination; its frame is reused once the IOMMU forgot it.
    await_command(&report_page, sva::RETRY_DMA, 195)?;
    edu.dma(edu::BUFFER, sva::DESTINATION_VA, PAGE_SIZE, true).map_err(|why| (196, why))?;
    let unmapped = RefusedWrite::unmapped(device, sva::DESTINATION_VA);
    await_write_fault(&mut iommu, faults, unmapped, &[], 197)?;
    println!("edu-driver: the write to the page the process unmapped faulted into the bind's queue");
    edu.dma(edu::BUFFER, sva::KERNEL_VA, PAGE_SIZE, true).map_err(|why| (198, why))?;
    await_write_fault(&mut iommu, faults, RefusedWrite::unmapped(device, sva::KERNEL_VA), &[unmapped], 199)?;
    println!("edu-driver: a write to a kernel address through the binding faulted into the bind's queue");
    edu.dma(sva::MARKER_VA, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (200, why))?;
    report_page.write(report::PHASE, sva::FAULTED);

    // The process ended and the server has released it: the binding is gone.
    await_command(&report_page, sva::PROCESS_ENDED, 201)?;
    check(iommu.sva_unbind(device, SVA_UNTAGGED) == Err(Error::NotAttached), 202, "the binding outlived the process")?;
    edu.dma(edu::BUFFER, sva::SOURCE_VA, PAGE_SIZE, true).map_err(|why| (204, why))?;
    report_page.write(report::PHASE, sva::WRITTEN_AFTER_END);
    println!("edu-driver: after the process ended its binding is gone");
    Ok(())
}
