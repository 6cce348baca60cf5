//! Discovery: firmware memory read through the firmware capabilities (on x86 the ACPI tables,
//! RSDP → RSDT/XSDT → DMAR, MCFG; on arm the device tree, `arm/devicetree.rs`), and PCI
//! enumeration over ECAM, walking bridges, with BAR assignment where no firmware did it (arm).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use fwtables::dmar::pci::PciAddress;
#[cfg(target_arch = "x86_64")]
use fwtables::dmar::pci::PciTopology;
#[cfg(target_arch = "x86_64")]
use fwtables::dmar::Dmar;
#[cfg(target_arch = "x86_64")]
use fwtables::mcfg::Mcfg;
#[cfg(target_arch = "x86_64")]
use fwtables::sdt::{Rsdp, RootTable, Signature};
use hwio::{Registers, VolatileRegion};
use userlib::{println, syscall};

use crate::layout::{self, PAGE};
use crate::slots;

/// One firmware memory range the root task let the server read.
#[derive(Clone, Copy, Debug)]
struct FirmwareRegion {
    slot: u64,
    base: u64,
    size: u64,
}

/// Reads firmware memory through the firmware MMIO capabilities, mapping the pages of each
/// read into a scratch window and unmapping them again (some firmware ranges are large and
/// only a few pages are ever read).
pub struct FirmwareMemory {
    regions: Vec<FirmwareRegion>,
}

impl FirmwareMemory {
    pub fn from_slots() -> Self {
        let regions = (slots::FIRMWARE_FIRST..slots::FIRMWARE_FIRST + slots::FIRMWARE_COUNT)
            .filter_map(|slot| {
                let (base, size) = syscall::mmio_info(slot).ok()?;
                Some(FirmwareRegion { slot, base, size })
            })
            .collect();
        FirmwareMemory { regions }
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// (physical base, size) of every region.
    #[cfg(target_arch = "aarch64")]
    pub fn regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.regions.iter().map(|r| (r.base, r.size))
    }

    /// Copies `buf.len()` bytes at physical `address`; false if no one region holds them all.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        let Some(end) = address.checked_add(buf.len() as u64) else { return false };
        let Some(region) = self.regions.iter().find(|r| r.base <= address && end <= r.base + r.size) else {
            return false;
        };
        let mut done = 0usize;
        while done < buf.len() {
            let at = address + done as u64;
            let first_page = (at - region.base) / PAGE;
            let in_page = (at % PAGE) as usize;
            let remaining = buf.len() - done;
            let pages = ((in_page + remaining).div_ceil(PAGE as usize) as u64).min(layout::FIRMWARE_WINDOW_PAGES);
            if syscall::mmio_map(region.slot, layout::FIRMWARE_WINDOW, first_page, pages).is_err() {
                return false;
            }
            let chunk = remaining.min(pages as usize * PAGE as usize - in_page);
            // SAFETY: the window (page-aligned) maps `pages` pages of the region until the
            // unmap below.
            let window = unsafe { VolatileRegion::at_address(layout::FIRMWARE_WINDOW as usize, pages as usize * PAGE as usize) };
            for (i, byte) in buf[done..done + chunk].iter_mut().enumerate() {
                *byte = window.at::<u8>(in_page + i).read();
            }
            let _ = syscall::unmap(layout::FIRMWARE_WINDOW, pages);
            done += chunk;
        }
        true
    }

    /// Finds the RSDP in the BIOS area (16-byte aligned "RSD PTR " below 1 MiB, ACPI 5.2.5.1).
    #[cfg(target_arch = "x86_64")]
    pub fn find_rsdp(&self) -> Option<(u64, Rsdp)> {
        let bios = self.regions.iter().find(|r| r.base >= 0xE_0000 && r.base + r.size <= 0x10_0000)?;
        let mut candidate = [0u8; 36];
        let mut at = bios.base;
        while at + 20 <= bios.base + bios.size {
            let mut signature = [0u8; 8];
            if self.read(at, &mut signature) && &signature == b"RSD PTR " {
                let len = if at + 36 <= bios.base + bios.size { 36 } else { 20 };
                if self.read(at, &mut candidate[..len]) {
                    if let Ok(rsdp) = Rsdp::parse(&candidate[..len]) {
                        if rsdp.checksum_valid {
                            return Some((at, rsdp));
                        }
                    }
                }
            }
            at += 16;
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
impl fwtables::sdt::PhysicalMemory for &FirmwareMemory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> bool {
        FirmwareMemory::read(self, address, buf)
    }
}

/// The firmware's description of the machine.
#[cfg(target_arch = "x86_64")]
pub struct Firmware {
    pub dmar: Option<Dmar>,
    pub mcfg: Option<Mcfg>,
}

#[cfg(target_arch = "x86_64")]
pub fn read_firmware(memory: &FirmwareMemory) -> Result<Firmware, &'static str> {
    let (at, rsdp) = memory.find_rsdp().ok_or("no RSDP in the BIOS area")?;
    let root = RootTable::load(&rsdp, &mut &*memory).map_err(|_| "root table unreadable")?;
    println!("iommu-server: RSDP at {at:#x}, {} tables", root.entries.len());
    let dmar = match root.find(&mut &*memory, Signature::DMAR).map_err(|_| "DMAR unreadable")? {
        Some((_, bytes)) => Some(parse_reporting(Dmar::parse(&bytes), |d| &d.warnings).ok_or("DMAR malformed")?),
        None => None,
    };
    let mcfg = match root.find(&mut &*memory, Signature::MCFG).map_err(|_| "MCFG unreadable")? {
        Some((_, bytes)) => Some(parse_reporting(Mcfg::parse(&bytes), |m| &m.warnings).ok_or("MCFG malformed")?),
        None => None,
    };
    Ok(Firmware { dmar, mcfg })
}

