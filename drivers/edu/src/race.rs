//! DESTROY_RACES_MAP: a second thread of the driver, with a connection of its own, maps and
//! unmaps in a loop on an IOAS the main thread shares with it, while the main thread destroys
//! the IOAS and its HWPT under it. Every reply either thread gets must be a valid outcome:
//! success, `NoSuchObject` once the IOAS is gone, `Busy` while something is built on what the
//! main thread destroys. Afterwards the server still serves: the device copies a page through
//! a new IOAS, and a client that took no part is served. The driver then keeps only its device
//! and fault queue, says so on the report page, and waits for the root task to count the
//! server's objects and pins and kill it.

use crate::contract::report;
use crate::{
    buffer, check, connect_first, copy_page, expect_error, expect_no_fault, fill_pattern, open_device, same_bytes, slot, va,
    Client, Outcome,
};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use iommu_abi::{Error, Handle, IoasId, IovaChoice, Perm, Rights, PAGE_SIZE};
use iommu_client::{HwptOptions, WindowPlace};
use kernel_abi::MapFlags;
use userlib::{println, syscall};

/// Rounds of the race, each on a new IOAS, and how many map/unmap pairs the mapper completes
/// in each before the main thread starts destroying (it destroys whenever it next runs).
const HEAD_STARTS: [u64; 8] = [1, 2, 3, 5, 8, 13, 21, 34];
/// Pages the mapper maps and unmaps, at a fixed IOVA.
const RACE_PAGES: u64 = 4;
const RACE_IOVA: u64 = 0x4000_0000;
const MAPPER_STACK_PAGES: u64 = 16;
/// Instructions to wait for the other thread at any one step.
const WAIT_TIMEOUT: u64 = 20_000_000_000;

/// The current round's IOAS, as a handle in the mapper's connection: 0 while there is none,
/// `STOP` when the mapper is to disconnect.
static ROUND_IOAS: AtomicU64 = AtomicU64::new(0);
const STOP: u64 = u64::MAX;
/// Map/unmap pairs the mapper completed in the current round.
static PAIRS: AtomicU64 = AtomicU64::new(0);
/// How the mapper's current round ended (`round_end`), 0 while it runs.
static ROUND_END: AtomicU64 = AtomicU64::new(0);
/// The mapper's connection (`mapper_state`).
static MAPPER_STATE: AtomicU64 = AtomicU64::new(mapper_state::CONNECTING);

mod round_end {
    /// The IOAS was gone when the mapper asked to map: `NoSuchObject`.
    pub const AT_MAP: u64 = 1;
    /// The IOAS went between the mapper's map and its unmap (destroy removed the mapping):
    /// the unmap got `NoSuchObject`.
    pub const AT_UNMAP: u64 = 2;
    /// A reply that is no valid outcome (the mapper printed it).
    pub const INVALID_REPLY: u64 = 3;
}

mod mapper_state {
    pub const CONNECTING: u64 = 0;
    pub const CONNECTED: u64 = 1;
    pub const CONNECT_FAILED: u64 = 2;
    pub const DISCONNECTED: u64 = 3;
    pub const DISCONNECT_FAILED: u64 = 4;
}

/// Blocks the calling thread for good (on a notification nobody signals).
fn idle() -> ! {
    loop {
        let _ = syscall::notify_wait(slot::MAPPER_IDLE);
    }
}

/// The mapper thread: connects as a client of its own, then runs each round the main thread
/// starts, until told to stop.
extern "C" fn mapper(_arg: u64) -> ! {
    let place = WindowPlace {
        window_slot: slot::SECOND_WINDOW,
        outgoing_slot: slot::SECOND_OUTGOING,
        virt: va::SECOND_WINDOW,
    };
    let mut iommu = match iommu_client::connect(slot::SECOND_SERVER, &place) {
        Ok(iommu) => iommu,
        Err(status) => {
            println!("edu-driver: mapper: connect failed with status {status:#x}");
            MAPPER_STATE.store(mapper_state::CONNECT_FAILED, SeqCst);
            idle()
        }
    };
    // The main thread shares each round's IOAS by deriving a handle into this client, which
    // needs this client's consent; the main client's ID is the badge of its endpoint.
    let accepted = syscall::cap_info(slot::SERVER).ok().map(|(_, _, main_client)| iommu.handle_accept(main_client, true));
    if !matches!(accepted, Some(Ok(()))) {
        println!("edu-driver: mapper: could not accept handles from the main client");
        MAPPER_STATE.store(mapper_state::CONNECT_FAILED, SeqCst);
        idle()
    }
    MAPPER_STATE.store(mapper_state::CONNECTED, SeqCst);
    loop {
        let ioas = ROUND_IOAS.load(SeqCst);
        if ioas == 0 {
            syscall::yield_now();
            continue;
        }
        if ioas == STOP {
            break;
        }
        let end = map_until_gone(&mut iommu, IoasId(Handle(ioas as u32)));
        ROUND_IOAS.store(0, SeqCst);
        ROUND_END.store(end, SeqCst);
    }
    let disconnected = iommu.transport_mut().disconnect() == 0;
    MAPPER_STATE.store(if disconnected { mapper_state::DISCONNECTED } else { mapper_state::DISCONNECT_FAILED }, SeqCst);
    idle()
}

