//! Driver for QEMU's `edu` device as a client of the IOMMU server, and the scenarios the
//! IOMMU kernel tests (kernel/src/tests_iommu.rs) run with it. The start argument selects the
//! scenario; the exit code is 0 when every check of the scenario held, else the number of the
//! failed check (the reason is printed).
#![no_std]
#![no_main]

mod direct;
mod detach;
mod dirty;
mod edu;
#[cfg(target_arch = "x86_64")]
mod forged;
#[cfg(target_arch = "aarch64")]
mod its;
mod limits;
#[cfg(target_arch = "aarch64")]
mod nested;
mod race;
mod reset;
mod restart;
mod revoke;
mod sharing;
mod stream;
mod sva;
mod sva_protect;
mod window;

/// What the driver and its starter agree on (scenarios, slots, report words).
use edu_contract as contract;

use contract::scenario;
use edu::Edu;
use hwio::SharedWords;
use iommu_abi::wire::{Message, Opcode};
use iommu_abi::kernel_ipc;
use iommu_abi::{Access, DeviceId, Error, FaultId, FaultReason, IovaChoice, MemoryId, Perm, PAGE_SIZE};
use iommu_client::{HwptOptions, WindowPlace};
use kernel_abi::{MapFlags, MemFlags, Rights};
use userlib::{println, syscall};

userlib::entry!(main);

/// Slots the root task fills (`contract::slot`) and slots the driver allocates.
mod slot {
    pub use crate::contract::slot::*;
    pub const WINDOW: u64 = 10;
    pub const OUTGOING: u64 = 12;
    pub const SECOND_WINDOW: u64 = 13;
    pub const SECOND_OUTGOING: u64 = 15;
    pub const THIRD_WINDOW: u64 = 16;
    pub const THIRD_OUTGOING: u64 = 18;
    pub const BUFFER: u64 = 20;
    pub const READ_ONLY_BUFFER: u64 = 21;
    pub const LARGE_BUFFER: u64 = 22;
    pub const MAPPER_STACK: u64 = 23;
    pub const MAPPER_IDLE: u64 = 24;
    pub const FAULT_NOTIFICATION: u64 = 25;
    pub const WINDOW_VIEW: u64 = 26;
    pub const WINDOW_CHILD: u64 = 27;
    /// The IRQ capability of the device's MSI, from the server's `msi_alloc`.
    pub const MSI: u64 = 28;
    /// The notification the MSI is bound to.
    pub const IRQ_NOTIFICATION: u64 = 29;
    /// REVOKED_MEMORY_AND_DEVICE: the copy of BUFFER the server's pins are lent through, a
    /// probe page, a page mapped after the device capability is revoked.
    pub const LENT: u64 = 30;
    pub const PROBE: u64 = 31;
    pub const AFTER_DEVICE: u64 = 32;
}

/// The driver's address space.
mod va {
    pub const DEVICE: u64 = 0x1000_0000;
    pub const SECOND_DEVICE: u64 = 0x1001_0000;
    pub const WINDOW: u64 = 0x1100_0000;
    pub const SECOND_WINDOW: u64 = 0x1101_0000;
    pub const THIRD_WINDOW: u64 = 0x1102_0000;
    pub const REPORT: u64 = 0x1103_0000;
    pub const WINDOW_CHILD: u64 = 0x1104_0000;
    pub const BUFFER: u64 = 0x2000_0000;
    pub const MAPPER_STACK: u64 = 0x3000_0000;
}

/// The report page (`contract::report`), which the root task reads and writes too.
///
/// # Safety
/// The page in `slot::REPORT` must be mapped writable at `va::REPORT` while the words are used.
unsafe fn report_page() -> SharedWords<{ PAGE_SIZE as usize / 8 }> {
    // SAFETY: mapped writable by the caller's contract; page-aligned, one page of words.
    unsafe { SharedWords::at_address(va::REPORT as usize) }
}

/// IOVA of the DMA destination page (inside every aperture QEMU offers: 39 bits and up).
const DESTINATION_IOVA: u64 = 0x1000_0000;
/// IOVA of a second, read-only mapping of the destination page.
const READ_ONLY_IOVA: u64 = 0x2000_0000;
/// An IOVA inside the interrupt window the server reserves in every domain: the x86 MSI
/// range (writes there are interrupts, never memory), the window an SMMU server keeps for
/// mapping interrupt doorbells on arm.
#[cfg(target_arch = "x86_64")]
const MSI_WINDOW_IOVA: u64 = 0xFEE0_0000;
#[cfg(target_arch = "aarch64")]
const MSI_WINDOW_IOVA: u64 = 0x0800_0000;
/// Instructions to wait for a fault record to reach the queue.
const FAULT_TIMEOUT: u64 = 20_000_000_000;

type Client = iommu_client::Connection;