/// Prints why a firmware table was rejected, or each firmware bug it was accepted with (the
/// parser has marked the bad entries, which the table's query methods skip).
pub fn parse_reporting<T>(
    parsed: Result<T, fwtables::ParseError>,
    warnings: impl Fn(&T) -> &[fwtables::Warning],
) -> Option<T> {
    match parsed {
        Ok(table) => {
            for warning in warnings(&table) {
                println!("iommu-server: firmware bug: {warning}");
            }
            Some(table)
        }
        Err(error) => {
            println!("iommu-server: firmware table rejected: {error}");
            None
        }
    }
}

pub use pci::{Bar, BusNumbers};
#[cfg(target_arch = "aarch64")]
pub use pci::MemoryWindow;

/// One PCI function found by enumeration.
#[derive(Clone, Debug)]
pub struct PciFunction {
    pub address: PciAddress,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub bars: Vec<Bar>,
    /// Index of the IOMMU unit translating its DMA (set after unit matching).
    pub unit: Option<usize>,
    /// The requester ID its DMA carries when it reaches the IOMMU (a bridge's alias behind a
    /// PCIe-to-PCI or conventional bridge; `pci::alias`).
    dma_requester_id: u16,
    /// Every requester ID its DMA carries on the way up, its own first.
    pub aliases: Vec<u16>,
    /// Its isolation group: the index of the group's first function (`pci::groups`).
    pub group: usize,
    /// The bridges above it, from the first bus down: bus mastering on each forwards its DMA.
    pub bridges: Vec<PciAddress>,
}

impl PciFunction {
    /// The requester ID the IOMMU sees on this function's DMA.
    pub fn requester_id(&self) -> u16 {
        self.dma_requester_id
    }
}

fn pci_address(address: pci::Address) -> PciAddress {
    PciAddress { segment: address.segment, bus: address.bus, device: address.device, function: address.function }
}

/// Configuration space through the ECAM capability, mapping one bus (1 MiB) at a time on
/// first use.
pub struct Ecam {
    /// Physical base as MCFG states it (bus 0 of the segment).
    base: u64,
    start_bus: u8,
    end_bus: u8,
    cap_base: u64,
    cap_size: u64,
    mapped: BTreeSet<u8>,
    /// The hierarchy as enumerated (BARs as assigned).
    topology: pci::Topology,
}

// SAFETY: only addresses (no pointers) are stored; mappings are process-wide.
unsafe impl Send for Ecam {}