/// Maps and unmaps `RACE_PAGES` at `RACE_IOVA` until the IOAS is gone; returns how the round
/// ended (`round_end`).
fn map_until_gone(iommu: &mut Client, ioas: IoasId) -> u64 {
    let length = RACE_PAGES * PAGE_SIZE;
    loop {
        match iommu.ioas_map(ioas, slot::BUFFER, 0, length, IovaChoice::Fixed(RACE_IOVA), Perm::READ_WRITE) {
            Ok(RACE_IOVA) => {}
            Err(Error::NoSuchObject) => return round_end::AT_MAP,
            other => {
                println!("edu-driver: mapper: map answered {other:?}, which is no valid outcome");
                return round_end::INVALID_REPLY;
            }
        }
        match iommu.ioas_unmap(ioas, RACE_IOVA, length) {
            Ok(unmapped) if unmapped == length => {}
            Err(Error::NoSuchObject) => return round_end::AT_UNMAP,
            other => {
                println!("edu-driver: mapper: unmap answered {other:?}, which is no valid outcome");
                return round_end::INVALID_REPLY;
            }
        }
        PAIRS.fetch_add(1, SeqCst);
    }
}

/// Yields until `done` holds, or fails check `code` after `WAIT_TIMEOUT` instructions.
fn wait_until(done: impl Fn() -> bool, code: u64, what: &'static str) -> Outcome {
    hwio::wait::poll_until_pausing(&userlib::InstructionClock, WAIT_TIMEOUT, done, syscall::yield_now).map_err(|_| (code, what))
}

fn start_mapper() -> Outcome {
    syscall::notification_create(slot::MAPPER_IDLE).map_err(|_| (203, "create the mapper's idle notification"))?;
    syscall::mem_alloc(MAPPER_STACK_PAGES, slot::MAPPER_STACK, kernel_abi::MemFlags::empty()).map_err(|_| (204, "allocate the mapper's stack"))?;
    syscall::mem_map(slot::MAPPER_STACK, va::MAPPER_STACK, 0, MAPPER_STACK_PAGES, MapFlags::WRITE).map_err(|_| (204, "map the mapper's stack"))?;
    let stack_top = va::MAPPER_STACK + MAPPER_STACK_PAGES * PAGE_SIZE;
    syscall::thread_create(mapper, stack_top, 0, kernel_abi::START_PRIORITY).map_err(|_| (204, "create the mapper thread"))?;
    wait_until(|| MAPPER_STATE.load(SeqCst) != mapper_state::CONNECTING, 205, "the mapper did not connect in time")?;
    check(MAPPER_STATE.load(SeqCst) == mapper_state::CONNECTED, 205, "the mapper could not connect")
}