fn main(arg: u64) -> u64 {
    let outcome = match arg & 0xff {
        scenario::DMA => dma_through_iommu(),
        scenario::HOSTILE => hostile_requests(),
        scenario::HOLD => hold_until_killed(),
        scenario::BENCH => bench_ipc(),
        scenario::TWO_DEVICES_ONE_IOAS => sharing::two_devices_one_ioas(),
        scenario::TWO_DEVICES_TWO_IOAS => sharing::two_devices_two_ioas(),
        scenario::REPLACE => sharing::replace_moves_device(),
        scenario::DESTROY_RACES_MAP => race::destroy_races_map(),
        scenario::HOSTILE_STREAM => stream::hostile_stream(arg >> 8),
        scenario::DMA_ROUNDS => stream::dma_rounds(),
        scenario::WINDOW_TAKEN => window::window_taken(),
        scenario::REVOKED_MEMORY_AND_DEVICE => revoke::revoked_memory_and_device(),
        scenario::LIMITS_EXHAUSTED => limits::limits_exhausted(),
        scenario::SVA_BOUND_PROCESS => sva::bound_process(),
        scenario::SVA_PROTECTED_PAGE => sva_protect::protected_page(),
        scenario::SVA_PROTECT_WAITS => sva_protect::protect_own_page(),
        scenario::DIRTY_TRACKING => dirty::dirty_tracking(arg & scenario::DIRTY_BENCH != 0),
        scenario::DIRTY_UNSUPPORTED => dirty::dirty_unsupported(),
        scenario::SERVER_RESTART => restart::hold_while_the_server_restarts(),
        scenario::RESET_FIRST_OWNER => reset::first_owner(arg & scenario::RESET_BIND_ONLY != 0),
        scenario::RESET_NEXT_OWNER => reset::next_owner(),
        contract::direct::SCENARIO => direct::direct_region(),
        scenario::DETACH_STOPS_DMA => detach::detach_stops_dma(),
        #[cfg(target_arch = "aarch64")]
        scenario::NESTED_STAGE1 => nested::nested_stage1(),
        #[cfg(target_arch = "x86_64")]
        scenario::FORGED_INTERRUPTS => forged::forged_interrupts(),
        #[cfg(target_arch = "aarch64")]
        scenario::ITS_MSI => its::msi_through_the_its(),
        #[cfg(target_arch = "aarch64")]
        scenario::FORGED_ITS_MSIS => its::forged_msis(),
        _ => Err((99, "unknown scenario")),
    };
    match outcome {
        Ok(()) => 0,
        Err((code, why)) => {
            println!("edu-driver: check {code} failed: {why}");
            code
        }
    }
}

type Outcome = Result<(), (u64, &'static str)>;

fn check(condition: bool, code: u64, why: &'static str) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err((code, why))
    }
}

fn expect_error<T: core::fmt::Debug>(result: Result<T, Error>, expected: Error, code: u64, what: &'static str) -> Outcome {
    match result {
        Err(error) if error == expected => {
            println!("edu-driver: {what}: refused with {expected:?}, as it must be");
            Ok(())
        }
        other => {
            println!("edu-driver: {what}: expected {expected:?}, got {other:?}");
            Err((code, what))
        }
    }
}

fn connect_first() -> Result<Client, (u64, &'static str)> {
    let place = WindowPlace { window_slot: slot::WINDOW, outgoing_slot: slot::OUTGOING, virt: va::WINDOW };
    iommu_client::connect(slot::SERVER, &place).map_err(|status| {
        println!("edu-driver: connect failed with status {status:#x}");
        (1, "connect to the IOMMU server")
    })
}

/// Maps BAR0's first page of the first edu device and checks it is an edu that answers.
fn open_device() -> Result<Edu, (u64, &'static str)> {
    open_device_at(slot::DEVICE, va::DEVICE)
}

/// Maps BAR0's first page of the device in `device_slot` at `virt` and checks it is an edu
/// that answers.
fn open_device_at(device_slot: u64, virt: u64) -> Result<Edu, (u64, &'static str)> {
    syscall::mmio_map(device_slot, virt, 0, 1).map_err(|_| (2, "map BAR0"))?;
    // SAFETY: BAR0's first page was just mapped at `virt` and stays mapped.
    let edu = unsafe { Edu::new(virt) };
    check(edu.identification() == edu::IDENTIFICATION, 3, "edu identification register")?;
    check(edu.is_alive(), 4, "edu liveness register")?;
    Ok(edu)
}

/// Allocates and maps `pages` pages of memory in `slot` at `va::BUFFER`.
fn buffer(slot: u64, pages: u64, flags: MemFlags) -> Result<&'static mut [u8], (u64, &'static str)> {
    syscall::mem_alloc(pages, slot, flags).map_err(|_| (5, "allocate the buffer"))?;
    syscall::mem_map(slot, va::BUFFER, 0, pages, MapFlags::WRITE).map_err(|_| (6, "map the buffer"))?;
    // SAFETY: the pages were just mapped writable at va::BUFFER, for this process only, and
    // stay mapped while the program runs.
    Ok(unsafe { core::slice::from_raw_parts_mut(va::BUFFER as *mut u8, (pages * PAGE_SIZE) as usize) })
}

