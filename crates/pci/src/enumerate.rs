//! Enumeration of one segment's hierarchy, depth first from its first bus, through bridges.

use alloc::vec::Vec;

use crate::bars::{size_bars, Bar};
use crate::regs::{self, PortType};
use crate::{Address, ConfigAccess};

/// Who numbers the buses below bridges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusNumbers {
    /// Firmware did (x86): follow the bridges' secondary bus numbers as found.
    Firmware,
    /// Nothing did (arm): number them depth first from the first bus, as the type 1 header's
    /// primary/secondary/subordinate registers require (a bridge forwards configuration
    /// requests for buses secondary..=subordinate).
    Assign,
}

/// A type 1 function: the buses it forwards to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeBuses {
    pub secondary: u8,
    pub subordinate: u8,
}

/// One function found by enumeration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub address: Address,
    pub vendor: u16,
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// Set for a bridge (type 1 header) whose secondary bus was enumerated.
    pub bridge: Option<BridgeBuses>,
    /// The PCI Express device/port type; `None` for a conventional PCI function.
    pub port_type: Option<PortType>,
    /// Function 0 of its device says the device has several functions.
    pub multifunction: bool,
    /// The ACS capability register, if the function has the ACS extended capability.
    pub acs: Option<u16>,
    /// Index (in `Topology::functions`) of the bridge above it; `None` on the first bus.
    pub parent: Option<usize>,
    /// Its memory BARs, sized; base 0 where none is assigned.
    pub bars: Vec<Bar>,
}

/// Every function of one segment, parents before their children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub functions: Vec<Function>,
}

impl Topology {
    pub fn find(&self, address: Address) -> Option<usize> {
        self.functions.iter().position(|f| f.address == address)
    }

    /// The bridges from the first bus down to the function at `index` (its parent last).
    pub fn path(&self, index: usize) -> Vec<usize> {
        let mut path = Vec::new();
        let mut at = self.functions[index].parent;
        while let Some(bridge) = at {
            path.push(bridge);
            at = self.functions[bridge].parent;
        }
        path.reverse();
        path
    }

    /// The `instance`-th function (in enumeration order) with these IDs.
    pub fn find_by_id(&self, vendor: u16, device: u16, instance: usize) -> Option<usize> {
        self.functions.iter().enumerate().filter(|(_, f)| f.vendor == vendor && f.device == device).nth(instance).map(|(i, _)| i)
    }

    /// The function reached from the first bus through the bridges at `(device, function)`
    /// of each bus in turn, then `(device, function)` of the last bus: a location that does
    /// not depend on bus numbers (which firmware or the enumerator chose).
    pub fn find_by_path(&self, bridges: &[(u8, u8)], device: u8, function: u8) -> Option<usize> {
        let mut parent: Option<usize> = None;
        for &(d, f) in bridges.iter().chain(core::iter::once(&(device, function))) {
            parent = Some(
                self.functions
                    .iter()
                    .enumerate()
                    .find(|(_, x)| x.parent == parent && x.address.device == d && x.address.function == f)
                    .map(|(i, _)| i)?,
            );
        }
        parent
    }
}

struct Walk<'a, C: ConfigAccess> {
    config: &'a mut C,
    segment: u16,
    last_bus: u8,
    mode: BusNumbers,
    /// Whether BARs are sized (which writes them).
    size_bars: bool,
    /// Highest bus number given out so far (Assign).
    next_free: u8,
    visited: [u64; 4],
    topology: Topology,
}

/// Enumerates every function reachable from `first_bus` (the host bridge's bus), scanning no
/// bus above `last_bus`. With `BusNumbers::Assign` the bridges are numbered as they are
/// found; a bridge for which no number is left keeps its secondary bus unconfigured.
pub fn enumerate<C: ConfigAccess>(config: &mut C, segment: u16, first_bus: u8, last_bus: u8, mode: BusNumbers) -> Topology {
    let mut walk = Walk { config, segment, last_bus, mode, size_bars: true, next_free: first_bus, visited: [0; 4], topology: Topology::default() };
    walk.scan(first_bus, None);
    walk.topology
}

/// Enumerates as `enumerate` with `BusNumbers::Firmware` does, but without writing anything
/// (no BAR is sized: `Function::bars` stay empty), for a process that reads a hierarchy
/// another one owns; `bars::read_base` reads where a BAR was placed.
pub fn enumerate_read_only<C: ConfigAccess>(config: &mut C, segment: u16, first_bus: u8, last_bus: u8) -> Topology {
    let mode = BusNumbers::Firmware;
    let mut walk = Walk { config, segment, last_bus, mode, size_bars: false, next_free: first_bus, visited: [0; 4], topology: Topology::default() };
    walk.scan(first_bus, None);
    walk.topology
}