impl Ecam {
    /// The ECAM window MCFG describes for segment 0, if the ECAM capability covers it.
    #[cfg(target_arch = "x86_64")]
    pub fn new(mcfg: &Mcfg) -> Result<Ecam, &'static str> {
        let segment = mcfg.segment_for(0, 0).ok_or("MCFG has no window for segment 0 bus 0")?;
        Self::for_window(segment.base_address, segment.start_bus, segment.end_bus)
    }

    /// The ECAM window at `base` (bus 0's configuration space) for buses `start_bus..=end_bus`;
    /// buses outside the ECAM capability are never mapped.
    pub fn for_window(base: u64, start_bus: u8, end_bus: u8) -> Result<Ecam, &'static str> {
        let (cap_base, cap_size) = syscall::mmio_info(slots::ECAM).map_err(|_| "no ECAM capability")?;
        Ok(Ecam { base, start_bus, end_bus, cap_base, cap_size, mapped: BTreeSet::new(), topology: pci::Topology::default() })
    }

    fn bus_virt(&mut self, bus: u8) -> Option<u64> {
        if !(self.start_bus..=self.end_bus).contains(&bus) {
            return None;
        }
        let phys = self.base + (u64::from(bus) << 20);
        if phys < self.cap_base || phys + (1 << 20) > self.cap_base + self.cap_size {
            return None;
        }
        let virt = layout::ECAM + (u64::from(bus) << 20);
        if !self.mapped.contains(&bus) {
            syscall::mmio_map(slots::ECAM, virt, (phys - self.cap_base) / PAGE, 256).ok()?;
            self.mapped.insert(bus);
        }
        Some(virt)
    }

    /// The 4 KiB configuration space of the function at `address`, and the register offset in
    /// it; `None` for a function or offset that does not exist.
    fn function_space(&mut self, address: PciAddress, offset: u16) -> Option<(VolatileRegion, usize)> {
        if address.device > 31 || address.function > 7 || offset >= 4096 || !offset.is_multiple_of(4) {
            return None;
        }
        let virt = self.bus_virt(address.bus)?;
        let function = virt + (u64::from(address.devfn()) << 12);
        // SAFETY: `bus_virt` mapped the bus's whole configuration space (page-aligned) for the
        // server's life; the function's page lies inside it.
        Some((unsafe { VolatileRegion::at_address(function as usize, 4096) }, usize::from(offset)))
    }

    pub fn read32(&mut self, address: PciAddress, offset: u16) -> u32 {
        self.function_space(address, offset).map_or(u32::MAX, |(space, offset)| space.read32(offset))
    }

    pub fn write32(&mut self, address: PciAddress, offset: u16, value: u32) {
        if let Some((space, offset)) = self.function_space(address, offset) {
            space.write32(offset, value);
        }
    }

    /// Sets or clears bus-master enable of the function; enabling also enables it on every
    /// bridge above (a bridge forwards its children's DMA upstream only with it set), where
    /// it stays: other functions below may be using it.
    pub fn set_bus_master(&mut self, function: &PciFunction, enable: bool) {
        let targets = if enable { function.bridges.as_slice() } else { &[] };
        for &address in targets.iter().chain(core::iter::once(&function.address)) {
            // The status half is write-one-to-clear: write zeros there.
            let command = self.read32(address, pci::regs::COMMAND) & 0xffff;
            let bit = pci::regs::command::BUS_MASTER;
            self.write32(address, pci::regs::COMMAND, if enable { command | bit } else { command & !bit });
        }
    }

    /// Quiesces the function at `index` (enumeration order), resets it with its best method and
    /// writes back what the server set up in it (`pci::reset::reset_function`).
    pub fn reset_function(&mut self, index: usize, delay: &mut impl pci::reset::Delay) -> pci::reset::Outcome {
        let topology = core::mem::take(&mut self.topology);
        let outcome = pci::reset::reset_function(self, delay, &topology, index);
        self.topology = topology;
        outcome
    }

    /// Every function reachable from the window's first bus, through bridges (numbering the
    /// buses below them first where no firmware did), with its requester ID, aliases and
    /// isolation group.
    pub fn enumerate(&mut self, numbers: BusNumbers) -> Vec<PciFunction> {
        let topology = pci::enumerate(self, 0, self.start_bus, self.end_bus, numbers);
        let groups = topology.groups();
        let functions = topology
            .functions
            .iter()
            .enumerate()
            .map(|(index, f)| PciFunction {
                address: pci_address(f.address),
                vendor: f.vendor,
                device: f.device,
                class: f.class,
                bars: f.bars.clone(),
                unit: None,
                dma_requester_id: topology.requester_id(index),
                aliases: topology.dma_aliases(index),
                group: groups[index],
                bridges: topology.path(index).into_iter().map(|b| pci_address(topology.functions[b].address)).collect(),
            })
            .collect();
        self.topology = topology;
        functions
    }

    /// Gives every memory BAR of the hierarchy an address in `window`, with the bridge
    /// windows above them (`pci::bars::assign`), and lets the functions decode memory. Where
    /// no firmware assigns BARs the server is the only one that does, so it starts from
    /// scratch: whatever an earlier owner programmed could overlap what it hands out.
    #[cfg(target_arch = "aarch64")]
    pub fn assign_bars(&mut self, functions: &mut [PciFunction], window: MemoryWindow) {
        let mut topology = core::mem::take(&mut self.topology);
        for unplaced in pci::bars::assign(self, &mut topology, window) {
            println!("iommu-server: pci {}: BAR{} of {:#x} bytes does not fit the window", unplaced.address, unplaced.index, unplaced.size);
        }
        for (function, found) in functions.iter_mut().zip(&topology.functions) {
            function.bars.clone_from(&found.bars);
        }
        self.topology = topology;
    }
}