/// Fills `page` with a pattern that differs, at every byte, from the pattern of another seed.
fn fill_pattern(page: &mut [u8], seed: u8) {
    for (i, byte) in page.iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
}

/// Whether `actual` equals `expected` byte by byte; prints the first difference.
fn same_bytes(what: &str, expected: &[u8], actual: &[u8]) -> bool {
    match expected.iter().zip(actual).position(|(e, a)| e != a) {
        None if expected.len() == actual.len() => true,
        None => {
            println!("edu-driver: {what}: {} bytes expected, {} compared", expected.len(), actual.len());
            false
        }
        Some(at) => {
            println!("edu-driver: {what}: byte {at} is {:#x}, expected {:#x}", actual[at], expected[at]);
            false
        }
    }
}

/// Has `edu` copy one page, from IOVA `source` into its buffer and from there to IOVA
/// `destination`.
fn copy_page(edu: &Edu, source: u64, destination: u64, code: u64) -> Outcome {
    edu.dma(source, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (code, why))?;
    edu.dma(edu::BUFFER, destination, PAGE_SIZE, true).map_err(|why| (code, why))
}

/// A DMA write the IOMMU must refuse: the device's handle, the IOVA of the page written and
/// why it is refused (nothing mapped there: a translation fault; mapped read-only: a
/// permission fault).
#[derive(Clone, Copy, PartialEq, Eq)]
struct RefusedWrite {
    device: DeviceId,
    iova: u64,
    reason: FaultReason,
}

impl RefusedWrite {
    /// A write to an IOVA that nothing maps.
    fn unmapped(device: DeviceId, iova: u64) -> RefusedWrite {
        RefusedWrite { device, iova, reason: FaultReason::Translation }
    }

    /// Whether `record` reports this write (`exact`: at its first address).
    fn reported_by(&self, record: &iommu_abi::FaultRecord, exact: bool) -> bool {
        let at = if exact { record.iova == self.iova } else { record.iova & !(PAGE_SIZE - 1) == self.iova };
        record.device == self.device.handle() && at && record.access == Access::WRITE && record.reason == self.reason
    }
}

/// Waits for the record of `expected` in `faults`: its device, its IOVA, a write, its reason. Records of the same page, or of a write awaited before (`earlier`), may come too:
/// QEMU's SMMU reports a refused transfer once per access, and the server folds such a burst
/// into one record, or two if it drained the queue in the middle. Any other record, or none in
/// time, fails check `code`.
fn await_write_fault(iommu: &mut Client, faults: FaultId, expected: RefusedWrite, earlier: &[RefusedWrite], code: u64) -> Outcome {
    let start = syscall::instruction_counter();
    loop {
        let batch = iommu.fault_read(faults).map_err(|_| (code, "fault_read"))?;
        let mut found = false;
        for record in batch.records() {
            println!(
                "edu-driver: fault record: device {} iova {:#x} access {:#x} reason {:?}",
                record.device.0, record.iova, record.access.bits(), record.reason
            );
            if expected.reported_by(record, true) {
                found = true;
            } else if !expected.reported_by(record, false) && !earlier.iter().any(|e| e.reported_by(record, false)) {
                return Err((code, "fault record names another device, address, direction or reason"));
            }
        }
        if found {
            return Ok(());
        }
        if syscall::instruction_counter() - start > FAULT_TIMEOUT {
            return Err((code, "no fault record after a DMA write the IOMMU must refuse"));
        }
        syscall::yield_now();
    }
}

/// Checks that `faults` holds no record (and lost none).
fn expect_no_fault(iommu: &mut Client, faults: FaultId, code: u64) -> Outcome {
    let batch = iommu.fault_read(faults).map_err(|_| (code, "fault_read"))?;
    if let Some(record) = batch.records().next() {
        println!("edu-driver: unexpected fault record: device {} iova {:#x} access {:#x}", record.device.0, record.iova, record.access.bits());
    }
    check(batch.is_empty() && batch.overflow == 0, code, "fault reported for DMA through mapped IOVAs")
}

