//! The root task. The kernel starts it with every boot capability and a directory naming them
//! (`kernel_abi::boot_directory`); it carries out the static description in `system.rs`:
//!
//! 1. creates every process (not yet running) and the endpoints, and grants each process its
//!    capabilities, except devices;
//! 2. starts the IOMMU server and waits until its status page says it is ready (on arm it has
//!    then also assigned the PCI BARs); from then on it watches the server, and if the server
//!    ends it starts a new one from the description (`start::RESTARTED`), which takes the units
//!    over and releases what the kernel quarantined for the dead one; clients get
//!    `ServerRestarted` and reconnect;
//! 3. finds every driver's device in the PCI hierarchy (by location or by match, through
//!    bridges) and refuses the description, before any driver starts, if a device is missing
//!    or two drivers would get functions of one isolation group; then for each driver in
//!    turn: carves its BAR out of the PCI window, grants it, starts the driver, waits for it
//!    to end and checks that its fault came with the requester ID its device's DMA carries
//!    (behind a PCIe-to-PCI bridge, the bridge's alias). One at a time,
//!    because each edu driver ends with a DMA the IOMMU must refuse, and QEMU's VT-d unit has
//!    a single fault-recording register: a second device's fault while the first is still
//!    recorded is dropped (the unit sets PFO; the server reports the loss);
//! 4. checks, on the server's status page, that it saw every driver's DMA fault, tore down
//!    every client and holds no client memory. Its exit status says whether all of that held
//!    (`description::REFUSED` for a description it refused).
//!
//! Its start argument picks the description (`kernel_abi::boot_directory::description`).

#![no_std]
#![no_main]

extern crate alloc;

mod system;

/// The IOMMU server's slots and status words, and the edu driver's contract.
use edu_contract as driver;
use iommu_server_contract::{slots as server_slot, start, status};

use hwio::wait::poll_until_pausing;
use hwio::{Registers, SharedWords, VolatileRegion};
use alloc::vec::Vec;
use class_heap::ClassHeap;
use kernel_abi::boot_directory::{description, DIRECTORY_SLOT, ENTRY_WORDS, MAX_ENTRIES, NAME_BYTES};
use kernel_abi::{ObjectType, Rights};
use system::{Grant, PciFunction, Process, Role, Source};
use userlib::{println, syscall};

userlib::entry!(main);

/// The root task's own slots (boot capabilities sit from `FIRST_CAP_SLOT`, below these).
mod slot {
    /// Process capabilities, one per process of the description, in its order.
    pub const PROCESSES: u64 = 160;
    /// Endpoints the root task creates, in order of first mention.
    pub const ENDPOINTS: u64 = 180;
    /// The IOMMU server's status page.
    pub const STATUS_PAGE: u64 = 190;
    /// The page of the clients' limits the IOMMU server reads.
    pub const CLIENT_LIMITS: u64 = 191;
    /// Scratch: a badged endpoint or a carved BAR on its way to a process.
    pub const SCRATCH: u64 = 200;
    /// Signalled when the running driver ends (`ended::DRIVER`) or the server does
    /// (`ended::SERVER`).
    pub const ENDED: u64 = 201;
    /// The heap's memory.
    pub const HEAP: u64 = 202;
}

/// Bits of `slot::ENDED`.
mod ended {
    pub const DRIVER: u64 = 0;
    pub const SERVER: u64 = 1;
}

/// The root task's address space.
mod va {
    pub const DIRECTORY: u64 = 0x1000_0000;
    pub const STATUS: u64 = 0x1100_0000;
    pub const HEAP: u64 = 0x1200_0000;
    pub const CLIENT_LIMITS: u64 = 0x1300_0000;
    /// PCI configuration space, bus `b` at `CONFIG + (b << 20)` (256 MiB for all buses).
    pub const CONFIG: u64 = 0x2000_0000;
}

/// Pages of heap: the enumerated hierarchy and the list of grants to devices.
const HEAP_PAGES: u64 = 16;

#[global_allocator]
static HEAP: ClassHeap = ClassHeap::empty();

const PAGE: u64 = 4096;
/// Instructions to wait for the server to come up or the drivers to end.
const WAIT_BUDGET: u64 = 40_000_000_000;

