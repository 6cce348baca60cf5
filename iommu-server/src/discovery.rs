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

/// A memory BAR of a function. `base` 0: not assigned (no firmware gave it an address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub base: u64,
    pub size: u64,
    /// A 64-bit BAR (it also occupies the next BAR register).
    pub is_64: bool,
}

/// Physical addresses `[start, end)` the server may give BARs.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy, Debug)]
pub struct MemoryWindow {
    pub start: u64,
    pub end: u64,
}

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
}

impl PciFunction {
    pub fn requester_id(&self) -> u16 {
        self.address.requester_id()
    }
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
        Ok(Ecam { base, start_bus, end_bus, cap_base, cap_size, mapped: BTreeSet::new() })
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

    /// Sets or clears bus-master enable (command register bit 2).
    pub fn set_bus_master(&mut self, address: PciAddress, enable: bool) {
        let command = self.read32(address, 0x04) & 0xffff;
        let command = if enable { command | 1 << 2 } else { command & !(1 << 2) };
        // The status half is write-one-to-clear: write zeros there.
        self.write32(address, 0x04, command);
    }

    /// Every function reachable from the window's first bus, through bridges.
    pub fn enumerate(&mut self) -> Vec<PciFunction> {
        let mut found = Vec::new();
        let mut visited = BTreeSet::new();
        let mut pending = alloc::vec![self.start_bus];
        while let Some(bus) = pending.pop() {
            if !visited.insert(bus) {
                continue;
            }
            for device in 0..32u8 {
                for function in 0..8u8 {
                    let address = PciAddress { segment: 0, bus, device, function };
                    let id = self.read32(address, 0x00);
                    if id & 0xffff == 0xffff {
                        if function == 0 {
                            break;
                        }
                        continue;
                    }
                    let header = (self.read32(address, 0x0c) >> 16) & 0xff;
                    let class = self.read32(address, 0x08) >> 8;
                    let bars = if header & 0x7f == 0 { self.size_bars(address, 6) } else { self.size_bars(address, 2) };
                    if header & 0x7f == 1 {
                        let secondary = (self.read32(address, 0x18) >> 8) as u8;
                        if secondary > bus {
                            pending.push(secondary);
                        }
                    }
                    found.push(PciFunction { address, vendor: id as u16, device: (id >> 16) as u16, class, bars, unit: None });
                    if function == 0 && header & 0x80 == 0 {
                        break;
                    }
                }
            }
        }
        found
    }

    /// Sizes the memory BARs (the standard all-ones probe) with decoding switched off meanwhile.
    fn size_bars(&mut self, address: PciAddress, count: u8) -> Vec<Bar> {
        let command = self.read32(address, 0x04) & 0xffff;
        self.write32(address, 0x04, command & !0x3);
        let mut bars = Vec::new();
        let mut index = 0u8;
        while index < count {
            let offset = 0x10 + 4 * u16::from(index);
            let low = self.read32(address, offset);
            if low & 1 != 0 {
                index += 1;
                continue;
            }
            let is_64 = (low >> 1) & 3 == 2;
            self.write32(address, offset, u32::MAX);
            let size_low = self.read32(address, offset) & !0xf;
            self.write32(address, offset, low);
            let (base, mask) = if is_64 && index + 1 < count {
                let high = self.read32(address, offset + 4);
                self.write32(address, offset + 4, u32::MAX);
                let size_high = self.read32(address, offset + 4);
                self.write32(address, offset + 4, high);
                (u64::from(high) << 32 | u64::from(low & !0xf), u64::from(size_high) << 32 | u64::from(size_low))
            } else {
                (u64::from(low & !0xf), 0xffff_ffff_0000_0000 | u64::from(size_low))
            };
            let size = (!mask).wrapping_add(1);
            if size_low != 0 {
                bars.push(Bar { index, base, size, is_64 });
            }
            index += if is_64 { 2 } else { 1 };
        }
        self.write32(address, 0x04, command);
        bars
    }
}

impl Ecam {
    /// Gives every memory BAR of the functions on the window's first bus an address in
    /// `window`, aligned to its size (a BAR decodes naturally aligned), in enumeration order,
    /// and lets those functions decode memory (command register bit 1). Where no firmware
    /// assigns BARs the server is the only one that does, so it starts from scratch: whatever
    /// an earlier owner programmed could overlap what it hands out. Functions behind bridges
    /// are left alone: their bridge's memory window would have to be programmed first.
    #[cfg(target_arch = "aarch64")]
    pub fn assign_bars(&mut self, functions: &mut [PciFunction], window: MemoryWindow) {
        const COMMAND: u16 = 0x04;
        const MEMORY_SPACE: u32 = 1 << 1;
        let mut next = window.start;
        let root_bus = self.start_bus;
        for function in functions.iter_mut().filter(|f| f.address.bus == root_bus && !f.bars.is_empty()) {
            // The status half is write-one-to-clear: write zeros there.
            let command = self.read32(function.address, COMMAND) & 0xffff & !MEMORY_SPACE;
            self.write32(function.address, COMMAND, command);
            let mut all_placed = true;
            for bar in function.bars.iter_mut() {
                let base = next.next_multiple_of(bar.size);
                let fits_register = bar.is_64 || base + bar.size <= 1 << 32;
                let offset = 0x10 + 4 * u16::from(bar.index);
                if base + bar.size > window.end || !fits_register {
                    println!("iommu-server: pci {}: BAR{} of {:#x} bytes does not fit the window", function.address, bar.index, bar.size);
                    bar.base = 0;
                    all_placed = false;
                    continue;
                }
                // The low four bits (type, prefetchable) are read-only: writing zeros there is fine.
                self.write32(function.address, offset, base as u32);
                if bar.is_64 {
                    self.write32(function.address, offset + 4, (base >> 32) as u32);
                }
                bar.base = base;
                next = base + bar.size;
            }
            if all_placed {
                self.write32(function.address, COMMAND, command | MEMORY_SPACE);
            } else {
                function.bars.retain(|bar| bar.base != 0);
            }
        }
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
            "iommu-server: pci {} {:04x}:{:04x} class {:06x} rid {:#06x} {unit}, {} memory BARs",
            function.address,
            function.vendor,
            function.device,
            function.class,
            function.requester_id(),
            function.bars.len()
        );
        for bar in &function.bars {
            println!("iommu-server:   BAR{} {:#x} size {:#x}", bar.index, bar.base, bar.size);
        }
    }
}