fn dma_through_iommu() -> Outcome {
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (10, "device_bind"))?;
    let info = iommu.get_info(device).map_err(|_| (11, "get_info"))?;
    println!("edu-driver: bound the edu device as handle {}, on unit {} ({:?})", device.0 .0, info.unit, info.kind);
    let ioas = iommu.ioas_alloc().map_err(|_| (12, "ioas_alloc"))?;
    let faults = iommu.fault_alloc().map_err(|_| (13, "fault_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (14, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (15, "device_attach"))?;

    let memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    let (source, destination) = memory.split_at_mut(PAGE_SIZE as usize);
    for (i, byte) in source.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    let source_iova = iommu.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ).map_err(|_| (16, "map the source page"))?;
    let destination_iova = iommu
        .ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::WRITE)
        .or_else(|error| {
            // First-level (x86 paging format) entries cannot say "write but not read".
            println!("edu-driver: write-only mapping refused ({error:?}); mapping read-write");
            iommu.ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ_WRITE)
        })
        .map_err(|_| (17, "map the destination page"))?;
    println!("edu-driver: source page at IOVA {source_iova:#x}, destination page at IOVA {destination_iova:#x}");

    edu.dma(source_iova, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (18, why))?;
    #[cfg(target_arch = "x86_64")]
    {
        // The device's MSI through the server (interrupt remapping): the copy back to RAM
        // ends with the device's DMA-done interrupt instead of polling.
        take_msi(&mut iommu, device)?;
        let (status, _) = dma_awaiting_interrupt(&edu, edu::BUFFER, destination_iova)?;
        println!("edu-driver: DMA-done interrupt (status {status:#x}) taken through the MSI the server routed");
    }
    #[cfg(target_arch = "aarch64")]
    edu.dma(edu::BUFFER, destination_iova, PAGE_SIZE, true).map_err(|why| (19, why))?;
    let mismatch = source.iter().zip(destination.iter()).position(|(a, b)| a != b);
    if let Some(at) = mismatch {
        println!("edu-driver: byte {at}: wrote {:#x}, read back {:#x}", source[at], destination[at]);
    }
    check(mismatch.is_none(), 20, "RAM -> device -> RAM copy differs")?;
    println!("edu-driver: DMA RAM -> device -> RAM through the IOMMU: all {PAGE_SIZE} bytes match");
    let quiet = iommu.fault_read(faults).map_err(|_| (21, "fault_read"))?;
    check(quiet.records().count() == 0, 22, "fault reported for a mapped DMA")?;

    // The destination page mapped a second time, read-only: the device writing its buffer
    // through that mapping must fault as a permission fault and leave the page as the CPU last
    // wrote it. The IOVA is new to the device: QEMU's VT-d refuses a write that hits a read-only
    // IOTLB entry without recording a fault, and records one only when it walks the tables.
    let read_only_iova = iommu
        .ioas_map(ioas, slot::BUFFER, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(READ_ONLY_IOVA), Perm::READ)
        .map_err(|_| (27, "map the destination page read-only"))?;
    destination.fill(0xc3);
    edu.dma(edu::BUFFER, read_only_iova, PAGE_SIZE, true).map_err(|why| (28, why))?;
    let read_only_write = RefusedWrite { device, iova: read_only_iova, reason: FaultReason::Permission };
    await_write_fault(&mut iommu, faults, read_only_write, &[], 29)?;
    check(destination.iter().all(|&b| b == 0xc3), 30, "DMA write through a read-only mapping changed memory")?;
    check(iommu.ioas_unmap(ioas, read_only_iova, PAGE_SIZE) == Ok(PAGE_SIZE), 31, "unmap the read-only mapping")?;
    println!("edu-driver: DMA write through a read-only mapping faulted as a permission fault; memory untouched");

    let unmapped = iommu.ioas_unmap(ioas, destination_iova, PAGE_SIZE).map_err(|_| (23, "ioas_unmap"))?;
    check(unmapped == PAGE_SIZE, 24, "unmap length")?;
    destination.fill(0x5a);
    edu.dma(edu::BUFFER, destination_iova, PAGE_SIZE, true).map_err(|why| (25, why))?;
    await_write_fault(&mut iommu, faults, RefusedWrite::unmapped(device, destination_iova), &[read_only_write], 26)?;
    check(destination.iter().all(|&b| b == 0x5a), 32, "DMA after unmap changed memory")?;
    println!("edu-driver: DMA after unmap faulted with the right device, address and direction; memory untouched");

    // The same copy with the destination mapped from registered memory: no capability travels
    // with the map, the server maps the pages it pinned at registration.
    let registered = iommu.memory_register(slot::BUFFER).map_err(|_| (33, "memory_register"))?;
    let again = iommu
        .ioas_map_registered(ioas, registered, PAGE_SIZE, PAGE_SIZE, IovaChoice::Fixed(DESTINATION_IOVA), Perm::READ_WRITE)
        .map_err(|_| (34, "map registered memory"))?;
    fill_pattern(source, 0x3c);
    edu.dma(source_iova, edu::BUFFER, PAGE_SIZE, false).map_err(|why| (35, why))?;
    edu.dma(edu::BUFFER, again, PAGE_SIZE, true).map_err(|why| (36, why))?;
    check(same_bytes("registered destination", source, destination), 37, "RAM -> device -> registered RAM copy differs")?;
    check(iommu.ioas_unmap(ioas, again, PAGE_SIZE) == Ok(PAGE_SIZE), 38, "unmap registered memory")?;
    iommu.destroy(registered.handle()).map_err(|_| (39, "destroy the registration"))?;
    println!("edu-driver: DMA into registered memory: all {PAGE_SIZE} bytes match");
    Ok(())
}