/// One entry of the boot directory.
#[derive(Clone, Copy)]
struct BootCap {
    slot: u64,
    kind: u64,
    value: u64,
    size: u64,
    name: [u8; NAME_BYTES],
}

impl BootCap {
    fn name(&self) -> &str {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        core::str::from_utf8(&self.name[..len]).unwrap_or("")
    }
}

struct Directory {
    entries: [Option<BootCap>; MAX_ENTRIES],
}

impl Directory {
    fn read() -> Result<Directory, &'static str> {
        syscall::mem_map(DIRECTORY_SLOT, va::DIRECTORY, 0, 1, kernel_abi::MapFlags::empty()).map_err(|_| "cannot map the boot directory")?;
        // SAFETY: the directory page was just mapped readable at va::DIRECTORY and stays mapped.
        let words = unsafe { core::slice::from_raw_parts(va::DIRECTORY as *const u64, 512) };
        let count = (words[0] as usize).min(MAX_ENTRIES);
        let mut entries = [None; MAX_ENTRIES];
        for (index, entry) in entries.iter_mut().enumerate().take(count) {
            let w = &words[ENTRY_WORDS * (index + 1)..ENTRY_WORDS * (index + 2)];
            let mut name = [0u8; NAME_BYTES];
            name[..8].copy_from_slice(&w[4].to_le_bytes());
            name[8..].copy_from_slice(&w[5].to_le_bytes());
            *entry = Some(BootCap { slot: w[0], kind: w[1], value: w[2], size: w[3], name });
        }
        Ok(Directory { entries })
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BootCap> + 'a {
        self.entries.iter().flatten().filter(move |cap| cap.name() == name)
    }

    fn find<'a>(&'a self, name: &'a str, line: Option<u64>) -> Option<&'a BootCap> {
        self.all(name).find(|cap| line.is_none_or(|line| cap.kind == ObjectType::Irq as u64 && cap.value == line))
    }
}

/// Endpoint names in order of first mention, for their slots.
fn endpoint_slot(system: &[Process], name: &str) -> u64 {
    let mut seen: [&str; 8] = [""; 8];
    let mut count = 0;
    for process in system {
        for grant in process.grants {
            if let Source::Endpoint { name: endpoint, .. } = grant.source {
                if !seen[..count].contains(&endpoint) && count < seen.len() {
                    seen[count] = endpoint;
                    count += 1;
                }
            }
        }
    }
    slot::ENDPOINTS + seen[..count].iter().position(|&n| n == name).unwrap_or(0) as u64
}

fn process_slot(system: &[Process], name: &str) -> Option<u64> {
    system.iter().position(|p| p.name == name).map(|i| slot::PROCESSES + i as u64)
}

/// Why the root task stopped.
enum Stop {
    Failed(&'static str),
    /// The description gives functions of one isolation group to two drivers (the reason is
    /// printed).
    Refused,
    /// The machine lacks a device the description names (printed).
    MissingDevice,
}

impl From<&'static str> for Stop {
    fn from(why: &'static str) -> Stop {
        Stop::Failed(why)
    }
}

fn main(arg: u64) -> u64 {
    let Some(system) = system::description(arg) else {
        println!("root: no system description number {arg}");
        return 1;
    };
    match init_heap().map_err(Stop::Failed).and_then(|()| run(system)) {
        Ok(()) => 0,
        Err(Stop::Failed(why)) => {
            println!("root: {why}");
            1
        }
        Err(Stop::Refused) => {
            println!("root: system description refused");
            description::REFUSED
        }
        Err(Stop::MissingDevice) => {
            println!("root: system description not for this machine");
            description::MISSING_DEVICE
        }
    }
}

fn init_heap() -> Result<(), &'static str> {
    syscall::mem_alloc(HEAP_PAGES, slot::HEAP, kernel_abi::MemFlags::empty()).map_err(|_| "no memory for the heap")?;
    syscall::mem_map(slot::HEAP, va::HEAP, 0, HEAP_PAGES, kernel_abi::MapFlags::WRITE).map_err(|_| "cannot map the heap")?;
    // SAFETY: the range was just mapped writable, belongs to nothing else and stays mapped;
    // this runs once, before any allocation.
    unsafe { HEAP.init(va::HEAP as *mut u8, (HEAP_PAGES * PAGE) as usize) };
    Ok(())
}