pub fn destroy_races_map() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (200, "device_bind"))?;
    let faults = iommu.fault_alloc().map_err(|_| (201, "fault_alloc"))?;
    let memory = buffer(slot::BUFFER, RACE_PAGES, kernel_abi::MemFlags::empty())?;
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (202, "map the report page"))?;
    start_mapper()?;
    // The mapper's client ID is the badge of its endpoint.
    let (_, _, mapper_client) = syscall::cap_info(slot::SECOND_SERVER).map_err(|_| (219, "cap_info of the second endpoint"))?;

    let (mut ended_at_map, mut ended_at_unmap, mut pairs) = (0, 0, 0);
    for head_start in HEAD_STARTS {
        let ioas = iommu.ioas_alloc().map_err(|_| (206, "ioas_alloc"))?;
        let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (207, "hwpt_alloc"))?;
        iommu.device_attach(device, hwpt, None).map_err(|_| (208, "device_attach"))?;
        let shared = iommu.handle_derive(ioas.handle(), Rights::MAP.union(Rights::UNMAP), mapper_client).map_err(|_| (209, "share the IOAS with the mapper"))?;
        ROUND_END.store(0, SeqCst);
        PAIRS.store(0, SeqCst);
        ROUND_IOAS.store(u64::from(shared.0), SeqCst);
        wait_until(|| PAIRS.load(SeqCst) >= head_start || ROUND_END.load(SeqCst) != 0, 210, "the mapper made no progress")?;
        check(ROUND_END.load(SeqCst) == 0, 211, "the mapper stopped before anything was destroyed")?;
        // Destroyed under the mapper: refused while something is built on it, then gone.
        expect_error(iommu.destroy(ioas.handle()), Error::Busy, 212, "destroy the IOAS under its HWPT")?;
        expect_error(iommu.destroy(hwpt.handle()), Error::Busy, 213, "destroy the HWPT the device is attached to")?;
        iommu.device_detach(device, None).map_err(|_| (214, "device_detach"))?;
        iommu.destroy(hwpt.handle()).map_err(|_| (215, "destroy the HWPT"))?;
        iommu.destroy(ioas.handle()).map_err(|_| (216, "destroy the IOAS"))?;
        wait_until(|| ROUND_END.load(SeqCst) != 0, 217, "the mapper did not see the IOAS go")?;
        match ROUND_END.load(SeqCst) {
            round_end::AT_MAP => ended_at_map += 1,
            round_end::AT_UNMAP => ended_at_unmap += 1,
            _ => return Err((218, "the mapper got a reply that is no valid outcome")),
        }
        pairs += PAIRS.load(SeqCst);
    }
    println!(
        "edu-driver: {} rounds, {pairs} map/unmap pairs before the IOAS went; it went between map and unmap {ended_at_unmap} times, between unmap and map {ended_at_map} times; every reply was a valid outcome",
        HEAD_STARTS.len()
    );

    // The server carries on: the device copies a page through a new IOAS...
    let ioas = iommu.ioas_alloc().map_err(|_| (220, "ioas_alloc after the race"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (221, "hwpt_alloc after the race"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (222, "device_attach after the race"))?;
    let (source, rest) = memory.split_at_mut(PAGE_SIZE as usize);
    let destination = &mut rest[..PAGE_SIZE as usize];
    fill_pattern(source, 9);
    destination.fill(0);
    let iova = iommu.ioas_map(ioas, slot::BUFFER, 0, 2 * PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).map_err(|_| (223, "map after the race"))?;
    copy_page(&edu, iova, iova + PAGE_SIZE, 224)?;
    check(same_bytes("copy after the race", source, destination), 225, "the copy after the race differs")?;
    expect_no_fault(&mut iommu, faults, 226)?;
    check(iommu.ioas_unmap(ioas, iova, 2 * PAGE_SIZE) == Ok(2 * PAGE_SIZE), 227, "unmap after the race")?;
    iommu.device_detach(device, None).map_err(|_| (228, "device_detach after the race"))?;
    iommu.destroy(hwpt.handle()).map_err(|_| (229, "destroy the HWPT after the race"))?;
    iommu.destroy(ioas.handle()).map_err(|_| (230, "destroy the IOAS after the race"))?;
    // ... and a client that took no part in the race is served.
    let place = WindowPlace {
        window_slot: slot::THIRD_WINDOW,
        outgoing_slot: slot::THIRD_OUTGOING,
        virt: va::THIRD_WINDOW,
    };
    let mut bystander = iommu_client::connect(slot::THIRD_SERVER, &place).map_err(|_| (231, "connect a third client"))?;
    let own = bystander.ioas_alloc().map_err(|_| (232, "the third client's ioas_alloc"))?;
    bystander.destroy(own.handle()).map_err(|_| (233, "the third client's destroy"))?;
    check(bystander.transport_mut().disconnect() == 0, 234, "the third client's disconnect")?;
    println!("edu-driver: after the race the device copied a page through a new IOAS and another client was served");

    ROUND_IOAS.store(STOP, SeqCst);
    wait_until(|| MAPPER_STATE.load(SeqCst) != mapper_state::CONNECTED, 235, "the mapper did not stop")?;
    check(MAPPER_STATE.load(SeqCst) == mapper_state::DISCONNECTED, 236, "the mapper's disconnect failed")?;

    // Left in the server: the device and the fault queue, nothing mapped.
    // SAFETY: the report page was mapped writable at va::REPORT above and stays mapped; the
    // root task only reads it.
    unsafe { crate::report_page() }.write(report::PHASE, report::RACE_DONE);
    println!("edu-driver: holding the device and its fault queue ({} objects); waiting to be killed", report::OBJECTS_KEPT);
    loop {
        syscall::yield_now();
    }
}