/// Asks the server for the device's MSI (`slot::MSI`) and binds it to a new notification
/// (`slot::IRQ_NOTIFICATION`, bit 0). The server checks that the capability grants only
/// CONTROL: the driver binds and acknowledges the line, nothing more.
fn take_msi(iommu: &mut Client, device: DeviceId) -> Outcome {
    iommu.msi_alloc(device, 1, slot::MSI).map_err(|error| {
        println!("edu-driver: msi_alloc failed: {error:?}");
        (40, "msi_alloc")
    })?;
    let (kind, rights, _) = syscall::cap_info(slot::MSI).map_err(|_| (41, "no IRQ capability in the slot msi_alloc named"))?;
    check(kernel_abi::ObjectType::from_u64(kind) == Some(kernel_abi::ObjectType::Irq) && Rights::from_bits(rights) == Some(Rights::CONTROL), 41, "msi_alloc left no IRQ capability with CONTROL alone")?;
    // A second block for the same device is refused: its MSI capability holds one address.
    expect_error(iommu.msi_alloc(device, 1, slot::MSI + 10), Error::Busy, 42, "a second msi_alloc for the device")?;
    syscall::notification_create(slot::IRQ_NOTIFICATION).map_err(|_| (43, "notification_create"))?;
    syscall::irq_bind(slot::MSI, slot::IRQ_NOTIFICATION, 0).map_err(|_| (44, "irq_bind the MSI"))?;
    Ok(())
}

/// Copies one page from the device's buffer to `destination` with the completion interrupt
/// on, waits for the interrupt on `slot::IRQ_NOTIFICATION` and acknowledges it; returns the
/// interrupt status and the instruction counter right after the wait returned.
fn dma_awaiting_interrupt(edu: &Edu, source: u64, destination: u64) -> Result<(u32, u64), (u64, &'static str)> {
    edu.start_dma_interrupting(source, destination, PAGE_SIZE, true);
    let bits = syscall::notify_wait(slot::IRQ_NOTIFICATION).map_err(|_| (45, "wait for the MSI"))?;
    let woken_at = syscall::instruction_counter();
    let status = edu.interrupt_status();
    check(bits == 1 && status & edu::DMA_DONE != 0, 46, "woken without the DMA-done interrupt")?;
    check(!edu.dma_running(), 47, "DMA-done interrupt before the DMA finished")?;
    edu.acknowledge_interrupt(status);
    syscall::irq_ack(slot::MSI).map_err(|_| (48, "irq_ack"))?;
    Ok((status, woken_at))
}