fn run(system: &'static [Process]) -> Result<(), Stop> {
    let directory = Directory::read()?;
    // 1. Processes, endpoints, every grant but devices.
    for (index, process) in system.iter().enumerate() {
        syscall::process_create(process.image, process.arg, slot::PROCESSES + index as u64, process.quota_pages)
            .map_err(|_| "cannot create a process of the description")?;
    }
    for process in system {
        for grant in process.grants {
            if let Source::Endpoint { name, .. } = grant.source {
                let slot = endpoint_slot(system, name);
                if syscall::cap_info(slot).is_err() {
                    syscall::endpoint_create(slot).map_err(|_| "cannot create an endpoint")?;
                }
            }
        }
    }
    for (index, process) in system.iter().enumerate() {
        let target = slot::PROCESSES + index as u64;
        for grant in process.grants {
            if !matches!(grant.source, Source::PciBar { .. }) {
                give(system, &directory, target, grant).map_err(|why| {
                    println!("root: {}: slot {}: {why}", process.name, grant.slot);
                    "a grant of the description failed"
                })?;
            }
        }
    }
    // 2. The IOMMU server, until it is ready; watched from then on.
    let server = system.iter().position(|p| p.role == Role::IommuServer).expect("checked at build time");
    syscall::notification_create(slot::ENDED).map_err(|_| "cannot create a notification")?;
    start_server(server)?;
    println!(
        "root: IOMMU server ready: {} unit(s), {} PCI functions",
        status_word(status::UNITS),
        status_word(status::PCI_FUNCTIONS)
    );
    // 3. Every driver's device found and the groups checked; then each driver with its
    // device, one after the other.
    let mut config = ConfigSpace::map(&directory)?;
    let last_bus = config.last_bus;
    let topology = pci::enumerate_read_only(&mut config, 0, 0, last_bus);
    let devices = find_devices(system, &topology)?;
    if status_word(status::IOMMU_DESCRIBED) == 0 {
        println!("root: the firmware describes no IOMMU: drivers not started (their DMA needs one)");
        return Ok(());
    }
    let window = directory.find("pci-mmio", None).copied().ok_or("no PCI window among the boot capabilities")?;
    // `served`: drivers the running server saw end (a restarted one counts from the driver it
    // was started under; its status page starts cleared).
    let (mut drivers, mut restarts, mut served) = (0u64, 0u64, 0u64);
    for (index, process) in system.iter().enumerate().filter(|(_, p)| p.role == Role::Driver) {
        let target = slot::PROCESSES + index as u64;
        let mut fault_rid = None;
        for device in devices.iter().filter(|d| d.process == index) {
            let address = topology.functions[device.function].address;
            let base = pci::bars::read_base(&mut config, address, device.bar).ok_or("a driver's PCI device has no address for its BAR")?;
            if base < window.value || base + device.size > window.value + window.size {
                return Err("a driver's BAR lies outside the PCI window".into());
            }
            syscall::mmio_carve(window.slot, (base - window.value) / PAGE, device.size.div_ceil(PAGE), slot::SCRATCH, device.rights)
                .map_err(|_| "cannot carve a BAR out of the PCI window")?;
            syscall::cap_grant(target, slot::SCRATCH, device.slot, device.rights).map_err(|_| "cannot grant a device")?;
            let _ = syscall::cap_delete(slot::SCRATCH);
            let rid = topology.requester_id(device.function);
            fault_rid.get_or_insert(rid);
            println!("root: {} gets PCI device {address} (requester ID {rid:#06x}), BAR{} at {base:#x}", process.name, device.bar);
        }
        let (faults_before, restarts_before) = (status_word(status::FAULTS), restarts);
        syscall::process_watch(target, slot::ENDED, ended::DRIVER).map_err(|_| "cannot watch a driver")?;
        syscall::process_start(target).map_err(|_| "cannot start a driver")?;
        // A driver that never ends stops the system here; whoever runs the root task bounds it.
        loop {
            let bits = syscall::notify_wait(slot::ENDED).map_err(|_| "waiting for a driver failed")?;
            if bits & 1 << ended::SERVER != 0 {
                restart_server(system, &directory, server)?;
                restarts += 1;
                served = 0;
            }
            if bits & 1 << ended::DRIVER != 0 {
                break;
            }
        }
        drivers += 1;
        served += 1;
        // Its last DMA is refused: the IOMMU reports it with the ID the device's DMA carries.
        // A server that ended meanwhile took its counts along (the new one starts from a
        // cleared status page): then there is nothing to compare.
        if let Some(rid) = fault_rid.filter(|_| restarts == restarts_before) {
            let last = status_word(status::LAST_FAULT_RID);
            if status_word(status::FAULTS) == faults_before || last != u64::from(rid) {
                println!("root: {}: the last fault came from requester ID {last:#06x}; its device's DMA carries {rid:#06x}", process.name);
                return Err("a driver's fault did not carry its device's requester ID".into());
            }
        }
    }
    // 4. What the server saw.
    wait_for(|| status_word(status::CLIENTS_REAPED) == served, "the server to tear the drivers' clients down")?;
    let (faults, pinned) = (status_word(status::FAULTS), status_word(status::PINNED_PAGES));
    println!("root: {drivers} drivers ended; the server saw {faults} DMA faults, tore down {served} clients, holds {pinned} client pages");
    if restarts == 0 && faults < drivers {
        return Err("a driver did not get as far as its refused DMA".into());
    }
    if pinned != 0 || status_word(status::OPEN_CLIENTS) != 0 {
        return Err("the server still holds client state".into());
    }
    Ok(())
}

