//! REVOKED_MEMORY_AND_DEVICE: revocation reaches the IOMMU. The driver maps memory lent
//! through a capability it derived, and the device DMAs through it; then it revokes that
//! capability and drops its own, so the server's pin is the memory's last holder. Once the
//! server has removed the mapping (a map at the same IOVA stops answering `Overlap`), the
//! driver reports `MEMORY_REVOKED` and, on the root task's command (the root task has filled
//! the freed frames with canaries meanwhile), has the device write to the old IOVA again: that
//! faults into the driver's queue, and its unmap of the range answers `NotMapped`. Then it
//! revokes its device capability: the server blocks and unbinds the device (its handle is
//! gone), and a DMA to an IOVA still mapped in the IOAS is refused and leaves memory as it was.

use crate::contract::report;
use crate::edu;
use crate::{
    await_write_fault, buffer, check, connect_first, copy_page, fill_pattern, open_device, report_page, same_bytes, slot, va, Outcome, RefusedWrite,
    DESTINATION_IOVA, FAULT_TIMEOUT,
};
use iommu_abi::{Error, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use kernel_abi::{MapFlags, MemFlags, Rights};
use userlib::{println, syscall};

/// IOVA of the page read by the first copy.
const SOURCE_IOVA: u64 = 0x3000_0000;
/// IOVA of a page mapped after the device capability is revoked.
const AFTER_DEVICE_IOVA: u64 = 0x4000_0000;

pub fn revoked_memory_and_device() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (120, "map the report page"))?;
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (121, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (122, "ioas_alloc"))?;
    let faults = iommu.fault_alloc().map_err(|_| (123, "fault_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (124, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (125, "device_attach"))?;

    // The memory goes to the server through LENT, derived from BUFFER: the server's pins are
    // lent through LENT, which a revoke of BUFFER takes back.
    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    syscall::cap_derive(slot::BUFFER, slot::LENT, Rights::all(), 0).map_err(|_| (126, "derive the lent capability"))?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    fill_pattern(source, 0x11);
    iommu.ioas_map(ioas, slot::LENT, 0, PAGE_SIZE, IovaChoice::Fixed(SOURCE_IOVA), Perm::READ).map_err(|_| (127, "map the source"))?;
    iommu
        .ioas_map(ioas, slot::LENT, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ_WRITE)
        .map_err(|_| (128, "map the destination"))?;
    copy_page(&edu, SOURCE_IOVA, DESTINATION_IOVA, 129)?;
    check(same_bytes("copy through the lent memory", source, destination), 130, "RAM -> device -> RAM copy differs")?;
    println!("edu-driver: DMA through memory lent to the server works; revoking the lent capability");

    // Take the memory back from the server, then let go of it: only the server's pin holds
    // the frames now.
    syscall::unmap(va::BUFFER, 2).map_err(|_| (131, "unmap the buffer"))?;
    syscall::cap_revoke(slot::BUFFER).map_err(|_| (132, "cap_revoke"))?;
    check(syscall::cap_info(slot::LENT).is_err(), 133, "the revoke left the lent capability")?;
    syscall::cap_delete(slot::BUFFER).map_err(|_| (134, "cap_delete"))?;

    // A probe page: a map at the old IOVA overlaps while the server still maps it there.
    syscall::mem_alloc(1, slot::PROBE, MemFlags::empty()).map_err(|_| (135, "allocate the probe"))?;
    let start = syscall::instruction_counter();
    loop {
        match iommu.ioas_map(ioas, slot::PROBE, 0, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ) {
            Ok(_) => break,
            Err(Error::Overlap) if syscall::instruction_counter() - start < FAULT_TIMEOUT => syscall::yield_now(),
            Err(_) => return Err((136, "the server did not remove the revoked mapping")),
        }
    }
    check(iommu.ioas_unmap(ioas, DESTINATION_IOVA, PAGE_SIZE) == Ok(PAGE_SIZE), 137, "unmap the probe")?;
    check(iommu.ioas_unmap(ioas, SOURCE_IOVA, PAGE_SIZE) == Err(Error::NotMapped), 138, "the revoked source mapping answers NotMapped")?;
    println!("edu-driver: the server removed the mappings of the revoked memory");

    // The root task fills the freed frames with canaries, then asks for the retry.
    // SAFETY: the report page was mapped writable at va::REPORT above; the root task reads it.
    let report_page = unsafe { report_page() };
    report_page.write(report::PHASE, report::MEMORY_REVOKED);
    let start = syscall::instruction_counter();
    while report_page.read(report::COMMAND) != report::RETRY_DMA {
        check(syscall::instruction_counter() - start < FAULT_TIMEOUT, 139, "no command from the root task")?;
        syscall::yield_now();
    }
    edu.dma(edu::BUFFER, DESTINATION_IOVA, PAGE_SIZE, true).map_err(|why| (140, why))?;
    await_write_fault(&mut iommu, faults, RefusedWrite::unmapped(device, DESTINATION_IOVA), &[], 141)?;
    println!("edu-driver: the device's write to the revoked IOVA faulted into the driver's queue");

    // The device capability next: the server blocks and unbinds the device.
    syscall::cap_revoke(slot::DEVICE).map_err(|_| (142, "revoke the device capability"))?;
    let start = syscall::instruction_counter();
    loop {
        match iommu.device_attach(device, hwpt, None) {
            Err(Error::NoSuchObject) => break,
            Err(Error::AlreadyAttached) if syscall::instruction_counter() - start < FAULT_TIMEOUT => syscall::yield_now(),
            _ => return Err((143, "the device survived the revoke of its capability")),
        }
    }
    // A page still mapped in the IOAS: the unbound device must not reach it.
    let after = buffer(slot::AFTER_DEVICE, 1, MemFlags::empty())?;
    after.fill(0x5a);
    iommu.ioas_map(ioas, slot::AFTER_DEVICE, 0, PAGE_SIZE, IovaChoice::Fixed(AFTER_DEVICE_IOVA), Perm::READ_WRITE).map_err(|_| (144, "map after the device revoke"))?;
    report_page.write(report::PHASE, report::DEVICE_REVOKED);
    edu.dma(edu::BUFFER, AFTER_DEVICE_IOVA, PAGE_SIZE, true).map_err(|why| (145, why))?;
    check(after.iter().all(|&b| b == 0x5a), 146, "the device wrote memory after its capability was revoked")?;
    println!("edu-driver: after the device capability was revoked the device is unbound and its DMA refused");
    Ok(())
}