fn hostile_requests() -> Outcome {
    let mut first = connect_first()?;
    let _edu = open_device()?;
    let second_place = WindowPlace {
        window_slot: slot::SECOND_WINDOW,
        outgoing_slot: slot::SECOND_OUTGOING,
        virt: va::SECOND_WINDOW,
    };
    // Before connecting, the second client's requests are refused at the transport.
    let early = userlib::syscall::call(slot::SECOND_SERVER, kernel_abi::NO_CAP, [iommu_abi::kernel_ipc::REQUEST, 0, 0, 0]);
    check(early.map(|r| r.words[0]) == Ok(iommu_abi::kernel_ipc::STATUS_NOT_CONNECTED), 40, "request before connect accepted")?;
    let mut second = iommu_client::connect(slot::SECOND_SERVER, &second_place).map_err(|_| (41, "connect second client"))?;

    let device = first.device_bind(slot::DEVICE).map_err(|_| (42, "device_bind"))?;
    let ioas = first.ioas_alloc().map_err(|_| (43, "ioas_alloc"))?;
    let hwpt = first.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (44, "hwpt_alloc"))?;
    first.device_attach(device, hwpt, None).map_err(|_| (45, "device_attach"))?;
    let _memory = buffer(slot::BUFFER, 2, MemFlags::empty())?;
    // A fault subscription must name a notification: memory is refused, and so is nothing.
    let refused = first.transport_mut().subscribe_faults(slot::BUFFER);
    check(refused == kernel_ipc::STATUS_BAD_NOTIFICATION, 200, "memory accepted as a fault notification")?;
    let refused = first.transport_mut().raw([kernel_ipc::SUBSCRIBE_FAULTS, 0, 0, 0]);
    check(refused == kernel_ipc::STATUS_BAD_NOTIFICATION, 201, "fault subscription without a capability accepted")?;

    // Another client's objects: handle numbers are per client, the second client has none.
    expect_error(second.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::NoSuchObject, 46, "map into another client's IOAS")?;
    expect_error(second.destroy(hwpt.handle()), Error::NoSuchObject, 47, "destroy another client's HWPT")?;
    expect_error(second.device_bind(slot::DEVICE), Error::DeviceAlreadyBound, 48, "bind a device another client bound")?;
    // Memory the driver may not give: not memory at all, and read-only memory for writing.
    expect_error(first.ioas_map(ioas, slot::DEVICE, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::BadCapability, 49, "map an MMIO capability as memory")?;
    syscall::cap_derive(slot::BUFFER, slot::READ_ONLY_BUFFER, Rights::READ.union(Rights::GRANT).union(Rights::DERIVE), 0).map_err(|_| (50, "derive read-only"))?;
    expect_error(first.ioas_map(ioas, slot::READ_ONLY_BUFFER, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE), Error::PermissionDenied, 51, "map read-only memory writable")?;
    // The same through registration: what is registered is what the capability allowed.
    expect_error(first.memory_register(slot::DEVICE), Error::BadCapability, 210, "register an MMIO capability as memory")?;
    let read_only = first.memory_register(slot::READ_ONLY_BUFFER).map_err(|_| (211, "register read-only memory"))?;
    expect_error(first.ioas_map_registered(ioas, read_only, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE), Error::PermissionDenied, 212, "map registered read-only memory writable")?;
    expect_error(first.ioas_map_registered(ioas, read_only, 2 * PAGE_SIZE, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::OutOfObjectRange, 213, "map beyond registered memory")?;
    expect_error(second.ioas_map_registered(ioas, read_only, 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::NoSuchObject, 214, "map another client's registered memory")?;
    expect_error(first.ioas_map_registered(ioas, iommu_abi::MemoryId(ioas.handle()), 0, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::WrongType, 215, "map from an IOAS as if it were memory")?;
    first.destroy(read_only.handle()).map_err(|_| (216, "destroy the registration"))?;
    // Bad ranges.
    expect_error(first.ioas_map(ioas, slot::BUFFER, 4 * PAGE_SIZE, PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::OutOfObjectRange, 52, "map beyond the memory object")?;
    expect_error(first.ioas_map(ioas, slot::BUFFER, 0, 100, IovaChoice::Auto, Perm::READ), Error::Unaligned, 53, "map an unaligned length")?;
    expect_error(first.ioas_map(ioas, slot::BUFFER, 0, 0, IovaChoice::Auto, Perm::READ), Error::ZeroLength, 54, "map zero bytes")?;
    expect_error(first.ioas_map(ioas, slot::BUFFER, !(PAGE_SIZE - 1), 2 * PAGE_SIZE, IovaChoice::Auto, Perm::READ), Error::Overflow, 55, "map a wrapping range")?;
    expect_error(first.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(MSI_WINDOW_IOVA), Perm::READ), Error::ReservedRegion, 56, "map over the MSI window")?;
    expect_error(first.ioas_map(ioas, slot::BUFFER, 0, PAGE_SIZE, IovaChoice::Fixed(1 << 60), Perm::READ), Error::OutsideAperture, 57, "map outside the aperture")?;
    expect_error(first.ioas_unmap(ioas, DESTINATION_IOVA, PAGE_SIZE), Error::NotMapped, 58, "unmap what is not mapped")?;
    // Wrong object types and malformed messages.
    expect_error(first.device_attach(device, iommu_abi::HwptId(ioas.handle()), None), Error::WrongType, 59, "attach to an IOAS as if it were an HWPT")?;
    let mut unknown: Message = [0; 8];
    unknown[0] = 999;
    let (reply, _) = iommu_client::Transport::call(first.transport_mut(), &unknown, None);
    check(reply[0] == u64::from(Error::UnknownOpcode.code()), 60, "unknown opcode accepted")?;
    let mut reserved: Message = [0; 8];
    reserved[0] = Opcode::IoasAlloc as u64;
    reserved[5] = 1;
    let (reply, _) = iommu_client::Transport::call(first.transport_mut(), &reserved, None);
    check(reply[0] == u64::from(Error::ReservedBitsSet.code()), 61, "reserved argument word accepted")?;
    check(first.transport_mut().raw([77, 0, 0, 0]) == iommu_abi::kernel_ipc::STATUS_BAD_TRANSPORT, 62, "unknown transport word accepted")?;

    // The server carries on: valid requests of both clients still work.
    let iova = first.ioas_map(ioas, slot::BUFFER, 0, 2 * PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).map_err(|_| (63, "valid map after hostile requests"))?;
    check(first.ioas_unmap(ioas, iova, 2 * PAGE_SIZE) == Ok(2 * PAGE_SIZE), 64, "valid unmap after hostile requests")?;
    let own = second.ioas_alloc().map_err(|_| (65, "second client's own IOAS"))?;
    second.destroy(own.handle()).map_err(|_| (66, "second client destroys its own IOAS"))?;
    check(second.transport_mut().disconnect() == 0, 67, "disconnect")?;
    println!("edu-driver: every hostile request was refused with its own error; the server still serves");
    Ok(())
}

fn hold_until_killed() -> Outcome {
    const PAGES: u64 = 16;
    let mut iommu = connect_first()?;
    let _edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (70, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (71, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (72, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (73, "device_attach"))?;
    let _memory = buffer(slot::BUFFER, PAGES, MemFlags::empty())?;
    let iova = iommu.ioas_map(ioas, slot::BUFFER, 0, PAGES * PAGE_SIZE, IovaChoice::Auto, Perm::READ_WRITE).map_err(|_| (74, "map"))?;
    println!("edu-driver: {PAGES} pages mapped at IOVA {iova:#x}; waiting to be killed");
    loop {
        syscall::yield_now();
    }
}

fn bench_ipc() -> Outcome {
    const TWO_MIB: u64 = 2 << 20;
    let mut iommu = connect_first()?;
    let edu = open_device()?;
    let device = iommu.device_bind(slot::DEVICE).map_err(|_| (80, "device_bind"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (81, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions::default()).map_err(|_| (82, "hwpt_alloc"))?;
    iommu.device_attach(device, hwpt, None).map_err(|_| (83, "device_attach"))?;
    // Contiguous and (being size-aligned) 2 MiB aligned: the 2 MiB map can be one large page.
    let _memory = buffer(slot::LARGE_BUFFER, TWO_MIB / PAGE_SIZE, MemFlags::CONTIGUOUS)?;
    let base = 0x4000_0000u64;

    // Steady-state figures are the mean of several cycles (as the kernel's benchmarks do), so
    // that reading the instruction counter, itself a system call, weighs little.
    const ROUNDS: u64 = 16;
    let measure = |label: &str, length: u64, pieces: u64, rounds: u64, iommu: &mut Client| -> Outcome {
        let piece = length / pieces;
        let start = syscall::instruction_counter();
        for _ in 0..rounds {
            for i in 0..pieces {
                iommu
                    .ioas_map(ioas, slot::LARGE_BUFFER, i * piece, piece, IovaChoice::Fixed(base + i * piece), Perm::READ_WRITE)
                    .map_err(|_| (84, "bench map"))?;
            }
            for i in 0..pieces {
                check(iommu.ioas_unmap(ioas, base + i * piece, piece) == Ok(piece), 85, "bench unmap")?;
            }
        }
        let spent = (syscall::instruction_counter() - start) / rounds;
        if rounds > 1 {
            println!("bench: ipc map+unmap {label} {spent} guest instructions (mean of {rounds})");
        } else {
            println!("bench: ipc map+unmap {label} {spent} guest instructions");
        }
        Ok(())
    };
    // The same cycles from registered memory: no capability transfer, no kernel call.
    let measure_registered = |label: &str, registered: MemoryId, length: u64, rounds: u64, iommu: &mut Client| -> Outcome {
        let start = syscall::instruction_counter();
        for _ in 0..rounds {
            iommu
                .ioas_map_registered(ioas, registered, 0, length, IovaChoice::Fixed(base), Perm::READ_WRITE)
                .map_err(|_| (88, "bench map registered"))?;
            check(iommu.ioas_unmap(ioas, base, length) == Ok(length), 89, "bench unmap registered")?;
        }
        let spent = (syscall::instruction_counter() - start) / rounds;
        println!("bench: ipc map+unmap {label} registered {spent} guest instructions (mean of {rounds})");
        Ok(())
    };
    // The first cycle also pays for the page tables; the steady state comes after it.
    measure("4KiB (cold)", PAGE_SIZE, 1, 1, &mut iommu)?;
    measure("4KiB", PAGE_SIZE, 1, ROUNDS, &mut iommu)?;
    // The first 2 MiB leaf replaces the tables the 4 KiB cycles left linked (one invalidation).
    measure("2MiB (after 4KiB)", TWO_MIB, 1, 1, &mut iommu)?;
    measure("2MiB", TWO_MIB, 1, ROUNDS, &mut iommu)?;
    // 256 pages as one range: one map and one unmap request of 1 MiB (256 4 KiB entries).
    measure("256x4KiB", 256 * PAGE_SIZE, 1, ROUNDS, &mut iommu)?;
    // Registered only now: its pins would spare the capability maps above their pinning.
    let registered = iommu.memory_register(slot::LARGE_BUFFER).map_err(|_| (87, "memory_register"))?;
    measure_registered("4KiB", registered, PAGE_SIZE, ROUNDS, &mut iommu)?;
    measure_registered("2MiB", registered, TWO_MIB, ROUNDS, &mut iommu)?;
    measure_registered("256x4KiB", registered, 256 * PAGE_SIZE, ROUNDS, &mut iommu)?;
    iommu.destroy(registered.handle()).map_err(|_| (90, "destroy the registration"))?;
    let start = syscall::instruction_counter();
    for _ in 0..ROUNDS {
        let _ = iommu.get_info(device).map_err(|_| (86, "get_info"))?;
    }
    let spent = (syscall::instruction_counter() - start) / ROUNDS;
    println!("bench: ipc get_info round trip {spent} guest instructions (mean of {ROUNDS})");
    bench_fault_delivery(&mut iommu, device, &edu)?;
    bench_msi(&mut iommu, device, &edu)?;
    Ok(())
}

/// MSI latency: with the device's MSI from the server bound (x86: an IRTE; arm: an ITS
/// event; arm with GICv2m: a line from the starter), the driver raises the device's interrupt whenever the root task asks on the report
/// page, waits for it and writes the instruction counter right after the wait returned; the
/// root task compares it with the moment the line fired in the kernel (it may change how the
/// MSI is delivered in between).
fn bench_msi(iommu: &mut Client, device: DeviceId, edu: &Edu) -> Outcome {
    use contract::report;
    // arm with GICv2m: the server hands out no MSIs; the starter gave a GICv2m line instead
    // and aims the device's MSI at it (`contract::slot::UNISOLATED_MSI`).
    let msi = if syscall::cap_info(slot::UNISOLATED_MSI).is_ok() {
        syscall::notification_create(slot::IRQ_NOTIFICATION).map_err(|_| (43, "notification_create"))?;
        syscall::irq_bind(slot::UNISOLATED_MSI, slot::IRQ_NOTIFICATION, 0).map_err(|_| (44, "irq_bind the GICv2m line"))?;
        slot::UNISOLATED_MSI
    } else {
        take_msi(iommu, device)?;
        slot::MSI
    };
    // SAFETY: `bench_fault_delivery` mapped the report page writable at va::REPORT, for good.
    let report_page = unsafe { report_page() };
    report_page.write(report::PHASE, report::MSI_READY);
    loop {
        let start = syscall::instruction_counter();
        let command = loop {
            let command = report_page.read(report::MSI_COMMAND);
            if command != 0 {
                break command;
            }
            check(syscall::instruction_counter() - start < FAULT_TIMEOUT, 110, "no MSI benchmark command")?;
            syscall::yield_now();
        };
        if command != report::MEASURE_MSI {
            return Ok(());
        }
        edu.raise_interrupt(1);
        let bits = syscall::notify_wait(slot::IRQ_NOTIFICATION).map_err(|_| (111, "wait for the MSI"))?;
        let woken_at = syscall::instruction_counter();
        check(bits == 1 && edu.interrupt_status() == 1, 112, "woken without the device's interrupt")?;
        edu.acknowledge_interrupt(1);
        syscall::irq_ack(msi).map_err(|_| (113, "irq_ack"))?;
        report_page.write(report::MSI_WOKEN_AT, woken_at);
        report_page.write(report::MSI_COMMAND, 0);
    }
}

/// One fault delivered the way a driver waits for it: the device is moved to an empty IOAS
/// whose HWPT has a fault queue, the driver subscribes a notification to its faults, starts a
/// DMA write and waits on the notification, then reads the record. The instruction counter
/// when it holds the record goes to the report page; the root task compares it with the
/// moment the IOMMU's interrupt reached the kernel.
fn bench_fault_delivery(iommu: &mut Client, device: DeviceId, edu: &Edu) -> Outcome {
    syscall::notification_create(slot::FAULT_NOTIFICATION).map_err(|_| (87, "notification_create"))?;
    check(iommu.transport_mut().subscribe_faults(slot::FAULT_NOTIFICATION) == 0, 88, "subscribe_faults")?;
    let faults = iommu.fault_alloc().map_err(|_| (89, "fault_alloc"))?;
    let ioas = iommu.ioas_alloc().map_err(|_| (90, "ioas_alloc"))?;
    let hwpt = iommu.hwpt_alloc(device, ioas, HwptOptions { fault: Some(faults), ..Default::default() }).map_err(|_| (91, "hwpt_alloc"))?;
    iommu.device_replace(device, hwpt, None).map_err(|_| (92, "device_replace"))?;
    syscall::mem_map(slot::REPORT, va::REPORT, 0, 1, MapFlags::WRITE).map_err(|_| (93, "map the report page"))?;
    // Nothing is mapped in the new IOAS: the write to RAM is refused.
    edu.start_dma(edu::BUFFER, DESTINATION_IOVA, 8, true);
    let bits = syscall::notify_wait(slot::FAULT_NOTIFICATION).map_err(|_| (94, "notify_wait"))?;
    let batch = iommu.fault_read(faults).map_err(|_| (95, "fault_read"))?;
    let held_at = syscall::instruction_counter();
    check(bits & kernel_ipc::FAULT_SIGNAL != 0, 96, "woken without the fault signal")?;
    let refused = RefusedWrite::unmapped(device, DESTINATION_IOVA);
    check(batch.records().next().is_some_and(|record| refused.reported_by(record, true)), 97, "the first record is not the refused write")?;
    // SAFETY: the report page is mapped writable at va::REPORT (above) and stays mapped.
    unsafe { report_page() }.write(contract::report::FAULT_HELD_AT, held_at);
    edu.wait_dma().map_err(|why| (98, why))
}