/// Starts the IOMMU server (description entry `index`, created and given its capabilities),
/// watches it, and waits until it is ready.
fn start_server(index: usize) -> Result<(), &'static str> {
    let target = slot::PROCESSES + index as u64;
    syscall::process_start(target).map_err(|_| "cannot start the IOMMU server")?;
    syscall::process_watch(target, slot::ENDED, ended::SERVER).map_err(|_| "cannot watch the IOMMU server")?;
    wait_for(|| status_word(status::STATE) != 0, "the IOMMU server to come up")?;
    if status_word(status::STATE) != status::STATE_READY {
        return Err("the IOMMU server's bring-up failed");
    }
    Ok(())
}

/// The server (description entry `index`) ended: a new instance from the description, with
/// the same capabilities (the same endpoint, so clients reach it; the same status page,
/// cleared) and `start::RESTARTED`. It takes the units over with every device blocked and
/// releases what the kernel quarantined for the dead one.
fn restart_server(system: &[Process], directory: &Directory, index: usize) -> Result<(), &'static str> {
    let description = &system[index];
    let target = slot::PROCESSES + index as u64;
    println!("root: the IOMMU server ended; starting a new one");
    let _ = syscall::cap_delete(target);
    syscall::process_create(description.image, description.arg | start::RESTARTED, target, description.quota_pages)
        .map_err(|_| "cannot create a new IOMMU server")?;
    for grant in description.grants {
        give(system, directory, target, grant)?;
    }
    // SAFETY: the status page is mapped writable at va::STATUS and stays mapped; no server
    // writes it now (the old one ended, the new one has not started).
    let page: SharedWords<{ status::WORDS }> = unsafe { SharedWords::at_address(va::STATUS as usize) };
    (0..status::WORDS).for_each(|word| page.write(word, 0));
    start_server(index)?;
    println!("root: new IOMMU server ready; it released {} quarantined pages", status_word(status::QUARANTINE_RELEASED));
    Ok(())
}

/// A device grant of the description, found in the hierarchy.
struct DeviceGrant {
    /// Index of the process in the description.
    process: usize,
    /// Index of the function in the topology.
    function: usize,
    slot: u64,
    bar: u8,
    size: u64,
    rights: Rights,
}

