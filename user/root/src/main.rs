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
//! 3. for each driver in turn: finds its device in PCI configuration space, carves the BAR out
//!    of the PCI window, grants it, starts the driver and waits for it to end. One at a time,
//!    because each edu driver ends with a DMA the IOMMU must refuse, and QEMU's VT-d unit has
//!    a single fault-recording register: a second device's fault while the first is still
//!    recorded is dropped (the unit sets PFO; the server reports the loss);
//! 4. checks, on the server's status page, that it saw every driver's DMA fault, tore down
//!    every client and holds no client memory. Its exit status says whether all of that held.

#![no_std]
#![no_main]

mod system;

/// The IOMMU server's slots and status words, and the edu driver's contract.
use edu_contract as driver;
use iommu_server_contract::{slots as server_slot, start, status};

use hwio::wait::poll_until_pausing;
use hwio::{Registers, SharedWords, VolatileRegion};
use kernel_abi::boot_directory::{DIRECTORY_SLOT, ENTRY_WORDS, MAX_ENTRIES, NAME_BYTES};
use kernel_abi::{ObjectType, Rights};
use system::{Grant, Role, Source, SYSTEM};
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
    /// Scratch: a badged endpoint or a carved BAR on its way to a process.
    pub const SCRATCH: u64 = 200;
    /// Signalled when the running driver ends (`DRIVER_ENDED`) or the server does
    /// (`SERVER_ENDED`).
    pub const ENDED: u64 = 201;
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
    pub const CONFIG: u64 = 0x2000_0000;
}

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
fn endpoint_slot(name: &str) -> u64 {
    let mut seen: [&str; 8] = [""; 8];
    let mut count = 0;
    for process in SYSTEM {
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

fn process_slot(name: &str) -> Option<u64> {
    SYSTEM.iter().position(|p| p.name == name).map(|i| slot::PROCESSES + i as u64)
}

fn main(_arg: u64) -> u64 {
    match run() {
        Ok(()) => 0,
        Err(why) => {
            println!("root: {why}");
            1
        }
    }
}

fn run() -> Result<(), &'static str> {
    let directory = Directory::read()?;
    // 1. Processes, endpoints, every grant but devices.
    for (index, process) in SYSTEM.iter().enumerate() {
        syscall::process_create(process.image, process.arg, slot::PROCESSES + index as u64, process.quota_pages)
            .map_err(|_| "cannot create a process of the description")?;
    }
    for process in SYSTEM {
        for grant in process.grants {
            if let Source::Endpoint { name, .. } = grant.source {
                let slot = endpoint_slot(name);
                if syscall::cap_info(slot).is_err() {
                    syscall::endpoint_create(slot).map_err(|_| "cannot create an endpoint")?;
                }
            }
        }
    }
    for (index, process) in SYSTEM.iter().enumerate() {
        let target = slot::PROCESSES + index as u64;
        for grant in process.grants {
            if !matches!(grant.source, Source::PciBar { .. }) {
                give(&directory, target, grant).map_err(|why| {
                    println!("root: {}: slot {}: {why}", process.name, grant.slot);
                    "a grant of the description failed"
                })?;
            }
        }
    }
    // 2. The IOMMU server, until it is ready; watched from then on.
    let server = SYSTEM.iter().position(|p| p.role == Role::IommuServer).expect("checked at build time");
    syscall::notification_create(slot::ENDED).map_err(|_| "cannot create a notification")?;
    start_server(server)?;
    println!(
        "root: IOMMU server ready: {} unit(s), {} PCI functions",
        status_word(status::UNITS),
        status_word(status::PCI_FUNCTIONS)
    );
    if status_word(status::IOMMU_DESCRIBED) == 0 {
        println!("root: the firmware describes no IOMMU: drivers not started (their DMA needs one)");
        return Ok(());
    }
    // 3. Each driver with its device, one after the other.
    let config = map_bus0_config(&directory)?;
    let window = directory.find("pci-mmio", None).copied().ok_or("no PCI window among the boot capabilities")?;
    let mut drivers = 0u64;
    for (index, process) in SYSTEM.iter().enumerate().filter(|(_, p)| p.role == Role::Driver) {
        let target = slot::PROCESSES + index as u64;
        for grant in process.grants {
            if let Source::PciBar { vendor, device, instance, bar, size } = grant.source {
                let base = config.bar(vendor, device, instance, bar).ok_or("a driver's PCI device is not on bus 0, or has no BAR address")?;
                if base < window.value || base + size > window.value + window.size {
                    return Err("a driver's BAR lies outside the PCI window");
                }
                syscall::mmio_carve(window.slot, (base - window.value) / PAGE, size.div_ceil(PAGE), slot::SCRATCH, grant.rights)
                    .map_err(|_| "cannot carve a BAR out of the PCI window")?;
                syscall::cap_grant(target, slot::SCRATCH, grant.slot, grant.rights).map_err(|_| "cannot grant a device")?;
                let _ = syscall::cap_delete(slot::SCRATCH);
                println!("root: {} gets PCI device {vendor:04x}:{device:04x} #{instance}, BAR{bar} at {base:#x}", process.name);
            }
        }
        syscall::process_watch(target, slot::ENDED, ended::DRIVER).map_err(|_| "cannot watch a driver")?;
        syscall::process_start(target).map_err(|_| "cannot start a driver")?;
        // A driver that never ends stops the system here; whoever runs the root task bounds it.
        loop {
            let bits = syscall::notify_wait(slot::ENDED).map_err(|_| "waiting for a driver failed")?;
            if bits & 1 << ended::SERVER != 0 {
                restart_server(&directory, server)?;
            }
            if bits & 1 << ended::DRIVER != 0 {
                break;
            }
        }
        drivers += 1;
    }
    // 4. What the server saw.
    wait_for(|| status_word(status::CLIENTS_REAPED) == drivers, "the server to tear the drivers' clients down")?;
    let (faults, pinned) = (status_word(status::FAULTS), status_word(status::PINNED_PAGES));
    println!("root: {drivers} drivers ended; the server saw {faults} DMA faults, tore down {drivers} clients, holds {pinned} client pages");
    if faults < drivers {
        return Err("a driver did not get as far as its refused DMA");
    }
    if pinned != 0 || status_word(status::OPEN_CLIENTS) != 0 {
        return Err("the server still holds client state");
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
fn restart_server(directory: &Directory, index: usize) -> Result<(), &'static str> {
    let description = &SYSTEM[index];
    let target = slot::PROCESSES + index as u64;
    println!("root: the IOMMU server ended; starting a new one");
    let _ = syscall::cap_delete(target);
    syscall::process_create(description.image, description.arg | start::RESTARTED, target, description.quota_pages)
        .map_err(|_| "cannot create a new IOMMU server")?;
    for grant in description.grants {
        give(directory, target, grant)?;
    }
    // SAFETY: the status page is mapped writable at va::STATUS and stays mapped; no server
    // writes it now (the old one ended, the new one has not started).
    let page: SharedWords<{ status::WORDS }> = unsafe { SharedWords::at_address(va::STATUS as usize) };
    (0..status::WORDS).for_each(|word| page.write(word, 0));
    start_server(index)?;
    println!("root: new IOMMU server ready; it released {} quarantined pages", status_word(status::QUARANTINE_RELEASED));
    Ok(())
}

/// Puts the capability `grant` describes into its slot of the process in `target`.
fn give(directory: &Directory, target: u64, grant: &Grant) -> Result<(), &'static str> {
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
                return grant_one(endpoint_slot(name), grant.slot);
            }
            syscall::cap_derive(endpoint_slot(name), slot::SCRATCH, Rights::all(), badge).map_err(|_| "cannot badge the endpoint")?;
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
        Source::Process { name } => grant_one(process_slot(name).ok_or("no such process")?, grant.slot),
        Source::PciBar { .. } => Err("devices are granted once the server is up"),
    }
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

