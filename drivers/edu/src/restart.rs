//! SERVER_RESTART: a driver whose device is attached and DMAing when the server dies. It maps
//! a source page and a writable page at `RESTART_IOVA`, copies one into the other through the
//! device, reports `RESTART_MAPPED` and waits. The root task then kills the server and takes
//! over the device itself: the device's writes to `RESTART_IOVA` must land in the page the
//! dead server had mapped (held in the kernel's quarantine) until a new server has taken the
//! unit over, and nowhere after.

use crate::contract::report;
use crate::contract::scenario::RESTART_IOVA;
use crate::{buffer, check, connect_first, copy_page, fill_pattern, open_device, report_page, same_bytes, slot, va, Outcome};
use iommu_abi::{IovaChoice, Perm, PAGE_SIZE};
use iommu_client::HwptOptions;
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// IOVA of the page the device reads.
const SOURCE_IOVA: u64 = 0x3000_0000;

pub fn hold_while_the_server_restarts() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (150, "map the report page"))?;
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (151, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (152, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (153, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (154, "device_attach"))?;
    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    fill_pattern(source, 0x21);
    iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(SOURCE_IOVA), Perm::READ).map_err(|_| (155, "map the source"))?;
    iommu.ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(RESTART_IOVA), Perm::READ_WRITE).map_err(|_| (156, "map the destination"))?;
    copy_page(&edu, SOURCE_IOVA, RESTART_IOVA, 157)?;
    check(same_bytes("copy before the restart", source, destination), 158, "RAM -> device -> RAM copy differs")?;
    println!("edu-driver: DMA works; waiting, attached and mapped, while the server is restarted");
    // SAFETY: the report page was mapped writable at va::REPORT above; the root task reads it.
    unsafe { report_page() }.write(report::PHASE, report::RESTART_MAPPED);
    loop {
        syscall::yield_now();
    }
}