/// Finds every device the description grants; stops (printing why) when one is not there,
/// and refuses the description when two processes would get functions of one isolation group: the IOMMU cannot
/// tell their DMA apart, or their DMA can reach each other without passing it.
fn find_devices(system: &[Process], topology: &pci::Topology) -> Result<Vec<DeviceGrant>, Stop> {
    let mut devices = Vec::new();
    for (process_index, process) in system.iter().enumerate() {
        for grant in process.grants {
            let Source::PciBar { function, bar, size } = grant.source else { continue };
            let found = match function {
                PciFunction::At { segment: 0, bridges, device, function } => topology.find_by_path(bridges, device, function),
                PciFunction::At { .. } => None,
                PciFunction::Matching { vendor, device, instance } => topology.find_by_id(vendor, device, usize::from(instance)),
            };
            let Some(found) = found else {
                match function {
                    PciFunction::At { segment, bridges, device, function } => {
                        println!("root: {}: no PCI function at segment {segment}, bridges {bridges:02x?}, {device:02x}.{function}", process.name)
                    }
                    PciFunction::Matching { vendor, device, instance } => println!("root: {}: no PCI function {vendor:04x}:{device:04x} #{instance}", process.name),
                }
                return Err(Stop::MissingDevice);
            };
            devices.push(DeviceGrant { process: process_index, function: found, slot: grant.slot, bar, size, rights: grant.rights });
        }
    }
    let groups = topology.groups();
    for (n, a) in devices.iter().enumerate() {
        for b in devices[n + 1..].iter().filter(|b| b.process != a.process) {
            if groups[a.function] == groups[b.function] {
                let (fa, fb) = (&topology.functions[a.function], &topology.functions[b.function]);
                println!(
                    "root: {} gets {} and {} gets {}, but they are one isolation group (DMA requester IDs {:04x?} and {:04x?}): a group goes to one driver",
                    system[a.process].name,
                    fa.address,
                    system[b.process].name,
                    fb.address,
                    topology.dma_aliases(a.function),
                    topology.dma_aliases(b.function)
                );
                return Err(Stop::Refused);
            }
        }
    }
    Ok(devices)
}

/// Puts the capability `grant` describes into its slot of the process in `target`.
fn give(system: &[Process], directory: &Directory, target: u64, grant: &Grant) -> Result<(), &'static str> {
    let grant_one = |source: u64, slot: u64| syscall::cap_grant(target, source, slot, grant.rights).map_err(|_| "cap_grant refused");
    match grant.source {
        Source::Boot { name, line } => grant_one(directory.find(name, line).ok_or("no such boot capability")?.slot, grant.slot),
        Source::BootAll { name, max } => {
            for (index, cap) in directory.all(name).take(max as usize).enumerate() {
                grant_one(cap.slot, grant.slot + index as u64)?;
            }
            Ok(())
        }
        Source::Endpoint { name, badge } => {
            if badge == 0 {
                return grant_one(endpoint_slot(system, name), grant.slot);
            }
            syscall::cap_derive(endpoint_slot(system, name), slot::SCRATCH, Rights::all(), badge).map_err(|_| "cannot badge the endpoint")?;
            let result = grant_one(slot::SCRATCH, grant.slot);
            let _ = syscall::cap_delete(slot::SCRATCH);
            result
        }
        // One in the description (checked at build time); a restarted server gets the same page.
        // Mapped writable: the root task clears it between servers.
        Source::StatusPage => {
            if syscall::cap_info(slot::STATUS_PAGE).is_err() {
                syscall::mem_alloc(1, slot::STATUS_PAGE, kernel_abi::MemFlags::empty()).map_err(|_| "no memory for the status page")?;
                syscall::mem_map(slot::STATUS_PAGE, va::STATUS, 0, 1, kernel_abi::MapFlags::WRITE).map_err(|_| "cannot map the status page")?;
            }
            grant_one(slot::STATUS_PAGE, grant.slot)
        }
        // Filled once from the description; a restarted server gets the same page.
        Source::ClientLimits => {
            if syscall::cap_info(slot::CLIENT_LIMITS).is_err() {
                write_client_limits(system)?;
            }
            grant_one(slot::CLIENT_LIMITS, grant.slot)
        }
        Source::Process { name } => grant_one(process_slot(system, name).ok_or("no such process")?, grant.slot),
        Source::PciBar { .. } => Err("devices are granted once the server is up"),
    }
}