impl<C: ConfigAccess> Walk<'_, C> {
    fn scan(&mut self, bus: u8, parent: Option<usize>) {
        let seen = &mut self.visited[usize::from(bus / 64)];
        if *seen & (1 << (bus % 64)) != 0 {
            // A firmware loop (a bridge claiming an already scanned bus): scan it once.
            return;
        }
        *seen |= 1 << (bus % 64);
        for device in 0..32u8 {
            let mut multifunction = false;
            for function in 0..8u8 {
                let address = Address { segment: self.segment, bus, device, function };
                let id = self.config.read32(address, regs::ID);
                if id as u16 == regs::NO_VENDOR {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let header = (self.config.read32(address, regs::HEADER_DWORD) >> regs::HEADER_SHIFT) as u8;
                if function == 0 {
                    multifunction = header & regs::HEADER_MULTIFUNCTION != 0;
                }
                let layout = header & regs::HEADER_LAYOUT;
                let bar_count = if layout == regs::LAYOUT_BRIDGE { regs::BRIDGE_BARS } else { regs::ENDPOINT_BARS };
                let class = self.config.read32(address, regs::CLASS) >> 8;
                let port_type = self.port_type(address);
                let acs = self.acs(address);
                let bars = if self.size_bars { size_bars(self.config, address, bar_count) } else { Vec::new() };
                let index = self.topology.functions.len();
                let (vendor, device) = (id as u16, (id >> 16) as u16);
                self.topology.functions.push(Function { address, vendor, device, class, bridge: None, port_type, multifunction, acs, parent, bars });
                if layout == regs::LAYOUT_BRIDGE {
                    self.bridge(index, bus);
                }
                if function == 0 && !multifunction {
                    break;
                }
            }
        }
    }

    fn bridge(&mut self, index: usize, bus: u8) {
        let address = self.topology.functions[index].address;
        let buses = self.config.read32(address, regs::BRIDGE_BUSES);
        let latency = buses & 0xff00_0000;
        match self.mode {
            BusNumbers::Firmware => {
                let secondary = (buses >> 8) as u8;
                let subordinate = (buses >> 16) as u8;
                if secondary > bus && secondary <= self.last_bus && subordinate >= secondary {
                    self.topology.functions[index].bridge = Some(BridgeBuses { secondary, subordinate });
                    self.scan(secondary, Some(index));
                }
            }
            BusNumbers::Assign => {
                if self.next_free >= self.last_bus {
                    return;
                }
                self.next_free += 1;
                let secondary = self.next_free;
                // Forward everything up to the last bus while the buses below are numbered,
                // then close the range at the highest number given below.
                let numbers = |subordinate: u8| latency | u32::from(subordinate) << 16 | u32::from(secondary) << 8 | u32::from(bus);
                self.config.write32(address, regs::BRIDGE_BUSES, numbers(self.last_bus));
                self.scan(secondary, Some(index));
                let subordinate = self.next_free;
                self.config.write32(address, regs::BRIDGE_BUSES, numbers(subordinate));
                self.topology.functions[index].bridge = Some(BridgeBuses { secondary, subordinate });
            }
        }
    }

    /// Walks the capability list (bounded: a looping list ends after 48 entries, the most
    /// the 192 bytes after the header can hold).
    fn port_type(&mut self, address: Address) -> Option<PortType> {
        if self.config.read32(address, regs::COMMAND) & regs::STATUS_CAPABILITIES_LIST == 0 {
            return None;
        }
        let mut at = u16::from(self.config.read8(address, regs::CAPABILITIES_POINTER) & !3);
        for _ in 0..48 {
            if at < 0x40 {
                return None;
            }
            let header = self.config.read32(address, at);
            if header as u8 == regs::CAP_ID_PCI_EXPRESS {
                return Some(PortType::from_field(((header >> regs::PCIE_PORT_TYPE_SHIFT) & regs::PCIE_PORT_TYPE_MASK) as u8));
            }
            at = u16::from((header >> 8) as u8 & !3);
        }
        None
    }

    /// The ACS capability register, from the extended capability list (bounded as above:
    /// 960 entries fill the extended space).
    fn acs(&mut self, address: Address) -> Option<u16> {
        let mut at = regs::EXTENDED_CAPABILITIES;
        for _ in 0..960 {
            let header = self.config.read32(address, at);
            if header == 0 || header == u32::MAX {
                return None;
            }
            if header as u16 == regs::EXT_CAP_ID_ACS {
                return Some(self.config.read16(address, at + regs::ACS_CAPABILITY));
            }
            let next = (header >> 20) as u16 & !3;
            if next < regs::EXTENDED_CAPABILITIES {
                return None;
            }
            at = next;
        }
        None
    }
}
