//! SVA_PROTECTED_PAGE: a bound process takes write permission away from a page the device
//! wrote (`contract::sva_protect`). The process's downgrade returned only after the server's
//! invalidation, so the device, which may have cached write permission, can read the page but
//! no longer write it.

use crate::contract::{report, sva, sva_protect};
use crate::edu;
use crate::sva::await_command;
use crate::{await_write_fault, connect_first, copy_page, open_device, report_page, slot, va, Outcome, RefusedWrite};
use iommu_abi::wire::SVA_UNTAGGED;
use iommu_abi::{FaultReason, PAGE_SIZE};
use kernel_abi::MapFlags;
use userlib::{println, syscall};

pub fn protected_page() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (290, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT; the starter reads it.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (291, "device_bind"))?;
    let faults = iommu.fault_alloc().map_err(|_| (292, "fault_alloc"))?;
    iommu.sva_bind(device, SVA_UNTAGGED, sva::ADDRESS_SPACE_SLOT, Some(faults)).map_err(|error| {
        println!("edu-driver: sva_bind: {error:?}");
        (293, "sva_bind")
    })?;
    copy_page(&edu, sva::SOURCE_VA, sva::DESTINATION_VA, 294)?;
    report_page.write(report::PHASE, sva_protect::WRITTEN);

    // The write first: QEMU's IOMMUs report a fault only from a walk, and a read would cache
    // the page's new, read-only translation, against which a write is dropped unreported.
    await_command(&report_page, sva_protect::DOWNGRADED, 295)?;
    edu.dma(sva::MARKER_VA, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (296, why))?;
    edu.dma(edu::BUFFER, sva::DESTINATION_VA, PAGE_SIZE, true).map_err(|why| (297, why))?;
    let refused = RefusedWrite { device, iova: sva::DESTINATION_VA, reason: FaultReason::Permission };
    await_write_fault(&mut iommu, faults, refused, &[], 298)?;
    println!("edu-driver: the write to the page the process made read-only faulted into the bind's queue");
    copy_page(&edu, sva::DESTINATION_VA, sva::SOURCE_VA, 299)?;
    println!("edu-driver: the device read the page the process made read-only");
    report_page.write(report::PHASE, sva_protect::FAULTED);
    Ok(())
}

/// SVA_PROTECT_WAITS: the report page made read-only while a watcher (the kernel test) watches
/// this address space; the outcome is the exit code.
pub fn protect_own_page() -> Outcome {
    syscall::mem_map(slot::REPORT, sva_protect::OWN_PAGE_VA, 0, 1, MapFlags::WRITE).map_err(|_| (300, "map the report page"))?;
    match syscall::mem_protect(sva_protect::OWN_PAGE_VA, 1, MapFlags::empty()) {
        Ok(()) => Ok(()),
        Err(kernel_abi::Error::PeerGone) => Err((sva_protect::UNCONFIRMED, "mem_protect: no watcher confirmed the downgrade")),
        Err(_) => Err((sva_protect::REFUSED, "mem_protect refused")),
    }
}