/// Bus 0's configuration space, mapped from the boot ECAM capability.
struct ConfigSpace;

impl ConfigSpace {
    fn read32(&self, devfn: u64, offset: u64) -> u32 {
        // SAFETY: bus 0 (256 functions x 4 KiB) is mapped at va::CONFIG and stays mapped.
        let bus = unsafe { VolatileRegion::at_address(va::CONFIG as usize, 256 << 12) };
        bus.read32(((devfn << 12) + offset) as usize)
    }

    /// The address of memory BAR `bar` of the `instance`-th function with these IDs.
    fn bar(&self, vendor: u16, device: u16, instance: u8, bar: u8) -> Option<u64> {
        let id = u32::from(vendor) | u32::from(device) << 16;
        let devfn = (0..256).filter(|&devfn| self.read32(devfn, 0) == id).nth(usize::from(instance))?;
        let low = self.read32(devfn, 0x10 + 4 * u64::from(bar));
        // Memory BAR (bit 0 clear); a 64-bit one (type 0b10) continues in the next register.
        if low & 1 != 0 {
            return None;
        }
        let high = if low >> 1 & 0b11 == 0b10 { self.read32(devfn, 0x14 + 4 * u64::from(bar)) } else { 0 };
        let base = u64::from(low & !0xF) | u64::from(high) << 32;
        (base != 0).then_some(base)
    }
}

fn map_bus0_config(directory: &Directory) -> Result<ConfigSpace, &'static str> {
    let ecam = directory.find("ecam", None).ok_or("no ECAM among the boot capabilities")?;
    syscall::mmio_map(ecam.slot, va::CONFIG, 0, 256).map_err(|_| "cannot map bus 0's configuration space")?;
    Ok(ConfigSpace)
}