/// Allocates the client limits page (`iommu_server_contract::limits`) and writes an entry for
/// each badged grant of the server's endpoint, under its driver's limits.
fn write_client_limits(system: &[Process]) -> Result<(), &'static str> {
    use iommu_server_contract::limits::{PRESENT, WORDS_PER_CLIENT};
    const WORDS: usize = (server_slot::MAX_CLIENTS as usize + 1) * WORDS_PER_CLIENT;
    syscall::mem_alloc(1, slot::CLIENT_LIMITS, kernel_abi::MemFlags::empty()).map_err(|_| "no memory for the client limits")?;
    syscall::mem_map(slot::CLIENT_LIMITS, va::CLIENT_LIMITS, 0, 1, kernel_abi::MapFlags::WRITE).map_err(|_| "cannot map the client limits")?;
    // SAFETY: the page was just mapped writable at va::CLIENT_LIMITS and stays mapped; the
    // server gets it read-only.
    let page: SharedWords<WORDS> = unsafe { SharedWords::at_address(va::CLIENT_LIMITS as usize) };
    let endpoint = system::server_endpoint(system).ok_or("the IOMMU server has no endpoint")?;
    for process in system {
        for grant in process.grants {
            let Source::Endpoint { name, badge } = grant.source else { continue };
            if name != endpoint || badge == 0 {
                continue;
            }
            // Badges beyond the server's clients are refused when they connect.
            if badge > server_slot::MAX_CLIENTS {
                continue;
            }
            let first = badge as usize * WORDS_PER_CLIENT;
            page.write(first, PRESENT);
            for (i, word) in process.limits.to_words().into_iter().enumerate() {
                page.write(first + 1 + i, word);
            }
        }
    }
    Ok(())
}

fn status_word(index: usize) -> u64 {
    // SAFETY: the status page is mapped readable at va::STATUS (before the server starts) and
    // stays mapped.
    let page: SharedWords<{ status::WORDS }> = unsafe { SharedWords::at_address(va::STATUS as usize) };
    page.read(index)
}

/// Waits for another process's progress, yielding the CPU to it between looks.
fn wait_for(done: impl FnMut() -> bool, what: &'static str) -> Result<(), &'static str> {
    poll_until_pausing(&userlib::InstructionClock, WAIT_BUDGET, done, syscall::yield_now).map_err(|_| {
        println!("root: timed out waiting for {what}");
        "timed out"
    })
}

/// PCI configuration space through the boot ECAM capability (bus 0 at its base), each bus
/// mapped on first use. The root task only reads it: the IOMMU server owns it.
struct ConfigSpace {
    slot: u64,
    /// The last bus the capability covers.
    last_bus: u8,
    /// Buses mapped so far, one bit each.
    mapped: [u64; 4],
}

impl ConfigSpace {
    fn map(directory: &Directory) -> Result<ConfigSpace, &'static str> {
        let ecam = directory.find("ecam", None).ok_or("no ECAM among the boot capabilities")?;
        let buses = (ecam.size >> 20).clamp(1, 256);
        Ok(ConfigSpace { slot: ecam.slot, last_bus: (buses - 1) as u8, mapped: [0; 4] })
    }

    /// The configuration space of `address`'s function, if its bus could be mapped.
    fn function(&mut self, address: pci::Address) -> Option<VolatileRegion> {
        if address.segment != 0 || address.bus > self.last_bus {
            return None;
        }
        let bus = u64::from(address.bus);
        let bus_va = va::CONFIG + (bus << 20);
        let bit = 1u64 << (bus % 64);
        if self.mapped[(bus / 64) as usize] & bit == 0 {
            syscall::mmio_map(self.slot, bus_va, bus * 256, 256).ok()?;
            self.mapped[(bus / 64) as usize] |= bit;
        }
        // SAFETY: the bus's 256 functions x 4 KiB are mapped at bus_va (page-aligned) and stay
        // mapped; the function's page lies inside.
        Some(unsafe { VolatileRegion::at_address((bus_va + (u64::from(address.devfn()) << 12)) as usize, 4096) })
    }
}

impl pci::ConfigAccess for ConfigSpace {
    fn read32(&mut self, address: pci::Address, offset: u16) -> u32 {
        self.function(address).map_or(u32::MAX, |space| space.read32(usize::from(offset)))
    }

    fn write32(&mut self, _address: pci::Address, _offset: u16, _value: u32) {
        // Never called: the root task enumerates read-only (`pci::enumerate_read_only`).
    }
}
