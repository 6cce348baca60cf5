//! SERVER_RESTART: a driver whose device is attached and DMAing when the server dies. It maps
//! a source page and a writable page at `RESTART_IOVA`, copies one into the other through the
//! device, reports `RESTART_MAPPED` and waits. The root task then kills the server, has the
//! device write to `RESTART_IOVA` through the dead server's tables (kept in the kernel's
//! quarantine), starts a new server, and has the device write there again (now blocked). On
//! `RECONNECT` the driver's next request fails with `ServerRestarted`; it reconnects, sets the
//! device up again and copies through it again.

use crate::contract::report;
use crate::contract::scenario::RESTART_IOVA;
use crate::{buffer, check, connect_first, copy_page, fill_pattern, open_device, report_page, same_bytes, slot, va, Client, Outcome};
use iommu_abi::{Error, IoasId, IovaChoice, Perm, PAGE_SIZE};
use iommu_client::{HwptOptions, WindowPlace};
use kernel_abi::{MapFlags, MemFlags};
use userlib::{println, syscall};

/// IOVA of the page the device reads.
const SOURCE_IOVA: u64 = 0x3000_0000;
/// Turns this driver waits for the starter's command before it gives up.
const COMMAND_TURNS: u64 = 10_000_000;

/// Binds and attaches the device in a new IOAS and maps the buffer's two pages into it.
fn set_up(iommu: &mut Client, code: u64) -> Result<IoasId, (u64, &'static str)> {
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (code, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (code, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (code, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (code, "device_attach"))?;
    iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(SOURCE_IOVA), Perm::READ).map_err(|_| (code, "map the source"))?;
    iommu.ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(RESTART_IOVA), Perm::READ_WRITE).map_err(|_| (code, "map the destination"))?;
    Ok(ioas)
}

pub fn hold_while_the_server_restarts() -> Outcome {
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (150, "map the report page"))?;
    // SAFETY: the report page was just mapped writable at va::REPORT; the root task reads it.
    let report_page = unsafe { report_page() };
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    fill_pattern(source, 0x21);
    let ioas = set_up(&mut iommu, 151)?;
    copy_page(&edu, SOURCE_IOVA, RESTART_IOVA, 152)?;
    check(same_bytes("copy before the restart", source, destination), 153, "RAM -> device -> RAM copy differs")?;
    println!("edu-driver: DMA works; waiting, attached and mapped, while the server is restarted");
    report_page.write(report::PHASE, report::RESTART_MAPPED);

    // Between our report and its command the starter kills the server, starts a new one and
    // fills every free frame with canaries, which takes long (and longer on a busy host) while
    // this thread does not run: the wait counts this thread's turns, not the clock.
    let mut turns = 0;
    while report_page.read(report::COMMAND) != report::RECONNECT {
        turns += 1;
        check(turns < COMMAND_TURNS, 154, "no command from the root task")?;
        syscall::yield_now();
    }
    let answer = iommu.ioas_unmap(ioas, RESTART_IOVA, PAGE_SIZE);
    if answer != Err(Error::ServerRestarted) {
        println!("edu-driver: the first request after the restart answered {answer:?}");
        return Err((155, "the first request after the restart did not fail with ServerRestarted"));
    }
    let place = WindowPlace { window_slot: slot::WINDOW, outgoing_slot: slot::OUTGOING, virt: va::WINDOW };
    let mut iommu = iommu_client::reconnect(slot::SERVER, &place).map_err(|_| (156, "reconnect"))?;
    destination.fill(0);
    set_up(&mut iommu, 157)?;
    copy_page(&edu, SOURCE_IOVA, RESTART_IOVA, 158)?;
    check(same_bytes("copy after the reconnect", source, destination), 159, "RAM -> device -> RAM copy differs after the reconnect")?;
    println!("edu-driver: told ServerRestarted, reconnected, set the device up again: DMA works");
    report_page.write(report::PHASE, report::RESTART_RECONNECTED);
    Ok(())
}