impl pci::ConfigAccess for Ecam {
    fn read32(&mut self, address: pci::Address, offset: u16) -> u32 {
        Ecam::read32(self, pci_address(address), offset)
    }

    fn write32(&mut self, address: pci::Address, offset: u16, value: u32) {
        Ecam::write32(self, pci_address(address), offset, value)
    }
}

/// Bridge bus numbers for matching DMAR device scopes.
#[cfg(target_arch = "x86_64")]
pub struct EcamTopology<'a> {
    pub ecam: core::cell::RefCell<&'a mut Ecam>,
}

#[cfg(target_arch = "x86_64")]
impl PciTopology for EcamTopology<'_> {
    fn secondary_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8> {
        let address = PciAddress { segment, bus, device, function };
        let mut ecam = self.ecam.borrow_mut();
        let header = (ecam.read32(address, 0x0c) >> 16) & 0x7f;
        (segment == 0 && header == 1).then(|| (ecam.read32(address, 0x18) >> 8) as u8)
    }
    fn subordinate_bus(&self, segment: u16, bus: u8, device: u8, function: u8) -> Option<u8> {
        let address = PciAddress { segment, bus, device, function };
        let mut ecam = self.ecam.borrow_mut();
        let header = (ecam.read32(address, 0x0c) >> 16) & 0x7f;
        (segment == 0 && header == 1).then(|| (ecam.read32(address, 0x18) >> 16) as u8)
    }
}

/// Reserved memory regions (RMRR) that name `address`, as inclusive ranges (RMRRs the parser
/// found broken are left out).
#[cfg(target_arch = "x86_64")]
pub fn rmrrs_for(dmar: &Dmar, address: PciAddress, topology: &impl PciTopology) -> Vec<(u64, u64)> {
    dmar.rmrrs()
        .filter(|r| r.segment == address.segment)
        .filter(|r| r.scopes.iter().any(|scope| scope.resolve(address.segment, topology).ok() == Some(address)))
        .map(|r| (r.base, r.limit))
        .collect()
}

/// Prints the enumerated functions, their unit and BARs.
pub fn print_functions(functions: &[PciFunction]) {
    for function in functions {
        let unit = function.unit.map_or(alloc::string::String::from("untranslated"), |u| alloc::format!("unit {u}"));
        println!(
            "iommu-server: pci {} {:04x}:{:04x} class {:06x} rid {:#06x} (aliases {:04x?}) group {} {unit}, {} memory BARs",
            function.address,
            function.vendor,
            function.device,
            function.class,
            function.requester_id(),
            function.aliases,
            function.group,
            function.bars.len()
        );
        for bar in &function.bars {
            println!("iommu-server:   BAR{} {:#x} size {:#x}", bar.index, bar.base, bar.size);
        }
    }
}
