//! RESET_FIRST_OWNER and RESET_NEXT_OWNER: one device, two owners one after the other. The
//! first sets the device up (DMA, an MSI) and leaves it as it is; the starter checks that the
//! server reset it before the second gets it, and the second must find it working: its BAR
//! answering, DMA through its own domain, its own MSI. With `RESET_BIND_ONLY` the first owner
//! only binds a device that is not an edu.

use crate::contract::report;
use crate::{buffer, check, connect_first, copy_page, dma_awaiting_interrupt, fill_pattern, open_device, report_page, same_bytes, slot, take_msi, va, Client, Outcome};
use iommu_abi::{DeviceId, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

const SOURCE_IOVA: u64 = 0x3000_0000;
const DESTINATION_IOVA: u64 = 0x3000_1000;
/// Turns this driver waits for the starter's command before it gives up.
const COMMAND_TURNS: u64 = 10_000_000;

/// Binds and attaches the device, maps the buffer's two pages and copies the first into the
/// second through the device (checked), then takes the device's MSI.
fn set_up(iommu: &mut Client, seed: u8, code: u64) -> Result<DeviceId, (u64, &'static str)> {
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (code, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (code, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (code, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (code, "device_attach"))?;
    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(SOURCE_IOVA), Perm::READ).map_err(|_| (code, "map the source"))?;
    iommu.ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ_WRITE).map_err(|_| (code, "map the destination"))?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    fill_pattern(source, seed);
    copy_page(&edu, SOURCE_IOVA, DESTINATION_IOVA, code + 1)?;
    check(same_bytes("copy through the device", source, destination), code + 2, "RAM -> device -> RAM copy differs")?;
    take_msi(iommu, device)?;
    // The MSI works: the copy back ends with the DMA-done interrupt.
    destination.fill(0);
    let (status, _) = dma_awaiting_interrupt(&edu, crate::edu::BUFFER, DESTINATION_IOVA)?;
    check(same_bytes("copy ending with the interrupt", source, destination), code + 3, "the copy that ended with the interrupt differs")?;
    println!("edu-driver: device set up: DMA through its domain, DMA-done interrupt (status {status:#x}) through its MSI");
    Ok(device)
}

/// `bind_only`: the device is not an edu (`RESET_BIND_ONLY`): it is only bound.
pub fn first_owner(bind_only: bool) -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (250, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT; the starter reads it.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    if bind_only {
        iommu.device_bind(slot::DEVICE).map_err(|_| (251, "device_bind"))?;
    } else {
        set_up(&mut iommu, 0x25, 251)?;
    }
    report_page.write(report::PHASE, report::RESET_OWNER_SET_UP);
    let mut turns = 0;
    while report_page.read(report::COMMAND) != report::LEAVE {
        turns += 1;
        check(turns < COMMAND_TURNS, 255, "no command from the starter")?;
        syscall::yield_now();
    }
    println!("edu-driver: leaving the device as it is, bound, attached, its MSI on");
    Ok(())
}

pub fn next_owner() -> Outcome {
    let mut iommu = connect_first()?;
    set_up(&mut iommu, 0x26, 261)?;
    println!("edu-driver: the device's next owner found it answering, DMAing and interrupting");
    Ok(())
}
